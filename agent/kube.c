// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The Kubernetes API client: config, GET, list-then-watch (kube.h). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <yaml.h>

#include "kube.h"
#include "kwatch.h"
#include "log.h"

#define KUBE_SA_DIR		"/var/run/secrets/kubernetes.io/serviceaccount"
#define KUBE_MAX_TOKEN		(64 << 10)	/* a token file, at most */
#define KUBE_MAX_PEM		(1 << 20)	/* a CA or client certificate */
#define KUBE_MAX_KUBECONFIG	(4 << 20)
#define KUBE_DEF_PAGE		500
#define KUBE_DEF_WATCH_S	300
#define KUBE_DEF_MAX_PAGE	(64U << 20)
#define KUBE_BACKOFF_MIN_MS	500
#define KUBE_BACKOFF_MAX_MS	30000
#define KUBE_STREAM_OK_S	5	/* a watch up this long had worked */

struct kube_client {
	char server[512];
	char ca_file[PATH_MAX];		/* or ... */
	char *ca_pem;			/* ... the CA's PEM itself */
	size_t ca_len;
	char token_file[PATH_MAX];	/* read before each request, or ... */
	char *token;			/* ... a fixed one */
	char *cert_pem, *key_pem;	/* client certificate */
	size_t cert_len, key_len;
};

static void curl_once(void)
{
	static int done;

	if (!__atomic_exchange_n(&done, 1, __ATOMIC_SEQ_CST))
		curl_global_init(CURL_GLOBAL_DEFAULT);
}

void kube_client_free(struct kube_client *c)
{
	if (!c)
		return;
	free(c->ca_pem);
	if (c->token)
		OPENSSL_cleanse(c->token, strlen(c->token));
	free(c->token);
	free(c->cert_pem);
	if (c->key_pem)
		OPENSSL_cleanse(c->key_pem, c->key_len);
	free(c->key_pem);
	free(c);
}

const char *kube_client_server(const struct kube_client *c)
{
	return c->server;
}

/* The whole file PATH (at most MAX bytes) into *OUT (NUL-terminated). */
static int read_file(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0, cap = 4096;
	char *buf;
	ssize_t r;

	if (fd < 0)
		return -errno;
	buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while ((r = read(fd, buf + n, cap - n)) > 0) {
		n += (size_t)r;
		if (n == cap) {
			char *p;

			if (cap >= max) {
				free(buf);
				close(fd);
				return -EFBIG;
			}
			cap = cap * 2 > max ? max : cap * 2;
			p = realloc(buf, cap + 1);
			if (!p) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = p;
		}
	}
	close(fd);
	if (r < 0) {
		free(buf);
		return -EIO;
	}
	buf[n] = 0;
	*out = buf;
	if (len)
		*len = n;
	return 0;
}

/* A token as a header may carry it: printable, no spaces around. */
static int token_clean(char *t)
{
	size_t n = strlen(t);

	while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' '))
		t[--n] = 0;
	if (!n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (t[i] <= ' ' || t[i] > '~')
			return -EINVAL;
	return 0;
}

struct kube_client *kube_client_incluster(const char *dir, char *err, size_t errlen)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	struct kube_client *c;

	if (!dir)
		dir = KUBE_SA_DIR;
	if (!host || !*host || !port || !*port || strspn(port, "0123456789") != strlen(port)) {
		kw_fail(err, errlen, 0, "not in a cluster: KUBERNETES_SERVICE_HOST and "
		     "KUBERNETES_SERVICE_PORT are not set (give --kubeconfig PATH instead)");
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		kw_fail(err, errlen, 0, "out of memory");
		return NULL;
	}
	snprintf(c->server, sizeof(c->server), strchr(host, ':') ? "https://[%s]:%s" :
		 "https://%s:%s", host, port);
	snprintf(c->ca_file, sizeof(c->ca_file), "%s/ca.crt", dir);
	snprintf(c->token_file, sizeof(c->token_file), "%s/token", dir);
	if (access(c->ca_file, R_OK) || access(c->token_file, R_OK)) {
		kw_fail(err, errlen, 0, "in-cluster config: cannot read %s and %s: %s (is a "
		     "service account token mounted?)", c->ca_file, c->token_file,
		     strerror(errno));
		kube_client_free(c);
		return NULL;
	}
	return c;
}

