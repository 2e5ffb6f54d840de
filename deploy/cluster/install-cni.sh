#!/usr/bin/env bash
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#
# install-cni.sh - puts skmesh-cni into the node's CNI chain, or takes it out.
# The meshd DaemonSet (deploy/cluster/20-daemonset.yaml) runs it as its
# init container "install-cni" and, with --uninstall, as meshd's preStop
# hook; docs/operations.md ("Install on a cluster") explains both.
#
#   install-cni.sh [options]               install
#   install-cni.sh --uninstall [options]   take the entry out again
#
# Install:
#  1. Finds the network config the container runtime uses: the first
#     *.conf, *.conflist or *.json file of --conf-dir in byte order of the
#     name, as containerd and CRI-O (libcni) pick it. While there is none
#     (the cluster's network plugin writes it when it starts) it changes
#     nothing, says so, and looks again every second for --wait seconds;
#     then it exits 1 and kubelet runs it again later.
#  2. Refuses (exit 1, nothing changed) a config that is not a .conflist of
#     at least one plugin, or whose cniVersion skmesh-cni does not support
#     (asked with CNI_COMMAND=VERSION).
#  3. Copies skmesh-cni to --bin-dir: a temporary file there, renamed over
#     the old one, so a runtime never runs a half-written binary.
#  4. Appends {"type":"skmesh-cni", "socket": ..., "pendingDir": ...} as the
#     last plugin of that conflist, unless that very entry is already its
#     last plugin (so a second run changes nothing). An skmesh-cni entry
#     elsewhere in the list, or with other settings, is replaced. The
#     entry is inserted as text before the list's closing bracket, so
#     every other byte of the file stays as it was; jq checks that the
#     result is exactly the old document with the entry appended before it
#     is written (to a temporary file in the same folder, then renamed).
#
# A config that is a symbolic link is edited where the link points (the
# temporary file is made beside that file), and stays a link.
#
# Uninstall: removes every skmesh-cni entry from each *.conflist/*.json of
# --conf-dir that has one, undoing the install byte for byte (an entry
# written by other hands is removed with jq, which reformats that file).
# The binary stays: a runtime that read the conflist a moment before may
# still run it, and without the entry nothing does.
#
# Exit status: 0 done (or nothing to do), 1 refused or failed (nothing
# changed), 2 usage error.

set -euo pipefail
shopt -s extglob
export LC_ALL=C			# byte offsets and byte order, not characters

prog=${0##*/}
bin_dir=/host/opt/cni/bin
conf_dir=/host/etc/cni/net.d
plugin=/usr/local/lib/skmesh/skmesh-cni
socket=/var/run/skmesh/cni.sock
pending_dir=/var/run/skmesh/cni-pending
log_file=
ack_timeout_ms=
wait_s=300
uninstall=0
tmp_files=()
MARK='{"type":"skmesh-cni"'	# how every entry this script writes begins
MAX_BYTES=262144		# no network config is anywhere near this
MAX_TRIES=64			# candidate places tried for one insertion or removal

usage() {
	cat <<EOF
usage: $prog [--uninstall] [options]
  --conf-dir DIR        CNI network configs (default $conf_dir)
  --bin-dir DIR         CNI plugin binaries (default $bin_dir)
  --plugin PATH         the skmesh-cni binary to install (default $plugin)
  --socket PATH         meshd's CNI socket, the entry's "socket" (default $socket)
  --pending-dir DIR     the entry's "pendingDir" (default $pending_dir)
  --log-file PATH       the entry's "logFile" (default: none)
  --ack-timeout-ms N    the entry's "ackTimeoutMs", 1..120000 (default: the plugin's, 10000)
  --wait SECONDS        how long to wait for a network config (default $wait_s)
  --uninstall           remove skmesh-cni's entry from every conflist of --conf-dir
EOF
}

say() { printf '%s: %s\n' "$prog" "$*"; }
die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }
usage_error() { printf '%s: %s\n' "$prog" "$*" >&2; usage >&2; exit 2; }

cleanup() { [ "${#tmp_files[@]}" -eq 0 ] || rm -f -- "${tmp_files[@]}"; }
trap cleanup EXIT

