// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Mesh identity in standalone mode: the root CA, workload certificates
 * (X.509-SVIDs as Istio issues them), the TLS 1.3 contexts of the tunnel
 * and the manager that renews certificates at half-life. See certs.h for
 * the contract and docs/identity.md for the profile and the files.
 *
 * No logging here: every failure comes back as a negative errno plus a
 * one-line reason, so meshctl can link this file without meshd's log.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/buffer.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "certs.h"

#define SKM_TLS_SUITES	"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
#define SKM_TLS_GROUPS	"X25519:P-256"
#define SKM_SKEW_S	60		/* notBefore = now - this */
#define SKM_RETRY_MAX_S	300		/* renewal backoff: 1 s doubling to this */
#define SKM_PENDING_MAX_S 120		/* an answer not come by then is given up */

static const unsigned char alpn_h2[] = { 2, 'h', '2' };

/* --- errors -------------------------------------------------------------- */

/* Formats ERR (when given), appending OpenSSL's reason when its queue
 * holds one, and empties the queue. Returns RC. */
__attribute__((format(printf, 4, 5)))
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	unsigned long e = ERR_peek_last_error();
	va_list ap;
	int n;

	if (err && errlen) {
		va_start(ap, fmt);
		n = vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
		if (e && n >= 0 && (size_t)n < errlen)
			snprintf(err + n, errlen - n, ": %s",
				 ERR_reason_error_string(e) ?: "OpenSSL error");
	}
	ERR_clear_error();
	return rc;
}

/* --- key hygiene ------------------------------------------------------------ */

int key_hygiene_init(char *err, size_t errlen)
{
	struct rlimit none = { 0, 0 };
	int rc;

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
		return fail(err, errlen, -errno, "prctl(PR_SET_DUMPABLE): %s", strerror(errno));
	if (setrlimit(RLIMIT_CORE, &none))
		return fail(err, errlen, -errno, "setrlimit(RLIMIT_CORE): %s", strerror(errno));
	if (CRYPTO_secure_malloc_initialized())
		return 0;
	/* 1: the arena is locked and out of dumps; 2: it works but mlock or
	 * madvise failed (RLIMIT_MEMLOCK without CAP_IPC_LOCK) */
	rc = CRYPTO_secure_malloc_init(SKM_SECURE_HEAP, 32);
	if (rc == 0)
		return fail(err, errlen, -ENOMEM, "OpenSSL's secure heap of %d bytes could not "
			    "be made: private keys live in ordinary memory", SKM_SECURE_HEAP);
	if (rc == 2)
		return fail(err, errlen, -EPERM, "OpenSSL's secure heap could not be locked in "
			    "memory or kept out of core dumps (RLIMIT_MEMLOCK %d bytes is needed)",
			    SKM_SECURE_HEAP);
	return 0;
}

/* --- SPIFFE IDs ------------------------------------------------------------ */

/* The SPIFFE spec's characters: trust domains are lower case; path
 * segments may be mixed case, and "." and ".." are not segments. */
static int td_ok(const char *s, size_t n)
{
	if (!n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '.' || s[i] == '-' || s[i] == '_'))
			return 0;
	return 1;
}

static int seg_ok(const char *s, size_t n)
{
	if (!n || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '-' ||
		      s[i] == '_'))
			return 0;
	return 1;
}

int spiffe_id(char *buf, size_t len, const char *td, const char *ns, const char *sa)
{
	int n;

	if (!td || !ns || !sa || !td_ok(td, strlen(td)) ||
	    !seg_ok(ns, strlen(ns)) || !seg_ok(sa, strlen(sa)))
		return -EINVAL;
	n = snprintf(buf, len, "spiffe://%s/ns/%s/sa/%s", td, ns, sa);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Copies N bytes of S into OUT (when given) as a string. */
static int put(char *out, size_t outlen, const char *s, size_t n)
{
	if (!out)
		return 0;
	if (n >= outlen)
		return -ENAMETOOLONG;
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

int spiffe_parse(const char *uri, char *td, size_t tdlen, char *ns, size_t nslen,
		 char *sa, size_t salen)
{
	const char *p, *t, *n, *s;
	int rc;

	if (!uri || strncmp(uri, "spiffe://", 9))
		return -EINVAL;
	t = uri + 9;
	p = strchr(t, '/');
	if (!p || !td_ok(t, p - t) || strncmp(p, "/ns/", 4))
		return -EINVAL;
	n = p + 4;
	p = strchr(n, '/');
	if (!p || !seg_ok(n, p - n) || strncmp(p, "/sa/", 4))
		return -EINVAL;
	s = p + 4;
	if (strchr(s, '/') || !seg_ok(s, strlen(s)))
		return -EINVAL;
	if ((rc = put(td, tdlen, t, n - 4 - t)) ||
	    (rc = put(ns, nslen, n, s - 4 - n)) ||
	    (rc = put(sa, salen, s, strlen(s))))
		return rc;
	return 0;
}

/* --- certificates ------------------------------------------------------- */

struct mesh_ca {
	X509 *signer;		/* first certificate of SKM_CA_CERT_FILE */
	EVP_PKEY *key;
	X509_STORE *store;	/* every root we trust */
	STACK_OF(X509) *chain;	/* the signer, then its issuers (--ca-chain) */
	/* the extensions every leaf has but its SAN, made once: making them
	 * from text (and the authority key id from the signer) per leaf cost
	 * more than the signature */
	STACK_OF(X509_EXTENSION) *leaf_exts;
};

static time_t asn1_time(const ASN1_TIME *t)
{
	struct tm tm;

	if (!ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

/* A random positive 128-bit serial, as RFC 5280 and the CA/B forum ask. */
static int set_serial(X509 *x)
{
	unsigned char b[16];
	ASN1_INTEGER *ai = NULL;
	BIGNUM *bn = NULL;
	int ok = 0;

	if (RAND_bytes(b, sizeof(b)) != 1)
		return 0;
	b[0] &= 0x7f;
	b[0] |= 0x01;		/* never zero, always 16 bytes */
	bn = BN_bin2bn(b, sizeof(b), NULL);
	if (bn)
		ai = BN_to_ASN1_INTEGER(bn, NULL);
	if (ai)
		ok = X509_set_serialNumber(x, ai);
	ASN1_INTEGER_free(ai);
	BN_free(bn);
	return ok;
}

/* Adds one extension written in openssl.cnf syntax; ISSUER signs X. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
	if (!ext)
		return 0;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

/* Adds a subjectAltName of one URI, built directly rather than through
 * the config syntax, so no character of URI is ever parsed. */
static int add_uri_san(X509 *x, const char *uri, int critical)
{
	GENERAL_NAMES *gens = GENERAL_NAMES_new();
	GENERAL_NAME *gen = GENERAL_NAME_new();
	ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
	int ok = 0;

	if (!gens || !gen || !ia5 || !ASN1_STRING_set(ia5, uri, -1))
		goto out;
	GENERAL_NAME_set0_value(gen, GEN_URI, ia5);
	ia5 = NULL;
	if (!sk_GENERAL_NAME_push(gens, gen))
		goto out;
	gen = NULL;
	ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, critical,
			       X509V3_ADD_DEFAULT) == 1;
out:
	ASN1_IA5STRING_free(ia5);
	GENERAL_NAME_free(gen);
	GENERAL_NAMES_free(gens);
	return ok;
}

/* A new v3 certificate for KEY (NULL: set by the caller) with a random
 * serial, valid NB..NA. */
static X509 *cert_new(EVP_PKEY *key, time_t nb, time_t na)
{
	X509 *x = X509_new();

	if (!x || !X509_set_version(x, X509_VERSION_3) || !set_serial(x) ||
	    (key && !X509_set_pubkey(x, key)) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), nb) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), na)) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* --- files ----------------------------------------------------------------- */

