/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The inode table: what each FUSE node id stands for, and how long it lives
 * (see node.h for the model, node_priv.h for the family's layers and lock
 * order). A node stays while the kernel remembers it (lookup count) or
 * something inside holds it (references); then it leaves the hash and is
 * destroyed outside the lock. Versions hold their directory; a current
 * version is kept, dormant, after the kernel forgot it, so that its name
 * keeps its inode number until its chain changes.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#include "node_priv.h"
#include "stats.h"

static size_t hash_of(const struct node_table *t, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;

	return (size_t)(h ^ (h >> 29)) & (t->nbuckets - 1);
}

struct node *node_alloc(enum node_kind kind)
{
	struct node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->kind = kind;
	n->fd = -1;
	if (kind == NODE_VIEW)
		stats_add(STAT_VERSIONS_ALIVE, 1);	/* node_destroy() takes it back */
	pthread_mutex_init(&n->lock, NULL);
	return n;
}

void node_views_take_locked(struct node *n, struct node_views *out)
{
	out->view = n->view;
	n->view = NULL;
	for (size_t i = 0; i < sizeof(out->pins) / sizeof(out->pins[0]); i++) {
		out->pins[i] = n->pins[i].v;
		n->pins[i].v = NULL;
	}
}

void node_views_put(struct node_views *views)
{
	for (size_t i = 0; i < sizeof(views->pins) / sizeof(views->pins[0]); i++)
		view_put(views->pins[i]);
	view_put_owned(views->view);
}

