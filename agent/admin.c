// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <jansson.h>
#include <microhttpd.h>
#include <zlib.h>

#include "admin.h"
#include "alog.h"
#include "certs.h"
#include "grpc.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "skmesh.h"
#include "skmesh.skel.h"
#include "tunnel.h"

#define PORT_ADMIN	15000
#define PORT_METRICS	15020
#define PORT_READY	15021

/* Map fills are counted by walking the keys: at most this often. */
#define FILL_CACHE_S	10

struct map_fill {
	char name[BPF_OBJ_NAME_LEN];
	unsigned int type, max_entries;
	long entries;		/* -1: not counted (arrays, ring buffer) */
};

struct admin {
	struct admin_opts o;
	struct metrics *m;
	struct loader *l;
	struct alog *alog;
	struct MHD_Daemon *d[3];
	struct admin *self[3];		/* each daemon's cls: &self[endpoint] */
	pthread_mutex_t lock;
	/* held (read) by a request while it reads the loader's maps, so
	 * that meshd lets go of them (write) only between requests */
	pthread_rwlock_t l_lock;
	struct cfgref *cfg;
	struct tunnel *tun;
	struct admin_source src;	/* under lock */
	int ready;
	char why[256];
	char reload_err[512];
	time_t applied_at;
	int tun_stats_fd;
	/* the live walk's buffer and series cache (one scrape at a time) */
	struct mx_conn_cache *live_cache;
	/* map fills, refreshed at most every FILL_CACHE_S */
	pthread_mutex_t fill_lock;
	struct map_fill *fills;
	size_t nfills;
	time_t fills_at;
};


/* --- addresses --------------------------------------------------------- */

int admin_parse_addr(const char *s, uint16_t defport, struct sockaddr_storage *ss,
		     unsigned int *sslen)
{
	char host[128];
	const char *port = NULL;
	unsigned long p = defport;
	char *end;

	if (!strcmp(s, "off"))
		return 1;
	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (!rb || (size_t)(rb - s - 1) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, rb - s - 1);
		host[rb - s - 1] = 0;
		if (rb[1] == ':')
			port = rb + 2;
		else if (rb[1])
			return -EINVAL;
	} else {
		const char *c = strchr(s, ':');

		if (c && strchr(c + 1, ':'))
			c = NULL;	/* a bare IPv6 address */
		if (snprintf(host, sizeof(host), "%.*s", c ? (int)(c - s) : (int)strlen(s), s) >=
		    (int)sizeof(host))
			return -EINVAL;
		if (c)
			port = c + 1;
	}
	if (port) {
		errno = 0;
		p = strtoul(port, &end, 10);
		if (errno || !*port || *end || p > 65535)
			return -EINVAL;
	}
	if (!host[0])
		snprintf(host, sizeof(host), "0.0.0.0");
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)p);
		*sslen = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)p);
		*sslen = sizeof(*sin6);
		return 0;
	}
	return -EINVAL;
}

/* --- what the endpoints read ------------------------------------------- */

static struct cfgref *cfg_get(struct admin *a)
{
	struct cfgref *r;

	pthread_mutex_lock(&a->lock);
	r = a->cfg ? cfgref_get(a->cfg) : NULL;
	pthread_mutex_unlock(&a->lock);
	return r;
}

void admin_set_config(struct admin *a, struct cfgref *r)
{
	struct cfgref *old;

	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	old = a->cfg;
	a->cfg = r ? cfgref_get(r) : NULL;
	a->applied_at = time(NULL);
	pthread_mutex_unlock(&a->lock);
	if (old)
		cfgref_put(old);
}

void admin_set_tunnel(struct admin *a, struct tunnel *t)
{
	char path[PATH_MAX];

	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->tun = t;
	if (t && a->tun_stats_fd < 0) {
		snprintf(path, sizeof(path), "%s/%s", a->o.bpffs, SKM_MAP_TUN_STATS);
		a->tun_stats_fd = bpf_obj_get(path);
	}
	pthread_mutex_unlock(&a->lock);
}

void admin_set_ready(struct admin *a, int ready, const char *why)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->ready = ready;
	snprintf(a->why, sizeof(a->why), "%s", why ? why : "");
	pthread_mutex_unlock(&a->lock);
}

void admin_set_reload_error(struct admin *a, const char *err)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	snprintf(a->reload_err, sizeof(a->reload_err), "%s", err ? err : "");
	pthread_mutex_unlock(&a->lock);
}

/* --- the live kernel records, for the Istio series ---------------------- */

struct live_arg {
	struct admin *a;
	struct metrics *m;
	const struct config *cfg;
	uint64_t open_by_path[MX_PATH__N];
};

static void live_one(struct metrics *m, struct live_arg *la, const struct skm_conn *c)
{
	struct mx_series *s;
	int recv_is_rx;

	if (c->state == BPF_TCP_CLOSE)
		return;
	la->open_by_path[c->flags & SKM_CONN_TUNNEL ? MX_PATH_TUNNEL :
			 c->flags & SKM_CONN_ACCEL ? MX_PATH_ACCEL : MX_PATH_PASS]++;
	s = metrics_conn_series_cached(m, la->a->live_cache, la->cfg, c, &recv_is_rx);
	if (!s)
		return;
	metrics_live_add(s, MX_OPENED, 1);
	metrics_live_add(s, MX_RECEIVED, recv_is_rx ? c->rx_bytes : c->tx_bytes);
	metrics_live_add(s, MX_SENT, recv_is_rx ? c->tx_bytes : c->rx_bytes);
}

static int live_rec(const void *cookie, const void *c, void *arg)
{
	struct live_arg *la = arg;

	(void)cookie;
	live_one(la->m, la, c);
	return 0;
}

