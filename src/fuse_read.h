/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Answering reads of views (fuse_read.c), for fuse_ops.c. The push
 * callbacks of the prefetch thread are declared in fuse_ops.h.
 */
#ifndef SNAPFS_FUSE_READ_H
#define SNAPFS_FUSE_READ_H

#include "fuse_ops.h"

/*
 * Answers the read of [off, off + size) of view v, which the caller holds
 * a reference on until this returns: from the map (or, before it is
 * built, the layers' extents), gathered, spliced or from the layers' maps
 * as fs says (doc/design.md §5); EIO for a truncated layer, with one log
 * line. Returns the bytes of data sent, 0 for an error or EOF.
 */
size_t fuse_read_view(fuse_req_t req, struct snapfs *fs, struct view *v,
		      size_t size, off_t off);

#endif
