/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The prefetch push (doc/design.md §18): its jobs and its thread; what a
 * job pushes, in which order, is prefetch_plan.c's.
 *
 * A job is one version being pushed. It is made by the version's first open
 * and holds a reference on the version's node (so its node id stays the
 * inode the kernel knows) and on the view the open got (so the bytes it
 * pushes are that version's, whatever happens to the chain meanwhile: a
 * compaction swaps the node's view for one of the same content, a publish
 * or a rollback makes a new version with a new inode). One thread runs the
 * jobs, newest first, one chunk of at most PREFETCH_CHUNK bytes at a time,
 * at the lowest CPU priority and the lowest best-effort I/O level, and
 * skips the pages that read replies gave the kernel while it ran
 * (prefetch_served()): those are cached already.
 *
 * The invariant: a pushed page holds what a read of its inode returns.
 * It holds because a job pushes only its own immutable view, clipped to the
 * view's size (pushing past the size the kernel knows would grow i_size, and
 * the next getattr would drop the whole cache), and because a version's
 * inode never serves another chain.
 *
 * Memory: every byte pushed is charged to one budget shared by all
 * versions, and stays charged while the kernel may still hold it. A job
 * ends, and its charge is returned, when nobody holds its version: no open
 * handle counted here, and either superseded (its cached pages are then
 * dropped: no new open can reach them) or forgotten by the kernel (which
 * freed them). A superseded version still open stops pushing but keeps
 * what it has: a VM may be running on it. Pages the kernel reclaims under
 * memory pressure stay charged, so the budget errs on the safe side.
 *
 * Lock order: prefetch.lock, then node_table.lock (only to read whether a
 * version is current and still looked up); never the other way round, and
 * neither is held across a push or a drop.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "monotime.h"
#include "node_priv.h"
#include "prefetch.h"
#include "prefetch_priv.h"
#include "version.h"

/* How often the thread looks for versions nobody holds any more while it
 * has jobs (a publish or a forget does not wake it). */
#define REAP_MS 100

/* The layers' data of the next this many bytes of the plan are read
 * ahead (readahead(2)) while a chunk is pushed: from cold layers, a push
 * of scattered diff pages would otherwise wait for one small read after
 * another. */
#define READ_AHEAD (8u << 20)

/* Rate-limit sleeps are cut into slices this long so a stop is seen. */
#define SLICE_MS 20

/* The unit in which a job records what the kernel got from read replies
 * (prefetch_served()): a page. */
#define UNIT 4096u
#define UNIT_BITS (8 * sizeof(unsigned long))

enum pjob_state { PJ_PUSHING, PJ_WAITING, PJ_DONE, PJ_STOPPED };

struct pjob {
	struct node *n;		/* referenced */
	uint64_t nodeid;
	struct view *v;		/* referenced until the job is done or
				   stopped (reap_locked()), then NULL;
				   protected by prefetch.lock, used
				   unlocked by the thread while pushing */
	unsigned opens;		/* protected by prefetch.lock */
	enum pjob_state state;	/* protected by prefetch.lock */
	const char *cause;	/* STOPPED: why; protected by prefetch.lock */
	uint64_t pushed;	/* bytes of the plan done: pushed, or
				   skipped as already read; protected by
				   prefetch.lock */
	uint64_t skipped;	/* of pushed, the bytes skipped; the rest
				   is charged to the budget (charge_of());
				   protected by prefetch.lock */
	unsigned long *served;	/* a bit per UNIT of the view that a read
				   reply gave the kernel (the push skips
				   it), or NULL; counted in served_jobs
				   while set; bits set under prefetch.lock,
				   read by the thread with atomic loads;
				   freed by the thread when the push is
				   done, or with the job */
	uint64_t nunits;	/* bits in served */
	uint64_t total;		/* set once by the thread before pushing */
	bool planned;		/* total set; thread only */
	bool drop;		/* reaped: drop its cached pages */
	bool unneeded;		/* its version's next opens are served by
				   passthrough to its flat file: it pushes no
				   more and ends once nobody holds it, like a
				   superseded one; protected by
				   prefetch.lock */
	struct pcursor cur;	/* thread only */
	struct pcursor ra;	/* read ahead up to here; thread only */
	uint64_t ra_sum;	/* bytes of the plan read ahead; thread only */
	struct pjob *next;	/* protected by prefetch.lock */
};

