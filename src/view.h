/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A view is one version of a layered file: the open layers of its chain and
 * the chain's flattened map (doc/format.md §4), a sorted array of segments that each
 * say which layer serves a range, or that it reads as zero. A read is one
 * binary search plus the segments it spans, whatever the chain's depth.
 *
 * A view is immutable once built and shared by every open of that version;
 * it is freed when the last reference goes (see view_put()). One opened with
 * view_open_async() may be read before its map is built (doc/design.md
 * §5.1); its map is written once, by the builder, and then never changes.
 */
#ifndef SNAPFS_VIEW_H
#define SNAPFS_VIEW_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#include "cache.h"
#include "extent.h"
#include "monotime.h"
#include "store.h"

#define VIEW_ZERO (-1)

/* view.state: the map is there (also a view built by hand, all zeros), or
 * is being built; a failed build leaves the -errno of view_open(). */
#define VIEW_BUILT 0
#define VIEW_BUILDING 1

/* view.refs: the view has moved (view_move()); the rest is the count. */
#define VIEW_MOVED (1u << 31)

struct view_seg {
	uint64_t off;		/* start; the segment ends where the next starts */
	int32_t layer;		/* index into view.layers, or VIEW_ZERO */
};

struct layer_file;	/* an open layer, shared by every view that uses it */

struct view_layer {
	int fd;			/* O_RDONLY, read with pread/splice only;
				   owned by lf, shared with other views */
	const char *map;	/* the whole layer mapped read-only and
				   shared, owned by lf; NULL unless layers
				   are mapped (view_env_map_layers()), or
				   if it could not be (or is empty) */
	char *fname;
	struct layer_id id;
	struct layer_file *lf;
};

struct view {
	uint64_t size;
	unsigned nlayers;	/* base first */
	struct view_layer *layers;
	/* seg, nseg, data_bytes and the index: not to be read before
	   state is VIEW_BUILT (view_wait()) */
	size_t nseg;
	struct view_seg *seg;	/* nseg + 1 entries: seg[nseg].off == size */
	uint64_t data_bytes;	/* bytes not served as zero */
	uint32_t *seg_index;	/* of big maps, or NULL: seg_index[k] is
				   the segment holding k << index_shift, so
				   a lookup searches one stretch of seg */
	size_t index_len;
	unsigned index_shift;
	size_t charged;		/* bytes of seg and seg_index counted
				   against the extent-map budget */
	int state;		/* atomic: VIEW_BUILT, VIEW_BUILDING, or
				   the -errno its build failed with */
	char *build_why;	/* the cause of a failed build; lock */
	pthread_cond_t built;	/* with lock: state left VIEW_BUILDING */
	unsigned refs;		/* atomic: the count, and VIEW_MOVED once
				   view_move() set moved; drops to 2 or
				   below, or at all once moved, under lock */
	struct view *moved;	/* atomic: set once, with VIEW_MOVED: the
				   view whose bytes are this one's, which
				   reads of this one go to (one reference) */
	unsigned handles;	/* open files among refs (view_handle_hold());
				   protected by lock */
	struct view *env_prev, *env_next;	/* env's list of views;
				   protected by its views_lock */
	bool listed;		/* in that list; set before the view is
				   shared, cleared by view_free() */
	int broken;		/* atomic: a layer was found shorter than
				   the view (view_check_read()); with
				   label, the only fields that change
				   after view_open() */
	struct view_env *env;
	char *label;		/* atomic: set once (view_set_label()), for
				   log lines; NULL until then */
	pthread_mutex_t lock;	/* orders detaching against taking a
				   reference from the owner (below) */
	bool owned;		/* view_own(): protected by lock */
	bool detached;		/* layers closed: fds -1; protected by
				   lock */
	int64_t last_read;	/* atomic: mono_ns() of the last read
				   through the daemon once watched, else 0
				   (view_watch_reads()) */
	int short_layer;	/* atomic: 1 + a layer the map's build found
				   shorter than the view, else 0: its
				   scan saw holes past the cut
				   (view_read_pieces() answers EIO) */
};

