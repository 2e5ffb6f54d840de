// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/msg.h>
#include <netlink/attr.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader.h"
#include "log.h"
#include "model.h"
#include "netns.h"
#include "policy.h"
#include "policy_compile.h"
#include "reconcile.h"
#include "revoke.h"
#include "skmesh.h"
#include "skmesh.skel.h"

/* --- weighted slot table -------------------------------------------- */

unsigned int build_slots(const uint32_t *weights, unsigned int n,
			 uint32_t *slots, unsigned int max)
{
	uint64_t total = 0;
	unsigned int live = 0, k = 0;

	for (unsigned int i = 0; i < n; i++) {
		total += weights[i];
		live += weights[i] > 0;
	}
	if (!total)
		return 0;
	if (total <= max) {
		for (unsigned int i = 0; i < n; i++)
			for (uint32_t w = 0; w < weights[i]; w++)
				slots[k++] = i;
		return k;
	}
	if (live >= max) {
		/* More backends than slots: one each (max is a soft cap). */
		for (unsigned int i = 0; i < n && k < max; i++)
			if (weights[i])
				slots[k++] = i;
		return k;
	}
	/* Scale to MAX slots: every live backend keeps at least one, the
	 * rest shared in proportion to weight (floor). */
	for (unsigned int i = 0; i < n; i++) {
		uint64_t share;

		if (!weights[i])
			continue;
		share = (uint64_t)weights[i] * (max - live) / total + 1;
		for (uint64_t s = 0; s < share && k < max; s++)
			slots[k++] = i;
	}
	return k;
}

/* --- generic diff of one hash map ------------------------------------- */

/* The desired content of a map, as parallel arrays of keys and values,
 * with an open-addressing index so lookups stay O(1) at 100k entries. */
struct want {
	void *keys;
	void *vals;
	size_t n;
	size_t room;		/* entries the arrays hold */
	size_t ksz, vsz;
	uint32_t *idx;		/* slot -> entry index + 1, 0 = empty */
	size_t cap;		/* power of two, > 2n */
};

/* Eight bytes a step: keys such as names (132 bytes) are hashed on every
 * lookup, tens of thousands of times a reconcile. */
static uint64_t hash_bytes(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;

	for (; n >= 8; b += 8, n -= 8) {
		memcpy(&w, b, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 31;
	}
	if (n) {
		w = 0;
		memcpy(&w, b, n);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
	}
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 33);
}

static ssize_t want_find(const struct want *w, const void *k)
{
	size_t mask = w->cap - 1, i;

	if (!w->cap)
		return -1;
	for (i = hash_bytes(k, w->ksz) & mask; w->idx[i]; i = (i + 1) & mask) {
		size_t e = w->idx[i] - 1;

		if (!memcmp((char *)w->keys + e * w->ksz, k, w->ksz))
			return (ssize_t)e;
	}
	return -1;
}

static int want_rehash(struct want *w, size_t cap)
{
	uint32_t *idx = calloc(cap, sizeof(*idx));

	if (!idx)
		return -ENOMEM;
	free(w->idx);
	w->idx = idx;
	w->cap = cap;
	for (size_t e = 0; e < w->n; e++) {
		size_t i = hash_bytes((char *)w->keys + e * w->ksz, w->ksz) & (cap - 1);

		while (idx[i])
			i = (i + 1) & (cap - 1);
		idx[i] = (uint32_t)e + 1;
	}
	return 0;
}

/* Grows W's arrays to ROOM entries. */
static int want_room(struct want *w, size_t room)
{
	char *keys = realloc(w->keys, room * w->ksz), *vals;

	if (keys)
		w->keys = keys;
	vals = keys ? realloc(w->vals, room * w->vsz) : NULL;
	if (!vals)
		return -ENOMEM;
	w->vals = vals;
	w->room = room;
	return 0;
}

/* Makes room for N entries in all, so filling W allocates once. */
static int want_reserve(struct want *w, size_t n)
{
	size_t cap = w->cap ? w->cap : 64;

	if (n > w->room && want_room(w, n))
		return -ENOMEM;
	while (2 * n >= cap)
		cap *= 2;
	return cap != w->cap ? want_rehash(w, cap) : 0;
}

/* Adds K -> V; a key added twice keeps its first value. */
static int want_add(struct want *w, const void *k, const void *v)
{
	char *keys, *vals;

	if (want_find(w, k) >= 0)
		return 0;
	if (w->n == w->room && want_room(w, w->room ? 2 * w->room : 1))
		return -ENOMEM;
	keys = w->keys;
	vals = w->vals;
	memcpy(keys + w->n * w->ksz, k, w->ksz);
	memcpy(vals + w->n * w->vsz, v, w->vsz);
	w->n++;
	if (2 * w->n >= w->cap)
		return want_rehash(w, w->cap ? 2 * w->cap : 64);
	{
		size_t i = hash_bytes(k, w->ksz) & (w->cap - 1);

		while (w->idx[i])
			i = (i + 1) & (w->cap - 1);
		w->idx[i] = (uint32_t)w->n;
	}
	return 0;
}

static void want_free(struct want *w)
{
	free(w->keys);
	free(w->vals);
	free(w->idx);
	w->keys = w->vals = NULL;
	w->idx = NULL;
	w->n = w->cap = w->room = 0;
}

/* --- ids --------------------------------------------------------------- */

/* Stable numeric ids for workloads and services: the ones already in
 * skm_names are kept (meshd restarts keep them), new ones come after the
 * highest. */
struct id_key {
	uint32_t kind;
	struct skm_name_val v;
};

/* Names and their ids; looked up tens of thousands of times a reconcile,
 * so by a hash of the name's strings, without building the key. */
struct id_table {
	struct id_key *keys;	/* entry -> name */
	uint32_t *ids;		/* entry -> id */
	size_t n, room;
	uint64_t *hashes;	/* slot -> hash of its entry's name */
	uint32_t *slots;	/* slot -> entry + 1, 0 = empty */
	size_t cap;		/* power of two, > 2n */
	uint32_t max_id[4];
};

/* Names longer than the map's fields are cut (meshctl shows them as
 * they fit); ids stay exact since they are keyed by the cut value. */
static void name_val(struct skm_name_val *v, const char *ns, const char *name)
{
	memset(v, 0, sizeof(*v));
	memcpy(v->name, name, strnlen(name, sizeof(v->name) - 1));
	memcpy(v->ns, ns, strnlen(ns, sizeof(v->ns) - 1));
}

static uint64_t id_hash(uint32_t kind, const char *ns, size_t nl, const char *name, size_t ml)
{
	uint64_t m = hash_bytes(name, ml);
	uint64_t h = hash_bytes(ns, nl) ^ ((m << 17) | (m >> 47));

	h ^= kind * 0x9e3779b97f4a7c15ULL;
	h *= 0xff51afd7ed558ccdULL;
	return h ^ (h >> 32);
}

/* The entry of (KIND, NS, NAME), cut as name_val() cuts; -1 if none. */
static ssize_t id_find(const struct id_table *t, uint32_t kind, const char *ns, size_t nl,
		       const char *name, size_t ml, uint64_t hash)
{
	size_t mask = t->cap - 1;

	if (!t->cap)
		return -1;
	for (size_t i = hash & mask; t->slots[i]; i = (i + 1) & mask) {
		const struct id_key *k = &t->keys[t->slots[i] - 1];

		if (t->hashes[i] == hash && k->kind == kind && !k->v.ns[nl] && !k->v.name[ml] &&
		    !memcmp(k->v.ns, ns, nl) && !memcmp(k->v.name, name, ml))
			return (ssize_t)t->slots[i] - 1;
	}
	return -1;
}

static int id_rehash(struct id_table *t, size_t cap)
{
	uint64_t *hashes = calloc(cap, sizeof(*hashes));
	uint32_t *slots = calloc(cap, sizeof(*slots));

	if (!hashes || !slots) {
		free(hashes);
		free(slots);
		return -ENOMEM;
	}
	for (size_t i = 0; i < t->cap; i++) {
		size_t j;

		if (!t->slots[i])
			continue;
		for (j = t->hashes[i] & (cap - 1); slots[j]; j = (j + 1) & (cap - 1))
			;
		slots[j] = t->slots[i];
		hashes[j] = t->hashes[i];
	}
	free(t->hashes);
	free(t->slots);
	t->hashes = hashes;
	t->slots = slots;
	t->cap = cap;
	return 0;
}

