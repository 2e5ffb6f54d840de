// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The Kubernetes watch decoder (agent/kwatch.c) fed what an API server, or
 * something in its place, may send: the input after its first byte is a
 * watch stream, fed whole and then in pieces of (first byte % 61 + 1)
 * bytes. Both feeds must give the same events (types, names, versions,
 * codes) and end the same way; every event handed over must carry what
 * kwatch.h promises. The same bytes are also decoded as a list page.
 */
#include <errno.h>
#include <string.h>

#include "kwatch.h"

struct trace {
	char text[1 << 16];
	size_t len;
	int n;
};

static int check_and_record(const struct kw_event *ev, void *arg)
{
	struct trace *t = arg;
	int w;

	if (!ev->object || !ev->name || !ev->ns || !ev->rv || !ev->reason)
		abort();
	if (ev->type == KW_ERROR ? (ev->code < 100 || ev->code > 599) :
	    (!*ev->rv || strlen(ev->rv) > KW_MAX_RV || strlen(ev->name) > KW_MAX_NAME ||
	     (ev->type != KW_BOOKMARK && !*ev->name)))
		abort();
	w = snprintf(t->text + t->len, sizeof(t->text) - t->len, "%d %s/%s %s %d|",
		     (int)ev->type, ev->ns, ev->name, ev->rv, ev->code);
	if (w > 0 && (size_t)w < sizeof(t->text) - t->len)
		t->len += (size_t)w;
	t->n++;
	return 0;
}

static int feed(const uint8_t *data, size_t size, size_t step, struct trace *t)
{
	struct kwatch_dec *d = kwatch_dec_new(4096);
	char err[256];
	int rc = 0;

	if (!d)
		abort();
	for (size_t off = 0; off < size && !rc; off += step)
		rc = kwatch_dec_feed(d, (const char *)data + off,
				     size - off < step ? size - off : step, check_and_record, t,
				     err, sizeof(err));
	kwatch_dec_free(d);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct trace whole, pieces, list;
	struct kw_list l;
	char err[256];
	int a, b;

	if (!size)
		return 0;
	memset(&whole, 0, sizeof(whole));
	memset(&pieces, 0, sizeof(pieces));
	memset(&list, 0, sizeof(list));
	a = feed(data + 1, size - 1, size - 1 ? size - 1 : 1, &whole);
	b = feed(data + 1, size - 1, (size_t)(data[0] % 61) + 1, &pieces);
	/* a line over the bound may be cut at another event in pieces
	 * than whole: compare only streams that were not */
	if (a != -E2BIG && b != -E2BIG &&
	    (a != b || whole.n != pieces.n || whole.len != pieces.len ||
	     memcmp(whole.text, pieces.text, whole.len)))
		abort();
	kwatch_list_parse((const char *)data + 1, size - 1, check_and_record, &list, &l, err,
			  sizeof(err));
	return 0;
}
