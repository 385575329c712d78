/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Extent maps (SPEC §4): the sorted data ranges of one layer file, found
 * with lseek(SEEK_DATA)/lseek(SEEK_HOLE), and the probe that tells whether a
 * filesystem reports holes at page granularity (SPEC §5).
 */
#ifndef SNAPFS_EXTENT_H
#define SNAPFS_EXTENT_H

#include <stddef.h>
#include <stdint.h>

struct extent {
	uint64_t off;
	uint64_t len;
};

/* Immutable once built; shared read-only between threads. */
struct extent_map {
	uint64_t size;		/* file size the map was taken at */
	uint64_t data_bytes;	/* sum of ext[].len */
	size_t n;
	struct extent ext[];	/* sorted, disjoint, non-adjacent, within size */
};

/*
 * Scans fd (a regular file of the given size) from offset 0 with pread-free
 * lseek calls; the fd's file offset is left undefined, so fds that are also
 * read must be read with pread only. Adjacent ranges are merged. Returns 0
 * and a malloc'd *out (free()), or -errno from lseek, or -ENOMEM.
 */
int extent_scan(int fd, uint64_t size, struct extent_map **out);

/* Bytes of memory held by a map, for the cache's budget. */
size_t extent_map_footprint(const struct extent_map *m);

/* True if the map is one extent covering [0, size) of a non-empty file. */
int extent_map_is_dense(const struct extent_map *m);

/*
 * Measures the hole granularity of the filesystem holding directory dirfd:
 * writes one page_size page into an anonymous O_TMPFILE in it (falling back
 * to a named, at once unlinked, hidden file) at an offset far from others,
 * and reports in *gran how much data SEEK_DATA/SEEK_HOLE say it holds.
 * A result of page_size means holes are exact. Returns 0, or -errno if no
 * scratch file could be made or written (read-only store, no space).
 */
int extent_probe_granularity(int dirfd, unsigned page_size, uint64_t *gran);

#endif