/* Every live record of skm_conns, 512 a call (a key walk would be two
 * calls per connection: 40,000 for 20,000 of them). */
static void live_conns(struct metrics *m, void *arg)
{
	struct live_arg *la = arg;
	int err;

	la->m = m;
	err = map_batch_each(bpf_map__fd(la->a->l->skel->maps.skm_conns), sizeof(__u64),
			     sizeof(struct skm_conn), 512, live_rec, la);
	if (err)	/* the rest are not shown this time */
		pr_debug("metrics: reading skm_conns: %s\n", strerror(-err));
}

/* --- /metrics ---------------------------------------------------------- */

static void kernel_stats(struct admin *a, struct sbuf *b, const uint64_t *open_by_path)
{
	static const char *const names[] = SKM_STAT_NAMES;
	static const char *const paths[] = { "accelerated", "tunnelled", "passthrough" };
	int fd = bpf_map__fd(a->l->skel->maps.skm_stats);
	int ncpu = libbpf_num_possible_cpus();
	uint64_t tot[SKM_STAT__MAX] = {}, *v;

	if (ncpu <= 0)
		return;
	v = calloc(ncpu, sizeof(*v));
	if (!v)
		return;
	for (__u32 i = 0; i < SKM_STAT__MAX; i++) {
		if (bpf_map_lookup_elem(fd, &i, v))
			continue;
		for (int c = 0; c < ncpu; c++)
			tot[i] += v[c];
	}
	free(v);

	sbuf_printf(b, "# HELP skmesh_connections_open Connections of this node's sockets "
		    "open now, by path.\n# TYPE skmesh_connections_open gauge\n");
	for (int p = 0; p < MX_PATH__N; p++)
		sbuf_printf(b, "skmesh_connections_open{path=\"%s\"} %llu\n", paths[p],
			    (unsigned long long)open_by_path[p]);
	sbuf_printf(b, "# HELP skmesh_sk_msg_redirected_bytes_total Bytes sk_msg moved between "
		    "same-node sockets without the TCP/IP stack.\n"
		    "# TYPE skmesh_sk_msg_redirected_bytes_total counter\n"
		    "skmesh_sk_msg_redirected_bytes_total %llu\n"
		    "# HELP skmesh_sk_msg_redirected_messages_total Messages sk_msg redirected.\n"
		    "# TYPE skmesh_sk_msg_redirected_messages_total counter\n"
		    "skmesh_sk_msg_redirected_messages_total %llu\n",
		    (unsigned long long)tot[SKM_STAT_MSG_REDIRECT_BYTES],
		    (unsigned long long)tot[SKM_STAT_MSG_REDIRECT]);
	sbuf_printf(b, "# HELP skmesh_policy_denials_total Connections refused by policy, by "
		    "where and why.\n# TYPE skmesh_policy_denials_total counter\n"
		    "skmesh_policy_denials_total{reason=\"authorization\",enforcer=\"connect\"} %llu\n"
		    "skmesh_policy_denials_total{reason=\"plaintext\",enforcer=\"tc\"} %llu\n"
		    "skmesh_policy_denials_total{reason=\"tunnel_port\",enforcer=\"tc\"} %llu\n"
		    "skmesh_policy_denials_total{reason=\"authorization\",enforcer=\"tc\"} %llu\n"
		    "skmesh_policy_denials_total{reason=\"unparsed\",enforcer=\"tc\"} %llu\n"
		    "skmesh_policy_denials_total{reason=\"spoofed_source\",enforcer=\"tc\"} %llu\n",
		    (unsigned long long)tot[SKM_STAT_POLICY_DENY],
		    (unsigned long long)tot[SKM_STAT_PLAIN_DENY],
		    (unsigned long long)tot[SKM_STAT_TUNNEL_PORT_DENY],
		    (unsigned long long)tot[SKM_STAT_TC_DENY],
		    (unsigned long long)tot[SKM_STAT_UNPARSED_DROP],
		    (unsigned long long)tot[SKM_STAT_SPOOF_DROP]);
	if (a->tun_stats_fd >= 0) {
		__u32 k = SKM_TUN_IN_DENIED;
		uint64_t d = 0;

		bpf_map_lookup_elem(a->tun_stats_fd, &k, &d);
		sbuf_printf(b, "skmesh_policy_denials_total{reason=\"authorization\","
			    "enforcer=\"tunnel\"} %llu\n", (unsigned long long)d);
	}
	sbuf_printf(b, "# HELP skmesh_ringbuf_drops_total Close events lost because the ring "
		    "buffer was full (their connections are missing from the access log).\n"
		    "# TYPE skmesh_ringbuf_drops_total counter\nskmesh_ringbuf_drops_total %llu\n",
		    (unsigned long long)tot[SKM_STAT_EVENT_DROP]);
	sbuf_printf(b, "# HELP skmesh_datapath_events_total Every counter of the kernel "
		    "programs (skm_stats), by name.\n# TYPE skmesh_datapath_events_total counter\n");
	for (int i = 0; i < SKM_STAT__MAX; i++)
		sbuf_printf(b, "skmesh_datapath_events_total{event=\"%s\"} %llu\n", names[i],
			    (unsigned long long)tot[i]);
}

struct share_arg {
	struct admin *a;
	struct sbuf *b;
	int pass;	/* 0: connection records, 1: close events */
};

