// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * YAML config loader on libyaml's document API: every node keeps its
 * position, so each message names file:line:column and the field.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "keyidx.h"
#include "skmesh.h"

#define API_SKMESH	"skmesh.io/v1alpha1"

struct doc_ctx {
	yaml_document_t *doc;
	const char *file;
	unsigned int line0;	/* lines of the file before the parsed text */
	uint64_t digest;	/* of the document's text */
	struct cfg_diag *diag;
	struct cfg_objects *cfg;	/* what its documents parse to */
	const char *root_ns;	/* the config's, lent for the parse */
};



/* --- YAML node helpers ------------------------------------------------ */

static yaml_node_t *ynode(struct doc_ctx *c, int id)
{
	return yaml_document_get_node(c->doc, id);
}

static void pos_of(struct doc_ctx *c, const yaml_node_t *n, struct cfg_pos *p)
{
	p->file = c->file;
	p->line = n ? c->line0 + (unsigned int)n->start_mark.line + 1 : 0;
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
		char list[512] = "";

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
	if (strspn(v, "0123456789") != strlen(v)) {
		err_at(c, n, "%s: \"%s\" is not a number (%lu-%lu)", path, v, lo, hi);
		return -1;
	}
	errno = 0;
	x = strtoul(v, &end, 10);
	if (errno || *end || x < lo || x > hi) {
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
		l = model_grow(out->v, &out->n, sizeof(*l));
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
	struct cfg_objects *cfg = c->cfg;
	struct cfg_workload *w;
	unsigned int errs = c->diag->nerrors;

	if (!spec) {
		err_at(c, root, "Workload %s/%s: spec: required field is missing",
		       m->ns, m->name);
		return -1;
	}
	if (!want_type(c, spec, YAML_MAPPING_NODE, "spec"))
		return -1;
	w = model_grow(cfg->wls, &cfg->nwls, sizeof(*w));
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
	struct cfg_objects *cfg = c->cfg;
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
	s = model_grow(cfg->svcs, &cfg->nsvcs, sizeof(*s));
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
			struct cfg_port *p = model_grow(s->ports, &s->nports, sizeof(*p));

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
			struct cfg_endpoint *e = model_grow(s->eps, &s->neps, sizeof(*e));

			if (!e)
				return -ENOMEM;
			s->eps = e;
			parse_endpoint(c, ynode(c, *it), s->neps - 1, &s->eps[s->neps - 1]);
		}
	}
	return c->diag->nerrors == errs ? 0 : -1;
}

/* --- Istio security kinds --------------------------------------------- */

#define NAMES_LEN	256

/* Appends NAME to the ", "-separated list BUF unless it is already in. */
static void names_add(char *buf, size_t size, const char *name)
{
	size_t nl = strlen(name);
	const char *p = buf;

	while ((p = strstr(p, name))) {
		if ((p == buf || p[-1] == ' ') && (p[nl] == ',' || !p[nl]))
			return;
		p += nl;
	}
	if (*buf)
		strncat(buf, ", ", size - strlen(buf) - 1);
	strncat(buf, name, size - strlen(buf) - 1);
}

static const char *is_are(const char *names)
{
	return strchr(names, ',') ? "are" : "is";
}


/* What one policy's parse collects besides the model. */
struct pol_parse {
	struct doc_ctx *c;
	const char *ns;		/* the policy's namespace */
	char ***warn;		/* the policy's warning list */
	size_t *nwarn;
	yaml_node_t *first;	/* where the first warning points */
	int nomem;
};

__attribute__((format(printf, 3, 4)))
static void pol_warn(struct pol_parse *pp, yaml_node_t *at, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	va_end(ap);
	if (!text || cfg_warning_add(pp->warn, pp->nwarn, text))
		pp->nomem = 1;
	free(text);
	if (!pp->first)
		pp->first = at;
}

/*
 * Parses an IPv4 address or CIDR ("10.1.2.3", "10.0.0.0/8"); an IPv6 one
 * is accepted (Istio accepts it) and marked v6. Returns NULL, or what is
 * wrong with S.
 */
static const char *cidr_parse(const char *s, struct pol_cidr *out)
{
	char addr[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long len;
	struct in6_addr a6;
	struct in_addr a4;
	int v6;

	memset(out, 0, sizeof(*out));
	if (alen >= sizeof(addr))
		return "is not an IP address or CIDR";
	memcpy(addr, s, alen);
	addr[alen] = 0;
	v6 = strchr(addr, ':') != NULL;
	if (v6 ? inet_pton(AF_INET6, addr, &a6) != 1 : inet_pton(AF_INET, addr, &a4) != 1)
		return v6 ? "is not an IPv6 address or CIDR" :
			    "is not an IPv4 address or CIDR (like 10.1.2.3 or 10.0.0.0/8)";
	len = v6 ? 128 : 32;
	if (slash) {
		const char *l = slash + 1;

		if (!*l || strspn(l, "0123456789") != strlen(l) || (l[0] == '0' && l[1]) ||
		    strlen(l) > 3)
			return "has a malformed prefix length";
		len = strtoul(l, NULL, 10);
		if (len > (v6 ? 128UL : 32UL))
			return v6 ? "has a prefix length out of range (0-128)" :
				    "has a prefix length out of range (0-32)";
	}
	out->len = (uint8_t)len;
	out->v6 = (uint8_t)v6;
	if (!v6) {
		out->mask = len ? htonl(~0U << (32 - len)) : 0;
		out->ip = a4.s_addr & out->mask;
	}
	return NULL;
}

enum vkind {
	V_PRINCIPAL,
	V_NAMESPACE,
	V_SA,
	V_CIDR_SRC,
	V_CIDR_DST,
	V_PORT,
	V_L7,		/* L7 strings */
	V_L7_CIDR,	/* L7, but Istio checks them as CIDRs */
};

struct field_def {
	const char *key;
	enum vkind kind;
	size_t off;		/* of the list in struct pol_match */
	size_t not_off;		/* when keys: where notValues go */
};

#define MOFF(f) offsetof(struct pol_match, f)

static const struct field_def source_fields[] = {
	{ "principals", V_PRINCIPAL, MOFF(principals), 0 },
	{ "notPrincipals", V_PRINCIPAL, MOFF(not_principals), 0 },
	{ "requestPrincipals", V_L7, 0, 0 },
	{ "notRequestPrincipals", V_L7, 0, 0 },
	{ "namespaces", V_NAMESPACE, MOFF(namespaces), 0 },
	{ "notNamespaces", V_NAMESPACE, MOFF(not_namespaces), 0 },
	{ "ipBlocks", V_CIDR_SRC, MOFF(src_ips), 0 },
	{ "notIpBlocks", V_CIDR_SRC, MOFF(not_src_ips), 0 },
	{ "remoteIpBlocks", V_L7_CIDR, 0, 0 },
	{ "notRemoteIpBlocks", V_L7_CIDR, 0, 0 },
	{ "serviceAccounts", V_SA, MOFF(sas), 0 },
	{ "notServiceAccounts", V_SA, MOFF(not_sas), 0 },
	{ "trustDomains", V_L7, 0, 0 },
	{ "notTrustDomains", V_L7, 0, 0 },
	{ NULL, 0, 0, 0 }
};

static const struct field_def operation_fields[] = {
	{ "hosts", V_L7, 0, 0 },
	{ "notHosts", V_L7, 0, 0 },
	{ "ports", V_PORT, MOFF(ports), 0 },
	{ "notPorts", V_PORT, MOFF(not_ports), 0 },
	{ "methods", V_L7, 0, 0 },
	{ "notMethods", V_L7, 0, 0 },
	{ "paths", V_L7, 0, 0 },
	{ "notPaths", V_L7, 0, 0 },
	{ NULL, 0, 0, 0 }
};

/* The `when` keys ztunnel enforces (istiod's l4WhenAttributes). */
static const struct field_def when_l4[] = {
	{ "source.ip", V_CIDR_SRC, MOFF(src_ips), MOFF(not_src_ips) },
	{ "source.namespace", V_NAMESPACE, MOFF(namespaces), MOFF(not_namespaces) },
	{ "source.principal", V_PRINCIPAL, MOFF(principals), MOFF(not_principals) },
	{ "destination.ip", V_CIDR_DST, MOFF(dst_ips), MOFF(not_dst_ips) },
	{ "destination.port", V_PORT, MOFF(ports), MOFF(not_ports) },
	{ NULL, 0, 0, 0 }
};

/* Other attributes of Istio's conditions reference: only L7 enforces them. */
static const struct field_def when_l7[] = {
	{ "remote.ip", V_L7_CIDR, 0, 0 },
	{ "source.serviceAccount", V_L7, 0, 0 },
	{ "source.trustDomain", V_L7, 0, 0 },
	{ "request.auth.principal", V_L7, 0, 0 },
	{ "request.auth.audiences", V_L7, 0, 0 },
	{ "request.auth.presenter", V_L7, 0, 0 },
	{ "connection.sni", V_L7, 0, 0 },
	{ NULL, 0, 0, 0 }
};
static const char *const when_l7_prefixes[] = {
	"request.headers[", "request.auth.claims[", "experimental.", NULL
};
static const struct field_def when_l7_any = { "*", V_L7, 0, 0 };

static const char *const source_keys[] = {
	"principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
	"namespaces", "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks",
	"notRemoteIpBlocks", "serviceAccounts", "notServiceAccounts", "trustDomains",
	"notTrustDomains", NULL
};
static const char *const operation_keys[] = {
	"hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths",
	"notPaths", NULL
};

static int is_l4(enum vkind k)
{
	return k != V_L7 && k != V_L7_CIDR;
}

static size_t seq_len(const yaml_node_t *n)
{
	return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

/* The list at KEY of MAP; NULL when absent or empty ([] is "not set" in
 * Istio's API), or when not a list (an error). */
static yaml_node_t *get_list(struct doc_ctx *c, yaml_node_t *map, const char *key,
			     const char *path)
{
	yaml_node_t *n = map_get(c, map, key);
	char p[288];

	if (!n)
		return NULL;
	snprintf(p, sizeof(p), "%s.%s", path, key);
	if (!want_type(c, n, YAML_SEQUENCE_NODE, p))
		return NULL;
	return seq_len(n) ? n : NULL;
}

#define APPEND(list, item) ({						\
	typeof((list)->v) _v = realloc((list)->v, ((list)->n + 1) * sizeof(*_v)); \
	int _rc = -ENOMEM;						\
	if (_v) {							\
		(list)->v = _v;						\
		_v[(list)->n++] = (item);				\
		_rc = 0;						\
	}								\
	_rc;								\
})

