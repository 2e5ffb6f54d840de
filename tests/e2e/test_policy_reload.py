#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Live policy changes (issue 3): meshd watches its config file (inotify on
its folder); a new file put in place with rename() changes the verdict of
NEW connections within one second, without a restart. Connections already
open are judged again, as ztunnel judges the ones it carries: an allowed
connection that is exchanging data keeps working across an unrelated
policy change (and a connection to another workload across every
change), while a change that denies connections of its kind closes the
open ones (mesh and plaintext: the client gets a reset, meshd logs and
counts them as policy_revoked). An invalid
new config (malformed CIDR, unknown action, selector that is not a map,
duplicate policy name, port out of range) is rejected: meshd logs
FILE:LINE:COL and keeps enforcing the old policy, and `meshd
--check-config` exits non-zero naming the position. A workload's policy
switches atomically: while it flips many times between two policies that
both allow them, a stream of new connections (mesh and plaintext) never
sees a refusal, and after the flips the kernel's policy tables hold what
they held before (no key of the other policy left). After `kill -9` of meshd the kernel keeps enforcing, and a
new meshd takes over and applies a changed policy.

1 node x 4 pods: P1 n1p1 foo/client, P2 n1p2 foo/server (echo on 8080),
P3 n1p3 bar/other, legacy n1p4 (not a Workload).

    policy A: server ALLOWs namespace foo, and plaintext from 10.99.1.5
              -> P1 ALLOW, P3 DENY, legacy ALLOW
    policy B: server ALLOWs namespace bar only
              -> P1 DENY, P3 ALLOW, legacy DENY
"""
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402
from polcheck import tc_missing, verdict  # noqa: E402

ROLES = {"P1": ("client", "foo", "client", {"app": "client"}),
         "P2": ("server", "foo", "server", {"app": "server"}),
         "P3": ("other", "bar", "other", {"app": "other"})}

POLICY_A = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: server-access
  namespace: foo
spec:
  selector:
    matchLabels:
      app: server
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: ["foo"]
  - from:
    - source:
        ipBlocks: ["10.99.1.5/32"]
"""
POLICY_B = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: server-access
  namespace: foo
spec:
  selector:
    matchLabels:
      app: server
  action: ALLOW
  rules:
  - from:
    - source:
        namespaces: ["bar"]
"""
UNRELATED = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: other-deny-9999
  namespace: bar
spec:
  selector:
    matchLabels:
      app: other
  action: DENY
  rules:
  - to:
    - operation:
        ports: ["9999"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: bar
spec:
  mtls:
    mode: STRICT
"""
# two policies that both allow foo/client and 10.99.1.5 to reach 8081, but
# through other rules, port classes and source CIDR classes
POLICY_X = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-access, namespace: foo}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {namespaces: ["foo"]}}]
    to: [{operation: {ports: ["8080", "8081"]}}]
  - from: [{source: {ipBlocks: ["10.99.1.5/32"]}}]
"""
POLICY_Y = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-access, namespace: foo}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/foo/*", "*/sa/other"]}}]
  - from: [{source: {ipBlocks: ["10.99.1.0/29", "10.99.0.0/16"]}}]
    to: [{operation: {ports: ["8080", "8081"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-deny, namespace: foo}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {ports: ["9090"]}}]
  - from: [{source: {notIpBlocks: ["10.99.0.0/16"]}}]
"""
STATE_A = {"P1": "ALLOW", "P3": "DENY", "legacy": "ALLOW"}
STATE_B = {"P1": "DENY", "P3": "ALLOW", "legacy": "DENY"}

# name -> (text, the marker whose line the error must name, words of the
# message)
BAD = {
    "malformed CIDR 10.0.0.0/33": (
        POLICY_A.replace('"10.99.1.5/32"', '"10.0.0.0/33"'), "10.0.0.0/33",
        ["10.0.0.0/33", "prefix"]),
    "unknown action ALOW": (
        POLICY_A.replace("action: ALLOW", "action: ALOW"), "action: ALOW",
        ["ALOW", "action"]),
    "selector that is not a map": (
        POLICY_A.replace("  selector:\n    matchLabels:\n      app: server\n",
                         "  selector: app=server\n"), "selector: app=server",
        ["selector", "map"]),
    "duplicate policy name": (
        POLICY_A + "---\n" + POLICY_B.replace('["bar"]', '["baz"]') + "# dup\n",
        None, ["server-access", "twice"]),
    "port out of range": (
        POLICY_A.replace('  - from:\n    - source:\n        namespaces: ["foo"]\n',
                         '  - from:\n    - source:\n        namespaces: ["foo"]\n'
                         '    to:\n    - operation:\n        ports: ["70000"]\n'),
        '"70000"', ["70000", "range"]),
}


