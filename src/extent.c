/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Extent maps from FIEMAP or SEEK_DATA/SEEK_HOLE, and the hole-granularity
 * probe.
 *
 * Why FIEMAP first. A diff's holes mean "unchanged", so a map must say what
 * the producer wrote, and say it the same way every time. SEEK_DATA does not
 * on ext4 and XFS: over a preallocated (fallocate) extent that was never
 * written it reports a hole while the range is not in the page cache and
 * data as soon as it is (any read, readahead included, puts it there), so a
 * preallocated diff would hide the base under zeros, or be refused as dense,
 * depending on who read it before. FIEMAP reads the filesystem's own
 * extent records, which flag such extents FIEMAP_EXTENT_UNWRITTEN whatever
 * is cached: they are holes here. FIEMAP_FLAG_SYNC writes dirty pages back
 * first, so that no extent is still delayed or about to be converted; every
 * other extent (delayed, inline, shared, encoded, of unknown location) is
 * data, as it holds bytes that were written.
 *
 * tmpfs has no FIEMAP, and there SEEK_DATA is right about a preallocated page
 * until the kernel turns it into a page of zeros (a fault through a mapping,
 * or swap-out), after which nothing tells it from a written one. What can be
 * seen is that it is there: tmpfs counts every page it holds in st_blocks,
 * so allocated bytes beyond the data found are preallocated pages, reported
 * in unstable_bytes for extent_diff_refusal() to refuse the diff.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "extent.h"

/* Extents asked for per FIEMAP call: 256 × 56 bytes = 14 KiB of buffer. */
#define FIEMAP_BATCH 256

/* ---- building a map ---- */

/* A map's footprint with n extents (extent_map_footprint()). */
static size_t footprint_of(size_t n)
{
	return sizeof(struct extent_map) + n * sizeof(struct extent);
}

struct builder {
	struct extent_map *m;
	size_t cap;
	size_t max;		/* extents at most, if limited (-EFBIG) */
	bool limited;
	uint64_t from;		/* where the scan starts */
	bool to_first_hole;	/* stop at the first hole after from */
};

/* A builder of a map of a file of size bytes; with max_bytes, the map's
 * footprint may not pass it (-EFBIG here or from builder_add()). */
static int builder_init(struct builder *b, uint64_t size, enum extent_method how,
			size_t max_bytes)
{
	b->limited = max_bytes > 0;
	if (b->limited && max_bytes < footprint_of(0))
		return -EFBIG;	/* not even an empty map */
	b->max = b->limited ? (max_bytes - footprint_of(0)) / sizeof(struct extent) : 0;
	b->cap = b->limited && b->max < 16 ? b->max : 16;
	b->from = 0;
	b->to_first_hole = false;
	b->m = malloc(sizeof(*b->m) + b->cap * sizeof(b->m->ext[0]));
	if (!b->m)
		return -ENOMEM;
	memset(b->m, 0, sizeof(*b->m));
	b->m->size = size;
	b->m->method = how;
	return 0;
}

/* Adds data [start, end), start < end, not before the last range added;
 * merges it into that range if they touch or overlap. Returns 0, -ENOMEM,
 * -EFBIG (b->max extents already), or 1 (nothing added) when a hole
 * precedes it and b stops at the first. */
static int builder_add(struct builder *b, uint64_t start, uint64_t end)
{
	struct extent_map *m = b->m;

	if (b->to_first_hole &&
	    start > (m->n ? m->ext[m->n - 1].off + m->ext[m->n - 1].len : b->from))
		return 1;
	if (m->n) {
		struct extent *last = &m->ext[m->n - 1];
		uint64_t last_end = last->off + last->len;

		if (start <= last_end) {
			if (end > last_end) {
				m->data_bytes += end - last_end;
				last->len = end - last->off;
			}
			return 0;
		}
	}
	if (b->limited && m->n == b->max)
		return -EFBIG;
	if (m->n == b->cap) {
		struct extent_map *nm;
		size_t cap = b->cap * 2;

		/* Never past the limit: the map stays within what its
		 * budget has room for even while it grows. */
		if (b->limited && cap > b->max)
			cap = b->max;
		nm = realloc(m, sizeof(*m) + cap * sizeof(m->ext[0]));
		if (!nm)
			return -ENOMEM;
		b->m = m = nm;
		b->cap = cap;
	}
	m->ext[m->n].off = start;
	m->ext[m->n].len = end - start;
	m->n++;
	m->data_bytes += end - start;
	return 0;
}

