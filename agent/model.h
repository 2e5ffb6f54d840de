/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The mesh model: workloads, services and Istio security policy, as every
 * source (the YAML loader, config.h; a cluster API source) fills it and as
 * the evaluator (policy.h) and reconcile read it. Nothing here parses text.
 *
 * A source makes a model with model_new(), adds its objects with
 * model_add_*() (or lends shared ones with model_lend()), then calls
 * model_finish() once: the checks that need the whole model (duplicates,
 * selectors, map capacity), the indexes, and istiod's conversion of
 * PeerAuthentication port settings. Positions (struct cfg_pos) are
 * optional: an object without a file is named in messages without one.
 * A finished model never changes: it can be read from any thread until
 * config_free().
 */
#ifndef SKM_MODEL_H
#define SKM_MODEL_H

#include <stddef.h>
#include <stdint.h>

struct keyidx;

/* Where a document or field came from, for messages. */
struct cfg_pos {
	const char *file;	/* one of the config's files */
	unsigned int line;	/* 1-based */
	unsigned int col;	/* 1-based */
};

struct cfg_label {
	char *key;
	char *val;
};

struct cfg_labels {
	struct cfg_label *v;
	size_t n;
};

struct cfg_workload {
	char *name;
	char *ns;
	char *sa;
	char *node;
	char *netns;		/* optional: path of the pod's network namespace */
	uint32_t ip;		/* network order */
	struct cfg_labels labels;
	struct cfg_pos pos;
};

struct cfg_port {
	char *name;
	uint16_t port;		/* host order */
	uint16_t target;	/* host order */
	uint8_t proto;		/* IPPROTO_TCP / IPPROTO_UDP */
	struct cfg_pos pos;
};

struct cfg_endpoint {
	uint32_t ip;		/* network order */
	uint32_t weight;	/* 0: drained, no new connections */
	struct cfg_pos pos;
};

struct cfg_service {
	char *name;
	char *ns;
	uint32_t vip;		/* network order */
	struct cfg_port *ports;
	size_t nports;
	int has_selector;
	struct cfg_labels selector;
	struct cfg_endpoint *eps;	/* explicit, or resolved from selector */
	size_t neps;
	struct cfg_pos pos;
};

/*
 * Istio security policy, as ztunnel enforces it (L4 only). A source
 * turns every AuthorizationPolicy into this precompiled form, so the
 * evaluator (policy.h) never parses a string: principals are split into
 * exact / prefix / suffix / presence, CIDRs are ip+mask, ports integers.
 * The shape is ztunnel's: a policy is a list of rules (OR-ed); a rule is a
 * list of clauses (AND-ed: its "to", its "from", then one per "when");
 * a clause is a list of matches (OR-ed); a match holds fields (AND-ed)
 * whose values are OR-ed, and not* fields that no value may match.
 */
enum pol_str_kind {
	POL_STR_EXACT,
	POL_STR_PREFIX,		/* "abc*" */
	POL_STR_SUFFIX,		/* "*abc" */
	POL_STR_PRESENCE,	/* "*": any non-empty value */
};

struct pol_str {
	char *s;		/* without the '*' */
	uint32_t len;
	uint8_t kind;		/* enum pol_str_kind */
};

#define POL_CIDR_SRC	0x1	/* source IP: ipBlocks, notIpBlocks, source.ip */
#define POL_CIDR_DST	0x2	/* destination IP: destination.ip */

struct pol_cidr {
	uint32_t ip;		/* network order, host bits cleared */
	uint32_t mask;		/* network order */
	uint8_t len;		/* prefix length, 0..32 */
	uint8_t v6;		/* an IPv6 block: never matches (IPv4 only) */
	uint8_t flags;		/* POL_CIDR_* (in policy_cidrs_of results) */
};

/* serviceAccounts entry: "ns/sa", or "sa" in the policy's namespace. */
struct pol_sa {
	char *ns;
	char *sa;
};

struct pol_strs { struct pol_str *v; size_t n; };
struct pol_cidrs { struct pol_cidr *v; size_t n; };
struct pol_ports { uint16_t *v; size_t n; };	/* host order */
struct pol_sas { struct pol_sa *v; size_t n; };

/* One from/to/when entry once the L7 fields are removed (ztunnel's
 * RbacMatch). A match with no field left is "empty": ztunnel skips it, so
 * it never matches. */
