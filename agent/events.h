/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Closed-connection events from the kernel ring buffer, written as one JSON
 * access-log line each. */
#ifndef SKM_EVENTS_H
#define SKM_EVENTS_H

#include <stdio.h>

struct config;
struct ring_buffer;

struct events {
	struct ring_buffer *rb;
	FILE *log;
	const struct config **cfg;	/* current config, for workload names */
	unsigned long long seen;
	/* Lines per second at most (0: no limit), so a flood of short
	 * connections cannot make meshd spend its time writing JSON: a
	 * token bucket holding one second's worth; what it refuses is
	 * counted and said once a second. */
	unsigned int rate;
	double tokens, last_ms, report_ms;
	unsigned long long dropped, dropped_reported;
};

int events_open(struct events *ev, int ringbuf_fd, FILE *log,
		const struct config **cfg);
int events_epoll_fd(struct events *ev);
int events_consume(struct events *ev);
void events_close(struct events *ev);

#endif /* SKM_EVENTS_H */
