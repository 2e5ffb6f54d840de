// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshctl - read-only view of what meshd pins under the pin root: links,
 * services, connections, workloads, policy verdicts and counters. It never
 * writes a map, so it is safe to run against a live data path at any time.
 *
 * Every command prints an aligned table, or JSON with `-o json` for scripts.
 * Exit status: 0 success (also for an empty table), 1 runtime error,
 * 2 usage error.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <curl/curl.h>
#include <jansson.h>
#include <linux/magic.h>

#include "meshctl-ca.h"
#include "skmesh.h"

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define ROUND_UP(x, a)	(((x) + (a) - 1) / (a) * (a))
#define NSEC_PER_SEC	1000000000ULL
#define MAX_COLS	16
#define BPFFS_MNT	"/sys/fs/bpf"
/* jansson's "I" format reads a json_int_t from the varargs */
#define JI(x)		((json_int_t)(x))

enum top_sort { SORT_RATE, SORT_BYTES, SORT_AGE };

static struct {
	char bpffs[PATH_MAX];	/* pin root, no trailing slash */
	char admin[256];	/* meshd's admin endpoint, ADDR[:PORT] */
	bool json;
	double watch;		/* seconds between redraws, 0: print once */
	const char *arg;	/* the command's argument (policy WORKLOAD) */
	double interval;	/* top: seconds between the two samples */
	size_t top_n;		/* top: rows to show, 0: all */
	enum top_sort sort;	/* top: order of the rows */
} opt = { .interval = 1, .top_n = 10 };

static volatile sig_atomic_t stop;

