#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
PeerAuthentication in the kernel (issue 3): STRICT blocks plaintext from a
pod of a non-mesh namespace and from the node's own netns (the SYN is
dropped at TC: connect() gets no answer, plain_deny grows), while mesh pods
of the same node, whose identity connect4 knows, still connect and move
data; PERMISSIVE lets the plaintext through; a workload-level PERMISSIVE
under a namespace STRICT exempts that workload; portLevelMtls (STRICT
workload, one port PERMISSIVE) lets plaintext in on that port only;
mesh-wide STRICT from the root namespace; STRICT wins over an ALLOW rule
that matches. Every verdict is also given to build/tests/policy-eval.

1 node x 4 pods: P1 n1p1 foo/sleep, P2 n1p2 foo/httpbin (echo servers on
8080 and 9090), P3 n1p3 bar/sleep, legacy n1p4 (not a Workload); node =
a process in the node's netns (10.99.0.1). ALLOW for plaintext means the
connection was accepted by the server (OK) or refused by the pod's kernel
(RST: nothing listens on that port), both after the SYN crossed TC.
"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402
from polcheck import corpus, reload_and_wait, tc_missing, verdict  # noqa: E402

PLAIN_TIMEOUT = 0.5
CONFIRM_TIMEOUT = 2.0


ROLES = {"P1": ("sleep", "foo", "sleep", {"app": "sleep"}),
         "P2": ("httpbin", "foo", "httpbin", {"app": "httpbin"}),
         "P3": ("sleep", "bar", "sleep", {"app": "sleep"})}

NS_PERMISSIVE = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: PERMISSIVE
"""
NS_STRICT_WL_PERMISSIVE = corpus("30-pa-namespace-strict.yaml") + """---
# workload level (httpbin) overrides the namespace (PeerAuthentication
# reference, "policy precedence"; the same shape as case 33 the other way)
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: httpbin
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: PERMISSIVE
"""
PORT_LEVEL = """# istio/istio architecture/ambient/peer-authentication.md
# (strict-and-permissive-mtls, case 35): selector app: a -> app: httpbin
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict-and-permissive-mtls
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
  portLevelMtls:
    9090:
      mode: PERMISSIVE
"""
STRICT_AND_ALLOW = """# authn-policy (foo STRICT) + authz-tcp (tcp-policy) as in case 38, with
# the ALLOW selecting this test's httpbin
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: "default"
  namespace: "foo"
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: tcp-policy
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - to:
    - operation:
        ports: ["8080", "9090"]
