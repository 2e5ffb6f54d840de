// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skmesh-cni's parsing and validation (see cni.h). The CNI spec 1.0.0 is
 * followed to the letter: ADD and CHECK need prevResult (this plugin only
 * ever runs chained), CNI_NETNS is optional only for DEL, CHECK does not
 * exist before 0.4.0, and the result keeps the config's cniVersion.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skmesh-cni.h"
#include "cni.h"
#include "cnicheck.h"

#define ARGS_MAX	4096
#define PATH_ENV_MAX	4096
#define NAME_MAX_LEN	253	/* the network's name */
#define PREV_LIST_MAX	64	/* interfaces and ips in prevResult */

static const char *const versions[] = CNI_VERSIONS;

/* Keys the spec defines for a plugin's config (the runtime may add any of
 * them), and this plugin's own. Anything else is refused (code 2). */
static const char *const spec_keys[] = {
	"cniVersion", "name", "type", "args", "ipMasq", "ipam", "dns",
	"capabilities", "runtimeConfig", "prevResult",
};
static const char *const own_keys[] = { "socket", "pendingDir", "logFile", "ackTimeoutMs" };

__attribute__((format(printf, 3, 4)))
static int fail(struct cni_err *e, int code, const char *fmt, ...)
{
	va_list ap;

	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return code;
}

bool cni_version_ok(const char *v)
{
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
		if (!strcmp(v, versions[i]))
			return true;
	return false;
}

const char *cni_cmd_name(enum cni_cmd cmd)
{
	switch (cmd) {
	case CNI_CMD_ADD: return "ADD";
	case CNI_CMD_DEL: return "DEL";
	case CNI_CMD_CHECK: return "CHECK";
	case CNI_CMD_VERSION: return "VERSION";
	}
	return "?";
}

/* CNI_ARGS: "K=V;K=V". K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID
 * are read (all three or none), each at most once; other keys are the
 * runtime's business. */
static int parse_args(const char *args, struct cni_call *c, struct cni_err *e)
{
	static const char *const keys[] = { "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID" };
	char *dst[] = { c->pod_ns, c->pod_name, c->pod_uid };
	size_t cap[] = { sizeof(c->pod_ns), sizeof(c->pod_name), sizeof(c->pod_uid) };
	bool seen[3] = {};
	const char *p = args;
	char ex[48];
	int nseen = 0;

	if (strlen(args) > ARGS_MAX)
		return fail(e, CNI_ERR_ENV, "CNI_ARGS is longer than %d bytes", ARGS_MAX);
	while (*p) {
		size_t len = strcspn(p, ";");
		const char *eq = memchr(p, '=', len);

		if (!len) {
			p++;
			continue;
		}
		if (!eq || eq == p)
			return fail(e, CNI_ERR_ENV, "CNI_ARGS: \"%.*s\" is not KEY=VALUE",
				    (int)(len > 40 ? 40 : len), cni_excerpt(p, ex, sizeof(ex)));
		for (int k = 0; k < 3; k++) {
			size_t klen = strlen(keys[k]), vlen = len - (size_t)(eq - p) - 1;
			const char *v = eq + 1;
			bool ok;

			if ((size_t)(eq - p) != klen || memcmp(p, keys[k], klen))
				continue;
			if (seen[k])
				return fail(e, CNI_ERR_ENV, "CNI_ARGS: %s given twice", keys[k]);
			ok = k == 0 ? cni_dns_label_ok(v, vlen) : k == 1 ? cni_dns_subdomain_ok(v, vlen)
								 : cni_uid_ok(v, vlen);
			if (!ok || vlen >= cap[k])
				return fail(e, CNI_ERR_ENV, "CNI_ARGS: %s=\"%.*s\" is not a valid %s",
					    keys[k], (int)(vlen > 40 ? 40 : vlen),
					    cni_excerpt(v, ex, sizeof(ex)),
					    k == 0 ? "namespace (DNS-1123 label)"
					    : k == 1 ? "pod name (DNS-1123 subdomain)"
						     : "pod UID (letters, digits and '-')");
			memcpy(dst[k], v, vlen);
			dst[k][vlen] = 0;
			seen[k] = true;
			nseen++;
		}
		p += len;
	}
	if (nseen && nseen < 3) {
		for (int k = 0; k < 3; k++)
			if (!seen[k])
				return fail(e, CNI_ERR_ENV, "CNI_ARGS names a pod but lacks %s "
					    "(K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID go together)",
					    keys[k]);
	}
	c->k8s = nseen == 3;
	return 0;
}

