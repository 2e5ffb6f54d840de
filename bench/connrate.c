// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * connrate - TCP connect() rate, for bench/policy-scale and bench/tunnel.
 *
 *   connrate serve   --port P [--cpu N] [--timeout S] [--exchange B]
 *   connrate connect --to IP:PORT [--seconds S] [--warmup W] [--cpu N]
 *                    [--fin] [--check-peer] [--exchange B]
 *   connrate hold    --to IP:PORT --count N [--exchange B] [--timeout S]
 *
 * serve: listens on 0.0.0.0:P (backlog 4096) and accepts and closes
 * connections in a loop, nothing else; prints {"listening":P} once ready.
 * Exits on SIGTERM/SIGINT or after --timeout seconds (default 900).
 * With --exchange B it reads B bytes of each connection, writes them
 * back, and closes once the client closed (so the client always closes
 * first and no TIME_WAIT is left on the server's side).
 *
 * connect: for SECONDS (default 3) after a warm-up of W (default 0.3)
 * seconds, loops socket(), blocking connect() to IP:PORT, close(), as fast
 * as one thread can. By default the socket is closed with SO_LINGER {1, 0}
 * (an RST): a connect/close loop that closes with a FIN leaves a
 * TIME_WAIT socket per connection and runs out of ephemeral ports within
 * seconds. --fin closes normally instead (use a short run). --check-peer
 * calls getpeername() on each socket and fails unless the peer is IP:PORT
 * (a load balancer that rewrites connect() must hand the VIP back).
 * --exchange B (the server must use the same B) makes each connection
 * carry a small request and answer before it is closed: the client writes
 * B bytes and reads them back. Through a proxy or tunnel, connect()
 * returns once the local end accepted; only the answer shows that the
 * whole path was set up.
 * Prints one JSON line:
 *   {"connects":N,"seconds":T,"rate":R,"errors":E,"first_error":"..",
 *    "p50_us":..,"p99_us":..,"exchange":B}
 * where rate = connects / seconds over the measured part, and the
 * percentiles are of the connect() call alone (with --exchange: of the
 * connect() and the exchange). Exit 1 when any connect() or exchange
 * failed (the figure would not be a connect rate).
 *
 * hold: opens N connections to IP:PORT one after the other, each
 * carrying B bytes (default 1) echoed back (so a tunnel really set the
 * stream up), keeps them all open, prints {"open":N,"seconds":T} and
 * waits until its standard input ends (or SIGTERM/SIGINT, or --timeout
 * seconds); then closes them all (RST) and exits 0. The first failure
 * prints {"open":K,"error":"..."} and exits 1 (everything opened is
 * closed). Raises its open-files limit to what N needs.
 *
 * Both sides pin themselves to --cpu when given. Errors go to stderr.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* connect() latency histogram: 0.1 us buckets up to 10 ms. */
#define HIST_BUCKETS	100000
#define HIST_NS		100
#define EXCHANGE_MAX	65536
#define EXCHANGE_TIMEOUT_S 5	/* a stalled exchange is an error, not a hang */

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		perror("connrate: sched_setaffinity");
		exit(1);
	}
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char buf[64];
	char *colon;
	long port;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	colon = strrchr(buf, ':');
	if (!colon)
		return -1;
	*colon = 0;
	port = strtol(colon + 1, NULL, 10);
	if (port < 1 || port > 65535)
		return -1;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, buf, &sa->sin_addr) == 1 ? 0 : -1;
}

/* Reads or writes exactly @len bytes (@wr: write). Returns 0, or an
 * errno (EPIPE for EOF before the end). */
static int xfer_full(int fd, char *buf, size_t len, int wr)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = wr ? write(fd, buf + done, len - done) : read(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		if (n == 0)
			return EPIPE;
		done += (size_t)n;
	}
	return 0;
}

