// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skmesh-ca's HTTP/2 connection (ca/conn.c) over memory, driven by a real
 * nghttp2 client session: a good call gets its message and grpc-status 0
 * in trailers; a request that is not gRPC, another method, a compressed or
 * oversize message each get their trailers-only status without a call
 * being made; the shared budget refuses what does not fit and every byte
 * comes back when the connection goes, also that of a stream still open.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "conn.h"
#include "unit.h"

#define BUDGET	(1U << 20)

static int calls, refusals;
static _Atomic size_t budget;

static void h_call(void *arg, struct grpc_req *r, struct ca_reply *out)
{
	(void)arg;
	calls++;
	assert_string_equal(r->token, "tok");
	out->status = GRPC_OK;
	out->len = r->msg.len;
	out->body = malloc(r->msg.len + 1);
	memcpy(out->body, r->msg.buf, r->msg.len);	/* an echo */
}

static void h_refused(void *arg, enum grpc_status st, const char *why)
{
	(void)arg; (void)st; (void)why;
	refusals++;
}

static struct ca_conn_host host = {
	.call = h_call, .refused = h_refused, .max_msg = 4096, .budget = &budget,
};

/* A client stream's view. */
struct cstream {
	const uint8_t *body;
	size_t len, off;
	struct grpc_resp resp;
	int closed;
	int hold;		/* send the body, then keep the stream open */
	uint32_t rst;
};

static int c_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
		    size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct cstream *s = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);

	(void)flags; (void)arg;
	if (s)
		grpc_resp_header(&s->resp, name, nlen, value, vlen);
	return 0;
}

static int c_data(nghttp2_session *h2, uint8_t flags, int32_t sid, const uint8_t *data,
		  size_t len, void *arg)
{
	struct cstream *s = nghttp2_session_get_stream_user_data(h2, sid);

	(void)flags; (void)arg;
	if (s)
		grpc_msg_feed(&s->resp.msg, data, len);
	return 0;
}

static int c_close(nghttp2_session *h2, int32_t sid, uint32_t code, void *arg)
{
	struct cstream *s = nghttp2_session_get_stream_user_data(h2, sid);

	(void)arg;
	if (s) {
		s->closed = 1;
		s->rst = code;
	}
	return 0;
}

static ssize_t c_read(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len,
		      uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct cstream *s = src->ptr;

	(void)h2; (void)sid; (void)arg;
	if (s->off == s->len && s->hold)
		return NGHTTP2_ERR_DEFERRED;
	if (len > s->len - s->off)
		len = s->len - s->off;
	memcpy(buf, s->body + s->off, len);
	s->off += len;
	if (s->off == s->len && !s->hold)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)len;
}

static nghttp2_session *client(void)
{
	nghttp2_session_callbacks *cb;
	nghttp2_session *h2;

	assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
	nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
	assert_int_equal(nghttp2_session_client_new(&h2, cb, NULL), 0);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
	return h2;
}

static void request(nghttp2_session *h2, struct cstream *s, const char *path,
		    const char *ctype, const uint8_t *body, size_t len)
{
	nghttp2_nv hdrs[] = {
#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), 0 }
		NV(":method", "POST"), NV(":scheme", "https"), NV(":path", path),
		NV(":authority", "ca"), NV("content-type", ctype), NV("te", "trailers"),
		NV("authorization", "Bearer tok"),
#undef NV
	};
	nghttp2_data_provider dp = { .source.ptr = s, .read_callback = c_read };

	memset(s, 0, sizeof(*s));
	s->body = body;
	s->len = len;
	grpc_resp_init(&s->resp, 1U << 20);
	assert_true(nghttp2_submit_request(h2, NULL, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &dp,
					   s) > 0);
}

/* Both sides talk until neither has more to say. */
static void pump(nghttp2_session *h2, struct ca_conn *c)
{
	for (int round = 0; round < 100; round++) {
		const uint8_t *out;
		ssize_t n, moved = 0;

		while ((n = nghttp2_session_mem_send(h2, &out)) > 0) {
			assert_int_equal(ca_conn_recv(c, out, (size_t)n), 0);
			moved += n;
		}
		while ((n = ca_conn_send(c, &out)) > 0) {
			assert_true(nghttp2_session_mem_recv(h2, out, (size_t)n) == n);
			moved += n;
		}
		if (!moved)
			return;
	}
	fail_msg("the sessions never went quiet");
}

static uint8_t *framed(const char *msg, size_t *len, uint8_t flag, uint32_t claim)
{
	size_t n = strlen(msg);
	uint8_t *b = malloc(n + GRPC_FRAME_HDR);

	grpc_frame_hdr(b, claim ? claim : n);
	b[0] = flag;
	memcpy(b + GRPC_FRAME_HDR, msg, n);
	*len = n + GRPC_FRAME_HDR;
	return b;
}

