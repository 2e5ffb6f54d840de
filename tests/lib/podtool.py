#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
podtool.py - traffic tools run inside test pods (python3 stdlib only).

Every tool prints JSON lines on stdout; servers first print
{"listening": PORT} once they accept connections, so a test can wait for
that line instead of sleeping. Every socket operation has a timeout and
every server exits after --timeout seconds, so nothing outlives a test.

  ping IP...                        ICMP echo each address (raw socket)
  sink --port P [--count-conns N]   read each connection to EOF:
                                    {peer, bytes, sha256}
  send --to IP:PORT --bytes N --seed S
                                    deterministic random bytes:
                                    {local, peer, bytes, sha256}
  echo --port P                     echo every byte back
  whoami --port P --name NAME       send "NAME\\n" on accept, then echo
  connect-many --to IP:PORT --count N [--greeting]
                                    N sequential connects: peer names,
                                    backends (from the greeting), errnos,
                                    connect() latency
  session --to IP:PORT [--greeting] [--want NAME]
                                    one held connection driven by stdin:
                                    "xfer N" (send N, read N echoed),
                                    "info", "close"
  xfer --to IP:PORT --pairs A:B,... per pair one connection that writes
                                    exactly A bytes and reads exactly B
  xfer-server --port P              per connection: read to EOF, write
                                    the B the client asked for
  prober                            connect() probes driven by stdin: each
                                    line "TIMEOUT IP:PORT[@SRC_IP]..." starts
                                    every connect at once (non-blocking;
                                    @SRC_IP: bound to that local address)
                                    and answers {"results": [...]} in
                                    order: OK, an errno name (EPERM,
                                    ECONNREFUSED, ...) or TIMEOUT (no
                                    answer in TIMEOUT s)
"""

import argparse
import errno
import hashlib
import json
import os
import random
import select
import socket
import struct
import sys
import threading
import time

MiB = 1 << 20


def out(obj):
    """One JSON line on stdout, flushed (the test reads it live)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def addr(s):
    """'IP:PORT' -> (ip, port)."""
    ip, port = s.rsplit(":", 1)
    return ip, int(port)


