/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The data path's counters (index enum skm_stat), shared by every BPF
 * object of skmesh through the pin: the object loaded second finds it
 * pinned by name and uses the same map.
 */
#ifndef SKM_STATS_BPF_H
#define SKM_STATS_BPF_H

#include "lib/common.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKM_STAT__MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skm_stats SEC(".maps");

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&skm_stats, &idx);

	if (v)
		*v += n;	/* per-CPU slot: no atomics needed */
}

#define stat_inc(idx) stat_add(idx, 1)

#endif /* SKM_STATS_BPF_H */
