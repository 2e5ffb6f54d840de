// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "netns.h"

int netns_run(int netns_fd, int self_fd, int (*fn)(void *arg), void *arg)
{
	int own = -1, r;

	if (netns_fd < 0)
		return fn(arg);
	if (self_fd < 0) {
		own = self_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
		if (self_fd < 0)
			return -errno;
	}
	if (setns(netns_fd, CLONE_NEWNET)) {
		r = -errno;
	} else {
		r = fn(arg);
		if (setns(self_fd, CLONE_NEWNET)) {
			pr_warn("cannot return to meshd's network namespace: %s\n",
				strerror(errno));
			abort();
		}
	}
	if (own >= 0)
		close(own);
	return r;
}

int netns_run_at(const char *path, int (*fn)(void *arg), void *arg)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0)
		return -errno;
	r = netns_run(fd, -1, fn, arg);
	close(fd);
	return r;
}
