// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * meshd: the per-node agent. Loads the data path, keeps the kernel maps in
 * line with the config (on start, SIGHUP and file changes), carries
 * cross-node traffic of meshed pods in the HBONE tunnel (tunnel.h) and
 * writes an access-log line for every closed connection.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <bpf/libbpf.h>

#include "admin.h"
#include "alog.h"
#include "config.h"
#include "events.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"
#include "reconcile.h"
#include "skmesh.h"
#include "skmesh.skel.h"
#include "tunnel.h"
#include "caclient.h"
#include "certs.h"
#include "cluster.h"
#include "ksource.h"
#include "skmesh-cni.h"

#define STR_(x) #x
#define STR(x) STR_(x)

struct opts {
	const char *config;
	int kube;		/* --kube: in-cluster config */
	const char *kubeconfig;
	const char *cni_socket;
	const char *cni_pending;
	const char *proc_root;
	const char *node;
	const char *cgroup;
	const char *bpffs;
	const char *admin;
	const char *metrics_addr;
	const char *ready_addr;
	int max_series;
	const char *access_log;
	unsigned int access_log_rate;
	int access_log_rate_set;
	unsigned int access_log_pod_rate;
	struct loader_limits limits;
	const char *ca_dir;
	const char *ca_addr;
	const char *ca_root;
	const char *ca_token;
	const char *ca_server_name;
	const char *cluster_id;
	const char *trust_domain;
	const char *cert_dir;
	int cert_lifetime_s;
	int drain_s;
	struct tunnel_limits tun_lim;	/* 0: the defaults */
	int check_config;
	int cleanup;
	int verbose;
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: meshd --config PATH --node NAME [options]\n"
"       meshd --kube | --kubeconfig PATH --node NAME [options]\n"
"       meshd --check-config --config PATH\n"
"       meshd --cleanup [--bpffs DIR]\n"
"\n"
"  --config PATH      YAML file, or folder of *.yaml files (Workload, Service,\n"
"                     AuthorizationPolicy, PeerAuthentication documents)\n"
"  --kube             cluster mode: learn pods, services and Istio policy from\n"
"                     the Kubernetes API (in-cluster config: the mounted\n"
"                     service-account token and KUBERNETES_SERVICE_HOST)\n"
"  --kubeconfig PATH  cluster mode, with the API server and credentials of\n"
"                     this kubeconfig's current context\n"
"  --cni-socket PATH  cluster mode: where skmesh-cni reaches meshd\n"
"                     (" SKM_CNI_SOCKET ")\n"
"  --cni-pending-dir DIR  cluster mode: what skmesh-cni left while meshd was\n"
"                     down (" SKM_CNI_PENDING_DIR ")\n"
"  --proc-root DIR    cluster mode: the host's /proc, scanned at start for\n"
"                     pods that already run (/proc)\n"
"  --node NAME        this node's name: Workloads with spec.node NAME (pods\n"
"                     with spec.nodeName NAME) are local\n"
"  --cgroup PATH      cgroup v2 to attach to (default: the cgroup2 root)\n"
"  --bpffs DIR        pin root (default " SKM_PIN_ROOT ")\n"
"  --admin ADDR[:PORT]  admin endpoint /config_dump (127.0.0.1:15000);\n"
"                     \"off\": not served\n"
"  --metrics-addr ADDR[:PORT]  Prometheus /metrics and /stats/prometheus\n"
"                     (0.0.0.0:15020), \"off\": not served\n"
"  --ready-addr ADDR[:PORT]  readiness probe /healthz/ready (0.0.0.0:15021),\n"
"                     \"off\": not served\n"
"  --metrics-max-series N  label sets per istio_tcp_* family (10000); beyond,\n"
"                     connections count in one series labelled unknown\n"
"  --access-log PATH  one JSON line per closed connection (default: stdout)\n"
"  --access-log-rate N  at most N access-log lines a second (5000; 0: no\n"
"                     limit); the rest are counted and reported\n"
"  --access-log-pod-rate N  at most N of those lines a second for one local pod\n"
"                     (or one source of denied connections, or one client of\n"
"                     tunnel streams): 1000; 0: no share\n"
"  --conns-per-pod N  live connection records one local pod may hold in the\n"
"                     node's table (" STR(SKM_DEFAULT_CONNS_PER_POD) " of " STR(SKM_MAX_CONNS) "; 0: no share)\n"
"  --events-per-pod N  close events a second one local pod may send to meshd\n"
"                     (" STR(SKM_DEFAULT_EVENTS_PER_POD) "; 0: no share); the rest are counted per pod\n"
"  --ca-dir DIR       mesh CA (meshctl ca init): turns on the HBONE tunnel\n"
"                     for cross-node traffic between meshed pods\n"
"  --ca-addr HOST:PORT  cluster mode: get certificates from this CA (skmesh-ca,\n"
"                     or istiod's 15012) with CSRs; turns on the HBONE tunnel.\n"
"                     The node holds no CA key: --ca-dir is refused with it\n"
"  --ca-root FILE     with --ca-addr: the trust bundle (PEM roots; a mounted\n"
"                     ConfigMap, re-read when it changes; two roots during a\n"
"                     rotation): peers and the CA itself must chain to one\n"
"  --ca-token FILE    with --ca-addr: the projected service-account token\n"
"                     with the CA's audience, read again for each request\n"
"  --ca-server-name NAME  the name the CA's certificate must carry (default:\n"
"                     the HOST of --ca-addr)\n"
"  --cluster-id ID    the clusterid header sent to the CA (Kubernetes)\n"
"  --cert-dir DIR     write the issued workload certificates there (0600 keys)\n"
"  --trust-domain TD  the mesh's SPIFFE trust domain (cluster.local): of the\n"
"                     principals policy names and the certificates issued\n"
"  --drain-timeout S  on SIGTERM, how long tunnelled streams may finish (5)\n"
"  --cert-lifetime S  lifetime of issued workload certificates (86400); they\n"
"                     are renewed at half-life\n"
"  Bounds on HBONE peers (each refusal counted, see docs/operations.md):\n"
"  --tunnel-max-conns N           inbound TLS connections in all (4096)\n"
"  --tunnel-max-conns-per-peer N  ... from one peer address (512)\n"
"  --tunnel-max-handshakes N      inbound TLS handshakes in progress (64)\n"
"  --tunnel-handshake-timeout S   a handshake not done by then is closed (10)\n"
"  --tunnel-handshake-rate N      inbound handshakes one peer address may\n"
"                                 start a second (50)\n"
"  --tunnel-conn-buffer BYTES     bytes buffered per connection each way,\n"
"                                 its HTTP/2 connection window (4194304)\n"
"  --tunnel-buffer-total BYTES    bytes buffered by all connections (268435456)\n"
"  --tunnel-reset-burst N, --tunnel-reset-rate N  RST_STREAMs a peer may send\n"
"                     at once, then a second, before GOAWAY (1000, 100)\n"
"  --check-config     validate the config, print every problem, change nothing\n"
"  --cleanup          detach and unpin everything under the pin root, then exit\n"
"  -v, --verbose      more log output (twice for libbpf's)\n"
"  -h, --help         this text\n"
"\n"
"Reloads the config on SIGHUP and when the file changes; an invalid config is\n"
"reported and the running state is kept. SIGTERM/SIGINT stop meshd and leave\n"
"the data path attached (use --cleanup to remove it).\n");
}

