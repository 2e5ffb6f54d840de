// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* meshd's parser of skmesh-cni's requests (agent/cnisrv.c): what the
 * plugin sends is read exactly, anything else is refused with a message
 * naming the field. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "skmesh-cni.h"
#include "cnisrv.h"
#include "unit.h"

#define ADD_HEAD "{\"version\":1,\"op\":\"add\",\"containerId\":\"c0ffee.1_a-b\"," \
		 "\"netns\":\"/var/run/netns/p1\",\"ifName\":\"eth0\","
#define POD_FIELDS "\"podNamespace\":\"shop\",\"podName\":\"web-1.a\"," \
		   "\"podUid\":\"3f1c2a9e-1b2c-4d5e-8f90-000000000001\""

static int parse(const char *s, struct cni_req *r, char *err, size_t len)
{
	return cnisrv_parse(s, strlen(s), r, err, len);
}

/* Every field of an ADD as skmesh-cni writes it; IPv6 checked but not
 * kept; order kept. */
static void test_cnisrv_add_read_exactly(void **state)
{
	static const char req[] = ADD_HEAD POD_FIELDS ",\"hostInterfaces\":[\"cni0\",\"veth12\"],"
				  "\"ips\":[\"10.1.0.5\",\"fd00::5\",\"10.1.0.6\"]}";
	struct cni_req r;
	char err[512] = "";

	assert_int_equal(parse(req, &r, err, sizeof(err)), 0);
	assert_int_equal(r.op, CNI_REQ_ADD);
	assert_string_equal(r.container_id, "c0ffee.1_a-b");
	assert_string_equal(r.netns, "/var/run/netns/p1");
	assert_string_equal(r.ifname, "eth0");
	assert_string_equal(r.pod_ns, "shop");
	assert_string_equal(r.pod_name, "web-1.a");
	assert_string_equal(r.pod_uid, "3f1c2a9e-1b2c-4d5e-8f90-000000000001");
	assert_int_equal(r.nhost_ifs, 2);
	assert_string_equal(r.host_ifs[0], "cni0");
	assert_string_equal(r.host_ifs[1], "veth12");
	assert_int_equal(r.nips, 2);
	assert_int_equal(r.ips[0], inet_addr("10.1.0.5"));
	assert_int_equal(r.ips[1], inet_addr("10.1.0.6"));
	assert_int_equal(r.from_pending, 0);
}

/* A DEL without netns, pod fields or lists (a runtime that gave none). */
static void test_cnisrv_del_bare(void **state)
{
	static const char req[] = "{\"version\":1,\"op\":\"del\",\"containerId\":\"c1\","
				  "\"netns\":\"\",\"ifName\":\"eth0\"}";
	struct cni_req r;
	char err[512] = "";

	assert_int_equal(parse(req, &r, err, sizeof(err)), 0);
	assert_int_equal(r.op, CNI_REQ_DEL);
	assert_string_equal(r.netns, "");
	assert_string_equal(r.pod_uid, "");
	assert_int_equal(r.nhost_ifs, 0);
	assert_int_equal(r.nips, 0);
}

static void expect_refused(const char *req, int rc, const char *needle)
{
	struct cni_req r;
	char err[512] = "";

	assert_int_equal(cnisrv_parse(req, strlen(req), &r, err, sizeof(err)), rc);
	if (!strstr(err, needle)) {
		fprintf(stderr, "# err: %s (wanted %s)\n# for: %.200s\n", err, needle, req);
		fail();
	}
	/* nothing half-filled is left behind */
	assert_string_equal(r.container_id, "");
	assert_int_equal(r.op, 0);
}