while [ $# -gt 0 ]; do
	opt=$1
	case $opt in
	--*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
	--uninstall) uninstall=1; shift; continue ;;
	-h|--help) usage; exit 0 ;;
	--conf-dir|--bin-dir|--plugin|--socket|--pending-dir|--log-file|--ack-timeout-ms|--wait)
		[ $# -ge 2 ] || usage_error "$opt needs a value" ;;
	*) usage_error "unknown option \"$opt\"" ;;
	esac
	case $opt in
	--conf-dir) conf_dir=$2 ;;
	--bin-dir) bin_dir=$2 ;;
	--plugin) plugin=$2 ;;
	--socket) socket=$2 ;;
	--pending-dir) pending_dir=$2 ;;
	--log-file) log_file=$2 ;;
	--ack-timeout-ms) ack_timeout_ms=$2 ;;
	--wait) wait_s=$2 ;;
	esac
	shift 2
done

[[ $wait_s =~ ^[0-9]{1,6}$ ]] || usage_error "--wait \"$wait_s\": expected whole seconds (0..999999)"
if [ -n "$ack_timeout_ms" ]; then
	[[ $ack_timeout_ms =~ ^[1-9][0-9]{0,5}$ ]] && [ "$ack_timeout_ms" -le 120000 ] ||
		usage_error "--ack-timeout-ms \"$ack_timeout_ms\": expected 1..120000 (milliseconds)"
fi
for p in "$socket" "$pending_dir" ${log_file:+"$log_file"}; do
	[[ $p == /* ]] || usage_error "\"$p\": skmesh-cni needs an absolute path"
done
command -v jq >/dev/null || die "jq is missing (the meshd image has it: deploy/Containerfile)"
[ -d "$conf_dir" ] || die "$conf_dir is not a folder (mount the node's /etc/cni/net.d there, or give --conf-dir)"

# --- helpers -----------------------------------------------------------

# new_tmp DIR: sets $tmp to a new temporary file in DIR whose name no
# runtime reads (no .conf/.conflist/.json ending); removed at exit unless
# renamed. (Not in a $(...) subshell, so that the exit trap knows it.)
new_tmp() {
	tmp=$(mktemp -p "$1" .skmesh-cni-XXXXXX.tmp) || die "cannot make a temporary file in $1"
	tmp_files+=("$tmp")
}

# read_file FILE: sets $text to its exact bytes, trailing newlines too
# (results travel in variables, never through $(...), which drops them).
read_file() {
	local size
	size=$(stat -c %s -- "$1") || die "cannot read $1"
	[ "$size" -le "$MAX_BYTES" ] || die "$1: $size bytes; a CNI config is expected under $MAX_BYTES"
	text=$(cat -- "$1" && printf x) || die "cannot read $1"
	text=${text%x}
}

# same_doc TEXT WANTFILE: whether TEXT is one JSON document equal to the
# one in WANTFILE (object keys in any order).
same_doc() {
	printf '%s' "$1" | jq -n -e --slurpfile w "$2" '[inputs] == $w' >/dev/null 2>&1
}

# offsets CHAR TEXT: the byte offset of each CHAR in TEXT, in order.
offsets() {
	local c=$1 s=$2 off=0 p
	while [[ $s == *"$c"* ]]; do
		p=${s%%"$c"*}
		off=$((off + ${#p}))
		printf '%d\n' "$off"
		s=${s:${#p}+1}
		off=$((off + 1))
	done
}

# insert_entry TEXT ENTRY WANTFILE: sets $out to TEXT with ENTRY after the last
# element of an array, as ",<newline><indent>ENTRY" when that array's
# closing bracket is on its own line (the indent of the line before),
# else ",ENTRY"; the first such place (from the end) that jq finds equal
# to WANTFILE wins. Fails when none does.
insert_entry() {
	local text=$1 entry=$2 want=$3 pre=$1 head gap line indent ins cand n=0
	while [[ $pre == *']'* ]] && [ "$n" -lt "$MAX_TRIES" ]; do
		n=$((n + 1))
		pre=${pre%]*}
		head=${pre%%+([[:space:]])}
		[ -n "$head" ] && [ "${head: -1}" != "[" ] || continue
		gap=${pre:${#head}}
		if [[ $gap == *$'\n'* ]]; then
			line=${head##*$'\n'}
			indent=${line%%[![:space:]]*}
			ins=","$'\n'"$indent$entry"
		else
			ins=",$entry"
		fi
		cand=$head$ins${text:${#head}}
		if same_doc "$cand" "$want"; then
			out=$cand
			return 0
		fi
	done
	return 1
}

# remove_entry TEXT WANTFILE: sets $out to TEXT without the entry that begins with
# $MARK and the comma before it, if jq finds the result equal to WANTFILE.
remove_entry() {
	local text=$1 want=$2 pre head start after k n=0 cand
	[[ $text == *"$MARK"* ]] || return 1
	pre=${text%"$MARK"*}
	head=${pre%%+([[:space:]])}
	[ -n "$head" ] && [ "${head: -1}" = "," ] || return 1
	start=$((${#head} - 1))
	after=${text:${#pre}}
	for k in $(offsets '}' "$after"); do
		n=$((n + 1))
		[ "$n" -le "$MAX_TRIES" ] || break
		cand=${text:0:start}${after:k+1}
		if same_doc "$cand" "$want"; then
			out=$cand
			return 0
		fi
	done
	return 1
}

# replace_file FILE OLDTEXT NEWTEXT: writes NEWTEXT to a temporary file
# beside FILE (its mode), flushes it and renames it over FILE, unless FILE
# no longer holds OLDTEXT (someone else wrote it meanwhile: returns 3).
replace_file() {
	local f=$1 t text
	new_tmp "$(dirname -- "$f")"
	t=$tmp
	printf '%s' "$3" >"$t" || die "cannot write $t"
	chmod --reference="$f" -- "$t" || die "cannot set the mode of $t"
	sync -- "$t" || die "cannot flush $t"
	read_file "$f"
	[ "$text" = "$2" ] || return 3
	mv -f -- "$t" "$f" || die "cannot rename $t to $f"
}

# runtime_config: the network config file the runtime uses, if any.
runtime_config() {
	local f
	shopt -s nullglob dotglob
	for f in "$conf_dir"/*.conf "$conf_dir"/*.conflist "$conf_dir"/*.json; do
		[ -f "$f" ] && printf '%s\0' "${f##*/}"
	done | sort -z | { IFS= read -r -d '' f && printf '%s/%s' "$conf_dir" "$f"; } || true
	shopt -u nullglob dotglob
}

