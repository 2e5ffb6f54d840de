#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
skmesh-ca, the CA service, against the real API server of tests/lib/kube.py
and an independent client: python3-grpcio from Debian, its stubs made at
test time by grpc_tools.protoc from Istio's certificate service as
istio/api defines it (written out below: package istio.v1.auth, the same
names and field numbers), over gRPC + HTTP/2 + TLS.

The cluster: nodes node1 and node2; the node agent's service account
skmesh-system/meshd with a pod on node1; pods shop/web on node1 and
shop/db on node2. Tokens come from the TokenRequest API, audience istio-ca,
bound to their pod.

- meshd's token asking for shop/web (a pod on its node) gets a chain
  `openssl verify -CAfile root` accepts, leaf first, root last, with the
  one URI SAN, CA:FALSE, serverAuth + clientAuth;
- every attack of issue 12 refused with its gRPC status and counted in
  the metrics: an identity with no pod on the caller's node; a pod's own
  (non node agent) token; expired, forged (another key) and wrong-audience
  tokens; CSRs naming another identity, another trust domain, CA:TRUE;
  a 10 MiB request; 1,000 concurrent callers (all answered or refused,
  memory bounded, the service alive and serving afterwards);
- a huge validity_duration is capped at --max-cert-ttl, not refused (istiod
  refuses a TTL over its maximum; a cap serves a client whose default is
  longer, and the issue asks for lifetimes capped), and counted.
