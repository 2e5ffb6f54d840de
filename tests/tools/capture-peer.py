#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
capture-peer.py - both ends of a captured connection, for the kernel
capture tests: meshd's outbound listener (a socket with meshd's SO_MARK,
in the pod's network namespace) and an application client. Python
stdlib and tests/lib/podtool.py only; JSON lines on stdout; driven by
lines on stdin, so a test can look at the kernel maps between any two
steps. Every socket operation has a timeout.

  listen --bind IP:PORT [--mark M]
      {"listening": PORT, "mark": M} once listening, then per command:
        accept TIMEOUT  accept one connection: {"conn": N, "peer", "local",
                        "mark": SO_MARK of the accepted socket}
        echo N          read conn N to EOF, write it all back, then
                        shut down the write side: {"conn", "received",
                        "echoed", "pattern_ok": it is what client sends}
        drain N         read conn N to EOF: {"conn", "received",
                        "pattern_ok"}
        close N         {"conn": N, "closed": true}
  client --to IP:PORT [--mark M] [--send BYTES --close]
      connect: {"event": "connected", "local", "peer" (getpeername),
      "mark"} or {"event": "error", "error": ERRNO}; with --send, write
      BYTES at once and (--close) close at once, then exit. Commands:
        xfer BYTES      write BYTES, shut down the write side, read to
                        EOF: {"event": "xfer", "sent", "received",
                        "ok": what came back is what was sent}
        close           {"event": "closed"}, exit
"""

import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "lib"))
sys.dont_write_bytecode = True     # no __pycache__ in the source tree
from podtool import addr, errname, fmt, out, pattern  # noqa: E402

IO_TIMEOUT = 10


def tcp_socket(mark):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if mark:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    return s


def commands():
    """The words of each non-empty line on stdin."""
    for line in sys.stdin:
        if line.split():
            yield line.split()


def mark_of(s):
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)


def recv_all(s):
    buf = bytearray()
    while True:
        d = s.recv(1 << 20)
        if not d:
            return bytes(buf)
        buf += d


def cmd_listen(args):
    ls = tcp_socket(args.mark)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(addr(args.bind))
    ls.listen(64)
    out({"listening": ls.getsockname()[1], "mark": mark_of(ls)})
    conns = {}
    for w in commands():
        try:
            if w[0] == "accept":
                ls.settimeout(float(w[1]))
                c, peer = ls.accept()
                c.settimeout(IO_TIMEOUT)
                n = len(conns) + 1
                conns[n] = c
                out({"conn": n, "peer": fmt(peer), "local": fmt(c.getsockname()),
                     "mark": mark_of(c)})
            elif w[0] == "echo":
                n = int(w[1])
                data = recv_all(conns[n])
                conns[n].sendall(data)
                conns[n].shutdown(socket.SHUT_WR)
                out({"conn": n, "received": len(data), "echoed": len(data),
                     "pattern_ok": data == pattern(len(data))})
            elif w[0] == "drain":
                n = int(w[1])
                data = recv_all(conns[n])
                out({"conn": n, "received": len(data),
                     "pattern_ok": data == pattern(len(data))})
            elif w[0] == "close":
                n = int(w[1])
                conns.pop(n).close()
                out({"conn": n, "closed": True})
            else:
                out({"error": "unknown command " + w[0]})
        except socket.timeout:
            out({"error": "timeout"})
        except OSError as e:
            out({"error": errname(e)})
    return 0


def cmd_client(args):
    s = tcp_socket(args.mark)
    s.settimeout(args.timeout)
    try:
        s.connect(addr(args.to))
    except OSError as e:
        out({"event": "error", "error": errname(e)})
        return 0
    s.settimeout(IO_TIMEOUT)
    out({"event": "connected", "local": fmt(s.getsockname()),
         "peer": fmt(s.getpeername()), "mark": mark_of(s)})
    if args.send is not None:
        s.sendall(pattern(args.send))
        if args.close:
            s.close()
            out({"event": "closed"})
            return 0
    for w in commands():
        try:
            if w[0] == "xfer":
                data = pattern(int(w[1]))
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                got = recv_all(s)
                out({"event": "xfer", "sent": len(data), "received": len(got),
                     "ok": got == data})
            elif w[0] == "close":
                break
            else:
                out({"event": "error", "error": "unknown command " + w[0]})
        except OSError as e:
            out({"event": "error", "error": errname(e)})
    s.close()
    out({"event": "closed"})
    return 0


def main():
    ap = argparse.ArgumentParser(prog="capture-peer.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("listen")
    a.add_argument("--bind", required=True, help="IP:PORT")
    a.add_argument("--mark", type=lambda v: int(v, 0), default=0)
    a.set_defaults(fn=cmd_listen)
    a = sub.add_parser("client")
    a.add_argument("--to", required=True, help="IP:PORT")
    a.add_argument("--mark", type=lambda v: int(v, 0), default=0)
    a.add_argument("--timeout", type=float, default=3)
    a.add_argument("--send", type=int, help="write BYTES at once")
    a.add_argument("--close", action="store_true", help="with --send: then close")
    a.set_defaults(fn=cmd_client)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
