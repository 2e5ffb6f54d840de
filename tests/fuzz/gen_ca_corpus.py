#!/usr/bin/python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Writes the seed corpus of tests/fuzz/fuzz_ca.c to tests/fuzz/corpus/ca/:
what a gRPC client of skmesh-ca sends once its TLS handshake is done (the
HTTP/2 client preface, SETTINGS, HEADERS of CreateCertificate, DATA with a
framed IstioCertificateRequest), made with Python's h2, protobuf messages
from proto/ca.proto compiled by grpc_tools.protoc, CSRs by openssl. The
fuzzed service knows token "node-agent" (skmesh-system/meshd on node1)
and "pod" (shop/web); a pod of shop/web runs on node1 (see fuzz_ca.c).

  python3 tests/fuzz/gen_ca_corpus.py
"""
import os
import struct
import subprocess
import sys
import tempfile

# Debian's python3-h2 and python3-grpc-tools, also from a python3 of its
# own (pyenv, venv) that does not look in the system's dist-packages
sys.path.append("/usr/lib/python3/dist-packages")
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
from grpc_tools import protoc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "ca")
PROTO = os.path.join(HERE, "..", "..", "proto")
PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
WEB = "spiffe://cluster.local/ns/shop/sa/web"


def messages(d):
    rc = protoc.main(["protoc", "-I" + PROTO, "-I/usr/include", "--python_out=" + d,
                      os.path.join(PROTO, "ca.proto")])
    if rc:
        sys.exit("protoc failed")
    sys.path.insert(0, d)
    import ca_pb2
    return ca_pb2


def csr(d, uri, extra=()):
    args = ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", os.path.join(d, "k.pem"), "-subj", "/O=fuzz",
            "-addext", "subjectAltName=URI:" + uri]
    for e in extra:
        args += ["-addext", e]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def client():
    c = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8",
        validate_outbound_headers=False, validate_inbound_headers=False))
    c.initiate_connection()
    return c


def call(c, msg, token="node-agent", path=PATH, ctype="application/grpc", end=True,
         frame=None):
    sid = c.get_next_available_stream_id()
    hdrs = [(":method", "POST"), (":scheme", "https"), (":path", path),
            (":authority", "skmesh-ca:15012"), ("content-type", ctype), ("te", "trailers")]
    if token:
        hdrs.append(("authorization", "Bearer " + token))
    c.send_headers(sid, hdrs)
    body = frame if frame is not None else struct.pack(">BI", 0, len(msg)) + msg
    c.send_data(sid, body, end_stream=end)
    return sid


def seeds(pb, d):
    def req(csr_pem, ident=WEB, validity=3600):
        r = pb.IstioCertificateRequest(csr=csr_pem, validity_duration=validity)
        if ident is not None:
            r.metadata.update({"ImpersonatedIdentity": ident})
        return r.SerializeToString()

    good = csr(d, WEB)
    c = client()
    call(c, req(good))
    yield "good", c.data_to_send()

    c = client()
    call(c, req(good, validity=10 * 365 * 86400))
    call(c, req(good, ident=None), token="pod")
    call(c, req(good), token="stranger")
    call(c, req(good, ident="spiffe://cluster.local/ns/shop/sa/db"))
    yield "identities-and-tokens", c.data_to_send()

    c = client()
    call(c, req(csr(d, "spiffe://other.td/ns/shop/sa/web")))
    call(c, req(csr(d, WEB, ["basicConstraints=critical,CA:TRUE"])))
    call(c, req(csr(d, "spiffe://cluster.local/ns/shop/sa/db")))
    call(c, req("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
    yield "bad-csrs", c.data_to_send()

    c = client()
    call(c, b"", frame=struct.pack(">BI", 1, 4) + b"abcd")          # compressed
    call(c, b"", frame=struct.pack(">BI", 0, 10 << 20) + b"x" * 100)  # oversize
    call(c, b"", frame=struct.pack(">BI", 0, 100) + b"short")        # cut short
    call(c, req(good) + b"\xff\xff")                                 # not protobuf
    call(c, req(good), path="/istio.v1.auth.IstioCertificateService/Other")
    call(c, req(good), ctype="application/json")
    call(c, req(good), token=None)
    yield "framing-and-headers", c.data_to_send()

    c = client()
    ids = [call(c, req(good), end=False) for _ in range(20)]
    for sid in ids[::2]:
        c.reset_stream(sid)
    yield "many-streams-and-resets", c.data_to_send()


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        pb = messages(d)
        for name, data in seeds(pb, d):
            with open(os.path.join(OUT, name), "wb") as f:
                f.write(data)
            print("%s: %d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