static void set_io_timeout(int fd)
{
	struct timeval tv = { .tv_sec = EXCHANGE_TIMEOUT_S };
	int one = 1;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* One request of @len bytes (its first byte @tag) written on @fd and read
 * back, compared. 0, or an errno (EBADMSG: the answer differs). */
static int echo_once(int fd, char *out, char *in, size_t len, char tag)
{
	int e;

	set_io_timeout(fd);
	out[0] = tag;	/* not the same bytes every time */
	e = xfer_full(fd, out, len, 1);
	if (!e)
		e = xfer_full(fd, in, len, 0);
	if (!e && memcmp(in, out, len))
		e = EBADMSG;
	return e;
}

/* serve --exchange: many connections at once (a tunnel tears one down
 * while the client already opens the next), each echoing @len bytes and
 * closed once the client closed. One poll() loop: per connection, the
 * bytes read so far, then the bytes written, then waiting for EOF. */
#define MAX_CONNS 4096

struct xconn {
	int fd;
	size_t got, sent;
	char buf[EXCHANGE_MAX];
};

static int serve_exchange(int lfd, size_t len)
{
	static struct pollfd pfd[MAX_CONNS + 1];
	static struct xconn *xc[MAX_CONNS + 1];
	unsigned long accepted = 0;
	int n = 1;

	pfd[0].fd = lfd;
	pfd[0].events = POLLIN;
	while (!stop) {
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("connrate serve: poll");
			return 1;
		}
		if ((pfd[0].revents & POLLIN) && n <= MAX_CONNS) {
			int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			struct xconn *x = c >= 0 ? calloc(1, sizeof(*x)) : NULL;

			if (x) {
				int one = 1;

				setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				x->fd = c;
				xc[n] = x;
				pfd[n].fd = c;
				pfd[n].events = POLLIN;
				pfd[n].revents = 0;
				n++;
				accepted++;
			} else if (c >= 0) {
				close(c);
			}
		}
		for (int i = 1; i < n; i++) {
			struct xconn *x = xc[i];
			ssize_t k;
			int done = 0;

			if (!pfd[i].revents)
				continue;
			if (x->got < len) {
				k = read(x->fd, x->buf + x->got, len - x->got);
				if (k > 0)
					x->got += (size_t)k;
				else if (k == 0 || errno != EAGAIN)
					done = 1;
			} else if (x->sent < len) {
				k = write(x->fd, x->buf + x->sent, len - x->sent);
				if (k > 0)
					x->sent += (size_t)k;
				else if (errno != EAGAIN)
					done = 1;
			} else {
				char sink[4096];

				k = read(x->fd, sink, sizeof(sink));
				if (k == 0 || (k < 0 && errno != EAGAIN))
					done = 1;
			}
			if (x->got == len && x->sent < len && !done) {
				k = write(x->fd, x->buf + x->sent, len - x->sent);
				if (k > 0)
					x->sent += (size_t)k;
			}
			pfd[i].events = x->got == len && x->sent < len ? POLLOUT : POLLIN;
			if (done) {
				close(x->fd);
				free(x);
				n--;
				xc[i] = xc[n];
				pfd[i] = pfd[n];
				i--;
			}
		}
	}
	fprintf(stderr, "connrate serve: %lu connections accepted\n", accepted);
	return 0;
}

static int serve(int port, int timeout, size_t exchange)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	unsigned long accepted = 0;
	int one = 1, fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4096)) {
		perror("connrate serve: listen");
		return 1;
	}
	alarm(timeout);
	printf("{\"listening\":%d}\n", port);
	fflush(stdout);
	if (exchange)
		return serve_exchange(fd, exchange);
	while (!stop) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("connrate serve: accept");
			return 1;
		}
		close(c);
		accepted++;
	}
	fprintf(stderr, "connrate serve: %lu connections accepted\n", accepted);
	return 0;
}

static double percentile(const uint32_t *hist, uint64_t n, double q)
{
	uint64_t want = (uint64_t)(q * (double)n), seen = 0;

	for (int i = 0; i < HIST_BUCKETS; i++) {
		seen += hist[i];
		if (seen > want)
			return (i + 0.5) * HIST_NS / 1e3;
	}
	return HIST_BUCKETS * HIST_NS / 1e3;
}

