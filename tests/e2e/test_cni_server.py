#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
meshd's side of skmesh-cni's socket (agent/cnisrv.c, issue 11, 3), run
alone as build/tests/cnisrv-echo (an owner that answers after a delay)
and driven by the REAL skmesh-cni plugin chained after Debian's bridge
plugin for real pod namespaces: ADD waits for the answer, CHECK, DEL, a
refusal; pending records left while the server is down are handed over
at its start and removed once answered, invalid ones set aside. Then
attacks with raw sockets: oversize, garbage, an unknown version, bytes
after the line, a slow client, more clients than allowed, a client that
is not root; stale, foreign and live socket files. The server must
survive all of it and serve a real ADD afterwards.

Also meshd's /proc scan (agent/podscan.c through build/tests/podscan-find):
processes in cgroups named like pods (cgroupfs and systemd layouts), one
in a namespace holding the pod's IP and decoys with the same pod UID in
namespaces without it: only the right one is found.
"""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import tap  # noqa: E402
import topo as topolib  # noqa: E402
import test_cni_plugin as cp  # noqa: E402  (its runtime side: Cni, pod namespaces)

MSG_MAX = 64 * 1024
DELAY_MS = 300
TIMEOUT_MS = 1000
UID = "7a1c2a9e-1b2c-4d5e-8f90-%012d"


class Echo:
    """cnisrv-echo on the run's socket; stdout lines and stats file."""

    def __init__(self, topo, cni, tag, *extra):
        self.out = os.path.join(cni.tmp, "echo-%s.out" % tag)
        self.err = os.path.join(cni.tmp, "echo-%s.err" % tag)
        self.statf = os.path.join(cni.tmp, "echo-%s.stats" % tag)
        self.sock = cni.sock
        argv = [os.path.join(topolib.build_dir(), "tests", "cnisrv-echo"),
                "--socket", cni.sock, "--pending", cni.pending, "--delay-ms", str(DELAY_MS),
                "--timeout-ms", str(TIMEOUT_MS), "--stats", self.statf] + list(extra)
        self.fo, self.fe = open(self.out, "w"), open(self.err, "w")
        self.p = topo.popen(argv, stdout=self.fo, stderr=self.fe)
        tap.wait_until(lambda: self.p.poll() is not None or "listening" in self.text(), 10)

    def text(self):
        with open(self.out) as f:
            return f.read()

    def log(self):
        with open(self.err) as f:
            return f.read()

    def lines(self, key):
        return [json.loads(l)[key] for l in self.text().splitlines() if l.startswith('{"%s"' % key)]

    def loaded(self):
        """How many pending records the server handed over at start."""
        return [json.loads(l) for l in self.text().splitlines()
                if l.startswith('{"listening"')][0]["loaded"]

    def requests(self):
        return self.lines("request")

    def started(self):
        return '{"listening"' in self.text() and self.p.poll() is None

    def stats(self):
        try:
            with open(self.statf) as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return {}

    def stats_when(self, pred, timeout=3):
        """The counters once PRED holds of them (or at the timeout): the
        file is rewritten after the pass that changed them."""
        tap.wait_until(lambda: pred(self.stats()), timeout)
        return self.stats()

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        self.fo.close()
        self.fe.close()
        return self.p.returncode


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def read_all(s):
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except OSError as e:
        # a reset after the reply (the server closed with our bytes unread)
        # still leaves the reply read
        return got or ("<%s>" % e).encode()
    return got


def ask(path, data, shut=True):
    """Sends DATA, then reads to EOF: the raw reply."""
    s = connect(path)
    try:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass            # closed by the server before all was sent: read what it said
        return read_all(s)
    finally:
        s.close()


def reply_of(raw):
    try:
        return json.loads(raw.decode())
    except ValueError:
        return None


def request(op, cid, uid_n=9, **over):
    r = {"version": 1, "op": op, "containerId": cid, "netns": "/var/run/netns/x",
         "ifName": "eth0", "podNamespace": "shop", "podName": "raw-%d" % uid_n,
         "podUid": UID % uid_n, "hostInterfaces": ["cnibr0"], "ips": ["10.99.200.250"]}
    r.update(over)
    return (json.dumps(r) + "\n").encode()


