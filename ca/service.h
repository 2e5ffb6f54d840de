/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IstioCertificateService/CreateCertificate as skmesh-ca serves it: a
 * request (headers checked, one message) in, a certificate chain or a
 * gRPC status out, and the counters its metrics show.
 *
 * Who gets what (docs/identity.md):
 * 1. the bearer token must pass a TokenReview for the CA's audience
 *    (else UNAUTHENTICATED; API server unreachable: UNAVAILABLE);
 * 2. the caller's service account must be one of the trusted node agents
 *    (else PERMISSION_DENIED);
 * 3. the identity is metadata's ImpersonatedIdentity (a SPIFFE ID of the
 *    CA's trust domain), granted only when a pod of that namespace and
 *    service account runs on the caller's node (else PERMISSION_DENIED);
 *    without it, the caller's own identity;
 * 4. the CSR must pass csr_check() for that identity (INVALID_ARGUMENT);
 * 5. lifetime = validity_duration capped at max_ttl_s (0 or absent: the
 *    cap), and never past the CA's own notAfter.
 * The answer's cert_chain is the leaf, then the signer and --ca-chain's
 * certificates (the root last), one PEM each, as istiod answers.
 */
#ifndef SKM_CA_SERVICE_H
#define SKM_CA_SERVICE_H

#include <stdint.h>

#include "auth.h"
#include "conn.h"

struct mesh_ca;

/* Why a request was refused, one counter each. */
enum ca_refusal {
	CA_REF_NO_TOKEN,
	CA_REF_BAD_TOKEN,		/* review said no: expired, forged, audience */
	CA_REF_API_UNAVAILABLE,
	CA_REF_NOT_NODE_AGENT,
	CA_REF_NO_NODE,			/* node agent's token bound to no pod */
	CA_REF_NO_POD_ON_NODE,
	CA_REF_BAD_IDENTITY,		/* ImpersonatedIdentity not a SPIFFE ID */
	CA_REF_OTHER_TRUST_DOMAIN,	/* ... of another trust domain */
	CA_REF_BAD_MESSAGE,		/* protobuf did not decode */
	CA_REF_BAD_VALIDITY,
	CA_REF_CSR_BAD_PEM,
	CA_REF_CSR_BAD_SIGNATURE,
	CA_REF_CSR_BAD_KEY,
	CA_REF_CSR_BAD_SAN,
	CA_REF_CSR_SAN_MISMATCH,
	CA_REF_CSR_OTHER_TD,
	CA_REF_CSR_ASKS_CA,
	CA_REF_SIGN_FAILED,
	CA_REF_PROTOCOL,		/* not gRPC, or framing: before the call */
	CA_REF_OVERSIZE,		/* message over the maximum, or budget */
	CA_REF_COUNT,
};

const char *ca_refusal_name(enum ca_refusal r);

/* Where the answers about tokens and pods come from: auth.h's functions
 * in skmesh-ca, in-memory ones in the fuzz target. */
struct ca_authz_ops {
	enum ca_auth_res (*token)(void *arg, const char *token, struct ca_caller *out,
				  char *why, size_t whylen);
	enum ca_auth_res (*pod_on_node)(void *arg, const char *node, const char *ns,
					const char *sa, char *why, size_t whylen);
	void *arg;
};

/* auth.h's, with a struct ca_auth as ARG. */
extern const struct ca_authz_ops ca_authz_kube;

struct ca_service_opts {
	struct mesh_ca *ca;
	struct ca_authz_ops authz;
	const char *td;			/* trust domain */
	char **node_agents;		/* "ns/sa" each */
	int n_node_agents;
	long max_ttl_s;
	int allow_own;			/* serve callers that are no node agent
					 * their own identity */
};

struct ca_service {
	struct ca_service_opts o;
	char **chain;			/* PEMs after the leaf */
	size_t n_chain;
	/* counters, atomics: every connection thread adds to them */
	_Atomic uint64_t by_status[GRPC_STATUS_COUNT];
	_Atomic uint64_t refusals[CA_REF_COUNT];
	_Atomic uint64_t issued;
	_Atomic uint64_t capped;	/* lifetimes cut to the cap */
	_Atomic uint64_t sign_us;	/* time spent in checks and signing */
};

int ca_service_init(struct ca_service *s, const struct ca_service_opts *o);
void ca_service_fini(struct ca_service *s);

/* conn.h's call() and refused() for a connection of the service. */
void ca_service_call(void *arg, struct grpc_req *r, struct ca_reply *out);
void ca_service_refused(void *arg, enum grpc_status st, const char *why);

#endif /* SKM_CA_SERVICE_H */
