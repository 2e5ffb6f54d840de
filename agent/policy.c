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

#include "config.h"
#include "policy.h"

/* --- indexes by namespace ---------------------------------------------- */

struct ns_key {
	const struct config *cfg;
	int pas;		/* 1: cfg->pas, 0: cfg->authz */
};

static const char *ns_of(const struct config *cfg, int pas, size_t i)
{
	return pas ? cfg->pas[i].ns : cfg->authz[i].ns;
}

static const char *name_of(const struct config *cfg, int pas, size_t i)
{
	return pas ? cfg->pas[i].name : cfg->authz[i].name;
}

/* (namespace, load order) */
static int by_ns(const void *a, const void *b, void *arg)
{
	const struct ns_key *k = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int r = strcmp(ns_of(k->cfg, k->pas, x), ns_of(k->cfg, k->pas, y));

	return r ? r : (x > y) - (x < y);
}

/* (namespace, name, load order) */
static int by_ns_name(const void *a, const void *b, void *arg)
{
	const struct ns_key *k = arg;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int r = strcmp(ns_of(k->cfg, k->pas, x), ns_of(k->cfg, k->pas, y));

	if (!r)
		r = strcmp(name_of(k->cfg, k->pas, x), name_of(k->cfg, k->pas, y));
	return r ? r : (x > y) - (x < y);
}

struct range {
	const size_t *v;	/* positions in authz / pas, in load order */
	size_t n;
};

/* The policies of namespace NS, through the sorted index IDX of N. */
static struct range ns_range(const struct config *cfg, int pas, const size_t *idx,
			     size_t n, const char *ns)
{
	size_t lo = 0, hi = n, first;
	struct range r = { NULL, 0 };

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(ns_of(cfg, pas, idx[mid]), ns) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	first = lo;
	while (lo < n && !strcmp(ns_of(cfg, pas, idx[lo]), ns))
		lo++;
	r.v = idx ? idx + first : NULL;
	r.n = lo - first;
	return r;
}

static size_t *sorted_index(const struct config *cfg, int pas, size_t n,
			    int (*cmp)(const void *, const void *, void *))
{
	struct ns_key k = { cfg, pas };
	size_t *idx = malloc((n ? n : 1) * sizeof(*idx));

	if (!idx)
		return NULL;
	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	if (n)
		qsort_r(idx, n, sizeof(*idx), cmp, &k);
	return idx;
}

/* --- PeerAuthentication ------------------------------------------------ */

/* The policies that decide the mTLS mode of one workload. */
struct pa_pick {
	const struct cfg_peerauthn *mesh;	/* root namespace, no selector */
	const struct cfg_peerauthn *ns;		/* its namespace, no selector */
	const struct cfg_peerauthn *wl;		/* its namespace, selecting it */
};

/* What istiod attaches to the workload for ztunnel. */
struct pa_eff {
	const struct cfg_peerauthn *strict_by;	/* static STRICT DENY, from */
	const struct cfg_peerauthn *port_pa;	/* its converted DENY policy */
};

static int pa_has_port_mode(const struct cfg_peerauthn *p, int m1, int m2)
{
	for (size_t i = 0; i < p->nports; i++)
		if ((int)p->ports[i].mode == m1 || (int)p->ports[i].mode == m2)
			return 1;
	return 0;
}

/* istiod's convertedSelectorPeerAuthentications(): whether the static
 * STRICT policy and the workload's converted policy are attached. */
