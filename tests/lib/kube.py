# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
kube.py - a real Kubernetes control plane on loopback for the cluster-mode
tests: etcd, kube-apiserver and (optionally) kube-controller-manager running
only its EndpointSlice controller, the binaries scripts/k8s-servers.sh
built into its cache.

    with kube.Cluster() as k:
        k.create("/api/v1/nodes", {"metadata": {"name": "node1"}})
        status, obj = k.request("GET", "/api/v1/namespaces/default")
        k.kubeconfig            # path of an admin kubeconfig

Everything lives in one fresh temporary folder (certificates, keys, etcd's
data, logs, kubeconfig) and every server listens on 127.0.0.1 on ports
picked free, so two runs never collide. stop() (also reached from __exit__,
from a failed start and, through PR_SET_PDEATHSIG, from the death of the
Python process) ends the servers and removes the folder.

For meshd in a node's network namespace (tests/lib/topo.py), where the
host's 127.0.0.1 is out of reach, forwarder(netns, name) opens a relay on
127.0.0.1 inside that namespace (NetnsForwarder; cut() and block() drop its
connections, as a broken path would) and writes a kubeconfig naming it.
restart_apiserver() restarts the API server on its port; etcd_compact()
makes a watcher that fell behind get 410 Gone; install_istio_security_crds()
serves Istio's AuthorizationPolicy and PeerAuthentication.

No kubelet runs: the tests do its part (tests/lib/kubelet.py) (create Node and Pod objects, write
pod status through the status subresource). Authentication is by client
certificate (the admin is in system:masters), authorization RBAC; the
ServiceAccount admission plugin is off, since no controller here creates
the "default" service accounts it would demand.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(ROOT, "scripts", "k8s-servers.sh")
BINS = ("etcd", "kube-apiserver", "kube-controller-manager")


class KubeError(Exception):
    """The control plane could not be started or answered badly."""


def bin_dir():
    """Folder of the servers: $SKMESH_K8S_BIN, else what k8s-servers.sh
    --print names (its cache for the pinned version)."""
    d = os.environ.get("SKMESH_K8S_BIN")
    if d:
        return d
    r = subprocess.run([BUILD_SCRIPT, "--print"], capture_output=True, text=True)
    if r.returncode != 0:
        raise KubeError("%s --print failed: %s" % (BUILD_SCRIPT, r.stderr.strip()))
    return r.stdout.strip()


