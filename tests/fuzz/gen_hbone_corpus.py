#!/usr/bin/python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Writes the seed corpus of tests/fuzz/fuzz_hbone.c to
tests/fuzz/corpus/hbone/: what an HBONE client sends once its TLS
handshake is done (the HTTP/2 client preface, SETTINGS, HEADERS CONNECT,
DATA, RST_STREAM, PING, GOAWAY), made with Python's h2 (Debian's
python3-h2). The fuzzed listener serves pod 10.0.0.1; its host allows
even ports, denies odd ones, refuses port 1 and has no workload at port
2 (see fuzz_hbone.c).

  /usr/bin/python3 tests/fuzz/gen_hbone_corpus.py
"""
import os

import h2.config
import h2.connection
import h2.settings

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "hbone")
POD = "10.0.0.1"


def client():
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8",
        validate_outbound_headers=False, validate_inbound_headers=False))
    c.initiate_connection()
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 << 20,
                       h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20})
    return c


def connect(c, authority, extra=(), method="CONNECT"):
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", method), (":authority", authority)] + list(extra))
    return sid


def ztunnel_headers(src):
    return [("forwarded", 'for="%s:40000"' % src),
            ("baggage", "k8s.cluster.name=Kubernetes,k8s.namespace.name=fz,"
                        "k8s.pod.name=client,service.name=client,service.version=latest"),
            ("traceparent", "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01")]


def seeds():
    c = client()
    sid = connect(c, POD + ":8080", ztunnel_headers("10.0.0.2"))
    c.send_data(sid, b"hello through the tunnel\n", end_stream=True)
    yield "connect-data-end", c.data_to_send()

    c = client()
    connect(c, "10.0.0.9:8080")
    yield "connect-other-pod", c.data_to_send()

    c = client()
    connect(c, POD + ":8081")
    yield "connect-denied", c.data_to_send()

    c = client()
    connect(c, POD + ":1")
    connect(c, POD + ":2")
    yield "connect-refused-and-unknown", c.data_to_send()

    c = client()
    connect(c, POD + ":15008")
    connect(c, "[::1]:80")
    connect(c, "not-an-address")
    connect(c, POD + ":8080", method="GET")
    yield "bad-requests", c.data_to_send()

    c = client()
    ids = [connect(c, POD + ":%d" % (8000 + 2 * i), ztunnel_headers("10.0.0.3"))
           for i in range(8)]
    for sid in ids[::2]:
        c.send_data(sid, bytes(range(64)).hex().encode())
    for sid in ids[1::2]:
        c.reset_stream(sid)
    yield "streams-and-resets", c.data_to_send()

    c = client()
    sid = connect(c, POD + ":8080")
    c.ping(b"12345678")
    c.increment_flow_control_window(1 << 20)
    c.send_data(sid, b"x" * 1000)
    c.end_stream(sid)
    c.close_connection()
    yield "ping-window-goaway", c.data_to_send()


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print("%s: %d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
