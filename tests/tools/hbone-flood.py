#!/usr/bin/python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
hbone-flood.py - a hostile HBONE peer (Python's ssl and h2), for the
tests that bound what one peer may take of meshd's tunnel. Every mode
is bounded in count and time, talks only to the --to address it is
given, and prints one JSON line with what it saw.

  stall       --n N --hold S   N TCP connections that never start their
              TLS handshake, held S seconds; counts those meshd refused
              (connect failed, or closed at once: a limit) and closed later
              (the handshake timeout)
  handshakes  --n N            N full mutual TLS handshakes, one after
              the other, each closed at once; counts done / refused
  streams     --conns C --streams K --bytes B --hold S --authority IP:PORT
              C TLS connections with K CONNECT streams each; each sends B
              bytes, never hands back flow-control window (never
              consumes what arrives), and after --stop-reading-after
              seconds stops reading its socket at all; held S seconds
  resets      --n N --authority IP:PORT   one connection sending N
              HEADERS + RST_STREAM pairs as fast as it can; reports
              whether meshd answered GOAWAY and with which error, and
              whether it closed the connection

Run with /usr/bin/python3 (Debian's python3-h2).
"""
import argparse
import json
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def tls_ctx(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False      # SPIFFE IDs, not host names
    ctx.load_verify_locations(a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def dial(a, timeout=5):
    s = socket.create_connection(addr(a.to), timeout=timeout)
    return tls_ctx(a).wrap_socket(s, server_hostname=None)


def out(d):
    print(json.dumps(d), flush=True)


def closed_by_peer(s):
    """Whether the peer closed or reset the TCP connection S."""
    try:
        r, _, _ = select.select([s], [], [], 0)
        if not r:
            return False
        return s.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def cmd_stall(a):
    socks, refused = [], 0
    for _ in range(a.n):
        try:
            socks.append(socket.create_connection(addr(a.to), timeout=5))
        except OSError:
            refused += 1
    time.sleep(0.5)
    early = sum(1 for s in socks if closed_by_peer(s))
    deadline = time.monotonic() + a.hold
    while time.monotonic() < deadline:
        time.sleep(0.2)
    late = sum(1 for s in socks if closed_by_peer(s)) - early
    for s in socks:
        s.close()
    out({"mode": "stall", "n": a.n, "connect_failed": refused, "closed_at_once": early,
         "closed_later": late, "still_open": len(socks) - early - late})
    return 0


def cmd_handshakes(a):
    done = refused = 0
    t0 = time.monotonic()
    for _ in range(a.n):
        try:
            s = dial(a)
            s.close()
            done += 1
        except (OSError, ssl.SSLError):
            refused += 1
    out({"mode": "handshakes", "n": a.n, "done": done, "refused": refused,
         "seconds": round(time.monotonic() - t0, 2)})
    return 0


def h2_conn():
    # h2 would ask a CONNECT for :scheme and :path, which HBONE's has not
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
        validate_inbound_headers=False))
    c.initiate_connection()
    return c


def connect_headers(a):
    return [(":method", "CONNECT"), (":authority", a.authority)]


def cmd_streams(a):
    conns = []
    payload = b"\xa5" * 16384
    for _ in range(a.conns):
        try:
            s = dial(a)
        except (OSError, ssl.SSLError):
            continue
        s.setblocking(False)
        c = h2_conn()
        c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        conns.append({"s": s, "c": c, "sids": [], "sent": {}, "reading": True,
                      "status": {}, "dead": False, "pend": b""})
    for x in conns:
        for _ in range(a.streams):
            try:
                sid = x["c"].get_next_available_stream_id()
                x["c"].send_headers(sid, connect_headers(a))
                x["sids"].append(sid)
                x["sent"][sid] = 0
            except h2.exceptions.ProtocolError:
                break
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.hold:
        busy = False
        reading = time.monotonic() - t0 < a.stop_reading_after
        for x in conns:
            if x["dead"]:
                continue
            s, c = x["s"], x["c"]
            if reading:
                try:
                    d = s.recv(1 << 16)
                    if not d:
                        x["dead"] = True
                        continue
                    for ev in c.receive_data(d):
                        if isinstance(ev, h2.events.ResponseReceived):
                            x["status"][ev.stream_id] = dict(ev.headers).get(":status")
                        # DataReceived: never acknowledged, the window stays shut
                except (ssl.SSLWantReadError, BlockingIOError):
                    pass
                except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
                    x["dead"] = True
                    continue
            for sid in x["sids"]:
                if x["sent"][sid] >= a.bytes or x["status"].get(sid) != "200":
                    continue
                try:
                    n = min(len(payload), a.bytes - x["sent"][sid],
                            c.local_flow_control_window(sid))
                    if n > 0:
                        c.send_data(sid, payload[:n])
                        x["sent"][sid] += n
                        busy = True
                except (h2.exceptions.ProtocolError, h2.exceptions.FlowControlError,
                        KeyError):
                    pass
            x["pend"] += c.data_to_send()
            while x["pend"]:
                try:
                    n = s.send(x["pend"][:16384])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    break
                except (OSError, ssl.SSLError):
                    x["dead"] = True
                    break
                x["pend"] = x["pend"][n:]
        if not busy:
            time.sleep(0.05)
    ok = sum(1 for x in conns for v in x["status"].values() if v == "200")
    out({"mode": "streams", "conns": len(conns), "streams_200": ok,
         "bytes_sent": sum(sum(x["sent"].values()) for x in conns),
         "conns_closed_by_peer": sum(1 for x in conns if x["dead"])})
    for x in conns:
        x["s"].close()
    return 0


def cmd_resets(a):
    s = dial(a)
    s.settimeout(5)
    c = h2_conn()
    s.sendall(c.data_to_send())
    st = {"goaway": None, "closed": 0}
    sent = 0

    def take():
        """Reads what meshd sent; False once it closed."""
        d = s.recv(1 << 16)
        if not d:
            st["closed"] = 1
            return False
        for ev in c.receive_data(d):
            if isinstance(ev, h2.events.ConnectionTerminated):
                st["goaway"] = ev.error_code
        return st["goaway"] is None

    t0 = time.monotonic()
    try:
        for i in range(a.n):
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, connect_headers(a))
            c.reset_stream(sid)
            sent += 1
            if i % 50 == 49:
                s.sendall(c.data_to_send())
                if select.select([s], [], [], 0)[0] and not take():
                    break
        s.sendall(c.data_to_send())
        deadline = time.monotonic() + 5
        while st["goaway"] is None and time.monotonic() < deadline and take():
            pass
    except TimeoutError:
        pass                  # still open
    except (OSError, ssl.SSLError):
        st["closed"] = 1      # reset: a GOAWAY in flight may be lost with it
    except h2.exceptions.ProtocolError:
        pass
    goaway = st["goaway"]
    out({"mode": "resets", "sent": sent, "closed": bool(st["closed"] or goaway is not None),
         "goaway": None if goaway is None else int(goaway),
         "seconds": round(time.monotonic() - t0, 2)})
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name, fn in (("stall", cmd_stall), ("handshakes", cmd_handshakes),
                     ("streams", cmd_streams), ("resets", cmd_resets)):
        q = sub.add_parser(name)
        q.add_argument("--to", required=True, help="HOST:PORT (a pod's 15008)")
        q.add_argument("--cert")
        q.add_argument("--key")
        q.add_argument("--ca")
        q.add_argument("--n", type=int, default=100)
        q.add_argument("--hold", type=float, default=5)
        q.add_argument("--authority", default="")
        q.add_argument("--conns", type=int, default=4)
        q.add_argument("--streams", type=int, default=10)
        q.add_argument("--bytes", type=int, default=1 << 20)
        q.add_argument("--stop-reading-after", type=float, default=2)
        q.set_defaults(fn=fn)
    a = p.parse_args()
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
