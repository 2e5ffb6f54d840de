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

struct skmesh_bpf;

struct loader {
	struct skmesh_bpf *skel;
	char pin_root[2048];
	int cgroup_fd;
	uint64_t cgroup_id;
	int reused_links;	/* links found pinned and updated in place */
	void *rc_state;		/* reconcile's memory between calls */
};

int loader_open(struct loader *l, const char *pin_root, const char *cgroup);
void loader_close(struct loader *l);

/* Attaches the TC counters to the node-side veth IFINDEX (replacing ours
 * if present); detach removes only our filters. */
int loader_tc_attach(struct loader *l, int ifindex);
int loader_tc_detach(int ifindex);

/* Detaches every program skmesh attached and unpins everything under
 * PIN_ROOT. Works without a loaded skeleton (a crashed meshd's pins). */
int loader_cleanup(const char *pin_root);

int bpffs_check(const char *dir);
int cgroup2_default_root(char *buf, size_t len);

#endif /* SKM_LOADER_H */
