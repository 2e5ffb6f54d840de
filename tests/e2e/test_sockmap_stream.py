#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Same-node acceleration (issue 2, a): a 100 MiB random stream between two
pods of one node arrives byte-exact, the sk_msg counters account for every
byte, and the payload does not cross the pods' veths.

Control first: the same kind of stream without meshd does raise the veth
counters by its size, so the "did not cross the veth" check can fail.
"""
import os
import sys

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
    t.check("sk_msg redirected messages (msg_redirect %d), none passed to TCP "
            "(msg_pass +%d)" % (c1["msg_redirect"] - c0["msg_redirect"],
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

    h = topo.meshds[1]
    ev = tap.wait_until(lambda: [e for e in h.access_events()
                                 if {e["src"], e["dst"]} == {sent["local"], sent["peer"]}])
    t.check("close events: one per side, both accelerated",
            sorted(e["role"] for e in ev) == ["client", "server"] and
            all(e["path"] == "accelerated" for e in ev), ev)


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=2)
