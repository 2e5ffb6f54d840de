// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skmesh-ca: the mesh's certificate authority in cluster mode, Istio's
 * IstioCertificateService over gRPC + HTTP/2 + TLS (docs/architecture.md
 * says why it is a process of its own: the root key lives here only).
 *
 * One thread accepts; each connection gets a thread of its own (at most
 * --max-conns, more are closed at once and counted) doing blocking TLS
 * with timeouts: --handshake-timeout for the handshake, --idle-timeout
 * between reads after it. Metrics in Prometheus text on --metrics.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <microhttpd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "auth.h"
#include "certs.h"
#include "conn.h"
#include "kube.h"
#include "log.h"
#include "metrics.h"
#include "service.h"

struct opts {
	const char *listen, *metrics;
	const char *tls_cert, *tls_key;
	const char *ca_cert, *ca_key, *ca_chain;
	const char *td, *kubeconfig, *audience, *node_agents;
	long max_ttl_s;
	unsigned int max_conns, handshake_s, idle_s, review_cache_s, pod_cache_ms;
	size_t max_msg, max_buffered;
	int allow_own, verbose;
};

static struct opts o = {
	.listen = "0.0.0.0:15012", .metrics = "0.0.0.0:15014",
	.audience = "istio-ca", .node_agents = "skmesh-system/meshd",
	.max_ttl_s = 24 * 3600, .max_conns = 1024, .handshake_s = 10, .idle_s = 60,
	.review_cache_s = 30, .pod_cache_ms = 1000,
	.max_msg = GRPC_MAX_MSG, .max_buffered = 64U << 20,
};

static struct ca_service svc;
static struct ca_auth *auth;
static SSL_CTX *tls;
static struct ca_conn_host host;
static _Atomic size_t budget;
static _Atomic unsigned int active;
static _Atomic uint64_t accepted, refused_limit, handshake_failed, conn_errors;
static volatile sig_atomic_t stop;

static void usage(FILE *f)
{
	fprintf(f,
"usage: skmesh-ca --tls-cert FILE --tls-key FILE --ca-cert FILE --ca-key FILE [options]\n"
"Istio's certificate service (istio.v1.auth.IstioCertificateService) for skmesh.\n"
"  --listen ADDR:PORT       gRPC over TLS (default 0.0.0.0:15012)\n"
"  --metrics ADDR:PORT      Prometheus /metrics over HTTP (default 0.0.0.0:15014)\n"
"  --tls-cert, --tls-key    the serving certificate and key (PEM)\n"
"  --ca-cert, --ca-key      the signing CA certificate and key (PEM)\n"
"  --ca-chain FILE          the signer's issuers up to the root (PEM), optional\n"
"  --trust-domain TD        (default: the CA's spiffe:// SAN, else cluster.local)\n"
"  --kubeconfig FILE        the API server (default: in-cluster config)\n"
"  --audience AUD           tokens' audience (default istio-ca)\n"
"  --node-agents NS/SA,...  trusted node agents (default skmesh-system/meshd)\n"
"  --allow-own-identity     callers that are no node agent get their own identity\n"
"  --max-cert-ttl DUR       cap on lifetimes: N, Ns, Nm, Nh (default 24h)\n"
"  --max-conns N            connections at once (default 1024)\n"
"  --max-msg BYTES          a request's size (default 4194304)\n"
"  --max-buffered BYTES     request bytes held, all connections (default 64 MiB)\n"
"  --handshake-timeout S    (default 10)  --idle-timeout S (default 60)\n"
"  --review-cache S         seconds a positive TokenReview is kept (default 30, 0: off)\n"
"  --pod-cache-ms MS        a node's pod list is kept (default 1000, 0: off)\n"
"  -v                       more logging\n");
}

static int parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno || end == s || *end || *s == '-' || *out > max ? -1 : 0;
}

