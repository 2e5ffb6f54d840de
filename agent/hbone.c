// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The HBONE engine: TLS connections (OpenSSL, non-blocking) carrying
 * HTTP/2 (libnghttp2, fed through its memory send/receive interface) whose
 * CONNECT streams are each relayed to one TCP socket.
 *
 * Flow control never buffers without bound: TCP -> tunnel reads at most
 * HB_TCP_BUF per stream ahead of what HTTP/2 may send, and stops reading
 * while the TLS send queue is full; tunnel -> TCP hands the peer window
 * back (automatic window updates are off) only for bytes the TCP socket
 * took, so a reader that stops makes its peer stop at the stream window.
 *
 * Half-close: a FIN from the TCP side becomes END_STREAM and the other
 * direction keeps flowing; END_STREAM from the peer becomes shutdown(WR)
 * once everything before it is written. RST_STREAM becomes a TCP reset
 * and a TCP error (or reset) becomes RST_STREAM.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "alog.h"
#include "certs.h"
#include "hbone.h"
#include "log.h"
#include "metrics.h"
#include "model.h"

#define HB_RBUF		(64U << 10)
#define HB_TLS_RBUF		(64U << 10)	/* OpenSSL's read-ahead buffer */
#define HB_MAX_DATA		(128U << 10)	/* DATA payload we send at most */
#define HB_STEP			(16U << 10)	/* a read from a pod over the total */

enum hb_state {
	HB_CONNECTING,		/* TCP connect in progress (client) */
	HB_HANDSHAKE,
	HB_READY,
	HB_CLOSED,
};

struct hb_conn {
	struct tun_obj o;
	struct tunnel *t;
	int fd;
	SSL *ssl;
	nghttp2_session *h2;
	int client;
	enum hb_state state;
	char local_id[SKM_SPIFFE_MAX];
	char peer_id[SKM_SPIFFE_MAX];	/* expected (client), verified (both) */
	char node[64];			/* client: the destination node */
	uint32_t pod_ip;		/* server: the pod whose 15008 it came to */
	uint32_t src_ip;		/* client: the pod it is dialled from */
	uint32_t peer_ip;
	uint16_t peer_port;
	unsigned char *wbuf;
	size_t wlen, woff, wcap;
	int nstreams;			/* streams using it (incl. pending) */
	int counted_in;			/* in t->in_conns and t->peers */
	int in_hs;			/* in t->hs_inflight */
	int rd_paused;			/* TLS reads wait for buffers to drain */
	long ibuf;			/* queued toward the peer: streams' TCP
					 * reads and TLS records */
	long obuf;			/* queued toward the pods */
	int goaway;			/* no new streams */
	time_t started, last_active, ping_sent;
	int ping_out;
	struct hb_stream *streams;	/* doubly linked, via sprev/snext */
	struct hb_conn *next;		/* t->conns */
	struct hb_conn *dead_next;
};

struct hb_stream {
	struct tun_obj o;
	struct hb_conn *hc;
	int fd;
	int32_t sid;			/* 0: not submitted yet */
	int client;
	int h2_open;			/* the stream exists in the session */
	int established;		/* 200 sent (server) or received (client) */
	int connecting;			/* server: upstream connect() pending */
	int status;
	int deferred;			/* our data provider is waiting */
	/* TCP -> tunnel: ibuf exists only while bytes wait in it (or the
	 * pod keeps sending: a bulk stream keeps it between reads) */
	unsigned char *ibuf;
	size_t ilen, ioff, icap;
	int tcp_eof, eof_sent;
	int tcp_drained;		/* the last read found the socket empty */
	/* tunnel -> TCP: obuf exists only while bytes wait in it */
	unsigned char *obuf;
	size_t olen, ooff, ocap;
	size_t to_consume;		/* written to TCP, window not yet returned */
	int h2_eof, shut_wr;
	/* for the access log */
	uint64_t tx, rx;
	struct timespec start;
	uint32_t src_ip, dst_ip, vip;
	uint16_t src_port, dst_port, vport;
	char src_wl[130], dst_wl[130];
	char src_id[SKM_SPIFFE_MAX], dst_id[SKM_SPIFFE_MAX];
	char authority[80], forwarded[96];
	char why[200];
	struct hb_stream *sprev, *snext;
	struct hb_stream *dead_next;
	int counted;			/* in SKM_TUN_STREAMS_OPEN */
	int rd_paused;			/* TCP reads wait for buffers to drain */
	struct mx_series *mx;		/* Istio's TCP metrics, once answered */
	/* client: what it takes to send it again on another connection */
	char src_ns[64], src_sa[128], dst_node[64];
	int retried;
	/* skm_tun_bytes: the pod socket's 4-tuple, what was published */
	struct skm_sock_key podkey;
	int podkey_set;
	uint64_t pub_tx, pub_rx;
};

static void conn_flush(struct hb_conn *hc);
static void conn_fail(struct hb_conn *hc, const char *why);
static void conn_read(struct hb_conn *hc);
static void stream_update(struct hb_stream *s);
static void stream_check_done(struct hb_stream *s);
static void stream_unpublish(struct tunnel *t, struct hb_stream *s);

/* --- the host (struct hbone_host) ------------------------------------ */

static int t_host_watch(struct tunnel *t, int fd, struct tun_obj *o, uint32_t events)
{
	return t->host->watch(t, fd, o, events);
}

static void t_host_unwatch(struct tunnel *t, int fd, struct tun_obj *o)
{
	t->host->unwatch(t, fd, o);
}

static int t_host_connect(struct tunnel *t, int netns_fd, uint32_t ip, uint16_t port, int mark,
			  uint32_t from)
{
	return t->host->connect(t, netns_fd, ip, port, mark, from);
}

static struct tun_pod *t_host_pod_find(struct tunnel *t, uint32_t ip)
{
	return t->host->pod_find(t, ip);
}

static int t_host_authorize(struct tunnel *t, const char *peer_id, uint32_t src_ip,
			    uint32_t dst_ip, uint16_t dst_port, struct tun_target *out,
			    char *why, size_t whylen)
{
	return t->host->authorize(t, peer_id, src_ip, dst_ip, dst_port, out, why, whylen);
}

/* --- small helpers ---------------------------------------------------- */

/* Makes room for N more bytes at the end of the queue BUF (LEN bytes, of
 * which the first OFF are already sent, CAP allocated): the sent part is
 * dropped first, then the buffer doubles from FIRST_CAP as needed. 0, or
 * -ENOMEM with the queue as it was. */
static int queue_room(unsigned char **buf, size_t *len, size_t *off, size_t *cap, size_t n,
		      size_t first_cap)
{
	size_t c = *cap ? *cap : first_cap;
	unsigned char *p;

	if (*len + n <= *cap)
		return 0;
	if (*off) {
		memmove(*buf, *buf + *off, *len - *off);
		*len -= *off;
		*off = 0;
	}
	while (c < *len + n)
		c *= 2;
	if (c != *cap) {
		p = realloc(*buf, c);
		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = c;
	}
	return 0;
}

static void ip_str(uint32_t ip, char *buf, size_t len)
{
	if (!inet_ntop(AF_INET, &ip, buf, len))
		snprintf(buf, len, "?");
}

/* --- bounds ----------------------------------------------------------- */

/* Counts D more bytes queued toward the peer (IN) or toward the pods. */
static void buf_add(struct hb_conn *hc, long d, int in)
{
	if (!hc)
		return;
	if (in)
		hc->ibuf += d;
	else
		hc->obuf += d;
	hc->t->buffered += d;
}

static long stream_ibuf(const struct hb_stream *s)
{
	return (long)(s->ilen - s->ioff);
}

static long stream_obuf(const struct hb_stream *s)
{
	return (long)(s->olen - s->ooff);
}

/* An empty stream buffer goes back to the allocator, so an idle stream
 * costs its struct and nothing more. */
static void stream_free_ibuf(struct hb_stream *s)
{
	free(s->ibuf);
	s->ibuf = NULL;
	s->ilen = s->ioff = s->icap = 0;
}

static void stream_free_obuf(struct hb_stream *s)
{
	free(s->obuf);
	s->obuf = NULL;
	s->olen = s->ooff = s->ocap = 0;
}

/* Whether the bytes buffered by all connections reached their bound. */
static int total_full(const struct tunnel *t)
{
	return t->buffered >= t->o.lim.buffer_total;
}

/* Whether reading more from pods for HC would go over a bound: its own,
 * or, once all connections together hold the total, any byte of its
 * own not yet sent. A connection whose peer reads goes on in small
 * steps however full the others keep the total. */
static int conn_in_full(const struct hb_conn *hc)
{
	return hc->ibuf >= hc->t->o.lim.conn_buffer || (hc->ibuf > 0 && total_full(hc->t));
}

/* Whether reading more from HC's peer would go over a bound: the
 * HTTP/2 connection window (conn_buffer) holds each connection; over
 * the total, the connections that hold bytes for pods wait. */
static int conn_out_full(const struct hb_conn *hc)
{
	return hc->obuf > 0 && total_full(hc->t);
}

struct peer_count {
	uint32_t ip;
	int n;			/* inbound connections */
	int hs;			/* ... of which in their handshake */
	struct peer_count *next;
};

static struct peer_count **peer_slot(struct tunnel *t, uint32_t ip)
{
	uint32_t h = ip * 2654435761U;
	struct peer_count **pp = &t->peers[h >> 24];

	while (*pp && (*pp)->ip != ip)
		pp = &(*pp)->next;
	return pp;
}

static const struct peer_count *peer_get(struct tunnel *t, uint32_t ip)
{
	static const struct peer_count none;
	const struct peer_count *p = *peer_slot(t, ip);

	return p ? p : &none;
}

/* N more inbound connections from IP, HS more of them in their
 * handshake; 0, or -ENOMEM. */
static int peer_add(struct tunnel *t, uint32_t ip, int n, int hs)
{
	struct peer_count **pp = peer_slot(t, ip), *p = *pp;

	if (!p) {
		if (n <= 0)
			return 0;
		p = calloc(1, sizeof(*p));
		if (!p)
			return -ENOMEM;
		p->ip = ip;
		*pp = p;
	}
	p->n += n;
	p->hs += hs;
	if (p->n <= 0) {
		*pp = p->next;
		free(p);
	}
	return 0;
}

