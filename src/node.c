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

void node_destroy(struct node *n)
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
	free(n->cfailed);
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

/* Called with t->lock held. */
void node_hash_insert_locked(struct node_table *t, struct node *n)
{
	size_t b = hash_of(t, n->dev, n->ino);

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
	if (n->kind == NODE_DIR && t->hooks.dir_released_locked)
		t->hooks.dir_released_locked(t, n);
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
		struct node *parent = n->kind == NODE_VIEW ? n->parent : NULL;
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
	dead = node_release_locked(t, n);
	pthread_mutex_unlock(&t->lock);
	if (dead)
		node_destroy_chain(t, n);
}
