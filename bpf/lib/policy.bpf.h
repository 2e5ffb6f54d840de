/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * L4 policy in the kernel. meshd compiles Istio's AuthorizationPolicy and
 * PeerAuthentication per local destination into verdict tables, so a check
 * is two or three hash lookups whatever the number of policies:
 *
 * - same-node connections (cgroup/connect4): the source is the pod whose
 *   netns the connecting socket lives in, with its identity; a deny fails
 *   connect() with EPERM before any packet exists;
 * - every SYN to an enforced pod again at TC egress of its veth: from a
 *   local pod's veth with that pod's identity (the same verdict table),
 *   so what connect4 never saw (DNAT after connect(), a forged mark, raw
 *   packets) is judged too; plaintext from elsewhere with no identity,
 *   only the source address, by LPM;
 * - TC ingress of a pod's veth drops what the pod sends from an address
 *   that is not its own.
 */
#ifndef SKM_POLICY_BPF_H
#define SKM_POLICY_BPF_H

#include "lib/maps.bpf.h"
#include "lib/conn.bpf.h"

#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86DD
#define NEXTHDR_UDP	17
#define NEXTHDR_ICMPV6	58
#define TC_ACT_SHOT	2
#define IP_MF		0x2000
#define IP_OFFSET	0x1fff

#define WL_ENFORCED	(SKM_WL_LOCAL | SKM_WL_POLICY)
#define WL_KNOWN_SRC	(SKM_WL_LOCAL | SKM_WL_MESHED | SKM_WL_NETNS)
#define WL_LOCAL_MESHED	(SKM_WL_LOCAL | SKM_WL_MESHED)

/* Verdict of the port's entry, or of the "other ports" entry. */
static __always_inline struct skm_verdict *
verdict_lookup(struct skm_verdict_key *k, __u16 port)
{
	struct skm_verdict *v;

	k->port = port;
	v = bpf_map_lookup_elem(&skm_verdicts, k);
	if (v)
		return v;
	k->port = 0;
	return bpf_map_lookup_elem(&skm_verdicts, k);
}

/* Tells meshd (access log, metrics) of a connection the policy refused:
 * an event on skm_events shaped as a close, flagged SKM_CONN_DENIED (and
 * FLAGS), from SIP:SPORT to IP:PORT (ports in network order; SPORT 0 when
 * it has none yet) dialled as OD says (NULL: directly), decided by the
 * verdict V (NULL: no entry). */
