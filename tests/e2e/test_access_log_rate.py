#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
The access log under a flood: with --access-log-rate 20, 300 short
connections (600 closed sockets) in well under a second give about one
second's worth of lines (the bucket holds 20), meshd says how many it left
out, the kernel dropped no event (event_drop stays 0), and once the flood
is over a new connection is logged again. Close events reach meshd in
batches (a wake-up per ~64 events, a read every 50 ms): a single
connection's lines still appear within a fraction of a second.

1 node x 2 pods.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

RATE = 20


def body(t, topo):
    p1, p2 = topo.pods
    cfg = topo.write_config(topo.config_path())
    h = topo.start_meshd(1, cfg, ["--access-log-rate", str(RATE)])
    srv = topo.podtool(p2, "echo", "--port", 7000, "--timeout", 100)
    srv.expect("listening")

    # one connection: logged promptly although events are batched
    t0 = time.monotonic()
    topo.pod_run(p1, topo.podtool_argv("connect-many", "--to", "%s:7000" % p2.ip,
                                      "--count", 1), timeout=30)
    got = tap.wait_until(lambda: len(h.access_events()) >= 2, timeout=3)
    t.check("a lone connection's two lines arrive within %.2f s" % (time.monotonic() - t0),
            got, h.access_events())

    c0 = tap.counters(topo, 1)
    n0 = len(h.access_events())
    topo.pod_run(p1, topo.podtool_argv("connect-many", "--to", "%s:7000" % p2.ip,
                                      "--count", 300), timeout=60)
    time.sleep(1.5)     # the timer read and the once-a-second report
    c1 = tap.counters(topo, 1)
    lines = len(h.access_events()) - n0
    closed = c1["conn_close"] - c0["conn_close"]
    t.check("the kernel closed 600 records and dropped no event (%d, drops %d)"
            % (closed, c1["event_drop"] - c0["event_drop"]),
            closed >= 600 and c1["event_drop"] == c0["event_drop"], (c0, c1))
    t.check("the log kept to the rate: %d lines for %d closed sockets" % (lines, closed),
            0 < lines <= 3 * RATE, lines)
    t.check("meshd reported what it left out", "lines over --access-log-rate" in h.log_text(),
            h.log_tail())

    time.sleep(1.2)     # the bucket refills
    n1 = len(h.access_events())
    topo.pod_run(p1, topo.podtool_argv("connect-many", "--to", "%s:7000" % p2.ip,
                                      "--count", 1), timeout=30)
    t.check("after the flood a connection is logged again",
            tap.wait_until(lambda: len(h.access_events()) >= n1 + 2, timeout=3))


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=2)
