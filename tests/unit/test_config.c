// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Config loader and slot table: parsing, positions in errors, weights;
 * incremental reloads give what a full load gives. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "policy.h"
#include "reconcile.h"
#include "unit.h"

/* Loads TEXT; returns the error code and leaves messages in DIAG. */
static int load_text(const char *text, struct config **cfg, struct cfg_diag *diag,
		     char **path)
{
	*path = unit_write_tmp(text);
	return config_load(*path, cfg, diag);
}

static void expect_error(const char *text, const char *where, const char *what)
{
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path, loc[512];
	int rc = load_text(text, &cfg, &diag, &path);

	if (rc == 0 || !unit_diag_has(&diag, what))
		for (size_t i = 0; i < diag.n; i++)
			fprintf(stderr, "  diag: %s\n", diag.msgs[i]);
	assert_int_not_equal(rc, 0);
	assert_null(cfg);
	snprintf(loc, sizeof(loc), "%s:%s: error", path, where);
	assert_true(unit_diag_has(&diag, loc));
	assert_true(unit_diag_has(&diag, what));
	diag_free(&diag);
	unlink(path);
	free(path);
}

static void test_minimal_config(void **state)
{
	const char *text =
		"apiVersion: skmesh.io/v1alpha1\n"
		"kind: Workload\n"
		"metadata: {name: web-1, namespace: shop, labels: {app: web}}\n"
		"spec: {ip: 10.10.1.2, node: node1, serviceAccount: web}\n"
		"---\n"
		"apiVersion: skmesh.io/v1alpha1\n"
		"kind: Service\n"
		"metadata: {name: web, namespace: shop}\n"
		"spec:\n"
		"  vip: 10.96.0.10\n"
		"  ports: [{port: 80, targetPort: 8080}]\n"
		"  selector: {app: web}\n"
		"---\n";
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path;

	assert_int_equal(load_text(text, &cfg, &diag, &path), 0);
	assert_int_equal(cfg->nwls, 1);
	assert_string_equal(cfg->wls[0].sa, "web");
	assert_int_equal(cfg->nsvcs, 1);
	assert_int_equal(cfg->svcs[0].nports, 1);
	assert_int_equal(cfg->svcs[0].ports[0].port, 80);
	assert_int_equal(cfg->svcs[0].ports[0].target, 8080);
	/* the selector resolved to the workload */
	assert_int_equal(cfg->svcs[0].neps, 1);
	assert_int_equal(cfg->svcs[0].eps[0].ip, cfg->wls[0].ip);
	config_free(cfg);
	diag_free(&diag);
	unlink(path);
	free(path);
}

static void test_malformed_yaml(void **state)
{
	expect_error("kind: Service\nmetadata: {name: x\nspec: [\n", "3:5", "malformed YAML");
}

static void test_unknown_kind(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Gateway\nmetadata: {name: g}\n",
		     "2:7", "unknown kind \"Gateway\"");
}

static void test_vip_without_ports(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
		     "metadata: {name: s}\nspec:\n  vip: 10.96.0.1\n",
		     "5:3", "spec.ports: a Service needs at least one port");
}

static void test_port_out_of_range(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
		     "metadata: {name: s}\nspec:\n  vip: 10.96.0.1\n"
		     "  ports:\n  - port: 70000\n",
		     "7:11", "spec.ports[0].port: \"70000\" is out of range");
}

static void test_bad_ip(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
		     "metadata: {name: w}\nspec: {ip: 10.1.2, node: n1}\n",
		     "4:12", "spec.ip: \"10.1.2\" is not an IPv4 address");
}

static void test_unknown_field(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
		     "metadata: {name: s}\nspec:\n  vip: 10.96.0.1\n"
		     "  ports:\n  - {port: 80, tragetPort: 8080}\n",
		     "7:16", "unknown field \"tragetPort\"");
}

static void test_duplicate_workload(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
		     "metadata: {name: w}\nspec: {ip: 10.1.2.3, node: n1}\n---\n"
		     "apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
		     "metadata: {name: w}\nspec: {ip: 10.1.2.4, node: n1}\n",
		     "6:1", "defined twice");
}

/* An Istio policy is parsed into the policy model (test_policy.c tests
 * it); an allow-nothing policy loads without a warning. */
static void test_istio_kinds_parsed(void **state)
{
	const char *text =
		"apiVersion: security.istio.io/v1\n"
		"kind: AuthorizationPolicy\n"
		"metadata: {name: deny-all, namespace: foo}\n"
		"spec: {}\n";
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path;

	assert_int_equal(load_text(text, &cfg, &diag, &path), 0);
	assert_int_equal(cfg->nauthz, 1);
	assert_int_equal(diag.nwarnings, 0);
	config_free(cfg);
	diag_free(&diag);
	unlink(path);
	free(path);
}

