/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's compaction scheduling (doc/format.md §6): which versions are
 * compacted, when, and what the table learns from it. The compaction itself
 * is compact.c's; this file queues versions whose chain is deeper than the
 * threshold (a hook the table calls when a version becomes current), runs
 * them one at a time on one thread at the lowest CPU and I/O priority, and
 * after a compaction moves the version onto its new base (same content:
 * same inode, same page cache) and prunes the layers the new base
 * supersedes.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "compact.h"
#include "compactd.h"
#include "log.h"
#include "monotime.h"
#include "node_priv.h"
#include "stats.h"
#include "version.h"

struct compactd {
	struct compact_opts copts;
	pthread_t thread;
	pthread_cond_t cond;		/* signals jobs or stop */
	struct cjob *jobs;		/* protected by node_table.lock */
	int stop;			/* atomic; also protected by
					   node_table.lock */
};

/* A version waiting for the compactor; holds a reference on it. */
struct cjob {
	struct node *v;
	int64_t due_ns;		/* not before (CLOCK_MONOTONIC); 0: now */
	struct cjob *next;
};

/* Queues v for compaction, not before due_ns, if its chain is deeper
 * than the threshold. */
static void compact_enqueue_at_locked(struct node_table *t, struct node *v,
				      int64_t due_ns)
{
	struct compactd *cd = t->compactd;
	struct cjob *j;

	if (!cd || v->error || v->cstate != COMPACT_IDLE ||
	    version_depth(v) <= cd->copts.threshold)
		return;
	j = calloc(1, sizeof(*j));
	if (!j)
		return;		/* retried when the next version appears */
	j->v = v;
	j->due_ns = due_ns;
	v->refs++;
	v->cstate = COMPACT_PENDING;
	j->next = cd->jobs;
	cd->jobs = j;
	pthread_cond_signal(&cd->cond);
}

/* The table's hook: a version became current; queued at once. */
static void compact_enqueue_locked(struct node_table *t, struct node *v)
{
	compact_enqueue_at_locked(t, v, 0);
}

struct publish_ctx {
	struct node_table *t;
	struct node *v;
	size_t nmerge;
	int dfd;		/* the directory's fd, pinned */
	struct layer_id *old_ids;	/* the chain before the rename, for
					   move_readers(); set by
					   compact_published(), freed by
					   compact_version() */
	size_t nold;
};

/*
 * Called by compact_chain() right after the new base is renamed into place,
 * with the directory's lock held: the version now *is* the new base plus
 * its kept diffs. Its inode, attributes and page cache stay as they are
 * (the content is the same); the next lookup matches it again. The old
 * chain's identities go to pc->old_ids, for move_readers().
 */
