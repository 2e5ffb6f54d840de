// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The model filled through its own API, without YAML, as a cluster source
 * fills it: finishing resolves selectors, indexes by IP, applies
 * PeerAuthentication, and names objects without positions in messages. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "model.h"
#include "policy.h"
#include "unit.h"

static uint32_t ip4(const char *s)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a.s_addr;
}

static struct cfg_labels labels1(const char *k, const char *v)
{
	struct cfg_labels l = { calloc(1, sizeof(*l.v)), 1 };

	assert_non_null(l.v);
	l.v[0].key = strdup(k);
	l.v[0].val = strdup(v);
	return l;
}

static void add_workload(struct config *m, const char *ns, const char *name,
			 const char *ip, const char *app)
{
	struct cfg_workload w = {
		.name = strdup(name), .ns = strdup(ns), .sa = strdup("default"),
		.node = strdup("n1"), .ip = ip4(ip), .labels = labels1("app", app),
	};

	assert_int_equal(model_add_workload(m, &w), 0);
}

static void add_service(struct config *m, const char *ns, const char *name,
			const char *vip, const char *app)
{
	struct cfg_service s = {
		.name = strdup(name), .ns = strdup(ns), .vip = ip4(vip),
		.ports = calloc(1, sizeof(*s.ports)), .nports = 1,
		.has_selector = 1, .selector = labels1("app", app),
	};

	assert_non_null(s.ports);
	s.ports[0] = (struct cfg_port){ .port = 80, .target = 8080, .proto = IPPROTO_TCP };
	assert_int_equal(model_add_service(m, &s), 0);
}

static void add_strict(struct config *m, const char *ns)
{
	struct cfg_peerauthn p = {
		.name = strdup("default"), .ns = strdup(ns), .mode = PA_STRICT,
	};

	assert_int_equal(model_add_peerauthn(m, &p), 0);
}

static void test_model_api(void **state)
{
	struct config *m = model_new(NULL, "example.org");
	struct cfg_diag diag = {};
	const struct cfg_workload *w;
	struct pol_result res;
	struct pol_conn plain = { .dst_port = 8080 }, mtls = plain;
	struct pol_target dst;
	char id[256];

	assert_non_null(m);
	add_workload(m, "shop", "web-1", "10.9.0.1", "web");
	add_workload(m, "shop", "db-1", "10.9.0.2", "db");
	add_workload(m, "shop", "web-2", "10.9.0.3", "web");
	add_service(m, "shop", "web", "10.96.0.10", "web");
	add_strict(m, "shop");
	assert_int_equal(model_finish(m, &diag), 0);
	if (diag.n)
		unit_diag_dump(&diag);
	assert_int_equal(diag.nerrors, 0);
	assert_int_equal(diag.nwarnings, 0);

	w = config_workload_by_ip(m, ip4("10.9.0.2"));
	assert_non_null(w);
	assert_string_equal(w->name, "db-1");
	assert_null(config_workload_by_ip(m, ip4("10.9.0.9")));
	config_workload_id(m, w, id, sizeof(id));
	assert_string_equal(id, "spiffe://example.org/ns/shop/sa/default");

	/* the selector resolved to the two web pods, in order */
	assert_int_equal(m->nsvcs, 1);
	assert_int_equal(m->svcs[0].neps, 2);
	assert_int_equal(m->svcs[0].eps[0].ip, ip4("10.9.0.1"));
	assert_int_equal(m->svcs[0].eps[1].ip, ip4("10.9.0.3"));

	/* the namespace's STRICT applies: plaintext denied, mTLS allowed */
	dst = (struct pol_target){ .ns = w->ns, .labels = &w->labels };
	plain.dst_ip = mtls.dst_ip = w->ip;
	assert_int_equal(policy_eval(m, &dst, &plain, &res), 0);
	assert_false(res.allow);
	assert_int_equal(res.why, POL_DENY_STRICT);
	mtls.mtls = 1;
	mtls.src_ns = "shop";
	mtls.src_sa = "default";
	assert_int_equal(policy_eval(m, &dst, &mtls, &res), 0);
	assert_true(res.allow);
	diag_free(&diag);
	config_free(m);
}

/* Whole-model checks give the loader's messages, without a position when
 * the object has none. */
static void test_model_api_duplicates(void **state)
{
	struct config *m = model_new(NULL, NULL);
	struct cfg_diag diag = {};

	assert_non_null(m);
	assert_string_equal(m->root_ns, CFG_DEFAULT_ROOT_NS);
	add_workload(m, "shop", "web-1", "10.9.0.1", "web");
	add_workload(m, "shop", "web-1", "10.9.0.5", "web");
	add_workload(m, "shop", "web-2", "10.9.0.1", "web");
	add_strict(m, "shop");
	add_strict(m, "shop");
	assert_int_equal(model_finish(m, &diag), 0);
	assert_int_equal(diag.nerrors, 3);
	assert_true(unit_diag_has(&diag, "error: Workload shop/web-1 is defined twice"));
	assert_true(unit_diag_has(&diag, "Workload shop/web-2 has the IP of shop/web-1"));
	assert_true(unit_diag_has(&diag, "error: PeerAuthentication shop/default is defined twice"));
	for (size_t i = 0; i < diag.n; i++) {
		assert_null(strstr(diag.msgs[i], "(null)"));
		assert_null(strstr(diag.msgs[i], "first at"));
	}
	diag_free(&diag);
	config_free(m);
}

int run_model_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_api),
		cmocka_unit_test(test_model_api_duplicates),
	};

	return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
