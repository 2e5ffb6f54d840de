// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockperf - a small TCP benchmark for the same-node bench (bench/same-node).
 *
 *   sockperf server   --port P [--cpu N] [--timeout S]
 *   sockperf pingpong --to IP:PORT [--size 64] [--seconds S] [--warmup W]
 *                     [--cpu N]
 *   sockperf stream   --to IP:PORT [--size 4096] [--seconds S] [--cpu N]
 *
 * One connection per client run. The client opens it with a 16-byte header
 * (magic, mode, message size) so one server serves both modes.
 *
 * pingpong: the client writes SIZE bytes, the server reads exactly SIZE and
 * writes them back, the client reads SIZE; every round trip is timed with
 * CLOCK_MONOTONIC. Rounds during the warm-up are not recorded. Prints
 *   {"mode":"pingpong","size":64,"rtts":N,"rtt_per_s":R,"p50_us":..,
 *    "p99_us":..,"mean_us":..,"eagain":..}
 *
 * stream: the client writes SIZE-byte buffers for SECONDS, then shuts down
 * its write side; the server reads and discards until EOF and answers with
 * the byte count it received, which must equal what was sent (exit 1 if
 * not). The time runs until that answer, so data still in flight counts.
 * Prints {"mode":"stream","size":..,"bytes":N,"seconds":..,"gbit_s":..,
 * "eagain":..}
 *
 * Every run is bounded in time: clients by alarm(), the server by --timeout
 * (default 900 s). Errors go to stderr, exit status is non-zero.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SP_MAGIC	0x534b5046u	/* "SKPF" */
#define SP_PINGPONG	1u
#define SP_STREAM	2u
#define SP_MAX_SIZE	(16u << 20)

/* EAGAIN from a blocking socket. Seen on sockets in a SOCKHASH (bare and
 * skmesh alike): the kernel's sockmap receive path (tcp_bpf_recvmsg) gives
 * it when its wait ends without data. A blocking caller just tries again;
 * counted and reported, since an application could trip over it. */
static unsigned long spurious_eagain;

/* First bytes of every connection, all fields in network order. */
struct sp_hdr {
	uint32_t magic;
	uint32_t mode;
	uint32_t size;
	uint32_t pad;
};

struct opts {
	const char *mode;
	struct sockaddr_in to;
	int have_to;
	int port;
	unsigned int size;
	double seconds;
	double warmup;
	int cpu;
	unsigned int timeout;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: sockperf server --port P [--cpu N] [--timeout S]\n"
		"       sockperf pingpong --to IP:PORT [--size 64] [--seconds S] [--warmup W] [--cpu N]\n"
		"       sockperf stream --to IP:PORT [--size 4096] [--seconds S] [--cpu N]\n");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pins the calling process to one CPU. Returns 0 or -errno. */
static int pin_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		return -errno;
	return 0;
}

/* Parses "a.b.c.d:port" into @sa. Returns 0 or -EINVAL. */
static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char buf[64];
	char *colon, *end;
	long port;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	colon = strrchr(buf, ':');
	if (!colon)
		return -EINVAL;
	*colon = '\0';
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (errno || *end || port <= 0 || port > 65535)
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, buf, &sa->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

/* Reads exactly @len bytes. Returns @len, 0 on EOF before any byte, or
 * -errno (-EPIPE for EOF in the middle). */
static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				spurious_eagain++;
				continue;
			}
			return -errno;
		}
		if (n == 0)
			return got ? -EPIPE : 0;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Writes all of @len bytes. Returns 0 or -errno. */
static int write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				spurious_eagain++;
				continue;
			}
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

static void set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Serves one connection: echo (pingpong) or count and answer (stream).
 * Returns 0 or -errno. */
static int serve_conn(int fd)
{
	struct sp_hdr hdr;
	uint32_t mode, size;
	uint64_t total = 0, be;
	ssize_t n;
	char *buf;
	int err = 0;

	n = read_full(fd, &hdr, sizeof(hdr));
	if (n <= 0)
		return n ? (int)n : -EPIPE;
	mode = ntohl(hdr.mode);
	size = ntohl(hdr.size);
	if (ntohl(hdr.magic) != SP_MAGIC || !size || size > SP_MAX_SIZE ||
	    (mode != SP_PINGPONG && mode != SP_STREAM)) {
		fprintf(stderr, "sockperf server: bad header\n");
		return -EPROTO;
	}
	buf = malloc(mode == SP_STREAM ? (1u << 20) : size);
	if (!buf)
		return -ENOMEM;

	if (mode == SP_PINGPONG) {
		set_nodelay(fd);
		for (;;) {
			n = read_full(fd, buf, size);
			if (n == 0)
				break;
			if (n < 0) {
				err = (int)n;
				break;
			}
			err = write_full(fd, buf, size);
			if (err)
				break;
		}
	} else {
		for (;;) {
			n = read(fd, buf, 1u << 20);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN) {
					spurious_eagain++;
					continue;
				}
				err = -errno;
				break;
			}
			if (n == 0)
				break;
			total += (uint64_t)n;
		}
		if (!err) {
			be = htobe64(total);
			err = write_full(fd, &be, sizeof(be));
		}
	}
	free(buf);
	if (spurious_eagain) {
		fprintf(stderr, "sockperf server: %lu spurious EAGAIN on a blocking socket (retried)\n",
			spurious_eagain);
		spurious_eagain = 0;
	}
	return err;
}