static __always_inline void policy_deny_event(__u32 sip, __u16 sport, __u32 ip, __u16 port,
					      const struct skm_orig_dst *od,
					      const struct skm_verdict *v, __u32 flags)
{
	struct skm_conn_event *ev;

	/* A flood of refused SYNs must not crowd out the close events
	 * (whose loss costs metrics and log lines): denials only use the
	 * first half of the ring. */
	if (bpf_ringbuf_query(&skm_events, BPF_RB_AVAIL_DATA) > SKM_EVENTS_BYTES / 2) {
		stat_inc(SKM_STAT_DENY_EVENT_SKIPPED);
		return;
	}
	ev = bpf_ringbuf_reserve(&skm_events, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(SKM_STAT_EVENT_DROP);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->end_ns = bpf_ktime_get_ns();
	ev->conn.start_ns = ev->end_ns;
	ev->conn.tuple.sip = sip;
	ev->conn.tuple.sport = bpf_ntohs(sport);
	ev->conn.tuple.dip = ip;
	ev->conn.tuple.dport = bpf_ntohs(port);
	ev->conn.flags = SKM_CONN_ACTIVE | SKM_CONN_DENIED | flags;
	ev->conn.orig_ip = ip;
	ev->conn.orig_port = port;
	ev->reason_id = v ? v->reason_id : 0;
	if (od && od->svc_id) {
		ev->conn.flags |= SKM_CONN_VIA_VIP;
		ev->conn.svc_id = od->svc_id;
		ev->conn.orig_ip = od->vip;
		ev->conn.orig_port = od->vport;
	}
	events_submit(ev);
}

/* 1: the TCP connect may go on; 0: refuse it. DST is the workload at the
 * final destination (after service load balancing), PORT its port in
 * network order; OD what the app dialled. */
static __always_inline int policy_connect4(struct bpf_sock_addr *ctx,
					   const struct skm_wl_val *dst,
					   __u16 port, const struct skm_orig_dst *od)
{
	struct skm_verdict_key k = {};
	struct skm_netns_val *src;
	struct skm_verdict *v;
	__u64 netns;

	if ((dst->flags & WL_ENFORCED) != WL_ENFORCED)
		return 1;
	netns = bpf_get_netns_cookie(ctx);
	src = bpf_map_lookup_elem(&skm_netns, &netns);
	if (!src) {
		/* Not a known pod (a host process, a pod without netns):
		 * its SYN crosses the veth, where TC judges it as
		 * plaintext from its address. */
		stat_inc(SKM_STAT_POLICY_UNKNOWN_SRC);
		return 1;
	}
	k.src_id = src->wl_id;
	k.pol_set = dst->pol_set;
	v = verdict_lookup(&k, bpf_ntohs(port));
	if (v && v->allow) {
		stat_inc(SKM_STAT_POLICY_ALLOW);
		return 1;
	}
	/* No entry means the compiled set is incomplete: fail closed. */
	stat_inc(SKM_STAT_POLICY_DENY);
	policy_deny_event(src->ip, 0, ctx->user_ip4, port, od, v, 0);
	return 0;
}

static __always_inline struct skm_verdict *plain_lookup(struct skm_plain_key *k,
							__u16 port)
{
	struct skm_verdict *v;

	k->port = port;
	v = bpf_map_lookup_elem(&skm_plain, k);
	if (v)
		return v;
	k->port = 0;
	return bpf_map_lookup_elem(&skm_plain, k);
}

/* The verdict for a SYN from a local pod's veth (the device it came in
 * on, which the pod cannot choose) to the enforced destination DST: 1
 * allow, 0 deny, -1 the source is no pod known by its identity (judge it
 * as plaintext). V is set to the deciding entry (NULL: none). */
static __always_inline int policy_from_dev(struct __sk_buff *skb,
					   const struct skm_wl_val *dst,
					   __u16 port, struct skm_verdict **v,
					   __u32 *src_ip)
{
	__u32 ifindex = skb->ingress_ifindex;
	struct skm_verdict_key k = {};
	struct skm_dev_val *dev;
	struct skm_wl_val *srcw;
	__u32 sip;

	dev = bpf_map_lookup_elem(&skm_devs, &ifindex);
	if (!dev)
		return -1;
	sip = dev->wl_ip;
	srcw = bpf_map_lookup_elem(&skm_workloads, &sip);
	if (!srcw || (srcw->flags & WL_KNOWN_SRC) != WL_KNOWN_SRC ||
	    srcw->wl_id != dev->wl_id)
		return -1;
	*src_ip = sip;
	k.src_id = dev->wl_id;
	k.pol_set = dst->pol_set;
	*v = verdict_lookup(&k, bpf_ntohs(port));
	/* No entry means the compiled set is incomplete: fail closed. */
	return *v && (*v)->allow;
}

/* IPv6 to a local pod: policy is IPv4's (Workloads have IPv4 addresses),
 * so what could carry a connection to a pod that policy can deny (TCP, or
 * an extension header that may hide it) is dropped rather than let past
 * it; ICMPv6 (neighbour discovery) and UDP pass. The pod is the one
 * behind this veth (skm_devs). */
static __always_inline int policy_to_pod6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	__u32 ifindex = skb->ifindex;
	struct skm_dev_val *dev;
	struct skm_wl_val *dst;
	__u32 ip;

	dev = bpf_map_lookup_elem(&skm_devs, &ifindex);
	if (!dev)
		return TC_ACT_OK;
	ip = dev->wl_ip;
	dst = bpf_map_lookup_elem(&skm_workloads, &ip);
	if (!dst || (dst->flags & WL_ENFORCED) != WL_ENFORCED)
		return TC_ACT_OK;
	if ((void *)(ip6 + 1) > end) {
		if (bpf_skb_pull_data(skb, sizeof(struct ethhdr) + sizeof(*ip6)))
			goto drop;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		ip6 = data + sizeof(struct ethhdr);
		if ((void *)(ip6 + 1) > end)
			goto drop;
	}
	if (ip6->nexthdr == NEXTHDR_ICMPV6 || ip6->nexthdr == NEXTHDR_UDP)
		return TC_ACT_OK;
drop:
	stat_inc(SKM_STAT_UNPARSED_DROP);
	return TC_ACT_SHOT;
}

/* TC_ACT_OK or TC_ACT_SHOT for a packet going to a local pod. Only the
 * first SYN of a TCP connection is judged: without it there is no
 * connection, and established ones were judged when they began. Every
 * SYN to an enforced pod is judged here, whatever connect4 saw (a
 * destination rewritten after connect() by DNAT, a socket with a forged
 * mark, a raw packet): a SYN from a local pod's veth with that pod's
 * identity (its source address was checked on the way in, see
 * skm_tc_from_pod), anything else as plaintext by its source address.
 * What cannot be judged is dropped when it is TCP to a meshed pod:
 * fragments (only the first carries ports), IP options, headers that are
 * not there. Ports of meshd's tunnel come first: HBONE (SKM_PORT_HBONE)
 * is mTLS that meshd authenticates and judges itself, so it always
 * passes; the outbound capture ports are for the pod itself only (over
 * its loopback, never through this veth), so a SYN to them from outside
 * is dropped. */
