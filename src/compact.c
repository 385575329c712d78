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
 * from the newest merged layer that has it (the flattened map). How they are
 * written depends on the filesystem, chosen by measurement (doc/compaction.md):
 * FICLONERANGE on btrfs and XFS, copy_file_range elsewhere.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "compact.h"
#include "dirlock.h"
#include "log.h"
#include "perms.h"
#include "view.h"

#define XFS_MAGIC 0x58465342UL
#define BTRFS_MAGIC 0x9123683eUL
#define COPY_CHUNK (1u << 20)

const char *compact_method_name(enum compact_method m)
{
	switch (m) {
	case COMPACT_PREAD:
		return "pread/pwrite";
	case COMPACT_CFR:
		return "copy_file_range";
	case COMPACT_CLONE_RANGE:
		return "FICLONERANGE";
	}
	return "?";
}

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

/* ---- fault points (test builds only) ---- */

/*
 * SNAPFS_FAULT="STEP:kill" or "STEP:fail" makes the compactor die (as a
 * crash would: no cleanup) or fail with EIO right after step STEP:
 * 1 staging file created, 2 base copied, 3 diffs applied, 4 data fsynced,
 * 5 renamed into place, 6 directory fsynced, 7 old base unlinked.
 * "6:rm-top" plays a producer that deletes the newest merged diff without
 * the rollback lock right after step 6 (the compactor must withdraw).
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

static int fault_point(int step)
{
	if (fault_wants(step, "kill")) {
		log_err("fault injection: killed after compaction step %d", step);
		_exit(99);
	}
	if (fault_wants(step, "fail")) {
		log_err("fault injection: failing after compaction step %d", step);
		return -EIO;
	}
	return 0;
}

/* ---- planning ---- */

size_t compact_plan(const struct store_chain *chain, const struct compact_opts *opts)
{
	size_t diffs = chain->nlayers ? chain->nlayers - 1 : 0;

	if (diffs <= opts->threshold || diffs <= opts->keep)
		return 0;
	return 1 + diffs - opts->keep;
}

/* ---- copying ---- */

struct copier {
	enum compact_method method;
	const int *stop;
	uint64_t rate;
	uint64_t bytes;
	struct timespec start;
	char *buf;
	unsigned blksize;
	uint64_t ranges;
};

static double elapsed(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) +
	       (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static bool stopped(const struct copier *c)
{
	return c->stop && __atomic_load_n(c->stop, __ATOMIC_RELAXED);
}

/* Longest single sleep of the rate limit: a stop (unmount) waits at most
 * this long for the compactor to notice it. */
#define THROTTLE_SLICE 0.02

/*
 * Sleeps as long as needed to keep the average under the rate limit, in
 * slices, checking the stop flag between them: one cloned 8 GiB range at
 * 256 MiB/s owes 32 s of sleep, which an unmount must not wait out.
 */
static void throttle(struct copier *c)
{
	double due;

	if (!c->rate)
		return;
	due = (double)c->bytes / (double)c->rate;
	for (;;) {
		double d = due - elapsed(&c->start);
		struct timespec ts;

		if (d <= 0 || stopped(c))
			return;
		if (d > THROTTLE_SLICE)
			d = THROTTLE_SLICE;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)(d * 1e9);
		nanosleep(&ts, NULL);
	}
}

static int copy_pread(struct copier *c, int in, int out, uint64_t off, uint64_t len)
{
	while (len) {
		if (stopped(c))
			return -ECANCELED;
		size_t n = len < COPY_CHUNK ? (size_t)len : COPY_CHUNK;
		ssize_t r = pread(in, c->buf, n, (off_t)off);

		if (r < 0)
			return -errno;
		if (r == 0)
			return -EIO;	/* the layer shrank under us */
		for (ssize_t done = 0; done < r;) {
			ssize_t w = pwrite(out, c->buf + done, (size_t)(r - done),
					   (off_t)(off + (uint64_t)done));

			if (w < 0)
				return -errno;
			done += w;
		}
		off += (uint64_t)r;
		len -= (uint64_t)r;
		c->bytes += (uint64_t)r;
		throttle(c);
	}
	return 0;
}

