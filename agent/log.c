// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <bpf/libbpf.h>

#include "log.h"

enum log_level log_level = LOG_INFO;
static const char *log_prog = "meshd";

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	fprintf(stderr, "%s: ", log_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/* libbpf's own messages go through the same sink; its debug chatter only
 * with -vv. */
static int libbpf_print(enum libbpf_print_level level, const char *fmt,
			va_list ap)
{
	enum log_level l = level == LIBBPF_WARN ? LOG_WARN :
			   level == LIBBPF_INFO ? LOG_DEBUG : LOG_DEBUG + 1;

	/* Netlink's extack text for an error meshd handles itself (such
	 * as "no clsact qdisc yet, create it"): only worth a debug line. */
	if (strstr(fmt, "Kernel error message"))
		l = LOG_DEBUG;

	if (l > log_level)
		return 0;
	fprintf(stderr, "%s: ", log_prog);
	return vfprintf(stderr, fmt, ap);
}

void log_init(const char *prog, enum log_level level)
{
	log_prog = prog;
	log_level = level;
	libbpf_set_print(libbpf_print);
}

const char *log_time_now(char *buf, unsigned long len)
{
	struct timespec now;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%06ldZ", now.tv_nsec / 1000);
	return buf;
}

double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int log_limit_pass(struct log_limit *l)
{
	double now = mono_ms() / 1e3;

	if (!l->primed) {
		l->tokens = l->burst;
		l->last = now;
		l->primed = 1;
	}
	l->tokens += (now - l->last) * l->rate;
	if (l->tokens > l->burst)
		l->tokens = l->burst;
	l->last = now;
	if (l->tokens >= 1) {
		l->tokens -= 1;
		return 1;
	}
	l->suppressed++;
	return 0;
}

void log_limit_report(struct log_limit *l, enum log_level level, const char *what)
{
	if (!l->suppressed)
		return;
	log_msg(level, "%lu lines about %s suppressed (at most %u at once, then %u a second)\n",
		l->suppressed, what, l->burst, l->rate);
	l->suppressed = 0;
}