def body(t, topo):
    tmp = tempfile.mkdtemp(prefix="%s-cnisrv-" % topo.prefix)
    echos = []
    try:
        cni = cp.Cni(topo, tmp)
        # a folder that does not exist yet: the server makes it, 0700
        cni.sock = os.path.join(tmp, "run", "skmesh", "cni.sock")
        cni.conflist["plugins"][1]["socket"] = cni.sock
        run_server(t, topo, cni, echos)
        run_attacks(t, topo, cni, echos)
        run_socket_files(t, topo, cni, echos)
        run_podscan(t, topo)
    finally:
        for e in echos:
            e.stop(signal.SIGKILL)
        reports = []
        for name in sorted(os.listdir(tmp)):
            if name.startswith("echo-") and name.endswith(".err"):
                with open(os.path.join(tmp, name), errors="replace") as f:
                    reports += ["%s: %s" % (name, l) for l in f
                                if "Sanitizer" in l or "runtime error:" in l]
        t.check("no sanitizer report in the servers' logs", not reports, "\n".join(reports[:20]))
        shutil.rmtree(tmp, ignore_errors=True)


def bridged_pod(t, topo, cni, k, name):
    """Pod K's namespace wired by the bridge plugin: (netns, container
    id, (namespace, name, uid), bridge's result)."""
    _, netns = cp.new_pod_ns(topo, 10 + k)
    cid = "c%d%s" % (k, topo.rid)
    pod = ("shop", name, UID % k)
    rc, out, err, _ = cni.bridge("ADD", cid, netns)
    res = cp.json_or_none(out)
    t.require("bridge ADD wires pod %s" % name, rc == 0 and res, out + err)
    return netns, cid, pod, res


