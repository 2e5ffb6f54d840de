// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshd's side of skmesh-cni's socket (see cnisrv.h). One epoll fd holds
 * the listening socket and the clients; a client goes READ (its request
 * arrives, bounded in size and time) -> WAIT (the owner holds its ticket;
 * the client is out of the epoll set, so a peer that hangs up cannot make
 * the fd spin) -> WRITE (the reply, maybe in parts) -> closed.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "skmesh-cni.h"
#include "../cni/cnicheck.h"
#include "cnisrv.h"
#include "log.h"

#define DEF_MAX_CLIENTS		64
#define DEF_READ_TIMEOUT_MS	2000
#define ACCEPTS_PER_PASS	256	/* a flood of connects cannot hold the loop */
#define EVENTS_PER_PASS		64
#define LIST_MAX		64	/* entries of "hostInterfaces" and "ips" */
#define LISTEN_TAG		UINT64_MAX
#define ERROR_MAX		400	/* bytes of an error reply's message */

enum client_state { CL_FREE, CL_READ, CL_WAIT, CL_WRITE };

struct client {
	enum client_state state;
	int fd;
	char *buf;			/* the request: SKM_CNI_MSG_MAX + 1 bytes */
	size_t got;
	char *out;			/* the reply being written */
	size_t outlen, outoff;
	long long deadline;		/* ms, CLOCK_MONOTONIC: READ and WRITE */
	uint64_t ticket;		/* WAIT */
	int op;
	char cid[CNI_CONTAINERID_MAX + 1];
};

/* A pending record handed over and not yet answered. */
struct pend {
	uint64_t ticket;
	char cid[CNI_CONTAINERID_MAX + 1];
};

struct cnisrv {
	int epfd, lfd;
	char *sock_path, *pending_dir;
	dev_t sock_dev;
	ino_t sock_ino;
	int max_clients, timeout_ms;
	struct client *cl;
	struct pend *pend;
	size_t npend, cap_pend;
	uint64_t next_ticket;
	struct cnisrv_ops ops;
	void *arg;
	struct cnisrv_stats st;
	struct log_limit ll;		/* lines about clients' requests */
	struct log_limit ll_peer;	/* lines about peers refused: apart, so a
					 * flood of bad requests cannot hide them */
	long long last_report;		/* ms: suppressed lines said at most every 10 s */
};

/* ---- the parser: no I/O ------------------------------------------------ */

__attribute__((format(printf, 3, 4)))
static int perr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* KEY of O as a string without NUL bytes, or NULL (absent or not one:
 * *BAD says which). */
static const char *str_field(json_t *o, const char *key, bool *bad)
{
	json_t *v = json_object_get(o, key);

	*bad = v && (!json_is_string(v) ||
		     strlen(json_string_value(v)) != json_string_length(v));
	return v && !*bad ? json_string_value(v) : NULL;
}

static int parse_pod(json_t *o, struct cni_req *r, char *err, size_t errlen)
{
	static const char *const keys[] = { "podNamespace", "podName", "podUid" };
	char *dst[] = { r->pod_ns, r->pod_name, r->pod_uid };
	size_t cap[] = { sizeof(r->pod_ns), sizeof(r->pod_name), sizeof(r->pod_uid) };
	int nseen = 0;
	char ex[48];

	for (int k = 0; k < 3; k++) {
		bool bad;
		const char *v = str_field(o, keys[k], &bad);
		size_t n = v ? strlen(v) : 0;
		bool ok;

		if (bad)
			return perr(err, errlen, "request: \"%s\" must be a string", keys[k]);
		if (!v)
			continue;
		ok = k == 0 ? cni_dns_label_ok(v, n) : k == 1 ? cni_dns_subdomain_ok(v, n)
							 : cni_uid_ok(v, n);
		if (!ok || n >= cap[k])
			return perr(err, errlen, "request: %s \"%s\" is not a valid %s", keys[k],
				    cni_excerpt(v, ex, sizeof(ex)),
				    k == 0 ? "namespace (DNS-1123 label)"
				    : k == 1 ? "pod name (DNS-1123 subdomain)"
					     : "pod UID (1..64 letters, digits and '-')");
		memcpy(dst[k], v, n + 1);
		nseen++;
	}
	if (nseen && nseen < 3)
		return perr(err, errlen, "request: podNamespace, podName and podUid go together");
	if (!nseen && r->op != CNI_REQ_DEL)
		return perr(err, errlen, "request: %s needs podNamespace, podName and podUid",
			    r->op == CNI_REQ_ADD ? "add" : "check");
	return 0;
}

