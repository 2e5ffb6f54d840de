/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The HBONE tunnel: cross-node traffic between meshed pods, carried as
 * HTTP/2 CONNECT streams over mutual TLS 1.3, as Istio ambient's ztunnel
 * carries it, so a skmesh node and a ztunnel node can talk.
 *
 * meshd listens inside each local pod's network namespace (ztunnel's
 * in-pod mode): on <pod ip>:15001 for the connections the kernel captured
 * (connect4 sends a pod's connect() to a meshed workload on another node
 * there; skm_outbound tells the original destination), and on
 * <pod ip>:15008 for HBONE from other nodes. All of it runs in one thread
 * with its own epoll loop, reading the config through a reference counted
 * snapshot, so a reload never stalls the data it carries.
 */
#ifndef SKM_TUNNEL_H
#define SKM_TUNNEL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

struct alog;
struct config;
struct metrics;

/* A config shared between meshd's threads; freed with the last put. */
struct cfgref {
	struct config *cfg;
	atomic_int refs;
	uint64_t seq;		/* set by its maker before sharing it: which
				 * config this is, for tunnel_applied() */
};

struct cfgref *cfgref_new(struct config *cfg);	/* takes CFG; refs 1 */
struct cfgref *cfgref_get(struct cfgref *r);
void cfgref_put(struct cfgref *r);

struct tunnel_opts {
	const char *node;	/* this node: its Workloads get listeners */
	const char *bpffs;	/* pin root: skm_outbound, skm_tun_stats */
	const char *ca_dir;	/* mesh CA (meshctl ca init) */
	struct cert_signer *signer;	/* or this one (a remote CA): taken */
	const char *cert_dir;	/* where issued certificates go, or NULL */
	int cert_lifetime_s;	/* 0: 24 hours */
	struct alog *access_log;	/* one JSON line per tunnelled stream */
	struct metrics *metrics;	/* Istio's TCP metrics of the streams */
	int drain_s;		/* SIGTERM: how long streams may finish */
	int applied_fd;		/* an eventfd written once the thread has
				 * opened the listeners of a config (0: none;
				 * see tunnel_applied()) */
	struct tunnel_limits {	/* bounds on peers; 0: the default */
		int max_conns;		/* inbound TLS connections in all */
		int max_conns_per_peer;	/* ... from one peer address */
		int max_handshakes;	/* inbound handshakes in progress */
		int handshake_timeout_s;
		long conn_buffer;	/* bytes buffered per connection */
		long buffer_total;	/* ... by all connections */
		int reset_burst;	/* RST_STREAMs a peer may send at once, */
		int reset_rate;		/* ... then a second */
		int handshake_rate;	/* inbound handshakes one peer address
					 * may start a second (a second's
					 * worth at once) */
	} lim;
};

#define TUN_DEF_MAX_CONNS		4096
#define TUN_DEF_MAX_CONNS_PER_PEER	512
#define TUN_DEF_MAX_HANDSHAKES		64
#define TUN_DEF_HANDSHAKE_TIMEOUT_S	10
#define TUN_DEF_CONN_BUFFER		(4L << 20)
#define TUN_DEF_BUFFER_TOTAL		(256L << 20)
#define TUN_DEF_RESET_BURST		1000
#define TUN_DEF_RESET_RATE		100
#define TUN_DEF_HANDSHAKE_RATE		50

/* LIM with every 0 replaced by its default. */
void tunnel_limits_defaults(struct tunnel_limits *lim);

struct tunnel;

/* Makes the tunnel with config R (a reference is taken) and loads the mesh
 * CA, without touching anything else: a CA that cannot serve (unreadable,
 * another trust domain) is said and refused before the data path is
 * loaded. tunnel_stop() frees it if it is never started. */
int tunnel_new(const struct tunnel_opts *o, struct cfgref *r, struct tunnel **out);
/* Starts the tunnel's thread (the data path must be loaded: it opens the
 * pinned maps). On failure T is freed. */
int tunnel_start(struct tunnel *t);

/* Hands a new config to the tunnel: listeners follow the local pods,
 * new streams are judged by its policy. Live streams are untouched. */
void tunnel_update(struct tunnel *t, struct cfgref *r);

/* The seq of the last config whose listeners the tunnel thread has
 * opened (or tried to: a pod whose namespace cannot be entered is logged). */
uint64_t tunnel_applied(const struct tunnel *t);

/* The workload certificates the tunnel holds, for telemetry. */
struct tunnel_cert {
	char id[256];			/* SPIFFE ID */
	char serial[80];		/* hex */
	time_t not_before, not_after;
	int renew_failures;
};

/* A copy (free it) of what the tunnel thread last published: 0, or
 * -ENOMEM. */
int tunnel_certs(struct tunnel *t, struct tunnel_cert **out, size_t *n);

/* What the tunnel thread last published of its certificates' counts. */
struct certmgr_stats;
void tunnel_cert_stats(struct tunnel *t, struct certmgr_stats *st);

/* Stops accepting, sends GOAWAY, lets streams finish for up to the drain
 * time, then closes everything and joins the thread (T may be NULL). */
void tunnel_stop(struct tunnel *t);

#endif /* SKM_TUNNEL_H */
