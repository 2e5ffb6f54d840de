// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Mesh identity: SPIFFE IDs, the root CA and workload certificates (their
 * X.509 profile and files), and real TLS handshakes between contexts of
 * certs.c over socket pairs, each check that must refuse a peer, and the
 * certificate manager's renewal, backoff and trust bundle rotation.
 */
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "certs.h"
#include "unit.h"

#define TD	"cluster.local"
#define DAY	(24 * 3600)

/* --- fixture: a folder with one CA of trust domain TD ----------------- */

struct fx {
	char dir[64];		/* the test's folder */
	char ca_dir[96];	/* DIR/ca */
	struct mesh_ca *ca;
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* DIR/NAME as a new string in BUF. */
static const char *at(char *buf, size_t len, const char *dir, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
	return buf;
}

static void new_ca(const char *dir, const char *td, int days, struct mesh_ca **ca)
{
	char err[256];

	if (ca_init(dir, td, days, err, sizeof(err)))
		fail_msg("ca_init %s: %s", dir, err);
	if (ca && mesh_ca_load(dir, ca, err, sizeof(err)))
		fail_msg("mesh_ca_load %s: %s", dir, err);
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/skm-certs-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	at(f->ca_dir, sizeof(f->ca_dir), f->dir, "ca");
	new_ca(f->ca_dir, TD, 3650, &f->ca);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	mesh_ca_free(f->ca);
	rm_tree(f->dir);
	free(f);
	return 0;
}

static struct wl_cert *issue(struct mesh_ca *ca, const char *td, const char *ns,
			     const char *sa, time_t now, int lifetime)
{
	struct wl_cert *c = NULL;
	char err[256];

	if (mesh_ca_issue(ca, td, ns, sa, now, lifetime, &c, err, sizeof(err)))
		fail_msg("issue %s/%s: %s", ns, sa, err);
	return c;
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf = calloc(1, 16384);

	assert_non_null(fp);
	assert_non_null(buf);
	assert_true(fread(buf, 1, 16383, fp) > 0);
	fclose(fp);
	return buf;
}

static void spit(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	fclose(fp);
}

static int count_str(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static int same_serial(X509 *a, X509 *b)
{
	return !ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(b));
}

/* --- handshakes over a socket pair ------------------------------------ */

struct hs {
	SSL *s, *c;
	int fd[2];
	int s_rc, c_rc;		/* 1 done, -1 failed, 0 not yet */
	int ok;			/* both done and data went both ways */
};

static void hs_step(SSL *ssl, int *rc)
{
	int r, e;

	if (*rc)
		return;
	r = SSL_do_handshake(ssl);
	if (r == 1) {
		*rc = 1;
		return;
	}
	e = SSL_get_error(ssl, r);
	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
		*rc = -1;
}

/* Sends 4 bytes from W to R; 0 when they arrived. */
static int hs_xfer(SSL *w, SSL *r)
{
	char buf[8];

	if (SSL_write(w, "ping", 4) != 4)
		return -1;
	for (int i = 0; i < 100; i++) {
		int n = SSL_read(r, buf, sizeof(buf));

		if (n == 4)
			return memcmp(buf, "ping", 4) ? -1 : 0;
		if (SSL_get_error(r, n) != SSL_ERROR_WANT_READ)
			return -1;
	}
	return -1;
}

/* New server and client SSLs of SCTX / CCTX on a socket pair; the client
 * not yet told whom to expect. */
static void hs_new_raw(struct hs *h, SSL_CTX *sctx, SSL_CTX *cctx)
{
	memset(h, 0, sizeof(*h));
	assert_non_null(sctx);
	assert_non_null(cctx);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, h->fd), 0);
	h->s = SSL_new(sctx);
	h->c = SSL_new(cctx);
	assert_non_null(h->s);
	assert_non_null(h->c);
	assert_int_equal(SSL_set_fd(h->s, h->fd[0]), 1);
	assert_int_equal(SSL_set_fd(h->c, h->fd[1]), 1);
	SSL_set_accept_state(h->s);
	SSL_set_connect_state(h->c);
}

/* ... the client accepting any server of the trust domain. */
static void hs_new(struct hs *h, SSL_CTX *sctx, SSL_CTX *cctx)
{
	hs_new_raw(h, sctx, cctx);
	assert_int_equal(tls_expect_peer(h->c, NULL), 0);
}

/* Runs the handshake to its end on both sides, then data both ways. */
static void hs_run(struct hs *h)
{
	for (int i = 0; i < 200 && (!h->s_rc || !h->c_rc); i++) {
		hs_step(h->c, &h->c_rc);
		hs_step(h->s, &h->s_rc);
	}
	if (h->s_rc == 1 && h->c_rc == 1) {
		h->ok = !hs_xfer(h->c, h->s) && !hs_xfer(h->s, h->c);
	} else if (h->c_rc == 1) {
		char b;

		/* TLS 1.3: the client is done before the server judged its
		 * certificate; the server's alert reaches it on reading */
		assert_true(SSL_read(h->c, &b, 1) <= 0);
	}
	ERR_clear_error();
}

static void hs_free(struct hs *h)
{
	SSL_free(h->s);
	SSL_free(h->c);
	close(h->fd[0]);
	close(h->fd[1]);
}

/* tls_verify_reason() of each side after the last handshake() */
static enum tls_fail last_server_reason, last_client_reason;

/* One handshake of SCTX and CCTX (client expecting EXPECT when given):
 * whether it worked; the reasons of each side into SWHY / CWHY. */
static int handshake(SSL_CTX *sctx, SSL_CTX *cctx, const char *expect,
		     char *swhy, char *cwhy)
{
	struct hs h;
	const char *w;

	hs_new(&h, sctx, cctx);
	assert_int_equal(tls_expect_peer(h.c, expect), 0);
	hs_run(&h);
	w = tls_verify_error(h.s);
	snprintf(swhy, 512, "%s", w ?: "");
	w = tls_verify_error(h.c);
	snprintf(cwhy, 512, "%s", w ?: "");
	last_server_reason = tls_verify_reason(h.s);
	last_client_reason = tls_verify_reason(h.c);
	hs_free(&h);
	return h.ok;
}

/* The server side must fail with a reason containing WANT, and a client
 * of certs.c learns it was refused. */
