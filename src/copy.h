/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The compactor's copier: how data gets into a new base on each filesystem
 * (doc/design.md §10.2 steps 2 and 3). The base is reflinked (FICLONE)
 * where the filesystem can, else its data ranges are copied; diff ranges
 * are cloned (FICLONERANGE), copied in the kernel (copy_file_range) or
 * read and written (pread/pwrite), the method chosen per filesystem by
 * measurement (doc/compaction.md), each falling back to the next where the
 * kernel cannot. Every copy honours a rate limit and a stop flag. Kernel
 * interfaces that configure did not find (HAVE_FICLONE,
 * HAVE_COPY_FILE_RANGE) are never used: their methods fall back at once.
 */
#ifndef SNAPFS_COPY_H
#define SNAPFS_COPY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "extent.h"

/* How data is copied into the new base, chosen per filesystem. */
enum compact_method {
	COMPACT_PREAD,		/* pread/pwrite */
	COMPACT_CFR,		/* copy_file_range */
	COMPACT_CLONE_RANGE,	/* FICLONERANGE where block-aligned */
};

/* "pread/pwrite", "copy_file_range", "FICLONERANGE" (a static string). */
const char *compact_method_name(enum compact_method m);

/* One compaction's copier. Owned by its caller; the fields are read by it
 * for results, changed only by the functions below. */
struct copier {
	enum compact_method method;	/* for the ranges still to come */
	const int *stop;	/* if set and nonzero (read atomically), copies
				   give up with -ECANCELED */
	uint64_t rate;		/* bytes/s, 0 = unlimited */
	uint64_t bytes;		/* written or cloned so far */
	uint64_t ranges;	/* copier_range() calls */
	bool reflinked;		/* copier_base() shared the base (FICLONE) */
	unsigned blksize;	/* clone granularity of the output */
	struct timespec start;	/* CLOCK_MONOTONIC at copier_init() */
	char *buf;		/* pread/pwrite bounce buffer */
	/* If set, called with bytes after every piece written (for a
	 * progress display; it must be quick). */
	void (*progress)(void *ctx, uint64_t bytes);
	void *progress_ctx;
};

/*
 * Readies c for one compaction: starts its clock, allocates its buffer.
 * rate and stop as in struct copier (stop is borrowed, may be NULL).
 * Returns 0 or -ENOMEM; c must be released with copier_release() either
 * way.
 */
int copier_init(struct copier *c, uint64_t rate, const int *stop);

/* Frees what copier_init() allocated; harmless on a zeroed copier. */
void copier_release(struct copier *c);

/*
 * Chooses the method for the output file out, whose filesystem has block
 * size blksize (from fstat; <= 0 means 4096): FICLONERANGE on btrfs and
 * XFS, copy_file_range elsewhere, or what SNAPFS_COMPACT_METHOD
 * (pread|cfr|clone) forces; never a method this build lacks. Also limits
 * XFS's copy-on-write preallocation on out, which would otherwise turn
 * the base's holes into data. No error: the worst case is pread/pwrite.
 */
void copier_prepare(struct copier *c, int out, blksize_t blksize);

/*
 * Copies the base in (its map: map, its size: size) into out, an empty
 * file: a reflink where the filesystem can (c->reflinked), else out is
 * sized and only the base's data ranges are copied, so its holes stay
 * holes (and the method drops from FICLONERANGE to copy_file_range: no
 * FICLONE, no FICLONERANGE). Returns 0 or -errno (-ECANCELED when
 * stopped).
 */
int copier_base(struct copier *c, int in, int out, const struct extent_map *map,
		uint64_t size);

/*
 * Copies [off, off + len) of in to the same offsets of out, both files of
 * size size, by c->method (which drops to the next method for good when
 * the kernel refuses one), sleeping as the rate limit asks. Returns 0 or
 * -errno: -ECANCELED when stopped, -EIO if in shrank.
 */
int copier_range(struct copier *c, int in, int out, uint64_t off, uint64_t len,
		 uint64_t size);

/* True once *c->stop is set. */
bool copier_stopped(const struct copier *c);

/* Seconds since copier_init(). */
double copier_elapsed(const struct copier *c);

/* Logs, once per device dev for the process, how c copied there. */
void copier_log_once(const struct copier *c, dev_t dev);

#endif
