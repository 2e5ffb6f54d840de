#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
tests/tools/hbone-peer.py, the independent HBONE implementation that
meshd's tunnel is tested against, proven on its own before it judges
anything: its server in the pod of node2, its client in the pod of node1
(cross-node, through both nodes), certificates made by the openssl CLI.

Checks: a 10 MiB round trip with sha256; 50 concurrent streams on one
TLS connection; half-close (the client's END_STREAM reaches the
destination as a FIN while the answer still flows back); ztunnel's
request headers; TLS 1.3, AES-GCM, ALPN h2 and no SNI on the wire; 400 for
a bad authority, 503 for a refused destination; refused handshakes (no
client certificate, another CA, TLS 1.2) and a server that is not the
expected identity; SIGTERM ends the server. When nghttpx is installed,
the client and server also talk through it (another HTTP/2 stack,
libnghttp2, on each side of it), else that line is a TAP SKIP.

Needs no meshd: only root, namespaces and /usr/bin/python3 with h2.
"""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

HP = os.path.join(HERE, "..", "tools", "hbone-peer.py")
PODTOOL = os.path.join(HERE, "..", "lib", "podtool.py")
PY = "/usr/bin/python3"         # Debian's python3-h2 is installed for it only
TD = "cluster.local"
CLIENT_ID = "spiffe://%s/ns/shop/sa/frontend" % TD
SERVER_ID = "spiffe://%s/ns/shop/sa/web" % TD
MiB = 1 << 20
ECHO, XFER, REFUSED, NGHTTPX = 9000, 9001, 9002, 15300


def pattern(n, seed):
    """podtool.py's pattern(): what its xfer-server sends back."""
    block = bytes((seed + i) & 0xff for i in range(256)) * 4096
    return (block * (n // len(block) + 1))[:n]


def body(t, topo):
    cpod, spod = topo.pods
    d = os.path.join(topo.logdir, "certs")
    os.makedirs(d)

    def hp(*args):
        return subprocess.run([PY, HP] + [str(a) for a in args], capture_output=True,
                              text=True, timeout=30)

    made = [hp("ca", "--out", os.path.join(d, "ca"), "--trust-domain", TD),
            hp("leaf", "--ca-dir", os.path.join(d, "ca"), "--id", CLIENT_ID,
               "--out", os.path.join(d, "client")),
            hp("leaf", "--ca-dir", os.path.join(d, "ca"), "--id", SERVER_ID,
               "--out", os.path.join(d, "server")),
            hp("ca", "--out", os.path.join(d, "other-ca"), "--trust-domain", TD),
            hp("leaf", "--ca-dir", os.path.join(d, "other-ca"), "--id", CLIENT_ID,
               "--out", os.path.join(d, "stranger"))]
    t.require("CA and workload certificates made with the openssl CLI",
              all(r.returncode == 0 for r in made),
              "\n".join(r.stderr for r in made if r.returncode))
    ca = os.path.join(d, "ca", "root-cert.pem")

    def tls(who):
        return ["--cert", os.path.join(d, who + ".cert.pem"),
                "--key", os.path.join(d, who + ".key.pem"), "--ca", ca]

    srv = topolib.ToolProc(topo, topo.pod_argv(spod, [PY, HP, "server"] + tls("server") +
                                                ["--timeout", "300"]),
                           name="hbone-server")
    t.require("hbone-peer server listens on %s:15008" % spod.ip,
              srv.expect("listening", timeout=15).get("listening") == 15008)
    for tool, port in (("echo", ECHO), ("xfer-server", XFER)):
        topo.podtool(spod, tool, "--port", port, "--timeout", 300).expect("listening")

    def server_events(kind, since=0):
        time.sleep(0.2)       # lines still in the pipe
        return [e for e in srv.lines[since:] if e.get("event") == kind]

    def client(*args, who="client", stdin=None, timeout=90):
        argv = [PY, HP, "client", "--to", spod.ip] + (tls(who) if who else []) + \
               [str(a) for a in args]
        kw = {"stdin": stdin or subprocess.DEVNULL, "text": stdin is None}
        return topo.pod_run(cpod, argv, timeout=timeout, check=False, **kw)

    def summary(r):
        try:
            return tap.json_line(r.stdout)
        except ValueError:
            return {}

    # --- a 10 MiB round trip
    n0 = len(srv.lines)
    r = client("--authority", "%s:%d" % (spod.ip, ECHO), "--expect-id", SERVER_ID,
               "--streams", 1, "--bytes", 10 * MiB)
    s = summary(r)
    t.check("10 MiB to an echo and back through the tunnel, sha256 equal",
            r.returncode == 0 and s.get("ok") == 1 and
            s["errors"] == [] and s.get("bytes") == 10 * MiB, r.stdout + r.stderr)
    t.eq("client: TLS 1.3, AES-GCM, ALPN h2, server identity",
         (s.get("tls"), s.get("cipher"), s.get("alpn"), s.get("peer_id")),
         ("TLSv1.3", "TLS_AES_256_GCM_SHA384", "h2", SERVER_ID))
    conns = server_events("tls", n0)
    t.check("server: one mutual TLS connection from %s, client identity %s, no SNI"
            % (cpod.ip, CLIENT_ID),
            len(conns) == 1 and conns[0]["peer"].startswith(cpod.ip + ":") and
            conns[0]["peer_id"] == CLIENT_ID and conns[0]["sni"] is None and
            conns[0]["version"] == "TLSv1.3", conns)
    st = server_events("stream", n0)
    hdr = st[0] if st else {}
    t.check("request as ztunnel sends it: CONNECT, :authority, forwarded for=\"ip:port\", "
            "baggage, traceparent",
            hdr.get("method") == "CONNECT" and
            hdr.get("authority") == "%s:%d" % (spod.ip, ECHO) and
            re.fullmatch(r'for="%s:\d+"' % re.escape(cpod.ip), hdr.get("forwarded", "")) and
            "k8s.namespace.name=shop" in hdr.get("baggage", "") and
            re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", hdr.get("traceparent", "")),
            hdr)

    # --- many streams, one connection
    n0 = len(srv.lines)
    r = client("--authority", "%s:%d" % (spod.ip, ECHO), "--streams", 50, "--bytes", 256 << 10)
    s = summary(r)
    t.check("50 concurrent streams of 256 KiB, every sha256 equal",
            r.returncode == 0 and s.get("ok") == 50, r.stdout + r.stderr)
    t.eq("the 50 streams share one TLS connection (server side)",
         (len(server_events("tls", n0)), len(server_events("stream", n0))), (1, 50))

    # --- half-close: END_STREAM becomes a FIN, the answer still comes back
    want = 777777
    path = os.path.join(topo.logdir, "halfclose.in")
    with open(path, "wb") as f:
        f.write(struct.pack("!Q", want) + pattern(100000, 3))
    with open(path, "rb") as f:
        r = client("--authority", "%s:%d" % (spod.ip, XFER), stdin=f)
    t.check("half-close: the destination reads to EOF, then its %d-byte answer arrives "
            "whole" % want,
            r.returncode == 0 and r.stdout == pattern(want, 7),
            "exit %d, %d bytes back\n%s" % (r.returncode, len(r.stdout),
                                             r.stderr.decode(errors="replace")))

    # --- refusals with a status
    r = client("--authority", spod.ip)
    t.check("a malformed authority (no port) gets 400, exit 3",
            r.returncode == 3 and "status 400" in r.stderr, r.stderr)
    r = client("--authority", "%s:%d" % (spod.ip, REFUSED))
    t.check("a refused destination gets 503, exit 3",
            r.returncode == 3 and "status 503" in r.stderr, r.stderr)

    # --- refused handshakes and identities
    n0 = len(srv.lines)
    r = client("--authority", "%s:%d" % (spod.ip, ECHO), "--no-cert", "--ca", ca, who=None)
    ref = server_events("refused", n0)
    t.check("no client certificate: refused, exit 4, server says why",
            r.returncode == 4 and len(ref) == 1 and "CERTIFICATE" in ref[0]["reason"],
            "%s\n%s" % (r.stderr, ref))
    r = client("--authority", "%s:%d" % (spod.ip, ECHO), who="stranger")
    t.check("a client certificate from another CA: refused, exit 4",
            r.returncode == 4, r.stderr)
    r = client("--authority", "%s:%d" % (spod.ip, ECHO), "--tls12")
    t.check("TLS 1.2: refused, exit 4", r.returncode == 4, r.stderr)
    r = client("--authority", "%s:%d" % (spod.ip, ECHO),
               "--expect-id", "spiffe://%s/ns/shop/sa/other" % TD)
    t.check("a server that is not the expected identity: client stops, exit 4",
            r.returncode == 4 and "was expected" in r.stderr, r.stderr)

    # --- another HTTP/2 stack in the middle
    nghttpx = shutil.which("nghttpx")
    if not nghttpx:
        t.check("through nghttpx (libnghttp2 on both sides) # SKIP nghttpx is not "
                "installed (Debian nghttp2-proxy)", True)
    else:
        errlog = os.path.join(topo.logdir, "nghttpx.err")
        topo.pod_popen(cpod, [
            nghttpx, "--conf=/dev/null", "--single-process", "--no-ocsp", "-s",
            "-f", "127.0.0.1,%d" % NGHTTPX,
            "-b", "%s,15008;;proto=h2;tls" % spod.ip,
            "--verify-client", "--verify-client-cacert=" + ca,
            "--client-private-key-file=" + os.path.join(d, "client.key.pem"),
            "--client-cert-file=" + os.path.join(d, "client.cert.pem"),
            "--insecure", "--tls-min-proto-version=TLSv1.3",
            "--errorlog-file=" + errlog, "--accesslog-file=/dev/null",
            os.path.join(d, "server.key.pem"), os.path.join(d, "server.cert.pem")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def listening():
            try:
                with open(errlog) as f:
                    return "Listening on" in f.read()
            except OSError:
                return False
        up = tap.wait_until(listening, timeout=10)
        n0 = len(srv.lines)
        argv = [PY, HP, "client", "--to", "127.0.0.1:%d" % NGHTTPX] + tls("client") + \
               ["--authority", "%s:%d" % (spod.ip, ECHO), "--expect-id", SERVER_ID,
                "--streams", "20", "--bytes", str(512 << 10), "--until-echoed"]
        r = topo.pod_run(cpod, argv, timeout=90, check=False) if up else None
        s = summary(r) if r else {}
        conns = server_events("tls", n0)
        # nghttpx does not pass a CONNECT's END_STREAM on: a stream is
        # done when its bytes are back (--until-echoed)
        t.check("through nghttpx (libnghttp2 server for our client, libnghttp2 client "
                "for our server): 20 streams echoed, sha256 equal",
                up and r.returncode == 0 and s.get("ok") == 20 and
                len(conns) >= 1 and conns[0]["peer_id"] == CLIENT_ID,
                "nghttpx up: %s\n%s\n%s" % (up, r and (r.stdout + r.stderr), conns))

    # --- the server ends on SIGTERM
    srv.proc.terminate()
    try:
        rc = srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        rc = None
    t.eq("server exits 0 on SIGTERM", rc, 0, srv.stderr)
    bad = [l for l in srv.lines if l.get("text")]
    t.check("server printed JSON lines only", not bad, json.dumps(bad[:5]))


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=1, need=())
