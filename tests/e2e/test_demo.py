#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
make demo (issue 5): scripts/demo.sh, run as a user runs it, finishes with
its summary and real results - curl's HTTP 200 same-node and cross-node,
redis-benchmark's req/s lines, the two denied connections, a `meshctl
conns` table with live rows, `meshctl services`, the counters, the metrics
when meshd serves them - and leaves nothing behind: no namespace, cgroup,
pin, host qdisc or veth, state or temporary file, and no process it started
(every process it starts carries a marker in its environment).

Then twice more, interrupted as Ctrl-C does (SIGINT to its process group):
once while it builds the topology, once in the middle of its traffic. Each
time it must stop at once and still leave nothing behind.

Builds no topology of its own: the demo does.
"""
import os
import re
import select
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

DEMO = os.path.join(topolib.REPO, "scripts", "demo.sh")
MARK_VAR = "SKM_DEMO_TEST_MARK"
TIMEOUT = 90            # a full run; the demo aims at well under a minute
PROC_NAMES = re.compile(r"redis-server|redis-cli|redis-benchmark|http\.server|meshd|curl")
SKM_NAME = re.compile(r"skm([0-9a-f]{4})")

_running = []           # the demo being run, for the signal handler


# --- what exists on the machine --------------------------------------------

def _lines(argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    return set(l.strip() for l in r.stdout.splitlines() if l.strip())


def _procs():
    """pid -> (cmdline, has the marker of a demo run in its environment)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open("/proc/%s/environ" % d, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        marks = [e.split(b"=", 1)[1].decode() for e in env
                 if e.startswith(MARK_VAR.encode() + b"=")]
        out[int(d)] = (cmd, marks[0] if marks else None)
    return out


def snapshot():
    cg = topolib.cg2_root()
    return {
        "netns": _lines(["ip", "netns", "list"]),
        "cgroup": set(os.path.join(cg, d) for d in os.listdir(cg)
                      if d.startswith("skm") and os.path.isdir(os.path.join(cg, d))),
        "bpffs": set(os.path.join(topolib.BPFFS, d) for d in topolib._listdir(topolib.BPFFS)),
        "qdisc": _lines(["tc", "qdisc", "show"]),
        "veth": set(l.split(":")[1].strip() for l in
                    _lines(["ip", "-o", "link", "show", "type", "veth"])),
        "state": set(os.path.join(topolib.STATE_DIR, f)
                     for f in topolib._listdir(topolib.STATE_DIR)),
        "tmp": set(os.path.join("/tmp", f) for f in os.listdir("/tmp")
                   if f.startswith("skmesh-demo.") or re.match(r"skm[0-9a-f]{4}-logs-", f)),
        "proc": _procs(),
    }


def leftovers(before, after, mark, rid):
    """What the demo run left: new things of its own run id or of no live
    owner (other tests may run at the same time: their topologies have a
    live owner and are not ours), anything new on the host's own links,
    and every process with the run's marker."""
    left = []
    for kind in ("netns", "cgroup", "bpffs", "qdisc", "veth", "state", "tmp"):
        for item in sorted(after[kind] - before[kind]):
            m = SKM_NAME.search(item)
            if m and m.group(1) != rid and topolib._owner_alive(m.group(1)):
                continue        # a live topology of another test
            if kind == "tmp" and not m and mark not in item and \
                    not _demo_tmp_owner_dead(item):
                continue
            left.append("%s: %s" % (kind, item))
    for pid, (cmd, m) in sorted(after["proc"].items()):
        if m == mark:
            left.append("process %d (carries the run's marker): %s" % (pid, cmd))
        elif pid not in before["proc"] and PROC_NAMES.search(cmd) and \
                rid and ("skm" + rid) in cmd:
            left.append("process %d: %s" % (pid, cmd))
    return left


def _demo_tmp_owner_dead(path):
    # /tmp/skmesh-demo.XXXXXX of another demo that still runs has a
    # process whose cmdline names it (its meshd's --ca-dir)
    return not any(path in cmd for cmd, _ in _procs().values())


# --- running the demo ---------------------------------------------------------

def start_demo(mark):
    env = dict(os.environ, **{MARK_VAR: mark})
    env.pop("SKM_KEEP_LOGS", None)      # the demo must remove its logs too
    p = subprocess.Popen(["bash", DEMO], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    _running.append(p)
    return p


def read_until(p, pattern, timeout):
    """Read p's output until a line matches pattern (returns the text read
    and whether it matched), p exits or timeout passes."""
    buf = b""
    deadline = time.monotonic() + timeout
    fd = p.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        if pattern and re.search(pattern, buf.decode(errors="replace"), re.M):
            return buf.decode(errors="replace"), True
    return buf.decode(errors="replace"), False


def finish(p, timeout):
    """Read the rest of p's output and wait for it; (rc, text, seconds)."""
    t0 = time.monotonic()
    text, _ = read_until(p, None, timeout)
    try:
        rc = p.wait(max(1, timeout - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        rc = p.wait()
        text += "\n[test: killed after %s s]" % timeout
    _running.remove(p)
    return rc, text, time.monotonic() - t0


def _on_signal(signo, _frame):
    # the runner's timeout (SIGTERM) or ^C: interrupt the demo as a user
    # would, so it cleans up, then stop
    for p in _running:
        try:
            os.killpg(p.pid, signal.SIGINT)
            p.wait(12)
        except (OSError, subprocess.TimeoutExpired):
            pass
    raise SystemExit(128 + signo)


def section(text, title):
    """The text of the section whose heading starts with title."""
    m = re.search(r"^== %s.*?(?=^== |\Z)" % re.escape(title), text, re.M | re.S)
    return m.group(0) if m else ""


# --- the checks -------------------------------------------------------------

def full_run(t):
    before = snapshot()
    mark = "full-%d" % os.getpid()
    t0 = time.monotonic()
    p = start_demo(mark)
    rc, out, _ = finish(p, TIMEOUT)
    secs = time.monotonic() - t0
    t.eq("the demo exits 0", rc, 0, out[-4000:])
    t.check("it takes well under a minute (%.1f s)" % secs, secs < 50)
    m = re.search(r"run id ([0-9a-f]{4})", out)
    rid = m.group(1) if m else None
    t.check("it names its topology's run id (%s)" % rid, rid, out[:2000])

    for title in ("1. The topology", "2. A mesh CA", "3. The config", "4. One meshd per node",
                  "5. The servers", "6. HTTP", "7. redis-benchmark", "8. A denied connection",
                  "9. Live connections", "10. Services and counters", "11. Prometheus metrics",
                  "Summary", "Clean up"):
        t.check("section '%s' is printed" % title, section(out, title), out[-3000:])

    s4 = section(out, "4. One meshd per node")
    t.check("both meshd are ready with the tunnel on",
            len(re.findall(r"meshd: ready: node node[12].*tunnel on", s4)) == 2, s4)

    s6 = section(out, "6. HTTP")
    oks = re.findall(r"^   HTTP 200, (\d+) bytes in .*connected to 10\.96\.0\.10:80$", s6, re.M)
    t.check("curl through the VIP: HTTP 200 with the whole file, same node and across nodes",
            len(oks) == 2 and all(int(b) == 256 << 10 for b in oks), s6)
    t.check("the page itself arrives across nodes", "hello from web" in s6, s6)

    s7 = section(out, "7. redis-benchmark")
    rps = [(op, float(v)) for op, v in
           re.findall(r"^   (SET|GET): ([\d.]+) requests per second", s7, re.M)]
    t.check("redis-benchmark: SET and GET req/s same node and across nodes (%s)"
            % ", ".join("%s %.0f" % x for x in rps),
            [op for op, _ in rps] == ["SET", "GET", "SET", "GET"] and
            all(v > 100 for _, v in rps), s7)

    s8 = section(out, "8. A denied connection")
    t.check("same node: connect() fails with EPERM", re.search(
        r"Immediate connect fail .*Operation not permitted", s8), s8)
    # The reset reaches curl after its connect() completed (56), or, when
    # the pooled tunnel answers 401 faster than curl polls its socket,
    # while connect() is still in progress (7): the 401 is checked below.
    t.check("across nodes: the tunnel refuses, curl's connection is reset",
            "curl: (56) Recv failure: Connection reset by peer" in s8 or
            re.search(r"curl: \(7\) Failed to connect to [0-9.]+ port 9090 .*: "
                      r"Couldn't connect to server", s8.split("across nodes")[-1]), s8)
    t.check("node1's meshd logs the 401 with the client's SPIFFE ID and the policy",
            re.search(r"401 for spiffe://cluster\.local/ns/shop/sa/worker -> .*:9090: "
                      r"denied by DENY policy shop/web-admin-port", s8), s8)
    t.check("meshctl policy shows the kernel's deny for frontend on 9090",
            re.search(r"shop/frontend\s+port 9090 deny", s8), s8)

    s9 = section(out, "9. Live connections")
    rows = [l.split() for l in s9.splitlines() if "ESTABLISHED" in l]
    t.check("meshctl conns on both nodes lists live connections (%d rows)" % len(rows),
            len(re.findall(r"meshctl conns", s9)) == 2 and len(rows) >= 3, s9)
    acc = [r for r in rows if "accelerated" in r and r[3] == "10.96.0.20:6379"]
    t.check("worker's redis-cli session is accelerated and has moved bytes",
            acc and int(acc[0][7]) > 0, s9)
    t.check("frontend's session is captured into node1's meshd (15001)",
            any(r[2].endswith(":15001") and r[3] == "10.96.0.20:6379" for r in rows), s9)

    s10 = section(out, "10. Services and counters")
    t.check("meshctl services lists both VIPs with their backend",
            re.search(r"shop\s+web\s+10\.96\.0\.10\s+80\s+TCP\s+10\.99\.1\.2:8080", s10) and
            re.search(r"shop\s+redis\s+10\.96\.0\.20\s+6379\s+TCP\s+10\.99\.2\.2:6379", s10), s10)
    t.check("meshctl stats shows the data-path and tunnel counters",
            re.search(r"policy_deny\s+1\b", s10) and re.search(r"in_denied\s+1\b", s10), s10)

    s11 = section(out, "11. Prometheus metrics")
    ready = re.findall(r"node[12]: GET /healthz/ready -> (\S+)", s4)
    t.check("readiness: both nodes answer 200", ready == ["200", "200"], s4)
    t.check("metrics: istio_tcp_sent_bytes_total samples",
            re.search(r"^   istio_tcp_sent_bytes_total\{.*\} \d+", s11, re.M), s11)
    t.check("metrics: skmesh_* samples", re.search(r"^   skmesh_\w+", s11, re.M), s11)

    summ = section(out, "Summary")
    t.check("summary: both curls 200", len(re.findall(r"curl \w+ -> web \(.*\)\s+HTTP 200", summ)) == 2,
            summ)
    t.check("summary: both benchmarks with req/s",
            len(re.findall(r"redis-benchmark .*SET: \d+ req/s, GET: \d+ req/s", summ)) == 2, summ)
    t.check("summary: both denials",
            re.search(r"9090 \(same node\)\s+denied: Operation not permitted", summ) and
            re.search(r"9090 \(across nodes\)\s+denied: Connection reset by peer", summ), summ)
    m = re.search(r"accelerated \(sk_msg\):\s+(\d+) sockets", summ)
    t.check("summary: accelerated sockets counted (%s)" % (m and m.group(1)),
            m and int(m.group(1)) >= 40, summ)
    m = re.search(r"tunnelled \(HBONE, mTLS\):\s+(\d+) streams opened, (\d+) accepted", summ)
    t.check("summary: tunnelled streams counted (%s)" % (m and m.group(0)),
            m and int(m.group(1)) >= 20 and m.group(1) == m.group(2), summ)
    t.check("summary: denials counted (1 by the kernel, 1 by the tunnel)",
            re.search(r"denied:\s+1 in the kernel .*, 1 by the tunnel", summ), summ)
    t.check("clean up says it removed run %s" % rid,
            rid and ("removed everything of run %s" % rid) in section(out, "Clean up"),
            section(out, "Clean up"))

    left = leftovers(before, snapshot(), mark, rid)
    t.check("nothing left: namespaces, cgroups, pins, qdiscs, veths, files, processes",
            not left, "\n".join(left))


def interrupted_run(t, when, pattern):
    before = snapshot()
    mark = "int-%s-%d" % (when.split()[0], os.getpid())
    p = start_demo(mark)
    text, seen = read_until(p, pattern, TIMEOUT)
    t.check("interrupt %s: the demo got there" % when, seen, text[-3000:])
    os.killpg(p.pid, signal.SIGINT)
    t0 = time.monotonic()
    rc, rest, _ = finish(p, 30)
    secs = time.monotonic() - t0
    out = text + rest
    m = re.search(r"run id ([0-9a-f]{4})", out)
    rid = m.group(1) if m else None
    t.check("interrupt %s: it stops in %.1f s with exit status %d" % (when, secs, rc),
            rc == 130 and secs < 20, out[-3000:])
    t.check("interrupt %s: it cleans up and prints no summary" % when,
            "== Clean up" in rest and "== Summary" not in out and
            "could not remove" not in rest, out[-3000:])
    left = leftovers(before, snapshot(), mark, rid)
    t.check("interrupt %s: nothing left behind" % when, not left, "\n".join(left))


def main():
    t = tap.Tap()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)
    bad = tap.prerequisites()
    for c in ("curl", "redis-server", "redis-benchmark", "redis-cli", "tc"):
        if subprocess.run(["sh", "-c", "command -v " + c], capture_output=True).returncode:
            bad.append("%s is missing (make deps installs it)" % c)
    try:
        if t.check("prerequisites", not bad, "\n".join(bad)):
            full_run(t)
            interrupted_run(t, "while the topology is built", r"^== 1\. The topology")
            interrupted_run(t, "in the middle of the traffic", r"^== 7\. redis-benchmark")
    except SystemExit as e:
        t.check("interrupted (signal %s)" % (e.code - 128 if isinstance(e.code, int) else e.code),
                False)
    print("1..%d" % t.n)
    sys.stdout.flush()
    sys.exit(1 if t.failed else 0)


if __name__ == "__main__":
    main()