struct prefetch {
	struct prefetch_opts o;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* a new job, a release, or stop */
	struct pjob *jobs;	/* newest first; protected by lock */
	struct pjob *busy;	/* the job the thread is pushing, which
				   only the thread may end; protected by
				   lock */
	uint64_t charged;	/* protected by lock */
	unsigned served_jobs;	/* jobs in the list with a served bitmap:
				   a read skips the lock while there are
				   none (the push is done); atomic */
	int stop;		/* atomic; also protected by lock */
	struct view_piece *pieces;	/* thread only */
	size_t npieces;
};

/* ---- jobs ---- */

static struct prefetch *pf_of(struct node_table *t)
{
	return __atomic_load_n(&t->prefetch, __ATOMIC_ACQUIRE);
}

/* The job of node id nodeid, or NULL; prefetch.lock held. */
static struct pjob *job_find_locked(struct prefetch *pf, uint64_t nodeid)
{
	struct pjob *j;

	for (j = pf->jobs; j; j = j->next)
		if (j->nodeid == nodeid)
			break;
	return j;
}

/* The bytes j pushed, charged to the budget; prefetch.lock held. */
static uint64_t charge_of(const struct pjob *j)
{
	return j->pushed - j->skipped;
}

/* Gives fresh job j a served bitmap for a view of size bytes, counted in
 * served_jobs. Without memory for it, the push just does not skip what
 * reads brought in. */
static void served_alloc(struct prefetch *pf, struct pjob *j, uint64_t size)
{
	j->nunits = (size + UNIT - 1) / UNIT;
	if (j->nunits)
		j->served = calloc((size_t)((j->nunits + UNIT_BITS - 1) / UNIT_BITS),
				   sizeof(unsigned long));
	if (j->served)
		__atomic_fetch_add(&pf->served_jobs, 1, __ATOMIC_RELAXED);
}

/* Frees j's served bitmap, which only the thread or the job's last owner
 * may do, and uncounts it. */
static void served_free(struct prefetch *pf, struct pjob *j)
{
	if (!j->served)
		return;
	__atomic_fetch_sub(&pf->served_jobs, 1, __ATOMIC_RELAXED);
	free(j->served);
	j->served = NULL;
}

static void job_free(struct node_table *t, struct prefetch *pf, struct pjob *j)
{
	if (j->v)
		node_view_done(t, j->n, j->v);	/* closes idle layers */
	node_unref(t, j->n);
	served_free(pf, j);
	free(j);
}

static void bury(struct node_table *t, struct prefetch *pf, struct pjob *dead);

/*
 * Takes out the jobs of superseded versions nobody has open (but the one
 * the thread is pushing), linked, for bury(); prefetch.lock held. A job
 * whose version was still current at its last release keeps its view
 * until then, and the thread, at nice 19, may not run for a while on a
 * busy machine: every open and release ends such jobs on its own thread,
 * so that a churn of versions does not pile up views with their layers
 * open.
 */
static struct pjob *superseded_locked(struct node_table *t, struct prefetch *pf)
{
	struct pjob **pp = &pf->jobs, *dead = NULL;

	pthread_mutex_lock(&t->lock);
	while (*pp) {
		struct pjob *j = *pp;

		if (j->opens || j == pf->busy || j->n->current) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		pf->charged -= charge_of(j);
		j->drop = j->n->nlookup > 0;
		j->next = dead;
		dead = j;
	}
	pthread_mutex_unlock(&t->lock);
	return dead;
}

void prefetch_opened(struct node_table *t, struct node *n, uint64_t nodeid,
		     struct view *v)
{
	struct prefetch *pf = pf_of(t);
	struct pjob *j, *fresh, *dead;

	if (!pf)
		return;
	pthread_mutex_lock(&pf->lock);
	dead = superseded_locked(t, pf);
	j = job_find_locked(pf, nodeid);
	if (j)
		j->opens++;
	pthread_mutex_unlock(&pf->lock);
	bury(t, pf, dead);
	if (j)
		return;

	/* The first open: references are taken outside our lock (the node's
	 * takes the table lock). */
	fresh = calloc(1, sizeof(*fresh));
	if (!fresh)
		return;
	node_ref(t, n);
	view_get(v);
	fresh->n = n;
	fresh->nodeid = nodeid;
	fresh->v = v;
	fresh->opens = 1;
	served_alloc(pf, fresh, (uint64_t)n->vattr.st_size);
	pthread_mutex_lock(&pf->lock);
	j = job_find_locked(pf, nodeid);	/* another open came first */
	if (j) {
		j->opens++;
	} else {
		fresh->next = pf->jobs;
		pf->jobs = fresh;
		pthread_cond_signal(&pf->cond);
	}
	pthread_mutex_unlock(&pf->lock);
	if (j)
		job_free(t, pf, fresh);
}

