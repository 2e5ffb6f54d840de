#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Telemetry under a flood (issue 5): 20,000 short same-node connections.
The ring buffer, the access log and the metrics keep up or count what
they drop, exactly:

  close events counted in istio_tcp_connections_closed_total (both
  reporters) + skmesh_ringbuf_drops_total = 2 x connections (one event
  per socket end); access-log lines written + skmesh_access_log_dropped_total
  = events received; the lines in the file = skmesh_access_log_lines_total.

Scrapes during the flood all answer; meshd's RSS stays bounded. With
--metrics-max-series 2, label sets beyond the cap land in the overflow
series and the totals still add up. With meshd stopped and the ring
buffer over half full of close events, denials are skipped (counted)
rather than take the room close events need.

1 node x 3 pods, one meshd (--access-log-rate 2000, so the limit bites;
no per-pod shares, which test_pod_share.py covers).
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
from test_telemetry import parse_prom, total  # noqa: E402

FLOOD = 20000
RATE = 2000


def r_elapsed(r):
    """elapsed_s of a podtool connect-many run (inf when it printed none)."""
    try:
        return tap.json_line(r.stdout.strip().splitlines()[-1])["elapsed_s"]
    except (IndexError, KeyError, TypeError, ValueError):
        return float("inf")


def scrape(topo, n=1):
    r = subprocess.run(topo.node_argv(n, ["curl", "-sS", "--max-time", "10", "-o", "-",
                                          "-w", "\n#code %{http_code}\n",
                                          "http://127.0.0.1:15020/metrics"]),
                       capture_output=True, text=True, timeout=20)
    code = r.stdout.rsplit("#code ", 1)[-1].strip() if "#code" in r.stdout else "none"
    return code, parse_prom(r.stdout) if code == "200" else []