def run_server(t, topo, cni, echos):
    refused_cid = "bad%s" % topo.rid
    echo = Echo(topo, cni, "a", "--refuse", refused_cid)
    echos.append(echo)
    t.require("cnisrv-echo starts with no pending records",
              echo.started() and echo.loaded() == 0,
              echo.text() + echo.log())
    dst = os.stat(os.path.dirname(cni.sock))
    sst = os.lstat(cni.sock)
    t.check("the socket's folder is made 0700, the socket is 0600",
            stat.S_IMODE(dst.st_mode) == 0o700 and stat.S_ISSOCK(sst.st_mode)
            and stat.S_IMODE(sst.st_mode) == 0o600, (oct(dst.st_mode), oct(sst.st_mode)))

    # --- ADD through bridge then skmesh-cni: the plugin waits for the answer
    ns1, cid1, pod1, bres = bridged_pod(t, topo, cni, 1, "web-1")
    rc, out, err, dt = cni.skm("ADD", cid1, ns1, pod1, prev=bres)
    t.check("skmesh-cni ADD succeeds through the server with bridge's result",
            rc == 0 and cp.json_or_none(out) == bres, "rc %d\n%s\n%s" % (rc, out, err))
    t.check("ADD waited for the owner's answer (%.0f ms >= %d ms)" % (dt * 1000, DELAY_MS),
            dt >= DELAY_MS / 1000.0)
    t.check("the plugin says the pod is enrolled", "enrolled by meshd" in err, err)
    want = cp.expected_request("add", cid1, ns1, pod1, bres)
    reqs = echo.requests()
    got = reqs[0] if reqs else {}
    t.eq("the owner got the pod exactly: op, container, netns, ifName, pod, host "
         "interfaces, IPv4 addresses",
         {k: got.get(k) for k in ("op", "containerId", "netns", "ifName", "podNamespace",
                                  "podName", "podUid", "hostInterfaces", "ips",
                                  "fromPending")},
         dict({k: want[k] for k in ("op", "containerId", "netns", "ifName", "podNamespace",
                                    "podName", "podUid", "hostInterfaces")},
              ips=[a for a in want["ips"] if ":" not in a], fromPending=False))
    t.check("no pending record after an answered ADD", not os.path.exists(cni.record(cid1)))

    rc, out, err, _ = cni.skm("CHECK", cid1, ns1, pod1, prev=bres)
    t.check("CHECK through the server exits 0", rc == 0 and out == "", out + err)
    t.eq("the owner got the CHECK", [r["op"] for r in echo.requests()], ["add", "check"])

    rc, out, err, _ = cni.skm("ADD", refused_cid, ns1, pod1, prev=bres)
    j = cp.check_error(t, "ADD the owner refuses", (rc, out, err, 0), 100, cni)
    t.check("the refusal carries the owner's reason",
            j and "refused by cnisrv-echo" in j.get("msg", ""), j)

    rc, out, err, _ = cni.skm("DEL", cid1, ns1, pod1, prev=bres)
    t.check("DEL through the server exits 0", rc == 0 and "released by meshd" in err, out + err)
    t.eq("the owner got the DEL last", echo.requests()[-1]["op"], "del")
    st = echo.stats_when(lambda s: s.get("replies_ok") == 3)
    t.eq("counters: 4 requests, 3 answered ok, 1 refused, nothing bad",
         [st.get(k) for k in ("requests", "replies_ok", "replies_err", "bad_requests")],
         [4, 3, 1, 0])

    # --- the server down: the plugin leaves a record; the server reads it at start
    t.eq("SIGTERM: the server exits 0", echo.stop(), 0)
    echos.remove(echo)
    t.check("the socket file is gone with the server", not os.path.lexists(cni.sock))
    ns2, cid2, pod2, bres2 = bridged_pod(t, topo, cni, 2, "db-0")
    rc, out, err, _ = cni.skm("ADD", cid2, ns2, pod2, prev=bres2)
    t.check("server down: ADD succeeds and leaves a pending record",
            rc == 0 and os.path.exists(cni.record(cid2)), out + err)
    # invalid records beside it, and a write in progress
    bad = {"junk.json": b"not json at all",
           "other%s.json" % topo.rid: request("add", "mismatch%s" % topo.rid),
           "del%s.json" % topo.rid: request("del", "del%s" % topo.rid),
           "big%s.json" % topo.rid: b"{" + b" " * (MSG_MAX + 10) + b"}"}
    for name, data in bad.items():
        with open(os.path.join(cni.pending, name), "wb") as f:
            f.write(data)
    tmpname = os.path.join(cni.pending, "w%s.json.tmp" % topo.rid)
    with open(tmpname, "wb") as f:
        f.write(b"{")
    os.symlink("/etc/passwd", os.path.join(cni.pending, "link%s.json" % topo.rid))
    echo = Echo(topo, cni, "b")
    echos.append(echo)
    t.require("the server starts again", echo.started(), echo.text() + echo.log())
    t.eq("at start exactly the one valid record is handed over",
         echo.loaded(), 1)
    reqs = echo.requests()
    t.check("...as the ADD the plugin would have sent, marked fromPending",
            len(reqs) == 1 and reqs[0]["containerId"] == cid2 and reqs[0]["fromPending"]
            and reqs[0]["op"] == "add" and reqs[0]["netns"] == ns2
            and reqs[0]["podUid"] == pod2[2], reqs)
    t.check("once answered, its record is removed",
            tap.wait_until(lambda: not os.path.exists(cni.record(cid2)), 5),
            os.listdir(cni.pending))
    left = sorted(os.listdir(cni.pending))
    want_left = sorted([n + ".bad" for n in bad] + ["link%s.json.bad" % topo.rid,
                                                     os.path.basename(tmpname)])
    t.eq("invalid records (garbage, a containerId not the file's, a DEL, oversize, a "
         "symlink) are set aside as .bad, a write in progress is left alone", left, want_left)
    t.check("the symlink's target is untouched", os.path.exists("/etc/passwd")
            and os.path.islink(os.path.join(cni.pending, "link%s.json.bad" % topo.rid)))
    t.check("each invalid record is named in the log with why",
            all(n in echo.log() for n in bad) and "moved aside" in echo.log(), echo.log())
    st = echo.stats_when(lambda s: s.get("pending_bad") == 5)
    t.eq("counters: pending_loaded 1, pending_bad 5", (st.get("pending_loaded"),
                                                      st.get("pending_bad")), (1, 5))
    for n in os.listdir(cni.pending):
        os.unlink(os.path.join(cni.pending, n))

    # --- a DEL answered removes the container's record, whoever wrote it
    cid3 = "c3%s" % topo.rid
    with open(cni.record(cid3), "wb") as f:
        f.write(request("add", cid3, 3))
    raw = ask(cni.sock, request("del", cid3, 3))
    t.eq("a raw DEL is answered ok", reply_of(raw), {"ok": True})
    t.check("the DEL removed the container's pending record", not os.path.exists(cni.record(cid3)))
    rc, out, err, _ = cni.skm("DEL", cid2, ns2, pod2, prev=bres2)
    t.check("the second pod's DEL", rc == 0, out + err)


