// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fuzz target: policy compilation against policy evaluation. The input
 * drives a generator of a mesh (Workloads, AuthorizationPolicies,
 * PeerAuthentications, from small pools of namespaces, service accounts,
 * labels, principals, CIDRs and ports, so that they meet), written as YAML
 * and loaded as meshd loads it. For every workload as the destination,
 * the kernel's tables are compiled as reconcile compiles them
 * (policy_tables_compile), looked up as the BPF programs look them up
 * (bpf/lib/policy.bpf.h: skm_verdicts by exact port then port 0, skm_plain
 * by longest prefix over (pol_set, port, source address) then port 0, a
 * missing entry denies, a destination nothing can deny is not enforced),
 * and compared with policy_eval() for every probe: each source pod with
 * its identity, and plaintext from workload addresses, CIDR edges and
 * addresses of the input, on every port a policy names and others. Any
 * disagreement aborts with the mesh and the probe.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "config.h"
#include "policy.h"
#include "reconcile.h"
#include "skmesh.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static int fd = -1;
static char path[64];

struct in {
	const uint8_t *p, *end;
};

/* The next byte of the input; 0 once it is used up. */
static unsigned int u8(struct in *in)
{
	return in->p < in->end ? *in->p++ : 0;
}

#define PICK(in, pool) ((pool)[u8(in) % ARRAY_SIZE(pool)])

static const char *const NSS[] = { "a", "b", "istio-system" };
static const char *const SAS[] = { "x", "y", "z" };
static const char *const APPS[] = { "p", "q", "r" };
static const char *const PRINCIPALS[] = {
	"cluster.local/ns/a/sa/x", "cluster.local/ns/b/sa/y", "*", "cluster.local/ns/a/*",
	"*/sa/z", "other.td/ns/a/sa/x", "cluster.local/ns/istio-system/sa/x", "*/ns/b/sa/y",
	"cluster.local/ns/b/sa/z", "spiffe://cluster.local/ns/a/sa/y",
};
static const char *const NAMESPACES[] = { "a", "b", "istio-system", "*", "a*", "*b", "c" };
static const char *const CIDRS[] = {
	"10.0.0.0/16", "10.0.1.0/24", "10.0.1.33", "10.0.2.0/23", "0.0.0.0/0", "10.0.0.0/8",
	"10.0.3.128/25", "10.0.0.64/26", "fd00::/8", "10.0.1.33/32", "0.0.0.0/1",
	"128.0.0.0/1", "10.0.0.1", "10.0.2.65/31",
};
static const char *const SERVICE_ACCOUNTS[] = { "x", "a/y", "b/z", "istio-system/x", "y" };
static const char *const PORTS[] = { "80", "443", "8080", "1", "65535", "5432", "81" };
static const char *const MODES[] = { "STRICT", "PERMISSIVE", "DISABLE", "UNSET" };

/* A key and the pool of its values. */
struct field {
	const char *key;
	const char *const *pool;
	size_t n;
};

#define FIELD(key, pool) { key, pool, ARRAY_SIZE(pool) }

/* A YAML flow list of 1 to 3 values of POOL. */
static void list(FILE *f, struct in *in, const char *const *pool, size_t n)
{
	unsigned int k = 1 + u8(in) % 3;

	fputc('[', f);
	for (unsigned int i = 0; i < k; i++)
		fprintf(f, "%s\"%s\"", i ? ", " : "", pool[u8(in) % n]);
	fputc(']', f);
}

#define LIST(f, in, pool) list(f, in, pool, ARRAY_SIZE(pool))

