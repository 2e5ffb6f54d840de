/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshd's side of skmesh-cni's socket (the protocol: include/skmesh-cni.h).
 * Single-threaded and never blocking: meshd adds cnisrv_fd() to its epoll
 * loop and calls cnisrv_process() when it is readable and on every tick.
 * Each whole, checked request goes to the owner's ops->request with a
 * ticket; the owner answers every ticket exactly once with cnisrv_reply(),
 * at once or later (after the pod's maps are written and its listeners
 * are open). Every byte from the socket is hostile: a request is bounded
 * by SKM_CNI_MSG_MAX, each field is checked as skmesh-cni checks it, only
 * root peers are served, the number of connections is bounded and a
 * client too slow to send its request is closed.
 */
#ifndef SKM_CNISRV_H
#define SKM_CNISRV_H

#include <stddef.h>
#include <stdint.h>

enum { CNI_REQ_ADD = 1, CNI_REQ_DEL, CNI_REQ_CHECK };

#define CNI_REQ_IFS_MAX	8	/* host interfaces of a request */
#define CNI_REQ_IPS_MAX	8	/* IPv4 addresses of a request */

struct cni_req {
	int op;				/* CNI_REQ_ADD, CNI_REQ_DEL, CNI_REQ_CHECK */
	char container_id[256];
	char netns[4096];		/* "" on a DEL without one */
	char ifname[16];
	char pod_ns[64], pod_name[254], pod_uid[65];	/* "" when absent (DEL) */
	char host_ifs[CNI_REQ_IFS_MAX][16];	/* prevResult's host-side interfaces, in order */
	size_t nhost_ifs;
	uint32_t ips[CNI_REQ_IPS_MAX];	/* IPv4 addresses only, network order */
	size_t nips;
	int from_pending;		/* read from the pending folder: nobody waits */
};

struct cnisrv_opts {
	const char *socket_path;	/* NULL: SKM_CNI_SOCKET */
	const char *pending_dir;	/* NULL: SKM_CNI_PENDING_DIR */
	int max_clients;		/* 0: 64 connections at once; more are closed at once (counted) */
	int read_timeout_ms;		/* 0: 2000: a client that has not sent its whole request
					 * (or taken its whole reply) by then is closed */
};

struct cnisrv_stats {
	uint64_t requests;		/* whole, checked requests handed to the owner (pending too) */
	uint64_t bad_requests;		/* refused with an error reply: malformed, oversize, bad field */
	uint64_t refused_busy;		/* connections closed at once: max_clients reached */
	uint64_t timeouts;		/* clients closed at read_timeout_ms */
	uint64_t pending_loaded;	/* pending records handed over */
	uint64_t replies_ok, replies_err;	/* cnisrv_reply() calls */
	uint64_t refused_peer;		/* connections closed at once: the peer is not root */
	uint64_t pending_bad;		/* pending records moved aside (or removed) as invalid */
};

struct cnisrv_ops {
	/* A whole, checked request. The owner answers it, now or later, with
	 * cnisrv_reply(s, ticket, ...): exactly once per ticket, also for
	 * from_pending ones. REQ is valid only during the call. */
	void (*request)(void *arg, const struct cni_req *req, uint64_t ticket);
};

struct cnisrv;

/* Creates the socket's folder (0700) when missing and the socket (0600; a
 * stale socket file is replaced, a live one or a non-socket file at that
 * path refused). 0 and *OUT, or -errno with a pr_warn saying what. */
int cnisrv_open(const struct cnisrv_opts *o, const struct cnisrv_ops *ops, void *arg,
		struct cnisrv **out);
/* An epoll fd for meshd's loop (EPOLLIN). */
int cnisrv_fd(const struct cnisrv *s);
/* Accepts, reads, parses and expires; called when cnisrv_fd() is readable
 * and on every loop tick (at most 100 ms apart). */
void cnisrv_process(struct cnisrv *s);
/* Hands every valid record of the pending folder over as a request with
 * from_pending=1 (records already handed over and not yet answered are
 * skipped); an invalid one is logged and moved aside as NAME.bad (removed
 * if that fails). Returns how many were handed over, or -errno when the
 * folder cannot be read (a missing folder holds none: 0). */
int cnisrv_load_pending(struct cnisrv *s);
/* Answers TICKET: {"ok":true} or {"ok":false,"error":ERROR} and '\n',
 * written without blocking (a client gone is fine). A from_pending ADD
 * answered OK has its record removed; any DEL removes its container's
 * record. An unknown ticket is ignored. */
void cnisrv_reply(struct cnisrv *s, uint64_t ticket, int ok, const char *error);
void cnisrv_stats(const struct cnisrv *s, struct cnisrv_stats *out);
/* Closes every connection and the socket, unlinks the socket file (when it
 * is still the one made here) and frees S. NULL is fine. */
void cnisrv_close(struct cnisrv *s);

/*
 * The request parser, no I/O (the fuzz target's entry): LEN bytes at BUF,
 * one JSON object without its '\n'. Returns 0 with REQ filled
 * (from_pending 0), -EPROTONOSUPPORT for a version other than
 * SKM_CNI_PROTO_VERSION, or -EINVAL; ERR then says what is wrong.
 */
int cnisrv_parse(const char *buf, size_t len, struct cni_req *req, char *err, size_t errlen);

#endif /* SKM_CNISRV_H */
