/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Layer files (the store format, doc/snapfs.8): how snapfs tells one published layer from
 * another (its identity) and the one way any part of snapfs opens a layer
 * for reading: never through a symlink, never blocking on a FIFO, never
 * opening a device, only ever a regular file.
 */
#ifndef SNAPFS_LAYER_H
#define SNAPFS_LAYER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

/*
 * What makes a layer the same layer: what a rewrite of its content changes.
 * Writing or truncating a file moves its mtime (and maybe its size); a
 * chmod, chown, setxattr or a hard link made by a backup job moves only its
 * ctime, which is left out: the bytes are the same, so it is the same layer.
 */
struct layer_id {
	uint64_t dev;
	uint64_t ino;
	uint64_t size;
	int64_t mtime_ns;
	int64_t btime_ns;	/* birth time where known, else 0; not part
				   of equality (fstat does not give it) */
};

void layer_id_from_stat(struct layer_id *id, const struct stat *st);
bool layer_id_equal(const struct layer_id *a, const struct layer_id *b);

/*
 * Opens layer fname of directory dirfd for reading. The entry is first
 * opened O_PATH (which opens nothing: no FIFO blocks, no device driver
 * runs), checked to be a regular file, and only then reopened for reading
 * through /proc/self/fd, so the file read is exactly the file checked.
 * With noatime, O_NOATIME is asked for where the caller may (it needs
 * ownership). Fills *st (may be NULL) from the open file. Returns the fd,
 * or -ELOOP for a symlink (never followed), -EFTYPE_LAYER for anything that
 * is not a regular file, or the -errno of the open (-ENOENT, -EACCES,
 * -EMFILE, ...).
 */
int layer_open(int dirfd, const char *fname, bool noatime, struct stat *st);

/* What layer_open() returns for an entry that is not a regular file. */
#define EFTYPE_LAYER EINVAL

/* True if layer fname of dirfd still has identity id (a missing or changed
 * file is not). */
bool layer_unchanged(int dirfd, const char *fname, const struct layer_id *id);

#endif