/* --- kubeconfig (YAML, libyaml's document API) ------------------------ */

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
	yaml_node_pair_t *p;

	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);

		if (k && k->type == YAML_SCALAR_NODE &&
		    !strcmp((const char *)k->data.scalar.value, key))
			return yaml_document_get_node(doc, p->value);
	}
	return NULL;
}

static const char *scalar(yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The entry of the list LIST (clusters, users, contexts) whose name is
 * NAME: its KEY map (cluster, user, context). */
static yaml_node_t *named(yaml_document_t *doc, yaml_node_t *list, const char *name,
			  const char *key)
{
	yaml_node_item_t *it;

	if (!list || list->type != YAML_SEQUENCE_NODE)
		return NULL;
	for (it = list->data.sequence.items.start; it < list->data.sequence.items.top; it++) {
		yaml_node_t *e = yaml_document_get_node(doc, *it);
		const char *n = scalar(map_get(doc, e, "name"));

		if (n && !strcmp(n, name))
			return map_get(doc, e, key);
	}
	return NULL;
}

/* base64 TEXT decoded into *OUT (*LEN bytes, NUL-terminated). */
static int b64_decode(const char *text, char **out, size_t *len)
{
	size_t n = strlen(text), pad = 0;
	unsigned char *buf;
	int r;

	if (!n || n % 4 || n > KUBE_MAX_PEM)
		return -EINVAL;
	buf = malloc(n / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	r = EVP_DecodeBlock(buf, (const unsigned char *)text, (int)n);
	if (r < 0) {
		free(buf);
		return -EINVAL;
	}
	pad = (text[n - 1] == '=') + (text[n - 2] == '=');
	*len = (size_t)r - pad;
	buf[*len] = 0;
	*out = (char *)buf;
	return 0;
}

/* A PEM from FIELD-data (base64) or FIELD (a path, relative to DIR) of
 * MAP into *PEM, or for a path kept as a path in FILE (when FILE). */
static int pem_field(yaml_document_t *doc, yaml_node_t *map, const char *field, const char *dir,
		     char **pem, size_t *len, char *file, size_t filelen, char *err, size_t errlen)
{
	char key[64], path[PATH_MAX];
	const char *v;
	int rc;

	snprintf(key, sizeof(key), "%s-data", field);
	v = scalar(map_get(doc, map, key));
	if (v) {
		rc = b64_decode(v, pem, len);
		return rc ? kw_fail(err, errlen, rc, "%s is not base64", key) : 0;
	}
	v = scalar(map_get(doc, map, field));
	if (!v)
		return 0;
	snprintf(path, sizeof(path), "%s%s%s", v[0] == '/' ? "" : dir, v[0] == '/' ? "" : "/", v);
	if (file) {
		snprintf(file, filelen, "%s", path);
		return access(path, R_OK) ? kw_fail(err, errlen, -errno, "%s %s: %s", field, path,
						 strerror(errno)) : 0;
	}
	rc = read_file(path, KUBE_MAX_PEM, pem, len);
	return rc ? kw_fail(err, errlen, rc, "%s %s: %s", field, path, strerror(-rc)) : 0;
}

struct kube_client *kube_client_kubeconfig(const char *path, char *err, size_t errlen)
{
	char *text = NULL, dir[PATH_MAX], why[512] = "";
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root, *ctx, *cluster, *user;
	const char *cur, *cname, *uname, *server, *tok;
	struct kube_client *c = NULL;
	size_t len = 0;
	int rc, have_doc = 0;

	rc = read_file(path, KUBE_MAX_KUBECONFIG, &text, &len);
	if (rc) {
		kw_fail(err, errlen, 0, "kubeconfig %s: %s", path, strerror(-rc));
		return NULL;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	snprintf(dir, sizeof(dir), "%s", dirname(dir));
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		snprintf(why, sizeof(why), "kubeconfig %s:%zu:%zu: %s", path, parser.problem_mark.line + 1,
			 parser.problem_mark.column + 1, parser.problem ? parser.problem : "not YAML");
		goto out;
	}
	have_doc = 1;
	root = yaml_document_get_root_node(&doc);
	cur = scalar(map_get(&doc, root, "current-context"));
	if (!cur) {
		snprintf(why, sizeof(why), "%s: no current-context", path);
		goto out;
	}
	ctx = named(&doc, map_get(&doc, root, "contexts"), cur, "context");
	cname = scalar(map_get(&doc, ctx, "cluster"));
	uname = scalar(map_get(&doc, ctx, "user"));
	if (!cname || !uname) {
		snprintf(why, sizeof(why), "%s: context \"%s\" has no cluster and user", path, cur);
		goto out;
	}
	cluster = named(&doc, map_get(&doc, root, "clusters"), cname, "cluster");
	user = named(&doc, map_get(&doc, root, "users"), uname, "user");
	server = scalar(map_get(&doc, cluster, "server"));
	if (!server || strncmp(server, "https://", 8) || strlen(server) >= sizeof(c->server)) {
		snprintf(why, sizeof(why), "%s: cluster \"%s\" has no https:// server", path, cname);
		goto out;
	}
	if (!user) {
		snprintf(why, sizeof(why), "%s: no user \"%s\"", path, uname);
		goto out;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(why, sizeof(why), "out of memory");
		goto out;
	}
	snprintf(c->server, sizeof(c->server), "%s", server);
	{
		char e[300] = "";

		if (pem_field(&doc, cluster, "certificate-authority", dir, &c->ca_pem, &c->ca_len,
			      c->ca_file, sizeof(c->ca_file), e, sizeof(e)) ||
		    pem_field(&doc, user, "client-certificate", dir, &c->cert_pem, &c->cert_len,
			      NULL, 0, e, sizeof(e)) ||
		    pem_field(&doc, user, "client-key", dir, &c->key_pem, &c->key_len, NULL, 0, e,
			      sizeof(e))) {
			snprintf(why, sizeof(why), "%s: %s", path, e);
			goto out_free;
		}
	}
	if (!c->ca_pem && !c->ca_file[0]) {
		snprintf(why, sizeof(why), "%s: cluster \"%s\" names no certificate-authority "
			 "(skmesh does not talk to an API server it cannot verify)", path, cname);
		goto out_free;
	}
	tok = scalar(map_get(&doc, user, "token"));
	if (tok) {
		c->token = strdup(tok);
		if (!c->token || token_clean(c->token)) {
			snprintf(why, sizeof(why), "%s: user \"%s\": the token is not printable", path,
				 uname);
			goto out_free;
		}
	} else if ((tok = scalar(map_get(&doc, user, "tokenFile")))) {
		if ((size_t)snprintf(c->token_file, sizeof(c->token_file), "%s%s%s",
				     tok[0] == '/' ? "" : dir, tok[0] == '/' ? "" : "/", tok) >=
		    sizeof(c->token_file)) {
			snprintf(why, sizeof(why), "%s: user \"%s\": tokenFile path too long", path,
				 uname);
			goto out_free;
		}
	}
	if (!c->token && !c->token_file[0] && !(c->cert_pem && c->key_pem)) {
		snprintf(why, sizeof(why), "%s: user \"%s\" has no token, tokenFile or client "
			 "certificate and key", path, uname);
		goto out_free;
	}
	goto out;
out_free:
	kube_client_free(c);
	c = NULL;
out:
	if (have_doc)
		yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	free(text);
	if (!c)
		kw_fail(err, errlen, 0, "%s", why[0] ? why : "kubeconfig: out of memory");
	return c;
}

/* --- requests ---------------------------------------------------------- */

/* A handle for PATH, authenticated; *HDRS to free with
 * curl_slist_free_all. NULL with ERR. */
static CURL *request(struct kube_client *c, const char *path, struct curl_slist **hdrs,
		     char *err, size_t errlen)
{
	char *url, *tok = NULL, *auth;
	CURL *h;
	int rc;

	*hdrs = NULL;
	curl_once();
	if (asprintf(&url, "%s%s", c->server, path) < 0) {
		kw_fail(err, errlen, 0, "out of memory");
		return NULL;
	}
	h = curl_easy_init();
	if (!h) {
		free(url);
		kw_fail(err, errlen, 0, "out of memory");
		return NULL;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);	/* curl keeps a copy */
	free(url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_pem) {
		struct curl_blob b = { .data = c->ca_pem, .len = c->ca_len,
				       .flags = CURL_BLOB_NOCOPY };

		curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &b);
	} else {
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	}
	if (c->cert_pem && c->key_pem) {
		struct curl_blob cb = { .data = c->cert_pem, .len = c->cert_len,
					.flags = CURL_BLOB_NOCOPY };
		struct curl_blob kb = { .data = c->key_pem, .len = c->key_len,
					.flags = CURL_BLOB_NOCOPY };

		curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cb);
		curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &kb);
		curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
	}
	*hdrs = curl_slist_append(*hdrs, "Accept: application/json");
	/* the token file again at every request: it rotates */
	if (c->token_file[0]) {
		rc = read_file(c->token_file, KUBE_MAX_TOKEN, &tok, NULL);
		if (rc || token_clean(tok)) {
			kw_fail(err, errlen, 0, "token %s: %s", c->token_file,
			     rc ? strerror(-rc) : "not a token");
			free(tok);
			curl_slist_free_all(*hdrs);
			curl_easy_cleanup(h);
			return NULL;
		}
	}
	if (tok || c->token) {
		const char *t = tok ? tok : c->token;
		size_t n = strlen(t) + 32;

		auth = malloc(n);
		if (auth) {
			snprintf(auth, n, "Authorization: Bearer %s", t);
			*hdrs = curl_slist_append(*hdrs, auth);
			OPENSSL_cleanse(auth, strlen(auth));
			free(auth);
		}
		if (tok)
			OPENSSL_cleanse(tok, strlen(tok));
	}
	free(tok);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hdrs);
	return h;
}

