/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Kernel FUSE passthrough (Linux >= 6.9, libfuse >= 3.17): an open file
 * whose bytes are exactly one backing file is answered with
 * FOPEN_PASSTHROUGH, and the kernel then reads, splices and maps the
 * backing file itself: no request per read or fault reaches the daemon, and
 * the page cache is the backing file's, shared by every open.
 *
 * The kernel's rule shapes this module: an inode is open either all
 * through passthrough, to one backing file, or all through the page cache
 * of the FUSE inode; an open of the other kind while any is open fails
 * with EIO. So the mode is decided per inode when its first open comes
 * (no open of it is left), and every later open follows it until the last
 * one is released: one backing id per inode, shared by its opens and
 * closed at the last release (doc/design.md §19).
 *
 * Like fuse_ops.c, this file speaks FUSE; it is part of the daemon only.
 */
#ifndef SNAPFS_PASSTHROUGH_H
#define SNAPFS_PASSTHROUGH_H

#include <fuse_lowlevel.h>
#include <stdbool.h>

struct passthrough;

/* The per-mount state; want is -o passthrough (auto: true). NULL on ENOMEM. */
struct passthrough *passthrough_new(bool want);
void passthrough_free(struct passthrough *pt);

/*
 * In the FUSE init callback: asks for FUSE_CAP_PASSTHROUGH if wanted and
 * possible. Where it is not (this libfuse lacks it, the kernel does not
 * offer it), logs one line saying why and leaves every open on the FUSE
 * path.
 */
void passthrough_init(struct passthrough *pt, struct fuse_conn_info *conn);

/* True if passthrough may still serve opens (not off, nothing ruled it out
 * for the whole mount). */
bool passthrough_enabled(const struct passthrough *pt);

/*
 * For an open of inode ino that succeeded so far (access checked), about
 * to be replied to: fd is the file that holds exactly the bytes the open
 * must see (a view of one layer, a flat file, a plain file), or -1 if no
 * one file does. If ino has opens already, this one follows their mode; if
 * not, the mode is chosen now: passthrough to fd when it can, else the
 * FUSE path, with one log line for a cause that rules passthrough out
 * (daemon without CAP_SYS_ADMIN, backing file on FUSE or overlayfs, the
 * kernel refuses). Sets fi->backing_id (and clears fi->keep_cache) for a
 * passthrough open. Every call must be matched by passthrough_release()
 * for ino (also when the open reply fails). Returns 1 for passthrough, 0
 * for the FUSE path, or -ENOMEM (nothing counted: fail the open, which
 * could otherwise not be kept apart from the inode's other opens).
 */
int passthrough_open(struct passthrough *pt, fuse_req_t req, fuse_ino_t ino,
		      int fd, struct fuse_file_info *fi);

/* passthrough_open()'s fd for an open that is never served by passthrough
 * (an O_RDWR open under open_rw=private): like -1, and the inode's opens
 * of this round then count as ones whose successors read its page cache
 * again (a VMM restarted from the same version). */
#define PASSTHROUGH_NEVER (-2)

/* What the release of an inode's open leaves (passthrough_release()). */
enum pt_released {
	PT_OPENS_LEFT,		/* not its last open, or it was passthrough */
	PT_CACHE_UNUSED,	/* its last open, on the FUSE path for want of
				   a backing file: the next may be served by
				   passthrough, and not read its page cache */
	PT_CACHE_WANTED,	/* its last open, on the FUSE path where
				   passthrough is off or refused the backing
				   file, or with a PASSTHROUGH_NEVER open
				   among them: the next ones would read its
				   page cache */
};

/* An open of ino counted by passthrough_open() is gone; the last one
 * closes the inode's backing id. */
enum pt_released passthrough_release(struct passthrough *pt, fuse_req_t req,
				     fuse_ino_t ino);

/* How many opens of ino are counted, of either mode. */
unsigned passthrough_opens(struct passthrough *pt, fuse_ino_t ino);

#endif
