/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Building and reading views.
 *
 * Flattening is a sweep over the boundaries of every layer's extents, taken
 * in order from a min-heap that holds each layer's next boundary (a k-way
 * merge: O(E log k) for E extents over k layers). A bit set tracks which
 * layers have data at the sweep position; the highest set bit is the layer
 * that serves the bytes up to the next boundary. The result covers [0, size)
 * exactly, so a read never has to reason about gaps.
 *
 * The invariant that makes views safe to share without locks: nothing in a
 * struct view changes after view_open() returns it. A new chain is a new
 * view; old ones live until their last reader drops them. The one
 * exception is view_open_async(), which returns before the map exists: its
 * segments are written once, by the builder, before state says they are
 * there (a release store that readers acquire), and nobody reads them
 * before. Reads that come first are served from the layers' extents over
 * just the bytes read (probe_read()), by the same rule.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fsname.h"
#include "log.h"
#include "stats.h"
#include "view.h"

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

/* ---- reading ---- */

/* The segment of seg[lo..hi] holding off, where seg[lo].off <= off <
 * seg[hi].off. */
static size_t find_seg_in(const struct view_seg *seg, size_t lo, size_t hi,
			  uint64_t off)
{
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (seg[mid].off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* The segment of seg[0..nseg] holding off < seg[nseg].off. */
static size_t find_seg(const struct view_seg *seg, size_t nseg, uint64_t off)
{
	return find_seg_in(seg, 0, nseg, off);
}

/*
 * The first-level index of a built map: for every 2^index_shift bytes of
 * the view, the segment holding its first byte. A lookup then binary
 * searches only the segments of one stretch, a few cache lines, instead
 * of the whole map: at depth 64 nearly every page is its own segment, and
 * a 2 GiB view's map is half a million of them, far more than the CPU's
 * cache holds. At most INDEX_MAX + 2 entries (16 KiB); small maps have
 * none, and a map without one (no memory) is searched whole.
 */
#define INDEX_MIN_SEGS 256
#define INDEX_MAX 4096
#define INDEX_MIN_SHIFT 16

static void build_index(struct view *v)
{
	unsigned shift = INDEX_MIN_SHIFT;
	size_t n, i = 0;
	uint32_t *idx;

	if (v->nseg < INDEX_MIN_SEGS || v->nseg > UINT32_MAX)
		return;
	while ((v->size >> shift) > INDEX_MAX)
		shift++;
	n = (size_t)(v->size >> shift) + 1;
	idx = malloc(n * sizeof(*idx));
	if (!idx)
		return;
	for (size_t k = 0; k < n; k++) {
		uint64_t off = (uint64_t)k << shift;

		while (i + 1 < v->nseg && v->seg[i + 1].off <= off)
			i++;
		idx[k] = (uint32_t)i;
	}
	v->seg_index = idx;
	v->index_len = n;
	v->index_shift = shift;
}

/* find_seg() over v's own map, through its index where it has one. */
static size_t find_seg_indexed(const struct view *v, uint64_t off)
{
	size_t k, lo, hi;

	if (!v->seg_index)
		return find_seg(v->seg, v->nseg, off);
	k = (size_t)(off >> v->index_shift);
	lo = v->seg_index[k];
	/* The segment holding the next stretch's first byte starts at or
	 * before it, so off's segment is at most that one. */
	hi = k + 1 < v->index_len ? (size_t)v->seg_index[k + 1] + 1 : v->nseg;
	return find_seg_in(v->seg, lo, hi, off);
}

size_t view_find(const struct view *v, uint64_t off)
{
	return find_seg_indexed(v, off);
}

/* view_map_read() over segments seg[0..nseg] of v's layers: v's own
 * map (built) or, before it is, one flattened for the read (probed). */
static size_t map_read(const struct view *v, bool probed, const struct view_seg *seg,
		       size_t nseg, uint64_t off, uint64_t len,
		       struct view_piece *p, size_t max)
{
	uint64_t end;
	size_t i, k = 0;

	if (off >= v->size || len == 0)
		return 0;
	end = len > v->size - off ? v->size : off + len;
	i = probed ? find_seg(seg, nseg, off) : find_seg_indexed(v, off);
	for (; off < end; i++) {
		uint64_t segend = seg[i + 1].off;
		uint64_t n = (segend < end ? segend : end) - off;

		if (k < max) {
			int32_t l = seg[i].layer;

			p[k].fd = l == VIEW_ZERO ? -1 : v->layers[l].fd;
			p[k].map = l == VIEW_ZERO ? NULL : v->layers[l].map;
			p[k].off = off;
			p[k].len = n;
			p[k].layer = l;
		}
		k++;
		off += n;
	}
	return k;
}

size_t view_map_read(const struct view *v, uint64_t off, uint64_t len,
		     struct view_piece *p, size_t max)
{
	return map_read(v, false, v->seg, v->nseg, off, len, p, max);
}

/*
 * The pieces of a read from a map flattened from segments seg[0..nseg]:
 * in stack (max entries) if they fit, else in a malloc'd array. 0 or
 * -ENOMEM.
 */
static int pieces_of(const struct view *v, bool probed, const struct view_seg *seg,
		     size_t nseg, uint64_t off, uint64_t len,
		     struct view_piece *stack, size_t max,
		     struct view_piece **out, size_t *n)
{
	*out = stack;
	*n = map_read(v, probed, seg, nseg, off, len, stack, max);
	if (*n <= max)
		return 0;
	*out = malloc(*n * sizeof(**out));
	if (!*out)
		return -ENOMEM;
	map_read(v, probed, seg, nseg, off, len, *out, *n);
	return 0;
}

/*
 * A read that arrives while v's map is still being built: each layer's
 * extents over just the bytes read, by the method the whole scan uses
 * (extent_scan_range()), flattened like the whole map. What serves a byte
 * is decided by the same rule from the same answers, so the bytes are
 * those the finished map will serve.
 */
static int probe_read(const struct view *v, uint64_t off, uint64_t len,
		      struct view_piece *stack, size_t max,
		      struct view_piece **out, size_t *n, char *why, size_t whylen)
{
	struct extent_map **maps = calloc(v->nlayers, sizeof(*maps));
	uint64_t end = len > v->size - off ? v->size : off + len;
	struct view_seg *seg = NULL;
	size_t nseg;
	int ret = -ENOMEM;

	if (!maps)
		return -ENOMEM;
	for (unsigned i = 0; i < v->nlayers; i++) {
		ret = extent_scan_range(v->layers[i].fd, v->size, off, end, false,
					&maps[i]);
		if (ret) {
			snprintf(why, whylen, "cannot map the extents of layer %s: %s",
				 v->layers[i].fname, strerror(-ret));
			if (ret != -ENOMEM)
				ret = -EIO;
			goto out;
		}
	}
	ret = view_flatten(v->size, (const struct extent_map *const *)maps,
			   v->nlayers, &seg, &nseg);
	if (ret == 0)
		ret = pieces_of(v, true, seg, nseg, off, len, stack, max, out, n);
	stats_add(STAT_READS_PROBED, 1);
out:
	for (unsigned i = 0; i < v->nlayers; i++)
		free(maps[i]);
	free(maps);
	free(seg);
	return ret;
}

int view_read_pieces(struct view *v, uint64_t off, uint64_t len,
		     struct view_piece *stack, size_t max,
		     struct view_piece **out, size_t *n, char *why, size_t whylen)
{
	int state = __atomic_load_n(&v->state, __ATOMIC_ACQUIRE);

	*out = stack;
	*n = 0;
	why[0] = '\0';
	if (state < 0)
		return -EIO;	/* said when the build failed */
	if (off >= v->size || len == 0)
		return 0;
	if (state == VIEW_BUILDING)
		return probe_read(v, off, len, stack, max, out, n, why, whylen);
	return pieces_of(v, false, v->seg, v->nseg, off, len, stack, max, out, n);
}

int view_wait(struct view *v)
{
	int state = __atomic_load_n(&v->state, __ATOMIC_ACQUIRE);

	if (state != VIEW_BUILDING)
		return state < 0 ? -EIO : 0;
	pthread_mutex_lock(&v->lock);
	while ((state = __atomic_load_n(&v->state, __ATOMIC_ACQUIRE)) == VIEW_BUILDING)
		pthread_cond_wait(&v->built, &v->lock);
	pthread_mutex_unlock(&v->lock);
	return state < 0 ? -EIO : 0;
}

int view_build_error(struct view *v, char *why, size_t len)
{
	int state;

	pthread_mutex_lock(&v->lock);
	state = __atomic_load_n(&v->state, __ATOMIC_ACQUIRE);
	if (state < 0)
		snprintf(why, len, "%s", v->build_why ? v->build_why : strerror(-state));
	pthread_mutex_unlock(&v->lock);
	return state < 0 ? state : 0;
}

int view_layer_short(struct view *v, int32_t l, bool *first, char *why, size_t len)
{
	struct stat st;

	*first = false;
	if (__atomic_load_n(&v->broken, __ATOMIC_RELAXED))
		return -EIO;
	if (fstat(v->layers[l].fd, &st) < 0 || (uint64_t)st.st_size >= v->size)
		return 0;	/* an fstat error shows in the read */
	if (!__atomic_exchange_n(&v->broken, 1, __ATOMIC_RELAXED)) {
		*first = true;
		snprintf(why, len, "layer %s is now %llu bytes, shorter than the "
			 "view's %llu: it was truncated after it was published; "
			 "reads answer EIO", v->layers[l].fname,
			 (unsigned long long)st.st_size, (unsigned long long)v->size);
	}
	return -EIO;
}

bool view_is_broken(const struct view *v)
{
	return __atomic_load_n(&v->broken, __ATOMIC_RELAXED);
}

int view_check_read(struct view *v, const struct view_piece *p, size_t n,
		    bool *first, char *why, size_t len)
{
	uint64_t seen[4] = { 0 };	/* layers fstat'ed, for the first 256 */

	*first = false;
	if (view_is_broken(v))
		return -EIO;
	for (size_t i = 0; i < n; i++) {
		int32_t l = p[i].layer;
		int ret;

		if (l == VIEW_ZERO)
			continue;
		if (l < 256) {
			if (seen[l / 64] & (1ULL << (l % 64)))
				continue;
			seen[l / 64] |= 1ULL << (l % 64);
		}
		ret = view_layer_short(v, l, first, why, len);
		if (ret)
			return ret;
	}
	return 0;
}

off_t view_seek(struct view *v, off_t off, int whence)
{
	size_t i;

	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (view_wait(v))
		return -EIO;
	if (off < 0 || (uint64_t)off >= v->size)
		return -ENXIO;
	for (i = view_find(v, (uint64_t)off); i < v->nseg; i++) {
		int is_data = v->seg[i].layer != VIEW_ZERO;

		if (is_data == (whence == SEEK_DATA))
			return (off_t)v->seg[i].off > off ? (off_t)v->seg[i].off : off;
	}
	return whence == SEEK_DATA ? -ENXIO : (off_t)v->size;
}

/* ---- building ---- */

struct probe {
	uint64_t dev;
	int result;		/* 0, or -errno of the probe */
	uint64_t gran;
	bool measured;		/* gran is the probe's, not a stand-in */
	bool no_holes;		/* the filesystem reports every file as all
				   data: said once (fs_hides_holes()) */
};

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
};

static unsigned layer_bucket(const struct layer_id *id)
{
	uint64_t h = id->ino * 0x9e3779b97f4a7c15ULL ^ id->dev;

	return (unsigned)((h ^ (h >> 32)) % LAYER_BUCKETS);
}

/* Takes a reference on the open layer of identity id, or NULL. */
static struct layer_file *layer_find_get(struct view_env *env, const struct layer_id *id)
{
	struct layer_file *lf;

	pthread_mutex_lock(&env->lock);
	for (lf = env->layers[layer_bucket(id)]; lf; lf = lf->next)
		if (layer_id_equal(&lf->id, id))
			break;
	if (lf)
		lf->refs++;
	pthread_mutex_unlock(&env->lock);
	return lf;
}

/* Registers fd as the open layer of identity id, or, if another thread got
 * there first, closes fd and takes a reference on that one. NULL: ENOMEM. */
static struct layer_file *layer_insert(struct view_env *env, const struct layer_id *id, int fd)
{
	struct layer_file *lf = calloc(1, sizeof(*lf)), *o;

	if (!lf)
		return NULL;
	lf->id = *id;
	lf->fd = fd;
	lf->refs = 1;
	/*
	 * Replies are written from this mapping (one writev per request, one
	 * copy, however many layers a request spans). Only the kernel reads
	 * it, inside writev: a layer truncated by a misbehaving producer then
	 * fails that reply with EIO instead of raising SIGBUS here.
	 */
	if (env->map_layers && id->size > 0 && id->size <= SIZE_MAX) {
		lf->map = mmap(NULL, (size_t)id->size, PROT_READ, MAP_SHARED, fd, 0);
		if (lf->map == MAP_FAILED)
			lf->map = NULL;
		else	/* no read-around: it would fill a diff's holes with
			 * zero pages in the page cache */
			madvise(lf->map, (size_t)id->size, MADV_RANDOM);
	}
	pthread_mutex_lock(&env->lock);
	for (o = env->layers[layer_bucket(id)]; o; o = o->next)
		if (layer_id_equal(&o->id, id))
			break;
	if (o) {
		o->refs++;
	} else {
		lf->next = env->layers[layer_bucket(id)];
		env->layers[layer_bucket(id)] = lf;
		env->nlayers++;
		stats_add(STAT_LAYERS_OPEN, 1);
	}
	pthread_mutex_unlock(&env->lock);
	if (o) {
		if (lf->map)
			munmap(lf->map, (size_t)id->size);
		close(fd);
		free(lf);
		return o;
	}
	return lf;
}

static void layer_put(struct view_env *env, struct layer_file *lf)
{
	bool last;

	pthread_mutex_lock(&env->lock);
	last = --lf->refs == 0;
	if (last) {
		struct layer_file **pp = &env->layers[layer_bucket(&lf->id)];

		while (*pp != lf)
			pp = &(*pp)->next;
		*pp = lf->next;
		env->nlayers--;
		stats_sub(STAT_LAYERS_OPEN, 1);
	}
	pthread_mutex_unlock(&env->lock);
	if (last) {
		if (lf->map)
			munmap(lf->map, (size_t)lf->id.size);
		close(lf->fd);
		free(lf);
	}
}

void view_env_map_layers(struct view_env *env, bool on)
{
	env->map_layers = on;
}

struct cache *view_env_cache(struct view_env *env)
{
	return env->cache;
}

void view_env_set_fd_budget(struct view_env *env, size_t budget)
{
	env->fd_budget = budget;
}

/* Whether more fds fit the budget now; env->lock held. */
static bool fds_fit_locked(const struct view_env *env, size_t more)
{
	return !env->fd_budget || env->nlayers + env->nplain + more <= env->fd_budget;
}

int view_env_take_fd(struct view_env *env)
{
	int ret = 0;

	pthread_mutex_lock(&env->lock);
	if (fds_fit_locked(env, 1))
		env->nplain++;
	else
		ret = -EMFILE;
	pthread_mutex_unlock(&env->lock);
	return ret;
}

void view_env_drop_fd(struct view_env *env)
{
	pthread_mutex_lock(&env->lock);
	env->nplain--;
	pthread_mutex_unlock(&env->lock);
}

/* -EMFILE, with the cause in why, if n more layers would not fit. */
static int check_budget(struct view_env *env, size_t n, char *why, size_t len)
{
	size_t used;
	bool fit;

	pthread_mutex_lock(&env->lock);
	fit = fds_fit_locked(env, n);
	used = env->nlayers + env->nplain;
	pthread_mutex_unlock(&env->lock);
	if (fit)
		return 0;
	snprintf(why, len, "%zu more layer(s) would pass the budget of fds for "
		 "open files (%zu of %zu in use; see fd_budget in snapfs(8))",
		 n, used, env->fd_budget);
	return -EMFILE;
}

size_t view_env_open_layers(struct view_env *env)
{
	size_t n;

	pthread_mutex_lock(&env->lock);
	n = env->nlayers;
	pthread_mutex_unlock(&env->lock);
	return n;
}

struct view_env *view_env_new(struct cache *cache, unsigned page_size)
{
	struct view_env *env = calloc(1, sizeof(*env));

	if (!env)
		return NULL;
	env->cache = cache;
	env->page_size = page_size;
	pthread_mutex_init(&env->lock, NULL);
	pthread_cond_init(&env->builders_done, NULL);
	return env;
}

void view_env_free(struct view_env *env)
{
	if (!env)
		return;
	/* A builder may hold the last reference of a view nobody wants any
	 * more; it lets go (touching the layer table) before it counts
	 * itself out. */
	pthread_mutex_lock(&env->lock);
	while (env->builders)
		pthread_cond_wait(&env->builders_done, &env->lock);
	pthread_mutex_unlock(&env->lock);
	pthread_cond_destroy(&env->builders_done);
	pthread_mutex_destroy(&env->lock);
	free(env->probes);
	free(env);
}

/* The one line for a filesystem that reports no holes (how is how we
 * know); fd is any file on it. */
static void log_no_holes(int fd, const char *how)
{
	char fs[512];

	fsname_describe(fd, fs, sizeof(fs));
	log_err("filesystem %s reports no holes (%s): SEEK_DATA finds every "
		"file all data, so every diff there looks dense and no chain "
		"with diffs can be served; keep STORE on a filesystem that "
		"reports holes (doc/distributed.md)", fs, how);
}

/*
 * True if dense diff fd (of device dev) shows that its filesystem hides
 * holes: its map is one extent over the whole file, yet it occupies fewer
 * blocks than its size. Logged once per device (with the probe's verdict,
 * when a probe could be made, this is already known).
 */
static bool fs_hides_holes(struct view_env *env, int fd, uint64_t dev)
{
	bool first, known = false, measured = false;
	struct stat st;

	pthread_mutex_lock(&env->lock);
	for (size_t i = 0; i < env->nprobes; i++) {
		if (env->probes[i].dev != dev)
			continue;
		known = env->probes[i].no_holes;
		measured = env->probes[i].measured;
		break;
	}
	pthread_mutex_unlock(&env->lock);
	/* A probe that saw holes outweighs block counts (a compressing
	 * filesystem counts fewer blocks than a dense file's size). */
	if (known || measured)
		return known;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_blocks * 512 + env->page_size >=
	    (uint64_t)st.st_size)
		return false;
	/* Said by whoever records it first; with no record to keep it in
	 * (the probe's was not stored: no memory), said each time. */
	first = true;
	pthread_mutex_lock(&env->lock);
	for (size_t i = 0; i < env->nprobes; i++) {
		if (env->probes[i].dev == dev) {
			first = !env->probes[i].no_holes;
			env->probes[i].no_holes = true;
		}
	}
	pthread_mutex_unlock(&env->lock);
	if (first)
		log_no_holes(fd, "a diff that occupies fewer blocks than its "
			     "size scans as data from end to end");
	return true;
}