static int run_server(const struct opts *o)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int lfd, fd, one = 1, err;

	alarm(o->timeout);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		perror("sockperf server: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_port = htons((uint16_t)o->port);
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(lfd, 16) < 0) {
		perror("sockperf server: bind/listen");
		close(lfd);
		return 1;
	}
	/* Tell a waiting script the port is open. */
	printf("listening %d\n", o->port);
	fflush(stdout);
	for (;;) {
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("sockperf server: accept");
			close(lfd);
			return 1;
		}
		/* One connection at a time: the bench runs one client. */
		err = serve_conn(fd);
		if (err)
			fprintf(stderr, "sockperf server: connection: %s\n",
				strerror(-err));
		close(fd);
	}
}

/* Connects to @o->to and sends the header. Returns an fd or -1. */
static int client_connect(const struct opts *o, uint32_t mode)
{
	struct sp_hdr hdr = {
		.magic = htonl(SP_MAGIC),
		.mode = htonl(mode),
		.size = htonl(o->size),
	};
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("sockperf: socket");
		return -1;
	}
	set_nodelay(fd);
	if (connect(fd, (const struct sockaddr *)&o->to, sizeof(o->to)) < 0) {
		perror("sockperf: connect");
		close(fd);
		return -1;
	}
	if (write_full(fd, &hdr, sizeof(hdr))) {
		perror("sockperf: write header");
		close(fd);
		return -1;
	}
	return fd;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted @v[0..n-1], @p in (0,100]. */
static double percentile(const double *v, size_t n, double p)
{
	size_t rank = (size_t)ceil(p / 100.0 * (double)n);

	if (rank < 1)
		rank = 1;
	return v[rank - 1];
}

static int run_pingpong(const struct opts *o)
{
	double t0, t1, start, end, warm_end, sum = 0;
	double *rtt = NULL;
	size_t n = 0, cap = 0;
	ssize_t r;
	char *buf;
	int fd, ret = 1;

	buf = calloc(1, o->size);
	if (!buf)
		return 1;
	fd = client_connect(o, SP_PINGPONG);
	if (fd < 0)
		goto out_free;

	warm_end = now_s() + o->warmup;
	while (now_s() < warm_end) {
		if (write_full(fd, buf, o->size) ||
		    read_full(fd, buf, o->size) != (ssize_t)o->size) {
			perror("sockperf pingpong: warm-up");
			goto out_close;
		}
	}

	start = now_s();
	end = start + o->seconds;
	t0 = start;
	do {
		if (n == cap) {
			double *nr;

			cap = cap ? cap * 2 : 65536;
			nr = realloc(rtt, cap * sizeof(*rtt));
			if (!nr)
				goto out_close;
			rtt = nr;
		}
		if (write_full(fd, buf, o->size)) {
			perror("sockperf pingpong: write");
			goto out_close;
		}
		r = read_full(fd, buf, o->size);
		if (r != (ssize_t)o->size) {
			fprintf(stderr, "sockperf pingpong: short echo (%zd)\n", r);
			goto out_close;
		}
		t1 = now_s();
		rtt[n++] = (t1 - t0) * 1e6;
		sum += (t1 - t0) * 1e6;
		t0 = t1;
	} while (t1 < end);

	qsort(rtt, n, sizeof(*rtt), cmp_double);
	printf("{\"mode\":\"pingpong\",\"size\":%u,\"rtts\":%zu,"
	       "\"rtt_per_s\":%.1f,\"p50_us\":%.3f,\"p99_us\":%.3f,"
	       "\"mean_us\":%.3f,\"eagain\":%lu}\n",
	       o->size, n, (double)n / (t1 - start), percentile(rtt, n, 50),
	       percentile(rtt, n, 99), sum / (double)n, spurious_eagain);
	ret = 0;
out_close:
	close(fd);
out_free:
	free(rtt);
	free(buf);
	return ret;
}