__attribute__((format(printf, 1, 2)))
static void pr_err(const char *fmt, ...)
{
	va_list ap;

	fputs("meshctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- table output ---------------------------------------------------- */

struct col {
	const char *name;
	bool right;		/* numbers line up on their last digit */
};

#define LEFT(n)		{ .name = (n), .right = false }
#define RIGHT(n)	{ .name = (n), .right = true }

struct table {
	const struct col *cols;
	size_t ncols;
	char **cells;		/* row-major, ncols per row */
	size_t ncells, cap;
	int err;		/* first failure, returned by table_print */
};

static void table_init(struct table *t, const struct col *cols, size_t ncols)
{
	memset(t, 0, sizeof(*t));
	t->cols = cols;
	t->ncols = ncols;
}

/* Takes ownership of @cell (NULL: allocation failed). */
static void table_push(struct table *t, char *cell)
{
	if (!cell || t->err)
		goto out_free;
	if (t->ncells == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		char **cells = realloc(t->cells, cap * sizeof(*cells));

		if (!cells)
			goto out_free;
		t->cells = cells;
		t->cap = cap;
	}
	t->cells[t->ncells++] = cell;
	return;

out_free:
	free(cell);
	if (!t->err)
		t->err = -ENOMEM;
}

/* Adds one row from a format with the cells separated by tabs, so a row
 * reads as one call. Cells are addresses, numbers and names (name_get
 * drops control characters), never a tab. Errors are sticky: table_print
 * returns the first. */
__attribute__((format(printf, 2, 3)))
static void table_row(struct table *t, const char *fmt, ...)
{
	char *line, *cell;
	va_list ap;
	size_t i;

	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		line = NULL;
	va_end(ap);
	if (!line || t->err) {
		t->err = t->err ?: -ENOMEM;
		free(line);
		return;
	}
	for (i = 0, cell = line; i < t->ncols; i++) {
		char *end = strchrnul(cell, '\t');

		if ((i + 1 == t->ncols) != !*end) {
			t->err = -EINVAL;	/* cells != columns: a bug here */
			break;
		}
		*end = '\0';
		table_push(t, strdup(cell));
		cell = end + 1;
	}
	free(line);
}

static void table_print_row(const struct table *t, const char *const *cells,
			    const size_t *width)
{
	size_t i;

	for (i = 0; i < t->ncols; i++) {
		bool last = i + 1 == t->ncols;

		if (t->cols[i].right)
			printf("%*s", (int)width[i], cells[i]);
		else if (last)	/* no trailing blanks */
			fputs(cells[i], stdout);
		else
			printf("%-*s", (int)width[i], cells[i]);
		fputs(last ? "\n" : "  ", stdout);
	}
}

static int table_print(struct table *t)
{
	const char *hdr[MAX_COLS];
	size_t width[MAX_COLS];
	size_t i;

	if (t->err) {
		pr_err("cannot print table: %s", strerror(-t->err));
		return t->err;
	}
	for (i = 0; i < t->ncols; i++) {
		hdr[i] = t->cols[i].name;
		width[i] = strlen(hdr[i]);
	}
	for (i = 0; i < t->ncells; i++) {
		size_t len = strlen(t->cells[i]);

		if (len > width[i % t->ncols])
			width[i % t->ncols] = len;
	}
	table_print_row(t, hdr, width);
	for (i = 0; i + t->ncols <= t->ncells; i += t->ncols)
		table_print_row(t, (const char *const *)&t->cells[i], width);
	if (!t->ncells)
		puts("(none)");
	return 0;
}

static void table_free(struct table *t)
{
	size_t i;

	for (i = 0; i < t->ncells; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->ncells = t->cap = 0;
}

/* Prints a JSON document (the caller keeps its reference); NULL means a
 * jansson allocation failed while it was built. */
static int json_emit(const json_t *doc)
{
	if (!doc)
		return -ENOMEM;
	if (json_dumpf(doc, stdout, JSON_INDENT(2)))
		return -EIO;
	putchar('\n');
	return 0;
}

/* json_array_append_new() with an errno, so a NULL from json_pack() fails. */
static int json_push(json_t *arr, json_t *item)
{
	return json_array_append_new(arr, item) ? -ENOMEM : 0;
}

/* ---- formatting ------------------------------------------------------ */

struct addr_str {
	char s[INET_ADDRSTRLEN + sizeof(":65535")];
};

/* ip in network order; port in host order, or -1 for the address alone */
static struct addr_str addr_fmt(__u32 ip, int port)
{
	struct addr_str a;
	size_t len;

	inet_ntop(AF_INET, &ip, a.s, INET_ADDRSTRLEN);
	len = strlen(a.s);
	if (port >= 0)
		snprintf(a.s + len, sizeof(a.s) - len, ":%d", port);
	return a;
}

static const char *dash(const char *s)
{
	return s && *s ? s : "-";
}

/* json_pack's "s?" turns NULL into null: unknown names are null, not "" */
static const char *or_null(const char *s)
{
	return s && *s ? s : NULL;
}

static const char *proto_str(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return "TCP";
	case IPPROTO_UDP:
		return "UDP";
	default:
		return "?";
	}
}

static void tcp_state_str(__u32 state, char *buf, size_t len)
{
	/* BPF_TCP_* numbering, which is also the kernel's TCP_* numbering */
	static const char *const names[] = {
		[BPF_TCP_ESTABLISHED] = "ESTABLISHED",
		[BPF_TCP_SYN_SENT] = "SYN_SENT",
		[BPF_TCP_SYN_RECV] = "SYN_RECV",
		[BPF_TCP_FIN_WAIT1] = "FIN_WAIT1",
		[BPF_TCP_FIN_WAIT2] = "FIN_WAIT2",
		[BPF_TCP_TIME_WAIT] = "TIME_WAIT",
		[BPF_TCP_CLOSE] = "CLOSE",
		[BPF_TCP_CLOSE_WAIT] = "CLOSE_WAIT",
		[BPF_TCP_LAST_ACK] = "LAST_ACK",
		[BPF_TCP_LISTEN] = "LISTEN",
		[BPF_TCP_CLOSING] = "CLOSING",
		[BPF_TCP_NEW_SYN_RECV] = "NEW_SYN_RECV",
	};

	if (state < ARRAY_SIZE(names) && names[state])
		snprintf(buf, len, "%s", names[state]);
	else
		snprintf(buf, len, "UNKNOWN(%u)", state);
}

static void age_str(__u64 secs, char *buf, size_t len)
{
	unsigned long long s = secs;

	if (s < 60)
		snprintf(buf, len, "%llus", s);
	else if (s < 3600)
		snprintf(buf, len, "%llum%02llus", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lluh%02llum", s / 3600, s / 60 % 60);
	else
		snprintf(buf, len, "%llud%02lluh", s / 86400, s / 3600 % 24);
}

static __u64 mono_ns(void)
{
	struct timespec ts;

	/* bpf_ktime_get_ns() reads the same clock */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * NSEC_PER_SEC + ts.tv_nsec;
}

/* ---- pinned maps ----------------------------------------------------- */

/* The maps of skmesh.h. Sizes are checked when meshctl reads a map's
 * content, so a meshd built from another skmesh.h gives a clear error
 * instead of garbage; 0 means meshctl only counts the map's entries. */
static const struct map_spec {
	const char *name;
	__u32 key_size;
	__u32 value_size;
} map_specs[] = {
	{ SKM_MAP_SERVICES, sizeof(struct skm_svc_key), sizeof(struct skm_svc_val) },
	{ SKM_MAP_BACKENDS, sizeof(struct skm_be_key), sizeof(struct skm_be_val) },
	{ SKM_MAP_WORKLOADS, sizeof(__u32), sizeof(struct skm_wl_val) },
	{ SKM_MAP_SOCK_VIP, 0, 0 },
	{ SKM_MAP_SOCK_HASH, 0, 0 },
	{ SKM_MAP_SOCKS, 0, 0 },
	{ SKM_MAP_CONNS, sizeof(__u64), sizeof(struct skm_conn) },
	{ SKM_MAP_EVENTS, 0, 0 },
	{ SKM_MAP_STATS, sizeof(__u32), sizeof(__u64) },
	{ SKM_MAP_DEV_STATS, sizeof(__u32), sizeof(struct skm_dev_stats) },
	{ SKM_MAP_DEVS, sizeof(__u32), sizeof(struct skm_dev_val) },
	{ SKM_MAP_NAMES, sizeof(struct skm_name_key), sizeof(struct skm_name_val) },
	{ SKM_MAP_NETNS, sizeof(__u64), sizeof(struct skm_netns_val) },
	{ SKM_MAP_VERDICTS, sizeof(struct skm_verdict_key), sizeof(struct skm_verdict) },
	/* an LPM trie: get_next_key walks it like a hash */
	{ SKM_MAP_PLAIN, sizeof(struct skm_plain_key), sizeof(struct skm_verdict) },
	{ SKM_MAP_OUTBOUND, sizeof(struct skm_outbound_key), sizeof(struct skm_outbound_val) },
	{ SKM_MAP_MESHD_LEGS, sizeof(struct skm_sock_key), sizeof(__u32) },
};

/* "<pin root>/<name>" into @buf; -ENAMETOOLONG (reported) if it does not fit */
static int pin_path(char *buf, size_t len, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", opt.bpffs, name);

	if (n < 0 || (size_t)n >= len) {
		pr_err("%s/%s: path too long", opt.bpffs, name);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Says what is wrong with the pin @path (@err a negative errno from
 * opening it) and how to put it right. main() has checked that the pin
 * root holds skmesh maps, so a missing one is a version or install
 * problem, not a stopped meshd. */
static void pr_pin_err(const char *path, int err)
{
	if (err == -EPERM || err == -EACCES)
		pr_err("%s: %s: meshctl needs root (the pins are root's and reading maps takes CAP_BPF): run it with sudo",
		       path, strerror(-err));
	else if (err == -ENOENT)
		pr_err("%s is not pinned, though other skmesh maps are: meshd comes from another version, or is half set up or cleaned up; restart meshd from the same build as meshctl (meshctl status lists what is missing)",
		       path);
	else
		pr_err("%s: %s", path, strerror(-err));
}

struct pmap {
	int fd;
	struct bpf_map_info info;
	char path[PATH_MAX];
};

static void map_close(struct pmap *m)
{
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
}

/* Opens the pin of map @name. A missing pin is reported unless @optional;
 * either way the return is -ENOENT and m->fd is -1. */
static int map_open(const char *name, struct pmap *m, bool optional)
{
	const struct map_spec *spec = NULL;
	__u32 len = sizeof(m->info);
	size_t i;
	int err;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	err = pin_path(m->path, sizeof(m->path), name);
	if (err)
		return err;
	m->fd = bpf_obj_get(m->path);
	if (m->fd < 0) {
		err = -errno;
		m->fd = -1;
		if (err != -ENOENT || !optional)
			pr_pin_err(m->path, err);
		return err;
	}
	err = bpf_obj_get_info_by_fd(m->fd, &m->info, &len);
	if (err) {
		pr_err("%s: cannot read map info: %s", m->path, strerror(-err));
		goto out_close;
	}
	for (i = 0; i < ARRAY_SIZE(map_specs); i++)
		if (!strcmp(map_specs[i].name, name))
			spec = &map_specs[i];
	if (spec && spec->key_size &&
	    (m->info.key_size != spec->key_size ||
	     m->info.value_size != spec->value_size)) {
		pr_err("%s: key/value size %u/%u, meshctl expects %u/%u: build meshctl and meshd from the same skmesh.h",
		       m->path, m->info.key_size, m->info.value_size,
		       spec->key_size, spec->value_size);
		err = -EPROTO;
		goto out_close;
	}
	return 0;

out_close:
	map_close(m);
	return err;
}

static bool map_is_percpu(__u32 type)
{
	return type == BPF_MAP_TYPE_PERCPU_HASH ||
	       type == BPF_MAP_TYPE_PERCPU_ARRAY ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH ||
	       type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

/* A snapshot of a map: records of key then value, both 8-byte aligned so
 * callers can cast them to the skmesh.h structs. */
struct kv_list {
	char *data;
	size_t n, cap;
	size_t key_size, val_off, rec_size;
};

static void *kv_key(const struct kv_list *l, size_t i)
{
	return l->data + i * l->rec_size;
}

static void *kv_val(const struct kv_list *l, size_t i)
{
	return l->data + i * l->rec_size + l->val_off;
}

static void kv_free(struct kv_list *l)
{
	free(l->data);
	l->data = NULL;
	l->n = l->cap = 0;
}

static int kv_cmp_key(const void *a, const void *b, void *key_size)
{
	return memcmp(a, b, *(size_t *)key_size);
}

static int cmp_u32_key(const void *a, const void *b)
{
	__u32 x = *(const __u32 *)a, y = *(const __u32 *)b;

	return (x > y) - (x < y);
}

static int cmp_u64_key(const void *a, const void *b)
{
	__u64 x = *(const __u64 *)a, y = *(const __u64 *)b;

	return (x > y) - (x < y);
}

/* Every per-CPU value in skmesh.h is made of __u64 counters, so the total
 * is a word-by-word sum over the CPUs' copies. */
static void percpu_sum(__u64 *out, const __u64 *in, size_t words, int ncpus)
{
	size_t w;
	int cpu;

	memset(out, 0, words * sizeof(*out));
	for (cpu = 0; cpu < ncpus; cpu++)
		for (w = 0; w < words; w++)
			out[w] += in[cpu * words + w];
}

/* Reads every entry of @m into @l (keys only when @keys_only), per-CPU
 * values summed, sorted by key bytes, without duplicates. Returns 0 or a
 * negative errno (reported). */
static int map_collect(const struct pmap *m, struct kv_list *l, bool keys_only)
{
	bool percpu = map_is_percpu(m->info.type) && !keys_only;
	size_t vsize = keys_only ? 0 : m->info.value_size;
	size_t ks = m->info.key_size;
	/* A hash walk restarts at the first bucket when the previous key
	 * was deleted meanwhile: bound it so a busy map cannot keep us
	 * walking, and drop the duplicates a restart leaves. */
	size_t budget = 2 * (size_t)m->info.max_entries + 1;
	void *prev = NULL, *next = NULL, *vbuf = NULL;
	size_t i, out;
	int ncpus = 1, err = 0;

	memset(l, 0, sizeof(*l));
	l->key_size = ks;
	l->val_off = ROUND_UP(ks, 8);
	l->rec_size = l->val_off + ROUND_UP(vsize, 8);
	if (percpu) {
		ncpus = libbpf_num_possible_cpus();
		if (ncpus < 0) {
			pr_err("cannot count possible CPUs: %s", strerror(-ncpus));
			return ncpus;
		}
		if (vsize % 8) {
			pr_err("%s: per-CPU value of %zu bytes is not made of __u64 counters",
			       m->path, vsize);
			return -EPROTO;
		}
	}
	prev = malloc(ks ? ks : 1);
	next = malloc(ks ? ks : 1);
	vbuf = calloc(ncpus, ROUND_UP(vsize, 8) + 8);
	if (!prev || !next || !vbuf) {
		err = -ENOMEM;
		goto out_free;
	}

	for (i = 0; i < budget; i++) {
		err = bpf_map_get_next_key(m->fd, i ? prev : NULL, next);
		if (err == -ENOENT) {
			err = 0;
			break;
		}
		if (err) {
			pr_err("%s: cannot walk keys: %s", m->path, strerror(-err));
			goto out_free;
		}
		memcpy(prev, next, ks);
		if (!keys_only) {
			err = bpf_map_lookup_elem(m->fd, next, vbuf);
			if (err == -ENOENT)	/* deleted since get_next_key */
				continue;
			if (err) {
				pr_err("%s: lookup failed: %s", m->path, strerror(-err));
				goto out_free;
			}
		}
		if (l->n == l->cap) {
			size_t cap = l->cap ? l->cap * 2 : 64;
			char *data = realloc(l->data, cap * l->rec_size);

			if (!data) {
				err = -ENOMEM;
				goto out_free;
			}
			l->data = data;
			l->cap = cap;
		}
		memcpy(kv_key(l, l->n), next, ks);
		if (percpu)
			percpu_sum(kv_val(l, l->n), vbuf, vsize / 8, ncpus);
		else if (vsize)
			memcpy(kv_val(l, l->n), vbuf, vsize);
		l->n++;
	}

	if (l->n)
		qsort_r(l->data, l->n, l->rec_size, kv_cmp_key, &ks);
	for (i = 0, out = 0; i < l->n; i++) {
		if (out && !memcmp(kv_key(l, out - 1), kv_key(l, i), ks))
			continue;
		if (out != i)
			memcpy(kv_key(l, out), kv_key(l, i), l->rec_size);
		out++;
	}
	l->n = out;

out_free:
	free(prev);
	free(next);
	free(vbuf);
	if (err)
		kv_free(l);
	return err;
}

/* Looks up the human name meshd stored for (@kind, @id); false when the
 * names map is absent (fd < 0) or has no entry. */
static bool name_get(int names_fd, __u32 kind, __u32 id, struct skm_name_val *nv)
{
	struct skm_name_key key = { .kind = kind, .id = id };
	char *p;

	memset(nv, 0, sizeof(*nv));
	if (names_fd < 0 || bpf_map_lookup_elem(names_fd, &key, nv)) {
		memset(nv, 0, sizeof(*nv));
		return false;
	}
	/* written by another program: trust neither the terminators nor the
	 * characters (a tab would split a table cell) */
	nv->name[sizeof(nv->name) - 1] = '\0';
	nv->ns[sizeof(nv->ns) - 1] = '\0';
	for (p = nv->name; *p; p++)
		*p = *p > 0 && *p < ' ' ? '?' : *p;
	for (p = nv->ns; *p; p++)
		*p = *p > 0 && *p < ' ' ? '?' : *p;
	return true;
}

/* Orders by namespace, then name; entries meshd did not name go last. */
static int cmp_names(const struct skm_name_val *a, const struct skm_name_val *b)
{
	int c = !a->name[0] - !b->name[0];

	c = c ?: strcmp(a->ns, b->ns);
	return c ?: strcmp(a->name, b->name);
}

/* ---- pin root -------------------------------------------------------- */

/* Names of the filesystems a wrong --bpffs usually lands on. */
static const char *fs_name(long type)
{
	static const struct {
		long magic;
		const char *name;
	} names[] = {
		{ TMPFS_MAGIC, "tmpfs" }, { SYSFS_MAGIC, "sysfs" },
		{ PROC_SUPER_MAGIC, "proc" }, { CGROUP2_SUPER_MAGIC, "cgroup2" },
		{ EXT4_SUPER_MAGIC, "ext2/3/4" }, { XFS_SUPER_MAGIC, "xfs" },
		{ BTRFS_SUPER_MAGIC, "btrfs" }, { OVERLAYFS_SUPER_MAGIC, "overlayfs" },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(names); i++)
		if (names[i].magic == type)
			return names[i].name;
	return NULL;
}

/* Returns 0 when the pin root is on a bpffs, or would be once created
 * (its nearest existing ancestor is one); else says how to fix it. */
static int check_bpffs(void)
{
	char path[PATH_MAX], type[32];
	struct statfs st;
	char *slash;

	snprintf(path, sizeof(path), "%s", opt.bpffs);
	while (statfs(path, &st)) {
		if (errno != ENOENT && errno != ENOTDIR) {
			int err = -errno;

			pr_pin_err(path, err);
			return err;
		}
		slash = strrchr(path, '/');
		if (!slash)
			strcpy(path, ".");
		else if (slash == path)
			path[1] = '\0';
		else
			*slash = '\0';
	}
	if (st.f_type == BPF_FS_MAGIC)
		return 0;

	if (fs_name(st.f_type))
		snprintf(type, sizeof(type), "%s", fs_name(st.f_type));
	else
		snprintf(type, sizeof(type), "filesystem type 0x%lx", (long)st.f_type);
	if (!strncmp(opt.bpffs, BPFFS_MNT, strlen(BPFFS_MNT)) &&
	    (!opt.bpffs[strlen(BPFFS_MNT)] || opt.bpffs[strlen(BPFFS_MNT)] == '/'))
		/* the usual case: bpffs not mounted where it belongs */
		pr_err("%s is not on a bpf filesystem (%s is %s): mount it with 'mount -t bpf bpf %s', then start meshd",
		       opt.bpffs, path, type, BPFFS_MNT);
	else
		pr_err("%s is not on a bpf filesystem (%s is %s): give --bpffs the pin root meshd uses (default %s)",
		       opt.bpffs, path, type, SKM_PIN_ROOT);
	return -ENODEV;
}

/* Returns 0 when the pin root is a folder holding at least one map of
 * skmesh.h. No folder, or one without our maps, means no meshd has run
 * with this pin root on this node (or `meshd --cleanup` removed it). */
static int check_pins(void)
{
	char path[PATH_MAX];
	struct stat st;
	size_t i;
	int err;

	if (stat(opt.bpffs, &st)) {
		err = -errno;
		if (err != -ENOENT && err != -ENOTDIR) {
			pr_pin_err(opt.bpffs, err);
			return err;
		}
		goto out_none;
	}
	if (!S_ISDIR(st.st_mode)) {
		pr_err("%s is not a folder: give --bpffs the pin root meshd uses (default %s)",
		       opt.bpffs, SKM_PIN_ROOT);
		return -ENOTDIR;
	}
	for (i = 0; i < ARRAY_SIZE(map_specs); i++) {
		err = pin_path(path, sizeof(path), map_specs[i].name);
		if (err)
			return err;
		if (!access(path, F_OK))
			return 0;
		if (errno != ENOENT) {
			err = -errno;
			/* EACCES: the folder is root's, not this pin */
			pr_pin_err(err == -EACCES ? opt.bpffs : path, err);
			return err;
		}
	}
out_none:
	pr_err("no skmesh pins at %s: is meshd running on this node? (--bpffs DIR to point elsewhere)",
	       opt.bpffs);
	return -ENOENT;
}

/* ---- status ---------------------------------------------------------- */

static int prog_name_by_id(__u32 id, char *buf, size_t len)
{
	struct bpf_prog_info info = {};
	__u32 info_len = sizeof(info);
	int fd, err;

	snprintf(buf, len, "-");
	fd = bpf_prog_get_fd_by_id(id);
	if (fd < 0)
		return -errno;
	err = bpf_obj_get_info_by_fd(fd, &info, &info_len);
	close(fd);
	if (err)
		return err;
	snprintf(buf, len, "%s", info.name[0] ? info.name : "-");
	return 0;
}

static const char *attach_type_str(__u32 type, char *buf, size_t len)
{
	const char *s = libbpf_bpf_attach_type_str(type);

	if (s)
		return s;
	snprintf(buf, len, "attach_type_%u", type);
	return buf;
}

static int skip_dotfiles(const struct dirent *de)
{
	return de->d_name[0] != '.';
}

/* Adds the links pinned under <pin root>/links to @t or @arr. A pin that
 * cannot be read is reported and makes the status fail, but the rest is
 * still shown. */
static int status_links(struct table *t, json_t *arr)
{
	struct dirent **ents = NULL;
	char dir[PATH_MAX], path[PATH_MAX + NAME_MAX + 1];
	int i, n, err;

	err = pin_path(dir, sizeof(dir), SKM_PIN_LINKS);
	if (err)
		return err;
	n = scandir(dir, &ents, skip_dotfiles, alphasort);
	if (n < 0) {
		if (errno == ENOENT)	/* no links folder: nothing attached yet */
			return 0;
		err = -errno;
		pr_pin_err(dir, err);
		return err;
	}

	for (i = 0; i < n; i++) {
		struct bpf_link_info li = {};
		__u32 len = sizeof(li);
		char prog[BPF_OBJ_NAME_LEN + 1], abuf[32];
		const char *attach = "-";
		__u64 cgroup_id = 0;
		int fd, ret;

		snprintf(path, sizeof(path), "%s/%s", dir, ents[i]->d_name);
		fd = bpf_obj_get(path);
		ret = fd < 0 ? -errno : bpf_obj_get_info_by_fd(fd, &li, &len);
		if (fd >= 0)
			close(fd);
		if (ret) {
			pr_pin_err(path, ret);
			err = ret;
			continue;
		}
		prog_name_by_id(li.prog_id, prog, sizeof(prog));
		if (li.type == BPF_LINK_TYPE_CGROUP) {
			attach = attach_type_str(li.cgroup.attach_type, abuf, sizeof(abuf));
			cgroup_id = li.cgroup.cgroup_id;
		} else if (libbpf_bpf_link_type_str(li.type)) {
			attach = libbpf_bpf_link_type_str(li.type);
		}

		if (arr) {
			ret = json_push(arr, json_pack("{s:s, s:I, s:I, s:s, s:s, s:I}",
				"name", ents[i]->d_name, "id", JI(li.id),
				"prog_id", JI(li.prog_id), "prog_name", prog,
				"attach_type", attach, "cgroup_id", JI(cgroup_id)));
			if (ret) {
				err = ret;
				break;
			}
		} else {
			table_row(t, "%s\t%u\t%s\t%u\t%s\t%llu", ents[i]->d_name,
				  li.id, prog, li.prog_id, attach,
				  (unsigned long long)cgroup_id);
		}
	}
	for (i = 0; i < n; i++)
		free(ents[i]);
	free(ents);
	return err;
}

/* Adds every map of the contract with its fill to @t or @obj; returns
 * -ENOENT or -EPROTO (after listing them all) when some map is not pinned
 * or does not match skmesh.h. */
static int status_maps(struct table *t, json_t *obj)
{
	size_t i, missing = 0;
	int err = 0;

	for (i = 0; i < ARRAY_SIZE(map_specs); i++) {
		const char *name = map_specs[i].name;
		struct kv_list l = {};
		struct pmap m;
		bool counted;
		char fill[16] = "-";
		int ret;

		ret = map_open(name, &m, true);
		if (ret == -ENOENT || ret == -EPROTO) {
			/* a mismatch is reported by map_open, the missing
			 * maps below in one line; list the rest */
			missing += ret == -ENOENT;
			err = ret;
			if (!obj)
				table_row(t, "%s\t%s\t-\t-\t-", name,
					  ret == -ENOENT ? "missing" : "mismatch");
			else if (json_object_set_new(obj, name, json_pack("{s:b, s:b}",
					"pinned", ret != -ENOENT, "mismatch", ret == -EPROTO)))
				return -ENOMEM;
			continue;
		}
		if (ret)
			return ret;

		/* ring buffers and socket storage have no keys to walk; an
		 * array is always full, so its fill says nothing */
		counted = m.info.type != BPF_MAP_TYPE_RINGBUF &&
			  m.info.type != BPF_MAP_TYPE_SK_STORAGE;
		if (counted) {
			ret = map_collect(&m, &l, true);
			if (ret) {
				map_close(&m);
				return ret;
			}
		}
		if (counted && m.info.type != BPF_MAP_TYPE_ARRAY &&
		    m.info.type != BPF_MAP_TYPE_PERCPU_ARRAY && m.info.max_entries)
			snprintf(fill, sizeof(fill), "%.1f%%",
				 100.0 * l.n / m.info.max_entries);
		if (obj) {
			ret = json_object_set_new(obj, name,
				json_pack("{s:b, s:s, s:o, s:I}", "pinned", 1,
					  "type", libbpf_bpf_map_type_str(m.info.type) ?: "?",
					  "entries", counted ? json_integer(JI(l.n)) : json_null(),
					  "max_entries", JI(m.info.max_entries)));
		} else {
			char entries[24] = "-";
			char max[24] = "-";	/* socket storage has no maximum */

			if (counted)
				snprintf(entries, sizeof(entries), "%zu", l.n);
			if (m.info.max_entries)
				snprintf(max, sizeof(max), "%u", m.info.max_entries);
			table_row(t, "%s\t%s\t%s\t%s\t%s", name,
				  libbpf_bpf_map_type_str(m.info.type) ?: "?",
				  entries, max, fill);
		}
		kv_free(&l);
		map_close(&m);
		if (ret)
			return -ENOMEM;
	}
	if (missing)
		pr_err("%zu map%s of skmesh.h %s not pinned at %s (missing above): meshd comes from another version, or is half set up or cleaned up; restart meshd from the same build as meshctl",
		       missing, missing == 1 ? "" : "s", missing == 1 ? "is" : "are",
		       opt.bpffs);
	return err;
}

/* The sk_msg program attached to the SOCKHASH; 0 with *id == 0 when none,
 * negative errno when the kernel cannot say. */
static int status_sk_msg(__u32 *id, char *name, size_t len)
{
	__u32 ids[4], cnt = ARRAY_SIZE(ids), flags = 0;
	struct pmap m;
	int err;

	*id = 0;
	err = map_open(SKM_MAP_SOCK_HASH, &m, true);
	if (err)
		return err;
	err = bpf_prog_query(m.fd, BPF_SK_MSG_VERDICT, 0, &flags, ids, &cnt);
	map_close(&m);
	if (err)
		return err;
	if (cnt) {
		*id = ids[0];
		prog_name_by_id(*id, name, len);
	}
	return 0;
}

/* The answer of meshd's admin endpoint to GET /config_dump, parsed; NULL
 * with WHY set when it gives none. */
static size_t body_add(char *p, size_t size, size_t n, void *arg)
{
	struct { char *buf; size_t len; } *b = arg;
	size_t add = size * n;
	char *q;

	if (b->len + add > (64u << 20) || !(q = realloc(b->buf, b->len + add + 1)))
		return 0;
	memcpy(q + b->len, p, add);
	b->buf = q;
	b->len += add;
	b->buf[b->len] = 0;
	return add;
}

static json_t *admin_config_dump(char *why, size_t len)
{
	struct { char *buf; size_t len; } b = {};
	char url[320];
	CURL *h = curl_easy_init();
	json_t *doc = NULL;
	CURLcode cc;
	long code = 0;

	if (!h) {
		snprintf(why, len, "out of memory");
		return NULL;
	}
	/* ADDR, ADDR:PORT or [V6]:PORT; no port: 15000 */
	if (opt.admin[0] == '[' ? !strstr(opt.admin, "]:") : !strchr(opt.admin, ':'))
		snprintf(url, sizeof(url), "http://%s:15000/config_dump", opt.admin);
	else
		snprintf(url, sizeof(url), "http://%s/config_dump", opt.admin);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_add);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 3000L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(h);
	if (cc != CURLE_OK)
		snprintf(why, len, "%s: %s", url, curl_easy_strerror(cc));
	else if (code != 200)
		snprintf(why, len, "%s: HTTP %ld", url, code);
	else if (!(doc = json_loadb(b.buf ? b.buf : "", b.len, 0, NULL)) ||
		 !json_is_object(json_object_get(doc, "source")))
		snprintf(why, len, "%s: not meshd's config dump", url);
	free(b.buf);
	if (doc && !json_is_object(json_object_get(doc, "source"))) {
		json_decref(doc);
		doc = NULL;
	}
	return doc;
}

/* Prints the model's source as /config_dump tells it. */
static void status_source(json_t *dump, const char *why)
{
	json_t *src = json_object_get(dump, "source"), *res = json_object_get(src, "resources"), *v;
	const char *type = json_string_value(json_object_get(src, "type")), *k;

	if (!dump) {
		printf("source: unknown (meshd's admin endpoint gave no answer: %s; give "
		       "--admin ADDR[:PORT])\n\n", why);
		return;
	}
	if (type && !strcmp(type, "file")) {
		printf("source: config file %s\n", json_string_value(json_object_get(src, "path")) ?
		       json_string_value(json_object_get(src, "path")) : "-");
	} else {
		printf("source: %s %s, %s\n", type ? type : "?",
		       json_string_value(json_object_get(src, "server")) ?
		       json_string_value(json_object_get(src, "server")) : "-",
		       json_is_true(json_object_get(src, "synced")) ? "synced" : "NOT synced");
		json_object_foreach(res, k, v)
			printf("  %-22s %-8s %6lld objects  %lld lists, %lld after 410 Gone, "
			       "%lld watch restarts\n", k,
			       json_is_true(json_object_get(v, "synced")) ? "synced" : "syncing",
			       (long long)json_integer_value(json_object_get(v, "objects")),
			       (long long)json_integer_value(json_object_get(v, "lists")),
			       (long long)json_integer_value(json_object_get(v, "relistsGone")),
			       (long long)json_integer_value(json_object_get(v, "watchRestarts")));
	}
	printf("ready: %s%s%s\n\n", json_is_true(json_object_get(dump, "ready")) ? "yes" : "no",
	       json_string_value(json_object_get(dump, "notReadyReason")) ? ": " : "",
	       json_string_value(json_object_get(dump, "notReadyReason")) ?
	       json_string_value(json_object_get(dump, "notReadyReason")) : "");
}

static int cmd_status(void)
{
	static const struct col link_cols[] = {
		LEFT("LINK"), RIGHT("ID"), LEFT("PROG"), RIGHT("PROG_ID"),
		LEFT("ATTACH_TYPE"), RIGHT("CGROUP_ID"),
	};
	static const struct col map_cols[] = {
		LEFT("MAP"), LEFT("TYPE"), RIGHT("ENTRIES"), RIGHT("MAX_ENTRIES"),
		RIGHT("FILL"),
	};
	struct table links, maps;
	json_t *doc = NULL, *jlinks = NULL, *jmaps = NULL, *dump = NULL;
	char msg_name[BPF_OBJ_NAME_LEN + 1] = "-", why[512] = "";
	__u32 msg_id;
	int err, err_links, err_maps, err_msg;

	table_init(&links, link_cols, ARRAY_SIZE(link_cols));
	table_init(&maps, map_cols, ARRAY_SIZE(map_cols));
	if (opt.json) {
		jlinks = json_array();
		jmaps = json_object();
		if (!jlinks || !jmaps) {
			err = -ENOMEM;
			goto out;
		}
	}
	err_links = status_links(&links, jlinks);
	err_maps = status_maps(&maps, jmaps);
	err_msg = status_sk_msg(&msg_id, msg_name, sizeof(msg_name));
	dump = admin_config_dump(why, sizeof(why));

	if (opt.json) {
		doc = json_pack("{s:s, s:b, s:O, s:O, s:o, s:O?, s:O?, s:s?}", "bpffs", opt.bpffs,
				"bpffs_mounted", 1, "links", jlinks, "maps", jmaps,
				"sk_msg", msg_id ? json_pack("{s:I, s:s}", "prog_id",
					JI(msg_id), "prog_name", msg_name) : json_null(),
				"source", json_object_get(dump, "source"),
				"ready", json_object_get(dump, "ready"),
				"source_error", dump ? NULL : why);
		err = json_emit(doc);
	} else {
		status_source(dump, why);
		printf("pin root: %s (bpffs mounted)\n\n", opt.bpffs);
		err = table_print(&links);
		putchar('\n');
		if (!err)
			err = table_print(&maps);
		putchar('\n');
		if (msg_id)
			printf("sk_msg on %s: %s (prog id %u)\n", SKM_MAP_SOCK_HASH,
			       msg_name, msg_id);
		else if (!err_msg)
			printf("sk_msg on %s: none attached\n", SKM_MAP_SOCK_HASH);
		else if (err_msg != -ENOENT)
			printf("sk_msg on %s: unknown (%s)\n", SKM_MAP_SOCK_HASH,
			       strerror(-err_msg));
	}
	if (!err)
		err = err_links ?: err_maps;
out:
	json_decref(doc);
	json_decref(dump);
	json_decref(jlinks);
	json_decref(jmaps);
	table_free(&links);
	table_free(&maps);
	return err;
}

/* ---- services -------------------------------------------------------- */

struct svc_row {
	struct skm_svc_key key;
	struct skm_svc_val val;
	struct skm_name_val nv;
};

struct backend {
	__u32 ip;		/* network order */
	__u16 port;		/* network order */
	__u32 weight;		/* slots held in the set */
};

static int cmp_svc_row(const void *a, const void *b)
{
	const struct svc_row *x = a, *y = b;
	int c = cmp_names(&x->nv, &y->nv);

	if (c)
		return c;
	if (x->key.vip != y->key.vip)
		return ntohl(x->key.vip) < ntohl(y->key.vip) ? -1 : 1;
	if (x->key.port != y->key.port)
		return ntohs(x->key.port) < ntohs(y->key.port) ? -1 : 1;
	return (int)x->key.proto - (int)y->key.proto;
}

static int cmp_backend(const void *a, const void *b)
{
	const struct backend *x = a, *y = b;

	if (x->ip != y->ip)
		return ntohl(x->ip) < ntohl(y->ip) ? -1 : 1;
	return (int)ntohs(x->port) - (int)ntohs(y->port);
}

/* Folds the slots of a backend set into distinct backends with weight =
 * slots held. Returns how many; *missing counts slots not found, which
 * happens while meshd replaces a set. */
static size_t backends_get(int be_fd, const struct skm_svc_val *sv,
			   struct backend *be, __u32 *missing)
{
	__u32 nslots = sv->nslots, slot;
	size_t n = 0, i;

	*missing = 0;
	if (nslots > SKM_MAX_SLOTS_PER_SVC)	/* never written so; @be is that big */
		nslots = SKM_MAX_SLOTS_PER_SVC;
	for (slot = 0; slot < nslots; slot++) {
		struct skm_be_key key = { .set_id = sv->set_id, .slot = slot };
		struct skm_be_val bv;

		if (bpf_map_lookup_elem(be_fd, &key, &bv)) {
			(*missing)++;
			continue;
		}
		for (i = 0; i < n; i++)
			if (be[i].ip == bv.ip && be[i].port == bv.port)
				break;
		if (i == n)
			be[n++] = (struct backend){ .ip = bv.ip, .port = bv.port };
		be[i].weight++;
	}
	qsort(be, n, sizeof(*be), cmp_backend);
	return n;
}

/* "10.0.0.1:80 w=1, 10.0.0.2:80 w=3" for the table; caller frees */
static char *backends_str(const struct backend *be, size_t n, __u32 missing)
{
	char *buf = NULL;
	size_t len, i;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	for (i = 0; i < n; i++)
		fprintf(f, "%s%s w=%u", i ? ", " : "",
			addr_fmt(be[i].ip, ntohs(be[i].port)).s, be[i].weight);
	if (!n && !missing)
		fputs("none (connect refused)", f);
	if (missing)
		fprintf(f, "%s%u slot%s missing", n ? ", " : "", missing,
			missing == 1 ? "" : "s");
	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	return buf;
}

static int cmd_services(void)
{
	static const struct col cols[] = {
		LEFT("NAMESPACE"), LEFT("NAME"), LEFT("VIP"), RIGHT("PORT"),
		LEFT("PROTO"), LEFT("BACKENDS"),
	};
	struct backend be[SKM_MAX_SLOTS_PER_SVC];
	struct pmap svcs, bes, names;
	struct svc_row *rows = NULL;
	struct kv_list l;
	struct table t;
	json_t *arr = NULL;
	size_t i, j, nbe;
	__u32 missing;
	int err;

	table_init(&t, cols, ARRAY_SIZE(cols));
	err = map_open(SKM_MAP_SERVICES, &svcs, false);
	if (err)
		return err;
	err = map_open(SKM_MAP_BACKENDS, &bes, false);
	if (err)
		goto out_svcs;
	map_open(SKM_MAP_NAMES, &names, true);	/* names are optional */
	err = map_collect(&svcs, &l, false);
	if (err)
		goto out_maps;

	rows = calloc(l.n ?: 1, sizeof(*rows));
	arr = json_array();
	if (!rows || !arr) {
		err = -ENOMEM;
		goto out_free;
	}
	for (i = 0; i < l.n; i++) {
		memcpy(&rows[i].key, kv_key(&l, i), sizeof(rows[i].key));
		memcpy(&rows[i].val, kv_val(&l, i), sizeof(rows[i].val));
		name_get(names.fd, SKM_NAME_SERVICE, rows[i].val.svc_id, &rows[i].nv);
	}
	qsort(rows, l.n, sizeof(*rows), cmp_svc_row);

	for (i = 0; i < l.n && !err; i++) {
		const struct svc_row *r = &rows[i];

		nbe = backends_get(bes.fd, &r->val, be, &missing);
		if (opt.json) {
			json_t *jbe = json_array(), *obj;

			for (j = 0; jbe && j < nbe; j++)
				if (json_push(jbe, json_pack("{s:s, s:i, s:I}",
						"ip", addr_fmt(be[j].ip, -1).s,
						"port", ntohs(be[j].port),
						"weight", JI(be[j].weight))))
					break;
			obj = json_pack("{s:s?, s:s?, s:I, s:s, s:i, s:s, s:o}",
				"namespace", or_null(r->nv.ns), "name", or_null(r->nv.name),
				"svc_id", JI(r->val.svc_id), "vip", addr_fmt(r->key.vip, -1).s,
				"port", ntohs(r->key.port), "protocol", proto_str(r->key.proto),
				"backends", jbe);
			/* only while meshd swaps a set: not worth a column */
			if (obj && missing)
				json_object_set_new(obj, "missing_slots", json_integer(missing));
			err = json_push(arr, obj) ?: (j < nbe ? -ENOMEM : 0);
		} else {
			char *s = backends_str(be, nbe, missing);

			table_row(&t, "%s\t%s\t%s\t%u\t%s\t%s", dash(r->nv.ns),
				  dash(r->nv.name), addr_fmt(r->key.vip, -1).s,
				  ntohs(r->key.port), proto_str(r->key.proto),
				  s ? s : "?");
			if (!s)
				err = -ENOMEM;
			free(s);
		}
	}
	if (!err)
		err = opt.json ? json_emit(arr) : table_print(&t);

out_free:
	json_decref(arr);
	free(rows);
	kv_free(&l);
out_maps:
	map_close(&names);
	map_close(&bes);
out_svcs:
	map_close(&svcs);
	table_free(&t);
	return err;
}

/* ---- watch ----------------------------------------------------------- */

static void on_signal(int sig)
{
	stop = 1;
}

/* Ctrl-C (or SIGTERM) ends a --watch loop after the round it is in. */
static void watch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };	/* no SA_RESTART */

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* Sleeps @secs, or less when a signal sets stop. */
static void sleep_secs(double secs)
{
	struct timespec ts = {
		.tv_sec = (time_t)secs,
		.tv_nsec = (long)((secs - (time_t)secs) * 1e9),
	};

	/* a signal cuts the sleep short: nanosleep fails with EINTR */
	while (!stop && nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Starts a round of --watch output for command @name: on a terminal the
 * screen is cleared, as top(1) does; in a pipe or file the rounds follow
 * one another. JSON gets no header: one document per round, for jq. */
static void watch_header(const char *name)
{
	static bool first = true;
	char now[16];
	time_t t;

	if (!opt.watch || opt.json)
		return;
	t = time(NULL);
	strftime(now, sizeof(now), "%H:%M:%S", localtime(&t));
	if (isatty(STDOUT_FILENO))
		fputs("\033[H\033[2J", stdout);
	else if (!first)
		putchar('\n');
	first = false;
	printf("Every %gs: meshctl %s    %s\n\n",
	       strcmp(name, "top") ? opt.watch : opt.interval, name, now);
}

/* ---- connections ----------------------------------------------------- */

/* How the connection's bytes travel, named as in meshd's access log. */
static const char *conn_path(const struct skm_conn *c)
{
	if (c->flags & SKM_CONN_TUNNEL)
		return "tunnelled";	/* through meshd's HBONE tunnel */
	if (c->flags & SKM_CONN_ACCEL)
		return "accelerated";	/* sk_msg, socket to socket */
	return "passthrough";		/* the TCP/IP stack */
}

/* A tunnelled socket's bytes while it is open: the kernel counts them at
 * its close only (its packets run no program), and meshd's tunnel
 * publishes what each stream carried in skm_tun_bytes once a second,
 * under the pod socket's 4-tuple. Without the map (no tunnel) nothing
 * changes. */
static void tun_bytes_apply(struct kv_list *l)
{
	struct pmap m;

	if (map_open(SKM_MAP_TUN_BYTES, &m, true))
		return;
	/* only with the tunnel, so not among map_specs: checked here */
	for (size_t i = 0; m.info.key_size == sizeof(struct skm_sock_key) &&
			   m.info.value_size == sizeof(struct skm_tun_bytes) && i < l->n; i++) {
		struct skm_conn *c = kv_val(l, i);
		struct skm_tun_bytes b;

		if (!(c->flags & SKM_CONN_TUNNEL) || c->state == BPF_TCP_CLOSE ||
		    bpf_map_lookup_elem(m.fd, &c->tuple, &b))
			continue;
		if (b.tx > c->tx_bytes)
			c->tx_bytes = b.tx;
		if (b.rx > c->rx_bytes)
			c->rx_bytes = b.rx;
	}
	map_close(&m);
}

static int cmd_conns(void)
{
	static const struct col cols[] = {
		RIGHT("COOKIE"), LEFT("SRC"), LEFT("DST"), LEFT("ORIG_DST"),
		LEFT("STATE"), LEFT("PATH"), LEFT("ROLE"), RIGHT("TX_BYTES"),
		RIGHT("RX_BYTES"), RIGHT("SRTT_US"), RIGHT("AGE"),
	};
	struct pmap conns;
	struct kv_list l;
	struct table t;
	json_t *arr = NULL;
	__u64 now;
	size_t i;
	int err;

	table_init(&t, cols, ARRAY_SIZE(cols));
	err = map_open(SKM_MAP_CONNS, &conns, false);
	if (err)
		return err;
	err = map_collect(&conns, &l, false);
	if (err)
		goto out_map;
	tun_bytes_apply(&l);
	qsort(l.data, l.n, l.rec_size, cmp_u64_key);
	now = mono_ns();	/* after the walk: no record is younger */
	arr = json_array();
	if (!arr) {
		err = -ENOMEM;
		goto out_free;
	}

	for (i = 0; i < l.n && !err; i++) {
		unsigned long long cookie = *(__u64 *)kv_key(&l, i);
		const struct skm_conn *c = kv_val(&l, i);
		const char *path = conn_path(c);
		const char *role = c->flags & SKM_CONN_ACTIVE ? "client" : "server";
		struct addr_str src = addr_fmt(c->tuple.sip, c->tuple.sport & 0xffff);
		struct addr_str dst = addr_fmt(c->tuple.dip, c->tuple.dport & 0xffff);
		struct addr_str orig = addr_fmt(c->orig_ip, ntohs(c->orig_port));
		__u64 age = c->start_ns && now > c->start_ns ?
			    (now - c->start_ns) / NSEC_PER_SEC : 0;
		char state[24], agebuf[24];

		tcp_state_str(c->state, state, sizeof(state));
		if (opt.json) {
			/* cookies count up from 1: json_int_t never wraps */
			err = json_push(arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s,"
						       " s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
				"cookie", JI(cookie), "src", src.s, "dst", dst.s,
				"orig_dst", orig.s, "state", state, "path", path,
				"role", role, "tx_bytes", JI(c->tx_bytes),
				"rx_bytes", JI(c->rx_bytes), "tx_msgs", JI(c->tx_msgs),
				"segs_in", JI(c->segs_in), "segs_out", JI(c->segs_out),
				"retrans", JI(c->total_retrans), "srtt_us", JI(c->srtt_us),
				"age_s", JI(age), "svc_id", JI(c->svc_id)));
		} else {
			age_str(age, agebuf, sizeof(agebuf));
			table_row(&t, "%llu\t%s\t%s\t%s\t%s\t%s\t%s\t%llu\t%llu\t%u\t%s",
				  cookie, src.s, dst.s, orig.s, state, path, role,
				  (unsigned long long)c->tx_bytes,
				  (unsigned long long)c->rx_bytes, c->srtt_us, agebuf);
		}
	}
	if (!err)
		err = opt.json ? json_emit(arr) : table_print(&t);

out_free:
	json_decref(arr);
	kv_free(&l);
out_map:
	map_close(&conns);
	table_free(&t);
	return err;
}

/* ---- top ------------------------------------------------------------- */

/* meshctl top reads skm_conns twice, an interval apart, and ranks the
 * connections by what they moved in between. A row is a connection seen
 * from its client: SRC dialled DST, TX is what SRC sent, RX what it got. */

struct top_sample {
	struct kv_list l;	/* skm_conns, sorted by cookie */
	__u64 t_ns;		/* CLOCK_MONOTONIC when the walk ended */
};

struct top_row {
	__u64 cookie;
	const struct skm_conn *c;
	__u64 tx, rx;		/* bytes the client sent and received */
	double tx_rate, rx_rate;	/* bytes per second over the interval */
	__u64 age_ns;
};

static void top_sample_free(struct top_sample *s)
{
	kv_free(&s->l);
	s->t_ns = 0;
}

static int top_read(const struct pmap *conns, struct top_sample *s)
{
	int err = map_collect(conns, &s->l, false);

	if (err)
		return err;
	tun_bytes_apply(&s->l);
	if (s->l.n)
		qsort(s->l.data, s->l.n, s->l.rec_size, cmp_u64_key);
	s->t_ns = mono_ns();	/* after the walk: no record is younger */
	return 0;
}

static const struct skm_conn *top_find(const struct top_sample *s, __u64 cookie)
{
	const char *rec = s->l.n ? bsearch(&cookie, s->l.data, s->l.n,
					   s->l.rec_size, cmp_u64_key) : NULL;

	return rec ? (const void *)(rec + s->l.val_off) : NULL;
}

/* Bytes of @c from its client's side: a server record's rx is what the
 * client sent. */
static void conn_client_bytes(const struct skm_conn *c, __u64 *tx, __u64 *rx)
{
	bool client = c->flags & SKM_CONN_ACTIVE;

	*tx = client ? c->tx_bytes : c->rx_bytes;
	*rx = client ? c->rx_bytes : c->tx_bytes;
}

static int cmp_top_row(const void *a, const void *b)
{
	const struct top_row *x = a, *y = b;
	double kx, ky;

	switch (opt.sort) {
	case SORT_BYTES:
		kx = (double)(x->tx + x->rx);
		ky = (double)(y->tx + y->rx);
		break;
	case SORT_AGE:
		kx = (double)x->age_ns;
		ky = (double)y->age_ns;
		break;
	default:
		kx = x->tx_rate + x->rx_rate;
		ky = y->tx_rate + y->rx_rate;
		break;
	}
	if (kx != ky)
		return kx > ky ? -1 : 1;	/* the biggest first */
	return (x->cookie > y->cookie) - (x->cookie < y->cookie);
}

/* The connections of @cur with their rates since @prev; *n rows. Both
 * ends of a same-node connection have a record (linked by peer_cookie):
 * the client's stands for both. A connection opened after @prev counts
 * from its start; one closed since is not in @cur, so it is not shown. */
static struct top_row *top_rows(const struct top_sample *prev,
				const struct top_sample *cur, size_t *n)
{
	struct top_row *rows = calloc(cur->l.n ?: 1, sizeof(*rows));
	size_t i;

	*n = 0;
	if (!rows)
		return NULL;
	for (i = 0; i < cur->l.n; i++) {
		const struct skm_conn *c = kv_val(&cur->l, i), *pc, *old;
		struct top_row *r = &rows[*n];
		__u64 from_ns = prev->t_ns, tx0 = 0, rx0 = 0;
		double secs;

		if (!(c->flags & SKM_CONN_ACTIVE) && c->peer_cookie &&
		    (pc = top_find(cur, c->peer_cookie)) &&
		    (pc->flags & SKM_CONN_ACTIVE))
			continue;
		r->cookie = *(__u64 *)kv_key(&cur->l, i);
		r->c = c;
		conn_client_bytes(c, &r->tx, &r->rx);
		old = top_find(prev, r->cookie);
		if (old)
			conn_client_bytes(old, &tx0, &rx0);
		else if (c->start_ns > from_ns)
			from_ns = c->start_ns;
		/* a floor of 1 ms: a connection a few microseconds old
		 * would show an absurd rate */
		secs = (cur->t_ns > from_ns ? cur->t_ns - from_ns : 0) / 1e9;
		if (secs < 1e-3)
			secs = 1e-3;
		r->tx_rate = r->tx > tx0 ? (r->tx - tx0) / secs : 0;
		r->rx_rate = r->rx > rx0 ? (r->rx - rx0) / secs : 0;
		r->age_ns = c->start_ns && cur->t_ns > c->start_ns ?
			    cur->t_ns - c->start_ns : 0;
		(*n)++;
	}
	qsort(rows, *n, sizeof(*rows), cmp_top_row);
	return rows;
}

/* 1234567 with unit "B/s" -> "1.23MB/s": decimal prefixes, as network
 * rates go, three significant digits. */
static void si_str(double v, const char *unit, char *buf, size_t len)
{
	static const char prefix[] = "kMGTPE";
	int i = -1;

	while (v >= 999.5 && i + 1 < (int)sizeof(prefix) - 1) {
		v /= 1000;
		i++;
	}
	if (i < 0)
		snprintf(buf, len, "%.0f%s", v, unit);
	else
		snprintf(buf, len, "%.*f%c%s", v < 9.995 ? 2 : v < 99.95 ? 1 : 0,
			 v, prefix[i], unit);
}

static void srtt_str(__u32 us, char *buf, size_t len)
{
	if (us < 1000)
		snprintf(buf, len, "%uus", us);
	else if (us < 1000000)
		snprintf(buf, len, "%.1fms", us / 1e3);
	else
		snprintf(buf, len, "%.2fs", us / 1e6);
}

/* "namespace/name" of the workload with address @ip (network order);
 * "" when it is none, or meshd stored no name for it. */
static void wl_name_by_ip(int wls_fd, int names_fd, __u32 ip, char *buf,
			  size_t len)
{
	struct skm_name_val nv;
	struct skm_wl_val wv;

	buf[0] = '\0';
	if (ip && wls_fd >= 0 && !bpf_map_lookup_elem(wls_fd, &ip, &wv) &&
	    name_get(names_fd, SKM_NAME_WORKLOAD, wv.wl_id, &nv))
		snprintf(buf, len, "%s/%s", nv.ns, nv.name);
}

/* The ends of @c as its client sees them: @src the client, @dst what it
 * dialled (a service VIP stays a VIP), @peer the address the socket is
 * connected to, and @dst_ip the address whose workload was reached (0:
 * unknown, a tunnelled connection to a VIP). */
static void conn_ends(const struct skm_conn *c, struct addr_str *src,
		      struct addr_str *dst, struct addr_str *peer, __u32 *src_ip,
		      __u32 *dst_ip)
{
	const struct skm_sock_key *k = &c->tuple;

	if (c->flags & SKM_CONN_ACTIVE) {
		*src = addr_fmt(k->sip, k->sport & 0xffff);
		*dst = addr_fmt(c->orig_ip, ntohs(c->orig_port));
		*peer = addr_fmt(k->dip, k->dport & 0xffff);
		*src_ip = k->sip;
		/* a captured socket is connected to meshd, not to its
		 * destination: only what it dialled says where it goes */
		if (c->flags & SKM_CONN_TUNNEL)
			*dst_ip = c->flags & SKM_CONN_VIA_VIP ? 0 : c->orig_ip;
		else
			*dst_ip = k->dip;
	} else {
		*src = addr_fmt(k->dip, k->dport & 0xffff);
		*dst = addr_fmt(k->sip, k->sport & 0xffff);
		*peer = *src;
		*src_ip = k->dip;
		*dst_ip = k->sip;
	}
}

/* One round of top: a summary line and a table, or a JSON array. */
static int top_show(const struct top_sample *prev, const struct top_sample *cur,
		    int wls_fd, int names_fd)
{
	static const struct col cols[] = {
		LEFT("SRC"), LEFT("DST"), LEFT("PATH"), RIGHT("TX/s"), RIGHT("RX/s"),
		RIGHT("TX"), RIGHT("RX"), RIGHT("SRTT"), RIGHT("AGE"),
		LEFT("SRC_WORKLOAD"), LEFT("DST_WORKLOAD"),
	};
	static const char *const sort_names[] = {
		[SORT_RATE] = "rate", [SORT_BYTES] = "bytes", [SORT_AGE] = "age",
	};
	struct top_row *rows;
	struct table t;
	json_t *arr = NULL;
	double total = 0;
	size_t i, n, shown;
	char rate[24];
	int err = 0;

	rows = top_rows(prev, cur, &n);
	if (!rows)
		return -ENOMEM;
	shown = opt.top_n && opt.top_n < n ? opt.top_n : n;
	table_init(&t, cols, ARRAY_SIZE(cols));
	if (opt.json) {
		arr = json_array();
		if (!arr)
			err = -ENOMEM;
	} else {
		for (i = 0; i < n; i++)
			total += rows[i].tx_rate + rows[i].rx_rate;
		si_str(total, "B/s", rate, sizeof(rate));
		printf("%zu connection%s, %s in total over %.3gs; %s%zu by %s\n\n",
		       n, n == 1 ? "" : "s", rate,
		       (cur->t_ns - prev->t_ns) / 1e9,
		       shown < n ? "the top " : "all ", shown, sort_names[opt.sort]);
	}

	for (i = 0; i < shown && !err; i++) {
		const struct top_row *r = &rows[i];
		const struct skm_conn *c = r->c;
		struct addr_str src, dst, peer;
		char src_wl[sizeof(struct skm_name_val) + 1];
		char dst_wl[sizeof(struct skm_name_val) + 1];
		char svc[sizeof(struct skm_name_val) + 1] = "";
		struct skm_name_val nv;
		__u32 src_ip, dst_ip;
		char state[24];

		conn_ends(c, &src, &dst, &peer, &src_ip, &dst_ip);
		wl_name_by_ip(wls_fd, names_fd, src_ip, src_wl, sizeof(src_wl));
		wl_name_by_ip(wls_fd, names_fd, dst_ip, dst_wl, sizeof(dst_wl));
		if (opt.json) {
			json_t *obj;

			if ((c->flags & SKM_CONN_VIA_VIP) &&
			    name_get(names_fd, SKM_NAME_SERVICE, c->svc_id, &nv))
				snprintf(svc, sizeof(svc), "%s/%s", nv.ns, nv.name);
			tcp_state_str(c->state, state, sizeof(state));
			obj = json_pack("{s:I, s:I, s:s, s:s, s:s, s:s, s:b, s:s?, s:s, s:s}",
				"cookie", JI(r->cookie), "peer_cookie", JI(c->peer_cookie),
				"role", c->flags & SKM_CONN_ACTIVE ? "client" : "server",
				"src", src.s, "dst", dst.s, "dst_addr", peer.s,
				"via_vip", !!(c->flags & SKM_CONN_VIA_VIP),
				"service", or_null(svc), "path", conn_path(c),
				"state", state);
			/* rates rounded to whole bytes per second */
			if (obj && json_object_update_new(obj, json_pack(
				"{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s?, s:s?}",
				"tx_rate", JI(r->tx_rate + 0.5),
				"rx_rate", JI(r->rx_rate + 0.5),
				"rate", JI(r->tx_rate + r->rx_rate + 0.5),
				"tx_bytes", JI(r->tx), "rx_bytes", JI(r->rx),
				"bytes", JI(r->tx + r->rx), "srtt_us", JI(c->srtt_us),
				"age_s", JI(r->age_ns / NSEC_PER_SEC),
				"src_workload", or_null(src_wl),
				"dst_workload", or_null(dst_wl)))) {
				json_decref(obj);
				obj = NULL;
			}
			err = json_push(arr, obj);
		} else {
			char txr[24], rxr[24], tx[24], rx[24], srtt[24], age[24];

			si_str(r->tx_rate, "B/s", txr, sizeof(txr));
			si_str(r->rx_rate, "B/s", rxr, sizeof(rxr));
			si_str((double)r->tx, "B", tx, sizeof(tx));
			si_str((double)r->rx, "B", rx, sizeof(rx));
			srtt_str(c->srtt_us, srtt, sizeof(srtt));
			age_str(r->age_ns / NSEC_PER_SEC, age, sizeof(age));
			table_row(&t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s",
				  src.s, dst.s, conn_path(c), txr, rxr, tx, rx,
				  srtt, age, dash(src_wl), dash(dst_wl));
		}
	}
	if (!err)
		err = opt.json ? json_emit(arr) : table_print(&t);
	json_decref(arr);
	table_free(&t);
	free(rows);
	return err;
}

static int cmd_top(void)
{
	struct top_sample prev = {}, cur = {};
	struct pmap conns, wls, names;
	int err;

	err = map_open(SKM_MAP_CONNS, &conns, false);
	if (err)
		return err;
	/* names are a nicety: without them the rows show addresses */
	map_open(SKM_MAP_WORKLOADS, &wls, true);
	map_open(SKM_MAP_NAMES, &names, true);
	if (opt.watch)
		watch_signals();

	err = top_read(&conns, &prev);
	while (!err) {
		sleep_secs(opt.interval);
		if (stop)	/* Ctrl-C before a second sample: nothing to rank */
			break;
		err = top_read(&conns, &cur);
		if (err)
			break;
		watch_header("top");
		err = top_show(&prev, &cur, wls.fd, names.fd);
		fflush(stdout);
		/* the newer sample is the start of the next interval */
		top_sample_free(&prev);
		prev = cur;
		memset(&cur, 0, sizeof(cur));
		if (!opt.watch || stop)
			break;
	}
	top_sample_free(&prev);
	top_sample_free(&cur);
	map_close(&names);
	map_close(&wls);
	map_close(&conns);
	return err;
}

/* ---- workloads ------------------------------------------------------- */

struct wl_row {
	__u32 ip;
	struct skm_wl_val val;
	struct skm_name_val nv;
};

static int cmp_wl_row(const void *a, const void *b)
{
	const struct wl_row *x = a, *y = b;
	int c = cmp_names(&x->nv, &y->nv);

	if (c)
		return c;
	return ntohl(x->ip) < ntohl(y->ip) ? -1 : ntohl(x->ip) > ntohl(y->ip);
}

static int cmd_workloads(void)
{
	static const struct col cols[] = {
		LEFT("NAMESPACE"), LEFT("NAME"), LEFT("IP"), RIGHT("WL_ID"),
		LEFT("FLAGS"), RIGHT("NS_ID"), RIGHT("SA_ID"), LEFT("POLICY"),
		LEFT("NETNS"), RIGHT("POL_SET"),
	};
	struct pmap wls, names;
	struct wl_row *rows = NULL;
	struct kv_list l;
	struct table t;
	json_t *arr = NULL;
	size_t i;
	int err;

	table_init(&t, cols, ARRAY_SIZE(cols));
	err = map_open(SKM_MAP_WORKLOADS, &wls, false);
	if (err)
		return err;
	map_open(SKM_MAP_NAMES, &names, true);
	err = map_collect(&wls, &l, false);
	if (err)
		goto out_maps;
	rows = calloc(l.n ?: 1, sizeof(*rows));
	arr = json_array();
	if (!rows || !arr) {
		err = -ENOMEM;
		goto out_free;
	}
	for (i = 0; i < l.n; i++) {
		rows[i].ip = *(__u32 *)kv_key(&l, i);
		memcpy(&rows[i].val, kv_val(&l, i), sizeof(rows[i].val));
		name_get(names.fd, SKM_NAME_WORKLOAD, rows[i].val.wl_id, &rows[i].nv);
	}
	qsort(rows, l.n, sizeof(*rows), cmp_wl_row);

	for (i = 0; i < l.n && !err; i++) {
		const struct wl_row *r = &rows[i];
		bool local = r->val.flags & SKM_WL_LOCAL;
		bool meshed = r->val.flags & SKM_WL_MESHED;
		bool policy = r->val.flags & SKM_WL_POLICY;
		bool netns = r->val.flags & SKM_WL_NETNS;

		if (opt.json) {
			err = json_push(arr, json_pack("{s:s?, s:s?, s:s, s:I, s:b, s:b, s:I, s:I,"
						       " s:b, s:b, s:I}",
				"namespace", or_null(r->nv.ns), "name", or_null(r->nv.name),
				"ip", addr_fmt(r->ip, -1).s, "wl_id", JI(r->val.wl_id),
				"local", local, "meshed", meshed,
				"ns_id", JI(r->val.ns_id), "sa_id", JI(r->val.sa_id),
				"policy", policy, "netns_known", netns,
				"pol_set", JI(r->val.pol_set)));
		} else {
			char pol_set[16] = "-";	/* 0: no compiled set */

			if (r->val.pol_set)
				snprintf(pol_set, sizeof(pol_set), "%u", r->val.pol_set);
			table_row(&t, "%s\t%s\t%s\t%u\t%s\t%u\t%u\t%s\t%s\t%s", dash(r->nv.ns),
				  dash(r->nv.name), addr_fmt(r->ip, -1).s, r->val.wl_id,
				  local && meshed ? "local,meshed" : local ? "local" :
				  meshed ? "meshed" : "-", r->val.ns_id, r->val.sa_id,
				  policy ? "yes" : "no", netns ? "yes" : "no", pol_set);
		}
	}
	if (!err)
		err = opt.json ? json_emit(arr) : table_print(&t);

out_free:
	json_decref(arr);
	free(rows);
	kv_free(&l);
out_maps:
	map_close(&names);
	map_close(&wls);
	table_free(&t);
	return err;
}

/* ---- policy ---------------------------------------------------------- */

/* What connect4 (skm_verdicts) and TC (skm_plain) enforce for each local
 * destination with a policy, read back from the compiled sets. */

static __u32 verdict_set_of(const void *rec)
{
	return ((const struct skm_verdict_key *)rec)->pol_set;
}

static __u32 plain_set_of(const void *rec)
{
	return ntohl(((const struct skm_plain_key *)rec)->pol_set);
}

static int cmp_verdict_set(const void *a, const void *b)
{
	__u32 x = verdict_set_of(a), y = verdict_set_of(b);

	return (x > y) - (x < y);
}

static int cmp_plain_set(const void *a, const void *b)
{
	__u32 x = plain_set_of(a), y = plain_set_of(b);

	return (x > y) - (x < y);
}

/* First record of @l (sorted by @set_of) whose set is >= @set, or > @set
 * when @after. */
static size_t kv_bound(const struct kv_list *l, __u32 (*set_of)(const void *),
		       __u32 set, bool after)
{
	size_t lo = 0, hi = l->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		__u32 s = set_of(kv_key(l, mid));

		if (s < set || (after && s == set))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Named ports in order, then 0: "any port the policies do not name". */
static int cmp_port(__u16 a, __u16 b)
{
	if (a == b)
		return 0;
	if (!a || !b)
		return !a - !b;
	return a < b ? -1 : 1;
}

struct verdict_row {
	const struct skm_verdict_key *key;
	const struct skm_verdict *v;
	struct skm_name_val src;	/* the source workload's names */
};

static int cmp_verdict_row(const void *a, const void *b)
{
	const struct verdict_row *x = a, *y = b;
	int c = cmp_names(&x->src, &y->src);

	if (!c && x->key->src_id != y->key->src_id)
		c = x->key->src_id < y->key->src_id ? -1 : 1;
	return c ?: cmp_port(x->key->port, y->key->port);
}

struct plain_row {
	__u32 src;		/* host order, masked to len */
	int len;		/* source prefix length, -1: prefixlen out of range */
	__u32 prefixlen;
	__u16 port;		/* host order */
	const struct skm_verdict *v;
};

static int cmp_plain_row(const void *a, const void *b)
{
	const struct plain_row *x = a, *y = b;

	if (x->src != y->src)
		return x->src < y->src ? -1 : 1;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return cmp_port(x->port, y->port);
}

/* "ns/name" of a workload, or "id N" when meshd stored no name */
struct wl_label {
	char s[sizeof(((struct skm_name_val *)0)->ns) +
	       sizeof(((struct skm_name_val *)0)->name) + 1];
};

static struct wl_label wl_label_fmt(const struct skm_name_val *nv, __u32 id)
{
	struct wl_label w;

	if (nv->name[0])
		snprintf(w.s, sizeof(w.s), "%s/%s", nv->ns, nv->name);
	else
		snprintf(w.s, sizeof(w.s), "id %u", id);
	return w;
}

/* The deciding policy and the why of a verdict (skm_names kind REASON).
 * Unknown reasons: policy NULL and why NULL; a verdict no policy decided:
 * policy "-". */
struct reason {
	struct skm_name_val nv;
	bool known;
	char fallback[32];
};

static void reason_get(int names_fd, __u32 id, struct reason *r)
{
	r->known = name_get(names_fd, SKM_NAME_REASON, id, &r->nv);
	snprintf(r->fallback, sizeof(r->fallback), "reason %u (unnamed)", id);
}

static const char *reason_policy(const struct reason *r, bool json)
{
	if (!r->known)
		return json ? NULL : "?";
	if (json && !strcmp(r->nv.ns, "-"))
		return NULL;
	return json ? or_null(r->nv.ns) : dash(r->nv.ns);
}

static const char *reason_why(const struct reason *r, bool json)
{
	if (!r->known || !r->nv.name[0])
		return json ? NULL : r->fallback;
	return r->nv.name;
}

static const char *verdict_str(const struct skm_verdict *v)
{
	return v->allow ? "allow" : "deny";
}

/* Adds the same-node verdicts of @set (records [lo, hi) of @l) to @t or
 * @arr. */
static int policy_sources(const struct kv_list *l, size_t lo, size_t hi,
			  int names_fd, struct table *t, json_t *arr)
{
	struct verdict_row *rows = calloc(hi - lo ?: 1, sizeof(*rows));
	size_t i, n = hi - lo;
	int err = 0;

	if (!rows)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		rows[i].key = kv_key(l, lo + i);
		rows[i].v = kv_val(l, lo + i);
		name_get(names_fd, SKM_NAME_WORKLOAD, rows[i].key->src_id, &rows[i].src);
	}
	qsort(rows, n, sizeof(*rows), cmp_verdict_row);

	for (i = 0; i < n && !err; i++) {
		const struct verdict_row *r = &rows[i];
		struct wl_label src = wl_label_fmt(&r->src, r->key->src_id);
		struct reason why;

		reason_get(names_fd, r->v->reason_id, &why);
		if (arr) {
			err = json_push(arr, json_pack("{s:s?, s:I, s:i, s:s, s:s?, s:s?}",
				"source", r->src.name[0] ? src.s : NULL,
				"src_id", JI(r->key->src_id), "port", r->key->port,
				"verdict", verdict_str(r->v),
				"policy", reason_policy(&why, true),
				"reason", reason_why(&why, true)));
		} else {
			char port[8] = "*";

			if (r->key->port)
				snprintf(port, sizeof(port), "%u", r->key->port);
			table_row(t, "%s\t%s\t%s\t%s\t%s", src.s, port,
				  verdict_str(r->v), reason_policy(&why, false),
				  reason_why(&why, false));
		}
	}
	free(rows);
	return err;
}

/* Adds the plaintext verdicts of @set (records [lo, hi) of @l) to @t or
 * @arr. */
static int policy_plain(const struct kv_list *l, size_t lo, size_t hi,
			int names_fd, struct table *t, json_t *arr)
{
	struct plain_row *rows = calloc(hi - lo ?: 1, sizeof(*rows));
	size_t i, n = hi - lo;
	int err = 0;

	if (!rows)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		const struct skm_plain_key *k = kv_key(l, lo + i);
		__u32 src;

		memcpy(&src, k->src, sizeof(src));
		rows[i].prefixlen = k->prefixlen;
		rows[i].len = k->prefixlen >= SKM_PLAIN_PREFIX_BASE &&
			      k->prefixlen <= SKM_PLAIN_PREFIX_BASE + 32 ?
			      (int)(k->prefixlen - SKM_PLAIN_PREFIX_BASE) : -1;
		/* the trie ignores the bits past the prefix: so do we */
		rows[i].src = ntohl(src);
		if (rows[i].len >= 0 && rows[i].len < 32)
			rows[i].src &= rows[i].len ? ~0U << (32 - rows[i].len) : 0;
		rows[i].port = ntohs(k->port);
		rows[i].v = kv_val(l, lo + i);
	}
	qsort(rows, n, sizeof(*rows), cmp_plain_row);

	for (i = 0; i < n && !err; i++) {
		const struct plain_row *r = &rows[i];
		char cidr[INET_ADDRSTRLEN + 24];
		struct reason why;

		if (r->len >= 0)
			snprintf(cidr, sizeof(cidr), "%s/%d",
				 addr_fmt(htonl(r->src), -1).s, r->len);
		else	/* never written so by meshd */
			snprintf(cidr, sizeof(cidr), "%s prefixlen %u",
				 addr_fmt(htonl(r->src), -1).s, r->prefixlen);
		reason_get(names_fd, r->v->reason_id, &why);
		if (arr) {
			err = json_push(arr, json_pack("{s:s, s:i, s:s, s:s?, s:s?}",
				"cidr", cidr, "port", r->port,
				"verdict", verdict_str(r->v),
				"policy", reason_policy(&why, true),
				"reason", reason_why(&why, true)));
		} else {
			char port[8] = "*";

			if (r->port)
				snprintf(port, sizeof(port), "%u", r->port);
			table_row(t, "%s\t%s\t%s\t%s\t%s", cidr, port,
				  verdict_str(r->v), reason_policy(&why, false),
				  reason_why(&why, false));
		}
	}
	free(rows);
	return err;
}

/* Index in @rows of the workload @arg names: "namespace/name", a name
 * that only one namespace uses, or an IP. -ENOENT (reported) when no
 * workload or several match. */
static int wl_resolve(const struct wl_row *rows, size_t n, const char *arg,
		      size_t *idx)
{
	const char *slash = strchr(arg, '/');
	size_t i, hits = 0;
	struct in_addr ip;

	if (inet_pton(AF_INET, arg, &ip) == 1) {
		for (i = 0; i < n; i++) {
			if (rows[i].ip == ip.s_addr) {
				*idx = i;
				return 0;
			}
		}
		pr_err("no workload has IP %s in %s/%s (meshctl workloads lists them)",
		       arg, opt.bpffs, SKM_MAP_WORKLOADS);
		return -ENOENT;
	}
	for (i = 0; i < n; i++) {
		const struct skm_name_val *nv = &rows[i].nv;
		bool match;

		if (!nv->name[0])
			continue;
		if (slash)
			match = (size_t)(slash - arg) == strlen(nv->ns) &&
				!strncmp(arg, nv->ns, slash - arg) &&
				!strcmp(slash + 1, nv->name);
		else
			match = !strcmp(arg, nv->name);
		if (match && !hits++)
			*idx = i;
	}
	if (hits == 1)
		return 0;
	if (!hits) {
		pr_err("workload %s not found in %s/%s (meshctl workloads lists them)",
		       arg, opt.bpffs, SKM_MAP_WORKLOADS);
	} else {
		char *list = NULL;
		size_t len;
		FILE *f = open_memstream(&list, &len);

		for (i = 0; f && i < n; i++)	/* rows are sorted by namespace */
			if (!strcmp(arg, rows[i].nv.name))
				fprintf(f, "%s%s", ftell(f) ? ", " : "", rows[i].nv.ns);
		if (f && fclose(f)) {
			free(list);
			list = NULL;
		}
		pr_err("workload name %s is in %zu namespaces (%s): give namespace/name",
		       arg, hits, list ? list : "?");
		free(list);
	}
	return -ENOENT;
}

/* The workloads, verdicts and plaintext verdicts read at one time. */
struct policy_snap {
	struct wl_row *wls;	/* sorted by namespace, name */
	size_t nwls;
	size_t *dst;		/* indexes in wls of the destinations to show */
	size_t ndst;
	struct kv_list verdicts;	/* sorted by pol_set */
	struct kv_list plain;		/* sorted by pol_set */
};

static void policy_snap_free(struct policy_snap *s)
{
	free(s->wls);
	free(s->dst);
	kv_free(&s->verdicts);
	kv_free(&s->plain);
	memset(s, 0, sizeof(*s));
}

/* Reads the workloads, picks the destinations (opt.arg, or every local
 * one with a policy), then reads both verdict maps. Sets *stable when
 * every destination still points at the same set afterwards: a set meshd
 * switches to is written whole before the switch and the old one deleted
 * after, so a set live before and after the walk was not half replaced.
 * (A change meshd writes into a live set in place may show here as some
 * entries old and some new; see docs/meshctl.md.) */
static int policy_read(const struct pmap *wls, const struct pmap *verdicts,
		       const struct pmap *plain, int names_fd,
		       struct policy_snap *s, bool *stable)
{
	struct kv_list l;
	size_t i;
	int err;

	memset(s, 0, sizeof(*s));
	*stable = true;
	err = map_collect(wls, &l, false);
	if (err)
		return err;
	s->wls = calloc(l.n ?: 1, sizeof(*s->wls));
	s->dst = calloc(l.n ?: 1, sizeof(*s->dst));
	if (!s->wls || !s->dst) {
		err = -ENOMEM;
		goto out;
	}
	s->nwls = l.n;
	for (i = 0; i < l.n; i++) {
		s->wls[i].ip = *(__u32 *)kv_key(&l, i);
		memcpy(&s->wls[i].val, kv_val(&l, i), sizeof(s->wls[i].val));
		name_get(names_fd, SKM_NAME_WORKLOAD, s->wls[i].val.wl_id, &s->wls[i].nv);
	}
	qsort(s->wls, s->nwls, sizeof(*s->wls), cmp_wl_row);

	if (opt.arg) {
		err = wl_resolve(s->wls, s->nwls, opt.arg, &s->dst[0]);
		if (err)
			goto out;
		s->ndst = 1;
	} else {
		for (i = 0; i < s->nwls; i++)
			if ((s->wls[i].val.flags & (SKM_WL_LOCAL | SKM_WL_POLICY)) ==
			    (SKM_WL_LOCAL | SKM_WL_POLICY))
				s->dst[s->ndst++] = i;
	}
	if (!s->ndst)
		goto out;

	err = map_collect(verdicts, &s->verdicts, false);
	if (!err)
		err = map_collect(plain, &s->plain, false);
	if (err)
		goto out;
	if (s->verdicts.n)
		qsort(s->verdicts.data, s->verdicts.n, s->verdicts.rec_size, cmp_verdict_set);
	if (s->plain.n)
		qsort(s->plain.data, s->plain.n, s->plain.rec_size, cmp_plain_set);

	for (i = 0; i < s->ndst && *stable; i++) {
		const struct wl_row *w = &s->wls[s->dst[i]];
		struct skm_wl_val now;

		*stable = !bpf_map_lookup_elem(wls->fd, &w->ip, &now) &&
			  now.pol_set == w->val.pol_set && now.flags == w->val.flags;
	}
out:
	kv_free(&l);
	if (err)
		policy_snap_free(s);
	return err;
}

/* One destination: a header and two tables, or one JSON object. */
static int policy_show(const struct policy_snap *s, const struct wl_row *w,
		       int names_fd, json_t *arr)
{
	static const struct col src_cols[] = {
		LEFT("SOURCE"), RIGHT("PORT"), LEFT("VERDICT"), LEFT("POLICY"),
		LEFT("REASON"),
	};
	static const struct col plain_cols[] = {
		LEFT("SOURCE"), RIGHT("PORT"), LEFT("VERDICT"), LEFT("POLICY"),
		LEFT("REASON"),
	};
	bool local = w->val.flags & SKM_WL_LOCAL;
	bool policy = local && (w->val.flags & SKM_WL_POLICY);
	struct wl_label label = wl_label_fmt(&w->nv, w->val.wl_id);
	struct addr_str ip = addr_fmt(w->ip, -1);
	size_t vlo = 0, vhi = 0, plo = 0, phi = 0;
	json_t *jsrc = NULL, *jplain = NULL;
	struct table srcs, plain;
	int err = 0;

	if (policy) {
		vlo = kv_bound(&s->verdicts, verdict_set_of, w->val.pol_set, false);
		vhi = kv_bound(&s->verdicts, verdict_set_of, w->val.pol_set, true);
		plo = kv_bound(&s->plain, plain_set_of, w->val.pol_set, false);
		phi = kv_bound(&s->plain, plain_set_of, w->val.pol_set, true);
	}

	if (arr) {
		jsrc = json_array();
		jplain = json_array();
		if (!jsrc || !jplain) {
			json_decref(jsrc);
			json_decref(jplain);
			return -ENOMEM;
		}
		err = policy_sources(&s->verdicts, vlo, vhi, names_fd, NULL, jsrc);
		if (!err)
			err = policy_plain(&s->plain, plo, phi, names_fd, NULL, jplain);
		if (err) {
			json_decref(jsrc);
			json_decref(jplain);
			return err;
		}
		return json_push(arr, json_pack("{s:s?, s:s?, s:s, s:I, s:b, s:b, s:o, s:o}",
			"namespace", or_null(w->nv.ns), "name", or_null(w->nv.name),
			"ip", ip.s, "pol_set", JI(policy ? w->val.pol_set : 0),
			"local", local, "policy", policy,
			"sources", jsrc, "plaintext", jplain));
	}

	printf("%s (%s): ", label.s, ip.s);
	if (!local) {
		puts("not on this node: its own node enforces its policy");
		return 0;
	}
	if (!policy) {
		puts("no policy applies: every connection allowed");
		return 0;
	}
	printf("pol_set %u\n\n", w->val.pol_set);
	table_init(&srcs, src_cols, ARRAY_SIZE(src_cols));
	table_init(&plain, plain_cols, ARRAY_SIZE(plain_cols));
	err = policy_sources(&s->verdicts, vlo, vhi, names_fd, &srcs, NULL);
	if (!err)
		err = policy_plain(&s->plain, plo, phi, names_fd, &plain, NULL);
	if (!err) {
		puts("same-node sources (identity known):");
		err = table_print(&srcs);
	}
	if (!err) {
		puts("\nplaintext (no identity), by source address:");
		err = table_print(&plain);
	}
	table_free(&srcs);
	table_free(&plain);
	return err;
}

static int cmd_policy(void)
{
	struct pmap wls, verdicts, plain, names;
	struct policy_snap s = {};
	json_t *arr = NULL;
	bool stable = false;
	size_t i;
	int err, tries;

	err = map_open(SKM_MAP_WORKLOADS, &wls, false);
	if (err)
		return err;
	err = map_open(SKM_MAP_VERDICTS, &verdicts, false);
	if (err)
		goto out_wls;
	err = map_open(SKM_MAP_PLAIN, &plain, false);
	if (err)
		goto out_verdicts;
	map_open(SKM_MAP_NAMES, &names, true);

	/* a set switched during the walk may have been read in part: again */
	for (tries = 0; tries < 3 && !stable; tries++) {
		policy_snap_free(&s);
		err = policy_read(&wls, &verdicts, &plain, names.fd, &s, &stable);
		if (err)
			goto out_maps;
	}
	if (!stable)
		pr_err("policy kept changing while it was read: what follows may be partial");

	if (opt.json) {
		arr = json_array();
		if (!arr) {
			err = -ENOMEM;
			goto out_free;
		}
	} else if (!s.ndst) {
		puts("no local workload has a policy: every connection is allowed");
	}
	for (i = 0; i < s.ndst && !err; i++) {
		if (i && !opt.json)
			putchar('\n');
		err = policy_show(&s, &s.wls[s.dst[i]], names.fd, arr);
	}
	if (!err && opt.json)
		err = json_emit(arr);

out_free:
	json_decref(arr);
out_maps:
	policy_snap_free(&s);
	map_close(&names);
	map_close(&plain);
out_verdicts:
	map_close(&verdicts);
out_wls:
	map_close(&wls);
	return err;
}

/* ---- stats ----------------------------------------------------------- */

static int stats_counters(struct table *t, json_t *obj)
{
	static const char *const stat_names[] = SKM_STAT_NAMES;
	_Static_assert(ARRAY_SIZE(stat_names) == SKM_STAT__MAX,
		       "SKM_STAT_NAMES must name every enum skm_stat");
	struct pmap m;
	struct kv_list l;
	size_t i;
	int err;

	err = map_open(SKM_MAP_STATS, &m, false);
	if (err)
		return err;
	err = map_collect(&m, &l, false);
	map_close(&m);
	if (err)
		return err;
	qsort(l.data, l.n, l.rec_size, cmp_u32_key);
	for (i = 0; i < l.n && !err; i++) {
		__u32 idx = *(__u32 *)kv_key(&l, i);
		__u64 val = *(__u64 *)kv_val(&l, i);
		char name[32];

		/* a newer data path may count more than this meshctl knows */
		if (idx < ARRAY_SIZE(stat_names))
			snprintf(name, sizeof(name), "%s", stat_names[idx]);
		else
			snprintf(name, sizeof(name), "stat%u", idx);
		if (obj) {
			err = json_object_set_new(obj, name, json_integer(JI(val))) ? -ENOMEM : 0;
		} else {
			table_row(t, "%s\t%llu", name, (unsigned long long)val);
		}
	}
	kv_free(&l);
	return err;
}

/* meshd's tunnel counters (skm_tun_stats), when meshd runs the tunnel. */
static int stats_tunnel(struct table *t, json_t *obj)
{
	static const char *const names[] = SKM_TUN_STAT_NAMES;
	_Static_assert(ARRAY_SIZE(names) == SKM_TUN_STAT__MAX,
		       "SKM_TUN_STAT_NAMES must name every enum skm_tun_stat");
	struct pmap m;
	__u32 i;
	int err = map_open(SKM_MAP_TUN_STATS, &m, true);

	if (err == -ENOENT)
		return 0;	/* no tunnel: nothing to show */
	if (err)
		return err;
	for (i = 0; i < SKM_TUN_STAT__MAX && !err; i++) {
		__u64 val = 0;

		if (bpf_map_lookup_elem(m.fd, &i, &val))
			continue;
		if (obj)
			err = json_object_set_new(obj, names[i], json_integer(JI(val))) ? -ENOMEM : 0;
		else
			table_row(t, "%s\t%llu", names[i], (unsigned long long)val);
	}
	map_close(&m);
	return err;
}

static int stats_devices(struct table *t, json_t *arr)
{
	struct pmap stats, devs, names;
	struct kv_list l;
	size_t i;
	int err;

	err = map_open(SKM_MAP_DEV_STATS, &stats, false);
	if (err)
		return err;
	err = map_open(SKM_MAP_DEVS, &devs, false);
	if (err)
		goto out_stats;
	map_open(SKM_MAP_NAMES, &names, true);
	err = map_collect(&stats, &l, false);
	if (err)
		goto out_maps;
	qsort(l.data, l.n, l.rec_size, cmp_u32_key);

	for (i = 0; i < l.n && !err; i++) {
		__u32 ifindex = *(__u32 *)kv_key(&l, i);
		const struct skm_dev_stats *ds = kv_val(&l, i);
		struct skm_dev_val dv = {};
		struct skm_name_val nv = {};
		char ifname[IF_NAMESIZE], wl[sizeof(nv.ns) + sizeof(nv.name) + 1];
		bool known = !bpf_map_lookup_elem(devs.fd, &ifindex, &dv);
		struct addr_str ipbuf = addr_fmt(dv.wl_ip, -1);
		const char *ip = known ? ipbuf.s : NULL;

		/* meshd records the name as its netns knows it; meshctl may
		 * run in another netns, where the index means another device */
		if (known && dv.ifname[0])
			snprintf(ifname, sizeof(ifname), "%.*s", (int)sizeof(dv.ifname), dv.ifname);
		else
			snprintf(ifname, sizeof(ifname), "if%u", ifindex);
		wl[0] = '\0';
		if (known && name_get(names.fd, SKM_NAME_WORKLOAD, dv.wl_id, &nv))
			snprintf(wl, sizeof(wl), "%s/%s", nv.ns, nv.name);

		if (arr) {
			err = json_push(arr, json_pack("{s:I, s:s, s:s?, s:s?, s:I, s:I, s:I, s:I}",
				"ifindex", JI(ifindex), "ifname", ifname,
				"workload_ip", ip, "workload", or_null(wl),
				"pkts_in", JI(ds->pkts_in), "bytes_in", JI(ds->bytes_in),
				"pkts_out", JI(ds->pkts_out), "bytes_out", JI(ds->bytes_out)));
		} else {
			table_row(t, "%u\t%s\t%s\t%s\t%llu\t%llu\t%llu\t%llu",
				  ifindex, ifname, dash(ip), dash(wl),
				  (unsigned long long)ds->pkts_in,
				  (unsigned long long)ds->bytes_in,
				  (unsigned long long)ds->pkts_out,
				  (unsigned long long)ds->bytes_out);
		}
	}
	kv_free(&l);
out_maps:
	map_close(&names);
	map_close(&devs);
out_stats:
	map_close(&stats);
	return err;
}

static int cmd_stats(void)
{
	static const struct col ctr_cols[] = { LEFT("COUNTER"), RIGHT("VALUE") };
	static const struct col dev_cols[] = {
		RIGHT("IFINDEX"), LEFT("IFNAME"), LEFT("WORKLOAD_IP"), LEFT("WORKLOAD"),
		RIGHT("PKTS_IN"), RIGHT("BYTES_IN"), RIGHT("PKTS_OUT"),
		RIGHT("BYTES_OUT"),
	};
	static const struct col tun_cols[] = { LEFT("TUNNEL_COUNTER"), RIGHT("VALUE") };
	struct table ctrs, devs, tun;
	json_t *doc = NULL, *jctrs = NULL, *jdevs = NULL, *jtun = NULL;
	int err;

	table_init(&ctrs, ctr_cols, ARRAY_SIZE(ctr_cols));
	table_init(&devs, dev_cols, ARRAY_SIZE(dev_cols));
	table_init(&tun, tun_cols, ARRAY_SIZE(tun_cols));
	if (opt.json) {
		jctrs = json_object();
		jdevs = json_array();
		jtun = json_object();
		if (!jctrs || !jdevs || !jtun) {
			err = -ENOMEM;
			goto out;
		}
	}
	err = stats_counters(&ctrs, jctrs);
	if (!err)
		err = stats_devices(&devs, jdevs);
	if (!err)
		err = stats_tunnel(&tun, jtun);
	if (err)
		goto out;

	if (opt.json) {
		doc = json_pack("{s:O, s:O, s:O}", "counters", jctrs, "devices", jdevs,
				"tunnel", jtun);
		err = json_emit(doc);
	} else {
		err = table_print(&ctrs);
		putchar('\n');
		if (!err)
			err = table_print(&devs);
		if (!err && tun.ncells) {
			putchar('\n');
			err = table_print(&tun);
		}
	}
out:
	json_decref(doc);
	json_decref(jctrs);
	json_decref(jdevs);
	json_decref(jtun);
	table_free(&ctrs);
	table_free(&devs);
	table_free(&tun);
	return err;
}

/* ---- command line ---------------------------------------------------- */

#define OPT_TOP		(1U << 0)	/* -n, --sort, --interval */
#define OPT_ADMIN	(1U << 1)	/* --admin */

static const struct cmd {
	const char *name;
	int (*fn)(void);
	const char *args;	/* one optional argument, NULL: none */
	unsigned int opts;	/* OPT_*: options only this command takes */
	const char *synopsis;	/* its own options and argument */
	const char *summary;	/* one line for meshctl --help */
	const char *help;
	const char *opts_help;	/* its own options, or NULL */
} cmds[] = {
	{ "status", cmd_status, NULL, OPT_ADMIN, "[--admin ADDR[:PORT]]",
	  "model source and sync state, pinned links and programs, map fill",
	  "Shows where meshd learns the mesh from (a config file, or the\n"
	  "Kubernetes API server with the sync state of each resource type),\n"
	  "as meshd's admin endpoint /config_dump tells it; then the pin root,\n"
	  "each link pinned under DIR/links (link and\n"
	  "program ids, attach type, cgroup id), every map of skmesh.h with its\n"
	  "entries, maximum and fill, and the sk_msg program attached to\n"
	  "skm_sock_hash. Exits 1, after showing the rest, when a map of\n"
	  "skmesh.h is not pinned or does not match it (an admin endpoint that\n"
	  "does not answer is said, and is no failure).\n",
	  "  --admin ADDR[:PORT] meshd's admin endpoint (127.0.0.1:15000)\n" },
	{ "services", cmd_services, NULL, 0, "",
	  "service VIPs and their weighted backends",
	  "Lists skm_services joined with the live backend set of each service,\n"
	  "sorted by namespace and name. BACKENDS are ip:port w=WEIGHT, the\n"
	  "weight being the number of selection slots the backend holds. A\n"
	  "service without backends refuses connections.\n", NULL },
	{ "conns", cmd_conns, NULL, 0, "",
	  "live connections: bytes each way, srtt, age, path",
	  "Lists every live connection record of skm_conns, sorted by socket\n"
	  "cookie. Two sockets of this node connected to each other have a\n"
	  "record each, the client's and the server's.\n"
	  "\n"
	  "SRC and DST are the socket's local and remote address, ORIG_DST what\n"
	  "the application dialled (the VIP of a load-balanced connect). PATH is\n"
	  "accelerated (sk_msg, socket to socket), tunnelled (meshd's HBONE\n"
	  "tunnel) or passthrough (the TCP/IP stack). ROLE is client or server.\n"
	  "TX_BYTES and RX_BYTES count application bytes written and delivered,\n"
	  "SRTT_US is the smoothed RTT, AGE the time since connect or accept.\n",
	  NULL },
	{ "top", cmd_top, NULL, OPT_TOP, "[-n N] [--sort KEY] [--interval SECONDS]",
	  "the busiest live connections, by bytes per second",
	  "Reads skm_conns twice, SECONDS apart, and ranks the connections by the\n"
	  "bytes they moved in between, both ways. A row is one connection seen\n"
	  "from its client: SRC dialled DST (a service VIP as the application\n"
	  "dialled it), TX is what SRC sent, RX what it received. A connection\n"
	  "opened between the samples counts from its start; one that closed\n"
	  "meanwhile is left out.\n"
	  "\n"
	  "Columns: SRC, DST, PATH (accelerated, tunnelled, passthrough), TX/s\n"
	  "and RX/s, TX and RX (bytes since it opened), SRTT, AGE, SRC_WORKLOAD\n"
	  "and DST_WORKLOAD (namespace/name; - for an address of no workload).\n"
	  "Rates and sizes use decimal prefixes (1kB = 1000 bytes); -o json has\n"
	  "exact numbers. A tunnelled connection's bytes are counted by meshd's\n"
	  "tunnel and reach skm_conns when it closes: 0B/s while it is open.\n",
	  "  -n N               rows to show (default 10; 0: every connection)\n"
	  "  --sort KEY         rate: bytes per second (default), bytes: bytes\n"
	  "                     since it opened, age: the oldest first\n"
	  "  --interval SECONDS time between the samples (default 1, fractions\n"
	  "                     allowed); --watch SECONDS sets it too\n" },
	{ "workloads", cmd_workloads, NULL, 0, "",
	  "workload IPs, names, mesh and policy flags",
	  "Lists skm_workloads with the names meshd stored in skm_names.\n"
	  "FLAGS: local (on this node), meshed (captured by the mesh).\n"
	  "POLICY yes: some policy can deny a connection to it (see meshctl\n"
	  "policy). NETNS yes: its netns is known, so connect4 knows it as a\n"
	  "source (skm_netns). POL_SET: its compiled policy set, - if none.\n",
	  NULL },
	{ "policy", cmd_policy, "WORKLOAD", 0, "[WORKLOAD]",
	  "verdicts enforced for local workloads, with the deciding rule",
	  "Shows what the data path enforces for WORKLOAD (namespace/name, a name\n"
	  "only one namespace uses, or its IP), or for every local workload with\n"
	  "a policy when none is given. For each: its compiled policy set and\n"
	  "two tables.\n"
	  "\n"
	  "same-node sources (identity known), from skm_verdicts: what connect4\n"
	  "decides for a local pod whose netns meshd knows. A deny fails\n"
	  "connect() with EPERM.\n"
	  "plaintext (no identity), by source address, from skm_plain: what TC\n"
	  "decides for a SYN from any other source; the longest matching\n"
	  "prefix wins. A deny drops the SYN.\n"
	  "\n"
	  "PORT * is every port no policy names. POLICY is the policy that\n"
	  "decided (- when none did), REASON why, with the rule's index.\n"
	  "A workload not found is an error (exit 1).\n", NULL },
	{ "stats", cmd_stats, NULL, 0, "",
	  "data-path counters and per-interface packets",
	  "Shows the skm_stats counters summed over CPUs, the packet and byte\n"
	  "counters of each pod-facing interface (skm_dev_stats) with the\n"
	  "workload behind it, and, when meshd runs the tunnel, its counters\n"
	  "(skm_tun_stats).\n", NULL },
};

static const char common_opts_help[] =
	"  -o, --output FMT   table (default) or json\n"
	"  --watch [SECONDS]  redraw every SECONDS (default 1) until Ctrl-C\n"
	"  --bpffs DIR        pin root meshd was started with\n"
	"                     (default " SKM_PIN_ROOT ")\n"
	"  -h, --help         this text\n";

static const struct cmd *cmd_find(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cmds); i++)
		if (!strcmp(name, cmds[i].name))
			return &cmds[i];
	return NULL;
}

static void usage(FILE *f, const struct cmd *cmd)
{
	static const char common[] = "[-o table|json] [--watch [SECONDS]]";
	size_t i;

	if (cmd) {
		int len = fprintf(f, "Usage: meshctl [--bpffs DIR] %s%s%s", cmd->name,
				  *cmd->synopsis ? " " : "", cmd->synopsis);

		/* wrap the common options under the command when too long */
		if (len + 1 + (int)strlen(common) > 80)
			fprintf(f, "\n%*s%s\n\n", (int)strlen("Usage: meshctl "), "", common);
		else
			fprintf(f, " %s\n\n", common);
		fprintf(f, "%s\nOptions:\n%s%s\n"
			"Exit status: 0 done (also for an empty table), 1 failed, 2 usage error.\n",
			cmd->help, cmd->opts_help ? cmd->opts_help : "", common_opts_help);
		return;
	}
	fputs("Usage: meshctl [--bpffs DIR] COMMAND [OPTIONS]\n"
	      "       meshctl help [COMMAND]\n"
	      "       meshctl ca init --trust-domain TD --out DIR [--days N]\n\n"
	      "Shows what the skmesh data path does, from the maps meshd pins under\n"
	      "DIR (default " SKM_PIN_ROOT "). It only reads them: safe on a live node.\n\n"
	      "Commands:\n", f);
	for (i = 0; i < ARRAY_SIZE(cmds); i++)
		fprintf(f, "  %-10s  %s\n", cmds[i].name, cmds[i].summary);
	fprintf(f, "  %-10s  %s\n", "ca init", "make the mesh root CA (meshctl ca init --help)");
	fprintf(f, "  %-10s  %s\n", "help", "this text, or one command's (meshctl help COMMAND)");
	fputs("\nOptions (before or after the command):\n"
	      "  --bpffs DIR        pin root meshd was started with\n"
	      "  -o, --output FMT   table (default) or json\n"
	      "  --watch [SECONDS]  redraw every SECONDS (default 1) until Ctrl-C\n"
	      "  -h, --help         this text; meshctl COMMAND --help for one command\n"
	      "\nExit status: 0 done (also for an empty table), 1 failed, 2 usage error.\n"
	      "The manual page meshctl(1) has every column and error message.\n", f);
}

__attribute__((format(printf, 2, 3), noreturn))
static void usage_error(const struct cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("meshctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	usage(stderr, cmd);
	exit(2);
}

/* Matches "NAME VALUE", "--NAME=VALUE" or "-oVALUE" at argv[*i]: returns 1
 * and sets *val (advancing *i past a separate value), 0 when argv[*i] is
 * another argument, -1 when the value is missing. */
static int opt_value(int argc, char **argv, int *i, const char *name,
		     const char **val)
{
	const char *a = argv[*i];
	size_t n = strlen(name);
	bool is_long = name[1] == '-';

	if (strncmp(a, name, n))
		return 0;
	if (a[n] == '\0') {
		if (*i + 1 >= argc)
			return -1;
		*val = argv[++*i];
		return 1;
	}
	if (is_long && a[n] != '=')
		return 0;
	*val = a + n + is_long;
	return 1;
}

static bool parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0 && v <= 86400))
		return false;
	*out = v;
	return true;
}

