# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
kubelet.py - a kubelet's part, and nothing more, for the cluster-mode tests:
on a tests/lib/topo.py node, run Pod objects of a real API server
(tests/lib/kube.py) as a kubelet with a CNI runtime would.

    node = kubelet.Node(topo, cluster, 1, tmpdir, cni_socket, pending_dir)
    node.register()                            # the Node object
    pod = node.run_pod("shop", "web-0", labels={"app": "web"})
    pod.ip                                     # from host-local
    node.delete_pod(pod)                       # CNI DEL, then the object

Per pod, in order (as kubelet + containerd do):
  1. the Pod object is created, bound to the node (spec.nodeName);
  2. the sandbox: a network namespace (named <prefix>-n<N>p<K>, so topo's
     down() and gc find it) and a kubelet-like cgroup under the node's
     cgroup: <node cgroup>/kubepods/pod<UID>/<container id>;
  3. the node's CNI conflist is run, in the node's network namespace:
     Debian's bridge (host-local IPAM on the node's pod subnet, its state
     in a per-run folder) then build/skmesh-cni, prevResult threaded
     through, with the runtime's CNI_ARGS (K8S_POD_NAMESPACE, _NAME, _UID);
  4. the container: tests/lib/podtool.py whoami on the pod's port, in the
     pod's cgroup and network namespace (its greeting is "<ns>/<name>");
  5. the status through the status subresource: podIP(s), hostIP, phase
     Running, Ready.
