// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The mesh model (model.h): building it, its finishing pass, its indexes
 * and lookups, freeing it.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyidx.h"
#include "model.h"
#include "rules.h"
#include "skmesh.h"

#define AT_LEN	(PATH_MAX + 64)

/* " (FILE:LINE)" after PRE (" (" or " (first at "), into BUF; "" for an
 * object without a position (one not read from a file). */
static const char *pos_note(const struct cfg_pos *p, const char *pre, char *buf, size_t len)
{
	if (!p->file)
		return "";
	snprintf(buf, len, "%s%s:%u)", pre, p->file, p->line);
	return buf;
}

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

/* The policies of namespace NS, through the sorted index IDX of N. */
static struct model_range ns_range(const struct config *cfg, int pas, const size_t *idx,
			     size_t n, const char *ns)
{
	size_t lo = 0, hi = n, first;
	struct model_range r = { NULL, 0 };

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

struct model_range model_ns_range(const struct config *cfg, int pas, const char *ns)
{
	return pas ? ns_range(cfg, 1, cfg->pas_by_ns, cfg->npas, ns) :
		     ns_range(cfg, 0, cfg->authz_by_ns, cfg->nauthz, ns);
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

static int pa_has_port_mode(const struct cfg_peerauthn *p, int m1, int m2)
{
	for (size_t i = 0; i < p->nports; i++)
		if ((int)p->ports[i].mode == m1 || (int)p->ports[i].mode == m2)
			return 1;
	return 0;
}

void model_pa_decide(const struct pa_pick *k, struct pa_eff *e)
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

static const struct cfg_peerauthn *pa_first(const struct config *cfg, struct model_range r,
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

void model_pa_pick(const struct config *cfg, const char *ns,
		   const struct cfg_labels *labels, struct pa_pick *k)
{
	struct model_range root = model_ns_range(cfg, 1, cfg->root_ns);

	k->mesh = pa_first(cfg, root, 0, NULL);
	k->ns = k->wl = NULL;
	if (strcmp(ns, cfg->root_ns)) {
		struct model_range r = model_ns_range(cfg, 1, ns);
		static const struct cfg_labels none;

		k->ns = pa_first(cfg, r, 0, NULL);
		k->wl = pa_first(cfg, r, 1, labels ? labels : &none);
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


/* --- finishing: policies --------------------------------------------- */

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

	model_pa_decide(k, &e);
	for (size_t i = 0; i < p->nports; i++) {
		const struct cfg_pa_port *pt = &p->ports[i];
		int denied;

		if (pt->mode == PA_UNSET)
			continue;
		plain.dst_port = pt->port;
		rules_view_init("", &plain, &v);
		denied = rules_pa_denies(&e, &v) != 0;
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
	char at[AT_LEN];

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
		diag_add(diag, 1, pb, "%s %s/%s is defined twice%s",
			 pas ? "PeerAuthentication" : "AuthorizationPolicy",
			 ns_of(cfg, pas, b), name_of(cfg, pas, b),
			 pos_note(pa, " (first at ", at, sizeof(at)));
	}
	free(idx);
	return 0;
}

/* Indexes by namespace, duplicate policies, istiod's handling of
 * PeerAuthentication (one namespace-wide policy, port settings converted)
 * and the warnings that need the whole model. */
static int policies_finish(struct config *cfg, struct cfg_diag *diag)
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
		struct model_range r = model_ns_range(cfg, 1, p->ns);
		const struct cfg_peerauthn *first = pa_first(cfg, r, 0, NULL);
		char at[AT_LEN];

		if (p->has_selector || p->ignored || !first || first == p)
			continue;
		p->ignored = 1;
		if (pa_warn(p, "ignored: %s/%s%s is already the %s policy; Istio keeps the oldest, skmesh the first loaded",
			    first->ns, first->name, pos_note(&first->pos, " (", at, sizeof(at)),
			    strcmp(p->ns, cfg->root_ns) ? "namespace-wide" : "mesh-wide"))
			return -ENOMEM;
	}

	/* istiod's conversion of workload policies with port settings */
	for (size_t i = 0; i < cfg->npas; i++) {
		struct cfg_peerauthn *p = &cfg->pas[i];
		struct model_range root = model_ns_range(cfg, 1, cfg->root_ns);
		struct model_range r = model_ns_range(cfg, 1, p->ns);
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

/* --- the model's objects ---------------------------------------------- */

void diag_add(struct cfg_diag *d, int is_error, const struct cfg_pos *pos,
	      const char *fmt, ...)
{
	char *text = NULL, *msg = NULL;
	char **msgs;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	va_end(ap);
	if (text && pos && pos->file) {
		if (asprintf(&msg, "%s:%u:%u: %s: %s", pos->file, pos->line,
			     pos->col, is_error ? "error" : "warning", text) < 0)
			msg = NULL;
	} else if (text) {
		if (asprintf(&msg, "%s: %s", is_error ? "error" : "warning", text) < 0)
			msg = NULL;
	}
	free(text);
	msgs = realloc(d->msgs, (d->n + 1) * sizeof(*msgs));
	if (!msgs || !msg) {
		free(msg);
		/* Out of memory: still count it so the load fails. */
		if (msgs)
			d->msgs = msgs;
	} else {
		d->msgs = msgs;
		d->msgs[d->n++] = msg;
	}
	if (is_error)
		d->nerrors++;
	else
		d->nwarnings++;
}

void diag_print(const struct cfg_diag *d, const char *prog)
{
	for (size_t i = 0; i < d->n; i++)
		fprintf(stderr, "%s: %s\n", prog, d->msgs[i]);
}

void diag_free(struct cfg_diag *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->msgs[i]);
	free(d->msgs);
	memset(d, 0, sizeof(*d));
}

/* Appends one zeroed element to ARR (N elements of SIZE). The capacity is
 * implied by N (the next power of two), so appending n elements costs
 * O(n) copying, not O(n^2). */
void *model_grow(void *arr, size_t *n, size_t size)
{
	size_t cap = 1;
	char *p = arr;

	while (cap < *n)
		cap <<= 1;
	if (!arr || *n == cap) {
		p = realloc(arr, (*n ? cap * 2 : 1) * size);
		if (!p)
			return NULL;
	}
	memset(p + *n * size, 0, size);
	(*n)++;
	return p;
}

void cfg_labels_free(struct cfg_labels *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].key);
		free(l->v[i].val);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

int labels_match(const struct cfg_labels *selector, const struct cfg_labels *labels)
{
	for (size_t i = 0; i < selector->n; i++) {
		size_t j;

		for (j = 0; j < labels->n; j++)
			if (!strcmp(selector->v[i].key, labels->v[j].key) &&
			    !strcmp(selector->v[i].val, labels->v[j].val))
				break;
		if (j == labels->n)
			return 0;
	}
	return 1;
}

int cfg_warning_add(char ***list, size_t *n, const char *text)
{
	char **l = realloc(*list, (*n + 1) * sizeof(*l));

	if (!l)
		return -ENOMEM;
	*list = l;
	if (!(l[*n] = strdup(text)))
		return -ENOMEM;
	(*n)++;
	return 0;
}

/* Says the warnings of every PeerAuthentication, once the whole model
 * is in (policies_finish adds some that need it). */
static void peerauthn_diags(struct config *cfg, struct cfg_diag *diag)
{
	for (size_t i = 0; i < cfg->npas; i++) {
		struct cfg_peerauthn *p = &cfg->pas[i];
		size_t len = 0;
		char *all, *s;

		if (!p->nwarnings)
			continue;
		for (size_t j = 0; j < p->nwarnings; j++)
			len += strlen(p->warnings[j]) + 2;
		if (!(all = malloc(len + 1)))
			return;
		s = all;
		for (size_t j = 0; j < p->nwarnings; j++)
			s += sprintf(s, "%s%s", j ? "; " : "", p->warnings[j]);
		diag_add(diag, 0, &p->pos, "PeerAuthentication %s/%s: %s", p->ns, p->name, all);
		free(all);
	}
}

static void match_free(struct pol_match *m)
{
	struct pol_strs *strs[] = {
		&m->principals, &m->not_principals, &m->namespaces, &m->not_namespaces
	};
	struct pol_sas *sas[] = { &m->sas, &m->not_sas };

	for (size_t i = 0; i < 4; i++) {
		for (size_t j = 0; j < strs[i]->n; j++)
			free(strs[i]->v[j].s);
		free(strs[i]->v);
	}
	for (size_t i = 0; i < 2; i++) {
		for (size_t j = 0; j < sas[i]->n; j++) {
			free(sas[i]->v[j].ns);
			free(sas[i]->v[j].sa);
		}
		free(sas[i]->v);
	}
	free(m->src_ips.v);
	free(m->not_src_ips.v);
	free(m->dst_ips.v);
	free(m->not_dst_ips.v);
	free(m->ports.v);
	free(m->not_ports.v);
}

void cfg_rules_free(struct pol_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < rules[i].nclauses; j++) {
			struct pol_clause *cl = &rules[i].clauses[j];

			for (size_t k = 0; k < cl->n; k++)
				match_free(&cl->v[k]);
			free(cl->v);
		}
		free(rules[i].clauses);
	}
	free(rules);
}

