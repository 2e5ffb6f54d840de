// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Kubernetes watch streams and list pages, decoded and checked (kwatch.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "kwatch.h"

struct kwatch_dec {
	char *line;		/* the unfinished line */
	size_t len, cap, max;
	unsigned long long lineno;	/* lines decoded, for messages */
};

struct kwatch_dec *kwatch_dec_new(size_t max_line)
{
	struct kwatch_dec *d = calloc(1, sizeof(*d));

	if (d)
		d->max = max_line ? max_line : KW_DEFAULT_MAX_LINE;
	return d;
}

void kwatch_dec_free(struct kwatch_dec *d)
{
	if (!d)
		return;
	free(d->line);
	free(d);
}

void kwatch_dec_reset(struct kwatch_dec *d)
{
	d->len = 0;
	d->lineno = 0;
}

int kw_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* Whether S (at most MAX bytes) is a name of Kubernetes' charset: lower
 * case letters, digits, '-' and '.' (DOTS), starting and ending with a
 * letter or digit. */
static int k8s_name_ok(const char *s, size_t max, int dots)
{
	size_t n = strlen(s);

	if (!n || n > max)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

		if (!alnum && c != '-' && !(dots && c == '.'))
			return 0;
		if (!alnum && (i == 0 || i == n - 1))
			return 0;
	}
	return 1;
}

/* A resourceVersion: opaque to clients, here printable and bounded. */
static int rv_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > KW_MAX_RV)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return 0;
	return 1;
}

static const char *str_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Fills EV's name, ns and rv from OBJ's metadata; NAMED: a name is
 * required (an object, not a bookmark). 0 or -EBADMSG with ERR. */
static int object_meta(json_t *obj, int named, struct kw_event *ev, char *err, size_t errlen)
{
	json_t *md = json_object_get(obj, "metadata");
	const char *name, *ns, *rv;

	if (!json_is_object(md))
		return kw_fail(err, errlen, -EBADMSG, "object without metadata");
	rv = str_of(md, "resourceVersion");
	if (!rv || !rv_ok(rv))
		return kw_fail(err, errlen, -EBADMSG, "object without a valid metadata.resourceVersion");
	ev->rv = rv;
	ev->name = ev->ns = "";
	if (!named)
		return 0;
	name = str_of(md, "name");
	if (!name || !k8s_name_ok(name, KW_MAX_NAME, 1))
		return kw_fail(err, errlen, -EBADMSG, "object without a valid metadata.name");
	ns = str_of(md, "namespace");
	if (json_object_get(md, "namespace") && (!ns || (*ns && !k8s_name_ok(ns, 63, 0))))
		return kw_fail(err, errlen, -EBADMSG, "object %s: metadata.namespace is not a "
			    "namespace name", name);
	ev->name = name;
	ev->ns = ns ? ns : "";
	return 0;
}

/* A Status object (kind Status): its code and reason into EV. */
static int status_of(json_t *obj, struct kw_event *ev)
{
	json_t *code = json_object_get(obj, "code");
	const char *kind = str_of(obj, "kind"), *reason = str_of(obj, "reason");

	if (!kind || strcmp(kind, "Status") || !json_is_integer(code) ||
	    json_integer_value(code) < 100 || json_integer_value(code) > 599)
		return -EBADMSG;
	ev->code = (int)json_integer_value(code);
	ev->reason = reason ? reason : "";
	ev->name = ev->ns = ev->rv = "";
	return 0;
}

static const struct {
	const char *name;
	enum kw_type type;
} kw_types[] = {
	{ "ADDED", KW_ADDED }, { "MODIFIED", KW_MODIFIED }, { "DELETED", KW_DELETED },
	{ "BOOKMARK", KW_BOOKMARK }, { "ERROR", KW_ERROR },
};

/* One line of a watch: decoded, checked, handed to FN. */
static int one_event(struct kwatch_dec *d, const char *line, size_t len, kw_event_fn fn,
		     void *arg, char *err, size_t errlen)
{
	struct kw_event ev = { .code = 0, .reason = "" };
	json_error_t jerr;
	const char *type;
	json_t *root, *obj;
	size_t i;
	int rc;

	root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return kw_fail(err, errlen, -EBADMSG, "watch event %llu is not JSON: %s at column %d",
			    d->lineno, jerr.text, jerr.column);
	rc = -EBADMSG;
	type = str_of(root, "type");
	obj = json_object_get(root, "object");
	if (!json_is_object(root) || !type || !json_is_object(obj)) {
		kw_fail(err, errlen, rc, "watch event %llu is not {\"type\": ..., \"object\": {...}}",
		     d->lineno);
		goto out;
	}
	for (i = 0; i < sizeof(kw_types) / sizeof(kw_types[0]); i++)
		if (!strcmp(type, kw_types[i].name))
			break;
	if (i == sizeof(kw_types) / sizeof(kw_types[0])) {
		kw_fail(err, errlen, rc, "watch event %llu: unknown type \"%.32s\"", d->lineno, type);
		goto out;
	}
	ev.type = kw_types[i].type;
	ev.object = obj;
	if (ev.type == KW_ERROR) {
		if (status_of(obj, &ev)) {
			kw_fail(err, errlen, rc, "watch event %llu: ERROR without a Status", d->lineno);
			goto out;
		}
	} else {
		char why[160];

		if (object_meta(obj, ev.type != KW_BOOKMARK, &ev, why, sizeof(why))) {
			kw_fail(err, errlen, rc, "watch event %llu (%s): %s", d->lineno, type, why);
			goto out;
		}
	}
	rc = fn(&ev, arg);
out:
	json_decref(root);
	return rc;
}

