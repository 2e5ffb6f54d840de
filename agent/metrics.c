// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "model.h"
#include "skmesh.h"

/* --- text buffer ------------------------------------------------------- */

static int sbuf_grow(struct sbuf *b, size_t need)
{
	size_t cap;
	char *p;

	if (b->oom)
		return -1;
	if (b->len + need + 1 <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 4096;
	while (cap < b->len + need + 1)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->oom = 1;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

void sbuf_put(struct sbuf *b, const char *s, size_t n)
{
	if (sbuf_grow(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || sbuf_grow(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void sbuf_free(struct sbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

void mx_escape(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			sbuf_put(b, "\\\\", 2);
		else if (*s == '"')
			sbuf_put(b, "\\\"", 2);
		else if (*s == '\n')
			sbuf_put(b, "\\n", 2);
		else
			sbuf_put(b, s, 1);
	}
}

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h ? h : 1;
}

static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- set-up ------------------------------------------------------------ */

int metrics_init(struct metrics *m, const struct metrics_opts *o)
{
	memset(m, 0, sizeof(*m));
	m->o = *o;
	if (!m->o.cluster)
		m->o.cluster = "Kubernetes";
	if (!m->o.dns_domain)
		m->o.dns_domain = "cluster.local";
	if (!m->o.max_series)
		m->o.max_series = 10000;
	m->cap = 1024;
	m->tab = calloc(m->cap, sizeof(*m->tab));
	if (!m->tab)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->scrape_lock, NULL);
	pthread_mutex_init(&m->hist_lock, NULL);
	m->start_time = wall_s();
	return 0;
}

static void series_free(struct mx_series *s)
{
	if (!s)
		return;
	free(s->labels);
	free(s);
}

void metrics_fini(struct metrics *m)
{
	if (!m->tab)
		return;
	for (size_t i = 0; i < m->cap; i++)
		series_free(m->tab[i]);
	series_free(m->overflow[0]);
	series_free(m->overflow[1]);
	free(m->tab);
	free(m->ix);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->scrape_lock);
	pthread_mutex_destroy(&m->hist_lock);
	memset(m, 0, sizeof(*m));
}

/* --- labels ------------------------------------------------------------ */

static const char *label_of(const struct cfg_workload *w, const char *key)
{
	for (size_t i = 0; i < w->labels.n; i++)
		if (!strcmp(w->labels.v[i].key, key))
			return w->labels.v[i].val;
	return NULL;
}

/* The value of the first of KEYS W has, else DEF. */
static const char *first_label(const struct cfg_workload *w, const char *const keys[3],
			       const char *def)
{
	for (int i = 0; i < 3; i++) {
		const char *v = label_of(w, keys[i]);

		if (v)
			return v;
	}
	return def;
}

/* Istio's canonical service and revision of a workload: its
 * service.istio.io/canonical-* labels, else app.kubernetes.io/name|version,
 * else app|version, else the workload's name and "latest". */
static const char *canonical_name(const struct cfg_workload *w)
{
	static const char *const keys[3] = { "service.istio.io/canonical-name",
					     "app.kubernetes.io/name", "app" };

	return first_label(w, keys, w->name);
}

static const char *canonical_rev(const struct cfg_workload *w)
{
	static const char *const keys[3] = { "service.istio.io/canonical-revision",
					     "app.kubernetes.io/version", "version" };

	return first_label(w, keys, "latest");
}

static void lbl(struct sbuf *b, const char *k, const char *v)
{
	if (b->len)
		sbuf_put(b, ",", 1);
	sbuf_printf(b, "%s=\"", k);
	mx_escape(b, v && *v ? v : "unknown");
	sbuf_put(b, "\"", 1);
}

static void lbl_workload(struct sbuf *b, const char *side, const struct cfg_workload *w,
			 const char *principal, const char *cluster)
{
	char k[48];

#define L(name, val) do { snprintf(k, sizeof(k), "%s_%s", side, name); lbl(b, k, val); } while (0)
	L("workload", w ? w->name : NULL);
	L("canonical_service", w ? canonical_name(w) : NULL);
	L("canonical_revision", w ? canonical_rev(w) : NULL);
	L("workload_namespace", w ? w->ns : NULL);
	L("principal", principal);
	L("app", w ? canonical_name(w) : NULL);
	L("version", w ? canonical_rev(w) : NULL);
	L("cluster", w ? cluster : NULL);
#undef L
}

/* ztunnel's CommonTrafficLabels, in its order. */
static void tcp_labels(struct metrics *m, struct sbuf *b, const struct mx_tcp_key *k)
{
	static const char *const flags[] = { "-", "DENY", "CONNECT" };
	char host[512];

	lbl(b, "reporter", k->reporter == MX_SOURCE ? "source" : "destination");
	/* source_* before destination_service, as ztunnel encodes them */
	{
		struct sbuf tmp = {};

		lbl_workload(&tmp, "source", k->src, k->src_principal, m->o.cluster);
		sbuf_put(b, ",", 1);
		sbuf_put(b, tmp.p ? tmp.p : "", tmp.len);
		sbuf_free(&tmp);
	}
	if (k->svc) {
		snprintf(host, sizeof(host), "%s.%s.svc.%s", k->svc->name, k->svc->ns,
			 m->o.dns_domain);
		lbl(b, "destination_service", host);
		lbl(b, "destination_service_namespace", k->svc->ns);
		lbl(b, "destination_service_name", k->svc->name);
	} else {
		lbl(b, "destination_service", NULL);
		lbl(b, "destination_service_namespace", NULL);
		lbl(b, "destination_service_name", NULL);
	}
	{
		struct sbuf tmp = {};

		lbl_workload(&tmp, "destination", k->dst, k->dst_principal, m->o.cluster);
		sbuf_put(b, ",", 1);
		sbuf_put(b, tmp.p ? tmp.p : "", tmp.len);
		sbuf_free(&tmp);
	}
	lbl(b, "request_protocol", "tcp");
	lbl(b, "response_flags", flags[k->flags]);
	lbl(b, "connection_security_policy", k->mtls ? "mutual_tls" : "unknown");
}

/* --- series table ------------------------------------------------------ */

static struct mx_series *series_new(const char *labels, size_t len, uint64_t h)
{
	struct mx_series *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->labels = strndup(labels, len);
	if (!s->labels) {
		free(s);
		return NULL;
	}
	s->hash = h;
	return s;
}

static int tab_grow(struct metrics *m)
{
	size_t cap = m->cap * 2;
	struct mx_series **t = calloc(cap, sizeof(*t));

	if (!t)
		return -1;
	for (size_t i = 0; i < m->cap; i++) {
		struct mx_series *s = m->tab[i];
		size_t j;

		if (!s)
			continue;
		for (j = s->hash & (cap - 1); t[j]; j = (j + 1) & (cap - 1))
			;
		t[j] = s;
	}
	free(m->tab);
	m->tab = t;
	m->cap = cap;
	return 0;
}

static struct mx_series *overflow_series(struct metrics *m, enum mx_reporter r)
{
	struct mx_tcp_key k = { .reporter = r };

	if (!m->overflow[r]) {
		struct sbuf b = {};

		tcp_labels(m, &b, &k);
		if (!b.oom)
			m->overflow[r] = series_new(b.p, b.len, 0);
		sbuf_free(&b);
	}
	return m->overflow[r];
}

struct mx_series *metrics_tcp_series(struct metrics *m, const struct mx_tcp_key *k)
{
	struct sbuf b = {};
	struct mx_series *s = NULL;
	uint64_t h;
	size_t i;

	tcp_labels(m, &b, k);
	if (b.oom) {
		sbuf_free(&b);
		pthread_mutex_lock(&m->lock);
		s = overflow_series(m, k->reporter);
		pthread_mutex_unlock(&m->lock);
		return s;
	}
	h = fnv1a(b.p, b.len);
	pthread_mutex_lock(&m->lock);
	for (i = h & (m->cap - 1); m->tab[i]; i = (i + 1) & (m->cap - 1)) {
		if (m->tab[i]->hash == h && !strcmp(m->tab[i]->labels, b.p)) {
			s = m->tab[i];
			goto out;
		}
	}
	if (m->n >= m->o.max_series) {
		s = overflow_series(m, k->reporter);
		goto out;
	}
	s = series_new(b.p, b.len, h);
	if (!s) {
		s = overflow_series(m, k->reporter);
		goto out;
	}
	m->tab[i] = s;
	m->n++;
	if (m->n * 2 > m->cap)
		tab_grow(m);	/* on failure it stays usable, only slower */
out:
	pthread_mutex_unlock(&m->lock);
	sbuf_free(&b);
	return s;
}

/* --- the service index ------------------------------------------------- */

struct mx_ix_slot {
	uint64_t key;		/* 1 | vip flag | ip << 16 | port; 0: empty */
	const struct cfg_service *svc;
};

static uint64_t ix_key(uint32_t ip, uint16_t port, int by_vip)
{
	return ((uint64_t)ip << 24) | ((uint64_t)port << 8) | (by_vip ? 2 : 0) | 1;
}

static uint64_t ix_hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	return k;
}

static void ix_put(struct mx_ix_slot *t, size_t cap, uint64_t key, const struct cfg_service *svc)
{
	size_t i;

	for (i = ix_hash(key) & (cap - 1); t[i].key; i = (i + 1) & (cap - 1))
		if (t[i].key == key)
			return;		/* the first service keeps it */
	t[i].key = key;
	t[i].svc = svc;
}

/* Built for one config at a time, under m->lock. */
static int ix_build(struct metrics *m, const struct config *cfg)
{
	size_t n = 0, cap = 16;
	struct mx_ix_slot *t;

	for (size_t i = 0; i < cfg->nsvcs; i++)
		n += cfg->svcs[i].nports * (1 + cfg->svcs[i].neps);
	while (cap < n * 2)
		cap *= 2;
	t = calloc(cap, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->nsvcs; i++) {
		const struct cfg_service *s = &cfg->svcs[i];

		for (size_t p = 0; p < s->nports; p++) {
			if (s->ports[p].proto != IPPROTO_TCP)
				continue;
			if (s->vip)
				ix_put(t, cap, ix_key(s->vip, s->ports[p].port, 1), s);
			for (size_t e = 0; e < s->neps; e++)
				ix_put(t, cap, ix_key(s->eps[e].ip, s->ports[p].target, 0), s);
		}
	}
	free(m->ix);
	m->ix = t;
	m->ix_cap = cap;
	m->ix_serial = cfg->serial;
	return 0;
}

const struct cfg_service *metrics_service_for(struct metrics *m, const struct config *cfg,
					      uint32_t ip, uint16_t port, int by_vip)
{
	const struct cfg_service *svc = NULL;
	uint64_t key = ix_key(ip, port, by_vip);

	if (!cfg)
		return NULL;
	pthread_mutex_lock(&m->lock);
	/* A config is rebuilt when meshd's main thread and the tunnel ask
	 * with different configs in turn; that lasts only while a reload
	 * reaches the tunnel. */
	if (m->ix_serial != cfg->serial && ix_build(m, cfg))
		goto out;
	for (size_t i = ix_hash(key) & (m->ix_cap - 1); m->ix[i].key;
	     i = (i + 1) & (m->ix_cap - 1)) {
		if (m->ix[i].key == key) {
			svc = m->ix[i].svc;
			break;
		}
	}
out:
	pthread_mutex_unlock(&m->lock);
	return svc;
}

/* --- kernel records ---------------------------------------------------- */

static const struct cfg_workload *local_wl(struct metrics *m, const struct config *cfg,
					   uint32_t ip)
{
	const struct cfg_workload *w = config_workload_by_ip(cfg, ip);

	return w && w->node && !strcmp(w->node, m->o.node) ? w : NULL;
}

struct mx_series *metrics_conn_series(struct metrics *m, const struct config *cfg,
				      const struct skm_conn *c, int *recv_is_rx)
{
	char sp[320], dp[320];
	struct mx_tcp_key k = {};
	const struct cfg_workload *me;

	if (!cfg || (c->flags & SKM_CONN_TUNNEL))
		return NULL;
	me = local_wl(m, cfg, c->tuple.sip);
	if (!me)
		return NULL;
	if (c->flags & SKM_CONN_ACTIVE) {
		k.reporter = MX_SOURCE;
		k.src = me;
		k.dst = config_workload_by_ip(cfg, c->tuple.dip);
		if (c->flags & SKM_CONN_VIA_VIP)
			k.svc = metrics_service_for(m, cfg, c->orig_ip, ntohs(c->orig_port), 1);
		else
			k.svc = metrics_service_for(m, cfg, c->tuple.dip, (uint16_t)c->tuple.dport, 0);
		config_workload_id(cfg, me, sp, sizeof(sp));
		k.src_principal = sp;
		*recv_is_rx = 0;
	} else {
		const struct cfg_workload *peer = config_workload_by_ip(cfg, c->tuple.dip);

		k.reporter = MX_DESTINATION;
		k.dst = me;
		k.src = peer;
		k.svc = metrics_service_for(m, cfg, c->tuple.sip, (uint16_t)c->tuple.sport, 0);
		/* A peer's identity is known to the kernel only on this node
		 * (its network namespace); from elsewhere it is plaintext. */
		if (peer && peer->node && !strcmp(peer->node, m->o.node)) {
			config_workload_id(cfg, peer, sp, sizeof(sp));
			k.src_principal = sp;
		}
		*recv_is_rx = 1;
	}
	if (k.dst) {
		config_workload_id(cfg, k.dst, dp, sizeof(dp));
		k.dst_principal = dp;
	}
	return metrics_tcp_series(m, &k);
}

/* The series of C through CACHE: the key is what metrics_conn_series()
 * reads of a record (the client's own port and the server's peer port do
 * not matter). */
struct mx_series *metrics_conn_series_cached(struct metrics *m, struct mx_conn_cache *cache,
					     const struct config *cfg, const struct skm_conn *c,
					     int *recv_is_rx)
{
	struct mx_cache_slot key = { .lip = c->tuple.sip, .rip = c->tuple.dip };
	struct mx_cache_slot *sl;
	uint64_t h;

	if (!cache)
		return metrics_conn_series(m, cfg, c, recv_is_rx);
	if (cache->cfg != cfg) {
		memset(cache->slot, 0, sizeof(cache->slot));
		cache->cfg = cfg;
	}
	key.flags = (c->flags & (SKM_CONN_ACTIVE | SKM_CONN_VIA_VIP | SKM_CONN_TUNNEL)) |
		    0x80000000u;
	if (c->flags & SKM_CONN_ACTIVE) {
		key.pa = (uint16_t)c->tuple.dport;
		if (c->flags & SKM_CONN_VIA_VIP) {
			key.oip = c->orig_ip;
			key.pb = c->orig_port;
		}
	} else {
		key.pa = (uint16_t)c->tuple.sport;
	}
	h = ix_hash(((uint64_t)key.lip << 32 | key.rip) ^ ((uint64_t)key.oip << 7) ^
		    ((uint64_t)key.pa << 40) ^ ((uint64_t)key.pb << 24) ^ key.flags);
	sl = &cache->slot[h & (MX_CACHE_SLOTS - 1)];
	if (sl->flags == key.flags && sl->lip == key.lip && sl->rip == key.rip &&
	    sl->oip == key.oip && sl->pa == key.pa && sl->pb == key.pb) {
		*recv_is_rx = sl->recv_is_rx;
		return sl->s;
	}
	key.s = metrics_conn_series(m, cfg, c, &key.recv_is_rx);
	*sl = key;
	*recv_is_rx = key.recv_is_rx;
	return key.s;
}

void metrics_conn_closed(struct metrics *m, struct mx_conn_cache *cache,
			 const struct config *cfg, const struct skm_conn *c)
{
	enum mx_path p = c->flags & SKM_CONN_TUNNEL ? MX_PATH_TUNNEL :
			 c->flags & SKM_CONN_ACCEL ? MX_PATH_ACCEL : MX_PATH_PASS;
	struct mx_series *s;
	int recv_is_rx = 0;

	atomic_fetch_add_explicit(&m->closed_by_path[p], 1, memory_order_relaxed);
	s = metrics_conn_series_cached(m, cache, cfg, c, &recv_is_rx);
	if (!s)
		return;
	mx_add(s, MX_OPENED, 1);
	mx_add(s, MX_CLOSED, 1);
	mx_add(s, MX_RECEIVED, recv_is_rx ? c->rx_bytes : c->tx_bytes);
	mx_add(s, MX_SENT, recv_is_rx ? c->tx_bytes : c->rx_bytes);
}

void metrics_conn_denied(struct metrics *m, const struct config *cfg, const struct skm_conn *c)
{
	char sp[320], dp[320];
	struct mx_tcp_key k = { .reporter = MX_DESTINATION, .flags = MX_FLAG_DENY };
	struct mx_series *s;

	if (!cfg)
		return;
	/* connect4's denials: both ends are pods of this node, the kernel
	 * knows the source by its network namespace */
	k.src = config_workload_by_ip(cfg, c->tuple.sip);
	k.dst = config_workload_by_ip(cfg, c->tuple.dip);
	if (c->flags & SKM_CONN_VIA_VIP)
		k.svc = metrics_service_for(m, cfg, c->orig_ip, ntohs(c->orig_port), 1);
	else
		k.svc = metrics_service_for(m, cfg, c->tuple.dip, (uint16_t)c->tuple.dport, 0);
	/* a plaintext SYN's source has no identity the kernel vouches for */
	if (k.src && !(c->flags & SKM_CONN_PLAINTEXT)) {
		config_workload_id(cfg, k.src, sp, sizeof(sp));
		k.src_principal = sp;
	}
	if (k.dst) {
		config_workload_id(cfg, k.dst, dp, sizeof(dp));
		k.dst_principal = dp;
	}
	s = metrics_tcp_series(m, &k);
	mx_add(s, MX_OPENED, 1);
	mx_add(s, MX_CLOSED, 1);
}

/* --- reloads ----------------------------------------------------------- */

static const double rec_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
				     0.25, 0.5, 1, 2.5 };

void metrics_reload(struct metrics *m, int ok, double seconds)
{
	if (!ok) {
		atomic_fetch_add(&m->reloads_failed, 1);
		return;
	}
	atomic_fetch_add(&m->reloads_ok, 1);
	atomic_store(&m->last_reload_ok_s, (unsigned long long)wall_s());
	pthread_mutex_lock(&m->hist_lock);
	for (size_t i = 0; i < sizeof(rec_bounds) / sizeof(rec_bounds[0]); i++)
		if (seconds <= rec_bounds[i])
			m->rec_buckets[i]++;
	m->rec_count++;
	m->rec_sum += seconds;
	pthread_mutex_unlock(&m->hist_lock);
}

/* --- rendering --------------------------------------------------------- */

void metrics_live_add(struct mx_series *s, enum mx_field f, uint64_t n)
{
	if (s)
		s->live[f] += n;
}

static void render_family(struct metrics *m, struct sbuf *b, const char *name,
			  const char *help, enum mx_field f)
{
	sbuf_printf(b, "# HELP %s_total %s\n# TYPE %s_total counter\n", name, help, name);
	for (size_t i = 0; i < m->cap + 2; i++) {
		struct mx_series *s = i < m->cap ? m->tab[i] : m->overflow[i - m->cap];
		uint64_t v;

		if (!s)
			continue;
		v = s->snap[f] + s->live[f];
		/* A close event the ring buffer lost takes its live part
		 * with it: show the last value rather than go back. */
		if (v < s->shown[f])
			v = s->shown[f];
		s->shown[f] = v;
		if (!v && i >= m->cap)
			continue;
		sbuf_printf(b, "%s_total{%s} %llu\n", name, s->labels, (unsigned long long)v);
	}
}

void metrics_render_tcp(struct metrics *m, struct sbuf *b,
			void (*live)(struct metrics *m, void *arg), void *arg)
{
	pthread_mutex_lock(&m->scrape_lock);
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->cap + 2; i++) {
		struct mx_series *s = i < m->cap ? m->tab[i] : m->overflow[i - m->cap];

		if (!s)
			continue;
		for (int f = 0; f < MX__NFIELDS; f++)
			s->snap[f] = atomic_load_explicit(&s->v[f], memory_order_relaxed);
		memset(s->live, 0, sizeof(s->live));
	}
	pthread_mutex_unlock(&m->lock);
	if (live)
		live(m, arg);
	pthread_mutex_lock(&m->lock);
	render_family(m, b, "istio_tcp_connections_opened",
		      "The total number of TCP connections opened", MX_OPENED);
	render_family(m, b, "istio_tcp_connections_closed",
		      "The total number of TCP connections closed", MX_CLOSED);
	render_family(m, b, "istio_tcp_received_bytes",
		      "The size of total bytes received during request in case of a TCP connection",
		      MX_RECEIVED);
	render_family(m, b, "istio_tcp_sent_bytes",
		      "The size of total bytes sent during response in case of a TCP connection",
		      MX_SENT);
	pthread_mutex_unlock(&m->lock);
	pthread_mutex_unlock(&m->scrape_lock);
}

