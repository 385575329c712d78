/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The compactor's per-filesystem copier: reflink or sparse copy of the
 * base, FICLONERANGE / copy_file_range / pread+pwrite for diff ranges,
 * with the rate limit and the stop flag (copy.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "copy.h"
#include "log.h"

#define XFS_MAGIC 0x58465342UL
#define BTRFS_MAGIC 0x9123683eUL
#define COPY_CHUNK (1u << 20)

const char *compact_method_name(enum compact_method m)
{
	switch (m) {
	case COMPACT_PREAD:
		return "pread/pwrite";
	case COMPACT_CFR:
		return "copy_file_range";
	case COMPACT_CLONE_RANGE:
		return "FICLONERANGE";
	}
	return "?";
}

int copier_init(struct copier *c, uint64_t rate, const int *stop)
{
	memset(c, 0, sizeof(*c));
	c->rate = rate;
	c->stop = stop;
	c->blksize = 4096;
	clock_gettime(CLOCK_MONOTONIC, &c->start);
	c->buf = malloc(COPY_CHUNK);
	return c->buf ? 0 : -ENOMEM;
}

void copier_release(struct copier *c)
{
	free(c->buf);
	c->buf = NULL;
}

double copier_elapsed(const struct copier *c)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - c->start.tv_sec) +
	       (double)(now.tv_nsec - c->start.tv_nsec) / 1e9;
}

bool copier_stopped(const struct copier *c)
{
	return c->stop && __atomic_load_n(c->stop, __ATOMIC_RELAXED);
}

/* Longest single sleep of the rate limit: a stop (unmount) waits at most
 * this long for the compactor to notice it. */
#define THROTTLE_SLICE 0.02

/*
 * Sleeps as long as needed to keep the average under the rate limit, in
 * slices, checking the stop flag between them: one cloned 8 GiB range at
 * 256 MiB/s owes 32 s of sleep, which an unmount must not wait out.
 */
static void throttle(struct copier *c)
{
	double due;

	if (c->progress)
		c->progress(c->progress_ctx, c->bytes);
	if (!c->rate)
		return;
	due = (double)c->bytes / (double)c->rate;
	for (;;) {
		double d = due - copier_elapsed(c);
		struct timespec ts;

		if (d <= 0 || copier_stopped(c))
			return;
		if (d > THROTTLE_SLICE)
			d = THROTTLE_SLICE;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)(d * 1e9);
		nanosleep(&ts, NULL);
	}
}

/* ---- the three methods, each falling back to the next ---- */

static int copy_pread(struct copier *c, int in, int out, uint64_t off, uint64_t len)
{
	while (len) {
		if (copier_stopped(c))
			return -ECANCELED;
		size_t n = len < COPY_CHUNK ? (size_t)len : COPY_CHUNK;
		ssize_t r = pread(in, c->buf, n, (off_t)off);

		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;	/* the layer shrank under us */
		for (ssize_t done = 0; done < r;) {
			ssize_t w = pwrite(out, c->buf + done, (size_t)(r - done),
					   (off_t)(off + (uint64_t)done));

			if (w < 0)
				return -errno;
			done += w;
		}
		off += (uint64_t)r;
		len -= (uint64_t)r;
		c->bytes += (uint64_t)r;
		throttle(c);
	}
	return 0;
}

static int copy_cfr(struct copier *c, int in, int out, uint64_t off, uint64_t len)
{
#ifdef HAVE_COPY_FILE_RANGE
	while (len) {
		if (copier_stopped(c))
			return -ECANCELED;
		size_t n = len < COPY_CHUNK ? (size_t)len : COPY_CHUNK;
		loff_t ioff = (loff_t)off, ooff = (loff_t)off;
		ssize_t r = copy_file_range(in, &ioff, out, &ooff, n, 0);

		if (r < 0) {
			if (errno == EXDEV || errno == EOPNOTSUPP || errno == ENOSYS ||
			    errno == EINVAL) {
				c->method = COMPACT_PREAD;	/* for the rest */
				return copy_pread(c, in, out, off, len);
			}
			return -errno;
		}
		if (r == 0)
			return -EIO;
		off += (uint64_t)r;
		len -= (uint64_t)r;
		c->bytes += (uint64_t)r;
		throttle(c);
	}
	return 0;
#else
	c->method = COMPACT_PREAD;	/* not in this build */
	return copy_pread(c, in, out, off, len);
#endif
}

/* FICLONERANGE of [off, end) of in onto out; -errno as the ioctl says
 * (-EOPNOTSUPP where this build has no FICLONERANGE). */
static int clone_range(int in, int out, uint64_t off, uint64_t end)
{
#ifdef HAVE_FICLONE
	struct file_clone_range fcr = {
		.src_fd = in,
		.src_offset = off,
		.src_length = end - off,
		.dest_offset = off,
	};

	return ioctl(out, FICLONERANGE, &fcr) < 0 ? -errno : 0;
#else
	(void)in;
	(void)out;
	(void)off;
	(void)end;
	return -EOPNOTSUPP;
#endif
}

