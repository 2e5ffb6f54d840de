#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
# e2e-timeout: 300
"""
meshd's certificates from the CA service (issue 12), end to end: the real
build/skmesh-ca against the real API server of tests/lib/kube.py (its
TokenReview and Pods), two nodes' meshd in cluster mode with --ca-addr
and no --ca-dir, pods run as tests/lib/kubelet.py does a kubelet's part.

- each node's meshd gets its local pods' certificates from skmesh-ca
  only (it is given no CA key), and cross-node traffic goes through the
  tunnel with them: the server's node counts the client's SPIFFE ID,
  which only its certificate proves;
- no region of meshd's memory (/proc/PID/maps, read through
  /proc/PID/mem) and no file meshd was given or holds open has the root
  key (its DER, its PEM body, its private scalar), while the same search
  finds the root's public key, which meshd holds in its trust bundle (so
  the search finds what is there);
- meshd is not dumpable: prctl(PR_GET_DUMPABLE) asked inside it (gdb)
  says 0 where a plain process says 1; with its core limit raised
  (prlimit) a SIGSEGV leaves no core, where a plain process dumps one;
  its core limit is 0; the secure heap holding the keys is locked and
  marked "do not dump" (smaps);
- a certificate lifetime of 30 s: meshd renews at half-life, a live
  cross-node stream opened before keeps working after, and the serial
  changed;
- the trust bundle (a ConfigMap's file) replaced by one with two roots is
  taken up by both nodes within seconds, and new connections flow; one
  holding a private key is refused, said once, and the roots stay;
- the last pod of an identity leaving drops its certificate
  (/config_dump "certificates", skmesh_certificate_dropped_total);
- meshd refuses to start with --ca-dir beside --ca-addr, and with a trust
  bundle that holds a private key.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import caenv  # noqa: E402
import kube  # noqa: E402
import kubelet  # noqa: E402
import tap  # noqa: E402
import topo as topolib  # noqa: E402

import yaml  # noqa: E402  (python3-yaml)

TD, SA_NS, SA, CA_NAME = caenv.TD, caenv.SA_NS, caenv.SA, caenv.CA_NAME
AMBIENT = {"istio.io/dataplane-mode": "ambient"}
ADMIN, METRICS = 15000, 15020
LIFETIME = 30
RBAC = [os.path.join(topolib.REPO, "deploy", "cluster", f)
        for f in ("00-namespace.yaml", "10-rbac.yaml")]


class Run:
    def __init__(self, topo):
        self.tmp = tempfile.mkdtemp(prefix="%s-ca-" % topo.prefix)
        self.k = None
        self.ca = None          # caenv.SkmeshCA
        self.nodes = {}
        self.fw = {}
        self.cafw = {}
        self.sessions = []
        self.others = []        # other processes the test started


def http_get(topo, n, port, path):
    r = topo.node_run(n, ["curl", "-s", "-m", "5", "-w", "\n%{http_code}",
                          "http://127.0.0.1:%d%s" % (port, path)], check=False, timeout=15)
    body, _, code = r.stdout.rpartition("\n")
    return int(code) if code.isdigit() else 0, body


def certs_of(topo, n):
    code, text = http_get(topo, n, ADMIN, "/config_dump")
    try:
        return {c["identity"]: c for c in json.loads(text).get("certificates") or []}
    except ValueError:
        return {}


def metric(topo, n, name, labels=""):
    """The value of one series (labels: its exact label text), or None."""
    code, text = http_get(topo, n, METRICS, "/metrics")
    want = name + ("{%s}" % labels if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def metrics_text(topo, n):
    return http_get(topo, n, METRICS, "/metrics")[1]


def reach(topo, src, dst):
    r = topo.run(topo.cgroup_argv(src.cgroup, src.netns_path, topo.podtool_argv(
        "connect-many", "--to", "%s:%d" % (dst.ip, kubelet.POD_PORT), "--count", 1,
        "--greeting", "--io-timeout", 3)), check=False, timeout=40)
    try:
        j = tap.json_line(r.stdout)
    except ValueError:
        return {}, {"NO_OUTPUT": r.stderr[-300:]}
    return j["backends"], j["errors"]


def root_key_needles(ca_dir):
    """What of the root key must be found nowhere: its PKCS#8 DER, its PEM
    text's base64 lines, and its private scalar."""
    with open(os.path.join(ca_dir, "root-key.pem")) as f:
        pem = f.read()
    der = subprocess.run(["openssl", "pkey", "-in", os.path.join(ca_dir, "root-key.pem"),
                          "-outform", "DER"], capture_output=True, check=True).stdout
    text = subprocess.run(["openssl", "pkey", "-in", os.path.join(ca_dir, "root-key.pem"),
                           "-text", "-noout"], capture_output=True, text=True,
                          check=True).stdout
    m = re.search(r"priv:\s*((?:[0-9a-f]{2}:?\s*)+)pub:", text)
    scalar = bytes.fromhex(re.sub(r"[:\s]", "", m.group(1))) if m else b""
    scalar = scalar.lstrip(b"\0")[-32:].rjust(32, b"\0")
    lines = [l.encode() for l in pem.splitlines() if l and not l.startswith("-----")]
    return {"DER": der, "scalar": scalar, "PEM": lines[0]}


