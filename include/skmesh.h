/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * skmesh.h - the contract between the kernel programs (bpf/) and user space
 * (agent/, tools/). Plain fixed-width types only: this header is included by
 * BPF C (with vmlinux.h) and by ordinary C (with <linux/types.h>).
 *
 * Byte order: IPv4 addresses are in network byte order everywhere; ports are
 * in network byte order too, except in struct skm_sock_key (and so
 * skm_conn.tuple), which keeps them in host order as bpf_sock_ops gives its
 * local port.
 */
#ifndef SKMESH_H
#define SKMESH_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Pin layout under the pin root (default SKM_PIN_ROOT). */
#define SKM_PIN_ROOT		"/sys/fs/bpf/skmesh"

#ifndef SKM_VERSION
#define SKM_VERSION		"0.5.0"
#endif
#define SKM_PIN_LINKS		"links"		/* sub-folder for bpf_link pins */

/* Map sizes: user space checks them before writing so a full map is a
 * clear config error instead of a half-applied state. */
#define SKM_MAX_SERVICES	65536
#define SKM_MAX_SLOTS_PER_SVC	256	/* weighted selection table per service */
#define SKM_MAX_BACKEND_SLOTS	(1 << 20)
#define SKM_MAX_WORKLOADS	65536
#define SKM_MAX_CONNS		262144
#define SKM_MAX_SOCKS		65536	/* accelerated sockets in the SOCKHASH */
#define SKM_MAX_DEVS		4096
#define SKM_MAX_VERDICTS	(1 << 20)
#define SKM_MAX_PLAIN		(1 << 18)
#define SKM_EVENTS_BYTES	(4 << 20)
#define SKM_EVENTS_WAKE_BYTES	(64 * 256)	/* ~64 events wake meshd */
#define SKM_EVENTS_POLL_MS	50		/* ... else meshd reads this often */

/* The tunnel's ports, as ztunnel uses them. meshd listens on them inside
 * each local pod's network namespace (ztunnel's in-pod mode). */
#define SKM_PORT_OUTBOUND	15001	/* captured outbound connections */
#define SKM_PORT_INBOUND_PLAIN	15006	/* reserved: never dialled, never captured */
#define SKM_PORT_HBONE		15008	/* HBONE: HTTP/2 CONNECT over mTLS */

/* SO_MARK of meshd's own sockets (ztunnel marks its sockets 0x539 too):
 * connect4 neither balances, captures nor judges them; sockops keeps no
 * connection record for them (meshd reports its tunnel itself). The
 * pod<->meshd legs are not accelerated (see sock_accel in
 * bpf/lib/conn.bpf.h). Sockets meshd accepts carry its listener's mark.
 * A mark alone proves nothing (a pod with CAP_NET_RAW sets any mark): a
 * socket counts as meshd's only when it also was created by a task of
 * meshd's cgroup (skm_config.meshd_cgroup_id), which cgroup/sock_create
 * notes in skm_owned. */
#define SKM_MESHD_MARK		0x539

/* SO_MARK of meshd's upstream sockets, the ones it dials to a local pod's
 * app for a stream it was sent (ztunnel's in-pod inbound). They are bound
 * to the client's address (IP_TRANSPARENT), as ztunnel does, so the app
 * sees who called. In the pod's network namespace meshd sets
 * net.ipv4.tcp_fwmark_accept = 1 (the app's accepted socket takes this
 * mark from the SYN) and a rule "fwmark SKM_UPSTREAM_MARK lookup
 * SKM_UPSTREAM_TABLE" to a table holding "local 0.0.0.0/0 dev lo": the
 * app's replies to the client's address stay in the pod and reach meshd's
 * socket. The kernel programs neither balance, capture nor judge these
 * sockets; the app's end (passive, carrying the mark) is recorded as the
 * tunnelled connection it is. */
#define SKM_UPSTREAM_MARK	0x53a
#define SKM_UPSTREAM_TABLE	1338
#define SKM_UPSTREAM_RULE_PRIO	32764

#define SKM_MAX_OUTBOUND	65536

