/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The inode table: what each FUSE node id stands for. A node is either an
 * entry of STORE (directory, ordinary file, symlink, ...) held by an O_PATH
 * fd and known by its (device, inode), or one *version* of a layered file.
 *
 * Versions are the heart of snapfs (SPEC §3): a lookup of NAME resolves
 * its chain and compares the chain's identity (each layer's device, inode,
 * size and times) with the version the directory currently shows. The same
 * identity returns the same node; any other identity makes a new node with
 * a new inode number, which becomes current. An older version stays alive
 * while the kernel remembers it or a handle has it open, and it keeps
 * serving exactly its own chain: its view holds the layer fds. Since a
 * version's content never changes, its attributes and page cache never go
 * stale, and a new version can never be served from an old one's cache.
 *
 * This file speaks no FUSE: it returns 0 or -errno and the caller replies.
 */
#ifndef SNAPFS_NODE_H
#define SNAPFS_NODE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "compact.h"
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

struct node {
	enum node_kind kind;
	uint64_t nlookup;	/* protected by node_table.lock */
	unsigned refs;		/* internal refs (children, callers);
				   protected by node_table.lock */

	/* STORE entries (all kinds but NODE_VIEW) */
	int fd;			/* O_PATH | O_NOFOLLOW, -1 for views */
	dev_t dev;
	ino_t ino;
	struct node *hnext;	/* (dev, ino) hash chain, protected by table lock */

	/* NODE_DIR: the directory's layered-file index, refreshed when the
	 * directory's mtime or ctime moves. */
	pthread_mutex_t lock;	/* protects index, index_*, and for views
				   view and build_error */
	struct store_dir *index;
	struct timespec index_mtime, index_ctime, index_scanned;
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
	} stale_opens[8];	/* the latest, a ring; protected by
				   node_table.lock */
	unsigned stale_next;	/* protected by node_table.lock */
	struct node *wdnext;	/* wd hash chain, protected by table lock */
	char *path;		/* relative to STORE ("." for the root), for
				   log lines; dirs and views only */
	struct node *versions;	/* current version per NAME: list through
				   vnext; protected by node_table.lock */

	/* NODE_VIEW */
	struct node *parent;	/* referenced */
	char *name;
	struct node *vnext;
	bool current;		/* in parent->versions; protected by table lock */
	uint64_t vino;		/* synthetic st_ino of this version */
	struct stat vattr;	/* fixed for the life of the version */
	size_t nlayers;
	char **layer_names;	/* chain, base first */
	struct layer_id *layer_ids;
	char *error;		/* chain unusable by its names: the cause;
				   fixed, part of the version's identity */
	struct view *view;	/* built on first use under lock */
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
};

/*
 * Tells the FUSE layer that the name in directory parent_id (a node id as
 * node_id() gives it) may have changed: it drops the kernel's cached entry.
 * Called on the watcher thread with no lock held.
 */
typedef void (*node_inval_fn)(void *ctx, uint64_t parent_id, const char *name);

/*
 * Creates the table with STORE's root opened as the root node. With inval
 * set, directories are watched with inotify once looked into, and changes
 * are reported through inval; without it, names are only revalidated by
 * timeouts. Returns 0 or -errno (STORE missing or not a directory).
 */
int node_table_new(const char *store, struct view_env *env, node_inval_fn inval,
		   void *inval_ctx, struct node_table **out);

/* Starts watching (a thread); call once the FUSE session can take
 * notifications. Returns 0 or -errno; on error, nothing is watched. */
int node_table_watch(struct node_table *t);

/* Stops the watch thread; call before the FUSE session goes away. */
void node_table_unwatch(struct node_table *t);

/*
 * Starts the background compactor with opts (threshold, keep, rate): it
 * compacts the chains of versions looked up so far and later, one at a
 * time, on its own thread at idle I/O priority. Returns 0 or -errno.
 */
int node_table_compact(struct node_table *t, const struct compact_opts *opts);

/* Stops the compactor: a compaction under way gives up before its rename,
 * leaving the store as it was. */
void node_table_stop_compact(struct node_table *t);

