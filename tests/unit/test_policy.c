// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The Istio L4 policy model and evaluator, rule by rule: matching,
 * scopes, L7 removal, PeerAuthentication precedence and port settings,
 * and the errors bad input gives (with file:line:column).
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "policy.h"
#include "unit.h"

#define AP(ns, name)							\
	"apiVersion: security.istio.io/v1\n"				\
	"kind: AuthorizationPolicy\n"					\
	"metadata: {name: " name ", namespace: " ns "}\n"
#define PA(ns, name)							\
	"apiVersion: security.istio.io/v1beta1\n"			\
	"kind: PeerAuthentication\n"					\
	"metadata: {name: " name ", namespace: " ns "}\n"

/* --- helpers --------------------------------------------------------- */

static struct config *load_opts(const char *text, const struct cfg_opts *opts,
				struct cfg_diag *diag)
{
	struct config *cfg = NULL;
	char *path = unit_write_tmp(text);
	int rc = config_load_opts(path, opts, &cfg, diag);

	if (rc)
		unit_diag_dump(diag);
	assert_int_equal(rc, 0);
	unlink(path);
	free(path);
	return cfg;
}

static struct config *load(const char *text)
{
	struct cfg_diag diag = {};
	struct config *cfg = load_opts(text, NULL, &diag);

	diag_free(&diag);
	return cfg;
}

/* "line:col" of the first NEEDLE in TEXT (1-based, as libyaml marks). */
static void where(const char *text, const char *needle, char *out, size_t len)
{
	const char *p = strstr(text, needle);
	unsigned int line = 1, col = 1;

	assert_non_null(p);
	for (const char *q = text; q < p; q++) {
		if (*q == '\n') {
			line++;
			col = 1;
		} else {
			col++;
		}
	}
	snprintf(out, len, "%u:%u", line, col);
}

/* TEXT must fail to load with an error at NEEDLE's position saying WHAT. */
static void expect_error_at(const char *text, const char *needle, const char *what)
{
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path = unit_write_tmp(text), loc[600], pos[32];
	int rc = config_load(path, &cfg, &diag);

	where(text, needle, pos, sizeof(pos));
	snprintf(loc, sizeof(loc), "%s:%s: error: ", path, pos);
	if (rc == 0 || !unit_diag_has(&diag, loc) || !unit_diag_has(&diag, what)) {
		fprintf(stderr, "# want at %s: %s\n", pos, what);
		unit_diag_dump(&diag);
	}
	assert_int_not_equal(rc, 0);
	assert_null(cfg);
	assert_true(unit_diag_has(&diag, loc));
	assert_true(unit_diag_has(&diag, what));
	diag_free(&diag);
	unlink(path);
	free(path);
}

/* TEXT loads, with a warning that says WHAT. */
static void expect_warning(const char *text, const char *what)
{
	struct cfg_diag diag = {};
	struct config *cfg = load_opts(text, NULL, &diag);

	if (!unit_diag_has(&diag, what)) {
		fprintf(stderr, "# want warning: %s\n", what);
		unit_diag_dump(&diag);
	}
	assert_true(unit_diag_has(&diag, what));
	config_free(cfg);
	diag_free(&diag);
}

struct probe {
	const char *dst_ns;
	const char *labels;	/* "app=a,version=v1" */
	const char *src_ns;	/* NULL: plaintext */
	const char *src_sa;
	const char *src_ip;
	uint16_t port;
	const char *src_td;	/* NULL: the config's */
	const char *dst_ip;	/* NULL: 10.244.0.1 */
};

/* Evaluates P both ways (they must agree); returns the result. */
static struct pol_result eval(const struct config *cfg, const struct probe *p)
{
	struct cfg_label lv[8];
	struct cfg_labels labels = { lv, 0 };
	char buf[256], *save = NULL;
	struct pol_result r1, r2;
	struct pol_target dst = { p->dst_ns, &labels };
	struct pol_conn c = {};
	struct pol_set *set;
	struct in_addr a;

	snprintf(buf, sizeof(buf), "%s", p->labels ? p->labels : "");
	for (char *kv = strtok_r(buf, ",", &save); kv && labels.n < 8;
	     kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');

		assert_non_null(eq);
		*eq = 0;
		lv[labels.n].key = kv;
		lv[labels.n++].val = eq + 1;
	}
	c.mtls = p->src_ns != NULL;
	c.src_ns = p->src_ns;
	c.src_sa = p->src_sa;
	c.src_td = p->src_td;
	assert_int_equal(inet_pton(AF_INET, p->src_ip ? p->src_ip : "10.244.9.9", &a), 1);
	c.src_ip = a.s_addr;
	assert_int_equal(inet_pton(AF_INET, p->dst_ip ? p->dst_ip : "10.244.0.1", &a), 1);
	c.dst_ip = a.s_addr;
	c.dst_port = p->port ? p->port : 8080;
	assert_int_equal(policy_eval(cfg, &dst, &c, &r1), 0);
	assert_int_equal(policy_set_build(cfg, &dst, &set), 0);
	assert_int_equal(policy_set_eval(set, &c, &r2), 0);
	policy_set_free(set);
	assert_int_equal(r1.allow, r2.allow);
	assert_int_equal(r1.why, r2.why);
	assert_int_equal(r1.rule, r2.rule);
	return r1;
}

static int allowed(const struct config *cfg, struct probe p)
{
	return eval(cfg, &p).allow;
}

/* mTLS from NS/SA to foo app=a on PORT */
#define MTLS(ns, sa, port) ((struct probe){ "foo", "app=a", ns, sa, NULL, port, NULL, NULL })
#define PLAIN(ip, port) ((struct probe){ "foo", "app=a", NULL, NULL, ip, port, NULL, NULL })

/* --- principals, namespaces, service accounts ---------------------- */

