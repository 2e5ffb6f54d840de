// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cnisrv-echo - meshd's CNI socket (agent/cnisrv.c) on its own, for the
 * CNI server tests: an owner that answers every request after --delay-ms
 * (ok, or refused for the container named by --refuse), driven by an
 * epoll loop like meshd's. One JSON line on stdout per event:
 *
 *   {"listening": SOCKET, "loaded": N}      after the pending folder is read
 *   {"request": {op, containerId, netns, ifName, podNamespace, podName,
 *                podUid, hostInterfaces, ips, fromPending, ticket}}
 *   {"stats": {...}}                        at SIGTERM/SIGINT, then exit 0
 *
 * --stats FILE is rewritten (atomically) whenever the counters change.
 *
 * usage: cnisrv-echo --socket PATH --pending DIR [--delay-ms N]
 *                    [--refuse CID] [--max-clients N] [--timeout-ms N]
 *                    [--stats FILE] [-v]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>

#include "cnisrv.h"
#include "log.h"

#define DUE_MAX	4096

static volatile sig_atomic_t stop;
static int delay_ms;
static const char *refuse;
static struct due { uint64_t ticket; long long at; int ok; } due[DUE_MAX];
static size_t ndue;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void line(json_t *o)
{
	json_dumpf(o, stdout, JSON_COMPACT | JSON_SORT_KEYS);
	fputc('\n', stdout);
	fflush(stdout);
	json_decref(o);
}

static json_t *stats_json(const struct cnisrv *s)
{
	struct cnisrv_stats st;

	cnisrv_stats(s, &st);
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
			 "requests", (json_int_t)st.requests, "bad_requests", (json_int_t)st.bad_requests,
			 "refused_busy", (json_int_t)st.refused_busy, "timeouts", (json_int_t)st.timeouts,
			 "pending_loaded", (json_int_t)st.pending_loaded,
			 "replies_ok", (json_int_t)st.replies_ok, "replies_err", (json_int_t)st.replies_err,
			 "refused_peer", (json_int_t)st.refused_peer,
			 "pending_bad", (json_int_t)st.pending_bad);
}

static void on_request(void *arg, const struct cni_req *r, uint64_t ticket)
{
	static const char *const ops[] = { "", "add", "del", "check" };
	json_t *ifs = json_array(), *ips = json_array();
	char a[INET_ADDRSTRLEN];

	(void)arg;
	for (size_t i = 0; i < r->nhost_ifs; i++)
		json_array_append_new(ifs, json_string(r->host_ifs[i]));
	for (size_t i = 0; i < r->nips; i++)
		json_array_append_new(ips, json_string(inet_ntop(AF_INET, &r->ips[i], a, sizeof(a))));
	line(json_pack("{s:{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:b,s:I}}", "request",
		       "op", ops[r->op], "containerId", r->container_id, "netns", r->netns,
		       "ifName", r->ifname, "podNamespace", r->pod_ns, "podName", r->pod_name,
		       "podUid", r->pod_uid, "hostInterfaces", ifs, "ips", ips,
		       "fromPending", r->from_pending, "ticket", (json_int_t)ticket));
	if (ndue == DUE_MAX) {
		fprintf(stderr, "cnisrv-echo: more than %d answers waiting\n", DUE_MAX);
		exit(1);
	}
	due[ndue++] = (struct due){ ticket, now_ms() + delay_ms,
				    !(refuse && !strcmp(refuse, r->container_id)) };
}

static void answer_due(struct cnisrv *s)
{
	long long now = now_ms();

	for (size_t i = 0; i < ndue;) {
		if (due[i].at > now) {
			i++;
			continue;
		}
		struct due d = due[i];

		due[i] = due[--ndue];
		cnisrv_reply(s, d.ticket, d.ok, d.ok ? NULL : "refused by cnisrv-echo");
	}
}

static void write_stats(const struct cnisrv *s, const char *path, char **last)
{
	json_t *j = stats_json(s);
	char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS), tmp[4200];
	FILE *f;

	json_decref(j);
	if (!text || (*last && !strcmp(text, *last))) {
		free(text);
		return;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f) {
		fprintf(f, "%s\n", text);
		if (!fclose(f))
			rename(tmp, path);
	}
	free(*last);
	*last = text;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "pending", required_argument, NULL, 'p' },
		{ "delay-ms", required_argument, NULL, 'd' },
		{ "refuse", required_argument, NULL, 'r' },
		{ "max-clients", required_argument, NULL, 'm' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "stats", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	struct cnisrv_opts o = {};
	struct cnisrv_ops ops = { .request = on_request };
	struct epoll_event ev = { .events = EPOLLIN };
	const char *stats = NULL;
	char *last = NULL;
	struct cnisrv *s;
	int c, ep, n, rc;

	log_init("cnisrv-echo", LOG_INFO);
	while ((c = getopt_long(argc, argv, "v", lo, NULL)) != -1) {
		switch (c) {
		case 's': o.socket_path = optarg; break;
		case 'p': o.pending_dir = optarg; break;
		case 'd': delay_ms = atoi(optarg); break;
		case 'r': refuse = optarg; break;
		case 'm': o.max_clients = atoi(optarg); break;
		case 't': o.read_timeout_ms = atoi(optarg); break;
		case 'S': stats = optarg; break;
		case 'v': log_init("cnisrv-echo", LOG_DEBUG); break;
		default:
			fprintf(stderr, "usage: cnisrv-echo --socket PATH --pending DIR [--delay-ms N] "
				"[--refuse CID] [--max-clients N] [--timeout-ms N] [--stats FILE] [-v]\n");
			return 2;
		}
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	rc = cnisrv_open(&o, &ops, NULL, &s);
	if (rc) {
		fprintf(stderr, "cnisrv-echo: cannot open the socket: %s\n", strerror(-rc));
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, cnisrv_fd(s), &ev)) {
		perror("cnisrv-echo: epoll");
		return 1;
	}
	n = cnisrv_load_pending(s);
	line(json_pack("{s:s,s:i}", "listening", o.socket_path ? o.socket_path : "", "loaded", n));
	while (!stop) {
		struct epoll_event got;

		/* the same shape as meshd's loop: the fd when readable, and a
		 * tick at most 50 ms apart */
		epoll_wait(ep, &got, 1, 50);
		cnisrv_process(s);
		answer_due(s);
		if (stats)
			write_stats(s, stats, &last);
	}
	line(json_pack("{s:o}", "stats", stats_json(s)));
	cnisrv_close(s);
	close(ep);
	free(last);
	return 0;
}