struct pol_match {
	struct pol_strs principals, not_principals;
	struct pol_strs namespaces, not_namespaces;
	struct pol_sas sas, not_sas;
	struct pol_cidrs src_ips, not_src_ips;
	struct pol_cidrs dst_ips, not_dst_ips;
	struct pol_ports ports, not_ports;
	int empty;
};

struct pol_clause {
	struct pol_match *v;	/* OR-ed */
	size_t n;
};

struct pol_rule {
	struct pol_clause *clauses;	/* AND-ed; no clause: matches all */
	size_t nclauses;
	int dropped;		/* ALLOW rule with L7 fields: never matches */
	struct cfg_pos pos;
};

enum pol_action {
	POL_ALLOW,
	POL_DENY,
};

struct cfg_authz {
	char *name;
	char *ns;
	enum pol_action action;
	int has_selector;	/* spec.selector given (even empty) */
	struct cfg_labels selector;
	int target_ref;		/* targetRef(s): waypoint only, never applied */
	int dry_run;		/* istio.io/dry-run: never applied */
	struct pol_rule *rules;	/* index = position in spec.rules */
	size_t nrules;
	char **warnings;	/* what is not enforced at L4, for dumps */
	size_t nwarnings;
	uint64_t digest;	/* of its document's text (see policy_inputs) */
	struct cfg_pos pos;
};

enum pol_mtls_mode {
	PA_UNSET,
	PA_DISABLE,
	PA_PERMISSIVE,
	PA_STRICT,
};

struct cfg_pa_port {
	uint16_t port;		/* host order: the workload's port */
	enum pol_mtls_mode mode;
	struct cfg_pos pos;
};

struct cfg_peerauthn {
	char *name;
	char *ns;
	int has_selector;	/* a non-empty matchLabels: workload level */
	struct cfg_labels selector;
	enum pol_mtls_mode mode;
	struct cfg_pa_port *ports;	/* sorted by port */
	size_t nports;
	int ignored;		/* root-namespace selector, or a second
				 * namespace-wide policy: never applied */
	/* istiod's conversion of a workload policy with portLevelMtls into
	 * a DENY policy for ztunnel (computed once the whole config is read,
	 * as it depends on the namespace and mesh policies). */
	struct pol_rule *conv;
	size_t nconv;
	char **warnings;
	size_t nwarnings;
	uint64_t digest;	/* of its document's text (see policy_inputs) */
	struct cfg_pos pos;
};

/* Objects as a source hands them over, in order. */
struct cfg_objects {
	struct cfg_workload *wls;
	size_t nwls;
	struct cfg_service *svcs;
	size_t nsvcs;
	struct cfg_authz *authz;
	size_t nauthz;
	struct cfg_peerauthn *pas;
	size_t npas;
};

struct config {
	char **files;		/* every file read, in order (YAML source) */
	size_t nfiles;
	struct cfg_workload *wls;
	size_t nwls;
	struct cfg_service *svcs;
	size_t nsvcs;
	struct cfg_authz *authz;	/* AuthorizationPolicy, in load order */
	size_t nauthz;
	struct cfg_peerauthn *pas;	/* PeerAuthentication, in load order */
	size_t npas;
	struct keyidx *wl_by_ip;	/* workload IP -> index in wls */
	char *root_ns;		/* Istio root namespace (mesh-wide scope) */
	char *trust_domain;	/* of principals built from a namespace/SA */
	/* indexes by namespace: positions in authz / pas sorted by
	 * (namespace, load order), see model_ns_range() */
	size_t *authz_by_ns;
	size_t *pas_by_ns;
	/* objects the model owns (model_add_*): freed with it */
	struct cfg_objects *own;
	/* what a source lent the model (model_hold): released with it */
	void *held;
	void (*held_release)(void *held);
	/* unique per model made (model_new): a model freed and another made
	 * at the same address are told apart by it */
	uint64_t serial;
};


/* Messages collected while loading: each "file:line:col: text". */
struct cfg_diag {
	char **msgs;
	size_t n;
	size_t nerrors;
	size_t nwarnings;
};

