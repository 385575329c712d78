/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's counters (stats.h): an array of 64-bit words, each updated
 * and read with relaxed atomics. Nothing orders one counter against
 * another: a reader gets each value exact, not a snapshot of all of them.
 * The last compaction cause is a string and takes a lock, but only the
 * compactor's thread and a reader of the counters ever take it.
 */
#include "config.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "stats.h"

static uint64_t counters[STAT_COUNT];	/* atomic, relaxed */

static pthread_mutex_t cause_lock = PTHREAD_MUTEX_INITIALIZER;
static char cause[512];			/* protected by cause_lock */

/* The names operators graph: stable, documented in snapfs(8). */
static const char *const names[STAT_COUNT] = {
	[STAT_READS_SPLICE] = "reads_splice",
	[STAT_BYTES_SPLICE] = "bytes_splice",
	[STAT_READS_MMAP] = "reads_mmap",
	[STAT_BYTES_MMAP] = "bytes_mmap",
	[STAT_READS_GATHER] = "reads_gather",
	[STAT_BYTES_GATHER] = "bytes_gather",
	[STAT_BYTES_ZERO] = "bytes_zero",
	[STAT_READS_PLAIN] = "reads_plain",
	[STAT_BYTES_PLAIN] = "bytes_plain",
	[STAT_READ_ERRORS] = "read_errors",
	[STAT_READS_PROBED] = "reads_probed",
	[STAT_OPENS_VIEW] = "opens_view",
	[STAT_OPENS_RW_PRIVATE] = "opens_rw_private",
	[STAT_OPENS_REFUSED_WRITE] = "opens_refused_write",
	[STAT_VERSIONS_ALIVE] = "versions_alive",
	[STAT_VIEWS_ALIVE] = "views_alive",
	[STAT_HANDLES_OPEN] = "handles_open",
	[STAT_LAYERS_OPEN] = "layers_open",
	[STAT_FLAT_ENTRIES] = "flat_entries",
	[STAT_FLAT_DEFERRED] = "flat_offers_deferred",
	[STAT_FLAT_WARMED] = "flat_warmed_bytes",
	[STAT_FLAT_CACHE_DROPS] = "flat_cache_drops",
	[STAT_HEAP_LOOKS] = "heap_looks",
	[STAT_HEAP_TRIMS] = "heap_trims",
	[STAT_COMPACT_DONE] = "compactions_done",
	[STAT_COMPACT_ABANDONED] = "compactions_abandoned",
	[STAT_COMPACT_REFUSED] = "compactions_refused",
	[STAT_COMPACT_FAILED] = "compactions_failed",
	[STAT_VIEWS_MOVED] = "views_moved",
};

void stats_add(enum stat_id id, uint64_t n)
{
	__atomic_add_fetch(&counters[id], n, __ATOMIC_RELAXED);
}

void stats_sub(enum stat_id id, uint64_t n)
{
	__atomic_sub_fetch(&counters[id], n, __ATOMIC_RELAXED);
}

uint64_t stats_get(enum stat_id id)
{
	return __atomic_load_n(&counters[id], __ATOMIC_RELAXED);
}

void stats_set_compact_cause(const char *path, const char *why)
{
	pthread_mutex_lock(&cause_lock);
	snprintf(cause, sizeof(cause), "%s: %s", path, why);
	/* One line per counter: a cause never spans two. */
	for (char *p = cause; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	pthread_mutex_unlock(&cause_lock);
}

/* Appends to buf[size] at *len like snprintf, counting what did not fit. */
__attribute__((format(printf, 4, 5)))
static void put(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(*len < size ? buf + *len : NULL, *len < size ? size - *len : 0,
		      fmt, ap);
	va_end(ap);
	if (n > 0)
		*len += (size_t)n;
}

size_t stats_format(char *buf, size_t size, const struct cache_stats *cs)
{
	size_t len = 0;

	if (size)
		buf[0] = '\0';
	for (int i = 0; i < STAT_COUNT; i++)
		put(buf, size, &len, "%s %llu\n", names[i],
		    (unsigned long long)stats_get((enum stat_id)i));
	if (cs) {
		put(buf, size, &len, "map_cache_hits %llu\n", (unsigned long long)cs->hits);
		put(buf, size, &len, "map_cache_misses %llu\n", (unsigned long long)cs->misses);
		put(buf, size, &len, "map_cache_evictions %llu\n",
		    (unsigned long long)cs->evictions);
		put(buf, size, &len, "map_cache_entries %zu\n", cs->entries);
		put(buf, size, &len, "map_cache_bytes %zu\n", cs->bytes);
		put(buf, size, &len, "map_view_bytes %zu\n", cs->charged);
	}
	pthread_mutex_lock(&cause_lock);
	put(buf, size, &len, "compact_last_cause %s\n", cause[0] ? cause : "-");
	pthread_mutex_unlock(&cause_lock);
	return len;
}

void stats_reset(void)
{
	for (int i = 0; i < STAT_COUNT; i++)
		__atomic_store_n(&counters[i], 0, __ATOMIC_RELAXED);
	pthread_mutex_lock(&cause_lock);
	cause[0] = '\0';
	pthread_mutex_unlock(&cause_lock);
}
