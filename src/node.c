/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The inode table and the versions of layered files (see node.h for the
 * model).
 *
 * Lock order: a directory's rollback lock (the flock of dirlock.h, which
 * is not a mutex of ours and is shared with other processes), then a
 * directory's node.lock, then a version's node.lock, then
 * node_table.watch_lock (only around adding or removing an inotify watch),
 * then node_table.lock; never the other way round. Only rollbacks
 * (node_unlink()) and the compactor take the rollback lock; lookups never
 * do, so a producer holding it from a shell blocks no read. The compactor
 * holds the directory's node.lock only around the rename of a new base and
 * the update of the version's identity, so lookups wait at most for that.
 * The table
 * lock guards only memory (hash chains, counts, version lists) and is never
 * held across I/O, close() or the freeing of a node: nodes to free are
 * unlinked under the lock and destroyed after it is dropped.
 *
 * Why a version can be compared by identity alone: layers are immutable once
 * published (SPEC §2), so two lookups that find the same layer files with the
 * same (dev, ino, size, mtime) see the same content. A producer that breaks
 * the rule moves the mtime, which makes a new version too; a chmod, chown,
 * setxattr or link moves only the ctime and changes no byte.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "compact.h"
#include "dirlock.h"
#include "log.h"
#include "node.h"
#include "watch.h"

/* First synthetic inode number: the high bit keeps versions clear of the
 * inode numbers STORE's filesystems hand out. */
#define VINO_BASE (1ULL << 63)

/* A directory index younger than this after the directory's mtime may have
 * missed a change made in the same timestamp tick; it is rescanned. */
#define RACY_NS 20000000LL

/* Watch descriptors to directories: a small chained hash. */
#define WD_BUCKETS 1024

struct node_table {
	pthread_mutex_t lock;
	struct node **buckets;		/* protected by lock */
	size_t nbuckets;
	size_t count;			/* protected by lock */
	uint64_t next_vino;		/* protected by lock */
	struct node *root;
	struct view_env *env;
	struct watch *watch;		/* NULL: timeouts only */
	node_inval_fn inval;
	void *inval_ctx;
	struct node *wd_buckets[WD_BUCKETS];	/* protected by lock */
	pthread_mutex_t watch_lock;	/* serializes adding a watch and
					   registering it against removing
					   one; taken before lock */
	bool watch_limit_logged;	/* protected by lock */

	/* Background compaction (SPEC §6). */
	struct compact_opts copts;
	bool compacting;		/* the thread runs */
	pthread_t cthread;
	pthread_cond_t ccond;		/* signals cjobs or cstop */
	struct cjob *cjobs;		/* protected by lock */
	int cstop;			/* atomic; also protected by lock */
};

/* A version waiting for the compactor; holds a reference on it. */
struct cjob {
	struct node *v;
	struct cjob *next;
};

static size_t hash_of(const struct node_table *t, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;

	return (size_t)(h ^ (h >> 29)) & (t->nbuckets - 1);
}

static struct node *node_alloc(enum node_kind kind)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->kind = kind;
	n->fd = -1;
	pthread_mutex_init(&n->lock, NULL);
	return n;
}

static void node_destroy(struct node *n)
{
	if (n->fd >= 0)
		close(n->fd);
	store_dir_free(n->index);
	if (n->view)
		view_put(n->view);
	for (size_t i = 0; i < n->nlayers; i++)
		free(n->layer_names[i]);
	free(n->layer_names);
	free(n->layer_ids);
	free(n->error);
	free(n->build_error);
	free(n->crefused);
	free(n->name);
	free(n->path);
	pthread_mutex_destroy(&n->lock);
	free(n);
}

int node_table_new(const char *store, struct view_env *env, node_inval_fn inval,
		   void *inval_ctx, struct node_table **out)
{
	struct node_table *t;
	struct node *root;
	struct stat st;

	t = calloc(1, sizeof(*t));
	root = node_alloc(NODE_DIR);
	if (!t || !root)
		goto nomem;
	t->nbuckets = 4096;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	root->path = strdup("");
	if (!t->buckets || !root->path)
		goto nomem;
	root->fd = open(store, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root->fd < 0 || fstat(root->fd, &st) < 0) {
		int e = errno;

		node_destroy(root);
		free(t->buckets);
		free(t);
		return -e;
	}
	root->dev = st.st_dev;
	root->ino = st.st_ino;
	root->nlookup = 1;
	root->refs = 1;
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->watch_lock, NULL);
	t->next_vino = VINO_BASE;
	t->root = root;
	t->env = env;
	t->inval = inval;
	t->inval_ctx = inval_ctx;
	*out = t;
	return 0;
nomem:
	if (root)
		node_destroy(root);
	if (t)
		free(t->buckets);
	free(t);
	return -ENOMEM;
}