static __always_inline int policy_to_pod(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct skm_plain_key k = {};
	struct skm_verdict *v = NULL;
	struct skm_wl_val *dst;
	struct tcphdr *th;
	struct iphdr *iph;
	__u32 saddr, daddr;
	int ok;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return policy_to_pod6(skb);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > end) {
		if (bpf_skb_pull_data(skb, sizeof(*eth) + sizeof(*iph)))
			return TC_ACT_SHOT;	/* not even an IP header */
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		iph = data + sizeof(*eth);
		if ((void *)(iph + 1) > end)
			return TC_ACT_SHOT;
	}
	if (iph->protocol != IPPROTO_TCP)
		return TC_ACT_OK;	/* the mesh carries TCP only */
	daddr = iph->daddr;
	dst = bpf_map_lookup_elem(&skm_workloads, &daddr);
	if (!dst || (dst->flags & WL_LOCAL_MESHED) != WL_LOCAL_MESHED)
		return TC_ACT_OK;
	if (iph->ihl != 5 || (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		goto unparsed;
	th = (void *)(iph + 1);
	if ((void *)(th + 1) > end) {
		if (bpf_skb_pull_data(skb, sizeof(*eth) + sizeof(*iph) + sizeof(*th)))
			goto unparsed;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		iph = data + sizeof(*eth);
		th = (void *)(iph + 1);
		if ((void *)(th + 1) > end)
			goto unparsed;
	}
	if (!th->syn || th->ack)
		return TC_ACT_OK;

	if (th->dest == bpf_htons(SKM_PORT_HBONE)) {
		stat_inc(SKM_STAT_HBONE_SYN);
		return TC_ACT_OK;
	}
	if (th->dest == bpf_htons(SKM_PORT_OUTBOUND) ||
	    th->dest == bpf_htons(SKM_PORT_INBOUND_PLAIN)) {
		stat_inc(SKM_STAT_TUNNEL_PORT_DENY);
		return TC_ACT_SHOT;
	}
	if ((dst->flags & WL_ENFORCED) != WL_ENFORCED)
		return TC_ACT_OK;
	saddr = iph->saddr;
	ok = policy_from_dev(skb, dst, th->dest, &v, &saddr);
	if (ok == 1) {
		stat_inc(SKM_STAT_TC_ALLOW);
		return TC_ACT_OK;
	}
	if (ok == 0) {
		stat_inc(SKM_STAT_TC_DENY);
		policy_deny_event(saddr, th->source, daddr, th->dest, NULL, v,
				  SKM_CONN_TC_JUDGED);
		return TC_ACT_SHOT;
	}

	k.prefixlen = SKM_PLAIN_PREFIX_BASE + 32;
	k.pol_set = bpf_htonl(dst->pol_set);
	__builtin_memcpy(k.src, &saddr, 4);
	v = plain_lookup(&k, th->dest);
	if (v && v->allow) {
		stat_inc(SKM_STAT_PLAIN_ALLOW);
		return TC_ACT_OK;
	}
	stat_inc(SKM_STAT_PLAIN_DENY);
	policy_deny_event(saddr, th->source, daddr, th->dest, NULL, v, SKM_CONN_PLAINTEXT);
	return TC_ACT_SHOT;

unparsed:
	stat_inc(SKM_STAT_UNPARSED_DROP);
	return TC_ACT_SHOT;
}

/* TC_ACT_OK or TC_ACT_SHOT for a packet a local pod sends (TC ingress of
 * its veth's node side): IPv4 whose source is not the pod's own address
 * is dropped, so a source address seen further on is the pod's. The
 * device is the pod's (skm_devs); a device without an entry is no pod's
 * and passes. */
static __always_inline int policy_from_pod(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = skb->ifindex;
	struct skm_dev_val *dev;
	struct iphdr *iph;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	dev = bpf_map_lookup_elem(&skm_devs, &ifindex);
	if (!dev)
		return TC_ACT_OK;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > end) {
		if (bpf_skb_pull_data(skb, sizeof(*eth) + sizeof(*iph)))
			goto spoofed;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
		iph = data + sizeof(*eth);
		if ((void *)(iph + 1) > end)
			goto spoofed;
	}
	if (iph->saddr == dev->wl_ip)
		return TC_ACT_OK;
spoofed:
	stat_inc(SKM_STAT_SPOOF_DROP);
	return TC_ACT_SHOT;
}

#endif /* SKM_POLICY_BPF_H */