void prefetch_unneeded(struct node_table *t, uint64_t nodeid)
{
	struct prefetch *pf = pf_of(t);
	struct pjob *j;

	if (!pf)
		return;
	pthread_mutex_lock(&pf->lock);
	j = job_find_locked(pf, nodeid);
	if (j) {
		j->unneeded = true;
		pthread_cond_signal(&pf->cond);	/* reaped at once */
	}
	pthread_mutex_unlock(&pf->lock);
}

void prefetch_released(struct node_table *t, uint64_t nodeid)
{
	struct prefetch *pf = pf_of(t);
	struct pjob *j, **pp, *dead;
	bool current;

	if (!pf)
		return;
	pthread_mutex_lock(&pf->lock);
	dead = superseded_locked(t, pf);
	j = job_find_locked(pf, nodeid);
	if (!j || !j->opens || --j->opens > 0) {
		pthread_mutex_unlock(&pf->lock);
		bury(t, pf, dead);
		return;
	}
	pthread_mutex_lock(&t->lock);
	current = j->n->current;
	pthread_mutex_unlock(&t->lock);
	if (current || j == pf->busy) {	/* the thread ends it (reap_locked()) */
		struct view *v = NULL;
		struct node *n = j->n;

		/* A finished job needs its view no more: handed back now, the
		 * layers of a version nobody has open close at once
		 * (node_view_done()), not at the next reap. */
		if (j != pf->busy && j->v &&
		    (j->state == PJ_DONE || j->state == PJ_STOPPED)) {
			v = j->v;
			j->v = NULL;
			node_ref(t, n);
		}
		pthread_cond_signal(&pf->cond);
		pthread_mutex_unlock(&pf->lock);
		if (v) {
			node_view_done(t, n, v);
			node_unref(t, n);
		}
		bury(t, pf, dead);
		return;
	}
	/*
	 * The last open of a superseded version: the job ends here, on the
	 * thread that released it, as the handle's own view reference does.
	 * Left to the push thread, which runs at nice 19, the ends of a
	 * churn of versions could pile up with their layers open.
	 */
	for (pp = &pf->jobs; *pp != j; pp = &(*pp)->next)
		;
	*pp = j->next;
	pf->charged -= charge_of(j);
	pthread_mutex_unlock(&pf->lock);
	bury(t, pf, dead);
	if (pf->o.drop)
		pf->o.drop(pf->o.ctx, j->nodeid);
	job_free(t, pf, j);
}

char *prefetch_describe(struct node_table *t, struct node *n)
{
	struct prefetch *pf = pf_of(t);
	char *s, skipped[48] = "";
	struct pjob *j;
	int r;

	if (!pf)
		return strdup("off");
	pthread_mutex_lock(&pf->lock);
	j = job_find_locked(pf, node_id(t, n));
	if (j && j->skipped)
		snprintf(skipped, sizeof(skipped), " (%llu read before the push)",
			 (unsigned long long)j->skipped);
	if (!j)
		r = asprintf(&s, "none");
	else if (!j->planned)
		r = asprintf(&s, "pushing 0/?");
	else
		r = asprintf(&s, "%s%s %llu/%llu%s",
			     j->state == PJ_PUSHING ? "pushing" :
			     j->state == PJ_WAITING ? "waiting: budget" :
			     j->state == PJ_DONE ? "done" : "stopped: ",
			     j->state == PJ_STOPPED ? j->cause : "",
			     (unsigned long long)j->pushed, (unsigned long long)j->total,
			     skipped);
	pthread_mutex_unlock(&pf->lock);
	return r < 0 ? NULL : s;
}

