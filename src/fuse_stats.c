/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The counters file, MOUNTPOINT/.snapfs-stats (doc/format.md §3, "Names
 * snapfs owns"): a read-only file at the mount's root, not listed, whose
 * text is the counters of stats.h as "name value" lines. The FUSE side of
 * it is here so that fuse_ops.c only asks stats_file_is() and hands over.
 *
 * Its node id is STATS_FILE_INO, which no node can have (node ids are
 * node addresses, and the root is 1). Each open takes a snapshot of the
 * text, read from the handle, so `cat` sees one consistent rendering; it is
 * opened direct_io, so the size getattr reports (the length of a fresh
 * rendering) never cuts a read short.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuse_ops.h"
#include "stats.h"

#define STATS_FILE_INO 2

/* One rendering of the counters, held by an open file handle. */
struct stats_text {
	struct stats_text *next;	/* on the released list */
	struct timespec released;	/* CLOCK_MONOTONIC */
	size_t len;
	char buf[];
};

/*
 * Texts of released handles, freed only once they have been released for
 * RELEASED_KEEP_S: the kernel may still have a read of the handle in
 * flight when its release comes in (direct I/O reads can be sent
 * asynchronously, and a short first reply ends the application's read),
 * and that read must find the text. Freed at the next open or release
 * after that, and at exit.
 */
#define RELEASED_KEEP_S 2
static pthread_mutex_t released_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stats_text *released;	/* newest first; released_lock */

/* Frees the released texts older than RELEASED_KEEP_S (all with all). */
static void reap_released(bool all)
{
	struct stats_text *old = NULL, **pp;
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&released_lock);
	for (pp = &released; *pp; pp = &(*pp)->next) {
		if (all || now.tv_sec - (*pp)->released.tv_sec > RELEASED_KEEP_S) {
			old = *pp;	/* the rest of the list is older */
			*pp = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&released_lock);
	while (old) {
		struct stats_text *next = old->next;

		free(old);
		old = next;
	}
}

void stats_file_free_released(void)
{
	reap_released(true);
}

bool stats_file_is(fuse_ino_t ino)
{
	return ino == STATS_FILE_INO;
}

bool stats_file_name(fuse_ino_t parent, const char *name)
{
	return parent == FUSE_ROOT_ID && strcmp(name, STATS_FILE_NAME) == 0;
}

/* Renders the counters into a new buffer, growing it until they fit. */
static struct stats_text *render(struct snapfs *fs)
{
	struct cache_stats cs;
	size_t cap = 4096;

	cache_get_stats(fs->cache, &cs);
	for (;;) {
		struct stats_text *t = malloc(sizeof(*t) + cap);
		size_t need;

		if (!t)
			return NULL;
		need = stats_format(t->buf, cap, &cs);
		if (need < cap) {
			t->len = need;
			return t;
		}
		free(t);
		cap = need + 1;
	}
}

static void fill_attr(struct stat *st, size_t size)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = STATS_FILE_INO;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_size = (off_t)size;
	st->st_blksize = 4096;
}

void stats_file_lookup(fuse_req_t req, struct snapfs *fs)
{
	struct stats_text *t = render(fs);
	struct fuse_entry_param e = {
		.ino = STATS_FILE_INO,
		.attr_timeout = 0,
		.entry_timeout = 86400.0,	/* the name never goes */
	};

	if (!t) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fill_attr(&e.attr, t->len);
	free(t);
	fuse_reply_entry(req, &e);
}

void stats_file_getattr(fuse_req_t req, struct snapfs *fs)
{
	struct stats_text *t = render(fs);
	struct stat st;

	if (!t) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fill_attr(&st, t->len);
	free(t);
	fuse_reply_attr(req, &st, 0);
}

void stats_file_open(fuse_req_t req, struct snapfs *fs, struct fuse_file_info *fi)
{
	struct stats_text *t;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	reap_released(false);
	t = render(fs);
	if (!t) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)t;
	fi->direct_io = 1;
	if (fuse_reply_open(req, fi) != 0)
		free(t);
}

void stats_file_read(fuse_req_t req, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	const struct stats_text *t = (const struct stats_text *)(uintptr_t)fi->fh;

	if (off < 0 || (size_t)off >= t->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > t->len - (size_t)off)
		size = t->len - (size_t)off;
	fuse_reply_buf(req, t->buf + off, size);
}

void stats_file_release(fuse_req_t req, struct fuse_file_info *fi)
{
	struct stats_text *t = (struct stats_text *)(uintptr_t)fi->fh;

	clock_gettime(CLOCK_MONOTONIC, &t->released);
	pthread_mutex_lock(&released_lock);
	t->next = released;
	released = t;
	pthread_mutex_unlock(&released_lock);
	reap_released(false);
	fuse_reply_err(req, 0);
}
