/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Istio L4 policy evaluation, as ztunnel does it: the one definition of
 * the semantics, used by the kernel map compiler (which asks for every
 * (source class, destination workload, port class)) and by the tunnel
 * (which asks for each inbound connection).
 *
 * Order (ztunnel's assert_rbac): PeerAuthentication first (an effective
 * STRICT mode is a DENY of "no client identity"), then any matching DENY
 * policy denies; with no ALLOW policy for the workload the connection is
 * allowed; otherwise some ALLOW policy must match.
 *
 * It reads the model (model.h: struct cfg_authz, struct cfg_peerauthn),
 * finished by its source; nothing here parses a string.
 */
#ifndef SKM_POLICY_H
#define SKM_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "rules.h"

/* The destination workload. */
struct pol_target {
	const char *ns;
	const struct cfg_labels *labels;
};

enum pol_why {
	POL_ALLOW_NO_POLICY,	/* no ALLOW policy applies */
	POL_ALLOW_RULE,		/* an ALLOW rule matched */
	POL_DENY_RULE,		/* a DENY rule matched */
	POL_DENY_NO_MATCH,	/* ALLOW policies apply, none matched */
	POL_DENY_STRICT,	/* STRICT mTLS and no client identity */
	POL_DENY_STRICT_PORT,	/* the port is STRICT (portLevelMtls) and no
				 * client identity */
};

struct pol_result {
	int allow;
	enum pol_why why;
	const char *kind;	/* "AuthorizationPolicy", "PeerAuthentication",
				 * NULL when no single policy decided */
	const char *policy_ns;	/* of the deciding policy, or NULL */
	const char *policy_name;
	int rule;		/* spec.rules index, -1 when not a rule */
	unsigned int nallow;	/* ALLOW policies that applied */
};

/*
 * Evaluates connection C to workload DST. Returns 0 with *RES filled, or
 * a negative errno (-EINVAL on NULL arguments). No allocation: fast
 * enough to call per connection; for many calls on one destination,
 * policy_set_build() once and policy_set_eval() is faster still.
 */
int policy_eval(const struct config *cfg, const struct pol_target *dst,
		const struct pol_conn *c, struct pol_result *res);

/* The policies that apply to one destination, selected once; it points
 * into CFG, so it must be freed before config_free(CFG). */
struct pol_set;

int policy_set_build(const struct config *cfg, const struct pol_target *dst,
		     struct pol_set **out);
int policy_set_eval(const struct pol_set *set, const struct pol_conn *c,
		    struct pol_result *res);
void policy_set_free(struct pol_set *set);

/*
 * One line for RES, such as "denied by DENY policy foo/deny-x rule 0" or
 * "denied: STRICT mTLS (PeerAuthentication foo/default) and no client
 * identity". Writes into BUF (LEN bytes) and returns it.
 */
const char *policy_reason(const struct pol_result *res, char *buf, size_t len);

/*
 * For the kernel compiler: the ports (host order) that can change a
 * verdict for DST (ports, notPorts, destination.port values of the
 * policies that apply, and its portLevelMtls ports), sorted, unique. Every
 * other port gives the same verdict as any port not listed. *PORTS is
 * malloc'ed (NULL when *N is 0). Returns 0 or -ENOMEM.
 */
int policy_ports_of(const struct config *cfg, const struct pol_target *dst,
		    uint16_t **ports, size_t *n);

/*
 * The CIDRs that can change a verdict for DST: ipBlocks, notIpBlocks and
 * source.ip values (flags POL_CIDR_SRC), destination.ip values
 * (POL_CIDR_DST), IPv4 only, sorted by (address, length), unique (flags
 * OR-ed when both). Returns 0 or -ENOMEM.
 */
int policy_cidrs_of(const struct config *cfg, const struct pol_target *dst,
		    struct pol_cidr **cidrs, size_t *n);

/*
 * 1 when anything can deny a connection to DST: an AuthorizationPolicy
 * applies, or the effective PeerAuthentication is not PERMISSIVE (STRICT,
 * or port-level STRICT). 0 when every connection is allowed.
 */
int policy_applies(const struct config *cfg, const struct pol_target *dst);

/*
 * A digest of all that the verdicts for DST depend on in CFG: its namespace
 * and labels, the AuthorizationPolicies and PeerAuthentications of its
 * namespace and of the root namespace (their documents' digests, in load
 * order), the root namespace and the trust domain. The same digest in two
 * configs means the same verdicts for the same connections, so reconcile
 * compiles again only the destinations whose digest changed.
 */
uint64_t policy_inputs(const struct config *cfg, const struct pol_target *dst);

#endif /* SKM_POLICY_H */