def run_attacks(t, topo, cni, echos):
    echo = echos[-1]
    base = echo.stats()
    n_req = base.get("requests", 0)

    def bad_reply(what, data, needle, shut=True):
        raw = ask(cni.sock, data, shut)
        r = reply_of(raw)
        t.check("%s: an error reply naming the problem, then closed" % what,
                isinstance(r, dict) and r.get("ok") is False and needle in r.get("error", "")
                and raw.endswith(b"\n") and raw.count(b"\n") == 1, raw[:300])

    bad_reply("garbage", b"GET / HTTP/1.1\r\n", "not JSON")
    bad_reply("bytes that are not UTF-8", b"\xff\xfe\x80{\"op\":\"\xc3\"}\n", "not JSON")
    bad_reply("an unknown protocol version", request("add", "v2x", version=2),
              "version 2 is not supported")
    bad_reply("an unknown field", request("add", "fx", extra=1), "unknown field")
    bad_reply("a bad container id", request("add", "../../etc/x"), "containerId")
    bad_reply("a netns path with ..", request("add", "nx", netns="/proc/1/../1/ns/net"), "netns")
    bad_reply("two requests on one connection", request("add", "d1") + request("add", "d2"),
              "after the request's newline")
    bad_reply("no newline before EOF", request("add", "nl").rstrip(b"\n"), "without a newline")
    bad_reply("a request larger than SKM_CNI_MSG_MAX", b"{" + b" " * (MSG_MAX + 100),
              "larger than 65536", shut=False)
    bad_reply("a NUL byte in a string", b'{"version":1,"op":"add","containerId":"a\\u0000b"}\n',
              "not allowed")
    st = echo.stats_when(lambda s: s.get("bad_requests", 0) - base.get("bad_requests", 0) >= 10)
    t.eq("each is counted as a bad request, none reached the owner",
         (st.get("bad_requests", 0) - base.get("bad_requests", 0), st.get("requests")),
         (10, n_req))

    # --- slowloris: half a request, then nothing
    s = connect(cni.sock)
    s.sendall(request("add", "slow")[:40])
    t0 = time.monotonic()
    raw = read_all(s)
    dt = time.monotonic() - t0
    s.close()
    t.check("a client that stops mid-request is closed at the read timeout "
            "(%.0f ms, limit %d ms), without a reply" % (dt * 1000, TIMEOUT_MS),
            raw == b"" and TIMEOUT_MS / 1000.0 * 0.9 <= dt <= TIMEOUT_MS / 1000.0 + 1.0, raw)
    t.eq("counted as a timeout", echo.stats_when(lambda s: s.get("timeouts"))
         .get("timeouts", 0) - base.get("timeouts", 0), 1)
    # a client that dribbles a byte at a time does not buy more time
    s = connect(cni.sock)
    t0 = time.monotonic()
    closed = False
    for b in request("add", "dribble") * 10:
        try:
            s.sendall(bytes([b]))
        except OSError:
            closed = True
            break
        time.sleep(0.05)
        if time.monotonic() - t0 > TIMEOUT_MS / 1000.0 + 2:
            break
    dt = time.monotonic() - t0
    s.close()
    t.check("a client sending a byte every 50 ms is closed at the timeout too (%.0f ms)"
            % (dt * 1000), closed and dt <= TIMEOUT_MS / 1000.0 + 1.0)

    # --- a peer that is not root: the folder and socket modes keep it
    # out; with them opened up, SO_PEERCRED still does
    sockdir = os.path.dirname(cni.sock)
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(5)\n"
             "try:\n s.connect(sys.argv[1])\nexcept OSError as e:\n print('connect', e.errno)\n"
             " sys.exit(0)\ntry:\n s.sendall(sys.argv[2].encode())\n s.shutdown(socket.SHUT_WR)\n"
             "except OSError:\n pass\nd=b''\ntry:\n while True:\n  x=s.recv(4096)\n"
             "  if not x: break\n  d+=x\nexcept OSError:\n pass\nprint('reply', repr(d))\n")
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
              "-c", probe, cni.sock, request("add", "nobody1").decode()]
    path, opened = cni.sock, []
    while path != "/":
        path = os.path.dirname(path)
        opened.append((path, stat.S_IMODE(os.stat(path).st_mode)))
    try:
        for p, mode in opened:
            if p != sockdir:
                os.chmod(p, mode | 0o711)
        r = topolib.sh(nobody, check=False)
        t.check("nobody cannot enter the socket's 0700 folder (EACCES)",
                r.stdout.strip() == "connect 13", r.stdout + r.stderr)
        os.chmod(sockdir, 0o711)
        r = topolib.sh(nobody, check=False)
        t.check("nobody cannot connect to the 0600 socket (EACCES)",
                r.stdout.strip() == "connect 13", r.stdout + r.stderr)
        os.chmod(cni.sock, 0o666)
        r = topolib.sh(nobody, check=False)
        t.check("with the socket opened to all, nobody's connection is closed unanswered "
                "(SO_PEERCRED)", r.stdout.strip() == "reply b''", r.stdout + r.stderr)
        t.eq("counted as refused_peer, never handed to the owner",
             (echo.stats_when(lambda s: s.get("refused_peer")).get("refused_peer"),
              [q for q in echo.requests() if q["containerId"] == "nobody1"]), (1, []))
        t.check("the log says which uid was refused",
                "uid 65534" in echo.log() and "only root" in echo.log(), echo.log())
    finally:
        os.chmod(cni.sock, 0o600)
        for p, mode in opened:
            os.chmod(p, mode)

    # --- more clients than allowed: a server with room for 8
    echo.stop()
    echos.remove(echo)
    echo = Echo(topo, cni, "c", "--max-clients", "8")
    echos.append(echo)
    t.require("the server restarts with --max-clients 8", echo.started(), echo.log())
    results = [None] * 20

    def client(i):
        try:
            results[i] = ask(cni.sock, request("check", "many%d" % i, i))
        except OSError as e:
            results[i] = ("<%s>" % e).encode()

    th = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for x in th:
        x.start()
    for x in th:
        x.join(20)
    oks = sum(1 for r in results if reply_of(r or b"") == {"ok": True})
    closed = sum(1 for r in results if r == b"" or (r or b"").startswith(b"<"))
    st = echo.stats_when(lambda s: s.get("refused_busy", 0) + s.get("requests", 0) >= 20)
    t.check("20 clients at once, room for 8: 8 answered ok, 12 closed at once (%d, %d)"
            % (oks, closed), oks == 8 and closed == 12, results)
    t.eq("counted: refused_busy 12, requests 8", (st.get("refused_busy"), st.get("requests")),
         (12, 8))
    # the slots come back: a real plugin ADD then goes through
    ns4, cid4, pod4, bres4 = bridged_pod(t, topo, cni, 4, "after-1")
    rc, out, err, _ = cni.skm("ADD", cid4, ns4, pod4, prev=bres4)
    t.check("after every attack the server is alive and a real ADD is enrolled",
            echo.p.poll() is None and rc == 0 and "enrolled by meshd" in err
            and not os.path.exists(cni.record(cid4)), out + err + echo.log())
    cni.skm("DEL", cid4, ns4, pod4, prev=bres4)
    cni.bridge("DEL", cid4, ns4, prev=bres4)