static int share_line(const void *key, const void *val, void *arg)
{
	const struct skm_pod_share *ps = val;
	struct share_arg *sa = arg;
	struct skm_name_key nk = { .kind = SKM_NAME_WORKLOAD, .id = *(const __u32 *)key };
	struct skm_name_val nv = {};
	uint64_t n = sa->pass ? ps->events_refused : ps->conns_refused;

	if (!n)
		return 0;
	if (!nk.id || bpf_map_lookup_elem(bpf_map__fd(sa->a->l->skel->maps.skm_names), &nk, &nv))
		snprintf(nv.name, sizeof(nv.name), "%s", nk.id ? "unknown" : "none");
	sbuf_printf(sa->b, "skmesh_pod_share_refused_total{namespace=\"%s\",workload=\"%s\","
		    "table=\"%s\"} %llu\n", nv.ns, nv.name,
		    sa->pass ? "events" : "connections", (unsigned long long)n);
	return 0;
}

/* The pods that went over their share of the node-wide tables
 * (skm_pod_share), and what they were refused. */
static void share_stats(struct admin *a, struct sbuf *b)
{
	struct share_arg sa = { .a = a, .b = b };

	sbuf_printf(b, "# HELP skmesh_pod_share_refused_total What a local pod was refused "
		    "over its share of the node's tables: connection records (--conns-per-pod) "
		    "and close events (--events-per-pod).\n"
		    "# TYPE skmesh_pod_share_refused_total counter\n");
	for (sa.pass = 0; sa.pass < 2; sa.pass++)
		map_batch_each(bpf_map__fd(a->l->skel->maps.skm_pod_share), sizeof(__u32),
			       sizeof(struct skm_pod_share), 256, share_line, &sa);
}

static void tunnel_stats(struct admin *a, struct sbuf *b)
{
	static const char *const names[] = SKM_TUN_STAT_NAMES;

	if (a->tun_stats_fd < 0)
		return;
	sbuf_printf(b, "# HELP skmesh_tunnel_events_total The HBONE tunnel's counters "
		    "(skm_tun_stats), by name.\n# TYPE skmesh_tunnel_events_total counter\n");
	for (__u32 i = 0; i < SKM_TUN_STAT__MAX; i++) {
		uint64_t v = 0;

		if (i == SKM_TUN_CONNS_OPEN || i == SKM_TUN_STREAMS_OPEN)
			continue;
		bpf_map_lookup_elem(a->tun_stats_fd, &i, &v);
		sbuf_printf(b, "skmesh_tunnel_events_total{event=\"%s\"} %llu\n", names[i],
			    (unsigned long long)v);
	}
	for (__u32 i = SKM_TUN_CONNS_OPEN; i <= SKM_TUN_STREAMS_OPEN; i++) {
		uint64_t v = 0;

		bpf_map_lookup_elem(a->tun_stats_fd, &i, &v);
		sbuf_printf(b, "# HELP skmesh_tunnel_%s HBONE %s open now.\n"
			    "# TYPE skmesh_tunnel_%s gauge\nskmesh_tunnel_%s %lld\n",
			    names[i], i == SKM_TUN_CONNS_OPEN ? "TLS connections" : "streams",
			    names[i], names[i], (long long)v);
	}
}

static int countable(unsigned int type)
{
	return type == BPF_MAP_TYPE_HASH || type == BPF_MAP_TYPE_LRU_HASH ||
	       type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
	       type == BPF_MAP_TYPE_LPM_TRIE || type == BPF_MAP_TYPE_SOCKHASH;
}

static int count_one(const void *key, const void *val, void *arg)
{
	(void)key; (void)val;
	++*(long *)arg;
	return 0;
}

/* Entries of the map FD: read 512 a call, else key by key (two calls per
 * entry: 200,000 for skm_backends at 100,000 entries) where the map type
 * has no batch lookup (SOCKHASH). -1 when neither works. */
static long map_count(int fd, unsigned int type, unsigned int ks, unsigned int vs,
		      unsigned int max_entries)
{
	int percpu = type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
	int ncpu = percpu ? libbpf_num_possible_cpus() : 1;
	size_t vsz = percpu ? ((vs + 7) & ~7u) * (size_t)(ncpu > 0 ? ncpu : 1) : vs;
	size_t budget = 2 * (size_t)max_entries + 1;
	char key[256], nk[256];
	long cnt = 0;
	int err = map_batch_each(fd, ks, vsz, 512, count_one, &cnt);

	if (err != -EOPNOTSUPP)
		return err ? -1 : cnt;
	if (ks > sizeof(key))
		return -1;
	cnt = 0;
	for (void *prev = NULL; budget-- && !bpf_map_get_next_key(fd, prev, nk); prev = key) {
		memcpy(key, nk, ks);
		cnt++;
	}
	return cnt;
}

/* Walks every countable map of the data path; cached FILL_CACHE_S. */
static void refresh_fills(struct admin *a)
{
	struct bpf_map *map;
	size_t n = 0;
	time_t now = time(NULL);

	if (a->fills && now - a->fills_at < FILL_CACHE_S)
		return;
	bpf_object__for_each_map(map, a->l->skel->obj)
		n++;
	free(a->fills);
	a->fills = calloc(n, sizeof(*a->fills));
	a->nfills = 0;
	if (!a->fills)
		return;
	bpf_object__for_each_map(map, a->l->skel->obj) {
		struct map_fill *f = &a->fills[a->nfills];
		int fd = bpf_map__fd(map);

		if (fd < 0 || !strcmp(bpf_map__name(map), ".rodata") ||
		    strchr(bpf_map__name(map), '.'))
			continue;
		snprintf(f->name, sizeof(f->name), "%s", bpf_map__name(map));
		f->type = bpf_map__type(map);
		f->max_entries = bpf_map__max_entries(map);
		a->nfills++;
		f->entries = countable(f->type) ?
			     map_count(fd, f->type, bpf_map__key_size(map),
				       bpf_map__value_size(map), f->max_entries) : -1;
	}
	a->fills_at = now;
}

