#!/usr/bin/env python3
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
"""
Telemetry (issue 5): meshd's endpoints on ztunnel's ports, read by real
clients.

- Istio's TCP metrics are exact: for connections whose sizes we choose,
  istio_tcp_received_bytes_total (what the client sent) and
  istio_tcp_sent_bytes_total (what the server sent) equal the bytes the
  applications moved, as both reporters see them, same-node (kernel
  records) and cross-node (HBONE tunnel, mutual_tls), with Istio's labels
  (workloads, principals, destination_service).
- Live connections count as they flow, then close.
- A denied connection is counted with response_flags DENY, and in
  skmesh_policy_denials_total.
- `promtool check metrics` finds nothing to say; gzip is served when asked.
- A real Prometheus server scrapes meshd (its targets API shows it up) and
  PromQL returns the byte count of a known transfer.
- /healthz/ready answers 200 when ready and 503 while draining;
  /config_dump lists workloads, services, policies, certificates with
  their expiry and the BPF programs, and is bound to localhost only.
- A bad address flag or a port another process holds stops meshd with a
  clear message before it touches the data path.

2 nodes x 2 pods, mesh CA, a meshd with the tunnel on each node.
"""
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tap  # noqa: E402
import topo as topolib  # noqa: E402

TD = "cluster.local"
PAIRS = [(8, 1), (1000, 50000), (123457, 17), (3000001, 250000)]


def spiffe(pod):
    return "spiffe://%s/ns/default/sa/%s" % (TD, pod.name)


