/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Flatten on publish (flatten.h, doc/design.md §19).
 *
 * The invariant: a flat file, once ready, holds exactly the bytes of its
 * version, and is only ever handed to opens of that version. It holds them
 * because a version's content never changes (a new chain is a new version;
 * a compaction keeps the content) and the file is built from the version's
 * own view, whose layer fds stay open for the build. It is only handed to
 * that version because entries are found by the version's synthetic inode
 * number, which a mount never gives twice.
 *
 * An entry never holds its version node: the node's life (dormancy, layer
 * fds, destruction) is exactly what it would be without a flattener (a
 * node reference held across the kernel's forget would keep a dormant
 * version's layers open). The flat file is built from a reference on the
 * version's *view* instead, which the first open or read of
 * user.snapfs.flat offers (flatten_offer()): a view owns its layer fds and
 * is freed by its last reference, whichever thread drops it. An entry is
 * dropped when the next version of the same name is made (a publish, a
 * rollback): the hook marks it, the thread closes it. What a superseded
 * entry holds (its offered view, its directory's fd) is let go sooner by
 * the next offer, unless the thread is building it: under a fast
 * publisher the thread may lag behind, and the layers of superseded
 * versions must not pile up meanwhile.
 *
 * Crash safety needs no step of its own: the flat file is an O_TMPFILE,
 * never linked into the directory, so a crash or a kill at any point
 * leaves nothing on disk, and the chain's layers are only ever read.
 *
 * Lock order: node_table.lock, then flatten.lock. The version_made hook
 * runs with the table lock held and only touches memory; every close,
 * unref and build happens with no lock held, on the flattener's thread
 * or in an offer. Only that thread removes entries, and an offer never
 * touches the one it builds (flatten.busy), so the thread may use that
 * one without the lock.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "flatten.h"
#include "flatten_priv.h"
#include "log.h"
#include "node_priv.h"
#include "stats.h"
#include "version.h"
#include "warm.h"

/* Offered views waiting for the thread, at most, once half the fd budget
 * is in use: each holds its layers' fds, which count against the budget
 * (doc/design.md §9.6), while the thread builds one file at a time. An
 * offer past it is not taken; the version's next open offers again. */
#define FLAT_QUEUE 4

enum flat_state { FLAT_PENDING, FLAT_READY, FLAT_FAILED, FLAT_NONE };

/* One version with a flat file, wanted or built. */
struct flat {
	uint64_t vino;		/* the version's synthetic inode number */
	struct view *view;	/* referenced from the offer to the build;
				   protected by flatten.lock */
	int dirfd;		/* its directory (O_PATH), from the offer to
				   the build, else -1 */
	const struct node *dir;	/* its directory: compared, never followed */
	struct node *node;	/* the version: followed only with the table's
				   lock and ours held and dead false (its
				   release hook sets dead first) */
	char *name;		/* its NAME */
	char *path;		/* for log lines */
	bool dead;		/* superseded; protected by flatten.lock */
	enum flat_state state;	/* protected by flatten.lock */
	int fd;			/* the O_TMPFILE once ready, else -1 */
	char cause[160];	/* FLAT_FAILED: why; protected by flatten.lock */
	unsigned failures;	/* builds failed in a row; protected by
				   flatten.lock */
	bool drop;		/* its inode's page cache is to be dropped
				   (flatten_opts.drop); protected by
				   flatten.lock */
	bool keep;		/* never dropped: its FUSE-path opens will
				   read it again (flatten_fuse_closed());
				   protected by flatten.lock */
	int64_t retry_ns;	/* FLAT_FAILED: mono_ns() from when an offer
				   tries again; protected by flatten.lock */
	struct flat *next;
};

struct flatten {
	struct node_table *t;
	enum flatten_mode mode;
	bool (*usable)(void *ctx);
	flatten_drop_fn drop;
	void *ctx;
	void (*prev_hook)(struct node_table *t, struct node *v);
	unsigned (*prev_shed)(struct node_table *t);
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* new entries, a sweep, or stop */
	struct flat *list;	/* protected by lock */
	struct flat *busy;	/* the entry being built, else NULL;
				   protected by lock */
	bool kick;		/* protected by lock: sweep for superseded */
	bool drops;		/* protected by lock: some entry has drop set */
	int stop;		/* atomic; also protected by lock */
	dev_t noreflink_dev;	/* last device logged as unable to reflink;
				   atomic: written by the thread, read by
				   offers too */
};

int flatten_mode_parse(const char *s)
{
	if (!s || strcmp(s, "auto") == 0)
		return FLATTEN_AUTO;
	if (strcmp(s, "always") == 0)
		return FLATTEN_ALWAYS;
	if (strcmp(s, "off") == 0)
		return FLATTEN_OFF;
	return -1;
}

/* The hook: version v became current. Marks the entries of the versions
 * of its name that it supersedes, records v (pending) if it is layered, and
 * wakes the thread. Table lock held: memory only. */
static void flatten_made_locked(struct node_table *t, struct node *v)
{
	struct flatten *f = t->flatten;
	struct flat *e;

	if (f->prev_hook)
		f->prev_hook(t, v);
	pthread_mutex_lock(&f->lock);
	for (e = f->list; e; e = e->next)
		if (e->dir == v->parent && strcmp(e->name, v->name) == 0) {
			e->dead = true;
			f->kick = true;
		}
	if (!v->error && version_depth(v) > 0 && (e = calloc(1, sizeof(*e)))) {
		e->name = strdup(v->name);
		e->path = strdup(v->path ? v->path : v->name);
		if (e->name && e->path) {
			e->vino = v->vino;
			e->dir = v->parent;
			e->node = v;
			e->fd = -1;
			e->dirfd = -1;
			e->state = FLAT_PENDING;
			e->next = f->list;
			f->list = e;
			stats_add(STAT_FLAT_ENTRIES, 1);	/* flat_free() */
		} else {
			free(e->name);
			free(e->path);
			free(e);
		}
	}
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

/* The hook: version v leaves the table (a name deleted, a version
 * forgotten after it was superseded): its entry goes with it, so entries
 * never outnumber the versions the table holds. Table lock held. */
static void flatten_released_locked(struct node_table *t, struct node *v)
{
	struct flatten *f = t->flatten;

	pthread_mutex_lock(&f->lock);
	for (struct flat *e = f->list; e; e = e->next)
		if (e->vino == v->vino) {
			e->dead = true;
			f->kick = true;
			pthread_cond_signal(&f->cond);
			break;
		}
	pthread_mutex_unlock(&f->lock);
}

static void flat_free(struct flat *e)
{
	if (e->fd >= 0)
		close(e->fd);
	if (e->dirfd >= 0)
		close(e->dirfd);
	view_put(e->view);
	free(e->name);
	free(e->path);
	free(e);
	stats_sub(STAT_FLAT_ENTRIES, 1);
}

/* Drops the entries of superseded versions: their flat file is closed
 * (passthrough opens of it keep it until they close). */
static void sweep(struct flatten *f)
{
	struct flat *dead = NULL, **pp, *e;

	pthread_mutex_lock(&f->lock);
	for (pp = &f->list; (e = *pp);) {
		if (!e->dead) {
			pp = &e->next;
			continue;
		}
		*pp = e->next;
		e->next = dead;
		dead = e;
	}
	pthread_mutex_unlock(&f->lock);
	while ((e = dead)) {
		dead = e->next;
		if (e->state == FLAT_READY)
			log_debug("%s: flat file of a superseded version dropped", e->path);
		flat_free(e);
	}
}

/*
 * Test builds (--enable-fault-injection): while the file that
 * SNAPFS_FLATTEN_GATE names exists, no flat file is built, so a test can
 * open a version before its flat file is ready, deterministically.
 */
static void fault_gate(struct flatten *f)
{
#ifdef SNAPFS_FAULT_INJECTION
	const char *gate = getenv("SNAPFS_FLATTEN_GATE");

	while (gate && access(gate, F_OK) == 0 && !__atomic_load_n(&f->stop, __ATOMIC_RELAXED))
		usleep(10000);
#else
	(void)f;
#endif
}

/*
 * How long a version's view must go unread before its flat file is built:
 * a build clones ranges of the layers that a restoring VM is faulting in,
 * and on XFS those clones held the VM's reads up (a depth-64 version's
 * first read waited 1.1 s, doc/performance.md). A restore faults without
 * pauses of this length until its working set is in.
 */
#define FLAT_QUIET_MS 1000

/*
 * A failed build (no room, an I/O error, out of fds) is tried again at the
 * first offer (an open, a read of user.snapfs.flat) a minute later, then
 * after two, four... at most an hour: a version that VMs keep being
 * restored from should not stay on the FUSE path for good because the
 * disk was full once. SNAPFS_FLATTEN_RETRY_MS (fault-injection builds)
 * sets the first wait, for tests.
 */
#define FLAT_RETRY_MS 60000
#define FLAT_RETRY_MAX_MS 3600000

static int64_t retry_wait_ns(unsigned failures)
{
	int64_t ms = FLAT_RETRY_MS;

#ifdef SNAPFS_FAULT_INJECTION
	const char *r = getenv("SNAPFS_FLATTEN_RETRY_MS");

	if (r && *r)
		ms = strtoll(r, NULL, 10);
#endif
	for (unsigned i = 1; i < failures && ms < FLAT_RETRY_MAX_MS; i++)
		ms *= 2;
	if (ms > FLAT_RETRY_MAX_MS)
		ms = FLAT_RETRY_MAX_MS;
	return ms * 1000000;
}

static int64_t quiet_ns(void)
{
#ifdef SNAPFS_FAULT_INJECTION
	const char *q = getenv("SNAPFS_FLATTEN_QUIET_MS");

	if (q && *q)
		return strtoll(q, NULL, 10) * 1000000;
#endif
	return (int64_t)FLAT_QUIET_MS * 1000000;
}

/* Whether e's build should go on: not superseded, and the flattener not
 * stopping. No lock held (takes flatten.lock). */
static bool still_wanted(struct flatten *f, const struct flat *e)
{
	bool go;

	pthread_mutex_lock(&f->lock);
	go = !e->dead && !f->stop;
	pthread_mutex_unlock(&f->lock);
	return go;
}

/* Waits until vw has gone unread for quiet_ns() (its offer counts as a
 * read; reads are noted to VIEW_READ_GRAIN_NS). False if the flattener
 * stops or e is superseded meanwhile. No lock held. */
static bool wait_quiet(struct flatten *f, struct flat *e, const struct view *vw)
{
	const int64_t quiet = quiet_ns();

	for (;;) {
		int64_t idle = mono_ns() - view_last_read(vw), nap;

		if (!still_wanted(f, e))
			return false;
		if (idle >= quiet)
			return true;
		nap = quiet - idle < 50000000 ? quiet - idle : 50000000;
		nanosleep(&(struct timespec){ .tv_nsec = nap }, NULL);
	}
}

/* True if vw's base lies on the filesystem already found unable to
 * reflink, with -o flatten=auto: nothing would be built for it. */
static bool not_to_flatten(struct flatten *f, const struct view *vw)
{
	dev_t dev = __atomic_load_n(&f->noreflink_dev, __ATOMIC_RELAXED);
	struct stat st;

	return f->mode == FLATTEN_AUTO && dev && vw->nlayers > 0 &&
	       fstat(vw->layers[0].fd, &st) == 0 && st.st_dev == dev;
}

/* What offered entries hold (a view, and the directory's fd taken with
 * it), taken from them to be let go outside the lock by let_go(). */
struct held {
	struct view *view[16];
	int dirfd[16];
	size_t n;
};

/* Takes what the entries hold, those of superseded versions only if
 * dead_only, never the one the thread builds; at most 16. The entries
 * stay (pending if they were). flatten.lock held. */
static void take_held_locked(struct flatten *f, bool dead_only, struct held *h)
{
	h->n = 0;
	for (struct flat *e = f->list; e && h->n < 16; e = e->next) {
		if (!e->view || e == f->busy || (dead_only && !e->dead))
			continue;
		h->view[h->n] = e->view;
		h->dirfd[h->n++] = e->dirfd;
		e->view = NULL;
		e->dirfd = -1;
	}
}

/* Lets go of what take_held_locked() took. No lock held. */
static void let_go(const struct held *h)
{
	for (size_t i = 0; i < h->n; i++) {
		view_put(h->view[i]);
		if (h->dirfd[i] >= 0)
			close(h->dirfd[i]);
	}
}

/* warm_read()'s go_on: still_wanted() of one entry. */
struct warm_ctx {
	struct flatten *f;
	struct flat *e;
};

static bool warm_go_on(void *arg)
{
	struct warm_ctx *w = arg;

	return still_wanted(w->f, w->e);
}

/*
 * Reads flat file fd into the page cache where vw's layers are cached
 * (warm.h), at most half the memory available: else the first opens
 * served by passthrough would read from the disk what the FUSE path
 * reads from the page cache. -ECANCELED if e was superseded or the
 * flattener stops meanwhile; any other failure only leaves the file
 * colder (one debug line). No lock held.
 */
static int warm_flat(struct flatten *f, struct flat *e, const struct view *vw, int fd)
{
	struct warm_ctx w = { f, e };
	uint8_t *warm = calloc(warm_chunks(vw->size) + 1, 1);
	int *fds = calloc(vw->nlayers, sizeof(*fds));
	uint64_t avail, done = 0;
	int64_t want;
	int ret = 0;

	if (!warm || !fds)
		goto out;
	for (unsigned l = 0; l < vw->nlayers; l++)
		fds[l] = vw->layers[l].fd;
	want = warm_plan(vw->seg, vw->nseg, fds, vw->nlayers, vw->size, warm);
	if (want <= 0) {
		if (want < 0)
			log_debug("%s: flat file not read in: %s", e->path, strerror((int)-want));
		goto out;
	}
	avail = warm_mem_available();
	if (avail && (uint64_t)want > avail / 2) {
		log_debug("%s: flat file not read in: %" PRId64 " MiB of its layers "
			  "are cached, over half the %" PRIu64 " MiB available",
			  e->path, want >> 20, avail >> 20);
		goto out;
	}
	ret = warm_read(fd, warm, vw->size, warm_go_on, &w, &done);
	stats_add(STAT_FLAT_WARMED, done);
	if (ret && ret != -ECANCELED) {
		log_debug("%s: flat file read in only in part: %s", e->path, strerror(-ret));
		ret = 0;
	}
out:
	free(warm);
	free(fds);
	return ret;
}

/* How many entries' drops one pass takes: the rest wait for the next. */
#define DROP_BATCH 16

/*
 * Hands the entries marked drop whose next opens are served by passthrough
 * to flatten_opts.drop: those with a ready flat file, those a compaction
 * left with one layer (its base serves them), and built, the one this
 * thread just built (not yet shown ready, so that no passthrough open can
 * come first). Each goes with a reference on its version's node, taken
 * while the entry is not dead (its release hook marks it first), so that
 * its node id names no other inode meanwhile. This thread only; no lock
 * held; takes the table's lock (which lets it read a node's chain), then
 * ours.
 */
static void run_drops(struct flatten *f, struct flat *built)
{
	struct node *n[DROP_BATCH];
	size_t k = 0;

	if (!f->drop)
		return;
	pthread_mutex_lock(&f->t->lock);
	pthread_mutex_lock(&f->lock);
	for (struct flat *e = f->list; e; e = e->next) {
		if (!e->drop && e != built)
			continue;
		if (k == DROP_BATCH) {
			f->drops = true;	/* the loop comes back */
			break;
		}
		e->drop = false;	/* a close after this marks it again */
		if (e->dead || e->keep ||
		    (e->state != FLAT_READY && e != built && e->node->nlayers != 1))
			continue;	/* on its way out, wanted, or layered */
		e->node->refs++;
		n[k++] = e->node;
	}
	pthread_mutex_unlock(&f->lock);
	pthread_mutex_unlock(&f->t->lock);
	for (size_t i = 0; i < k; i++) {
		f->drop(f->ctx, node_id(f->t, n[i]));
		node_unref(f->t, n[i]);
	}
}

/* Builds e's flat file from its offered view and records the outcome. No
 * lock held. */
static void flatten_one(struct flatten *f, struct flat *e)
{
	char cause[sizeof(e->cause)] = "";
	enum flat_state state = FLAT_NONE;
	struct view *vw = e->view;	/* only this thread clears it */
	int64_t wait_ns = 0;
	int fd = -1, dirfd, ret;

	if (f->usable && !f->usable(f->ctx))
		goto out;	/* nothing could serve it */
	if (not_to_flatten(f, vw))
		goto out;	/* learnt since its offer: no need for its map */
	if (view_wait(vw) != 0)
		goto out;	/* unusable: its build said why */
	fault_gate(f);
	if (!wait_quiet(f, e, vw))
		goto out;	/* stopped, or superseded: never built */
	ret = flat_build(view_env_cache(f->t->env), f->mode == FLATTEN_AUTO,
			 &f->noreflink_dev, &f->stop, e->dirfd, e->path, vw,
			 cause, sizeof(cause));
	if (ret > 0 && warm_flat(f, e, vw, ret) == -ECANCELED) {
		close(ret);	/* superseded while read in: never handed out */
	} else if (ret > 0) {
		fd = ret;
		state = FLAT_READY;
		/* What opens so far put in the inode's own page cache, no open
		 * will read: dropped before the first passthrough open can
		 * come, which would otherwise drop it itself, in the open (a
		 * tenth of a second for 2 GiB pushed). Opens still there keep
		 * it until they close (flatten_fuse_closed()). */
		run_drops(f, e);
		log_debug("%s: flat file ready", e->path);
	} else if (ret < 0 && ret != -ECANCELED) {
		state = FLAT_FAILED;
	}
out:
	view_unwatch_reads(vw);	/* built or not, nobody waits for its quiet */
	pthread_mutex_lock(&f->lock);
	if (state == FLAT_FAILED) {
		e->failures++;
		wait_ns = retry_wait_ns(e->failures);
		e->retry_ns = mono_ns() + wait_ns;
	} else if (state == FLAT_READY) {
		e->failures = 0;
	}
	/* A FUSE-path open closed since the drop above (flatten_fuse_closed()
	 * marked it while this build was busy): its pages go too. */
	f->drops |= e->drop;
	e->state = state;
	e->fd = fd;
	e->view = NULL;
	dirfd = e->dirfd;
	e->dirfd = -1;
	snprintf(e->cause, sizeof(e->cause), "%s", cause);
	pthread_mutex_unlock(&f->lock);
	if (state == FLAT_FAILED)
		log_warn_rl("%s: no flat file, reads stay on the FUSE path: %s; tried "
			    "again at an open after %lld s", e->path, cause,
			    (long long)(wait_ns / 1000000000));
	view_put(vw);
	close(dirfd);
}

/* A pending entry whose view was offered, or NULL. */
static struct flat *next_pending_locked(struct flatten *f)
{
	for (struct flat *e = f->list; e; e = e->next)
		if (e->state == FLAT_PENDING && e->view && !e->dead)
			return e;
	return NULL;
}

static void *flatten_thread(void *arg)
{
	struct flatten *f = arg;

	pthread_mutex_lock(&f->lock);
	while (!f->stop) {
		bool kick = f->kick, drops = f->drops;

		if (!kick && !drops && !next_pending_locked(f)) {
			pthread_cond_wait(&f->cond, &f->lock);
			continue;
		}
		f->kick = false;
		f->drops = false;
		pthread_mutex_unlock(&f->lock);
		sweep(f);	/* superseded versions first: never built */
		if (drops)
			run_drops(f, NULL);
		pthread_mutex_lock(&f->lock);
		{
			/* Only this thread removes entries or builds, so e
			 * stays valid without the lock. */
			struct flat *e = next_pending_locked(f);

			if (!e || f->stop)
				continue;
			f->busy = e;
			pthread_mutex_unlock(&f->lock);
			flatten_one(f, e);
			pthread_mutex_lock(&f->lock);
			f->busy = NULL;
		}
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

/*
 * The table's views_shed hook (node_priv.h), chained after the one it
 * found (prefetch's): out of fds for open files, the views offered to the
 * thread and not being built are handed back, with their directory fds
 * (their layers close if nothing else holds them). Their entries stay
 * pending: the versions' next opens offer again. No lock held; only the
 * FUSE path calls it, so never after flatten_stop(). Returns how many
 * views were let go, the chained hook's too.
 */
static unsigned flatten_shed(struct node_table *t)
{
	struct flatten *f;
	struct held h;
	unsigned total;

	pthread_mutex_lock(&t->lock);
	f = t->flatten;
	pthread_mutex_unlock(&t->lock);
	if (!f)
		return 0;
	total = f->prev_shed ? f->prev_shed(t) : 0;
	pthread_mutex_lock(&f->lock);
	take_held_locked(f, false, &h);
	pthread_mutex_unlock(&f->lock);
	let_go(&h);
	stats_add(STAT_FLAT_DEFERRED, h.n);
	return total + (unsigned)h.n;
}

int flatten_start(struct node_table *t, const struct flatten_opts *o,
		  struct flatten **out)
{
	struct flatten *f = calloc(1, sizeof(*f));
	int ret;

	if (!f)
		return -ENOMEM;
	f->t = t;
	f->mode = o->mode;
	f->usable = o->usable;
	f->drop = o->drop;
	f->ctx = o->ctx;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	*out = f;
	if (f->mode == FLATTEN_OFF)
		return 0;
	ret = -pthread_create(&f->thread, NULL, flatten_thread, f);
	if (ret) {
		log_err("cannot start the flattener: %s", strerror(-ret));
		return 0;	/* it builds nothing, like off */
	}
	f->running = true;
	pthread_mutex_lock(&t->lock);
	t->flatten = f;
	f->prev_hook = t->hooks.version_made_locked;
	t->hooks.version_made_locked = flatten_made_locked;
	t->hooks.version_released_locked = flatten_released_locked;
	f->prev_shed = t->hooks.views_shed;
	t->hooks.views_shed = flatten_shed;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

void flatten_stop(struct flatten *f)
{
	struct flat *e;

	if (!f)
		return;
	if (f->running) {
		pthread_mutex_lock(&f->t->lock);
		f->t->hooks.version_made_locked = f->prev_hook;
		f->t->hooks.version_released_locked = NULL;
		f->t->hooks.views_shed = f->prev_shed;
		f->t->flatten = NULL;
		pthread_mutex_unlock(&f->t->lock);
		pthread_mutex_lock(&f->lock);
		__atomic_store_n(&f->stop, 1, __ATOMIC_RELAXED);
		pthread_cond_signal(&f->cond);
		pthread_mutex_unlock(&f->lock);
		pthread_join(f->thread, NULL);
	}
	while ((e = f->list)) {
		f->list = e->next;
		flat_free(e);
	}
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* v's entry if it waits for an offer, else NULL; flatten.lock held. */
static struct flat *wants_offer_locked(struct flatten *f, const struct node *v)
{
	for (struct flat *e = f->list; e; e = e->next) {
		if (e->vino != v->vino)
			continue;
		/* A failed build's wait is over: pending again, for this
		 * offer (or the next, if this one is not taken). */
		if (e->state == FLAT_FAILED && !e->dead && mono_ns() >= e->retry_ns)
			e->state = FLAT_PENDING;
		return e->state == FLAT_PENDING && !e->view && !e->dead ? e : NULL;
	}
	return NULL;
}

/* Entries offered a view and waiting for the thread. flatten.lock held. */
static size_t offered_locked(const struct flatten *f)
{
	size_t n = 0;

	for (const struct flat *e = f->list; e; e = e->next)
		if (e->view && !e->dead && e != f->busy)
			n++;
	return n;
}

void flatten_offer(struct flatten *f, struct node *v, struct view *vw)
{
	struct held dead;
	struct flat *e;
	int dfd, dup_fd;
	bool plenty;

	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	take_held_locked(f, true, &dead);
	e = wants_offer_locked(f, v);
	pthread_mutex_unlock(&f->lock);
	let_go(&dead);
	if (!e)
		return;		/* every open but a version's first */
	if (vw->nlayers < 2 || not_to_flatten(f, vw)) {
		/* Nothing would be built: the entry holds nothing and says
		 * none (found again: it may be gone meanwhile). */
		pthread_mutex_lock(&f->lock);
		e = wants_offer_locked(f, v);
		if (e)
			e->state = FLAT_NONE;
		pthread_mutex_unlock(&f->lock);
		return;
	}
	/* The directory's fd comes from the table (it may have been closed
	 * for the fd budget), outside our lock: the table's lock comes
	 * first. The kernel holds v, and v its directory, here. */
	dfd = node_fd_get(f->t, v->parent);
	if (dfd < 0)
		return;		/* the next offer tries again */
	dup_fd = fcntl(dfd, F_DUPFD_CLOEXEC, 0);
	node_fd_put(f->t, v->parent);
	if (dup_fd < 0)
		return;
	plenty = view_env_fds_plenty(f->t->env);	/* its own lock: not under ours */
	pthread_mutex_lock(&f->lock);
	/* found again: the entry may be gone, or offered by another open */
	e = wants_offer_locked(f, v);
	if (e && !plenty && offered_locked(f) >= FLAT_QUEUE) {
		e = NULL;	/* stays pending: the next offer tries again */
		stats_add(STAT_FLAT_DEFERRED, 1);
	}
	if (e) {
		view_get(vw);
		view_watch_reads(vw);	/* its first reads come next */
		e->view = vw;
		e->dirfd = dup_fd;
		dup_fd = -1;
		pthread_cond_signal(&f->cond);
	}
	pthread_mutex_unlock(&f->lock);
	if (dup_fd >= 0)
		close(dup_fd);
}

int flatten_fd(struct flatten *f, struct node *v)
{
	int fd = -1;

	if (!f)
		return -1;
	pthread_mutex_lock(&f->lock);
	for (struct flat *e = f->list; e; e = e->next) {
		if (e->vino == v->vino) {
			if (e->state == FLAT_READY && !e->dead)
				fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
			break;
		}
	}
	pthread_mutex_unlock(&f->lock);
	return fd;
}

void flatten_fuse_closed(struct flatten *f, struct node *v, bool wanted)
{
	if (!f || !f->drop)
		return;
	pthread_mutex_lock(&f->lock);
	for (struct flat *e = f->list; e; e = e->next) {
		if (e->vino != v->vino)
			continue;
		if (wanted) {
			/* for good: its next opens would want it too */
			e->keep = true;
			e->drop = false;
		} else if (!e->keep && !e->dead) {
			/* run_drops() looks whether it is ready or one layer
			 * now; the one being built, once built (flatten_one()) */
			e->drop = true;
			if (e != f->busy) {
				f->drops = true;
				pthread_cond_signal(&f->cond);
			}
		}
		break;
	}
	pthread_mutex_unlock(&f->lock);
}

char *flatten_describe(struct flatten *f, struct node *v)
{
	const char *state = "none", *cause = "";
	char *s;

	if (!f)
		return strdup(state);
	pthread_mutex_lock(&f->lock);
	for (struct flat *e = f->list; e; e = e->next) {
		if (e->vino != v->vino)
			continue;
		state = e->state == FLAT_PENDING ? "pending" :
			e->state == FLAT_READY ? "ready" :
			e->state == FLAT_FAILED ? "failed: " : "none";
		cause = e->state == FLAT_FAILED ? e->cause : "";
		break;
	}
	if (asprintf(&s, "%s%s", state, cause) < 0)
		s = NULL;
	pthread_mutex_unlock(&f->lock);
	return s;
}