/* skm_config: one entry (key 0) that meshd writes at start; the kernel
 * programs read it. */
struct skm_config {
	__u64 meshd_cgroup_id;	/* sockets made by tasks of this cgroup may
				 * carry meshd's marks (see skm_owned) */
	__u32 conns_per_pod;	/* live records (skm_conns) one local pod may
				 * hold; 0: no share (the table's size) */
	__u32 events_per_pod;	/* close events per second one local pod may
				 * send on skm_events (burst: one second's
				 * worth); 0: no share */
};

/* skm_owned: socket storage (cloned to accepted sockets) set by
 * cgroup/sock_create on every TCP socket a task of meshd's cgroup makes. */
struct skm_owned {
	__u32 owned;		/* 1 */
};

/* skm_pod_share: local pod (wl_id of the socket's local address; 0: an
 * address that is no local pod) -> its use of the node-wide tables, so
 * one pod cannot fill them for all. */
struct skm_pod_share {
	__u32 conns;		/* live records it holds in skm_conns */
	__u32 pad;
	__u64 ev_tat_ns;	/* close events: the theoretical arrival time
				 * of a rate limiter (GCRA) */
	__u64 conns_refused;	/* records not made: over its share */
	__u64 events_refused;	/* close events not sent: over its share */
};

#define SKM_DEFAULT_CONNS_PER_POD	32768	/* of SKM_MAX_CONNS */
#define SKM_DEFAULT_EVENTS_PER_POD	5000	/* per second */
#define SKM_MAX_REVOKE		65536	/* sockets closed by one policy change, per batch */

/* Same-node acceleration: what a peer may hold unread in its ingress
 * queue before the writer's messages go through TCP (and its flow
 * control) instead. Above what a bulk writer on one CPU gets ahead of its
 * reader in a timeslice (4 and 16 MiB sent part of such streams by TCP),
 * far below the unbounded queue of a bare redirect. */
#define SKM_ACCEL_MAX_QUEUED	(64U << 20)
/* the flag bits of sk->sk_user_data (include/net/sock.h) */
#define SKM_SK_USER_DATA_PSOCK	4UL
#define SKM_SK_USER_DATA_FLAGS	7UL

/* skm_services: (vip, port, proto) -> backend set */
struct skm_svc_key {
	__u32 vip;		/* network order */
	__u16 port;		/* network order */
	__u8 proto;		/* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

struct skm_svc_val {
	__u32 svc_id;		/* stable per service, for metrics */
	__u32 set_id;		/* which backend set is live (see skm_backends) */
	__u32 nslots;		/* 0: no backends, connect() gets ECONNREFUSED */
	__u32 flags;
};

/* skm_backends: (set_id, slot) -> backend. A set holds nslots slots in which
 * each backend appears in proportion to its weight, so one random slot is a
 * weighted choice with a single lookup. A new set is written under a fresh
 * set_id and switched in with one update of skm_services, so a reader sees
 * either the whole old set or the whole new one. */
struct skm_be_key {
	__u32 set_id;
	__u32 slot;
};

struct skm_be_val {
	__u32 ip;		/* network order */
	__u16 port;		/* network order */
	__u16 pad;
};

/* skm_workloads: workload IP -> who it is */
#define SKM_WL_LOCAL	(1U << 0)	/* runs on this node */
#define SKM_WL_MESHED	(1U << 1)	/* captured by the mesh */
#define SKM_WL_POLICY	(1U << 2)	/* local, and some policy can deny a
					 * connection to it: check pol_set */
#define SKM_WL_NETNS	(1U << 3)	/* local, netns known: connect4 knows
					 * it as a source (skm_netns) */

struct skm_wl_val {
	__u32 wl_id;		/* stable numeric id, 0 is never used */
	__u32 flags;		/* SKM_WL_* */
	__u32 ns_id;
	__u32 sa_id;
	__u32 pol_set;		/* compiled policy of this destination, in
				 * skm_verdicts and skm_plain; replaced as a
				 * whole like a backend set */
	__u32 pad;
};

