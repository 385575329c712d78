/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a directory of the mount shows (doc/format.md §3): a lookup finds a
 * layered NAME's current version (version.c) or else the STORE entry of
 * that name, held by an O_PATH fd and known by its (dev, ino); a listing
 * shows STORE's entries, minus plain entries a layered NAME hides and the
 * compactor's staging files, plus one entry per layered NAME; attributes
 * and opens of plain files go to STORE's file itself. The one write the
 * mount allows is here too: rollback by unlinking the highest diff of a
 * chain (doc/format.md §2), under the directory's rollback lock.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compact.h"
#include "dirlock.h"
#include "log.h"
#include "names.h"
#include "node_priv.h"
#include "procfd.h"
#include "version.h"

static enum node_kind kind_of(mode_t mode)
{
	if (S_ISDIR(mode))
		return NODE_DIR;
	if (S_ISREG(mode))
		return NODE_FILE;
	if (S_ISLNK(mode))
		return NODE_SYMLINK;
	return NODE_OTHER;
}

/*
 * Records that entry n is now known as name in dir (a rename, or another
 * hard link): its fd is opened again from there. Table lock held; returns
 * the directory n held before if the caller must unref it (after
 * unlocking), else NULL.
 */
static struct node *entry_rename_locked(struct node *n, struct node *dir,
					 const char *name)
{
	struct node *old = n->parent;
	char *copy;

	if (old == dir && strcmp(n->name, name) == 0)
		return NULL;
	copy = strdup(name);
	if (!copy)
		return NULL;	/* keeps the old name; a reopen may say ESTALE */
	free(n->name);
	n->name = copy;
	dir->refs++;
	n->parent = dir;
	return old;
}

/*
 * The node of STORE entry st, named name in dir, with one more lookup
 * count: the one already in the table, or else fresh (if given), inserted
 * with a count of 1. NULL if neither. Takes the table lock.
 */
static struct node *take_known(struct node_table *t, struct node *dir,
			       const char *name, const struct stat *st,
			       struct node *fresh)
{
	struct node *n, *old = NULL;

	pthread_mutex_lock(&t->lock);
	n = node_find_locked(t, st->st_dev, st->st_ino);
	if (n) {
		n->nlookup++;
		if (n != t->root)
			old = entry_rename_locked(n, dir, name);
	} else if (fresh) {
		fresh->nlookup = 1;
		dir->refs++;
		fresh->parent = dir;
		node_hash_insert_locked(t, fresh);
		n = fresh;
	}
	pthread_mutex_unlock(&t->lock);
	if (old)
		node_unref(t, old);
	return n;
}

int node_lookup(struct node_table *t, struct node *parent, const char *name,
		uint32_t pid, struct node **out, struct stat *st)
{
	struct node *n, *fresh;
	int fd, ret;

	if (parent->kind != NODE_DIR)
		return -ENOTDIR;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strchr(name, '/') ||
	    compact_is_tmp(name) || dirlock_is_lockfile(name))
		return -ENOENT;

	for (int tries = 0;; tries++) {
		bool retry;

		ret = version_get(t, parent, name, 1, pid, out, st);
		if (ret)
			break;
		pthread_mutex_lock(&t->lock);
		retry = version_retry_marked_locked(*out, pid);
		pthread_mutex_unlock(&t->lock);
		if (!retry)
			return 0;
		/*
		 * This lookup is the kernel's retry of an open that got
		 * ESTALE: its open comes next and must find the version's
		 * layers, which a rollback could delete meanwhile. Open them
		 * now (the version keeps its view); if they are gone already,
		 * the version is too: look again.
		 */
		ret = node_view_pin(t, *out, pid);
		if (ret != -ESTALE || tries == 8)
			return 0;	/* the open reports any other trouble */
		node_forget(t, *out, 1);
	}
	if (ret != -ENOENT)
		return ret;

	/* No fd yet: one is opened when the entry is first used
	 * (node_fd_get()), so what the kernel remembers costs no fds. */
	fd = node_fd_get(t, parent);
	if (fd < 0)
		return fd;
	ret = fstatat(fd, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
	node_fd_put(t, parent);
	if (ret)
		return ret;

	n = take_known(t, parent, name, st, NULL);
	if (n) {
		*out = n;
		return 0;
	}

	fresh = node_alloc(kind_of(st->st_mode));
	if (!fresh)
		return -ENOMEM;
	fresh->dev = st->st_dev;
	fresh->ino = st->st_ino;
	fresh->name = strdup(name);
	if (!fresh->name ||
	    (fresh->kind == NODE_DIR && !(fresh->path = node_path_join(parent, name)))) {
		node_destroy(fresh);
		return -ENOMEM;
	}

	/* Another thread may have inserted the same inode meanwhile. */
	n = take_known(t, parent, name, st, fresh);
	if (n != fresh)
		node_destroy(fresh);
	*out = n;
	return 0;
}

