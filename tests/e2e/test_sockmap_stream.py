#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Same-node acceleration (issue 2, a): a 100 MiB random stream between two
pods of one node arrives byte-exact, the sk_msg counters account for every
byte, and the payload does not cross the pods' veths.

Control first: the same kind of stream without meshd does raise the veth
counters by its size, so the "did not cross the veth" check can fail.

Backpressure: with a reader that stops reading, the writer is held back
(a redirect alone would queue without bound): a non-blocking writer gets
EAGAIN after a bounded amount, TCP carries the messages held back, and
once the reader catches up the whole stream arrives in order (sha256)
and the messages go by sk_msg again.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402

MiB = 1 << 20
STREAM = 100 * MiB
CONTROL = 16 * MiB
HANDSHAKE_SLACK = 1 * MiB      # SYN/ACK/FIN and window updates, not payload


def veth_bytes(topo, pods):
    total = 0
    for p in pods:
        s = topo.link_stats(p.node, p.host_veth)
        total += s["rx_bytes"] + s["tx_bytes"]
    return total


def stream(t, topo, src, dst, port, nbytes, seed, hold_check=None):
    """Send nbytes from src to dst:port; returns (sender, sink) results.
    hold_check(sender_line) runs while the connection is still open."""
    sink = topo.podtool(dst, "sink", "--port", port, "--count-conns", 1,
                        "--timeout", 120)
    sink.expect("listening")
    snd = topo.podtool(src, "send", "--to", "%s:%d" % (dst.ip, port),
                       "--bytes", nbytes, "--seed", seed, "--hold",
                       "--io-timeout", 60, stdin=True)
    sent = snd.expect("event", timeout=90)
    if hold_check:
        hold_check(sent)
    snd.proc.stdin.write("go\n")
    snd.proc.stdin.flush()
    res_snd = snd.expect("sha256", timeout=60)
    res_sink = sink.expect("sha256", timeout=60)
    return sent, res_snd, res_sink


STALL_TOTAL = 160 * MiB
STALL_BOUND = 80 * MiB     # SKM_ACCEL_MAX_QUEUED (64 MiB) + TCP's buffers

# The reader: accepts, reads nothing until told, then reads to EOF; with
# a chunk size (argv[2]) it reads that much at a time with a pause after
# each, a reader slower than its writer.
STALLED_READER = r"""
import hashlib, json, socket, sys, time
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", int(sys.argv[1]))); ls.listen(1)
chunk = int(sys.argv[2]) if len(sys.argv) > 2 else 0
print(json.dumps({"event": "listening"}), flush=True)
c, _ = ls.accept()
print(json.dumps({"event": "accepted"}), flush=True)
sys.stdin.readline()
h = hashlib.sha256(); n = 0
while True:
    b = c.recv(chunk or (1 << 20))
    if not b: break
    h.update(b); n += len(b)
    if chunk: time.sleep(0.0005)
print(json.dumps({"bytes": n, "sha256": h.hexdigest()}), flush=True)
"""

# The writer: writes without blocking until the kernel stops taking
# (EAGAIN for a second) or all is written, says how much it took; then,
# told to, writes the rest blocking.
EAGER_WRITER = r"""
import errno, hashlib, json, os, select, socket, sys, time
to, total = sys.argv[1], int(sys.argv[2])
host, port = to.rsplit(":", 1)
s = socket.create_connection((host, int(port)))
data = os.urandom(1 << 16); h = hashlib.sha256(); sent = 0
s.setblocking(False)
idle = time.monotonic()
while sent < total and time.monotonic() - idle < 1.0:
    try:
        n = s.send(data[:total - sent])
    except BlockingIOError:
        select.select([], [s], [], 0.1); continue
    h.update(data[:n]); sent += n; idle = time.monotonic()
    if n < len(data):
        data = data[n:] + data[:n]
print(json.dumps({"event": "taken", "bytes": sent}), flush=True)
sys.stdin.readline()
s.setblocking(True)
while sent < total:
    n = s.send(data[:min(len(data), total - sent)])
    h.update(data[:n]); sent += n
    data = data[n:] + data[:n]
s.shutdown(socket.SHUT_WR)
print(json.dumps({"bytes": sent, "sha256": h.hexdigest()}), flush=True)
"""


