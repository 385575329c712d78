/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Building views: opening a chain's layers, scanning their extents (from
 * the cache, on as many threads as it takes), and flattening the maps into
 * the view's segments, on the opener's thread or on a builder of its own
 * (view_open_async()).
 *
 * Flattening is a sweep over the boundaries of every layer's extents, taken
 * in order from a min-heap that holds each layer's next boundary (a k-way
 * merge: O(E log k) for E extents over k layers). A bit set tracks which
 * layers have data at the sweep position; the highest set bit is the layer
 * that serves the bytes up to the next boundary. The result covers [0, size)
 * exactly, so a read never has to reason about gaps.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "stats.h"
#include "view_priv.h"

/* ---- flattening ---- */

struct bound {
	uint64_t off;
	unsigned layer;
};

struct cursor {
	const struct extent_map *m;
	size_t i;		/* current extent */
	int inside;		/* next boundary is the extent's end */
};

static uint64_t cursor_next(const struct cursor *c)
{
	const struct extent *e = &c->m->ext[c->i];

	return c->inside ? e->off + e->len : e->off;
}

static void heap_down(struct bound *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < n && h[l].off < h[m].off)
			m = l;
		if (r < n && h[r].off < h[m].off)
			m = r;
		if (m == i)
			return;
		struct bound t = h[i];

		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

static int top_layer(const uint64_t *bits, size_t words)
{
	for (size_t w = words; w-- > 0;)
		if (bits[w])
			return (int)(w * 64 + 63 - (unsigned)__builtin_clzll(bits[w]));
	return VIEW_ZERO;
}

static int seg_push(struct view_seg **seg, size_t *n, size_t *cap,
		    uint64_t off, int32_t layer)
{
	if (*n && (*seg)[*n - 1].layer == layer)
		return 0;			/* extends the previous one */
	if (*n && (*seg)[*n - 1].off == off) {	/* empty previous segment */
		(*seg)[*n - 1].layer = layer;
		if (*n > 1 && (*seg)[*n - 2].layer == layer)
			(*n)--;
		return 0;
	}
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct view_seg *ns = realloc(*seg, nc * sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		*seg = ns;
		*cap = nc;
	}
	(*seg)[*n].off = off;
	(*seg)[*n].layer = layer;
	(*n)++;
	return 0;
}

int view_flatten(uint64_t size, const struct extent_map *const *maps,
		 unsigned nmaps, struct view_seg **segp, size_t *nsegp)
{
	size_t words = (nmaps + 63) / 64 ? (nmaps + 63) / 64 : 1;
	struct cursor *cur = calloc(nmaps ? nmaps : 1, sizeof(*cur));
	struct bound *heap = calloc(nmaps ? nmaps : 1, sizeof(*heap));
	uint64_t *bits = calloc(words, sizeof(*bits));
	struct view_seg *seg = NULL;
	size_t nh = 0, n = 0, cap = 0;
	int ret = -ENOMEM;

	if (!cur || !heap || !bits)
		goto out;
	for (unsigned i = 0; i < nmaps; i++) {
		cur[i].m = maps[i];
		if (maps[i]->n) {
			heap[nh].off = maps[i]->ext[0].off;
			heap[nh].layer = i;
			nh++;
		}
	}
	for (size_t i = nh / 2 + 1; i-- > 0;)
		heap_down(heap, nh, i);

	if (seg_push(&seg, &n, &cap, 0, VIEW_ZERO))
		goto out;
	while (nh && heap[0].off < size) {
		uint64_t at = heap[0].off;

		/* Apply every boundary at this offset, then emit once. */
		while (nh && heap[0].off == at) {
			unsigned l = heap[0].layer;
			struct cursor *c = &cur[l];

			bits[l / 64] ^= 1ULL << (l % 64);
			if (c->inside) {
				c->inside = 0;
				c->i++;
			} else {
				c->inside = 1;
			}
			if (c->i < c->m->n) {
				heap[0].off = cursor_next(c);
			} else {
				heap[0] = heap[--nh];
			}
			heap_down(heap, nh, 0);
		}
		if (seg_push(&seg, &n, &cap, at, top_layer(bits, words)))
			goto out;
	}
	/* Boundaries at size are never applied, so seg[n - 1].off < size
	 * unless size is 0; add the sentinel. */
	{
		struct view_seg *ns = realloc(seg, (n + 1) * sizeof(*ns));

		if (!ns)
			goto out;
		seg = ns;
	}
	seg[n].off = size;
	seg[n].layer = VIEW_ZERO;
	if (size == 0)
		n = 0;
	*segp = seg;
	*nsegp = n;
	seg = NULL;
	ret = 0;
out:
	free(seg);
	free(bits);
	free(heap);
	free(cur);
	return ret;
}

