#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Policy bypasses, tried as a hostile pod would: each attack against a
same-node AuthorizationPolicy DENY or a PeerAuthentication STRICT pod, and
a control that shows the same tool gets through where policy allows (so a
refusal is the policy's, not a broken tool's).

1 node x 4 pods:

    A  n1p1  Workload default/n1p1 sa n1p1   the attacker
    B  n1p2  Workload default/n1p2 sa n1p2   the target: STRICT, and an
             AuthorizationPolicy DENY from A's principal on port 9090
    C  n1p3  Workload default/n1p3 sa n1p3   a friend B allows on 9090
    L  n1p4  not a Workload                  plaintext from the node

Attacks (tests/tools/rawtcp.py):
- a forged mark: A's socket sets SO_MARK to meshd's 0x539 (or the
  upstream 0x53a), which connect4 used to exempt and TC then let through
  as "judged at connect()";
- a destination rewritten after connect(): a DNAT rule in the node (as
  kube-proxy writes for NodePorts) sends A's connect to an address that is
  no Workload on to B:9090; connect4 never sees B;
- raw SYNs from A that no connect() made;
- fragments: a plaintext SYN split into two IP fragments to STRICT B;
- IP options on a SYN to B;
- a spoofed source: A sends a SYN from C's address, which B allows;
- IPv6: policy is IPv4's, so TCP over IPv6 to a pod with a policy is
  dropped rather than let past it (ICMPv6 and UDP pass).

TC on B's veth judges every SYN with the identity of the veth it came in
on; TC on A's veth drops what A sends from an address not its own; what
TC cannot parse is dropped for meshed pods, while ordinary fragmented
traffic (a large ping) still works.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

RAW = os.path.join(HERE, "..", "tools", "rawtcp.py")
DNAT_IP = "10.99.0.200"

