# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
kube.py - a real Kubernetes control plane on loopback for the cluster-mode
tests: etcd, kube-apiserver and (optionally) kube-controller-manager running
only its EndpointSlice controller, the binaries scripts/k8s-servers.sh
built into its cache.

    with kube.Cluster() as k:
        k.create("/api/v1/nodes", {"metadata": {"name": "node1"}})
        status, obj = k.request("GET", "/api/v1/namespaces/default")
        k.kubeconfig            # path of an admin kubeconfig

Everything lives in one fresh temporary folder (certificates, keys, etcd's
data, logs, kubeconfig) and every server listens on 127.0.0.1 on ports
picked free, so two runs never collide. stop() (also reached from __exit__,
from a failed start and, through PR_SET_PDEATHSIG, from the death of the
Python process) ends the servers and removes the folder.

No kubelet runs: the tests do its part (create Node and Pod objects, write
pod status through the status subresource). Authentication is by client
certificate (the admin is in system:masters), authorization RBAC; the
ServiceAccount admission plugin is off, since no controller here creates
the "default" service accounts it would demand.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_SCRIPT = os.path.join(ROOT, "scripts", "k8s-servers.sh")
BINS = ("etcd", "kube-apiserver", "kube-controller-manager")


class KubeError(Exception):
    """The control plane could not be started or answered badly."""


def bin_dir():
    """Folder of the servers: $SKMESH_K8S_BIN, else what k8s-servers.sh
    --print names (its cache for the pinned version)."""
    d = os.environ.get("SKMESH_K8S_BIN")
    if d:
        return d
    r = subprocess.run([BUILD_SCRIPT, "--print"], capture_output=True, text=True)
    if r.returncode != 0:
        raise KubeError("%s --print failed: %s" % (BUILD_SCRIPT, r.stderr.strip()))
    return r.stdout.strip()