/* Adds KEY -> ID (KEY not there yet). */
static int id_insert(struct id_table *t, const struct id_key *key, uint32_t id)
{
	size_t nl = strnlen(key->v.ns, sizeof(key->v.ns) - 1);
	size_t ml = strnlen(key->v.name, sizeof(key->v.name) - 1);
	uint64_t hash = id_hash(key->kind, key->v.ns, nl, key->v.name, ml);
	size_t i;

	if (t->n == t->room) {
		size_t room = t->room ? 2 * t->room : 256;
		struct id_key *keys = realloc(t->keys, room * sizeof(*keys));
		uint32_t *ids = keys ? realloc(t->ids, room * sizeof(*ids)) : NULL;

		if (keys)
			t->keys = keys;
		if (!ids)
			return -ENOMEM;
		t->ids = ids;
		t->room = room;
	}
	if (2 * (t->n + 1) >= t->cap && id_rehash(t, t->cap ? 2 * t->cap : 512))
		return -ENOMEM;
	t->keys[t->n] = *key;
	t->ids[t->n] = id;
	for (i = hash & (t->cap - 1); t->slots[i]; i = (i + 1) & (t->cap - 1))
		;
	t->slots[i] = (uint32_t)++t->n;
	t->hashes[i] = hash;
	if (id > t->max_id[key->kind])
		t->max_id[key->kind] = id;
	return 0;
}

static void id_table_free(struct id_table *t)
{
	free(t->keys);
	free(t->ids);
	free(t->hashes);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* Seeds T from what skm_names holds (CACHE, read from the map). */
static int id_table_load(const struct want *cache, struct id_table *t)
{
	for (size_t i = 0; i < cache->n; i++) {
		const struct skm_name_key *k = (struct skm_name_key *)cache->keys + i;
		struct id_key ik = { .kind = k->kind };
		size_t nl, ml;

		if (k->kind >= 4)
			continue;
		ik.v = ((struct skm_name_val *)cache->vals)[i];
		nl = strnlen(ik.v.ns, sizeof(ik.v.ns) - 1);
		ml = strnlen(ik.v.name, sizeof(ik.v.name) - 1);
		memset(ik.v.ns + nl, 0, sizeof(ik.v.ns) - nl);
		memset(ik.v.name + ml, 0, sizeof(ik.v.name) - ml);
		if (id_find(t, ik.kind, ik.v.ns, nl, ik.v.name, ml,
			    id_hash(ik.kind, ik.v.ns, nl, ik.v.name, ml)) < 0 &&
		    id_insert(t, &ik, k->id))
			return -ENOMEM;
	}
	return 0;
}

static uint32_t id_for(struct id_table *t, uint32_t kind, const char *ns,
		       const char *name)
{
	size_t nl = strnlen(ns, sizeof(((struct skm_name_val *)0)->ns) - 1);
	size_t ml = strnlen(name, sizeof(((struct skm_name_val *)0)->name) - 1);
	ssize_t e = id_find(t, kind, ns, nl, name, ml, id_hash(kind, ns, nl, name, ml));
	struct id_key ik = { .kind = kind };
	uint32_t id;

	if (e >= 0)
		return t->ids[e];
	/* Remembered, so the next ask for the same object gets the same id. */
	id = t->max_id[kind] + 1;
	name_val(&ik.v, ns, name);
	if (!id_insert(t, &ik, id))
		return id;
	return ++t->max_id[kind];	/* out of memory: unique still */
}

/* What is compiled for one local destination, kept between reconciles so
 * an unchanged policy costs nothing and a replaced one can be deleted. */
struct pset {
	uint32_t dst_ip;
	uint32_t pol_set;
	uint64_t inputs;	/* what it was compiled from (policy_inputs,
				 * the sources, the address) */
	int fresh;		/* written by this reconcile */
	int moved;		/* carried over to the next list */
	uint64_t hash;		/* of the compiled entries, pol_set left out */
	struct policy_tables t;	/* skm_verdicts and skm_plain entries */
};

/* What reconcile remembers between calls: what each map holds as far as
 * meshd wrote it (so a change is diffed in memory, not by reading maps
 * back), and the compiled policy sets. Caches start invalid (ksz 0) and
 * are filled by the first sync, which reads the maps. */
struct rc_state {
	struct pset *sets;
	size_t nsets;
	uint32_t next_pol_set;
	int seeded;
	struct want wls;	/* skm_workloads */
	struct want names;	/* skm_names */
	struct want devs;	/* skm_devs */
	struct want netns;	/* skm_netns */
	struct want svcs;	/* skm_services key -> struct svc_cached */
	uint32_t next_set_id;	/* last backend set id handed out */
	struct id_table ids;	/* every id handed out, kept for good */
	int ids_seeded;
	uint32_t *changed;	/* destinations given new verdicts by the
				 * last sync_policy (network order) */
	size_t nchanged;
};

/* A service entry as written, with a hash of its backend set. */
struct svc_cached {
	struct skm_svc_val v;
	uint64_t hash;
};

/* --- many entries per bpf() call -------------------------------------- */

#define BATCH_MAX	65536	/* entries per batch call */

/*
 * Writes N entries (KEYS, VALS: arrays of KSZ / VSZ bytes each) in order,
 * with the batch command where the map type has it (one bpf() call per
 * BATCH_MAX entries instead of one per entry), one call per entry where
 * not. Returns 0, or a negative errno with *DONE the entries written
 * before the failure.
 */
static int map_write_many(int fd, const void *keys, const void *vals, size_t n,
			  size_t ksz, size_t vsz, size_t *done)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
	size_t i = 0;
	int err = 0;

	while (i < n) {
		__u32 count = n - i > BATCH_MAX ? BATCH_MAX : (__u32)(n - i);

		if (!bpf_map_update_batch(fd, (const char *)keys + i * ksz,
					  (const char *)vals + i * vsz, &count, &opts)) {
			i += count;
			continue;
		}
		if (!map_batch_unsupported(errno))
			i += count;	/* the entry at i failed: tried alone below */
		break;
	}
	for (; i < n; i++) {
		if (bpf_map_update_elem(fd, (const char *)keys + i * ksz,
					(const char *)vals + i * vsz, BPF_ANY)) {
			err = -errno;
			break;
		}
	}
	*done = i;
	return err;
}

/* Deletes N keys (KSZ bytes each), batched where the map type allows; a
 * key that is not there is skipped. Returns how many were deleted. */
static size_t map_delete_many(int fd, const void *keys, size_t n, size_t ksz)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	size_t i = 0, deleted = 0;
	int batch = 1;

	while (i < n) {
		__u32 count = n - i > BATCH_MAX ? BATCH_MAX : (__u32)(n - i);

		if (!batch) {
			deleted += !bpf_map_delete_elem(fd, (const char *)keys + i * ksz);
			i++;
			continue;
		}
		if (!bpf_map_delete_batch(fd, (const char *)keys + i * ksz, &count, &opts)) {
			deleted += count;
			i += count;
		} else if (map_batch_unsupported(errno)) {
			batch = 0;
		} else {
			/* stopped at a key that is not there: skip it */
			deleted += count;
			i += count + 1;
		}
	}
	return deleted;
}

/*
 * Reads every entry of map FD into C (whose ksz and vsz are set), with the
 * batch lookup where the map type has it. Returns 0 or a negative errno.
 */
static int dump_one(const void *key, const void *val, void *arg)
{
	return want_add(arg, key, val);
}

static int map_dump(int fd, struct want *c)
{
	char key[256], next[256], val[512];
	int err = map_batch_each(fd, c->ksz, c->vsz, 4096, dump_one, c), more;

	if (err != -EOPNOTSUPP)
		return err;
	/* no batch lookup for this map type: key by key */
	if (c->ksz > sizeof(key) || c->vsz > sizeof(val))
		return -E2BIG;
	err = 0;
	more = bpf_map_get_next_key(fd, NULL, key) == 0;
	while (more && !err) {
		more = bpf_map_get_next_key(fd, key, next) == 0;
		if (!bpf_map_lookup_elem(fd, key, val))
			err = want_add(c, key, val);
		memcpy(key, next, c->ksz);
	}
	return err;
}

/* Makes map FD hold exactly W: deletes what is not wanted, writes what is
 * missing or different, leaves equal entries alone. CACHE is what the map
 * held after the last sync: the diff is made in memory against it (an
 * invalid cache, ksz 0, is filled by reading the map first). On return
 * CACHE holds W's entries and W the old cache's, for the caller to free;
 * on error CACHE is invalidated. */