# --- uninstall -----------------------------------------------------------

uninstall_from() {
	local f=$1 text want new out
	new_tmp "$conf_dir"
	want=$tmp
	jq -c '.plugins |= map(select(.type != "skmesh-cni"))' "$f" >"$want" ||
		{ say "$f: not a conflist jq can read; left as it is"; return 0; }
	read_file "$f"
	if remove_entry "$text" "$want"; then
		new=$out
	else
		say "$f: the skmesh-cni entry is not as this script writes it; rewriting the file with jq (its formatting changes)"
		new=$(jq --indent 2 '.plugins |= map(select(.type != "skmesh-cni"))' "$f" && printf x) ||
			die "$f: jq failed"
		new=${new%x}
	fi
	replace_file "$f" "$text" "$new" || return $?
	say "removed skmesh-cni from $f"
}

if [ "$uninstall" = 1 ]; then
	found=0
	shopt -s nullglob dotglob
	for f in "$conf_dir"/*.conflist "$conf_dir"/*.json; do
		[ -f "$f" ] || continue
		f=$(readlink -e -- "$f") || continue
		jq -e 'any(.plugins[]?; .type == "skmesh-cni")' "$f" >/dev/null 2>&1 || continue
		found=1
		for try in 1 2 3; do
			rc=0
			uninstall_from "$f" || rc=$?
			[ "$rc" = 3 ] || break
			say "$f changed while it was being rewritten; trying again"
		done
		[ "$rc" = 0 ] || die "$f keeps changing; skmesh-cni's entry left in it"
		# the entry may appear twice when written by other hands
		while jq -e 'any(.plugins[]?; .type == "skmesh-cni")' "$f" >/dev/null 2>&1; do
			uninstall_from "$f" || die "cannot remove skmesh-cni from $f"
		done
	done
	shopt -u nullglob dotglob
	[ "$found" = 1 ] || say "no conflist in $conf_dir names skmesh-cni: nothing to do"
	exit 0
fi

# --- install -------------------------------------------------------------

[ -x "$plugin" ] || die "$plugin is missing or not executable (give the skmesh-cni binary with --plugin)"
[ -d "$bin_dir" ] || die "$bin_dir is not a folder (mount the node's /opt/cni/bin there, or give --bin-dir)"

conf=$(runtime_config)
if [ -z "$conf" ]; then
	say "no network config (*.conf, *.conflist, *.json) in $conf_dir yet: nothing changed;" \
		"the cluster's network plugin writes one when it starts; waiting up to $wait_s s"
	start=$SECONDS
	while [ -z "$conf" ] && [ $((SECONDS - start)) -lt "$wait_s" ]; do
		sleep 1
		conf=$(runtime_config)
		if [ -z "$conf" ] && [ $(((SECONDS - start) % 30)) -eq 0 ]; then
			say "still no network config in $conf_dir after $((SECONDS - start)) s"
		fi
	done
	[ -n "$conf" ] || die "no network config appeared in $conf_dir within $wait_s s: nothing changed" \
		"(is the cluster's network plugin running on this node?)"
fi

case $conf in
*.conflist) ;;
*) die "$conf is the runtime's network config, a single-plugin config: skmesh-cni is chained," \
	"so it needs a .conflist (a {\"cniVersion\", \"name\", \"plugins\": [...]} file" \
	"named *.conflist sorted first in $conf_dir); nothing changed" ;;
esac
# a link is followed: the file it names is edited, the link stays a link
conf=$(readlink -e -- "$conf") || die "cannot resolve $conf; nothing changed"
err=$(jq -e 'type == "object" and (.plugins | type == "array" and length > 0 and all(type == "object"))' \
	"$conf" 2>&1 >/dev/null) ||
	die "$conf is not a conflist with a non-empty \"plugins\" array of objects${err:+ (jq: $err)}; nothing changed"

version=$(jq -r '.cniVersion | strings' "$conf")
supported=$(CNI_COMMAND=VERSION "$plugin" </dev/null | jq -r '.supportedVersions[]') ||
	die "$plugin does not answer CNI_COMMAND=VERSION; nothing changed"
printf '%s\n' "$supported" | grep -qxF -- "${version:-none}" ||
	die "$conf has cniVersion \"$version\"; skmesh-cni supports ${supported//$'\n'/, }; nothing changed"

entry=$(jq -n -c --arg s "$socket" --arg p "$pending_dir" --arg l "$log_file" --arg a "$ack_timeout_ms" \
	'{type: "skmesh-cni", socket: $s, pendingDir: $p}
	 + (if $l != "" then {logFile: $l} else {} end)
	 + (if $a != "" then {ackTimeoutMs: ($a | tonumber)} else {} end)')

# the binary first: an entry must never name a plugin the runtime lacks
target=$bin_dir/skmesh-cni
if cmp -s -- "$plugin" "$target"; then
	say "$target is current"
else
	new_tmp "$bin_dir"
	t=$tmp
	cp -- "$plugin" "$t" || die "cannot copy $plugin to $t"
	chmod 0755 -- "$t" && sync -- "$t" || die "cannot finish $t"
	mv -f -- "$t" "$target" || die "cannot rename $t to $target"
	say "installed $target"
fi

new_tmp "$conf_dir"
want=$tmp
for try in 1 2 3; do
	read_file "$conf"
	if jq -e --argjson e "$entry" '.plugins[-1] == $e and ([.plugins[] | select(.type == "skmesh-cni")] | length) == 1' \
		"$conf" >/dev/null; then
		say "$conf already ends with $entry: unchanged"
		exit 0
	fi
	base=$text
	if jq -e 'any(.plugins[]; .type == "skmesh-cni")' "$conf" >/dev/null; then
		# an older or misplaced entry: out first, then in at the end
		jq -c '.plugins |= map(select(.type != "skmesh-cni"))' "$conf" >"$want"
		remove_entry "$text" "$want" ||
			die "$conf has an skmesh-cni entry not written by this script; run $prog --uninstall first"
		base=$out
		say "$conf: replacing its skmesh-cni entry"
	fi
	jq -c --argjson e "$entry" '.plugins |= map(select(.type != "skmesh-cni")) + [$e]' "$conf" >"$want"
	insert_entry "$base" "$entry" "$want" ||
		die "$conf: found no place to add the entry that keeps the rest of the file; nothing changed"
	new=$out
	rc=0
	replace_file "$conf" "$text" "$new" || rc=$?
	if [ "$rc" = 0 ]; then
		say "added $entry as the last plugin of $conf"
		exit 0
	fi
	say "$conf changed while it was being rewritten; trying again"
done
die "$conf keeps changing; nothing changed"
