/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Building one flat file (doc/design.md §19.3, steps 4-6): the base
 * reflinked or copied, the diffs' ranges applied with the compactor's
 * copier. Library code, no FUSE; the flattener's thread calls it with no
 * lock held.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "copy.h"
#include "flatten_priv.h"
#include "log.h"

/* Free space kept beyond a flat file's own data: a flat file must never
 * be what fills the store's filesystem. */
#define FLAT_SLACK (64ULL << 20)

/* Bytes of v's view that its diffs serve. */
static uint64_t diff_bytes(const struct view *vw)
{
	uint64_t n = 0;

	for (size_t i = 0; i < vw->nseg; i++)
		if (vw->seg[i].layer >= 1)
			n += vw->seg[i + 1].off - vw->seg[i].off;
	return n;
}

/* Shares the base into out (FICLONE); false where the filesystem cannot. */
static bool reflink_base(int out, int base)
{
#ifdef HAVE_FICLONE
	return ioctl(out, FICLONE, base) == 0;
#else
	(void)out; (void)base;
	return false;
#endif
}

/* Whether the filesystem of out has room for need more bytes and slack. */
static int check_space(int out, uint64_t need, char *cause, size_t len)
{
	struct statvfs sv;
	uint64_t avail;

	if (fstatvfs(out, &sv) < 0)
		return -errno;
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (avail >= need + need / 16 + FLAT_SLACK)
		return 0;
	snprintf(cause, len, "not enough free space (needs %" PRIu64 " MiB and "
		 "%llu MiB to spare, %" PRIu64 " MiB free)", need >> 20,
		 FLAT_SLACK >> 20, avail >> 20);
	return -ENOSPC;
}

/* The base's data ranges into out, for a filesystem that cannot share them. */
static int copy_base(struct cache *cache, struct copier *c, const struct view *vw, int out)
{
	const struct view_layer *b = &vw->layers[0];
	struct cache_entry *ce;
	int ret;

	ret = cache_get(cache, b->fd, &b->id, b->fname, &ce);
	if (ret)
		return ret;
	ret = copier_base(c, b->fd, out, cache_entry_map(ce), vw->size);
	cache_put(cache, ce);
	return ret;
}

/* Every range the diffs serve, from the layer that serves it. */
static int apply_diffs(struct copier *c, const struct view *vw, int out)
{
	for (size_t i = 0; i < vw->nseg; i++) {
		int32_t l = vw->seg[i].layer;
		int ret;

		if (l < 1)
			continue;	/* the base's (already there) or a hole */
		ret = copier_range(c, vw->layers[l].fd, out, vw->seg[i].off,
				   vw->seg[i + 1].off - vw->seg[i].off, vw->size);
		if (ret)
			return ret;
	}
	return 0;
}

int flat_build(struct cache *cache, bool need_reflink, dev_t *noreflink_dev,
	       const int *stop, int dirfd, const char *path,
	       const struct view *vw, char *cause, size_t len)
{
	struct copier c = { 0 };
	struct stat st;
	bool shared;
	int out, ret;

	out = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (out < 0) {
		ret = -errno;
		snprintf(cause, len, "cannot create an unnamed file in the "
			 "directory: %s", strerror(-ret));
		return ret;
	}
	shared = reflink_base(out, vw->layers[0].fd);
	if (!shared && need_reflink) {
		if (fstat(out, &st) == 0 &&
		    st.st_dev != __atomic_load_n(noreflink_dev, __ATOMIC_RELAXED)) {
			__atomic_store_n(noreflink_dev, st.st_dev, __ATOMIC_RELAXED);
			log_info("flatten: the filesystem of %s cannot reflink its "
				 "bases; its versions are not flattened "
				 "(-o flatten=always copies them)", path);
		}
		close(out);
		return 0;
	}
	ret = check_space(out, shared ? diff_bytes(vw) : vw->data_bytes, cause, len);
	if (ret == 0)
		ret = copier_init(&c, 0, stop);
	if (ret == 0 && fstat(out, &st) < 0)
		ret = -errno;
	if (ret == 0) {
		copier_prepare(&c, out, st.st_blksize);
		if (!shared)
			ret = copy_base(cache, &c, vw, out);
	}
	if (ret == 0)
		ret = apply_diffs(&c, vw, out);
	copier_release(&c);
	if (ret) {
		if (!cause[0])
			snprintf(cause, len, "%s", strerror(-ret));
		close(out);
		return ret;
	}
	return out;
}
