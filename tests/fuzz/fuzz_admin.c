// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fuzz target: the admin endpoints' request handling (admin_answer), over
 * memory. The input is an HTTP/1.1 request head as a client sends it:
 * "METHOD TARGET VERSION" then header lines. As libmicrohttpd does before
 * calling the handler, the query (from '?') is cut off and the path is
 * percent-decoded; Accept-Encoding is the only header the handler reads.
 * The request goes to each of the three endpoints, serving a small
 * config with workloads, services and policies, and each answer is
 * checked: a known status, a body, gzip that inflates, JSON that parses.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <jansson.h>
#include <microhttpd.h>
#include <zlib.h>

#include "fuzz.h"
#include "admin.h"
#include "alog.h"
#include "config.h"
#include "metrics.h"
#include "tunnel.h"

static const char config_yaml[] =
	"apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
	"metadata: {name: web-1, namespace: shop, labels: {app: web}}\n"
	"spec: {ip: 10.10.1.2, node: node1, serviceAccount: web}\n---\n"
	"apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
	"metadata: {name: \"db-\\\"1\\\"\", namespace: shop, labels: {app: db}}\n"
	"spec: {ip: 10.10.1.3, node: node2}\n---\n"
	"apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
	"metadata: {name: web, namespace: shop}\n"
	"spec: {vip: 10.96.0.10, ports: [{port: 80, targetPort: 8080}], selector: {app: web}}\n---\n"
	"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
	"metadata: {name: db-from-web, namespace: shop}\n"
	"spec:\n  selector: {matchLabels: {app: db}}\n  rules:\n"
	"  - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]\n"
	"    to: [{operation: {ports: [\"5432\"], methods: [GET]}}]\n---\n"
	"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
	"metadata: {name: db, namespace: shop}\n"
	"spec: {selector: {matchLabels: {app: db}}, mtls: {mode: STRICT},\n"
	"       portLevelMtls: {\"8080\": {mode: PERMISSIVE}}}\n";

static struct metrics mx;
static struct alog al;
static struct admin *adm;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct metrics_opts mo = { .node = "node1", .max_series = 100 };
	struct admin_opts ao = {
		.admin_addr = "off", .metrics_addr = "off", .ready_addr = "off",
		.node = "node1", .config_path = "/etc/skmesh", .bpffs = "/nonexistent",
	};
	struct cfg_diag d = {};
	struct config *cfg = NULL;
	struct cfgref *ref;
	char path[64];
	int fd = fuzz_memfd("fuzz-admin.yaml", path, sizeof(path));

	(void)argc;
	(void)argv;
	fuzz_memfd_put(fd, config_yaml, strlen(config_yaml));
	if (config_load(path, &cfg, &d)) {
		diag_print(&d, "fuzz_admin");
		abort();
	}
	diag_free(&d);
	close(fd);
	if (metrics_init(&mx, &mo))
		abort();
	alog_init(&al, stderr, 0);
	if (admin_start(&ao, &mx, &al, &adm))
		abort();
	ref = cfgref_new(cfg);
	admin_set_config(adm, ref);
	cfgref_put(ref);
	admin_set_reload_error(adm, "x.yaml:1:1: error: \"quoted\" \\ and \x01 control");
	return 0;
}

/* Bytes up to the end of the line (CRLF or LF) as a string, at *P;
 * *P moves past the line. NULL at the end. */
static char *line(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *s = *p, *e;
	char *out;

	if (s >= end)
		return NULL;
	e = memchr(s, '\n', (size_t)(end - s));
	if (!e)
		e = end;
	*p = e < end ? e + 1 : end;
	if (e > s && e[-1] == '\r')
		e--;
	out = strndup((const char *)s, (size_t)(e - s));	/* stops at a NUL */
	if (!out)
		abort();
	return out;
}

static void check_gzip(const struct admin_reply *r)
{
	z_stream z = {};
	unsigned char buf[16384];
	int ret;

	if (inflateInit2(&z, 15 + 16) != Z_OK)
		abort();
	z.next_in = (Bytef *)r->body;
	z.avail_in = (uInt)r->len;
	do {
		z.next_out = buf;
		z.avail_out = sizeof(buf);
		ret = inflate(&z, Z_NO_FLUSH);
	} while (ret == Z_OK);
	inflateEnd(&z);
	if (ret != Z_STREAM_END) {
		fprintf(stderr, "a gzip body that does not inflate (%d)\n", ret);
		abort();
	}
}

static void check(const struct admin_reply *r, const char *method, const char *path)
{
	int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");

	if (!r->type || (!r->body && r->len) ||
	    (r->code != 200 && r->code != 404 && r->code != 405 && r->code != 503)) {
		fprintf(stderr, "bad answer %u to %s %s\n", r->code, method, path);
		abort();
	}
	if (get != (r->code != 405)) {
		fprintf(stderr, "%s %s answered %u\n", method, path, r->code);
		abort();
	}
	if (r->gzip) {
		check_gzip(r);
	} else if (r->code == 200 && !strcmp(r->type, "application/json")) {
		json_t *j = json_loadb(r->body, r->len, 0, NULL);

		if (!j) {
			fprintf(stderr, "/config_dump is not JSON\n");
			abort();
		}
		json_decref(j);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;
	char *first = line(&p, end), *h, *method, *target, *q, *ae = NULL, *sp;

	if (!first)
		return 0;
	/* the request line: METHOD SP TARGET [SP VERSION] */
	method = first;
	sp = strchr(first, ' ');
	target = sp ? sp + 1 : first + strlen(first);
	if (sp)
		*sp = 0;
	if ((sp = strchr(target, ' ')))
		*sp = 0;
	/* headers: the last Accept-Encoding wins */
	while ((h = line(&p, end))) {
		if (!strncasecmp(h, "Accept-Encoding:", 16)) {
			free(ae);
			ae = strdup(h + 16 + strspn(h + 16, " \t"));
		}
		free(h);
	}
	if ((q = strchr(target, '?')))
		*q = 0;
	MHD_http_unescape(target);
	admin_set_ready(adm, size & 1, "draining");
	for (int ep = ADMIN_EP_ADMIN; ep <= ADMIN_EP_READY; ep++) {
		struct admin_reply r = {};

		if (admin_answer(adm, (enum admin_ep)ep, method, target, ae, &r))
			continue;	/* out of memory: nothing to send */
		check(&r, method, target);
		free(r.body);
	}
	free(ae);
	free(first);
	return 0;
}
