// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skmesh-ca's request path fed raw bytes: what would come out of the TLS
 * layer of a connection (the HTTP/2 client preface, SETTINGS, HEADERS,
 * DATA with gRPC framing and an IstioCertificateRequest, RST_STREAM,
 * anything) goes to the service's connection (ca/conn.c) and its
 * CreateCertificate (ca/service.c): header checks, message framing and
 * budget, protobuf decoding, the identity asked for, the CSR's checks and
 * the signing, with a real CA made at start. Only the API server is
 * replaced, by answers in memory: token "node-agent" is
 * skmesh-system/meshd on node1, token "pod" is shop/web; a pod of
 * shop/web runs on node1, nothing else runs anywhere.
 *
 * Seeds: tests/fuzz/corpus/ca/, made by tests/fuzz/gen_ca_corpus.py.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "certs.h"
#include "conn.h"
#include "log.h"
#include "service.h"

static struct ca_service svc;
static struct ca_conn_host host;
static _Atomic size_t budget;
#define FZ_BUDGET	(8U << 20)

static enum ca_auth_res fz_token(void *arg, const char *token, struct ca_caller *out,
				 char *why, size_t whylen)
{
	(void)arg;
	memset(out, 0, sizeof(*out));
	if (!strcmp(token, "node-agent")) {
		strcpy(out->ns, "skmesh-system");
		strcpy(out->sa, "meshd");
		strcpy(out->node, "node1");
		return CA_AUTH_OK;
	}
	if (!strcmp(token, "pod")) {
		strcpy(out->ns, "shop");
		strcpy(out->sa, "web");
		strcpy(out->node, "node1");
		return CA_AUTH_OK;
	}
	snprintf(why, whylen, "unknown token");
	return CA_AUTH_DENIED;
}

static enum ca_auth_res fz_pod(void *arg, const char *node, const char *ns, const char *sa,
			       char *why, size_t whylen)
{
	(void)arg;
	if (!strcmp(node, "node1") && !strcmp(ns, "shop") && !strcmp(sa, "web"))
		return CA_AUTH_OK;
	snprintf(why, whylen, "no such pod");
	return CA_AUTH_DENIED;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/skm-fuzz-ca-XXXXXX", path[600], err[256];
	struct ca_service_opts o = {
		.authz = { .token = fz_token, .pod_on_node = fz_pod },
		.td = "cluster.local", .max_ttl_s = 86400,
	};
	static char agent[] = "skmesh-system/meshd";
	static char *agents[] = { agent };
	struct mesh_ca *ca;

	(void)argc;
	(void)argv;
	log_init("fuzz_ca", LOG_WARN);
	if (!mkdtemp(dir) || ca_init(dir, "cluster.local", 1, err, sizeof(err)) ||
	    mesh_ca_load(dir, &ca, err, sizeof(err))) {
		fprintf(stderr, "fuzz_ca: making a CA: %s\n", err);
		abort();
	}
	snprintf(path, sizeof(path), "%s/%s", dir, SKM_CA_CERT_FILE);
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s", dir, SKM_CA_KEY_FILE);
	unlink(path);
	rmdir(dir);
	o.ca = ca;
	o.node_agents = agents;
	o.n_node_agents = 1;
	if (ca_service_init(&svc, &o))
		abort();
	budget = FZ_BUDGET;
	host = (struct ca_conn_host){ .call = ca_service_call, .refused = ca_service_refused,
				      .arg = &svc, .max_msg = 1U << 20, .budget = &budget };
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ca_conn *c = ca_conn_new(&host);
	const uint8_t *out;
	size_t off = 0;

	if (!c)
		return 0;
	/* in pieces of varying size, as TLS records would come, draining
	 * what the session says after each */
	while (off < size && ca_conn_alive(c)) {
		size_t n = 1 + (data[off] % 97) * 17;

		if (n > size - off)
			n = size - off;
		if (ca_conn_recv(c, data + off, n))
			break;
		off += n;
		while (ca_conn_send(c, &out) > 0)
			;
	}
	while (ca_conn_send(c, &out) > 0)
		;
	ca_conn_free(c);
	/* every byte reserved is given back when the connection goes */
	if (budget != FZ_BUDGET)
		abort();
	return 0;
}
