// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TokenReview and the pods of a node, for the CA service (auth.h). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "auth.h"
#include "kube.h"
#include "log.h"

#define REVIEW_SLOTS	4096		/* cached reviews (direct-mapped) */
#define NODE_SLOTS	256		/* cached pod lists, one per node */
#define MAX_REVIEW_BODY	(1U << 20)
#define MAX_POD_LIST	(64U << 20)
#define SA_PREFIX	"system:serviceaccount:"
#define EXTRA		"authentication.kubernetes.io/"

struct review_slot {
	uint8_t key[SHA256_DIGEST_LENGTH];
	double until;			/* CLOCK_MONOTONIC; 0: empty */
	struct ca_caller caller;
};

struct node_slot {
	char node[CA_NAME_MAX];
	double at;			/* when listed; 0: empty */
	char **sas;			/* "ns/sa" of its running pods */
	size_t n;
};

struct ca_auth {
	struct ca_auth_opts o;
	char *audience;
	pthread_mutex_t lock;
	struct ca_auth_stats st;
	struct review_slot reviews[REVIEW_SLOTS];
	struct node_slot nodes[NODE_SLOTS];
};

static enum ca_auth_res say(enum ca_auth_res r, char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static enum ca_auth_res say(enum ca_auth_res r, char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return r;
}

static void count(struct ca_auth *a, uint64_t *c)
{
	pthread_mutex_lock(&a->lock);
	(*c)++;
	pthread_mutex_unlock(&a->lock);
}

struct ca_auth *ca_auth_new(const struct ca_auth_opts *o)
{
	struct ca_auth *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	a->o = *o;
	a->audience = strdup(o->audience);
	if (!a->audience) {
		free(a);
		return NULL;
	}
	a->o.audience = a->audience;
	pthread_mutex_init(&a->lock, NULL);
	return a;
}

static void node_slot_clear(struct node_slot *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->sas[i]);
	free(s->sas);
	s->sas = NULL;
	s->n = 0;
	s->at = 0;
}

void ca_auth_free(struct ca_auth *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < NODE_SLOTS; i++)
		node_slot_clear(&a->nodes[i]);
	OPENSSL_cleanse(a->reviews, sizeof(a->reviews));
	pthread_mutex_destroy(&a->lock);
	free(a->audience);
	free(a);
}

void ca_auth_stats(struct ca_auth *a, struct ca_auth_stats *out)
{
	pthread_mutex_lock(&a->lock);
	*out = a->st;
	pthread_mutex_unlock(&a->lock);
}

/* A Kubernetes object name or namespace: a DNS subdomain. */
static int name_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n >= CA_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '-' || s[i] == '.'))
			return 0;
	return 1;
}

static int copy(char *dst, size_t len, const char *src)
{
	if (!src || strlen(src) >= len)
		return -1;
	strcpy(dst, src);
	return 0;
}

/* The first string of user.extra[KEY], or NULL. */
static const char *extra1(json_t *extra, const char *key)
{
	json_t *v = json_object_get(extra, key);

	return json_string_value(json_is_array(v) ? json_array_get(v, 0) : v);
}

/* The token's exp claim (unverified: used only once the API server has
 * accepted the token), or 0. */
static double token_exp(const char *token)
{
	const char *p = strchr(token, '.'), *e;
	char b64[4096];
	unsigned char raw[3072];
	size_t n, i;
	json_t *j;
	double exp = 0;
	int len;

	if (!p)
		return 0;
	e = strchr(++p, '.');
	n = e ? (size_t)(e - p) : 0;
	if (!n || n + 4 > sizeof(b64))
		return 0;
	for (i = 0; i < n; i++)
		b64[i] = p[i] == '-' ? '+' : p[i] == '_' ? '/' : p[i];
	while (i % 4)
		b64[i++] = '=';
	len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)i);
	if (len <= 0)
		return 0;
	j = json_loadb((const char *)raw, (size_t)len, JSON_DISABLE_EOF_CHECK, NULL);
	if (json_is_integer(json_object_get(j, "exp")))
		exp = (double)json_integer_value(json_object_get(j, "exp"));
	json_decref(j);
	return exp;
}