static void test_slots_weights(void **state)
{
	uint32_t w[] = { 1, 3 }, slots[256];
	unsigned int n = build_slots(w, 2, slots, 256), c0 = 0;

	assert_int_equal(n, 4);
	for (unsigned int i = 0; i < n; i++)
		c0 += slots[i] == 0;
	assert_int_equal(c0, 1);
}

static void test_slots_scaled(void **state)
{
	uint32_t w[] = { 1000, 3000, 0, 1 }, slots[256];
	unsigned int n = build_slots(w, 4, slots, 256), c[4] = {};

	assert_true(n <= 256);
	for (unsigned int i = 0; i < n; i++)
		c[slots[i]]++;
	assert_int_equal(c[2], 0);	/* weight 0: drained */
	assert_true(c[3] >= 1);		/* tiny weight still reachable */
	assert_true(c[1] >= 3 * c[0] - 3 && c[1] <= 3 * c[0] + 3);
}

static void test_slots_none(void **state)
{
	uint32_t w[] = { 0, 0 }, slots[4];

	assert_int_equal(build_slots(w, 2, slots, 4), 0);
}

/* --- incremental loading (config_load_cached) ----------------------------- */

static void dump_pos(FILE *f, const struct cfg_pos *p)
{
	fprintf(f, " @%s:%u:%u", p->file ? p->file : "-", p->line, p->col);
}

static void dump_labels(FILE *f, const char *what, const struct cfg_labels *l)
{
	fprintf(f, " %s{", what);
	for (size_t i = 0; i < l->n; i++)
		fprintf(f, "%s=%s,", l->v[i].key, l->v[i].val);
	fprintf(f, "}");
}

static void dump_strs(FILE *f, const char *what, const struct pol_strs *l)
{
	fprintf(f, " %s[", what);
	for (size_t i = 0; i < l->n; i++)
		fprintf(f, "%u:%.*s,", l->v[i].kind, (int)l->v[i].len, l->v[i].s);
	fprintf(f, "]");
}

static void dump_sas(FILE *f, const char *what, const struct pol_sas *l)
{
	fprintf(f, " %s[", what);
	for (size_t i = 0; i < l->n; i++)
		fprintf(f, "%s/%s,", l->v[i].ns, l->v[i].sa);
	fprintf(f, "]");
}

static void dump_cidrs(FILE *f, const char *what, const struct pol_cidrs *l)
{
	fprintf(f, " %s[", what);
	for (size_t i = 0; i < l->n; i++)
		fprintf(f, "%08x/%u/%u/%u,", l->v[i].ip, l->v[i].len, l->v[i].v6, l->v[i].flags);
	fprintf(f, "]");
}

static void dump_ports(FILE *f, const char *what, const struct pol_ports *l)
{
	fprintf(f, " %s[", what);
	for (size_t i = 0; i < l->n; i++)
		fprintf(f, "%u,", l->v[i]);
	fprintf(f, "]");
}

static void dump_rules(FILE *f, const struct pol_rule *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "\n    rule %zu dropped=%d", i, r[i].dropped);
		dump_pos(f, &r[i].pos);
		for (size_t c = 0; c < r[i].nclauses; c++) {
			fprintf(f, "\n      clause");
			for (size_t k = 0; k < r[i].clauses[c].n; k++) {
				const struct pol_match *m = &r[i].clauses[c].v[k];

				fprintf(f, "\n        match empty=%d", m->empty);
				dump_strs(f, "pr", &m->principals);
				dump_strs(f, "npr", &m->not_principals);
				dump_strs(f, "ns", &m->namespaces);
				dump_strs(f, "nns", &m->not_namespaces);
				dump_sas(f, "sa", &m->sas);
				dump_sas(f, "nsa", &m->not_sas);
				dump_cidrs(f, "src", &m->src_ips);
				dump_cidrs(f, "nsrc", &m->not_src_ips);
				dump_cidrs(f, "dst", &m->dst_ips);
				dump_cidrs(f, "ndst", &m->not_dst_ips);
				dump_ports(f, "port", &m->ports);
				dump_ports(f, "nport", &m->not_ports);
			}
		}
	}
}

/* Everything a load gives, as text: RC, the messages, and (when it
 * loaded) every object with every field, position and derived index. */
