#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
The tunnel against an independent HTTP/2 + TLS implementation
(tests/tools/hbone-peer.py: Python's h2 over ssl, run with Debian's
/usr/bin/python3), and every way a peer must be refused (issue 4):

- hbone-peer as the client, dialling node2's meshd at a pod's 15008:
  a good workload certificate gets 200 and an echo; no client
  certificate, another CA, another trust domain, an expired certificate,
  a certificate without a SPIFFE SAN are refused in the handshake and
  each counted under its reason; a CONNECT to a workload of another node,
  to an address no workload has and to 15008 itself get 400; a CONNECT that
  AuthorizationPolicy denies gets 401.
- plaintext from node1 to a STRICT pod of node2 is dropped (counted),
  to a PERMISSIVE pod it passes.
- hbone-peer as the server in node2's pod (meshd of node2 stopped):
  meshd of node1 carries a captured connection to it (interop of meshd's
  client side); a server presenting another identity is refused.
Malformed peers (plain HTTP to 15008; TLS with a good certificate and then
garbage instead of HTTP/2) are closed and counted. meshd never crashes
through any of it.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402
from test_tunnel import TD, spiffe, tun_stats  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "..", "tools", "hbone-peer.py")
SYS_PY = "/usr/bin/python3"     # Debian's, with python3-h2


def meshctl_ca(topo, out, td=TD):
    topo.run([os.path.join(topolib.build_dir(), "meshctl"), "ca", "init",
              "--trust-domain", td, "--out", out])
    return out


def mkcert(topo, ca, ns, sa, out, td=TD, start=0, lifetime=86400):
    os.makedirs(out, exist_ok=True)
    topo.run([os.path.join(topolib.build_dir(), "tests", "mkcert"), "--ca-dir", ca,
              "--ns", ns, "--sa", sa, "--out", out, "--trust-domain", td,
              "--start", str(start), "--lifetime", str(lifetime)])
    base = os.path.join(out, "%s.%s" % (ns, sa))
    return base + ".cert.pem", base + ".key.pem"


