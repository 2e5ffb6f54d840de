#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
meshd restart (issue 2, d): a connection opened before `kill -9 meshd`
keeps transferring - still redirected by sk_msg - while meshd is gone;
a restarted meshd reuses the pins (each link once, nothing attached twice)
and sees the old connection in `meshctl conns`; new connections work;
`meshd --cleanup` then leaves no pin and no program on the cgroup.
"""
import collections
import json
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

MiB = 1 << 20


def cgroup_progs(topo):
    """`bpftool cgroup show` of the node cgroup: [(attach_type, name)]."""
    r = topolib.sh(["bpftool", "-j", "cgroup", "show", topo.node_cgroup(1)])
    out = r.stdout.strip()
    return sorted((p["attach_type"], p.get("name", "")) for p in json.loads(out or "[]"))


def links(topo):
    st = topo.meshctl_json(1, "status")
    return sorted((l["name"], l["id"], l["attach_type"], l["cgroup_id"])
                  for l in st["links"])


def dup_types(progs):
    return [k for k, v in collections.Counter(a for a, _ in progs).items() if v > 1]


def body(t, topo):
    p1, p2 = topo.pods
    cfg = topo.write_config(topo.config_path())
    h = topo.start_meshd(1, cfg)
    progs0 = cgroup_progs(topo)
    links0 = links(topo)
    t.diag("cgroup programs: %s" % progs0)
    t.check("meshd attached programs to the node cgroup, each type once",
            progs0 and not dup_types(progs0), progs0)

    topo.podtool(p2, "echo", "--port", 7100, "--timeout", 120).expect("listening")
    old = topo.podtool(p1, "session", "--to", "%s:7100" % p2.ip,
                       "--io-timeout", 20, stdin=True)
    info = old.expect("event")
    t.require("connection opened", info.get("event") == "connected", info)
    x = old.cmd("xfer %d" % MiB)
    t.check("transfer before kill -9", x.get("ok"), x)

    c0 = tap.counters(topo)
    rc = topo.stop_meshd(h, signal.SIGKILL)
    t.eq("meshd killed by SIGKILL", rc, -signal.SIGKILL)

    x = old.cmd("xfer %d" % (4 * MiB))
    t.check("transfer while meshd is dead", x.get("ok"), x)
    c1 = tap.counters(topo)
    grew = c1["msg_redirect_bytes"] - c0["msg_redirect_bytes"]
    t.check("still accelerated without meshd: msg_redirect_bytes +%d >= %d "
            "(4 MiB each way, read from the pins)" % (grew, 8 * MiB),
            grew >= 8 * MiB, (c0, c1))
    rec = tap.conn_by_src(topo.meshctl_json(1, "conns"), info["local"], info["peer"])
    t.check("without meshd the pinned conns map still counts: tx_bytes = 5 MiB",
            len(rec) == 1 and rec[0]["tx_bytes"] == 5 * MiB, rec)
    t.eq("programs stay attached while meshd is dead", cgroup_progs(topo), progs0)

    h = topo.start_meshd(1, cfg)
    t.check("meshd restarted with the same arguments", True)
    links1 = links(topo)
    names = [n for n, _, _, _ in links1]
    cg = [a for _, _, a, cgid in links1 if cgid]
    t.check("meshctl status: each link exactly once, each cgroup attach type once",
            cg and len(names) == len(set(names)) and len(cg) == len(set(cg)), links1)
    t.eq("the same pinned links are reused (names and ids)", links1, links0)
    progs1 = cgroup_progs(topo)
    t.check("bpftool cgroup show: each attach type once after restart",
            progs1 and not dup_types(progs1), progs1)
    t.eq("bpftool cgroup show: same attach types as before the restart",
         [a for a, _ in progs1], [a for a, _ in progs0])

    conns = topo.meshctl_json(1, "conns")
    rec = tap.conn_by_src(conns, info["local"], info["peer"])
    t.check("restarted meshd: meshctl conns lists the old connection, accelerated",
            len(rec) == 1 and rec[0]["path"] == "accelerated", conns)

    c2 = tap.counters(topo)
    x = old.cmd("xfer %d" % MiB)
    t.check("old connection transfers after the restart", x.get("ok"), x)
    c3 = tap.counters(topo)
    t.check("... still through sk_msg",
            c3["msg_redirect_bytes"] - c2["msg_redirect_bytes"] >= 2 * MiB, (c2, c3))

    new = topo.podtool(p1, "session", "--to", "%s:7100" % p2.ip, stdin=True)
    ninfo = new.expect("event")
    x = new.cmd("xfer 65536") if ninfo.get("event") == "connected" else ninfo
    t.check("a new connection works after the restart", x.get("ok"), x)
    rec = tap.conn_by_src(topo.meshctl_json(1, "conns"), ninfo.get("local"))
    t.check("... and is accelerated", len(rec) == 1 and rec[0]["path"] == "accelerated", rec)

    for s in (old, new):
        s.proc.stdin.write("close\n")
        s.proc.stdin.flush()
        s.wait(10)
    ev = tap.wait_until(lambda: [e for e in h.access_events()
                                 if e["role"] == "client" and e["src"] == info["local"]])
    t.check("the old connection's close event counts every byte across the "
            "restart (6 MiB each way)",
            len(ev) == 1 and ev[0]["bytes_sent"] == 6 * MiB
            and ev[0]["bytes_received"] == 6 * MiB, ev)

    # --- cleanup detaches and unpins everything
    topo.stop_meshd(h, signal.SIGTERM)
    r = topo.node_run(1, [os.path.join(topolib.build_dir(), "meshd"), "--cleanup",
                          "--bpffs", topo.pin_dir(1), "--cgroup", topo.node_cgroup(1)],
                      check=False, timeout=30)
    t.eq("meshd --cleanup exits 0", r.returncode, 0, r.stderr)
    pins = []
    for root, dirs, files in os.walk(topo.pin_dir(1)):
        pins += [os.path.join(root, f) for f in files]
    t.eq("meshd --cleanup leaves no pin under %s" % topo.pin_dir(1), pins, [])
    t.eq("meshd --cleanup leaves no program on the node cgroup", cgroup_progs(topo), [])


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=2)
