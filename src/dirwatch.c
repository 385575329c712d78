/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which directories are watched, and what an inotify event means for the
 * kernel's cache (doc/format.md §2: a published layer shows without a
 * remount). One inotify instance (watch.c) gives one watch descriptor per
 * directory inode; a hash maps descriptors to directory nodes. An event
 * for an entry invalidates the kernel's entry for it and, for a layer, for
 * its layered NAME; a queue overflow marks every index stale and
 * invalidates every layered name. Directories on filesystems whose changes
 * can come from elsewhere (NFS, CephFS, FUSE, ...) are not watched: their
 * names live only `revalidate` seconds in the kernel.
 *
 * A layer file deleted or moved away also queues its directory for a
 * sweep, a second later, on the watcher's thread (dirwatch_tick()): the
 * hook dir_sweep (names.c's node_dir_sweep(), given to dirwatch_start())
 * reads the directory again and retires the versions of names left with
 * no layer, as the next lookup or listing there would. Without it a
 * deleted name's version, and the flat file that shares its layers'
 * blocks, stayed until something looked in that directory again, which
 * for a deleted directory is never (doc/design.md §19.6).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/statfs.h>

#include "dirwatch.h"
#include "log.h"
#include "memtrim.h"
#include "monotime.h"
#include "node_priv.h"
#include "store.h"
#include "watch.h"

static void wd_unlink_locked(struct node_table *t, struct node *dir)
{
	struct node **pp = &t->wd_buckets[(unsigned)dir->wd % WD_BUCKETS];

	while (*pp && *pp != dir)
		pp = &(*pp)->wdnext;
	if (*pp)
		*pp = dir->wdnext;
	dir->wdnext = NULL;
}

static struct node *wd_find_locked(struct node_table *t, int wd)
{
	struct node *d = t->wd_buckets[(unsigned)wd % WD_BUCKETS];

	while (d && d->wd != wd)
		d = d->wdnext;
	return d;
}

/*
 * Removes the inotify watch wd of a directory node being destroyed, unless
 * another node of the same directory took it over meanwhile: inotify gives
 * one wd per inode, so a directory looked up again under a new node (after
 * the kernel forgot the old one) is handed the very same wd, and removing
 * it would leave the new node believing it is watched. watch_lock makes
 * the check and the removal one step against dir_watch_locked()'s add and
 * registration.
 */
static void dir_unwatch(struct node_table *t, int wd)
{
	bool taken;

	pthread_mutex_lock(&t->watch_lock);
	pthread_mutex_lock(&t->lock);
	taken = wd_find_locked(t, wd) != NULL;
	pthread_mutex_unlock(&t->lock);
	if (!taken)
		watch_remove(t->watch, wd);
	pthread_mutex_unlock(&t->watch_lock);
}

/* Hook: directory node dir leaves the table; table lock held. */
static void dir_released_locked(struct node_table *t, struct node *dir)
{
	if (dir->wd > 0)
		wd_unlink_locked(t, dir);
}

/* Hook: directory node dir is about to be freed; no lock held. */
static void dir_destroyed(struct node_table *t, struct node *dir)
{
	if (dir->wd > 0 && t->watch)
		dir_unwatch(t, dir->wd);
}

/* Filesystems whose changes can come from elsewhere, unseen by inotify. */
static bool fs_is_remote(int fd)
{
	struct statfs sf;

	if (fstatfs(fd, &sf) < 0)
		return false;
	switch ((unsigned long)sf.f_type) {
	case 0x6969:		/* NFS */
	case 0x517b:		/* SMB */
	case 0xff534d42:	/* CIFS */
	case 0xfe534d42:	/* SMB2 */
	case 0x65735546:	/* FUSE */
	case 0x00c36400:	/* Ceph */
	case 0x01021997:	/* 9p */
	case 0x01161970:	/* GFS2 */
	case 0x7461636f:	/* OCFS2 */
	case 0x47504653:	/* GPFS */
	case 0x5346414f:	/* AFS */
		return true;
	default:
		return false;
	}
}

void dirwatch_add_locked(struct node_table *t, struct node *dir, int fd)
{
	int wd;

	if (!t->watch || fs_is_remote(fd)) {
		dir->wd = -1;
		return;
	}
	pthread_mutex_lock(&t->watch_lock);
	wd = watch_add(t->watch, fd);
	pthread_mutex_lock(&t->lock);
	if (wd < 0) {
		dir->wd = -1;
		if (!t->watch_limit_logged) {
			t->watch_limit_logged = true;
			pthread_mutex_unlock(&t->lock);
			pthread_mutex_unlock(&t->watch_lock);
			log_warn("%s: cannot watch for changes (%s)%s; names there "
				 "are revalidated by timeout", dir->path[0] ? dir->path : ".",
				 strerror(-wd), wd == -ENOSPC ? ": raise "
				 "fs.inotify.max_user_watches" : "");
			return;
		}
	} else {
		/* One inotify instance gives one wd per inode: a directory
		 * seen again under a new node takes the mapping over. */
		struct node *prev = wd_find_locked(t, wd);

		if (prev && prev != dir) {
			wd_unlink_locked(t, prev);
			prev->wd = -1;
		}
		if (prev != dir) {
			dir->wd = wd;
			dir->wdnext = t->wd_buckets[(unsigned)wd % WD_BUCKETS];
			t->wd_buckets[(unsigned)wd % WD_BUCKETS] = dir;
		}
	}
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_unlock(&t->watch_lock);
}

bool dirwatch_watched(struct node_table *t, struct node *dir)
{
	(void)t;
	return dir->kind == NODE_DIR && dir->wd > 0;
}

/* What to invalidate for one event: the entry itself and, for a layer,
 * its layered NAME. */
struct inval_item {
	uint64_t parent;
	char *name;
};

/* Invalidations being collected: items[0..n) of cap. */
struct inval_list {
	struct node_table *t;
	struct inval_item *items;
	size_t n, cap;
	bool failed;		/* out of memory */
};

/* Adds the name of version v (table lock held). */
static void add_version_item(struct node *v, void *arg)
{
	struct inval_list *c = arg;

	if (c->failed)
		return;
	if (c->n == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 64;
		struct inval_item *ni = realloc(c->items, nc * sizeof(*ni));

		if (!ni) {
			c->failed = true;
			return;
		}
		c->items = ni;
		c->cap = nc;
	}
	c->items[c->n].parent = node_id(c->t, v->parent);
	c->items[c->n].name = strdup(v->name);
	if (c->items[c->n].name)
		c->n++;
}

/* How long after a layer file goes its directory is swept: the rest of a
 * burst (rm -rf, a compaction's prune) goes in the same sweep. */
#define SWEEP_DELAY_MS 1000

/* Queues dir for a sweep (at most one queued per directory, referenced
 * while queued). Table lock held. */
static void sweep_queue_locked(struct node_table *t, struct node *dir)
{
	if (dir->sweep_at)
		return;
	dir->sweep_at = mono_ns() + SWEEP_DELAY_MS * 1000000LL;
	dir->refs++;
	dir->sweepnext = t->sweeps;
	t->sweeps = dir;
}

/* The watcher's tick: sweeps the directories that are due; returns the
 * milliseconds until the next one is, or -1. */
static int dirwatch_tick(void *ctx)
{
	struct node_table *t = ctx;
	struct node *due = NULL, **pp;
	int64_t now = mono_ns(), next = -1;
	bool swept;

	pthread_mutex_lock(&t->lock);
	for (pp = &t->sweeps; *pp;) {
		struct node *d = *pp;

		if (d->sweep_at <= now) {
			*pp = d->sweepnext;
			d->sweep_at = 0;
			d->sweepnext = due;
			due = d;
			continue;
		}
		if (next < 0 || d->sweep_at - now < next)
			next = d->sweep_at - now;
		pp = &d->sweepnext;
	}
	pthread_mutex_unlock(&t->lock);
	swept = due != NULL;
	while (due) {
		struct node *d = due;

		due = d->sweepnext;
		d->sweepnext = NULL;
		if (t->hooks.dir_sweep)
			t->hooks.dir_sweep(t, d);
		node_unref(t, d);
	}
	if (swept)
		memtrim_note();	/* versions and views may have gone */
	return next < 0 ? -1 : (int)(next / 1000000) + 1;
}

static void watch_event(void *ctx, int wd, const char *name, uint32_t mask)
{
	struct node_table *t = ctx;
	struct inval_list c = { .t = t };
	struct inval_item *items = NULL;
	size_t n = 0;
	bool overflow = false;

	pthread_mutex_lock(&t->lock);
	if (wd < 0) {
		/* Queue overflow: every index is suspect, every layered name
		 * may have a new chain. The root is the one directory that is
		 * not in the hash. */
		for (size_t b = 0; b <= t->nbuckets; b++) {
			struct node *d = b < t->nbuckets ? t->buckets[b] : t->root;

			for (; d; d = b < t->nbuckets ? d->hnext : NULL) {
				if (d->kind != NODE_DIR)
					continue;
				d->index_stale = true;
				vindex_each_locked(d, add_version_item, &c);
			}
		}
		overflow = true;
		items = c.items;
		n = c.n;
	} else {
		struct node *d = wd_find_locked(t, wd);
		struct store_name sn;

		if (!d)
			goto out_locked;
		if (mask & IN_IGNORED) {	/* directory gone or unwatched */
			wd_unlink_locked(t, d);
			d->wd = -1;
			goto out_locked;
		}
		/* Only entries coming and going change the index; a write
		 * or attribute change is seen by the identity check of the
		 * next lookup. */
		if (mask & (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
			    IN_DELETE_SELF | IN_MOVE_SELF))
			d->index_stale = true;
		if (!name[0])
			goto out_locked;
		items = calloc(2, sizeof(*items));
		if (!items)
			goto out_locked;
		items[n].parent = node_id(t, d);
		items[n].name = strdup(name);
		if (items[n].name)
			n++;
		if (store_parse_name(name, &sn)) {
			if (mask & (IN_DELETE | IN_MOVED_FROM))
				sweep_queue_locked(t, d);
			items[n].parent = node_id(t, d);
			items[n].name = strndup(name, sn.name_len);
			if (items[n].name)
				n++;
		}
	}
out_locked:
	pthread_mutex_unlock(&t->lock);
	if (overflow)
		log_warn("change watcher: event queue overflowed; every layered "
			 "file is checked again");
	/* The kernel may wait on a directory lock a request holds: never
	 * invalidate with a lock of ours held. */
	for (size_t i = 0; i < n; i++) {
		t->inval(t->inval_ctx, items[i].parent, items[i].name);
		free(items[i].name);
	}
	free(items);
}

int dirwatch_start(struct node_table *t, void (*sweep)(struct node_table *t, struct node *dir))
{
	int ret;

	if (!t->inval)
		return -EINVAL;
	t->hooks.dir_sweep = sweep;
	t->hooks.dir_released_locked = dir_released_locked;
	t->hooks.dir_destroyed = dir_destroyed;
	ret = watch_start(watch_event, dirwatch_tick, t, &t->watch);
	if (ret)
		log_warn("cannot watch STORE for changes: %s; names are "
			 "revalidated by timeout", strerror(-ret));
	return ret;
}

void dirwatch_stop(struct node_table *t)
{
	struct watch *w = t->watch;
	struct node *d;

	t->watch = NULL;	/* before stopping: destroy paths test it */
	watch_stop(w);
	/* Sweeps still queued: their references go, the sweeps with them. */
	pthread_mutex_lock(&t->lock);
	d = t->sweeps;
	t->sweeps = NULL;
	pthread_mutex_unlock(&t->lock);
	while (d) {
		struct node *next = d->sweepnext;

		d->sweep_at = 0;
		d->sweepnext = NULL;
		node_unref(t, d);
		d = next;
	}
}
