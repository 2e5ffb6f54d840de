#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
meshd's Kubernetes client (agent/kube.c, agent/kwatch.c) against the real
servers of scripts/k8s-servers.sh (tests/lib/kube.py: etcd and
kube-apiserver on loopback, the watch cache off so that etcd's compaction
reaches the watchers as 410 Gone), run on its own by
build/tests/kube-watch:

- a list in pages of one item hands every pod over between its relist
  begin and end; then the watch gives each create, status write and
  delete, in order, with their resourceVersions;
- watch streams that the server ends every 2 s are resumed from the last
  resourceVersion: nothing is lost or given twice;
- a watcher left behind while etcd is compacted (SIGSTOP, changes,
  compaction, SIGCONT) gets 410 Gone, lists again, and the state its
  events describe is the API's, the delete it missed included;
- an API server it cannot verify (another CA) gets no request through:
  the failures are counted and backed off from, nothing is handed over.

The state the events describe is replayed here as a caller would keep
it and compared with a list of the API, object by object.
"""
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.dont_write_bytecode = True

import kube  # noqa: E402
import tap  # noqa: E402
import topo as topolib  # noqa: E402

PODS = "/api/v1/namespaces/%s/pods"


def pod(name):
    return {"metadata": {"name": name},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "skmesh.test/none"}]}}


class Watcher:
    """build/tests/kube-watch, its lines read as they come."""

    def __init__(self, kubeconfig, *extra):
        argv = [os.path.join(topolib.build_dir(), "tests", "kube-watch"),
                "--kubeconfig", kubeconfig, "--path", "/api/v1/pods"] + list(extra)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.lines, self.buf = [], ""
        self.state, self.marked, self.relists = {}, None, 0

    def poll(self):
        try:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        except (BlockingIOError, OSError, ValueError):
            chunk = None
        if chunk:
            self.buf += chunk.decode()
            *full, self.buf = self.buf.split("\n")
            for l in full:
                if l.strip():
                    self.apply(json.loads(l))

    def apply(self, o):
        """What a caller keeps: the objects, replaced or dropped by each
        event; after a relist, what it did not name again is gone."""
        self.lines.append(o)
        if o.get("relist") == "begin":
            self.marked = set()
        elif o.get("relist") == "end":
            for k in [k for k in self.state if k not in self.marked]:
                del self.state[k]
            self.marked = None
            self.relists += 1
        elif "event" in o:
            k = "%s/%s" % (o["ns"], o["name"])
            if o["event"] == "DELETED":
                self.state.pop(k, None)
            else:
                self.state[k] = o["rv"]
            if self.marked is not None:
                self.marked.add(k)

    def wait_for(self, pred, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if pred():
                return True
            time.sleep(0.05)
        self.poll()
        return pred()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        os.set_blocking(self.proc.stdout.fileno(), True)
        try:
            rest, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, err = self.proc.communicate()
        self.buf += (rest or b"").decode()
        err = (err or b"").decode(errors="replace")
        for l in self.buf.split("\n"):
            if l.strip():
                self.apply(json.loads(l))
        self.buf = ""
        stats = [o["stats"] for o in self.lines if "stats" in o]
        return (stats[-1] if stats else {}), err


def api_state(k):
    status, lst = k.request("GET", "/api/v1/pods")
    return {"%s/%s" % (i["metadata"]["namespace"], i["metadata"]["name"]):
            i["metadata"]["resourceVersion"] for i in lst["items"]}


def main():
    t = tap.Tap()
    bad = kube.missing_binaries()
    if bad:
        t.check("the Kubernetes servers are built (make deps builds them)", False, "\n".join(bad))
        print("1..%d" % t.n)
        sys.exit(1)
    watchers = []
    try:
        with kube.Cluster(controller_manager=False,
                          apiserver_args=["--watch-cache=false"]) as k:
            body(t, k, watchers)
    except Exception as e:  # noqa: BLE001 - reported as a failed line
        import traceback
        t.check("no unexpected error", False, traceback.format_exc())
    finally:
        for w in watchers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    t.check("no kube-watch left running", all(w.proc.poll() is not None for w in watchers))
    print("1..%d" % t.n)
    sys.exit(1 if t.failed else 0)


def body(t, k, watchers):
    for ns in ("shop", "bank"):
        k.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    for ns, name in (("shop", "pre-a"), ("shop", "pre-b"), ("bank", "pre-c")):
        k.create(PODS % ns, pod(name))

    w = Watcher(k.kubeconfig, "--page", "1", "--watch-seconds", "2")
    watchers.append(w)
    t.check("a list in pages of one: every pod between relist begin and end",
            w.wait_for(lambda: w.relists >= 1) and
            sorted(o.get("name") for o in w.lines if o.get("event")) ==
            ["pre-a", "pre-b", "pre-c"], w.lines)
    t.eq("... the state is the API's", w.state, api_state(k))

    k.create(PODS % "shop", pod("web-0"))
    k.create(PODS % "shop", pod("web-1"))
    status, obj = k.request("GET", PODS % "shop" + "/web-0")
    obj["status"] = {"phase": "Running", "podIP": "10.1.2.3",
                     "podIPs": [{"ip": "10.1.2.3"}]}
    k.put_status(PODS % "shop" + "/web-0", obj)
    k.request("DELETE", PODS % "shop" + "/web-1?gracePeriodSeconds=0")
    t.check("create, status write and delete arrive as events",
            w.wait_for(lambda: "shop/web-1" not in w.state and "shop/web-0" in w.state and
                       any(o.get("event") == "DELETED" and o.get("name") == "web-1"
                           for o in w.lines)), w.lines[-6:])
    t.eq("... the state is the API's, resourceVersions included", w.state, api_state(k))

    # streams end every 2 s: what happens between them is not lost
    for i in range(3):
        time.sleep(1.3)
        k.create(PODS % "bank", pod("late-%d" % i))
    t.check("across watch streams the server ended, every pod made between them arrives",
            w.wait_for(lambda: all("bank/late-%d" % i in w.state for i in range(3))),
            w.lines[-6:])
    added = [o["name"] for o in w.lines if o.get("event") == "ADDED"]
    t.eq("... each once", sorted(n for n in added if n.startswith("late-")),
         ["late-0", "late-1", "late-2"])

    # left behind: etcd compacted past what the watcher has seen
    relists0 = w.relists
    os.kill(w.proc.pid, signal.SIGSTOP)
    time.sleep(3)                       # its stream is ended by the server
    k.request("DELETE", PODS % "shop" + "/pre-b?gracePeriodSeconds=0")
    k.create(PODS % "bank", pod("after-gone"))
    for i in range(5):                  # other writes move etcd on
        k.create("/api/v1/namespaces/bank/configmaps", {"metadata": {"name": "cm-%d" % i}})
    k.etcd_compact()
    os.kill(w.proc.pid, signal.SIGCONT)
    t.check("compacted away: the watcher gets 410, lists again",
            w.wait_for(lambda: w.relists > relists0, timeout=20),
            w.lines[-6:])
    t.check("... and its state is the API's: the pod deleted meanwhile gone, the new one there",
            w.wait_for(lambda: w.state == api_state(k)),
            (w.state, api_state(k)))
    stats, err = w.stop()
    t.check("stats: %s" % json.dumps(stats, sort_keys=True),
            stats.get("relists_gone", 0) >= 1 and stats.get("lists", 0) >= 2 and
            stats.get("watch_restarts", 0) >= 2, err[-500:])

    # an API server the client cannot verify
    other = os.path.join(k.dir, "other-ca.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", os.path.join(k.dir, "other-ca.key"), "-out", other,
                    "-subj", "/CN=not-the-cluster"], check=True, capture_output=True)
    with open(k.kubeconfig) as f:
        text = f.read()
    import base64
    import re
    with open(other, "rb") as f:
        b64 = base64.b64encode(f.read()).decode()
    bad_cfg = os.path.join(k.dir, "bad-kubeconfig")
    with open(bad_cfg, "w") as f:
        f.write(re.sub(r"certificate-authority(-data)?: .*",
                       "certificate-authority-data: " + b64, text))
    b = Watcher(bad_cfg, "--seconds", "3")
    watchers.append(b)
    stats, err = b.stop() if b.proc.wait(15) is not None else ({}, "")
    t.check("another CA: no event handed over, the failures counted (%s) and said: %s"
            % (stats.get("errors"), err.strip().splitlines()[-1:] if err else ""),
            not any(o.get("event") or o.get("relist") for o in b.lines) and
            stats.get("errors", 0) >= 1 and "certificate" in err.lower(), (b.lines, err))


if __name__ == "__main__":
    main()
