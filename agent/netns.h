/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Work done inside another network namespace (a pod's) by the calling
 * thread: sockets, netlink and BPF iterators take the namespace of the
 * thread that makes them.
 */
#ifndef SKM_NETNS_H
#define SKM_NETNS_H

/*
 * Runs FN(ARG) with the calling thread in the network namespace NETNS_FD
 * (-1: where it is), then brings it back to SELF_FD (an fd of its own
 * namespace; -1: opened here). Returns what FN returns, or -errno when
 * the thread could not get in. meshd aborts if the thread cannot come
 * back: every later socket it made would be in the other namespace.
 */
int netns_run(int netns_fd, int self_fd, int (*fn)(void *arg), void *arg);

/* The same for the namespace at PATH (a /run/netns or /proc/PID/ns/net
 * file). */
int netns_run_at(const char *path, int (*fn)(void *arg), void *arg);

#endif /* SKM_NETNS_H */
