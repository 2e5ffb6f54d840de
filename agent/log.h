/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Logging in the style of xdp-tools: one sink, three levels, -v raises. */
#ifndef SKM_LOG_H
#define SKM_LOG_H

enum log_level {
	LOG_WARN = 0,
	LOG_INFO = 1,
	LOG_DEBUG = 2,
};

extern enum log_level log_level;

void log_init(const char *prog, enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define pr_warn(...)	log_msg(LOG_WARN, __VA_ARGS__)
#define pr_info(...)	log_msg(LOG_INFO, __VA_ARGS__)
#define pr_debug(...)	log_msg(LOG_DEBUG, __VA_ARGS__)

/* Now as RFC 3339 UTC with microseconds (2026-01-02T03:04:05.123456Z),
 * for access-log lines; BUF holds at least 32 bytes. */
const char *log_time_now(char *buf, unsigned long len);

/* A token bucket for the lines a peer can provoke (one per handshake,
 * per refused request): BURST lines at once, then RATE a second. What it
 * holds back is counted, and said in one line by log_limit_report(). */
struct log_limit {
	double tokens;
	double last;		/* CLOCK_MONOTONIC seconds of the last refill */
	unsigned long suppressed;
	unsigned int burst, rate;
	int primed;
};

#define LOG_LIMIT_INIT(b, r)	{ .burst = (b), .rate = (r) }

/* 1 if a line may be said now; 0 (and counted suppressed) if not. */
int log_limit_pass(struct log_limit *l);
/* Says how many lines about WHAT were held back since the last report,
 * if any were. */
void log_limit_report(struct log_limit *l, enum log_level level, const char *what);

#define pr_limited(l, level, ...)				\
	do {							\
		if ((level) <= log_level && log_limit_pass(l))	\
			log_msg(level, __VA_ARGS__);		\
	} while (0)

/* CLOCK_MONOTONIC in milliseconds: the one clock meshd's timers and
 * rates read. */
double mono_ms(void);

#endif /* SKM_LOG_H */