void prefetch_served(struct node_table *t, uint64_t nodeid, uint64_t off, uint64_t len)
{
	struct prefetch *pf = pf_of(t);
	uint64_t u, end;
	struct pjob *j;

	if (!pf || !len || !__atomic_load_n(&pf->served_jobs, __ATOMIC_RELAXED))
		return;
	pthread_mutex_lock(&pf->lock);
	j = job_find_locked(pf, nodeid);
	if (j && j->served && (j->state == PJ_PUSHING || j->state == PJ_WAITING)) {
		/* Whole units only; the last, partial one where the read
		 * reached the end of the file. */
		u = (off + UNIT - 1) / UNIT;
		end = (off + len) / UNIT;
		if (off + len >= (uint64_t)j->n->vattr.st_size || end > j->nunits)
			end = j->nunits;
		while (u < end) {
			uint64_t w = u / UNIT_BITS, b = u % UNIT_BITS;
			uint64_t nb = end - u < UNIT_BITS - b ? end - u : UNIT_BITS - b;
			unsigned long mask = nb == UNIT_BITS ? ~0UL : ((1UL << nb) - 1) << b;

			__atomic_fetch_or(&j->served[w], mask, __ATOMIC_RELAXED);
			u += nb;
		}
	}
	pthread_mutex_unlock(&pf->lock);
}

uint64_t prefetch_charged(struct node_table *t)
{
	struct prefetch *pf = pf_of(t);
	uint64_t c;

	if (!pf)
		return 0;
	pthread_mutex_lock(&pf->lock);
	c = pf->charged;
	pthread_mutex_unlock(&pf->lock);
	return c;
}

/* ---- the thread ---- */

/* Views of finished jobs let go of in one pass of reap_locked(); the
 * rest wait for the next pass. */
#define REAP_VIEWS 16

/*
 * Takes out of the list every job whose version nobody holds, returning
 * their charge, and stops the push of superseded versions still held.
 * Returns the jobs taken out, linked, with drop set on each one whose
 * pages the caller must drop. A job that is done or stopped needs its
 * view no more: up to REAP_VIEWS such views are moved to views[] (*nviews)
 * for the caller to put, so that the layers of an idle current version
 * are not held open by its job (after a compaction they are superseded
 * layers). prefetch.lock held.
 */
static struct pjob *reap_locked(struct node_table *t, struct prefetch *pf,
				struct view **views, struct node **vnodes,
				size_t *nviews)
{
	struct pjob **pp = &pf->jobs, *dead = NULL;

	while (*pp) {
		struct pjob *j = *pp;
		bool current, looked_up;

		pthread_mutex_lock(&t->lock);
		current = j->n->current;
		looked_up = j->n->nlookup > 0;
		pthread_mutex_unlock(&t->lock);
		if ((!current || j->unneeded) &&
		    (j->state == PJ_PUSHING || j->state == PJ_WAITING)) {
			j->state = PJ_STOPPED;
			j->cause = current ? "flat file ready" : "superseded";
		}
		if (j->opens == 0 && (!current || !looked_up || j->unneeded)) {
			*pp = j->next;
			pf->charged -= charge_of(j);
			/* A forgotten inode's pages went with it; a superseded
			 * one's are dropped (no new open can reach them). */
			j->drop = looked_up;
			j->next = dead;
			dead = j;
			continue;
		}
		if ((j->state == PJ_DONE || j->state == PJ_STOPPED) && j->v &&
		    *nviews < REAP_VIEWS) {
			/* The version too: its view goes back through
			 * node_view_done(), which closes idle layers. */
			node_ref(t, j->n);
			vnodes[*nviews] = j->n;
			views[(*nviews)++] = j->v;
			j->v = NULL;
		}
		pp = &j->next;
	}
	return dead;
}

/* The newest job that can push now (a waiting one once a whole chunk fits
 * the budget again, or whose view moved, so that it lets go of the old
 * one's layers: job_follow()); prefetch.lock held. */
static struct pjob *pick_locked(struct prefetch *pf)
{
	for (struct pjob *j = pf->jobs; j; j = j->next) {
		if (j->state == PJ_PUSHING)
			return j;
		if (j->state == PJ_WAITING && (pf->charged + PREFETCH_CHUNK <= pf->o.budget ||
					       (j->v && view_moved(j->v))))
			return j;
	}
	return NULL;
}

/* Sleeps until ns (CLOCK_MONOTONIC) in slices, or until stop. */
static void sleep_until(struct prefetch *pf, int64_t ns)
{
	for (int64_t now = mono_ns(); now < ns && !__atomic_load_n(&pf->stop, __ATOMIC_RELAXED);
	     now = mono_ns()) {
		int64_t d = ns - now < SLICE_MS * 1000000LL ? ns - now : SLICE_MS * 1000000LL;
		struct timespec ts = { d / 1000000000, d % 1000000000 };

		nanosleep(&ts, NULL);
	}
}