/* HC's handshake is over (done or failed). */
static void conn_hs_done(struct hb_conn *hc)
{
	if (!hc->in_hs)
		return;
	hc->t->hs_inflight--;
	peer_add(hc->t, hc->peer_ip, 0, -1);
	hc->in_hs = 0;
}

static const char *ssl_err_str(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (!e) {
		snprintf(buf, len, "connection closed during the handshake");
		return buf;
	}
	ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static void set_nv(nghttp2_nv *nv, const char *name, const char *value)
{
	nv->name = (uint8_t *)name;
	nv->namelen = strlen(name);
	nv->value = (uint8_t *)value;
	nv->valuelen = strlen(value);
	nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static void access_log(struct tunnel *t, struct hb_stream *s, const char *end)
{
	struct alog *al = t->o.access_log;
	struct timespec now;
	char ts[64], a[INET_ADDRSTRLEN + 8], ip[INET_ADDRSTRLEN];
	json_t *o;

	/* each client address has its share of the log (a peer opening
	 * streams as fast as it can floods only its own lines) */
	if (!al || !alog_admit_for(al, s->src_ip))
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	o = json_object();
	if (!o)
		return;
	json_object_set_new(o, "time", json_string(log_time_now(ts, sizeof(ts))));
	json_object_set_new(o, "event", json_string("close"));
	json_object_set_new(o, "path", json_string("tunnel"));
	json_object_set_new(o, "role", json_string(s->client ? "client" : "server"));
	if (s->src_ip) {
		ip_str(s->src_ip, ip, sizeof(ip));
		snprintf(a, sizeof(a), "%s:%u", ip, s->src_port);
		json_object_set_new(o, "src", json_string(a));
	}
	if (s->dst_ip) {
		ip_str(s->dst_ip, ip, sizeof(ip));
		snprintf(a, sizeof(a), "%s:%u", ip, s->dst_port);
		json_object_set_new(o, "dst", json_string(a));
	}
	if (s->vip && s->vip != s->dst_ip) {
		ip_str(s->vip, ip, sizeof(ip));
		snprintf(a, sizeof(a), "%s:%u", ip, s->vport);
		json_object_set_new(o, "orig_dst", json_string(a));
	}
	if (s->src_wl[0])
		json_object_set_new(o, "src_workload", json_string(s->src_wl));
	if (s->dst_wl[0])
		json_object_set_new(o, "dst_workload", json_string(s->dst_wl));
	if (s->src_id[0])
		json_object_set_new(o, "src_principal", json_string(s->src_id));
	if (s->dst_id[0])
		json_object_set_new(o, "dst_principal", json_string(s->dst_id));
	if (s->hc) {
		ip_str(s->hc->peer_ip, ip, sizeof(ip));
		snprintf(a, sizeof(a), "%s:%u", ip, s->hc->peer_port);
		json_object_set_new(o, "peer", json_string(a));
	}
	json_object_set_new(o, "response_code", json_integer(s->status));
	json_object_set_new(o, "bytes_sent", json_integer((json_int_t)s->tx));
	json_object_set_new(o, "bytes_received", json_integer((json_int_t)s->rx));
	json_object_set_new(o, "duration_ms",
			    json_real((now.tv_sec - s->start.tv_sec) * 1e3 +
				      (now.tv_nsec - s->start.tv_nsec) / 1e6));
	json_object_set_new(o, "close", json_string(end));
	if (s->why[0])
		json_object_set_new(o, "reason", json_string(s->why));
	/* flushed once per turn of the tunnel's loop (tunnel_main) */
	alog_write(al, o, 0);
	t->alog_pending = 1;
	json_decref(o);
}

/* --- metrics ---------------------------------------------------------- */

/* Istio's TCP series of S once it is answered (FLAGS: how), counting it
 * opened. The client end reports as the source, the server end as the
 * destination; both know the peer by its certificate. */
static void stream_metrics_open(struct tunnel *t, struct hb_stream *s, enum mx_flags flags)
{
	const struct config *cfg = t->cur ? t->cur->cfg : NULL;
	struct mx_tcp_key k = { .mtls = 1, .flags = flags };
	struct metrics *m = t->o.metrics;

	if (!m || !cfg || s->mx)
		return;
	k.reporter = s->client ? MX_SOURCE : MX_DESTINATION;
	k.src = config_workload_by_ip(cfg, s->src_ip);
	k.dst = config_workload_by_ip(cfg, s->dst_ip);
	k.src_principal = s->src_id[0] ? s->src_id : NULL;
	k.dst_principal = s->dst_id[0] ? s->dst_id : NULL;
	if (s->client && s->vip && s->vip != s->dst_ip)
		k.svc = metrics_service_for(m, cfg, s->vip, s->vport, 1);
	else
		k.svc = metrics_service_for(m, cfg, s->dst_ip, s->dst_port, 0);
	s->mx = metrics_tcp_series(m, &k);
	mx_add(s->mx, MX_OPENED, 1);
	/* received: what the client sent; the client end's tx, the server's rx */
	mx_add(s->mx, MX_RECEIVED, s->client ? s->tx : s->rx);
	mx_add(s->mx, MX_SENT, s->client ? s->rx : s->tx);
}

static enum mx_flags refusal_flags(int status)
{
	return status == 401 || status == 403 ? MX_FLAG_DENY : MX_FLAG_CONNECT;
}

/* --- streams ---------------------------------------------------------- */

/* Makes S one of HC's streams. */
static void stream_link(struct hb_stream *s, struct hb_conn *hc)
{
	s->hc = hc;
	s->sprev = NULL;
	s->snext = hc->streams;
	if (hc->streams)
		hc->streams->sprev = s;
	hc->streams = s;
	hc->nstreams++;
}

static struct hb_stream *stream_new(struct hb_conn *hc, int client)
{
	struct hb_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->o.kind = TUN_OBJ_STREAM;
	s->fd = -1;
	s->client = client;
	clock_gettime(CLOCK_REALTIME, &s->start);
	stream_link(s, hc);
	tun_stat(hc->t, SKM_TUN_STREAMS_OPEN, 1);
	s->counted = 1;
	return s;
}

/* Detaches S from its connection (the HTTP/2 side is over). */
static void stream_unlink(struct hb_stream *s)
{
	struct hb_conn *hc = s->hc;

	if (!hc)
		return;
	if (s->sprev)
		s->sprev->snext = s->snext;
	else
		hc->streams = s->snext;
	if (s->snext)
		s->snext->sprev = s->sprev;
	s->sprev = s->snext = NULL;
	hc->nstreams--;
	hc->last_active = time(NULL);
}

static void stream_close_fd(struct hb_stream *s, int reset)
{
	struct tunnel *t;

	if (s->fd < 0)
		return;
	t = s->hc ? s->hc->t : NULL;
	if (t) {
		t_host_unwatch(t, s->fd, &s->o);
		stream_unpublish(t, s);
	}
	if (reset) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(s->fd);
	s->fd = -1;
}

/* --- live byte counts for meshctl (skm_tun_bytes) --------------------- */

static void stream_publish(struct tunnel *t, struct hb_stream *s)
{
	struct skm_tun_bytes b = { .tx = s->tx, .rx = s->rx };

	if (!s->podkey_set || t->bytes_fd < 0 || (s->tx == s->pub_tx && s->rx == s->pub_rx))
		return;
	if (!bpf_map_update_elem(t->bytes_fd, &s->podkey, &b, BPF_ANY)) {
		s->pub_tx = s->tx;
		s->pub_rx = s->rx;
	}
}

/* The pod socket is gone: its 4-tuple may come back with another one. */
static void stream_unpublish(struct tunnel *t, struct hb_stream *s)
{
	if (s->podkey_set && (s->pub_tx || s->pub_rx) && t->bytes_fd >= 0)
		bpf_map_delete_elem(t->bytes_fd, &s->podkey);
	s->podkey_set = 0;
}

/* Frees S once both of its sides are over. */
static void stream_maybe_free(struct tunnel *t, struct hb_stream *s, const char *end)
{
	if (s->fd >= 0 || s->h2_open || s->o.dead)
		return;
	if (s->counted) {
		tun_stat(t, SKM_TUN_STREAMS_OPEN, -1);
		s->counted = 0;
	}
	/* refused, or (client) the tunnel to the peer never came up */
	if (!s->mx && (s->client || (s->status && s->status != 200)))
		stream_metrics_open(t, s, refusal_flags(s->status));
	mx_add(s->mx, MX_CLOSED, 1);
	access_log(t, s, end);
	stream_unpublish(t, s);
	/* what was queued for the other side will not be sent */
	buf_add(s->hc, -stream_ibuf(s), 1);
	buf_add(s->hc, -stream_obuf(s), 0);
	s->ilen = s->ioff = s->olen = s->ooff = 0;
	stream_unlink(s);
	s->hc = NULL;
	s->o.dead = 1;
	s->dead_next = t->dead_streams;
	t->dead_streams = s;
}

/* Ends S now: TCP reset, RST_STREAM to the peer. */
static void stream_abort(struct hb_stream *s, uint32_t h2_error, const char *why)
{
	struct hb_conn *hc = s->hc;
	struct tunnel *t = hc->t;

	if (why && !s->why[0])
		snprintf(s->why, sizeof(s->why), "%s", why);
	stream_close_fd(s, 1);
	if (s->h2_open && hc->h2) {
		nghttp2_session_set_stream_user_data(hc->h2, s->sid, NULL);
		nghttp2_submit_rst_stream(hc->h2, NGHTTP2_FLAG_NONE, s->sid, h2_error);
		s->h2_open = 0;
	}
	stream_maybe_free(t, s, "reset");
}

/* Writes what the tunnel delivered to the TCP socket; returns the
 * window of what was written. */
static void stream_write_out(struct hb_stream *s)
{
	while (s->fd >= 0 && !s->connecting && s->ooff < s->olen) {
		ssize_t n = write(s->fd, s->obuf + s->ooff, s->olen - s->ooff);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			stream_abort(s, NGHTTP2_CONNECT_ERROR, strerror(errno));
			return;
		}
		s->ooff += n;
		s->to_consume += n;
		buf_add(s->hc, -n, 0);
	}
	if (s->ooff == s->olen)
		stream_free_obuf(s);
}

static void stream_give_window(struct hb_stream *s)
{
	struct hb_conn *hc = s->hc;

	if (!s->to_consume || !hc || !hc->h2)
		return;
	if (s->h2_open)
		nghttp2_session_consume(hc->h2, s->sid, s->to_consume);
	else
		nghttp2_session_consume_connection(hc->h2, s->to_consume);
	s->to_consume = 0;
}

/* Epoll interest of the TCP side from the stream's state. */
static void stream_update(struct hb_stream *s)
{
	uint32_t ev = 0;

	if (s->fd < 0 || !s->hc)
		return;
	if (s->connecting)
		ev = EPOLLOUT;
	else {
		if (!s->tcp_eof && s->ilen < HB_TCP_BUF) {
			if (!conn_in_full(s->hc)) {
				ev |= EPOLLIN;
				s->rd_paused = 0;
			} else {
				/* flow control: the pod waits, nothing is dropped */
				if (!s->rd_paused)
					tun_stat(s->hc->t, SKM_TUN_BUFFER_PAUSED, 1);
				s->rd_paused = 1;
				s->hc->t->paused = 1;
			}
		}
		if (s->ooff < s->olen)
			ev |= EPOLLOUT;
	}
	/* With nothing to wait for, the fd stays registered but silent;
	 * EPOLLERR/HUP still come, and tell of a reset. */
	t_host_watch(s->hc->t, s->fd, &s->o, ev);
}

static void stream_check_done(struct hb_stream *s)
{
	if (s->o.dead)
		return;
	if (s->fd >= 0 && !s->connecting && s->h2_eof && !s->shut_wr && s->ooff == s->olen) {
		shutdown(s->fd, SHUT_WR);
		s->shut_wr = 1;
	}
	/* The HTTP/2 stream closed cleanly (both ends sent END_STREAM) and
	 * all it carried is written: the TCP side is done both ways. */
	if (s->fd >= 0 && !s->h2_open && s->sid > 0 && s->ooff == s->olen &&
	    (s->shut_wr || !s->established)) {
		stream_close_fd(s, 0);
	}
	if (s->hc)
		stream_maybe_free(s->hc->t, s, "closed");
}

/* TCP -> tunnel. */
static ssize_t data_read_cb(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t length,
			    uint32_t *flags, nghttp2_data_source *src, void *user)
{
	struct hb_stream *s = src->ptr;
	size_t n;

	(void)h2; (void)sid; (void)user;
	if (!s->established) {
		s->deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	n = s->ilen - s->ioff;
	if (n) {
		if (n > length)
			n = length;
		memcpy(buf, s->ibuf + s->ioff, n);
		s->ioff += n;
		s->tx += n;
		buf_add(s->hc, -(long)n, 1);
		mx_add(s->mx, s->client ? MX_RECEIVED : MX_SENT, n);
		if (s->ioff == s->ilen) {
			s->ioff = s->ilen = 0;
			/* nothing more waits: an idle stream holds no buffer */
			if (s->tcp_drained || s->tcp_eof)
				stream_free_ibuf(s);
			if (s->tcp_eof) {
				*flags |= NGHTTP2_DATA_FLAG_EOF;
				s->eof_sent = 1;
			}
		} else if (s->ioff > HB_TCP_BUF / 2) {
			memmove(s->ibuf, s->ibuf + s->ioff, s->ilen - s->ioff);
			s->ilen -= s->ioff;
			s->ioff = 0;
		}
		tun_stat(s->hc->t, SKM_TUN_BYTES_TO_PEERS, n);
		stream_update(s);
		return n;
	}
	if (s->tcp_eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		s->eof_sent = 1;
		return 0;
	}
	s->deferred = 1;
	return NGHTTP2_ERR_DEFERRED;
}

static void stream_resume(struct hb_stream *s)
{
	if (s->deferred && s->h2_open && s->hc && s->hc->h2 && s->established) {
		s->deferred = 0;
		nghttp2_session_resume_data(s->hc->h2, s->sid);
	}
}

static void stream_read_tcp(struct hb_stream *s)
{
	while (s->fd >= 0 && !s->tcp_eof && s->ilen < HB_TCP_BUF && !conn_in_full(s->hc)) {
		size_t want;
		ssize_t n;

		/* the buffer starts at HB_STEP and doubles while the pod
		 * fills it, up to HB_TCP_BUF */
		if (s->ilen == s->icap &&
		    queue_room(&s->ibuf, &s->ilen, &s->ioff, &s->icap, HB_STEP, HB_STEP)) {
			stream_abort(s, NGHTTP2_INTERNAL_ERROR, "out of memory");
			return;
		}
		want = s->icap - s->ilen;
		/* over the total, one small step at a time */
		if (total_full(s->hc->t) && want > HB_STEP)
			want = HB_STEP;
		n = read(s->fd, s->ibuf + s->ilen, want);

		if (n > 0) {
			s->ilen += n;
			buf_add(s->hc, n, 1);
			s->tcp_drained = (size_t)n < want;
			if (s->tcp_drained)
				break;	/* drained: epoll tells of more */
			continue;
		}
		if (n == 0) {
			s->tcp_eof = 1;
			break;
		}
		if (errno == EAGAIN || errno == EINTR) {
			s->tcp_drained = 1;
			if (s->ilen == s->ioff)
				stream_free_ibuf(s);
			break;
		}
		stream_abort(s, NGHTTP2_CONNECT_ERROR, strerror(errno));
		return;
	}
	stream_resume(s);
}

static void stream_event(struct tunnel *t, struct hb_stream *s, uint32_t events)
{
	struct hb_conn *hc = s->hc;

	if (!hc)
		return;
	if (s->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		s->connecting = 0;
		if (err) {
			nghttp2_nv nv[1];

			set_nv(&nv[0], ":status", "503");
			s->status = 503;
			snprintf(s->why, sizeof(s->why), "upstream connect: %s", strerror(err));
			tun_stat(t, SKM_TUN_IN_UPSTREAM_FAILED, 1);
			pr_info("tunnel: 503 for %s -> %s: %s\n", hc->peer_id, s->authority,
				strerror(err));
			stream_close_fd(s, 0);
			nghttp2_submit_response(hc->h2, s->sid, nv, 1, NULL);
		} else {
			nghttp2_data_provider dp = { .source.ptr = s, .read_callback = data_read_cb };
			struct sockaddr_in la;
			socklen_t ll = sizeof(la);
			nghttp2_nv nv[1];

			/* the app's record: its ip:port -> our upstream end */
			if (!getsockname(s->fd, (struct sockaddr *)&la, &ll)) {
				s->podkey = (struct skm_sock_key){
					.sip = s->dst_ip, .dip = la.sin_addr.s_addr,
					.sport = s->dst_port, .dport = ntohs(la.sin_port) };
				s->podkey_set = 1;
			}
			set_nv(&nv[0], ":status", "200");
			s->status = 200;
			s->established = 1;
			tun_stat(t, SKM_TUN_IN_STREAMS_OK, 1);
			stream_metrics_open(t, s, MX_FLAG_NONE);
			nghttp2_submit_response(hc->h2, s->sid, nv, 1, &dp);
			stream_write_out(s);
		}
		if (!s->o.dead) {
			stream_update(s);
			stream_check_done(s);
		}
		conn_flush(hc);
		return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		stream_read_tcp(s);
	if (!s->o.dead && (events & (EPOLLOUT | EPOLLERR)))
		stream_write_out(s);
	if (!s->o.dead) {
		stream_give_window(s);
		stream_update(s);
		stream_check_done(s);
	}
	conn_flush(hc);
}

/* --- HTTP/2 callbacks ------------------------------------------------- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
	struct hb_conn *hc = user;
	struct hb_stream *s;

	if (hc->client || f->hd.type != NGHTTP2_HEADERS ||
	    f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (hc->goaway) {
		nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, f->hd.stream_id,
					  NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	s = stream_new(hc, 0);
	if (!s)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	s->sid = f->hd.stream_id;
	s->h2_open = 1;
	snprintf(s->src_id, sizeof(s->src_id), "%s", hc->peer_id);
	snprintf(s->dst_id, sizeof(s->dst_id), "%s", hc->local_id);
	nghttp2_session_set_stream_user_data(h2, s->sid, s);
	return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user)
{
	struct hb_stream *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);

	(void)flags; (void)user;
	if (!s || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (namelen == 7 && !memcmp(name, ":status", 7)) {
		char v[8] = "";

		memcpy(v, value, valuelen < sizeof(v) - 1 ? valuelen : sizeof(v) - 1);
		s->status = atoi(v);
	} else if (namelen == 10 && !memcmp(name, ":authority", 10)) {
		snprintf(s->authority, sizeof(s->authority), "%.*s", (int)valuelen, value);
	} else if (namelen == 9 && !memcmp(name, "forwarded", 9)) {
		snprintf(s->forwarded, sizeof(s->forwarded), "%.*s", (int)valuelen, value);
	} else if (namelen == 7 && !memcmp(name, ":method", 7)) {
		if (valuelen != 7 || memcmp(value, "CONNECT", 7))
			s->status = -1;		/* answered 400 */
	}
	return 0;
}

/* "a.b.c.d:port" -> ip, port; anything else (names, IPv6) is refused. */
static int parse_authority(const char *a, uint32_t *ip, uint16_t *port)
{
	char host[INET_ADDRSTRLEN];
	const char *colon = strrchr(a, ':');
	char *end;
	unsigned long p;
	size_t hl;

	if (!colon || a[0] == '[')
		return -EINVAL;
	hl = colon - a;
	if (!hl || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, a, hl);
	host[hl] = 0;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || errno || !p || p > 65535 ||
	    inet_pton(AF_INET, host, ip) != 1)
		return -EINVAL;
	*port = (uint16_t)p;
	return 0;
}

