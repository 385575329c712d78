/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Helpers shared by the cmocka unit tests: a mkdtemp scratch directory as a
 * test fixture, real sparse files made with ftruncate and pwrite, a
 * deterministic PRNG (splitmix64) so every failure can be replayed, and
 * tmpfs mounts: huge=always for the coarse-hole cases, plain for tmpfs's own
 * ways (no FIEMAP, preallocated pages).
 */
#ifndef SNAPFS_UNIT_H
#define SNAPFS_UNIT_H

#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNIT_PAGE 4096u

/* ---- deterministic PRNG ---- */

/* splitmix64: one 64-bit state, good enough to drive test cases. */
static inline uint64_t unit_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform enough in [0, n); n > 0. */
static inline uint64_t unit_below(uint64_t *s, uint64_t n)
{
	return unit_rand(s) % n;
}

/* The content byte at off of a file filled with seed: what unit_fill()
 * writes, so a test can recompute the expected bytes independently. */
static inline unsigned char unit_byte(uint64_t seed, uint64_t off)
{
	uint64_t s = seed ^ ((off >> 3) * 0xd6e8feb86659fd93ULL);

	return (unsigned char)(unit_rand(&s) >> (8 * (off & 7)));
}

static inline void unit_fill(unsigned char *buf, uint64_t seed, uint64_t off,
			     size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = unit_byte(seed, off + i);
}

/* ---- scratch directory ---- */

struct unit_dir {
	char path[PATH_MAX];
	int fd;			/* O_DIRECTORY on path */
};

static inline int unit_rm_one(const char *path, const struct stat *st,
			      int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) < 0)
		fprintf(stderr, "unit: cannot remove %s: %s\n", path,
			strerror(errno));
	return 0;
}

/* Removes a tree without following symlinks or crossing mount points. */
static inline void unit_rmtree(const char *path)
{
	nftw(path, unit_rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Makes $TMPDIR/snapfs-unit.XXXXXX (TMPDIR defaults to /tmp). */
static inline struct unit_dir *unit_dir_new(void)
{
	struct unit_dir *d = calloc(1, sizeof(*d));
	const char *tmp = getenv("TMPDIR");

	if (!d)
		return NULL;
	if (!tmp || !*tmp)
		tmp = "/tmp";
	snprintf(d->path, sizeof(d->path), "%s/snapfs-unit.XXXXXX", tmp);
	if (!mkdtemp(d->path)) {
		fprintf(stderr, "unit: mkdtemp %s: %s\n", d->path, strerror(errno));
		free(d);
		return NULL;
	}
	d->fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->fd < 0) {
		rmdir(d->path);
		free(d);
		return NULL;
	}
	return d;
}

static inline void unit_dir_free(struct unit_dir *d)
{
	if (!d)
		return;
	close(d->fd);
	unit_rmtree(d->path);
	free(d);
}

/* cmocka fixtures: *state is a struct unit_dir. */
static inline int unit_dir_setup(void **state)
{
	*state = unit_dir_new();
	return *state ? 0 : -1;
}

static inline int unit_dir_teardown(void **state)
{
	unit_dir_free(*state);
	*state = NULL;
	return 0;
}

/* ---- sparse files ---- */

struct unit_range {
	uint64_t off;
	uint64_t len;
};

static inline void unit_pwrite_all(int fd, const void *buf, size_t len,
				   uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		assert_true(n > 0);
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
}

/*
 * Creates (or truncates) name in dirfd, ftruncates it to size, and writes
 * each range with unit_fill(seed) bytes (seed 0 writes zeros: a written
 * page of zeros is still data). If img is not NULL it receives the same
 * bytes at the same offsets. Returns the fd, open O_RDWR; fails the test
 * on any error.
 */
static inline int unit_sparse_file(int dirfd, const char *name, uint64_t size,
				   const struct unit_range *r, size_t n,
				   uint64_t seed, unsigned char *img)
{
	int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	for (size_t i = 0; i < n; i++) {
		unsigned char *buf = malloc(r[i].len ? r[i].len : 1);

		assert_non_null(buf);
		if (seed)
			unit_fill(buf, seed, r[i].off, r[i].len);
		else
			memset(buf, 0, r[i].len);
		unit_pwrite_all(fd, buf, r[i].len, r[i].off);
		if (img)
			memcpy(img + r[i].off, buf, r[i].len);
		free(buf);
	}
	return fd;
}

/* Same, closing the file at once. */
static inline void unit_sparse_file_c(int dirfd, const char *name, uint64_t size,
				      const struct unit_range *r, size_t n,
				      uint64_t seed, unsigned char *img)
{
	close(unit_sparse_file(dirfd, name, size, r, n, seed, img));
}

/*
 * How the filesystem of dirfd reports one page written 4 KiB past the 8 MiB
 * mark of a 16 MiB file: the length of the data range SEEK_DATA/SEEK_HOLE
 * find around it (UNIT_PAGE where holes are exact, 2 MiB on a huge=always
 * tmpfs), or 0 if the fs reports no holes at all (SEEK_DATA answers 0).
 * An independent check, so tests of extent_probe_granularity() do not rely
 * on the code under test.
 */
static inline uint64_t unit_hole_granularity(int dirfd)
{
	static const struct unit_range r = { (8u << 20) + UNIT_PAGE, UNIT_PAGE };
	int fd = unit_sparse_file(dirfd, ".holeprobe", 16u << 20, &r, 1, 1, NULL);
	off_t d = lseek(fd, 0, SEEK_DATA);
	off_t h = d > 0 ? lseek(fd, d, SEEK_HOLE) : -1;

	close(fd);
	unlinkat(dirfd, ".holeprobe", 0);
	if (d <= 0 || h <= d)
		return 0;
	return (uint64_t)(h - d);
}

/* In a test: skip unless holes in ud are exact to the page. */
#define UNIT_REQUIRE_PAGE_HOLES(ud) do {				\
	uint64_t g_ = unit_hole_granularity((ud)->fd);			\
	if (g_ != UNIT_PAGE) {						\
		print_message("skip: %s reports holes of %llu bytes, "	\
			      "not %u\n", (ud)->path,			\
			      (unsigned long long)g_, UNIT_PAGE);	\
		skip();							\
	}								\
} while (0)

