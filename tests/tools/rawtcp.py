#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
rawtcp.py - what a hostile pod sends, for the policy bypass tests: TCP
SYNs built by hand on a raw socket (whole, split into IP fragments, with
IP options, from a source address that is not the sender's), a connect()
from a socket with a forged SO_MARK, and a sniffer that tells whether a
SYN arrived. Python stdlib only; one JSON line on stdout; every wait is
bounded.

  syn --src IP --dst IP:PORT [--frag | --ipopts] [--wait S]
      send one SYN from SRC (any address: a raw socket does not check it)
      and wait up to S seconds (1) for the SYN-ACK on this namespace's
      interfaces: {"synack": true|false, "sport": N}
  listen6 --port P [--timeout S]
      accept and close IPv6 connections on [::]:P for S seconds (60):
      {"listening": P} once listening
  connect --to IP:PORT [--mark M] [--timeout S]    ([IPV6]:PORT too)
      a TCP connect() from a socket with SO_MARK M:
      {"result": "OK" | "TIMEOUT" | errno name}
  hold --to IP:PORT --count N [--timeout S]
      open N connections and keep them: {"held": N, "errors": {...},
      "locals": [...]}; close them all when stdin ends (or after S
      seconds, 120), then {"closed": N}
  ping --to IP [--size N] [--wait S]
      one ICMP echo of N bytes (3000: more than the MTU, so it goes as
      fragments) and its reply: {"reply": true|false}
  sniff --dport PORT [--timeout S]
      print {"listening": PORT}, then watch every interface for a TCP SYN
      to PORT for S seconds (3): {"syns": N, "sources": [...]}
"""

import argparse
import errno
import json
import os
import random
import select
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003


def out(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def tcp_syn(src, dst, sport, dport, seq):
    """A 20-byte TCP header with SYN and a valid checksum."""
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    c = csum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]


def ip_hdr(src, dst, payload_len, ident, frag=0, opts=b""):
    """An IPv4 header (checksum filled in by the kernel for IP_HDRINCL)."""
    ihl = 5 + len(opts) // 4
    return struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, ihl * 4 + payload_len, ident,
                       frag, 64, socket.IPPROTO_TCP, 0, socket.inet_aton(src),
                       socket.inet_aton(dst)) + opts


def packets(args, src, dst, sport, dport):
    seq = random.randrange(1 << 32)
    tcp = tcp_syn(src, dst, sport, dport, seq)
    ident = random.randrange(1, 1 << 16)
    if args.frag:
        # the first fragment carries the ports and the sequence number
        # (8 bytes, fragment offset units), the second the flags
        return [ip_hdr(src, dst, 8, ident, 0x2000) + tcp[:8],
                ip_hdr(src, dst, 12, ident, 1) + tcp[8:]]
    if args.ipopts:
        # four NOPs: a well-formed header with options (IHL 6)
        return [ip_hdr(src, dst, len(tcp), ident, 0x4000, b"\x01\x01\x01\x01") + tcp]
    return [ip_hdr(src, dst, len(tcp), ident, 0x4000) + tcp]


def is_synack(frame, src, dst, sport, dport):
    """frame: an IPv4 packet. True for dst:dport -> src:sport SYN+ACK."""
    if len(frame) < 40 or frame[0] >> 4 != 4 or frame[9] != socket.IPPROTO_TCP:
        return False
    ihl = (frame[0] & 15) * 4
    if frame[12:16] != socket.inet_aton(dst) or frame[16:20] != socket.inet_aton(src):
        return False
    tcp = frame[ihl:]
    if len(tcp) < 14:
        return False
    sp, dp = struct.unpack("!HH", tcp[:4])
    return sp == dport and dp == sport and tcp[13] & 0x12 == 0x12


def wait_for(sock, seconds, match):
    """True once match(packet, address) holds for a packet read from sock
    within seconds, else False."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([sock], [], [], left)
        if r and match(*sock.recvfrom(65535)):
            return True


def cmd_syn(args):
    dst, dport = args.dst.rsplit(":", 1)
    dport = int(dport)
    sport = random.randrange(20000, 60000)
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    for pkt in packets(args, args.src, dst, sport, dport):
        raw.sendto(pkt, (dst, 0))
    got = wait_for(sniff, args.wait,
                   lambda pkt, _: is_synack(pkt, args.src, dst, sport, dport))
    out({"synack": got, "sport": sport})


def cmd_connect(args):
    ip, port = args.to.rsplit(":", 1)
    v6 = ip.startswith("[")
    ip = ip.strip("[]")
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    if args.mark:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, args.mark)
    s.settimeout(args.timeout)
    try:
        s.connect((ip, int(port)))
        res = "OK"
    except socket.timeout:
        res = "TIMEOUT"
    except OSError as e:
        res = errno.errorcode.get(e.errno, str(e.errno))
    out({"result": res})


