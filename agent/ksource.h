/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The Kubernetes source of the model (cluster mode): one thread per
 * resource type lists and watches the API server (kube.h) and keeps what
 * meshd needs of each object; the main thread builds a model (model.h) of
 * all of it whenever something changed, and hands it to the reconcile as
 * the YAML source's model is handed.
 *
 * What becomes of each type, as Istio ambient and kube-proxy read them:
 * - Namespaces: their labels, for enrolment (istio.io/dataplane-mode=ambient).
 * - Pods of enrolled namespaces, without istio.io/dataplane-mode=none and
 *   not on the host network, become workloads: their IPv4 podIP,
 *   serviceAccountName, labels and nodeName. A pod is one once Running
 *   with an IP; a pod of this node already when skmesh-cni announced its
 *   network namespace (so its first connection is captured), with the IP
 *   the plugin gave while the API has none yet. Succeeded and Failed pods
 *   are not; of two pods that claim one IP, the Running one (then the
 *   younger) is.
 * - Services with an IPv4 cluster IP (not headless, not ExternalName) and
 *   their EndpointSlices become VIPs and backends: TCP and UDP ports, a
 *   named targetPort resolved by the slices' port of that name, ready
 *   endpoints only, or, when none is ready, the serving terminating ones
 *   (kube-proxy's fallback).
 * - AuthorizationPolicy and PeerAuthentication (security.istio.io v1, or
 *   v1beta1 where v1 is not served) are read by the YAML loader's parser
 *   (config_parse_object), with its checks and warnings; an object it
 *   refuses is left out (its errors logged and in /config_dump) and the
 *   rest apply.
 * Local pods' network namespaces are not in the API: skmesh-cni and the
 * /proc scan tell them (ksource_pod_netns).
 */
#ifndef SKM_KSOURCE_H
#define SKM_KSOURCE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct cfg_diag;
struct config;
struct sbuf;

#define KS_LABEL_MODE		"istio.io/dataplane-mode"
#define KS_MODE_AMBIENT		"ambient"
#define KS_MODE_NONE		"none"

struct ksource_opts {
	const char *kubeconfig;		/* NULL: in-cluster config */
	const char *node;		/* this node (spec.nodeName) */
	const char *root_ns;		/* NULL: istio-system */
	const char *trust_domain;	/* NULL: cluster.local */
	int offline;			/* no API server: objects come only from
					 * ksource_inject() (tests, fuzzing) */
};

struct ksource;

/* Makes the client (a bad kubeconfig or missing in-cluster config is said
 * in ERR) without starting anything. */
int ksource_new(const struct ksource_opts *o, struct ksource **out, char *err, size_t errlen);
/* Starts the watch threads. */
int ksource_start(struct ksource *ks);
/* Stops and joins the threads, frees everything (KS may be NULL). */
void ksource_free(struct ksource *ks);

/* An eventfd that is readable when something changed (read it to clear). */
int ksource_fd(const struct ksource *ks);
/* Whether every resource type has been listed once. */
int ksource_synced(const struct ksource *ks);
/* The version of what the source holds: grows with every change. */
uint64_t ksource_gen(const struct ksource *ks);

/*
 * A finished model of everything the source holds now. Messages go to
 * DIAG: those of refused or partly applied policies are warnings here (the
 * policy's own errors mean it is left out); an error means the model is
 * not valid. *GEN is the version it was built from. 0, or -ENOMEM / -EINVAL.
 */
int ksource_build(struct ksource *ks, struct config **out, struct cfg_diag *diag,
		  uint64_t *gen);

/* A local pod's network namespace as skmesh-cni or the /proc scan found
 * it (SOURCE: "cni", "pending" or "proc"); IPS (network order) as the
 * plugin saw them; HOSTIF its host-side interface, or NULL. */
void ksource_pod_netns(struct ksource *ks, const char *uid, const char *netns,
		       const uint32_t *ips, size_t nips, const char *source);
/* Forgets what ksource_pod_netns() said of UID (the pod's DEL). */
void ksource_pod_forget(struct ksource *ks, const char *uid);

enum ks_pod_state {
	KS_POD_UNKNOWN,		/* no such pod in the API (yet) */
	KS_POD_OUTSIDE,		/* not enrolled: not part of the mesh */
	KS_POD_ENROLLED,	/* enrolled: a workload of the model */
};

/* What the pod UID is to the mesh now; for an enrolled one, whether CFG
 * (a model this source built) holds it with its network namespace. */
enum ks_pod_state ksource_pod_state(struct ksource *ks, const char *uid,
				    const struct config *cfg, int *in_cfg);

/* Calls FN for every pod of this node that is (or would be, once its
 * namespace is known) enrolled and whose network namespace no one has
 * told yet, with its IPs from the API. */
void ksource_pods_without_netns(struct ksource *ks,
				void (*fn)(void *arg, const char *uid, const uint32_t *ips,
					   size_t nips),
				void *arg);

/* For /config_dump: {"type":"kubernetes","server":...,"synced":...,
 * "resources":{...}} (a new reference). */
json_t *ksource_dump(struct ksource *ks);
/* The source's metrics, Prometheus text. */
void ksource_metrics(struct ksource *ks, struct sbuf *b);
/* The last built model is in the maps: the time since the first change
 * it holds arrived goes to the event-lag metric. */
void ksource_applied(struct ksource *ks);

/*
 * What a watch thread does, for a source made offline: RESOURCE is one of
 * "namespaces", "pods", "services", "endpointslices",
 * "authorizationpolicies", "peerauthentications" (Istio's as version v1).
 * ksource_inject_relist(.., 0) starts a list, (.., 1) ends it (the type
 * is then synced); ksource_inject() hands over one event. 0, -ENOENT (no
 * such resource) or the watch callback's error.
 */
struct kw_event;
int ksource_inject_relist(struct ksource *ks, const char *resource, int end);
int ksource_inject(struct ksource *ks, const char *resource, const struct kw_event *ev);

#endif /* SKM_KSOURCE_H */
