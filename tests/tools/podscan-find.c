// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * podscan-find - meshd's /proc scan for running pods (agent/podscan.c) on
 * its own, for the tests: prints the network namespace path podscan_find()
 * gives for the pod UID and IPs, and exits 0; exits 3 when it finds none,
 * 1 on an error. -v shows the scan's debug lines (each process rejected).
 *
 * usage: podscan-find [-v] [--proc DIR] UID IPV4...
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "podscan.h"

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "proc", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	const char *proc = "/proc";
	uint32_t ips[16];
	size_t nips = 0;
	struct podscan *ps;
	char out[4096];
	int c, rc;

	log_init("podscan-find", LOG_INFO);
	while ((c = getopt_long(argc, argv, "v", lo, NULL)) != -1) {
		if (c == 'p')
			proc = optarg;
		else if (c == 'v')
			log_init("podscan-find", LOG_DEBUG);
		else
			goto usage;
	}
	if (argc - optind < 2 || argc - optind > 17)
		goto usage;
	for (int i = optind + 1; i < argc; i++)
		if (inet_pton(AF_INET, argv[i], &ips[nips++]) != 1) {
			fprintf(stderr, "podscan-find: %s is not an IPv4 address\n", argv[i]);
			return 1;
		}
	rc = podscan_open(proc, &ps);
	if (rc) {
		fprintf(stderr, "podscan-find: %s: %s\n", proc, strerror(-rc));
		return 1;
	}
	fprintf(stderr, "podscan-find: %zu processes of pods\n", podscan_count(ps));
	rc = podscan_find(ps, argv[optind], ips, nips, out, sizeof(out));
	podscan_free(ps);
	if (rc == -ENOENT)
		return 3;
	if (rc) {
		fprintf(stderr, "podscan-find: %s\n", strerror(-rc));
		return 1;
	}
	printf("%s\n", out);
	return 0;
usage:
	fprintf(stderr, "usage: podscan-find [-v] [--proc DIR] UID IPV4...\n");
	return 1;
}
