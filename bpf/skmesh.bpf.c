// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skmesh kernel data path: socket load balancing (cgroup/connect4,
 * getpeername4, recvmsg4), capture for meshd's tunnel (connect4),
 * same-node acceleration (sockops + sk_msg), per-connection records
 * (sockops), policy (connect4, TC) and per-pod counters (TC).
 */
#include "lib/common.bpf.h"
#include "lib/maps.bpf.h"
#include "lib/lb.bpf.h"
#include "lib/capture.bpf.h"
#include "lib/conn.bpf.h"
#include "lib/policy.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The kernel's kfunc (Linux 6.2): OBJ as a read-only pointer to the
 * kernel type BTF_ID, whose loads cannot fault. Weak: only skm_sk_msg
 * calls it, and meshd loads that program only where the kernel has it. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/* Notes the TCP sockets that meshd's tasks make (skm_owned): only those
 * may pass for meshd's with its marks. Runs in the creating task. */
SEC("cgroup/sock_create")
int skm_sock_create(struct bpf_sock *sk)
{
	struct skm_owned owned = { .owned = 1 };
	struct skm_config *cfg;

	if (sk->family != AF_INET || sk->protocol != IPPROTO_TCP)
		return 1;
	cfg = config_get();
	if (!cfg || !cfg->meshd_cgroup_id ||
	    bpf_get_current_cgroup_id() != cfg->meshd_cgroup_id)
		return 1;
	bpf_sk_storage_get(&skm_owned, sk, &owned, BPF_SK_STORAGE_GET_F_CREATE);
	return 1;
}

SEC("cgroup/connect4")
int skm_connect4(struct bpf_sock_addr *ctx)
{
	struct skm_orig_dst od = {};
	struct skm_wl_val *dst;
	int keep = 0, ok = 1;
	__u64 cookie;
	__u32 ip;
	__u16 port;

	/* meshd dials the real destinations itself, judged already. */
	if (meshd_sk_mark(ctx->sk)) {
		stat_inc(SKM_STAT_MESHD_CONNECT);
		return 1;
	}
	switch (lb4_connect(ctx, &od)) {
	case LB_REWRITTEN:
		stat_inc(SKM_STAT_LB_CONNECT);
		keep = 1;
		break;
	case LB_NO_BACKEND:
		/* ECONNREFUSED, as a kube-proxy REJECT rule gives, rather
		 * than the EPERM of a bare "return 0". */
		stat_inc(SKM_STAT_LB_NO_BACKEND);
		bpf_set_retval(-ECONNREFUSED);
		return 0;
	case LB_NOT_SERVICE:
		break;
	}
	/* Capture and policy look at the backend actually dialled, TCP only
	 * (like ztunnel). A captured connection is judged by the
	 * destination node's meshd, with its mTLS identity. */
	if (ctx->protocol == IPPROTO_TCP) {
		ip = ctx->user_ip4;
		port = (__u16)ctx->user_port;
		dst = bpf_map_lookup_elem(&skm_workloads, &ip);
		if (dst && capture4(ctx, dst, ip, port, &od)) {
			stat_inc(SKM_STAT_CAPTURE);
			keep = 1;
		} else if (dst) {
			ok = policy_connect4(ctx, dst, port, &od);
		}
	}
	if (keep && ok) {
		cookie = bpf_get_socket_cookie(ctx);
		bpf_map_update_elem(&skm_sock_vip, &cookie, &od, BPF_ANY);
	}
	return ok;
}

SEC("cgroup/getpeername4")
int skm_getpeername4(struct bpf_sock_addr *ctx)
{
	lb4_reverse(ctx);
	return 1;
}

SEC("cgroup/recvmsg4")
int skm_recvmsg4(struct bpf_sock_addr *ctx)
{
	lb4_reverse(ctx);
	return 1;
}

