// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The client's address on a tunnelled connection's last leg: the routing
 * meshd sets up inside a local pod's network namespace so that its
 * upstream socket, bound to the client's address (IP_TRANSPARENT), gets
 * the app's replies (see SKM_UPSTREAM_MARK in include/skmesh.h).
 *
 * ztunnel's in-pod mode gets the same from istio-cni's iptables rules
 * (a CONNMARK restored on the app's replies); here the kernel's
 * tcp_fwmark_accept does it: the app's accepted socket carries the mark
 * of meshd's SYN, and a policy rule sends what carries it to a table
 * where every address is local.
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <netlink/netlink.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>

#include "log.h"
#include "netns.h"
#include "origsrc.h"
#include "skmesh.h"

#define FWMARK_ACCEPT "/proc/sys/net/ipv4/tcp_fwmark_accept"

static int sysctl_read(const char *path)
{
	char buf[16] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? atoi(buf) : -EIO;
}

static int sysctl_write(const char *path, int v)
{
	char buf[16];
	int fd = open(path, O_WRONLY | O_CLOEXEC), len, err = 0;

	if (fd < 0)
		return -errno;
	len = snprintf(buf, sizeof(buf), "%d\n", v);
	if (write(fd, buf, len) != len)
		err = -EIO;
	close(fd);
	return err;
}

static struct rtnl_rule *rule_new(void)
{
	struct rtnl_rule *r = rtnl_rule_alloc();

	if (!r)
		return NULL;
	rtnl_rule_set_family(r, AF_INET);
	rtnl_rule_set_prio(r, SKM_UPSTREAM_RULE_PRIO);
	rtnl_rule_set_mark(r, SKM_UPSTREAM_MARK);
	rtnl_rule_set_mask(r, 0xffffffff);
	rtnl_rule_set_table(r, SKM_UPSTREAM_TABLE);
	rtnl_rule_set_action(r, FR_ACT_TO_TBL);
	return r;
}

/* "local 0.0.0.0/0 dev lo table SKM_UPSTREAM_TABLE" */
static struct rtnl_route *route_new(void)
{
	struct rtnl_route *r = rtnl_route_alloc();
	struct rtnl_nexthop *nh = rtnl_route_nh_alloc();
	uint32_t any = 0;
	struct nl_addr *dst = nl_addr_build(AF_INET, &any, sizeof(any));
	int lo = if_nametoindex("lo");

	if (!r || !nh || !dst || !lo) {
		rtnl_route_put(r);
		rtnl_route_nh_free(nh);
		nl_addr_put(dst);
		return NULL;
	}
	nl_addr_set_prefixlen(dst, 0);
	rtnl_route_set_family(r, AF_INET);
	rtnl_route_set_table(r, SKM_UPSTREAM_TABLE);
	rtnl_route_set_type(r, RTN_LOCAL);
	rtnl_route_set_scope(r, RT_SCOPE_HOST);
	rtnl_route_set_protocol(r, RTPROT_STATIC);
	rtnl_route_set_dst(r, dst);
	nl_addr_put(dst);
	rtnl_route_nh_set_ifindex(nh, lo);
	rtnl_route_add_nexthop(r, nh);
	return r;
}

/* The routing part, in the namespace the calling thread is in. */
static int setup_here(struct origsrc *st, char *why, size_t len)
{
	struct nl_sock *sk = nl_socket_alloc();
	struct rtnl_rule *rule = NULL;
	struct rtnl_route *route = NULL;
	int err, was;

	if (!sk || nl_connect(sk, NETLINK_ROUTE)) {
		snprintf(why, len, "netlink socket");
		err = -ENOMEM;
		goto out;
	}
	rule = rule_new();
	route = route_new();
	if (!rule || !route) {
		snprintf(why, len, "out of memory");
		err = -ENOMEM;
		goto out;
	}
	err = rtnl_route_add(sk, route, NLM_F_CREATE | NLM_F_REPLACE);
	if (err < 0) {
		snprintf(why, len, "ip route add local 0.0.0.0/0 dev lo table %u: %s",
			 SKM_UPSTREAM_TABLE, nl_geterror(err));
		err = -EIO;
		goto out;
	}
	st->route = 1;
	err = rtnl_rule_add(sk, rule, NLM_F_CREATE | NLM_F_EXCL);
	if (err < 0 && err != -NLE_EXIST) {
		snprintf(why, len, "ip rule add fwmark %#x lookup %u: %s", SKM_UPSTREAM_MARK,
			 SKM_UPSTREAM_TABLE, nl_geterror(err));
		err = -EIO;
		goto out;
	}
	st->rule = 1;
	was = sysctl_read(FWMARK_ACCEPT);
	err = was < 0 ? was : was != 1 ? sysctl_write(FWMARK_ACCEPT, 1) : 0;
	if (err) {
		snprintf(why, len, "cannot set net.ipv4.tcp_fwmark_accept: %s", strerror(-err));
		goto out;
	}
	st->sysctl_set = was != 1;
	st->fwmark_accept_was = was;
	st->ok = 1;
	err = 0;
out:
	rtnl_route_put(route);
	rtnl_rule_put(rule);
	nl_socket_free(sk);
	return err;
}

static void teardown_here(struct origsrc *st)
{
	struct nl_sock *sk = nl_socket_alloc();

	if (st->sysctl_set)
		sysctl_write(FWMARK_ACCEPT, st->fwmark_accept_was);
	if (sk && !nl_connect(sk, NETLINK_ROUTE)) {
		struct rtnl_rule *rule = st->rule ? rule_new() : NULL;
		struct rtnl_route *route = st->route ? route_new() : NULL;

		if (rule)
			rtnl_rule_delete(sk, rule, 0);
		if (route)
			rtnl_route_delete(sk, route, 0);
		rtnl_rule_put(rule);
		rtnl_route_put(route);
	}
	nl_socket_free(sk);
}

struct setup_arg {
	struct origsrc *st;
	char *why;
	size_t len;
};

static int setup_cb(void *arg)
{
	struct setup_arg *a = arg;

	return setup_here(a->st, a->why, a->len);
}

int origsrc_setup(int netns_fd, int self_netns, struct origsrc *st, char *why, size_t len)
{
	struct setup_arg a = { st, why, len };
	int err;

	memset(st, 0, sizeof(*st));
	if (len)
		why[0] = '\0';
	err = netns_run(netns_fd, self_netns, setup_cb, &a);
	if (err && !why[0])
		snprintf(why, len, "cannot enter the pod's network namespace: %s",
			 strerror(-err));
	return err;
}

static int teardown_cb(void *arg)
{
	teardown_here(arg);
	return 0;
}

void origsrc_teardown(int netns_fd, int self_netns, struct origsrc *st)
{
	if (netns_fd >= 0 && (st->rule || st->route || st->sysctl_set))
		netns_run(netns_fd, self_netns, teardown_cb, st);
	memset(st, 0, sizeof(*st));
}