static int parse_lists(json_t *o, struct cni_req *r, char *err, size_t errlen)
{
	json_t *ifs = json_object_get(o, "hostInterfaces"), *ips = json_object_get(o, "ips"), *v;
	char ex[48];
	size_t i;

	if (r->op != CNI_REQ_DEL && (!ifs || !ips))
		return perr(err, errlen, "request: %s needs \"hostInterfaces\" and \"ips\"",
			    r->op == CNI_REQ_ADD ? "add" : "check");
	if (ifs && (!json_is_array(ifs) || json_array_size(ifs) > CNI_REQ_IFS_MAX))
		return perr(err, errlen, "request: \"hostInterfaces\" must be an array of at "
			    "most %d interface names", CNI_REQ_IFS_MAX);
	json_array_foreach(ifs, i, v) {
		const char *s = json_string_value(v);

		if (!s || strlen(s) != json_string_length(v) || !cni_ifname_ok(s))
			return perr(err, errlen, "request: hostInterfaces[%zu] \"%s\" is not an "
				    "interface name (1..15 bytes, no '/', ':' or space)", i,
				    s ? cni_excerpt(s, ex, sizeof(ex)) : "(not a string)");
		memcpy(r->host_ifs[r->nhost_ifs++], s, strlen(s) + 1);
	}
	if (ips && (!json_is_array(ips) || json_array_size(ips) > LIST_MAX))
		return perr(err, errlen, "request: \"ips\" must be an array of at most %d "
			    "addresses", LIST_MAX);
	json_array_foreach(ips, i, v) {
		const char *s = json_string_value(v);
		unsigned char a6[16];
		uint32_t a4;

		if (s && strlen(s) == json_string_length(v) && inet_pton(AF_INET, s, &a4) == 1) {
			if (r->nips == CNI_REQ_IPS_MAX)
				return perr(err, errlen, "request: more than %d IPv4 addresses in "
					    "\"ips\"", CNI_REQ_IPS_MAX);
			r->ips[r->nips++] = a4;
			continue;
		}
		/* IPv6: checked, not kept (meshd captures IPv4) */
		if (!s || strlen(s) != json_string_length(v) || inet_pton(AF_INET6, s, a6) != 1)
			return perr(err, errlen, "request: ips[%zu] \"%s\" is not an IPv4 or IPv6 "
				    "address", i, s ? cni_excerpt(s, ex, sizeof(ex)) : "(not a string)");
	}
	return 0;
}