static int run_connect(const struct sockaddr_in *dst, double seconds, double warmup,
		       int fin, int check_peer, size_t exchange)
{
	static char out[EXCHANGE_MAX], in[EXCHANGE_MAX];
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	static uint32_t hist[HIST_BUCKETS];
	uint64_t n = 0, errors = 0, consecutive = 0;
	int first_errno = 0;
	const char *first_what = "";	/* "exchange: " when the echo failed */
	double t_start, t_end, t_mark;
	int measuring = warmup <= 0;

	t_start = now_s();
	t_mark = t_start;
	t_end = t_start + warmup + seconds;
	alarm((unsigned)(warmup + seconds) + 30);
	for (;;) {
		uint64_t t0, t1;
		int fd, rc;

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			perror("connrate: socket");
			return 1;
		}
		t0 = now_ns();
		rc = connect(fd, (const struct sockaddr *)dst, sizeof(*dst));
		if (!rc && exchange) {
			int e = echo_once(fd, out, in, exchange, (char)n);

			if (e) {
				if (!first_errno)
					first_what = "exchange: ";
				/* SO_RCVTIMEO expired: say so rather than EAGAIN */
				errno = e == EAGAIN || e == EWOULDBLOCK ? ETIMEDOUT : e;
				rc = -1;
			}
		}
		t1 = now_ns();
		if (rc) {
			if (!first_errno)
				first_errno = errno;
			if (measuring)
				errors++;
			if (++consecutive >= 1000) {
				fprintf(stderr, "connrate: 1000 connect() failures in a row (%s%s)\n",
					first_what, strerror(first_errno));
				close(fd);
				break;
			}
		} else {
			consecutive = 0;
			if (check_peer) {
				struct sockaddr_in peer;
				socklen_t len = sizeof(peer);

				if (getpeername(fd, (struct sockaddr *)&peer, &len) ||
				    peer.sin_addr.s_addr != dst->sin_addr.s_addr ||
				    peer.sin_port != dst->sin_port) {
					fprintf(stderr, "connrate: getpeername() is not the "
						"address dialled\n");
					return 1;
				}
			}
			if (!fin)
				setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			if (measuring) {
				uint64_t b = (t1 - t0) / HIST_NS;

				hist[b < HIST_BUCKETS ? b : HIST_BUCKETS - 1]++;
				n++;
			}
		}
		close(fd);
		/* the clock is read once per connect anyway: check the end
		 * with the connect's own timestamp */
		if (!measuring && t1 / 1e9 >= t_start + warmup) {
			measuring = 1;
			t_mark = t1 / 1e9;
		}
		if (t1 / 1e9 >= t_end || stop)
			break;
	}
	{
		double elapsed = now_s() - t_mark;

		printf("{\"connects\":%llu,\"seconds\":%.4f,\"rate\":%.1f,\"errors\":%llu,"
		       "\"first_error\":\"%s%s\",\"p50_us\":%.1f,\"p99_us\":%.1f,"
		       "\"exchange\":%zu}\n",
		       (unsigned long long)n, elapsed, n / elapsed, (unsigned long long)errors,
		       first_what, first_errno ? strerror(first_errno) : "", percentile(hist, n, 0.5),
		       percentile(hist, n, 0.99), exchange);
	}
	return errors || consecutive ? 1 : 0;
}