static int int_arg(const char *name, const char *arg, long min, long max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || *end || end == arg || v < min || v > max) {
		fprintf(stderr, "meshd: %s %s: give a whole number, %ld..%ld\n", name, arg,
			min, max);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}

static int uint_arg(const char *name, const char *arg, long min, long max, unsigned int *out)
{
	int v;

	if (int_arg(name, arg, min, max, &v))
		return -EINVAL;
	*out = (unsigned int)v;
	return 0;
}

static int long_arg(const char *name, const char *arg, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || *end || end == arg || v < min || v > max) {
		fprintf(stderr, "meshd: %s %s: give a whole number of bytes, %ld..%ld\n", name,
			arg, min, max);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "kube", no_argument, NULL, 0x200 },
		{ "kubeconfig", required_argument, NULL, 0x201 },
		{ "cni-socket", required_argument, NULL, 0x202 },
		{ "cni-pending-dir", required_argument, NULL, 0x203 },
		{ "proc-root", required_argument, NULL, 0x204 },
		{ "node", required_argument, NULL, 'n' },
		{ "cgroup", required_argument, NULL, 'g' },
		{ "bpffs", required_argument, NULL, 'b' },
		{ "admin", required_argument, NULL, 'a' },
		{ "metrics-addr", required_argument, NULL, 'M' },
		{ "ready-addr", required_argument, NULL, 'Y' },
		{ "metrics-max-series", required_argument, NULL, 'S' },
		{ "access-log", required_argument, NULL, 'l' },
		{ "ca-dir", required_argument, NULL, 'A' },
		{ "ca-addr", required_argument, NULL, 0x300 },
		{ "ca-root", required_argument, NULL, 0x301 },
		{ "ca-token", required_argument, NULL, 0x302 },
		{ "ca-server-name", required_argument, NULL, 0x303 },
		{ "cluster-id", required_argument, NULL, 0x304 },
		{ "trust-domain", required_argument, NULL, 'W' },
		{ "access-log-rate", required_argument, NULL, 'R' },
		{ "conns-per-pod", required_argument, NULL, 'P' },
		{ "access-log-pod-rate", required_argument, NULL, 'Q' },
		{ "events-per-pod", required_argument, NULL, 'E' },
		{ "cert-dir", required_argument, NULL, 'K' },
		{ "drain-timeout", required_argument, NULL, 'D' },
		{ "cert-lifetime", required_argument, NULL, 'T' },
		{ "tunnel-max-conns", required_argument, NULL, 0x100 },
		{ "tunnel-max-conns-per-peer", required_argument, NULL, 0x101 },
		{ "tunnel-max-handshakes", required_argument, NULL, 0x102 },
		{ "tunnel-handshake-timeout", required_argument, NULL, 0x103 },
		{ "tunnel-conn-buffer", required_argument, NULL, 0x104 },
		{ "tunnel-buffer-total", required_argument, NULL, 0x105 },
		{ "tunnel-reset-burst", required_argument, NULL, 0x106 },
		{ "tunnel-reset-rate", required_argument, NULL, 0x107 },
		{ "tunnel-handshake-rate", required_argument, NULL, 0x108 },
		{ "check-config", no_argument, NULL, 'C' },
		{ "cleanup", no_argument, NULL, 'X' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{}
	};
	int c;

	o->drain_s = -1;
	o->access_log_pod_rate = 1000;
	o->limits.conns_per_pod = SKM_DEFAULT_CONNS_PER_POD;
	o->limits.events_per_pod = SKM_DEFAULT_EVENTS_PER_POD;
	while ((c = getopt_long(argc, argv, "c:n:g:b:a:l:vh", lopts, NULL)) != -1) {
		switch (c) {
		case 'c': o->config = optarg; break;
		case 'n': o->node = optarg; break;
		case 'g': o->cgroup = optarg; break;
		case 'b': o->bpffs = optarg; break;
		case 'a': o->admin = optarg; break;
		case 'M': o->metrics_addr = optarg; break;
		case 'Y': o->ready_addr = optarg; break;
		case 'S':
			if (int_arg("--metrics-max-series", optarg, 1, 10000000, &o->max_series))
				return -EINVAL;
			break;
		case 'l': o->access_log = optarg; break;
		case 'A': o->ca_dir = optarg; break;
		case 'W': o->trust_domain = optarg; break;
		case 'R':
			if (uint_arg("--access-log-rate", optarg, 0, 10000000, &o->access_log_rate))
				return -EINVAL;
			o->access_log_rate_set = 1;
			break;
		case 'Q':
			if (uint_arg("--access-log-pod-rate", optarg, 0, 10000000, &o->access_log_pod_rate))
				return -EINVAL;
			break;
		case 'P':
			if (uint_arg("--conns-per-pod", optarg, 0, SKM_MAX_CONNS, &o->limits.conns_per_pod))
				return -EINVAL;
			break;
		case 'E':
			if (uint_arg("--events-per-pod", optarg, 0, 10000000, &o->limits.events_per_pod))
				return -EINVAL;
			break;
		case 'K': o->cert_dir = optarg; break;
		case 'D':
			if (int_arg("--drain-timeout", optarg, 0, 3600, &o->drain_s))
				return -EINVAL;
			break;
		case 'T':
			if (int_arg("--cert-lifetime", optarg, 10, 366 * 86400,
					&o->cert_lifetime_s))
				return -EINVAL;
			break;
		case 0x100:
			if (int_arg("--tunnel-max-conns", optarg, 1, 1000000,
				    &o->tun_lim.max_conns))
				return -EINVAL;
			break;
		case 0x101:
			if (int_arg("--tunnel-max-conns-per-peer", optarg, 1, 1000000,
				    &o->tun_lim.max_conns_per_peer))
				return -EINVAL;
			break;
		case 0x102:
			if (int_arg("--tunnel-max-handshakes", optarg, 1, 100000,
				    &o->tun_lim.max_handshakes))
				return -EINVAL;
			break;
		case 0x103:
			if (int_arg("--tunnel-handshake-timeout", optarg, 1, 300,
				    &o->tun_lim.handshake_timeout_s))
				return -EINVAL;
			break;
		case 0x104:
			/* the HTTP/2 window: at least its initial 64 KiB, at
			 * most 2^31 - 1 */
			if (long_arg("--tunnel-conn-buffer", optarg, 65535, 0x7fffffffL,
				     &o->tun_lim.conn_buffer))
				return -EINVAL;
			break;
		case 0x105:
			if (long_arg("--tunnel-buffer-total", optarg, 1L << 20, 1L << 40,
				     &o->tun_lim.buffer_total))
				return -EINVAL;
			break;
		case 0x106:
			if (int_arg("--tunnel-reset-burst", optarg, 1, 10000000,
				    &o->tun_lim.reset_burst))
				return -EINVAL;
			break;
		case 0x107:
			if (int_arg("--tunnel-reset-rate", optarg, 1, 10000000,
				    &o->tun_lim.reset_rate))
				return -EINVAL;
			break;
		case 0x108:
			if (int_arg("--tunnel-handshake-rate", optarg, 1, 1000000,
				    &o->tun_lim.handshake_rate))
				return -EINVAL;
			break;
		case 0x200: o->kube = 1; break;
		case 0x201: o->kubeconfig = optarg; break;
		case 0x202: o->cni_socket = optarg; break;
		case 0x203: o->cni_pending = optarg; break;
		case 0x204: o->proc_root = optarg; break;
		case 0x300: o->ca_addr = optarg; break;
		case 0x301: o->ca_root = optarg; break;
		case 0x302: o->ca_token = optarg; break;
		case 0x303: o->ca_server_name = optarg; break;
		case 0x304: o->cluster_id = optarg; break;
		case 'C': o->check_config = 1; break;
		case 'X': o->cleanup = 1; break;
		case 'v': o->verbose++; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "meshd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return -EINVAL;
	}
	if (!o->bpffs)
		o->bpffs = SKM_PIN_ROOT;
	if (o->drain_s < 0)
		o->drain_s = 5;
	if (!o->access_log_rate_set)
		o->access_log_rate = 5000;
	if (o->cleanup)
		return 0;
	{
		const char *const flags[] = { "--admin", "--metrics-addr", "--ready-addr" };
		const char *vals[] = { o->admin, o->metrics_addr, o->ready_addr };

		for (int i = 0; i < 3; i++) {
			struct sockaddr_storage ss;
			unsigned int len;

			if (vals[i] && admin_parse_addr(vals[i], 1, &ss, &len) < 0) {
				fprintf(stderr, "meshd: %s \"%s\": expected ADDR, ADDR:PORT, "
					"[IPV6]:PORT or off\n", flags[i], vals[i]);
				return -EINVAL;
			}
		}
	}
	if (o->kube && o->kubeconfig) {
		fprintf(stderr, "meshd: give --kube (in-cluster) or --kubeconfig PATH, not both\n");
		return -EINVAL;
	}
	if ((o->kube || o->kubeconfig) && o->config) {
		fprintf(stderr, "meshd: --config (standalone YAML) and cluster mode (--kube, "
			"--kubeconfig) exclude each other: give one\n");
		return -EINVAL;
	}
	if ((o->kube || o->kubeconfig) && o->check_config) {
		fprintf(stderr, "meshd: --check-config checks a --config; in cluster mode the API "
			"server checks objects, and meshd logs what it cannot apply\n");
		return -EINVAL;
	}
	if (!(o->kube || o->kubeconfig) && (o->cni_socket || o->cni_pending || o->proc_root)) {
		fprintf(stderr, "meshd: --cni-socket, --cni-pending-dir and --proc-root are for "
			"cluster mode (--kube or --kubeconfig)\n");
		return -EINVAL;
	}
	if (!o->ca_addr && (o->ca_root || o->ca_token || o->ca_server_name || o->cluster_id)) {
		fprintf(stderr, "meshd: --ca-root, --ca-token, --ca-server-name and --cluster-id "
			"are for a remote CA: give --ca-addr too\n");
		return -EINVAL;
	}
	if (o->ca_addr && !(o->kube || o->kubeconfig)) {
		fprintf(stderr, "meshd: --ca-addr is for cluster mode (--kube or --kubeconfig): "
			"the CA grants a node the identities of the pods the API server says run "
			"on it; standalone, use --ca-dir\n");
		return -EINVAL;
	}
	if (o->ca_addr && o->ca_dir) {
		fprintf(stderr, "meshd: --ca-dir and --ca-addr exclude each other: with a remote "
			"CA the node holds only its pods' short-lived keys, and a mesh root key on "
			"it would let anyone with root on this one node mint every identity of "
			"the mesh. Leave the root key in the CA's Secret and drop --ca-dir\n");
		return -EINVAL;
	}
	if (o->ca_addr && (!o->ca_root || !o->ca_token)) {
		fprintf(stderr, "meshd: --ca-addr needs --ca-root FILE (the trust bundle) and "
			"--ca-token FILE (a service-account token with the CA's audience)\n");
		return -EINVAL;
	}
	if (o->kube || o->kubeconfig) {
		if (!o->node) {
			fprintf(stderr, "meshd: --node NAME is required (in a DaemonSet: the "
				"downward API's spec.nodeName)\n");
			return -EINVAL;
		}
		return 0;
	}
	if (!o->config) {
		fprintf(stderr, "meshd: --config PATH (standalone) or --kube / --kubeconfig PATH "
			"(cluster mode) is required\n");
		usage(stderr);
		return -EINVAL;
	}
	if (!o->check_config && !o->node) {
		fprintf(stderr, "meshd: --node NAME is required (which Workloads are local)\n");
		return -EINVAL;
	}
	return 0;
}

