#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Capture for meshd's tunnel, the kernel side. A meshed pod's connection to a
meshed pod of another node (directly, or through a Service VIP whose
endpoint is there) lands on <its own pod ip>:15001, where meshd listens
inside the pod's network namespace; skm_outbound tells meshd, by the
address it accepted, where the connection was going; the app's
getpeername() still shows what it dialled. Not captured: a same-node pod,
an address outside the mesh, a remote pod's HBONE port, any socket with
meshd's mark, and everything while meshd does not listen on 15001. The
pod<->meshd leg is plain TCP (not in the SOCKHASH: a redirect has no
backpressure, see sock_accel in bpf/lib/conn.bpf.h), carries bytes
exactly both ways with half-close, and its skm_outbound entry goes when meshd's end closes
(not before: a pod that writes and closes at once still gets its bytes to
the right place). TC lets plaintext SYNs to a pod's 15008 through and
drops those to its 15001/15006.

meshd's part is played by tests/tools/capture-peer.py: a listener with
SO_MARK 0x539, made inside the source pod's network namespace and run in
the node's cgroup, as meshd is.

2 nodes x 2 pods; n2p2 is not a Workload (outside the mesh).
"""
import json
import os
import socket
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

PEER = os.path.join(HERE, "..", "tools", "capture-peer.py")
MARK = 0x539
VIP = "10.96.0.20"
SKM_CONN_TUNNEL = 1 << 5
SKM_CONN_VIA_VIP = 1 << 2


def peer_tool(topo, where, *args, name="peer"):
    """capture-peer.py at where (see Topology.where_argv), stdin-driven."""
    argv = [sys.executable, PEER] + [str(a) for a in args]
    return topolib.ToolProc(topo, topo.where_argv(where, argv), stdin=True,
                            name=name)


def send(tool, line):
    tool.proc.stdin.write(line + "\n")
    tool.proc.stdin.flush()


def ip_of(v):
    """A network-order __u32 as bpftool prints it (host-order integer)."""
    return socket.inet_ntoa(struct.pack("=I", v))


def port_of(v):
    """A network-order __u16 as bpftool prints it."""
    return socket.ntohs(v)


def dump(topo, n, name):
    """The formatted entries of pinned map name of node n."""
    r = topolib.sh(["bpftool", "-j", "map", "dump", "pinned",
                    os.path.join(topo.pin_dir(n), name)])
    return [e["formatted"] for e in json.loads(r.stdout)]


def outbound(topo, n, local):
    """The skm_outbound entry of the pod socket at local ("ip:port") as a
    dict with addresses decoded, or None."""
    ip, port = local.rsplit(":", 1)
    for e in dump(topo, n, "skm_outbound"):
        k, v = e["key"], e["value"]
        if ip_of(k["ip"]) == ip and k["port"] == int(port):
            return {"dst": "%s:%d" % (ip_of(v["dst_ip"]), port_of(v["dst_port"])),
                    "dialled": "%s:%d" % (ip_of(v["vip"]), port_of(v["vport"])),
                    "svc_id": v["svc_id"], "src_wl_id": v["src_wl_id"],
                    "cookie": v["cookie"]}
    return None


def conn_flags(topo, n, local):
    for e in dump(topo, n, "skm_conns"):
        t = e["value"]["tuple"]
        if "%s:%d" % (ip_of(t["sip"]), t["sport"]) == local:
            return e["value"]["flags"]
    return None


def body(t, topo):
    n1p1, n1p2 = topo.node_pods(1)
    n2p1, n2p2 = topo.node_pods(2)
    svc = {"name": "remote", "vip": VIP,
           "ports": [{"port": 80, "targetPort": 8080}], "endpoints": [(n2p1.ip, 1)]}
    # every pod but n2p2 is a Workload
    docs = topo.config_text([svc]).split("---\n")
    docs = [d for d in docs if "name: %s," % n2p2.name not in d]
    cfg = topo.config_path()
    with open(cfg, "w") as f:
        f.write("---\n".join(docs))
    h1 = topo.start_meshd(1, cfg)
    h2 = topo.start_meshd(2, cfg)

    wl_ids = {w["ip"]: w["wl_id"] for w in topo.meshctl_json(1, "workloads")}
    t.require("n2p2 is outside the mesh, the other three pods are Workloads",
              n2p2.ip not in wl_ids and all(p.ip in wl_ids for p in (n1p1, n1p2, n2p1)),
              wl_ids)
    svc_id = [s["svc_id"] for s in topo.meshctl_json(1, "services") if s["vip"] == VIP][0]

    for p, port in ((n2p1, 8080), (n2p2, 9000), (n1p2, 7000)):
        topo.podtool(p, "echo", "--port", port, "--timeout", 110).expect("listening")
    # meshd's HBONE port on n2p1 (and on n1p1 for the TC checks below)
    for p in (n2p1, n1p1):
        h = peer_tool(topo, (topo.node_cgroup(p.node), p.netns_path), "listen",
                      "--bind", "%s:15008" % p.ip, "--mark", MARK, name="hbone")
        h.expect("listening")

    def client(to, *extra, where=n1p1):
        c = peer_tool(topo, where, "client", "--to", to, *extra, name="client")
        return c, c.expect("event")

    # --- no meshd listener in n1p1 yet: nothing is captured
    c0 = tap.counters(topo, 1)
    cl, ev = client("%s:8080" % n2p1.ip)
    c1 = tap.counters(topo, 1)
    t.eq("without a listener on n1p1:15001 the connection goes straight to n2p1",
         (ev.get("event"), ev.get("peer")), ("connected", "%s:8080" % n2p1.ip), ev)
    t.eq("... counted as capture_no_listener, not as capture",
         (c1["capture_no_listener"] - c0["capture_no_listener"],
          c1["capture"] - c0["capture"]), (1, 0))
    send(cl, "close")

    ob = peer_tool(topo, (topo.node_cgroup(1), n1p1.netns_path), "listen",
                   "--bind", "%s:15001" % n1p1.ip, "--mark", MARK, name="outbound")
    lst = ob.expect("listening")
    t.require("meshd's stand-in listens on %s:15001 with mark 0x539" % n1p1.ip,
              lst["mark"] == MARK, lst)

    # --- (a) direct pod IP to a pod of node2
    N = 300001
    c0 = tap.counters(topo, 1)
    cl, ev = client("%s:8080" % n2p1.ip)
    t.require("direct: connect() to %s:8080 succeeds" % n2p1.ip,
              ev.get("event") == "connected", ev)
    t.eq("direct: the app's getpeername() is what it dialled", ev["peer"],
         "%s:8080" % n2p1.ip)
    acc = ob.cmd("accept 5")
    t.require("direct: the connection lands on the 15001 listener, from the "
              "app's own address", acc.get("peer") == ev["local"], (acc, ev))
    t.eq("the accepted socket inherits the listener's mark", acc["mark"], MARK)
    c1 = tap.counters(topo, 1)
    t.eq("direct: counted as one capture", c1["capture"] - c0["capture"], 1)
    o = outbound(topo, 1, acc["peer"])
    t.eq("direct: skm_outbound for the accepted peer: original destination, "
         "what was dialled, no service, the source workload",
         o and (o["dst"], o["dialled"], o["svc_id"], o["src_wl_id"]),
         ("%s:8080" % n2p1.ip, "%s:8080" % n2p1.ip, 0, wl_ids[n1p1.ip]), o)
    t.check("direct: skm_outbound carries the pod socket's cookie",
            o and o["cookie"] in [c["cookie"] for c in topo.meshctl_json(1, "conns")
                                  if c["src"] == ev["local"]], o)
    flags = conn_flags(topo, 1, ev["local"])
    t.check("direct: the pod socket's record is marked TUNNEL, not VIA_VIP",
            flags is not None and flags & SKM_CONN_TUNNEL and
            not flags & SKM_CONN_VIA_VIP, flags)
    rec = tap.conn_by_src(topo.meshctl_json(1, "conns"), "%s:15001" % n1p1.ip)
    t.eq("meshd's accepted end has no connection record", rec, [])

    # --- (c) the pod<->meshd leg: plain TCP, byte-exact, half-close
    send(cl, "xfer %d" % N)
    e = ob.cmd("echo %d" % acc["conn"])
    x = cl.expect("event")
    c2 = tap.counters(topo, 1)
    t.eq("listener got the app's %d bytes intact up to its half-close" % N,
         (e.get("received"), e.get("pattern_ok")), (N, True), e)
    t.eq("app got them back intact up to the listener's half-close",
         (x.get("event"), x.get("received"), x.get("ok")), ("xfer", N, True), x)
    t.eq("neither end went into the SOCKHASH, sk_msg redirected nothing",
         (c2["sock_insert"] - c0["sock_insert"],
          c2["msg_redirect_bytes"] - c1["msg_redirect_bytes"]), (0, 0))
    # both FINs are through: TCP has closed both ends (the fds are open)
    t.check("both ends closed by their FINs: the skm_outbound entry is gone",
            tap.wait_until(lambda: outbound(topo, 1, acc["peer"]) is None))
    evs = tap.wait_until(lambda: [e for e in h1.access_events()
                                  if ev["local"] in (e["src"], e["dst"])])
    t.eq("one close event, the app's: tunnelled, orig_dst, both byte counts "
         "(meshd's end has no record)",
         [(e["role"], e["path"], e["orig_dst"], e["bytes_sent"], e["bytes_received"])
          for e in evs], [("client", "tunnelled", "%s:8080" % n2p1.ip, N, N)], evs)
    send(cl, "close")
    cl.expect("event")
    ob.cmd("close %d" % acc["conn"])

    # --- (d) skm_outbound lives until meshd's end closes
    cl, ev = client("%s:8080" % n2p1.ip)
    acc = ob.cmd("accept 5")
    t.require("another direct connection lands on the listener",
              acc.get("peer") == ev.get("local"), (acc, ev))
    send(cl, "close")
    cl.expect("event")
    gone = tap.wait_until(lambda: not tap.conn_by_src(topo.meshctl_json(1, "conns"),
                                                      ev["local"]))
    t.check("the app closed first: its record is gone", gone)
    t.check("... while meshd's end is open, skm_outbound keeps the entry",
            outbound(topo, 1, acc["peer"]) is not None)
    ob.cmd("close %d" % acc["conn"])
    t.check("meshd's end closed: the skm_outbound entry is gone",
            tap.wait_until(lambda: outbound(topo, 1, acc["peer"]) is None))

    # --- (c) meshd's upstream leg on the destination node: a marked
    # socket in n2p1's netns dialling n2p1:8080
    M = 65537
    c0 = tap.counters(topo, 2)
    cl, ev = client("%s:8080" % n2p1.ip, "--mark", MARK,
                    where=(topo.node_cgroup(2), n2p1.netns_path))
    t.require("upstream leg: meshd's socket in n2p1 reaches the app",
              ev.get("event") == "connected" and ev["peer"] == "%s:8080" % n2p1.ip, ev)
    x = cl.cmd("xfer %d" % M)
    c1 = tap.counters(topo, 2)
    t.eq("upstream leg: %d bytes echoed intact, with half-close" % M,
         (x.get("received"), x.get("ok")), (M, True), x)
    t.eq("upstream leg: plain TCP, neither end in the SOCKHASH",
         (c1["sock_insert"] - c0["sock_insert"],
          c1["msg_redirect_bytes"] - c0["msg_redirect_bytes"]), (0, 0))
    evs = tap.wait_until(lambda: [e for e in h2.access_events()
                                  if ev["local"] in (e["src"], e["dst"])])
    t.eq("upstream leg: one close event, the app's (server, tunnelled, "
         "both byte counts); none for meshd's socket",
         [(e["role"], e["path"], e["bytes_sent"], e["bytes_received"]) for e in evs],
         [("server", "tunnelled", M, M)], evs)
    send(cl, "close")

    # --- (a) through a Service VIP whose endpoint is on node2
    c0 = tap.counters(topo, 1)
    cl, ev = client("%s:80" % VIP)
    t.require("VIP: connect() to %s:80 succeeds" % VIP, ev.get("event") == "connected", ev)
    t.eq("VIP: the app's getpeername() is the VIP", ev["peer"], "%s:80" % VIP)
    acc = ob.cmd("accept 5")
    t.require("VIP: the connection lands on the 15001 listener",
              acc.get("peer") == ev["local"], (acc, ev))
    c1 = tap.counters(topo, 1)
    t.eq("VIP: load balanced once and captured once",
         (c1["lb_connect"] - c0["lb_connect"], c1["capture"] - c0["capture"]), (1, 1))
    o = outbound(topo, 1, acc["peer"])
    t.eq("VIP: skm_outbound: the backend on node2, the VIP dialled, the "
         "service, the source workload",
         o and (o["dst"], o["dialled"], o["svc_id"], o["src_wl_id"]),
         ("%s:8080" % n2p1.ip, "%s:80" % VIP, svc_id, wl_ids[n1p1.ip]), o)
    flags = conn_flags(topo, 1, ev["local"])
    t.check("VIP: the record is marked TUNNEL and VIA_VIP",
            flags is not None and flags & SKM_CONN_TUNNEL and flags & SKM_CONN_VIA_VIP,
            flags)
    send(cl, "xfer 4096")
    e = ob.cmd("echo %d" % acc["conn"])
    x = cl.expect("event")
    t.check("VIP: data both ways", e.get("pattern_ok") and x.get("ok"), (e, x))
    ob.cmd("close %d" % acc["conn"])
    send(cl, "close")
    cl.expect("event")
    t.check("VIP: both ends closed, skm_outbound entry gone",
            tap.wait_until(lambda: outbound(topo, 1, acc["peer"]) is None))

    # --- (d) a pod that writes and closes before meshd accepts
    cl, ev = client("%s:8080" % n2p1.ip, "--send", 5000, "--close")
    t.require("write-and-close client connected", ev.get("event") == "connected", ev)
    cl.expect("event")  # closed
    tap.wait_until(lambda: not tap.conn_by_src(topo.meshctl_json(1, "conns"),
                                               ev["local"]))
    acc = ob.cmd("accept 5")
    t.require("accepted after the app closed", acc.get("peer") == ev["local"], acc)
    o = outbound(topo, 1, acc["peer"])
    t.eq("... skm_outbound still says where it was going", o and o["dst"],
         "%s:8080" % n2p1.ip, o)
    d = ob.cmd("drain %d" % acc["conn"])
    t.eq("... and its 5000 bytes are all there", (d.get("received"), d.get("pattern_ok")),
         (5000, True), d)
    ob.cmd("close %d" % acc["conn"])
    t.check("... entry gone once meshd's end closed",
            tap.wait_until(lambda: outbound(topo, 1, acc["peer"]) is None))

    # --- (b) not captured
    cases = [
        ("same-node pod", "%s:7000" % n1p2.ip, (), "%s:7000" % n1p2.ip),
        ("address outside the mesh (n2p2)", "%s:9000" % n2p2.ip, (), "%s:9000" % n2p2.ip),
        ("remote pod's HBONE port", "%s:15008" % n2p1.ip, (), "%s:15008" % n2p1.ip),
        ("meshd's socket (its mark, made in its cgroup)", "%s:8080" % n2p1.ip,
         ("--mark", MARK), "%s:8080" % n2p1.ip),
        ("the pod's own 15001, dialled directly", "%s:15001" % n1p1.ip, (),
         "%s:15001" % n1p1.ip),
    ]
    for name, to, extra, want in cases:
        c0 = tap.counters(topo, 1)
        cl, ev = client(to, *extra, where=(topo.node_cgroup(1), n1p1.netns_path)
                        if "--mark" in extra else n1p1)
        c1 = tap.counters(topo, 1)
        t.eq("not captured: %s: connected to %s itself" % (name, want),
             (ev.get("event"), ev.get("peer")), ("connected", want), ev)
        t.eq("not captured: %s: capture counter unchanged" % name,
             c1["capture"] - c0["capture"], 0)
        if "--mark" in extra:
            t.eq("not captured: %s: counted as meshd_connect" % name,
                 c1["meshd_connect"] - c0["meshd_connect"], 1)
        if name.startswith("the pod's own"):
            acc = ob.cmd("accept 5")
            t.eq("... and the listener accepts it from the app",
                 acc.get("peer"), ev["local"], acc)
            t.check("... with no skm_outbound entry",
                    outbound(topo, 1, ev["local"]) is None)
            ob.cmd("close %d" % acc["conn"])
        send(cl, "close")
        cl.expect("event")
    c0 = tap.counters(topo, 1)
    cl, ev = client("%s:80" % VIP, "--mark", MARK, "--timeout", 2,
                    where=(topo.node_cgroup(1), n1p1.netns_path))
    c1 = tap.counters(topo, 1)
    t.eq("meshd's socket dialling the VIP is not load balanced",
         (ev.get("event"), c1["lb_connect"] - c0["lb_connect"],
          c1["capture"] - c0["capture"]), ("error", 0, 0), ev)
    t.eq("none of these reached the 15001 listener", ob.cmd("accept 0.5"),
         {"error": "timeout"})

    # --- (c2) a pod's own socket that forges meshd's mark (SO_MARK needs
    # only CAP_NET_RAW) is a pod's socket like any other: balanced,
    # captured, recorded
    for mark in (MARK, 0x53a):
        c0 = tap.counters(topo, 1)
        cl, ev = client("%s:80" % VIP, "--mark", mark, "--timeout", 2)
        c1 = tap.counters(topo, 1)
        t.eq("a pod socket forging mark %#x dialling the VIP: load balanced and "
             "captured like any other, not taken for meshd's" % mark,
             (ev.get("event"), c1["lb_connect"] - c0["lb_connect"],
              c1["capture"] - c0["capture"], c1["meshd_connect"] - c0["meshd_connect"]),
             ("connected", 1, 1, 0), ev)
        acc = ob.cmd("accept 5")
        t.eq("... it reached meshd's 15001 listener, which finds where it goes",
             (acc.get("peer"), (outbound(topo, 1, ev["local"]) or {}).get("dst")),
             (ev["local"], "%s:8080" % n2p1.ip),
             lambda: str((acc, outbound(topo, 1, ev["local"]))))
        ob.cmd("close %d" % acc["conn"])
        send(cl, "close")
        cl.expect("event")

    # --- (e) TC on the pod's veth: 15001/15006 only from the pod itself,
    # 15008 from anywhere
    pr = topo.podtool(2, "prober", stdin=True)
    c0 = tap.counters(topo, 1)
    r = pr.cmd("1.5 %s:15001 %s:15006 %s:15008" % (n1p1.ip, n1p1.ip, n1p1.ip))
    c1 = tap.counters(topo, 1)
    t.eq("plaintext SYNs from node2 to n1p1: 15001 and 15006 dropped, 15008 answered",
         r.get("results"), ["TIMEOUT", "TIMEOUT", "OK"], r)
    t.check("... the drops counted as tunnel_port_deny (+%d), 15008 as hbone_syn (+%d)"
            % (c1["tunnel_port_deny"] - c0["tunnel_port_deny"],
               c1["hbone_syn"] - c0["hbone_syn"]),
            c1["tunnel_port_deny"] - c0["tunnel_port_deny"] >= 2 and
            c1["hbone_syn"] - c0["hbone_syn"] == 1)
    pr = topo.podtool(n1p2, "prober", stdin=True)
    r = pr.cmd("1.5 %s:15001" % n1p1.ip)
    t.eq("a same-node pod cannot reach n1p1:15001 either", r.get("results"),
         ["TIMEOUT"], r)
    t.eq("nothing of that reached the listener", ob.cmd("accept 0.5"),
         {"error": "timeout"})


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=2)