POLICY = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-attacker, namespace: default}
spec:
  selector: {matchLabels: {app: %(b)s}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/%(a)s"]}}]
    to: [{operation: {ports: ["9090"]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict-target, namespace: default}
spec:
  selector: {matchLabels: {app: %(b)s}}
  mtls: {mode: STRICT}
"""


def body(t, topo):
    A, B, C, L = topo.node_pods(1)

    def raw(where, *args, timeout=20):
        argv = [sys.executable, RAW] + [str(a) for a in args]
        r = topo.run(topo.where_argv(where, argv), timeout=timeout, check=False)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": r.stderr.strip()}

    def connect(where, to, mark=0, timeout=1.0):
        return raw(where, "connect", "--to", to, "--mark", hex(mark),
                   "--timeout", timeout).get("result")

    def syn(where, src, dst, *extra, wait=1.0):
        return raw(where, "syn", "--src", src, "--dst", dst, "--wait", wait,
                   *extra).get("synack")

    def stats():
        return tap.counters(topo, 1)

    def delta(c0, c1, name):
        return c1.get(name, 0) - c0.get(name, 0)

    docs = [d for d in topo.config_text().split("---\n") if "name: %s," % L.name not in d]
    cfg = topo.config_path()
    with open(cfg, "w") as f:
        f.write("---\n".join(docs) + "---\n" + POLICY % {"a": A.name, "b": B.name})
    topo.start_meshd(1, cfg)

    for port in (8080, 9090):
        topo.podtool(B, "echo", "--port", port, "--timeout", 110).expect("listening")
    node_ip = topo.node_ip(1)
    topo.podtool(1, "echo", "--port", 7777, "--timeout", 110).expect("listening")

    # --- what the policy says, with honest connects
    t.eq("honest: A -> B:9090 refused by connect4 (EPERM)",
         connect(A, "%s:9090" % B.ip), "EPERM")
    t.eq("honest: A -> B:8080 allowed", connect(A, "%s:8080" % B.ip), "OK")
    t.eq("honest: C -> B:9090 allowed", connect(C, "%s:9090" % B.ip), "OK")
    t.eq("honest: plaintext L -> B:8080 dropped (STRICT)",
         connect(L, "%s:8080" % B.ip), "TIMEOUT")

    # --- a forged mark
    for mark in (0x539, 0x53a):
        c0 = stats()
        got = connect(A, "%s:9090" % B.ip, mark)
        c1 = stats()
        t.eq("forged mark %#x: A -> B:9090 is refused (EPERM)" % mark, got, "EPERM")
        t.check("... connect4 did not take the socket for meshd's (meshd_connect +%d) and "
                "judged it with A's identity (policy_deny +%d)"
                % (delta(c0, c1, "meshd_connect"), delta(c0, c1, "policy_deny")),
                delta(c0, c1, "meshd_connect") == 0 and delta(c0, c1, "policy_deny") == 1)
        t.eq("forged mark %#x: A -> B:8080 (allowed) still connects" % mark,
             connect(A, "%s:8080" % B.ip, mark), "OK")

    # --- fragments
    t.check("control: a SYN in two fragments from L to the node's listener is "
            "reassembled and answered", syn(L, L.ip, "%s:7777" % node_ip, "--frag"))
    t.check("whole plaintext SYN L -> STRICT B:8080 is dropped",
            syn(L, L.ip, "%s:8080" % B.ip) is False)
    c0 = stats()
    t.check("the same SYN in two fragments is dropped too",
            syn(L, L.ip, "%s:8080" % B.ip, "--frag") is False)
    t.check("... both fragments counted as unparsed_drop (+%d)"
            % delta(c0, stats(), "unparsed_drop"), delta(c0, stats(), "unparsed_drop") >= 2)
    t.check("a fragmented SYN from mesh pod A to B:8080 (allowed whole) is dropped",
            syn(A, A.ip, "%s:8080" % B.ip, "--frag") is False)
    r = raw(L, "ping", "--to", B.ip, "--size", 3000)
    t.check("ordinary traffic: a 3000-byte ping (fragmented) L -> B gets its reply",
            r.get("reply") is True, r)

    # --- IP options
    t.check("control: a SYN with IP options from L to the node's listener is answered",
            syn(L, L.ip, "%s:7777" % node_ip, "--ipopts"))
    c0 = stats()
    t.check("a SYN with IP options from mesh pod A to B:8080 (allowed) is dropped",
            syn(A, A.ip, "%s:8080" % B.ip, "--ipopts") is False)
    t.check("... counted as unparsed_drop (+%d)" % delta(c0, stats(), "unparsed_drop"),
            delta(c0, stats(), "unparsed_drop") >= 1)

    # --- raw SYNs no connect() made
    t.check("raw SYN A -> B:8080 (allowed) is answered",
            syn(A, A.ip, "%s:8080" % B.ip))
    c0 = stats()
    t.check("raw SYN A -> B:9090 (denied for A) is dropped",
            syn(A, A.ip, "%s:9090" % B.ip) is False)
    t.check("... by TC with A's identity (tc_deny +%d)" % delta(c0, stats(), "tc_deny"),
            delta(c0, stats(), "tc_deny") >= 1)

    # --- a destination rewritten after connect()
    topo.run(["ip", "netns", "exec", topo.node_ns(1), "iptables", "-t", "nat", "-A",
              "PREROUTING", "-d", DNAT_IP, "-p", "tcp", "--dport", "80", "-j", "DNAT",
              "--to-destination", "%s:9090" % B.ip])
    topo.run(["ip", "netns", "exec", topo.node_ns(1), "iptables", "-t", "nat", "-A",
              "PREROUTING", "-d", DNAT_IP, "-p", "tcp", "--dport", "81", "-j", "DNAT",
              "--to-destination", "%s:8080" % B.ip])
    def denials():
        return [e for e in topo.meshds[1].access_events() if e.get("event") == "deny"
                and e.get("enforcer") == "tc" and e.get("src", "").startswith(A.ip + ":")
                and e.get("dst") == "%s:9090" % B.ip]
    n0 = len(tap.wait_until(denials, timeout=3) or [])
    c0 = stats()
    got = connect(A, "%s:80" % DNAT_IP, timeout=1.5)
    c1 = stats()
    t.eq("DNAT after connect(): A -> %s:80 (-> B:9090) does not connect" % DNAT_IP,
         got, "TIMEOUT")
    t.check("... TC judged it with A's identity (tc_deny +%d)" % delta(c0, c1, "tc_deny"),
            delta(c0, c1, "tc_deny") >= 1)
    t.eq("DNAT after connect(): C -> %s:80 (-> B:9090, allowed for C) connects" % DNAT_IP,
         connect(C, "%s:80" % DNAT_IP), "OK")
    t.eq("DNAT after connect(): A -> %s:81 (-> B:8080, allowed) connects" % DNAT_IP,
         connect(A, "%s:81" % DNAT_IP), "OK")
    t.eq("DNAT after connect(): plaintext L -> %s:81 (-> STRICT B) does not connect"
         % DNAT_IP, connect(L, "%s:81" % DNAT_IP), "TIMEOUT")
    log = topo.meshds[1].access_events()
    tap.wait_until(lambda: len(denials()) > n0, timeout=3)
    d = denials()[n0:]
    t.check("... in the access log once for the attempt (%d lines, SYN retransmissions "
            "included), judged at TC with A's principal" % len(d),
            len(d) == 1 and d[0].get("src_principal", "").endswith("/sa/" + A.name),
            lambda: "\n".join(json.dumps(e) for e in topo.meshds[1].access_events()[-6:]))

    t.check("with the node's conntrack reassembling fragments (its NAT rules turned it "
            "on), a fragmented SYN A -> B:9090 is judged whole and dropped",
            syn(A, A.ip, "%s:9090" % B.ip, "--frag") is False)

    # --- a spoofed source
    sn = topolib.ToolProc(
        topo, topo.where_argv(B, [sys.executable, RAW, "sniff", "--dport", "9090",
                                  "--timeout", "3"]), name="sniff")
    sn.expect("listening")
    c0 = stats()
    syn(A, C.ip, "%s:9090" % B.ip, wait=0.2)
    syn(A, A.ip, "%s:8080" % B.ip, wait=0.2)
    seen = sn.expect("syns", 10)
    t.eq("spoofed: a SYN from A with C's address (allowed on B:9090) never reaches B",
         seen.get("sources"), [], seen)
    t.check("... dropped on A's veth as spoof_drop (+%d)" % delta(c0, stats(), "spoof_drop"),
            delta(c0, stats(), "spoof_drop") >= 1)
    t.check("A's own traffic still flows: honest A -> B:8080 connects",
            connect(A, "%s:8080" % B.ip) == "OK")

    # --- IPv6 (the topology turns it off: turned on here for B, C, L and
    # the node, with static routes and neighbours)
    v6 = {B: "fd00:99::2", C: "fd00:99::3", L: "fd00:99::4"}
    node_ns = topo.node_ns(1)

    def mac(ns, dev):
        r = topo.run(["ip", "-n", ns, "-j", "link", "show", "dev", dev])
        return json.loads(r.stdout)[0]["address"]

    def sysctl(ns, *kv):
        topo.run(["ip", "netns", "exec", ns, "sysctl", "-qw"] + list(kv))

    sysctl(node_ns, "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.all.forwarding=1")
    for p, addr in v6.items():
        sysctl(node_ns, "net.ipv6.conf.%s.disable_ipv6=0" % p.host_veth)
        sysctl(p.ns, "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.eth0.disable_ipv6=0")
        topo.run(["ip", "-n", p.ns, "-6", "addr", "add", addr + "/128", "dev", "eth0",
                  "nodad"])
        topo.run(["ip", "-n", node_ns, "-6", "route", "add", addr + "/128", "dev",
                  p.host_veth])
        topo.run(["ip", "-n", node_ns, "-6", "neigh", "replace", addr, "lladdr",
                  mac(p.ns, "eth0"), "dev", p.host_veth])
        for q, qaddr in v6.items():
            if q is not p:
                topo.run(["ip", "-n", p.ns, "-6", "route", "add", qaddr + "/128", "dev",
                          "eth0"])
                topo.run(["ip", "-n", p.ns, "-6", "neigh", "replace", qaddr, "lladdr",
                          mac(node_ns, p.host_veth), "dev", "eth0"])
    for p in (B, C):
        topolib.ToolProc(topo, topo.where_argv(p, [sys.executable, RAW, "listen6", "--port",
                                                   "8080", "--timeout", "60"]),
                         name="listen6").expect("listening")
    t.eq("control: over IPv6, L -> C (no policy) [%s]:8080 connects" % v6[C],
         connect(L, "[%s]:8080" % v6[C]), "OK")
    c0 = stats()
    t.eq("IPv6: L -> B (STRICT, an AuthorizationPolicy) [%s]:8080 does not connect"
         % v6[B], connect(L, "[%s]:8080" % v6[B]), "TIMEOUT")
    t.check("... dropped as unparsed_drop (+%d)" % delta(c0, stats(), "unparsed_drop"),
            delta(c0, stats(), "unparsed_drop") >= 1)


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=4)