int cnisrv_parse(const char *buf, size_t len, struct cni_req *r, char *err, size_t errlen)
{
	static const char *const known[] = {
		"version", "op", "containerId", "netns", "ifName", "podNamespace", "podName",
		"podUid", "hostInterfaces", "ips",
	};
	const char *key, *s;
	json_error_t je;
	json_t *o, *v;
	char ex[48];
	bool bad;
	int rc;

	memset(r, 0, sizeof(*r));
	if (len > SKM_CNI_MSG_MAX)
		return perr(err, errlen, "request: larger than %d bytes", SKM_CNI_MSG_MAX);
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		return perr(err, errlen, "request is not JSON: column %d: %s", je.column, je.text);
	if (!json_is_object(o)) {
		rc = perr(err, errlen, "request is not a JSON object");
		goto out;
	}
	v = json_object_get(o, "version");
	if (!json_is_integer(v)) {
		rc = perr(err, errlen, "request: \"version\" is missing or not an integer");
		goto out;
	}
	if (json_integer_value(v) != SKM_CNI_PROTO_VERSION) {
		snprintf(err, errlen, "request: protocol version %lld is not supported (meshd "
			 "speaks %d): install the skmesh-cni of this meshd's release",
			 (long long)json_integer_value(v), SKM_CNI_PROTO_VERSION);
		rc = -EPROTONOSUPPORT;
		goto out;
	}
	rc = -EINVAL;
	json_object_foreach(o, key, v) {
		bool ok = false;

		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && !ok; i++)
			ok = !strcmp(key, known[i]);
		if (!ok) {
			perr(err, errlen, "request: unknown field \"%s\"",
			     cni_excerpt(key, ex, sizeof(ex)));
			goto out;
		}
	}
	s = str_field(o, "op", &bad);
	if (s && !strcmp(s, "add"))
		r->op = CNI_REQ_ADD;
	else if (s && !strcmp(s, "del"))
		r->op = CNI_REQ_DEL;
	else if (s && !strcmp(s, "check"))
		r->op = CNI_REQ_CHECK;
	else {
		perr(err, errlen, "request: \"op\" must be \"add\", \"del\" or \"check\"");
		goto out;
	}
	s = str_field(o, "containerId", &bad);
	if (!s || !cni_name_ok(s, CNI_CONTAINERID_MAX)) {
		perr(err, errlen, "request: containerId \"%s\" is not a container id (1..%d "
		     "letters, digits, '_', '.', '-', starting alphanumeric)",
		     s ? cni_excerpt(s, ex, sizeof(ex)) : "(missing)", CNI_CONTAINERID_MAX);
		goto out;
	}
	snprintf(r->container_id, sizeof(r->container_id), "%s", s);
	s = str_field(o, "netns", &bad);
	if (!s || (*s && !cni_abs_path_ok(s, CNI_NETNS_MAX)) || (!*s && r->op != CNI_REQ_DEL)) {
		perr(err, errlen, "request: netns \"%s\" is not an absolute path (printable, "
		     "shorter than %d bytes, no . or .. part; \"\" only for del)",
		     s ? cni_excerpt(s, ex, sizeof(ex)) : "(missing)", CNI_NETNS_MAX);
		goto out;
	}
	snprintf(r->netns, sizeof(r->netns), "%s", s);
	s = str_field(o, "ifName", &bad);
	if (!s || !cni_ifname_ok(s)) {
		perr(err, errlen, "request: ifName \"%s\" is not an interface name",
		     s ? cni_excerpt(s, ex, sizeof(ex)) : "(missing)");
		goto out;
	}
	snprintf(r->ifname, sizeof(r->ifname), "%s", s);
	if (parse_pod(o, r, err, errlen) || parse_lists(o, r, err, errlen))
		goto out;
	rc = 0;
out:
	json_decref(o);
	if (rc)
		memset(r, 0, sizeof(*r));
	return rc;
}

/* ---- connections ------------------------------------------------------- */

static void client_close(struct cnisrv *s, struct client *c)
{
	if (c->fd >= 0) {
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	free(c->buf);
	free(c->out);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->state = CL_FREE;
}

static int client_watch(struct cnisrv *s, struct client *c, uint32_t events, int op)
{
	struct epoll_event ev = { .events = events, .data.u64 = (uint64_t)(c - s->cl) };

	return epoll_ctl(s->epfd, op, c->fd, &ev) ? -errno : 0;
}

/* Writes what is left of C's reply; closes C when it is all out or the
 * peer is gone, else waits for EPOLLOUT. */
static void client_flush(struct cnisrv *s, struct client *c)
{
	while (c->outoff < c->outlen) {
		ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			c->outoff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (c->state != CL_WRITE) {
				c->state = CL_WRITE;
				c->deadline = (long long)mono_ms() + s->timeout_ms;
				if (client_watch(s, c, EPOLLOUT, EPOLL_CTL_ADD))
					break;
			}
			return;
		}
		break;		/* the peer is gone: fine */
	}
	client_close(s, c);
}

/* Starts writing {"ok":...} to C (in any state but FREE). ERROR goes out
 * as printable ASCII (anything else as '?': a parser's message may quote
 * the peer's bytes), at most ERROR_MAX bytes. */
