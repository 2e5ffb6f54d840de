// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * YAML config loader on libyaml's document API: every node keeps its
 * position, so each message names file:line:column and the field.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "config.h"
#include "skmesh.h"

#define API_SKMESH	"skmesh.io/v1alpha1"

struct doc_ctx {
	yaml_document_t *doc;
	const char *file;
	struct cfg_diag *diag;
	struct config *cfg;
};

void diag_add(struct cfg_diag *d, int is_error, const struct cfg_pos *pos,
	      const char *fmt, ...)
{
	char text[512], *msg = NULL;
	char **msgs;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (pos && pos->file)
		(void)!asprintf(&msg, "%s:%u:%u: %s: %s", pos->file, pos->line,
				pos->col, is_error ? "error" : "warning", text);
	else
		(void)!asprintf(&msg, "%s: %s", is_error ? "error" : "warning",
				text);
	msgs = realloc(d->msgs, (d->n + 1) * sizeof(*msgs));
	if (!msgs || !msg) {
		free(msg);
		/* Out of memory: still count it so the load fails. */
		if (msgs)
			d->msgs = msgs;
	} else {
		d->msgs = msgs;
		d->msgs[d->n++] = msg;
	}
	if (is_error)
		d->nerrors++;
	else
		d->nwarnings++;
}

void diag_print(const struct cfg_diag *d, const char *prog)
{
	for (size_t i = 0; i < d->n; i++)
		fprintf(stderr, "%s: %s\n", prog, d->msgs[i]);
}

void diag_free(struct cfg_diag *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->msgs[i]);
	free(d->msgs);
	memset(d, 0, sizeof(*d));
}

static void *grow(void *arr, size_t *n, size_t size)
{
	char *p = realloc(arr, (*n + 1) * size);

	if (!p)
		return NULL;
	memset(p + *n * size, 0, size);
	(*n)++;
	return p;
}

/* --- YAML node helpers ------------------------------------------------ */

static yaml_node_t *ynode(struct doc_ctx *c, int id)
{
	return yaml_document_get_node(c->doc, id);
}

static void pos_of(struct doc_ctx *c, const yaml_node_t *n, struct cfg_pos *p)
{
	p->file = c->file;
	p->line = n ? n->start_mark.line + 1 : 0;
	p->col = n ? n->start_mark.column + 1 : 0;
}

#define err_at(c, n, ...) do {						\
	struct cfg_pos _p;						\
	pos_of(c, n, &_p);						\
	diag_add((c)->diag, 1, &_p, __VA_ARGS__);			\
} while (0)

#define warn_at(c, n, ...) do {						\
	struct cfg_pos _p;						\
	pos_of(c, n, &_p);						\
	diag_add((c)->diag, 0, &_p, __VA_ARGS__);			\
} while (0)

static int is_null(const yaml_node_t *n)
{
	const char *v;

	if (!n)
		return 1;
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return 0;
	v = (const char *)n->data.scalar.value;
	return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
	       !strcmp(v, "NULL");
}

static const char *scalar(const yaml_node_t *n)
{
	if (!n || n->type != YAML_SCALAR_NODE)
		return NULL;
	return (const char *)n->data.scalar.value;
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a map";
	default:
		return "empty";
	}
}

/* Value of KEY in mapping MAP, or NULL. */
static yaml_node_t *map_get(struct doc_ctx *c, yaml_node_t *map, const char *key)
{
	yaml_node_pair_t *p;

	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		const char *k = scalar(ynode(c, p->key));

		if (k && !strcmp(k, key)) {
			yaml_node_t *v = ynode(c, p->value);

			return is_null(v) ? NULL : v;
		}
	}
	return NULL;
}

/* Errors on keys of MAP that are not in ALLOWED (NULL-terminated): a typo
 * such as "tragetPort" must not be ignored silently. */
