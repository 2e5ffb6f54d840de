// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Metrics: Istio's label set and escaping, the series cap and its
 * overflow series, monotonic rendering, the service index, and the
 * endpoint address parser. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "admin.h"
#include "config.h"
#include "metrics.h"
#include "skmesh.h"
#include "unit.h"

static const char cfg_text[] =
	"apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
	"metadata: {name: web-1, namespace: shop, labels: {app: web, version: v2}}\n"
	"spec: {ip: 10.10.1.2, node: node1, serviceAccount: web}\n"
	"---\napiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
	"metadata: {name: fe-1, namespace: shop, labels: {service.istio.io/canonical-name: "
	"frontend, app: ignored}}\n"
	"spec: {ip: 10.10.1.3, node: node1, serviceAccount: fe}\n"
	"---\napiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
	"metadata: {name: \"db\", namespace: data}\n"
	"spec: {ip: 10.10.2.2, node: node2, serviceAccount: db}\n"
	"---\napiVersion: skmesh.io/v1alpha1\nkind: Service\n"
	"metadata: {name: web, namespace: shop}\n"
	"spec: {vip: 10.96.0.10, ports: [{port: 80, targetPort: 8080}], selector: {app: web}}\n";

struct fx {
	struct config *cfg;
	struct metrics m;
	char *path;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct metrics_opts o = { .node = "node1", .max_series = 4 };
	struct cfg_diag d = {};

	assert_non_null(f);
	f->path = unit_write_tmp(cfg_text);
	if (config_load(f->path, &f->cfg, &d))
		unit_diag_dump(&d);
	diag_free(&d);
	assert_non_null(f->cfg);
	assert_int_equal(metrics_init(&f->m, &o), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	metrics_fini(&f->m);
	config_free(f->cfg);
	unlink(f->path);
	free(f->path);
	free(f);
	return 0;
}

static uint32_t ip(const char *s)
{
	uint32_t v;

	assert_int_equal(inet_pton(AF_INET, s, &v), 1);
	return v;
}

static char *render(struct fx *f)
{
	struct sbuf b = {};

	metrics_render_tcp(&f->m, &b, NULL, NULL);
	assert_false(b.oom);
	return b.p;
}

/* A client record of fe-1 to web-1 through the VIP: the source
 * reporter's series with Istio's canonical names and the service. */
static void test_client_labels(void **state)
{
	struct fx *f = *state;
	struct skm_conn c = {
		.tuple = { .sip = ip("10.10.1.3"), .dip = ip("10.10.1.2"), .sport = 40000,
			   .dport = 8080 },
		.orig_ip = ip("10.96.0.10"), .orig_port = htons(80),
		.flags = SKM_CONN_ACTIVE | SKM_CONN_VIA_VIP | SKM_CONN_ACCEL,
		.tx_bytes = 100, .rx_bytes = 7,
	};
	char *text;

	metrics_conn_closed(&f->m, NULL, f->cfg, &c);
	text = render(f);
	assert_non_null(strstr(text,
		"istio_tcp_received_bytes_total{reporter=\"source\",source_workload=\"fe-1\","
		"source_canonical_service=\"frontend\",source_canonical_revision=\"latest\","
		"source_workload_namespace=\"shop\",source_principal=\"spiffe://cluster.local/"
		"ns/shop/sa/fe\",source_app=\"frontend\",source_version=\"latest\","
		"source_cluster=\"Kubernetes\",destination_service=\"web.shop.svc.cluster.local\","
		"destination_service_namespace=\"shop\",destination_service_name=\"web\","
		"destination_workload=\"web-1\",destination_canonical_service=\"web\","
		"destination_canonical_revision=\"v2\",destination_workload_namespace=\"shop\","
		"destination_principal=\"spiffe://cluster.local/ns/shop/sa/web\","
		"destination_app=\"web\",destination_version=\"v2\",destination_cluster="
		"\"Kubernetes\",request_protocol=\"tcp\",response_flags=\"-\","
		"connection_security_policy=\"unknown\"} 100\n"));
	assert_non_null(strstr(text, "# TYPE istio_tcp_sent_bytes_total counter\n"));
	free(text);
}

/* The server's end: received is what it read (the request direction);
 * the plaintext peer of another node has no principal; the service is
 * found by endpoint and target port. */
static void test_server_labels(void **state)
{
	struct fx *f = *state;
	struct skm_conn c = {
		.tuple = { .sip = ip("10.10.1.2"), .dip = ip("10.10.2.2"), .sport = 8080,
			   .dport = 40001 },
		.tx_bytes = 5, .rx_bytes = 9,
	};
	struct sbuf b = {};
	char *text;

	metrics_conn_closed(&f->m, NULL, f->cfg, &c);
	text = render(f);
	mx_escape(&b, "a\"b\\c\nd");
	assert_string_equal(b.p, "a\\\"b\\\\c\\nd");
	sbuf_free(&b);
	assert_non_null(strstr(text, "istio_tcp_received_bytes_total{reporter=\"destination\","
				     "source_workload=\"db\""));
	assert_non_null(strstr(text, "source_principal=\"unknown\",source_app=\"db\""));
	assert_non_null(strstr(text, "destination_service_name=\"web\""));
	assert_non_null(strstr(text, "connection_security_policy=\"unknown\"} 9\n"));
	free(text);
}

/* Neither end a workload of this node, or tunnelled: not counted. */
static void test_not_counted(void **state)
{
	struct fx *f = *state;
	struct skm_conn c = { .tuple = { .sip = ip("10.10.2.2"), .dip = ip("10.10.1.2") },
			      .flags = SKM_CONN_ACTIVE };
	int rx;

	assert_null(metrics_conn_series(&f->m, f->cfg, &c, &rx));
	c.tuple.sip = ip("10.10.1.3");
	c.flags |= SKM_CONN_TUNNEL;
	assert_null(metrics_conn_series(&f->m, f->cfg, &c, &rx));
}

/* Beyond max_series (4) new label sets go to the overflow series; the
 * cached and uncached paths agree; counters never go back. */
static void test_cap_and_monotonic(void **state)
{
	struct fx *f = *state;
	struct mx_conn_cache *cache = calloc(1, sizeof(*cache));
	struct skm_conn c = { .tuple = { .sip = ip("10.10.1.3"), .dport = 1 },
			      .flags = SKM_CONN_ACTIVE, .tx_bytes = 1 };
	struct mx_series *s;
	char *text;
	int rx;

	assert_non_null(cache);
	static const char *const local[] = { "10.10.1.3", "10.10.1.2" };
	static const char *const peer[] = { "10.10.1.2", "10.10.1.3", "10.10.2.2" };

	/* 2 local x 3 peers x 2 roles: 12 label sets, each twice */
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 3; j++)
			for (int r = 0; r < 2; r++) {
				c.tuple.sip = ip(local[i]);
				c.tuple.dip = ip(peer[j]);
				c.flags = r ? SKM_CONN_ACTIVE : 0;
				metrics_conn_closed(&f->m, cache, f->cfg, &c);
				metrics_conn_closed(&f->m, cache, f->cfg, &c);	/* cached */
			}
	assert_int_equal(f->m.n, 4);
	text = render(f);
	/* 24 connections in all: summed over every series */
	{
		unsigned long long sum = 0, v;
		const char *p = text;

		while ((p = strstr(p, "istio_tcp_connections_closed_total{"))) {
			p = strchr(p, '}');
			assert_int_equal(sscanf(p, "} %llu", &v), 1);
			sum += v;
		}
		assert_int_equal(sum, 24);
	}
	free(text);
	/* a live part shown once and then lost does not take the counter back */
	s = metrics_conn_series(&f->m, f->cfg, &c, &rx);
	assert_non_null(s);
	text = render(f);
	free(text);
	s->shown[MX_SENT] += 1000;	/* as if a live record had shown 1000 */
	text = render(f);
	assert_non_null(strstr(text, "} 1000\n"));
	free(text);
	free(cache);
}