static void expect_server_refuses(SSL_CTX *sctx, SSL_CTX *cctx, const char *want)
{
	char swhy[512], cwhy[512];

	assert_false(handshake(sctx, cctx, NULL, swhy, cwhy));
	if (!strstr(swhy, want))
		fail_msg("server said '%s', expected '%s' (client: '%s')", swhy, want, cwhy);
	if (SSL_CTX_get_info_callback(cctx)) {
		assert_non_null(strstr(cwhy, "peer refused the handshake"));
		assert_int_equal(last_client_reason, TLS_FAIL_PEER_ALERT);
	}
	/* the reason code agrees with the words (meshd counts by the code) */
	{
		static const struct { const char *words; enum tls_fail r; } map[] = {
			{ "no client certificate", TLS_FAIL_NO_CLIENT_CERT },
			{ "not signed by a mesh root", TLS_FAIL_UNTRUSTED },
			{ "trust domain", TLS_FAIL_WRONG_TD },
			{ "expired", TLS_FAIL_EXPIRED },
			{ "not yet valid", TLS_FAIL_EXPIRED },
			{ "SPIFFE", TLS_FAIL_NO_SPIFFE },
		};

		for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
			if (strstr(want, map[i].words))
				assert_int_equal(last_server_reason, map[i].r);
		assert_int_not_equal(last_server_reason, TLS_FAIL_NONE);
	}
}

/* --- SPIFFE IDs ------------------------------------------------------- */

static void test_spiffe_id(void **state)
{
	char buf[SKM_SPIFFE_MAX], small[20];

	assert_int_equal(spiffe_id(buf, sizeof(buf), TD, "shop", "web"), 0);
	assert_string_equal(buf, "spiffe://cluster.local/ns/shop/sa/web");
	assert_int_equal(spiffe_id(small, sizeof(small), TD, "shop", "web"), -ENAMETOOLONG);
	/* exactly fits / one short */
	assert_int_equal(spiffe_id(buf, 38, TD, "shop", "web"), 0);
	assert_int_equal(spiffe_id(buf, 37, TD, "shop", "web"), -ENAMETOOLONG);
	assert_int_equal(spiffe_id(buf, sizeof(buf), "", "shop", "web"), -EINVAL);
	assert_int_equal(spiffe_id(buf, sizeof(buf), TD, "", "web"), -EINVAL);
	assert_int_equal(spiffe_id(buf, sizeof(buf), TD, "shop", ""), -EINVAL);
	assert_int_equal(spiffe_id(buf, sizeof(buf), "Cluster.local", "a", "b"), -EINVAL);
	assert_int_equal(spiffe_id(buf, sizeof(buf), TD, "a/b", "c"), -EINVAL);
	assert_int_equal(spiffe_id(buf, sizeof(buf), TD, "..", "c"), -EINVAL);
	assert_int_equal(spiffe_id(buf, sizeof(buf), TD, "a", "c d"), -EINVAL);
	assert_int_equal(spiffe_id(buf, sizeof(buf), TD, "MixedCase", "a_b-c.d"), 0);
}

