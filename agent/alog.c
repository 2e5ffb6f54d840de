// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "alog.h"
#include "log.h"

void alog_init(struct alog *a, FILE *f, unsigned int rate)
{
	memset(a, 0, sizeof(*a));
	a->f = f;
	a->rate = rate;
	pthread_mutex_init(&a->lock, NULL);
}

void alog_fini(struct alog *a)
{
	free(a->shares);
	a->shares = NULL;
	pthread_mutex_destroy(&a->lock);
}

int alog_set_share(struct alog *a, unsigned int rate)
{
	free(a->shares);
	a->shares = NULL;
	a->share_rate = rate;
	if (!rate)
		return 0;
	a->shares = calloc(ALOG_SHARES, sizeof(*a->shares));
	return a->shares ? 0 : -ENOMEM;
}

/* A token bucket of RATE a second holding one second's worth: 1 when a
 * token was taken at NOW (ms). */
static int bucket_take(double *tokens, double *last_ms, unsigned int rate, double now)
{
	if (!*last_ms)
		*tokens = rate;
	else
		*tokens += (now - *last_ms) * rate / 1e3;
	if (*tokens > rate)
		*tokens = rate;
	*last_ms = now;
	if (*tokens < 1)
		return 0;
	*tokens -= 1;
	return 1;
}

/* WHO's bucket: a slot by hash, taken over (full) when another source
 * held it. */
static struct alog_share *share_of(struct alog *a, uint32_t who)
{
	struct alog_share *s = &a->shares[(who * 2654435761u) % ALOG_SHARES];

	if (s->who != who) {
		s->who = who;
		s->last_ms = 0;
	}
	return s;
}

int alog_admit_for(struct alog *a, uint32_t who)
{
	int ok = 1, share_ok = 1;
	double now;

	if (!a->rate && !(who && a->shares))
		return 1;
	pthread_mutex_lock(&a->lock);
	now = mono_ms();
	if (who && a->shares) {
		struct alog_share *s = share_of(a, who);

		share_ok = bucket_take(&s->tokens, &s->last_ms, a->share_rate, now);
	}
	if (share_ok && a->rate)
		ok = bucket_take(&a->tokens, &a->last_ms, a->rate, now);
	pthread_mutex_unlock(&a->lock);
	if (!share_ok)
		atomic_fetch_add_explicit(&a->share_dropped, 1, memory_order_relaxed);
	if (!share_ok || !ok)
		atomic_fetch_add_explicit(&a->dropped, 1, memory_order_relaxed);
	return share_ok && ok;
}

int alog_admit(struct alog *a)
{
	return alog_admit_for(a, 0);
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
	pr_warn("access log: %llu lines over --access-log-rate %u/s or a pod's "
		"--access-log-pod-rate %u/s not written (%llu since start, %llu of them over "
		"a pod's share)\n", d - a->dropped_reported, a->rate, a->share_rate, d,
		(unsigned long long)atomic_load_explicit(&a->share_dropped,
							 memory_order_relaxed));
	a->dropped_reported = d;
	a->report_ms = now;
}