/* Makes DIR (0700) unless it exists as a directory. */
static int mkdir_private(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (!mkdir(dir, 0700))
		return 0;
	if (errno != EEXIST)
		return fail(err, errlen, -errno, "%s: %s", dir, strerror(errno));
	if (stat(dir, &st))
		return fail(err, errlen, -errno, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(err, errlen, -ENOTDIR, "%s: not a directory", dir);
	return 0;
}

/* Writes the contents of memory BIO B into a new file PATH made with
 * MODE (O_EXCL: an existing file is never replaced; a secret is never
 * readable by others, not even for a moment). Public files get MODE
 * whatever the umask; a key keeps what open() gave it. On failure the
 * file is removed. */
static int write_new(const char *path, BIO *b, mode_t mode, char *err, size_t errlen)
{
	char *data;
	long len = BIO_get_mem_data(b, &data);
	int fd, rc = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	if ((mode & 077) && fchmod(fd, mode))
		rc = -errno;
	while (!rc && len > 0) {
		ssize_t w = write(fd, data, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = w < 0 ? -errno : -EIO;
			break;
		}
		data += w;
		len -= w;
	}
	if (!rc && fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	if (rc) {
		unlink(path);
		return fail(err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	return 0;
}

/* write_new() to PATH.tmp, then rename over PATH. */
static int write_replace(const char *path, BIO *b, mode_t mode, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	int rc;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", path);
	unlink(tmp);		/* left by a crash: ours to replace */
	rc = write_new(tmp, b, mode, err, errlen);
	if (rc)
		return rc;
	if (rename(tmp, path)) {
		rc = -errno;
		unlink(tmp);
		return fail(err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	return 0;
}

static int path_join(char *out, const char *dir, const char *name)
{
	return snprintf(out, PATH_MAX, "%s/%s", dir, name) < PATH_MAX ? 0 : -ENAMETOOLONG;
}

/* PEM of KEY (PKCS#8) or of the certificates X and Y (Y may be NULL)
 * into a new memory BIO. */
static BIO *pem_key(EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_mem());

	if (b && !PEM_write_bio_PKCS8PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) {
		BIO_free(b);
		return NULL;
	}
	return b;
}

static BIO *pem_certs(X509 *x, X509 *y)
{
	BIO *b = BIO_new(BIO_s_mem());

	if (b && (!PEM_write_bio_X509(b, x) || (y && !PEM_write_bio_X509(b, y)))) {
		BIO_free(b);
		return NULL;
	}
	return b;
}

/* --- the root CA ------------------------------------------------------- */

static X509 *root_new(EVP_PKEY *key, const char *td, int days)
{
	char uri[SKM_SPIFFE_MAX], cn[SKM_SPIFFE_MAX];
	time_t now = time(NULL);
	X509_NAME *name;
	X509 *x;

	snprintf(uri, sizeof(uri), "spiffe://%s", td);
	snprintf(cn, sizeof(cn), "skmesh root CA %s", td);
	x = cert_new(key, now - SKM_SKEW_S, now + (time_t)days * 86400);
	if (!x)
		return NULL;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
					(const unsigned char *)"skmesh", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, name) ||
	    !add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
	    !add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    !add_ext(x, x, NID_subject_key_identifier, "hash") ||
	    !add_uri_san(x, uri, 0) ||
	    !X509_sign(x, key, EVP_sha256())) {
		X509_free(x);
		return NULL;
	}
	return x;
}

int ca_init(const char *dir, const char *trust_domain, int days,
	    char *err, size_t errlen)
{
	char cert_path[PATH_MAX], key_path[PATH_MAX];
	EVP_PKEY *key = NULL;
	BIO *kb = NULL, *cb = NULL;
	X509 *x = NULL;
	int rc;

	if (!trust_domain || !td_ok(trust_domain, strlen(trust_domain)) ||
	    strlen(trust_domain) > 200)
		return fail(err, errlen, -EINVAL,
			    "trust domain '%s' is not valid: use lower-case letters, digits, '.', '-' and '_' (e.g. cluster.local)",
			    trust_domain ?: "");
	if (days < 1 || days > 36500)
		return fail(err, errlen, -EINVAL, "validity of %d days: use 1 to 36500", days);
	if (path_join(cert_path, dir, SKM_CA_CERT_FILE) ||
	    path_join(key_path, dir, SKM_CA_KEY_FILE))
		return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", dir);
	rc = mkdir_private(dir, err, errlen);
	if (rc)
		return rc;
	if (!access(key_path, F_OK) || !access(cert_path, F_OK))
		return fail(err, errlen, -EEXIST,
			    "%s already holds a CA (%s): refusing to overwrite it; remove it first or choose another folder",
			    dir, !access(key_path, F_OK) ? SKM_CA_KEY_FILE : SKM_CA_CERT_FILE);

	key = EVP_EC_gen("P-256");
	if (!key) {
		rc = fail(err, errlen, -ENOMEM, "generating the P-256 key");
		goto out;
	}
	x = root_new(key, trust_domain, days);
	kb = pem_key(key);
	if (x)
		cb = pem_certs(x, NULL);
	if (!kb || !cb) {
		rc = fail(err, errlen, -ENOMEM, "making the root certificate");
		goto out;
	}
	rc = write_new(key_path, kb, 0600, err, errlen);
	if (rc)
		goto out;
	rc = write_new(cert_path, cb, 0644, err, errlen);
	if (rc)
		unlink(key_path);
out:
	BIO_free(kb);
	BIO_free(cb);
	X509_free(x);
	EVP_PKEY_free(key);
	return rc;
}

/* Adds every certificate of the PEM text BUF (LEN bytes, read from PATH)
 * to STORE (the first one also to *FIRST, each also to ALL, when given).
 * Returns how many, or a negative errno. */
static int pem_roots(const char *buf, size_t len, const char *path, X509_STORE *store,
		     X509 **first, STACK_OF(X509) *all, char *err, size_t errlen)
{
	BIO *b = BIO_new_mem_buf(buf, (int)len);
	unsigned long e;
	int n = 0;
	X509 *x;

	if (!b)
		return fail(err, errlen, -ENOMEM, "out of memory");
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL))) {
		if (!X509_STORE_add_cert(store, x) &&
		    ERR_GET_REASON(ERR_peek_last_error()) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
			X509_free(x);
			BIO_free(b);
			return fail(err, errlen, -ENOMEM, "%s", path);
		}
		ERR_clear_error();
		if (all && (!X509_up_ref(x) || !sk_X509_push(all, x))) {
			X509_free(x);
			BIO_free(b);
			return fail(err, errlen, -ENOMEM, "%s", path);
		}
		if (!n++ && first)
			*first = x;
		else
			X509_free(x);
	}
	e = ERR_peek_last_error();
	BIO_free(b);
	if (!n || ERR_GET_REASON(e) != PEM_R_NO_START_LINE)
		return fail(err, errlen, -EINVAL, "%s: %s", path,
			    n ? "a certificate is not valid PEM" : "no certificate");
	ERR_clear_error();
	return n;
}

/* Adds every certificate of PEM file PATH to STORE (the first one also
 * to *FIRST, each also to ALL, when given). Returns how many, or a
 * negative errno. */
static int load_roots(const char *path, X509_STORE *store, X509 **first,
		      STACK_OF(X509) *all, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(path, "r");
	BUF_MEM *mem = NULL;
	BIO *m = NULL;
	char chunk[4096];
	int n, rc;

	if (!b) {
		rc = errno ? -errno : -EIO;
		return fail(err, errlen, rc, "%s: %s", path, strerror(-rc));
	}
	m = BIO_new(BIO_s_mem());
	while (m && (n = BIO_read(b, chunk, sizeof(chunk))) > 0)
		if (BIO_write(m, chunk, n) != n)
			break;
	BIO_free(b);
	if (!m || !BIO_get_mem_ptr(m, &mem) || !mem) {
		BIO_free(m);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	rc = pem_roots(mem->data, mem->length, path, store, first, all, err, errlen);
	BIO_free(m);
	return rc;
}

#define SKM_BUNDLE_MAX	(1 << 20)	/* bytes of a trust bundle file */

int trust_bundle_load(const char *path, X509_STORE **out, int *ncerts,
		      char *err, size_t errlen)
{
	X509_STORE *store = NULL;
	struct stat st;
	char *buf = NULL;
	ssize_t n = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > SKM_BUNDLE_MAX) {
		close(fd);
		return fail(err, errlen, -EINVAL, "%s: not a file of at most %d bytes", path,
			    SKM_BUNDLE_MAX);
	}
	buf = malloc(st.st_size + 1);
	if (buf)
		n = read(fd, buf, st.st_size);
	close(fd);
	if (!buf || n != st.st_size) {
		free(buf);
		return fail(err, errlen, buf ? -EIO : -ENOMEM, "%s: cannot read it", path);
	}
	buf[n] = 0;
	/* a key in a bundle is a mistake that hands a node what it must
	 * never hold: refuse it, and wipe the copy read */
	if (memmem(buf, n, "PRIVATE KEY-----", 16)) {
		OPENSSL_cleanse(buf, n);
		free(buf);
		return fail(err, errlen, -EPERM, "%s holds a private key: a trust bundle holds "
			    "root certificates only, and no CA key belongs on a node", path);
	}
	store = X509_STORE_new();
	rc = store ? pem_roots(buf, n, path, store, NULL, NULL, err, errlen)
		   : fail(err, errlen, -ENOMEM, "out of memory");
	free(buf);
	if (rc < 0) {
		X509_STORE_free(store);
		return rc;
	}
	if (ncerts)
		*ncerts = rc;
	*out = store;
	return 0;
}

