/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * FUSE request handlers. Node ids are node pointers (the root is
 * FUSE_ROOT_ID). A view's file handle is its struct view (referenced) with
 * bit 0 set, an ordinary file's handle is its fd shifted left by one, a
 * directory's handle is the listing taken at opendir.
 *
 * Read, lseek and release work from the file handle alone and never touch
 * the node: the kernel sends the node's last forget only after the release,
 * but that order goes through /dev/fuse, where ThreadSanitizer cannot see
 * it. A read also holds a reference of its own on the view until its reply
 * is sent, so the free by whichever thread drops the last reference is
 * ordered after the read through the view's atomic count (view.h).
 *
 * Reads of a view are answered in fuse_read.c: gathered with one io_uring
 * submission where they span several layers, else spliced from the
 * layers' fds (doc/design.md §5). Directory requests are in fuse_dir.c,
 * the record of open handles in fuse_handles.c.
 *
 * Access: the daemon opens STORE's files itself, so every open and opendir
 * is checked with the requester's credentials first (fuse_access.c): a
 * view needs read permission on every layer of its version, a plain file
 * the access its open asks for, a directory read permission. Denials are
 * normal and not logged (a debug line with -d).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "flatten.h"
#include "fuse_priv.h"
#include "fuse_read.h"
#include "log.h"
#include "memtrim.h"
#include "names.h"
#include "passthrough.h"
#include "prefetch.h"
#include "procfd.h"
#include "stats.h"
#include "version.h"
#include "xattr.h"

void snapfs_inval_entry(void *ctx, uint64_t parent_id, const char *name)
{
	struct snapfs *fs = ctx;
	int ret;

	ret = fuse_lowlevel_notify_inval_entry(fs->se, (fuse_ino_t)parent_id,
					       name, strlen(name));
	/* -ENOENT: the kernel has no such entry cached; nothing to drop. */
	if (ret && ret != -ENOENT)
		log_debug("invalidating %s: %s", name, strerror(-ret));
}

static void snapfs_op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct snapfs *fs = userdata;

	/* With other users let in, the kernel checks lookups and traversal
	 * with the ACLs of STORE's entries too (it reads them through
	 * getxattr; views have none and show the AND of their layers'
	 * modes). Opens are checked by the daemon in any case. */
	if (fs->posix_acl) {
		if (conn->capable & FUSE_CAP_POSIX_ACL)
			conn->want |= FUSE_CAP_POSIX_ACL;
		else
			log_warn("the kernel cannot enforce POSIX ACLs for FUSE: "
				 "directory traversal through the mount follows "
				 "modes only (opens still honour ACLs)");
	}
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	/* No SPLICE_MOVE: on this kernel the moves happen, and they steal
	 * the layers' page-cache pages into the view's cache; the base is
	 * shared by every version and every VM restored from it, so it must
	 * stay cached (doc/performance.md, measured slower with moves too). */
	conn->want &= ~FUSE_CAP_SPLICE_MOVE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* A version's data never changes: do not let attribute refreshes of
	 * ordinary files drop it either way; they are re-read on open. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
#ifdef FUSE_CAP_DIRECT_IO_ALLOW_MMAP
	/* Never: an O_RDWR open under open_rw=private is direct_io exactly so
	 * that the kernel refuses its shared mappings (doc/design.md §15). */
	conn->want &= ~FUSE_CAP_DIRECT_IO_ALLOW_MMAP;
#endif
	passthrough_init(fs->pt, conn);
	log_debug("kernel FUSE %u.%u, max_readahead %u, max_write %u",
		  conn->proto_major, conn->proto_minor, conn->max_readahead,
		  conn->max_write);
}

static int reply_entry_for(fuse_req_t req, struct node *dir, struct node *n,
			   const struct stat *st)
{
	struct snapfs *fs = fs_of(req);
	struct fuse_entry_param e = {
		.ino = ino_of(fs, n),
		.attr = *st,
		.attr_timeout = attr_timeout_of(fs, n),
		.entry_timeout = entry_timeout_of(fs, dir),
	};

	return fuse_reply_entry(req, &e);
}

static void snapfs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct snapfs *fs = fs_of(req);
	struct node *dir = node_of(req, parent), *n;
	struct stat st;
	int ret;

	if (stats_file_name(parent, name)) {
		stats_file_lookup(req, fs);
		return;
	}
	ret = node_lookup(fs->nodes, dir, name, (uint32_t)fuse_req_ctx(req)->pid, &n, &st);
	if (ret == -ENOENT) {
		/* A negative entry, cached as long as a positive one: the
		 * watcher drops it when the name appears. */
		struct fuse_entry_param e = {
			.ino = 0,
			.entry_timeout = entry_timeout_of(fs, dir),
		};

		fuse_reply_entry(req, &e);
		return;
	}
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (reply_entry_for(req, dir, n, &st) != 0)
		node_forget(fs->nodes, n, 1);	/* the kernel did not take it */
}

