// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Closing the open connections a policy change now denies, as ztunnel
 * closes the ones it carries (agent/revoke.c). meshd puts their sockets'
 * cookies in skm_revoke and reads the TCP iterator skm_iter_revoke inside
 * the network namespace they live in; each one found is aborted
 * (ECONNABORTED for its app, a RST for the peer) and its cookie written
 * out, so meshd knows which it closed.
 *
 * An object of its own, loaded by meshd when first needed:
 * bpf_sock_destroy() came with Linux 6.5, and a kernel without it must
 * still load the data path (skmesh.bpf.c). It shares skm_stats through
 * the pin.
 */
#include "lib/common.bpf.h"
#include "lib/stats.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* cookies of the sockets to close; filled and emptied by meshd around one
 * read of the iterator, not pinned */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKM_MAX_REVOKE);
	__type(key, __u64);
	__type(value, __u8);
} skm_revoke SEC(".maps");

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

SEC("iter/tcp")
int skm_iter_revoke(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	__u64 cookie;

	/* IPv4 only, like every record meshd keeps (reading the family
	 * also gives the object sock_common's full type, which libbpf needs
	 * to match the kfunc's argument against the kernel's). */
	if (!skc || skc->skc_family != AF_INET)
		return 0;
	cookie = bpf_get_socket_cookie(skc);
	if (!bpf_map_lookup_elem(&skm_revoke, &cookie))
		return 0;
	if (bpf_sock_destroy(skc))
		return 0;
	stat_inc(SKM_STAT_POLICY_REVOKED);
	bpf_seq_write(ctx->meta->seq, &cookie, sizeof(cookie));
	return 0;
}