def missing_binaries(d=None):
    """Problems that make the servers impossible to start (as text)."""
    d = d or bin_dir()
    bad = [os.path.join(d, b) for b in BINS if not os.access(os.path.join(d, b), os.X_OK)]
    if bad:
        return ["missing %s: build them with scripts/k8s-servers.sh "
                "(or point SKMESH_K8S_BIN at a folder that has them)" % ", ".join(bad)]
    return []


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    # PR_SET_PDEATHSIG: a server never outlives the test that started it
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _openssl(*args, cwd):
    r = subprocess.run(("openssl",) + args, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise KubeError("openssl %s failed: %s" % (" ".join(args), r.stderr.strip()))


def _end(p, grace):
    """SIGTERM p, SIGKILL it after grace seconds; wait for it."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Cluster:
    def __init__(self, controller_manager=True, service_cidr="10.96.0.0/16",
                 bins=None, ready_timeout=90.0, apiserver_args=()):
        self.bins = bins or bin_dir()
        self.apiserver_args = list(apiserver_args)
        self.with_kcm = controller_manager
        self.service_cidr = service_cidr
        self.ready_timeout = ready_timeout
        self.dir = None
        self.procs = {}         # name -> Popen, while running
        self.spawned = []       # every Popen and folder ever made, for
        self.workdir = None     # the callers' leftover checks
        self.logs = {}          # name -> log path
        self.url = None
        self.kubeconfig = None
        self._ssl = None
        self.forwarders = []    # NetnsForwarder, stopped by stop()

    # --- lifecycle -------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        bad = missing_binaries(self.bins)
        if bad:
            raise KubeError("\n".join(bad))
        self.dir = self.workdir = tempfile.mkdtemp(prefix="skmesh-kube-")
        try:
            self._pki()
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            if self.with_kcm:
                self._start_kcm()
        except BaseException:
            self.stop()
            raise

    def stop(self):
        """End every server (SIGTERM, then SIGKILL) and remove the folder.
        Safe to call twice."""
        for fw in self.forwarders:
            fw.stop()
        self.forwarders = []
        for name in reversed(list(self.procs)):
            _end(self.procs[name], 10)
        self.procs = {}
        if self.dir and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def log_tail(self, name, lines=30):
        try:
            with open(self.logs[name], errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except (KeyError, OSError) as e:
            return "(no log: %s)" % e

    def _path(self, *p):
        return os.path.join(self.dir, *p)

    def _spawn(self, name, argv):
        log = self._path(name + ".log")
        self.logs[name] = log
        with open(log, "ab") as f:      # a restart appends
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                cwd=self.dir, preexec_fn=_die_with_parent)
        self.spawned.append(self.procs[name])

    def _wait(self, name, probe, what):
        deadline = time.monotonic() + self.ready_timeout
        last = None
        while time.monotonic() < deadline:
            p = self.procs[name]
            if p.poll() is not None:
                raise KubeError("%s exited with %d before %s; its log ends:\n%s"
                                % (name, p.returncode, what, self.log_tail(name)))
            try:
                if probe():
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError) as e:
                last = e
            time.sleep(0.2)
        raise KubeError("%s not %s within %.0f s (last probe error: %s); its log ends:\n%s"
                        % (name, what, self.ready_timeout, last, self.log_tail(name)))

    # --- pieces ----------------------------------------------------------

    def _pki(self):
        """A CA, the API server's serving certificate for 127.0.0.1, client
        certificates for the admin and the controller manager, and the
        service-account signing key."""
        d = self.dir
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=skmesh-test-ca", cwd=d)
        certs = {
            "apiserver": ("/CN=kube-apiserver",
                          "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "extendedKeyUsage=serverAuth\n"),
            "admin": ("/O=system:masters/CN=skmesh-test-admin",
                      "extendedKeyUsage=clientAuth\n"),
            "kcm": ("/O=system:masters/CN=system:kube-controller-manager",
                    "extendedKeyUsage=clientAuth\n"),
        }
        for name, (subj, ext) in certs.items():
            with open(os.path.join(d, name + ".ext"), "w") as f:
                f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" + ext)
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
                     "-out", name + ".csr", "-subj", subj, cwd=d)
            _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-days", "2", "-extfile", name + ".ext",
                     "-out", name + ".crt", cwd=d)
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", "sa.key", cwd=d)
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
        ctx = ssl.create_default_context(cafile=self._path("ca.crt"))
        ctx.load_cert_chain(self._path("admin.crt"), self._path("admin.key"))
        self._ssl = ctx

    def _start_etcd(self):
        self.etcd_port, peer = free_port(), free_port()
        self.etcd_url = "http://127.0.0.1:%d" % self.etcd_port
        peer_url = "http://127.0.0.1:%d" % peer
        self._spawn("etcd", [
            os.path.join(self.bins, "etcd"),
            "--name", "skmesh-test",
            "--data-dir", self._path("etcd"),
            "--listen-client-urls", self.etcd_url,
            "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", "skmesh-test=" + peer_url,
            "--listen-metrics-urls", "http://127.0.0.1:%d" % free_port(),
            "--log-level", "warn",
        ])

        def healthy():
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                return json.load(r).get("health") == "true"
        self._wait("etcd", healthy, "healthy")

    def _start_apiserver(self, port=None):
        self.api_port = port or free_port()
        self.url = "https://127.0.0.1:%d" % self.api_port
        p = self._path
        self._spawn("kube-apiserver", [
            os.path.join(self.bins, "kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1",
            "--advertise-address", "127.0.0.1",
            # the "kubernetes" Service's endpoint may not be loopback; no
            # test reaches the API through it
            "--endpoint-reconciler-type", "none",
            "--secure-port", str(self.api_port),
            "--tls-cert-file", p("apiserver.crt"),
            "--tls-private-key-file", p("apiserver.key"),
            "--client-ca-file", p("ca.crt"),
            "--authorization-mode", "RBAC",
            "--anonymous-auth=false",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", p("sa.pub"),
            "--service-account-signing-key-file", p("sa.key"),
            "--service-cluster-ip-range", self.service_cidr,
            "--disable-admission-plugins", "ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
        ] + self.apiserver_args)

        def ready():
            status, _ = self.request("GET", "/readyz", timeout=2)
            return status == 200
        self._wait("kube-apiserver", ready, "ready (/readyz)")

    def restart_apiserver(self, down_s=0.0):
        """Stop kube-apiserver (SIGTERM, as a rolling restart does), keep
        it down for down_s seconds, start it again on the same port with
        the same arguments and wait until it is ready. Clients see their
        streams end and their connections refused meanwhile."""
        _end(self.procs.pop("kube-apiserver"), 20)
        time.sleep(down_s)
        self._start_apiserver(self.api_port)

    def etcd_compact(self):
        """Compacts etcd up to its current revision (what the API server's
        compactor does every few minutes), so a watch from an older
        resourceVersion gets 410 Gone. Returns that revision."""
        def post(path, body):
            req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)
        # the header of any range answer carries the current revision
        rev = int(post("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def _kubeconfig_text(self, user, cert=None, key=None, token_file=None, url=None):
        """A kubeconfig for url (the API server's): the user's client
        certificate and key, or a tokenFile (read before each request)."""
        q = json.dumps      # a JSON string is a valid YAML scalar
        cred = ("    tokenFile: %s\n" % q(token_file) if token_file else
                "    client-certificate: %s\n    client-key: %s\n" % (q(cert), q(key)))
        return ("apiVersion: v1\nkind: Config\n"
                "clusters:\n- name: skmesh-test\n  cluster:\n"
                "    server: %s\n    certificate-authority: %s\n"
                "users:\n- name: %s\n  user:\n%s"
                "contexts:\n- name: skmesh-test\n  context:\n"
                "    cluster: skmesh-test\n    user: %s\n"
                "current-context: skmesh-test\n"
                % (q(url or self.url), q(self._path("ca.crt")), user, cred, user))

    def _write_kubeconfig(self):
        self.kubeconfig = self._path("admin.kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write(self._kubeconfig_text("admin", self._path("admin.crt"),
                                          self._path("admin.key")))

    def _start_kcm(self):
        kc = self._path("kcm.kubeconfig")
        with open(kc, "w") as f:
            f.write(self._kubeconfig_text("kcm", self._path("kcm.crt"), self._path("kcm.key")))
        self.kcm_port = free_port()
        self._spawn("kube-controller-manager", [
            os.path.join(self.bins, "kube-controller-manager"),
            "--kubeconfig", kc,
            "--authentication-kubeconfig", kc,
            "--authorization-kubeconfig", kc,
            "--controllers", "endpointslice",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--bind-address", "127.0.0.1",
            "--secure-port", str(self.kcm_port),
            "--profiling=false",
        ])
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE   # its self-made serving certificate

        def healthy():
            with urllib.request.urlopen("https://127.0.0.1:%d/healthz" % self.kcm_port,
                                        timeout=2, context=ctx) as r:
                return r.status == 200
        self._wait("kube-controller-manager", healthy, "healthy (/healthz)")

    # --- API -------------------------------------------------------------

    def request(self, method, path, body=None, timeout=10, content_type=None):
        """One call as the admin; returns (HTTP status, decoded JSON or the
        raw text when it is not JSON). HTTP errors are returned, not raised."""
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type or "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def create(self, path, obj):
        """POST obj to the collection path; the created object, or
        KubeError naming the path and the API's answer."""
        status, out = self.request("POST", path, obj)
        if status not in (200, 201):
            raise KubeError("POST %s: HTTP %d: %s" % (path, status, out))
        return out

    def put_status(self, path, obj):
        """PUT obj to path + "/status" (what a kubelet does for a pod)."""
        status, out = self.request("PUT", path + "/status", obj)
        if status != 200:
            raise KubeError("PUT %s/status: HTTP %d: %s" % (path, status, out))
        return out

    def get(self, path):
        """The object at path, or None when it does not exist; KubeError
        for any other answer."""
        status, out = self.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeError("GET %s: HTTP %d: %s" % (path, status, out))
        return out

    def delete(self, path, grace=0):
        """DELETE path (gracePeriodSeconds=grace); True when it was there."""
        status, out = self.request("DELETE", "%s?gracePeriodSeconds=%d" % (path, grace))
        if status == 404:
            return False
        if status not in (200, 202):
            raise KubeError("DELETE %s: HTTP %d: %s" % (path, status, out))
        return True

    def patch(self, path, patch):
        """A JSON merge patch (RFC 7386) of the object at path."""
        status, out = self.request("PATCH", path, patch,
                                   content_type="application/merge-patch+json")
        if status != 200:
            raise KubeError("PATCH %s: HTTP %d: %s" % (path, status, out))
        return out

    def replace(self, path, obj):
        """PUT obj at path (its resourceVersion, if any, must be current)."""
        status, out = self.request("PUT", path, obj)
        if status != 200:
            raise KubeError("PUT %s: HTTP %d: %s" % (path, status, out))
        return out

    # --- Istio's security CRDs --------------------------------------------

    def install_istio_security_crds(self, timeout=30.0):
        """Install minimal CustomResourceDefinitions for Istio's
        AuthorizationPolicy and PeerAuthentication (security.istio.io,
        versions v1 and v1beta1, both served, v1 stored; spec kept as
        written, as Istio's own CRDs keep these fields), then wait until
        each is Established and both versions answer a list."""
        for kind, plural in (("AuthorizationPolicy", "authorizationpolicies"),
                             ("PeerAuthentication", "peerauthentications")):
            schema = {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object",
                             "x-kubernetes-preserve-unknown-fields": True},
                    "status": {"type": "object",
                               "x-kubernetes-preserve-unknown-fields": True}}}}
            crd = {"apiVersion": "apiextensions.k8s.io/v1",
                   "kind": "CustomResourceDefinition",
                   "metadata": {"name": "%s.security.istio.io" % plural},
                   "spec": {"group": "security.istio.io", "scope": "Namespaced",
                            "names": {"kind": kind, "plural": plural,
                                      "singular": kind.lower(),
                                      "listKind": kind + "List"},
                            "versions": [
                                {"name": "v1", "served": True, "storage": True,
                                 "schema": schema},
                                {"name": "v1beta1", "served": True, "storage": False,
                                 "schema": schema}]}}
            self.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        deadline = time.monotonic() + timeout
        for plural in ("authorizationpolicies", "peerauthentications"):
            path = ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                    "%s.security.istio.io" % plural)
            while True:
                crd = self.get(path) or {}
                conds = {c.get("type"): c.get("status")
                         for c in crd.get("status", {}).get("conditions", [])}
                if conds.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise KubeError("CRD %s not Established within %.0f s: %s"
                                    % (plural, timeout, crd.get("status")))
                time.sleep(0.1)
            for version in ("v1", "v1beta1"):
                lp = "/apis/security.istio.io/%s/%s" % (version, plural)
                while True:
                    status, out = self.request("GET", lp)
                    if status == 200:
                        break
                    if time.monotonic() > deadline:
                        raise KubeError("GET %s: HTTP %d after the CRD was Established: %s"
                                        % (lp, status, out))
                    time.sleep(0.1)

    # --- reaching the API from a node's network namespace -----------------

    def forwarder(self, netns_path, name, token_file=None):
        """A NetnsForwarder into netns_path and a kubeconfig naming it,
        with the admin's credentials or, given token_file, a bearer token
        read from that file; stopped by stop()."""
        fw = NetnsForwarder(netns_path, self.api_port)
        self.forwarders.append(fw)
        fw.kubeconfig = self._path("%s.kubeconfig" % name)
        url = "https://127.0.0.1:%d" % fw.port
        if token_file:
            text = self._kubeconfig_text(name, token_file=token_file, url=url)
        else:
            text = self._kubeconfig_text("admin", self._path("admin.crt"),
                                         self._path("admin.key"), url=url)
        with open(fw.kubeconfig, "w") as f:
            f.write(text)
        return fw

    def service_account_token(self, ns, sa, bound_secret=None, seconds=3600):
        """A token of ServiceAccount ns/sa from the TokenRequest API, as
        kubelet projects one into a pod. Bound to Secret ns/bound_secret
        when given: deleting that Secret invalidates the token."""
        spec = {"expirationSeconds": seconds}
        if bound_secret:
            uid = self.get("/api/v1/namespaces/%s/secrets/%s" % (ns, bound_secret))
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Secret",
                                      "name": bound_secret,
                                      "uid": uid["metadata"]["uid"]}
        out = self.create("/api/v1/namespaces/%s/serviceaccounts/%s/token" % (ns, sa),
                          {"apiVersion": "authentication.k8s.io/v1",
                           "kind": "TokenRequest", "spec": spec})
        return out["status"]["token"]

    COLLECTIONS = {
        "Namespace": "/api/v1/namespaces",
        "ServiceAccount": "/api/v1/namespaces/%s/serviceaccounts",
        "Secret": "/api/v1/namespaces/%s/secrets",
        "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    }

    def object_path(self, obj):
        """(collection path, object path) of obj, for the kinds in
        COLLECTIONS."""
        coll = self.COLLECTIONS[obj["kind"]]
        if "%s" in coll:
            coll = coll % obj["metadata"]["namespace"]
        return coll, coll + "/" + obj["metadata"]["name"]

    def apply(self, obj):
        """Create obj, or replace what is there (a kubectl apply of one
        object, last writer wins)."""
        coll, path = self.object_path(obj)
        cur = self.get(path)
        if cur is None:
            return self.create(coll, obj)
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
        return self.replace(path, obj)


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def listen_in_netns(netns_path, host="127.0.0.1", port=0, backlog=64):
    """A listening TCP socket made inside the network namespace at
    netns_path (such as /run/netns/NAME). Made on a thread of its own that
    enters the namespace with setns(2) and then ends, so no other thread
    of this process changes namespace; the socket stays in the namespace
    it was made in, and any thread may accept() on it."""
    got = {}

    def make():
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, "setns(%s): %s" % (netns_path, os.strerror(e)))
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(backlog)
            got["sock"] = s
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            got["error"] = e
    th = threading.Thread(target=make, name="setns-listen")
    th.start()
    th.join()
    if "error" in got:
        raise got["error"]
    return got["sock"]


