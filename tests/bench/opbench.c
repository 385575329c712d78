// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * opbench: the per-operation costs that a many-host deployment multiplies
 * (doc/distributed.md, "How it scales"), each timed over a loop of COUNT
 * calls of the very code snapfs runs, and printed as one line
 *   OP  N  COUNT  usec_per_op  ops_per_s
 * Operations:
 *   lookup PATH       stat(2) of PATH (through a snapfs mount mounted with
 *                     revalidate=0: every stat is a FUSE lookup, and in an
 *                     unwatched directory a revalidation by the daemon)
 *   attrs DIR         statx(AT_STATX_FORCE_SYNC) of DIR: the check an
 *                     unwatched directory gets on every revalidation
 *   scan DIR          store_dir_scan() of DIR: the re-list after a change
 *   chainlock DIR     chainlock_try() + chainlock_release() of one NAME in
 *                     DIR: one compaction lock round trip
 *   rollbacklock DIR  dirlock_acquire() + dirlock_release(): one rollback
 *                     lock round trip (record lock and flock)
 * Usage: opbench OP PATH COUNT [N]   (N: only printed, e.g. the directory's
 * number of names).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dirlock.h"
#include "store.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One operation on path (dirfd: an O_RDONLY fd of it, for directories).
 * Returns 0 or -errno. */
static int one(const char *op, const char *path, int dirfd)
{
	if (strcmp(op, "lookup") == 0) {
		struct stat st;

		return stat(path, &st) < 0 ? -errno : 0;
	}
	if (strcmp(op, "attrs") == 0) {
		struct statx stx;

		return statx(dirfd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC,
			     STATX_MTIME | STATX_CTIME, &stx) < 0 ? -errno : 0;
	}
	if (strcmp(op, "scan") == 0) {
		struct store_dir *d;
		int ret = store_dir_scan(dirfd, &d);

		if (!ret)
			store_dir_free(d);
		return ret;
	}
	if (strcmp(op, "chainlock") == 0) {
		struct chainlock cl;
		int ret = chainlock_try(dirfd, "memory.bin", &cl);

		chainlock_release(&cl);
		return ret;
	}
	if (strcmp(op, "rollbacklock") == 0) {
		struct dirlock lk;
		int ret = dirlock_acquire(dirfd, 0, NULL, &lk);

		dirlock_release(&lk);
		return ret;
	}
	return -EINVAL;
}

int main(int argc, char **argv)
{
	const char *op, *path;
	long count, n;
	double t0, dt;
	int dirfd = -1, ret;

	if (argc < 4) {
		fprintf(stderr, "usage: opbench lookup|attrs|scan|chainlock|rollbacklock "
			"PATH COUNT [N]\n");
		return 2;
	}
	op = argv[1];
	path = argv[2];
	count = atol(argv[3]);
	n = argc > 4 ? atol(argv[4]) : 0;
	if (count <= 0)
		return 2;
	if (strcmp(op, "lookup") != 0) {
		dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0) {
			fprintf(stderr, "opbench: %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	ret = one(op, path, dirfd);	/* warm up, and check it works */
	if (ret) {
		fprintf(stderr, "opbench: %s %s: %s\n", op, path, strerror(-ret));
		return 1;
	}
	t0 = now_s();
	for (long i = 0; i < count; i++) {
		ret = one(op, path, dirfd);
		if (ret) {
			fprintf(stderr, "opbench: %s %s: %s\n", op, path, strerror(-ret));
			return 1;
		}
	}
	dt = now_s() - t0;
	printf("%-12s %6ld %7ld %10.2f %12.0f\n", op, n, count, dt * 1e6 / (double)count,
	       (double)count / dt);
	if (dirfd >= 0)
		close(dirfd);
	return 0;
}