static int parse_env(const struct cni_env *env, struct cni_call *c, struct cni_err *e)
{
	const char *nn = env->netns;
	char ex[48];
	int rc;

	if (!env->containerid || !*env->containerid)
		return fail(e, CNI_ERR_ENV, "CNI_CONTAINERID is not set (%s needs it)",
			    cni_cmd_name(c->cmd));
	if (!cni_name_ok(env->containerid, CNI_CONTAINERID_MAX))
		return fail(e, CNI_ERR_ENV, "CNI_CONTAINERID \"%s\" is not a container id "
			    "(1..%d letters, digits, '_', '.', '-', starting alphanumeric)",
			    cni_excerpt(env->containerid, ex, sizeof(ex)), CNI_CONTAINERID_MAX);
	if (!env->ifname || !*env->ifname)
		return fail(e, CNI_ERR_ENV, "CNI_IFNAME is not set (%s needs it)",
			    cni_cmd_name(c->cmd));
	if (!cni_ifname_ok(env->ifname))
		return fail(e, CNI_ERR_ENV, "CNI_IFNAME \"%s\" is not an interface name "
			    "(1..15 bytes, no '/', ':' or space)",
			    cni_excerpt(env->ifname, ex, sizeof(ex)));
	if ((!nn || !*nn) && c->cmd != CNI_CMD_DEL)
		return fail(e, CNI_ERR_ENV, "CNI_NETNS is not set (%s needs it)",
			    cni_cmd_name(c->cmd));
	if (nn && *nn && !cni_abs_path_ok(nn, CNI_NETNS_MAX))
		return fail(e, CNI_ERR_ENV, "CNI_NETNS \"%s\" is not an absolute path "
			    "(printable, shorter than %d bytes, no . or .. part)",
			    cni_excerpt(nn, ex, sizeof(ex)), CNI_NETNS_MAX);
	if (!env->path)
		return fail(e, CNI_ERR_ENV, "CNI_PATH is not set (%s needs it)",
			    cni_cmd_name(c->cmd));
	if (strlen(env->path) > PATH_ENV_MAX)
		return fail(e, CNI_ERR_ENV, "CNI_PATH is longer than %d bytes", PATH_ENV_MAX);
	if (env->args && (rc = parse_args(env->args, c, e)))
		return rc;
	c->container_id = env->containerid;
	c->netns = nn ? nn : "";
	c->ifname = env->ifname;
	return 0;
}

/* One of the plugin's own path fields: an absolute path shorter than MAX. */
static int own_path(json_t *conf, const char *key, char *dst, size_t max, struct cni_err *e)
{
	json_t *v = json_object_get(conf, key);
	char ex[48];

	if (!v)
		return 0;
	if (!json_is_string(v))
		return fail(e, CNI_ERR_CONFIG, "network config: \"%s\" must be a string", key);
	if (!cni_abs_path_ok(json_string_value(v), max) || strlen(json_string_value(v)) != json_string_length(v))
		return fail(e, CNI_ERR_CONFIG, "network config: \"%s\": \"%s\" is not an absolute "
			    "path (printable, shorter than %zu bytes, no . or .. part)",
			    key, cni_excerpt(json_string_value(v), ex, sizeof(ex)), max);
	snprintf(dst, max, "%s", json_string_value(v));
	return 0;
}

static int parse_own(json_t *conf, struct cni_call *c, struct cni_err *e)
{
	json_t *v;
	int rc;

	snprintf(c->socket, sizeof(c->socket), "%s", SKM_CNI_SOCKET);
	snprintf(c->pending_dir, sizeof(c->pending_dir), "%s", SKM_CNI_PENDING_DIR);
	c->ack_timeout_ms = SKM_CNI_ACK_TIMEOUT_MS;
	if ((rc = own_path(conf, "socket", c->socket, sizeof(c->socket), e)) ||
	    (rc = own_path(conf, "pendingDir", c->pending_dir, sizeof(c->pending_dir), e)) ||
	    (rc = own_path(conf, "logFile", c->log_file, sizeof(c->log_file), e)))
		return rc;
	v = json_object_get(conf, "ackTimeoutMs");
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 120000)
			return fail(e, CNI_ERR_CONFIG, "network config: \"ackTimeoutMs\" must be "
				    "an integer from 1 to 120000 (milliseconds)");
		c->ack_timeout_ms = (int)json_integer_value(v);
	}
	return 0;
}