static int copy_clone(struct copier *c, int in, int out, uint64_t off, uint64_t len,
		      uint64_t size)
{
	uint64_t b = c->blksize, head, tail, end = off + len;
	int r;

	/* The aligned middle is cloned; an unaligned head or tail (and a
	 * tail that is the file's end, which FICLONERANGE allows) is copied. */
	head = (off + b - 1) / b * b;
	tail = end == size ? end : end / b * b;
	if (head >= tail)
		return copy_cfr(c, in, out, off, len);
	if (head > off && (r = copy_cfr(c, in, out, off, head - off)))
		return r;
	r = clone_range(in, out, head, tail);
	if (r) {
		if (r != -EOPNOTSUPP && r != -EINVAL && r != -EXDEV)
			return r;
		c->method = COMPACT_CFR;	/* for the rest */
		return copy_cfr(c, in, out, head, end - head);
	}
	c->bytes += tail - head;
	throttle(c);
	if (end > tail)
		return copy_cfr(c, in, out, tail, end - tail);
	return 0;
}

int copier_range(struct copier *c, int in, int out, uint64_t off, uint64_t len,
		 uint64_t size)
{
	c->ranges++;
	switch (c->method) {
	case COMPACT_CLONE_RANGE:
		return copy_clone(c, in, out, off, len, size);
	case COMPACT_CFR:
		return copy_cfr(c, in, out, off, len);
	case COMPACT_PREAD:
		break;
	}
	return copy_pread(c, in, out, off, len);
}

/* ---- choosing ---- */

/* m, or the next method down if this build lacks it. */
static enum compact_method built(enum compact_method m)
{
#ifndef HAVE_FICLONE
	if (m == COMPACT_CLONE_RANGE)
		m = COMPACT_CFR;
#endif
#ifndef HAVE_COPY_FILE_RANGE
	if (m == COMPACT_CFR)
		m = COMPACT_PREAD;
#endif
	return m;
}

/* The fastest way found to apply diff ranges on the filesystem of fd. */
static enum compact_method method_for(int fd)
{
	const char *force = getenv("SNAPFS_COMPACT_METHOD");
	struct statfs sf;

	if (force) {
		if (strcmp(force, "pread") == 0)
			return COMPACT_PREAD;
		if (strcmp(force, "cfr") == 0)
			return COMPACT_CFR;
		if (strcmp(force, "clone") == 0)
			return COMPACT_CLONE_RANGE;
	}
	if (fstatfs(fd, &sf) < 0)
		return COMPACT_PREAD;
	switch ((unsigned long)sf.f_type) {
	case BTRFS_MAGIC:
		return COMPACT_CLONE_RANGE;
	case XFS_MAGIC:
		/* Measured (doc/compaction.md): remapping beats copying on
		 * XFS too once ranges are many; pread/pwrite was 1.0x eager. */
		return COMPACT_CLONE_RANGE;
	default:
		return COMPACT_CFR;
	}
}

/*
 * XFS preallocates copy-on-write extents around each write into a shared
 * file (the COW extent size hint, 32 blocks by default); pages cached over
 * them later read back as data, so the new base would show data, zeros,
 * where its layers had holes. A hint of one block keeps writes exact.
 * Filesystems without the hint answer ENOTTY or EOPNOTSUPP: nothing to do.
 */
static void limit_cow_prealloc(int fd, blksize_t blksize)
{
	struct fsxattr fsx;

	if (blksize <= 0 || ioctl(fd, FS_IOC_FSGETXATTR, &fsx) < 0)
		return;
	fsx.fsx_xflags |= FS_XFLAG_COWEXTSIZE;
	fsx.fsx_cowextsize = (uint32_t)blksize;
	ioctl(fd, FS_IOC_FSSETXATTR, &fsx);
}

void copier_prepare(struct copier *c, int out, blksize_t blksize)
{
	limit_cow_prealloc(out, blksize);
	c->method = built(method_for(out));
	c->blksize = blksize > 0 ? (unsigned)blksize : 4096;
}

/* ---- the base ---- */

/* FICLONE of all of in onto out: 0 or -errno (-EOPNOTSUPP where this
 * build has no FICLONE). */
static int reflink(int in, int out)
{
#ifdef HAVE_FICLONE
	return ioctl(out, FICLONE, in) < 0 ? -errno : 0;
#else
	(void)in;
	(void)out;
	return -EOPNOTSUPP;
#endif
}

int copier_base(struct copier *c, int in, int out, const struct extent_map *map,
		uint64_t size)
{
	int ret = reflink(in, out);

	if (ret == 0) {
		c->reflinked = true;
		return 0;
	}
	if (ret != -EOPNOTSUPP && ret != -ENOTTY && ret != -EXDEV && ret != -EINVAL &&
	    ret != -ENOSYS)
		return ret;
	/* Only the base's data ranges: copying over its holes would fill
	 * them in on ext4 and tmpfs. Without FICLONE there is no
	 * FICLONERANGE either: copy_file_range, which falls back to
	 * pread/pwrite (for the diffs too) where it cannot. */
	if (ftruncate(out, (off_t)size) < 0)
		return -errno;
	if (c->method == COMPACT_CLONE_RANGE)
		c->method = built(COMPACT_CFR);
	for (size_t i = 0; i < map->n; i++) {
		ret = copier_range(c, in, out, map->ext[i].off, map->ext[i].len, size);
		if (ret)
			return ret;
	}
	return 0;
}

void copier_log_once(const struct copier *c, dev_t dev)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static dev_t seen[64];
	static size_t nseen;
	bool first = true;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nseen; i++)
		if (seen[i] == dev)
			first = false;
	if (first && nseen < 64)
		seen[nseen++] = dev;
	pthread_mutex_unlock(&lock);
	if (first)
		log_info("compaction on device %u:%u: %s; diffs applied with %s",
			 major(dev), minor(dev),
			 c->reflinked ? "bases are reflinked (FICLONE), their data is shared"
				      : "no reflinks here, bases are copied sparsely (data ranges only)",
			 compact_method_name(c->method));
}
