/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Capture for meshd's tunnel (ztunnel's in-pod mode). A meshed local pod's
 * connect() to a meshed workload on another node is sent, after service
 * load balancing, to <its own pod ip>:SKM_PORT_OUTBOUND, where meshd
 * listens inside the pod's network namespace; the original destination
 * travels by socket cookie (skm_sock_vip) and, once the source port is
 * known, by source address (skm_outbound) to meshd's accept().
 *
 * meshd's own sockets carry SO_MARK SKM_MESHD_MARK and are never balanced,
 * captured or judged: meshd runs inside the attached cgroup and dials the
 * real destinations itself.
 */
#ifndef SKM_CAPTURE_BPF_H
#define SKM_CAPTURE_BPF_H

#include "lib/maps.bpf.h"

/* 1 when SK was made by a task of meshd's cgroup (or accepted by such a
 * socket): see skm_owned. */
static __always_inline int is_owned_sk(struct bpf_sock *sk)
{
	return sk && bpf_sk_storage_get(&skm_owned, sk, 0, 0);
}

/* SKM_MESHD_MARK for meshd's own socket, SKM_UPSTREAM_MARK for its
 * upstream socket to a local app (the active end), 0 for any other: the
 * mark, and made by meshd (a pod can set a mark, not the cgroup its
 * sockets are made in). */
static __always_inline __u32 meshd_sk_mark(struct bpf_sock *sk)
{
	__u32 mark;

	if (!sk)
		return 0;
	mark = sk->mark;
	if (mark != SKM_MESHD_MARK && mark != SKM_UPSTREAM_MARK)
		return 0;
	return is_owned_sk(sk) ? mark : 0;
}

/* The app's end of meshd's upstream leg (passive: accepted sockets take
 * the SYN's mark in meshed pods). Only a socket of the pod's own network
 * namespace can send a SYN with a mark (marks are cleared between
 * namespaces), so a forged one only relabels the pod's own loopback
 * connections. */
static __always_inline int is_upstream_peer_sk(struct bpf_sock *sk)
{
	return sk && sk->mark == SKM_UPSTREAM_MARK;
}

static __always_inline int is_tunnel_port(__u16 port_be)
{
	return port_be == bpf_htons(SKM_PORT_OUTBOUND) ||
	       port_be == bpf_htons(SKM_PORT_INBOUND_PLAIN) ||
	       port_be == bpf_htons(SKM_PORT_HBONE);
}

/* 1 when meshd listens on IP:SKM_PORT_OUTBOUND in the network namespace
 * of ctx's socket (a listener carrying meshd's mark). */
static __always_inline int outbound_listening(struct bpf_sock_addr *ctx,
					      __u32 ip)
{
	struct bpf_sock_tuple t = {
		.ipv4 = { .daddr = ip, .dport = bpf_htons(SKM_PORT_OUTBOUND) },
	};
	struct bpf_sock *sk;
	int ok;

	/* No source port: only a listener can match. */
	sk = bpf_sk_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	ok = sk->state == BPF_TCP_LISTEN && sk->mark == SKM_MESHD_MARK;
	bpf_sk_release(sk);
	return ok;
}

/* 1 when ctx's TCP connect to IP:PORT (network order, after load
 * balancing; DST is the workload there) is captured: ctx then points at
 * <source pod ip>:SKM_PORT_OUTBOUND and OD holds the original
 * destination. OD comes in filled by load balancing when the app dialled
 * a VIP, zeroed otherwise. The source must be a pod known by its netns (a
 * host process has no pod address to go through) in which meshd listens
 * on the outbound port: without meshd's tunnel (not running, restarting,
 * not enrolled in that pod) the connection goes out as plaintext, which
 * the destination's TC judges (PeerAuthentication STRICT drops it), rather
 * than into a port nobody answers. */
static __always_inline int capture4(struct bpf_sock_addr *ctx,
				    const struct skm_wl_val *dst,
				    __u32 ip, __u16 port,
				    struct skm_orig_dst *od)
{
	struct skm_netns_val *src;
	__u64 netns;

	if ((dst->flags & (SKM_WL_MESHED | SKM_WL_LOCAL)) != SKM_WL_MESHED ||
	    is_tunnel_port(port))
		return 0;
	netns = bpf_get_netns_cookie(ctx);
	src = bpf_map_lookup_elem(&skm_netns, &netns);
	if (!src)
		return 0;
	if (!outbound_listening(ctx, src->ip)) {
		stat_inc(SKM_STAT_CAPTURE_NO_LISTENER);
		return 0;
	}
	if (!od->svc_id) {
		od->vip = ip;
		od->vport = port;
	}
	od->dst_ip = ip;
	od->dst_port = port;
	od->be_ip = src->ip;
	od->be_port = bpf_htons(SKM_PORT_OUTBOUND);
	od->flags = SKM_OD_CAPTURED;
	od->src_wl_id = src->wl_id;

	ctx->user_ip4 = src->ip;
	ctx->user_port = bpf_htons(SKM_PORT_OUTBOUND);
	return 1;
}

/* A captured socket is established: its source address is now known and
 * meshd can be told where the connection goes. Runs before meshd can
 * accept it (the handshake's last ACK is sent after this callback). */
static __always_inline void outbound_open(const struct skm_sock_key *t,
					  const struct skm_orig_dst *od,
					  __u64 cookie)
{
	struct skm_outbound_key k = { .ip = t->sip, .port = t->sport };
	struct skm_outbound_val v = {
		.dst_ip = od->dst_ip,
		.dst_port = od->dst_port,
		.vport = od->vport,
		.vip = od->vip,
		.src_wl_id = od->src_wl_id,
		.svc_id = od->svc_id,
		.cookie = cookie,
	};

	bpf_map_update_elem(&skm_outbound, &k, &v, BPF_ANY);
}

/* A connection to the outbound port that was not captured (the pod
 * dialled it itself): an entry left from an earlier captured connection
 * of the same address must not send it anywhere. */
static __always_inline void outbound_forget(const struct skm_sock_key *t)
{
	struct skm_outbound_key k = { .ip = t->sip, .port = t->sport };

	bpf_map_delete_elem(&skm_outbound, &k);
}

/* meshd's end of a captured leg (local port SKM_PORT_OUTBOUND) closed:
 * meshd has accepted and read the entry, or never will. */
static __always_inline void outbound_close(struct bpf_sock_ops *skops)
{
	struct skm_outbound_key k = {
		.ip = skops->remote_ip4,
		.port = bpf_ntohl(skops->remote_port),
	};

	if (skops->local_port == SKM_PORT_OUTBOUND)
		bpf_map_delete_elem(&skm_outbound, &k);
}

#endif /* SKM_CAPTURE_BPF_H */
