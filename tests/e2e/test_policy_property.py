#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Policy property test (issue 3): for many random Istio policy sets, the
verdict the kernel gives a real connect() equals the verdict of the
user-space evaluator (build/tests/policy-eval) for the same config, for
every (source, destination workload, port).

1 node x 4 pods, and the node itself:

    A  n1p1 10.99.1.2  Workload foo/web  sa web  {app: web, tier: front}
    B  n1p2 10.99.1.3  Workload foo/api  sa api  {app: api, tier: back}
    C  n1p3 10.99.1.4  Workload bar/db   sa web  {app: db,  tier: back}
    L  n1p4 10.99.1.5  not a Workload (a pod of a non-mesh namespace)
    N  the node's netns, 10.99.0.1 (a process outside every pod)

    R  10.99.2.9  Workload bar/remote sa remote {app: db, tier: back} on
                  node2 (no meshd runs there: only its plaintext arrives)

A, B and C connect with their identity (judged at cgroup/connect4: EPERM
is DENY, ECONNREFUSED is ALLOW: nothing listens); L and N are plaintext
(judged at TC on the destination veth: a dropped SYN, i.e. a timeout, is
DENY, an RST is ALLOW). L also sends from extra addresses (its eth0 has
them as /32s, the node routes them back to its veth) so the source CIDR
classes are probed from several sides: 10.99.1.1, .6, .7, .130, R's
10.99.2.9, 10.98.0.1, 172.16.0.1, 192.168.1.1. In some sets one of A, B,
C is written without spec.netns: connect4 cannot recognise it, so its
connections are plaintext judged at TC (its connections to itself never
leave the pod and are not probed). Destinations: A, B, C; ports 8080,
8081, 9090 (the ones policies name) and 7000 (one no policy names).

Random sets mix ALLOW/DENY, selectors, namespace-wide and root-namespace
(istio-system) policies, principals (exact, prefix*, *suffix, *),
notPrincipals, namespaces/notNamespaces, serviceAccounts, ipBlocks/
notIpBlocks (some written non-canonically, like 10.99.1.3/30), ports/
notPorts, `when` on source.ip/namespace/principal and destination.ip/port,
now and then an L7 field, and PeerAuthentication (namespace or mesh mode,
workload mode with portLevelMtls). Each set is applied by SIGHUP (meshd's
config is a symlink whose target lives in a folder it does not watch).