"""
import base64
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.dont_write_bytecode = True

import kube  # noqa: E402
import topo as topolib  # noqa: E402

try:
    import grpc  # noqa: E402
except ImportError:
    # Debian's python3-grpcio lives in the system's dist-packages, which
    # a python3 of its own (pyenv, venv) does not look in
    sys.path.append("/usr/lib/python3/dist-packages")
    import grpc  # noqa: E402
from grpc_tools import protoc  # noqa: E402

TD = "cluster.local"
AUD = "istio-ca"

# Istio's service, from istio/api security/v1alpha1/ca.proto: what a
# client of istiod compiles.
ISTIO_CA_PROTO = """
syntax = "proto3";
import "google/protobuf/struct.proto";
package istio.v1.auth;
message IstioCertificateRequest {
  string csr = 1;
  int64 validity_duration = 3;
  google.protobuf.Struct metadata = 4;
}
message IstioCertificateResponse {
  repeated string cert_chain = 1;
  Roots root_cert = 2;
}
message Roots {
  repeated string ca_cert = 1;
}
service IstioCertificateService {
  rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse) {}
}
"""


def openssl(*args, cwd, inp=None):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, input=inp)
    if r.returncode:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
    return r.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stubs(d):
    """ca_pb2 and ca_pb2_grpc compiled from ISTIO_CA_PROTO into D."""
    with open(os.path.join(d, "istio_ca.proto"), "w") as f:
        f.write(ISTIO_CA_PROTO)
    inc = [p for p in ("/usr/include", os.path.join(os.path.dirname(protoc.__file__), "_proto"))
           if os.path.exists(os.path.join(p, "google", "protobuf", "struct.proto"))]
    rc = protoc.main(["protoc", "-I" + d] + ["-I" + p for p in inc] +
                     ["--python_out=" + d, "--grpc_python_out=" + d,
                      os.path.join(d, "istio_ca.proto")])
    if rc:
        raise RuntimeError("grpc_tools.protoc failed: %d" % rc)
    sys.path.insert(0, d)
    import istio_ca_pb2
    import istio_ca_pb2_grpc
    return istio_ca_pb2, istio_ca_pb2_grpc


def csr(d, name, uris, ca=False):
    """A new P-256 key and its CSR with URIS as SAN (and CA:TRUE when
    asked); the CSR's PEM."""
    args = ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/O=skmesh-test"]
    if uris:
        args += ["-addext", "subjectAltName=" + ",".join("URI:" + u for u in uris)]
    if ca:
        args += ["-addext", "basicConstraints=critical,CA:TRUE"]
    openssl(*args, cwd=d)
    with open(os.path.join(d, name + ".csr")) as f:
        return f.read()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(d, key, claims):
    """An RS256 JWT of CLAIMS signed with KEY (a PEM file in D)."""
    head = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = openssl("dgst", "-sha256", "-sign", key, cwd=d, inp=(head + "." + body).encode())
    return head + "." + body + "." + b64url(sig)


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(skmesh_ca_\w+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def wait_metrics(port):
    for _ in range(100):
        try:
            return metrics(port)
        except OSError:
            time.sleep(0.1)
    return None


def ca_argv(base, swap=None):
    """BASE's skmesh-ca command on fresh ports, the flags of SWAP ({flag:
    value}) replaced: (argv, gRPC port, metrics port)."""
    a, port, mport = list(base), free_port(), free_port()
    swap = dict(swap or {}, **{"--listen": "127.0.0.1:%d" % port,
                               "--metrics": "127.0.0.1:%d" % mport})
    for flag, value in swap.items():
        a[a.index(flag) + 1] = value
    return a, port, mport


def spawn_ca(base, extra=(), swap=None):
    """A second skmesh-ca as ca_argv() says, EXTRA flags added, once its
    metrics answer: (process, gRPC port)."""
    a, port, mport = ca_argv(base, swap)
    p = subprocess.Popen(a + list(extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_metrics(mport)
    return p, port


def refusal(m, reason):
    return m.get('skmesh_ca_refusals_total{reason="%s"}' % reason, 0)


def code(m, name):
    return m.get('skmesh_ca_requests_total{code="%s"}' % name, 0)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def body(t, k):
    d = tempfile.mkdtemp(prefix="skm-ca-test-")
    try:
        run(t, k, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run(t, k, d):
    pb, pb_grpc = stubs(d)
    build = topolib.build_dir()

    # --- the cluster's objects
    for ns in ("skmesh-system", "shop"):
        k.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    for ns, sa in (("skmesh-system", "meshd"), ("shop", "web"), ("shop", "db")):
        k.create("/api/v1/namespaces/%s/serviceaccounts" % ns, {"metadata": {"name": sa}})
    for n in ("node1", "node2"):
        k.create("/api/v1/nodes", {"metadata": {"name": n}})
    pods = {}
    for ns, name, sa, node in (("skmesh-system", "meshd-node1", "meshd", "node1"),
                               ("shop", "web-1", "web", "node1"),
                               ("shop", "db-1", "db", "node2")):
        p = k.create("/api/v1/namespaces/%s/pods" % ns, {
            "metadata": {"name": name},
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "c", "image": "skmesh.test/none"}]}})
        pods[name] = p["metadata"]["uid"]

    def token(ns, sa, pod=None, aud=AUD, seconds=3600):
        spec = {"audiences": [aud], "expirationSeconds": seconds}
        if pod:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod,
                                      "uid": pods[pod]}
        st, out = k.request("POST", "/api/v1/namespaces/%s/serviceaccounts/%s/token" % (ns, sa),
                            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                             "spec": spec})
        if st not in (200, 201):
            raise RuntimeError("TokenRequest %s/%s: HTTP %d: %s" % (ns, sa, st, out))
        return out["status"]["token"]

    meshd_tok = token("skmesh-system", "meshd", "meshd-node1")
    # what a pod-bound token carries, as the API server reviews it
    st, rev = k.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                         "spec": {"token": meshd_tok, "audiences": [AUD]}})
    extra = (rev.get("status", {}).get("user", {}) or {}).get("extra", {}) if st == 201 else {}
    t.diag("a pod-bound token's user.extra: %s" % sorted(extra))
    t.check("a pod-bound token is reviewed with its pod (and node) in user.extra",
            "authentication.kubernetes.io/pod-name" in extra, rev)

    # --- the CA's files: the root by meshctl, a serving certificate
    cadir = os.path.join(d, "ca")
    r = subprocess.run([os.path.join(build, "meshctl"), "ca", "init", "--out", cadir,
                        "--trust-domain", TD], capture_output=True, text=True)
    t.require("meshctl ca init", r.returncode == 0, r.stderr)
    root = os.path.join(cadir, "root-cert.pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "1", "-keyout", "serve.key", "-out", "serve.crt", "-subj", "/CN=skmesh-ca",
            "-addext", "subjectAltName=DNS:skmesh-ca,IP:127.0.0.1", cwd=d)

    # --- the CA's own access: deploy/cluster/30-ca.yaml's ServiceAccount and
    # RBAC, a token of that account in its kubeconfig (so what the manifest
    # grants is shown to be enough)
    with open(os.path.join(HERE, "..", "..", "deploy", "cluster", "30-ca.yaml")) as f:
        manifest = [o for o in yaml.safe_load_all(f) if o]
    for o in manifest:
        if o["kind"] == "ServiceAccount":
            k.create("/api/v1/namespaces/%s/serviceaccounts" % o["metadata"]["namespace"], o)
        elif o["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            k.create("/apis/rbac.authorization.k8s.io/v1/%ss" % o["kind"].lower(), o)
    st, out = k.request("POST", "/api/v1/namespaces/skmesh-system/serviceaccounts/skmesh-ca/token",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 3600}})
    t.require("a token for skmesh-ca's own ServiceAccount", st in (200, 201), out)
    kc = os.path.join(d, "ca-kubeconfig.yaml")
    with open(kc, "w") as f:
        f.write(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "ca",
            "clusters": [{"name": "k", "cluster": {"server": k.url,
                                                    "certificate-authority": k._path("ca.crt")}}],
            "users": [{"name": "skmesh-ca", "user": {"token": out["status"]["token"]}}],
            "contexts": [{"name": "ca", "context": {"cluster": "k", "user": "skmesh-ca"}}]}))

    port, mport = free_port(), free_port()
    argv = [os.path.join(build, "skmesh-ca"), "--listen", "127.0.0.1:%d" % port,
            "--metrics", "127.0.0.1:%d" % mport,
            "--tls-cert", os.path.join(d, "serve.crt"), "--tls-key", os.path.join(d, "serve.key"),
            "--ca-cert", root, "--ca-key", os.path.join(cadir, "root-key.pem"),
            "--kubeconfig", kc, "--max-conns", "200", "--handshake-timeout", "3"]
    log = open(os.path.join(d, "ca.log"), "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        serve(t, k, d, pb, pb_grpc, port, mport, proc, token, meshd_tok, root)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        if t.failed:
            with open(os.path.join(d, "ca.log"), errors="replace") as f:
                t.diag("skmesh-ca's log (tail):\n" + "".join(f.readlines()[-40:]))


def serve(t, k, d, pb, pb_grpc, port, mport, proc, token, meshd_tok, root):
    wait_metrics(mport)
    t.require("skmesh-ca serves its metrics", proc.poll() is None)
    with open(os.path.join(d, "serve.crt"), "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    opts = [("grpc.ssl_target_name_override", "skmesh-ca")]
    chan = grpc.secure_channel("127.0.0.1:%d" % port, creds, options=opts)
    stub = pb_grpc.IstioCertificateServiceStub(chan)

    def call(tok, csr_pem, ident=None, validity=3600, stub_=None, timeout=20):
        req = pb.IstioCertificateRequest(csr=csr_pem, validity_duration=validity)
        if ident is not None:
            req.metadata.update({"ImpersonatedIdentity": ident})
        md = [("authorization", "Bearer " + tok)] if tok else []
        try:
            return grpc.StatusCode.OK, (stub_ or stub).CreateCertificate(req, metadata=md,
                                                                         timeout=timeout)
        except grpc.RpcError as e:
            return e.code(), e.details()

    web = "spiffe://%s/ns/shop/sa/web" % TD
    db = "spiffe://%s/ns/shop/sa/db" % TD
    web_csr = csr(d, "web", [web])

    # --- the good call
    st, resp = call(meshd_tok, web_csr, web)
    t.require("meshd's token gets shop/web, a pod of its node: OK", st == grpc.StatusCode.OK,
              "%s: %s" % (st, resp))
    chain = list(resp.cert_chain)
    with open(root) as f:
        root_pem = f.read()
    t.check("cert_chain: leaf first, root last", len(chain) == 2 and
            chain[-1].strip() == root_pem.strip(), chain)
    leaf = os.path.join(d, "leaf.pem")
    with open(leaf, "w") as f:
        f.write(chain[0])
    v = subprocess.run(["openssl", "verify", "-CAfile", root, leaf], capture_output=True, text=True)
    t.check("openssl verify -CAfile root accepts the leaf", v.returncode == 0 and ": OK" in v.stdout,
            v.stdout + v.stderr)
    text = openssl("x509", "-in", leaf, "-noout", "-text", cwd=d).decode()
    t.check("the leaf's only SAN is the identity", re.search(
        r"Subject Alternative Name: critical\s+URI:%s\s*\n" % re.escape(web), text), text)
    t.check("the leaf is CA:FALSE, serverAuth + clientAuth, digitalSignature + keyEncipherment",
            "CA:FALSE" in text and "TLS Web Server Authentication, TLS Web Client Authentication"
            in text and "Digital Signature, Key Encipherment" in text, text)
    pub_csr = openssl("req", "-in", "web.csr", "-noout", "-pubkey", cwd=d)
    pub_leaf = openssl("x509", "-in", leaf, "-noout", "-pubkey", cwd=d)
    t.check("the leaf certifies the CSR's key", pub_csr == pub_leaf)
    m0 = metrics(mport)
    t.check("the issue is counted", m0.get("skmesh_ca_certs_issued_total") == 1 and
            code(m0, "OK") == 1, m0)

    # --- attacks: (name, call, expected status, refusal reason)
    web_pod_tok = token("shop", "web", "web-1")
    unbound_tok = token("skmesh-system", "meshd")
    k.create("/api/v1/namespaces/skmesh-system/secrets", {"metadata": {"name": "anchor"}})
    st_, sec = k.request("GET", "/api/v1/namespaces/skmesh-system/secrets/anchor")
    st_, out = k.request("POST", "/api/v1/namespaces/skmesh-system/serviceaccounts/meshd/token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [AUD], "expirationSeconds": 3600,
                 "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "anchor",
                                    "uid": sec["metadata"]["uid"]}}})
    secret_bound_tok = out["status"]["token"]
    wrong_aud = token("skmesh-system", "meshd", "meshd-node1", aud="other-audience")
    sa_key = k._path("sa.key")
    now = int(time.time())
    claims = {"iss": "https://kubernetes.default.svc.cluster.local", "aud": [AUD],
              "sub": "system:serviceaccount:skmesh-system:meshd", "iat": now - 60,
              "nbf": now - 60, "exp": now + 600,
              "kubernetes.io": {"namespace": "skmesh-system",
                                "serviceaccount": {"name": "meshd", "uid": ""},
                                "pod": {"name": "meshd-node1", "uid": ""}}}
    st_, sa_obj = k.request("GET", "/api/v1/namespaces/skmesh-system/serviceaccounts/meshd")
    claims["kubernetes.io"]["serviceaccount"]["uid"] = sa_obj["metadata"]["uid"]
    st_, pod_obj = k.request("GET", "/api/v1/namespaces/skmesh-system/pods/meshd-node1")
    claims["kubernetes.io"]["pod"]["uid"] = pod_obj["metadata"]["uid"]
    # the same forging with a valid exp and the cluster's key is accepted:
    # so the two refusals below are for the expiry and the key alone
    self_made = jwt(d, sa_key, claims)
    st, resp = call(self_made, web_csr, web)
    t.check("control: a token made here with the cluster's key and a valid exp is accepted",
            st == grpc.StatusCode.OK, "%s: %s" % (st, resp))
    expired = jwt(d, sa_key, dict(claims, iat=now - 7200, nbf=now - 7200, exp=now - 3600))
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", "forger.key", cwd=d)
    forged = jwt(d, "forger.key", claims)

    other_td_csr = csr(d, "otd", ["spiffe://other.td/ns/shop/sa/web"])
    db_csr = csr(d, "db", [db])
    ca_csr = csr(d, "ca", [web], ca=True)
    two_san_csr = csr(d, "two", [web, db])
    attacks = [
        ("an identity with no pod on the caller's node (shop/db runs on node2)",
         lambda: call(meshd_tok, db_csr, db), grpc.StatusCode.PERMISSION_DENIED,
         "no_pod_on_node"),
        ("the node agent's token bound to no pod (its node unknown)",
         lambda: call(unbound_tok, web_csr, web), grpc.StatusCode.PERMISSION_DENIED, "no_node"),
        ("the node agent's token bound to a Secret, not a pod",
         lambda: call(secret_bound_tok, web_csr, web), grpc.StatusCode.PERMISSION_DENIED,
         "no_node"),
        ("a pod's own token (not a node agent) asking for its own identity",
         lambda: call(web_pod_tok, web_csr, web), grpc.StatusCode.PERMISSION_DENIED,
         "not_node_agent"),
        ("a pod's own token asking with no impersonation",
         lambda: call(web_pod_tok, web_csr), grpc.StatusCode.PERMISSION_DENIED,
         "not_node_agent"),
        ("an expired token", lambda: call(expired, web_csr, web),
         grpc.StatusCode.UNAUTHENTICATED, "bad_token"),
        ("a forged token (signed by another key)", lambda: call(forged, web_csr, web),
         grpc.StatusCode.UNAUTHENTICATED, "bad_token"),
        ("a token for another audience", lambda: call(wrong_aud, web_csr, web),
         grpc.StatusCode.UNAUTHENTICATED, "bad_token"),
        ("no token at all", lambda: call(None, web_csr, web),
         grpc.StatusCode.UNAUTHENTICATED, "no_token"),
        ("a CSR whose SAN is another identity than the one asked",
         lambda: call(meshd_tok, db_csr, web), grpc.StatusCode.INVALID_ARGUMENT,
         "csr_san_mismatch"),
        ("a CSR whose SAN is in another trust domain",
         lambda: call(meshd_tok, other_td_csr, web), grpc.StatusCode.INVALID_ARGUMENT,
         "csr_other_trust_domain"),
        ("a CSR asking for CA:TRUE", lambda: call(meshd_tok, ca_csr, web),
         grpc.StatusCode.INVALID_ARGUMENT, "csr_asks_ca"),
        ("a CSR with two SANs", lambda: call(meshd_tok, two_san_csr, web),
         grpc.StatusCode.INVALID_ARGUMENT, "csr_bad_san"),
        ("ImpersonatedIdentity of another trust domain",
         lambda: call(meshd_tok, other_td_csr, "spiffe://other.td/ns/shop/sa/web"),
         grpc.StatusCode.PERMISSION_DENIED, "other_trust_domain"),
        ("a request of 10 MiB", lambda: call(meshd_tok, "A" * (10 << 20), web),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "oversize"),
    ]
    for name, fn, want, reason in attacks:
        before = metrics(mport)
        st, detail = fn()
        after = metrics(mport)
        t.check("refused with %s: %s" % (want.name, name), st == want,
                "got %s: %s" % (st, detail))
        t.check("counted as %s: %s" % (reason, name),
                refusal(after, reason) == refusal(before, reason) + 1 and
                code(after, want.name) == code(before, want.name) + 1 and
                after.get("skmesh_ca_certs_issued_total") ==
                before.get("skmesh_ca_certs_issued_total"),
                "%s: %s -> %s" % (reason, refusal(before, reason), refusal(after, reason)))

    st, detail = call(meshd_tok, "A" * (10 << 20), web)
    t.check("the 10 MiB refusal says why in grpc-message",
            "larger than the maximum" in (detail or ""), detail)

    # --- huge validity: capped at 24 h
    before = metrics(mport)
    st, resp = call(meshd_tok, web_csr, web, validity=10 * 365 * 86400)
    after = metrics(mport)
    ok = st == grpc.StatusCode.OK
    if ok:
        with open(leaf, "w") as f:
            f.write(resp.cert_chain[0])
        end = openssl("x509", "-in", leaf, "-noout", "-enddate", cwd=d).decode().strip()
        end_t = time.mktime(time.strptime(end.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z"))
        end_t -= time.timezone
        ok = end_t <= time.time() + 24 * 3600 + 60
        t.diag("10 years asked, notAfter %s" % end)
    t.check("a validity of 10 years is capped at 24 h (not refused)", ok, "%s %s" % (st, resp))
    t.check("... and counted as capped", after.get("skmesh_ca_lifetime_capped_total", 0) ==
            before.get("skmesh_ca_lifetime_capped_total", 0) + 1, after)

    # --- the log names callers and reasons, never a token or a key
    with open(os.path.join(d, "ca.log"), errors="replace") as f:
        logged = f.read()
    secrets = [meshd_tok, web_pod_tok, unbound_tok, self_made, expired, forged, wrong_aud]
    t.check("the CA's log holds none of the tokens it was shown, no key, no CSR",
            "refused CreateCertificate" in logged and
            not any(tok in logged or tok.split(".")[2] in logged for tok in secrets) and
            "PRIVATE KEY" not in logged and "CERTIFICATE REQUEST" not in logged,
            logged[-2000:])

    # --- --allow-own-identity: a pod's own token gets its own identity, and
    # still nothing else
    own, p2 = spawn_ca(proc.args, ["--allow-own-identity"])
    try:
        ch2 = grpc.secure_channel("127.0.0.1:%d" % p2, creds, options=opts)
        stub2 = pb_grpc.IstioCertificateServiceStub(ch2)
        st, resp = call(web_pod_tok, web_csr, stub_=stub2)
        t.check("--allow-own-identity: a pod's own token gets its own identity",
                st == grpc.StatusCode.OK and len(resp.cert_chain) == 2, "%s %s" % (st, resp))
        st, _ = call(web_pod_tok, db_csr, db, stub_=stub2)
        t.check("--allow-own-identity: ... and still may not impersonate",
                st == grpc.StatusCode.PERMISSION_DENIED, st)
        st, _ = call(web_pod_tok, db_csr, stub_=stub2)
        t.check("--allow-own-identity: ... nor have a CSR for another identity signed",
                st == grpc.StatusCode.INVALID_ARGUMENT, st)
        ch2.close()
    finally:
        own.terminate()
        own.wait(15)

    # --- 1,000 concurrent callers on 250 connections (--max-conns 200)
    rss0 = rss_kib(proc.pid)
    chans = [grpc.secure_channel("127.0.0.1:%d" % port, creds, options=opts + [
        ("grpc.use_local_subchannel_pool", 1)]) for _ in range(250)]
    stubs_ = [pb_grpc.IstioCertificateServiceStub(c) for c in chans]
    results = {}
    peak = [rss0]

    def one(i):
        return call(meshd_tok, web_csr, web, stub_=stubs_[i % len(stubs_)], timeout=60)[0]

    with concurrent.futures.ThreadPoolExecutor(max_workers=1000) as ex:
        futs = [ex.submit(one, i) for i in range(1000)]
        while not all(f.done() for f in futs):
            peak[0] = max(peak[0], rss_kib(proc.pid))
            time.sleep(0.05)
        for f in futs:
            results[f.result()] = results.get(f.result(), 0) + 1
    for c in chans:
        c.close()
    t.diag("1,000 callers: %s; RSS %d KiB before, peak %d KiB" % (
        {k_.name: v for k_, v in results.items()}, rss0, peak[0]))
    answered = sum(results.values())
    clean = {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
    t.check("1,000 concurrent callers: every call answered, OK or refused cleanly",
            answered == 1000 and set(results) <= clean, results)
    t.check("... most of them served", results.get(grpc.StatusCode.OK, 0) >= 500, results)
    # An ASan build keeps freed memory in its quarantine (256 MiB by
    # default) and adds shadow memory: the bound grows by that much.
    asan = "libasan" in subprocess.run(["ldd", "/proc/%d/exe" % proc.pid], capture_output=True,
                                       text=True).stdout
    bound = 256 + (512 if asan else 0)
    t.check("... the service's memory stayed bounded (peak RSS < %d MiB%s)" % (
        bound, ", ASan build: its quarantine and shadow memory included" if asan else ""),
            peak[0] < bound * 1024, peak[0])
    t.check("... and it is alive and serving afterwards", proc.poll() is None and
            call(meshd_tok, web_csr, web)[0] == grpc.StatusCode.OK)

    # --- connections that never finish a handshake are dropped in time
    socks = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
    time.sleep(4.5)
    dropped = 0
    for s in socks:
        s.settimeout(1)
        try:
            dropped += s.recv(1) == b""
        except OSError:
            dropped += 1
        s.close()
    t.check("connections silent past --handshake-timeout are closed by the CA", dropped == 50,
            "%d of 50" % dropped)
    m = metrics(mport)
    t.check("... and counted as failed handshakes",
            m.get('skmesh_ca_connections_total{result="handshake_failed"}', 0) >= 50, m)

    # --- "right now": once web-1 is deleted, its identity is refused as
    # soon as the node's pod list is older than --pod-cache-ms (1 s)
    st_, _ = k.request("DELETE", "/api/v1/namespaces/shop/pods/web-1?gracePeriodSeconds=0")
    time.sleep(1.5)
    st, detail = call(meshd_tok, web_csr, web)
    t.check("a pod deleted from the node: its identity is refused (PERMISSION_DENIED) within "
            "--pod-cache-ms", st == grpc.StatusCode.PERMISSION_DENIED, "%s %s" % (st, detail))

    chan.close()
    chain_and_flags(t, d, pb, pb_grpc, proc, creds, opts, call, meshd_tok, web, root)

    # --- no core, no ptrace: a process of the same uid without
    # CAP_SYS_PTRACE may open the /proc/PID/mem of a dumpable child of its
    # own (Yama allows descendants), not that of a skmesh-ca child
    t.check("control: a dumpable child's memory opens without CAP_SYS_PTRACE",
            _child_mem_opens(["sleep", "30"]) == "open")
    argv2 = ca_argv(proc.args)[0]
    t.check("skmesh-ca is not dumpable: its memory does not open without CAP_SYS_PTRACE",
            _child_mem_opens(argv2) == "denied")

    # --- SIGTERM ends it, cleanly
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(15)
    except subprocess.TimeoutExpired:
        rc = None
    t.check("SIGTERM: skmesh-ca exits 0 within 15 s", rc == 0, rc)


def chain_and_flags(t, d, pb, pb_grpc, proc, creds, opts, call, tok, ident, root):
    """An intermediate CA with --ca-chain: the chain is leaf, intermediate,
    root; and flags or files skmesh-ca must refuse at start."""
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "int.key", "-out", "int.csr", "-subj", "/O=skmesh/CN=intermediate", cwd=d)
    with open(os.path.join(d, "int.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                "subjectAltName=URI:spiffe://%s\n" % TD)
    openssl("x509", "-req", "-in", "int.csr", "-CA", root, "-CAkey",
            os.path.join(d, "ca", "root-key.pem"), "-CAcreateserial", "-days", "1",
            "-extfile", "int.ext", "-out", "int.crt", cwd=d)
    base = list(proc.args)
    p, port = spawn_ca(base, ["--ca-chain", root], {"--ca-cert": os.path.join(d, "int.crt"),
                                                    "--ca-key": os.path.join(d, "int.key")})
    try:
        ch = grpc.secure_channel("127.0.0.1:%d" % port, creds, options=opts)
        ca_csr = csr(d, "meshd", ["spiffe://%s/ns/skmesh-system/sa/meshd" % TD])
        st, resp = call(tok, ca_csr, stub_=pb_grpc.IstioCertificateServiceStub(ch))
        ch.close()
        ok = st == grpc.StatusCode.OK
        if ok:
            chain = list(resp.cert_chain)
            with open(os.path.join(d, "int.crt")) as f:
                int_pem = f.read().strip()
            with open(root) as f:
                root_pem = f.read().strip()
            ok = len(chain) == 3 and chain[1].strip() == int_pem and chain[2].strip() == root_pem
            with open(os.path.join(d, "leaf2.pem"), "w") as f:
                f.write(chain[0])
            v = subprocess.run(["openssl", "verify", "-CAfile", root, "-untrusted",
                                os.path.join(d, "int.crt"), os.path.join(d, "leaf2.pem")],
                               capture_output=True, text=True)
            ok = ok and v.returncode == 0
        t.check("--ca-chain: an intermediate signs, cert_chain is leaf, intermediate, root, "
                "and openssl verify accepts it", ok, "%s %s" % (st, resp))
    finally:
        p.terminate()
        p.wait(15)

    def start_fails(extra, drop=(), want_rc=2, want=""):
        a = list(base)
        for flag in drop:
            i = a.index(flag)
            del a[i:i + 2]
        r = subprocess.run(a + extra, capture_output=True, text=True, timeout=30)
        return r.returncode == want_rc and want in r.stderr, "%d: %s" % (r.returncode, r.stderr)

    for name, extra, drop, rc, want in (
            ("an unknown flag", ["--no-such-flag"], (), 2, "usage"),
            ("--max-cert-ttl 0", ["--max-cert-ttl", "0"], (), 2, "--max-cert-ttl"),
            ("--max-conns 0", ["--max-conns", "0"], (), 2, "--max-conns"),
            ("--node-agents without a slash", ["--node-agents", "meshd"], (), 2, "--node-agents"),
            ("no --ca-key", [], ("--ca-key",), 2, "required"),
            ("a key that is not the CA's", ["--ca-key", os.path.join(d, "serve.key")], (), 1,
             "does not belong"),
            ("--trust-domain other than the CA's", ["--trust-domain", "other.td"], (), 1,
             "trust domain"),
            ("a serving key that does not load", ["--tls-key", root], (), 1, "serving")):
        ok, diag = start_fails(extra, drop, rc, want)
        t.check("skmesh-ca refuses to start with %s (exit %d, says why)" % (name, rc), ok, diag)


CHECKER = """
import os, subprocess, sys, time
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.0)
try:
    open("/proc/%d/mem" % p.pid, "rb").close()
    print("open" if p.poll() is None else "exited")
except PermissionError:
    print("denied" if p.poll() is None else "exited")
p.kill()
p.wait()
"""


def _child_mem_opens(argv):
    """Runs ARGV as the child of a process without CAP_SYS_PTRACE, which
    tries to open the child's /proc/PID/mem: "open", "denied" or
    "exited" (the child was gone: no answer)."""
    r = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace",
                        sys.executable, "-c", CHECKER] + list(argv),
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


if __name__ == "__main__":
    kube.tap_main(body, controller_manager=False)
