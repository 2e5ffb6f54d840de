#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Bounds on every HBONE peer (issue 13): one peer with a valid mesh
certificate, on node3 (no meshd there), floods node2's meshd with
tests/tools/hbone-flood.py (Python's ssl and h2) while pods of node1
talk to pods of node2 through the tunnel:

- streams: 12 TLS connections x 40 CONNECT streams to an echo, each
  sending 2 MiB, never handing back flow-control window, and after 3 s
  not reading its socket at all (slow readers);
- resets: HEADERS + RST_STREAM pairs as fast as it can;
- handshakes: full handshakes one after the other;
- stall: 60 TCP connections that never start their handshake.

meshd node2 runs with small bounds so that each is reached:
--tunnel-max-conns-per-peer 24, --tunnel-max-handshakes 16 (so one
address may hold 8), --tunnel-handshake-timeout 3, --tunnel-conn-buffer
1 MiB, --tunnel-buffer-total 8 MiB, --tunnel-reset-burst 200,
--tunnel-reset-rate 20, and no handshake rate (--tunnel-handshake-rate
100000: the flood's modes share one address).

Then node2's meshd again with --tunnel-handshake-rate 10: of 60 full
handshakes one after the other from one address, about a second's worth
are served and the rest refused at once (in_handshake_rate); a second
later that address is served again.

Checks: the pods' sessions (python, through node1's and node2's meshd)
and curl keep working during the whole flood with exact echoes; each
bound is counted when hit (in_peer_conn_limit or in_handshake_limit,
handshake_timeouts, buffer_paused, h2_errors) and shown in /metrics;
the stalled connections beyond the handshake share are refused at once
and the rest closed by the timeout; meshd node2's memory high-water
mark (VmHWM) grows by less than MEM_BOUND_MIB over its size before the
flood; the log lines about refusals are rate-limited (a "suppressed"
summary, not one line each); everything is released afterwards.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402
from test_tunnel import tun_stats  # noqa: E402
from test_tunnel_security import SYS_PY, meshctl_ca, mkcert  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FLOOD = os.path.join(HERE, "..", "tools", "hbone-flood.py")
LIMITS = ["--tunnel-max-conns-per-peer", "24", "--tunnel-max-handshakes", "16",
          "--tunnel-handshake-timeout", "3", "--tunnel-conn-buffer", str(1 << 20),
          "--tunnel-buffer-total", str(8 << 20), "--tunnel-reset-burst", "200",
          "--tunnel-reset-rate", "20", "--tunnel-handshake-rate", "100000"]
# buffer total (8) + per connection TLS/HTTP/2 state and read buffers for
# ~40 connections and ~500 streams, and the allocator's slack
MEM_BOUND_MIB = 48


def proc_mem(pid):
    """VmRSS and VmHWM of PID in KiB."""
    with open("/proc/%d/status" % pid) as f:
        v = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    return int(v["VmRSS"].split()[0]), int(v["VmHWM"].split()[0])


def body(t, topo):
    a1, a2 = topo.node_pods(1)
    b1, b2 = topo.node_pods(2)
    c1 = topo.node_pods(3)[0]
    cfg = topo.write_config(topo.config_path())
    ca = meshctl_ca(topo, os.path.join(topo.logdir, "ca"))
    root = os.path.join(ca, "root-cert.pem")
    args = lambda n: ["--ca-dir", ca, "--cert-dir", os.path.join(topo.logdir, "certs-n%d" % n)]
    h2 = topo.start_meshd(2, cfg, args(2) + LIMITS)
    h1 = topo.start_meshd(1, cfg, args(1))
    for p in (b1, b2):
        topo.podtool(p, "echo", "--port", 7000, "--timeout", 300).expect("listening")
    web = topo.pod_popen(b2, [sys.executable, "-m", "http.server", "8080", "--bind", b2.ip,
                              "--directory", topo.logdir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    page = os.path.join(topo.logdir, "page.bin")
    with open(page, "wb") as f:
        f.write(os.urandom(300000))
    evil = mkcert(topo, ca, "default", c1.name, os.path.join(topo.logdir, "evil"))

    # --- the pods' traffic, before and during the flood
    sess = {}
    for src, dst in ((a1, b1), (a2, b2)):
        s = topo.podtool(src, "session", "--to", "%s:7000" % dst.ip, stdin=True)
        s.expect("event", timeout=20)
        sess[src.name] = s
    warm = [s.cmd("xfer 200000") for s in sess.values()]
    t.require("pods talk through the tunnel before the flood",
              all(r.get("ok") is True for r in warm), warm)
    t.require("curl works before the flood", tap.wait_until(
        lambda: topo.pod_run(a1, ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w",
                                  "%{http_code}", "http://%s:8080/page.bin" % b2.ip],
                             check=False).stdout == "200", timeout=10, interval=0.5))
    time.sleep(0.5)
    rss0, hwm0 = proc_mem(h2.pid)
    s0 = tun_stats(2, topo)

    def flood(mode, *extra, timeout=40):
        argv = [SYS_PY, FLOOD, mode, "--to", "%s:15008" % b1.ip, "--cert", evil[0],
                "--key", evil[1], "--ca", root] + [str(x) for x in extra]
        return topo.node_popen(3, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)

    t0 = time.monotonic()
    floods = {
        "streams": flood("streams", "--conns", 12, "--streams", 40, "--bytes", 2 << 20,
                         "--hold", 14, "--stop-reading-after", 3,
                         "--authority", "%s:7000" % b1.ip),
        "resets": flood("resets", "--n", 5000, "--authority", "%s:7000" % b1.ip),
        "handshakes": flood("handshakes", "--n", 150),
    }
    time.sleep(4)
    floods["stall"] = flood("stall", "--n", 60, "--hold", 5)

    # the pods go on while it lasts
    during, curls, fresh = [], [], []
    while any(p.poll() is None for p in floods.values()) and time.monotonic() - t0 < 35:
        for s in sess.values():
            during.append(s.cmd("xfer 100000", timeout=20))
        r = topo.pod_run(a1, ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w",
                              "%{http_code}", "http://%s:8080/page.bin" % b2.ip],
                         check=False)
        curls.append(r.stdout)
        n = topo.podtool(a2, "session", "--to", "%s:7000" % b1.ip, stdin=True)
        first = n.next(timeout=20)
        fresh.append(n.cmd("xfer 50000") if first.get("event") == "connected" else first)
        n.cmd("close")
        time.sleep(0.2)
    rss1, hwm1 = proc_mem(h2.pid)
    res = {}
    for k, p in floods.items():
        try:
            out, err = p.communicate(timeout=30)
        finally:
            topo._procs.remove(p)
        lines = [l for l in out.splitlines() if l.startswith("{")]
        res[k] = json.loads(lines[-1]) if lines else {"rc": p.returncode, "err": err[-500:]}
    took = time.monotonic() - t0
    s1 = tun_stats(2, topo)
    d = {k: s1.get(k, 0) - s0.get(k, 0) for k in s1}

    t.check("the flood ran its course in under 60 s (%.0f s)" % took, took < 60, res)
    t.check("the flood's streams were served (200) before they were held back",
            res["streams"].get("streams_200", 0) > 0, res["streams"])
    t.check("pods' sessions through the tunnel kept working during the flood: %d "
            "exact echoes" % len(during),
            len(during) >= 4 and all(r.get("ok") is True for r in during),
            [r for r in during if r.get("ok") is not True][:3])
    t.check("new pod connections to the flooded pod kept working: %d" % len(fresh),
            len(fresh) >= 2 and all(r.get("ok") is True for r in fresh),
            [r for r in fresh if r.get("ok") is not True][:3])
    t.check("curl through the tunnel kept working: %d x 200" % len(curls),
            len(curls) >= 2 and all(c == "200" for c in curls), curls)
    t.check("slow readers: reads paused on a full buffer (buffer_paused +%d)"
            % d["buffer_paused"], d["buffer_paused"] > 0, d)
    t.check("rapid resets: meshd sent GOAWAY with an error and closed the connection "
            "long before all were sent (%s; h2_errors +%d)" % (res["resets"], d["h2_errors"]),
            res["resets"].get("closed") is True and res["resets"].get("goaway") != 0 and
            res["resets"].get("sent", 5000) < 5000 and d["h2_errors"] >= 1 and
            "GOAWAY" in h2.log_text(), (res["resets"], d))
    st = res["stall"]
    t.check("stalled handshakes: at most 8 held from one address, the rest refused at "
            "once (%s)" % st,
            # reset as it is accepted: before connect() returned, or just after
            st.get("connect_failed", 0) + st.get("closed_at_once", 0) >= 60 - 8 - 12 and
            st.get("closed_later", 99) <= 8 and st.get("still_open", 1) == 0, st)
    t.check("... those held were closed by the handshake timeout (handshake_timeouts +%d)"
            % d["handshake_timeouts"], d["handshake_timeouts"] >= 1 and
            st.get("closed_later", 0) >= 1, (st, d))
    t.check("refusals counted: in_handshake_limit +%d, in_peer_conn_limit +%d"
            % (d["in_handshake_limit"], d["in_peer_conn_limit"]),
            d["in_handshake_limit"] + d["in_peer_conn_limit"] >= 30, d)
    t.check("full handshakes one after another still got through (%s)" % res["handshakes"],
            res["handshakes"].get("done", 0) > 0, res["handshakes"])
    grow = (hwm1 - rss0) / 1024.0
    # An ASan build keeps freed memory in its quarantine (256 MiB by
    # default) and adds shadow memory; the bound is for what it adds on
    # top (its leaks are LeakSanitizer's to find at exit).
    asan = "libasan" in subprocess.run(["ldd", os.path.join(topolib.build_dir(), "meshd")],
                                       capture_output=True, text=True).stdout
    bound = MEM_BOUND_MIB + (512 if asan else 0)
    t.check("meshd node2's memory stayed bounded: VmHWM %.1f MiB, %.1f MiB over its "
            "%.1f MiB before the flood (bound %d MiB%s)"
            % (hwm1 / 1024.0, grow, rss0 / 1024.0, bound,
               ", ASan build: its quarantine and shadow memory included" if asan else ""),
            grow < bound, (rss0, hwm0, rss1, hwm1))
    r = topo.node_run(2, ["curl", "-sS", "--max-time", "5",
                          "http://127.0.0.1:15020/metrics"], check=False)
    t.check("/metrics shows the bounds hit",
            all(('skmesh_tunnel_events_total{event="%s"}' % e) in r.stdout
                for e in ("buffer_paused", "h2_errors", "in_handshake_limit",
                          "handshake_timeouts", "in_peer_conn_limit")), r.stdout[-800:])
    log = h2.log_text()
    t.check("refusals are logged rate-limited: a 'suppressed' summary, far fewer lines "
            "than refusals", "suppressed" in log and
            log.count("refused a connection") < d["in_handshake_limit"] +
            d["in_peer_conn_limit"], h2.log_tail(8))

    for s in sess.values():
        s.cmd("close")
    t.check("the flood's connections and streams are all released",
            tap.wait_until(lambda: tun_stats(2, topo)["streams_open"] == 0, timeout=15),
            tun_stats(2, topo))
    t.check("both meshd survived", h1.proc.poll() is None and h2.proc.poll() is None,
            h2.log_tail())
    web.terminate()

    # --- the rate of new handshakes from one address
    topo.stop_meshd(h2)
    h2 = topo.start_meshd(2, cfg, args(2) + LIMITS[:-2] + ["--tunnel-handshake-rate", "10"])
    s0 = tun_stats(2, topo)
    p = flood("handshakes", "--n", 60)
    hs = tap.json_line(p.communicate(timeout=60)[0].strip().splitlines()[-1])
    d = tun_stats(2, topo)["in_handshake_rate"] - s0.get("in_handshake_rate", 0)
    t.check("--tunnel-handshake-rate 10: of 60 handshakes one after the other %d were "
            "served (a second's worth, and what the second refilled) and %d refused "
            "(in_handshake_rate +%d)" % (hs.get("done", -1), hs.get("refused", -1), d),
            5 <= hs.get("done", 0) <= 30 and hs.get("refused", 0) >= 30 and d >= 30, hs)
    time.sleep(1.5)
    p = flood("handshakes", "--n", 3)
    hs = tap.json_line(p.communicate(timeout=30)[0].strip().splitlines()[-1])
    t.eq("... and a second later that address is served again", hs.get("done"), 3, hs)


if __name__ == "__main__":
    tap.main(body, nodes=3, pods=2)