static void warnings_free(char **w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(w[i]);
	free(w);
}

void cfg_authz_free(struct cfg_authz *a)
{
	free(a->name);
	free(a->ns);
	cfg_labels_free(&a->selector);
	cfg_rules_free(a->rules, a->nrules);
	warnings_free(a->warnings, a->nwarnings);
}

void cfg_peerauthn_free(struct cfg_peerauthn *p)
{
	free(p->name);
	free(p->ns);
	cfg_labels_free(&p->selector);
	free(p->ports);
	cfg_rules_free(p->conv, p->nconv);
	warnings_free(p->warnings, p->nwarnings);
}

static void workload_free(struct cfg_workload *w)
{
	free(w->name);
	free(w->ns);
	free(w->sa);
	free(w->node);
	free(w->netns);
	cfg_labels_free(&w->labels);
}

static void service_free(struct cfg_service *s)
{
	free(s->name);
	free(s->ns);
	for (size_t j = 0; j < s->nports; j++)
		free(s->ports[j].name);
	free(s->ports);
	cfg_labels_free(&s->selector);
	free(s->eps);
}

void model_objects_free(struct cfg_objects *part)
{
	for (size_t i = 0; i < part->nwls; i++)
		workload_free(&part->wls[i]);
	for (size_t i = 0; i < part->nsvcs; i++)
		service_free(&part->svcs[i]);
	for (size_t i = 0; i < part->nauthz; i++)
		cfg_authz_free(&part->authz[i]);
	for (size_t i = 0; i < part->npas; i++)
		cfg_peerauthn_free(&part->pas[i]);
	free(part->wls);
	free(part->svcs);
	free(part->authz);
	free(part->pas);
}