/* hold: see the header. */
static int run_hold(const struct sockaddr_in *dst, long count, size_t exchange, int timeout)
{
	static char out[EXCHANGE_MAX], in[EXCHANGE_MAX];
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct rlimit rl;
	int *fds = calloc((size_t)count, sizeof(*fds));
	const char *what = "";
	double t0 = now_s();
	long n = 0, good = 0;	/* sockets made; streams set up */
	int e = 0, rc = 1;

	if (!fds) {
		fprintf(stderr, "connrate hold: out of memory\n");
		return 1;
	}
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < (rlim_t)count + 64) {
		rl.rlim_cur = (rlim_t)count + 64 > rl.rlim_max ? rl.rlim_max : (rlim_t)count + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	alarm((unsigned)timeout);
	for (; n < count && !stop; n++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0) {
			e = errno;
			what = "socket: ";
			break;
		}
		fds[n] = fd;
		if (connect(fd, (const struct sockaddr *)dst, sizeof(*dst))) {
			e = errno;
			what = "connect: ";
			n++;
			break;
		}
		e = echo_once(fd, out, in, exchange, (char)n);
		if (e) {
			what = "exchange: ";
			n++;
			break;
		}
		good++;
	}
	if (e || n < count) {
		printf("{\"open\":%ld,\"error\":\"%s%s\"}\n", good, what,
		       e ? strerror(e) : "interrupted");
	} else {
		char sink[64];

		printf("{\"open\":%ld,\"seconds\":%.4f}\n", n, now_s() - t0);
		fflush(stdout);
		while (!stop && read(STDIN_FILENO, sink, sizeof(sink)) > 0)
			;
		rc = 0;
	}
	fflush(stdout);
	for (long i = 0; i < n; i++) {
		setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fds[i]);
	}
	free(fds);
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: connrate serve --port P [--cpu N] [--timeout S] [--exchange B]\n"
		"       connrate connect --to IP:PORT [--seconds S] [--warmup W] [--cpu N]\n"
		"                        [--fin] [--check-peer] [--exchange B]\n"
		"       connrate hold --to IP:PORT --count N [--exchange B] [--timeout S]\n");
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "to", required_argument, NULL, 't' },
		{ "seconds", required_argument, NULL, 's' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "fin", no_argument, NULL, 'f' },
		{ "check-peer", no_argument, NULL, 'k' },
		{ "exchange", required_argument, NULL, 'x' },
		{ "count", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct sockaddr_in dst = {};
	double seconds = 3, warmup = 0.3;
	int port = 0, cpu = -1, timeout = 900, fin = 0, check_peer = 0, have_dst = 0, c;
	long exchange = 0, count = 0;
	const char *mode;
	struct sigaction sa = { .sa_handler = on_signal };

	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	mode = argv[1];
	if (!strcmp(mode, "-h") || !strcmp(mode, "--help")) {
		usage(stdout);
		return 0;
	}
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 'p': port = atoi(optarg); break;
		case 't':
			if (parse_addr(optarg, &dst)) {
				fprintf(stderr, "connrate: bad address %s (want IP:PORT)\n", optarg);
				return 2;
			}
			have_dst = 1;
			break;
		case 's': seconds = atof(optarg); break;
		case 'w': warmup = atof(optarg); break;
		case 'c': cpu = atoi(optarg); break;
		case 'T': timeout = atoi(optarg); break;
		case 'f': fin = 1; break;
		case 'k': check_peer = 1; break;
		case 'x':
			exchange = atol(optarg);
			if (exchange < 1 || exchange > EXCHANGE_MAX) {
				fprintf(stderr, "connrate: --exchange 1-%d\n", EXCHANGE_MAX);
				return 2;
			}
			break;
		case 'n': count = atol(optarg); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	pin(cpu);
	if (!strcmp(mode, "serve")) {
		if (port < 1 || port > 65535) {
			fprintf(stderr, "connrate serve: --port 1-65535 is required\n");
			return 2;
		}
		return serve(port, timeout, (size_t)exchange);
	}
	if (!strcmp(mode, "connect")) {
		if (!have_dst || seconds <= 0) {
			fprintf(stderr, "connrate connect: --to IP:PORT is required\n");
			return 2;
		}
		return run_connect(&dst, seconds, warmup, fin, check_peer, (size_t)exchange);
	}
	if (!strcmp(mode, "hold")) {
		if (!have_dst || count < 1 || count > 1000000) {
			fprintf(stderr, "connrate hold: --to IP:PORT and --count 1-1000000 are required\n");
			return 2;
		}
		return run_hold(&dst, count, exchange ? (size_t)exchange : 1, timeout);
	}
	usage(stderr);
	return 2;
}
