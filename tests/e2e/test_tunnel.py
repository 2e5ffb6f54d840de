#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
The HBONE tunnel between two meshd (issue 4), with real clients: a pod on
node1 talks to a pod on node2 by its IP or a Service VIP; the kernel
captures the connection into node1's meshd, which carries it over mutual
TLS 1.3 + HTTP/2 CONNECT to node2's meshd, which connects to the pod.

Checks: exact bytes both ways (asymmetric sizes, half-close), a 1 GiB
transfer with sha256, curl to an HTTP server, 200 concurrent connections
with checksums pooled on few TLS connections, TLS on the node link (no
plaintext, a TLS 1.3 handshake), peer SPIFFE identities in both logs and
access logs, a policy denial (401, counted) that resets the client, a
killed server giving the client a clean EOF, certificate renewal at
half-life (short lifetime: new handshakes get the new certificate, a
connection made before keeps flowing) and SIGTERM draining.

2 nodes x 2 pods, a meshd on each node with a CA from `meshctl ca init`.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

TD = "cluster.local"
MARKER = b"skmesh-plaintext-marker-7f3a9c"
LIFETIME = 30       # workload certificates: renewed at half-life, 15 s

CONCURRENT_CLIENT = r"""
import hashlib, os, socket, sys, threading, json
to, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host, port = to.rsplit(":", 1)
res = []
lock = threading.Lock()
def one(i):
    data = os.urandom(size)
    try:
        s = socket.create_connection((host, int(port)), timeout=60)
        s.settimeout(60)
        t = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
        t.start()
        h = hashlib.sha256(); got = 0
        while True:
            b = s.recv(1 << 16)
            if not b: break
            h.update(b); got += len(b)
        t.join(); s.close()
        ok = got == size and h.digest() == hashlib.sha256(data).digest()
    except OSError as e:
        ok = False
    with lock: res.append(ok)
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"ok": sum(res), "n": n}))
"""


def tun_stats(n, topo):
    """The tunnel counters of node n, by name (`meshctl stats`)."""
    return topo.meshctl_json(n, "stats")["tunnel"]


def tun_stat_raw(n, topo, index):
    """One counter of node n's skm_tun_stats read with bpftool, not
    meshctl: index is its enum skm_tun_stat value."""
    r = subprocess.run(["bpftool", "-j", "map", "lookup", "pinned",
                        os.path.join(topo.pin_dir(n), "skm_tun_stats"),
                        "key"] + [str(b) for b in index.to_bytes(4, "little")],
                       capture_output=True, text=True, check=True)
    v = json.loads(r.stdout)
    v = v.get("formatted", v)["value"]
    if isinstance(v, list):
        v = int.from_bytes(bytes(int(x, 16) for x in v), "little")
    return v


def tunnel_events(h):
    return [e for e in h.access_events() if e.get("path") == "tunnel"]


def start_mesh(topo, cfg):
    ca = os.path.join(topo.logdir, "ca")
    topo.run([os.path.join(topolib.build_dir(), "meshctl"), "ca", "init",
              "--trust-domain", TD, "--out", ca])
    hs = {}
    for n in (1, 2):
        hs[n] = topo.start_meshd(n, cfg, ["--ca-dir", ca, "--cert-lifetime", str(LIFETIME),
                                          "--cert-dir",
                                          os.path.join(topo.logdir, "certs-n%d" % n)])
    return ca, hs


def server_serial(topo, n, pod, cert, key, root):
    """The serial of the certificate pod's 15008 presents to a client."""
    r = topo.node_run(n, ["openssl", "s_client", "-connect", "%s:15008" % pod.ip,
                          "-tls1_3", "-alpn", "h2", "-cert", cert, "-key", key,
                          "-CAfile", root, "-verify_return_error"],
                      stdin=subprocess.DEVNULL, errors="replace", timeout=20, check=False)
    pem = r.stdout[r.stdout.find("-----BEGIN CERTIFICATE-----"):
                   r.stdout.find("-----END CERTIFICATE-----") + 25]
    x = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem,
                       capture_output=True, text=True)
    return x.stdout.strip() if x.returncode == 0 else "none: " + r.stdout[-300:]


