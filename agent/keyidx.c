// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keyidx.h"

static uint64_t fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

static long slot_of(const struct keyidx *ix, const void *key, size_t len)
{
	size_t mask = ix->cap - 1, i;

	for (i = fnv1a(key, len) & mask; ix->keys[i]; i = (i + 1) & mask)
		if (ix->lens[i] == len && !memcmp(ix->keys[i], key, len))
			return (long)i;
	return -(long)i - 1;	/* free slot, encoded */
}

long keyidx_get(const struct keyidx *ix, const void *key, size_t len)
{
	long s;

	if (!ix->cap)
		return -1;
	s = slot_of(ix, key, len);
	return s >= 0 ? (long)ix->vals[s] : -1;
}

static int grow(struct keyidx *ix)
{
	struct keyidx big = { .cap = ix->cap ? ix->cap * 2 : 64 };

	big.keys = calloc(big.cap, sizeof(*big.keys));
	big.lens = calloc(big.cap, sizeof(*big.lens));
	big.vals = calloc(big.cap, sizeof(*big.vals));
	if (!big.keys || !big.lens || !big.vals) {
		free(big.keys);
		free(big.lens);
		free(big.vals);
		return -1;
	}
	for (size_t i = 0; i < ix->cap; i++) {
		long s;

		if (!ix->keys[i])
			continue;
		s = -slot_of(&big, ix->keys[i], ix->lens[i]) - 1;
		big.keys[s] = ix->keys[i];
		big.lens[s] = ix->lens[i];
		big.vals[s] = ix->vals[i];
	}
	big.n = ix->n;
	free(ix->keys);
	free(ix->lens);
	free(ix->vals);
	*ix = big;
	return 0;
}

long keyidx_put(struct keyidx *ix, const void *key, size_t len, size_t val)
{
	long s;
	char *copy;

	if ((ix->n + 1) * 2 > ix->cap && grow(ix))
		return -1;
	s = slot_of(ix, key, len);
	if (s >= 0)
		return (long)ix->vals[s];
	s = -s - 1;
	copy = malloc(len ? len : 1);
	if (!copy)
		return -1;
	memcpy(copy, key, len);
	ix->keys[s] = copy;
	ix->lens[s] = len;
	ix->vals[s] = val;
	ix->n++;
	return (long)val;
}

int keyidx_set(struct keyidx *ix, const void *key, size_t len, size_t val)
{
	long s;

	if (keyidx_put(ix, key, len, val) < 0)
		return -1;
	s = slot_of(ix, key, len);
	ix->vals[s] = val;
	return 0;
}

void keyidx_free(struct keyidx *ix)
{
	for (size_t i = 0; i < ix->cap; i++)
		free(ix->keys[i]);
	free(ix->keys);
	free(ix->lens);
	free(ix->vals);
	memset(ix, 0, sizeof(*ix));
}