"""

# (name, policy, probes [(src, dst, port, verdict, why)])
STEPS = [
    ("no PeerAuthentication (PERMISSIVE default)", "", [
        ("legacy", "P2", 8080, "ALLOW", "nothing applies"),
        ("node", "P2", 8080, "ALLOW", "nothing applies"),
    ]),
    ("namespace foo STRICT (authn-policy task)", corpus("30-pa-namespace-strict.yaml"), [
        ("legacy", "P2", 8080, "DENY", "plaintext from a non-mesh namespace"),
        ("legacy", "P2", 9090, "DENY", "every port"),
        ("legacy", "P1", 8080, "DENY", "every workload of foo"),
        ("node", "P2", 8080, "DENY", "plaintext from the node"),
        ("node", "P1", 9090, "DENY", "plaintext from the node"),
        ("legacy", "P3", 8080, "ALLOW", "bar has no PeerAuthentication"),
        ("node", "P3", 8080, "ALLOW", "bar has no PeerAuthentication"),
        ("P1", "P2", 8080, "ALLOW", "mesh pod: identity known"),
        ("P3", "P2", 8080, "ALLOW", "mesh pod of another namespace"),
        ("P3", "P2", 9090, "ALLOW", "mesh pod, any port"),
        ("P2", "P1", 8080, "ALLOW", "mesh pod"),
    ]),
    ("namespace foo PERMISSIVE", NS_PERMISSIVE, [
        ("legacy", "P2", 8080, "ALLOW", "PERMISSIVE accepts plaintext"),
        ("legacy", "P1", 8080, "ALLOW", "PERMISSIVE accepts plaintext"),
        ("node", "P2", 9090, "ALLOW", "PERMISSIVE accepts plaintext"),
        ("P3", "P2", 8080, "ALLOW", "and mTLS"),
    ]),
    ("namespace STRICT, workload httpbin PERMISSIVE", NS_STRICT_WL_PERMISSIVE, [
        ("legacy", "P2", 8080, "ALLOW", "the workload's PERMISSIVE wins"),
        ("node", "P2", 9090, "ALLOW", "the workload's PERMISSIVE wins"),
        ("legacy", "P1", 8080, "DENY", "foo/sleep keeps the namespace STRICT"),
        ("node", "P1", 8080, "DENY", "foo/sleep keeps the namespace STRICT"),
        ("P3", "P1", 8080, "ALLOW", "mesh pod"),
    ]),
    ("workload STRICT with portLevelMtls 9090 PERMISSIVE", PORT_LEVEL, [
        ("legacy", "P2", 9090, "ALLOW", "port 9090 is exempt"),
        ("node", "P2", 9090, "ALLOW", "port 9090 is exempt"),
        ("legacy", "P2", 8080, "DENY", "every other port is STRICT"),
        ("legacy", "P2", 8081, "DENY", "every other port is STRICT"),
        ("node", "P2", 8080, "DENY", "every other port is STRICT"),
        ("legacy", "P1", 8080, "ALLOW", "foo/sleep is not selected"),
        ("P3", "P2", 8080, "ALLOW", "mTLS on a STRICT port"),
        ("P1", "P2", 9090, "ALLOW", "mTLS on the PERMISSIVE port"),
    ]),
    ("mesh-wide STRICT in istio-system (authn-policy task)", corpus("29-pa-mesh-strict.yaml"), [
        ("legacy", "P3", 8080, "DENY", "every namespace"),
        ("legacy", "P2", 8080, "DENY", "every namespace"),
        ("node", "P3", 8080, "DENY", "every namespace"),
        ("P1", "P3", 8080, "ALLOW", "mesh pod"),
        ("P3", "P2", 8080, "ALLOW", "mesh pod"),
    ]),
    ("mesh STRICT, namespace foo PERMISSIVE (precedence, case 39)",
     corpus("39-pa-precedence-mesh-namespace-workload.yaml"), [
        ("legacy", "P2", 8080, "ALLOW", "foo PERMISSIVE overrides the mesh"),
        ("legacy", "P3", 8080, "DENY", "bar/sleep: mesh STRICT (bar's PERMISSIVE selects httpbin)"),
        ("P1", "P3", 8080, "ALLOW", "mesh pod"),
    ]),
    ("STRICT wins over a matching ALLOW (case 38)", STRICT_AND_ALLOW, [
        ("legacy", "P2", 8080, "DENY", "STRICT first, though the ALLOW matches port 8080"),
        ("node", "P2", 9090, "DENY", "STRICT first"),
        ("P1", "P2", 8080, "ALLOW", "mTLS, port allowed"),
        ("P1", "P2", 8081, "DENY", "mTLS, port not allowed"),
    ]),
]


def workload_docs(topo, roles):
    docs = []
    for key, (name, ns, sa, labels) in sorted(roles.items()):
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
    src_ip = {k: p.ip for k, p in P.items()}
    src_ip["node"] = topo.node_ip(1)
    plain = {"legacy", "node"}
    for pod, port in ((P["P2"], 8080), (P["P2"], 9090), (P["P1"], 8080), (P["P3"], 8080)):
        topo.podtool(pod, "echo", "--port", port, "--timeout", 120).expect("listening")
    probers = {k: topo.podtool(P[k], "prober", stdin=True) for k in P}
    probers["node"] = topo.podtool(1, "prober", stdin=True)

    real, cfg = topo.config_path(sub="real"), topo.config_path()
    with open(real, "w") as f:
        f.write("---\n".join(workload_docs(topo, ROLES)))
    os.symlink(real, cfg)     # edits of real are seen by SIGHUP only
    h = topo.start_meshd(1, cfg)
    t.check("meshd put its TC filter on the veth of each of the 3 Workload pods",
            not tc_missing(topo, topo.pods[:3]),
            lambda: "missing on: %s\n%s" % (tc_missing(topo, topo.pods[:3]), h.log_tail()))
    evalbin = os.path.join(topolib.build_dir(), "tests", "policy-eval")
    total = 0

    for name, policy, probes in STEPS:
        text = "---\n".join(workload_docs(topo, ROLES) + ([policy] if policy else []))
        with open(real + ".tmp", "w") as f:
            f.write(text)
        os.replace(real + ".tmp", real)
        st, said = reload_and_wait(h)
        if not t.check("%s: meshd applies it" % name, st == "applied",
                       "reload: %s\n%s" % (st, said)):
            continue
        c0 = tap.counters(topo)
        by_src = {}
        for i, (s, d, port, _w, _y) in enumerate(probes):
            by_src.setdefault(s, []).append((i, "%s:%d" % (P[d].ip, port)))
        for s, lst in by_src.items():
            probers[s].proc.stdin.write("%s %s\n" % (
                PLAIN_TIMEOUT if s in plain else 1.0, " ".join(a for _i, a in lst)))
            probers[s].proc.stdin.flush()
        raw = [None] * len(probes)
        for s, lst in by_src.items():
            for (i, _a), x in zip(lst, probers[s].next(10)["results"]):
                raw[i] = x
        for i, (s, d, port, want, _y) in enumerate(probes):
            if s in plain and raw[i] == "TIMEOUT" and want == "ALLOW":
                raw[i] = probers[s].cmd("%s %s:%d" % (CONFIRM_TIMEOUT, P[d].ip, port))["results"][0]
        c1 = tap.counters(topo)

        inp = ""
        for s, d, port, _w, _y in probes:
            if s in plain:
                inp += "- - %s %s %d plain\n" % (src_ip[s], P[d].ip, port)
            else:
                _n, ns, sa, _l = ROLES[s]
                inp += "%s %s %s %s %d mtls\n" % (ns, sa, src_ip[s], P[d].ip, port)
        r = subprocess.run([evalbin, real], input=inp, capture_output=True, text=True,
                           timeout=30)
        ev = [l.split("\t", 1) for l in r.stdout.splitlines()]
        if r.returncode != 0 or len(ev) != len(probes):
            t.diag("policy-eval failed (exit %d): %s" % (r.returncode, r.stderr))

        disagree = []
        plain_denied = 0
        for i, (s, d, port, want, why) in enumerate(probes):
            total += 1
            who = s if s in plain else "%s (%s/%s)" % (s, ROLES[s][1], ROLES[s][2])
            dst = "%s/%s" % (ROLES[d][1], ROLES[d][0])
            plain_denied += s in plain and raw[i] == "TIMEOUT"
            t.eq("... %s -> %s:%d %s (%s)" % (who, dst, port, want, why),
                 verdict(raw[i], s in plain), want, "connect(): %s" % raw[i])
            if i < len(ev) and ev[i][0] != want:
                disagree.append("%s -> %s:%d: expected %s, policy-eval %s"
                                % (who, dst, port, want, "\t".join(ev[i])))
        t.check("... policy-eval gives the same verdicts", len(ev) == len(probes)
                and not disagree, "\n".join(disagree))
        if plain_denied:
            t.check("... plain_deny counted the %d dropped SYNs (+%d)"
                    % (plain_denied, c1["plain_deny"] - c0["plain_deny"]),
                    c1["plain_deny"] - c0["plain_deny"] >= plain_denied, "%s\n%s" % (c0, c1))

        if policy is STEPS[1][1]:
            # under namespace STRICT: mesh pods really talk, plaintext never
            # gets a byte through
            for s in ("P1", "P3"):
                sess = topo.podtool(P[s], "session", "--to", "%s:8080" % P["P2"].ip,
                                    "--io-timeout", 10, stdin=True)
                ev0 = sess.expect("event")
                x = sess.cmd("xfer 65536") if ev0.get("event") == "connected" else ev0
                t.check("... %s (%s) -> foo/httpbin:8080 under STRICT: 64 KiB echoed"
                        % (s, ROLES[s][1]), x.get("ok"), "%s\n%s" % (ev0, x))
                sess.proc.stdin.write("close\n")
                sess.proc.stdin.flush()
                sess.wait(10)
            r = topo.pod_run(P["legacy"], topo.podtool_argv(
                "connect-many", "--to", "%s:8080" % P["P2"].ip, "--count", 2,
                "--io-timeout", 1.5), timeout=30, check=False)
            res = tap.json_line(r.stdout)
            errs = res["errors"]
            t.check("... the non-mesh pod's connect() to foo/httpbin:8080 times out "
                    "after 1.5 s (its SYN and the retransmit dropped), twice",
                    set(errs) <= {"timeout", "TimeoutError"} and sum(errs.values()) == 2, res)
        if policy is PORT_LEVEL:
            t.check("... plain_allow counted the plaintext let in on 9090 (+%d)"
                    % (c1["plain_allow"] - c0["plain_allow"]),
                    c1["plain_allow"] - c0["plain_allow"] >= 2, "%s\n%s" % (c0, c1))

    t.diag("%d verdicts checked with real connects" % total)
    for p in probers.values():
        p.proc.stdin.close()


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=4)
