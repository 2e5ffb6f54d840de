// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The kernel's policy tables of one destination (policy_compile.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/types.h>

#include "policy.h"
#include "policy_compile.h"
#include "skmesh.h"

static const char *why_text(const struct pol_result *r, char *buf, size_t len)
{
	switch (r->why) {
	case POL_ALLOW_NO_POLICY:
		return "allow: no ALLOW policy applies";
	case POL_ALLOW_RULE:
		snprintf(buf, len, "allow: ALLOW rule %d", r->rule);
		return buf;
	case POL_DENY_RULE:
		snprintf(buf, len, "deny: DENY rule %d", r->rule);
		return buf;
	case POL_DENY_NO_MATCH:
		return "deny: no ALLOW policy matched";
	case POL_DENY_STRICT:
		return "deny: STRICT mTLS, no client identity";
	case POL_DENY_STRICT_PORT:
		return "deny: port is STRICT mTLS, no client identity";
	}
	return "?";
}

/* The reasons one destination's verdicts gave so far: a table has
 * hundreds of verdicts and a handful of reasons, each formatted and
 * interned once. A result is known by the policy it points to (the
 * model's strings, stable during a build), why and rule. */
#define REASON_MEMO 32

struct reason_memo {
	struct {
		const char *ns, *name;
		enum pol_why why;
		int rule;
		uint32_t id;
	} v[REASON_MEMO];
	size_t n;
};

/* A verdict value for R, its reason's id from REASONS (NULL: 0). */
static int verdict_of(const struct pol_result *r, const struct policy_reasons *reasons,
		      struct reason_memo *memo, struct skm_verdict *v)
{
	char pol[160], why[64];
	uint32_t id = 0;
	int err = 0;

	v->allow = !!r->allow;
	v->reason_id = 0;
	if (!reasons)
		return 0;
	for (size_t i = 0; i < memo->n; i++)
		if (memo->v[i].ns == r->policy_ns && memo->v[i].name == r->policy_name &&
		    memo->v[i].why == r->why && memo->v[i].rule == r->rule) {
			v->reason_id = memo->v[i].id;
			return 0;
		}
	if (r->policy_name)
		snprintf(pol, sizeof(pol), "%s/%s", r->policy_ns, r->policy_name);
	else
		snprintf(pol, sizeof(pol), "-");
	err = reasons->intern(reasons->arg, pol, why_text(r, why, sizeof(why)), &id);
	if (err)
		return err;
	if (memo->n < REASON_MEMO) {
		memo->v[memo->n].ns = r->policy_ns;
		memo->v[memo->n].name = r->policy_name;
		memo->v[memo->n].why = r->why;
		memo->v[memo->n].rule = r->rule;
		memo->v[memo->n++].id = id;
	}
	v->reason_id = id;
	return 0;
}

/* The first address of C not inside a longer CIDR of the list (those get
 * their own LPM entry), or -1 when they cover all of C. */
static int64_t cidr_representative(const struct pol_cidr *c, const struct pol_cidr *all,
				   size_t n)
{
	uint64_t cand = ntohl(c->ip);
	uint64_t last = cand + ((c->len ? (1ULL << (32 - c->len)) : (1ULL << 32)) - 1);
	int moved = 1;

	while (moved && cand <= last) {
		moved = 0;
		for (size_t i = 0; i < n; i++) {
			uint64_t start = ntohl(all[i].ip);
			uint64_t size = all[i].len ? 1ULL << (32 - all[i].len) : 1ULL << 32;

			if (all[i].len <= c->len || all[i].v6 || !(all[i].flags & POL_CIDR_SRC))
				continue;
			if (cand >= start && cand < start + size) {
				cand = start + size;
				moved = 1;
			}
		}
	}
	return cand <= last ? (int64_t)cand : -1;
}

/* Appends one entry (K of KSZ bytes, V) to the arrays *KEYS / *VALS of
 * *N entries, grown by powers of two. */
static int entry_add(void **keys, struct skm_verdict **vals, size_t *n, const void *k,
		     size_t ksz, const struct skm_verdict *v)
{
	size_t cap = 1;

	while (cap < *n)
		cap <<= 1;
	if (!*keys || *n == cap) {
		size_t room = *n ? cap * 2 : 1;
		void *nk = realloc(*keys, room * ksz);

		if (!nk)
			return -ENOMEM;
		*keys = nk;
		if (!(nk = realloc(*vals, room * sizeof(**vals))))
			return -ENOMEM;
		*vals = nk;
	}
	memcpy((char *)*keys + *n * ksz, k, ksz);
	(*vals)[(*n)++] = *v;
	return 0;
}

