// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Istio L4 policy evaluation, with ztunnel's semantics (src/rbac.rs) over
 * the policies istiod would send it (pilot/pkg/serviceregistry/ambient/
 * authorization.go). See policy.h for the order and
 * tests/testdata/istio-l4-policy/README.md for the rules, case by case.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static int authz_applies(const struct config *cfg, const struct cfg_authz *a,
			 const struct pol_target *dst)
{
	static const struct cfg_labels none;

	if (a->target_ref || a->dry_run)
		return 0;
	if (strcmp(a->ns, dst->ns) && strcmp(a->ns, cfg->root_ns))
		return 0;
	return !a->has_selector || labels_match(&a->selector, dst->labels ? dst->labels : &none);
}

/* --- evaluation -------------------------------------------------------- */

struct pol_set {
	const struct config *cfg;
	const struct cfg_authz **deny;
	size_t ndeny;
	const struct cfg_authz **allow;
	size_t nallow;
	struct pa_eff pa;
};

static void result_set(struct pol_result *res, int allow, enum pol_why why,
		       const char *kind, const char *ns, const char *name, int rule)
{
	res->allow = allow;
	res->why = why;
	res->kind = kind;
	res->policy_ns = ns;
	res->policy_name = name;
	res->rule = rule;
}

/* PeerAuthentication: 1 (and RES) when it denies. */
static int pa_denies(const struct pa_eff *e, const struct conn_view *v, struct pol_result *res)
{
	switch (rules_pa_denies(e, v)) {
	case RULES_DENY_STRICT:
		result_set(res, 0, POL_DENY_STRICT, "PeerAuthentication", e->strict_by->ns,
			   e->strict_by->name, -1);
		return 1;
	case RULES_DENY_PORT:
		result_set(res, 0, POL_DENY_STRICT_PORT, "PeerAuthentication", e->port_pa->ns,
			   e->port_pa->name, -1);
		return 1;
	}
	return 0;
}

/* One applicable policy A: 1 when the verdict is decided (RES set). */
static int authz_step(const struct cfg_authz *a, enum pol_action pass,
		      const struct conn_view *v, struct pol_result *res)
{
	int r;

	if (a->action != pass)
		return 0;
	if (pass == POL_ALLOW)
		res->nallow++;
	r = rules_match(a->rules, a->nrules, v);
	if (r < 0)
		return 0;
	if (pass == POL_DENY)
		result_set(res, 0, POL_DENY_RULE, "AuthorizationPolicy", a->ns, a->name, r);
	else
		result_set(res, 1, POL_ALLOW_RULE, "AuthorizationPolicy", a->ns, a->name, r);
	return 1;
}

static void result_default(struct pol_result *res)
{
	if (res->nallow)
		result_set(res, 0, POL_DENY_NO_MATCH, NULL, NULL, NULL, -1);
	else
		result_set(res, 1, POL_ALLOW_NO_POLICY, NULL, NULL, NULL, -1);
}