/*
 * Flattens the extent maps of a chain (maps[0] the base, then each diff in
 * order) of files of the given size into segments: each byte is served by
 * the highest layer whose map has data there, else by VIEW_ZERO. Adjacent
 * segments of the same layer are merged. Returns 0 with a malloc'd array of
 * *nseg + 1 entries (the last one a sentinel at size), or -ENOMEM.
 */
int view_flatten(uint64_t size, const struct extent_map *const *maps,
		 unsigned nmaps, struct view_seg **seg, size_t *nseg);

/* Shared settings for building views: the map cache, the page size that
 * holes must resolve to, and a per-filesystem record of probe results. */
struct view_env;

struct view_env *view_env_new(struct cache *cache, unsigned page_size);
/* Frees the environment; every view built with it must be gone. */
void view_env_free(struct view_env *env);

/*
 * Whether layers are also mapped (read-only, shared) for replies written
 * from memory (read_reply=mmap); off by default, since splicing from the
 * fds needs no mapping. Call before any view is built.
 */
void view_env_map_layers(struct view_env *env, bool on);

/* The map cache views are built with. */
struct cache *view_env_cache(struct view_env *env);

/* Number of layer files held open (each once, however many views and
 * versions share it). */
size_t view_env_open_layers(struct view_env *env);

/*
 * The budget of fds for open files (doc/design.md §9.6): the layers views
 * hold plus the fds of other open files, which the caller counts with
 * view_env_take_fd() (-EMFILE when it would not fit) and
 * view_env_drop_fd(). view_open() and view_attach() fail with -EMFILE
 * rather than pass it. 0 (the default): no budget. Set before any view is
 * built.
 */
void view_env_set_fd_budget(struct view_env *env, size_t budget);
int view_env_take_fd(struct view_env *env);
void view_env_drop_fd(struct view_env *env);
/* True if at most half the budget is in use (or there is none): room
 * for fds that are only nice to hold, such as views waiting to be
 * flattened. */
bool view_env_fds_plenty(struct view_env *env);

/*
 * Opens every layer of chain (entries of directory dirfd; never through a
 * symlink), checks it (doc/format.md §5), and builds the view with one reference.
 * Returns 0; -EIO when the chain itself is unusable, with a one-line cause
 * naming the layer in why[len] (the caller logs it); -EMEDIUMTYPE when its
 * filesystem reports no holes at all, so that no diff there can be served:
 * why says so, and the filesystem was named in one log line already, so
 * the caller need not log it per chain; or -EMFILE, -ENFILE,
 * -ENOMEM when the process ran short (why may say which layer): those are
 * not the chain's fault and worth retrying.
 */
int view_open(struct view_env *env, int dirfd, const struct store_chain *chain,
	      struct view **out, char *why, size_t len);

/*
 * Waits up to ms for the maps being built in the background to be done
 * (their builders hold their views' layers until then). True if there
 * were any: out of fds, an open tries again after this.
 */
bool view_env_wait_builders(struct view_env *env, unsigned ms);

/*
 * view_open() that may return before the map is built: the layers are
 * opened and checked as view_open() does (sizes, hole granularity, and no
 * diff dense), then, where every diff's filesystem has FIEMAP, the layers
 * are scanned and flattened on a thread of its own and the view returned at
 * once, named label in log lines (view_set_label()). Reads that come before
 * the map are served with view_read_pieces(); whoever needs the map waits
 * for it with view_wait(). A failure found by the builder is logged there,
 * one line as the caller of view_open() would log it, and kept: reads and
 * view_wait() then answer -EIO, view_build_error() says why. Elsewhere
 * (tmpfs: only a whole scan can refuse a diff) it is view_open().
 */
int view_open_async(struct view_env *env, int dirfd, const struct store_chain *chain,
		    const char *label, struct view **out, char *why, size_t len);

/* Waits until v's map is built: 0, or -EIO if its build failed. */
int view_wait(struct view *v);

/* 0 while v's map is built or being built; else the -errno its build
 * failed with (as view_open() returns them), the cause in why[len]. */
int view_build_error(struct view *v, char *why, size_t len);