static void test_spiffe_parse(void **state)
{
	static const char *const bad[] = {
		"", "spiffe://", "spiffe://cluster.local", "spiffe://cluster.local/",
		"http://cluster.local/ns/a/sa/b", "SPIFFE://cluster.local/ns/a/sa/b",
		"spiffe:///ns/a/sa/b", "spiffe://cluster.local/ns//sa/b",
		"spiffe://cluster.local/ns/a/sa/", "spiffe://cluster.local/ns/a/sa",
		"spiffe://cluster.local/sa/a/ns/b", "spiffe://cluster.local/ns/a/sa/b/",
		"spiffe://cluster.local/ns/a/sa/b/c", "spiffe://cluster.local/ns/../sa/b",
		"spiffe://cluster.local/ns/a/sa/b?x=1", "spiffe://cluster.local/ns/a/sa/b#f",
		"spiffe://Cluster.local/ns/a/sa/b", "spiffe://user@td/ns/a/sa/b",
		"spiffe://td:8080/ns/a/sa/b", "spiffe://cluster.local/ns/a/xx/b",
	};
	char td[64], ns[64], sa[64], tiny[4];

	assert_int_equal(spiffe_parse("spiffe://cluster.local/ns/shop/sa/web",
				      td, sizeof(td), ns, sizeof(ns), sa, sizeof(sa)), 0);
	assert_string_equal(td, TD);
	assert_string_equal(ns, "shop");
	assert_string_equal(sa, "web");
	/* any output may be left out */
	assert_int_equal(spiffe_parse("spiffe://a.b/ns/x/sa/y", NULL, 0, ns, sizeof(ns),
				      NULL, 0), 0);
	assert_string_equal(ns, "x");
	assert_int_equal(spiffe_parse("spiffe://a.b/ns/x/sa/y", NULL, 0, NULL, 0,
				      NULL, 0), 0);
	assert_int_equal(spiffe_parse("spiffe://a.b/ns/xyzw/sa/y", NULL, 0, tiny,
				      sizeof(tiny), NULL, 0), -ENAMETOOLONG);
	assert_int_equal(spiffe_parse("spiffe://a.b/ns/xyz/sa/y", NULL, 0, tiny,
				      sizeof(tiny), NULL, 0), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (spiffe_parse(bad[i], td, sizeof(td), ns, sizeof(ns), sa, sizeof(sa)) != -EINVAL)
			fail_msg("'%s' parsed as a SPIFFE ID", bad[i]);
	assert_int_equal(spiffe_parse(NULL, NULL, 0, NULL, 0, NULL, 0), -EINVAL);
}

/* --- the root CA ------------------------------------------------------ */

static void test_ca_init(void **state)
{
	struct fx *f = *state;
	char path[160], err[256], *key, *again;
	X509 *x;
	FILE *fp;
	EVP_PKEY *pub;
	GENERAL_NAMES *gens;
	ASN1_BIT_STRING *ku;
	BASIC_CONSTRAINTS *bc;
	char cn[128];
	int crit;

	assert_int_equal(mode_of(f->ca_dir), 0700);
	assert_int_equal(mode_of(at(path, sizeof(path), f->ca_dir, SKM_CA_KEY_FILE)), 0600);
	key = slurp(path);
	assert_non_null(strstr(key, "-----BEGIN PRIVATE KEY-----"));	/* PKCS#8 */
	assert_int_equal(mode_of(at(path, sizeof(path), f->ca_dir, SKM_CA_CERT_FILE)), 0644);

	fp = fopen(path, "r");
	assert_non_null(fp);
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(x);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
	assert_string_equal(cn, "skmesh root CA " TD);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_organizationName, cn, sizeof(cn));
	assert_string_equal(cn, "skmesh");
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
	assert_int_equal(X509_check_ca(x), 1);
	bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_true(bc->ca);
	assert_int_equal(crit, 1);
	BASIC_CONSTRAINTS_free(bc);
	ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
	assert_non_null(ku);
	assert_int_equal(crit, 1);
	ASN1_BIT_STRING_free(ku);
	assert_int_equal(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_non_null(X509_get0_subject_key_id(x));
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	assert_non_null(gens);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
	assert_string_equal(ASN1_STRING_get0_data(sk_GENERAL_NAME_value(gens, 0)->d.uniformResourceIdentifier),
			    "spiffe://" TD);
	GENERAL_NAMES_free(gens);
	/* 128-bit random serial (the top bit clear: positive, 16 bytes) */
	assert_int_equal(ASN1_STRING_length(X509_get0_serialNumber(x)), 16);
	pub = X509_get0_pubkey(x);
	assert_true(EVP_PKEY_is_a(pub, "EC"));
	assert_int_equal(EVP_PKEY_get_bits(pub), 256);
	assert_int_equal(X509_verify(x, pub), 1);
	/* 3650 days */
	assert_true(X509_cmp_time(X509_get0_notAfter(x), &(time_t){ time(NULL) + 3649L * DAY }) > 0);
	assert_true(X509_cmp_time(X509_get0_notAfter(x), &(time_t){ time(NULL) + 3651L * DAY }) < 0);
	X509_free(x);

	/* never over an existing CA: the key stays as it was */
	assert_int_equal(ca_init(f->ca_dir, TD, 10, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "refusing to overwrite"));
	again = slurp(at(path, sizeof(path), f->ca_dir, SKM_CA_KEY_FILE));
	assert_string_equal(key, again);
	free(again);
	free(key);

	/* a lone certificate is not overwritten either */
	at(path, sizeof(path), f->ca_dir, SKM_CA_KEY_FILE);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(ca_init(f->ca_dir, TD, 10, err, sizeof(err)), -EEXIST);
	assert_int_equal(access(path, F_OK), -1);

	at(path, sizeof(path), f->dir, "ca2");
	assert_int_equal(ca_init(path, "Bad/TD", 10, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "trust domain"));
	assert_int_equal(ca_init(path, TD, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(access(path, F_OK), -1);	/* nothing made */
	assert_int_equal(ca_init("/proc/no/such", TD, 1, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "/proc/no/such"));
}

static void test_ca_load_errors(void **state)
{
	struct fx *f = *state;
	char other[96], path[160], src[160], err[256];
	struct mesh_ca *ca = NULL;
	char *pem;

	at(other, sizeof(other), f->dir, "nothing");
	assert_int_equal(mesh_ca_load(other, &ca, err, sizeof(err)), -ENOENT);
	assert_null(ca);
	assert_non_null(strstr(err, SKM_CA_CERT_FILE));

	/* the key of another CA */
	at(other, sizeof(other), f->dir, "other");
	new_ca(other, TD, 1, NULL);
	pem = slurp(at(src, sizeof(src), other, SKM_CA_KEY_FILE));
	spit(at(path, sizeof(path), f->ca_dir, SKM_CA_KEY_FILE), pem);
	free(pem);
	assert_int_equal(mesh_ca_load(f->ca_dir, &ca, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "does not belong"));
	/* a key that is not one */
	spit(path, "garbage\n");
	assert_int_equal(mesh_ca_load(f->ca_dir, &ca, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no private key"));

	/* a trust bundle that is not PEM */
	spit(at(path, sizeof(path), other, SKM_CA_BUNDLE_FILE), "not a certificate\n");
	assert_int_equal(mesh_ca_load(other, &ca, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, SKM_CA_BUNDLE_FILE));
	assert_null(ca);
}

/* --- workload certificates -------------------------------------------- */

static void test_issue_profile(void **state)
{
	struct fx *f = *state;
	time_t now = time(NULL);
	struct wl_cert *c = issue(f->ca, TD, "shop", "web", now, 3600);
	struct wl_cert *c2 = issue(f->ca, TD, "shop", "web", now, 3600);
	struct wl_cert *bad = NULL;
	X509 *x = c->leaf;
	GENERAL_NAMES *gens;
	const GENERAL_NAME *g;
	BASIC_CONSTRAINTS *bc;
	ASN1_BIT_STRING *ku;
	char err[256];
	int crit;

	assert_string_equal(c->id, "spiffe://cluster.local/ns/shop/sa/web");
	assert_int_equal(c->not_before, now - 60);
	assert_int_equal(c->not_after, now + 3600);
	assert_int_equal(ASN1_TIME_cmp_time_t(X509_get0_notBefore(x), now - 60), 0);
	assert_int_equal(ASN1_TIME_cmp_time_t(X509_get0_notAfter(x), now + 3600), 0);
	assert_int_equal(X509_get_version(x), X509_VERSION_3);
	/* empty subject, so the SAN is critical (RFC 5280, X.509-SVID) */
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 0);
	gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	assert_non_null(gens);
	assert_int_equal(crit, 1);
	assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
	g = sk_GENERAL_NAME_value(gens, 0);
	assert_int_equal(g->type, GEN_URI);
	assert_string_equal(ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), c->id);
	GENERAL_NAMES_free(gens);
	ku = X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
	assert_int_equal(crit, 1);
	ASN1_BIT_STRING_free(ku);
	assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
	assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER | XKU_SSL_CLIENT);
	bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
	assert_non_null(bc);
	assert_false(bc->ca);
	BASIC_CONSTRAINTS_free(bc);
	assert_int_equal(X509_check_ca(x), 0);
	assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(x),
					       X509_get0_subject_key_id(c->issuer)), 0);
	assert_int_equal(X509_check_issued(c->issuer, x), X509_V_OK);
	assert_int_equal(X509_verify(x, X509_get0_pubkey(c->issuer)), 1);
	assert_int_equal(X509_check_private_key(x, c->key), 1);
	assert_true(EVP_PKEY_is_a(c->key, "EC"));
	assert_int_equal(EVP_PKEY_get_bits(c->key), 256);
	assert_int_equal(ASN1_STRING_length(X509_get0_serialNumber(x)), 16);

	/* a fresh key and serial for every certificate */
	assert_false(same_serial(c->leaf, c2->leaf));
	assert_int_equal(EVP_PKEY_eq(c->key, c2->key), 0);

	assert_int_equal(mesh_ca_issue(f->ca, TD, "a/b", "web", now, 3600, &bad, err,
				       sizeof(err)), -EINVAL);
	assert_null(bad);
	assert_int_equal(mesh_ca_issue(f->ca, TD, "shop", "web", now, 0, &bad, err,
				       sizeof(err)), -EINVAL);
	/* the CA's own end: nothing is issued past it */
	assert_int_equal(mesh_ca_issue(f->ca, TD, "shop", "web", now + 3651L * DAY, 3600,
				       &bad, err, sizeof(err)), -EKEYEXPIRED);
	assert_non_null(strstr(err, "CA expired"));
	wl_cert_free(c);
	wl_cert_free(c2);
}

