#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Bad configuration (issue 2, bad input): `meshd --check-config` rejects a
malformed YAML file, an unknown kind, a Service VIP without ports and a port
out of range with a non-zero exit and a message "FILE:LINE:COL: ..." naming
the field; a running meshd given a broken file on SIGHUP keeps its services
(and says why in its log), and takes the next valid file.
"""
import os
import re
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

WL = """apiVersion: skmesh.io/v1alpha1
kind: Workload
metadata: {name: a, namespace: default, labels: {app: a}}
spec: {ip: 10.99.1.2, node: node1, serviceAccount: a}
"""
SVC_HEAD = """apiVersion: skmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: default}
spec:
"""

# name -> (text, line of the fault (1-based) or None for "any line",
#          words of which one must be in the message)
CASES = {
    "malformed YAML (unclosed flow mapping)": (
        WL + "---\n" + SVC_HEAD + "  vip: 10.96.0.10\n"
        "  ports: [{port: 80, targetPort: 8080\n"
        "  endpoints: [{ip: 10.99.1.2, weight: 1}]\n", None,
        ["yaml", "YAML", "parse", "flow", "expected"]),
    "unknown kind": (
        WL + "---\napiVersion: skmesh.io/v1alpha1\nkind: Gateway\n"
        "metadata: {name: gw, namespace: default}\nspec: {}\n", 7, ["kind", "Gateway"]),
    "Service VIP without ports": (
        WL + "---\n" + SVC_HEAD + "  vip: 10.96.0.10\n"
        "  endpoints: [{ip: 10.99.1.2, weight: 1}]\n", (6, 11), ["ports"]),
    "port out of range": (
        WL + "---\n" + SVC_HEAD + "  vip: 10.96.0.10\n"
        "  ports: [{port: 70000, targetPort: 8080}]\n"
        "  endpoints: [{ip: 10.99.1.2, weight: 1}]\n", 11, ["port", "70000"]),
}
# one VIP:port more than the skm_services map holds (SKM_MAX_SERVICES =
# 65536): a whole VIP of TCP ports, then a second VIP with two
SVC_KEYS = 65536 + 1


def too_many_keys():
    def svc(name, vip, ports):
        return ("apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
                "metadata: {name: %s, namespace: default}\n"
                "spec:\n  vip: %s\n  ports: [%s]\n"
                "  endpoints: [{ip: 10.99.1.2, weight: 1}]\n"
                % (name, vip, ", ".join("{port: %d, targetPort: 8080}" % p
                                        for p in ports)))
    return [svc("all-ports", "10.96.1.1", range(1, 65536)),
            svc("one-more", "10.96.1.2", range(1, SVC_KEYS - 65535 + 1))]


# the fault is in the second Service document: lines 14..20
CASES["a BPF map would be full (%d VIP:port entries)" % SVC_KEYS] = (
    "---\n".join([WL] + too_many_keys()), (14, 20),
    ["skm_services", "full", "fit", "65536"])

VALID = WL + "---\n" + SVC_HEAD + "  vip: 10.96.0.10\n" \
    "  ports: [{port: 80, targetPort: 8080}]\n" \
    "  endpoints: [{ip: 10.99.1.2, weight: 1}]\n"


def check_config(path):
    return topolib.sh([os.path.join(topolib.build_dir(), "meshd"), "--check-config",
                       "--config", path, "--node", "node1"], check=False, timeout=20)


def svc_view(topo):
    return sorted((s["vip"], s["port"], tuple(sorted((b["ip"], b["port"], b["weight"])
                                                     for b in s["backends"])))
                  for s in topo.meshctl_json(1, "services"))


def body(t, topo):
    d = topo.logdir
    path = os.path.join(d, "valid.yaml")
    with open(path, "w") as f:
        f.write(VALID)
    r = check_config(path)
    t.eq("--check-config accepts a valid file (control)", r.returncode, 0, r.stderr)

    for i, (name, (text, line, words)) in enumerate(CASES.items()):
        path = os.path.join(d, "bad%d.yaml" % i)
        with open(path, "w") as f:
            f.write(text)
        r = check_config(path)
        err = r.stderr
        # "FILE:LINE:COL: message" at the start of a line (after meshd's
        # own "meshd: " tag, if any)
        pos = re.findall(r"(?m)^(?:meshd: )?" + re.escape(path) + r":(\d+):(\d+):(.*)", err)
        t.check("%s: non-zero exit" % name, r.returncode != 0,
                "exit %d, stderr:\n%s" % (r.returncode, err))
        t.check("%s: message starts with %s:LINE:COL:" % (name, os.path.basename(path)),
                pos, err)
        if line is not None:
            lo, hi = (line, line) if isinstance(line, int) else line
            t.check("%s: names line %s" % (name, line if lo == hi else "%d..%d" % line),
                    any(lo <= int(l) <= hi for l, _c, _m in pos), err)
        t.check("%s: names the field (one of %s)" % (name, words),
                any(w in m for _l, _c, m in pos for w in words), err)

    # --- SIGHUP with a broken file keeps the services
    p1, p2 = topo.pods
    # a symlink: edits of its target (another folder) are not seen by
    # meshd's inotify watch, so each reload below is SIGHUP's doing
    real, cfg = topo.config_path(sub="real"), topo.config_path()
    svc = {"name": "web", "vip": "10.96.0.10",
           "ports": [{"port": 80, "targetPort": 8080}], "endpoints": [(p2.ip, 1)]}
    topo.write_config(real, [svc])
    os.symlink(real, cfg)
    h = topo.start_meshd(1, cfg)
    before = svc_view(topo)
    t.check("meshd serves the web VIP", before and before[0][0] == "10.96.0.10", before)
    topo.podtool(p2, "whoami", "--port", 8080, "--name", p2.name,
                 "--timeout", 60).expect("listening")

    bad = topo.config_text([svc]) + "---\napiVersion: skmesh.io/v1alpha1\nkind: Service\n" \
        "metadata: {name: broken, namespace: default}\nspec:\n  vip: 10.96.0.20\n" \
        "  ports: [{port: 99999, targetPort: 8080}]\n"
    with open(real + ".tmp", "w") as f:
        f.write(bad)
    os.replace(real + ".tmp", real)
    size = len(h.log_text())
    h.proc.send_signal(signal.SIGHUP)
    said = tap.wait_until(lambda: cfg in h.log_text()[size:] or
                          real in h.log_text()[size:], timeout=5)
    t.check("SIGHUP with a broken file: meshd logs the error naming the file",
            said, lambda: h.log_tail())
    t.check("... and keeps running", h.proc.poll() is None, h.log_tail())
    t.eq("... and keeps the old services", svc_view(topo), before)
    r = topo.pod_run(p1, topo.podtool_argv("connect-many", "--to", "10.96.0.10:80",
                                           "--count", 5, "--greeting"), timeout=30)
    t.eq("... which still load balance", tap.json_line(r.stdout)["backends"],
         {p2.name: 5}, r.stdout)

    # a file that does not fit the maps: refused whole, nothing half-written
    with open(real + ".tmp", "w") as f:
        f.write(topo.config_text([svc]) + "---\n" + "---\n".join(too_many_keys()))
    os.replace(real + ".tmp", real)
    size = len(h.log_text())
    h.proc.send_signal(signal.SIGHUP)
    said = tap.wait_until(lambda: "skm_" in h.log_text()[size:], timeout=15)
    t.check("SIGHUP with %d VIP:port entries: meshd logs that a map would be full"
            % SVC_KEYS,
            said, lambda: h.log_tail())
    t.eq("... and the maps are untouched", svc_view(topo), before)

    # the next valid file is taken: the "unchanged" above was not a dead reload
    svc["endpoints"] = [(p1.ip, 2), (p2.ip, 1)]
    topo.write_config(real, [svc])
    h.proc.send_signal(signal.SIGHUP)
    changed = tap.wait_until(lambda: svc_view(topo) != before, timeout=5)
    t.check("SIGHUP with a fixed file applies it",
            changed and len(svc_view(topo)[0][2]) == 2,
            lambda: "%s\n%s" % (svc_view(topo), h.log_tail()))


if __name__ == "__main__":
    tap.main(body, nodes=1, pods=2, need=("meshd", "meshctl"))
