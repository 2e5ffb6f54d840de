// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Cluster mode's local pods: see cluster.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "cluster.h"
#include "cnisrv.h"
#include "ksource.h"
#include "log.h"
#include "metrics.h"
#include "podscan.h"

/* An ADD waiting for its pod's enrolment. */
struct waiter {
	uint64_t ticket;
	char uid[65];
	char name[320];		/* namespace/name, for messages */
	double since, deadline;	/* ms */
	uint64_t need_gen;	/* a model of this version or newer ... */
	uint64_t seq;		/* ... applied as this config (0: not yet) */
	int pending;		/* from a pending record: no kubelet waits */
};

enum ack_result { ACK_ENROLLED, ACK_OUTSIDE, ACK_UNKNOWN, ACK_FAILED, ACK_NRESULTS };
static const char *const ack_names[ACK_NRESULTS] = { "enrolled", "outside", "unknown", "failed" };

struct cluster_cni {
	struct cnisrv *srv;
	struct ksource *ks;
	const char *proc;
	const struct config *cur;	/* the running config (main thread) */
	struct waiter *w;
	size_t nw, capw;
	double next_scan;		/* ms; 0: at the first sync */
	uint64_t acks[ACK_NRESULTS];
	uint64_t scan_found, scans;
	uint64_t ack_ms_sum, ack_count;
	/* what the metrics endpoint reads, from another thread */
	pthread_mutex_t lock;
	struct cni_pub {
		uint64_t acks[ACK_NRESULTS], ack_ms_sum, scan_found;
		struct cnisrv_stats srv;
	} pub;
};

static void answer(struct cluster_cni *c, size_t i, enum ack_result r, const char *error)
{
	struct waiter *w = &c->w[i];

	c->acks[r]++;
	if (r == ACK_ENROLLED) {
		c->ack_ms_sum += (uint64_t)(mono_ms() - w->since);
		c->ack_count++;
	}
	cnisrv_reply(c->srv, w->ticket, r != ACK_FAILED, error);
	c->w[i] = c->w[--c->nw];
}

static void on_request(void *arg, const struct cni_req *req, uint64_t ticket)
{
	struct cluster_cni *c = arg;
	const char *what = req->from_pending ? "pending" : "cni";

	if (!req->pod_uid[0]) {
		/* not a Kubernetes pod (no K8S_POD_UID): nothing to do */
		cnisrv_reply(c->srv, ticket, 1, NULL);
		return;
	}
	if (req->op == CNI_REQ_DEL) {
		ksource_pod_forget(c->ks, req->pod_uid);
		cnisrv_reply(c->srv, ticket, 1, NULL);
		return;
	}
	if (req->op == CNI_REQ_CHECK) {
		int in = 0;
		enum ks_pod_state s = ksource_pod_state(c->ks, req->pod_uid, c->cur, &in);

		cnisrv_reply(c->srv, ticket, s != KS_POD_ENROLLED || in,
			     s == KS_POD_ENROLLED && !in ?
			     "the pod is in the mesh but meshd has not set it up" : NULL);
		return;
	}
	if (c->nw == c->capw) {
		size_t cap = c->capw ? 2 * c->capw : 16;
		struct waiter *p = realloc(c->w, cap * sizeof(*p));

		if (!p) {
			cnisrv_reply(c->srv, ticket, 0, "meshd is out of memory");
			return;
		}
		c->w = p;
		c->capw = cap;
	}
	if (req->from_pending)
		pr_info("pod %s/%s (%s): skmesh-cni left a record of it (meshd was down or "
			"slow to answer): enrolling it now\n",
			req->pod_ns, req->pod_name, req->netns);
	ksource_pod_netns(c->ks, req->pod_uid, req->netns, req->ips, req->nips, what);
	c->w[c->nw++] = (struct waiter){
		.ticket = ticket,
		.since = mono_ms(),
		.deadline = mono_ms() + CLUSTER_ACK_WAIT_MS,
		.need_gen = ksource_gen(c->ks),
		.pending = req->from_pending,
	};
	snprintf(c->w[c->nw - 1].uid, sizeof(c->w[0].uid), "%s", req->pod_uid);
	snprintf(c->w[c->nw - 1].name, sizeof(c->w[0].name), "%s/%s", req->pod_ns,
		 req->pod_name);
}

static const struct cnisrv_ops srv_ops = { .request = on_request };

