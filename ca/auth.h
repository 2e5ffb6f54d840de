/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Who is calling the CA service, and what it may have, from the
 * Kubernetes API server (as istiod's Kubernetes authenticator and node
 * authorizer decide):
 *
 * - a bearer token is valid when a TokenReview with the CA's audience
 *   says authenticated for that audience; the caller is then the service
 *   account of its username (system:serviceaccount:NS:SA), and its node
 *   is the token's user.extra authentication.kubernetes.io/node-name, or
 *   else the spec.nodeName of the pod the token is bound to (pod-name +
 *   pod-uid, looked up, its uid compared);
 * - positive reviews are cached for a short time (review_cache_s, never
 *   past the token's own exp), keyed by the SHA-256 of the token: the
 *   token itself is never kept;
 * - the service accounts of the pods on a node: GET /api/v1/pods with
 *   fieldSelector spec.nodeName, pods that have finished left out,
 *   cached per node for pod_cache_ms.
 *
 * Every function may be called from several threads at once.
 */
#ifndef SKM_CA_AUTH_H
#define SKM_CA_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct kube_client;

#define CA_NAME_MAX	254	/* a DNS subdomain, with its NUL */

struct ca_caller {
	char ns[64], sa[64];	/* its service account */
	char node[CA_NAME_MAX];	/* "" when the token is bound to no pod */
	char pod[CA_NAME_MAX];	/* the pod the token is bound to, or "" */
	char pod_uid[64];
};

struct ca_auth_opts {
	struct kube_client *kube;
	const char *audience;		/* the CA's audience, e.g. istio-ca */
	unsigned int review_cache_s;	/* 0: positive reviews not cached */
	unsigned int pod_cache_ms;	/* 0: every check lists the pods */
};

/* Counters, for the metrics. */
struct ca_auth_stats {
	uint64_t reviews, review_cache_hits, review_errors;
	uint64_t pod_lists, pod_cache_hits, pod_list_errors;
};

struct ca_auth;

struct ca_auth *ca_auth_new(const struct ca_auth_opts *o);
void ca_auth_free(struct ca_auth *a);
void ca_auth_stats(struct ca_auth *a, struct ca_auth_stats *out);

enum ca_auth_res {
	CA_AUTH_OK = 0,
	CA_AUTH_DENIED,		/* the answer is no (WHY says why) */
	CA_AUTH_UNAVAILABLE,	/* the API server could not be asked */
};

/* Authenticates TOKEN: CA_AUTH_OK with *OUT filled (node resolved as
 * said above; "" when the token is bound to no pod), or why not. */
enum ca_auth_res ca_auth_token(struct ca_auth *a, const char *token, struct ca_caller *out,
			       char *why, size_t whylen);

/* Whether a pod of service account NS/SA runs on NODE now. */
enum ca_auth_res ca_auth_pod_on_node(struct ca_auth *a, const char *node, const char *ns,
				     const char *sa, char *why, size_t whylen);

#endif /* SKM_CA_AUTH_H */
