// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshctl ca init: makes the mesh root CA that meshd signs workload
 * certificates with in standalone mode (docs/identity.md). Kept apart
 * from meshctl.c: it needs OpenSSL and certs.c, never the pinned maps.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certs.h"
#include "meshctl-ca.h"

#define CA_DAYS_DEFAULT	3650

static const char usage_text[] =
	"Usage: meshctl ca init --trust-domain TD --out DIR [--days N]\n"
	"\n"
	"Makes a new mesh root CA for standalone mode: an ECDSA P-256 key and a\n"
	"self-signed certificate (CA:TRUE, keyCertSign + cRLSign, subject\n"
	"O=skmesh, CN=skmesh root CA TD, URI SAN spiffe://TD), written to\n"
	"  DIR/" SKM_CA_CERT_FILE "   the root certificate (0644): give it to every node\n"
	"  DIR/" SKM_CA_KEY_FILE "    its key, PKCS#8 (0600): keep it secret\n"
	"DIR is made 0700 when missing. An existing CA in DIR is never\n"
	"overwritten. Point meshd at DIR; roots to trust as well (rotation) go\n"
	"in DIR/" SKM_CA_BUNDLE_FILE ".\n"
	"\n"
	"Options:\n"
	"  --trust-domain TD  the mesh's trust domain, e.g. cluster.local\n"
	"                     (lower-case letters, digits, '.', '-', '_')\n"
	"  --out DIR          folder to write the CA to\n"
	"  --days N           validity in days (default 3650, 1 to 36500)\n"
	"  -h, --help         this text\n"
	"\n"
	"Exit status: 0 done, 1 failed, 2 usage error.\n";

__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("meshctl ca: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	fputs(usage_text, stderr);
	return 2;
}

/* "--NAME VALUE" or "--NAME=VALUE" at argv[*i]: 1 with *VAL set (and *i
 * past a separate value), 0 for another argument, -1 with no value. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **val)
{
	size_t n = strlen(name);

	if (strncmp(argv[*i], name, n))
		return 0;
	if (argv[*i][n] == '=') {
		*val = argv[*i] + n + 1;
		return 1;
	}
	if (argv[*i][n])
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*val = argv[++*i];
	return 1;
}

int meshctl_ca_main(int argc, char **argv)
{
	const char *td = NULL, *out = NULL, *days_s = NULL, *val;
	char err[512], dir[PATH_MAX];
	size_t len;
	long days = CA_DAYS_DEFAULT;
	int i, r, init = 0;

	/* the root key is made here: no core file or secure-heap-less copy
	 * of it (a failure only costs that protection, said on stderr) */
	if (key_hygiene_init(err, sizeof(err)))
		fprintf(stderr, "meshctl ca: key hygiene: %s\n", err);
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(usage_text, stdout);
			return 0;
		} else if ((r = opt_value(argc, argv, &i, "--trust-domain", &val))) {
			if (r < 0 || !*val)
				return usage_error("--trust-domain needs a trust domain");
			td = val;
		} else if ((r = opt_value(argc, argv, &i, "--out", &val))) {
			if (r < 0 || !*val)
				return usage_error("--out needs a directory");
			out = val;
		} else if ((r = opt_value(argc, argv, &i, "--days", &val))) {
			if (r < 0 || !*val)
				return usage_error("--days needs a number");
			days_s = val;
		} else if (a[0] == '-' && a[1]) {
			return usage_error("unknown option '%s'", a);
		} else if (!init && !strcmp(a, "init")) {
			init = 1;
		} else {
			return usage_error(init ? "unexpected argument '%s'" :
					   "unknown ca command '%s'", a);
		}
	}
	if (!init)
		return usage_error("no ca command given (meshctl ca init ...)");
	if (!td)
		return usage_error("--trust-domain is required");
	if (!out)
		return usage_error("--out is required");
	/* "DIR/" and "DIR" are the same folder; keep the paths tidy */
	len = strlen(out);
	if (len >= sizeof(dir)) {
		fprintf(stderr, "meshctl ca: %s: name too long\n", out);
		return 1;
	}
	memcpy(dir, out, len + 1);
	while (len > 1 && dir[len - 1] == '/')
		dir[--len] = '\0';
	if (days_s) {
		char *end;

		errno = 0;
		days = strtol(days_s, &end, 10);
		if (errno || end == days_s || *end || days < 1 || days > 36500)
			return usage_error("--days takes a whole number of days, 1 to 36500");
	}
	r = ca_init(dir, td, (int)days, err, sizeof(err));
	if (r) {
		fprintf(stderr, "meshctl ca: %s\n", err);
		return r == -EINVAL ? 2 : 1;	/* -EINVAL: a bad argument */
	}
	printf("root CA for trust domain %s, valid %ld days\n"
	       "  certificate: %s/%s\n"
	       "  key:         %s/%s (0600: keep it secret)\n",
	       td, days, dir, SKM_CA_CERT_FILE, dir, SKM_CA_KEY_FILE);
	return 0;
}
