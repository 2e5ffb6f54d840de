/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshd's HTTP endpoints, on ztunnel's ports (libmicrohttpd, one thread
 * each):
 *   15020  /metrics and /stats/prometheus: Prometheus text format, gzip
 *          when the scraper accepts it
 *   15021  /healthz/ready: 200 once the programs are attached and the
 *          config applied, 503 (with the reason) before and while draining
 *   15000  /config_dump: what meshd runs with, as JSON (localhost only by
 *          default: it names every workload and policy)
 */
#ifndef SKM_ADMIN_H
#define SKM_ADMIN_H

#include <stdint.h>
#include <jansson.h>

struct alog;
struct cfgref;
struct events;
struct loader;
struct metrics;
struct tunnel;

struct admin_opts {
	const char *admin_addr;		/* ADDR[:PORT] of 15000, or "off" */
	const char *metrics_addr;	/* ADDR[:PORT] of 15020, or "off" */
	const char *ready_addr;		/* ADDR[:PORT] of 15021, or "off" */
	const char *node;
	const char *config_path;
	const char *bpffs;
	const char *cgroup;
};

struct admin;

/* Binds and starts serving; -errno (and a message) when a port cannot be
 * had. */
int admin_start(const struct admin_opts *o, struct metrics *m, struct alog *alog,
		struct admin **out);
/* The loaded data path (NULL: none yet, or no more): the kernel's part
 * of the metrics and of /config_dump. It must outlive its use here. */
void admin_set_loader(struct admin *a, struct loader *l);
/* What the endpoints read; all may change while serving. */
void admin_set_config(struct admin *a, struct cfgref *r);
void admin_set_tunnel(struct admin *a, struct tunnel *t);
/* Ready (1) or not, with the reason shown by /healthz/ready. */
void admin_set_ready(struct admin *a, int ready, const char *why);
/* A reload: its outcome for /config_dump ("" when it applied). */
void admin_set_reload_error(struct admin *a, const char *err);

/* Where the model comes from, when not a config file: its part of
 * /config_dump ("source") and of the metrics. The hooks are called from
 * the endpoints' threads and must outlive their use (NULL: none). */
struct sbuf;
struct admin_source {
	json_t *(*dump)(void *arg);		/* a new reference */
	void (*metrics)(void *arg, struct sbuf *b);
	void *arg;
};
void admin_set_source(struct admin *a, const struct admin_source *s);
void admin_stop(struct admin *a);

/* The endpoints, each its own port. */
enum admin_ep {
	ADMIN_EP_ADMIN,		/* 15000 */
	ADMIN_EP_METRICS,	/* 15020 */
	ADMIN_EP_READY,		/* 15021 */
};

/* What an endpoint answers to one request. */
struct admin_reply {
	unsigned int code;	/* HTTP status */
	const char *type;	/* Content-Type */
	char *body;		/* malloc'ed, LEN bytes; the caller frees it */
	size_t len;
	int gzip;		/* BODY is gzip (Content-Encoding) */
};

/* The answer of endpoint EP to METHOD URL (as the HTTP server decoded
 * them) with the request's Accept-Encoding ACCEPT_ENCODING (NULL: none),
 * over memory: the HTTP server's handler, apart from the server. Works
 * on an admin whose addresses are all "off". 0, or -ENOMEM / -EINVAL
 * (unknown EP) with nothing to send. */
int admin_answer(struct admin *a, enum admin_ep ep, const char *method, const char *url,
		 const char *accept_encoding, struct admin_reply *r);

/* Parses ADDR, ADDR:PORT or [V6]:PORT (DEFPORT when no port) into a
 * sockaddr; "off" gives 1 (nothing to serve). 0 or -EINVAL. */
struct sockaddr_storage;
int admin_parse_addr(const char *s, uint16_t defport, struct sockaddr_storage *ss,
		     unsigned int *sslen);

#endif /* SKM_ADMIN_H */