int policy_tables_build(const struct config *cfg, const struct cfg_workload *w,
			const struct policy_src *srcs, size_t nsrcs,
			const struct policy_reasons *reasons, struct policy_tables *out)
{
	struct pol_target t = { .ns = w->ns, .labels = &w->labels };
	struct pol_cidr *cidrs = NULL, all = { .len = 0, .flags = POL_CIDR_SRC };
	uint16_t *ports = NULL, other = 1;
	struct pol_set *set = NULL;
	struct reason_memo memo = { .n = 0 };
	size_t nports = 0, ncidrs = 0;
	int err, all_listed = 0;

	memset(out, 0, sizeof(*out));
	err = policy_set_build(cfg, &t, &set);
	if (!err)
		err = policy_ports_of(cfg, &t, &ports, &nports);
	if (!err)
		err = policy_cidrs_of(cfg, &t, &cidrs, &ncidrs);
	if (err)
		goto out;
	/* "Any other port": the first one no policy names. */
	for (size_t i = 0; i < nports && ports[i] == other; i++)
		other++;
	/* 0.0.0.0/0 among the CIDRs already gives the catch-all entries */
	for (size_t i = 0; i < ncidrs; i++)
		if (!cidrs[i].len && !cidrs[i].v6 && (cidrs[i].flags & POL_CIDR_SRC))
			all_listed = 1;

	for (size_t pi = 0; pi <= nports && !err; pi++) {
		uint16_t port = pi < nports ? ports[pi] : other;
		uint16_t kport = pi < nports ? ports[pi] : 0;

		for (size_t si = 0; si < nsrcs && !err; si++) {
			struct pol_conn c = {
				.mtls = 1, .src_ns = srcs[si].w->ns, .src_sa = srcs[si].w->sa,
				.src_ip = srcs[si].w->ip, .dst_ip = w->ip, .dst_port = port,
			};
			struct skm_verdict_key k = { .src_id = srcs[si].wl_id, .port = kport };
			struct pol_result r;
			struct skm_verdict v;

			err = policy_set_eval(set, &c, &r);
			if (!err)
				err = verdict_of(&r, reasons, &memo, &v);
			if (!err)
				err = entry_add((void **)&out->vkeys, &out->vvals, &out->nv,
						&k, sizeof(k), &v);
		}
		for (size_t ci = 0; ci <= ncidrs && !err; ci++) {
			const struct pol_cidr *cc = ci < ncidrs ? &cidrs[ci] : &all;
			struct pol_conn c = { .dst_ip = w->ip, .dst_port = port };
			struct skm_plain_key k = {
				.prefixlen = SKM_PLAIN_PREFIX_BASE + cc->len,
				.port = htons(kport),
			};
			struct pol_result r;
			struct skm_verdict v;
			int64_t rep;

			if (cc->v6 || !(cc->flags & POL_CIDR_SRC) || (cc == &all && all_listed))
				continue;
			rep = cidr_representative(cc, cidrs, ncidrs);
			if (rep < 0)
				continue;	/* fully covered by longer prefixes */
			c.src_ip = htonl((uint32_t)rep);
			memcpy(k.src, &cc->ip, 4);
			err = policy_set_eval(set, &c, &r);
			if (!err)
				err = verdict_of(&r, reasons, &memo, &v);
			if (!err)
				err = entry_add((void **)&out->pkeys, &out->pvals, &out->np,
						&k, sizeof(k), &v);
		}
	}
out:
	policy_set_free(set);
	free(ports);
	free(cidrs);
	return err;
}

int policy_tables_compile(const struct config *cfg, const struct cfg_workload *w,
			  const struct policy_src *srcs, size_t nsrcs,
			  struct policy_tables *out)
{
	int err = policy_tables_build(cfg, w, srcs, nsrcs, NULL, out);

	if (err)
		policy_tables_free(out);
	return err;
}

void policy_tables_free(struct policy_tables *t)
{
	free(t->vkeys);
	free(t->vvals);
	free(t->pkeys);
	free(t->pvals);
	memset(t, 0, sizeof(*t));
}