def public_point(path):
    """The root certificate's public key as it sits in a parsed certificate
    (the BIT STRING of its SubjectPublicKeyInfo: 04 || X || Y)."""
    der = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-pubkey"],
                         capture_output=True, check=True).stdout
    spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=der,
                          capture_output=True, check=True).stdout
    return spki[-65:]


def memory_regions(pid):
    """[(start, end, perms, name)] of /proc/PID/maps."""
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split()
            a, b = (int(x, 16) for x in parts[0].split("-"))
            out.append((a, b, parts[1], parts[5] if len(parts) > 5 else ""))
    return out


# A region this large is an ASan build's shadow memory (terabytes reserved,
# untouched): nothing meshd allocates comes near it.
HUGE_REGION = 64 << 30
CHUNK = 64 << 20


def search_memory(pid, needles):
    """{needle name: [region names]} of where each is in meshd's memory;
    and how many bytes were read. Regions are read in chunks that overlap
    by the longest needle, so a needle across a chunk's end is found."""
    found, total = {k: [] for k in needles}, 0
    over = max((len(v) for v in needles.values() if v), default=1) - 1
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for a, b, perms, name in memory_regions(pid):
            if "r" not in perms or name == "[vsyscall]" or b - a > HUGE_REGION:
                continue
            hit = set()
            off = a
            while off < b:
                n = min(CHUNK + over, b - off)
                try:
                    mem.seek(off)
                    data = mem.read(n)
                except OSError:
                    break
                total += len(data)
                for k, v in needles.items():
                    if v and k not in hit and v in data:
                        hit.add(k)
                        found[k].append(name or "anon@%x" % a)
                if off + n >= b:
                    break
                off += CHUNK
    return found, total


def files_of_meshd(pid, argv):
    """Every regular file meshd was given (the paths of its arguments,
    files under its argument folders) and every file it holds open."""
    paths = set()
    for a in argv[1:]:          # not the binary's folder: build output
        # not /proc (--proc-root), nor the bpffs pins and cgroups of /sys
        if a.startswith("/") and os.path.exists(a) and \
                not a.startswith(("/proc", "/sys")):
            if os.path.isdir(a):
                for root, _dirs, files in os.walk(a):
                    paths.update(os.path.join(root, f) for f in files)
            else:
                paths.add(a)
                d = os.path.dirname(a)
                paths.update(os.path.join(d, f) for f in os.listdir(d))
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            paths.add(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
    return sorted(p for p in paths if os.path.isfile(p))


def dumpable(pid):
    """What prctl(PR_GET_DUMPABLE) answers inside process pid (gdb calls
    it there), as text."""
    r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-nx", "-ex",
                        "print (int)prctl(3, 0, 0, 0, 0)"],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"^\$1 = (-?\d+)", r.stdout, re.M)
    return m.group(1) if m else "gdb: " + (r.stdout + r.stderr)[-300:]


