/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-connection records: opened at ESTABLISHED, refreshed by RTT samples
 * (passthrough) or by sk_msg (accelerated), sent on the ring buffer and
 * deleted when the socket reaches CLOSE.
 */
#ifndef SKM_CONN_BPF_H
#define SKM_CONN_BPF_H

#include "lib/maps.bpf.h"
#include "lib/capture.bpf.h"

static __always_inline void sock_key_of(struct bpf_sock_ops *skops,
					struct skm_sock_key *k)
{
	k->sip = skops->local_ip4;
	k->dip = skops->remote_ip4;
	k->sport = skops->local_port;
	/* remote_port: network order in the upper 16 bits */
	k->dport = bpf_ntohl(skops->remote_port);
}

static __always_inline void sock_key_peer(const struct skm_sock_key *k,
					  struct skm_sock_key *p)
{
	p->sip = k->dip;
	p->dip = k->sip;
	p->sport = k->dport;
	p->dport = k->sport;
}

static __always_inline int is_local_meshed(const struct skm_wl_val *wl)
{
	__u32 want = SKM_WL_LOCAL | SKM_WL_MESHED;

	return wl && (wl->flags & want) == want;
}

/* Same-node acceleration only between two meshed pods of this node;
 * everything else keeps the normal stack. Not the legs to and from
 * meshd's tunnel (a pod's captured socket <-> meshd on its 15001, meshd's
 * upstream <-> the app, both flagged SKM_CONN_TUNNEL): once redirect_ok()
 * holds a writer back, its messages reach the reader by TCP, where the
 * kernel's sockmap receive path can hand a blocked reader a spurious
 * EAGAIN; plain TCP there gives the backpressure HTTP/2 flow control
 * passes on (docs/architecture.md, "Capture"). WS and WD are the
 * workloads at the tuple's source and destination (NULL: none).
 * 1: the socket is in the SOCKHASH. */
static __always_inline int sock_accel(struct bpf_sock_ops *skops,
				      struct skm_sock_key *k,
				      const struct skm_wl_val *ws,
				      const struct skm_wl_val *wd)
{
	if (k->dip == k->sip || !is_local_meshed(ws) || !is_local_meshed(wd))
		return 0;
	if (bpf_sock_hash_update(skops, &skm_sock_hash, k, BPF_ANY)) {
		stat_inc(SKM_STAT_SOCK_INSERT_FAIL);
		return 0;
	}
	stat_inc(SKM_STAT_SOCK_INSERT);
	return 1;
}

/* Application bytes TCP carried: without the SYN (in the base) and
 * without our FIN once it is acked (snd_una then covers it). */
static __always_inline __u64 tcp_app_sent(struct bpf_sock_ops *skops,
					  const struct skm_conn *c)
{
	__u64 n = skops->bytes_acked - c->tcp_acked_base;

	if ((c->flags & SKM_CONN_FIN_SENT) && skops->snd_una == skops->snd_nxt && n)
		n--;
	return n;
}

static __always_inline __u64 tcp_app_rcvd(struct bpf_sock_ops *skops,
					  const struct skm_conn *c)
{
	__u64 n = skops->bytes_received - c->tcp_rcvd_base;

	if ((c->flags & SKM_CONN_FIN_RCVD) && n)
		n--;
	return n;
}

/* Copies TCP's own counters into the record. For an accelerated socket
 * the byte counts are sk_msg's and are left alone. */
static __always_inline void conn_refresh(struct bpf_sock_ops *skops,
					 struct skm_conn *c)
{
	c->segs_in = skops->segs_in;
	c->segs_out = skops->segs_out;
	c->total_retrans = skops->total_retrans;
	c->srtt_us = skops->srtt_us >> 3;
	if (!c->srtt_us && skops->srtt_us)
		c->srtt_us = 1;
	c->state = skops->state;
	if (!(c->flags & SKM_CONN_ACCEL)) {
		c->tx_bytes = tcp_app_sent(skops, c);
		c->rx_bytes = tcp_app_rcvd(skops, c);
	}
}

/* Links two accelerated sockets of one connection so each message's bytes
 * can be counted on both records. The end established first leaves its
 * cookie in skm_socks under its 4-tuple; the second finds it there, links
 * both records and takes the entry out: one entry per connection, and
 * none once paired. The order is causal: the active end's callback runs
 * before the handshake's last ACK leaves (with Fast Open, the passive
 * end's before its SYN-ACK), so the second end always looks after the
 * first has written. */