static char *config_dump(int rc, const struct config *cfg, const struct cfg_diag *d)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	assert_non_null(f);
	fprintf(f, "rc %d, %zu errors, %zu warnings\n", rc, d->nerrors, d->nwarnings);
	for (size_t i = 0; i < d->n; i++)
		fprintf(f, "diag %s\n", d->msgs[i]);
	if (!cfg)
		goto out;
	fprintf(f, "root %s td %s\n", cfg->root_ns, cfg->trust_domain);
	for (size_t i = 0; i < cfg->nfiles; i++)
		fprintf(f, "file %s\n", cfg->files[i]);
	for (size_t i = 0; i < cfg->nwls; i++) {
		const struct cfg_workload *w = &cfg->wls[i];

		fprintf(f, "wl %s/%s sa=%s node=%s netns=%s ip=%08x", w->ns, w->name, w->sa,
			w->node, w->netns ? w->netns : "-", w->ip);
		dump_labels(f, "labels", &w->labels);
		dump_pos(f, &w->pos);
		fprintf(f, " byip=%td\n", config_workload_by_ip(cfg, w->ip) - cfg->wls);
	}
	for (size_t i = 0; i < cfg->nsvcs; i++) {
		const struct cfg_service *s = &cfg->svcs[i];

		fprintf(f, "svc %s/%s vip=%08x sel=%d", s->ns, s->name, s->vip, s->has_selector);
		dump_labels(f, "selector", &s->selector);
		dump_pos(f, &s->pos);
		for (size_t j = 0; j < s->nports; j++) {
			fprintf(f, "\n  port %s %u->%u/%u", s->ports[j].name ? s->ports[j].name : "-",
				s->ports[j].port, s->ports[j].target, s->ports[j].proto);
			dump_pos(f, &s->ports[j].pos);
		}
		for (size_t j = 0; j < s->neps; j++) {
			fprintf(f, "\n  ep %08x w=%u", s->eps[j].ip, s->eps[j].weight);
			dump_pos(f, &s->eps[j].pos);
		}
		fprintf(f, "\n");
	}
	for (size_t i = 0; i < cfg->nauthz; i++) {
		const struct cfg_authz *a = &cfg->authz[i];

		fprintf(f, "authz %s/%s action=%d sel=%d tr=%d dry=%d by_ns=%zu", a->ns, a->name,
			a->action, a->has_selector, a->target_ref, a->dry_run, cfg->authz_by_ns[i]);
		dump_labels(f, "selector", &a->selector);
		dump_pos(f, &a->pos);
		for (size_t j = 0; j < a->nwarnings; j++)
			fprintf(f, "\n  warning %s", a->warnings[j]);
		dump_rules(f, a->rules, a->nrules);
		fprintf(f, "\n");
	}
	for (size_t i = 0; i < cfg->npas; i++) {
		const struct cfg_peerauthn *p = &cfg->pas[i];

		fprintf(f, "pa %s/%s sel=%d mode=%d ignored=%d by_ns=%zu", p->ns, p->name,
			p->has_selector, p->mode, p->ignored, cfg->pas_by_ns[i]);
		dump_labels(f, "selector", &p->selector);
		dump_pos(f, &p->pos);
		for (size_t j = 0; j < p->nports; j++) {
			fprintf(f, "\n  port %u mode=%d", p->ports[j].port, p->ports[j].mode);
			dump_pos(f, &p->ports[j].pos);
		}
		for (size_t j = 0; j < p->nwarnings; j++)
			fprintf(f, "\n  warning %s", p->warnings[j]);
		dump_rules(f, p->conv, p->nconv);
		fprintf(f, "\n");
	}
out:
	fclose(f);
	return out;
}

/* A folder of config files, loaded through one cache as meshd does. */
struct inc {
	char dir[64];
	struct cfg_cache *cache;
	struct config *cfg;	/* the last valid config, as meshd keeps it */
	char *cfg_dump;		/* its dump when it was loaded */
};

static void inc_write(struct inc *t, const char *name, const char *text)
{
	char path[256], tmp[300];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", t->dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", t->dir, name);
	f = fopen(tmp, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, path), 0);	/* as editors and ConfigMaps do */
}

static void inc_rm(struct inc *t, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", t->dir, name);
	assert_int_equal(unlink(path), 0);
}

/* Loads PATH (inside T's folder, or the folder) through the cache and
 * without it; both must give the same dump. Keeps a valid result as the
 * current config and returns the load's result. */
static int inc_check(struct inc *t, const char *path)
{
	struct config *a = NULL, *b = NULL;
	struct cfg_diag da = {}, db = {};
	int ra = config_load_cached(path, NULL, t->cache, &a, &da);
	int rb = config_load(path, &b, &db);
	char *x = config_dump(ra, a, &da), *y = config_dump(rb, b, &db);

	if (strcmp(x, y))
		fprintf(stderr, "# cached load:\n%s\n# full load:\n%s\n", x, y);
	assert_string_equal(x, y);
	/* the config kept from before is untouched by later loads */
	if (t->cfg) {
		char *z = config_dump(0, t->cfg, &(struct cfg_diag){});

		assert_string_equal(z, t->cfg_dump);
		free(z);
	}
	if (!ra) {
		config_free(t->cfg);
		free(t->cfg_dump);
		t->cfg = a;
		t->cfg_dump = config_dump(0, a, &(struct cfg_diag){});
		a = NULL;
	}
	config_free(a);
	config_free(b);
	diag_free(&da);
	diag_free(&db);
	free(x);
	free(y);
	return ra;
}

