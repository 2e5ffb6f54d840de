// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The Kubernetes source's reading of objects (agent/ksource.c), offline:
 * events handed over as its watch threads would, models built from them. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "config.h"
#include "ksource.h"
#include "kwatch.h"
#include "unit.h"

static struct ksource *ks_new(void)
{
	struct ksource_opts o = { .node = "node1", .offline = 1 };
	struct ksource *ks = NULL;
	char err[256];

	assert_int_equal(ksource_new(&o, &ks, err, sizeof(err)), 0);
	return ks;
}

/* Hands over OBJ (JSON text) as event TYPE of RESOURCE. */
static int feed(struct ksource *ks, const char *resource, enum kw_type type, const char *obj)
{
	json_error_t je;
	json_t *o = json_loads(obj, 0, &je);
	json_t *md;
	struct kw_event ev = { .type = type, .object = o, .rv = "1" };
	int rc;

	if (!o)
		fail_msg("bad test JSON: %s: %s", je.text, obj);
	md = json_object_get(o, "metadata");
	ev.name = json_string_value(json_object_get(md, "name"));
	ev.ns = json_string_value(json_object_get(md, "namespace")) ?: "";
	rc = ksource_inject(ks, resource, &ev);
	json_decref(o);
	return rc;
}

static const char *const all_res[] = {
	"namespaces", "pods", "services", "endpointslices", "authorizationpolicies",
	"peerauthentications",
};

static void sync_all(struct ksource *ks)
{
	for (size_t i = 0; i < sizeof(all_res) / sizeof(all_res[0]); i++) {
		assert_int_equal(ksource_inject_relist(ks, all_res[i], 0), 0);
		assert_int_equal(ksource_inject_relist(ks, all_res[i], 1), 0);
	}
	assert_true(ksource_synced(ks));
}

static struct config *build(struct ksource *ks)
{
	struct cfg_diag diag = {};
	struct config *cfg = NULL;
	uint64_t gen;
	int rc = ksource_build(ks, &cfg, &diag, &gen);

	if (rc)
		unit_diag_dump(&diag);
	assert_int_equal(rc, 0);
	diag_free(&diag);
	return cfg;
}

static const struct cfg_workload *wl(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nwls; i++)
		if (!strcmp(cfg->wls[i].name, name))
			return &cfg->wls[i];
	return NULL;
}

static const struct cfg_service *svc(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->nsvcs; i++)
		if (!strcmp(cfg->svcs[i].name, name))
			return &cfg->svcs[i];
	return NULL;
}

static uint32_t ip4(const char *s)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, s, &a), 1);
	return a.s_addr;
}

#define NS(name, mode) \
	"{\"metadata\":{\"name\":\"" name "\",\"labels\":{\"istio.io/dataplane-mode\":\"" mode "\"}}}"

static char *pod(const char *ns, const char *name, const char *uid, const char *node,
		 const char *phase, const char *ip, const char *extra_labels, int host)
{
	char *s;

	assert_true(asprintf(&s,
		"{\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\",\"uid\":\"%s\","
		"\"creationTimestamp\":\"2026-12-06T10:00:00Z\","
		"\"labels\":{\"app\":\"web\"%s}},"
		"\"spec\":{\"nodeName\":\"%s\",\"serviceAccountName\":\"web-sa\",\"hostNetwork\":%s},"
		"\"status\":{\"phase\":\"%s\"%s%s%s%s%s}}",
		name, ns, uid, extra_labels, node, host ? "true" : "false", phase,
		ip ? ",\"podIP\":\"" : "", ip ? ip : "", ip ? "\",\"podIPs\":[{\"ip\":\"fd00::1\"},{\"ip\":\"" : "",
		ip ? ip : "", ip ? "\"}]" : "") > 0);
	return s;
}

static void feed_pod(struct ksource *ks, enum kw_type t, const char *ns, const char *name,
		     const char *uid, const char *node, const char *phase, const char *ip,
		     const char *extra, int host)
{
	char *p = pod(ns, name, uid, node, phase, ip, extra, host);

	assert_int_equal(feed(ks, "pods", t, p), 0);
	free(p);
}

