// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <jansson.h>

#include "alog.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
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

static const char *close_reason(__u32 prev)
{
	switch (prev) {
	case BPF_TCP_FIN_WAIT2:
	case BPF_TCP_TIME_WAIT:
	case BPF_TCP_LAST_ACK:
	case BPF_TCP_CLOSING:
		return "fin";
	case BPF_TCP_FIN_WAIT1:
		return "reset_after_fin";
	default:
		return "reset";
	}
}

/* The SPIFFE ID of the workload at IP; with NODE, only if it runs there. */
static void put_principal(json_t *o, const char *key, const struct config *cfg, __u32 ip,
			  const char *node)
{
	const struct cfg_workload *w = cfg ? config_workload_by_ip(cfg, ip) : NULL;
	char buf[512];

	if (!w || (node && (!w->node || strcmp(w->node, node))))
		return;
	config_workload_id(cfg, w, buf, sizeof(buf));
	json_object_set_new(o, key, json_string(buf));
}

/* The words of a verdict's reason (skm_names): "ns/policy: why". */
static void deny_reason(struct events *ev, __u32 id, char *buf, size_t len)
{
	struct skm_name_key k = { .kind = SKM_NAME_REASON, .id = id };
	struct skm_name_val v;

	if (!id || ev->names_fd < 0 || bpf_map_lookup_elem(ev->names_fd, &k, &v)) {
		snprintf(buf, len, "%s", id ? "denied by policy" :
			 "no verdict for this source: denied (fail closed)");
		return;
	}
	v.ns[sizeof(v.ns) - 1] = v.name[sizeof(v.name) - 1] = 0;
	if (!strcmp(v.ns, "-"))
		snprintf(buf, len, "%s", v.name);
	else
		snprintf(buf, len, "%s: %s", v.ns, v.name);
}

/* A connection the kernel refused on policy (SKM_CONN_DENIED): counted in
 * Istio's metrics as the destination's denial, and logged. */
static void handle_deny(struct events *ev, const struct skm_conn_event *e,
			const struct config *cfg)
{
	const struct skm_conn *c = &e->conn;
	int plain = !!(c->flags & SKM_CONN_PLAINTEXT);
	int at_tc = plain || (c->flags & SKM_CONN_TC_JUDGED);
	char ts[64], ip[INET_ADDRSTRLEN], why[200];
	json_t *o;

	/* TC sees every retransmission of a dropped SYN: one connection
	 * attempt is counted and logged once */
	if (at_tc) {
		uint64_t h = ((uint64_t)c->tuple.sip << 32 | c->tuple.dip) ^
			     ((uint64_t)c->tuple.sport << 16 | c->tuple.dport) * 0x9e3779b97f4a7c15ULL;
		struct deny_seen *d = &ev->denied[(h >> 32) % EVENTS_DENY_SLOTS];

		if (d->sip == c->tuple.sip && d->dip == c->tuple.dip &&
		    d->sport == c->tuple.sport && d->dport == c->tuple.dport &&
		    e->end_ns - d->at_ns < 120ULL * 1000000000ULL)
			return;
		d->sip = c->tuple.sip;
		d->dip = c->tuple.dip;
		d->sport = c->tuple.sport;
		d->dport = c->tuple.dport;
		d->at_ns = e->end_ns;
	}
	if (ev->metrics)
		metrics_conn_denied(ev->metrics, cfg, c);
	/* a source's denials count in its own share of the log (a pod
	 * hammering a port it may not reach floods only its own lines) */
	if (!alog_admit_for(ev->alog, c->tuple.sip))
		return;
	o = json_object();
	if (!o)
		return;
	json_object_set_new(o, "time", json_string(log_time_now(ts, sizeof(ts))));
	json_object_set_new(o, "event", json_string("deny"));
	json_object_set_new(o, "enforcer", json_string(at_tc ? "tc" : "connect"));
	if (c->tuple.sport) {
		put_addr(o, "src", c->tuple.sip, (__u16)c->tuple.sport);
	} else {
		inet_ntop(AF_INET, &c->tuple.sip, ip, sizeof(ip));
		json_object_set_new(o, "src", json_string(ip));
	}
	put_addr(o, "dst", c->tuple.dip, (__u16)c->tuple.dport);
	put_addr(o, "orig_dst", c->orig_ip, ntohs(c->orig_port));
	if (c->flags & SKM_CONN_VIA_VIP)
		put_addr(o, "vip", c->orig_ip, ntohs(c->orig_port));
	put_workload(o, "src_workload", cfg, c->tuple.sip);
	put_workload(o, "dst_workload", cfg, c->tuple.dip);
	/* a plaintext source has no identity the kernel can vouch for */
	if (!plain)
		put_principal(o, "src_principal", cfg, c->tuple.sip, NULL);
	put_principal(o, "dst_principal", cfg, c->tuple.dip, NULL);
	json_object_set_new(o, "response_flags", json_string("DENY"));
	deny_reason(ev, e->reason_id, why, sizeof(why));
	json_object_set_new(o, "reason", json_string(why));
	json_object_set_new(o, "action", json_string(plain ? "SYN dropped at the pod's veth" :
						     "connect() refused with EPERM"));
	alog_write(ev->alog, o, 0);
	json_decref(o);
}

