// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The Kubernetes source of the model: see ksource.h. Each watch thread
 * keeps, under the source's lock, only the fields meshd reads of its
 * objects (a pod holds a few hundred bytes here, not the API's tens of
 * kilobytes), and parses Istio's policies once, as they arrive; a build
 * lends the parsed policies to the model and makes its workloads and
 * services afresh.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "kube.h"
#include "ksource.h"
#include "log.h"
#include "metrics.h"

enum ks_res {
	KS_NAMESPACES,
	KS_PODS,
	KS_SERVICES,
	KS_SLICES,
	KS_AUTHZ,
	KS_PEERAUTHN,
	KS_NRES,
};

static const struct ks_def {
	const char *name;	/* resource, for metrics and dumps */
	const char *path;	/* core and built-in groups */
	const char *kind;	/* Istio's: the kind the parser reads */
} defs[KS_NRES] = {
	[KS_NAMESPACES] = { "namespaces", "/api/v1/namespaces", NULL },
	[KS_PODS] = { "pods", "/api/v1/pods", NULL },
	[KS_SERVICES] = { "services", "/api/v1/services", NULL },
	[KS_SLICES] = { "endpointslices", "/apis/discovery.k8s.io/v1/endpointslices", NULL },
	[KS_AUTHZ] = { "authorizationpolicies", NULL, "AuthorizationPolicy" },
	[KS_PEERAUTHN] = { "peerauthentications", NULL, "PeerAuthentication" },
};

/* Istio's versions of its security API, newest first. */
static const char *const istio_versions[] = { "v1", "v1beta1" };
#define ISTIO_GROUP	"security.istio.io"
/* Objects kept of one type: far above what Kubernetes supports (150,000
 * pods a cluster), so only a broken or hostile server reaches it; the rest
 * are left out and counted. */
#define KS_MAX_OBJECTS	(1 << 20)
/* How often the Istio API is looked for again while it is not served. */
#define KS_CRD_RETRY_MS	30000

/* A parsed Istio policy: lent to every model built while it stands. */
struct kunit {
	atomic_long refs;
	char *key;		/* namespace/name */
	char *label;		/* "AuthorizationPolicy ns/name": positions */
	struct cfg_objects part;
	struct cfg_diag diag;
	int stale;		/* not named since a relist began */
	struct kunit *rejected;	/* a later version the parser refused: this
				 * one stays applied (bad input changes
				 * nothing), that one's messages are shown */
};

struct kres {
	struct ksource *ks;
	enum ks_res id;
	pthread_t thread;
	int started;
	struct kube_watch_stats st;	/* written by the thread only */
	int synced;			/* listed once */
	int relisting;
	json_t *objs;			/* key -> what meshd keeps of it */
	json_t *fresh;			/* keys named since relist_begin */
	struct kunit **units;		/* Istio's policies */
	size_t nunits;
	char version[16];		/* Istio's: the version watched */
	char path[160];
};

struct ksource {
	struct ksource_opts o;
	char *node, *root_ns, *trust_domain;
	struct kube_client *c;
	pthread_mutex_t lock;
	struct kres res[KS_NRES];
	int evfd;
	volatile int stop;
	uint64_t gen;
	double dirty_since;		/* a change no model has yet, 0: none */
	double built_dirty_since;	/* ... as of the last build */
	json_t *netns;			/* pod UID -> {netns, ips, source} */
	json_t *pod_by_uid;		/* pod UID -> its key in res[KS_PODS].objs */
	/* event lag histogram: a change to a model applied */
	uint64_t lag_buckets[10], lag_count;
	double lag_sum;
	uint64_t builds, refused_policies;
	uint64_t over_cap[KS_NRES];	/* objects left out over KS_MAX_OBJECTS */
};

static const double lag_bounds[10] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5
};