/* Which pods are workloads: enrolment by labels, phase, IP, host network. */
static void test_ksource_pods(void **state)
{
	struct ksource *ks = ks_new();
	struct config *cfg;
	const struct cfg_workload *w;
	int in;

	(void)state;
	sync_all(ks);
	assert_int_equal(feed(ks, "namespaces", KW_ADDED, NS("shop", "ambient")), 0);
	assert_int_equal(feed(ks, "namespaces", KW_ADDED, NS("legacy", "none")), 0);
	feed_pod(ks, KW_ADDED, "shop", "web-1", "u1", "node1", "Running", "10.1.0.5", "", 0);
	feed_pod(ks, KW_ADDED, "shop", "web-2", "u2", "node2", "Running", "10.2.0.5", "", 0);
	feed_pod(ks, KW_ADDED, "shop", "out-1", "u3", "node1", "Running", "10.1.0.6",
		 ",\"istio.io/dataplane-mode\":\"none\"", 0);
	feed_pod(ks, KW_ADDED, "shop", "host-1", "u4", "node1", "Running", "10.0.0.1", "", 1);
	feed_pod(ks, KW_ADDED, "shop", "done-1", "u5", "node1", "Succeeded", "10.1.0.7", "", 0);
	feed_pod(ks, KW_ADDED, "shop", "new-1", "u6", "node2", "Pending", NULL, "", 0);
	feed_pod(ks, KW_ADDED, "legacy", "old-1", "u7", "node1", "Running", "10.1.0.8", "", 0);
	cfg = build(ks);
	assert_int_equal(cfg->nwls, 2);
	w = wl(cfg, "web-1");
	assert_non_null(w);
	assert_int_equal(w->ip, ip4("10.1.0.5"));	/* the IPv4 one of podIPs */
	assert_string_equal(w->ns, "shop");
	assert_string_equal(w->sa, "web-sa");
	assert_string_equal(w->node, "node1");
	assert_null(w->netns);
	assert_int_equal(w->labels.n, 1);
	assert_non_null(wl(cfg, "web-2"));
	assert_int_equal(ksource_pod_state(ks, "u3", cfg, &in), KS_POD_OUTSIDE);
	assert_int_equal(ksource_pod_state(ks, "u7", cfg, &in), KS_POD_OUTSIDE);
	assert_int_equal(ksource_pod_state(ks, "nope", cfg, &in), KS_POD_UNKNOWN);
	assert_int_equal(ksource_pod_state(ks, "u1", cfg, &in), KS_POD_ENROLLED);
	assert_false(in);	/* no netns known yet */
	config_free(cfg);

	/* skmesh-cni tells a local pending pod's netns and IP: enrolled at
	 * once, before the kubelet writes its status */
	feed_pod(ks, KW_ADDED, "shop", "new-2", "u8", "node1", "Pending", NULL, "", 0);
	ksource_pod_netns(ks, "u8", "/var/run/netns/p8", (uint32_t[]){ ip4("10.1.0.9") }, 1,
			  "cni");
	ksource_pod_netns(ks, "u1", "/var/run/netns/p1", (uint32_t[]){ ip4("10.1.0.5") }, 1,
			  "cni");
	/* a remote pod's netns is never used */
	ksource_pod_netns(ks, "u2", "/var/run/netns/x", (uint32_t[]){ ip4("10.2.0.5") }, 1,
			  "cni");
	cfg = build(ks);
	assert_int_equal(cfg->nwls, 3);
	w = wl(cfg, "new-2");
	assert_non_null(w);
	assert_int_equal(w->ip, ip4("10.1.0.9"));
	assert_string_equal(w->netns, "/var/run/netns/p8");
	assert_string_equal(wl(cfg, "web-1")->netns, "/var/run/netns/p1");
	assert_null(wl(cfg, "web-2")->netns);
	assert_int_equal(ksource_pod_state(ks, "u1", cfg, &in), KS_POD_ENROLLED);
	assert_true(in);
	config_free(cfg);

	/* the namespace leaves the mesh: its pods with it */
	assert_int_equal(feed(ks, "namespaces", KW_MODIFIED, NS("shop", "")), 0);
	cfg = build(ks);
	assert_int_equal(cfg->nwls, 0);
	config_free(cfg);
	/* ... and comes back; a deleted pod is gone */
	assert_int_equal(feed(ks, "namespaces", KW_MODIFIED, NS("shop", "ambient")), 0);
	feed_pod(ks, KW_DELETED, "shop", "web-2", "u2", "node2", "Running", "10.2.0.5", "", 0);
	cfg = build(ks);
	assert_int_equal(cfg->nwls, 2);
	assert_null(wl(cfg, "web-2"));
	assert_int_equal(ksource_pod_state(ks, "u2", cfg, &in), KS_POD_UNKNOWN);
	/* a pod made again under the same name is another pod: the old UID
	 * is no longer known, the new one is */
	feed_pod(ks, KW_MODIFIED, "shop", "web-1", "u9", "node1", "Running", "10.1.0.5", "", 0);
	assert_int_equal(ksource_pod_state(ks, "u1", cfg, &in), KS_POD_UNKNOWN);
	assert_int_equal(ksource_pod_state(ks, "u9", cfg, &in), KS_POD_ENROLLED);
	/* ... and a list without a pod forgets its UID */
	assert_int_equal(ksource_inject_relist(ks, "pods", 0), 0);
	assert_int_equal(ksource_inject_relist(ks, "pods", 1), 0);
	assert_int_equal(ksource_pod_state(ks, "u9", cfg, &in), KS_POD_UNKNOWN);
	config_free(cfg);
	ksource_free(ks);
}