int node_getattr(struct node_table *t, struct node *n, struct stat *st)
{
	int fd, ret;

	if (n->kind == NODE_VIEW) {
		*st = n->vattr;
		return 0;
	}
	fd = node_fd_get(t, n);
	if (fd < 0)
		return fd;
	ret = fstat(fd, st) < 0 ? -errno : 0;
	node_fd_put(t, n);
	return ret;
}

void node_listing_free(struct node_listing *l)
{
	store_dir_free(l->idx);
	free(l->ino);
	*l = (struct node_listing){ 0 };
}

bool node_listing_get(const struct node_listing *l, size_t pos, struct node_dirent *de)
{
	const struct store_dir *idx = l->idx;

	if (pos < idx->nentries) {
		const struct store_entry *e = &idx->entries[pos];

		/* hidden: named like a NAME, a staging file, the lock file */
		if (e->named || compact_is_tmp(e->name) || dirlock_is_lockfile(e->name))
			return false;
		*de = (struct node_dirent){ .name = e->name, .d_type = e->d_type,
					    .ino = e->ino };
		return true;
	}
	pos -= idx->nentries;
	*de = (struct node_dirent){ .name = idx->groups[pos].name, .d_type = DT_REG,
				    .ino = l->ino[pos] };
	return true;
}

int node_list_dir(struct node_table *t, struct node *n, struct node_listing *out)
{
	struct node_listing l = { 0 };
	const struct store_dir *idx;
	int ret;

	if (n->kind != NODE_DIR)
		return -ENOTDIR;
	pthread_mutex_lock(&n->lock);
	ret = dir_refresh_locked(t, n, false);
	if (ret)
		goto out;
	version_retire_gone_locked(t, n);
	/* The directory's entries as its index read them: the refresh
	 * rescans whenever the directory may have changed since, so this is
	 * what a readdir would return now, without a second read of a big
	 * directory. A plain entry named like a layered file is hidden by
	 * it; compaction staging files and the lock file are not shown at
	 * all. */
	idx = l.idx = store_dir_get(n->index);
	l.ino = malloc((idx->ngroups ? idx->ngroups : 1) * sizeof(*l.ino));
	if (!l.ino) {
		ret = -ENOMEM;
		goto out;
	}
	/* Layered names come after the real entries, with the inode numbers
	 * their versions have or will have: no layer is looked at, so a
	 * listing costs what reading STORE's directory does. */
	for (size_t i = 0; !ret && i < idx->ngroups; i++)
		ret = version_listed_ino_locked(t, n, &idx->groups[i], &l.ino[i]);
	l.count = idx->nentries + idx->ngroups;
out:
	pthread_mutex_unlock(&n->lock);
	if (ret) {
		node_listing_free(&l);
		return ret;
	}
	*out = l;
	return 0;
}

int node_dir_index(struct node_table *t, struct node *n)
{
	int ret;

	if (n->kind != NODE_DIR)
		return -ENOTDIR;
	pthread_mutex_lock(&n->lock);
	ret = dir_refresh_locked(t, n, false);
	pthread_mutex_unlock(&n->lock);
	return ret;
}

void node_dir_sweep(struct node_table *t, struct node *n)
{
	struct stat st;
	bool gone;
	int fd;

	if (n->kind != NODE_DIR)
		return;
	pthread_mutex_lock(&n->lock);
	fd = node_fd_get(t, n);
	gone = fd == -ESTALE || fd == -ENOENT ||
	       (fd >= 0 && fstat(fd, &st) == 0 && st.st_nlink == 0);
	if (fd >= 0)
		node_fd_put(t, n);
	if (!gone && fd >= 0) {
		int ret = dir_refresh_locked(t, n, false);

		if (ret == 0)
			version_retire_gone_locked(t, n);
		gone = ret == -ESTALE;	/* moved out of STORE */
	}
	if (gone)
		version_retire_all_locked(t, n);
	pthread_mutex_unlock(&n->lock);
}

