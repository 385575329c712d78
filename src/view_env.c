/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What views share (struct view_env): the open layer files, one fd per
 * distinct live layer however many versions and opens use it; the budget
 * of fds those and other open files may take; and, per filesystem, what
 * its holes look like (the probe of its hole granularity, and whether it
 * reports holes at all).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fsname.h"
#include "log.h"
#include "stats.h"
#include "view_priv.h"

struct probe {
	uint64_t dev;
	int result;		/* 0, or -errno of the probe */
	uint64_t gran;
	bool measured;		/* gran is the probe's, not a stand-in */
	bool no_holes;		/* the filesystem reports every file as all
				   data: said once (view_env_hides_holes()) */
};

static unsigned layer_bucket(const struct layer_id *id)
{
	uint64_t h = id->ino * 0x9e3779b97f4a7c15ULL ^ id->dev;

	return (unsigned)((h ^ (h >> 32)) % LAYER_BUCKETS);
}

/* Takes a reference on the open layer of identity id, or NULL. */
static struct layer_file *layer_find_get(struct view_env *env, const struct layer_id *id)
{
	struct layer_file *lf;

	pthread_mutex_lock(&env->lock);
	for (lf = env->layers[layer_bucket(id)]; lf; lf = lf->next)
		if (layer_id_equal(&lf->id, id))
			break;
	if (lf)
		lf->refs++;
	pthread_mutex_unlock(&env->lock);
	return lf;
}

/* Registers fd as the open layer of identity id, or, if another thread got
 * there first, closes fd and takes a reference on that one. NULL: ENOMEM. */
static struct layer_file *layer_insert(struct view_env *env, const struct layer_id *id, int fd)
{
	struct layer_file *lf = calloc(1, sizeof(*lf)), *o;

	if (!lf)
		return NULL;
	lf->id = *id;
	lf->fd = fd;
	lf->refs = 1;
	/*
	 * Replies are written from this mapping (one writev per request, one
	 * copy, however many layers a request spans). Only the kernel reads
	 * it, inside writev: a layer truncated by a misbehaving producer then
	 * fails that reply with EIO instead of raising SIGBUS here.
	 */
	if (env->map_layers && id->size > 0 && id->size <= SIZE_MAX) {
		lf->map = mmap(NULL, (size_t)id->size, PROT_READ, MAP_SHARED, fd, 0);
		if (lf->map == MAP_FAILED)
			lf->map = NULL;
		else	/* no read-around: it would fill a diff's holes with
			 * zero pages in the page cache */
			madvise(lf->map, (size_t)id->size, MADV_RANDOM);
	}
	pthread_mutex_lock(&env->lock);
	for (o = env->layers[layer_bucket(id)]; o; o = o->next)
		if (layer_id_equal(&o->id, id))
			break;
	if (o) {
		o->refs++;
	} else {
		lf->next = env->layers[layer_bucket(id)];
		env->layers[layer_bucket(id)] = lf;
		env->nlayers++;
		stats_add(STAT_LAYERS_OPEN, 1);
	}
	pthread_mutex_unlock(&env->lock);
	if (o) {
		if (lf->map)
			munmap(lf->map, (size_t)id->size);
		close(fd);
		free(lf);
		return o;
	}
	return lf;
}

void layer_file_put(struct view_env *env, struct layer_file *lf)
{
	bool last;

	pthread_mutex_lock(&env->lock);
	last = --lf->refs == 0;
	if (last) {
		struct layer_file **pp = &env->layers[layer_bucket(&lf->id)];

		while (*pp != lf)
			pp = &(*pp)->next;
		*pp = lf->next;
		env->nlayers--;
		stats_sub(STAT_LAYERS_OPEN, 1);
	}
	pthread_mutex_unlock(&env->lock);
	if (last) {
		if (lf->map)
			munmap(lf->map, (size_t)lf->id.size);
		close(lf->fd);
		free(lf);
	}
}

void view_env_map_layers(struct view_env *env, bool on)
{
	env->map_layers = on;
}

struct cache *view_env_cache(struct view_env *env)
{
	return env->cache;
}

void view_env_set_fd_budget(struct view_env *env, size_t budget)
{
	env->fd_budget = budget;
}

/* Whether more fds fit the budget now; env->lock held. */
static bool fds_fit_locked(const struct view_env *env, size_t more)
{
	return !env->fd_budget || env->nlayers + env->nplain + more <= env->fd_budget;
}

int view_env_take_fd(struct view_env *env)
{
	int ret = 0;

	pthread_mutex_lock(&env->lock);
	if (fds_fit_locked(env, 1))
		env->nplain++;
	else
		ret = -EMFILE;
	pthread_mutex_unlock(&env->lock);
	return ret;
}