def workload_docs(topo):
    docs = []
    for key, (name, ns, sa, labels) in sorted(ROLES.items()):
        p = topo.pods[int(key[1]) - 1]
        lab = ", ".join('"%s": "%s"' % kv for kv in labels.items())
        docs.append("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
                    'metadata: {name: "%s", namespace: "%s", labels: {%s}}\n'
                    'spec: {ip: %s, node: node1, serviceAccount: "%s", netns: %s}\n'
                    % (name, ns, lab, p.ip, sa, p.netns_path))
    return docs


def body(t, topo):
    P = {"P1": topo.pods[0], "P2": topo.pods[1], "P3": topo.pods[2],
         "legacy": topo.pods[3]}
    server = P["P2"]
    dst = "%s:8080" % server.ip
    topo.podtool(server, "echo", "--port", 8080, "--timeout", 150).expect("listening")
    topo.podtool(P["P3"], "echo", "--port", 8080, "--timeout", 150).expect("listening")
    probers = {k: topo.podtool(P[k], "prober", stdin=True) for k in ("P1", "P3", "legacy")}
    wl = workload_docs(topo)
    cfg = topo.config_path()        # meshd watches this file's folder

    def write(policy_text, path=cfg):
        tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
        with open(tmp, "w") as f:
            f.write("---\n".join(wl + [policy_text]))
        t0 = time.monotonic()
        os.replace(tmp, path)
        return t0

    def probe(srcs, plain_timeout=0.5):
        for s in srcs:
            probers[s].proc.stdin.write("%s %s\n" % (plain_timeout if s == "legacy" else 1.0, dst))
            probers[s].proc.stdin.flush()
        return {s: probers[s].next(10)["results"][0] for s in srcs}

    def state():
        raw = probe(("P1", "P3", "legacy"))
        return {s: verdict(x, s == "legacy") for s, x in raw.items()}, raw

    def wait_log(pattern, size, timeout=5.0):
        return tap.wait_until(lambda: re.search(pattern, h.log_text()[size:]), timeout, 0.02)

    write(POLICY_A)
    h = topo.start_meshd(1, cfg)
    pid = h.pid
    t.check("meshd put its TC filter on the veth of each of the 3 Workload pods",
            not tc_missing(topo, topo.pods[:3]),
            lambda: "missing on: %s\n%s" % (tc_missing(topo, topo.pods[:3]), h.log_tail()))
    got, raw = state()
    t.eq("policy A enforced: foo/client ALLOW, bar/other DENY, plaintext from "
         "10.99.1.5 ALLOW", got, STATE_A, raw)

    # --- held connections, mesh and plaintext, exchanging data
    # (and a bystander: P1 -> bar/other, which every policy here allows)
    held = {}
    for s, to, name in (("P1", dst, "foo/server"), ("legacy", dst, "foo/server"),
                        ("P1>P3", "%s:8080" % P["P3"].ip, "bar/other")):
        held[s] = topo.podtool(P[s[:2] if s.startswith("P1") else s], "session", "--to", to,
                               "--io-timeout", 10, stdin=True)
        held[s].name = name
        ev = held[s].expect("event")
        t.require("held connection %s -> %s:8080 is open" % (s, name),
                  ev.get("event") == "connected", ev)

    def held_ok(what):
        for s, hp in held.items():
            x = hp.cmd("xfer 131072")
            t.check("%s: held %s connection %s -> %s:8080 still moves data (128 KiB "
                    "echoed)" % (what, "plaintext" if s == "legacy" else "mesh", s, hp.name),
                    x.get("ok") and x.get("event") == "xfer", x)

    held_ok("before any change")

    # --- an unrelated change (bar's workload) keeps everything
    size = len(h.log_text())
    write(POLICY_A + "---\n" + UNRELATED)
    t.require("unrelated change (DENY port 9999 and STRICT in bar) applied via inotify",
              wait_log(r"applied config: 3 workloads, 0 services, 2 Authorization", size),
              lambda: h.log_tail())
    held_ok("unrelated change")
    got, raw = state()
    t.eq("... verdicts to foo/server unchanged", got, STATE_A, raw)

    # --- flips: time from rename() to the first connect with the new verdict
    lat = []
    for i, (text, want) in enumerate(((POLICY_B, STATE_B), (POLICY_A, STATE_A),
                                      (POLICY_B, STATE_B))):
        name = "A -> B" if want is STATE_B else "B -> A"
        t0 = write(text)
        seen = {}
        while time.monotonic() - t0 < 3.0 and len(seen) < 2:
            tick = time.monotonic()
            for s, x in probe([s for s in ("P1", "P3") if s not in seen]).items():
                if verdict(x, False) == want[s]:
                    seen[s] = time.monotonic() - t0
            time.sleep(max(0.0, 0.02 - (time.monotonic() - tick)))
        took = max(seen.values()) if len(seen) == 2 else None
        lat.append(took)
        t.check("flip %d (%s): new connections get the new verdict %s within 1 s of "
                "rename() (took %s)" % (i + 1, name, {k: want[k] for k in ("P1", "P3")},
                                        "%.0f ms" % (took * 1e3) if took else "> 3 s"),
                took is not None and took < 1.0,
                lambda: "seen %s\n%s" % (seen, h.log_tail(10)))
        raw = probe(["legacy"])
        t.eq("... and plaintext from 10.99.1.5 gets %s" % want["legacy"],
             verdict(raw["legacy"], True), want["legacy"], raw)
        if i == 0:
            # the held connections B denies were closed by meshd
            # (the reset reaches the client's writer or its reader first: an
            # error, or the echo ended early by the end of the stream)
            for s in ("P1", "legacy"):
                hp = held.pop(s)
                before = hp.lines[-1].get("received", 0)
                x = hp.cmd("xfer 1024")
                t.check("flip 1: the held %s connection %s -> foo/server:8080, which B "
                        "denies, was closed (the client gets %s)"
                        % ("plaintext" if s == "legacy" else "mesh", s,
                           x.get("error") or "the end of the stream"),
                        (x.get("event") == "error" and
                         x.get("error") in ("ECONNRESET", "EPIPE", "ECONNABORTED")) or
                        (x.get("event") == "xfer" and not x.get("ok") and
                         x.get("received") == before), x)
            t.check("meshd logged closing them, naming policy B's verdict",
                    len(re.findall(r"policy: closing 10\.99\.1\.(2|5):\d+ -> %s:8080, now "
                                   r"denied" % re.escape(server.ip), h.log_text())) == 2,
                    h.log_tail(15))
            t.check("... and counted them (policy_revoked %s)"
                    % tap.counters(topo).get("policy_revoked"),
                    tap.counters(topo).get("policy_revoked") == 2, tap.counters(topo))
        if want is STATE_B:
            held_ok("flip %d, a change that denies other connections to foo/server" % (i + 1))
    t.diag("rename -> new verdict: %s" % ", ".join(
        "%.0f ms" % (x * 1e3) if x else "-" for x in lat))
    t.eq("meshd was not restarted (same pid, one 'ready')",
         (h.proc.poll(), h.pid, h.log_text().count("meshd: ready")), (None, pid, 1))

    # --- invalid configs: rejected with a position, old policy kept
    # (state B is live now)
    for k, (name, (text, marker, words)) in enumerate(BAD.items()):
        bad_path = os.path.join(topo.logdir, "bad-%d.yaml" % k)
        with open(bad_path, "w") as f:
            f.write("---\n".join(wl + [text]))
        full = "---\n".join(wl + [text])
        if marker:
            lines = [n + 1 for n, l in enumerate(full.splitlines()) if marker in l]
        else:       # the duplicate: anywhere in the second policy document
            start = full.count("\n", 0, full.rindex("kind: AuthorizationPolicy")) + 1
            lines = list(range(start - 1, full.count("\n") + 1))
        r = topolib.sh([os.path.join(topolib.build_dir(), "meshd"), "--check-config",
                        "--config", bad_path], check=False, timeout=20)
        pos = re.findall(r"(?m)^(?:meshd: )?" + re.escape(bad_path) +
                         r":(\d+):(\d+): error: (.*)", r.stderr)
        t.check("--check-config, %s: exit non-zero, error at %s:LINE:COL on line %s, "
                "naming %s" % (name, os.path.basename(bad_path),
                               lines[0] if marker else "%d..%d" % (lines[0], lines[-1]), words),
                r.returncode != 0 and any(int(l) in lines and int(c) >= 1 and
                                          any(w in m for w in words) for l, c, m in pos),
                "exit %d\n%s" % (r.returncode, r.stderr))

        size = len(h.log_text())
        write(text)
        said = wait_log(r"is invalid: keeping the running config", size)
        logged = h.log_text()[size:]
        lpos = re.findall(r"(?m)^meshd: " + re.escape(cfg) + r":(\d+):(\d+): error: (.*)",
                          logged)
        t.check("running meshd, %s: logs %s:LINE:COL and keeps the running config"
                % (name, os.path.basename(cfg)),
                said and any(int(l) in lines and any(w in m for w in words)
                             for l, _c, m in lpos), logged)
        got, raw = state()
        t.eq("... the old policy (B) is still enforced", got, STATE_B, raw)
    t.check("meshd still runs, never restarted", h.proc.poll() is None and h.pid == pid
            and h.log_text().count("meshd: ready") == 1, h.log_tail())

    # --- the next valid file is taken (the invalid ones were not dead reloads)
    write(POLICY_A)
    ok = tap.wait_until(lambda: state()[0] == STATE_A, timeout=3, interval=0.02)
    t.check("a valid file after the invalid ones is applied (policy A again)",
            ok, lambda: "%s\n%s" % (state(), h.log_tail()))

    # --- atomic switch: connections that both policies allow, while the
    # policy flips (rename + SIGHUP; meshd may fold a SIGHUP and the file
    # event of one flip, or two quick flips, into one reload).
    # Nothing listens on 8081: every connect() must end in ECONNREFUSED (the
    # pod's RST), never EPERM (refused by connect4) or a timeout (SYN
    # dropped by TC); no accept queue to overflow either.
    def policy_entries():
        out = {}
        for m in ("skm_verdicts", "skm_plain"):
            r = topolib.sh(["bpftool", "-j", "map", "dump", "pinned",
                            os.path.join(topo.pin_dir(1), m)])
            out[m] = len(json.loads(r.stdout))
        return out

    def apply(policy_text):
        size = len(h.log_text())
        write(policy_text)
        return wait_log(r"meshd: applied config", size)

    # X over A, with a table changed in place: what the kernel holds then
    # is what it must hold again after the flips
    t.check("policy X applied", apply(POLICY_X), h.log_tail())
    entries_x = policy_entries()
    applied0 = h.log_text().count("meshd: applied config")
    dst81 = "%s:8081" % server.ip
    load = [topo.podtool(P["P1"], "connect-many", "--to", dst81, "--count", 80000,
                         "--io-timeout", 0.9),
            topo.podtool(P["legacy"], "connect-many", "--to", dst81, "--count", 50000,
                         "--io-timeout", 0.9)]
    flips = 0
    t0 = time.monotonic()
    while any(x.proc.poll() is None for x in load) and time.monotonic() - t0 < 60:
        write(POLICY_Y if flips % 2 == 0 else POLICY_X)
        h.proc.send_signal(signal.SIGHUP)
        flips += 1
        time.sleep(0.03)
    res = [x.expect("count", 30) for x in load]
    applied = h.log_text().count("meshd: applied config") - applied0
    t.diag("%d flips (%d applies) in %.1f s under %d + %d connects"
           % (flips, applied, time.monotonic() - t0, res[0]["count"], res[1]["count"]))
    t.check("policy flipped at least 50 times during the load (%d flips, %d applies)"
            % (flips, applied), flips >= 50 and applied >= 50, h.log_tail())
    t.eq("... foo/client's connects to foo/server:8081 (allowed by both): each one "
         "reached the pod (ECONNREFUSED), none refused by policy",
         res[0]["errors"], {"ECONNREFUSED": res[0]["count"]}, res[0])
    t.eq("... plaintext connects from 10.99.1.5 (allowed by both): each one reached "
         "the pod, no SYN dropped", res[1]["errors"], {"ECONNREFUSED": res[1]["count"]},
         res[1])
    held_ok("after the flips")
    # Y has other port classes (9090) and source CIDRs than X: a change
    # written in place adds and removes keys; none may be left over
    t.check("policy X applied again after the flips", apply(POLICY_X), h.log_tail())
    t.eq("... skm_verdicts and skm_plain hold as many entries as after X the first "
         "time (a change in place leaves no key behind)", policy_entries(), entries_x)

    # --- kill -9: the kernel keeps enforcing; a new meshd takes over
    write(POLICY_A)
    tap.wait_until(lambda: state()[0] == STATE_A, timeout=3, interval=0.02)
    h.proc.kill()
    h.proc.wait(10)
    got, raw = state()
    t.eq("meshd killed (-9): policy A still enforced by the kernel", got, STATE_A, raw)
    write(POLICY_B)
    h = topo.start_meshd(1, cfg)
    got, raw = state()
    t.eq("a new meshd takes over the pinned data path and enforces policy B", got,
         STATE_B, lambda: "%s\n%s" % (raw, h.log_tail()))
    t.check("... with its TC filter on each Workload pod's veth",
            not tc_missing(topo, topo.pods[:3]), lambda: tc_missing(topo, topo.pods[:3]))
    held_ok("after meshd was replaced")
    for s, hp in held.items():
        hp.proc.stdin.write("close\n")
        hp.proc.stdin.flush()
        rc, _ = hp.wait(10)
        t.eq("held connection %s closes cleanly" % s, rc, 0)
    for p in probers.values():
        p.proc.stdin.close()


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=4)
