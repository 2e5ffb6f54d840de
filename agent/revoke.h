/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Closing the established connections a policy change now denies
 * (revoke.c).
 */
#ifndef SKM_REVOKE_H
#define SKM_REVOKE_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct loader;

/*
 * Judges again, against CFG, the live connections to the local workloads
 * at DSTS (network order; sorted in place) that the kernel judged (not
 * tunnelled), and closes the denied ones. *CLOSED: how many were closed.
 * Returns 0, or -errno when some could not be (said in the log).
 */
int revoke_denied(struct loader *l, const struct config *cfg, const char *node,
		  uint32_t *dsts, size_t ndsts, unsigned int *closed);

#endif /* SKM_REVOKE_H */