/* A leaf's fixed extensions, in their order: keyUsage, extendedKeyUsage,
 * basicConstraints, authorityKeyIdentifier. */
static int leaf_exts_init(struct mesh_ca *ca)
{
	X509 *t = X509_new();
	int ok;

	ok = t && add_ext(t, ca->signer, NID_key_usage,
			  "critical,digitalSignature,keyEncipherment") &&
	     add_ext(t, ca->signer, NID_ext_key_usage, "serverAuth,clientAuth") &&
	     add_ext(t, ca->signer, NID_basic_constraints, "CA:FALSE") &&
	     add_ext(t, ca->signer, NID_authority_key_identifier, "keyid:always");
	ca->leaf_exts = ok ? sk_X509_EXTENSION_deep_copy(X509_get0_extensions(t),
							 X509_EXTENSION_dup,
							 X509_EXTENSION_free) : NULL;
	X509_free(t);
	return ca->leaf_exts ? 0 : -ENOMEM;
}

int mesh_ca_load_files(const char *cert, const char *key, const char *chain,
		       struct mesh_ca **out, char *err, size_t errlen)
{
	struct mesh_ca *ca;
	BIO *b;
	int rc;

	*out = NULL;
	ca = calloc(1, sizeof(*ca));
	if (!ca)
		return fail(err, errlen, -ENOMEM, "out of memory");
	ca->store = X509_STORE_new();
	ca->chain = sk_X509_new_null();
	if (!ca->store || !ca->chain) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out_free;
	}
	rc = load_roots(cert, ca->store, &ca->signer, NULL, err, errlen);
	if (rc < 0)
		goto out_free;

	b = BIO_new_file(key, "r");
	if (!b) {
		rc = errno ? -errno : -EIO;
		rc = fail(err, errlen, rc, "%s: %s", key, strerror(-rc));
		goto out_free;
	}
	ca->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	if (!ca->key) {
		rc = fail(err, errlen, -EINVAL, "%s: no private key", key);
		goto out_free;
	}
	if (!X509_check_private_key(ca->signer, ca->key)) {
		rc = fail(err, errlen, -EINVAL, "%s does not belong to %s", key, cert);
		goto out_free;
	}
	if (X509_check_ca(ca->signer) != 1) {
		rc = fail(err, errlen, -EINVAL, "%s is not a CA certificate", cert);
		goto out_free;
	}
	if (leaf_exts_init(ca)) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out_free;
	}
	if (!X509_up_ref(ca->signer) || !sk_X509_push(ca->chain, ca->signer)) {
		X509_free(ca->signer);
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out_free;
	}
	if (chain)
		rc = load_roots(chain, ca->store, NULL, ca->chain, err, errlen);
	if (rc < 0)
		goto out_free;
	*out = ca;
	return 0;

out_free:
	mesh_ca_free(ca);
	return rc;
}

int mesh_ca_load(const char *dir, struct mesh_ca **out, char *err, size_t errlen)
{
	char cert[PATH_MAX], key[PATH_MAX], bundle[PATH_MAX];
	int rc;

	*out = NULL;
	if (path_join(cert, dir, SKM_CA_CERT_FILE) || path_join(key, dir, SKM_CA_KEY_FILE) ||
	    path_join(bundle, dir, SKM_CA_BUNDLE_FILE))
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", dir);
	rc = mesh_ca_load_files(cert, key, NULL, out, err, errlen);
	if (!rc && !access(bundle, F_OK)) {
		rc = load_roots(bundle, (*out)->store, NULL, NULL, err, errlen);
		if (rc > 0)
			rc = 0;
		if (rc) {
			mesh_ca_free(*out);
			*out = NULL;
		}
	}
	return rc;
}

void mesh_ca_free(struct mesh_ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->signer);
	EVP_PKEY_free(ca->key);
	X509_STORE_free(ca->store);
	sk_X509_pop_free(ca->chain, X509_free);
	sk_X509_EXTENSION_pop_free(ca->leaf_exts, X509_EXTENSION_free);
	free(ca);
}

/* --- workload certificates --------------------------------------------- */

/* A leaf for a key already set in X (cert_new's or set_spki's). */
static X509 *leaf_finish(const struct mesh_ca *ca, X509 *x, const char *id)
{
	X509_NAME *empty = X509_NAME_new();
	int ok;

	/* an empty subject, as Istio's workload certificates have: then the
	 * SAN, which carries the identity, must be critical (RFC 5280) */
	ok = x && empty && X509_set_subject_name(x, empty) &&
	     X509_set_issuer_name(x, X509_get_subject_name(ca->signer)) &&
	     add_uri_san(x, id, 1);
	for (int i = 0; ok && i < sk_X509_EXTENSION_num(ca->leaf_exts); i++)
		ok = X509_add_ext(x, sk_X509_EXTENSION_value(ca->leaf_exts, i), -1);
	if (!ok || !X509_sign(x, ca->key, EVP_sha256())) {
		X509_free(x);
		x = NULL;
	}
	X509_NAME_free(empty);
	return x;
}

X509 *mesh_ca_sign(const struct mesh_ca *ca, EVP_PKEY *key, const char *id,
		   time_t nb, time_t na)
{
	return leaf_finish(ca, cert_new(key, nb, na), id);
}

/* Copies PUB's algorithm and key bits into X's subjectPublicKeyInfo as
 * they are: no key object is made, which in OpenSSL 3.0 costs more than
 * the signature (its encoder). Named-curve EC and RSA parameters only. */
static int set_spki(X509 *x, const X509_PUBKEY *pub)
{
	ASN1_OBJECT *alg, *pobj_copy = NULL;
	const ASN1_OBJECT *pobj;
	const unsigned char *pk;
	unsigned char *pk_copy;
	const void *pval;
	X509_ALGOR *pa;
	int pklen, ptype;

	if (!X509_PUBKEY_get0_param(&alg, &pk, &pklen, &pa, (X509_PUBKEY *)pub) || pklen <= 0)
		return 0;
	X509_ALGOR_get0(&pobj, &ptype, &pval, pa);
	if (ptype == V_ASN1_OBJECT) {
		pobj_copy = OBJ_dup(pval);
		if (!pobj_copy)
			return 0;
	} else if (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF) {
		return 0;
	}
	pk_copy = OPENSSL_memdup(pk, (size_t)pklen);
	alg = OBJ_dup(alg);
	if (!pk_copy || !alg ||
	    !X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), alg, ptype, pobj_copy, pk_copy,
				    pklen)) {
		ASN1_OBJECT_free(pobj_copy);
		ASN1_OBJECT_free(alg);
		OPENSSL_free(pk_copy);
		return 0;
	}
	return 1;
}

X509 *mesh_ca_sign_spki(const struct mesh_ca *ca, const X509_PUBKEY *pub, const char *id,
			time_t nb, time_t na)
{
	X509 *x = cert_new(NULL, nb, na);

	if (x && !set_spki(x, pub)) {
		X509_free(x);
		x = NULL;
	}
	return leaf_finish(ca, x, id);
}

EVP_PKEY *wl_key_new(void)
{
	return EVP_EC_gen("P-256");
}

X509 *mesh_ca_certify(struct mesh_ca *ca, const char *id, EVP_PKEY *key, time_t now,
		   int lifetime_s, char *err, size_t errlen)
{
	time_t ca_end = asn1_time(X509_get0_notAfter(ca->signer));
	X509 *leaf;

	if (lifetime_s <= 0) {
		fail(err, errlen, -EINVAL, "certificate lifetime %d s", lifetime_s);
		return NULL;
	}
	if (now >= ca_end) {
		fail(err, errlen, -EKEYEXPIRED,
		     "the signing CA expired at %ld: make a new one and rotate (docs/identity.md)",
		     (long)ca_end);
		return NULL;
	}
	if (spiffe_parse(id, NULL, 0, NULL, 0, NULL, 0)) {
		fail(err, errlen, -EINVAL, "'%s' is not a SPIFFE ID", id);
		return NULL;
	}
	leaf = mesh_ca_sign(ca, key, id, now - SKM_SKEW_S, now + lifetime_s);
	if (!leaf)
		fail(err, errlen, -ENOMEM, "issuing %s", id);
	return leaf;
}