static void pa_decide(const struct pa_pick *k, struct pa_eff *e)
{
	const struct cfg_peerauthn *by = NULL, *wl = k->wl;
	int strict = 0;

	e->strict_by = e->port_pa = NULL;
	if (k->mesh) {
		strict = k->mesh->mode == PA_STRICT;
		by = k->mesh;
	}
	if (k->ns && k->ns->mode != PA_UNSET) {
		strict = k->ns->mode == PA_STRICT;
		by = k->ns;
	}
	if (wl) {
		if (wl->mode == PA_STRICT) {
			strict = 1;
			by = wl;
		}
		if (wl->mode == PA_PERMISSIVE || wl->mode == PA_DISABLE)
			strict = 0;
		if (wl->nports) {
			switch (wl->mode) {
			case PA_STRICT:
				if (pa_has_port_mode(wl, PA_PERMISSIVE, PA_DISABLE)) {
					e->port_pa = wl;
					strict = 0;
				}
				break;
			case PA_PERMISSIVE:
			case PA_DISABLE:
				if (pa_has_port_mode(wl, PA_STRICT, PA_STRICT))
					e->port_pa = wl;
				break;
			case PA_UNSET:
				/* only a PERMISSIVE port is an exception here,
				 * not a DISABLE one (istiod's quirk, README
				 * "Doubts" #2) */
				if (strict) {
					if (pa_has_port_mode(wl, PA_PERMISSIVE, PA_PERMISSIVE)) {
						e->port_pa = wl;
						strict = 0;
					}
				} else if (pa_has_port_mode(wl, PA_STRICT, PA_STRICT)) {
					e->port_pa = wl;
				}
				break;
			}
		}
	}
	if (strict)
		e->strict_by = by;
	if (e->port_pa && !e->port_pa->nconv)
		e->port_pa = NULL;	/* istiod sends nothing */
}

static const struct cfg_peerauthn *pa_first(const struct config *cfg, struct range r,
					    int selector, const struct cfg_labels *labels)
{
	for (size_t i = 0; i < r.n; i++) {
		const struct cfg_peerauthn *p = &cfg->pas[r.v[i]];

		if (p->ignored || p->has_selector != selector)
			continue;
		if (!selector || labels_match(&p->selector, labels))
			return p;
	}
	return NULL;
}

static void pa_pick(const struct config *cfg, const struct pol_target *dst,
		    struct pa_pick *k)
{
	struct range root = ns_range(cfg, 1, cfg->pas_by_ns, cfg->npas, cfg->root_ns);

	k->mesh = pa_first(cfg, root, 0, NULL);
	k->ns = k->wl = NULL;
	if (strcmp(dst->ns, cfg->root_ns)) {
		struct range r = ns_range(cfg, 1, cfg->pas_by_ns, cfg->npas, dst->ns);
		static const struct cfg_labels none;

		k->ns = pa_first(cfg, r, 0, NULL);
		k->wl = pa_first(cfg, r, 1, dst->labels ? dst->labels : &none);
	}
}

/* --- building converted rules ------------------------------------------ */

static struct pol_rule *rule_new(struct pol_rule **rules, size_t *n)
{
	struct pol_rule *r = realloc(*rules, (*n + 1) * sizeof(*r));

	if (!r)
		return NULL;
	*rules = r;
	r = &r[(*n)++];
	memset(r, 0, sizeof(*r));
	return r;
}

/* Adds a clause of one match to R. */
static struct pol_match *clause_new(struct pol_rule *r)
{
	struct pol_clause *cl = realloc(r->clauses, (r->nclauses + 1) * sizeof(*cl));

	if (!cl)
		return NULL;
	r->clauses = cl;
	cl = &cl[r->nclauses];
	if (!(cl->v = calloc(1, sizeof(*cl->v))))
		return NULL;
	cl->n = 1;
	r->nclauses++;
	return cl->v;
}

/* "no principal": notPrincipals [presence] */
static int m_no_principal(struct pol_match *m)
{
	m->not_principals.v = calloc(1, sizeof(*m->not_principals.v));
	if (!m->not_principals.v || !(m->not_principals.v->s = strdup("")))
		return -ENOMEM;
	m->not_principals.v->kind = POL_STR_PRESENCE;
	m->not_principals.n = 1;
	return 0;
}

static int m_port(struct pol_ports *l, uint16_t port)
{
	if (!(l->v = malloc(sizeof(*l->v))))
		return -ENOMEM;
	l->v[0] = port;
	l->n = 1;
	return 0;
}

static int mode_strict(const struct cfg_peerauthn *p)
{
	return p && p->mode == PA_STRICT;
}

static int mode_unset(const struct cfg_peerauthn *p)
{
	return !p || p->mode == PA_UNSET;
}

/*
 * istiod's convertPeerAuthentication(): workload policy P with
 * portLevelMtls, under namespace policy NS and mesh policy ROOT (either
 * may be NULL), as DENY rules for ztunnel. Leaves P->conv NULL when istiod
 * sends nothing. Returns 0 or -ENOMEM.
 */
