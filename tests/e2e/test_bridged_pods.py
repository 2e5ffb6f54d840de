#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Pods wired by Debian's bridge CNI plugin (issue 11): the node's route to
such a pod ends at the bridge, not at the pod's veth, so meshd finds the
veth from inside the pod's namespace (the interface holding the pod's IP,
its peer's ifindex) and must attach TC there, or a STRICT pod would take
plaintext from anyone on the bridge.

1 node; three pods on the bridge in the node's namespace, each in its own
network namespace and a cgroup below the node's:

    B  Workload default/brb (spec.netns), PeerAuthentication STRICT
    C  Workload default/brc (spec.netns), no policy
    L  not a Workload: plaintext

Checked: meshd attaches TC to B's and C's veths (not to L's, nor the
bridge), says no pod lacks its veth, and TC enforces: L -> B:8080
(plaintext to STRICT) is dropped, L -> C:8080 and C -> B:8080 connect.
"""
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
import tap  # noqa: E402
import topo as topolib  # noqa: E402
import test_cni_plugin as cp  # noqa: E402  (the bridge plugin as a runtime runs it)

RAW = os.path.join(HERE, "..", "tools", "rawtcp.py")

EXTRA = """apiVersion: skmesh.io/v1alpha1
kind: Workload
metadata: {name: brb, namespace: default, labels: {app: brb}}
spec: {ip: %(b_ip)s, node: node1, serviceAccount: brb, netns: %(b_netns)s}
---
apiVersion: skmesh.io/v1alpha1
kind: Workload
metadata: {name: brc, namespace: default, labels: {app: brc}}
spec: {ip: %(c_ip)s, node: node1, serviceAccount: brc, netns: %(c_netns)s}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict-brb, namespace: default}
spec:
  selector: {matchLabels: {app: brb}}
  mtls: {mode: STRICT}
"""


def body(t, topo):
    tmp = tempfile.mkdtemp(prefix="%s-bridged-" % topo.prefix)
    try:
        run(t, topo, cp.Cni(topo, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(t, topo, cni):
    pods = {}
    for k, name in ((1, "b"), (2, "c"), (3, "l")):
        _, netns = cp.new_pod_ns(topo, 30 + k)
        cid = "br%d%s" % (k, topo.rid)
        rc, out, err, _ = cni.bridge("ADD", cid, netns)
        res = cp.json_or_none(out)
        t.require("bridge ADD wires pod %s" % name.upper(), rc == 0 and res, out + err)
        veths = [i["name"] for i in res["interfaces"]
                 if not i.get("sandbox") and i["name"] != "cnibr0"]
        cg = os.path.join(topo.node_cgroup(1), "br%d" % k)
        os.makedirs(cg, exist_ok=True)
        pods[name] = {"netns": netns, "ip": res["ips"][0]["address"].split("/")[0],
                      "veth": veths[0], "where": (cg, netns)}
    B, C, L = pods["b"], pods["c"], pods["l"]
    r = topolib.sh(["ip", "-n", topo.node_ns(1), "-j", "route", "get", B["ip"]])
    dev = json.loads(r.stdout)[0].get("dev")
    t.eq("the node's route to B ends at the bridge, not at B's veth", dev, "cnibr0")

    cfg = topo.config_path()
    topo.write_config(cfg, extra=EXTRA % {"b_ip": B["ip"], "b_netns": B["netns"],
                                          "c_ip": C["ip"], "c_netns": C["netns"]})
    h = topo.start_meshd(1, cfg)
    with open(h.log) as f:
        log = f.read()
    applied = [l for l in log.splitlines() if "applied config" in l]
    t.check("meshd attaches TC on 3 pod interfaces (the topology's routed pod, B, C) "
            "and misses none", applied and "TC on 3 pod interfaces" in applied[-1]
            and "no veth yet" not in applied[-1], applied or h.log_tail(20))

    def tc_on(devname):
        out = ""
        for d in ("ingress", "egress"):
            out += topolib.sh(["ip", "netns", "exec", topo.node_ns(1), "tc", "filter", "show",
                               "dev", devname, d], check=False).stdout
        return "bpf" in out

    t.check("TC is on B's veth %s" % B["veth"], tc_on(B["veth"]))
    t.check("TC is on C's veth %s" % C["veth"], tc_on(C["veth"]))
    t.check("no TC on L's veth %s (not a Workload) nor on the bridge" % L["veth"],
            not tc_on(L["veth"]) and not tc_on("cnibr0"))

    for p in (B, C):
        topo.podtool(p["where"], "echo", "--port", 8080, "--timeout", 60).expect("listening")

    def connect(where, to, timeout=1.0):
        argv = [sys.executable, RAW, "connect", "--to", to, "--timeout", str(timeout)]
        r = topo.run(topo.where_argv(where, argv), timeout=20, check=False)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        return (json.loads(lines[-1]) if lines else {"error": r.stderr}).get("result")

    t.eq("control: plaintext L -> C:8080 (no policy) connects",
         connect(L["where"], "%s:8080" % C["ip"]), "OK")
    c0 = tap.counters(topo, 1)
    t.eq("plaintext L -> B:8080 (STRICT) is dropped by TC on B's veth",
         connect(L["where"], "%s:8080" % B["ip"]), "TIMEOUT")
    c1 = tap.counters(topo, 1)
    t.check("... counted as plaintext denied (plain_deny +%d)"
            % (c1.get("plain_deny", 0) - c0.get("plain_deny", 0)),
            c1.get("plain_deny", 0) > c0.get("plain_deny", 0))
    t.eq("mesh pod C -> B:8080 (STRICT, C is in the mesh) connects",
         connect(C["where"], "%s:8080" % B["ip"]), "OK")


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=1)