/* The pieces of [off, off + len) of j's view in pf->pieces. Returns
 * their number, or 0 without memory. */
static size_t map_range(struct prefetch *pf, struct pjob *j, uint64_t off, uint64_t len)
{
	size_t n = view_map_read(j->v, off, len, pf->pieces, pf->npieces);

	if (n > pf->npieces) {
		struct view_piece *p = realloc(pf->pieces, n * sizeof(*p));

		if (!p)
			return 0;
		pf->pieces = p;
		pf->npieces = n;
		view_map_read(j->v, off, len, pf->pieces, n);
	}
	return n;
}

/* Pushes [off, off + len) of j's view. Returns 0 or -errno. */
static int push_range(struct prefetch *pf, struct pjob *j, uint64_t off, uint64_t len)
{
	size_t n = map_range(pf, j, off, len);

	if (!n)
		return -ENOMEM;
	return pf->o.store(pf->o.ctx, j->nodeid, j->v, off, pf->pieces, n);
}

/*
 * Starts reading the layers' data of the plan up to READ_AHEAD bytes past
 * what is pushed, so the disk works on several ranges while one is pushed.
 * Only data pieces are read: readahead of a diff's holes would fill the
 * page cache with zero pages. Cached ranges cost a page-cache walk.
 */
static void read_ahead(struct prefetch *pf, struct pjob *j, uint64_t upto)
{
	uint64_t off, len;

	while (j->ra_sum < upto + READ_AHEAD && prefetch_next_chunk(j->v, pf->o.mode, &j->ra, &off, &len)) {
		size_t n = map_range(pf, j, off, len);

		for (size_t i = 0; i < n; i++)
			if (pf->pieces[i].fd >= 0)
				readahead(pf->pieces[i].fd, (off64_t)pf->pieces[i].off,
					  (size_t)pf->pieces[i].len);
		j->ra_sum += len;
	}
}

/* Whether a read reply gave the kernel unit u of j's view. */
static bool unit_served(const struct pjob *j, uint64_t u)
{
	return j->served && u < j->nunits &&
	       (__atomic_load_n(&j->served[u / UNIT_BITS], __ATOMIC_RELAXED) >>
		(u % UNIT_BITS)) & 1;
}

/* The end of the run of [off, end) whose units are all served, or all
 * not (as served says). */
static uint64_t run_end(const struct pjob *j, uint64_t off, uint64_t end, bool served)
{
	while (off < end && unit_served(j, off / UNIT) == served)
		off = (off / UNIT + 1) * UNIT;
	return off < end ? off : end;
}

/*
 * Job j's view was moved by a compaction (view_move()): the rest of the
 * push reads the view it moved to, the same bytes from the new chain, so
 * that the old one's layers (merged, deleted from STORE) can close now
 * rather than when the push ends. The cursor is an offset and a phase, so
 * it carries over; the plan's total becomes what was pushed plus what the
 * new view's plan has left after the cursor (its diff windows are fewer:
 * the merged diffs are base now). This thread only.
 */
static void job_follow(struct prefetch *pf, struct pjob *j)
{
	struct view *old = j->v, *nv = view_get_current(old);
	uint64_t left = 0;

	if (j->planned && view_wait(nv) == 0)
		left = prefetch_plan_left(nv, pf->o.mode, j->cur);
	pthread_mutex_lock(&pf->lock);
	j->v = nv;
	if (j->planned)
		j->total = j->pushed + left;
	pthread_mutex_unlock(&pf->lock);
	log_debug("%s: prefetch goes on from the compacted chain", view_label(nv));
	view_put(old);
}

/*
 * One step of job j: plans it on its first step, then pushes its next
 * chunk if the budget allows: the part of it up to the first page a read
 * has already given the kernel, or, where the chunk starts with such
 * pages, skips them. Called without prefetch.lock; only this thread
 * touches a job's cursor.
 */