static void map_fill(struct admin *a, struct sbuf *b)
{
	pthread_mutex_lock(&a->fill_lock);
	refresh_fills(a);
	sbuf_printf(b, "# HELP skmesh_map_entries Entries in a data-path map (hash-like maps; "
		    "counted at most every %d s).\n# TYPE skmesh_map_entries gauge\n", FILL_CACHE_S);
	for (size_t i = 0; i < a->nfills; i++)
		if (a->fills[i].entries >= 0)
			sbuf_printf(b, "skmesh_map_entries{map=\"%s\"} %ld\n", a->fills[i].name,
				    a->fills[i].entries);
	sbuf_printf(b, "# HELP skmesh_map_capacity max_entries of a data-path map.\n"
		    "# TYPE skmesh_map_capacity gauge\n");
	for (size_t i = 0; i < a->nfills; i++)
		if (a->fills[i].entries >= 0)
			sbuf_printf(b, "skmesh_map_capacity{map=\"%s\"} %u\n", a->fills[i].name,
				    a->fills[i].max_entries);
	sbuf_printf(b, "# HELP skmesh_map_fill_ratio entries / capacity of a data-path map.\n"
		    "# TYPE skmesh_map_fill_ratio gauge\n");
	for (size_t i = 0; i < a->nfills; i++)
		if (a->fills[i].entries >= 0 && a->fills[i].max_entries)
			sbuf_printf(b, "skmesh_map_fill_ratio{map=\"%s\"} %.6f\n", a->fills[i].name,
				    (double)a->fills[i].entries / a->fills[i].max_entries);
	pthread_mutex_unlock(&a->fill_lock);
}

static void cert_count_metrics(const struct certmgr_stats *st, struct sbuf *b)
{
	sbuf_printf(b, "# HELP skmesh_certificate_issued_total First certificates of a local "
		    "identity meshd got.\n# TYPE skmesh_certificate_issued_total counter\n"
		    "skmesh_certificate_issued_total %" PRIu64 "\n", st->issued);
	sbuf_printf(b, "# HELP skmesh_certificate_renewed_total Certificates that replaced "
		    "one of the same identity.\n# TYPE skmesh_certificate_renewed_total counter\n"
		    "skmesh_certificate_renewed_total %" PRIu64 "\n", st->renewed);
	sbuf_printf(b, "# HELP skmesh_certificate_failed_total Certificate requests that "
		    "failed, by the CA's gRPC status (local: on meshd's side: no connection, "
		    "no token, an answer not believed).\n"
		    "# TYPE skmesh_certificate_failed_total counter\n");
	for (int i = 1; i <= SIGN_STATUS_MAX; i++)
		sbuf_printf(b, "skmesh_certificate_failed_total{status=\"%s\"} %" PRIu64 "\n",
			    i < SIGN_STATUS_MAX ? grpc_status_name(i) : "local", st->failed[i]);
	sbuf_printf(b, "# HELP skmesh_certificate_dropped_total Certificates dropped, with "
		    "their keys, when the last local pod of their identity left.\n"
		    "# TYPE skmesh_certificate_dropped_total counter\n"
		    "skmesh_certificate_dropped_total %" PRIu64 "\n", st->dropped);
	sbuf_printf(b, "# HELP skmesh_certificate_requests_in_flight Certificate requests "
		    "asked of the CA and not answered yet.\n"
		    "# TYPE skmesh_certificate_requests_in_flight gauge\n"
		    "skmesh_certificate_requests_in_flight %d\n", st->inflight);
	sbuf_printf(b, "# HELP skmesh_certificate_trust_roots Root certificates peers may "
		    "chain to (two during a rotation).\n"
		    "# TYPE skmesh_certificate_trust_roots gauge\n"
		    "skmesh_certificate_trust_roots %d\n", st->roots);
}

static void cert_metrics(struct admin *a, struct sbuf *b)
{
	struct certmgr_stats st;
	struct tunnel_cert *c = NULL;
	size_t n = 0;
	struct tunnel *t;

	/* under the lock: meshd lets go of the tunnel only through it */
	pthread_mutex_lock(&a->lock);
	t = a->tun;
	if (!t || tunnel_certs(t, &c, &n)) {
		pthread_mutex_unlock(&a->lock);
		return;
	}
	tunnel_cert_stats(t, &st);
	pthread_mutex_unlock(&a->lock);
	cert_count_metrics(&st, b);
	sbuf_printf(b, "# HELP skmesh_certificate_expiry_timestamp_seconds When a workload "
		    "certificate meshd holds expires.\n"
		    "# TYPE skmesh_certificate_expiry_timestamp_seconds gauge\n");
	for (size_t i = 0; i < n; i++) {
		sbuf_printf(b, "skmesh_certificate_expiry_timestamp_seconds{identity=\"");
		mx_escape(b, c[i].id);
		sbuf_printf(b, "\"} %lld\n", (long long)c[i].not_after);
	}
	sbuf_printf(b, "# HELP skmesh_certificate_renewal_failures Failed renewals in a row "
		    "of a workload certificate (0 once renewed).\n"
		    "# TYPE skmesh_certificate_renewal_failures gauge\n");
	for (size_t i = 0; i < n; i++) {
		sbuf_printf(b, "skmesh_certificate_renewal_failures{identity=\"");
		mx_escape(b, c[i].id);
		sbuf_printf(b, "\"} %d\n", c[i].renew_failures);
	}
	free(c);
}

void admin_set_source(struct admin *a, const struct admin_source *s)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->src = s ? *s : (struct admin_source){};
	pthread_mutex_unlock(&a->lock);
}

static struct admin_source source_of(struct admin *a)
{
	struct admin_source s;

	pthread_mutex_lock(&a->lock);
	s = a->src;
	pthread_mutex_unlock(&a->lock);
	return s;
}