static __always_inline void conn_pair(struct skm_conn *c, __u64 cookie)
{
	struct skm_sock_key peer;
	struct skm_conn *pc;
	__u64 *pcookie, pk;

	sock_key_peer(&c->tuple, &peer);
	pcookie = bpf_map_lookup_elem(&skm_socks, &peer);
	if (!pcookie) {
		bpf_map_update_elem(&skm_socks, &c->tuple, &cookie, BPF_ANY);
		return;
	}
	pk = *pcookie;
	bpf_map_delete_elem(&skm_socks, &peer);
	pc = bpf_map_lookup_elem(&skm_conns, &pk);
	if (!pc)
		return;
	c->peer_cookie = pk;
	pc->peer_cookie = cookie;
}

/* An accelerated socket that never found its peer still has its
 * skm_socks entry. */
static __always_inline void conn_unpair(const struct skm_conn *c)
{
	if ((c->flags & SKM_CONN_ACCEL) && !c->peer_cookie)
		bpf_map_delete_elem(&skm_socks, &c->tuple);
}

/* The local pod whose share of the node-wide tables a record of C counts
 * in: the pod that opened the connection when it is one of this node's
 * (so a pod flooding a neighbour uses up its own share, not the
 * neighbour's), else the local end's pod; 0: no pod. */
static __always_inline __u32 share_owner(int active, const struct skm_wl_val *ws,
					  const struct skm_wl_val *wd)
{
	if (!active && wd && (wd->flags & SKM_WL_LOCAL))
		return wd->wl_id;
	return ws && (ws->flags & SKM_WL_LOCAL) ? ws->wl_id : 0;
}

static __always_inline struct skm_pod_share *share_of(__u32 owner)
{
	struct skm_pod_share *ps, zero = {};

	ps = bpf_map_lookup_elem(&skm_pod_share, &owner);
	if (ps)
		return ps;
	bpf_map_update_elem(&skm_pod_share, &owner, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&skm_pod_share, &owner);
}

/* 1: OWNER may hold one more live record, now counted (C is flagged
 * SKM_CONN_SHARED); 0: its share (skm_config.conns_per_pod) is used up.
 * Without a share entry (its map full) the record is made uncounted. */
static __always_inline int share_take_conn(struct skm_conn *c, __u32 owner)
{
	struct skm_config *cfg = config_get();
	struct skm_pod_share *ps = share_of(owner);
	__u32 limit = cfg ? cfg->conns_per_pod : 0;

	c->owner_id = owner;
	if (!ps)
		return 1;
	if (limit && ps->conns >= limit) {
		__sync_fetch_and_add(&ps->conns_refused, 1);
		stat_inc(SKM_STAT_CONN_POD_SHARE);
		return 0;
	}
	__sync_fetch_and_add(&ps->conns, 1);
	c->flags |= SKM_CONN_SHARED;
	return 1;
}

/* C's record is gone: its count leaves PS, its owner's share (NULL: the
 * entry is gone too). */
static __always_inline void share_put_conn(const struct skm_conn *c, struct skm_pod_share *ps)
{
	if ((c->flags & SKM_CONN_SHARED) && ps && ps->conns)
		__sync_fetch_and_sub(&ps->conns, 1);
}

/* 1: a close event of the pod whose share is PS may go on skm_events: at
 * most skm_config.events_per_pod a second, a second's worth at once
 * (GCRA). No entry or no share: 1. */
static __always_inline int share_take_event(struct skm_pod_share *ps)
{
	struct skm_config *cfg = config_get();
	__u64 now, tat, step;

	if (!ps || !cfg || !cfg->events_per_pod)
		return 1;
	now = bpf_ktime_get_ns();
	step = 1000000000ULL / cfg->events_per_pod;
	tat = ps->ev_tat_ns > now ? ps->ev_tat_ns : now;
	if (tat - now >= 1000000000ULL) {
		__sync_fetch_and_add(&ps->events_refused, 1);
		stat_inc(SKM_STAT_EVENT_POD_SHARE);
		return 0;
	}
	ps->ev_tat_ns = tat + step;
	return 1;
}

