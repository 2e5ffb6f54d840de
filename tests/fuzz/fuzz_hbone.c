// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The HBONE server fed raw bytes: what would come out of the TLS layer
 * of an inbound connection (a client preface, SETTINGS, HEADERS CONNECT,
 * DATA, RST_STREAM, anything) goes to the engine's HTTP/2 session and
 * stream logic over memory (hbone_mem_server), with an in-memory host:
 * no epoll, no network namespaces. A CONNECT the host authorizes gets an
 * upstream that is one end of a socket pair, so streams are answered 200
 * and carry data both ways; the other end has a few bytes waiting.
 *
 * Seeds: tests/fuzz/corpus/hbone/, made by tests/fuzz/gen_hbone_corpus.py.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hbone.h"
#include "log.h"

#define FZ_TD		"cluster.local"
#define FZ_POD_IP	"10.0.0.1"
#define FZ_MAX_WATCH	256
#define FZ_MAX_PEERS	256

/* What the engine asked the host to watch: streams get their events
 * from the loop below. */
static struct {
	struct tun_obj *o;
	int fd;
} watched[FZ_MAX_WATCH];
static int peer_ends[FZ_MAX_PEERS], npeer_ends;

static int fz_watch(struct tunnel *t, int fd, struct tun_obj *o, uint32_t events)
{
	int free_slot = -1;

	(void)t;
	o->watched = events;
	o->in_epoll = 1;
	for (int i = 0; i < FZ_MAX_WATCH; i++) {
		if (watched[i].o == o) {
			watched[i].fd = fd;
			return 0;
		}
		if (!watched[i].o && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0)
		return -ENOSPC;
	watched[free_slot].o = o;
	watched[free_slot].fd = fd;
	return 0;
}

static void fz_unwatch(struct tunnel *t, int fd, struct tun_obj *o)
{
	(void)t; (void)fd;
	for (int i = 0; i < FZ_MAX_WATCH; i++)
		if (watched[i].o == o)
			watched[i].o = NULL;
	o->in_epoll = 0;
	o->watched = 0;
}

/* The upstream: one end of a socket pair, the other holding a greeting
 * to read. Port 1 is refused, as a closed port would be. */
static int fz_connect(struct tunnel *t, int netns_fd, uint32_t ip, uint16_t port, int mark,
		      uint32_t from)
{
	int sv[2];

	(void)t; (void)netns_fd; (void)ip; (void)mark; (void)from;
	if (port == 1 || npeer_ends >= FZ_MAX_PEERS)
		return -ECONNREFUSED;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
		return -errno;
	if (write(sv[1], "hello from upstream\n", 20) < 0) {
		close(sv[0]);
		close(sv[1]);
		return -EIO;
	}
	peer_ends[npeer_ends++] = sv[1];
	return sv[0];
}

static struct tun_pod pod;

static struct tun_pod *fz_pod_find(struct tunnel *t, uint32_t ip)
{
	(void)t;
	return ip == pod.ip ? &pod : NULL;
}

/* Policy by port: odd ports are denied, port 2 is not served. */
static int fz_authorize(struct tunnel *t, const char *peer_id, uint32_t src_ip,
			uint32_t dst_ip, uint16_t dst_port, struct tun_target *out,
			char *why, size_t whylen)
{
	(void)t; (void)peer_id; (void)src_ip; (void)dst_ip;
	if (dst_port == 2) {
		snprintf(why, whylen, "no such workload");
		return 503;
	}
	if (dst_port % 2 && dst_port != 1) {
		snprintf(why, whylen, "denied");
		return 401;
	}
	snprintf(out->netns, sizeof(out->netns), "/dev/null");
	snprintf(out->ns, sizeof(out->ns), "fz");
	snprintf(out->name, sizeof(out->name), "srv");
	snprintf(out->sa, sizeof(out->sa), "srv");
	return 200;
}

static const struct hbone_host fz_host = {
	.watch = fz_watch,
	.unwatch = fz_unwatch,
	.connect = fz_connect,
	.pod_find = fz_pod_find,
	.authorize = fz_authorize,
};

static struct tunnel *tun;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc; (void)argv;
	log_init("fuzz_hbone", LOG_WARN);
	tun = calloc(1, sizeof(*tun));
	if (!tun)
		abort();
	tun->o.node = "node-fuzz";
	tunnel_limits_defaults(&tun->o.lim);
	tun->lim_conn = (struct log_limit)LOG_LIMIT_INIT(1, 1);
	tun->lim_req = (struct log_limit)LOG_LIMIT_INIT(1, 1);
	snprintf(tun->td, sizeof(tun->td), "%s", FZ_TD);
	tun->stats = tun->stats_local;
	tun->epfd = tun->evfd = tun->tfd = tun->self_netns = tun->outbound_fd = -1;
	tun->stats_fd = tun->bytes_fd = -1;
	if (hbone_init(tun, &fz_host))
		abort();
	inet_pton(AF_INET, FZ_POD_IP, &pod.ip);
	snprintf(pod.ns, sizeof(pod.ns), "fz");
	snprintf(pod.sa, sizeof(pod.sa), "srv");
	snprintf(pod.name, sizeof(pod.name), "srv");
	pod.netns_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pod.out.fd = pod.hbone.fd = -1;
	if (pod.netns_fd < 0)
		abort();
	return 0;
}

/* Gives every watched stream the events it waits for, a few rounds.
 * Nothing is freed before the input's end (hbone_reap): the connection
 * stays valid for the next piece. */
static void run_events(void)
{
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < FZ_MAX_WATCH; i++) {
			struct tun_obj *o = watched[i].o;
			uint32_t ev;

			if (!o || o->dead || o->kind != TUN_OBJ_STREAM)
				continue;
			ev = o->watched & (EPOLLIN | EPOLLOUT);
			if (ev)
				hbone_event(tun, o, ev);
		}
		hbone_resume(tun);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hb_conn *hc;
	uint32_t peer_ip = htonl(0x0a000202);
	size_t half = size / 2;

	hc = hbone_mem_server(tun, &pod, "spiffe://" FZ_TD "/ns/fz/sa/client", peer_ip, 40000);
	if (!hc)
		return 0;
	/* in two pieces: frames cut anywhere must be taken as well */
	if (!hbone_mem_recv(hc, data, half)) {
		run_events();
		if (!hbone_mem_recv(hc, data + half, size - half))
			run_events();
	}
	hbone_close_all(tun);
	hbone_reap(tun);
	for (int i = 0; i < npeer_ends; i++)
		close(peer_ends[i]);
	npeer_ends = 0;
	memset(watched, 0, sizeof(watched));
	if (tun->buffered || tun->in_conns || tun->hs_inflight)
		abort();	/* the counts of what is held come back to zero */
	return 0;
}
