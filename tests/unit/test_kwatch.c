// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The Kubernetes watch and list decoder (agent/kwatch.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "kwatch.h"
#include "unit.h"

/* What the callback saw, one line an event: "TYPE ns/name rv code". */
struct seen {
	char text[4096];
	int n;
};

static int record(const struct kw_event *ev, void *arg)
{
	static const char *const types[] = { "ADDED", "MODIFIED", "DELETED", "BOOKMARK",
					      "ERROR" };
	struct seen *s = arg;
	size_t used = strlen(s->text);

	snprintf(s->text + used, sizeof(s->text) - used, "%s %s/%s %s %d\n", types[ev->type],
		 ev->ns, ev->name, ev->rv, ev->code);
	s->n++;
	return 0;
}

static const char stream[] =
	"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"name\":\"web-1\","
	"\"namespace\":\"shop\",\"resourceVersion\":\"101\"}}}\n"
	"\n"
	"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"web-1\","
	"\"namespace\":\"shop\",\"resourceVersion\":\"102\"},\"status\":{\"podIP\":\"10.1.2.3\"}}}\r\n"
	"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Pod\",\"metadata\":{\"resourceVersion\":\"150\"}}}\n"
	"{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"shop\",\"resourceVersion\":\"151\"}}}\n"
	"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\","
	"\"message\":\"too old resource version: 1 (150)\",\"reason\":\"Expired\",\"code\":410}}\n";

/* The events are the same whatever pieces the bytes come in. */
static void test_kwatch_pieces(void **state)
{
	size_t steps[] = { sizeof(stream) - 1, 1, 2, 7, 64 };

	(void)state;
	for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
		struct kwatch_dec *d = kwatch_dec_new(0);
		struct seen s = { .n = 0 };
		char err[256] = "";

		assert_non_null(d);
		for (size_t off = 0; off < sizeof(stream) - 1; off += steps[k]) {
			size_t n = sizeof(stream) - 1 - off < steps[k] ? sizeof(stream) - 1 - off :
									 steps[k];

			if (kwatch_dec_feed(d, stream + off, n, record, &s, err, sizeof(err)))
				fail_msg("step %zu: %s", steps[k], err);
		}
		assert_int_equal(s.n, 5);
		/* a BOOKMARK has only its rv, an ERROR only its code */
		assert_non_null(strstr(s.text, "ADDED shop/web-1 101 0\nMODIFIED shop/web-1 102 0\n"
					       "BOOKMARK / 150 0\nDELETED /shop 151 0\nERROR /  410\n"));
		kwatch_dec_free(d);
	}
}

/* Each broken line stops the stream with a reason, nothing after it. */
static void test_kwatch_refused(void **state)
{
	static const struct {
		const char *line, *why;
		int rc;
	} cases[] = {
		{ "not json\n", "is not JSON", -EBADMSG },
		{ "[1,2]\n", "is not {\"type\"", -EBADMSG },
		{ "{\"type\":\"ADDED\"}\n", "is not {\"type\"", -EBADMSG },
		{ "{\"type\":\"EXPLODED\",\"object\":{}}\n", "unknown type", -EBADMSG },
		{ "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n",
		  "resourceVersion", -EBADMSG },
		{ "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"resourceVersion\":\"1\"}}}\n",
		  "metadata.name", -EBADMSG },
		{ "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"A_b\",\"resourceVersion\":\"1\"}}}\n",
		  "metadata.name", -EBADMSG },
		{ "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"namespace\":\"x.y\","
		  "\"resourceVersion\":\"1\"}}}\n", "namespace", -EBADMSG },
		{ "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"1 2\"}}}\n",
		  "resourceVersion", -EBADMSG },
		{ "{\"type\":\"ADDED\",\"type\":\"DELETED\",\"object\":{}}\n", "is not JSON", -EBADMSG },
		{ "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Pod\",\"code\":410}}\n", "without a Status",
		  -EBADMSG },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kwatch_dec *d = kwatch_dec_new(0);
		struct seen s = { .n = 0 };
		char err[256] = "", buf[512];
		int rc;

		snprintf(buf, sizeof(buf), "%s%s", cases[i].line,
			 "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}\n");
		rc = kwatch_dec_feed(d, buf, strlen(buf), record, &s, err, sizeof(err));
		if (rc != cases[i].rc || !strstr(err, cases[i].why) || s.n)
			fail_msg("case %zu: rc %d, err '%s', %d events", i, rc, err, s.n);
		kwatch_dec_free(d);
	}
}