static int pa_convert(struct cfg_peerauthn *p, const struct cfg_peerauthn *ns,
		      const struct cfg_peerauthn *root)
{
	struct pol_rule *groups = NULL, *rules = NULL, *g;
	size_t ngroups = 0, nrules = 0;
	int non_strict = 0, merge;
	struct pol_match *m;

	/* "rules" (one group, clauses AND-ed) are built as the clauses of
	 * one rule; each STRICT port is a group of its own */
	if (!(rules = calloc(1, sizeof(*rules))))
		return -ENOMEM;
	nrules = 1;
	if (p->mode == PA_STRICT && (!(m = clause_new(rules)) || m_no_principal(m)))
		goto nomem;
	for (size_t i = 0; i < p->nports; i++) {
		const struct cfg_pa_port *pt = &p->ports[i];

		switch (pt->mode) {
		case PA_STRICT:
			/* enforced by the parent mode already (istiod's
			 * condition, operator precedence included) */
			if (mode_strict(p) || (mode_unset(p) && mode_strict(ns)) ||
			    ((!ns || ns->mode == PA_UNSET) && mode_strict(root)))
				continue;
			if (!(g = rule_new(&groups, &ngroups)) || !(m = clause_new(g)) ||
			    m_no_principal(m) || m_port(&m->ports, pt->port))
				goto nomem;
			break;
		case PA_PERMISSIVE:
		case PA_DISABLE:
			if (p->mode == PA_PERMISSIVE || p->mode == PA_DISABLE)
				continue;
			if (p->mode == PA_UNSET &&
			    ((ns && !mode_strict(ns)) || (!ns && root && !mode_strict(root)) ||
			     (!ns && !root)))
				continue;
			non_strict = 1;
			if (!(m = clause_new(rules)) || m_port(&m->not_ports, pt->port))
				goto nomem;
			break;
		case PA_UNSET:
			break;
		}
	}
	if ((p->mode == PA_STRICT && !non_strict) || (!rules->nclauses && !ngroups)) {
		cfg_rules_free(rules, nrules);
		cfg_rules_free(groups, ngroups);
		return 0;
	}
	merge = (mode_strict(root) && (!ns || ns->mode == PA_UNSET || ns->mode == PA_STRICT)) ||
		mode_strict(ns);
	if (merge && non_strict && (!(m = clause_new(rules)) || m_no_principal(m)))
		goto nomem;
	if (rules->nclauses) {
		if (!(g = rule_new(&groups, &ngroups)))
			goto nomem;
		*g = *rules;
		memset(rules, 0, sizeof(*rules));
	}
	cfg_rules_free(rules, nrules);
	p->conv = groups;
	p->nconv = ngroups;
	return 0;
nomem:
	cfg_rules_free(rules, nrules);
	cfg_rules_free(groups, ngroups);
	return -ENOMEM;
}

/* --- matching ---------------------------------------------------------- */

/* The connection, ready for matching: the principal
 * "TD/ns/NS/sa/SA" is kept as its five pieces, never built. */
struct conn_view {
	int id;
	const char *seg[5];
	uint32_t len[5];
	uint32_t total;
	const char *ns;
	uint32_t nslen;
	const char *sa;
	uint32_t src_ip, dst_ip;
	uint16_t port;
};

static void view_init(const struct config *cfg, const struct pol_conn *c,
		      struct conn_view *v)
{
	v->id = c->mtls != 0;
	v->ns = v->id && c->src_ns ? c->src_ns : "";
	v->sa = v->id && c->src_sa ? c->src_sa : "";
	v->nslen = (uint32_t)strlen(v->ns);
	v->seg[0] = c->src_td ? c->src_td : cfg->trust_domain;
	v->seg[1] = "/ns/";
	v->seg[2] = v->ns;
	v->seg[3] = "/sa/";
	v->seg[4] = v->sa;
	v->total = 0;
	for (int i = 0; i < 5; i++) {
		v->len[i] = (uint32_t)strlen(v->seg[i]);
		v->total += v->len[i];
	}
	if (!v->id)
		v->total = 0;
	v->src_ip = c->src_ip;
	v->dst_ip = c->dst_ip;
	v->port = c->dst_port;
}