/* The node of the pod NS/NAME when its uid is UID. */
static enum ca_auth_res pod_node(struct ca_auth *a, const char *ns, const char *name,
				 const char *uid, char *node, size_t nodelen,
				 char *why, size_t whylen)
{
	char path[640], err[256];
	const char *got_uid, *n;
	char *body = NULL;
	size_t len;
	long code = 0;
	json_t *j;
	enum ca_auth_res r;

	if (!name_ok(ns) || !name_ok(name))
		return say(CA_AUTH_DENIED, why, whylen, "the token names a pod that cannot exist");
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", ns, name);
	if (kube_get(a->o.kube, path, MAX_REVIEW_BODY, &code, &body, &len, err, sizeof(err)))
		return say(CA_AUTH_UNAVAILABLE, why, whylen, "looking up the caller's pod: %s", err);
	if (code == 404) {
		free(body);
		return say(CA_AUTH_DENIED, why, whylen, "the pod the token is bound to is gone");
	}
	j = code == 200 ? json_loadb(body, len, 0, NULL) : NULL;
	free(body);
	if (!j)
		return say(CA_AUTH_UNAVAILABLE, why, whylen,
			   "looking up the caller's pod: HTTP %ld", code);
	got_uid = json_string_value(json_object_get(json_object_get(j, "metadata"), "uid"));
	n = json_string_value(json_object_get(json_object_get(j, "spec"), "nodeName"));
	if (!got_uid || !uid || strcmp(got_uid, uid))
		r = say(CA_AUTH_DENIED, why, whylen,
			"the pod the token is bound to was replaced (uid differs)");
	else if (!n || !n[0] || copy(node, nodelen, n))
		r = say(CA_AUTH_DENIED, why, whylen,
			"the pod the token is bound to is on no node");
	else
		r = CA_AUTH_OK;
	json_decref(j);
	return r;
}

/* One TokenReview. */
static enum ca_auth_res review(struct ca_auth *a, const char *token, struct ca_caller *c,
			       char *why, size_t whylen)
{
	json_t *req, *resp = NULL, *status, *user, *extra, *auds;
	const char *uname, *s;
	char *text, *body = NULL, err[256];
	size_t len, i;
	long code = 0;
	int rc, aud_ok = 0;
	enum ca_auth_res r = CA_AUTH_DENIED;

	req = json_pack("{s:s, s:s, s:{s:s, s:[s]}}", "apiVersion", "authentication.k8s.io/v1",
			"kind", "TokenReview", "spec", "token", token, "audiences",
			a->o.audience);
	text = req ? json_dumps(req, JSON_COMPACT) : NULL;
	if (req) {
		/* jansson keeps its own copy of the token: wipe it */
		json_t *spec = json_object_get(req, "spec");
		json_t *t = json_object_get(spec, "token");
		const char *tv = json_string_value(t);

		if (tv)
			OPENSSL_cleanse((void *)tv, strlen(tv));
		json_decref(req);
	}
	if (!text)
		return say(CA_AUTH_UNAVAILABLE, why, whylen, "out of memory");
	count(a, &a->st.reviews);
	rc = kube_post(a->o.kube, "/apis/authentication.k8s.io/v1/tokenreviews", text,
		       MAX_REVIEW_BODY, &code, &body, &len, err, sizeof(err));
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	if (rc) {
		count(a, &a->st.review_errors);
		return say(CA_AUTH_UNAVAILABLE, why, whylen, "TokenReview: %s", err);
	}
	if (code == 200 || code == 201)
		resp = json_loadb(body, len, 0, NULL);
	/* the answer echoes the token in spec: wipe it */
	OPENSSL_cleanse(body, len);
	free(body);
	if (!resp) {
		count(a, &a->st.review_errors);
		return say(CA_AUTH_UNAVAILABLE, why, whylen,
			   "TokenReview: HTTP %ld (does the CA's service account may create "
			   "tokenreviews? deploy/cluster/30-ca.yaml grants it)", code);
	}
	status = json_object_get(resp, "status");
	user = json_object_get(status, "user");
	auds = json_object_get(status, "audiences");
	for (i = 0; i < json_array_size(auds); i++)
		if (json_string_value(json_array_get(auds, i)) &&
		    !strcmp(json_string_value(json_array_get(auds, i)), a->o.audience))
			aud_ok = 1;
	uname = json_string_value(json_object_get(user, "username"));
	if (!json_is_true(json_object_get(status, "authenticated"))) {
		/* the API server's error says expired, invalid signature ...;
		 * it never contains the token */
		s = json_string_value(json_object_get(status, "error"));
		say(CA_AUTH_DENIED, why, whylen, "token not accepted by the API server%s%.160s",
		    s ? ": " : "", s ? s : "");
		goto out;
	}
	if (!aud_ok) {
		say(CA_AUTH_DENIED, why, whylen, "token is not for audience %s", a->o.audience);
		goto out;
	}
	if (!uname || strncmp(uname, SA_PREFIX, strlen(SA_PREFIX))) {
		say(CA_AUTH_DENIED, why, whylen, "token is not a service account's");
		goto out;
	}
	s = uname + strlen(SA_PREFIX);
	{
		const char *colon = strchr(s, ':');

		if (!colon || (size_t)(colon - s) >= sizeof(c->ns) ||
		    copy(c->sa, sizeof(c->sa), colon + 1) || !c->sa[0] || colon == s) {
			say(CA_AUTH_DENIED, why, whylen, "service account name is not NS:SA");
			goto out;
		}
		memcpy(c->ns, s, (size_t)(colon - s));
		c->ns[colon - s] = 0;
	}
	extra = json_object_get(user, "extra");
	if ((s = extra1(extra, EXTRA "node-name")))
		copy(c->node, sizeof(c->node), s);
	if ((s = extra1(extra, EXTRA "pod-name")))
		copy(c->pod, sizeof(c->pod), s);
	if ((s = extra1(extra, EXTRA "pod-uid")))
		copy(c->pod_uid, sizeof(c->pod_uid), s);
	r = CA_AUTH_OK;
	if (!c->node[0] && c->pod[0])
		r = pod_node(a, c->ns, c->pod, c->pod_uid, c->node, sizeof(c->node), why, whylen);
out:
	json_decref(resp);
	return r;
}

