/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A directory's index of layered files (store.h's struct store_dir), kept
 * in its node and rebuilt when the directory changed, and the check that
 * a directory is still inside STORE before anything is read or written
 * there (doc/format.md §3).
 *
 * The index is trusted while the directory's mtime and ctime are those
 * seen at the scan and the scan began clearly after that mtime: a change in
 * the same timestamp tick as the scan would otherwise go unseen (RACY_NS).
 * The watcher (dirwatch.c) marks an index stale at once; without a watch,
 * the times alone tell, and they are then fetched afresh from the
 * filesystem's server on every check (dir_times()): a network filesystem
 * serves a directory's times from its attribute cache for up to a minute,
 * and a publish made on another host would stay unseen for that long.
 *
 * Inode numbers that listings promised to names not yet looked up
 * (node.index_ino, version.c) move to the new index with the groups whose
 * layer files are unchanged by name.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "compact.h"
#include "log.h"
#include "node_priv.h"
#include "store.h"

/* A directory index younger than this after the directory's mtime may have
 * missed a change made in the same timestamp tick; it is rescanned. */
#define RACY_NS 20000000LL

/* The same where the times come from another host's clock (unwatched
 * directories: a network filesystem): clocks that agree within this less
 * a timestamp tick cannot hide a change (doc/distributed.md). */
#define RACY_REMOTE_NS 1000000000LL

/*
 * True if directory dir is still inside STORE: walking up through ".."
 * from it reaches STORE's root. A directory moved out of STORE (mv
 * STORE/vm1 /elsewhere) keeps its node while the kernel remembers it, and
 * nothing may be written, deleted or read there any more. Called before
 * every write or delete in a directory and whenever its index is rebuilt;
 * a moved directory's ctime changes, so a rebuild follows a move.
 */
bool dir_in_store(struct node_table *t, struct node *dir)
{
	bool inside;
	int fd;

	if (dir == t->root)
		return true;
	fd = node_fd_get(t, dir);
	if (fd < 0)	/* its name leads elsewhere now: not where it was */
		return false;
	inside = store_dir_inside(fd, t->root->dev, t->root->ino);
	node_fd_put(t, dir);
	return inside;
}

void dir_moved_out(struct node_table *t, struct node *dir)
{
	bool first;

	pthread_mutex_lock(&t->lock);
	first = !dir->moved_out;
	dir->moved_out = true;
	pthread_mutex_unlock(&t->lock);
	if (first)
		log_warn("%s: the directory was moved out of STORE: nothing in it "
			 "is served, written or removed any more", dir->path);
}

static bool ts_eq(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/*
 * The modification and change times of directory dir (its fd pinned: fd).
 * Where no watch sees its changes, never from a cache: AT_STATX_FORCE_SYNC
 * makes NFS, CephFS, SMB and FUSE ask their server (one round trip; on a
 * local filesystem it costs what fstat does). A changed directory then also
 * has its cached listing dropped by the client, so the scan that follows
 * sees it fresh.
 */
static int dir_times(const struct node *dir, int fd, struct timespec *mtim,
		     struct timespec *ctim)
{
	struct statx stx;
	struct stat st;

	if (dir->wd > 0) {
		if (fstat(fd, &st) < 0)
			return -errno;
		*mtim = st.st_mtim;
		*ctim = st.st_ctim;
		return 0;
	}
	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC,
		  STATX_MTIME | STATX_CTIME, &stx) < 0)
		return -errno;
	mtim->tv_sec = stx.stx_mtime.tv_sec;
	mtim->tv_nsec = stx.stx_mtime.tv_nsec;
	ctim->tv_sec = stx.stx_ctime.tv_sec;
	ctim->tv_nsec = stx.stx_ctime.tv_nsec;
	return 0;
}

/* True if groups a and b hold the same layer files, by name. */
static bool same_layers(const struct store_group *a, const struct store_group *b)
{
	if (a->nlayers != b->nlayers)
		return false;
	for (size_t i = 0; i < a->nlayers; i++)
		if (strcmp(a->layers[i].fname, b->layers[i].fname) != 0)
			return false;
	return true;
}

