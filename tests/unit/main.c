// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The one main of build/tests/unit_tests: every group, and the helpers
 * the groups share. Exit status: non-zero when any test failed. */
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
#include "unit.h"

char *unit_write_tmp(const char *text)
{
	char *path = strdup("/tmp/skm-unit-XXXXXX.yaml");
	int fd;

	assert_non_null(path);
	fd = mkstemps(path, 5);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

int unit_diag_has(const struct cfg_diag *d, const char *needle)
{
	for (size_t i = 0; i < d->n; i++)
		if (strstr(d->msgs[i], needle))
			return 1;
	return 0;
}

void unit_diag_dump(const struct cfg_diag *d)
{
	for (size_t i = 0; i < d->n; i++)
		fprintf(stderr, "# diag: %s\n", d->msgs[i]);
}

int main(void)
{
	int failed = 0;

	failed += run_config_tests() != 0;
	failed += run_model_tests() != 0;
	failed += run_policy_tests() != 0;
	failed += run_corpus_tests() != 0;
	failed += run_certs_tests() != 0;
	failed += run_metrics_tests() != 0;
	failed += run_hbone_tests() != 0;
	failed += run_kwatch_tests() != 0;
	failed += run_kube_tests() != 0;
	failed += run_cni_tests() != 0;
	failed += run_cnisrv_tests() != 0;
	failed += run_podscan_tests() != 0;
	failed += run_ksource_tests() != 0;
	failed += run_grpc_tests() != 0;
	failed += run_caclient_tests() != 0;
	failed += run_csr_tests() != 0;
	failed += run_ca_conn_tests() != 0;
	return failed ? 1 : 0;
}
