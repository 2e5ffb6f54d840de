/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the Kubernetes API server sends a watcher and a lister, decoded and
 * checked: every byte of it is hostile until checked here.
 *
 * A watch (GET ...?watch=1&allowWatchBookmarks=true) is a stream of JSON
 * objects, one a line:
 *
 *     {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}
 *
 * arriving in pieces of any size. The decoder keeps the unfinished line
 * (at most max_line bytes: a longer one breaks the stream) and hands over
 * each whole event. A list (GET ... ?limit=N) is one JSON object whose
 * items are handed over the same way, with the list's resourceVersion and
 * continue token.
 *
 * An object handed over has a metadata.name, an optional
 * metadata.namespace and a metadata.resourceVersion (strings of bounded
 * length, names of Kubernetes' own charset); a BOOKMARK has only the
 * resourceVersion; an ERROR is a Status with its code (410 Gone: the
 * watch must list again). Anything else breaks the stream with a reason:
 * the caller drops the connection and lists again, so no event is lost.
 */
#ifndef SKM_KWATCH_H
#define SKM_KWATCH_H

#include <stddef.h>

typedef struct json_t json_t;

enum kw_type {
	KW_ADDED,
	KW_MODIFIED,
	KW_DELETED,
	KW_BOOKMARK,
	KW_ERROR,
};

#define KW_MAX_NAME	253	/* a DNS subdomain, the longest object name */
#define KW_MAX_RV	64	/* resourceVersion: opaque, bounded here */
#define KW_DEFAULT_MAX_LINE	(16U << 20)	/* an event of a watch */

struct kw_event {
	enum kw_type type;
	json_t *object;		/* borrowed for the call: json_incref to keep */
	const char *name;	/* metadata.name ("" for BOOKMARK, ERROR) */
	const char *ns;		/* metadata.namespace, "" when none */
	const char *rv;		/* metadata.resourceVersion ("" for ERROR) */
	int code;		/* ERROR: the Status's code (410: Gone) */
	const char *reason;	/* ERROR: the Status's reason, "" when none */
};

/* Called for each event; a non-zero return stops the feed with it. */
typedef int (*kw_event_fn)(const struct kw_event *ev, void *arg);

struct kwatch_dec;

/* A decoder whose lines may be MAX_LINE bytes at most (0: the default);
 * NULL when out of memory. */
struct kwatch_dec *kwatch_dec_new(size_t max_line);
void kwatch_dec_free(struct kwatch_dec *d);
/* Forgets the unfinished line: for a new connection. */
void kwatch_dec_reset(struct kwatch_dec *d);

/*
 * Feeds LEN bytes of a watch stream, calling FN for each whole event.
 * Returns 0; FN's non-zero return; -E2BIG (a line over max_line) or
 * -EBADMSG (a line that is no event: ERR says what and where) after which
 * the decoder must be reset before it is fed again; -ENOMEM.
 */
int kwatch_dec_feed(struct kwatch_dec *d, const char *buf, size_t len,
		    kw_event_fn fn, void *arg, char *err, size_t errlen);

/* What a list gave besides its items. */
struct kw_list {
	char rv[KW_MAX_RV + 1];		/* the list's resourceVersion */
	char cont[1024];		/* metadata.continue, "" at the end */
	size_t items;
	int code;			/* -EPROTO: the Status's code (410:
					 * the continue token expired) */
};

/*
 * Decodes one page of a list, calling FN with an ADDED event for each
 * item. Returns 0 with OUT filled; FN's non-zero return; -EPROTO when the
 * server answered a Status instead (OUT->code, ERR its message);
 * -EBADMSG when it is neither (ERR says why); -ENOMEM.
 */
int kwatch_list_parse(const char *buf, size_t len, kw_event_fn fn, void *arg,
		      struct kw_list *out, char *err, size_t errlen);

/* Writes the message FMT into ERR (ERRLEN bytes, may be 0) and returns
 * RC: the error-message helper of kwatch.c and kube.c. */
int kw_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif /* SKM_KWATCH_H */
