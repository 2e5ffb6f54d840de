// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The CA service's HTTP/2 connection, over memory (conn.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "conn.h"

struct ca_stream {
	int32_t sid;
	int answered;		/* a reply was submitted */
	size_t hdr_bytes;
	size_t reserved;	/* of the shared budget */
	struct ca_conn *c;
	struct ca_stream *prev, *next;	/* the connection's open streams */
	uint8_t *out;		/* prefix + response message */
	size_t out_len, out_off;
	struct grpc_req req;
};

struct ca_conn {
	nghttp2_session *h2;
	const struct ca_conn_host *host;
	/* nghttp2_session_del() does not call on_stream_close: what is
	 * still open is freed from here */
	struct ca_stream *streams;
};

static int reserve(void *arg, size_t n)
{
	struct ca_stream *s = arg;
	_Atomic size_t *b = s->c->host->budget;
	size_t have = atomic_load(b);

	do {
		if (have < n)
			return -1;
	} while (!atomic_compare_exchange_weak(b, &have, have - n));
	s->reserved += n;
	return 0;
}

static void stream_free(struct ca_stream *s)
{
	if (!s)
		return;
	if (s->prev)
		s->prev->next = s->next;
	else
		s->c->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (s->reserved)
		atomic_fetch_add(s->c->host->budget, s->reserved);
	grpc_req_free(&s->req);
	free(s->out);
	free(s);
}

static nghttp2_nv nv(const char *name, const char *value)
{
	nghttp2_nv v = {
		.name = (uint8_t *)name, .namelen = strlen(name),
		.value = (uint8_t *)value, .valuelen = strlen(value),
		.flags = NGHTTP2_NV_FLAG_NONE,
	};
	return v;
}

/* A trailers-only error answer. */
static int answer_error(struct ca_conn *c, struct ca_stream *s, enum grpc_status st,
			const char *msg)
{
	char code[16], enc[768];
	nghttp2_nv hdrs[4];

	if (s->answered)
		return 0;
	s->answered = 1;
	snprintf(code, sizeof(code), "%d", (int)st);
	grpc_pct_encode(msg, enc, sizeof(enc));
	hdrs[0] = nv(":status", "200");
	hdrs[1] = nv("content-type", GRPC_CONTENT_TYPE);
	hdrs[2] = nv("grpc-status", code);
	hdrs[3] = nv("grpc-message", enc);
	return nghttp2_submit_response(c->h2, s->sid, hdrs, msg[0] ? 4 : 3, NULL);
}

static void refuse(struct ca_conn *c, struct ca_stream *s, enum grpc_status st,
		   const char *why)
{
	if (s->answered)
		return;
	if (c->host->refused)
		c->host->refused(c->host->arg, st, why);
	answer_error(c, s, st, why);
}