/* ---- opening a chain ---- */

static int open_layer(struct view_env *env, int dirfd, const char *fname,
		      struct view_layer *l, char *why, size_t len)
{
	l->fname = strdup(fname);
	if (!l->fname)
		return -ENOMEM;
	return layer_file_open(env, dirfd, l, why, len);
}

/*
 * Whether diff i of v, of map m, must be refused (extent_diff_refusal()):
 * 0, or -EIO, or -EMEDIUMTYPE when its filesystem reports no holes at all,
 * with the cause in why.
 */
static int diff_refused(struct view *v, unsigned i, const struct extent_map *m,
			char *why, size_t len)
{
	const char *cause = extent_diff_refusal(m, v->env->page_size);
	const struct view_layer *l = &v->layers[i];

	if (!cause)
		return 0;
	if (extent_map_is_dense(m) && view_env_hides_holes(v->env, l->fd, l->id.dev)) {
		snprintf(why, len, "diff %s is on a filesystem that reports no holes",
			 l->fname);
		return -EMEDIUMTYPE;
	}
	snprintf(why, len, "diff %s %s", l->fname, cause);
	return -EIO;
}

/*
 * The first part of an open: a view with every layer of chain open and
 * checked as far as no map is needed (sizes, hole granularity), or an
 * error as view_open() returns it.
 */
static int open_layers(struct view_env *env, int dirfd, const struct store_chain *chain,
		       struct view **out, char *why, size_t len)
{
	unsigned n = (unsigned)chain->nlayers;
	struct view *v;
	int ret;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->refs = 1;
	v->env = env;
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->built, NULL);
	stats_add(STAT_VIEWS_ALIVE, 1);	/* view_free() takes it back */
	v->layers = calloc(n, sizeof(*v->layers));
	ret = -ENOMEM;
	if (!v->layers)
		goto fail;
	for (unsigned i = 0; i < n; i++)
		v->layers[i].fd = -1;
	v->nlayers = n;
	ret = view_env_check_budget(env, n, why, len);
	if (ret)
		goto fail;

	for (unsigned i = 0; i < n; i++) {
		ret = open_layer(env, dirfd, chain->layers[i]->fname, &v->layers[i], why, len);
		if (ret)
			goto fail;
	}
	v->size = v->layers[0].id.size;
	for (unsigned i = 1; i < n; i++) {
		if (v->layers[i].id.size != v->size) {
			snprintf(why, len, "layers of different sizes: %s is %llu "
				 "bytes, base %s is %llu", v->layers[i].fname,
				 (unsigned long long)v->layers[i].id.size,
				 v->layers[0].fname, (unsigned long long)v->size);
			ret = -EIO;
			goto fail;
		}
	}
	if (n > 1) {
		uint64_t gran = env->page_size;

		if (view_env_granularity(env, dirfd, v->layers[1].fd,
				    v->layers[1].id.dev, &gran) == 0 &&
		    gran >= EXTENT_PROBE_SIZE) {
			snprintf(why, len, "diff %s is on a filesystem that "
				 "reports no holes", v->layers[1].fname);
			ret = -EMEDIUMTYPE;
			goto fail;
		} else if (gran > env->page_size) {
			snprintf(why, len, "diff %s is on a filesystem whose holes "
				 "are %llu bytes, coarser than the %u-byte page",
				 v->layers[1].fname, (unsigned long long)gran,
				 env->page_size);
			ret = -EIO;
			goto fail;
		}
	}
	*out = v;
	return 0;