struct body {
	char *buf;
	size_t len, cap, max;
	int over;
};

static size_t body_write(char *ptr, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t add = size * n;

	if (b->len + add > b->max) {
		b->over = 1;
		return 0;
	}
	if (b->len + add + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		char *p;

		while (cap < b->len + add + 1)
			cap *= 2;
		p = realloc(b->buf, cap);
		if (!p)
			return 0;
		b->buf = p;
		b->cap = cap;
	}
	memcpy(b->buf + b->len, ptr, add);
	b->len += add;
	b->buf[b->len] = 0;
	return add;
}

/* One request: GET, or POST of BODY_IN (JSON) when it is not NULL. */
static int kube_do(struct kube_client *c, const char *path, const char *body_in,
		   size_t max, long *code, char **body, size_t *len, char *err, size_t errlen)
{
	struct body b = { .max = max };
	struct curl_slist *hdrs;
	CURL *h = request(c, path, &hdrs, err, errlen);
	CURLcode cc;

	if (!h)
		return -EINVAL;
	if (body_in) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body_in);
	}
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	if (cc != CURLE_OK) {
		free(b.buf);
		return kw_fail(err, errlen, b.over ? -EFBIG : -EIO, "%s %s%s: %s",
			       body_in ? "POST" : "GET", c->server, path,
			       b.over ? "the answer is larger than allowed" : curl_easy_strerror(cc));
	}
	if (!b.buf) {
		b.buf = strdup("");
		if (!b.buf)
			return -ENOMEM;
	}
	*body = b.buf;
	*len = b.len;
	return 0;
}