SEC("sockops")
int skm_sockops(struct bpf_sock_ops *skops)
{
	struct skm_conn *c;
	__u64 cookie;
	__u32 state, mark;
	int active;

	if (skops->family != AF_INET)
		return 1;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		active = skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB;
		mark = meshd_sk_mark(skops->sk);
		if (mark == SKM_MESHD_MARK || (active && mark == SKM_UPSTREAM_MARK))
			meshd_sock_open(skops, active);
		else
			conn_open(skops, active);
		break;
	case BPF_SOCK_OPS_RTT_CB:
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:	/* no option reserved: a refresh */
		cookie = bpf_get_socket_cookie(skops);
		c = bpf_map_lookup_elem(&skm_conns, &cookie);
		if (c)
			conn_refresh(skops, c);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		state = skops->args[1];
		if (meshd_sk_mark(skops->sk) == SKM_MESHD_MARK) {
			if (state == BPF_TCP_CLOSE)
				outbound_close(skops);
		} else if (state == BPF_TCP_CLOSE) {
			conn_close(skops);
		} else {
			conn_state(skops, state);
		}
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		conn_seen_segment(skops);
		break;
	}
	return 1;
}

/* Whether a message may go to the peer's ingress queue now, rather than
 * through TCP. A redirect has no backpressure of its own: the kernel
 * queues whatever the writer sends, so a reader that stops reading would
 * let the queue grow without bound. And the reader takes its ingress
 * queue before TCP's receive queue, so a redirect must never overtake
 * bytes TCP carried before it (the first messages of a connection go by
 * TCP while the peer socket is not yet in the SOCKHASH). So: redirect
 * only while the peer holds less than SKM_ACCEL_MAX_QUEUED unread in its
 * ingress queue and has received and read everything this socket gave
 * TCP; otherwise TCP carries the message, with its flow control
 * (a stalled reader stops the writer), until both hold again. */
/* 1: redirect; 0: no peer socket known; -1: held back (TCP carries it).
 * The peer's fields are read from its address, kept in its record at
 * ESTABLISHED: an sk_msg program cannot hold a reference to another
 * socket. A record exists only while its socket is not closed, and TCP
 * sockets are freed only after an RCU grace period (this program runs
 * under rcu_read_lock), so the reads see that socket. */
static __always_inline int redirect_ok(const struct tcp_sock *me, const struct skm_conn *pc,
				      int guarded)
{
	__u32 rcv_nxt, copied_seq, queued;
	struct sk_psock *psock;
	struct tcp_sock *pt;
	unsigned long ud;

	if (!me || !pc || !pc->sk_addr)
		return 0;
	if (guarded) {
		/* Read-only casts: plain loads the kernel guards against
		 * faults (a fault reads 0), no helper call per field. */
		pt = bpf_rdonly_cast((void *)(unsigned long)pc->sk_addr,
				     bpf_core_type_id_kernel(struct tcp_sock));
		rcv_nxt = pt->rcv_nxt;
		copied_seq = pt->copied_seq;
	} else {
		pt = (struct tcp_sock *)(unsigned long)pc->sk_addr;
		if (bpf_probe_read_kernel(&rcv_nxt, sizeof(rcv_nxt), &pt->rcv_nxt) ||
		    bpf_probe_read_kernel(&copied_seq, sizeof(copied_seq), &pt->copied_seq))
			return 0;
	}
	/* write_seq, not snd_nxt: bytes TCP has queued but not yet sent
	 * (the peer's window is shut) come before this message too. */
	if (me->write_seq != rcv_nxt || copied_seq != rcv_nxt)
		return -1;
	if (!bpf_core_field_exists(((struct sk_psock *)0)->msg_tot_len))
		return 1;	/* cannot tell how much it holds */
	if (guarded) {
		ud = (unsigned long)pt->inet_conn.icsk_inet.sk.sk_user_data;
		if (!(ud & SKM_SK_USER_DATA_PSOCK))
			return 1;
		psock = bpf_rdonly_cast((void *)(ud & ~SKM_SK_USER_DATA_FLAGS),
					bpf_core_type_id_kernel(struct sk_psock));
		queued = psock->msg_tot_len;
	} else if (bpf_probe_read_kernel(&ud, sizeof(ud),
					 &pt->inet_conn.icsk_inet.sk.sk_user_data) ||
		   !(ud & SKM_SK_USER_DATA_PSOCK) ||
		   bpf_probe_read_kernel(&queued, sizeof(queued),
					 &((struct sk_psock *)(ud & ~SKM_SK_USER_DATA_FLAGS))->msg_tot_len)) {
		return 1;
	}
	return queued < SKM_ACCEL_MAX_QUEUED ? 1 : -1;
}