static void notify(struct ksource *ks)
{
	uint64_t one = 1;

	if (write(ks->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_warn("kube: eventfd: %s\n", strerror(errno));
}

/* Under lock: something changed. */
static void changed(struct ksource *ks)
{
	ks->gen++;
	if (!ks->dirty_since)
		ks->dirty_since = mono_ms() / 1e3;
}

static void unit_put(struct kunit *u)
{
	if (!u || atomic_fetch_sub(&u->refs, 1) != 1)
		return;
	unit_put(u->rejected);
	model_objects_free(&u->part);
	diag_free(&u->diag);
	free(u->key);
	free(u->label);
	free(u);
}

/* --- what is kept of each object -------------------------------------- */

static const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* A copy of the string labels of map L (NULL: {}). */
static json_t *labels_keep(json_t *l)
{
	json_t *out = json_object(), *v;
	const char *k;

	if (!out)
		return NULL;
	json_object_foreach(l, k, v)
		if (json_is_string(v))
			json_object_set(out, k, v);
	return out;
}

/* The IPv4 addresses of a pod's status, podIPs first. */
static json_t *pod_ips(json_t *status)
{
	json_t *out = json_array(), *v;
	struct in_addr a;
	size_t i;

	if (!out)
		return NULL;
	json_array_foreach(json_object_get(status, "podIPs"), i, v) {
		const char *ip = jstr(v, "ip");

		if (ip && inet_pton(AF_INET, ip, &a) == 1)
			json_array_append_new(out, json_string(ip));
	}
	if (!json_array_size(out)) {
		const char *ip = jstr(status, "podIP");

		if (ip && inet_pton(AF_INET, ip, &a) == 1)
			json_array_append_new(out, json_string(ip));
	}
	return out;
}

static json_t *keep_pod(json_t *obj)
{
	json_t *md = json_object_get(obj, "metadata"), *spec = json_object_get(obj, "spec"),
	       *st = json_object_get(obj, "status");

	return json_pack("{s:s?, s:o, s:s?, s:s?, s:b, s:s?, s:o, s:b, s:s?}",
			 "uid", jstr(md, "uid"),
			 "labels", labels_keep(json_object_get(md, "labels")),
			 "node", jstr(spec, "nodeName"),
			 "sa", jstr(spec, "serviceAccountName"),
			 "hostNetwork", json_is_true(json_object_get(spec, "hostNetwork")),
			 "phase", jstr(st, "phase"),
			 "ips", pod_ips(st),
			 "deleting", json_object_get(md, "deletionTimestamp") != NULL,
			 "created", jstr(md, "creationTimestamp"));
}

static json_t *keep_ns(json_t *obj)
{
	return json_pack("{s:o}", "labels",
			 labels_keep(json_object_get(json_object_get(obj, "metadata"), "labels")));
}

static json_t *keep_service(json_t *obj)
{
	json_t *spec = json_object_get(obj, "spec"), *ports = json_array(), *p;
	size_t i;

	if (!ports)
		return NULL;
	json_array_foreach(json_object_get(spec, "ports"), i, p) {
		json_t *tp = json_object_get(p, "targetPort");

		if (!json_is_integer(json_object_get(p, "port")))
			continue;
		json_array_append_new(ports, json_pack("{s:s, s:I, s:s, s:O?}",
			"name", jstr(p, "name") ? jstr(p, "name") : "",
			"port", json_integer_value(json_object_get(p, "port")),
			"protocol", jstr(p, "protocol") ? jstr(p, "protocol") : "TCP",
			"target", json_is_integer(tp) || json_is_string(tp) ? tp : NULL));
	}
	return json_pack("{s:s?, s:s?, s:o}", "clusterIP", jstr(spec, "clusterIP"),
			 "type", jstr(spec, "type"), "ports", ports);
}

static json_t *keep_slice(json_t *obj)
{
	json_t *md = json_object_get(obj, "metadata"), *eps = json_array(),
	       *ports = json_array(), *e, *p;
	size_t i;

	if (!eps || !ports) {
		json_decref(eps);
		json_decref(ports);
		return NULL;
	}
	json_array_foreach(json_object_get(obj, "endpoints"), i, e) {
		json_t *cond = json_object_get(e, "conditions");
		json_t *ready = json_object_get(cond, "ready"), *serving =
			json_object_get(cond, "serving");
		const char *ip = json_string_value(json_array_get(json_object_get(e, "addresses"), 0));
		int r = !json_is_false(ready);	/* unknown: ready, as kube-proxy */

		if (!ip)
			continue;
		json_array_append_new(eps, json_pack("{s:s, s:b, s:b, s:b}", "ip", ip,
			"ready", r, "serving", serving ? json_is_true(serving) : r,
			"terminating", json_is_true(json_object_get(cond, "terminating"))));
	}
	json_array_foreach(json_object_get(obj, "ports"), i, p) {
		if (!json_is_integer(json_object_get(p, "port")))
			continue;
		json_array_append_new(ports, json_pack("{s:s, s:I, s:s}",
			"name", jstr(p, "name") ? jstr(p, "name") : "",
			"port", json_integer_value(json_object_get(p, "port")),
			"protocol", jstr(p, "protocol") ? jstr(p, "protocol") : "TCP"));
	}
	return json_pack("{s:s?, s:s?, s:o, s:o}",
			 "service", jstr(json_object_get(md, "labels"), "kubernetes.io/service-name"),
			 "addressType", jstr(obj, "addressType"), "endpoints", eps, "ports", ports);
}

/* An Istio policy as its document: apiVersion, kind, the metadata the
 * parser reads and the spec. */
static struct kunit *keep_policy(struct kres *r, const struct kw_event *ev, const char *key)
{
	const char *kind = defs[r->id].kind;
	json_t *md = json_object_get(ev->object, "metadata"), *doc, *ann = NULL;
	json_t *dry = json_object_get(json_object_get(md, "annotations"), "istio.io/dry-run");
	struct kunit *u = calloc(1, sizeof(*u));
	char api[64];
	char *text;
	int rc;

	if (!u)
		return NULL;
	atomic_init(&u->refs, 1);
	if (dry)
		ann = json_pack("{s:O}", "istio.io/dry-run", dry);
	snprintf(api, sizeof(api), ISTIO_GROUP "/%s", r->version);
	doc = json_pack("{s:s, s:s, s:{s:s, s:s, s:o?}, s:O?}", "apiVersion", api,
			"kind", kind, "metadata", "name", ev->name, "namespace", ev->ns,
			"annotations", ann, "spec", json_object_get(ev->object, "spec"));
	text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(doc);
	u->key = strdup(key);
	if (asprintf(&u->label, "%s %s", kind, key) < 0)
		u->label = NULL;
	if (!text || !u->key || !u->label) {
		free(text);
		unit_put(u);
		return NULL;
	}
	rc = config_parse_object(text, strlen(text), u->label, r->ks->root_ns, kind, &u->part,
				 &u->diag);
	free(text);
	if (rc == -ENOMEM) {
		unit_put(u);
		return NULL;
	}
	return u;
}

/* --- the watch threads ------------------------------------------------- */

static long unit_find(struct kres *r, const char *key)
{
	for (size_t i = 0; i < r->nunits; i++)
		if (!strcmp(r->units[i]->key, key))
			return (long)i;
	return -1;
}

static void unit_drop(struct kres *r, size_t i)
{
	unit_put(r->units[i]);
	r->units[i] = r->units[--r->nunits];
}

static int w_relist_begin(void *arg)
{
	struct kres *r = arg;

	pthread_mutex_lock(&r->ks->lock);
	json_decref(r->fresh);
	r->fresh = json_object();
	r->relisting = 1;
	for (size_t i = 0; i < r->nunits; i++)
		r->units[i]->stale = 1;
	pthread_mutex_unlock(&r->ks->lock);
	return r->fresh ? 0 : -ENOMEM;
}

/* Under lock: forgets the UID index entry of pod P (what is kept of it;
 * NULL: none). */
static void pod_unindex(struct ksource *ks, json_t *p)
{
	const char *uid = jstr(p, "uid");

	if (uid)
		json_object_del(ks->pod_by_uid, uid);
}

static int w_event(void *arg, const struct kw_event *ev)
{
	struct kres *r = arg;
	struct ksource *ks = r->ks;
	char key[2 * KW_MAX_NAME + 2];
	json_t *kept = NULL;
	struct kunit *u = NULL;
	int del = ev->type == KW_DELETED;

	if (ev->type != KW_ADDED && ev->type != KW_MODIFIED && !del)
		return 0;
	snprintf(key, sizeof(key), "%s%s%s", ev->ns, *ev->ns ? "/" : "", ev->name);
	if (!del) {
		switch (r->id) {
		case KS_NAMESPACES: kept = keep_ns(ev->object); break;
		case KS_PODS: kept = keep_pod(ev->object); break;
		case KS_SERVICES: kept = keep_service(ev->object); break;
		case KS_SLICES: kept = keep_slice(ev->object); break;
		default: u = keep_policy(r, ev, key); break;
		}
		if (!kept && !u)
			return -ENOMEM;
		if (u && u->diag.n)
			diag_print(&u->diag, "meshd");
	}
	pthread_mutex_lock(&ks->lock);
	if (!del && (defs[r->id].kind ? r->nunits : json_object_size(r->objs)) >= KS_MAX_OBJECTS &&
	    (u ? unit_find(r, key) < 0 : !json_object_get(r->objs, key))) {
		if (!ks->over_cap[r->id]++)
			pr_warn("kube: more than %d %s: the rest are left out (see "
				"skmesh_kube_objects_refused_total)\n", KS_MAX_OBJECTS,
				defs[r->id].name);
		pthread_mutex_unlock(&ks->lock);
		json_decref(kept);
		unit_put(u);
		return 0;
	}
	if (r->relisting && !del)
		json_object_set_new(r->fresh, key, json_true());
	if (u || (del && (r->id == KS_AUTHZ || r->id == KS_PEERAUTHN))) {
		long i = unit_find(r, key);

		if (i >= 0 && u && u->diag.nerrors && !r->units[i]->diag.nerrors) {
			/* the version before stays */
			pr_warn("kube: %s: this version is refused (above): the one before "
				"stays applied until it is fixed or deleted\n", u->label);
			unit_put(r->units[i]->rejected);
			r->units[i]->rejected = u;
			r->units[i]->stale = 0;
			u = NULL;
			i = -2;
		} else if (u && u->diag.nerrors) {
			pr_warn("kube: %s is refused (above) and left out; the rest of the "
				"mesh's policy applies\n", u->label);
		}
		if (i >= 0)
			unit_drop(r, (size_t)i);
		if (u) {
			struct kunit **p = realloc(r->units, (r->nunits + 1) * sizeof(*p));

			if (!p) {
				pthread_mutex_unlock(&ks->lock);
				unit_put(u);
				return -ENOMEM;
			}
			r->units = p;
			r->units[r->nunits++] = u;
		}
	} else if (del) {
		if (r->id == KS_PODS)
			pod_unindex(ks, json_object_get(r->objs, key));
		json_object_del(r->objs, key);
		/* a pod gone while its CNI DEL never reached meshd */
		if (r->id == KS_PODS) {
			const char *uid = jstr(json_object_get(ev->object, "metadata"), "uid");

			if (uid)
				json_object_del(ks->netns, uid);
		}
	} else {
		if (r->id == KS_PODS) {
			pod_unindex(ks, json_object_get(r->objs, key));
			if (jstr(kept, "uid"))
				json_object_set_new(ks->pod_by_uid, jstr(kept, "uid"), json_string(key));
		}
		json_object_set_new(r->objs, key, kept);
	}
	changed(ks);
	pthread_mutex_unlock(&ks->lock);
	notify(ks);
	return 0;
}

static int w_relist_end(void *arg, const char *rv)
{
	struct kres *r = arg;
	struct ksource *ks = r->ks;
	const char *k;
	json_t *v;
	void *tmp;

	(void)rv;
	pthread_mutex_lock(&ks->lock);
	json_object_foreach_safe(r->objs, tmp, k, v) {
		if (json_object_get(r->fresh, k))
			continue;
		if (r->id == KS_PODS)
			pod_unindex(ks, v);
		json_object_del(r->objs, k);
	}
	for (size_t i = 0; i < r->nunits;) {
		if (r->units[i]->stale)
			unit_drop(r, i);
		else
			i++;
	}
	json_decref(r->fresh);
	r->fresh = NULL;
	r->relisting = 0;
	if (!r->synced)
		pr_info("kube: %s listed (%zu)\n", defs[r->id].name,
			r->units ? r->nunits : json_object_size(r->objs));
	r->synced = 1;
	changed(ks);
	pthread_mutex_unlock(&ks->lock);
	notify(ks);
	return 0;
}

static const struct kube_watch_ops watch_ops = {
	.relist_begin = w_relist_begin,
	.event = w_event,
	.relist_end = w_relist_end,
};

static int nap(struct ksource *ks, unsigned int ms)
{
	while (ms && !ks->stop) {
		unsigned int d = ms < 200 ? ms : 200;

		usleep(d * 1000);
		ms -= d;
	}
	return ks->stop;
}

/* Which version of Istio's security API serves R's resource: 1 (R->path
 * set), 0 none, -1 the API server could not tell. */
static int istio_find(struct kres *r)
{
	char err[256], path[128];
	int unknown = 0;

	for (size_t i = 0; i < sizeof(istio_versions) / sizeof(istio_versions[0]); i++) {
		char *body = NULL;
		size_t len;
		long code = 0;
		json_t *doc, *res;
		size_t j;
		int found = 0;

		snprintf(path, sizeof(path), "/apis/" ISTIO_GROUP "/%s", istio_versions[i]);
		if (kube_get(r->ks->c, path, 1 << 20, &code, &body, &len, err, sizeof(err))) {
			pr_warn("kube: %s\n", err);
			unknown = 1;
			continue;
		}
		doc = code == 200 ? json_loadb(body, len, 0, NULL) : NULL;
		free(body);
		if (code != 200 && code != 404) {
			pr_warn("kube: GET %s: HTTP %ld\n", path, code);
			unknown = 1;
		}
		json_array_foreach(json_object_get(doc, "resources"), j, res)
			if (!strcmp(jstr(res, "name") ? jstr(res, "name") : "", defs[r->id].name))
				found = 1;
		json_decref(doc);
		if (found) {
			snprintf(r->version, sizeof(r->version), "%s", istio_versions[i]);
			snprintf(r->path, sizeof(r->path), "%s/%s", path, defs[r->id].name);
			return 1;
		}
	}
	return unknown ? -1 : 0;
}

static void *watch_main(void *arg)
{
	struct kres *r = arg;
	struct ksource *ks = r->ks;
	struct kube_watch_opts wo = { .path = r->path };

	if (defs[r->id].kind) {
		for (;;) {
			int f = istio_find(r);

			if (ks->stop)
				return NULL;
			if (f > 0)
				break;
			if (!f) {
				/* Not served: no policy of that kind exists. */
				pthread_mutex_lock(&ks->lock);
				if (!r->synced)
					pr_info("kube: the API server serves no %s (" ISTIO_GROUP
						" v1, v1beta1): none apply; looked for again "
						"every %d s\n", defs[r->id].name,
						KS_CRD_RETRY_MS / 1000);
				r->synced = 1;
				changed(ks);
				pthread_mutex_unlock(&ks->lock);
				notify(ks);
			}
			if (nap(ks, f ? KS_CRD_RETRY_MS : 2000))
				return NULL;
		}
		pr_info("kube: watching %s\n", r->path);
	}
	kube_watch_run(ks->c, &wo, &watch_ops, r, &r->st, &ks->stop);
	return NULL;
}

/* --- making and freeing ------------------------------------------------ */

int ksource_new(const struct ksource_opts *o, struct ksource **out, char *err, size_t errlen)
{
	struct ksource *ks = calloc(1, sizeof(*ks));

	if (!ks)
		return -ENOMEM;
	ks->o = *o;
	ks->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ks->node = strdup(o->node);
	ks->root_ns = strdup(o->root_ns ? o->root_ns : CFG_DEFAULT_ROOT_NS);
	ks->trust_domain = strdup(o->trust_domain ? o->trust_domain : CFG_DEFAULT_TRUST_DOMAIN);
	ks->netns = json_object();
	ks->pod_by_uid = json_object();
	pthread_mutex_init(&ks->lock, NULL);
	for (int i = 0; i < KS_NRES; i++) {
		ks->res[i].ks = ks;
		ks->res[i].id = (enum ks_res)i;
		ks->res[i].objs = json_object();
		if (defs[i].path)
			snprintf(ks->res[i].path, sizeof(ks->res[i].path), "%s", defs[i].path);
		if (!ks->res[i].objs) {
			ksource_free(ks);
			return -ENOMEM;
		}
	}
	if (ks->evfd < 0 || !ks->node || !ks->root_ns || !ks->trust_domain || !ks->netns ||
	    !ks->pod_by_uid) {
		ksource_free(ks);
		return -ENOMEM;
	}
	if (o->offline) {
		for (int i = 0; i < KS_NRES; i++)
			if (defs[i].kind)
				snprintf(ks->res[i].version, sizeof(ks->res[i].version), "v1");
		*out = ks;
		return 0;
	}
	ks->c = o->kubeconfig ? kube_client_kubeconfig(o->kubeconfig, err, errlen)
			      : kube_client_incluster(NULL, err, errlen);
	if (!ks->c) {
		ksource_free(ks);
		return -EINVAL;
	}
	*out = ks;
	return 0;
}

static struct kres *res_named(struct ksource *ks, const char *name)
{
	for (int i = 0; i < KS_NRES; i++)
		if (!strcmp(defs[i].name, name))
			return &ks->res[i];
	return NULL;
}

int ksource_inject_relist(struct ksource *ks, const char *resource, int end)
{
	struct kres *r = res_named(ks, resource);

	if (!r)
		return -ENOENT;
	return end ? w_relist_end(r, "") : w_relist_begin(r);
}

int ksource_inject(struct ksource *ks, const char *resource, const struct kw_event *ev)
{
	struct kres *r = res_named(ks, resource);

	return r ? w_event(r, ev) : -ENOENT;
}

int ksource_start(struct ksource *ks)
{
	sigset_t all, old;

	if (!ks->c)
		return -EINVAL;	/* offline */

	/* Signals are meshd's main loop's business (signalfd): a watch
	 * thread that could take SIGTERM would let it kill meshd unhandled. */
	sigfillset(&all);
	for (int i = 0; i < KS_NRES; i++) {
		int err;

		pthread_sigmask(SIG_BLOCK, &all, &old);
		err = pthread_create(&ks->res[i].thread, NULL, watch_main, &ks->res[i]);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (err) {
			pr_warn("kube: cannot start the %s watch: %s\n", defs[i].name,
				strerror(err));
			return -err;
		}
		ks->res[i].started = 1;
	}
	pr_info("kube: watching %s for node %s\n", kube_client_server(ks->c), ks->node);
	return 0;
}

void ksource_free(struct ksource *ks)
{
	if (!ks)
		return;
	ks->stop = 1;
	for (int i = 0; i < KS_NRES; i++) {
		struct kres *r = &ks->res[i];

		if (r->started)
			pthread_join(r->thread, NULL);
		json_decref(r->objs);
		json_decref(r->fresh);
		for (size_t j = 0; j < r->nunits; j++)
			unit_put(r->units[j]);
		free(r->units);
	}
	kube_client_free(ks->c);
	json_decref(ks->netns);
	json_decref(ks->pod_by_uid);
	if (ks->evfd >= 0)
		close(ks->evfd);
	pthread_mutex_destroy(&ks->lock);
	free(ks->node);
	free(ks->root_ns);
	free(ks->trust_domain);
	free(ks);
}

int ksource_fd(const struct ksource *ks)
{
	return ks->evfd;
}

int ksource_synced(const struct ksource *ks)
{
	struct ksource *m = (struct ksource *)ks;
	int all = 1;

	pthread_mutex_lock(&m->lock);
	for (int i = 0; i < KS_NRES; i++)
		all &= m->res[i].synced;
	pthread_mutex_unlock(&m->lock);
	return all;
}

uint64_t ksource_gen(const struct ksource *ks)
{
	struct ksource *m = (struct ksource *)ks;
	uint64_t g;

	pthread_mutex_lock(&m->lock);
	g = m->gen;
	pthread_mutex_unlock(&m->lock);
	return g;
}

/* --- local pods' network namespaces ------------------------------------- */

void ksource_pod_netns(struct ksource *ks, const char *uid, const char *netns,
		       const uint32_t *ips, size_t nips, const char *source)
{
	json_t *a = json_array(), *e;

	for (size_t i = 0; a && i < nips; i++) {
		char s[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, &ips[i], s, sizeof(s));
		json_array_append_new(a, json_string(s));
	}
	e = json_pack("{s:s, s:o*, s:s}", "netns", netns, "ips", a, "source", source);
	if (!e) {
		pr_warn("kube: out of memory: pod %s's network namespace is not kept\n", uid);
		return;
	}
	pthread_mutex_lock(&ks->lock);
	json_object_set_new(ks->netns, uid, e);
	changed(ks);
	pthread_mutex_unlock(&ks->lock);
	notify(ks);
}

void ksource_pod_forget(struct ksource *ks, const char *uid)
{
	pthread_mutex_lock(&ks->lock);
	if (!json_object_del(ks->netns, uid))
		changed(ks);
	pthread_mutex_unlock(&ks->lock);
	notify(ks);
}

/* --- enrolment ---------------------------------------------------------- */

static int ns_enrolled(struct ksource *ks, const char *ns)
{
	json_t *n = json_object_get(ks->res[KS_NAMESPACES].objs, ns);
	const char *mode = jstr(json_object_get(n, "labels"), KS_LABEL_MODE);

	return mode && !strcmp(mode, KS_MODE_AMBIENT);
}

/* Whether pod P (what is kept of it) of namespace NS is in the mesh,
 * its IP aside. */
static int pod_member(struct ksource *ks, const char *ns, json_t *p)
{
	const char *mode = jstr(json_object_get(p, "labels"), KS_LABEL_MODE);
	const char *phase = jstr(p, "phase");

	if (json_is_true(json_object_get(p, "hostNetwork")))
		return 0;
	if (mode && !strcmp(mode, KS_MODE_NONE))
		return 0;
	if (phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed")))
		return 0;
	return ns_enrolled(ks, ns);
}

static int is_local(struct ksource *ks, json_t *p)
{
	const char *n = jstr(p, "node");

	return n && !strcmp(n, ks->node);
}

/* The IP pod P is a workload with (network order), its netns entry (or
 * NULL) into *NE; 0 when it is not one yet. */
static uint32_t pod_ip(struct ksource *ks, json_t *p, json_t **ne)
{
	const char *phase = jstr(p, "phase"), *ip;
	struct in_addr a;
	json_t *e = NULL;

	if (is_local(ks, p) && jstr(p, "uid"))
		e = json_object_get(ks->netns, jstr(p, "uid"));
	*ne = e;
	ip = json_string_value(json_array_get(json_object_get(p, "ips"), 0));
	if (ip && phase && !strcmp(phase, "Running") && inet_pton(AF_INET, ip, &a) == 1)
		return a.s_addr;
	/* Announced by skmesh-cni before the kubelet wrote its status. */
	if (e) {
		if (!ip)
			ip = json_string_value(json_array_get(json_object_get(e, "ips"), 0));
		if (ip && inet_pton(AF_INET, ip, &a) == 1)
			return a.s_addr;
	}
	return 0;
}

/* Under lock: what pod P (key K, NULL: no such pod) is to the mesh, and
 * whether CFG holds it with its network namespace. */
static enum ks_pod_state pod_state(struct ksource *ks, const char *k, json_t *p,
				   const struct config *cfg, int *in_cfg)
{
	const char *slash = k ? strchr(k, '/') : NULL;
	char ns[KW_MAX_NAME + 1];
	const struct cfg_workload *w;
	json_t *ne;
	uint32_t ip;

	if (!p || !slash)
		return KS_POD_UNKNOWN;
	snprintf(ns, sizeof(ns), "%.*s", (int)(slash - k), k);
	if (!pod_member(ks, ns, p) || !(ip = pod_ip(ks, p, &ne)))
		/* before the namespaces are listed a pod's enrolment cannot
		 * be told: not known, rather than outside (an ADD answered
		 * "outside" starts the pod unenrolled) */
		return ks->res[KS_NAMESPACES].synced ? KS_POD_OUTSIDE : KS_POD_UNKNOWN;
	w = cfg ? config_workload_by_ip(cfg, ip) : NULL;
	*in_cfg = w && w->netns && !strcmp(w->ns, ns) && !strcmp(w->name, slash + 1);
	return KS_POD_ENROLLED;
}

enum ks_pod_state ksource_pod_state(struct ksource *ks, const char *uid,
				    const struct config *cfg, int *in_cfg)
{
	enum ks_pod_state s;
	const char *k;
	json_t *p;

	*in_cfg = 0;
	pthread_mutex_lock(&ks->lock);
	k = json_string_value(json_object_get(ks->pod_by_uid, uid));
	p = k ? json_object_get(ks->res[KS_PODS].objs, k) : NULL;
	s = pod_state(ks, k, p && !strcmp(jstr(p, "uid") ?: "", uid) ? p : NULL, cfg, in_cfg);
	pthread_mutex_unlock(&ks->lock);
	return s;
}

void ksource_pods_without_netns(struct ksource *ks,
				void (*fn)(void *arg, const char *uid, const uint32_t *ips,
					   size_t nips),
				void *arg)
{
	const char *k;
	json_t *p;

	pthread_mutex_lock(&ks->lock);
	json_object_foreach(ks->res[KS_PODS].objs, k, p) {
		const char *uid = jstr(p, "uid"), *phase = jstr(p, "phase");
		uint32_t ips[8];
		size_t n = 0, i;
		json_t *v;

		if (!uid || !is_local(ks, p) || json_object_get(ks->netns, uid) ||
		    json_is_true(json_object_get(p, "hostNetwork")) ||
		    (phase && (!strcmp(phase, "Succeeded") || !strcmp(phase, "Failed"))))
			continue;
		json_array_foreach(json_object_get(p, "ips"), i, v) {
			struct in_addr a;

			if (n < 8 && inet_pton(AF_INET, json_string_value(v), &a) == 1)
				ips[n++] = a.s_addr;
		}
		if (n)
			fn(arg, uid, ips, n);
	}
	pthread_mutex_unlock(&ks->lock);
}

/* --- building a model ----------------------------------------------------- */

struct held_units {
	struct kunit **v;
	size_t n;
};

static void held_release(void *arg)
{
	struct held_units *h = arg;

	for (size_t i = 0; i < h->n; i++)
		unit_put(h->v[i]);
	free(h->v);
	free(h);
}

static int labels_from(json_t *l, struct cfg_labels *out)
{
	const char *k;
	json_t *v;

	out->n = 0;
	out->v = json_object_size(l) ? calloc(json_object_size(l), sizeof(*out->v)) : NULL;
	if (json_object_size(l) && !out->v)
		return -ENOMEM;
	json_object_foreach(l, k, v) {
		struct cfg_label *x = &out->v[out->n];

		x->key = strdup(k);
		x->val = strdup(json_string_value(v));
		out->n++;
		if (!x->key || !x->val)
			return -ENOMEM;
	}
	return 0;
}

/* Two pods with one IP: which one is the workload (1: A over B). */
static int pod_wins(json_t *a, json_t *b)
{
	const char *pa = jstr(a, "phase"), *pb = jstr(b, "phase");
	int ra = pa && !strcmp(pa, "Running"), rb = pb && !strcmp(pb, "Running");
	const char *ca = jstr(a, "created"), *cb = jstr(b, "created");

	if (ra != rb)
		return ra;
	if (json_is_true(json_object_get(a, "deleting")) !=
	    json_is_true(json_object_get(b, "deleting")))
		return !json_is_true(json_object_get(a, "deleting"));
	/* RFC 3339 UTC times compare as strings */
	return ca && cb ? strcmp(ca, cb) > 0 : ca != NULL;
}

static int add_pods(struct ksource *ks, struct config *m)
{
	json_t *byip = json_object(), *p;
	const char *k;
	int err = 0;

	if (!byip)
		return -ENOMEM;
	/* the pod each IP belongs to */
	json_object_foreach(ks->res[KS_PODS].objs, k, p) {
		const char *slash = strchr(k, '/');
		char ns[KW_MAX_NAME + 1], ipk[INET_ADDRSTRLEN];
		json_t *ne, *old;
		uint32_t ip;

		if (!slash)
			continue;
		snprintf(ns, sizeof(ns), "%.*s", (int)(slash - k), k);
		if (!pod_member(ks, ns, p) || !(ip = pod_ip(ks, p, &ne)))
			continue;
		inet_ntop(AF_INET, &ip, ipk, sizeof(ipk));
		old = json_object_get(byip, ipk);
		if (old && !pod_wins(p, json_object_get(ks->res[KS_PODS].objs,
							json_string_value(old))))
			continue;
		json_object_set_new(byip, ipk, json_string(k));
	}
	json_object_foreach(byip, k, p) {
		const char *key = json_string_value(p), *slash = strchr(key, '/');
		json_t *pod = json_object_get(ks->res[KS_PODS].objs, key), *ne;
		struct cfg_workload w = {};

		w.ip = pod_ip(ks, pod, &ne);
		w.name = strdup(slash + 1);
		w.ns = strndup(key, (size_t)(slash - key));
		w.sa = strdup(jstr(pod, "sa") ? jstr(pod, "sa") : "default");
		w.node = strdup(jstr(pod, "node") ? jstr(pod, "node") : "");
		if (ne)
			w.netns = strdup(jstr(ne, "netns"));
		if (labels_from(json_object_get(pod, "labels"), &w.labels) || !w.name || !w.ns ||
		    !w.sa || !w.node || (ne && !w.netns)) {
			/* the model frees what it was given, also on failure */
			model_add_workload(m, &w);
			err = -ENOMEM;
			break;
		}
		if ((err = model_add_workload(m, &w)))
			break;
	}
	json_decref(byip);
	return err;
}

/* The endpoints of service NS/NAME: ready ones, or when there are none
 * the serving terminating ones; each slice port's number by its name into
 * PORTS (name -> port). */
static int service_eps(struct ksource *ks, const char *ns, const char *name,
		       struct cfg_service *s, json_t *ports)
{
	size_t nsl = strlen(ns);
	json_t *ready = json_object(), *term = json_object(), *sl, *e, *use;
	const char *k;
	size_t i;
	int err = 0;

	if (!ready || !term) {
		json_decref(ready);
		json_decref(term);
		return -ENOMEM;
	}
	json_object_foreach(ks->res[KS_SLICES].objs, k, sl) {
		const char *svc = jstr(sl, "service"), *at = jstr(sl, "addressType");

		if (strncmp(k, ns, nsl) || k[nsl] != '/' || !svc || strcmp(svc, name) ||
		    !at || strcmp(at, "IPv4"))
			continue;
		json_array_foreach(json_object_get(sl, "ports"), i, e)
			if (!json_object_get(ports, jstr(e, "name")))
				json_object_set(ports, jstr(e, "name"), json_object_get(e, "port"));
		json_array_foreach(json_object_get(sl, "endpoints"), i, e) {
			if (json_is_true(json_object_get(e, "ready")))
				json_object_set_new(ready, jstr(e, "ip"), json_true());
			else if (json_is_true(json_object_get(e, "serving")) &&
				 json_is_true(json_object_get(e, "terminating")))
				json_object_set_new(term, jstr(e, "ip"), json_true());
		}
	}
	use = json_object_size(ready) ? ready : term;
	if (json_object_size(use) && !(s->eps = calloc(json_object_size(use), sizeof(*s->eps))))
		err = -ENOMEM;
	json_object_foreach(use, k, e) {
		struct in_addr a;

		if (err || inet_pton(AF_INET, k, &a) != 1)
			continue;
		s->eps[s->neps].ip = a.s_addr;
		s->eps[s->neps].weight = 1;
		s->neps++;
	}
	json_decref(ready);
	json_decref(term);
	return err;
}

static int add_service(struct ksource *ks, struct config *m, const char *key, json_t *sv)
{
	const char *slash = strchr(key, '/'), *cip = jstr(sv, "clusterIP"), *type = jstr(sv, "type");
	struct cfg_service s = {};
	json_t *ports = json_object(), *p;
	struct in_addr a;
	size_t i;
	int err;

	if (!slash || !cip || inet_pton(AF_INET, cip, &a) != 1 || !ports ||
	    (type && !strcmp(type, "ExternalName"))) {
		json_decref(ports);
		return ports ? 0 : -ENOMEM;
	}
	s.vip = a.s_addr;
	s.name = strdup(slash + 1);
	s.ns = strndup(key, (size_t)(slash - key));
	err = !s.name || !s.ns ? -ENOMEM : service_eps(ks, s.ns, s.name, &s, ports);
	if (!err && json_array_size(json_object_get(sv, "ports")) &&
	    !(s.ports = calloc(json_array_size(json_object_get(sv, "ports")), sizeof(*s.ports))))
		err = -ENOMEM;
	json_array_foreach(json_object_get(sv, "ports"), i, p) {
		const char *proto = jstr(p, "protocol"), *pname = jstr(p, "name");
		json_int_t port = json_integer_value(json_object_get(p, "port"));
		json_t *tp = json_object_get(p, "target"), *byname = json_object_get(ports, pname);
		struct cfg_port *cp;
		json_int_t target;

		if (err)
			break;
		if (strcmp(proto, "TCP") && strcmp(proto, "UDP"))
			continue;
		/* the slices name the number a named (or any) target resolved to */
		if (json_is_integer(byname))
			target = json_integer_value(byname);
		else if (json_is_integer(tp))
			target = json_integer_value(tp);
		else if (!tp)
			target = port;
		else
			target = 0;	/* named, resolved by no endpoint yet */
		if (port < 1 || port > 65535 || target < 0 || target > 65535)
			continue;
		cp = &s.ports[s.nports++];
		cp->name = strdup(pname);
		cp->port = (uint16_t)port;
		cp->target = (uint16_t)(target ? target : port);
		cp->proto = strcmp(proto, "UDP") ? IPPROTO_TCP : IPPROTO_UDP;
		if (!cp->name)
			err = -ENOMEM;
	}
	json_decref(ports);
	if (!err && !s.nports) {
		free(s.ports);
		s.ports = NULL;
		free(s.eps);
		s.eps = NULL;
		s.neps = 0;
		free(s.name);
		free(s.ns);
		return 0;	/* no port the data path serves */
	}
	{
		int rc = model_add_service(m, &s);	/* frees S on failure */

		return err ? err : rc;
	}
}

static int lend_policies(struct ksource *ks, struct config *m)
{
	struct held_units *h = calloc(1, sizeof(*h));
	size_t n = ks->res[KS_AUTHZ].nunits + ks->res[KS_PEERAUTHN].nunits;
	const struct cfg_objects **parts = calloc(n + 1, sizeof(*parts));
	int err;

	if (!h || !parts || (n && !(h->v = calloc(n, sizeof(*h->v))))) {
		free(h);
		free(parts);
		return -ENOMEM;
	}
	model_hold(m, h, held_release);
	for (int r = KS_AUTHZ; r <= KS_PEERAUTHN; r++) {
		for (size_t i = 0; i < ks->res[r].nunits; i++) {
			struct kunit *u = ks->res[r].units[i];

			if (u->diag.nerrors)
				continue;	/* left out, said when it came */
			atomic_fetch_add(&u->refs, 1);
			parts[h->n] = &u->part;
			h->v[h->n++] = u;
		}
	}
	/* each of the model's arrays grown once, not once per policy */
	err = model_lend_all(m, parts, h->n);
	free(parts);
	return err;
}

int ksource_build(struct ksource *ks, struct config **out, struct cfg_diag *diag,
		  uint64_t *gen)
{
	struct config *m = model_new(ks->root_ns, ks->trust_domain);
	const char *k;
	json_t *sv;
	int err;

	if (!m)
		return -ENOMEM;
	pthread_mutex_lock(&ks->lock);
	*gen = ks->gen;
	ks->built_dirty_since = ks->dirty_since;
	ks->dirty_since = 0;
	ks->builds++;
	err = lend_policies(ks, m);
	if (!err)
		err = add_pods(ks, m);
	json_object_foreach(ks->res[KS_SERVICES].objs, k, sv) {
		if (err)
			break;
		err = add_service(ks, m, k, sv);
	}
	pthread_mutex_unlock(&ks->lock);
	if (!err)
		err = model_finish(m, diag);
	if (!err && diag->nerrors)
		err = -EINVAL;
	if (err) {
		config_free(m);
		return err;
	}
	*out = m;
	return 0;
}

void ksource_applied(struct ksource *ks)
{
	double lag;

	pthread_mutex_lock(&ks->lock);
	if (ks->built_dirty_since) {
		lag = mono_ms() / 1e3 - ks->built_dirty_since;
		for (size_t i = 0; i < sizeof(lag_bounds) / sizeof(lag_bounds[0]); i++)
			if (lag <= lag_bounds[i])
				ks->lag_buckets[i]++;
		ks->lag_count++;
		ks->lag_sum += lag;
		ks->built_dirty_since = 0;
	}
	pthread_mutex_unlock(&ks->lock);
}

/* --- telemetry ------------------------------------------------------------ */

static size_t res_count(const struct kres *r)
{
	return defs[r->id].kind ? r->nunits : json_object_size(r->objs);
}

json_t *ksource_dump(struct ksource *ks)
{
	json_t *o, *res = json_object(), *pods = json_object();
	int all = 1;

	pthread_mutex_lock(&ks->lock);
	for (int i = 0; i < KS_NRES; i++) {
		struct kres *r = &ks->res[i];
		json_t *e = json_pack("{s:b, s:I, s:I, s:I, s:I}", "synced", r->synced,
				      "objects", (json_int_t)res_count(r),
				      "lists", (json_int_t)r->st.lists,
				      "relistsGone", (json_int_t)r->st.relists_gone,
				      "watchRestarts", (json_int_t)r->st.watch_restarts);

		all &= r->synced;
		if (e && defs[i].kind) {
			json_t *bad = json_array();

			json_object_set_new(e, "path", r->path[0] ? json_string(r->path) : json_null());
			for (size_t j = 0; bad && j < r->nunits; j++) {
				const struct kunit *u = r->units[j]->rejected ?
							r->units[j]->rejected : r->units[j];

				for (size_t d = 0; d < u->diag.n; d++)
					json_array_append_new(bad, json_string(u->diag.msgs[d]));
			}
			json_object_set_new(e, "messages", bad);
		}
		json_object_set_new(res, defs[i].name, e);
	}
	json_object_update(pods, ks->netns);
	o = json_pack("{s:s, s:s?, s:s, s:b, s:o, s:o}", "type", "kubernetes",
		      "server", ks->c ? kube_client_server(ks->c) : NULL, "node", ks->node,
		      "synced", all,
		      "resources", res, "podNetns", pods);
	pthread_mutex_unlock(&ks->lock);
	return o;
}

void ksource_metrics(struct ksource *ks, struct sbuf *b)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} ctr[] = {
		{ "skmesh_kube_lists_total", "Lists of a resource type (the first included)",
		  offsetof(struct kube_watch_stats, lists) },
		{ "skmesh_kube_relists_total", "Lists again because the API server said 410 Gone",
		  offsetof(struct kube_watch_stats, relists_gone) },
		{ "skmesh_kube_watch_restarts_total", "Watch streams opened again",
		  offsetof(struct kube_watch_stats, watch_restarts) },
		{ "skmesh_kube_errors_total", "Failed requests, backed off from",
		  offsetof(struct kube_watch_stats, errors) },
		{ "skmesh_kube_events_total", "Objects handed over by lists and watches",
		  offsetof(struct kube_watch_stats, events) },
	};

	pthread_mutex_lock(&ks->lock);
	sbuf_printf(b, "# HELP skmesh_kube_synced Whether a resource type has been listed "
		    "once (meshd is not ready before all are)\n# TYPE skmesh_kube_synced gauge\n");
	for (int i = 0; i < KS_NRES; i++)
		sbuf_printf(b, "skmesh_kube_synced{resource=\"%s\"} %d\n", defs[i].name,
			    ks->res[i].synced);
	sbuf_printf(b, "# HELP skmesh_kube_objects Objects held of a resource type\n"
		    "# TYPE skmesh_kube_objects gauge\n");
	for (int i = 0; i < KS_NRES; i++)
		sbuf_printf(b, "skmesh_kube_objects{resource=\"%s\"} %zu\n", defs[i].name,
			    res_count(&ks->res[i]));
	for (size_t c = 0; c < sizeof(ctr) / sizeof(ctr[0]); c++) {
		sbuf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", ctr[c].name, ctr[c].help,
			    ctr[c].name);
		for (int i = 0; i < KS_NRES; i++)
			sbuf_printf(b, "%s{resource=\"%s\"} %llu\n", ctr[c].name, defs[i].name,
				    (unsigned long long)*(const uint64_t *)
				    ((const char *)&ks->res[i].st + ctr[c].off));
	}
	sbuf_printf(b, "# HELP skmesh_kube_objects_refused_total Objects left out because "
		    "meshd holds %d of their type already\n"
		    "# TYPE skmesh_kube_objects_refused_total counter\n", KS_MAX_OBJECTS);
	for (int i = 0; i < KS_NRES; i++)
		sbuf_printf(b, "skmesh_kube_objects_refused_total{resource=\"%s\"} %llu\n",
			    defs[i].name, (unsigned long long)ks->over_cap[i]);
	sbuf_printf(b, "# HELP skmesh_kube_event_lag_seconds From a change the API server "
		    "sent to the kernel maps holding it\n"
		    "# TYPE skmesh_kube_event_lag_seconds histogram\n");
	for (size_t i = 0; i < sizeof(lag_bounds) / sizeof(lag_bounds[0]); i++)
		sbuf_printf(b, "skmesh_kube_event_lag_seconds_bucket{le=\"%g\"} %llu\n",
			    lag_bounds[i], (unsigned long long)ks->lag_buckets[i]);
	sbuf_printf(b, "skmesh_kube_event_lag_seconds_bucket{le=\"+Inf\"} %llu\n"
		    "skmesh_kube_event_lag_seconds_sum %.6f\n"
		    "skmesh_kube_event_lag_seconds_count %llu\n",
		    (unsigned long long)ks->lag_count, ks->lag_sum,
		    (unsigned long long)ks->lag_count);
	sbuf_printf(b, "# HELP skmesh_kube_pods_netns_known Local pods whose network "
		    "namespace meshd knows\n# TYPE skmesh_kube_pods_netns_known gauge\n"
		    "skmesh_kube_pods_netns_known %zu\n", json_object_size(ks->netns));
	pthread_mutex_unlock(&ks->lock);
}