static int sync_map(int fd, struct want *w, struct want *cache, struct reconcile_stats *st)
{
	char *dk = NULL, *wk = NULL, *wv = NULL;
	size_t nd = 0, nw = 0, done = 0;
	struct want tmp;
	int err = 0;

	if (!cache->ksz) {
		cache->ksz = w->ksz;
		cache->vsz = w->vsz;
		if ((err = map_dump(fd, cache)))
			goto out;
	}
	for (size_t i = 0; i < cache->n; i++)
		nd += want_find(w, (char *)cache->keys + i * cache->ksz) < 0;
	for (size_t i = 0; i < w->n; i++) {
		ssize_t c = want_find(cache, (char *)w->keys + i * w->ksz);

		nw += c < 0 || memcmp((char *)cache->vals + c * cache->vsz,
				      (char *)w->vals + i * w->vsz, w->vsz);
	}
	if (nd && !(dk = malloc(nd * cache->ksz))) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0, j = 0; j < nd; i++)
		if (want_find(w, (char *)cache->keys + i * cache->ksz) < 0)
			memcpy(dk + j++ * cache->ksz, (char *)cache->keys + i * cache->ksz, cache->ksz);
	st->deletes += map_delete_many(fd, dk, nd, cache->ksz);
	if (nw == w->n) {
		/* all of it (a first sync): write W's arrays as they are */
		err = map_write_many(fd, w->keys, w->vals, nw, w->ksz, w->vsz, &done);
	} else if (nw) {
		wk = malloc(nw * w->ksz);
		wv = malloc(nw * w->vsz);
		if (!wk || !wv) {
			err = -ENOMEM;
			goto out;
		}
		for (size_t i = 0, j = 0; j < nw; i++) {
			const char *k = (char *)w->keys + i * w->ksz, *v = (char *)w->vals + i * w->vsz;
			ssize_t c = want_find(cache, k);

			if (c >= 0 && !memcmp((char *)cache->vals + c * cache->vsz, v, w->vsz))
				continue;
			memcpy(wk + j * w->ksz, k, w->ksz);
			memcpy(wv + j++ * w->vsz, v, w->vsz);
		}
		err = map_write_many(fd, wk, wv, nw, w->ksz, w->vsz, &done);
	}
	st->writes += (unsigned int)done;
out:
	free(dk);
	free(wk);
	free(wv);
	if (err) {
		want_free(cache);
		cache->ksz = 0;
		return err;
	}
	tmp = *cache;
	*cache = *w;
	*w = tmp;
	if (!w->ksz) {
		w->ksz = cache->ksz;
		w->vsz = cache->vsz;
	}
	return 0;
}

/* --- services ------------------------------------------------------------ */

/* Appends ITEM (SZ bytes) to *ARR of *N entries, room for *ROOM. */
static int push(void *arr, size_t *n, size_t *room, size_t sz, const void *item)
{
	void **a = arr;

	if (*n == *room) {
		size_t r = *room ? *room * 2 : 64;
		void *p = realloc(*a, r * sz);

		if (!p)
			return -ENOMEM;
		*a = p;
		*room = r;
	}
	memcpy((char *)*a + *n * sz, item, sz);
	(*n)++;
	return 0;
}

/*
 * Fills RS->svcs from the maps (the first sync, or one after an error):
 * every service entry, with the hash of the backend set it points to; an
 * entry whose set has a slot missing is cached with svc_id 0 (no service
 * has it), so it is written again. Seeds the set ids past the highest.
 */
static int svcs_read(int svc_fd, int be_fd, struct rc_state *rs)
{
	struct want svcs = { .ksz = sizeof(struct skm_svc_key), .vsz = sizeof(struct skm_svc_val) };
	struct want bes = { .ksz = sizeof(struct skm_be_key), .vsz = sizeof(struct skm_be_val) };
	struct skm_be_val *set = NULL;
	size_t room = 0;
	int err;

	rs->svcs.ksz = sizeof(struct skm_svc_key);
	rs->svcs.vsz = sizeof(struct svc_cached);
	err = map_dump(svc_fd, &svcs);
	if (!err)
		err = map_dump(be_fd, &bes);
	for (size_t i = 0; i < svcs.n && !err; i++) {
		struct svc_cached c = { .v = ((struct skm_svc_val *)svcs.vals)[i] };
		uint32_t s;

		if (c.v.nslots > room) {
			struct skm_be_val *p = realloc(set, c.v.nslots * sizeof(*set));

			if (!p) {
				err = -ENOMEM;
				break;
			}
			set = p;
			room = c.v.nslots;
		}
		for (s = 0; s < c.v.nslots; s++) {
			struct skm_be_key k = { .set_id = c.v.set_id, .slot = s };
			ssize_t e = want_find(&bes, &k);

			if (e < 0)
				break;
			set[s] = ((struct skm_be_val *)bes.vals)[e];
		}
		if (s < c.v.nslots)
			c.v.svc_id = 0;
		c.hash = hash_bytes(set, c.v.nslots * sizeof(*set));
		if (c.v.set_id > rs->next_set_id)
			rs->next_set_id = c.v.set_id;
		err = want_add(&rs->svcs, (char *)svcs.keys + i * svcs.ksz, &c);
	}
	if (err) {
		want_free(&rs->svcs);
		rs->svcs.ksz = 0;
	}
	free(set);
	want_free(&svcs);
	want_free(&bes);
	return err;
}

/* What one sync_services pass writes, at its end, in three batches: every
 * new backend set, then every service entry switched to its new set, then
 * the replaced sets deleted; so no connect() finds an entry whose set is
 * not all there. */
struct svc_batch {
	struct skm_be_key *bk;		/* new sets */
	struct skm_be_val *bv;
	size_t nbk, nbv, bk_room, bv_room;
	struct skm_svc_key *sk;		/* entries */
	struct skm_svc_val *sv;
	size_t nsk, nsv, sk_room, sv_room;
	struct skm_be_key *old;		/* slots of replaced sets */
	size_t nold, old_room;
};

static void svc_batch_free(struct svc_batch *b)
{
	free(b->bk);
	free(b->bv);
	free(b->sk);
	free(b->sv);
	free(b->old);
}

/* Points KEY at backends BES (NSLOTS slots) and records the entry in NEXT.
 * Unchanged (by the cache): nothing to write. Changed: a new set under a
 * fresh id, and the entry's switch to it, go to B. */
static int put_service(struct rc_state *rs, struct svc_batch *b,
		       const struct skm_svc_key *key, uint32_t svc_id,
		       const struct skm_be_val *bes, uint32_t nslots, struct want *next)
{
	struct svc_cached nc = { .v = { .svc_id = svc_id, .nslots = nslots },
				 .hash = hash_bytes(bes, nslots * sizeof(*bes)) };
	ssize_t c = want_find(&rs->svcs, key);
	const struct svc_cached *oc = c >= 0 ? (struct svc_cached *)rs->svcs.vals + c : NULL;

	if (oc && oc->v.svc_id == svc_id && oc->v.nslots == nslots && oc->hash == nc.hash)
		return want_add(next, key, oc);
	nc.v.set_id = nslots ? ++rs->next_set_id : 0;
	for (uint32_t s = 0; s < nslots; s++) {
		struct skm_be_key k = { .set_id = nc.v.set_id, .slot = s };

		if (push(&b->bk, &b->nbk, &b->bk_room, sizeof(k), &k) ||
		    push(&b->bv, &b->nbv, &b->bv_room, sizeof(bes[s]), &bes[s]))
			return -ENOMEM;
	}
	if (push(&b->sk, &b->nsk, &b->sk_room, sizeof(*key), key) ||
	    push(&b->sv, &b->nsv, &b->sv_room, sizeof(nc.v), &nc.v))
		return -ENOMEM;
	for (uint32_t s = 0; oc && s < oc->v.nslots; s++) {
		struct skm_be_key k = { .set_id = oc->v.set_id, .slot = s };

		if (push(&b->old, &b->nold, &b->old_room, sizeof(k), &k))
			return -ENOMEM;
	}
	return want_add(next, key, &nc);
}

/* Deletes the slots of the sets of entries B->sv[FROM..). */
static void drop_new_sets(int be_fd, const struct svc_batch *b, size_t from,
			  struct reconcile_stats *st)
{
	for (size_t i = from; i < b->nsv; i++)
		for (uint32_t s = 0; s < b->sv[i].nslots; s++) {
			struct skm_be_key k = { .set_id = b->sv[i].set_id, .slot = s };

			st->deletes += !bpf_map_delete_elem(be_fd, &k);
		}
}

/* Writes what B holds, in its order. Returns 0 or a negative errno; what
 * is left after a failure (sets nothing points to) is removed, or left to
 * the next start's reconcile_gc_backends. */
static int svc_batch_flush(int svc_fd, int be_fd, struct svc_batch *b,
			   struct reconcile_stats *st)
{
	size_t done = 0;
	int err;

