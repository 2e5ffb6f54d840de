/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Cluster mode's local pods: what skmesh-cni tells meshd (cnisrv.h) and
 * what the /proc scan finds (podscan.h), handed to the Kubernetes source
 * (ksource.h), and the plugin's acknowledgement, sent once the pod is
 * enrolled: its maps written (a model holding it with its network
 * namespace applied) and, with the tunnel, its in-pod listeners open.
 * Runs in meshd's main loop.
 */
#ifndef SKM_CLUSTER_H
#define SKM_CLUSTER_H

#include <stdint.h>

struct config;
struct ksource;
struct cluster_cni;

/* How long an ADD may wait for its pod's enrolment before meshd answers
 * (below the plugin's own SKM_CNI_ACK_TIMEOUT_MS). */
#define CLUSTER_ACK_WAIT_MS	8000
/* How often local pods whose network namespace is unknown are looked for
 * in /proc again, and skmesh-cni's pending folder read again. */
#define CLUSTER_RESCAN_MS	30000

/* Opens the CNI socket (SOCKET, PENDING, PROC may be NULL: the defaults),
 * adds it to the epoll set EFD and takes what skmesh-cni left while meshd
 * was down. 0 or -errno (said). */
int cluster_cni_open(struct cluster_cni **out, struct ksource *ks, const char *socket,
		     const char *pending, const char *proc, int efd);
/* Whether FD is one of its descriptors (then call cluster_cni_process). */
int cluster_cni_owns(const struct cluster_cni *c, int fd);
void cluster_cni_process(struct cluster_cni *c);
/* A model of source version GEN was applied as config SEQ. */
void cluster_cni_applied(struct cluster_cni *c, const struct config *cfg, uint64_t gen,
			 uint64_t seq);
/* On every turn of the loop: answers what is enrolled (CFG the running
 * config, TUN_SEQ the last config whose listeners are open; NO_TUNNEL:
 * there are none to wait for), expires waits, scans /proc when due. */
void cluster_cni_tick(struct cluster_cni *c, const struct config *cfg, uint64_t tun_seq,
		      int no_tunnel);
/* Its metrics, Prometheus text (from any thread). */
struct sbuf;
void cluster_cni_metrics(struct cluster_cni *c, struct sbuf *b);
void cluster_cni_close(struct cluster_cni *c);

#endif /* SKM_CLUSTER_H */
