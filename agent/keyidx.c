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

/* The slot of KEY (HASH its hash), or the free slot where it would go,
 * encoded as -slot - 1. */
static long slot_of(const struct keyidx *ix, const void *key, size_t len, uint64_t hash)
{
	size_t mask = ix->cap - 1, i;

	for (i = hash & mask; ix->slots[i].off; i = (i + 1) & mask) {
		const struct keyidx_slot *s = &ix->slots[i];

		if (s->hash == hash && s->len == len && !memcmp(ix->pool + s->off - 1, key, len))
			return (long)i;
	}
	return -(long)i - 1;
}

long keyidx_get(const struct keyidx *ix, const void *key, size_t len)
{
	long s;

	if (!ix->cap)
		return -1;
	s = slot_of(ix, key, len, fnv1a(key, len));
	return s >= 0 ? (long)ix->slots[s].val : -1;
}

static int rehash(struct keyidx *ix, size_t cap)
{
	struct keyidx_slot *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -1;
	for (size_t i = 0; i < ix->cap; i++) {
		size_t j;

		if (!ix->slots[i].off)
			continue;
		for (j = ix->slots[i].hash & (cap - 1); slots[j].off; j = (j + 1) & (cap - 1))
			;
		slots[j] = ix->slots[i];
	}
	free(ix->slots);
	ix->slots = slots;
	ix->cap = cap;
	return 0;
}

static int pool_room(struct keyidx *ix, size_t more)
{
	size_t cap = ix->pool_cap ? ix->pool_cap : 1024;
	char *p;

	if (ix->pool && ix->pool_len + more <= ix->pool_cap)
		return 0;
	while (cap < ix->pool_len + more)
		cap *= 2;
	if (!(p = realloc(ix->pool, cap)))
		return -1;
	ix->pool = p;
	ix->pool_cap = cap;
	return 0;
}

int keyidx_reserve(struct keyidx *ix, size_t n, size_t keybytes)
{
	size_t cap = ix->cap ? ix->cap : 64;

	while ((ix->n + n) * 2 > cap)
		cap *= 2;
	if (cap != ix->cap && rehash(ix, cap))
		return -1;
	return pool_room(ix, keybytes);
}

long keyidx_put(struct keyidx *ix, const void *key, size_t len, size_t val)
{
	uint64_t hash = fnv1a(key, len);
	struct keyidx_slot *s;
	long i;

	if ((ix->n + 1) * 2 > ix->cap && rehash(ix, ix->cap ? ix->cap * 2 : 64))
		return -1;
	i = slot_of(ix, key, len, hash);
	if (i >= 0)
		return (long)ix->slots[i].val;
	if (pool_room(ix, len))
		return -1;
	memcpy(ix->pool + ix->pool_len, key, len);
	s = &ix->slots[-i - 1];
	s->hash = hash;
	s->off = ix->pool_len + 1;
	s->len = len;
	s->val = val;
	ix->pool_len += len;
	ix->n++;
	return (long)val;
}

int keyidx_set(struct keyidx *ix, const void *key, size_t len, size_t val)
{
	long i;

	if (keyidx_put(ix, key, len, val) < 0)
		return -1;
	i = slot_of(ix, key, len, fnv1a(key, len));
	ix->slots[i].val = val;
	return 0;
}

void keyidx_free(struct keyidx *ix)
{
	free(ix->slots);
	free(ix->pool);
	memset(ix, 0, sizeof(*ix));
}