/* skm_netns: netns cookie -> the local pod living in it (struct
 * skm_netns_val), so connect4 knows which workload is connecting. */

struct skm_netns_val {
	__u32 wl_id;
	__u32 ip;		/* the pod's IP, network order: where connect4
				 * sends a captured connection (ip:15001) */
};

/* skm_outbound: a captured connection, found by meshd from the address
 * its 15001 listener accepted. connect4 rewrites a meshed local pod's
 * connect() to a meshed workload on another node (after service load
 * balancing) to <pod ip>:SKM_PORT_OUTBOUND, when meshd listens there (a
 * listener with SKM_MESHD_MARK in the pod's netns), and keeps the original
 * destination by socket cookie (skm_sock_vip); sockops moves it here
 * once the source port is known (active ESTABLISHED, before meshd can
 * accept) and deletes it when meshd's end of that leg (its accepted
 * socket, marked SKM_MESHD_MARK) closes. Not when the pod's end closes:
 * a pod that writes and closes at once reaches CLOSE as soon as its FIN
 * is acknowledged, possibly before meshd has accepted. An entry whose
 * meshd end never existed (nothing marked listening) ages out of the
 * LRU; a new connection from the same address to SKM_PORT_OUTBOUND
 * replaces it (captured) or deletes it (dialled directly). */
struct skm_outbound_key {
	__u32 ip;		/* the pod socket's local address, network order */
	__u32 port;		/* its local port, host order */
};

struct skm_outbound_val {
	__u32 dst_ip;		/* the workload to reach, network order */
	__u16 dst_port;		/* network order (target port after LB) */
	__u16 vport;		/* what the app dialled: VIP port, network order */
	__u32 vip;		/* the VIP, or dst_ip when no service */
	__u32 src_wl_id;	/* the connecting pod */
	__u32 svc_id;		/* 0: no service */
	__u32 pad;
	__u64 cookie;		/* the pod socket's cookie */
};

/* skm_verdicts: (source workload, destination policy set, port) -> verdict
 * for a same-node connection with the source's identity. port is the
 * destination (target) port in host order, 0 for "any port the policies
 * do not name". Only local sources with a known netns have entries. */
struct skm_verdict_key {
	__u32 src_id;
	__u32 pol_set;
	__u16 port;
	__u16 pad;
};

struct skm_verdict {
	__u32 allow;		/* 1 allow, 0 deny */
	__u32 reason_id;	/* skm_names kind SKM_NAME_REASON */
};

/* skm_plain: longest-prefix match over (policy set, port, source IP) ->
 * verdict for plaintext (no identity) arriving at a pod, checked by TC on
 * the SYN. Entries always name pol_set and port fully (prefixlen >= 48),
 * port 0 stands for "any port the policies do not name". */
struct skm_plain_key {
	__u32 prefixlen;	/* 48 + source prefix length */
	__u32 pol_set;		/* network order */
	__u16 port;		/* network order */
	__u8 src[4];		/* source IPv4 address */
	__u16 pad;
};

#define SKM_PLAIN_PREFIX_BASE	48

/* skm_sock_vip: socket cookie -> what the app asked for (getpeername4,
 * recvmsg4 and the connection record read it). LRU: UDP sockets have no
 * close callback. Written by connect4 for a load-balanced or a captured
 * socket. */
struct skm_orig_dst {
	__u32 vip;		/* what the app dialled (VIP, or the workload
				 * itself when no service), network order */
	__u16 vport;		/* network order */
	__u16 pad;
	__u32 be_ip;		/* where the socket is connected: the chosen
				 * backend, or <pod ip> when captured */
	__u16 be_port;		/* network order; SKM_PORT_OUTBOUND if captured */
	__u16 pad2;
	__u32 svc_id;		/* 0: no service */
	__u32 pad3;
	__u32 dst_ip;		/* the workload to reach (after load
				 * balancing), network order */
	__u16 dst_port;		/* network order */
	__u16 flags;		/* SKM_OD_* */
	__u32 src_wl_id;	/* captured: the connecting pod */
};