/* --- finishing: the whole model ---------------------------------------- */

/* "A\0B" in *BUF (grown as needed): no two pairs share it. Returns its
 * length, or 0 when out of memory. */
static size_t pair_key(char **buf, size_t *cap, const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la + lb + 1 > *cap) {
		char *k = realloc(*buf, la + lb + 64);

		if (!k)
			return 0;
		*buf = k;
		*cap = la + lb + 64;
	}
	memcpy(*buf, a, la);
	(*buf)[la] = 0;
	memcpy(*buf + la + 1, b, lb);
	return la + lb + 1;
}

int model_finish(struct config *cfg, struct cfg_diag *diag)
{
	size_t nkeys = 0, nslots = 0, keycap = 0;

	struct keyidx byname = {}, byip = {}, svcname = {}, byvip = {}, nsfirst = {};
	size_t *ns_next = calloc(cfg->nwls + 1, sizeof(*ns_next));
	char *key = NULL, at[AT_LEN];
	int err = 0;

	if (!ns_next)
		return -ENOMEM;
	if (keyidx_reserve(&byname, cfg->nwls, cfg->nwls * 24) ||
	    keyidx_reserve(&byip, cfg->nwls, cfg->nwls * 4) ||
	    keyidx_reserve(&svcname, cfg->nsvcs, cfg->nsvcs * 24) ||
	    keyidx_reserve(&byvip, cfg->nsvcs, cfg->nsvcs * 7))
		goto oom;
	/* Indexes keep these checks linear: names and IPs of workloads, the
	 * workloads of each namespace (chained through ns_next, for
	 * selectors), names and VIP:ports of services. */
	for (size_t i = 0; i < cfg->nwls; i++) {
		struct cfg_workload *w = &cfg->wls[i];
		size_t n = pair_key(&key, &keycap, w->ns, w->name);
		long j = n ? keyidx_put(&byname, key, n, i) : -1;
		long h;

		if (j < 0)
			goto oom;
		if ((size_t)j != i) {
			struct cfg_workload *o = &cfg->wls[j];

			diag_add(diag, 1, &w->pos,
				 "Workload %s/%s is defined twice%s",
				 w->ns, w->name, pos_note(&o->pos, " (first at ", at, sizeof(at)));
		} else if (w->ip && (j = keyidx_put(&byip, &w->ip, sizeof(w->ip), i)) != (long)i) {
			struct cfg_workload *o;

			if (j < 0)
				goto oom;
			o = &cfg->wls[j];
			diag_add(diag, 1, &w->pos,
				 "spec.ip: Workload %s/%s has the IP of %s/%s%s",
				 w->ns, w->name, o->ns, o->name,
				 pos_note(&o->pos, " (", at, sizeof(at)));
		}
		/* Chain in reverse: each namespace's head is its last one,
		 * ns_next[i] - 1 the one before (0: none). */
		h = keyidx_get(&nsfirst, w->ns, strlen(w->ns));
		ns_next[i] = h < 0 ? 0 : (size_t)h + 1;
		if (keyidx_set(&nsfirst, w->ns, strlen(w->ns), i))
			goto oom;
		if (i >= SKM_MAX_WORKLOADS) {
			diag_add(diag, 1, &w->pos,
				 "Workload %s/%s does not fit: the skm_workloads map holds %d workloads",
				 w->ns, w->name, SKM_MAX_WORKLOADS);
			break;
		}
	}

	for (size_t i = 0; i < cfg->nsvcs; i++) {
		struct cfg_service *s = &cfg->svcs[i];
		size_t n = pair_key(&key, &keycap, s->ns, s->name);
		long j = n ? keyidx_put(&svcname, key, n, i) : -1;

		if (j < 0)
			goto oom;
		if ((size_t)j != i) {
			struct cfg_service *o = &cfg->svcs[j];

			diag_add(diag, 1, &s->pos,
				 "Service %s/%s is defined twice%s",
				 s->ns, s->name, pos_note(&o->pos, " (first at ", at, sizeof(at)));
			continue;
		}
		for (size_t a = 0; a < s->nports; a++) {
			struct { uint32_t vip; uint16_t port; uint8_t proto; } vk = {
				s->vip, s->ports[a].port, s->ports[a].proto
			};
			char vkey[7];

			memcpy(vkey, &vk.vip, 4);
			memcpy(vkey + 4, &vk.port, 2);
			vkey[6] = (char)vk.proto;
			j = keyidx_put(&byvip, vkey, sizeof(vkey), i);
			if (j < 0)
				goto oom;
			if ((size_t)j != i) {
				struct cfg_service *o = &cfg->svcs[j];

				diag_add(diag, 1, &s->ports[a].pos,
					 "spec.ports[%zu]: %s/%s and %s/%s%s both claim this VIP and port",
					 a, s->ns, s->name, o->ns, o->name,
					 pos_note(&o->pos, " (", at, sizeof(at)));
			}
		}

		if (s->has_selector) {
			long h = keyidx_get(&nsfirst, s->ns, strlen(s->ns));
			size_t first = s->neps;

			for (size_t k = h < 0 ? 0 : (size_t)h + 1; k; k = ns_next[k - 1]) {
				struct cfg_workload *w = &cfg->wls[k - 1];
				struct cfg_endpoint *e;

				if (!labels_match(&s->selector, &w->labels))
					continue;
				e = model_grow(s->eps, &s->neps, sizeof(*e));
				if (!e)
					goto oom;
				s->eps = e;
				e[s->neps - 1].ip = w->ip;
				e[s->neps - 1].weight = 1;
				e[s->neps - 1].pos = w->pos;
			}
			/* The chain runs backwards: keep config order. */
			for (size_t a = first, b = s->neps; a + 1 < b; a++, b--) {
				struct cfg_endpoint t = s->eps[a];

				s->eps[a] = s->eps[b - 1];
				s->eps[b - 1] = t;
			}
		}
		/* Slots a set can take (reconcile's build_slots never uses
		 * more): the weight sum, capped at the larger of the table size
		 * and the endpoint count. One more set's worth stays free for
		 * the swap of a changed set. */
		{
			uint64_t wsum = 0, cap = s->neps > SKM_MAX_SLOTS_PER_SVC ?
						 s->neps : SKM_MAX_SLOTS_PER_SVC;

			for (size_t e = 0; e < s->neps; e++)
				wsum += s->eps[e].weight;
			nslots += s->nports * (wsum < cap ? wsum : cap);
			nkeys += s->nports;
			if (nkeys > SKM_MAX_SERVICES)
				diag_add(diag, 1, &s->pos,
					 "Service %s/%s does not fit: the skm_services map holds %d VIP:port entries",
					 s->ns, s->name, SKM_MAX_SERVICES);
			else if (nslots + cap > SKM_MAX_BACKEND_SLOTS)
				diag_add(diag, 1, &s->pos,
					 "Service %s/%s does not fit: the skm_backends map (%d slots) is full",
					 s->ns, s->name, SKM_MAX_BACKEND_SLOTS);
			if (nkeys > SKM_MAX_SERVICES || nslots + cap > SKM_MAX_BACKEND_SLOTS)
				break;
		}
	}
	if (policies_finish(cfg, diag))
		goto oom;
	peerauthn_diags(cfg, diag);
	goto out;
oom:
	diag_add(diag, 1, NULL, "out of memory while checking the config");
	err = -ENOMEM;
out:
	keyidx_free(&byname);
	if (!err && (cfg->wl_by_ip = malloc(sizeof(*cfg->wl_by_ip)))) {
		*cfg->wl_by_ip = byip;	/* kept for lookups by address */
		memset(&byip, 0, sizeof(byip));
	}
	keyidx_free(&byip);
	keyidx_free(&svcname);
	keyidx_free(&byvip);
	keyidx_free(&nsfirst);
	free(ns_next);
	free(key);
	return err;
}

