/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Mesh identity in standalone mode: a root CA made by `meshctl ca init`,
 * short-lived workload certificates issued by meshd, and the TLS contexts
 * the tunnel uses, configured as ztunnel configures its own.
 *
 * Identities are SPIFFE IDs, spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
 * Workload certificates: ECDSA P-256, one URI SAN (the SPIFFE ID),
 * extendedKeyUsage clientAuth + serverAuth, keyUsage digitalSignature +
 * keyEncipherment, 24 hours by default, signed by the root.
 *
 * TLS: 1.3 only, AES-GCM suites only (TLS_AES_256_GCM_SHA384,
 * TLS_AES_128_GCM_SHA256), ALPN "h2", no SNI, peer certificate required
 * both ways and verified against the trust bundle (which may hold several
 * roots, for rotation); the peer's leaf must carry exactly one SPIFFE URI
 * SAN in our trust domain.
 *
 * Not thread-safe: one thread (the tunnel's) owns a certmgr and its
 * contexts. SSL_CTX is reference counted by OpenSSL, so replacing a
 * context on renewal never touches the connections made with the old one.
 */
#ifndef SKM_CERTS_H
#define SKM_CERTS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>

#define SKM_SPIFFE_MAX		256
#define SKM_REASON_MAX		(2 * SKM_SPIFFE_MAX + 64)
#define SKM_CERT_LIFETIME_S	(24 * 3600)

/* File names inside a CA folder. */
#define SKM_CA_CERT_FILE	"root-cert.pem"	/* the signing root */
#define SKM_CA_KEY_FILE		"root-key.pem"	/* its key, PKCS#8, 0600 */
#define SKM_CA_BUNDLE_FILE	"trust-bundle.pem" /* optional: more roots */

/*
 * meshctl ca init: a new root CA (ECDSA P-256, self-signed, CA:TRUE,
 * keyCertSign + cRLSign, subject O=skmesh, CN=skmesh root CA <TD>, the
 * trust domain also as a URI SAN spiffe://<TD>) valid DAYS days, written
 * to DIR (made 0700 when missing) as SKM_CA_CERT_FILE and SKM_CA_KEY_FILE.
 * Refuses to overwrite an existing key. Returns 0, or a negative errno
 * with a one-line reason in ERR.
 */
int ca_init(const char *dir, const char *trust_domain, int days,
	    char *err, size_t errlen);

/* A loaded CA: the signer and the trust bundle (the root itself plus
 * every certificate of SKM_CA_BUNDLE_FILE when present). */
struct mesh_ca;

int mesh_ca_load(const char *dir, struct mesh_ca **out, char *err, size_t errlen);
/* The same from files (the CA service's mounted Secret): CERT's first
 * certificate signs with KEY (PEM, any OpenSSL key format); every
 * certificate of CERT is trusted; CHAIN (optional, NULL) holds the
 * signer's issuers, root last, also trusted and sent after the signer. */
int mesh_ca_load_files(const char *cert, const char *key, const char *chain,
		       struct mesh_ca **out, char *err, size_t errlen);
void mesh_ca_free(struct mesh_ca *ca);
/* The signer's notAfter. */
time_t mesh_ca_not_after(const struct mesh_ca *ca);
/* The trust domain of the signer's spiffe://TD URI SAN; -ENOENT when it
 * has none. */
int mesh_ca_trust_domain(const struct mesh_ca *ca, char *buf, size_t len);
/* What follows a leaf in a response, in PEM, one certificate each: the
 * signer, then CHAIN's certificates in file order (the root last).
 * *OUT is malloc'ed: free with mesh_ca_chain_pem_free(). 0 or -ENOMEM. */
int mesh_ca_chain_pem(const struct mesh_ca *ca, char ***out, size_t *n);
void mesh_ca_chain_pem_free(char **pems, size_t n);
/* A workload certificate for public key KEY (never the CA's own) with identity ID, valid NB..NA, as mesh_ca_issue's: empty
 * subject, critical URI SAN ID, keyUsage digitalSignature +
 * keyEncipherment, extKeyUsage serverAuth + clientAuth, CA:FALSE,
 * authorityKeyIdentifier; signed with SHA-256. NULL on failure. Safe to
 * call from several threads at once on one CA. */
X509 *mesh_ca_sign(const struct mesh_ca *ca, EVP_PKEY *key, const char *id,
		   time_t nb, time_t na);
/* The same for a subjectPublicKeyInfo as a CSR carries it, copied as it
 * is (named-curve EC or RSA): what the CA service signs. */
X509 *mesh_ca_sign_spki(const struct mesh_ca *ca, const X509_PUBKEY *pub, const char *id,
			time_t nb, time_t na);

/*
 * Key hygiene for a process that holds private keys (meshd, meshctl,
 * skmesh-ca), called first thing in main():
 * - not dumpable (prctl PR_SET_DUMPABLE 0): no core file, and no ptrace
 *   or /proc/PID/mem by other users than root; RLIMIT_CORE 0 as well;
 * - OpenSSL's secure heap (CRYPTO_secure_malloc_init, SKM_SECURE_HEAP
 *   bytes): a mlock'ed arena with guard pages, marked MADV_DONTDUMP,
 *   cleared on every free. OpenSSL 3 puts there the private halves of
 *   keys (the EC private scalar of every key made or read, the nonce of
 *   each ECDSA signature), the base64 of PEM private keys while they are
 *   decoded, and its random generators' seeds.
 * 0, or a negative errno with the reason in ERR (the process may go on:
 * it only lacks what failed).
 */
#define SKM_SECURE_HEAP		(4 << 20)
int key_hygiene_init(char *err, size_t errlen);

/* SPIFFE ID helpers. spiffe_id() writes spiffe://TD/ns/NS/sa/SA into BUF
 * (-ENAMETOOLONG when it does not fit, -EINVAL for a part the SPIFFE spec
 * does not allow). spiffe_parse() splits one (-EINVAL unless it is exactly
 * that shape with non-empty parts: TD of [a-z0-9._-], NS and SA of
 * [A-Za-z0-9._-] other than "." and ".."; -ENAMETOOLONG when a part does
 * not fit its buffer); any of the out buffers may be NULL. */
int spiffe_id(char *buf, size_t len, const char *td, const char *ns, const char *sa);
int spiffe_parse(const char *uri, char *td, size_t tdlen, char *ns, size_t nslen,
		 char *sa, size_t salen);

/* One issued workload certificate. */
struct wl_cert {
	char id[SKM_SPIFFE_MAX];	/* SPIFFE ID */
	X509 *leaf;
	EVP_PKEY *key;
	X509 *issuer;			/* the signing CA certificate */
	STACK_OF(X509) *chain;		/* NULL, or the intermediates a remote
					 * CA sent between leaf and root: sent
					 * with the leaf in handshakes */
	time_t not_before;
	time_t not_after;
};

/* Issues a certificate for TD/NS/SA valid from NOW - 60 s (clock skew)
 * to NOW + LIFETIME_S, with a fresh key: empty subject, critical URI SAN
 * (the SPIFFE ID), CA:FALSE, authorityKeyIdentifier. -EKEYEXPIRED when
 * the CA has expired at NOW. */
int mesh_ca_issue(struct mesh_ca *ca, const char *td, const char *ns, const char *sa,
		  time_t now, int lifetime_s, struct wl_cert **out,
		  char *err, size_t errlen);
void wl_cert_free(struct wl_cert *c);

/* Signs a leaf for the SPIFFE ID ID with the public half of KEY (made by
 * the caller), as mesh_ca_issue() does: the certificate, or NULL with the
 * reason in ERR. */
X509 *mesh_ca_certify(struct mesh_ca *ca, const char *id, EVP_PKEY *key, time_t now,
		   int lifetime_s, char *err, size_t errlen);

/* A new workload key: ECDSA P-256, made on this node (its private scalar
 * lives in OpenSSL's secure heap when meshd set one up). */
EVP_PKEY *wl_key_new(void);

/* Writes DIR/<ns>.<sa>.cert.pem (leaf then issuer, 0644) and
 * DIR/<ns>.<sa>.key.pem (PKCS#8, 0600), each by write-then-rename; DIR
 * is made 0700 when missing. -EINVAL when NS or SA is not a SPIFFE
 * path segment (so never a path). */
int wl_cert_write(const struct wl_cert *c, const char *ns, const char *sa,
		  const char *dir);

/*
 * TLS contexts for one workload certificate, trusting CA's bundle and
 * only peers in trust domain TD.
 * - server: asks for and requires a client certificate; selects ALPN h2
 *   (a client not offering h2 fails the handshake).
 * - client: offers ALPN h2; the server's identity is checked per
 *   connection: call tls_expect_peer() on the SSL before the handshake.
 * A handshake whose peer fails any check fails (alert), and
 * tls_verify_error() tells why in words.
 */
SSL_CTX *tls_server_ctx(const struct mesh_ca *ca, const struct wl_cert *c, const char *td);
SSL_CTX *tls_client_ctx(const struct mesh_ca *ca, const struct wl_cert *c, const char *td);
/* The same with the trust bundle STORE (referenced, not copied). */
SSL_CTX *tls_ctx_store(X509_STORE *store, const struct wl_cert *c, const char *td, int server);
/* 0, -EINVAL when SPIFFE_ID is not one (NULL: any identity of the trust
 * domain, for tools and tests). A client SSL on which it was never
 * called, or whose call failed, refuses every server. */
int tls_expect_peer(SSL *ssl, const char *spiffe_id);

/* After a successful handshake: the peer's SPIFFE ID into BUF (-ENOENT:
 * no peer certificate, -EPERM: it did not verify, -ENAMETOOLONG). */
int tls_peer_id(SSL *ssl, char *buf, size_t len);

/* Why the last handshake on SSL failed verification ("no client
 * certificate", "certificate has expired", "not signed by a mesh root",
 * "trust domain other.td is not cluster.local", "no SPIFFE URI SAN",
 * "server is spiffe://... but spiffe://... was expected", "client did
 * not offer ALPN h2", "server did not select ALPN h2", "peer does not
 * offer TLS 1.3", "peer refused the handshake: <alert>"), or NULL.
 * Owned by SSL. The contexts' info callback records some of these: do
 * not replace it with SSL_set_info_callback(). */
const char *tls_verify_error(SSL *ssl);

/* The same as a reason code, for counting. */
enum tls_fail {
	TLS_FAIL_NONE = 0,		/* no reason recorded */
	TLS_FAIL_OTHER,
	TLS_FAIL_NO_CLIENT_CERT,
	TLS_FAIL_UNTRUSTED,		/* chain not to a mesh root */
	TLS_FAIL_EXPIRED,		/* expired, or not yet valid */
	TLS_FAIL_WRONG_TD,		/* another trust domain */
	TLS_FAIL_NO_SPIFFE,		/* no (single, valid) SPIFFE URI SAN */
	TLS_FAIL_WRONG_PEER,		/* not the identity expected */
	TLS_FAIL_NO_ALPN,		/* ALPN h2 not offered / selected */
	TLS_FAIL_VERSION,		/* no TLS 1.3 */
	TLS_FAIL_PEER_ALERT,		/* the peer refused us */
};
enum tls_fail tls_verify_reason(SSL *ssl);

/*
 * Signers: where certmgr's certificates come from. The node makes every
 * key (wl_key_new()) and hands a signer only its public half; a signer
 * answers with a leaf for it, at once (the local CA of --ca-dir) or later
 * (a remote CA, asked over the network by a thread of its own: its
 * answers are taken with poll(), and fd() becomes readable when one
 * waits). Every function is called from the thread that owns the
 * certmgr.
 */
struct sign_req {
	char id[SKM_SPIFFE_MAX];	/* the SPIFFE ID asked for */
	EVP_PKEY *key;			/* borrowed until the answer */
	int lifetime_s;
	time_t now;
	uint64_t tag;			/* the caller's, returned with the answer */
};

/* gRPC's status codes a remote CA answers with; SIGN_STATUS_LOCAL: the
 * request failed on this side (no connection, no token, a bad answer). */
#define SIGN_STATUS_MAX		17
#define SIGN_STATUS_LOCAL	SIGN_STATUS_MAX

struct sign_res {
	uint64_t tag;
	char id[SKM_SPIFFE_MAX];
	int rc;				/* 0, or a negative errno */
	int status;			/* 0 (OK), a gRPC status, SIGN_STATUS_LOCAL */
	X509 *leaf;			/* rc 0: the receiver's */
	STACK_OF(X509) *chain;		/* rc 0: what came after the leaf, or NULL */
	char why[SKM_REASON_MAX];	/* rc != 0: in one line, no key material */
};

/* Frees what RES holds and clears it. */
void sign_res_clear(struct sign_res *res);

struct cert_signer;
struct cert_signer_ops {
	const char *kind;		/* "local CA", "remote CA" */
	/* Re-reads what may have changed on disk (the CA folder, the trust
	 * bundle): 1 when the trust bundle changed, 0 when not, or a
	 * negative errno (reason in ERR; what was loaded stays in use). */
	int (*refresh)(struct cert_signer *s, char *err, size_t errlen);
	/* The trust bundle (every root peers may chain to): borrowed,
	 * valid until the next refresh(). */
	X509_STORE *(*store)(struct cert_signer *s);
	/* Asks for R: 0 and the answer in OUT (done at once), -EINPROGRESS
	 * (the answer comes from poll()), or a negative errno and the
	 * reason in OUT. */
	int (*sign)(struct cert_signer *s, const struct sign_req *r, struct sign_res *out);
	/* One waiting answer into OUT: 1, or 0 when none waits. NULL for
	 * signers that answer at once. */
	int (*poll)(struct cert_signer *s, struct sign_res *out);
	/* Readable when an answer waits (-1: never). */
	int (*fd)(struct cert_signer *s);
	/* Requests asked and not answered yet. */
	int (*inflight)(struct cert_signer *s);
	void (*free)(struct cert_signer *s);
};
struct cert_signer {
	const struct cert_signer_ops *ops;
};

/* The local CA: CA_DIR (mesh_ca_load()), re-read at each refresh(),
 * checked to be for trust domain TD. */
int local_signer_new(const char *ca_dir, const char *td, struct cert_signer **out,
		     char *err, size_t errlen);

/* A trust bundle file: every certificate of PATH into a new store. A file
 * that holds a private key is refused (-EPERM): a node has no business
 * with a CA's key. 0, or a negative errno with the reason in ERR. */
int trust_bundle_load(const char *path, X509_STORE **out, int *ncerts,
		      char *err, size_t errlen);

/*
 * The certificates of this node's identities, issued on first use (or
 * asked for as soon as an identity is wanted, with a signer that answers
 * later) and renewed at half-life; a renewal that fails keeps the old
 * certificate (while valid) and is retried with exponential backoff (1 s
 * doubling to 5 min). Each renewal makes new SSL_CTXs: handshakes from
 * then on use the new certificate, established connections keep theirs.
 */
struct certmgr;

struct certmgr_opts {
	const char *ca_dir;	/* the local CA: read at start and again at
				 * each renewal, so a rotated bundle or key
				 * is picked up */
	struct cert_signer *signer;	/* or this one (taken, also on
					 * failure); ca_dir must be NULL */
	const char *td;		/* trust domain */
	const char *out_dir;	/* NULL: keep certificates in memory only */
	int lifetime_s;		/* 0: SKM_CERT_LIFETIME_S */
	void (*warn)(const char *msg);	/* optional: told each failed
					 * renewal, in one line */
};

int certmgr_new(const struct certmgr_opts *o, struct certmgr **out,
		char *err, size_t errlen);
void certmgr_free(struct certmgr *m);

/* The contexts of NS/SA at NOW (issuing the certificate when it has none
 * yet and the signer answers at once). Borrowed: valid until the next
 * certmgr_tick(), certmgr_want_end() or certmgr_free(); take a reference
 * (SSL_new does) to keep one longer. NULL on failure with the reason in
 * ERR (which says so when the certificate was asked for and is not
 * here yet: the handshake fails and the peer's retry may find it). */
SSL_CTX *certmgr_server_ctx(struct certmgr *m, const char *ns, const char *sa,
			    time_t now, char *err, size_t errlen);
SSL_CTX *certmgr_client_ctx(struct certmgr *m, const char *ns, const char *sa,
			    time_t now, char *err, size_t errlen);

/* Renews what is due at NOW and takes the signer's answers; returns the
 * time of the next renewal or retry (0 when nothing is due; with a
 * signer that answers later at most a second ahead, as its trust bundle
 * is checked for changes every second). A renewal
 * refreshes the signer (the local CA re-reads its folder); when that
 * fails what was loaded keeps signing, and the failure is counted and
 * retried like a failed issue (a retry re-does only what failed). */
time_t certmgr_tick(struct certmgr *m, time_t now);

/* Readable when the signer has answers for certmgr_tick() (-1: never). */
int certmgr_fd(struct certmgr *m);

/* The identities local pods have, told after each change: begin, want
 * each (again), end. An identity wanted for the first time is asked for
 * at once when the signer answers later; at the end, the certificates
 * (and keys) of identities no longer wanted are dropped. 0, or -ENOMEM /
 * -EINVAL (not a namespace/service account). */
void certmgr_want_begin(struct certmgr *m);
int certmgr_want(struct certmgr *m, const char *ns, const char *sa, time_t now);
void certmgr_want_end(struct certmgr *m);

/* For telemetry and config_dump: calls FN for each held certificate. */
void certmgr_foreach(struct certmgr *m,
		     void (*fn)(const struct wl_cert *c, int renew_failures, void *arg),
		     void *arg);

/* Counts since the start. */
struct certmgr_stats {
	uint64_t issued;		/* first certificates of an identity */
	uint64_t renewed;		/* later ones */
	uint64_t failed[SIGN_STATUS_MAX + 1];	/* by status */
	uint64_t dropped;		/* identities no local pod has any more */
	int inflight;			/* asked, not answered */
	int held;			/* identities with a certificate */
	int roots;			/* certificates of the trust bundle */
};
void certmgr_stats(struct certmgr *m, struct certmgr_stats *st);

#endif /* SKM_CERTS_H */
