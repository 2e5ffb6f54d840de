/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The unit test binary: one main (main.c) runs each file's group. */
#ifndef SKM_UNIT_H
#define SKM_UNIT_H

#include <stddef.h>

struct cfg_diag;
struct config;

/* Each returns cmocka_run_group_tests()'s result: 0 when all passed. */
int run_config_tests(void);
int run_model_tests(void);
int run_policy_tests(void);
int run_corpus_tests(void);
int run_certs_tests(void);
int run_metrics_tests(void);
int run_hbone_tests(void);
int run_kwatch_tests(void);
int run_ksource_tests(void);
int run_kube_tests(void);
int run_cni_tests(void);
int run_cnisrv_tests(void);
int run_podscan_tests(void);
int run_grpc_tests(void);
int run_caclient_tests(void);
int run_csr_tests(void);
int run_ca_conn_tests(void);

/* Writes TEXT to a new /tmp/skm-unit-*.yaml file; returns its path
 * (malloc'ed). */
char *unit_write_tmp(const char *text);
/* Whether a message of D contains NEEDLE. */
int unit_diag_has(const struct cfg_diag *d, const char *needle);
/* Prints every message of D to stderr as "# diag: ..." lines. */
void unit_diag_dump(const struct cfg_diag *d);

#endif /* SKM_UNIT_H */
