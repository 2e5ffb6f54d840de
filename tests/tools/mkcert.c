// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * mkcert - a workload certificate from a mesh CA folder, with the validity
 * a test asks for (an expired one, one from another trust domain), made by
 * meshd's own issuing code (agent/certs.c).
 *
 *   mkcert --ca-dir DIR --ns NS --sa SA --out DIR
 *          [--trust-domain TD] [--start S] [--lifetime S]
 *
 * --start: seconds from now the validity starts (negative: in the past);
 * --lifetime: seconds it lasts (default 86400). Writes
 * DIR/<ns>.<sa>.cert.pem and DIR/<ns>.<sa>.key.pem; prints the SPIFFE ID.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certs.h"

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "ca-dir", required_argument, NULL, 'c' },
		{ "ns", required_argument, NULL, 'n' },
		{ "sa", required_argument, NULL, 's' },
		{ "out", required_argument, NULL, 'o' },
		{ "trust-domain", required_argument, NULL, 't' },
		{ "start", required_argument, NULL, 'S' },
		{ "lifetime", required_argument, NULL, 'L' },
		{}
	};
	const char *ca_dir = NULL, *ns = NULL, *sa = NULL, *out = NULL;
	const char *td = "cluster.local";
	long start = 0, lifetime = 86400;
	struct mesh_ca *ca;
	struct wl_cert *c;
	char err[256];
	int o;

	while ((o = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (o) {
		case 'c': ca_dir = optarg; break;
		case 'n': ns = optarg; break;
		case 's': sa = optarg; break;
		case 'o': out = optarg; break;
		case 't': td = optarg; break;
		case 'S': start = strtol(optarg, NULL, 10); break;
		case 'L': lifetime = strtol(optarg, NULL, 10); break;
		default: return 2;
		}
	}
	if (!ca_dir || !ns || !sa || !out || lifetime <= 0) {
		fprintf(stderr, "usage: mkcert --ca-dir DIR --ns NS --sa SA --out DIR "
			"[--trust-domain TD] [--start S] [--lifetime S]\n");
		return 2;
	}
	if (mesh_ca_load(ca_dir, &ca, err, sizeof(err))) {
		fprintf(stderr, "mkcert: %s\n", err);
		return 1;
	}
	/* mesh_ca_issue starts the validity 60 s before the time it is given */
	if (mesh_ca_issue(ca, td, ns, sa, time(NULL) + start + 60, (int)lifetime, &c,
			  err, sizeof(err))) {
		fprintf(stderr, "mkcert: %s\n", err);
		mesh_ca_free(ca);
		return 1;
	}
	if (wl_cert_write(c, ns, sa, out)) {
		fprintf(stderr, "mkcert: cannot write to %s\n", out);
		wl_cert_free(c);
		mesh_ca_free(ca);
		return 1;
	}
	printf("%s\n", c->id);
	wl_cert_free(c);
	mesh_ca_free(ca);
	return 0;
}
