/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * For fuzz targets: the kernel's policy tables checked against the
 * userspace evaluator. policy_check() compiles every destination of a
 * loaded config as reconcile gets it (policy_compile.h), looks
 * the tables up as the BPF programs do (bpf/lib/policy.bpf.h: skm_verdicts
 * by exact port then port 0; skm_plain, an LPM trie, by longest prefix
 * over (pol_set, port, source address) then port 0; a missing entry
 * denies; a destination nothing can deny is not enforced) and compares
 * every probe with policy_eval(): each source pod with its identity, and
 * plaintext from workload addresses, the edges of every CIDR and addresses
 * of the input, on each named port, its neighbour and others. A
 * disagreement aborts, naming the config, the destination and the probe.
 */
#ifndef SKM_FUZZ_POLICY_CHECK_H
#define SKM_FUZZ_POLICY_CHECK_H

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "policy.h"
#include "policy_compile.h"
#include "skmesh.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Bytes of the input, read one at a time. */
struct fuzz_in {
	const uint8_t *p, *end;
};

/* The next byte of the input; 0 once it is used up. */
static inline unsigned int fuzz_u8(struct fuzz_in *in)
{
	return in->p < in->end ? *in->p++ : 0;
}

/* --- the kernel's lookups ----------------------------------------------- */

static const struct skm_verdict *verdict_lookup(const struct policy_tables *t,
						uint32_t src_id, uint16_t port)
{
	uint16_t tries[2] = { port, 0 };

	for (int k = 0; k < 2; k++)
		for (size_t i = 0; i < t->nv; i++)
			if (t->vkeys[i].src_id == src_id && t->vkeys[i].pol_set == 0 &&
			    t->vkeys[i].port == tries[k])
				return &t->vvals[i];
	return NULL;
}

/* skm_plain, an LPM trie: of the entries whose first PREFIXLEN bits (of
 * pol_set, port, src) are those of the key, the longest. */
static const struct skm_verdict *plain_lookup(const struct policy_tables *t,
					      uint32_t src, uint16_t port)
{
	uint16_t tries[2] = { htons(port), 0 };

	for (int k = 0; k < 2; k++) {
		const struct skm_verdict *best = NULL;
		uint32_t bestlen = 0;

		for (size_t i = 0; i < t->np; i++) {
			const struct skm_plain_key *e = &t->pkeys[i];
			uint32_t len, mask, esrc;

			if (e->prefixlen < SKM_PLAIN_PREFIX_BASE ||
			    e->prefixlen > SKM_PLAIN_PREFIX_BASE + 32) {
				fprintf(stderr, "skm_plain entry with prefixlen %u\n", e->prefixlen);
				abort();
			}
			if (e->pol_set || e->port != tries[k])
				continue;
			len = e->prefixlen - SKM_PLAIN_PREFIX_BASE;
			mask = len ? ~0U << (32 - len) : 0;
			memcpy(&esrc, e->src, 4);
			if ((ntohl(src) & mask) != (ntohl(esrc) & mask))
				continue;
			if (!best || len > bestlen) {
				best = &t->pvals[i];
				bestlen = len;
			}
		}
		if (best)
			return best;
	}
	return NULL;
}

/* --- the cross-check ------------------------------------------------------ */

static void disagree(const char *model_text, const struct cfg_workload *dst,
		     const char *probe, int kernel, const struct pol_result *r)
{
	char why[256];

	fprintf(stderr, "%s\n---\nkernel tables and policy_eval disagree for destination "
		"%s/%s: %s: kernel %s, policy_eval %s (%s)\n", model_text, dst->ns, dst->name,
		probe, kernel ? "allows" : "denies", r->allow ? "allows" : "denies",
		policy_reason(r, why, sizeof(why)));
	abort();
}

static void add_port(uint16_t *ports, size_t *n, size_t max, uint32_t p)
{
	if (p && p < 65536 && *n < max)
		ports[(*n)++] = (uint16_t)p;
}

static void add_ip(uint32_t *ips, size_t *n, size_t max, uint32_t host_order)
{
	if (*n < max)
		ips[(*n)++] = htonl(host_order);
}