/* A line over the bound breaks the stream before it is all kept. */
static void test_kwatch_too_long(void **state)
{
	struct kwatch_dec *d = kwatch_dec_new(1024);
	struct seen s = { .n = 0 };
	char err[256] = "", chunk[300];

	(void)state;
	memset(chunk, 'x', sizeof(chunk));
	assert_int_equal(kwatch_dec_feed(d, chunk, sizeof(chunk), record, &s, err, sizeof(err)), 0);
	assert_int_equal(kwatch_dec_feed(d, chunk, sizeof(chunk), record, &s, err, sizeof(err)), 0);
	assert_int_equal(kwatch_dec_feed(d, chunk, sizeof(chunk), record, &s, err, sizeof(err)), 0);
	assert_int_equal(kwatch_dec_feed(d, chunk, sizeof(chunk), record, &s, err, sizeof(err)),
			 -E2BIG);
	assert_non_null(strstr(err, "longer than 1024 bytes"));
	kwatch_dec_reset(d);
	assert_int_equal(kwatch_dec_feed(d, stream, sizeof(stream) - 1, record, &s, err,
					 sizeof(err)), 0);
	assert_int_equal(s.n, 5);
	kwatch_dec_free(d);
}

static void test_kwatch_list(void **state)
{
	static const char page[] =
		"{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"200\","
		"\"continue\":\"eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MjAwfQ\"},\"items\":["
		"{\"metadata\":{\"name\":\"a\",\"namespace\":\"x\",\"resourceVersion\":\"190\"}},"
		"{\"metadata\":{\"name\":\"b\",\"namespace\":\"x\",\"resourceVersion\":\"199\"}}]}";
	static const char gone[] =
		"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
		"\"message\":\"The provided continue parameter is too old\",\"reason\":\"Expired\","
		"\"code\":410}";
	static const char empty[] =
		"{\"kind\":\"ServiceList\",\"metadata\":{\"resourceVersion\":\"7\"},\"items\":null}";
	struct seen s = { .n = 0 };
	struct kw_list l;
	char err[256] = "";

	(void)state;
	assert_int_equal(kwatch_list_parse(page, sizeof(page) - 1, record, &s, &l, err,
					   sizeof(err)), 0);
	assert_string_equal(l.rv, "200");
	assert_string_equal(l.cont, "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MjAwfQ");
	assert_int_equal(l.items, 2);
	assert_string_equal(s.text, "ADDED x/a 190 0\nADDED x/b 199 0\n");
	assert_int_equal(kwatch_list_parse(gone, sizeof(gone) - 1, record, &s, &l, err,
					   sizeof(err)), -EPROTO);
	assert_int_equal(l.code, 410);
	assert_non_null(strstr(err, "410 Expired"));
	assert_int_equal(kwatch_list_parse(empty, sizeof(empty) - 1, record, &s, &l, err,
					   sizeof(err)), 0);
	assert_int_equal(l.items, 0);
	assert_string_equal(l.cont, "");
	assert_int_equal(kwatch_list_parse("{\"items\":[]}", 12, record, &s, &l, err, sizeof(err)),
			 -EBADMSG);
	assert_non_null(strstr(err, "resourceVersion"));
}

int run_kwatch_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kwatch_pieces),
		cmocka_unit_test(test_kwatch_refused),
		cmocka_unit_test(test_kwatch_too_long),
		cmocka_unit_test(test_kwatch_list),
	};

	return cmocka_run_group_tests_name("kwatch", tests, NULL, NULL);
}
