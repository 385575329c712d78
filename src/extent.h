/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Extent maps (doc/design.md §6.1): the sorted data ranges of one layer
 * file, taken from FIEMAP where the filesystem has it (preallocated but never
 * written extents are holes) and from lseek(SEEK_DATA)/lseek(SEEK_HOLE)
 * elsewhere, so that a map never depends on what the page cache holds; the
 * checks a diff's map must pass; and the probe that tells whether a
 * filesystem reports holes at page granularity (doc/design.md §7).
 */
#ifndef SNAPFS_EXTENT_H
#define SNAPFS_EXTENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct extent {
	uint64_t off;
	uint64_t len;
};

/* How a map was taken. */
enum extent_method {
	EXTENT_AUTO,	/* extent_scan_with(): FIEMAP, else SEEK_DATA */
	EXTENT_FIEMAP,	/* FS_IOC_FIEMAP */
	EXTENT_SEEK,	/* lseek(SEEK_DATA)/lseek(SEEK_HOLE) */
};

/* Immutable once built; shared read-only between threads. */
struct extent_map {
	uint64_t size;		/* file size the map was taken at */
	uint64_t data_bytes;	/* sum of ext[].len */
	/*
	 * tmpfs only (0 elsewhere): bytes of pages allocated by fallocate()
	 * and never written. They scan as holes, but tmpfs turns such a page
	 * into a page of zeros, data, when anything faults it in through a
	 * mapping or the kernel swaps it out; a diff holding any cannot be
	 * served the same way twice (extent_diff_refusal()). Where FIEMAP
	 * answers, preallocated extents are holes for good and never counted.
	 */
	uint64_t unstable_bytes;
	enum extent_method method;	/* EXTENT_FIEMAP or EXTENT_SEEK */
	size_t n;
	struct extent ext[];	/* sorted, disjoint, non-adjacent, within size */
};

/*
 * Scans fd (a regular file of the given size) and returns in *out a malloc'd
 * map (free()) of its data ranges within [0, size), adjacent ranges merged.
 * Data is what the filesystem has written: a preallocated extent never
 * written (fallocate) is a hole, whatever the page cache holds.
 *
 * How: FS_IOC_FIEMAP with FIEMAP_FLAG_SYNC (dirty and delayed-allocation
 * pages are written back first, so every extent is final), extents flagged
 * FIEMAP_EXTENT_UNWRITTEN taken as holes and every other extent as data.
 * Where the filesystem has no FIEMAP (the ioctl answers EOPNOTSUPP, ENOTTY,
 * EINVAL or EBADR: tmpfs, FUSE, NFS...), decided afresh on every call,
 * lseek(SEEK_DATA)/lseek(SEEK_HOLE) from offset 0; on tmpfs the pages
 * preallocated and never written are then counted in unstable_bytes. The
 * fd's file offset is left undefined, so fds that are also read must be read
 * with pread only. Returns 0, or -errno of the ioctl, of lseek or of
 * fstat/fstatfs, or -ENOMEM, or -EIO if the filesystem answers nonsense.
 */
int extent_scan(int fd, uint64_t size, struct extent_map **out);

/*
 * extent_scan() of a map whose footprint (extent_map_footprint()) may not
 * pass max_bytes: -EFBIG as soon as it would, and the map never holds more
 * memory than that while it grows (a diff with millions of extents is
 * refused, not scanned into whatever memory there is).
 */
int extent_scan_within(int fd, uint64_t size, size_t max_bytes,
		       struct extent_map **out);

/*
 * extent_scan() with the method forced: EXTENT_AUTO is extent_scan();
 * EXTENT_FIEMAP fails with the ioctl's -errno where the filesystem has no
 * FIEMAP instead of falling back; EXTENT_SEEK never tries FIEMAP (and then
 * counts preallocated pages on tmpfs only, as extent_scan() does). For
 * tests and benchmarks; -EINVAL for another method.
 */
int extent_scan_with(int fd, uint64_t size, enum extent_method how,
		     struct extent_map **out);

/*
 * extent_scan() of the part [start, end) of a file of the given size, by the
 * same method (FIEMAP, else SEEK_DATA): the data ranges found there,
 * clipped to [start, end), in a map whose size is the file's. Where the map
 * serves a read before the whole file is scanned (doc/design.md §5.1), it
 * says what extent_scan() will about those bytes. With to_first_hole, the
 * scan stops at the first hole after start: enough to tell whether the
 * file is dense (extent_map_is_dense()) for the cost of one call on a
 * sparse file. unstable_bytes is never counted: only a whole scan can.
 * Returns 0, -EINVAL if the range is not within size, or what
 * extent_scan() returns.
 */
int extent_scan_range(int fd, uint64_t size, uint64_t start, uint64_t end,
		      bool to_first_hole, struct extent_map **out);

/* Bytes of memory held by a map, for the cache's budget. */
size_t extent_map_footprint(const struct extent_map *m);

/* True if the map is one extent covering [0, size) of a non-empty file. */
int extent_map_is_dense(const struct extent_map *m);

/*
 * Whether a map may be a diff's (the base has no such rules): NULL if so,
 * else a static phrase that completes "diff NAME ...", saying why not. A
 * diff larger than page_size with no holes at all would hide the base under
 * zeros (a diff of at most one page cannot be told from one that changed its
 * only page, and passes); a diff with unstable_bytes would read differently
 * depending on who mapped it before.
 */
const char *extent_diff_refusal(const struct extent_map *m, unsigned page_size);

/* The probe's scratch file size: a granularity this large means the
 * filesystem reports no holes at all. */
#define EXTENT_PROBE_SIZE ((uint64_t)16 << 20)

/*
 * Measures the hole granularity of the filesystem holding directory dirfd:
 * writes one page_size page into an anonymous O_TMPFILE in it (falling back
 * to a named, at once unlinked, hidden file) at an offset far from others,
 * and reports in *gran how much data extent_scan() (the same method as for
 * layers) finds there. A result of page_size means holes are exact; one of
 * EXTENT_PROBE_SIZE, that the filesystem reports no holes at all. Returns
 * 0, or -errno if no scratch file could be made, written or scanned
 * (read-only store, no space).
 */
int extent_probe_granularity(int dirfd, unsigned page_size, uint64_t *gran);

#endif
