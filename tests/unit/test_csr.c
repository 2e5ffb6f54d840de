// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The CA service's CSR checks (csr.c) on requests made here with OpenSSL:
 * a good one passes and its key is the one certified by mesh_ca_sign();
 * each way a request can ask for too much, or lie, gets its own reason.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "csr.h"
#include "unit.h"

#define TD	"cluster.local"
#define WEB	"spiffe://cluster.local/ns/shop/sa/web"

/* A CSR of KEY (a new P-256 one when NULL) with EXTS ("name=value" in
 * openssl.cnf syntax, NULL-terminated), as PEM (malloc'ed). TAMPER flips a
 * bit of its signature. */
static char *make_csr(EVP_PKEY *key, const char *const *exts, int tamper)
{
	X509_REQ *req = X509_REQ_new();
	STACK_OF(X509_EXTENSION) *sk = sk_X509_EXTENSION_new_null();
	EVP_PKEY *k = key ? key : EVP_EC_gen("P-256");
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long len;

	assert_non_null(req);
	assert_non_null(k);
	X509_REQ_set_version(req, 0);
	X509_REQ_set_pubkey(req, k);
	for (; exts && *exts; exts++) {
		char name[64];
		const char *eq = strchr(*exts, '=');
		X509_EXTENSION *e;

		assert_non_null(eq);
		memcpy(name, *exts, (size_t)(eq - *exts));
		name[eq - *exts] = 0;
		e = X509V3_EXT_nconf(NULL, NULL, name, eq + 1);
		assert_non_null(e);
		sk_X509_EXTENSION_push(sk, e);
	}
	if (sk_X509_EXTENSION_num(sk))
		X509_REQ_add_extensions(req, sk);
	assert_true(X509_REQ_sign(req, k, EVP_sha256()) > 0);
	if (tamper) {
		const ASN1_BIT_STRING *sig;

		X509_REQ_get0_signature(req, &sig, NULL);
		((ASN1_BIT_STRING *)sig)->data[10] ^= 1;
	}
	PEM_write_bio_X509_REQ(b, req);
	len = BIO_get_mem_data(b, &data);
	out = strndup(data, (size_t)len);
	BIO_free(b);
	sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
	X509_REQ_free(req);
	if (!key)
		EVP_PKEY_free(k);
	return out;
}

static enum csr_fail check(const char *pem, const char *want)
{
	char why[256];
	X509_PUBKEY *k = NULL;
	enum csr_fail f = csr_check(pem, strlen(pem), want, TD, &k, why, sizeof(why));

	if (f == CSR_OK)
		assert_non_null(k);
	else
		assert_null(k);
	assert_true(f == CSR_OK || why[0]);
	X509_PUBKEY_free(k);
	return f;
}

static void test_good(void **state)
{
	const char *const exts[] = { "subjectAltName=URI:" WEB, NULL };
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509_PUBKEY *got = NULL;
	char *pem = make_csr(key, exts, 0), why[256];

	(void)state;
	assert_int_equal(csr_check(pem, strlen(pem), WEB, TD, &got, why, sizeof(why)), CSR_OK);
	assert_int_equal(EVP_PKEY_eq(X509_PUBKEY_get0(got), key), 1);
	X509_PUBKEY_free(got);
	EVP_PKEY_free(key);
	free(pem);

	/* P-384 and RSA 2048 are fine too */
	key = EVP_EC_gen("P-384");
	pem = make_csr(key, exts, 0);
	assert_int_equal(check(pem, WEB), CSR_OK);
	free(pem);
	EVP_PKEY_free(key);
	key = EVP_RSA_gen(2048);
	pem = make_csr(key, exts, 0);
	assert_int_equal(check(pem, WEB), CSR_OK);
	free(pem);
	EVP_PKEY_free(key);
}

