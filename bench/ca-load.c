// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * ca-load: CreateCertificate calls against skmesh-ca as fast as it answers,
 * for bench/ca. --conns connections (a thread each, TLS + ALPN h2 on
 * nghttp2), each keeping --streams calls in flight for --seconds; every
 * call is the same IstioCertificateRequest (--csr, --identity as
 * ImpersonatedIdentity) with the same bearer token (--token), so the CA
 * verifies and signs each one anew. Prints one line:
 *   ok N failed N seconds S
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ca.pb-c.h"
#include "grpc.h"

static struct sockaddr_in addr;
static SSL_CTX *ctx;
static uint8_t *body;
static size_t body_len;
static char auth[GRPC_MAX_TOKEN + 16];
static unsigned int streams = 16;
static double deadline;
static _Atomic uint64_t n_ok, n_failed;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct call {
	size_t off;
	struct grpc_resp resp;
};

struct lconn {
	nghttp2_session *h2;
	unsigned int inflight;
	int stop;
};

static ssize_t read_body(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct call *c = src->ptr;

	(void)h2; (void)sid; (void)arg;
	if (len > body_len - c->off)
		len = body_len - c->off;
	memcpy(buf, body + c->off, len);
	c->off += len;
	if (c->off == body_len)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)len;
}

static nghttp2_nv nv(const char *n, const char *v)
{
	nghttp2_nv x = { (uint8_t *)n, (uint8_t *)v, strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE };
	return x;
}

static int submit(struct lconn *lc)
{
	nghttp2_nv hdrs[] = {
		nv(":method", "POST"), nv(":scheme", "https"), nv(":path", GRPC_CA_PATH),
		nv(":authority", "skmesh-ca"), nv("content-type", GRPC_CONTENT_TYPE),
		nv("te", "trailers"), nv("authorization", auth),
	};
	struct call *c = calloc(1, sizeof(*c));
	nghttp2_data_provider dp = { .source.ptr = c, .read_callback = read_body };

	if (!c)
		return -1;
	grpc_resp_init(&c->resp, GRPC_MAX_MSG);
	if (nghttp2_submit_request(lc->h2, NULL, hdrs, sizeof(hdrs) / sizeof(hdrs[0]), &dp, c) < 0) {
		free(c);
		return -1;
	}
	lc->inflight++;
	return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
		     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *arg)
{
	struct call *c = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);

	(void)flags; (void)arg;
	if (c)
		grpc_resp_header(&c->resp, name, nlen, value, vlen);
	return 0;
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t sid, const uint8_t *data,
		   size_t len, void *arg)
{
	struct call *c = nghttp2_session_get_stream_user_data(h2, sid);

	(void)flags; (void)arg;
	if (c)
		grpc_msg_feed(&c->resp.msg, data, len);
	return 0;
}

static int on_close(nghttp2_session *h2, int32_t sid, uint32_t code, void *arg)
{
	struct lconn *lc = arg;
	struct call *c = nghttp2_session_get_stream_user_data(h2, sid);
	char msg[128];

	if (!c)
		return 0;
	if (!code && grpc_resp_status(&c->resp, msg, sizeof(msg)) == GRPC_OK)
		n_ok++;
	else
		n_failed++;
	grpc_resp_free(&c->resp);
	free(c);
	lc->inflight--;
	if (!lc->stop && now() < deadline)
		submit(lc);
	return 0;
}

