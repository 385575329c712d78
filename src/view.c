/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reading views, and their lifetime.
 *
 * The invariant that makes views safe to share without locks: nothing in a
 * struct view changes after view_open() returns it. A new chain is a new
 * view; old ones live until their last reader drops them. The one
 * exception is view_open_async(), which returns before the map exists: its
 * segments are written once, by the builder, before state says they are
 * there (a release store that readers acquire), and nobody reads them
 * before. Reads that come first are served from the layers' extents over
 * just the bytes read (probe_read()), by the same rule.
 *
 * A view's layers are closed when only its owner (a version) still holds
 * it, and opened again by view_attach(): see view.h. The other exception:
 * a compaction moves a view's open files onto a view of the new chain
 * (view_move()), and its layers and map are let go of once only they hold
 * it: it is never read again.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "stats.h"
#include "view_priv.h"

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
 * cache holds. At most INDEX_MAX + 2 entries (16 KiB), and at most one per
 * INDEX_SEGS_PER segments, so the index adds at most a quarter of a byte
 * to a segment's 16; small maps have none, and a map without one (no
 * memory) is searched whole.
 */
#define INDEX_MIN_SEGS 256
#define INDEX_MAX 4096
#define INDEX_SEGS_PER 16
#define INDEX_MIN_SHIFT 16

