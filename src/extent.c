/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * SEEK_DATA/SEEK_HOLE scanning and the hole-granularity probe.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "extent.h"

int extent_scan(int fd, uint64_t size, struct extent_map **out)
{
	struct extent_map *m;
	size_t cap = 16;
	off_t pos = 0;

	m = malloc(sizeof(*m) + cap * sizeof(m->ext[0]));
	if (!m)
		return -ENOMEM;
	m->size = size;
	m->data_bytes = 0;
	m->n = 0;

	while ((uint64_t)pos < size) {
		off_t start, end;

		start = lseek(fd, pos, SEEK_DATA);
		if (start < 0) {
			if (errno == ENXIO)
				break;
			goto fail_errno;
		}
		if ((uint64_t)start >= size)
			break;
		end = lseek(fd, start, SEEK_HOLE);
		if (end < 0)
			goto fail_errno;
		if ((uint64_t)end > size)
			end = (off_t)size;
		if (end <= start) {	/* cannot happen on a sane fs */
			errno = EIO;
			goto fail_errno;
		}
		if (m->n && m->ext[m->n - 1].off + m->ext[m->n - 1].len == (uint64_t)start) {
			m->ext[m->n - 1].len += (uint64_t)(end - start);
		} else {
			if (m->n == cap) {
				struct extent_map *nm;

				cap *= 2;
				nm = realloc(m, sizeof(*m) + cap * sizeof(m->ext[0]));
				if (!nm) {
					free(m);
					return -ENOMEM;
				}
				m = nm;
			}
			m->ext[m->n].off = (uint64_t)start;
			m->ext[m->n].len = (uint64_t)(end - start);
			m->n++;
		}
		m->data_bytes += (uint64_t)(end - start);
		pos = end;
	}
	/* Give back the slack of the doubling growth. */
	if (m->n < cap) {
		struct extent_map *nm = realloc(m, sizeof(*m) + (m->n ? m->n : 1) * sizeof(m->ext[0]));

		if (nm)
			m = nm;
	}
	*out = m;
	return 0;

fail_errno:
	{
		int e = errno;

		free(m);
		return -e;
	}
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
	const off_t size = (off_t)16 << 20;
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
