#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
The tunnel under load (issue 4, robustness): 2,000 concurrent tunnelled
connections with checksummed payloads complete with no corruption and no
stream left behind; an app that stops reading makes the sender stop (the
flow control holds end to end) and neither meshd's memory grows beyond
its windows and buffers.

2 nodes x 2 pods, a meshd on each node with a CA from `meshctl ca init`.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
from test_tunnel import start_mesh, tun_stats  # noqa: E402

N_CONNS = 2000
SIZE = 16384

RAISE_NOFILE = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
"""

ECHO_SERVER = RAISE_NOFILE + r"""
import asyncio, json, sys
async def handle(r, w):
    try:
        while True:
            b = await r.read(65536)
            if not b:
                break
            w.write(b)
            await w.drain()
        w.close()
    except OSError:
        pass
async def main():
    srv = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]), backlog=4096)
    print(json.dumps({"listening": int(sys.argv[2])}), flush=True)
    await asyncio.sleep(float(sys.argv[3]))
asyncio.run(main())
"""

MANY_CLIENT = RAISE_NOFILE + r"""
import asyncio, hashlib, json, os, sys
host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
async def one(i, opened, all_open):
    data = os.urandom(size)
    try:
        r, w = await asyncio.open_connection(host, port)
    except OSError as e:
        all_open.set()
        return repr(e)
    opened.append(i)
    if len(opened) == n:
        all_open.set()
    try:
        await all_open.wait()      # every connection is open before data moves
        w.write(data)
        await w.drain()
        w.write_eof()
        got = await r.read(-1)
        w.close()
        return got == data
    except OSError as e:
        return repr(e)
async def main():
    opened, all_open = [], asyncio.Event()
    tasks = [asyncio.create_task(one(i, opened, all_open)) for i in range(n)]
    res = await asyncio.gather(*tasks)
    errs = [x for x in res if x is not True]
    print(json.dumps({"ok": sum(1 for x in res if x is True), "n": n,
                      "errors": errs[:3]}))
asyncio.run(main())
"""

STALL_SERVER = r"""
import json, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
print(json.dumps({"listening": int(sys.argv[2])}), flush=True)
c, _ = s.accept()
time.sleep(float(sys.argv[3]))      # never reads
"""

PUSH_CLIENT = r"""
import json, socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setblocking(False)
buf = b"x" * 65536
sent, t0, last_progress = 0, time.monotonic(), time.monotonic()
while time.monotonic() - t0 < float(sys.argv[3]):
    try:
        sent += s.send(buf)
        last_progress = time.monotonic()
    except BlockingIOError:
        time.sleep(0.01)
print(json.dumps({"sent": sent, "stalled_s": round(time.monotonic() - last_progress, 2)}),
      flush=True)
time.sleep(float(sys.argv[4]))
"""


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def body(t, topo):
    a1, a2 = topo.node_pods(1)
    b1, b2 = topo.node_pods(2)
    cfg = topo.write_config(topo.config_path())
    _, hs = start_mesh(topo, cfg)
    py = sys.executable

    # --- 2000 concurrent connections, checksummed
    srv = topo.pod_popen(b1, [py, "-c", ECHO_SERVER, b1.ip, "7300", "300"],
                         stdout=subprocess.PIPE, text=True)
    t.require("asyncio echo server listens", "listening" in srv.stdout.readline())
    rss0 = {n: rss_kb(h.pid) for n, h in hs.items()}
    t0 = time.monotonic()
    r = topo.pod_run(a1, [py, "-c", MANY_CLIENT, b1.ip, "7300", str(N_CONNS), str(SIZE)],
                     timeout=240, check=False)
    dt = time.monotonic() - t0
    res = tap.json_line(r.stdout) if r.stdout.strip() else {}
    t.check("%d concurrent tunnelled connections, every echo exact (%.1f s)"
            % (N_CONNS, dt), res.get("ok") == N_CONNS, "%s\n%s" % (res, r.stderr[-2000:]))
    st1 = tun_stats(1, topo)
    t.check("node1 carried them on pooled connections (streams ok %d, conns %d)"
            % (st1["out_streams_ok"], st1["conns_open"]),
            st1["out_streams_ok"] >= N_CONNS and st1["conns_open"] <= N_CONNS // 100 + 2,
            st1)
    t.check("no stream left open on either node", tap.wait_until(
        lambda: tun_stats(1, topo)["streams_open"] == 0 and
        tun_stats(2, topo)["streams_open"] == 0, timeout=10),
        (tun_stats(1, topo), tun_stats(2, topo)))
    rss1 = {n: rss_kb(h.pid) for n, h in hs.items()}
    t.diag("meshd VmRSS before/after, KiB: %s / %s" % (rss0, rss1))
    srv.terminate()

    # --- an app that stops reading: the sender is held back, memory bounded
    stall = topo.pod_popen(b2, [py, "-c", STALL_SERVER, b2.ip, "7301", "60"],
                           stdout=subprocess.PIPE, text=True)
    t.require("stalled server listens", "listening" in stall.stdout.readline())
    rss0 = {n: rss_kb(h.pid) for n, h in hs.items()}
    push = topo.pod_popen(a2, [py, "-c", PUSH_CLIENT, b2.ip, "7301", "6", "20"],
                          stdout=subprocess.PIPE, text=True)
    line = push.stdout.readline()
    res = json.loads(line) if line.strip() else {}
    rss1 = {n: rss_kb(h.pid) for n, h in hs.items()}
    sent = res.get("sent", 0)
    t.check("the sender is stopped by the stalled reader (%.1f MiB accepted, no "
            "progress for the last %s s)" % (sent / 1048576, res.get("stalled_s")),
            0 < sent < 96 * 1048576 and res.get("stalled_s", 0) >= 2, res)
    grow = {n: (rss1[n] - rss0[n]) // 1024 for n in hs}
    t.check("neither meshd grew more than its windows allow (MiB: %s)" % grow,
            all(g < 48 for g in grow.values()), (rss0, rss1))
    push.kill()
    stall.kill()
    t.check("both meshd still run", all(h.proc.poll() is None for h in hs.values()))


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=2)