static void inc_init(struct inc *t)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "/tmp/skm-unit-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	t->cache = cfg_cache_new();
	assert_non_null(t->cache);
}

static void inc_done(struct inc *t)
{
	char cmd[128];

	config_free(t->cfg);
	free(t->cfg_dump);
	cfg_cache_free(t->cache);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", t->dir);
	assert_int_equal(system(cmd), 0);
}

#define WL(name, ns, ip, app)							\
	"apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"			\
	"metadata: {name: " name ", namespace: " ns ", labels: {app: " app "}}\n"	\
	"spec: {ip: " ip ", node: node1, serviceAccount: " app "}\n"

static const char inc_workloads[] =
	WL("web-1", "shop", "10.10.1.2", "web") "---\n"
	WL("web-2", "shop", "10.10.1.3", "web") "---\n"
	WL("db-1", "shop", "10.10.1.4", "db") "---\n"
	"# a comment between documents\n"
	"---\n"
	WL("api-1", "corp", "10.10.2.2", "api");

static const char inc_services[] =
	"apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
	"metadata: {name: web, namespace: shop}\n"
	"spec:\n  vip: 10.96.0.10\n  ports: [{port: 80, targetPort: 8080}]\n"
	"  selector: {app: web}\n"
	"---\n"
	"apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
	"metadata: {name: db, namespace: shop}\n"
	"spec:\n  vip: 10.96.0.11\n  ports: [{port: 5432}]\n"
	"  endpoints: [{ip: 10.10.1.4, weight: 2}]\n"
	"---\n"
	"apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
	"metadata: {name: api, namespace: corp}\n"
	"spec:\n  vip: 10.96.0.12\n  ports: [{port: 443, targetPort: 8443}]\n"
	"  selector: {app: api}\n";

static const char inc_policies[] =
	"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
	"metadata: {name: allow-web, namespace: shop}\n"
	"spec:\n  selector: {matchLabels: {app: web}}\n  action: ALLOW\n"
	"  rules:\n  - from: [{source: {principals: [\"cluster.local/ns/corp/sa/api\"]}}]\n"
	"    to: [{operation: {ports: [\"8080\"], methods: [GET]}}]\n"
	"  - from: [{source: {namespaces: [\"shop\"], ipBlocks: [\"10.10.0.0/16\"]}}]\n"
	"---\n"
	"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
	"metadata: {name: deny-admin, namespace: shop}\n"
	"spec:\n  action: DENY\n"
	"  rules: [{to: [{operation: {ports: [\"15000\"], paths: [/admin]}}]}]\n"
	"---\n"
	"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
	"metadata: {name: default, namespace: istio-system}\n"
	"spec: {mtls: {mode: STRICT}}\n"
	"---\n"
	"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
	"metadata: {name: web-ports, namespace: shop}\n"
	"spec:\n  selector: {matchLabels: {app: web}}\n  mtls: {mode: STRICT}\n"
	"  portLevelMtls: {8080: {mode: PERMISSIVE}, 9090: {mode: DISABLE}}\n"
	"---\n"
	"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
	"metadata: {name: shop-default, namespace: shop}\n"
	"spec: {mtls: {mode: PERMISSIVE}}\n"
	"---\n"
	"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
	"metadata: {name: shop-second, namespace: shop}\n"
	"spec: {mtls: {mode: STRICT}}\n";

/* Returns TEXT with the first FROM replaced by TO (malloc'ed). */
static char *edit(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	char *out;

	assert_non_null(at);
	assert_true(asprintf(&out, "%.*s%s%s", (int)(at - text), text, to,
			     at + strlen(from)) > 0);
	return out;
}

/* Writes TEXT with FROM replaced by TO as NAME, then inc_check(PATH). */
static int inc_edit(struct inc *t, const char *name, const char *path, const char *text,
		    const char *from, const char *to)
{
	char *s = edit(text, from, to);
	int rc;

	inc_write(t, name, s);
	rc = inc_check(t, path);
	free(s);
	return rc;
}

/* A folder edited file by file: every cached reload equals a full load,
 * and documents that did not change are not parsed again. */