static void render_metrics(struct admin *a, struct sbuf *b)
{
	struct cfgref *r = cfg_get(a);
	struct live_arg la = { .a = a, .cfg = r ? r->cfg : NULL };
	int ready, loaded;

	pthread_mutex_lock(&a->lock);
	loaded = a->l != NULL;
	pthread_mutex_unlock(&a->lock);
	metrics_render_tcp(a->m, b, loaded ? live_conns : NULL, &la);
	metrics_render_own(a->m, b);
	if (loaded) {
		kernel_stats(a, b, la.open_by_path);
		share_stats(a, b);
		map_fill(a, b);
	}
	tunnel_stats(a, b);
	cert_metrics(a, b);
	{
		struct admin_source src = source_of(a);

		if (src.metrics)
			src.metrics(src.arg, b);
	}
	sbuf_printf(b, "# HELP skmesh_access_log_lines_total Access-log lines written.\n"
		    "# TYPE skmesh_access_log_lines_total counter\n"
		    "skmesh_access_log_lines_total %llu\n"
		    "# HELP skmesh_access_log_dropped_total Access-log lines not written: over "
		    "--access-log-rate.\n# TYPE skmesh_access_log_dropped_total counter\n"
		    "skmesh_access_log_dropped_total %llu\n",
		    (unsigned long long)atomic_load(&a->alog->written),
		    (unsigned long long)atomic_load(&a->alog->dropped));
	pthread_mutex_lock(&a->lock);
	ready = a->ready;
	pthread_mutex_unlock(&a->lock);
	sbuf_printf(b, "# HELP skmesh_ready 1 when /healthz/ready answers 200.\n"
		    "# TYPE skmesh_ready gauge\nskmesh_ready %d\n"
		    "# HELP skmesh_build_info skmesh's version.\n# TYPE skmesh_build_info gauge\n"
		    "skmesh_build_info{version=\"%s\"} 1\n", ready, SKM_VERSION);
	if (r)
		cfgref_put(r);
}

/* --- /config_dump ------------------------------------------------------ */

static json_t *ipj(uint32_t ip)
{
	char s[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &ip, s, sizeof(s));
	return json_string(s);
}

static json_t *labels_json(const struct cfg_labels *l)
{
	json_t *o = json_object();

	for (size_t i = 0; i < l->n; i++)
		json_object_set_new(o, l->v[i].key, json_string(l->v[i].val));
	return o;
}

static json_t *pos_json(const struct cfg_pos *p)
{
	char s[PATH_MAX + 32];

	if (!p->file)
		return json_null();
	snprintf(s, sizeof(s), "%s:%u:%u", p->file, p->line, p->col);
	return json_string(s);
}

static json_t *warnings_json(char **w, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(w[i]));
	return a;
}

static json_t *dump_config(struct admin *a, const struct config *cfg)
{
	json_t *o = json_object(), *wls = json_array(), *svcs = json_array();
	json_t *aps = json_array(), *pas = json_array();
	static const char *const modes[] = { "UNSET", "DISABLE", "PERMISSIVE", "STRICT" };

	for (size_t i = 0; i < cfg->nwls; i++) {
		const struct cfg_workload *w = &cfg->wls[i];
		char id[512];

		config_workload_id(cfg, w, id, sizeof(id));
		json_array_append_new(wls, json_pack("{s:s, s:s, s:s?, s:o, s:s?, s:b, s:s, s:o, "
						     "s:s?, s:o}",
			"name", w->name, "namespace", w->ns, "serviceAccount", w->sa,
			"ip", ipj(w->ip), "node", w->node,
			"local", w->node && !strcmp(w->node, a->o.node),
			"identity", id, "labels", labels_json(&w->labels), "netns", w->netns,
			"source", pos_json(&w->pos)));
	}
	for (size_t i = 0; i < cfg->nsvcs; i++) {
		const struct cfg_service *s = &cfg->svcs[i];
		json_t *ports = json_array(), *eps = json_array();

		for (size_t p = 0; p < s->nports; p++)
			json_array_append_new(ports, json_pack("{s:i, s:i, s:s, s:s?}",
				"port", s->ports[p].port, "targetPort", s->ports[p].target,
				"protocol", s->ports[p].proto == IPPROTO_UDP ? "UDP" : "TCP",
				"name", s->ports[p].name));
		for (size_t e = 0; e < s->neps; e++)
			json_array_append_new(eps, json_pack("{s:o, s:i}", "ip", ipj(s->eps[e].ip),
							     "weight", s->eps[e].weight));
		json_array_append_new(svcs, json_pack("{s:s, s:s, s:o, s:o, s:o, s:o}",
			"name", s->name, "namespace", s->ns,
			"vip", s->vip ? ipj(s->vip) : json_null(), "ports", ports,
			"endpoints", eps, "source", pos_json(&s->pos)));
	}
	for (size_t i = 0; i < cfg->nauthz; i++) {
		const struct cfg_authz *p = &cfg->authz[i];
		const char *scope = !p->has_selector || !p->selector.n ?
				    (!strcmp(p->ns, cfg->root_ns) ? "mesh" : "namespace") :
				    "workload";

		json_array_append_new(aps, json_pack("{s:s, s:s, s:s, s:s, s:o, s:i, s:b, s:o, "
						     "s:o}",
			"name", p->name, "namespace", p->ns,
			"action", p->action == POL_DENY ? "DENY" : "ALLOW", "scope", scope,
			"selector", labels_json(&p->selector), "rules", (int)p->nrules,
			"enforced", !p->target_ref && !p->dry_run,
			"warnings", warnings_json(p->warnings, p->nwarnings),
			"source", pos_json(&p->pos)));
	}
	for (size_t i = 0; i < cfg->npas; i++) {
		const struct cfg_peerauthn *p = &cfg->pas[i];
		json_t *ports = json_object();

		for (size_t k = 0; k < p->nports; k++) {
			char pk[8];

			snprintf(pk, sizeof(pk), "%u", p->ports[k].port);
			json_object_set_new(ports, pk, json_string(modes[p->ports[k].mode]));
		}
		json_array_append_new(pas, json_pack("{s:s, s:s, s:s, s:o, s:o, s:b, s:o, s:o}",
			"name", p->name, "namespace", p->ns, "mode", modes[p->mode],
			"selector", labels_json(&p->selector), "portLevelMtls", ports,
			"enforced", !p->ignored,
			"warnings", warnings_json(p->warnings, p->nwarnings),
			"source", pos_json(&p->pos)));
	}
	json_object_set_new(o, "trustDomain", json_string(cfg->trust_domain));
	json_object_set_new(o, "rootNamespace", json_string(cfg->root_ns));
	json_object_set_new(o, "workloads", wls);
	json_object_set_new(o, "services", svcs);
	json_object_set_new(o, "authorizationPolicies", aps);
	json_object_set_new(o, "peerAuthentications", pas);
	return o;
}