	err = map_write_many(be_fd, b->bk, b->bv, b->nbk, sizeof(*b->bk), sizeof(*b->bv), &done);
	st->writes += (unsigned int)done;
	if (err) {
		st->deletes += map_delete_many(be_fd, b->bk, done, sizeof(*b->bk));
		return err;
	}
	err = map_write_many(svc_fd, b->sk, b->sv, b->nsk, sizeof(*b->sk), sizeof(*b->sv), &done);
	st->writes += (unsigned int)done;
	if (err) {
		drop_new_sets(be_fd, b, done, st);
		return err;
	}
	st->deletes += map_delete_many(be_fd, b->old, b->nold, sizeof(*b->old));
	return 0;
}

static int sync_services(struct loader *l, const struct config *cfg,
			 struct id_table *ids, struct want *names,
			 struct reconcile_stats *st)
{
	int svc_fd = bpf_map__fd(l->skel->maps.skm_services);
	int be_fd = bpf_map__fd(l->skel->maps.skm_backends);
	struct rc_state *rs = l->rc_state;
	struct want next = { .ksz = sizeof(struct skm_svc_key),
			     .vsz = sizeof(struct svc_cached) };
	struct svc_batch b = {};
	struct skm_svc_key key;
	uint32_t *weights = NULL, *slots = NULL;
	struct skm_be_val *bes = NULL;
	size_t room = 0, nkeys = 0;
	int err = 0;

	if (!rs->svcs.ksz && (err = svcs_read(svc_fd, be_fd, rs)))
		goto out;
	for (size_t i = 0; i < cfg->nsvcs; i++)
		nkeys += cfg->svcs[i].nports;
	if ((err = want_reserve(&next, nkeys)))
		goto out;
	for (size_t i = 0; i < cfg->nsvcs && !err; i++) {
		const struct cfg_service *s = &cfg->svcs[i];
		uint32_t svc_id = id_for(ids, SKM_NAME_SERVICE, s->ns, s->name);
		unsigned int cap = s->neps > SKM_MAX_SLOTS_PER_SVC ? s->neps : SKM_MAX_SLOTS_PER_SVC;
		struct skm_name_key nk = { .kind = SKM_NAME_SERVICE, .id = svc_id };
		struct skm_name_val nv;
		unsigned int nslots;

		if (cap > room || s->neps + 1 > room) {
			size_t r = cap > s->neps + 1 ? cap : s->neps + 1;
			void *w = realloc(weights, r * sizeof(*weights));

			if (w)
				weights = w;
			w = w ? realloc(slots, r * sizeof(*slots)) : NULL;
			if (w)
				slots = w;
			w = w ? realloc(bes, r * sizeof(*bes)) : NULL;
			if (!w) {
				err = -ENOMEM;
				break;
			}
			bes = w;
			room = r;
		}
		name_val(&nv, s->ns, s->name);
		if ((err = want_add(names, &nk, &nv)))
			break;
		for (size_t e = 0; e < s->neps; e++)
			weights[e] = s->eps[e].weight;
		nslots = build_slots(weights, (unsigned int)s->neps, slots, cap);
		for (size_t p = 0; p < s->nports && !err; p++) {
			const struct cfg_port *port = &s->ports[p];

			memset(&key, 0, sizeof(key));
			key.vip = s->vip;
			key.port = htons(port->port);
			key.proto = port->proto;
			for (unsigned int k = 0; k < nslots; k++) {
				bes[k].ip = s->eps[slots[k]].ip;
				bes[k].port = htons(port->target);
				bes[k].pad = 0;
			}
			err = put_service(rs, &b, &key, svc_id, bes, nslots, &next);
		}
	}
	if (!err)
		err = svc_batch_flush(svc_fd, be_fd, &b, st);
	if (err) {
		pr_warn("cannot write skm_services/skm_backends: %s\n", strerror(-err));
		goto out;
	}

	/* Services no longer configured: entries first, then their slots. */
	b.nsk = b.nold = 0;
	for (size_t i = 0; i < rs->svcs.n && !err; i++) {
		const struct skm_svc_key *k = (struct skm_svc_key *)rs->svcs.keys + i;
		const struct svc_cached *c = (struct svc_cached *)rs->svcs.vals + i;

		if (want_find(&next, k) >= 0)
			continue;
		err = push(&b.sk, &b.nsk, &b.sk_room, sizeof(*k), k);
		for (uint32_t s = 0; s < c->v.nslots && !err; s++) {
			struct skm_be_key bk = { .set_id = c->v.set_id, .slot = s };

			err = push(&b.old, &b.nold, &b.old_room, sizeof(bk), &bk);
		}
	}
	if (!err) {
		st->deletes += map_delete_many(svc_fd, b.sk, b.nsk, sizeof(*b.sk));
		st->deletes += map_delete_many(be_fd, b.old, b.nold, sizeof(*b.old));
	}
out:
	/* after an error what the map holds is uncertain: read it next time */
	want_free(&rs->svcs);
	if (err)
		want_free(&next);
	else
		rs->svcs = next;
	svc_batch_free(&b);
	free(weights);
	free(slots);
	free(bes);
	return err;
}

/*
 * Deletes the entries of map FD (keys of KSZ bytes, values of VSZ) whose
 * set (SET_OF(key)) is not in LIVE; reads and deletes in batches. Returns
 * how many went, or a negative errno.
 */
static long gc_map(int fd, size_t ksz, size_t vsz, const struct want *live,
		   uint32_t (*set_of)(const void *key))
{
	struct want all = { .ksz = ksz, .vsz = vsz };
	char *dead = NULL;
	size_t n = 0;
	long removed;
	int err = map_dump(fd, &all);

	if (!err && all.n && !(dead = malloc(all.n * ksz)))
		err = -ENOMEM;
	for (size_t i = 0; !err && i < all.n; i++) {
		const char *k = (char *)all.keys + i * ksz;
		uint32_t set = set_of(k);

		if (want_find(live, &set) < 0)
			memcpy(dead + n++ * ksz, k, ksz);
	}
	removed = err ? err : (long)map_delete_many(fd, dead, n, ksz);
	free(dead);
	want_free(&all);
	return removed;
}

static uint32_t be_set_of(const void *k)
{
	return ((const struct skm_be_key *)k)->set_id;
}

int reconcile_gc_backends(struct loader *l)
{
	int svc_fd = bpf_map__fd(l->skel->maps.skm_services);
	int be_fd = bpf_map__fd(l->skel->maps.skm_backends);
	struct want svcs = { .ksz = sizeof(struct skm_svc_key), .vsz = sizeof(struct skm_svc_val) };
	struct want live = { .ksz = sizeof(uint32_t), .vsz = 1 };
	int err = map_dump(svc_fd, &svcs);
	long removed;
	char one = 1;

	for (size_t i = 0; i < svcs.n && !err; i++)
		err = want_add(&live, &((struct skm_svc_val *)svcs.vals)[i].set_id, &one);
	removed = err ? err : gc_map(be_fd, sizeof(struct skm_be_key), sizeof(struct skm_be_val),
				     &live, be_set_of);
	want_free(&svcs);
	want_free(&live);
	if (removed < 0)
		return (int)removed;
	if (removed)
		pr_info("removed %ld backend slots no service refers to\n", removed);
	return 0;
}

/* --- pod interfaces --------------------------------------------------- */

struct route_reply {
	int oif;
};

static int route_cb(struct nl_msg *msg, void *arg)
{
	struct nlattr *tb[RTA_MAX + 1];
	struct route_reply *r = arg;

	if (nlmsg_parse(nlmsg_hdr(msg), sizeof(struct rtmsg), tb, RTA_MAX, NULL) < 0)
		return NL_SKIP;
	if (tb[RTA_OIF])
		r->oif = (int)nla_get_u32(tb[RTA_OIF]);
	return NL_OK;
}

/* 1 when IFINDEX is a veth (its name in IFNAME), asked with the ioctls
 * of CTL, a datagram socket in meshd's namespace: one for all the pods of
 * a reconcile, not two sockets each. */
static int is_veth(int ctl, int ifindex, char *ifname, size_t len)
{
	struct ethtool_drvinfo info = { .cmd = ETHTOOL_GDRVINFO };
	struct ifreq ifr = { .ifr_ifindex = ifindex };

	if (ioctl(ctl, SIOCGIFNAME, &ifr))
		return 0;
	ifr.ifr_data = (void *)&info;
	if (ioctl(ctl, SIOCETHTOOL, &ifr) || strcmp(info.driver, "veth"))
		return 0;
	snprintf(ifname, len, "%s", ifr.ifr_name);
	return 1;
}

/* Route lookup through SK (a connected rtnetlink socket); CTL as for
 * is_veth(). */
