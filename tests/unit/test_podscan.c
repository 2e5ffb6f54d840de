// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* meshd's /proc scan for running pods (agent/podscan.c): which cgroup
 * paths name a pod, and which UID; and the scan over a /proc-like folder
 * of made-up processes. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "podscan.h"
#include "unit.h"

#define U1 "3f1c2a9e-1b2c-4d5e-8f90-000000000001"
#define U1_ "3f1c2a9e_1b2c_4d5e_8f90_000000000001"

static void expect_uid(const char *path, const char *want)
{
	char uid[65] = "";
	int got = podscan_uid_of_path(path, uid, sizeof(uid));

	if (got != (want != NULL) || (want && strcmp(uid, want))) {
		fprintf(stderr, "# path %s: got %d \"%s\", wanted %s\n", path, got, uid,
			want ? want : "(none)");
		fail();
	}
}

static void test_podscan_paths(void **state)
{
	/* cgroupfs driver, with and without a QoS folder, nested in a node */
	expect_uid("/kubepods/burstable/pod" U1 "/0123abcd", U1);
	expect_uid("/kubepods/pod" U1, U1);
	expect_uid("/docker/abc/kubepods/besteffort/pod" U1 "/c1", U1);
	expect_uid("/kubepods/podab12/c", "ab12");
	/* systemd driver: underscores are the UID's dashes */
	expect_uid("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" U1_
		   ".slice/cri-containerd-0123.scope", U1);
	expect_uid("/kubepods.slice/kubepods-pod" U1_ ".slice", U1);
	expect_uid("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
		   "kubelet-kubepods-besteffort-pod" U1_ ".slice/x.scope", U1);
	/* no pod: not below kubepods, a QoS folder only, empty or bad UIDs */
	expect_uid("/", NULL);
	expect_uid("", NULL);
	expect_uid("/user.slice/pod" U1, NULL);
	expect_uid("/system.slice/podman.service", NULL);
	expect_uid("/kubepods/besteffort", NULL);
	expect_uid("/kubepods/pod", NULL);
	expect_uid("/kubepods/pod/x", NULL);
	expect_uid("/kubepods/pod12$34", NULL);
	expect_uid("/kubepods/pod12_34", NULL);
	expect_uid("/kubepods.slice/kubepods-burstable.slice", NULL);
	expect_uid("/kubepods.slice/kubepods-burstable-pod.slice", NULL);
	expect_uid("/kubepods.slice/kubepods-pod" U1_ "-x.slice", NULL);
	expect_uid("/kubepods/pod"
		   "0123456789012345678901234567890123456789012345678901234567890123456789", NULL);
	expect_uid("/system.slice/pod-" U1_ ".slice", NULL);
}

static void mkfile(const char *dir, const char *pid, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, pid);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/%s/cgroup", dir, pid);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* A /proc-like folder: pods found by their cgroup line whatever the
 * hierarchy (v1 lines too); a process with no namespace file is never a
 * pod's; an unknown UID finds nothing. */
static void test_podscan_fake_proc(void **state)
{
	char dir[] = "/tmp/skm-unit-proc-XXXXXX", out[256];
	struct podscan *ps;
	uint32_t ip = 0x0100000a;

	assert_non_null(mkdtemp(dir));
	mkfile(dir, "100", "0::/kubepods/pod" U1 "/c1\n");
	mkfile(dir, "42", "12:memory:/kubepods/burstable/pod" U1 "/c2\n0::/\n");
	mkfile(dir, "7", "0::/system.slice/sshd.service\n");
	mkfile(dir, "self", "0::/kubepods/pod" U1 "\n");	/* not a pid */
	assert_int_equal(podscan_open(dir, &ps), 0);
	assert_int_equal(podscan_count(ps), 2);
	assert_int_equal(podscan_find(ps, U1, &ip, 1, out, sizeof(out)), -ENOENT);
	assert_int_equal(podscan_find(ps, "nope", &ip, 1, out, sizeof(out)), -ENOENT);
	podscan_free(ps);
	assert_int_equal(podscan_open("/nonexistent-skm-proc", &ps), -ENOENT);
	assert_int_equal(system(NULL) >= 0, 1);
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
}

int run_podscan_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_podscan_paths),
		cmocka_unit_test(test_podscan_fake_proc),
	};

	return cmocka_run_group_tests_name("podscan", tests, NULL, NULL);
}