static void test_principal_forms(void **state)
{
	struct config *cfg = load(
		AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - from: [{source: {principals: [\"cluster.local/ns/bar/sa/exact\"]}}]\n"
		"  - from: [{source: {principals: [\"cluster.local/ns/pre*\"]}}]\n"
		"  - from: [{source: {principals: [\"*/sa/suf\"]}}]\n"
		"  - from: [{source: {principals: [\"*s/zz/sa/x\"]}}]\n");
	struct pol_result r;

	r = eval(cfg, &MTLS("bar", "exact", 80));
	assert_true(r.allow);
	assert_int_equal(r.rule, 0);
	assert_false(allowed(cfg, MTLS("bar", "exactly", 80)));
	assert_false(allowed(cfg, MTLS("bar", "exac", 80)));
	/* prefix crosses the namespace boundary: pre, prefix, pre-x all match */
	r = eval(cfg, &MTLS("pre", "x", 80));
	assert_true(r.allow);
	assert_int_equal(r.rule, 1);
	assert_true(allowed(cfg, MTLS("prefix", "y", 80)));
	assert_false(allowed(cfg, MTLS("pr", "y", 80)));
	r = eval(cfg, &MTLS("any", "suf", 80));
	assert_int_equal(r.rule, 2);
	assert_false(allowed(cfg, MTLS("any", "suffix", 80)));
	assert_false(allowed(cfg, MTLS("any", "xsuf", 80)));
	/* a suffix across segments */
	assert_true(allowed(cfg, MTLS("zz", "x", 80)));
	assert_true(allowed(cfg, MTLS("zzz", "x", 80)) == 0);
	/* no identity, no principal */
	assert_false(allowed(cfg, PLAIN("10.1.1.1", 80)));
	/* another trust domain is part of the principal */
	assert_false(allowed(cfg, ((struct probe){ "foo", "app=a", "bar", "exact", NULL, 80,
						   "other.td", NULL })));
	config_free(cfg);
}

static void test_principal_presence_and_exact_short(void **state)
{
	struct config *cfg = load(
		AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - from: [{source: {principals: [\"*\"]}}]\n"
		"    to: [{operation: {ports: [\"1\"]}}]\n"
		"  - from: [{source: {principals: [\"admin\"]}}]\n");

	assert_true(allowed(cfg, MTLS("a", "b", 1)));
	assert_false(allowed(cfg, PLAIN("10.1.1.1", 1)));
	/* "admin" is exact against the whole principal: never a short form */
	assert_false(allowed(cfg, MTLS("a", "admin", 2)));
	config_free(cfg);
}

static void test_principal_spiffe_prefix(void **state)
{
	const char *text = AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - from: [{source: {principals: [\"spiffe://cluster.local/ns/bar/sa/x\"]}}]\n";
	struct config *cfg = load(text);

	/* Istio (ztunnel and Envoy) never matches a spiffe:// value */
	assert_false(allowed(cfg, MTLS("bar", "x", 80)));
	config_free(cfg);
	expect_warning(text, "principals value \"spiffe://cluster.local/ns/bar/sa/x\" never matches: Istio principals have no spiffe:// prefix (write \"cluster.local/ns/bar/sa/x\")");
}

static void test_not_fields_on_plaintext(void **state)
{
	struct config *cfg = load(
		AP("foo", "np") "spec:\n"
		"  action: DENY\n"
		"  rules:\n"
		"  - from: [{source: {notPrincipals: [\"cluster.local/ns/a/sa/b\"]}}]\n"
		"    to: [{operation: {ports: [\"1\"]}}]\n"
		"  - from: [{source: {notNamespaces: [\"a\"]}}]\n"
		"    to: [{operation: {ports: [\"2\"]}}]\n"
		"  - from: [{source: {notPrincipals: [\"*\"]}}]\n"
		"    to: [{operation: {ports: [\"3\"]}}]\n"
		"  - from: [{source: {notServiceAccounts: [\"b\"]}}]\n"
		"    to: [{operation: {ports: [\"4\"]}}]\n"
		"  - from: [{source: {notIpBlocks: [\"10.0.0.0/8\"]}}]\n"
		"    to: [{operation: {ports: [\"5\"]}}]\n");

	/* plaintext: every not* of identity matches (nothing to exclude) */
	for (uint16_t port = 1; port <= 4; port++) {
		struct pol_result r = eval(cfg, &PLAIN("10.1.1.1", port));

		assert_false(r.allow);
		assert_int_equal(r.why, POL_DENY_RULE);
		assert_int_equal(r.rule, port - 1);
	}
	/* the excluded identity is not denied; another one is */
	assert_true(allowed(cfg, MTLS("a", "b", 1)));
	assert_false(allowed(cfg, MTLS("a", "c", 1)));
	assert_true(allowed(cfg, MTLS("a", "zz", 2)));
	assert_false(allowed(cfg, MTLS("c", "zz", 2)));
	assert_true(allowed(cfg, MTLS("c", "zz", 3)));
	assert_true(allowed(cfg, MTLS("foo", "b", 4)));	/* "b" is foo/b */
	assert_false(allowed(cfg, MTLS("bar", "b", 4)));
	assert_true(allowed(cfg, PLAIN("10.9.9.9", 5)));
	assert_false(allowed(cfg, PLAIN("11.0.0.1", 5)));
	config_free(cfg);
}

static void test_namespaces_and_service_accounts(void **state)
{
	struct config *cfg = load(
		AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - from: [{source: {namespaces: [\"prod-*\", \"*-test\"]}}]\n"
		"  - from: [{source: {serviceAccounts: [\"web\", \"shop/api\"]}}]\n"
		"  - from: [{source: {namespaces: [\"*\"]}}]\n"
		"    to: [{operation: {ports: [\"9\"]}}]\n");

	assert_true(allowed(cfg, MTLS("prod-eu", "x", 80)));
	assert_true(allowed(cfg, MTLS("prod-", "x", 80)));
	assert_true(allowed(cfg, MTLS("a-test", "x", 80)));
	assert_false(allowed(cfg, MTLS("prod", "x", 80)));
	assert_true(allowed(cfg, MTLS("foo", "web", 80)));	/* "web": the policy's namespace */
	assert_false(allowed(cfg, MTLS("bar", "web", 80)));
	assert_true(allowed(cfg, MTLS("shop", "api", 80)));
	assert_false(allowed(cfg, MTLS("shop", "web", 80)));
	/* "*" is presence: any mTLS namespace, never plaintext */
	assert_true(allowed(cfg, MTLS("x", "y", 9)));
	assert_false(allowed(cfg, PLAIN("10.1.1.1", 9)));
	config_free(cfg);
}

/* --- CIDRs and ports ------------------------------------------------ */

static void test_cidr_edges(void **state)
{
	const char *text = AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - from: [{source: {ipBlocks: [\"0.0.0.0/0\"]}}]\n"
		"    to: [{operation: {ports: [\"1\"]}}]\n"
		"  - from: [{source: {ipBlocks: [\"192.168.1.7/32\", \"172.16.0.0\"]}}]\n"
		"    to: [{operation: {ports: [\"2\"]}}]\n"
		"  - from: [{source: {ipBlocks: [\"10.1.2.3/8\"]}}]\n"
		"    to: [{operation: {ports: [\"3\"]}}]\n"
		"  - from: [{source: {ipBlocks: [\"2001:db8::/32\"]}}]\n"
		"    to: [{operation: {ports: [\"4\"]}}]\n"
		"  - from: [{source: {notIpBlocks: [\"0.0.0.0/0\"]}}]\n"
		"    to: [{operation: {ports: [\"5\"]}}]\n"
		"  - from: [{source: {ipBlocks: [\"10.0.0.0/31\"]}}]\n"
		"    to: [{operation: {ports: [\"6\"]}}]\n";
	struct config *cfg = load(text);

	assert_true(allowed(cfg, PLAIN("0.0.0.0", 1)));
	assert_true(allowed(cfg, PLAIN("255.255.255.255", 1)));
	assert_true(allowed(cfg, PLAIN("192.168.1.7", 2)));
	assert_false(allowed(cfg, PLAIN("192.168.1.6", 2)));
	assert_true(allowed(cfg, PLAIN("172.16.0.0", 2)));	/* single IP: /32 */
	assert_false(allowed(cfg, PLAIN("172.16.0.1", 2)));
	/* host bits are ignored, as Go's netip prefix match does */
	assert_true(allowed(cfg, PLAIN("10.200.0.1", 3)));
	assert_false(allowed(cfg, PLAIN("11.0.0.1", 3)));
	/* IPv6 never matches an IPv4 connection */
	assert_false(allowed(cfg, PLAIN("10.1.1.1", 4)));
	assert_false(allowed(cfg, PLAIN("10.1.1.1", 5)));
	assert_true(allowed(cfg, PLAIN("10.0.0.1", 6)));
	assert_false(allowed(cfg, PLAIN("10.0.0.2", 6)));
	config_free(cfg);
	expect_warning(text, "ipBlocks value 2001:db8::/32 is IPv6 and never matches (skmesh is IPv4-only)");
}

static void test_ports(void **state)
{
	struct config *cfg = load(
		AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - to: [{operation: {ports: [\"80\", \"81\"], notPorts: [\"81\"]}}]\n"
		"  - to: [{operation: {ports: [\"90\"]}}, {operation: {ports: [\"91\"]}}]\n"
		"  - to: [{operation: {notPorts: [\"1\", \"2\", \"3\", \"80\", \"81\", \"90\", \"91\", \"92\", \"70\"]}}]\n"
		"    from: [{source: {namespaces: [\"n\"]}}]\n");

	assert_true(allowed(cfg, PLAIN(NULL, 80)));
	assert_false(allowed(cfg, PLAIN(NULL, 81)));	/* fields AND-ed */
	assert_true(allowed(cfg, PLAIN(NULL, 90)));	/* entries OR-ed */
	assert_true(allowed(cfg, PLAIN(NULL, 91)));
	assert_false(allowed(cfg, PLAIN(NULL, 92)));
	assert_true(allowed(cfg, MTLS("n", "s", 93)));	/* from AND to */
	assert_false(allowed(cfg, MTLS("m", "s", 93)));
	assert_false(allowed(cfg, MTLS("n", "s", 70)));
	config_free(cfg);
}

static void test_when_conditions(void **state)
{
	struct config *cfg = load(
		AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - when:\n"
		"    - {key: destination.ip, values: [\"10.244.0.1\"]}\n"
		"    - {key: destination.port, notValues: [\"81\"]}\n"
		"  - when:\n"
		"    - {key: source.ip, values: [\"10.9.0.0/16\"], notValues: [\"10.9.9.9\"]}\n"
		"  - when:\n"
		"    - {key: source.namespace, notValues: [\"bad\"]}\n"
		"    - {key: source.principal, values: [\"*/sa/good\"]}\n");
	struct probe p = PLAIN("1.1.1.1", 80);

	assert_true(allowed(cfg, p));
	assert_false(allowed(cfg, PLAIN("1.1.1.1", 81)));
	p.dst_ip = "10.244.0.2";
	assert_false(allowed(cfg, p));
	p.src_ip = "10.9.1.1";
	assert_true(allowed(cfg, p));
	p.src_ip = "10.9.9.9";
	assert_false(allowed(cfg, p));
	assert_true(allowed(cfg, ((struct probe){ "foo", "app=a", "ok", "good", "1.1.1.1", 81, NULL, NULL })));
	assert_false(allowed(cfg, ((struct probe){ "foo", "app=a", "bad", "good", "1.1.1.1", 81, NULL, NULL })));
	assert_false(allowed(cfg, ((struct probe){ "foo", "app=a", "ok", "bad", "1.1.1.1", 81, NULL, NULL })));
	config_free(cfg);
}

/* --- L7 fields ------------------------------------------------------ */

static void test_l7_in_allow_drops_rule(void **state)
{
	const char *text = AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - to: [{operation: {ports: [\"80\"], methods: [\"GET\"]}}]\n"
		"  - from: [{source: {namespaces: [\"a\"]}}, {source: {requestPrincipals: [\"x/y\"]}}]\n"
		"  - to: [{operation: {ports: [\"81\"]}}]\n";
	struct config *cfg = load(text);
	struct pol_result r;

	assert_int_equal(cfg->authz[0].nrules, 3);
	assert_true(cfg->authz[0].rules[0].dropped);
	assert_true(cfg->authz[0].rules[1].dropped);	/* L7 anywhere drops it all */
	assert_false(cfg->authz[0].rules[2].dropped);
	assert_false(allowed(cfg, PLAIN(NULL, 80)));
	assert_false(allowed(cfg, MTLS("a", "b", 80)));
	r = eval(cfg, &PLAIN(NULL, 81));
	assert_true(r.allow);
	assert_int_equal(r.rule, 2);
	assert_int_equal(cfg->authz[0].nwarnings, 2);
	config_free(cfg);
	expect_warning(text, "ALLOW rule 0 dropped: methods is L7 (the rule can never match at L4); ALLOW rule 1 dropped: requestPrincipals is L7");
}

static void test_l7_in_deny(void **state)
{
	struct config *cfg = load(
		AP("foo", "broad") "spec:\n"
		"  action: DENY\n"
		"  rules:\n"
		"  - to: [{operation: {ports: [\"80\"], paths: [\"/x\"]}}]\n"
		"---\n"
		AP("foo", "noop") "spec:\n"
		"  action: DENY\n"
		"  rules:\n"
		"  - to: [{operation: {methods: [\"POST\"]}}]\n"
		"  - from: [{source: {namespaces: [\"a\"]}}]\n"
		"    when: [{key: \"request.headers[x]\", values: [\"1\"]}]\n"
		"  - from: [{source: {remoteIpBlocks: [\"1.2.3.4\"]}}]\n"
		"---\n"
		AP("foo", "mixed") "spec:\n"
		"  action: DENY\n"
		"  rules:\n"
		"  - to: [{operation: {hosts: [\"h\"]}}, {operation: {ports: [\"82\"]}}]\n"
		"---\n"
		AP("foo", "all") "spec:\n"
		"  action: DENY\n"
		"  rules:\n"
		"  - to: [{operation: {ports: [\"83\"]}}]\n");

	/* methods dropped, ports kept: every connection to 80 */
	assert_false(allowed(cfg, MTLS("a", "b", 80)));
	assert_false(allowed(cfg, PLAIN(NULL, 80)));
	/* only-L7 entries never match: the DENYs are no-ops */
	assert_true(allowed(cfg, MTLS("a", "b", 81)));
	assert_true(allowed(cfg, PLAIN("1.2.3.4", 81)));
	/* an empty entry is skipped, the others still count */
	assert_false(allowed(cfg, PLAIN(NULL, 82)));
	assert_false(allowed(cfg, PLAIN(NULL, 83)));
	config_free(cfg);
	expect_warning(AP("foo", "mixed") "spec:\n"
		       "  action: DENY\n"
		       "  rules:\n"
		       "  - to: [{operation: {hosts: [\"h\"]}}, {operation: {ports: [\"82\"]}}]\n",
		       "DENY rule 0: to[0] has only L7 fields (hosts) and never matches; the rule fires through its other entries");
	expect_warning(AP("foo", "noop") "spec:\n"
		       "  action: DENY\n"
		       "  rules:\n"
		       "  - from: [{source: {namespaces: [\"a\"]}}]\n"
		       "    when: [{key: \"request.headers[x]\", values: [\"1\"]}]\n",
		       "DENY rule 0 never fires: its when[0] clause has no entry with an L4 field left (when key request.headers[x] is L7)");
}

static void test_allow_deny_empty_forms(void **state)
{
	struct config *cfg = load(
		AP("a", "allow-nothing") "spec: {}\n"
		"---\n"
		AP("b", "allow-all") "spec: {rules: [{}]}\n"
		"---\n"
		AP("b", "allow-nothing") "spec: {}\n"
		"---\n"
		AP("c", "deny-all") "spec: {action: DENY, rules: [{}]}\n"
		"---\n"
		AP("c", "allow-all") "spec: {rules: [{}]}\n"
		"---\n"
		AP("d", "deny-none") "spec: {action: DENY, rules: []}\n");
	struct pol_result r;
	struct probe p = PLAIN(NULL, 80);
	char buf[256];

	p.dst_ns = "a";
	r = eval(cfg, &p);
	assert_false(r.allow);
	assert_int_equal(r.why, POL_DENY_NO_MATCH);
	assert_string_equal(policy_reason(&r, buf, sizeof(buf)),
			    "denied: 1 ALLOW policy applies and none matches");
	p.dst_ns = "b";
	r = eval(cfg, &p);
	assert_true(r.allow);
	assert_string_equal(policy_reason(&r, buf, sizeof(buf)),
			    "allowed by ALLOW policy b/allow-all rule 0");
	p.dst_ns = "c";
	r = eval(cfg, &p);
	assert_false(r.allow);
	assert_string_equal(policy_reason(&r, buf, sizeof(buf)),
			    "denied by DENY policy c/deny-all rule 0");
	p.dst_ns = "d";
	r = eval(cfg, &p);
	assert_true(r.allow);
	assert_string_equal(policy_reason(&r, buf, sizeof(buf)),
			    "allowed: no ALLOW policy applies");
	config_free(cfg);
}

/* --- which policies apply ------------------------------------------- */

static void test_scopes(void **state)
{
	const char *text =
		AP("istio-system", "mesh-v1") "spec: {selector: {matchLabels: {version: v1}}}\n"
		"---\n"
		AP("istio-system", "mesh-deny") "spec: {action: DENY, rules: [{to: [{operation: {ports: [\"1\"]}}]}]}\n"
		"---\n"
		AP("foo", "all-in-foo") "spec: {selector: {}, rules: [{to: [{operation: {ports: [\"2\"]}}]}]}\n"
		"---\n"
		AP("foo", "waypoint") "spec: {targetRefs: [{kind: Service, group: \"\", name: a}], action: DENY, rules: [{}]}\n"
		"---\n"
		"apiVersion: security.istio.io/v1\n"
		"kind: AuthorizationPolicy\n"
		"metadata:\n"
		"  name: dry\n"
		"  namespace: foo\n"
		"  annotations: {istio.io/dry-run: \"true\"}\n"
		"spec: {action: DENY, rules: [{}]}\n";
	struct cfg_diag diag = {};
	struct config *cfg = load_opts(text, NULL, &diag);
	struct cfg_opts opts = { .root_ns = "mesh-root" };
	struct probe p = PLAIN(NULL, 3);

	/* root selector: any namespace */
	p.dst_ns = "bar";
	p.labels = "version=v1";
	assert_false(allowed(cfg, p));
	p.labels = "version=v2";
	assert_true(allowed(cfg, p));
	/* root DENY without selector: mesh-wide */
	p.port = 1;
	assert_false(allowed(cfg, p));
	/* empty selector: every workload of foo; targetRefs and dry-run
	 * policies are never applied */
	p.dst_ns = "foo";
	p.port = 2;
	assert_true(allowed(cfg, p));
	p.port = 3;
	assert_false(allowed(cfg, p));
	assert_true(unit_diag_has(&diag, "targetRefs: enforced only by a waypoint; not enforced here"));
	assert_true(unit_diag_has(&diag, "istio.io/dry-run: not enforced"));
	config_free(cfg);
	diag_free(&diag);

	/* another root namespace: istio-system is an ordinary one */
	cfg = load_opts(text, &opts, &diag);
	p.dst_ns = "bar";
	p.labels = "version=v1";
	p.port = 1;
	assert_true(allowed(cfg, p));
	p.dst_ns = "istio-system";
	assert_false(allowed(cfg, p));
	config_free(cfg);
	diag_free(&diag);
}

/* --- PeerAuthentication --------------------------------------------- */

static int plain_ok(const struct config *cfg, const char *ns, const char *labels,
		    uint16_t port)
{
	return allowed(cfg, ((struct probe){ ns, labels, NULL, NULL, "10.1.1.1", port, NULL, NULL }));
}

static void test_pa_precedence(void **state)
{
	struct cfg_diag diag = {};
	struct config *cfg = load_opts(
		PA("istio-system", "mesh") "spec: {mtls: {mode: STRICT}}\n"
		"---\n"
		PA("perm", "default") "spec: {mtls: {mode: PERMISSIVE}}\n"
		"---\n"
		PA("perm", "second") "spec: {mtls: {mode: STRICT}}\n"
		"---\n"
		PA("unset", "default") "spec: {mtls: {mode: UNSET}}\n"
		"---\n"
		PA("perm", "wl") "spec: {selector: {matchLabels: {app: s}}, mtls: {mode: STRICT}}\n"
		"---\n"
		PA("istio-system", "root-sel") "spec: {selector: {matchLabels: {app: p}}, mtls: {mode: PERMISSIVE}}\n",
		NULL, &diag);
	struct pol_result r;
	char buf[256];

	r = eval(cfg, &((struct probe){ "other", "app=x", NULL, NULL, NULL, 1, NULL, NULL }));
	assert_false(r.allow);
	assert_int_equal(r.why, POL_DENY_STRICT);
	assert_string_equal(policy_reason(&r, buf, sizeof(buf)),
			    "denied: STRICT mTLS (PeerAuthentication istio-system/mesh) and no client identity");
	assert_true(allowed(cfg, ((struct probe){ "other", "app=x", "a", "b", NULL, 1, NULL, NULL })));
	/* namespace over mesh; the second namespace-wide policy is ignored */
	assert_true(plain_ok(cfg, "perm", "app=x", 1));
	assert_true(unit_diag_has(&diag, "PeerAuthentication perm/second: ignored: perm/default"));
	/* workload over namespace */
	assert_false(plain_ok(cfg, "perm", "app=s", 1));
	/* UNSET inherits the mesh */
	assert_false(plain_ok(cfg, "unset", "app=x", 1));
	/* a root-namespace selector is ignored */
	assert_false(plain_ok(cfg, "other", "app=p", 1));
	assert_true(policy_applies(cfg, &(struct pol_target){ "other", NULL }));
	config_free(cfg);
	diag_free(&diag);
}

static void test_pa_port_level(void **state)
{
	struct cfg_diag diag = {};
	struct config *cfg = load_opts(
		/* STRICT with a PERMISSIVE and a DISABLE port */
		PA("a", "w") "spec:\n"
		"  selector: {matchLabels: {app: w}}\n"
		"  mtls: {mode: STRICT}\n"
		"  portLevelMtls: {8080: {mode: PERMISSIVE}, \"9090\": {mode: DISABLE}}\n"
		"---\n"
		/* PERMISSIVE with a STRICT port */
		PA("b", "w") "spec:\n"
		"  selector: {matchLabels: {app: w}}\n"
		"  mtls: {mode: PERMISSIVE}\n"
		"  portLevelMtls: {5432: {mode: STRICT}}\n"
		"---\n"
		/* namespace STRICT, workload UNSET: PERMISSIVE honoured, DISABLE not */
		PA("c", "default") "spec: {mtls: {mode: STRICT}}\n"
		"---\n"
		PA("c", "w") "spec:\n"
		"  selector: {matchLabels: {app: w}}\n"
		"  portLevelMtls: {80: {mode: PERMISSIVE}, 81: {mode: DISABLE}}\n"
		"---\n"
		/* namespace PERMISSIVE, workload UNSET with a STRICT port */
		PA("d", "default") "spec: {mtls: {mode: PERMISSIVE}}\n"
		"---\n"
		PA("d", "w") "spec:\n"
		"  selector: {matchLabels: {app: w}}\n"
		"  portLevelMtls: {443: {mode: STRICT}}\n",
		NULL, &diag);
	struct pol_result r;
	char buf[256];

	assert_true(plain_ok(cfg, "a", "app=w", 8080));
	assert_true(plain_ok(cfg, "a", "app=w", 9090));
	r = eval(cfg, &((struct probe){ "a", "app=w", NULL, NULL, NULL, 7, NULL, NULL }));
	assert_false(r.allow);
	assert_int_equal(r.why, POL_DENY_STRICT_PORT);
	assert_string_equal(policy_reason(&r, buf, sizeof(buf)),
			    "denied: the port is STRICT (PeerAuthentication a/w portLevelMtls) and no client identity");
	assert_true(allowed(cfg, ((struct probe){ "a", "app=w", "x", "y", NULL, 7, NULL, NULL })));
	assert_true(plain_ok(cfg, "a", "app=other", 7));

	assert_false(plain_ok(cfg, "b", "app=w", 5432));
	assert_true(plain_ok(cfg, "b", "app=w", 5433));
	assert_true(allowed(cfg, ((struct probe){ "b", "app=w", "x", "y", NULL, 5432, NULL, NULL })));

	/* with a PERMISSIVE port, istiod converts the policy and then a
	 * DISABLE port is exempt too; other ports keep the merged STRICT */
	assert_true(plain_ok(cfg, "c", "app=w", 80));
	assert_true(plain_ok(cfg, "c", "app=w", 81));
	assert_false(plain_ok(cfg, "c", "app=w", 82));
	assert_false(plain_ok(cfg, "c", "app=x", 80));

	assert_false(plain_ok(cfg, "d", "app=w", 443));
	assert_true(plain_ok(cfg, "d", "app=w", 444));
	assert_true(unit_diag_has(&diag, "portLevelMtls 9090: DISABLE acts as PERMISSIVE"));
	config_free(cfg);
	diag_free(&diag);
}

/* istiod drops a STRICT port of a PERMISSIVE workload policy when the mesh
 * is STRICT and the namespace has no policy: followed, and warned. */
static void test_pa_istiod_quirk_strict_port_dropped(void **state)
{
	struct cfg_diag diag = {};
	struct config *cfg = load_opts(
		PA("istio-system", "default") "spec: {mtls: {mode: STRICT}}\n"
		"---\n"
		PA("e", "w") "spec:\n"
		"  selector: {matchLabels: {app: w}}\n"
		"  mtls: {mode: PERMISSIVE}\n"
		"  portLevelMtls: {9000: {mode: STRICT}}\n",
		NULL, &diag);

	assert_true(plain_ok(cfg, "e", "app=w", 9000));
	assert_true(plain_ok(cfg, "e", "app=w", 9001));
	assert_false(plain_ok(cfg, "e", "app=x", 9000));
	assert_true(unit_diag_has(&diag, "portLevelMtls 9000: STRICT is not enforced"));
	config_free(cfg);
	diag_free(&diag);
}

/* --- for the kernel compiler --------------------------------------- */

static void test_ports_cidrs_applies(void **state)
{
	struct config *cfg = load(
		AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - from: [{source: {ipBlocks: [\"10.1.0.0/16\", \"10.1.2.3\"], notIpBlocks: [\"10.1.0.0/16\"]}}]\n"
		"    to: [{operation: {ports: [\"90\", \"80\"], notPorts: [\"80\"]}}]\n"
		"    when: [{key: destination.ip, values: [\"10.1.0.0/16\"]}]\n"
		"  - to: [{operation: {ports: [\"70\"], methods: [GET]}}]\n"
		"---\n"
		AP("istio-system", "g") "spec: {action: DENY, rules: [{to: [{operation: {ports: [\"22\"]}}]}]}\n"
		"---\n"
		PA("foo", "w") "spec: {selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {5432: {mode: STRICT}}}\n");
	struct cfg_label l = { (char *)"app", (char *)"a" };
	struct cfg_labels labels = { &l, 1 };
	struct pol_target foo = { "foo", &labels }, bar = { "bar", NULL }, quiet = { "quiet", NULL };
	struct pol_cidr *cidrs;
	uint16_t *ports;
	size_t n;

	assert_int_equal(policy_ports_of(cfg, &foo, &ports, &n), 0);
	assert_int_equal(n, 4);		/* 70 is in a dropped rule */
	assert_int_equal(ports[0], 22);
	assert_int_equal(ports[1], 80);
	assert_int_equal(ports[2], 90);
	assert_int_equal(ports[3], 5432);
	free(ports);
	assert_int_equal(policy_cidrs_of(cfg, &foo, &cidrs, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(cidrs[0].ip, inet_addr("10.1.0.0"));
	assert_int_equal(cidrs[0].len, 16);
	assert_int_equal(cidrs[0].flags, POL_CIDR_SRC | POL_CIDR_DST);
	assert_int_equal(cidrs[1].ip, inet_addr("10.1.2.3"));
	assert_int_equal(cidrs[1].len, 32);
	assert_int_equal(cidrs[1].mask, 0xffffffff);
	assert_int_equal(cidrs[1].flags, POL_CIDR_SRC);
	free(cidrs);
	assert_int_equal(policy_ports_of(cfg, &bar, &ports, &n), 0);
	assert_int_equal(n, 1);
	free(ports);
	assert_int_equal(policy_cidrs_of(cfg, &bar, &cidrs, &n), 0);
	assert_int_equal(n, 0);
	assert_null(cidrs);
	assert_int_equal(policy_applies(cfg, &foo), 1);
	assert_int_equal(policy_applies(cfg, &bar), 1);
	config_free(cfg);

	cfg = load(AP("foo", "p") "spec: {}\n");
	assert_int_equal(policy_applies(cfg, &quiet), 0);
	assert_int_equal(policy_applies(cfg, &foo), 1);
	config_free(cfg);
}

/* --- bad input ------------------------------------------------------ */

static void test_bad_cidrs(void **state)
{
	const char *t1 = AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - from:\n"
		"    - source:\n"
		"        ipBlocks: [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n";
	const char *t2 = AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - from:\n"
		"    - source:\n"
		"        notIpBlocks: [\"1.2.3\"]\n";
	const char *t3 = AP("foo", "p") "spec:\n"
		"  rules:\n"
		"  - when:\n"
		"    - key: source.ip\n"
		"      values: [\"10.0.0.0/\"]\n";

	expect_error_at(t1, "\"10.0.0.0/33\"",
			"spec.rules[0].from[0].source.ipBlocks[1]: \"10.0.0.0/33\" has a prefix length out of range (0-32)");
	expect_error_at(t2, "\"1.2.3\"",
			"spec.rules[0].from[0].source.notIpBlocks[0]: \"1.2.3\" is not an IPv4 address or CIDR");
	expect_error_at(t3, "\"10.0.0.0/\"",
			"spec.rules[0].when[0].values[0]: \"10.0.0.0/\" has a malformed prefix length");
}

static void test_bad_action_and_selector(void **state)
{
	expect_error_at(AP("foo", "p") "spec:\n  action: ALOW\n", "ALOW",
			"spec.action: unknown action \"ALOW\" (known: ALLOW, DENY; CUSTOM and AUDIT are not supported)");
	expect_error_at(AP("foo", "p") "spec:\n  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n",
			"CUSTOM",
			"spec.action: action CUSTOM needs an external authorizer, which skmesh does not have; ztunnel does not enforce it either");
	expect_error_at(AP("foo", "p") "spec:\n  action: AUDIT\n  rules: [{}]\n", "AUDIT",
			"spec.action: action AUDIT needs an audit plugin");
	expect_error_at(AP("foo", "p") "spec:\n  selector: [app, web]\n", "[app",
			"spec.selector: must be a map, not a list");
	expect_error_at(AP("foo", "p") "spec:\n  selector:\n    matchLabels: app\n", "app\n",
			"spec.selector.matchLabels: must be a map, not a scalar");
	expect_error_at(PA("foo", "p") "spec:\n  selector:\n    matchLabels: [a]\n", "[a]",
			"spec.selector.matchLabels: must be a map, not a list");
	expect_error_at(AP("foo", "p") "spec:\n  rules:\n  - from:\n    - source: {principalz: [a]}\n",
			"principalz",
			"spec.rules[0].from[0].source: unknown field \"principalz\" (known: principals, notPrincipals, requestPrincipals");
	expect_error_at(AP("foo", "p") "spec:\n  action: DENY\n", "action: DENY",
			"spec.rules: a DENY policy without rules never matches");
	expect_error_at(AP("foo", "p") "spec:\n  rules:\n  - from:\n    - source: {}\n", "{}",
			"spec.rules[0].from[0].source: must not be empty");
	expect_error_at(AP("foo", "p") "spec:\n  rules:\n  - when:\n    - {key: request.foo, values: [a]}\n",
			"request.foo", "spec.rules[0].when[0].key: unknown attribute \"request.foo\"");
	expect_error_at(AP("foo", "p") "spec:\n  selector: {matchLabels: {a: b}}\n  targetRefs: [{kind: Service, name: s}]\n",
			"[{kind", "set selector or targetRef(s), not both");
	expect_error_at(AP("foo", "p") "spec:\n  provider: {name: x}\n", "{name: x}",
			"spec.provider: only with action CUSTOM");
	/* a misspelt spec must not make an allow-nothing policy */
	expect_error_at(AP("foo", "p") "sepc:\n  rules: [{}]\n", "sepc",
			"document: unknown field \"sepc\" (known: apiVersion, kind, metadata, spec, status)");
	expect_error_at(AP("foo", "p") "spec:\n  rules:\n  - from:\n    - source: {principals: [a], serviceAccounts: [b]}\n",
			"{principals", "serviceAccounts cannot be set with namespaces or principals");
}

static void test_bad_ports(void **state)
{
	expect_error_at(AP("foo", "p") "spec:\n  rules:\n  - to:\n    - operation: {ports: [\"0\"]}\n",
			"\"0\"", "spec.rules[0].to[0].operation.ports[0]: \"0\" is out of range (1-65535)");
	expect_error_at(AP("foo", "p") "spec:\n  rules:\n  - to:\n    - operation: {notPorts: [\"80\", \"70000\"]}\n",
			"\"70000\"", "spec.rules[0].to[0].operation.notPorts[1]: \"70000\" is out of range (1-65535)");
	expect_error_at(AP("foo", "p") "spec:\n  rules:\n  - to:\n    - operation: {ports: [abc]}\n",
			"abc", "spec.rules[0].to[0].operation.ports[0]: \"abc\" is not a number (1-65535)");
	expect_error_at(AP("foo", "p") "spec:\n  rules:\n  - when:\n    - key: destination.port\n      notValues: [\"-1\"]\n",
			"\"-1\"", "spec.rules[0].when[0].notValues[0]: \"-1\" is not a number");
	expect_error_at(PA("foo", "p") "spec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls:\n    70000: {mode: STRICT}\n",
			"70000", "spec.portLevelMtls.70000: \"70000\" is out of range (1-65535)");
	expect_error_at(PA("foo", "p") "spec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls:\n    0: {mode: STRICT}\n",
			"0: {", "spec.portLevelMtls.0: \"0\" is out of range (1-65535)");
	expect_error_at(PA("foo", "p") "spec:\n  portLevelMtls:\n    80: {mode: STRICT}\n",
			"80: {", "spec.portLevelMtls: needs a workload selector");
}

static void test_bad_mtls_mode(void **state)
{
	expect_error_at(PA("foo", "p") "spec:\n  mtls:\n    mode: STRIC\n", "STRIC\n",
			"spec.mtls.mode: unknown mode \"STRIC\" (known: UNSET, DISABLE, PERMISSIVE, STRICT)");
	expect_error_at(PA("foo", "p") "spec:\n  selector: {matchLabels: {a: b}}\n  portLevelMtls:\n    80: {mode: strict}\n",
			"strict", "spec.portLevelMtls.80.mode: unknown mode \"strict\"");
	expect_error_at(PA("foo", "p") "spec:\n  mtls: {mode: STRICT, level: 3}\n", "level",
			"spec.mtls: unknown field \"level\" (known: mode)");
}

static void test_duplicate_names(void **state)
{
	const char *one = AP("foo", "dup") "spec: {}\n";
	char dir[] = "/tmp/skm-unit-dir-XXXXXX", a[64], b[64], loc[512];
	struct cfg_diag diag = {};
	struct config *cfg = NULL;
	FILE *f;

	/* in one file */
	expect_error_at(AP("foo", "dup") "spec: {}\n---\n"
			"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
			"metadata: {namespace: foo, name: dup}\nspec: {rules: [{}]}\n",
			"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {namespace",
			"AuthorizationPolicy foo/dup is defined twice (first at ");
	/* the same name in two namespaces, or two kinds, is fine */
	config_free(load(AP("foo", "dup") "spec: {}\n---\n" AP("bar", "dup") "spec: {}\n---\n"
			 PA("foo", "dup") "spec: {}\n"));
	/* across files of a folder */
	assert_non_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/a.yaml", dir);
	snprintf(b, sizeof(b), "%s/b.yaml", dir);
	assert_non_null(f = fopen(a, "w"));
	fputs(one, f);
	fclose(f);
	assert_non_null(f = fopen(b, "w"));
	fputs("# second copy\n", f);
	fputs(one, f);
	fclose(f);
	assert_int_not_equal(config_load(dir, &cfg, &diag), 0);
	assert_null(cfg);
	snprintf(loc, sizeof(loc), "%s:2:1: error: AuthorizationPolicy foo/dup is defined twice (first at %s:1)",
		 b, a);
	if (!unit_diag_has(&diag, loc))
		unit_diag_dump(&diag);
	assert_true(unit_diag_has(&diag, loc));
	diag_free(&diag);
	unlink(a);
	unlink(b);
	rmdir(dir);
}

/* Every field of Istio's API loads (unknown ones are errors). */
static void test_full_api_loads(void **state)
{
	struct cfg_diag diag = {};
	struct config *cfg = load_opts(
		"apiVersion: security.istio.io/v1beta1\n"
		"kind: AuthorizationPolicy\n"
		"metadata: {name: full, namespace: foo, labels: {a: b}, annotations: {x: y}}\n"
		"spec:\n"
		"  selector: {matchLabels: {app: httpbin}}\n"
		"  action: DENY\n"
		"  rules:\n"
		"  - from:\n"
		"    - source:\n"
		"        principals: [\"p\", \"p-*\", \"*-p\", \"*\"]\n"
		"        notPrincipals: [\"np\"]\n"
		"        requestPrincipals: [\"iss/sub\"]\n"
		"        notRequestPrincipals: [\"iss/x\"]\n"
		"        namespaces: [\"ns\"]\n"
		"        notNamespaces: [\"nns\"]\n"
		"        ipBlocks: [\"1.2.3.4\", \"5.6.0.0/16\"]\n"
		"        notIpBlocks: [\"5.6.7.0/24\"]\n"
		"        remoteIpBlocks: [\"1.2.3.4\"]\n"
		"        notRemoteIpBlocks: [\"9.9.9.9/32\"]\n"
		"        trustDomains: [\"td\"]\n"
		"        notTrustDomains: [\"ntd\"]\n"
		"    - source:\n"
		"        serviceAccounts: [\"sa\", \"ns/sa\"]\n"
		"        notServiceAccounts: [\"x\"]\n"
		"    to:\n"
		"    - operation:\n"
		"        hosts: [\"a.example.com\"]\n"
		"        notHosts: [\"b\"]\n"
		"        ports: [\"80\"]\n"
		"        notPorts: [\"81\"]\n"
		"        methods: [\"GET\"]\n"
		"        notMethods: [\"PUT\"]\n"
		"        paths: [\"/a\"]\n"
		"        notPaths: [\"/b\"]\n"
		"    when:\n"
		"    - {key: \"request.auth.claims[iss]\", values: [\"x\"]}\n"
		"    - {key: \"request.headers[User-Agent]\", notValues: [\"curl\"]}\n"
		"    - {key: remote.ip, values: [\"1.1.1.1\"]}\n"
		"    - {key: source.ip, values: [\"1.1.1.1\"]}\n"
		"    - {key: \"experimental.envoy.filters.a.b[c]\", values: [\"d\"]}\n"
		"---\n"
		"apiVersion: security.istio.io/v1\n"
		"kind: AuthorizationPolicy\n"
		"metadata: {name: tr, namespace: foo}\n"
		"spec:\n"
		"  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: w, namespace: foo}\n"
		"  rules: [{}]\n"
		"---\n"
		"apiVersion: security.istio.io/v1\n"
		"kind: PeerAuthentication\n"
		"metadata: {name: full, namespace: foo}\n"
		"spec:\n"
		"  selector: {matchLabels: {app: httpbin}}\n"
		"  mtls: {mode: UNSET}\n"
		"  portLevelMtls: {8080: {mode: DISABLE}}\n",
		NULL, &diag);

	assert_int_equal(cfg->nauthz, 2);
	assert_int_equal(cfg->npas, 1);
	assert_int_equal(cfg->authz[0].action, POL_DENY);
	assert_int_equal(cfg->authz[0].rules[0].nclauses, 7);	/* to, from, 5 when */
	assert_int_equal(diag.nerrors, 0);
	config_free(cfg);
	diag_free(&diag);
}

/* The evaluator and the set agree on random policies (the property the
 * kernel compiler relies on: one semantics whichever entry point). */
static void test_random_consistency(void **state)
{
	static const char *const src[] = {
		"principals: [\"*/sa/a\"]", "notPrincipals: [\"*\"]", "namespaces: [n1]",
		"notNamespaces: [n2]", "ipBlocks: [\"10.0.0.0/30\"]", "notIpBlocks: [\"10.0.0.1\"]",
		"requestPrincipals: [x]",
	};
	static const char *const op[] = {
		"ports: [\"1\"]", "notPorts: [\"2\"]", "methods: [GET]", "ports: [\"2\", \"3\"]",
	};
	static const char *const nss[] = { "n1", "n2" };
	unsigned int seed = 12345;

	for (int round = 0; round < 40; round++) {
		char text[8192];
		size_t len = 0;
		struct config *cfg;

		for (int p = 0; p < 4; p++) {
			len += snprintf(text + len, sizeof(text) - len,
					"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
					"metadata: {name: p%d, namespace: %s}\nspec:\n  action: %s\n  rules:\n",
					p, rand_r(&seed) % 3 ? "n1" : "istio-system",
					rand_r(&seed) % 2 ? "ALLOW" : "DENY");
			for (int r = 0; r < 1 + rand_r(&seed) % 2; r++)
				len += snprintf(text + len, sizeof(text) - len,
						"  - from: [{source: {%s}}]\n    to: [{operation: {%s}}]\n",
						src[rand_r(&seed) % 7], op[rand_r(&seed) % 4]);
			len += snprintf(text + len, sizeof(text) - len, "---\n");
		}
		cfg = load(text);
		for (int k = 0; k < 50; k++) {
			char ip[32];
			struct probe pr = { "n1", "app=a", NULL, "a", ip,
					    (uint16_t)(1 + rand_r(&seed) % 4), NULL, NULL };

			snprintf(ip, sizeof(ip), "10.0.0.%u", rand_r(&seed) % 6);
			if (rand_r(&seed) % 2)
				pr.src_ns = nss[rand_r(&seed) % 2];
			eval(cfg, &pr);	/* asserts both paths agree */
		}
		config_free(cfg);
	}
}

int run_policy_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_principal_forms),
		cmocka_unit_test(test_principal_presence_and_exact_short),
		cmocka_unit_test(test_principal_spiffe_prefix),
		cmocka_unit_test(test_not_fields_on_plaintext),
		cmocka_unit_test(test_namespaces_and_service_accounts),
		cmocka_unit_test(test_cidr_edges),
		cmocka_unit_test(test_ports),
		cmocka_unit_test(test_when_conditions),
		cmocka_unit_test(test_l7_in_allow_drops_rule),
		cmocka_unit_test(test_l7_in_deny),
		cmocka_unit_test(test_allow_deny_empty_forms),
		cmocka_unit_test(test_scopes),
		cmocka_unit_test(test_pa_precedence),
		cmocka_unit_test(test_pa_port_level),
		cmocka_unit_test(test_pa_istiod_quirk_strict_port_dropped),
		cmocka_unit_test(test_ports_cidrs_applies),
		cmocka_unit_test(test_bad_cidrs),
		cmocka_unit_test(test_bad_action_and_selector),
		cmocka_unit_test(test_bad_ports),
		cmocka_unit_test(test_bad_mtls_mode),
		cmocka_unit_test(test_duplicate_names),
		cmocka_unit_test(test_full_api_loads),
		cmocka_unit_test(test_random_consistency),
	};

	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
