// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * skmesh-cni: a chained CNI plugin (spec 1.0.0; 0.4.0 and 0.3.x too) that
 * tells meshd about each pod and waits for meshd to say it is enrolled, so
 * a pod's first connection never meets a half-set-up mesh. meshd being
 * down never stops a pod: ADD then succeeds, says so on stderr (and in
 * logFile), and leaves a pending record meshd enrols once it is up.
 * The protocol is include/skmesh-cni.h; the input checks are cni.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "skmesh-cni.h"
#include "cni.h"

#define LOG_FILE_MAX	(1 << 20)	/* a log file beyond this starts over */

static const struct cni_call *cur;	/* for log lines' context */

/* One line to stderr, and to the config's logFile when set. */
__attribute__((format(printf, 1, 2)))
static void plog(const char *fmt, ...)
{
	char line[1024], pre[400] = "";
	struct stat st;
	va_list ap;
	int fd;

	if (cur && cur->container_id)
		snprintf(pre, sizeof(pre), " %s %s%s%s%s", cni_cmd_name(cur->cmd),
			 cur->container_id, cur->k8s ? " " : "", cur->k8s ? cur->pod_ns : "",
			 cur->k8s ? "/" : "");
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "skmesh-cni:%s%s: %s\n", pre, cur && cur->k8s ? cur->pod_name : "", line);
	if (!cur || !cur->log_file[0])
		return;
	fd = open(cur->log_file, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (!fstat(fd, &st) && st.st_size > LOG_FILE_MAX && ftruncate(fd, 0))
		goto out;
	dprintf(fd, "%ld skmesh-cni:%s%s: %s\n", (long)time(NULL), pre,
		cur->k8s ? cur->pod_name : "", line);
out:
	close(fd);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until FD is ready for EV or DEADLINE (ms) passes: 0 or -ETIMEDOUT. */
static int wait_fd(int fd, short ev, long long deadline)
{
	for (;;) {
		long long left = deadline - now_ms();
		struct pollfd p = { .fd = fd, .events = ev };
		int n;

		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/*
 * Sends REQ to meshd and reads its reply, all within c->ack_timeout_ms.
 * Returns 1 when meshd acknowledged ({"ok": true}), 0 when it refused (its
 * reason in WHY), or a negative errno when it could not be reached or did
 * not answer properly (WHY says how).
 */
static int ask_meshd(const struct cni_call *c, const char *req, char *why, size_t whylen)
{
	long long deadline = now_ms() + c->ack_timeout_ms;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(req), off = 0, got = 0;
	char *buf = NULL;
	json_t *r = NULL, *ok, *err;
	json_error_t je;
	int fd, rc;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		snprintf(why, whylen, "socket: %s", strerror(-rc));
		return rc;
	}
	/* a full backlog (many pods at once) is waited out, to the deadline */
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = -errno;
		if ((rc == -EAGAIN || rc == -EINTR) && now_ms() < deadline) {
			poll(NULL, 0, 10);
			continue;
		}
		snprintf(why, whylen, "connect %s: %s", c->socket, strerror(-rc));
		goto out;
	}
	while (off < len) {
		ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			rc = -errno;
			snprintf(why, whylen, "send to %s: %s", c->socket, strerror(-rc));
			goto out;
		}
		if ((rc = wait_fd(fd, POLLOUT, deadline))) {
			snprintf(why, whylen, "meshd did not take the request within %d ms",
				 c->ack_timeout_ms);
			goto out;
		}
	}
	shutdown(fd, SHUT_WR);
	buf = malloc(SKM_CNI_MSG_MAX + 1);
	if (!buf) {
		rc = -ENOMEM;
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	for (;;) {
		ssize_t n = recv(fd, buf + got, SKM_CNI_MSG_MAX + 1 - got, 0);

		if (n > 0) {
			got += (size_t)n;
			if (got > SKM_CNI_MSG_MAX) {
				rc = -EMSGSIZE;
				snprintf(why, whylen, "meshd's reply is larger than %d bytes",
					 SKM_CNI_MSG_MAX);
				goto out;
			}
			if (memchr(buf + got - n, '\n', (size_t)n))
				break;
			continue;
		}
		if (n == 0)
			break;
		if (errno != EAGAIN && errno != EINTR) {
			rc = -errno;
			snprintf(why, whylen, "reading meshd's reply: %s", strerror(-rc));
			goto out;
		}
		if ((rc = wait_fd(fd, POLLIN, deadline))) {
			snprintf(why, whylen, "no reply from meshd within %d ms", c->ack_timeout_ms);
			goto out;
		}
	}
	r = json_loadb(buf, got, JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &je);
	ok = json_object_get(r, "ok");
	err = json_object_get(r, "error");
	if (!json_is_boolean(ok) || (err && !json_is_string(err))) {
		rc = -EPROTO;
		snprintf(why, whylen, "meshd's reply is not {\"ok\": true|false, \"error\": ...}");
		goto out;
	}
	rc = json_is_true(ok);
	if (!rc)
		snprintf(why, whylen, "%.300s", err ? json_string_value(err) : "(no reason given)");
out:
	json_decref(r);
	free(buf);
	close(fd);
	return rc;
}

/* The pending folder, made (0700) when missing, opened without following
 * a symlink. Returns its fd or a negative errno. */
static int open_pending_dir(const char *dir, bool create)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s", dir);
	if (create)
		for (char *p = path + 1; ; p++) {
			if (*p != '/' && *p)
				continue;
			char keep = *p;

			*p = 0;
			if (mkdir(path, 0700) && errno != EEXIST)
				return -errno;
			*p = keep;
			if (!keep)
				break;
		}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* How many records DFD holds, counting up to SKM_CNI_PENDING_MAX. */
static int count_records(int dfd)
{
	int fd = dup(dfd), n = 0;
	struct dirent *de;
	DIR *d;

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return SKM_CNI_PENDING_MAX;
	}
	while ((de = readdir(d)) && n < SKM_CNI_PENDING_MAX) {
		size_t l = strlen(de->d_name);

		n += l > 5 && !strcmp(de->d_name + l - 5, ".json");
	}
	closedir(d);
	return n;
}

