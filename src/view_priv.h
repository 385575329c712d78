/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What view.c (reading a view, its lifetime), view_build.c (opening a
 * chain's layers and building its map) and view_env.c (the layer files
 * shared between views, the fd budget, what each filesystem's holes look
 * like) share. Nothing outside those three includes it.
 */
#ifndef SNAPFS_VIEW_PRIV_H
#define SNAPFS_VIEW_PRIV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "view.h"

struct probe;	/* one filesystem's hole granularity (view_env.c) */

/*
 * Open layers, keyed by identity: versions of one chain share their common
 * layers' fds, so the daemon holds one fd per distinct live layer however
 * many versions and opens use it (and a layer no view uses is closed).
 */
#define LAYER_BUCKETS 256

struct layer_file {
	struct layer_id id;
	int fd;
	void *map;			/* MAP_SHARED, PROT_READ; or NULL */
	unsigned refs;			/* protected by view_env.lock */
	struct layer_file *next;	/* protected by view_env.lock */
};

struct view_env {
	struct cache *cache;
	unsigned page_size;
	pthread_mutex_t lock;
	struct probe *probes;	/* protected by lock */
	size_t nprobes;		/* protected by lock */
	struct layer_file *layers[LAYER_BUCKETS];	/* protected by lock */
	size_t nlayers;		/* protected by lock */
	size_t nplain;		/* other fds of open files (view_env_take_fd());
				   protected by lock */
	size_t fd_budget;	/* nlayers + nplain at most; 0: no limit;
				   set before any view is built */
	bool map_layers;	/* set before any view is built */
	unsigned builders;	/* maps being built on threads of their own
				   (view_open_async()); protected by lock */
	pthread_cond_t builders_done;	/* with lock: builders fell to 0 */
	pthread_mutex_t views_lock;	/* the list below; taken with no
					   other lock and nothing taken
					   under it */
	struct view *views;	/* every view built (view.env_next) */
};

/* Adds a new view to env's list (view_env_held_prefixes()); view_free()
 * takes it out. */
void view_env_list(struct view_env *env, struct view *v);

/* ---- view_env.c ---- */

/*
 * Opens layer l->fname of dirfd into l, sharing the fd of an identical layer
 * another view holds. 0, or -EIO (the chain's trouble: gone, a symbolic link,
 * not a regular file), or -EMFILE, -ENFILE, -ENOMEM (the process's), with
 * the cause in why.
 */
int layer_file_open(struct view_env *env, int dirfd, struct view_layer *l,
		    char *why, size_t len);
/* Drops a reference of lf: the last closes (and unmaps) it. */
void layer_file_put(struct view_env *env, struct layer_file *lf);
/* -EMFILE, with the cause in why, if n more layers would not fit. */
int view_env_check_budget(struct view_env *env, size_t n, char *why, size_t len);
/* The hole granularity of the filesystem of dirfd (device dev), probed once
 * per device; difffd is a diff there, for the fallback and the log line. */
int view_env_granularity(struct view_env *env, int dirfd, int difffd,
			 uint64_t dev, uint64_t *gran);
/* Whether dense diff fd (of device dev) shows that its filesystem reports
 * no holes at all; said in the log once per device. */
bool view_env_hides_holes(struct view_env *env, int fd, uint64_t dev);

/* ---- view.c ---- */

/* Frees v, whatever its references: only before anyone else has it. */
void view_free(struct view *v);
/* Frees v's map (segments and index) and gives back its charge to the
 * cache's budget; nothing may read it any more. */
void view_drop_map(struct view *v);
/* Closes the layers of a view nobody reads (its map stays). */
void view_close_layers(struct view *v);
/* Builds the first-level index over v's segments, where they are many. */
void view_build_index(struct view *v);

#endif
