/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The libFuzzer entry points, declared for every fuzz target (the Makefile
 * passes this header with -include, so a target needs no #include of it):
 * LLVMFuzzerTestOneInput runs one input and returns 0; the optional
 * LLVMFuzzerInitialize runs once before the first. The same object links
 * with libFuzzer (make fuzz) and with tests/fuzz/replay.c (make test).
 */
#ifndef SKM_FUZZ_H
#define SKM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A file in memory for the loaders that take a path: a memfd named NAME,
 * its path (/proc/self/fd/N) into PATH. Returns the fd; aborts when it
 * cannot be made. */
static inline int fuzz_memfd(const char *name, char *path, size_t len)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0) {
		perror("memfd_create");
		abort();
	}
	snprintf(path, len, "/proc/self/fd/%d", fd);
	return fd;
}

/* The file FD now holds the SIZE bytes of DATA; aborts on failure. */
static inline void fuzz_memfd_put(int fd, const void *data, size_t size)
{
	if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
}

#endif /* SKM_FUZZ_H */