static void str_compile(const char *v, struct pol_str *s)
{
	size_t l = strlen(v);

	if (!strcmp(v, "*")) {
		s->kind = POL_STR_PRESENCE;
		l = 0;
	} else if (v[0] == '*') {
		s->kind = POL_STR_SUFFIX;
		v++;
		l--;
	} else if (v[l - 1] == '*') {
		s->kind = POL_STR_PREFIX;
		l--;
	} else {
		s->kind = POL_STR_EXACT;
	}
	s->s = strndup(v, l);
	s->len = (uint32_t)l;
}

/*
 * Checks and compiles the values of one field (FIELD names it in
 * messages) into the list at OFF of M. Returns 0, or -1 when a value is
 * bad (reported).
 */
static int add_values(struct pol_parse *pp, yaml_node_t *seq, const char *path,
		      const char *field, enum vkind kind, struct pol_match *m, size_t off)
{
	struct doc_ctx *c = pp->c;
	void *list = (char *)m + off;
	yaml_node_item_t *it;
	int rc = 0;
	size_t i = 0;

	for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++, i++) {
		yaml_node_t *n = ynode(c, *it);
		const char *v = scalar(n);
		struct pol_cidr cidr;
		const char *why;
		char ip[288];

		snprintf(ip, sizeof(ip), "%s[%zu]", path, i);
		if (!v || !*v || is_null(n)) {
			err_at(c, n, "%s: must be a non-empty string", ip);
			rc = -1;
			continue;
		}
		switch (kind) {
		case V_PRINCIPAL:
		case V_NAMESPACE: {
			struct pol_str s = {};

			if (kind == V_PRINCIPAL && !strncmp(v, "spiffe://", 9))
				pol_warn(pp, n, "%s value \"%s\" never matches: Istio principals have no spiffe:// prefix (write \"%s\")",
					 field, v, v + 9);
			str_compile(v, &s);
			if (!s.s || APPEND((struct pol_strs *)list, s)) {
				free(s.s);
				pp->nomem = 1;
			}
			break;
		}
		case V_SA: {
			const char *slash = strchr(v, '/');
			struct pol_sa sa = {};

			if ((slash && (slash == v || !slash[1] || strchr(slash + 1, '/'))) ||
			    strchr(v, '*')) {
				err_at(c, n, "%s: \"%s\" is not a service account (\"name\", or \"namespace/name\")",
				       ip, v);
				rc = -1;
				break;
			}
			sa.ns = slash ? strndup(v, (size_t)(slash - v)) : strdup(pp->ns);
			sa.sa = strdup(slash ? slash + 1 : v);
			if (!sa.ns || !sa.sa || APPEND((struct pol_sas *)list, sa)) {
				free(sa.ns);
				free(sa.sa);
				pp->nomem = 1;
			}
			break;
		}
		case V_CIDR_SRC:
		case V_CIDR_DST:
		case V_L7_CIDR:
			why = cidr_parse(v, &cidr);
			if (why) {
				err_at(c, n, "%s: \"%s\" %s", ip, v, why);
				rc = -1;
				break;
			}
			if (kind == V_L7_CIDR)
				break;
			if (cidr.v6)
				pol_warn(pp, n, "%s value %s is IPv6 and never matches (skmesh is IPv4-only)",
					 field, v);
			cidr.flags = kind == V_CIDR_SRC ? POL_CIDR_SRC : POL_CIDR_DST;
			if (APPEND((struct pol_cidrs *)list, cidr))
				pp->nomem = 1;
			break;
		case V_PORT: {
			unsigned long port;

			if (parse_uint(c, n, ip, 1, 65535, &port)) {
				rc = -1;
				break;
			}
			if (APPEND((struct pol_ports *)list, (uint16_t)port))
				pp->nomem = 1;
			break;
		}
		case V_L7:
			break;
		}
	}
	return rc;
}

/* What the parse of one rule saw, for its warning. */
struct rule_scan {
	char l7[NAMES_LEN];	/* L7 fields in the rule */
	char kept[NAMES_LEN];	/* L4 fields of entries that had L7 ones too */
	char skipped[NAMES_LEN];/* entries left with no L4 field ("to[0]") */
	char dead[64];		/* first clause left with no L4 entry */
	size_t ndead;
	yaml_node_t *first_l7;
};

static struct pol_match *clause_add(struct pol_clause *cl)
{
	struct pol_match *m = model_grow(cl->v, &cl->n, sizeof(*m));

	if (!m)
		return NULL;
	cl->v = m;
	return &m[cl->n - 1];
}

static struct pol_clause *rule_add_clause(struct pol_rule *r)
{
	struct pol_clause *cl = model_grow(r->clauses, &r->nclauses, sizeof(*cl));

	if (!cl)
		return NULL;
	r->clauses = cl;
	return &cl[r->nclauses - 1];
}

/* One from[i] / to[i] entry: {WRAP: {fields}} into M. */
static void parse_entry(struct pol_parse *pp, yaml_node_t *en, const char *path,
			const char *ename, const char *wrap, const char *const *keys,
			const struct field_def *defs, struct pol_match *m,
			struct rule_scan *rs)
{
	static const char *const none[] = { NULL };
	struct doc_ctx *c = pp->c;
	const char *const wraps[] = { wrap, NULL };
	char ipath[160], l4[NAMES_LEN] = "";
	yaml_node_t *inner, *first_l7 = NULL;
	const struct field_def *d;
	int nl4 = 0, nl7 = 0;

