// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshd's client of a remote CA (istiod, skmesh-ca): see caclient.h.
 * Messages are protobuf-c's, built from proto/ca.proto; the transport is
 * nghttp2 over OpenSSL on a blocking socket of the worker thread's own.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "ca.pb-c.h"
#include "caclient.h"
#include "grpc.h"
#include "log.h"


/* --- messages -------------------------------------------------------------- */

/* A PEM CSR for KEY naming ID as its one URI SAN (critical: the subject
 * is empty), as Istio's agents make them. NULL on failure. */
static char *csr_pem(EVP_PKEY *key, const char *id)
{
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *gen = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	X509_EXTENSION *ext = NULL;
	BIO *b = NULL;
	BUF_MEM *mem;
	char *pem = NULL;

	if (!req || !exts || !gens || !gen || !ia5 || !ASN1_STRING_set(ia5, id, -1))
		goto out;
	GENERAL_NAME_set0_value(gen, GEN_URI, ia5);
	ia5 = NULL;
	if (!sk_GENERAL_NAME_push(gens, gen))
		goto out;
	gen = NULL;
	ext = X509V3_EXT_i2d(NID_subject_alt_name, 1, gens);
	if (!ext || !sk_X509_EXTENSION_push(exts, ext))
		goto out;
	ext = NULL;
	if (!X509_REQ_set_version(req, 0) || !X509_REQ_set_pubkey(req, key) ||
	    !X509_REQ_add_extensions(req, exts) || !X509_REQ_sign(req, key, EVP_sha256()))
		goto out;
	b = BIO_new(BIO_s_mem());
	if (!b || !PEM_write_bio_X509_REQ(b, req) || !BIO_get_mem_ptr(b, &mem))
		goto out;
	pem = strndup(mem->data, mem->length);
out:
	BIO_free(b);
	X509_EXTENSION_free(ext);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(gen);
	GENERAL_NAMES_free(gens);
	X509_REQ_free(req);
	ERR_clear_error();
	return pem;
}

int ca_request_encode(const struct sign_req *r, uint8_t **out, size_t *len,
		      char *err, size_t errlen)
{
	Istio__V1__Auth__IstioCertificateRequest req = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry fe = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *fields[1] = { &fe };
	Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
	char *csr = csr_pem(r->key, r->id);

	*out = NULL;
	if (!csr) {
		snprintf(err, errlen, "cannot make a CSR for %s", r->id);
		return -ENOMEM;
	}
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v.string_value = (char *)r->id;
	fe.key = "ImpersonatedIdentity";
	fe.value = &v;
	md.n_fields = 1;
	md.fields = fields;
	req.csr = csr;
	req.validity_duration = r->lifetime_s;
	req.metadata = &md;
	*len = istio__v1__auth__istio_certificate_request__get_packed_size(&req);
	*out = malloc(*len ? *len : 1);
	if (*out)
		istio__v1__auth__istio_certificate_request__pack(&req, *out);
	free(csr);
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* Appends every certificate of the PEM text S to SK; how many, or -1. */
static int pem_certs_add(const char *s, STACK_OF(X509) *sk)
{
	BIO *b = BIO_new_mem_buf(s, -1);
	X509 *x;
	int n = 0;

	if (!b)
		return -1;
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			n = -1;
			break;
		}
		n++;
	}
	BIO_free(b);
	ERR_clear_error();
	return n;
}

int ca_response_decode(const uint8_t *buf, size_t len, X509 **leaf,
		       STACK_OF(X509) **chain, char *err, size_t errlen)
{
	Istio__V1__Auth__IstioCertificateResponse *resp;
	STACK_OF(X509) *all;
	int rc = -EINVAL;

	*leaf = NULL;
	*chain = NULL;
	resp = istio__v1__auth__istio_certificate_response__unpack(NULL, len, buf);
	if (!resp) {
		snprintf(err, errlen, "the CA's answer is no IstioCertificateResponse");
		return -EINVAL;
	}
	all = sk_X509_new_null();
	if (!all) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (!resp->n_cert_chain) {
		snprintf(err, errlen, "the CA's answer has no certificate");
		goto out;
	}
	for (size_t i = 0; i < resp->n_cert_chain; i++) {
		if (pem_certs_add(resp->cert_chain[i], all) <= 0) {
			snprintf(err, errlen, "the CA's answer: cert_chain[%zu] is no PEM "
				 "certificate", i);
			goto out;
		}
	}
	*leaf = sk_X509_shift(all);
	*chain = all;
	all = NULL;
	rc = 0;
out:
	sk_X509_pop_free(all, X509_free);
	istio__v1__auth__istio_certificate_response__free_unpacked(resp, NULL);
	return rc;
}