void view_env_drop_fd(struct view_env *env)
{
	pthread_mutex_lock(&env->lock);
	env->nplain--;
	pthread_mutex_unlock(&env->lock);
}

bool view_env_fds_plenty(struct view_env *env)
{
	bool plenty;

	pthread_mutex_lock(&env->lock);
	plenty = !env->fd_budget || (env->nlayers + env->nplain) * 2 <= env->fd_budget;
	pthread_mutex_unlock(&env->lock);
	return plenty;
}

/* -EMFILE, with the cause in why, if n more layers would not fit. */
int view_env_check_budget(struct view_env *env, size_t n, char *why, size_t len)
{
	size_t used;
	bool fit;

	pthread_mutex_lock(&env->lock);
	fit = fds_fit_locked(env, n);
	used = env->nlayers + env->nplain;
	pthread_mutex_unlock(&env->lock);
	if (fit)
		return 0;
	snprintf(why, len, "%zu more layer(s) would pass the budget of fds for "
		 "open files (%zu of %zu in use; see fd_budget in snapfs(8))",
		 n, used, env->fd_budget);
	return -EMFILE;
}

size_t view_env_open_layers(struct view_env *env)
{
	size_t n;

	pthread_mutex_lock(&env->lock);
	n = env->nlayers;
	pthread_mutex_unlock(&env->lock);
	return n;
}

struct view_env *view_env_new(struct cache *cache, unsigned page_size)
{
	struct view_env *env = calloc(1, sizeof(*env));

	if (!env)
		return NULL;
	env->cache = cache;
	env->page_size = page_size;
	pthread_mutex_init(&env->lock, NULL);
	pthread_cond_init(&env->builders_done, NULL);
	pthread_mutex_init(&env->views_lock, NULL);
	return env;
}

void view_env_free(struct view_env *env)
{
	if (!env)
		return;
	/* A builder may hold the last reference of a view nobody wants any
	 * more; it lets go (touching the layer table) before it counts
	 * itself out. */
	pthread_mutex_lock(&env->lock);
	while (env->builders)
		pthread_cond_wait(&env->builders_done, &env->lock);
	pthread_mutex_unlock(&env->lock);
	pthread_cond_destroy(&env->builders_done);
	pthread_mutex_destroy(&env->lock);
	pthread_mutex_destroy(&env->views_lock);
	free(env->probes);
	free(env);
}

/* The one line for a filesystem that reports no holes (how is how we
 * know); fd is any file on it. */
static void log_no_holes(int fd, const char *how)
{
	char fs[512];

	fsname_describe(fd, fs, sizeof(fs));
	log_err("filesystem %s reports no holes (%s): SEEK_DATA finds every "
		"file all data, so every diff there looks dense and no chain "
		"with diffs can be served; keep STORE on a filesystem that "
		"reports holes (doc/distributed.md)", fs, how);
}

/*
 * True if dense diff fd (of device dev) shows that its filesystem hides
 * holes: its map is one extent over the whole file, yet it occupies fewer
 * blocks than its size. Logged once per device (with the probe's verdict,
 * when a probe could be made, this is already known).
 */
bool view_env_hides_holes(struct view_env *env, int fd, uint64_t dev)
{
	bool first, known = false, measured = false;
	struct stat st;

	pthread_mutex_lock(&env->lock);
	for (size_t i = 0; i < env->nprobes; i++) {
		if (env->probes[i].dev != dev)
			continue;
		known = env->probes[i].no_holes;
		measured = env->probes[i].measured;
		break;
	}
	pthread_mutex_unlock(&env->lock);
	/* A probe that saw holes outweighs block counts (a compressing
	 * filesystem counts fewer blocks than a dense file's size). */
	if (known || measured)
		return known;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_blocks * 512 + env->page_size >=
	    (uint64_t)st.st_size)
		return false;
	/* Said by whoever records it first; with no record to keep it in
	 * (the probe's was not stored: no memory), said each time. */
	first = true;
	pthread_mutex_lock(&env->lock);
	for (size_t i = 0; i < env->nprobes; i++) {
		if (env->probes[i].dev == dev) {
			first = !env->probes[i].no_holes;
			env->probes[i].no_holes = true;
		}
	}
	pthread_mutex_unlock(&env->lock);
	if (first)
		log_no_holes(fd, "a diff that occupies fewer blocks than its "
			     "size scans as data from end to end");
	return true;
}

/*
 * Hole granularity of the filesystem of dirfd, probed once per device.
 * Two threads may probe the same device at once; both results are equal
 * and the second is simply not recorded.
 */