static void test_wl_cert_write(void **state)
{
	struct fx *f = *state;
	struct wl_cert *c = issue(f->ca, TD, "shop", "web", time(NULL), 3600);
	struct wl_cert *c2 = issue(f->ca, TD, "shop", "web", time(NULL), 3600);
	char out[96], path[160], *pem;
	EVP_PKEY *key;
	X509 *x;
	FILE *fp;

	at(out, sizeof(out), f->dir, "out");
	assert_int_equal(wl_cert_write(c, "shop", "web", out), 0);
	assert_int_equal(mode_of(out), 0700);
	assert_int_equal(mode_of(at(path, sizeof(path), out, "shop.web.key.pem")), 0600);
	pem = slurp(path);
	assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
	free(pem);
	assert_int_equal(mode_of(at(path, sizeof(path), out, "shop.web.cert.pem")), 0644);
	pem = slurp(path);
	assert_int_equal(count_str(pem, "-----BEGIN CERTIFICATE-----"), 2);
	free(pem);

	/* leaf then root */
	fp = fopen(path, "r");
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	assert_true(same_serial(x, c->leaf));
	X509_free(x);
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	assert_int_equal(X509_cmp(x, c->issuer), 0);
	X509_free(x);
	fclose(fp);

	/* replaced in place, no temporary left behind */
	assert_int_equal(wl_cert_write(c2, "shop", "web", out), 0);
	fp = fopen(at(path, sizeof(path), out, "shop.web.key.pem"), "r");
	key = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_int_equal(EVP_PKEY_eq(key, c2->key), 1);
	EVP_PKEY_free(key);
	assert_int_equal(mode_of(path), 0600);
	assert_int_equal(access(at(path, sizeof(path), out, "shop.web.key.pem.tmp"), F_OK), -1);

	assert_int_equal(wl_cert_write(c, "..", "web", out), -EINVAL);
	assert_int_equal(wl_cert_write(c, "shop", "a/b", out), -EINVAL);
	wl_cert_free(c);
	wl_cert_free(c2);
}

/* --- TLS --------------------------------------------------------------- */

/* Server ns a/sa srv, client ns b/sa cli, both of F's CA. */
struct pairctx {
	struct wl_cert *sc, *cc;
	SSL_CTX *sctx, *cctx;
};

static void pair_new(struct pairctx *p, struct mesh_ca *ca)
{
	p->sc = issue(ca, TD, "a", "srv", time(NULL), 3600);
	p->cc = issue(ca, TD, "b", "cli", time(NULL), 3600);
	p->sctx = tls_server_ctx(ca, p->sc, TD);
	p->cctx = tls_client_ctx(ca, p->cc, TD);
	assert_non_null(p->sctx);
	assert_non_null(p->cctx);
}

static void pair_free(struct pairctx *p)
{
	SSL_CTX_free(p->sctx);
	SSL_CTX_free(p->cctx);
	wl_cert_free(p->sc);
	wl_cert_free(p->cc);
}

static void test_tls_mutual(void **state)
{
	struct fx *f = *state;
	struct pairctx p;
	const unsigned char *alpn;
	unsigned int alpn_len;
	char id[SKM_SPIFFE_MAX];
	const char *suite;
	struct hs h;

	pair_new(&p, f->ca);
	hs_new(&h, p.sctx, p.cctx);
	assert_int_equal(tls_expect_peer(h.c, "spiffe://cluster.local/ns/a/sa/srv"), 0);
	assert_int_equal(tls_peer_id(h.c, id, sizeof(id)), -ENOENT);	/* not yet */
	hs_run(&h);
	assert_true(h.ok);
	assert_null(tls_verify_error(h.s));
	assert_null(tls_verify_error(h.c));
	assert_int_equal(tls_peer_id(h.s, id, sizeof(id)), 0);
	assert_string_equal(id, "spiffe://cluster.local/ns/b/sa/cli");
	assert_int_equal(tls_peer_id(h.c, id, sizeof(id)), 0);
	assert_string_equal(id, "spiffe://cluster.local/ns/a/sa/srv");
	assert_int_equal(tls_peer_id(h.c, id, 10), -ENAMETOOLONG);
	SSL_get0_alpn_selected(h.s, &alpn, &alpn_len);
	assert_int_equal(alpn_len, 2);
	assert_memory_equal(alpn, "h2", 2);
	SSL_get0_alpn_selected(h.c, &alpn, &alpn_len);
	assert_int_equal(alpn_len, 2);
	assert_memory_equal(alpn, "h2", 2);
	assert_int_equal(SSL_version(h.c), TLS1_3_VERSION);
	suite = SSL_get_cipher_name(h.c);
	assert_true(!strcmp(suite, "TLS_AES_256_GCM_SHA384") ||
		    !strcmp(suite, "TLS_AES_128_GCM_SHA256"));
	assert_null(SSL_get_servername(h.s, TLSEXT_NAMETYPE_host_name));	/* no SNI */
	hs_free(&h);

	assert_int_equal(tls_expect_peer(h.c = SSL_new(p.cctx), "not-an-id"), -EINVAL);
	SSL_free(h.c);
	pair_free(&p);
}

/* A client never told which server to expect trusts none: the check of
 * the server's identity fails closed. */
