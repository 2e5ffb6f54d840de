// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Established connections that a policy change now denies are closed, as
 * ztunnel closes the connections it carries when their authorization
 * changes. The kernel judges a same-node or plaintext connection once, at
 * connect() or at its SYN; after a reconcile that compiled new verdicts
 * for some destinations, meshd judges their live connections again with
 * the same evaluator (policy_eval, the one definition the verdict maps are
 * compiled from) and closes those it denies: their sockets' cookies go in
 * skm_revoke, and the TCP iterator skm_iter_revoke, read inside the
 * destination pod's network namespace, aborts them (bpf_sock_destroy: the
 * app gets ECONNABORTED, the client a RST).
 *
 * Connections carried by the tunnel are the tunnel's to judge
 * (hbone_reauthorize); only the destination's end of a connection is
 * looked at, and its close reaches the access log like any other.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader.h"
#include "log.h"
#include "model.h"
#include "netns.h"
#include "policy.h"
#include "revoke.h"
#include "revoke.skel.h"
#include "skmesh.skel.h"
#include "skmesh.h"

#define LOG_LINES	10	/* closed connections named in the log, per change */

struct victim {
	__u64 cookie;
	const char *netns;	/* the destination pod's */
	struct skm_sock_key tuple;
	char why[160];
};

struct walk {
	const struct config *cfg;
	const char *node;
	const uint32_t *dsts;
	size_t ndsts;
	struct victim *v;
	size_t n, cap;
};

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The verdict for the server end C now: 1 to close it. */
static int denied(struct walk *wk, const struct skm_conn *c, const struct cfg_workload *dst,
		  char *why, size_t len)
{
	const struct cfg_workload *src = config_workload_by_ip(wk->cfg, c->tuple.dip);
	struct pol_target t = { .ns = dst->ns, .labels = &dst->labels };
	struct pol_conn pc = { .src_ip = c->tuple.dip, .dst_ip = c->tuple.sip,
			       .dst_port = (uint16_t)c->tuple.sport };
	struct pol_result r;

	/* As the kernel knows the client: a local pod with a namespace by
	 * its identity (connect4), anything else as plaintext (TC). */
	if (src && src->netns && !strcmp(src->node, wk->node)) {
		pc.mtls = 1;
		pc.src_ns = src->ns;
		pc.src_sa = src->sa;
	}
	if (policy_eval(wk->cfg, &t, &pc, &r) || r.allow)
		return 0;
	policy_reason(&r, why, len);
	return 1;
}

static int walk_one(const void *cookie, const void *rec, void *arg)
{
	const struct skm_conn *c = rec;
	struct walk *wk = arg;
	const struct cfg_workload *dst;
	struct victim *v;
	char why[160];

	if (c->flags & (SKM_CONN_ACTIVE | SKM_CONN_TUNNEL))
		return 0;
	if (!bsearch(&c->tuple.sip, wk->dsts, wk->ndsts, sizeof(*wk->dsts), u32_cmp))
		return 0;
	dst = config_workload_by_ip(wk->cfg, c->tuple.sip);
	if (!dst || !dst->netns || strcmp(dst->node, wk->node) || !denied(wk, c, dst, why, sizeof(why)))
		return 0;
	if (wk->n == wk->cap) {
		size_t cap = wk->cap ? wk->cap * 2 : 64;
		struct victim *g = realloc(wk->v, cap * sizeof(*g));

		if (!g)
			return -ENOMEM;
		wk->v = g;
		wk->cap = cap;
	}
	v = &wk->v[wk->n++];
	memcpy(&v->cookie, cookie, sizeof(v->cookie));
	v->netns = dst->netns;
	v->tuple = c->tuple;
	snprintf(v->why, sizeof(v->why), "%s", why);
	return 0;
}

static int victim_by_netns(const void *a, const void *b)
{
	return strcmp(((const struct victim *)a)->netns, ((const struct victim *)b)->netns);
}

/* The iterator, loaded and attached the first time: 0, or -errno (said
 * once; later calls fail at once). */
