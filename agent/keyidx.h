/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * keyidx: a small open-addressing index from byte-string keys to array
 * positions, so cross-document checks stay linear at 10k objects.
 */
#ifndef SKM_KEYIDX_H
#define SKM_KEYIDX_H

#include <stddef.h>

struct keyidx {
	char **keys;		/* owned copies, NUL-free lengths in lens */
	size_t *lens;
	size_t *vals;
	size_t cap;		/* power of two; 0 when empty */
	size_t n;
};

/* Position stored for KEY, or -1. */
long keyidx_get(const struct keyidx *ix, const void *key, size_t len);
/* Stores VAL for KEY unless KEY is there already; returns the position
 * stored for KEY (VAL when new), or -1 when out of memory. */
long keyidx_put(struct keyidx *ix, const void *key, size_t len, size_t val);
/* Stores VAL for KEY, replacing what was there; 0, or -1 when out of
 * memory. */
int keyidx_set(struct keyidx *ix, const void *key, size_t len, size_t val);
void keyidx_free(struct keyidx *ix);

#endif /* SKM_KEYIDX_H */