static void check_keys(struct doc_ctx *c, yaml_node_t *map, const char *path,
		       const char *const *allowed)
{
	yaml_node_pair_t *p;

	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *kn = ynode(c, p->key);
		const char *k = scalar(kn);
		const char *const *a;
		char list[256] = "";

		for (a = allowed; *a && k; a++)
			if (!strcmp(*a, k))
				break;
		if (k && *a)
			continue;
		for (a = allowed; *a; a++) {
			strncat(list, a == allowed ? "" : ", ", sizeof(list) - strlen(list) - 1);
			strncat(list, *a, sizeof(list) - strlen(list) - 1);
		}
		err_at(c, kn, "%s: unknown field \"%s\" (known: %s)", path,
		       k ? k : "?", list);
	}
}

static yaml_node_t *want_type(struct doc_ctx *c, yaml_node_t *n, yaml_node_type_t t,
			      const char *path)
{
	static const char *const names[] = {
		[YAML_SCALAR_NODE] = "a scalar",
		[YAML_SEQUENCE_NODE] = "a list",
		[YAML_MAPPING_NODE] = "a map",
	};

	if (!n)
		return NULL;
	if (n->type != t) {
		err_at(c, n, "%s: must be %s, not %s", path, names[t], node_kind(n));
		return NULL;
	}
	return n;
}

/* A string field. Returns 1 if set, 0 if absent, -1 on error. */
static int get_str(struct doc_ctx *c, yaml_node_t *map, const char *key,
		   const char *path, int required, char **out)
{
	yaml_node_t *n = map_get(c, map, key);
	char *s;

	if (!n) {
		if (required) {
			err_at(c, map, "%s.%s: required field is missing", path, key);
			return -1;
		}
		return 0;
	}
	if (n->type != YAML_SCALAR_NODE) {
		err_at(c, n, "%s.%s: must be a string, not %s", path, key, node_kind(n));
		return -1;
	}
	s = strdup(scalar(n));
	if (!s)
		return -1;
	free(*out);
	*out = s;
	return 1;
}

static int parse_ip(struct doc_ctx *c, yaml_node_t *n, const char *path, uint32_t *ip)
{
	const char *v = scalar(n);
	struct in_addr a;

	if (!v || inet_pton(AF_INET, v, &a) != 1) {
		err_at(c, n, "%s: \"%s\" is not an IPv4 address (like 10.96.0.10)",
		       path, v ? v : node_kind(n));
		return -1;
	}
	*ip = a.s_addr;
	return 0;
}

static int parse_uint(struct doc_ctx *c, yaml_node_t *n, const char *path,
		      unsigned long lo, unsigned long hi, unsigned long *out)
{
	const char *v = scalar(n);
	char *end;
	unsigned long x;

	if (!v || !*v) {
		err_at(c, n, "%s: must be a number from %lu to %lu", path, lo, hi);
		return -1;
	}
	errno = 0;
	x = strtoul(v, &end, 10);
	if (errno || *end || v[0] == '-' || x < lo || x > hi) {
		err_at(c, n, "%s: \"%s\" is out of range (%lu-%lu)", path, v, lo, hi);
		return -1;
	}
	*out = x;
	return 0;
}

static int parse_labels(struct doc_ctx *c, yaml_node_t *n, const char *path,
			struct cfg_labels *out)
{
	yaml_node_pair_t *p;
	int rc = 0;

	if (!want_type(c, n, YAML_MAPPING_NODE, path))
		return -1;
	for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		yaml_node_t *k = ynode(c, p->key), *v = ynode(c, p->value);
		struct cfg_label *l;

		if (!scalar(k) || !v || v->type != YAML_SCALAR_NODE) {
			err_at(c, v ? v : k, "%s: labels are \"key: value\" strings", path);
			rc = -1;
			continue;
		}
		l = grow(out->v, &out->n, sizeof(*l));
		if (!l)
			return -ENOMEM;
		out->v = l;
		l = &out->v[out->n - 1];
		l->key = strdup(scalar(k));
		l->val = strdup(scalar(v));
		if (!l->key || !l->val)
			return -ENOMEM;
	}
	return rc;
}

static void labels_free(struct cfg_labels *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].key);
		free(l->v[i].val);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