/* The finished map, the slack of the doubling growth given back. */
static struct extent_map *builder_finish(struct builder *b)
{
	struct extent_map *m = b->m;

	if (m->n < b->cap) {
		struct extent_map *nm = realloc(m, sizeof(*m) +
						(m->n ? m->n : 1) * sizeof(m->ext[0]));

		if (nm)
			m = nm;
	}
	b->m = NULL;
	return m;
}

/* ---- FIEMAP ---- */

/* The answers of FS_IOC_FIEMAP that mean "no FIEMAP here": the VFS gives
 * EOPNOTSUPP for a filesystem without it (tmpfs, FUSE, NFS), a file that is
 * no filesystem's gives ENOTTY, and EINVAL/EBADR are what an implementation
 * that cannot map this file, or does not take FIEMAP_FLAG_SYNC, answers. */
static bool fiemap_unsupported(int err)
{
	return err == EOPNOTSUPP || err == ENOTTY || err == EINVAL ||
	       err == EBADR;
}

/*
 * Adds the written extents of [b->from, size), size > b->from, to b.
 * Extents are taken in the order given, each from where the one before
 * ended (an extent overlapping its predecessor adds only what lies beyond
 * it), and clipped to [b->from, size). Returns 0 (also when b stopped at a
 * hole), -ENOMEM, -EIO if an extent is empty or wraps or a call makes no
 * progress, or the ioctl's -errno, with *unsupported set if that was the
 * first call and the answer says the filesystem has no FIEMAP (nothing was
 * added then).
 */
static int scan_fiemap(int fd, uint64_t size, struct builder *b,
		       bool *unsupported)
{
	struct fiemap *fm;
	uint64_t pos = b->from;
	bool first = true;
	int ret = 0;

	*unsupported = false;
	fm = malloc(sizeof(*fm) + FIEMAP_BATCH * sizeof(fm->fm_extents[0]));
	if (!fm)
		return -ENOMEM;
	while (pos < size) {
		uint64_t next = pos;	/* end of what is mapped so far */
		bool last = false;

		memset(fm, 0, sizeof(*fm));
		fm->fm_start = pos;
		fm->fm_length = size - pos;
		/* The sync covers the whole file: once is enough. */
		fm->fm_flags = first ? FIEMAP_FLAG_SYNC : 0;
		fm->fm_extent_count = FIEMAP_BATCH;
		if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
			*unsupported = first && fiemap_unsupported(errno);
			ret = -errno;
			goto out;
		}
		first = false;
		if (fm->fm_mapped_extents == 0)
			break;		/* nothing but holes from pos on */
		for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
			const struct fiemap_extent *fe = &fm->fm_extents[i];
			uint64_t start = fe->fe_logical, end;

			if (fe->fe_length == 0 || start > UINT64_MAX - fe->fe_length) {
				ret = -EIO;
				goto out;
			}
			end = start + fe->fe_length;
			if (fe->fe_flags & FIEMAP_EXTENT_LAST)
				last = true;
			if (end <= next)
				continue;	/* nothing new */
			if (start < next)
				start = next;
			next = end;
			if (fe->fe_flags & FIEMAP_EXTENT_UNWRITTEN)
				continue;	/* preallocated, never written */
			if (start >= size)
				continue;
			ret = builder_add(b, start, end < size ? end : size);
			if (ret)
				goto out;	/* 1: the first hole, enough */
		}
		if (last || next >= size)
			break;
		if (next == pos) {
			ret = -EIO;	/* the same answer again: no progress */
			goto out;
		}
		pos = next;
	}
out:
	free(fm);
	return ret > 0 ? 0 : ret;
}