#define ERROR_MAX	400
static void client_answer(struct cnisrv *s, struct client *c, int ok, const char *error)
{
	char why[ERROR_MAX + 1];
	json_t *j;
	char *text;
	size_t i;

	for (i = 0; error && error[i] && i < ERROR_MAX; i++)
		why[i] = error[i] >= 0x20 && error[i] < 0x7f ? error[i] : '?';
	why[i] = 0;
	j = ok ? json_pack("{s:b}", "ok", 1)
	       : json_pack("{s:b, s:s}", "ok", 0, "error", why[0] ? why : "refused");
	text = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	free(c->out);
	c->out = NULL;
	if (!text || asprintf(&c->out, "%s\n", text) < 0) {
		free(text);
		c->out = NULL;
		client_close(s, c);
		return;
	}
	free(text);
	c->outlen = strlen(c->out);
	c->outoff = 0;
	if (c->state == CL_READ)
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->state = CL_WAIT;	/* out of the epoll set until a write blocks */
	client_flush(s, c);
}

static void client_bad(struct cnisrv *s, struct client *c, const char *why)
{
	s->st.bad_requests++;
	pr_limited(&s->ll, LOG_WARN, "cni socket: bad request, connection closed: %s\n", why);
	client_answer(s, c, 0, why);
}

/* C's request is whole (LEN bytes without the '\n'): parsed, handed over. */
static void client_request(struct cnisrv *s, struct client *c, size_t len)
{
	struct cni_req *r = malloc(sizeof(*r));
	char err[512];
	uint64_t t;

	if (!r) {
		client_answer(s, c, 0, "meshd is out of memory");
		return;
	}
	if (cnisrv_parse(c->buf, len, r, err, sizeof(err))) {
		client_bad(s, c, err);
		free(r);
		return;
	}
	free(c->buf);
	c->buf = NULL;
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->state = CL_WAIT;
	c->ticket = t = s->next_ticket++;
	c->op = r->op;
	snprintf(c->cid, sizeof(c->cid), "%.200s", r->container_id);
	s->st.requests++;
	pr_debug("cni socket: %s %s (%s/%s), ticket %llu\n",
		 r->op == CNI_REQ_ADD ? "add" : r->op == CNI_REQ_DEL ? "del" : "check",
		 r->container_id, r->pod_ns, r->pod_name, (unsigned long long)t);
	s->ops.request(s->arg, r, t);	/* may answer, and close C, at once */
	free(r);
}

static void client_read(struct cnisrv *s, struct client *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->buf + c->got, SKM_CNI_MSG_MAX + 1 - c->got, MSG_DONTWAIT);
		char *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			client_close(s, c);
			return;
		}
		if (n == 0) {
			if (!c->got)
				client_close(s, c);	/* connected and left: no request */
			else
				client_bad(s, c, "request ends without a newline");
			return;
		}
		nl = memchr(c->buf + c->got, '\n', (size_t)n);
		c->got += (size_t)n;
		if (nl) {
			size_t len = (size_t)(nl - c->buf);

			if (len + 1 != c->got)
				client_bad(s, c, "bytes after the request's newline (one request "
					   "per connection)");
			else
				client_request(s, c, len);
			return;
		}
		if (c->got > SKM_CNI_MSG_MAX) {
			char why[80];

			snprintf(why, sizeof(why), "request is larger than %d bytes",
				 SKM_CNI_MSG_MAX);
			client_bad(s, c, why);
			return;
		}
	}
}

static void accept_clients(struct cnisrv *s)
{
	for (int k = 0; k < ACCEPTS_PER_PASS; k++) {
		int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct ucred cred;
		socklen_t clen = sizeof(cred);
		struct client *c = NULL;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				pr_limited(&s->ll, LOG_WARN, "cni socket: accept: %s\n",
					   strerror(errno));
			return;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) || cred.uid != 0) {
			s->st.refused_peer++;
			pr_limited(&s->ll_peer, LOG_WARN, "cni socket: connection from uid %d (pid %d) "
				   "refused: only root may enrol pods\n",
				   clen == sizeof(cred) ? (int)cred.uid : -1,
				   clen == sizeof(cred) ? (int)cred.pid : -1);
			close(fd);
			continue;
		}
		for (int i = 0; i < s->max_clients && !c; i++)
			if (s->cl[i].state == CL_FREE)
				c = &s->cl[i];
		if (!c) {
			s->st.refused_busy++;
			pr_limited(&s->ll, LOG_WARN, "cni socket: %d connections open already, one "
				   "more closed\n", s->max_clients);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->buf = malloc(SKM_CNI_MSG_MAX + 1);
		c->state = CL_READ;
		c->deadline = (long long)mono_ms() + s->timeout_ms;
		if (!c->buf || client_watch(s, c, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_ADD))
			client_close(s, c);
	}
}