/* What run() keeps from one load of the config to the next (NULL: none),
 * so a reload parses only the documents that changed. */
static struct cfg_cache *config_cache;

/* The first error of the last load that failed ("" after a good one),
 * for /config_dump. */
static char load_error[512];
/* --trust-domain */
static struct cfg_opts load_opts;

/* Loads and validates the config; prints every message. */
static int load_config(const char *path, struct config **out)
{
	struct cfg_diag diag = {};
	int err = config_load_cached(path, &load_opts, config_cache, out, &diag);

	diag_print(&diag, "meshd");
	load_error[0] = 0;
	if (err && !diag.nerrors)
		fprintf(stderr, "meshd: %s: %s\n", path, strerror(-err));
	if (err)
		snprintf(load_error, sizeof(load_error), "%s%s%s", diag.n ? diag.msgs[0] : path,
			 diag.nerrors > 1 ? " (and more: see meshd's log)" : "",
			 diag.n ? "" : strerror(-err));
	diag_free(&diag);
	return err;
}

static int apply(struct loader *l, const struct config *cfg, const char *node,
		 struct metrics *m)
{
	struct reconcile_stats st;
	double t0 = mono_ms();
	int err = reconcile(l, cfg, node, &st);

	if (err) {
		pr_warn("reconcile failed: %s\n", strerror(-err));
		snprintf(load_error, sizeof(load_error), "applying the config to the kernel "
			 "maps failed: %s", strerror(-err));
		return err;
	}
	metrics_reload(m, 1, (mono_ms() - t0) / 1e3);
	pr_info("applied config: %zu workloads, %zu services, %zu AuthorizationPolicies, "
		"%zu PeerAuthentications; %u entries written, %u deleted, policy of %u "
		"destinations compiled, %u live connections closed as now denied%s, TC on %u "
		"pod interfaces%s in %.1f ms\n",
		cfg->nwls, cfg->nsvcs, cfg->nauthz, cfg->npas, st.writes, st.deletes,
		st.policies_compiled, st.revoked, st.revoke_failed ? " (some could not be)" : "",
		st.tc_attached, st.tc_missing ? " (some local pods have no veth yet)" : "",
		mono_ms() - t0);
	return 0;
}

