// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The Istio L4 policy corpus (tests/testdata/istio-l4-policy): every case
 * must load, and every probe of its .expect file must get the verdict
 * ztunnel gives. Run from the repository root (or set SKM_CORPUS to the
 * corpus folder); a missing corpus fails, it is never skipped.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "policy.h"
#include "unit.h"

#define CORPUS_DIR	"tests/testdata/istio-l4-policy"
#define CORPUS_CASES	40	/* the corpus has 40 cases: fewer is a loss */

static const char *corpus_dir(void)
{
	const char *d = getenv("SKM_CORPUS");

	return d && *d ? d : CORPUS_DIR;
}

static int is_case_yaml(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	return d->d_name[0] != '.' && n > 5 && !strcmp(d->d_name + n - 5, ".yaml");
}

/* "a=b,c=d" into L (strings point into TEXT, which is modified). */
static int parse_labels_arg(char *text, struct cfg_labels *l)
{
	char *save = NULL;

	l->v = NULL;
	l->n = 0;
	for (char *kv = strtok_r(text, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		struct cfg_label *v;

		if (!eq)
			return -1;
		*eq = 0;
		v = realloc(l->v, (l->n + 1) * sizeof(*v));
		if (!v)
			return -1;
		l->v = v;
		l->v[l->n].key = kv;
		l->v[l->n++].val = eq + 1;
	}
	return 0;
}

struct probe_stats {
	unsigned int cases, probes, mismatches;
};

/* Runs every probe of EXPECT against CFG. */
static void run_expect(const char *name, const char *expect, const struct config *cfg,
		       struct probe_stats *st)
{
	FILE *f = fopen(expect, "r");
	char line[2048];
	unsigned int lineno = 0;

	if (!f) {
		fprintf(stderr, "# corpus: %s: cannot open %s: %s\n", name, expect, strerror(errno));
		st->mismatches++;
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		char *col[8], *save = NULL, *hash, *p = line;
		struct pol_result r1, r2;
		struct pol_target dst;
		struct pol_conn c = {};
		struct cfg_labels labels;
		struct pol_set *set = NULL;
		struct in_addr a;
		char why[256], lbl[256];
		int n = 0, want;

		lineno++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || *p == '\n' || !*p)
			continue;
		hash = strchr(p, '#');
		if (hash)
			*hash = 0;
		for (char *t = strtok_r(p, " \t\n", &save); t && n < 8; t = strtok_r(NULL, " \t\n", &save))
			col[n++] = t;
		if (n == 8)
			snprintf(lbl, sizeof(lbl), "%s", col[4]);
		if (n != 8 || parse_labels_arg(col[4], &labels) ||
		    inet_pton(AF_INET, col[2], &a) != 1 ||
		    (strcmp(col[6], "mtls") && strcmp(col[6], "plain")) ||
		    (strcmp(col[7], "ALLOW") && strcmp(col[7], "DENY"))) {
			fprintf(stderr, "# corpus: %s:%u: malformed probe line\n", expect, lineno);
			st->mismatches++;
			continue;
		}
		c.mtls = !strcmp(col[6], "mtls");
		c.src_ns = c.mtls ? col[0] : NULL;
		c.src_sa = c.mtls ? col[1] : NULL;
		c.src_ip = a.s_addr;
		c.dst_ip = htonl(0x0af40001);	/* the corpus never names it */
		c.dst_port = (uint16_t)strtoul(col[5], NULL, 10);
		dst.ns = col[3];
		dst.labels = &labels;
		want = !strcmp(col[7], "ALLOW");

		assert_int_equal(policy_eval(cfg, &dst, &c, &r1), 0);
		assert_int_equal(policy_set_build(cfg, &dst, &set), 0);
		assert_int_equal(policy_set_eval(set, &c, &r2), 0);
		policy_set_free(set);
		st->probes++;
		if (r1.allow != want || r2.allow != r1.allow || r2.why != r1.why) {
			st->mismatches++;
			fprintf(stderr, "# corpus: MISMATCH %s line %u: %s/%s %s -> %s %s:%s %s: expected %s, got %s (%s)%s\n",
				name, lineno, col[0], col[1], col[2], col[3], lbl, col[5], col[6],
				col[7], r1.allow ? "ALLOW" : "DENY", policy_reason(&r1, why, sizeof(why)),
				r2.allow != r1.allow || r2.why != r1.why ?
				" [policy_set_eval disagrees]" : "");
		}
		free(labels.v);
	}
	fclose(f);
}

