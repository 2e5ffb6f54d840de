#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Per-connection metrics (issue 2, c): for connections whose sizes we choose
(the client writes A bytes, the server answers B, different for each), the
access log has exactly one close event per socket - one "client", one
"server" - with bytes equal to exactly what the applications wrote and
read, and srtt > 0; `meshctl conns` shows a live connection with its exact
counts; a connection to a listener outside the mesh (the node's own
namespace, not a Workload) and one to a pod of another node are
"passthrough" and still counted exactly.

2 nodes x 2 pods, a meshd on each node.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

# (client writes A, server writes B): small, odd, asymmetric, multi-MiB
PAIRS = [(8, 1), (1000, 50000), (123457, 17), (65536, 65537),
         (3000001, 250000), (9, 2 * 1048576 + 3)]


def close_events(h, a, b):
    """Close events of the connection between a and b ("ip:port")."""
    return [e for e in h.access_events() if {e["src"], e["dst"]} == {a, b}]


def body(t, topo):
    p1, p2 = topo.node_pods(1)
    remote = topo.node_pods(2)[0]
    cfg = topo.write_config(topo.config_path())
    h = topo.start_meshd(1, cfg)
    h2 = topo.start_meshd(2, cfg)

    # --- K connections with known sizes
    srv = topo.podtool(p2, "xfer-server", "--port", 7000, "--count-conns",
                       len(PAIRS), "--timeout", 100)
    srv.expect("listening")
    r = topo.pod_run(p1, topo.podtool_argv(
        "xfer", "--to", "%s:7000" % p2.ip,
        "--pairs", ",".join("%d:%d" % ab for ab in PAIRS)), timeout=60)
    conns = [tap.json_line(l) for l in r.stdout.splitlines() if l.startswith("{")]
    t.require("xfer: %d connections, each got exactly its B" % len(PAIRS),
              len(conns) == len(PAIRS) and
              all(c["received"] == b for c, (a, b) in zip(conns, PAIRS)), r.stdout)

    want = 2 * len(PAIRS)
    tap.wait_until(lambda: sum(len(close_events(h, c["local"], c["peer"]))
                               for c in conns) >= want, timeout=5)
    time.sleep(0.3)     # a duplicate event would come now
    allev = h.access_events()
    for c, (a, b) in zip(conns, PAIRS):
        ev = close_events(h, c["local"], c["peer"])
        cli = [e for e in ev if e["role"] == "client"]
        sv = [e for e in ev if e["role"] == "server"]
        tag = "A=%d B=%d" % (a, b)
        if not t.check("%s: exactly one client and one server close event" % tag,
                       len(cli) == 1 and len(sv) == 1 and len(ev) == 2, ev):
            continue
        cli, sv = cli[0], sv[0]
        t.check("%s: client event src/dst are the client's view" % tag,
                cli["src"] == c["local"] and cli["dst"] == c["peer"]
                and cli["orig_dst"] == c["peer"], cli)
        t.eq("%s: client sent A, received B" % tag,
             (cli["bytes_sent"], cli["bytes_received"]), (a, b), cli)
        t.eq("%s: server sent B, received A" % tag,
             (sv["bytes_sent"], sv["bytes_received"]), (b, a), sv)
        t.check("%s: srtt_us > 0 on both sides (%d, %d)"
                % (tag, cli["srtt_us"], sv["srtt_us"]),
                cli["srtt_us"] > 0 and sv["srtt_us"] > 0, (cli, sv))
        t.check("%s: pod-to-pod on one node is accelerated" % tag,
                cli["path"] == "accelerated" and sv["path"] == "accelerated", (cli, sv))
        t.check("%s: cookies differ, durations >= 0" % tag,
                cli["cookie"] != sv["cookie"] and cli["duration_ms"] >= 0
                and sv["duration_ms"] >= 0, (cli, sv))
    cookies = [e["cookie"] for e in allev]
    t.eq("no cookie appears in two close events", len(cookies), len(set(cookies)))

    # --- a live connection in meshctl conns
    topo.podtool(p2, "echo", "--port", 7001, "--timeout", 60).expect("listening")
    s = topo.podtool(p1, "session", "--to", "%s:7001" % p2.ip, stdin=True)
    info = s.expect("event")
    t.require("live session connected", info.get("event") == "connected", info)
    x1, x2 = s.cmd("xfer 10000"), s.cmd("xfer 2345")
    t.check("live session echoes", x1.get("ok") and x2.get("ok"), (x1, x2))
    live = topo.meshctl_json(1, "conns")
    cli = tap.conn_by_src(live, info["local"], info["peer"])
    sv = tap.conn_by_src(live, info["peer"], info["local"])
    if t.check("meshctl conns lists both ends of the open connection",
               len(cli) == 1 and len(sv) == 1, live):
        cli, sv = cli[0], sv[0]
        t.eq("live client record: role, state, path, tx/rx bytes",
             (cli["role"], cli["state"], cli["path"], cli["tx_bytes"], cli["rx_bytes"]),
             ("client", "ESTABLISHED", "accelerated", 12345, 12345), cli)
        t.eq("live server record: role, path, tx/rx bytes",
             (sv["role"], sv["path"], sv["tx_bytes"], sv["rx_bytes"]),
             ("server", "accelerated", 12345, 12345), sv)
        t.check("live records have srtt_us > 0",
                cli["srtt_us"] > 0 and sv["srtt_us"] > 0, (cli, sv))
    s.proc.stdin.write("close\n")
    s.proc.stdin.flush()
    s.wait(10)
    gone = tap.wait_until(lambda: not tap.conn_by_src(topo.meshctl_json(1, "conns"),
                                                      info["local"]))
    t.check("closed connection leaves meshctl conns", gone)

    # --- outside the mesh: a listener in the node's namespace
    node_ip = topo.node_ip(1)
    ns = topo.podtool(1, "xfer-server", "--port", 7002, "--count-conns", 1,
                      "--timeout", 60)
    ns.expect("listening")
    a, b = 5000, 70001
    r = topo.pod_run(p1, topo.podtool_argv("xfer", "--to", "%s:7002" % node_ip,
                                           "--pairs", "%d:%d" % (a, b)), timeout=30)
    c = tap.json_line(r.stdout)
    t.require("pod to node listener: %d bytes back" % b, c["received"] == b, c)
    ev = tap.wait_until(lambda: close_events(h, c["local"], c["peer"]))
    cli = [e for e in ev if e["role"] == "client"]
    t.check("pod to node listener: exactly one close event, the client's "
            "(the listener is not in the mesh cgroup)",
            len(ev) == 1 and len(cli) == 1, ev)
    if cli:
        cli = cli[0]
        t.eq("pod to node listener: path passthrough", cli["path"], "passthrough", cli)
        t.eq("pod to node listener: bytes from TCP counters are exact",
             (cli["bytes_sent"], cli["bytes_received"]), (a, b), cli)
        t.check("pod to node listener: srtt_us > 0 (%d)" % cli["srtt_us"],
                cli["srtt_us"] > 0, cli)

    # --- a pod of another node: meshed, not local, so not accelerated;
    # each node's meshd reports its own end
    srv = topo.podtool(remote, "xfer-server", "--port", 7003, "--count-conns", 1,
                       "--timeout", 60)
    srv.expect("listening")
    a, b = 4321, 98765
    c0 = tap.counters(topo, 1)
    r = topo.pod_run(p1, topo.podtool_argv("xfer", "--to", "%s:7003" % remote.ip,
                                           "--pairs", "%d:%d" % (a, b)), timeout=30)
    c = tap.json_line(r.stdout)
    c1 = tap.counters(topo, 1)
    t.require("cross-node xfer: %d bytes back" % b, c["received"] == b, c)
    ev1 = tap.wait_until(lambda: close_events(h, c["local"], c["peer"]))
    ev2 = tap.wait_until(lambda: close_events(h2, c["local"], c["peer"]))
    t.eq("cross-node: node1 logs one client event, passthrough, exact bytes",
         [(e["role"], e["path"], e["bytes_sent"], e["bytes_received"]) for e in ev1],
         [("client", "passthrough", a, b)], ev1)
    t.eq("cross-node: node2 logs one server event, passthrough, exact bytes",
         [(e["role"], e["path"], e["bytes_sent"], e["bytes_received"]) for e in ev2],
         [("server", "passthrough", b, a)], ev2)
    t.check("cross-node: srtt_us > 0 on both nodes",
            ev1 and ev2 and ev1[0]["srtt_us"] > 0 and ev2[0]["srtt_us"] > 0, (ev1, ev2))
    t.eq("cross-node: no sk_msg redirect on node1",
         c1["msg_redirect_bytes"] - c0["msg_redirect_bytes"], 0)

    # --- a live passthrough connection: counts while it is open
    topo.podtool(remote, "echo", "--port", 7004, "--timeout", 60).expect("listening")
    s = topo.podtool(p1, "session", "--to", "%s:7004" % remote.ip, stdin=True)
    info = s.expect("event")
    t.require("live cross-node session connected", info.get("event") == "connected", info)
    x1, x2 = s.cmd("xfer 3000"), s.cmd("xfer 777")
    t.check("live cross-node session echoes", x1.get("ok") and x2.get("ok"), (x1, x2))

    def live():
        return (tap.conn_by_src(topo.meshctl_json(1, "conns"), info["local"], info["peer"]),
                tap.conn_by_src(topo.meshctl_json(2, "conns"), info["peer"], info["local"]))

    def counts(recs):
        return [(c["role"], c["path"], c["tx_bytes"], c["rx_bytes"]) for c in recs]

    # give TCP time for its delayed ACKs: live counts may lag by one
    tap.wait_until(lambda: [counts(x) for x in live()] ==
                   [[("client", "passthrough", 3777, 3777)],
                    [("server", "passthrough", 3777, 3777)]], timeout=2, interval=0.1)
    cli, sv = live()
    t.eq("live passthrough client record (node1): role, path, tx/rx bytes",
         counts(cli), [("client", "passthrough", 3777, 3777)], cli)
    t.eq("live passthrough server record (node2): role, path, tx/rx bytes",
         counts(sv), [("server", "passthrough", 3777, 3777)], sv)
    s.proc.stdin.write("close\n")
    s.proc.stdin.flush()
    s.wait(10)


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=2)