/* Leaves REQ in <pendingDir>/<containerId>.json: written to a new file
 * (O_EXCL, 0600) then renamed over any older one. 0 or a negative errno,
 * WHY says what failed. */
static int write_pending(const struct cni_call *c, const char *req, char *why, size_t whylen)
{
	char tmp[256], name[256];
	size_t len = strlen(req), off = 0;
	int dfd, fd, rc = 0;

	snprintf(name, sizeof(name), "%s.json", c->container_id);
	snprintf(tmp, sizeof(tmp), "%s.json.tmp", c->container_id);
	if (len > SKM_CNI_MSG_MAX) {
		snprintf(why, whylen, "the record is larger than %d bytes", SKM_CNI_MSG_MAX);
		return -EMSGSIZE;
	}
	dfd = open_pending_dir(c->pending_dir, true);
	if (dfd < 0) {
		snprintf(why, whylen, "%s: %s", c->pending_dir, strerror(-dfd));
		return dfd;
	}
	if (faccessat(dfd, name, F_OK, AT_SYMLINK_NOFOLLOW) &&
	    count_records(dfd) >= SKM_CNI_PENDING_MAX) {
		snprintf(why, whylen, "%s already holds %d records", c->pending_dir,
			 SKM_CNI_PENDING_MAX);
		rc = -ENOSPC;
		goto out;
	}
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST && !unlinkat(dfd, tmp, 0))	/* an ADD that died */
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(why, whylen, "%.250s/%.210s: %s", c->pending_dir, tmp, strerror(-rc));
		goto out;
	}
	while (off < len) {
		ssize_t n = write(fd, req + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)n;
	}
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && renameat(dfd, tmp, dfd, name))
		rc = -errno;
	if (rc) {
		snprintf(why, whylen, "%.250s/%.210s: %s", c->pending_dir, name, strerror(-rc));
		unlinkat(dfd, tmp, 0);
	}
out:
	close(dfd);
	return rc;
}

/* Whether the container has a pending record; with REMOVE, removes it
 * and says whether there was one. */
static bool pending_record(const struct cni_call *c, bool remove)
{
	char name[256];
	int dfd = open_pending_dir(c->pending_dir, false);
	bool had;

	if (dfd < 0)
		return false;
	snprintf(name, sizeof(name), "%s.json", c->container_id);
	had = remove ? !unlinkat(dfd, name, 0) : !faccessat(dfd, name, F_OK, AT_SYMLINK_NOFOLLOW);
	close(dfd);
	return had;
}

static int print_error(const char *version, struct cni_err *e)
{
	char *out = cni_error_json(version, e);

	if (out)
		printf("%s\n", out);
	else
		printf("{\"cniVersion\": \"%s\", \"code\": %d, \"msg\": \"(unprintable)\"}\n",
		       CNI_VERSION_LATEST, e->code);
	free(out);
	if (cur)
		plog("error %d: %s", e->code, e->msg);
	else
		fprintf(stderr, "skmesh-cni: error %d: %s\n", e->code, e->msg);
	return 1;
}

/* Reads all of stdin, up to CNI_STDIN_MAX + 1 bytes (more is refused by
 * cni_parse). Returns the length or -1 with errno. */