/* ---- SEEK_DATA/SEEK_HOLE ---- */

/* Adds the data of [b->from, size) to b; 0 (also when b stopped at a
 * hole), or -errno of lseek, -ENOMEM, -EIO. */
static int scan_seek(int fd, uint64_t size, struct builder *b)
{
	off_t pos = (off_t)b->from;

	while ((uint64_t)pos < size) {
		off_t start, end;
		int ret;

		start = lseek(fd, pos, SEEK_DATA);
		if (start < 0) {
			if (errno == ENXIO)
				break;
			return -errno;
		}
		if ((uint64_t)start >= size)
			break;
		end = lseek(fd, start, SEEK_HOLE);
		if (end < 0)
			return -errno;
		if ((uint64_t)end > size)
			end = (off_t)size;
		if (end <= start)	/* cannot happen on a sane fs */
			return -EIO;
		ret = builder_add(b, (uint64_t)start, (uint64_t)end);
		if (ret)
			return ret > 0 ? 0 : ret;
		pos = end;
	}
	return 0;
}

/* Bytes of the whole pages that m's extents touch. */
static uint64_t page_bytes(const struct extent_map *m, uint64_t page)
{
	uint64_t bytes = 0;

	for (size_t i = 0; i < m->n; i++) {
		const struct extent *e = &m->ext[i];

		bytes += (e->off + e->len + page - 1) / page * page -
			 e->off / page * page;
	}
	return bytes;
}

/*
 * Sets m->unstable_bytes, on tmpfs, to the bytes of the pages fd holds that
 * are not data: pages preallocated and never written (tmpfs counts every
 * page it holds, in memory or in swap, in st_blocks, and a written page is
 * data to SEEK_DATA). Pages preallocated past the end of the file count too.
 * Left 0 elsewhere, where st_blocks also counts metadata and proves nothing.
 */
static int tmpfs_unstable(int fd, struct extent_map *m)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), data, held;
	struct statfs sf;
	struct stat st;

	if (fstatfs(fd, &sf) < 0)
		return -errno;
	if (sf.f_type != TMPFS_MAGIC)
		return 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size == m->size) {
		data = page_bytes(m, page);
	} else {
		/* scanned to another size than the file's: count it all */
		struct builder b;
		int ret = builder_init(&b, (uint64_t)st.st_size, EXTENT_SEEK, 0);

		if (ret)
			return ret;
		ret = scan_seek(fd, (uint64_t)st.st_size, &b);
		data = page_bytes(b.m, page);
		free(b.m);
		if (ret)
			return ret;
	}
	held = (uint64_t)st.st_blocks * 512;
	if (held > data)
		m->unstable_bytes = held - data;
	return 0;
}

/* ---- the map ---- */

static int scan(int fd, uint64_t size, enum extent_method how, size_t max_bytes,
		struct extent_map **out)
{
	struct builder b;
	int ret;

	if (how != EXTENT_AUTO && how != EXTENT_FIEMAP && how != EXTENT_SEEK)
		return -EINVAL;
	ret = builder_init(&b, size, how == EXTENT_SEEK ? EXTENT_SEEK : EXTENT_FIEMAP,
			   max_bytes);
	if (ret)
		return ret;
	if (size == 0)
		goto done;
	if (how != EXTENT_SEEK) {
		bool unsupported;

		ret = scan_fiemap(fd, size, &b, &unsupported);
		if (ret == 0)
			goto done;
		if (!unsupported || how == EXTENT_FIEMAP)
			goto fail;
		b.m->method = EXTENT_SEEK;
	}
	ret = scan_seek(fd, size, &b);
	if (ret)
		goto fail;
	ret = tmpfs_unstable(fd, b.m);
	if (ret)
		goto fail;
done:
	*out = builder_finish(&b);
	return 0;

fail:
	free(b.m);
	return ret;
}

int extent_scan_with(int fd, uint64_t size, enum extent_method how,
		     struct extent_map **out)
{
	return scan(fd, size, how, 0, out);
}