/* --- lookups ------------------------------------------------------------ */

void config_workload_id(const struct config *cfg, const struct cfg_workload *w,
			char *buf, size_t len)
{
	snprintf(buf, len, "spiffe://%s/ns/%s/sa/%s", cfg->trust_domain, w->ns, w->sa);
}

const struct cfg_workload *config_workload_by_ip(const struct config *cfg, uint32_t ip)
{
	long i;

	if (!cfg->wl_by_ip) {
		for (size_t j = 0; j < cfg->nwls; j++)
			if (cfg->wls[j].ip == ip)
				return &cfg->wls[j];
		return NULL;
	}
	i = keyidx_get(cfg->wl_by_ip, &ip, sizeof(ip));
	return i < 0 ? NULL : &cfg->wls[i];
}

/* --- building ----------------------------------------------------------- */

struct config *model_new(const char *root_ns, const char *trust_domain)
{
	static _Atomic uint64_t serials;
	struct config *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->serial = atomic_fetch_add(&serials, 1) + 1;
	m->root_ns = strdup(root_ns ? root_ns : CFG_DEFAULT_ROOT_NS);
	m->trust_domain = strdup(trust_domain ? trust_domain : CFG_DEFAULT_TRUST_DOMAIN);
	m->own = calloc(1, sizeof(*m->own));
	/* never NULL, even when empty */
	m->wls = calloc(1, sizeof(*m->wls));
	m->svcs = calloc(1, sizeof(*m->svcs));
	m->authz = calloc(1, sizeof(*m->authz));
	m->pas = calloc(1, sizeof(*m->pas));
	if (!m->root_ns || !m->trust_domain || !m->own || !m->wls || !m->svcs ||
	    !m->authz || !m->pas) {
		config_free(m);
		return NULL;
	}
	return m;
}