/* Forgets free nodes, versions and their maps, thousands at a time when
 * the kernel drops a big directory's dentries: the heap may then have
 * memory to give back (memtrim.h). */
static void snapfs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (!stats_file_is(ino))
		node_forget(fs_of(req)->nodes, node_of(req, ino), nlookup);
	fuse_reply_none(req);
	memtrim_note();
}

static void snapfs_op_forget_multi(fuse_req_t req, size_t count,
				   struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		if (!stats_file_is(forgets[i].ino))
			node_forget(fs_of(req)->nodes, node_of(req, forgets[i].ino),
			    forgets[i].nlookup);
	fuse_reply_none(req);
	memtrim_note();
}

static void snapfs_op_getattr(fuse_req_t req, fuse_ino_t ino,
			      struct fuse_file_info *fi)
{
	struct snapfs *fs = fs_of(req);
	struct node *n;
	struct stat st;
	int ret;

	(void)fi;
	if (stats_file_is(ino)) {
		stats_file_getattr(req, fs);
		return;
	}
	n = node_of(req, ino);
	ret = node_getattr(fs->nodes, n, &st);
	if (ret)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, attr_timeout_of(fs, n));
}

static void snapfs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct node_table *t = fs_of(req)->nodes;
	struct node *n = node_of(req, ino);
	char buf[PATH_MAX + 1];
	ssize_t len;
	int fd;

	if (n->kind != NODE_SYMLINK) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fd = node_fd_get(t, n);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	len = readlinkat(fd, "", buf, sizeof(buf));
	if (len < 0)
		len = -errno;
	node_fd_put(t, n);
	if (len < 0)
		fuse_reply_err(req, (int)-len);
	else if ((size_t)len >= sizeof(buf))
		fuse_reply_err(req, ENAMETOOLONG);
	else {
		buf[len] = '\0';
		fuse_reply_readlink(req, buf);
	}
}

/* ---- files ---- */

/*
 * The passthrough choice for an open of version n, whose view is v (access
 * already checked): its flat file if one is ready, else its one layer if
 * it has one, is the backing file (doc/design.md §19); a layered version
 * without a flat file takes the FUSE path, its pages cached by the kernel
 * for good (keep_cache: the version's bytes never change). An O_RDWR open
 * (rw, open_rw=private) always takes the FUSE path, or fails with -EBUSY
 * where the inode's other opens are passthrough. Returns 1 (passthrough),
 * 0 (the FUSE path), or -errno; unless it failed, the open is counted
 * (passthrough_release()).
 */
static int passthrough_view(fuse_req_t req, fuse_ino_t ino, struct node *n,
			    struct view *v, struct fuse_file_info *fi, bool rw)
{
	struct snapfs *fs = fs_of(req);
	int flat = -1, fd = -1, ret;

	/* The version's bytes never change; and without it the kernel
	 * would drop what the prefetch pushed (prefetch.h). */
	fi->keep_cache = 1;
	if (rw) {
		/* An O_RDWR open is direct_io on the FUSE path (§15), which
		 * an inode served by passthrough cannot mix with. */
		ret = passthrough_open(fs->pt, req, ino, PASSTHROUGH_NEVER, fi);
		if (ret == 1) {
			passthrough_release(fs->pt, req, ino);
			log_warn_rl("%s: O_RDWR open refused: the version is served "
				    "by passthrough to other opens; open it O_RDONLY",
				    n->path);
			return -EBUSY;
		}
		return ret;
	}
	if (passthrough_enabled(fs->pt)) {
		if (v->nlayers > 1)
			flatten_offer(fs->flatten, n, v);
		flat = flatten_fd(fs->flatten, n);
		fd = flat >= 0 ? flat : v->nlayers == 1 ? v->layers[0].fd : -1;
	}
	ret = passthrough_open(fs->pt, req, ino, fd, fi);
	if (flat >= 0)
		close(flat);	/* the kernel holds the backing file itself */
	return ret;
}

/*
 * Writes the mount's read-ahead window (struct snapfs) once, at the first
 * open: the kernel has taken the INIT reply by then, and a file's window
 * is fixed when its open returns, so even this open gets it. Without root
 * it stays the kernel's, with a warning if -o readahead_kb asked for it.
 */
