/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The checks a CA makes of a workload's certificate signing request
 * before it certifies the request's key (the CA service, skmesh-ca):
 *
 * - one PEM PKCS#10 request, at most CSR_MAX_PEM bytes, whose signature
 *   verifies with its own key (the caller holds the private key);
 * - the key is ECDSA P-256 or P-384, or RSA of 2048 to 4096 bits;
 * - it asks for exactly one subjectAltName, a URI equal to the identity
 *   granted (a SPIFFE ID of the CA's trust domain), and nothing else in
 *   its SAN; no basicConstraints CA:TRUE and no keyCertSign/cRLSign.
 *
 * Whatever else the request asks for is ignored: the certificate's
 * fields are the CA's (mesh_ca_sign), only the key comes from the CSR.
 */
#ifndef SKM_CSR_H
#define SKM_CSR_H

#include <stddef.h>

#include <openssl/x509.h>

#define CSR_MAX_PEM	(64U << 10)

enum csr_fail {
	CSR_OK = 0,
	CSR_BAD_PEM,		/* not one PEM PKCS#10 request, or too big */
	CSR_BAD_SIGNATURE,	/* its self-signature does not verify */
	CSR_BAD_KEY,		/* key type or size not allowed */
	CSR_BAD_SAN,		/* not exactly one URI SAN and nothing else */
	CSR_SAN_MISMATCH,	/* the URI is not the granted identity */
	CSR_OTHER_TD,		/* ... and names another trust domain */
	CSR_ASKS_CA,		/* CA:TRUE, keyCertSign or cRLSign */
	CSR_FAIL_COUNT,
};

/* Short name of a reason, for metrics labels ("bad_pem", ...). */
const char *csr_fail_name(enum csr_fail f);

/*
 * Checks the request PEM (LEN bytes, need not be NUL-terminated) against
 * identity WANT_ID of trust domain TD. On CSR_OK the request's
 * subjectPublicKeyInfo is in *PUB (the caller frees it with
 * X509_PUBKEY_free; X509_PUBKEY_get0() gives its key); otherwise *PUB is
 * NULL and WHY says what is wrong in one line (no key material in it).
 */
enum csr_fail csr_check(const char *pem, size_t len, const char *want_id, const char *td,
			X509_PUBKEY **pub, char *why, size_t whylen);

#endif /* SKM_CSR_H */
