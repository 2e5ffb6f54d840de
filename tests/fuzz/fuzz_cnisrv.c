// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fuzz target: meshd's parser of skmesh-cni's requests (cnisrv_parse), fed
 * the bytes of one request line as they come off the socket. Checked: a
 * refusal is -EINVAL or -EPROTONOSUPPORT with a message and nothing left
 * filled in; an accepted request has a known op, bounded lists and
 * NUL-terminated fields, and written back as skmesh-cni writes a request
 * it parses to the very same struct.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "fuzz.h"
#include "cnisrv.h"

#define TERMINATED(a) (memchr((a), 0, sizeof(a)) != NULL)

static json_t *emit(const struct cni_req *r)
{
	static const char *const ops[] = { "", "add", "del", "check" };
	json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:s}", "version", 1, "op", ops[r->op],
			      "containerId", r->container_id, "netns", r->netns,
			      "ifName", r->ifname);
	json_t *ifs = json_array(), *ips = json_array();
	char a[INET_ADDRSTRLEN];

	if (!o || !ifs || !ips)
		abort();
	if (r->pod_uid[0]) {
		json_object_set_new(o, "podNamespace", json_string(r->pod_ns));
		json_object_set_new(o, "podName", json_string(r->pod_name));
		json_object_set_new(o, "podUid", json_string(r->pod_uid));
	}
	for (size_t i = 0; i < r->nhost_ifs; i++)
		json_array_append_new(ifs, json_string(r->host_ifs[i]));
	for (size_t i = 0; i < r->nips; i++)
		json_array_append_new(ips, json_string(inet_ntop(AF_INET, &r->ips[i], a, sizeof(a))));
	json_object_set_new(o, "hostInterfaces", ifs);
	json_object_set_new(o, "ips", ips);
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cni_req *r = malloc(sizeof(*r)), *again = malloc(sizeof(*again));
	char err[512] = "";
	json_t *o;
	char *text;
	int rc;

	if (!r || !again)
		abort();
	rc = cnisrv_parse((const char *)data, size, r, err, sizeof(err));
	if (rc) {
		if ((rc != -EINVAL && rc != -EPROTONOSUPPORT) || !err[0] || r->op ||
		    r->container_id[0] || r->nips || r->nhost_ifs)
			abort();
		goto out;
	}
	if (r->op < CNI_REQ_ADD || r->op > CNI_REQ_CHECK || !r->container_id[0] ||
	    r->nips > CNI_REQ_IPS_MAX || r->nhost_ifs > CNI_REQ_IFS_MAX || r->from_pending ||
	    !TERMINATED(r->container_id) || !TERMINATED(r->netns) || !TERMINATED(r->ifname) ||
	    !TERMINATED(r->pod_ns) || !TERMINATED(r->pod_name) || !TERMINATED(r->pod_uid) ||
	    (r->op != CNI_REQ_DEL && (!r->netns[0] || !r->pod_uid[0])))
		abort();
	for (size_t i = 0; i < r->nhost_ifs; i++)
		if (!r->host_ifs[i][0] || !TERMINATED(r->host_ifs[i]))
			abort();
	o = emit(r);
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!text || cnisrv_parse(text, strlen(text), again, err, sizeof(err)) ||
	    memcmp(r, again, sizeof(*r)))
		abort();
	free(text);
out:
	free(r);
	free(again);
	return 0;
}
