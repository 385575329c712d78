/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The compactor (doc/format.md §6): merges a chain's base and its oldest
 * diffs into a new base, NAME.<s>.base with <s> the seq of the last diff
 * merged, so that the newest diffs stay and can still be rolled back, and
 * prunes what a base supersedes. The same code serves the daemon's
 * background thread and the one-shot snapfs-compact command; how the data
 * is copied on each filesystem is copy.h's.
 */
#ifndef SNAPFS_COMPACT_H
#define SNAPFS_COMPACT_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

#include "cache.h"
#include "copy.h"
#include "store.h"

/* Prefix of the compactor's staging files; never a layer name. */
#define COMPACT_TMP_PREFIX ".snapfs-compact."

/* enum compact_method and compact_method_name() (how data is copied into
 * the new base, chosen per filesystem) are in copy.h, included above. */

struct compact_opts {
	unsigned threshold;	/* compact chains with more diffs than this */
	unsigned keep;		/* diffs that stay above the new base */
	uint64_t rate;		/* bytes/s of data written, 0 = unlimited */
	bool dry_run;		/* plan and report, change nothing */
	unsigned page_size;	/* holes must resolve to this (doc/format.md §5);
				   0 means 4096 */
	const int *stop;	/* if set and nonzero (read atomically), give
				   up with -ECANCELED before the rename (also
				   while waiting for the rollback lock) */
	/* Held around the rename into place and the call of published(), so
	 * that whoever else takes it sees the old chain or the new one with
	 * published() already done; may be NULL. Taken after the directory's
	 * rollback lock (dirlock.h). */
	pthread_mutex_t *publish_lock;
	void (*published)(void *ctx, const char *new_base);
	void *ctx;
	/* If set, called with the bytes this compaction has written so far,
	 * after every piece (snapfs-compact's progress line); may be NULL. */
	void (*progress)(void *progress_ctx, uint64_t bytes);
	void *progress_ctx;
	/* STORE's root: if store_ino is set, the chain's directory must still
	 * lie beneath it when the new base is published (checked under the
	 * locks, right before the rename), else the compaction is abandoned
	 * with -EXDEV: nothing is written outside STORE (doc/format.md §3). */
	uint64_t store_dev, store_ino;
};

/* What a compaction did, for logs, xattrs and tests. */
struct compact_result {
	char new_base[256];	/* file name of the new base */
	size_t merged;		/* layers merged (old base + diffs) */
	bool reflinked;		/* base copied with FICLONE */
	enum compact_method method;
	uint64_t bytes_copied;	/* data written into the new base */
	uint64_t ranges;	/* ranges applied */
	double seconds;
	bool published;		/* the new base is in place (also when a
				   later step failed: content is unchanged,
				   superseded layers may remain) */
	bool withdrawn;		/* the new base was renamed into place, then
				   removed again: a merged diff was deleted
				   without the rollback lock (logged) */
	char refused[256];	/* with -EPERM: why no new base can hold the
				   merged layers without widening access
				   (names the layers), else "" */
};

/* How long the compactor waits for a directory's rollback lock before it
 * gives this compaction up with -EBUSY. */
#define COMPACT_LOCK_WAIT_MS 5000

/*
 * How many leading layers of chain a compaction merges: 0 if the chain has
 * no more than opts->threshold diffs, else 1 + (diffs - keep).
 */
size_t compact_plan(const struct store_chain *chain, const struct compact_opts *opts);