static void *conn_main(void *arg)
{
	nghttp2_session_callbacks *cb;
	struct lconn lc = { 0 };
	uint8_t buf[16384];
	const uint8_t *out;
	SSL *ssl = NULL;
	ssize_t n;
	int fd, one = 1;

	(void)arg;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		fprintf(stderr, "ca-load: connect: %s\n", strerror(errno));
		n_failed++;
		goto out;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1) {
		fprintf(stderr, "ca-load: TLS handshake failed\n");
		n_failed++;
		goto out;
	}
	nghttp2_session_callbacks_new(&cb);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
	nghttp2_session_client_new(&lc.h2, cb, &lc);
	nghttp2_session_callbacks_del(cb);
	nghttp2_submit_settings(lc.h2, NGHTTP2_FLAG_NONE, NULL, 0);
	for (unsigned int i = 0; i < streams; i++)
		submit(&lc);
	for (;;) {
		while ((n = nghttp2_session_mem_send(lc.h2, &out)) > 0)
			if (SSL_write(ssl, out, (int)n) != (int)n)
				goto done;
		if (!lc.inflight)
			break;
		lc.stop = now() >= deadline;
		n = SSL_read(ssl, buf, sizeof(buf));
		if (n <= 0 || nghttp2_session_mem_recv(lc.h2, buf, (size_t)n) < 0)
			break;
	}
done:
	n_failed += lc.inflight;
	nghttp2_session_del(lc.h2);
out:
	SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		fprintf(stderr, "ca-load: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	buf = calloc(1, (size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		exit(2);
	fclose(f);
	return buf;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "port", 1, 0, 'p' }, { "token", 1, 0, 't' }, { "csr", 1, 0, 'c' },
		{ "identity", 1, 0, 'i' }, { "conns", 1, 0, 'n' }, { "streams", 1, 0, 's' },
		{ "seconds", 1, 0, 'd' }, { "cafile", 1, 0, 'a' }, { 0 },
	};
	Istio__V1__Auth__IstioCertificateRequest req = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	Google__Protobuf__Struct md = GOOGLE__PROTOBUF__STRUCT__INIT;
	Google__Protobuf__Struct__FieldsEntry fe = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
	Google__Protobuf__Struct__FieldsEntry *fields[1] = { &fe };
	Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
	const char *token = NULL, *csr = NULL, *id = NULL, *cafile = NULL;
	unsigned int conns = 4, seconds = 5, port = 0;
	pthread_t *th;
	double t0;
	char *tok;
	size_t n;
	int c;

	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'p': port = atoi(optarg); break;
		case 't': token = optarg; break;
		case 'c': csr = optarg; break;
		case 'i': id = optarg; break;
		case 'n': conns = atoi(optarg); break;
		case 's': streams = atoi(optarg); break;
		case 'd': seconds = atoi(optarg); break;
		case 'a': cafile = optarg; break;
		default: return 2;
		}
	}
	if (!port || !token || !csr || !id || !cafile || !conns || !streams || !seconds) {
		fprintf(stderr, "usage: ca-load --port P --token FILE --csr FILE --identity ID "
				"--cafile FILE [--conns N] [--streams N] [--seconds N]\n");
		return 2;
	}
	tok = slurp(token);
	tok[strcspn(tok, "\r\n")] = 0;
	snprintf(auth, sizeof(auth), "Bearer %s", tok);
	v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
	v.string_value = (char *)id;
	fe.key = "ImpersonatedIdentity";
	fe.value = &v;
	md.n_fields = 1;
	md.fields = fields;
	req.csr = slurp(csr);
	req.validity_duration = 3600;
	req.metadata = &md;
	n = istio__v1__auth__istio_certificate_request__get_packed_size(&req);
	body = malloc(n + GRPC_FRAME_HDR);
	grpc_frame_hdr(body, n);
	istio__v1__auth__istio_certificate_request__pack(&req, body + GRPC_FRAME_HDR);
	body_len = n + GRPC_FRAME_HDR;

	ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
		fprintf(stderr, "ca-load: %s: no certificate\n", cafile);
		return 2;
	}
	addr.sin_family = AF_INET;
	addr.sin_port = htons(port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	th = calloc(conns, sizeof(*th));
	t0 = now();
	deadline = t0 + seconds;
	for (unsigned int i = 0; i < conns; i++)
		pthread_create(&th[i], NULL, conn_main, NULL);
	for (unsigned int i = 0; i < conns; i++)
		pthread_join(th[i], NULL);
	printf("ok %llu failed %llu seconds %.3f\n", (unsigned long long)n_ok,
	       (unsigned long long)n_failed, now() - t0);
	return 0;
}
