# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
caenv.py - a mesh CA service for the tests and benchmarks of meshd's remote
CA client: the root in a folder meshd is never given (the CA's Secret), the
real build/skmesh-ca serving it, and the tokens a node's meshd presents.

    ca_dir = caenv.make_root(meshctl, tmp)           # meshctl ca init
    ca = caenv.SkmeshCA(build, tmp, ca_dir, cluster.kubeconfig)
    ca.port                                          # 127.0.0.1:port
    me = node.create_object(caenv.SA_NS, "meshd-node1", sa=caenv.SA)
    caenv.write_file(path, caenv.meshd_token(cluster, pod=me,
                                             audiences=[caenv.AUDIENCE]))
    ca.stop()
"""

import os
import signal
import socket
import subprocess
import time

TD = "cluster.local"
SA_NS, SA = "skmesh-system", "meshd"
CA_NAME = "skmesh-ca.skmesh-system.svc"
AUDIENCE = "istio-ca"


class CAError(Exception):
    """skmesh-ca could not be set up; the message says why."""


def write_file(path, text, mode=0o600):
    """text at path, put in place atomically (as kubelet rotates a file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def make_root(meshctl, tmp, td=TD, name="ca-secret"):
    """A mesh root (meshctl ca init) in tmp/name: its folder."""
    d = os.path.join(tmp, name)
    subprocess.run([meshctl, "ca", "init", "--trust-domain", td, "--out", d],
                   check=True, capture_output=True)
    return d


def meshd_token(k, secret=None, audiences=None, pod=None):
    """A token of meshd's ServiceAccount from the TokenRequest API, as
    kubelet projects one: bound to meshd's Pod object (a kubelet KPod) when
    pod is given (how a CA learns the caller's node), else to a Secret
    made here; with audiences, for those (the CA's) instead of the API
    server's."""
    if pod is not None:
        ref = {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid}
    else:
        k.apply({"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": secret, "namespace": SA_NS}})
        uid = k.get("/api/v1/namespaces/%s/secrets/%s" % (SA_NS, secret))["metadata"]["uid"]
        ref = {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": uid}
    spec = {"expirationSeconds": 3600, "boundObjectRef": ref}
    if audiences:
        spec["audiences"] = audiences
    out = k.create("/api/v1/namespaces/%s/serviceaccounts/%s/token" % (SA_NS, SA),
                   {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": spec})
    return out["status"]["token"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SkmeshCA:
    """build/skmesh-ca on 127.0.0.1 with the root of ca_dir, its serving
    certificate (for CA_NAME) signed by that root, checking tokens and
    pods against the API server of kubeconfig."""

    def __init__(self, build, tmp, ca_dir, kubeconfig, extra=(), timeout=20):
        d = os.path.join(tmp, "ca-serving")
        os.makedirs(d)
        key, csr, crt, ext = (os.path.join(d, x)
                              for x in ("tls.key", "tls.csr", "tls.crt", "ext.cnf"))
        write_file(ext, "subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\n"
                   "basicConstraints=critical,CA:FALSE\n" % CA_NAME)
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                        "-subj", "/O=skmesh/CN=skmesh-ca"], capture_output=True, check=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA",
                        os.path.join(ca_dir, "root-cert.pem"), "-CAkey",
                        os.path.join(ca_dir, "root-key.pem"), "-CAcreateserial",
                        "-days", "1", "-out", crt, "-extfile", ext],
                       capture_output=True, check=True)
        self.port, self.metrics_port = free_port(), free_port()
        self.log = os.path.join(tmp, "skmesh-ca.log")
        argv = [os.path.join(build, "skmesh-ca"), "--listen", "127.0.0.1:%d" % self.port,
                "--metrics", "127.0.0.1:%d" % self.metrics_port,
                "--tls-cert", crt, "--tls-key", key,
                "--ca-cert", os.path.join(ca_dir, "root-cert.pem"),
                "--ca-key", os.path.join(ca_dir, "root-key.pem"),
                "--trust-domain", TD, "--kubeconfig", kubeconfig,
                "--audience", AUDIENCE, "--node-agents", "%s/%s" % (SA_NS, SA)] + list(extra)
        with open(self.log, "w") as lf:
            self.proc = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CAError("skmesh-ca exited with %d:\n%s" % (self.proc.returncode,
                                                                   self.log_tail()))
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise CAError("skmesh-ca not serving after %d s:\n%s" % (timeout,
                                                                          self.log_tail()))
            time.sleep(0.05)

    def log_tail(self, lines=30):
        with open(self.log) as f:
            return "".join(f.readlines()[-lines:])

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