static void test_tls_client_fails_closed(void **state)
{
	struct fx *f = *state;
	struct pairctx p;
	struct hs h;
	const char *why;

	pair_new(&p, f->ca);
	hs_new_raw(&h, p.sctx, p.cctx);
	hs_run(&h);
	assert_false(h.ok);
	assert_int_not_equal(h.c_rc, 1);
	why = tls_verify_error(h.c);
	assert_non_null(why);
	assert_non_null(strstr(why, "no identity was expected"));
	assert_int_equal(tls_verify_reason(h.c), TLS_FAIL_WRONG_PEER);
	hs_free(&h);

	/* a failed tls_expect_peer() leaves it refusing too */
	hs_new_raw(&h, p.sctx, p.cctx);
	assert_int_equal(tls_expect_peer(h.c, "spiffe://cluster.local/ns/a"), -EINVAL);
	hs_run(&h);
	assert_false(h.ok);
	assert_int_not_equal(h.c_rc, 1);
	hs_free(&h);
	pair_free(&p);
}

static void test_tls_no_client_cert(void **state)
{
	struct fx *f = *state;
	struct pairctx p;
	SSL_CTX *bare = SSL_CTX_new(TLS_client_method());

	pair_new(&p, f->ca);
	SSL_CTX_set_min_proto_version(bare, TLS1_3_VERSION);
	SSL_CTX_set_alpn_protos(bare, (const unsigned char *)"\x02h2", 3);
	expect_server_refuses(p.sctx, bare, "no client certificate");
	SSL_CTX_free(bare);
	pair_free(&p);
}

static void test_tls_other_ca(void **state)
{
	struct fx *f = *state;
	struct mesh_ca *ca2;
	struct pairctx p;
	struct wl_cert *c2;
	SSL_CTX *cctx2, *sctx2;
	char dir[96], swhy[512], cwhy[512];

	pair_new(&p, f->ca);
	new_ca(at(dir, sizeof(dir), f->dir, "ca2"), TD, 1, &ca2);
	c2 = issue(ca2, TD, "b", "cli", time(NULL), 3600);

	/* a client that trusts us but whose certificate another CA signed */
	cctx2 = tls_client_ctx(f->ca, c2, TD);
	expect_server_refuses(p.sctx, cctx2, "not signed by a mesh root");

	/* a server of another CA: the client refuses it */
	sctx2 = tls_server_ctx(f->ca, c2, TD);
	assert_false(handshake(sctx2, p.cctx, NULL, swhy, cwhy));
	assert_string_equal(cwhy, "not signed by a mesh root");

	SSL_CTX_free(cctx2);
	SSL_CTX_free(sctx2);
	wl_cert_free(c2);
	mesh_ca_free(ca2);
	pair_free(&p);
}

static void test_tls_other_trust_domain(void **state)
{
	struct fx *f = *state;
	struct pairctx p;
	struct wl_cert *c;
	SSL_CTX *cctx;

	pair_new(&p, f->ca);
	c = issue(f->ca, "other.td", "b", "cli", time(NULL), 3600);
	cctx = tls_client_ctx(f->ca, c, TD);
	expect_server_refuses(p.sctx, cctx, "trust domain other.td is not cluster.local");
	SSL_CTX_free(cctx);
	wl_cert_free(c);
	pair_free(&p);
}

static void test_tls_validity(void **state)
{
	struct fx *f = *state;
	struct pairctx p;
	struct wl_cert *old, *future;
	SSL_CTX *cctx;

	pair_new(&p, f->ca);
	old = issue(f->ca, TD, "b", "cli", time(NULL) - 3 * DAY, DAY);
	cctx = tls_client_ctx(f->ca, old, TD);
	expect_server_refuses(p.sctx, cctx, "certificate has expired");
	SSL_CTX_free(cctx);

	future = issue(f->ca, TD, "b", "cli", time(NULL) + DAY, DAY);
	cctx = tls_client_ctx(f->ca, future, TD);
	expect_server_refuses(p.sctx, cctx, "certificate is not yet valid");
	SSL_CTX_free(cctx);
	wl_cert_free(old);
	wl_cert_free(future);
	pair_free(&p);
}

/* A leaf signed by the CA of F but with a subject and no SAN at all. */
/* A leaf signed by the fixture's CA, valid for an hour, with the
 * extensions EXTS ({nid, value} pairs in openssl's config syntax, ended
 * by a 0 nid): none gives a certificate without any SAN. */
struct ext_spec {
	int nid;
	const char *value;
};

static void odd_cert(struct fx *f, struct wl_cert *c, const struct ext_spec *exts)
{
	char path[160];
	EVP_PKEY *ca_key;
	X509 *root;
	FILE *fp;
	X509 *x;
	time_t now = time(NULL);

	fp = fopen(at(path, sizeof(path), f->ca_dir, SKM_CA_KEY_FILE), "r");
	ca_key = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	fp = fopen(at(path, sizeof(path), f->ca_dir, SKM_CA_CERT_FILE), "r");
	root = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(ca_key);
	assert_non_null(root);

	memset(c, 0, sizeof(*c));
	c->key = EVP_EC_gen("P-256");
	x = X509_new();
	assert_non_null(c->key);
	assert_non_null(x);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"odd", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(root));
	ASN1_TIME_set(X509_getm_notBefore(x), now - 60);
	ASN1_TIME_set(X509_getm_notAfter(x), now + 3600);
	X509_set_pubkey(x, c->key);
	for (; exts && exts->nid; exts++) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, exts->nid, exts->value);

		assert_non_null(e);
		assert_true(X509_add_ext(x, e, -1));
		X509_EXTENSION_free(e);
	}
	assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
	c->leaf = x;
	c->issuer = root;
	EVP_PKEY_free(ca_key);
}

static void no_san_cert(struct fx *f, struct wl_cert *c)
{
	odd_cert(f, c, NULL);
}

/* SPIFFE X.509-SVID: a leaf must not be a CA (CA:FALSE) nor able to sign
 * certificates or CRLs, whatever OpenSSL makes of it. Refused both ways. */
