// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fuzz target: certificates and SPIFFE IDs as a mesh peer presents them.
 * The input is a mode byte and a DER certificate. The certificate is
 * given the target's key and, unless the mode says otherwise, fresh
 * validity, the mesh root as issuer and the root's signature, so that
 * whatever it carries (SANs, basic constraints, key usages, odd encodings)
 * reaches the checks past the chain: it is presented in a real TLS 1.3
 * handshake, over memory, by a client to a mesh server (or by a server to
 * a mesh client that expects spiffe://cluster.local/ns/a/sa/b), with the
 * contexts of agent/certs.c. A handshake that succeeds must have a peer
 * with one SPIFFE ID of our trust domain (the expected one, for a client),
 * and not a CA. Every URI SAN of the certificate, and the input itself
 * when it is no certificate, goes through spiffe_parse(), whose parts
 * must make the same ID again with spiffe_id().
 *
 * Mode bits: 1 keep the certificate's validity, 2 present it as the
 * server, 4 keep its issuer name and authority key identifier, 8 keep its
 * signature (not the root's).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fuzz.h"
#include "certs.h"

#define TD		"cluster.local"
#define EXPECT		"spiffe://cluster.local/ns/a/sa/b"

static struct mesh_ca *ca;
static EVP_PKEY *ca_key, *leaf_key;
static struct wl_cert *mesh_cert;	/* the other side's: a real one */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/skm-fuzz-ca-XXXXXX", path[64], err[256];
	FILE *f;

	(void)argc;
	(void)argv;
	if (!mkdtemp(dir) || ca_init(dir, TD, 30, err, sizeof(err)) ||
	    mesh_ca_load(dir, &ca, err, sizeof(err))) {
		fprintf(stderr, "fuzz_certs: mesh CA: %s\n", err);
		abort();
	}
	snprintf(path, sizeof(path), "%s/%s", dir, SKM_CA_KEY_FILE);
	f = fopen(path, "r");
	ca_key = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
	if (f)
		fclose(f);
	/* the CA lives in memory from here on */
	unlink(path);
	snprintf(path, sizeof(path), "%s/%s", dir, SKM_CA_CERT_FILE);
	unlink(path);
	rmdir(dir);
	leaf_key = EVP_EC_gen("P-256");
	if (!ca_key || !leaf_key ||
	    mesh_ca_issue(ca, TD, "srv", "mesh", time(NULL), 3600, &mesh_cert, err, sizeof(err))) {
		fprintf(stderr, "fuzz_certs: setup failed %s\n", err);
		abort();
	}
	return 0;
}

/* spiffe_parse() of S (LEN bytes, no NUL) into small and roomy buffers;
 * what parses must make S again. */
static void check_spiffe(const char *s, size_t len)
{
	char *id = strndup(s, len), td[256], ns[256], sa[256], again[600];
	char t1[4], n1[4], s1[4];

	if (!id)
		return;
	if (!spiffe_parse(id, td, sizeof(td), ns, sizeof(ns), sa, sizeof(sa))) {
		int rc = spiffe_id(again, sizeof(again), td, ns, sa);

		if (rc || strcmp(again, id)) {
			fprintf(stderr, "spiffe_parse(\"%s\") gave %s / %s / %s, spiffe_id: %d \"%s\"\n",
				id, td, ns, sa, rc, rc ? "" : again);
			abort();
		}
	}
	spiffe_parse(id, t1, sizeof(t1), n1, sizeof(n1), s1, sizeof(s1));
	spiffe_parse(id, NULL, 0, NULL, 0, NULL, 0);
	free(id);
}

static void check_sans(X509 *x)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);

	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_URI)
			check_spiffe((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
				     (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier));
	}
	GENERAL_NAMES_free(gens);
}

/* Runs the handshake between CLIENT and SERVER over a BIO pair; *C and
 * *S: the last SSL_do_handshake() results of each. */