int node_open_file(struct node_table *t, struct node *n, int flags)
{
	char path[PROC_FD_PATH_LEN];
	int fd, pfd;

	if (n->kind != NODE_FILE)
		return n->kind == NODE_DIR ? -EISDIR : -EACCES;
	pfd = node_fd_get(t, n);
	if (pfd < 0)
		return pfd;
	/* The reopen goes through the magic link of the O_PATH fd, which is
	 * the very file looked up (never a symlink): O_NOFOLLOW would refuse
	 * the link itself with ELOOP (cp -a, tar open with it). */
	proc_fd_path(path, pfd);
	flags = (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_NOFOLLOW)) | O_CLOEXEC;
	fd = open(path, flags);
	if (fd < 0 && (errno == EMFILE || errno == ENFILE) && node_fd_shed(t))
		fd = open(path, flags);
	fd = fd < 0 ? -errno : fd;
	node_fd_put(t, n);
	return fd;
}

/* How long a rollback through the mount waits for the directory's rollback
 * lock (a compaction holds it for a few system calls; a producer may hold
 * it longer) before it fails with EAGAIN. */
#define UNLINK_LOCK_WAIT_MS 10000

int node_unlink(struct node_table *t, struct node *dir, const char *name)
{
	const struct store_group *g;
	const struct store_layer *top = NULL, *l = NULL;
	struct store_name sn;
	struct dirlock lk;
	char *nm = NULL;
	bool removed = false;
	int dfd, ret;

	if (dir->kind != NODE_DIR)
		return -ENOTDIR;
	if (!store_parse_name(name, &sn))
		return -EROFS;		/* a view or an ordinary entry */
	nm = strndup(name, sn.name_len);
	if (!nm)
		return -ENOMEM;

	/* The rollback lock first (lock order): a compaction merging this
	 * diff is either abandoned (its check comes after the unlink) or
	 * already published (the diff is then gone or no longer the top). */
	dfd = node_fd_get(t, dir);
	if (dfd < 0) {
		free(nm);
		return dfd;
	}
	ret = dirlock_acquire(dfd, UNLINK_LOCK_WAIT_MS, NULL, &lk);
	if (ret) {
		node_fd_put(t, dir);
		log_warn("%s%s%s: cannot roll back: the directory's rollback lock: %s",
			 dir->path, dir->path[0] ? "/" : "", name,
			 ret == -EWOULDBLOCK ? "held elsewhere for too long" :
			 strerror(-ret));
		free(nm);
		return ret == -EWOULDBLOCK ? -EAGAIN : ret;
	}
	pthread_mutex_lock(&dir->lock);
	ret = dir_refresh_locked(t, dir, true);
	g = ret ? NULL : store_dir_find(dir->index, nm);
	if (!ret && g) {
		for (size_t i = 0; i < g->nlayers; i++)
			if (strcmp(g->layers[i].fname, name) == 0)
				l = &g->layers[i];
		top = &g->layers[g->nlayers - 1];
	}
	if (!ret && !l) {
		ret = -ENOENT;
	} else if (!ret && (l != top || l->kind != STORE_DIFF || l->overflow ||
		   (g->nlayers > 1 && g->layers[g->nlayers - 2].seq == l->seq))) {
		/* Only the newest diff can go: anything else would change a
		 * chain's content in the middle, not roll it back. */
		ret = -EBUSY;
	} else if (!ret && unlinkat(dfd, name, 0) < 0) {
		ret = -errno;
	} else if (!ret) {
		removed = true;
	}
	pthread_mutex_unlock(&dir->lock);
	/* Durable before the answer: a rollback that returned success stays
	 * done across a crash. The directory's mutex is not held for it. */
	if (ret == 0 && (ret = dirlock_sync_dir(&lk)))
		log_err("%s%s%s: removed, but the directory cannot be synced: %s",
			dir->path, dir->path[0] ? "/" : "", name, strerror(-ret));
	dirlock_release(&lk);
	node_fd_put(t, dir);

	if (ret == -EBUSY)
		log_info_rl("%s%s%s: refusing to unlink: only the highest diff of a "
			    "chain may be removed (rollback)", dir->path,
			    dir->path[0] ? "/" : "", name);
	else if (ret == 0)
		log_info("%s%s%s: removed: %s rolled back by one layer", dir->path,
			 dir->path[0] ? "/" : "", name, nm);
	if (removed) {
		pthread_mutex_lock(&t->lock);
		dir->index_stale = true;
		pthread_mutex_unlock(&t->lock);
	}
	free(nm);
	return ret;
}
