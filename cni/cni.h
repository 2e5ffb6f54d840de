/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * skmesh-cni's input side, with no I/O: the CNI_* environment and the
 * network config read from stdin become one checked struct cni_call, or a
 * CNI error (code and message) that says what is wrong and where. Every
 * input is hostile: sizes are bounded, each field is checked, nothing
 * unexpected is let through. main.c does the I/O; the fuzz target calls
 * this directly.
 */
#ifndef SKM_CNI_H
#define SKM_CNI_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

/* stdin larger than this is refused */
#define CNI_STDIN_MAX		(256 * 1024)
/* the versions of the CNI spec spoken, oldest first */
#define CNI_VERSIONS		{ "0.3.0", "0.3.1", "0.4.0", "1.0.0" }
#define CNI_VERSION_LATEST	"1.0.0"

/* The spec's error codes, and this plugin's own (100 and up) */
enum cni_code {
	CNI_ERR_VERSION = 1,		/* incompatible CNI version */
	CNI_ERR_FIELD = 2,		/* unsupported field in network config */
	CNI_ERR_ENV = 4,		/* invalid necessary environment variables */
	CNI_ERR_IO = 5,			/* I/O failure */
	CNI_ERR_DECODE = 6,		/* failed to decode content */
	CNI_ERR_CONFIG = 7,		/* invalid network configuration */
	CNI_ERR_REFUSED = 100,		/* meshd answered that it refuses the pod */
	CNI_ERR_NOT_ENROLLED = 101,	/* CHECK: meshd does not have the pod */
};

enum cni_cmd { CNI_CMD_ADD, CNI_CMD_DEL, CNI_CMD_CHECK, CNI_CMD_VERSION };

/* The CNI_* environment variables as given; NULL when unset. */
struct cni_env {
	const char *command, *containerid, *netns, *ifname, *args, *path;
};

struct cni_err {
	int code;
	char msg[512];
};

struct cni_call {
	enum cni_cmd cmd;
	char version[8];		/* the config's cniVersion ("" for VERSION without one) */
	const char *container_id;	/* from struct cni_env, checked */
	const char *netns;		/* "" on a DEL without CNI_NETNS */
	const char *ifname;
	bool k8s;			/* CNI_ARGS named the pod */
	char pod_ns[64], pod_name[254], pod_uid[65];
	/* the plugin's own config fields, defaults filled in */
	char socket[108], pending_dir[256], log_file[256];
	int ack_timeout_ms;
	json_t *conf;			/* the whole config (owned) */
	json_t *prev;			/* its prevResult, or NULL (borrowed from conf) */
	json_t *host_ifs, *ips;		/* arrays of strings from prevResult (owned) */
};

/* Checks ENV and the LEN bytes of stdin IN (LEN may exceed CNI_STDIN_MAX:
 * refused) and fills C. Returns 0, or the CNI error code with E filled; in
 * both cases cni_call_free(C) releases what was made. */
int cni_parse(const struct cni_env *env, const char *in, size_t len,
	      struct cni_call *c, struct cni_err *e);
void cni_call_free(struct cni_call *c);

/* The request for meshd (include/skmesh-cni.h), a new reference. */
json_t *cni_request(const struct cni_call *c);
/* ADD's stdout: prevResult unchanged but for cniVersion, the config's.
 * malloc'd text, NULL when out of memory. */
char *cni_result(const struct cni_call *c);
/* VERSION's stdout (malloc'd). */
char *cni_version_reply(const struct cni_call *c);
/* The spec's error object for E, with VERSION when it is a supported one
 * (else the latest); malloc'd. */
char *cni_error_json(const char *version, const struct cni_err *e);
/* The name of a command, for messages. */
const char *cni_cmd_name(enum cni_cmd cmd);
/* Whether V is a spec version this plugin speaks. */
bool cni_version_ok(const char *v);

#endif /* SKM_CNI_H */