int labels_match(const struct cfg_labels *selector, const struct cfg_labels *labels)
{
	for (size_t i = 0; i < selector->n; i++) {
		size_t j;

		for (j = 0; j < labels->n; j++)
			if (!strcmp(selector->v[i].key, labels->v[j].key) &&
			    !strcmp(selector->v[i].val, labels->v[j].val))
				break;
		if (j == labels->n)
			return 0;
	}
	return 1;
}

/* --- kinds ------------------------------------------------------------ */

struct meta {
	char *name;
	char *ns;
	yaml_node_t *node;
	yaml_node_t *labels;
};

static int parse_meta(struct doc_ctx *c, yaml_node_t *root, struct meta *m)
{
	yaml_node_t *md = map_get(c, root, "metadata");

	if (!md) {
		err_at(c, root, "metadata: required field is missing");
		return -1;
	}
	if (!want_type(c, md, YAML_MAPPING_NODE, "metadata"))
		return -1;
	m->node = md;
	if (get_str(c, md, "name", "metadata", 1, &m->name) < 0)
		return -1;
	if (get_str(c, md, "namespace", "metadata", 0, &m->ns) < 0)
		return -1;
	if (!m->ns && !(m->ns = strdup("default")))
		return -ENOMEM;
	if (!*m->name) {
		err_at(c, md, "metadata.name: must not be empty");
		return -1;
	}
	m->labels = map_get(c, md, "labels");
	return 0;
}

static int parse_workload(struct doc_ctx *c, yaml_node_t *root, struct meta *m)
{
	static const char *const keys[] = {
		"ip", "node", "serviceAccount", "netns", NULL
	};
	yaml_node_t *spec = map_get(c, root, "spec"), *n;
	struct config *cfg = c->cfg;
	struct cfg_workload *w;
	unsigned int errs = c->diag->nerrors;

	if (!spec) {
		err_at(c, root, "Workload %s/%s: spec: required field is missing",
		       m->ns, m->name);
		return -1;
	}
	if (!want_type(c, spec, YAML_MAPPING_NODE, "spec"))
		return -1;
	w = grow(cfg->wls, &cfg->nwls, sizeof(*w));
	if (!w)
		return -ENOMEM;
	cfg->wls = w;
	w = &cfg->wls[cfg->nwls - 1];
	w->name = m->name;
	w->ns = m->ns;
	m->name = m->ns = NULL;
	pos_of(c, root, &w->pos);
	check_keys(c, spec, "spec", keys);
	n = map_get(c, spec, "ip");
	if (!n)
		err_at(c, spec, "spec.ip: required field is missing");
	else
		parse_ip(c, n, "spec.ip", &w->ip);
	get_str(c, spec, "node", "spec", 1, &w->node);
	if (get_str(c, spec, "serviceAccount", "spec", 0, &w->sa) == 0)
		w->sa = strdup("default");
	get_str(c, spec, "netns", "spec", 0, &w->netns);
	if (m->labels)
		parse_labels(c, m->labels, "metadata.labels", &w->labels);
	return c->diag->nerrors == errs ? 0 : -1;
}

static int parse_port(struct doc_ctx *c, yaml_node_t *pn, size_t i, struct cfg_port *p)
{
	static const char *const keys[] = {
		"name", "port", "targetPort", "protocol", "appProtocol", "nodePort", NULL
	};
	char path[64];
	unsigned long v;
	const char *proto;
	yaml_node_t *n;

	snprintf(path, sizeof(path), "spec.ports[%zu]", i);
	if (!want_type(c, pn, YAML_MAPPING_NODE, path))
		return -1;
	pos_of(c, pn, &p->pos);
	check_keys(c, pn, path, keys);
	get_str(c, pn, "name", path, 0, &p->name);
	n = map_get(c, pn, "port");
	if (!n) {
		err_at(c, pn, "%s.port: required field is missing", path);
		return -1;
	}
	strncat(path, ".port", sizeof(path) - strlen(path) - 1);
	if (parse_uint(c, n, path, 1, 65535, &v))
		return -1;
	p->port = p->target = (uint16_t)v;
	path[strlen(path) - 5] = 0;
	n = map_get(c, pn, "targetPort");
	if (n) {
		strncat(path, ".targetPort", sizeof(path) - strlen(path) - 1);
		if (parse_uint(c, n, path, 1, 65535, &v))
			return -1;
		p->target = (uint16_t)v;
		path[strlen(path) - 11] = 0;
	}
	p->proto = IPPROTO_TCP;
	n = map_get(c, pn, "protocol");
	proto = scalar(n);
	if (n && (!proto || (strcmp(proto, "TCP") && strcmp(proto, "UDP")))) {
		err_at(c, n, "%s.protocol: \"%s\" is not supported (TCP or UDP)", path,
		       proto ? proto : node_kind(n));
		return -1;
	}
	if (proto && !strcmp(proto, "UDP"))
		p->proto = IPPROTO_UDP;
	return 0;
}

