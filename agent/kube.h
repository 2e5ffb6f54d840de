/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A client of the Kubernetes API for meshd's cluster mode, on libcurl:
 * where the API server is and how to prove who we are (in-cluster config
 * or a kubeconfig), and list-then-watch of one resource type that never
 * loses an add, change or delete:
 *
 * - list in pages (limit/continue), handing every item over between
 *   relist_begin and relist_end, so the caller can drop what the new list
 *   no longer has;
 * - then watch from the list's resourceVersion with bookmarks; a dropped
 *   stream resumes from the last resourceVersion seen; 410 Gone (as an
 *   HTTP status or as an ERROR event inside the stream, and for an
 *   expired continue token) lists again;
 * - every failure backs off with jitter (0.5 s doubling to 30 s);
 * - a service-account token file is read again before every request, so
 *   a rotated token is used at once.
 *
 * What the server sends is checked by kwatch.c before a callback sees it.
 */
#ifndef SKM_KUBE_H
#define SKM_KUBE_H

#include <stddef.h>
#include <stdint.h>

#include "kwatch.h"

struct kube_client;

/* The in-cluster config: KUBERNETES_SERVICE_HOST/PORT and the mounted
 * service-account token and CA under DIR (NULL: the standard
 * /var/run/secrets/kubernetes.io/serviceaccount). NULL with ERR set when
 * something is missing. */
struct kube_client *kube_client_incluster(const char *dir, char *err, size_t errlen);

/* A kubeconfig file: its current context's cluster (server,
 * certificate-authority[-data]) and user (token, tokenFile,
 * client-certificate[-data] and client-key[-data]); relative paths are
 * the file's folder's. NULL with ERR set (what, and where in the file). */
struct kube_client *kube_client_kubeconfig(const char *path, char *err, size_t errlen);

void kube_client_free(struct kube_client *c);
/* The server's URL, for messages. */
const char *kube_client_server(const struct kube_client *c);

/*
 * GET PATH (with its query) from the server: the status into *CODE and
 * the body (malloc'ed, NUL-terminated, at most MAX bytes: more is an
 * error) into *BODY, *LEN. 0, or -errno with ERR set (a transport error,
 * a body over MAX).
 */
int kube_get(struct kube_client *c, const char *path, size_t max, long *code,
	     char **body, size_t *len, char *err, size_t errlen);

/* POST JSON (a NUL-terminated object) to PATH, as kube_get otherwise:
 * for the CA service's TokenReviews. Safe from several threads at once
 * on one client (each request has its own handle). */
int kube_post(struct kube_client *c, const char *path, const char *json, size_t max,
	      long *code, char **body, size_t *len, char *err, size_t errlen);

/* What a watch tells its caller. Each returns 0, or non-zero to stop the
 * watch (kube_watch_run returns it). */
struct kube_watch_ops {
	/* A list starts: every object the caller holds of this type is
	 * stale until an event names it again before relist_end. */
	int (*relist_begin)(void *arg);
	/* An object from a list (ADDED) or from the watch. */
	int (*event)(void *arg, const struct kw_event *ev);
	/* The list is whole (RV its resourceVersion): what relist_begin
	 * made stale and no event named since is gone. */
	int (*relist_end)(void *arg, const char *rv);
};

/* Counters of a watch, for the metrics (written by its thread only). */
struct kube_watch_stats {
	uint64_t lists;		/* lists done (the first one included) */
	uint64_t relists_gone;	/* ... because of 410 Gone */
	uint64_t watch_restarts;	/* watch streams opened again */
	uint64_t errors;	/* failures backed off from */
	uint64_t events;	/* events handed over */
	uint64_t bookmarks;
};

struct kube_watch_opts {
	const char *path;	/* e.g. /api/v1/pods,
				 * /apis/discovery.k8s.io/v1/endpointslices */
	unsigned int page;	/* items a list page (0: 500) */
	unsigned int watch_s;	/* timeoutSeconds of a watch (0: 300; each
				 * watch asks for 80-100% of it) */
	size_t max_page_bytes;	/* a list page's body (0: 64 MiB) */
	size_t max_event_bytes;	/* a watch event (0: 16 MiB) */
};

/*
 * Lists then watches OPTS->path until *STOP becomes non-zero (checked at
 * least every half second, also inside a watch) or a callback returns
 * non-zero. Returns 0 when stopped, the callback's value otherwise.
 * STATS, if not NULL, is kept up to date. Meant to run in a thread of its
 * own: it blocks.
 */
int kube_watch_run(struct kube_client *c, const struct kube_watch_opts *opts,
		   const struct kube_watch_ops *ops, void *arg,
		   struct kube_watch_stats *stats, volatile int *stop);

#endif /* SKM_KUBE_H */
