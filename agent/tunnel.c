// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The tunnel thread: pod listeners, the connection pool, and the glue
 * between the kernel's capture, certificates, policy and the HBONE
 * engine (hbone.c). See tunnel.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "alog.h"
#include "certs.h"
#include "hbone.h"
#include "log.h"
#include "model.h"
#include "netns.h"
#include "policy.h"
#include "skmesh.h"
#include "tunnel.h"

struct cfgref *cfgref_new(struct config *cfg)
{
	struct cfgref *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->cfg = cfg;
	atomic_init(&r->refs, 1);
	return r;
}

struct cfgref *cfgref_get(struct cfgref *r)
{
	if (r)
		atomic_fetch_add(&r->refs, 1);
	return r;
}

void cfgref_put(struct cfgref *r)
{
	if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
		config_free(r->cfg);
		free(r);
	}
}

/* --- sockets in other network namespaces ----------------------------- */

static int tcp_socket(void *arg)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	(void)arg;
	return fd < 0 ? -errno : fd;
}

/* A TCP socket made in the network namespace NETNS_FD (-1: the thread's
 * own), non-blocking, carrying MARK (SKM_MESHD_MARK or SKM_UPSTREAM_MARK)
 * so the kernel programs leave it alone. */
static int mesh_socket(struct tunnel *t, int netns_fd, int mark)
{
	int fd = netns_run(netns_fd, t->self_netns, tcp_socket, NULL), one = 1, err;

	if (fd < 0)
		return fd;
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static int mesh_listen(struct tunnel *t, int netns_fd, uint32_t ip, uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = ip,
				  .sin_port = htons(port) };
	int fd = mesh_socket(t, netns_fd, SKM_MESHD_MARK), one = 1, err;

	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4096)) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

int tun_connect(struct tunnel *t, int netns_fd, uint32_t ip, uint16_t port, int mark,
		uint32_t from)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = ip,
				  .sin_port = htons(port) };
	struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = from };
	int fd = mesh_socket(t, netns_fd, mark), one = 1, err;

	if (fd < 0)
		return fd;
	/* Another host's address: IP_TRANSPARENT lets the socket use it,
	 * the pod's routing (origsrc.c) brings the replies back to it. */
	if (from && (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) ||
		     bind(fd, (struct sockaddr *)&src, sizeof(src)))) {
		err = -errno;
		close(fd);
		return err;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) && errno != EINPROGRESS) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* --- epoll ------------------------------------------------------------ */

int tun_watch(struct tunnel *t, int fd, struct tun_obj *o, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = o };

	if (o->watched == events && o->in_epoll)
		return 0;
	if (epoll_ctl(t->epfd, o->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	o->in_epoll = 1;
	o->watched = events;
	return 0;
}

void tun_unwatch(struct tunnel *t, int fd, struct tun_obj *o)
{
	if (o->in_epoll)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, fd, NULL);
	o->in_epoll = 0;
	o->watched = 0;
}

/* --- local pods ------------------------------------------------------- */

static void pod_close(struct tunnel *t, struct tun_pod *p)
{
	origsrc_teardown(p->netns_fd, t->self_netns, &p->origsrc);
	if (p->out.fd >= 0) {
		tun_unwatch(t, p->out.fd, &p->out.o);
		close(p->out.fd);
	}
	if (p->hbone.fd >= 0) {
		tun_unwatch(t, p->hbone.fd, &p->hbone.o);
		close(p->hbone.fd);
	}
	if (p->netns_fd >= 0)
		close(p->netns_fd);
	p->out.fd = p->hbone.fd = p->netns_fd = -1;
}

struct tun_pod *tun_pod_find(struct tunnel *t, uint32_t ip)
{
	for (struct tun_pod *p = t->pods; p; p = p->next)
		if (p->ip == ip)
			return p;
	return NULL;
}