static int copy_cfr(struct copier *c, int in, int out, uint64_t off, uint64_t len)
{
	while (len) {
		if (stopped(c))
			return -ECANCELED;
		size_t n = len < COPY_CHUNK ? (size_t)len : COPY_CHUNK;
		loff_t ioff = (loff_t)off, ooff = (loff_t)off;
		ssize_t r = copy_file_range(in, &ioff, out, &ooff, n, 0);

		if (r < 0) {
			if (errno == EXDEV || errno == EOPNOTSUPP || errno == ENOSYS ||
			    errno == EINVAL) {
				c->method = COMPACT_PREAD;	/* for the rest */
				return copy_pread(c, in, out, off, len);
			}
			return -errno;
		}
		if (r == 0)
			return -EIO;
		off += (uint64_t)r;
		len -= (uint64_t)r;
		c->bytes += (uint64_t)r;
		throttle(c);
	}
	return 0;
}

static int copy_clone(struct copier *c, int in, int out, uint64_t off, uint64_t len,
		      uint64_t size)
{
	uint64_t b = c->blksize, head, tail, end = off + len;

	/* The aligned middle is cloned; an unaligned head or tail (and a
	 * tail that is the file's end, which FICLONERANGE allows) is copied. */
	head = (off + b - 1) / b * b;
	tail = end == size ? end : end / b * b;
	if (head >= tail)
		return copy_cfr(c, in, out, off, len);
	if (head > off) {
		int r = copy_cfr(c, in, out, off, head - off);

		if (r)
			return r;
	}
	{
		struct file_clone_range fcr = {
			.src_fd = in,
			.src_offset = head,
			.src_length = tail - head,
			.dest_offset = head,
		};

		if (ioctl(out, FICLONERANGE, &fcr) < 0) {
			if (errno != EOPNOTSUPP && errno != EINVAL && errno != EXDEV)
				return -errno;
			c->method = COMPACT_CFR;	/* for the rest */
			return copy_cfr(c, in, out, head, end - head);
		}
		c->bytes += tail - head;
		throttle(c);
	}
	if (end > tail)
		return copy_cfr(c, in, out, tail, end - tail);
	return 0;
}

static int copy_range(struct copier *c, int in, int out, uint64_t off, uint64_t len,
		      uint64_t size)
{
	c->ranges++;
	switch (c->method) {
	case COMPACT_CLONE_RANGE:
		return copy_clone(c, in, out, off, len, size);
	case COMPACT_CFR:
		return copy_cfr(c, in, out, off, len);
	case COMPACT_PREAD:
		break;
	}
	return copy_pread(c, in, out, off, len);
}

/* The fastest way found to apply diff ranges on the filesystem of fd. */
static enum compact_method method_for(int fd)
{
	const char *force = getenv("SNAPFS_COMPACT_METHOD");
	struct statfs sf;

	if (force) {
		if (strcmp(force, "pread") == 0)
			return COMPACT_PREAD;
		if (strcmp(force, "cfr") == 0)
			return COMPACT_CFR;
		if (strcmp(force, "clone") == 0)
			return COMPACT_CLONE_RANGE;
	}
	if (fstatfs(fd, &sf) < 0)
		return COMPACT_PREAD;
	switch ((unsigned long)sf.f_type) {
	case BTRFS_MAGIC:
		return COMPACT_CLONE_RANGE;
	case XFS_MAGIC:
		/* Measured (doc/compaction.md): remapping beats copying on
		 * XFS too once ranges are many; pread/pwrite was 1.0x eager. */
		return COMPACT_CLONE_RANGE;
	default:
		return COMPACT_CFR;
	}
}

