/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Compaction: base + oldest diffs -> one new base.
 *
 * Why every step is crash-safe. The new base NAME.<s>.base holds exactly
 * the bytes of the merged layers' view, and <s> is the seq of the last diff
 * merged, so the chain it starts (it, then the diffs above <s>) reads the
 * same as the chain it replaces. It is written in full under a staging name
 * that is not a layer name, so until the rename the store holds no new
 * layer at all; the data is fsynced before the rename, so the name never
 * appears with incomplete content; the directory is fsynced after it, so a
 * crash leaves either the old chain or the new one, both reading the same.
 * Only then are the merged layers unlinked: they are superseded, so removing
 * any subset of them changes nothing. A failure at any step before the
 * rename removes the staging file and leaves the store as it was; staging
 * files a crash left behind are removed by compact_cleanup().
 *
 * Speed: the base is reflinked (FICLONE), so its data is shared, not
 * copied; only the merged diffs' data ranges are written, each byte once,
 * from the newest merged layer that has it (the flattened map). How they
 * are written depends on the filesystem (copy.c).
 *
 * compact_chain() is the sequence of doc/design.md §10.2: one function per
 * numbered step over a struct compaction, released in one place.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "compact.h"
#include "copy.h"
#include "dirlock.h"
#include "log.h"
#include "perms.h"
#include "view.h"

/*
 * The staging name of the new base NAME.<seq>.base made by this process:
 * COMPACT_TMP_PREFIX, 16 hex digits of a hash of the new base's name, a dot
 * and the pid. Its length does not depend on NAME, so a NAME as long as
 * NAME_MAX allows still has one.
 */
static void staging_name(char *buf, size_t len, const char *new_base)
{
	snprintf(buf, len, "%s%016llx.%d", COMPACT_TMP_PREFIX,
		 (unsigned long long)XXH64(new_base, strlen(new_base), 0),
		 (int)getpid());
}