fail:
	view_free(v);
	return ret;
}

/*
 * The map of a view, built by one or more scanners: each takes the next
 * layer not yet taken and gets its map from the cache (which scans it on a
 * miss); then one of them checks the maps and flattens them.
 */
struct build {
	struct view *v;
	struct cache_entry **ents;
	int *rets;		/* cache_get() of each layer */
	unsigned next;		/* atomic: the next layer to take */
};

static void *scan_layers(void *arg)
{
	struct build *b = arg;
	struct view *v = b->v;
	unsigned i;

	while ((i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED)) < v->nlayers)
		b->rets[i] = cache_get(v->env->cache, v->layers[i].fd, &v->layers[i].id,
				       v->layers[i].fname, &b->ents[i]);
	return NULL;
}

/* bytes in words for a log line: KiB below a MiB, else MiB. */
static const char *size_words(char *buf, size_t len, size_t bytes)
{
	if (bytes < (1u << 20))
		snprintf(buf, len, "%zu KiB", (bytes + 1023) >> 10);
	else
		snprintf(buf, len, "%zu MiB", (bytes + (1u << 20) - 1) >> 20);
	return buf;
}

/*
 * Counts v's segments and index against the extent-map budget, after its
 * layers' maps were let go (so that they can be dropped to make room).
 * A map that does not fit is freed: -ENOMEM, the cause in why.
 */
static int charge_map(struct view *v, char *why, size_t len)
{
	size_t bytes = (v->nseg + 1) * sizeof(*v->seg) +
		       v->index_len * sizeof(*v->seg_index);
	char need[32], left[32];

	if (cache_charge(v->env->cache, bytes) == 0) {
		v->charged = bytes;
		return 0;
	}
	snprintf(why, len, "its map of %zu segments (%s) does not fit the %s "
		 "left of the extent-map budget (cache_mb in snapfs(8))", v->nseg,
		 size_words(need, sizeof(need), bytes),
		 size_words(left, sizeof(left), cache_room(v->env->cache)));
	/* Freed now, not with the view: a view built after its open stays
	 * with its version, unread, until the next open lets it go. */
	view_drop_map(v);
	return -ENOMEM;
}

/*
 * After every layer was scanned: the first failure in chain order (so the
 * cause does not depend on which scanner finished first), else the view's
 * segments and data_bytes. Returns 0 or an error as view_open() does, the
 * cause in why. Drops the maps' references either way.
 */
static int finish_map(struct build *b, char *why, size_t len)
{
	struct view *v = b->v;
	const struct extent_map **maps = calloc(v->nlayers, sizeof(*maps));
	int ret = maps ? 0 : -ENOMEM;

	for (unsigned i = 0; i < v->nlayers && !ret; i++) {
		ret = b->rets[i];
		if (ret == -EFBIG) {
			char left[32];

			/* The budget's trouble, not the chain's: a later
			 * open, with other maps let go, may fit. */
			snprintf(why, len, "the extent map of layer %s needs more "
				 "than the %s left of the extent-map budget (cache_mb "
				 "in snapfs(8))", v->layers[i].fname,
				 size_words(left, sizeof(left),
					    cache_room(v->env->cache)));
			ret = -ENOMEM;
			break;
		}
		if (ret) {
			snprintf(why, len, "cannot map the extents of layer %s: %s",
				 v->layers[i].fname, strerror(-ret));
			if (ret != -ENOMEM)
				ret = -EIO;
			break;
		}
		maps[i] = cache_entry_map(b->ents[i]);
		if (i > 0)
			ret = diff_refused(v, i, maps[i], why, len);
	}
	if (!ret)
		ret = view_flatten(v->size, maps, v->nlayers, &v->seg, &v->nseg);
	if (!ret) {
		for (size_t i = 0; i < v->nseg; i++)
			if (v->seg[i].layer != VIEW_ZERO)
				v->data_bytes += v->seg[i + 1].off - v->seg[i].off;
		view_build_index(v);
		/* A layer cut short before its scan left holes past the cut
		 * in the map: reads must answer EIO, not those zeros (the
		 * first read says why). A cut after the scan shows in the
		 * reads themselves (view_check_read()). */
		for (unsigned i = 0; i < v->nlayers; i++) {
			struct stat st;

			if (fstat(v->layers[i].fd, &st) == 0 &&
			    (uint64_t)st.st_size < v->size) {
				__atomic_store_n(&v->short_layer, (int)i + 1, __ATOMIC_RELEASE);
				break;
			}
		}
	}
	for (unsigned i = 0; i < v->nlayers; i++)
		if (b->ents[i])
			cache_put(v->env->cache, b->ents[i]);
	free(maps);
	if (!ret)
		ret = charge_map(v, why, len);
	return ret;
}