/* An address of prevResult's ips: "A/LEN", A an IPv4 or IPv6 address and
 * LEN within its family's width. The address alone goes to OUT. */
static bool cidr_ok(const char *s, char *out, size_t outlen)
{
	const char *slash = strchr(s, '/');
	unsigned char buf[16];
	char a[INET6_ADDRSTRLEN], *end;
	size_t n;
	long len;
	int af;

	if (!slash || (n = (size_t)(slash - s)) == 0 || n >= sizeof(a))
		return false;
	memcpy(a, s, n);
	a[n] = 0;
	af = strchr(a, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(af, a, buf) != 1)
		return false;
	if (!isdigit((unsigned char)slash[1]) || strlen(slash + 1) > 3)
		return false;
	errno = 0;
	len = strtol(slash + 1, &end, 10);
	if (*end || errno || len < 0 || len > (af == AF_INET ? 32 : 128))
		return false;
	return inet_ntop(af, buf, out, (socklen_t)outlen) != NULL;
}

/* prevResult of an ADD or CHECK: interfaces (name, optional sandbox) and
 * ips (address, optional interface index into interfaces) are checked;
 * the rest is the previous plugin's and is passed on as it is. */
static int parse_prev(struct cni_call *c, struct cni_err *e)
{
	json_t *ifs = json_object_get(c->prev, "interfaces");
	json_t *ips = json_object_get(c->prev, "ips");
	json_t *v, *x;
	size_t i, nifs = 0;
	char ex[48];

	x = json_object_get(c->prev, "cniVersion");
	if (x && !json_is_string(x))
		return fail(e, CNI_ERR_CONFIG, "prevResult: \"cniVersion\" must be a string");
	if (ifs) {
		if (!json_is_array(ifs) || json_array_size(ifs) > PREV_LIST_MAX)
			return fail(e, CNI_ERR_CONFIG, "prevResult: \"interfaces\" must be an array "
				    "of at most %d interfaces", PREV_LIST_MAX);
		nifs = json_array_size(ifs);
		json_array_foreach(ifs, i, v) {
			json_t *name = json_object_get(v, "name"), *sb = json_object_get(v, "sandbox");

			if (!json_is_object(v) || !json_is_string(name) ||
			    strlen(json_string_value(name)) != json_string_length(name) ||
			    !cni_ifname_ok(json_string_value(name)))
				return fail(e, CNI_ERR_CONFIG, "prevResult: interfaces[%zu] needs a "
					    "\"name\" that is an interface name", i);
			if (sb && !json_is_string(sb))
				return fail(e, CNI_ERR_CONFIG, "prevResult: interfaces[%zu] "
					    "\"sandbox\" must be a string", i);
			if (!sb || !json_string_length(sb))
				json_array_append(c->host_ifs, name);
		}
	}
	if (ips) {
		if (!json_is_array(ips) || json_array_size(ips) > PREV_LIST_MAX)
			return fail(e, CNI_ERR_CONFIG, "prevResult: \"ips\" must be an array of at "
				    "most %d addresses", PREV_LIST_MAX);
		json_array_foreach(ips, i, v) {
			json_t *addr = json_object_get(v, "address"), *idx = json_object_get(v, "interface");
			char a[INET6_ADDRSTRLEN];

			if (!json_is_object(v) || !json_is_string(addr))
				return fail(e, CNI_ERR_CONFIG, "prevResult: ips[%zu] needs an "
					    "\"address\" string", i);
			if (strlen(json_string_value(addr)) != json_string_length(addr) ||
			    !cidr_ok(json_string_value(addr), a, sizeof(a)))
				return fail(e, CNI_ERR_CONFIG, "prevResult: ips[%zu] address \"%s\" is "
					    "not ADDRESS/PREFIX", i,
					    cni_excerpt(json_string_value(addr), ex, sizeof(ex)));
			if (idx && (!json_is_integer(idx) || json_integer_value(idx) < 0 ||
				    (size_t)json_integer_value(idx) >= nifs))
				return fail(e, CNI_ERR_CONFIG, "prevResult: ips[%zu] \"interface\" "
					    "must index prevResult's interfaces (0..%zu)", i,
					    nifs ? nifs - 1 : 0);
			json_array_append_new(c->ips, json_string(a));
		}
	}
	return 0;
}