void cnisrv_process(struct cnisrv *s)
{
	struct epoll_event evs[EVENTS_PER_PASS];
	long long now;
	int n;

	for (int round = 0; round < 4; round++) {
		n = epoll_wait(s->epfd, evs, EVENTS_PER_PASS, 0);
		for (int i = 0; i < n; i++) {
			struct client *c;

			if (evs[i].data.u64 == LISTEN_TAG) {
				accept_clients(s);
				continue;
			}
			c = &s->cl[evs[i].data.u64];
			if (c->state == CL_READ)
				client_read(s, c);
			else if (c->state == CL_WRITE)
				client_flush(s, c);
		}
		if (n < EVENTS_PER_PASS)
			break;
	}
	now = (long long)mono_ms();
	for (int i = 0; i < s->max_clients; i++) {
		struct client *c = &s->cl[i];

		if ((c->state == CL_READ || c->state == CL_WRITE) && now >= c->deadline) {
			s->st.timeouts++;
			pr_limited(&s->ll, LOG_WARN, "cni socket: a client %s within %d ms: "
				   "closed\n", c->state == CL_READ ? "sent no whole request"
				   : "took no reply", s->timeout_ms);
			client_close(s, c);
		}
	}
	if (now - s->last_report >= 10000) {
		log_limit_report(&s->ll, LOG_WARN, "the cni socket's clients");
		log_limit_report(&s->ll_peer, LOG_WARN, "peers refused by the cni socket");
		s->last_report = now;
	}
}

/* ---- pending records --------------------------------------------------- */

/* Removes DIR/<CID>.json, quietly when there is none. */
static void pending_remove(struct cnisrv *s, const char *cid)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s.json", s->pending_dir, cid);
	if (!unlink(path))
		pr_info("cni: pending record %s removed\n", path);
	else if (errno != ENOENT)
		pr_warn("cni: cannot remove pending record %s: %s\n", path, strerror(errno));
}

static void pending_bad(struct cnisrv *s, int dfd, const char *name, const char *why)
{
	char aside[300];

	s->st.pending_bad++;
	snprintf(aside, sizeof(aside), "%s.bad", name);
	if (!renameat(dfd, name, dfd, aside)) {
		pr_warn("cni: pending record %s/%s is invalid (%s): moved aside to %s\n",
			s->pending_dir, name, why, aside);
		return;
	}
	pr_warn("cni: pending record %s/%s is invalid (%s): %s\n", s->pending_dir, name, why,
		unlinkat(dfd, name, 0) ? "cannot move or remove it" : "removed");
}

/* Reads record NAME of DFD into R. 0, or -EINVAL with WHY. */
static int pending_read(int dfd, const char *name, char *buf, struct cni_req *r,
			char *why, size_t whylen)
{
	char cid[256];
	size_t nlen = strlen(name) - 5, got = 0;
	struct stat st;
	int fd, rc = -EINVAL;

	snprintf(cid, sizeof(cid), "%.*s", (int)nlen, name);
	if (nlen >= sizeof(cid) || !cni_name_ok(cid, CNI_CONTAINERID_MAX))
		return perr(why, whylen, "its name is not <containerId>.json");
	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return perr(why, whylen, "open: %s", strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > SKM_CNI_MSG_MAX) {
		perr(why, whylen, "not a regular file of at most %d bytes", SKM_CNI_MSG_MAX);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + got, SKM_CNI_MSG_MAX + 1 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perr(why, whylen, "read: %s", strerror(errno));
			goto out;
		}
		if (!n)
			break;
		got += (size_t)n;
		if (got > SKM_CNI_MSG_MAX) {
			perr(why, whylen, "larger than %d bytes", SKM_CNI_MSG_MAX);
			goto out;
		}
	}
	if (got && buf[got - 1] == '\n')
		got--;
	if (cnisrv_parse(buf, got, r, why, whylen))
		goto out;
	if (r->op != CNI_REQ_ADD)
		perr(why, whylen, "not an add request");
	else if (strcmp(r->container_id, cid))
		perr(why, whylen, "its containerId is not its name's");
	else
		rc = 0;