void node_destroy(struct node *n)
{
	struct node_views views;

	if (n->fd >= 0)
		close(n->fd);
	store_dir_free(n->index);
	free(n->index_ino);
	free(n->versions.b);
	node_views_take_locked(n, &views);	/* nobody else has n */
	node_views_put(&views);
	for (size_t i = 0; i < n->nlayers; i++)
		free(n->layer_names[i]);
	free(n->layer_names);
	free(n->layer_ids);
	free(n->error);
	free(n->build_error);
	free(n->crefused);
	free(n->cfailed);
	free(n->stale_opens);
	free(n->name);
	free(n->path);
	pthread_mutex_destroy(&n->lock);
	if (n->kind == NODE_VIEW)
		stats_sub(STAT_VERSIONS_ALIVE, 1);
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
	t->fd_budget = 1024;
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
	/* The compactor and the watcher were stopped first (compactd_stop(),
	 * dirwatch_stop()): nothing else uses the table now. */
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

/* Doubles the (dev, ino) hash when it holds twice as many nodes as
 * buckets; keeps it as it is if memory is short. Table lock held. */
static void hash_grow_locked(struct node_table *t)
{
	struct node **old = t->buckets;
	size_t oldn = t->nbuckets;

	t->buckets = calloc(oldn * 2, sizeof(*t->buckets));
	if (!t->buckets) {
		t->buckets = old;
		return;
	}
	t->nbuckets = oldn * 2;
	for (size_t i = 0; i < oldn; i++) {
		while (old[i]) {
			struct node *n = old[i];
			size_t b = hash_of(t, n->dev, n->ino);

			old[i] = n->hnext;
			n->hnext = t->buckets[b];
			t->buckets[b] = n;
		}
	}
	free(old);
}

/* Called with t->lock held. */
void node_hash_insert_locked(struct node_table *t, struct node *n)
{
	size_t b;

	if (t->count >= 2 * t->nbuckets)
		hash_grow_locked(t);
	b = hash_of(t, n->dev, n->ino);

	n->hnext = t->buckets[b];
	t->buckets[b] = n;
	t->count++;
}

struct node *node_find_locked(struct node_table *t, dev_t dev, ino_t ino)
{
	struct node *n;

	for (n = t->buckets[hash_of(t, dev, ino)]; n; n = n->hnext)
		if (n->dev == dev && n->ino == ino)
			return n;
	return NULL;
}

struct node *node_root(struct node_table *t)
{
	return t->root;
}

/* STORE-relative path of child name in dir, for log lines. */
char *node_path_join(const struct node *dir, const char *name)
{
	char *p;

	if (!dir->path[0])
		return strdup(name);
	return asprintf(&p, "%s/%s", dir->path, name) < 0 ? NULL : p;
}

/* ---- a directory's index of current versions, by name ---- */

struct node *vindex_find_locked(struct node *dir, const char *name)
{
	const struct vindex *x = &dir->versions;
	uint64_t h;

	if (!x->nb)
		return NULL;
	h = store_name_hash(name);
	for (struct node *v = x->b[h & (x->nb - 1)]; v; v = v->vnext)
		if (v->vhash == h && strcmp(v->name, name) == 0)
			return v;
	return NULL;
}

/* Doubles the buckets (or makes the first 16); keeps the old ones if
 * memory is short, since chains only get longer. */
static void vindex_grow_locked(struct vindex *x)
{
	size_t nb = x->nb ? x->nb * 2 : 16;
	struct node **b = calloc(nb, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < x->nb; i++) {
		while (x->b[i]) {
			struct node *v = x->b[i];

			x->b[i] = v->vnext;
			v->vnext = b[v->vhash & (nb - 1)];
			b[v->vhash & (nb - 1)] = v;
		}
	}
	free(x->b);
	x->b = b;
	x->nb = nb;
}

/* Adds version v (not in the index) to dir's; -ENOMEM if there are no
 * buckets at all. */
int vindex_add_locked(struct node *dir, struct node *v)
{
	struct vindex *x = &dir->versions;

	if (x->n >= x->nb)
		vindex_grow_locked(x);
	if (!x->nb)
		return -ENOMEM;
	v->vhash = store_name_hash(v->name);
	v->vnext = x->b[v->vhash & (x->nb - 1)];
	x->b[v->vhash & (x->nb - 1)] = v;
	x->n++;
	return 0;
}

void vindex_del_locked(struct node *dir, struct node *v)
{
	struct vindex *x = &dir->versions;
	struct node **pp = &x->b[v->vhash & (x->nb - 1)];

	while (*pp && *pp != v)
		pp = &(*pp)->vnext;
	if (*pp) {
		*pp = v->vnext;
		x->n--;
	}
	v->vnext = NULL;
}

void vindex_each_locked(struct node *dir, void (*fn)(struct node *v, void *arg),
			void *arg)
{
	const struct vindex *x = &dir->versions;

	for (size_t i = 0; i < x->nb; i++)
		for (struct node *v = x->b[i]; v; v = v->vnext)
			fn(v, arg);
}

/* ---- STORE entries' fds and their budget (doc/design.md §9.6) ---- */

static void lru_unlink_locked(struct node_table *t, struct node *n)
{
	if (n->lru_prev)
		n->lru_prev->lru_next = n->lru_next;
	else if (t->lru_head == n)
		t->lru_head = n->lru_next;
	else
		return;		/* not on the list */
	if (n->lru_next)
		n->lru_next->lru_prev = n->lru_prev;
	else
		t->lru_tail = n->lru_prev;
	n->lru_prev = n->lru_next = NULL;
}

static void lru_push_locked(struct node_table *t, struct node *n)
{
	n->lru_prev = NULL;
	n->lru_next = t->lru_head;
	if (t->lru_head)
		t->lru_head->lru_prev = n;
	else
		t->lru_tail = n;
	t->lru_head = n;
}

/*
 * Takes fds off the least recently used unpinned entries until at most keep
 * are open; they are stored in out[] (at most max) for the caller to close
 * after unlocking. Returns how many.
 */
static unsigned shed_locked(struct node_table *t, unsigned keep, int *out,
			    unsigned max)
{
	unsigned n = 0;

	while (t->nfds > keep && t->lru_tail && n < max) {
		struct node *victim = t->lru_tail;

		lru_unlink_locked(t, victim);
		out[n++] = victim->fd;
		victim->fd = -1;
		t->nfds--;
	}
	return n;
}

static void close_all(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

#define SHED_BATCH 64

unsigned node_fd_shed(struct node_table *t)
{
	int fds[SHED_BATCH];
	unsigned n, total = 0;

	do {
		pthread_mutex_lock(&t->lock);
		n = shed_locked(t, 0, fds, SHED_BATCH);
		pthread_mutex_unlock(&t->lock);
		close_all(fds, n);
		total += n;
	} while (n == SHED_BATCH);
	return total;
}

void node_table_set_fd_budget(struct node_table *t, unsigned budget)
{
	t->fd_budget = budget < 4 ? 4 : budget;
}

unsigned node_table_open_fds(struct node_table *t)
{
	unsigned n;

	pthread_mutex_lock(&t->lock);
	n = t->nfds;
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* Pins n's fd if it is open; table lock held. */
static int pin_locked(struct node_table *t, struct node *n)
{
	if (n->fd < 0)
		return -1;
	if (!n->fd_pins++)
		lru_unlink_locked(t, n);
	return n->fd;
}

/*
 * Opens entry n again by name from its directory: the same inode or
 * -ESTALE. Out of fds, sheds the unpinned ones and tries once more.
 */
static int reopen(struct node_table *t, struct node *n)
{
	struct node *dir;
	struct stat st;
	char *name;
	int dfd, fd = -1, ret;

	pthread_mutex_lock(&t->lock);
	dir = n->parent;
	name = dir ? strdup(n->name) : NULL;
	if (dir)
		dir->refs++;	/* n's name may move to another directory */
	pthread_mutex_unlock(&t->lock);
	if (!dir)
		return -ESTALE;	/* the root is never closed */
	if (!name) {
		node_unref(t, dir);
		return -ENOMEM;
	}
	dfd = node_fd_get(t, dir);
	for (int tries = 0; dfd >= 0 && tries < 2; tries++) {
		fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !node_fd_shed(t))
			break;
	}
	ret = dfd < 0 ? dfd : fd < 0 ? -errno : 0;
	if (dfd >= 0)
		node_fd_put(t, dir);
	node_unref(t, dir);
	free(name);
	if (ret == -ENOENT || ret == -ENOTDIR)
		return -ESTALE;
	if (ret)
		return ret;
	if (fstat(fd, &st) < 0 || st.st_dev != n->dev || st.st_ino != n->ino) {
		close(fd);
		return -ESTALE;	/* the name leads elsewhere now */
	}
	return fd;
}

int node_fd_get(struct node_table *t, struct node *n)
{
	int fds[SHED_BATCH], fd, extra = -1;
	unsigned nshed;

	pthread_mutex_lock(&t->lock);
	fd = n == t->root ? n->fd : pin_locked(t, n);
	pthread_mutex_unlock(&t->lock);
	if (fd >= 0)
		return fd;

	fd = reopen(t, n);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&t->lock);
	if (n->fd >= 0) {		/* another thread reopened it first */
		extra = fd;
		fd = pin_locked(t, n);
	} else {
		n->fd = fd;
		n->fd_pins = 1;
		t->nfds++;
	}
	nshed = shed_locked(t, t->fd_budget, fds, SHED_BATCH);
	pthread_mutex_unlock(&t->lock);
	if (extra >= 0)
		close(extra);
	close_all(fds, nshed);
	return fd;
}

void node_fd_put(struct node_table *t, struct node *n)
{
	int fds[SHED_BATCH];
	unsigned nshed = 0;

	if (n == t->root)
		return;
	pthread_mutex_lock(&t->lock);
	if (--n->fd_pins == 0 && n->fd >= 0) {
		lru_push_locked(t, n);
		nshed = shed_locked(t, t->fd_budget, fds, SHED_BATCH);
	}
	pthread_mutex_unlock(&t->lock);
	close_all(fds, nshed);
}

/*
 * Called with t->lock held: unlinks n if nothing holds it any more and
 * returns true if the caller must destroy it (after unlocking). The current
 * version of a name is kept even then, dormant: the name keeps its inode
 * number and its remembered error until its chain changes.
 */
bool node_release_locked(struct node_table *t, struct node *n)
{
	if (n->nlookup || n->refs || n == t->root)
		return false;
	if (n->kind == NODE_VIEW && n->current)
		return false;
	if (n->fd >= 0) {	/* unpinned: nothing holds it */
		lru_unlink_locked(t, n);
		t->nfds--;
	}
	if (n->kind == NODE_DIR && t->hooks.dir_released_locked)
		t->hooks.dir_released_locked(t, n);
	if (n->kind == NODE_VIEW && t->hooks.version_released_locked)
		t->hooks.version_released_locked(t, n);
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

/* Destroys n and drops the reference it held on its parent, repeatedly. */
void node_destroy_chain(struct node_table *t, struct node *n)
{
	while (n) {
		struct node *parent = n->parent;
		bool more = false;

		if (n->kind == NODE_DIR && t->hooks.dir_destroyed)
			t->hooks.dir_destroyed(t, n);
		node_destroy(n);
		if (!parent)
			break;
		pthread_mutex_lock(&t->lock);
		parent->refs--;
		more = node_release_locked(t, parent);
		pthread_mutex_unlock(&t->lock);
		n = more ? parent : NULL;
	}
}

void node_forget(struct node_table *t, struct node *n, uint64_t nlookup)
{
	bool dead, dormant;

	pthread_mutex_lock(&t->lock);
	n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
	dead = node_release_locked(t, n);
	dormant = !dead && n->kind == NODE_VIEW && !n->nlookup && !n->refs;
	if (dormant)
		n->refs++;	/* keeps it while we drop its view */
	pthread_mutex_unlock(&t->lock);
	if (dead) {
		node_destroy_chain(t, n);
	} else if (dormant) {
		/* The kernel no longer knows this version: close its layers
		 * (open handles hold their own references to the view). A
		 * later lookup and open build the view again. */
		struct node_views views;

		pthread_mutex_lock(&n->lock);
		node_views_take_locked(n, &views);
		pthread_mutex_unlock(&n->lock);
		node_views_put(&views);
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
	dead = node_release_locked(t, n);
	pthread_mutex_unlock(&t->lock);
	if (dead)
		node_destroy_chain(t, n);
}
