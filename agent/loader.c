// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <linux/magic.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "loader.h"
#include "log.h"
#include "skmesh.h"
#include "revoke.skel.h"
#include "skmesh.skel.h"

/* Our TC filters: a handle of our own so other filters are never touched. */
#define SKM_TC_HANDLE	0x534b
#define SKM_TC_PRIO	1

int bpffs_check(const char *dir)
{
	char path[PATH_MAX];
	struct statfs sfs;
	char *slash;

	/* DIR itself may not exist yet: check the nearest existing parent. */
	snprintf(path, sizeof(path), "%s", dir);
	while (statfs(path, &sfs)) {
		slash = strrchr(path, '/');
		if (!slash || slash == path)
			return -ENOENT;
		*slash = 0;
	}
	if (sfs.f_type != BPF_FS_MAGIC) {
		pr_warn("%s is not on a bpffs: mount it with 'mount -t bpf bpf /sys/fs/bpf'\n", dir);
		return -ENOTSUP;
	}
	return 0;
}

int cgroup2_default_root(char *buf, size_t len)
{
	char dev[256], mnt[PATH_MAX], type[64];
	FILE *f = fopen("/proc/self/mounts", "r");
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fscanf(f, "%255s %4095s %63s %*[^\n]\n", dev, mnt, type) == 3) {
		if (!strcmp(type, "cgroup2")) {
			snprintf(buf, len, "%s", mnt);
			rc = 0;
			break;
		}
	}
	fclose(f);
	return rc;
}

static int mkdir_p(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(path, 0700) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(path, 0700) && errno != EEXIST)
		return -errno;
	return 0;
}

/* Attaches PROG to the cgroup through the link pinned at <root>/links/NAME,
 * creating and pinning it the first time. */
static int attach_cgroup_link(struct loader *l, struct bpf_program *prog,
			      const char *name)
{
	struct bpf_link_info info = {};
	__u32 len = sizeof(info);
	char path[PATH_MAX];
	struct bpf_link *link;
	int err;

	snprintf(path, sizeof(path), "%s/%s/%s", l->pin_root, SKM_PIN_LINKS, name);
	link = access(path, F_OK) ? NULL : bpf_link__open(path);
	if (link) {
		err = bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len);
		if (!err && info.type == BPF_LINK_TYPE_CGROUP &&
		    info.cgroup.cgroup_id != l->cgroup_id) {
			pr_warn("%s is attached to cgroup id %llu, not the --cgroup given (id %llu): "
				"run 'meshd --cleanup --bpffs %s' first\n", path,
				(unsigned long long)info.cgroup.cgroup_id,
				(unsigned long long)l->cgroup_id, l->pin_root);
			bpf_link__destroy(link);
			return -EEXIST;
		}
		err = bpf_link__update_program(link, prog);
		if (err) {
			pr_warn("cannot switch pinned link %s to the new program: %s\n",
				path, strerror(-err));
			bpf_link__destroy(link);
			return err;
		}
		l->reused_links++;
		pr_debug("reused %s\n", path);
		bpf_link__disconnect(link);	/* the pin keeps it */
		bpf_link__destroy(link);
		return 0;
	}

	link = bpf_program__attach_cgroup(prog, l->cgroup_fd);
	if (!link) {
		err = -errno;
		pr_warn("cannot attach %s to the cgroup: %s\n", name, strerror(-err));
		return err;
	}
	err = bpf_link__pin(link, path);
	if (err) {
		pr_warn("cannot pin %s: %s\n", path, strerror(-err));
		bpf_link__destroy(link);
		return err;
	}
	bpf_link__disconnect(link);
	bpf_link__destroy(link);
	return 0;
}

/* 1 when the cgroup folder DIR lists PID in its cgroup.procs. */
static int cgroup_holds(const char *dir, long pid)
{
	char path[2 * PATH_MAX + 16], line[64];
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f))
		found = strtol(line, NULL, 10) == pid;
	fclose(f);
	return found;
}

