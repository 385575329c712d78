/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Flatten on publish (doc/design.md §19): when a layered version becomes
 * current and is first opened or asked about, a background thread builds
 * one flat file holding exactly its bytes (the base reflinked, the flattened diff ranges applied with the
 * compactor's copier), so that new opens of that version can be served by
 * kernel FUSE passthrough to it. The flat file is an unnamed O_TMPFILE in
 * the version's directory: it is never part of the store, never a layer,
 * and a crash leaves nothing behind; the chain on disk is never changed.
 * It is dropped when its version stops being current (a new chain, a
 * rollback, the name gone) or at unmount; opens that already use it keep
 * it until they close.
 */
#ifndef SNAPFS_FLATTEN_H
#define SNAPFS_FLATTEN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "node.h"

enum flatten_mode {
	FLATTEN_OFF,
	FLATTEN_AUTO,		/* only where the base can be reflinked */
	FLATTEN_ALWAYS,		/* also where the base must be copied */
};

struct flatten;

/*
 * Called on the flattener's thread, no lock held, while the version's node
 * is referenced: version nodeid (node_id()) has a ready flat file (or one
 * layer, after a compaction) and no open of it was on the FUSE path when
 * this was queued, so its next opens are served by passthrough and the
 * FUSE inode's own page cache (what reads and pushes put there) is of no
 * more use. The callee
 * drops it if the inode is still not open; a passthrough open would
 * otherwise drop it itself, synchronously, in the open (doc/design.md §19).
 */
typedef void (*flatten_drop_fn)(void *ctx, uint64_t nodeid);

struct flatten_opts {
	enum flatten_mode mode;
	/* Before each flat file is built: whether anything could serve it
	 * (passthrough is on); when it says no, nothing is built. */
	bool (*usable)(void *ctx);
	flatten_drop_fn drop;	/* may be NULL */
	void *ctx;
};

/*
 * Starts the flattener for table t: it chains itself into the table's
 * version_made hook (call after compactd_start(), stop before
 * compactd_stop()). Returns 0 with *out set (also for FLATTEN_OFF, which
 * builds nothing), or -errno.
 */
int flatten_start(struct node_table *t, const struct flatten_opts *o,
		  struct flatten **out);

/* Stops the thread, closes every flat file (opens through passthrough keep
 * theirs in the kernel) and restores the hook it chained. NULL is fine. */
void flatten_stop(struct flatten *f);

/*
 * Offers the view vw of version v (referenced by the caller, whose request
 * holds v) for building v's flat file, if it is still wanted: the
 * flattener takes its own reference until the build is done. Called by
 * the first opens of a version and by reads of user.snapfs.flat, so a
 * version nobody opens or asks about is never built. NULL f is fine.
 */
void flatten_offer(struct flatten *f, struct node *v, struct view *vw);

/*
 * For an open of version v: a new fd (the caller closes it) of v's flat
 * file if it is ready, else -1.
 */
int flatten_fd(struct flatten *f, struct node *v);

/*
 * The last open of version v that went the FUSE path was released: if v's
 * flat file is ready, or a compaction left v with one layer, its inode's
 * page cache is dropped in the background (flatten_opts.drop). With wanted (later opens would take the FUSE path
 * too and read it: an O_RDWR open was among them), it is kept, now and
 * when the flat file becomes ready. NULL f is fine.
 */
void flatten_fuse_closed(struct flatten *f, struct node *v, bool wanted);

/* The value of user.snapfs.flat for version v, malloc'd: "none",
 * "pending", "ready" or "failed: CAUSE"; NULL on ENOMEM. f may be NULL
 * (no flattener: "none"). */
char *flatten_describe(struct flatten *f, struct node *v);

/* Parses "auto", "always", "off"; -1 for anything else. */
int flatten_mode_parse(const char *s);

#endif
