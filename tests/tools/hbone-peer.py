#!/usr/bin/python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
hbone-peer.py - an HBONE client and server on another HTTP/2 stack
(Python's h2 over ssl), for interoperability tests of meshd's tunnel.

HBONE as Istio's ztunnel speaks it: HTTP/2 CONNECT over mutual TLS 1.3,
ALPN "h2", no SNI, TLS_AES_256_GCM_SHA384 / TLS_AES_128_GCM_SHA256 only,
certificates with one URI SAN spiffe://<td>/ns/<ns>/sa/<sa>. A stream is
one tunnelled TCP connection: request `:method CONNECT`, `:authority
IP:PORT` plus `forwarded`, `baggage` and `traceparent` headers; response
`:status 200` once the destination answered (400 bad request, 503
destination unreachable); then DATA both ways, END_STREAM for a FIN (the
other direction stays open), RST_STREAM for an abort. HTTP/2 settings as
ztunnel's: 4 MiB stream window, 16 MiB connection window, 1 MiB frames,
100 concurrent streams.

Run with /usr/bin/python3 (Debian's python3-h2).

  client --to HOST[:15008] --authority IP:PORT --cert F --key F --ca F
         [--expect-id spiffe://...] [--streams N --bytes B]
      One TLS connection. Without --streams: one CONNECT, then stdin goes
      to the stream and the stream to stdout; END_STREAM when stdin ends,
      exit once the peer ended its side too. With --streams N --bytes B:
      N concurrent streams on the one connection, each sends B
      pseudo-random bytes (and END_STREAM) to an echo and checks the
      sha256 of what comes back; one JSON line on stdout.
      Negative tests: --no-cert, --alpn PROTO, --tls12.
      Progress and the peer's identity go to stderr.
  server [--listen ADDR:15008] --cert F --key F --ca F [--echo]
      Requires a client certificate from the CA with a SPIFFE ID in
      --trust-domain; per stream: 400 for a request that is not a CONNECT
      to IP:PORT, else connects to the authority (--echo: answers itself)
      and answers 200, or 503 when that fails; relays both ways. JSON
      lines on stdout: {"listening": PORT}, then one per connection and
      stream event. Exits after --timeout seconds or on SIGTERM.
  ca --out DIR --trust-domain TD
      A root CA made with the openssl CLI, as `meshctl ca init` makes
      one: DIR/root-cert.pem and DIR/root-key.pem (ECDSA P-256).
  leaf --ca-dir DIR --id SPIFFE --out PREFIX
      A workload certificate signed by that CA: PREFIX.cert.pem (leaf,
      then root) and PREFIX.key.pem (PKCS#8, 0600).

Client exit status: 0 success; 1 transfer failed (reset, checksum, I/O);
2 usage; 3 the response was not 200 (the status is printed); 4 TLS or
peer identity refused; 5 no TCP connection.
"""

import os
import sys
import tempfile

# TLS 1.3 suites can only be restricted through OpenSSL's configuration
# (the ssl module has no SSL_CTX_set_ciphersuites), and it is read when
# the library initialises: set it before ssl is imported.
TLS13_SUITES = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"


def _restrict_tls13_suites():
    fd, path = tempfile.mkstemp(prefix="hbone-peer-", suffix=".cnf")
    with os.fdopen(fd, "w") as f:
        f.write("openssl_conf = hp_init\n[hp_init]\nssl_conf = hp_ssl\n"
                "[hp_ssl]\nsystem_default = hp_sys\n[hp_sys]\n"
                "Ciphersuites = %s\n" % TLS13_SUITES)
    os.environ["OPENSSL_CONF"] = path
    return path


_conf = _restrict_tls13_suites()
import ssl  # noqa: E402
ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)     # loads the configuration
os.unlink(_conf)
del os.environ["OPENSSL_CONF"]     # not for the openssl CLI we may run

import argparse  # noqa: E402
import asyncio  # noqa: E402
import hashlib  # noqa: E402
import ipaddress  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
except ImportError:
    sys.exit("hbone-peer: python3-h2 is missing (apt-get install python3-h2; "
             "run with /usr/bin/python3, not another python)")

HBONE_PORT = 15008
STREAM_WINDOW = 4 << 20
CONN_WINDOW = 16 << 20
FRAME_SIZE = 1 << 20
MAX_STREAMS = 100
READ_SIZE = 256 << 10
CONNECT_TIMEOUT = 10.0

EXIT_OK, EXIT_XFER, EXIT_USAGE, EXIT_STATUS, EXIT_TLS, EXIT_TCP = 0, 1, 2, 3, 4, 5


class PeerError(Exception):
    """A failure that ends the run with exit status .code."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


class StreamReset(Exception):
    """The peer reset the stream (or the connection went away)."""


EOF = object()  # queued after the peer's END_STREAM


def log(msg):
    print("hbone-peer: " + msg, file=sys.stderr, flush=True)


def emit(obj):
    """One JSON line on stdout (server events, client summaries)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


# --- identities ---------------------------------------------------------

def spiffe_ids(peercert):
    """URI SANs of a getpeercert() dict that are SPIFFE IDs."""
    return [v for k, v in (peercert or {}).get("subjectAltName", ())
            if k == "URI" and v.startswith("spiffe://")]


def spiffe_parts(sid):
    """spiffe://TD/ns/NS/sa/SA -> (TD, NS, SA); None for another shape."""
    if not sid.startswith("spiffe://"):
        return None
    p = sid[len("spiffe://"):].split("/")
    if len(p) != 5 or p[1] != "ns" or p[3] != "sa" or not all(p):
        return None
    return p[0], p[2], p[4]


def check_peer_id(peercert, expect=None, trust_domain=None):
    """The peer's SPIFFE ID; raises PeerError(EXIT_TLS) unless the
    certificate has exactly one SPIFFE URI SAN (equal to expect, in
    trust_domain, when given)."""
    ids = spiffe_ids(peercert)
    if len(ids) != 1:
        raise PeerError(EXIT_TLS, "peer certificate has %d SPIFFE URI SANs (%s), "
                        "want exactly one" % (len(ids), ", ".join(ids) or "none"))
    sid = ids[0]
    parts = spiffe_parts(sid)
    if parts is None:
        raise PeerError(EXIT_TLS, "peer ID %s is not spiffe://TD/ns/NS/sa/SA" % sid)
    if expect and sid != expect:
        raise PeerError(EXIT_TLS, "peer is %s but %s was expected" % (sid, expect))
    if trust_domain and parts[0] != trust_domain:
        raise PeerError(EXIT_TLS, "peer trust domain %s is not %s" % (parts[0], trust_domain))
    return sid


def parse_authority(auth):
    """'a.b.c.d:port' or '[v6]:port' -> (ip, port); None when malformed
    (a host name is malformed here: HBONE dials addresses)."""
    if not auth:
        return None
    if auth.startswith("["):
        host, sep, port = auth[1:].partition("]:")
        if not sep:
            return None
    else:
        host, sep, port = auth.rpartition(":")
        if not sep or ":" in host:
            return None
    try:
        ip = ipaddress.ip_address(host)
        p = int(port, 10)
    except ValueError:
        return None
    if not 0 < p < 65536 or (auth.startswith("[") != (ip.version == 6)):
        return None
    return str(ip), p


def describe(e):
    """An exception in words, also one with an empty message."""
    return "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__


def fmt_addr(ip, port):
    return "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)


def traceparent():
    """A W3C traceparent as ztunnel makes one per connection: version 00,
    random trace and parent ids, flags 00."""
    return "00-%032x-%016x-00" % (random.getrandbits(128), random.getrandbits(64))


def baggage_for(own_id, cluster="Kubernetes"):
    """ztunnel's baggage for a source workload, from our own identity."""
    parts = spiffe_parts(own_id or "") or ("", "default", "unknown")
    _td, ns, sa = parts
    return ("k8s.cluster.name=%s,k8s.namespace.name=%s,k8s.deployment.name=%s,"
            "service.name=%s,service.version=latest" % (cluster, ns, sa, sa))


def own_id(certfile):
    """The SPIFFE ID of our own certificate (first in certfile)."""
    try:
        info = ssl._ssl._test_decode_cert(certfile)
    except (OSError, ssl.SSLError, AttributeError):
        return None
    ids = spiffe_ids(info)
    return ids[0] if ids else None


# --- TLS contexts -------------------------------------------------------

def tls_context(a, server):
    """Mutual TLS as ztunnel configures it (see the module comment);
    --tls12, --alpn and --no-cert bend it for negative tests."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    if getattr(a, "tls12", False):
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    else:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False       # SPIFFE IDs are checked instead
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(a.ca)
    if not getattr(a, "no_cert", False):
        ctx.load_cert_chain(a.cert, a.key)
    alpn = getattr(a, "alpn", "h2")
    if alpn:
        ctx.set_alpn_protocols([alpn])
    return ctx


# --- HTTP/2 connection ---------------------------------------------------

class Stream:
    """One CONNECT stream: what arrived (chunks, then EOF or a
    StreamReset), the response and the byte counts."""

    def __init__(self, sid):
        self.sid = sid
        self.q = asyncio.Queue()
        self.response = asyncio.get_running_loop().create_future()
        self.reset = None         # error code once reset
        self.bytes_in = 0
        self.bytes_out = 0


class H2Conn:
    """An HTTP/2 connection over an asyncio TLS stream. One reader task
    feeds h2; senders wait for flow-control window; received data is
    acknowledged (WINDOW_UPDATE) only once its consumer has used it, so
    nothing is buffered beyond the windows we advertised."""

    def __init__(self, reader, writer, server, on_request=None):
        cfg = h2.config.H2Configuration(
            client_side=not server, header_encoding="utf-8",
            # h2 demands :scheme and :path on every request, which a
            # CONNECT must not have (RFC 9113 8.5): validated here instead
            validate_outbound_headers=False, validate_inbound_headers=False,
            normalize_inbound_headers=True)
        self.conn = h2.connection.H2Connection(cfg)
        self.reader, self.writer = reader, writer
        self.server = server
        self.on_request = on_request
        self.streams = {}
        self.closed = None        # reason, once the connection is gone
        self.lost = False         # the transport failed: write nothing
        self.settings_seen = False  # the peer's preface arrived
        self._waiters = []        # futures of senders waiting for window
        self.tasks = set()
        s = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
             h2.settings.SettingCodes.MAX_FRAME_SIZE: FRAME_SIZE,
             h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS}
        if not server:
            s[h2.settings.SettingCodes.ENABLE_PUSH] = 0
        # initial values go out with the preface; h2 takes them as
        # already in force, so its inbound frame limit is set by hand
        self.conn.local_settings = h2.settings.Settings(client=not server, initial_values=s)
        self.conn.max_inbound_frame_size = FRAME_SIZE
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONN_WINDOW - 65535)
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing() and not self.lost:
            self.writer.write(data)

    def _wake(self):
        for f in self._waiters:
            if not f.done():
                f.set_result(None)
        self._waiters = []

    def fail(self, reason):
        """The connection is gone: every stream ends with a reset."""
        if self.closed is None:
            self.closed = reason
        for st in self.streams.values():
            if st.reset is None:
                st.reset = "connection closed: %s" % reason
                st.q.put_nowait(StreamReset(st.reset))
            if not st.response.done():
                st.response.set_exception(StreamReset(self.closed))
                st.response.exception()     # no warning if nobody waits
        self._wake()

    async def run(self):
        """Reads until the connection ends; returns the reason."""
        try:
            while True:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    self.lost = True
                    self.fail("peer closed the connection")
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    self.flush()
                    self.fail("HTTP/2 protocol error: %s" % e)
                    break
                for ev in events:
                    self._event(ev)
                self.flush()
                if self.closed:
                    break
        except (ssl.SSLError, OSError) as e:
            self.lost = True
            self.fail("%s: %s" % (type(e).__name__, e))
        except asyncio.CancelledError:
            self.fail("cancelled")
            raise
        return self.closed

    def _event(self, ev):
        E = h2.events
        if isinstance(ev, E.RequestReceived):
            st = Stream(ev.stream_id)
            self.streams[ev.stream_id] = st
            if self.on_request:
                self.spawn(self.on_request(self, st, ev.headers))
        elif isinstance(ev, E.ResponseReceived):
            st = self.streams.get(ev.stream_id)
            if st and not st.response.done():
                st.response.set_result(ev.headers)
        elif isinstance(ev, E.DataReceived):
            st = self.streams.get(ev.stream_id)
            if st is None or st.reset is not None:
                self.ack(ev.stream_id, ev.flow_controlled_length)
            else:
                st.bytes_in += len(ev.data)
                st.q.put_nowait((ev.data, ev.flow_controlled_length))
        elif isinstance(ev, E.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st:
                st.q.put_nowait(EOF)
        elif isinstance(ev, E.StreamReset):
            st = self.streams.get(ev.stream_id)
            if st and st.reset is None:
                try:
                    name = h2.errors.ErrorCodes(ev.error_code).name
                except ValueError:
                    name = str(ev.error_code)
                st.reset = name
                st.q.put_nowait(StreamReset("stream reset by peer (%s)" % name))
                if not st.response.done():
                    st.response.set_exception(StreamReset("stream reset by peer (%s)" % name))
                    st.response.exception()
            self._wake()
        elif isinstance(ev, (E.WindowUpdated, E.RemoteSettingsChanged)):
            if isinstance(ev, E.RemoteSettingsChanged):
                self.settings_seen = True
            self._wake()
        elif isinstance(ev, E.ConnectionTerminated):
            try:
                name = h2.errors.ErrorCodes(ev.error_code).name
            except ValueError:
                name = str(ev.error_code)
            self.fail("GOAWAY (%s)" % name)

    def spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    def ack(self, sid, n):
        """Tell the peer n bytes of stream sid were consumed."""
        if n and self.closed is None:
            self.conn.acknowledge_received_data(n, sid)
            self.flush()

    async def send(self, st, data):
        """Send data on st within the peer's flow-control windows."""
        mv = memoryview(data)
        off = 0
        while off < len(mv):
            if st.reset is not None:
                raise StreamReset(st.reset)
            try:
                win = self.conn.local_flow_control_window(st.sid)
            except h2.exceptions.StreamClosedError:
                raise StreamReset("stream closed")
            n = min(win, self.conn.max_outbound_frame_size, len(mv) - off)
            if n <= 0:
                f = asyncio.get_running_loop().create_future()
                self._waiters.append(f)
                await f
                continue
            try:
                self.conn.send_data(st.sid, mv[off:off + n].tobytes())
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
                raise StreamReset("stream closed (%s)" % e)
            off += n
            st.bytes_out += n
            self.flush()
            try:
                await self.writer.drain()
            except (OSError, ssl.SSLError) as e:
                self.lost = True
                self.fail("%s: %s" % (type(e).__name__, e))
                raise StreamReset(st.reset)

    def end_stream(self, st):
        if st.reset is None and self.closed is None:
            try:
                self.conn.end_stream(st.sid)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self.flush()

    def reset_stream(self, st, code=h2.errors.ErrorCodes.CANCEL):
        if st.reset is None and self.closed is None:
            st.reset = "reset by us (%s)" % code.name
            try:
                self.conn.reset_stream(st.sid, code)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass
            self.flush()
            self._wake()

    def respond(self, st, status, end=False):
        self.conn.send_headers(st.sid, [(":status", str(status))], end_stream=end)
        self.flush()

    async def recv(self, st):
        """Next (bytes, flow-controlled length) of st, or EOF; raises
        StreamReset."""
        item = await st.q.get()
        if isinstance(item, StreamReset):
            raise item
        return item

    async def close(self):
        if self.closed is None:
            self.closed = "closed by us"
            try:
                self.conn.close_connection()
                self.flush()
            except h2.exceptions.ProtocolError:
                pass
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (asyncio.TimeoutError, OSError, ssl.SSLError):
            pass


# --- client -------------------------------------------------------------

def tls_summary(writer):
    sslobj = writer.get_extra_info("ssl_object")
    c = sslobj.cipher() if sslobj else None
    return {"version": sslobj.version() if sslobj else None,
            "cipher": c[0] if c else None,
            "alpn": sslobj.selected_alpn_protocol() if sslobj else None}


async def client_connect(a):
    """TLS + HTTP/2 to the peer; returns (H2Conn, reader task, info)."""
    host, _, port = a.to.rpartition(":") if a.to.count(":") == 1 else (a.to, "", "")
    port = int(port) if port else HBONE_PORT
    try:
        ip = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as e:
        raise PeerError(EXIT_TCP, "cannot resolve %s: %s" % (host, e))
    ctx = tls_context(a, server=False)
    loop = asyncio.get_running_loop()
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as e:
        sock.close()
        raise PeerError(EXIT_TCP, "connect to %s failed: %s" % (fmt_addr(ip, port), describe(e)))
    try:
        # server_hostname = the address: Python sends no SNI for an IP
        # address, as ztunnel sends none
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=ctx, server_hostname=ip,
                                    limit=READ_SIZE * 4),
            CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as e:
        sock.close()
        # a reset during the handshake is how a TLS 1.3 server that
        # refuses our version or suites appears here
        raise PeerError(EXIT_TLS, "TLS handshake with %s failed: %s"
                        % (fmt_addr(ip, port), describe(e)))
    info = tls_summary(writer)
    info["peer"] = fmt_addr(ip, port)
    # the server may already have refused us (a TLS 1.3 server checks the
    # client certificate after the client's handshake ended)
    local = writer.get_extra_info("sockname") or ("0.0.0.0", 0)
    info["local"] = fmt_addr(local[0], local[1])
    try:
        if info["alpn"] != "h2":
            raise PeerError(EXIT_TLS, "server selected ALPN %r, not h2" % info["alpn"])
        info["peer_id"] = check_peer_id(writer.get_extra_info("peercert"), a.expect_id)
    except PeerError:
        writer.close()
        raise
    log("connected to %s from %s, %s %s, ALPN %s, server %s"
        % (info["peer"], info["local"], info["version"], info["cipher"],
           info["alpn"], info["peer_id"]))
    hc = H2Conn(reader, writer, server=False)
    rt = asyncio.get_running_loop().create_task(hc.run())
    return hc, rt, info


def request_headers(a, info):
    me = own_id(a.cert) if not a.no_cert else None
    h = [(":method", "CONNECT"), (":authority", a.authority)]
    if not a.no_forwarded:
        h.append(("forwarded", 'for="%s"' % (a.forwarded_for or info["local"])))
    return h + [("baggage", a.baggage or baggage_for(me)), ("traceparent", traceparent())]


async def open_stream(hc, a, info):
    """Sends a CONNECT; returns the Stream once 200 arrived. A first
    failure on the connection (TLS alert after the handshake, as TLS 1.3
    sends a client certificate refusal) is EXIT_TLS."""
    sid = hc.conn.get_next_available_stream_id()
    st = Stream(sid)
    hc.streams[sid] = st
    hc.conn.send_headers(sid, request_headers(a, info))
    hc.flush()
    try:
        headers = await asyncio.wait_for(asyncio.shield(st.response), a.timeout)
    except StreamReset as e:
        if not hc.settings_seen:
            # gone before the server's HTTP/2 preface: refused at the TLS
            # level after our side of the handshake (TLS 1.3 checks the
            # client certificate then)
            raise PeerError(EXIT_TLS, "server refused the connection: %s" % e)
        raise PeerError(EXIT_XFER, "no response: %s" % e)
    except asyncio.TimeoutError:
        raise PeerError(EXIT_XFER, "no response in %ss" % a.timeout)
    status = dict(headers).get(":status")
    if status != "200":
        raise PeerError(EXIT_STATUS, "status %s" % status)
    return st


def stdin_reader(loop, q):
    """Reads stdin in a thread (a regular file cannot be polled) into the
    bounded asyncio queue q; b"" at EOF."""
    def run():
        while True:
            try:
                d = os.read(0, READ_SIZE)
            except OSError:
                d = b""
            try:
                asyncio.run_coroutine_threadsafe(q.put(d), loop).result()
            except (RuntimeError, asyncio.CancelledError):
                return
            if not d:
                return
    threading.Thread(target=run, daemon=True).start()


async def client_relay(a):
    hc, rt, info = await client_connect(a)
    try:
        st = await open_stream(hc, a, info)
        log("%s: status 200" % a.authority)
        loop = asyncio.get_running_loop()
        inq = asyncio.Queue(maxsize=4)
        stdin_reader(loop, inq)

        async def up():
            while True:
                d = await inq.get()
                if not d:
                    hc.end_stream(st)
                    return
                await hc.send(st, d)

        async def down():
            out = sys.stdout.buffer
            while True:
                item = await hc.recv(st)
                if item is EOF:
                    out.flush()
                    return
                data, n = item
                out.write(data)
                out.flush()
                hc.ack(st.sid, n)

        tu, td = hc.spawn(up()), hc.spawn(down())
        done, _ = await asyncio.wait([td, tu], timeout=a.timeout,
                                     return_when=asyncio.FIRST_EXCEPTION)
        for t in (td, tu):
            if t in done and t.exception():
                tu.cancel()
                td.cancel()
                raise PeerError(EXIT_XFER, str(t.exception()))
        if not td.done():
            raise PeerError(EXIT_XFER, "peer did not end its side within %ss" % a.timeout)
        if not tu.done():
            # the peer ended its side; stdin is still open: keep sending
            # (half-close) until it ends
            await tu
        log("%s: done, sent %d, received %d bytes" % (a.authority, st.bytes_out, st.bytes_in))
        return EXIT_OK
    finally:
        await hc.close()
        rt.cancel()


def pseudo_random(seed, n):
    """n deterministic bytes of stream seed, in chunks."""
    rnd = random.Random(seed)
    left = n
    while left:
        k = min(READ_SIZE, left)
        yield rnd.randbytes(k)
        left -= k


async def client_streams(a):
    hc, rt, info = await client_connect(a)
    t0 = time.monotonic()
    results = []

    async def one(i):
        r = {"stream": i, "ok": False}
        try:
            st = await open_stream(hc, a, info)
            sent, got = hashlib.sha256(), hashlib.sha256()

            async def up():
                for chunk in pseudo_random(a.seed + i, a.bytes):
                    sent.update(chunk)
                    await hc.send(st, chunk)
                hc.end_stream(st)

            async def down():
                n = 0
                while True:
                    item = await hc.recv(st)
                    if item is EOF:
                        return n
                    data, fc = item
                    got.update(data)
                    n += len(data)
                    hc.ack(st.sid, fc)
                    if a.until_echoed and n >= a.bytes:
                        hc.reset_stream(st)
                        return n

            tu = hc.spawn(up())
            try:
                n = await down()
                await tu
            finally:
                if not tu.done():
                    tu.cancel()
                elif not tu.cancelled():
                    tu.exception()      # retrieved: reported through down()
            r.update(bytes_sent=st.bytes_out, bytes_received=n,
                     sha256_sent=sent.hexdigest(), sha256_received=got.hexdigest())
            r["ok"] = n == a.bytes and sent.digest() == got.digest()
        except PeerError as e:
            r.update(error=str(e), code=e.code)
        except StreamReset as e:
            r.update(error=str(e))
        results.append(r)

    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(a.streams))), a.timeout)
    except asyncio.TimeoutError:
        done = {r["stream"] for r in results}
        results += [{"stream": i, "ok": False, "error": "not done in %ss" % a.timeout}
                    for i in range(a.streams) if i not in done]
    finally:
        await hc.close()
        rt.cancel()
    secs = time.monotonic() - t0
    ok = sum(1 for r in results if r["ok"])
    bad = [r for r in results if not r["ok"]]
    summary = {"streams": a.streams, "bytes": a.bytes, "ok": ok,
               "failed": a.streams - ok, "seconds": round(secs, 4),
               "gbit_s": round(2 * ok * a.bytes * 8 / secs / 1e9, 4),
               "peer_id": info["peer_id"], "tls": info["version"],
               "cipher": info["cipher"], "alpn": info["alpn"],
               "connections": 1, "errors": bad[:5]}
    emit(summary)
    if ok == a.streams:
        return EXIT_OK
    codes = {r.get("code") for r in bad}
    return EXIT_STATUS if codes == {EXIT_STATUS} else EXIT_TLS if codes == {EXIT_TLS} else EXIT_XFER


