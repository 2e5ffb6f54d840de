#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Sockets outside the mesh cgroup are untouched (issue 2, e). Processes in
the pods' network namespaces but in a cgroup outside the node's (a sibling
cgroup "outside"): their connect() to the VIP is not load balanced (the
VIP has no route, so it fails), their pod-to-pod connection is not in
skm_conns, not redirected by sk_msg (its payload crosses the veth) and has
no close event - while a pod-to-pod connection of real pod processes,
running at the same time between the same namespaces, is all of these.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

MiB = 1 << 20
VIP = "10.96.0.10"


def body(t, topo):
    p1, p2 = topo.pods
    outside = topo.make_cgroup("outside")
    out1, out2 = (outside, p1.netns_path), (outside, p2.netns_path)

    topo.podtool(p2, "whoami", "--port", 8080, "--name", p2.name,
                 "--timeout", 100).expect("listening")
    cfg = topo.write_config(topo.config_path(), [
        {"name": "web", "vip": VIP, "ports": [{"port": 80, "targetPort": 8080}],
         "endpoints": [(p2.ip, 1)]}])
    h = topo.start_meshd(1, cfg)

    # --- the VIP: load balanced for the pod, not for the outsider
    r = topo.pod_run(p1, topo.podtool_argv("connect-many", "--to", "%s:80" % VIP,
                                           "--count", 5, "--greeting"), timeout=30)
    res = tap.json_line(r.stdout)
    t.eq("pod process: the VIP reaches the backend (control)", res["backends"],
         {p2.name: 5}, res)
    c0 = tap.counters(topo)
    r = topo.run(topo.where_argv(out1, topo.podtool_argv(
        "connect-many", "--to", "%s:80" % VIP, "--count", 5, "--greeting",
        "--io-timeout", 3)), timeout=60)
    res = tap.json_line(r.stdout)
    c1 = tap.counters(topo)
    t.check("outside process in the pod netns: connect to the VIP is not load "
            "balanced (fails: %s)" % res["errors"],
            res["backends"] == {} and sum(res["errors"].values()) == 5
            and "ECONNREFUSED" not in res["errors"], res)
    t.eq("... lb counters unchanged",
         (c1["lb_connect"], c1["lb_no_backend"]), (c0["lb_connect"], c0["lb_no_backend"]))

    # --- a pod-to-pod pair outside the mesh next to one inside it
    topo.podtool(out2, "echo", "--port", 7200, "--timeout", 100).expect("listening")
    topo.podtool(p2, "echo", "--port", 7201, "--timeout", 100).expect("listening")
    so = topo.podtool(out1, "session", "--to", "%s:7200" % p2.ip, stdin=True)
    sm = topo.podtool(p1, "session", "--to", "%s:7201" % p2.ip, stdin=True)
    io, im = so.expect("event"), sm.expect("event")
    t.require("both sessions connected",
              io.get("event") == "connected" and im.get("event") == "connected", (io, im))

    v0 = topo.link_stats(1, p1.host_veth)
    c0 = tap.counters(topo)
    xo = so.cmd("xfer %d" % (2 * MiB))
    v1 = topo.link_stats(1, p1.host_veth)
    xm = sm.cmd("xfer %d" % (2 * MiB))
    v2 = topo.link_stats(1, p1.host_veth)
    c1 = tap.counters(topo)
    t.check("both connections echo byte-exact", xo.get("ok") and xm.get("ok"), (xo, xm))

    conns = topo.meshctl_json(1, "conns")
    mine = [c for c in conns if io["local"] in (c["src"], c["dst"])]
    t.eq("outside connection is in no skm_conns record", mine, [])
    cli = tap.conn_by_src(conns, im["local"], im["peer"])
    srv = tap.conn_by_src(conns, im["peer"], im["local"])
    t.check("pod connection has a client and a server record, accelerated",
            len(cli) == 1 and len(srv) == 1 and cli[0]["path"] == "accelerated"
            and srv[0]["path"] == "accelerated", conns)

    d_out = (v1["rx_bytes"] - v0["rx_bytes"]) + (v1["tx_bytes"] - v0["tx_bytes"])
    d_mesh = (v2["rx_bytes"] - v1["rx_bytes"]) + (v2["tx_bytes"] - v1["tx_bytes"])
    t.check("outside payload crossed the veth (%d bytes >= 4 MiB): not redirected"
            % d_out, d_out >= 4 * MiB)
    t.check("pod payload did not cross the veth (%d bytes < 256 KiB)" % d_mesh,
            d_mesh < 256 * 1024)
    red = c1["msg_redirect_bytes"] - c0["msg_redirect_bytes"]
    t.check("sk_msg redirected the pod connection's 4 MiB and not the outsider's "
            "(+%d, expect 4 MiB)" % red, 4 * MiB <= red < 6 * MiB, (c0, c1))

    for s in (so, sm):
        s.proc.stdin.write("close\n")
        s.proc.stdin.flush()
        s.wait(10)
    # both ends' lines: the kernel sends the two close events apart, and
    # meshd reads the ring in batches
    tap.wait_until(lambda: len([e for e in h.access_events() if e["src"] == im["local"]]) >= 2)
    ev = h.access_events()
    t.eq("outside connection has no close event",
         [e for e in ev if io["local"] in (e["src"], e["dst"])], [])
    t.eq("pod connection has its two close events",
         sorted(e["role"] for e in ev if im["local"] in (e["src"], e["dst"])),
         ["client", "server"])


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=2)