static int pod_open(struct tunnel *t, struct tun_pod *p)
{
	char why[256];
	int fd;

	p->netns_fd = open(p->netns, O_RDONLY | O_CLOEXEC);
	if (p->netns_fd < 0)
		return -errno;
	fd = mesh_listen(t, p->netns_fd, p->ip, SKM_PORT_OUTBOUND);
	if (fd < 0)
		return fd;
	p->out.fd = fd;
	fd = mesh_listen(t, p->netns_fd, p->ip, SKM_PORT_HBONE);
	if (fd < 0)
		return fd;
	p->hbone.fd = fd;
	if (tun_watch(t, p->out.fd, &p->out.o, EPOLLIN) ||
	    tun_watch(t, p->hbone.fd, &p->hbone.o, EPOLLIN))
		return -errno;
	/* Without it the pod's app sees its streams come from its own
	 * address: worth a warning, not a pod without a tunnel. */
	if (origsrc_setup(p->netns_fd, t->self_netns, &p->origsrc, why, sizeof(why))) {
		pr_warn("tunnel: %s/%s: connections to it will come from its own address, not "
			"the client's: %s\n", p->ns, p->name, why);
		origsrc_teardown(p->netns_fd, t->self_netns, &p->origsrc);
	}
	return 0;
}

/* The certificates follow the local pods' identities: asked for when the
 * first pod of one appears (a remote CA answers later), dropped with
 * their keys when the last one leaves. */
static void certs_want(struct tunnel *t)
{
	time_t now = time(NULL);

	if (!t->certs)
		return;
	certmgr_want_begin(t->certs);
	for (struct tun_pod *p = t->pods; p; p = p->next)
		if (certmgr_want(t->certs, p->ns, p->sa, now) == -ENOMEM)
			pr_warn("tunnel: out of memory for the certificate of %s/%s\n",
				p->ns, p->sa);
	certmgr_want_end(t->certs);
}

/* Listeners follow the config's local pods: opened for new ones, closed
 * for gone ones, reopened when a pod's namespace or identity changed.
 * Streams already running are not affected. */
