// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The field checks shared by skmesh-cni and meshd (see cnicheck.h). */
#include <ctype.h>
#include <string.h>

#include "cnicheck.h"

/* A printable excerpt of S for messages: at most 40 bytes, anything but
 * printable ASCII as '?'. */
const char *cni_excerpt(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < len && i < 40; i++)
		buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	buf[i] = 0;
	return buf;
}

/* The spec's container id and network name: 1..MAX alphanumerics, '_',
 * '.', '-', starting alphanumeric. */
bool cni_name_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (!n || n > max || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
			return false;
	return true;
}

/* An interface name the kernel would take: 1..15 bytes, not "." or
 * "..", no '/', ':' or whitespace (what the spec lists). */
bool cni_ifname_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 15 || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '/' || s[i] == ':' || !isgraph((unsigned char)s[i]))
			return false;
	return true;
}

/* An absolute path of printable characters, shorter than MAX, with no
 * "." or ".." component. */
bool cni_abs_path_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n < 2 || n >= max || s[0] != '/')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isgraph((unsigned char)s[i]))
			return false;
	for (const char *p = s; (p = strchr(p, '/')); p++) {
		size_t k = strcspn(p + 1, "/");

		if ((k == 1 && p[1] == '.') || (k == 2 && p[1] == '.' && p[2] == '.'))
			return false;
	}
	return true;
}

/* Kubernetes' DNS-1123 label (a namespace): 1..63 of [a-z0-9-],
 * alphanumeric at both ends. */
bool cni_dns_label_ok(const char *s, size_t n)
{
	if (!n || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
			return false;
	return true;
}

/* DNS-1123 subdomain (a pod name): 1..253, dot-separated labels. */
bool cni_dns_subdomain_ok(const char *s, size_t n)
{
	size_t i = 0;

	if (!n || n > 253)
		return false;
	while (i <= n) {
		size_t k = 0;

		while (i + k < n && s[i + k] != '.')
			k++;
		if (!cni_dns_label_ok(s + i, k))
			return false;
		i += k + 1;
	}
	return true;
}

/* A pod UID: 1..64 of alphanumerics and '-'. */
bool cni_uid_ok(const char *s, size_t n)
{
	if (!n || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}