int extent_scan(int fd, uint64_t size, struct extent_map **out)
{
	return scan(fd, size, EXTENT_AUTO, 0, out);
}

int extent_scan_within(int fd, uint64_t size, size_t max_bytes,
		       struct extent_map **out)
{
	return scan(fd, size, EXTENT_AUTO, max_bytes ? max_bytes : 1, out);
}

int extent_scan_range(int fd, uint64_t size, uint64_t start, uint64_t end,
		      bool to_first_hole, struct extent_map **out)
{
	struct builder b;
	bool unsupported;
	int ret;

	if (start > end || end > size)
		return -EINVAL;
	ret = builder_init(&b, size, EXTENT_FIEMAP, 0);
	if (ret)
		return ret;
	b.from = start;
	b.to_first_hole = to_first_hole;
	if (start == end)
		goto done;
	ret = scan_fiemap(fd, end, &b, &unsupported);
	if (ret && unsupported) {
		b.m->method = EXTENT_SEEK;
		ret = scan_seek(fd, end, &b);
	}
	if (ret) {
		free(b.m);
		return ret;
	}
done:
	*out = builder_finish(&b);
	return 0;
}

size_t extent_map_footprint(const struct extent_map *m)
{
	return sizeof(*m) + m->n * sizeof(m->ext[0]);
}

int extent_map_is_dense(const struct extent_map *m)
{
	return m->size > 0 && m->n == 1 && m->ext[0].off == 0 &&
	       m->ext[0].len == m->size;
}

const char *extent_diff_refusal(const struct extent_map *m, unsigned page_size)
{
	if (extent_map_is_dense(m) && m->size > page_size)
		return "has no holes: it would hide the base (was it copied "
		       "without --sparse?)";
	if (m->unstable_bytes)
		return "holds pages preallocated (fallocate) and never written, "
		       "on tmpfs, which turns them into data (zeros) once they "
		       "are mapped or swapped: its bytes would depend on who "
		       "read it first";
	return NULL;
}

/* ---- the probe ---- */

static int scratch_file(int dirfd)
{
	int fd;

#ifdef HAVE_O_TMPFILE
	fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
#endif
	for (int tries = 0; tries < 16; tries++) {
		char name[64];

		snprintf(name, sizeof(name), ".snapfs-probe.%d.%d", (int)getpid(), tries);
		fd = openat(dirfd, name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
		if (fd >= 0) {
			unlinkat(dirfd, name, 0);
			return fd;
		}
		if (errno != EEXIST)
			return -1;
	}
	errno = EEXIST;
	return -1;
}

int extent_probe_granularity(int dirfd, unsigned page_size, uint64_t *gran)
{
	/* Far enough from 0 and from EOF that a 2 MiB huge page or a 64 KiB
	 * block around the written page stays inside the file, and placed one
	 * page past a 2 MiB boundary so that any coarser unit shows. */
	const off_t where = (off_t)8 << 20 | (off_t)page_size;
	const off_t size = (off_t)EXTENT_PROBE_SIZE;
	struct extent_map *m = NULL;
	char *page;
	int fd, ret;

	fd = scratch_file(dirfd);
	if (fd < 0)
		return -errno;
	page = malloc(page_size);
	if (!page) {
		close(fd);
		return -ENOMEM;
	}
	memset(page, 0xa5, page_size);
	if (ftruncate(fd, size) < 0 ||
	    pwrite(fd, page, page_size, where) != (ssize_t)page_size) {
		ret = errno ? -errno : -EIO;
		goto out;
	}
	/* The layers' method: where FIEMAP answers, its sync writes the page
	 * back, and the extent it gets is the block the filesystem gave it. */
	ret = extent_scan(fd, (uint64_t)size, &m);
	if (ret)
		goto out;
	if (m->n == 0) {
		ret = -EIO;
		goto out;
	}
	{
		uint64_t lo = m->ext[0].off;
		uint64_t hi = m->ext[m->n - 1].off + m->ext[m->n - 1].len;

		*gran = hi - lo;
	}
out:
	free(m);
	free(page);
	close(fd);
	return ret;
}