static void readahead_apply(struct snapfs *fs)
{
	char val[16];
	int fd, len, err = 0;

	if (!__atomic_exchange_n(&fs->readahead_pending, false, __ATOMIC_ACQ_REL))
		return;
	len = snprintf(val, sizeof(val), "%u", fs->readahead_kb);
	fd = open(fs->readahead_path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, val, (size_t)len) != len)
		err = errno;
	if (fd >= 0)
		close(fd);
	if (err)
		snapfs_log(fs->readahead_asked ? FUSE_LOG_WARNING : FUSE_LOG_DEBUG,
			   "readahead_kb=%u: cannot set %s (%s): the kernel's window "
			   "stays", fs->readahead_kb, fs->readahead_path, strerror(err));
	else
		log_debug("readahead_kb=%u: set in %s", fs->readahead_kb,
			  fs->readahead_path);
}

static void snapfs_op_open(fuse_req_t req, fuse_ino_t ino,
			   struct fuse_file_info *fi)
{
	if (__atomic_load_n(&fs_of(req)->readahead_pending, __ATOMIC_ACQUIRE))
		readahead_apply(fs_of(req));
	struct snapfs *fs = fs_of(req);
	struct node *n;
	enum open_verdict how;
	int pt = 0, ret;

	if (stats_file_is(ino)) {
		stats_file_open(req, fs, fi);
		return;
	}
	n = node_of(req, ino);
	how = openmode_decide(fi->flags, n->kind == NODE_VIEW, fs->open_rw);
	if (how == OPEN_REFUSE) {
		if (n->kind == NODE_VIEW) {
			stats_add(STAT_OPENS_REFUSED_WRITE, 1);
			openmode_log_refusal(n->path, (uint32_t)fuse_req_ctx(req)->pid,
					     fi->flags, fs->open_rw);
		}
		fuse_reply_err(req, EROFS);
		return;
	}
	if (n->kind == NODE_VIEW) {
		struct view *v;

		/* A new open must never get an old version's bytes: if the
		 * chain moved on, -ESTALE makes the kernel look the name up
		 * again and open the new version. */
		ret = node_version_check(fs->nodes, n, (uint32_t)fuse_req_ctx(req)->pid);
		if (ret == 0)
			ret = node_view_open(fs->nodes, n,
					     (uint32_t)fuse_req_ctx(req)->pid, &v);
		if (ret) {
			fuse_reply_err(req, -ret);
			return;
		}
		/* Never wider than any layer: the requester must be able to
		 * read each file whose bytes this version serves. */
		ret = requester_may_read_view(req, v);
		if (ret) {
			node_view_close(fs->nodes, n, v);
			fuse_reply_err(req, -ret);
			return;
		}
		view_set_label(v, n->path);	/* unnamed in logs if it fails */
		pt = passthrough_view(req, ino, n, v, fi, how == OPEN_RW_DIRECT);
		ret = pt < 0 ? pt : fuse_handle_add(v, false);
		if (ret && pt >= 0)
			passthrough_release(fs->pt, req, ino);
		if (ret) {
			node_view_close(fs->nodes, n, v);
			fuse_reply_err(req, -ret);
			return;
		}
		fi->fh = fh_of_view(v);
		view_handle_hold(v);	/* a compaction may move its reads */
		/* O_RDWR for a private mapping: direct_io makes the kernel
		 * refuse MAP_SHARED on this open (doc/design.md §15). */
		fi->direct_io = how == OPEN_RW_DIRECT;
		stats_add(how == OPEN_RW_DIRECT ? STAT_OPENS_RW_PRIVATE : STAT_OPENS_VIEW, 1);
		stats_add(STAT_HANDLES_OPEN, 1);
		/* Counted before the reply: its release may come at once. A
		 * passthrough open needs no push (the backing file's page
		 * cache serves it). */
		if (!pt)
			prefetch_opened(fs->nodes, n, ino, v);
		if (fuse_reply_open(req, fi) != 0) {
			if (!pt)
				prefetch_released(fs->nodes, ino);
			passthrough_release(fs->pt, req, ino);
			fuse_handle_del(v);
			stats_sub(STAT_HANDLES_OPEN, 1);
			view_handle_put(v);
		}
		return;
	}
	if (n->kind == NODE_FILE) {
		ret = requester_may_node(req, n, R_OK);	/* O_RDONLY only */
		if (ret) {
			fuse_reply_err(req, -ret);
			return;
		}
	}
	ret = view_env_take_fd(fs->env);
	if (ret) {
		log_err_rl("%s: open refused: the budget of fds for open files is "
			   "spent (see fd_budget in snapfs(8))", n->name ? n->name : ".");
		fuse_reply_err(req, -ret);
		return;
	}
	ret = node_open_file(fs->nodes, n, fi->flags);
	if (ret < 0) {
		view_env_drop_fd(fs->env);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = fh_of_fd(ret);
	if (n->kind == NODE_FILE) {
		pt = passthrough_open(fs->pt, req, ino, ret, fi);
		if (pt < 0) {
			close(ret);
			view_env_drop_fd(fs->env);
			fuse_reply_err(req, -pt);
			return;
		}
	}
	if (fuse_reply_open(req, fi) != 0) {
		if (n->kind == NODE_FILE)
			passthrough_release(fs->pt, req, ino);
		close(ret);
		view_env_drop_fd(fs->env);
	}
}

static void snapfs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	struct view *v = fh_view(fi);