/* --- gRPC over TLS ------------------------------------------------------- */

struct grpc_conn {
	struct ca_transport tr;
	char *host, *port, *server_name, *authority, *root_file, *cluster_id;
	int timeout_ms;
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	nghttp2_session *h2;
	int dead;			/* the connection is to be made anew */
};

/* One call's stream. */
struct gstream {
	struct ca_call *c;
	size_t sent;			/* of the 5-byte prefix + body */
	uint8_t prefix[GRPC_FRAME_HDR];
	struct grpc_resp resp;
	int done;			/* 1: closed cleanly, -1: reset */
	int got_headers;
	int refused;			/* how the answer broke gRPC's framing */
};

static void gconn_close(struct grpc_conn *g)
{
	if (g->h2)
		nghttp2_session_del(g->h2);
	g->h2 = NULL;
	if (g->ssl)
		SSL_free(g->ssl);
	g->ssl = NULL;
	SSL_CTX_free(g->ctx);
	g->ctx = NULL;
	if (g->fd >= 0)
		close(g->fd);
	g->fd = -1;
	g->dead = 0;
}

/* Waits for FD to be EVENTS-ready until DEADLINE: 1, 0 on timeout. */
static int wait_fd(int fd, short events, double deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	double left = deadline - mono_ms();
	int n;

	if (left <= 0)
		return 0;
	do
		n = poll(&p, 1, (int)left + 1);
	while (n < 0 && errno == EINTR);
	return n > 0;
}

static ssize_t h2_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
		       void *arg)
{
	struct grpc_conn *g = arg;
	int n = SSL_write(g->ssl, data, (int)len), e;

	if (n > 0)
		return n;
	e = SSL_get_error(g->ssl, n);
	if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
		return NGHTTP2_ERR_WOULDBLOCK;	/* the socket's buffer is full */
	ERR_clear_error();
	g->dead = 1;
	return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int h2_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *arg)
{
	struct gstream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	if (!st || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	st->got_headers = 1;
	grpc_resp_header(&st->resp, name, namelen, value, valuelen);
	return 0;
}

static int h2_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
		   size_t len, void *arg)
{
	struct gstream *st = nghttp2_session_get_stream_user_data(s, id);

	if (!st || st->refused)
		return 0;
	/* too big, compressed, more than one message: not read further */
	st->refused = grpc_msg_feed(&st->resp.msg, data, len);
	if (st->refused) {
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
	}
	return 0;
}

