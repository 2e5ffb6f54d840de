/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reconcile: the desired state of a valid config is diffed against what the
 * maps hold, and only the differences are written (each destination's
 * policy tables come finished from policy_compile.h). A service's backends
 * are replaced as a whole (new set, one switch of the service entry, then
 * the old set deleted), so no connect() ever sees a half-written set.
 */
#ifndef SKM_RECONCILE_H
#define SKM_RECONCILE_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct loader;

struct reconcile_stats {
	unsigned int writes;	/* map entries written */
	unsigned int deletes;	/* map entries deleted */
	unsigned int tc_attached;
	unsigned int tc_missing;	/* local workloads without a veth yet */
	unsigned int policies_compiled;	/* destinations whose policy changed */
	unsigned int revoked;	/* live connections closed: now denied */
	int revoke_failed;	/* some could not be closed (logged) */
};

int reconcile(struct loader *l, const struct config *cfg, const char *node,
	      struct reconcile_stats *st);

/* Removes backend slots no service refers to (left by a crash between
 * writing a set and switching to it). */
int reconcile_gc_backends(struct loader *l);
/* Removes policy entries no workload's pol_set refers to. */
int reconcile_gc_policy(struct loader *l);
/* Frees what reconcile keeps between calls. */
void reconcile_release(struct loader *l);

/* Weighted slot table: fills SLOTS (room for MAX) with endpoint indexes in
 * proportion to WEIGHTS; returns the slot count (0: nothing to pick). */
unsigned int build_slots(const uint32_t *weights, unsigned int n,
			 uint32_t *slots, unsigned int max);

/* The node-side interface of a local pod: the route to its IP. */
int pod_ifindex(uint32_t ip, char *ifname, size_t len);

#endif /* SKM_RECONCILE_H */
