/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the files of the FUSE side share, and nothing else includes:
 * fuse_ops.c (the handler table and the requests on nodes and files),
 * fuse_dir.c (directory listings), fuse_access.c (the requester's access)
 * and fuse_handles.c (the record of open handles). File handles are
 * described in fuse_ops.c.
 */
#ifndef SNAPFS_FUSE_PRIV_H
#define SNAPFS_FUSE_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "dirwatch.h"
#include "fuse_ops.h"
#include "names.h"

/* A version's attributes never change (a new chain is a new inode). */
#define VIEW_ATTR_TIMEOUT 86400.0

static inline struct snapfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static inline struct node *node_of(fuse_req_t req, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return node_root(fs_of(req)->nodes);
	return (struct node *)(uintptr_t)ino;
}

static inline fuse_ino_t ino_of(struct snapfs *fs, struct node *n)
{
	return (fuse_ino_t)node_id(fs->nodes, n);
}

/* How long the kernel may trust a name in dir without asking again. */
static inline double entry_timeout_of(struct snapfs *fs, struct node *dir)
{
	return dirwatch_watched(fs->nodes, dir) ? fs->entry_timeout : fs->revalidate;
}

static inline double attr_timeout_of(struct snapfs *fs, const struct node *n)
{
	return n->kind == NODE_VIEW ? VIEW_ATTR_TIMEOUT : fs->attr_timeout;
}

/* File handles of open files (fuse_ops.c). malloc's alignment keeps bit 0
 * of a view's address clear. */
#define FH_VIEW 1u

static inline uint64_t fh_of_view(struct view *v)
{
	return (uint64_t)(uintptr_t)v | FH_VIEW;
}

static inline uint64_t fh_of_fd(int fd)
{
	return (uint64_t)fd << 1;
}

/* The view of an open view's handle, or NULL for an ordinary file. */
static inline struct view *fh_view(const struct fuse_file_info *fi)
{
	return fi->fh & FH_VIEW ? (struct view *)(uintptr_t)(fi->fh & ~(uint64_t)FH_VIEW) : NULL;
}

static inline int fh_fd(const struct fuse_file_info *fi)
{
	return (int)(fi->fh >> 1);
}

/* A directory's handle: the listing taken at opendir. */
struct dir_handle {
	struct node_listing l;
};

void dir_handle_free(struct dir_handle *d);

/*
 * The record of open view and directory handles (fuse_handles.c), which
 * snapfs_close_handles() lets go of: fuse_handle_add() records p (a
 * struct view * or, with dir, a struct dir_handle *) and returns 0 or
 * -ENOMEM; fuse_handle_del() forgets one record of p.
 */
int fuse_handle_add(void *p, bool dir);
void fuse_handle_del(void *p);

/*
 * Whether the requester of req may access (fuse_access.c): STORE entry
 * n's own fd for mask; every layer of v, for reading. 0, -EACCES,
 * -ENOMEM or another -errno.
 */
int requester_may_node(fuse_req_t req, struct node *n, int mask);
int requester_may_read_view(fuse_req_t req, const struct view *v);

/* The directory requests (fuse_dir.c). */
void snapfs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void snapfs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi);
void snapfs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi);
void snapfs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

#endif