int cluster_cni_open(struct cluster_cni **out, struct ksource *ks, const char *socket,
		     const char *pending, const char *proc, int efd)
{
	struct cnisrv_opts so = { .socket_path = socket, .pending_dir = pending };
	struct cluster_cni *c = calloc(1, sizeof(*c));
	struct epoll_event ev = { .events = EPOLLIN };
	int err, n;

	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	c->ks = ks;
	c->proc = proc ? proc : "/proc";
	err = cnisrv_open(&so, &srv_ops, c, &c->srv);
	if (err) {
		free(c);
		return err;
	}
	ev.data.fd = cnisrv_fd(c->srv);
	if (epoll_ctl(efd, EPOLL_CTL_ADD, ev.data.fd, &ev)) {
		err = -errno;
		pr_warn("epoll_ctl: %s\n", strerror(errno));
		cluster_cni_close(c);
		return err;
	}
	n = cnisrv_load_pending(c->srv);
	if (n > 0)
		pr_info("skmesh-cni left %d pod%s while meshd was down\n", n, n == 1 ? "" : "s");
	*out = c;
	return 0;
}

int cluster_cni_owns(const struct cluster_cni *c, int fd)
{
	return c && fd == cnisrv_fd(c->srv);
}

void cluster_cni_process(struct cluster_cni *c)
{
	cnisrv_process(c->srv);
}

void cluster_cni_applied(struct cluster_cni *c, const struct config *cfg, uint64_t gen,
			 uint64_t seq)
{
	if (!c)
		return;
	c->cur = cfg;
	for (size_t i = 0; i < c->nw; i++)
		if (!c->w[i].seq && gen >= c->w[i].need_gen)
			c->w[i].seq = seq;
}

/* /proc: the local pods no one announced (meshd was down for their ADD
 * and its pending file is gone, or they predate skmesh). */
struct scan_arg {
	struct cluster_cni *c;
	struct podscan *ps;
	int opened;
	size_t found, missing;
};

static void scan_one(void *arg, const char *uid, const uint32_t *ips, size_t nips)
{
	struct scan_arg *a = arg;
	char path[256];
	int err;

	if (!a->opened) {
		a->opened = 1;
		err = podscan_open(a->c->proc, &a->ps);
		if (err)
			pr_warn("cannot scan %s for running pods: %s\n", a->c->proc,
				strerror(-err));
	}
	if (!a->ps || podscan_find(a->ps, uid, ips, nips, path, sizeof(path))) {
		a->missing++;
		return;
	}
	a->found++;
	ksource_pod_netns(a->c->ks, uid, path, ips, nips, "proc");
}

struct found {
	char uid[65];
	uint32_t ips[8];
	size_t n;
};

struct collect {
	struct found *v;
	size_t n;
};

static void collect_one(void *arg, const char *uid, const uint32_t *ips, size_t nips)
{
	struct collect *k = arg;
	struct found *p = realloc(k->v, (k->n + 1) * sizeof(*p));

	if (!p)
		return;
	k->v = p;
	p += k->n++;
	snprintf(p->uid, sizeof(p->uid), "%s", uid);
	p->n = nips < 8 ? nips : 8;
	memcpy(p->ips, ips, p->n * sizeof(*ips));
}

static void scan(struct cluster_cni *c)
{
	struct scan_arg a = { .c = c };
	struct collect col = {};

	/* collected first, told after: the source's lock is held in the walk */
	ksource_pods_without_netns(c->ks, collect_one, &col);
	c->scans++;
	for (size_t i = 0; i < col.n; i++)
		scan_one(&a, col.v[i].uid, col.v[i].ips, col.v[i].n);
	if (a.found)
		pr_info("found %zu running pod%s of this node in %s\n", a.found,
			a.found == 1 ? "" : "s", c->proc);
	if (a.missing)
		pr_debug("%zu pods of this node have no network namespace meshd knows\n",
			 a.missing);
	c->scan_found += a.found;
	podscan_free(a.ps);
	free(col.v);
}