/* Two pods claim one IP (a finished pod's address reused): the Running
 * one is the workload, and the model stays valid. */
static void test_ksource_ip_reuse(void **state)
{
	struct ksource *ks = ks_new();
	struct config *cfg;

	(void)state;
	sync_all(ks);
	assert_int_equal(feed(ks, "namespaces", KW_ADDED, NS("shop", "ambient")), 0);
	feed_pod(ks, KW_ADDED, "shop", "old", "u1", "node2", "Running", "10.2.0.5", "", 0);
	feed_pod(ks, KW_ADDED, "shop", "other", "u3", "node2", "Running", "10.2.0.6", "", 0);
	/* a younger pod with the same IP (the old one's status is stale) */
	assert_int_equal(feed(ks, "pods", KW_ADDED,
		"{\"metadata\":{\"name\":\"new\",\"namespace\":\"shop\",\"uid\":\"u2\","
		"\"creationTimestamp\":\"2026-12-06T11:00:00Z\"},\"spec\":{\"nodeName\":\"node2\"},"
		"\"status\":{\"phase\":\"Running\",\"podIP\":\"10.2.0.5\"}}"), 0);
	cfg = build(ks);
	assert_int_equal(cfg->nwls, 2);
	assert_non_null(wl(cfg, "new"));
	assert_string_equal(wl(cfg, "new")->sa, "default");
	assert_non_null(wl(cfg, "other"));
	config_free(cfg);
	/* the old one finishes: still the new one */
	feed_pod(ks, KW_MODIFIED, "shop", "old", "u1", "node2", "Failed", "10.2.0.5", "", 0);
	cfg = build(ks);
	assert_int_equal(cfg->nwls, 2);
	assert_non_null(wl(cfg, "new"));
	config_free(cfg);
	ksource_free(ks);
}

#define SLICE(name, svc, eps, ports) \
	"{\"metadata\":{\"name\":\"" name "\",\"namespace\":\"shop\",\"labels\":" \
	"{\"kubernetes.io/service-name\":\"" svc "\"}},\"addressType\":\"IPv4\"," \
	"\"endpoints\":[" eps "],\"ports\":[" ports "]}"