static void job_step(struct prefetch *pf, struct pjob *j, int64_t *next_ns)
{
	uint64_t off, len, skip, end;
	struct pcursor c;
	int ret;

	if (view_moved(j->v))
		job_follow(pf, j);
	if (!j->planned && view_wait(j->v) != 0) {
		/* Its map could not be built: the build said why. */
		pthread_mutex_lock(&pf->lock);
		if (j->state != PJ_STOPPED) {
			j->state = PJ_STOPPED;
			j->cause = "the chain is unusable";
		}
		pthread_mutex_unlock(&pf->lock);
		return;
	}
	if (!j->planned) {
		uint64_t total = prefetch_plan(j->v, pf->o.mode, NULL, NULL);

		pthread_mutex_lock(&pf->lock);
		j->total = total;
		j->planned = true;
		pthread_mutex_unlock(&pf->lock);
	}
	c = j->cur;
	if (!prefetch_next_chunk(j->v, pf->o.mode, &c, &off, &len)) {
		/* Its bitmap is only read by this thread, so it can go now:
		 * a read finds it NULL under the lock. */
		pthread_mutex_lock(&pf->lock);
		if (j->state != PJ_STOPPED)
			j->state = PJ_DONE;
		served_free(pf, j);
		pthread_mutex_unlock(&pf->lock);
		log_debug("%s: prefetch done: %llu bytes pushed, %llu skipped", view_label(j->v),
			  (unsigned long long)(j->pushed - j->skipped),
			  (unsigned long long)j->skipped);
		return;
	}
	/* The kernel's read-around of a VM's faults brings in whole
	 * windows while the push runs: pushing them again would copy the
	 * same bytes twice. */
	skip = run_end(j, off, off + len, true) - off;
	if (skip) {
		pthread_mutex_lock(&pf->lock);
		j->pushed += skip;
		j->skipped += skip;
		j->cur = skip == len ? c : (struct pcursor){ c.phase, off + skip };
		pthread_mutex_unlock(&pf->lock);
		return;
	}
	end = run_end(j, off, off + len, false);
	if (end < off + len) {
		c = (struct pcursor){ c.phase, end };
		len = end - off;
	}
	pthread_mutex_lock(&pf->lock);
	if (pf->charged + len > pf->o.budget) {
		if (j->state == PJ_PUSHING)
			log_debug("%s: prefetch waits: the memory budget is spent",
				  view_label(j->v));
		j->state = PJ_WAITING;
		pthread_mutex_unlock(&pf->lock);
		return;
	}
	pf->charged += len;
	j->state = PJ_PUSHING;
	pthread_mutex_unlock(&pf->lock);

	read_ahead(pf, j, j->pushed + len);
	ret = push_range(pf, j, off, len);

	pthread_mutex_lock(&pf->lock);
	if (ret) {
		pf->charged -= len;
		if (j->state != PJ_STOPPED) {
			j->state = PJ_STOPPED;
			j->cause = ret == -ENOENT ? "forgotten by the kernel" : strerror(-ret);
		}
	} else {
		j->pushed += len;
		j->cur = c;
	}
	pthread_mutex_unlock(&pf->lock);
	if (ret && ret != -ENOENT && !__atomic_load_n(&pf->stop, __ATOMIC_RELAXED))
		log_warn_rl("%s: prefetch push at %llu stopped: %s", view_label(j->v),
			    (unsigned long long)off, strerror(-ret));
	if (!ret && pf->o.rate) {
		int64_t now = mono_ns();

		if (*next_ns < now)
			*next_ns = now;
		*next_ns += (int64_t)(len * 1000000000ULL / pf->o.rate);
		sleep_until(pf, *next_ns);
	}
}

/* Ends the jobs in list dead (taken out by reap_locked()); no lock held. */
static void bury(struct node_table *t, struct prefetch *pf, struct pjob *dead)
{
	while (dead) {
		struct pjob *j = dead;

		dead = j->next;
		if (j->drop && pf->o.drop)
			pf->o.drop(pf->o.ctx, j->nodeid);
		job_free(t, pf, j);
	}
}

