// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skm-bare - loads bench/bare.bpf.c (bare sockmap redirect, the limit of
 * the same-node bench), attaches it, prints "ready" and runs until SIGINT
 * or SIGTERM, then detaches and exits. Nothing is pinned: if this process
 * dies, the kernel drops the link and the map with it.
 *
 *   skm-bare --cgroup PATH [--cidr 10.99.0.0/16] [-v]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "bare.skel.h"

static volatile sig_atomic_t stop;
static int verbose;

static void on_signal(int sig)
{
	stop = 1;
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt,
			va_list ap)
{
	if (level == LIBBPF_DEBUG && !verbose)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

/* Parses "a.b.c.d/len" into network-order @net and @mask. Returns 0 or
 * -EINVAL. */
static int parse_cidr(const char *s, __u32 *net, __u32 *mask)
{
	char buf[32], *slash, *end;
	struct in_addr a;
	long len;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	len = strtol(slash + 1, &end, 10);
	if (*end || len < 0 || len > 32 || inet_pton(AF_INET, buf, &a) != 1)
		return -EINVAL;
	*mask = htonl(len ? 0xffffffffu << (32 - len) : 0);
	*net = a.s_addr & *mask;
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: skm-bare --cgroup PATH [--cidr NET/LEN] [-v]\n");
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "cgroup", required_argument, NULL, 'c' },
		{ "cidr", required_argument, NULL, 'n' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cgroup = NULL, *cidr = "10.99.0.0/16";
	struct bpf_link *sockops_link = NULL;
	struct bare_bpf *skel;
	sigset_t block, old;
	int cg_fd, map_fd, msg_fd, err, opt;
	__u32 net, mask;

	while ((opt = getopt_long(argc, argv, "v", lopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			cgroup = optarg;
			break;
		case 'n':
			cidr = optarg;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (!cgroup || optind != argc) {
		usage();
		return 2;
	}
	if (parse_cidr(cidr, &net, &mask)) {
		fprintf(stderr, "skm-bare: bad --cidr '%s'\n", cidr);
		return 2;
	}
	libbpf_set_print(libbpf_print);
	/* Blocked until sigsuspend(), so a signal can't slip in between the
	 * check of stop and the wait. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigprocmask(SIG_BLOCK, &block, &old);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	cg_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0) {
		fprintf(stderr, "skm-bare: open cgroup %s: %s\n", cgroup, strerror(errno));
		return 1;
	}

	skel = bare_bpf__open();
	if (!skel) {
		err = -errno;
		fprintf(stderr, "skm-bare: open BPF object: %s\n", strerror(-err));
		goto out_close;
	}
	skel->rodata->pod_net = net;
	skel->rodata->pod_mask = mask;
	err = bare_bpf__load(skel);
	if (err) {
		fprintf(stderr, "skm-bare: load BPF object: %s\n", strerror(-err));
		goto out_destroy;
	}

	map_fd = bpf_map__fd(skel->maps.bare_sock_hash);
	msg_fd = bpf_program__fd(skel->progs.bare_sk_msg);
	err = bpf_prog_attach(msg_fd, map_fd, BPF_SK_MSG_VERDICT, 0);
	if (err) {
		err = -errno;
		fprintf(stderr, "skm-bare: attach sk_msg to map: %s\n", strerror(-err));
		goto out_destroy;
	}
	sockops_link = bpf_program__attach_cgroup(skel->progs.bare_sockops, cg_fd);
	if (!sockops_link) {
		err = -errno;
		fprintf(stderr, "skm-bare: attach sockops to %s: %s\n", cgroup, strerror(-err));
		goto out_detach_msg;
	}

	printf("ready\n");
	fflush(stdout);
	while (!stop)
		sigsuspend(&old);
	err = 0;

	bpf_link__destroy(sockops_link);
out_detach_msg:
	if (bpf_prog_detach2(msg_fd, map_fd, BPF_SK_MSG_VERDICT) && !err) {
		err = -errno;
		fprintf(stderr, "skm-bare: detach sk_msg: %s\n", strerror(-err));
	}
out_destroy:
	bare_bpf__destroy(skel);
out_close:
	close(cg_fd);
	return err ? 1 : 0;
}