	m->empty = 1;
	if (!want_type(c, en, YAML_MAPPING_NODE, path))
		return;
	check_keys(c, en, path, wrap ? wraps : none);
	inner = map_get(c, en, wrap);
	if (!inner) {
		err_at(c, en, "%s.%s: required field is missing", path, wrap);
		return;
	}
	snprintf(ipath, sizeof(ipath), "%s.%s", path, wrap);
	if (!want_type(c, inner, YAML_MAPPING_NODE, ipath))
		return;
	check_keys(c, inner, ipath, keys);
	for (d = defs; d->key; d++) {
		yaml_node_t *seq = get_list(c, inner, d->key, ipath);
		char fpath[224];

		if (!seq)
			continue;
		snprintf(fpath, sizeof(fpath), "%s.%s", ipath, d->key);
		if (is_l4(d->kind)) {
			nl4++;
			names_add(l4, sizeof(l4), d->key);
			add_values(pp, seq, fpath, d->key, d->kind, m, d->off);
		} else {
			nl7++;
			names_add(rs->l7, sizeof(rs->l7), d->key);
			if (!first_l7)
				first_l7 = seq;
			add_values(pp, seq, fpath, d->key, d->kind, m, 0);
		}
	}
	if (!nl4 && !nl7) {
		err_at(c, inner, "%s: must not be empty (Istio rejects an empty %s)", ipath, wrap);
		return;
	}
	if (defs == source_fields && (m->sas.n || m->not_sas.n) &&
	    (m->principals.n || m->not_principals.n || m->namespaces.n ||
	     m->not_namespaces.n))
		err_at(c, inner, "%s: serviceAccounts cannot be set with namespaces or principals (Istio rejects it)",
		       ipath);
	m->empty = !nl4;
	if (nl7) {
		if (!rs->first_l7)
			rs->first_l7 = first_l7;
		if (nl4) {
			char *tok, *save = NULL;

			for (tok = strtok_r(l4, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
				names_add(rs->kept, sizeof(rs->kept), tok);
		} else {
			names_add(rs->skipped, sizeof(rs->skipped), ename);
		}
	}
}

/* rules[i].from or rules[i].to: one clause of R. */
static void parse_from_to(struct pol_parse *pp, yaml_node_t *rn, const char *rpath,
			  const char *key, struct pol_rule *r, struct rule_scan *rs)
{
	struct doc_ctx *c = pp->c;
	yaml_node_t *seq = map_get(c, rn, key);
	int is_from = !strcmp(key, "from");
	struct pol_clause *cl;
	yaml_node_item_t *it;
	char path[80];
	size_t i = 0, live = 0;

	if (!seq)
		return;
	snprintf(path, sizeof(path), "%s.%s", rpath, key);
	if (!want_type(c, seq, YAML_SEQUENCE_NODE, path))
		return;
	if (!seq_len(seq)) {
		err_at(c, seq, "%s: must not be empty (Istio rejects it; leave it out to match any %s)",
		       path, is_from ? "source" : "operation");
		return;
	}
	if (!(cl = rule_add_clause(r))) {
		pp->nomem = 1;
		return;
	}
	for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++, i++) {
		struct pol_match *m = clause_add(cl);
		char epath[128], ename[32];

		if (!m) {
			pp->nomem = 1;
			return;
		}
		snprintf(epath, sizeof(epath), "%s[%zu]", path, i);
		snprintf(ename, sizeof(ename), "%s[%zu]", key, i);
		parse_entry(pp, ynode(c, *it), epath, ename, is_from ? "source" : "operation",
			    is_from ? source_keys : operation_keys,
			    is_from ? source_fields : operation_fields, m, rs);
		live += !m->empty;
	}
	if (!live && !rs->ndead++)
		snprintf(rs->dead, sizeof(rs->dead), "%s", key);
}

static const struct field_def *when_def(const char *key, int *l4)
{
	const struct field_def *d;

	for (d = when_l4; d->key; d++)
		if (!strcmp(d->key, key)) {
			*l4 = 1;
			return d;
		}
	*l4 = 0;
	for (d = when_l7; d->key; d++)
		if (!strcmp(d->key, key))
			return d;
	for (const char *const *p = when_l7_prefixes; *p; p++)
		if (!strncmp(key, *p, strlen(*p)) && key[strlen(*p)])
			return &when_l7_any;
	return NULL;
}

/* rules[i].when: one clause per condition. */
static void parse_when(struct pol_parse *pp, yaml_node_t *rn, const char *rpath,
		       struct pol_rule *r, struct rule_scan *rs)
{
	static const char *const keys[] = { "key", "values", "notValues", NULL };
	struct doc_ctx *c = pp->c;
	yaml_node_t *seq = map_get(c, rn, "when");
	yaml_node_item_t *it;
	char path[80];
	size_t i = 0;

	if (!seq)
		return;
	snprintf(path, sizeof(path), "%s.when", rpath);
	if (!want_type(c, seq, YAML_SEQUENCE_NODE, path))
		return;
	for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++, i++) {
		yaml_node_t *wn = ynode(c, *it), *kn, *vals, *nvals;
		const struct field_def *d;
		struct pol_clause *cl;
		struct pol_match *m;
		char wpath[128], vpath[160], name[300];
		const char *key;
		int l4;

		snprintf(wpath, sizeof(wpath), "%s[%zu]", path, i);
		if (!want_type(c, wn, YAML_MAPPING_NODE, wpath))
			continue;
		check_keys(c, wn, wpath, keys);
		if (!(cl = rule_add_clause(r)) || !(m = clause_add(cl))) {
			pp->nomem = 1;
			return;
		}
		m->empty = 1;
		kn = map_get(c, wn, "key");
		key = scalar(kn);
		if (!key || !*key) {
			err_at(c, kn ? kn : wn, "%s.key: required, a non-empty attribute name", wpath);
			continue;
		}
		d = when_def(key, &l4);
		if (!d) {
			err_at(c, kn, "%s.key: unknown attribute \"%s\" (known: source.ip, source.namespace, source.principal, destination.ip, destination.port, remote.ip, source.serviceAccount, source.trustDomain, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[...], request.headers[...], connection.sni, experimental.*)",
			       wpath, key);
			continue;
		}
		vals = get_list(c, wn, "values", wpath);
		nvals = get_list(c, wn, "notValues", wpath);
		if (!vals && !nvals) {
			err_at(c, wn, "%s: at least one of values or notValues must be set for key %s",
			       wpath, key);
			continue;
		}
		if (vals) {
			snprintf(vpath, sizeof(vpath), "%s.values", wpath);
			add_values(pp, vals, vpath, key, d->kind, m, d->off);
		}
		if (nvals) {
			snprintf(vpath, sizeof(vpath), "%s.notValues", wpath);
			add_values(pp, nvals, vpath, key, d->kind, m, d->not_off);
		}
		if (l4) {
			m->empty = 0;
			continue;
		}
		snprintf(name, sizeof(name), "when key %s", key);
		names_add(rs->l7, sizeof(rs->l7), name);
		if (!rs->first_l7)
			rs->first_l7 = kn;
		if (!rs->ndead++)
			snprintf(rs->dead, sizeof(rs->dead), "when[%zu]", i);
	}
}

static void parse_rule(struct pol_parse *pp, yaml_node_t *rn, size_t i,
		       enum pol_action action, struct pol_rule *r)
{
	static const char *const keys[] = { "from", "to", "when", NULL };
	struct doc_ctx *c = pp->c;
	struct rule_scan rs = {};
	char path[64];

	snprintf(path, sizeof(path), "spec.rules[%zu]", i);
	if (!rn || is_null(rn)) {
		err_at(c, rn, "%s: a rule must not be null (write {} to match everything)", path);
		return;
	}
	if (!want_type(c, rn, YAML_MAPPING_NODE, path))
		return;
	pos_of(c, rn, &r->pos);
	check_keys(c, rn, path, keys);
	/* istiod's order: the to clause, the from clause, one per condition */
	parse_from_to(pp, rn, path, "to", r, &rs);
	parse_from_to(pp, rn, path, "from", r, &rs);
	parse_when(pp, rn, path, r, &rs);
	if (!rs.l7[0])
		return;
	if (action == POL_ALLOW) {
		r->dropped = 1;
		pol_warn(pp, rs.first_l7, "ALLOW rule %zu dropped: %s %s L7 (the rule can never match at L4)",
			 i, rs.l7, is_are(rs.l7));
	} else if (rs.ndead == r->nclauses) {
		pol_warn(pp, rs.first_l7, "DENY rule %zu has no L4 condition left and never fires (%s %s L7)",
			 i, rs.l7, is_are(rs.l7));
	} else if (rs.ndead) {
		pol_warn(pp, rs.first_l7, "DENY rule %zu never fires: its %s clause has no entry with an L4 field left (%s %s L7), and ztunnel skips an empty match",
			 i, rs.dead, rs.l7, is_are(rs.l7));
	} else {
		if (rs.kept[0])
			pol_warn(pp, rs.first_l7, "DENY rule %zu: %s ignored, the rule matches more broadly on %s",
				 i, rs.l7, rs.kept);
		if (rs.skipped[0])
			pol_warn(pp, rs.first_l7, "DENY rule %zu: %s %s only L7 fields (%s) and never match%s; the rule fires through its other entries",
				 i, rs.skipped, strchr(rs.skipped, ',') ? "have" : "has", rs.l7,
				 strchr(rs.skipped, ',') ? "" : "es");
	}
}

static int parse_selector(struct doc_ctx *c, yaml_node_t *spec, int *has,
			  struct cfg_labels *labels)
{
	static const char *const keys[] = { "matchLabels", NULL };
	yaml_node_t *n = map_get(c, spec, "selector"), *ml;

	if (!n)
		return 0;
	if (!want_type(c, n, YAML_MAPPING_NODE, "spec.selector"))
		return -1;
	check_keys(c, n, "spec.selector", keys);
	*has = 1;
	ml = map_get(c, n, "matchLabels");
	if (!ml)
		return 0;
	if (parse_labels(c, ml, "spec.selector.matchLabels", labels))
		return -1;
	for (size_t i = 0; i < labels->n; i++)
		if (!*labels->v[i].key || strchr(labels->v[i].key, '*') ||
		    strchr(labels->v[i].val, '*')) {
			err_at(c, ml, "spec.selector.matchLabels: \"%s: %s\": empty keys and wildcards are not allowed",
			       labels->v[i].key, labels->v[i].val);
			return -1;
		}
	return 0;
}

static void parse_target_ref(struct doc_ctx *c, yaml_node_t *n, const char *path)
{
	static const char *const keys[] = { "group", "kind", "name", "namespace", NULL };
	char *s = NULL;

	if (!want_type(c, n, YAML_MAPPING_NODE, path))
		return;
	check_keys(c, n, path, keys);
	get_str(c, n, "kind", path, 1, &s);
	free(s);
	s = NULL;
	get_str(c, n, "name", path, 1, &s);
	free(s);
}