static int iter_ready(struct loader *l)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = l->pin_root);
	int err;

	if (l->revoke_link)
		return 0;
	if (l->revoke_off)
		return -EOPNOTSUPP;
	l->revoke_skel = revoke_bpf__open_opts(&opts);
	err = l->revoke_skel ? revoke_bpf__load(l->revoke_skel) : -errno;
	if (!err) {
		l->revoke_link = bpf_program__attach_iter(l->revoke_skel->progs.skm_iter_revoke,
							  NULL);
		err = l->revoke_link ? 0 : -errno;
	}
	if (err) {
		pr_warn("policy: cannot load the program that closes connections (it needs "
			"bpf_sock_destroy, Linux 6.5 or later): %s; connections open when a "
			"policy change denies them stay open\n", strerror(-err));
		revoke_bpf__destroy(l->revoke_skel);
		l->revoke_skel = NULL;
		l->revoke_off = 1;
	}
	return err;
}

static int iter_create(void *arg)
{
	int fd = bpf_iter_create(bpf_link__fd(arg));

	return fd < 0 ? -errno : fd;
}

/* Reads the iterator in NETNS (it walks the namespace of whoever creates
 * it): the number of sockets it closed, or -errno. */
static int run_iter(struct loader *l, const char *netns)
{
	int fd = netns_run_at(netns, iter_create, l->revoke_link), err = 0, closed = 0;
	__u64 buf[64];
	ssize_t n;

	if (fd < 0)
		return fd;
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		closed += n / sizeof(buf[0]);
	}
	close(fd);
	return err ? err : closed;
}

static void log_victim(const struct victim *v)
{
	char s[INET_ADDRSTRLEN], d[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &v->tuple.dip, s, sizeof(s));
	inet_ntop(AF_INET, &v->tuple.sip, d, sizeof(d));
	pr_info("policy: closing %s:%u -> %s:%u, now %s\n", s, v->tuple.dport, d,
		v->tuple.sport, v->why);
}

int revoke_denied(struct loader *l, const struct config *cfg, const char *node,
		  uint32_t *dsts, size_t ndsts, unsigned int *closed)
{
	struct walk wk = { .cfg = cfg, .node = node, .dsts = dsts, .ndsts = ndsts };
	int fd, err = 0;
	__u8 one = 1;

	*closed = 0;
	if (!ndsts)
		return 0;
	qsort(dsts, ndsts, sizeof(*dsts), u32_cmp);
	err = map_batch_each(bpf_map__fd(l->skel->maps.skm_conns), sizeof(__u64),
			     sizeof(struct skm_conn), 512, walk_one, &wk);
	if (err || !wk.n)
		goto out;
	err = iter_ready(l);
	if (err)
		goto out;
	fd = bpf_map__fd(l->revoke_skel->maps.skm_revoke);
	qsort(wk.v, wk.n, sizeof(*wk.v), victim_by_netns);
	for (size_t i = 0; i < wk.n && i < LOG_LINES; i++)
		log_victim(&wk.v[i]);
	if (wk.n > LOG_LINES)
		pr_info("policy: ... and %zu more connections\n", wk.n - LOG_LINES);
	/* One iterator pass per namespace, at most SKM_MAX_REVOKE at a time. */
	for (size_t i = 0, j; i < wk.n; i = j) {
		size_t put = 0;
		int r;

		for (j = i; j < wk.n && !strcmp(wk.v[j].netns, wk.v[i].netns) &&
			    put < SKM_MAX_REVOKE; j++)
			put += !bpf_map_update_elem(fd, &wk.v[j].cookie, &one, BPF_ANY);
		if (put < j - i) {
			pr_warn("policy: %zu connections now denied in %s stay open: %s\n",
				j - i - put, wk.v[i].netns, strerror(errno));
			err = -EIO;
		}
		r = run_iter(l, wk.v[i].netns);
		for (size_t k = i; k < j; k++)
			bpf_map_delete_elem(fd, &wk.v[k].cookie);
		if (r < 0) {
			pr_warn("policy: cannot close the connections now denied in %s: %s\n",
				wk.v[i].netns, strerror(-r));
			err = r;
			continue;
		}
		*closed += r;
	}
out:
	free(wk.v);
	return err;
}