out:
	close(fd);
	return rc;
}

int cnisrv_load_pending(struct cnisrv *s)
{
	int dfd = open(s->pending_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	char *buf = NULL, why[512];
	struct cni_req *r = NULL;
	struct dirent *de;
	int n = 0, seen = 0;
	DIR *d;

	if (dfd < 0) {
		if (errno == ENOENT)
			return 0;
		pr_warn("cni: cannot read the pending folder %s: %s\n", s->pending_dir,
			strerror(errno));
		return -errno;
	}
	d = fdopendir(dfd);
	buf = malloc(SKM_CNI_MSG_MAX + 1);
	r = malloc(sizeof(*r));
	if (!d || !buf || !r) {
		n = -ENOMEM;
		if (!d)
			close(dfd);
		goto out;
	}
	while ((de = readdir(d)) && seen < SKM_CNI_PENDING_MAX) {
		size_t l = strlen(de->d_name);
		bool busy = false;

		if (l <= 5 || strcmp(de->d_name + l - 5, ".json"))
			continue;	/* "x.json.tmp": an ADD writing; ".bad": set aside */
		seen++;
		if (pending_read(dirfd(d), de->d_name, buf, r, why, sizeof(why))) {
			pending_bad(s, dirfd(d), de->d_name, why);
			continue;
		}
		for (size_t i = 0; i < s->npend && !busy; i++)
			busy = !strcmp(s->pend[i].cid, r->container_id);
		if (busy)
			continue;
		if (s->npend == s->cap_pend) {
			size_t cap = s->cap_pend ? s->cap_pend * 2 : 16;
			struct pend *p = realloc(s->pend, cap * sizeof(*p));

			if (!p) {
				n = n ? n : -ENOMEM;
				break;
			}
			s->pend = p;
			s->cap_pend = cap;
		}
		r->from_pending = 1;
		s->pend[s->npend].ticket = s->next_ticket++;
		snprintf(s->pend[s->npend].cid, sizeof(s->pend[0].cid), "%.200s", r->container_id);
		s->npend++;
		s->st.requests++;
		s->st.pending_loaded++;
		n++;
		pr_info("cni: pod %s/%s (container %s) from its pending record: enrolling\n",
			r->pod_ns, r->pod_name, r->container_id);
		s->ops.request(s->arg, r, s->next_ticket - 1);
	}
out:
	if (d)
		closedir(d);
	free(buf);
	free(r);
	return n;
}

void cnisrv_reply(struct cnisrv *s, uint64_t ticket, int ok, const char *error)
{
	if (ok)
		s->st.replies_ok++;
	else
		s->st.replies_err++;
	for (int i = 0; i < s->max_clients; i++) {
		struct client *c = &s->cl[i];

		if (c->state != CL_WAIT || c->ticket != ticket || c->out)
			continue;
		if (c->op == CNI_REQ_DEL)
			pending_remove(s, c->cid);
		client_answer(s, c, ok, error);
		return;
	}
	for (size_t i = 0; i < s->npend; i++) {
		if (s->pend[i].ticket != ticket)
			continue;
		if (ok)
			pending_remove(s, s->pend[i].cid);
		else
			pr_warn("cni: pod of container %s (pending record) not enrolled: %s\n",
				s->pend[i].cid, error ? error : "refused");
		s->pend[i] = s->pend[--s->npend];
		return;
	}
	pr_debug("cni socket: reply to unknown ticket %llu ignored\n", (unsigned long long)ticket);
}

void cnisrv_stats(const struct cnisrv *s, struct cnisrv_stats *out)
{
	*out = s->st;
}

int cnisrv_fd(const struct cnisrv *s)
{
	return s->epfd;
}

/* ---- the socket -------------------------------------------------------- */

/* Makes PATH's folder and its missing parents, 0700. */
static int make_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = 0;
	for (char *p = dir + 1; ; p++) {
		char keep = *p;

		if (keep && keep != '/')
			continue;
		*p = 0;
		if (mkdir(dir, 0700) && errno != EEXIST)
			return -errno;
		*p = keep;
		if (!keep)
			break;
	}
	return 0;
}