/* istio.io/dry-run: "true" (Go's strconv.ParseBool spellings). */
static int dry_run_of(struct doc_ctx *c, struct meta *m, struct pol_parse *pp)
{
	static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True", NULL };
	static const char *const no[] = { "0", "f", "F", "false", "FALSE", "False", NULL };
	yaml_node_t *ann = map_get(c, m->node, "annotations"), *n;
	const char *v;

	n = ann ? map_get(c, ann, "istio.io/dry-run") : NULL;
	if (!n)
		return 0;
	v = scalar(n);
	for (const char *const *p = yes; v && *p; p++)
		if (!strcmp(v, *p))
			return 1;
	for (const char *const *p = no; v && *p; p++)
		if (!strcmp(v, *p))
			return 0;
	pol_warn(pp, n, "istio.io/dry-run: \"%s\" is not a boolean; the policy is enforced",
		 v ? v : node_kind(n));
	return 0;
}

/* Says a policy's warnings once, as one message, where the first one is. */
static void policy_diag(struct doc_ctx *c, struct pol_parse *pp, yaml_node_t *root,
			const char *kind, const char *ns, const char *name,
			char **w, size_t nw)
{
	size_t len = 0;
	char *all, *p;

	if (!nw)
		return;
	for (size_t i = 0; i < nw; i++)
		len += strlen(w[i]) + 2;
	if (!(all = malloc(len + 1))) {
		pp->nomem = 1;
		return;
	}
	p = all;
	for (size_t i = 0; i < nw; i++)
		p += sprintf(p, "%s%s", i ? "; " : "", w[i]);
	warn_at(c, pp->first ? pp->first : root, "%s %s/%s: %s", kind, ns, name, all);
	free(all);
}

static int parse_authz(struct doc_ctx *c, yaml_node_t *root, struct meta *m)
{
	static const char *const keys[] = {
		"selector", "targetRef", "targetRefs", "action", "provider", "rules", NULL
	};
	yaml_node_t *spec = map_get(c, root, "spec"), *n, *tr, *trs, *rules;
	struct cfg_objects *cfg = c->cfg;
	unsigned int errs = c->diag->nerrors;
	struct pol_parse pp = { .c = c };
	struct cfg_authz *a;
	const char *act;

	if (spec && !want_type(c, spec, YAML_MAPPING_NODE, "spec"))
		return -1;
	a = model_grow(cfg->authz, &cfg->nauthz, sizeof(*a));
	if (!a)
		return -ENOMEM;
	cfg->authz = a;
	a = &cfg->authz[cfg->nauthz - 1];
	a->name = m->name;
	a->ns = m->ns;
	m->name = m->ns = NULL;
	pos_of(c, root, &a->pos);
	a->digest = c->digest;
	pp.ns = a->ns;
	pp.warn = &a->warnings;
	pp.nwarn = &a->nwarnings;
	if (spec)
		check_keys(c, spec, "spec", keys);

	n = map_get(c, spec, "action");
	act = scalar(n);
	if (!n || !strcmp(act ? act : "", "ALLOW")) {
		a->action = POL_ALLOW;
	} else if (act && !strcmp(act, "DENY")) {
		a->action = POL_DENY;
	} else if (act && !strcmp(act, "CUSTOM")) {
		err_at(c, n, "spec.action: action CUSTOM needs an external authorizer, which skmesh does not have; ztunnel does not enforce it either");
	} else if (act && !strcmp(act, "AUDIT")) {
		err_at(c, n, "spec.action: action AUDIT needs an audit plugin, which skmesh does not have; ztunnel does not enforce it either");
	} else {
		err_at(c, n, "spec.action: unknown action \"%s\" (known: ALLOW, DENY; CUSTOM and AUDIT are not supported)",
		       act ? act : node_kind(n));
	}
	n = map_get(c, spec, "provider");
	if (n && (!act || strcmp(act, "CUSTOM"))) {
		err_at(c, n, "spec.provider: only with action CUSTOM (Istio rejects it with %s)",
		       act ? act : "ALLOW");
	}

	parse_selector(c, spec, &a->has_selector, &a->selector);
	tr = map_get(c, spec, "targetRef");
	trs = map_get(c, spec, "targetRefs");
	if (tr)
		parse_target_ref(c, tr, "spec.targetRef");
	if (trs && want_type(c, trs, YAML_SEQUENCE_NODE, "spec.targetRefs")) {
		size_t i = 0;

		for (yaml_node_item_t *it = trs->data.sequence.items.start;
		     it < trs->data.sequence.items.top; it++, i++) {
			char path[64];

			snprintf(path, sizeof(path), "spec.targetRefs[%zu]", i);
			parse_target_ref(c, ynode(c, *it), path);
		}
	}
	if (tr && trs)
		err_at(c, trs, "spec.targetRefs: set targetRef or targetRefs, not both");
	if ((tr || trs) && a->has_selector)
		err_at(c, tr ? tr : trs, "spec.%s: set selector or targetRef(s), not both (Istio rejects it)",
		       tr ? "targetRef" : "targetRefs");

	rules = map_get(c, spec, "rules");
	if (rules && want_type(c, rules, YAML_SEQUENCE_NODE, "spec.rules")) {
		size_t i = 0;

		a->rules = calloc(seq_len(rules) ? seq_len(rules) : 1, sizeof(*a->rules));
		if (!a->rules)
			return -ENOMEM;
		a->nrules = seq_len(rules);
		for (yaml_node_item_t *it = rules->data.sequence.items.start;
		     it < rules->data.sequence.items.top; it++, i++)
			parse_rule(&pp, ynode(c, *it), i, a->action, &a->rules[i]);
	}
	if (!rules && a->action == POL_DENY)
		err_at(c, spec ? spec : root, "spec.rules: a DENY policy without rules never matches (Istio rejects it; add an empty rule {} to deny everything)");

	a->dry_run = dry_run_of(c, m, &pp);
	if (tr || trs || a->dry_run) {
		/* never applied here: what its rules would lose does not matter */
		for (size_t i = 0; i < a->nwarnings; i++)
			free(a->warnings[i]);
		a->nwarnings = 0;
		pp.first = tr ? tr : trs ? trs : NULL;
		if (tr || trs)
			pol_warn(&pp, tr ? tr : trs, "%s: enforced only by a waypoint; not enforced here",
				 tr ? "targetRef" : "targetRefs");
		else
			pol_warn(&pp, m->node, "istio.io/dry-run: not enforced (ztunnel does not enforce dry-run policies either)");
		a->target_ref = tr || trs;
	} else if (a->action == POL_ALLOW && a->nrules) {
		size_t live = 0;

		for (size_t i = 0; i < a->nrules; i++)
			live += !a->rules[i].dropped;
		if (!live)
			pol_warn(&pp, pp.first, "ALLOW policy has no rule left at L4: it denies every connection to the workloads it selects unless another ALLOW policy matches");
	}
	if (c->diag->nerrors == errs)
		policy_diag(c, &pp, root, "AuthorizationPolicy", a->ns, a->name,
			    a->warnings, a->nwarnings);
	if (pp.nomem)
		return -ENOMEM;
	return c->diag->nerrors == errs ? 0 : -1;
}

static const char *const mtls_modes[] = {
	[PA_UNSET] = "UNSET",
	[PA_DISABLE] = "DISABLE",
	[PA_PERMISSIVE] = "PERMISSIVE",
	[PA_STRICT] = "STRICT",
};

/* {mode: X} at N; PATH names it. */
static int parse_mtls(struct doc_ctx *c, yaml_node_t *n, const char *path,
		      enum pol_mtls_mode *mode)
{
	static const char *const keys[] = { "mode", NULL };
	yaml_node_t *mn;
	const char *v;

	*mode = PA_UNSET;
	if (!n)
		return 0;
	if (!want_type(c, n, YAML_MAPPING_NODE, path))
		return -1;
	check_keys(c, n, path, keys);
	mn = map_get(c, n, "mode");
	if (!mn)
		return 0;
	v = scalar(mn);
	for (size_t i = 0; v && i < sizeof(mtls_modes) / sizeof(mtls_modes[0]); i++)
		if (!strcmp(v, mtls_modes[i])) {
			*mode = (enum pol_mtls_mode)i;
			return 0;
		}
	err_at(c, mn, "%s.mode: unknown mode \"%s\" (known: UNSET, DISABLE, PERMISSIVE, STRICT)",
	       path, v ? v : node_kind(mn));
	return -1;
}

static int pa_port_cmp(const void *a, const void *b)
{
	const struct cfg_pa_port *x = a, *y = b;

	return (int)x->port - (int)y->port;
}