/* Whether the principal's bytes [OFF, OFF+N) are S. */
static int principal_at(const struct conn_view *v, uint32_t off, const char *s, uint32_t n)
{
	for (int i = 0; i < 5 && n; i++) {
		uint32_t l = v->len[i], k;

		if (off >= l) {
			off -= l;
			continue;
		}
		k = l - off < n ? l - off : n;
		if (memcmp(v->seg[i] + off, s, k))
			return 0;
		s += k;
		n -= k;
		off = 0;
	}
	return n == 0;
}

static int principal_match(const struct pol_str *m, const struct conn_view *v)
{
	if (!v->id)
		return 0;	/* ztunnel: no spiffe:// identity, no match */
	switch (m->kind) {
	case POL_STR_EXACT:
		return v->total == m->len && principal_at(v, 0, m->s, m->len);
	case POL_STR_PREFIX:
		return v->total >= m->len && principal_at(v, 0, m->s, m->len);
	case POL_STR_SUFFIX:
		return v->total >= m->len && principal_at(v, v->total - m->len, m->s, m->len);
	default:
		return v->total > 0;
	}
}

static int str_match(const struct pol_str *m, const char *s, uint32_t len)
{
	switch (m->kind) {
	case POL_STR_EXACT:
		return len == m->len && !memcmp(s, m->s, len);
	case POL_STR_PREFIX:
		return len >= m->len && !memcmp(s, m->s, m->len);
	case POL_STR_SUFFIX:
		return len >= m->len && !memcmp(s + len - m->len, m->s, m->len);
	default:
		return len > 0;
	}
}

static int any_principal(const struct pol_strs *l, const struct conn_view *v)
{
	for (size_t i = 0; i < l->n; i++)
		if (principal_match(&l->v[i], v))
			return 1;
	return 0;
}

static int any_ns(const struct pol_strs *l, const struct conn_view *v)
{
	for (size_t i = 0; i < l->n; i++)
		if (str_match(&l->v[i], v->ns, v->nslen))
			return 1;
	return 0;
}

static int any_sa(const struct pol_sas *l, const struct conn_view *v)
{
	if (!v->id)
		return 0;
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->v[i].ns, v->ns) && !strcmp(l->v[i].sa, v->sa))
			return 1;
	return 0;
}

static int any_cidr(const struct pol_cidrs *l, uint32_t ip)
{
	for (size_t i = 0; i < l->n; i++)
		if (!l->v[i].v6 && (ip & l->v[i].mask) == l->v[i].ip)
			return 1;
	return 0;
}

static int any_port(const struct pol_ports *l, uint16_t port)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i] == port)
			return 1;
	return 0;
}

/* A field pair: values (if any) must have a match, not-values none. */
#define PAIR(pos, neg, any, arg)					\
	(((pos).n == 0 || any(&(pos), arg)) && ((neg).n == 0 || !any(&(neg), arg)))

static int match_ok(const struct pol_match *m, const struct conn_view *v)
{
	return PAIR(m->dst_ips, m->not_dst_ips, any_cidr, v->dst_ip) &&
	       PAIR(m->src_ips, m->not_src_ips, any_cidr, v->src_ip) &&
	       PAIR(m->ports, m->not_ports, any_port, v->port) &&
	       PAIR(m->sas, m->not_sas, any_sa, v) &&
	       PAIR(m->principals, m->not_principals, any_principal, v) &&
	       PAIR(m->namespaces, m->not_namespaces, any_ns, v);
}

/* ztunnel's Authorization::matches for one rule (group). */
static int rule_ok(const struct pol_rule *r, const struct conn_view *v)
{
	if (r->dropped)
		return 0;
	for (size_t i = 0; i < r->nclauses; i++) {
		const struct pol_clause *cl = &r->clauses[i];
		int ok = cl->n == 0;

		for (size_t j = 0; j < cl->n && !ok; j++)
			ok = !cl->v[j].empty && match_ok(&cl->v[j], v);
		if (!ok)
			return 0;
	}
	return 1;
}

/* The index of the first rule of RULES that matches, or -1. No rule at
 * all never matches (ztunnel: "empty rules"). */