static ssize_t read_body(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct ca_stream *s = src->ptr;
	size_t left = s->out_len - s->out_off;
	nghttp2_nv t[1];

	(void)arg;
	if (len > left)
		len = left;
	memcpy(buf, s->out + s->out_off, len);
	s->out_off += len;
	if (s->out_off == s->out_len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		t[0] = nv("grpc-status", "0");
		if (nghttp2_submit_trailer(h2, sid, t, 1))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return (ssize_t)len;
}

static int answer_ok(struct ca_conn *c, struct ca_stream *s, uint8_t *body, size_t len)
{
	nghttp2_data_provider dp = { .source.ptr = s, .read_callback = read_body };
	nghttp2_nv hdrs[2];

	s->out = malloc(len + GRPC_FRAME_HDR);
	if (!s->out || grpc_frame_hdr(s->out, len)) {
		free(body);
		return answer_error(c, s, GRPC_RESOURCE_EXHAUSTED, "out of memory");
	}
	memcpy(s->out + GRPC_FRAME_HDR, body, len);
	free(body);
	s->out_len = len + GRPC_FRAME_HDR;
	s->answered = 1;
	hdrs[0] = nv(":status", "200");
	hdrs[1] = nv("content-type", GRPC_CONTENT_TYPE);
	return nghttp2_submit_response(c->h2, s->sid, hdrs, 2, &dp);
}

/* The client ended its side: serve the call. */
static void serve(struct ca_conn *c, struct ca_stream *s)
{
	struct ca_reply r = { .status = GRPC_INTERNAL };
	const char *text;
	enum grpc_status st;

	if (s->answered)
		return;
	st = grpc_msg_status(grpc_msg_done(&s->req.msg), &text);
	if (st != GRPC_OK) {
		refuse(c, s, st, text);
		return;
	}
	c->host->call(c->host->arg, &s->req, &r);
	/* the token is not needed any more */
	grpc_req_free(&s->req);
	if (r.status == GRPC_OK && r.body)
		answer_ok(c, s, r.body, r.len);
	else
		answer_error(c, s, r.status == GRPC_OK ? GRPC_INTERNAL : r.status, r.message);
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *arg)
{
	struct ca_conn *c = arg;
	struct ca_stream *s;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	s->sid = f->hd.stream_id;
	s->c = c;
	s->next = c->streams;
	if (s->next)
		s->next->prev = s;
	c->streams = s;
	grpc_req_init(&s->req, c->host->max_msg);
	s->req.msg.reserve = reserve;
	s->req.msg.reserve_arg = s;
	if (nghttp2_session_set_stream_user_data(h2, s->sid, s)) {
		stream_free(s);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
		     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct ca_stream *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);

	(void)flags;
	(void)arg;
	if (!s || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;	/* trailers of a request: nothing in them is used */
	s->hdr_bytes += nlen + vlen + 32;
	if (s->hdr_bytes > CA_CONN_HDR_BYTES)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;	/* RST_STREAM */
	grpc_req_header(&s->req, name, nlen, value, vlen);
	return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *arg)
{
	struct ca_conn *c = arg;
	struct ca_stream *s;
	char why[160];
	enum grpc_status st;

	if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
		return 0;
	s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
	if (!s)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
		st = grpc_req_check(&s->req, GRPC_CA_PATH, why, sizeof(why));
		if (st != GRPC_OK)
			refuse(c, s, st, why);
	}
	if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
		serve(c, s);
	return 0;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t sid, const uint8_t *data,
		   size_t len, void *arg)
{
	struct ca_conn *c = arg;
	struct ca_stream *s = nghttp2_session_get_stream_user_data(h2, sid);
	const char *text;
	int rc;

	(void)flags;
	if (!s || s->answered)
		return 0;	/* refused already: dropped, never stored */
	rc = grpc_msg_feed(&s->req.msg, data, len);
	if (rc) {
		/* two statements: an argument's order of evaluation is not
		 * defined, TEXT must be set before it is read */
		enum grpc_status st = grpc_msg_status(rc, &text);

		refuse(c, s, st, text);
	}
	return 0;
}

static int on_close(nghttp2_session *h2, int32_t sid, uint32_t code, void *arg)
{
	(void)code;
	(void)arg;
	stream_free(nghttp2_session_get_stream_user_data(h2, sid));
	nghttp2_session_set_stream_user_data(h2, sid, NULL);
	return 0;
}

struct ca_conn *ca_conn_new(const struct ca_conn_host *host)
{
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, CA_CONN_STREAMS },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1U << 20 },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, CA_CONN_HDR_BYTES },
	};
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;
	struct ca_conn *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return NULL;
	c->host = host;
	if (nghttp2_session_callbacks_new(&cb)) {
		free(c);
		return NULL;
	}
	if (nghttp2_option_new(&opt)) {
		nghttp2_session_callbacks_del(cb);
		free(c);
		return NULL;
	}
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
	/* a peer that floods SETTINGS or resets streams in bulk is cut off
	 * by nghttp2's own limits (its defaults, kept) */
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	rc = nghttp2_session_server_new2(&c->h2, cb, c, opt);
	nghttp2_session_callbacks_del(cb);
	nghttp2_option_del(opt);
	if (rc || nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv,
					  sizeof(iv) / sizeof(iv[0]))) {
		ca_conn_free(c);
		return NULL;
	}
	return c;
}

void ca_conn_free(struct ca_conn *c)
{
	if (!c)
		return;
	nghttp2_session_del(c->h2);
	while (c->streams)
		stream_free(c->streams);
	free(c);
}

int ca_conn_recv(struct ca_conn *c, const uint8_t *in, size_t len)
{
	ssize_t n = nghttp2_session_mem_recv(c->h2, in, len);

	if (n < 0) {
		nghttp2_session_terminate_session(c->h2, NGHTTP2_PROTOCOL_ERROR);
		return -EPROTO;
	}
	return 0;
}

ssize_t ca_conn_send(struct ca_conn *c, const uint8_t **out)
{
	ssize_t n = nghttp2_session_mem_send(c->h2, out);

	return n < 0 ? -EPROTO : n;
}

int ca_conn_alive(struct ca_conn *c)
{
	return nghttp2_session_want_read(c->h2) || nghttp2_session_want_write(c->h2);
}

void ca_conn_shutdown(struct ca_conn *c)
{
	nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
}
