// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The HBONE engine over memory (hbone_mem_server) with a host of
 * in-memory callbacks, its requests made by a real nghttp2 client
 * session: a CONNECT to the listener's pod is served, one to another pod
 * is answered 400, one the host denies 401; what the engine held comes
 * back to zero. And the token bucket of the lines a peer can provoke.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include <nghttp2/nghttp2.h>

#include "hbone.h"
#include "log.h"
#include "unit.h"

static struct tun_pod pod;
static int upstreams[8], nupstreams;

static int h_watch(struct tunnel *t, int fd, struct tun_obj *o, uint32_t events)
{
	(void)t; (void)fd;
	o->watched = events;
	o->in_epoll = 1;
	return 0;
}

static void h_unwatch(struct tunnel *t, int fd, struct tun_obj *o)
{
	(void)t; (void)fd;
	o->in_epoll = 0;
}

static int h_connect(struct tunnel *t, int netns_fd, uint32_t ip, uint16_t port, int mark,
		     uint32_t from)
{
	int sv[2];

	(void)t; (void)netns_fd; (void)ip; (void)port; (void)mark; (void)from;
	if (nupstreams >= 8 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv))
		return -EMFILE;
	upstreams[nupstreams++] = sv[1];
	return sv[0];
}

static struct tun_pod *h_pod_find(struct tunnel *t, uint32_t ip)
{
	(void)t;
	return ip == pod.ip ? &pod : NULL;
}

/* port 7001 is denied */
static int h_authorize(struct tunnel *t, const char *peer_id, uint32_t src_ip,
		       uint32_t dst_ip, uint16_t dst_port, struct tun_target *out,
		       char *why, size_t whylen)
{
	(void)t; (void)peer_id; (void)src_ip; (void)dst_ip; (void)out;
	snprintf(why, whylen, dst_port == 7001 ? "denied" : "allowed");
	return dst_port == 7001 ? 401 : 200;
}

static const struct hbone_host host = {
	.watch = h_watch, .unwatch = h_unwatch, .connect = h_connect,
	.pod_find = h_pod_find, .authorize = h_authorize,
};

static struct tunnel *tun_new(void)
{
	struct tunnel *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->o.node = "node-a";
	tunnel_limits_defaults(&t->o.lim);
	t->lim_conn = (struct log_limit)LOG_LIMIT_INIT(1, 1);
	t->lim_req = (struct log_limit)LOG_LIMIT_INIT(1, 1);
	snprintf(t->td, sizeof(t->td), "cluster.local");
	t->stats = t->stats_local;
	t->bytes_fd = t->stats_fd = t->epfd = -1;
	assert_int_equal(hbone_init(t, &host), 0);
	inet_pton(AF_INET, "10.0.0.1", &pod.ip);
	snprintf(pod.ns, sizeof(pod.ns), "a");
	snprintf(pod.sa, sizeof(pod.sa), "srv");
	pod.netns_fd = open("/dev/null", O_RDONLY);
	assert_true(pod.netns_fd >= 0);
	return t;
}

static void tun_free(struct tunnel *t)
{
	hbone_fini(t);
	for (int i = 0; i < nupstreams; i++)
		close(upstreams[i]);
	nupstreams = 0;
	close(pod.netns_fd);
	free(t);
}

/* What a client sends: the preface, SETTINGS and a CONNECT to each of
 * AUTHORITIES. */
static size_t client_bytes(const char *const *authorities, int n, uint8_t *out, size_t cap)
{
	nghttp2_session_callbacks *cb;
	nghttp2_session *c;
	const uint8_t *d;
	size_t len = 0;
	ssize_t k;

	assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
	assert_int_equal(nghttp2_session_client_new(&c, cb, NULL), 0);
	assert_int_equal(nghttp2_submit_settings(c, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	for (int i = 0; i < n; i++) {
		nghttp2_nv nv[] = {
			{ (uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7, 0 },
			{ (uint8_t *)":authority", (uint8_t *)authorities[i], 10,
			  strlen(authorities[i]), 0 },
		};

		assert_true(nghttp2_submit_request(c, NULL, nv, 2, NULL, NULL) > 0);
	}
	while ((k = nghttp2_session_mem_send(c, &d)) > 0) {
		assert_true(len + (size_t)k <= cap);
		memcpy(out + len, d, k);
		len += k;
	}
	nghttp2_session_del(c);
	nghttp2_session_callbacks_del(cb);
	return len;
}

static void test_hbone_mem_connect(void **state)
{
	static const char *const auth[] = { "10.0.0.1:7000", "10.0.0.9:7000", "10.0.0.1:7001" };
	struct tunnel *t = tun_new();
	uint8_t buf[4096];
	size_t n = client_bytes(auth, 3, buf, sizeof(buf));
	struct hb_conn *hc;
	uint32_t peer;

	(void)state;
	inet_pton(AF_INET, "10.0.1.5", &peer);
	hc = hbone_mem_server(t, &pod, "spiffe://cluster.local/ns/b/sa/cli", peer, 40000);
	assert_non_null(hc);
	assert_int_equal(hbone_mem_recv(hc, buf, n), 0);
	/* the listener's pod: upstream dialled; another pod: 400; denied: 401 */
	assert_int_equal(nupstreams, 1);
	assert_int_equal(t->stats[SKM_TUN_IN_BAD_REQUEST], 1);
	assert_int_equal(t->stats[SKM_TUN_IN_DENIED], 1);
	assert_int_equal(t->stats[SKM_TUN_STREAMS_OPEN], 1);
	/* garbage after it: the connection is closed, nothing held */
	assert_int_equal(hbone_mem_recv(hc, (const uint8_t *)"\0\0\x04\x09\0\0\0\0\x07zzzz", 13),
			 -1);
	hbone_reap(t);
	assert_int_equal(t->stats[SKM_TUN_STREAMS_OPEN], 0);
	assert_int_equal(t->stats[SKM_TUN_CONNS_OPEN], 0);
	assert_int_equal(t->buffered, 0);
	tun_free(t);
}

static void test_log_limit(void **state)
{
	struct log_limit l = LOG_LIMIT_INIT(3, 1);

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_true(log_limit_pass(&l));
	assert_false(log_limit_pass(&l));
	assert_false(log_limit_pass(&l));
	assert_int_equal(l.suppressed, 2);
	log_limit_report(&l, LOG_DEBUG, "tests");
	assert_int_equal(l.suppressed, 0);
	/* a second later, one more may pass */
	l.last -= 1.1;
	assert_true(log_limit_pass(&l));
	assert_false(log_limit_pass(&l));
}

int run_hbone_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hbone_mem_connect),
		cmocka_unit_test(test_log_limit),
	};

	return cmocka_run_group_tests_name("hbone", tests, NULL, NULL);
}