/* Logs, once per filesystem, how its bases are copied. */
static void log_path_once(dev_t dev, bool reflinked, enum compact_method m)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static dev_t seen[64];
	static size_t nseen;
	bool first = true;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < nseen; i++)
		if (seen[i] == dev)
			first = false;
	if (first && nseen < 64)
		seen[nseen++] = dev;
	pthread_mutex_unlock(&lock);
	if (first)
		log_info("compaction on device %u:%u: %s; diffs applied with %s",
			 major(dev), minor(dev),
			 reflinked ? "bases are reflinked (FICLONE), their data is shared"
				   : "no reflinks here, bases are copied sparsely (data ranges only)",
			 compact_method_name(m));
}

/*
 * XFS preallocates copy-on-write extents around each write into a shared
 * file (the COW extent size hint, 32 blocks by default); pages cached over
 * them later read back as data, so the new base would show data, zeros,
 * where its layers had holes. A hint of one block keeps writes exact.
 * Filesystems without the hint answer ENOTTY or EOPNOTSUPP: nothing to do.
 */
static void limit_cow_prealloc(int fd, blksize_t blksize)
{
	struct fsxattr fsx;

	if (blksize <= 0 || ioctl(fd, FS_IOC_FSGETXATTR, &fsx) < 0)
		return;
	fsx.fsx_xflags |= FS_XFLAG_COWEXTSIZE;
	fsx.fsx_cowextsize = (uint32_t)blksize;
	ioctl(fd, FS_IOC_FSSETXATTR, &fsx);
}

/* ---- the compaction ---- */

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

	if (renameat2(dirfd, fname, dirfd, claim, RENAME_NOREPLACE) < 0)
		return errno == ENOENT ? -EAGAIN : -errno;
	/* dev and ino only: the rename changed ctime, and the inode we hold
	 * open cannot be reused by another file meanwhile. */
	if (fstatat(dirfd, claim, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_dev == id->dev && st.st_ino == id->ino)
		return 0;
	/* Rolled back and republished under the same name: not ours. */
	if (renameat2(dirfd, claim, dirfd, fname, RENAME_NOREPLACE) < 0)
		log_err("%s: cannot rename back a diff published after a rollback "
			"(it is %s now): %s", fname, claim, strerror(errno));
	return -EAGAIN;
}

/*
 * Removes a new base that brought back a diff rolled back without the
 * rollback lock, and makes that durable. Returns 0 or -errno.
 */
static int withdraw(int dirfd, const char *name, const char *new_base,
		    const char *diff, const struct dirlock *lk)
{
	int ret = 0;

	if (unlinkat(dirfd, new_base, 0) < 0)
		ret = -errno;
	else
		ret = dirlock_sync_dir(lk);
	if (ret)
		log_err("%s: %s was deleted during its compaction without the "
			"rollback lock, and the new base %s that holds it cannot "
			"be withdrawn: %s; the rollback is undone", name, diff,
			new_base, strerror(-ret));
	else
		log_warn("%s: %s was deleted during its compaction without the "
			 "rollback lock; the new base %s is withdrawn, the store "
			 "reads as rolled back (roll back under the lock: "
			 "snapfs-rollback(1))", name, diff, new_base);
	return ret;
}

static int open_layers(int dirfd, const char *name, const struct store_chain *chain,
		       size_t n, int *fds, struct layer_id *ids)
{
	for (size_t i = 0; i < n; i++) {
		struct stat st;

		/* Never blocks on a FIFO or opens a device that was swapped
		 * in for a layer after its view was built. */
		fds[i] = layer_open(dirfd, chain->layers[i]->fname, false, &st);
		if (fds[i] < 0) {
			int e = -fds[i];

			fds[i] = -1;
			if (e != ELOOP && e != EFTYPE_LAYER)
				return -e;
			log_err("%s: not compacting: layer %s is %s", name,
				chain->layers[i]->fname, e == ELOOP ?
				"a symbolic link (layers are never followed)" :
				"not a regular file");
			return -EIO;
		}
		layer_id_from_stat(&ids[i], &st);
		if (ids[i].size != ids[0].size)
			return -EIO;
	}
	return 0;
}