def core_files(d):
    return sorted(f for f in os.listdir(d) if f == "core" or f.startswith("core."))


def crash_for_core(pid, timeout=10):
    """The attack on a process's memory through a core dump: its core
    limit raised to unlimited (prlimit, as root may), then SIGSEGV; waits
    for it to end. The core (with core_pattern "core") would go to its
    working folder."""
    r = subprocess.run(["prlimit", "--pid", str(pid), "--core=unlimited"],
                       capture_output=True, text=True)
    os.kill(pid, signal.SIGSEGV)
    tap.wait_until(lambda: not os.path.exists("/proc/%d" % pid) or
                   open("/proc/%d/stat" % pid).read().split()[2] == "Z", timeout, 0.05)
    return r.returncode == 0, r.stderr.strip()


def body(t, topo):
    ca_bin = os.path.join(topolib.build_dir(), "skmesh-ca")
    t.require("build/skmesh-ca is built (the CA service of issue 12)",
              os.access(ca_bin, os.X_OK), ca_bin)
    bad = kube.missing_binaries()
    t.require("the Kubernetes servers are built", not bad, "\n".join(bad))
    run = Run(topo)
    try:
        steps(t, topo, run, ca_bin)
    finally:
        cleanup(t, topo, run)


def cleanup(t, topo, run):
    errors = []
    for s in run.sessions:
        if s.poll() is None:
            s.kill()
            s.wait()
    for n, h in list(topo.meshds.items()):
        if t.failed:
            t.diag("meshd node%d log, last lines:\n%s" % (n, h.log_tail(40)))
        if h.proc.poll() is None:
            try:
                topo.stop_meshd(h)
            except topolib.TopoError as e:
                errors.append("stopping meshd of node%d: %s" % (n, e))
    if run.ca is not None:
        if t.failed:
            t.diag("skmesh-ca log, last lines:\n%s" % run.ca.log_tail())
        run.ca.stop()
    for p in run.others:
        if p.poll() is None:
            p.kill()
            p.wait()
    for fw in run.cafw.values():
        fw.stop()
    for node in run.nodes.values():
        try:
            errors += node.cleanup()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append("kubelet cleanup of %s: %s" % (node.name, e))
    if run.k:
        run.k.stop()
    shutil.rmtree(run.tmp, ignore_errors=True)
    left = [p.args[0] for p in (run.k.spawned if run.k else []) if p.poll() is None]
    t.check("cleanup: CA, API servers, pods and folders gone",
            not errors and not left and not os.path.exists(run.tmp),
            "errors: %s\nrunning: %s" % (errors, left))