/*
 * Hole granularity of the filesystem of dirfd, probed once per device.
 * Two threads may probe the same device at once; both results are equal
 * and the second is simply not recorded.
 */
static int env_granularity(struct view_env *env, int dirfd, int difffd,
			   uint64_t dev, uint64_t *gran)
{
	struct probe pr = { .dev = dev };

	pthread_mutex_lock(&env->lock);
	for (size_t i = 0; i < env->nprobes; i++) {
		if (env->probes[i].dev == dev) {
			pr = env->probes[i];
			pthread_mutex_unlock(&env->lock);
			*gran = pr.gran;
			return pr.result;
		}
	}
	pthread_mutex_unlock(&env->lock);

	pr.result = extent_probe_granularity(dirfd, env->page_size, &pr.gran);
	pr.measured = pr.result == 0;
	if (pr.result) {
		struct stat st;

		/* A read-only store cannot be probed: fall back on the block
		 * size a diff advertises (XFS: its block size; tmpfs with huge
		 * pages: the huge page size), not the directory's. */
		pr.gran = fstat(difffd, &st) == 0 && st.st_blksize > 0 ?
			  (uint64_t)st.st_blksize : env->page_size;
		log_warn("cannot probe hole granularity of the store's filesystem "
			 "(device %u:%u): %s; trusting its block size (%llu) instead",
			 major(dev), minor(dev), strerror(-pr.result),
			 (unsigned long long)pr.gran);
		pr.result = 0;
	}
	if (pr.gran >= EXTENT_PROBE_SIZE) {
		/* Not coarse holes: none at all (sshfs, some FUSE and SMB
		 * setups). One line for the filesystem, none per chain. */
		pr.no_holes = true;
		log_no_holes(difffd, "its scratch file, one page written, "
			     "reads back as data from end to end");
	} else if (pr.gran > env->page_size) {
		char fs[512];

		fsname_describe(difffd, fs, sizeof(fs));
		log_warn("filesystem %s reports holes in units of %llu bytes, "
			 "coarser than the %u-byte page: diffs there cannot be "
			 "served", fs, (unsigned long long)pr.gran, env->page_size);
	}

	pthread_mutex_lock(&env->lock);
	{
		struct probe *np = realloc(env->probes, (env->nprobes + 1) * sizeof(*np));

		if (np) {
			env->probes = np;
			env->probes[env->nprobes++] = pr;
		}
	}
	pthread_mutex_unlock(&env->lock);
	*gran = pr.gran;
	return pr.result;
}