static struct build *build_new(struct view *v)
{
	struct build *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->v = v;
	b->ents = calloc(v->nlayers, sizeof(*b->ents));
	b->rets = calloc(v->nlayers, sizeof(*b->rets));
	if (!b->ents || !b->rets) {
		free(b->ents);
		free(b->rets);
		free(b);
		return NULL;
	}
	return b;
}

static void build_free(struct build *b)
{
	free(b->ents);
	free(b->rets);
	free(b);
}

/* Builds v's map on this thread and frees b; on failure frees v too. */
static int build_here(struct build *b, struct view *v, struct view **out,
		      char *why, size_t len)
{
	int ret;

	scan_layers(b);
	ret = finish_map(b, why, len);
	build_free(b);
	if (ret) {
		view_free(v);
		return ret;
	}
	view_env_list(v->env, v);	/* shared from now on */
	*out = v;
	return 0;
}

int view_open(struct view_env *env, int dirfd, const struct store_chain *chain,
	      struct view **out, char *why, size_t len)
{
	struct build *b;
	struct view *v;
	int ret;

	ret = open_layers(env, dirfd, chain, &v, why, len);
	if (ret)
		return ret;
	b = build_new(v);
	if (!b) {
		view_free(v);
		return -ENOMEM;
	}
	return build_here(b, v, out, why, len);
}

/* Counts a builder in (+1) or out (-1); view_env_free() waits for none. */
static void builders_add(struct view_env *env, int d)
{
	pthread_mutex_lock(&env->lock);
	env->builders += (unsigned)d;
	if (env->builders == 0)
		pthread_cond_broadcast(&env->builders_done);
	pthread_mutex_unlock(&env->lock);
}

/*
 * Test builds (--enable-fault-injection): while the file that
 * SNAPFS_BUILD_GATE names exists, a map built on a thread of its own is
 * neither scanned nor published, so a test can read a view before its map
 * is complete, or change a layer before its scan, deterministically.
 */
static void build_gate(void)
{
#ifdef SNAPFS_FAULT_INJECTION
	const char *gate = getenv("SNAPFS_BUILD_GATE");

	while (gate && access(gate, F_OK) == 0)
		usleep(10000);
#endif
}

/* Scanners per map built in the background: this many layers are scanned
 * at once (the scans are CPU in the kernel; FIEMAP reads no data). */
#define BUILD_SCANNERS 2

/* Maps built in the background at once, for the whole daemon. Each holds
 * its view (the layers' fds) until done; past this an open builds its map
 * itself, as before: a churn of new versions (hundreds a second) must not
 * pile up builders, threads and fds. */
#define BUILDERS_MAX 4

bool view_env_wait_builders(struct view_env *env, unsigned ms)
{
	struct timespec until;
	bool had;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&env->lock);
	had = env->builders > 0;
	while (env->builders &&
	       pthread_cond_timedwait(&env->builders_done, &env->lock, &until) == 0)
		;
	pthread_mutex_unlock(&env->lock);
	return had;
}