static int pod_ifindex_on(struct nl_sock *sk, int ctl, uint32_t ip, char *ifname, size_t len)
{
	struct rtmsg rtm = { .rtm_family = AF_INET, .rtm_dst_len = 32 };
	struct route_reply r = { .oif = 0 };
	struct nl_msg *msg = nlmsg_alloc_simple(RTM_GETROUTE, 0);
	int err;

	if (!msg || nlmsg_append(msg, &rtm, sizeof(rtm), NLMSG_ALIGNTO) ||
	    nla_put_u32(msg, RTA_DST, ip)) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	err = nl_send_auto(sk, msg);
	nlmsg_free(msg);
	if (err < 0)
		return -EIO;
	nl_socket_modify_cb(sk, NL_CB_VALID, NL_CB_CUSTOM, route_cb, &r);
	if (nl_recvmsgs_default(sk) < 0 || !r.oif)
		return -ENOENT;
	/* Only a veth is a pod's interface: a route through anything else
	 * (the node's uplink, a default route) means the pod is not wired. */
	return is_veth(ctl, r.oif, ifname, len) ? r.oif : -ENOENT;
}

struct peer_query {
	uint32_t ip;		/* the pod's, network order */
	int ifindex;		/* out: the pod's interface holding it */
};

/* Run inside the pod's namespace (the netlink socket is made there): the
 * interface holding q->ip and its peer's ifindex (IFLA_LINK: an index in
 * the peer's namespace), or -ENOENT. */
static int pod_peer_in_netns(void *arg)
{
	struct peer_query *q = arg;
	struct nl_sock *sk = nl_socket_alloc();
	struct nl_cache *addrs = NULL;
	struct rtnl_link *link = NULL;
	int rc = -ENOENT;

	if (!sk || nl_connect(sk, NETLINK_ROUTE) || rtnl_addr_alloc_cache(sk, &addrs)) {
		rc = -EIO;
		goto out;
	}
	for (struct nl_object *o = nl_cache_get_first(addrs); o; o = nl_cache_get_next(o)) {
		struct rtnl_addr *a = (struct rtnl_addr *)o;
		struct nl_addr *local = rtnl_addr_get_local(a);

		if (rtnl_addr_get_family(a) == AF_INET && local &&
		    nl_addr_get_len(local) == sizeof(q->ip) &&
		    !memcmp(nl_addr_get_binary_addr(local), &q->ip, sizeof(q->ip))) {
			q->ifindex = rtnl_addr_get_ifindex(a);
			break;
		}
	}
	if (q->ifindex > 0 && !rtnl_link_get_kernel(sk, q->ifindex, NULL, &link) &&
	    rtnl_link_get_link(link) > 0)
		rc = rtnl_link_get_link(link);
out:
	if (link)
		rtnl_link_put(link);
	nl_cache_free(addrs);
	if (sk)
		nl_socket_free(sk);
	return rc;
}

/*
 * A pod wired through a bridge (the bridge CNI plugin): the route to it
 * ends at the bridge, not at its veth. Its veth is found from inside: the
 * interface holding IP in the namespace at NETNS, and its peer, taken only
 * when that index here is a veth whose own peer is that interface. SK: a
 * connected rtnetlink socket in meshd's namespace; CTL as for is_veth().
 */
static int pod_ifindex_netns(struct nl_sock *sk, int ctl, const char *netns, uint32_t ip,
			     char *ifname, size_t len)
{
	struct peer_query q = { .ip = ip };
	struct rtnl_link *host = NULL;
	int peer = netns_run_at(netns, pod_peer_in_netns, &q), ok;

	if (peer <= 0 || !is_veth(ctl, peer, ifname, len))
		return -ENOENT;
	ok = !rtnl_link_get_kernel(sk, peer, NULL, &host) && rtnl_link_get_link(host) == q.ifindex;
	if (host)
		rtnl_link_put(host);
	return ok ? peer : -ENOENT;
}

int pod_ifindex(uint32_t ip, char *ifname, size_t len)
{
	struct nl_sock *sk = nl_socket_alloc();
	int ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = -ENOMEM;

	if (sk && ctl >= 0 && !nl_connect(sk, NETLINK_ROUTE)) {
		nl_socket_disable_auto_ack(sk);
		rc = pod_ifindex_on(sk, ctl, ip, ifname, len);
	}
	if (sk)
		nl_socket_free(sk);
	if (ctl >= 0)
		close(ctl);
	return rc;
}

/* Forgets the share (skm_pod_share) of each pod that is no longer a
 * local workload: the kernel makes an entry at a pod's first connection,
 * and nothing else would ever take it out. WLS: the workloads just
 * written. Entry 0 (no pod) stays. */
static void forget_shares(struct loader *l, const struct want *wls)
{
	int fd = bpf_map__fd(l->skel->maps.skm_pod_share);
	uint32_t *local = calloc(wls->n + 1, sizeof(*local));
	size_t nlocal = 0;
	__u32 key, next;
	int more;

	if (!local)
		return;
	for (size_t i = 0; i < wls->n; i++) {
		const struct skm_wl_val *v = (const struct skm_wl_val *)wls->vals + i;

		if (v->flags & SKM_WL_LOCAL)
			local[nlocal++] = v->wl_id;
	}
	more = bpf_map_get_next_key(fd, NULL, &key) == 0;
	while (more) {
		int keep = key == 0;

		more = bpf_map_get_next_key(fd, &key, &next) == 0;
		for (size_t i = 0; i < nlocal && !keep; i++)
			keep = local[i] == key;
		if (!keep)
			bpf_map_delete_elem(fd, &key);
		key = next;
	}
	free(local);
}

static int sync_devs(struct loader *l, const struct config *cfg, const char *node,
		     struct id_table *ids, struct reconcile_stats *st)
{
	int devs_fd = bpf_map__fd(l->skel->maps.skm_devs);
	int stats_fd = bpf_map__fd(l->skel->maps.skm_dev_stats);
	struct want want = { .ksz = sizeof(__u32), .vsz = sizeof(struct skm_dev_val) };
	int ncpu = libbpf_num_possible_cpus();
	struct skm_dev_stats *zero = calloc(ncpu > 0 ? ncpu : 1, sizeof(*zero));
	__u32 key, next;
	int more, err = 0;

	struct rc_state *rs = l->rc_state;
	struct nl_sock *nl = nl_socket_alloc();
	int ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (!zero || !nl || ctl < 0 || nl_connect(nl, NETLINK_ROUTE)) {
		err = -ENOMEM;
		goto out;
	}
	/* One reply per lookup: with libnl's default ack after each, a
	 * reused socket would read the previous lookup's ack as the next
	 * answer. */
	nl_socket_disable_auto_ack(nl);
	for (size_t i = 0; i < cfg->nwls && !err; i++) {
		const struct cfg_workload *w = &cfg->wls[i];
		struct skm_dev_val dv = { .wl_ip = w->ip };
		char ifname[IF_NAMESIZE];
		ssize_t c;
		int ifindex;

		if (strcmp(w->node, node))
			continue;
		ifindex = pod_ifindex_on(nl, ctl, w->ip, ifname, sizeof(ifname));
		if (ifindex < 0 && w->netns)
			ifindex = pod_ifindex_netns(nl, ctl, w->netns, w->ip, ifname,
						    sizeof(ifname));
		if (ifindex < 0) {
			pr_debug("Workload %s/%s: no veth route to it yet\n", w->ns, w->name);
			st->tc_missing++;
			continue;
		}
		key = (__u32)ifindex;
		dv.wl_id = id_for(ids, SKM_NAME_WORKLOAD, w->ns, w->name);
		memcpy(dv.ifname, ifname, strnlen(ifname, sizeof(dv.ifname) - 1));
		/* Attached by this meshd already, to the same pod: done. */
		c = rs->devs.ksz ? want_find(&rs->devs, &key) : -1;
		if (c >= 0 && !memcmp((struct skm_dev_val *)rs->devs.vals + c, &dv, sizeof(dv))) {
			st->tc_attached++;
			err = want_add(&want, &key, &dv);
			continue;
		}
		/* Counters survive restarts: only create them. */
		bpf_map_update_elem(stats_fd, &key, zero, BPF_NOEXIST);
		err = loader_tc_attach(l, ifindex);
		if (err) {
			pr_warn("Workload %s/%s: cannot attach TC to %s: %s\n", w->ns,
				w->name, ifname, strerror(-err));
			continue;
		}
		st->tc_attached++;
		err = want_add(&want, &key, &dv);
	}
	if (err)
		goto out;
	/* Pods gone or moved: take our filters off and forget the device. */
	more = bpf_map_get_next_key(devs_fd, NULL, &key) == 0;
	while (more) {
		more = bpf_map_get_next_key(devs_fd, &key, &next) == 0;
		if (want_find(&want, &key) < 0) {
			loader_tc_detach((int)key);
			bpf_map_delete_elem(stats_fd, &key);
		}
		key = next;
	}
	err = sync_map(devs_fd, &want, &rs->devs, st);
out:
	if (nl)
		nl_socket_free(nl);
	if (ctl >= 0)
		close(ctl);
	want_free(&want);
	free(zero);
	return err;
}