def parse_prom(text):
    """[(name, {label: value}, float)] of a text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels_s, value = rest.rsplit("}", 1)
            labels = {}
            i = 0
            while i < len(labels_s):
                eq = labels_s.index("=", i)
                k = labels_s[i:eq].strip(", ")
                j = eq + 2
                v = []
                while labels_s[j] != '"':
                    if labels_s[j] == "\\":
                        j += 1
                        v.append({"n": "\n"}.get(labels_s[j], labels_s[j]))
                    else:
                        v.append(labels_s[j])
                    j += 1
                labels[k] = "".join(v)
                i = j + 1
        else:
            name, value = line.split(" ", 1)
            labels = {}
        out.append((name, labels, float(value.split()[0])))
    return out


def total(samples, name, **want):
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == w for k, w in want.items()))


def http(topo, n, url, headers=(), check=True):
    """(code, headers text, body bytes) of a GET from node n's netns."""
    hdr = os.path.join(topo.logdir, "hdr.%d" % time.monotonic_ns())
    argv = ["curl", "-sS", "--max-time", "20", "-D", hdr, "-o", "-", url]
    for h in headers:
        argv[1:1] = ["-H", h]
    r = subprocess.run(topo.node_argv(n, argv), capture_output=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("curl %s: %s" % (url, r.stderr.decode(errors="replace")))
    try:
        with open(hdr) as f:
            head = f.read()
        os.unlink(hdr)
    except OSError:
        head = ""
    code = int(head.split()[1]) if head.startswith("HTTP/") else 0
    return code, head, r.stdout


def scrape(topo, n, path="/metrics"):
    code, _, body = http(topo, n, "http://127.0.0.1:15020" + path)
    assert code == 200, "scrape %s: HTTP %d" % (path, code)
    return body.decode()


def body(t, topo):
    a1, a2 = topo.node_pods(1)
    b1, b2 = topo.node_pods(2)
    svcs = [{"name": "a2", "vip": "10.96.8.2", "ports": [{"port": 80, "targetPort": 7000}],
             "endpoints": [(a2.ip, 1)]},
            {"name": "b1", "vip": "10.96.8.3", "ports": [{"port": 80, "targetPort": 7000}],
             "endpoints": [(b1.ip, 1)]}]
    deny = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            "metadata: {name: no-a2-to-b2, namespace: default}\n"
            "spec:\n  selector: {matchLabels: {app: %s}}\n  action: DENY\n"
            "  rules: [{from: [{source: {principals: [\"%s/ns/default/sa/%s\"]}}]}]\n"
            % (b2.name, TD, a2.name))
    deny_local = deny.replace("no-a2-to-b2", "no-a2-to-a1").replace(
        "{app: %s}" % b2.name, "{app: %s}" % a1.name)
    strict = ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
              "metadata: {name: a2-strict, namespace: default}\n"
              "spec: {selector: {matchLabels: {app: %s}}, mtls: {mode: STRICT}}\n" % a2.name)
    extra = deny + "---\n" + deny_local + "---\n" + strict
    cfg = topo.write_config(topo.config_path(), services=svcs, extra=extra)
    ca = os.path.join(topo.logdir, "ca")
    topo.run([os.path.join(topolib.build_dir(), "meshctl"), "ca", "init",
              "--trust-domain", TD, "--out", ca])
    hs = {n: topo.start_meshd(n, cfg, ["--ca-dir", ca, "--drain-timeout", "8"])
          for n in (1, 2)}

    # --- readiness and the ports
    for n in (1, 2):
        code, _, b = http(topo, n, "http://127.0.0.1:15021/healthz/ready")
        t.check("node%d /healthz/ready: 200 ready" % n, code == 200 and b == b"ready\n",
                "%d %r" % (code, b))
    code, _, _ = http(topo, 1, "http://%s:15020/metrics" % topo.node_ip(1), check=False)
    t.check("/metrics answers on the node's address (0.0.0.0:15020)", code == 200, code)
    r = subprocess.run(topo.node_argv(1, ["curl", "-sS", "--max-time", "5",
                                          "http://%s:15000/config_dump" % topo.node_ip(1)]),
                       capture_output=True, text=True)
    t.check("/config_dump is not served on the node's address (localhost only)",
            r.returncode == 7, "curl exit %d: %s" % (r.returncode, r.stderr))

    # --- known transfers: same node via a VIP, and across nodes via a VIP
    for p in (a2, b1):
        topo.podtool(p, "xfer-server", "--port", 7000, "--timeout", 200).expect("listening")
    sa = sum(a for a, b in PAIRS)
    sb = sum(b for a, b in PAIRS)
    for target in ("10.96.8.2:80", "10.96.8.3:80"):
        _, exact, out = tap.xfer_pairs(topo, a1, target, PAIRS)
        t.require("xfer to %s: every pair exact" % target, exact, out)

    same = dict(source_workload=a1.name, destination_workload=a2.name,
                destination_service="a2.default.svc.cluster.local")
    cross = dict(source_workload=a1.name, destination_workload=b1.name,
                 destination_service="b1.default.svc.cluster.local",
                 connection_security_policy="mutual_tls")
    want = [(1, "source", same), (1, "destination", same),
            (1, "source", cross), (2, "destination", cross)]

    def closed_all():
        s = {n: parse_prom(scrape(topo, n)) for n in (1, 2)}
        return all(total(s[n], "istio_tcp_connections_closed_total", reporter=r, **lb)
                   >= len(PAIRS) for n, r, lb in want)

    t.check("every connection's close is counted within 5 s",
            tap.wait_until(closed_all, timeout=5))
    s = {n: parse_prom(scrape(topo, n)) for n in (1, 2)}
    for n, rep, lb in want:
        tag = "node%d reporter=%s %s->%s" % (n, rep, lb["source_workload"],
                                             lb["destination_workload"])
        got = {f: total(s[n], "istio_tcp_%s_total" % f, reporter=rep, **lb)
               for f in ("connections_opened", "connections_closed", "received_bytes",
                         "sent_bytes")}
        t.eq(tag + ": received bytes = what the client sent", got["received_bytes"], sa)
        t.eq(tag + ": sent bytes = what the server sent", got["sent_bytes"], sb)
        t.check(tag + ": opened = closed = %d" % len(PAIRS),
                got["connections_opened"] == got["connections_closed"] == len(PAIRS), got)

    # labels as Istio has them
    ser = [l for n_, l, v in s[2] if n_ == "istio_tcp_sent_bytes_total" and
           l.get("reporter") == "destination" and l.get("destination_workload") == b1.name]
    t.check("tunnel, destination reporter: source_principal is the client's certificate, "
            "destination_principal the server's, canonical names, request_protocol tcp",
            len(ser) == 1 and ser[0]["source_principal"] == spiffe(a1) and
            ser[0]["destination_principal"] == spiffe(b1) and
            ser[0]["destination_canonical_service"] == b1.name and
            ser[0]["destination_canonical_revision"] == "latest" and
            ser[0]["source_workload_namespace"] == "default" and
            ser[0]["request_protocol"] == "tcp" and ser[0]["response_flags"] == "-" and
            ser[0]["destination_service_name"] == "b1" and
            ser[0]["destination_service_namespace"] == "default", ser)
    t.check("same node: connection_security_policy unknown (no TLS), both principals known",
            all(l["connection_security_policy"] == "unknown" and
                l["source_principal"] == spiffe(a1) and
                l["destination_principal"] == spiffe(a2)
                for n_, l, v in s[1] if n_ == "istio_tcp_sent_bytes_total" and
                l.get("destination_workload") == a2.name), s[1][:3])
    # The cross-node Istio counts above are the tunnel's, counted as its
    # streams end; the kernel's close event of the pod's own captured
    # socket may come a little later (after its FIN exchange with meshd,
    # then the ring's batch): wait for it too.
    def by_path():
        s1 = parse_prom(scrape(topo, 1))
        return {p: total(s1, "skmesh_connections_closed_total", path=p)
                for p in ("accelerated", "tunnelled", "passthrough")}
    paths = {}
    tap.wait_until(lambda: paths.update(by_path()) or
                   (paths["accelerated"] >= 2 * len(PAIRS) and
                    paths["tunnelled"] >= len(PAIRS)), timeout=5)
    t.check("skmesh_connections_closed_total counts every socket of node1 by path "
            "(accelerated >= 2 x %d, tunnelled >= %d)" % (len(PAIRS), len(PAIRS)),
            paths["accelerated"] >= 2 * len(PAIRS) and paths["tunnelled"] >= len(PAIRS),
            paths)
    t.check("skmesh_sk_msg_redirected_bytes_total covers the same-node bytes",
            total(s[1], "skmesh_sk_msg_redirected_bytes_total") >= sa + sb)

    # --- live connections count as they flow
    for p in (a2, b2):
        topo.podtool(p, "echo", "--port", 7100, "--timeout", 200).expect("listening")
    sessions = {}
    for p in (a2, b2):
        ses = topo.podtool(a1, "session", "--to", "%s:7100" % p.ip, stdin=True)
        info = ses.next()
        t.require("live session a1->%s connected" % p.name, info.get("event") == "connected",
                  info)
        x = ses.cmd("xfer 300000")
        t.require("live session a1->%s echoes 300000 bytes" % p.name, x.get("ok"), x)
        sessions[p.name] = ses
    live = {1: parse_prom(scrape(topo, 1)), 2: parse_prom(scrape(topo, 2))}
    for n, rep, p in ((1, "source", a2), (1, "destination", a2), (1, "source", b2),
                      (2, "destination", b2)):
        lb = dict(reporter=rep, source_workload=a1.name, destination_workload=p.name,
                  destination_service="unknown")
        got = [total(live[n], "istio_tcp_%s_total" % f, **lb)
               for f in ("connections_opened", "connections_closed", "received_bytes",
                         "sent_bytes")]
        t.eq("live, node%d reporter=%s a1->%s: opened 1, closed 0, 300000 bytes each way"
             % (n, rep, p.name), got, [1, 0, 300000, 300000])
    t.check("skmesh_connections_open shows the live accelerated connection",
            total(live[1], "skmesh_connections_open", path="accelerated") >= 2)
    for ses in sessions.values():
        ses.cmd("close")
        ses.wait()

    def live_closed():
        s2 = parse_prom(scrape(topo, 2))
        return total(s2, "istio_tcp_connections_closed_total", reporter="destination",
                     destination_workload=b2.name) >= 1
    t.check("the closed live connections are counted closed",
            tap.wait_until(live_closed, timeout=5))
    s2 = parse_prom(scrape(topo, 2))
    t.eq("after close: the tunnelled echo's bytes stay exact (300000 each way)",
         [total(s2, "istio_tcp_%s_total" % f, reporter="destination",
                destination_workload=b2.name, source_workload=a1.name)
          for f in ("received_bytes", "sent_bytes")], [300000, 300000])

    # --- denials
    r = topo.pod_run(a2, topo.podtool_argv("connect-many", "--to", "%s:7100" % b2.ip,
                                           "--count", 1), check=False, timeout=30)
    r2 = topo.pod_run(a2, topo.podtool_argv("connect-many", "--to", "%s:7000" % a1.ip,
                                            "--count", 1), check=False, timeout=30)
    t.check("same-node denied connect refused by the kernel (EPERM)",
            "EPERM" in r2.stdout, r2.stdout)

    def denied():
        s2 = parse_prom(scrape(topo, 2))
        return total(s2, "istio_tcp_connections_closed_total", reporter="destination",
                     response_flags="DENY", source_workload=a2.name) >= 1
    t.check("tunnel denial: node2 counts a2->b2 with response_flags DENY",
            tap.wait_until(denied, timeout=5), r.stdout)
    s1 = parse_prom(scrape(topo, 1))
    s2 = parse_prom(scrape(topo, 2))
    t.check("node1 (source) counts the refused stream with response_flags DENY",
            total(s1, "istio_tcp_connections_opened_total", reporter="source",
                  response_flags="DENY", destination_workload=b2.name) >= 1)

    def local_denied():
        s1 = parse_prom(scrape(topo, 1))
        return total(s1, "istio_tcp_connections_closed_total", reporter="destination",
                     response_flags="DENY", source_workload=a2.name,
                     destination_workload=a1.name) >= 1
    t.check("kernel denial: node1 counts a2->a1 (EPERM) with response_flags DENY",
            tap.wait_until(local_denied, timeout=5))
    dl = [e for e in hs[1].access_events() if e.get("event") == "deny"]
    t.check("kernel denial: an access-log line (event deny, enforcer connect) with both "
            "workloads and principals",
            any(e.get("src_workload") == "default/" + a2.name and
                e.get("dst_workload") == "default/" + a1.name and
                e.get("dst") == "%s:7000" % a1.ip and e.get("enforcer") == "connect" and
                e.get("src_principal") == spiffe(a2) and e.get("response_flags") == "DENY"
                for e in dl), dl[:3])

    # plaintext from outside the mesh (node2's own namespace) to the STRICT
    # pod: TC drops the SYN and its retransmissions; counted once
    r = topo.node_run(2, [sys.executable, "-c",
                          "import socket\ns = socket.socket(); s.settimeout(2.5)\n"
                          "try:\n    s.connect((%r, 7000)); print('connected')\n"
                          "except OSError as e:\n    print('failed', e)\n" % a2.ip],
                      check=False, timeout=20)

    def plain_denied():
        s1 = parse_prom(scrape(topo, 1))
        return total(s1, "istio_tcp_connections_opened_total", reporter="destination",
                     response_flags="DENY", destination_workload=a2.name,
                     source_workload="unknown") >= 1
    t.check("STRICT: plaintext from node2's namespace to a2 never connects", "failed" in r.stdout,
            r.stdout)
    t.check("... counted with response_flags DENY (reporter destination, source unknown)",
            tap.wait_until(plain_denied, timeout=5))
    s1 = parse_prom(scrape(topo, 1))
    t.eq("... once, although TC dropped its SYN and retransmission(s)",
         total(s1, "istio_tcp_connections_opened_total", reporter="destination",
               response_flags="DENY", destination_workload=a2.name, source_workload="unknown"), 1)
    pl = [e for e in hs[1].access_events() if e.get("event") == "deny" and
          e.get("enforcer") == "tc"]
    t.check("... and one access-log line: enforcer tc, the client's address and port, the "
            "reason from the compiled verdict, no source principal",
            len(pl) == 1 and pl[0]["src"].startswith(topo.node_ip(2) + ":") and
            pl[0]["dst"] == "%s:7000" % a2.ip and "src_principal" not in pl[0] and
            "STRICT" in pl[0].get("reason", ""), pl)
    s1 = parse_prom(scrape(topo, 1))
    t.check("skmesh_policy_denials_total: tunnel on node2, connect on node1",
            total(s2, "skmesh_policy_denials_total", enforcer="tunnel") >= 1 and
            total(s1, "skmesh_policy_denials_total", enforcer="connect") >= 1,
            [x for x in s1 + s2 if x[0] == "skmesh_policy_denials_total"])

    def certs_shown():
        s1[:] = parse_prom(scrape(topo, 1))
        return all(any(n_ == "skmesh_certificate_expiry_timestamp_seconds" and
                       l.get("identity") == spiffe(p) and v > time.time() + 3600
                       for n_, l, v in s1) for p in (a1, a2))
    t.check("certificate expiry exported for node1's identities (both used by now)",
            tap.wait_until(certs_shown, timeout=3),
            [x for x in s1 if "certificate" in x[0]])
    t.check("map fill, ring-buffer drops, reconcile histogram and process metrics present",
            all(any(n_ == name for n_, l, v in s1) for name in
                ("skmesh_map_fill_ratio", "skmesh_ringbuf_drops_total",
                 "skmesh_reconcile_duration_seconds_count", "process_resident_memory_bytes",
                 "process_cpu_seconds_total", "skmesh_access_log_dropped_total")))

    # entries counted (hash maps in batches, per-CPU ones too)
    entries = {l.get("map"): v for n_, l, v in s1 if n_ == "skmesh_map_entries"}
    t.eq("map entries: skm_workloads holds the 4 workloads, skm_dev_stats (per-CPU) "
         "node1's 2 pod interfaces",
         (entries.get("skm_workloads"), entries.get("skm_dev_stats")), (4, 2), entries)

    # --- the exposition, checked by Prometheus' own tools
    for n in (1, 2):
        text = scrape(topo, n)
        r = subprocess.run(["promtool", "check", "metrics"], input=text,
                           capture_output=True, text=True)
        t.check("node%d: promtool check metrics has nothing to say" % n,
                r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(),
                r.stdout + r.stderr)
    alt = scrape(topo, 1, "/stats/prometheus")
    t.check("/stats/prometheus serves the same families",
            "istio_tcp_sent_bytes_total{" in alt)
    code, head, b = http(topo, 1, "http://127.0.0.1:15020/metrics",
                         headers=("Accept-Encoding: gzip",))
    try:
        unz = gzip.decompress(b).decode()
    except (OSError, EOFError) as e:
        unz = "not gzip: %s" % e
    t.check("Accept-Encoding gzip: Content-Encoding gzip, and it inflates to the exposition",
            code == 200 and "content-encoding: gzip" in head.lower() and
            "istio_tcp_received_bytes_total{" in unz, head + unz[:200])
    code, head, b = http(topo, 1, "http://127.0.0.1:15020/metrics")
    t.check("no Accept-Encoding: plain text, version=0.0.4",
            "content-encoding" not in head.lower() and "version=0.0.4" in head and
            b.startswith(b"# HELP"), head)

    # --- a real Prometheus server
    pdir = os.path.join(topo.logdir, "prom")
    os.makedirs(pdir)
    port = 19000 + os.getpid() % 900
    with open(os.path.join(pdir, "prometheus.yml"), "w") as f:
        f.write("global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                "scrape_configs:\n"
                "  - job_name: skmesh\n"
                "    metrics_path: /stats/prometheus\n"
                "    static_configs: [{targets: ['127.0.0.1:15020']}]\n")
    prom = topo.node_popen(1, ["prometheus", "--config.file=" + os.path.join(pdir, "prometheus.yml"),
                               "--storage.tsdb.path=" + os.path.join(pdir, "data"),
                               "--web.listen-address=127.0.0.1:%d" % port,
                               "--log.level=warn"],
                           stdout=open(os.path.join(pdir, "log"), "w"),
                           stderr=subprocess.STDOUT)
    api = "http://127.0.0.1:%d/api/v1/" % port

    def target_up():
        code, _, b = http(topo, 1, api + "targets", check=False)
        if code != 200:
            return False
        ts = json.loads(b)["data"]["activeTargets"]
        return any(x["health"] == "up" for x in ts)
    up = tap.wait_until(target_up, timeout=30, interval=0.5)
    log = open(os.path.join(pdir, "log")).read()[-2000:]
    t.check("Prometheus %s scrapes meshd: its target is up" % "2.42", up, log)
    q = ('sum(istio_tcp_received_bytes_total{reporter="destination",'
         'destination_workload="%s",destination_service_name="a2"})' % a2.name)
    val = [None]

    def queried():
        code, _, b = http(topo, 1, api + "query?query=" + urllib.parse.quote(q), check=False)
        if code != 200:
            return False
        res = json.loads(b)["data"]["result"]
        val[0] = res[0]["value"][1] if res else None
        return val[0] is not None
    tap.wait_until(queried, timeout=15, interval=0.5)
    t.eq("PromQL: %s" % q, val[0], str(sa))
    prom.terminate()
    prom.wait(timeout=10)

    # --- /config_dump
    code, _, b = http(topo, 1, "http://127.0.0.1:15000/config_dump")
    try:
        d = json.loads(b)
    except ValueError:
        d = {}
    t.check("/config_dump: JSON with node, ready, workloads, services, policies",
            code == 200 and d.get("node") == "node1" and d.get("ready") is True and
            len(d.get("workloads", [])) == 4 and
            {s["name"] for s in d.get("services", [])} == {"a2", "b1"} and
            {p["name"] for p in d.get("authorizationPolicies", [])} ==
            {"no-a2-to-b2", "no-a2-to-a1"}, str(b)[:500])
    wl = {w["name"]: w for w in d.get("workloads", [])}
    t.check("/config_dump: workloads carry identity, locality and source position",
            wl.get(a1.name, {}).get("identity") == spiffe(a1) and
            wl[a1.name]["local"] is True and wl[b1.name]["local"] is False and
            wl[a1.name]["source"].startswith(cfg + ":"), wl.get(a1.name))
    certs = {c["identity"]: c for c in d.get("certificates", [])}
    t.check("/config_dump: certificates of node1's identities with expiry",
            set(certs) >= {spiffe(a1), spiffe(a2)} and
            all(c["expiresInSeconds"] > 3600 and c["notAfter"].endswith("Z")
                for c in certs.values()), d.get("certificates"))
    progs = {p["name"]: p for p in (d.get("bpf") or {}).get("programs", [])}
    t.check("/config_dump: BPF programs with their attachment, maps with entries",
            progs.get("skm_connect4", {}).get("attach") == "cgroup link pinned" and
            any(m["name"] == "skm_conns" and "entries" in m
                for m in d["bpf"]["maps"]), str(d.get("bpf"))[:400])

    # --- an invalid reload shows in /config_dump and the reload counter
    with open(cfg + ".tmp", "w") as f:
        f.write(open(cfg).read() + "---\nkind: Nonsense\n")
    os.replace(cfg + ".tmp", cfg)

    def rejected():
        s1 = parse_prom(scrape(topo, 1))
        return total(s1, "skmesh_config_reloads_total", result="rejected") >= 1
    t.check("a broken config: skmesh_config_reloads_total{result=rejected} counts it",
            tap.wait_until(rejected, timeout=5))
    code, _, b = http(topo, 1, "http://127.0.0.1:15000/config_dump")
    d = json.loads(b)
    t.check("... and /config_dump says why, keeping the running config",
            (d.get("lastReloadError") or "").startswith(cfg + ":") and
            len(d["workloads"]) == 4, d.get("lastReloadError"))
    topo.write_config(cfg, services=svcs, extra=extra)

    def fixed():
        c, _, b = http(topo, 1, "http://127.0.0.1:15000/config_dump")
        return json.loads(b).get("lastReloadError") is None
    t.check("the config mended: lastReloadError is null again", tap.wait_until(fixed, 5))

    # --- a policy change closes the tunnelled connections it now denies (as
    # ztunnel's connection manager does) and leaves the others alone
    topo.podtool(b1, "echo", "--port", 7101, "--timeout", 200).expect("listening")
    doomed = topo.podtool(a1, "session", "--to", "%s:7101" % b1.ip, stdin=True)
    kept = topo.podtool(a1, "session", "--to", "%s:7100" % b2.ip, stdin=True)
    for ses in (doomed, kept):
        t.require("session before the policy change", ses.next().get("event") == "connected")
        t.require("... echoes", ses.cmd("xfer 1000").get("ok") is True)
    before = parse_prom(scrape(topo, 2))
    revoke = deny.replace("no-a2-to-b2", "no-a1-to-b1").replace(
        "{app: %s}" % b2.name, "{app: %s}" % b1.name).replace("sa/%s" % a2.name,
                                                              "sa/%s" % a1.name)
    topo.write_config(cfg, services=svcs, extra=extra + "---\n" + revoke)

    def revoked():
        s2 = parse_prom(scrape(topo, 2))
        return total(s2, "skmesh_tunnel_events_total", event="in_revoked") > \
            total(before, "skmesh_tunnel_events_total", event="in_revoked")
    t.check("a new DENY for a1 -> b1: node2 closes that tunnelled connection within 3 s",
            tap.wait_until(revoked, timeout=3), hs[2].log_tail(5))
    r = doomed.cmd("xfer 1000", timeout=10)
    t.check("... the client's connection is reset", r.get("event") == "error" or
            r.get("ok") is False, r)
    r = kept.cmd("xfer 1000", timeout=10)
    t.check("... the connection a1 -> b2 that the change does not concern flows on",
            r.get("ok") is True, r)
    t.check("... and meshd says why", "the policy now denies it" in hs[2].log_text(),
            hs[2].log_tail(5))
    kept.cmd("close")
    doomed.proc.kill()
    topo.write_config(cfg, services=svcs, extra=extra)

    # --- bad flags and a port in use stop meshd before it touches anything
    r = topo.run(topo.meshd_argv(1, cfg, ["--metrics-addr", "10.1.2:x"], "-"), check=False)
    t.check("--metrics-addr 10.1.2:x: exit 2 naming the flag",
            r.returncode == 2 and "--metrics-addr" in r.stderr, r.stderr)
    pins = "/sys/fs/bpf/%s-extra" % topo.prefix
    argv = topo.meshd_argv(1, cfg, ["--bpffs", pins], "-")
    r = topo.run(topo.node_argv(2, argv), check=False, timeout=30)
    t.check("a held port (node2's own meshd on 15020): exit 1 naming the address, "
            "no pins made", r.returncode == 1 and "0.0.0.0:15020" in r.stderr and
            not os.path.exists(pins), r.stderr[-600:])

    r = topo.run(topo.node_argv(2, topo.meshd_argv(
        1, cfg, ["--bpffs", pins, "--ca-dir", ca, "--trust-domain", "other.example",
                 "--admin", "off", "--metrics-addr", "off", "--ready-addr", "off"], "-")),
        check=False, timeout=30)
    t.check("--trust-domain other than the CA's: meshd refuses to start and says which, "
            "before it loads anything (no pins made)",
            r.returncode == 1 and "trust domain cluster.local" in r.stderr and
            "--trust-domain cluster.local" in r.stderr and not os.path.exists(pins),
            r.stderr[-600:])

    # --- the access log: src is the client on both ends' lines
    evs = [e for e in hs[1].access_events() if e.get("event") == "close" and
           e.get("path") == "accelerated" and e.get("dst", "").startswith(a2.ip + ":7000")]
    srv = [e for e in evs if e["role"] == "server"]
    cli = [e for e in evs if e["role"] == "client"]
    t.check("access log, same node: client and server lines name the client as src, "
            "the server as dst, with both principals and how it closed",
            len(srv) == len(cli) == len(PAIRS) and
            {e["src"] for e in srv} == {e["src"] for e in cli} and
            all(e["src_workload"] == "default/" + a1.name and
                e["dst_workload"] == "default/" + a2.name and
                e["src_principal"] == spiffe(a1) and e["dst_principal"] == spiffe(a2) and
                e["close"] in ("fin", "reset", "reset_after_fin") for e in srv + cli),
            evs[:2])
    tev = [e for e in hs[2].access_events() if e.get("path") == "tunnel" and
           e.get("role") == "server" and e.get("dst", "").startswith(b1.ip + ":7000")]
    t.check("access log, tunnel server lines: the client's address with its port, "
            "and its workload", tev and all(e["src"].startswith(a1.ip + ":") and
                                            not e["src"].endswith(":0") and
                                            e.get("src_workload") == "default/" + a1.name
                                            for e in tev), tev[:1])

    # --- draining: not ready any more
    ses = topo.podtool(a1, "session", "--to", "%s:7100" % b2.ip, stdin=True)
    info = ses.next()
    t.require("a tunnelled session before SIGTERM", info.get("event") == "connected", info)
    hs[1].proc.send_signal(15)
    codes = []

    def not_ready():
        c, _, b = http(topo, 1, "http://127.0.0.1:15021/healthz/ready", check=False)
        codes.append((c, b))
        return c == 503
    t.check("SIGTERM: /healthz/ready answers 503 while the tunnel drains",
            tap.wait_until(not_ready, timeout=5, interval=0.1), codes[-3:])
    ses.cmd("close")
    ses.wait()


if __name__ == "__main__":
    tap.main(body, nodes=2, pods=2)
