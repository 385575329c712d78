/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Extent-map cache: an open hash table (xxh3 of dev and inode) with chaining,
 * and an LRU list of the entries nobody references. Referenced maps are never
 * freed; when the bytes held exceed the budget, unreferenced entries are
 * dropped from the cold end of the LRU.
 *
 * The budget bounds all extent-map memory: the maps held here, and the
 * segment arrays of views, which are charged to it (cache_charge()). A scan
 * gets only the room that dropping every unreferenced map would leave; a
 * map or a view that does not fit is refused with -EFBIG.
 *
 * Locking: one mutex, c->lock, protects everything in struct cache and in its
 * entries. It is never held across a scan (I/O) or while freeing a map that
 * another thread could reach.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache.h"
#include "log.h"

struct cache_entry {
	struct layer_id id;
	struct extent_map *map;
	unsigned refs;			/* protected by cache.lock */
	struct cache_entry *hnext;	/* hash chain */
	struct cache_entry *prev, *next;/* LRU, only while refs == 0 */
	bool stale;			/* replaced: free when refs drop to 0 */
};

struct cache {
	pthread_mutex_t lock;
	size_t budget;
	size_t lru_bytes;		/* of st.bytes, the unreferenced maps'
					   (what eviction can give back) */
	size_t nbuckets;
	struct cache_entry **buckets;	/* protected by lock */
	struct cache_entry lru;		/* sentinel: lru.next is the coldest */
	struct cache_stats st;		/* protected by lock */
};

static size_t bucket_of(const struct cache *c, uint64_t dev, uint64_t ino)
{
	uint64_t key[2] = { dev, ino };

	return (size_t)(XXH3_64bits(key, sizeof(key)) & (c->nbuckets - 1));
}

struct cache *cache_new(size_t budget)
{
	struct cache *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->nbuckets = 1024;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->budget = budget;
	c->lru.next = c->lru.prev = &c->lru;
	return c;
}

static void lru_unlink(struct cache *c, struct cache_entry *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->prev = e->next = NULL;
	c->lru_bytes -= extent_map_footprint(e->map);
}

static void lru_push_hot(struct cache *c, struct cache_entry *e)
{
	c->lru_bytes += extent_map_footprint(e->map);
	e->prev = c->lru.prev;
	e->next = &c->lru;
	c->lru.prev->next = e;
	c->lru.prev = e;
}

static void hash_unlink(struct cache *c, struct cache_entry *e)
{
	struct cache_entry **pp = &c->buckets[bucket_of(c, e->id.dev, e->id.ino)];

	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	e->hnext = NULL;
}

/* Grows the table when the load passes 1; called with the lock held. */
static void maybe_grow(struct cache *c)
{
	struct cache_entry **nb;
	size_t old = c->nbuckets;

	if (c->st.entries <= old)
		return;
	nb = calloc(old * 2, sizeof(*nb));
	if (!nb)
		return;		/* keep the longer chains; still correct */
	c->nbuckets = old * 2;
	for (size_t i = 0; i < old; i++) {
		struct cache_entry *e = c->buckets[i], *n;

		for (; e; e = n) {
			size_t b = bucket_of(c, e->id.dev, e->id.ino);

			n = e->hnext;
			e->hnext = nb[b];
			nb[b] = e;
		}
	}
	free(c->buckets);
	c->buckets = nb;
}

/* Bytes held against the budget: maps and charges. */
static size_t held_locked(const struct cache *c)
{
	return c->st.bytes + c->st.charged;
}

/* The room left once every unreferenced map is dropped: the budget less
 * what cannot be dropped (referenced maps, views' segments). */
static size_t room_locked(const struct cache *c)
{
	size_t kept = held_locked(c) - c->lru_bytes;

	return kept < c->budget ? c->budget - kept : 0;
}

/* Unlinks unreferenced entries until more bytes fit the budget; returns
 * them as a list through hnext for the caller to free after unlocking. */
static struct cache_entry *evict_locked(struct cache *c, size_t more)
{
	struct cache_entry *victims = NULL;

	while (held_locked(c) + more > c->budget && c->lru.next != &c->lru) {
		struct cache_entry *e = c->lru.next;

		lru_unlink(c, e);
		hash_unlink(c, e);
		c->st.entries--;
		c->st.bytes -= extent_map_footprint(e->map);
		c->st.evictions++;
		e->hnext = victims;
		victims = e;
	}
	return victims;
}

static void free_entries(struct cache_entry *e)
{
	while (e) {
		struct cache_entry *n = e->hnext;

		free(e->map);
		free(e);
		e = n;
	}
}