static void test_incremental_folder(void **state)
{
	struct inc t;
	char *s, *s2, *p, *bad;
	const char *name0, *svc0;

	inc_init(&t);
	inc_write(&t, "10-workloads.yaml", inc_workloads);
	inc_write(&t, "20-services.yaml", inc_services);
	inc_write(&t, "30-policies.yaml", inc_policies);
	assert_int_equal(inc_check(&t, t.dir), 0);
	assert_int_equal(t.cfg->nwls, 4);
	assert_int_equal(t.cfg->svcs[0].neps, 2);	/* selector resolved */
	assert_true(t.cfg->pas[1].nconv > 0);		/* port-level conversion */
	assert_true(t.cfg->pas[3].ignored);		/* second namespace-wide */
	name0 = t.cfg->wls[0].name;
	svc0 = t.cfg->svcs[0].name;

	/* one line of one document: the weight of an endpoint */
	s = edit(inc_services, "weight: 2", "weight: 3");
	inc_write(&t, "20-services.yaml", s);
	assert_int_equal(inc_check(&t, t.dir), 0);
	assert_int_equal(t.cfg->svcs[1].eps[0].weight, 3);
	/* untouched documents, of that file and of others, were reused */
	assert_ptr_equal(t.cfg->wls[0].name, name0);
	assert_ptr_equal(t.cfg->svcs[0].name, svc0);

	/* a label that changes which workloads a selector picks */
	p = edit(inc_workloads, "{name: db-1, namespace: shop, labels: {app: db}}",
		 "{name: db-1, namespace: shop, labels: {app: web}}");
	inc_write(&t, "10-workloads.yaml", p);
	assert_int_equal(inc_check(&t, t.dir), 0);
	assert_int_equal(t.cfg->svcs[0].neps, 3);

	/* a file added, between the others */
	inc_write(&t, "15-more.yaml", WL("web-9", "shop", "10.10.1.9", "web"));
	assert_int_equal(inc_check(&t, t.dir), 0);
	assert_int_equal(t.cfg->svcs[0].neps, 4);

	/* a file renamed: its positions name the new file */
	inc_rm(&t, "15-more.yaml");
	inc_write(&t, "25-more.yaml", WL("web-9", "shop", "10.10.1.9", "web"));
	assert_int_equal(inc_check(&t, t.dir), 0);
	assert_non_null(strstr(t.cfg->wls[4].pos.file, "25-more.yaml"));

	/* a line inserted at the top: every position below moves */
	s2 = edit(p, "apiVersion", "# owner: team-a\napiVersion");
	free(p);
	p = s2;
	inc_write(&t, "10-workloads.yaml", p);
	assert_int_equal(inc_check(&t, t.dir), 0);
	assert_int_equal(t.cfg->wls[0].pos.line, 2);

	/* a file made invalid: malformed YAML, with its position; the last
	 * valid config stays as it was */
	bad = edit(s, "ports: [{port: 5432}]", "ports: [{port: 5432}");
	inc_write(&t, "20-services.yaml", bad);
	assert_int_not_equal(inc_check(&t, t.dir), 0);
	assert_int_equal(t.cfg->svcs[1].eps[0].weight, 3);
	free(bad);

	/* ... and invalid in another way: a duplicate across files */
	inc_write(&t, "20-services.yaml", s);
	inc_write(&t, "40-dup.yaml", WL("web-1", "shop", "10.10.1.20", "web"));
	assert_int_not_equal(inc_check(&t, t.dir), 0);
	inc_rm(&t, "40-dup.yaml");

	/* a semantic error in one document (bad CIDR) */
	bad = edit(inc_policies, "10.10.0.0/16", "10.10.0.0/33");
	inc_write(&t, "30-policies.yaml", bad);
	assert_int_not_equal(inc_check(&t, t.dir), 0);
	free(bad);

	/* fixed again */
	inc_write(&t, "30-policies.yaml", inc_policies);
	assert_int_equal(inc_check(&t, t.dir), 0);

	/* a file removed */
	inc_rm(&t, "25-more.yaml");
	assert_int_equal(inc_check(&t, t.dir), 0);
	assert_int_equal(t.cfg->svcs[0].neps, 3);

	/* the mesh-wide policy removed: conversions depend on it */
	free(p);
	p = edit(inc_policies, "name: default, namespace: istio-system",
		 "name: default, namespace: other");
	inc_write(&t, "30-policies.yaml", p);
	assert_int_equal(inc_check(&t, t.dir), 0);

	free(p);
	free(s);
	inc_done(&t);
}

/* Documents of one big file: a change re-parses the documents that
 * changed; a YAML error anywhere gives the whole-file result. */