int mesh_ca_issue(struct mesh_ca *ca, const char *td, const char *ns, const char *sa,
		  time_t now, int lifetime_s, struct wl_cert **out,
		  char *err, size_t errlen)
{
	time_t ca_end = asn1_time(X509_get0_notAfter(ca->signer));
	struct wl_cert *c;
	int rc;

	*out = NULL;
	if (lifetime_s <= 0)
		return fail(err, errlen, -EINVAL, "certificate lifetime %d s", lifetime_s);
	if (now >= ca_end)
		return fail(err, errlen, -EKEYEXPIRED,
			    "the signing CA expired at %ld: make a new one and rotate (docs/identity.md)",
			    (long)ca_end);
	c = calloc(1, sizeof(*c));
	if (!c)
		return fail(err, errlen, -ENOMEM, "out of memory");
	rc = spiffe_id(c->id, sizeof(c->id), td, ns, sa);
	if (rc) {
		fail(err, errlen, rc, "no SPIFFE ID for trust domain '%s', ns '%s', sa '%s'",
		     td ?: "", ns ?: "", sa ?: "");
		goto out_free;
	}
	c->issuer = ca->signer;
	X509_up_ref(c->issuer);
	c->not_before = now - SKM_SKEW_S;
	c->not_after = now + lifetime_s;
	c->key = wl_key_new();
	if (c->key)
		c->leaf = mesh_ca_sign(ca, c->key, c->id, c->not_before, c->not_after);
	if (!c->leaf) {
		rc = fail(err, errlen, -ENOMEM, "issuing %s", c->id);
		goto out_free;
	}
	*out = c;
	return 0;

out_free:
	wl_cert_free(c);
	return rc;
}

static int ca_trust_domain(X509 *x, char *buf, size_t len);

time_t mesh_ca_not_after(const struct mesh_ca *ca)
{
	return asn1_time(X509_get0_notAfter(ca->signer));
}

int mesh_ca_trust_domain(const struct mesh_ca *ca, char *buf, size_t len)
{
	return ca_trust_domain(ca->signer, buf, len) ? 0 : -ENOENT;
}

int mesh_ca_chain_pem(const struct mesh_ca *ca, char ***out, size_t *n)
{
	int count = sk_X509_num(ca->chain), i;
	char **pems;

	/* a self-signed signer alone is the root: [leaf, root] */
	pems = calloc((size_t)count + 1, sizeof(*pems));
	if (!pems)
		return -ENOMEM;
	for (i = 0; i < count; i++) {
		BIO *b = BIO_new(BIO_s_mem());
		char *data;
		long len;

		if (!b || !PEM_write_bio_X509(b, sk_X509_value(ca->chain, i)) ||
		    (len = BIO_get_mem_data(b, &data)) <= 0 ||
		    !(pems[i] = strndup(data, (size_t)len))) {
			BIO_free(b);
			mesh_ca_chain_pem_free(pems, (size_t)i);
			return -ENOMEM;
		}
		BIO_free(b);
	}
	*out = pems;
	*n = (size_t)count;
	return 0;
}

void mesh_ca_chain_pem_free(char **pems, size_t n)
{
	for (size_t i = 0; pems && i < n; i++)
		free(pems[i]);
	free(pems);
}

void wl_cert_free(struct wl_cert *c)
{
	if (!c)
		return;
	X509_free(c->leaf);
	X509_free(c->issuer);
	sk_X509_pop_free(c->chain, X509_free);
	EVP_PKEY_free(c->key);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

/* wl_cert_write() that says why it failed. */
static int cert_write(const struct wl_cert *c, const char *ns, const char *sa,
		      const char *dir, char *err, size_t errlen)
{
	char cert_path[PATH_MAX], key_path[PATH_MAX];
	BIO *kb = NULL, *cb = NULL;
	int rc;

	if (!seg_ok(ns, strlen(ns)) || !seg_ok(sa, strlen(sa)))
		return fail(err, errlen, -EINVAL, "'%s'/'%s' is not a namespace/service account", ns, sa);
	if (snprintf(cert_path, sizeof(cert_path), "%s/%s.%s.cert.pem", dir, ns, sa) >= PATH_MAX ||
	    snprintf(key_path, sizeof(key_path), "%s/%s.%s.key.pem", dir, ns, sa) >= PATH_MAX)
		return fail(err, errlen, -ENAMETOOLONG, "%s: name too long", dir);
	rc = mkdir_private(dir, err, errlen);
	if (rc)
		return rc;
	kb = pem_key(c->key);
	cb = pem_certs(c->leaf, c->issuer);
	if (!kb || !cb)
		rc = fail(err, errlen, -ENOMEM, "out of memory");
	if (!rc)
		rc = write_replace(key_path, kb, 0600, err, errlen);
	if (!rc)
		rc = write_replace(cert_path, cb, 0644, err, errlen);
	BIO_free(kb);
	BIO_free(cb);
	return rc;
}

int wl_cert_write(const struct wl_cert *c, const char *ns, const char *sa,
		  const char *dir)
{
	return cert_write(c, ns, sa, dir, NULL, 0);
}

/* --- TLS ------------------------------------------------------------------ */

/* What a context checks its peers against (SSL_CTX ex_data). */
struct ctx_info {
	char td[SKM_SPIFFE_MAX];
	int server;
};

/* Per connection (SSL ex_data, made on first use): the identity the
 * client expects and why the handshake failed. */
struct tls_state {
	int expect_set;			/* tls_expect_peer() was called */
	char expect[SKM_SPIFFE_MAX];
	char why[SKM_REASON_MAX];
	enum tls_fail reason;
};

static int ssl_idx = -1, ctx_idx = -1;
static CRYPTO_ONCE idx_once = CRYPTO_ONCE_STATIC_INIT;

static void ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
		    long argl, void *argp)
{
	free(ptr);
}

static void idx_init(void)
{
	ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, ex_free);
	ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ex_free);
}

static int idx_ready(void)
{
	return CRYPTO_THREAD_run_once(&idx_once, idx_init) && ssl_idx >= 0 && ctx_idx >= 0;
}

/* SSL's state, made when CREATE; NULL when there is none (or no memory). */
static struct tls_state *tls_state(const SSL *ssl, int create)
{
	struct tls_state *st;

	if (!idx_ready())
		return NULL;
	st = SSL_get_ex_data(ssl, ssl_idx);
	if (st || !create)
		return st;
	st = calloc(1, sizeof(*st));
	if (st && !SSL_set_ex_data((SSL *)ssl, ssl_idx, st)) {
		free(st);
		st = NULL;
	}
	return st;
}

/* Records why SSL's handshake failed (REASON, and in words), unless a
 * reason is known already: the first one is the cause, what follows is
 * its echo. */
__attribute__((format(printf, 3, 4)))
static void set_why(const SSL *ssl, enum tls_fail reason, const char *fmt, ...)
{
	struct tls_state *st = tls_state(ssl, 1);
	va_list ap;

	if (!st || st->why[0])
		return;
	st->reason = reason;
	va_start(ap, fmt);
	vsnprintf(st->why, sizeof(st->why), fmt, ap);
	va_end(ap);
}

/* The SPIFFE ID of certificate X into BUF: 0, or a negative errno with
 * the reason in WHY (when given). */
static int cert_spiffe_id(X509 *x, char *buf, size_t len, char *why, size_t whylen)
{
	GENERAL_NAMES *gens;
	const GENERAL_NAME *uri = NULL;
	int crit, nuri = 0, rc = 0;

	gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_URI) {
			uri = g;
			nuri++;
		}
	}
	if (!nuri) {
		rc = fail(why, whylen, -ENOENT, "no SPIFFE URI SAN");
	} else if (nuri > 1) {
		rc = fail(why, whylen, -EINVAL, "%d URI SANs: a SPIFFE certificate has exactly one", nuri);
	} else {
		const ASN1_STRING *s = uri->d.uniformResourceIdentifier;
		const char *p = (const char *)ASN1_STRING_get0_data(s);
		int n = ASN1_STRING_length(s);

		if (n <= 0 || memchr(p, '\0', n)) {
			rc = fail(why, whylen, -EINVAL, "URI SAN is not a SPIFFE ID");
		} else if ((size_t)n >= len) {
			rc = fail(why, whylen, -ENAMETOOLONG, "URI SAN is too long for a SPIFFE ID");
		} else {
			memcpy(buf, p, n);
			buf[n] = '\0';
			if (spiffe_parse(buf, NULL, 0, NULL, 0, NULL, 0))
				rc = fail(why, whylen, -EINVAL,
					  "URI SAN %s is not a SPIFFE ID spiffe://TD/ns/NS/sa/SA", buf);
		}
	}
	GENERAL_NAMES_free(gens);
	ERR_clear_error();
	return rc;
}