void node_table_free(struct node_table *t)
{
	if (!t)
		return;
	node_table_stop_compact(t);
	watch_stop(t->watch);
	/* Versions reference their directories: free them first. Every node
	 * but the root is in the hash, current or not. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t b = 0; b < t->nbuckets; b++) {
			struct node **pp = &t->buckets[b];

			while (*pp) {
				struct node *n = *pp;

				if ((n->kind == NODE_VIEW) == (pass == 0)) {
					*pp = n->hnext;
					node_destroy(n);
				} else {
					pp = &n->hnext;
				}
			}
		}
	}
	node_destroy(t->root);
	free(t->buckets);
	pthread_mutex_destroy(&t->watch_lock);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* Called with t->lock held. */
static void hash_insert_locked(struct node_table *t, struct node *n)
{
	size_t b = hash_of(t, n->dev, n->ino);

	n->hnext = t->buckets[b];
	t->buckets[b] = n;
	t->count++;
}

struct node *node_root(struct node_table *t)
{
	return t->root;
}

/* STORE-relative path of child name in dir, for log lines. */
static char *path_join(const struct node *dir, const char *name)
{
	char *p;

	if (!dir->path[0])
		return strdup(name);
	return asprintf(&p, "%s/%s", dir->path, name) < 0 ? NULL : p;
}

/* ---- reference counting ---- */

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
 * Called with t->lock held: unlinks n if nothing holds it any more and
 * returns true if the caller must destroy it (after unlocking). The current
 * version of a name is kept even then, dormant: the name keeps its inode
 * number and its remembered error until its chain changes.
 */
static bool release_locked(struct node_table *t, struct node *n)
{
	if (n->nlookup || n->refs || n == t->root)
		return false;
	if (n->kind == NODE_VIEW && n->current)
		return false;
	if (n->kind == NODE_DIR && n->wd > 0)
		wd_unlink_locked(t, n);
	{
		struct node **pp = &t->buckets[hash_of(t, n->dev, n->ino)];

		while (*pp && *pp != n)
			pp = &(*pp)->hnext;
		if (*pp)
			*pp = n->hnext;
		t->count--;
	}
	return true;
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

/* Destroys n and drops the reference it held on its parent, repeatedly. */
static void destroy_chain(struct node_table *t, struct node *n)
{
	while (n) {
		struct node *parent = n->kind == NODE_VIEW ? n->parent : NULL;
		bool more = false;

		if (n->kind == NODE_DIR && n->wd > 0 && t->watch)
			dir_unwatch(t, n->wd);
		node_destroy(n);
		if (!parent)
			break;
		pthread_mutex_lock(&t->lock);
		parent->refs--;
		more = release_locked(t, parent);
		pthread_mutex_unlock(&t->lock);
		n = more ? parent : NULL;
	}
}

void node_forget(struct node_table *t, struct node *n, uint64_t nlookup)
{
	bool dead, dormant;

	pthread_mutex_lock(&t->lock);
	n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
	dead = release_locked(t, n);
	dormant = !dead && n->kind == NODE_VIEW && !n->nlookup && !n->refs;
	if (dormant)
		n->refs++;	/* keeps it while we drop its view */
	pthread_mutex_unlock(&t->lock);
	if (dead) {
		destroy_chain(t, n);
	} else if (dormant) {
		/* The kernel no longer knows this version: close its layers
		 * (open handles hold their own references to the view). A
		 * later lookup and open build the view again. */
		struct view *v;

		pthread_mutex_lock(&n->lock);
		v = n->view;
		n->view = NULL;
		pthread_mutex_unlock(&n->lock);
		view_put(v);
		node_unref(t, n);
	}
}

uint64_t node_id(const struct node_table *t, const struct node *n)
{
	return n == t->root ? 1 : (uint64_t)(uintptr_t)n;
}

void node_ref(struct node_table *t, struct node *n)
{
	pthread_mutex_lock(&t->lock);
	n->refs++;
	pthread_mutex_unlock(&t->lock);
}

void node_unref(struct node_table *t, struct node *n)
{
	bool dead;

	pthread_mutex_lock(&t->lock);
	n->refs--;
	dead = release_locked(t, n);
	pthread_mutex_unlock(&t->lock);
	if (dead)
		destroy_chain(t, n);
}

/* ---- directory index ---- */

/*
 * True if directory dir is still inside STORE: walking up through ".."
 * from it reaches STORE's root. A directory moved out of STORE (mv
 * STORE/vm1 /elsewhere) keeps its node while the kernel remembers it, and
 * nothing may be written, deleted or read there any more. Called before
 * every write or delete in a directory and whenever its index is rebuilt;
 * a moved directory's ctime changes, so a rebuild follows a move.
 */
static bool dir_in_store(struct node_table *t, const struct node *dir)
{
	return dir == t->root || store_dir_inside(dir->fd, t->root->dev, t->root->ino);
}

/* Logs, once per directory node, that dir left STORE. */
static void dir_moved_out(struct node_table *t, struct node *dir)
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

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static bool ts_eq(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/*
 * Brings dir->index up to date; called with dir->lock held. The index is
 * trusted while the directory's mtime and ctime are those seen at the scan,
 * and the scan started clearly after that mtime (a change within the same
 * timestamp tick as the scan would otherwise go unseen).
 */
static void dir_watch_locked(struct node_table *t, struct node *dir);

static int dir_refresh_locked(struct node_table *t, struct node *dir, bool force)
{
	struct store_dir *idx;
	struct timespec now;
	struct stat st;
	bool stale;
	int ret;

	/* Watch before the first scan, so no change falls between them. */
	if (dir->wd == 0)
		dir_watch_locked(t, dir);
	pthread_mutex_lock(&t->lock);
	stale = dir->index_stale;
	dir->index_stale = false;
	pthread_mutex_unlock(&t->lock);
	if (fstat(dir->fd, &st) < 0)
		return -errno;
	if (!force && !stale && dir->index && ts_eq(&st.st_mtim, &dir->index_mtime) &&
	    ts_eq(&st.st_ctim, &dir->index_ctime) &&
	    ts_ns(&dir->index_scanned) - ts_ns(&st.st_mtim) > RACY_NS)
		return 0;

	if (!dir_in_store(t, dir)) {
		/* Not ENOENT: a lookup would then try the name as a plain
		 * entry, outside STORE. */
		dir_moved_out(t, dir);
		return -ESTALE;
	}
	if (!dir->index) {
		/* First look at this directory since the start: staging files
		 * of a compaction that a crash interrupted are garbage. */
		int n = compact_cleanup(dir->fd);

		if (n > 0)
			log_info("%s: removed %d staging file(s) of an interrupted "
				 "compaction", dir->path[0] ? dir->path : ".", n);
	}
	clock_gettime(CLOCK_REALTIME, &now);
	ret = store_dir_scan(dir->fd, &idx);
	if (ret)
		return ret;
	for (size_t i = 0; i < idx->ngroups; i++) {
		const struct store_group *g = &idx->groups[i];
		bool known = dir->index && store_dir_find(dir->index, g->name);

		if (g->shadows_plain && !known)
			log_warn("%s%s%s: a plain entry of this name is hidden "
				 "by the layered file of the same name", dir->path,
				 dir->path[0] ? "/" : "", g->name);
	}
	store_dir_free(dir->index);
	dir->index = idx;
	dir->index_mtime = st.st_mtim;
	dir->index_ctime = st.st_ctim;
	dir->index_scanned = now;
	return 0;
}

/* ---- lookup ---- */

/* What a lookup found for a layered NAME, before it is matched to a version. */
struct chain_probe {
	size_t n;
	char **names;
	struct layer_id *ids;
	struct stat top;	/* stat of the base (or highest layer) */
	mode_t perm_and;	/* AND of every layer's permission bits */
	struct timespec newest_mtime, newest_ctime;
	blkcnt_t blocks;
	char *error;
};

static void chain_probe_free(struct chain_probe *cp)
{
	for (size_t i = 0; i < cp->n; i++)
		free(cp->names[i]);
	free(cp->names);
	free(cp->ids);
	free(cp->error);
	memset(cp, 0, sizeof(*cp));
}

/*
 * Resolves the chain of group g in dir and stats its layers. Returns 0
 * (cp->error set if the chain is unusable), -EAGAIN if a layer vanished
 * meanwhile (the caller rescans), or -ENOMEM.
 */
static int probe_chain(struct node *dir, const struct store_group *g,
		       struct chain_probe *cp)
{
	struct store_chain chain = { 0 };
	const char *why = NULL;
	const struct store_layer **layers;
	size_t n;
	int ret;

	memset(cp, 0, sizeof(*cp));
	ret = store_chain_resolve(g, &chain, &why);
	if (ret == -ENOMEM)
		return ret;
	if (ret) {
		/* Show every layer of the group, so the operator sees them. */
		if (chain.culprit) {
			if (asprintf(&cp->error, "layer %s: %s", chain.culprit->fname, why) < 0)
				cp->error = NULL;
		} else {
			cp->error = strdup(why);
		}
		if (!cp->error)
			return -ENOMEM;
		n = g->nlayers;
		layers = NULL;
	} else {
		n = chain.nlayers;
		layers = chain.layers;
	}
	cp->names = calloc(n, sizeof(*cp->names));
	cp->ids = calloc(n, sizeof(*cp->ids));
	if (!cp->names || !cp->ids) {
		store_chain_free(&chain);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const struct store_layer *l = layers ? layers[i] : &g->layers[i];

		cp->names[i] = strdup(l->fname);
		if (!cp->names[i]) {
			cp->n = i;
			store_chain_free(&chain);
			return -ENOMEM;
		}
		cp->n = i + 1;
	}
	store_chain_free(&chain);

	cp->perm_and = 07777;
	for (size_t i = 0; i < cp->n; i++) {
		struct stat st;

		struct statx stx;

		if (fstatat(dir->fd, cp->names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				return -EAGAIN;
			return -errno;
		}
		layer_id_from_stat(&cp->ids[i], &st);
		/* Birth time, where the filesystem keeps one, tells a layer
		 * rewritten in place from a new file that reuses a deleted
		 * layer's inode number (a rollback, then a new diff). */
		if (statx(dir->fd, cp->names[i], AT_SYMLINK_NOFOLLOW, STATX_BTIME, &stx) == 0 &&
		    (stx.stx_mask & STATX_BTIME))
			cp->ids[i].btime_ns = (int64_t)stx.stx_btime.tv_sec * 1000000000 +
					      stx.stx_btime.tv_nsec;
		if (i == 0 || (cp->error && i == cp->n - 1))
			cp->top = st;
		cp->perm_and &= st.st_mode & 07777;
		if (ts_ns(&st.st_mtim) > ts_ns(&cp->newest_mtime))
			cp->newest_mtime = st.st_mtim;
		if (ts_ns(&st.st_ctim) > ts_ns(&cp->newest_ctime))
			cp->newest_ctime = st.st_ctim;
		cp->blocks += st.st_blocks;
	}
	return 0;
}

static bool version_matches(const struct node *v, const struct chain_probe *cp)
{
	if (v->nlayers != cp->n)
		return false;
	if ((v->error == NULL) != (cp->error == NULL))
		return false;
	if (v->error && strcmp(v->error, cp->error) != 0)
		return false;
	for (size_t i = 0; i < cp->n; i++)
		if (strcmp(v->layer_names[i], cp->names[i]) != 0 ||
		    !layer_id_equal(&v->layer_ids[i], &cp->ids[i]))
			return false;
	return true;
}

/* Makes a version node from a probe, taking over its arrays. */
static struct node *version_new(struct node *dir, const char *name,
				struct chain_probe *cp)
{
	struct node *v = node_alloc(NODE_VIEW);
	struct stat *a;

	if (!v)
		return NULL;
	v->name = strdup(name);
	v->path = path_join(dir, name);
	if (!v->name || !v->path) {
		node_destroy(v);
		return NULL;
	}
	v->nlayers = cp->n;
	v->layer_names = cp->names;
	v->layer_ids = cp->ids;
	v->error = cp->error;
	cp->names = NULL;
	cp->ids = NULL;
	cp->error = NULL;
	cp->n = 0;

	a = &v->vattr;
	*a = cp->top;
	/* Informative: the owner is the base's, the permission bits those
	 * every layer grants (read and execute only). The daemon's check at
	 * open, with the requester's credentials on each layer, decides. */
	a->st_mode = S_IFREG | (cp->perm_and & 0555);
	a->st_nlink = 1;
	a->st_mtim = cp->newest_mtime;
	a->st_ctim = cp->newest_ctime;
	a->st_blocks = cp->blocks;
	a->st_blksize = 4096;
	v->parent = dir;
	return v;
}

/*
 * A layer that keeps its name and inode but not its size or times was
 * rewritten after it was published: a producer error (SPEC §2). The new
 * version re-scans it; views already open keep what they read. Only logs,
 * so it may run under the table lock.
 */
static void report_rewritten_layers(const struct node *old, const struct node *fresh)
{
	for (size_t i = 0; i < fresh->nlayers; i++) {
		for (size_t j = 0; j < old->nlayers; j++) {
			const struct layer_id *a = &old->layer_ids[j], *b = &fresh->layer_ids[i];

			if (strcmp(old->layer_names[j], fresh->layer_names[i]) == 0 &&
			    a->dev == b->dev && a->ino == b->ino && !layer_id_equal(a, b) &&
			    (!a->btime_ns || !b->btime_ns || a->btime_ns == b->btime_ns))
				log_err("%s: layer %s was changed after it was published "
					"(layers must be immutable); new opens see it "
					"re-scanned", fresh->path, fresh->layer_names[i]);
		}
	}
}

/* Number of diffs in a version's chain (layers past the base). */
static size_t version_depth(const struct node *v)
{
	return v->error || !v->nlayers ? 0 : v->nlayers - 1;
}

/* Queues v for compaction if its chain is deeper than the threshold. */
static void compact_enqueue_locked(struct node_table *t, struct node *v)
{
	struct cjob *j;

	if (!t->compacting || v->error || v->cstate != COMPACT_IDLE ||
	    version_depth(v) <= t->copts.threshold)
		return;
	j = calloc(1, sizeof(*j));
	if (!j)
		return;		/* retried when the next version appears */
	j->v = v;
	v->refs++;
	v->cstate = COMPACT_PENDING;
	j->next = t->cjobs;
	t->cjobs = j;
	pthread_cond_signal(&t->ccond);
}

/*
 * Takes the current version of name out of dir's list (table lock held).
 * Returns it if nothing else holds it, for the caller to destroy after
 * unlocking; NULL otherwise (it lives on while the kernel or a handle has it).
 */
static struct node *retire_locked(struct node_table *t, struct node *dir,
				  const char *name, const struct node *successor)
{
	struct node **pp = &dir->versions;

	for (; *pp; pp = &(*pp)->vnext) {
		struct node *old = *pp;

		if (strcmp(old->name, name) != 0)
			continue;
		if (successor)
			report_rewritten_layers(old, successor);
		*pp = old->vnext;
		old->current = false;
		old->vnext = NULL;
		return release_locked(t, old) ? old : NULL;
	}
	return NULL;
}

/*
 * The current version of the layered file name in dir, made anew if its
 * chain changed (SPEC §3). lookups is added to its lookup count (1 for a
 * FUSE lookup, 0 for a listing). Returns 0, -ENOENT if name is not a
 * layered file (any version it had is retired), or another -errno.
 */
static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t name_hash(const char *name)
{
	return XXH64(name, strlen(name), 0);
}

/*
 * Called with the table lock held when a lookup by thread pid returns
 * version v: if that thread's open of name got ESTALE within the retry
 * window, this lookup is its retry, and v may serve its open.
 */
static void note_retry_locked(struct node *dir, struct node *v, uint32_t pid)
{
	uint64_t h;
	int64_t now;

	if (!pid)
		return;
	h = name_hash(v->name);
	now = mono_ns();
	for (size_t i = 0; i < sizeof(dir->stale_opens) / sizeof(dir->stale_opens[0]); i++) {
		const struct node_stale_open *so = &dir->stale_opens[i];

		if (so->pid == pid && so->name_hash == h &&
		    now - so->ns < (int64_t)STALE_RETRY_MS * 1000000) {
			/* Several threads may retry at once: this one's
			 * slot, else the oldest. */
			struct node_retry *r = &v->retries[0];

			for (size_t j = 0; j < sizeof(v->retries) / sizeof(v->retries[0]); j++) {
				if (v->retries[j].pid == pid) {
					r = &v->retries[j];
					break;
				}
				if (v->retries[j].ns < r->ns)
					r = &v->retries[j];
			}
			r->pid = pid;
			r->ns = now;
			return;
		}
	}
}

/* The retry slot of thread pid in version v within the window, or NULL;
 * table lock held. */
static struct node_retry *retry_of_locked(struct node *v, uint32_t pid, int64_t now)
{
	for (size_t j = 0; pid && j < sizeof(v->retries) / sizeof(v->retries[0]); j++)
		if (v->retries[j].pid == pid &&
		    now - v->retries[j].ns < (int64_t)STALE_RETRY_MS * 1000000)
			return &v->retries[j];
	return NULL;
}

static int version_get(struct node_table *t, struct node *dir, const char *name,
		       uint64_t lookups, uint32_t pid, struct node **out,
		       struct stat *st)
{
	struct chain_probe cp = { 0 };
	struct node *v, *fresh = NULL, *dead = NULL;
	int ret, tries = 0;

	/*
	 * dir->lock is held from the probe to the version's insertion: the
	 * chain seen and the version chosen are one snapshot, and the
	 * compactor (which renames under the same lock and updates the
	 * version's identity) cannot fall in between.
	 */
	for (;;) {
		const struct store_group *g;

		pthread_mutex_lock(&dir->lock);
		ret = dir_refresh_locked(t, dir, tries > 0);
		g = ret ? NULL : store_dir_find(dir->index, name);
		if (!ret && !g)
			ret = -ENOENT;
		if (!ret)
			ret = probe_chain(dir, g, &cp);
		if (ret != -EAGAIN)
			break;
		pthread_mutex_unlock(&dir->lock);
		chain_probe_free(&cp);
		if (++tries == 10) {	/* layers keep vanishing under us */
			pthread_mutex_lock(&dir->lock);
			ret = -ENOENT;
			break;
		}
	}
	if (ret) {
		chain_probe_free(&cp);
		if (ret == -ENOENT) {
			pthread_mutex_lock(&t->lock);
			dead = retire_locked(t, dir, name, NULL);
			pthread_mutex_unlock(&t->lock);
		}
		pthread_mutex_unlock(&dir->lock);
		if (dead)
			destroy_chain(t, dead);
		return ret;
	}

	pthread_mutex_lock(&t->lock);
	for (v = dir->versions; v; v = v->vnext)
		if (strcmp(v->name, name) == 0)
			break;
	if (v && version_matches(v, &cp)) {
		v->nlookup += lookups;
		note_retry_locked(dir, v, pid);
		*st = v->vattr;
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_unlock(&dir->lock);
		chain_probe_free(&cp);
		*out = v;
		return 0;
	}
	pthread_mutex_unlock(&t->lock);

	fresh = version_new(dir, name, &cp);
	chain_probe_free(&cp);
	if (!fresh) {
		pthread_mutex_unlock(&dir->lock);
		return -ENOMEM;
	}

	pthread_mutex_lock(&t->lock);
	dead = retire_locked(t, dir, name, fresh);
	fresh->vino = t->next_vino++;
	fresh->vattr.st_ino = (ino_t)fresh->vino;
	/* Versions sit in the hash under (0, vino), clear of STORE's entries
	 * (a real device number is never 0 for a filesystem with inodes). */
	fresh->dev = 0;
	fresh->ino = (ino_t)fresh->vino;
	hash_insert_locked(t, fresh);
	fresh->nlookup = lookups;
	note_retry_locked(dir, fresh, pid);
	fresh->current = true;
	fresh->vnext = dir->versions;
	dir->versions = fresh;
	dir->refs++;
	*st = fresh->vattr;
	compact_enqueue_locked(t, fresh);
	/* Logged before unlocking: a version taken without a lookup count
	 * can be retired and freed by another thread as soon as we do. */
	if (fresh->error)
		log_err("%s: unusable: %s", fresh->path, fresh->error);
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_unlock(&dir->lock);
	if (dead)
		destroy_chain(t, dead);
	*out = fresh;
	return 0;
}

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

int node_lookup(struct node_table *t, struct node *parent, const char *name,
		uint32_t pid, struct node **out, struct stat *st)
{
	struct node *n, *fresh;
	int fd, ret;

	if (parent->kind != NODE_DIR)
		return -ENOTDIR;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || strchr(name, '/') ||
	    compact_is_tmp(name))
		return -ENOENT;

	for (int tries = 0;; tries++) {
		struct view *view;
		bool retry;

		ret = version_get(t, parent, name, 1, pid, out, st);
		if (ret)
			break;
		pthread_mutex_lock(&t->lock);
		retry = (*out)->kind == NODE_VIEW && retry_of_locked(*out, pid, mono_ns());
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
		ret = node_view(t, *out, &view);
		if (ret == 0)
			view_put(view);
		if (ret != -ESTALE || tries == 8)
			return 0;	/* the open reports any other trouble */
		node_forget(t, *out, 1);
	}
	if (ret != -ENOENT)
		return ret;

	fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}

	pthread_mutex_lock(&t->lock);
	for (n = t->buckets[hash_of(t, st->st_dev, st->st_ino)]; n; n = n->hnext) {
		if (n->dev == st->st_dev && n->ino == st->st_ino) {
			n->nlookup++;
			pthread_mutex_unlock(&t->lock);
			close(fd);
			*out = n;
			return 0;
		}
	}
	pthread_mutex_unlock(&t->lock);

	fresh = node_alloc(kind_of(st->st_mode));
	if (!fresh) {
		close(fd);
		return -ENOMEM;
	}
	fresh->fd = fd;
	fresh->dev = st->st_dev;
	fresh->ino = st->st_ino;
	if (fresh->kind == NODE_DIR && !(fresh->path = path_join(parent, name))) {
		node_destroy(fresh);
		return -ENOMEM;
	}

	pthread_mutex_lock(&t->lock);
	/* Another thread may have inserted the same inode meanwhile. */
	for (n = t->buckets[hash_of(t, st->st_dev, st->st_ino)]; n; n = n->hnext) {
		if (n->dev == st->st_dev && n->ino == st->st_ino) {
			n->nlookup++;
			pthread_mutex_unlock(&t->lock);
			node_destroy(fresh);
			*out = n;
			return 0;
		}
	}
	fresh->nlookup = 1;
	hash_insert_locked(t, fresh);
	pthread_mutex_unlock(&t->lock);
	*out = fresh;
	return 0;
}

int node_getattr(struct node_table *t, struct node *n, struct stat *st)
{
	(void)t;
	if (n->kind == NODE_VIEW) {
		*st = n->vattr;
		return 0;
	}
	return fstat(n->fd, st) < 0 ? -errno : 0;
}

/* ---- views ---- */

/* True if a layer of version n is gone or no longer the file it was. */
static bool layers_moved_on(const struct node *n)
{
	for (size_t i = 0; i < n->nlayers; i++)
		if (!layer_unchanged(n->parent->fd, n->layer_names[i], &n->layer_ids[i]))
			return true;
	return false;
}

int node_view(struct node_table *t, struct node *n, struct view **out)
{
	struct store_chain chain = { 0 };
	struct store_layer *layers = NULL;
	char why[512];
	int ret = 0;

	if (n->kind != NODE_VIEW)
		return -EINVAL;
	pthread_mutex_lock(&n->lock);
	if (n->view) {
		view_get(n->view);
		*out = n->view;
		goto out;
	}
	if (n->error || n->build_error) {
		ret = -EIO;
		goto out;
	}
	/* Rebuild a store_chain from the names this version was made of. */
	layers = calloc(n->nlayers, sizeof(*layers));
	chain.layers = calloc(n->nlayers, sizeof(*chain.layers));
	if (!layers || !chain.layers) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n->nlayers; i++) {
		layers[i].fname = n->layer_names[i];
		chain.layers[i] = &layers[i];
	}
	chain.nlayers = n->nlayers;
	why[0] = '\0';
	ret = view_open(t->env, n->parent->fd, &chain, &n->view, why, sizeof(why));
	if (ret == 0) {
		/* The layers opened must be the ones this version was made of;
		 * a layer replaced since the lookup belongs to a newer version. */
		for (size_t i = 0; i < n->nlayers; i++) {
			if (!layer_id_equal(&n->view->layers[i].id, &n->layer_ids[i])) {
				view_put(n->view);
				n->view = NULL;
				snprintf(why, sizeof(why), "layer %s changed between "
					 "lookup and open", n->layer_names[i]);
				ret = -ESTALE;
				break;
			}
		}
	}
	if (ret == 0) {
		view_get(n->view);
		*out = n->view;
	} else if (ret == -EIO && layers_moved_on(n)) {
		/* A layer went away or changed since the lookup (a rollback, a
		 * compaction): not this chain's fault; the kernel looks the
		 * name up again and finds the version that exists now. */
		ret = -ESTALE;
	} else if (ret == -EIO) {
		n->build_error = strdup(why);
		log_err("%s: unusable: %s", n->path, why);
	} else if (ret == -ESTALE) {
		/* A race with a publish, rollback or compaction, not a fault. */
		log_debug("%s: %s; the next lookup shows the new version",
			  n->path, why);
		/* -ESTALE: the kernel looks the name up again and retries. */
	} else {
		/* Out of memory or file descriptors: not the chain's fault,
		 * so nothing is remembered and the next open tries again. */
		log_err("%s: cannot open: %s", n->path,
			why[0] ? why : strerror(-ret));
	}
out:
	pthread_mutex_unlock(&n->lock);
	free(chain.layers);
	free(layers);
	return ret;
}

/* ---- directory listing ---- */

void node_dirents_free(struct node_dirent *d, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(d[i].name);
	free(d);
}

static int dirent_add(struct node_dirent **d, size_t *n, size_t *cap,
		      const char *name, unsigned char type, uint64_t ino)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct node_dirent *nd = realloc(*d, nc * sizeof(*nd));

		if (!nd)
			return -ENOMEM;
		*d = nd;
		*cap = nc;
	}
	(*d)[*n].name = strdup(name);
	if (!(*d)[*n].name)
		return -ENOMEM;
	(*d)[*n].d_type = type;
	(*d)[*n].ino = ino;
	(*n)++;
	return 0;
}

