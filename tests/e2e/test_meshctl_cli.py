#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
meshctl for operators (issue 5): `meshctl top` ranks live connections by
the bytes they move, measured between two reads of skm_conns; `conns`
shows bytes each way, srtt, age and path and redraws with --watch; every
command has --help; a bad command or option is a usage error (exit 2);
and a node without meshd, a pin root that is not on bpffs, a partial
install and a user who is not root each get an error that says what is
wrong and how to fix it.

Traffic, all on node 1: a sender throttled to BUSY_RATE bytes/s from pod
1 through a service VIP to a sink in pod 2 (accelerated), one throttled to MEDIUM_RATE to a
sink in the node's own namespace (passthrough: not a Workload), and an
idle connection from pod 1 to an echo server in pod 2.

1 node x 2 pods, one meshd.
"""
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

topolib = tap.topolib

VIP = "10.96.0.20"        # service "sink": port 80 -> pod 2, 7201
BUSY_RATE = 2000000       # bytes/s
MEDIUM_RATE = 400000
LATE_RATE = 1000000
COMMANDS = ["status", "services", "conns", "top", "workloads", "policy", "stats"]

# Writes to IP:PORT at RATE bytes/s for SECS seconds (catching up after a
# stall, so the average holds), then half-closes and waits for the sink.
SENDER = r"""
import json, socket, sys, time
ip, port, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((ip, port), timeout=10)
print(json.dumps({"event": "connected", "local": "%s:%d" % s.getsockname(),
                  "peer": "%s:%d" % s.getpeername()}), flush=True)