/* ---- tmpfs mounts: huge=always for holes coarser than a page, and a
 * plain one for tmpfs's own behaviour (no FIEMAP, preallocated pages) ---- */

/* Mounts a small tmpfs with huge=HUGE ("always", "never") on path; 0 or
 * -errno. */
static inline int unit_mount_tmpfs(const char *path, const char *huge)
{
	char opts[64];

	snprintf(opts, sizeof(opts), "huge=%s,size=64m,mode=0700", huge);
	if (mount("snapfs-unit", path, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
		return -errno;
	return 0;
}

/* Mounts a small tmpfs with huge=always on path; 0 or -errno. */
static inline int unit_mount_huge_tmpfs(const char *path)
{
	return unit_mount_tmpfs(path, "always");
}

static inline void unit_umount(const char *path)
{
	if (umount2(path, 0) < 0 && umount2(path, MNT_DETACH) < 0)
		fprintf(stderr, "unit: cannot unmount %s: %s\n", path,
			strerror(errno));
}

/* Fixture: a scratch dir with a tmpfs on its "tmpfs" subdir, unmounted by
 * the teardown (unit_tmpfs_teardown) even when the test fails. */
struct unit_tmpfs {
	struct unit_dir *ud;
	char mnt[PATH_MAX + 8];
	int mount_err;		/* 0 if mounted, else -errno */
	int dfd;		/* the tmpfs root, or -1 */
};

static inline int unit_tmpfs_setup_huge(void **state, const char *huge)
{
	struct unit_tmpfs *h = calloc(1, sizeof(*h));

	if (!h)
		return -1;
	h->dfd = -1;
	h->ud = unit_dir_new();
	if (!h->ud) {
		free(h);
		return -1;
	}
	snprintf(h->mnt, sizeof(h->mnt), "%s/tmpfs", h->ud->path);
	if (mkdir(h->mnt, 0700) < 0) {
		unit_dir_free(h->ud);
		free(h);
		return -1;
	}
	h->mount_err = unit_mount_tmpfs(h->mnt, huge);
	if (!h->mount_err)
		h->dfd = open(h->mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*state = h;
	return 0;
}

/* A tmpfs with huge=always (coarse holes, see UNIT_REQUIRE_HUGE). */
static inline int unit_huge_setup(void **state)
{
	return unit_tmpfs_setup_huge(state, "always");
}

/* A tmpfs without huge pages (see UNIT_REQUIRE_TMPFS). */
static inline int unit_tmpfs_setup(void **state)
{
	return unit_tmpfs_setup_huge(state, "never");
}

static inline int unit_tmpfs_teardown(void **state)
{
	struct unit_tmpfs *h = *state;

	if (h->dfd >= 0)
		close(h->dfd);
	if (!h->mount_err)
		unit_umount(h->mnt);
	unit_dir_free(h->ud);
	free(h);
	*state = NULL;
	return 0;
}

/* In a test: skip unless the plain tmpfs is mounted (not root, say). */
#define UNIT_REQUIRE_TMPFS(h) do {					\
	if ((h)->mount_err) {						\
		print_message("skip: cannot mount a tmpfs: %s\n",	\
			      strerror(-(h)->mount_err));		\
		skip();							\
	}								\
	assert_true((h)->dfd >= 0);					\
} while (0)

/* In a test: skip unless the tmpfs is mounted and really gives huge pages
 * (THP may be compiled out, or no huge page free); returns the independent
 * granularity seen. */
#define UNIT_REQUIRE_HUGE(h) ({						\
	uint64_t g_ = 0;						\
	if ((h)->mount_err) {						\
		print_message("skip: cannot mount tmpfs -o huge=always: " \
			      "%s\n", strerror(-(h)->mount_err));	\
		skip();							\
	}								\
	assert_true((h)->dfd >= 0);					\
	g_ = unit_hole_granularity((h)->dfd);				\
	if (g_ <= UNIT_PAGE) {						\
		print_message("skip: the huge=always tmpfs reports holes " \
			      "of %llu bytes (no huge page given)\n",	\
			      (unsigned long long)g_);			\
		skip();							\
	}								\
	g_;								\
})

#endif
