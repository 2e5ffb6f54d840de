// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* CreateCertificate (service.h). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ca.pb-c.h"
#include "certs.h"
#include "csr.h"
#include "log.h"
#include "service.h"

#define IMPERSONATED	"ImpersonatedIdentity"

static const char *const ref_names[CA_REF_COUNT] = {
	"no_token", "bad_token", "api_unavailable", "not_node_agent", "no_node",
	"no_pod_on_node", "bad_identity", "other_trust_domain", "bad_message",
	"bad_validity", "csr_bad_pem", "csr_bad_signature", "csr_bad_key", "csr_bad_san",
	"csr_san_mismatch", "csr_other_trust_domain", "csr_asks_ca", "sign_failed",
	"protocol", "oversize",
};

const char *ca_refusal_name(enum ca_refusal r)
{
	return (unsigned int)r < CA_REF_COUNT ? ref_names[r] : "unknown";
}

static enum ca_auth_res kube_token(void *arg, const char *token, struct ca_caller *out,
				   char *why, size_t whylen)
{
	return ca_auth_token(arg, token, out, why, whylen);
}

static enum ca_auth_res kube_pod_on_node(void *arg, const char *node, const char *ns,
					 const char *sa, char *why, size_t whylen)
{
	return ca_auth_pod_on_node(arg, node, ns, sa, why, whylen);
}

const struct ca_authz_ops ca_authz_kube = {
	.token = kube_token, .pod_on_node = kube_pod_on_node,
};

/* Refusal lines a caller can provoke: 20 at once, then 5 a second. */
static struct log_limit refuse_limit = LOG_LIMIT_INIT(20, 5);
static pthread_mutex_t refuse_lock = PTHREAD_MUTEX_INITIALIZER;

int ca_service_init(struct ca_service *s, const struct ca_service_opts *o)
{
	memset(s, 0, sizeof(*s));
	s->o = *o;
	return mesh_ca_chain_pem(o->ca, &s->chain, &s->n_chain);
}

void ca_service_fini(struct ca_service *s)
{
	mesh_ca_chain_pem_free(s->chain, s->n_chain);
	s->chain = NULL;
}

static void refusal_line(const char *who, enum grpc_status st, enum ca_refusal ref,
			 const char *why)
{
	pthread_mutex_lock(&refuse_lock);
	if (log_limit_pass(&refuse_limit))
		pr_warn("refused CreateCertificate from %s: %s (%s): %s\n", who,
			grpc_status_name(st), ca_refusal_name(ref), why);
	pthread_mutex_unlock(&refuse_lock);
}