A failure lists every mismatch (source, destination, port, both verdicts,
the evaluator's reason and the policy-eval input line) and keeps the
config of each failing set in /tmp/skm-policy-property-SEED-setN.yaml.

Environment: SKM_SEED (default: random, printed), SKM_POLICY_SETS (sets
always run, default 60), SKM_POLICY_BUDGET (seconds: more sets are made
until then, default 80), SKM_POLICY_MAX_SETS (default 400).
"""
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402
from polcheck import reload_and_wait, tc_missing, verdict  # noqa: E402

PORTS = (8080, 8081, 9090, 7000)      # probed
POLICY_PORTS = ("8080", "8081", "9090")
PLAIN_TIMEOUT = 0.25                    # a SYN that got no answer by then: dropped
CONFIRM_TIMEOUT = 1.5                   # re-probe of a timeout the evaluator calls ALLOW
MIN_SETS = int(os.environ.get("SKM_POLICY_SETS", "60"))
BUDGET = float(os.environ.get("SKM_POLICY_BUDGET", "80"))
MAX_SETS = max(MIN_SETS, int(os.environ.get("SKM_POLICY_MAX_SETS", "400")))
KEEP_DIR = "/tmp"
MAX_BAD_SETS = 20

# (pod index, name, namespace, serviceAccount, labels)
WLS = [
    (0, "web", "foo", "web", {"app": "web", "tier": "front"}),
    (1, "api", "foo", "api", {"app": "api", "tier": "back"}),
    (2, "db", "bar", "web", {"app": "db", "tier": "back"}),
]


# --- YAML out of Python values (block style, every scalar JSON-quoted) ----

def yaml_lines(v, ind=0):
    pad = " " * ind
    if isinstance(v, dict):
        if not v:
            return [pad + "{}"]
        out = []
        for k, x in v.items():
            key = json.dumps(str(k))
            if isinstance(x, (dict, list)) and x:
                out.append("%s%s:" % (pad, key))
                out += yaml_lines(x, ind + 2)
            else:
                out.append("%s%s: %s" % (pad, key, yaml_lines(x, 0)[0].strip()))
        return out
    if isinstance(v, list):
        if not v:
            return [pad + "[]"]
        out = []
        for x in v:
            sub = yaml_lines(x, ind + 2)
            out.append(pad + "- " + sub[0][ind + 2:])
            out += sub[1:]
        return out
    return [pad + json.dumps(v)]


def yaml_doc(obj):
    return "\n".join(yaml_lines(obj)) + "\n"


REMOTE = ("remote", "bar", "remote", {"app": "db", "tier": "back"}, "10.99.2.9")
EXTRA_SRC = ["10.99.1.1", "10.99.1.6", "10.99.1.7", "10.99.1.130", REMOTE[4],
             "10.98.0.1", "172.16.0.1", "192.168.1.1"]


def workload_docs(topo, no_netns=None):
    """Workload documents; the one of WLS index no_netns without netns."""
    docs = []
    for i, name, ns, sa, labels in WLS:
        p = topo.pods[i]
        spec = {"ip": p.ip, "node": "node1", "serviceAccount": sa}
        if i != no_netns:
            spec["netns"] = p.netns_path
        docs.append(yaml_doc({
            "apiVersion": "skmesh.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec}))
    name, ns, sa, labels, ip = REMOTE
    docs.append(yaml_doc({
        "apiVersion": "skmesh.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"ip": ip, "node": "node2", "serviceAccount": sa}}))
    return docs


# --- the generator ---------------------------------------------------------

PRINCIPALS = [
    "cluster.local/ns/foo/sa/web", "cluster.local/ns/foo/sa/api",
    "cluster.local/ns/bar/sa/web", "cluster.local/ns/baz/sa/web",
    "cluster.local/ns/foo/*", "cluster.local/ns/bar/sa/*", "cluster.local/*",
    "other.domain/*", "*/sa/web", "*/sa/api", "*/ns/foo/sa/api", "*web", "*",
    "cluster.local/ns/foo/sa/we",
]
NAMESPACES = ["foo", "bar", "baz", "istio-system", "f*", "*ar", "*", "fo"]
SAS = ["web", "api", "foo/web", "bar/web", "bar/api", "db"]
CIDRS = [
    "10.99.1.0/24", "10.99.1.2/32", "10.99.1.2", "10.99.1.3", "10.99.1.4",
    "10.99.1.5", "10.99.1.5/32", "10.99.0.0/16", "10.99.0.1/32", "10.99.0.0/24",
    "10.99.1.4/31", "10.99.1.0/30", "10.99.1.3/30", "10.99.1.6/30",
    "0.0.0.0/0", "10.0.0.0/8", "192.168.0.0/16", "10.99.1.128/25",
    "10.99.1.7/29", "10.99.1.130/26", "10.99.1.6/31", "10.99.2.0/24", "10.99.2.9",
    "10.98.0.0/16", "172.16.0.0/12", "192.168.1.1", "10.99.1.0/25",
]
DST_CIDRS = ["10.99.1.2", "10.99.1.3", "10.99.1.4", "10.99.1.2/31",
             "10.99.1.0/24", "10.99.2.0/24"]
L7_SOURCE = [("requestPrincipals", ["*"]), ("notRequestPrincipals", ["x/y"]),
             ("remoteIpBlocks", ["10.0.0.0/8"])]
L7_OPERATION = [("methods", ["GET"]), ("paths", ["/admin"]), ("hosts", ["a.b"]),
                ("notMethods", ["POST"])]
L7_WHEN = ["request.headers[x-user]", "connection.sni", "request.auth.claims[iss]",
           "source.serviceAccount"]
MODES = ["STRICT", "PERMISSIVE", "DISABLE", "UNSET"]


def pick(r, pool, lo=1, hi=2):
    return r.sample(pool, r.randint(lo, min(hi, len(pool))))


def gen_source(r):
    fields = ["principals", "notPrincipals", "namespaces", "notNamespaces",
              "ipBlocks", "notIpBlocks", "serviceAccounts", "notServiceAccounts"]
    weights = [4, 2, 3, 2, 4, 2, 1, 1]
    src = {}
    for _ in range(r.choice((1, 1, 1, 2, 2, 3))):
        f = r.choices(fields, weights)[0]
        if f in ("serviceAccounts", "notServiceAccounts"):
            if any(k in src for k in ("principals", "notPrincipals", "namespaces",
                                      "notNamespaces")):
                continue
        elif f in ("principals", "notPrincipals", "namespaces", "notNamespaces"):
            if "serviceAccounts" in src or "notServiceAccounts" in src:
                continue
        pool = (PRINCIPALS if "rincipals" in f else NAMESPACES if "amespaces" in f
                else SAS if "erviceAccounts" in f else CIDRS)
        src[f] = pick(r, pool)
    if not src:
        src["ipBlocks"] = pick(r, CIDRS)
    return src


def gen_operation(r):
    op = {}
    k = r.random()
    if k < 0.55:
        op["ports"] = pick(r, POLICY_PORTS)
    elif k < 0.85:
        op["notPorts"] = pick(r, POLICY_PORTS)
    else:
        op["ports"] = pick(r, POLICY_PORTS)
        op["notPorts"] = pick(r, POLICY_PORTS)
    if r.random() < 0.04:
        op.setdefault("ports", []).append("1")    # shifts the "other port" class
    return op


def gen_when(r):
    key = r.choice(["source.ip", "source.namespace", "source.principal",
                    "destination.port", "destination.ip"])
    pool = {"source.ip": CIDRS, "source.namespace": NAMESPACES,
            "source.principal": PRINCIPALS, "destination.port": list(POLICY_PORTS),
            "destination.ip": DST_CIDRS}[key]
    c = {"key": key}
    k = r.random()
    if k < 0.6:
        c["values"] = pick(r, pool)
    elif k < 0.9:
        c["notValues"] = pick(r, pool)
    else:
        c["values"] = pick(r, pool)
        c["notValues"] = pick(r, pool)
    return c


def gen_rule(r, l7_ok):
    if r.random() < 0.08:
        return {}
    rule = {}
    while not rule:
        if r.random() < 0.6:
            rule["from"] = [{"source": gen_source(r)} for _ in range(r.choice((1, 1, 2)))]
        if r.random() < 0.5:
            rule["to"] = [{"operation": gen_operation(r)} for _ in range(r.choice((1, 1, 2)))]
        if r.random() < 0.3:
            rule["when"] = [gen_when(r) for _ in range(r.choice((1, 1, 2)))]
    if l7_ok and r.random() < 0.12:
        where = r.choice(("source", "operation", "when"))
        if where == "source":
            f, v = r.choice(L7_SOURCE)
            fr = rule.setdefault("from", [])
            if fr and r.random() < 0.6:
                r.choice(fr)["source"][f] = v
            else:
                fr.append({"source": {f: v}})
        elif where == "operation":
            f, v = r.choice(L7_OPERATION)
            to = rule.setdefault("to", [])
            if to and r.random() < 0.6:
                r.choice(to)["operation"][f] = v
            else:
                to.append({"operation": {f: v}})
        else:
            rule.setdefault("when", []).append({"key": r.choice(L7_WHEN), "values": ["x"]})
    return rule


def gen_selector(r):
    k = r.random()
    if k < 0.4:
        return None
    if k < 0.9:
        labels = r.choice(WLS)[4]
        keys = r.sample(sorted(labels), r.choice((1, 1, 2)))
        return {"matchLabels": {x: labels[x] for x in keys}}
    if k < 0.95:
        return {"matchLabels": {"app": "nope"}}
    return {"matchLabels": {}}


def gen_authz(r, name):
    ns = r.choices(["foo", "bar", "istio-system", "baz"], [5, 3, 2, 1])[0]
    spec = {}
    sel = gen_selector(r)
    if sel is not None:
        spec["selector"] = sel
    action = "ALLOW" if r.random() < 0.6 else "DENY"
    if action == "DENY" or r.random() < 0.5:
        spec["action"] = action
    if action == "ALLOW" and r.random() < 0.08:
        nrules = 0                      # allow-nothing
    else:
        nrules = r.choice((1, 1, 1, 2, 2, 3))
    if nrules:
        spec["rules"] = [gen_rule(r, True) for _ in range(nrules)]
    return {"apiVersion": r.choice(["security.istio.io/v1", "security.istio.io/v1beta1"]),
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def gen_peerauthn(r, name):
    spec = {}
    if r.random() < 0.5:
        ns = r.choices(["foo", "bar", "istio-system"], [4, 3, 3])[0]
    else:
        w = r.choice(WLS)
        ns = w[2] if r.random() < 0.9 else "istio-system"   # root + selector: ignored
        keys = r.sample(sorted(w[4]), r.choice((1, 1, 2)))
        spec["selector"] = {"matchLabels": {x: w[4][x] for x in keys}}
        if r.random() < 0.6:
            spec["portLevelMtls"] = {p: {"mode": r.choice(MODES)}
                                     for p in pick(r, POLICY_PORTS)}
    if r.random() < 0.9:
        spec["mtls"] = {"mode": r.choices(MODES, [5, 3, 1, 1])[0]}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def gen_set(r):
    docs = []
    for i in range(r.choice((1, 2, 2, 3, 3, 4, 5))):
        docs.append(gen_authz(r, "ap%d" % i))
    if r.random() < 0.45:
        for i in range(r.choice((1, 1, 2))):
            docs.append(gen_peerauthn(r, "pa%d" % i))
    r.shuffle(docs)
    return docs


# --- meshd log ------------------------------------------------------------

# --- probing ---------------------------------------------------------------

def evaluate(cfg_path, probes):
    """policy-eval on probes [(src_ns, src_sa, src_ip, dst_ip, port, mode)];
    [(verdict, reason)]."""
    inp = "".join("%s %s %s %s %d %s\n" % p for p in probes)
    r = subprocess.run([os.path.join(topolib.build_dir(), "tests", "policy-eval"),
                        cfg_path], input=inp, capture_output=True, text=True, timeout=30)
    lines = r.stdout.splitlines()
    if r.returncode != 0 or len(lines) != len(probes):
        raise topolib.TopoError("policy-eval failed (exit %d):\n%s" % (r.returncode, r.stderr))
    return [tuple(l.split("\t", 1)) for l in lines]


def reason_class(why):
    for key, name in (("no ALLOW policy applies", "no ALLOW policy"),
                      ("allowed by ALLOW", "ALLOW rule"),
                      ("denied by DENY", "DENY rule"),
                      ("none matches", "no ALLOW rule matched"),
                      ("portLevelMtls", "STRICT port"),
                      ("STRICT", "STRICT")):
        if key in why:
            return name
    return why


class Source:
    """Where a probe comes from: a prober process, and maybe a local
    address it binds to."""

    def __init__(self, label, tool, ip, bind=None, pod=None, wl=None):
        self.label, self.tool, self.ip, self.bind = label, tool, ip, bind
        self.pod = pod          # the Pod it runs in (None: the node)
        self.wl = wl            # WLS entry when the pod is a Workload


def setup_extra_addresses(topo, pod):
    """Give pod the EXTRA_SRC addresses (as /32 on eth0) and route them
    back to its veth in the node."""
    for ip in EXTRA_SRC:
        topolib.sh(["ip", "-n", pod.ns, "addr", "add", ip + "/32", "dev", "eth0"])
        topolib.sh(["ip", "-n", topo.node_ns(pod.node), "route", "add", ip + "/32",
                    "dev", pod.host_veth])


def body(t, topo):
    seed = int(os.environ["SKM_SEED"]) if os.environ.get("SKM_SEED") else \
        random.SystemRandom().randrange(1 << 32)
    t.diag("seed %d (rerun with SKM_SEED=%d)" % (seed, seed))
    r = random.Random(seed)
    A, B, C, L = topo.pods
    dsts = [A, B, C]
    dst_name = {p.ip: "%s/%s" % (w[2], w[1]) for p, w in zip(dsts, WLS)}
    setup_extra_addresses(topo, L)

    real, cfg = topo.config_path(sub="real"), topo.config_path()
    with open(real, "w") as f:
        f.write("---\n".join(workload_docs(topo)))
    os.symlink(real, cfg)       # edits of real are seen by SIGHUP only
    h = topo.start_meshd(1, cfg)
    t.check("meshd put its TC filter on the veth of each of the 3 Workload pods",
            not tc_missing(topo, dsts),
            lambda: "missing on: %s\n%s" % (tc_missing(topo, dsts), h.log_tail()))

    sources = []
    for w in WLS:
        p = topo.pods[w[0]]
        sources.append(Source("%s/%s" % (w[2], w[1]), topo.podtool(p, "prober", stdin=True),
                              p.ip, pod=p, wl=w))
    lt = topo.podtool(L, "prober", stdin=True)
    sources.append(Source("non-mesh pod", lt, L.ip, pod=L))
    for ip in EXTRA_SRC:
        sources.append(Source("non-mesh pod@%s" % ip, lt, ip, bind=ip, pod=L))
    sources.append(Source("node netns", topo.podtool(1, "prober", stdin=True),
                          topo.node_ip(1)))
    tools = []
    for src in sources:
        if src.tool not in tools:
            tools.append(src.tool)

    def token(src, d, port):
        return "%s:%d%s" % (d.ip, port, "@" + src.bind if src.bind else "")

    c0 = tap.counters(topo)
    compared = 0
    mismatches = []           # (set index, cfg copy, text, lines)
    stats = collections.Counter()
    reasons = collections.Counter()
    pattern = collections.Counter()
    bad_sets = []
    confirmed_slow = 0
    eperms = timeouts = 0
    no_netns_sets = 0
    start = time.monotonic()
    nsets = 0
    while nsets < MAX_SETS and (nsets < MIN_SETS or time.monotonic() - start < BUDGET):
        docs = gen_set(r)
        no_netns = r.randrange(len(WLS)) if r.random() < 0.15 else None
        no_netns_sets += no_netns is not None
        text = "---\n".join(workload_docs(topo, no_netns) + [yaml_doc(d) for d in docs])
        tmp = real + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, real)
        st = reload_and_wait(h)[0]
        nsets += 1
        if st != "applied":
            keep = os.path.join(KEEP_DIR, "skm-policy-property-%d-set%d.yaml" % (seed, nsets))
            shutil.copy(real, keep)
            bad_sets.append("set %d: reload %s (config kept in %s):\n%s"
                            % (nsets, st, keep, h.log_tail(15)))
            continue

        # (src, plain, dst, port) of this set, grouped by prober process
        batch = {tool: [] for tool in tools}
        for src in sources:
            plain = src.wl is None or src.wl[0] == no_netns
            for d in dsts:
                if plain and src.pod is d:
                    continue    # never leaves the pod: no hook sees it
                for port in PORTS:
                    batch[src.tool].append((src, plain, d, port))
        for tool in tools:
            tool.proc.stdin.write("%s %s\n" % (PLAIN_TIMEOUT, " ".join(
                token(src, d, port) for src, _pl, d, port in batch[tool])))
            tool.proc.stdin.flush()
        probes, kernel = [], []
        for tool in tools:
            for (src, plain, d, port), x in zip(batch[tool], tool.next(10)["results"]):
                if plain:
                    probes.append(("-", "-", src.ip, d.ip, port, "plain"))
                else:
                    probes.append((src.wl[2], src.wl[3], src.ip, d.ip, port, "mtls"))
                kernel.append([verdict(x, plain), x, src, plain, d, port])
                eperms += x == "EPERM"
        want = evaluate(real, probes)
        # a timeout where the evaluator says ALLOW: a late RST, or really
        # dropped? ask again (all at once), longer
        again = {tool: [] for tool in tools}
        for k, (v, _why) in zip(kernel, want):
            if k[1] == "TIMEOUT" and v == "ALLOW":
                again[k[2].tool].append(k)
        for tool in tools:
            if again[tool]:
                tool.proc.stdin.write("%s %s\n" % (CONFIRM_TIMEOUT, " ".join(
                    token(k[2], k[4], k[5]) for k in again[tool])))
                tool.proc.stdin.flush()
        for tool in tools:
            if again[tool]:
                for k, raw2 in zip(again[tool], tool.next(10)["results"]):
                    if raw2 != "TIMEOUT":
                        confirmed_slow += 1
                        k[0] = verdict(raw2, k[3])
                        k[1] = "%s (first TIMEOUT after %ss)" % (raw2, PLAIN_TIMEOUT)
        set_bad = []
        for probe, k, (v, why) in zip(probes, kernel, want):
            compared += 1
            kv, raw, src, plain, d, port = k
            timeouts += raw == "TIMEOUT"
            stats[(plain, v)] += 1
            reasons[reason_class(why)] += 1
            if kv != v:
                pattern[("to " + dst_name[d.ip], "%s from %s" % (
                    "mTLS" if not plain else "plaintext",
                    src.label.split("@")[0] if src.wl is None else src.label),
                    "kernel %s, evaluator %s" % (kv, v))] += 1
                set_bad.append("  %-26s -> %-7s %s:%d  kernel %s (%s)  evaluator %s (%s)"
                               % (src.label + (" (no netns: plaintext)" if plain and src.wl
                                               else ""), dst_name[d.ip], d.ip, port,
                                  kv, raw, v, why))
                set_bad.append("     policy-eval probe: %s %s %s %s %d %s" % probe)
        if set_bad:
            keep = os.path.join(KEEP_DIR, "skm-policy-property-%d-set%d.yaml" % (seed, nsets))
            shutil.copy(real, keep)
            mismatches.append((nsets, keep, text, set_bad))
            if len(mismatches) >= MAX_BAD_SETS:
                t.diag("stopping after %d sets with mismatches" % MAX_BAD_SETS)
                break
    elapsed = time.monotonic() - start
    c1 = tap.counters(topo)

    t.diag("%d policy sets (%d with a Workload lacking netns), %d verdicts compared "
           "in %.1f s (%.0f per second)" % (nsets, no_netns_sets, compared, elapsed,
                                            compared / max(elapsed, 1e-9)))
    t.diag("evaluator verdicts: mesh ALLOW %d, mesh DENY %d, plaintext ALLOW %d, "
           "plaintext DENY %d" % (stats[(False, "ALLOW")], stats[(False, "DENY")],
                                  stats[(True, "ALLOW")], stats[(True, "DENY")]))
    t.diag("deciding reasons: " + ", ".join("%s %d" % kv for kv in reasons.most_common()))
    if confirmed_slow:
        t.diag("%d probes answered only after %.2f s (confirmed ALLOW on a %.1f s "
               "re-probe)" % (confirmed_slow, PLAIN_TIMEOUT, CONFIRM_TIMEOUT))

    t.check("every random policy set was applied by meshd (%d sets)" % nsets,
            not bad_sets, "\n".join(bad_sets[:5]))
    t.check("at least %d policy sets compared" % MIN_SETS, nsets >= MIN_SETS, nsets)
    t.check("the sets exercise both verdicts for both kinds of source",
            all(stats[(pl, v)] > 0 for pl in (False, True) for v in ("ALLOW", "DENY")),
            dict(stats))
    nbad = sum(len(m[3]) // 2 for m in mismatches)
    diag = ["mismatches by (destination, source, verdicts):"]
    diag += ["  %5d  %s, %s: %s" % ((n,) + k) for k, n in pattern.most_common(20)]
    for i, keep, text, lines in mismatches[:10]:
        diag.append("set %d (config kept in %s):" % (i, keep))
        diag += lines[:40]
    if mismatches:
        i, keep, text, _ = mismatches[0]
        diag.append("config of set %d:\n%s" % (i, text))
    t.check("kernel verdict == policy-eval verdict for all %d probes (seed %d)"
            % (compared, seed), not mismatches,
            lambda: "%d mismatches in %d sets\n%s" % (nbad, len(mismatches), "\n".join(diag)))
    t.check("after %d reloads the TC filter is still on each Workload pod's veth" % nsets,
            not tc_missing(topo, dsts), lambda: "missing on: %s" % tc_missing(topo, dsts))
    t.eq("policy_deny counted every EPERM", c1["policy_deny"] - c0["policy_deny"], eperms)
    t.check("plain_deny counted every dropped SYN (%d timeouts, counter +%d)"
            % (timeouts, c1["plain_deny"] - c0["plain_deny"]),
            c1["plain_deny"] - c0["plain_deny"] >= timeouts,
            "%s -> %s" % (c0, c1))
    for tool in tools:
        tool.proc.stdin.close()
    for tool in tools:
        tool.wait(10)
    if not t.failed:
        # a gentle stop leaves less for the teardown to do on a loaded
        # machine (on a failure, the teardown prints meshd's log instead)
        t.eq("meshd stops on SIGTERM", topo.stop_meshd(h, timeout=15), 0, h.log_tail)


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=4)