/* The cgroup v2 id of this process's cgroup in *ID: the inode number of
 * its folder, /proc/self/cgroup's "0::PATH" under a cgroup2 mount. Every
 * cgroup2 mount of /proc/self/mounts is tried, and the folder must list
 * this process: in a container, the host's hierarchy mounted for
 * --cgroup is rooted elsewhere than the container's cgroup namespace,
 * which PATH is relative to. */
static int self_cgroup_id(uint64_t *id)
{
	char rel[PATH_MAX], line[PATH_MAX], mnt[PATH_MAX], type[64];
	char path[2 * PATH_MAX];
	long pid = (long)getpid();
	int rc = -ENOENT;
	struct stat st;
	FILE *f;

	f = fopen("/proc/self/cgroup", "r");
	if (!f)
		return -errno;
	rel[0] = 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = 0;
			snprintf(rel, sizeof(rel), "%s", line + 3);
			break;
		}
	fclose(f);
	if (!rel[0])
		return -ENOENT;
	f = fopen("/proc/self/mounts", "r");
	if (!f)
		return -errno;
	while (rc && fscanf(f, "%*s %4095s %63s %*[^\n]\n", mnt, type) == 2) {
		if (strcmp(type, "cgroup2"))
			continue;
		snprintf(path, sizeof(path), "%s%s", mnt, strcmp(rel, "/") ? rel : "");
		if (!stat(path, &st) && cgroup_holds(path, pid)) {
			*id = st.st_ino;
			rc = 0;
		}
	}
	fclose(f);
	return rc;
}

int loader_own_socket(struct loader *l, int fd)
{
	struct skm_owned owned = { .owned = 1 };

	if (!l || !l->skel)
		return -EINVAL;
	if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.skm_owned), &fd, &owned, BPF_ANY))
		return -errno;
	return 0;
}

static int write_config(struct loader *l, const struct loader_limits *lim)
{
	struct skm_config cfg = {
		.conns_per_pod = lim ? lim->conns_per_pod : SKM_DEFAULT_CONNS_PER_POD,
		.events_per_pod = lim ? lim->events_per_pod : SKM_DEFAULT_EVENTS_PER_POD,
	};
	__u32 zero = 0;
	int err = self_cgroup_id(&l->self_cgroup_id);

	if (err) {
		pr_warn("cannot tell meshd's own cgroup (/proc/self/cgroup under a cgroup2 "
			"mount of /proc/self/mounts whose cgroup.procs lists meshd): %s; mount "
			"the cgroup2 file system where meshd runs\n", strerror(-err));
		return err;
	}
	cfg.meshd_cgroup_id = l->self_cgroup_id;
	if (bpf_map_update_elem(bpf_map__fd(l->skel->maps.skm_config), &zero, &cfg, BPF_ANY)) {
		err = -errno;
		pr_warn("cannot write skm_config: %s\n", strerror(-err));
		return err;
	}
	return 0;
}

/* skm_sk_msg reads the peer socket with bpf_rdonly_cast(), a kfunc of
 * Linux 6.2 and later; skm_msg_compat does the same with
 * bpf_probe_read_kernel(), a helper call per field. Only the one the
 * kernel can run is loaded (l->sk_msg). */
static void pick_sk_msg(struct loader *l)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();
	int have = vmlinux && btf__find_by_name_kind(vmlinux, "bpf_rdonly_cast",
						     BTF_KIND_FUNC) > 0;

	btf__free(vmlinux);
	l->sk_msg = have ? l->skel->progs.skm_sk_msg : l->skel->progs.skm_msg_compat;
	bpf_program__set_autoload(have ? l->skel->progs.skm_msg_compat :
				  l->skel->progs.skm_sk_msg, false);
	if (!have)
		pr_info("this kernel has no bpf_rdonly_cast(): sk_msg reads the peer socket with bpf_probe_read_kernel()\n");
}