static int parse_endpoint(struct doc_ctx *c, yaml_node_t *en, size_t i,
			  struct cfg_endpoint *e)
{
	static const char *const keys[] = { "ip", "weight", NULL };
	char path[64];
	unsigned long w = 1;
	yaml_node_t *n;

	snprintf(path, sizeof(path), "spec.endpoints[%zu]", i);
	if (!want_type(c, en, YAML_MAPPING_NODE, path))
		return -1;
	pos_of(c, en, &e->pos);
	check_keys(c, en, path, keys);
	n = map_get(c, en, "ip");
	if (!n) {
		err_at(c, en, "%s.ip: required field is missing", path);
		return -1;
	}
	strncat(path, ".ip", sizeof(path) - strlen(path) - 1);
	if (parse_ip(c, n, path, &e->ip))
		return -1;
	path[strlen(path) - 3] = 0;
	n = map_get(c, en, "weight");
	if (n) {
		strncat(path, ".weight", sizeof(path) - strlen(path) - 1);
		if (parse_uint(c, n, path, 0, 10000, &w))
			return -1;
	}
	e->weight = (uint32_t)w;
	return 0;
}

static int parse_service(struct doc_ctx *c, yaml_node_t *root, struct meta *m)
{
	static const char *const keys[] = {
		"vip", "clusterIP", "ports", "selector", "endpoints", "type", NULL
	};
	yaml_node_t *spec = map_get(c, root, "spec"), *n;
	struct config *cfg = c->cfg;
	struct cfg_service *s;
	unsigned int errs = c->diag->nerrors;
	yaml_node_item_t *it;

	if (!spec) {
		err_at(c, root, "Service %s/%s: spec: required field is missing",
		       m->ns, m->name);
		return -1;
	}
	if (!want_type(c, spec, YAML_MAPPING_NODE, "spec"))
		return -1;
	s = grow(cfg->svcs, &cfg->nsvcs, sizeof(*s));
	if (!s)
		return -ENOMEM;
	cfg->svcs = s;
	s = &cfg->svcs[cfg->nsvcs - 1];
	s->name = m->name;
	s->ns = m->ns;
	m->name = m->ns = NULL;
	pos_of(c, root, &s->pos);
	check_keys(c, spec, "spec", keys);

	n = map_get(c, spec, "vip");
	if (!n)
		n = map_get(c, spec, "clusterIP");
	if (!n)
		err_at(c, spec, "spec.vip: required field is missing");
	else
		parse_ip(c, n, "spec.vip", &s->vip);

	n = map_get(c, spec, "ports");
	if (!n || (n->type == YAML_SEQUENCE_NODE &&
		   n->data.sequence.items.start == n->data.sequence.items.top)) {
		err_at(c, n ? n : spec,
		       "spec.ports: a Service needs at least one port ({port: 80, targetPort: 8080})");
	} else if (want_type(c, n, YAML_SEQUENCE_NODE, "spec.ports")) {
		for (it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
			struct cfg_port *p = grow(s->ports, &s->nports, sizeof(*p));

			if (!p)
				return -ENOMEM;
			s->ports = p;
			parse_port(c, ynode(c, *it), s->nports - 1, &s->ports[s->nports - 1]);
		}
		for (size_t i = 0; i < s->nports; i++)
			for (size_t j = 0; j < i; j++)
				if (s->ports[i].port == s->ports[j].port &&
				    s->ports[i].proto == s->ports[j].proto) {
					diag_add(c->diag, 1, &s->ports[i].pos,
						 "spec.ports[%zu]: port %u is listed twice",
						 i, s->ports[i].port);
				}
	}

	n = map_get(c, spec, "selector");
	if (n && want_type(c, n, YAML_MAPPING_NODE, "spec.selector")) {
		s->has_selector = 1;
		parse_labels(c, n, "spec.selector", &s->selector);
	}
	n = map_get(c, spec, "endpoints");
	if (n && s->has_selector)
		err_at(c, n, "spec.endpoints: give either selector or endpoints, not both");
	else if (n && want_type(c, n, YAML_SEQUENCE_NODE, "spec.endpoints")) {
		for (it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
			struct cfg_endpoint *e = grow(s->eps, &s->neps, sizeof(*e));

			if (!e)
				return -ENOMEM;
			s->eps = e;
			parse_endpoint(c, ynode(c, *it), s->neps - 1, &s->eps[s->neps - 1]);
		}
	}
	return c->diag->nerrors == errs ? 0 : -1;
}