/* The client address of a `forwarded: for="IP:PORT"` header (RFC 7239,
 * as ztunnel sends it); *PORT is 0 when it has none. */
static uint32_t forwarded_ip(const char *fwd, uint16_t *port)
{
	const char *p = strstr(fwd, "for=");
	char buf[INET_ADDRSTRLEN];
	size_t n = 0;
	uint32_t ip;

	*port = 0;
	if (!p)
		return 0;
	p += 4;
	if (*p == '"')
		p++;
	while (p[n] && p[n] != '"' && p[n] != ':' && p[n] != ';' && p[n] != ',' &&
	       n < sizeof(buf) - 1)
		n++;
	memcpy(buf, p, n);
	buf[n] = 0;
	if (inet_pton(AF_INET, buf, &ip) != 1)
		return 0;
	if (p[n] == ':') {
		unsigned long v = strtoul(p + n + 1, NULL, 10);

		*port = v <= 65535 ? (uint16_t)v : 0;
	}
	return ip;
}

static void respond(struct hb_stream *s, int code)
{
	char v[8];
	nghttp2_nv nv[1];

	snprintf(v, sizeof(v), "%d", code);
	set_nv(&nv[0], ":status", v);
	s->status = code;
	nghttp2_submit_response(s->hc->h2, s->sid, nv, 1, NULL);
}