int kube_get(struct kube_client *c, const char *path, size_t max, long *code,
	     char **body, size_t *len, char *err, size_t errlen)
{
	return kube_do(c, path, NULL, max, code, body, len, err, errlen);
}

int kube_post(struct kube_client *c, const char *path, const char *json, size_t max,
	      long *code, char **body, size_t *len, char *err, size_t errlen)
{
	return kube_do(c, path, json, max, code, body, len, err, errlen);
}

/* --- list, then watch -------------------------------------------------- */

struct watch_run {
	struct kube_client *c;
	const struct kube_watch_opts *o;
	const struct kube_watch_ops *ops;
	void *arg;
	struct kube_watch_stats *st, st_local;
	volatile int *stop;
	char rv[KW_MAX_RV + 1];
	int gone;		/* 410: list again */
	int cb_rc;		/* a callback said stop */
	uint64_t got;		/* events of the current stream */
	struct kwatch_dec *dec;
	char err[512];
	CURL *h;		/* the current watch request */
	long code;		/* its HTTP status, once known (0: not yet) */
	char refusal[4096];	/* the body of a watch answered with no 200 */
	size_t refusal_len;
};

static uint32_t rnd(void)
{
	uint32_t r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)time(NULL) * 2654435761U;
	return r;
}

/* Sleeps MS, waking every 100 ms to look at *STOP; 1 when stopped. */
static int nap(volatile int *stop, unsigned int ms)
{
	while (ms && !*stop) {
		unsigned int step = ms > 100 ? 100 : ms;
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)step * 1000000L };

		nanosleep(&ts, NULL);
		ms -= step;
	}
	return *stop != 0;
}

static int list_item(const struct kw_event *ev, void *arg)
{
	struct watch_run *w = arg;
	int rc = w->ops->event(w->arg, ev);

	if (rc)
		w->cb_rc = rc;
	else
		w->st->events++;
	return rc;
}