/* Grows *ARR (N elements of SIZE) to hold ADD more, exactly (realloc
 * keeps the size it is given). */
static int grow_exact(void *arr, size_t n, size_t add, size_t size)
{
	void *p;

	if (!add)
		return 0;
	if (!(p = realloc(*(void **)arr, (n + add) * size)))
		return -ENOMEM;
	*(void **)arr = p;
	return 0;
}

/* Grows M's arrays, each once, to hold NWLS, NSVCS, NAUTHZ and NPAS more
 * objects. */
static int model_room(struct config *m, size_t nwls, size_t nsvcs, size_t nauthz,
		      size_t npas)
{
	if (grow_exact(&m->wls, m->nwls, nwls, sizeof(*m->wls)) ||
	    grow_exact(&m->svcs, m->nsvcs, nsvcs, sizeof(*m->svcs)) ||
	    grow_exact(&m->authz, m->nauthz, nauthz, sizeof(*m->authz)) ||
	    grow_exact(&m->pas, m->npas, npas, sizeof(*m->pas)))
		return -ENOMEM;
	return 0;
}

/* Appends shallow copies of U's objects to M's arrays, which have room
 * for them (model_room()). */
static int model_copy(struct config *m, const struct cfg_objects *u)
{
	if (u->nwls)
		memcpy(m->wls + m->nwls, u->wls, u->nwls * sizeof(*u->wls));
	m->nwls += u->nwls;
	for (size_t j = 0; j < u->nsvcs; j++) {
		struct cfg_service *s = &m->svcs[m->nsvcs++];

		*s = u->svcs[j];
		if (s->has_selector) {
			s->eps = NULL;
			s->neps = 0;
		}
	}
	if (u->nauthz)
		memcpy(m->authz + m->nauthz, u->authz, u->nauthz * sizeof(*u->authz));
	m->nauthz += u->nauthz;
	for (size_t j = 0; j < u->npas; j++) {
		const struct cfg_peerauthn *src = &u->pas[j];
		struct cfg_peerauthn *pa = &m->pas[m->npas++];

		*pa = *src;
		pa->warnings = NULL;
		pa->nwarnings = 0;
		pa->conv = NULL;
		pa->nconv = 0;
		for (size_t k = 0; k < src->nwarnings; k++)
			if (cfg_warning_add(&pa->warnings, &pa->nwarnings, src->warnings[k]))
				return -ENOMEM;
	}
	return 0;
}