/*
 * References: view_get() takes one, view_put() drops one; the last put
 * closes the layers and frees the view. Whoever touches a view on a thread
 * of its own holds a reference until it is done: the put (a release on the
 * count, which the last put acquires) is what orders those accesses before
 * the free, also where the order is otherwise kept by the kernel (a read's
 * reply is sent before the release and forget that end the view), which
 * ThreadSanitizer cannot see.
 */
void view_get(struct view *v);
void view_put(struct view *v);

/*
 * A view nobody reads gives its layer fds back and keeps its map. Its
 * owner (the version that keeps it, one reference) calls view_own(); from
 * then on, whichever put leaves the owner's reference the only one closes
 * the layers, whoever makes it: a close, a read's reply, a prefetch job, a
 * lookup that only looked. The owner hands the view out again with
 * view_get_attached(), which takes a reference only while the layers are
 * open, or else view_attach(), which opens the same layers again from
 * dirfd. view_attach() returns 0; -ESTALE if a layer is gone or is no
 * longer the file it was (its identity, doc/format.md §3), -EMFILE,
 * -ENFILE or -ENOMEM; on failure the view stays detached, with the cause in
 * why[len]. The owner lets go with view_put_owned(), never view_put():
 * the handles still open keep the layers open until the last of them.
 */
void view_own(struct view *v);
void view_put_owned(struct view *v);

/*
 * Open files that hold a view (a FUSE handle each) say so: they keep the
 * view, but once it has moved (view_move()) not its layers.
 * view_handle_hold() counts the reference the caller already holds as an
 * open file's; view_handle_put() ends the open file and drops it.
 */
void view_handle_hold(struct view *v);
void view_handle_put(struct view *v);
/* Whether an open file holds v. */
bool view_held_open(struct view *v);

/*
 * A compaction does not change a version's bytes, only the layers they are
 * read from (doc/format.md §3): view_move() sends the reads of v's open
 * files to view to, built on the new chain, so that v's layers (the merged
 * ones, deleted from STORE) are closed as soon as only open files hold v,
 * and their disk space freed. False, and nothing changes, if the two
 * differ in size or v has moved already. v's map goes with its layers.
 * From then on, whoever reads for an
 * open file takes its reference with view_get_current(), never view_get():
 * it returns v itself, with a reference, until v has moved, then the view
 * the reads went to (following every later move). Holders of other
 * references (a push, a flat file's build) keep v's layers open until
 * they let go.
 */
bool view_move(struct view *v, struct view *to);
struct view *view_get_current(struct view *v);

/*
 * The first of v's first n layers that is not the file ids[i] names
 * (layer_id_equal()), or n if each is: whether v was opened on the very
 * layers a version, or a chain compacted since, was made of.
 */
size_t view_layers_differ(const struct view *v, const struct layer_id *ids, size_t n);

/* Whether v has moved (a hint: it never moves back). */
static inline bool view_moved(const struct view *v)
{
	return __atomic_load_n(&v->refs, __ATOMIC_RELAXED) & VIEW_MOVED;
}

/*
 * The views built with env that open files hold, that have not moved, and
 * whose chains are prefixes of the chain ids[0..n) at least min layers
 * long (the same files: layer identities, doc/format.md §4): a compaction
 * that merged ids[0..min) can move them (view_move()). Returns how many,
 * in *out (malloc'd; NULL if none), each with a reference; 0 also when
 * short of memory (nothing moves then).
 */
size_t view_env_held_prefixes(struct view_env *env, const struct layer_id *ids,
			      unsigned n, unsigned min, struct view ***out);
bool view_get_attached(struct view *v);
int view_attach(struct view *v, int dirfd, char *why, size_t len);

/*
 * When v was last read through the daemon, in mono_ns(), for the
 * flattener, which builds a version's flat file only once its view has
 * gone unread for a while (flatten.h). view_watch_reads() starts the
 * record (the offer of the view to the flattener) and view_unwatch_reads()
 * ends it (the wait is over); outside it is 0 and a read pays one relaxed
 * load. view_note_read(), on every read, moves it
 * at most once per VIEW_READ_GRAIN_NS, so that readers of one view do not
 * all write its line.
 */
#define VIEW_READ_GRAIN_NS (10 * 1000000LL)

