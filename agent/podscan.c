// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Finding the network namespace of pods that already run (see podscan.h). */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../cni/cnicheck.h"
#include "log.h"
#include "netns.h"
#include "podscan.h"

#define UID_MAX		64
#define CGROUP_FILE_MAX	(64 * 1024)	/* a /proc/PID/cgroup beyond this is cut */

struct ps_ent {
	char uid[UID_MAX + 1];
	int pid;
};

struct podscan {
	char *proc;
	struct ps_ent *e;
	size_t n, cap;
};

/* The UID of one path component, or false. KUBE: a "kubepods" folder is
 * above it. */
static bool uid_of_component(const char *c, size_t n, bool kube, char *uid)
{
	const char *u = NULL;
	bool systemd = false;
	size_t ulen = 0;

	if (!c)
		return false;
	if (kube && n > 3 && !memcmp(c, "pod", 3)) {
		u = c + 3;	/* cgroupfs: pod<uid> */
		ulen = n - 3;
	} else if (n > 6 && !memcmp(c + n - 6, ".slice", 6) && memmem(c, n, "kubepods", 8)) {
		/* systemd: kubepods-<qos>-pod<uid>.slice; the last "-pod" */
		for (size_t i = n - 6; i-- > 0;)
			if (i + 4 <= n - 6 && !memcmp(c + i, "-pod", 4)) {
				u = c + i + 4;
				ulen = n - 6 - i - 4;
				systemd = true;
				break;
			}
	}
	if (!u || !ulen || ulen > UID_MAX)
		return false;
	for (size_t i = 0; i < ulen; i++) {
		if (systemd && u[i] == '-')
			return false;	/* a '-' is a slice's nesting, never the UID's */
		uid[i] = systemd && u[i] == '_' ? '-' : u[i];
	}
	uid[ulen] = 0;
	return cni_uid_ok(uid, ulen);
}

int podscan_uid_of_path(const char *path, char *uid, size_t len)
{
	char tmp[UID_MAX + 1];
	bool kube = false;

	if (len < sizeof(tmp))
		return 0;
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, "/");

		if (n && uid_of_component(p, n, kube, tmp)) {
			memcpy(uid, tmp, strlen(tmp) + 1);
			return 1;
		}
		if (n && memmem(p, n, "kubepods", 8))
			kube = true;
		p += n;
		p += *p == '/';
	}
	return 0;
}

/* The pod UID in /proc/PID/cgroup's lines ("ID:CONTROLLERS:PATH"). */
static int uid_of_pid(const char *proc, const char *pid, char *uid, size_t len)
{
	char path[4096], line[4096];
	size_t total = 0;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/cgroup", proc, pid);
	f = fopen(path, "re");
	if (!f)
		return 0;	/* gone since the readdir: fine */
	while (!found && total < CGROUP_FILE_MAX && fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;

		total += strlen(line);
		if (!c2)
			continue;
		line[strcspn(line, "\n")] = 0;
		found = podscan_uid_of_path(c2 + 1, uid, len);
	}
	fclose(f);
	return found;
}

static int ent_cmp(const void *a, const void *b)
{
	const struct ps_ent *x = a, *y = b;
	int c = strcmp(x->uid, y->uid);

	return c ? c : (x->pid > y->pid) - (x->pid < y->pid);
}

int podscan_open(const char *proc, struct podscan **out)
{
	struct podscan *ps = calloc(1, sizeof(*ps));
	struct dirent *de;
	DIR *d;
	int rc = 0;

	*out = NULL;
	if (!ps || !(ps->proc = strdup(proc))) {
		free(ps);
		return -ENOMEM;
	}
	d = opendir(proc);
	if (!d) {
		rc = -errno;
		pr_warn("pod scan: cannot read %s: %s\n", proc, strerror(-rc));
		podscan_free(ps);
		return rc;
	}
	while ((de = readdir(d))) {
		char uid[UID_MAX + 1];
		size_t k = strspn(de->d_name, "0123456789");

		if (!k || de->d_name[k] || k > 9 || !uid_of_pid(proc, de->d_name, uid, sizeof(uid)))
			continue;
		if (ps->n == ps->cap) {
			size_t cap = ps->cap ? ps->cap * 2 : 64;
			struct ps_ent *e = realloc(ps->e, cap * sizeof(*e));

			if (!e) {
				rc = -ENOMEM;
				break;
			}
			ps->e = e;
			ps->cap = cap;
		}
		memcpy(ps->e[ps->n].uid, uid, sizeof(uid));
		ps->e[ps->n++].pid = atoi(de->d_name);
	}
	closedir(d);
	if (rc) {
		podscan_free(ps);
		return rc;
	}
	qsort(ps->e, ps->n, sizeof(*ps->e), ent_cmp);
	pr_debug("pod scan: %zu processes of pods in %s\n", ps->n, proc);
	*out = ps;
	return 0;
}

size_t podscan_count(const struct podscan *ps)
{
	return ps->n;
}

struct has_ip {
	const uint32_t *ips;
	size_t nips;
};

/* Run inside the namespace: getifaddrs()'s netlink socket is made there. */
static int netns_has_ip(void *arg)
{
	const struct has_ip *h = arg;
	struct ifaddrs *ifa, *i;
	int found = 0;

	if (getifaddrs(&ifa))
		return -errno;
	for (i = ifa; i && !found; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
			continue;
		for (size_t k = 0; k < h->nips && !found; k++)
			found = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr == h->ips[k];
	}
	freeifaddrs(ifa);
	return found;
}

int podscan_find(struct podscan *ps, const char *uid, const uint32_t *ips, size_t nips,
		 char *out, size_t len)
{
	struct has_ip h = { ips, nips };
	struct stat self, st;
	ino_t *seen = NULL;	/* namespaces found without the IP */
	size_t nseen = 0;
	int rc = -ENOENT;

	if (stat("/proc/thread-self/ns/net", &self))
		return -errno;
	for (size_t i = 0; i < ps->n && rc == -ENOENT; i++) {
		char path[4096];
		bool known = false;
		int r;

		if (strcmp(ps->e[i].uid, uid))
			continue;
		snprintf(path, sizeof(path), "%s/%d/ns/net", ps->proc, ps->e[i].pid);
		if (stat(path, &st))
			continue;	/* gone */
		if (st.st_ino == self.st_ino && st.st_dev == self.st_dev) {
			pr_debug("pod scan: pid %d of pod %s is in meshd's own network namespace: "
				 "not the pod's\n", ps->e[i].pid, uid);
			continue;
		}
		for (size_t k = 0; k < nseen && !known; k++)
			known = seen[k] == st.st_ino;
		if (known)
			continue;
		r = netns_run_at(path, netns_has_ip, &h);
		if (r > 0) {
			rc = (size_t)snprintf(out, len, "%s", path) >= len ? -ENAMETOOLONG : 0;
			break;
		}
		if (r < 0)
			pr_debug("pod scan: pid %d of pod %s: cannot look into %s: %s\n",
				 ps->e[i].pid, uid, path, strerror(-r));
		else
			pr_debug("pod scan: pid %d has pod %s in its cgroup path but its network "
				 "namespace holds none of the pod's IPs: rejected\n", ps->e[i].pid, uid);
		ino_t *s2 = realloc(seen, (nseen + 1) * sizeof(*seen));

		if (!s2) {
			rc = -ENOMEM;
			break;
		}
		seen = s2;
		seen[nseen++] = st.st_ino;
	}
	free(seen);
	return rc;
}

void podscan_free(struct podscan *ps)
{
	if (!ps)
		return;
	free(ps->e);
	free(ps->proc);
	free(ps);
}