def run_socket_files(t, topo, cni, echos):
    echo = echos[-1]
    again = Echo(topo, cni, "d")
    echos.append(again)
    t.check("a second server on a live socket refuses to start (another listens on it)",
            again.p.wait(10) == 1 and "another process listens" in again.log(), again.log())
    echos.remove(again)
    again.stop()
    t.check("...and leaves the live socket to the first", ask(cni.sock, request("check", "live"))
            .startswith(b'{"ok":true}'))
    echo.stop(signal.SIGKILL)
    echos.remove(echo)
    t.check("SIGKILL leaves a stale socket file", stat.S_ISSOCK(os.lstat(cni.sock).st_mode))
    echo = Echo(topo, cni, "e")
    echos.append(echo)
    t.check("a stale socket file is replaced at start",
            echo.started() and "stale socket file replaced" in echo.log()
            and reply_of(ask(cni.sock, request("check", "stale"))) == {"ok": True}, echo.log())
    echo.stop()
    echos.remove(echo)
    with open(cni.sock, "w") as f:
        f.write("keep me")
    echo = Echo(topo, cni, "f")
    echos.append(echo)
    t.check("a file that is not a socket at the path: refused, left as it was",
            echo.p.wait(10) == 1 and "not a socket" in echo.log()
            and open(cni.sock).read() == "keep me", echo.log())
    echos.remove(echo)
    echo.stop()
    os.unlink(cni.sock)