static int h2_close(nghttp2_session *s, int32_t id, uint32_t code, void *arg)
{
	struct gstream *st = nghttp2_session_get_stream_user_data(s, id);

	if (st)
		st->done = code ? -1 : 1;
	return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct gstream *st = src->ptr;
	size_t total = GRPC_FRAME_HDR + st->c->len, n = 0;

	while (n < len && st->sent < total) {
		buf[n++] = st->sent < GRPC_FRAME_HDR ? st->prefix[st->sent]
						     : st->c->body[st->sent - GRPC_FRAME_HDR];
		st->sent++;
	}
	if (st->sent == total)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* Connects G: TCP, TLS verified against the trust bundle file (read now,
 * so a rotated bundle is in effect for the next connection) and the
 * server name, ALPN h2, then HTTP/2. 0, or -1 with the reason in WHY. */
static int gconn_open(struct grpc_conn *g, double deadline, char *why, size_t whylen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL, *a;
	nghttp2_session_callbacks *cb = NULL;
	X509_STORE *store = NULL;
	char err[160];
	int rc, one = 1;

	rc = trust_bundle_load(g->root_file, &store, NULL, err, sizeof(err));
	if (rc) {
		snprintf(why, whylen, "the trust bundle: %s", err);
		return -1;
	}
	rc = getaddrinfo(g->host, g->port, &hints, &ai);
	if (rc) {
		X509_STORE_free(store);
		snprintf(why, whylen, "%s: %s", g->host, gai_strerror(rc));
		return -1;
	}
	snprintf(why, whylen, "cannot connect to %s:%s", g->host, g->port);
	for (a = ai; a && g->fd < 0; a = a->ai_next) {
		int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int e = 0;
		socklen_t el = sizeof(e);

		if (fd < 0)
			continue;
		if ((connect(fd, a->ai_addr, a->ai_addrlen) && errno != EINPROGRESS) ||
		    !wait_fd(fd, POLLOUT, deadline) ||
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) || e) {
			snprintf(why, whylen, "cannot connect to %s:%s: %s", g->host, g->port,
				 e ? strerror(e) : errno ? strerror(errno) : "timed out");
			close(fd);
			continue;
		}
		g->fd = fd;
	}
	freeaddrinfo(ai);
	if (g->fd < 0) {
		X509_STORE_free(store);
		return -1;
	}
	setsockopt(g->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	g->ctx = SSL_CTX_new(TLS_client_method());
	if (!g->ctx || !SSL_CTX_set_min_proto_version(g->ctx, TLS1_2_VERSION) ||
	    SSL_CTX_set_alpn_protos(g->ctx, (const unsigned char *)"\x02h2", 3)) {
		X509_STORE_free(store);
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	SSL_CTX_set_cert_store(g->ctx, store);	/* the context's now */
	SSL_CTX_set_verify(g->ctx, SSL_VERIFY_PEER, NULL);
	g->ssl = SSL_new(g->ctx);
	if (!g->ssl || !SSL_set_fd(g->ssl, g->fd)) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	{
		unsigned char ip[16];
		int is_ip = inet_pton(AF_INET, g->server_name, ip) == 1 ||
			    inet_pton(AF_INET6, g->server_name, ip) == 1;

		if (is_ip ? !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(g->ssl), g->server_name)
			  : (!SSL_set1_host(g->ssl, g->server_name) ||
			     !SSL_set_tlsext_host_name(g->ssl, g->server_name))) {
			snprintf(why, whylen, "server name %s", g->server_name);
			goto fail;
		}
	}
	for (;;) {
		int r = SSL_connect(g->ssl), e = SSL_get_error(g->ssl, r);

		if (r == 1)
			break;
		if ((e == SSL_ERROR_WANT_READ && wait_fd(g->fd, POLLIN, deadline)) ||
		    (e == SSL_ERROR_WANT_WRITE && wait_fd(g->fd, POLLOUT, deadline)))
			continue;
		if (SSL_get_verify_result(g->ssl) != X509_V_OK)
			snprintf(why, whylen, "the CA at %s:%s is not trusted: %s", g->host,
				 g->port, X509_verify_cert_error_string(
					 SSL_get_verify_result(g->ssl)));
		else
			snprintf(why, whylen, "TLS with the CA at %s:%s failed%s%s", g->host,
				 g->port, e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ?
				 ": timed out" : ": ",
				 e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? "" :
				 ERR_reason_error_string(ERR_peek_last_error()) ?: "closed");
		goto fail;
	}
	{
		const unsigned char *p;
		unsigned int n;

		SSL_get0_alpn_selected(g->ssl, &p, &n);
		if (n != 2 || memcmp(p, "h2", 2)) {
			snprintf(why, whylen, "the CA at %s:%s did not select ALPN h2", g->host,
				 g->port);
			goto fail;
		}
	}
	if (nghttp2_session_callbacks_new(&cb))
		goto fail_mem;
	nghttp2_session_callbacks_set_send_callback(cb, h2_send);
	nghttp2_session_callbacks_set_on_header_callback(cb, h2_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h2_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, h2_close);
	rc = nghttp2_session_client_new(&g->h2, cb, g);
	nghttp2_session_callbacks_del(cb);
	if (rc || nghttp2_submit_settings(g->h2, NGHTTP2_FLAG_NONE, NULL, 0))
		goto fail_mem;
	ERR_clear_error();
	return 0;

fail_mem:
	snprintf(why, whylen, "out of memory");
fail:
	ERR_clear_error();
	gconn_close(g);
	return -1;
}

/* Runs G's session until every stream of SS is closed, or DEADLINE:
 * 0, or -1 when the connection broke (reason in WHY). */
static int gconn_run(struct grpc_conn *g, struct gstream *ss, size_t n, double deadline,
		     char *why, size_t whylen)
{
	uint8_t buf[16384];

	for (;;) {
		size_t open = 0;
		int r, e;

		for (size_t i = 0; i < n; i++)
			open += !ss[i].done;
		if (!open)
			return 0;
		if (nghttp2_session_send(g->h2) || g->dead) {
			snprintf(why, whylen, "writing to the CA failed");
			return -1;
		}
		/* what is left to send goes when the socket takes it */
		if (!SSL_pending(g->ssl) &&
		    !wait_fd(g->fd, POLLIN | (nghttp2_session_want_write(g->h2) ? POLLOUT : 0),
			     deadline)) {
			snprintf(why, whylen, "the CA did not answer in %d ms", g->timeout_ms);
			return -2;
		}
		r = SSL_read(g->ssl, buf, sizeof(buf));
		if (r <= 0) {
			e = SSL_get_error(g->ssl, r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				continue;
			snprintf(why, whylen, "the CA closed the connection");
			ERR_clear_error();
			return -1;
		}
		if (nghttp2_session_mem_recv(g->h2, buf, r) < 0) {
			snprintf(why, whylen, "the CA broke HTTP/2");
			return -1;
		}
		if (!nghttp2_session_want_read(g->h2) && !nghttp2_session_want_write(g->h2)) {
			for (size_t i = 0; i < n; i++)
				if (!ss[i].done)
					ss[i].done = -1;
			g->dead = 1;
		}
	}
}

/* Submits the calls of SS on G: 0, or -1. */
static int gconn_submit(struct grpc_conn *g, const char *token, struct gstream *ss, size_t n)
{
	char bearer[GRPC_MAX_TOKEN + 8], tmo[32];

	snprintf(bearer, sizeof(bearer), "Bearer %s", token);
	snprintf(tmo, sizeof(tmo), "%dm", g->timeout_ms);
	for (size_t i = 0; i < n; i++) {
#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), \
		   NGHTTP2_NV_FLAG_NONE }
		nghttp2_nv hdrs[] = {
			NV(":method", "POST"), NV(":scheme", "https"),
			NV(":path", GRPC_CA_PATH), NV(":authority", g->authority),
			NV("content-type", GRPC_CONTENT_TYPE), NV("te", "trailers"),
			NV("grpc-timeout", tmo),
			{ (uint8_t *)"authorization", (uint8_t *)bearer, 13, strlen(bearer),
			  NGHTTP2_NV_FLAG_NO_INDEX },
			NV("clusterid", g->cluster_id ? g->cluster_id : ""),
		};
#undef NV
		nghttp2_data_provider dp = { .source.ptr = &ss[i], .read_callback = body_read };
		int32_t id;

		if (grpc_frame_hdr(ss[i].prefix, ss[i].c->len))
			return -1;
		id = nghttp2_submit_request(g->h2, NULL, hdrs,
					    sizeof(hdrs) / sizeof(hdrs[0]) - !g->cluster_id,
					    &dp, &ss[i]);
		if (id < 0)
			return -1;
	}
	OPENSSL_cleanse(bearer, sizeof(bearer));
	return 0;
}

/* One call's answer from its stream; BROKE: why the connection failed
 * before the stream closed, or NULL. */
static void gstream_finish(struct gstream *st, const char *broke)
{
	struct ca_call *c = st->c;
	enum grpc_status gs;

	if (st->done != 1 && !st->refused) {
		c->status = GRPC_UNAVAILABLE;
		snprintf(c->msg, sizeof(c->msg), "%s", broke ? broke : "the CA reset the call");
		return;
	}
	if (st->refused) {
		/* the framing's own verdict: too big, compressed, two messages */
		const char *text;

		grpc_msg_status(st->refused, &text);
		c->status = SIGN_STATUS_LOCAL;
		snprintf(c->msg, sizeof(c->msg), "the CA's answer is refused: %s", text);
		return;
	}
	gs = grpc_resp_status(&st->resp, c->msg, sizeof(c->msg));
	if (gs != GRPC_OK && st->resp.grpc_status > 0 && st->resp.http_status == 200 &&
	    st->resp.ctype_ok) {
		/* the CA's verdict */
		c->status = st->resp.grpc_status < SIGN_STATUS_MAX ? st->resp.grpc_status
								   : SIGN_STATUS_LOCAL;
		return;
	}
	if (gs != GRPC_OK) {
		/* no grpc-status, a non-200 :status, a non-gRPC content-type, no
		 * message: a broken answer, not a verdict */
		c->status = SIGN_STATUS_LOCAL;
		return;
	}
	c->status = 0;
	c->answer = st->resp.msg.buf;	/* the worker's now */
	c->answer_len = st->resp.msg.len;
	st->resp.msg.buf = NULL;
	st->resp.msg.len = 0;
}

static void grpc_call(struct ca_transport *tr, const char *token, struct ca_call *calls,
		      size_t n)
{
	struct grpc_conn *g = (struct grpc_conn *)tr;
	double deadline = mono_ms() + g->timeout_ms;
	char why[200] = "";
	struct gstream *ss = calloc(n, sizeof(*ss));
	int rc = -1, reused;

	for (size_t i = 0; i < n; i++) {
		calls[i].status = SIGN_STATUS_LOCAL;
		calls[i].msg[0] = 0;
	}
	if (!ss) {
		for (size_t i = 0; i < n; i++)
			snprintf(calls[i].msg, sizeof(calls[i].msg), "out of memory");
		return;
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		if (g->h2 && (g->dead || !nghttp2_session_want_read(g->h2)))
			gconn_close(g);
		reused = g->h2 != NULL;
		if (!g->h2 && gconn_open(g, deadline, why, sizeof(why)))
			break;
		for (size_t i = 0; i < n; i++) {
			if (ss[i].c)
				grpc_resp_free(&ss[i].resp);
			memset(&ss[i], 0, sizeof(ss[i]));
			ss[i].c = &calls[i];
			grpc_resp_init(&ss[i].resp, CA_MAX_ANSWER);
			calls[i].msg[0] = 0;
		}
		rc = gconn_submit(g, token, ss, n);
		if (!rc)
			rc = gconn_run(g, ss, n, deadline, why, sizeof(why));
		if (!rc)
			break;
		gconn_close(g);
		/* a kept connection the CA closed while idle: once more on a
		 * new one, when no answer came on it */
		if (!reused || rc == -2)
			break;
		{
			int any = 0;

			for (size_t i = 0; i < n; i++)
				any |= ss[i].got_headers;
			if (any)
				break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (!ss[i].c) {		/* never sent: no connection */
			calls[i].status = GRPC_UNAVAILABLE;
			snprintf(calls[i].msg, sizeof(calls[i].msg), "%s", why);
			continue;
		}
		if (rc == -2 && ss[i].done != 1) {
			calls[i].status = GRPC_DEADLINE_EXCEEDED;
			snprintf(calls[i].msg, sizeof(calls[i].msg), "%s", why);
			continue;
		}
		gstream_finish(&ss[i], rc ? why : NULL);
	}
	for (size_t i = 0; i < n; i++)
		if (ss[i].c)
			grpc_resp_free(&ss[i].resp);
	free(ss);
}

static void grpc_free(struct ca_transport *tr)
{
	struct grpc_conn *g = (struct grpc_conn *)tr;

	gconn_close(g);
	free(g->host);
	free(g->port);
	free(g->server_name);
	free(g->authority);
	free(g->root_file);
	free(g->cluster_id);
	free(g);
}

/* HOST:PORT or [V6]:PORT into G. */
static int split_addr(const char *addr, struct grpc_conn *g)
{
	const char *colon;

	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');

		if (!end || end[1] != ':')
			return -EINVAL;
		g->host = strndup(addr + 1, end - addr - 1);
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || strchr(addr, ':') != colon)
			return -EINVAL;
		g->host = strndup(addr, colon - addr);
	}
	g->port = strdup(colon + 1);
	if (!g->host || !g->port)
		return -ENOMEM;
	if (!g->host[0] || !g->port[0] || strspn(g->port, "0123456789") != strlen(g->port) ||
	    atoi(g->port) < 1 || atoi(g->port) > 65535)
		return -EINVAL;
	return 0;
}

