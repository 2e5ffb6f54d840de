// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fuzz target: the YAML/Istio config loader, fed a file. The input is one
 * config file; when it holds a line "#~~" it is two versions of the file,
 * loaded in turn through one parse cache, and the second load must give
 * what a fresh load of the second version gives (result, messages and
 * objects): the incremental reload may not differ from a full one. A
 * config of one version, loaded, of a few workloads, gets its kernel
 * policy tables checked against policy_eval() (policy_check.h), so the
 * Istio examples with a workload for each of their probes (seeds
 * istio-mesh-*) are checked as the policy target checks generated ones.
 *
 * Files live in a memfd (/proc/self/fd/N), so no disk is touched.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "config.h"
#include "policy.h"
#include "policy_check.h"

/* Configs of at most this many workloads get their policy checked. */
#define MAX_CHECKED	32

static int fd = -1;
static char path[64];

/* Small caps, so that the fuzzer reaches them. */
static const struct cfg_opts opts = {
	.max_file_bytes = 1 << 20,
	.max_doc_bytes = 8192,
};

/* What a load gave, to compare two loads. */
static void summary(int rc, const struct config *cfg, const struct cfg_diag *d, char **out)
{
	size_t n = 0, len = 0;
	FILE *f = open_memstream(out, &len);

	if (!f)
		abort();
	fprintf(f, "rc %d errors %zu warnings %zu\n", rc, d->nerrors, d->nwarnings);
	for (size_t i = 0; i < d->n; i++)
		fprintf(f, "%s\n", d->msgs[i]);
	if (cfg) {
		fprintf(f, "wls %zu svcs %zu authz %zu pas %zu\n", cfg->nwls, cfg->nsvcs,
			cfg->nauthz, cfg->npas);
		for (size_t i = 0; i < cfg->nwls; i++) {
			struct pol_target t = { .ns = cfg->wls[i].ns, .labels = &cfg->wls[i].labels };

			n += (size_t)policy_applies(cfg, &t);
			fprintf(f, "wl %s/%s %08x inputs %016llx\n", cfg->wls[i].ns,
				cfg->wls[i].name, cfg->wls[i].ip,
				(unsigned long long)policy_inputs(cfg, &t));
		}
		for (size_t i = 0; i < cfg->nsvcs; i++)
			fprintf(f, "svc %s/%s eps %zu\n", cfg->svcs[i].ns, cfg->svcs[i].name,
				cfg->svcs[i].neps);
		fprintf(f, "enforced %zu\n", n);
	}
	fclose(f);
}

/* A loaded config's kernel policy tables against policy_eval(), every
 * workload a source pod (as if every one had its netns known): a few at
 * most, so that a run stays fast. */
static void check_policy(const struct config *cfg, const uint8_t *data, size_t size)
{
	struct policy_src srcs[MAX_CHECKED];
	struct fuzz_in in = { data, data + size };
	char *text;

	if (!cfg->nwls || cfg->nwls > MAX_CHECKED)
		return;
	for (size_t i = 0; i < cfg->nwls; i++)
		srcs[i] = (struct policy_src){ .wl_id = (uint32_t)i + 1, .w = &cfg->wls[i] };
	text = strndup((const char *)data, size);
	policy_check(cfg, srcs, cfg->nwls, &in, text ? text : "?");
	free(text);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fd = fuzz_memfd("fuzz-config.yaml", path, sizeof(path));
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char cut[] = "\n#~~\n";
	const uint8_t *second = memmem(data, size, cut, sizeof(cut) - 1);
	struct config *cfg = NULL, *fresh = NULL;
	struct cfg_diag d = {}, fd2 = {};
	struct cfg_cache *cache;
	char *a = NULL, *b = NULL;
	int rc, rc2;

	if (!second) {
		fuzz_memfd_put(fd, data, size);
		rc = config_load_opts(path, &opts, &cfg, &d);
		if (rc && !d.nerrors)
			abort();	/* a refusal always says why */
		if (!rc)
			check_policy(cfg, data, size);
		config_free(cfg);
		diag_free(&d);
		return 0;
	}
	cache = cfg_cache_new();
	if (!cache)
		return 0;
	fuzz_memfd_put(fd, data, (size_t)(second - data) + 1);
	rc = config_load_cached(path, &opts, cache, &cfg, &d);
	config_free(cfg);
	cfg = NULL;
	diag_free(&d);
	second += sizeof(cut) - 1;
	fuzz_memfd_put(fd, second, size - (size_t)(second - data));
	rc = config_load_cached(path, &opts, cache, &cfg, &d);
	rc2 = config_load_opts(path, &opts, &fresh, &fd2);
	summary(rc, cfg, &d, &a);
	summary(rc2, fresh, &fd2, &b);
	if (rc != -ENOMEM && rc2 != -ENOMEM && strcmp(a, b)) {
		fprintf(stderr, "reload through the cache differs from a fresh load\n"
			"--- cached:\n%s--- fresh:\n%s", a, b);
		abort();
	}
	free(a);
	free(b);
	config_free(cfg);
	config_free(fresh);
	diag_free(&d);
	diag_free(&fd2);
	cfg_cache_free(cache);
	return 0;
}
