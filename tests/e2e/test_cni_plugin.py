#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
skmesh-cni (issue 11, 3), run as a container runtime runs a conflist:
Debian's real bridge plugin (host-local IPAM on 10.99.200.0/24, inside
this run's node namespace) then skmesh-cni, each called with the CNI_*
variables and its config on stdin, prevResult threaded from one to the
next, for real pod network namespaces. tests/tools/cni-peer.py plays
meshd's socket. Checked: ADD's output is bridge's result; meshd is told
the pod's namespace, name, UID, netns, interfaces and IPs exactly; CHECK
and DEL; with meshd down (no socket, a dead socket, a peer that never
answers) ADD still succeeds within its timeout and leaves a 0600 pending
record that DEL removes; a refusing meshd fails the ADD; VERSION; and
broken input each get the spec's error code as CNI error JSON.
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

CNI_DIR = "/usr/lib/cni"
HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "..", "tools", "cni-peer.py")
SUBNET = "10.99.200.0/24"
ACK_MS = 1500
UID = "3f1c2a9e-1b2c-4d5e-8f90-%012d"


class Cni:
    """The run's CNI state: its folder, conflist and pod namespaces."""

    def __init__(self, topo, tmp):
        self.topo = topo
        self.tmp = tmp
        self.sock = os.path.join(tmp, "cni.sock")
        self.pending = os.path.join(tmp, "pending")
        self.log = os.path.join(tmp, "cni.log")
        self.plugin = os.path.join(topolib.build_dir(), "skmesh-cni")
        self.conflist = {
            "cniVersion": "1.0.0", "name": "skm-cni-test",
            "plugins": [
                {"type": "bridge", "bridge": "cnibr0", "isGateway": True,
                 "ipam": {"type": "host-local", "subnet": SUBNET,
                          "dataDir": os.path.join(tmp, "ipam")}},
                {"type": "skmesh-cni", "socket": self.sock, "pendingDir": self.pending,
                 "logFile": self.log, "ackTimeoutMs": ACK_MS},
            ]}

    def conf(self, i, prev=None, version=None):
        """Plugin i's config as the runtime hands it over."""
        c = dict(self.conflist["plugins"][i])
        c["cniVersion"] = version or self.conflist["cniVersion"]
        c["name"] = self.conflist["name"]
        if prev is not None:
            c["prevResult"] = prev
        return c

    def env(self, cmd, cid, netns, pod=None, **over):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": cmd,
             "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0", "CNI_PATH": CNI_DIR}
        if netns:
            e["CNI_NETNS"] = netns
        if pod:
            e["CNI_ARGS"] = ("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;"
                             "K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s"
                             % (pod[0], pod[1], cid, pod[2]))
        for k, v in over.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def run(self, argv, env, stdin):
        """(rc, stdout, stderr, seconds) of one plugin call."""
        data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
        t0 = time.monotonic()
        r = subprocess.run(argv, env=env, input=data, capture_output=True, timeout=60)
        return (r.returncode, r.stdout.decode(errors="replace"),
                r.stderr.decode(errors="replace"), time.monotonic() - t0)

    def bridge(self, cmd, cid, netns, prev=None):
        # the bridge lives in the node's namespace, never the machine's
        argv = self.topo.node_argv(1, [os.path.join(CNI_DIR, "bridge")])
        return self.run(argv, self.env(cmd, cid, netns), self.conf(0, prev))

    def skm(self, cmd, cid, netns, pod, prev=None, stdin=None, **over):
        conf = stdin if stdin is not None else self.conf(1, prev)
        return self.run([self.plugin], self.env(cmd, cid, netns, pod, **over), conf)

    def record(self, cid):
        return os.path.join(self.pending, cid + ".json")