int kwatch_dec_feed(struct kwatch_dec *d, const char *buf, size_t len,
		    kw_event_fn fn, void *arg, char *err, size_t errlen)
{
	while (len) {
		const char *nl = memchr(buf, '\n', len);
		size_t take = nl ? (size_t)(nl - buf) : len;
		const char *line;
		size_t linelen;
		int rc;

		if (d->len + take > d->max)
			return kw_fail(err, errlen, -E2BIG, "watch event %llu is longer than %zu bytes",
				    d->lineno + 1, d->max);
		if (!nl || d->len) {
			if (d->len + take > d->cap) {
				size_t cap = d->cap ? d->cap : 4096;
				char *p;

				while (cap < d->len + take)
					cap *= 2;
				p = realloc(d->line, cap);
				if (!p)
					return -ENOMEM;
				d->line = p;
				d->cap = cap;
			}
			memcpy(d->line + d->len, buf, take);
			d->len += take;
		}
		if (!nl)
			return 0;
		/* a whole line: in place when nothing was kept before it */
		line = d->len ? d->line : buf;
		linelen = d->len ? d->len : take;
		buf += take + 1;
		len -= take + 1;
		d->len = 0;
		if (!linelen || (linelen == 1 && line[0] == '\r'))
			continue;	/* an empty line: nothing */
		d->lineno++;
		rc = one_event(d, line, linelen, fn, arg, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

int kwatch_list_parse(const char *buf, size_t len, kw_event_fn fn, void *arg,
		      struct kw_list *out, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root, *items, *md, *it;
	const char *rv, *cont;
	size_t i;
	int rc = -EBADMSG;

	memset(out, 0, sizeof(*out));
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return kw_fail(err, errlen, -EBADMSG, "list is not JSON: %s at line %d column %d",
			    jerr.text, jerr.line, jerr.column);
	if (!json_is_object(root)) {
		kw_fail(err, errlen, rc, "list is not a JSON object");
		goto out;
	}
	{
		struct kw_event st = { .type = KW_ERROR };

		if (!status_of(root, &st)) {
			const char *msg = str_of(root, "message");

			out->code = st.code;
			kw_fail(err, errlen, -EPROTO, "the server answered %d %s: %.200s", st.code,
			     st.reason, msg ? msg : "");
			rc = -EPROTO;
			goto out;
		}
	}
	md = json_object_get(root, "metadata");
	items = json_object_get(root, "items");
	rv = json_is_object(md) ? str_of(md, "resourceVersion") : NULL;
	cont = json_is_object(md) ? str_of(md, "continue") : NULL;
	if (!json_is_array(items) && !json_is_null(items)) {
		kw_fail(err, errlen, rc, "list without items");
		goto out;
	}
	if (!rv || !rv_ok(rv)) {
		kw_fail(err, errlen, rc, "list without a valid metadata.resourceVersion");
		goto out;
	}
	if (cont && strlen(cont) >= sizeof(out->cont)) {
		kw_fail(err, errlen, rc, "list's continue token is longer than %zu bytes",
		     sizeof(out->cont) - 1);
		goto out;
	}
	snprintf(out->rv, sizeof(out->rv), "%s", rv);
	snprintf(out->cont, sizeof(out->cont), "%s", cont ? cont : "");
	json_array_foreach(items, i, it) {
		struct kw_event ev = { .type = KW_ADDED, .object = it, .reason = "" };
		char why[160];

		if (!json_is_object(it)) {
			kw_fail(err, errlen, rc, "list item %zu is not an object", i);
			goto out;
		}
		if (object_meta(it, 1, &ev, why, sizeof(why))) {
			kw_fail(err, errlen, rc, "list item %zu: %s", i, why);
			goto out;
		}
		rc = fn(&ev, arg);
		if (rc)
			goto out;
		rc = -EBADMSG;
		out->items++;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}
