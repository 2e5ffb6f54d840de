// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * connrate - TCP connect() rate, for bench/policy-scale.
 *
 *   connrate serve   --port P [--cpu N] [--timeout S]
 *   connrate connect --to IP:PORT [--seconds S] [--warmup W] [--cpu N]
 *                    [--fin] [--check-peer]
 *
 * serve: listens on 0.0.0.0:P (backlog 4096) and accepts and closes
 * connections in a loop, nothing else; prints {"listening":P} once ready.
 * Exits on SIGTERM/SIGINT or after --timeout seconds (default 900).
 *
 * connect: for SECONDS (default 3) after a warm-up of W (default 0.3)
 * seconds, loops socket(), blocking connect() to IP:PORT, close(), as fast
 * as one thread can. By default the socket is closed with SO_LINGER {1, 0}
 * (an RST): a connect/close loop that closes with a FIN leaves a
 * TIME_WAIT socket per connection and runs out of ephemeral ports within
 * seconds. --fin closes normally instead (use a short run). --check-peer
 * calls getpeername() on each socket and fails unless the peer is IP:PORT
 * (a load balancer that rewrites connect() must hand the VIP back).
 * Prints one JSON line:
 *   {"connects":N,"seconds":T,"rate":R,"errors":E,"first_error":"..",
 *    "p50_us":..,"p99_us":..}
 * where rate = connects / seconds over the measured part, and the
 * percentiles are of the connect() call alone. Exit 1 when any connect()
 * failed (the figure would not be a connect rate).
 *
 * Both sides pin themselves to --cpu when given. Errors go to stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* connect() latency histogram: 0.1 us buckets up to 10 ms. */
#define HIST_BUCKETS	100000
#define HIST_NS		100

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

static int serve(int port, int timeout)
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
		       int fin, int check_peer)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	static uint32_t hist[HIST_BUCKETS];
	uint64_t n = 0, errors = 0, consecutive = 0;
	int first_errno = 0;
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
		t1 = now_ns();
		if (rc) {
			if (!first_errno)
				first_errno = errno;
			if (measuring)
				errors++;
			if (++consecutive >= 1000) {
				fprintf(stderr, "connrate: 1000 connect() failures in a row (%s)\n",
					strerror(first_errno));
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
		       "\"first_error\":\"%s\",\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
		       (unsigned long long)n, elapsed, n / elapsed, (unsigned long long)errors,
		       first_errno ? strerror(first_errno) : "", percentile(hist, n, 0.5),
		       percentile(hist, n, 0.99));
	}
	return errors || consecutive ? 1 : 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: connrate serve --port P [--cpu N] [--timeout S]\n"
		"       connrate connect --to IP:PORT [--seconds S] [--warmup W] [--cpu N]\n"
		"                        [--fin] [--check-peer]\n");
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
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	struct sockaddr_in dst = {};
	double seconds = 3, warmup = 0.3;
	int port = 0, cpu = -1, timeout = 900, fin = 0, check_peer = 0, have_dst = 0, c;
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
		return serve(port, timeout);
	}
	if (!strcmp(mode, "connect")) {
		if (!have_dst || seconds <= 0) {
			fprintf(stderr, "connrate connect: --to IP:PORT is required\n");
			return 2;
		}
		return run_connect(&dst, seconds, warmup, fin, check_peer);
	}
	usage(stderr);
	return 2;
}