	if (stats_file_is(ino)) {
		stats_file_read(req, size, off, fi);
		return;
	}
	if (v) {
		struct snapfs *fs = fs_of(req);

		/* Held until the reply is sent: its pieces name the view's
		 * layer fds and mappings (see the top of this file). Once it
		 * is sent, the node may be gone (release and forget can come
		 * in at once): only the view is touched. */
		size_t sent;

		v = view_get_current(v);	/* moved by a compaction? */
		sent = fuse_read_view(req, fs, v, size, off);
		view_put(v);
		/* What the kernel now caches, the push need not copy again;
		 * an O_DIRECT read caches nothing. */
		if (sent && !(fi->flags & O_DIRECT))
			prefetch_served(fs->nodes, ino, (uint64_t)off, sent);
	} else {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);

		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = fh_fd(fi);
		bv.buf[0].pos = off;
		stats_add(STAT_READS_PLAIN, 1);
		stats_add(STAT_BYTES_PLAIN, size);	/* asked for; EOF may cut it */
		fuse_reply_data(req, &bv, 0);
	}
}

static void snapfs_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off,
			    int whence, struct fuse_file_info *fi)
{
	struct view *v = fh_view(fi);
	off_t res;

	if (stats_file_is(ino)) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	if (v) {
		v = view_get_current(v);
		res = view_seek(v, off, whence);
		view_put(v);
		if (res < 0)
			fuse_reply_err(req, (int)-res);
		else
			fuse_reply_lseek(req, res);
		return;
	}
	res = lseek(fh_fd(fi), off, whence);
	if (res < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, res);
}

static void snapfs_op_release(fuse_req_t req, fuse_ino_t ino,
			      struct fuse_file_info *fi)
{
	struct view *v = fh_view(fi);
	enum pt_released left;

	if (stats_file_is(ino)) {
		stats_file_release(req, fi);
		return;
	}
	/* Every open of a view or an ordinary file was counted (the mode
	 * of its inode); an uncounted inode is simply not found. The last
	 * open on the FUSE path of a version with a flat file leaves a page
	 * cache that no open will read again (unless they take the FUSE
	 * path too): dropped in the background, not by the next open
	 * (flatten.h). */
	left = passthrough_release(fs_of(req)->pt, req, ino);
	if (v && left != PT_OPENS_LEFT)
		flatten_fuse_closed(fs_of(req)->flatten, node_of(req, ino),
				    left == PT_CACHE_WANTED);
	if (v) {
		prefetch_released(fs_of(req)->nodes, ino);	/* ino: a key only */
		fuse_handle_del(v);
		stats_sub(STAT_HANDLES_OPEN, 1);
		view_handle_put(v);
	} else {
		close(fh_fd(fi));
		view_env_drop_fd(fs_of(req)->env);
	}
	fuse_reply_err(req, 0);
}

static void snapfs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	(void)ino;
#ifdef SNAPFS_FAULT_INJECTION
	/* A worker that never ends, not even when libfuse cancels it at the
	 * end of the session: the loop then waits for it forever, as for one
	 * stuck in libfuse (the loop guard in main.c, t-unmount). */
	if (getenv("SNAPFS_STATFS_STUCK")) {
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
		for (;;)
			pause();
	}
#endif
	if (fstatvfs(node_root(fs_of(req)->nodes)->fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

static void snapfs_op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	(void)ino;
	fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

/* ---- extended attributes ---- */

static ssize_t store_xattr(struct node_table *t, struct node *n, const char *name,
			   char *buf, size_t size, bool list)
{
	char path[PROC_FD_PATH_LEN];
	ssize_t ret;
	int fd;

	if (n->kind != NODE_FILE && n->kind != NODE_DIR)
		return list ? 0 : -ENODATA;
	fd = node_fd_get(t, n);
	if (fd < 0)
		return fd;
	proc_fd_path(path, fd);
	ret = list ? listxattr(path, buf, size) : getxattr(path, name, buf, size);
	if (ret < 0)
		ret = -errno;
	node_fd_put(t, n);
	return ret;
}

static void reply_xattr(fuse_req_t req, ssize_t ret, const char *buf, size_t size)
{
	if (ret < 0)
		fuse_reply_err(req, (int)-ret);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)ret);
	else
		fuse_reply_buf(req, buf, (size_t)ret);
}