static void source(FILE *f, struct in *in)
{
	static const struct field fields[] = {
		FIELD("principals", PRINCIPALS), FIELD("notPrincipals", PRINCIPALS),
		FIELD("namespaces", NAMESPACES), FIELD("notNamespaces", NAMESPACES),
		FIELD("ipBlocks", CIDRS), FIELD("notIpBlocks", CIDRS),
		FIELD("serviceAccounts", SERVICE_ACCOUNTS),
		FIELD("notServiceAccounts", SERVICE_ACCOUNTS),
		FIELD("requestPrincipals", PRINCIPALS),	/* L7 */
	};
	unsigned int mask = u8(in) | (u8(in) & 1) << 8;
	int any = 0;

	fputs("{source: {", f);
	for (size_t i = 0; i < ARRAY_SIZE(fields); i++) {
		if (!(mask & (1U << i)))
			continue;
		fprintf(f, "%s%s: ", any++ ? ", " : "", fields[i].key);
		list(f, in, fields[i].pool, fields[i].n);
	}
	fputs("}}", f);
}

static void operation(FILE *f, struct in *in)
{
	unsigned int mask = u8(in);
	int any = 0;

	fputs("{operation: {", f);
	if (mask & 1) {
		fputs("ports: ", f);
		LIST(f, in, PORTS);
		any = 1;
	}
	if (mask & 2) {
		fprintf(f, "%snotPorts: ", any++ ? ", " : "");
		LIST(f, in, PORTS);
	}
	if (mask & 4)
		fprintf(f, "%smethods: [GET]", any++ ? ", " : "");	/* L7 */
	fputs("}}", f);
}

static void condition(FILE *f, struct in *in)
{
	static const struct field keys[] = {
		FIELD("source.ip", CIDRS), FIELD("source.namespace", NAMESPACES),
		FIELD("source.principal", PRINCIPALS), FIELD("destination.ip", CIDRS),
		FIELD("destination.port", PORTS),
	};
	unsigned int k = u8(in) % ARRAY_SIZE(keys), how = u8(in) % 3;

	fprintf(f, "{key: %s", keys[k].key);
	if (how != 1) {
		fputs(", values: ", f);
		list(f, in, keys[k].pool, keys[k].n);
	}
	if (how != 0) {
		fputs(", notValues: ", f);
		list(f, in, keys[k].pool, keys[k].n);
	}
	fputc('}', f);
}

/* One list of a rule: KEY: [1 or 2 of GEN], or nothing. */
static void rule_part(FILE *f, struct in *in, const char *key, int *any,
		      void (*gen)(FILE *, struct in *))
{
	unsigned int n = u8(in) % 3;

	if (!n)
		return;
	fprintf(f, "%s%s: [", (*any)++ ? ", " : "", key);
	for (unsigned int i = 0; i < n; i++) {
		if (i)
			fputs(", ", f);
		gen(f, in);
	}
	fputc(']', f);
}

/* Writes the mesh the input describes to F; which of its workloads are
 * pods connect4 knows (sources with an identity) to SRC. */