static ssize_t read_stdin(char *buf, size_t cap)
{
	size_t got = 0;

	while (got < cap) {
		ssize_t n = read(STDIN_FILENO, buf + got, cap - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int do_add(struct cni_call *c, const char *req)
{
	char why[512] = "", why2[512] = "", *out;
	struct cni_err e = {};
	int rc;

	rc = ask_meshd(c, req, why, sizeof(why));
	if (rc == 0) {
		e.code = CNI_ERR_REFUSED;
		snprintf(e.msg, sizeof(e.msg), "meshd refused the pod: %s", why);
		return print_error(c->version, &e);
	}
	if (rc > 0) {
		pending_record(c, true);
		plog("enrolled by meshd");
	} else if (write_pending(c, req, why2, sizeof(why2)))
		plog("meshd is not reachable (%s); the pod starts unenrolled and no pending "
		     "record could be left: %s", why, why2);
	else
		plog("meshd is not reachable (%s); the pod starts unenrolled, meshd enrols it "
		     "from %s/%s.json once up", why, c->pending_dir, c->container_id);
	out = cni_result(c);
	if (!out) {
		e.code = CNI_ERR_IO;
		snprintf(e.msg, sizeof(e.msg), "out of memory writing the result");
		return print_error(c->version, &e);
	}
	printf("%s\n", out);
	free(out);
	return 0;
}

static int do_del(struct cni_call *c, const char *req)
{
	char why[512] = "";
	bool had = pending_record(c, true);
	int rc = ask_meshd(c, req, why, sizeof(why));

	if (rc <= 0)
		plog("%s%s; the pod is removed all the same",
		     rc == 0 ? "meshd refused the removal: " : "meshd is not reachable: ", why);
	else
		plog("released by meshd%s", had ? " (its pending record removed)" : "");
	return 0;
}

static int do_check(struct cni_call *c, const char *req)
{
	struct cni_err e = {};
	char why[512] = "";
	int rc = ask_meshd(c, req, why, sizeof(why));

	if (rc > 0)
		return 0;
	if (rc == 0) {
		e.code = CNI_ERR_NOT_ENROLLED;
		snprintf(e.msg, sizeof(e.msg), "meshd does not have the pod enrolled: %s", why);
		return print_error(c->version, &e);
	}
	/* meshd down: the pod is as ADD left it when its record waits */
	plog("meshd is not reachable (%s)%s", why,
	     pending_record(c, false) ? "; the pod's pending record is in place" : "");
	return 0;
}

int main(void)
{
	struct cni_env env = {
		.command = getenv("CNI_COMMAND"), .containerid = getenv("CNI_CONTAINERID"),
		.netns = getenv("CNI_NETNS"), .ifname = getenv("CNI_IFNAME"),
		.args = getenv("CNI_ARGS"), .path = getenv("CNI_PATH"),
	};
	struct cni_call c;
	struct cni_err e;
	char *in, *req = NULL, *out;
	ssize_t len;
	json_t *r;
	int rc;

	in = malloc(CNI_STDIN_MAX + 1);
	if (!in) {
		e.code = CNI_ERR_IO;
		snprintf(e.msg, sizeof(e.msg), "out of memory");
		return print_error(NULL, &e);
	}
	len = read_stdin(in, CNI_STDIN_MAX + 1);
	if (len < 0) {
		e.code = CNI_ERR_IO;
		snprintf(e.msg, sizeof(e.msg), "reading the network config from stdin: %s",
			 strerror(errno));
		free(in);
		return print_error(NULL, &e);
	}
	if (cni_parse(&env, in, (size_t)len, &c, &e)) {
		rc = print_error(c.version, &e);
		goto out;
	}
	if (c.cmd == CNI_CMD_VERSION) {
		out = cni_version_reply(&c);
		rc = !out;
		if (out)
			printf("%s\n", out);
		free(out);
		goto out;
	}
	cur = &c;
	if (!c.k8s && c.cmd != CNI_CMD_DEL) {
		/* not a Kubernetes pod: nothing for meshd, the chain goes on */
		plog("no K8S_POD_NAMESPACE/NAME/UID in CNI_ARGS: not a pod, passed through");
		rc = 0;
		if (c.cmd == CNI_CMD_ADD) {
			out = cni_result(&c);
			if (out)
				printf("%s\n", out);
			else
				rc = print_error(c.version, &(struct cni_err){ CNI_ERR_IO, "out of memory" });
			free(out);
		}
		goto out;
	}
	r = cni_request(&c);
	out = r ? json_dumps(r, JSON_COMPACT) : NULL;
	json_decref(r);
	if (!out || asprintf(&req, "%s\n", out) < 0)
		req = NULL;
	free(out);
	if (!req) {
		e.code = CNI_ERR_IO;
		snprintf(e.msg, sizeof(e.msg), "out of memory");
		rc = print_error(c.version, &e);
		goto out;
	}
	rc = c.cmd == CNI_CMD_ADD ? do_add(&c, req) : c.cmd == CNI_CMD_DEL ? do_del(&c, req)
									 : do_check(&c, req);
out:
	fflush(stdout);
	cur = NULL;
	free(req);
	cni_call_free(&c);
	free(in);
	return rc;
}