static inline void view_watch_reads(struct view *v)
{
	__atomic_store_n(&v->last_read, mono_ns(), __ATOMIC_RELAXED);
}

static inline void view_unwatch_reads(struct view *v)
{
	__atomic_store_n(&v->last_read, 0, __ATOMIC_RELAXED);
}

static inline void view_note_read(struct view *v)
{
	int64_t last = __atomic_load_n(&v->last_read, __ATOMIC_RELAXED), now;

	if (!last)
		return;		/* nobody waits for this view's quiet */
	now = mono_ns();
	if (now - last >= VIEW_READ_GRAIN_NS)
		__atomic_store_n(&v->last_read, now, __ATOMIC_RELAXED);
}

static inline int64_t view_last_read(const struct view *v)
{
	return __atomic_load_n(&v->last_read, __ATOMIC_RELAXED);
}

/*
 * Names the view in log lines (the layered file's path in STORE): the
 * first call sets it, later ones are ignored (every version has one path).
 * Thread-safe; -ENOMEM if the copy cannot be made (the view then stays
 * unnamed). view_label() returns it, or "" while none is set.
 */
int view_set_label(struct view *v, const char *label);
const char *view_label(const struct view *v);

/* Index i of the segment holding off (seg[i].off <= off < seg[i+1].off);
 * off must be below v->size. */
size_t view_find(const struct view *v, uint64_t off);

/*
 * One contiguous piece of a read: from fd at off (also readable at
 * map + off when map is set), or zeros when fd < 0.
 */
struct view_piece {
	int fd;
	const char *map;
	uint64_t off;
	uint64_t len;
	int32_t layer;		/* index into view.layers, or VIEW_ZERO */
};

/*
 * Describes the read of [off, off + len) clipped to the view's size as
 * pieces, writing at most max of them to p. Returns the number of pieces
 * the whole read needs (0 at or past EOF); if that is more than max, only
 * the first max were written. The map must be built (view_wait()).
 */
size_t view_map_read(const struct view *v, uint64_t off, uint64_t len,
		     struct view_piece *p, size_t max);

/*
 * The pieces of the read of [off, off + len), whether or not v's map is
 * built yet: in stack (max entries) if they fit, else in a malloc'd array
 * (free it when *out != stack); *n of them, 0 at or past EOF. Before the
 * map, from the extents of each layer over just those bytes: the same
 * pieces the map will give. Returns 0; -EIO if the build failed (already
 * logged: why is empty) or a layer cannot be mapped (why says which);
 * -ENOMEM.
 */
int view_read_pieces(struct view *v, uint64_t off, uint64_t len,
		     struct view_piece *stack, size_t max,
		     struct view_piece **out, size_t *n, char *why, size_t whylen);

/*
 * Before a read of pieces p[0..n) is answered: checks that every layer they
 * read from is still as long as the view (fstat of each distinct layer
 * once). A layer truncated after it was published would otherwise give a
 * short reply, which the kernel takes for the end of the file. Returns 0;
 * or -EIO if a layer is shorter, or was found so before: then the view is
 * marked broken for good, and the one call that marked it gets *first set
 * and the cause in why[len] (for the one log line). Thread-safe.
 */
int view_check_read(struct view *v, const struct view_piece *p, size_t n,
		    bool *first, char *why, size_t len);

/*
 * view_check_read() for the one layer l, after a read from it came back
 * short (gathered reads learn it from the read itself, gather.h): 0 if the
 * layer is still as long as the view, else -EIO, the view marked broken as
 * view_check_read() does. view_is_broken(): whether it is.
 */
int view_layer_short(struct view *v, int32_t l, bool *first, char *why, size_t len);
bool view_is_broken(const struct view *v);

/*
 * lseek(SEEK_DATA / SEEK_HOLE) on the view: holes are the VIEW_ZERO
 * segments, and the end of the file. Waits for the map (view_wait()).
 * Returns the offset, or -ENXIO when off is at or past the end (or no data
 * follows, for SEEK_DATA), -EINVAL for another whence, -EIO if the map's
 * build failed.
 */
off_t view_seek(struct view *v, off_t off, int whence);

#endif