/* Watches the config: a folder directly, a file through its folder (editors
 * and ConfigMap updates replace files by rename). */
static int watch_config(const char *path)
{
	char dir[PATH_MAX];
	struct stat st;
	int fd, wd;

	fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(dir, sizeof(dir), "%s", path);
	if (!stat(path, &st) && !S_ISDIR(st.st_mode)) {
		char *slash = strrchr(dir, '/');

		if (slash)
			*slash = 0;
		else
			snprintf(dir, sizeof(dir), ".");
	}
	wd = inotify_add_watch(fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
			       IN_CREATE | IN_DELETE);
	if (wd < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Reads every pending inotify event; 1 if one concerns the config (any
 * YAML file of a config folder, or the config file itself). */
static int config_changed(int fd, const char *path)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	const char *base = strrchr(path, '/');
	struct stat st;
	int is_dir = !stat(path, &st) && S_ISDIR(st.st_mode);
	int hit = 0;
	ssize_t n;

	base = base ? base + 1 : path;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			size_t l = e->len ? strlen(e->name) : 0;

			/* kubelet updates a mounted ConfigMap by swapping
			 * the "..data" symlink its files point through */
			if (is_dir ? (l > 5 && !strcmp(e->name + l - 5, ".yaml")) ||
				     (l > 4 && !strcmp(e->name + l - 4, ".yml")) ||
				     !strcmp(e->name, "..data")
				   : (l && (!strcmp(e->name, base) || !strcmp(e->name, "..data"))))
				hit = 1;
			p += sizeof(*e) + e->len;
		}
	}
	return hit;
}

