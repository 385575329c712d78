/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The flattener's parts (doc/design.md §19.3): how one flat file is built
 * (flatten_build.c), for the flattener's thread (flatten.c).
 */
#ifndef SNAPFS_FLATTEN_PRIV_H
#define SNAPFS_FLATTEN_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "cache.h"
#include "view.h"

/*
 * Builds the flat file of view vw in directory dirfd (path names it in
 * log lines): an unnamed O_TMPFILE with the base reflinked (or, where
 * that fails and need_reflink is false, its data copied) and the ranges
 * the diffs serve applied, after a check of free space. *noreflink_dev
 * remembers the last device logged as unable to reflink (atomic); *stop
 * ends a copy early. Returns the file's fd; or 0 where the filesystem
 * cannot reflink and need_reflink is set; or -errno with the cause in
 * cause[len].
 */
int flat_build(struct cache *cache, bool need_reflink, dev_t *noreflink_dev,
	       const int *stop, int dirfd, const char *path,
	       const struct view *vw, char *cause, size_t len);

#endif
