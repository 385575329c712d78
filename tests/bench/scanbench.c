// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * scanbench: the cost of taking a layer's extent map (extent_scan_with()),
 * FIEMAP against SEEK_DATA/SEEK_HOLE, on one file, for scan-bench.sh. Each
 * method is timed REPS times in turn (interleaved, so that drift on a shared
 * machine hits both alike); one result line per method on stdout:
 *
 *   fiemap median_ms 12.345 min_ms 12.0 max_ms 13.1 extents 41234 data_mib 163.2
 *
 * and both maps must be equal (exit 1 otherwise), so that the figures compare
 * the same answer. FIEMAP is skipped where the filesystem has none (tmpfs).
 *
 *   scanbench [-r REPS] FILE
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "extent.h"

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int same_map(const struct extent_map *a, const struct extent_map *b)
{
	return a->n == b->n && a->data_bytes == b->data_bytes &&
	       memcmp(a->ext, b->ext, a->n * sizeof(a->ext[0])) == 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		enum extent_method how;
	} methods[] = { { "fiemap", EXTENT_FIEMAP }, { "seek", EXTENT_SEEK } };
	struct extent_map *first[2] = { NULL, NULL };
	double *t[2];
	int reps = 7, opt, fd, ret = 0;
	bool have[2] = { true, true };
	struct stat st;

	while ((opt = getopt(argc, argv, "r:")) != -1) {
		if (opt != 'r' || (reps = atoi(optarg)) < 1) {
			fprintf(stderr, "usage: scanbench [-r REPS] FILE\n");
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: scanbench [-r REPS] FILE\n");
		return 2;
	}
	fd = open(argv[optind], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "scanbench: %s: %s\n", argv[optind], strerror(errno));
		return 1;
	}
	t[0] = calloc((size_t)reps, sizeof(double));
	t[1] = calloc((size_t)reps, sizeof(double));
	if (!t[0] || !t[1])
		return 1;
	for (int r = 0; r < reps; r++) {
		for (int i = 0; i < 2; i++) {
			struct extent_map *m = NULL;
			double t0;
			int e;

			if (!have[i])
				continue;
			t0 = now_ms();
			e = extent_scan_with(fd, (uint64_t)st.st_size, methods[i].how, &m);
			t[i][r] = now_ms() - t0;
			if (e == -EOPNOTSUPP && i == 0) {
				have[i] = false;
				continue;
			}
			if (e) {
				fprintf(stderr, "scanbench: %s scan: %s\n",
					methods[i].name, strerror(-e));
				return 1;
			}
			if (!first[i])
				first[i] = m;
			else
				free(m);
		}
	}
	if (have[0] && !same_map(first[0], first[1])) {
		fprintf(stderr, "scanbench: FIEMAP and SEEK_DATA maps differ "
			"(%zu and %zu extents)\n", first[0]->n, first[1]->n);
		ret = 1;
	}
	for (int i = 0; i < 2; i++) {
		if (!have[i]) {
			printf("%s unsupported\n", methods[i].name);
			continue;
		}
		qsort(t[i], (size_t)reps, sizeof(double), cmp_double);
		printf("%s median_ms %.3f min_ms %.3f max_ms %.3f extents %zu data_mib %.1f\n",
		       methods[i].name, reps % 2 ? t[i][reps / 2] :
		       (t[i][reps / 2 - 1] + t[i][reps / 2]) / 2, t[i][0], t[i][reps - 1],
		       first[i]->n, first[i]->data_bytes / 1048576.0);
		free(first[i]);
	}
	free(t[0]);
	free(t[1]);
	close(fd);
	return ret;
}