static int rules_match(const struct pol_rule *rules, size_t n, const struct conn_view *v)
{
	for (size_t i = 0; i < n; i++)
		if (rule_ok(&rules[i], v))
			return (int)i;
	return -1;
}

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
	int r;

	if (e->strict_by && !v->id) {
		result_set(res, 0, POL_DENY_STRICT, "PeerAuthentication", e->strict_by->ns,
			   e->strict_by->name, -1);
		return 1;
	}
	if (e->port_pa && (r = rules_match(e->port_pa->conv, e->port_pa->nconv, v)) >= 0) {
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
	struct range rs[2];
	struct conn_view v;
	struct pa_pick k;
	struct pa_eff e;
	size_t nr = 1;

	if (!cfg || !dst || !dst->ns || !c || !res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	res->rule = -1;
	view_init(cfg, c, &v);
	pa_pick(cfg, dst, &k);
	pa_decide(&k, &e);
	if (pa_denies(&e, &v, res))
		return 0;
	rs[0] = ns_range(cfg, 0, cfg->authz_by_ns, cfg->nauthz, dst->ns);
	if (strcmp(dst->ns, cfg->root_ns))
		rs[nr++] = ns_range(cfg, 0, cfg->authz_by_ns, cfg->nauthz, cfg->root_ns);
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
	struct range rs[2];
	struct pa_pick k;
	size_t nr = 1, n = 0;

	if (!cfg || !dst || !dst->ns || !out)
		return -EINVAL;
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->cfg = cfg;
	pa_pick(cfg, dst, &k);
	pa_decide(&k, &s->pa);
	rs[0] = ns_range(cfg, 0, cfg->authz_by_ns, cfg->nauthz, dst->ns);
	if (strcmp(dst->ns, cfg->root_ns))
		rs[nr++] = ns_range(cfg, 0, cfg->authz_by_ns, cfg->nauthz, cfg->root_ns);
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
	view_init(s->cfg, c, &v);
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
	struct range rs[2];
	struct pa_pick k;
	struct pa_eff e;
	size_t nr = 1;

	pa_pick(cfg, dst, &k);
	pa_decide(&k, &e);
	if (e.strict_by || e.port_pa)
		return 1;
	rs[0] = ns_range(cfg, 0, cfg->authz_by_ns, cfg->nauthz, dst->ns);
	if (strcmp(dst->ns, cfg->root_ns))
		rs[nr++] = ns_range(cfg, 0, cfg->authz_by_ns, cfg->nauthz, cfg->root_ns);
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
		struct range a = ns_range(cfg, 0, cfg->authz_by_ns, cfg->nauthz, nss[k]);
		struct range p = ns_range(cfg, 1, cfg->pas_by_ns, cfg->npas, nss[k]);

		for (size_t i = 0; i < a.n; i++)
			h = mix(h, cfg->authz[a.v[i]].digest);
		h = mix(h, a.n);
		for (size_t i = 0; i < p.n; i++)
			h = mix(h, cfg->pas[p.v[i]].digest);
		h = mix(h, p.n);
	}
	return h;
}

/* --- after loading ----------------------------------------------------- */