static void check_dst(const struct config *cfg, const struct cfg_workload *w,
		      const struct policy_src *srcs, size_t nsrcs, struct fuzz_in *in,
		      const char *model_text)
{
	/* ports policies often name, and ports none does */
	static const uint16_t common[] = { 1, 2, 80, 81, 443, 5432, 8080, 9999, 65535 };
	struct pol_target t = { .ns = w->ns, .labels = &w->labels };
	struct policy_tables tab = {};
	struct pol_cidr *cidrs = NULL;
	uint16_t *named = NULL, ports[64];
	uint32_t ips[160];
	size_t nnamed = 0, ncidrs = 0, nports = 0, nips = 0;
	int applies = policy_applies(cfg, &t);
	char probe[160], a[16];

	if (policy_ports_of(cfg, &t, &named, &nnamed) || policy_cidrs_of(cfg, &t, &cidrs, &ncidrs) ||
	    (applies && policy_tables_compile(cfg, w, srcs, nsrcs, &tab)))
		goto out;	/* out of memory */
	for (size_t i = 0; i < nnamed; i++) {
		add_port(ports, &nports, ARRAY_SIZE(ports), named[i]);
		add_port(ports, &nports, ARRAY_SIZE(ports), named[i] + 1u);
	}
	for (size_t i = 0; i < ARRAY_SIZE(common); i++)
		add_port(ports, &nports, ARRAY_SIZE(ports), common[i]);
	for (int i = 0; i < 2; i++)
		add_port(ports, &nports, ARRAY_SIZE(ports), fuzz_u8(in) << 8 | fuzz_u8(in));

	for (size_t i = 0; i < cfg->nwls; i++)
		add_ip(ips, &nips, ARRAY_SIZE(ips), ntohl(cfg->wls[i].ip));
	for (size_t i = 0; i < ncidrs; i++) {
		uint32_t lo = ntohl(cidrs[i].ip), hi = lo | ~ntohl(cidrs[i].mask);

		if (cidrs[i].v6)
			continue;
		add_ip(ips, &nips, ARRAY_SIZE(ips), lo);
		add_ip(ips, &nips, ARRAY_SIZE(ips), lo - 1);
		add_ip(ips, &nips, ARRAY_SIZE(ips), hi);
		add_ip(ips, &nips, ARRAY_SIZE(ips), hi + 1);
	}
	add_ip(ips, &nips, ARRAY_SIZE(ips), 0);
	add_ip(ips, &nips, ARRAY_SIZE(ips), 0xffffffff);
	add_ip(ips, &nips, ARRAY_SIZE(ips), 0x0a000000u | (fuzz_u8(in) % 4) << 8 | fuzz_u8(in));
	add_ip(ips, &nips, ARRAY_SIZE(ips),
	       (uint32_t)fuzz_u8(in) << 24 | fuzz_u8(in) << 16 | fuzz_u8(in) << 8 | fuzz_u8(in));

	for (size_t pi = 0; pi < nports; pi++) {
		for (size_t si = 0; si < nsrcs; si++) {
			const struct cfg_workload *s = srcs[si].w;
			struct pol_conn c = {
				.mtls = 1, .src_ns = s->ns, .src_sa = s->sa, .src_ip = s->ip,
				.dst_ip = w->ip, .dst_port = ports[pi],
			};
			const struct skm_verdict *v;
			struct pol_result r;
			int kernel;

			if (policy_eval(cfg, &t, &c, &r))
				abort();
			v = applies ? verdict_lookup(&tab, srcs[si].wl_id, ports[pi]) : NULL;
			kernel = applies ? v && v->allow : 1;
			if (kernel != !!r.allow) {
				snprintf(probe, sizeof(probe), "pod %s/%s (sa %s) to port %u%s",
					 s->ns, s->name, s->sa, ports[pi],
					 applies && !v ? " (no entry)" : "");
				disagree(model_text, w, probe, kernel, &r);
			}
		}
		for (size_t ii = 0; ii < nips; ii++) {
			struct pol_conn c = { .src_ip = ips[ii], .dst_ip = w->ip,
					      .dst_port = ports[pi] };
			const struct skm_verdict *v;
			struct pol_result r;
			int kernel;

			if (policy_eval(cfg, &t, &c, &r))
				abort();
			v = applies ? plain_lookup(&tab, ips[ii], ports[pi]) : NULL;
			kernel = applies ? v && v->allow : 1;
			if (kernel != !!r.allow) {
				inet_ntop(AF_INET, &ips[ii], a, sizeof(a));
				snprintf(probe, sizeof(probe), "plaintext from %s to port %u%s", a,
					 ports[pi], applies && !v ? " (no entry)" : "");
				disagree(model_text, w, probe, kernel, &r);
			}
		}
	}
out:
	policy_tables_free(&tab);
	free(named);
	free(cidrs);
}

/* Checks every workload of CFG as a destination, with the sources SRCS
 * (pods connect4 knows); IN gives more probes. MODEL_TEXT: what CFG was
 * loaded from, shown when a check fails. */
static inline void policy_check(const struct config *cfg, const struct policy_src *srcs,
				size_t nsrcs, struct fuzz_in *in, const char *model_text)
{
	for (size_t i = 0; i < cfg->nwls; i++)
		check_dst(cfg, &cfg->wls[i], srcs, nsrcs, in, model_text);
}

#endif /* SKM_FUZZ_POLICY_CHECK_H */