/* --- the signer: a queue, a worker, answers ------------------------------- */

struct ca_req {
	struct sign_req r;		/* r.key: the request's own reference */
	struct ca_req *next;
};

struct ca_ans {
	struct sign_res res;
	struct ca_ans *next;
};

struct ca_client {
	struct cert_signer s;
	struct ca_transport *tr;
	char *root_file, *token_file;
	int max_inflight, max_queued;
	/* the trust bundle peers are checked against, and what it was read
	 * from (a mounted ConfigMap changes by a new file behind a link) */
	X509_STORE *store;
	struct stat root_st;
	int root_missing;		/* said once */
	int evfd;
	pthread_t worker;
	int started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct ca_req *q, **qtail;	/* waiting */
	struct ca_ans *a, **atail;	/* answered, not polled */
	int nqueued, stop;
	atomic_int inflight;		/* asked, not polled */
};

/* Reads the token file: a malloc'ed string, or NULL (reason in WHY). */
static char *token_read(const char *path, char *why, size_t whylen)
{
	char *t = malloc(GRPC_MAX_TOKEN + 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = -1;

	if (t && fd >= 0)
		n = read(fd, t, GRPC_MAX_TOKEN + 1);
	if (fd >= 0)
		close(fd);
	if (!t || n < 0) {
		snprintf(why, whylen, "the token %s: %s", path, t ? strerror(errno) : "no memory");
		free(t);
		return NULL;
	}
	while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' '))
		n--;
	t[n] = 0;
	if (!n || n > GRPC_MAX_TOKEN || strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
					      "rstuvwxyz0123456789-_.~+/=") != (size_t)n) {
		snprintf(why, whylen, "the token %s is %s", path, !n ? "empty" :
			 "not one bearer token (at most 8 KiB of JWT characters)");
		OPENSSL_cleanse(t, GRPC_MAX_TOKEN + 1);
		free(t);
		return NULL;
	}
	return t;
}