bool compact_is_tmp(const char *fname)
{
	const char *p = fname + strlen(COMPACT_TMP_PREFIX);
	size_t digits = 0;

	/* Exactly what staging_name() makes: a file of another origin that
	 * merely starts like it is the user's and is never touched. */
	if (strncmp(fname, COMPACT_TMP_PREFIX, strlen(COMPACT_TMP_PREFIX)) != 0)
		return false;
	for (int i = 0; i < 16; i++, p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	if (*p++ != '.')
		return false;
	for (; *p >= '0' && *p <= '9'; p++)
		digits++;
	return *p == '\0' && digits >= 1 && digits <= 10;
}

/* ---- planning ---- */

size_t compact_plan(const struct store_chain *chain, const struct compact_opts *opts)
{
	size_t diffs = chain->nlayers ? chain->nlayers - 1 : 0;

	if (diffs <= opts->threshold || diffs <= opts->keep)
		return 0;
	return 1 + diffs - opts->keep;
}

/* ---- one compaction ---- */

/*
 * Everything one compact_chain() call holds, released in one place
 * (compaction_release()). The first block is borrowed from the caller;
 * the rest is owned.
 */
struct compaction {
	int dirfd;
	const char *name;		/* NAME, for messages */
	const struct store_chain *chain;
	size_t nmerge;			/* layers merged: chain->layers[0..nmerge) */
	struct cache *cache;
	const struct compact_opts *opts;
	struct compact_result *res;
	unsigned page_size;

	int *fds;			/* the merged layers, open */
	struct layer_id *ids;		/* ... their identities when opened */
	struct cache_entry **ents;	/* ... their maps' cache references */
	const struct extent_map **maps;	/* ... and maps */
	struct view_seg *seg;		/* their flattened map */
	size_t nseg;
	uint64_t size;			/* of every layer */
	struct stat base_st;		/* of the old base */
	struct perms perm;		/* of the new base */
	char tmp[512];			/* staging name of the new base */
	int out;			/* the staging file, or -1 */
	bool renamed;			/* the staging file is the new base */
	struct copier copier;
	struct dirlock lk;		/* the directory's rollback lock */
	struct chainlock clk;		/* the chain's compaction lock */
};

/* The name of merged layer i. */
static const char *layer_name(const struct compaction *cp, size_t i)
{
	return cp->chain->layers[i]->fname;
}

/* ---- fault points (test builds only) ---- */

/*
 * SNAPFS_FAULT="STEP:kill" or "STEP:fail" makes the compactor die (as a
 * crash would: no cleanup) or fail with EIO right after step STEP:
 * 1 staging file created, 2 base copied, 3 diffs applied, 4 data fsynced,
 * 5 renamed into place, 6 directory fsynced, 7 old base unlinked.
 * "STEP:rm-top" plays a producer that deletes the newest merged diff
 * right after step STEP: after 6 without the rollback lock (the compactor
 * must withdraw), after 4 as a rollback that got the lock first would
 * (the compactor must give up).
 */
static bool fault_wants(int step, const char *want)
{
#ifdef SNAPFS_FAULT_INJECTION
	const char *f = getenv("SNAPFS_FAULT");
	char action[16];
	int at;

	return f && sscanf(f, "%d:%15s", &at, action) == 2 && at == step &&
	       strcmp(action, want) == 0;
#else
	(void)step;
	(void)want;
	return false;
#endif
}

/* What follows step `step` (0: one without a fault point) that returned
 * ret: ret if it failed, else its fault point's doing (0 in a build
 * without them). */
static int after(struct compaction *cp, int step, int ret)
{
	if (ret || !step)
		return ret;
	if (fault_wants(step, "kill")) {
		log_err("fault injection: killed after compaction step %d", step);
		_exit(99);
	}
	if (fault_wants(step, "fail")) {
		log_err("fault injection: failing after compaction step %d", step);
		return -EIO;
	}
	if (fault_wants(step, "rm-top"))
		unlinkat(cp->dirfd, layer_name(cp, cp->nmerge - 1), 0);
	return 0;
}

/*
 * renameat2(RENAME_NOREPLACE) of from to to in dirfd, also where the
 * filesystem has no rename flags (NFS, CephFS answer EINVAL): there, a
 * hard link to the new name (which fails with EEXIST if it exists: the
 * same no-replace, atomically, at the server) and the removal of the old
 * name. If the old name vanished in between (a producer's rm: a rollback),
 * the link is removed again: -ENOENT, as if it had vanished first.
 * Returns 0 or -errno; on failure nothing changed but what another process
 * did.
 */
static int rename_noreplace(int dirfd, const char *from, const char *to)
{
	if (!fault_wants(0, "no-noreplace")) {
		if (renameat2(dirfd, from, dirfd, to, RENAME_NOREPLACE) == 0)
			return 0;
		if (errno != EINVAL)
			return -errno;
	}
	if (linkat(dirfd, from, dirfd, to, 0) < 0)
		return -errno;
	if (unlinkat(dirfd, from, 0) == 0)
		return 0;
	if (errno == ENOENT) {
		unlinkat(dirfd, to, 0);
		return -ENOENT;
	}
	{
		int e = errno;

		unlinkat(dirfd, to, 0);
		return -e;
	}
}

/*
 * Fills cp for compacting the first nmerge layers of chain: the new base's
 * name in res->new_base and its staging name. Allocates nothing. Returns 0,
 * -EINVAL for a bad nmerge, -ENAMETOOLONG.
 */
static int compaction_init(struct compaction *cp, int dirfd, const char *name,
			   const struct store_chain *chain, size_t nmerge,
			   struct cache *cache, const struct compact_opts *opts,
			   struct compact_result *res)
{
	memset(cp, 0, sizeof(*cp));
	memset(res, 0, sizeof(*res));
	cp->dirfd = dirfd;
	cp->name = name;
	cp->chain = chain;
	cp->nmerge = nmerge;
	cp->cache = cache;
	cp->opts = opts;
	cp->res = res;
	cp->page_size = opts->page_size ? opts->page_size : 4096;
	cp->out = -1;
	cp->lk.fd = -1;
	cp->lk.lockfd = -1;
	cp->clk.fd = -1;
	if (nmerge < 2 || nmerge > chain->nlayers)
		return -EINVAL;
	/* Never longer than the merged diff's own name, NAME.<seq>.diff,
	 * which fits; checked all the same. */
	if ((size_t)snprintf(res->new_base, sizeof(res->new_base), "%s.%llu.base", name,
			     (unsigned long long)chain->layers[nmerge - 1]->seq) >=
	    sizeof(res->new_base))
		return -ENAMETOOLONG;
	staging_name(cp->tmp, sizeof(cp->tmp), res->new_base);
	res->merged = nmerge;
	return 0;
}

/*
 * Everything a compaction holds goes; on failure (ret != 0) before the
 * rename, the staging file too.
 */
static void compaction_release(struct compaction *cp, int ret)
{
	if (ret && cp->out >= 0 && !cp->renamed)
		unlinkat(cp->dirfd, cp->tmp, 0);
	if (cp->out >= 0)
		close(cp->out);
	dirlock_release(&cp->lk);
	chainlock_release(&cp->clk);
	for (size_t i = 0; cp->ents && i < cp->nmerge; i++)
		cache_put(cp->cache, cp->ents[i]);
	for (size_t i = 0; cp->fds && i < cp->nmerge; i++)
		if (cp->fds[i] >= 0)
			close(cp->fds[i]);
	free(cp->seg);
	free(cp->maps);
	free(cp->ents);
	free(cp->ids);
	free(cp->fds);
	copier_release(&cp->copier);
	perms_free(&cp->perm);
}

/*
 * Step 0, claim the chain: its compaction lock (dirlock.h), held to the
 * end, so that one compactor on one host works on it while the others skip
 * it (-EALREADY). Where the store has no record locks (or no lock file can
 * be made) the compaction goes on without it: two compactors then race as
 * before, and the loser's publish finds the new base in place (EEXIST) or
 * its layers gone (-EAGAIN): work lost, nothing wrong in STORE.
 */
static int claim_chain(struct compaction *cp)
{
	const struct compact_opts *o = cp->opts;
	int ret;

	/* Taking it may create the lock file: never outside STORE. */
	if (o->store_ino && !store_dir_inside(cp->dirfd, o->store_dev, o->store_ino))
		return -EXDEV;
	ret = chainlock_try(cp->dirfd, cp->name, &cp->clk);
	if (ret == -ENOSPC || ret == -EDQUOT || ret == -EROFS) {
		/* No lock file can be made, and no staging file either: the
		 * compaction's own failure is the one line to say. */
		ret = 0;
	} else if (ret && ret != -EALREADY) {
		log_warn_rl("%s: compacting without the chain's compaction lock "
			    "(%s): a compactor on another host may do the same "
			    "work", cp->name, strerror(-ret));
		ret = 0;
	}
	return ret;
}

/*
 * Opens the merged layers into cp->fds and cp->ids; all of one size, else
 * -EIO. A layer that is not a regular file is -EIO with a log line.
 */
static int open_layers(struct compaction *cp)
{
	for (size_t i = 0; i < cp->nmerge; i++) {
		struct stat st;

		/* Never blocks on a FIFO or opens a device that was swapped
		 * in for a layer after its view was built. */
		cp->fds[i] = layer_open(cp->dirfd, layer_name(cp, i), false, &st);
		if (cp->fds[i] < 0) {
			int e = -cp->fds[i];

			cp->fds[i] = -1;
			if (e != ELOOP && e != EFTYPE_LAYER)
				return -e;
			log_err("%s: not compacting: layer %s is %s", cp->name,
				layer_name(cp, i), e == ELOOP ?
				"a symbolic link (layers are never followed)" :
				"not a regular file");
			return -EIO;
		}
		layer_id_from_stat(&cp->ids[i], &st);
		if (cp->ids[i].size != cp->ids[0].size)
			return -EIO;
	}
	return 0;
}

/*
 * Load and check: opens the merged layers, takes their maps, checks the
 * chain as opening it would (doc/format.md §5: equal sizes, holes no
 * coarser than a page, no dense diff) and flattens it. -EIO with a log line
 * for a chain that opening would refuse; -EAGAIN if a layer is gone
 * already (a rollback came first).
 */
static int load_and_check(struct compaction *cp)
{
	uint64_t gran;
	int ret;

	cp->fds = calloc(cp->nmerge, sizeof(*cp->fds));
	cp->ids = calloc(cp->nmerge, sizeof(*cp->ids));
	cp->ents = calloc(cp->nmerge, sizeof(*cp->ents));
	cp->maps = calloc(cp->nmerge, sizeof(*cp->maps));
	ret = copier_init(&cp->copier, cp->opts->rate, cp->opts->stop);
	cp->copier.progress = cp->opts->progress;
	cp->copier.progress_ctx = cp->opts->progress_ctx;
	if (!cp->fds || !cp->ids || !cp->ents || !cp->maps || ret)
		return -ENOMEM;
	for (size_t i = 0; i < cp->nmerge; i++)
		cp->fds[i] = -1;
	ret = open_layers(cp);
	if (ret == -ENOENT)
		return -EAGAIN;	/* rolled back before we began: not a failure */
	if (ret)
		return ret;
	cp->size = cp->ids[0].size;
	/* The probe first, as at open: on a filesystem with coarse holes a
	 * diff's map says nothing its other checks could use. */
	if (extent_probe_granularity(cp->dirfd, cp->page_size, &gran) == 0 &&
	    gran > cp->page_size) {
		log_err("%s: not compacting: holes on this filesystem are %llu "
			"bytes, coarser than the %u-byte page", cp->name,
			(unsigned long long)gran, cp->page_size);
		return -EIO;
	}
	for (size_t i = 0; i < cp->nmerge; i++) {
		const char *cause;

		ret = cache_get(cp->cache, cp->fds[i], &cp->ids[i], layer_name(cp, i),
				&cp->ents[i]);
		if (ret)
			return ret;
		cp->maps[i] = cache_entry_map(cp->ents[i]);
		/* A diff refused at open (one without holes would put zeros
		 * over the base) must not be made a base either. */
		if (i > 0 && (cause = extent_diff_refusal(cp->maps[i], cp->page_size))) {
			log_err("%s: not compacting: diff %s %s", cp->name,
				layer_name(cp, i), cause);
			return -EIO;
		}
	}
	return view_flatten(cp->size, cp->maps, (unsigned)cp->nmerge, &cp->seg, &cp->nseg);
}

/* The new base's permissions (perms_merge()), or -EPERM with
 * res->refused set: the part of stage() that writes nothing, which a dry
 * run checks too. */
static int merge_perms(struct compaction *cp)
{
	const char *what;
	size_t culprit;
	int ret;

	if (fstat(cp->fds[0], &cp->base_st) < 0)
		return -errno;
	ret = perms_merge(cp->fds, cp->nmerge, &cp->perm, &culprit, &what);
	if (ret == -EPERM)
		snprintf(cp->res->refused, sizeof(cp->res->refused),
			 "layers %s and %s differ in %s, and no single file "
			 "can hold their bytes without widening access",
			 layer_name(cp, 0), layer_name(cp, culprit), what);
	return ret;
}

/*
 * Step 1, stage: creates the staging file with the new base's permissions.
 * It never grants more than any merged layer did: their common owner and
 * group, the AND of their modes and of their ACLs (perms.h). Layers that
 * differ in owner, group or ACL entries have no such file, nor has a
 * compactor that cannot give it their owner: -EPERM with res->refused set,
 * for the caller to report.
 */
static int stage(struct compaction *cp)
{
	int ret = merge_perms(cp);

	if (ret)
		return ret;
	/* Owner-only until its permissions are set (also against a default
	 * ACL of the directory, whose entries the mode masks). */
	cp->out = openat(cp->dirfd, cp->tmp, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	if (cp->out < 0)
		return -errno;
	/* Live, for a cleanup on another host (compact_cleanup()); where
	 * record locks are missing, the mark is too. */
	dirlock_mark_in_use(cp->out);
	ret = perms_apply(cp->out, &cp->perm);
	if (ret == -EPERM)
		snprintf(cp->res->refused, sizeof(cp->res->refused),
			 "the new base cannot be given its layers' owner %u:%u "
			 "(the compactor is not root)", (unsigned)cp->perm.uid,
			 (unsigned)cp->perm.gid);
	return ret;
}

/* Step 2: the old base into the staging file, shared where the filesystem
 * can (copy.h chooses how). */
static int copy_base(struct compaction *cp)
{
	int ret;

	copier_prepare(&cp->copier, cp->out, cp->base_st.st_blksize);
	ret = copier_base(&cp->copier, cp->fds[0], cp->out, cp->maps[0], cp->size);
	cp->res->reflinked = cp->copier.reflinked;
	return ret;
}

/* Step 3: every byte the merged diffs hold, once, from the newest. */
static int apply_diffs(struct compaction *cp)
{
	for (size_t i = 0; i < cp->nseg; i++) {
		int32_t l = cp->seg[i].layer;
		int ret;

		if (l < 1)
			continue;	/* base data (already there) or hole */
		ret = copier_range(&cp->copier, cp->fds[l], cp->out, cp->seg[i].off,
				   cp->seg[i + 1].off - cp->seg[i].off, cp->size);
		if (ret)
			return ret;
	}
	return 0;
}

/* Step 4: the data is durable before the name appears. */
static int fsync_data(struct compaction *cp)
{
	return fsync(cp->out) < 0 ? -errno : 0;
}

/*
 * Step 5, publish: never over an existing file. From the last check of the
 * merged layers to the claim of the newest merged diff (claim_newest()),
 * the directory's rollback lock keeps out every rollback that takes it: it
 * lands before the check (which then fails: -EAGAIN) or after the claim
 * (and sees the new chain). The check, the rename and published() run
 * under the publish lock, the lock lookups take.
 */
static int publish(struct compaction *cp)
{
	const struct compact_opts *o = cp->opts;
	int ret;

	if (copier_stopped(&cp->copier))
		return -ECANCELED;
	ret = dirlock_acquire(cp->dirfd, COMPACT_LOCK_WAIT_MS, o->stop, &cp->lk);
	if (ret == -EWOULDBLOCK)
		return -EBUSY;	/* a rollback or a producer holds it: next time */
	if (ret)
		return ret;
	if (o->publish_lock)
		pthread_mutex_lock(o->publish_lock);
	/* A merged layer rolled back or replaced while we copied: the new
	 * base would bring it back. */
	for (size_t i = 0; i < cp->nmerge && !ret; i++)
		if (!layer_unchanged(cp->dirfd, layer_name(cp, i), &cp->ids[i]))
			ret = -EAGAIN;
	/* The directory was moved out of STORE while we copied. */
	if (!ret && o->store_ino && !store_dir_inside(cp->dirfd, o->store_dev, o->store_ino))
		ret = -EXDEV;
	if (!ret)
		ret = rename_noreplace(cp->dirfd, cp->tmp, cp->res->new_base);
	if (!ret) {
		cp->renamed = true;
		cp->res->published = true;
		if (o->published)
			o->published(o->ctx, cp->res->new_base);
	}
	if (o->publish_lock)
		pthread_mutex_unlock(o->publish_lock);
	return ret;
}

/* Step 6: the rename is durable before anything is deleted. */
static int fsync_dir(struct compaction *cp)
{
	return dirlock_sync_dir(&cp->lk);
}

/*
 * Takes the newest merged diff, fname with identity id, out of the chain
 * for good: renames it to the staging name claim. A rename is atomic, so a
 * producer's rm of it lands either before (the claim finds it gone or
 * replaced: the producer rolled it back, and the caller withdraws the new
 * base) or after (the rm fails: nothing rolled back in silence). Returns 0
 * if the very file merged was claimed, -EAGAIN if it had been deleted (or
 * replaced: the newcomer is renamed back), or another -errno.
 */
static int claim_top(int dirfd, const char *fname, const char *claim,
		     const struct layer_id *id)
{
	struct stat st;
	int ret = rename_noreplace(dirfd, fname, claim);

	if (ret)
		return ret == -ENOENT ? -EAGAIN : ret;
	/* dev and ino only: the rename changed ctime, and the inode we hold
	 * open cannot be reused by another file meanwhile. */
	if (fstatat(dirfd, claim, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_dev == id->dev && st.st_ino == id->ino)
		return 0;
	/* Rolled back and republished under the same name: not ours. */
	if ((ret = rename_noreplace(dirfd, claim, fname)))
		log_err("%s: cannot rename back a diff published after a rollback "
			"(it is %s now): %s", fname, claim, strerror(-ret));
	return -EAGAIN;
}

/*
 * Removes a new base that brought back a diff rolled back without the
 * rollback lock, and makes that durable. Returns 0 or -errno.
 */
static int withdraw(struct compaction *cp)
{
	const char *diff = layer_name(cp, cp->nmerge - 1);
	int ret = 0;

	if (unlinkat(cp->dirfd, cp->res->new_base, 0) < 0)
		ret = -errno;
	else
		ret = dirlock_sync_dir(&cp->lk);
	if (ret)
		log_err("%s: %s was deleted during its compaction without the "
			"rollback lock, and the new base %s that holds it cannot "
			"be withdrawn: %s; the rollback is undone", cp->name, diff,
			cp->res->new_base, strerror(-ret));
	else
		log_warn("%s: %s was deleted during its compaction without the "
			 "rollback lock; the new base %s is withdrawn, the store "
			 "reads as rolled back (roll back under the lock: "
			 "snapfs-rollback(1))", cp->name, diff, cp->res->new_base);
	return ret;
}

/*
 * The newest merged diff is claimed atomically (claim_top()): if a producer
 * deleted it without the lock since the check, it rolled it back, and the
 * new base is withdrawn (-EAGAIN, res->withdrawn). Otherwise the rollback
 * lock is released and the claimed file removed.
 */
static int claim_newest(struct compaction *cp)
{
	const char *top = layer_name(cp, cp->nmerge - 1);
	char claim[512];
	int ret;

	/* A staging name too (hashed from the diff's name, so never the new
	 * base's): a crash from here on leaves it for the cleanup. */
	staging_name(claim, sizeof(claim), top);
	ret = claim_top(cp->dirfd, top, claim, &cp->ids[cp->nmerge - 1]);
	if (ret == -EAGAIN) {
		ret = withdraw(cp);
		if (ret)
			return ret;
		cp->res->published = false;
		cp->res->withdrawn = true;
		return -EAGAIN;
	}
	if (ret)
		return ret;
	dirlock_release(&cp->lk);
	if (unlinkat(cp->dirfd, claim, 0) < 0)
		log_warn("%s: cannot remove superseded layer %s (now %s): %s", cp->name,
			 top, claim, strerror(errno));
	return 0;
}

/* Unlinks fname from dirfd, warning (prefixed with who) on a failure other
 * than ENOENT. True if it was removed. */
static bool remove_superseded(int dirfd, const char *who, const char *fname)
{
	if (unlinkat(dirfd, fname, 0) == 0)
		return true;
	if (errno != ENOENT)
		log_warn("%s: cannot remove superseded layer %s: %s", who, fname,
			 strerror(errno));
	return false;
}

/*
 * Unlinks merged layers [from, to), superseded now; only the very files
 * that were merged: a name reused meanwhile is left alone. Never fails.
 */
static int unlink_merged(struct compaction *cp, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (layer_unchanged(cp->dirfd, layer_name(cp, i), &cp->ids[i]))
			remove_superseded(cp->dirfd, cp->name, layer_name(cp, i));
	return 0;
}

/* Step 7: the old base. */
static int unlink_old_base(struct compaction *cp)
{
	return unlink_merged(cp, 0, 1);
}

/* Then the merged diffs below the newest (claimed already). */
static int unlink_other_merged(struct compaction *cp)
{
	return unlink_merged(cp, 1, cp->nmerge - 1);
}

/* The figures of a compaction done, into res; the copy path logged once
 * per filesystem. */
static void report(struct compaction *cp)
{
	cp->res->method = cp->copier.method;
	cp->res->bytes_copied = cp->copier.bytes;
	cp->res->ranges = cp->copier.ranges;
	cp->res->seconds = copier_elapsed(&cp->copier);
	copier_log_once(&cp->copier, cp->base_st.st_dev);
}

/*
 * The steps of doc/design.md §10.2, in order, each with the number of the
 * fault point that follows it (§10.4; 0: none).
 */
static const struct step {
	int (*run)(struct compaction *cp);
	int fault;
} steps[] = {
	{ claim_chain, 0 },
	{ load_and_check, 0 },
	{ stage, 1 },
	{ copy_base, 2 },
	{ apply_diffs, 3 },
	{ fsync_data, 4 },
	{ publish, 5 },
	{ fsync_dir, 6 },
	/* The merged layers are superseded now: the newest merged diff
	 * first (claimed, or the new base withdrawn), then the old base,
	 * then the other diffs. */
	{ claim_newest, 0 },
	{ unlink_old_base, 7 },
	{ unlink_other_merged, 0 },
};

int compact_chain(int dirfd, const char *name, const struct store_chain *chain,
		  size_t nmerge, struct cache *cache, const struct compact_opts *opts,
		  struct compact_result *res)
{
	struct compaction cp;
	int ret;

	ret = compaction_init(&cp, dirfd, name, chain, nmerge, cache, opts, res);
	if (ret)
		return ret;
	if (opts->dry_run) {
		/* What a real run would refuse, refused here too: the checks
		 * of the merged layers and their permissions, which read the
		 * layers and take no lock. */
		ret = load_and_check(&cp);
		if (!ret)
			ret = merge_perms(&cp);
		compaction_release(&cp, ret);
		return ret;
	}
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]) && !ret; i++)
		ret = after(&cp, steps[i].fault, steps[i].run(&cp));
	if (!ret)
		report(&cp);
	compaction_release(&cp, ret);
	return ret;
}