/* What run() keeps while meshd runs. */
struct meshd {
	const struct opts *o;
	struct loader l;
	const char *cgroup;
	struct metrics mx;
	struct admin *adm;
	struct tunnel *tun;
	struct cfgref *cref;		/* the config applied to the maps */
	const struct config *cur;	/* its config, as the events read it */
	uint64_t seq;			/* of cref */
	/* cluster mode */
	struct ksource *ks;
	uint64_t applied_gen;		/* the source's version in cref */
	int applied;			/* a model of the source is in the maps */
	double build_at;		/* a build is due then (0: none) */
	double build_by;		/* ... and at the latest then */
	int applied_efd;		/* the tunnel says it opened listeners */
	int ready;
	struct cluster_cni *cni;	/* skmesh-cni's side (cluster.c) */
};

/* Makes NEXT the running config: the maps (already written by apply()),
 * then the tunnel and the endpoints. Takes NEXT. */
static int install(struct meshd *d, struct config *next)
{
	struct cfgref *r = cfgref_new(next);

	if (!r) {
		config_free(next);
		return -ENOMEM;
	}
	r->seq = ++d->seq;
	d->cur = next;
	if (d->cref)
		cfgref_put(d->cref);
	d->cref = r;
	tunnel_update(d->tun, r);
	admin_set_config(d->adm, r);
	return 0;
}

/* Builds a model of what the cluster holds now and applies it; a model
 * that cannot be built or applied keeps the running one. */
static void cluster_apply(struct meshd *d)
{
	struct cfg_diag diag = {};
	struct config *next = NULL;
	uint64_t gen;
	int err = ksource_build(d->ks, &next, &diag, &gen);

	diag_print(&diag, "meshd");
	if (err) {
		snprintf(load_error, sizeof(load_error), "the cluster's objects make no valid "
			 "model: %s%s", diag.n ? diag.msgs[0] : strerror(-err),
			 diag.nerrors > 1 ? " (and more: see meshd's log)" : "");
		pr_warn("%s: keeping the running state\n", load_error);
		diag_free(&diag);
		metrics_reload(&d->mx, 0, 0);
		admin_set_reload_error(d->adm, load_error);
		return;
	}
	diag_free(&diag);
	if (apply(&d->l, next, d->o->node, &d->mx)) {
		config_free(next);
		metrics_reload(&d->mx, 0, 0);
		admin_set_reload_error(d->adm, load_error);
		return;
	}
	admin_set_reload_error(d->adm, NULL);
	if (install(d, next)) {
		pr_warn("out of memory: the applied model is not shared\n");
		return;
	}
	if (!d->applied) {
		reconcile_gc_policy(&d->l);
		/* the lists' pages were decoded whole by the watch threads,
		 * each with its own malloc arena: give what they freed back */
		malloc_trim(0);
	}
	d->applied = 1;
	d->applied_gen = gen;
	ksource_applied(d->ks);
	cluster_cni_applied(d->cni, d->cur, gen, d->seq);
}

/* Ready once the config is in the maps and, with the tunnel, its
 * listeners are open: in cluster mode once every type has been listed. */
static void check_ready(struct meshd *d)
{
	if (d->ready || (d->ks && !d->applied) ||
	    (d->tun && tunnel_applied(d->tun) < d->seq))
		return;
	d->ready = 1;
	admin_set_ready(d->adm, 1, NULL);
	pr_info("ready: node %s, cgroup %s, pins %s%s%s\n", d->o->node, d->cgroup,
		d->o->bpffs, d->tun ? ", tunnel on" : "", d->ks ? ", cluster mode" : "");
}