class NetnsForwarder:
    """A TCP relay from 127.0.0.1:<port> inside a network namespace (a
    node's) to 127.0.0.1:<target_port> of the namespace of this process,
    where the API server listens: the node's meshd reaches the API as
    https://127.0.0.1:<port>, a name the server's certificate holds. The
    bytes are relayed untouched (TLS end to end). cut() ends every relayed
    connection at once, as a dropped network path would; block() also
    refuses new ones until unblock(). At most MAX_CONNS at a time."""

    MAX_CONNS = 64

    def __init__(self, netns_path, target_port):
        self.netns_path = netns_path
        self.target = ("127.0.0.1", target_port)
        self.lsock = listen_in_netns(netns_path)
        self.port = self.lsock.getsockname()[1]
        self.kubeconfig = None
        self.accepted = 0
        self.cuts = 0
        self.blocked = False
        self._lock = threading.Lock()
        self._pairs = {}        # (client, upstream) -> pumps running
        self._stopped = False
        # started from the caller's thread: relayed connections are made
        # in the caller's namespace
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name="fwd-accept")
        self._thread.start()

    def _accept_loop(self):
        while not self._stopped:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self._lock:
                if self._stopped or self.blocked or len(self._pairs) >= self.MAX_CONNS:
                    c.close()
                    continue
                self.accepted += 1
            try:
                u = socket.create_connection(self.target, timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            pair = (c, u)
            with self._lock:
                self._pairs[pair] = 2
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b, pair), daemon=True,
                                 name="fwd-pump").start()

    def _pump(self, src, dst, pair):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                dst.sendall(d)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self._lock:
            self._pairs[pair] -= 1
            last = self._pairs[pair] == 0
            if last:
                del self._pairs[pair]
        if last:            # both directions done
            for x in pair:
                x.close()

    def connections(self):
        with self._lock:
            return len(self._pairs)

    def cut(self):
        """End every relayed connection now (both sides see a reset or
        an EOF); returns how many there were."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            for x in pair:      # the pumps see it and close the pair
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.cuts += len(pairs)
        return len(pairs)

    def block(self):
        """cut(), and refuse new connections until unblock()."""
        self.blocked = True
        return self.cut()

    def unblock(self):
        self.blocked = False

    def stop(self):
        self._stopped = True
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lsock.close()
        self.cut()
        self._thread.join(5)


def tap_main(body, up="etcd and kube-apiserver are up", files=(), **cluster_kw):
    """Runs body(t, k) as a TAP test on a fresh Cluster(**cluster_kw) and
    exits with its result: the binaries checked first; SIGTERM (the
    runner's timeout) and ^C turned into a clean stop; an exception is a
    failed line. Last line: every server stopped and the cluster's folder
    gone, and FILES (the caller's temporary files) removed."""
    import signal
    import sys
    import tap
    t = tap.Tap()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, tap._on_signal)
    bad = missing_binaries()
    if bad:
        t.check("prerequisites", False, "\n".join(bad))
        print("1..%d" % t.n)
        sys.exit(1)
    k = Cluster(**cluster_kw)
    try:
        k.start()
        t.check(up, True)
        body(t, k)
    except tap.Abort:
        pass
    except Exception as e:  # noqa: BLE001 - reported as a test line
        t.check("no exception", False, "%s: %s" % (type(e).__name__, e))
    finally:
        k.stop()
        for f in files:
            if os.path.exists(f):
                os.unlink(f)
        running = [p.args[0] for p in k.spawned if p.poll() is None]
        left = [p for p in [k.workdir] + list(files) if p and os.path.exists(p)]
        t.check("cleanup: no server running, no folder left",
                not running and not left, "running: %s\nleft: %s" % (running, left))
    print("1..%d" % t.n)
    sys.exit(1 if t.failed else 0)