int compact_chain(int dirfd, const char *name, const struct store_chain *chain,
		  size_t nmerge, struct cache *cache, const struct compact_opts *opts,
		  struct compact_result *res)
{
	struct cache_entry **ents = NULL;
	const struct extent_map **maps = NULL;
	struct layer_id *ids = NULL;
	struct view_seg *seg = NULL;
	struct copier c = { 0 };
	struct dirlock lk = { .fd = -1 };
	char tmp[512], claim[512];
	int *fds = NULL, out = -1, ret;
	size_t nseg = 0;
	uint64_t seq, size;
	bool renamed = false;
	struct stat bst;
	struct perms perm = { 0 };

	unsigned page_size = opts->page_size ? opts->page_size : 4096;

	memset(res, 0, sizeof(*res));
	if (nmerge < 2 || nmerge > chain->nlayers)
		return -EINVAL;
	seq = chain->layers[nmerge - 1]->seq;
	/* Never longer than the merged diff's own name, NAME.<seq>.diff,
	 * which fits; checked all the same. */
	if ((size_t)snprintf(res->new_base, sizeof(res->new_base), "%s.%llu.base", name,
			     (unsigned long long)seq) >= sizeof(res->new_base))
		return -ENAMETOOLONG;
	staging_name(tmp, sizeof(tmp), res->new_base);
	res->merged = nmerge;
	if (opts->dry_run)
		return 0;