/* Istio kinds are read, not yet enforced: said once per object. */
static int parse_other(struct doc_ctx *c, yaml_node_t *root, const char *kind,
		       struct meta *m)
{
	struct config *cfg = c->cfg;
	struct cfg_other *o = grow(cfg->others, &cfg->nothers, sizeof(*o));

	if (!o)
		return -ENOMEM;
	cfg->others = o;
	o = &cfg->others[cfg->nothers - 1];
	o->kind = strdup(kind);
	o->name = m->name;
	o->ns = m->ns;
	m->name = m->ns = NULL;
	pos_of(c, root, &o->pos);
	warn_at(c, root, "%s %s/%s is read but not enforced by this version of meshd",
		kind, o->ns, o->name);
	return 0;
}

static int parse_doc(struct doc_ctx *c)
{
	yaml_node_t *root = yaml_document_get_root_node(c->doc);
	const char *api, *kind;
	struct meta m = {};
	int rc = -1;

	if (!root || is_null(root))
		return 0;	/* an empty document, e.g. after a trailing --- */
	if (root->type != YAML_MAPPING_NODE) {
		err_at(c, root, "a document must be a map with apiVersion, kind, metadata, spec");
		return -1;
	}
	api = scalar(map_get(c, root, "apiVersion"));
	kind = scalar(map_get(c, root, "kind"));
	if (!kind) {
		err_at(c, root, "kind: required field is missing");
		return -1;
	}
	if (!api) {
		err_at(c, root, "apiVersion: required field is missing");
		return -1;
	}
	if (!strcmp(kind, "Workload") || !strcmp(kind, "Service")) {
		if (strcmp(api, API_SKMESH)) {
			err_at(c, map_get(c, root, "apiVersion"),
			       "apiVersion: %s is \"%s\", not \"%s\"", kind, API_SKMESH, api);
			return -1;
		}
	} else if (!strcmp(kind, "AuthorizationPolicy") ||
		   !strcmp(kind, "PeerAuthentication")) {
		if (strcmp(api, "security.istio.io/v1") &&
		    strcmp(api, "security.istio.io/v1beta1")) {
			err_at(c, map_get(c, root, "apiVersion"),
			       "apiVersion: %s is security.istio.io/v1 or v1beta1, not \"%s\"",
			       kind, api);
			return -1;
		}
	} else {
		err_at(c, map_get(c, root, "kind"),
		       "kind: unknown kind \"%s\" (known: Workload, Service, AuthorizationPolicy, PeerAuthentication)",
		       kind);
		return -1;
	}
	if (parse_meta(c, root, &m))
		goto out;
	if (!strcmp(kind, "Workload"))
		rc = parse_workload(c, root, &m);
	else if (!strcmp(kind, "Service"))
		rc = parse_service(c, root, &m);
	else
		rc = parse_other(c, root, kind, &m);
out:
	free(m.name);
	free(m.ns);
	return rc;
}