static void test_incremental_one_file(void **state)
{
	struct inc t;
	char path[128], *big, *s;
	size_t len = 0;
	FILE *f;
	const char *name_last;

	inc_init(&t);
	snprintf(path, sizeof(path), "%s/mesh.yaml", t.dir);
	f = open_memstream(&big, &len);
	for (int i = 0; i < 300; i++)
		fprintf(f, "---\napiVersion: skmesh.io/v1alpha1\nkind: Service\n"
			"metadata: {name: s%d, namespace: ns%d}\n"
			"spec:\n  vip: 10.96.%d.%d\n  ports: [{port: 80}]\n"
			"  endpoints: [{ip: 10.10.0.%d, weight: %d}]\n",
			i, i % 7, i / 200, i % 200 + 1, i % 250 + 1, 1 + i % 3);
	fclose(f);
	inc_write(&t, "mesh.yaml", big);
	assert_int_equal(inc_check(&t, path), 0);
	assert_int_equal(t.cfg->nsvcs, 300);
	name_last = t.cfg->svcs[299].name;

	s = edit(big, "name: s150,", "name: s150b,");
	inc_write(&t, "mesh.yaml", s);
	assert_int_equal(inc_check(&t, path), 0);
	assert_string_equal(t.cfg->svcs[150].name, "s150b");
	assert_ptr_equal(t.cfg->svcs[299].name, name_last);

	/* an unterminated flow in the middle: the whole file's error */
	assert_int_not_equal(inc_edit(&t, "mesh.yaml", path, s,
				      "ports: [{port: 80}]\n  endpoints: [{ip: 10.10.0.101,",
				      "ports: [{port: 80}\n  endpoints: [{ip: 10.10.0.101,"), 0);
	/* an unterminated quote: libyaml stops at the next "---" */
	assert_int_not_equal(inc_edit(&t, "mesh.yaml", path, s, "name: s200,", "name: \"s200,"), 0);
	/* a document that lost its apiVersion */
	assert_int_not_equal(inc_edit(&t, "mesh.yaml", path, big,
				      "apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
				      "metadata: {name: s10,", "kind: Service\nmetadata: {name: s10,"), 0);
	/* a document removed in the middle, one added at the end */
	assert_int_equal(inc_edit(&t, "mesh.yaml", path, big,
				  "---\napiVersion: skmesh.io/v1alpha1\nkind: Service\n"
				  "metadata: {name: s10,", "---\napiVersion: skmesh.io/v1alpha1\n"
				  "kind: Workload\nmetadata: {name: w10}\n"
				  "spec: {ip: 10.10.9.9, node: n1}\n---\n"
				  "apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
				  "metadata: {name: s10,"), 0);
	assert_int_equal(inc_edit(&t, "mesh.yaml", path, big, "weight: 1}]\n", "weight: 1}]\n"
				  "---\napiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
				  "metadata: {name: w11}\nspec: {ip: 10.10.9.11, node: n1}\n"), 0);
	/* texts that are parsed whole: CRLF line ends, "..." ends */
	assert_int_equal(inc_edit(&t, "mesh.yaml", path, big, "  ports: [{port: 80}]\n",
				  "  ports: [{port: 80}]\r\n"), 0);
	assert_int_equal(inc_edit(&t, "mesh.yaml", path, big, "weight: 1}]\n---\n",
				  "weight: 1}]\n...\n---\n"), 0);
	assert_int_equal(inc_edit(&t, "mesh.yaml", path, big, "", ""), 0);

	free(s);
	free(big);
	inc_done(&t);
}

/* A file rewritten in place, same size, right after a load: its times may
 * not change (clock ticks are coarse), yet the change is seen. */
static void test_incremental_same_size_rewrite(void **state)
{
	struct inc t;
	char path[128];
	FILE *f;

	inc_init(&t);
	snprintf(path, sizeof(path), "%s/mesh.yaml", t.dir);
	for (int i = 0; i < 5; i++) {
		char text[512];

		snprintf(text, sizeof(text), "apiVersion: skmesh.io/v1alpha1\nkind: Service\n"
			 "metadata: {name: web}\nspec:\n  vip: 10.96.0.10\n"
			 "  ports: [{port: 80}]\n  endpoints: [{ip: 10.10.1.2, weight: %d}]\n", i + 1);
		f = fopen(path, "w");
		assert_non_null(f);
		fputs(text, f);
		fclose(f);
		assert_int_equal(inc_check(&t, path), 0);
		assert_int_equal(t.cfg->svcs[0].eps[0].weight, (uint32_t)i + 1);
	}
	inc_done(&t);
}