static int parse_command(const char *cmd, struct cni_call *c, struct cni_err *e)
{
	static const struct { const char *name; enum cni_cmd cmd; } cmds[] = {
		{ "ADD", CNI_CMD_ADD }, { "DEL", CNI_CMD_DEL },
		{ "CHECK", CNI_CMD_CHECK }, { "VERSION", CNI_CMD_VERSION },
	};
	char ex[48];

	if (!cmd || !*cmd)
		return fail(e, CNI_ERR_ENV, "CNI_COMMAND is not set (ADD, DEL, CHECK or VERSION)");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i].name)) {
			c->cmd = cmds[i].cmd;
			return 0;
		}
	return fail(e, CNI_ERR_ENV, "CNI_COMMAND \"%s\" is not ADD, DEL, CHECK or VERSION",
		    cni_excerpt(cmd, ex, sizeof(ex)));
}

/* The config's cniVersion, checked, into c->version. */
static int parse_version(json_t *conf, struct cni_call *c, struct cni_err *e)
{
	json_t *v = json_object_get(conf, "cniVersion");
	char ex[48];

	if (!json_is_string(v))
		return fail(e, CNI_ERR_CONFIG, "network config: \"cniVersion\" is missing or "
			    "not a string");
	if (!cni_version_ok(json_string_value(v)) ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return fail(e, CNI_ERR_VERSION, "network config: cniVersion \"%s\" is not "
			    "supported (0.3.0, 0.3.1, 0.4.0, 1.0.0)",
			    cni_excerpt(json_string_value(v), ex, sizeof(ex)));
	snprintf(c->version, sizeof(c->version), "%s", json_string_value(v));
	return 0;
}

static bool listed(const char *key, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(key, list[i]))
			return true;
	return false;
}

int cni_parse(const struct cni_env *env, const char *in, size_t len,
	      struct cni_call *c, struct cni_err *e)
{
	json_error_t je;
	const char *key;
	json_t *v;
	char ex[48];
	int rc;

	memset(c, 0, sizeof(*c));
	memset(e, 0, sizeof(*e));
	if ((rc = parse_command(env->command, c, e)))
		return rc;
	if (len > CNI_STDIN_MAX)
		return fail(e, CNI_ERR_CONFIG, "network config on stdin is larger than %d bytes",
			    CNI_STDIN_MAX);
	c->conf = json_loadb(in, len, JSON_REJECT_DUPLICATES, &je);
	if (c->cmd == CNI_CMD_VERSION) {
		/* the runtime asks what we speak: cniVersion is read when given */
		v = json_object_get(c->conf, "cniVersion");
		if (json_is_string(v) && cni_version_ok(json_string_value(v)) &&
		    strlen(json_string_value(v)) == json_string_length(v))
			snprintf(c->version, sizeof(c->version), "%s", json_string_value(v));
		return 0;
	}
	if (!c->conf)
		return fail(e, CNI_ERR_DECODE, "network config on stdin is not JSON: line %d "
			    "column %d: %s", je.line, je.column, je.text);
	if (!json_is_object(c->conf))
		return fail(e, CNI_ERR_CONFIG, "network config on stdin is not a JSON object");
	if ((rc = parse_version(c->conf, c, e)))
		return rc;
	json_object_foreach(c->conf, key, v) {
		if (listed(key, spec_keys, sizeof(spec_keys) / sizeof(spec_keys[0])) ||
		    listed(key, own_keys, sizeof(own_keys) / sizeof(own_keys[0])))
			continue;
		return fail(e, CNI_ERR_FIELD, "network config: unknown field \"%s\" (skmesh-cni "
			    "reads socket, pendingDir, logFile, ackTimeoutMs)",
			    cni_excerpt(key, ex, sizeof(ex)));
	}
	v = json_object_get(c->conf, "name");
	if (!json_is_string(v))
		return fail(e, CNI_ERR_CONFIG, "network config: \"name\" is missing or not a "
			    "string");
	if (strlen(json_string_value(v)) != json_string_length(v) ||
	    !cni_name_ok(json_string_value(v), NAME_MAX_LEN))
		return fail(e, CNI_ERR_CONFIG, "network config: name \"%s\" is not a network "
			    "name (1..%d letters, digits, '_', '.', '-', starting alphanumeric)",
			    cni_excerpt(json_string_value(v), ex, sizeof(ex)), NAME_MAX_LEN);
	v = json_object_get(c->conf, "type");
	if (!json_is_string(v) || !json_string_length(v))
		return fail(e, CNI_ERR_CONFIG, "network config: \"type\" is missing or not a "
			    "non-empty string");
	if (c->cmd == CNI_CMD_CHECK && strncmp(c->version, "0.3.", 4) == 0)
		return fail(e, CNI_ERR_VERSION, "CHECK needs cniVersion 0.4.0 or later, the "
			    "config says %s", c->version);
	if ((rc = parse_own(c->conf, c, e)) || (rc = parse_env(env, c, e)))
		return rc;
	c->prev = json_object_get(c->conf, "prevResult");
	if (c->prev && !json_is_object(c->prev))
		return fail(e, CNI_ERR_CONFIG, "network config: \"prevResult\" must be an object");
	if (c->cmd == CNI_CMD_DEL)
		return 0;
	if (!c->prev)
		return fail(e, CNI_ERR_CONFIG, "network config has no prevResult: skmesh-cni is "
			    "a chained plugin, list it after the plugin that sets up the pod's "
			    "interface (e.g. bridge) in the conflist");
	c->host_ifs = json_array();
	c->ips = json_array();
	if (!c->host_ifs || !c->ips)
		return fail(e, CNI_ERR_IO, "out of memory");
	return parse_prev(c, e);
}