void cluster_cni_tick(struct cluster_cni *c, const struct config *cfg, uint64_t tun_seq,
		      int no_tunnel)
{
	double now = mono_ms();

	if (!c)
		return;
	c->cur = cfg;
	cnisrv_process(c->srv);
	if (now >= c->next_scan && ksource_synced(c->ks)) {
		/* records skmesh-cni left since meshd started (an ADD it gave
		 * up waiting for): taken, answered and removed like those
		 * found at start; none is taken twice */
		if (c->next_scan)
			cnisrv_load_pending(c->srv);
		scan(c);
		c->next_scan = now + CLUSTER_RESCAN_MS;
	}
	for (size_t i = 0; i < c->nw;) {
		struct waiter *w = &c->w[i];
		int in = 0;
		enum ks_pod_state s = ksource_pod_state(c->ks, w->uid, cfg, &in);

		if (s == KS_POD_OUTSIDE) {
			pr_debug("pod %s is not in the mesh\n", w->name);
			answer(c, i, ACK_OUTSIDE, NULL);
			continue;
		}
		if (s == KS_POD_ENROLLED && w->seq && in && (no_tunnel || tun_seq >= w->seq)) {
			pr_debug("pod %s enrolled in %.1f ms\n", w->name, now - w->since);
			answer(c, i, ACK_ENROLLED, NULL);
			continue;
		}
		/* a pending record is read at meshd's start, when the API may
		 * still be out of reach or some types not yet readable: its
		 * time runs from the source's first sync, or it would be given
		 * up (and its record kept for good) before meshd could enrol it */
		if (w->pending && !ksource_synced(c->ks))
			w->deadline = now + CLUSTER_ACK_WAIT_MS;
		if (now < w->deadline) {
			i++;
			continue;
		}
		if (s == KS_POD_UNKNOWN) {
			/* never fail a pod's start on the watch's lag */
			pr_warn("pod %s is not known to the API server yet: it is enrolled once "
				"it is\n", w->name);
			answer(c, i, ACK_UNKNOWN, NULL);
		} else if (w->pending) {
			pr_warn("pod %s (set up while meshd was down): not enrolled %d ms after "
				"the API's sync (see the messages above); its pending record is "
				"kept for meshd's next start\n", w->name, CLUSTER_ACK_WAIT_MS);
			answer(c, i, ACK_FAILED, "meshd could not enrol the pod in time");
		} else {
			pr_warn("pod %s: not enrolled after %d ms (see the messages above): its "
				"network setup fails, the kubelet retries it\n", w->name,
				CLUSTER_ACK_WAIT_MS);
			answer(c, i, ACK_FAILED, "meshd could not enrol the pod in time");
		}
	}
	pthread_mutex_lock(&c->lock);
	memcpy(c->pub.acks, c->acks, sizeof(c->acks));
	c->pub.ack_ms_sum = c->ack_ms_sum;
	c->pub.scan_found = c->scan_found;
	cnisrv_stats(c->srv, &c->pub.srv);
	pthread_mutex_unlock(&c->lock);
}

void cluster_cni_metrics(struct cluster_cni *c, struct sbuf *b)
{
	struct cnisrv_stats st;
	struct cni_pub p;

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	p = c->pub;
	pthread_mutex_unlock(&c->lock);
	st = p.srv;
	sbuf_printf(b, "# HELP skmesh_cni_acks_total Pod ADDs answered, by what the pod is to "
		    "the mesh\n# TYPE skmesh_cni_acks_total counter\n");
	for (int i = 0; i < ACK_NRESULTS; i++)
		sbuf_printf(b, "skmesh_cni_acks_total{result=\"%s\"} %llu\n", ack_names[i],
			    (unsigned long long)p.acks[i]);
	sbuf_printf(b, "# HELP skmesh_cni_ack_seconds_total Time from ADD to enrolled, summed\n"
		    "# TYPE skmesh_cni_ack_seconds_total counter\n"
		    "skmesh_cni_ack_seconds_total %.6f\n", p.ack_ms_sum / 1e3);
	sbuf_printf(b, "# HELP skmesh_cni_requests_total Requests from skmesh-cni, by outcome\n"
		    "# TYPE skmesh_cni_requests_total counter\n"
		    "skmesh_cni_requests_total{result=\"accepted\"} %llu\n"
		    "skmesh_cni_requests_total{result=\"malformed\"} %llu\n"
		    "skmesh_cni_requests_total{result=\"busy\"} %llu\n"
		    "skmesh_cni_requests_total{result=\"timeout\"} %llu\n",
		    (unsigned long long)st.requests, (unsigned long long)st.bad_requests,
		    (unsigned long long)st.refused_busy, (unsigned long long)st.timeouts);
	sbuf_printf(b, "# HELP skmesh_cni_pending_total Pods skmesh-cni set up while meshd was "
		    "down, taken at meshd's start\n# TYPE skmesh_cni_pending_total counter\n"
		    "skmesh_cni_pending_total %llu\n", (unsigned long long)st.pending_loaded);
	sbuf_printf(b, "# HELP skmesh_proc_scan_pods_total Running local pods found in /proc\n"
		    "# TYPE skmesh_proc_scan_pods_total counter\n"
		    "skmesh_proc_scan_pods_total %llu\n", (unsigned long long)p.scan_found);
}

void cluster_cni_close(struct cluster_cni *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nw; i++)
		cnisrv_reply(c->srv, c->w[i].ticket, 0, "meshd is stopping");
	cnisrv_close(c->srv);
	pthread_mutex_destroy(&c->lock);
	free(c->w);
	free(c);
}