static json_t *dump_bpf(struct admin *a)
{
	static const char *const cg_links[][2] = {
		{ "skm_connect4", "connect4" }, { "skm_getpeername4", "getpeername4" },
		{ "skm_recvmsg4", "recvmsg4" }, { "skm_sockops", "sockops" },
	};
	json_t *o = json_object(), *progs = json_array(), *maps = json_array();
	struct bpf_program *p;

	bpf_object__for_each_program(p, a->l->skel->obj) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		const char *attached = NULL;
		char path[PATH_MAX];

		if (bpf_program__fd(p) < 0)
			continue;	/* not loaded (the other sk_msg program) */
		bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len);
		for (size_t i = 0; i < sizeof(cg_links) / sizeof(cg_links[0]); i++) {
			if (strcmp(bpf_program__name(p), cg_links[i][0]))
				continue;
			snprintf(path, sizeof(path), "%s/%s/%s", a->o.bpffs, SKM_PIN_LINKS,
				 cg_links[i][1]);
			attached = access(path, F_OK) ? "missing" : "cgroup link pinned";
		}
		if (p == a->l->sk_msg)
			attached = "skm_sock_hash";
		else if (!attached)
			attached = "tc on pod interfaces";
		json_array_append_new(progs, json_pack("{s:s, s:s, s:I, s:s}",
			"name", bpf_program__name(p), "section", bpf_program__section_name(p),
			"id", (json_int_t)info.id, "attach", attached));
	}
	pthread_mutex_lock(&a->fill_lock);
	refresh_fills(a);
	for (size_t i = 0; i < a->nfills; i++) {
		json_t *m = json_pack("{s:s, s:i, s:I}", "name", a->fills[i].name,
				      "type", (int)a->fills[i].type,
				      "maxEntries", (json_int_t)a->fills[i].max_entries);

		if (a->fills[i].entries >= 0)
			json_object_set_new(m, "entries", json_integer(a->fills[i].entries));
		json_array_append_new(maps, m);
	}
	pthread_mutex_unlock(&a->fill_lock);
	json_object_set_new(o, "pinRoot", json_string(a->o.bpffs));
	json_object_set_new(o, "cgroup", json_string(a->o.cgroup));
	json_object_set_new(o, "programs", progs);
	json_object_set_new(o, "maps", maps);
	return o;
}

static json_t *dump_certs(struct admin *a)
{
	json_t *arr = json_array();
	struct tunnel_cert *c = NULL;
	size_t n = 0;
	struct tunnel *t;
	time_t now = time(NULL);

	pthread_mutex_lock(&a->lock);
	t = a->tun;
	if (!t || tunnel_certs(t, &c, &n)) {
		pthread_mutex_unlock(&a->lock);
		return arr;
	}
	pthread_mutex_unlock(&a->lock);
	for (size_t i = 0; i < n; i++) {
		char nb[32], na[32];
		struct tm tm;

		strftime(nb, sizeof(nb), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&c[i].not_before, &tm));
		strftime(na, sizeof(na), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&c[i].not_after, &tm));
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:I, s:i}",
			"identity", c[i].id, "serial", c[i].serial, "notBefore", nb,
			"notAfter", na, "expiresInSeconds", (json_int_t)(c[i].not_after - now),
			"renewalFailures", c[i].renew_failures));
	}
	free(c);
	return arr;
}

static char *render_config_dump(struct admin *a)
{
	struct cfgref *r = cfg_get(a);
	json_t *o = json_object();
	char applied[32], *s;
	struct tm tm;
	time_t at;
	int ready;

	pthread_mutex_lock(&a->lock);
	at = a->applied_at;
	ready = a->ready;
	json_object_set_new(o, "node", json_string(a->o.node));
	json_object_set_new(o, "configPath", a->o.config_path ?
			    json_string(a->o.config_path) : json_null());
	json_object_set_new(o, "lastReloadError", a->reload_err[0] ?
			    json_string(a->reload_err) : json_null());
	json_object_set_new(o, "ready", json_boolean(ready));
	if (!ready)
		json_object_set_new(o, "notReadyReason", json_string(a->why));
	pthread_mutex_unlock(&a->lock);
	strftime(applied, sizeof(applied), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&at, &tm));
	json_object_set_new(o, "configAppliedAt", json_string(applied));
	json_object_set_new(o, "version", json_string(SKM_VERSION));
	{
		struct admin_source src = source_of(a);

		json_object_set_new(o, "source", src.dump ? src.dump(src.arg) :
				    json_pack("{s:s, s:s?}", "type", "file",
					      "path", a->o.config_path));
	}
	if (r) {
		json_t *c = dump_config(a, r->cfg);

		if (c)
			json_object_update(o, c);	/* takes references, not C */
		json_decref(c);
	}
	json_object_set_new(o, "certificates", dump_certs(a));
	pthread_mutex_lock(&a->lock);
	ready = a->l != NULL;
	pthread_mutex_unlock(&a->lock);
	json_object_set_new(o, "bpf", ready ? dump_bpf(a) : json_null());
	s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (r)
		cfgref_put(r);
	return s;
}

