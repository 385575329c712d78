/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The FUSE low-level operations of snapfs: the only code that speaks FUSE.
 * It maps node ids to nodes, turns -errno results into replies, and answers
 * reads zero-copy from the layers' file descriptors.
 */
#ifndef SNAPFS_FUSE_OPS_H
#define SNAPFS_FUSE_OPS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>

#include "cache.h"
#include "flatten.h"
#include "node.h"
#include "passthrough.h"
#include "view.h"

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
	bool reply_splice;	/* answer view reads by splicing from the
				   layers' fds instead of from their maps */
	bool posix_acl;		/* ask the kernel to enforce POSIX ACLs
				   (set with allow_other, which implies
				   default_permissions) */
	size_t zero_len;
};

extern const struct fuse_lowlevel_ops snapfs_ops;

/* node_inval_fn for the node table: drops the kernel's entry for name in
 * parent_id (ctx is the struct snapfs). */
void snapfs_inval_entry(void *ctx, uint64_t parent_id, const char *name);

/*
 * Lets go of every view and directory listing still held by an open file
 * handle: after a lazy unmount the kernel ends the connection without the
 * releases of files still open. Call once the session loop has returned,
 * before the node table is freed.
 */
void snapfs_close_handles(void);

#endif
