/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Pods that already run when meshd starts (their CNI ADD may have come
 * while meshd was down): /proc is read once, each process's cgroup path
 * giving the UID of the pod it belongs to; a pod's network namespace is
 * then that of one of its processes, accepted only when the namespace
 * holds one of the pod's IPs. A cgroup path is anyone's to choose
 * (within their delegation), so a process is never trusted on its path
 * alone.
 */
#ifndef SKM_PODSCAN_H
#define SKM_PODSCAN_H

#include <stddef.h>
#include <stdint.h>

struct podscan;

/* PROC: "/proc" normally. Reads every PROC/<pid>/cgroup once, indexing
 * the pod UIDs found in cgroup paths (podscan_uid_of_path). 0 and *OUT,
 * or -errno. */
int podscan_open(const char *proc, struct podscan **out);
/* A process of pod UID whose network namespace holds one of IPS (network
 * order, IPv4): writes "<proc>/<pid>/ns/net" of the lowest such pid (the
 * sandbox's) into OUT. 0, -ENOENT when there is none, or -errno (OUT too
 * short: -ENAMETOOLONG). Processes in meshd's own namespace never count. */
int podscan_find(struct podscan *ps, const char *uid, const uint32_t *ips, size_t nips,
		 char *out, size_t len);
/* How many processes the scan tied to a pod. */
size_t podscan_count(const struct podscan *ps);
void podscan_free(struct podscan *ps);

/*
 * The pod UID a cgroup path names, into UID (LEN >= 65): 1, or 0 when it
 * names none. Two layouts are known, both below a "kubepods" folder:
 *   cgroupfs driver   .../kubepods[/QOS]/pod<uid>/...        (uid with '-')
 *   systemd driver    .../kubepods[-QOS]-pod<uid_with_'_'>.slice/...
 * A UID is 1..64 letters, digits and '-' (as skmesh-cni checks it).
 */
int podscan_uid_of_path(const char *path, char *uid, size_t len);

#endif /* SKM_PODSCAN_H */