/* A change of the cluster's objects: build after 20 ms more of quiet,
 * or 250 ms after the first change at the latest. */
static void cluster_changed(struct meshd *d)
{
	uint64_t v;
	double now = mono_ms();

	if (read(ksource_fd(d->ks), &v, sizeof(v)) < 0 && errno != EAGAIN)
		pr_warn("eventfd: %s\n", strerror(errno));
	if (!ksource_synced(d->ks))
		return;
	if (!d->build_at)
		d->build_by = now + 250;
	d->build_at = now + 20 < d->build_by ? now + 20 : d->build_by;
}

static json_t *source_dump(void *arg)
{
	struct meshd *d = arg;

	return ksource_dump(d->ks);
}

static void source_metrics(void *arg, struct sbuf *b)
{
	struct meshd *d = arg;

	ksource_metrics(d->ks, b);
	cluster_cni_metrics(__atomic_load_n(&d->cni, __ATOMIC_ACQUIRE), b);
}

static int run(const struct opts *o)
{
	struct meshd d = { .o = o, .applied_efd = -1 };
	struct config *cfg = NULL, *next = NULL;
	char cgroot[PATH_MAX];
	struct events ev = {};
	struct epoll_event eev, got[8];
	FILE *alog = stdout;
	struct alog al;
	struct metrics_opts mo = { .node = o->node, .max_series = (size_t)o->max_series };
	struct admin_opts ao = { .admin_addr = o->admin, .metrics_addr = o->metrics_addr,
				 .ready_addr = o->ready_addr, .node = o->node,
				 .config_path = o->config, .bpffs = o->bpffs };
	sigset_t mask;
	int sfd = -1, ifd = -1, efd = -1, err, stop = 0, cluster = o->kube || o->kubeconfig;
	double reload_at = 0;

	if (metrics_init(&d.mx, &mo)) {
		pr_warn("out of memory\n");
		return 1;
	}
	config_cache = cfg_cache_new();
	if (cluster) {
		struct ksource_opts ko = { .kubeconfig = o->kubeconfig, .node = o->node,
					   .trust_domain = o->trust_domain };
		struct cfg_diag diag = {};
		char why[512];

		err = ksource_new(&ko, &d.ks, why, sizeof(why));
		if (err) {
			pr_warn("cluster mode: %s\n", err == -ENOMEM ? "out of memory" : why);
			metrics_fini(&d.mx);
			cfg_cache_free(config_cache);
			return 1;
		}
		/* Nothing is known before the first lists: the maps keep what
		 * they hold (a restarted meshd's state) until then. */
		cfg = model_new(NULL, o->trust_domain);
		if (!cfg || model_finish(cfg, &diag)) {
			diag_free(&diag);
			pr_warn("out of memory\n");
			goto out_cfg;
		}
		diag_free(&diag);
	} else {
		err = load_config(o->config, &cfg);
		if (err) {
			metrics_fini(&d.mx);
			cfg_cache_free(config_cache);
			return 1;
		}
	}
	d.cur = cfg;

	if (!o->cgroup) {
		if (cgroup2_default_root(cgroot, sizeof(cgroot))) {
			pr_warn("no cgroup v2 mount in /proc/self/mounts: give --cgroup\n");
			goto out_cfg;
		}
	}
	/* The config is shared with the tunnel thread and the endpoints
	 * from here on: it is freed by the last to let go of it. */
	d.cref = cfgref_new(cfg);
	if (!d.cref) {
		pr_warn("out of memory\n");
		goto out_cfg;
	}
	d.cref->seq = ++d.seq;
	if (cluster) {
		d.applied_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (d.applied_efd < 0) {
			pr_warn("eventfd: %s\n", strerror(errno));
			goto out_cfg;
		}
	}
	/* The mesh CA is read now: one that cannot serve (unreadable,
	 * another trust domain; a remote CA's bundle or token missing)
	 * stops meshd before it changes anything. */
	if (o->ca_dir || o->ca_addr) {
		struct ca_client_opts cao = { .addr = o->ca_addr, .root_file = o->ca_root,
					      .token_file = o->ca_token,
					      .server_name = o->ca_server_name,
					      .cluster_id = o->cluster_id ?: "Kubernetes" };
		struct cert_signer *signer = NULL;
		char why[SKM_REASON_MAX];

		if (o->ca_addr && ca_client_new(&cao, &signer, why, sizeof(why))) {
			pr_warn("cannot use the CA at %s: %s\n", o->ca_addr, why);
			goto out_cfg;
		}
		struct tunnel_opts to = { .node = o->node, .bpffs = o->bpffs,
					  .ca_dir = o->ca_dir, .signer = signer,
					  .cert_dir = o->cert_dir,
					  .access_log = &al, .metrics = &d.mx,
					  .drain_s = o->drain_s, .lim = o->tun_lim,
					  .cert_lifetime_s = o->cert_lifetime_s,
					  .applied_fd = d.applied_efd > 0 ? d.applied_efd : 0 };

		if (tunnel_new(&to, d.cref, &d.tun)) {
			pr_warn("cannot start the tunnel: the CA %s cannot be used (above)\n",
				o->ca_dir ? o->ca_dir : o->ca_addr);
			goto out_cfg;
		}
		if (o->ca_addr)
			pr_info("certificates from the CA at %s (trust bundle %s); this node "
				"holds no CA key\n", o->ca_addr, o->ca_root);
	}
	if (o->access_log && strcmp(o->access_log, "-")) {
		alog = fopen(o->access_log, "a");
		if (!alog) {
			pr_warn("cannot open access log %s: %s\n", o->access_log, strerror(errno));
			goto out_cfg;
		}
	}

	alog_init(&al, alog, o->access_log_rate);
	if (alog_set_share(&al, o->access_log_pod_rate))
		goto out_log;
	ao.cgroup = o->cgroup ? o->cgroup : cgroot;
	d.cgroup = ao.cgroup;
	/* Served from before the data path is touched (ready once the config
	 * is applied), so that a port another process holds stops meshd
	 * before it changes anything. */
	if (admin_start(&ao, &d.mx, &al, &d.adm))
		goto out_log;
	admin_set_ready(d.adm, 0, "loading the data path");
	if (d.ks) {
		admin_set_source(d.adm, &(struct admin_source){ .dump = source_dump,
				 .metrics = source_metrics, .arg = &d });
		/* the lists run while the data path loads */
		if (ksource_start(d.ks))
			goto out_log;
	}
	err = loader_open(&d.l, o->bpffs, o->cgroup ? o->cgroup : cgroot, &o->limits);
	if (err)
		goto out_log;
	admin_set_loader(d.adm, &d.l);
	admin_set_ready(d.adm, 0, d.ks ? "listing the cluster's objects" : "applying the config");
	if (d.l.reused_links)
		pr_info("found the data path pinned under %s: reused it (%d links switched "
			"to this meshd's programs)\n", o->bpffs, d.l.reused_links);
	reconcile_gc_backends(&d.l);
	if (!d.ks) {
		if (apply(&d.l, cfg, o->node, &d.mx))
			goto out_loader;
		reconcile_gc_policy(&d.l);
	}
	err = events_open(&ev, bpf_map__fd(d.l.skel->maps.skm_events), &al, &d.mx, &d.cur);
	if (err)
		goto out_loader;
	ev.node = o->node;
	ev.names_fd = bpf_map__fd(d.l.skel->maps.skm_names);
	admin_set_config(d.adm, d.cref);
	if (d.tun) {
		err = tunnel_start(d.tun);
		if (err) {
			d.tun = NULL;	/* freed */
			pr_warn("cannot start the tunnel: %s\n", strerror(-err));
			goto out_events;
		}
		admin_set_tunnel(d.adm, d.tun);
	} else {
		pr_info("no --ca-dir or --ca-addr: the HBONE tunnel is off; connections of meshed pods to "
			"other nodes go out as plaintext (STRICT destinations drop them)\n");
	}

	sigemptyset(&mask);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (!d.ks) {
		ifd = watch_config(o->config);
		if (ifd < 0)
			pr_warn("cannot watch %s for changes (%s): reload with SIGHUP\n",
				o->config, strerror(-ifd));
	}
	efd = epoll_create1(EPOLL_CLOEXEC);
	if (sfd < 0 || efd < 0) {
		pr_warn("cannot set up the event loop: %s\n", strerror(errno));
		goto out_events;
	}
	eev.events = EPOLLIN;
	eev.data.fd = sfd;
	epoll_ctl(efd, EPOLL_CTL_ADD, sfd, &eev);
	eev.data.fd = events_epoll_fd(&ev);
	epoll_ctl(efd, EPOLL_CTL_ADD, eev.data.fd, &eev);
	if (ifd >= 0) {
		eev.data.fd = ifd;
		epoll_ctl(efd, EPOLL_CTL_ADD, ifd, &eev);
	}
	if (d.ks) {
		eev.data.fd = ksource_fd(d.ks);
		epoll_ctl(efd, EPOLL_CTL_ADD, eev.data.fd, &eev);
		eev.data.fd = d.applied_efd;
		epoll_ctl(efd, EPOLL_CTL_ADD, eev.data.fd, &eev);
		struct cluster_cni *cni;

		if (cluster_cni_open(&cni, d.ks, o->cni_socket, o->cni_pending, o->proc_root,
				     efd))
			goto out_events;
		__atomic_store_n(&d.cni, cni, __ATOMIC_RELEASE);
		cluster_changed(&d);	/* all may be listed already */
	}
	check_ready(&d);

	while (!stop) {
		/* A pending reload is due when its settle time is over: wait
		 * no longer than that (a fixed 50 ms here once cost a reload
		 * up to 50 ms on top of its 10 ms settle). */
		double due = reload_at ? reload_at - mono_ms() : SKM_EVENTS_POLL_MS;
		int timeout, n;

		if (d.build_at && d.build_at - mono_ms() < due)
			due = d.build_at - mono_ms();
		timeout = due <= 0 ? 0 : (int)due + 1;
		n = epoll_wait(efd, got, 8, timeout);
		if (n < 0 && errno != EINTR) {
			pr_warn("epoll_wait: %s\n", strerror(errno));
			break;
		}
		/* Close events wake meshd in batches (see conn.bpf.h): the
		 * rest are read on this timer. */
		if (n == 0)
			events_consume(&ev);
		for (int i = 0; i < n; i++) {
			int fd = got[i].data.fd;

			if (fd == sfd) {
				struct signalfd_siginfo si;

				while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
					if (si.ssi_signo == SIGHUP && d.ks)
						d.build_at = d.applied ? mono_ms() : 0;
					else if (si.ssi_signo == SIGHUP)
						reload_at = mono_ms();
					else
						stop = 1;
				}
			} else if (fd == ifd) {
				/* Settle briefly: an in-place write comes as
				 * several events (a rename as one). */
				if (config_changed(ifd, o->config))
					reload_at = mono_ms() + 10;
			} else if (d.ks && fd == ksource_fd(d.ks)) {
				cluster_changed(&d);
			} else if (fd == d.applied_efd) {
				uint64_t v;

				if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					pr_warn("eventfd: %s\n", strerror(errno));
			} else if (d.cni && cluster_cni_owns(d.cni, fd)) {
				cluster_cni_process(d.cni);
			} else {
				events_consume(&ev);
			}
		}
		if (d.build_at && mono_ms() >= d.build_at) {
			d.build_at = 0;
			cluster_apply(&d);
		}
		if (d.cni)
			cluster_cni_tick(d.cni, d.cur, tunnel_applied(d.tun), !d.tun);
		check_ready(&d);
		if (reload_at && mono_ms() >= reload_at) {
			reload_at = 0;
			if (load_config(o->config, &next)) {
				pr_warn("config %s is invalid: keeping the running config\n",
					o->config);
				metrics_reload(&d.mx, 0, 0);
				admin_set_reload_error(d.adm, load_error);
				continue;
			}
			if (apply(&d.l, next, o->node, &d.mx)) {
				config_free(next);
				next = NULL;
				metrics_reload(&d.mx, 0, 0);
				admin_set_reload_error(d.adm, load_error);
				continue;
			}
			admin_set_reload_error(d.adm, NULL);
			if (install(&d, next)) {
				pr_warn("out of memory: stopping\n");
				next = NULL;
				break;
			}
			next = NULL;
		}
	}
	pr_info("stopping; the data path stays attached under %s\n", o->bpffs);