def cmd_client(a):
    try:
        return asyncio.run(client_streams(a) if a.streams else client_relay(a))
    except PeerError as e:
        log("client: %s" % e)
        return e.code
    except KeyboardInterrupt:
        return EXIT_XFER


# --- server -------------------------------------------------------------

class Server:
    def __init__(self, a):
        self.a = a
        self.nconn = 0

    async def handle_tls(self, reader, writer):
        self.nconn += 1
        cid = self.nconn
        peer = writer.get_extra_info("peername")
        ev = {"event": "tls", "conn": cid, "peer": fmt_addr(peer[0], peer[1])}
        # the handshake is ours to await (rather than the server's), so a
        # refused one is logged with its reason
        try:
            await writer.start_tls(self.ctx, ssl_handshake_timeout=CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            ev.update(event="refused", reason="TLS handshake: %s" % describe(e))
            emit(ev)
            writer.transport.abort()
            return
        ev.update(tls_summary(writer))
        ev["sni"] = self.sni.pop(writer.get_extra_info("ssl_object"), None)
        try:
            if ev["alpn"] != "h2":
                raise PeerError(EXIT_TLS, "client did not offer ALPN h2")
            ev["peer_id"] = check_peer_id(writer.get_extra_info("peercert"),
                                          trust_domain=self.a.trust_domain)
        except PeerError as e:
            ev.update(event="refused", reason=str(e))
            emit(ev)
            writer.close()
            return
        emit(ev)
        hc = H2Conn(reader, writer, server=True,
                    on_request=lambda hc, st, h: self.handle_stream(hc, st, h, cid, ev["peer_id"]))
        run = asyncio.ensure_future(hc.run())
        if self.a.silent_after:
            done, _ = await asyncio.wait({run}, timeout=self.a.silent_after)
            if not done:
                # a peer that has gone quiet: the socket stays open, but
                # nothing is read or answered (PINGs included) from now on
                run.cancel()
                for t in list(hc.tasks):
                    t.cancel()
                emit({"event": "silent", "conn": cid})
                await asyncio.sleep(self.a.timeout)
                writer.transport.abort()
                return
        reason = await run
        for t in list(hc.tasks):
            t.cancel()
        await hc.close()
        emit({"event": "conn_closed", "conn": cid, "reason": reason})

    async def handle_stream(self, hc, st, headers, cid, peer_id):
        h = {}
        for k, v in headers:
            h.setdefault(k, v)
        ev = {"event": "stream", "conn": cid, "stream": st.sid, "peer_id": peer_id,
              "authority": h.get(":authority"), "method": h.get(":method")}
        for k in ("forwarded", "baggage", "traceparent"):
            if k in h:
                ev[k] = h[k]
        if self.a.goaway_first and cid == 1:
            # as a peer that starts draining as the request arrives: GOAWAY
            # with last stream 0, so the stream was not processed
            ev.update(status="goaway", reason="--goaway-first")
            emit(ev)
            hc.conn.close_connection(error_code=0, last_stream_id=0)
            hc.flush()
            await asyncio.sleep(1)
            hc.writer.close()
            return
        if h.get(":method") != "CONNECT":
            return self.refuse(hc, st, ev, 400, "method %s is not CONNECT" % h.get(":method"))
        if ":path" in h or ":scheme" in h or ":protocol" in h:
            # malformed CONNECT (RFC 9113 8.5), as HTTP/2 servers treat it
            ev.update(status="reset", reason="CONNECT with :path/:scheme/:protocol")
            emit(ev)
            hc.reset_stream(st, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        dst = parse_authority(h.get(":authority"))
        if dst is None:
            return self.refuse(hc, st, ev, 400, "malformed authority %r" % h.get(":authority"))
        up = None
        if not self.a.echo:
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(*dst), CONNECT_TIMEOUT)
                up = (ur, uw)
            except (OSError, asyncio.TimeoutError) as e:
                return self.refuse(hc, st, ev, 503, "connect %s: %s"
                                   % (fmt_addr(*dst), e or "timeout"))
        hc.respond(st, 200)
        ev["status"] = 200
        emit(ev)
        t0 = time.monotonic()
        err = None
        try:
            if up:
                await self.relay_upstream(hc, st, *up)
            else:
                await self.relay_echo(hc, st)
        except (StreamReset, OSError) as e:
            err = str(e)
        finally:
            if up and not up[1].is_closing():
                up[1].close()
        emit({"event": "stream_closed", "conn": cid, "stream": st.sid,
              "authority": ev["authority"], "bytes_in": st.bytes_in,
              "bytes_out": st.bytes_out, "seconds": round(time.monotonic() - t0, 4),
              "error": err})

    def refuse(self, hc, st, ev, status, reason):
        ev.update(status=status, reason=reason)
        emit(ev)
        if st.reset is None and hc.closed is None:
            hc.respond(st, status, end=True)

    async def relay_echo(self, hc, st):
        while True:
            item = await hc.recv(st)
            if item is EOF:
                hc.end_stream(st)
                return
            data, n = item
            await hc.send(st, data)
            hc.ack(st.sid, n)

    async def relay_upstream(self, hc, st, ur, uw):
        """Both ways with half-close: END_STREAM -> FIN upstream, upstream
        EOF -> END_STREAM; a reset on either side aborts the other."""
        async def to_up():
            while True:
                item = await hc.recv(st)
                if item is EOF:
                    if uw.can_write_eof():
                        uw.write_eof()
                    return
                data, n = item
                uw.write(data)
                await uw.drain()
                hc.ack(st.sid, n)

        async def from_up():
            while True:
                d = await ur.read(READ_SIZE)
                if not d:
                    hc.end_stream(st)
                    return
                await hc.send(st, d)

        t1, t2 = hc.spawn(to_up()), hc.spawn(from_up())
        try:
            done, pending = await asyncio.wait([t1, t2], return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                e = t.exception()
                if e is not None:
                    for p in pending:
                        p.cancel()
                    if isinstance(e, StreamReset):
                        uw.transport.abort()    # RST to the destination
                    else:
                        hc.reset_stream(st, h2.errors.ErrorCodes.CONNECT_ERROR)
                    raise e
        except asyncio.CancelledError:
            t1.cancel()
            t2.cancel()
            uw.transport.abort()
            raise

    async def main(self):
        a = self.a
        self.ctx = ctx = tls_context(a, server=True)
        self.sni = {}

        def sni_cb(sslobj, name, _ctx):
            self.sni[sslobj] = name
        ctx.sni_callback = sni_cb
        loop = asyncio.get_running_loop()
        host, _, port = a.listen.rpartition(":")
        srv = await asyncio.start_server(self.handle_tls, host.strip("[]") or None, int(port),
                                         backlog=1024, reuse_address=True,
                                         limit=READ_SIZE * 4)
        stop = asyncio.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        emit({"listening": int(port), "echo": bool(a.echo), "trust_domain": a.trust_domain})
        try:
            await asyncio.wait_for(stop.wait(), a.timeout)
        except asyncio.TimeoutError:
            pass
        srv.close()
        return EXIT_OK


def cmd_server(a):
    return asyncio.run(Server(a).main())


# --- certificates (openssl CLI) --------------------------------------------

def openssl(*args, stdin=None):
    r = subprocess.run(["openssl"] + list(args), input=stdin, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("hbone-peer: openssl %s failed:\n%s" % (args[0], r.stderr.strip()))
    return r.stdout


def cmd_ca(a):
    """A root like `meshctl ca init` makes (agent/certs.h)."""
    os.makedirs(a.out, mode=0o700, exist_ok=True)
    key = os.path.join(a.out, "root-key.pem")
    cert = os.path.join(a.out, "root-cert.pem")
    if os.path.exists(key):
        raise SystemExit("hbone-peer: %s exists, not overwritten" % key)
    old = os.umask(0o077)
    try:
        openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", key, "-out", cert, "-days", str(a.days),
                "-subj", "/O=skmesh/CN=skmesh root CA %s" % a.trust_domain,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectAltName=URI:spiffe://%s" % a.trust_domain)
    finally:
        os.umask(old)
    os.chmod(cert, 0o644)
    print(cert)
    return 0


def cmd_leaf(a):
    """A workload certificate: one URI SAN, EKU serverAuth + clientAuth."""
    cacert = os.path.join(a.ca_dir, "root-cert.pem")
    cakey = os.path.join(a.ca_dir, "root-key.pem")
    key, cert = a.out + ".key.pem", a.out + ".cert.pem"
    with tempfile.TemporaryDirectory(prefix="hbone-peer-") as tmp:
        csr, ext = os.path.join(tmp, "csr.pem"), os.path.join(tmp, "ext.cnf")
        lines = ["basicConstraints=critical,CA:FALSE",
                 "keyUsage=critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage=%s" % a.eku]
        if a.id:
            lines.append("subjectAltName=critical,URI:%s" % a.id)
        with open(ext, "w") as f:
            f.write("\n".join(lines) + "\n")
        old = os.umask(0o077)
        try:
            openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", csr, "-subj", "/O=skmesh")
        finally:
            os.umask(old)
        leaf = openssl("x509", "-req", "-in", csr, "-CA", cacert, "-CAkey", cakey,
                       "-set_serial", str(random.getrandbits(63)), "-days", str(a.days),
                       "-extfile", ext)
    with open(cacert) as f:
        root = f.read()
    with open(cert, "w") as f:
        f.write(leaf + root)
    print(cert)
    return 0


# --- command line -------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="hbone-peer.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def tls_args(p):
        p.add_argument("--cert", help="own certificate (PEM, chain)")
        p.add_argument("--key", help="own key (PEM)")
        p.add_argument("--ca", required=True, help="trusted roots (PEM)")
        p.add_argument("--alpn", default="h2", help="ALPN to offer (default h2; '' none)")
        p.add_argument("--tls12", action="store_true", help="TLS 1.2 only (negative tests)")

    c = sub.add_parser("client", help="HBONE client")
    c.add_argument("--to", required=True, help="HOST[:PORT] of the HBONE server (port 15008)")
    c.add_argument("--authority", required=True, help="destination IP:PORT (:authority)")
    tls_args(c)
    c.add_argument("--no-cert", action="store_true", help="present no client certificate")
    c.add_argument("--expect-id", help="required server SPIFFE ID")
    c.add_argument("--forwarded-for", help='IP:PORT for forwarded: for="..." '
                   "(default: our TLS socket's address)")
    c.add_argument("--no-forwarded", action="store_true", help="send no forwarded header")
    c.add_argument("--baggage", help="baggage header (default: from our SPIFFE ID)")
    c.add_argument("--streams", type=int, default=0, help="N concurrent echo streams")
    c.add_argument("--bytes", type=int, default=1 << 20, help="bytes per stream (--streams)")
    c.add_argument("--until-echoed", action="store_true",
                   help="--streams: a stream is done once its bytes came back "
                   "(then reset); for proxies that do not pass a CONNECT's "
                   "END_STREAM on, such as nghttpx")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--timeout", type=float, default=120, help="seconds for the whole run")
    c.set_defaults(fn=cmd_client)

    s = sub.add_parser("server", help="HBONE server")
    s.add_argument("--listen", default="0.0.0.0:%d" % HBONE_PORT, help="ADDR:PORT")
    tls_args(s)
    s.add_argument("--trust-domain", default="cluster.local",
                   help="required trust domain of clients")
    s.add_argument("--echo", action="store_true", help="echo instead of dialling")
    s.add_argument("--timeout", type=float, default=600, help="exit after this many seconds")
    s.add_argument("--goaway-first", action="store_true",
                   help="answer the first connection's first request with GOAWAY "
                   "(last stream 0) and close it: a peer starting to drain")
    s.add_argument("--silent-after", type=float, default=0,
                   help="S seconds into each connection, stop reading and answering it "
                   "(PINGs included) while keeping it open: a peer that hung")
    s.set_defaults(fn=cmd_server, no_cert=False)

    p = sub.add_parser("ca", help="make a root CA with openssl")
    p.add_argument("--out", required=True)
    p.add_argument("--trust-domain", default="cluster.local")
    p.add_argument("--days", type=int, default=3650)
    p.set_defaults(fn=cmd_ca)

    p = sub.add_parser("leaf", help="make a workload certificate with openssl")
    p.add_argument("--ca-dir", required=True)
    p.add_argument("--id", help="SPIFFE ID (URI SAN); empty: none")
    p.add_argument("--out", required=True, help="PREFIX of .cert.pem / .key.pem")
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--eku", default="serverAuth,clientAuth")
    p.set_defaults(fn=cmd_leaf)

    a = ap.parse_args(argv)
    if a.cmd in ("client", "server"):
        if not a.no_cert and not (a.cert and a.key):
            ap.error("--cert and --key are required (or --no-cert)")
        if a.cmd == "client" and parse_authority(a.authority) is None and a.streams:
            pass   # a malformed authority is a legitimate negative test
        if getattr(a, "streams", 0) < 0:
            ap.error("--streams N >= 0")
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
