// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kube-watch - meshd's Kubernetes list-then-watch (agent/kube.c) on its
 * own, for the cluster-mode tests: one JSON line on stdout per thing the
 * watch tells its caller, until SIGTERM/SIGINT or --seconds:
 *
 *   {"relist":"begin"}
 *   {"event":"ADDED|MODIFIED|DELETED","ns":..,"name":..,"rv":..}
 *   {"relist":"end","rv":..}
 *   and at the end {"stats":{"lists":..,"relists_gone":..,"watch_restarts":..,
 *                            "errors":..,"events":..,"bookmarks":..}}
 *
 * usage: kube-watch (--kubeconfig PATH | --in-cluster [DIR]) --path PATH
 *                   [--page N] [--watch-seconds S] [--seconds S]
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "kube.h"
#include "log.h"

static volatile int stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void line(json_t *o)
{
	json_dumpf(o, stdout, JSON_COMPACT | JSON_SORT_KEYS);
	fputc('\n', stdout);
	fflush(stdout);
	json_decref(o);
}

static int on_relist_begin(void *arg)
{
	(void)arg;
	line(json_pack("{s:s}", "relist", "begin"));
	return 0;
}

static int on_event(void *arg, const struct kw_event *ev)
{
	static const char *const types[] = { "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR" };

	(void)arg;
	line(json_pack("{s:s,s:s,s:s,s:s}", "event", types[ev->type], "ns", ev->ns, "name",
		       ev->name, "rv", ev->rv));
	return 0;
}

static int on_relist_end(void *arg, const char *rv)
{
	(void)arg;
	line(json_pack("{s:s,s:s}", "relist", "end", "rv", rv));
	return 0;
}

static void *timer(void *arg)
{
	struct timespec ts = { .tv_sec = *(long *)arg };

	nanosleep(&ts, NULL);
	stop = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "kubeconfig", required_argument, NULL, 'k' },
		{ "in-cluster", optional_argument, NULL, 'i' },
		{ "path", required_argument, NULL, 'p' },
		{ "page", required_argument, NULL, 'P' },
		{ "watch-seconds", required_argument, NULL, 'w' },
		{ "seconds", required_argument, NULL, 's' },
		{}
	};
	const struct kube_watch_ops ops = { on_relist_begin, on_event, on_relist_end };
	struct kube_watch_opts wo = {};
	struct kube_watch_stats st = {};
	const char *kubeconfig = NULL, *sa_dir = NULL;
	struct kube_client *c;
	int in_cluster = 0, opt, rc;
	long seconds = 0;
	char err[512];
	pthread_t th;

	while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (opt) {
		case 'k': kubeconfig = optarg; break;
		case 'i': in_cluster = 1; sa_dir = optarg; break;
		case 'p': wo.path = optarg; break;
		case 'P': wo.page = (unsigned int)atoi(optarg); break;
		case 'w': wo.watch_s = (unsigned int)atoi(optarg); break;
		case 's': seconds = atol(optarg); break;
		default: return 2;
		}
	}
	if (!wo.path || !!kubeconfig == in_cluster) {
		fprintf(stderr, "usage: kube-watch (--kubeconfig PATH | --in-cluster[=DIR]) "
			"--path PATH [--page N] [--watch-seconds S] [--seconds S]\n");
		return 2;
	}
	log_init("kube-watch", LOG_INFO);
	c = kubeconfig ? kube_client_kubeconfig(kubeconfig, err, sizeof(err)) :
			 kube_client_incluster(sa_dir, err, sizeof(err));
	if (!c) {
		fprintf(stderr, "kube-watch: %s\n", err);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	if (seconds > 0)
		pthread_create(&th, NULL, timer, &seconds);
	rc = kube_watch_run(c, &wo, &ops, NULL, &st, &stop);
	line(json_pack("{s:{s:I,s:I,s:I,s:I,s:I,s:I}}", "stats", "lists", (json_int_t)st.lists,
		       "relists_gone", (json_int_t)st.relists_gone, "watch_restarts",
		       (json_int_t)st.watch_restarts, "errors", (json_int_t)st.errors,
		       "events", (json_int_t)st.events, "bookmarks", (json_int_t)st.bookmarks));
	kube_client_free(c);
	return rc ? 1 : 0;
}
