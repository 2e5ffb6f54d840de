// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <bpf/libbpf.h>
#include <jansson.h>

#include "config.h"
#include "events.h"
#include "log.h"
#include "skmesh.h"

static void put_addr(json_t *o, const char *key, __u32 ip, __u16 port_host)
{
	char buf[INET_ADDRSTRLEN + 8], ipbuf[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &ip, ipbuf, sizeof(ipbuf));
	snprintf(buf, sizeof(buf), "%s:%u", ipbuf, port_host);
	json_object_set_new(o, key, json_string(buf));
}

static void put_workload(json_t *o, const char *key, const struct config *cfg, __u32 ip)
{
	const struct cfg_workload *w = cfg ? config_workload_by_ip(cfg, ip) : NULL;
	char buf[256];

	if (!w)
		return;
	snprintf(buf, sizeof(buf), "%s/%s", w->ns, w->name);
	json_object_set_new(o, key, json_string(buf));
}

static double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* 1: this line may be written; 0: over the rate, counted as dropped. */
static int take_token(struct events *ev)
{
	double now = mono_ms();

	if (!ev->last_ms)
		ev->tokens = ev->rate;
	else
		ev->tokens += (now - ev->last_ms) * ev->rate / 1e3;
	if (ev->tokens > ev->rate)
		ev->tokens = ev->rate;
	ev->last_ms = now;
	if (ev->tokens < 1) {
		ev->dropped++;
		return 0;
	}
	ev->tokens -= 1;
	return 1;
}

static int handle_event(void *ctx, void *data, size_t size)
{
	struct events *ev = ctx;
	const struct skm_conn_event *e = data;
	const struct skm_conn *c = &e->conn;
	const struct config *cfg = *ev->cfg;
	char ts[64];
	json_t *o;

	if (size < sizeof(*e))
		return 0;
	ev->seen++;
	if (ev->rate && !take_token(ev))
		return 0;
	o = json_object();
	if (!o)
		return 0;
	json_object_set_new(o, "time", json_string(log_time_now(ts, sizeof(ts))));
	json_object_set_new(o, "event", json_string("close"));
	json_object_set_new(o, "cookie", json_integer((json_int_t)e->cookie));
	json_object_set_new(o, "role", json_string(c->flags & SKM_CONN_ACTIVE ? "client" : "server"));
	put_addr(o, "src", c->tuple.sip, (__u16)c->tuple.sport);
	put_addr(o, "dst", c->tuple.dip, (__u16)c->tuple.dport);
	put_addr(o, "orig_dst", c->orig_ip, ntohs(c->orig_port));
	put_workload(o, "src_workload", cfg, c->tuple.sip);
	put_workload(o, "dst_workload", cfg, c->tuple.dip);
	if (c->flags & SKM_CONN_VIA_VIP)
		json_object_set_new(o, "svc_id", json_integer(c->svc_id));
	json_object_set_new(o, "bytes_sent", json_integer((json_int_t)c->tx_bytes));
	json_object_set_new(o, "bytes_received", json_integer((json_int_t)c->rx_bytes));
	json_object_set_new(o, "segs_in", json_integer(c->segs_in));
	json_object_set_new(o, "segs_out", json_integer(c->segs_out));
	json_object_set_new(o, "retrans", json_integer(c->total_retrans));
	json_object_set_new(o, "srtt_us", json_integer(c->srtt_us));
	json_object_set_new(o, "start_ns", json_integer((json_int_t)c->start_ns));
	json_object_set_new(o, "duration_ms",
			    json_real((double)(e->end_ns - c->start_ns) / 1e6));
	json_object_set_new(o, "path", json_string(c->flags & SKM_CONN_TUNNEL ? "tunnelled" :
						   c->flags & SKM_CONN_ACCEL ? "accelerated" :
						   "passthrough"));
	/* Flushed once per batch (events_consume), not per line. */
	/* The tunnel thread writes whole lines to the same log. */
	flockfile(ev->log);
	if (json_dumpf(o, ev->log, JSON_COMPACT) == 0)
		fputc('\n', ev->log);
	funlockfile(ev->log);
	json_decref(o);
	return 0;
}

int events_open(struct events *ev, int ringbuf_fd, FILE *log, const struct config **cfg)
{
	memset(ev, 0, sizeof(*ev));
	ev->log = log;
	ev->cfg = cfg;
	ev->rb = ring_buffer__new(ringbuf_fd, handle_event, ev, NULL);
	if (!ev->rb) {
		int err = -errno;

		pr_warn("cannot open the skm_events ring buffer: %s\n", strerror(-err));
		return err;
	}
	return 0;
}

int events_epoll_fd(struct events *ev)
{
	return ring_buffer__epoll_fd(ev->rb);
}

int events_consume(struct events *ev)
{
	int n = ring_buffer__consume(ev->rb);

	fflush(ev->log);
	if (ev->dropped != ev->dropped_reported && mono_ms() - ev->report_ms >= 1e3) {
		pr_warn("access log: %llu lines over --access-log-rate %u/s not written "
			"(%llu since start)\n", ev->dropped - ev->dropped_reported, ev->rate,
			ev->dropped);
		ev->dropped_reported = ev->dropped;
		ev->report_ms = mono_ms();
	}
	return n;
}

void events_close(struct events *ev)
{
	ring_buffer__free(ev->rb);
	ev->rb = NULL;
}