static int load_file(struct config *cfg, const char *path, struct cfg_diag *diag)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	struct doc_ctx c = { .doc = &doc, .diag = diag, .cfg = cfg };
	char **files;
	FILE *f;
	int rc = 0;

	f = fopen(path, "r");
	if (!f) {
		rc = -errno;
		diag_add(diag, 1, NULL, "%s: cannot open: %s", path, strerror(errno));
		return rc;
	}
	files = realloc(cfg->files, (cfg->nfiles + 1) * sizeof(*files));
	if (!files || !(files[cfg->nfiles] = strdup(path))) {
		if (files)
			cfg->files = files;
		fclose(f);
		return -ENOMEM;
	}
	cfg->files = files;
	c.file = cfg->files[cfg->nfiles++];

	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	for (;;) {
		if (!yaml_parser_load(&parser, &doc)) {
			struct cfg_pos p = {
				.file = c.file,
				.line = parser.problem_mark.line + 1,
				.col = parser.problem_mark.column + 1,
			};

			diag_add(diag, 1, &p, "malformed YAML: %s%s%s",
				 parser.problem ? parser.problem : "syntax error",
				 parser.context ? " " : "",
				 parser.context ? parser.context : "");
			rc = -EINVAL;
			break;
		}
		if (!yaml_document_get_root_node(&doc)) {
			yaml_document_delete(&doc);	/* end of stream */
			break;
		}
		if (parse_doc(&c) == -ENOMEM)
			rc = -ENOMEM;
		yaml_document_delete(&doc);
		if (rc)
			break;
	}
	yaml_parser_delete(&parser);
	fclose(f);
	return rc;
}

static int yaml_name(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	if (d->d_name[0] == '.')
		return 0;
	return (n > 5 && !strcmp(d->d_name + n - 5, ".yaml")) ||
	       (n > 4 && !strcmp(d->d_name + n - 4, ".yml"));
}

/* Cross-document checks: duplicates, selectors, map capacity. */
static void validate(struct config *cfg, struct cfg_diag *diag)
{
	size_t nkeys = 0, nslots = 0;

	for (size_t i = 0; i < cfg->nwls; i++) {
		struct cfg_workload *w = &cfg->wls[i];

		for (size_t j = 0; j < i; j++) {
			struct cfg_workload *o = &cfg->wls[j];

			if (!strcmp(w->ns, o->ns) && !strcmp(w->name, o->name))
				diag_add(diag, 1, &w->pos,
					 "Workload %s/%s is defined twice (first at %s:%u)",
					 w->ns, w->name, o->pos.file, o->pos.line);
			else if (w->ip && w->ip == o->ip)
				diag_add(diag, 1, &w->pos,
					 "spec.ip: Workload %s/%s has the IP of %s/%s (%s:%u)",
					 w->ns, w->name, o->ns, o->name, o->pos.file, o->pos.line);
		}
		if (i >= SKM_MAX_WORKLOADS) {
			diag_add(diag, 1, &w->pos,
				 "Workload %s/%s does not fit: the skm_workloads map holds %d workloads",
				 w->ns, w->name, SKM_MAX_WORKLOADS);
			break;
		}
	}

	for (size_t i = 0; i < cfg->nsvcs; i++) {
		struct cfg_service *s = &cfg->svcs[i];

		for (size_t j = 0; j < i; j++) {
			struct cfg_service *o = &cfg->svcs[j];

			if (!strcmp(s->ns, o->ns) && !strcmp(s->name, o->name)) {
				diag_add(diag, 1, &s->pos,
					 "Service %s/%s is defined twice (first at %s:%u)",
					 s->ns, s->name, o->pos.file, o->pos.line);
				continue;
			}
			if (s->vip != o->vip)
				continue;
			for (size_t a = 0; a < s->nports; a++)
				for (size_t b = 0; b < o->nports; b++)
					if (s->ports[a].port == o->ports[b].port &&
					    s->ports[a].proto == o->ports[b].proto)
						diag_add(diag, 1, &s->ports[a].pos,
							 "spec.ports[%zu]: %s/%s and %s/%s (%s:%u) both claim this VIP and port",
							 a, s->ns, s->name, o->ns, o->name,
							 o->pos.file, o->pos.line);
		}

		if (s->has_selector) {
			for (size_t j = 0; j < cfg->nwls; j++) {
				struct cfg_workload *w = &cfg->wls[j];
				struct cfg_endpoint *e;

				if (strcmp(w->ns, s->ns) || !labels_match(&s->selector, &w->labels))
					continue;
				e = grow(s->eps, &s->neps, sizeof(*e));
				if (!e) {
					diag_add(diag, 1, &s->pos, "out of memory");
					return;
				}
				s->eps = e;
				e[s->neps - 1].ip = w->ip;
				e[s->neps - 1].weight = 1;
				e[s->neps - 1].pos = w->pos;
			}
		}
		nkeys += s->nports;
		nslots += s->nports * (s->neps > SKM_MAX_SLOTS_PER_SVC ?
				       s->neps : SKM_MAX_SLOTS_PER_SVC);
		if (nkeys > SKM_MAX_SERVICES)
			diag_add(diag, 1, &s->pos,
				 "Service %s/%s does not fit: the skm_services map holds %d VIP:port entries",
				 s->ns, s->name, SKM_MAX_SERVICES);
		else if (nslots > SKM_MAX_BACKEND_SLOTS / 2)
			diag_add(diag, 1, &s->pos,
				 "Service %s/%s does not fit: the skm_backends map (%d slots) is full",
				 s->ns, s->name, SKM_MAX_BACKEND_SLOTS);
		if (nkeys > SKM_MAX_SERVICES || nslots > SKM_MAX_BACKEND_SLOTS / 2)
			break;
	}
}