def cmd_listen6(args):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::", args.port))
    s.listen(64)
    out({"listening": args.port})
    deadline = time.monotonic() + args.timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if select.select([s], [], [], left)[0]:
            s.accept()[0].close()


def cmd_hold(args):
    ip, port = args.to.rsplit(":", 1)
    socks, errors = [], {}
    for _ in range(args.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect((ip, int(port)))
            socks.append(s)
        except OSError as e:
            name = errno.errorcode.get(e.errno, "TIMEOUT") if e.errno else "TIMEOUT"
            errors[name] = errors.get(name, 0) + 1
            s.close()
    out({"held": len(socks), "errors": errors,
         "locals": ["%s:%d" % s.getsockname() for s in socks]})
    select.select([sys.stdin], [], [], args.timeout)
    for s in socks:
        s.close()
    out({"closed": len(socks)})


def cmd_ping(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = random.randrange(1, 1 << 16)
    payload = bytes(random.randrange(256) for _ in range(args.size))
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    hdr = hdr[:2] + struct.pack("!H", csum(hdr + payload)) + hdr[4:]
    s.sendto(hdr + payload, (args.to, 0))

    def is_reply(pkt, addr):
        icmp = pkt[(pkt[0] & 15) * 4:]
        return (addr[0] == args.to and len(icmp) >= 8 and icmp[0] == 0 and
                struct.unpack("!H", icmp[4:6])[0] == ident and icmp[8:] == payload)
    got = wait_for(s, args.wait, is_reply)
    out({"reply": got})


def cmd_sniff(args):
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    out({"listening": args.dport})
    deadline = time.monotonic() + args.timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([sniff], [], [], left)
        if not r:
            continue
        frame, addr = sniff.recvfrom(65535)
        if addr[1] != ETH_P_IP or addr[2] == socket.PACKET_OUTGOING or len(frame) < 40:
            continue
        if frame[9] != socket.IPPROTO_TCP:
            continue
        ihl = (frame[0] & 15) * 4
        tcp = frame[ihl:]
        if len(tcp) >= 14 and struct.unpack("!H", tcp[2:4])[0] == args.dport and \
                tcp[13] & 0x12 == 0x02:
            seen.append(socket.inet_ntoa(frame[12:16]))
    out({"syns": len(seen), "sources": sorted(set(seen))})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("syn")
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frag", action="store_true")
    g.add_argument("--ipopts", action="store_true")
    p.add_argument("--wait", type=float, default=1.0)
    p = sub.add_parser("connect")
    p.add_argument("--to", required=True)
    p.add_argument("--mark", type=lambda v: int(v, 0), default=0)
    p.add_argument("--timeout", type=float, default=1.0)
    p = sub.add_parser("listen6")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("hold")
    p.add_argument("--to", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    p = sub.add_parser("ping")
    p.add_argument("--to", required=True)
    p.add_argument("--size", type=int, default=3000)
    p.add_argument("--wait", type=float, default=2.0)
    p = sub.add_parser("sniff")
    p.add_argument("--dport", type=int, required=True)
    p.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args()
    {"syn": cmd_syn, "connect": cmd_connect, "listen6": cmd_listen6, "hold": cmd_hold,
     "ping": cmd_ping,
     "sniff": cmd_sniff}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
