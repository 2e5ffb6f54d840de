#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Bad configuration (issue 2, bad input): `meshd --check-config` rejects a
malformed YAML file, an unknown kind, a Service VIP without ports and a port
out of range with a non-zero exit and a message "FILE:LINE:COL: ..." naming
the field; a running meshd given a broken file on SIGHUP keeps its services
(and says why in its log), and takes the next valid file. YAML aliases and
merge keys are refused (issue 13): a ConfigMap-sized file whose aliases
would expand to a billion principals is refused at once, without meshd's
memory growing, and the running state stays; so is a file over the size
cap.
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
# aliases and merge keys: refused where they are, whatever they stand for
CASES["YAML alias"] = (
    WL + "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
    "metadata: {name: p, namespace: default}\nspec:\n  rules:\n"
    "  - from: [{source: {principals: &p [\"cluster.local/ns/default/sa/a\"]}}]\n"
    "  - from: [{source: {principals: *p}}]\n", 12, ["alias", "*p", "write the value out"])
CASES["YAML merge key"] = (
    "apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
    "metadata: {name: a, namespace: default}\n"
    "spec:\n  <<: {ip: 10.99.1.2}\n  node: node1\n", 5, ["merge key", "<<"])


def alias_bomb():
    """A DENY-everything policy whose first rule's principals, once its
    aliases are expanded, are 10^9 strings: 1.4 KiB of YAML."""
    lines = ["apiVersion: security.istio.io/v1", "kind: AuthorizationPolicy",
             "metadata:", "  name: lol", "  namespace: default",
             "  annotations:",
             "    a0: &a0 [\"cluster.local/ns/default/sa/lol\"]"]
    for i in range(1, 10):
        lines.append("    a%d: &a%d [%s]" % (i, i, ", ".join(["*a%d" % (i - 1)] * 10)))
    lines += ["spec:", "  action: DENY", "  rules:",
              "  - from: [{source: {principals: *a9}}]", "  - {}"]
    return "\n".join(lines) + "\n"


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
    # in four documents: one Service of 65535 ports would be a 2 MB
    # document, over the cap of one (CFG_DEFAULT_MAX_DOC_BYTES)
    return [svc("all-ports-%d" % q, "10.96.1.1",
                range(1 + q * 16384, min(65536, (q + 1) * 16384 + 1)))
            for q in range(4)] + \
        [svc("one-more", "10.96.1.2", range(1, SVC_KEYS - 65535 + 1))]


# the fault is in the fifth Service document: lines 38..44 (WL is lines
# 1..4, then each document is a "---" line and 7 lines)
CASES["a BPF map would be full (%d VIP:port entries)" % SVC_KEYS] = (
    "---\n".join([WL] + too_many_keys()), (38, 44),
    ["skm_services", "full", "fit", "65536"])

VALID = WL + "---\n" + SVC_HEAD + "  vip: 10.96.0.10\n" \
    "  ports: [{port: 80, targetPort: 8080}]\n" \
    "  endpoints: [{ip: 10.99.1.2, weight: 1}]\n"


def rss_kb(pid):
    """Resident memory of PID in KiB, as ps tells it."""
    return int(topolib.sh(["ps", "-o", "rss=", "-p", str(pid)], timeout=5).stdout)


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

    # aliases that would expand a 1.4 KiB file into a billion principals
    bomb = topo.config_text([svc]) + "---\n" + alias_bomb()
    t.diag("alias bomb: %d bytes" % len(bomb))
    rss0 = rss_kb(h.pid)
    with open(real + ".tmp", "w") as f:
        f.write(bomb)
    os.replace(real + ".tmp", real)
    size = len(h.log_text())
    h.proc.send_signal(signal.SIGHUP)
    said = tap.wait_until(lambda: "YAML alias" in h.log_text()[size:], timeout=5)
    t.check("SIGHUP with a %d-byte file of nested aliases: refused within 5 s, "
            "naming the alias" % len(bomb), said, lambda: h.log_tail())
    t.check("... with FILE:LINE:COL and the fix",
            re.search("(%s|%s)" % (re.escape(real), re.escape(cfg)) +
                      r":\d+:\d+: error: YAML alias .*write the value out",
                      h.log_text()[size:]), lambda: h.log_tail())
    t.check("... and keeps running", h.proc.poll() is None, h.log_tail())
    rss1 = rss_kb(h.pid)
    t.diag("meshd VmRSS before/after, KiB: %d / %d" % (rss0, rss1))
    t.check("... its memory grew by less than 16 MiB", rss1 - rss0 < 16 << 10,
            "%d -> %d KiB" % (rss0, rss1))
    t.eq("... and keeps the old services", svc_view(topo), before)
    r = topo.pod_run(p1, topo.podtool_argv("connect-many", "--to", "10.96.0.10:80",
                                           "--count", 5, "--greeting"), timeout=30)
    t.eq("... and the old policy: its DENY-all is not applied",
         tap.json_line(r.stdout)["backends"], {p2.name: 5}, r.stdout)

    # a file over the 64 MiB cap (CFG_DEFAULT_MAX_FILE_BYTES): refused by
    # its size, before it is read (sparse: no 64 MiB written here)
    cap = 64 << 20
    with open(real + ".tmp", "w") as f:
        f.write(topo.config_text([svc]))
        f.truncate(cap + 1)
    os.replace(real + ".tmp", real)
    size = len(h.log_text())
    h.proc.send_signal(signal.SIGHUP)
    said = tap.wait_until(lambda: "%d bytes, more than the %d allowed" % (cap + 1, cap)
                          in h.log_text()[size:], timeout=5)
    t.check("SIGHUP with a file of 64 MiB + 1 byte: refused, naming its size and the cap",
            said, lambda: h.log_tail())
    t.eq("... and the old services stay", svc_view(topo), before)

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