static void test_refusals(void **state)
{
	static const struct {
		const char *exts[3];
		enum csr_fail want;
	} cases[] = {
		{ { NULL }, CSR_BAD_SAN },
		{ { "subjectAltName=DNS:web.shop" }, CSR_BAD_SAN },
		{ { "subjectAltName=URI:" WEB ",DNS:web.shop" }, CSR_BAD_SAN },
		{ { "subjectAltName=URI:" WEB ",URI:spiffe://cluster.local/ns/shop/sa/db" },
		  CSR_BAD_SAN },
		{ { "subjectAltName=URI:spiffe://cluster.local/ns/shop/sa/db" }, CSR_SAN_MISMATCH },
		{ { "subjectAltName=URI:spiffe://cluster.local/ns/shop/sa/web/x" },
		  CSR_SAN_MISMATCH },
		{ { "subjectAltName=URI:https://cluster.local/ns/shop/sa/web" }, CSR_SAN_MISMATCH },
		{ { "subjectAltName=URI:spiffe://other.td/ns/shop/sa/web" }, CSR_OTHER_TD },
		{ { "subjectAltName=URI:" WEB, "basicConstraints=critical,CA:TRUE" },
		  CSR_ASKS_CA },
		{ { "subjectAltName=URI:" WEB, "keyUsage=keyCertSign" }, CSR_ASKS_CA },
		{ { "subjectAltName=URI:" WEB, "keyUsage=digitalSignature,cRLSign" },
		  CSR_ASKS_CA },
		/* CA:FALSE asked is no problem */
		{ { "subjectAltName=URI:" WEB, "basicConstraints=CA:FALSE" }, CSR_OK },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *pem = make_csr(NULL, cases[i].exts, 0);

		if (check(pem, WEB) != cases[i].want)
			fail_msg("case %zu (%s): got %s, want %s", i,
				 cases[i].exts[0] ? cases[i].exts[0] : "no SAN",
				 csr_fail_name(check(pem, WEB)), csr_fail_name(cases[i].want));
		free(pem);
	}
}

static void test_bad_input(void **state)
{
	const char *const exts[] = { "subjectAltName=URI:" WEB, NULL };
	EVP_PKEY *small = EVP_RSA_gen(1024);
	char *pem, *big;

	(void)state;
	pem = make_csr(NULL, exts, 1);
	assert_int_equal(check(pem, WEB), CSR_BAD_SIGNATURE);
	free(pem);

	pem = make_csr(small, exts, 0);
	assert_int_equal(check(pem, WEB), CSR_BAD_KEY);
	free(pem);
	EVP_PKEY_free(small);
	small = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(small);
	{
		/* Ed25519 signs without a digest: made by hand here */
		X509_REQ *req = X509_REQ_new();
		STACK_OF(X509_EXTENSION) *sk = sk_X509_EXTENSION_new_null();
		BIO *b = BIO_new(BIO_s_mem());
		char *data;
		long len;

		X509_REQ_set_pubkey(req, small);
		sk_X509_EXTENSION_push(sk, X509V3_EXT_nconf(NULL, NULL, "subjectAltName",
							    "URI:" WEB));
		X509_REQ_add_extensions(req, sk);
		assert_true(X509_REQ_sign(req, small, NULL) > 0);
		PEM_write_bio_X509_REQ(b, req);
		len = BIO_get_mem_data(b, &data);
		pem = strndup(data, (size_t)len);
		assert_int_equal(check(pem, WEB), CSR_BAD_KEY);
		free(pem);
		BIO_free(b);
		sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
		X509_REQ_free(req);
	}
	EVP_PKEY_free(small);

	assert_int_equal(check("", WEB), CSR_BAD_PEM);
	assert_int_equal(check("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
			       "-----END CERTIFICATE REQUEST-----\n", WEB), CSR_BAD_PEM);
	big = malloc(CSR_MAX_PEM + 2);
	assert_non_null(big);
	memset(big, 'A', CSR_MAX_PEM + 1);
	big[CSR_MAX_PEM + 1] = 0;
	assert_int_equal(check(big, WEB), CSR_BAD_PEM);
	free(big);
	assert_string_equal(csr_fail_name(CSR_ASKS_CA), "asks_ca");
}

int run_csr_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_bad_input),
	};

	return cmocka_run_group_tests_name("csr", tests, NULL, NULL);
}