out_events:
	admin_set_ready(d.adm, 0, "shutting down");
	admin_set_tunnel(d.adm, NULL);
	admin_set_source(d.adm, NULL);
	cluster_cni_close(d.cni);
	d.cni = NULL;
	tunnel_stop(d.tun);
	d.tun = NULL;
	events_consume(&ev);
	if (efd >= 0)
		close(efd);
	if (ifd >= 0)
		close(ifd);
	if (sfd >= 0)
		close(sfd);
	events_close(&ev);
out_loader:
	/* the endpoints read the maps: they let go of them first */
	admin_set_loader(d.adm, NULL);
	reconcile_release(&d.l);
	loader_close(&d.l);
out_log:
	admin_set_source(d.adm, NULL);
	admin_stop(d.adm);
	alog_fini(&al);
	if (alog != stdout)
		fclose(alog);
out_cfg:
	tunnel_stop(d.tun);	/* made but not started */
	ksource_free(d.ks);
	if (d.applied_efd >= 0)
		close(d.applied_efd);
	if (d.cref)
		cfgref_put(d.cref);
	else
		config_free(cfg);
	cfg_cache_free(config_cache);
	config_cache = NULL;
	metrics_fini(&d.mx);
	return stop ? 0 : 1;
}

/* Every tunnelled connection holds two descriptors in meshd (three with
 * the pod's): the usual soft limit of 1024 is far too low for a node. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		pr_warn("cannot raise the open file limit to %llu: %s\n",
			(unsigned long long)rl.rlim_max, strerror(errno));
}

/* malloc's choices for a long-lived daemon whose tunnel takes and gives
 * back stream buffers of up to HB_TCP_BUF all the time: those come from
 * the heap, not from an mmap() and munmap() each (glibc's first choice
 * above 128 KiB), and up to 1 MiB freed at the top of a heap stays for
 * the next one rather than costing a trim per stream. Idle memory is
 * returned by malloc_trim() when the last stream ends (hbone_tick). */