int policy_eval(const struct config *cfg, const struct pol_target *dst,
		const struct pol_conn *c, struct pol_result *res)
{
	static const enum pol_action passes[] = { POL_DENY, POL_ALLOW };
	struct model_range rs[2];
	struct conn_view v;
	struct pa_pick k;
	struct pa_eff e;
	size_t nr = 1;

	if (!cfg || !dst || !dst->ns || !c || !res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	res->rule = -1;
	rules_view_init(cfg->trust_domain, c, &v);
	model_pa_pick(cfg, dst->ns, dst->labels, &k);
	model_pa_decide(&k, &e);
	if (pa_denies(&e, &v, res))
		return 0;
	rs[0] = model_ns_range(cfg, 0, dst->ns);
	if (strcmp(dst->ns, cfg->root_ns))
		rs[nr++] = model_ns_range(cfg, 0, cfg->root_ns);
	for (size_t p = 0; p < 2; p++)
		for (size_t r = 0; r < nr; r++)
			for (size_t i = 0; i < rs[r].n; i++) {
				const struct cfg_authz *a = &cfg->authz[rs[r].v[i]];

				if (authz_applies(cfg, a, dst) && authz_step(a, passes[p], &v, res))
					return 0;
			}
	result_default(res);
	return 0;
}

int policy_set_build(const struct config *cfg, const struct pol_target *dst,
		     struct pol_set **out)
{
	struct pol_set *s;
	struct model_range rs[2];
	struct pa_pick k;
	size_t nr = 1, n = 0;

	if (!cfg || !dst || !dst->ns || !out)
		return -EINVAL;
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->cfg = cfg;
	model_pa_pick(cfg, dst->ns, dst->labels, &k);
	model_pa_decide(&k, &s->pa);
	rs[0] = model_ns_range(cfg, 0, dst->ns);
	if (strcmp(dst->ns, cfg->root_ns))
		rs[nr++] = model_ns_range(cfg, 0, cfg->root_ns);
	for (size_t r = 0; r < nr; r++)
		n += rs[r].n;
	s->deny = calloc(n ? n : 1, sizeof(*s->deny));
	s->allow = calloc(n ? n : 1, sizeof(*s->allow));
	if (!s->deny || !s->allow) {
		policy_set_free(s);
		return -ENOMEM;
	}
	for (size_t r = 0; r < nr; r++)
		for (size_t i = 0; i < rs[r].n; i++) {
			const struct cfg_authz *a = &cfg->authz[rs[r].v[i]];

			if (!authz_applies(cfg, a, dst))
				continue;
			if (a->action == POL_DENY)
				s->deny[s->ndeny++] = a;
			else
				s->allow[s->nallow++] = a;
		}
	*out = s;
	return 0;
}

int policy_set_eval(const struct pol_set *s, const struct pol_conn *c,
		    struct pol_result *res)
{
	struct conn_view v;

	if (!s || !c || !res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	res->rule = -1;
	rules_view_init(s->cfg->trust_domain, c, &v);
	if (pa_denies(&s->pa, &v, res))
		return 0;
	for (size_t i = 0; i < s->ndeny; i++)
		if (authz_step(s->deny[i], POL_DENY, &v, res))
			return 0;
	for (size_t i = 0; i < s->nallow; i++)
		if (authz_step(s->allow[i], POL_ALLOW, &v, res))
			return 0;
	result_default(res);
	return 0;
}

void policy_set_free(struct pol_set *s)
{
	if (!s)
		return;
	free(s->deny);
	free(s->allow);
	free(s);
}

const char *policy_reason(const struct pol_result *r, char *buf, size_t len)
{
	switch (r->why) {
	case POL_ALLOW_NO_POLICY:
		snprintf(buf, len, "allowed: no ALLOW policy applies");
		break;
	case POL_ALLOW_RULE:
		snprintf(buf, len, "allowed by ALLOW policy %s/%s rule %d",
			 r->policy_ns, r->policy_name, r->rule);
		break;
	case POL_DENY_RULE:
		snprintf(buf, len, "denied by DENY policy %s/%s rule %d",
			 r->policy_ns, r->policy_name, r->rule);
		break;
	case POL_DENY_NO_MATCH:
		snprintf(buf, len, "denied: %u ALLOW polic%s appl%s and none matches",
			 r->nallow, r->nallow == 1 ? "y" : "ies", r->nallow == 1 ? "ies" : "y");
		break;
	case POL_DENY_STRICT:
		snprintf(buf, len, "denied: STRICT mTLS (PeerAuthentication %s/%s) and no client identity",
			 r->policy_ns, r->policy_name);
		break;
	case POL_DENY_STRICT_PORT:
		snprintf(buf, len, "denied: the port is STRICT (PeerAuthentication %s/%s portLevelMtls) and no client identity",
			 r->policy_ns, r->policy_name);
		break;
	default:
		snprintf(buf, len, "?");
	}
	return buf;
}

/* --- what the kernel compiler needs ------------------------------------ */

/* Calls FN for every match of every enforced rule that can apply to DST,
 * and of its PeerAuthentication's converted policy. */
static int for_each_match(const struct config *cfg, const struct pol_target *dst,
			  int (*fn)(const struct pol_match *m, void *arg), void *arg)
{
	struct pol_set *s;
	int err;

	if ((err = policy_set_build(cfg, dst, &s)))
		return err;
	for (size_t pass = 0; pass < 3; pass++) {
		const struct cfg_authz **l = pass == 1 ? s->allow : s->deny;
		size_t n = pass == 0 ? s->ndeny : pass == 1 ? s->nallow : 1;

		for (size_t i = 0; i < n && !err; i++) {
			const struct pol_rule *rules = pass < 2 ? l[i]->rules : NULL;
			size_t nrules = pass < 2 ? l[i]->nrules : 0;

			if (pass == 2 && s->pa.port_pa) {
				rules = s->pa.port_pa->conv;
				nrules = s->pa.port_pa->nconv;
			}
			for (size_t r = 0; r < nrules && !err; r++) {
				const struct pol_rule *rule = &rules[r];

				if (rule->dropped)
					continue;
				for (size_t c = 0; c < rule->nclauses && !err; c++)
					for (size_t m = 0; m < rule->clauses[c].n && !err; m++)
						if (!rule->clauses[c].v[m].empty)
							err = fn(&rule->clauses[c].v[m], arg);
			}
		}
	}
	policy_set_free(s);
	return err;
}

struct port_acc {
	uint16_t *v;
	size_t n, cap;
};

static int port_push(struct port_acc *a, uint16_t p)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 16;
		uint16_t *v = realloc(a->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = p;
	return 0;
}

static int ports_fn(const struct pol_match *m, void *arg)
{
	struct port_acc *a = arg;

	for (size_t i = 0; i < m->ports.n; i++)
		if (port_push(a, m->ports.v[i]))
			return -ENOMEM;
	for (size_t i = 0; i < m->not_ports.n; i++)
		if (port_push(a, m->not_ports.v[i]))
			return -ENOMEM;
	return 0;
}

static int u16_cmp(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

int policy_ports_of(const struct config *cfg, const struct pol_target *dst,
		    uint16_t **ports, size_t *n)
{
	struct port_acc a = {};
	size_t k = 0;
	int err;

	*ports = NULL;
	*n = 0;
	if ((err = for_each_match(cfg, dst, ports_fn, &a))) {
		free(a.v);
		return err;
	}
	if (a.n)
		qsort(a.v, a.n, sizeof(*a.v), u16_cmp);
	for (size_t i = 0; i < a.n; i++)
		if (!k || a.v[k - 1] != a.v[i])
			a.v[k++] = a.v[i];
	if (!k) {
		free(a.v);
		a.v = NULL;
	}
	*ports = a.v;
	*n = k;
	return 0;
}

struct cidr_acc {
	struct pol_cidr *v;
	size_t n, cap;
};

static int cidr_push_list(struct cidr_acc *a, const struct pol_cidrs *l, uint8_t flags)
{
	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i].v6)
			continue;
		if (a->n == a->cap) {
			size_t cap = a->cap ? a->cap * 2 : 16;
			struct pol_cidr *v = realloc(a->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			a->v = v;
			a->cap = cap;
		}
		a->v[a->n] = l->v[i];
		a->v[a->n++].flags = flags;
	}
	return 0;
}

static int cidrs_fn(const struct pol_match *m, void *arg)
{
	struct cidr_acc *a = arg;

	if (cidr_push_list(a, &m->src_ips, POL_CIDR_SRC) ||
	    cidr_push_list(a, &m->not_src_ips, POL_CIDR_SRC) ||
	    cidr_push_list(a, &m->dst_ips, POL_CIDR_DST) ||
	    cidr_push_list(a, &m->not_dst_ips, POL_CIDR_DST))
		return -ENOMEM;
	return 0;
}

static int cidr_cmp(const void *a, const void *b)
{
	const struct pol_cidr *x = a, *y = b;
	uint32_t hx = ntohl(x->ip), hy = ntohl(y->ip);

	if (hx != hy)
		return hx < hy ? -1 : 1;
	return (int)x->len - (int)y->len;
}

int policy_cidrs_of(const struct config *cfg, const struct pol_target *dst,
		    struct pol_cidr **cidrs, size_t *n)
{
	struct cidr_acc a = {};
	size_t k = 0;
	int err;

	*cidrs = NULL;
	*n = 0;
	if ((err = for_each_match(cfg, dst, cidrs_fn, &a))) {
		free(a.v);
		return err;
	}
	if (a.n)
		qsort(a.v, a.n, sizeof(*a.v), cidr_cmp);
	for (size_t i = 0; i < a.n; i++) {
		if (k && !cidr_cmp(&a.v[k - 1], &a.v[i]))
			a.v[k - 1].flags |= a.v[i].flags;
		else
			a.v[k++] = a.v[i];
	}
	if (!k) {
		free(a.v);
		a.v = NULL;
	}
	*cidrs = a.v;
	*n = k;
	return 0;
}

int policy_applies(const struct config *cfg, const struct pol_target *dst)
{
	struct model_range rs[2];
	struct pa_pick k;
	struct pa_eff e;
	size_t nr = 1;

	model_pa_pick(cfg, dst->ns, dst->labels, &k);
	model_pa_decide(&k, &e);
	if (e.strict_by || e.port_pa)
		return 1;
	rs[0] = model_ns_range(cfg, 0, dst->ns);
	if (strcmp(dst->ns, cfg->root_ns))
		rs[nr++] = model_ns_range(cfg, 0, cfg->root_ns);
	for (size_t r = 0; r < nr; r++)
		for (size_t i = 0; i < rs[r].n; i++)
			if (authz_applies(cfg, &cfg->authz[rs[r].v[i]], dst))
				return 1;
	return 0;
}

/* --- what a destination's verdicts depend on ----------------------------- */

static uint64_t mix(uint64_t h, uint64_t v)
{
	h = (h ^ v) * 0xff51afd7ed558ccdULL;
	return h ^ (h >> 32);
}

static uint64_t mix_str(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return mix(h, 0xff);	/* the end, so "a"+"bc" differs from "ab"+"c" */
}

uint64_t policy_inputs(const struct config *cfg, const struct pol_target *dst)
{
	uint64_t h = mix_str(mix_str(mix_str(0x243f6a8885a308d3ULL, cfg->root_ns),
				     cfg->trust_domain), dst->ns);
	const char *nss[2] = { dst->ns, cfg->root_ns };

	for (size_t i = 0; dst->labels && i < dst->labels->n; i++)
		h = mix_str(mix_str(h, dst->labels->v[i].key), dst->labels->v[i].val);
	h = mix(h, dst->labels ? dst->labels->n : 0);
	for (size_t k = 0; k < 2; k++) {
		struct model_range a = model_ns_range(cfg, 0, nss[k]);
		struct model_range p = model_ns_range(cfg, 1, nss[k]);

		for (size_t i = 0; i < a.n; i++)
			h = mix(h, cfg->authz[a.v[i]].digest);
		h = mix(h, a.n);
		for (size_t i = 0; i < p.n; i++)
			h = mix(h, cfg->pas[p.v[i]].digest);
		h = mix(h, p.n);
	}
	return h;
}