/* The source of S as policy, the access log and the metrics know it: the
 * `forwarded` address when it is a workload of another node whose
 * identity is the one the peer's certificate proved (a peer speaks for
 * its own workloads only), else the TCP peer address. */
static void stream_source(struct hb_conn *hc, struct hb_stream *s)
{
	struct tunnel *t = hc->t;
	const struct config *cfg = t->cur ? t->cur->cfg : NULL;
	const struct cfg_workload *w;
	uint16_t fport = 0;
	uint32_t fip;
	char id[SKM_SPIFFE_MAX], ip[INET_ADDRSTRLEN];

	s->src_ip = hc->peer_ip;
	s->src_port = hc->peer_port;
	if (!s->forwarded[0])
		return;
	fip = forwarded_ip(s->forwarded, &fport);
	if (fip == hc->peer_ip && fip) {
		s->src_port = fport ? fport : s->src_port;
		return;
	}
	w = fip && cfg ? config_workload_by_ip(cfg, fip) : NULL;
	if (w && strcmp(w->node, t->o.node)) {
		config_workload_id(cfg, w, id, sizeof(id));
		if (!strcmp(id, hc->peer_id)) {
			s->src_ip = fip;
			s->src_port = fport;
			return;
		}
	}
	tun_stat(t, SKM_TUN_IN_FORWARDED_IGNORED, 1);
	ip_str(hc->peer_ip, ip, sizeof(ip));
	pr_limited(&t->lim_req, LOG_WARN,
		   "tunnel: %s at %s sent forwarded: %.64s, which is no workload of its "
		   "identity on another node: its own address stands\n", hc->peer_id, ip,
		   s->forwarded);
}

/* The address meshd connects to the app from: the client's, as ztunnel
 * does, when the pod's routing is in place and the client is a workload
 * of another node whose identity is the peer's certificate (a peer may
 * speak for its own workloads only). 0 otherwise: the pod's own. */
static uint32_t upstream_source(struct hb_conn *hc, const struct hb_stream *s,
				const struct tun_pod *pod)
{
	const struct config *cfg = hc->t->cur ? hc->t->cur->cfg : NULL;
	const struct cfg_workload *w;
	char id[256];

	if (!pod->origsrc.ok || !cfg || !s->src_ip || s->src_ip == pod->ip ||
	    (ntohl(s->src_ip) >> 24) == 127)
		return 0;
	w = config_workload_by_ip(cfg, s->src_ip);
	if (!w || !strcmp(w->node, hc->t->o.node))
		return 0;
	config_workload_id(cfg, w, id, sizeof(id));
	return strcmp(id, hc->peer_id) ? 0 : s->src_ip;
}

/* A complete CONNECT request on the server side. */
static void handle_connect(struct hb_conn *hc, struct hb_stream *s)
{
	struct tunnel *t = hc->t;
	struct tun_target tgt;
	struct tun_pod *pod;
	uint32_t ip;
	uint16_t port;
	int code, fd;

	if (s->status < 0 || parse_authority(s->authority, &ip, &port)) {
		snprintf(s->why, sizeof(s->why), "%s", s->status < 0 ? "method is not CONNECT" :
			 "authority is not ip:port");
		tun_stat(t, SKM_TUN_IN_BAD_REQUEST, 1);
		pr_limited(&t->lim_req, LOG_INFO, "tunnel: 400 for %s: %s (\"%s\")\n",
			   hc->peer_id, s->why, s->authority);
		respond(s, 400);
		return;
	}
	/* As ztunnel: a pod's 15008 serves that pod only. */
	if (ip != hc->pod_ip) {
		char pip[INET_ADDRSTRLEN];

		ip_str(hc->pod_ip, pip, sizeof(pip));
		snprintf(s->why, sizeof(s->why), "target is not %s, the pod this listener "
			 "serves", pip);
		tun_stat(t, SKM_TUN_IN_BAD_REQUEST, 1);
		pr_limited(&t->lim_req, LOG_INFO, "tunnel: 400 for %s: %s (\"%s\")\n",
			   hc->peer_id, s->why, s->authority);
		respond(s, 400);
		return;
	}
	s->dst_ip = ip;
	s->dst_port = port;
	stream_source(hc, s);
	if (t->cur && t->cur->cfg) {
		const struct cfg_workload *w = config_workload_by_ip(t->cur->cfg, s->src_ip);

		if (w)
			snprintf(s->src_wl, sizeof(s->src_wl), "%s/%s", w->ns, w->name);
	}
	code = t_host_authorize(t, hc->peer_id, s->src_ip, ip, port, &tgt, s->why, sizeof(s->why));
	if (code == 200) {
		snprintf(s->dst_wl, sizeof(s->dst_wl), "%s/%s", tgt.ns, tgt.name);
		pod = t_host_pod_find(t, ip);
		if (!pod || pod->netns_fd < 0) {
			code = 503;
			snprintf(s->why, sizeof(s->why), "no listener state for the workload");
		}
	}
	if (code != 200) {
		tun_stat(t, code == 400 ? SKM_TUN_IN_BAD_REQUEST : code == 401 ?
			 SKM_TUN_IN_DENIED : SKM_TUN_IN_UPSTREAM_FAILED, 1);
		pr_limited(&t->lim_req, LOG_INFO, "tunnel: %d for %s -> %s: %s\n", code,
			   hc->peer_id, s->authority, s->why);
		respond(s, code);
		return;
	}
	fd = t_host_connect(t, pod->netns_fd, ip, port, SKM_UPSTREAM_MARK,
			 upstream_source(hc, s, pod));
	if (fd < 0) {
		snprintf(s->why, sizeof(s->why), "upstream socket: %s", strerror(-fd));
		tun_stat(t, SKM_TUN_IN_UPSTREAM_FAILED, 1);
		respond(s, 503);
		return;
	}
	s->fd = fd;
	s->connecting = 1;
	stream_update(s);
}

static void client_response(struct hb_conn *hc, struct hb_stream *s)
{
	struct tunnel *t = hc->t;

	if (s->status == 200) {
		s->established = 1;
		tun_stat(t, SKM_TUN_OUT_STREAMS_OK, 1);
		stream_metrics_open(t, s, MX_FLAG_NONE);
		stream_resume(s);
		return;
	}
	tun_stat(t, SKM_TUN_OUT_REFUSED, 1);
	snprintf(s->why, sizeof(s->why), "peer answered %d", s->status);
	pr_info("tunnel: %s answered %d to CONNECT %s from %s\n", hc->peer_id, s->status,
		s->authority, s->src_wl);
	stream_abort(s, NGHTTP2_CANCEL, NULL);
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
	struct hb_conn *hc = user;
	struct hb_stream *s;

	switch (f->hd.type) {
	case NGHTTP2_PING:
		if (f->hd.flags & NGHTTP2_FLAG_ACK)
			hc->ping_out = 0;
		return 0;
	case NGHTTP2_GOAWAY:
		hc->goaway = 1;
		if (f->goaway.error_code != NGHTTP2_NO_ERROR)
			pr_limited(&hc->t->lim_conn, LOG_WARN,
				   "tunnel: %s closes the connection: GOAWAY %s\n", hc->peer_id,
				   nghttp2_http2_strerror(f->goaway.error_code));
		return 0;
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		break;
	default:
		return 0;
	}
	s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	if (!s)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_HEADERS)) {
		if (!hc->client && f->headers.cat == NGHTTP2_HCAT_REQUEST)
			handle_connect(hc, s);
		else if (hc->client && f->headers.cat == NGHTTP2_HCAT_RESPONSE)
			client_response(hc, s);
	}
	if (!s->o.dead && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		s->h2_eof = 1;
		stream_check_done(s);
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t sid,
			 const uint8_t *data, size_t len, void *user)
{
	struct hb_conn *hc = user;
	struct hb_stream *s = nghttp2_session_get_stream_user_data(h2, sid);

	(void)flags;
	if (!s || (s->fd < 0 && !s->connecting)) {
		/* Nobody to deliver to: hand the window back at once. */
		nghttp2_session_consume(h2, sid, len);
		return 0;
	}
	s->rx += len;
	mx_add(s->mx, s->client ? MX_SENT : MX_RECEIVED, len);
	tun_stat(hc->t, SKM_TUN_BYTES_FROM_PEERS, len);
	/* Queued, and written once per read of the TLS socket (conn_read):
	 * one write() for the many records OpenSSL read ahead, not one per
	 * record. */
	if (len) {
		if (queue_room(&s->obuf, &s->olen, &s->ooff, &s->ocap, len, 65536)) {
			stream_abort(s, NGHTTP2_INTERNAL_ERROR, "out of memory");
			return 0;
		}
		memcpy(s->obuf + s->olen, data, len);
		s->olen += len;
		buf_add(hc, len, 0);
	}
	return 0;
}

static struct hb_conn *pool_get(struct tunnel *t, const struct tun_pod *pod,
				 const char *src_id, const char *dst_id, const char *node,
				 uint32_t ip);
static void submit_request(struct hb_conn *hc, struct hb_stream *s);

/* RFC 9113 8.7: a stream the server refused (REFUSED_STREAM, or above the
 * last stream of its GOAWAY, as a draining ztunnel or meshd sends) was
 * not processed, and nothing of it was sent (data waits for the 200). A
 * client stream is sent again, once, on another connection, so a peer's
 * restart does not reset the pods' new connections. 1 if it was. */
