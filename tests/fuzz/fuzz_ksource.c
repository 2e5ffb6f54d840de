// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The Kubernetes source (agent/ksource.c) fed what a hostile API server
 * may send once the watch decoder has let it through: the input after its
 * first two bytes is a watch stream whose events go, one by one, to the
 * resource type the first byte picks (rotating by the second byte after
 * each event), with a pod network namespace announced now and then, as
 * skmesh-cni would. Every few events a model is built: it must be built
 * or refused with a message, never crash, and a built model's workloads
 * must be enrolled pods with IPv4 addresses and its services have ports.
 */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "ksource.h"
#include "kwatch.h"

static const char *const res[] = {
	"namespaces", "pods", "services", "endpointslices", "authorizationpolicies",
	"peerauthentications",
};
#define NRES (sizeof(res) / sizeof(res[0]))

struct run {
	struct ksource *ks;
	unsigned int pick, step, n;
};

static void build_check(struct ksource *ks)
{
	struct cfg_diag diag = {};
	struct config *cfg = NULL;
	uint64_t gen;
	int rc = ksource_build(ks, &cfg, &diag, &gen);

	if (rc && rc != -EINVAL && rc != -ENOMEM)
		abort();
	if (rc == -EINVAL && !diag.nerrors)
		abort();	/* refused without saying why */
	for (size_t i = 0; cfg && i < cfg->nwls; i++)
		if (!cfg->wls[i].ip || !cfg->wls[i].name[0] || !cfg->wls[i].ns[0])
			abort();
	for (size_t i = 0; cfg && i < cfg->nsvcs; i++)
		if (!cfg->svcs[i].nports || !cfg->svcs[i].vip)
			abort();
	config_free(cfg);
	diag_free(&diag);
}

static int one(const struct kw_event *ev, void *arg)
{
	struct run *r = arg;
	const char *uid = json_string_value(json_object_get(json_object_get(ev->object,
								"metadata"), "uid"));

	ksource_inject(r->ks, res[r->pick % NRES], ev);
	if (uid && r->n % 3 == 0)
		ksource_pod_netns(r->ks, uid, "/proc/self/ns/net",
				  (uint32_t[]){ 0x0500010a }, 1, "cni");
	r->pick += r->step;
	if (++r->n % 4 == 0)
		build_check(r->ks);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ksource_opts o = { .node = "node1", .offline = 1 };
	struct run r = {};
	struct kwatch_dec *d;
	char err[256];

	if (size < 2)
		return 0;
	if (ksource_new(&o, &r.ks, err, sizeof(err)))
		abort();
	for (size_t i = 0; i < NRES; i++) {
		ksource_inject_relist(r.ks, res[i], 0);
		ksource_inject_relist(r.ks, res[i], 1);
	}
	r.pick = data[0];
	r.step = data[1];
	d = kwatch_dec_new(1 << 16);
	if (!d)
		abort();
	kwatch_dec_feed(d, (const char *)data + 2, size - 2, one, &r, err, sizeof(err));
	kwatch_dec_free(d);
	build_check(r.ks);
	ksource_free(r.ks);
	return 0;
}
