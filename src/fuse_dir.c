/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Directory requests. opendir checks the requester's access and takes the
 * directory's listing from its index (node_list_dir(): STORE read once);
 * readdir and readdirplus answer from that listing, which stays as it was
 * at opendir; releasedir lets it go. Part of the FUSE side (fuse_priv.h).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuse_priv.h"
#include "memtrim.h"
#include "names.h"
#include "stats.h"

void snapfs_op_opendir(fuse_req_t req, fuse_ino_t ino,
			      struct fuse_file_info *fi)
{
	struct snapfs *fs = fs_of(req);
	struct node *n = node_of(req, ino);
	struct dir_handle *d;
	int ret;

	ret = requester_may_node(req, n, R_OK);
	if (ret) {
		fuse_reply_err(req, -ret);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = node_list_dir(fs->nodes, n, &d->l);
	if (ret) {
		free(d);
		fuse_reply_err(req, -ret);
		return;
	}
	ret = fuse_handle_add(d, true);
	if (ret) {
		dir_handle_free(d);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uintptr_t)d;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi) != 0) {
		fuse_handle_del(d);
		dir_handle_free(d);
	}
}

static bool is_dot(const char *name)
{
	return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

/*
 * Listings longer than this get no attributes in the first readdirplus.
 * The kernel asks for readdirplus at offset 0 whatever the caller does
 * next (its "auto" mode), and attributes mean a lookup, a stat of the
 * STORE file, per entry: for the first 200 entries of a big cold
 * directory that was a tenth of an `ls -f` or `find` that never looks at
 * them. An entry without attributes is only a name to the kernel; a
 * caller that stats gets each of those by a lookup, and the rest of the
 * listing by readdirplus again (the kernel switches to it once lookups
 * come). Small directories keep readdirplus whole: `ls -l` of a
 * snapshot's directory is one request.
 */
#define PLUS_BARE_FIRST 1024

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct snapfs *fs = fs_of(req);
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	struct node *dir = node_of(req, ino);
	bool bare = plus && off == 0 && d->l.count > PLUS_BARE_FIRST;
	char *buf, *p;
	size_t rem = size;

	buf = p = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (size_t i = (size_t)off; i < d->l.count; i++) {
		struct node_dirent de;
		struct stat st;
		size_t len;

		if (!node_listing_get(&d->l, i, &de))
			continue;	/* hidden */
		st = (struct stat){ .st_ino = de.ino, .st_mode = (mode_t)de.d_type << 12 };
		if (stats_file_name(ino, de.name))
			continue;	/* shadowed by the counters file, unlisted */
		if (plus && !bare && !is_dot(de.name)) {
			struct node *n;
			struct fuse_entry_param e = { 0 };
			int ret = node_lookup(fs->nodes, dir, de.name,
					      (uint32_t)fuse_req_ctx(req)->pid, &n, &st);

			if (ret == -ENOENT)
				continue;	/* gone since opendir */
			if (ret) {
				if (p == buf) {
					free(buf);
					fuse_reply_err(req, -ret);
					return;
				}
				break;
			}
			e.ino = ino_of(fs, n);
			e.attr = st;
			e.attr_timeout = attr_timeout_of(fs, n);
			e.entry_timeout = entry_timeout_of(fs, dir);
			len = fuse_add_direntry_plus(req, p, rem, de.name, &e, (off_t)i + 1);
			if (len > rem) {
				node_forget(fs->nodes, n, 1);
				break;
			}
		} else if (plus) {
			struct fuse_entry_param e = { .attr = st };

			len = fuse_add_direntry_plus(req, p, rem, de.name, &e, (off_t)i + 1);
			if (len > rem)
				break;
		} else {
			len = fuse_add_direntry(req, p, rem, de.name, &st, (off_t)i + 1);
			if (len > rem)
				break;
		}
		p += len;
		rem -= len;
	}
	fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

void snapfs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			      off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

void snapfs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
				  off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

void snapfs_op_releasedir(fuse_req_t req, fuse_ino_t ino,
				 struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;

	(void)ino;
	fuse_handle_del(d);
	dir_handle_free(d);
	fuse_reply_err(req, 0);
	memtrim_note();		/* the listing's refresh retired versions */
}