def body(t, topo):
    p1, p2, p3 = topo.node_pods(1)
    # p1 may not reach p3's port 7001 (for the denials at the end)
    cfg = topo.write_config(topo.config_path(), extra=(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: no-p1-7001, namespace: default}\n"
        "spec:\n  selector: {matchLabels: {app: %s}}\n  action: DENY\n"
        "  rules: [{from: [{source: {principals: [\"cluster.local/ns/default/sa/%s\"]}}],"
        " to: [{operation: {ports: [\"7001\"]}}]}]\n" % (p3.name, p1.name)))
    # no per-pod shares: one pod floods, and this test is about the
    # node-wide ring and log (test_pod_share.py is about the shares)
    h = topo.start_meshd(1, cfg, ["--access-log-rate", str(RATE),
                                  "--metrics-max-series", "2", "--events-per-pod", "0",
                                  "--access-log-pod-rate", "0"])
    for p in (p2, p3):
        topo.podtool(p, "sink", "--port", 7000, "--timeout", 300).expect("listening")

    code, before = scrape(topo)
    t.require("scrape before the flood", code == "200", code)
    rss0 = total(before, "process_resident_memory_bytes")
    drops0 = total(before, "skmesh_ringbuf_drops_total")

    # scrapes keep answering during the flood
    codes, stop = [], threading.Event()

    def scraper():
        while not stop.is_set():
            codes.append(scrape(topo)[0])
            time.sleep(0.2)
    th = threading.Thread(target=scraper)
    th.start()
    t0 = time.monotonic()
    procs = [topo.pod_popen(p1, topo.podtool_argv("connect-many", "--to", "%s:7000" % p.ip,
                                                  "--count", FLOOD // 2),
                            stdout=subprocess.PIPE, text=True)
             for p in (p2, p3)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    took = time.monotonic() - t0
    res = [tap.json_line(o.strip().splitlines()[-1]) if o.strip() else {} for o in outs]
    t.require("%d connections made in %.1f s, none failed" % (FLOOD, took),
              all(r.get("count") == FLOOD // 2 and not r.get("errors") for r in res), res)

    want_events = 2 * FLOOD
    after = []

    def settled():
        code, s = scrape(topo)
        if code != "200":
            return False
        after[:] = s
        closed = total(s, "istio_tcp_connections_closed_total")
        drops = total(s, "skmesh_ringbuf_drops_total") - drops0
        return closed + drops >= want_events
    ok = tap.wait_until(settled, timeout=20, interval=0.5)
    stop.set()
    th.join()
    s = after
    closed = total(s, "istio_tcp_connections_closed_total")
    opened = total(s, "istio_tcp_connections_opened_total")
    drops = total(s, "skmesh_ringbuf_drops_total") - drops0
    t.check("close events: istio closed (%d) + ring-buffer drops (%d) = 2 x %d exactly"
            % (closed, drops, FLOOD), ok and closed + drops == want_events)
    t.eq("istio opened = closed once all are closed", opened, closed)
    t.check("istio received bytes: none (the clients wrote nothing)",
            total(s, "istio_tcp_received_bytes_total") == 0)
    paths = total(s, "skmesh_connections_closed_total")
    t.eq("skmesh_connections_closed_total = events received", paths, closed)
    lines = total(s, "skmesh_access_log_lines_total")
    dropped = total(s, "skmesh_access_log_dropped_total")
    t.check("access log: lines written (%d) + dropped over the rate (%d) = events received"
            % (lines, dropped), lines + dropped == closed)
    t.check("the rate limit bit (%d lines/s over a %.1f s flood)" % (RATE, took),
            dropped > 0, dropped)
    with open(h.access_log) as f:
        in_file = sum(1 for l in f if '"event":"close"' in l)
    t.eq("the access-log file holds skmesh_access_log_lines_total lines", in_file, lines)
    t.check("meshd said how many lines it left out", "not written" in h.log_text())
    t.check("every scrape during the flood answered 200 (%d scrapes)" % len(codes),
            codes and all(c == "200" for c in codes), codes)

    # bounded label sets: 4 would exist (2 destinations x 2 reporters)
    t.eq("skmesh_metrics_series stays at --metrics-max-series 2",
         total(s, "skmesh_metrics_series"), 2)
    over = [l for n, l, v in s if n == "istio_tcp_connections_closed_total" and
            l.get("source_workload") == "unknown" and l.get("destination_workload") == "unknown"]
    t.check("the rest is counted in the overflow series (all labels unknown) and "
            "skmesh_metrics_series_overflow_total", over and
            total(s, "skmesh_metrics_series_overflow_total") > 0, over)

    rss1 = total(s, "process_resident_memory_bytes")
    # An ASan build keeps freed memory in its quarantine (256 MiB by
    # default) and adds shadow memory: its leaks are LeakSanitizer's to
    # find at exit; the bound here is for what it adds on top.
    asan = "libasan" in subprocess.run(["ldd", h.argv[0]], capture_output=True,
                                       text=True).stdout
    bound = (32 + (512 if asan else 0)) * 2**20
    t.check("meshd's RSS stays bounded: %.1f MiB -> %.1f MiB (< +%d MiB%s)"
            % (rss0 / 2**20, rss1 / 2**20, bound // 2**20,
               ", ASan build: its quarantine and shadow memory included" if asan else ""),
            rss1 - rss0 < bound)
    t.check("no connection left open in the records",
            total(s, "skmesh_connections_open") == 0)

    # --- denials use only the first half of the ring buffer: with meshd
    # stopped (the data path stays) close events fill it, and a denial
    # then is counted as skipped instead of taking the last room
    topo.stop_meshd(h)
    # a port of its own: the flood's 20,000 client ports to :7000 are still
    # in TIME_WAIT
    topo.podtool(p2, "sink", "--port", 7002, "--timeout", 300).expect("listening")
    c0 = tap.counters(topo, 1)
    r = topo.pod_run(p1, topo.podtool_argv("connect-many", "--to", "%s:7002" % p2.ip,
                                           "--count", 8000), timeout=240, check=False)
    d = topo.pod_run(p1, topo.podtool_argv("connect-many", "--to", "%s:7001" % p3.ip,
                                           "--count", 3), timeout=30, check=False)
    c1 = tap.counters(topo, 1)
    t.check("meshd stopped: 16,000 close events (%.1f s for 8,000 connections) wait in "
            "the ring, none dropped" % r_elapsed(r),
            c1["event_drop"] == c0["event_drop"] and '"errors": {}' in r.stdout,
            (c0["event_drop"], c1["event_drop"], r.stdout))
    t.check("... with the ring over half full, 3 denied connects (EPERM) are counted as "
            "deny_event_skipped, not sent: the close events keep the room",
            "EPERM" in d.stdout and c1["policy_deny"] - c0["policy_deny"] == 3 and
            c1["deny_event_skipped"] - c0["deny_event_skipped"] == 3,
            (d.stdout, c1["deny_event_skipped"] - c0["deny_event_skipped"]))


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=3)