/* --- HTTP -------------------------------------------------------------- */

/* Whether an Accept-Encoding value AE (NULL: none) takes gzip. */
static int accepts_gzip(const char *ae)
{
	const char *p;

	if (!ae)
		return 0;
	for (p = strcasestr(ae, "gzip"); p; p = strcasestr(p + 4, "gzip")) {
		const char *q = p + 4;

		while (*q == ' ')
			q++;
		/* "gzip;q=0" refuses it */
		if (!strncmp(q, ";q=0", 4) && (q[4] == 0 || q[4] == ',' ||
					      (q[4] == '.' && strspn(q + 5, "0") ==
					       strcspn(q + 5, ", "))))
			return 0;
		return 1;
	}
	return 0;
}

static int gzip_buf(const char *in, size_t len, char **out, size_t *outlen)
{
	z_stream z = {};
	size_t cap = compressBound(len) + 64;
	char *buf = malloc(cap);

	if (!buf)
		return -1;
	if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		free(buf);
		return -1;
	}
	z.next_in = (Bytef *)in;
	z.avail_in = len;
	z.next_out = (Bytef *)buf;
	z.avail_out = cap;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
		deflateEnd(&z);
		free(buf);
		return -1;
	}
	*outlen = z.total_out;
	deflateEnd(&z);
	*out = buf;
	return 0;
}

/* R answers with BODY (malloc'ed, LEN bytes; taken), gzipped when GZIP
 * and that works. -ENOMEM (BODY freed) when BODY is NULL. */
static int reply_text(struct admin_reply *r, unsigned int code, const char *type,
		      char *body, size_t len, int gzip)
{
	char *z = NULL;
	size_t zlen;

	if (!body)
		return -ENOMEM;
	if (gzip && !gzip_buf(body, len, &z, &zlen)) {
		free(body);
		body = z;
		len = zlen;
	} else {
		gzip = 0;
	}
	*r = (struct admin_reply){ .code = code, .type = type, .body = body, .len = len,
				   .gzip = gzip };
	return 0;
}

