// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fuzz target: policy compilation against policy evaluation. The input
 * drives a generator of a mesh (Workloads, AuthorizationPolicies,
 * PeerAuthentications, from small pools of namespaces, service accounts,
 * labels, principals, CIDRs and ports, so that they meet), written as YAML
 * and loaded as meshd loads it; then every workload, as the destination,
 * gets its kernel tables checked against policy_eval() (policy_check.h).
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
#include "policy_compile.h"
#include "skmesh.h"
#include "policy_check.h"

static int fd = -1;
static char path[64];

#define PICK(in, pool) ((pool)[fuzz_u8(in) % ARRAY_SIZE(pool)])

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
static void list(FILE *f, struct fuzz_in *in, const char *const *pool, size_t n)
{
	unsigned int k = 1 + fuzz_u8(in) % 3;

	fputc('[', f);
	for (unsigned int i = 0; i < k; i++)
		fprintf(f, "%s\"%s\"", i ? ", " : "", pool[fuzz_u8(in) % n]);
	fputc(']', f);
}

#define LIST(f, in, pool) list(f, in, pool, ARRAY_SIZE(pool))

static void source(FILE *f, struct fuzz_in *in)
{
	static const struct field fields[] = {
		FIELD("principals", PRINCIPALS), FIELD("notPrincipals", PRINCIPALS),
		FIELD("namespaces", NAMESPACES), FIELD("notNamespaces", NAMESPACES),
		FIELD("ipBlocks", CIDRS), FIELD("notIpBlocks", CIDRS),
		FIELD("serviceAccounts", SERVICE_ACCOUNTS),
		FIELD("notServiceAccounts", SERVICE_ACCOUNTS),
		FIELD("requestPrincipals", PRINCIPALS),	/* L7 */
	};
	unsigned int mask = fuzz_u8(in) | (fuzz_u8(in) & 1) << 8;
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

static void operation(FILE *f, struct fuzz_in *in)
{
	unsigned int mask = fuzz_u8(in);
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

static void condition(FILE *f, struct fuzz_in *in)
{
	static const struct field keys[] = {
		FIELD("source.ip", CIDRS), FIELD("source.namespace", NAMESPACES),
		FIELD("source.principal", PRINCIPALS), FIELD("destination.ip", CIDRS),
		FIELD("destination.port", PORTS),
	};
	unsigned int k = fuzz_u8(in) % ARRAY_SIZE(keys), how = fuzz_u8(in) % 3;

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
static void rule_part(FILE *f, struct fuzz_in *in, const char *key, int *any,
		      void (*gen)(FILE *, struct fuzz_in *))
{
	unsigned int n = fuzz_u8(in) % 3;

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
static size_t mesh(FILE *f, struct fuzz_in *in, int *src)
{
	size_t nwl = 1 + fuzz_u8(in) % 6;

	for (size_t i = 0; i < nwl; i++) {
		unsigned int net = fuzz_u8(in) % 4, host = 1 + (unsigned int)i * 32 + fuzz_u8(in) % 32;
		char ip[16];

		snprintf(ip, sizeof(ip), "10.0.%u.%u", net, host);
		src[i] = !(fuzz_u8(in) & 1);
		fprintf(f, "---\napiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
			"metadata: {name: w%zu, namespace: %s, labels: {app: %s}}\n"
			"spec: {ip: %s, node: n1, serviceAccount: %s}\n",
			i, PICK(in, NSS), PICK(in, APPS), ip, PICK(in, SAS));
	}
	for (unsigned int i = 0, n = fuzz_u8(in) % 5; i < n; i++) {
		unsigned int sel = fuzz_u8(in) % 4, act = fuzz_u8(in) % 3, nr = fuzz_u8(in) % 4;

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
		if (!nr && (fuzz_u8(in) & 1))
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
	for (unsigned int i = 0, n = fuzz_u8(in) % 4; i < n; i++) {
		unsigned int sel = fuzz_u8(in) % 3, mode = fuzz_u8(in) % 5, nports = fuzz_u8(in) % 3;

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

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fd = fuzz_memfd("fuzz-policy.yaml", path, sizeof(path));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, data + size };
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
	policy_check(cfg, srcs, nsrcs, &in, text);
	config_free(cfg);
	diag_free(&d);
	free(text);
	return 0;
}