def missing_binaries(d=None):
    """Problems that make the servers impossible to start (as text)."""
    d = d or bin_dir()
    bad = [os.path.join(d, b) for b in BINS if not os.access(os.path.join(d, b), os.X_OK)]
    if bad:
        return ["missing %s: build them with scripts/k8s-servers.sh "
                "(or point SKMESH_K8S_BIN at a folder that has them)" % ", ".join(bad)]
    return []


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    # PR_SET_PDEATHSIG: a server never outlives the test that started it
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _openssl(*args, cwd):
    r = subprocess.run(("openssl",) + args, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise KubeError("openssl %s failed: %s" % (" ".join(args), r.stderr.strip()))


class Cluster:
    def __init__(self, controller_manager=True, service_cidr="10.96.0.0/16",
                 bins=None, ready_timeout=90.0, apiserver_args=()):
        self.bins = bins or bin_dir()
        self.apiserver_args = list(apiserver_args)
        self.with_kcm = controller_manager
        self.service_cidr = service_cidr
        self.ready_timeout = ready_timeout
        self.dir = None
        self.procs = {}         # name -> Popen, while running
        self.spawned = []       # every Popen and folder ever made, for
        self.workdir = None     # the callers' leftover checks
        self.logs = {}          # name -> log path
        self.url = None
        self.kubeconfig = None
        self._ssl = None

    # --- lifecycle -------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        bad = missing_binaries(self.bins)
        if bad:
            raise KubeError("\n".join(bad))
        self.dir = self.workdir = tempfile.mkdtemp(prefix="skmesh-kube-")
        try:
            self._pki()
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            if self.with_kcm:
                self._start_kcm()
        except BaseException:
            self.stop()
            raise

    def stop(self):
        """End every server (SIGTERM, then SIGKILL) and remove the folder.
        Safe to call twice."""
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = {}
        if self.dir and os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def log_tail(self, name, lines=30):
        try:
            with open(self.logs[name], errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except (KeyError, OSError) as e:
            return "(no log: %s)" % e

    def _path(self, *p):
        return os.path.join(self.dir, *p)

    def _spawn(self, name, argv):
        log = self._path(name + ".log")
        self.logs[name] = log
        with open(log, "wb") as f:
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                cwd=self.dir, preexec_fn=_die_with_parent)
        self.spawned.append(self.procs[name])

    def _wait(self, name, probe, what):
        deadline = time.monotonic() + self.ready_timeout
        last = None
        while time.monotonic() < deadline:
            p = self.procs[name]
            if p.poll() is not None:
                raise KubeError("%s exited with %d before %s; its log ends:\n%s"
                                % (name, p.returncode, what, self.log_tail(name)))
            try:
                if probe():
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError) as e:
                last = e
            time.sleep(0.2)
        raise KubeError("%s not %s within %.0f s (last probe error: %s); its log ends:\n%s"
                        % (name, what, self.ready_timeout, last, self.log_tail(name)))

    # --- pieces ----------------------------------------------------------

    def _pki(self):
        """A CA, the API server's serving certificate for 127.0.0.1, client
        certificates for the admin and the controller manager, and the
        service-account signing key."""
        d = self.dir
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=skmesh-test-ca", cwd=d)
        certs = {
            "apiserver": ("/CN=kube-apiserver",
                          "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "extendedKeyUsage=serverAuth\n"),
            "admin": ("/O=system:masters/CN=skmesh-test-admin",
                      "extendedKeyUsage=clientAuth\n"),
            "kcm": ("/O=system:masters/CN=system:kube-controller-manager",
                    "extendedKeyUsage=clientAuth\n"),
        }
        for name, (subj, ext) in certs.items():
            with open(os.path.join(d, name + ".ext"), "w") as f:
                f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" + ext)
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
                     "-out", name + ".csr", "-subj", subj, cwd=d)
            _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-days", "2", "-extfile", name + ".ext",
                     "-out", name + ".crt", cwd=d)
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", "sa.key", cwd=d)
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
        ctx = ssl.create_default_context(cafile=self._path("ca.crt"))
        ctx.load_cert_chain(self._path("admin.crt"), self._path("admin.key"))
        self._ssl = ctx

    def _start_etcd(self):
        self.etcd_port, peer = free_port(), free_port()
        self.etcd_url = "http://127.0.0.1:%d" % self.etcd_port
        peer_url = "http://127.0.0.1:%d" % peer
        self._spawn("etcd", [
            os.path.join(self.bins, "etcd"),
            "--name", "skmesh-test",
            "--data-dir", self._path("etcd"),
            "--listen-client-urls", self.etcd_url,
            "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", "skmesh-test=" + peer_url,
            "--listen-metrics-urls", "http://127.0.0.1:%d" % free_port(),
            "--log-level", "warn",
        ])

        def healthy():
            with urllib.request.urlopen(self.etcd_url + "/health", timeout=2) as r:
                return json.load(r).get("health") == "true"
        self._wait("etcd", healthy, "healthy")

    def _start_apiserver(self):
        self.api_port = free_port()
        self.url = "https://127.0.0.1:%d" % self.api_port
        p = self._path
        self._spawn("kube-apiserver", [
            os.path.join(self.bins, "kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            "--bind-address", "127.0.0.1",
            "--advertise-address", "127.0.0.1",
            # the "kubernetes" Service's endpoint may not be loopback; no
            # test reaches the API through it
            "--endpoint-reconciler-type", "none",
            "--secure-port", str(self.api_port),
            "--tls-cert-file", p("apiserver.crt"),
            "--tls-private-key-file", p("apiserver.key"),
            "--client-ca-file", p("ca.crt"),
            "--authorization-mode", "RBAC",
            "--anonymous-auth=false",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", p("sa.pub"),
            "--service-account-signing-key-file", p("sa.key"),
            "--service-cluster-ip-range", self.service_cidr,
            "--disable-admission-plugins", "ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
        ] + self.apiserver_args)

        def ready():
            status, _ = self.request("GET", "/readyz", timeout=2)
            return status == 200
        self._wait("kube-apiserver", ready, "ready (/readyz)")

    def etcd_compact(self):
        """Compacts etcd up to its current revision (what the API server's
        compactor does every few minutes), so a watch from an older
        resourceVersion gets 410 Gone. Returns that revision."""
        def post(path, body):
            req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)
        # the header of any range answer carries the current revision
        rev = int(post("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        post("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def _kubeconfig_text(self, user, cert, key):
        q = json.dumps      # a JSON string is a valid YAML scalar
        return ("apiVersion: v1\nkind: Config\n"
                "clusters:\n- name: skmesh-test\n  cluster:\n"
                "    server: %s\n    certificate-authority: %s\n"
                "users:\n- name: %s\n  user:\n"
                "    client-certificate: %s\n    client-key: %s\n"
                "contexts:\n- name: skmesh-test\n  context:\n"
                "    cluster: skmesh-test\n    user: %s\n"
                "current-context: skmesh-test\n"
                % (q(self.url), q(self._path("ca.crt")), user, q(cert), q(key), user))

    def _write_kubeconfig(self):
        self.kubeconfig = self._path("admin.kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write(self._kubeconfig_text("admin", self._path("admin.crt"),
                                          self._path("admin.key")))

    def _start_kcm(self):
        kc = self._path("kcm.kubeconfig")
        with open(kc, "w") as f:
            f.write(self._kubeconfig_text("kcm", self._path("kcm.crt"), self._path("kcm.key")))
        self.kcm_port = free_port()
        self._spawn("kube-controller-manager", [
            os.path.join(self.bins, "kube-controller-manager"),
            "--kubeconfig", kc,
            "--authentication-kubeconfig", kc,
            "--authorization-kubeconfig", kc,
            "--controllers", "endpointslice",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--bind-address", "127.0.0.1",
            "--secure-port", str(self.kcm_port),
            "--profiling=false",
        ])
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE   # its self-made serving certificate

        def healthy():
            with urllib.request.urlopen("https://127.0.0.1:%d/healthz" % self.kcm_port,
                                        timeout=2, context=ctx) as r:
                return r.status == 200
        self._wait("kube-controller-manager", healthy, "healthy (/healthz)")

    # --- API -------------------------------------------------------------

    def request(self, method, path, body=None, timeout=10, content_type=None):
        """One call as the admin; returns (HTTP status, decoded JSON or the
        raw text when it is not JSON). HTTP errors are returned, not raised."""
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type or "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def create(self, path, obj):
        """POST obj to the collection path; the created object, or
        KubeError naming the path and the API's answer."""
        status, out = self.request("POST", path, obj)
        if status not in (200, 201):
            raise KubeError("POST %s: HTTP %d: %s" % (path, status, out))
        return out

    def put_status(self, path, obj):
        """PUT obj to path + "/status" (what a kubelet does for a pod)."""
        status, out = self.request("PUT", path + "/status", obj)
        if status != 200:
            raise KubeError("PUT %s/status: HTTP %d: %s" % (path, status, out))
        return out


def tap_main(body, up="etcd and kube-apiserver are up", files=(), **cluster_kw):
    """Runs body(t, k) as a TAP test on a fresh Cluster(**cluster_kw) and
    exits with its result: the binaries checked first; SIGTERM (the
    runner's timeout) and ^C turned into a clean stop; an exception is a
    failed line. Last line: every server stopped and the cluster's folder
    gone, and FILES (the caller's temporary files) removed."""
    import signal
    import sys
    import tap
    t = tap.Tap()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, tap._on_signal)
    bad = missing_binaries()
    if bad:
        t.check("prerequisites", False, "\n".join(bad))
        print("1..%d" % t.n)
        sys.exit(1)
    k = Cluster(**cluster_kw)
    try:
        k.start()
        t.check(up, True)
        body(t, k)
    except tap.Abort:
        pass
    except Exception as e:  # noqa: BLE001 - reported as a test line
        t.check("no exception", False, "%s: %s" % (type(e).__name__, e))
    finally:
        k.stop()
        for f in files:
            if os.path.exists(f):
                os.unlink(f)
        running = [p.args[0] for p in k.spawned if p.poll() is None]
        left = [p for p in [k.workdir] + list(files) if p and os.path.exists(p)]
        t.check("cleanup: no server running, no folder left",
                not running and not left, "running: %s\nleft: %s" % (running, left))
    print("1..%d" % t.n)
    sys.exit(1 if t.failed else 0)