#define EP(ip, ready, serving, term) \
	"{\"addresses\":[\"" ip "\"],\"conditions\":{\"ready\":" ready ",\"serving\":" serving \
	",\"terminating\":" term "}}"

/* Services as kube-proxy reads them. */
static void test_ksource_services(void **state)
{
	struct ksource *ks = ks_new();
	const struct cfg_service *s;
	struct config *cfg;

	(void)state;
	sync_all(ks);
	assert_int_equal(feed(ks, "services", KW_ADDED,
		"{\"metadata\":{\"name\":\"web\",\"namespace\":\"shop\"},\"spec\":{"
		"\"clusterIP\":\"10.96.0.10\",\"type\":\"ClusterIP\",\"ports\":["
		"{\"name\":\"http\",\"port\":80,\"targetPort\":\"web-port\",\"protocol\":\"TCP\"},"
		"{\"name\":\"dns\",\"port\":53,\"targetPort\":5353,\"protocol\":\"UDP\"},"
		"{\"name\":\"sctp\",\"port\":99,\"protocol\":\"SCTP\"}]}}"), 0);
	assert_int_equal(feed(ks, "services", KW_ADDED,
		"{\"metadata\":{\"name\":\"headless\",\"namespace\":\"shop\"},\"spec\":{"
		"\"clusterIP\":\"None\",\"ports\":[{\"port\":80}]}}"), 0);
	assert_int_equal(feed(ks, "services", KW_ADDED,
		"{\"metadata\":{\"name\":\"ext\",\"namespace\":\"shop\"},\"spec\":{"
		"\"type\":\"ExternalName\",\"externalName\":\"example.com\"}}"), 0);
	assert_int_equal(feed(ks, "endpointslices", KW_ADDED,
		SLICE("web-abc", "web",
		      EP("10.1.0.5", "true", "true", "false") ","
		      EP("10.1.0.6", "false", "true", "true") ","
		      "{\"addresses\":[\"10.1.0.7\"]}",
		      "{\"name\":\"http\",\"port\":8080,\"protocol\":\"TCP\"},"
		      "{\"name\":\"dns\",\"port\":5353,\"protocol\":\"UDP\"}")), 0);
	cfg = build(ks);
	assert_int_equal(cfg->nsvcs, 1);
	s = svc(cfg, "web");
	assert_non_null(s);
	assert_int_equal(s->vip, ip4("10.96.0.10"));
	assert_int_equal(s->nports, 2);
	assert_int_equal(s->ports[0].port, 80);
	assert_int_equal(s->ports[0].target, 8080);	/* the name resolved */
	assert_int_equal(s->ports[1].proto, IPPROTO_UDP);
	assert_int_equal(s->ports[1].target, 5353);
	/* ready ones, and an endpoint without conditions (ready) */
	assert_int_equal(s->neps, 2);
	config_free(cfg);

	/* no ready endpoint left: the serving terminating one takes over */
	assert_int_equal(feed(ks, "endpointslices", KW_MODIFIED,
		SLICE("web-abc", "web", EP("10.1.0.5", "false", "false", "true") ","
		      EP("10.1.0.6", "false", "true", "true"),
		      "{\"name\":\"http\",\"port\":8080,\"protocol\":\"TCP\"}")), 0);
	cfg = build(ks);
	s = svc(cfg, "web");
	assert_int_equal(s->neps, 1);
	assert_int_equal(s->eps[0].ip, ip4("10.1.0.6"));
	config_free(cfg);

	/* the slice is gone: no backends, the VIP stays (refuses) */
	assert_int_equal(feed(ks, "endpointslices", KW_DELETED,
		SLICE("web-abc", "web", "", "")), 0);
	cfg = build(ks);
	assert_int_equal(svc(cfg, "web")->neps, 0);
	config_free(cfg);
	ksource_free(ks);
}