/* A SPIFFE X.509-SVID leaf must be no CA: not CA:TRUE in basicConstraints
 * and no keyCertSign or cRLSign in keyUsage, whether or not OpenSSL would
 * take it for a CA (it does not for CA:TRUE without keyCertSign). */
static int leaf_is_ca(X509 *leaf)
{
	uint32_t flags = X509_get_extension_flags(leaf);

	return X509_check_ca(leaf) || (flags & EXFLAG_CA) ||
	       ((flags & EXFLAG_KUSAGE) &&
		(X509_get_key_usage(leaf) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)));
}
/* The mesh's checks of a peer's leaf, after its chain verified: one
 * SPIFFE ID, in our trust domain, the expected one (client side). */
static int check_leaf(SSL *ssl, X509 *leaf)
{
	const SSL_CTX *ctx = SSL_get_SSL_CTX(ssl);
	const struct ctx_info *ci = SSL_CTX_get_ex_data(ctx, ctx_idx);
	struct tls_state *st = tls_state(ssl, 0);
	char id[SKM_SPIFFE_MAX], td[SKM_SPIFFE_MAX], why[SKM_REASON_MAX];
	const unsigned char *alpn;
	unsigned int alpn_len;

	if (!ci) {
		set_why(ssl, TLS_FAIL_OTHER, "context has no trust domain");
		return 0;
	}
	if (cert_spiffe_id(leaf, id, sizeof(id), why, sizeof(why))) {
		set_why(ssl, TLS_FAIL_NO_SPIFFE, "%s", why);
		return 0;
	}
	if (leaf_is_ca(leaf)) {
		set_why(ssl, TLS_FAIL_OTHER, "%s: the leaf certificate is a CA", id);
		return 0;
	}
	spiffe_parse(id, td, sizeof(td), NULL, 0, NULL, 0);
	if (strcmp(td, ci->td)) {
		set_why(ssl, TLS_FAIL_WRONG_TD, "trust domain %s is not %s", td, ci->td);
		return 0;
	}
	if (ci->server)
		return 1;
	/* fail closed: a client that was never told whom to expect (or
	 * whose state for it could not be had) trusts no server */
	if (!st || !st->expect_set) {
		set_why(ssl, TLS_FAIL_WRONG_PEER, "server is %s but no identity was expected", id);
		return 0;
	}
	if (st->expect[0] && strcmp(id, st->expect)) {
		set_why(ssl, TLS_FAIL_WRONG_PEER, "server is %s but %s was expected", id,
			st->expect);
		return 0;
	}
	/* TLS 1.3 sends ALPN before the certificate: a server that did not
	 * pick h2 is refused here, before any byte of ours goes to it */
	SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
	if (alpn_len != 2 || memcmp(alpn, "h2", 2)) {
		set_why(ssl, TLS_FAIL_NO_ALPN, "server did not select ALPN h2");
		return 0;
	}
	return 1;
}

static int verify_cb(int ok, X509_STORE_CTX *sctx)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
	int e = X509_STORE_CTX_get_error(sctx);

	if (!ssl)
		return ok;
	if (!ok) {
		switch (e) {
		case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
		case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
		case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		case X509_V_ERR_CERT_UNTRUSTED:
			set_why(ssl, TLS_FAIL_UNTRUSTED, "not signed by a mesh root");
			break;
		case X509_V_ERR_CERT_HAS_EXPIRED:
		case X509_V_ERR_CERT_NOT_YET_VALID:
			set_why(ssl, TLS_FAIL_EXPIRED, "%s", X509_verify_cert_error_string(e));
			break;
		default:
			set_why(ssl, TLS_FAIL_OTHER, "%s", X509_verify_cert_error_string(e));
		}
		return 0;
	}
	if (X509_STORE_CTX_get_error_depth(sctx) != 0)
		return 1;
	if (!check_leaf(ssl, X509_STORE_CTX_get_current_cert(sctx))) {
		X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return 1;
}

/* Names the failures OpenSSL decides without asking verify_cb: a client
 * that sent no certificate or no TLS 1.3, and the peer's refusals. */
static void info_cb(const SSL *ssl, int where, int ret)
{
	int desc = ret & 0xff;

	if (!(where & SSL_CB_ALERT) || (ret >> 8) != SSL3_AL_FATAL)
		return;
	if (!(where & SSL_CB_WRITE))
		set_why(ssl, TLS_FAIL_PEER_ALERT, "peer refused the handshake: %s",
			SSL_alert_desc_string_long(ret));
	else if (desc == SSL_AD_CERTIFICATE_REQUIRED && SSL_is_server((SSL *)ssl))
		set_why(ssl, TLS_FAIL_NO_CLIENT_CERT, "no client certificate");
	else if (desc == SSL_AD_PROTOCOL_VERSION)
		set_why(ssl, TLS_FAIL_VERSION, "peer does not offer TLS 1.3");
}

/* A client that sends no ALPN at all never reaches alpn_cb. */
static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
	const unsigned char *p;
	size_t n;

	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
				      &p, &n))
		return SSL_CLIENT_HELLO_SUCCESS;
	set_why(ssl, TLS_FAIL_NO_ALPN, "client did not offer ALPN h2");
	*al = SSL_AD_NO_APPLICATION_PROTOCOL;
	return SSL_CLIENT_HELLO_ERROR;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	if (SSL_select_next_proto((unsigned char **)out, outlen, alpn_h2, sizeof(alpn_h2),
				  in, inlen) == OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	set_why(ssl, TLS_FAIL_NO_ALPN, "client did not offer ALPN h2");
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

SSL_CTX *tls_ctx_store(X509_STORE *store, const struct wl_cert *c, const char *td,
		       int server)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	struct ctx_info *ci = calloc(1, sizeof(*ci));

	if (!ctx || !ci || !idx_ready() || !td || strlen(td) >= sizeof(ci->td))
		goto out_free;
	strcpy(ci->td, td);
	ci->server = server;
	if (!SSL_CTX_set_ex_data(ctx, ctx_idx, ci))
		goto out_free;
	ci = NULL;		/* the context's now */

	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, SKM_TLS_SUITES) ||
	    !SSL_CTX_set1_groups_list(ctx, SKM_TLS_GROUPS) ||
	    !SSL_CTX_use_certificate(ctx, c->leaf) ||
	    !SSL_CTX_use_PrivateKey(ctx, c->key) ||
	    !SSL_CTX_check_private_key(ctx))
		goto out_free;
	/* an intermediate signer travels with the leaf; a root never does */
	if (c->issuer && X509_check_issued(c->issuer, c->issuer) != X509_V_OK &&
	    !SSL_CTX_add1_chain_cert(ctx, c->issuer))
		goto out_free;
	for (int i = 0; c->chain && i < sk_X509_num(c->chain); i++) {
		X509 *x = sk_X509_value(c->chain, i);

		if (x != c->issuer && X509_check_issued(x, x) != X509_V_OK &&
		    !SSL_CTX_add1_chain_cert(ctx, x))
			goto out_free;
	}
	SSL_CTX_set1_cert_store(ctx, store);
	/* no resumption: every connection shows and checks certificates */
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_info_callback(ctx, info_cb);
	if (server) {
		SSL_CTX_set_num_tickets(ctx, 0);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				   verify_cb);
		SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
		SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
		if (SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2)))	/* 0: ok */
			goto out_free;
	}
	return ctx;

out_free:
	free(ci);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

SSL_CTX *tls_server_ctx(const struct mesh_ca *ca, const struct wl_cert *c, const char *td)
{
	return tls_ctx_store(ca->store, c, td, 1);
}

SSL_CTX *tls_client_ctx(const struct mesh_ca *ca, const struct wl_cert *c, const char *td)
{
	return tls_ctx_store(ca->store, c, td, 0);
}

int tls_expect_peer(SSL *ssl, const char *id)
{
	struct tls_state *st;

	if (id && spiffe_parse(id, NULL, 0, NULL, 0, NULL, 0))
		return -EINVAL;
	if (id && strlen(id) >= sizeof(st->expect))
		return -ENAMETOOLONG;
	st = tls_state(ssl, 1);
	if (!st)
		return -ENOMEM;
	snprintf(st->expect, sizeof(st->expect), "%s", id ?: "");
	st->expect_set = 1;
	return 0;
}

int tls_peer_id(SSL *ssl, char *buf, size_t len)
{
	X509 *peer = SSL_get0_peer_certificate(ssl);

	if (!peer)
		return -ENOENT;
	if (SSL_get_verify_result(ssl) != X509_V_OK)
		return -EPERM;
	return cert_spiffe_id(peer, buf, len, NULL, 0);
}