static void process_metrics(struct metrics *m, struct sbuf *b)
{
	struct rusage ru;
	struct rlimit rl;
	unsigned long vsz = 0, rss = 0;
	long fds = 0;
	FILE *f;
	DIR *d;

	if (!getrusage(RUSAGE_SELF, &ru))
		sbuf_printf(b, "# HELP process_cpu_seconds_total Total user and system CPU time "
			    "spent in seconds.\n# TYPE process_cpu_seconds_total counter\n"
			    "process_cpu_seconds_total %.6f\n",
			    ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
			    ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%lu %lu", &vsz, &rss) == 2) {
			long pg = sysconf(_SC_PAGESIZE);

			sbuf_printf(b, "# HELP process_resident_memory_bytes Resident memory size "
				    "in bytes.\n# TYPE process_resident_memory_bytes gauge\n"
				    "process_resident_memory_bytes %lu\n", rss * pg);
			sbuf_printf(b, "# HELP process_virtual_memory_bytes Virtual memory size "
				    "in bytes.\n# TYPE process_virtual_memory_bytes gauge\n"
				    "process_virtual_memory_bytes %lu\n", vsz * pg);
		}
		fclose(f);
	}
	d = opendir("/proc/self/fd");
	if (d) {
		while (readdir(d))
			fds++;
		closedir(d);
		sbuf_printf(b, "# HELP process_open_fds Number of open file descriptors.\n"
			    "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
			    fds > 3 ? fds - 3 : 0);	/* ., .., the dir's own */
	}
	if (!getrlimit(RLIMIT_NOFILE, &rl))
		sbuf_printf(b, "# HELP process_max_fds Maximum number of open file descriptors.\n"
			    "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
			    (unsigned long long)rl.rlim_cur);
	sbuf_printf(b, "# HELP process_start_time_seconds Start time of the process since unix "
		    "epoch in seconds.\n# TYPE process_start_time_seconds gauge\n"
		    "process_start_time_seconds %.3f\n", m->start_time);
}