static void snapfs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			       size_t size)
{
	struct snapfs *fs = fs_of(req);
	struct node *n = node_of(req, ino);
	char *buf;
	ssize_t ret;

	if (stats_file_is(ino)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (n->kind == NODE_VIEW)
		ret = xattr_get(fs->nodes, n, name, buf, size);
	else
		ret = store_xattr(fs_of(req)->nodes, n, name, buf, size, false);
	reply_xattr(req, ret, buf, size);
	free(buf);
}

static void snapfs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct node *n = node_of(req, ino);
	char *buf;
	ssize_t ret;

	if (stats_file_is(ino)) {
		if (size)
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_xattr(req, 0);
		return;
	}
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (n->kind == NODE_VIEW)
		ret = xattr_list(fs_of(req)->nodes, n, buf, size);
	else
		ret = store_xattr(fs_of(req)->nodes, n, NULL, buf, size, true);
	reply_xattr(req, ret, buf, size);
	free(buf);
}

/* ---- everything that would write: the mount is read-only ---- */

static void snapfs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			      int to_set, struct fuse_file_info *fi)
{
	(void)ino; (void)attr; (void)to_set; (void)fi;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
			    mode_t mode, dev_t rdev)
{
	(void)parent; (void)name; (void)mode; (void)rdev;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
			    mode_t mode)
{
	(void)parent; (void)name; (void)mode;
	fuse_reply_err(req, EROFS);
}

/* Rollback: only the highest diff of a chain may go (doc/format.md §2). */
static void snapfs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -node_unlink(fs_of(req)->nodes, node_of(req, parent), name));
}

static void snapfs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent; (void)name;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_symlink(fuse_req_t req, const char *link,
			      fuse_ino_t parent, const char *name)
{
	(void)link; (void)parent; (void)name;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
			     fuse_ino_t newparent, const char *newname,
			     unsigned int flags)
{
	(void)parent; (void)name; (void)newparent; (void)newname; (void)flags;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
			   const char *newname)
{
	(void)ino; (void)newparent; (void)newname;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
			     mode_t mode, struct fuse_file_info *fi)
{
	(void)parent; (void)name; (void)mode; (void)fi;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			       const char *value, size_t size, int flags)
{
	(void)ino; (void)name; (void)value; (void)size; (void)flags;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino; (void)name;
	fuse_reply_err(req, EROFS);
}

/* Reaches the daemon only through an O_RDWR open of a view under
 * open_rw=private: refused like every other change. */
static void snapfs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
			    size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino; (void)buf; (void)size; (void)off; (void)fi;
	fuse_reply_err(req, EROFS);
}

static void snapfs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
				off_t offset, off_t length, struct fuse_file_info *fi)
{
	(void)ino; (void)mode; (void)offset; (void)length; (void)fi;
	fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops snapfs_ops = {
	.init = snapfs_op_init,
	.lookup = snapfs_op_lookup,
	.forget = snapfs_op_forget,
	.forget_multi = snapfs_op_forget_multi,
	.getattr = snapfs_op_getattr,
	.readlink = snapfs_op_readlink,
	.opendir = snapfs_op_opendir,
	.readdir = snapfs_op_readdir,
	.readdirplus = snapfs_op_readdirplus,
	.releasedir = snapfs_op_releasedir,
	.open = snapfs_op_open,
	.read = snapfs_op_read,
	.write = snapfs_op_write,
	.lseek = snapfs_op_lseek,
	.release = snapfs_op_release,
	.statfs = snapfs_op_statfs,
	.access = snapfs_op_access,
	.getxattr = snapfs_op_getxattr,
	.listxattr = snapfs_op_listxattr,
	.setattr = snapfs_op_setattr,
	.mknod = snapfs_op_mknod,
	.mkdir = snapfs_op_mkdir,
	.unlink = snapfs_op_unlink,
	.rmdir = snapfs_op_rmdir,
	.symlink = snapfs_op_symlink,
	.rename = snapfs_op_rename,
	.link = snapfs_op_link,
	.create = snapfs_op_create,
	.setxattr = snapfs_op_setxattr,
	.removexattr = snapfs_op_removexattr,
	.fallocate = snapfs_op_fallocate,
};
