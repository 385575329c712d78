/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's background compaction (compactd.c): which versions are
 * compacted, on which thread, and what user.snapfs.compaction says.
 */
#ifndef SNAPFS_COMPACTD_H
#define SNAPFS_COMPACTD_H

#include "compact.h"
#include "node.h"

/*
 * Starts the background compactor with opts (threshold, keep, rate): it
 * compacts the chains of versions looked up so far and later, one at a
 * time, on its own thread at idle I/O priority. Returns 0 or -errno.
 */
int compactd_start(struct node_table *t, const struct compact_opts *opts);

/* Stops the compactor: a compaction under way gives up before its rename,
 * leaving the store as it was. Call before node_table_free(). */
void compactd_stop(struct node_table *t);

/* How often a chain whose compaction lock another compactor holds (on
 * this host or another) is tried again, while its version is current. */
#define COMPACT_HELD_RETRY_MS 2000

/*
 * What user.snapfs.compaction says of version v: "off", "pending",
 * "running", "idle", "held: by another compactor" (waiting for the
 * chain's compaction lock), "refused: CAUSE" or "failed: CAUSE". Returns a
 * malloc'd string, or NULL on ENOMEM.
 */
char *compactd_describe(struct node_table *t, struct node *v);

#endif