/* GUARDED: redirect_ok() reads the peer through bpf_rdonly_cast(). */
static __always_inline int sk_msg_verdict(struct sk_msg_md *msg, int guarded)
{
	struct skm_sock_key peer = {
		.sip = msg->remote_ip4,
		.dip = msg->local_ip4,
		.sport = bpf_ntohl(msg->remote_port),
		.dport = msg->local_port,
	};
	__u64 len = msg->size;
	struct skm_conn *c = NULL, *pc = NULL;
	struct bpf_sock *sk = msg->sk;
	struct tcp_sock *me = NULL;
	int redirected = 0;
	__u64 cookie;

	/* The record is keyed by the socket cookie, which sockops made at
	 * ESTABLISHED (sk_msg has no helper for it): read from the socket. */
	if (sk)
		me = bpf_skc_to_tcp_sock(sk);
	if (me) {
		cookie = me->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
		c = bpf_map_lookup_elem(&skm_conns, &cookie);
	}
	if (c && c->peer_cookie)
		pc = bpf_map_lookup_elem(&skm_conns, &c->peer_cookie);

	switch (redirect_ok(me, pc, guarded)) {
	case 0:
		/* Peer not known (outside the mesh cgroup, not yet
		 * established, closing): TCP carries the message as usual. */
		stat_inc(SKM_STAT_MSG_PASS);
		break;
	case -1:
		stat_inc(SKM_STAT_MSG_HELD);
		break;
	default:
		if (bpf_msg_redirect_hash(msg, &skm_sock_hash, &peer, BPF_F_INGRESS) == SK_PASS) {
			stat_inc(SKM_STAT_MSG_REDIRECT);
			stat_add(SKM_STAT_MSG_REDIRECT_BYTES, len);
			redirected = 1;
		} else {
			stat_inc(SKM_STAT_MSG_PASS);
		}
	}

	if (c) {
		/* sendmsg holds this socket's lock and nothing else writes
		 * its tx counters: plain adds. The peer's rx is shared with
		 * the peer's own close, hence atomic; what TCP carries the
		 * peer counts itself, at its close. */
		c->tx_bytes += len;
		c->tx_msgs++;
		if (redirected && pc)
			__sync_fetch_and_add(&pc->rx_bytes, len);
	}
	return SK_PASS;
}

/* meshd loads one of the two (loader_open()): this one where the kernel
 * has bpf_rdonly_cast() (Linux 6.2), the other before. */
SEC("sk_msg")
int skm_sk_msg(struct sk_msg_md *msg)
{
	return sk_msg_verdict(msg, 1);
}

SEC("sk_msg")
int skm_msg_compat(struct sk_msg_md *msg)
{
	return sk_msg_verdict(msg, 0);
}

static __always_inline void dev_count(struct __sk_buff *skb, int to_pod)
{
	__u32 ifindex = skb->ifindex;
	struct skm_dev_stats *st = bpf_map_lookup_elem(&skm_dev_stats, &ifindex);

	if (!st)
		return;
	if (to_pod) {
		st->pkts_out++;
		st->bytes_out += skb->len;
	} else {
		st->pkts_in++;
		st->bytes_in += skb->len;
	}
}

/* TC ingress of the node-side veth: what the pod sends, from its own
 * address only. */
SEC("tc")
int skm_tc_from_pod(struct __sk_buff *skb)
{
	int act = policy_from_pod(skb);

	if (act == TC_ACT_OK)
		dev_count(skb, 0);
	return act;
}

/* TC egress of the node-side veth: what is delivered to the pod, where
 * plaintext policy is enforced. */
SEC("tc")
int skm_tc_to_pod(struct __sk_buff *skb)
{
	int act = policy_to_pod(skb);

	if (act == TC_ACT_OK)
		dev_count(skb, 1);
	return act;
}