/* An item in an answer that is no 200 list: not handed over. */
static int list_refuse(const struct kw_event *ev, void *arg)
{
	struct watch_run *w = arg;

	(void)ev;
	snprintf(w->err, sizeof(w->err), "list %s: items in an answer that is not 200",
		 w->o->path);
	return -EBADMSG;
}

/* One whole list, page by page. 0; 1 to start it again (410 on a
 * continue token); -1 on a failure (W->err); a callback's stop. */
static int list_all(struct watch_run *w)
{
	unsigned int page = w->o->page ? w->o->page : KUBE_DEF_PAGE;
	size_t max = w->o->max_page_bytes ? w->o->max_page_bytes : KUBE_DEF_MAX_PAGE;
	char cont[1024] = "", path[2048];
	struct kw_list l;
	int rc;

	int begun = 0;

	do {
		char *body = NULL;
		size_t len;
		long code = 0;

		snprintf(path, sizeof(path), "%s?limit=%u%s%s", w->o->path, page,
			 cont[0] ? "&continue=" : "", cont);
		if (kube_get(w->c, path, max, &code, &body, &len, w->err, sizeof(w->err)))
			return -1;
		/* the caller marks its objects stale once a list has begun
		 * to come, not for a request that got nowhere */
		if (code == 200 && !begun) {
			begun = 1;
			if ((rc = w->ops->relist_begin(w->arg))) {
				free(body);
				return w->cb_rc = rc;
			}
		}
		rc = kwatch_list_parse(body, len, code == 200 ? list_item : list_refuse, w, &l,
				       w->err, sizeof(w->err));
		free(body);
		if (w->cb_rc)
			return w->cb_rc;
		if (rc == -EPROTO && l.code == 410) {
			w->st->relists_gone++;
			return 1;
		}
		if (rc)
			return -1;
		if (code != 200) {
			snprintf(w->err, sizeof(w->err), "list %s: HTTP %ld", w->o->path, code);
			return -1;
		}
		/* a continue token goes into the query as it came: it is
		 * base64url, checked to be so */
		if (strspn(l.cont, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			   "0123456789-_=") != strlen(l.cont)) {
			snprintf(w->err, sizeof(w->err), "list %s: continue token is not base64url",
				 w->o->path);
			return -1;
		}
		snprintf(cont, sizeof(cont), "%s", l.cont);
		snprintf(w->rv, sizeof(w->rv), "%s", l.rv);
	} while (cont[0]);
	w->st->lists++;
	if ((rc = w->ops->relist_end(w->arg, w->rv)))
		return w->cb_rc = rc;
	return 0;
}

static int watch_event(const struct kw_event *ev, void *arg)
{
	struct watch_run *w = arg;
	int rc;

	if (ev->type == KW_ERROR) {
		if (ev->code == 410)
			w->gone = 1;
		snprintf(w->err, sizeof(w->err), "watch %s: ERROR %d %s", w->o->path, ev->code,
			 ev->reason);
		return -EPROTO;
	}
	snprintf(w->rv, sizeof(w->rv), "%s", ev->rv);
	w->got++;
	if (ev->type == KW_BOOKMARK) {
		w->st->bookmarks++;
		return 0;
	}
	rc = w->ops->event(w->arg, ev);
	if (rc)
		w->cb_rc = rc;
	else
		w->st->events++;
	return rc;
}

static size_t watch_write(char *ptr, size_t size, size_t n, void *arg)
{
	struct watch_run *w = arg;

	if (!w->code)
		curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &w->code);
	if (w->code != 200) {
		/* a Status (403, 500, ...), no events: kept, bounded, to say
		 * what the server answered */
		size_t room = sizeof(w->refusal) - 1 - w->refusal_len;
		size_t k = size * n < room ? size * n : room;

		memcpy(w->refusal + w->refusal_len, ptr, k);
		w->refusal_len += k;
		return size * n;
	}
	if (kwatch_dec_feed(w->dec, ptr, size * n, watch_event, w, w->err, sizeof(w->err)))
		return 0;	/* curl stops: the stream is no longer trusted */
	return size * n;
}

static int watch_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut,
			  curl_off_t un)
{
	struct watch_run *w = arg;

	(void)dt; (void)dn; (void)ut; (void)un;
	return *w->stop != 0;
}

/* One watch stream from W->rv until the server ends it. 0: ended (resume
 * from W->rv); 1: 410 (list again); -1: a failure (W->err); a
 * callback's stop. */
