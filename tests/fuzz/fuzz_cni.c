// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fuzz target: skmesh-cni's input checks (cni_parse) and what it builds
 * from an accepted input. The input's first line is CNI_ARGS, the rest is
 * the network config on stdin; each of ADD, CHECK, DEL and VERSION runs on
 * it with an otherwise valid environment. Checked: a refusal carries its
 * code and a message and makes error JSON that parses; an accepted ADD
 * or CHECK has prevResult, and its result is prevResult with only
 * cniVersion changed; the request for meshd and VERSION's reply are JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "fuzz.h"
#include "../../cni/cni.h"

static void check_error(int rc, const struct cni_call *c, const struct cni_err *e)
{
	char *out = cni_error_json(c->version, e);
	json_t *j = out ? json_loads(out, 0, NULL) : NULL;

	if (e->code != rc || !e->msg[0] || !j ||
	    json_integer_value(json_object_get(j, "code")) != rc ||
	    !json_is_string(json_object_get(j, "msg")) ||
	    !json_is_string(json_object_get(j, "cniVersion")))
		abort();
	json_decref(j);
	free(out);
}

static void check_ok(const struct cni_call *c)
{
	json_t *req = cni_request(c), *r, *want;
	char *out;

	if (c->cmd == CNI_CMD_VERSION) {
		out = cni_version_reply(c);
		r = out ? json_loads(out, 0, NULL) : NULL;
		if (!json_is_array(json_object_get(r, "supportedVersions")))
			abort();
		json_decref(r);
		free(out);
		json_decref(req);
		return;
	}
	if (!req || !cni_version_ok(c->version) || !c->container_id || !c->ifname || !c->netns)
		abort();
	out = json_dumps(req, JSON_COMPACT);
	if (!out)
		abort();
	free(out);
	json_decref(req);
	if (c->cmd == CNI_CMD_DEL)
		return;
	if (!json_is_object(c->prev) || !c->netns[0])
		abort();
	out = cni_result(c);
	r = out ? json_loads(out, 0, NULL) : NULL;
	want = json_copy(c->prev);
	json_object_set_new(want, "cniVersion", json_string(c->version));
	if (!r || !json_equal(r, want))
		abort();
	json_decref(want);
	json_decref(r);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const cmds[] = { "ADD", "CHECK", "DEL", "VERSION" };
	const uint8_t *nl = memchr(data, '\n', size);
	size_t alen = nl ? (size_t)(nl - data) : 0;
	char *args = malloc(alen + 1);
	const char *in = (const char *)data + (nl ? alen + 1 : 0);
	size_t inlen = size - (nl ? alen + 1 : 0);

	if (!args)
		abort();
	memcpy(args, data, alen);
	args[alen] = 0;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct cni_env env = {
			.command = cmds[i], .containerid = "0123abc", .netns = "/var/run/netns/p1",
			.ifname = "eth0", .args = args, .path = "/opt/cni/bin",
		};
		struct cni_call c;
		struct cni_err e;
		int rc = cni_parse(&env, in, inlen, &c, &e);

		if (rc)
			check_error(rc, &c, &e);
		else
			check_ok(&c);
		cni_call_free(&c);
	}
	free(args);
	return 0;
}
