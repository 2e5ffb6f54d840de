/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel's policy tables, compiled from the evaluator (policy.h): for
 * one local destination, the skm_verdicts entries (a verdict per known
 * source pod and port class) and the skm_plain entries (a plaintext
 * verdict per source CIDR class and port class). Reconcile hands each
 * destination's finished tables to the maps; nothing here touches the
 * kernel.
 */
#ifndef SKM_POLICY_COMPILE_H
#define SKM_POLICY_COMPILE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

struct skm_verdict_key;
struct skm_verdict;
struct skm_plain_key;

/* A local pod connect4 knows, with its skm_workloads id. */
struct policy_src {
	uint32_t wl_id;
	const struct cfg_workload *w;
};

/* The tables of one destination, pol_set left 0 in every key. */
struct policy_tables {
	struct skm_verdict_key *vkeys;	/* skm_verdicts */
	struct skm_verdict *vvals;
	size_t nv;
	struct skm_plain_key *pkeys;	/* skm_plain */
	struct skm_verdict *pvals;
	size_t np;
};

/* How a verdict's reason becomes the id it carries (skm_names): INTERN
 * gets the deciding policy ("ns/name", or "-") and the why ("deny: DENY
 * rule 0", ...) and sets *ID; it returns 0 or a negative errno. */
struct policy_reasons {
	int (*intern)(void *arg, const char *policy, const char *why, uint32_t *id);
	void *arg;
};

/*
 * Compiles the tables of local destination W against sources SRCS, with
 * reason ids from REASONS (NULL: every reason_id 0). Returns 0 or a
 * negative errno; free OUT with policy_tables_free() (also on error).
 */
int policy_tables_build(const struct config *cfg, const struct cfg_workload *w,
			const struct policy_src *srcs, size_t nsrcs,
			const struct policy_reasons *reasons, struct policy_tables *out);
/* The same without reason ids: for tests that check the tables against
 * policy_eval(). */
int policy_tables_compile(const struct config *cfg, const struct cfg_workload *w,
			  const struct policy_src *srcs, size_t nsrcs,
			  struct policy_tables *out);
void policy_tables_free(struct policy_tables *t);

#endif /* SKM_POLICY_COMPILE_H */