#define SKM_OD_CAPTURED	(1U << 0)	/* sent to the pod's SKM_PORT_OUTBOUND */

/* skm_sock_hash / skm_socks: the 4-tuple as seen from one socket. */
struct skm_sock_key {
	__u32 sip;		/* local, network order */
	__u32 dip;		/* remote, network order */
	__u32 sport;		/* local, host order (as in bpf_sock_ops) */
	__u32 dport;		/* remote, host order */
};

/* skm_conns: socket cookie -> live connection record */
#define SKM_CONN_ACTIVE		(1U << 0)	/* we called connect() */
#define SKM_CONN_ACCEL		(1U << 1)	/* in the SOCKHASH, sk_msg path */
#define SKM_CONN_VIA_VIP	(1U << 2)	/* service load balanced */
#define SKM_CONN_FIN_SENT	(1U << 3)	/* our FIN is out */
#define SKM_CONN_FIN_RCVD	(1U << 4)	/* the peer's FIN came in */
#define SKM_CONN_TUNNEL		(1U << 5)	/* carried by meshd's tunnel: captured at
					 * the source, or reached by meshd's
					 * upstream leg (skm_meshd_legs) */
#define SKM_CONN_DENIED		(1U << 6)	/* not a connection: a connect() the
					 * policy refused (EPERM), sent on
					 * skm_events as a close event */
#define SKM_CONN_PLAINTEXT	(1U << 7)	/* with DENIED: a plaintext SYN TC
					 * dropped at the pod's veth */
#define SKM_CONN_TC_JUDGED	(1U << 9)	/* with DENIED, not PLAINTEXT: a SYN
					 * from a local pod's veth TC dropped,
					 * judged with that pod's identity */
#define SKM_CONN_SHARED		(1U << 8)	/* counted in its owner's share
					 * (skm_pod_share) */

struct skm_conn {
	struct skm_sock_key tuple;
	__u32 orig_ip;		/* VIP the app dialled, or the peer ip */
	__u16 orig_port;	/* network order */
	__u16 pad;
	__u32 flags;		/* SKM_CONN_* */
	__u32 svc_id;
	__u64 peer_cookie;	/* same-node peer socket, 0 if none */
	__u64 start_ns;		/* bpf_ktime_get_ns() at connect/accept */
	/* Application bytes. Passthrough sockets: TCP's bytes_acked and
	 * bytes_received, refreshed on every RTT sample and at close.
	 * Accelerated sockets: counted by sk_msg as they are written, tx on
	 * the writer's record and rx on its peer's; what TCP still carried
	 * (a peer outside the SOCKHASH) is added at close. */
	__u64 tx_bytes;
	__u64 rx_bytes;
	__u64 tx_msgs;		/* sk_msg messages (accelerated) */
	__u32 segs_in;
	__u32 segs_out;
	__u32 total_retrans;
	__u32 srtt_us;		/* smoothed RTT in microseconds */
	__u32 state;		/* TCP state (BPF_TCP_*) */
	__u32 owner_id;		/* the local pod whose share it counts in
				 * (skm_pod_share), 0: none */
	/* TCP's bytes_acked/bytes_received count the SYN and FIN too:
	 * their values at ESTABLISHED are subtracted, and the FINs by the
	 * SKM_CONN_FIN_* flags. */
	__u64 tcp_acked_base;
	__u64 tcp_rcvd_base;
	/* An accelerated socket's kernel address, for its peer's sk_msg
	 * program (redirect_ok()); 0 otherwise. Never shown. */
	__u64 sk_addr;
};

/* A closed connection, sent on skm_events. */
struct skm_conn_event {
	__u64 cookie;
	__u64 end_ns;
	struct skm_conn conn;
	__u32 prev_state;	/* TCP state before CLOSE: FIN_WAIT2, LAST_ACK,
				 * CLOSING or TIME_WAIT for an orderly close;
				 * ESTABLISHED and the others for a reset */
	__u32 reason_id;	/* SKM_CONN_DENIED: the verdict's reason
				 * (skm_names SKM_NAME_REASON), 0: none */
};