/* The service index follows the model, not its address: a model freed
 * and a new one made at the same place (the tunnel's models change under
 * it) must not be answered from the old one's services. Here the second
 * model is copied into the first one's place. */
static void test_index_new_model_same_address(void **state)
{
	static const char other[] =
		"apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
		"metadata: {name: api, namespace: shop}\n"
		"spec: {vip: 10.96.0.10, ports: [{port: 80, targetPort: 9090}]}\n";
	struct fx *f = *state;
	struct cfg_diag d = {};
	struct config *b = NULL, saved;
	const struct cfg_service *svc;
	char *path = unit_write_tmp(other);

	if (config_load(path, &b, &d))
		unit_diag_dump(&d);
	diag_free(&d);
	unlink(path);
	free(path);
	assert_non_null(b);
	svc = metrics_service_for(&f->m, f->cfg, ip("10.96.0.10"), 80, 1);
	assert_non_null(svc);
	assert_string_equal(svc->name, "web");
	saved = *f->cfg;
	*f->cfg = *b;
	svc = metrics_service_for(&f->m, f->cfg, ip("10.96.0.10"), 80, 1);
	assert_non_null(svc);
	assert_string_equal(svc->name, "api");
	assert_ptr_equal(svc, &b->svcs[0]);
	*f->cfg = saved;
	config_free(b);
}

static void test_parse_addr(void **state)
{
	struct sockaddr_storage ss;
	unsigned int len;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	(void)state;
	assert_int_equal(admin_parse_addr("127.0.0.1", 15000, &ss, &len), 0);
	assert_int_equal(ntohs(sin->sin_port), 15000);
	assert_int_equal(admin_parse_addr("0.0.0.0:9000", 15020, &ss, &len), 0);
	assert_int_equal(ntohs(sin->sin_port), 9000);
	assert_int_equal(admin_parse_addr(":9001", 15020, &ss, &len), 0);
	assert_int_equal(sin->sin_addr.s_addr, 0);
	assert_int_equal(admin_parse_addr("[::1]:9002", 15020, &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 9002);
	assert_int_equal(admin_parse_addr("::", 15021, &ss, &len), 0);
	assert_int_equal(ntohs(sin6->sin6_port), 15021);
	assert_int_equal(admin_parse_addr("off", 1, &ss, &len), 1);
	assert_int_equal(admin_parse_addr("10.1.2:x", 1, &ss, &len), -EINVAL);
	assert_int_equal(admin_parse_addr("1.2.3.4:70000", 1, &ss, &len), -EINVAL);
	assert_int_equal(admin_parse_addr("[::1", 1, &ss, &len), -EINVAL);
	assert_int_equal(admin_parse_addr("host.example:80", 1, &ss, &len), -EINVAL);
}

int run_metrics_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_client_labels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_labels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_counted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cap_and_monotonic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_new_model_same_address, setup, teardown),
		cmocka_unit_test(test_parse_addr),
	};

	return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