/* PATH free for bind(): missing, or a socket nobody listens on (removed). */
static int clear_path(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, live;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		pr_warn("cni socket %s: a file that is not a socket is there: refused (remove it "
			"or choose another path)\n", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	live = !connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	close(fd);
	if (live) {
		pr_warn("cni socket %s: another process listens on it (a second meshd?)\n", path);
		return -EADDRINUSE;
	}
	if (unlink(path) && errno != ENOENT)
		return -errno;
	pr_info("cni socket %s: stale socket file replaced\n", path);
	return 0;
}

int cnisrv_open(const struct cnisrv_opts *o, const struct cnisrv_ops *ops, void *arg,
		struct cnisrv **out)
{
	const char *path = o && o->socket_path ? o->socket_path : SKM_CNI_SOCKET;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = LISTEN_TAG };
	struct cnisrv *s;
	struct stat st;
	int rc;

	*out = NULL;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		pr_warn("cni socket %s: path longer than %zu bytes\n", path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->lfd = s->epfd = -1;
	s->max_clients = o && o->max_clients > 0 ? o->max_clients : DEF_MAX_CLIENTS;
	s->timeout_ms = o && o->read_timeout_ms > 0 ? o->read_timeout_ms : DEF_READ_TIMEOUT_MS;
	s->sock_path = strdup(path);
	s->pending_dir = strdup(o && o->pending_dir ? o->pending_dir : SKM_CNI_PENDING_DIR);
	s->cl = calloc((size_t)s->max_clients, sizeof(*s->cl));
	s->ops = *ops;
	s->arg = arg;
	s->next_ticket = 1;
	s->ll = (struct log_limit)LOG_LIMIT_INIT(10, 1);
	s->ll_peer = (struct log_limit)LOG_LIMIT_INIT(10, 1);
	if (!s->sock_path || !s->pending_dir || !s->cl) {
		rc = -ENOMEM;
		goto out_free;
	}
	for (int i = 0; i < s->max_clients; i++)
		s->cl[i].fd = -1;
	if ((rc = make_parent(path))) {
		pr_warn("cni socket %s: cannot make its folder: %s\n", path, strerror(-rc));
		goto out_free;
	}
	if ((rc = clear_path(path, &sa)))
		goto out_free;
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* the mode a socket file is made with comes from its inode: 0600 from
	 * the start, no window with a looser one */
	if (s->lfd < 0 || fchmod(s->lfd, 0600) ||
	    bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = -errno;
		pr_warn("cni socket %s: %s\n", path, strerror(-rc));
		goto out_free;
	}
	if (chmod(path, 0600) || lstat(path, &st) || listen(s->lfd, 128)) {
		rc = -errno;
		pr_warn("cni socket %s: %s\n", path, strerror(-rc));
		unlink(path);
		goto out_free;
	}
	s->sock_dev = st.st_dev;
	s->sock_ino = st.st_ino;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev)) {
		rc = -errno;
		pr_warn("cni socket %s: epoll: %s\n", path, strerror(-rc));
		unlink(path);
		goto out_free;
	}
	pr_info("cni socket %s: listening (pending records: %s)\n", path, s->pending_dir);
	*out = s;
	return 0;
out_free:
	s->sock_ino = 0;
	cnisrv_close(s);
	return rc;
}

void cnisrv_close(struct cnisrv *s)
{
	struct stat st;

	if (!s)
		return;
	for (int i = 0; s->cl && i < s->max_clients; i++)
		if (s->cl[i].state != CL_FREE)
			client_close(s, &s->cl[i]);
	if (s->sock_ino && !lstat(s->sock_path, &st) && st.st_ino == s->sock_ino &&
	    st.st_dev == s->sock_dev)
		unlink(s->sock_path);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->epfd >= 0)
		close(s->epfd);
	free(s->cl);
	free(s->pend);
	free(s->sock_path);
	free(s->pending_dir);
	free(s);
}