/* Counts a builder in if there is room for one. */
static bool builder_room(struct view_env *env)
{
	bool room;

	pthread_mutex_lock(&env->lock);
	room = env->builders < BUILDERS_MAX;
	if (room)
		env->builders++;
	pthread_mutex_unlock(&env->lock);
	return room;
}

static void *build_thread(void *arg)
{
	struct build *b = arg;
	struct view *v = b->v;
	struct view_env *env = v->env;
	pthread_t helper;
	bool helped;
	char why[512] = "";
	int ret;

	build_gate();
	helped = BUILD_SCANNERS > 1 && v->nlayers > 2 &&
		 pthread_create(&helper, NULL, scan_layers, b) == 0;
	scan_layers(b);
	if (helped)
		pthread_join(helper, NULL);
	ret = finish_map(b, why, sizeof(why));
	build_free(b);

	/* Said here, once, as a failed open says it (the caller of
	 * view_open(), node, would have); opens and reads then get EIO. */
	if (ret == -EIO)
		log_err("%s: unusable: %s", view_label(v), why);
	else if (ret == -EMEDIUMTYPE)
		log_debug("%s: unusable: %s", view_label(v), why);
	else if (ret)
		log_err_rl("%s: cannot open: %s", view_label(v), why[0] ? why : strerror(-ret));
	pthread_mutex_lock(&v->lock);
	if (ret)
		v->build_why = strdup(why);	/* NULL: view_build_error() says less */
	__atomic_store_n(&v->state, ret ? ret : VIEW_BUILT, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&v->built);
	pthread_mutex_unlock(&v->lock);

	view_put(v);	/* may be the last: env must still be there */
	builders_add(env, -1);
	return NULL;
}

/*
 * Whether every diff of v may have its map built after the open: its
 * filesystem has FIEMAP (so a part's extents say what the whole scan will:
 * extent_scan_range()) and it is not dense, which the scan to its first
 * hole tells. A dense diff is refused here as view_open() refuses it.
 * Returns 1 (yes), 0 (build it now: tmpfs and others without FIEMAP, where
 * only a whole scan can refuse a diff, by its unstable_bytes), or an error
 * as view_open() does.
 */
static int may_build_later(struct view *v, char *why, size_t len)
{
	for (unsigned i = 1; i < v->nlayers; i++) {
		struct extent_map *m;
		int ret = extent_scan_range(v->layers[i].fd, v->size, 0, v->size,
					    true, &m);

		if (ret) {
			snprintf(why, len, "cannot map the extents of layer %s: %s",
				 v->layers[i].fname, strerror(-ret));
			return ret == -ENOMEM ? -ENOMEM : -EIO;
		}
		ret = m->method == EXTENT_FIEMAP ? diff_refused(v, i, m, why, len) : 0;
		if (ret == 0 && m->method != EXTENT_FIEMAP)
			ret = 1;
		free(m);
		if (ret)
			return ret < 0 ? ret : 0;
	}
	return 1;
}

int view_open_async(struct view_env *env, int dirfd, const struct store_chain *chain,
		    const char *label, struct view **out, char *why, size_t len)
{
	struct build *b;
	struct view *v;
	pthread_t t;
	pthread_attr_t attr;
	int ret;

	ret = open_layers(env, dirfd, chain, &v, why, len);
	if (ret)
		return ret;
	ret = v->nlayers > 1 ? may_build_later(v, why, len) : 0;
	b = ret >= 0 ? build_new(v) : NULL;
	if (!b) {
		view_free(v);
		return ret < 0 ? ret : -ENOMEM;
	}
	view_set_label(v, label);	/* unnamed in logs if it fails */
	if (ret == 1 && builder_room(env)) {
		v->state = VIEW_BUILDING;
		view_get(v);		/* the builder's */
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		ret = pthread_create(&t, &attr, build_thread, b);
		pthread_attr_destroy(&attr);
		if (ret == 0) {
			view_env_list(env, v);
			*out = v;
			return 0;
		}
		/* No thread: build it here after all. */
		v->state = VIEW_BUILT;
		v->refs = 1;
		builders_add(env, -1);
	}
	return build_here(b, v, out, why, len);
}