void view_build_index(struct view *v)
{
	unsigned shift = INDEX_MIN_SHIFT;
	size_t n, i = 0, most;
	uint32_t *idx;

	if (v->nseg < INDEX_MIN_SEGS || v->nseg > UINT32_MAX)
		return;
	most = v->nseg / INDEX_SEGS_PER < INDEX_MAX ? v->nseg / INDEX_SEGS_PER : INDEX_MAX;
	while ((v->size >> shift) > most)
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
static int probe_read(struct view *v, uint64_t off, uint64_t len,
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
	/* A layer cut short before its scan shows holes past the cut, which
	 * would read as zeros: after the scans, every layer must still be
	 * as long as the view. */
	for (unsigned i = 0; i < v->nlayers; i++) {
		bool first;

		ret = view_layer_short(v, (int32_t)i, &first, why, whylen);
		if (ret)
			goto out;	/* why is set for the first only */
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
	int state = __atomic_load_n(&v->state, __ATOMIC_ACQUIRE), short_layer;
	bool first;

	*out = stack;
	*n = 0;
	why[0] = '\0';
	if (state < 0)
		return -EIO;	/* said when the build failed */
	if (off >= v->size || len == 0)
		return 0;
	/* A map whose scan came after a layer was cut holds holes where the
	 * layer was: never zeros for those bytes. */
	short_layer = __atomic_load_n(&v->short_layer, __ATOMIC_ACQUIRE);
	if (short_layer && view_layer_short(v, short_layer - 1, &first, why, whylen))
		return -EIO;
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

/* ---- lifetime ---- */

void view_env_list(struct view_env *env, struct view *v)
{
	pthread_mutex_lock(&env->views_lock);
	v->env_prev = NULL;
	v->env_next = env->views;
	if (env->views)
		env->views->env_prev = v;
	env->views = v;
	v->listed = true;
	pthread_mutex_unlock(&env->views_lock);
}

static void view_env_unlist(struct view *v)
{
	struct view_env *env = v->env;

	pthread_mutex_lock(&env->views_lock);
	if (v->env_prev)
		v->env_prev->env_next = v->env_next;
	else
		env->views = v->env_next;
	if (v->env_next)
		v->env_next->env_prev = v->env_prev;
	v->listed = false;
	pthread_mutex_unlock(&env->views_lock);
}

void view_free(struct view *v)
{
	if (v->listed)
		view_env_unlist(v);
	for (unsigned i = 0; i < v->nlayers; i++) {
		if (v->layers[i].lf)
			layer_file_put(v->env, v->layers[i].lf);
		free(v->layers[i].fname);
	}
	free(v->layers);
	view_drop_map(v);
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

void view_close_layers(struct view *v);

/* Closes the layers of a view that nobody reads any more, with lock; a
 * moved one also lets go of its map (its reads all go elsewhere, and no
 * reference but its open files' is left that could read it). */
static void detach_locked(struct view *v, unsigned r)
{
	view_close_layers(v);
	v->detached = true;
	if (r & VIEW_MOVED)
		view_drop_map(v);
}

void view_drop_map(struct view *v)
{
	free(v->seg);
	free(v->seg_index);
	v->seg = NULL;
	v->seg_index = NULL;
	v->nseg = 0;
	v->index_len = 0;
	if (v->charged)
		cache_uncharge(v->env->cache, v->charged);
	v->charged = 0;
}

/* Whether v's layers are to be closed now: only its owner holds it, or,
 * once it has moved, only its owner and its open files. With lock. */
static bool unused_locked(const struct view *v, unsigned r)
{
	unsigned count = r & ~VIEW_MOVED;
	unsigned keep = (v->owned ? 1 : 0) + (r & VIEW_MOVED ? v->handles : 0);

	return !v->detached && count > 0 && count == keep;
}

void view_put(struct view *v)
{
	unsigned r;

	if (!v)
		return;
	/* Above two references no put can be the last but the owner's:
	 * no lock. A get that races with this one either holds a reference
	 * itself (count above 1 all along) or is the owner's, under lock.
	 * A moved view counts its open files too: every put takes the lock
	 * (view_move() sets the flag in the count, so this CAS fails if it
	 * came first). */
	r = __atomic_load_n(&v->refs, __ATOMIC_RELAXED);
	while (r > 2 && !(r & VIEW_MOVED))
		if (__atomic_compare_exchange_n(&v->refs, &r, r - 1, true,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			return;
	pthread_mutex_lock(&v->lock);
	r = __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL);
	if (unused_locked(v, r))
		detach_locked(v, r);
	pthread_mutex_unlock(&v->lock);
	if ((r & ~VIEW_MOVED) == 0) {
		if (r & VIEW_MOVED)
			view_handle_put(__atomic_load_n(&v->moved, __ATOMIC_RELAXED));
		view_free(v);
	}
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

void view_handle_hold(struct view *v)
{
	pthread_mutex_lock(&v->lock);
	v->handles++;
	pthread_mutex_unlock(&v->lock);
}

void view_handle_put(struct view *v)
{
	pthread_mutex_lock(&v->lock);
	v->handles--;
	pthread_mutex_unlock(&v->lock);
	view_put(v);
}

bool view_held_open(struct view *v)
{
	bool held;

	pthread_mutex_lock(&v->lock);
	held = v->handles > 0;
	pthread_mutex_unlock(&v->lock);
	return held;
}

bool view_move(struct view *v, struct view *to)
{
	unsigned r;

	if (v == to || v->size != to->size)
		return false;
	/* v's reference on "to" counts as an open file's: v's open files
	 * read there, and a later compaction must find "to" held, and move
	 * it on, or its layers would stay open for them. */
	view_get(to);
	view_handle_hold(to);
	pthread_mutex_lock(&v->lock);
	if (view_moved(v)) {
		pthread_mutex_unlock(&v->lock);
		view_handle_put(to);
		return false;
	}
	/* The pointer before the flag: whoever sees the flag (an acquire
	 * of the count) finds the pointer. A reader whose reference came
	 * before the flag is in the count below, and its put closes the
	 * layers; one whose reference came after sees the flag and goes
	 * to "to" (view_get_current()). */
	__atomic_store_n(&v->moved, to, __ATOMIC_RELEASE);
	r = __atomic_or_fetch(&v->refs, VIEW_MOVED, __ATOMIC_ACQ_REL);
	if (unused_locked(v, r))
		detach_locked(v, r);
	pthread_mutex_unlock(&v->lock);
	return true;
}

struct view *view_get_current(struct view *v)
{
	for (;;) {
		unsigned r = __atomic_add_fetch(&v->refs, 1, __ATOMIC_ACQUIRE);
		struct view *to;

		if (!(r & VIEW_MOVED))
			return v;
		/* v is kept by the caller's own (open file's) reference,
		 * and keeps "to" by its own. */
		to = __atomic_load_n(&v->moved, __ATOMIC_ACQUIRE);
		view_put(v);
		v = to;
	}
}

/* A reference on v unless its count is already 0 (its last put came: it
 * is being freed, and waits for the list's lock to leave the list). */
static bool get_unless_zero(struct view *v)
{
	unsigned r = __atomic_load_n(&v->refs, __ATOMIC_RELAXED);

	while (r & ~VIEW_MOVED)
		if (__atomic_compare_exchange_n(&v->refs, &r, r + 1, true,
						__ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			return true;
	return false;
}

size_t view_layers_differ(const struct view *v, const struct layer_id *ids, size_t n)
{
	size_t i = 0;

	while (i < n && layer_id_equal(&v->layers[i].id, &ids[i]))
		i++;
	return i;
}

/* Whether v is held open, has not moved, and its layers are ids[0..k). */
static bool movable_prefix(struct view *v, const struct layer_id *ids)
{
	bool ok;

	pthread_mutex_lock(&v->lock);
	ok = v->handles > 0 && !v->detached && !view_moved(v) &&
	     view_layers_differ(v, ids, v->nlayers) == v->nlayers;
	pthread_mutex_unlock(&v->lock);
	return ok;
}

size_t view_env_held_prefixes(struct view_env *env, const struct layer_id *ids,
			      unsigned n, unsigned min, struct view ***out)
{
	struct view **got = NULL;
	size_t k = 0, cap = 0;

	*out = NULL;
	/* Under the list's lock only what never changes (nlayers) and the
	 * count; the layers' identities under each view's own lock (an
	 * attach rewrites them), with the list's lock let go. */
	pthread_mutex_lock(&env->views_lock);
	for (struct view *v = env->views; v; v = v->env_next) {
		if (v->nlayers < min || v->nlayers > n)
			continue;
		if (k == cap) {
			size_t c = cap ? 2 * cap : 8;
			struct view **g = realloc(got, c * sizeof(*g));

			if (!g)
				break;
			got = g;
			cap = c;
		}
		if (get_unless_zero(v))
			got[k++] = v;
	}
	pthread_mutex_unlock(&env->views_lock);
	for (size_t i = 0; i < k;) {
		if (movable_prefix(got[i], ids)) {
			i++;
			continue;
		}
		view_put(got[i]);
		got[i] = got[--k];
	}
	if (!k) {
		free(got);
		got = NULL;
	}
	*out = got;
	return k;
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

/* Closes the layers of a view nobody reads (its map stays). */
void view_close_layers(struct view *v)
{
	for (unsigned i = 0; i < v->nlayers; i++) {
		if (v->layers[i].lf)
			layer_file_put(v->env, v->layers[i].lf);
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
	if (view_moved(v)) {
		snprintf(why, len, "the view's layers were merged into a new base");
		return -ESTALE;		/* its open files read elsewhere */
	}
	ret = view_env_check_budget(v->env, v->nlayers, why, len);
	if (ret)
		return ret;
	for (unsigned i = 0; i < v->nlayers; i++) {
		struct view_layer *l = &v->layers[i];
		struct layer_id was = l->id;

		ret = layer_file_open(v->env, dirfd, l, why, len);

		if (ret == 0 && !layer_id_equal(&was, &l->id)) {
			snprintf(why, len, "layer %s is not the file it was", l->fname);
			ret = -ESTALE;
		}
		l->id = was;
		if (ret) {
			if (ret == -EIO)	/* gone or replaced: a newer chain */
				ret = -ESTALE;
			view_close_layers(v);
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