void diag_add(struct cfg_diag *d, int is_error, const struct cfg_pos *pos,
	      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void diag_print(const struct cfg_diag *d, const char *prog);
void diag_free(struct cfg_diag *d);

/* --- building a model --------------------------------------------------- */

/* An empty model for ROOT_NS (the Istio root namespace) and TRUST_DOMAIN
 * (NULL: CFG_DEFAULT_ROOT_NS, CFG_DEFAULT_TRUST_DOMAIN). NULL when out of
 * memory. */
#define CFG_DEFAULT_ROOT_NS		"istio-system"
#define CFG_DEFAULT_TRUST_DOMAIN	"cluster.local"
struct config *model_new(const char *root_ns, const char *trust_domain);

/*
 * Adds one object: the model takes over what it points to (on success
 * and on failure alike), freed by config_free(). A service with a
 * selector gets its endpoints from model_finish() (any it has are
 * ignored); a PeerAuthentication's conv is made by model_finish(). Returns
 * 0 or -ENOMEM.
 */
int model_add_workload(struct config *m, struct cfg_workload *w);
int model_add_service(struct config *m, struct cfg_service *s);
int model_add_authz(struct config *m, struct cfg_authz *a);
int model_add_peerauthn(struct config *m, struct cfg_peerauthn *p);

/* Adds shallow copies of the objects of the N sets OBJS, in order, each
 * array of M grown once (a file of 16,000 documents lends 16,000 sets);
 * their memory stays the source's and must outlive the model (see
 * model_hold); what model_finish() makes (selector endpoints,
 * PeerAuthentication conversions and warnings) is the model's own.
 * Returns 0 or -ENOMEM. */
int model_lend_all(struct config *m, const struct cfg_objects *const *objs, size_t n);
/* RELEASE(HELD) is called when the model is freed (one hold per model). */
void model_hold(struct config *m, void *held, void (*release)(void *held));

/*
 * The pass over the whole model, once every object is in: duplicate names
 * and IPs, VIP:port claims, selectors resolved to endpoints, map capacity,
 * indexes by IP and namespace, duplicate policies, istiod's handling of
 * PeerAuthentication (one namespace-wide policy, portLevelMtls converted
 * to DENY rules) and the PeerAuthentication warnings. Errors and warnings
 * go to DIAG. Returns 0, or -ENOMEM (a message in DIAG). The model is
 * valid only when DIAG counts no error.
 */
int model_finish(struct config *m, struct cfg_diag *diag);

void config_free(struct config *cfg);

/* Appends one zeroed element to ARR (N elements of SIZE), growing it by
 * powers of two. Returns the array, or NULL (ARR untouched). */
void *model_grow(void *arr, size_t *n, size_t size);
/* Frees the objects of OBJS and everything they own (not OBJS itself). */
void model_objects_free(struct cfg_objects *objs);
/* Frees what a policy model holds (not the struct itself). */
void cfg_rules_free(struct pol_rule *rules, size_t n);
void cfg_authz_free(struct cfg_authz *a);
void cfg_peerauthn_free(struct cfg_peerauthn *p);
void cfg_labels_free(struct cfg_labels *l);
/* Appends a copy of TEXT to a policy's warning list: 0 or -ENOMEM. */
int cfg_warning_add(char ***list, size_t *n, const char *text);

/* --- reading a model ---------------------------------------------------- */

const struct cfg_workload *config_workload_by_ip(const struct config *cfg,
						 uint32_t ip);
/* W's SPIFFE ID, spiffe://<trust domain>/ns/<ns>/sa/<sa>, into BUF. */
void config_workload_id(const struct config *cfg, const struct cfg_workload *w,
			char *buf, size_t len);
int labels_match(const struct cfg_labels *selector,
		 const struct cfg_labels *labels);

/* The policies of one namespace: positions in authz (PAS 0) or pas
 * (PAS 1), in load order. */
struct model_range {
	const size_t *v;
	size_t n;
};

struct model_range model_ns_range(const struct config *cfg, int pas, const char *ns);

/* The PeerAuthentications that decide the mTLS mode of one workload. */
struct pa_pick {
	const struct cfg_peerauthn *mesh;	/* root namespace, no selector */
	const struct cfg_peerauthn *ns;		/* its namespace, no selector */
	const struct cfg_peerauthn *wl;		/* its namespace, selecting it */
};

/* What istiod attaches to the workload for ztunnel. */
struct pa_eff {
	const struct cfg_peerauthn *strict_by;	/* static STRICT DENY, from */
	const struct cfg_peerauthn *port_pa;	/* its converted DENY policy */
};

/* The PeerAuthentications of a workload of namespace NS with LABELS
 * (NULL: none). */
void model_pa_pick(const struct config *cfg, const char *ns,
		   const struct cfg_labels *labels, struct pa_pick *k);
/* istiod's convertedSelectorPeerAuthentications(): whether the static
 * STRICT policy and the workload's converted policy are attached. */
void model_pa_decide(const struct pa_pick *k, struct pa_eff *e);

#endif /* SKM_MODEL_H */