static void fail(struct ca_service *s, struct ca_reply *out, const char *who,
		 enum grpc_status st, enum ca_refusal ref, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static void fail(struct ca_service *s, struct ca_reply *out, const char *who,
		 enum grpc_status st, enum ca_refusal ref, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(out->message, sizeof(out->message), fmt, ap);
	va_end(ap);
	out->status = st;
	s->by_status[st]++;
	s->refusals[ref]++;
	refusal_line(who, st, ref, out->message);
}

void ca_service_refused(void *arg, enum grpc_status st, const char *why)
{
	struct ca_service *s = arg;
	enum ca_refusal ref = st == GRPC_RESOURCE_EXHAUSTED ? CA_REF_OVERSIZE : CA_REF_PROTOCOL;

	s->by_status[(unsigned int)st < GRPC_STATUS_COUNT ? st : GRPC_UNKNOWN]++;
	s->refusals[ref]++;
	refusal_line("a peer", st, ref, why);
}

/* metadata's ImpersonatedIdentity: NULL when absent, "" when not a
 * string. */
static const char *impersonated(const Google__Protobuf__Struct *md)
{
	if (!md)
		return NULL;
	for (size_t i = 0; i < md->n_fields; i++) {
		const Google__Protobuf__Struct__FieldsEntry *f = md->fields[i];

		if (!f->key || strcmp(f->key, IMPERSONATED))
			continue;
		if (!f->value || f->value->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
			return "";
		return f->value->string_value;
	}
	return NULL;
}

static int is_node_agent(const struct ca_service *s, const struct ca_caller *c)
{
	char me[160];

	snprintf(me, sizeof(me), "%s/%s", c->ns, c->sa);
	for (int i = 0; i < s->o.n_node_agents; i++)
		if (!strcmp(s->o.node_agents[i], me))
			return 1;
	return 0;
}

static enum ca_refusal csr_ref(enum csr_fail f)
{
	switch (f) {
	case CSR_BAD_SIGNATURE: return CA_REF_CSR_BAD_SIGNATURE;
	case CSR_BAD_KEY: return CA_REF_CSR_BAD_KEY;
	case CSR_BAD_SAN: return CA_REF_CSR_BAD_SAN;
	case CSR_SAN_MISMATCH: return CA_REF_CSR_SAN_MISMATCH;
	case CSR_OTHER_TD: return CA_REF_CSR_OTHER_TD;
	case CSR_ASKS_CA: return CA_REF_CSR_ASKS_CA;
	default: return CA_REF_CSR_BAD_PEM;
	}
}

static char *x509_pem(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	long len;

	if (b && PEM_write_bio_X509(b, x) && (len = BIO_get_mem_data(b, &data)) > 0)
		out = strndup(data, (size_t)len);
	BIO_free(b);
	return out;
}

/* Signs KEY for ID and packs the response into OUT. */
static void issue(struct ca_service *s, struct ca_reply *out, const char *who,
		  const X509_PUBKEY *key, const char *id, long lifetime)
{
	Istio__V1__Auth__IstioCertificateResponse resp =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
	time_t now = time(NULL), na = now + lifetime, ca_end = mesh_ca_not_after(s->o.ca);
	char **chain = NULL;
	X509 *leaf;

	if (now >= ca_end) {
		fail(s, out, who, GRPC_UNAVAILABLE, CA_REF_SIGN_FAILED,
		     "the CA's certificate has expired: rotate the root (docs/identity.md)");
		return;
	}
	if (na > ca_end)
		na = ca_end;
	leaf = mesh_ca_sign_spki(s->o.ca, key, id, now - 60, na);
	chain = calloc(s->n_chain + 1, sizeof(char *));
	if (leaf && chain)
		chain[0] = x509_pem(leaf);
	X509_free(leaf);
	if (!chain || !chain[0]) {
		free(chain ? chain[0] : NULL);
		free(chain);
		fail(s, out, who, GRPC_INTERNAL, CA_REF_SIGN_FAILED, "signing failed");
		return;
	}
	memcpy(chain + 1, s->chain, s->n_chain * sizeof(char *));
	resp.n_cert_chain = s->n_chain + 1;
	resp.cert_chain = chain;
	out->len = istio__v1__auth__istio_certificate_response__get_packed_size(&resp);
	out->body = malloc(out->len ? out->len : 1);
	if (out->body) {
		istio__v1__auth__istio_certificate_response__pack(&resp, out->body);
		out->status = GRPC_OK;
		s->by_status[GRPC_OK]++;
		s->issued++;
		pr_debug("issued %s to %s, until %ld\n", id, who, (long)na);
	} else {
		fail(s, out, who, GRPC_RESOURCE_EXHAUSTED, CA_REF_SIGN_FAILED, "out of memory");
	}
	free(chain[0]);
	free(chain);
}

void ca_service_call(void *arg, struct grpc_req *r, struct ca_reply *out)
{
	struct ca_service *s = arg;
	Istio__V1__Auth__IstioCertificateRequest *req = NULL;
	struct ca_caller caller;
	char why[256], who[400] = "an unauthenticated caller", id[SKM_SPIFFE_MAX];
	char td[256], ns[64], sa[64];
	struct timespec t0, t1;
	const char *imp;
	X509_PUBKEY *key = NULL;
	enum ca_auth_res ar;
	enum csr_fail cf;
	long lifetime;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* 1. who is calling */
	if (!r->token[0]) {
		fail(s, out, who, GRPC_UNAUTHENTICATED, CA_REF_NO_TOKEN,
		     r->bad_auth ? "authorization is not \"Bearer <token>\"" :
				   "no authorization: Bearer <service-account token>");
		goto out;
	}
	ar = s->o.authz.token(s->o.authz.arg, r->token, &caller, why, sizeof(why));
	if (ar == CA_AUTH_UNAVAILABLE) {
		fail(s, out, who, GRPC_UNAVAILABLE, CA_REF_API_UNAVAILABLE, "%s", why);
		goto out;
	}
	if (ar != CA_AUTH_OK) {
		fail(s, out, who, GRPC_UNAUTHENTICATED, CA_REF_BAD_TOKEN, "%s", why);
		goto out;
	}
	snprintf(who, sizeof(who), "%s/%s (node %s)", caller.ns, caller.sa,
		 caller.node[0] ? caller.node : "none");

	/* 2. the request */
	req = istio__v1__auth__istio_certificate_request__unpack(NULL, r->msg.len, r->msg.buf);
	if (!req) {
		fail(s, out, who, GRPC_INVALID_ARGUMENT, CA_REF_BAD_MESSAGE,
		     "the request is not an istio.v1.auth.IstioCertificateRequest");
		goto out;
	}

	/* 3. which identity, and may the caller have it */
	imp = impersonated(req->metadata);
	if (!is_node_agent(s, &caller) && !(s->o.allow_own && !imp)) {
		fail(s, out, who, GRPC_PERMISSION_DENIED, CA_REF_NOT_NODE_AGENT,
		     "service account %s/%s is not a trusted node agent of this CA",
		     caller.ns, caller.sa);
		goto out;
	}
	if (imp) {
		if (spiffe_parse(imp, td, sizeof(td), ns, sizeof(ns), sa, sizeof(sa))) {
			fail(s, out, who, GRPC_INVALID_ARGUMENT, CA_REF_BAD_IDENTITY,
			     "%s is not spiffe://<trust domain>/ns/<ns>/sa/<sa>", IMPERSONATED);
			goto out;
		}
		if (strcmp(td, s->o.td)) {
			fail(s, out, who, GRPC_PERMISSION_DENIED, CA_REF_OTHER_TRUST_DOMAIN,
			     "%s is not in trust domain %s", IMPERSONATED, s->o.td);
			goto out;
		}
		if (!caller.node[0]) {
			fail(s, out, who, GRPC_PERMISSION_DENIED, CA_REF_NO_NODE,
			     "the caller's token is bound to no pod, so its node is unknown: "
			     "use a projected service-account token");
			goto out;
		}
		ar = s->o.authz.pod_on_node(s->o.authz.arg, caller.node, ns, sa, why, sizeof(why));
		if (ar != CA_AUTH_OK) {
			fail(s, out, who, ar == CA_AUTH_UNAVAILABLE ? GRPC_UNAVAILABLE :
				GRPC_PERMISSION_DENIED, ar == CA_AUTH_UNAVAILABLE ?
				CA_REF_API_UNAVAILABLE : CA_REF_NO_POD_ON_NODE, "%s", why);
			goto out;
		}
	} else {
		strcpy(ns, caller.ns);
		strcpy(sa, caller.sa);
	}
	if (spiffe_id(id, sizeof(id), s->o.td, ns, sa)) {
		fail(s, out, who, GRPC_INVALID_ARGUMENT, CA_REF_BAD_IDENTITY,
		     "no SPIFFE ID for %s/%s", ns, sa);
		goto out;
	}

	/* 4. the CSR */
	cf = csr_check(req->csr ? req->csr : "", req->csr ? strlen(req->csr) : 0, id, s->o.td,
		       &key, why, sizeof(why));
	if (cf != CSR_OK) {
		fail(s, out, who, GRPC_INVALID_ARGUMENT, csr_ref(cf), "%s", why);
		goto out;
	}

	/* 5. how long */
	if (req->validity_duration < 0) {
		fail(s, out, who, GRPC_INVALID_ARGUMENT, CA_REF_BAD_VALIDITY,
		     "validity_duration %lld s is negative", (long long)req->validity_duration);
		goto out;
	}
	lifetime = s->o.max_ttl_s;
	if (req->validity_duration > 0 && req->validity_duration < lifetime)
		lifetime = (long)req->validity_duration;
	else if (req->validity_duration > lifetime)
		s->capped++;
	issue(s, out, who, key, id, lifetime);
out:
	X509_PUBKEY_free(key);
	if (req)
		istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s->sign_us += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 +
				 (t1.tv_nsec - t0.tv_nsec) / 1000);
}