Delete: CNI DEL (the chain in reverse, with the cached ADD result), the
container killed, the namespace and cgroup removed, then the object
deleted with grace period 0 (what kubelet's final delete does).

Node subnets: node n hands out 10.99.<100+n>.0/24 on its bridge cni0
(gateway .1); routes() adds, in every node, the route to each other
node's pod subnet over topo's fabric.
"""

import json
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import kube  # noqa: E402
import topo as topolib  # noqa: E402

CNI_BIN = "/usr/lib/cni"
PODS = "/api/v1/namespaces/%s/pods"
POD_PORT = 8080
BRIDGE = "cni0"


class KubeletError(Exception):
    """A step of the kubelet's part failed; the message says which."""


def pod_subnet(n):
    return "10.99.%d.0/24" % (100 + n)


def routes(topo):
    """Each node routes every other node's pod subnet to that node's
    fabric address (what a cluster's pod network gives)."""
    for n in range(1, topo.nodes + 1):
        for m in range(1, topo.nodes + 1):
            if m != n:
                topolib.sh(["ip", "-n", topo.node_ns(n), "route", "replace",
                            pod_subnet(m), "via", topo.node_ip(m), "dev", "fab0"])


def ready_conditions(ready=True):
    v = "True" if ready else "False"
    return [{"type": "Initialized", "status": "True"},
            {"type": "PodScheduled", "status": "True"},
            {"type": "ContainersReady", "status": v},
            {"type": "Ready", "status": v}]


class KPod:
    """One pod run by a Node: its object's names, UID, sandbox and
    container."""

    def __init__(self, node, ns, name, index):
        self.node = node
        self.namespace = ns
        self.name = name
        self.index = index
        self.uid = None
        self.cid = uuid.uuid4().hex          # the sandbox's container id
        self.netns = "%s-n%dp%d" % (node.topo.prefix, node.n, index)
        self.netns_path = os.path.join(topolib.NETNS_DIR, self.netns)
        self.pod_cgroup = None               # .../kubepods/pod<uid>
        self.cgroup = None                   # .../kubepods/pod<uid>/<cid>
        self.cni_result = None
        self.ip = None
        self.proc = None                     # the container (ToolProc)
        self.cni_add_s = None
        self.cni_add_err = ""

    @property
    def key(self):
        return "%s/%s" % (self.namespace, self.name)

    @property
    def path(self):
        return PODS % self.namespace + "/" + self.name

    @property
    def where(self):
        """(cgroup, netns) for topo.podtool() and topo.cgroup_argv()."""
        return (self.cgroup, self.netns_path)

    def __repr__(self):
        return "KPod(%s %s on node%d)" % (self.key, self.ip, self.node.n)


class Node:
    """The kubelet of topo's node n."""

    def __init__(self, topo, cluster, n, tmpdir, cni_socket, pending_dir,
                 ack_timeout_ms=5000):
        self.topo = topo
        self.k = cluster
        self.n = n
        self.name = "node%d" % n
        self.dir = os.path.join(tmpdir, "node%d" % n)
        os.makedirs(self.dir, exist_ok=True)
        self.cni_socket = cni_socket
        self.pending_dir = pending_dir
        self.pods = {}           # key -> KPod, while the sandbox exists
        self._next = 1
        self.conflist = {
            "cniVersion": "1.0.0", "name": "skmesh-k8s",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True,
                 "isDefaultGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local",
                          "ranges": [[{"subnet": pod_subnet(n)}]],
                          "dataDir": os.path.join(self.dir, "ipam")}},
                {"type": "skmesh-cni", "socket": cni_socket, "pendingDir": pending_dir,
                 "ackTimeoutMs": ack_timeout_ms,
                 "logFile": os.path.join(self.dir, "skmesh-cni.log")},
            ]}
        with open(os.path.join(self.dir, "10-skmesh.conflist"), "w") as f:
            json.dump(self.conflist, f, indent=1)
        self.kubepods = os.path.join(topo.node_cgroup(n), "kubepods")

    # --- the Node object ---------------------------------------------------

    def register(self):
        """Create the Node object (the EndpointSlice controller skips the
        pods of a node it does not know) and mark it Ready."""
        self.k.create("/api/v1/nodes", {"metadata": {"name": self.name, "labels": {
            "kubernetes.io/hostname": self.name}}})
        obj = self.k.get("/api/v1/nodes/" + self.name)
        obj["status"] = {"conditions": [{"type": "Ready", "status": "True",
                                         "reason": "KubeletReady"}],
                         "addresses": [{"type": "InternalIP",
                                        "address": self.topo.node_ip(self.n)}]}
        self.k.put_status("/api/v1/nodes/" + self.name, obj)

    # --- CNI -----------------------------------------------------------------

    def _plugin(self, typ):
        if typ == "skmesh-cni":
            return os.path.join(topolib.build_dir(), "skmesh-cni")
        return os.path.join(CNI_BIN, typ)

    def _cni(self, cmd, pod, plugin, prev):
        conf = dict(plugin, cniVersion=self.conflist["cniVersion"], name=self.conflist["name"])
        if prev is not None:
            conf["prevResult"] = prev
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": cmd,
               "CNI_CONTAINERID": pod.cid, "CNI_NETNS": pod.netns_path,
               "CNI_IFNAME": "eth0", "CNI_PATH": CNI_BIN + ":" + topolib.build_dir(),
               "CNI_ARGS": ("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;"
                            "K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s"
                            % (pod.namespace, pod.name, pod.cid, pod.uid))}
        # the runtime runs on the node: the plugins in its namespace
        argv = self.topo.node_argv(self.n, [self._plugin(plugin["type"])])
        r = subprocess.run(argv, env=env, input=json.dumps(conf).encode(),
                           capture_output=True, timeout=60)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        if r.returncode != 0:
            raise KubeletError("CNI %s of %s by %s failed (exit %d): %s %s"
                               % (cmd, pod.key, plugin["type"], r.returncode, out, err))
        return out, err

    def cni_add(self, pod):
        """ADD through the conflist; the last plugin's result."""
        prev = None
        t0 = time.monotonic()
        for plugin in self.conflist["plugins"]:
            out, err = self._cni("ADD", pod, plugin, prev)
            try:
                prev = json.loads(out)
            except ValueError:
                raise KubeletError("CNI ADD of %s: %s printed no JSON: %r %s"
                                   % (pod.key, plugin["type"], out, err))
            if plugin["type"] == "skmesh-cni":
                pod.cni_add_err = err
        pod.cni_add_s = time.monotonic() - t0
        pod.cni_result = prev
        return prev

    def cni_del(self, pod):
        """DEL through the conflist in reverse, with the cached result;
        the errors of each plugin (DEL goes on past a failing one)."""
        errors = []
        for plugin in reversed(self.conflist["plugins"]):
            try:
                self._cni("DEL", pod, plugin, pod.cni_result)
            except (KubeletError, subprocess.TimeoutExpired) as e:
                errors.append(str(e))
        return errors

    # --- pods ----------------------------------------------------------------

    def create_object(self, ns, name, labels=None, sa="default", host_network=False):
        """Step 1 only: the Pod object bound to this node; a KPod."""
        pod = KPod(self, ns, name, self._next)
        self._next += 1
        spec = {"nodeName": self.name, "serviceAccountName": sa,
                "containers": [{"name": "app", "image": "skmesh.test/none",
                                "ports": [{"name": "http", "containerPort": POD_PORT}]}]}
        if host_network:
            spec["hostNetwork"] = True
        obj = self.k.create(PODS % ns, {"metadata": {"name": name, "labels": labels or {}},
                                        "spec": spec})
        pod.uid = obj["metadata"]["uid"]
        pod.sa = sa
        pod.labels = dict(labels or {})
        return pod

    def sandbox(self, pod):
        """Steps 2-4: namespace, cgroup, CNI ADD, the container; returns
        the pod's IP."""
        topolib.sh(["ip", "netns", "add", pod.netns])
        self.pods[pod.key] = pod
        topolib.sh(["ip", "-n", pod.netns, "link", "set", "lo", "up"])
        pod.pod_cgroup = os.path.join(self.kubepods, "pod" + pod.uid)
        pod.cgroup = os.path.join(pod.pod_cgroup, pod.cid)
        os.makedirs(pod.cgroup)
        res = self.cni_add(pod)
        ips = [i["address"].split("/")[0] for i in res.get("ips", [])]
        if not ips:
            raise KubeletError("CNI ADD of %s gave no IP: %s" % (pod.key, res))
        pod.ip = ips[0]
        pod.proc = self.topo.podtool(pod.where, "whoami", "--port", POD_PORT,
                                     "--name", pod.key, "--timeout", 900)
        pod.proc.expect("listening", timeout=15)
        return pod.ip

    def write_status(self, pod, ready=True, phase="Running"):
        """Step 5: the status a kubelet writes for a started pod."""
        obj = self.k.get(pod.path)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        obj["status"] = {"phase": phase, "hostIP": self.topo.node_ip(self.n),
                         "hostIPs": [{"ip": self.topo.node_ip(self.n)}],
                         "podIP": pod.ip, "podIPs": [{"ip": pod.ip}],
                         "startTime": now, "conditions": ready_conditions(ready)}
        return self.k.put_status(pod.path, obj)

    def run_pod(self, ns, name, labels=None, sa="default", status=True):
        """Create, set up and (status) report a pod; the KPod."""
        pod = self.create_object(ns, name, labels, sa)
        self.sandbox(pod)
        if status:
            self.write_status(pod)
        return pod

    def stop_sandbox(self, pod):
        """CNI DEL, the container killed, namespace and cgroup removed;
        the errors met (cleanup goes on past them)."""
        errors = self.cni_del(pod) if pod.cni_result is not None else []
        if pod.proc:
            pod.proc.kill()
        try:
            if pod.pod_cgroup:
                topolib.remove_cgroup_tree(pod.pod_cgroup)
        except (topolib.TopoError, OSError) as e:
            errors.append(str(e))
        r = topolib.sh(["ip", "netns", "del", pod.netns], check=False)
        if r.returncode != 0 and os.path.exists(pod.netns_path):
            errors.append("ip netns del %s: %s" % (pod.netns, r.stderr.strip()))
        self.pods.pop(pod.key, None)
        return errors

    def delete_pod(self, pod):
        """The sandbox stopped, then the object deleted; errors met."""
        errors = self.stop_sandbox(pod)
        try:
            self.k.delete(pod.path)
        except kube.KubeError as e:
            errors.append(str(e))
        return errors

    def cleanup(self):
        """Stop every sandbox still there (the objects are left to the
        API server's end); the errors met."""
        errors = []
        for pod in list(self.pods.values()):
            errors += self.stop_sandbox(pod)
        try:
            topolib.remove_cgroup_tree(self.kubepods)
        except (topolib.TopoError, OSError) as e:
            errors.append(str(e))
        r = topolib.sh(["ip", "-n", self.topo.node_ns(self.n), "link", "del", BRIDGE],
                       check=False)
        if r.returncode != 0 and "Cannot find device" not in r.stderr \
                and "does not exist" not in r.stderr:
            errors.append("ip link del %s: %s" % (BRIDGE, r.stderr.strip()))
        return errors
