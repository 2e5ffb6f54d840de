# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
tap.py - TAP output and the per-file topology fixture of the e2e tests.

A test file is one function body(t, topo) run by tap.main():

    def body(t, topo):
        t.check("stream arrives byte-exact", got == want, "got %s" % got)
        t.require("meshd started", ok)      # stops the file when false

    if __name__ == "__main__":
        tap.main(body, nodes=1, pods=2)

main() fails loudly (never skips) when root, bpffs, cgroup v2 or the
binaries are missing; builds a fresh Topology; runs body; whatever happens
(a failed require, an exception, SIGTERM from the runner's timeout, ^C)
dumps meshd's log on failure, tears the topology down and checks that
nothing is left behind, which is itself a test line. Output:

    ok 1 - name
    not ok 2 - name
    # diagnostics
    1..2

Exit status 0 only when every line is ok.
"""

import atexit
import json
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True     # no __pycache__ in the source tree

import topo as topolib  # noqa: E402


class Abort(Exception):
    """A required check failed: the rest of the file cannot run."""


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def diag(self, text):
        for line in str(text).rstrip("\n").splitlines() or [""]:
            print("# " + line)
        sys.stdout.flush()

    def check(self, name, cond, diag=None):
        """One test line; diag (text, or a callable returning it) is
        printed when cond is false. Returns bool(cond)."""
        self.n += 1
        ok = bool(cond)
        print("%s %d - %s" % ("ok" if ok else "not ok", self.n, name))
        if not ok:
            self.failed += 1
            if diag is not None:
                self.diag(diag() if callable(diag) else diag)
        sys.stdout.flush()
        return ok

    def eq(self, name, got, want, diag=None):
        """check(got == want), printing both when they differ."""
        d = "got:  %r\nwant: %r" % (got, want)
        if diag:
            d += "\n" + (diag() if callable(diag) else str(diag))
        return self.check(name, got == want, d)

    def require(self, name, cond, diag=None):
        if not self.check(name, cond, diag):
            raise Abort(name)
        return cond


def wait_until(pred, timeout=5.0, interval=0.05):
    """Poll pred() until it returns something true or timeout passes;
    returns its last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def counters(topo, n=1):
    """meshctl stats counters of node n as a dict."""
    return topo.meshctl_json(n, "stats")["counters"]


def xfer_pairs(topo, pod, target, pairs, timeout=60):
    """podtool xfer from pod to target ("ip:port") for each (A, B) of
    pairs (the client writes A, the server answers B): returns the
    connections it reports, whether each got exactly its B, and its
    output."""
    r = topo.pod_run(pod, topo.podtool_argv(
        "xfer", "--to", target, "--pairs", ",".join("%d:%d" % ab for ab in pairs)),
        timeout=timeout, check=False)
    conns = [json_line(l) for l in r.stdout.splitlines() if l.startswith("{")]
    exact = len(conns) == len(pairs) and all(c.get("received") == b
                                             for c, (a, b) in zip(conns, pairs))
    return conns, exact, r.stdout + r.stderr


def conn_by_src(conns, src, dst=None):
    """The records of `meshctl conns -o json` whose src (and dst) match."""
    return [c for c in conns if c["src"] == src and (dst is None or c["dst"] == dst)]


def json_line(text):
    """The last JSON object line of a tool's output."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in output:\n" + text)


def _on_signal(signo, _frame):
    # turn the runner's timeout (SIGTERM) or ^C into an exception, so the
    # finally blocks tear the topology down
    raise SystemExit(128 + signo)


def prerequisites(need=("meshd", "meshctl")):
    """Problems that make the e2e tests impossible here (as text)."""
    bad = []
    if os.geteuid() != 0:
        bad.append("not root: the e2e tests create namespaces, cgroups "
                   "and BPF programs (run with sudo)")
    try:
        topolib.cg2_root()
    except topolib.TopoError as e:
        bad.append(str(e))
    if not topolib.bpffs_mounted():
        bad.append("bpffs is not mounted at /sys/fs/bpf (make deps mounts it)")
    for b in need:
        path = os.path.join(topolib.build_dir(), b)
        if not os.access(path, os.X_OK):
            bad.append("%s is missing: run make first (SKM_BUILD=%s)"
                       % (path, topolib.build_dir()))
    return bad


def _leftovers(topo):
    """What of topo still exists after down()."""
    left = []
    if topo.prefix is None:
        return left
    left += [n for n in topolib._netns_list() if n.startswith(topo.prefix + "-")]
    if os.path.exists(topo.run_cgroup()):
        left.append(topo.run_cgroup())
    left += [os.path.join(topolib.BPFFS, d) for d in topolib._listdir(topolib.BPFFS)
             if d.startswith(topo.prefix + "-")]
    if os.path.exists(topo.state_path()):
        left.append(topo.state_path())
    return left


def main(body, nodes=1, pods=2, need=("meshd", "meshctl")):
    """Run body(t, topo) on a fresh topology; exit with the result."""
    t = Tap()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, _on_signal)
    bad = prerequisites(need)
    if bad:
        t.check("prerequisites", False, "\n".join(bad))
        print("1..%d" % t.n)
        sys.exit(1)

    topo = topolib.Topology(nodes=nodes, pods_per_node=pods)
    done = []

    def teardown():
        if done:
            return
        done.append(1)
        # meshd's own words are the best clue of a failure
        if t.failed:
            for n, h in sorted(topo.meshds.items()):
                t.diag("meshd node%d log (%s), last lines:\n%s"
                       % (n, h.log, h.log_tail(40)))
        err = None
        try:
            topo.down()
        except Exception as e:  # noqa: BLE001 - reported as a test line
            err = e
        left = _leftovers(topo)
        t.check("cleanup: no namespace, cgroup, pin or process left",
                err is None and not left,
                "down(): %s\nleft: %s" % (err, left))
        reports = getattr(topo, "sanitizer_reports", [])
        t.check("no sanitizer report in meshd's logs", not reports,
                "\n".join(reports[:20]))

    atexit.register(teardown)
    try:
        try:
            topo.up()
        except topolib.TopoError as e:
            t.check("topology up (%d node(s) x %d pod(s))" % (nodes, pods),
                    False, str(e))
            raise Abort("topology")
        t.diag("topology %s: %d node(s) x %d pod(s), cgroup %s"
               % (topo.rid, nodes, pods, topo.run_cgroup()))
        body(t, topo)
    except Abort:
        pass
    except SystemExit as e:
        t.check("interrupted (signal %s)" % (e.code - 128 if isinstance(e.code, int) else e.code),
                False)
    except BaseException:  # noqa: BLE001 - an exception is a failed test
        t.check("no unexpected error", False, traceback.format_exc())
    finally:
        # signals during teardown must not interrupt it
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        teardown()
    print("1..%d" % t.n)
    sys.stdout.flush()
    sys.exit(1 if t.failed else 0)