int compact_cleanup(int dirfd)
{
	int fd, n = 0;
	DIR *d;
	struct dirent *de;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!compact_is_tmp(de->d_name))
			continue;
		/* A compactor alive on another host is still writing it. */
		if (dirlock_in_use(dirfd, de->d_name))
			continue;
		if (unlinkat(dirfd, de->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return n;
}

int compact_check_chain(int dirfd, const struct store_chain *chain,
			struct cache *cache, unsigned page_size, char *why, size_t len)
{
	struct view_env *env = view_env_new(cache, page_size ? page_size : 4096);
	struct view *v;
	int ret;

	if (!env)
		return -ENOMEM;
	why[0] = '\0';
	ret = view_open(env, dirfd, chain, &v, why, len);
	if (ret == 0)
		view_put(v);
	if (ret == -EMEDIUMTYPE)
		ret = -EIO;	/* unusable all the same */
	view_env_free(env);
	return ret;
}

bool compact_superseded(const struct store_layer *l, uint64_t base)
{
	return !l->overflow &&
	       (l->seq < base || (l->seq == base && l->kind == STORE_DIFF));
}

int compact_prune(int dirfd, const struct store_group *g, uint64_t base)
{
	int n = 0;

	for (size_t i = 0; i < g->nlayers; i++)
		if (compact_superseded(&g->layers[i], base) &&
		    remove_superseded(dirfd, g->name, g->layers[i].fname))
			n++;
	return n;
}

int compact_prune_list(const struct store_group *g, uint64_t base, char ***names)
{
	char **v = NULL;
	size_t n = 0;

	*names = NULL;
	for (size_t i = 0; i < g->nlayers; i++) {
		if (!compact_superseded(&g->layers[i], base))
			continue;
		if (!v && !(v = calloc(g->nlayers + 1, sizeof(*v))))
			return -ENOMEM;
		if (!(v[n] = strdup(g->layers[i].fname))) {
			while (n)
				free(v[--n]);
			free(v);
			return -ENOMEM;
		}
		n++;
	}
	*names = v;
	return (int)n;
}

int compact_prune_names(int dirfd, const char *who, char **names)
{
	int n = 0;

	for (size_t i = 0; names && names[i]; i++) {
		if (remove_superseded(dirfd, who, names[i]))
			n++;
		free(names[i]);
	}
	free(names);
	return n;
}