static int pa_warn(struct cfg_peerauthn *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int pa_warn(struct cfg_peerauthn *p, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;
	int err;

	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	va_end(ap);
	if (!text)
		return -ENOMEM;
	err = cfg_warning_add(&p->warnings, &p->nwarnings, text);
	free(text);
	return err;
}

/* Says where a port setting of workload policy P does not do what it
 * says, by evaluating plaintext to that port as ztunnel would. */
static int pa_port_warnings(struct cfg_peerauthn *p, const struct pa_pick *k)
{
	struct pa_eff e;
	struct pol_conn plain = {};
	struct conn_view v;
	struct pol_result res;
	static const struct config none_cfg = { .trust_domain = (char *)"" };

	pa_decide(k, &e);
	for (size_t i = 0; i < p->nports; i++) {
		const struct cfg_pa_port *pt = &p->ports[i];
		int denied;

		if (pt->mode == PA_UNSET)
			continue;
		plain.dst_port = pt->port;
		view_init(&none_cfg, &plain, &v);
		denied = pa_denies(&e, &v, &res);
		if (pt->mode == PA_STRICT && !denied &&
		    pa_warn(p, "portLevelMtls %u: STRICT is not enforced: istiod drops it under these namespace and mesh policies, so plaintext to port %u is accepted",
			    pt->port, pt->port))
			return -ENOMEM;
		if (pt->mode == PA_DISABLE && !denied &&
		    pa_warn(p, "portLevelMtls %u: DISABLE acts as PERMISSIVE in ambient: mTLS is accepted as well as plaintext",
			    pt->port))
			return -ENOMEM;
		if (pt->mode != PA_STRICT && denied &&
		    pa_warn(p, "portLevelMtls %u: %s is not honoured under the inherited STRICT mode when mtls.mode is %s (as istiod does): plaintext to port %u is rejected",
			    pt->port, pt->mode == PA_DISABLE ? "DISABLE" : "PERMISSIVE",
			    p->mode == PA_UNSET ? "UNSET" : "set", pt->port))
			return -ENOMEM;
	}
	return 0;
}

static int check_dups(struct config *cfg, struct cfg_diag *diag, int pas)
{
	size_t n = pas ? cfg->npas : cfg->nauthz;
	size_t *idx = sorted_index(cfg, pas, n, by_ns_name);

	if (!idx)
		return -ENOMEM;
	for (size_t i = 1, first = 0; i < n; i++) {
		size_t a = idx[first], b = idx[i];
		const struct cfg_pos *pa, *pb;

		if (strcmp(ns_of(cfg, pas, a), ns_of(cfg, pas, b)) ||
		    strcmp(name_of(cfg, pas, a), name_of(cfg, pas, b))) {
			first = i;
			continue;
		}
		pa = pas ? &cfg->pas[a].pos : &cfg->authz[a].pos;
		pb = pas ? &cfg->pas[b].pos : &cfg->authz[b].pos;
		diag_add(diag, 1, pb, "%s %s/%s is defined twice (first at %s:%u)",
			 pas ? "PeerAuthentication" : "AuthorizationPolicy",
			 ns_of(cfg, pas, b), name_of(cfg, pas, b), pa->file, pa->line);
	}
	free(idx);
	return 0;
}

int policy_finish(struct config *cfg, struct cfg_diag *diag)
{
	if (!(cfg->authz_by_ns = sorted_index(cfg, 0, cfg->nauthz, by_ns)) ||
	    !(cfg->pas_by_ns = sorted_index(cfg, 1, cfg->npas, by_ns)))
		return -ENOMEM;
	if (check_dups(cfg, diag, 0) || check_dups(cfg, diag, 1))
		return -ENOMEM;

	/* one namespace-wide (or mesh-wide) policy per namespace: Istio
	 * takes the oldest, skmesh the first loaded */
	for (size_t i = 0; i < cfg->npas; i++) {
		size_t a = cfg->pas_by_ns[i];
		struct cfg_peerauthn *p = &cfg->pas[a];
		struct range r = ns_range(cfg, 1, cfg->pas_by_ns, cfg->npas, p->ns);
		const struct cfg_peerauthn *first = pa_first(cfg, r, 0, NULL);

		if (p->has_selector || p->ignored || !first || first == p)
			continue;
		p->ignored = 1;
		if (pa_warn(p, "ignored: %s/%s (%s:%u) is already the %s policy; Istio keeps the oldest, skmesh the first loaded",
			    first->ns, first->name, first->pos.file, first->pos.line,
			    strcmp(p->ns, cfg->root_ns) ? "namespace-wide" : "mesh-wide"))
			return -ENOMEM;
	}

	/* istiod's conversion of workload policies with port settings */
	for (size_t i = 0; i < cfg->npas; i++) {
		struct cfg_peerauthn *p = &cfg->pas[i];
		struct range root = ns_range(cfg, 1, cfg->pas_by_ns, cfg->npas, cfg->root_ns);
		struct range r = ns_range(cfg, 1, cfg->pas_by_ns, cfg->npas, p->ns);
		struct pa_pick k;

		if (p->ignored || !p->has_selector || !p->nports)
			continue;
		k.mesh = pa_first(cfg, root, 0, NULL);
		k.ns = pa_first(cfg, r, 0, NULL);
		k.wl = p;
		if (pa_convert(p, k.ns, k.mesh) || pa_port_warnings(p, &k))
			return -ENOMEM;
	}
	return 0;
}
