/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The field checks both sides of skmesh-cni's socket apply: the plugin
 * (cni.c) to what the runtime gives it, meshd (agent/cnisrv.c) to what
 * arrives on its socket. No I/O, no allocation.
 */
#ifndef SKM_CNICHECK_H
#define SKM_CNICHECK_H

#include <stdbool.h>
#include <stddef.h>

#define CNI_NETNS_MAX		1024	/* a netns path, with its NUL */
#define CNI_CONTAINERID_MAX	200	/* it names a file: <id>.json */

/* A printable excerpt of S for messages: at most 40 bytes, anything but
 * printable ASCII as '?'. Returns BUF. */
const char *cni_excerpt(const char *s, char *buf, size_t len);
/* The spec's container id and network name: 1..MAX alphanumerics, '_',
 * '.', '-', starting alphanumeric. */
bool cni_name_ok(const char *s, size_t max);
/* An interface name the kernel would take: 1..15 bytes, not "." or "..",
 * no '/', ':' or whitespace. */
bool cni_ifname_ok(const char *s);
/* An absolute path of printable characters, shorter than MAX, with no
 * "." or ".." component. */
bool cni_abs_path_ok(const char *s, size_t max);
/* Kubernetes' DNS-1123 label (a namespace) of N bytes at S: 1..63 of
 * [a-z0-9-], alphanumeric at both ends. */
bool cni_dns_label_ok(const char *s, size_t n);
/* DNS-1123 subdomain (a pod name): 1..253, dot-separated labels. */
bool cni_dns_subdomain_ok(const char *s, size_t n);
/* A pod UID: 1..64 of alphanumerics and '-'. */
bool cni_uid_ok(const char *s, size_t n);

#endif /* SKM_CNICHECK_H */
