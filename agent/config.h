/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The declarative config: Kubernetes-style YAML documents
 * (apiVersion/kind/metadata/spec), many per file, many files per folder,
 * parsed into the model (model.h) through its API. Loading never touches
 * the kernel: a config is parsed and checked whole (model_finish), and only
 * a valid one is handed to reconcile. A loaded config never changes: it can
 * be read from any thread until config_free().
 */
#ifndef SKM_CONFIG_H
#define SKM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* Options of config_load_opts(); NULL (or 0) fields take the defaults. */
struct cfg_opts {
	const char *root_ns;		/* default "istio-system" */
	const char *trust_domain;	/* default "cluster.local" */
	size_t max_file_bytes;		/* default CFG_DEFAULT_MAX_FILE_BYTES */
	size_t max_doc_bytes;		/* default CFG_DEFAULT_MAX_DOC_BYTES */
};

/* Size caps: a bigger file or document is an error (the config is
 * rejected, the running state kept). A Kubernetes object, and so one
 * document of it, is at most about 1.5 MiB (etcd's request limit); a
 * ConfigMap's data at most 1 MiB. A config folder outside Kubernetes may
 * hold bigger files: 64 MiB is ten times the 6 MB policy-scale benchmark. */
#define CFG_DEFAULT_MAX_FILE_BYTES	((size_t)64 << 20)
#define CFG_DEFAULT_MAX_DOC_BYTES	((size_t)1 << 20)

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

/*
 * Parses one object that comes from elsewhere than a file (a cluster API
 * source): TEXT (YAML or JSON, LEN bytes) holding one document of kind
 * ONLY_KIND (NULL: any kind the loader knows), read exactly as the loader
 * reads it, with the same checks and messages. LABEL names the object in
 * messages and positions (it must outlive OUT's objects); ROOT_NS is the
 * Istio root namespace (NULL: the default). What it parses to is appended
 * to OUT (the caller frees it with model_objects_free()). Returns 0; -EINVAL
 * when DIAG has an error; -ENOMEM.
 */
int config_parse_object(const char *text, size_t len, const char *label,
			const char *root_ns, const char *only_kind,
			struct cfg_objects *out, struct cfg_diag *diag);

#endif /* SKM_CONFIG_H */
