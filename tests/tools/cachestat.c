/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cachestat [-w] FILE: prints how many pages of FILE's own page cache are
 * cached, as cachestat(2) (Linux 6.5) counts them on an fd of FILE: for a
 * file of a FUSE mount that is the FUSE inode's cache, whatever a
 * passthrough open would map. -w opens FILE O_RDWR, which a snapfs view
 * under -o open_rw=private serves on the FUSE path without dropping the
 * inode's cache (an O_RDONLY open of a version served by passthrough drops
 * it). Exits 0, 2 on a usage or setup error, 77 where the kernel lacks
 * cachestat.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_cachestat
#define __NR_cachestat 451	/* the same on every architecture */
#endif

struct cs_range {
	uint64_t off, len;	/* len 0: to the end of the file */
};

struct cs {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

int main(int argc, char **argv)
{
	struct cs_range r = { 0, 0 };
	struct cs st;
	int rw = argc == 3 && strcmp(argv[1], "-w") == 0;
	const char *path = argv[argc - 1];
	int fd;

	if (argc != 2 + rw) {
		fprintf(stderr, "usage: cachestat [-w] FILE\n");
		return 2;
	}
	fd = open(path, rw ? O_RDWR : O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "cachestat: %s: %s\n", path, strerror(errno));
		return 2;
	}
	if (syscall(__NR_cachestat, fd, &r, &st, 0) != 0) {
		int e = errno;

		fprintf(stderr, "cachestat: %s: %s\n", path, strerror(e));
		close(fd);
		return e == ENOSYS ? 77 : 2;
	}
	printf("%llu\n", (unsigned long long)st.nr_cache);
	close(fd);
	return 0;
}