static void view_free(struct view *v)
{
	for (unsigned i = 0; i < v->nlayers; i++) {
		if (v->layers[i].lf)
			layer_put(v->env, v->layers[i].lf);
		free(v->layers[i].fname);
	}
	free(v->layers);
	free(v->seg);
	free(v->seg_index);
	free(v->label);
	free(v->build_why);
	pthread_cond_destroy(&v->built);
	pthread_mutex_destroy(&v->lock);
	free(v);
	stats_sub(STAT_VIEWS_ALIVE, 1);
}

int view_set_label(struct view *v, const char *label)
{
	char *copy, *none = NULL;

	if (__atomic_load_n(&v->label, __ATOMIC_ACQUIRE))
		return 0;
	copy = strdup(label);
	if (!copy)
		return -ENOMEM;
	if (!__atomic_compare_exchange_n(&v->label, &none, copy, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		free(copy);	/* another open named it first */
	return 0;
}

const char *view_label(const struct view *v)
{
	const char *l = __atomic_load_n(&v->label, __ATOMIC_ACQUIRE);

	return l ? l : "";
}

void view_get(struct view *v)
{
	__atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
}

static void close_layers(struct view *v);

void view_put(struct view *v)
{
	unsigned r;

	if (!v)
		return;
	/* Above two references no put can be the last but the owner's:
	 * no lock. A get that races with this one either holds a reference
	 * itself (count above 1 all along) or is the owner's, under lock. */
	r = __atomic_load_n(&v->refs, __ATOMIC_RELAXED);
	while (r > 2)
		if (__atomic_compare_exchange_n(&v->refs, &r, r - 1, true,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			return;
	pthread_mutex_lock(&v->lock);
	r = __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL);
	if (r == 1 && v->owned && !v->detached) {
		close_layers(v);
		v->detached = true;
	}
	pthread_mutex_unlock(&v->lock);
	if (r == 0)
		view_free(v);
}

void view_own(struct view *v)
{
	pthread_mutex_lock(&v->lock);
	v->owned = true;
	pthread_mutex_unlock(&v->lock);
}

void view_put_owned(struct view *v)
{
	if (!v)
		return;
	pthread_mutex_lock(&v->lock);
	v->owned = false;
	pthread_mutex_unlock(&v->lock);
	view_put(v);
}

bool view_get_attached(struct view *v)
{
	bool ok;

	pthread_mutex_lock(&v->lock);
	ok = !v->detached;
	if (ok)
		__atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&v->lock);
	return ok;
}

static int layer_check(const struct stat *st, const char *fname, char *why, size_t len)
{
	if (S_ISLNK(st->st_mode)) {
		snprintf(why, len, "layer %s is a symbolic link "
			 "(layers are never followed)", fname);
		return -EIO;
	}
	if (!S_ISREG(st->st_mode)) {
		snprintf(why, len, "layer %s is not a regular file", fname);
		return -EIO;
	}
	return 0;
}

/*
 * Opens layer l->fname of dirfd into l, sharing the fd of an identical layer
 * another view holds. The identity is taken from the open fd itself, so a
 * file replaced between the stat and the open is seen as what was opened.
 */
static int open_layer_file(struct view_env *env, int dirfd, struct view_layer *l,
			   char *why, size_t len)
{
	const char *fname = l->fname;
	struct layer_id id;
	struct stat st;
	int fd, ret;

	if (fstatat(dirfd, fname, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		ret = layer_check(&st, fname, why, len);
		if (ret)
			return ret;
		layer_id_from_stat(&id, &st);
		l->lf = layer_find_get(env, &id);
		if (l->lf) {
			l->fd = l->lf->fd;
			l->map = l->lf->map;
			l->id = id;
			return 0;
		}
	}

	fd = layer_open(dirfd, fname, true, &st);
	if (fd < 0) {
		int e = -fd;

		if (e == EMFILE || e == ENFILE || e == ENOMEM) {
			snprintf(why, len, "cannot open layer %s: %s", fname, strerror(e));
			return -e;	/* the process's trouble, not the chain's */
		}
		if (e == ELOOP)
			snprintf(why, len, "layer %s is a symbolic link "
				 "(layers are never followed)", fname);
		else if (e == EFTYPE_LAYER)
			snprintf(why, len, "layer %s is not a regular file", fname);
		else
			snprintf(why, len, "cannot open layer %s: %s", fname,
				 strerror(e));
		return -EIO;
	}
	layer_id_from_stat(&l->id, &st);
	l->lf = layer_insert(env, &l->id, fd);
	if (!l->lf) {
		close(fd);
		return -ENOMEM;
	}
	l->fd = l->lf->fd;
	l->map = l->lf->map;
	return 0;
}

static int open_layer(struct view_env *env, int dirfd, const char *fname,
		      struct view_layer *l, char *why, size_t len)
{
	l->fname = strdup(fname);
	if (!l->fname)
		return -ENOMEM;
	return open_layer_file(env, dirfd, l, why, len);
}

/* Closes the layers of a view nobody reads (its map stays). */
static void close_layers(struct view *v)
{
	for (unsigned i = 0; i < v->nlayers; i++) {
		if (v->layers[i].lf)
			layer_put(v->env, v->layers[i].lf);
		v->layers[i].lf = NULL;
		v->layers[i].fd = -1;
		v->layers[i].map = NULL;
	}
}

static int attach_locked(struct view *v, int dirfd, char *why, size_t len)
{
	int ret;

	if (!v->detached)
		return 0;
	ret = check_budget(v->env, v->nlayers, why, len);
	if (ret)
		return ret;
	for (unsigned i = 0; i < v->nlayers; i++) {
		struct view_layer *l = &v->layers[i];
		struct layer_id was = l->id;

		ret = open_layer_file(v->env, dirfd, l, why, len);

		if (ret == 0 && !layer_id_equal(&was, &l->id)) {
			snprintf(why, len, "layer %s is not the file it was", l->fname);
			ret = -ESTALE;
		}
		l->id = was;
		if (ret) {
			if (ret == -EIO)	/* gone or replaced: a newer chain */
				ret = -ESTALE;
			close_layers(v);
			return ret;
		}
	}
	v->detached = false;
	return 0;
}

int view_attach(struct view *v, int dirfd, char *why, size_t len)
{
	int ret;

	pthread_mutex_lock(&v->lock);
	ret = attach_locked(v, dirfd, why, len);
	pthread_mutex_unlock(&v->lock);
	return ret;
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
	if (extent_map_is_dense(m) && fs_hides_holes(v->env, l->fd, l->id.dev)) {
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
	ret = check_budget(env, n, why, len);
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

		if (env_granularity(env, dirfd, v->layers[1].fd,
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
		build_index(v);
	}
	for (unsigned i = 0; i < v->nlayers; i++)
		if (b->ents[i])
			cache_put(v->env->cache, b->ents[i]);
	free(maps);
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
 * not published, so a test can read a view before its map is complete,
 * deterministically.
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

	helped = BUILD_SCANNERS > 1 && v->nlayers > 2 &&
		 pthread_create(&helper, NULL, scan_layers, b) == 0;
	scan_layers(b);
	if (helped)
		pthread_join(helper, NULL);
	ret = finish_map(b, why, sizeof(why));
	build_free(b);
	build_gate();

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
