/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * keyidx: a small open-addressing index from byte-string keys to array
 * positions, so cross-document checks stay linear at 10k objects. Keys are
 * copied into one pool, so an index costs a few allocations, not one per
 * key.
 */
#ifndef SKM_KEYIDX_H
#define SKM_KEYIDX_H

#include <stddef.h>
#include <stdint.h>

struct keyidx_slot {
	uint64_t hash;
	size_t off;		/* of the key in the pool, + 1; 0: empty */
	size_t len;
	size_t val;
};

struct keyidx {
	struct keyidx_slot *slots;
	size_t cap;		/* power of two; 0 when empty */
	size_t n;
	char *pool;		/* the keys, one after the other */
	size_t pool_len, pool_cap;
};

/* Position stored for KEY, or -1. */
long keyidx_get(const struct keyidx *ix, const void *key, size_t len);
/* Stores VAL for KEY unless KEY is there already; returns the position
 * stored for KEY (VAL when new), or -1 when out of memory. */
long keyidx_put(struct keyidx *ix, const void *key, size_t len, size_t val);
/* Stores VAL for KEY, replacing what was there; 0, or -1 when out of
 * memory. */
int keyidx_set(struct keyidx *ix, const void *key, size_t len, size_t val);
/* Makes room for N keys (of KEYBYTES bytes in all) at once: 0 or -1. */
int keyidx_reserve(struct keyidx *ix, size_t n, size_t keybytes);
void keyidx_free(struct keyidx *ix);

#endif /* SKM_KEYIDX_H */
