#!/usr/bin/env bash
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#
# make demo: skmesh on one machine.
#
# Builds two "nodes" with two "pods" each (network namespaces, a cgroup per
# pod: tests/lib/topo.py), starts one meshd per node, then shows a Service
# VIP load balanced at connect() time, a same-node transfer that skips the
# TCP/IP stack, the connection table, the counters and the per-connection
# access log. Everything it made is removed on exit, on error and on Ctrl-C.
#
# Needs root and a build (make). SKM_BUILD overrides the build folder.

set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${SKM_BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
PY=${PYTHON:-python3}
TOPO=("$PY" "$PWD/tests/lib/topo.py")
PODTOOL=$PWD/tests/lib/podtool.py
VIP=10.96.0.10

if [ -t 1 ]; then B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' R=$'\e[0m'; else B='' D='' G='' R=''; fi

section() {		# section TITLE WHY...
	printf '\n%s== %s%s\n' "$B" "$1" "$R"
	shift
	local l
	for l in "$@"; do printf '%s   %s%s\n' "$D" "$l" "$R"; done
	echo
}
die() { echo "demo: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo make demo): it creates namespaces, cgroups and BPF programs"
for b in meshd meshctl; do
	[ -x "$BUILD/$b" ] || die "$BUILD/$b is missing: run make first"
done
command -v curl >/dev/null || die "curl is missing (make deps installs it)"

RID=''
TMPD=$(mktemp -d /tmp/skmesh-demo.XXXXXX)
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	exec 3>&- 4>&- 2>/dev/null || true
	disown -a	# their end is expected: no "Killed" notices from bash
	if [ -n "$RID" ]; then
		section "Clean up" \
			"Stops every process of the run, runs meshd --cleanup (detach the" \
			"programs, unpin the maps), removes namespaces, veths, cgroups, pins."
		if "${TOPO[@]}" down --id "$RID"; then
			echo "   removed everything of run $RID"
		else
			echo "   could not remove everything: run '${TOPO[*]} gc --all'" >&2
			rc=1
		fi
	fi
	rm -rf "$TMPD"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
section "1. The topology" \
	"A node is a network namespace running one meshd; a pod is a namespace" \
	"wired to its node by a veth pair, its processes in a cgroup under the" \
	"node's cgroup. meshd attaches its programs to its node's cgroup only."

RID=$("${TOPO[@]}" up --nodes 2 --pods 2 --owner-pid $$)
"${TOPO[@]}" show --id "$RID" >"$TMPD/topo.json"

# names and addresses as shell variables: LOGDIR, PIN1, IP_n1p1, VETH_n1p1...
"$PY" - "$TMPD/topo.json" >"$TMPD/vars.sh" <<'PYEOF'
import json, shlex, sys
t = json.load(open(sys.argv[1]))
print("LOGDIR=%s" % shlex.quote(t["logdir"]))
for n in t["nodes"]:
    print("PIN%d=%s" % (n["node"], shlex.quote(n["pin_dir"])))
for p in t["pods"]:
    print("IP_%s=%s VETH_%s=%s NETNS_%s=%s CG_%s=%s" % (p["name"], p["ip"], p["name"],
          p["host_veth"], p["name"], shlex.quote(p["netns_path"]), p["name"],
          shlex.quote(p["cgroup"])))
for n in t["nodes"]:
    print("NODENS%d=%s" % (n["node"], shlex.quote(n["netns_path"])))
PYEOF
# shellcheck disable=SC1091
. "$TMPD/vars.sh"

"$PY" - "$TMPD/topo.json" <<'PYEOF'
import json, sys
t = json.load(open(sys.argv[1]))
print("   run id %s: every namespace, cgroup and pin folder is named skm%s..." % (t["id"], t["id"]))
print()
row = "   %-5s %-6s %-10s %-14s %-12s %s"
print(row % ("POD", "NODE", "IP", "NETNS", "NODE VETH", "CGROUP"))
for p in t["pods"]:
    print(row % (p["name"], "node%d" % p["node"], p["ip"], p["ns"], p["host_veth"], p["cgroup"]))
print()
print("   nodes %s, joined by a bridge in %s"
      % (", ".join("node%d (%s)" % (n["node"], n["ip"]) for n in t["nodes"]), t["fabric_ns"]))
PYEOF

# pod P CMD...: run CMD in pod P: join its cgroup, then enter its network
# namespace (only that one: `ip netns exec` would hide the host's /sys)
POD_SH='echo $$ >"$1/cgroup.procs" && n=$2 && shift 2 && exec nsenter --net="$n" -- "$@"'
pod() { local cg="CG_$1" ns="NETNS_$1"; shift; sh -c "$POD_SH" sh "${!cg}" "${!ns}" "$@"; }
# podbg P CMD...: the same in the background, its pid in $BG; it keeps our
# stdin (bash gives background commands /dev/null unless told: <&0)
podbg() { local cg="CG_$1" ns="NETNS_$1"; shift; sh -c "$POD_SH" sh "${!cg}" "${!ns}" "$@" <&0 & BG=$!; }
inpod() { printf '%s[pod %s]$ %s%s\n' "$G" "$1" "${*:2}" "$R"; pod "$@"; }
# meshctl N ARGS: meshctl on node N's pins; mctl also prints the command
meshctl() {	# in the node's netns, so the pod veths' names resolve
	local pin="PIN$1" ns="NODENS$1"
	shift
	nsenter --net="${!ns}" -- "$BUILD/meshctl" --bpffs "${!pin}" "$@"
}
mctl() { local pin="PIN$1"; printf '%s$ meshctl --bpffs %s %s%s\n' "$G" "${!pin}" "${*:2}" "$R"; meshctl "$@"; }
wait_line() {		# wait_line FILE TEXT: until a tool printed TEXT (5 s)
	local _
	for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
	die "no '$2' in $1 after 5 s"
}

# ---------------------------------------------------------------------------
CFG=$LOGDIR/conf/mesh.yaml
mkdir -p "$LOGDIR/conf"
{
	for p in n1p1 n1p2 n2p1 n2p2; do
		ip=IP_$p netns=NETNS_$p
		cat <<EOF
apiVersion: skmesh.io/v1alpha1
kind: Workload
metadata: {name: $p, namespace: default, labels: {app: $p}}
spec: {ip: ${!ip}, node: node${p:1:1}, serviceAccount: $p, netns: ${!netns}}
---
EOF
	done
	cat <<EOF
apiVersion: skmesh.io/v1alpha1
kind: Service
metadata: {name: web, namespace: default}
spec:
  vip: $VIP
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
  endpoints: [{ip: $IP_n1p1, weight: 1}, {ip: $IP_n1p2, weight: 3}]
EOF
} >"$CFG"
section "2. The config ($CFG)" \
	"Kubernetes-style documents: a Workload per pod, and a Service whose VIP" \
	"$VIP:80 goes to port 8080 of n1p1 (weight 1) and n1p2 (weight 3)." \
	"Both meshds read the same file; --node tells each which pods are its own."
sed 's/^/   /' "$CFG"

# ---------------------------------------------------------------------------
section "3. One meshd per node" \
	"Each loads the BPF programs, pins maps and links under its --bpffs folder," \
	"attaches to its node's cgroup and the pod veths, fills the maps from the" \
	"config, and says 'meshd: ready'."
for n in 1 2; do
	pin=PIN$n
	printf '%s[node%d]$ meshd --config %s --node node%d --cgroup %s --bpffs %s --access-log %s%s\n' \
		"$G" "$n" "$CFG" "$n" ".../skm$RID/n$n" "${!pin}" "$LOGDIR/access-n$n.log" "$R"
	"${TOPO[@]}" meshd --id "$RID" --node "$n" --config "$CFG" >"$TMPD/meshd$n.json"
	"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("   running, pid %s; its log: %s" % (d["pid"], d["log"]))' \
		"$TMPD/meshd$n.json"
done
echo
echo "   What node1's meshd attached and pinned:"
mctl 1 status | sed 's/^/   /'

section "4. Services in the kernel" \
	"What connect() will load balance, read back from the pinned maps."
mctl 1 services | sed 's/^/   /'

# ---------------------------------------------------------------------------
section "5. HTTP to the VIP" \
	"A plain python http.server listens on 8080 in n1p1 and n1p2. curl in a" \
	"pod dials $VIP:80; cgroup/connect4 picks a backend by weight and rewrites" \
	"the destination before the SYN exists (no per-packet NAT); getpeername()" \
	"still answers the VIP, so curl reports $VIP:80."
for p in n1p1 n1p2; do
	mkdir -p "$LOGDIR/www/$p"
	echo "hello from $p" >"$LOGDIR/www/$p/index.html"
	podbg "$p" "$PY" -m http.server 8080 --bind 0.0.0.0 --directory "$LOGDIR/www/$p" \
		</dev/null >"$LOGDIR/http-$p.log" 2>&1
	disown "$BG"	# runs until the clean up
done
for p in n1p1 n1p2; do
	ip=IP_$p
	for _ in $(seq 100); do
		pod n2p2 curl -s -o /dev/null --max-time 1 "http://${!ip}:8080/" && break
		sleep 0.05
	done
done
inpod n2p1 curl -s -w '%{remote_ip}:%{remote_port}\n' "http://$VIP/" | sed 's/^/   /'
echo "   (the page, then where curl believes it is connected: the VIP)"
echo
for client in n2p1 n1p1; do
	echo "   40 requests from $client (node${client:1:1}) to http://$VIP/:"
	for _ in $(seq 40); do pod "$client" curl -s --max-time 2 "http://$VIP/"; done |
		sort | uniq -c | sed 's/^/     /'
done
echo "   (weights 1:3, so about 10 and 30 each time)"

# ---------------------------------------------------------------------------
section "6. Same-node bulk transfer" \
	"200 MiB from n1p1 to n1p2. Both are meshed pods of node1, so sockops puts" \
	"the two sockets in a SOCKHASH and sk_msg moves each write straight into" \
	"the peer socket: the payload never crosses the veths. Compare the veth" \
	"counters with the bytes sent."
veth_bytes() {
	ip -n "skm$RID-n1" -s -j link show dev "$1" |
		"$PY" -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["rx"]["bytes"]+s["tx"]["bytes"])'
}
redirected() {
	meshctl 1 stats -o json |
		"$PY" -c 'import json,sys; print(json.load(sys.stdin)["counters"]["msg_redirect_bytes"])'
}
v0=$(($(veth_bytes "$VETH_n1p1") + $(veth_bytes "$VETH_n1p2")))
r0=$(redirected)
podbg n1p2 "$PY" "$PODTOOL" sink --port 9000 --count-conns 1 --timeout 60 </dev/null >"$LOGDIR/sink.out"
sink=$BG
wait_line "$LOGDIR/sink.out" listening
printf '%s[pod n1p2]$ podtool.py sink --port 9000%s\n' "$G" "$R"
printf '%s[pod n1p1]$ podtool.py send --to %s:9000 --bytes %d%s\n' "$G" "$IP_n1p2" $((200 << 20)) "$R"
pod n1p1 "$PY" "$PODTOOL" send --to "$IP_n1p2:9000" --bytes $((200 << 20)) --seed 1 >"$LOGDIR/send.out"
wait "$sink" || true
v1=$(($(veth_bytes "$VETH_n1p1") + $(veth_bytes "$VETH_n1p2")))
r1=$(redirected)
"$PY" - "$LOGDIR/send.out" "$LOGDIR/sink.out" "$((v1 - v0))" "$((r1 - r0))" <<'PYEOF'
import json, sys
send = json.loads(open(sys.argv[1]).read().splitlines()[-1])
sink = [json.loads(l) for l in open(sys.argv[2]) if "sha256" in l][-1]
secs = send["elapsed_s"]
print("   sent %d bytes, n1p2 received %d: sha256 %s" % (send["bytes"], sink["bytes"],
      "identical" if send["sha256"] == sink["sha256"] else "DIFFERENT"))
print("   %.2f GB/s, Python at both ends (the apps are the limit, not the path)"
      % (send["bytes"] / secs / 1e9))
print("   redirected by sk_msg: %d bytes; carried by the two veths: %s bytes (handshake only)"
      % (int(sys.argv[4]), sys.argv[3]))
PYEOF

# ---------------------------------------------------------------------------
section "7. Live connections" \
	"skm_conns, kept by sockops and sk_msg, while two connections are held:" \
	"n1p1 -> VIP (a backend on node1: accelerated, each end has a record)" \
	"and n2p1 -> n1p2 across nodes (passthrough: counted from TCP's own" \
	"counters, the client end on node2, the server end on node1)."
podbg n1p2 "$PY" "$PODTOOL" echo --port 9001 --timeout 60 </dev/null >"$LOGDIR/echo.out"
disown "$BG"
wait_line "$LOGDIR/echo.out" listening
# each session reads its commands from a fifo we hold open on fd 3 / 4
mkfifo "$TMPD/ctl1" "$TMPD/ctl2"
exec 3<>"$TMPD/ctl1" 4<>"$TMPD/ctl2"
podbg n1p1 "$PY" "$PODTOOL" session --to "$VIP:80" --io-timeout 30 \
	<"$TMPD/ctl1" >"$LOGDIR/s1.out" 3>&- 4>&-
s1=$BG
podbg n2p1 "$PY" "$PODTOOL" session --to "$IP_n1p2:9001" --io-timeout 30 \
	<"$TMPD/ctl2" >"$LOGDIR/s2.out" 3>&- 4>&-
s2=$BG
echo "xfer 5000" >&4
wait_line "$LOGDIR/s1.out" connected
wait_line "$LOGDIR/s2.out" '"xfer"'
echo "   node1:"
mctl 1 conns | sed 's/^/   /'
echo
echo "   node2:"
mctl 2 conns | sed 's/^/   /'
echo close >&3
echo close >&4
exec 3>&- 4>&-
wait "$s1" "$s2" || true

# ---------------------------------------------------------------------------
section "8. Counters" \
	"Kernel counters of node1: connects load balanced, sockets accelerated," \
	"bytes redirected by sk_msg; and what TC counted on each pod's veth" \
	"(little: the accelerated bytes never reach it)."
mctl 1 stats | sed 's/^/   /'

section "9. Access log" \
	"meshd writes one JSON line per closed socket (client and server side)" \
	"from ring-buffer events: bytes each way, srtt, retransmits, path." \
	"The last lines of node1's log ($LOGDIR/access-n1.log):"
sleep 0.3
tail -n 6 "$LOGDIR/access-n1.log" | "$PY" -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l)
    print("   %-6s %-20s -> %-20s dialled %-20s sent %8d  received %8d  srtt %4d us  %s"
          % (e["role"], e["src"], e["dst"], e["orig_dst"], e["bytes_sent"],
             e["bytes_received"], e["srtt_us"], e["path"]))'
echo
echo "   one line as written:"
tail -n 1 "$LOGDIR/access-n1.log" | sed 's/^/   /'

# ---------------------------------------------------------------------------
section "Summary"
meshctl 1 stats -o json | "$PY" -c '
import json, sys
c = json.load(sys.stdin)["counters"]
print("   node1: %d connects load balanced to a backend, %d refused for lack of one"
      % (c["lb_connect"], c["lb_no_backend"]))
print("   node1: %d sockets accelerated; %d MiB moved socket to socket by sk_msg"
      % (c["sock_insert"], c["msg_redirect_bytes"] >> 20))
print("   node1: %d connections opened, %d closed" % (c["conn_open"], c["conn_close"]))'
echo "   access log: $(wc -l <"$LOGDIR/access-n1.log") close events on node1, $(wc -l <"$LOGDIR/access-n2.log") on node2"
echo "   what the tests prove: tests/e2e/*.py (run: sudo tests/run e2e)"