def jline(proc, timeout, key="event"):
    """The next JSON line of proc's stdout that has KEY."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("{") and key in json.loads(line):
            return json.loads(line)
        if not line and proc.poll() is not None:
            break
    return {}


def backpressure(t, topo, src, dst, port):
    """A reader that stops: the writer is held, then all arrives in order."""
    rd = topo.pod_popen(dst, [sys.executable, "-c", STALLED_READER, str(port)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t.require("stalled reader listens", jline(rd, 10).get("event") == "listening")
    c0 = tap.counters(topo)
    wr = topo.pod_popen(src, [sys.executable, "-c", EAGER_WRITER, "%s:%d" % (dst.ip, port),
                              str(STALL_TOTAL)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t.check("the writer's connection was accepted", jline(rd, 10).get("event") == "accepted")
    taken = jline(wr, 60).get("bytes", -1)
    c1 = tap.counters(topo)
    t.check("a reader that reads nothing holds the writer back: the kernel took %.1f MiB "
            "of %d MiB before EAGAIN (bound %d MiB)"
            % (taken / MiB, STALL_TOTAL // MiB, STALL_BOUND // MiB),
            0 < taken <= STALL_BOUND, (taken, c0, c1))
    t.check("... messages were held back to TCP (msg_held +%d)"
            % (c1["msg_held"] - c0["msg_held"]), c1["msg_held"] > c0["msg_held"], (c0, c1))
    rd.stdin.write("read\n")
    rd.stdin.flush()
    time.sleep(0.5)
    c2 = tap.counters(topo)
    wr.stdin.write("go\n")
    wr.stdin.flush()
    a, b = jline(wr, 120, "sha256"), jline(rd, 120, "sha256")
    c3 = tap.counters(topo)
    t.check("once the reader reads, all %d MiB arrive in order (sha256 equal)"
            % (STALL_TOTAL // MiB), a.get("bytes") == b.get("bytes") == STALL_TOTAL and
            a.get("sha256") == b.get("sha256"), (a, b))
    t.check("... and the writer's messages went by sk_msg again (msg_redirect +%d)"
            % (c3["msg_redirect"] - c2["msg_redirect"]),
            c3["msg_redirect"] > c2["msg_redirect"], (c2, c3))
    for p in (wr, rd):
        p.wait(timeout=10)

    # a slow reader: the path switches between sk_msg and TCP many times
    rd = topo.pod_popen(dst, [sys.executable, "-c", STALLED_READER, str(port + 1),
                              str(64 << 10)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t.require("slow reader listens", jline(rd, 10).get("event") == "listening")
    rd.stdin.write("read\n")
    rd.stdin.flush()
    c0 = tap.counters(topo)
    wr = topo.pod_popen(src, [sys.executable, "-c", EAGER_WRITER, "%s:%d" % (dst.ip, port + 1),
                              str(STALL_TOTAL)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    jline(wr, 60)
    wr.stdin.write("go\n")
    wr.stdin.flush()
    a, b = jline(wr, 120, "sha256"), jline(rd, 120, "sha256")
    c1 = tap.counters(topo)
    held, redir = c1["msg_held"] - c0["msg_held"], c1["msg_redirect"] - c0["msg_redirect"]
    t.check("a reader slower than its writer: %d MiB arrive in order (sha256 equal) while "
            "the messages went by sk_msg (%d) and, held back, by TCP (%d)"
            % (STALL_TOTAL // MiB, redir, held),
            a.get("bytes") == b.get("bytes") == STALL_TOTAL and
            a.get("sha256") == b.get("sha256") and held > 0 and redir > 0, (a, b, c0, c1))
    for p in (wr, rd):
        p.wait(timeout=10)


def body(t, topo):
    p1, p2 = topo.pods
    pods = [p1, p2]

    # --- control: plain TCP over the veths, no meshd
    v0 = veth_bytes(topo, pods)
    _, a, b = stream(t, topo, p1, p2, 9001, CONTROL, 7)
    grew = veth_bytes(topo, pods) - v0
    t.check("control without meshd: %d MiB stream arrives byte-exact" % (CONTROL // MiB),
            a["sha256"] == b["sha256"] and b["bytes"] == CONTROL, (a, b))
    t.check("control without meshd: veth counters rise by the payload "
            "(%d bytes >= 2 x %d)" % (grew, CONTROL), grew >= 2 * CONTROL,
            "the veth counters cannot see the payload: the check below "
            "would prove nothing")

    cfg = topo.write_config(topo.config_path())
    topo.start_meshd(1, cfg)
    t.check("meshd ready", True)

    c0 = tap.counters(topo)
    v0 = veth_bytes(topo, pods)
    live = {}

    def while_open(sent):
        live["conns"] = topo.meshctl_json(1, "conns")
        live["status"] = topo.meshctl_json(1, "status")
        live["sent"] = sent

    sent, a, b = stream(t, topo, p1, p2, 9000, STREAM, 42, while_open)
    c1 = tap.counters(topo)
    veth = veth_bytes(topo, pods) - v0

    t.eq("100 MiB stream: sink received every byte", b["bytes"], STREAM)
    t.eq("100 MiB stream: sha256 equal on both sides", b["sha256"], a["sha256"])
    redirected = c1["msg_redirect_bytes"] - c0["msg_redirect_bytes"]
    t.check("sk_msg counted every byte: msg_redirect_bytes grew by %d >= %d"
            % (redirected, STREAM), redirected >= STREAM, (c0, c1))
    t.check("msg_redirect_bytes grew by no more than the stream (+1 MiB)",
            redirected <= STREAM + MiB, "grew by %d" % redirected)
    t.check("sk_msg redirected messages (msg_redirect %d), none passed to TCP for a "
            "missing peer (msg_pass +%d)" % (c1["msg_redirect"] - c0["msg_redirect"],
                                             c1["msg_pass"] - c0["msg_pass"]),
            c1["msg_redirect"] > c0["msg_redirect"] and
            c1["msg_pass"] == c0["msg_pass"], (c0, c1))
    t.check("payload did not cross the veths: counters rose %d bytes < %d"
            % (veth, HANDSHAKE_SLACK), veth < HANDSHAKE_SLACK)

    conns = live["conns"]
    cli = tap.conn_by_src(conns, sent["local"], sent["peer"])
    srv = tap.conn_by_src(conns, sent["peer"], sent["local"])
    t.check("open connection: one client and one server record in meshctl conns",
            len(cli) == 1 and len(srv) == 1 and cli[0]["role"] == "client"
            and srv[0]["role"] == "server", conns)
    if cli and srv:
        t.check("open connection: both records say path accelerated",
                cli[0]["path"] == "accelerated" and srv[0]["path"] == "accelerated",
                (cli, srv))
        t.eq("open connection: client tx_bytes is the stream", cli[0]["tx_bytes"], STREAM)
        t.eq("open connection: server rx_bytes is the stream", srv[0]["rx_bytes"], STREAM)
    # the pairing entry lives only until the second end is established (the
    # server's rx_bytes above, counted by the client's sk_msg, shows the
    # two records were linked)
    socks = live["status"]["maps"]["skm_socks"]["entries"]
    t.eq("open connection, paired: skm_socks holds no entry", socks, 0)

    h = topo.meshds[1]
    ev = tap.wait_until(lambda: [e for e in h.access_events()
                                 if {e["src"], e["dst"]} == {sent["local"], sent["peer"]}])
    t.check("close events: one per side, both accelerated",
            sorted(e["role"] for e in ev) == ["client", "server"] and
            all(e["path"] == "accelerated" for e in ev), ev)

    backpressure(t, topo, p1, p2, 9002)


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=2)