def run_podscan(t, topo):
    """Pods (cgroups named like the kubelet's) with processes in test
    namespaces; decoys with the same UID in namespaces without the IP."""
    tool = os.path.join(topolib.build_dir(), "tests", "podscan-find")
    kube = os.path.join(topo.run_cgroup(), "kubepods")
    uid = "9e1c2a9e-1b2c-4d5e-8f90-%s00000001" % topo.rid
    uid2 = "9e1c2a9e-1b2c-4d5e-8f90-%s00000002" % topo.rid
    cg = {
        "decoy": os.path.join(kube, "burstable", "pod" + uid, "decoy"),
        "host": os.path.join(kube, "burstable", "pod" + uid, "host"),
        "sandbox": os.path.join(kube, "burstable", "pod" + uid, "sandbox"),
        "sd": os.path.join(topo.run_cgroup(), "kubepods.slice", "kubepods-besteffort.slice",
                           "kubepods-besteffort-pod%s.slice" % uid2.replace("-", "_"),
                           "cri-containerd-1.scope"),
    }
    ns = {}
    for name, ip in (("a", "10.99.77.5"), ("b", "10.99.77.6"), ("c", "10.99.77.7")):
        n = "%s-ps%s" % (topo.prefix, name)
        topolib.sh(["ip", "netns", "add", n])
        topolib.sh(["ip", "-n", n, "link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        topolib.sh(["ip", "-n", n, "addr", "add", ip + "/32", "dev", "d0"])
        topolib.sh(["ip", "-n", n, "link", "set", "d0", "up"])
        ns[name] = os.path.join(topolib.NETNS_DIR, n)
    for c in cg.values():
        os.makedirs(c, exist_ok=True)
    procs = {}
    # the decoys start first, so their pids are lower than the sandbox's
    for name, netns in (("decoy", ns["b"]), ("host", None), ("sandbox", ns["a"]),
                        ("sd", ns["c"])):
        argv = ["sleep", "600"]
        if netns:
            argv = topo.cgroup_argv(cg[name], netns, argv)
        else:
            argv = ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec sleep 600', "sh", cg[name]]
        procs[name] = topo.popen(argv)
    tap.wait_until(lambda: all(open(os.path.join(c, "cgroup.procs")).read().strip()
                               for c in cg.values()), 5)

    def find(u, *ips):
        r = topolib.sh([tool, "-v", u] + list(ips), check=False)
        return r.returncode, r.stdout.strip(), r.stderr

    pids = {k: p.pid for k, p in procs.items()}
    t.check("the decoys' pids are lower than the sandbox's (%s)" % pids,
            pids["decoy"] < pids["sandbox"] and pids["host"] < pids["sandbox"])
    rc, out, err = find(uid, "10.99.77.5")
    t.eq("the pod's process whose namespace holds its IP is found: /proc/PID/ns/net",
         (rc, out), (0, "/proc/%d/ns/net" % pids["sandbox"]), err)
    t.check("...and that is the namespace holding the IP",
            rc == 0 and os.stat(out).st_ino == os.stat(ns["a"]).st_ino)
    t.check("the decoy with the same pod UID but without the IP is rejected, said at "
            "debug level", "pid %d has pod %s" % (pids["decoy"], uid) in err
            and "rejected" in err, err)
    t.check("the process in the host's own namespace is never taken",
            "pid %d of pod %s is in meshd's own network namespace" % (pids["host"], uid) in err,
            err)
    rc, out, err = find(uid, "10.99.77.6")
    t.eq("asked for the decoy namespace's address the decoy IS the pod's (its IP)",
         (rc, out), (0, "/proc/%d/ns/net" % pids["decoy"]), err)
    rc, out, err = find(uid, "10.99.77.99", "10.99.77.7")
    t.eq("an IP held by another pod's namespace only: none found (exit 3)", (rc, out), (3, ""),
         err)
    rc, out, err = find(uid2, "10.99.77.7")
    t.eq("the systemd layout (kubepods-besteffort-pod<uid_>.slice) is found",
         (rc, out), (0, "/proc/%d/ns/net" % pids["sd"]), err)
    rc, out, err = find("9e1c2a9e-0000-0000-0000-%s00000009" % topo.rid, "10.99.77.5")
    t.eq("an unknown UID: none found", rc, 3, err)
    for p in procs.values():
        p.kill()
        p.wait(5)
    for name in ("a", "b", "c"):
        topolib.sh(["ip", "netns", "del", os.path.basename(ns[name])], check=False)


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=1, need=("skmesh-cni", "tests/cnisrv-echo",
                                          "tests/podscan-find"))