static void test_corpus_all(void **state)
{
	const char *dir = corpus_dir();
	struct probe_stats st = {};
	struct dirent **ents = NULL;
	char path[1024];
	int n;

	snprintf(path, sizeof(path), "%s/cases", dir);
	n = scandir(path, &ents, is_case_yaml, alphasort);
	if (n < 0) {
		fprintf(stderr, "# corpus: FAIL: cannot read %s: %s (run from the repository root, or set SKM_CORPUS)\n",
			path, strerror(errno));
		fail_msg("corpus missing: %s", path);
	}
	for (int i = 0; i < n; i++) {
		struct cfg_diag diag = {};
		struct config *cfg = NULL;
		char yaml[1300], expect[1300];
		size_t l = strlen(ents[i]->d_name);

		snprintf(yaml, sizeof(yaml), "%s/%s", path, ents[i]->d_name);
		snprintf(expect, sizeof(expect), "%s/%.*s.expect", path, (int)(l - 5),
			 ents[i]->d_name);
		st.cases++;
		if (config_load(yaml, &cfg, &diag)) {
			fprintf(stderr, "# corpus: MISMATCH %s: does not load\n", ents[i]->d_name);
			unit_diag_dump(&diag);
			st.mismatches++;
		} else {
			run_expect(ents[i]->d_name, expect, cfg, &st);
		}
		config_free(cfg);
		diag_free(&diag);
		free(ents[i]);
	}
	free(ents);
	fprintf(stderr, "# corpus: %u cases, %u probes checked, %u mismatches\n",
		st.cases, st.probes, st.mismatches);
	assert_true(st.cases >= CORPUS_CASES);
	assert_true(st.probes > 0);
	assert_int_equal(st.mismatches, 0);
}

/* The warnings the cases must give: what ztunnel does not enforce. */
static void test_corpus_warnings(void **state)
{
	static const struct {
		const char *file;
		const char *text;
	} want[] = {
		{ "02-l4-allow-with-l7-method.yaml",
		  "ALLOW rule 0 dropped: methods is L7 (the rule can never match at L4)" },
		{ "12-reference-allow-l7-jwt.yaml",
		  "ALLOW rule 0 dropped: methods, paths, when key request.auth.claims[iss] are L7" },
		{ "13-reference-deny-post.yaml",
		  "DENY rule 0 never fires: its to clause has no entry with an L4 field left (methods is L7)" },
		{ "13-reference-deny-post.yaml",
		  "DENY rule 0: methods ignored, the rule matches more broadly on ports" },
		{ "16-authz-tcp-deny-methods-ports.yaml",
		  "DENY rule 0: methods ignored, the rule matches more broadly on ports" },
		{ "17-authz-tcp-deny-methods-only.yaml",
		  "DENY rule 0 has no L4 condition left and never fires (methods is L7)" },
		{ "21-ingress-remoteipblocks-allow.yaml",
		  "ALLOW rule 0 dropped: remoteIpBlocks is L7" },
		{ "25-when-l4-conditions.yaml",
		  "ALLOW rule 3 dropped: when key connection.sni is L7" },
		{ "26-mesh-wide-deny-ports-with-paths.yaml",
		  "DENY rule 0: paths, notPaths ignored, the rule matches more broadly on ports" },
		{ "27-ambient-getting-started-l4-and-waypoint.yaml",
		  "targetRefs: enforced only by a waypoint; not enforced here" },
		{ "28-authz-http-bookinfo-at-ztunnel.yaml",
		  "ALLOW policy has no rule left at L4" },
		{ "32-pa-workload-strict-port-disable.yaml",
		  "portLevelMtls 8080: DISABLE acts as PERMISSIVE in ambient" },
		{ "34-pa-namespace-strict-workload-disable.yaml",
		  "mtls.mode DISABLE acts as PERMISSIVE" },
		{ "36-pa-unset-port-disable-inherits-strict.yaml",
		  "portLevelMtls 80: DISABLE is not honoured under the inherited STRICT mode" },
		{ "37-pa-root-selector-ignored.yaml",
		  "a selector in the root namespace istio-system is ignored" },
	};
	static const char *const quiet[] = {
		"01-l4-allow-principal.yaml", "14-authz-tcp-allow-ports.yaml",
		"22-source-fields-anded-notipblocks.yaml", "35-pa-strict-port-permissive.yaml",
		"39-pa-precedence-mesh-namespace-workload.yaml",
	};
	int bad = 0;

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		struct cfg_diag diag = {};
		struct config *cfg = NULL;
		char path[1024];

		snprintf(path, sizeof(path), "%s/cases/%s", corpus_dir(), want[i].file);
		if (config_load(path, &cfg, &diag) || !unit_diag_has(&diag, want[i].text)) {
			fprintf(stderr, "# corpus: %s: no warning \"%s\"\n", want[i].file, want[i].text);
			unit_diag_dump(&diag);
			bad++;
		}
		config_free(cfg);
		diag_free(&diag);
	}
	for (size_t i = 0; i < sizeof(quiet) / sizeof(quiet[0]); i++) {
		struct cfg_diag diag = {};
		struct config *cfg = NULL;
		char path[1024];

		snprintf(path, sizeof(path), "%s/cases/%s", corpus_dir(), quiet[i]);
		if (config_load(path, &cfg, &diag) || diag.n) {
			fprintf(stderr, "# corpus: %s: expected to load with no message\n", quiet[i]);
			unit_diag_dump(&diag);
			bad++;
		}
		config_free(cfg);
		diag_free(&diag);
	}
	assert_int_equal(bad, 0);
}

int run_corpus_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_corpus_all),
		cmocka_unit_test(test_corpus_warnings),
	};

	return cmocka_run_group_tests_name("corpus", tests, NULL, NULL);
}
