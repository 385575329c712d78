/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Change notification for the directories of the inode table (dirwatch.c):
 * inotify events become invalidations of the kernel's cached entries, so a
 * change in STORE shows through the mount within milliseconds and names
 * can be cached long.
 */
#ifndef SNAPFS_DIRWATCH_H
#define SNAPFS_DIRWATCH_H

#include <stdbool.h>

#include "node.h"

/*
 * Starts watching (a thread); call once the FUSE session can take
 * notifications, after daemonizing. Directories are watched from their
 * first look on; changes are reported through the table's inval callback.
 * Returns 0 or -errno (-EINVAL: the table has no inval callback); on
 * error, logged, nothing is watched and names are revalidated by timeout.
 * sweep (may be NULL) is called on the watcher's thread, no lock held, a
 * second after layer files of directory dir were deleted or moved away
 * (names.h: node_dir_sweep()).
 */
int dirwatch_start(struct node_table *t,
		   void (*sweep)(struct node_table *t, struct node *dir));

/* Stops the watch thread; call before the FUSE session goes away. */
void dirwatch_stop(struct node_table *t);

/* True if changes in directory dir are seen at once (inotify), so its
 * names may be cached long; false where only timeouts revalidate them. */
bool dirwatch_watched(struct node_table *t, struct node *dir);

#endif
