#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
One pod cannot blind the node: the connection table (skm_conns), the ring
buffer of close events and the access log are shared by every pod of the
node, and each pod gets a share of them (--conns-per-pod,
--events-per-pod, --access-log-pod-rate). A flooding pod uses up its own
share only: its neighbour's connections keep their records, close events,
metrics and log lines, and what the flooder was refused is counted
(skmesh_pod_share_refused_total), so the totals still add up.

1 node x 3 pods: A floods B, C is A's neighbour and also talks to B.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402
from test_telemetry import total  # noqa: E402
from test_telemetry_flood import scrape  # noqa: E402

RAW = os.path.join(HERE, "..", "tools", "rawtcp.py")
CONNS = 40          # records per pod (a same-node connection has two)
EVENTS = 200        # close events a second per pod
LOG = 50            # access-log lines a second per pod
FLOOD = 2000        # A's short connections


def body(t, topo):
    A, B, C = topo.node_pods(1)
    cfg = topo.write_config(topo.config_path())
    h = topo.start_meshd(1, cfg, ["--conns-per-pod", str(CONNS),
                                  "--events-per-pod", str(EVENTS),
                                  "--access-log-pod-rate", str(LOG),
                                  "--access-log-rate", "100000"])
    topo.podtool(B, "sink", "--port", 7000, "--timeout", 110).expect("listening")

    def hold(pod, count):
        tp = topolib.ToolProc(topo, topo.where_argv(pod, [
            sys.executable, RAW, "hold", "--to", "%s:7000" % B.ip, "--count", str(count),
            "--timeout", "100"]), stdin=True, name="hold")
        return tp, tp.expect("held", 60)

    def refused(s, who, table):
        return total(s, "skmesh_pod_share_refused_total", workload=who, table=table)

    def records(src_ip):
        return [c for c in topo.meshctl_json(1, "conns")
                if c["src"].startswith(src_ip + ":") or c["dst"].startswith(src_ip + ":")]

    # --- the connection table
    ha, r = hold(A, 60)
    t.require("A holds 60 connections to B", r["held"] == 60, r)
    hc, rc = hold(C, 3)
    t.require("C holds 3 connections to B", rc["held"] == 3, rc)
    _, s = scrape(topo)
    recs_a, recs_c = records(A.ip), records(C.ip)
    t.eq("A's connections hold its share of records and no more (both ends of a "
         "same-node connection count for the pod that opened it)", len(recs_a), CONNS,
         recs_a[:3])
    t.eq("... the %d it was refused are counted for A" % (2 * 60 - CONNS),
         refused(s, A.name, "connections"), 2 * 60 - CONNS)
    t.eq("C, A's neighbour, still gets a record for both ends of each connection",
         len(recs_c), 6, recs_c)
    t.eq("... and is refused nothing", refused(s, C.name, "connections"), 0)
    for tp in (ha, hc):
        tp.proc.stdin.close()
        tp.expect("closed", 30)
    t.check("once A's connections close, its share is free again: a new one is recorded",
            tap.wait_until(lambda: not records(A.ip), timeout=5) is not None and
            hold(A, 1)[1]["held"] == 1 and
            tap.wait_until(lambda: len(records(A.ip)) == 2, timeout=5),
            lambda: json.dumps(records(A.ip)))

    # --- close events and the access log under A's flood, with no share
    # of records (the server's ends of A's short connections linger in
    # CLOSE_WAIT and would use up a small one first)
    topo.stop_meshd(h)
    h = topo.start_meshd(1, cfg, ["--conns-per-pod", "0",
                                  "--events-per-pod", str(EVENTS),
                                  "--access-log-pod-rate", str(LOG),
                                  "--access-log-rate", "100000"])
    _, s0 = scrape(topo)
    ev0 = refused(s0, A.name, "events")
    closed0 = total(s0, "istio_tcp_connections_closed_total")
    drops0 = total(s0, "skmesh_ringbuf_drops_total")
    log0 = len(h.access_events())
    flood = topo.pod_popen(A, topo.podtool_argv("connect-many", "--to", "%s:7000" % B.ip,
                                                "--count", FLOOD),
                           stdout=subprocess.PIPE, text=True)
    c_run = topo.pod_run(C, topo.podtool_argv("connect-many", "--to", "%s:7000" % B.ip,
                                              "--count", 10), timeout=60)
    out, _ = flood.communicate(timeout=120)
    fl = tap.json_line(out.strip().splitlines()[-1])
    t.require("A made %d connections, C 10, none failed" % FLOOD,
              fl.get("count") == FLOOD and not fl.get("errors") and
              '"errors": {}' in c_run.stdout, (fl, c_run.stdout))
    want = 2 * (FLOOD + 10)
    got = []

    def settled():
        code, s = scrape(topo)
        if code != "200":
            return False
        got[:] = s
        return (total(s, "istio_tcp_connections_closed_total") - closed0 +
                total(s, "skmesh_ringbuf_drops_total") - drops0 +
                refused(s, A.name, "events") - ev0 +
                refused(s, C.name, "events")) >= want
    ok = tap.wait_until(settled, timeout=20, interval=0.5)
    s = got
    closed = total(s, "istio_tcp_connections_closed_total") - closed0
    drops = total(s, "skmesh_ringbuf_drops_total") - drops0
    ev_a = refused(s, A.name, "events") - ev0
    t.check("close events: received (%d) + ring drops (%d) + refused over a pod's share "
            "(%d) = 2 x %d exactly" % (closed, drops, ev_a, FLOOD + 10),
            ok and closed + drops + ev_a + refused(s, C.name, "events") == want,
            lambda: "\n".join("%s %s %s" % x for x in s if "share" in x[0] or "ringbuf" in x[0]
                              or x[0] == "skmesh_datapath_events_total"))
    t.check("A's flood was held to its share (%d close events refused)" % ev_a, ev_a > 0)
    t.eq("C was refused no close event", refused(s, C.name, "events"), 0)
    c_closed = (total(s, "istio_tcp_connections_closed_total", source_workload=C.name) -
                total(s0, "istio_tcp_connections_closed_total", source_workload=C.name))
    t.eq("Istio's metrics count each of C's 10 connections, from both reporters",
         c_closed, 20)

    lines = h.access_events()[log0:]
    c_lines = [e for e in lines if e.get("src", "").startswith(C.ip + ":")]
    a_lines = [e for e in lines if e.get("src", "").startswith(A.ip + ":")]
    t.eq("the access log has both lines of each of C's 10 connections", len(c_lines), 20)
    t.check("A's lines are held to its share of the log (%d lines for %d events)"
            % (len(a_lines), 2 * FLOOD - ev_a), 0 < len(a_lines) < 2 * FLOOD - ev_a)


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=3)