static void compact_published(void *ctx, const char *new_base)
{
	struct publish_ctx *pc = ctx;
	struct node *v = pc->v;
	size_t n = v->nlayers - pc->nmerge + 1;
	char **names = calloc(n, sizeof(*names)), **old_names;
	struct layer_id *ids = calloc(n, sizeof(*ids)), *old_ids;
	struct node_views views;
	struct stat st;

	if (!names || !ids || fstatat(pc->dfd, new_base, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
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
	 * old view, until move_readers() moves their reads. The pins of
	 * lookups (node_view_pin()) hold the old layers too: their opens
	 * build the view on the new base as well. */
	node_views_take_locked(v, &views);
	pthread_mutex_unlock(&v->lock);
	node_views_put(&views);
	for (size_t i = 0; i < pc->nmerge; i++)
		free(old_names[i]);
	free(old_names);
	pc->old_ids = old_ids;
	pc->nold = n + pc->nmerge - 1;
}

/*
 * The view of the first k layers of version v's compacted chain, for the
 * open files of a view of its first k + nmerge - 1 layers before (the same
 * bytes): v's own view where that is all of it (as an open builds it),
 * else one opened from the directory and checked to be of the very layers
 * v names. 0, or -errno (the chain does not open, or changed meanwhile).
 */
static int compacted_view(struct node_table *t, struct node *v, int dfd,
			  size_t k, struct view **out)
{
	struct store_chain chain = { 0 };
	char why[256];
	int ret;

	if (k == v->nlayers) {
		ret = node_view(t, v, out);
		if (ret == 0)
			view_set_label(*out, v->path);
		return ret;
	}
	if (store_chain_from_names((const char *const *)v->layer_names, k, &chain))
		return -ENOMEM;
	ret = view_open(t->env, dfd, &chain, out, why, sizeof(why));
	store_chain_free(&chain);
	if (ret)
		return ret;
	if (view_layers_differ(*out, v->layer_ids, k) < k) {
		view_put(*out);
		return -ESTALE;
	}
	view_set_label(*out, v->path);
	return 0;
}

/*
 * After a compaction of version v that merged pc->nmerge layers: every
 * view that open files hold and whose chain began with those layers (v's
 * own view from before, and those of older versions of the name, opened
 * before v's newer diffs were published) reads the same bytes from the
 * new base and the diffs kept. view_move() sends their reads there, so
 * that the merged layers, which the prune deletes from STORE, are closed
 * and their blocks freed once the reads and pushes under way are done,
 * not when the last of those files closes (doc/format.md §3, doc/design.md
 * §10.5). Where the new chain does not open (a kept diff rolled back
 * meanwhile), they keep the old layers.
 */
static void move_readers(struct node_table *t, struct node *v, const struct publish_ctx *pc)
{
	struct view **held;
	size_t n;

	if (!pc->old_ids)
		return;
	/* Only this thread changes v's layers: read without the lock. */
	n = view_env_held_prefixes(t->env, pc->old_ids, (unsigned)pc->nold,
				   (unsigned)pc->nmerge, &held);
	for (size_t i = 0; i < n; i++) {
		size_t k = held[i]->nlayers - pc->nmerge + 1;
		struct view *nv;

		if (compacted_view(t, v, pc->dfd, k, &nv) == 0) {
			if (view_move(held[i], nv)) {
				stats_add(STAT_VIEWS_MOVED, 1);
				log_debug("%s: open files of a view of %u layers moved "
					  "onto the compacted chain (%zu layers)",
					  v->path, held[i]->nlayers, k);
			}
			view_put(nv);
		}
		view_put(held[i]);
	}
	free(held);
}

/* Compacts version v if it is still current and deep enough. */
static void compact_version(struct node_table *t, struct node *v)
{
	struct node *dir = v->parent;
	struct store_chain chain = { 0 };
	struct compact_result res;
	struct publish_ctx pc = { t, v, 0, -1, NULL, 0 };
	struct compactd *cd = t->compactd;
	struct compact_opts o = cd->copts;
	uint64_t new_base_seq = 0;
	char **prune = NULL;	/* superseded layers, for the prune */
	bool retry = false;
	int64_t retry_ns = 0;	/* when, if retry */
	int ret;

	/* The chain this version was made of, copied: compact_published()
	 * replaces the version's list while compact_chain() still needs the
	 * old names. Only this thread changes a version's layers, so they can
	 * be read here without the table lock. */
	if (store_chain_from_names((const char *const *)v->layer_names, v->nlayers, &chain))
		goto out;
	pc.nmerge = compact_plan(&chain, &o);
	if (!pc.nmerge)
		goto out;
	/* Only a chain that opens cleanly is compacted: one that is refused
	 * (doc/format.md §5) must stay refused, not be baked into a base. */
	{
		struct view *chk;

		if (node_view(t, v, &chk) != 0)
			goto out;
		node_view_done(t, v, chk);
	}
	new_base_seq = chain.layers[pc.nmerge - 1]->seq;

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
	pc.dfd = node_fd_get(t, dir);
	if (pc.dfd < 0)
		goto out;
	o.stop = &cd->stop;
	o.store_dev = t->root->dev;
	o.store_ino = t->root->ino;
	o.publish_lock = &dir->lock;
	o.published = compact_published;
	o.ctx = &pc;
	ret = compact_chain(pc.dfd, v->name, &chain, pc.nmerge,
			    view_env_cache(t->env), &o, &res);
	if (ret == -ECANCELED) {
		log_info("%s: compaction stopped; the store is unchanged", v->path);
		goto out;
	}
	pthread_mutex_lock(&t->lock);
	v->cheld = ret == -EALREADY;
	pthread_mutex_unlock(&t->lock);
	if (ret == -EALREADY) {
		/* Another compactor, here or on another host, has this chain.
		 * Tried again later: it may die (its lock dies with it), or
		 * finish, and then the merged layers are gone (-EAGAIN) or
		 * this version is no longer current. */
		log_debug("%s: compaction skipped: the chain's compaction lock is "
			  "held by another compactor", v->path);
		retry = true;
		retry_ns = mono_ns() + (int64_t)COMPACT_HELD_RETRY_MS * 1000000;
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
		view_put_owned(old_view);
		pthread_mutex_lock(&t->lock);
		dir->index_stale = true;
		pthread_mutex_unlock(&t->lock);
		goto out;
	}
	if (ret == -EXDEV || ret == -EAGAIN || ret == -EBUSY)
		stats_add(STAT_COMPACT_ABANDONED, 1);
	if (ret == -EXDEV) {
		dir_moved_out(t, dir);
		goto out;
	}
	if (ret == -EAGAIN) {
		/* A rollback came first, or another host's compactor: not a
		 * failure. */
		log_info("%s: compaction abandoned: a merged layer changed "
			 "meanwhile (a rollback, or another compactor finished "
			 "first); the store is unchanged by this one", v->path);
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
		stats_add(STAT_COMPACT_REFUSED, 1);
		stats_set_compact_cause(v->path, res.refused);
		pthread_mutex_lock(&t->lock);
		free(v->crefused);
		v->crefused = why;
		pthread_mutex_unlock(&t->lock);
		goto out;
	}
	if (ret) {
		char *why = NULL;

		if (res.published)
			log_err_rl("%s: compaction incomplete after the new base was in "
				   "place: %s; content unchanged, superseded layers remain",
				   v->path, strerror(-ret));
		else
			log_err_rl("%s: compaction failed: %s; the store is unchanged",
				   v->path, strerror(-ret));
		/* Shown in user.snapfs.compaction until a compaction of this
		 * version succeeds (a new version starts clean). */
		if (asprintf(&why, "%s%s", res.published ? "incomplete after the "
			     "new base was in place: " : "", strerror(-ret)) < 0)
			why = NULL;
		stats_add(STAT_COMPACT_FAILED, 1);
		stats_set_compact_cause(v->path, why ? why : strerror(-ret));
		pthread_mutex_lock(&t->lock);
		free(v->cfailed);
		v->cfailed = why;
		pthread_mutex_unlock(&t->lock);
		goto out;
	}
	pthread_mutex_lock(&t->lock);
	free(v->cfailed);
	v->cfailed = NULL;
	pthread_mutex_unlock(&t->lock);
	stats_add(STAT_COMPACT_DONE, 1);
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

		if (g)
			compact_prune_list(g, new_base_seq, &prune);	/* -ENOMEM: next time */
	}
	pthread_mutex_unlock(&dir->lock);
	move_readers(t, v, &pc);
	compact_prune_names(pc.dfd, v->path, prune);	/* unlinks, warns, frees */
out:
	free(pc.old_ids);
	if (pc.dfd >= 0)
		node_fd_put(t, dir);
	store_chain_free(&chain);
	pthread_mutex_lock(&t->lock);
	v->cstate = COMPACT_IDLE;
	if (retry && v->current && !cd->stop)
		compact_enqueue_at_locked(t, v, retry_ns);
	pthread_mutex_unlock(&t->lock);
}

/* Unlinks and returns the first job that is due, or NULL. */
static struct cjob *take_due_locked(struct compactd *cd)
{
	int64_t now = 0;

	for (struct cjob **pp = &cd->jobs; *pp; pp = &(*pp)->next) {
		struct cjob *j = *pp;

		if (j->due_ns && !now)
			now = mono_ns();
		if (!j->due_ns || j->due_ns <= now) {
			*pp = j->next;
			return j;
		}
	}
	return NULL;
}

/* Waits for a new job, stop, or the earliest due time of a waiting one. */
static void wait_for_jobs_locked(struct node_table *t, struct compactd *cd)
{
	int64_t due = 0;
	struct timespec ts;

	for (struct cjob *j = cd->jobs; j; j = j->next)
		if (!due || j->due_ns < due)
			due = j->due_ns;
	if (!due) {
		pthread_cond_wait(&cd->cond, &t->lock);
		return;
	}
	ts.tv_sec = due / 1000000000;
	ts.tv_nsec = due % 1000000000;
	pthread_cond_timedwait(&cd->cond, &t->lock, &ts);
}

static void *compact_thread(void *arg)
{
	struct node_table *t = arg;
	struct compactd *cd = t->compactd;

	/* Page faults of running VMs come first: lowest CPU and I/O class. */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, 3 << 13 /* IDLE */);

	pthread_mutex_lock(&t->lock);
	for (;;) {
		struct cjob *j;

		while (!(j = take_due_locked(cd)) && !cd->stop)
			wait_for_jobs_locked(t, cd);
		if (cd->stop) {
			if (j) {	/* back on the list, for compactd_stop() */
				j->next = cd->jobs;
				cd->jobs = j;
			}
			break;
		}
		pthread_mutex_unlock(&t->lock);
		compact_version(t, j->v);
		node_unref(t, j->v);
		free(j);
		pthread_mutex_lock(&t->lock);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int compactd_start(struct node_table *t, const struct compact_opts *opts)
{
	struct compactd *cd = calloc(1, sizeof(*cd));
	int ret;

	if (!cd)
		return -ENOMEM;
	cd->copts = *opts;
	{
		/* Due times are CLOCK_MONOTONIC: so are the timed waits. */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&cd->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_mutex_lock(&t->lock);
	t->compactd = cd;
	t->hooks.version_made_locked = compact_enqueue_locked;
	pthread_mutex_unlock(&t->lock);
	ret = -pthread_create(&cd->thread, NULL, compact_thread, t);
	if (ret) {
		pthread_mutex_lock(&t->lock);
		t->compactd = NULL;
		t->hooks.version_made_locked = NULL;
		pthread_mutex_unlock(&t->lock);
		pthread_cond_destroy(&cd->cond);
		free(cd);
		log_err("cannot start the compactor: %s", strerror(-ret));
	}
	return ret;
}

void compactd_stop(struct node_table *t)
{
	struct compactd *cd = t->compactd;
	struct cjob *j;

	if (!cd)
		return;
	pthread_mutex_lock(&t->lock);
	__atomic_store_n(&cd->stop, 1, __ATOMIC_RELAXED);
	pthread_cond_signal(&cd->cond);
	t->hooks.version_made_locked = NULL;
	pthread_mutex_unlock(&t->lock);
	pthread_join(cd->thread, NULL);
	pthread_mutex_lock(&t->lock);
	t->compactd = NULL;
	pthread_mutex_unlock(&t->lock);
	while ((j = cd->jobs)) {
		cd->jobs = j->next;
		j->v->cstate = COMPACT_IDLE;
		node_unref(t, j->v);
		free(j);
	}
	pthread_cond_destroy(&cd->cond);
	free(cd);
}

char *compactd_describe(struct node_table *t, struct node *v)
{
	const char *why = NULL;
	char *state;

	pthread_mutex_lock(&t->lock);
	if (t->compactd && v->cstate == COMPACT_IDLE)
		why = v->crefused ? v->crefused : v->cfailed;
	if (asprintf(&state, "%s%s", !t->compactd ? "off" :
		     v->cstate == COMPACT_RUNNING ? "running" :
		     v->cstate == COMPACT_PENDING && v->cheld ?
		     "held: by another compactor" :
		     v->cstate == COMPACT_PENDING ? "pending" :
		     v->crefused ? "refused: " :
		     v->cfailed ? "failed: " : "idle", why ? why : "") < 0)
		state = NULL;
	pthread_mutex_unlock(&t->lock);
	return state;
}