static void answer_post(struct ca_client *cc, struct ca_ans *a)
{
	uint64_t one = 1;

	pthread_mutex_lock(&cc->lock);
	a->next = NULL;
	*cc->atail = a;
	cc->atail = &a->next;
	pthread_mutex_unlock(&cc->lock);
	if (write(cc->evfd, &one, sizeof(one)) < 0) {
		/* the counter is far from full: cannot fail */
	}
}

/* The worker's batch: encodes each request, makes the calls, answers. */
static void batch_run(struct ca_client *cc, struct ca_req **reqs, size_t n)
{
	struct ca_call *calls = calloc(n, sizeof(*calls));
	uint8_t **bodies = calloc(n, sizeof(*bodies));
	struct ca_ans **ans = calloc(n, sizeof(*ans));
	char why[SKM_REASON_MAX] = "";
	char *token = NULL;
	size_t ncall = 0, *which = calloc(n, sizeof(*which));

	for (size_t i = 0; ans && i < n; i++) {
		ans[i] = calloc(1, sizeof(*ans[i]));
		if (!ans[i])
			break;
		ans[i]->res.tag = reqs[i]->r.tag;
		snprintf(ans[i]->res.id, sizeof(ans[i]->res.id), "%s", reqs[i]->r.id);
	}
	if (!calls || !bodies || !ans || !which || !ans[n - 1]) {
		/* nothing can be answered without memory: the requests are
		 * dropped, and certmgr gives each up after SKM_PENDING_MAX_S
		 * and asks again */
		atomic_fetch_sub(&cc->inflight, (int)n);
		goto out;
	}
	token = token_read(cc->token_file, why, sizeof(why));
	for (size_t i = 0; i < n; i++) {
		struct sign_res *res = &ans[i]->res;
		size_t len;

		if (!token) {
			res->rc = -EACCES;
			res->status = SIGN_STATUS_LOCAL;
			snprintf(res->why, sizeof(res->why), "%s", why);
			continue;
		}
		if (ca_request_encode(&reqs[i]->r, &bodies[i], &len, res->why,
				      sizeof(res->why))) {
			res->rc = -ENOMEM;
			res->status = SIGN_STATUS_LOCAL;
			continue;
		}
		calls[ncall].body = bodies[i];
		calls[ncall].len = len;
		which[ncall++] = i;
	}
	if (ncall)
		cc->tr->call(cc->tr, token, calls, ncall);
	for (size_t k = 0; k < ncall; k++) {
		struct sign_res *res = &ans[which[k]]->res;
		struct ca_call *c = &calls[k];

		res->status = c->status;
		if (c->status) {
			res->rc = c->status == SIGN_STATUS_LOCAL ? -EPROTO : -EACCES;
			if (c->status == SIGN_STATUS_LOCAL)
				snprintf(res->why, sizeof(res->why), "%s",
					 c->msg[0] ? c->msg : "no answer");
			else
				snprintf(res->why, sizeof(res->why), "CreateCertificate: %s (%d): %s",
					 grpc_status_name(c->status), c->status,
					 c->msg[0] ? c->msg : "(no message)");
		} else if (ca_response_decode(c->answer, c->answer_len, &res->leaf, &res->chain,
					      res->why, sizeof(res->why))) {
			res->rc = -EPROTO;
			res->status = SIGN_STATUS_LOCAL;
		}
		free(c->answer);
	}
	for (size_t i = 0; i < n; i++) {
		answer_post(cc, ans[i]);
		ans[i] = NULL;
	}
out:
	if (token) {
		OPENSSL_cleanse(token, strlen(token));
		free(token);
	}
	for (size_t i = 0; i < n; i++) {
		if (ans)
			free(ans[i]);
		if (bodies)
			free(bodies[i]);
		EVP_PKEY_free(reqs[i]->r.key);
		free(reqs[i]);
	}
	free(ans);
	free(bodies);
	free(calls);
	free(which);
}

