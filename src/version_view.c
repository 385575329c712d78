/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The view of a version (version.h: node_view() and the rest): built on
 * first use from the layers its lookup found, their fds held only while
 * someone uses it and opened again on the next use, a build that failed
 * remembered, and the pins that keep a retrying thread's layers open
 * until its open (doc/design.md §9.6, §13). A member of the node family
 * beside version.c (node_priv.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "node_priv.h"
#include "version.h"

/* True if a layer of version n (in directory dfd) is gone or no longer the
 * file it was. */
static bool layers_moved_on(const struct node *n, int dfd)
{
	for (size_t i = 0; i < n->nlayers; i++)
		if (!layer_unchanged(dfd, n->layer_names[i], &n->layer_ids[i]))
			return true;
	return false;
}

/* After a first try (tries 0) that ran out of fds: the table closes its
 * idle entry fds, and true if that freed any, so a second try may work. */
static bool shed_for_retry(struct node_table *t, int ret, int tries)
{
	return (ret == -EMFILE || ret == -ENFILE) && !tries && node_fd_shed(t);
}

/*
 * Opens the layers of n's detached view again (n->lock held). A layer that
 * is gone or another file now means a newer chain: the view is dropped and
 * the caller gets -ESTALE. Out of fds, the table's idle fds are shed and it
 * tries once more.
 */
static int reattach_locked(struct node_table *t, struct node *n, int dfd)
{
	char why[512];
	int ret;

	for (int tries = 0;; tries++) {
		why[0] = '\0';
		ret = view_attach(n->view, dfd, why, sizeof(why));
		if (!shed_for_retry(t, ret, tries))
			break;
	}
	if (ret == -ESTALE) {
		log_debug("%s: %s; the next lookup shows the new version", n->path, why);
		view_put_owned(n->view);
		n->view = NULL;
	} else if (ret) {
		log_err_rl("%s: cannot open: %s", n->path, why[0] ? why : strerror(-ret));
	}
	return ret;
}

/* Builds n's view (n->lock held, none yet) from its layers in dfd; on
 * success, with a reference for the caller. */
static int build_locked(struct node_table *t, struct node *n, int dfd)
{
	struct store_chain chain = { 0 };
	char why[512];
	int ret;

	ret = store_chain_from_names((const char *const *)n->layer_names, n->nlayers, &chain);
	if (ret)
		return ret == -ENOMEM ? -ENOMEM : -EIO;
	for (int tries = 0;; tries++) {
		why[0] = '\0';
		ret = view_open_async(t->env, dfd, &chain, n->path, &n->view,
				      why, sizeof(why));
		if (!shed_for_retry(t, ret, tries))
			break;
	}
	store_chain_free(&chain);
	if (ret == 0) {
		/* The layers opened must be the ones this version was made of;
		 * a layer replaced since the lookup belongs to a newer version. */
		size_t i = view_layers_differ(n->view, n->layer_ids, n->nlayers);

		if (i < n->nlayers) {
			view_put(n->view);
			n->view = NULL;
			snprintf(why, sizeof(why), "layer %s changed between "
				 "lookup and open", n->layer_names[i]);
			ret = -ESTALE;
		}
	}
	if (ret == 0) {
		/* The caller's reference, taken before the view is owned: a
		 * builder (view_open_async()) that lets go of its own now
		 * must not leave the owner's alone and close the layers. */
		view_get(n->view);
		view_own(n->view);
		return 0;
	}
	if (ret == -EIO && layers_moved_on(n, dfd)) {
		/* A layer went away or changed since the lookup (a rollback, a
		 * compaction): not this chain's fault; the kernel looks the
		 * name up again and finds the version that exists now. */
		ret = -ESTALE;
	} else if (ret == -EIO || ret == -EMEDIUMTYPE) {
		n->build_error = strdup(why);
		/* A filesystem that cannot serve diffs is said once for the
		 * filesystem (view.h), not once per chain. */
		if (ret == -EIO)
			log_err("%s: unusable: %s", n->path, why);
		else
			log_debug("%s: unusable: %s", n->path, why);
		ret = -EIO;
	} else if (ret == -ESTALE) {
		/* A race with a publish, rollback or compaction, not a fault:
		 * -ESTALE makes the kernel look the name up again and retry. */
		log_debug("%s: %s; the next lookup shows the new version",
			  n->path, why);
	} else {
		/* Out of memory or file descriptors: not the chain's fault,
		 * so nothing is remembered and the next open tries again. */
		log_err_rl("%s: cannot open: %s", n->path,
			   why[0] ? why : strerror(-ret));
	}
	return ret;
}

/*
 * Takes in what the build of n's view found when it failed after the open
 * (view_open_async(); n->lock held): as build_locked() does for a view
 * that fails at once, except that the builder logged it already. 0 while
 * the view is fine or still being built.
 */
static int build_failed_locked(struct node *n)
{
	char why[512];
	int ret = view_build_error(n->view, why, sizeof(why));

	if (!ret)
		return 0;
	if (ret == -EIO || ret == -EMEDIUMTYPE) {
		n->build_error = strdup(why);	/* NULL: the next open retries */
		ret = -EIO;
	}
	view_put_owned(n->view);
	n->view = NULL;
	return ret;
}

/* node_view() with n->lock held. */
static int view_locked(struct node_table *t, struct node *n, struct view **out)
{
	int dfd, ret;

	if (n->error || n->build_error)
		return -EIO;
	if (n->view) {
		ret = build_failed_locked(n);
		if (ret)
			return ret;
	}
	if (n->view && view_get_attached(n->view)) {
		*out = n->view;
		return 0;
	}
	dfd = node_fd_get(t, n->parent);
	if (dfd < 0)
		return dfd;
	if (n->view) {
		ret = reattach_locked(t, n, dfd);
		/* The view's only reference is n's (a detached view has no
		 * builder), and n->lock is held: nothing can close the
		 * layers just opened before this one is taken. */
		if (ret == 0)
			view_get(n->view);
	} else {
		ret = build_locked(t, n, dfd);
	}
	node_fd_put(t, n->parent);
	if (ret)
		return ret;
	*out = n->view;
	return 0;
}

/* node_view() without waiting for the map. */
static int view_unlocked(struct node_table *t, struct node *n, struct view **out)
{
	int ret;

	if (n->kind != NODE_VIEW)
		return -EINVAL;
	pthread_mutex_lock(&n->lock);
	ret = view_locked(t, n, out);
	pthread_mutex_unlock(&n->lock);
	return ret;
}

int node_view(struct node_table *t, struct node *n, struct view **out)
{
	int ret = view_unlocked(t, n, out);

	/* Its users read the map; one still being built is waited for
	 * without n->lock (opens of n go on meanwhile). */
	if (ret == 0 && view_wait(*out) != 0) {
		struct view *v = *out;

		pthread_mutex_lock(&n->lock);
		ret = n->view == v ? build_failed_locked(n) : 0;
		pthread_mutex_unlock(&n->lock);
		view_put(v);
		if (ret == 0)
			ret = -EIO;
	}
	return ret;
}

void node_view_done(struct node_table *t, struct node *n, struct view *v)
{
	(void)t;
	(void)n;
	view_put(v);	/* the last one but n's closes the layers */
}

#define NPINS (sizeof(((struct node *)0)->pins) / sizeof(((struct node *)0)->pins[0]))

int node_view_pin(struct node_table *t, struct node *n, uint32_t pid)
{
	struct view *v, *old;
	struct node_pin *p;
	int ret = view_unlocked(t, n, &v);	/* keeps layers open: no map needed */

	if (ret)
		return ret;
	pthread_mutex_lock(&n->lock);
	/* pid's slot, else a free one, else the first (its open is the
	 * least likely to come: pins are few and short-lived) */
	p = &n->pins[0];
	for (size_t i = 0; i < NPINS; i++) {
		if (n->pins[i].v && n->pins[i].pid == pid) {
			p = &n->pins[i];
			break;
		}
		if (!n->pins[i].v && p->v)
			p = &n->pins[i];
	}
	old = p->v;
	p->pid = pid;
	p->v = v;
	pthread_mutex_unlock(&n->lock);
	view_put(old);
	return 0;
}

int node_view_open(struct node_table *t, struct node *n, uint32_t pid, struct view **out)
{
	struct view *pinned = NULL;
	int ret;

	if (n->kind != NODE_VIEW)
		return -EINVAL;
	pthread_mutex_lock(&n->lock);
	ret = view_locked(t, n, out);
	pthread_mutex_unlock(&n->lock);
	/* Out of fds for open files: whoever holds views of versions nobody
	 * has open lets go of them (no lock of ours held), maps being built
	 * are let finish (their builders hold layers), then once more. */
	if (ret == -EMFILE) {
		bool freed = t->hooks.views_shed && t->hooks.views_shed(t);

		if (view_env_wait_builders(t->env, 500))
			freed = true;
		if (freed) {
			pthread_mutex_lock(&n->lock);
			ret = view_locked(t, n, out);
			pthread_mutex_unlock(&n->lock);
		}
	}
	/* This thread's open ends the pin of its lookup (node_view_pin()),
	 * whether or not it succeeded: the retry it was kept for is done. */
	pthread_mutex_lock(&n->lock);
	for (size_t i = 0; i < NPINS; i++) {
		if (n->pins[i].v && n->pins[i].pid == pid) {
			pinned = n->pins[i].v;
			n->pins[i].v = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&n->lock);
	view_put(pinned);
	return ret;
}

void node_view_close(struct node_table *t, struct node *n, struct view *v)
{
	(void)t;
	(void)n;
	view_put(v);	/* the last one but n's closes the layers */
}