static int parse_peerauthn(struct doc_ctx *c, yaml_node_t *root, struct meta *m)
{
	static const char *const keys[] = { "selector", "mtls", "portLevelMtls", NULL };
	yaml_node_t *spec = map_get(c, root, "spec"), *n, *sel;
	struct cfg_objects *cfg = c->cfg;
	unsigned int errs = c->diag->nerrors;
	struct pol_parse pp = { .c = c };
	struct cfg_peerauthn *p;
	int has_sel = 0;

	if (spec && !want_type(c, spec, YAML_MAPPING_NODE, "spec"))
		return -1;
	p = model_grow(cfg->pas, &cfg->npas, sizeof(*p));
	if (!p)
		return -ENOMEM;
	cfg->pas = p;
	p = &cfg->pas[cfg->npas - 1];
	p->name = m->name;
	p->ns = m->ns;
	m->name = m->ns = NULL;
	pos_of(c, root, &p->pos);
	p->digest = c->digest;
	pp.ns = p->ns;
	pp.warn = &p->warnings;
	pp.nwarn = &p->nwarnings;
	if (spec)
		check_keys(c, spec, "spec", keys);
	parse_selector(c, spec, &has_sel, &p->selector);
	/* an empty matchLabels selects the namespace, as istiod reads it */
	p->has_selector = p->selector.n > 0;
	parse_mtls(c, map_get(c, spec, "mtls"), "spec.mtls", &p->mode);

	n = map_get(c, spec, "portLevelMtls");
	if (n && want_type(c, n, YAML_MAPPING_NODE, "spec.portLevelMtls")) {
		yaml_node_pair_t *pr;

		if (!p->has_selector)
			err_at(c, n, "spec.portLevelMtls: needs a workload selector (Istio rejects port-level mTLS in a namespace- or mesh-wide PeerAuthentication)");
		if (n->data.mapping.pairs.start == n->data.mapping.pairs.top)
			err_at(c, n, "spec.portLevelMtls: if set, must have at least one port");
		for (pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
			yaml_node_t *kn = ynode(c, pr->key);
			struct cfg_pa_port *pt;
			unsigned long port;
			char path[96];

			snprintf(path, sizeof(path), "spec.portLevelMtls.%s",
				 scalar(kn) ? scalar(kn) : "?");
			if (parse_uint(c, kn, path, 1, 65535, &port))
				continue;
			for (size_t i = 0; i < p->nports; i++)
				if (p->ports[i].port == port)
					err_at(c, kn, "%s: port %lu is listed twice", path, port);
			pt = model_grow(p->ports, &p->nports, sizeof(*pt));
			if (!pt)
				return -ENOMEM;
			p->ports = pt;
			pt = &p->ports[p->nports - 1];
			pt->port = (uint16_t)port;
			pos_of(c, kn, &pt->pos);
			if (!ynode(c, pr->value) || is_null(ynode(c, pr->value)))
				err_at(c, kn, "%s: needs {mode: ...}", path);
			else
				parse_mtls(c, ynode(c, pr->value), path, &pt->mode);
		}
		if (p->nports)
			qsort(p->ports, p->nports, sizeof(*p->ports), pa_port_cmp);
	}

	sel = map_get(c, spec, "selector");
	if (p->has_selector && !strcmp(p->ns, c->root_ns)) {
		p->ignored = 1;
		pol_warn(&pp, sel, "a selector in the root namespace %s is ignored: the policy applies to no workload (as in Istio)",
			 c->root_ns);
	}
	if (p->mode == PA_DISABLE)
		pol_warn(&pp, map_get(c, spec, "mtls"), "mtls.mode DISABLE acts as PERMISSIVE in ambient: mTLS is accepted as well as plaintext");
	if (pp.nomem)
		return -ENOMEM;
	if (c->diag->nerrors != errs)
		return -1;
	return 0;
}



static int parse_doc(struct doc_ctx *c)
{
	/* status: as `kubectl get -o yaml` prints it, ignored */
	static const char *const doc_keys[] = {
		"apiVersion", "kind", "metadata", "spec", "status", NULL
	};
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
	check_keys(c, root, "document", doc_keys);
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
	else if (!strcmp(kind, "AuthorizationPolicy"))
		rc = parse_authz(c, root, &m);
	else
		rc = parse_peerauthn(c, root, &m);
out:
	free(m.name);
	free(m.ns);
	return rc;
}

/* --- parse results, shared ----------------------------------------------- */

/*
 * A reload parses only the documents that changed. What a run of documents
 * of one file parses to (its objects and its messages) is a unit; a unit
 * never changes once made, and the cache and every config built from it
 * hold references to it, so a config stays a valid snapshot, readable from
 * any thread, while the cache moves on. What the checks of the whole config
 * derive (endpoints of selectors, PeerAuthentication conversions and their
 * warnings, indexes) is made again for each config, in its own memory.
 */
struct cfg_path {
	long refs;
	char s[];		/* positions point here */
};

struct cfg_unit {
	long refs;
	struct cfg_path *path;
	struct cfg_objects part;
	struct cfg_diag diag;	/* its messages, in order */
	int yaml_error;		/* ends in malformed YAML: the file stops */
};

/* What a config holds of the shared results. */
struct cfg_refs {
	struct cfg_unit **units;
	size_t nunits;
	struct cfg_path **paths;	/* cfg->files point into these */
	size_t npaths;
};

static void ref_get(long *refs)
{
	__atomic_add_fetch(refs, 1, __ATOMIC_RELAXED);
}

/* Drops a reference; 1 when it was the last. */
static int ref_put(long *refs)
{
	return __atomic_sub_fetch(refs, 1, __ATOMIC_ACQ_REL) == 0;
}

static struct cfg_path *path_new(const char *s)
{
	size_t n = strlen(s) + 1;
	struct cfg_path *p = malloc(sizeof(*p) + n);

	if (!p)
		return NULL;
	p->refs = 1;
	memcpy(p->s, s, n);
	return p;
}

static void path_put(struct cfg_path *p)
{
	if (p && ref_put(&p->refs))
		free(p);
}


static struct cfg_unit *unit_new(struct cfg_path *path)
{
	struct cfg_unit *u = calloc(1, sizeof(*u));

	if (!u)
		return NULL;
	u->refs = 1;
	ref_get(&path->refs);
	u->path = path;
	return u;
}

static void unit_put(struct cfg_unit *u)
{
	if (!u || !ref_put(&u->refs))
		return;
	model_objects_free(&u->part);
	diag_free(&u->diag);
	path_put(u->path);
	free(u);
}

/* Drops what a config held of the cache (model_hold). */
static void refs_release(void *held)
{
	struct cfg_refs *r = held;

	for (size_t i = 0; i < r->nunits; i++)
		unit_put(r->units[i]);
	for (size_t i = 0; i < r->npaths; i++)
		path_put(r->paths[i]);
	free(r->units);
	free(r->paths);
	free(r);
}

/* --- the cache ------------------------------------------------------------ */

/* A run of a file's lines that holds at most one document. */
struct cfg_chunk {
	size_t off, len;	/* bytes of the file's text */
	unsigned int line0;	/* lines before it */
	int kept;		/* taken over from the last read */
	uint64_t hash[2];	/* of its text */
	struct cfg_unit *unit;	/* NULL: no document in it */
};

/* A file as it was last read. */
struct cfg_fstate {
	struct cfg_path *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
	int64_t read_at;	/* CLOCK_REALTIME (ns) before the read */
	struct cfg_chunk *chunks;	/* in order, covering the text */
	size_t nchunks;
};

struct cfg_cache {
	char *root_ns;		/* the units depend on it */
	size_t max_doc;		/* and on this: the cap of a document */
	struct cfg_fstate *files;
	size_t nfiles;
	struct keyidx bypath;	/* path -> index in files */
	char *buf;		/* where files are read, kept for the next */
	size_t bufcap;
};

static void fstate_free(struct cfg_fstate *f)
{
	for (size_t i = 0; i < f->nchunks; i++)
		unit_put(f->chunks[i].unit);
	free(f->chunks);
	path_put(f->path);
	memset(f, 0, sizeof(*f));
}

static void cache_files_free(struct cfg_cache *c)
{
	for (size_t i = 0; i < c->nfiles; i++)
		fstate_free(&c->files[i]);
	free(c->files);
	c->files = NULL;
	c->nfiles = 0;
	keyidx_free(&c->bypath);
}

struct cfg_cache *cfg_cache_new(void)
{
	return calloc(1, sizeof(struct cfg_cache));
}

static void buf_free(struct cfg_cache *c);

void cfg_cache_free(struct cfg_cache *c)
{
	if (!c)
		return;
	cache_files_free(c);
	free(c->root_ns);
	buf_free(c);
	free(c);
}