static void test_tls_ca_leaf(void **state)
{
	static const struct ext_spec ca_true[] = {
		{ NID_subject_alt_name, "URI:spiffe://" TD "/ns/default/sa/odd" },
		{ NID_basic_constraints, "critical,CA:TRUE" },
		{ NID_key_usage, "critical,digitalSignature" },	/* no keyCertSign */
		{ 0, NULL },
	};
	static const struct ext_spec cert_sign[] = {
		{ NID_subject_alt_name, "URI:spiffe://" TD "/ns/default/sa/odd" },
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ NID_key_usage, "critical,digitalSignature,keyCertSign" },
		{ 0, NULL },
	};
	const struct ext_spec *cases[] = { ca_true, cert_sign };
	struct fx *f = *state;
	struct pairctx p;

	pair_new(&p, f->ca);
	for (size_t i = 0; i < 2; i++) {
		char swhy[512], cwhy[512];
		struct wl_cert c;
		SSL_CTX *cctx, *sctx;

		odd_cert(f, &c, cases[i]);
		cctx = tls_client_ctx(f->ca, &c, TD);
		expect_server_refuses(p.sctx, cctx, "spiffe://" TD "/ns/default/sa/odd: "
				      "the leaf certificate is a CA");
		sctx = tls_server_ctx(f->ca, &c, TD);
		assert_false(handshake(sctx, p.cctx, NULL, swhy, cwhy));
		assert_string_equal(cwhy, "spiffe://" TD "/ns/default/sa/odd: "
				    "the leaf certificate is a CA");
		SSL_CTX_free(cctx);
		SSL_CTX_free(sctx);
		X509_free(c.leaf);
		X509_free(c.issuer);
		EVP_PKEY_free(c.key);
	}
	pair_free(&p);
}

static void test_tls_no_spiffe_san(void **state)
{
	struct fx *f = *state;
	struct pairctx p;
	struct wl_cert c;
	SSL_CTX *cctx, *sctx;
	char swhy[512], cwhy[512];

	pair_new(&p, f->ca);
	no_san_cert(f, &c);
	cctx = tls_client_ctx(f->ca, &c, TD);
	expect_server_refuses(p.sctx, cctx, "no SPIFFE URI SAN");
	sctx = tls_server_ctx(f->ca, &c, TD);
	assert_false(handshake(sctx, p.cctx, NULL, swhy, cwhy));
	assert_string_equal(cwhy, "no SPIFFE URI SAN");
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
	X509_free(c.leaf);
	X509_free(c.issuer);
	EVP_PKEY_free(c.key);
	pair_free(&p);
}

static void test_tls_unexpected_server(void **state)
{
	struct fx *f = *state;
	struct pairctx p;
	char swhy[512], cwhy[512];

	pair_new(&p, f->ca);
	assert_false(handshake(p.sctx, p.cctx, "spiffe://cluster.local/ns/a/sa/other",
			       swhy, cwhy));
	assert_string_equal(cwhy, "server is spiffe://cluster.local/ns/a/sa/srv but "
			    "spiffe://cluster.local/ns/a/sa/other was expected");
	assert_non_null(strstr(swhy, "peer refused the handshake"));
	/* and the right one passes */
	assert_true(handshake(p.sctx, p.cctx, "spiffe://cluster.local/ns/a/sa/srv", swhy, cwhy));
	pair_free(&p);
}

/* The client SSL of P offering ALPN PROTOS (NULL: none), or TLS 1.2 only. */
static void client_variant(struct pairctx *p, const char *protos, int len, int tls12,
			   const char *want)
{
	struct hs h;
	const char *why;

	hs_new(&h, p->sctx, p->cctx);
	if (tls12) {
		assert_int_equal(SSL_set_min_proto_version(h.c, TLS1_2_VERSION), 1);
		assert_int_equal(SSL_set_max_proto_version(h.c, TLS1_2_VERSION), 1);
	} else {
		assert_int_equal(SSL_set_alpn_protos(h.c, (const unsigned char *)protos, len), 0);
	}
	hs_run(&h);
	assert_false(h.ok);
	assert_int_equal(h.s_rc, -1);
	why = tls_verify_error(h.s);
	if (!why || strcmp(why, want))
		fail_msg("server said '%s', expected '%s'", why ?: "(nothing)", want);
	hs_free(&h);
}

static void test_tls_alpn_and_version(void **state)
{
	struct fx *f = *state;
	struct pairctx p;
	char swhy[512], cwhy[512];

	pair_new(&p, f->ca);
	client_variant(&p, "\x08http/1.1", 9, 0, "client did not offer ALPN h2");
	client_variant(&p, NULL, 0, 0, "client did not offer ALPN h2");
	client_variant(&p, NULL, 0, 1, "peer does not offer TLS 1.3");
	/* h2 among others is fine */
	{
		struct hs h;

		hs_new(&h, p.sctx, p.cctx);
		SSL_set_alpn_protos(h.c, (const unsigned char *)"\x08http/1.1\x02h2", 12);
		hs_run(&h);
		assert_true(h.ok);
		hs_free(&h);
	}
	/* a server that does not select h2 is refused by the client */
	SSL_CTX_set_alpn_select_cb(p.sctx, NULL, NULL);
	SSL_CTX_set_client_hello_cb(p.sctx, NULL, NULL);
	assert_false(handshake(p.sctx, p.cctx, NULL, swhy, cwhy));
	assert_string_equal(cwhy, "server did not select ALPN h2");
	pair_free(&p);
}

/* --- trust bundles ------------------------------------------------------ */

/* Appends DIR_FROM's root certificate to DIR_TO's trust bundle. */
static void trust(const char *dir_to, const char *dir_from)
{
	char path[160], *pem, *old = NULL;
	char *both;

	pem = slurp(at(path, sizeof(path), dir_from, SKM_CA_CERT_FILE));
	at(path, sizeof(path), dir_to, SKM_CA_BUNDLE_FILE);
	if (!access(path, F_OK))
		old = slurp(path);
	assert_true(asprintf(&both, "%s%s", old ?: "", pem) > 0);
	spit(path, both);
	free(both);
	free(old);
	free(pem);
}

