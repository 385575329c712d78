/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reading a flat file into the page cache as far as its layers are there
 * (doc/design.md §19.3, step 8).
 *
 * A flat file shares its blocks with its layers (a reflink), not their
 * page cache: a new one starts with none of its pages cached, and an open
 * served by passthrough to it read from the disk where the layers it
 * replaces were warm. So before a flat file is handed to opens, the
 * chunks whose bytes are cached in the layers that serve them are read
 * into its own page cache; chunks cold in the layers stay cold (they
 * would cost the disk through the layers too).
 *
 * Library code, no FUSE; any thread, no lock held, no shared state.
 */
#ifndef SNAPFS_WARM_H
#define SNAPFS_WARM_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "view.h"

/* A chunk is 1 << WARM_SHIFT bytes of the view (1 MiB). */
#define WARM_SHIFT 20

/* Chunks of a view of size bytes. */
static inline size_t warm_chunks(uint64_t size)
{
	return (size_t)((size + (1ULL << WARM_SHIFT) - 1) >> WARM_SHIFT);
}

/*
 * Marks in warm[warm_chunks(size)] (1 or 0) each chunk of the view made of
 * seg[0..nseg] (as struct view's: seg[nseg].off == size, layer indexes into
 * fds[nlayers], VIEW_ZERO for holes) whose data pages are at least half
 * in the page cache of the layers that serve them (mincore() of each
 * layer, mapped for the call). Returns the bytes of the chunks marked, or
 * -errno.
 */
int64_t warm_plan(const struct view_seg *seg, size_t nseg, const int *fds,
		  unsigned nlayers, uint64_t size, uint8_t *warm);

/*
 * Reads the chunks warm[] marks of fd (size bytes) into its page cache,
 * in file order, asking go_on(ctx) before each: 0 when done, -ECANCELED
 * when go_on said no, or -errno. *done (if not NULL) gets the bytes read.
 */
int warm_read(int fd, const uint8_t *warm, uint64_t size,
	      bool (*go_on)(void *ctx), void *ctx, uint64_t *done);

/* MemAvailable of /proc/meminfo in bytes, or 0 if it cannot be read. */
uint64_t warm_mem_available(void);

#endif