/*
 * Compacts the first nmerge layers of chain (layers of directory dirfd)
 * into a new base, crash-safely: the new base is written under a staging
 * name (COMPACT_TMP_PREFIX...), fsynced, renamed into place, the directory
 * fsynced, and only then are the merged layers unlinked. At every point
 * each chain of the store reads the same bytes as before. The data of the
 * merged layers is read through their extent maps (taken from cache); the
 * base is reflinked where the filesystem can (FICLONE), else copied
 * sparsely. name is NAME (for messages). The chain is checked as opening
 * it would (doc/format.md §5: equal sizes, diffs with holes, page-exact
 * holes) and refused with -EIO otherwise.
 *
 * Access: the new base is never readable by anyone who could not read
 * every merged layer: it gets their common owner and group and the AND of
 * their modes and ACLs (perms.h). Layers that differ in owner, group or ACL
 * entries, or a compactor that cannot give the new base their owner, make
 * it refuse with -EPERM and the cause in res->refused, logging nothing: the
 * caller reports it once; retrying cannot help until the layers'
 * permissions change.
 *
 * Rollbacks (doc/format.md §6, dirlock.h): the directory's rollback lock
 * is taken (waiting at most COMPACT_LOCK_WAIT_MS, honouring opts->stop) and
 * held from the last check of the merged layers, through the rename,
 * published() and the directory fsync, to the removal of the newest merged
 * diff. A rollback that held the lock first has changed a merged layer:
 * -EAGAIN, nothing published. One that comes after finds the new chain
 * (and the merged diffs gone: it cannot remove them any more). A merged
 * diff deleted without the lock after the check is caught when the newest
 * merged diff is claimed (renamed away atomically, then its identity
 * compared): the new base is then removed again before anything merged is
 * deleted (res->withdrawn, a warning logged, -EAGAIN), so the store reads
 * as the rolled-back chain.
 *
 * One compactor per chain, on any host: the chain's compaction lock
 * (dirlock.h) is tried first and held to the end; if another process holds
 * it, nothing is done and -EALREADY returned.
 *
 * Returns 0, or -errno with the staging file removed and the chain
 * untouched (-ENOSPC, -EIO, -EPERM, -EAGAIN, -EALREADY: another compactor
 * holds the chain, -EBUSY: the rollback lock stayed held elsewhere, -EXDEV: the directory left STORE, -ECANCELED,
 * ...); res->published tells whether the failure came after the new base
 * was in place.
 */
int compact_chain(int dirfd, const char *name, const struct store_chain *chain,
		  size_t nmerge, struct cache *cache, const struct compact_opts *opts,
		  struct compact_result *res);

/*
 * Removes staging files a crash left in directory dirfd: those no live
 * compactor (of this host or another, where the filesystem passes record
 * locks on) marks as its own (dirlock_mark_in_use()). Returns how many
 * were removed, or -errno.
 */
int compact_cleanup(int dirfd);

/*
 * Opens and checks chain (layers of dirfd) exactly as serving it would
 * (equal sizes, regular files, diffs with page-exact holes; doc/snapfs.8
 * BAD INPUT) and closes it again. Returns 0 if it is usable; -EIO with the
 * cause in why[len] if not; -ENOMEM, -EMFILE, ... when the process ran
 * short. Superseded layers below a chain that is not usable are the last
 * good data of the file: nothing may prune them.
 */
int compact_check_chain(int dirfd, const struct store_chain *chain,
			struct cache *cache, unsigned page_size, char *why, size_t len);

/*
 * Pruning. The one rule: a layer is superseded by the chain based on the
 * base of seq `base` if its seq is lower, or if it is a diff of that same
 * seq; a layer whose seq overflowed is never touched. Only the compactor
 * prunes, only below a chain that opens cleanly (compact_check_chain()).
 */

/* True if layer l is superseded by the chain on the base of seq `base`. */
bool compact_superseded(const struct store_layer *l, uint64_t base);

/*
 * Unlinks the layers of group g that the chain on the base of seq `base`
 * supersedes (g must stay valid during the call). A failure other than
 * ENOENT is logged as a warning. Returns how many were removed.
 */
int compact_prune(int dirfd, const struct store_group *g, uint64_t base);

/*
 * The same in two halves, for a caller whose group lives only under a
 * lock (the daemon's directory index): compact_prune_list() copies the
 * names of g's superseded layers into *names, a NULL-terminated array
 * (NULL if none), owned by the caller; it takes no lock and does no I/O.
 * Returns how many, or -ENOMEM (*names NULL). compact_prune_names() then
 * unlinks them in dirfd with no lock needed, logs a failure other than
 * ENOENT as a warning prefixed with who (a path or NAME), and frees names
 * (NULL is fine). Returns how many were removed.
 */
int compact_prune_list(const struct store_group *g, uint64_t base, char ***names);
int compact_prune_names(int dirfd, const char *who, char **names);

/* True if a directory entry name is exactly a compactor staging file's
 * name (COMPACT_TMP_PREFIX, 16 hex digits, '.', a pid); any other name,
 * even one with the prefix, is not. */
bool compact_is_tmp(const char *fname);

const char *compact_method_name(enum compact_method m);

#endif