def steps(t, topo, run, ca_bin):
    k = run.k = kube.Cluster(apiserver_args=["--watch-cache=false"])
    k.start()
    k.install_istio_security_crds()
    k.create("/api/v1/namespaces", {"metadata": {"name": "shop", "labels": AMBIENT}})
    kubelet.routes(topo)
    for f in RBAC:
        with open(f) as fh:
            for d in yaml.safe_load_all(fh):
                if d:
                    k.apply(d)
    # the root lives in its "Secret" (a folder meshd is never given)
    ca_dir = caenv.make_root(os.path.join(topolib.build_dir(), "meshctl"), run.tmp)
    try:
        run.ca = caenv.SkmeshCA(topolib.build_dir(), run.tmp, ca_dir, k.kubeconfig)
    except caenv.CAError as e:
        t.require("skmesh-ca serves", False, str(e))
    t.check("skmesh-ca serves on 127.0.0.1:%d" % run.ca.port, True)
    ca_port = run.ca.port
    # what a node is given: the trust bundle (the ConfigMap), an API token
    # and a token for the CA's audience
    bundle_dir = os.path.join(run.tmp, "trust-bundle")
    os.makedirs(bundle_dir)
    bundle = os.path.join(bundle_dir, "root-cert.pem")
    shutil.copy(os.path.join(ca_dir, "root-cert.pem"), bundle)
    tok_dir = os.path.join(run.tmp, "tokens")
    os.makedirs(tok_dir)
    api_tok = os.path.join(tok_dir, "api-token")
    caenv.write_file(api_tok, caenv.meshd_token(k, "meshd-api"))

    args = {}
    for n in (1, 2):
        d = os.path.join(run.tmp, "n%d" % n)
        os.makedirs(d)
        sock, pending = os.path.join(d, "cni.sock"), os.path.join(d, "pending")
        node = run.nodes[n] = kubelet.Node(topo, k, n, run.tmp, sock, pending)
        node.register()
        # meshd's own Pod on the node (the DaemonSet's), its CA token
        # bound to it: the CA grants the identities of that node's pods
        me = node.create_object(SA_NS, "meshd-node%d" % n, {"app": "meshd"}, sa=SA)
        ca_tok = os.path.join(tok_dir, "ca-token-n%d" % n)
        caenv.write_file(ca_tok, caenv.meshd_token(k, audiences=[caenv.AUDIENCE], pod=me))
        run.fw[n] = k.forwarder(topo.node_netns_path(n), "node%d" % n, token_file=api_tok)
        run.cafw[n] = kube.NetnsForwarder(topo.node_netns_path(n), ca_port)
        args[n] = ["--cni-socket", sock, "--cni-pending-dir", pending, "--proc-root", "/proc",
                   "--ca-addr", "127.0.0.1:%d" % run.cafw[n].port, "--ca-root", bundle,
                   "--ca-token", ca_tok, "--ca-server-name", CA_NAME,
                   "--cert-lifetime", str(LIFETIME)]

    # --- refusals at start ---------------------------------------------------------
    meshd = os.path.join(topolib.build_dir(), "meshd")
    r = subprocess.run(topo.meshd_argv(1, None, args[1] + ["--ca-dir", ca_dir],
                                       os.path.join(run.tmp, "a.log"), run.fw[1].kubeconfig),
                       capture_output=True, text=True, timeout=20)
    t.check("meshd refuses --ca-dir beside --ca-addr (exit %d), saying why" % r.returncode,
            r.returncode != 0 and "--ca-dir and --ca-addr exclude each other" in r.stderr,
            r.stderr[-600:])
    bad_bundle = os.path.join(run.tmp, "bundle-with-key.pem")
    with open(bad_bundle, "w") as f:
        f.write(open(bundle).read() + open(os.path.join(ca_dir, "root-key.pem")).read())
    bad_args = [a if a != bundle else bad_bundle for a in args[1]]
    r = topo.run(topo.node_argv(1, topo.meshd_argv(1, None, bad_args, os.path.join(
        run.tmp, "a.log"), run.fw[1].kubeconfig) + ["--bpffs", os.path.join(run.tmp, "nopin")]),
        check=False, timeout=30)
    t.check("meshd refuses a trust bundle holding a private key (exit %d)" % r.returncode,
            r.returncode != 0 and "holds a private key" in (r.stdout + r.stderr),
            (r.stdout + r.stderr)[-600:])
    os.unlink(bad_bundle)
    for extra, cluster, says in (
            (["--ca-addr", "127.0.0.1:1", "--ca-root", bundle, "--ca-token", "/dev/null"],
             False, "--ca-addr is for cluster mode"),
            (["--ca-root", bundle], True, "give --ca-addr too"),
            (["--ca-addr", "127.0.0.1:1"], True, "--ca-addr needs --ca-root FILE")):
        argv = [meshd, "--node", "node1"] + (["--kubeconfig", run.fw[1].kubeconfig] if cluster
                                             else ["--config", bundle]) + extra
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        t.check("meshd %s: refused with a usage error (exit %d)" % (" ".join(extra),
                                                                    r.returncode),
                r.returncode == 2 and says in r.stderr, r.stderr[-400:])
    t.check("meshd's usage names --ca-addr", "--ca-addr" in subprocess.run(
        [meshd, "--help"], capture_output=True, text=True).stdout)

    # --- two nodes on the CA --------------------------------------------------------------
    for n in (1, 2):
        # node2's meshd is later sent SIGSEGV to see that it leaves no
        # core: in an ASan build the signal must get the kernel's default
        # action, not ASan's handler (which reports it and exits)
        saved = os.environ.get("ASAN_OPTIONS")
        if n == 2:
            os.environ["ASAN_OPTIONS"] = ((saved + ":") if saved else "") + "handle_segv=0"
        try:
            topo.start_meshd(n, None, args[n], timeout=60, kubeconfig=run.fw[n].kubeconfig)
        finally:
            if saved is None:
                os.environ.pop("ASAN_OPTIONS", None)
            else:
                os.environ["ASAN_OPTIONS"] = saved
    n1, n2 = run.nodes[1], run.nodes[2]
    cli = n1.run_pod("shop", "cli", {"app": "cli"}, sa="cli")
    srv = n2.run_pod("shop", "srv", {"app": "srv"}, sa="srv")
    cli_id, srv_id = ("spiffe://%s/ns/shop/sa/%s" % (TD, x) for x in ("cli", "srv"))
    t.check("node1's meshd gets shop/cli's certificate from skmesh-ca",
            tap.wait_until(lambda: cli_id in certs_of(topo, 1), 15, 0.1),
            certs_of(topo, 1))
    t.check("node2's meshd gets shop/srv's certificate from skmesh-ca",
            tap.wait_until(lambda: srv_id in certs_of(topo, 2), 15, 0.1),
            certs_of(topo, 2))
    t.check("each node holds its own pods' identities only",
            set(certs_of(topo, 1)) == {cli_id} and set(certs_of(topo, 2)) == {srv_id},
            (certs_of(topo, 1), certs_of(topo, 2)))
    t.check("skmesh_certificate_issued_total counts them, nothing failed",
            metric(topo, 1, "skmesh_certificate_issued_total") == 1 and
            metric(topo, 2, "skmesh_certificate_issued_total") == 1 and
            not re.search(r"^skmesh_certificate_failed_total\{[^}]*\} [1-9]",
                          metrics_text(topo, 1), re.M),
            metrics_text(topo, 1)[-1500:])

    ok = tap.wait_until(lambda: reach(topo, cli, srv)[0], 15, 0.2)
    backends, errors = reach(topo, cli, srv)
    t.check("cross-node traffic cli (node1) -> srv (node2) flows", ok and backends,
            errors)
    tm = metrics_text(topo, 2)
    t.check("node2 counts it from the client identity cli's certificate proves",
            re.search(r'reporter="destination"[^}]*source_principal="%s"' % re.escape(cli_id),
                      tm) or
            re.search(r'source_principal="%s"[^}]*reporter="destination"' % re.escape(cli_id),
                      tm),
            "\n".join(l for l in tm.splitlines() if "istio_tcp_connections_opened" in l)[:1500])

    # --- no root key in meshd's memory or files ---------------------------------------------
    needles = root_key_needles(ca_dir)
    control = {"root certificate": public_point(bundle)}
    for n in (1, 2):
        h = topo.meshds[n]
        found, total = search_memory(h.proc.pid, dict(needles, **control))
        t.check("node%d: meshd's memory (%d MiB read) holds the public key of the root it "
                "trusts (the search finds what is there)" % (n, total >> 20),
                found["root certificate"], found)
        t.check("node%d: ... and no byte run of the root key (DER, PEM, private scalar)" % n,
                not any(found[x] for x in needles), found)
        files = files_of_meshd(h.proc.pid, h.argv)
        hits = []
        for p in files:
            try:
                with open(p, "rb") as f:
                    data = f.read(64 << 20)
            except OSError:
                continue
            hits += [(p, x) for x, v in needles.items() if v in data]
        t.check("node%d: none of the %d files meshd was given or holds open has the root "
                "key" % (n, len(files)), files and not hits, hits or files)

    # --- not dumpable, keys out of dumps ------------------------------------------------------
    pid = topo.meshds[1].proc.pid
    sleeper = subprocess.Popen(["sleep", "120"], cwd=run.tmp)
    run.others.append(sleeper)
    got = {p: dumpable(p) for p in (sleeper.pid, pid)}
    t.check("prctl(PR_GET_DUMPABLE) run inside a plain process says 1 (control)",
            got[sleeper.pid] == "1", got)
    t.check("... and inside meshd says 0: not dumpable", got[pid] == "0", got)
    with open("/proc/%d/limits" % pid) as f:
        lim = [l for l in f if l.startswith("Max core file size")]
    t.check("meshd's core file size limit is 0", lim and lim[0].split()[4] == "0", lim)
    with open("/proc/%d/smaps" % pid) as f:
        smaps = f.read()
    heap = [blk for blk in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", smaps)
            if re.search(r"^Size:\s+(4096|4100|4104|4108) kB", blk, re.M) and
            re.search(r"^VmFlags:.*\bdd\b", blk, re.M)]
    t.check("the secure heap (4 MiB) is marked do-not-dump and locked",
            heap and all(re.search(r"^VmFlags:.*\blo\b", b, re.M) for b in heap),
            heap or [b.splitlines()[0] for b in re.split(r"\n(?=[0-9a-f]+-)", smaps)
                     if "dd" in b.split("VmFlags:")[-1]][:10])

    # --- renewal under a live stream -------------------------------------------------------
    serial0 = certs_of(topo, 1)[cli_id]["serial"]
    sess = topo.popen(topo.cgroup_argv(cli.cgroup, cli.netns_path, topo.podtool_argv(
        "session", "--to", "%s:%d" % (srv.ip, kubelet.POD_PORT), "--greeting",
        "--io-timeout", 10)), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    run.sessions.append(sess)

    def say(cmd):
        sess.stdin.write(cmd + "\n")
        sess.stdin.flush()
        return json.loads(sess.stdout.readline() or "{}")
    first = json.loads(sess.stdout.readline() or "{}")
    x1 = say("xfer 65536")
    t.check("a cross-node stream is open and echoes", first.get("event") == "connected" and
            x1.get("ok"), (first, x1))
    renewed = tap.wait_until(lambda: metric(topo, 1, "skmesh_certificate_renewed_total") and
                             metric(topo, 2, "skmesh_certificate_renewed_total"),
                             LIFETIME, 0.5)
    serial1 = certs_of(topo, 1).get(cli_id, {}).get("serial")
    t.check("both nodes renewed at half-life of a %d s certificate (serial %s -> %s)"
            % (LIFETIME, serial0[:8], (serial1 or "")[:8]),
            renewed and serial1 and serial1 != serial0,
            (metrics_text(topo, 1)[-800:], certs_of(topo, 1)))
    x2 = say("xfer 65536")
    t.check("the stream opened before the renewal still echoes", x2.get("ok"), x2)
    backends, errors = reach(topo, cli, srv)
    t.check("a new connection after the renewal flows too", backends, errors)
    say("close")
    sess.wait(10)

    # --- the trust bundle rotates: two roots, then a bundle refused ------------------------
    t.check("both nodes trust one root at first",
            [metric(topo, n, "skmesh_certificate_trust_roots") for n in (1, 2)] == [1, 1],
            [metric(topo, n, "skmesh_certificate_trust_roots") for n in (1, 2)])
    root_b = caenv.make_root(os.path.join(topolib.build_dir(), "meshctl"), run.tmp,
                             name="ca-secret-b")
    with open(os.path.join(ca_dir, "root-cert.pem")) as fa, \
            open(os.path.join(root_b, "root-cert.pem")) as fb:
        both = fa.read() + fb.read()
    caenv.write_file(bundle, both, 0o644)        # a new file: kubelet's way
    t.check("a bundle of two roots is taken up by both nodes (skmesh_certificate_trust_roots 2)",
            tap.wait_until(lambda: [metric(topo, n, "skmesh_certificate_trust_roots")
                                    for n in (1, 2)] == [2, 2], 10, 0.2),
            [metric(topo, n, "skmesh_certificate_trust_roots") for n in (1, 2)])
    backends, errors = reach(topo, cli, srv)
    t.check("new cross-node connections flow with the new contexts", backends, errors)
    with open(os.path.join(root_b, "root-key.pem")) as fk:
        caenv.write_file(bundle, both + fk.read(), 0o644)
    t.check("a bundle that holds a private key is refused and said once; the two roots stay",
            tap.wait_until(lambda: "holds a private key" in topo.meshds[1].log_text(), 10, 0.2)
            and topo.meshds[1].log_text().count("holds a private key") == 1 and
            metric(topo, 1, "skmesh_certificate_trust_roots") == 2,
            topo.meshds[1].log_tail(5))
    caenv.write_file(bundle, both, 0o644)
    shutil.rmtree(root_b)

    # --- the last pod of an identity leaves -----------------------------------------------
    n1.delete_pod(cli)
    t.check("node1 drops shop/cli's certificate when its last pod leaves",
            tap.wait_until(lambda: cli_id not in certs_of(topo, 1), 15, 0.2),
            certs_of(topo, 1))
    t.check("skmesh_certificate_dropped_total says so",
            metric(topo, 1, "skmesh_certificate_dropped_total") == 1,
            metrics_text(topo, 1)[-1200:])
    for n in (1, 2):
        t.check("node%d: meshd ran through it all" % n,
                topo.meshds[n].proc.poll() is None, topo.meshds[n].log_tail())

    # --- a core dump, forced: none of meshd ------------------------------------------------
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    t.require("core_pattern is \"core\" (a dump lands in the process's folder: %r)" % pattern,
              pattern in ("core", "core.%p"))
    raised, why = crash_for_core(sleeper.pid)
    t.check("the plain process's core limit could be raised", raised, why)
    sleeper.wait(10)
    ctl = core_files(run.tmp)
    t.check("a plain process with its core limit raised and SIGSEGV dumps core (control)",
            ctl, os.listdir(run.tmp))
    for f in ctl:
        os.unlink(os.path.join(run.tmp, f))
    h = topo.meshds[2]
    cwd = os.readlink("/proc/%d/cwd" % h.proc.pid)
    before = core_files(cwd)
    raised, why = crash_for_core(h.proc.pid)
    h.proc.wait(10)
    new_cores = [f for f in core_files(cwd) if f not in before]
    # raising meshd's hard limit (0) takes CAP_SYS_RESOURCE: without it
    # the limit alone stops the dump, with it PR_SET_DUMPABLE 0 does
    t.check("meshd sent SIGSEGV leaves no core (exit %s; its core limit %s)"
            % (h.proc.returncode, "raised to unlimited first" if raised else
               "stayed 0: %s" % why[:80]),
            h.proc.returncode == -signal.SIGSEGV and not new_cores, (new_cores, cwd))
    for f in new_cores:
        os.unlink(os.path.join(cwd, f))


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=0, need=("meshd", "meshctl", "skmesh-cni"))
