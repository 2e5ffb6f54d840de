// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* skmesh-cni's input checks (cni/cni.c): what is accepted is read exactly,
 * what is refused gets the spec's code. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "../../cni/cni.h"
#include "unit.h"

#define POD "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1.a;K8S_POD_UID=1234-abcd"

static struct cni_env env(const char *cmd, const char *args)
{
	return (struct cni_env){ .command = cmd, .containerid = "c1", .netns = "/run/netns/p",
				 .ifname = "eth0", .args = args, .path = "/opt/cni/bin" };
}

static int parse(struct cni_env e, const char *conf, struct cni_call *c, struct cni_err *err)
{
	return cni_parse(&e, conf, strlen(conf), c, err);
}

static const char prev_conf[] =
	"{\"cniVersion\":\"1.0.0\",\"name\":\"net\",\"type\":\"skmesh-cni\",\"prevResult\":"
	"{\"interfaces\":[{\"name\":\"br0\"},{\"name\":\"veth1\",\"sandbox\":\"\"},"
	"{\"name\":\"eth0\",\"sandbox\":\"/run/netns/p\"}],"
	"\"ips\":[{\"address\":\"10.1.0.5/24\",\"interface\":2},"
	"{\"address\":\"fd00:0:0::0005/64\",\"interface\":2}]}}";

/* CNI_ARGS with empty pairs and other keys; the pod's names read exactly;
 * interfaces with an empty sandbox are the host's; addresses normalized. */
static void test_cni_add_reads_pod(void **state)
{
	struct cni_call c;
	struct cni_err e;
	char *s;

	assert_int_equal(parse(env("ADD", ";IgnoreUnknown=1;;" POD ";X=y=z;"), prev_conf, &c, &e), 0);
	assert_true(c.k8s);
	assert_string_equal(c.pod_ns, "shop");
	assert_string_equal(c.pod_name, "web-1.a");
	assert_string_equal(c.pod_uid, "1234-abcd");
	assert_int_equal(c.ack_timeout_ms, 10000);
	s = json_dumps(c.host_ifs, JSON_COMPACT);
	assert_string_equal(s, "[\"br0\",\"veth1\"]");
	free(s);
	s = json_dumps(c.ips, JSON_COMPACT);
	assert_string_equal(s, "[\"10.1.0.5\",\"fd00::5\"]");
	free(s);
	cni_call_free(&c);
}

/* No K8S args: not a pod, accepted, nothing named. */
static void test_cni_no_pod(void **state)
{
	struct cni_call c;
	struct cni_err e;

	assert_int_equal(parse(env("ADD", NULL), prev_conf, &c, &e), 0);
	assert_false(c.k8s);
	cni_call_free(&c);
}

/* DEL needs neither prevResult nor CNI_NETNS. */
static void test_cni_del_lenient(void **state)
{
	struct cni_env en = env("DEL", NULL);
	struct cni_call c;
	struct cni_err e;
	json_t *r;

	en.netns = NULL;
	assert_int_equal(parse(en, "{\"cniVersion\":\"0.3.1\",\"name\":\"n\",\"type\":\"t\"}",
			       &c, &e), 0);
	assert_string_equal(c.netns, "");
	r = cni_request(&c);
	assert_string_equal(json_string_value(json_object_get(r, "op")), "del");
	assert_null(json_object_get(r, "podName"));
	json_decref(r);
	cni_call_free(&c);
}

static void expect_code(const char *cmd, const char *args, const char *conf, int code,
			const char *needle)
{
	struct cni_call c;
	struct cni_err e;

	assert_int_equal(parse(env(cmd, args), conf, &c, &e), code);
	if (!strstr(e.msg, needle)) {
		fprintf(stderr, "# msg: %s (wanted %s)\n", e.msg, needle);
		fail();
	}
	cni_call_free(&c);
}

static void test_cni_refusals(void **state)
{
	static const char base[] = "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\",";

	expect_code("ADD", POD, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\"}", 7,
		    "no prevResult");
	expect_code("ADD", POD, "{\"cniVersion\":\"0.2.0\",\"name\":\"n\",\"type\":\"t\"}", 1,
		    "0.2.0");
	expect_code("ADD", POD, "{\"cniVersion\":1}", 7, "cniVersion");
	expect_code("ADD", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;K8S_POD_UID=c;K8S_POD_UID=d",
		    prev_conf, 4, "twice");
	expect_code("ADD", "K8S_POD_NAMESPACE=-a;K8S_POD_NAME=b;K8S_POD_UID=c", prev_conf, 4,
		    "K8S_POD_NAMESPACE");
	expect_code("ADD", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b..c;K8S_POD_UID=c", prev_conf, 4,
		    "K8S_POD_NAME");
	expect_code("ADD", "novalue", prev_conf, 4, "KEY=VALUE");
	{
		char conf[512];

		snprintf(conf, sizeof(conf), "%s\"prevResult\":{\"ips\":[{\"address\":\"10.0.0.1\"}]}}",
			 base);
		expect_code("ADD", POD, conf, 7, "ADDRESS/PREFIX");
		snprintf(conf, sizeof(conf), "%s\"prevResult\":{\"ips\":[{\"address\":\"::1/129\"}]}}",
			 base);
		expect_code("ADD", POD, conf, 7, "ADDRESS/PREFIX");
		snprintf(conf, sizeof(conf), "%s\"prevResult\":{\"interfaces\":[{\"name\":"
			 "\"0123456789abcdef\"}]}}", base);
		expect_code("ADD", POD, conf, 7, "interfaces[0]");
		snprintf(conf, sizeof(conf), "%s\"prevResult\":[]}", base);
		expect_code("DEL", POD, conf, 7, "prevResult");
		snprintf(conf, sizeof(conf), "%s\"pendingDir\":\"/a/../b\",\"prevResult\":{}}", base);
		expect_code("ADD", POD, conf, 7, "pendingDir");
		snprintf(conf, sizeof(conf), "%s\"ackTimeoutMs\":1.5,\"prevResult\":{}}", base);
		expect_code("ADD", POD, conf, 7, "ackTimeoutMs");
	}
}

int run_cni_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cni_add_reads_pod),
		cmocka_unit_test(test_cni_no_pod),
		cmocka_unit_test(test_cni_del_lenient),
		cmocka_unit_test(test_cni_refusals),
	};

	return cmocka_run_group_tests_name("cni", tests, NULL, NULL);
}
