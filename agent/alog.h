/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The access log: one JSON line per closed connection or tunnelled stream,
 * written by meshd's main thread (kernel close events) and its tunnel
 * thread alike, under one rate limit, so a flood of short connections
 * cannot make meshd spend its time writing JSON. What the limit refuses is
 * counted (a metric) and said once a second.
 */
#ifndef SKM_ALOG_H
#define SKM_ALOG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

typedef struct json_t json_t;

/* One source's share of the lines (alog_admit_for). */
struct alog_share {
	uint32_t who;
	double tokens, last_ms;
};

#define ALOG_SHARES	1024	/* sources tracked at once (by hash) */

struct alog {
	FILE *f;
	pthread_mutex_t lock;
	unsigned int rate;	/* lines per second at most; 0: no limit */
	double tokens, last_ms, report_ms;
	unsigned int share_rate;	/* per source; 0: no share */
	struct alog_share *shares;	/* ALOG_SHARES of them */
	atomic_ullong written, dropped, share_dropped;
	unsigned long long dropped_reported;
};

void alog_init(struct alog *a, FILE *f, unsigned int rate);
void alog_fini(struct alog *a);
/* 1: a line may be written now; 0: over the rate (counted as dropped). */
int alog_admit(struct alog *a);
/* At most RATE lines a second (a second's worth at once) for any one
 * source, within the log's own rate, so one pod cannot fill the log for
 * all. 0 on success, -ENOMEM. */
int alog_set_share(struct alog *a, unsigned int rate);
/* 1 when a line of source WHO (a pod's wl_id; 0: none, only the log's
 * own rate applies) may be written now. */
int alog_admit_for(struct alog *a, uint32_t who);
/* Writes O as one line (call alog_admit first); FLUSH: fflush after. */
void alog_write(struct alog *a, json_t *o, int flush);
void alog_flush(struct alog *a);
/* Says, at most once a second, how many lines the limit refused. */
void alog_report(struct alog *a);

#endif /* SKM_ALOG_H */
