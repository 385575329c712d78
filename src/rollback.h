/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Rollback in STORE under the rollback lock (dirlock.h): which diff a
 * rollback removes, and the rollback itself, for snapfs-rollback. Holding
 * the lock while the newest diff is checked and removed is what keeps a
 * compaction from merging it into a base at the same moment (compact.h).
 */
#ifndef SNAPFS_ROLLBACK_H
#define SNAPFS_ROLLBACK_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

/* What a rollback removed, or why it did not. */
struct rollback_result {
	char name[256];		/* NAME */
	char removed[256];	/* the diff removed (or, dry run, to remove) */
	char top_after[256];	/* the chain's newest layer after it */
	size_t depth_after;	/* diffs left above the base */
	bool unlinked;		/* removed from STORE (even if a later step
				   failed) */
	char why[512];		/* on failure: a sentence for the user */
};

/*
 * Which diff a rollback of the layered file name (group g of a directory
 * index, NULL if there is none) removes: the newest diff of its chain.
 * want, if not NULL, is the layer file the caller means to remove, and must
 * be that diff. Returns 0 with res->removed, res->top_after and
 * res->depth_after filled, or, with res->why set:
 *   -ENOENT  nothing to roll back: no layered file name, its chain is its
 *            base alone, or want is not in the chain (gone, or merged into
 *            the base by compaction);
 *   -EBUSY   want is in the chain but is not its newest diff;
 *   -EIO     the chain is unusable (doc/format.md §5): not rolled back blindly;
 *   -ENOMEM.
 */
int rollback_resolve(const struct store_group *g, const char *name,
		     const char *want, struct rollback_result *res);

/*
 * Rolls back one layer in directory dirfd. target is either NAME (remove
 * the newest diff, whichever it is) or a layer file name NAME.<seq>.diff
 * (remove exactly that one, which must be the newest). Takes the rollback
 * lock, waiting at most wait_ms (DIRLOCK_WAIT_FOREVER: no limit), scans
 * the directory, resolves, unlinks the diff and fsyncs the directory,
 * then releases the lock. With dry_run it stops before the unlink.
 * Returns 0 only once the removal is durable (dry run: when it would be
 * done), else a negative errno with res->why set: those of
 * rollback_resolve(), -EWOULDBLOCK (the lock stayed held elsewhere), or
 * the error of the scan, the unlink or the fsync (res->unlinked tells
 * whether the diff is gone nevertheless).
 */
int rollback_run(int dirfd, const char *target, bool dry_run, int wait_ms,
		 struct rollback_result *res);

#endif