/* skm_stats: per-CPU counters, index = enum skm_stat */
enum skm_stat {
	SKM_STAT_LB_CONNECT = 0,	/* connects load balanced to a backend */
	SKM_STAT_LB_NO_BACKEND,		/* refused: VIP has no backend */
	SKM_STAT_LB_MISSING_SLOT,	/* set being replaced: slot not found */
	SKM_STAT_SOCK_INSERT,		/* sockets put in the SOCKHASH */
	SKM_STAT_SOCK_INSERT_FAIL,
	SKM_STAT_MSG_REDIRECT,		/* sk_msg messages redirected */
	SKM_STAT_MSG_REDIRECT_BYTES,
	SKM_STAT_MSG_PASS,		/* peer gone: message left to TCP */
	SKM_STAT_CONN_OPEN,
	SKM_STAT_CONN_CLOSE,
	SKM_STAT_CONN_TABLE_FULL,
	SKM_STAT_EVENT_DROP,		/* ring buffer full */
	SKM_STAT_POLICY_ALLOW,		/* same-node connects policy allowed */
	SKM_STAT_POLICY_DENY,		/* same-node connects refused (EPERM) */
	SKM_STAT_POLICY_UNKNOWN_SRC,	/* connect from an unknown netns: TC decides */
	SKM_STAT_PLAIN_ALLOW,		/* plaintext SYNs to a pod let through */
	SKM_STAT_PLAIN_DENY,		/* plaintext SYNs to a pod dropped */
	SKM_STAT_CAPTURE,		/* connects sent to the pod's SKM_PORT_OUTBOUND */
	SKM_STAT_CAPTURE_NO_LISTENER,	/* ... not: meshd does not listen there */
	SKM_STAT_MESHD_CONNECT,		/* connects of meshd's sockets, left alone */
	SKM_STAT_HBONE_SYN,		/* SYNs to a pod's SKM_PORT_HBONE let through */
	SKM_STAT_TUNNEL_PORT_DENY,	/* SYNs to a pod's 15001/15006 from outside
					 * the pod dropped */
	SKM_STAT_DENY_EVENT_SKIPPED,	/* denials not sent to meshd: the ring
					 * buffer was half full (close events
					 * go first) */
	SKM_STAT_MSG_HELD,		/* sk_msg messages left to TCP: the peer had
					 * SKM_ACCEL_MAX_QUEUED unread, or TCP bytes
					 * of the writer it had not read yet */
	SKM_STAT_POLICY_REVOKED,	/* established connections closed (RST)
					 * because a policy change denies them */
	SKM_STAT_TC_ALLOW,		/* SYNs from a local pod's veth to an
					 * enforced pod that TC allowed */
	SKM_STAT_TC_DENY,		/* ... and dropped (whatever connect4 saw:
					 * DNAT after connect, forged marks) */
	SKM_STAT_SPOOF_DROP,		/* packets from a pod's veth whose source
					 * address is not the pod's */
	SKM_STAT_UNPARSED_DROP,		/* TCP to an enforced pod TC cannot judge:
					 * fragments, IP options, short headers */
	SKM_STAT_CONN_POD_SHARE,	/* records not made: the pod's share of
					 * skm_conns was used up */
	SKM_STAT_EVENT_POD_SHARE,	/* close events not sent: over the pod's
					 * rate */
	SKM_STAT__MAX,
};

#define SKM_STAT_NAMES {			\
	"lb_connect", "lb_no_backend", "lb_missing_slot",	\
	"sock_insert", "sock_insert_fail",	\
	"msg_redirect", "msg_redirect_bytes", "msg_pass",	\
	"conn_open", "conn_close", "conn_table_full",	\
	"event_drop", "policy_allow", "policy_deny", "policy_unknown_src",	\
	"plain_allow", "plain_deny",		\
	"capture", "capture_no_listener", "meshd_connect", "hbone_syn",	\
	"tunnel_port_deny", "deny_event_skipped", "msg_held", "policy_revoked",	\
	"tc_allow", "tc_deny", "spoof_drop", "unparsed_drop",	\
	"conn_pod_share", "event_pod_share" }

