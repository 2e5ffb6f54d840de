// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshd's CA client on its own: asks a remote CA (skmesh-ca, istiod) for
 * the certificates of the identities NS/SA given, through certmgr and the
 * client's worker exactly as meshd's tunnel does, and prints one line per
 * identity (its SPIFFE ID, notAfter, or the failure) and then
 * "all_issued_ms N" (from the first request to the last answer). Exit
 * status 0 when every identity got its certificate.
 *
 *   ca-ask --ca-addr HOST:PORT --ca-root FILE --ca-token FILE
 *          [--ca-server-name NAME] [--lifetime S] [--timeout S] NS/SA...
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "caclient.h"
#include "certs.h"

static double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void warn(const char *msg)
{
	fprintf(stderr, "ca-ask: %s\n", msg);
}

static void count(const struct wl_cert *c, int failures, void *arg)
{
	(*(int *)arg)++;
}

static void show(const struct wl_cert *c, int failures, void *arg)
{
	printf("issued %s notAfter %lld\n", c->id, (long long)c->not_after);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "ca-addr", required_argument, NULL, 'a' },
		{ "ca-root", required_argument, NULL, 'r' },
		{ "ca-token", required_argument, NULL, 't' },
		{ "ca-server-name", required_argument, NULL, 'n' },
		{ "lifetime", required_argument, NULL, 'l' },
		{ "timeout", required_argument, NULL, 'T' },
		{}
	};
	struct ca_client_opts co = { .cluster_id = "Kubernetes" };
	struct certmgr_opts mo = { .td = "cluster.local", .warn = warn };
	struct certmgr_stats st;
	struct certmgr *m;
	char err[SKM_REASON_MAX];
	int c, timeout_s = 20, held = 0, n;
	double t0, t1 = 0;

	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'a': co.addr = optarg; break;
		case 'r': co.root_file = optarg; break;
		case 't': co.token_file = optarg; break;
		case 'n': co.server_name = optarg; break;
		case 'l': mo.lifetime_s = atoi(optarg); break;
		case 'T': timeout_s = atoi(optarg); break;
		default: return 2;
		}
	}
	n = argc - optind;
	if (!co.addr || !n) {
		fprintf(stderr, "usage: ca-ask --ca-addr HOST:PORT --ca-root FILE --ca-token FILE "
			"[--ca-server-name NAME] [--lifetime S] [--timeout S] NS/SA...\n");
		return 2;
	}
	key_hygiene_init(err, sizeof(err));
	if (ca_client_new(&co, &mo.signer, err, sizeof(err)) ||
	    certmgr_new(&mo, &m, err, sizeof(err))) {
		fprintf(stderr, "ca-ask: %s\n", err);
		return 1;
	}
	t0 = mono_ms();
	certmgr_want_begin(m);
	for (int i = optind; i < argc; i++) {
		char *slash = strchr(argv[i], '/');

		if (!slash) {
			fprintf(stderr, "ca-ask: %s: give NS/SA\n", argv[i]);
			return 2;
		}
		*slash = 0;
		if (certmgr_want(m, argv[i], slash + 1, time(NULL)))
			fprintf(stderr, "ca-ask: %s/%s is not a namespace/service account\n",
				argv[i], slash + 1);
	}
	certmgr_want_end(m);
	while (mono_ms() - t0 < timeout_s * 1e3) {
		struct pollfd p = { .fd = certmgr_fd(m), .events = POLLIN };

		poll(&p, 1, 100);
		certmgr_tick(m, time(NULL));
		held = 0;
		certmgr_foreach(m, count, &held);
		certmgr_stats(m, &st);
		if (held == n) {
			t1 = mono_ms();
			break;
		}
	}
	certmgr_foreach(m, show, NULL);
	certmgr_stats(m, &st);
	for (int i = 1; i <= SIGN_STATUS_MAX; i++)
		if (st.failed[i])
			printf("failed status %d count %llu\n", i, (unsigned long long)st.failed[i]);
	if (t1)
		printf("all_issued_ms %.1f\n", t1 - t0);
	certmgr_free(m);
	return held == n ? 0 : 1;
}