void metrics_render_own(struct metrics *m, struct sbuf *b)
{
	static const char *const paths[] = { "accelerated", "tunnelled", "passthrough" };
	uint64_t cum = 0, over = 0;

	sbuf_printf(b, "# HELP skmesh_connections_closed_total Connections of this node's "
		    "sockets closed, by the path they took.\n"
		    "# TYPE skmesh_connections_closed_total counter\n");
	for (int p = 0; p < MX_PATH__N; p++)
		sbuf_printf(b, "skmesh_connections_closed_total{path=\"%s\"} %llu\n", paths[p],
			    (unsigned long long)atomic_load(&m->closed_by_path[p]));

	sbuf_printf(b, "# HELP skmesh_config_reloads_total Configs applied (the one at start "
		    "included) and reloads rejected (an invalid config keeps the running one).\n"
		    "# TYPE skmesh_config_reloads_total counter\n"
		    "skmesh_config_reloads_total{result=\"applied\"} %llu\n"
		    "skmesh_config_reloads_total{result=\"rejected\"} %llu\n",
		    (unsigned long long)atomic_load(&m->reloads_ok),
		    (unsigned long long)atomic_load(&m->reloads_failed));
	sbuf_printf(b, "# HELP skmesh_config_last_applied_timestamp_seconds When the running "
		    "config was applied.\n"
		    "# TYPE skmesh_config_last_applied_timestamp_seconds gauge\n"
		    "skmesh_config_last_applied_timestamp_seconds %llu\n",
		    (unsigned long long)atomic_load(&m->last_reload_ok_s));
	sbuf_printf(b, "# HELP skmesh_reconcile_duration_seconds Time to bring the kernel maps "
		    "in line with a config.\n"
		    "# TYPE skmesh_reconcile_duration_seconds histogram\n");
	pthread_mutex_lock(&m->hist_lock);
	for (size_t i = 0; i < sizeof(rec_bounds) / sizeof(rec_bounds[0]); i++) {
		cum = m->rec_buckets[i];
		sbuf_printf(b, "skmesh_reconcile_duration_seconds_bucket{le=\"%g\"} %llu\n",
			    rec_bounds[i], (unsigned long long)cum);
	}
	sbuf_printf(b, "skmesh_reconcile_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
		    "skmesh_reconcile_duration_seconds_sum %.6f\n"
		    "skmesh_reconcile_duration_seconds_count %llu\n",
		    (unsigned long long)m->rec_count, m->rec_sum,
		    (unsigned long long)m->rec_count);
	pthread_mutex_unlock(&m->hist_lock);

	pthread_mutex_lock(&m->lock);
	for (int r = 0; r < 2; r++)
		if (m->overflow[r])
			over += m->overflow[r]->shown[MX_OPENED];
	sbuf_printf(b, "# HELP skmesh_metrics_series Label sets of the istio_tcp_* families.\n"
		    "# TYPE skmesh_metrics_series gauge\nskmesh_metrics_series %zu\n"
		    "# HELP skmesh_metrics_series_limit --metrics-max-series.\n"
		    "# TYPE skmesh_metrics_series_limit gauge\nskmesh_metrics_series_limit %zu\n",
		    m->n, m->o.max_series);
	pthread_mutex_unlock(&m->lock);
	sbuf_printf(b, "# HELP skmesh_metrics_series_overflow_total Connections counted in the "
		    "overflow series (all labels unknown) because the series limit was reached.\n"
		    "# TYPE skmesh_metrics_series_overflow_total counter\n"
		    "skmesh_metrics_series_overflow_total %llu\n", (unsigned long long)over);
	process_metrics(m, b);
}