static int watch_once(struct watch_run *w)
{
	unsigned int base = w->o->watch_s ? w->o->watch_s : KUBE_DEF_WATCH_S;
	unsigned int secs = base - (base / 5 ? rnd() % (base / 5) : 0);
	struct curl_slist *hdrs;
	char path[2048];
	long code = 0;
	CURLcode cc;
	CURL *h;

	snprintf(path, sizeof(path), "%s?watch=1&allowWatchBookmarks=true&resourceVersion=%s"
		 "&timeoutSeconds=%u", w->o->path, w->rv, secs);
	h = request(w->c, path, &hdrs, w->err, sizeof(w->err));
	if (!h)
		return -1;
	kwatch_dec_reset(w->dec);
	w->got = 0;
	w->gone = 0;
	w->h = h;
	w->code = 0;
	w->refusal_len = 0;
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, w);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, watch_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, w);
	/* the server ends it after timeoutSeconds; a server that goes
	 * silent (no event, no bookmark for a minute more) is left */
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)secs + 60);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)secs + 30);
	w->err[0] = 0;
	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	if (w->cb_rc)
		return w->cb_rc;
	if (w->gone || code == 410) {
		w->st->relists_gone++;
		return 1;
	}
	if (*w->stop)
		return 0;
	if (code != 200 && code && !w->err[0]) {
		struct kw_list l;
		char why[400];

		if (kwatch_list_parse(w->refusal, w->refusal_len, list_refuse, w, &l, why,
				      sizeof(why)) == -EPROTO) {
			if (l.code == 410) {
				w->st->relists_gone++;
				return 1;
			}
			snprintf(w->err, sizeof(w->err), "watch %s: %s", w->o->path, why);
		} else {
			snprintf(w->err, sizeof(w->err), "watch %s: HTTP %ld", w->o->path, code);
		}
		return -1;
	}
	if (cc != CURLE_OK || code != 200) {
		if (!w->err[0])
			snprintf(w->err, sizeof(w->err), "watch %s: %s", w->o->path,
				 cc != CURLE_OK ? curl_easy_strerror(cc) : "unexpected HTTP status");
		return -1;
	}
	return 0;
}

int kube_watch_run(struct kube_client *c, const struct kube_watch_opts *opts,
		   const struct kube_watch_ops *ops, void *arg,
		   struct kube_watch_stats *stats, volatile int *stop)
{
	struct watch_run w = { .c = c, .o = opts, .ops = ops, .arg = arg, .stop = stop };
	unsigned int backoff = KUBE_BACKOFF_MIN_MS;
	int need_list = 1, rc = 0;

	w.st = stats ? stats : &w.st_local;
	w.dec = kwatch_dec_new(opts->max_event_bytes);
	if (!w.dec)
		return -ENOMEM;
	while (!*stop) {
		time_t t0 = time(NULL);

		rc = need_list ? list_all(&w) : watch_once(&w);
		if (w.cb_rc) {
			rc = w.cb_rc;
			break;
		}
		if (rc == 1) {			/* 410: list again, at once */
			need_list = 1;
			continue;
		}
		if (rc < 0) {			/* back off, with jitter */
			w.st->errors++;
			/* a stream that worked before it broke (events came, or
			 * it stayed up a while) is no failing server: start the
			 * backoff anew, or every cut would double the wait */
			if (!need_list && (w.got || time(NULL) - t0 >= KUBE_STREAM_OK_S))
				backoff = KUBE_BACKOFF_MIN_MS;
			pr_warn("kubernetes: %s; again in %u ms\n", w.err, backoff);
			if (nap(stop, backoff / 2 + rnd() % (backoff / 2 + 1)))
				break;
			backoff = backoff * 2 > KUBE_BACKOFF_MAX_MS ? KUBE_BACKOFF_MAX_MS :
								    backoff * 2;
			continue;
		}
		if (!need_list) {
			w.st->watch_restarts++;
			/* a stream the server ended at once with nothing in it
			 * is not a reason to hammer it */
			if (!w.got && time(NULL) - t0 < 2) {
				if (nap(stop, backoff / 2 + rnd() % (backoff / 2 + 1)))
					break;
				backoff = backoff * 2 > KUBE_BACKOFF_MAX_MS ? KUBE_BACKOFF_MAX_MS :
									    backoff * 2;
				continue;
			}
		}
		backoff = KUBE_BACKOFF_MIN_MS;
		need_list = 0;
	}
	kwatch_dec_free(w.dec);
	return *stop ? 0 : rc;
}