int node_list_dir(struct node_table *t, struct node *n,
		  struct node_dirent **out, size_t *count)
{
	struct node_dirent *d = NULL;
	size_t nd = 0, cap = 0;
	struct dirent *de;
	DIR *dp;
	int fd, ret = 0;

	if (n->kind != NODE_DIR)
		return -ENOTDIR;
	fd = openat(n->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dp = fdopendir(fd);
	if (!dp) {
		ret = -errno;
		close(fd);
		return ret;
	}

	pthread_mutex_lock(&n->lock);
	ret = dir_refresh_locked(t, n, false);
	if (ret) {
		pthread_mutex_unlock(&n->lock);
		closedir(dp);
		return ret;
	}
	for (;;) {
		errno = 0;
		de = readdir(dp);
		if (!de) {
			ret = -errno;
			break;
		}
		/* A plain entry named like a layered file is hidden by it;
		 * compaction staging files are not shown at all. */
		if (store_dir_find(n->index, de->d_name) || compact_is_tmp(de->d_name))
			continue;
		ret = dirent_add(&d, &nd, &cap, de->d_name, de->d_type, de->d_ino);
		if (ret)
			break;
	}
	/* Layered names come after the real entries; their versions are
	 * resolved below, without the directory lock, so that readdir shows
	 * the inode numbers that stat will. */
	size_t first_layered = nd;

	for (size_t i = 0; !ret && i < n->index->ngroups; i++)
		ret = dirent_add(&d, &nd, &cap, n->index->groups[i].name, DT_REG, 0);
	pthread_mutex_unlock(&n->lock);
	closedir(dp);
	for (size_t i = first_layered; !ret && i < nd; i++) {
		struct node *v;
		struct stat st;
		int r = version_get(t, n, d[i].name, 0, 0, &v, &st);

		if (r == 0)
			d[i].ino = st.st_ino;	/* v itself may be gone already */
		else if (r != -ENOENT)
			ret = r;
	}
	if (ret) {
		node_dirents_free(d, nd);
		return ret;
	}
	*out = d;
	*count = nd;
	return 0;
}

int node_open_file(struct node *n, int flags)
{
	char path[64];
	int fd;

	if (n->kind != NODE_FILE)
		return n->kind == NODE_DIR ? -EISDIR : -EACCES;
	/* The reopen goes through the magic link of the O_PATH fd, which is
	 * the very file looked up (never a symlink): O_NOFOLLOW would refuse
	 * the link itself with ELOOP (cp -a, tar open with it). */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", n->fd);
	fd = open(path, (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_NOFOLLOW)) |
		  O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* ---- extended attributes ---- */

#define XA_CHAIN "user.snapfs.chain"
#define XA_DEPTH "user.snapfs.depth"
#define XA_DATA "user.snapfs.data_bytes"
#define XA_ERROR "user.snapfs.error"
#define XA_COMPACT "user.snapfs.compaction"

static ssize_t xattr_reply(const char *val, size_t len, char *buf, size_t size)
{
	if (size == 0)
		return (ssize_t)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, val, len);
	return (ssize_t)len;
}

ssize_t node_view_getxattr(struct node_table *t, struct node *n,
			   const char *name, char *buf, size_t size)
{
	char num[32];
	ssize_t ret;

	if (strcmp(name, XA_CHAIN) == 0) {
		size_t len = 0;
		char *s, *p;

		/* A compaction may replace the layer list: hold the lock. */
		pthread_mutex_lock(&n->lock);
		for (size_t i = 0; i < n->nlayers; i++)
			len += strlen(n->layer_names[i]) + 1;
		s = p = malloc(len + 1);
		for (size_t i = 0; s && i < n->nlayers; i++)
			p += sprintf(p, "%s%s", i ? "," : "", n->layer_names[i]);
		pthread_mutex_unlock(&n->lock);
		if (!s)
			return -ENOMEM;
		ret = xattr_reply(s, (size_t)(p - s), buf, size);
		free(s);
		return ret;
	}
	if (strcmp(name, XA_DEPTH) == 0) {
		size_t diffs = 0;

		pthread_mutex_lock(&n->lock);
		for (size_t i = 0; i < n->nlayers; i++) {
			struct store_name sn;

			if (store_parse_name(n->layer_names[i], &sn) &&
			    sn.kind == STORE_DIFF)
				diffs++;
		}
		pthread_mutex_unlock(&n->lock);
		snprintf(num, sizeof(num), "%zu", diffs);
		return xattr_reply(num, strlen(num), buf, size);
	}
	if (strcmp(name, XA_DATA) == 0) {
		struct view *v;

		ret = node_view(t, n, &v);
		if (ret)
			return ret == -EIO ? -ENODATA : ret;
		snprintf(num, sizeof(num), "%llu", (unsigned long long)v->data_bytes);
		view_put(v);
		return xattr_reply(num, strlen(num), buf, size);
	}
	if (strcmp(name, XA_COMPACT) == 0) {
		char *state;

		pthread_mutex_lock(&t->lock);
		if (asprintf(&state, "%s%s", !t->compacting ? "off" :
			     n->cstate == COMPACT_RUNNING ? "running" :
			     n->cstate == COMPACT_PENDING ? "pending" :
			     n->crefused ? "refused: " : "idle",
			     t->compacting && n->cstate == COMPACT_IDLE && n->crefused ?
			     n->crefused : "") < 0)
			state = NULL;
		pthread_mutex_unlock(&t->lock);
		if (!state)
			return -ENOMEM;
		ret = xattr_reply(state, strlen(state), buf, size);
		free(state);
		return ret;
	}
	if (strcmp(name, XA_ERROR) == 0) {
		char *err = NULL;
		struct view *v;

		/* Some causes are only found when the layers are opened. */
		if (node_view(t, n, &v) == 0)
			view_put(v);
		pthread_mutex_lock(&n->lock);
		if (n->error || n->build_error)
			err = strdup(n->error ? n->error : n->build_error);
		pthread_mutex_unlock(&n->lock);
		if (!err)
			return -ENODATA;
		ret = xattr_reply(err, strlen(err), buf, size);
		free(err);
		return ret;
	}
	return -ENODATA;
}

ssize_t node_view_listxattr(struct node_table *t, struct node *n, char *buf,
			    size_t size)
{
	static const char names[] = XA_CHAIN "\0" XA_DEPTH "\0" XA_DATA "\0"
				    XA_COMPACT "\0";
	static const char names_err[] = XA_CHAIN "\0" XA_DEPTH "\0" XA_ERROR "\0";
	struct view *v;
	bool err;

	if (node_view(t, n, &v) == 0)
		view_put(v);

	pthread_mutex_lock(&n->lock);
	err = n->error || n->build_error;
	pthread_mutex_unlock(&n->lock);
	return err ? xattr_reply(names_err, sizeof(names_err) - 1, buf, size)
		   : xattr_reply(names, sizeof(names) - 1, buf, size);
}

/* ---- change notification (SPEC §2: a published layer shows without a
 * remount) ---- */

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

/* Called with dir->lock held, the first time dir is looked into. */
static void dir_watch_locked(struct node_table *t, struct node *dir)
{
	int wd;

	if (!t->watch || fs_is_remote(dir->fd)) {
		dir->wd = -1;
		return;
	}
	pthread_mutex_lock(&t->watch_lock);
	wd = watch_add(t->watch, dir->fd);
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

bool node_dir_watched(struct node_table *t, struct node *dir)
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

static void watch_event(void *ctx, int wd, const char *name, uint32_t mask)
{
	struct node_table *t = ctx;
	struct inval_item *items = NULL;
	size_t n = 0, cap = 0;
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
				for (struct node *v = d->versions; v; v = v->vnext) {
					if (n == cap) {
						size_t nc = cap ? cap * 2 : 64;
						struct inval_item *ni = realloc(items, nc * sizeof(*ni));

						if (!ni)
							goto out_locked;
						items = ni;
						cap = nc;
					}
					items[n].parent = node_id(t, d);
					items[n].name = strdup(v->name);
					if (items[n].name)
						n++;
				}
			}
		}
		overflow = true;
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

int node_table_watch(struct node_table *t)
{
	int ret;

	if (!t->inval)
		return -EINVAL;
	ret = watch_start(watch_event, t, &t->watch);
	if (ret)
		log_warn("cannot watch STORE for changes: %s; names are "
			 "revalidated by timeout", strerror(-ret));
	return ret;
}

void node_table_unwatch(struct node_table *t)
{
	struct watch *w = t->watch;

	t->watch = NULL;	/* before stopping: destroy paths test it */
	watch_stop(w);
}

/* ---- rollback and open-time freshness ---- */

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
	int ret;

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
	ret = dirlock_acquire(dir->fd, UNLINK_LOCK_WAIT_MS, NULL, &lk);
	if (ret) {
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
	} else if (!ret && unlinkat(dir->fd, name, 0) < 0) {
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

	if (ret == -EBUSY)
		log_warn("%s%s%s: refusing to unlink: only the highest diff of a "
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

int node_version_check(struct node_table *t, struct node *n, uint32_t pid)
{
	struct node *cur, *dir = n->parent;
	struct stat st;
	int64_t now;
	int ret;

	if (n->kind != NODE_VIEW)
		return 0;
	ret = version_get(t, dir, n->name, 0, 0, &cur, &st);
	if (ret && ret != -ENOENT)
		return ret;
	if (!ret && cur == n)
		return 0;
	/* n is superseded (or its name gone). */
	now = mono_ns();
	pthread_mutex_lock(&t->lock);
	struct node_retry *r = retry_of_locked(n, pid, now);

	if (r) {
		r->pid = 0;	/* one open per retry */
		ret = 0;
	} else {
		struct node_stale_open *so = &dir->stale_opens[dir->stale_next++ %
			(sizeof(dir->stale_opens) / sizeof(dir->stale_opens[0]))];

		so->pid = pid;
		so->name_hash = name_hash(n->name);
		so->ns = now;
		ret = -ESTALE;
	}
	pthread_mutex_unlock(&t->lock);
	if (ret)
		log_debug("%s: open of a superseded version by thread %u: ESTALE, "
			  "the kernel looks the name up again", n->path, pid);
	return ret;
}

/* ---- background compaction ---- */

struct publish_ctx {
	struct node_table *t;
	struct node *v;
	size_t nmerge;
};

/*
 * Called by compact_chain() right after the new base is renamed into place,
 * with the directory's lock held: the version now *is* the new base plus
 * its kept diffs. Its inode, attributes, page cache and open views stay as
 * they are (the content is the same); the next lookup matches it again.
 */
static void compact_published(void *ctx, const char *new_base)
{
	struct publish_ctx *pc = ctx;
	struct node *v = pc->v;
	size_t n = v->nlayers - pc->nmerge + 1;
	char **names = calloc(n, sizeof(*names)), **old_names;
	struct layer_id *ids = calloc(n, sizeof(*ids)), *old_ids;
	struct view *old_view;
	struct stat st;

	if (!names || !ids || fstatat(v->parent->fd, new_base, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !(names[0] = strdup(new_base))) {
		/* The next lookup will simply make a new version. */
		log_warn("%s: cannot record the compacted chain; the file gets a "
			 "new inode number", v->path);
		free(names);
		free(ids);
		return;
	}
	layer_id_from_stat(&ids[0], &st);
	for (size_t i = 1; i < n; i++) {
		names[i] = v->layer_names[pc->nmerge + i - 1];
		ids[i] = v->layer_ids[pc->nmerge + i - 1];
	}
	pthread_mutex_lock(&v->lock);
	pthread_mutex_lock(&pc->t->lock);
	old_names = v->layer_names;
	old_ids = v->layer_ids;
	v->layer_names = names;
	v->layer_ids = ids;
	v->nlayers = n;
	v->parent->index_stale = true;
	pthread_mutex_unlock(&pc->t->lock);
	/* New opens build the view on the new base; open handles keep the
	 * old layers (their own references) until they close. */
	old_view = v->view;
	v->view = NULL;
	pthread_mutex_unlock(&v->lock);
	view_put(old_view);
	for (size_t i = 0; i < pc->nmerge; i++)
		free(old_names[i]);
	free(old_names);
	free(old_ids);
}

/* Compacts version v if it is still current and deep enough. */
static void compact_version(struct node_table *t, struct node *v)
{
	struct node *dir = v->parent;
	struct store_layer *layers = NULL;
	struct store_chain chain = { 0 };
	struct compact_result res;
	struct publish_ctx pc = { t, v, 0 };
	struct compact_opts o = t->copts;
	uint64_t new_base_seq = 0;
	char **prune = NULL;
	size_t nprune = 0;
	bool retry = false;
	int ret;

	/* The chain this version was made of, copied: compact_published()
	 * replaces the version's list while compact_chain() still needs the
	 * old names. Only this thread changes a version's layers, so they can
	 * be read here without the table lock. */
	layers = calloc(v->nlayers, sizeof(*layers));
	chain.layers = calloc(v->nlayers, sizeof(*chain.layers));
	if (!layers || !chain.layers)
		goto out;
	chain.nlayers = v->nlayers;
	for (size_t i = 0; i < v->nlayers; i++) {
		struct store_name sn;

		if (!store_parse_name(v->layer_names[i], &sn))
			goto out;
		layers[i].fname = strdup(v->layer_names[i]);
		if (!layers[i].fname)
			goto out;
		layers[i].seq = sn.seq;
		layers[i].kind = sn.kind;
		chain.layers[i] = &layers[i];
	}
	pc.nmerge = compact_plan(&chain, &o);
	if (!pc.nmerge)
		goto out;
	/* Only a chain that opens cleanly is compacted: one that is refused
	 * (SPEC §5) must stay refused, not be baked into a base. */
	{
		struct view *chk;

		if (node_view(t, v, &chk) != 0)
			goto out;
		view_put(chk);
	}
	new_base_seq = layers[pc.nmerge - 1].seq;

	pthread_mutex_lock(&t->lock);
	if (!v->current) {	/* a newer version has its own job */
		pthread_mutex_unlock(&t->lock);
		goto out;
	}
	v->cstate = COMPACT_RUNNING;
	pthread_mutex_unlock(&t->lock);

	/* Nothing is written outside STORE: a directory moved out of it is
	 * left alone (the prune below checks again). */
	if (!dir_in_store(t, dir)) {
		dir_moved_out(t, dir);
		goto out;
	}
	o.stop = &t->cstop;
	o.store_dev = t->root->dev;
	o.store_ino = t->root->ino;
	o.publish_lock = &dir->lock;
	o.published = compact_published;
	o.ctx = &pc;
	ret = compact_chain(dir->fd, v->name, &chain, pc.nmerge,
			    view_env_cache(t->env), &o, &res);
	if (ret == -ECANCELED) {
		log_info("%s: compaction stopped; the store is unchanged", v->path);
		goto out;
	}
	if (ret == -EAGAIN && res.withdrawn) {
		/* compact_chain() logged it. The version's layer list names the
		 * withdrawn base now: drop its view, rescan; the next lookup
		 * finds the rolled-back chain, a new version. */
		struct view *old_view;

		pthread_mutex_lock(&v->lock);
		old_view = v->view;
		v->view = NULL;
		pthread_mutex_unlock(&v->lock);
		view_put(old_view);
		pthread_mutex_lock(&t->lock);
		dir->index_stale = true;
		pthread_mutex_unlock(&t->lock);
		goto out;
	}
	if (ret == -EXDEV) {
		dir_moved_out(t, dir);
		goto out;
	}
	if (ret == -EAGAIN) {
		/* A rollback came first: not a failure. */
		log_info("%s: compaction abandoned: a merged layer changed "
			 "meanwhile (a rollback); the store is unchanged", v->path);
		goto out;
	}
	if (ret == -EBUSY) {
		log_info("%s: compaction postponed: the directory's rollback lock "
			 "stayed held for %d ms; the store is unchanged", v->path,
			 COMPACT_LOCK_WAIT_MS);
		retry = true;
		goto out;
	}
	if (ret == -EPERM && res.refused[0]) {
		/* Permanent for this version (queued once): a new version,
		 * whose layers may agree, is tried again. */
		char *why = strdup(res.refused);

		log_err("%s: compaction refused: %s; the store is unchanged",
			v->path, res.refused);
		pthread_mutex_lock(&t->lock);
		free(v->crefused);
		v->crefused = why;
		pthread_mutex_unlock(&t->lock);
		goto out;
	}
	if (ret && res.published) {
		log_err("%s: compaction incomplete after the new base was in place: "
			"%s; content unchanged, superseded layers remain", v->path,
			strerror(-ret));
		goto out;
	}
	if (ret) {
		log_err("%s: compaction failed: %s; the store is unchanged",
			v->path, strerror(-ret));
		goto out;
	}
	log_info("%s: compacted %zu layers into %s: %.1f MiB written in %.2f s "
		 "(%s, %s)", v->path, res.merged, res.new_base,
		 (double)res.bytes_copied / (1 << 20), res.seconds,
		 res.reflinked ? "base reflinked" : "base copied",
		 compact_method_name(res.method));

	/* Everything else the new base supersedes: older chains below the
	 * merged base, a diff of the new base's own seq. */
	pthread_mutex_lock(&dir->lock);
	if (dir_refresh_locked(t, dir, true) == 0) {
		const struct store_group *g = store_dir_find(dir->index, v->name);

		prune = g ? calloc(g->nlayers, sizeof(*prune)) : NULL;
		for (size_t i = 0; prune && i < g->nlayers; i++) {
			const struct store_layer *l = &g->layers[i];

			if (!l->overflow && (l->seq < new_base_seq ||
			    (l->seq == new_base_seq && l->kind == STORE_DIFF)))
				prune[nprune++] = strdup(l->fname);
		}
	}
	pthread_mutex_unlock(&dir->lock);
	for (size_t i = 0; i < nprune; i++) {
		if (prune[i] && unlinkat(dir->fd, prune[i], 0) < 0 && errno != ENOENT)
			log_warn("%s: cannot remove superseded layer %s: %s", v->path,
				 prune[i], strerror(errno));
		free(prune[i]);
	}
out:
	free(prune);
	for (size_t i = 0; layers && i < chain.nlayers; i++)
		free(layers[i].fname);
	free(chain.layers);
	free(layers);
	pthread_mutex_lock(&t->lock);
	v->cstate = COMPACT_IDLE;
	if (retry && v->current && !t->cstop)
		compact_enqueue_locked(t, v);
	pthread_mutex_unlock(&t->lock);
}

static void *compact_thread(void *arg)
{
	struct node_table *t = arg;

	/* Page faults of running VMs come first: lowest CPU and I/O class. */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, 3 << 13 /* IDLE */);

	pthread_mutex_lock(&t->lock);
	for (;;) {
		struct cjob *j;

		while (!t->cjobs && !t->cstop)
			pthread_cond_wait(&t->ccond, &t->lock);
		if (t->cstop)
			break;
		j = t->cjobs;
		t->cjobs = j->next;
		pthread_mutex_unlock(&t->lock);
		compact_version(t, j->v);
		node_unref(t, j->v);
		free(j);
		pthread_mutex_lock(&t->lock);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int node_table_compact(struct node_table *t, const struct compact_opts *opts)
{
	int ret;

	t->copts = *opts;
	pthread_cond_init(&t->ccond, NULL);
	t->compacting = true;
	ret = -pthread_create(&t->cthread, NULL, compact_thread, t);
	if (ret) {
		t->compacting = false;
		log_err("cannot start the compactor: %s", strerror(-ret));
	}
	return ret;
}

void node_table_stop_compact(struct node_table *t)
{
	struct cjob *j;

	if (!t->compacting)
		return;
	pthread_mutex_lock(&t->lock);
	__atomic_store_n(&t->cstop, 1, __ATOMIC_RELAXED);
	pthread_cond_signal(&t->ccond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->cthread, NULL);
	t->compacting = false;
	while ((j = t->cjobs)) {
		t->cjobs = j->next;
		j->v->cstate = COMPACT_IDLE;
		node_unref(t, j->v);
		free(j);
	}
	pthread_cond_destroy(&t->ccond);
}
