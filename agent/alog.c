// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "alog.h"
#include "log.h"

static double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void alog_init(struct alog *a, FILE *f, unsigned int rate)
{
	memset(a, 0, sizeof(*a));
	a->f = f;
	a->rate = rate;
	pthread_mutex_init(&a->lock, NULL);
}

void alog_fini(struct alog *a)
{
	pthread_mutex_destroy(&a->lock);
}

/* A token bucket holding one second's worth of lines. */
int alog_admit(struct alog *a)
{
	double now;
	int ok;

	if (!a->rate)
		return 1;
	pthread_mutex_lock(&a->lock);
	now = mono_ms();
	if (!a->last_ms)
		a->tokens = a->rate;
	else
		a->tokens += (now - a->last_ms) * a->rate / 1e3;
	if (a->tokens > a->rate)
		a->tokens = a->rate;
	a->last_ms = now;
	ok = a->tokens >= 1;
	if (ok)
		a->tokens -= 1;
	pthread_mutex_unlock(&a->lock);
	if (!ok)
		atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
	return ok;
}

void alog_write(struct alog *a, json_t *o, int flush)
{
	/* stdio's own lock keeps the two threads' lines whole */
	flockfile(a->f);
	if (json_dumpf(o, a->f, JSON_COMPACT | JSON_REAL_PRECISION(9)) == 0)
		fputc('\n', a->f);
	if (flush)
		fflush(a->f);
	funlockfile(a->f);
	atomic_fetch_add_explicit(&a->written, 1, memory_order_relaxed);
}

void alog_flush(struct alog *a)
{
	fflush(a->f);
}

void alog_report(struct alog *a)
{
	unsigned long long d = atomic_load_explicit(&a->dropped, memory_order_relaxed);
	double now;

	if (d == a->dropped_reported)
		return;
	now = mono_ms();
	if (now - a->report_ms < 1e3)
		return;
	pr_warn("access log: %llu lines over --access-log-rate %u/s not written "
		"(%llu since start)\n", d - a->dropped_reported, a->rate, d);
	a->dropped_reported = d;
	a->report_ms = now;
}