static void *prefetch_thread(void *arg)
{
	struct node_table *t = arg;
	struct prefetch *pf = t->prefetch;
	int64_t next_ns = 0, reaped = 0;

	/* Faults of running VMs come first: lowest CPU priority, and the
	 * lowest best-effort I/O level. Not the idle I/O class: mq-deadline
	 * holds idle requests back for seconds while others are queued, and
	 * a restoring VM's own faults must not starve the push of its
	 * working set. */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0,
		2 << 13 | 7 /* best effort, level 7 */);

	pthread_mutex_lock(&pf->lock);
	while (!pf->stop) {
		struct view *views[REAP_VIEWS];
		struct node *vnodes[REAP_VIEWS];
		struct pjob *j, *dead = NULL;
		size_t nviews = 0;

		if (mono_ns() - reaped >= REAP_MS * 1000000LL) {
			dead = reap_locked(t, pf, views, vnodes, &nviews);
			reaped = mono_ns();
		}
		if (dead || nviews) {
			pthread_mutex_unlock(&pf->lock);
			while (nviews) {
				nviews--;
				node_view_done(t, vnodes[nviews], views[nviews]);
				node_unref(t, vnodes[nviews]);
			}
			bury(t, pf, dead);
			pthread_mutex_lock(&pf->lock);
			continue;
		}
		j = pick_locked(pf);
		if (!j) {
			if (pf->jobs) {
				struct timespec ts;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += REAP_MS * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&pf->cond, &pf->lock, &ts);
			} else {
				pthread_cond_wait(&pf->cond, &pf->lock);
			}
			reaped = 0;	/* woken: a release may have come */
			continue;
		}
		pf->busy = j;
		pthread_mutex_unlock(&pf->lock);
		job_step(pf, j, &next_ns);
		pthread_mutex_lock(&pf->lock);
		pf->busy = NULL;
	}
	pthread_mutex_unlock(&pf->lock);
	return NULL;
}

/*
 * The table's views_shed hook (node_priv.h): out of fds for open files,
 * the jobs of versions nobody has open stop and hand their views back
 * (their layers close if nothing else holds them). The job the thread is
 * pushing keeps its view. Returns how many views were let go.
 */
static unsigned prefetch_shed(struct node_table *t)
{
	struct prefetch *pf = pf_of(t);
	struct view *views[REAP_VIEWS];
	struct node *vnodes[REAP_VIEWS];
	unsigned n = 0;

	if (!pf)
		return 0;
	pthread_mutex_lock(&pf->lock);
	for (struct pjob *j = pf->jobs; j && n < REAP_VIEWS; j = j->next) {
		if (j->opens || j == pf->busy || !j->v)
			continue;
		if (j->state == PJ_PUSHING || j->state == PJ_WAITING) {
			j->state = PJ_STOPPED;
			j->cause = "out of file descriptors";
		}
		node_ref(t, j->n);
		vnodes[n] = j->n;
		views[n++] = j->v;
		j->v = NULL;
	}
	pthread_mutex_unlock(&pf->lock);
	for (unsigned i = 0; i < n; i++) {
		node_view_done(t, vnodes[i], views[i]);
		node_unref(t, vnodes[i]);
	}
	return n;
}

int prefetch_start(struct node_table *t, const struct prefetch_opts *o)
{
	struct prefetch *pf;
	int ret;

	if (o->mode == PREFETCH_OFF)
		return 0;
	pf = calloc(1, sizeof(*pf));
	if (!pf)
		return -ENOMEM;
	pf->o = *o;
	pthread_mutex_init(&pf->lock, NULL);
	pthread_cond_init(&pf->cond, NULL);
	__atomic_store_n(&t->prefetch, pf, __ATOMIC_RELEASE);
	t->hooks.views_shed = prefetch_shed;	/* it tests t->prefetch */
	ret = -pthread_create(&pf->thread, NULL, prefetch_thread, t);
	if (ret) {
		__atomic_store_n(&t->prefetch, NULL, __ATOMIC_RELEASE);
		pthread_cond_destroy(&pf->cond);
		pthread_mutex_destroy(&pf->lock);
		free(pf);
		log_err("cannot start the prefetch thread: %s; views are not pushed",
			strerror(-ret));
	}
	return ret;
}

void prefetch_stop(struct node_table *t)
{
	struct prefetch *pf = pf_of(t);
	struct pjob *j;

	if (!pf)
		return;
	pthread_mutex_lock(&pf->lock);
	__atomic_store_n(&pf->stop, 1, __ATOMIC_RELAXED);
	pthread_cond_signal(&pf->cond);
	pthread_mutex_unlock(&pf->lock);
	pthread_join(pf->thread, NULL);
	__atomic_store_n(&t->prefetch, NULL, __ATOMIC_RELEASE);
	while ((j = pf->jobs)) {
		pf->jobs = j->next;
		job_free(t, pf, j);
	}
	free(pf->pieces);
	pthread_cond_destroy(&pf->cond);
	pthread_mutex_destroy(&pf->lock);
	free(pf);
}