int loader_open(struct loader *l, const char *pin_root, const char *cgroup,
		const struct loader_limits *lim)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts);
	char links[PATH_MAX];
	struct stat st;
	int err;

	memset(l, 0, sizeof(*l));
	l->cgroup_fd = -1;
	snprintf(l->pin_root, sizeof(l->pin_root), "%s", pin_root);

	err = bpffs_check(pin_root);
	if (err)
		return err;
	snprintf(links, sizeof(links), "%s/%s", pin_root, SKM_PIN_LINKS);
	err = mkdir_p(links);
	if (err) {
		pr_warn("cannot create %s: %s\n", links, strerror(-err));
		return err;
	}

	l->cgroup_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (l->cgroup_fd < 0) {
		err = -errno;
		pr_warn("cannot open cgroup %s: %s (--cgroup takes a cgroup v2 folder)\n",
			cgroup, strerror(-err));
		return err;
	}
	/* On cgroup v2 the cgroup id is the folder's inode number. */
	if (fstat(l->cgroup_fd, &st)) {
		err = -errno;
		goto out_close;
	}
	l->cgroup_id = st.st_ino;

	opts.pin_root_path = l->pin_root;
	l->skel = skmesh_bpf__open_opts(&opts);
	if (!l->skel) {
		err = -errno;
		pr_warn("cannot open the BPF object: %s\n", strerror(-err));
		goto out_close;
	}
	pick_sk_msg(l);
	err = skmesh_bpf__load(l->skel);
	if (err) {
		pr_warn("cannot load the BPF programs: %s (if %s holds maps of another "
			"skmesh version, run 'meshd --cleanup --bpffs %s')\n",
			strerror(-err), pin_root, pin_root);
		goto out_destroy;
	}

	/* Before any program runs: which sockets are meshd's. */
	err = write_config(l, lim);
	if (err)
		goto out_destroy;

	/* sk_msg first: a socket takes the map's programs when it is added,
	 * so the verdict program must be there before sockops adds any. */
	err = bpf_prog_attach(bpf_program__fd(l->sk_msg),
			      bpf_map__fd(l->skel->maps.skm_sock_hash),
			      BPF_SK_MSG_VERDICT, 0);
	if (err) {
		err = -errno;
		pr_warn("cannot attach sk_msg to skm_sock_hash: %s\n", strerror(-err));
		goto out_destroy;
	}

	err = attach_cgroup_link(l, l->skel->progs.skm_sock_create, "sock_create");
	if (!err)
		err = attach_cgroup_link(l, l->skel->progs.skm_connect4, "connect4");
	if (!err)
		err = attach_cgroup_link(l, l->skel->progs.skm_getpeername4, "getpeername4");
	if (!err)
		err = attach_cgroup_link(l, l->skel->progs.skm_recvmsg4, "recvmsg4");
	if (!err)
		err = attach_cgroup_link(l, l->skel->progs.skm_sockops, "sockops");
	if (err)
		goto out_destroy;
	return 0;

out_destroy:
	skmesh_bpf__destroy(l->skel);
	l->skel = NULL;
out_close:
	close(l->cgroup_fd);
	l->cgroup_fd = -1;
	return err;
}

int map_batch_unsupported(int err)
{
	return err == 524 /* ENOTSUPP */ || err == EOPNOTSUPP || err == EINVAL || err == ENOSYS;
}

int map_batch_each(int fd, size_t ksz, size_t vsz, unsigned int batch,
		   int (*fn)(const void *key, const void *val, void *arg), void *arg)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	char in[256], out[256];		/* the kernel's position: a key at most */
	char *keys = NULL, *vals = NULL;
	int err = 0, first = 1;

	if (ksz > sizeof(out))
		return -E2BIG;
	keys = malloc(batch * ksz);
	vals = malloc(batch * vsz);
	if (!keys || !vals) {
		err = -ENOMEM;
		goto out;
	}
	for (;;) {
		__u32 n = batch;
		int r = bpf_map_lookup_batch(fd, first ? NULL : in, out, keys, vals, &n, &opts);
		int e = r ? errno : 0;

		if (r && e != ENOENT) {
			err = first && map_batch_unsupported(e) ? -EOPNOTSUPP : -e;
			break;
		}
		for (__u32 i = 0; i < n && !err; i++)
			err = fn(keys + i * ksz, vals + i * vsz, arg);
		if (r || err)
			break;		/* ENOENT: that was the last batch */
		memcpy(in, out, ksz);
		first = 0;
	}