/*
 * The inode numbers promised by listings (node.index_ino) for the groups
 * of the new index idx: a group whose layers are the files the old index
 * had under the same NAME keeps its promise, so that a rescan for another
 * name's sake cannot make the next lookup disagree with a listing already
 * given out. A changed chain loses it (the listing is stale anyway). Sets
 * *out to NULL if nothing is promised. Returns 0 or -ENOMEM.
 */
static int carry_promises(const struct node *dir, const struct store_dir *idx,
			  uint64_t **out)
{
	uint64_t *ino;

	*out = NULL;
	if (!dir->index_ino || !idx->ngroups)
		return 0;
	ino = calloc(idx->ngroups, sizeof(*ino));
	if (!ino)
		return -ENOMEM;
	for (size_t i = 0; i < idx->ngroups; i++) {
		const struct store_group *g = &idx->groups[i];
		const struct store_group *old = store_dir_find(dir->index, g->name);

		if (old && same_layers(old, g))
			ino[i] = dir->index_ino[old - dir->index->groups];
	}
	*out = ino;
	return 0;
}

/* Whether idx lists a compaction's staging file. */
static bool has_staging(const struct store_dir *idx)
{
	for (size_t i = 0; i < idx->nentries; i++)
		if (compact_is_tmp(idx->entries[i].name))
			return true;
	return false;
}

/* dir_refresh_locked() with the directory's fd pinned. */
static int refresh(struct node_table *t, struct node *dir, int fd, bool force)
{
	struct store_dir *idx;
	uint64_t *ino;
	struct timespec now, mtim, ctim;
	long long racy;
	bool stale;
	int ret;

	/* Watch before the first scan, so no change falls between them. */
	if (dir->wd == 0)
		dirwatch_add_locked(t, dir, fd);
	pthread_mutex_lock(&t->lock);
	stale = dir->index_stale;
	dir->index_stale = false;
	pthread_mutex_unlock(&t->lock);
	ret = dir_times(dir, fd, &mtim, &ctim);
	if (ret)
		return ret;
	racy = dir->wd > 0 ? RACY_NS : RACY_REMOTE_NS;
	if (!force && !stale && dir->index && ts_eq(&mtim, &dir->index_mtime) &&
	    ts_eq(&ctim, &dir->index_ctime) &&
	    ts_ns(&dir->index_scanned) - ts_ns(&mtim) > racy)
		return 0;

	if (!dir_in_store(t, dir)) {
		/* Not ENOENT: a lookup would then try the name as a plain
		 * entry, outside STORE. */
		dir_moved_out(t, dir);
		return -ESTALE;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	ret = store_dir_scan(fd, &idx);
	if (ret)
		return ret;
	if (!dir->index && has_staging(idx)) {
		/* First look at this directory since the start: staging files
		 * of a compaction that a crash interrupted are garbage. Then
		 * the index is read again, without them. */
		int n = compact_cleanup(fd);

		if (n > 0)
			log_info("%s: removed %d staging file(s) of an interrupted "
				 "compaction", dir->path[0] ? dir->path : ".", n);
		store_dir_free(idx);
		clock_gettime(CLOCK_REALTIME, &now);
		ret = store_dir_scan(fd, &idx);
		if (ret)
			return ret;
	}
	ret = carry_promises(dir, idx, &ino);
	if (ret) {
		store_dir_free(idx);
		return ret;
	}
	for (size_t i = 0; i < idx->ngroups; i++) {
		const struct store_group *g = &idx->groups[i];
		bool known = dir->index && store_dir_find(dir->index, g->name);

		if (g->shadows_plain && !known)
			log_warn("%s%s%s: a plain entry of this name is hidden "
				 "by the layered file of the same name", dir->path,
				 dir->path[0] ? "/" : "", g->name);
	}
	store_dir_free(dir->index);
	free(dir->index_ino);
	dir->index = idx;
	dir->index_ino = ino;
	dir->index_mtime = mtim;
	dir->index_ctime = ctim;
	dir->index_scanned = now;
	dir->index_gen++;
	return 0;
}

int dir_refresh_locked(struct node_table *t, struct node *dir, bool force)
{
	int fd, ret;

	fd = node_fd_get(t, dir);
	if (fd < 0)
		return fd;
	ret = refresh(t, dir, fd, force);
	node_fd_put(t, dir);
	return ret;
}
