/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Closed-connection events from the kernel ring buffer: counted in the
 * metrics and written as one JSON access-log line each. */
#ifndef SKM_EVENTS_H
#define SKM_EVENTS_H

#include <stdio.h>

struct alog;
struct config;
struct metrics;
struct mx_conn_cache;
struct ring_buffer;

/* plaintext SYNs TC dropped lately, to count a retransmitted one once */
#define EVENTS_DENY_SLOTS 256

struct deny_seen {
	unsigned int sip, dip, sport, dport;
	unsigned long long at_ns;
};

struct events {
	struct ring_buffer *rb;
	struct alog *alog;		/* rate limited (alog.h) */
	struct metrics *metrics;	/* Istio's TCP metrics, or NULL */
	struct mx_conn_cache *mx_cache;
	const struct config **cfg;	/* current config, for workload names */
	const char *node;		/* this node, whose pods the kernel knows */
	int names_fd;			/* skm_names: why a verdict denied */
	struct deny_seen denied[EVENTS_DENY_SLOTS];
	unsigned long long seen;
};

/* Each close event feeds the metrics M and, within the log's rate, a
 * JSON line of LOG. */
int events_open(struct events *ev, int ringbuf_fd, struct alog *log, struct metrics *m,
		const struct config **cfg);
int events_epoll_fd(struct events *ev);
int events_consume(struct events *ev);
void events_close(struct events *ev);

#endif /* SKM_EVENTS_H */