void cni_call_free(struct cni_call *c)
{
	json_decref(c->conf);
	json_decref(c->host_ifs);
	json_decref(c->ips);
	c->conf = c->host_ifs = c->ips = NULL;
	c->prev = NULL;
}

json_t *cni_request(const struct cni_call *c)
{
	const char *op = c->cmd == CNI_CMD_ADD ? "add" : c->cmd == CNI_CMD_DEL ? "del" : "check";
	json_t *r = json_pack("{s:i, s:s, s:s, s:s, s:s}", "version", SKM_CNI_PROTO_VERSION,
			      "op", op, "containerId", c->container_id, "netns", c->netns,
			      "ifName", c->ifname);

	if (!r)
		return NULL;
	if (c->k8s && (json_object_set_new(r, "podNamespace", json_string(c->pod_ns)) ||
		       json_object_set_new(r, "podName", json_string(c->pod_name)) ||
		       json_object_set_new(r, "podUid", json_string(c->pod_uid))))
		goto out_free;
	if (c->host_ifs && json_object_set(r, "hostInterfaces", c->host_ifs))
		goto out_free;
	if (c->ips && json_object_set(r, "ips", c->ips))
		goto out_free;
	return r;
out_free:
	json_decref(r);
	return NULL;
}

char *cni_result(const struct cni_call *c)
{
	json_t *r = json_copy(c->prev);	/* shallow: only cniVersion changes */
	char *out = NULL;

	if (r && !json_object_set_new(r, "cniVersion", json_string(c->version)))
		out = json_dumps(r, JSON_PRESERVE_ORDER);
	json_decref(r);
	return out;
}

char *cni_version_reply(const struct cni_call *c)
{
	json_t *list = json_array(), *r;
	char *out;

	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
		json_array_append_new(list, json_string(versions[i]));
	r = json_pack("{s:s, s:o}", "cniVersion", c->version[0] ? c->version : CNI_VERSION_LATEST,
		      "supportedVersions", list);
	out = r ? json_dumps(r, JSON_PRESERVE_ORDER) : NULL;
	json_decref(r);
	return out;
}

char *cni_error_json(const char *version, const struct cni_err *e)
{
	json_t *r = json_pack("{s:s, s:i, s:s}", "cniVersion",
			      version && cni_version_ok(version) ? version : CNI_VERSION_LATEST,
			      "code", e->code, "msg", e->msg);
	char *out = r ? json_dumps(r, JSON_PRESERVE_ORDER) : NULL;

	json_decref(r);
	return out;
}