static int stream_retry(struct hb_conn *old, struct hb_stream *s)
{
	struct tunnel *t = old->t;
	const struct tun_pod *pod;
	struct hb_conn *hc;

	if (!s->client || s->established || s->status || s->retried || s->fd < 0 ||
	    t->draining || !s->dst_node[0])
		return 0;
	/* dialled from the client pod's namespace: it must still be here */
	pod = t_host_pod_find(t, s->src_ip);
	if (!pod || pod->netns_fd < 0 || strcmp(pod->ns, s->src_ns) || strcmp(pod->sa, s->src_sa))
		return 0;
	hc = pool_get(t, pod, s->src_id, s->dst_id, s->dst_node, s->dst_ip);
	if (!hc || hc == old)
		return 0;
	pr_info("tunnel: %s refused the stream to %s from %s: sent again on another "
		"connection\n", old->peer_id, s->authority, s->src_wl);
	buf_add(old, -stream_ibuf(s), 1);
	buf_add(old, -stream_obuf(s), 0);
	stream_unlink(s);
	stream_link(s, hc);
	buf_add(hc, stream_ibuf(s), 1);
	buf_add(hc, stream_obuf(s), 0);
	s->sid = 0;
	s->retried = 1;
	s->deferred = 0;
	tun_stat(t, SKM_TUN_OUT_RETRIED, 1);
	if (hc->state == HB_READY) {
		submit_request(hc, s);
		conn_flush(hc);
	}
	return 1;
}

static int on_stream_close(nghttp2_session *h2, int32_t sid, uint32_t error_code, void *user)
{
	struct hb_conn *hc = user;
	struct hb_stream *s = nghttp2_session_get_stream_user_data(h2, sid);

	if (!s)
		return 0;
	s->h2_open = 0;
	if (s->to_consume) {
		nghttp2_session_consume_connection(h2, s->to_consume);
		s->to_consume = 0;
	}
	if (error_code == NGHTTP2_REFUSED_STREAM && stream_retry(hc, s))
		return 0;
	if (error_code != NGHTTP2_NO_ERROR || !s->established) {
		if (!s->why[0])
			snprintf(s->why, sizeof(s->why), "%s",
				 error_code ? nghttp2_http2_strerror(error_code) : "refused");
		stream_close_fd(s, 1);
		stream_maybe_free(hc->t, s, "reset");
		return 0;
	}
	s->h2_eof = 1;
	stream_check_done(s);
	return 0;
}

/* DATA frames as large as the peer allows, up to HB_MAX_DATA: fewer frames
 * and callbacks per byte (nghttp2 sends 16 KiB frames otherwise). */
static ssize_t data_length(nghttp2_session *h2, uint8_t type, int32_t sid,
			   int32_t session_window, int32_t stream_window,
			   uint32_t remote_max_frame, void *user)
{
	ssize_t n = HB_MAX_DATA;

	(void)h2; (void)type; (void)sid; (void)user;
	if (n > session_window)
		n = session_window;
	if (n > stream_window)
		n = stream_window;
	if (n > (ssize_t)remote_max_frame)
		n = remote_max_frame;
	return n > 0 ? n : 1;
}

/* nghttp2's word on what it refused (a protocol error closes the
 * connection with GOAWAY): worth a line, once per connection. */
static int on_error(nghttp2_session *h2, int code, const char *msg, size_t len, void *user)
{
	struct hb_conn *hc = user;

	(void)h2;
	pr_limited(&hc->t->lim_conn, LOG_WARN, "tunnel: HTTP/2 with %s: %.*s (%s)\n",
		   hc->peer_id, (int)len, msg, nghttp2_strerror(code));
	return 0;
}

/* A GOAWAY with an error is how nghttp2 ends a connection whose peer
 * broke the protocol or flooded it (resets, SETTINGS, PINGs). */
static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *f, void *user)
{
	struct hb_conn *hc = user;
	char ip[INET_ADDRSTRLEN];

	(void)h2;
	if (f->hd.type != NGHTTP2_GOAWAY || f->goaway.error_code == NGHTTP2_NO_ERROR)
		return 0;
	tun_stat(hc->t, SKM_TUN_H2_ERRORS, 1);
	ip_str(hc->peer_ip, ip, sizeof(ip));
	pr_limited(&hc->t->lim_conn, LOG_WARN, "tunnel: GOAWAY %s to %s at %s:%u\n",
		   nghttp2_http2_strerror(f->goaway.error_code), hc->peer_id, ip, hc->peer_port);
	return 0;
}

/* --- connections ------------------------------------------------------ */

static void conn_update(struct hb_conn *hc)
{
	uint32_t ev = hc->rd_paused ? 0 : EPOLLIN;

	if (hc->state == HB_CONNECTING)
		ev = EPOLLOUT;
	else if (hc->woff < hc->wlen)
		ev |= EPOLLOUT;
	t_host_watch(hc->t, hc->fd, &hc->o, ev);
}

static void conn_free_now(struct hb_conn *hc)
{
	if (hc->h2)
		nghttp2_session_del(hc->h2);
	SSL_free(hc->ssl);
	free(hc->wbuf);
	free(hc);
}

/* Closes HC; every stream still on it is reset. */
static void conn_fail(struct hb_conn *hc, const char *why)
{
	struct tunnel *t = hc->t;
	struct hb_conn **pp;

	if (hc->o.dead)
		return;
	hc->state = HB_CLOSED;
	while (hc->streams) {
		struct hb_stream *s = hc->streams;

		if (!s->why[0])
			snprintf(s->why, sizeof(s->why), "tunnel connection: %s", why);
		s->h2_open = 0;
		stream_close_fd(s, 1);
		stream_maybe_free(t, s, "reset");
		if (hc->streams == s)		/* already dead: just unlink */
			stream_unlink(s);
	}
	if (hc->fd >= 0) {
		t_host_unwatch(t, hc->fd, &hc->o);
		close(hc->fd);
		hc->fd = -1;
	}
	t->buffered -= hc->ibuf + hc->obuf;
	hc->ibuf = hc->obuf = 0;
	conn_hs_done(hc);
	if (hc->counted_in) {
		t->in_conns--;
		peer_add(t, hc->peer_ip, -1, 0);
	}
	hc->counted_in = 0;
	for (pp = &t->conns; *pp; pp = &(*pp)->next)
		if (*pp == hc) {
			*pp = hc->next;
			break;
		}
	tun_stat(t, SKM_TUN_CONNS_OPEN, -1);
	hc->o.dead = 1;
	hc->dead_next = t->dead_conns;
	t->dead_conns = hc;
}

/* TLS records are written by OpenSSL into the connection's own buffer
 * (out_bio below) and go to the socket from there, many records to a
 * write(), instead of one write() per 16 KiB record. */
static BIO_METHOD *out_bio_method;

/* Queues LEN bytes to go to HC's peer: LEN, or -1 without memory. */
static int out_queue(struct hb_conn *hc, const char *data, int len)
{
	if (len <= 0)
		return 0;
	if (queue_room(&hc->wbuf, &hc->wlen, &hc->woff, &hc->wcap, len, HB_TLS_WBUF))
		return -1;
	memcpy(hc->wbuf + hc->wlen, data, len);
	hc->wlen += len;
	buf_add(hc, len, 1);
	return len;
}

static int out_bio_write(BIO *b, const char *data, int len)
{
	return out_queue(BIO_get_data(b), data, len);
}

static long out_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b; (void)num; (void)ptr;
	return cmd == BIO_CTRL_FLUSH;
}

/* Writes the queued records: 0 all out, 1 the socket is full, -1 lost.
 * Over memory (no socket) they are dropped as sent. */
static int conn_push(struct hb_conn *hc)
{
	if (hc->fd < 0 && hc->woff < hc->wlen) {
		buf_add(hc, -(long)(hc->wlen - hc->woff), 1);
		hc->woff = hc->wlen;
	}
	while (hc->woff < hc->wlen) {
		ssize_t n = write(hc->fd, hc->wbuf + hc->woff, hc->wlen - hc->woff);

		if (n > 0) {
			hc->woff += n;
			hc->last_active = time(NULL);
			buf_add(hc, -n, 1);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && errno == EAGAIN ? 1 : -1;
	}
	hc->woff = hc->wlen = 0;
	return 0;
}

static void conn_flush(struct hb_conn *hc)
{
	if (hc->o.dead || hc->state != HB_READY)
		return;
	for (;;) {
		int r = conn_push(hc), produced = 0;

		if (r < 0) {
			conn_fail(hc, "connection lost");
			return;
		}
		if (r > 0)
			break;		/* EPOLLOUT brings us back */
		while (hc->wlen < HB_TLS_WBUF) {
			const uint8_t *d;
			ssize_t n = nghttp2_session_mem_send(hc->h2, &d);
			ssize_t off = 0;

			if (n < 0) {
				conn_fail(hc, nghttp2_strerror((int)n));
				return;
			}
			if (!n)
				break;
			while (off < n) {
				int w;

				ERR_clear_error();
				/* over memory, the plaintext is what goes out */
				w = hc->ssl ? SSL_write(hc->ssl, d + off, (int)(n - off)) :
					      out_queue(hc, (const char *)d + off, (int)(n - off));
				if (w <= 0) {
					conn_fail(hc, "TLS write failed");
					return;
				}
				off += w;
			}
			produced = 1;
		}
		if (!produced)
			break;
	}
	if (!nghttp2_session_want_read(hc->h2) && !nghttp2_session_want_write(hc->h2) &&
	    hc->woff == hc->wlen) {
		conn_fail(hc, "closed");
		return;
	}
	conn_update(hc);
}

static int conn_h2_setup(struct hb_conn *hc)
{
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;
	uint32_t conn_win = (uint32_t)hc->t->o.lim.conn_buffer;
	uint32_t stream_win = conn_win < HB_STREAM_WINDOW ? conn_win : HB_STREAM_WINDOW;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, stream_win },
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, HB_MAX_STREAMS },
		{ NGHTTP2_SETTINGS_MAX_FRAME_SIZE, HB_MAX_FRAME },
	};
	int err;

	if (nghttp2_session_callbacks_new(&cb))
		return -ENOMEM;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_error_callback2(cb, on_error);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	nghttp2_session_callbacks_set_data_source_read_length_callback(cb, data_length);
	if (nghttp2_option_new(&opt)) {
		nghttp2_session_callbacks_del(cb);
		return -ENOMEM;
	}
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_peer_max_concurrent_streams(opt, HB_MAX_STREAMS);
	/* nghttp2's guard against "rapid reset" floods: a peer that resets
	 * more streams than this (nghttp2's default is a burst of 1000, then
	 * 33/s) gets GOAWAY. Every tunnelled connection an app ends with a
	 * reset is one: the rate is a flag. */
	nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)hc->t->o.lim.reset_burst,
						   (uint64_t)hc->t->o.lim.reset_rate);
	err = hc->client ? nghttp2_session_client_new2(&hc->h2, cb, hc, opt) :
			   nghttp2_session_server_new2(&hc->h2, cb, hc, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	if (err)
		return -ENOMEM;
	if (nghttp2_submit_settings(hc->h2, NGHTTP2_FLAG_NONE, iv, 3) ||
	    nghttp2_session_set_local_window_size(hc->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_win))
		return -EIO;
	return 0;
}