static int reply_msg(struct admin_reply *r, unsigned int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int reply_msg(struct admin_reply *r, unsigned int code, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -ENOMEM;
	return reply_text(r, code, "text/plain; charset=utf-8", s, (size_t)n, 0);
}

int admin_answer(struct admin *a, enum admin_ep ep, const char *method, const char *url,
		 const char *accept_encoding, struct admin_reply *r)
{
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return reply_msg(r, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
	switch (ep) {
	case ADMIN_EP_METRICS:
		if (!strcmp(url, "/metrics") || !strcmp(url, "/stats/prometheus")) {
			struct sbuf b = {};

			pthread_rwlock_rdlock(&a->l_lock);
			render_metrics(a, &b);
			pthread_rwlock_unlock(&a->l_lock);
			if (b.oom) {
				sbuf_free(&b);
				return reply_msg(r, MHD_HTTP_INTERNAL_SERVER_ERROR,
						 "out of memory\n");
			}
			return reply_text(r, MHD_HTTP_OK,
					  "text/plain; version=0.0.4; charset=utf-8",
					  b.p ? b.p : strdup(""), b.len,
					  accepts_gzip(accept_encoding));
		}
		return reply_msg(r, MHD_HTTP_NOT_FOUND, "not found: %s (try /metrics or "
				 "/stats/prometheus)\n", url);
	case ADMIN_EP_READY:
		if (!strcmp(url, "/healthz/ready")) {
			int ready;
			char why[256];

			pthread_mutex_lock(&a->lock);
			ready = a->ready;
			snprintf(why, sizeof(why), "%s", a->why);
			pthread_mutex_unlock(&a->lock);
			if (ready)
				return reply_msg(r, MHD_HTTP_OK, "ready\n");
			return reply_msg(r, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready: %s\n", why);
		}
		return reply_msg(r, MHD_HTTP_NOT_FOUND, "not found: %s (try /healthz/ready)\n",
				 url);
	case ADMIN_EP_ADMIN:
		if (!strcmp(url, "/config_dump")) {
			char *s;

			pthread_rwlock_rdlock(&a->l_lock);
			s = render_config_dump(a);
			pthread_rwlock_unlock(&a->l_lock);

			if (!s)
				return reply_msg(r, MHD_HTTP_INTERNAL_SERVER_ERROR,
						 "out of memory\n");
			return reply_text(r, MHD_HTTP_OK, "application/json", s, strlen(s),
					  accepts_gzip(accept_encoding));
		}
		if (!strcmp(url, "/"))
			return reply_msg(r, MHD_HTTP_OK, "skmesh meshd admin\n  /config_dump  "
					 "workloads, services, policies, certificates, BPF state "
					 "(JSON)\n");
		return reply_msg(r, MHD_HTTP_NOT_FOUND, "not found: %s (try /config_dump)\n",
				 url);
	}
	return -EINVAL;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *data,
			      size_t *data_len, void **state)
{
	struct admin *a = *(struct admin **)cls;
	enum admin_ep ep = (enum admin_ep)((struct admin **)cls - a->self);
	struct admin_reply r;
	struct MHD_Response *resp;
	enum MHD_Result ret;

	(void)version; (void)data; (void)data_len; (void)state;
	if (admin_answer(a, ep, method, url,
			 MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept-Encoding"), &r))
		return MHD_NO;
	resp = MHD_create_response_from_buffer(r.len, r.body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(r.body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", r.type);
	if (r.gzip)
		MHD_add_response_header(resp, "Content-Encoding", "gzip");
	MHD_add_response_header(resp, "Vary", "Accept-Encoding");
	ret = MHD_queue_response(c, r.code, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];

	(void)cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	pr_debug("http: %s", buf);
}

/* A listening socket carrying meshd's mark, so that the kernel programs
 * leave the endpoints' connections alone (a scrape is not a connection
 * of the node's workloads); accepted sockets inherit the mark. */
static int listen_marked(const struct sockaddr_storage *ss, unsigned int sslen)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1, mark = SKM_MESHD_MARK;

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    (ss->ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one))) ||
	    bind(fd, (const struct sockaddr *)ss, sslen) || listen(fd, 128)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int serve(struct admin *a, int ep, const char *addr, uint16_t defport,
		 const char *what)
{
	struct sockaddr_storage ss;
	unsigned int sslen;
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			     MHD_USE_ERROR_LOG;
	int r = admin_parse_addr(addr, defport, &ss, &sslen);
	sigset_t all, old;
	char shown[160];
	int err, lfd;

	if (r == 1)
		return 0;
	if (r) {
		pr_warn("%s address \"%s\" is not ADDR, ADDR:PORT or [V6]:PORT (or \"off\")\n",
			what, addr);
		return -EINVAL;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (ss.ss_family == AF_INET6) {
		char ip[INET6_ADDRSTRLEN];

		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
		snprintf(shown, sizeof(shown), "[%s]:%u", ip,
			 ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	} else {
		char ip[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
		snprintf(shown, sizeof(shown), "%s:%u", ip,
			 ntohs(((struct sockaddr_in *)&ss)->sin_port));
	}
	lfd = listen_marked(&ss, sslen);
	if (lfd < 0) {
		pr_warn("cannot serve %s on %s: %s (another meshd or ztunnel on this port? "
			"choose another address with its flag, or \"off\")\n", what, shown,
			strerror(-lfd));
		return lfd;
	}
	a->self[ep] = a;
	/* Signals are meshd's main loop's business (signalfd): the server
	 * thread starts with all of them blocked, or a SIGTERM meant for a
	 * drain would kill the process there. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	a->d[ep] = MHD_start_daemon(flags, 0, NULL, NULL, handle, &a->self[ep],
				    MHD_OPTION_LISTEN_SOCKET, lfd,
				    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
				    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
				    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				    MHD_OPTION_END);
	err = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!a->d[ep]) {
		close(lfd);
		pr_warn("cannot serve %s on %s: %s\n", what, shown,
			strerror(err ? err : ENOMEM));
		return err ? -err : -ENOMEM;
	}
	pr_info("serving %s on http://%s\n", what, shown);
	return 0;
}

void admin_set_loader(struct admin *a, struct loader *l)
{
	if (!a)
		return;
	/* The listeners were made before the data path knew meshd's
	 * cgroup: they are marked meshd's now, so the scrapes they accept
	 * are not taken for the node's workloads' connections. */
	for (int ep = 0; l && ep < 3; ep++) {
		const union MHD_DaemonInfo *di = a->d[ep] ?
			MHD_get_daemon_info(a->d[ep], MHD_DAEMON_INFO_LISTEN_FD) : NULL;

		if (di && loader_own_socket(l, di->listen_fd))
			pr_warn("cannot mark the admin listener as meshd's: %s\n",
				strerror(errno));
	}
	pthread_rwlock_wrlock(&a->l_lock);
	pthread_mutex_lock(&a->lock);
	a->l = l;
	pthread_mutex_unlock(&a->lock);
	pthread_rwlock_unlock(&a->l_lock);
}

int admin_start(const struct admin_opts *o, struct metrics *m, struct alog *alog,
		struct admin **out)
{
	struct admin *a = calloc(1, sizeof(*a));
	int err;

	if (!a) {
		pr_warn("cannot serve the endpoints: out of memory\n");
		return -ENOMEM;
	}
	a->o = *o;
	a->m = m;
	a->alog = alog;
	a->tun_stats_fd = -1;
	a->live_cache = calloc(1, sizeof(*a->live_cache));
	if (!a->live_cache) {
		free(a);
		pr_warn("cannot serve the endpoints: out of memory\n");
		return -ENOMEM;
	}
	snprintf(a->why, sizeof(a->why), "starting");
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->fill_lock, NULL);
	pthread_rwlock_init(&a->l_lock, NULL);
	err = serve(a, ADMIN_EP_METRICS, o->metrics_addr ? o->metrics_addr : "0.0.0.0",
		    PORT_METRICS, "metrics (/metrics, /stats/prometheus)");
	if (!err)
		err = serve(a, ADMIN_EP_READY, o->ready_addr ? o->ready_addr : "0.0.0.0",
			    PORT_READY, "readiness (/healthz/ready)");
	if (!err)
		err = serve(a, ADMIN_EP_ADMIN, o->admin_addr ? o->admin_addr : "127.0.0.1",
			    PORT_ADMIN, "admin (/config_dump)");
	if (err) {
		admin_stop(a);
		return err;
	}
	*out = a;
	return 0;
}

void admin_stop(struct admin *a)
{
	if (!a)
		return;
	for (int i = 0; i < 3; i++)
		if (a->d[i])
			MHD_stop_daemon(a->d[i]);
	if (a->cfg)
		cfgref_put(a->cfg);
	if (a->tun_stats_fd >= 0)
		close(a->tun_stats_fd);
	free(a->fills);
	free(a->live_cache);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->fill_lock);
	pthread_rwlock_destroy(&a->l_lock);
	free(a);
}
