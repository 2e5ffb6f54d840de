/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The declarative config: Kubernetes-style YAML documents
 * (apiVersion/kind/metadata/spec), many per file, many files per folder.
 * Loading never touches the kernel: a config is parsed and validated whole,
 * and only a valid one is handed to reconcile. A loaded config never
 * changes: it can be read from any thread until config_free().
 */
#ifndef SKM_CONFIG_H
#define SKM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct keyidx;
struct cfg_refs;

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
 * Istio security policy, as ztunnel enforces it (L4 only). The loader
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

struct config {
	char **files;		/* every file read, in order */
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
	 * (namespace, load order), see policy.c */
	size_t *authz_by_ns;
	size_t *pas_by_ns;
	/* parse results it shares (read-only) with other configs and the
	 * cache: most strings and lists its objects point to */
	struct cfg_refs *refs;
};

/* Options of config_load_opts(); NULL (or 0) fields take the defaults. */
struct cfg_opts {
	const char *root_ns;		/* default "istio-system" */
	const char *trust_domain;	/* default "cluster.local" */
	size_t max_file_bytes;		/* default CFG_DEFAULT_MAX_FILE_BYTES */
	size_t max_doc_bytes;		/* default CFG_DEFAULT_MAX_DOC_BYTES */
};

#define CFG_DEFAULT_ROOT_NS		"istio-system"
#define CFG_DEFAULT_TRUST_DOMAIN	"cluster.local"
/* Size caps: a bigger file or document is an error (the config is
 * rejected, the running state kept). A Kubernetes object, and so one
 * document of it, is at most about 1.5 MiB (etcd's request limit); a
 * ConfigMap's data at most 1 MiB. A config folder outside Kubernetes may
 * hold bigger files: 64 MiB is ten times the 6 MB policy-scale benchmark. */
#define CFG_DEFAULT_MAX_FILE_BYTES	((size_t)64 << 20)
#define CFG_DEFAULT_MAX_DOC_BYTES	((size_t)1 << 20)

/* Messages collected while loading: each "file:line:col: text". */
struct cfg_diag {
	char **msgs;
	size_t n;
	size_t nerrors;
	size_t nwarnings;
};

/* Loads PATH (a file, or every *.yaml / *.yml file of a folder in name
 * order). Returns 0 and *out on success (warnings may be in diag);
 * a negative errno with every error in diag otherwise, *out untouched. */
int config_load(const char *path, struct config **out, struct cfg_diag *diag);
/* The same with options (OPTS may be NULL). */
int config_load_opts(const char *path, const struct cfg_opts *opts,
		     struct config **out, struct cfg_diag *diag);
void config_free(struct config *cfg);

/*
 * What config_load_cached() keeps from one load to the next, so that a
 * reload parses only what changed: each file's text, and what each of its
 * documents parsed to. A file whose inode, size and times are those of the
 * last read is not read again; a changed one is read and cut at its "---"
 * lines, and only the documents whose text (by a 128-bit hash) or first
 * line differs from the last read are parsed. Whole-config checks run on
 * every load. A cache serves one loader
 * at a time; the configs it makes do not depend on it (they may outlive it,
 * and be read and freed on any thread).
 */
struct cfg_cache;

struct cfg_cache *cfg_cache_new(void);
void cfg_cache_free(struct cfg_cache *cache);
/* config_load_opts() through CACHE (NULL: none); the result, messages
 * included, is the same as without. */
int config_load_cached(const char *path, const struct cfg_opts *opts,
		       struct cfg_cache *cache, struct config **out,
		       struct cfg_diag *diag);

void diag_add(struct cfg_diag *d, int is_error, const struct cfg_pos *pos,
	      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void diag_print(const struct cfg_diag *d, const char *prog);
void diag_free(struct cfg_diag *d);

/* Frees what a policy model holds (not the struct itself). */
void cfg_rules_free(struct pol_rule *rules, size_t n);
void cfg_authz_free(struct cfg_authz *a);
void cfg_peerauthn_free(struct cfg_peerauthn *p);
/* Appends a copy of TEXT to a policy's warning list: 0 or -ENOMEM. */
int cfg_warning_add(char ***list, size_t *n, const char *text);

const struct cfg_workload *config_workload_by_ip(const struct config *cfg,
						 uint32_t ip);
/* W's SPIFFE ID, spiffe://<trust domain>/ns/<ns>/sa/<sa>, into BUF. */
void config_workload_id(const struct config *cfg, const struct cfg_workload *w,
			char *buf, size_t len);
int labels_match(const struct cfg_labels *selector,
		 const struct cfg_labels *labels);

#endif /* SKM_CONFIG_H */