static void test_trust_bundle_two_roots(void **state)
{
	struct fx *f = *state;
	char dir_b[96], swhy[512], cwhy[512], err[256];
	struct mesh_ca *ca_b, *a2, *b2;
	struct wl_cert *sc, *cc;
	SSL_CTX *sctx, *cctx;

	new_ca(at(dir_b, sizeof(dir_b), f->dir, "ca-b"), TD, 1, &ca_b);
	sc = issue(f->ca, TD, "a", "srv", time(NULL), 3600);
	cc = issue(ca_b, TD, "b", "cli", time(NULL), 3600);

	/* separate roots: neither side trusts the other */
	sctx = tls_server_ctx(f->ca, sc, TD);
	cctx = tls_client_ctx(ca_b, cc, TD);
	assert_false(handshake(sctx, cctx, NULL, swhy, cwhy));
	assert_string_equal(cwhy, "not signed by a mesh root");
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);

	/* each folder's bundle holds the other root: both accepted */
	trust(f->ca_dir, dir_b);
	trust(dir_b, f->ca_dir);
	assert_int_equal(mesh_ca_load(f->ca_dir, &a2, err, sizeof(err)), 0);
	assert_int_equal(mesh_ca_load(dir_b, &b2, err, sizeof(err)), 0);
	sctx = tls_server_ctx(a2, sc, TD);
	cctx = tls_client_ctx(b2, cc, TD);
	mesh_ca_free(a2);	/* contexts hold their own reference */
	mesh_ca_free(b2);
	assert_true(handshake(sctx, cctx, "spiffe://cluster.local/ns/a/sa/srv", swhy, cwhy));
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);

	/* and a client of the first root still passes too */
	assert_int_equal(mesh_ca_load(f->ca_dir, &a2, err, sizeof(err)), 0);
	wl_cert_free(cc);
	cc = issue(a2, TD, "b", "cli", time(NULL), 3600);
	sctx = tls_server_ctx(a2, sc, TD);
	cctx = tls_client_ctx(a2, cc, TD);
	assert_true(handshake(sctx, cctx, NULL, swhy, cwhy));
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	mesh_ca_free(a2);
	wl_cert_free(sc);
	wl_cert_free(cc);
	mesh_ca_free(ca_b);
}

/* --- certmgr ----------------------------------------------------------- */

struct seen {
	int n;
	int failures;		/* the largest */
};

static void count_cert(const struct wl_cert *c, int failures, void *arg)
{
	struct seen *s = arg;

	s->n++;
	if (failures > s->failures)
		s->failures = failures;
}

static struct seen seen_of(struct certmgr *m)
{
	struct seen s = {};

	certmgr_foreach(m, count_cert, &s);
	return s;
}

static int warnings;

static void count_warning(const char *msg)
{
	assert_non_null(strstr(msg, "certificate of "));
	warnings++;
}

static struct certmgr *mgr_new(struct fx *f, const char *out_dir, int lifetime)
{
	struct certmgr_opts o = {
		.ca_dir = f->ca_dir, .td = TD, .out_dir = out_dir,
		.lifetime_s = lifetime, .warn = count_warning,
	};
	struct certmgr *m;
	char err[256];

	if (certmgr_new(&o, &m, err, sizeof(err)))
		fail_msg("certmgr_new: %s", err);
	return m;
}

static void test_certmgr_renewal(void **state)
{
	struct fx *f = *state;
	/* issued 13 h ago, so the renewal at half-life (12 h) is due now
	 * and both certificates are valid on the real clock */
	time_t now = time(NULL), t0 = now - 13 * 3600;
	char err[256], out[96], path[160];
	SSL_CTX *s1, *c1, *s2, *c2;
	X509 *leaf1, *peer;
	struct certmgr *m;
	struct hs live;

	at(out, sizeof(out), f->dir, "out/certs");
	assert_int_equal(mkdir(at(path, sizeof(path), f->dir, "out"), 0755), 0);
	m = mgr_new(f, out, 0);
	assert_int_equal(certmgr_tick(m, t0), 0);	/* nothing held */
	s1 = certmgr_server_ctx(m, "a", "srv", t0, err, sizeof(err));
	c1 = certmgr_client_ctx(m, "b", "cli", t0, err, sizeof(err));
	assert_non_null(s1);
	assert_non_null(c1);
	assert_ptr_equal(certmgr_server_ctx(m, "a", "srv", t0 + 1, err, sizeof(err)), s1);
	assert_null(certmgr_server_ctx(m, "a/x", "srv", t0, err, sizeof(err)));
	assert_non_null(strstr(err, "not a namespace"));
	assert_int_equal(seen_of(m).n, 2);
	assert_int_equal(certmgr_tick(m, t0), t0 + SKM_CERT_LIFETIME_S / 2);

	/* files of each identity, in a folder made 0700 */
	assert_int_equal(mode_of(out), 0700);
	assert_int_equal(mode_of(at(path, sizeof(path), out, "a.srv.key.pem")), 0600);
	assert_int_equal(mode_of(at(path, sizeof(path), out, "b.cli.cert.pem")), 0644);

	/* a connection made before the renewal keeps the old contexts */
	leaf1 = SSL_CTX_get0_certificate(s1);
	X509_up_ref(leaf1);
	hs_new(&live, s1, c1);
	assert_int_equal(certmgr_tick(m, now), now + SKM_CERT_LIFETIME_S / 2);
	s2 = certmgr_server_ctx(m, "a", "srv", now, err, sizeof(err));
	c2 = certmgr_client_ctx(m, "b", "cli", now, err, sizeof(err));
	assert_non_null(s2);
	assert_non_null(c2);
	assert_false(same_serial(SSL_CTX_get0_certificate(s2), leaf1));
	assert_int_equal(seen_of(m).failures, 0);

	hs_run(&live);
	assert_true(live.ok);
	peer = SSL_get0_peer_certificate(live.c);
	assert_true(same_serial(peer, leaf1));
	hs_free(&live);

	/* new connections get the new certificate */
	hs_new(&live, s2, c2);
	hs_run(&live);
	assert_true(live.ok);
	assert_false(same_serial(SSL_get0_peer_certificate(live.c), leaf1));
	hs_free(&live);
	X509_free(leaf1);
	certmgr_free(m);
}

