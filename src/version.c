/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Versions of layered files (doc/format.md §3, "Versions"; the model is in
 * node.h). A lookup of NAME resolves its chain and compares the chain's
 * identity — every layer's name and (dev, ino, size, mtime) — with the
 * version the directory currently shows: the same identity is the same
 * node; any other makes a new version with a new inode number, which
 * becomes current, while the old one lives on for whoever holds it. A
 * listing resolves no chain: it shows the current version's inode number,
 * or one it promises to the next version made (version_listed_ino_locked()).
 *
 * Why identity is enough: layers are immutable once published (doc/format.md
 * §2), so two lookups that find the same layer files with the same identity
 * see the same content. A producer that breaks the rule moves the mtime,
 * which makes a new version (and is reported); a chmod, chown, setxattr or
 * link moves only the ctime and changes no byte.
 *
 * An open is served only by the version a lookup would return at the time
 * of the open (node_version_check()), with one exception that keeps
 * applications from ever seeing ESTALE: the kernel's retry of a stale open
 * may open the version its own lookup found, because that version was
 * current during the open(2) (the retry rule, below).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "monotime.h"
#include "node_priv.h"
#include "version.h"

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
static int probe_chain(int dfd, const struct store_group *g,
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

		if (fstatat(dfd, cp->names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				return -EAGAIN;
			return -errno;
		}
		layer_id_from_stat(&cp->ids[i], &st);
		/* Birth time, where the filesystem keeps one, tells a layer
		 * rewritten in place from a new file that reuses a deleted
		 * layer's inode number (a rollback, then a new diff). */
		if (statx(dfd, cp->names[i], AT_SYMLINK_NOFOLLOW, STATX_BTIME, &stx) == 0 &&
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
	v->path = node_path_join(dir, name);
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
 * rewritten after it was published: a producer error (doc/format.md §2). The new
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
			    (!a->btime_ns || !b->btime_ns || a->btime_ns == b->btime_ns)) {
				if (a->btime_ns && b->btime_ns)
					log_err_rl("%s: layer %s was changed after it was "
						   "published (layers must be immutable); "
						   "new opens see it re-scanned",
						   fresh->path, fresh->layer_names[i]);
				else
					log_warn_rl("%s: layer %s has the inode number it had "
						    "before but another size or times: changed "
						    "after it was published, or removed and "
						    "published again on a reused inode number "
						    "(no birth time here to tell); new opens "
						    "see it re-scanned",
						    fresh->path, fresh->layer_names[i]);
			}
		}
	}
}

size_t version_depth(const struct node *v)
{
	return v->error || !v->nlayers ? 0 : v->nlayers - 1;
}

/*
 * Takes version old out of its directory's index (table lock held).
 * Returns it if nothing else holds it, for the caller to destroy after
 * unlocking; NULL otherwise (it lives on while the kernel or a handle has it).
 */
static struct node *retire_locked(struct node_table *t, struct node *dir,
				  struct node *old, const struct node *successor)
{
	if (!old)
		return NULL;
	if (successor)
		report_rewritten_layers(old, successor);
	vindex_del_locked(dir, old);
	old->current = false;
	return node_release_locked(t, old) ? old : NULL;
}

/* Identities of layers that left the store, whose maps are dropped. */
struct gone_ids {
	struct layer_id *ids;
	size_t n, cap;
};

/* Adds v's layer identities to g (table lock held; no room: skipped). */
static void note_gone(struct gone_ids *g, const struct node *v)
{
	if (g->n + v->nlayers > g->cap) {
		size_t nc = (g->cap + v->nlayers) * 2;
		struct layer_id *ni = realloc(g->ids, nc * sizeof(*ni));

		if (!ni)
			return;
		g->ids = ni;
		g->cap = nc;
	}
	memcpy(g->ids + g->n, v->layer_ids, v->nlayers * sizeof(*v->layer_ids));
	g->n += v->nlayers;
}

/* Retires dir's current versions whose names dir->index lacks, or all of
 * them. dir->lock held. */