static enum grpc_status status_of(struct cstream *s, char *msg, size_t msglen)
{
	assert_true(s->closed);
	return grpc_resp_status(&s->resp, msg, msglen);
}

static void test_calls(void **state)
{
	struct cstream good, ctype, other, zip, big, cut;
	nghttp2_session *h2 = client();
	struct ca_conn *c;
	uint8_t *b1, *b2, *b3, *b4;
	size_t l1, l2, l3, l4;
	char msg[256];

	(void)state;
	budget = BUDGET;
	calls = refusals = 0;
	c = ca_conn_new(&host);
	assert_non_null(c);
	b1 = framed("hello", &l1, 0, 0);
	b2 = framed("hello", &l2, 1, 0);
	b3 = framed("x", &l3, 0, 5000);		/* over max_msg 4096 */
	b4 = framed("abc", &l4, 0, 10);		/* cut short */
	request(h2, &good, GRPC_CA_PATH, "application/grpc", b1, l1);
	request(h2, &ctype, GRPC_CA_PATH, "application/json", b1, l1);
	request(h2, &other, "/istio.v1.auth.IstioCertificateService/Other", "application/grpc",
		b1, l1);
	request(h2, &zip, GRPC_CA_PATH, "application/grpc+proto", b2, l2);
	request(h2, &big, GRPC_CA_PATH, "application/grpc", b3, l3);
	request(h2, &cut, GRPC_CA_PATH, "application/grpc", b4, l4);
	pump(h2, c);

	assert_int_equal(status_of(&good, msg, sizeof(msg)), GRPC_OK);
	assert_int_equal(good.resp.msg.len, 5);
	assert_memory_equal(good.resp.msg.buf, "hello", 5);
	assert_int_equal(status_of(&ctype, msg, sizeof(msg)), GRPC_INTERNAL);
	assert_int_equal(status_of(&other, msg, sizeof(msg)), GRPC_UNIMPLEMENTED);
	assert_int_equal(status_of(&zip, msg, sizeof(msg)), GRPC_INTERNAL);
	assert_int_equal(status_of(&big, msg, sizeof(msg)), GRPC_RESOURCE_EXHAUSTED);
	assert_int_equal(status_of(&cut, msg, sizeof(msg)), GRPC_INVALID_ARGUMENT);
	assert_int_equal(calls, 1);
	assert_int_equal(refusals, 5);
	assert_int_equal(budget, BUDGET);
	struct cstream *all[] = { &good, &ctype, &other, &zip, &big, &cut };

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		grpc_resp_free(&all[i]->resp);
	ca_conn_free(c);
	nghttp2_session_del(h2);
	free(b1); free(b2); free(b3); free(b4);
}

static void test_budget_and_streams(void **state)
{
	struct cstream s[CA_CONN_STREAMS], first;
	nghttp2_session *h2 = client();
	struct ca_conn *c;
	uint8_t *b;
	size_t l;
	char msg[256];
	int exhausted = 0;

	(void)state;
	/* room for one 1 KiB message (and its extra byte), not two */
	budget = 1500;
	calls = refusals = 0;
	c = ca_conn_new(&host);
	b = framed("0123456789", &l, 0, 1024);
	/* the first stream holds its 1 KiB: its message never completes */
	request(h2, &first, GRPC_CA_PATH, "application/grpc", b, l);
	first.hold = 1;
	pump(h2, c);
	assert_false(first.closed);
	assert_int_equal(budget, 1500 - 1025);
	/* every other message finds the budget short: refused, nothing
	 * stored (the client keeps to the server's 16 streams at once) */
	for (int i = 0; i < CA_CONN_STREAMS; i++)
		request(h2, &s[i], GRPC_CA_PATH, "application/grpc", b, l);
	pump(h2, c);
	for (int i = 0; i < CA_CONN_STREAMS; i++)
		exhausted += status_of(&s[i], msg, sizeof(msg)) == GRPC_RESOURCE_EXHAUSTED;
	assert_int_equal(exhausted, CA_CONN_STREAMS);
	if (!strstr(msg, "busy"))
		fail_msg("grpc-message: %s", msg);
	assert_int_equal(budget, 1500 - 1025);
	assert_int_equal(calls, 0);
	ca_conn_free(c);
	/* the open stream's reservation comes back with the connection */
	assert_int_equal(budget, 1500);
	for (int i = 0; i < CA_CONN_STREAMS; i++)
		grpc_resp_free(&s[i].resp);
	grpc_resp_free(&first.resp);
	nghttp2_session_del(h2);
	free(b);
}

int run_ca_conn_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_calls),
		cmocka_unit_test(test_budget_and_streams),
	};

	return cmocka_run_group_tests_name("ca_conn", tests, NULL, NULL);
}
