/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The declarative config: Kubernetes-style YAML documents
 * (apiVersion/kind/metadata/spec), many per file, many files per folder.
 * Loading never touches the kernel: a config is parsed and validated whole,
 * and only a valid one is handed to reconcile.
 */
#ifndef SKM_CONFIG_H
#define SKM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* Where a document or field came from, for messages. */
struct cfg_pos {
	const char *file;	/* owned by the config's file list */
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

/* A document of a kind this version reads but does not enforce. */
struct cfg_other {
	char *kind;
	char *name;
	char *ns;
	struct cfg_pos pos;
};

struct config {
	char **files;		/* every file read, in order */
	size_t nfiles;
	struct cfg_workload *wls;
	size_t nwls;
	struct cfg_service *svcs;
	size_t nsvcs;
	struct cfg_other *others;
	size_t nothers;
};

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
void config_free(struct config *cfg);

void diag_add(struct cfg_diag *d, int is_error, const struct cfg_pos *pos,
	      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void diag_print(const struct cfg_diag *d, const char *prog);
void diag_free(struct cfg_diag *d);

const struct cfg_workload *config_workload_by_ip(const struct config *cfg,
						 uint32_t ip);
int labels_match(const struct cfg_labels *selector,
		 const struct cfg_labels *labels);

#endif /* SKM_CONFIG_H */
