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
	size_t charged;		/* views' segments (cache_charge()) */
	uint64_t hits, misses, evictions, changed;
};

/* A cache whose maps, with the bytes charged to it, take at most budget
 * bytes: unreferenced maps are dropped to make room, and a map or a charge
 * that would not fit even then is refused. NULL on ENOMEM. */
struct cache *cache_new(size_t budget);

/* Frees every map; no map may still be referenced. */
void cache_free(struct cache *c);

/*
 * Returns in *out a referenced entry holding the map of the layer open as fd
 * with identity id (read it with cache_entry_map()),
 * scanning it if the cache has no map for that identity. A cached map of
 * the same (dev, ino) with a different identity is replaced (fname only
 * names the layer in debug lines; the caller reports producer errors).
 * Thread-safe; the scan runs without the cache lock held. Returns 0, the
 * -errno of the scan, or -EFBIG if the map would not fit the budget with
 * every unreferenced map dropped. Release with cache_put().
 */
int cache_get(struct cache *c, int fd, const struct layer_id *id,
	      const char *fname, struct cache_entry **out);

/* The map of a referenced entry; valid until cache_put(). */
const struct extent_map *cache_entry_map(const struct cache_entry *e);

/* Drops a reference taken by cache_get(); may evict to meet the budget. */
void cache_put(struct cache *c, struct cache_entry *e);

void cache_get_stats(struct cache *c, struct cache_stats *st);

/*
 * Counts bytes of extent-map memory held elsewhere (a view's segments)
 * against the budget, dropping unreferenced maps to make room: 0, or
 * -EFBIG (nothing counted) if they do not fit even then. cache_uncharge()
 * gives them back.
 */
int cache_charge(struct cache *c, size_t bytes);
void cache_uncharge(struct cache *c, size_t bytes);

/* The budget, in bytes. */
size_t cache_budget(const struct cache *c);

/* The bytes a new map or charge could take now: the budget less what
 * cannot be dropped (maps in use, charges). */
size_t cache_room(struct cache *c);

/*
 * The budget, in MiB, when none is given: a thirty-second of the memory,
 * at least 64 MiB. It bounds every extent map the process holds, the maps
 * of the views of every live version included, so it grows with the host
 * (a 64 GiB VM's chain of scattered 2% diffs takes tens of MiB).
 */
unsigned cache_default_mb(void);

/*
 * Forgets the map of identity id now, unless a view holds it (then the LRU
 * takes it in time): for layers that left the store, whose maps can never
 * be asked for again.
 */
void cache_drop(struct cache *c, const struct layer_id *id);

#endif
