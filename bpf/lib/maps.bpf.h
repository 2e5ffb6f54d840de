/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the data path. All are pinned by name under the pin root so
 * the data path keeps working while meshd restarts; meshd reuses them.
 * Hash maps are not preallocated: sized for large clusters, they would
 * otherwise cost ~100 MB and most of meshd's start-up time on every node.
 */
#ifndef SKM_MAPS_BPF_H
#define SKM_MAPS_BPF_H

#include "lib/common.bpf.h"
#include "lib/stats.bpf.h"

/* (vip, port, proto) -> live backend set of a service */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_SERVICES);
	__type(key, struct skm_svc_key);
	__type(value, struct skm_svc_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_services SEC(".maps");

/* (set_id, slot) -> backend; weights are slot counts */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_BACKEND_SLOTS);
	__type(key, struct skm_be_key);
	__type(value, struct skm_be_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_backends SEC(".maps");

/* workload IP -> identity and locality */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_WORKLOADS);
	__type(key, __u32);
	__type(value, struct skm_wl_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_workloads SEC(".maps");

/* socket cookie -> VIP the app dialled and the backend chosen */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKM_MAX_CONNS);
	__type(key, __u64);
	__type(value, struct skm_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_sock_vip SEC(".maps");

/* 4-tuple -> accelerated socket; sk_msg redirects into it */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SKM_MAX_SOCKS);
	__uint(key_size, sizeof(struct skm_sock_key));
	__uint(value_size, sizeof(__u32));
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_sock_hash SEC(".maps");

/* 4-tuple -> socket cookie of an accelerated socket whose peer is not
 * established yet (see conn_pair) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_SOCKS);
	__type(key, struct skm_sock_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_socks SEC(".maps");

/* socket cookie -> live connection record (what meshctl conns shows) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_CONNS);
	__type(key, __u64);
	__type(value, struct skm_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_conns SEC(".maps");

/* closed connections, read by meshd */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SKM_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_events SEC(".maps");


/* ifindex of a pod-facing veth -> its packet/byte counters */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SKM_MAX_DEVS);
	__type(key, __u32);
	__type(value, struct skm_dev_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_dev_stats SEC(".maps");

/* ifindex of a pod-facing veth -> workload behind it (meshctl, cleanup) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_DEVS);
	__type(key, __u32);
	__type(value, struct skm_dev_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_devs SEC(".maps");

/* (kind, id) -> names, for meshctl only */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_NAMES);
	__type(key, struct skm_name_key);
	__type(value, struct skm_name_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_names SEC(".maps");

/* netns cookie -> the local pod in it (wl_id, ip) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_WORKLOADS);
	__type(key, __u64);
	__type(value, struct skm_netns_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_netns SEC(".maps");

/* pod socket's local ip:port -> where its captured connection goes, for
 * meshd's outbound listener. LRU: an entry whose meshd end never closes
 * (nothing marked accepted it) must not stay forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKM_MAX_OUTBOUND);
	__type(key, struct skm_outbound_key);
	__type(value, struct skm_outbound_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_outbound SEC(".maps");

/* meshd's connections to a pod's own address (its upstream legs on the
 * destination node), by 4-tuple as meshd's socket sees it: the pod's end
 * finds its peer here and knows it was reached through the tunnel. Taken
 * out by that end; LRU for a leg whose other end never came. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKM_MAX_OUTBOUND);
	__type(key, struct skm_sock_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_meshd_legs SEC(".maps");

/* (source workload, policy set, port) -> same-node verdict */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_VERDICTS);
	__type(key, struct skm_verdict_key);
	__type(value, struct skm_verdict);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_verdicts SEC(".maps");

/* (policy set, port, source prefix) -> plaintext verdict */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SKM_MAX_PLAIN);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct skm_plain_key);
	__type(value, struct skm_verdict);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_plain SEC(".maps");

/* key 0 -> what meshd tells the programs (struct skm_config) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct skm_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_config SEC(".maps");

/* socket -> made by meshd's cgroup (cloned to the sockets it accepts) */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct skm_owned);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_owned SEC(".maps");

/* local pod (wl_id, 0: no pod) -> its use of skm_conns and skm_events */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SKM_MAX_WORKLOADS + 1);
	__type(key, __u32);
	__type(value, struct skm_pod_share);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_pod_share SEC(".maps");

static __always_inline struct skm_config *config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&skm_config, &zero);
}

#endif /* SKM_MAPS_BPF_H */
