/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The inode table: what each FUSE node id stands for. A node is either an
 * entry of STORE (directory, ordinary file, symlink, ...) held by an O_PATH
 * fd and known by its (device, inode), or one *version* of a layered file.
 *
 * Versions are the heart of snapfs (doc/format.md §3): a lookup of NAME resolves
 * its chain and compares the chain's identity (each layer's device, inode,
 * size and times) with the version the directory currently shows. The same
 * identity returns the same node; any other identity makes a new node with
 * a new inode number, which becomes current. An older version stays alive
 * while the kernel remembers it or a handle has it open, and it keeps
 * serving exactly its own chain: its view holds the layer fds. Since a
 * version's content never changes, its attributes and page cache never go
 * stale, and a new version can never be served from an old one's cache.
 *
 * The family of files behind it (node.c, dirwatch.c, dir.c, version.c,
 * names.c, compactd.c, xattr.c) speaks no FUSE: it returns 0 or -errno and
 * the caller replies. node_priv.h draws the layers and the lock order; this
 * header is the table itself.
 */
#ifndef SNAPFS_NODE_H
#define SNAPFS_NODE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "store.h"
#include "view.h"

enum node_kind {
	NODE_DIR,
	NODE_FILE,	/* an ordinary regular file of STORE, passed through */
	NODE_SYMLINK,
	NODE_OTHER,	/* fifo, socket, device: visible, never opened */
	NODE_VIEW,	/* one version of a layered file */
};

struct node_table;

/* Stale opens a directory remembers for the kernel's retries of them
 * (version.c, node_version_check()). */
#define NODE_STALE_OPENS 64

struct node {
	enum node_kind kind;
	uint64_t nlookup;	/* protected by node_table.lock */
	unsigned refs;		/* internal refs (children, callers);
				   protected by node_table.lock */

	/* STORE entries (all kinds but NODE_VIEW) */
	int fd;			/* O_PATH | O_NOFOLLOW, or -1: opened on
				   first use and closed again when the fd
				   budget needs it back (node_fd_get());
				   always -1 for views; protected by
				   node_table.lock, stable while pinned */
	unsigned fd_pins;	/* users of fd; protected by table lock */
	struct node *lru_prev, *lru_next;	/* unpinned open fds, most
				   recently used first; table lock */
	dev_t dev;
	ino_t ino;
	struct node *hnext;	/* (dev, ino) hash chain, protected by table lock */

	/* NODE_DIR: the directory's layered-file index, refreshed when the
	 * directory's mtime or ctime moves. */
	pthread_mutex_t lock;	/* protects index, index_*, and for views
				   view and build_error */
	struct store_dir *index;
	struct timespec index_mtime, index_ctime, index_scanned;
	uint64_t *index_ino;	/* parallel to index->groups: the inode
				   number a listing promised to the next
				   version of each NAME, 0 for none; NULL
				   while none is promised (version.c) */
	uint64_t index_gen;	/* rescans so far */
	uint64_t retired_gen;	/* index_gen when versions of names gone
				   from the index were last retired */
	bool index_stale;	/* set by the watcher: rescan before use;
				   protected by node_table.lock */
	int wd;			/* inotify watch, 0 if none yet, -1 if the
				   directory cannot be watched */
	bool moved_out;		/* found outside STORE (logged once);
				   protected by node_table.lock */
	struct node_stale_open {
		uint32_t pid;	/* thread whose open got ESTALE */
		uint64_t name_hash;
		int64_t ns;	/* CLOCK_MONOTONIC */
	} *stale_opens;		/* the latest NODE_STALE_OPENS, a ring made
				   at the directory's first stale open,
				   else NULL; protected by node_table.lock */
	unsigned stale_next;	/* protected by node_table.lock */
	struct node *wdnext;	/* wd hash chain, protected by table lock */
	int64_t sweep_at;	/* mono_ns() when a sweep for versions of
				   names gone is due, 0 if none is queued;
				   protected by node_table.lock */
	struct node *sweepnext;	/* node_table.sweeps; table lock */
	char *path;		/* relative to STORE ("." for the root), for
				   log lines; dirs and views only */
	struct vindex {		/* current version per NAME: a chained
				   hash through vnext that doubles as it
				   fills; protected by node_table.lock */
		struct node **b;
		size_t nb, n;
	} versions;

	/* Every node but the root: the directory it was last looked up in
	 * (referenced) and its name there, which is how a STORE entry's fd is
	 * opened again (node_fd_get()); protected by node_table.lock for
	 * STORE entries, whose name moves with a rename; fixed for views. */
	struct node *parent;
	char *name;