class Peer:
    """cni-peer.py on the run's socket, its output in a file."""

    def __init__(self, topo, cni, mode):
        self.out = os.path.join(cni.tmp, "peer-%s.out" % mode)
        self.f = open(self.out, "w")
        self.p = topo.popen([sys.executable, PEER, cni.sock, "--mode", mode],
                            stdout=self.f, stderr=subprocess.STDOUT)
        self.sock = cni.sock
        if not tap.wait_until(lambda: "listening" in self.text(), 10):
            raise RuntimeError("cni-peer did not start: " + self.text())

    def text(self):
        with open(self.out) as f:
            return f.read()

    def requests(self):
        return [json.loads(l)["request"] for l in self.text().splitlines()
                if l.startswith('{"request"')]

    def stop(self):
        self.p.kill()
        self.p.wait(5)
        self.f.close()
        if os.path.exists(self.sock):
            os.unlink(self.sock)


def new_pod_ns(topo, k):
    name = "%s-cnipod%d" % (topo.prefix, k)
    topolib.sh(["ip", "netns", "add", name])
    return name, os.path.join(topolib.NETNS_DIR, name)


def json_or_none(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def expected_request(op, cid, netns, pod, bres):
    req = {"version": 1, "op": op, "containerId": cid, "netns": netns, "ifName": "eth0",
           "podNamespace": pod[0], "podName": pod[1], "podUid": pod[2]}
    if op != "del":
        req["hostInterfaces"] = [i["name"] for i in bres["interfaces"] if not i.get("sandbox")]
        req["ips"] = [i["address"].split("/")[0] for i in bres["ips"]]
    return req


def check_error(t, what, r, code, cni):
    rc, out, err, _ = r
    j = json_or_none(out)
    t.check("%s: exit non-zero, CNI error JSON with code %d" % (what, code),
            rc != 0 and isinstance(j, dict) and j.get("code") == code
            and isinstance(j.get("msg"), str) and j["msg"]
            and j.get("cniVersion") in ("1.0.0", "0.4.0", "0.3.1", "0.3.0"),
            "rc %d\nstdout: %s\nstderr: %s" % (rc, out, err))
    return j


def body(t, topo):
    tmp = tempfile.mkdtemp(prefix="%s-cni-" % topo.prefix)
    try:
        run_all(t, topo, Cni(topo, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(t, topo, cni):
    peer = Peer(topo, cni, "ok")
    _, ns1 = new_pod_ns(topo, 1)
    cid1 = "c0ffee%s1" % topo.rid
    pod1 = ("shop", "web-1", UID % 1)

    # --- ADD through the chain, meshd up
    rc, out, err, _ = cni.bridge("ADD", cid1, ns1)
    bres = json_or_none(out)
    t.require("bridge ADD sets up the pod's interface", rc == 0 and bres and bres.get("ips"),
              "rc %d\n%s\n%s" % (rc, out, err))
    rc, out, err, dt = cni.skm("ADD", cid1, ns1, pod1, prev=bres)
    t.check("skmesh-cni ADD exits 0 with meshd up (%.0f ms)" % (dt * 1000), rc == 0,
            "rc %d\nstdout: %s\nstderr: %s" % (rc, out, err))
    t.eq("ADD's result is bridge's result, unchanged", json_or_none(out), bres)
    reqs = peer.requests()
    t.eq("meshd was told the pod exactly once: namespace, name, UID, netns, "
         "host interfaces, IPs", reqs, [expected_request("add", cid1, ns1, pod1, bres)])
    host_ifs = [i["name"] for i in bres["interfaces"] if not i.get("sandbox")]
    t.check("the host interfaces named to meshd are bridge's and its veth (%s)" % host_ifs,
            "cnibr0" in host_ifs and len(host_ifs) == 2, bres)
    r = topolib.sh(["ip", "-n", os.path.basename(ns1), "-j", "addr", "show", "eth0"])
    addrs = [a["local"] for l in json.loads(r.stdout) for a in l.get("addr_info", [])]
    t.check("the IP given to meshd is the one in the pod's namespace (%s)" % addrs,
            reqs and reqs[0]["ips"][0] in addrs, r.stdout)
    t.check("no pending record when meshd acknowledged", not os.path.exists(cni.record(cid1)))

    # --- CHECK
    rc, out, err, _ = cni.bridge("CHECK", cid1, ns1, prev=bres)
    t.check("bridge CHECK passes", rc == 0, out + err)
    rc, out, err, _ = cni.skm("CHECK", cid1, ns1, pod1, prev=bres)
    t.check("skmesh-cni CHECK exits 0 with no output", rc == 0 and out == "", out + err)
    t.eq("CHECK asks meshd about the pod", peer.requests()[1:],
         [expected_request("check", cid1, ns1, pod1, bres)])

    # --- VERSION
    rc, out, err, _ = cni.skm("VERSION", "", "", None, stdin={"cniVersion": "1.0.0"})
    j = json_or_none(out) or {}
    t.check("VERSION lists 1.0.0, 0.4.0, 0.3.1 and 0.3.0",
            rc == 0 and set(j.get("supportedVersions", [])) == {"1.0.0", "0.4.0", "0.3.1", "0.3.0"}
            and j.get("cniVersion") == "1.0.0", out + err)

    # --- a container that is no Kubernetes pod: passed through, meshd not asked
    rc, out, err, _ = cni.skm("ADD", cid1, ns1, None, prev=bres)
    t.check("without K8S_POD_* args: ADD passes bridge's result through",
            rc == 0 and json_or_none(out) == bres, out + err)
    t.eq("without K8S_POD_* args meshd is not asked", len(peer.requests()), 2)

    # --- a 0.4.0 config gets a 0.4.0 result
    rc, out, err, _ = cni.skm("ADD", cid1, ns1, pod1,
                              stdin=cni.conf(1, dict(bres, cniVersion="0.4.0"), "0.4.0"))
    t.eq("with a 0.4.0 config the result says cniVersion 0.4.0, the rest unchanged",
         json_or_none(out), dict(bres, cniVersion="0.4.0"), err)

    # --- refused by meshd
    peer.stop()
    refuse = Peer(topo, cni, "refuse")
    rc, out, err, _ = cni.skm("ADD", cid1, ns1, pod1, prev=bres)
    j = check_error(t, "ADD refused by meshd", (rc, out, err, 0), 100, cni)
    t.check("the refusal says meshd's reason", j and "refused by the test peer" in j["msg"], j)
    refuse.stop()

    # --- DEL with meshd up, in the runtime's reverse order
    peer = Peer(topo, cni, "ok")
    rc, out, err, _ = cni.skm("DEL", cid1, ns1, pod1, prev=bres)
    t.check("skmesh-cni DEL exits 0 with no output", rc == 0 and out == "", out + err)
    t.eq("DEL tells meshd", peer.requests(), [expected_request("del", cid1, ns1, pod1, bres)])
    rc, out, err, _ = cni.bridge("DEL", cid1, ns1, prev=bres)
    t.check("bridge DEL", rc == 0, out + err)
    peer.stop()

    # --- meshd down: no socket, then a dead socket, then a peer that never answers
    _, ns2 = new_pod_ns(topo, 2)
    cid2 = "deadbeef%s2" % topo.rid
    pod2 = ("shop", "db-0", UID % 2)
    rc, out, err, _ = cni.bridge("ADD", cid2, ns2)
    bres2 = json_or_none(out)
    t.require("bridge ADD of a second pod", rc == 0 and bres2, out + err)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for what, setup in (("no socket", None), ("a socket nobody listens on", "dead"),
                            ("a meshd that never answers", "silent")):
            silent = None
            if setup == "dead":
                dead.bind(cni.sock)        # bound, not listening: ECONNREFUSED
            elif setup == "silent":
                dead.close()
                os.unlink(cni.sock)
                silent = Peer(topo, cni, "silent")
            rc, out, err, dt = cni.skm("ADD", cid2, ns2, pod2, prev=bres2)
            ok = rc == 0 and json_or_none(out) == bres2
            t.check("meshd down (%s): ADD still succeeds with bridge's result" % what, ok,
                    "rc %d\nstdout: %s\nstderr: %s" % (rc, out, err))
            limit = ACK_MS / 1000.0 + 1.0 if silent else 1.0
            t.check("meshd down (%s): ADD returned in %.0f ms (< %.0f ms)"
                    % (what, dt * 1000, limit * 1000), dt < limit)
            if silent:
                t.check("the silent peer held the ADD for the whole timeout (%.0f ms >= %d)"
                        % (dt * 1000, ACK_MS), dt >= ACK_MS / 1000.0 * 0.95)
                t.eq("the silent peer got the request", silent.requests(),
                     [expected_request("add", cid2, ns2, pod2, bres2)])
            t.check("meshd down (%s): stderr says meshd is not reachable" % what,
                    "meshd is not reachable" in err, err)
            rec = cni.record(cid2)
            st = os.lstat(rec) if os.path.exists(rec) else None
            t.check("meshd down (%s): a pending record, mode 0600, regular file" % what,
                    st and stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, st)
            with open(rec) if st else open(os.devnull) as f:
                got = json_or_none(f.read())
            t.eq("meshd down (%s): the record is the request meshd would have got" % what,
                 got, expected_request("add", cid2, ns2, pod2, bres2))
            if silent:
                silent.stop()
    finally:
        dead.close()
        if os.path.exists(cni.sock):
            os.unlink(cni.sock)
    # --- the pending folder under attack: symlinks planted where the
    # record goes, the folder a symlink, the folder full
    victim = os.path.join(cni.tmp, "victim")
    with open(victim, "w") as f:
        f.write("untouched")
    rec = cni.record(cid2)
    os.unlink(rec)
    os.symlink(victim, rec)
    os.symlink(victim, rec + ".tmp")
    rc, out, err, _ = cni.skm("ADD", cid2, ns2, pod2, prev=bres2)
    st = os.lstat(rec)
    t.check("symlinks planted at the record and its temporary name: ADD succeeds, "
            "the record replaces the link, the target is untouched",
            rc == 0 and stat.S_ISREG(st.st_mode) and open(victim).read() == "untouched"
            and not os.path.lexists(rec + ".tmp"), (rc, out, err, st))
    os.unlink(rec)
    real = cni.pending + ".real"
    os.rename(cni.pending, real)
    os.symlink(real, cni.pending)
    rc, out, err, _ = cni.skm("ADD", cid2, ns2, pod2, prev=bres2)
    t.check("pendingDir is a symlink: ADD still succeeds with bridge's result, no record "
            "is written through the link, stderr says why",
            rc == 0 and json_or_none(out) == bres2 and os.listdir(real) == []
            and "no pending record could be left" in err, (rc, out, err, os.listdir(real)))
    os.unlink(cni.pending)
    os.rename(real, cni.pending)
    for i in range(4096):
        open(os.path.join(cni.pending, "filler%04d.json" % i), "w").close()
    rc, out, err, _ = cni.skm("ADD", cid2, ns2, pod2, prev=bres2)
    t.check("pendingDir full (4096 records): ADD still succeeds, no 4097th record, "
            "stderr says the folder is full",
            rc == 0 and json_or_none(out) == bres2 and not os.path.exists(rec)
            and len(os.listdir(cni.pending)) == 4096 and "4096 records" in err,
            (rc, out, err))
    for i in range(4096):
        os.unlink(os.path.join(cni.pending, "filler%04d.json" % i))
    garbage = Peer(topo, cni, "garbage")
    rc, out, err, dt = cni.skm("ADD", cid2, ns2, pod2, prev=bres2)
    t.check("a meshd whose reply is not the protocol counts as down: ADD succeeds at "
            "once (%.0f ms) and leaves the record" % (dt * 1000),
            rc == 0 and json_or_none(out) == bres2 and os.path.exists(rec) and dt < 1.0
            and "not {" in err, (rc, out, err))
    garbage.stop()

    t.check("the log file has the pod's lines",
            os.path.exists(cni.log) and "shop/db-0" in open(cni.log).read())
    rc, out, err, _ = cni.skm("CHECK", cid2, ns2, pod2, prev=bres2)
    t.check("CHECK with meshd down passes while the record waits", rc == 0 and out == "",
            out + err)
    rc, out, err, dt = cni.skm("DEL", cid2, ns2, pod2, prev=bres2)
    t.check("DEL with meshd down exits 0", rc == 0 and out == "", out + err)
    t.check("DEL removed the pending record", not os.path.exists(cni.record(cid2)))
    rc, out, err, dt = cni.skm("DEL", cid2, None, None)
    t.check("a second DEL, without netns or pod args, still exits 0", rc == 0, out + err)
    rc, out, err, _ = cni.bridge("DEL", cid2, ns2, prev=bres2)
    t.check("bridge DEL of the second pod", rc == 0, out + err)

    # --- hostile input: each gets its code, and meshd hears nothing
    peer = Peer(topo, cni, "ok")
    cid3 = "bad%s3" % topo.rid
    good = cni.conf(1, bres2)
    cases = [
        ("broken JSON", dict(stdin=b'{"cniVersion": "1.0.0", "name": '), 6),
        ("a JSON array", dict(stdin=b"[1, 2]"), 7),
        ("duplicate keys", dict(stdin=b'{"cniVersion":"1.0.0","cniVersion":"1.0.0"}'), 6),
        ("unknown cniVersion", dict(stdin=dict(good, cniVersion="9.9.9")), 1),
        ("CHECK under cniVersion 0.3.1", dict(cmd="CHECK", stdin=dict(good, cniVersion="0.3.1")), 1),
        ("missing prevResult", dict(stdin={k: v for k, v in good.items() if k != "prevResult"}), 7),
        ("an unknown field", dict(stdin=dict(good, frobnicate=True)), 2),
        ("a network name with '/'", dict(stdin=dict(good, name="a/b")), 7),
        ("ackTimeoutMs out of range", dict(stdin=dict(good, ackTimeoutMs=10 ** 9)), 7),
        ("a relative socket path", dict(stdin=dict(good, socket="run/x.sock")), 7),
        ("a bad address in prevResult", dict(stdin=dict(good, prevResult=dict(
            bres2, ips=[{"address": "10.1.2.300/24"}]))), 7),
        ("an interface index out of range", dict(stdin=dict(good, prevResult=dict(
            bres2, ips=[{"address": "10.1.2.3/24", "interface": 9}]))), 7),
        ("oversize input (300 KiB)", dict(stdin=b'{"cniVersion":"1.0.0","x":"' + b"a" * 300000 + b'"}'), 7),
        ("missing CNI_NETNS", dict(over={"CNI_NETNS": None}), 4),
        ("a relative CNI_NETNS", dict(over={"CNI_NETNS": "../netns/x"}), 4),
        ("missing CNI_CONTAINERID", dict(over={"CNI_CONTAINERID": None}), 4),
        ("a CNI_CONTAINERID with '/'", dict(over={"CNI_CONTAINERID": "../../etc/x"}), 4),
        ("a bad CNI_IFNAME", dict(over={"CNI_IFNAME": "eth0/../x"}), 4),
        ("missing CNI_PATH", dict(over={"CNI_PATH": None}), 4),
        ("an unknown CNI_COMMAND", dict(over={"CNI_COMMAND": "FROB"}), 4),
        ("a namespace that is no DNS label", dict(over={"CNI_ARGS":
            "K8S_POD_NAMESPACE=Shop_1;K8S_POD_NAME=x;K8S_POD_UID=1"}), 4),
        ("a pod named without its UID", dict(over={"CNI_ARGS":
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=x"}), 4),
        ("K8S_POD_NAME twice", dict(over={"CNI_ARGS":
            "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=x;K8S_POD_NAME=y;K8S_POD_UID=1"}), 4),
    ]
    for what, kw, code in cases:
        r = cni.skm(kw.get("cmd", "ADD"), kw.get("cid", cid3), ns2, pod2,
                    stdin=kw.get("stdin", good), **kw.get("over", {}))
        check_error(t, what, r, code, cni)
    t.eq("meshd heard nothing of the refused calls", peer.requests(), [])
    t.check("no pending record of the refused calls",
            not os.path.isdir(cni.pending) or not os.listdir(cni.pending),
            os.listdir(cni.pending) if os.path.isdir(cni.pending) else None)
    peer.stop()


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=1, need=("skmesh-cni",))