static size_t mesh(FILE *f, struct in *in, int *src)
{
	size_t nwl = 1 + u8(in) % 6;

	for (size_t i = 0; i < nwl; i++) {
		unsigned int net = u8(in) % 4, host = 1 + (unsigned int)i * 32 + u8(in) % 32;
		char ip[16];

		snprintf(ip, sizeof(ip), "10.0.%u.%u", net, host);
		src[i] = !(u8(in) & 1);
		fprintf(f, "---\napiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
			"metadata: {name: w%zu, namespace: %s, labels: {app: %s}}\n"
			"spec: {ip: %s, node: n1, serviceAccount: %s}\n",
			i, PICK(in, NSS), PICK(in, APPS), ip, PICK(in, SAS));
	}
	for (unsigned int i = 0, n = u8(in) % 5; i < n; i++) {
		unsigned int sel = u8(in) % 4, act = u8(in) % 3, nr = u8(in) % 4;

		fprintf(f, "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			"metadata: {name: p%u, namespace: %s}\nspec:\n", i, PICK(in, NSS));
		if (sel == 1 || sel == 2)
			fprintf(f, "  selector: {matchLabels: {app: %s}}\n", APPS[sel - 1]);
		else if (sel == 3)
			fputs("  selector: {}\n", f);
		if (act)
			fprintf(f, "  action: %s\n", act == 1 ? "ALLOW" : "DENY");
		if (nr == 3) {
			fputs("  rules: [{}]\n", f);
			continue;
		}
		if (!nr && (u8(in) & 1))
			continue;	/* no rules at all */
		fputs("  rules:\n", f);
		if (!nr)
			fputs("  - {from: [{source: {namespaces: [\"nowhere\"]}}]}\n", f);
		for (unsigned int r = 0; r < nr; r++) {
			int any = 0;

			fputs("  - {", f);
			rule_part(f, in, "from", &any, source);
			rule_part(f, in, "to", &any, operation);
			rule_part(f, in, "when", &any, condition);
			fputs("}\n", f);
		}
	}
	for (unsigned int i = 0, n = u8(in) % 4; i < n; i++) {
		unsigned int sel = u8(in) % 3, mode = u8(in) % 5, nports = u8(in) % 3;

		fprintf(f, "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
			"metadata: {name: pa%u, namespace: %s}\nspec:\n", i, PICK(in, NSS));
		if (sel)
			fprintf(f, "  selector: {matchLabels: {app: %s}}\n", APPS[sel - 1]);
		if (mode < 4)
			fprintf(f, "  mtls: {mode: %s}\n", MODES[mode]);
		if (sel && nports) {
			fputs("  portLevelMtls:\n", f);
			for (unsigned int k = 0; k < nports; k++)
				fprintf(f, "    \"%s\": {mode: %s}\n", PICK(in, PORTS), PICK(in, MODES));
		}
	}
	return nwl;
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

static const char *model_text;

static void disagree(const struct cfg_workload *dst, const char *probe, int kernel,
		     const struct pol_result *r)
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
		      const struct policy_src *srcs, size_t nsrcs, struct in *in)
{
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
	for (size_t i = 0; i < ARRAY_SIZE(PORTS); i++)
		add_port(ports, &nports, ARRAY_SIZE(ports), (uint32_t)atoi(PORTS[i]));
	add_port(ports, &nports, ARRAY_SIZE(ports), 2);
	add_port(ports, &nports, ARRAY_SIZE(ports), 9999);
	for (int i = 0; i < 2; i++)
		add_port(ports, &nports, ARRAY_SIZE(ports), u8(in) << 8 | u8(in));

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
	add_ip(ips, &nips, ARRAY_SIZE(ips), 0x0a000000u | (u8(in) % 4) << 8 | u8(in));
	add_ip(ips, &nips, ARRAY_SIZE(ips),
	       (uint32_t)u8(in) << 24 | u8(in) << 16 | u8(in) << 8 | u8(in));

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
				disagree(w, probe, kernel, &r);
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
				disagree(w, probe, kernel, &r);
			}
		}
	}
out:
	policy_tables_free(&tab);
	free(named);
	free(cidrs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fd = fuzz_memfd("fuzz-policy.yaml", path, sizeof(path));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, data + size };
	struct policy_src srcs[8];
	int src[8];
	struct config *cfg = NULL;
	struct cfg_diag d = {};
	size_t nwl, nsrcs = 0, len = 0;
	char *text = NULL;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return 0;
	nwl = mesh(f, &in, src);
	fclose(f);
	if (!text)
		return 0;
	fuzz_memfd_put(fd, text, len);
	model_text = text;
	if (getenv("FUZZ_POLICY_SHOW")) {	/* the mesh and what loading it said */
		fputs(text, stderr);
		config_load(path, &cfg, &d);
		diag_print(&d, "fuzz_policy");
		config_free(cfg);
		cfg = NULL;
		diag_free(&d);
	}
	if (config_load(path, &cfg, &d)) {
		diag_free(&d);
		free(text);
		return 0;	/* e.g. two workloads on one address */
	}
	for (size_t i = 0; i < nwl && i < cfg->nwls; i++)
		if (src[i])
			srcs[nsrcs++] = (struct policy_src){ .wl_id = (uint32_t)i + 1,
							     .w = &cfg->wls[i] };
	for (size_t i = 0; i < cfg->nwls; i++)
		check_dst(cfg, &cfg->wls[i], srcs, nsrcs, &in);
	config_free(cfg);
	diag_free(&d);
	free(text);
	return 0;
}