static bool parse_count(const char *s, size_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > 1000000)
		return false;
	*out = v;
	return true;
}

/* Redraws @cmd every opt.watch seconds until SIGINT/SIGTERM. */
static int watch(const struct cmd *cmd)
{
	int err = 0;

	watch_signals();
	while (!stop && !err) {
		watch_header(cmd->name);
		err = cmd->fn();
		fflush(stdout);
		sleep_secs(opt.watch);
	}
	return err;
}

int main(int argc, char **argv)
{
	const struct cmd *cmd = NULL;
	const char *val, *top_opt = NULL, *admin_opt = NULL;
	bool help = false, watch_secs = false, interval = false;
	size_t len;
	int i, r;

	snprintf(opt.bpffs, sizeof(opt.bpffs), "%s", SKM_PIN_ROOT);
	snprintf(opt.admin, sizeof(opt.admin), "127.0.0.1:15000");
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			help = true;
		} else if ((r = opt_value(argc, argv, &i, "--bpffs", &val))) {
			if (r < 0 || !*val)
				usage_error(cmd, "--bpffs needs a directory");
			if (strlen(val) >= sizeof(opt.bpffs))
				usage_error(cmd, "--bpffs: path too long");
			strcpy(opt.bpffs, val);
		} else if ((r = opt_value(argc, argv, &i, "--output", &val)) ||
			   (r = opt_value(argc, argv, &i, "-o", &val))) {
			if (r < 0 || (strcmp(val, "json") && strcmp(val, "table")))
				usage_error(cmd, "-o takes table or json");
			opt.json = !strcmp(val, "json");
		} else if (!strcmp(a, "--watch")) {
			opt.watch = 1;
			/* the interval is optional: take the next word if it is one */
			if (i + 1 < argc && parse_seconds(argv[i + 1], &opt.watch)) {
				watch_secs = true;
				i++;
			}
		} else if (!strncmp(a, "--watch=", 8)) {
			if (!parse_seconds(a + 8, &opt.watch))
				usage_error(cmd, "--watch takes a number of seconds (0 < s <= 86400)");
			watch_secs = true;
		} else if ((r = opt_value(argc, argv, &i, "--interval", &val))) {
			if (r < 0 || !parse_seconds(val, &opt.interval))
				usage_error(cmd, "--interval takes a number of seconds (0 < s <= 86400)");
			interval = true;
			top_opt = top_opt ?: "--interval";
		} else if ((r = opt_value(argc, argv, &i, "--sort", &val))) {
			if (r < 0)
				usage_error(cmd, "--sort takes rate, bytes or age");
			else if (!strcmp(val, "rate"))
				opt.sort = SORT_RATE;
			else if (!strcmp(val, "bytes"))
				opt.sort = SORT_BYTES;
			else if (!strcmp(val, "age"))
				opt.sort = SORT_AGE;
			else
				usage_error(cmd, "--sort takes rate, bytes or age, not '%s'", val);
			top_opt = top_opt ?: "--sort";
		} else if ((r = opt_value(argc, argv, &i, "--admin", &val))) {
			if (r < 0 || !*val || strlen(val) >= sizeof(opt.admin))
				usage_error(cmd, "--admin takes ADDR[:PORT] of meshd's admin endpoint");
			strcpy(opt.admin, val);
			admin_opt = "--admin";
		} else if ((r = opt_value(argc, argv, &i, "-n", &val))) {
			if (r < 0 || !parse_count(val, &opt.top_n))
				usage_error(cmd, "-n takes a number of rows (0: all)");
			top_opt = top_opt ?: "-n";
		} else if (a[0] == '-' && a[1]) {
			usage_error(cmd, "unknown option '%s'", a);
		} else if (!cmd && !strcmp(a, "help")) {
			help = true;	/* meshctl help [COMMAND] */
		} else if (!cmd && !strcmp(a, "ca")) {
			char *ca_help[] = { "ca", "--help", NULL };

			if (help)	/* meshctl help ca */
				return meshctl_ca_main(2, ca_help);
			return meshctl_ca_main(argc - i, argv + i);	/* no bpffs */
		} else if (!cmd) {
			cmd = cmd_find(a);
			if (!cmd)
				usage_error(NULL, "unknown command '%s'", a);
		} else if (cmd->args && !opt.arg) {
			opt.arg = a;
		} else {
			usage_error(cmd, "unexpected argument '%s'", a);
		}
	}
	if (help) {
		usage(stdout, cmd);
		return 0;
	}
	if (!cmd)
		usage_error(NULL, "no command given");
	if (top_opt && !(cmd->opts & OPT_TOP))
		usage_error(cmd, "option '%s' is only for meshctl top", top_opt);
	if (admin_opt && !(cmd->opts & OPT_ADMIN))
		usage_error(cmd, "option '%s' is only for meshctl status", admin_opt);
	if (cmd->fn == cmd_top && watch_secs) {
		/* one period: the samples are also the redraws */
		if (interval && opt.interval != opt.watch)
			usage_error(cmd, "give top's interval once: --interval SECONDS or --watch SECONDS");
		opt.interval = opt.watch;
	}

	/* "DIR/" and "DIR" are the same pin root; keep messages tidy */
	len = strlen(opt.bpffs);
	while (len > 1 && opt.bpffs[len - 1] == '/')
		opt.bpffs[--len] = '\0';

	if (check_bpffs() || check_pins())
		return 1;
	if (opt.watch && cmd->fn != cmd_top)	/* top keeps its last sample */
		return watch(cmd) ? 1 : 0;
	return cmd->fn() ? 1 : 0;
}
