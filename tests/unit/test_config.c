// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Config loader and slot table: parsing, positions in errors, weights. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "reconcile.h"
#include "unit.h"

/* Loads TEXT; returns the error code and leaves messages in DIAG. */
static int load_text(const char *text, struct config **cfg, struct cfg_diag *diag,
		     char **path)
{
	*path = unit_write_tmp(text);
	return config_load(*path, cfg, diag);
}

static void expect_error(const char *text, const char *where, const char *what)
{
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path, loc[512];
	int rc = load_text(text, &cfg, &diag, &path);

	if (rc == 0 || !unit_diag_has(&diag, what))
		for (size_t i = 0; i < diag.n; i++)
			fprintf(stderr, "  diag: %s\n", diag.msgs[i]);
	assert_int_not_equal(rc, 0);
	assert_null(cfg);
	snprintf(loc, sizeof(loc), "%s:%s: error", path, where);
	assert_true(unit_diag_has(&diag, loc));
	assert_true(unit_diag_has(&diag, what));
	diag_free(&diag);
	unlink(path);
	free(path);
}

static void test_minimal_config(void **state)
{
	const char *text =
		"apiVersion: skmesh.io/v1alpha1\n"
		"kind: Workload\n"
		"metadata: {name: web-1, namespace: shop, labels: {app: web}}\n"
		"spec: {ip: 10.10.1.2, node: node1, serviceAccount: web}\n"
		"---\n"
		"apiVersion: skmesh.io/v1alpha1\n"
		"kind: Service\n"
		"metadata: {name: web, namespace: shop}\n"
		"spec:\n"
		"  vip: 10.96.0.10\n"
		"  ports: [{port: 80, targetPort: 8080}]\n"
		"  selector: {app: web}\n"
		"---\n";
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path;

	assert_int_equal(load_text(text, &cfg, &diag, &path), 0);
	assert_int_equal(cfg->nwls, 1);
	assert_string_equal(cfg->wls[0].sa, "web");
	assert_int_equal(cfg->nsvcs, 1);
	assert_int_equal(cfg->svcs[0].nports, 1);
	assert_int_equal(cfg->svcs[0].ports[0].port, 80);
	assert_int_equal(cfg->svcs[0].ports[0].target, 8080);
	/* the selector resolved to the workload */
	assert_int_equal(cfg->svcs[0].neps, 1);
	assert_int_equal(cfg->svcs[0].eps[0].ip, cfg->wls[0].ip);
	config_free(cfg);
	diag_free(&diag);
	unlink(path);
	free(path);
}

static void test_malformed_yaml(void **state)
{
	expect_error("kind: Service\nmetadata: {name: x\nspec: [\n", "3:5", "malformed YAML");
}

static void test_unknown_kind(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Gateway\nmetadata: {name: g}\n",
		     "2:7", "unknown kind \"Gateway\"");
}

static void test_vip_without_ports(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
		     "metadata: {name: s}\nspec:\n  vip: 10.96.0.1\n",
		     "5:3", "spec.ports: a Service needs at least one port");
}

static void test_port_out_of_range(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
		     "metadata: {name: s}\nspec:\n  vip: 10.96.0.1\n"
		     "  ports:\n  - port: 70000\n",
		     "7:11", "spec.ports[0].port: \"70000\" is out of range");
}

static void test_bad_ip(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
		     "metadata: {name: w}\nspec: {ip: 10.1.2, node: n1}\n",
		     "4:12", "spec.ip: \"10.1.2\" is not an IPv4 address");
}

static void test_unknown_field(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
		     "metadata: {name: s}\nspec:\n  vip: 10.96.0.1\n"
		     "  ports:\n  - {port: 80, tragetPort: 8080}\n",
		     "7:16", "unknown field \"tragetPort\"");
}

static void test_duplicate_workload(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
		     "metadata: {name: w}\nspec: {ip: 10.1.2.3, node: n1}\n---\n"
		     "apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
		     "metadata: {name: w}\nspec: {ip: 10.1.2.4, node: n1}\n",
		     "6:1", "defined twice");
}

/* An Istio policy is parsed into the policy model (test_policy.c tests
 * it); an allow-nothing policy loads without a warning. */
static void test_istio_kinds_parsed(void **state)
{
	const char *text =
		"apiVersion: security.istio.io/v1\n"
		"kind: AuthorizationPolicy\n"
		"metadata: {name: deny-all, namespace: foo}\n"
		"spec: {}\n";
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path;

	assert_int_equal(load_text(text, &cfg, &diag, &path), 0);
	assert_int_equal(cfg->nauthz, 1);
	assert_int_equal(diag.nwarnings, 0);
	config_free(cfg);
	diag_free(&diag);
	unlink(path);
	free(path);
}

static void test_slots_weights(void **state)
{
	uint32_t w[] = { 1, 3 }, slots[256];
	unsigned int n = build_slots(w, 2, slots, 256), c0 = 0;

	assert_int_equal(n, 4);
	for (unsigned int i = 0; i < n; i++)
		c0 += slots[i] == 0;
	assert_int_equal(c0, 1);
}

static void test_slots_scaled(void **state)
{
	uint32_t w[] = { 1000, 3000, 0, 1 }, slots[256];
	unsigned int n = build_slots(w, 4, slots, 256), c[4] = {};

	assert_true(n <= 256);
	for (unsigned int i = 0; i < n; i++)
		c[slots[i]]++;
	assert_int_equal(c[2], 0);	/* weight 0: drained */
	assert_true(c[3] >= 1);		/* tiny weight still reachable */
	assert_true(c[1] >= 3 * c[0] - 3 && c[1] <= 3 * c[0] + 3);
}

static void test_slots_none(void **state)
{
	uint32_t w[] = { 0, 0 }, slots[4];

	assert_int_equal(build_slots(w, 2, slots, 4), 0);
}

int run_config_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal_config),
		cmocka_unit_test(test_malformed_yaml),
		cmocka_unit_test(test_unknown_kind),
		cmocka_unit_test(test_vip_without_ports),
		cmocka_unit_test(test_port_out_of_range),
		cmocka_unit_test(test_bad_ip),
		cmocka_unit_test(test_unknown_field),
		cmocka_unit_test(test_duplicate_workload),
		cmocka_unit_test(test_istio_kinds_parsed),
		cmocka_unit_test(test_slots_weights),
		cmocka_unit_test(test_slots_scaled),
		cmocka_unit_test(test_slots_none),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