def peer_client(topo, n, to, authority, cert=None, key=None, ca=None, extra=(),
                stdin_data=b"", timeout=30):
    argv = [SYS_PY, PEER, "client", "--to", to, "--authority", authority,
            "--ca", ca, "--timeout", str(timeout - 5)]
    argv += ["--cert", cert, "--key", key] if cert else ["--no-cert"]
    argv += list(extra)
    p = topo.node_popen(n, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(stdin_data, timeout=timeout)
    finally:
        topo._procs.remove(p)
    return p.returncode, out, err.decode(errors="replace")


def body(t, topo):
    a1, a2 = topo.node_pods(1)
    b1, b2 = topo.node_pods(2)
    pa = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
          "metadata: {name: strict-b1, namespace: default}\n"
          "spec: {selector: {matchLabels: {app: %s}}, mtls: {mode: STRICT}}\n"
          "---\n"
          "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
          "metadata: {name: deny-bad, namespace: default}\n"
          "spec:\n  selector: {matchLabels: {app: %s}}\n  action: DENY\n"
          "  rules: [{from: [{source: {principals: [\"%s/ns/default/sa/denied\"]}}]}]\n"
          % (b1.name, b1.name, TD))
    cfg = topo.write_config(topo.config_path(), extra=pa)
    ca = meshctl_ca(topo, os.path.join(topo.logdir, "ca"))
    other_ca = meshctl_ca(topo, os.path.join(topo.logdir, "other-ca"))
    root = os.path.join(ca, "root-cert.pem")
    certs = os.path.join(topo.logdir, "client-certs")
    args = lambda n: ["--ca-dir", ca, "--cert-dir", os.path.join(topo.logdir, "certs-n%d" % n)]
    h2 = topo.start_meshd(2, cfg, args(2))

    echo = topo.podtool(b1, "echo", "--port", 7000, "--timeout", 300)
    echo.expect("listening")
    to = "%s:15008" % b1.ip
    auth = "%s:7000" % b1.ip

    # --- the independent client, accepted
    good = mkcert(topo, ca, "default", a1.name, certs)
    data = os.urandom(300000)
    rc, out, err = peer_client(topo, 1, to, auth, *good, ca=root, stdin_data=data,
                               extra=["--expect-id", spiffe(b1)])
    t.check("h2 client with a mesh certificate: 200 and the echo is exact",
            rc == 0 and out == data, "rc %s, %d bytes back\n%s" % (rc, len(out), err))
    rc, out, err = peer_client(topo, 1, to, auth, *good, ca=root,
                               extra=["--streams", "40", "--bytes", "200000"], timeout=60)
    res = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    t.check("h2 client: 40 concurrent streams on one connection, checksums right",
            rc == 0 and res.get("ok") == 40 and res.get("connections") == 1, "%s\n%s"
            % (res, err))
    t.check("node2 logged the h2 client's identity",
            ("accepted %s" % spiffe(a1)) in h2.log_text(), h2.log_tail())

    # --- refused handshakes, each counted under its reason
    s0 = tun_stats(2, topo)
    cases = [
        ("no client certificate", None, "in_no_client_cert"),
        ("a certificate from another CA",
         mkcert(topo, other_ca, "default", a1.name, os.path.join(certs, "other-ca")),
         "in_untrusted"),
        ("another trust domain",
         mkcert(topo, ca, "default", a1.name, os.path.join(certs, "other-td"),
                td="other.example"), "in_wrong_trust_domain"),
        ("an expired certificate",
         mkcert(topo, ca, "default", a1.name, os.path.join(certs, "expired"),
                start=-3 * 86400, lifetime=86400), "in_expired"),
    ]
    nosan = os.path.join(certs, "nosan")
    topo.run([SYS_PY, PEER, "leaf", "--ca-dir", ca, "--id", "", "--out", nosan])
    cases.append(("a certificate without a SPIFFE SAN",
                  (nosan + ".cert.pem", nosan + ".key.pem"), "in_no_spiffe_id"))
    for what, cert, counter in cases:
        before = tun_stats(2, topo)
        rc, out, err = peer_client(topo, 1, to, auth, *(cert or (None, None)), ca=root,
                                   stdin_data=b"x" * 100)
        after = tun_stats(2, topo)
        t.check("refused: %s (handshake fails, %s +1)" % (what, counter),
                rc == 4 and after[counter] == before[counter] + 1 and
                after["in_tls_failed"] == before["in_tls_failed"] + 1,
                "rc %s\n%s\nbefore %s\nafter %s" % (rc, err, before, after))

    # --- bad requests and policy
    for what, authority, code, counter in (
            ("an address that is not a workload of node2", "%s:7000" % a1.ip, 400,
             "in_bad_request"),
            ("port 15008 itself", "%s:15008" % b1.ip, 400, "in_bad_request"),
            # a pod's 15008 serves that pod only (ztunnel answers 400)
            ("an address no workload has", "10.99.2.200:7000", 400, "in_bad_request"),
            ("a closed port of the pod", "%s:7999" % b1.ip, 503, "in_upstream_failed")):
        before = tun_stats(2, topo)
        rc, out, err = peer_client(topo, 1, to, authority, *good, ca=root)
        after = tun_stats(2, topo)
        t.check("CONNECT to %s: %d (%s +1)" % (what, code, counter),
                rc == 3 and ("status %d" % code) in err and
                after[counter] == before[counter] + 1, "rc %s\n%s" % (rc, err))
    denied = mkcert(topo, ca, "default", "denied", certs)
    before = tun_stats(2, topo)
    rc, out, err = peer_client(topo, 1, to, auth, *denied, ca=root, stdin_data=b"x")
    after = tun_stats(2, topo)
    t.check("CONNECT denied by AuthorizationPolicy: 401 (in_denied +1)",
            rc == 3 and "status 401" in err and after["in_denied"] == before["in_denied"] + 1,
            "rc %s\n%s" % (rc, err))

    # --- malformed peers: closed, counted, meshd unharmed
    before = tun_stats(2, topo)
    r = topo.node_run(1, [sys.executable, "-c",
                          "import socket; s = socket.create_connection(('%s', 15008), 5); "
                          "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); "
                          "s.settimeout(5); print(len(s.recv(4096)))" % b1.ip],
                      timeout=20, check=False)
    t.check("plain HTTP to 15008: the handshake fails and is counted",
            tap.wait_until(lambda: tun_stats(2, topo)["in_tls_failed"] ==
                           before["in_tls_failed"] + 1, timeout=5), (r.stdout, r.stderr))
    garbage = os.urandom(4096)
    r = subprocess.run(topo.node_argv(1, ["openssl", "s_client", "-quiet", "-connect", to,
                                          "-tls1_3", "-alpn", "h2", "-cert", good[0],
                                          "-key", good[1], "-CAfile", root]),
                       input=garbage, capture_output=True, timeout=20)
    t.check("TLS with a good certificate, then garbage instead of HTTP/2: closed, "
            "meshd runs on", h2.proc.poll() is None and tap.wait_until(
                lambda: tun_stats(2, topo)["conns_open"] == 0, timeout=5),
            (tun_stats(2, topo), r.stderr[-300:]))

    # --- plaintext from another node: STRICT drops it, PERMISSIVE not
    sink2 = topo.podtool(b2, "echo", "--port", 7000, "--timeout", 300)
    sink2.expect("listening")
    prober = topo.podtool(1, "prober", stdin=True)
    c0 = tap.counters(topo, 2)
    res = prober.cmd("1.5 %s:7000 %s:7000" % (b1.ip, b2.ip))["results"]
    c1 = tap.counters(topo, 2)
    t.check("plaintext from node1 to the STRICT pod is dropped (%s)" % res[0],
            res[0] == "TIMEOUT" and c1["plain_deny"] > c0["plain_deny"], (res, c0, c1))
    t.check("plaintext from node1 to a PERMISSIVE pod passes", res[1] == "OK", res)
    prober.proc.terminate()

    t.check("meshd node2 survived every refusal", h2.proc.poll() is None, h2.log_tail())
    s1 = tun_stats(2, topo)
    t.check("node2's tunnel holds nothing open afterwards",
            tap.wait_until(lambda: tun_stats(2, topo)["streams_open"] == 0, timeout=5),
            (s0, s1))

    def peer_server(cert, *extra):
        """hbone-peer's server on b1's 15008 with certificate CERT."""
        return topo.popen(
            topo.pod_argv(b1, [SYS_PY, PEER, "server", "--listen", "%s:15008" % b1.ip,
                               "--cert", cert[0], "--key", cert[1], "--ca", root,
                               "--timeout", "120"] + list(extra)),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    # --- meshd's client side against the independent server
    topo.stop_meshd(h2)
    srv_cert = mkcert(topo, ca, "default", b1.name, os.path.join(certs, "srv"))
    srv = peer_server(srv_cert)
    line = srv.stdout.readline()
    t.require("h2 server listens in the pod", "listening" in line, line)
    h1 = topo.start_meshd(1, cfg, args(1))
    sess = topo.podtool(a2, "session", "--to", "%s:7000" % b1.ip, stdin=True)
    sess.expect("event")
    r1 = sess.cmd("xfer 100000")
    r2 = sess.cmd("xfer 3000000", timeout=60)
    sess.cmd("close")
    t.check("meshd's client through the h2 server: echoes exact (100 kB, 3 MB)",
            r1.get("ok") is True and r2.get("ok") is True, (r1, r2, sess.stderr()))
    t.check("node1 logged the h2 server's identity",
            ("connected to %s" % spiffe(b1)) in h1.log_text(), h1.log_tail())
    srv.terminate()
    srv.wait(timeout=10)

    # a server whose identity is not the destination's
    wrong = mkcert(topo, ca, "default", b2.name, os.path.join(certs, "wrong"))
    srv = peer_server(wrong)
    line = srv.stdout.readline()
    before = tun_stats(1, topo)
    sess = topo.podtool(a1, "session", "--to", "%s:7000" % b1.ip, stdin=True)
    first = sess.next(timeout=20)
    reply = sess.cmd("xfer 100") if first.get("event") == "connected" else first
    after = tun_stats(1, topo)
    t.check("a server with another identity is refused (out_wrong_peer +1), the pod "
            "gets no data", (reply.get("event") == "error" or reply.get("ok") is False) and
            after["out_wrong_peer"] == before["out_wrong_peer"] + 1,
            "%s\n%s\n%s" % (first, reply, after))
    sess.proc.kill()
    t.check("meshd node1 logged why", "was expected" in h1.log_text(), h1.log_tail())
    srv.terminate()
    srv.wait(timeout=10)
    t.check("meshd node1 survived", h1.proc.poll() is None, h1.log_tail())

    # --- a peer that starts draining as the request arrives (GOAWAY with
    # last stream 0): the stream was not processed and is sent again on a
    # new connection; the pod never notices
    srv = peer_server(srv_cert, "--goaway-first")
    line = srv.stdout.readline()
    t.require("h2 server (GOAWAY on its first request) listens", "listening" in line, line)
    before = tun_stats(1, topo)
    sess = topo.podtool(a1, "session", "--to", "%s:7000" % b1.ip, stdin=True)
    first = sess.next(timeout=20)
    r = sess.cmd("xfer 200000", timeout=30) if first.get("event") == "connected" else first
    sess.cmd("close")
    after = tun_stats(1, topo)
    srv.terminate()
    out = srv.communicate(timeout=10)[0]
    evs = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    t.check("GOAWAY before the stream was processed: meshd sends it again on a new "
            "connection (out_retried +1), the pod's transfer is exact",
            r.get("ok") is True and after["out_retried"] == before["out_retried"] + 1,
            (first, r, after.get("out_retried")))
    t.check("... the peer saw the GOAWAY'd request on connection 1 and served it on 2",
            any(e.get("status") == "goaway" and e.get("conn") == 1 for e in evs) and
            any(e.get("event") == "stream" and e.get("status") == 200 and
                e.get("conn") == 2 for e in evs), evs)

    # --- keepalive: a peer that stops answering (PINGs included) is given
    # up after PING's timeout (one every 10 s, 20 s for its answer), and
    # the pod's connection through it is reset rather than left hanging
    srv = peer_server(srv_cert, "--silent-after", "2")
    line = srv.stdout.readline()
    t.require("h2 server (going silent after 2 s) listens", "listening" in line, line)
    before = tun_stats(1, topo)
    sess = topo.podtool(a2, "session", "--to", "%s:7000" % b1.ip, stdin=True)
    first = sess.next(timeout=20)
    r = sess.cmd("xfer 1000") if first.get("event") == "connected" else first
    t.require("a session through it works before it goes silent", r.get("ok") is True,
              (first, r))
    t0 = time.monotonic()
    gone = tap.wait_until(lambda: tun_stats(1, topo)["ping_timeouts"] >
                          before["ping_timeouts"], timeout=45, interval=0.5)
    took = time.monotonic() - t0
    t.check("the silent peer is closed after an unanswered PING: ping_timeouts +1 in "
            "%.0f s (PING within 10 s, 20 s to answer)" % took, gone and 15 <= took <= 35,
            h1.log_tail(5))
    t.check("meshd says which peer did not answer",
            ("%s did not answer PING" % spiffe(b1)) in h1.log_text(), h1.log_tail(5))
    reply = sess.cmd("xfer 100", timeout=10)
    t.check("the pod's connection through it ends (reset), not left hanging",
            reply.get("event") in ("error", "closed") or reply.get("ok") is False, reply)
    sess.proc.kill()
    srv.terminate()
    srv.wait(timeout=10)


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=2)
