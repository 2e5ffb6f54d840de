// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The Kubernetes client's config: kubeconfig and in-cluster (agent/kube.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "kube.h"
#include "unit.h"

/* "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" */
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="

static const char good[] =
	"apiVersion: v1\n"
	"kind: Config\n"
	"current-context: test\n"
	"contexts:\n"
	"- name: other\n"
	"  context: {cluster: nowhere, user: nobody}\n"
	"- name: test\n"
	"  context: {cluster: c1, user: u1}\n"
	"clusters:\n"
	"- name: c1\n"
	"  cluster:\n"
	"    server: https://127.0.0.1:6443\n"
	"    certificate-authority-data: " CA_B64 "\n"
	"users:\n"
	"- name: u1\n"
	"  user: {token: abc.def-ghi}\n";

static void test_kubeconfig_good(void **state)
{
	char *path = unit_write_tmp(good), err[512] = "";
	struct kube_client *c = kube_client_kubeconfig(path, err, sizeof(err));

	(void)state;
	if (!c)
		fail_msg("refused: %s", err);
	assert_string_equal(kube_client_server(c), "https://127.0.0.1:6443");
	kube_client_free(c);
	unlink(path);
	free(path);
}

static void test_kubeconfig_refused(void **state)
{
	static const struct {
		const char *from, *to, *why;
	} cases[] = {
		{ "current-context: test\n", "", "no current-context" },
		{ "https://127.0.0.1:6443", "http://127.0.0.1:6443", "no https:// server" },
		{ "    certificate-authority-data: " CA_B64 "\n", "", "names no certificate-authority" },
		{ "    certificate-authority-data: " CA_B64 "\n",
		  "    certificate-authority: does-not-exist.pem\n", "does-not-exist.pem" },
		{ CA_B64, "!!notbase64", "is not base64" },
		{ "  user: {token: abc.def-ghi}\n", "  user: {}\n", "has no token, tokenFile or client" },
		{ "{cluster: c1, user: u1}", "{cluster: c1}", "has no cluster and user" },
		{ "abc.def-ghi", "\"two words\"", "not printable" },
		{ "kind: Config\n", "kind: [Config\n", "kubeconfig" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[sizeof(good) + 256], err[512] = "", *path;
		const char *at = strstr(good, cases[i].from);
		struct kube_client *c;

		assert_non_null(at);
		snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - good), good, cases[i].to,
			 at + strlen(cases[i].from));
		path = unit_write_tmp(text);
		c = kube_client_kubeconfig(path, err, sizeof(err));
		if (c || !strstr(err, cases[i].why))
			fail_msg("case %zu: %s, '%s'", i, c ? "accepted" : "refused", err);
		unlink(path);
		free(path);
	}
}

static void test_incluster(void **state)
{
	char dir[] = "/tmp/skm-unit-sa-XXXXXX", path[64], err[512] = "";
	struct kube_client *c;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	unsetenv("KUBERNETES_SERVICE_HOST");
	assert_null(kube_client_incluster(dir, err, sizeof(err)));
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_null(kube_client_incluster(dir, err, sizeof(err)));
	assert_non_null(strstr(err, "service account token"));
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	f = fopen(path, "w");
	fputs("x", f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/token", dir);
	f = fopen(path, "w");
	fputs("tok\n", f);
	fclose(f);
	c = kube_client_incluster(dir, err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(kube_client_server(c), "https://10.96.0.1:443");
	kube_client_free(c);
	unsetenv("KUBERNETES_SERVICE_HOST");
	unsetenv("KUBERNETES_SERVICE_PORT");
	unlink(path);
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	unlink(path);
	rmdir(dir);
}

int run_kube_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kubeconfig_good),
		cmocka_unit_test(test_kubeconfig_refused),
		cmocka_unit_test(test_incluster),
	};

	return cmocka_run_group_tests_name("kube", tests, NULL, NULL);
}
