/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The tunnel's insides, shared by tunnel.c (thread, listeners, pool keys,
 * policy) and hbone.c (the HBONE engine: TLS connections carrying HTTP/2
 * CONNECT streams, each relayed to a TCP socket with flow control and
 * half-close).
 *
 * HTTP/2 settings as ztunnel's but for the connection window, which is
 * --tunnel-conn-buffer (4 MiB; ztunnel's is 16 MiB): 4 MiB stream window,
 * 1 MiB frames, at most 100 streams on a connection; PING every 10 s, a
 * connection without an answer for 20 s is closed; a pooled connection
 * idle for 5 minutes is closed.
 */
#ifndef SKM_HBONE_H
#define SKM_HBONE_H

#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "certs.h"
#include "log.h"
#include "origsrc.h"
#include "skmesh.h"
#include "tunnel.h"

#define HB_STREAM_WINDOW	(4U << 20)
#define HB_MAX_STREAMS		100
#define HB_MAX_FRAME		(1U << 20)	/* SETTINGS_MAX_FRAME_SIZE */
#define HB_PING_EVERY_S		10
#define HB_PING_TIMEOUT_S	20
#define HB_IDLE_S		300
#define HB_TCP_BUF		(256U << 10)	/* TCP -> tunnel, per stream */
#define HB_TLS_WBUF		(256U << 10)	/* queued TLS plaintext */

enum tun_obj_kind {
	TUN_OBJ_EVENTFD = 1,
	TUN_OBJ_TIMER,
	TUN_OBJ_OUT_LISTENER,
	TUN_OBJ_HBONE_LISTENER,
	TUN_OBJ_CONN,		/* struct hb_conn: TLS + HTTP/2 */
	TUN_OBJ_STREAM,		/* struct hb_stream: its TCP side */
	TUN_OBJ_CERTS,		/* the signer's answers wait */
};

/* What epoll's data.ptr points at: first member of every watched thing. */
struct tun_obj {
	enum tun_obj_kind kind;
	uint32_t watched;	/* epoll events asked for */
	int in_epoll;
	int dead;		/* closed; freed by hbone_reap() */
};

struct tun_pod;

struct tun_listener {
	struct tun_obj o;
	int fd;
	struct tun_pod *pod;
};

/* A local pod with its two listeners. */
struct tun_pod {
	struct tun_listener out;	/* <ip>:15001 */
	struct tun_listener hbone;	/* <ip>:15008 */
	int netns_fd;
	struct origsrc origsrc;		/* the client's address upstream */
	uint32_t ip;
	int seen, gone;
	char netns[PATH_MAX];
	char ns[64], sa[64], name[64];
	struct tun_pod *next;
};

/* The destination of an authorised CONNECT. */
struct tun_target {
	char netns[PATH_MAX];
	char ns[64], name[64], sa[64];
};

struct hb_conn;
struct hb_stream;
struct certmgr;
struct peer_count;
struct tunnel;

/*
 * What the HBONE engine needs of its host, handed to hbone_init() as
 * nghttp2 takes its session callbacks: the engine never calls into the
 * tunnel thread's code, so its HTTP/2 session and stream logic runs over
 * memory too (tests/fuzz/fuzz_hbone.c). tunnel.c is the real host.
 */
struct hbone_host {
	/* Epoll interest EVENTS (0: none, still registered) of FD for O:
	 * 0, or -errno. */
	int (*watch)(struct tunnel *t, int fd, struct tun_obj *o, uint32_t events);
	void (*unwatch)(struct tunnel *t, int fd, struct tun_obj *o);
	/* A non-blocking connect to IP:PORT from the network namespace
	 * NETNS_FD (-1: meshd's), its socket marked MARK and, when FROM is
	 * not 0, bound to that address: the fd, or -errno. */
	int (*connect)(struct tunnel *t, int netns_fd, uint32_t ip, uint16_t port, int mark,
		       uint32_t from);
	/* The local pod with address IP (network order) that has listeners. */
	struct tun_pod *(*pod_find)(struct tunnel *t, uint32_t ip);
	/* HTTP status ztunnel would answer a CONNECT from PEER_ID (source
	 * SRC_IP) to DST_IP:DST_PORT: 200 (TARGET filled), 400, 401, 503;
	 * WHY says why in words. */
	int (*authorize)(struct tunnel *t, const char *peer_id, uint32_t src_ip,
			 uint32_t dst_ip, uint16_t dst_port, struct tun_target *target,
			 char *why, size_t whylen);
};

struct tunnel {
	struct tunnel_opts o;
	const struct hbone_host *host;	/* hbone_init() */
	char td[128];
	pthread_t thread;
	pthread_mutex_t lock;
	struct cfgref *pub;	/* handed over by tunnel_update() */
	struct tunnel_cert *certs_pub;	/* published by the thread, under lock */
	size_t ncerts_pub;
	struct certmgr_stats cert_stats_pub;	/* likewise */
	struct cfgref *cur;	/* the thread's own */
	_Atomic uint64_t applied;	/* cur->seq once its listeners are open */
	atomic_int stop_req;
	int started;		/* the thread runs (tunnel_start) */
	int draining;
	int alog_pending;		/* access-log lines not yet flushed */
	time_t drain_until;

	int epfd, evfd, tfd, self_netns, outbound_fd, stats_fd;
	int bytes_fd;			/* skm_tun_bytes, -1 without it */
	struct tun_obj ev_obj, timer_obj, certs_obj;
	struct tun_pod *pods;
	struct certmgr *certs;
	time_t cert_next;

	struct hb_conn *conns;		/* every TLS connection */
	struct hb_conn *dead_conns;
	struct hb_stream *dead_streams;
	unsigned char *rbuf;		/* TLS read buffer */

	/* Lines a peer can provoke, each at most a few a second: about
	 * connections (handshakes, limits) and about requests. */
	struct log_limit lim_conn, lim_req;

	/* Bounds on peers (tunnel_opts.lim): what is held now. */
	int in_conns;			/* inbound TLS connections */
	int hs_inflight;		/* inbound handshakes in progress */
	long buffered;			/* bytes queued by every connection */
	int paused;			/* some reads wait for buffers to drain */
	int trimmed;			/* no stream since the heap was trimmed */
	struct peer_count *peers[256];	/* inbound connections by peer address */
	/* Handshakes started by peer address, a second (handshake_rate):
	 * a slot by hash, taken over by another address when it comes. A
	 * connection's end does not reset it, unlike peers. */
	struct hs_rate {
		uint32_t ip;
		struct log_limit lim;
	} hs_rate[256];

	/* Counters: the pinned skm_tun_stats array itself, mmap'ed, so a
	 * count is a memory write and readers always see the latest; a
	 * private copy when it cannot be had. */
	uint64_t *stats;
	uint64_t stats_local[SKM_TUN_STAT__MAX];
	size_t stats_len;	/* of the mapping, 0: stats_local */
};

/* Counts D in the tunnel's counter S (a memory write: see stats). */
static inline void tun_stat(struct tunnel *t, enum skm_tun_stat s, int64_t d)
{
	t->stats[s] += (uint64_t)d;
}

/* tunnel.c: the host's side (see struct hbone_host) */
int tun_watch(struct tunnel *t, int fd, struct tun_obj *o, uint32_t events);
void tun_unwatch(struct tunnel *t, int fd, struct tun_obj *o);
int tun_connect(struct tunnel *t, int netns_fd, uint32_t ip, uint16_t port, int mark,
		uint32_t from);
struct tun_pod *tun_pod_find(struct tunnel *t, uint32_t ip);
int tun_authorize(struct tunnel *t, const char *peer_id, uint32_t src_ip,
		  uint32_t dst_ip, uint16_t dst_port, struct tun_target *target,
		  char *why, size_t whylen);
void tunnel_free_fds(struct tunnel *t);

/* hbone.c */
struct cfg_workload;
/* Sets the engine up in T with HOST (kept: it must outlive T). */
int hbone_init(struct tunnel *t, const struct hbone_host *host);
void hbone_fini(struct tunnel *t);
/* A captured connection FD from POD (PEER is its address) to carry to
 * DST; V is what the kernel kept of it. Takes FD. */
void hbone_outbound(struct tunnel *t, struct tun_pod *pod, int fd,
		    const struct sockaddr_in *peer, const struct skm_outbound_val *v,
		    const struct cfg_workload *dst);
/* An HBONE connection accepted on POD's 15008. Takes FD. */
void hbone_inbound(struct tunnel *t, struct tun_pod *pod, int fd,
		   const struct sockaddr_in *peer);
void hbone_event(struct tunnel *t, struct tun_obj *o, uint32_t events);
/* Closes the served streams the current config's policy denies. */
void hbone_reauthorize(struct tunnel *t);
void hbone_tick(struct tunnel *t, time_t now);
void hbone_drain(struct tunnel *t);
void hbone_close_all(struct tunnel *t);
void hbone_reap(struct tunnel *t);
/* Reads that waited for buffers to drain go on where they can now. */
void hbone_resume(struct tunnel *t);

/* A server connection to POD over memory, its TLS taken as done with a
 * peer proven to be PEER_ID at PEER_IP:PEER_PORT: what the peer sends
 * goes in with hbone_mem_recv(), what the engine answers is dropped. For
 * tests and fuzzing; NULL without memory. */
struct hb_conn *hbone_mem_server(struct tunnel *t, struct tun_pod *pod, const char *peer_id,
				 uint32_t peer_ip, uint16_t peer_port);
/* Hands HC LEN bytes from its peer (the plaintext of its TLS records):
 * 0, or -1 once the connection is closed (it is freed by hbone_reap()). */
int hbone_mem_recv(struct hb_conn *hc, const uint8_t *data, size_t len);

#endif /* SKM_HBONE_H */
