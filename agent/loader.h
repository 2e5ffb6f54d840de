/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Loads the data path and keeps it attached across meshd restarts: maps are
 * pinned by name under the pin root and reused; cgroup programs are held by
 * bpf_links pinned under <root>/links and switched to the newly loaded
 * program in place, so nothing is ever attached twice and traffic never
 * sees a gap.
 */
#ifndef SKM_LOADER_H
#define SKM_LOADER_H

#include <stdint.h>

struct bpf_link;
struct revoke_bpf;
struct skmesh_bpf;

struct loader {
	struct skmesh_bpf *skel;
	struct bpf_program *sk_msg;	/* the one of the two sk_msg programs loaded */
	char pin_root[2048];
	int cgroup_fd;
	uint64_t cgroup_id;
	uint64_t self_cgroup_id;	/* meshd's own (skm_config) */
	int reused_links;	/* links found pinned and updated in place */
	void *rc_state;		/* reconcile's memory between calls */
	/* revoke.bpf.c, loaded when first needed (revoke.c) */
	struct revoke_bpf *revoke_skel;
	struct bpf_link *revoke_link;
	int revoke_off;		/* the kernel refused it: not tried again */
};

/* What the programs are told (struct skm_config) besides meshd's own
 * cgroup, which loader_open finds itself. */
struct loader_limits {
	unsigned int conns_per_pod;	/* 0: no share */
	unsigned int events_per_pod;	/* per second; 0: no share */
};

/* Loads the programs, tells them LIM and meshd's cgroup (whose TCP
 * sockets may pass for meshd's, see skm_owned), then attaches them to
 * the cgroup folder CGROUP. */
int loader_open(struct loader *l, const char *pin_root, const char *cgroup,
		const struct loader_limits *lim);
void loader_close(struct loader *l);

/* Attaches the TC counters to the node-side veth IFINDEX (replacing ours
 * if present); detach removes only our filters. */
int loader_tc_attach(struct loader *l, int ifindex);

/* Marks the socket FD as meshd's (skm_owned), for one made before the
 * data path was attached. */
int loader_own_socket(struct loader *l, int fd);
int loader_tc_detach(int ifindex);

/* Detaches every program skmesh attached and unpins everything under
 * PIN_ROOT. Works without a loaded skeleton (a crashed meshd's pins). */
int loader_cleanup(const char *pin_root);

/*
 * Calls FN for every entry of the map FD (keys of KSZ bytes, values of
 * VSZ as the syscall gives them: per-CPU maps hold one per CPU), read
 * BATCH entries per bpf() call instead of two calls per entry. FN
 * returning non-zero stops the walk with that value. Returns 0 at the
 * end, -EOPNOTSUPP when the map type has no batch lookup (before any
 * entry: the caller may walk the keys instead), another -errno when the
 * walk broke off (a bucket larger than BATCH: the rest is not seen).
 */
int map_batch_each(int fd, size_t ksz, size_t vsz, unsigned int batch,
		   int (*fn)(const void *key, const void *val, void *arg), void *arg);
/* Whether errno ERR from a batch call means the map type has none. */
int map_batch_unsupported(int err);

int bpffs_check(const char *dir);
int cgroup2_default_root(char *buf, size_t len);

#endif /* SKM_LOADER_H */