int model_lend_all(struct config *m, const struct cfg_objects *const *objs, size_t n)
{
	size_t nwls = 0, nsvcs = 0, nauthz = 0, npas = 0;
	int err = 0;

	for (size_t i = 0; i < n; i++) {
		nwls += objs[i]->nwls;
		nsvcs += objs[i]->nsvcs;
		nauthz += objs[i]->nauthz;
		npas += objs[i]->npas;
	}
	if (model_room(m, nwls, nsvcs, nauthz, npas))
		return -ENOMEM;
	for (size_t i = 0; i < n && !err; i++)
		err = model_copy(m, objs[i]);
	return err;
}

void model_hold(struct config *m, void *held, void (*release)(void *held))
{
	m->held = held;
	m->held_release = release;
}

/* Moves the one object of ONE into M's own objects (what config_free()
 * frees), then lends it to M's arrays. Frees what it points to when it
 * cannot be kept. */
static int model_add(struct config *m, const struct cfg_objects *one)
{
	struct cfg_objects *o = m->own;
	void *p = NULL;

	if (one->nwls) {
		if ((p = model_grow(o->wls, &o->nwls, sizeof(*o->wls))))
			(o->wls = p)[o->nwls - 1] = one->wls[0];
		else
			workload_free(one->wls);
	} else if (one->nsvcs) {
		if ((p = model_grow(o->svcs, &o->nsvcs, sizeof(*o->svcs))))
			(o->svcs = p)[o->nsvcs - 1] = one->svcs[0];
		else
			service_free(one->svcs);
	} else if (one->nauthz) {
		if ((p = model_grow(o->authz, &o->nauthz, sizeof(*o->authz))))
			(o->authz = p)[o->nauthz - 1] = one->authz[0];
		else
			cfg_authz_free(one->authz);
	} else if (one->npas) {
		if ((p = model_grow(o->pas, &o->npas, sizeof(*o->pas))))
			(o->pas = p)[o->npas - 1] = one->pas[0];
		else
			cfg_peerauthn_free(one->pas);
	}
	return p ? model_lend_all(m, (const struct cfg_objects *const[]){ one }, 1) : -ENOMEM;
}