const char *tls_verify_error(SSL *ssl)
{
	struct tls_state *st = tls_state(ssl, 0);

	return st && st->why[0] ? st->why : NULL;
}

enum tls_fail tls_verify_reason(SSL *ssl)
{
	struct tls_state *st = tls_state(ssl, 0);

	return st && st->why[0] ? st->reason : TLS_FAIL_NONE;
}

/* --- signers ------------------------------------------------------------ */

void sign_res_clear(struct sign_res *res)
{
	X509_free(res->leaf);
	sk_X509_pop_free(res->chain, X509_free);
	memset(res, 0, sizeof(*res));
}

/* The trust domain a mesh CA certificate names in its URI SAN
 * (spiffe://TD, as meshctl ca init writes it): 1 and TD in BUF, or 0 when
 * it names none (a CA from elsewhere need not). */
static int ca_trust_domain(X509 *x, char *buf, size_t len)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int found = 0;

	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const char *p;
		int n;

		if (g->type != GEN_URI)
			continue;
		p = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
		n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
		if (n > 9 && !strncmp(p, "spiffe://", 9) && !memchr(p + 9, '/', n - 9) &&
		    !memchr(p, '\0', n) && (size_t)(n - 9) < len) {
			memcpy(buf, p + 9, n - 9);
			buf[n - 9] = 0;
			found = 1;
		}
	}
	GENERAL_NAMES_free(gens);
	ERR_clear_error();
	return found;
}

/* The local CA of --ca-dir: signs at once, with the root key in memory. */
struct local_signer {
	struct cert_signer s;
	char *dir;
	struct mesh_ca *ca;
};

static int local_refresh(struct cert_signer *s, char *err, size_t errlen)
{
	struct local_signer *l = (struct local_signer *)s;
	struct mesh_ca *ca;
	int rc = mesh_ca_load(l->dir, &ca, err, errlen);

	if (rc)
		return rc;
	mesh_ca_free(l->ca);
	l->ca = ca;
	return 1;
}

static X509_STORE *local_store(struct cert_signer *s)
{
	return ((struct local_signer *)s)->ca->store;
}

static int local_sign(struct cert_signer *s, const struct sign_req *r, struct sign_res *out)
{
	struct local_signer *l = (struct local_signer *)s;

	memset(out, 0, sizeof(*out));
	out->tag = r->tag;
	snprintf(out->id, sizeof(out->id), "%s", r->id);
	out->leaf = mesh_ca_certify(l->ca, r->id, r->key, r->now, r->lifetime_s,
				 out->why, sizeof(out->why));
	if (!out->leaf) {
		out->rc = -EINVAL;
		out->status = SIGN_STATUS_LOCAL;
		return out->rc;
	}
	/* what follows the leaf: the signer, then its issuers */
	out->chain = sk_X509_new_null();
	for (int i = 0; out->chain && i < sk_X509_num(l->ca->chain); i++) {
		X509 *x = sk_X509_value(l->ca->chain, i);

		if (!sk_X509_push(out->chain, x)) {
			sk_X509_pop_free(out->chain, X509_free);
			out->chain = NULL;
			break;
		}
		X509_up_ref(x);
	}
	if (!out->chain || !sk_X509_num(out->chain)) {
		sign_res_clear(out);
		out->rc = -ENOMEM;
		out->status = SIGN_STATUS_LOCAL;
		snprintf(out->why, sizeof(out->why), "out of memory");
		return out->rc;
	}
	return 0;
}

static int local_fd(struct cert_signer *s)
{
	return -1;
}

static int local_inflight(struct cert_signer *s)
{
	return 0;
}

static void local_free(struct cert_signer *s)
{
	struct local_signer *l = (struct local_signer *)s;

	mesh_ca_free(l->ca);
	free(l->dir);
	free(l);
}

static const struct cert_signer_ops local_ops = {
	.kind = "local CA",
	.refresh = local_refresh,
	.store = local_store,
	.sign = local_sign,
	.fd = local_fd,
	.inflight = local_inflight,
	.free = local_free,
};