#define AP(name, spec) \
	"{\"apiVersion\":\"security.istio.io/v1\",\"kind\":\"AuthorizationPolicy\"," \
	"\"metadata\":{\"name\":\"" name "\",\"namespace\":\"shop\"},\"spec\":" spec "}"

/* Istio's policies: read by the loader's parser; a refused version keeps
 * the one before; a list drops what it no longer has. */
static void test_ksource_policies(void **state)
{
	struct ksource *ks = ks_new();
	struct config *cfg;
	json_t *dump;
	char *text;

	(void)state;
	sync_all(ks);
	assert_int_equal(feed(ks, "authorizationpolicies", KW_ADDED,
		AP("deny-bad", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":"
		   "{\"namespaces\":[\"bad\"]}}]}]}")), 0);
	assert_int_equal(feed(ks, "authorizationpolicies", KW_ADDED,
		AP("broken", "{\"action\":\"ALLOW\",\"rules\":[{\"from\":[{\"source\":"
		   "{\"ipBlocks\":[\"10.0.0.0/99\"]}}]}]}")), 0);
	cfg = build(ks);
	assert_int_equal(cfg->nauthz, 1);
	assert_string_equal(cfg->authz[0].name, "deny-bad");
	assert_int_equal(cfg->authz[0].action, POL_DENY);
	config_free(cfg);

	/* a refused change keeps the version before */
	assert_int_equal(feed(ks, "authorizationpolicies", KW_MODIFIED,
		AP("deny-bad", "{\"action\":\"DENY\",\"rules\":[{\"from\":[{\"source\":"
		   "{\"namespaces\":\"bad\"}}]}]}")), 0);
	cfg = build(ks);
	assert_int_equal(cfg->nauthz, 1);
	assert_string_equal(cfg->authz[0].name, "deny-bad");
	config_free(cfg);
	dump = ksource_dump(ks);
	text = json_dumps(json_object_get(json_object_get(json_object_get(dump, "resources"),
		"authorizationpolicies"), "messages"), 0);
	assert_non_null(text);
	assert_non_null(strstr(text, "AuthorizationPolicy shop/deny-bad"));
	assert_non_null(strstr(text, "AuthorizationPolicy shop/broken"));
	free(text);
	json_decref(dump);

	/* a list without them drops them all */
	assert_int_equal(ksource_inject_relist(ks, "authorizationpolicies", 0), 0);
	assert_int_equal(feed(ks, "authorizationpolicies", KW_ADDED,
		AP("allow-all", "{\"action\":\"ALLOW\",\"rules\":[{}]}")), 0);
	assert_int_equal(ksource_inject_relist(ks, "authorizationpolicies", 1), 0);
	cfg = build(ks);
	assert_int_equal(cfg->nauthz, 1);
	assert_string_equal(cfg->authz[0].name, "allow-all");
	config_free(cfg);
	ksource_free(ks);
}

/* Not synced before every type has listed once. */
static void test_ksource_sync(void **state)
{
	struct ksource *ks = ks_new();

	(void)state;
	assert_false(ksource_synced(ks));
	for (size_t i = 0; i + 1 < sizeof(all_res) / sizeof(all_res[0]); i++) {
		assert_int_equal(ksource_inject_relist(ks, all_res[i], 0), 0);
		assert_int_equal(ksource_inject_relist(ks, all_res[i], 1), 0);
	}
	assert_false(ksource_synced(ks));
	assert_int_equal(ksource_inject_relist(ks, "peerauthentications", 0), 0);
	assert_int_equal(ksource_inject_relist(ks, "peerauthentications", 1), 0);
	assert_true(ksource_synced(ks));
	assert_int_equal(ksource_inject_relist(ks, "widgets", 0), -ENOENT);
	ksource_free(ks);
}

int run_ksource_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ksource_pods),
		cmocka_unit_test(test_ksource_ip_reuse),
		cmocka_unit_test(test_ksource_services),
		cmocka_unit_test(test_ksource_policies),
		cmocka_unit_test(test_ksource_sync),
	};

	return cmocka_run_group_tests_name("ksource", tests, NULL, NULL);
}