static int run_stream(const struct opts *o)
{
	uint64_t sent = 0, got_be = 0, got;
	double start, end, t;
	ssize_t r;
	char *buf;
	int fd, ret = 1;

	buf = malloc(o->size);
	if (!buf)
		return 1;
	/* Not all zero, so nothing on the way can shortcut the payload. */
	for (unsigned int i = 0; i < o->size; i++)
		buf[i] = (char)(i * 131u + 7u);
	fd = client_connect(o, SP_STREAM);
	if (fd < 0)
		goto out_free;

	start = now_s();
	end = start + o->seconds;
	do {
		if (write_full(fd, buf, o->size)) {
			perror("sockperf stream: write");
			goto out_close;
		}
		sent += o->size;
	} while (now_s() < end);

	if (shutdown(fd, SHUT_WR) < 0) {
		perror("sockperf stream: shutdown");
		goto out_close;
	}
	r = read_full(fd, &got_be, sizeof(got_be));
	t = now_s();
	if (r != (ssize_t)sizeof(got_be)) {
		fprintf(stderr, "sockperf stream: no byte count from the server (%zd)\n", r);
		goto out_close;
	}
	got = be64toh(got_be);
	if (got != sent) {
		fprintf(stderr, "sockperf stream: sent %llu bytes, server got %llu\n",
			(unsigned long long)sent, (unsigned long long)got);
		goto out_close;
	}
	printf("{\"mode\":\"stream\",\"size\":%u,\"bytes\":%llu,"
	       "\"seconds\":%.4f,\"gbit_s\":%.4f,\"eagain\":%lu}\n",
	       o->size, (unsigned long long)sent, t - start,
	       (double)sent * 8.0 / (t - start) / 1e9, spurious_eagain);
	ret = 0;
out_close:
	close(fd);
out_free:
	free(buf);
	return ret;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lopts[] = {
		{ "to", required_argument, NULL, 't' },
		{ "port", required_argument, NULL, 'p' },
		{ "size", required_argument, NULL, 's' },
		{ "seconds", required_argument, NULL, 'S' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		errno = 0;
		end = NULL;
		switch (c) {
		case 't':
			if (parse_addr(optarg, &o->to)) {
				fprintf(stderr, "sockperf: bad --to '%s' (want IP:PORT)\n", optarg);
				return -EINVAL;
			}
			o->have_to = 1;
			break;
		case 'p':
			o->port = (int)strtol(optarg, &end, 10);
			if (*end || o->port <= 0 || o->port > 65535)
				goto bad;
			break;
		case 's':
			o->size = (unsigned int)strtoul(optarg, &end, 10);
			if (*end || !o->size || o->size > SP_MAX_SIZE)
				goto bad;
			break;
		case 'S':
			o->seconds = strtod(optarg, &end);
			if (*end || !(o->seconds > 0) || o->seconds > 600)
				goto bad;
			break;
		case 'w':
			o->warmup = strtod(optarg, &end);
			if (*end || o->warmup < 0 || o->warmup > 600)
				goto bad;
			break;
		case 'c':
			o->cpu = (int)strtol(optarg, &end, 10);
			if (*end || o->cpu < 0 || o->cpu >= CPU_SETSIZE)
				goto bad;
			break;
		case 'T':
			o->timeout = (unsigned int)strtoul(optarg, &end, 10);
			if (*end || !o->timeout)
				goto bad;
			break;
		default:
			usage();
			return -EINVAL;
		}
		if (errno)
			goto bad;
	}
	return 0;
bad:
	fprintf(stderr, "sockperf: bad value '%s'\n", optarg);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct opts o = {
		.size = 64,
		.seconds = 3,
		.warmup = 0,
		.cpu = -1,
		.timeout = 900,
	};
	int err;

	if (argc < 2) {
		usage();
		return 2;
	}
	o.mode = argv[1];
	if (parse_opts(argc - 1, argv + 1, &o))
		return 2;
	/* A peer that vanished must not kill us before we can say so. */
	signal(SIGPIPE, SIG_IGN);
	if (o.cpu >= 0) {
		err = pin_cpu(o.cpu);
		if (err) {
			fprintf(stderr, "sockperf: pin to CPU %d: %s\n", o.cpu, strerror(-err));
			return 1;
		}
	}

	if (!strcmp(o.mode, "server")) {
		if (!o.port) {
			usage();
			return 2;
		}
		return run_server(&o);
	}
	if (strcmp(o.mode, "pingpong") && strcmp(o.mode, "stream")) {
		usage();
		return 2;
	}
	if (!o.have_to) {
		usage();
		return 2;
	}
	/* Hard bound: the run plus generous slack for connect and drain. */
	alarm((unsigned int)(o.seconds + o.warmup) + 30);
	return !strcmp(o.mode, "pingpong") ? run_pingpong(&o) : run_stream(&o);
}