int model_add_workload(struct config *m, struct cfg_workload *w)
{
	return model_add(m, &(struct cfg_objects){ .wls = w, .nwls = 1 });
}

int model_add_service(struct config *m, struct cfg_service *s)
{
	return model_add(m, &(struct cfg_objects){ .svcs = s, .nsvcs = 1 });
}

int model_add_authz(struct config *m, struct cfg_authz *a)
{
	return model_add(m, &(struct cfg_objects){ .authz = a, .nauthz = 1 });
}

int model_add_peerauthn(struct config *m, struct cfg_peerauthn *p)
{
	return model_add(m, &(struct cfg_objects){ .pas = p, .npas = 1 });
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	if (cfg->wl_by_ip) {
		keyidx_free(cfg->wl_by_ip);
		free(cfg->wl_by_ip);
	}
	/* what the finishing pass made; the objects themselves are the
	 * model's own (cfg->own) or lent by the source (cfg->held) */
	for (size_t i = 0; i < cfg->nsvcs; i++)
		if (cfg->svcs[i].has_selector)
			free(cfg->svcs[i].eps);
	for (size_t i = 0; i < cfg->npas; i++) {
		warnings_free(cfg->pas[i].warnings, cfg->pas[i].nwarnings);
		cfg_rules_free(cfg->pas[i].conv, cfg->pas[i].nconv);
	}
	free(cfg->wls);
	free(cfg->svcs);
	free(cfg->authz);
	free(cfg->pas);
	free(cfg->authz_by_ns);
	free(cfg->pas_by_ns);
	free(cfg->root_ns);
	free(cfg->trust_domain);
	free(cfg->files);
	if (cfg->own) {
		model_objects_free(cfg->own);
		free(cfg->own);
	}
	if (cfg->held_release)
		cfg->held_release(cfg->held);
	free(cfg);
}