def spiffe(pod):
    return "spiffe://%s/ns/default/sa/%s" % (TD, pod.name)


def body(t, topo):
    a1, a2 = topo.node_pods(1)
    b1, b2 = topo.node_pods(2)
    svc = {"name": "b", "vip": "10.96.7.1", "ports": [{"port": 80, "targetPort": 7000}],
           "endpoints": [(b1.ip, 1)]}
    cfg = topo.write_config(topo.config_path(), services=[svc])
    ca, hs = start_mesh(topo, cfg)
    h1, h2 = hs[1], hs[2]
    t_issued = time.monotonic()
    t.check("both meshd run the tunnel", all("tunnel on" in h.log_text()
                                              for h in (h1, h2)))

    # --- exact bytes, asymmetric, with half-close (xfer writes A, shuts
    # down, the server answers B)
    pairs = [(8, 1), (1000, 50000), (123457, 17), (3000001, 250000), (9, 2 * 1048576 + 3)]
    srv = topo.podtool(b1, "xfer-server", "--port", 7000, "--timeout", 200)
    srv.expect("listening")
    for target in ("%s:7000" % b1.ip, "%s:80" % svc["vip"]):
        _, exact, out = tap.xfer_pairs(topo, a1, target, pairs)
        t.check("through the tunnel to %s: every pair exact both ways" % target, exact, out)
    st1, st2 = tun_stats(1, topo), tun_stats(2, topo)
    t.check("node1 captured and tunnelled them (out_streams_ok %d)" % st1.get("out_streams_ok", 0),
            st1.get("out_streams_ok", 0) >= 2 * len(pairs), st1)
    t.check("node2 accepted them (in_streams_ok %d)" % st2.get("in_streams_ok", 0),
            st2.get("in_streams_ok", 0) >= 2 * len(pairs), st2)
    t.check("one pooled TLS connection carried them (node1 conns_open %s)"
            % st1.get("conns_open"), st1.get("conns_open") == 1, st1)
    t.eq("meshctl stats shows the pinned counters (out_streams_ok, as bpftool reads it)",
         tun_stats(1, topo)["out_streams_ok"], tun_stat_raw(1, topo, 2))

    # --- identities in the logs
    t.check("node1 logs the server's SPIFFE identity",
            ("connected to %s" % spiffe(b1)) in h1.log_text(), h1.log_tail())
    t.check("node2 logs the client's SPIFFE identity",
            ("accepted %s" % spiffe(a1)) in h2.log_text(), h2.log_tail())
    tap.wait_until(lambda: len(tunnel_events(h2)) >= 2 * len(pairs), timeout=5)
    ev1, ev2 = tunnel_events(h1), tunnel_events(h2)
    t.check("access logs: a tunnel line per stream on each side with both principals",
            len(ev1) >= 2 * len(pairs) and len(ev2) >= 2 * len(pairs) and
            all(e.get("src_principal") == spiffe(a1) and
                e.get("dst_principal") == spiffe(b1) for e in ev1 + ev2),
            "node1: %s\nnode2: %s" % (ev1[:2], ev2[:2]))
    sizes = sorted((e["bytes_sent"], e["bytes_received"]) for e in ev1)
    t.check("client-side access log bytes equal what the apps wrote",
            sorted(pairs * 2) == sizes, sizes)
    t.check("VIP connections log the VIP as orig_dst",
            any(e.get("orig_dst") == "%s:80" % svc["vip"] for e in ev1), ev1[-1:])
    srv.proc.terminate()
    keys = [os.path.join(topo.logdir, d, f) for d in ("certs-n1", "certs-n2")
            for f in sorted(os.listdir(os.path.join(topo.logdir, d))) if f.endswith("key.pem")]
    t.check("workload keys written 0600 on both nodes (%d)" % len(keys),
            len(keys) >= 2 and all(os.stat(k).st_mode & 0o777 == 0o600 for k in keys),
            keys)
    mk = os.path.join(topolib.build_dir(), "tests", "mkcert")
    topo.run([mk, "--ca-dir", ca, "--ns", "default", "--sa", a1.name, "--out",
              os.path.join(topo.logdir, "client")])
    ccert = os.path.join(topo.logdir, "client", "default.%s.cert.pem" % a1.name)
    ckey = os.path.join(topo.logdir, "client", "default.%s.key.pem" % a1.name)
    root = os.path.join(ca, "root-cert.pem")
    serial1 = server_serial(topo, 1, b1, ccert, ckey, root)
    t.check("openssl s_client gets b1's certificate from node2's 15008 (%s)" % serial1,
            serial1.startswith("serial="))
    keeper_srv = topo.podtool(b2, "echo", "--port", 7010, "--timeout", 200)
    keeper_srv.expect("listening")
    keeper = topo.podtool(a1, "session", "--to", "%s:7010" % b2.ip, stdin=True)
    keeper.expect("event")
    r0 = keeper.cmd("xfer 5000")
    t.check("a held tunnelled connection works before renewal", r0.get("ok") is True, r0)

    # --- TLS on the wire, and a 1 GiB transfer with sha256
    pcap = os.path.join(topo.logdir, "fab.pcap")
    dump_err = os.path.join(topo.logdir, "tcpdump.err")
    with open(dump_err, "w") as ef:
        dump = topo.node_popen(1, ["tcpdump", "-Z", "root", "--immediate-mode", "-i", "fab0", "-U", "-s", "0",
                                   "-w", pcap, "tcp port 15008"],
                               stdout=subprocess.DEVNULL, stderr=ef)
    t.require("tcpdump listens on node1's link",
              tap.wait_until(lambda: "listening on" in open(dump_err).read(), timeout=10),
              open(dump_err).read())
    sink = topo.podtool(b2, "sink", "--port", 7001, "--timeout", 200)
    sink.expect("listening")
    # a new identity pair (a2 -> b2): a new TLS connection and handshake
    r = topo.pod_run(a2, [sys.executable, "-c",
                          "import socket,sys; s=socket.create_connection(('%s',7001)); "
                          "s.sendall(%r*1000); s.close()" % (b2.ip, MARKER)], timeout=30)
    got = sink.next(timeout=30)
    t.check("marker stream arrived whole", got.get("bytes") == len(MARKER) * 1000, got)
    # ztunnel's in-pod inbound: the app sees the client's address, not its own
    t.check("the server app sees the client pod's address (%s) as its peer" % a2.ip,
            str(got.get("peer", "")).rsplit(":", 1)[0] == a2.ip, got)
    time.sleep(0.5)
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=10)
    with open(pcap, "rb") as f:
        wire = f.read()
    t.check("capture on node1's link saw tunnel traffic (%d bytes)" % len(wire),
            len(wire) > 2000, open(dump_err).read())
    t.check("no plaintext on the node link", MARKER not in wire)
    t.check("a TLS handshake record on the wire", b"\x16\x03\x01" in wire or
            b"\x16\x03\x03" in wire)
    # ServerHello's supported_versions extension: type 0x002b, length 2,
    # the selected version 0x0304
    t.check("the server selected TLS 1.3 (ServerHello supported_versions 0x0304)",
            b"\x00\x2b\x00\x02\x03\x04" in wire)

    big = 1 << 30
    r = topo.pod_run(a2, topo.podtool_argv("send", "--to", "%s:7001" % b2.ip,
                                          "--bytes", big, "--seed", 7), timeout=240,
                     check=False)
    sent = tap.json_line(r.stdout) if r.returncode == 0 else {}
    got = sink.next(timeout=120) if sent else {}
    t.check("1 GiB through the tunnel, sha256 equal",
            sent.get("bytes") == big and got.get("bytes") == big and
            sent.get("sha256") == got.get("sha256"), "%s\n%s\n%s" % (sent, got, r.stderr))
    sink.proc.terminate()

    # --- a tunnelled connection's bytes while it is open, in meshctl
    # (the kernel counts them at close; the tunnel publishes them)
    topo.podtool(b1, "echo", "--port", 7005, "--timeout", 60).expect("listening")
    hold = topo.podtool(a1, "session", "--to", "%s:7005" % b1.ip, "--io-timeout", 10,
                        stdin=True)
    ev = hold.expect("event")
    x = hold.cmd("xfer %d" % (1 << 20))
    t.require("held session through the tunnel echoes 1 MiB", x.get("ok"), (ev, x))

    def live(n, src, dst_ip):
        recs = [c for c in topo.meshctl_json(n, "conns")
                if c["src"] == src and c["dst"].startswith(dst_ip + ":")]
        return recs[0] if len(recs) == 1 else None

    def counted(n, src, dst_ip):
        r = live(n, src, dst_ip)
        return r if r and r["path"] == "tunnelled" and \
            r["tx_bytes"] >= 1 << 20 and r["rx_bytes"] >= 1 << 20 else None
    t.check("meshctl conns on node1: the open captured socket shows its 1 MiB each way",
            tap.wait_until(lambda: counted(1, ev["local"], a1.ip), timeout=4),
            live(1, ev["local"], a1.ip))
    t.check("meshctl conns on node2: the app's end (peer: the client's address) shows "
            "its 1 MiB each way", tap.wait_until(
                lambda: counted(2, "%s:7005" % b1.ip, a1.ip), timeout=4),
            [c for c in topo.meshctl_json(2, "conns") if c["src"] == "%s:7005" % b1.ip])
    hold.cmd("close")

    # --- curl to an HTTP server
    docroot = os.path.join(topo.logdir, "www")
    os.makedirs(docroot)
    payload = os.urandom(3 * 1048576 + 11)
    with open(os.path.join(docroot, "blob"), "wb") as f:
        f.write(payload)
    web = topo.pod_popen(b1, [sys.executable, "-m", "http.server", "8080", "--bind", b1.ip,
                              "--directory", docroot], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    out = os.path.join(topo.logdir, "blob.out")
    ok = False
    for _ in range(50):
        r = topo.pod_run(a1, ["curl", "-sS", "--max-time", "20", "-o", out, "-w",
                              "%{http_code}", "http://%s:8080/blob" % b1.ip],
                         check=False, timeout=30)
        if r.stdout.strip() == "200":
            ok = True
            break
        time.sleep(0.1)
    t.check("curl through the tunnel: 200 and the exact file",
            ok and open(out, "rb").read() == payload, r.stdout + r.stderr)
    web.terminate()

    # --- 200 concurrent connections, checksummed, on pooled connections
    echo = topo.podtool(b1, "echo", "--port", 7002, "--timeout", 200)
    echo.expect("listening")
    r = topo.pod_run(a1, [sys.executable, "-c", CONCURRENT_CLIENT, "%s:7002" % b1.ip,
                          "200", "65536"], timeout=120, check=False)
    res = tap.json_line(r.stdout) if r.stdout.strip() else {}
    t.check("200 concurrent tunnelled connections, every echo checksum right",
            res.get("ok") == 200, r.stdout + r.stderr)
    after = tun_stats(1, topo)
    t.check("they shared few TLS connections (%s open)" % after.get("conns_open"),
            after.get("conns_open", 99) <= 4, after)
    t.check("no stream left open but the held one", tap.wait_until(
        lambda: tun_stats(1, topo).get("streams_open") == 1, timeout=5),
        tun_stats(1, topo))

    # --- a killed server: the client sees a clean EOF
    holder = topo.podtool(a1, "session", "--to", "%s:7002" % b1.ip, stdin=True)
    holder.expect("event")
    info = holder.cmd("xfer 1000")
    t.check("held session works", info.get("ok") is True, info)
    echo.proc.kill()
    echo.proc.wait()
    time.sleep(0.3)
    reply = holder.cmd("xfer 10", timeout=20)
    t.check("after the server was killed the client gets a clean EOF, not a hang",
            reply.get("event") == "xfer" and reply.get("ok") is False and
            reply.get("received") == 1000, reply)
    holder.proc.kill()

    # --- policy: deny a1 -> b1; the CONNECT gets 401 and the client a reset
    deny = ("apiVersion: security.istio.io/v1\n"
            "kind: AuthorizationPolicy\n"
            "metadata: {name: deny-a1, namespace: default}\n"
            "spec:\n"
            "  selector: {matchLabels: {app: %s}}\n"
            "  action: DENY\n"
            "  rules: [{from: [{source: {principals: [\"%s/ns/default/sa/%s\"]}}]}]\n"
            % (b1.name, TD, a1.name))
    topo.write_config(cfg, services=[svc], extra=deny)
    tap.wait_until(lambda: h2.log_text().count("applied config") >= 2 and
                   h1.log_text().count("applied config") >= 2, timeout=5)
    time.sleep(0.3)
    sink = topo.podtool(b1, "sink", "--port", 7003, "--timeout", 60)
    sink.expect("listening")
    d0 = tun_stats(2, topo).get("in_denied", 0)
    r = topo.pod_run(a1, topo.podtool_argv("send", "--to", "%s:7003" % b1.ip,
                                          "--bytes", 100000, "--seed", 1),
                     timeout=30, check=False)
    t.check("denied: node2 answered 401 (in_denied +1)",
            tap.wait_until(lambda: tun_stats(2, topo).get("in_denied", 0) == d0 + 1,
                           timeout=5), tun_stats(2, topo))
    t.check("denied: node1 counted the refusal", tun_stats(1, topo).get("out_refused", 0) >= 1)
    t.check("denied: the pod's connection did not deliver anything",
            not any(l.get("bytes") for l in sink.lines if "bytes" in l), sink.lines)
    r2 = topo.pod_run(a2, topo.podtool_argv("send", "--to", "%s:7003" % b1.ip,
                                           "--bytes", 1000, "--seed", 2),
                      timeout=30, check=False)
    t.check("another source is still allowed", r2.returncode == 0 and
            tap.json_line(r2.stdout).get("bytes") == 1000, r2.stdout + r2.stderr)
    sink.proc.terminate()

    # --- renewal at half-life: new handshakes see a new certificate, the
    # connection made before keeps working
    time.sleep(max(0, t_issued + LIFETIME / 2 + 2 - time.monotonic()))
    serial2 = server_serial(topo, 1, b1, ccert, ckey, root)
    t.check("after half-life a new handshake gets a renewed certificate (%s -> %s)"
            % (serial1, serial2), serial2.startswith("serial=") and serial2 != serial1)
    r1 = keeper.cmd("xfer 2000000", timeout=30)
    t.check("the connection made before renewal keeps flowing", r1.get("ok") is True, r1)
    keeper.cmd("close")
    keeper_srv.proc.terminate()
    t.check("no stream open on either node", tap.wait_until(
        lambda: tun_stats(1, topo).get("streams_open") == 0 and
        tun_stats(2, topo).get("streams_open") == 0, timeout=5),
        (tun_stats(1, topo), tun_stats(2, topo)))

    # --- the in-pod routing for the client's address, there while meshd runs
    def origsrc_state(pod):
        rule = topo.pod_run(pod, ["ip", "-4", "rule", "show"]).stdout
        route = topo.pod_run(pod, ["ip", "-4", "route", "show", "table", "all"]).stdout
        accept = topo.pod_run(pod, ["cat", "/proc/sys/net/ipv4/tcp_fwmark_accept"]).stdout
        return ("fwmark 0x53a lookup 1338" in rule,
                "local default dev lo table 1338" in route, accept.strip())
    t.check("meshd set up the client-address routing in its pods (rule, route, sysctl)",
            origsrc_state(a1) == (True, True, "1"), origsrc_state(a1))

    # --- SIGTERM: meshd drains and exits in time
    t0 = time.monotonic()
    rc = topo.stop_meshd(h1, timeout=15)
    t.check("meshd node1 stops on SIGTERM within the drain time (%.1f s, rc %s)"
            % (time.monotonic() - t0, rc), rc == 0 and time.monotonic() - t0 < 8,
            h1.log_tail())
    t.check("meshd said it was draining", "tunnel: draining" in h1.log_text(), h1.log_tail())
    t.check("meshd took the routing away on exit and restored the sysctl",
            origsrc_state(a1) == (False, False, "0"), origsrc_state(a1))


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=2)