out:
	free(keys);
	free(vals);
	return err;
}

void loader_close(struct loader *l)
{
	bpf_link__destroy(l->revoke_link);	/* an iterator: not attached */
	l->revoke_link = NULL;
	revoke_bpf__destroy(l->revoke_skel);
	l->revoke_skel = NULL;
	/* Links stay pinned and attached: the data path outlives meshd. */
	skmesh_bpf__destroy(l->skel);
	l->skel = NULL;
	if (l->cgroup_fd >= 0)
		close(l->cgroup_fd);
	l->cgroup_fd = -1;
}

static int tc_attach_one(int ifindex, enum bpf_tc_attach_point where, int prog_fd)
{
	DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = where);
	DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = SKM_TC_HANDLE,
			    .priority = SKM_TC_PRIO, .prog_fd = prog_fd,
			    .flags = BPF_TC_F_REPLACE);
	int err;

	/* Most calls find the clsact qdisc there already (restart, reload):
	 * create it only when attaching says it is missing. */
	err = bpf_tc_attach(&hook, &opts);
	if (!err)
		return 0;
	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST)
		return err;
	opts.prog_id = 0;
	return bpf_tc_attach(&hook, &opts);
}

int loader_tc_attach(struct loader *l, int ifindex)
{
	int err;

	err = tc_attach_one(ifindex, BPF_TC_INGRESS,
			    bpf_program__fd(l->skel->progs.skm_tc_from_pod));
	if (!err)
		err = tc_attach_one(ifindex, BPF_TC_EGRESS,
				    bpf_program__fd(l->skel->progs.skm_tc_to_pod));
	return err;
}

int loader_tc_detach(int ifindex)
{
	enum bpf_tc_attach_point points[] = { BPF_TC_INGRESS, BPF_TC_EGRESS };
	int rc = 0;

	for (size_t i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
				    .attach_point = points[i]);
		DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = SKM_TC_HANDLE,
				    .priority = SKM_TC_PRIO);
		int err = bpf_tc_detach(&hook, &opts);

		if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL)
			rc = err;
	}
	return rc;
}

static int unlink_dir_entries(const char *dir, int detach_links)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir(dir);
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || de->d_type == DT_DIR)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (detach_links) {
			int fd = bpf_obj_get(path);

			/* Detach even if someone else still holds the
			 * link open; unpinning alone would not. */
			if (fd >= 0) {
				if (bpf_link_detach(fd) && errno != EINVAL)
					pr_warn("cannot detach %s: %s\n", path, strerror(errno));
				close(fd);
			}
		}
		if (unlink(path)) {
			rc = -errno;
			pr_warn("cannot unpin %s: %s\n", path, strerror(errno));
		}
	}
	closedir(d);
	return rc;
}

int loader_cleanup(const char *pin_root)
{
	char path[PATH_MAX];
	struct skm_dev_val dv;
	__u32 key, next;
	int fd, err, rc = 0;

	err = bpffs_check(pin_root);
	if (err)
		return err;

	/* TC filters live on the interfaces, not in bpffs: skm_devs says
	 * which ones carry ours. */
	snprintf(path, sizeof(path), "%s/%s", pin_root, SKM_MAP_DEVS);
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		int more = bpf_map_get_next_key(fd, NULL, &key) == 0;

		while (more) {
			more = bpf_map_get_next_key(fd, &key, &next) == 0;
			if (!bpf_map_lookup_elem(fd, &key, &dv))
				loader_tc_detach((int)key);
			key = next;
		}
		close(fd);
	}

	snprintf(path, sizeof(path), "%s/%s", pin_root, SKM_PIN_LINKS);
	err = unlink_dir_entries(path, 1);
	if (err)
		rc = err;
	if (rmdir(path) && errno != ENOENT)
		rc = -errno;
	err = unlink_dir_entries(pin_root, 0);
	if (err)
		rc = err;
	if (rmdir(pin_root) && errno != ENOENT) {
		rc = -errno;
		pr_warn("cannot remove %s: %s\n", pin_root, strerror(errno));
	}
	return rc;
}