static void pods_sync(struct tunnel *t)
{
	const struct config *cfg = t->cur->cfg;
	struct tun_pod **pp;

	for (struct tun_pod *p = t->pods; p; p = p->next)
		p->seen = 0;
	for (size_t i = 0; i < cfg->nwls; i++) {
		const struct cfg_workload *w = &cfg->wls[i];
		struct tun_pod *p;
		int err;

		if (strcmp(w->node, t->o.node))
			continue;
		p = tun_pod_find(t, w->ip);
		if (p && (!w->netns || strcmp(p->netns, w->netns) || strcmp(p->ns, w->ns) ||
			  strcmp(p->sa, w->sa))) {
			pod_close(t, p);
			p->seen = 0;
			p->gone = 1;
			p = NULL;
		}
		if (p) {
			p->seen = 1;
			snprintf(p->name, sizeof(p->name), "%s", w->name);
			continue;
		}
		if (!w->netns) {
			pr_debug("tunnel: Workload %s/%s has no spec.netns: no tunnel listeners\n",
				 w->ns, w->name);
			continue;
		}
		p = calloc(1, sizeof(*p));
		if (!p)
			continue;
		p->out.o.kind = TUN_OBJ_OUT_LISTENER;
		p->hbone.o.kind = TUN_OBJ_HBONE_LISTENER;
		p->out.pod = p->hbone.pod = p;
		p->out.fd = p->hbone.fd = p->netns_fd = -1;
		p->ip = w->ip;
		snprintf(p->netns, sizeof(p->netns), "%s", w->netns);
		snprintf(p->ns, sizeof(p->ns), "%s", w->ns);
		snprintf(p->sa, sizeof(p->sa), "%s", w->sa);
		snprintf(p->name, sizeof(p->name), "%s", w->name);
		err = pod_open(t, p);
		if (err) {
			char ip[INET_ADDRSTRLEN];

			inet_ntop(AF_INET, &w->ip, ip, sizeof(ip));
			pr_warn("tunnel: cannot listen in %s/%s's namespace %s (%s:%u/%u): %s\n",
				w->ns, w->name, w->netns, ip, SKM_PORT_OUTBOUND, SKM_PORT_HBONE,
				strerror(-err));
			pod_close(t, p);
			free(p);
			continue;
		}
		p->seen = 1;
		p->next = t->pods;
		t->pods = p;
		pr_debug("tunnel: listening in %s/%s's namespace\n", w->ns, w->name);
	}
	for (pp = &t->pods; *pp;) {
		struct tun_pod *p = *pp;

		if (p->seen) {
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		pod_close(t, p);
		free(p);
	}
	certs_want(t);
}

/* --- accepting -------------------------------------------------------- */

static int outbound_map(struct tunnel *t)
{
	char path[PATH_MAX];

	if (t->outbound_fd >= 0)
		return t->outbound_fd;
	snprintf(path, sizeof(path), "%s/%s", t->o.bpffs, SKM_MAP_OUTBOUND);
	t->outbound_fd = bpf_obj_get(path);
	return t->outbound_fd;
}

static void reset_close(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static void accept_outbound(struct tunnel *t, struct tun_listener *l)
{
	for (int i = 0; i < 64; i++) {
		struct sockaddr_in peer;
		socklen_t len = sizeof(peer);
		struct skm_outbound_key k;
		struct skm_outbound_val v;
		const struct cfg_workload *dst;
		int fd, mfd, one = 1;

		fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				pr_warn("tunnel: accept on %s/%s:%u: %s\n", l->pod->ns,
					l->pod->name, SKM_PORT_OUTBOUND, strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		tun_stat(t, SKM_TUN_OUT_CAPTURED, 1);
		/* Only the pod itself reaches its 15001, and only through
		 * the kernel's capture, which left the destination here. */
		k.ip = peer.sin_addr.s_addr;
		k.port = ntohs(peer.sin_port);
		mfd = outbound_map(t);
		if (peer.sin_addr.s_addr != l->pod->ip || mfd < 0 ||
		    bpf_map_lookup_elem(mfd, &k, &v)) {
			char ip[INET_ADDRSTRLEN];

			inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
			pr_warn("tunnel: connection from %s:%u to %s/%s:%u has no captured destination: closed\n",
				ip, k.port, l->pod->ns, l->pod->name, SKM_PORT_OUTBOUND);
			tun_stat(t, SKM_TUN_OUT_NO_DST, 1);
			reset_close(fd);
			continue;
		}
		dst = config_workload_by_ip(t->cur->cfg, v.dst_ip);
		if (!dst || !strcmp(dst->node, t->o.node)) {
			char ip[INET_ADDRSTRLEN];

			inet_ntop(AF_INET, &v.dst_ip, ip, sizeof(ip));
			pr_warn("tunnel: captured connection to %s:%u: %s\n", ip,
				ntohs(v.dst_port), dst ? "a local workload (not tunnelled)" :
				"no such workload any more");
			tun_stat(t, SKM_TUN_OUT_NO_DST, 1);
			reset_close(fd);
			continue;
		}
		hbone_outbound(t, l->pod, fd, &peer, &v, dst);
	}
}

static void accept_hbone(struct tunnel *t, struct tun_listener *l)
{
	for (int i = 0; i < 64; i++) {
		struct sockaddr_in peer;
		socklen_t len = sizeof(peer);
		int fd, one = 1;

		fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				pr_warn("tunnel: accept on %s/%s:%u: %s\n", l->pod->ns,
					l->pod->name, SKM_PORT_HBONE, strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		hbone_inbound(t, l->pod, fd, &peer);
	}
}

/* --- the inbound decision: what ztunnel answers to a CONNECT ---------- */

int tun_authorize(struct tunnel *t, const char *peer_id, uint32_t src_ip,
		  uint32_t dst_ip, uint16_t dst_port, struct tun_target *out,
		  char *why, size_t whylen)
{
	const struct config *cfg = t->cur->cfg;
	const struct cfg_workload *w = config_workload_by_ip(cfg, dst_ip);
	char td[128], ns[128], sa[128];
	struct pol_result res;
	struct pol_target pt;
	struct pol_conn pc;

	/* As ztunnel answers: a workload of another node is a bad request,
	 * an address no workload has is one we cannot serve. */
	if (!w) {
		snprintf(why, whylen, "no such workload");
		return 503;
	}
	if (strcmp(w->node, t->o.node)) {
		snprintf(why, whylen, "not a workload of this node");
		return 400;
	}
	if (dst_port == SKM_PORT_OUTBOUND || dst_port == SKM_PORT_INBOUND_PLAIN ||
	    dst_port == SKM_PORT_HBONE) {
		snprintf(why, whylen, "port %u is the tunnel's own", dst_port);
		return 400;
	}
	if (spiffe_parse(peer_id, td, sizeof(td), ns, sizeof(ns), sa, sizeof(sa))) {
		snprintf(why, whylen, "peer identity %s is not a SPIFFE ID", peer_id);
		return 401;
	}
	pt.ns = w->ns;
	pt.labels = &w->labels;
	pc = (struct pol_conn){ .mtls = 1, .src_td = td, .src_ns = ns, .src_sa = sa,
				.src_ip = src_ip, .dst_ip = dst_ip, .dst_port = dst_port };
	if (policy_eval(cfg, &pt, &pc, &res)) {
		snprintf(why, whylen, "policy evaluation failed");
		return 401;
	}
	policy_reason(&res, why, whylen);
	if (!res.allow)
		return 401;
	if (!w->netns) {
		snprintf(why, whylen, "workload %s/%s has no network namespace known to meshd",
			 w->ns, w->name);
		return 503;
	}
	snprintf(out->netns, sizeof(out->netns), "%s", w->netns);
	snprintf(out->ns, sizeof(out->ns), "%s", w->ns);
	snprintf(out->name, sizeof(out->name), "%s", w->name);
	snprintf(out->sa, sizeof(out->sa), "%s", w->sa);
	return 200;
}

/* --- counters --------------------------------------------------------- */

/* The counters live in a pinned array so meshctl reads them like the
 * kernel's, mapped into meshd so counting costs no system call (a map
 * update per count was most of a tunnelled round trip's cost). A pin
 * left by an earlier meshd is reused and its counts continue; the
 * gauges start again from zero. */
static void stats_open(struct tunnel *t)
{
	LIBBPF_OPTS(bpf_map_create_opts, mo, .map_flags = BPF_F_MMAPABLE);
	size_t len = (SKM_TUN_STAT__MAX * sizeof(__u64) + 4095) & ~(size_t)4095;
	char path[PATH_MAX];
	void *m;

	t->stats = t->stats_local;
	snprintf(path, sizeof(path), "%s/%s", t->o.bpffs, SKM_MAP_TUN_STATS);
	t->stats_fd = bpf_obj_get(path);
	if (t->stats_fd >= 0) {
		struct bpf_map_info info = {};
		__u32 ilen = sizeof(info);

		if (bpf_obj_get_info_by_fd(t->stats_fd, &info, &ilen) ||
		    info.max_entries != SKM_TUN_STAT__MAX || info.value_size != 8 ||
		    !(info.map_flags & BPF_F_MMAPABLE)) {
			close(t->stats_fd);
			t->stats_fd = -1;
			unlink(path);
		}
	}
	if (t->stats_fd < 0) {
		t->stats_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, SKM_MAP_TUN_STATS,
					     sizeof(__u32), sizeof(__u64), SKM_TUN_STAT__MAX, &mo);
		if (t->stats_fd < 0 || bpf_obj_pin(t->stats_fd, path)) {
			pr_warn("tunnel: cannot pin %s: %s (meshctl will not show tunnel counters)\n",
				path, strerror(errno));
			return;
		}
	}
	m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, t->stats_fd, 0);
	if (m == MAP_FAILED) {
		pr_warn("tunnel: cannot map %s: %s (meshctl will not show tunnel counters)\n",
			path, strerror(errno));
		return;
	}
	t->stats = m;
	t->stats_len = len;
	t->stats[SKM_TUN_CONNS_OPEN] = t->stats[SKM_TUN_STREAMS_OPEN] = 0;
}

/* --- the thread ------------------------------------------------------- */

/* skm_tun_bytes, made afresh: what an earlier meshd left there belongs
 * to streams that are gone (a new connection could have their 4-tuple). */
static void bytes_open(struct tunnel *t)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", t->o.bpffs, SKM_MAP_TUN_BYTES);
	unlink(path);
	t->bytes_fd = bpf_map_create(BPF_MAP_TYPE_HASH, SKM_MAP_TUN_BYTES,
				     sizeof(struct skm_sock_key), sizeof(struct skm_tun_bytes),
				     SKM_MAX_OUTBOUND, NULL);
	if (t->bytes_fd < 0 || bpf_obj_pin(t->bytes_fd, path)) {
		pr_warn("tunnel: cannot pin %s: %s (meshctl will show tunnelled connections' "
			"bytes only once they close)\n", path, strerror(errno));
		if (t->bytes_fd >= 0)
			close(t->bytes_fd);
		t->bytes_fd = -1;
	}
}

/* Says that the listeners of the current config are open. */
static void tunnel_mark_applied(struct tunnel *t)
{
	uint64_t one = 1;

	atomic_store(&t->applied, t->cur->seq);
	if (t->o.applied_fd > 0 && write(t->o.applied_fd, &one, sizeof(one)) < 0)
		pr_warn("tunnel: eventfd: %s\n", strerror(errno));
}

uint64_t tunnel_applied(const struct tunnel *t)
{
	return t ? atomic_load(&((struct tunnel *)t)->applied) : 0;
}

static void take_config(struct tunnel *t)
{
	struct cfgref *r;
	uint64_t v;

	if (read(t->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		pr_warn("tunnel: eventfd: %s\n", strerror(errno));
	pthread_mutex_lock(&t->lock);
	r = t->pub;
	t->pub = NULL;
	pthread_mutex_unlock(&t->lock);
	if (!r)
		return;
	cfgref_put(t->cur);
	t->cur = r;
	if (!t->draining) {
		pods_sync(t);
		hbone_reauthorize(t);
	}
	tunnel_mark_applied(t);
}

static void cert_collect(const struct wl_cert *c, int renew_failures, void *arg)
{
	struct tunnel *t = arg;
	struct tunnel_cert *n = realloc(t->certs_pub, (t->ncerts_pub + 1) * sizeof(*n));
	const ASN1_INTEGER *sn = X509_get0_serialNumber(c->leaf);
	BIGNUM *bn = sn ? ASN1_INTEGER_to_BN(sn, NULL) : NULL;
	char *hex = bn ? BN_bn2hex(bn) : NULL;

	if (n) {
		t->certs_pub = n;
		n += t->ncerts_pub++;
		memset(n, 0, sizeof(*n));
		snprintf(n->id, sizeof(n->id), "%s", c->id);
		snprintf(n->serial, sizeof(n->serial), "%s", hex ? hex : "");
		n->not_before = c->not_before;
		n->not_after = c->not_after;
		n->renew_failures = renew_failures;
	}
	OPENSSL_free(hex);
	BN_free(bn);
}

/* Publishes what certificates the thread holds (under the lock: the admin
 * endpoints read them). */
static void certs_publish(struct tunnel *t)
{
	pthread_mutex_lock(&t->lock);
	free(t->certs_pub);
	t->certs_pub = NULL;
	t->ncerts_pub = 0;
	if (t->certs) {
		certmgr_foreach(t->certs, cert_collect, t);
		certmgr_stats(t->certs, &t->cert_stats_pub);
	}
	pthread_mutex_unlock(&t->lock);
}

void tunnel_cert_stats(struct tunnel *t, struct certmgr_stats *st)
{
	pthread_mutex_lock(&t->lock);
	*st = t->cert_stats_pub;
	pthread_mutex_unlock(&t->lock);
}

/* The signer has answers: they are taken at once, not at the next tick,
 * so a pod's first connection finds its certificate. */
static void certs_answered(struct tunnel *t)
{
	t->cert_next = certmgr_tick(t->certs, time(NULL));
	certs_publish(t);
}

int tunnel_certs(struct tunnel *t, struct tunnel_cert **out, size_t *n)
{
	int err = 0;

	pthread_mutex_lock(&t->lock);
	*n = 0;
	*out = malloc((t->ncerts_pub ? t->ncerts_pub : 1) * sizeof(**out));
	if (*out) {
		if (t->ncerts_pub)
			memcpy(*out, t->certs_pub, t->ncerts_pub * sizeof(**out));
		*n = t->ncerts_pub;
	} else {
		err = -ENOMEM;
	}
	pthread_mutex_unlock(&t->lock);
	return err;
}

static void tick(struct tunnel *t)
{
	uint64_t v;
	time_t now = time(NULL);

	if (read(t->tfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	if (t->certs && now >= t->cert_next)
		t->cert_next = certmgr_tick(t->certs, now);
	certs_publish(t);
	hbone_tick(t, now);
	log_limit_report(&t->lim_conn, LOG_WARN, "tunnel connections");
	log_limit_report(&t->lim_req, LOG_INFO, "tunnel requests");
}

/* One write for the stream lines of a turn of the loop, not one each. */
static void access_log_flush(struct tunnel *t)
{
	if (t->alog_pending && t->o.access_log)
		alog_flush(t->o.access_log);
	t->alog_pending = 0;
}

static void *tunnel_main(void *arg)
{
	struct tunnel *t = arg;
	struct epoll_event evs[64];

	pods_sync(t);
	tunnel_mark_applied(t);
	certs_publish(t);
	for (;;) {
		int n = epoll_wait(t->epfd, evs, 64, 1000);

		if (n < 0 && errno != EINTR) {
			pr_warn("tunnel: epoll_wait: %s\n", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct tun_obj *o = evs[i].data.ptr;

			if (o->dead)
				continue;
			switch (o->kind) {
			case TUN_OBJ_EVENTFD:
				take_config(t);
				break;
			case TUN_OBJ_TIMER:
				tick(t);
				break;
			case TUN_OBJ_CERTS:
				certs_answered(t);
				break;
			case TUN_OBJ_OUT_LISTENER:
				accept_outbound(t, (struct tun_listener *)o);
				break;
			case TUN_OBJ_HBONE_LISTENER:
				accept_hbone(t, (struct tun_listener *)o);
				break;
			default:
				hbone_event(t, o, evs[i].events);
				break;
			}
		}
		hbone_resume(t);
		hbone_reap(t);
		access_log_flush(t);
		if (t->stop_req && !t->draining) {
			/* Stop accepting at once; streams get the drain
			 * time to finish. */
			t->draining = 1;
			t->drain_until = time(NULL) + t->o.drain_s;
			for (struct tun_pod *p = t->pods; p; p = p->next)
				pod_close(t, p);
			hbone_drain(t);
			pr_info("tunnel: draining %" PRIu64 " streams on %" PRIu64
				" connections (up to %d s)\n", t->stats[SKM_TUN_STREAMS_OPEN],
				t->stats[SKM_TUN_CONNS_OPEN], t->o.drain_s);
		}
		if (t->draining && (!t->stats[SKM_TUN_STREAMS_OPEN] ||
				    time(NULL) >= t->drain_until))
			break;
	}
	hbone_close_all(t);
	hbone_reap(t);
	access_log_flush(t);
	return NULL;
}

static void cert_warn(const char *msg)
{
	pr_warn("tunnel: certificates: %s\n", msg);
}

int tunnel_new(const struct tunnel_opts *o, struct cfgref *r, struct tunnel **out)
{
	struct certmgr_opts co = { .ca_dir = o->ca_dir, .signer = o->signer,
				   .out_dir = o->cert_dir,
				   .lifetime_s = o->cert_lifetime_s, .warn = cert_warn };
	struct tunnel *t;
	char err[256];

	t = calloc(1, sizeof(*t));
	if (!t) {
		if (o->signer)
			o->signer->ops->free(o->signer);
		return -ENOMEM;
	}
	t->o = *o;
	t->o.signer = NULL;	/* the certmgr's */
	tunnel_limits_defaults(&t->o.lim);
	t->lim_conn = (struct log_limit)LOG_LIMIT_INIT(20, 2);
	t->lim_req = (struct log_limit)LOG_LIMIT_INIT(20, 5);
	t->cur = cfgref_get(r);
	t->outbound_fd = t->stats_fd = t->bytes_fd = t->evfd = t->tfd = t->epfd =
		t->self_netns = -1;
	t->stats = t->stats_local;
	pthread_mutex_init(&t->lock, NULL);
	co.td = r->cfg->trust_domain;
	snprintf(t->td, sizeof(t->td), "%s", r->cfg->trust_domain);
	if (certmgr_new(&co, &t->certs, err, sizeof(err))) {
		pr_warn("tunnel: CA %s: %s\n", o->ca_dir ? o->ca_dir : "(remote)", err);
		tunnel_free_fds(t);
		return -EINVAL;
	}
	*out = t;
	return 0;
}

void tunnel_limits_defaults(struct tunnel_limits *l)
{
	if (l->max_conns <= 0)
		l->max_conns = TUN_DEF_MAX_CONNS;
	if (l->max_conns_per_peer <= 0)
		l->max_conns_per_peer = TUN_DEF_MAX_CONNS_PER_PEER;
	if (l->max_handshakes <= 0)
		l->max_handshakes = TUN_DEF_MAX_HANDSHAKES;
	if (l->handshake_timeout_s <= 0)
		l->handshake_timeout_s = TUN_DEF_HANDSHAKE_TIMEOUT_S;
	if (l->conn_buffer <= 0)
		l->conn_buffer = TUN_DEF_CONN_BUFFER;
	if (l->buffer_total <= 0)
		l->buffer_total = TUN_DEF_BUFFER_TOTAL;
	if (l->reset_burst <= 0)
		l->reset_burst = TUN_DEF_RESET_BURST;
	if (l->reset_rate <= 0)
		l->reset_rate = TUN_DEF_RESET_RATE;
	if (l->handshake_rate <= 0)
		l->handshake_rate = TUN_DEF_HANDSHAKE_RATE;
}

/* The HBONE engine's host: the thread's epoll, sockets, pods and policy. */
static const struct hbone_host tunnel_host = {
	.watch = tun_watch,
	.unwatch = tun_unwatch,
	.connect = tun_connect,
	.pod_find = tun_pod_find,
	.authorize = tun_authorize,
};

int tunnel_start(struct tunnel *t)
{
	struct itimerspec its = { .it_interval.tv_sec = 1, .it_value.tv_sec = 1 };
	sigset_t all, old;
	int e;

	t->self_netns = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (t->self_netns < 0 || t->epfd < 0 || t->evfd < 0 || t->tfd < 0 ||
	    timerfd_settime(t->tfd, 0, &its, NULL)) {
		e = -errno;
		pr_warn("tunnel: cannot set up: %s\n", strerror(errno));
		goto fail;
	}
	t->ev_obj.kind = TUN_OBJ_EVENTFD;
	t->timer_obj.kind = TUN_OBJ_TIMER;
	t->certs_obj.kind = TUN_OBJ_CERTS;
	if (tun_watch(t, t->evfd, &t->ev_obj, EPOLLIN) ||
	    tun_watch(t, t->tfd, &t->timer_obj, EPOLLIN) ||
	    (certmgr_fd(t->certs) >= 0 &&
	     tun_watch(t, certmgr_fd(t->certs), &t->certs_obj, EPOLLIN))) {
		e = -errno;
		goto fail;
	}
	stats_open(t);
	bytes_open(t);
	outbound_map(t);
	if ((e = hbone_init(t, &tunnel_host)))
		goto fail;
	/* Signals are meshd's main loop's business (signalfd): the thread
	 * starts with all of them blocked. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	e = -pthread_create(&t->thread, NULL, tunnel_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e)
		goto fail;
	pthread_setname_np(t->thread, "meshd-tunnel");
	t->started = 1;
	return 0;
fail:
	hbone_fini(t);
	tunnel_free_fds(t);
	return e;
}

void tunnel_free_fds(struct tunnel *t)
{
	int *fds[] = { &t->outbound_fd, &t->stats_fd, &t->bytes_fd, &t->evfd, &t->tfd,
		       &t->epfd, &t->self_netns };

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	while (t->pods) {
		struct tun_pod *p = t->pods;

		t->pods = p->next;
		pod_close(t, p);
		free(p);
	}
	if (t->stats_len)
		munmap(t->stats, t->stats_len);
	certmgr_free(t->certs);
	cfgref_put(t->cur);
	cfgref_put(t->pub);
	pthread_mutex_destroy(&t->lock);
	free(t->certs_pub);
	free(t);
}

void tunnel_update(struct tunnel *t, struct cfgref *r)
{
	struct cfgref *old;
	uint64_t one = 1;

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	old = t->pub;
	t->pub = cfgref_get(r);
	pthread_mutex_unlock(&t->lock);
	cfgref_put(old);
	if (write(t->evfd, &one, sizeof(one)) < 0)
		pr_warn("tunnel: eventfd: %s\n", strerror(errno));
}

void tunnel_stop(struct tunnel *t)
{
	uint64_t one = 1;

	if (!t)
		return;
	if (!t->started) {
		tunnel_free_fds(t);
		return;
	}
	t->stop_req = 1;
	if (write(t->evfd, &one, sizeof(one)) < 0)
		pr_warn("tunnel: eventfd: %s\n", strerror(errno));
	pthread_join(t->thread, NULL);
	hbone_fini(t);
	tunnel_free_fds(t);
}
