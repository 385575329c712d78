/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The FUSE low-level operations of snapfs: with fuse_read.c (how reads of
 * views are answered) and fuse_stats.c, the only code that speaks FUSE.
 * It maps node ids to nodes and turns -errno results into replies.
 */
#ifndef SNAPFS_FUSE_OPS_H
#define SNAPFS_FUSE_OPS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>

#include "cache.h"
#include "openmode.h"
#include "flatten.h"
#include "node.h"
#include "passthrough.h"
#include "view.h"

/* How reads of views are answered (-o read_reply, doc/design.md §5):
 * gathered where that pays and spliced otherwise (auto, gather, where
 * io_uring works); always spliced; or from the layers' maps. */
enum reply_mode { REPLY_GATHER, REPLY_SPLICE, REPLY_MMAP };

/* Everything a request handler needs; fuse_req_userdata() returns it. */
struct snapfs {
	struct fuse_session *se;
	struct node_table *nodes;
	struct view_env *env;
	struct cache *cache;
	struct passthrough *pt;	/* kernel FUSE passthrough (passthrough.h) */
	struct flatten *flatten;	/* flat files of layered versions */
	double entry_timeout;	/* names in directories inotify watches */
	double revalidate;	/* names in directories it cannot watch */
	double attr_timeout;	/* attributes of ordinary STORE entries */
	const char *zero;	/* a read-only buffer of zero_len zero bytes */
	enum reply_mode reply;	/* how view reads are answered (read_reply) */
	size_t pipe_max;	/* the largest pipe a splice can have
				   (fs.pipe-max-size) */
	/* The mount's read-ahead window, set at the first open: FUSE starts
	 * at 128 KiB; a larger one sends the daemon several requests at
	 * once and a faulting VM fewer round trips. */
	bool readahead_pending;	/* atomic: still to be written */
	bool readahead_asked;	/* -o readahead_kb given: warn if it fails */
	unsigned readahead_kb;
	char readahead_path[64];	/* the bdi's read_ahead_kb in sysfs */
	bool posix_acl;		/* ask the kernel to enforce POSIX ACLs
				   (set with allow_other, which implies
				   default_permissions) */
	size_t zero_len;
	enum open_rw open_rw;	/* whether views open O_RDWR (openmode.h) */
};

extern const struct fuse_lowlevel_ops snapfs_ops;

/* node_inval_fn for the node table: drops the kernel's entry for name in
 * parent_id (ctx is the struct snapfs). */
void snapfs_inval_entry(void *ctx, uint64_t parent_id, const char *name);

/*
 * prefetch_store_fn and prefetch_drop_fn for the push thread (ctx is the
 * struct snapfs): fuse_lowlevel_notify_store() of a gathered buffer or of
 * fd-backed buffers, and fuse_lowlevel_notify_inval_inode() of the whole
 * inode.
 */
int snapfs_push(void *ctx, uint64_t nodeid, struct view *v, uint64_t off,
		const struct view_piece *p, size_t n);
void snapfs_push_drop(void *ctx, uint64_t nodeid);

/* flatten_drop_fn (ctx is the struct snapfs): unless the inode has been
 * opened again meanwhile, ends its push and drops its page cache. */
void snapfs_flat_drop(void *ctx, uint64_t nodeid);

/*
 * Lets go of every view and directory listing still held by an open file
 * handle: after a lazy unmount the kernel ends the connection without the
 * releases of files still open. Call once the session loop has returned,
 * before the node table is freed.
 */
void snapfs_close_handles(void);

/*
 * The counters file at the mount's root (fuse_stats.c): stats_file_name()
 * tells whether a lookup names it (it shadows any entry of STORE's root
 * of that name), stats_file_is() whether a node id is it; the others
 * answer the request for it, each sending the one reply.
 */
#define STATS_FILE_NAME ".snapfs-stats"
bool stats_file_name(fuse_ino_t parent, const char *name);
bool stats_file_is(fuse_ino_t ino);
void stats_file_lookup(fuse_req_t req, struct snapfs *fs);
void stats_file_getattr(fuse_req_t req, struct snapfs *fs);
void stats_file_open(fuse_req_t req, struct snapfs *fs, struct fuse_file_info *fi);
void stats_file_read(fuse_req_t req, size_t size, off_t off,
		     struct fuse_file_info *fi);
void stats_file_release(fuse_req_t req, struct fuse_file_info *fi);
/* Frees the texts of released handles still kept (at exit). */
void stats_file_free_released(void);

#endif