	clock_gettime(CLOCK_MONOTONIC, &c.start);
	fds = calloc(nmerge, sizeof(*fds));
	ids = calloc(nmerge, sizeof(*ids));
	ents = calloc(nmerge, sizeof(*ents));
	maps = calloc(nmerge, sizeof(*maps));
	c.buf = malloc(COPY_CHUNK);
	if (!fds || !ids || !ents || !maps || !c.buf) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nmerge; i++)
		fds[i] = -1;
	ret = open_layers(dirfd, name, chain, nmerge, fds, ids);
	if (ret == -ENOENT)
		ret = -EAGAIN;	/* rolled back before we began: not a failure */
	if (ret)
		goto out;
	size = ids[0].size;
	/* The probe first, as at open: on a filesystem with coarse holes a
	 * diff's map says nothing its other checks could use. */
	{
		uint64_t gran;

		if (extent_probe_granularity(dirfd, page_size, &gran) == 0 &&
		    gran > page_size) {
			log_err("%s: not compacting: holes on this filesystem are "
				"%llu bytes, coarser than the %u-byte page", name,
				(unsigned long long)gran, page_size);
			ret = -EIO;
			goto out;
		}
	}
	for (size_t i = 0; i < nmerge; i++) {
		ret = cache_get(cache, fds[i], &ids[i], chain->layers[i]->fname, &ents[i]);
		if (ret)
			goto out;
		maps[i] = cache_entry_map(ents[i]);
		/* A diff refused at open (one without holes would put zeros
		 * over the base) must not be made a base either. */
		if (i > 0) {
			const char *cause = extent_diff_refusal(maps[i], page_size);

			if (cause) {
				log_err("%s: not compacting: diff %s %s", name,
					chain->layers[i]->fname, cause);
				ret = -EIO;
				goto out;
			}
		}
	}
	ret = view_flatten(size, maps, (unsigned)nmerge, &seg, &nseg);
	if (ret)
		goto out;

	/* 1: stage. The new base never grants more than any merged layer
	 * did: their common owner and group, the AND of their modes and of
	 * their ACLs (perms.h). Layers that differ in owner, group or ACL
	 * entries have no such file: refused, for the caller to report. */
	if (fstat(fds[0], &bst) < 0) {
		ret = -errno;
		goto out;
	}
	{
		const char *what;
		size_t culprit;

		ret = perms_merge(fds, nmerge, &perm, &culprit, &what);
		if (ret == -EPERM) {
			snprintf(res->refused, sizeof(res->refused),
				 "layers %s and %s differ in %s, and no single file "
				 "can hold their bytes without widening access",
				 chain->layers[0]->fname, chain->layers[culprit]->fname,
				 what);
			goto out;
		}
		if (ret)
			goto out;
	}
	/* Owner-only until its permissions are set (also against a default
	 * ACL of the directory, whose entries the mode masks). */
	out = openat(dirfd, tmp, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
	if (out < 0) {
		ret = -errno;
		goto out;
	}
	ret = perms_apply(out, &perm);
	if (ret == -EPERM) {
		snprintf(res->refused, sizeof(res->refused),
			 "the new base cannot be given its layers' owner %u:%u "
			 "(the compactor is not root)", (unsigned)perm.uid,
			 (unsigned)perm.gid);
		goto out;
	}
	if (ret)
		goto out;
	if ((ret = fault_point(1)))
		goto out;

	/* 2: the base, shared where the filesystem can. */
	limit_cow_prealloc(out, bst.st_blksize);
	c.method = method_for(out);
	c.blksize = bst.st_blksize > 0 ? (unsigned)bst.st_blksize : 4096;
	c.rate = opts->rate;
	c.stop = opts->stop;
	if (ioctl(out, FICLONE, fds[0]) == 0) {
		res->reflinked = true;
	} else if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EXDEV ||
		   errno == EINVAL || errno == ENOSYS) {
		/* Only the base's data ranges: copying over its holes would
		 * fill them in on ext4 and tmpfs. Without FICLONE there is no
		 * FICLONERANGE either: copy_file_range, which falls back to
		 * pread/pwrite (for the diffs too) where it cannot. */
		if (ftruncate(out, (off_t)size) < 0) {
			ret = -errno;
			goto out;
		}
		if (c.method == COMPACT_CLONE_RANGE)
			c.method = COMPACT_CFR;
		for (size_t i = 0; i < maps[0]->n; i++) {
			ret = copy_range(&c, fds[0], out, maps[0]->ext[i].off,
					 maps[0]->ext[i].len, size);
			if (ret)
				goto out;
		}
	} else {
		ret = -errno;
		goto out;
	}
	if ((ret = fault_point(2)))
		goto out;

	/* 3: every byte the merged diffs hold, once, from the newest. */
	for (size_t i = 0; i < nseg; i++) {
		int32_t l = seg[i].layer;

		if (l < 1)
			continue;	/* base data (already there) or hole */
		ret = copy_range(&c, fds[l], out, seg[i].off, seg[i + 1].off - seg[i].off, size);
		if (ret)
			goto out;
	}
	if ((ret = fault_point(3)))
		goto out;

	/* 4: the data is durable before the name appears. */
	if (fsync(out) < 0) {
		ret = -errno;
		goto out;
	}
	if ((ret = fault_point(4)))
		goto out;

	/* 5: publish; never over an existing file. From the last check of
	 * the merged layers to the claim of the newest merged diff (7), the
	 * directory's rollback lock keeps out every rollback that takes it:
	 * it lands before the check (which then fails) or after the claim
	 * (and sees the new chain). */
	if (stopped(&c)) {
		ret = -ECANCELED;
		goto out;
	}
	ret = dirlock_acquire(dirfd, COMPACT_LOCK_WAIT_MS, opts->stop, &lk);
	if (ret == -EWOULDBLOCK)
		ret = -EBUSY;	/* a rollback or a producer holds it: next time */
	if (ret)
		goto out;
	if (opts->publish_lock)
		pthread_mutex_lock(opts->publish_lock);
	/* A merged layer rolled back or replaced while we copied: the new
	 * base would bring it back. Checked under the lock lookups take. */
	for (size_t i = 0; i < nmerge && !ret; i++)
		if (!layer_unchanged(dirfd, chain->layers[i]->fname, &ids[i]))
			ret = -EAGAIN;
	/* The directory was moved out of STORE while we copied. */
	if (!ret && opts->store_ino && !store_dir_inside(dirfd, opts->store_dev, opts->store_ino))
		ret = -EXDEV;
	if (!ret && renameat2(dirfd, tmp, dirfd, res->new_base, RENAME_NOREPLACE) < 0) {
		ret = -errno;
	} else if (!ret) {
		renamed = true;
		res->published = true;
		if (opts->published)
			opts->published(opts->ctx, res->new_base);
	}
	if (opts->publish_lock)
		pthread_mutex_unlock(opts->publish_lock);
	if (ret)
		goto out;
	if ((ret = fault_point(5)))
		goto out;

	/* 6: the rename is durable before anything is deleted. */
	if ((ret = dirlock_sync_dir(&lk)))
		goto out;
	if ((ret = fault_point(6)))
		goto out;
	if (fault_wants(6, "rm-top"))
		unlinkat(dirfd, chain->layers[nmerge - 1]->fname, 0);

	/* 7: the merged layers are superseded now. The newest merged diff
	 * first, claimed atomically: a producer that deleted it without the
	 * lock since the check rolled it back, and the new base must go. */
	/* A staging name too (hashed from the diff's name, so never the new
	 * base's): a crash from here on leaves it for the cleanup. */
	staging_name(claim, sizeof(claim), chain->layers[nmerge - 1]->fname);
	ret = claim_top(dirfd, chain->layers[nmerge - 1]->fname, claim, &ids[nmerge - 1]);
	if (ret == -EAGAIN) {
		int r = withdraw(dirfd, name, res->new_base,
				 chain->layers[nmerge - 1]->fname, &lk);

		if (r) {
			ret = r;
			goto out;
		}
		res->published = false;
		res->withdrawn = true;
		goto out;
	}
	if (ret)
		goto out;
	dirlock_release(&lk);
	if (unlinkat(dirfd, claim, 0) < 0)
		log_warn("%s: cannot remove superseded layer %s (now %s): %s", name,
			 chain->layers[nmerge - 1]->fname, claim, strerror(errno));
	/* The others, the old base first (only the very files that were
	 * merged: a name reused meanwhile is left alone). */
	for (size_t i = 0; i + 1 < nmerge; i++) {
		if (!layer_unchanged(dirfd, chain->layers[i]->fname, &ids[i]))
			continue;
		if (unlinkat(dirfd, chain->layers[i]->fname, 0) < 0 && errno != ENOENT)
			log_warn("%s: cannot remove superseded layer %s: %s", name,
				 chain->layers[i]->fname, strerror(errno));
		if (i == 0 && (ret = fault_point(7)))
			goto out;
	}
	res->method = c.method;
	res->bytes_copied = c.bytes;
	res->ranges = c.ranges;
	res->seconds = elapsed(&c.start);
	log_path_once(bst.st_dev, res->reflinked, c.method);
	ret = 0;
out:
	if (ret && out >= 0 && !renamed)
		unlinkat(dirfd, tmp, 0);
	if (out >= 0)
		close(out);
	dirlock_release(&lk);
	for (size_t i = 0; ents && i < nmerge; i++)
		cache_put(cache, ents[i]);
	for (size_t i = 0; fds && i < nmerge; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(seg);
	free(maps);
	free(ents);
	free(ids);
	free(fds);
	free(c.buf);
	perms_free(&perm);
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
	view_env_free(env);
	return ret;
}

int compact_prune(int dirfd, const struct store_group *g, uint64_t base)
{
	int n = 0;

	for (size_t i = 0; i < g->nlayers; i++) {
		const struct store_layer *l = &g->layers[i];

		if (l->overflow || l->seq > base ||
		    (l->seq == base && l->kind == STORE_BASE))
			continue;
		if (unlinkat(dirfd, l->fname, 0) == 0)
			n++;
		else if (errno != ENOENT)
			log_warn("%s: cannot remove superseded layer: %s", l->fname,
				 strerror(errno));
	}
	return n;
}
