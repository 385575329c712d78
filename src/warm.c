/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reading a flat file in as far as its layers are cached (warm.h).
 *
 * The plan maps each layer once and asks mincore() about it a window at a
 * time, walking the view's segments in order: a depth-64 view of 2 GiB
 * has some 400,000 segments, and a system call per segment would cost
 * more than the build. A page counts for the chunk it starts in.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "warm.h"

/* Pages mincore() is asked about at once: 64 KiB of vector, 256 MiB of
 * a layer. */
#define WARM_WINDOW (64u << 10)

/* One layer's residency, a window of it at a time. */
struct resid {
	const char *map;
	uint64_t npages;	/* pages of the mapping */
	uint64_t w0;		/* first page of the window */
	size_t wn;		/* pages in the window, 0 before the first */
	size_t page;
	unsigned char vec[WARM_WINDOW];
};

/* 1 if page pg of r's layer is in the page cache, 0 if not, or -errno. */
static int resident(struct resid *r, uint64_t pg)
{
	if (pg < r->w0 || pg >= r->w0 + r->wn) {
		r->w0 = pg;
		r->wn = r->npages - pg < WARM_WINDOW ? (size_t)(r->npages - pg) : WARM_WINDOW;
		if (mincore((void *)(r->map + pg * r->page), r->wn * r->page, r->vec) < 0) {
			r->wn = 0;
			return -errno;
		}
	}
	return r->vec[pg - r->w0] & 1;
}

struct tally {
	uint32_t data;		/* data pages in the chunk */
	uint32_t warm;		/* of those, cached in their layer */
};

/* Counts layer l's pages of the view into t[]: each a data page, and a
 * warm one if cached (a page past the layer's end is cold: a layer cut
 * short fails its reads anyway). */
static int tally_layer(const struct view_seg *seg, size_t nseg, int32_t l, int fd,
		       uint64_t size, struct resid *r, struct tally *t)
{
	struct stat st;
	uint64_t len;
	int ret = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	len = (uint64_t)st.st_size < size ? (uint64_t)st.st_size : size;
	r->map = len ? mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0) : NULL;
	if (r->map == MAP_FAILED)
		return -errno;
	r->npages = (len + r->page - 1) / r->page;
	r->wn = 0;
	for (size_t i = 0; i < nseg && ret == 0; i++) {
		uint64_t end = (seg[i + 1].off + r->page - 1) / r->page;

		if (seg[i].layer != l)
			continue;
		for (uint64_t pg = seg[i].off / r->page; pg < end; pg++) {
			struct tally *c = &t[(pg * r->page) >> WARM_SHIFT];
			int in = pg < r->npages ? resident(r, pg) : 0;

			if (in < 0) {
				ret = in;
				break;
			}
			c->data++;
			c->warm += (uint32_t)in;
		}
	}
	if (r->map)
		munmap((void *)r->map, len);
	return ret;
}

int64_t warm_plan(const struct view_seg *seg, size_t nseg, const int *fds,
		  unsigned nlayers, uint64_t size, uint8_t *warm)
{
	size_t n = warm_chunks(size);
	struct tally *t = calloc(n ? n : 1, sizeof(*t));
	struct resid *r = malloc(sizeof(*r));
	int64_t bytes = 0;
	int ret = 0;

	if (!t || !r) {
		ret = -ENOMEM;
		goto out;
	}
	r->page = (size_t)sysconf(_SC_PAGESIZE);
	for (unsigned l = 0; l < nlayers && ret == 0; l++)
		ret = tally_layer(seg, nseg, (int32_t)l, fds[l], size, r, t);
	if (ret)
		goto out;
	for (size_t c = 0; c < n; c++) {
		warm[c] = t[c].data && t[c].warm * 2 >= t[c].data;
		if (warm[c])
			bytes += c + 1 < n ? (int64_t)1 << WARM_SHIFT
					   : (int64_t)(size - ((uint64_t)c << WARM_SHIFT));
	}
out:
	free(t);
	free(r);
	return ret ? ret : bytes;
}

int warm_read(int fd, const uint8_t *warm, uint64_t size,
	      bool (*go_on)(void *ctx), void *ctx, uint64_t *done)
{
	const size_t chunk = (size_t)1 << WARM_SHIFT;
	size_t n = warm_chunks(size);
	char *buf = malloc(chunk);
	uint64_t got = 0;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	/* Plain reads, with the fd's read-ahead: it reads a window past the
	 * end of a run of chunks, but it is what gives the page cache large
	 * folios. Read-ahead off (POSIX_FADV_RANDOM) or forced (WILLNEED)
	 * fills it with single pages, and a passthrough fault of the flat
	 * file then cost what one of a FUSE inode's page cache does: 2.2
	 * against 0.5 us (doc/performance.md). */
	for (size_t c = 0; c < n && ret == 0; c++) {
		uint64_t off = (uint64_t)c << WARM_SHIFT;
		size_t want = size - off < chunk ? (size_t)(size - off) : chunk;

		if (!warm[c])
			continue;
		if (go_on && !go_on(ctx)) {
			ret = -ECANCELED;
			break;
		}
		while (want > 0) {
			ssize_t r = pread(fd, buf, want, (off_t)off);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				ret = -errno;
				break;
			}
			if (r == 0)
				break;	/* shorter than the view: nothing more to read */
			got += (uint64_t)r;
			off += (uint64_t)r;
			want -= (size_t)r;
		}
	}
	free(buf);
	if (done)
		*done = got;
	return ret;
}

uint64_t warm_mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[128];
	uint64_t kib = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kib) == 1)
			break;
	fclose(f);
	return kib << 10;
}