static __always_inline void conn_open(struct bpf_sock_ops *skops, int active)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct skm_wl_val *ws, *wd;
	struct skm_orig_dst *od;
	struct skm_conn c = {};
	__u32 sip, dip;

	sock_key_of(skops, &c.tuple);
	c.start_ns = bpf_ktime_get_ns();
	c.tcp_acked_base = skops->bytes_acked;
	c.tcp_rcvd_base = skops->bytes_received;
	c.flags = active ? SKM_CONN_ACTIVE : 0;
	/* What the client dialled: the remote end for a client socket, our
	 * own address for a server socket. */
	c.orig_ip = active ? c.tuple.dip : c.tuple.sip;
	c.orig_port = bpf_htons((__u16)(active ? c.tuple.dport : c.tuple.sport));
	if (active) {
		od = bpf_map_lookup_elem(&skm_sock_vip, &cookie);
		if (od) {
			c.orig_ip = od->vip;
			c.orig_port = od->vport;
			c.svc_id = od->svc_id;
			if (od->svc_id)
				c.flags |= SKM_CONN_VIA_VIP;
			if (od->flags & SKM_OD_CAPTURED) {
				/* Before the record: meshd needs it even
				 * when the connection table is full. */
				c.flags |= SKM_CONN_TUNNEL;
				outbound_open(&c.tuple, od, cookie);
			}
		}
		if (c.tuple.dport == SKM_PORT_OUTBOUND && !(c.flags & SKM_CONN_TUNNEL))
			outbound_forget(&c.tuple);
	} else if (is_upstream_peer_sk(skops->sk)) {
		/* reached by meshd's upstream leg from the client's address */
		c.flags |= SKM_CONN_TUNNEL;
	} else if (c.tuple.sip == c.tuple.dip) {
		/* reached by meshd's upstream leg from the pod's own address
		 * (a pod where meshd could not set up the client's) */
		struct skm_sock_key rk = { .sip = c.tuple.dip, .dip = c.tuple.sip,
					   .sport = c.tuple.dport, .dport = c.tuple.sport };

		if (bpf_map_lookup_elem(&skm_meshd_legs, &rk)) {
			c.flags |= SKM_CONN_TUNNEL;
			bpf_map_delete_elem(&skm_meshd_legs, &rk);
		}
	}

	/* Each end's workload, looked up once for the share and the
	 * acceleration. */
	sip = c.tuple.sip;
	dip = c.tuple.dip;
	ws = bpf_map_lookup_elem(&skm_workloads, &sip);
	wd = bpf_map_lookup_elem(&skm_workloads, &dip);
	/* Over its pod's share: no record, and so no acceleration (whose
	 * pairing lives in the record) either. */
	if (!share_take_conn(&c, share_owner(active, ws, wd)))
		return;
	if (!(c.flags & SKM_CONN_TUNNEL) && sock_accel(skops, &c.tuple, ws, wd))
		c.flags |= SKM_CONN_ACCEL;
	conn_refresh(skops, &c);
	if (c.flags & SKM_CONN_ACCEL) {
		struct bpf_sock *sk = skops->sk;
		struct tcp_sock *tp;

		if (sk) {
			tp = bpf_skc_to_tcp_sock(sk);
			if (tp)
				c.sk_addr = (__u64)(unsigned long)tp;
		}
		conn_pair(&c, cookie);
	}

	if (bpf_map_update_elem(&skm_conns, &cookie, &c, BPF_NOEXIST)) {
		stat_inc(SKM_STAT_CONN_TABLE_FULL);
		conn_unpair(&c);
		share_put_conn(&c, bpf_map_lookup_elem(&skm_pod_share, &c.owner_id));
		return;
	}
	stat_inc(SKM_STAT_CONN_OPEN);
	/* Close must be seen to emit the event. A passthrough socket's live
	 * counters are refreshed on every RTT sample (what it sent got
	 * acked) and as it writes a segment (its ACKs carry what it
	 * received); an accelerated one's come from sk_msg. A captured
	 * one's leg only reaches meshd in the same pod, whose tunnel counts
	 * the stream: it is read at close only, and its packets run no
	 * program (two per packet cost a tunnelled round trip microseconds). */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
				  BPF_SOCK_OPS_STATE_CB_FLAG |
				  (c.flags & (SKM_CONN_ACCEL | SKM_CONN_TUNNEL) ? 0 :
				   BPF_SOCK_OPS_RTT_CB_FLAG |
				   BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG));
}

/* meshd's own sockets: no record and no close event (meshd reports its
 * tunnel itself), and not accelerated (see sock_accel). The end meshd
 * accepted on SKM_PORT_OUTBOUND is followed to its close, which retires
 * the leg's skm_outbound entry. */