static void *worker_main(void *arg)
{
	struct ca_client *cc = arg;
	struct ca_req **reqs = calloc(cc->max_inflight, sizeof(*reqs));

	if (!reqs)
		return NULL;
	for (;;) {
		size_t n = 0;

		pthread_mutex_lock(&cc->lock);
		while (!cc->q && !cc->stop)
			pthread_cond_wait(&cc->cond, &cc->lock);
		if (cc->stop) {
			pthread_mutex_unlock(&cc->lock);
			break;
		}
		while (cc->q && n < (size_t)cc->max_inflight) {
			reqs[n++] = cc->q;
			cc->q = cc->q->next;
			cc->nqueued--;
		}
		if (!cc->q)
			cc->qtail = &cc->q;
		pthread_mutex_unlock(&cc->lock);
		batch_run(cc, reqs, n);
	}
	free(reqs);
	return NULL;
}

static int cc_refresh(struct cert_signer *s, char *err, size_t errlen)
{
	struct ca_client *cc = (struct ca_client *)s;
	X509_STORE *store;
	struct stat st;
	int rc;

	if (stat(cc->root_file, &st)) {
		rc = -errno;
		if (cc->root_missing)
			return 0;	/* said already */
		cc->root_missing = 1;
		if (err)
			snprintf(err, errlen, "%s: %s", cc->root_file, strerror(errno));
		return rc;
	}
	cc->root_missing = 0;
	if (cc->store && st.st_ino == cc->root_st.st_ino && st.st_dev == cc->root_st.st_dev &&
	    st.st_size == cc->root_st.st_size &&
	    st.st_mtim.tv_sec == cc->root_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == cc->root_st.st_mtim.tv_nsec)
		return 0;
	rc = trust_bundle_load(cc->root_file, &store, NULL, err, err ? errlen : 0);
	if (rc) {
		cc->root_st = st;	/* said once, not every tick */
		return rc;
	}
	X509_STORE_free(cc->store);
	cc->store = store;
	cc->root_st = st;
	return 1;
}

