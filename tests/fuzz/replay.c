// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A fuzz target without libFuzzer: runs LLVMFuzzerTestOneInput once on
 * every file of the folders (or files) named on the command line, in name
 * order, so the seed corpora and every crash input found replay as
 * regression tests with the ordinary build (tests/run fuzz).
 *
 *   replay_NAME DIR|FILE...
 *
 * Prints "replayed N inputs" and exits 0; a failing input aborts (the
 * target's checks, or a sanitizer in the ASan build) after naming it on
 * stderr. Exits 2 when an argument cannot be read, 3 when nothing was
 * replayed: a target without inputs tests nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* optional in a target */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		size_t n;

		if (len == cap) {
			uint8_t *p = realloc(buf, cap ? 2 * cap : 4096);

			if (!p) {
				fprintf(stderr, "replay: %s: out of memory\n", path);
				free(buf);
				fclose(f);
				return -1;
			}
			buf = p;
			cap = cap ? 2 * cap : 4096;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (!n)
			break;
	}
	fclose(f);
	/* stderr first: a crash inside names the input that made it */
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
	/* an exact-size copy, so ASan sees a read past the input */
	{
		uint8_t *in = malloc(len ? len : 1);

		if (!in) {
			free(buf);
			return -1;
		}
		memcpy(in, buf, len);
		free(buf);
		LLVMFuzzerTestOneInput(in, len);
		free(in);
	}
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays PATH (a file, or the regular files of a folder); adds to *N. */
static int replay_path(const char *path, size_t *n)
{
	struct dirent *d;
	char **names = NULL;
	size_t nn = 0;
	struct stat st;
	DIR *dir;
	int err = 0;

	if (stat(path, &st)) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (replay_file(path))
			return -1;
		(*n)++;
		return 0;
	}
	if (!(dir = opendir(path))) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((d = readdir(dir))) {
		char **p;

		if (d->d_name[0] == '.')
			continue;
		if (!(p = realloc(names, (nn + 1) * sizeof(*names))))
			break;
		names = p;
		if (asprintf(&names[nn], "%s/%s", path, d->d_name) < 0)
			break;
		nn++;
	}
	closedir(dir);
	qsort(names, nn, sizeof(*names), name_cmp);
	for (size_t i = 0; i < nn; i++) {
		if (!err && !stat(names[i], &st) && S_ISREG(st.st_mode)) {
			if (replay_file(names[i]))
				err = -1;
			else
				(*n)++;
		}
		free(names[i]);
	}
	free(names);
	return err;
}

int main(int argc, char **argv)
{
	size_t n = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
		return 2;
	}
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		if (replay_path(argv[i], &n))
			return 2;
	printf("replayed %zu inputs\n", n);
	return n ? 0 : 3;
}