static __always_inline void meshd_sock_open(struct bpf_sock_ops *skops, int active)
{
	if (active) {
		struct skm_sock_key k;
		__u32 one = 1;

		sock_key_of(skops, &k);
		if (k.sip == k.dip)
			bpf_map_update_elem(&skm_meshd_legs, &k, &one, BPF_ANY);
		return;
	}
	if (skops->local_port == SKM_PORT_OUTBOUND)
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
					  BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* Follows the close handshake so the FINs can be told from data. A FIN
 * in FIN_WAIT1/2 leads straight to CLOSE (time-wait), indistinguishable
 * there from a RST: the segment's flags are looked at instead, with header
 * callbacks enabled only for this short last phase. */
static __always_inline void conn_state(struct bpf_sock_ops *skops, __u32 new_state)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct skm_conn *c = bpf_map_lookup_elem(&skm_conns, &cookie);

	if (!c)
		return;
	switch (new_state) {
	case BPF_TCP_FIN_WAIT1:
		c->flags |= SKM_CONN_FIN_SENT;
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
					  BPF_SOCK_OPS_PARSE_ALL_HDR_OPT_CB_FLAG);
		break;
	case BPF_TCP_LAST_ACK:
		c->flags |= SKM_CONN_FIN_SENT;
		break;
	case BPF_TCP_CLOSING:
		c->flags |= SKM_CONN_FIN_SENT | SKM_CONN_FIN_RCVD;
		break;
	case BPF_TCP_CLOSE_WAIT:
		c->flags |= SKM_CONN_FIN_RCVD;
		break;
	}
	c->state = new_state;
}

static __always_inline void conn_seen_segment(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	struct skm_conn *c;

	if (!(skops->skb_tcp_flags & 0x01))	/* TCPHDR_FIN */
		return;
	cookie = bpf_get_socket_cookie(skops);
	c = bpf_map_lookup_elem(&skm_conns, &cookie);
	if (c)
		c->flags |= SKM_CONN_FIN_RCVD;
}

/* Submits EV to skm_events, waking meshd only when the unread data has
 * just reached a batch's worth: one wake-up per closed socket cost a
 * flood of short connections a fifth of its rate, and waking at every
 * event above the mark (as when meshd is stopped and nobody reads) cost
 * an irq_work per event. meshd also reads the ring every
 * SKM_EVENTS_POLL_MS, so a wake-up missed by a race costs at most that. */
static __always_inline void events_submit(struct skm_conn_event *ev)
{
	__u64 avail = bpf_ringbuf_query(&skm_events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(ev, avail >= SKM_EVENTS_WAKE_BYTES &&
			       avail < SKM_EVENTS_WAKE_BYTES + 2 * sizeof(*ev) ?
			       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void conn_close(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct skm_pod_share *ps;
	struct skm_conn_event *ev;
	struct skm_conn *c;
	__u32 prev, owner;

	c = bpf_map_lookup_elem(&skm_conns, &cookie);
	if (!c)
		return;
	owner = c->owner_id;
	ps = bpf_map_lookup_elem(&skm_pod_share, &owner);	/* once for both uses */
	prev = c->state;
	conn_refresh(skops, c);
	/* What TCP carried for an accelerated socket (its peer was not in
	 * the SOCKHASH) arrived outside sk_msg's view. */
	if (c->flags & SKM_CONN_ACCEL)
		__sync_fetch_and_add(&c->rx_bytes, tcp_app_rcvd(skops, c));
	c->state = BPF_TCP_CLOSE;

	ev = NULL;
	if (share_take_event(ps)) {
		ev = bpf_ringbuf_reserve(&skm_events, sizeof(*ev), 0);
		if (!ev)
			stat_inc(SKM_STAT_EVENT_DROP);
	}
	if (ev) {
		ev->cookie = cookie;
		ev->end_ns = bpf_ktime_get_ns();
		__builtin_memcpy(&ev->conn, c, sizeof(*c));
		ev->prev_state = prev;
		ev->reason_id = 0;
		events_submit(ev);
	}
	share_put_conn(c, ps);
	conn_unpair(c);
	/* connect4 kept what the app dialled only for a connection it
	 * balanced or captured (flagged so at open). */
	if (c->flags & (SKM_CONN_VIA_VIP | SKM_CONN_TUNNEL))
		bpf_map_delete_elem(&skm_sock_vip, &cookie);
	bpf_map_delete_elem(&skm_conns, &cookie);
	stat_inc(SKM_STAT_CONN_CLOSE);
}

#endif /* SKM_CONN_BPF_H */
