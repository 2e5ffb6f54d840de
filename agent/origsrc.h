/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The routing inside a local pod's network namespace that lets meshd
 * connect to the pod's app from the client's address (origsrc.c).
 */
#ifndef SKM_ORIGSRC_H
#define SKM_ORIGSRC_H

#include <stddef.h>

struct origsrc {
	int ok;			/* all in place: upstream sockets may bind */
	int rule, route;	/* made (or found) by us: removed at teardown */
	int sysctl_set;		/* tcp_fwmark_accept changed by us ... */
	int fwmark_accept_was;	/* ... from this value */
};

/* Sets up the routing in NETNS_FD (the calling thread returns to
 * SELF_NETNS): 0, or -errno with WHY saying what failed. */
int origsrc_setup(int netns_fd, int self_netns, struct origsrc *st, char *why, size_t len);
/* Takes it away again and restores the sysctl. */
void origsrc_teardown(int netns_fd, int self_netns, struct origsrc *st);

#endif /* SKM_ORIGSRC_H */