	/* NODE_VIEW */
	struct node *vnext;
	uint64_t vhash;		/* of name, for parent->versions */
	bool current;		/* in parent->versions; protected by table lock */
	uint64_t vino;		/* synthetic st_ino of this version */
	struct stat vattr;	/* fixed for the life of the version */
	size_t nlayers;		/* the chain, base first: nlayers,
				   layer_names and layer_ids are replaced
				   only by a compaction (compactd.c), with
				   this node's lock and node_table.lock both
				   held; read them holding either */
	char **layer_names;
	struct layer_id *layer_ids;
	char *error;		/* chain unusable by its names: the cause;
				   fixed, part of the version's identity */
	struct view *view;	/* built on first use under lock, owned
				   (view_own()): its layers are closed while
				   nobody else holds it */
	struct node_pin {
		uint32_t pid;	/* the thread whose open is to come */
		struct view *v;	/* a reference that keeps the layers open */
	} pins[4];		/* node_view_pin(): protected by lock */
	char *build_error;	/* layers unusable once opened: the cause;
				   set once under lock, then fixed */
	enum { COMPACT_IDLE, COMPACT_PENDING, COMPACT_RUNNING } cstate;
				/* protected by node_table.lock */
	struct node_retry {
		uint32_t pid;	/* a thread whose retry lookup (after an
				   ESTALE open) found this version current */
		int64_t ns;	/* when (CLOCK_MONOTONIC) */
	} retries[4];		/* protected by node_table.lock */
	char *crefused;		/* why the compactor refused this version's
				   chain (it would widen access), or NULL;
				   protected by node_table.lock */
	char *cfailed;		/* why this version's last compaction
				   failed, or NULL (cleared by a success);
				   protected by node_table.lock */
	bool cheld;		/* its last try found the chain's compaction
				   lock held by another compactor; protected
				   by node_table.lock */
};

/*
 * Tells the FUSE layer that the name in directory parent_id (a node id as
 * node_id() gives it) may have changed: it drops the kernel's cached entry.
 * Called on the watcher thread with no lock held.
 */
typedef void (*node_inval_fn)(void *ctx, uint64_t parent_id, const char *name);

/*
 * Creates the table with STORE's root opened as the root node. inval is
 * how changes reach the kernel once the watcher runs (dirwatch_start());
 * without a watcher, names are only revalidated by timeouts. Returns 0 or
 * -errno (STORE missing or not a directory).
 */
int node_table_new(const char *store, struct view_env *env, node_inval_fn inval,
		   void *inval_ctx, struct node_table **out);

/* The id the FUSE layer uses for n: FUSE_ROOT_ID (1) for the root, else
 * the node's address. */
uint64_t node_id(const struct node_table *t, const struct node *n);

/* Frees every node; nothing may use the table any more: the compactor
 * and the watcher are stopped first (compactd_stop(), dirwatch_stop()). */
void node_table_free(struct node_table *t);

struct node *node_root(struct node_table *t);

/* Drops n lookup counts (FUSE forget); the node may be freed. */
void node_forget(struct node_table *t, struct node *n, uint64_t nlookup);

/*
 * The fd budget: how many O_PATH fds of STORE entries the table keeps open
 * at once (doc/design.md §9.6). Entries beyond it are closed, least recently
 * used first, and opened again by name when next needed. Set before the
 * table is used; at least 4.
 */
void node_table_set_fd_budget(struct node_table *t, unsigned budget);

/* Number of STORE entries' fds open now (for tests and logs). */
unsigned node_table_open_fds(struct node_table *t);

/*
 * A usable O_PATH fd of STORE entry n (any kind but a view), pinned until
 * node_fd_put(): the one the table holds, or else opened again by name
 * from n's directory and checked to be the same inode. Returns the fd, or
 * -ESTALE if the name now leads elsewhere (or nowhere), or another -errno.
 * When the process is out of fds, the table first closes every fd nobody
 * pins and tries once more.
 */
int node_fd_get(struct node_table *t, struct node *n);
void node_fd_put(struct node_table *t, struct node *n);

/* Closes every STORE entry fd that nobody pins (the answer to EMFILE);
 * returns how many. */
unsigned node_fd_shed(struct node_table *t);

/* Takes/drops an internal reference that keeps n alive (not a lookup). */
void node_ref(struct node_table *t, struct node *n);
void node_unref(struct node_table *t, struct node *n);

#endif
