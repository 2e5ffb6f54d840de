// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A workload CSR's checks (csr.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "csr.h"

static const char *const fail_names[CSR_FAIL_COUNT] = {
	"ok", "bad_pem", "bad_signature", "bad_key", "bad_san", "san_mismatch",
	"other_trust_domain", "asks_ca",
};

const char *csr_fail_name(enum csr_fail f)
{
	return (unsigned int)f < CSR_FAIL_COUNT ? fail_names[f] : "unknown";
}

static enum csr_fail say(enum csr_fail f, char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static enum csr_fail say(enum csr_fail f, char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return f;
}

static enum csr_fail key_ok(EVP_PKEY *k, char *why, size_t whylen)
{
	int bits = EVP_PKEY_get_bits(k);
	char curve[64];
	size_t n;

	switch (EVP_PKEY_get_base_id(k)) {
	case EVP_PKEY_EC:
		if (!EVP_PKEY_get_utf8_string_param(k, "group", curve, sizeof(curve), &n))
			return say(CSR_BAD_KEY, why, whylen, "EC key without a named curve");
		if (strcmp(curve, "prime256v1") && strcmp(curve, "P-256") &&
		    strcmp(curve, "secp384r1") && strcmp(curve, "P-384"))
			return say(CSR_BAD_KEY, why, whylen,
				   "EC curve %s: only P-256 and P-384 are accepted", curve);
		return CSR_OK;
	case EVP_PKEY_RSA:
		if (bits < 2048 || bits > 4096)
			return say(CSR_BAD_KEY, why, whylen,
				   "RSA key of %d bits: 2048 to 4096 are accepted", bits);
		return CSR_OK;
	default:
		return say(CSR_BAD_KEY, why, whylen,
			   "key type %s: only ECDSA (P-256, P-384) and RSA are accepted",
			   OBJ_nid2sn(EVP_PKEY_get_base_id(k)));
	}
}

/* The extension NID of EXTS: 1 and *OUT decoded (NULL when absent: 0),
 * -1 when it appears twice or does not decode. */
static int one_ext(const STACK_OF(X509_EXTENSION) *exts, int nid, void **out)
{
	int at = X509v3_get_ext_by_NID(exts, nid, -1);

	*out = NULL;
	if (at < 0)
		return 0;
	if (X509v3_get_ext_by_NID(exts, nid, at) >= 0)
		return -1;
	*out = X509V3_EXT_d2i(X509v3_get_ext(exts, at));
	return *out ? 1 : -1;
}

/* The SPIFFE trust domain of URI into TD (empty when it is no SPIFFE ID). */
static void uri_td(const char *uri, size_t n, char *td, size_t tdlen)
{
	const char *end;
	size_t l;

	td[0] = 0;
	if (n < 9 || strncmp(uri, "spiffe://", 9))
		return;
	end = memchr(uri + 9, '/', n - 9);
	l = (end ? (size_t)(end - uri) : n) - 9;
	if (l < tdlen) {
		memcpy(td, uri + 9, l);
		td[l] = 0;
	}
}

static enum csr_fail check_exts(X509_REQ *req, const char *want_id, const char *td,
				char *why, size_t whylen)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	BASIC_CONSTRAINTS *bc = NULL;
	ASN1_BIT_STRING *ku = NULL;
	GENERAL_NAMES *sans = NULL;
	const GENERAL_NAME *g;
	enum csr_fail f = CSR_OK;
	const char *uri;
	char other[256];
	int n;

	if (one_ext(exts, NID_basic_constraints, (void **)&bc) < 0 ||
	    one_ext(exts, NID_key_usage, (void **)&ku) < 0) {
		f = say(CSR_BAD_PEM, why, whylen, "CSR has a malformed or repeated extension");
		goto out;
	}
	if (bc && bc->ca) {
		f = say(CSR_ASKS_CA, why, whylen,
			"CSR asks for basicConstraints CA:TRUE: workload certificates are never CAs");
		goto out;
	}
	if (ku && (ASN1_BIT_STRING_get_bit(ku, 5) || ASN1_BIT_STRING_get_bit(ku, 6))) {
		f = say(CSR_ASKS_CA, why, whylen,
			"CSR asks for keyCertSign or cRLSign: workload certificates are never CAs");
		goto out;
	}
	n = one_ext(exts, NID_subject_alt_name, (void **)&sans);
	if (n <= 0 || sk_GENERAL_NAME_num(sans) != 1) {
		f = say(CSR_BAD_SAN, why, whylen,
			"CSR must ask for exactly one subjectAltName, the URI %s", want_id);
		goto out;
	}
	g = sk_GENERAL_NAME_value(sans, 0);
	if (g->type != GEN_URI) {
		f = say(CSR_BAD_SAN, why, whylen,
			"CSR's subjectAltName is not a URI: it must be %s", want_id);
		goto out;
	}
	uri = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
	n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
	if ((size_t)n == strlen(want_id) && !memcmp(uri, want_id, (size_t)n))
		goto out;
	uri_td(uri, (size_t)n, other, sizeof(other));
	/* the URI is the caller's: never printed, it may be anything */
	if (other[0] && strcmp(other, td))
		f = say(CSR_OTHER_TD, why, whylen,
			"CSR's URI SAN is in another trust domain: this CA signs %s only", want_id);
	else
		f = say(CSR_SAN_MISMATCH, why, whylen,
			"CSR's URI SAN is not the identity granted, %s", want_id);
out:
	BASIC_CONSTRAINTS_free(bc);
	ASN1_BIT_STRING_free(ku);
	GENERAL_NAMES_free(sans);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return f;
}

enum csr_fail csr_check(const char *pem, size_t len, const char *want_id, const char *td,
			X509_PUBKEY **pub, char *why, size_t whylen)
{
	X509_REQ *req = NULL;
	EVP_PKEY *k = NULL;
	enum csr_fail f;
	BIO *b;

	*pub = NULL;
	if (len > CSR_MAX_PEM)
		return say(CSR_BAD_PEM, why, whylen, "CSR of %zu bytes: at most %u", len,
			   CSR_MAX_PEM);
	b = BIO_new_mem_buf(pem, (int)len);
	if (b)
		req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
	BIO_free(b);
	ERR_clear_error();
	if (!req)
		return say(CSR_BAD_PEM, why, whylen,
			   "csr is not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)");
	k = X509_REQ_get0_pubkey(req);
	if (!k) {
		f = say(CSR_BAD_KEY, why, whylen, "CSR's public key does not decode");
		goto out;
	}
	f = key_ok(k, why, whylen);
	if (f)
		goto out;
	if (X509_REQ_verify(req, k) != 1) {
		ERR_clear_error();
		f = say(CSR_BAD_SIGNATURE, why, whylen,
			"CSR's signature does not verify with its own key");
		goto out;
	}
	f = check_exts(req, want_id, td, why, whylen);
out:
	if (f == CSR_OK) {
		*pub = X509_PUBKEY_dup(X509_REQ_get_X509_PUBKEY(req));
		if (!*pub)
			f = say(CSR_BAD_KEY, why, whylen, "out of memory");
	}
	ERR_clear_error();
	X509_REQ_free(req);
	return f;
}