/* --- policy ------------------------------------------------------------ */

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static void pset_free(struct pset *p)
{
	policy_tables_free(&p->t);
}

void reconcile_release(struct loader *l)
{
	struct rc_state *rs = l->rc_state;

	if (!rs)
		return;
	for (size_t i = 0; i < rs->nsets; i++)
		pset_free(&rs->sets[i]);
	free(rs->sets);
	want_free(&rs->wls);
	want_free(&rs->names);
	want_free(&rs->devs);
	want_free(&rs->netns);
	want_free(&rs->svcs);
	id_table_free(&rs->ids);
	free(rs->changed);
	free(rs);
	l->rc_state = NULL;
}

/* The netns cookie of the namespace at PATH: a socket made there tells. */
static int udp_socket(void *arg)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	(void)arg;
	return fd < 0 ? -errno : fd;
}

/* SELF: an fd of meshd's own namespace, opened once for all the pods of
 * a reconcile (-1: netns_run() opens one). */
static int netns_cookie(const char *path, int self, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	int fd = open(path, O_RDONLY | O_CLOEXEC), sock, err = 0;

	if (fd < 0)
		return -errno;
	sock = netns_run(fd, self, udp_socket, NULL);
	close(fd);
	if (sock < 0)
		return sock;
	if (getsockopt(sock, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len))
		err = -errno;
	close(sock);
	return err;
}

/* Reasons interned in skm_names for the compiler (policy_reasons). */
struct reason_sink {
	struct id_table *ids;
	struct want *names;
};

static int reason_intern(void *arg, const char *policy, const char *why, uint32_t *id)
{
	struct reason_sink *s = arg;
	struct skm_name_key nk = { .kind = SKM_NAME_REASON };
	struct skm_name_val nv;

	name_val(&nv, policy, why);
	nk.id = id_for(s->ids, SKM_NAME_REASON, nv.ns, nv.name);
	*id = nk.id;
	return want_add(s->names, &nk, &nv);
}

/* The policy of local destination W, compiled into P (pol_set left 0),
 * with the hash that tells an unchanged result. */
static int compile_dst(const struct config *cfg, const struct cfg_workload *w,
		       const struct policy_src *srcs, size_t nsrcs, struct id_table *ids,
		       struct want *names, struct pset *p)
{
	struct reason_sink sink = { ids, names };
	struct policy_reasons reasons = { reason_intern, &sink };
	const struct policy_tables *t = &p->t;
	int err = policy_tables_build(cfg, w, srcs, nsrcs, &reasons, &p->t);

	if (err)
		return err;
	p->hash = hash_bytes(t->vkeys, t->nv * sizeof(*t->vkeys)) ^
		  (hash_bytes(t->vvals, t->nv * sizeof(*t->vvals)) * 3) ^
		  (hash_bytes(t->pkeys, t->np * sizeof(*t->pkeys)) * 5) ^
		  (hash_bytes(t->pvals, t->np * sizeof(*t->pvals)) * 7);
	return 0;
}

/* Writes P's entries under its pol_set. */
static int pset_write(struct loader *l, struct pset *p, struct reconcile_stats *st)
{
	int vfd = bpf_map__fd(l->skel->maps.skm_verdicts);
	int pfd = bpf_map__fd(l->skel->maps.skm_plain);
	struct policy_tables *t = &p->t;
	size_t done = 0;
	int err;

	for (size_t i = 0; i < t->nv; i++)
		t->vkeys[i].pol_set = p->pol_set;
	for (size_t i = 0; i < t->np; i++)
		t->pkeys[i].pol_set = htonl(p->pol_set);
	err = map_write_many(vfd, t->vkeys, t->vvals, t->nv, sizeof(*t->vkeys),
			     sizeof(*t->vvals), &done);
	st->writes += (unsigned int)done;
	if (err)
		return err;
	err = map_write_many(pfd, t->pkeys, t->pvals, t->np, sizeof(*t->pkeys),
			     sizeof(*t->pvals), &done);
	st->writes += (unsigned int)done;
	return err;
}

static void pset_delete(struct loader *l, struct pset *p, struct reconcile_stats *st)
{
	int vfd = bpf_map__fd(l->skel->maps.skm_verdicts);
	int pfd = bpf_map__fd(l->skel->maps.skm_plain);
	const struct policy_tables *t = &p->t;

	st->deletes += map_delete_many(vfd, t->vkeys, t->nv, sizeof(*t->vkeys));
	st->deletes += map_delete_many(pfd, t->pkeys, t->np, sizeof(*t->pkeys));
}

/*
 * How specific a policy key is: an exact port before port 0 ("any port the
 * policies do not name"), then, in skm_plain, a longer source prefix. A
 * lookup takes the most specific key that matches.
 */
static unsigned int verdict_spec(const void *k)
{
	return ((const struct skm_verdict_key *)k)->port ? 256 : 0;
}

static unsigned int plain_spec(const void *k)
{
	const struct skm_plain_key *p = k;

	return (p->port ? 256 : 0) + p->prefixlen;
}

struct spec_ref {
	unsigned int spec;
	uint32_t i;
};

static int spec_desc(const void *a, const void *b)
{
	const struct spec_ref *x = a, *y = b;

	return x->spec != y->spec ? (x->spec < y->spec ? 1 : -1) :
	       (x->i > y->i) - (x->i < y->i);
}

/* One table of a destination as it is (OLD) and as it is to be (NEW),
 * keys of KSZ bytes under the same pol_set. */
struct tbl_change {
	const void *okeys, *nkeys;
	const struct skm_verdict *ovals, *nvals;
	size_t on, nn, ksz;
	unsigned int (*spec)(const void *k);
};

/* Gathers the entries REFS names (N of them, sorted) into KEYS / VALS. */
static void gather(const struct spec_ref *refs, size_t n, const void *src_k,
		   const struct skm_verdict *src_v, size_t ksz, char *keys,
		   struct skm_verdict *vals)
{
	for (size_t i = 0; i < n; i++) {
		memcpy(keys + i * ksz, (const char *)src_k + refs[i].i * ksz, ksz);
		if (vals)
			vals[i] = src_v[refs[i].i];
	}
}

/*
 * Writes the change C into map FD in an order that keeps every lookup on
 * the old table's answer or the new one's, whatever the moment: keys that
 * are new first, most specific first (before them a lookup falls through
 * to a less specific key that still holds its old value); then the values
 * that changed; then the keys that went, least specific first (until one
 * goes, its lookups get its old value; after, they fall through to a key
 * that holds its new one). Unchanged entries are not written. Returns 0,
 * or a negative errno after taking out again the new keys it wrote.
 */
static int table_change(int fd, const struct tbl_change *c, struct reconcile_stats *st)
{
	struct want old = { .ksz = c->ksz, .vsz = 1 };
	struct spec_ref *add = calloc(c->nn + 1, sizeof(*add));
	struct spec_ref *del = calloc(c->on + 1, sizeof(*del));
	struct spec_ref *chg = calloc(c->nn + 1, sizeof(*chg));
	char *seen = calloc(c->on + 1, 1), *keys = NULL, one = 1;
	struct skm_verdict *vals = NULL;
	size_t nadd = 0, ndel = 0, nchg = 0, done = 0, room = c->nn > c->on ? c->nn : c->on;
	int err = -ENOMEM;

	if (!add || !del || !chg || !seen || want_reserve(&old, c->on))
		goto out;
	keys = malloc((room + 1) * c->ksz);
	vals = malloc((room + 1) * sizeof(*vals));
	if (!keys || !vals)
		goto out;
	for (size_t i = 0; i < c->on; i++)
		if (want_add(&old, (const char *)c->okeys + i * c->ksz, &one))
			goto out;
	for (size_t i = 0; i < c->nn; i++) {
		const void *k = (const char *)c->nkeys + i * c->ksz;
		ssize_t e = want_find(&old, k);
		struct spec_ref r = { c->spec(k), (uint32_t)i };

		if (e < 0) {
			add[nadd++] = r;
		} else {
			seen[e] = 1;
			if (memcmp(&c->ovals[e], &c->nvals[i], sizeof(*c->nvals)))
				chg[nchg++] = r;
		}
	}
	for (size_t i = 0; i < c->on; i++)
		if (!seen[i])
			del[ndel++] = (struct spec_ref){ c->spec((const char *)c->okeys + i * c->ksz),
							 (uint32_t)i };
	qsort(add, nadd, sizeof(*add), spec_desc);
	qsort(del, ndel, sizeof(*del), spec_desc);

	gather(add, nadd, c->nkeys, c->nvals, c->ksz, keys, vals);
	err = map_write_many(fd, keys, vals, nadd, c->ksz, sizeof(*vals), &done);
	st->writes += (unsigned int)done;
	if (err) {
		st->deletes += map_delete_many(fd, keys, done, c->ksz);
		goto out;
	}
	gather(chg, nchg, c->nkeys, c->nvals, c->ksz, keys, vals);
	err = map_write_many(fd, keys, vals, nchg, c->ksz, sizeof(*vals), &done);
	st->writes += (unsigned int)done;
	if (err) {
		gather(add, nadd, c->nkeys, NULL, c->ksz, keys, NULL);
		st->deletes += map_delete_many(fd, keys, nadd, c->ksz);
		goto out;
	}
	/* least specific first: the reverse of the sorted order */
	for (size_t i = 0; i < ndel; i++)
		memcpy(keys + i * c->ksz,
		       (const char *)c->okeys + del[ndel - 1 - i].i * c->ksz, c->ksz);
	st->deletes += map_delete_many(fd, keys, ndel, c->ksz);
out:
	want_free(&old);
	free(add);
	free(del);
	free(chg);
	free(seen);
	free(keys);
	free(vals);
	return err;
}