static void baggage_of(const struct hb_stream *s, char *buf, size_t len)
{
	const char *slash = strchr(s->src_wl, '/');
	int nsl = slash ? (int)(slash - s->src_wl) : 0;
	const char *name = slash ? slash + 1 : s->src_wl;

	snprintf(buf, len, "k8s.cluster.name=Kubernetes,k8s.namespace.name=%.*s,"
		 "k8s.pod.name=%s,service.name=%s,service.version=latest", nsl, s->src_wl,
		 name, name);
}

static void submit_request(struct hb_conn *hc, struct hb_stream *s)
{
	nghttp2_data_provider dp = { .source.ptr = s, .read_callback = data_read_cb };
	char fwd[64], bag[512], tp[64], ip[INET_ADDRSTRLEN];
	uint64_t r[3] = {};
	nghttp2_nv nv[5];
	int32_t sid;

	ip_str(s->src_ip, ip, sizeof(ip));
	snprintf(fwd, sizeof(fwd), "for=\"%s:%u\"", ip, s->src_port);
	baggage_of(s, bag, sizeof(bag));
	if (getrandom(r, sizeof(r), GRND_NONBLOCK) < 0)
		r[0] = (uint64_t)time(NULL);
	snprintf(tp, sizeof(tp), "00-%016" PRIx64 "%016" PRIx64 "-%016" PRIx64 "-00",
		 r[0], r[1], r[2] | 1);
	set_nv(&nv[0], ":method", "CONNECT");
	set_nv(&nv[1], ":authority", s->authority);
	set_nv(&nv[2], "forwarded", fwd);
	set_nv(&nv[3], "baggage", bag);
	set_nv(&nv[4], "traceparent", tp);
	sid = nghttp2_submit_request(hc->h2, NULL, nv, 5, &dp, s);
	if (sid < 0) {
		stream_abort(s, NGHTTP2_INTERNAL_ERROR, nghttp2_strerror(sid));
		return;
	}
	s->sid = sid;
	s->h2_open = 1;
}

static void conn_ready(struct hb_conn *hc)
{
	struct tunnel *t = hc->t;
	const unsigned char *alpn = NULL;
	unsigned int alpnlen = 0;
	char id[SKM_SPIFFE_MAX], ip[INET_ADDRSTRLEN];

	conn_hs_done(hc);
	SSL_get0_alpn_selected(hc->ssl, &alpn, &alpnlen);
	if (alpnlen != 2 || memcmp(alpn, "h2", 2)) {
		conn_fail(hc, "ALPN h2 was not negotiated");
		return;
	}
	if (tls_peer_id(hc->ssl, id, sizeof(id))) {
		conn_fail(hc, "peer has no SPIFFE identity");
		return;
	}
	/* The handshake checked it; checked again here so that no failure
	 * anywhere in that path lets another server through. */
	if (hc->client && strcmp(id, hc->peer_id)) {
		pr_warn("tunnel: server is %s but %s was expected: closed\n", id, hc->peer_id);
		tun_stat(t, SKM_TUN_OUT_TLS_FAILED, 1);
		tun_stat(t, SKM_TUN_OUT_WRONG_PEER, 1);
		conn_fail(hc, "wrong server identity");
		return;
	}
	snprintf(hc->peer_id, sizeof(hc->peer_id), "%s", id);
	ip_str(hc->peer_ip, ip, sizeof(ip));
	if (hc->client)
		pr_info("tunnel: connected to %s at %s:%u as %s\n", hc->peer_id, ip,
			hc->peer_port, hc->local_id);
	else {
		tun_stat(t, SKM_TUN_IN_TLS_OK, 1);
		pr_limited(&t->lim_conn, LOG_INFO, "tunnel: accepted %s from %s:%u as %s\n",
			   hc->peer_id, ip, hc->peer_port, hc->local_id);
	}
	if (conn_h2_setup(hc)) {
		conn_fail(hc, "cannot set up HTTP/2");
		return;
	}
	hc->state = HB_READY;
	hc->last_active = hc->ping_sent = time(NULL);
	for (struct hb_stream *s = hc->streams, *next; s; s = next) {
		next = s->snext;
		if (hc->client && !s->sid && !s->o.dead)
			submit_request(hc, s);
	}
	/* The handshake's last read may have read ahead what the peer sent
	 * next (its SETTINGS, a request): it is in OpenSSL's buffer, and the
	 * socket will not wake us for it. */
	if (SSL_has_pending(hc->ssl))
		conn_read(hc);
	if (!hc->o.dead)
		conn_flush(hc);
}

static void count_tls_failure(struct hb_conn *hc)
{
	struct tunnel *t = hc->t;
	enum tls_fail r = tls_verify_reason(hc->ssl);
	enum skm_tun_stat s = SKM_TUN_STAT__MAX;

	if (hc->client) {
		tun_stat(t, SKM_TUN_OUT_TLS_FAILED, 1);
		if (r == TLS_FAIL_WRONG_PEER)
			tun_stat(t, SKM_TUN_OUT_WRONG_PEER, 1);
		return;
	}
	tun_stat(t, SKM_TUN_IN_TLS_FAILED, 1);
	switch (r) {
	case TLS_FAIL_NO_CLIENT_CERT: s = SKM_TUN_IN_NO_CLIENT_CERT; break;
	case TLS_FAIL_EXPIRED: s = SKM_TUN_IN_EXPIRED; break;
	case TLS_FAIL_WRONG_TD: s = SKM_TUN_IN_WRONG_TD; break;
	case TLS_FAIL_NO_SPIFFE: s = SKM_TUN_IN_NO_SPIFFE; break;
	case TLS_FAIL_UNTRUSTED: s = SKM_TUN_IN_UNTRUSTED; break;
	default: break;
	}
	if (s != SKM_TUN_STAT__MAX)
		tun_stat(t, s, 1);
}

static void conn_handshake(struct hb_conn *hc)
{
	int r, e, push;
	char buf[256], ip[INET_ADDRSTRLEN];
	const char *why;

	ERR_clear_error();
	r = SSL_do_handshake(hc->ssl);
	e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(hc->ssl, r);
	push = conn_push(hc);	/* what the handshake produced, an alert too */
	if (push < 0 && (e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ)) {
		conn_fail(hc, "connection lost during the handshake");
		return;
	}
	if (r == 1) {
		conn_ready(hc);
		return;
	}
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		t_host_watch(hc->t, hc->fd, &hc->o, EPOLLIN | (push > 0 ? EPOLLOUT : 0));
		return;
	}
	why = tls_verify_error(hc->ssl);
	if (!why)
		why = ssl_err_str(buf, sizeof(buf));
	ip_str(hc->peer_ip, ip, sizeof(ip));
	pr_limited(&hc->t->lim_conn, LOG_WARN, "tunnel: TLS handshake %s %s:%u failed: %s\n",
		   hc->client ? "with" : "from", ip, hc->peer_port, why);
	count_tls_failure(hc);
	conn_fail(hc, why);
}

/* Reads what the socket had: OpenSSL reads ahead (one read() for many
 * records), so after the first SSL_read only what it already holds is
 * taken; more from the kernel wakes epoll again, and no read() is spent
 * just to hear EAGAIN. */
/* Hands N bytes of HC's peer to its HTTP/2 session: 0, or -1 once HC
 * is closed. */
static int conn_recv(struct hb_conn *hc, const uint8_t *buf, size_t n)
{
	ssize_t r = nghttp2_session_mem_recv(hc->h2, buf, n);

	hc->last_active = time(NULL);
	if (r < 0) {
		tun_stat(hc->t, SKM_TUN_H2_ERRORS, 1);
		conn_fail(hc, nghttp2_strerror((int)r));
		return -1;
	}
	return hc->o.dead ? -1 : 0;
}

/* What the records carried goes to the sockets now, and the window for
 * what they took back to the peer. */
static void conn_deliver(struct hb_conn *hc)
{
	for (struct hb_stream *s = hc->streams, *next; s; s = next) {
		next = s->snext;
		if (s->ooff < s->olen) {
			stream_write_out(s);
			if (s->o.dead)
				continue;
			stream_update(s);
		}
		stream_give_window(s);
		stream_check_done(s);
	}
}

static void conn_read(struct hb_conn *hc)
{
	struct tunnel *t = hc->t;

	for (;;) {
		int n, e;

		if (conn_out_full(hc)) {
			/* flow control: the peer's bytes wait in the socket */
			if (!hc->rd_paused) {
				hc->rd_paused = 1;
				t->paused = 1;
				tun_stat(t, SKM_TUN_BUFFER_PAUSED, 1);
			}
			break;
		}
		hc->rd_paused = 0;
		ERR_clear_error();
		n = SSL_read(hc->ssl, t->rbuf, HB_RBUF);
		if (n > 0) {
			if (conn_recv(hc, t->rbuf, n))
				return;
			if (!SSL_has_pending(hc->ssl))
				break;
			continue;
		}
		e = SSL_get_error(hc->ssl, n);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
			break;
		conn_fail(hc, e == SSL_ERROR_ZERO_RETURN ? "peer closed" : "connection lost");
		return;
	}
	conn_deliver(hc);
}