static void test_cnisrv_refusals(void **state)
{
	char big[SKM_CNI_MSG_MAX + 64], *p;

	expect_refused("", -EINVAL, "not JSON");
	expect_refused("[1]", -EINVAL, "not a JSON object");
	expect_refused("{\"op\":\"add\"}", -EINVAL, "\"version\" is missing");
	expect_refused("{\"version\":2,\"op\":\"add\"}", -EPROTONOSUPPORT, "version 2 is not supported");
	expect_refused("{\"version\":\"1\"}", -EINVAL, "not an integer");
	expect_refused(ADD_HEAD POD_FIELDS ",\"hostInterfaces\":[],\"ips\":[],\"x\":1}", -EINVAL,
		       "unknown field \"x\"");
	expect_refused(ADD_HEAD POD_FIELDS ",\"ips\":[],\"ips\":[]}", -EINVAL, "not JSON");
	expect_refused("{\"version\":1,\"op\":\"ADD\"}", -EINVAL, "\"op\" must be");
	expect_refused("{\"version\":1,\"op\":\"add\",\"containerId\":\"../x\"}", -EINVAL,
		       "containerId \"../x\"");
	expect_refused("{\"version\":1,\"op\":\"add\",\"containerId\":\"a\\u0000b\"}", -EINVAL,
		       "\\u0000 is not allowed");
	expect_refused("{\"version\":1,\"op\":\"add\",\"containerId\":\"a\",\"netns\":\"\","
		       "\"ifName\":\"eth0\"}", -EINVAL, "\"\" only for del");
	expect_refused("{\"version\":1,\"op\":\"add\",\"containerId\":\"a\",\"netns\":\"/a/../b\","
		       "\"ifName\":\"eth0\"}", -EINVAL, "netns \"/a/../b\"");
	expect_refused("{\"version\":1,\"op\":\"add\",\"containerId\":\"a\",\"netns\":\"/n\","
		       "\"ifName\":\"a/b\"}", -EINVAL, "ifName \"a/b\"");
	expect_refused(ADD_HEAD "\"podNamespace\":\"shop\",\"hostInterfaces\":[],\"ips\":[]}",
		       -EINVAL, "go together");
	expect_refused(ADD_HEAD "\"hostInterfaces\":[],\"ips\":[]}", -EINVAL,
		       "add needs podNamespace");
	expect_refused(ADD_HEAD "\"podNamespace\":\"Shop\",\"podName\":\"a\",\"podUid\":\"u\"" "}",
		       -EINVAL, "podNamespace \"Shop\"");
	expect_refused(ADD_HEAD "\"podNamespace\":\"a\",\"podName\":\"a..b\",\"podUid\":\"u\"" "}",
		       -EINVAL, "podName \"a..b\"");
	expect_refused(ADD_HEAD "\"podNamespace\":\"a\",\"podName\":\"a\",\"podUid\":\"u/1\"" "}",
		       -EINVAL, "podUid \"u/1\"");
	expect_refused(ADD_HEAD POD_FIELDS "}", -EINVAL, "needs \"hostInterfaces\" and \"ips\"");
	expect_refused(ADD_HEAD POD_FIELDS ",\"hostInterfaces\":[\"a\",\"b\",\"c\",\"d\",\"e\","
		       "\"f\",\"g\",\"h\",\"i\"],\"ips\":[]}", -EINVAL, "at most 8");
	expect_refused(ADD_HEAD POD_FIELDS ",\"hostInterfaces\":[7],\"ips\":[]}", -EINVAL,
		       "hostInterfaces[0]");
	expect_refused(ADD_HEAD POD_FIELDS ",\"hostInterfaces\":[],\"ips\":[\"10.0.0.1/24\"]}",
		       -EINVAL, "ips[0] \"10.0.0.1/24\"");
	expect_refused(ADD_HEAD POD_FIELDS ",\"hostInterfaces\":[],\"ips\":[\"1.1.1.1\",\"1.1.1.2\","
		       "\"1.1.1.3\",\"1.1.1.4\",\"1.1.1.5\",\"1.1.1.6\",\"1.1.1.7\",\"1.1.1.8\","
		       "\"1.1.1.9\"]}", -EINVAL, "more than 8 IPv4");
	expect_refused(ADD_HEAD POD_FIELDS ",\"hostInterfaces\":{},\"ips\":[]}", -EINVAL,
		       "must be an array");
	/* over SKM_CNI_MSG_MAX: refused before any parsing */
	p = big;
	p += sprintf(p, "%s", ADD_HEAD POD_FIELDS ",\"hostInterfaces\":[],\"ips\":[],\"pad\":\"");
	memset(p, 'a', sizeof(big) - (size_t)(p - big) - 3);
	strcpy(big + sizeof(big) - 3, "\"}");
	expect_refused(big, -EINVAL, "larger than");
}

int run_cnisrv_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cnisrv_add_read_exactly),
		cmocka_unit_test(test_cnisrv_del_bare),
		cmocka_unit_test(test_cnisrv_refusals),
	};

	return cmocka_run_group_tests_name("cnisrv", tests, NULL, NULL);
}