static void handshake(SSL *client, SSL *server, int *c, int *s)
{
	BIO *a, *b;

	if (!BIO_new_bio_pair(&a, 0, &b, 0))
		abort();
	SSL_set_bio(client, a, a);
	SSL_set_bio(server, b, b);
	SSL_set_connect_state(client);
	SSL_set_accept_state(server);
	*c = *s = 0;
	for (int i = 0; i < 16; i++) {
		int ce, se;

		if (*c != 1)
			*c = SSL_do_handshake(client);
		if (*s != 1)
			*s = SSL_do_handshake(server);
		if (*c == 1 && *s == 1)
			break;
		ce = *c == 1 ? SSL_ERROR_NONE : SSL_get_error(client, *c);
		se = *s == 1 ? SSL_ERROR_NONE : SSL_get_error(server, *s);
		if ((ce != SSL_ERROR_NONE && ce != SSL_ERROR_WANT_READ) ||
		    (se != SSL_ERROR_NONE && se != SSL_ERROR_WANT_READ))
			break;
	}
}

/* The side that verified the fuzzed certificate (VERIFIER) finished its
 * handshake: what it accepted must be a mesh identity. */
static void check_accepted(SSL *verifier, int is_client)
{
	X509 *peer = SSL_get0_peer_certificate(verifier);
	char id[SKM_SPIFFE_MAX], td[SKM_SPIFFE_MAX];
	int rc = tls_peer_id(verifier, id, sizeof(id));

	if (rc || spiffe_parse(id, td, sizeof(td), NULL, 0, NULL, 0) || strcmp(td, TD) ||
	    (is_client && strcmp(id, EXPECT)) || !peer || X509_check_ca(peer)) {
		fprintf(stderr, "a %s accepted a peer it should not have: tls_peer_id %d \"%s\", "
			"CA %d\n", is_client ? "client" : "server", rc, rc ? "" : id,
			peer ? X509_check_ca(peer) : -1);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned int mode = size ? data[0] : 0;
	const unsigned char *p = data + (size ? 1 : 0);
	X509 *x = size ? d2i_X509(NULL, &p, (long)(size - 1)) : NULL;
	struct wl_cert fuzzed = { .key = leaf_key };
	SSL_CTX *sctx = NULL, *cctx = NULL;
	SSL *client = NULL, *server = NULL;
	int as_server = mode & 2, c, s;
	time_t now = time(NULL);

	if (!x) {
		ERR_clear_error();
		if (size)
			check_spiffe((const char *)data + 1, size - 1);
		return 0;
	}
	check_sans(x);
	if (!(mode & 1) && (!ASN1_TIME_set(X509_getm_notBefore(x), now - 60) ||
			    !ASN1_TIME_set(X509_getm_notAfter(x), now + 3600)))
		goto out;
	if (!(mode & 4)) {
		int i;

		/* issued by the mesh root: its name, and no key identifier
		 * of another issuer to lead the chain astray */
		if (!X509_set_issuer_name(x, X509_get_subject_name(mesh_cert->issuer)))
			goto out;
		while ((i = X509_get_ext_by_NID(x, NID_authority_key_identifier, -1)) >= 0)
			X509_EXTENSION_free(X509_delete_ext(x, i));
	}
	if (!X509_set_pubkey(x, leaf_key))
		goto out;
	if (!(mode & 8) && !X509_sign(x, ca_key, EVP_sha256()))
		goto out;
	fuzzed.leaf = x;
	fuzzed.issuer = mesh_cert->issuer;
	sctx = tls_server_ctx(ca, as_server ? &fuzzed : mesh_cert, TD);
	cctx = tls_client_ctx(ca, as_server ? mesh_cert : &fuzzed, TD);
	if (!sctx || !cctx) {
		if (getenv("FUZZ_CERTS_SHOW"))
			fprintf(stderr, "fuzz_certs: no context for it\n");
		goto out;	/* a certificate OpenSSL does not take for itself */
	}
	client = SSL_new(cctx);
	server = SSL_new(sctx);
	if (!client || !server || tls_expect_peer(client, as_server ? EXPECT : NULL))
		goto out;
	handshake(client, server, &c, &s);
	if (getenv("FUZZ_CERTS_SHOW")) {	/* how each handshake ended */
		const char *why = tls_verify_error(as_server ? client : server);

		fprintf(stderr, "fuzz_certs: as %s: client %d, server %d: %s\n",
			as_server ? "server" : "client", c, s, why ? why : "-");
	}
	if (as_server && c == 1)
		check_accepted(client, 1);
	if (!as_server && s == 1)
		check_accepted(server, 0);
	/* the words for the failure, when there is one, end */
	if (tls_verify_error(as_server ? client : server))
		(void)strlen(tls_verify_error(as_server ? client : server));
out:
	SSL_free(client);
	SSL_free(server);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	X509_free(x);
	ERR_clear_error();
	return 0;
}