static int parse_dur(const char *s, long *out)
{
	unsigned long v, mul = 1;
	char buf[32];
	size_t n = strlen(s);

	if (!n || n >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	switch (buf[n - 1]) {
	case 'h': mul = 3600; buf[n - 1] = 0; break;
	case 'm': mul = 60; buf[n - 1] = 0; break;
	case 's': buf[n - 1] = 0; break;
	}
	if (parse_ulong(buf, 10UL * 365 * 86400, &v) || !v)
		return -1;
	*out = (long)(v * mul);
	return 0;
}

/* ADDR:PORT (IPv4, IPv6 in brackets, or a name) to a listening socket. */
static int listen_on(const char *spec, int backlog)
{
	char host_[256], *port;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
	int fd = -1, one = 1;

	if (strlen(spec) >= sizeof(host_))
		return -1;
	strcpy(host_, spec);
	port = strrchr(host_, ':');
	if (!port)
		return -1;
	*port++ = 0;
	if (host_[0] == '[' && port[-2] == ']') {
		port[-2] = 0;
		memmove(host_, host_ + 1, strlen(host_));
	}
	if (getaddrinfo(host_[0] ? host_ : NULL, port, &hints, &ai))
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
			bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, backlog))) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, (const unsigned char *)"\x02h2",
				  3, in, inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;	/* gRPC is h2 only */
	return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *tls_new(void)
{
	SSL_CTX *c = SSL_CTX_new(TLS_server_method());

	if (!c)
		return NULL;
	SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
	/* forward-secret AEAD suites only in TLS 1.2 (1.3's are all such) */
	if (!SSL_CTX_set_cipher_list(c, "ECDHE+AESGCM:ECDHE+CHACHA20") ||
	    SSL_CTX_use_certificate_chain_file(c, o.tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(c, o.tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(c) != 1) {
		SSL_CTX_free(c);
		return NULL;
	}
	SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_alpn_select_cb(c, alpn_select, NULL);
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(c, 0);
	return c;
}

static void set_timeout(int fd, unsigned int s)
{
	struct timeval tv = { .tv_sec = s };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Writes what the session has to say; -1 when the peer is gone. */
static int flush(SSL *ssl, struct ca_conn *c)
{
	const uint8_t *out;
	ssize_t n;

	while ((n = ca_conn_send(c, &out)) > 0)
		if (SSL_write(ssl, out, (int)n) != (int)n)
			return -1;
	return n < 0 ? -1 : 0;
}

static void *conn_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint8_t buf[16384];
	struct ca_conn *c = NULL;
	SSL *ssl = SSL_new(tls);
	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;
	int n;

	set_timeout(fd, o.handshake_s);
	if (!ssl || !SSL_set_fd(ssl, fd) || SSL_accept(ssl) != 1) {
		handshake_failed++;
		goto out;
	}
	SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
	if (alpn_len != 2 || memcmp(alpn, "h2", 2)) {
		handshake_failed++;
		goto out;
	}
	set_timeout(fd, o.idle_s);
	c = ca_conn_new(&host);
	if (!c) {
		conn_errors++;
		goto out;
	}
	while (!stop) {
		if (flush(ssl, c))
			break;
		if (!ca_conn_alive(c))
			break;
		n = SSL_read(ssl, buf, sizeof(buf));
		if (n <= 0)
			break;
		if (ca_conn_recv(c, buf, (size_t)n)) {
			flush(ssl, c);
			break;
		}
	}
	if (stop) {
		ca_conn_shutdown(c);
		flush(ssl, c);
	}
	SSL_shutdown(ssl);
out:
	ERR_clear_error();
	ca_conn_free(c);
	SSL_free(ssl);
	close(fd);
	active--;
	return NULL;
}

/* --- metrics ----------------------------------------------------------- */

static void render(struct sbuf *b)
{
	struct ca_auth_stats as = { 0 };
	int i;

	if (auth)
		ca_auth_stats(auth, &as);
	sbuf_printf(b, "# HELP skmesh_ca_requests_total CreateCertificate calls by gRPC status.\n"
		       "# TYPE skmesh_ca_requests_total counter\n");
	for (i = 0; i < GRPC_STATUS_COUNT; i++)
		sbuf_printf(b, "skmesh_ca_requests_total{code=\"%s\"} %llu\n", grpc_status_name(i),
			    (unsigned long long)svc.by_status[i]);
	sbuf_printf(b, "# HELP skmesh_ca_refusals_total Calls refused, by reason.\n"
		       "# TYPE skmesh_ca_refusals_total counter\n");
	for (i = 0; i < CA_REF_COUNT; i++)
		sbuf_printf(b, "skmesh_ca_refusals_total{reason=\"%s\"} %llu\n",
			    ca_refusal_name(i), (unsigned long long)svc.refusals[i]);
	sbuf_printf(b,
		"# HELP skmesh_ca_certs_issued_total Certificates signed.\n"
		"# TYPE skmesh_ca_certs_issued_total counter\n"
		"skmesh_ca_certs_issued_total %llu\n"
		"# HELP skmesh_ca_lifetime_capped_total Requests whose validity_duration was cut to --max-cert-ttl.\n"
		"# TYPE skmesh_ca_lifetime_capped_total counter\n"
		"skmesh_ca_lifetime_capped_total %llu\n"
		"# HELP skmesh_ca_call_seconds_total Time spent serving calls (checks and signing).\n"
		"# TYPE skmesh_ca_call_seconds_total counter\n"
		"skmesh_ca_call_seconds_total %.6f\n"
		"# HELP skmesh_ca_connections Connections open now.\n"
		"# TYPE skmesh_ca_connections gauge\n"
		"skmesh_ca_connections %u\n"
		"# HELP skmesh_ca_connections_total Connections accepted, refused at --max-conns, failed in the TLS handshake.\n"
		"# TYPE skmesh_ca_connections_total counter\n"
		"skmesh_ca_connections_total{result=\"accepted\"} %llu\n"
		"skmesh_ca_connections_total{result=\"refused_limit\"} %llu\n"
		"skmesh_ca_connections_total{result=\"handshake_failed\"} %llu\n"
		"skmesh_ca_connections_total{result=\"error\"} %llu\n"
		"# HELP skmesh_ca_buffered_bytes Request bytes held now, all connections.\n"
		"# TYPE skmesh_ca_buffered_bytes gauge\n"
		"skmesh_ca_buffered_bytes %zu\n"
		"# HELP skmesh_ca_tokenreviews_total TokenReviews sent to the API server, and their failures.\n"
		"# TYPE skmesh_ca_tokenreviews_total counter\n"
		"skmesh_ca_tokenreviews_total{result=\"sent\"} %llu\n"
		"skmesh_ca_tokenreviews_total{result=\"error\"} %llu\n"
		"skmesh_ca_tokenreviews_total{result=\"cached\"} %llu\n"
		"# HELP skmesh_ca_pod_lists_total Lists of a node's pods, and their failures.\n"
		"# TYPE skmesh_ca_pod_lists_total counter\n"
		"skmesh_ca_pod_lists_total{result=\"sent\"} %llu\n"
		"skmesh_ca_pod_lists_total{result=\"error\"} %llu\n"
		"skmesh_ca_pod_lists_total{result=\"cached\"} %llu\n",
		(unsigned long long)svc.issued, (unsigned long long)svc.capped,
		svc.sign_us / 1e6, (unsigned int)active,
		(unsigned long long)accepted, (unsigned long long)refused_limit,
		(unsigned long long)handshake_failed, (unsigned long long)conn_errors,
		o.max_buffered - budget,
		(unsigned long long)as.reviews, (unsigned long long)as.review_errors,
		(unsigned long long)as.review_cache_hits, (unsigned long long)as.pod_lists,
		(unsigned long long)as.pod_list_errors, (unsigned long long)as.pod_cache_hits);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **ctx)
{
	struct MHD_Response *resp;
	struct sbuf b = { 0 };
	enum MHD_Result ret;
	int code = 200;

	(void)cls; (void)version; (void)upload; (void)upload_len; (void)ctx;
	if (strcmp(method, "GET")) {
		code = 405;
		sbuf_printf(&b, "GET only\n");
	} else if (!strcmp(url, "/metrics")) {
		render(&b);
	} else if (!strcmp(url, "/healthz/ready")) {
		sbuf_printf(&b, "ok\n");
	} else {
		code = 404;
		sbuf_printf(&b, "/metrics or /healthz/ready\n");
	}
	if (b.oom) {
		sbuf_free(&b);
		return MHD_NO;
	}
	resp = MHD_create_response_from_buffer(b.len, b.p, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		sbuf_free(&b);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4");
	ret = MHD_queue_response(c, code, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* --- main -------------------------------------------------------------- */

static int split_agents(const char *list, char ***out)
{
	char *copy = strdup(list), *tok, *save = NULL;
	char **v = NULL;
	int n = 0;

	if (!copy)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char **nv = realloc(v, (n + 1) * sizeof(*v));
		char *slash = strchr(tok, '/');

		if (!nv || !slash || slash == tok || !slash[1] || strchr(slash + 1, '/')) {
			free(nv ? nv : v);
			free(copy);
			return -1;
		}
		v = nv;
		v[n++] = tok;
	}
	*out = v;
	return n;	/* the strings live in COPY, kept for the process */
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	enum { O_LISTEN = 256, O_METRICS, O_TLS_CERT, O_TLS_KEY, O_CA_CERT, O_CA_KEY,
	       O_CA_CHAIN, O_TD, O_KUBECONFIG, O_AUD, O_AGENTS, O_OWN, O_TTL, O_CONNS,
	       O_MSG, O_BUF, O_HS, O_IDLE, O_RCACHE, O_PCACHE };
	static const struct option lopts[] = {
		{ "listen", 1, 0, O_LISTEN }, { "metrics", 1, 0, O_METRICS },
		{ "tls-cert", 1, 0, O_TLS_CERT }, { "tls-key", 1, 0, O_TLS_KEY },
		{ "ca-cert", 1, 0, O_CA_CERT }, { "ca-key", 1, 0, O_CA_KEY },
		{ "ca-chain", 1, 0, O_CA_CHAIN }, { "trust-domain", 1, 0, O_TD },
		{ "kubeconfig", 1, 0, O_KUBECONFIG }, { "audience", 1, 0, O_AUD },
		{ "node-agents", 1, 0, O_AGENTS }, { "allow-own-identity", 0, 0, O_OWN },
		{ "max-cert-ttl", 1, 0, O_TTL }, { "max-conns", 1, 0, O_CONNS },
		{ "max-msg", 1, 0, O_MSG }, { "max-buffered", 1, 0, O_BUF },
		{ "handshake-timeout", 1, 0, O_HS }, { "idle-timeout", 1, 0, O_IDLE },
		{ "review-cache", 1, 0, O_RCACHE }, { "pod-cache-ms", 1, 0, O_PCACHE },
		{ "help", 0, 0, 'h' }, { 0 },
	};
	struct ca_service_opts so = { 0 };
	struct ca_auth_opts ao = { 0 };
	struct kube_client *kube = NULL;
	struct MHD_Daemon *mhd = NULL;
	struct rlimit no_core = { 0, 0 };
	struct mesh_ca *ca = NULL;
	sigset_t stop_sigs, wait_mask;
	pthread_attr_t attr;
	char err[512], td[256];
	unsigned long v;
	int c, lfd, mfd, rc = 1;

	/* the root key is in this process: no core file, no ptrace by
	 * others of our uid, no /proc/PID/mem for them */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	setrlimit(RLIMIT_CORE, &no_core);
	/* SIGTERM and SIGINT are for the accepting thread alone (ppoll
	 * below): every thread made from here on has them blocked */
	sigemptyset(&stop_sigs);
	sigaddset(&stop_sigs, SIGTERM);
	sigaddset(&stop_sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_sigs, &wait_mask);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);

	while ((c = getopt_long(argc, argv, "vh", lopts, NULL)) != -1) {
		int bad = 0;

		switch (c) {
		case O_LISTEN: o.listen = optarg; break;
		case O_METRICS: o.metrics = optarg; break;
		case O_TLS_CERT: o.tls_cert = optarg; break;
		case O_TLS_KEY: o.tls_key = optarg; break;
		case O_CA_CERT: o.ca_cert = optarg; break;
		case O_CA_KEY: o.ca_key = optarg; break;
		case O_CA_CHAIN: o.ca_chain = optarg; break;
		case O_TD: o.td = optarg; break;
		case O_KUBECONFIG: o.kubeconfig = optarg; break;
		case O_AUD: o.audience = optarg; bad = !optarg[0]; break;
		case O_AGENTS: o.node_agents = optarg; break;
		case O_OWN: o.allow_own = 1; break;
		case O_TTL: bad = parse_dur(optarg, &o.max_ttl_s); break;
		case O_CONNS: bad = parse_ulong(optarg, 65536, &v) || !v; o.max_conns = v; break;
		case O_MSG: bad = parse_ulong(optarg, 64U << 20, &v) || v < 1024; o.max_msg = v;
			break;
		case O_BUF: bad = parse_ulong(optarg, 1UL << 34, &v) || v < o.max_msg;
			o.max_buffered = v; break;
		case O_HS: bad = parse_ulong(optarg, 300, &v) || !v; o.handshake_s = v; break;
		case O_IDLE: bad = parse_ulong(optarg, 86400, &v) || !v; o.idle_s = v; break;
		case O_RCACHE: bad = parse_ulong(optarg, 3600, &v); o.review_cache_s = v; break;
		case O_PCACHE: bad = parse_ulong(optarg, 60000, &v); o.pod_cache_ms = v; break;
		case 'v': o.verbose++; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (bad) {
			fprintf(stderr, "skmesh-ca: --%s %s: not a valid value (see --help)\n",
				lopts[c - O_LISTEN].name, optarg);
			return 2;
		}
	}
	log_init("skmesh-ca", o.verbose ? LOG_DEBUG : LOG_INFO);
	if (optind != argc || !o.tls_cert || !o.tls_key || !o.ca_cert || !o.ca_key) {
		fprintf(stderr, "skmesh-ca: --tls-cert, --tls-key, --ca-cert and --ca-key are "
				"required\n");
		usage(stderr);
		return 2;
	}
	so.n_node_agents = split_agents(o.node_agents, &so.node_agents);
	if (so.n_node_agents <= 0) {
		fprintf(stderr, "skmesh-ca: --node-agents %s: give NAMESPACE/SERVICEACCOUNT[,...]\n",
			o.node_agents);
		return 2;
	}
	if (mesh_ca_load_files(o.ca_cert, o.ca_key, o.ca_chain, &ca, err, sizeof(err))) {
		fprintf(stderr, "skmesh-ca: the signing CA: %s\n", err);
		return 1;
	}
	if (!o.td)
		o.td = mesh_ca_trust_domain(ca, td, sizeof(td)) ? "cluster.local" : td;
	else if (!mesh_ca_trust_domain(ca, td, sizeof(td)) && strcmp(td, o.td)) {
		fprintf(stderr, "skmesh-ca: the CA is for trust domain %s (its URI SAN), not %s\n",
			td, o.td);
		goto out;
	}
	if (spiffe_id(err, sizeof(err), o.td, "a", "b")) {
		fprintf(stderr, "skmesh-ca: --trust-domain %s is not a valid trust domain\n", o.td);
		goto out;
	}
	tls = tls_new();
	if (!tls) {
		fprintf(stderr, "skmesh-ca: the serving certificate %s / key %s do not load\n",
			o.tls_cert, o.tls_key);
		goto out;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	kube = o.kubeconfig ? kube_client_kubeconfig(o.kubeconfig, err, sizeof(err)) :
			      kube_client_incluster(NULL, err, sizeof(err));
	if (!kube) {
		fprintf(stderr, "skmesh-ca: the API server: %s\n", err);
		goto out;
	}
	ao.kube = kube;
	ao.audience = o.audience;
	ao.review_cache_s = o.review_cache_s;
	ao.pod_cache_ms = o.pod_cache_ms;
	auth = ca_auth_new(&ao);
	so.ca = ca;
	so.authz = ca_authz_kube;
	so.authz.arg = auth;
	so.td = o.td;
	so.max_ttl_s = o.max_ttl_s;
	so.allow_own = o.allow_own;
	if (!auth || ca_service_init(&svc, &so)) {
		fprintf(stderr, "skmesh-ca: out of memory\n");
		goto out;
	}
	budget = o.max_buffered;
	host = (struct ca_conn_host){ .call = ca_service_call, .refused = ca_service_refused,
				      .arg = &svc, .max_msg = o.max_msg, .budget = &budget };

	lfd = listen_on(o.listen, 1024);
	if (lfd >= 0)
		fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
	if (lfd < 0) {
		fprintf(stderr, "skmesh-ca: --listen %s: cannot listen there: %s\n", o.listen,
			strerror(errno));
		goto out;
	}
	mfd = listen_on(o.metrics, 64);
	if (mfd >= 0)
		mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handle,
				       NULL, MHD_OPTION_LISTEN_SOCKET, mfd,
				       MHD_OPTION_CONNECTION_LIMIT, (unsigned int)32,
				       MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
				       MHD_OPTION_END);
	if (!mhd) {
		fprintf(stderr, "skmesh-ca: --metrics %s: cannot serve there\n", o.metrics);
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	{
		struct sigaction sa = { .sa_handler = on_signal };

		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256U << 10);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pr_info("serving %s on %s for trust domain %s, node agents %s, audience %s, "
		"max lifetime %ld s; metrics on %s\n", GRPC_CA_SERVICE, o.listen, o.td,
		o.node_agents, o.audience, o.max_ttl_s, o.metrics);
	while (!stop) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };
		pthread_t t;
		int fd, one = 1;

		/* the stop signals are let in only while waiting here */
		if (ppoll(&pfd, 1, NULL, &wait_mask) < 0)
			continue;	/* EINTR: a signal */
		/* the listener is non-blocking, what it accepts is not (Linux
		 * does not pass O_NONBLOCK on): blocking I/O with timeouts */
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;	/* a peer gone already */
		if (active >= o.max_conns) {
			refused_limit++;
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		active++;
		accepted++;
		if (pthread_create(&t, &attr, conn_main, (void *)(intptr_t)fd)) {
			active--;
			conn_errors++;
			close(fd);
		}
	}
	pr_info("stopping\n");
	close(lfd);
	/* connections say GOAWAY and end; wait a little for them */
	for (int i = 0; i < 50 && active; i++)
		usleep(100000);
	rc = 0;
out:
	if (mhd)
		MHD_stop_daemon(mhd);
	/* the connection threads still running use these: at exit only */
	if (!active) {
		ca_service_fini(&svc);
		ca_auth_free(auth);
		kube_client_free(kube);
		SSL_CTX_free(tls);
		mesh_ca_free(ca);	/* OpenSSL wipes the key as it frees it */
	}
	return rc;
}