buf = bytes(65536)
sent = 0
t0 = time.monotonic()
while True:
    el = time.monotonic() - t0
    if el >= secs:
        break
    due = int(rate * el)
    while sent < due:
        n = min(len(buf), due - sent)
        s.sendall(buf[:n])
        sent += n
    time.sleep(0.005)
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
print(json.dumps({"event": "done", "sent": sent}), flush=True)
"""


def meshctl_argv(topo, *args, bpffs=None):
    """meshctl in node 1's namespace, on node 1's pins unless bpffs."""
    return topo.node_argv(1, [os.path.join(topolib.build_dir(), "meshctl"),
                              "--bpffs", bpffs or topo.pin_dir(1)] +
                          [str(a) for a in args])


def meshctl(topo, *args, bpffs=None, timeout=30):
    """CompletedProcess of meshctl (never raises on its exit status)."""
    return topolib.sh(meshctl_argv(topo, *args, bpffs=bpffs), check=False,
                      timeout=timeout)


def bare_meshctl(*args):
    """meshctl without --bpffs and without a node (help, usage errors)."""
    return topolib.sh([os.path.join(topolib.build_dir(), "meshctl")] +
                      [str(a) for a in args], check=False)


def top_json(t, topo, *args):
    r = meshctl(topo, "top", "-o", "json", *args)
    try:
        rows = json.loads(r.stdout)
    except ValueError:
        rows = None
    t.require("meshctl top %s -o json: exit 0, a JSON array" % " ".join(args),
              r.returncode == 0 and isinstance(rows, list),
              "exit %d\nstdout: %s\nstderr: %s" % (r.returncode, r.stdout, r.stderr))
    return rows


def rows_from(rows, local):
    return [r for r in rows if r["src"] == local]


def within(x, want, lo=0.5, hi=1.6):
    return want * lo <= x <= want * hi


def table_aligned(text):
    """None when every row of the table (header first) lines up with the
    header: a left-aligned cell starts where its name starts, a
    right-aligned one ends where its name ends. Else what is wrong."""
    lines = [l for l in text.splitlines() if l.strip()]
    if not lines:
        return "no table"
    head = [(m.start(), m.end()) for m in re.finditer(r"\S+", lines[0])]
    for line in lines[1:]:
        cells = [(m.start(), m.end()) for m in re.finditer(r"\S+", line)]
        if len(cells) != len(head):
            return "%d cells, %d columns: %r" % (len(cells), len(head), line)
        for (hs, he), (cs, ce) in zip(head, cells):
            if cs != hs and ce != he:
                return "cell at %d..%d, column at %d..%d: %r" % (cs, ce, hs, he, line)
    return None


def start_sender(topo, where, to_ip, port, rate, secs):
    argv = [sys.executable, "-c", SENDER, to_ip, str(port), str(rate), str(secs)]
    p = topolib.ToolProc(topo, topo.where_argv(where, argv), name="sender")
    info = p.expect("event")
    return p, info


def body(t, topo):
    p1, p2 = topo.node_pods(1)
    node_ip = topo.node_ip(1)
    cfg = topo.write_config(topo.config_path(), [
        {"name": "sink", "vip": VIP, "ports": [{"port": 80, "targetPort": 7201}],
         "endpoints": [(p2.ip, 1)]}])
    topo.start_meshd(1, cfg)

    # --- help: every command, exit 0, on stdout, its options named
    r = bare_meshctl("--help")
    t.check("meshctl --help: exit 0, usage on stdout, nothing on stderr",
            r.returncode == 0 and r.stdout.startswith("Usage: meshctl") and not r.stderr,
            r)
    listed = {l.split()[0] for l in r.stdout.splitlines() if l.startswith("  ") and l.split()}
    t.check("meshctl --help lists every command and help",
            set(COMMANDS + ["ca", "help"]) <= listed, r.stdout)
    t.eq("meshctl help is meshctl --help", bare_meshctl("help").stdout, r.stdout)
    for c in COMMANDS:
        h = bare_meshctl(c, "--help")
        want = ["Usage: meshctl", " " + c, "--output", "--watch", "--bpffs", "--help"]
        if c == "top":
            want += ["-n N", "--sort", "rate", "bytes", "age", "--interval"]
        if c == "policy":
            want += ["WORKLOAD"]
        missing = [w for w in want if w not in h.stdout]
        t.check("meshctl %s --help: exit 0, stdout names its options" % c,
                h.returncode == 0 and not missing and not h.stderr,
                "exit %d, missing %s\n%s%s" % (h.returncode, missing, h.stdout, h.stderr))
        t.eq("meshctl help %s is meshctl %s --help" % (c, c),
             bare_meshctl("help", c).stdout, h.stdout)
    h = bare_meshctl("help", "ca")
    t.check("meshctl help ca: the CA usage, exit 0",
            h.returncode == 0 and "--trust-domain" in h.stdout, h)

    # --- usage errors: exit 2, usage on stderr naming the bad word
    for argv, word in ((["bogus"], "bogus"), (["conns", "--bogus"], "--bogus"),
                       (["conns", "-n", "3"], "-n"), (["top", "--sort", "speed"], "speed"),
                       (["top", "--interval", "0"], "--interval"),
                       (["conns", "extra"], "extra"), (["help", "nosuch"], "nosuch"),
                       ([], "no command")):
        r = bare_meshctl(*argv)
        t.check("meshctl %s: exit 2, stderr names '%s' and shows the usage"
                % (" ".join(argv) or "(nothing)", word),
                r.returncode == 2 and word in r.stderr.split("\n")[0] and
                "Usage:" in r.stderr and not r.stdout, r)

    # --- traffic: an idle connection, then two throttled senders
    topo.podtool(p2, "echo", "--port", 7200, "--timeout", 90).expect("listening")
    idle = topo.podtool(p1, "session", "--to", "%s:7200" % p2.ip, stdin=True)
    idle_info = idle.expect("event")
    t.require("idle connection up", idle_info.get("event") == "connected", idle_info)
    topo.podtool(p2, "sink", "--port", 7201, "--timeout", 90).expect("listening")
    topo.podtool(1, "sink", "--port", 7202, "--timeout", 90).expect("listening")
    busy, busy_info = start_sender(topo, p1, VIP, 80, BUSY_RATE, 40)
    medium, med_info = start_sender(topo, p1, node_ip, 7202, MEDIUM_RATE, 40)
    t.require("busy and medium senders connected",
              busy_info.get("event") == "connected" and med_info.get("event") == "connected",
              (busy_info, med_info))
    time.sleep(1.0)     # past their first second: steady rates

    # --- top -o json: busy first, at its rate; then medium; idle at 0
    rows = top_json(t, topo, "--interval", "1.5", "-n", "0")
    b, m, i = (rows_from(rows, x["local"]) for x in (busy_info, med_info, idle_info))
    t.require("top lists the busy, medium and idle connection once each "
              "(both ends of a same-node connection make one row)",
              len(b) == 1 and len(m) == 1 and len(i) == 1, rows)
    b, m, i = b[0], m[0], i[0]
    t.eq("top: busy connection ranks first, then medium",
         [r["src"] for r in rows[:2]], [busy_info["local"], med_info["local"]], rows)
    t.check("top: busy rate %d B/s is about the %d B/s sent"
            % (b["rate"], BUSY_RATE), within(b["rate"], BUSY_RATE), b)
    t.check("top: medium rate %d B/s is about the %d B/s sent"
            % (m["rate"], MEDIUM_RATE), within(m["rate"], MEDIUM_RATE), m)
    t.check("top: busy rate is all from the client (tx_rate), nothing back",
            b["tx_rate"] == b["rate"] and b["rx_rate"] == 0 and b["rx_bytes"] == 0, b)
    t.eq("top: idle connection moves nothing", (i["rate"], i["tx_rate"], i["rx_rate"]),
         (0, 0, 0), i)
    t.eq("top: busy row: the client's view, the VIP as dialled, the backend "
         "reached, path, service and workloads",
         (b["role"], b["dst"], b["dst_addr"], b["via_vip"], b["service"], b["path"],
          b["src_workload"], b["dst_workload"]),
         ("client", "%s:80" % VIP, "%s:7201" % p2.ip, True, "default/sink", "accelerated",
          "default/%s" % p1.name, "default/%s" % p2.name), b)
    t.eq("top: medium row: passthrough to the node, which is no workload",
         (m["dst"], m["path"], m["src_workload"], m["dst_workload"]),
         (med_info["peer"], "passthrough", "default/%s" % p1.name, None), m)
    ints = ("rate", "tx_rate", "rx_rate", "tx_bytes", "rx_bytes", "bytes",
            "srtt_us", "age_s", "cookie")
    t.check("top JSON: numbers are numbers",
            all(isinstance(r[k], int) and not isinstance(r[k], bool)
                for r in rows for k in ints), rows)
    t.check("top: busy has sent at least 1.5 s of its rate, bytes = tx + rx",
            b["tx_bytes"] >= 1.5 * BUSY_RATE and b["bytes"] == b["tx_bytes"] + b["rx_bytes"],
            b)
    t.check("top: srtt > 0 on the busy and medium rows, idle is oldest",
            b["srtt_us"] > 0 and m["srtt_us"] > 0 and i["age_s"] >= b["age_s"], rows)

    rows = top_json(t, topo, "-n", "1", "--interval", "0.5")
    t.check("top -n 1: one row, the busy connection",
            len(rows) == 1 and rows[0]["src"] == busy_info["local"], rows)
    rows = top_json(t, topo, "--sort", "age", "--interval", "0.2")
    t.check("top --sort age: the idle connection (opened first) leads",
            rows and rows[0]["src"] == idle_info["local"], rows)
    rows = top_json(t, topo, "--sort=bytes", "--interval=0.2")
    t.check("top --sort=bytes: the busy connection leads",
            rows and rows[0]["src"] == busy_info["local"], rows)

    # --- a connection opened during the interval counts from its start;
    # one opened and closed in it is not shown
    topo.podtool(p2, "xfer-server", "--port", 7203, "--count-conns", 1,
                 "--timeout", 60).expect("listening")
    topo.podtool(p2, "sink", "--port", 7204, "--timeout", 90).expect("listening")
    t0 = time.monotonic()
    bg = topo.popen(meshctl_argv(topo, "top", "-o", "json", "--interval", 4, "-n", 0),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)     # its first sample
    x = topo.pod_run(p1, topo.podtool_argv("xfer", "--to", "%s:7203" % p2.ip,
                                           "--pairs", "300000:20"), timeout=30)
    short = tap.json_line(x.stdout)
    # about half-way: counted over the whole interval, it would show half
    time.sleep(max(0.0, t0 + 2.0 - time.monotonic()))
    late, late_info = start_sender(topo, p1, p2.ip, 7204, LATE_RATE, 30)
    out, err = bg.communicate(timeout=30)
    topo._procs.remove(bg)
    rows = json.loads(out) if bg.returncode == 0 else []
    t.require("top --interval 4 in the background: exit 0", bg.returncode == 0, err)
    lr = rows_from(rows, late_info.get("local"))
    t.check("top: a connection opened during the interval is listed, its rate "
            "counted from its start (about %d B/s)" % LATE_RATE,
            len(lr) == 1 and within(lr[0]["rate"], LATE_RATE, lo=0.55), (late_info, lr))
    t.eq("top: a connection opened and closed during the interval is not listed",
         rows_from(rows, short["local"]), [], rows)

    # --- top table: summary, then an aligned table
    r = meshctl(topo, "top", "--interval", "0.5")
    lines = r.stdout.splitlines()
    t.require("meshctl top: exit 0, a summary line, a blank line, a table",
              r.returncode == 0 and len(lines) >= 4 and "connection" in lines[0]
              and lines[1] == "" and lines[2].split()[:3] == ["SRC", "DST", "PATH"], r)
    t.eq("meshctl top: header", lines[2].split(),
         ["SRC", "DST", "PATH", "TX/s", "RX/s", "TX", "RX", "SRTT", "AGE",
          "SRC_WORKLOAD", "DST_WORKLOAD"])
    t.eq("meshctl top: table aligned", table_aligned("\n".join(lines[2:])), None, r.stdout)
    t.diag(r.stdout)
    first = lines[3].split()
    t.check("meshctl top: first row is the busy connection, accelerated, "
            "MB/s, workloads named",
            first[:3] == [busy_info["local"], "%s:80" % VIP, "accelerated"]
            and first[3].endswith("MB/s") and first[4] == "0B/s"
            and first[9:] == ["default/" + p1.name, "default/" + p2.name], lines)

    # --- conns: bytes each way, srtt, age, path; aligned
    r = meshctl(topo, "conns")
    lines = r.stdout.splitlines()
    t.check("meshctl conns: exit 0, header with path, bytes each way, srtt, age",
            r.returncode == 0 and lines and all(
                w in lines[0].split() for w in ("PATH", "TX_BYTES", "RX_BYTES",
                                                "SRTT_US", "AGE")), r)
    t.eq("meshctl conns: table aligned", table_aligned(r.stdout), None, r.stdout)
    conns = topo.meshctl_json(1, "conns")
    c = tap.conn_by_src(conns, busy_info["local"])
    t.check("meshctl conns -o json: the busy client record, accelerated, "
            "bytes, srtt, age",
            len(c) == 1 and c[0]["path"] == "accelerated" and c[0]["tx_bytes"] > BUSY_RATE
            and c[0]["srtt_us"] > 0 and c[0]["age_s"] >= 2, c)

    # --- --watch: rounds until SIGINT; no screen clearing into a pipe
    for args, rounds in ((["top", "--watch", "--interval", "0.3"], 3),
                         (["conns", "--watch", "0.3"], 3),
                         (["top", "--watch", "0.3", "-o", "json"], 3)):
        p = topo.popen(meshctl_argv(topo, *args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        time.sleep(0.3 * rounds + 1.0)
        p.send_signal(signal.SIGINT)
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        topo._procs.remove(p)
        if "json" in args:
            n = out.count("\n[") + out.startswith("[")
            ok = n >= rounds
        else:
            n = out.count("Every 0.3s: meshctl %s" % args[0])
            ok = n >= rounds and "\033[" not in out
        t.check("meshctl %s: %d+ rounds, Ctrl-C ends it with exit 0%s (%d rounds)"
                % (" ".join(args), rounds, "" if "json" in args else
                   ", no escape codes into a pipe", n),
                ok and p.returncode == 0, "exit %s\n%s\n%s" % (p.returncode, out[-3000:], err))

    # on a terminal each round clears the screen, as top(1) does
    master, slave = pty.openpty()
    p = topo.popen(meshctl_argv(topo, "conns", "--watch", "0.3"), stdout=slave,
                   stderr=subprocess.PIPE)
    os.close(slave)
    out, end = b"", time.monotonic() + 1.5
    while time.monotonic() < end or p.poll() is None:
        if time.monotonic() >= end and p.poll() is None:
            p.send_signal(signal.SIGINT)
            end = time.monotonic() + 30     # only one signal
        if select.select([master], [], [], 0.1)[0]:
            try:
                out += os.read(master, 65536)
            except OSError:     # EIO: meshctl closed the terminal
                break
    p.wait(10)
    os.close(master)
    topo._procs.remove(p)
    t.check("meshctl conns --watch on a terminal: each round clears the screen",
            out.count(b"\033[H\033[2J") >= 3 and p.returncode == 0,
            "exit %s\n%r" % (p.returncode, out[-2000:]))

    # --- errors: say what is wrong and how to fix it
    # bpffs not mounted: in a mount namespace of its own, without it
    r = topolib.sh(["unshare", "-m", "--propagation", "private", "sh", "-c",
                    'umount /sys/fs/bpf && exec "$@"', "sh"] +
                   meshctl_argv(topo, "conns"), check=False)
    t.check("meshctl where bpffs is not mounted: exit 1, says how to mount it",
            r.returncode == 1 and "%s is not on a bpf filesystem (/sys/fs/bpf is sysfs): "
            "mount it with 'mount -t bpf bpf /sys/fs/bpf'" % topo.pin_dir(1) in r.stderr, r)

    empty = topo.pin_dir(9)         # a node that never ran meshd
    os.makedirs(empty, exist_ok=True)
    try:
        for c in COMMANDS:
            r = meshctl(topo, c, bpffs=empty)
            t.check("meshctl %s on an empty pin root: exit 1, 'is meshd running'" % c,
                    r.returncode == 1 and "no skmesh pins at %s: is meshd running on "
                    "this node? (--bpffs DIR to point elsewhere)" % empty in r.stderr
                    and not r.stdout, r)
        r = meshctl(topo, "conns", bpffs=empty + "/nosuch")
        t.check("meshctl with a pin root that does not exist: 'is meshd running'",
                r.returncode == 1 and "is meshd running" in r.stderr, r)

        notbpf = tempfile.mkdtemp(dir=topo.logdir, prefix="notbpf-")
        r = meshctl(topo, "conns", bpffs=notbpf)
        t.check("meshctl with --bpffs on a non-bpf folder: 'not on a bpf filesystem', "
                "points at --bpffs", r.returncode == 1 and
                "%s is not on a bpf filesystem" % notbpf in r.stderr and
                "--bpffs" in r.stderr, r)

        # a partial install: one map of skmesh.h pinned, the rest not
        topolib.sh(["bpftool", "map", "pin", "pinned",
                    os.path.join(topo.pin_dir(1), "skm_stats"),
                    os.path.join(empty, "skm_stats")])
        r = meshctl(topo, "conns", bpffs=empty)
        t.check("meshctl conns with skm_conns missing: names the map, says restart meshd",
                r.returncode == 1 and "%s/skm_conns is not pinned" % empty in r.stderr
                and "restart meshd" in r.stderr, r)
        r = meshctl(topo, "status", bpffs=empty)
        t.check("meshctl status on a partial install: lists the missing maps, exit 1",
                r.returncode == 1 and re.search(r"skm_conns\s+missing", r.stdout)
                and re.search(r"skm_stats\s+percpu_array\s+\d+", r.stdout) and "restart meshd" in r.stderr,
                r)
    finally:
        topolib.sh(["rm", "-rf", empty], check=False)

    # not root: the pins are root's, reading maps takes CAP_BPF
    r = topolib.sh(topo.node_argv(1, ["setpriv", "--reuid=65534", "--regid=65534",
                                      "--clear-groups", "--inh-caps=-all", "--",
                                      os.path.join(topolib.build_dir(), "meshctl"),
                                      "--bpffs", topo.pin_dir(1), "conns"]),
                   check=False)
    t.check("meshctl conns as nobody: exit 1, says it needs root",
            r.returncode == 1 and "needs root" in r.stderr and "sudo" in r.stderr, r)
    t.diag(r.stderr)

    for p in (busy, medium, late):
        p.kill()
    idle.kill()


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=2)