int local_signer_new(const char *ca_dir, const char *td, struct cert_signer **out,
		     char *err, size_t errlen)
{
	struct local_signer *l = calloc(1, sizeof(*l));
	char ca_td[256];
	int rc;

	*out = NULL;
	if (!l || !(l->dir = strdup(ca_dir))) {
		free(l);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	l->s.ops = &local_ops;
	rc = mesh_ca_load(l->dir, &l->ca, err, errlen);
	/* Certificates for one trust domain signed by a CA made for another
	 * would be refused by every peer of that CA's mesh: say so now. */
	if (!rc && ca_trust_domain(l->ca->signer, ca_td, sizeof(ca_td)) && strcmp(ca_td, td))
		rc = fail(err, errlen, -EINVAL, "the CA is for trust domain %s (its URI SAN), "
			  "meshd runs with trust domain %s: start meshd with --trust-domain %s, "
			  "or make a CA with meshctl ca init --trust-domain %s", ca_td, td,
			  ca_td, td);
	if (rc) {
		local_free(&l->s);
		return rc;
	}
	*out = &l->s;
	return 0;
}

/* --- certmgr ------------------------------------------------------------- */

struct cm_entry {
	char *ns, *sa;
	char id[SKM_SPIFFE_MAX];
	struct wl_cert *cert;
	SSL_CTX *sctx, *cctx;
	SSL_CTX *old_sctx, *old_cctx;	/* replaced outside a tick: freed
					 * at the next one (borrowed until) */
	EVP_PKEY *pending;	/* the key of a request not answered yet */
	uint64_t tag;		/* of that request */
	time_t pending_since;
	time_t renew_at;	/* half-life of cert */
	time_t retry_at;	/* 0: no failure pending */
	int failures;		/* in a row */
	int unwritten;		/* out_dir lacks the current cert */
	int wanted;		/* a local pod has this identity */
	char why[SKM_REASON_MAX];	/* the last failure */
};

struct certmgr {
	char *td, *out_dir;
	int lifetime_s;
	void (*warn)(const char *msg);
	struct cert_signer *signer;
	int async;		/* the signer answers later */
	int trust_changed;	/* contexts are due for the new bundle */
	uint64_t next_tag;
	struct certmgr_stats st;
	struct cm_entry **v;
	size_t n, cap;
};

static void entry_free(struct cm_entry *e)
{
	SSL_CTX_free(e->sctx);
	SSL_CTX_free(e->cctx);
	SSL_CTX_free(e->old_sctx);
	SSL_CTX_free(e->old_cctx);
	wl_cert_free(e->cert);
	EVP_PKEY_free(e->pending);
	free(e->ns);
	free(e->sa);
	free(e);
}

void certmgr_free(struct certmgr *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		entry_free(m->v[i]);
	free(m->v);
	if (m->signer)
		m->signer->ops->free(m->signer);
	free(m->td);
	free(m->out_dir);
	free(m);
}

int certmgr_new(const struct certmgr_opts *o, struct certmgr **out,
		char *err, size_t errlen)
{
	struct certmgr *m;
	int rc;

	*out = NULL;
	if (!o->td || !td_ok(o->td, strlen(o->td)) || !!o->ca_dir == !!o->signer ||
	    o->lifetime_s < 0) {
		if (o->signer)
			o->signer->ops->free(o->signer);
		if (!o->td || !td_ok(o->td, strlen(o->td)))
			return fail(err, errlen, -EINVAL, "trust domain '%s' is not valid",
				    o->td ?: "");
		if (o->lifetime_s < 0)
			return fail(err, errlen, -EINVAL, "certificate lifetime %d s",
				    o->lifetime_s);
		return fail(err, errlen, -EINVAL, "give a CA folder or a signer, one of them");
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		if (o->signer)
			o->signer->ops->free(o->signer);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	m->signer = o->signer;
	m->td = strdup(o->td);
	m->out_dir = o->out_dir ? strdup(o->out_dir) : NULL;
	m->lifetime_s = o->lifetime_s ?: SKM_CERT_LIFETIME_S;
	m->warn = o->warn;
	if (!m->td || (o->out_dir && !m->out_dir)) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		goto out_free;
	}
	rc = o->ca_dir ? local_signer_new(o->ca_dir, m->td, &m->signer, err, errlen) : 0;
	if (!rc && m->out_dir)
		rc = mkdir_private(m->out_dir, err, errlen);
	if (rc)
		goto out_free;
	m->async = m->signer->ops->poll != NULL;
	*out = m;
	return 0;

out_free:
	certmgr_free(m);
	return rc;
}

/* When E wants attention next: a retry, or the renewal at half-life. */
static time_t entry_next(const struct cm_entry *e)
{
	if (e->pending)
		return e->pending_since + SKM_PENDING_MAX_S;	/* the answer wakes it */
	if (e->retry_at && (!e->cert || e->retry_at < e->renew_at))
		return e->retry_at;
	return e->cert ? e->renew_at : 0;
}

static int entry_valid(const struct cm_entry *e, time_t now)
{
	return e->cert && now < e->cert->not_after;
}

/* Replaces E's contexts with ones for its certificate and the signer's
 * trust bundle; the old ones are freed now, or at the next tick when
 * DEFER (a caller may still hold them). */
static int entry_contexts(struct certmgr *m, struct cm_entry *e, int defer)
{
	X509_STORE *store = m->signer->ops->store(m->signer);
	SSL_CTX *sctx = tls_ctx_store(store, e->cert, m->td, 1);
	SSL_CTX *cctx = tls_ctx_store(store, e->cert, m->td, 0);

	if (!sctx || !cctx) {
		snprintf(e->why, sizeof(e->why), "no TLS context for %s", e->id);
		SSL_CTX_free(sctx);
		SSL_CTX_free(cctx);
		return -ENOMEM;
	}
	if (defer) {
		SSL_CTX_free(e->old_sctx);
		SSL_CTX_free(e->old_cctx);
		e->old_sctx = e->sctx;
		e->old_cctx = e->cctx;
	} else {
		SSL_CTX_free(e->sctx);
		SSL_CTX_free(e->cctx);
	}
	e->sctx = sctx;
	e->cctx = cctx;
	return 0;
}

/* Checks a signer's answer for E's request and makes it E's certificate:
 * the leaf is for KEY and names exactly E's identity, and chains to the
 * trust bundle (a CA that answers with someone else's certificate, or
 * one peers would refuse, is not believed). Takes KEY. */
static int entry_install(struct certmgr *m, struct cm_entry *e, EVP_PKEY *key,
			 struct sign_res *r, time_t now, int defer)
{
	X509_STORE_CTX *vctx = NULL;
	struct wl_cert *c = calloc(1, sizeof(*c));
	char id[SKM_SPIFFE_MAX];
	int rc = -EINVAL;

	if (!c) {
		EVP_PKEY_free(key);
		snprintf(e->why, sizeof(e->why), "out of memory");
		return -ENOMEM;
	}
	c->key = key;
	c->leaf = r->leaf;
	r->leaf = NULL;
	c->chain = r->chain;
	r->chain = NULL;
	snprintf(c->id, sizeof(c->id), "%s", e->id);
	if (!X509_check_private_key(c->leaf, key)) {
		snprintf(e->why, sizeof(e->why), "the CA's certificate is not for the key asked with");
		goto out_free;
	}
	if (cert_spiffe_id(c->leaf, id, sizeof(id), NULL, 0) || strcmp(id, e->id)) {
		snprintf(e->why, sizeof(e->why), "the CA's certificate is not for %s", e->id);
		goto out_free;
	}
	if (leaf_is_ca(c->leaf)) {
		snprintf(e->why, sizeof(e->why), "the CA's certificate for %s is a CA", e->id);
		goto out_free;
	}
	vctx = X509_STORE_CTX_new();
	if (!vctx || !X509_STORE_CTX_init(vctx, m->signer->ops->store(m->signer), c->leaf,
					  c->chain)) {
		rc = -ENOMEM;
		snprintf(e->why, sizeof(e->why), "out of memory");
		goto out_free;
	}
	/* the chain, not the clock: validity is the handshakes' business,
	 * and a CA may be younger than a backdated notBefore */
	X509_STORE_CTX_set_flags(vctx, X509_V_FLAG_NO_CHECK_TIME);
	if (X509_verify_cert(vctx) != 1) {
		snprintf(e->why, sizeof(e->why), "the CA's certificate for %s does not verify "
			 "against the trust bundle: %s", e->id,
			 X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
		goto out_free;
	}
	c->not_before = asn1_time(X509_get0_notBefore(c->leaf));
	c->not_after = asn1_time(X509_get0_notAfter(c->leaf));
	if (c->chain && sk_X509_num(c->chain)) {
		c->issuer = sk_X509_value(c->chain, 0);
		X509_up_ref(c->issuer);
	}
	X509_STORE_CTX_free(vctx);
	vctx = NULL;
	{
		struct wl_cert *old = e->cert;

		e->cert = c;
		rc = entry_contexts(m, e, defer);
		if (rc) {
			e->cert = old;
			goto out_free;
		}
		if (old)
			m->st.renewed++;
		else
			m->st.issued++;
		wl_cert_free(old);
	}
	e->renew_at = now + (c->not_after - now) / 2;
	e->unwritten = !!m->out_dir;
	return 0;

out_free:
	X509_STORE_CTX_free(vctx);
	wl_cert_free(c);
	ERR_clear_error();
	return rc;
}

/* Asks the signer for a certificate of E with a new key: 0 when it is in
 * place, -EINPROGRESS when the answer comes later, or a negative errno
 * (reason in E->why, counted). */
static int entry_issue(struct certmgr *m, struct cm_entry *e, time_t now, int defer)
{
	struct sign_req r = { .lifetime_s = m->lifetime_s, .now = now, .tag = ++m->next_tag };
	struct sign_res res = {};
	int rc;

	r.key = wl_key_new();
	if (!r.key) {
		snprintf(e->why, sizeof(e->why), "cannot make a key");
		m->st.failed[SIGN_STATUS_LOCAL]++;
		return -ENOMEM;
	}
	snprintf(r.id, sizeof(r.id), "%s", e->id);
	rc = m->signer->ops->sign(m->signer, &r, &res);
	if (rc == -EINPROGRESS) {
		EVP_PKEY_free(e->pending);
		e->pending = r.key;
		e->tag = r.tag;
		e->pending_since = now;
		return rc;
	}
	if (!rc)
		rc = entry_install(m, e, r.key, &res, now, defer);
	else {
		snprintf(e->why, sizeof(e->why), "%s", res.why);
		EVP_PKEY_free(r.key);
	}
	if (rc)
		m->st.failed[res.status > 0 && res.status <= SIGN_STATUS_MAX ?
			     res.status : SIGN_STATUS_LOCAL]++;
	sign_res_clear(&res);
	return rc;
}

/* Counts E's failure at NOW: a retry 1 s doubling to SKM_RETRY_MAX_S. */
static void entry_failed(struct certmgr *m, struct cm_entry *e, time_t now)
{
	e->failures++;
	e->retry_at = now + (e->failures > 9 ? SKM_RETRY_MAX_S :
			     (1 << (e->failures - 1)) < SKM_RETRY_MAX_S ?
			     (1 << (e->failures - 1)) : SKM_RETRY_MAX_S);
	if (e->renew_at <= now)		/* the renewal itself failed */
		e->renew_at = e->retry_at;
	if (m->warn) {
		char msg[SKM_REASON_MAX + 160];

		snprintf(msg, sizeof(msg),
			 "certificate of %s/%s: %s (%d failure%s in a row, retry in %ld s%s)",
			 e->ns, e->sa, e->why, e->failures, e->failures > 1 ? "s" : "",
			 (long)(e->retry_at - now),
			 entry_valid(e, now) ? ", the current one stays in use" : "");
		m->warn(msg);
	}
}

/* Writes E's files when they lag: 0, or -1 (reason in E->why). */
static int entry_write(struct certmgr *m, struct cm_entry *e)
{
	char why[SKM_REASON_MAX - 32];

	if (!e->cert || !e->unwritten)
		return 0;
	if (cert_write(e->cert, e->ns, e->sa, m->out_dir, why, sizeof(why))) {
		if (!e->why[0])
			snprintf(e->why, sizeof(e->why), "writing: %s", why);
		return -1;
	}
	e->unwritten = 0;
	return 0;
}

/*
 * One renewal of E at NOW: refresh the signer (on failure what it loaded
 * stays in use), ask for a certificate when it is due or unusable, write
 * the files when they lag. Any failure keeps what works and schedules a
 * retry; a retry only re-does what failed, so a broken CA folder does
 * not make a new key every retry. An answer that comes later finishes
 * the renewal in certmgr_tick().
 */
static void entry_renew(struct certmgr *m, struct cm_entry *e, time_t now, int defer)
{
	char why[SKM_REASON_MAX - 32];	/* room for what precedes it */
	int failed = 0, rc;

	if (e->pending)
		return;
	e->why[0] = '\0';
	rc = m->signer->ops->refresh(m->signer, why, sizeof(why));
	if (rc < 0) {
		snprintf(e->why, sizeof(e->why), "reading the CA: %s", why);
		failed = 1;
	} else if (rc > 0 && m->async) {
		m->trust_changed = 1;
	}
	if (!entry_valid(e, now) || now >= e->renew_at) {
		rc = entry_issue(m, e, now, defer);
		if (rc == -EINPROGRESS)
			return;
		if (rc)
			failed = 1;
	}
	if (entry_write(m, e))
		failed = 1;
	if (!failed) {
		e->failures = 0;
		e->retry_at = 0;
		return;
	}
	entry_failed(m, e, now);
}

static struct cm_entry *entry_find(struct certmgr *m, const char *ns, const char *sa)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->v[i]->ns, ns) && !strcmp(m->v[i]->sa, sa))
			return m->v[i];
	return NULL;
}