/* The id the FUSE layer uses for n: FUSE_ROOT_ID (1) for the root, else
 * the node's address. */
uint64_t node_id(const struct node_table *t, const struct node *n);

/* True if changes in directory dir are seen at once (inotify), so its
 * names may be cached long; false where only timeouts revalidate them. */
bool node_dir_watched(struct node_table *t, struct node *dir);

/*
 * Rollback through the mount (SPEC §2): removes name from STORE if it is
 * the highest diff of its chain. Returns 0; -EBUSY (logged) for any other
 * layer; -EROFS for entries that are not layers; -ENOENT.
 */
int node_unlink(struct node_table *t, struct node *dir, const char *name);

/*
 * For an open of version n by thread pid (the FUSE request's): 0 if n is
 * still what a lookup of its name would return now, or if n was current
 * when this same thread's retry lookup found it less than STALE_RETRY_MS
 * ago (see below); -ESTALE if its chain has changed (the kernel then looks
 * the name up again and opens the new version), or another -errno.
 *
 * The retry rule: the kernel answers an ESTALE open by looking the name up
 * again and opening what it finds, once, inside the same open(2). Under a
 * chain that changes every millisecond, that second open can find its
 * version superseded too, and the application would see ESTALE. But the
 * version was current at the retry lookup, which happened during the
 * open(2), so serving it is still a correct answer (the open is ordered at
 * that lookup). An ESTALE answer is remembered per directory (thread, name);
 * a lookup by that thread within the window marks the version it returns,
 * and that thread's open of it succeeds.
 */
int node_version_check(struct node_table *t, struct node *n, uint32_t pid);

/* How long an ESTALE open's retry may take: the window of the rule above. */
#define STALE_RETRY_MS 1000

/* Frees every node; nothing may use the table any more. */
void node_table_free(struct node_table *t);

struct node *node_root(struct node_table *t);

/*
 * Looks name up in directory parent for thread pid (0 if unknown; see
 * node_version_check()). On success the returned node has one more lookup
 * count (the kernel's) and *st holds its attributes. Returns 0, -ENOENT,
 * -ENOTDIR, or another -errno.
 */
int node_lookup(struct node_table *t, struct node *parent, const char *name,
		uint32_t pid, struct node **out, struct stat *st);

/* Drops n lookup counts (FUSE forget); the node may be freed. */
void node_forget(struct node_table *t, struct node *n, uint64_t nlookup);

/* Takes/drops an internal reference that keeps n alive (not a lookup). */
void node_ref(struct node_table *t, struct node *n);
void node_unref(struct node_table *t, struct node *n);

/* Attributes of n now: fstat for STORE entries, the fixed ones for views. */
int node_getattr(struct node_table *t, struct node *n, struct stat *st);

/*
 * The view of version n, built on first use (opens and scans the layers).
 * Returns 0 with a referenced view (view_put() it), or -EIO when the chain
 * is unusable (logged once per version, with the cause), or -ENOMEM.
 */
int node_view(struct node_table *t, struct node *n, struct view **out);

/* One directory entry as listed: name, type, and inode number to show. */
struct node_dirent {
	char *name;
	unsigned char d_type;
	uint64_t ino;
};

/*
 * Lists directory n as shown at the mount: STORE's entries, plus one entry
 * per layered NAME, minus plain entries a layered NAME hides. Returns 0 and
 * a malloc'd array (free with node_dirents_free()), or -errno.
 */
int node_list_dir(struct node_table *t, struct node *n,
		  struct node_dirent **out, size_t *count);
void node_dirents_free(struct node_dirent *d, size_t count);

/*
 * Opens the STORE file behind n for reading (never through a symlink).
 * Returns an fd or -errno.
 */
int node_open_file(struct node *n, int flags);

/* Extended attributes of a version: fills buf (size 0: just the length).
 * Returns the length, -ENODATA, -ERANGE, or -EIO. */
ssize_t node_view_getxattr(struct node_table *t, struct node *n,
			   const char *name, char *buf, size_t size);
ssize_t node_view_listxattr(struct node_table *t, struct node *n, char *buf,
			    size_t size);

#endif