/*
 * Turns OLD's live entries into P's, under OLD's pol_set (P's keys get
 * it), with table_change() for skm_verdicts and skm_plain: the entries a
 * policy change touches are written, not the destination's whole table
 * under a new set. Returns 0 or a negative errno; then OLD's entries may
 * hold some new values, each of which a lookup could also have met during
 * the change, and the caller writes P under a new set instead.
 */
static int pset_change(struct loader *l, const struct pset *old, struct pset *p,
		       struct reconcile_stats *st)
{
	struct policy_tables *o = (struct policy_tables *)&old->t, *t = &p->t;
	struct tbl_change vc = {
		o->vkeys, t->vkeys, o->vvals, t->vvals, o->nv, t->nv,
		sizeof(struct skm_verdict_key), verdict_spec,
	};
	struct tbl_change pc = {
		o->pkeys, t->pkeys, o->pvals, t->pvals, o->np, t->np,
		sizeof(struct skm_plain_key), plain_spec,
	};
	int err;

	for (size_t i = 0; i < t->nv; i++)
		t->vkeys[i].pol_set = old->pol_set;
	for (size_t i = 0; i < t->np; i++)
		t->pkeys[i].pol_set = htonl(old->pol_set);
	err = table_change(bpf_map__fd(l->skel->maps.skm_verdicts), &vc, st);
	if (!err)
		err = table_change(bpf_map__fd(l->skel->maps.skm_plain), &pc, st);
	return err;
}

/* The highest pol_set any workload entry refers to (a restarted meshd
 * must not reuse a live one). */
static uint32_t max_pol_set(int wl_fd)
{
	uint32_t key, next, max = 0;
	struct skm_wl_val v;
	int more = bpf_map_get_next_key(wl_fd, NULL, &key) == 0;

	while (more) {
		more = bpf_map_get_next_key(wl_fd, &key, &next) == 0;
		if (!bpf_map_lookup_elem(wl_fd, &key, &v) && v.pol_set > max)
			max = v.pol_set;
		key = next;
	}
	return max;
}

static uint64_t mix64(uint64_t h, uint64_t v)
{
	h = (h ^ v) * 0xff51afd7ed558ccdULL;
	return h ^ (h >> 32);
}

/* Puts in NAMES the reasons P's verdicts name, as CACHE (what skm_names
 * holds) has them: 0, or -ENOENT when one is not there. */
static int pset_names(const struct pset *p, const struct want *cache, struct want *names)
{
	const struct skm_verdict *lists[2] = { p->t.vvals, p->t.pvals };
	size_t n[2] = { p->t.nv, p->t.np };

	for (size_t k = 0; k < 2; k++)
		for (size_t i = 0; i < n[k]; i++) {
			struct skm_name_key nk = { .kind = SKM_NAME_REASON,
						   .id = lists[k][i].reason_id };
			ssize_t e;

			if (want_find(names, &nk) >= 0)
				continue;
			if ((e = want_find(cache, &nk)) < 0)
				return -ENOENT;
			if (want_add(names, &nk, (char *)cache->vals + e * cache->vsz))
				return -ENOMEM;
		}
	return 0;
}

/*
 * Compiles the policy of every local destination whose inputs (its
 * policy_inputs(), the sources, its address) changed; the others keep
 * their live set without compiling. Unchanged results keep their pol_set;
 * changed ones are written into it where they differ (pset_change()), and
 * new ones, or changes that cannot be written in place, get their entries
 * written under a new one (*RETIRED collects the old sets, deleted once
 * the workloads point away from them). Sets WLS' values: POLICY/NETNS
 * flags and pol_set.
 */
static int sync_policy(struct loader *l, const struct config *cfg, const char *node,
		       struct id_table *ids, struct want *wls, struct want *names,
		       struct pset **retired, size_t *nretired, struct reconcile_stats *st)
{
	struct rc_state *rs = l->rc_state;
	struct want netns = { .ksz = sizeof(__u64), .vsz = sizeof(struct skm_netns_val) };
	struct policy_src *srcs = calloc(cfg->nwls + 1, sizeof(*srcs));
	struct pset *next_sets = NULL;
	size_t nsrcs = 0, nnext = 0;
	uint64_t srcs_digest = 0;
	int err = 0, self = -1;

	if (!srcs)
		return -ENOMEM;
	free(rs->changed);
	rs->changed = calloc(cfg->nwls + 1, sizeof(*rs->changed));
	rs->nchanged = 0;
	if (!rs->changed) {
		free(srcs);
		return -ENOMEM;
	}
	if (!rs->seeded) {
		rs->next_pol_set = max_pol_set(bpf_map__fd(l->skel->maps.skm_workloads));
		rs->seeded = 1;
	}

	/* Sources: local pods whose netns connect4 can recognise, with the
	 * address it sends their captured connections to. */
	for (size_t i = 0; i < cfg->nwls && !err; i++) {
		const struct cfg_workload *w = &cfg->wls[i];
		struct skm_netns_val nv;
		struct skm_wl_val *v;
		uint64_t cookie;
		ssize_t e;

		if (strcmp(w->node, node) || !w->netns)
			continue;
		if (self < 0)	/* else netns_run() opens it for each */
			self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (netns_cookie(w->netns, self, &cookie)) {
			pr_warn("Workload %s/%s: cannot read netns %s; its connections are not captured and are judged as plaintext at the destination\n",
				w->ns, w->name, w->netns);
			continue;
		}
		e = want_find(wls, &w->ip);
		v = (struct skm_wl_val *)wls->vals + e;
		v->flags |= SKM_WL_NETNS;
		srcs[nsrcs].wl_id = v->wl_id;
		srcs[nsrcs++].w = w;
		nv.wl_id = v->wl_id;
		nv.ip = w->ip;
		err = want_add(&netns, &cookie, &nv);
	}
	if (!err)
		err = sync_map(bpf_map__fd(l->skel->maps.skm_netns), &netns, &rs->netns, st);

	for (size_t i = 0; i < nsrcs; i++) {
		const struct cfg_workload *w = srcs[i].w;

		srcs_digest = mix64(mix64(mix64(mix64(srcs_digest, srcs[i].wl_id), w->ip),
					  hash_bytes(w->ns, strlen(w->ns))),
				    hash_bytes(w->sa, strlen(w->sa)));
	}