static void malloc_tune(void)
{
	mallopt(M_MMAP_THRESHOLD, 512 << 10);
	mallopt(M_TRIM_THRESHOLD, 1 << 20);
}

int main(int argc, char **argv)
{
	struct opts o = {};
	struct config *cfg = NULL;

	if (parse_args(argc, argv, &o))
		return 2;
	load_opts.trust_domain = o.trust_domain;
	log_init("meshd", o.verbose >= 2 ? LOG_DEBUG + 1 : o.verbose ? LOG_DEBUG : LOG_INFO);
	{
		char why[256];

		/* before any key is made or read */
		if (key_hygiene_init(why, sizeof(why)))
			pr_warn("key hygiene: %s\n", why);
	}

	if (o.check_config) {
		if (load_config(o.config, &cfg))
			return 1;
		printf("%s: valid: %zu workloads, %zu services, %zu AuthorizationPolicies, "
		       "%zu PeerAuthentications\n", o.config, cfg->nwls, cfg->nsvcs,
		       cfg->nauthz, cfg->npas);
		config_free(cfg);
		return 0;
	}
	if (o.cleanup) {
		int err = loader_cleanup(o.bpffs);

		if (err) {
			fprintf(stderr, "meshd: cleanup of %s incomplete: %s\n", o.bpffs,
				strerror(-err));
			return 1;
		}
		printf("meshd: detached and unpinned everything under %s\n", o.bpffs);
		return 0;
	}
	raise_fd_limit();
	malloc_tune();
	return run(&o);
}