static void test_certmgr_backoff(void **state)
{
	struct fx *f = *state;
	static const int waits[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300 };
	time_t t = time(NULL), half = SKM_CERT_LIFETIME_S / 2;
	char err[256], moved[96];
	struct certmgr *m = mgr_new(f, NULL, 0);
	X509 *leaf, *leaf2;
	time_t next;

	assert_non_null(certmgr_server_ctx(m, "a", "srv", t, err, sizeof(err)));
	leaf = SSL_CTX_get0_certificate(certmgr_server_ctx(m, "a", "srv", t, err, sizeof(err)));
	X509_up_ref(leaf);

	/* the CA folder disappears: the renewal at half-life still issues
	 * from the CA in memory, counts a failure and retries the folder */
	at(moved, sizeof(moved), f->dir, "ca.moved");
	assert_int_equal(rename(f->ca_dir, moved), 0);
	warnings = 0;
	t += half;
	next = certmgr_tick(m, t);
	leaf2 = SSL_CTX_get0_certificate(certmgr_server_ctx(m, "a", "srv", t, err, sizeof(err)));
	assert_false(same_serial(leaf, leaf2));
	X509_free(leaf);
	leaf = leaf2;
	X509_up_ref(leaf);
	for (size_t i = 0; i < sizeof(waits) / sizeof(waits[0]); i++) {
		assert_int_equal(next, t + waits[i]);
		assert_int_equal(seen_of(m).failures, (int)i + 1);
		assert_int_equal(warnings, (int)i + 1);
		assert_int_equal(certmgr_tick(m, t + waits[i] - 1), next);	/* not yet */
		t = next;
		next = certmgr_tick(m, t);
	}
	/* a retry does not make a new key each time */
	leaf2 = SSL_CTX_get0_certificate(certmgr_server_ctx(m, "a", "srv", t, err, sizeof(err)));
	assert_true(same_serial(leaf, leaf2));

	/* back again: failures cleared, next is the certificate's half-life */
	assert_int_equal(rename(moved, f->ca_dir), 0);
	t = next;
	next = certmgr_tick(m, t);
	assert_int_equal(seen_of(m).failures, 0);
	assert_true(next > t + 3600);
	X509_free(leaf);
	certmgr_free(m);
}

static void test_certmgr_keeps_old(void **state)
{
	struct fx *f = *state;
	/* a CA of 1 day and certificates of 3: renewing at 1.5 days fails */
	time_t t0 = time(NULL), t;
	char err[256];
	struct certmgr *m;
	X509 *leaf;

	mesh_ca_free(f->ca);
	f->ca = NULL;
	rm_tree(f->ca_dir);
	new_ca(f->ca_dir, TD, 1, NULL);
	m = mgr_new(f, NULL, 3 * DAY);
	leaf = SSL_CTX_get0_certificate(certmgr_client_ctx(m, "a", "srv", t0, err, sizeof(err)));
	X509_up_ref(leaf);
	t = certmgr_tick(m, t0);
	assert_int_equal(t, t0 + 3 * DAY / 2);

	assert_int_equal(certmgr_tick(m, t), t + 1);
	assert_int_equal(seen_of(m).failures, 1);
	assert_true(same_serial(leaf, SSL_CTX_get0_certificate(
		certmgr_client_ctx(m, "a", "srv", t, err, sizeof(err)))));
	assert_int_equal(certmgr_tick(m, t + 1), t + 3);

	/* once it expires there is nothing to give */
	t = t0 + 3 * DAY;
	assert_null(certmgr_server_ctx(m, "a", "srv", t, err, sizeof(err)));
	assert_non_null(strstr(err, "CA expired"));
	/* and a new identity cannot get one either */
	assert_null(certmgr_server_ctx(m, "c", "new", t, err, sizeof(err)));
	assert_non_null(strstr(err, "no valid certificate for c/new"));
	X509_free(leaf);
	certmgr_free(m);
}

static void test_certmgr_rotation(void **state)
{
	struct fx *f = *state;
	time_t now = time(NULL), t0 = now - 13 * 3600;
	char dir_b[96], err[256], swhy[512], cwhy[512];
	struct mesh_ca *ca_b;
	struct wl_cert *cc;
	struct certmgr *m = mgr_new(f, NULL, 0);
	SSL_CTX *cctx;

	new_ca(at(dir_b, sizeof(dir_b), f->dir, "ca-b"), TD, 1, &ca_b);
	trust(dir_b, f->ca_dir);
	mesh_ca_free(ca_b);
	assert_int_equal(mesh_ca_load(dir_b, &ca_b, err, sizeof(err)), 0);
	cc = issue(ca_b, TD, "b", "cli", now, 3600);
	cctx = tls_client_ctx(ca_b, cc, TD);

	expect_server_refuses(certmgr_server_ctx(m, "a", "srv", t0, err, sizeof(err)), cctx,
			      "not signed by a mesh root");
	/* the new root joins the bundle; the next renewal trusts it */
	trust(f->ca_dir, dir_b);
	certmgr_tick(m, now);
	assert_true(handshake(certmgr_server_ctx(m, "a", "srv", now, err, sizeof(err)), cctx,
			      NULL, swhy, cwhy));
	SSL_CTX_free(cctx);
	wl_cert_free(cc);
	mesh_ca_free(ca_b);
	certmgr_free(m);
}

static void test_certmgr_bad_opts(void **state)
{
	struct fx *f = *state;
	struct certmgr_opts o = { .ca_dir = f->ca_dir, .td = "Not Valid" };
	struct certmgr *m = NULL;
	char err[256], missing[96];

	assert_int_equal(certmgr_new(&o, &m, err, sizeof(err)), -EINVAL);
	assert_null(m);
	o.td = TD;
	o.ca_dir = at(missing, sizeof(missing), f->dir, "none");
	assert_int_equal(certmgr_new(&o, &m, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, missing));
	assert_null(m);
}

int run_certs_tests(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spiffe_id),
		cmocka_unit_test(test_spiffe_parse),
		T(test_ca_init),
		T(test_ca_load_errors),
		T(test_issue_profile),
		T(test_wl_cert_write),
		T(test_tls_mutual),
		T(test_tls_client_fails_closed),
		T(test_tls_no_client_cert),
		T(test_tls_other_ca),
		T(test_tls_other_trust_domain),
		T(test_tls_validity),
		T(test_tls_no_spiffe_san),
		T(test_tls_ca_leaf),
		T(test_tls_unexpected_server),
		T(test_tls_alpn_and_version),
		T(test_trust_bundle_two_roots),
		T(test_certmgr_renewal),
		T(test_certmgr_backoff),
		T(test_certmgr_keeps_old),
		T(test_certmgr_rotation),
		T(test_certmgr_bad_opts),
	};
#undef T
	return cmocka_run_group_tests_name("certs", tests, NULL, NULL);
}