static struct cm_entry *entry_get(struct certmgr *m, const char *ns, const char *sa,
				  char *err, size_t errlen)
{
	char id[SKM_SPIFFE_MAX];
	struct cm_entry *e = entry_find(m, ns, sa);

	if (e)
		return e;
	if (spiffe_id(id, sizeof(id), m->td, ns, sa)) {
		fail(err, errlen, 0, "'%s'/'%s' is not a namespace/service account", ns, sa);
		return NULL;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 8;
		struct cm_entry **v = realloc(m->v, cap * sizeof(*v));

		if (!v)
			goto out_nomem;
		m->v = v;
		m->cap = cap;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		goto out_nomem;
	e->ns = strdup(ns);
	e->sa = strdup(sa);
	snprintf(e->id, sizeof(e->id), "%s", id);
	if (!e->ns || !e->sa) {
		entry_free(e);
		goto out_nomem;
	}
	m->v[m->n++] = e;
	return e;

out_nomem:
	fail(err, errlen, 0, "out of memory");
	return NULL;
}

/* NS/SA's entry with a certificate valid at NOW, or NULL (reason in ERR). */
static struct cm_entry *entry_ready(struct certmgr *m, const char *ns, const char *sa,
				    time_t now, char *err, size_t errlen)
{
	struct cm_entry *e = entry_get(m, ns, sa, err, errlen);

	if (!e)
		return NULL;
	if (!entry_valid(e, now) && (!e->retry_at || now >= e->retry_at))
		entry_renew(m, e, now, 1);
	if (entry_valid(e, now))
		return e;
	if (e->pending)
		fail(err, errlen, 0, "the certificate of %s/%s is asked for and not here yet",
		     ns, sa);
	else
		fail(err, errlen, 0, "no valid certificate for %s/%s: %s", ns, sa,
		     e->why[0] ? e->why : "expired");
	return NULL;
}

SSL_CTX *certmgr_server_ctx(struct certmgr *m, const char *ns, const char *sa,
			    time_t now, char *err, size_t errlen)
{
	struct cm_entry *e = entry_ready(m, ns, sa, now, err, errlen);

	return e ? e->sctx : NULL;
}

SSL_CTX *certmgr_client_ctx(struct certmgr *m, const char *ns, const char *sa,
			    time_t now, char *err, size_t errlen)
{
	struct cm_entry *e = entry_ready(m, ns, sa, now, err, errlen);

	return e ? e->cctx : NULL;
}

/* The signer's answers: each finishes its entry's request (an answer for
 * an entry dropped or asked again since is thrown away). */
static void take_answers(struct certmgr *m, time_t now)
{
	struct sign_res r;

	if (!m->signer->ops->poll)
		return;
	while (m->signer->ops->poll(m->signer, &r) == 1) {
		struct cm_entry *e = NULL;
		EVP_PKEY *key;
		int rc;

		for (size_t i = 0; i < m->n && !e; i++)
			if (m->v[i]->pending && m->v[i]->tag == r.tag)
				e = m->v[i];
		if (!e) {
			sign_res_clear(&r);
			continue;
		}
		key = e->pending;
		e->pending = NULL;
		e->why[0] = '\0';
		if (r.rc) {
			snprintf(e->why, sizeof(e->why), "%s", r.why);
			EVP_PKEY_free(key);
			rc = r.rc;
		} else {
			rc = entry_install(m, e, key, &r, now, 0);
		}
		if (rc)
			m->st.failed[r.status > 0 && r.status <= SIGN_STATUS_MAX ?
				     r.status : SIGN_STATUS_LOCAL]++;
		if (!rc)
			rc = entry_write(m, e);
		sign_res_clear(&r);
		if (!rc) {
			e->failures = 0;
			e->retry_at = 0;
		} else {
			entry_failed(m, e, now);
		}
	}
}

time_t certmgr_tick(struct certmgr *m, time_t now)
{
	time_t next = 0;
	int rebuild;

	take_answers(m, now);
	/* a changed trust bundle (a root added or removed) is in effect for
	 * new handshakes of every identity at once; one that cannot be used
	 * is said once (the signer notes the file it refused) and the roots
	 * loaded stay */
	if (m->async) {
		char why[SKM_REASON_MAX - 64];
		int rc = m->signer->ops->refresh(m->signer, why, sizeof(why));

		if (rc > 0)
			m->trust_changed = 1;
		if (rc < 0 && m->warn) {
			char msg[SKM_REASON_MAX];

			snprintf(msg, sizeof(msg), "trust bundle: %s (the roots loaded before "
				 "stay in use)", why);
			m->warn(msg);
		}
	}
	rebuild = m->trust_changed;
	m->trust_changed = 0;
	for (size_t i = 0; i < m->n; i++) {
		struct cm_entry *e = m->v[i];
		time_t t;

		SSL_CTX_free(e->old_sctx);
		SSL_CTX_free(e->old_cctx);
		e->old_sctx = e->old_cctx = NULL;
		if (rebuild && e->cert)
			entry_contexts(m, e, 0);
		t = entry_next(e);
		if (e->pending && t && now >= t) {
			/* a signer that never answers (it should, its calls
			 * have deadlines) costs a retry, not the identity */
			EVP_PKEY_free(e->pending);
			e->pending = NULL;
			snprintf(e->why, sizeof(e->why), "no answer from the %s in %d s",
				 m->signer->ops->kind, SKM_PENDING_MAX_S);
			m->st.failed[SIGN_STATUS_LOCAL]++;
			entry_failed(m, e, now);
			t = entry_next(e);
		} else if (t && now >= t) {
			entry_renew(m, e, now, 0);
			t = entry_next(e);
		}
		if (t && (!next || t < next))
			next = t;
	}
	/* the trust bundle of a remote CA is looked at every second */
	if (m->async && (!next || next > now + 1))
		next = now + 1;
	return next;
}

int certmgr_fd(struct certmgr *m)
{
	return m->signer->ops->fd(m->signer);
}

void certmgr_want_begin(struct certmgr *m)
{
	for (size_t i = 0; i < m->n; i++)
		m->v[i]->wanted = 0;
}

int certmgr_want(struct certmgr *m, const char *ns, const char *sa, time_t now)
{
	struct cm_entry *e = entry_get(m, ns, sa, NULL, 0);

	if (!e)
		return spiffe_id(NULL, 0, m->td, ns, sa) == -EINVAL ? -EINVAL : -ENOMEM;
	e->wanted = 1;
	/* a signer that answers later is asked now, so the certificate is
	 * there when the pod's first connection comes */
	if (m->async && !e->cert && !e->pending && !e->retry_at)
		entry_renew(m, e, now, 1);
	return 0;
}

void certmgr_want_end(struct certmgr *m)
{
	size_t j = 0;

	for (size_t i = 0; i < m->n; i++) {
		struct cm_entry *e = m->v[i];

		if (e->wanted) {
			m->v[j++] = e;
			continue;
		}
		/* the contexts may be borrowed no longer (see certmgr.h);
		 * live connections hold their own references */
		if (e->cert)
			m->st.dropped++;
		entry_free(e);
	}
	m->n = j;
}

void certmgr_foreach(struct certmgr *m,
		     void (*fn)(const struct wl_cert *c, int renew_failures, void *arg),
		     void *arg)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i]->cert)
			fn(m->v[i]->cert, m->v[i]->failures, arg);
}

void certmgr_stats(struct certmgr *m, struct certmgr_stats *st)
{
	*st = m->st;
	st->inflight = m->signer->ops->inflight(m->signer);
	st->held = 0;
	for (size_t i = 0; i < m->n; i++)
		st->held += !!m->v[i]->cert;
	st->roots = 0;
	{
		STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(
			m->signer->ops->store(m->signer));

		for (int i = 0; i < sk_X509_OBJECT_num(objs); i++)
			st->roots += X509_OBJECT_get_type(sk_X509_OBJECT_value(objs, i)) ==
				     X509_LU_X509;
	}
}