def fmt(a):
    return "%s:%d" % a


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def pattern(n, seed=0):
    """n deterministic bytes (cheap; for echo checks)."""
    block = bytes((seed + i) & 0xff for i in range(256)) * 4096
    return (block * (n // len(block) + 1))[:n]


# --- servers ---------------------------------------------------------------

def listener(port, bind="0.0.0.0", backlog=512):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    s.listen(backlog)
    return s


def serve(args, handler):
    """Accept until --count-conns connections were handled or --timeout
    passed; each connection runs handler(conn, peer) in a thread."""
    ls = listener(args.port, args.bind)
    deadline = time.monotonic() + args.timeout
    out({"listening": args.port})
    threads = []
    n = 0
    while args.count_conns == 0 or n < args.count_conns:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ls.settimeout(min(left, 1.0))
        try:
            c, peer = ls.accept()
        except socket.timeout:
            continue
        c.settimeout(args.io_timeout)
        t = threading.Thread(target=_guard, args=(handler, c, peer), daemon=True)
        t.start()
        threads.append(t)
        threads = [t for t in threads if t.is_alive()]
        n += 1
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    ls.close()
    return 0


def _guard(handler, c, peer):
    try:
        handler(c, peer)
    except OSError as e:
        out({"peer": fmt(peer), "error": errname(e)})
    finally:
        c.close()


def recv_all(c, bufsize=MiB):
    """Read c to EOF; returns (bytes, sha256 hex)."""
    h = hashlib.sha256()
    buf = bytearray(bufsize)
    mv = memoryview(buf)
    total = 0
    while True:
        k = c.recv_into(buf)
        if k == 0:
            return total, h.hexdigest()
        h.update(mv[:k])
        total += k


def echo_loop(c):
    """Echo until EOF; returns bytes echoed."""
    total = 0
    while True:
        d = c.recv(256 * 1024)
        if not d:
            return total
        c.sendall(d)
        total += len(d)


def cmd_sink(args):
    def handler(c, peer):
        n, digest = recv_all(c)
        out({"peer": fmt(peer), "local": fmt(c.getsockname()),
             "bytes": n, "sha256": digest})
    return serve(args, handler)


def cmd_echo(args):
    def handler(c, peer):
        echo_loop(c)
    return serve(args, handler)


def cmd_whoami(args):
    line = (args.name + "\n").encode()

    def handler(c, peer):
        c.sendall(line)
        echo_loop(c)
    return serve(args, handler)


XFER_HDR = struct.Struct("!Q")     # the B the client wants back


def cmd_xfer_server(args):
    def handler(c, peer):
        hdr = b""
        while len(hdr) < XFER_HDR.size:
            d = c.recv(XFER_HDR.size - len(hdr))
            if not d:
                raise ConnectionError("EOF in header")
            hdr += d
        want = XFER_HDR.unpack(hdr)[0]
        got = len(hdr) + recv_all(c)[0]
        c.sendall(pattern(want, 7))
        out({"peer": fmt(peer), "local": fmt(c.getsockname()),
             "received": got, "sent": want})
    return serve(args, handler)


# --- clients ---------------------------------------------------------------

def connect(to, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(to)
    return s


def read_line(s, limit=256):
    b = b""
    while not b.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            raise ConnectionError("EOF before a full line")
        b += d
        if len(b) > limit:
            raise ValueError("line too long")
    return b.decode().strip()


def cmd_send(args):
    to = addr(args.to)
    t0 = time.monotonic()
    s = connect(to, args.io_timeout)
    rnd = random.Random(args.seed)
    h = hashlib.sha256()
    left = args.bytes
    while left:
        chunk = rnd.randbytes(min(args.chunk, left))
        h.update(chunk)
        s.sendall(chunk)
        left -= len(chunk)
    local, peer = s.getsockname(), s.getpeername()
    if args.hold:
        # everything is written; the test looks at the open connection
        # and then writes a line (or closes stdin)
        out({"event": "sent", "local": fmt(local), "peer": fmt(peer)})
        select.select([sys.stdin], [], [], args.io_timeout)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)      # wait for the sink's close: it has read everything
    elapsed = time.monotonic() - t0
    s.close()
    out({"local": fmt(local), "peer": fmt(peer), "bytes": args.bytes,
         "sha256": h.hexdigest(), "elapsed_s": round(elapsed, 4)})
    return 0


def cmd_connect_many(args):
    to = addr(args.to)
    peers, backends, errors, lat = {}, {}, {}, []
    start = time.monotonic()
    for _ in range(args.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(args.io_timeout)
        t0 = time.monotonic()
        try:
            s.connect(to)
            lat.append(time.monotonic() - t0)
            p = fmt(s.getpeername())
            peers[p] = peers.get(p, 0) + 1
            if args.greeting:
                b = read_line(s)
                backends[b] = backends.get(b, 0) + 1
        except (OSError, ValueError) as e:
            lat.append(time.monotonic() - t0)
            k = errname(e) if isinstance(e, OSError) else "EBADLINE"
            errors[k] = errors.get(k, 0) + 1
        finally:
            s.close()
    lat.sort()
    out({"count": args.count, "peer_names": peers, "backends": backends,
         "errors": errors, "elapsed_s": round(time.monotonic() - start, 3),
         "connect_ms": {"p50": round(lat[len(lat) // 2] * 1e3, 3),
                        "max": round(lat[-1] * 1e3, 3)} if lat else {}})
    return 0


def cmd_session(args):
    to = addr(args.to)
    tries = 0
    while True:
        tries += 1
        s = connect(to, args.io_timeout)
        backend = read_line(s) if args.greeting or args.want else None
        if not args.want or backend == args.want:
            break
        s.close()
        if tries >= args.tries:
            out({"event": "error", "error": "backend %s not reached in %d tries"
                 % (args.want, tries)})
            return 1
    sent = recvd = 0
    info = {"local": fmt(s.getsockname()), "peer": fmt(s.getpeername()),
            "backend": backend}
    out(dict(info, event="connected", tries=tries))
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            if words[0] == "xfer":
                n = int(words[1])
                data = pattern(n, sent)
                t = threading.Thread(target=s.sendall, args=(data,))
                t.start()      # write and read at once: no deadlock on big n
                got = bytearray()
                while len(got) < n:
                    d = s.recv(min(MiB, n - len(got)))
                    if not d:
                        break
                    got += d
                t.join()
                sent += n
                recvd += len(got)
                out(dict(info, event="xfer", bytes=n, ok=bytes(got) == data,
                         sent=sent, received=recvd))
            elif words[0] == "info":
                out(dict(info, event="info", sent=sent, received=recvd))
            elif words[0] == "close":
                break
            else:
                out({"event": "error", "error": "unknown command " + words[0]})
        except OSError as e:
            out(dict(info, event="error", error=errname(e), sent=sent,
                     received=recvd))
            return 1
    s.close()
    out(dict(info, event="closed", sent=sent, received=recvd))
    return 0


def cmd_xfer(args):
    to = addr(args.to)
    rc = 0
    for pair in args.pairs.split(","):
        a, b = (int(x) for x in pair.split(":"))
        if a < XFER_HDR.size:
            raise SystemExit("xfer: A must be >= %d" % XFER_HDR.size)
        s = connect(to, args.io_timeout)
        local, peer = fmt(s.getsockname()), fmt(s.getpeername())
        s.sendall(XFER_HDR.pack(b) + pattern(a - XFER_HDR.size, 3))
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)[0]
        s.close()
        if got != b:
            rc = 1
        out({"local": local, "peer": peer, "sent": a, "received": got,
             "want_received": b})
        if args.gap:
            time.sleep(args.gap)
    return rc


def probe_batch(targets, timeout):
    """Start a non-blocking connect() to every (ip, port[, src_ip]) at
    once (bound to src_ip when given); wait until each is decided or
    timeout seconds passed. Returns, in order,
    "OK", the errno name of the failure (EPERM: refused by the connect()
    hook itself; ECONNREFUSED: an RST came back) or "TIMEOUT" (the SYN got
    no answer). Every socket is closed with RST (SO_LINGER 0) at the end."""
    res = [None] * len(targets)
    socks = {}
    for i, to in enumerate(targets):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.setblocking(False)
        try:
            if len(to) > 2:
                s.bind((to[2], 0))
            e = s.connect_ex(to[:2])
        except OSError as err:
            e = err.errno or errno.EINVAL
        if e == 0:
            res[i] = "OK"
            s.close()
        elif e == errno.EINPROGRESS:
            socks[s.fileno()] = (i, s)
        else:
            res[i] = errno.errorcode.get(e, str(e))
            s.close()
    deadline = time.monotonic() + timeout
    while socks:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _r, w, x = select.select([], list(socks), list(socks), left)
        for fd in set(w) | set(x):
            i, s = socks.pop(fd)
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            res[i] = "OK" if e == 0 else errno.errorcode.get(e, str(e))
            s.close()
    for i, s in socks.values():
        res[i] = "TIMEOUT"
        s.close()
    return res


def cmd_prober(args):
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            timeout = float(words[0])
            targets = []
            for w in words[1:]:
                dst, _, src = w.partition("@")
                targets.append(addr(dst) + ((src,) if src else ()))
        except ValueError:
            out({"error": "bad probe line: " + line.strip()})
            continue
        out({"results": probe_batch(targets, timeout)})
    return 0


# --- ping ----------------------------------------------------------------------

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def ping1(ip, ident, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        body = b"skmesh-topo-ping"
        pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, 1) + body
        t0 = time.monotonic()
        s.sendto(pkt, (ip, 0))
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                return None
            s.settimeout(left)
            try:
                data, src = s.recvfrom(2048)
            except socket.timeout:
                return None
            ihl = (data[0] & 0x0f) * 4
            typ, _code, _ck, rid, _seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and src[0] == ip:
                return time.monotonic() - t0
    finally:
        s.close()


def cmd_ping(args):
    ident = os.getpid() & 0xffff
    bad = 0
    for ip in args.ips:
        rtt = ping1(ip, ident, args.timeout)
        if rtt is None:
            bad += 1
            print("ping %s: no reply in %ss" % (ip, args.timeout))
        else:
            print("ping %s: %.3f ms" % (ip, rtt * 1e3))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(prog="podtool.py")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def server(name, fn, **extra):
        a = sub.add_parser(name)
        a.add_argument("--port", type=int, required=True)
        a.add_argument("--bind", default="0.0.0.0")
        a.add_argument("--count-conns", type=int, default=0,
                       help="exit after N connections (0: until --timeout)")
        a.add_argument("--timeout", type=float, default=120,
                       help="exit after this many seconds")
        a.add_argument("--io-timeout", type=float, default=30)
        a.set_defaults(fn=fn)
        return a

    def client(name, fn):
        a = sub.add_parser(name)
        a.add_argument("--to", required=True, help="IP:PORT")
        a.add_argument("--io-timeout", type=float, default=10)
        a.set_defaults(fn=fn)
        return a

    server("sink", cmd_sink)
    server("echo", cmd_echo)
    server("whoami", cmd_whoami).add_argument("--name", required=True)
    server("xfer-server", cmd_xfer_server)

    a = client("send", cmd_send)
    a.add_argument("--bytes", type=int, required=True)
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--chunk", type=int, default=MiB)
    a.add_argument("--hold", action="store_true",
                   help="after the last write print {event: sent} and keep "
                   "the connection open until a line on stdin")

    a = client("connect-many", cmd_connect_many)
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--greeting", action="store_true",
                   help="read the whoami line of each connection")

    a = client("session", cmd_session)
    a.add_argument("--greeting", action="store_true")
    a.add_argument("--want", help="reconnect until this backend answers")
    a.add_argument("--tries", type=int, default=200)

    a = client("xfer", cmd_xfer)
    a.add_argument("--pairs", required=True, help="A:B,... (A >= 8)")
    a.add_argument("--gap", type=float, default=0)

    a = sub.add_parser("prober")
    a.set_defaults(fn=cmd_prober)

    a = sub.add_parser("ping")
    a.add_argument("--timeout", type=float, default=1)
    a.add_argument("ips", nargs="+")
    a.set_defaults(fn=cmd_ping)

    args = ap.parse_args()
    try:
        return args.fn(args)
    except OSError as e:
        out({"event": "error", "error": errname(e), "detail": str(e)})
        return 2


if __name__ == "__main__":
    sys.exit(main())