static void retire_names(struct node_table *t, struct node *dir, bool all)
{
	struct gone_ids gone = { 0 };
	struct node *dead = NULL;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < dir->versions.nb; i++) {
		struct node *v = dir->versions.b[i];

		while (v) {
			struct node *next = v->vnext, *d;

			if (all || !dir->index || !store_dir_find(dir->index, v->name)) {
				note_gone(&gone, v);
				d = retire_locked(t, dir, v, NULL);
				if (d) {	/* vnext is free now: a list */
					d->vnext = dead;
					dead = d;
				}
			}
			v = next;
		}
	}
	pthread_mutex_unlock(&t->lock);
	while (dead) {
		struct node *next = dead->vnext;

		node_destroy_chain(t, dead);	/* dir has other holders */
		dead = next;
	}
	for (size_t i = 0; i < gone.n; i++)
		cache_drop(view_env_cache(t->env), &gone.ids[i]);
	free(gone.ids);
}

void version_retire_gone_locked(struct node_table *t, struct node *dir)
{
	if (dir->retired_gen == dir->index_gen)
		return;
	dir->retired_gen = dir->index_gen;
	retire_names(t, dir, false);
}

void version_retire_all_locked(struct node_table *t, struct node *dir)
{
	retire_names(t, dir, true);
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
	h = store_name_hash(v->name);
	now = mono_ns();
	for (size_t i = 0; dir->stale_opens && i < NODE_STALE_OPENS; i++) {
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

bool version_retry_marked_locked(struct node *v, uint32_t pid)
{
	return v->kind == NODE_VIEW && retry_of_locked(v, pid, mono_ns()) != NULL;
}

/*
 * The layer names a version made from group g now would have (g's chain,
 * or every layer of g if its chain is unusable), into *names (malloc'd,
 * pointing into g) and *n; *bad says which. No I/O. Returns 0 or -ENOMEM.
 */
static int group_layer_names(const struct store_group *g, const char ***names,
			     size_t *n, bool *bad)
{
	struct store_chain chain = { 0 };
	const char *why;
	int ret = store_chain_resolve(g, &chain, &why);

	if (ret == -ENOMEM)
		return ret;
	*bad = ret != 0;
	*n = *bad ? g->nlayers : chain.nlayers;
	*names = malloc((*n ? *n : 1) * sizeof(**names));
	if (!*names) {
		store_chain_free(&chain);
		return -ENOMEM;
	}
	for (size_t i = 0; i < *n; i++)
		(*names)[i] = *bad ? g->layers[i].fname : chain.layers[i]->fname;
	store_chain_free(&chain);
	return 0;
}

int version_listed_ino_locked(struct node_table *t, struct node *dir,
			      const struct store_group *g, uint64_t *ino)
{
	const char **names = NULL;
	size_t n = 0, gi = (size_t)(g - dir->index->groups);
	struct node *v;
	bool bad = false, same;
	int ret;

	if (!dir->index_ino) {
		dir->index_ino = calloc(dir->index->ngroups, sizeof(*dir->index_ino));
		if (!dir->index_ino)
			return -ENOMEM;
	}
	/* Most names of a big directory have no version yet: their number is
	 * the promise, without working out their chains. */
	pthread_mutex_lock(&t->lock);
	v = vindex_find_locked(dir, g->name);
	if (v) {
		pthread_mutex_unlock(&t->lock);
		ret = group_layer_names(g, &names, &n, &bad);
		if (ret)
			return ret;
		pthread_mutex_lock(&t->lock);
		v = vindex_find_locked(dir, g->name);
	}
	same = v && v->nlayers == n && (v->error != NULL) == bad;
	for (size_t i = 0; same && i < n; i++)
		same = strcmp(v->layer_names[i], names[i]) == 0;
	if (same)
		*ino = v->vino;
	else if (dir->index_ino[gi])
		*ino = dir->index_ino[gi];
	else
		*ino = dir->index_ino[gi] = t->next_vino++;
	pthread_mutex_unlock(&t->lock);
	free(names);
	return 0;
}

/* The inode number a listing promised to the next version of group g
 * (dir->lock held), handed over once; 0 if none. */
static uint64_t take_promise(struct node *dir, const struct store_group *g)
{
	size_t gi = (size_t)(g - dir->index->groups);
	uint64_t ino;

	if (!dir->index_ino)
		return 0;
	ino = dir->index_ino[gi];
	dir->index_ino[gi] = 0;
	return ino;
}

/* version_get() with the directory's fd pinned: dfd. */
static int get_version(struct node_table *t, struct node *dir, int dfd,
		       const char *name, uint64_t lookups, uint32_t pid,
		       struct node **out, struct stat *st)
{
	struct chain_probe cp = { 0 };
	const struct store_group *g;
	struct node *v, *fresh = NULL, *dead = NULL;
	int ret, tries = 0;

	/*
	 * dir->lock is held from the probe to the version's insertion: the
	 * chain seen and the version chosen are one snapshot, and the
	 * compactor (which renames under the same lock and updates the
	 * version's identity) cannot fall in between.
	 */
	for (;;) {
		pthread_mutex_lock(&dir->lock);
		ret = dir_refresh_locked(t, dir, tries > 0);
		if (!ret)
			version_retire_gone_locked(t, dir);
		g = ret ? NULL : store_dir_find(dir->index, name);
		if (!ret && !g)
			ret = -ENOENT;
		if (!ret)
			ret = probe_chain(dfd, g, &cp);
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
			dead = retire_locked(t, dir, vindex_find_locked(dir, name), NULL);
			pthread_mutex_unlock(&t->lock);
		}
		pthread_mutex_unlock(&dir->lock);
		if (dead)
			node_destroy_chain(t, dead);
		return ret;
	}

	pthread_mutex_lock(&t->lock);
	v = vindex_find_locked(dir, name);
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
	dead = retire_locked(t, dir, vindex_find_locked(dir, name), fresh);
	if (vindex_add_locked(dir, fresh)) {
		pthread_mutex_unlock(&t->lock);
		pthread_mutex_unlock(&dir->lock);
		node_destroy(fresh);
		if (dead)
			node_destroy_chain(t, dead);
		return -ENOMEM;
	}
	fresh->vino = take_promise(dir, g);
	if (!fresh->vino)
		fresh->vino = t->next_vino++;
	fresh->vattr.st_ino = (ino_t)fresh->vino;
	/* Versions sit in the hash under (0, vino), clear of STORE's entries
	 * (a real device number is never 0 for a filesystem with inodes). */
	fresh->dev = 0;
	fresh->ino = (ino_t)fresh->vino;
	node_hash_insert_locked(t, fresh);
	fresh->nlookup = lookups;
	note_retry_locked(dir, fresh, pid);
	fresh->current = true;
	dir->refs++;
	*st = fresh->vattr;
	if (t->hooks.version_made_locked)
		t->hooks.version_made_locked(t, fresh);
	/* Logged before unlocking: a version taken without a lookup count
	 * can be retired and freed by another thread as soon as we do. */
	if (fresh->error)
		log_err("%s: unusable: %s", fresh->path, fresh->error);
	pthread_mutex_unlock(&t->lock);
	pthread_mutex_unlock(&dir->lock);
	if (dead)
		node_destroy_chain(t, dead);
	*out = fresh;
	return 0;
}

int version_get(struct node_table *t, struct node *dir, const char *name,
		uint64_t lookups, uint32_t pid, struct node **out, struct stat *st)
{
	int dfd = node_fd_get(t, dir), ret;

	if (dfd < 0)
		return dfd;
	ret = get_version(t, dir, dfd, name, lookups, pid, out, st);
	node_fd_put(t, dir);
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
		/* Remembered for the kernel's retry (its lookup, then its
		 * open): the ring must not wrap before a retry comes, also
		 * when readers that churn through versions are descheduled
		 * (one stale open in 14,211 reached an application under
		 * make -j2 with a ring of 8). Without memory, the retry of
		 * this open answers ESTALE too. */
		if (!dir->stale_opens)
			dir->stale_opens = calloc(NODE_STALE_OPENS, sizeof(*dir->stale_opens));
		if (dir->stale_opens) {
			struct node_stale_open *so =
				&dir->stale_opens[dir->stale_next++ % NODE_STALE_OPENS];

			so->pid = pid;
			so->name_hash = store_name_hash(n->name);
			so->ns = now;
		}
		ret = -ESTALE;
	}
	pthread_mutex_unlock(&t->lock);
	if (ret)
		log_debug("%s: open of a superseded version by thread %u: ESTALE, "
			  "the kernel looks the name up again", n->path, pid);
	return ret;
}