static X509_STORE *cc_store(struct cert_signer *s)
{
	return ((struct ca_client *)s)->store;
}

static int cc_sign(struct cert_signer *s, const struct sign_req *r, struct sign_res *out)
{
	struct ca_client *cc = (struct ca_client *)s;
	struct ca_req *q;

	memset(out, 0, sizeof(*out));
	out->tag = r->tag;
	snprintf(out->id, sizeof(out->id), "%s", r->id);
	out->status = SIGN_STATUS_LOCAL;
	q = calloc(1, sizeof(*q));
	if (!q) {
		snprintf(out->why, sizeof(out->why), "out of memory");
		return out->rc = -ENOMEM;
	}
	q->r = *r;
	pthread_mutex_lock(&cc->lock);
	if (cc->nqueued >= cc->max_queued) {
		pthread_mutex_unlock(&cc->lock);
		free(q);
		snprintf(out->why, sizeof(out->why), "%d requests wait for the CA already "
			 "(the limit)", cc->max_queued);
		return out->rc = -EAGAIN;
	}
	EVP_PKEY_up_ref(q->r.key);	/* the worker's, whatever certmgr does */
	*cc->qtail = q;
	cc->qtail = &q->next;
	cc->nqueued++;
	atomic_fetch_add(&cc->inflight, 1);
	pthread_cond_signal(&cc->cond);
	pthread_mutex_unlock(&cc->lock);
	return -EINPROGRESS;
}

