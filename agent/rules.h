/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Matching one connection against the model's precompiled rules (struct
 * pol_rule, model.h), as ztunnel matches: the engine under the evaluator
 * (policy.h) and under the model's finishing pass (the PeerAuthentication
 * port warnings). No allocation, no string is parsed.
 */
#ifndef SKM_RULES_H
#define SKM_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* One connection as the destination sees it. */
struct pol_conn {
	int mtls;		/* 1: arrived with a peer identity (HBONE) */
	const char *src_td;	/* peer trust domain; NULL: the config's */
	const char *src_ns;	/* peer namespace; unused when !mtls */
	const char *src_sa;	/* peer service account; unused when !mtls */
	uint32_t src_ip;	/* network order */
	uint32_t dst_ip;	/* network order */
	uint16_t dst_port;	/* host order: the workload (target) port */
};

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

/* C as a view; TRUST_DOMAIN is the model's (for a C without src_td). */
void rules_view_init(const char *trust_domain, const struct pol_conn *c,
		     struct conn_view *v);
/* The index of the first rule of RULES that matches, or -1. No rule at
 * all never matches (ztunnel: "empty rules"). */
int rules_match(const struct pol_rule *rules, size_t n, const struct conn_view *v);

#define RULES_DENY_STRICT	1	/* STRICT mTLS and no client identity */
#define RULES_DENY_PORT		2	/* the converted port policy matched */
/* What PeerAuthentication E does with V: 0 (nothing) or RULES_DENY_*. */
int rules_pa_denies(const struct pa_eff *e, const struct conn_view *v);

#endif /* SKM_RULES_H */
