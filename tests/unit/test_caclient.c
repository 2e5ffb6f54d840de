// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * certmgr over a signer that answers later, and the remote CA client's
 * worker (queue, batches, token, answers) over a transport in memory
 * that signs like a CA. The wire itself (gRPC over TLS to skmesh-ca) is
 * tests/e2e/test_ca_client.py's.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca.pb-c.h"
#include "caclient.h"
#include "certs.h"
#include "unit.h"

#define TD "cluster.local"

struct cfx {
	char dir[64], ca_dir[96], bundle[96], token[96];
	struct mesh_ca *ca;
};

static void path_at(char *out, size_t len, const char *dir, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static void put_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int cfx_setup(void **state)
{
	struct cfx *f = calloc(1, sizeof(*f));
	char err[256], src[128], cmd[512];

	assert_non_null(f);
	strcpy(f->dir, "/tmp/skm-caclient-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	path_at(f->ca_dir, sizeof(f->ca_dir), f->dir, "ca");
	assert_int_equal(ca_init(f->ca_dir, TD, 30, err, sizeof(err)), 0);
	assert_int_equal(mesh_ca_load(f->ca_dir, &f->ca, err, sizeof(err)), 0);
	/* what a node gets: the root certificate, never its key */
	path_at(f->bundle, sizeof(f->bundle), f->dir, "bundle.pem");
	path_at(src, sizeof(src), f->ca_dir, SKM_CA_CERT_FILE);
	snprintf(cmd, sizeof(cmd), "cp %s %s", src, f->bundle);
	assert_int_equal(system(cmd), 0);
	path_at(f->token, sizeof(f->token), f->dir, "token");
	put_file(f->token, "tok-1\n");
	*state = f;
	return 0;
}

static int cfx_teardown(void **state)
{
	struct cfx *f = *state;
	char cmd[128];

	mesh_ca_free(f->ca);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* --- a signer that answers when the test says ---------------------------- */

struct later {
	struct cert_signer s;
	struct cfx *f;
	struct sign_req reqs[16];
	int nreqs;
	struct sign_res ans[16];
	int nans;
};

static int later_refresh(struct cert_signer *s, char *err, size_t errlen)
{
	return 0;
}

static X509_STORE *later_store(struct cert_signer *s)
{
	struct later *l = (struct later *)s;
	X509_STORE *st;
	char err[256];

	/* the bundle of the CA's folder, made once */
	static X509_STORE *cached;
	static char cached_for[96];

	if (!cached || strcmp(cached_for, l->f->bundle)) {
		X509_STORE_free(cached);
		assert_int_equal(trust_bundle_load(l->f->bundle, &st, NULL, err, sizeof(err)), 0);
		cached = st;
		snprintf(cached_for, sizeof(cached_for), "%s", l->f->bundle);
	}
	return cached;
}

static int later_sign(struct cert_signer *s, const struct sign_req *r, struct sign_res *out)
{
	struct later *l = (struct later *)s;

	assert_true(l->nreqs < 16);
	l->reqs[l->nreqs] = *r;
	EVP_PKEY_up_ref(r->key);
	l->nreqs++;
	return -EINPROGRESS;
}

static int later_poll(struct cert_signer *s, struct sign_res *out)
{
	struct later *l = (struct later *)s;

	if (!l->nans)
		return 0;
	*out = l->ans[0];
	memmove(l->ans, l->ans + 1, --l->nans * sizeof(l->ans[0]));
	return 1;
}

static int later_fd(struct cert_signer *s)
{
	return -1;
}

static int later_inflight(struct cert_signer *s)
{
	struct later *l = (struct later *)s;

	return l->nreqs;
}

static void later_free(struct cert_signer *s)
{
	struct later *l = (struct later *)s;

	for (int i = 0; i < l->nreqs; i++)
		EVP_PKEY_free(l->reqs[i].key);
	for (int i = 0; i < l->nans; i++)
		sign_res_clear(&l->ans[i]);
}

static const struct cert_signer_ops later_ops = {
	.kind = "test", .refresh = later_refresh, .store = later_store, .sign = later_sign,
	.poll = later_poll, .fd = later_fd, .inflight = later_inflight, .free = later_free,
};

/* Answers the oldest request: signed by CA (the fixture's when NULL) for
 * ID (the one asked for when NULL) and KEY (the one asked with when
 * NULL), or the error STATUS. */
static void later_answer(struct later *l, struct mesh_ca *ca, const char *id, EVP_PKEY *key,
			 int status)
{
	struct sign_req r = l->reqs[0];
	struct sign_res *a = &l->ans[l->nans++];
	char err[256];

	memmove(l->reqs, l->reqs + 1, --l->nreqs * sizeof(l->reqs[0]));
	memset(a, 0, sizeof(*a));
	a->tag = r.tag;
	snprintf(a->id, sizeof(a->id), "%s", r.id);
	if (status) {
		a->rc = -EACCES;
		a->status = status;
		snprintf(a->why, sizeof(a->why), "refused by the test");
	} else {
		a->leaf = mesh_ca_certify(ca ? ca : l->f->ca, id ? id : r.id, key ? key : r.key,
				       r.now, r.lifetime_s, err, sizeof(err));
		assert_non_null(a->leaf);
	}
	EVP_PKEY_free(r.key);
}

static struct certmgr *later_mgr(struct later *l, struct cfx *f, int lifetime)
{
	struct certmgr_opts o = { .signer = &l->s, .td = TD, .lifetime_s = lifetime };
	struct certmgr *m;
	char err[256];

	memset(l, 0, sizeof(*l));
	l->s.ops = &later_ops;
	l->f = f;
	assert_int_equal(certmgr_new(&o, &m, err, sizeof(err)), 0);
	return m;
}

static void count_held(const struct wl_cert *c, int failures, void *arg)
{
	(*(int *)arg)++;
}

static int held(struct certmgr *m)
{
	int n = 0;

	certmgr_foreach(m, count_held, &n);
	return n;
}

static void test_async_issue_and_drop(void **state)
{
	struct cfx *f = *state;
	struct later l;
	struct certmgr *m = later_mgr(&l, f, 3600);
	struct certmgr_stats st;
	time_t now = time(NULL);
	char err[256];
	SSL_CTX *ctx;

	/* the first pod of an identity: asked at once, once */
	certmgr_want_begin(m);
	assert_int_equal(certmgr_want(m, "shop", "web", now), 0);
	assert_int_equal(certmgr_want(m, "shop", "web", now), 0);
	certmgr_want_end(m);
	assert_int_equal(l.nreqs, 1);
	assert_string_equal(l.reqs[0].id, "spiffe://" TD "/ns/shop/sa/web");
	assert_int_equal(l.reqs[0].lifetime_s, 3600);
	/* a handshake before the answer fails cleanly, and asks no more */
	assert_null(certmgr_server_ctx(m, "shop", "web", now, err, sizeof(err)));
	assert_non_null(strstr(err, "not here yet"));
	assert_int_equal(l.nreqs, 1);
	certmgr_stats(m, &st);
	assert_int_equal(st.inflight, 1);

	later_answer(&l, NULL, NULL, NULL, 0);
	certmgr_tick(m, now);
	ctx = certmgr_server_ctx(m, "shop", "web", now, err, sizeof(err));
	assert_non_null(ctx);
	assert_int_equal(held(m), 1);
	certmgr_stats(m, &st);
	assert_int_equal(st.issued, 1);
	assert_int_equal(st.held, 1);

	/* the last pod leaves: certificate and key are dropped */
	certmgr_want_begin(m);
	certmgr_want_end(m);
	assert_int_equal(held(m), 0);
	certmgr_stats(m, &st);
	assert_int_equal(st.dropped, 1);
	certmgr_free(m);
}

static void test_async_answers_checked(void **state)
{
	struct cfx *f = *state;
	struct later l;
	struct certmgr *m = later_mgr(&l, f, 3600);
	struct certmgr_stats st;
	struct mesh_ca *other;
	char err[256], odir[128];
	time_t now = time(NULL);
	EVP_PKEY *k2 = wl_key_new();

	path_at(odir, sizeof(odir), f->dir, "other-ca");
	assert_int_equal(ca_init(odir, TD, 30, err, sizeof(err)), 0);
	assert_int_equal(mesh_ca_load(odir, &other, err, sizeof(err)), 0);

	certmgr_want_begin(m);
	certmgr_want(m, "shop", "web", now);
	certmgr_want_end(m);
	/* another identity than asked for */
	later_answer(&l, NULL, "spiffe://" TD "/ns/shop/sa/admin", NULL, 0);
	certmgr_tick(m, now);
	assert_int_equal(held(m), 0);
	assert_null(certmgr_server_ctx(m, "shop", "web", now, err, sizeof(err)));
	assert_non_null(strstr(err, "not for spiffe://" TD "/ns/shop/sa/web"));

	/* the retry (1 s later): a certificate for another key */
	certmgr_tick(m, now + 1);
	assert_int_equal(l.nreqs, 1);
	later_answer(&l, NULL, NULL, k2, 0);
	certmgr_tick(m, now + 1);
	assert_int_equal(held(m), 0);

	/* then one from a CA outside the trust bundle */
	certmgr_tick(m, now + 3);
	assert_int_equal(l.nreqs, 1);
	later_answer(&l, other, NULL, NULL, 0);
	certmgr_tick(m, now + 3);
	assert_int_equal(held(m), 0);
	assert_null(certmgr_server_ctx(m, "shop", "web", now + 3, err, sizeof(err)));
	assert_non_null(strstr(err, "does not verify"));

	/* then the CA's refusal, counted by its status */
	certmgr_tick(m, now + 7);
	later_answer(&l, NULL, NULL, NULL, 7);
	certmgr_tick(m, now + 7);
	certmgr_stats(m, &st);
	assert_int_equal(st.failed[SIGN_STATUS_LOCAL], 3);
	assert_int_equal(st.failed[7], 1);
	assert_int_equal(st.issued, 0);
	/* backoff: no new request before 8 s have passed */
	certmgr_tick(m, now + 14);
	assert_int_equal(l.nreqs, 0);
	certmgr_tick(m, now + 15);
	assert_int_equal(l.nreqs, 1);
	later_answer(&l, NULL, NULL, NULL, 0);
	certmgr_tick(m, now + 15);
	assert_int_equal(held(m), 1);

	/* a signer that never answers: given up after 120 s, asked again */
	certmgr_want_begin(m);
	certmgr_want(m, "shop", "quiet", now + 15);
	certmgr_want_end(m);
	assert_int_equal(l.nreqs, 1);
	certmgr_tick(m, now + 134);
	certmgr_stats(m, &st);
	assert_int_equal(st.failed[SIGN_STATUS_LOCAL], 3);	/* still waits */
	certmgr_tick(m, now + 135);
	certmgr_stats(m, &st);
	assert_int_equal(st.failed[SIGN_STATUS_LOCAL], 4);
	certmgr_tick(m, now + 136);	/* the retry, 1 s later */
	assert_int_equal(l.nreqs, 2);

	EVP_PKEY_free(k2);
	mesh_ca_free(other);
	certmgr_free(m);
}

static void test_async_renewal_keeps_serving(void **state)
{
	struct cfx *f = *state;
	struct later l;
	struct certmgr *m = later_mgr(&l, f, 100);
	struct certmgr_stats st;
	time_t now = time(NULL);
	char err[256];
	SSL_CTX *c1, *c2;

	certmgr_want_begin(m);
	certmgr_want(m, "shop", "web", now);
	certmgr_want_end(m);
	later_answer(&l, NULL, NULL, NULL, 0);
	/* a signer that answers later: its bundle is looked at each second */
	assert_int_equal(certmgr_tick(m, now), now + 1);
	certmgr_tick(m, now + 49);
	assert_int_equal(l.nreqs, 0);		/* not due before half-life */
	c1 = certmgr_client_ctx(m, "shop", "web", now, err, sizeof(err));
	assert_non_null(c1);
	SSL_CTX_up_ref(c1);		/* as a live connection holds it */
	/* half-life: asked again; the old certificate serves meanwhile */
	certmgr_tick(m, now + 50);
	assert_int_equal(l.nreqs, 1);
	assert_ptr_equal(certmgr_client_ctx(m, "shop", "web", now + 50, err, sizeof(err)), c1);
	later_answer(&l, NULL, NULL, NULL, 0);
	certmgr_tick(m, now + 51);
	c2 = certmgr_client_ctx(m, "shop", "web", now + 51, err, sizeof(err));
	assert_non_null(c2);
	assert_ptr_not_equal(c1, c2);
	assert_non_null(SSL_CTX_get0_certificate(c1));	/* still whole */
	SSL_CTX_free(c1);
	certmgr_stats(m, &st);
	assert_int_equal(st.issued, 1);
	assert_int_equal(st.renewed, 1);
	certmgr_free(m);
}

/* --- the remote client's worker over a transport in memory --------------- */

struct memca {
	struct ca_transport tr;
	struct cfx *f;
	pthread_mutex_t lock;
	int calls, max_batch, hold;	/* hold: calls wait while set */
	char last_token[64];
	char last_impersonated[SKM_SPIFFE_MAX];
	int refuse_status;		/* answer every call with it */
};

/* The CA's side of one call: the request decoded as a CA would, its
 * CSR's SAN and ImpersonatedIdentity compared, the leaf signed. */
static void memca_one(struct memca *mc, struct ca_call *c)
{
	Istio__V1__Auth__IstioCertificateRequest *req =
		istio__v1__auth__istio_certificate_request__unpack(NULL, c->len, c->body);
	Istio__V1__Auth__IstioCertificateResponse resp =
		ISTIO__V1__AUTH__ISTIO_CERTIFICATE_RESPONSE__INIT;
	const char *imp = NULL;
	X509_REQ *csr;
	EVP_PKEY *pub;
	BIO *b;
	X509 *leaf;
	char *chain[1];
	char err[256];
	BUF_MEM *mem;

	assert_non_null(req);
	assert_non_null(req->metadata);
	for (size_t i = 0; i < req->metadata->n_fields; i++)
		if (!strcmp(req->metadata->fields[i]->key, "ImpersonatedIdentity"))
			imp = req->metadata->fields[i]->value->string_value;
	assert_non_null(imp);
	snprintf(mc->last_impersonated, sizeof(mc->last_impersonated), "%s", imp);
	b = BIO_new_mem_buf(req->csr, -1);
	csr = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
	BIO_free(b);
	assert_non_null(csr);
	pub = X509_REQ_get_pubkey(csr);
	assert_int_equal(X509_REQ_verify(csr, pub), 1);
	{
		STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(csr);
		GENERAL_NAMES *gens = NULL;

		for (int i = 0; i < sk_X509_EXTENSION_num(exts) && !gens; i++) {
			X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

			if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name)
				gens = X509V3_EXT_d2i(e);
		}
		assert_non_null(gens);
		assert_int_equal(sk_GENERAL_NAME_num(gens), 1);
		assert_string_equal(ASN1_STRING_get0_data(
			sk_GENERAL_NAME_value(gens, 0)->d.uniformResourceIdentifier), imp);
		GENERAL_NAMES_free(gens);
		sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	}
	if (mc->refuse_status) {
		c->status = mc->refuse_status;
		snprintf(c->msg, sizeof(c->msg), "refused");
	} else {
		leaf = mesh_ca_certify(mc->f->ca, imp, pub, time(NULL), (int)req->validity_duration,
				    err, sizeof(err));
		assert_non_null(leaf);
		b = BIO_new(BIO_s_mem());
		PEM_write_bio_X509(b, leaf);
		BIO_get_mem_ptr(b, &mem);
		chain[0] = strndup(mem->data, mem->length);
		BIO_free(b);
		X509_free(leaf);
		resp.n_cert_chain = 1;
		resp.cert_chain = chain;
		c->answer_len = istio__v1__auth__istio_certificate_response__get_packed_size(&resp);
		c->answer = malloc(c->answer_len);
		istio__v1__auth__istio_certificate_response__pack(&resp, c->answer);
		free(chain[0]);
		c->status = 0;
	}
	EVP_PKEY_free(pub);
	X509_REQ_free(csr);
	istio__v1__auth__istio_certificate_request__free_unpacked(req, NULL);
}

static void memca_call(struct ca_transport *tr, const char *token, struct ca_call *calls,
		       size_t n)
{
	struct memca *mc = (struct memca *)tr;

	for (;;) {
		int hold;

		pthread_mutex_lock(&mc->lock);
		hold = mc->hold;
		pthread_mutex_unlock(&mc->lock);
		if (!hold)
			break;
		usleep(1000);
	}
	pthread_mutex_lock(&mc->lock);
	mc->calls += n;
	if ((int)n > mc->max_batch)
		mc->max_batch = n;
	snprintf(mc->last_token, sizeof(mc->last_token), "%s", token);
	pthread_mutex_unlock(&mc->lock);
	for (size_t i = 0; i < n; i++)
		memca_one(mc, &calls[i]);
}

static void memca_free(struct ca_transport *tr)
{
	pthread_mutex_destroy(&((struct memca *)tr)->lock);
}

static struct cert_signer *memca_client(struct cfx *f, struct memca *mc, int inflight,
					int queued)
{
	struct ca_client_opts o = { .root_file = f->bundle, .token_file = f->token,
				    .max_inflight = inflight, .max_queued = queued };
	struct cert_signer *s;
	char err[256];

	memset(mc, 0, sizeof(*mc));
	mc->tr.call = memca_call;
	mc->tr.free = memca_free;
	mc->f = f;
	pthread_mutex_init(&mc->lock, NULL);
	if (ca_client_new_with(&o, &mc->tr, &s, err, sizeof(err)))
		fail_msg("ca_client_new_with: %s", err);
	return s;
}

/* Ticks M on its fd's wake-ups until N are held or 10 s passed. */
static void wait_held(struct certmgr *m, int n)
{
	for (int i = 0; i < 1000 && held(m) < n; i++) {
		struct pollfd p = { .fd = certmgr_fd(m), .events = POLLIN };

		poll(&p, 1, 10);
		certmgr_tick(m, time(NULL));
	}
	assert_int_equal(held(m), n);
}

static void test_worker_batches(void **state)
{
	struct cfx *f = *state;
	struct memca mc;
	struct certmgr_opts o = { .td = TD, .lifetime_s = 600 };
	struct certmgr_stats st;
	struct certmgr *m;
	char err[256], sa[16];
	time_t now = time(NULL);

	o.signer = memca_client(f, &mc, 4, 0);
	assert_int_equal(certmgr_new(&o, &m, err, sizeof(err)), 0);
	assert_true(certmgr_fd(m) >= 0);
	certmgr_want_begin(m);
	for (int i = 0; i < 40; i++) {
		snprintf(sa, sizeof(sa), "sa%d", i);
		assert_int_equal(certmgr_want(m, "shop", sa, now), 0);
	}
	certmgr_want_end(m);
	wait_held(m, 40);
	assert_int_equal(mc.calls, 40);
	assert_true(mc.max_batch >= 1 && mc.max_batch <= 4);	/* the bound */
	assert_string_equal(mc.last_token, "tok-1");
	certmgr_stats(m, &st);
	assert_int_equal(st.issued, 40);
	assert_int_equal(st.inflight, 0);

	/* the token rotates: the next request carries the new one */
	put_file(f->token, "tok-2\n");
	certmgr_want_begin(m);
	assert_int_equal(certmgr_want(m, "shop", "late", now), 0);
	certmgr_want_end(m);
	wait_held(m, 1);	/* the 40 others are gone with their pods */
	assert_string_equal(mc.last_token, "tok-2");
	assert_string_equal(mc.last_impersonated, "spiffe://" TD "/ns/shop/sa/late");
	certmgr_stats(m, &st);
	assert_int_equal(st.dropped, 40);
	certmgr_free(m);
}

static void test_worker_failures(void **state)
{
	struct cfx *f = *state;
	struct memca mc;
	struct certmgr_opts o = { .td = TD };
	struct certmgr_stats st;
	struct certmgr *m;
	char err[256];
	time_t now = time(NULL);

	o.signer = memca_client(f, &mc, 0, 0);
	assert_int_equal(certmgr_new(&o, &m, err, sizeof(err)), 0);
	/* the CA refuses: counted by its status, nothing held */
	mc.refuse_status = 7;
	certmgr_want_begin(m);
	certmgr_want(m, "shop", "web", now);
	certmgr_want_end(m);
	for (int i = 0; i < 500; i++) {
		certmgr_stats(m, &st);
		if (st.failed[7])
			break;
		usleep(10000);
		certmgr_tick(m, now);
	}
	assert_int_equal(st.failed[7], 1);
	assert_int_equal(held(m), 0);
	/* the token file is gone: failed here, no call made */
	assert_int_equal(unlink(f->token), 0);
	mc.refuse_status = 0;
	certmgr_tick(m, now + 1);		/* the retry */
	for (int i = 0; i < 500; i++) {
		certmgr_stats(m, &st);
		if (st.failed[SIGN_STATUS_LOCAL])
			break;
		usleep(10000);
		certmgr_tick(m, now + 1);
	}
	assert_int_equal(st.failed[SIGN_STATUS_LOCAL], 1);
	assert_int_equal(mc.calls, 1);
	assert_null(certmgr_server_ctx(m, "shop", "web", now + 1, err, sizeof(err)));
	assert_non_null(strstr(err, "token"));
	certmgr_free(m);
}

static void test_worker_queue_bound(void **state)
{
	struct cfx *f = *state;
	struct memca mc;
	struct cert_signer *s = memca_client(f, &mc, 1, 2);
	struct sign_req r = { .lifetime_s = 60, .now = time(NULL) };
	struct sign_res res;
	int rc, got = 0;

	pthread_mutex_lock(&mc.lock);
	mc.hold = 1;
	pthread_mutex_unlock(&mc.lock);
	r.key = wl_key_new();
	snprintf(r.id, sizeof(r.id), "spiffe://" TD "/ns/a/sa/b");
	/* one goes to the (held) worker, two wait, the next is refused */
	for (int i = 0; i < 3; i++) {
		r.tag = i + 1;
		assert_int_equal(s->ops->sign(s, &r, &res), -EINPROGRESS);
		if (!i)
			usleep(50000);	/* the worker takes it */
	}
	r.tag = 9;
	rc = s->ops->sign(s, &r, &res);
	assert_int_equal(rc, -EAGAIN);
	assert_non_null(strstr(res.why, "the limit"));
	assert_int_equal(s->ops->inflight(s), 3);
	pthread_mutex_lock(&mc.lock);
	mc.hold = 0;
	pthread_mutex_unlock(&mc.lock);
	for (int i = 0; i < 500 && got < 3; i++) {
		while (s->ops->poll(s, &res) == 1) {
			assert_int_equal(res.rc, 0);
			assert_non_null(res.leaf);
			sign_res_clear(&res);
			got++;
		}
		usleep(10000);
	}
	assert_int_equal(got, 3);
	assert_int_equal(s->ops->inflight(s), 0);
	EVP_PKEY_free(r.key);
	s->ops->free(s);
}

/* 1 when LEAF chains to STORE. */
static int verifies(X509_STORE *store, X509 *leaf)
{
	X509_STORE_CTX *v = X509_STORE_CTX_new();
	int ok;

	assert_non_null(v);
	assert_int_equal(X509_STORE_CTX_init(v, store, leaf, NULL), 1);
	ok = X509_verify_cert(v) == 1;
	X509_STORE_CTX_free(v);
	return ok;
}

/* Replaces PATH by a new file (a new inode, as kubelet's ConfigMap
 * update makes) holding the files of SRCS. */
static void replace_with(const char *path, const char *const *srcs, int n)
{
	char cmd[1024] = "cat", tmp[128];

	for (int i = 0; i < n; i++) {
		strncat(cmd, " ", sizeof(cmd) - strlen(cmd) - 1);
		strncat(cmd, srcs[i], sizeof(cmd) - strlen(cmd) - 1);
	}
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " > %s && mv %s %s", tmp, tmp,
		 path);
	assert_int_equal(system(cmd), 0);
}

static void test_bundle_rotation(void **state)
{
	struct cfx *f = *state;
	struct memca mc;
	struct cert_signer *s = memca_client(f, &mc, 0, 0);
	struct certmgr_opts o = { .td = TD, .signer = s };
	struct wl_cert *la, *lb;
	struct mesh_ca *b;
	struct certmgr *m;
	char bdir[128], a_pem[256], b_pem[256], key[256], err[512];
	const char *both[2] = { a_pem, b_pem }, *only_b[1] = { b_pem };
	const char *with_key[2] = { b_pem, key };
	time_t now = time(NULL);
	SSL_CTX *c1, *c2;

	path_at(bdir, sizeof(bdir), f->dir, "root-b");
	assert_int_equal(ca_init(bdir, TD, 30, err, sizeof(err)), 0);
	assert_int_equal(mesh_ca_load(bdir, &b, err, sizeof(err)), 0);
	path_at(a_pem, sizeof(a_pem), f->ca_dir, SKM_CA_CERT_FILE);
	path_at(b_pem, sizeof(b_pem), bdir, SKM_CA_CERT_FILE);
	path_at(key, sizeof(key), bdir, SKM_CA_KEY_FILE);
	assert_int_equal(mesh_ca_issue(f->ca, TD, "a", "x", now, 600, &la, err, sizeof(err)), 0);
	assert_int_equal(mesh_ca_issue(b, TD, "b", "y", now, 600, &lb, err, sizeof(err)), 0);

	assert_int_equal(certmgr_new(&o, &m, err, sizeof(err)), 0);
	certmgr_want_begin(m);
	certmgr_want(m, "shop", "web", now);
	certmgr_want_end(m);
	wait_held(m, 1);
	c1 = certmgr_server_ctx(m, "shop", "web", now, err, sizeof(err));
	assert_non_null(c1);
	assert_int_equal(s->ops->refresh(s, err, sizeof(err)), 0);	/* unchanged */
	assert_true(verifies(s->ops->store(s), la->leaf));
	assert_false(verifies(s->ops->store(s), lb->leaf));

	/* rotation, step one: both roots; new handshakes trust both */
	replace_with(f->bundle, both, 2);
	certmgr_tick(m, now);
	assert_true(verifies(s->ops->store(s), la->leaf));
	assert_true(verifies(s->ops->store(s), lb->leaf));
	c2 = certmgr_server_ctx(m, "shop", "web", now, err, sizeof(err));
	assert_non_null(c2);
	assert_ptr_not_equal(c1, c2);
	assert_ptr_equal(SSL_CTX_get_cert_store(c2), s->ops->store(s));
	/* then the old root leaves */
	replace_with(f->bundle, only_b, 1);
	assert_int_equal(s->ops->refresh(s, err, sizeof(err)), 1);
	assert_false(verifies(s->ops->store(s), la->leaf));
	assert_true(verifies(s->ops->store(s), lb->leaf));
	/* a bundle that holds a key is refused; the loaded one stays */
	replace_with(f->bundle, with_key, 2);
	assert_int_equal(s->ops->refresh(s, err, sizeof(err)), -EPERM);
	assert_true(verifies(s->ops->store(s), lb->leaf));

	wl_cert_free(la);
	wl_cert_free(lb);
	mesh_ca_free(b);
	certmgr_free(m);
}

static void test_bundle_with_key_refused(void **state)
{
	struct cfx *f = *state;
	char bad[128], cmd[512], key[128], err[512];
	X509_STORE *st = NULL;
	struct cert_signer *s;
	struct ca_client_opts o = { .addr = "127.0.0.1:1", .root_file = bad,
				    .token_file = f->token };

	path_at(bad, sizeof(bad), f->dir, "bundle-with-key.pem");
	path_at(key, sizeof(key), f->ca_dir, SKM_CA_KEY_FILE);
	snprintf(cmd, sizeof(cmd), "cat %s %s > %s", f->bundle, key, bad);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(trust_bundle_load(bad, &st, NULL, err, sizeof(err)), -EPERM);
	assert_null(st);
	assert_non_null(strstr(err, "private key"));
	/* so meshd refuses to start with it */
	assert_int_equal(ca_client_new(&o, &s, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "no CA key belongs on a node"));
	o.root_file = f->bundle;
	o.addr = "no-port";
	assert_int_equal(ca_client_new(&o, &s, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "HOST:PORT"));
}

static void test_key_hygiene(void **state)
{
	char err[256];
	size_t before;
	EVP_PKEY *k;

	(void)state;
	key_hygiene_init(err, sizeof(err));
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
	assert_true(CRYPTO_secure_malloc_initialized());
	/* a workload key's private half lands in the secure heap, and
	 * leaves it (wiped) when the key is freed */
	before = CRYPTO_secure_used();
	k = wl_key_new();
	assert_non_null(k);
	assert_true(CRYPTO_secure_used() > before);
	EVP_PKEY_free(k);
	assert_int_equal(CRYPTO_secure_used(), before);
}

int run_caclient_tests(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, cfx_setup, cfx_teardown)
	const struct CMUnitTest tests[] = {
		T(test_async_issue_and_drop),
		T(test_async_answers_checked),
		T(test_async_renewal_keeps_serving),
		T(test_worker_batches),
		T(test_worker_failures),
		T(test_worker_queue_bound),
		T(test_bundle_rotation),
		T(test_bundle_with_key_refused),
		cmocka_unit_test(test_key_hygiene),
	};
#undef T
	return cmocka_run_group_tests_name("caclient", tests, NULL, NULL);
}