/* The cache depends on the options it parsed with. */
static void test_incremental_options(void **state)
{
	struct inc t;
	struct cfg_opts opts = { .root_ns = "mesh-root" };
	struct config *a = NULL, *b = NULL;
	struct cfg_diag da = {}, db = {};
	char *x, *y;

	inc_init(&t);
	inc_write(&t, "30-policies.yaml", inc_policies);
	assert_int_equal(inc_check(&t, t.dir), 0);
	assert_int_equal(config_load_cached(t.dir, &opts, t.cache, &a, &da), 0);
	assert_int_equal(config_load_opts(t.dir, &opts, &b, &db), 0);
	x = config_dump(0, a, &da);
	y = config_dump(0, b, &db);
	assert_string_equal(x, y);
	free(x);
	free(y);
	config_free(a);
	config_free(b);
	diag_free(&da);
	diag_free(&db);
	inc_done(&t);
}

/* What a destination's verdicts depend on: a policy's change changes the
 * digest of the workloads of its namespace, not of the others. */
static void test_policy_inputs(void **state)
{
	struct cfg_label wl = { "app", "web" }, al = { "app", "api" };
	struct cfg_labels web = { &wl, 1 }, api = { &al, 1 };
	const struct pol_target shop = { "shop", &web }, corp = { "corp", &api };
	uint64_t shop0, corp0;
	struct inc t;

	inc_init(&t);
	inc_write(&t, "30-policies.yaml", inc_policies);
	assert_int_equal(inc_check(&t, t.dir), 0);
	shop0 = policy_inputs(t.cfg, &shop);
	corp0 = policy_inputs(t.cfg, &corp);
	assert_int_not_equal(shop0, corp0);
	/* a line added to a policy of shop: the documents below move, and
	 * what depends only on them stays */
	assert_int_equal(inc_edit(&t, "30-policies.yaml", t.dir, inc_policies,
				  "metadata: {name: deny-admin, namespace: shop}",
				  "# checked\nmetadata: {name: deny-admin, namespace: shop}"), 0);
	assert_true(policy_inputs(t.cfg, &corp) == corp0);
	/* a rule of a policy in shop */
	assert_int_equal(inc_edit(&t, "30-policies.yaml", t.dir, inc_policies,
				  "ports: [\"15000\"]", "ports: [\"15001\"]"), 0);
	assert_true(policy_inputs(t.cfg, &shop) != shop0);
	assert_true(policy_inputs(t.cfg, &corp) == corp0);
	/* the mesh-wide policy: everyone */
	assert_int_equal(inc_edit(&t, "30-policies.yaml", t.dir, inc_policies,
				  "spec: {mtls: {mode: STRICT}}", "spec: {mtls: {mode: PERMISSIVE}}"), 0);
	assert_true(policy_inputs(t.cfg, &corp) != corp0);
	inc_done(&t);
}

/* --- aliases, merge keys and size caps ---------------------------------- */

/* Teardown: removes the file whose path a test left in *STATE. */
static int unlink_state(void **state)
{
	if (*state) {
		unlink(*state);
		free(*state);
		*state = NULL;
	}
	return 0;
}

static const char alias_doc[] =
	"apiVersion: skmesh.io/v1alpha1\n"
	"kind: Workload\n"
	"metadata: {name: w, namespace: a}\n"
	"spec: {ip: 10.0.0.1, node: n1}\n"
	"---\n"
	"apiVersion: security.istio.io/v1\n"
	"kind: AuthorizationPolicy\n"
	"metadata: {name: p, namespace: a}\n"
	"spec:\n"
	"  rules:\n"
	"  - from:\n"
	"    - source:\n"
	"        principals: &p [\"cluster.local/ns/a/sa/x\"]\n"
	"        notPrincipals: *p\n";

static void test_alias_refused(void **state)
{
	/* in the second document (a chunk parsed alone): lines of the file */
	expect_error(alias_doc, "14:24",
		     "YAML alias \"*p\" (of the anchor &p at 13:21) is not accepted");
	expect_error(alias_doc, "14:24", "write the value out in full");
}

/* Nine levels of ten aliases each: 10^9 principals once expanded. It is
 * refused, with a bounded number of messages, before anything is read. */
static void test_alias_expansion_refused(void **state)
{
	char text[4096];
	size_t n = 0;
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	struct cfg_opts opts = {};
	char *path;

	n += (size_t)snprintf(text + n, sizeof(text) - n,
			      "apiVersion: security.istio.io/v1\n"
			      "kind: AuthorizationPolicy\n"
			      "metadata: {name: lol, namespace: a}\n"
			      "x0: &a0 [\"cluster.local/ns/a/sa/lol\"]\n");
	for (int i = 1; i < 10; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n,
				      "x%d: &a%d [*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d,*a%d]\n",
				      i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1,
				      i - 1, i - 1);
	n += (size_t)snprintf(text + n, sizeof(text) - n,
			      "spec:\n  rules:\n  - from:\n    - source:\n        principals: *a9\n");
	assert_true(n < sizeof(text) - 1);
	path = unit_write_tmp(text);
	*state = path;	/* removed by unlink_state, also on failure */
	assert_int_not_equal(config_load_opts(path, &opts, &cfg, &diag), 0);
	assert_null(cfg);
	assert_true(unit_diag_has(&diag, ":5:10: error: YAML alias \"*a0\" (of the anchor &a0 at 4:5)"));
	assert_true(unit_diag_has(&diag, "more YAML aliases, not accepted either"));
	/* three named, one summary line: 91 aliases do not make 91 lines */
	assert_int_equal(diag.nerrors, 4);
	diag_free(&diag);
}

