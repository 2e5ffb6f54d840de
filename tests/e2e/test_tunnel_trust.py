#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
The tunnel trusts only what it verified (issue 13), tried as a hostile
mesh peer would: tests/tools/hbone-peer.py (Python's h2 over ssl, an
independent HBONE client) holds a valid mesh certificate and dials
node2's meshd from node1's address, which an ipBlocks DENY of pod b1
names.

- The `forwarded` header is believed only when it names a workload of
  another node whose identity is the one the certificate proved. With no
  header, an honest one, one naming an address no workload has, one
  naming a workload of another identity (on either node): 401, the
  header ignored (counted `in_forwarded_ignored`), and the access log
  shows the TCP peer address, not the lie. The header naming the peer's
  own workload is believed (200 where node1's address alone is denied).
- Between two meshd: meshd dials HBONE from the client pod's network
  namespace, so the TCP peer is the pod itself; an ipBlocks DENY naming
  pod a1 refuses a1's tunnelled connections, a2's pass.
- A CONNECT whose target is not the listener's own pod is answered 400,
  as ztunnel answers it, even to a pod the peer may reach on that pod's
  own listener.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402
from test_tunnel import TD, tun_stats  # noqa: E402
from test_tunnel_security import meshctl_ca, mkcert, peer_client  # noqa: E402


def body(t, topo):
    a1, a2 = topo.node_pods(1)
    b1, b2 = topo.node_pods(2)
    node1 = topo.node_ip(1)
    pol = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
           "metadata: {name: deny-node1-and-a1, namespace: default}\n"
           "spec:\n  selector: {matchLabels: {app: %s}}\n  action: DENY\n"
           "  rules: [{from: [{source: {ipBlocks: [\"%s/32\", \"%s/32\"]}}]}]\n"
           % (b1.name, node1, a1.ip))
    cfg = topo.write_config(topo.config_path(), extra=pol)
    ca = meshctl_ca(topo, os.path.join(topo.logdir, "ca"))
    root = os.path.join(ca, "root-cert.pem")
    certs = os.path.join(topo.logdir, "client-certs")
    args = lambda n: ["--ca-dir", ca, "--cert-dir", os.path.join(topo.logdir, "certs-n%d" % n)]
    h2 = topo.start_meshd(2, cfg, args(2))
    for p in (b1, b2):
        topo.podtool(p, "echo", "--port", 7000, "--timeout", 300).expect("listening")
    to = "%s:15008" % b1.ip
    auth = "%s:7000" % b1.ip
    cert_a1 = mkcert(topo, ca, "default", a1.name, certs)
    cert_a2 = mkcert(topo, ca, "default", a2.name, certs)

    def attempt(cert, fwd):
        extra = ["--no-forwarded"] if fwd is None else ["--forwarded-for", fwd]
        before = tun_stats(2, topo)
        rc, out, err = peer_client(topo, 1, to, auth, *cert, ca=root, stdin_data=b"hello",
                                   extra=extra)
        after = tun_stats(2, topo)
        ignored = after.get("in_forwarded_ignored", 0) - before.get("in_forwarded_ignored", 0)
        return rc, err, ignored

    # --- the lying peer: a1's certificate, dialling from node1's address
    for what, fwd, counted in (
            ("no forwarded header", None, 0),
            ("an honest forwarded (node1's own address)", node1 + ":40000", 0),
            ("forwarded naming an address no workload has", "10.99.1.200:1234", 1),
            ("forwarded naming a2, a workload of another identity", a2.ip + ":1234", 1),
            ("forwarded naming b2, a workload of node2", b2.ip + ":1234", 1)):
        rc, err, ignored = attempt(cert_a1, fwd)
        t.check("ipBlocks DENY of node1's address, %s: 401%s" %
                (what, ", the header ignored (in_forwarded_ignored +1)" if counted else ""),
                rc == 3 and "status 401" in err and ignored == counted,
                "rc %s, ignored %d\n%s" % (rc, ignored, err))

    lie = [e for e in h2.access_events() if e.get("role") == "server" and
           e.get("response_code") == 401]
    t.check("node2's access log shows the refused streams from node1's address, never "
            "from the addresses the peer claimed",
            len(lie) >= 5 and all(e.get("src", "").startswith(node1 + ":") for e in lie),
            [(e.get("src"), e.get("response_code")) for e in lie])

    # the peer speaking for its own workload is believed
    rc, err, ignored = attempt(cert_a2, a2.ip + ":1234")
    t.check("forwarded naming the peer's own workload (a2 with a2's certificate) is "
            "believed: 200 although node1's address is denied", rc == 0 and ignored == 0,
            "rc %s\n%s" % (rc, err))
    rc, err, ignored = attempt(cert_a1, a1.ip + ":1234")
    t.check("... and so a1 speaking for a1, whom ipBlocks denies, gets 401",
            rc == 3 and "status 401" in err and ignored == 0, "rc %s\n%s" % (rc, err))

    # --- a CONNECT to another pod than the listener's
    before = tun_stats(2, topo)
    rc, out, err = peer_client(topo, 1, to, "%s:7000" % b2.ip, *cert_a2, ca=root,
                               stdin_data=b"x")
    after = tun_stats(2, topo)
    t.check("CONNECT to b2 sent to b1's 15008: 400 (in_bad_request +1)",
            rc == 3 and "status 400" in err and
            after["in_bad_request"] == before["in_bad_request"] + 1, "rc %s\n%s" % (rc, err))
    rc, out, err = peer_client(topo, 1, "%s:15008" % b2.ip, "%s:7000" % b2.ip, *cert_a2,
                               ca=root, stdin_data=b"ping")
    t.check("... while b2's own 15008 serves it (200, echo)", rc == 0 and out == b"ping",
            "rc %s\n%s" % (rc, err))
    t.check("node2 says why it answered 400",
            "is not %s, the pod this listener serves" % b1.ip in h2.log_text(),
            h2.log_tail(10))

    # --- two meshd: the forwarded address of an honest peer drives policy
    h1 = topo.start_meshd(1, cfg, args(1))
    res = {}
    for p in (a1, a2):
        s = topo.podtool(p, "session", "--to", auth, stdin=True)
        first = s.next(timeout=20)
        res[p.name] = s.cmd("xfer 20000") if first.get("event") == "connected" else first
        s.proc.kill()
    t.check("between two meshd, ipBlocks naming pod a1 refuses a1's tunnelled "
            "connection", res[a1.name].get("ok") is not True, res)
    t.check("... and a2's passes, its echo exact", res[a2.name].get("ok") is True, res)
    def meshd_lines():
        """node2's lines of a2's stream from node1's meshd (the stream
        ends as the session is killed: its line comes a moment later)."""
        return [e for e in h2.access_events() if e.get("path") == "tunnel" and
                e.get("role") == "server" and e.get("response_code") == 200 and
                e.get("src_workload") == "default/%s" % a2.name and
                not e.get("peer", "").startswith(node1 + ":")]
    tap.wait_until(meshd_lines, timeout=5)
    srv = meshd_lines()
    t.check("node1's meshd dials from the client pod's own namespace: node2 sees the "
            "pod's address as the TCP peer, not node1's",
            srv and all(e.get("peer", "").startswith(a2.ip + ":") for e in srv),
            [(e.get("peer"), e.get("src")) for e in srv])
    t.check("meshd node2 believed node1's meshd (no forwarded header ignored)",
            tun_stats(2, topo).get("in_forwarded_ignored") == 3, tun_stats(2, topo))
    t.check("both meshd survived", h1.proc.poll() is None and h2.proc.poll() is None,
            h2.log_tail())


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=2)
