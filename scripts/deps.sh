#!/usr/bin/env bash
# SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
# Installs what skmesh needs to build, test and run its demo on Debian 12,
# and mounts bpffs when missing. Safe to run again.
set -euo pipefail

# --no-mount: packages only (image builds, where bpffs and cgroups are the
# host's business).
mount_checks=1
[ "${1:-}" = "--no-mount" ] && mount_checks=0

PKGS=(
	make gcc libc6-dev pkg-config clang llvm bpftool libclang-rt-dev
	libbpf-dev libelf-dev zlib1g-dev libssl-dev
	libnl-3-dev libnl-route-3-dev libyaml-dev libjansson-dev libcmocka-dev
	libnghttp2-dev libcurl4-openssl-dev
	iproute2 util-linux procps python3 python3-h2 iperf3 curl openssl
	stunnel4 socat nghttp2-client nghttp2-proxy tcpdump iptables
	libmicrohttpd-dev redis-server redis-tools prometheus
	containernetworking-plugins
	jq python3-yaml
	protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev python3-grpcio python3-grpc-tools
)

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: run as root (sudo make ...): installing packages and mounting bpffs need it" >&2
	exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "$mount_checks" = 1 ] || exit 0

if ! awk '$3 == "bpf" && $2 == "/sys/fs/bpf" { found = 1 } END { exit !found }' /proc/self/mounts; then
	mkdir -p /sys/fs/bpf
	mount -t bpf bpf /sys/fs/bpf
	echo "deps: mounted bpffs at /sys/fs/bpf"
fi

if ! awk '$3 == "cgroup2" { found = 1 } END { exit !found }' /proc/self/mounts; then
	echo "deps: no cgroup v2 mount found in /proc/self/mounts; skmesh attaches to cgroup v2" >&2
	exit 1
fi

if [ ! -r /sys/kernel/btf/vmlinux ]; then
	echo "deps: /sys/kernel/btf/vmlinux is missing: the kernel needs CONFIG_DEBUG_INFO_BTF" >&2
	exit 1
fi