static void conn_event(struct tunnel *t, struct hb_conn *hc, uint32_t events)
{
	(void)t;
	if (hc->state == HB_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		getsockopt(hc->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			char ip[INET_ADDRSTRLEN];

			ip_str(hc->peer_ip, ip, sizeof(ip));
			pr_warn("tunnel: cannot reach %s:%u: %s\n", ip, hc->peer_port,
				strerror(err));
			tun_stat(hc->t, SKM_TUN_OUT_DIAL_FAILED, 1);
			conn_fail(hc, strerror(err));
			return;
		}
		hc->state = HB_HANDSHAKE;
	}
	if (hc->state == HB_HANDSHAKE) {
		conn_handshake(hc);
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_read(hc);
	if (!hc->o.dead)
		conn_flush(hc);
}

/* A connection of T on FD (-1: over memory), linked and counted. */
static struct hb_conn *conn_alloc(struct tunnel *t, int fd, int client, uint32_t peer_ip,
				  uint16_t peer_port)
{
	struct hb_conn *hc = calloc(1, sizeof(*hc));

	if (!hc)
		return NULL;
	hc->o.kind = TUN_OBJ_CONN;
	hc->t = t;
	hc->fd = fd;
	hc->client = client;
	hc->peer_ip = peer_ip;
	hc->peer_port = peer_port;
	hc->started = hc->last_active = time(NULL);
	hc->next = t->conns;
	t->conns = hc;
	tun_stat(t, SKM_TUN_CONNS_OPEN, 1);
	return hc;
}

static struct hb_conn *conn_new(struct tunnel *t, int fd, SSL_CTX *ctx, int client,
				uint32_t peer_ip, uint16_t peer_port)
{
	struct hb_conn *hc;
	SSL *ssl = SSL_new(ctx);
	BIO *rb, *wb;

	if (!ssl)
		return NULL;
	rb = BIO_new_socket(fd, BIO_NOCLOSE);
	wb = out_bio_method ? BIO_new(out_bio_method) : NULL;
	hc = rb && wb ? conn_alloc(t, fd, client, peer_ip, peer_port) : NULL;
	if (!hc) {
		BIO_free(rb);
		BIO_free(wb);
		SSL_free(ssl);
		return NULL;
	}
	hc->ssl = ssl;
	BIO_set_data(wb, hc);
	BIO_set_init(wb, 1);
	SSL_set_bio(hc->ssl, rb, wb);
	SSL_set_mode(hc->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
		     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	/* one read() for as many records as are there, not two per record */
	SSL_set_read_ahead(hc->ssl, 1);
	SSL_set_default_read_buffer_len(hc->ssl, HB_TLS_RBUF);
	if (client)
		SSL_set_connect_state(hc->ssl);
	else
		SSL_set_accept_state(hc->ssl);
	return hc;
}

/* --- entry points from tunnel.c --------------------------------------- */

/* 1 when the address IP may start one more handshake now (at most
 * handshake_rate a second, a second's worth at once). */
static int hs_rate_pass(struct tunnel *t, uint32_t ip)
{
	struct hs_rate *r = &t->hs_rate[(ip * 2654435761U) >> 24];
	int rate = t->o.lim.handshake_rate;

	if (r->ip != ip || !r->lim.rate) {
		r->ip = ip;
		r->lim = (struct log_limit)LOG_LIMIT_INIT((unsigned int)rate, (unsigned int)rate);
	}
	return log_limit_pass(&r->lim);
}

/* Whether an inbound connection from PEER may be had: the bounds on
 * peers, each refusal counted and said (rate-limited). */
static int inbound_admit(struct tunnel *t, const struct sockaddr_in *peer)
{
	const struct tunnel_limits *l = &t->o.lim;
	uint32_t ip = peer->sin_addr.s_addr;
	const struct peer_count *pc = peer_get(t, ip);
	/* one address may hold half the handshakes: never all of them */
	int hs_share = l->max_handshakes > 1 ? l->max_handshakes / 2 : 1;
	enum skm_tun_stat st;
	const char *what;
	char ips[INET_ADDRSTRLEN];
	int max;

	if (pc->n >= l->max_conns_per_peer) {
		st = SKM_TUN_IN_PEER_CONN_LIMIT;
		what = "connections from this address";
		max = l->max_conns_per_peer;
	} else if (t->in_conns >= l->max_conns) {
		st = SKM_TUN_IN_CONN_LIMIT;
		what = "inbound connections in all";
		max = l->max_conns;
	} else if (t->hs_inflight >= l->max_handshakes) {
		st = SKM_TUN_IN_HANDSHAKE_LIMIT;
		what = "handshakes in progress";
		max = l->max_handshakes;
	} else if (pc->hs >= hs_share) {
		st = SKM_TUN_IN_HANDSHAKE_LIMIT;
		what = "handshakes in progress from this address";
		max = hs_share;
	} else if (!hs_rate_pass(t, ip)) {
		st = SKM_TUN_IN_HANDSHAKE_RATE;
		what = "handshakes started from this address this second";
		max = l->handshake_rate;
	} else {
		return 1;
	}
	tun_stat(t, st, 1);
	ip_str(ip, ips, sizeof(ips));
	pr_limited(&t->lim_conn, LOG_WARN, "tunnel: refused a connection from %s:%u: %d %s "
		   "already (the limit)\n", ips, ntohs(peer->sin_port), max, what);
	return 0;
}

void hbone_inbound(struct tunnel *t, struct tun_pod *pod, int fd,
		   const struct sockaddr_in *peer)
{
	char err[256];
	SSL_CTX *ctx;
	struct hb_conn *hc;

	if (!inbound_admit(t, peer)) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
		return;
	}
	ctx = certmgr_server_ctx(t->certs, pod->ns, pod->sa, time(NULL), err, sizeof(err));
	if (!ctx) {
		/* a peer's retries while a remote CA has not answered yet:
		 * said a few times a second at most */
		pr_limited(&t->lim_conn, LOG_WARN, "tunnel: no certificate for %s/%s: %s\n",
			   pod->ns, pod->sa, err);
		close(fd);
		return;
	}
	hc = conn_new(t, fd, ctx, 0, peer->sin_addr.s_addr, ntohs(peer->sin_port));
	if (!hc) {
		close(fd);
		return;
	}
	if (peer_add(t, hc->peer_ip, 1, 1)) {
		conn_fail(hc, "out of memory");
		return;
	}
	hc->counted_in = hc->in_hs = 1;
	t->in_conns++;
	t->hs_inflight++;
	spiffe_id(hc->local_id, sizeof(hc->local_id), t->td, pod->ns, pod->sa);
	hc->pod_ip = pod->ip;
	hc->state = HB_HANDSHAKE;
	conn_handshake(hc);
}

/* A pooled connection for (source pod, its identity, destination
 * identity, destination pod) with room for one more stream: it is dialled
 * from the source pod's address, and a pod's 15008 serves that pod only. */
static struct hb_conn *pool_find(struct tunnel *t, uint32_t src_ip, const char *src_id,
				 const char *dst_id, uint32_t ip)
{
	for (struct hb_conn *hc = t->conns; hc; hc = hc->next) {
		int max = HB_MAX_STREAMS;

		if (!hc->client || hc->goaway || hc->state == HB_CLOSED)
			continue;
		if (hc->h2) {
			uint32_t m = nghttp2_session_get_remote_settings(
				hc->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

			if ((int)m < max)
				max = (int)m;
		}
		if (hc->nstreams < max && hc->peer_ip == ip && hc->src_ip == src_ip &&
		    !strcmp(hc->local_id, src_id) && !strcmp(hc->peer_id, dst_id))
			return hc;
	}
	return NULL;
}

/* A connection for a stream from POD (SRC_ID) to DST_ID on NODE, whose
 * HBONE port is at IP: a pooled one with room, or a new one, dialling
 * from POD's network namespace (ztunnel's in-pod mode), so the peer sees
 * the pod's own address, not the node's. NULL (counted and said) when
 * none can be had. */
static struct hb_conn *pool_get(struct tunnel *t, const struct tun_pod *pod,
				 const char *src_id, const char *dst_id, const char *node,
				 uint32_t ip)
{
	struct hb_conn *hc = pool_find(t, pod->ip, src_id, dst_id, ip);
	const char *ns = pod->ns, *sa = pod->sa;
	char err[256], ips[INET_ADDRSTRLEN];
	SSL_CTX *ctx;
	int cfd;

	if (hc)
		return hc;
	ctx = certmgr_client_ctx(t->certs, ns, sa, time(NULL), err, sizeof(err));
	if (!ctx) {
		pr_limited(&t->lim_conn, LOG_WARN, "tunnel: no certificate for %s/%s: %s\n",
			   ns, sa, err);
		tun_stat(t, SKM_TUN_OUT_TLS_FAILED, 1);
		return NULL;
	}
	cfd = t_host_connect(t, pod->netns_fd, ip, SKM_PORT_HBONE, SKM_MESHD_MARK, 0);
	if (cfd < 0) {
		ip_str(ip, ips, sizeof(ips));
		pr_warn("tunnel: cannot dial %s:%u: %s\n", ips, SKM_PORT_HBONE, strerror(-cfd));
		tun_stat(t, SKM_TUN_OUT_DIAL_FAILED, 1);
		return NULL;
	}
	hc = conn_new(t, cfd, ctx, 1, ip, SKM_PORT_HBONE);
	if (!hc) {
		close(cfd);
		return NULL;
	}
	snprintf(hc->local_id, sizeof(hc->local_id), "%s", src_id);
	snprintf(hc->peer_id, sizeof(hc->peer_id), "%s", dst_id);
	snprintf(hc->node, sizeof(hc->node), "%s", node);
	hc->src_ip = pod->ip;
	/* the handshake checks the server is DST_ID; without that, no
	 * handshake at all */
	if (tls_expect_peer(hc->ssl, dst_id)) {
		pr_warn("tunnel: cannot set the expected identity %s for %s: not dialling\n",
			dst_id, node);
		tun_stat(t, SKM_TUN_OUT_TLS_FAILED, 1);
		conn_fail(hc, "no expected identity");
		return NULL;
	}
	hc->state = HB_CONNECTING;
	conn_update(hc);
	return hc;
}

void hbone_outbound(struct tunnel *t, struct tun_pod *pod, int fd,
		    const struct sockaddr_in *peer, const struct skm_outbound_val *v,
		    const struct cfg_workload *dst)
{
	char src_id[SKM_SPIFFE_MAX], dst_id[SKM_SPIFFE_MAX], ip[INET_ADDRSTRLEN];
	struct hb_conn *hc;
	struct hb_stream *s;

	if (spiffe_id(src_id, sizeof(src_id), t->td, pod->ns, pod->sa) ||
	    spiffe_id(dst_id, sizeof(dst_id), t->td, dst->ns, dst->sa)) {
		close(fd);
		return;
	}
	hc = pool_get(t, pod, src_id, dst_id, dst->node, dst->ip);
	if (!hc) {
		close(fd);
		return;
	}
	s = stream_new(hc, 1);
	if (!s) {
		close(fd);
		return;
	}
	s->fd = fd;
	s->src_ip = peer->sin_addr.s_addr;
	s->src_port = ntohs(peer->sin_port);
	/* the captured socket's record: pod ip:port -> pod ip:15001 */
	s->podkey = (struct skm_sock_key){ .sip = peer->sin_addr.s_addr, .dip = pod->ip,
					   .sport = s->src_port, .dport = SKM_PORT_OUTBOUND };
	s->podkey_set = 1;
	s->dst_ip = v->dst_ip;
	s->dst_port = ntohs(v->dst_port);
	s->vip = v->vip;
	s->vport = ntohs(v->vport);
	snprintf(s->src_wl, sizeof(s->src_wl), "%s/%s", pod->ns, pod->name);
	snprintf(s->dst_wl, sizeof(s->dst_wl), "%s/%s", dst->ns, dst->name);
	snprintf(s->src_id, sizeof(s->src_id), "%s", src_id);
	snprintf(s->dst_id, sizeof(s->dst_id), "%s", dst_id);
	snprintf(s->src_ns, sizeof(s->src_ns), "%s", pod->ns);
	snprintf(s->src_sa, sizeof(s->src_sa), "%s", pod->sa);
	snprintf(s->dst_node, sizeof(s->dst_node), "%s", dst->node);
	ip_str(v->dst_ip, ip, sizeof(ip));
	snprintf(s->authority, sizeof(s->authority), "%s:%u", ip, s->dst_port);
	stream_update(s);
	if (hc->state == HB_READY) {
		submit_request(hc, s);
		conn_flush(hc);
	}
}

void hbone_event(struct tunnel *t, struct tun_obj *o, uint32_t events)
{
	if (o->kind == TUN_OBJ_CONN)
		conn_event(t, (struct hb_conn *)o, events);
	else if (o->kind == TUN_OBJ_STREAM)
		stream_event(t, (struct hb_stream *)o, events);
}

/* After a config change: the streams this node serves are judged again
 * by the new policy, and those it now denies are closed both ways (as
 * ztunnel's connection manager does); what the change does not concern
 * flows on. */
void hbone_reauthorize(struct tunnel *t)
{
	struct tun_target tgt;
	char why[160];

	for (struct hb_conn *hc = t->conns; hc; hc = hc->next) {
		struct hb_stream *s, *next;
		int closed = 0;

		if (hc->client || hc->state != HB_READY || hc->o.dead)
			continue;
		for (s = hc->streams; s; s = next) {
			next = s->snext;
			if (!s->established || s->o.dead)
				continue;
			if (t_host_authorize(t, hc->peer_id, s->src_ip, s->dst_ip, s->dst_port,
					  &tgt, why, sizeof(why)) != 401)
				continue;
			pr_info("tunnel: closing %s -> %s from %s: the policy now denies it (%s)\n",
				s->src_wl[0] ? s->src_wl : hc->peer_id, s->authority,
				hc->peer_id, why);
			tun_stat(t, SKM_TUN_IN_REVOKED, 1);
			snprintf(s->why, sizeof(s->why), "closed: the policy now denies it (%s)", why);
			stream_abort(s, NGHTTP2_CANCEL, NULL);
			closed = 1;
		}
		if (closed)
			conn_flush(hc);
	}
}

void hbone_tick(struct tunnel *t, time_t now)
{
	struct hb_conn *next;
	int streams = 0;

	for (struct hb_conn *hc = t->conns; hc; hc = next) {
		next = hc->next;
		streams += hc->nstreams;
		for (struct hb_stream *s = hc->streams; s; s = s->snext)
			stream_publish(t, s);
		if (hc->state != HB_READY) {
			if (now - hc->started >= t->o.lim.handshake_timeout_s) {
				if (hc->client) {
					tun_stat(t, hc->state == HB_CONNECTING ?
						 SKM_TUN_OUT_DIAL_FAILED : SKM_TUN_OUT_TLS_FAILED, 1);
				} else {
					char ip[INET_ADDRSTRLEN];

					tun_stat(t, SKM_TUN_IN_TLS_FAILED, 1);
					ip_str(hc->peer_ip, ip, sizeof(ip));
					pr_limited(&t->lim_conn, LOG_WARN, "tunnel: TLS handshake "
						   "from %s:%u took over %d s: closed\n", ip,
						   hc->peer_port, t->o.lim.handshake_timeout_s);
				}
				if (hc->state == HB_HANDSHAKE)
					tun_stat(t, SKM_TUN_HANDSHAKE_TIMEOUTS, 1);
				conn_fail(hc, "handshake timed out");
			}
			continue;
		}
		/* a connection we stopped reading cannot hear the answer */
		if (hc->rd_paused)
			hc->ping_sent = now;
		if (hc->ping_out && now - hc->ping_sent >= HB_PING_TIMEOUT_S) {
			tun_stat(t, SKM_TUN_PING_TIMEOUTS, 1);
			pr_warn("tunnel: %s did not answer PING for %d s: closing\n", hc->peer_id,
				HB_PING_TIMEOUT_S);
			conn_fail(hc, "PING timeout");
			continue;
		}
		if (hc->client && !hc->nstreams && now - hc->last_active >= HB_IDLE_S) {
			hc->goaway = 1;
			nghttp2_session_terminate_session(hc->h2, NGHTTP2_NO_ERROR);
			conn_flush(hc);
			continue;
		}
		if (!hc->ping_out && now - hc->ping_sent >= HB_PING_EVERY_S) {
			nghttp2_submit_ping(hc->h2, NGHTTP2_FLAG_NONE, NULL);
			hc->ping_out = 1;
			hc->ping_sent = now;
			conn_flush(hc);
		}
	}
	/* Once the last stream ended, the buffers it freed go back to the
	 * kernel: a stream's pages are not kept for the next one. */
	if (streams)
		t->trimmed = 0;
	else if (!t->trimmed) {
		malloc_trim(0);
		t->trimmed = 1;
	}
}

void hbone_drain(struct tunnel *t)
{
	struct hb_conn *next;

	for (struct hb_conn *hc = t->conns; hc; hc = next) {
		next = hc->next;
		hc->goaway = 1;
		if (hc->state != HB_READY) {
			conn_fail(hc, "meshd is stopping");
			continue;
		}
		nghttp2_submit_goaway(hc->h2, NGHTTP2_FLAG_NONE,
				      nghttp2_session_get_last_proc_stream_id(hc->h2),
				      NGHTTP2_NO_ERROR, NULL, 0);
		conn_flush(hc);
	}
}

void hbone_close_all(struct tunnel *t)
{
	while (t->conns)
		conn_fail(t->conns, "meshd stopped");
}

void hbone_reap(struct tunnel *t)
{
	while (t->dead_streams) {
		struct hb_stream *s = t->dead_streams;

		t->dead_streams = s->dead_next;
		free(s->ibuf);
		free(s->obuf);
		free(s);
	}
	while (t->dead_conns) {
		struct hb_conn *hc = t->dead_conns;

		t->dead_conns = hc->dead_next;
		conn_free_now(hc);
	}
}

struct hb_conn *hbone_mem_server(struct tunnel *t, struct tun_pod *pod, const char *peer_id,
				 uint32_t peer_ip, uint16_t peer_port)
{
	struct hb_conn *hc = conn_alloc(t, -1, 0, peer_ip, peer_port);

	if (!hc)
		return NULL;
	spiffe_id(hc->local_id, sizeof(hc->local_id), t->td, pod->ns, pod->sa);
	snprintf(hc->peer_id, sizeof(hc->peer_id), "%s", peer_id);
	hc->pod_ip = pod->ip;
	if (conn_h2_setup(hc)) {
		conn_fail(hc, "cannot set up HTTP/2");
		return NULL;
	}
	hc->state = HB_READY;
	hc->last_active = hc->ping_sent = time(NULL);
	conn_flush(hc);
	return hc->o.dead ? NULL : hc;
}

int hbone_mem_recv(struct hb_conn *hc, const uint8_t *data, size_t len)
{
	if (hc->o.dead || conn_recv(hc, data, len))
		return -1;
	conn_deliver(hc);
	if (!hc->o.dead)
		conn_flush(hc);
	return hc->o.dead ? -1 : 0;
}

void hbone_resume(struct tunnel *t)
{
	struct hb_conn *next;

	if (!t->paused)
		return;
	t->paused = 0;
	for (struct hb_conn *hc = t->conns; hc; hc = next) {
		next = hc->next;
		for (struct hb_stream *s = hc->streams, *sn; s; s = sn) {
			sn = s->snext;
			if (s->rd_paused)
				stream_update(s);	/* sets t->paused again if still full */
		}
		if (hc->rd_paused && !conn_out_full(hc) && hc->state == HB_READY) {
			/* what OpenSSL read ahead will not wake epoll */
			if (hc->ssl)
				conn_read(hc);
			else
				hc->rd_paused = 0;
			if (!hc->o.dead)
				conn_flush(hc);
		} else if (hc->rd_paused) {
			t->paused = 1;
		}
	}
}

int hbone_init(struct tunnel *t, const struct hbone_host *host)
{
	t->host = host;
	if (!out_bio_method) {
		out_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
					      "skmesh tunnel records");
		if (!out_bio_method ||
		    !BIO_meth_set_write(out_bio_method, out_bio_write) ||
		    !BIO_meth_set_ctrl(out_bio_method, out_bio_ctrl))
			return -ENOMEM;
	}
	t->rbuf = malloc(HB_RBUF);
	return t->rbuf ? 0 : -ENOMEM;
}

void hbone_fini(struct tunnel *t)
{
	hbone_close_all(t);
	hbone_reap(t);
	free(t->rbuf);
	t->rbuf = NULL;
	BIO_meth_free(out_bio_method);
	out_bio_method = NULL;
}