static int handle_event(void *ctx, void *data, size_t size)
{
	struct events *ev = ctx;
	const struct skm_conn_event *e = data;
	const struct skm_conn *c = &e->conn;
	const struct config *cfg = *ev->cfg;
	int client = !!(c->flags & SKM_CONN_ACTIVE);
	char ts[64];
	json_t *o;

	if (size < sizeof(*e))
		return 0;
	ev->seen++;
	if (c->flags & SKM_CONN_DENIED) {
		handle_deny(ev, e, cfg);
		return 0;
	}
	if (ev->metrics)
		metrics_conn_closed(ev->metrics, ev->mx_cache, cfg, c);
	if (!alog_admit_for(ev->alog, c->owner_id))
		return 0;
	o = json_object();
	if (!o)
		return 0;
	json_object_set_new(o, "time", json_string(log_time_now(ts, sizeof(ts))));
	json_object_set_new(o, "event", json_string("close"));
	json_object_set_new(o, "cookie", json_integer((json_int_t)e->cookie));
	json_object_set_new(o, "role", json_string(client ? "client" : "server"));
	/* src is the client, dst the server, whichever end this socket is
	 * (the server's own address is what its client reached) */
	put_addr(o, "src", client ? c->tuple.sip : c->tuple.dip,
		 (__u16)(client ? c->tuple.sport : c->tuple.dport));
	put_addr(o, "dst", client ? c->tuple.dip : c->tuple.sip,
		 (__u16)(client ? c->tuple.dport : c->tuple.sport));
	put_addr(o, "orig_dst", c->orig_ip, ntohs(c->orig_port));
	if (c->flags & SKM_CONN_VIA_VIP)
		put_addr(o, "vip", c->orig_ip, ntohs(c->orig_port));
	put_workload(o, "src_workload", cfg, client ? c->tuple.sip : c->tuple.dip);
	put_workload(o, "dst_workload", cfg, client ? c->tuple.dip : c->tuple.sip);
	/* identities the kernel can vouch for: this socket's workload, and a
	 * peer on this node (known by its network namespace) */
	put_principal(o, client ? "src_principal" : "dst_principal", cfg, c->tuple.sip, NULL);
	put_principal(o, client ? "dst_principal" : "src_principal", cfg, c->tuple.dip, ev->node);
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
	json_object_set_new(o, "close", json_string(close_reason(e->prev_state)));
	json_object_set_new(o, "path", json_string(c->flags & SKM_CONN_TUNNEL ? "tunnelled" :
						   c->flags & SKM_CONN_ACCEL ? "accelerated" :
						   "passthrough"));
	/* Flushed once per batch (events_consume), not per line. */
	alog_write(ev->alog, o, 0);
	json_decref(o);
	return 0;
}

int events_open(struct events *ev, int ringbuf_fd, struct alog *log, struct metrics *m,
		const struct config **cfg)
{
	memset(ev, 0, sizeof(*ev));
	ev->names_fd = -1;
	ev->alog = log;
	ev->metrics = m;
	ev->mx_cache = m ? calloc(1, sizeof(*ev->mx_cache)) : NULL;
	if (m && !ev->mx_cache) {
		pr_warn("cannot read close events: out of memory\n");
		return -ENOMEM;
	}
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

	alog_flush(ev->alog);
	alog_report(ev->alog);
	return n;
}

void events_close(struct events *ev)
{
	ring_buffer__free(ev->rb);
	ev->rb = NULL;
	free(ev->mx_cache);
	ev->mx_cache = NULL;
}
