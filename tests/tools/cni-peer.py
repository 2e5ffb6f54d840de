#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
cni-peer.py - meshd's side of skmesh-cni's socket (include/skmesh-cni.h),
for the CNI plugin tests: it listens on a unix socket, reads each
request (one JSON object, to '\\n' or EOF), prints it as a JSON line on
stdout ({"request": ...}) and answers as told. Python stdlib only.

  cni-peer.py SOCKET --mode ok|refuse|silent|garbage

      ok      answers {"ok": true}
      refuse  answers {"ok": false, "error": "refused by the test peer"}
      silent  reads the request and never answers (holds the connection)
      garbage answers what is not the protocol (an HTTP response)

Prints {"listening": SOCKET} once ready; runs until killed.
"""
import argparse
import json
import os
import socket
import sys

MSG_MAX = 64 * 1024


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--mode", choices=("ok", "refuse", "silent", "garbage"), default="ok")
    a = ap.parse_args()
    if os.path.exists(a.socket):
        os.unlink(a.socket)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.socket)
    srv.listen(16)
    out({"listening": a.socket})
    held = []
    while True:
        c, _ = srv.accept()
        c.settimeout(10)
        buf = b""
        try:
            while b"\n" not in buf and len(buf) <= MSG_MAX:
                d = c.recv(65536)
                if not d:
                    break
                buf += d
        except OSError as e:
            out({"error": str(e)})
            c.close()
            continue
        try:
            req = json.loads(buf.decode())
        except ValueError as e:
            out({"error": "bad request: %s" % e, "raw": buf[:200].decode(errors="replace")})
            c.close()
            continue
        out({"request": req})
        if a.mode == "silent":
            held.append(c)
            continue
        if a.mode == "garbage":
            c.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
            c.close()
            continue
        reply = {"ok": True} if a.mode == "ok" else {"ok": False,
                                                     "error": "refused by the test peer"}
        c.sendall((json.dumps(reply) + "\n").encode())
        c.close()


if __name__ == "__main__":
    main()