int cache_get(struct cache *c, int fd, const struct layer_id *id,
	      const char *fname, struct cache_entry **out)
{
	struct cache_entry *e, *stale = NULL, *victims;
	struct extent_map *m;
	bool changed = false;
	size_t room;
	int ret;

	pthread_mutex_lock(&c->lock);
	for (e = c->buckets[bucket_of(c, id->dev, id->ino)]; e; e = e->hnext) {
		if (e->id.dev != id->dev || e->id.ino != id->ino)
			continue;
		if (layer_id_equal(&e->id, id)) {
			if (e->refs++ == 0)
				lru_unlink(c, e);
			c->st.hits++;
			*out = e;
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		changed = true;
	}
	c->st.misses++;
	pthread_mutex_unlock(&c->lock);

	/* Whether this is a producer rewriting a published layer or a new
	 * file that reuses a deleted layer's inode number, only the caller
	 * can tell (it knows names); here it just means: scan again. */
	if (changed)
		log_debug("%s: identity changed since its map was cached; "
			  "scanning it again", fname);

	/* The room this map may take. */
	room = cache_room(c);
	ret = extent_scan_within(fd, id->size, room, &m);
	if (ret)
		return ret;

	e = calloc(1, sizeof(*e));
	if (!e) {
		free(m);
		return -ENOMEM;
	}
	e->id = *id;
	e->map = m;
	e->refs = 1;

	pthread_mutex_lock(&c->lock);
	/* Another thread may have scanned the same identity meanwhile: use
	 * the first one in, and retire entries of an older identity. */
	for (struct cache_entry *o = c->buckets[bucket_of(c, id->dev, id->ino)]; o; o = o->hnext) {
		if (o->id.dev == id->dev && o->id.ino == id->ino &&
		    layer_id_equal(&o->id, id)) {
			if (o->refs++ == 0)
				lru_unlink(c, o);
			*out = o;
			pthread_mutex_unlock(&c->lock);
			free(m);
			free(e);
			return 0;
		}
	}
	{
		struct cache_entry **pp = &c->buckets[bucket_of(c, id->dev, id->ino)];

		while (*pp) {
			struct cache_entry *o = *pp;

			if (o->id.dev == id->dev && o->id.ino == id->ino) {
				*pp = o->hnext;
				c->st.entries--;
				c->st.bytes -= extent_map_footprint(o->map);
				c->st.changed++;
				if (o->refs == 0) {
					lru_unlink(c, o);
					o->hnext = stale;
					stale = o;
				} else {
					o->stale = true;
					o->hnext = NULL;
				}
				continue;
			}
			pp = &o->hnext;
		}
	}
	/* Scans that ran at once may each have found the room: the one
	 * that no longer fits is refused here. */
	victims = evict_locked(c, extent_map_footprint(m));
	if (held_locked(c) + extent_map_footprint(m) > c->budget) {
		pthread_mutex_unlock(&c->lock);
		free_entries(stale);
		free_entries(victims);
		free(m);
		free(e);
		return -EFBIG;
	}
	e->hnext = c->buckets[bucket_of(c, id->dev, id->ino)];
	c->buckets[bucket_of(c, id->dev, id->ino)] = e;
	c->st.entries++;
	c->st.bytes += extent_map_footprint(m);
	maybe_grow(c);
	pthread_mutex_unlock(&c->lock);

	free_entries(stale);
	free_entries(victims);
	*out = e;
	return 0;
}

const struct extent_map *cache_entry_map(const struct cache_entry *e)
{
	return e->map;
}

void cache_put(struct cache *c, struct cache_entry *e)
{
	struct cache_entry *victims = NULL;

	if (!e)
		return;
	pthread_mutex_lock(&c->lock);
	if (--e->refs == 0) {
		if (e->stale) {
			/* Replaced while in use: no longer in the table. */
			pthread_mutex_unlock(&c->lock);
			e->hnext = NULL;
			free_entries(e);
			return;
		}
		lru_push_hot(c, e);
		victims = evict_locked(c, 0);
	}
	pthread_mutex_unlock(&c->lock);
	free_entries(victims);
}

int cache_charge(struct cache *c, size_t bytes)
{
	struct cache_entry *victims;
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	victims = evict_locked(c, bytes);
	if (held_locked(c) + bytes > c->budget)
		ret = -EFBIG;
	else
		c->st.charged += bytes;
	pthread_mutex_unlock(&c->lock);
	free_entries(victims);
	return ret;
}

void cache_uncharge(struct cache *c, size_t bytes)
{
	pthread_mutex_lock(&c->lock);
	c->st.charged -= bytes;
	pthread_mutex_unlock(&c->lock);
}

unsigned cache_default_mb(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
	uint64_t mb;

	if (pages <= 0 || size <= 0)
		return 64;
	mb = ((uint64_t)pages * (uint64_t)size >> 20) / 32;
	return mb < 64 ? 64 : mb > 1u << 20 ? 1u << 20 : (unsigned)mb;
}

size_t cache_budget(const struct cache *c)
{
	return c->budget;
}

size_t cache_room(struct cache *c)
{
	size_t room;

	pthread_mutex_lock(&c->lock);
	room = room_locked(c);
	pthread_mutex_unlock(&c->lock);
	return room;
}

void cache_drop(struct cache *c, const struct layer_id *id)
{
	struct cache_entry *e;

	pthread_mutex_lock(&c->lock);
	for (e = c->buckets[bucket_of(c, id->dev, id->ino)]; e; e = e->hnext)
		if (layer_id_equal(&e->id, id))
			break;
	if (e && e->refs == 0) {
		lru_unlink(c, e);
		hash_unlink(c, e);
		c->st.entries--;
		c->st.bytes -= extent_map_footprint(e->map);
	} else {
		e = NULL;	/* in use: the LRU takes it later */
	}
	pthread_mutex_unlock(&c->lock);
	if (e)
		free_entries(e);
}

void cache_free(struct cache *c)
{
	if (!c)
		return;
	for (size_t b = 0; b < c->nbuckets; b++)
		free_entries(c->buckets[b]);
	free(c->buckets);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

void cache_get_stats(struct cache *c, struct cache_stats *st)
{
	pthread_mutex_lock(&c->lock);
	*st = c->st;
	pthread_mutex_unlock(&c->lock);
}
