// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * policy-eval: the user-space policy evaluator on its own, for tests that
 * compare it with what the kernel enforces.
 *
 *   policy-eval CONFIG < probes
 *
 * Each input line: SRC_NS SRC_SA SRC_IP DST_IP PORT mtls|plain
 * (SRC_NS and SRC_SA are "-" for plain). DST_IP must be a Workload of
 * CONFIG. Each output line: ALLOW|DENY, a tab, the reason.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "policy.h"

int main(int argc, char **argv)
{
	char ns[128], sa[128], sip[64], dip[64], mode[16], line[512], why[256];
	struct cfg_diag diag = {};
	struct config *cfg = NULL;
	unsigned int port;
	int rc = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: policy-eval CONFIG < probes\n");
		return 2;
	}
	if (config_load(argv[1], &cfg, &diag)) {
		diag_print(&diag, "policy-eval");
		diag_free(&diag);
		return 1;
	}
	diag_free(&diag);
	while (fgets(line, sizeof(line), stdin)) {
		const struct cfg_workload *w;
		struct pol_conn c = {};
		struct pol_target t;
		struct pol_result r;
		struct in_addr a;

		if (sscanf(line, "%127s %127s %63s %63s %u %15s", ns, sa, sip, dip, &port,
			   mode) != 6 || inet_pton(AF_INET, sip, &a) != 1) {
			fprintf(stderr, "policy-eval: bad probe: %s", line);
			rc = 1;
			break;
		}
		c.src_ip = a.s_addr;
		if (inet_pton(AF_INET, dip, &a) != 1 || !(w = config_workload_by_ip(cfg, a.s_addr))) {
			fprintf(stderr, "policy-eval: %s is not a Workload of %s\n", dip, argv[1]);
			rc = 1;
			break;
		}
		c.dst_ip = a.s_addr;
		c.dst_port = (uint16_t)port;
		c.mtls = !strcmp(mode, "mtls");
		c.src_ns = c.mtls ? ns : NULL;
		c.src_sa = c.mtls ? sa : NULL;
		t.ns = w->ns;
		t.labels = &w->labels;
		if (policy_eval(cfg, &t, &c, &r)) {
			rc = 1;
			break;
		}
		printf("%s\t%s\n", r.allow ? "ALLOW" : "DENY", policy_reason(&r, why, sizeof(why)));
		fflush(stdout);
	}
	config_free(cfg);
	return rc;
}
