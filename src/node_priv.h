/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the files of the node family share and nothing else sees: the inode
 * table's struct, its locks, and the internal calls between the layers.
 *
 * The family, bottom to top; each file calls only the ones below it:
 *
 *   node.c      the inode table: nodes, the (dev, ino) hash, lookup counts
 *               and references, release and destruction
 *   dirwatch.c  inotify watches of directories, events -> invalidations
 *   dir.c       a directory's index of layered files, and whether the
 *               directory is still inside STORE
 *   version.c   chains and their versions: probe, match, create, retire,
 *               the freshness check of an open
 *   version_view.c  the view of a version: build, reattach, pins
 *   names.c     what a directory shows: lookup, listing, attributes, opens
 *               of plain files, and rollback by unlink
 *   compactd.c  the daemon's compaction scheduling (queue, thread, rate)
 *   xattr.c     the user.snapfs.* attributes of a version
 *
 * The table never calls upward: where a lower layer must let a higher one
 * know something (a directory node leaves the table, a new version becomes
 * current), it calls a hook the higher layer installed (struct node_hooks).
 * The daemon's shutdown stops the compactor and the watcher before it frees
 * the table.
 *
 * Lock order: a chain's compaction lock, then a directory's rollback lock
 * (dirlock.h: a record lock and a flock, shared with other processes and
 * hosts, not mutexes of ours), then a
 * directory's node.lock, then a version's node.lock, then
 * node_table.watch_lock (only around adding or removing an inotify watch),
 * then node_table.lock; never the other way round. Only rollbacks
 * (node_unlink()) and the compactor take the rollback lock; lookups never
 * do, so a producer holding it from a shell blocks no read. The compactor
 * holds the directory's node.lock only around the rename of a new base and
 * the update of the version's identity, so lookups wait at most for that.
 * The table lock guards only memory (hash chains, counts, version lists,
 * hooks' bookkeeping) and is never held across I/O, close() or the freeing
 * of a node: nodes to free are unlinked under the lock and destroyed after
 * it is dropped.
 */
#ifndef SNAPFS_NODE_PRIV_H
#define SNAPFS_NODE_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "node.h"

/* First synthetic inode number: the high bit keeps versions clear of the
 * inode numbers STORE's filesystems hand out. */
#define VINO_BASE (1ULL << 63)

/* Watch descriptors to directories: a small chained hash (dirwatch.c). */
#define WD_BUCKETS 1024

struct compactd;
struct prefetch;
struct flatten;
struct store_group;

/* A timestamp in nanoseconds, for comparing file times. */
static inline int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/*
 * Calls from the table up to the layers above it, installed by them; each
 * may be NULL. The _locked ones run with node_table.lock held and must only
 * touch memory.
 */
struct node_hooks {
	/* Directory node dir leaves the table (its last reference went);
	 * dirwatch.c unlinks it from the watch hash. */
	void (*dir_released_locked)(struct node_table *t, struct node *dir);
	/* Directory node dir is about to be freed, no lock held; dirwatch.c
	 * removes its inotify watch unless another node took it over. */
	void (*dir_destroyed)(struct node_table *t, struct node *dir);
	/* Version v became the current version of its name (a new chain);
	 * compactd.c queues it if its chain is deep enough. */
	void (*version_made_locked)(struct node_table *t, struct node *v);
	/* Version v leaves the table (neither current nor known to the
	 * kernel, nor referenced); flatten.c drops its entry. */
	void (*version_released_locked)(struct node_table *t, struct node *v);
	/* Out of fds for open files (doc/design.md §9.6), no lock held:
	 * prefetch.c lets go of the views of versions nobody has open.
	 * Returns how many it let go. */
	unsigned (*views_shed)(struct node_table *t);
	/* Layer files of directory dir went (deleted, moved away), a second
	 * ago, no lock held: names.c reads dir again and retires the
	 * versions of names left with no layer (node_dir_sweep()), given to
	 * dirwatch_start() by the daemon. */
	void (*dir_sweep)(struct node_table *t, struct node *dir);
};

struct node_table {
	pthread_mutex_t lock;
	struct node **buckets;		/* protected by lock */
	size_t nbuckets;
	size_t count;			/* protected by lock */
	uint64_t next_vino;		/* protected by lock */
	struct node *root;
	struct view_env *env;
	node_inval_fn inval;
	void *inval_ctx;
	struct node_hooks hooks;	/* set before threads start */

	/* dirwatch.c's */
	struct watch *watch;		/* NULL: timeouts only */
	struct node *wd_buckets[WD_BUCKETS];	/* protected by lock */
	pthread_mutex_t watch_lock;	/* serializes adding a watch and
					   registering it against removing
					   one; taken before lock */
	bool watch_limit_logged;	/* protected by lock */
	struct node *sweeps;		/* directories whose layer files went,
					   to be swept (dirwatch_tick()),
					   each referenced; protected by lock */

	/* STORE entries' fds (node_fd_get()): open ones nobody pins, most
	 * recently used first, and the count of all open ones */
	struct node *lru_head, *lru_tail;	/* protected by lock */
	unsigned nfds;			/* protected by lock */
	unsigned fd_budget;		/* set before threads start */

	/* compactd.c's, NULL while no compactor runs */
	struct compactd *compactd;

	/* prefetch.c's, NULL while no push thread runs (atomic) */
	struct prefetch *prefetch;
	/* flatten.c's, NULL while no flattener runs */
	struct flatten *flatten;
};

/* ---- node.c: the table ---- */

/* A zeroed node of the given kind (fd -1), or NULL. */
struct node *node_alloc(enum node_kind kind);

/* Frees n and everything it owns (fd, index, view reference, names); n
 * must be out of the table and unreferenced. */
void node_destroy(struct node *n);

/* What a version lets go of for its view to be built anew: its own view
 * and the references its lookups pinned (node_view_pin()). */
struct node_views {
	struct view *view;
	struct view *pins[sizeof(((struct node *)0)->pins) /
			  sizeof(((struct node *)0)->pins[0])];
};

/* Takes version n's view and pins out of it into *out; n->lock held. The
 * caller lets go of them with node_views_put() once it holds no lock. */
void node_views_take_locked(struct node *n, struct node_views *out);
void node_views_put(struct node_views *views);

/* Inserts n in the (dev, ino) hash and counts it; table lock held. */
void node_hash_insert_locked(struct node_table *t, struct node *n);

/* The STORE entry node of (dev, ino), or NULL; table lock held. */
struct node *node_find_locked(struct node_table *t, dev_t dev, ino_t ino);

/*
 * With the table lock held: unlinks n if nothing holds it any more and
 * returns true if the caller must destroy it (node_destroy_chain(), after
 * unlocking). The current version of a name is kept even then, dormant.
 */
bool node_release_locked(struct node_table *t, struct node *n);

/* Destroys n, then drops the reference it held on its parent directory,
 * which may go too, and so on up. No lock held. */
void node_destroy_chain(struct node_table *t, struct node *n);

/*
 * A directory's index of its current versions by name (node.versions),
 * table lock held: find (or NULL), add (-ENOMEM only if no bucket could be
 * made), delete, and a walk calling fn(v, arg) for each.
 */
struct node *vindex_find_locked(struct node *dir, const char *name);
int vindex_add_locked(struct node *dir, struct node *v);
void vindex_del_locked(struct node *dir, struct node *v);
void vindex_each_locked(struct node *dir, void (*fn)(struct node *v, void *arg),
			void *arg);

/* STORE-relative path of child name in dir, for log lines; malloc'd, or
 * NULL. */
char *node_path_join(const struct node *dir, const char *name);

/* ---- dirwatch.c ---- */

/* Puts directory dir (its fd pinned: fd) under watch; called once, with
 * dir->lock held, the first time dir is looked into (before its first
 * scan). */
void dirwatch_add_locked(struct node_table *t, struct node *dir, int fd);

/* ---- dir.c ---- */

/*
 * Brings dir->index up to date; called with dir->lock held (force: rescan
 * even if nothing seems to have changed). The first look at a directory
 * watches it and removes the compactor's leftover staging files. Returns 0,
 * -ESTALE if the directory is no longer inside STORE (logged once), or the
 * -errno of the scan.
 */
int dir_refresh_locked(struct node_table *t, struct node *dir, bool force);

/* True if directory dir is still inside STORE. */
bool dir_in_store(struct node_table *t, struct node *dir);

/* Logs, once per directory node, that dir left STORE. */
void dir_moved_out(struct node_table *t, struct node *dir);

/* ---- version.c ---- */

/*
 * The current version of the layered file name in dir, made anew if its
 * chain changed (doc/format.md §3). lookups is added to its lookup count
 * (1 for a FUSE lookup, 0 for a listing); pid is the looking-up thread (0
 * if none), for the stale-open retry rule (node_version_check()). Returns
 * 0, -ENOENT if name is not a layered file (any version it had is retired),
 * or another -errno. With lookups 0 the version may be freed by another
 * thread as soon as this returns: use only *st then.
 */
int version_get(struct node_table *t, struct node *dir, const char *name,
		uint64_t lookups, uint32_t pid, struct node **out, struct stat *st);

/*
 * The inode number a listing shows for the layered name of group g, one of
 * dir->index's groups (dir->lock held, the index fresh), found without a
 * system call: the current version's if it was made of the layer files
 * g's chain has now (by name), else a number promised to the next version
 * made from g, reserved here on first use and handed to that version by
 * version_get() (node.index_ino). So a lookup after the listing shows the
 * number the listing did, unless the chain changed in between. Returns 0
 * or -ENOMEM.
 */
int version_listed_ino_locked(struct node_table *t, struct node *dir,
			      const struct store_group *g, uint64_t *ino);

/*
 * Retires the current versions of dir whose names are no longer layered
 * files in dir->index (after a rescan): called with dir->lock held. Those
 * nothing else holds are freed; the caller holds dir.
 */
void version_retire_gone_locked(struct node_table *t, struct node *dir);

/* The same for every current version of dir: for a directory deleted or
 * moved away, whose names nothing can look up again. dir->lock held. */
void version_retire_all_locked(struct node_table *t, struct node *dir);

/* True if thread pid's retry lookup marked version v within the stale-open
 * window (version.c); table lock held. */
bool version_retry_marked_locked(struct node *v, uint32_t pid);

/* Number of diffs in a version's chain (layers past the base). */
size_t version_depth(const struct node *v);

#endif
