// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Matching one connection against the model's precompiled rules. */

#include <string.h>

#include "rules.h"

void rules_view_init(const char *trust_domain, const struct pol_conn *c,
		     struct conn_view *v)
{
	v->id = c->mtls != 0;
	v->ns = v->id && c->src_ns ? c->src_ns : "";
	v->sa = v->id && c->src_sa ? c->src_sa : "";
	v->nslen = (uint32_t)strlen(v->ns);
	v->seg[0] = c->src_td ? c->src_td : trust_domain;
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

int rules_match(const struct pol_rule *rules, size_t n, const struct conn_view *v)
{
	for (size_t i = 0; i < n; i++)
		if (rule_ok(&rules[i], v))
			return (int)i;
	return -1;
}


int rules_pa_denies(const struct pa_eff *e, const struct conn_view *v)
{
	if (e->strict_by && !v->id)
		return RULES_DENY_STRICT;
	if (e->port_pa && rules_match(e->port_pa->conv, e->port_pa->nconv, v) >= 0)
		return RULES_DENY_PORT;
	return 0;
}
