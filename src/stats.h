/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's counters, for operators (doc/snapfs.8, "COUNTERS"): reads and
 * bytes per reply path, opens, versions and views alive, compactions by
 * outcome. Each counter is one 64-bit word updated with a relaxed atomic
 * add: no lock on the read path, and a reader sees each counter exact but
 * the set not taken at one instant (good enough to graph rates).
 */
#ifndef SNAPFS_STATS_H
#define SNAPFS_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

enum stat_id {
	STAT_READS_SPLICE,	/* view reads answered from the layers' fds */
	STAT_BYTES_SPLICE,
	STAT_READS_MMAP,	/* view reads answered from the layers' maps */
	STAT_BYTES_MMAP,
	STAT_READS_GATHER,	/* view reads gathered in one io_uring
				   submission (gather.h) */
	STAT_BYTES_GATHER,
	STAT_BYTES_ZERO,	/* of those bytes, holes sent as zeros */
	STAT_READS_PLAIN,	/* reads of ordinary files of STORE */
	STAT_BYTES_PLAIN,
	STAT_READ_ERRORS,	/* view reads answered with an error */
	STAT_READS_PROBED,	/* view reads served while the view's map was
				   being built (doc/design.md §5.1) */
	STAT_OPENS_VIEW,	/* read-only opens of views */
	STAT_OPENS_RW_PRIVATE,	/* O_RDWR opens let in by open_rw=private */
	STAT_OPENS_REFUSED_WRITE,	/* opens of views for writing refused */
	STAT_VERSIONS_ALIVE,	/* versions the daemon holds (gauge) */
	STAT_VIEWS_ALIVE,	/* views built and not yet freed (gauge) */
	STAT_HANDLES_OPEN,	/* open handles of views not yet released
				   (gauge) */
	STAT_LAYERS_OPEN,	/* layer files held open, each once however
				   many views share it (gauge) */
	STAT_FLAT_ENTRIES,	/* versions the flattener keeps a record of:
				   pending, ready or failed (gauge) */
	STAT_FLAT_DEFERRED,	/* offers not taken (FLAT_QUEUE views waited
				   already) or handed back (out of fds) */
	STAT_FLAT_WARMED,	/* bytes of flat files read into the page
				   cache before they were handed to opens,
				   as far as their layers were cached */
	STAT_FLAT_CACHE_DROPS,	/* versions whose FUSE page cache was
				   dropped once their flat file was ready
				   (or a compaction left them one layer)
				   and no open was left on the FUSE path */
	STAT_HEAP_LOOKS,	/* looks at the heap after bursts of frees
				 * (memtrim.h) */
	STAT_HEAP_TRIMS,	/* of those, the ones that gave memory back */
	STAT_COMPACT_DONE,
	STAT_COMPACT_ABANDONED,	/* a rollback came first, or its lock stayed
				   held, or the directory left STORE */
	STAT_COMPACT_REFUSED,	/* layers of different owners or ACLs */
	STAT_COMPACT_FAILED,
	STAT_VIEWS_MOVED,	/* views whose open files a compaction moved
				   onto its new base */
	STAT_COUNT
};

/* Adds n to counter id (relaxed atomic; any thread, no lock). */
void stats_add(enum stat_id id, uint64_t n);

/* Subtracts n from a gauge (relaxed atomic). */
void stats_sub(enum stat_id id, uint64_t n);

/* The current value of counter id (relaxed atomic load). */
uint64_t stats_get(enum stat_id id);

/*
 * Remembers why the last compaction failed or was refused, for the
 * counters' "compact_last_cause" line (copied, cut to fit; thread-safe;
 * never called on the read path).
 */
void stats_set_compact_cause(const char *path, const char *cause);

/*
 * Writes every counter as "name value" lines, the map cache's counters
 * from cs (may be NULL), and the last compaction cause, into buf[size]
 * (always terminated). Returns the length the whole text needs; if that is
 * size or more, the text was cut.
 */
size_t stats_format(char *buf, size_t size, const struct cache_stats *cs);

/* Zeroes every counter and the cause (for tests). */
void stats_reset(void);

#endif
