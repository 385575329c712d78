/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The extent-map cache (doc/format.md §4): layer maps kept across opens and versions,
 * keyed by the layer file's identity, within a memory budget. A new version
 * of a chain (one more diff) then only scans the new layer.
 */
#ifndef SNAPFS_CACHE_H
#define SNAPFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "extent.h"
#include "layer.h"

struct cache;
struct cache_entry;		/* a referenced map, see cache_get() */

struct cache_stats {
	size_t entries;
	size_t bytes;		/* footprint of all maps held */
	uint64_t hits, misses, evictions, changed;
};

/* A cache whose maps take at most budget bytes, except while maps that are
 * referenced push it over: those are never dropped. NULL on ENOMEM. */
struct cache *cache_new(size_t budget);

/* Frees every map; no map may still be referenced. */
void cache_free(struct cache *c);

/*
 * Returns in *out a referenced entry holding the map of the layer open as fd
 * with identity id (read it with cache_entry_map()),
 * scanning it if the cache has no map for that identity. A cached map of
 * the same (dev, ino) with a different identity is replaced (fname only
 * names the layer in debug lines; the caller reports producer errors).
 * Thread-safe; the scan runs without the cache lock held. Returns 0 or the -errno of the scan.
 * Release with cache_put().
 */
int cache_get(struct cache *c, int fd, const struct layer_id *id,
	      const char *fname, struct cache_entry **out);

/* The map of a referenced entry; valid until cache_put(). */
const struct extent_map *cache_entry_map(const struct cache_entry *e);

/* Drops a reference taken by cache_get(); may evict to meet the budget. */
void cache_put(struct cache *c, struct cache_entry *e);

void cache_get_stats(struct cache *c, struct cache_stats *st);

/*
 * Forgets the map of identity id now, unless a view holds it (then the LRU
 * takes it in time): for layers that left the store, whose maps can never
 * be asked for again.
 */
void cache_drop(struct cache *c, const struct layer_id *id);

#endif