int config_load(const char *path, struct config **out, struct cfg_diag *diag)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	struct dirent **ents = NULL;
	struct stat st;
	int rc = 0, n;

	if (!cfg)
		return -ENOMEM;
	if (stat(path, &st)) {
		rc = -errno;
		diag_add(diag, 1, NULL, "%s: %s (--config takes a YAML file or a folder of them)",
			 path, strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		n = scandir(path, &ents, yaml_name, alphasort);
		if (n < 0) {
			rc = -errno;
			diag_add(diag, 1, NULL, "%s: cannot read folder: %s", path, strerror(errno));
			goto out;
		}
		for (int i = 0; i < n; i++) {
			char *f = NULL;

			if (!rc && asprintf(&f, "%s/%s", path, ents[i]->d_name) > 0) {
				int r = load_file(cfg, f, diag);

				if (r == -ENOMEM)
					rc = r;
			}
			free(f);
			free(ents[i]);
		}
		free(ents);
	} else {
		rc = load_file(cfg, path, diag);
		if (rc != -ENOMEM)
			rc = 0;
	}
	if (!rc)
		validate(cfg, diag);
	if (!rc && diag->nerrors)
		rc = -EINVAL;
out:
	if (rc) {
		config_free(cfg);
		return rc;
	}
	*out = cfg;
	return 0;
}

const struct cfg_workload *config_workload_by_ip(const struct config *cfg, uint32_t ip)
{
	for (size_t i = 0; i < cfg->nwls; i++)
		if (cfg->wls[i].ip == ip)
			return &cfg->wls[i];
	return NULL;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->nwls; i++) {
		struct cfg_workload *w = &cfg->wls[i];

		free(w->name);
		free(w->ns);
		free(w->sa);
		free(w->node);
		free(w->netns);
		labels_free(&w->labels);
	}
	for (size_t i = 0; i < cfg->nsvcs; i++) {
		struct cfg_service *s = &cfg->svcs[i];

		free(s->name);
		free(s->ns);
		for (size_t j = 0; j < s->nports; j++)
			free(s->ports[j].name);
		free(s->ports);
		labels_free(&s->selector);
		free(s->eps);
	}
	for (size_t i = 0; i < cfg->nothers; i++) {
		free(cfg->others[i].kind);
		free(cfg->others[i].name);
		free(cfg->others[i].ns);
	}
	for (size_t i = 0; i < cfg->nfiles; i++)
		free(cfg->files[i]);
	free(cfg->files);
	free(cfg->wls);
	free(cfg->svcs);
	free(cfg->others);
	free(cfg);
}