static int64_t ts_ns(struct timespec t)
{
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/*
 * Whether the file F describes is still what F read, going by its stat:
 * same inode, size and times. A change made in the same clock tick as the
 * read could keep every time the same, so a file changed (ctime) less than
 * a second before it was read is always read again and compared.
 */
static int fstate_current(const struct cfg_fstate *f, const struct stat *st)
{
	return f->dev == st->st_dev && f->ino == st->st_ino && f->size == st->st_size &&
	       ts_ns(f->mtime) == ts_ns(st->st_mtim) && ts_ns(f->ctime) == ts_ns(st->st_ctim) &&
	       ts_ns(f->ctime) + 1000000000 <= f->read_at;
}

static uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t fmix64(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	return k ^ (k >> 33);
}

/* MurmurHash3's x64 128-bit mix (the tail zero-padded to a block): a
 * chunk counts as unchanged when length, first line and this agree. */
static void hash128(const char *p, size_t len, uint64_t out[2])
{
	const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
	uint64_t h1 = 0, h2 = 0;

	for (size_t i = 0; i < len; i += 16) {
		uint64_t k[2] = { 0, 0 };

		memcpy(k, p + i, len - i < 16 ? len - i : 16);
		h1 ^= rotl64(k[0] * c1, 31) * c2;
		h1 = (rotl64(h1, 27) + h2) * 5 + 0x52dce729;
		h2 ^= rotl64(k[1] * c2, 33) * c1;
		h2 = (rotl64(h2, 31) + h1) * 5 + 0x38495ab5;
	}
	h1 ^= len;
	h2 ^= len;
	h1 += h2;
	h2 += h1;
	h1 = fmix64(h1);
	h2 = fmix64(h2);
	out[0] = h1 + h2;
	out[1] = h2 + h1 + h2;
}

static int blankz_at(const char *p, const char *end)
{
	return p == end || *p == ' ' || *p == '\t' || *p == '\n';
}

/*
 * Cuts TEXT into chunks at its "---" lines, so that each can be parsed
 * alone: libyaml ends a document at "---" in column 0 whatever it is in
 * (or fails, and then the file is parsed whole). Texts where a part could
 * parse differently alone are not cut (the whole is one chunk): other line
 * breaks than LF (lines would be counted differently), NUL, UTF-16,
 * directives ("%") and "..." lines (a document that goes on after them).
 * Returns 0 or -ENOMEM.
 */
static int chunks_find(const char *text, size_t len, struct cfg_chunk **out, size_t *n)
{
	const unsigned char *u = (const unsigned char *)text;
	const char *p = text, *end = text + len;
	struct cfg_chunk *ch = NULL;
	unsigned int line = 0;
	size_t nch = 0;
	int cut = !(len >= 2 && ((u[0] == 0xfe && u[1] == 0xff) || (u[0] == 0xff && u[1] == 0xfe))) &&
		  !memchr(text, 0, len) && !memchr(text, '\r', len);

	/* NEL (C2 85), LS and PS (E2 80 A8/A9) are line breaks to libyaml */
	for (const char *q = text; cut && (q = memchr(q, 0xc2, (size_t)(end - q))); q++)
		cut = !(end - q >= 2 && (unsigned char)q[1] == 0x85);
	for (const char *q = text; cut && (q = memchr(q, 0xe2, (size_t)(end - q))); q++)
		cut = !(end - q >= 3 && (unsigned char)q[1] == 0x80 &&
			((unsigned char)q[2] == 0xa8 || (unsigned char)q[2] == 0xa9));

	if (!(ch = model_grow(NULL, &nch, sizeof(*ch))))
		return -ENOMEM;
	if (len >= 3 && !memcmp(p, "\xef\xbb\xbf", 3))
		p += 3;
	while (cut && p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t left = (size_t)(end - p);

		if (*p == '%' || (left >= 3 && !memcmp(p, "...", 3) && blankz_at(p + 3, end))) {
			nch = 1;
			break;
		}
		if (line && left >= 3 && !memcmp(p, "---", 3) && blankz_at(p + 3, end)) {
			struct cfg_chunk *c = model_grow(ch, &nch, sizeof(*ch));

			if (!c) {
				free(ch);
				return -ENOMEM;
			}
			ch = c;
			ch[nch - 1].off = (size_t)(p - text);
			ch[nch - 1].line0 = line;
		}
		if (!nl)
			break;
		p = nl + 1;
		line++;
	}
	for (size_t i = 0; i < nch; i++)
		ch[i].len = (i + 1 < nch ? ch[i + 1].off : len) - ch[i].off;
	*out = ch;
	*n = nch;
	return 0;
}

/* --- what a document may not do ---------------------------------------- */

/* Aliases named at most this many times per document, then counted. */
#define ALIAS_MSGS_MAX	3

struct anchor_pos {
	char *name;
	unsigned int line, col;
};

/*
 * Names every alias of the document DOC, whose text is TEXT (LEN bytes,
 * the document alone, from its first line). libyaml keeps no trace of an
 * alias in the loaded document (it points to the anchored node itself), so
 * the text is read again as events, which carry the alias and its
 * position. Only done for a document known to hold one.
 */
static void aliases_report(struct doc_ctx *c, const yaml_document_t *doc,
			   const char *text, size_t len)
{
	unsigned int line0 = c->line0 + (unsigned int)doc->start_mark.line;
	unsigned int col0 = (unsigned int)doc->start_mark.column;
	struct anchor_pos *anchors = NULL;
	size_t nanchors = 0, naliases = 0;
	yaml_parser_t parser;
	yaml_event_t ev;

	if (!yaml_parser_initialize(&parser)) {
		diag_add(c->diag, 1, NULL, "out of memory while reading %s", c->file);
		return;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	while (yaml_parser_parse(&parser, &ev)) {
		const yaml_char_t *anchor = NULL;
		yaml_event_type_t type = ev.type;
		struct cfg_pos p = {
			.file = c->file,
			.line = line0 + (unsigned int)ev.start_mark.line + 1,
			.col = (ev.start_mark.line ? 0 : col0) +
			       (unsigned int)ev.start_mark.column + 1,
		};

		if (type == YAML_SCALAR_EVENT)
			anchor = ev.data.scalar.anchor;
		else if (type == YAML_SEQUENCE_START_EVENT)
			anchor = ev.data.sequence_start.anchor;
		else if (type == YAML_MAPPING_START_EVENT)
			anchor = ev.data.mapping_start.anchor;
		if (anchor) {
			struct anchor_pos *a = model_grow(anchors, &nanchors, sizeof(*a));

			if (a) {
				anchors = a;
				a[nanchors - 1].name = strdup((const char *)anchor);
				a[nanchors - 1].line = p.line;
				a[nanchors - 1].col = p.col;
			}
		}
		if (type == YAML_ALIAS_EVENT && naliases++ < ALIAS_MSGS_MAX) {
			const char *name = (const char *)ev.data.alias.anchor;
			const struct anchor_pos *a = NULL;

			/* the latest anchor of that name is the one meant */
			for (size_t i = nanchors; i-- && !a;)
				if (anchors[i].name && !strcmp(anchors[i].name, name))
					a = &anchors[i];
			diag_add(c->diag, 1, &p,
				 "YAML alias \"*%s\" (of the anchor &%s at %u:%u) is not accepted: "
				 "aliases let a small file expand into a huge config; write the "
				 "value out in full instead",
				 name, name, a ? a->line : 0, a ? a->col : 0);
		}
		yaml_event_delete(&ev);
		if (type == YAML_STREAM_END_EVENT || type == YAML_DOCUMENT_END_EVENT)
			break;
	}
	yaml_parser_delete(&parser);
	for (size_t i = 0; i < nanchors; i++)
		free(anchors[i].name);
	free(anchors);
	if (naliases > ALIAS_MSGS_MAX) {
		err_at(c, yaml_document_get_root_node((yaml_document_t *)doc),
		       "this document has %zu more YAML aliases, not accepted either",
		       naliases - ALIAS_MSGS_MAX);
	} else if (!naliases) {
		/* not found in the text alone: still refused */
		err_at(c, yaml_document_get_root_node((yaml_document_t *)doc),
		       "this document uses YAML aliases, which are not accepted: write "
		       "the values out in full instead");
	}
}

/*
 * What a document may not be, checked before it is read: bigger than
 * MAX_DOC bytes, or holding YAML aliases or merge keys ("<<"), with which
 * a few bytes can stand for a huge config. TEXT is what the parser read
 * (the document's marks index it). Returns 0 when the document may be
 * read, -1 (the errors in C's diag) when not.
 */
static int doc_check(struct doc_ctx *c, yaml_document_t *doc, const char *text,
		     size_t max_doc)
{
	size_t start = doc->start_mark.index, end = doc->end_mark.index;
	size_t nnodes = (size_t)(doc->nodes.top - doc->nodes.start), nrefs = 0;
	int bad = 0;

	if (end - start > max_doc) {
		err_at(c, yaml_document_get_root_node(doc),
		       "this document is %zu bytes, more than the %zu allowed for one "
		       "document: split it into smaller documents",
		       end - start, max_doc);
		return -1;
	}
	/* Without aliases every node but the root is the child of exactly
	 * one node: any more references are aliases. */
	for (yaml_node_t *n = doc->nodes.start; n < doc->nodes.top; n++) {
		if (n->type == YAML_SEQUENCE_NODE) {
			nrefs += (size_t)(n->data.sequence.items.top -
					  n->data.sequence.items.start);
			continue;
		}
		if (n->type != YAML_MAPPING_NODE)
			continue;
		nrefs += 2 * (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
		for (yaml_node_pair_t *p = n->data.mapping.pairs.start;
		     p < n->data.mapping.pairs.top; p++) {
			yaml_node_t *k = ynode(c, p->key);

			if (k && k->type == YAML_SCALAR_NODE &&
			    k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
			    !strcmp((const char *)k->data.scalar.value, "<<")) {
				err_at(c, k, "YAML merge key \"<<\" is not accepted: write the "
				       "merged fields out in this map instead");
				bad = 1;
			}
		}
	}
	if (nnodes && nrefs > nnodes - 1) {
		aliases_report(c, doc, text + start, end - start);
		bad = 1;
	}
	return bad ? -1 : 0;
}

/*
 * Parses the text of chunks CH[0..N) with one parser; each document goes
 * to the unit of the chunk it starts in (made here, left in CH). With
 * WHOLE (N is 1: the whole file), a YAML error is reported in that unit
 * and ends the file, as in any YAML parser. Without, a YAML error returns
 * -EAGAIN: a part parsed alone may fail differently from the whole file,
 * which must be parsed whole then. Returns 0 or a negative errno.
 */
static int parse_chunks(const char *text, struct cfg_chunk *ch, size_t n, int whole,
			struct cfg_path *path, const struct cfg_cache *cache)
{
	size_t off = ch[0].off, len = ch[n - 1].off + ch[n - 1].len - off, k = 0, ndocs = 0;
	yaml_parser_t parser;
	yaml_document_t doc;
	struct doc_ctx c = { .doc = &doc, .file = path->s, .line0 = ch[0].line0 };
	int rc = 0;

	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text + off, len);
	for (;;) {
		if (!yaml_parser_load(&parser, &doc)) {
			struct cfg_pos p = {
				.file = path->s,
				.line = ch[0].line0 + (unsigned int)parser.problem_mark.line + 1,
				.col = (unsigned int)parser.problem_mark.column + 1,
			};

			if (!whole) {
				rc = -EAGAIN;
				break;
			}
			if (!ch[0].unit && !(ch[0].unit = unit_new(path))) {
				rc = -ENOMEM;
				break;
			}
			diag_add(&ch[0].unit->diag, 1, &p, "malformed YAML: %s%s%s",
				 parser.problem ? parser.problem : "syntax error",
				 parser.context ? " " : "", parser.context ? parser.context : "");
			ch[0].unit->yaml_error = 1;
			break;
		}
		if (!yaml_document_get_root_node(&doc)) {
			yaml_document_delete(&doc);	/* end of stream */
			break;
		}
		while (k + 1 < n && ch[k + 1].line0 <= ch[0].line0 + doc.start_mark.line)
			k++;
		if (!ch[k].unit && !(ch[k].unit = unit_new(path))) {
			yaml_document_delete(&doc);
			rc = -ENOMEM;
			break;
		}
		/* a chunk holds one document; a file parsed whole, many */
		c.digest = ch[k].hash[0] ^ (whole ? ++ndocs * 0x9e3779b97f4a7c15ULL : 0);
		c.diag = &ch[k].unit->diag;
		c.cfg = &ch[k].unit->part;
		c.root_ns = cache->root_ns;	/* lent for the parse */
		if (!doc_check(&c, &doc, text + off, cache->max_doc) &&
		    parse_doc(&c) == -ENOMEM)
			rc = -ENOMEM;
		yaml_document_delete(&doc);
		if (rc)
			break;
	}
	yaml_parser_delete(&parser);
	return rc;
}

/*
 * Grows the cache's read buffer to NEED bytes or more. It holds a whole
 * file and lives as long as the cache: megabytes are mapped with
 * transparent huge pages where the kernel allows them (madvise mode), a
 * few page faults instead of one per 4 KiB. Returns 0 or -ENOMEM.
 */
static int buf_room(struct cfg_cache *c, size_t need)
{
	size_t cap = c->bufcap ? c->bufcap : 65536;
	void *p;

	while (cap < need)
		cap *= 2;
	if (cap == c->bufcap)
		return 0;
	p = c->buf ? mremap(c->buf, c->bufcap, cap, MREMAP_MAYMOVE) :
		     mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	if (cap >= (4 << 20))
		madvise(p, cap, MADV_HUGEPAGE);
	c->buf = p;
	c->bufcap = cap;
	return 0;
}

static void buf_free(struct cfg_cache *c)
{
	if (c->buf)
		munmap(c->buf, c->bufcap);
	c->buf = NULL;
	c->bufcap = 0;
}

/* Reads all of FD into the cache's buffer (SIZE is a hint); *LEN bytes.
 * -EFBIG when there are more than MAX (then *LEN is how many were read). */
static int read_all(struct cfg_cache *c, int fd, size_t size, size_t max, size_t *len)
{
	size_t n = 0;

	for (;;) {
		ssize_t r;

		if (n > max) {
			*len = n;
			return -EFBIG;
		}

		if ((n + 1 >= c->bufcap || size + 1 > c->bufcap) &&
		    buf_room(c, n + 1 >= size + 1 ? 2 * (n + 1) : size + 1))
			return -ENOMEM;
		r = read(fd, c->buf + n, c->bufcap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (!r)
			break;
		n += (size_t)r;
	}
	c->buf[n] = 0;
	*len = n;
	return 0;
}

/* One load in progress. */
struct load_ctx {
	struct config *cfg;
	struct cfg_refs *refs;		/* what CFG holds of the cache */
	struct cfg_diag *diag;
	struct cfg_cache *old;		/* what the last load saw */
	struct cfg_fstate *next;	/* what this one sees: the next cache */
	size_t nnext;
	size_t max_file;		/* the cap of a file, in bytes */
};

/* The message for file NAME, bigger than MAX bytes (SIZE, or more). */
static void too_big(struct load_ctx *lc, const char *name, size_t size)
{
	diag_add(lc->diag, 1, NULL,
		 "%s: %s%zu bytes, more than the %zu allowed for one config file: split it "
		 "into several files of a config folder", name, size > lc->max_file ? "" :
		 "more than ", size, lc->max_file);
}

/* Appends copies of FROM's messages to D. Returns 0 or -ENOMEM. */
static int diag_append(struct cfg_diag *d, const struct cfg_diag *from)
{
	char **msgs;

	if (!from->n && !from->nerrors && !from->nwarnings)
		return 0;
	d->nerrors += from->nerrors;
	d->nwarnings += from->nwarnings;
	if (!from->n)
		return 0;
	if (!(msgs = realloc(d->msgs, (d->n + from->n) * sizeof(*msgs))))
		return -ENOMEM;
	d->msgs = msgs;
	for (size_t i = 0; i < from->n; i++)
		if ((d->msgs[d->n] = strdup(from->msgs[i])))
			d->n++;
	return 0;
}

/*
 * The parse of TEXT (LEN bytes), the content of file F (F->path set): the
 * units of chunks whose text (length and hash) is what the last read of the
 * file (OLD, may be NULL) had at the same line are taken over, the other
 * chunks parsed. Returns 0 or -ENOMEM.
 */
static int fstate_parse(struct cfg_fstate *f, const char *text, size_t len,
			struct cfg_fstate *old, const struct cfg_cache *cache)
{
	size_t j = 0;
	int rc;

	if ((rc = chunks_find(text, len, &f->chunks, &f->nchunks)))
		return rc;
	for (size_t i = 0; i < f->nchunks; i++)
		hash128(text + f->chunks[i].off, f->chunks[i].len, f->chunks[i].hash);
	for (size_t i = 0; old && i < f->nchunks; i++) {
		struct cfg_chunk *c = &f->chunks[i], *o;

		while (j < old->nchunks && old->chunks[j].line0 < c->line0)
			j++;
		if (j == old->nchunks)
			break;
		o = &old->chunks[j];
		/* a unit that ends in a YAML error stands only for the
		 * whole file it was parsed with */
		if (o->line0 != c->line0 || o->len != c->len ||
		    (o->unit && o->unit->yaml_error && f->nchunks > 1) ||
		    memcmp(o->hash, c->hash, sizeof(c->hash)))
			continue;
		c->unit = o->unit;
		c->kept = 1;
		o->unit = NULL;
	}
	/* runs of chunks that changed, each with one parser */
	for (size_t i = 0, e; i < f->nchunks && !rc; i = e) {
		for (e = i + 1; e < f->nchunks && f->chunks[e].kept == f->chunks[i].kept; e++)
			;
		if (!f->chunks[i].kept)
			rc = parse_chunks(text, &f->chunks[i], e - i, 0, f->path, cache);
	}
	if (rc != -EAGAIN)
		return rc;
	/* Parsed whole, as one unit. */
	for (size_t i = 0; i < f->nchunks; i++)
		unit_put(f->chunks[i].unit);
	f->nchunks = 1;
	f->chunks[0] = (struct cfg_chunk){ .off = 0, .len = len };
	hash128(text, len, f->chunks[0].hash);
	return parse_chunks(text, f->chunks, 1, 1, f->path, cache);
}

/* Adds the file F to the config: its path, its units and their messages. */
static int config_take(struct load_ctx *lc, const struct cfg_fstate *f)
{
	struct config *cfg = lc->cfg;
	struct cfg_refs *r = lc->refs;
	char **files;
	void *p;

	if (!(files = model_grow(cfg->files, &cfg->nfiles, sizeof(*files))))
		return -ENOMEM;
	cfg->files = files;
	if (!(p = model_grow(r->paths, &r->npaths, sizeof(*r->paths)))) {
		cfg->nfiles--;
		return -ENOMEM;
	}
	r->paths = p;
	ref_get(&f->path->refs);
	r->paths[r->npaths - 1] = f->path;
	files[cfg->nfiles - 1] = f->path->s;
	for (size_t i = 0; i < f->nchunks; i++) {
		struct cfg_unit *u = f->chunks[i].unit;

		if (!u)
			continue;
		if (!(p = model_grow(r->units, &r->nunits, sizeof(*r->units))))
			return -ENOMEM;
		r->units = p;
		ref_get(&u->refs);
		r->units[r->nunits - 1] = u;
		if (diag_append(lc->diag, &u->diag))
			return -ENOMEM;
	}
	return 0;
}

static int load_file(struct load_ctx *lc, const char *name)
{
	long oi = keyidx_get(&lc->old->bypath, name, strlen(name));
	struct cfg_fstate *old = oi < 0 ? NULL : &lc->old->files[oi];
	struct cfg_fstate f = {}, *next;
	struct timespec now;
	struct stat st;
	size_t len = 0;
	int fd, rc;

	fd = open(name, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		rc = -errno;
		diag_add(lc->diag, 1, NULL, "%s: cannot open: %s", name, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	if (old && fstate_current(old, &st)) {
		close(fd);
		f = *old;	/* taken over whole */
		memset(old, 0, sizeof(*old));
		goto out;
	}
	if (st.st_size > 0 && (uint64_t)st.st_size > lc->max_file) {
		close(fd);
		too_big(lc, name, (size_t)st.st_size);
		return -EFBIG;
	}
	f.dev = st.st_dev;
	f.ino = st.st_ino;
	f.size = st.st_size;
	f.mtime = st.st_mtim;
	f.ctime = st.st_ctim;
	clock_gettime(CLOCK_REALTIME, &now);
	f.read_at = ts_ns(now);
	rc = read_all(lc->old, fd, st.st_size > 0 ? (size_t)st.st_size : 0, lc->max_file, &len);
	close(fd);
	if (rc == -EFBIG) {
		too_big(lc, name, len);
		return rc;
	}
	if (rc) {
		diag_add(lc->diag, 1, NULL, "%s: cannot read: %s", name, strerror(-rc));
		return rc;
	}
	if (old) {
		f.path = old->path;
		old->path = NULL;
	} else if (!(f.path = path_new(name))) {
		return -ENOMEM;
	}
	rc = fstate_parse(&f, lc->old->buf, len, old, lc->old);
	if (rc) {
		fstate_free(&f);
		return rc;
	}
out:
	if (!(next = model_grow(lc->next, &lc->nnext, sizeof(*next)))) {
		fstate_free(&f);
		return -ENOMEM;
	}
	lc->next = next;
	next[lc->nnext - 1] = f;
	rc = config_take(lc, &next[lc->nnext - 1]);
	if (rc)
		return rc;
	for (size_t i = 0; i < f.nchunks; i++)
		if (f.chunks[i].unit && f.chunks[i].unit->yaml_error)
			return -EINVAL;
	return 0;
}

/* The units' objects, lent to the model in order. */
static int objects_gather(struct config *cfg, const struct cfg_refs *r)
{
	const struct cfg_objects **parts = calloc(r->nunits + 1, sizeof(*parts));
	int err;

	if (!parts)
		return -ENOMEM;
	for (size_t i = 0; i < r->nunits; i++)
		parts[i] = &r->units[i]->part;
	err = model_lend_all(cfg, parts, r->nunits) ? -ENOMEM : 0;
	free(parts);
	return err;
}

static int yaml_name(const struct dirent *d)
{
	size_t n = strlen(d->d_name);

	if (d->d_name[0] == '.')
		return 0;
	return (n > 5 && !strcmp(d->d_name + n - 5, ".yaml")) ||
	       (n > 4 && !strcmp(d->d_name + n - 4, ".yml"));
}


int config_load(const char *path, struct config **out, struct cfg_diag *diag)
{
	return config_load_cached(path, NULL, NULL, out, diag);
}

int config_load_opts(const char *path, const struct cfg_opts *opts,
		     struct config **out, struct cfg_diag *diag)
{
	return config_load_cached(path, opts, NULL, out, diag);
}

/* The files LC saw become the cache; those it did not see are dropped. */
static int cache_replace(struct cfg_cache *c, struct load_ctx *lc)
{
	cache_files_free(c);
	c->files = lc->next;
	c->nfiles = lc->nnext;
	lc->next = NULL;
	lc->nnext = 0;
	for (size_t i = 0; i < c->nfiles; i++) {
		const char *p = c->files[i].path->s;

		if (keyidx_put(&c->bypath, p, strlen(p), i) < 0) {
			cache_files_free(c);
			return -ENOMEM;
		}
	}
	return 0;
}

int config_load_cached(const char *path, const struct cfg_opts *opts,
		       struct cfg_cache *cache, struct config **out,
		       struct cfg_diag *diag)
{
	struct config *cfg = model_new(opts ? opts->root_ns : NULL,
				       opts ? opts->trust_domain : NULL);
	struct cfg_refs *refs = calloc(1, sizeof(*refs));
	struct load_ctx lc = {
		.cfg = cfg, .refs = refs, .diag = diag,
		.max_file = opts && opts->max_file_bytes ? opts->max_file_bytes :
			    CFG_DEFAULT_MAX_FILE_BYTES,
	};
	size_t max_doc = opts && opts->max_doc_bytes ? opts->max_doc_bytes :
			 CFG_DEFAULT_MAX_DOC_BYTES;
	struct dirent **ents = NULL;
	struct cfg_cache tmp = {};
	struct stat st;
	int rc = 0, n;

	if (!cfg || !refs) {
		config_free(cfg);
		free(refs);
		return -ENOMEM;
	}
	model_hold(cfg, refs, refs_release);
	if (!cache)
		cache = &tmp;
	if (!cache->root_ns || strcmp(cache->root_ns, cfg->root_ns) ||
	    cache->max_doc != max_doc) {
		/* what was parsed depends on the root namespace and the cap */
		cache->max_doc = max_doc;
		cache_files_free(cache);
		free(cache->root_ns);
		if (!(cache->root_ns = strdup(cfg->root_ns))) {
			rc = -ENOMEM;
			goto out;
		}
	}
	lc.old = cache;
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
				int r = load_file(&lc, f);

				if (r == -ENOMEM)
					rc = r;
			}
			free(f);
			free(ents[i]);
		}
		free(ents);
	} else {
		rc = load_file(&lc, path);
		if (rc != -ENOMEM)
			rc = 0;
	}
	if (!rc)
		rc = cache_replace(cache, &lc);
	if (!rc)
		rc = objects_gather(cfg, refs);
	if (!rc)
		rc = model_finish(cfg, diag);
	if (!rc && diag->nerrors)
		rc = -EINVAL;
out:
	for (size_t i = 0; i < lc.nnext; i++)
		fstate_free(&lc.next[i]);
	free(lc.next);
	if (rc == -ENOMEM)
		cache_files_free(cache);	/* it lent files to this load */
	if (cache == &tmp) {
		cache_files_free(&tmp);
		free(tmp.root_ns);
		buf_free(&tmp);
	}
	if (rc) {
		config_free(cfg);
		return rc;
	}
	*out = cfg;
	return 0;
}


/* --- one object from elsewhere ------------------------------------------ */

int config_parse_object(const char *text, size_t len, const char *label,
			const char *root_ns, const char *only_kind,
			struct cfg_objects *out, struct cfg_diag *diag)
{
	struct doc_ctx c = { .file = label, .diag = diag, .cfg = out,
			     .root_ns = root_ns ? root_ns : CFG_DEFAULT_ROOT_NS };
	yaml_parser_t parser;
	yaml_document_t doc;
	int rc = 0;

	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		struct cfg_pos p = {
			.file = label,
			.line = (unsigned int)parser.problem_mark.line + 1,
			.col = (unsigned int)parser.problem_mark.column + 1,
		};

		diag_add(diag, 1, &p, "malformed document: %s",
			 parser.problem ? parser.problem : "syntax error");
		yaml_parser_delete(&parser);
		return -EINVAL;
	}
	c.doc = &doc;
	{
		uint64_t h[2];

		hash128(text, len, h);
		c.digest = h[0];
	}
	if (only_kind) {
		yaml_node_t *root = yaml_document_get_root_node(&doc);
		const char *kind = root && root->type == YAML_MAPPING_NODE ?
				   scalar(map_get(&c, root, "kind")) : NULL;

		if (!kind || strcmp(kind, only_kind)) {
			err_at(&c, root, "kind: expected %s", only_kind);
			rc = -EINVAL;
		}
	}
	if (!rc && !doc_check(&c, &doc, text, CFG_DEFAULT_MAX_DOC_BYTES))
		rc = parse_doc(&c);
	else if (!rc)
		rc = -EINVAL;
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc == -ENOMEM ? rc : rc ? -EINVAL : 0;
}