/* skm_dev_stats: per-CPU packet/byte counters of a pod-facing interface,
 * keyed by ifindex of the node-side veth. "in" is what the pod sent
 * (TC ingress on the node side), "out" what was delivered to it. */
struct skm_dev_stats {
	__u64 pkts_in;
	__u64 bytes_in;
	__u64 pkts_out;
	__u64 bytes_out;
};

/* skm_devs: ifindex -> the workload behind it (for meshctl and cleanup) */
struct skm_dev_val {
	__u32 wl_ip;		/* network order */
	__u32 wl_id;
	char ifname[16];	/* in meshd's netns, which meshctl may not share */
};

/* skm_names: (kind, id) -> human names, written by meshd for meshctl only;
 * no kernel program reads it. */
enum skm_name_kind {
	SKM_NAME_WORKLOAD = 1,	/* id = wl_id */
	SKM_NAME_SERVICE = 2,	/* id = svc_id */
	SKM_NAME_REASON = 3,	/* id = reason_id: ns = deciding policy
				 * "ns/name" (or "-"), name = why */
};

struct skm_name_key {
	__u32 kind;
	__u32 id;
};

struct skm_name_val {
	char name[64];
	char ns[64];
};

/* skm_tun_stats: counters of meshd's tunnel, an array (key = enum
 * skm_tun_stat, value __u64) that meshd creates, pins and refreshes; no
 * kernel program touches it. */
enum skm_tun_stat {
	SKM_TUN_OUT_CAPTURED = 0,	/* captured connections accepted on 15001 */
	SKM_TUN_OUT_NO_DST,		/* ... with no original destination: closed */
	SKM_TUN_OUT_STREAMS_OK,		/* CONNECT answered 200 */
	SKM_TUN_OUT_REFUSED,		/* CONNECT answered otherwise: pod gets RST */
	SKM_TUN_OUT_DIAL_FAILED,	/* TCP to a peer's 15008 failed */
	SKM_TUN_OUT_TLS_FAILED,		/* handshake with a peer failed */
	SKM_TUN_OUT_WRONG_PEER,		/* ... because its identity was not the
					 * destination's */
	SKM_TUN_IN_TLS_OK,		/* HBONE connections accepted */
	SKM_TUN_IN_TLS_FAILED,		/* handshakes refused, any reason */
	SKM_TUN_IN_NO_CLIENT_CERT,
	SKM_TUN_IN_UNTRUSTED,		/* chain not to a mesh root */
	SKM_TUN_IN_EXPIRED,
	SKM_TUN_IN_WRONG_TD,		/* another trust domain */
	SKM_TUN_IN_NO_SPIFFE,		/* no SPIFFE URI SAN */
	SKM_TUN_IN_BAD_REQUEST,		/* 400 */
	SKM_TUN_IN_DENIED,		/* 401: AuthorizationPolicy */
	SKM_TUN_IN_UPSTREAM_FAILED,	/* 503 */
	SKM_TUN_IN_STREAMS_OK,		/* 200 */
	SKM_TUN_BYTES_TO_PEERS,		/* stream payload sent into tunnels */
	SKM_TUN_BYTES_FROM_PEERS,	/* stream payload received from tunnels */
	SKM_TUN_PING_TIMEOUTS,		/* connections closed: no PING answer */
	SKM_TUN_CONNS_OPEN,		/* gauge: TLS connections, both ways */
	SKM_TUN_STREAMS_OPEN,		/* gauge: streams, both ways */
	SKM_TUN_OUT_RETRIED,		/* refused by the peer unprocessed
					 * (REFUSED_STREAM, GOAWAY): sent again */
	SKM_TUN_IN_REVOKED,		/* served streams closed: a new config's
					 * policy denies them */
	SKM_TUN_IN_FORWARDED_IGNORED,	/* CONNECTs whose `forwarded` address is
					 * no workload of the peer's identity:
					 * the TCP peer address stands */
	SKM_TUN_IN_PEER_CONN_LIMIT,	/* inbound connections refused: their
					 * peer address had as many as allowed */
	SKM_TUN_IN_CONN_LIMIT,		/* ... refused: as many in all as allowed */
	SKM_TUN_IN_HANDSHAKE_LIMIT,	/* ... refused: too many handshakes
					 * in progress */
	SKM_TUN_HANDSHAKE_TIMEOUTS,	/* handshakes given up: too slow */
	SKM_TUN_BUFFER_PAUSED,		/* reads paused: a connection's or all
					 * connections' buffers were full */
	SKM_TUN_H2_ERRORS,		/* connections closed with an HTTP/2
					 * error GOAWAY (protocol, flood) */
	SKM_TUN_IN_HANDSHAKE_RATE,	/* inbound connections refused: their
					 * peer address started more handshakes
					 * a second than allowed */
	SKM_TUN_STAT__MAX,
};