static int cc_poll(struct cert_signer *s, struct sign_res *out)
{
	struct ca_client *cc = (struct ca_client *)s;
	struct ca_ans *a;
	uint64_t v;

	pthread_mutex_lock(&cc->lock);
	a = cc->a;
	if (a) {
		cc->a = a->next;
		if (!cc->a)
			cc->atail = &cc->a;
	} else if (read(cc->evfd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing was signalled */
	}
	pthread_mutex_unlock(&cc->lock);
	if (!a)
		return 0;
	*out = a->res;
	free(a);
	atomic_fetch_sub(&cc->inflight, 1);
	return 1;
}

static int cc_fd(struct cert_signer *s)
{
	return ((struct ca_client *)s)->evfd;
}

static int cc_inflight(struct cert_signer *s)
{
	return atomic_load(&((struct ca_client *)s)->inflight);
}

static void cc_free(struct cert_signer *s)
{
	struct ca_client *cc = (struct ca_client *)s;

	if (cc->started) {
		pthread_mutex_lock(&cc->lock);
		cc->stop = 1;
		pthread_cond_signal(&cc->cond);
		pthread_mutex_unlock(&cc->lock);
		pthread_join(cc->worker, NULL);
	}
	while (cc->q) {
		struct ca_req *q = cc->q;

		cc->q = q->next;
		EVP_PKEY_free(q->r.key);
		free(q);
	}
	while (cc->a) {
		struct ca_ans *a = cc->a;

		cc->a = a->next;
		sign_res_clear(&a->res);
		free(a);
	}
	if (cc->tr)
		cc->tr->free(cc->tr);
	if (cc->evfd >= 0)
		close(cc->evfd);
	X509_STORE_free(cc->store);
	pthread_mutex_destroy(&cc->lock);
	pthread_cond_destroy(&cc->cond);
	free(cc->root_file);
	free(cc->token_file);
	free(cc);
}

static const struct cert_signer_ops cc_ops = {
	.kind = "remote CA",
	.refresh = cc_refresh,
	.store = cc_store,
	.sign = cc_sign,
	.poll = cc_poll,
	.fd = cc_fd,
	.inflight = cc_inflight,
	.free = cc_free,
};

int ca_client_new_with(const struct ca_client_opts *o, struct ca_transport *tr,
		       struct cert_signer **out, char *err, size_t errlen)
{
	struct ca_client *cc = calloc(1, sizeof(*cc));
	sigset_t all, old;
	int rc;

	*out = NULL;
	if (!cc) {
		tr->free(tr);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	cc->s.ops = &cc_ops;
	cc->tr = tr;
	cc->evfd = -1;
	cc->q = NULL;
	cc->qtail = &cc->q;
	cc->atail = &cc->a;
	pthread_mutex_init(&cc->lock, NULL);
	pthread_cond_init(&cc->cond, NULL);
	cc->max_inflight = o->max_inflight > 0 ? o->max_inflight : 16;
	cc->max_queued = o->max_queued > 0 ? o->max_queued : 4096;
	cc->root_file = strdup(o->root_file ? o->root_file : "");
	cc->token_file = strdup(o->token_file ? o->token_file : "");
	cc->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!cc->root_file || !cc->token_file || cc->evfd < 0) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	if (!o->root_file || !o->token_file) {
		snprintf(err, errlen, "a remote CA needs a trust bundle (--ca-root) and a "
			 "token (--ca-token)");
		rc = -EINVAL;
		goto fail;
	}
	/* both files must be there at the start: a typo fails now, not at
	 * the first pod */
	rc = cc_refresh(&cc->s, err, errlen);
	if (rc < 0)
		goto fail;
	{
		char *t = token_read(cc->token_file, err, errlen);

		if (!t) {
			rc = -EINVAL;
			goto fail;
		}
		OPENSSL_cleanse(t, strlen(t));
		free(t);
	}
	/* signals are meshd's main loop's business */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = -pthread_create(&cc->worker, NULL, worker_main, cc);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		snprintf(err, errlen, "cannot start the CA client's thread: %s", strerror(-rc));
		goto fail;
	}
	pthread_setname_np(cc->worker, "meshd-ca");
	cc->started = 1;
	*out = &cc->s;
	return 0;
fail:
	cc_free(&cc->s);
	return rc;
}

int ca_client_new(const struct ca_client_opts *o, struct cert_signer **out,
		  char *err, size_t errlen)
{
	struct grpc_conn *g = calloc(1, sizeof(*g));
	int rc;

	*out = NULL;
	if (!g) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	g->tr.call = grpc_call;
	g->tr.free = grpc_free;
	g->fd = -1;
	g->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
	rc = o->addr ? split_addr(o->addr, g) : -EINVAL;
	if (rc) {
		snprintf(err, errlen, "CA address \"%s\": give HOST:PORT or [IPV6]:PORT",
			 o->addr ? o->addr : "");
		grpc_free(&g->tr);
		return rc == -ENOMEM ? rc : -EINVAL;
	}
	g->server_name = strdup(o->server_name ? o->server_name : g->host);
	g->root_file = strdup(o->root_file ? o->root_file : "");
	g->cluster_id = o->cluster_id && o->cluster_id[0] ? strdup(o->cluster_id) : NULL;
	if (g->server_name && asprintf(&g->authority, "%s:%s", g->server_name, g->port) < 0)
		g->authority = NULL;
	if (!g->server_name || !g->root_file || !g->authority ||
	    (o->cluster_id && o->cluster_id[0] && !g->cluster_id)) {
		snprintf(err, errlen, "out of memory");
		grpc_free(&g->tr);
		return -ENOMEM;
	}
	return ca_client_new_with(o, &g->tr, out, err, errlen);
}