static void test_merge_key_refused(void **state)
{
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
		     "metadata: {name: w}\nspec:\n  <<: {ip: 10.1.2.3}\n  node: n1\n",
		     "5:3", "YAML merge key \"<<\" is not accepted: write the merged fields out");
}

/* An anchor nothing refers to changes nothing: accepted. A quoted "<<"
 * is a plain key (an unknown field), not a merge. */
static void test_anchor_alone_accepted(void **state)
{
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path;

	int rc = load_text("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
			   "metadata: &m {name: w}\nspec: {ip: 10.1.2.3, node: n1}\n",
			   &cfg, &diag, &path);

	*state = path;	/* removed by unlink_state, also on failure */
	assert_int_equal(rc, 0);
	assert_int_equal(cfg->nwls, 1);
	config_free(cfg);
	diag_free(&diag);
	expect_error("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
		     "metadata: {name: w}\nspec: {ip: 10.1.2.3, node: n1, \"<<\": 1}\n",
		     "4:32", "unknown field \"<<\"");
}

static void test_size_caps(void **state)
{
	struct cfg_opts small_file = { .max_file_bytes = 100 };
	struct cfg_opts small_doc = { .max_doc_bytes = 100 };
	struct cfg_cache *cache = cfg_cache_new();
	struct config *cfg = NULL;
	struct cfg_diag diag = {};
	char *path = unit_write_tmp("apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
				    "metadata: {name: w}\nspec: {ip: 10.1.2.3, node: n1}\n"
				    "---\n"
				    "apiVersion: skmesh.io/v1alpha1\nkind: Workload\n"
				    "metadata: {name: w2}\n"
				    "spec: {ip: 10.1.2.4, node: n1, serviceAccount: a-longer-name}\n");
	char want[512];

	*state = path;	/* removed by unlink_state, also on failure */
	assert_non_null(cache);
	/* the defaults take it, through the cache */
	assert_int_equal(config_load_cached(path, NULL, cache, &cfg, &diag), 0);
	assert_int_equal(cfg->nwls, 2);
	config_free(cfg);
	cfg = NULL;
	diag_free(&diag);

	assert_int_not_equal(config_load_opts(path, &small_file, &cfg, &diag), 0);
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s: 230 bytes, more than the 100 allowed for one config file",
		 path);
	if (!unit_diag_has(&diag, want))
		unit_diag_dump(&diag);
	assert_true(unit_diag_has(&diag, want));
	diag_free(&diag);

	/* the second document only; the cache read the file with the
	 * default cap, and must not keep what it parsed then */
	assert_int_not_equal(config_load_cached(path, &small_doc, cache, &cfg, &diag), 0);
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s:6:1: error: this document is 133 bytes, more than the "
		 "100 allowed for one document", path);
	if (!unit_diag_has(&diag, want))
		unit_diag_dump(&diag);
	assert_true(unit_diag_has(&diag, want));
	assert_int_equal(diag.nerrors, 1);
	diag_free(&diag);
	cfg_cache_free(cache);
}

int run_config_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal_config),
		cmocka_unit_test(test_malformed_yaml),
		cmocka_unit_test(test_unknown_kind),
		cmocka_unit_test(test_vip_without_ports),
		cmocka_unit_test(test_port_out_of_range),
		cmocka_unit_test(test_bad_ip),
		cmocka_unit_test(test_unknown_field),
		cmocka_unit_test(test_duplicate_workload),
		cmocka_unit_test(test_istio_kinds_parsed),
		cmocka_unit_test(test_slots_weights),
		cmocka_unit_test(test_slots_scaled),
		cmocka_unit_test(test_slots_none),
		cmocka_unit_test(test_incremental_folder),
		cmocka_unit_test(test_incremental_one_file),
		cmocka_unit_test(test_incremental_same_size_rewrite),
		cmocka_unit_test(test_incremental_options),
		cmocka_unit_test(test_policy_inputs),
		cmocka_unit_test(test_alias_refused),
		cmocka_unit_test_teardown(test_alias_expansion_refused, unlink_state),
		cmocka_unit_test(test_merge_key_refused),
		cmocka_unit_test_teardown(test_anchor_alone_accepted, unlink_state),
		cmocka_unit_test_teardown(test_size_caps, unlink_state),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