#define SKM_TUN_STAT_NAMES {			\
	"out_captured", "out_no_dst", "out_streams_ok", "out_refused",	\
	"out_dial_failed", "out_tls_failed", "out_wrong_peer",	\
	"in_tls_ok", "in_tls_failed", "in_no_client_cert", "in_untrusted",	\
	"in_expired", "in_wrong_trust_domain", "in_no_spiffe_id",	\
	"in_bad_request", "in_denied", "in_upstream_failed", "in_streams_ok",	\
	"bytes_to_peers", "bytes_from_peers", "ping_timeouts",	\
	"conns_open", "streams_open", "out_retried", "in_revoked",	\
	"in_forwarded_ignored", "in_peer_conn_limit", "in_conn_limit",	\
	"in_handshake_limit", "handshake_timeouts", "buffer_paused",	\
	"h2_errors", "in_handshake_rate" }

#define SKM_MAP_TUN_STATS	"skm_tun_stats"

/* skm_tun_bytes: what each open tunnelled stream has carried so far, by
 * the 4-tuple of the pod's socket as its record in skm_conns has it (key
 * struct skm_sock_key). meshd creates it afresh at start, refreshes it
 * once a second and deletes a stream's entry when it ends; no kernel
 * program touches it. The kernel counts a tunnelled socket's bytes only
 * at its close (its packets run no program), so meshctl reads the live
 * counts here. */
struct skm_tun_bytes {
	__u64 tx;		/* the pod socket sent (into the tunnel) */
	__u64 rx;		/* the pod socket was given (from the tunnel) */
};

#define SKM_MAP_TUN_BYTES	"skm_tun_bytes"

/* Map names as pinned (libbpf pins by name under the pin root). */
#define SKM_MAP_SERVICES	"skm_services"
#define SKM_MAP_BACKENDS	"skm_backends"
#define SKM_MAP_WORKLOADS	"skm_workloads"
#define SKM_MAP_SOCK_VIP	"skm_sock_vip"
#define SKM_MAP_SOCK_HASH	"skm_sock_hash"
#define SKM_MAP_SOCKS		"skm_socks"
#define SKM_MAP_CONNS		"skm_conns"
#define SKM_MAP_EVENTS		"skm_events"
#define SKM_MAP_STATS		"skm_stats"
#define SKM_MAP_DEV_STATS	"skm_dev_stats"
#define SKM_MAP_DEVS		"skm_devs"
#define SKM_MAP_NAMES		"skm_names"
#define SKM_MAP_NETNS		"skm_netns"
#define SKM_MAP_VERDICTS	"skm_verdicts"
#define SKM_MAP_PLAIN		"skm_plain"
#define SKM_MAP_OUTBOUND	"skm_outbound"
#define SKM_MAP_MESHD_LEGS	"skm_meshd_legs"
#define SKM_MAP_CONFIG		"skm_config"
#define SKM_MAP_OWNED		"skm_owned"
#define SKM_MAP_POD_SHARE	"skm_pod_share"
#define SKM_MAX_NAMES		(SKM_MAX_WORKLOADS + SKM_MAX_SERVICES)

#endif /* SKMESH_H */