enum ca_auth_res ca_auth_token(struct ca_auth *a, const char *token, struct ca_caller *out,
			       char *why, size_t whylen)
{
	uint8_t key[SHA256_DIGEST_LENGTH];
	struct review_slot *slot;
	double now = mono_ms() / 1e3, exp, until;
	enum ca_auth_res r;

	memset(out, 0, sizeof(*out));
	if (!token || !token[0])
		return say(CA_AUTH_DENIED, why, whylen,
			   "no bearer token (authorization: Bearer <service-account token>)");
	SHA256((const unsigned char *)token, strlen(token), key);
	slot = &a->reviews[(key[0] | key[1] << 8) % REVIEW_SLOTS];
	if (a->o.review_cache_s) {
		pthread_mutex_lock(&a->lock);
		if (slot->until > now && !CRYPTO_memcmp(slot->key, key, sizeof(key))) {
			*out = slot->caller;
			a->st.review_cache_hits++;
			pthread_mutex_unlock(&a->lock);
			return CA_AUTH_OK;
		}
		pthread_mutex_unlock(&a->lock);
	}
	r = review(a, token, out, why, whylen);
	if (r != CA_AUTH_OK || !a->o.review_cache_s)
		return r;
	until = now + a->o.review_cache_s;
	exp = token_exp(token);
	if (exp > 0) {
		double left = exp - (double)time(NULL);

		if (left < a->o.review_cache_s)
			until = now + (left > 0 ? left : 0);
	}
	pthread_mutex_lock(&a->lock);
	memcpy(slot->key, key, sizeof(key));
	slot->caller = *out;
	slot->until = until;
	pthread_mutex_unlock(&a->lock);
	return r;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Lists the pods of NODE into S (sorted "ns/sa", duplicates kept). */
static enum ca_auth_res list_node(struct ca_auth *a, const char *node, struct node_slot *s,
				  char *why, size_t whylen)
{
	char path[512], err[256];
	char *body = NULL;
	size_t len, i;
	long code = 0;
	json_t *j, *items;

	snprintf(path, sizeof(path), "/api/v1/pods?fieldSelector=spec.nodeName%%3D%s", node);
	count(a, &a->st.pod_lists);
	if (kube_get(a->o.kube, path, MAX_POD_LIST, &code, &body, &len, err, sizeof(err))) {
		count(a, &a->st.pod_list_errors);
		return say(CA_AUTH_UNAVAILABLE, why, whylen, "listing the pods of node %s: %s",
			   node, err);
	}
	j = code == 200 ? json_loadb(body, len, 0, NULL) : NULL;
	free(body);
	items = json_object_get(j, "items");
	if (!json_is_array(items)) {
		json_decref(j);
		count(a, &a->st.pod_list_errors);
		return say(CA_AUTH_UNAVAILABLE, why, whylen,
			   "listing the pods of node %s: HTTP %ld (may the CA's service "
			   "account list pods?)", node, code);
	}
	s->sas = calloc(json_array_size(items) + 1, sizeof(char *));
	if (!s->sas) {
		json_decref(j);
		return say(CA_AUTH_UNAVAILABLE, why, whylen, "out of memory");
	}
	for (i = 0; i < json_array_size(items); i++) {
		json_t *p = json_array_get(items, i);
		const char *ns = json_string_value(json_object_get(json_object_get(p, "metadata"),
								   "namespace"));
		const char *sa = json_string_value(json_object_get(json_object_get(p, "spec"),
								   "serviceAccountName"));
		const char *ph = json_string_value(json_object_get(json_object_get(p, "status"),
								   "phase"));
		const char *pn = json_string_value(json_object_get(json_object_get(p, "spec"),
								   "nodeName"));

		/* a finished pod runs no more; the selector is the server's,
		 * the node compared again all the same */
		if (!ns || !pn || strcmp(pn, node) ||
		    (ph && (!strcmp(ph, "Succeeded") || !strcmp(ph, "Failed"))))
			continue;
		if (asprintf(&s->sas[s->n], "%s/%s", ns, sa && sa[0] ? sa : "default") < 0) {
			s->sas[s->n] = NULL;
			break;
		}
		s->n++;
	}
	json_decref(j);
	qsort(s->sas, s->n, sizeof(char *), cmp_str);
	return CA_AUTH_OK;
}

enum ca_auth_res ca_auth_pod_on_node(struct ca_auth *a, const char *node, const char *ns,
				     const char *sa, char *why, size_t whylen)
{
	struct node_slot fresh = { .at = 0 }, *slot;
	char want[160], *key = want;
	unsigned int h = 5381;
	double now = mono_ms() / 1e3;
	enum ca_auth_res r;
	int found;

	if (!name_ok(node))
		return say(CA_AUTH_DENIED, why, whylen, "the caller's node name is not valid");
	snprintf(want, sizeof(want), "%s/%s", ns, sa);
	for (const char *p = node; *p; p++)
		h = h * 33 + (unsigned char)*p;
	slot = &a->nodes[h % NODE_SLOTS];
	pthread_mutex_lock(&a->lock);
	if (a->o.pod_cache_ms && slot->at && !strcmp(slot->node, node) &&
	    (now - slot->at) * 1000 < a->o.pod_cache_ms) {
		found = bsearch(&key, slot->sas, slot->n, sizeof(char *), cmp_str) != NULL;
		a->st.pod_cache_hits++;
		pthread_mutex_unlock(&a->lock);
		goto answer;
	}
	pthread_mutex_unlock(&a->lock);

	r = list_node(a, node, &fresh, why, whylen);
	if (r != CA_AUTH_OK)
		return r;
	found = bsearch(&key, fresh.sas, fresh.n, sizeof(char *), cmp_str) != NULL;
	strcpy(fresh.node, node);
	fresh.at = now;
	pthread_mutex_lock(&a->lock);
	node_slot_clear(slot);
	*slot = fresh;
	pthread_mutex_unlock(&a->lock);
answer:
	if (!found)
		return say(CA_AUTH_DENIED, why, whylen,
			   "no pod of service account %s/%s runs on node %s", ns, sa, node);
	return CA_AUTH_OK;
}
