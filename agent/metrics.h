/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshd's metrics, in the Prometheus text format.
 *
 * Istio's standard TCP metrics (istio_tcp_connections_opened_total,
 * istio_tcp_connections_closed_total, istio_tcp_sent_bytes_total,
 * istio_tcp_received_bytes_total) with ztunnel's label set, so Istio's
 * dashboards and Kiali read them unchanged. Two sources feed them:
 *
 *   - the kernel: a connection of a local pod that is not tunnelled
 *     (same-node, accelerated or not, and plaintext) has a record in
 *     skm_conns while it lives and a close event on skm_events when it
 *     ends. Close events add to the series; a scrape adds what the live
 *     records hold at that moment, so bytes of long connections show up
 *     as they flow, as ztunnel's do.
 *   - the tunnel: each HBONE stream adds its bytes as they move.
 *
 * "received" is what the client sent (the request direction), "sent" what
 * the server sent back, whichever side reports. A series lives as long as
 * meshd; their number is capped (--metrics-max-series) and what would go
 * beyond the cap is counted in one overflow series per reporter.
 */
#ifndef SKM_METRICS_H
#define SKM_METRICS_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct cfg_workload;
struct cfg_service;
struct skm_conn;

/* A growable text buffer. */
struct sbuf {
	char *p;
	size_t len, cap;
	int oom;
};

void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_put(struct sbuf *b, const char *s, size_t n);
void sbuf_free(struct sbuf *b);

enum mx_reporter { MX_SOURCE, MX_DESTINATION };
enum mx_flags { MX_FLAG_NONE, MX_FLAG_DENY, MX_FLAG_CONNECT };

/* What a series is labelled with. NULL: "unknown". */
struct mx_tcp_key {
	enum mx_reporter reporter;
	const struct cfg_workload *src, *dst;
	const char *src_principal, *dst_principal;	/* spiffe://... */
	const struct cfg_service *svc;
	int mtls;				/* connection_security_policy */
	enum mx_flags flags;			/* response_flags */
};

enum mx_field { MX_OPENED, MX_CLOSED, MX_SENT, MX_RECEIVED, MX__NFIELDS };

struct mx_series {
	uint64_t hash;
	char *labels;			/* `k="v",...` */
	atomic_ullong v[MX__NFIELDS];
	/* a scrape's view: the counters, read before the live kernel
	 * records are walked (a connection closing meanwhile is then
	 * missed once, never counted twice), and those records; and what it
	 * showed last, so that no counter ever goes back */
	uint64_t snap[MX__NFIELDS];
	uint64_t live[MX__NFIELDS];
	uint64_t shown[MX__NFIELDS];
};

static inline void mx_add(struct mx_series *s, enum mx_field f, uint64_t n)
{
	if (s)
		atomic_fetch_add_explicit(&s->v[f], n, memory_order_relaxed);
}

/* Paths a connection takes, for skmesh_connections_*. */
enum mx_path { MX_PATH_ACCEL, MX_PATH_TUNNEL, MX_PATH_PASS, MX_PATH__N };

struct metrics_opts {
	const char *node;
	const char *cluster;		/* source_/destination_cluster */
	const char *dns_domain;		/* of service hostnames */
	size_t max_series;
};

struct metrics {
	struct metrics_opts o;
	pthread_mutex_t lock;		/* the series table, the index */
	pthread_mutex_t scrape_lock;	/* one scrape at a time */
	struct mx_series **tab;		/* open addressing, by hash */
	size_t cap, n;
	struct mx_series *overflow[2];
	atomic_ullong closed_by_path[MX_PATH__N];
	/* service index of one config: (ip, port) -> service */
	uint64_t ix_serial;		/* that config's serial: its address
					 * may be a newer model's */
	struct mx_ix_slot *ix;
	size_t ix_cap;
	/* reconciles */
	atomic_ullong reloads_ok, reloads_failed;
	atomic_ullong last_reload_ok_s;
	pthread_mutex_t hist_lock;
	uint64_t rec_buckets[12];	/* cumulative at render */
	uint64_t rec_count;
	double rec_sum;
	double start_time;
};

int metrics_init(struct metrics *m, const struct metrics_opts *o);
void metrics_fini(struct metrics *m);

/* The series for K (created if new; the overflow series beyond the cap). */
struct mx_series *metrics_tcp_series(struct metrics *m, const struct mx_tcp_key *k);

/* The series a kernel connection record belongs to, or NULL when Istio's
 * metrics do not count it (tunnelled: the tunnel counts it; neither end a
 * workload of this node). *RECV_IS_RX: its rx_bytes are the request
 * direction (it is the server's end). */
struct mx_series *metrics_conn_series(struct metrics *m, const struct config *cfg,
				      const struct skm_conn *c, int *recv_is_rx);
/* What metrics_conn_series() found for recent connections of one caller
 * (one thread): the series of a record depends on its addresses, ports
 * and role only, and a flood of short connections has few of those.
 * Emptied when the config changes. */
#define MX_CACHE_SLOTS 1024

struct mx_cache_slot {
	uint32_t lip, rip, oip;
	uint16_t pa, pb;
	uint32_t flags;		/* 0: empty */
	int recv_is_rx;
	struct mx_series *s;	/* NULL: not counted */
};

struct mx_conn_cache {
	const struct config *cfg;
	struct mx_cache_slot slot[MX_CACHE_SLOTS];
};

/* metrics_conn_series() through CACHE (NULL: none). */
struct mx_series *metrics_conn_series_cached(struct metrics *m, struct mx_conn_cache *cache,
					     const struct config *cfg, const struct skm_conn *c,
					     int *recv_is_rx);
/* A close event: adds the record's final counts (CACHE may be NULL). */
void metrics_conn_closed(struct metrics *m, struct mx_conn_cache *cache,
			 const struct config *cfg, const struct skm_conn *c);
/* A connect() the kernel refused on policy (SKM_CONN_DENIED): counted
 * opened and closed by the destination's reporter, response_flags DENY. */
void metrics_conn_denied(struct metrics *m, const struct config *cfg, const struct skm_conn *c);
/* The service a connection to IP:PORT (network order / host order) was
 * for: by VIP and service port, else by endpoint and target port. */
const struct cfg_service *metrics_service_for(struct metrics *m, const struct config *cfg,
					      uint32_t ip, uint16_t port, int by_vip);

/* One config reload: its result and how long the reconcile took. */
void metrics_reload(struct metrics *m, int ok, double seconds);

/* Renders the Istio TCP families. LIVE (may be NULL) is called with the
 * table locked to add the live kernel records: it calls metrics_live_add
 * for each. */
void metrics_live_add(struct mx_series *s, enum mx_field f, uint64_t n);
void metrics_render_tcp(struct metrics *m, struct sbuf *b,
			void (*live)(struct metrics *m, void *arg), void *arg);
/* skmesh_connections_closed_total, reconcile histogram, reloads,
 * series counts, process_* */
void metrics_render_own(struct metrics *m, struct sbuf *b);

/* Prometheus label value escaping (\\, \", \n). */
void mx_escape(struct sbuf *b, const char *s);

#endif /* SKM_METRICS_H */
