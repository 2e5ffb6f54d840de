/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * meshd's client of a remote CA: a cert_signer (certs.h) that sends each
 * CSR to istio.v1.auth.IstioCertificateService/CreateCertificate over
 * gRPC + TLS, as ztunnel asks istiod: skmesh-ca and istiod's port 15012
 * answer alike.
 *
 * The node makes the keys; only CSRs leave it. Each request carries
 * `authorization: Bearer <token>` (the token file read again for every
 * batch of calls, as kubelet rotates it), `clusterid: <id>` when one is
 * set, and the identity asked for as "ImpersonatedIdentity" in the
 * request's metadata Struct (a node agent asks on behalf of its pods).
 * The CA's serving certificate must chain to the trust bundle and name
 * the server name (by default the host of the address).
 *
 * A worker thread makes the calls, at most max_inflight at once over one
 * HTTP/2 connection (kept between batches); the tunnel thread never
 * blocks on the network. Answers come back through the signer's poll()
 * and fd(); retries and their backoff are certmgr's.
 */
#ifndef SKM_CACLIENT_H
#define SKM_CACLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "certs.h"

#define CA_MAX_ANSWER	(1 << 20)	/* bytes of one response message */

struct ca_client_opts {
	const char *addr;		/* HOST:PORT, [V6]:PORT */
	const char *server_name;	/* the CA's certificate names it: NULL,
					 * the host of addr */
	const char *root_file;		/* the trust bundle (all roots trusted) */
	const char *token_file;		/* bearer token with the CA's audience */
	const char *cluster_id;		/* the "clusterid" header; NULL: none */
	int max_inflight;		/* calls at once (0: 16) */
	int max_queued;			/* waiting requests (0: 4096) */
	int timeout_ms;			/* of a batch of calls (0: 10000) */
};

/* One call, as the worker hands it to its transport. */
struct ca_call {
	const uint8_t *body;		/* a serialized IstioCertificateRequest */
	size_t len;
	/* the transport's answer: */
	int status;			/* gRPC status, or SIGN_STATUS_LOCAL */
	char msg[256];			/* grpc-message, or what failed here */
	uint8_t *answer;		/* status 0: a serialized response
					 * (malloc'ed, the worker frees it) */
	size_t answer_len;
};

/* How the worker's calls reach the CA: gRPC over TLS normally; a test
 * may hand its own. CALL makes the N calls (TOKEN is the bearer token
 * read for them), filling each one's answer. */
struct ca_transport {
	void (*call)(struct ca_transport *tr, const char *token, struct ca_call *calls,
		     size_t n);
	void (*free)(struct ca_transport *tr);
};

int ca_client_new(const struct ca_client_opts *o, struct cert_signer **out,
		  char *err, size_t errlen);
/* The same over TR (taken, also on failure). */
int ca_client_new_with(const struct ca_client_opts *o, struct ca_transport *tr,
		       struct cert_signer **out, char *err, size_t errlen);

/* The request of R: a CSR for R->key naming R->id, and the metadata
 * Struct with ImpersonatedIdentity. 0 and a malloc'ed message, or a
 * negative errno with the reason in ERR. */
int ca_request_encode(const struct sign_req *r, uint8_t **out, size_t *len,
		      char *err, size_t errlen);
/* A response's certificates: the leaf and what follows it. 0, or
 * -EINVAL with the reason in ERR. */
int ca_response_decode(const uint8_t *buf, size_t len, X509 **leaf,
		       STACK_OF(X509) **chain, char *err, size_t errlen);

#endif /* SKM_CACLIENT_H */