	for (size_t i = 0; i < cfg->nwls && !err; i++) {
		const struct cfg_workload *w = &cfg->wls[i];
		struct pol_target t = { .ns = w->ns, .labels = &w->labels };
		struct skm_wl_val *v;
		struct pset p = { .dst_ip = w->ip }, *old = NULL, *grown;
		uint64_t inputs;

		if (strcmp(w->node, node))
			continue;
		inputs = mix64(mix64(policy_inputs(cfg, &t), srcs_digest), w->ip);
		for (size_t j = 0; j < rs->nsets; j++)
			if (rs->sets[j].dst_ip == w->ip && rs->sets[j].pol_set && !rs->sets[j].moved)
				old = &rs->sets[j];
		/* Nothing it depends on changed: the live set stays, uncompiled. */
		if (old && old->inputs == inputs && !pset_names(old, &rs->names, names)) {
			p = *old;
			old->moved = 1;
			goto keep;
		}
		if (!policy_applies(cfg, &t))
			continue;
		err = compile_dst(cfg, w, srcs, nsrcs, ids, names, &p);
		if (err) {
			pset_free(&p);
			break;
		}
		if (old && old->hash == p.hash) {
			/* Unchanged: keep the live set, drop the copy. */
			pset_free(&p);
			p = *old;
			old->moved = 1;
		} else if (old && !pset_change(l, old, &p, st)) {
			/* Changed where it differs, in the live set: OLD
			 * takes P's tables (its list entry then says what
			 * the kernel holds, also if this reconcile fails
			 * later) and stays live. */
			struct policy_tables was = old->t;

			old->t = p.t;
			old->hash = p.hash;
			p.t = was;
			pset_free(&p);
			p = *old;
			old->moved = 1;
			st->policies_compiled++;
			rs->changed[rs->nchanged++] = w->ip;
		} else {
			p.pol_set = ++rs->next_pol_set;
			p.fresh = 1;
			err = pset_write(l, &p, st);
			if (err) {
				pr_warn("Workload %s/%s: cannot write its policy (skm_verdicts/skm_plain): %s\n",
					w->ns, w->name, strerror(-err));
				pset_delete(l, &p, st);
				pset_free(&p);
				break;
			}
			st->policies_compiled++;
			rs->changed[rs->nchanged++] = w->ip;
		}
		p.inputs = inputs;
keep:
		grown = realloc(next_sets, (nnext + 1) * sizeof(*next_sets));
		if (!grown) {
			pset_free(&p);
			err = -ENOMEM;
			break;
		}
		next_sets = grown;
		next_sets[nnext++] = p;
		v = (struct skm_wl_val *)wls->vals + want_find(wls, &w->ip);
		v->flags |= SKM_WL_POLICY;
		v->pol_set = p.pol_set;
	}

	/* Everything not carried over is retired; on error the new sets are
	 * retired instead and the old ones stay live (and stay the list's). */
	if (err) {
		for (size_t j = 0; j < nnext; j++) {
			if (!next_sets[j].fresh)
				continue;
			pset_delete(l, &next_sets[j], st);
			pset_free(&next_sets[j]);
		}
		free(next_sets);
		for (size_t j = 0; j < rs->nsets; j++)
			rs->sets[j].moved = 0;
	} else {
		for (size_t j = 0; j < nnext; j++)
			next_sets[j].fresh = 0;
		*retired = rs->sets;
		*nretired = rs->nsets;
		rs->sets = next_sets;
		rs->nsets = nnext;
	}
	want_free(&netns);
	free(srcs);
	if (self >= 0)
		close(self);
	return err;
}

static void retire(struct loader *l, struct pset *sets, size_t n, struct reconcile_stats *st)
{
	for (size_t i = 0; i < n; i++) {
		if (sets[i].moved)
			continue;	/* live, in the new list */
		if (sets[i].pol_set)
			pset_delete(l, &sets[i], st);
		pset_free(&sets[i]);
	}
	free(sets);
}

static uint32_t verdict_set_of(const void *k)
{
	return ((const struct skm_verdict_key *)k)->pol_set;
}

static uint32_t plain_set_of(const void *k)
{
	return ntohl(((const struct skm_plain_key *)k)->pol_set);
}

int reconcile_gc_policy(struct loader *l)
{
	int wl_fd = bpf_map__fd(l->skel->maps.skm_workloads);
	struct want wls = { .ksz = sizeof(uint32_t), .vsz = sizeof(struct skm_wl_val) };
	struct want live = { .ksz = sizeof(uint32_t), .vsz = 1 };
	int err = map_dump(wl_fd, &wls);
	long removed = 0, r;
	char one = 1;

	for (size_t i = 0; i < wls.n && !err; i++) {
		const struct skm_wl_val *v = (struct skm_wl_val *)wls.vals + i;

		if (v->pol_set)
			err = want_add(&live, &v->pol_set, &one);
	}
	if (!err) {
		r = gc_map(bpf_map__fd(l->skel->maps.skm_verdicts), sizeof(struct skm_verdict_key),
			   sizeof(struct skm_verdict), &live, verdict_set_of);
		err = r < 0 ? (int)r : 0;
		removed += r > 0 ? r : 0;
	}
	if (!err) {
		r = gc_map(bpf_map__fd(l->skel->maps.skm_plain), sizeof(struct skm_plain_key),
			   sizeof(struct skm_verdict), &live, plain_set_of);
		err = r < 0 ? (int)r : 0;
		removed += r > 0 ? r : 0;
	}
	want_free(&wls);
	want_free(&live);
	if (removed)
		pr_info("removed %ld policy entries no workload refers to\n", removed);
	return err;
}

int reconcile(struct loader *l, const struct config *cfg, const char *node,
	      struct reconcile_stats *st)
{
	struct id_table *ids;
	struct want wls = { .ksz = sizeof(__u32), .vsz = sizeof(struct skm_wl_val) };
	struct want names = { .ksz = sizeof(struct skm_name_key),
			      .vsz = sizeof(struct skm_name_val) };
	int names_fd = bpf_map__fd(l->skel->maps.skm_names);
	struct pset *retired = NULL;
	struct rc_state *rs;
	size_t nretired = 0;
	int err;

	memset(st, 0, sizeof(*st));
	if (!l->rc_state && !(l->rc_state = calloc(1, sizeof(struct rc_state)))) {
		err = -ENOMEM;
		goto out;
	}
	rs = l->rc_state;
	if (!rs->names.ksz) {
		rs->names.ksz = sizeof(struct skm_name_key);
		rs->names.vsz = sizeof(struct skm_name_val);
		if ((err = map_dump(names_fd, &rs->names))) {
			want_free(&rs->names);
			rs->names.ksz = 0;
			goto out;
		}
	}
	/* Ids are read from skm_names once, then kept: an id once given is
	 * never given to another name. */
	ids = &rs->ids;
	if (!rs->ids_seeded) {
		if ((err = id_table_load(&rs->names, ids))) {
			id_table_free(ids);
			goto out;
		}
		rs->ids_seeded = 1;
	}
	if ((err = want_reserve(&wls, cfg->nwls)) ||
	    (err = want_reserve(&names, cfg->nwls + cfg->nsvcs + 64)))
		goto out;

	for (size_t i = 0; i < cfg->nwls; i++) {
		const struct cfg_workload *w = &cfg->wls[i];
		struct skm_wl_val v = {
			.wl_id = id_for(ids, SKM_NAME_WORKLOAD, w->ns, w->name),
			.flags = SKM_WL_MESHED | (!strcmp(w->node, node) ? SKM_WL_LOCAL : 0),
		};
		struct skm_name_key nk = { .kind = SKM_NAME_WORKLOAD, .id = v.wl_id };
		struct skm_name_val nv;

		name_val(&nv, w->ns, w->name);
		err = want_add(&wls, &w->ip, &v);
		if (!err)
			err = want_add(&names, &nk, &nv);
		if (err)
			goto out;
	}
	err = sync_policy(l, cfg, node, ids, &wls, &names, &retired, &nretired, st);
	if (err) {
		pr_warn("cannot compile policy: %s\n", strerror(-err));
		goto out;
	}
	/* One update per workload switches it to its new policy set. */
	err = sync_map(bpf_map__fd(l->skel->maps.skm_workloads), &wls, &rs->wls, st);
	if (err) {
		pr_warn("cannot write skm_workloads: %s\n", strerror(-err));
		goto out;
	}
	retire(l, retired, nretired, st);
	retired = NULL;
	nretired = 0;
	/* New connections get the new verdicts from here on; the live ones
	 * to destinations whose verdicts changed are judged again. */
	if (revoke_denied(l, cfg, node, rs->changed, rs->nchanged, &st->revoked))
		st->revoke_failed = 1;
	err = sync_services(l, cfg, ids, &names, st);
	if (err)
		goto out;
	err = sync_devs(l, cfg, node, ids, st);
	if (err) {
		pr_warn("cannot write skm_devs: %s\n", strerror(-err));
		goto out;
	}
	forget_shares(l, &wls);
	/* Names last: meshctl may briefly show an id without a name, never
	 * a name for the wrong id. */
	err = sync_map(names_fd, &names, &rs->names, st);
	if (err)
		pr_warn("cannot write skm_names: %s\n", strerror(-err));
out:
	/* Sets retired but still referenced after a failed switch stay in
	 * the kernel; the GC at the next start removes them. */
	for (size_t i = 0; i < nretired; i++)
		if (!retired[i].moved)
			pset_free(&retired[i]);
	free(retired);
	want_free(&wls);
	want_free(&names);
	return err;
}
