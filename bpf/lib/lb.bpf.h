/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level service load balancing: a connect() to VIP:port is rewritten
 * to one backend before any packet exists, so there is no per-packet NAT and
 * no conntrack entry. The choice is remembered by socket cookie
 * (skm_sock_vip, written by connect4 once capture has had its say) so
 * getpeername()/recvmsg() can give the app the VIP back.
 */
#ifndef SKM_LB_BPF_H
#define SKM_LB_BPF_H

#include "lib/maps.bpf.h"

enum lb_verdict {
	LB_NOT_SERVICE = 0,	/* not a VIP: leave the address alone */
	LB_REWRITTEN,		/* ctx now points at a backend */
	LB_NO_BACKEND,		/* VIP without backends: refuse */
};

/* Picks a backend of the service at ctx's destination, rewrites ctx and
 * fills OD (LB_REWRITTEN only) for the caller to store. A set may be
 * swapped between reading the service and reading its slot (meshd deletes
 * the old set after switching): reading the service again then finds the
 * new set. */
static __always_inline enum lb_verdict lb4_connect(struct bpf_sock_addr *ctx,
						   struct skm_orig_dst *od)
{
	struct skm_svc_key key = {
		.vip = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	struct skm_be_key bkey;
	struct skm_svc_val *svc;
	struct skm_be_val *be = NULL;
	int i;

	for (i = 0; i < 2; i++) {
		svc = bpf_map_lookup_elem(&skm_services, &key);
		if (!svc)
			return LB_NOT_SERVICE;
		if (svc->nslots == 0)
			return LB_NO_BACKEND;
		bkey.set_id = svc->set_id;
		bkey.slot = bpf_get_prandom_u32() % svc->nslots;
		be = bpf_map_lookup_elem(&skm_backends, &bkey);
		if (be)
			break;
		stat_inc(SKM_STAT_LB_MISSING_SLOT);
	}
	if (!be || !svc)
		return LB_NO_BACKEND;

	od->vip = key.vip;
	od->vport = key.port;
	od->be_ip = od->dst_ip = be->ip;
	od->be_port = od->dst_port = be->port;
	od->svc_id = svc->svc_id;

	ctx->user_ip4 = be->ip;
	ctx->user_port = be->port;
	return LB_REWRITTEN;
}

/* Gives the app what it dialled back (the VIP, or a captured socket's
 * original destination) where the socket is still connected to the
 * address connect4 chose. */
static __always_inline void lb4_reverse(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct skm_orig_dst *od = bpf_map_lookup_elem(&skm_sock_vip, &cookie);

	if (od && ctx->user_ip4 == od->be_ip &&
	    (__u16)ctx->user_port == od->be_port) {
		ctx->user_ip4 = od->vip;
		ctx->user_port = od->vport;
	}
}

#endif /* SKM_LB_BPF_H */
