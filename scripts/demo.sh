#!/usr/bin/env bash
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#
# make demo: skmesh on one machine, with real clients.
#
# Builds two "nodes" with two "pods" each (network namespaces, a cgroup per
# pod: tests/lib/topo.py), makes a mesh CA, starts one meshd per node, then
# runs curl against a small HTTP server and redis-benchmark against
# redis-server through Service VIPs, on the same node (sockets spliced by
# sk_msg) and across nodes (the HBONE mTLS tunnel), shows a connection that
# an AuthorizationPolicy denies, the connection table, the counters and the
# Prometheus metrics, and ends with a summary. Everything it made is removed
# on exit, on error and on Ctrl-C.
#
# Needs root and a build (make). SKM_BUILD overrides the build folder.

# shellcheck disable=SC2154	# IP_*, NETNS_*, CG_*, PIN*, NODENS*: from vars.sh

set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${SKM_BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
PY=${PYTHON:-python3}
TOPO=("$PY" "$PWD/tests/lib/topo.py")
TD=cluster.local
NS=shop
WEB_VIP=10.96.0.10
REDIS_VIP=10.96.0.20
STARTED=$SECONDS

if [ -t 1 ]; then B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' R=$'\e[0m'; else B='' D='' G='' R=''; fi

section() {		# section TITLE WHY...
	printf '\n%s== %s%s\n' "$B" "$1" "$R"
	shift
	local l
	for l in "$@"; do printf '%s   %s%s\n' "$D" "$l" "$R"; done
	echo
}
die() { echo "demo: $*" >&2; exit 1; }
indent() { sed 's/^/   /'; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo make demo): it creates namespaces, cgroups and BPF programs"
for b in meshd meshctl; do
	[ -x "$BUILD/$b" ] || die "$BUILD/$b is missing: run make first"
done
for c in curl redis-server redis-benchmark redis-cli nsenter; do
	command -v "$c" >/dev/null || die "$c is missing (make deps installs it)"
done

RID=''
BGPIDS=()
MESHD_PIDS=()
TMPD=$(mktemp -d /tmp/skmesh-demo.XXXXXX)

# Topologies this shell owns: normally just $RID, but an interrupt can land
# between `topo.py up` finishing and RID being set.
owned_ids() {
	local f
	for f in /run/skmesh-test/skm*.json; do
		[ -e "$f" ] || continue
		grep -qE "\"owner_pid\": $$[,}]" "$f" 2>/dev/null || continue
		f=${f##*/skm}
		echo "${f%.json}"
	done
}

cleanup() {
	local rc=$? id ids left p _
	# a second Ctrl-C must not cut the clean up short (children inherit
	# the ignored signal, topo.py down included)
	trap '' INT TERM
	trap - EXIT
	disown -a 2>/dev/null || true	# no "Killed" notices from bash
	ids=$( { [ -z "$RID" ] || echo "$RID"; owned_ids; } | sort -u)
	section "Clean up" \
		"Stops every process of the run, runs meshd --cleanup for both nodes" \
		"(detach the programs, unpin the maps), removes namespaces, veths," \
		"qdiscs, cgroups, pins and temporary files."
	# the clients and servers first, so no tunnel stream is left to drain
	for p in "${BGPIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	for p in "${MESHD_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${MESHD_PIDS[@]}"; do	# (3 s at most; down kills what is left)
		for _ in $(seq 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
	done
	for id in $ids; do
		# down: kills what is left in the namespaces and cgroups, meshd
		# --cleanup for each node, then deletes namespaces (their veths
		# and qdiscs go with them), cgroups, pins, logs, state file
		if "${TOPO[@]}" down --id "$id"; then
			echo "   removed everything of run $id"
		else
			echo "   could not remove everything: run '${TOPO[*]} gc --all'" >&2
			rc=1
		fi
		# and look: anything still named after the run?
		left=$( {
			ip netns list | grep -oE "^skm$id-[^ ]+" || true
			ls -d "/sys/fs/bpf/skm$id-"* "$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)/skm$id" \
				"/run/skmesh-test/skm$id.json" 2>/dev/null || true
		} | tr '\n' ' ')
		if [ -z "$left" ]; then
			echo "   checked: no namespace, cgroup, pin or state file named skm$id is left"
		else
			echo "   left behind: $left" >&2
			rc=1
		fi
	done
	[ -n "$ids" ] || echo "   no topology was up yet"
	rm -rf "$TMPD"
	echo "   demo ran $((SECONDS - STARTED)) s"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT
trap 'echo; echo "demo: terminated"; exit 143' TERM

# ---------------------------------------------------------------------------
section "1. The topology" \
	"A node is a network namespace running one meshd; a pod is a namespace" \
	"wired to its node by a veth pair, its processes in a cgroup under the" \
	"node's cgroup. meshd attaches its programs to its node's cgroup only."

RID=$("${TOPO[@]}" up --nodes 2 --pods 2 --owner-pid $$)
"${TOPO[@]}" show --id "$RID" >"$TMPD/topo.json"

# names and addresses as shell variables: LOGDIR, PIN1, NODENS1, IP_n1p1, ...
"$PY" - "$TMPD/topo.json" >"$TMPD/vars.sh" <<'PYEOF'
import json, shlex, sys
t = json.load(open(sys.argv[1]))
print("LOGDIR=%s" % shlex.quote(t["logdir"]))
for n in t["nodes"]:
    print("PIN%d=%s NODENS%d=%s" % (n["node"], shlex.quote(n["pin_dir"]),
          n["node"], shlex.quote(n["netns_path"])))
for p in t["pods"]:
    print("IP_%s=%s NETNS_%s=%s CG_%s=%s" % (p["name"], p["ip"], p["name"],
          shlex.quote(p["netns_path"]), p["name"], shlex.quote(p["cgroup"])))
PYEOF
# shellcheck disable=SC1091
. "$TMPD/vars.sh"

# the pods' roles: two servers, and a client on each node
declare -A ROLE=([n1p1]=web [n1p2]=frontend [n2p1]=redis [n2p2]=worker)
"$PY" - "$TMPD/topo.json" "${ROLE[n1p1]}" "${ROLE[n1p2]}" "${ROLE[n2p1]}" "${ROLE[n2p2]}" <<'PYEOF'
import json, sys
t = json.load(open(sys.argv[1]))
role = dict(zip(("n1p1", "n1p2", "n2p1", "n2p2"), sys.argv[2:]))
print("   run id %s: every namespace, cgroup and pin folder is named skm%s..." % (t["id"], t["id"]))
print()
row = "   %-5s %-9s %-6s %-10s %-14s %s"
print(row % ("POD", "WORKLOAD", "NODE", "IP", "NETNS", "CGROUP"))
for p in t["pods"]:
    print(row % (p["name"], role[p["name"]], "node%d" % p["node"], p["ip"], p["ns"], p["cgroup"]))
print()
print("   nodes %s, joined by a bridge in %s"
      % (", ".join("node%d (%s)" % (n["node"], n["ip"]) for n in t["nodes"]), t["fabric_ns"]))
PYEOF

# pod P CMD...: run CMD in pod P: join its cgroup, then enter its network
# namespace (only that one: `ip netns exec` would hide the host's /sys)
POD_SH='echo $$ >"$1/cgroup.procs" && n=$2 && shift 2 && exec nsenter --net="$n" -- "$@"'
pod() { local cg="CG_$1" ns="NETNS_$1"; shift; sh -c "$POD_SH" sh "${!cg}" "${!ns}" "$@"; }
# podbg P CMD...: the same in the background (stdin /dev/null), its pid in
# $BG and in BGPIDS for the clean up
podbg() {
	local cg="CG_$1" ns="NETNS_$1"
	shift
	sh -c "$POD_SH" sh "${!cg}" "${!ns}" "$@" </dev/null &
	BG=$!
	BGPIDS+=("$BG")
}
say() { printf '%s[pod %s: %s]$ %s%s\n' "$G" "$1" "${ROLE[$1]}" "$2" "$R"; }	# say P CMDLINE
# onnode N CMD...: CMD in node N's network namespace (meshctl there, so the
# pod veths' names resolve; curl to meshd's ports on 127.0.0.1)
onnode() { local ns="NODENS$1"; shift; nsenter --net="${!ns}" -- "$@"; }
meshctl() { local pin="PIN$1" n=$1; shift; onnode "$n" "$BUILD/meshctl" --bpffs "${!pin}" "$@"; }
mctl() { printf '%s[node%s]$ meshctl %s%s\n' "$G" "$1" "${*:2}" "$R"; meshctl "$@" | indent; }
until_ok() {		# until_ok WHAT CMD...: retry CMD for 5 s
	local what=$1 _
	shift
	for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
	die "$what not ready after 5 s"
}

# ---------------------------------------------------------------------------
section "2. A mesh CA" \
	"The root of trust for the mesh. Each meshd issues short-lived ECDSA" \
	"certificates from it for the workloads of its node, with SPIFFE IDs" \
	"spiffe://$TD/ns/NAMESPACE/sa/SERVICEACCOUNT."
CA=$TMPD/ca
printf '%s$ meshctl ca init --trust-domain %s --out %s%s\n' "$G" "$TD" "$CA" "$R"
"$BUILD/meshctl" ca init --trust-domain "$TD" --out "$CA" | indent
stat -c '%A %n' "$CA"/* | indent

# ---------------------------------------------------------------------------
CFG=$LOGDIR/conf/mesh.yaml	# its own folder: meshd watches the folder
service() {	# service NAME VIP PORT TARGETPORT: a Service for the pods app=NAME
	cat <<EOF
apiVersion: skmesh.io/v1alpha1
kind: Service
metadata: {name: $1, namespace: $NS}
spec:
  vip: $2
  ports: [{port: $3, targetPort: $4, protocol: TCP}]
  selector: {app: $1}
---
EOF
}
mkdir -p "$LOGDIR/conf"
{
	for p in n1p1 n1p2 n2p1 n2p2; do
		ip=IP_$p netns=NETNS_$p
		cat <<EOF
apiVersion: skmesh.io/v1alpha1
kind: Workload
metadata: {name: ${ROLE[$p]}, namespace: $NS, labels: {app: ${ROLE[$p]}}}
spec: {ip: ${!ip}, node: node${p:1:1}, serviceAccount: ${ROLE[$p]}, netns: ${!netns}}
---
EOF
	done
	service web "$WEB_VIP" 80 8080
	service redis "$REDIS_VIP" 6379 6379
	cat <<EOF
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-admin-port, namespace: $NS}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - from: [{source: {principals: ["$TD/ns/$NS/sa/frontend", "$TD/ns/$NS/sa/worker"]}}]
    to: [{operation: {ports: ["9090"]}}]
EOF
} >"$CFG"
section "3. The config" \
	"Kubernetes-style documents: a Workload per pod (namespace, service" \
	"account, labels), a Service per server with a VIP, and Istio's own" \
	"AuthorizationPolicy: the clients may not reach web's admin port 9090." \
	"Both meshds read the same file; --node tells each which pods are its own."
echo "   $CFG:"
indent <"$CFG"

# ---------------------------------------------------------------------------
section "4. One meshd per node" \
	"Each loads the BPF programs, pins maps and links under its --bpffs folder," \
	"attaches to its node's cgroup and the pod veths, fills the maps from the" \
	"config, issues its pods' certificates, opens the tunnel's ports 15001 and" \
	"15008 in its pods' namespaces, and says 'meshd: ready'."
for n in 1 2; do
	pin=PIN$n
	printf '%s[node%d]$ meshd --config %s --node node%d --cgroup %s --bpffs %s --ca-dir %s --cert-dir %s --drain-timeout 1%s\n' \
		"$G" "$n" "$CFG" "$n" ".../skm$RID/n$n" "${!pin}" "$CA" "$TMPD/certs-n$n" "$R"
	"${TOPO[@]}" meshd --id "$RID" --node "$n" --config "$CFG" -- \
		--ca-dir "$CA" --cert-dir "$TMPD/certs-n$n" --drain-timeout 1 >"$TMPD/meshd$n.json"
	read -r pid log < <("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["pid"], d["log"])' \
		"$TMPD/meshd$n.json")
	MESHD_PIDS+=("$pid")
	echo "   running, pid $pid; its log: $log"
	grep -E 'meshd: ready' "$log" | indent || true
done
echo
echo "   Readiness probe (as the kubelet asks it) on each node's 127.0.0.1:15021:"
for n in 1 2; do
	code=$(onnode "$n" curl -s -o /dev/null --max-time 2 -w '%{http_code}' \
		http://127.0.0.1:15021/healthz/ready || true)
	echo "   node$n: GET /healthz/ready -> ${code:-000}"
	[ "$code" = 200 ] || die "node$n's meshd is not ready (see its log above)"
done

# ---------------------------------------------------------------------------
section "5. The servers" \
	"Plain, unmodified programs: python's http.server in web (8080 for the" \
	"site, 9090 for an 'admin' page) and redis-server in redis. Neither knows" \
	"the mesh is there."
mkdir -p "$TMPD/www" "$TMPD/admin"
head -c $((256 << 10)) /dev/urandom >"$TMPD/www/blob"
echo "hello from web" >"$TMPD/www/index.html"
echo "web admin page" >"$TMPD/admin/index.html"
for port in 8080 9090; do
	dir=$TMPD/www
	[ "$port" = 9090 ] && dir=$TMPD/admin
	printf '%s[pod n1p1: web]$ python3 -m http.server %s --bind %s%s\n' "$G" "$port" "$IP_n1p1" "$R"
	podbg n1p1 "$PY" -m http.server "$port" --bind "$IP_n1p1" --directory "$dir" \
		>"$LOGDIR/http-$port.log" 2>&1
done
printf "%s[pod n2p1: redis]$ redis-server --bind %s --save '' --appendonly no --protected-mode no%s\n" \
	"$G" "$IP_n2p1" "$R"
podbg n2p1 redis-server --bind "$IP_n2p1" --port 6379 --save '' --appendonly no \
	--protected-mode no --dir "$TMPD" >"$LOGDIR/redis.log" 2>&1
for port in 8080 9090; do
	until_ok "http.server on $port" pod n1p1 curl -s -o /dev/null --max-time 1 "http://$IP_n1p1:$port/"
done
until_ok redis-server pod n2p1 redis-cli -h "$IP_n2p1" ping

# ---------------------------------------------------------------------------
# curl_vip POD URL: the status, the bytes, and where curl believes it is
# connected (getpeername)
curl_vip() {
	local out
	say "$1" "curl -s -o /dev/null -w '%{http_code} %{size_download} %{remote_ip}:%{remote_port}' $2"
	out=$(pod "$1" curl -sS -o /dev/null --max-time 10 -w \
		'HTTP %{http_code}, %{size_download} bytes in %{time_total} s; curl is connected to %{remote_ip}:%{remote_port}' "$2")
	echo "   $out"
	result "curl $3" "${out%% in *}"
}
# result WHAT OUTCOME: a line of the summary
result() { printf '   %-48s %s\n' "$1" "$2" >>"$TMPD/results"; }
section "6. HTTP through the web Service VIP" \
	"curl dials $WEB_VIP:80; cgroup/connect4 picks a backend and rewrites the" \
	"destination inside connect() (no NAT on the wire); getpeername() still" \
	"answers the VIP. frontend is on web's node: the two sockets are spliced" \
	"by sk_msg. worker is on node2: node2's meshd carries the connection over" \
	"mutual TLS 1.3 + HTTP/2 CONNECT (HBONE) to node1's meshd, which checks" \
	"worker's SPIFFE identity against policy and connects to web."
echo "   same node (frontend -> web):"
curl_vip n1p2 "http://$WEB_VIP/blob" "frontend -> web (same node)"
echo
echo "   across nodes, through the tunnel (worker -> web):"
curl_vip n2p2 "http://$WEB_VIP/blob" "worker -> web (across nodes)"
echo
say n2p2 "curl -s http://$WEB_VIP/"
pod n2p2 curl -sS --max-time 10 "http://$WEB_VIP/" | indent

# ---------------------------------------------------------------------------
bench() {	# bench POD WHAT: redis-benchmark to the redis VIP, its req/s lines
	say "$1" "redis-benchmark -h $REDIS_VIP -p 6379 -n 2000 -c 10 -q -t set,get"
	pod "$1" redis-benchmark -h "$REDIS_VIP" -p 6379 -n 2000 -c 10 -q -t set,get |
		tr '\r' '\n' | grep 'requests per second' >"$TMPD/bench"
	indent <"$TMPD/bench"
	result "redis-benchmark $2" "$(awk '{ printf "%s%s %.0f req/s", sep, $1, $2; sep = ", " }' "$TMPD/bench")"
}
section "7. redis-benchmark through the redis Service VIP" \
	"2000 SETs and 2000 GETs over 10 connections each time, to $REDIS_VIP:6379." \
	"worker is on redis's node (spliced by sk_msg); frontend is on node1" \
	"(each of its 10 connections is a stream in the node1 -> node2 tunnel)."
echo "   same node (worker -> redis):"
bench n2p2 "worker -> redis (same node)"
echo
echo "   across nodes, through the tunnel (frontend -> redis):"
bench n1p2 "frontend -> redis (across nodes)"

# ---------------------------------------------------------------------------
section "8. A denied connection" \
	"AuthorizationPolicy web-admin-port denies frontend and worker on web's" \
	"port 9090 (where a server does listen). frontend is on web's node, so" \
	"the kernel refuses it in connect(): EPERM, no packet is sent. worker is on" \
	"node2: node1's meshd sees worker's certificate, answers the CONNECT with" \
	"401, and worker's connection is reset."
denied() {	# denied POD WHAT: curl web's admin port, the lines that say how it ended
	local rc=0
	say "$1" "curl -v http://$IP_n1p1:9090/"
	pod "$1" curl -sS -v --max-time 5 "http://$IP_n1p1:9090/" >"$TMPD/denied" 2>&1 || rc=$?
	grep -E '^\* (Trying|Connected|Immediate|Recv)|^curl:|^< HTTP' "$TMPD/denied" | indent || true
	case "$rc" in
	0) result "curl $2" "NOT DENIED: $(grep -m1 '^< HTTP' "$TMPD/denied" | tr -d '\r')" ;;
	*) result "curl $2" "denied: $(grep -m1 -oE 'Operation not permitted|Connection reset by peer|curl: .*' "$TMPD/denied")" ;;
	esac
}
echo "   same node (frontend -> web:9090):"
denied n1p2 "frontend -> web:9090 (same node)"
echo
echo "   across nodes (worker -> web:9090):"
denied n2p2 "worker -> web:9090 (across nodes)"
echo
echo "   node1's meshd says:"
grep -E '401|denied' "$LOGDIR"/meshd-n1.*.log | tail -n 2 | indent || true
echo
echo "   what node1's kernel enforces for web, for sources on its node:"
printf '%s[node1]$ meshctl policy %s/web -o json%s\n' "$G" "$NS" "$R"
meshctl 1 policy "$NS/web" -o json | "$PY" -c '
import json, sys
for w in json.load(sys.stdin):
    for s in w["sources"]:
        print(("   %-14s port %-4s %-32s %s" % (s["source"], s["port"] or "*", s["reason"],
                                               s["policy"] or "")).rstrip())'

# ---------------------------------------------------------------------------
section "9. Live connections" \
	"Two redis-cli sessions held open, each sending PING every 0.2 s." \
	"worker -> redis on node2 is accelerated: both ends of the spliced pair" \
	"have a record with their bytes. frontend -> redis crosses nodes: node1" \
	"shows frontend's end, captured into its meshd's port 15001; node2 shows" \
	"redis's end of the connection its meshd opened from inside the pod." \
	"meshd counts the bytes of tunnelled legs itself: their records are read" \
	"when they close."
for p in n2p2 n1p2; do
	printf '%s[pod %s: %s]$ redis-cli -h %s -r 200 -i 0.2 ping &%s\n' "$G" "$p" "${ROLE[$p]}" "$REDIS_VIP" "$R"
	podbg "$p" redis-cli -h "$REDIS_VIP" -r 200 -i 0.2 ping >"$LOGDIR/cli-$p.log" 2>&1
done
CLIS=("${BGPIDS[@]: -2}")
# until both sessions said PONG twice
for _ in $(seq 100); do
	[ "$(cat "$LOGDIR"/cli-*.log 2>/dev/null | grep -c PONG)" -ge 4 ] && break
	sleep 0.05
done
for n in 1 2; do
	echo
	mctl "$n" conns
done
kill "${CLIS[@]}" 2>/dev/null || true
wait "${CLIS[@]}" 2>/dev/null || true

# ---------------------------------------------------------------------------
section "10. Services and counters" \
	"What connect() load balances, read back from node1's pinned maps; then" \
	"node1's data-path counters, the per-pod packet counters TC keeps on the" \
	"veths (little for spliced traffic: it never crosses them) and the" \
	"tunnel's counters."
mctl 1 services
echo
mctl 1 stats

# ---------------------------------------------------------------------------
section "11. Prometheus metrics" \
	"meshd serves Istio's standard TCP metrics (same names and labels, so" \
	"Istio dashboards work) and its own skmesh_* ones on port 15020 in the" \
	"node's namespace. An excerpt of node1's, each istio_* sample shown with" \
	"6 of its labels (... stands for the others):"
printf '%s[node1]$ curl -s http://127.0.0.1:15020/metrics%s\n' "$G" "$R"
if onnode 1 curl -sf --max-time 3 http://127.0.0.1:15020/metrics >"$TMPD/metrics" 2>/dev/null; then
	"$PY" - "$TMPD/metrics" <<'PYEOF'
import re, sys
lines = [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
keep = ("reporter", "source_workload", "destination_workload", "destination_service_name",
        "connection_security_policy", "response_flags")
def short(l):
    m = re.match(r'(\w+)\{(.*)\} (\S+)$', l)
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
    shown = ",".join('%s="%s"' % (k, labels[k]) for k in keep if k in labels)
    return "%s{%s,...} %s" % (m.group(1), shown, m.group(3))
def lab(l, k):
    m = re.search(r'%s="([^"]*)"' % k, l)
    return m and m.group(1)
sent = [l for l in lines if l.startswith("istio_tcp_sent_bytes_total{")
        and lab(l, "source_workload") != lab(l, "destination_workload")]  # not web's own probes
for l in sent[:5]:
    print("   " + short(l))
for l in lines:
    if re.match(r"skmesh_(connections_closed_total|policy_denials_total|sk_msg_redirected_bytes_total|tunnel_conns_open|ready)\b", l) \
            and not l.endswith(" 0"):
        print("   " + l)
print("   (%d samples in all)" % len(lines))
PYEOF
else
	die "node1's meshd does not answer on 127.0.0.1:15020/metrics (see its log above)"
fi

# ---------------------------------------------------------------------------
section "Summary" \
	"What ran and how it ended; then what both nodes counted, as" \
	"meshctl stats -o json reads it from the kernel and meshd."
cat "$TMPD/results"
echo
for n in 1 2; do meshctl "$n" stats -o json >"$TMPD/stats$n.json"; done
"$PY" - "$TMPD/stats1.json" "$TMPD/stats2.json" <<'PYEOF'
import json, sys
st = [json.load(open(f)) for f in sys.argv[1:]]
c = [s["counters"] for s in st]
t = [s.get("tunnel") or {} for s in st]
tot = lambda d, k: sum(x.get(k, 0) for x in d)
row = "   %-28s %s"
print(row % ("load balanced at connect():", "%d connects to a Service VIP" % tot(c, "lb_connect")))
print(row % ("accelerated (sk_msg):", "%d sockets spliced to their peer (%d same-node connections), "
             "%.2f MiB moved socket to socket" % (tot(c, "sock_insert"), tot(c, "sock_insert") // 2,
                                                  tot(c, "msg_redirect_bytes") / 1048576)))
print(row % ("tunnelled (HBONE, mTLS):", "%d streams opened, %d accepted, %.2f MiB sent to peers"
             % (tot(t, "out_streams_ok"), tot(t, "in_streams_ok"), tot(t, "bytes_to_peers") / 1048576)))
print(row % ("denied:", "%d in the kernel (EPERM at connect), %d by the tunnel (401)"
             % (tot(c, "policy_deny"), tot(t, "in_denied"))))
print(row % ("connections seen:", "%d opened, %d closed" % (tot(c, "conn_open"), tot(c, "conn_close"))))
PYEOF
echo "   what the tests prove: tests/e2e/*.py (run: sudo tests/run e2e)"