int view_env_granularity(struct view_env *env, int dirfd, int difffd,
			   uint64_t dev, uint64_t *gran)
{
	struct probe pr = { .dev = dev };

	pthread_mutex_lock(&env->lock);
	for (size_t i = 0; i < env->nprobes; i++) {
		if (env->probes[i].dev == dev) {
			pr = env->probes[i];
			pthread_mutex_unlock(&env->lock);
			*gran = pr.gran;
			return pr.result;
		}
	}
	pthread_mutex_unlock(&env->lock);

	pr.result = extent_probe_granularity(dirfd, env->page_size, &pr.gran);
	pr.measured = pr.result == 0;
	if (pr.result) {
		struct stat st;

		/* A read-only store cannot be probed: fall back on the block
		 * size a diff advertises (XFS: its block size; tmpfs with huge
		 * pages: the huge page size), not the directory's. */
		pr.gran = fstat(difffd, &st) == 0 && st.st_blksize > 0 ?
			  (uint64_t)st.st_blksize : env->page_size;
		log_warn("cannot probe hole granularity of the store's filesystem "
			 "(device %u:%u): %s; trusting its block size (%llu) instead",
			 major(dev), minor(dev), strerror(-pr.result),
			 (unsigned long long)pr.gran);
		pr.result = 0;
	}
	if (pr.gran >= EXTENT_PROBE_SIZE) {
		/* Not coarse holes: none at all (sshfs, some FUSE and SMB
		 * setups). One line for the filesystem, none per chain. */
		pr.no_holes = true;
		log_no_holes(difffd, "its scratch file, one page written, "
			     "reads back as data from end to end");
	} else if (pr.gran > env->page_size) {
		char fs[512];

		fsname_describe(difffd, fs, sizeof(fs));
		log_warn("filesystem %s reports holes in units of %llu bytes, "
			 "coarser than the %u-byte page: diffs there cannot be "
			 "served", fs, (unsigned long long)pr.gran, env->page_size);
	}

	pthread_mutex_lock(&env->lock);
	{
		struct probe *np = realloc(env->probes, (env->nprobes + 1) * sizeof(*np));

		if (np) {
			env->probes = np;
			env->probes[env->nprobes++] = pr;
		}
	}
	pthread_mutex_unlock(&env->lock);
	*gran = pr.gran;
	return pr.result;
}

static int layer_check(const struct stat *st, const char *fname, char *why, size_t len)
{
	if (S_ISLNK(st->st_mode)) {
		snprintf(why, len, "layer %s is a symbolic link "
			 "(layers are never followed)", fname);
		return -EIO;
	}
	if (!S_ISREG(st->st_mode)) {
		snprintf(why, len, "layer %s is not a regular file", fname);
		return -EIO;
	}
	return 0;
}

/*
 * Opens layer l->fname of dirfd into l, sharing the fd of an identical layer
 * another view holds. The identity is taken from the open fd itself, so a
 * file replaced between the stat and the open is seen as what was opened.
 */
int layer_file_open(struct view_env *env, int dirfd, struct view_layer *l,
			   char *why, size_t len)
{
	const char *fname = l->fname;
	struct layer_id id;
	struct stat st;
	int fd, ret;

	if (fstatat(dirfd, fname, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		ret = layer_check(&st, fname, why, len);
		if (ret)
			return ret;
		layer_id_from_stat(&id, &st);
		l->lf = layer_find_get(env, &id);
		if (l->lf) {
			l->fd = l->lf->fd;
			l->map = l->lf->map;
			l->id = id;
			return 0;
		}
	}

	fd = layer_open(dirfd, fname, true, &st);
	if (fd < 0) {
		int e = -fd;

		if (e == EMFILE || e == ENFILE || e == ENOMEM) {
			snprintf(why, len, "cannot open layer %s: %s", fname, strerror(e));
			return -e;	/* the process's trouble, not the chain's */
		}
		if (e == ELOOP)
			snprintf(why, len, "layer %s is a symbolic link "
				 "(layers are never followed)", fname);
		else if (e == EFTYPE_LAYER)
			snprintf(why, len, "layer %s is not a regular file", fname);
		else
			snprintf(why, len, "cannot open layer %s: %s", fname,
				 strerror(e));
		return -EIO;
	}
	layer_id_from_stat(&l->id, &st);
	l->lf = layer_insert(env, &l->id, fd);
	if (!l->lf) {
		close(fd);
		return -ENOMEM;
	}
	l->fd = l->lf->fd;
	l->map = l->lf->map;
	return 0;
}
