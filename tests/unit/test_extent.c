/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of extent maps (doc/design.md §6, §7): extent_scan on real
 * sparse files in a mkdtemp directory, with the degenerate shapes that matter
 * (empty, all-hole, dense, one byte, data touching EOF, a partial last page);
 * preallocated (fallocate) files, whose maps must not change when their pages
 * are cached, and FIEMAP against SEEK_DATA; tmpfs's preallocated pages; and
 * the hole-granularity probe on the temp directory and on a huge=always tmpfs.
 */
#include "unit.h"

#include <dirent.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>

#include "extent.h"

#define P ((uint64_t)UNIT_PAGE)

/* Writes the ranges into a new file of size, scans it, checks the map. */
static void check_scan(struct unit_dir *ud, uint64_t size,
		       const struct unit_range *w, size_t nw,
		       const struct extent *want, size_t nwant)
{
	struct extent_map *m = NULL;
	uint64_t data = 0;
	int fd;

	fd = unit_sparse_file(ud->fd, "f", size, w, nw, 7, NULL);
	assert_int_equal(extent_scan(fd, size, &m), 0);
	close(fd);
	assert_non_null(m);
	assert_int_equal(m->size, size);
	assert_int_equal(m->n, nwant);
	for (size_t i = 0; i < nwant; i++) {
		assert_int_equal(m->ext[i].off, want[i].off);
		assert_int_equal(m->ext[i].len, want[i].len);
		data += want[i].len;
	}
	assert_int_equal(m->data_bytes, data);
	assert_int_equal(extent_map_footprint(m),
			 sizeof(*m) + nwant * sizeof(m->ext[0]));
	assert_int_equal(extent_map_is_dense(m),
			 size > 0 && nwant == 1 && want[0].off == 0 &&
			 want[0].len == size);
	free(m);
	assert_int_equal(unlinkat(ud->fd, "f", 0), 0);
}

static void test_scan_empty(void **state)
{
	struct unit_dir *ud = *state;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	check_scan(ud, 0, NULL, 0, NULL, 0);
}

static void test_scan_all_hole(void **state)
{
	struct unit_dir *ud = *state;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	check_scan(ud, 64 * P, NULL, 0, NULL, 0);
	check_scan(ud, 1, NULL, 0, NULL, 0);
	check_scan(ud, 3 * P + 17, NULL, 0, NULL, 0);
}

static void test_scan_dense(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range w[] = { { 0, 16 * P } };
	const struct extent e[] = { { 0, 16 * P } };
	const struct unit_range w2[] = { { 0, 2 * P + 5 } };
	const struct extent e2[] = { { 0, 2 * P + 5 } };

	UNIT_REQUIRE_PAGE_HOLES(ud);
	check_scan(ud, 16 * P, w, 1, e, 1);
	check_scan(ud, 2 * P + 5, w2, 1, e2, 1);
}

static void test_scan_one_byte(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range w[] = { { 0, 1 } };
	const struct extent e[] = { { 0, 1 } };

	UNIT_REQUIRE_PAGE_HOLES(ud);
	check_scan(ud, 1, w, 1, e, 1);
}

static void test_scan_touching_eof(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range w1[] = { { 8 * P, 2 * P } };
	const struct extent e1[] = { { 8 * P, 2 * P } };
	const struct unit_range w2[] = { { 0, P }, { 9 * P, P } };
	const struct extent e2[] = { { 0, P }, { 9 * P, P } };

	UNIT_REQUIRE_PAGE_HOLES(ud);
	check_scan(ud, 10 * P, w1, 1, e1, 1);
	check_scan(ud, 10 * P, w2, 2, e2, 2);
}

/* Data in the last, partial page: the extent ends at EOF, not at a page. */
static void test_scan_partial_last_page(void **state)
{
	struct unit_dir *ud = *state;
	const uint64_t size = 5 * P + 100;
	const struct unit_range w1[] = { { 5 * P + 10, 50 } };
	const struct extent e1[] = { { 5 * P, 100 } };
	const struct unit_range w2[] = { { 100, 100 }, { 5 * P, 100 } };
	const struct extent e2[] = { { 0, P }, { 5 * P, 100 } };
	const struct unit_range w3[] = { { 4 * P + 4000, 200 } };
	const struct extent e3[] = { { 4 * P, P + 100 } };

	UNIT_REQUIRE_PAGE_HOLES(ud);
	check_scan(ud, size, w1, 1, e1, 1);
	check_scan(ud, size, w2, 2, e2, 2);
	check_scan(ud, size, w3, 1, e3, 1);	/* write straddles a page */
}

static void test_scan_scattered(void **state)
{
	struct unit_dir *ud = *state;
	/* written one page at a time, out of order */
	const struct unit_range w[] = {
		{ 63 * P, P }, { 6 * P, P }, { 1 * P, P }, { 20 * P, P },
		{ 7 * P, P }, { 5 * P, P },
	};
	const struct extent e[] = {
		{ 1 * P, P }, { 5 * P, 3 * P }, { 20 * P, P }, { 63 * P, P },
	};

	UNIT_REQUIRE_PAGE_HOLES(ud);
	check_scan(ud, 64 * P, w, 6, e, 4);
}

/* extent_scan_within(): a map of n extents fits a footprint of n extents
 * and is refused (-EFBIG) at one less, also past the first 16 (the map
 * grows by doubling, and never past the limit); the FIEMAP and the
 * SEEK_DATA scans alike (on tmpfs the second). */
static void test_scan_within(void **state)
{
	struct unit_dir *ud = *state;
	enum { N = 40 };
	struct unit_range w[N];
	struct extent_map *m = NULL;
	size_t fp = sizeof(*m) + N * sizeof(m->ext[0]);
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	for (unsigned i = 0; i < N; i++)
		w[i] = (struct unit_range){ (3 * i + 1) * P, P };
	fd = unit_sparse_file(ud->fd, "w", 3 * N * P, w, N, 5, NULL);
	assert_int_equal(extent_scan_within(fd, 3 * N * P, fp, &m), 0);
	assert_int_equal(m->n, N);
	assert_int_equal(extent_map_footprint(m), fp);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(m->ext[i].off, (3 * i + 1) * P);
	free(m);
	m = NULL;
	assert_int_equal(extent_scan_within(fd, 3 * N * P, fp - 1, &m), -EFBIG);
	assert_null(m);
	assert_int_equal(extent_scan_within(fd, 3 * N * P, sizeof(*m), &m), -EFBIG);
	assert_int_equal(extent_scan_within(fd, 3 * N * P, 1, &m), -EFBIG);
	assert_null(m);
	close(fd);
}

static void test_scan_adjacent_merged(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range w[] = { { 4 * P, P }, { 3 * P, P } };
	const struct extent e[] = { { 3 * P, 2 * P } };

	UNIT_REQUIRE_PAGE_HOLES(ud);
	check_scan(ud, 16 * P, w, 2, e, 1);
}

/* A page of zeros that was written is data: Firecracker writes those. */
static void test_scan_zero_page_is_data(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range w[] = { { 2 * P, P } };
	struct extent_map *m = NULL;
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	fd = unit_sparse_file(ud->fd, "z", 8 * P, w, 1, 0, NULL);
	assert_int_equal(extent_scan(fd, 8 * P, &m), 0);
	close(fd);
	assert_int_equal(m->n, 1);
	assert_int_equal(m->ext[0].off, 2 * P);
	assert_int_equal(m->ext[0].len, P);
	assert_int_equal(m->data_bytes, P);
	free(m);
}

/* More extents than the initial capacity, and random patterns vs a model. */
static void test_scan_many_random(void **state)
{
	struct unit_dir *ud = *state;
	enum { NP = 300 };
	struct unit_range w[NP];
	struct extent want[NP];
	bool on[NP];
	uint64_t s = 0x5eed;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	for (int round = 0; round < 12; round++) {
		size_t nw = 0, nwant = 0;
		uint64_t pct = round == 0 ? 50 : unit_below(&s, 101);
		uint64_t size = NP * P - (round & 1 ? unit_below(&s, P) : 0);

		for (size_t i = 0; i < NP; i++) {
			on[i] = round == 0 ? (i % 2 == 0) : unit_below(&s, 100) < pct;
			if (on[i]) {
				w[nw].off = i * P;
				w[nw].len = (i + 1) * P <= size ? P : size - i * P;
				nw++;
			}
		}
		/* the model: runs of written pages, clipped to size */
		for (size_t i = 0; i < NP; i++) {
			if (!on[i])
				continue;
			if (i && on[i - 1]) {
				want[nwant - 1].len = ((i + 1) * P < size ? (i + 1) * P : size) -
						      want[nwant - 1].off;
			} else {
				want[nwant].off = i * P;
				want[nwant].len = (i + 1) * P < size ? P : size - i * P;
				nwant++;
			}
		}
		/* write in random order */
		for (size_t i = nw; i-- > 1;) {
			size_t j = (size_t)unit_below(&s, i + 1);
			struct unit_range t = w[i];

			w[i] = w[j];
			w[j] = t;
		}
		if (round == 0)
			assert_int_equal(nwant, NP / 2);
		check_scan(ud, size, w, nw, want, nwant);
	}
}

/* The size passed in, not the file's, bounds the map. */
static void test_scan_clipped_to_size(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range w[] = { { 0, 8 * P } };
	struct extent_map *m = NULL;
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	fd = unit_sparse_file(ud->fd, "c", 8 * P, w, 1, 3, NULL);
	/* and the fd's position does not matter */
	assert_true(lseek(fd, 5 * P, SEEK_SET) == (off_t)(5 * P));
	assert_int_equal(extent_scan(fd, 3 * P + 5, &m), 0);
	assert_int_equal(m->size, 3 * P + 5);
	assert_int_equal(m->n, 1);
	assert_int_equal(m->ext[0].off, 0);
	assert_int_equal(m->ext[0].len, 3 * P + 5);
	assert_int_equal(m->data_bytes, 3 * P + 5);
	assert_true(extent_map_is_dense(m));
	free(m);
	close(fd);
}

/* ---- preallocated files: the map must not depend on the page cache ---- */

#define KiB ((uint64_t)1024)
#define MiB (1024 * KiB)

static bool on_tmpfs(int fd)
{
	struct statfs sf;

	assert_int_equal(fstatfs(fd, &sf), 0);
	return sf.f_type == TMPFS_MAGIC;
}

/* Preallocates [off, off + len) of fd (mode 0: the size grows to cover it);
 * skips the test where the filesystem cannot. */
static void prealloc(int fd, uint64_t off, uint64_t len)
{
	if (fallocate(fd, 0, (off_t)off, (off_t)len) == 0)
		return;
	if (errno == EOPNOTSUPP) {
		print_message("skip: fallocate is not supported here\n");
		skip();
	}
	fail_msg("fallocate: %s", strerror(errno));
}

static void write_range(int fd, uint64_t off, uint64_t len)
{
	unsigned char *buf = malloc(len);

	assert_non_null(buf);
	unit_fill(buf, 11, off, len);
	unit_pwrite_all(fd, buf, len, off);
	free(buf);
}

/* Reads all of fd with pread, so that its pages (also those of unwritten
 * extents) are in the page cache; and, off tmpfs (where that changes the
 * file, see test_scan_prealloc_tmpfs), faults every page in through a
 * mapping too. */
static void read_all(int fd, uint64_t size)
{
	char buf[65536];

	for (uint64_t off = 0; off < size; off += sizeof(buf))
		assert_true(pread(fd, buf, sizeof(buf), (off_t)off) >= 0);
	if (size && !on_tmpfs(fd)) {
		volatile const unsigned char *p;
		unsigned sum = 0;

		p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
		assert_true(p != MAP_FAILED);
		for (uint64_t off = 0; off < size; off += P)
			sum += p[off];
		(void)sum;
		munmap((void *)p, size);
	}
}

static void check_map(const struct extent_map *m, uint64_t size,
		      const struct extent *want, size_t nwant)
{
	uint64_t data = 0;

	assert_int_equal(m->size, size);
	assert_int_equal(m->n, nwant);
	for (size_t i = 0; i < nwant; i++) {
		assert_int_equal(m->ext[i].off, want[i].off);
		assert_int_equal(m->ext[i].len, want[i].len);
		data += want[i].len;
	}
	assert_int_equal(m->data_bytes, data);
}

/*
 * Scans fd (size bytes, of which prealloc_bytes are preallocated and never
 * written) before reading it, after reading it in full, and after its pages
 * are dropped from the cache: the same map each time. Where FIEMAP answers,
 * the map is what was written and nothing is unstable; on tmpfs (SEEK_DATA)
 * the preallocated pages are counted in unstable_bytes and the map is
 * refused as a diff's.
 */
static void check_prealloc(int fd, uint64_t size, const struct extent *want,
			   size_t nwant, uint64_t prealloc_bytes)
{
	bool tmpfs = on_tmpfs(fd);

	for (int pass = 0; pass < 3; pass++) {
		struct extent_map *m = NULL;

		if (pass == 1)
			read_all(fd, size);
		if (pass == 2)
			assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
		assert_int_equal(extent_scan(fd, size, &m), 0);
		check_map(m, size, want, nwant);
		if (tmpfs) {
			assert_int_equal(m->method, EXTENT_SEEK);
			assert_int_equal(m->unstable_bytes, prealloc_bytes);
			if (prealloc_bytes)
				assert_non_null(strstr(extent_diff_refusal(m, UNIT_PAGE),
						       "preallocated"));
		} else {
			assert_int_equal(m->unstable_bytes, 0);
		}
		if (!tmpfs || !prealloc_bytes)
			assert_true(extent_diff_refusal(m, UNIT_PAGE) == NULL ||
				    extent_map_is_dense(m));
		free(m);
	}
}

static int new_file(struct unit_dir *ud, const char *name)
{
	int fd = openat(ud->fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	return fd;
}

/* The case of the issue: fallocate 1 MiB, one 4 KiB write at 512 KiB. Its
 * unwritten extents around the page read as zeros and, once cached, used to
 * scan as data, hiding the base. */
static void test_scan_prealloc_one_page(void **state)
{
	struct unit_dir *ud = *state;
	const struct extent e[] = { { 512 * KiB, 4 * KiB } };
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	fd = new_file(ud, "p");
	prealloc(fd, 0, MiB);
	write_range(fd, 512 * KiB, 4 * KiB);
	check_prealloc(fd, MiB, e, 1, MiB - 4 * KiB);
	close(fd);
}

/* Preallocated in full, never written: no data at all (not dense). */
static void test_scan_prealloc_never_written(void **state)
{
	struct unit_dir *ud = *state;
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	fd = new_file(ud, "p");
	prealloc(fd, 0, MiB);
	check_prealloc(fd, MiB, NULL, 0, MiB);
	close(fd);
}

/* Unwritten extents on both sides of written data: preallocating around
 * data already there leaves the data alone. */
static void test_scan_prealloc_adjacent(void **state)
{
	struct unit_dir *ud = *state;
	const struct extent e[] = { { 256 * KiB, 64 * KiB } };
	const struct extent e2[] = { { 0, 64 * KiB }, { 960 * KiB, 64 * KiB } };
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	fd = new_file(ud, "p");
	assert_int_equal(ftruncate(fd, (off_t)MiB), 0);
	write_range(fd, 256 * KiB, 64 * KiB);
	prealloc(fd, 0, MiB);
	check_prealloc(fd, MiB, e, 1, MiB - 64 * KiB);
	close(fd);

	/* and data at both ends, the middle preallocated */
	fd = new_file(ud, "q");
	assert_int_equal(ftruncate(fd, (off_t)MiB), 0);
	write_range(fd, 0, 64 * KiB);
	write_range(fd, 960 * KiB, 64 * KiB);
	prealloc(fd, 64 * KiB, 896 * KiB);
	check_prealloc(fd, MiB, e2, 2, 896 * KiB);
	close(fd);
}

/* The written page is the last one: the extent ends at EOF. */
static void test_scan_prealloc_data_at_eof(void **state)
{
	struct unit_dir *ud = *state;
	const struct extent e[] = { { 0, P }, { MiB - P, P } };
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	fd = new_file(ud, "p");
	prealloc(fd, 0, MiB);
	write_range(fd, MiB - P, P);
	write_range(fd, 0, P);
	check_prealloc(fd, MiB, e, 2, MiB - 2 * P);
	close(fd);
}

/* A size that is not a multiple of the page: the last, partial page holds a
 * few written bytes; its extent is clipped to EOF. And the same file with
 * nothing written there. */
static void test_scan_prealloc_partial_page(void **state)
{
	struct unit_dir *ud = *state;
	const uint64_t size = MiB + 100;
	const struct extent e[] = { { 512 * KiB, P }, { MiB, 100 } };
	const struct extent e2[] = { { 512 * KiB, P } };
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	fd = new_file(ud, "p");
	prealloc(fd, 0, size);
	assert_int_equal(lseek(fd, 0, SEEK_END), (off_t)size);
	write_range(fd, 512 * KiB, P);
	write_range(fd, MiB + 10, 50);
	check_prealloc(fd, size, e, 2, MiB - P);
	close(fd);

	fd = new_file(ud, "q");
	prealloc(fd, 0, size);
	write_range(fd, 512 * KiB, P);
	check_prealloc(fd, size, e2, 1, MiB);
	close(fd);
}

/*
 * Where both methods work, and nothing is preallocated, FIEMAP and
 * SEEK_DATA/SEEK_HOLE give the same map (random pages, one partial last page
 * in odd rounds), also while the pages are still dirty.
 */
static void test_scan_methods_agree(void **state)
{
	struct unit_dir *ud = *state;
	uint64_t s = 0xf1e3a9;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	for (int round = 0; round < 8; round++) {
		uint64_t size = 256 * P - (round & 1 ? unit_below(&s, P) : 0);
		struct extent_map *mf = NULL, *ms = NULL;
		int fd = new_file(ud, "m"), ret;

		assert_int_equal(ftruncate(fd, (off_t)size), 0);
		for (uint64_t pg = 0; pg * P < size; pg++) {
			if (unit_below(&s, 100) < 30)
				write_range(fd, pg * P, (pg + 1) * P <= size ? P : size - pg * P);
		}
		ret = extent_scan_with(fd, size, EXTENT_FIEMAP, &mf);
		if (ret == -EOPNOTSUPP) {
			close(fd);
			print_message("skip: no FIEMAP on %s\n", ud->path);
			skip();
		}
		assert_int_equal(ret, 0);
		assert_int_equal(mf->method, EXTENT_FIEMAP);
		assert_int_equal(extent_scan_with(fd, size, EXTENT_SEEK, &ms), 0);
		assert_int_equal(ms->method, EXTENT_SEEK);
		check_map(mf, size, ms->ext, ms->n);
		free(mf);
		free(ms);
		close(fd);
	}
	assert_int_equal(extent_scan_with(-1, P, 42, &(struct extent_map *){ NULL }),
			 -EINVAL);
}

/*
 * tmpfs has no FIEMAP: SEEK_DATA is used, and is right about a preallocated
 * page only until the kernel turns it into a page of zeros, which a fault
 * through a mapping does (a read() does not). Preallocated pages are
 * therefore reported as unstable, and the diff refused, until every one of
 * them has been turned into data; after that nothing tells them from
 * written zeros (doc/design.md §6).
 */
static void test_scan_prealloc_tmpfs(void **state)
{
	struct unit_tmpfs *t = *state;
	const struct extent e[] = { { 512 * KiB, P } };
	const struct extent e1[] = { { 0, P }, { 512 * KiB, P } };
	const struct extent e2[] = { { 0, 64 * KiB }, { 512 * KiB, P } };
	struct extent_map *m = NULL;
	unsigned char *p;
	int fd;

	UNIT_REQUIRE_TMPFS(t);
	fd = openat(t->dfd, "p", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_true(on_tmpfs(fd));
	prealloc(fd, 0, MiB);
	write_range(fd, 512 * KiB, P);
	check_prealloc(fd, MiB, e, 1, MiB - P);	/* read() changes nothing */

	assert_int_equal(extent_scan_with(fd, MiB, EXTENT_FIEMAP, &m), -EOPNOTSUPP);
	assert_null(m);

	/* one page faulted in through a mapping becomes data */
	p = mmap(NULL, MiB, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	assert_int_equal(((volatile unsigned char *)p)[0], 0);
	assert_int_equal(extent_scan(fd, MiB, &m), 0);
	check_map(m, MiB, e1, 2);
	assert_int_equal(m->unstable_bytes, MiB - 2 * P);
	assert_non_null(extent_diff_refusal(m, UNIT_PAGE));
	free(m);
	munmap(p, MiB);
	close(fd);

	/* Only [0, 64 KiB) preallocated, and all of it faulted in: zeros that
	 * are data, like written ones; nothing is left to tell. */
	fd = openat(t->dfd, "q", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)MiB), 0);
	prealloc(fd, 0, 64 * KiB);
	write_range(fd, 512 * KiB, P);
	assert_int_equal(extent_scan(fd, MiB, &m), 0);
	assert_int_equal(m->unstable_bytes, 64 * KiB);
	free(m);
	p = mmap(NULL, MiB, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	for (uint64_t off = 0; off < 64 * KiB; off += P)
		assert_int_equal(((volatile unsigned char *)p)[off], 0);
	munmap(p, MiB);
	assert_int_equal(extent_scan(fd, MiB, &m), 0);
	check_map(m, MiB, e2, 2);
	assert_int_equal(m->unstable_bytes, 0);
	assert_null(extent_diff_refusal(m, UNIT_PAGE));
	free(m);

	/* scanned to less than its size: what lies beyond is not unstable */
	assert_int_equal(extent_scan(fd, 8 * KiB, &m), 0);
	check_map(m, 8 * KiB, (const struct extent[]){ { 0, 8 * KiB } }, 1);
	assert_int_equal(m->unstable_bytes, 0);
	free(m);
	close(fd);

	/* a sparse file written with pwrite has nothing unstable */
	fd = unit_sparse_file(t->dfd, "r", MiB + 5, (const struct unit_range[]){
		{ 0, P }, { 512 * KiB, P } }, 2, 3, NULL);
	assert_int_equal(extent_scan(fd, MiB + 5, &m), 0);
	check_map(m, MiB + 5, e1, 2);
	assert_int_equal(m->unstable_bytes, 0);
	free(m);
	close(fd);
}

static void test_diff_refusal(void **state)
{
	struct extent_map *m = malloc(sizeof(*m) + 2 * sizeof(m->ext[0]));

	(void)state;
	assert_non_null(m);
	*m = (struct extent_map){ .size = 10 * P, .n = 1 };
	m->ext[0] = (struct extent){ 0, 10 * P };
	assert_non_null(strstr(extent_diff_refusal(m, UNIT_PAGE), "no holes"));
	m->size = P;				/* one page: accepted */
	m->ext[0] = (struct extent){ 0, P };
	assert_null(extent_diff_refusal(m, UNIT_PAGE));
	m->size = 10 * P;
	m->ext[0] = (struct extent){ P, P };
	assert_null(extent_diff_refusal(m, UNIT_PAGE));
	m->unstable_bytes = P;
	assert_non_null(strstr(extent_diff_refusal(m, UNIT_PAGE), "preallocated"));
	m->n = 0;
	assert_non_null(extent_diff_refusal(m, UNIT_PAGE));
	free(m);
}

static void test_scan_bad_fd(void **state)
{
	struct extent_map *m = NULL;

	(void)state;
	assert_int_equal(extent_scan(-1, P, &m), -EBADF);
	assert_null(m);
}

static void test_is_dense(void **state)
{
	struct extent_map *m = malloc(sizeof(*m) + 2 * sizeof(m->ext[0]));

	(void)state;
	assert_non_null(m);
	*m = (struct extent_map){ .size = 0, .data_bytes = 0, .n = 0 };
	assert_false(extent_map_is_dense(m));		/* empty file */
	m->size = 10 * P;
	assert_false(extent_map_is_dense(m));		/* all hole */
	m->n = 1;
	m->ext[0] = (struct extent){ 0, 10 * P };
	assert_true(extent_map_is_dense(m));
	m->ext[0] = (struct extent){ 0, 10 * P - 1 };
	assert_false(extent_map_is_dense(m));		/* short at the end */
	m->ext[0] = (struct extent){ 1, 10 * P - 1 };
	assert_false(extent_map_is_dense(m));		/* starts late */
	m->n = 2;
	m->ext[0] = (struct extent){ 0, P };
	m->ext[1] = (struct extent){ 2 * P, 8 * P };
	assert_false(extent_map_is_dense(m));
	m->size = 1;
	m->n = 1;
	m->ext[0] = (struct extent){ 0, 1 };
	assert_true(extent_map_is_dense(m));		/* one byte */
	free(m);
}

/* ---- granularity probe ---- */

static void test_probe_tempdir(void **state)
{
	struct unit_dir *ud = *state;
	uint64_t gran = 0, indep = unit_hole_granularity(ud->fd);
	int nent = 0;
	struct statfs sf;
	int fd;

	assert_int_equal(extent_probe_granularity(ud->fd, UNIT_PAGE, &gran), 0);
	assert_int_equal(fstatfs(ud->fd, &sf), 0);
	print_message("%s: f_type %#lx, f_bsize %ld, holes of %llu bytes\n",
		      ud->path, (unsigned long)sf.f_type, (long)sf.f_bsize,
		      (unsigned long long)gran);
	assert_true(gran >= UNIT_PAGE);
	assert_int_equal(gran % UNIT_PAGE, 0);
	/* ext4, xfs and tmpfs (without huge pages) with 4 KiB blocks */
	if (indep == UNIT_PAGE)
		assert_int_equal(gran, UNIT_PAGE);

	/* the probe leaves nothing behind in the directory */
	fd = openat(ud->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	{
		DIR *d = fdopendir(fd);
		struct dirent *de;

		assert_non_null(d);
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				nent++;
		closedir(d);
	}
	assert_int_equal(nent, 0);

	/* errors come back as -errno */
	assert_int_equal(extent_probe_granularity(-1, UNIT_PAGE, &gran), -EBADF);
}

static void test_probe_huge_tmpfs(void **state)
{
	struct unit_tmpfs *h = *state;
	const struct unit_range w[] = { { 4 << 20 | P, P } };
	struct extent_map *m = NULL;
	uint64_t gran = 0, indep;
	int fd;

	indep = UNIT_REQUIRE_HUGE(h);
	assert_int_equal(extent_probe_granularity(h->dfd, UNIT_PAGE, &gran), 0);
	print_message("huge=always tmpfs: holes of %llu bytes\n",
		      (unsigned long long)gran);
	assert_true(gran > UNIT_PAGE);
	assert_int_equal(gran % UNIT_PAGE, 0);
	assert_int_equal(gran, indep);

	/* a single page written there scans as a coarse data range */
	fd = unit_sparse_file(h->dfd, "d", 8 << 20, w, 1, 9, NULL);
	assert_int_equal(extent_scan(fd, 8 << 20, &m), 0);
	close(fd);
	assert_int_equal(m->n, 1);
	assert_true(m->ext[0].off <= w[0].off);
	assert_true(m->ext[0].off + m->ext[0].len >= w[0].off + P);
	assert_int_equal(m->data_bytes, gran);
	free(m);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, unit_dir_setup, unit_dir_teardown)
	const struct CMUnitTest tests[] = {
		T(test_scan_empty),
		T(test_scan_all_hole),
		T(test_scan_dense),
		T(test_scan_one_byte),
		T(test_scan_touching_eof),
		T(test_scan_partial_last_page),
		T(test_scan_scattered),
		T(test_scan_within),
		T(test_scan_adjacent_merged),
		T(test_scan_zero_page_is_data),
		T(test_scan_many_random),
		T(test_scan_clipped_to_size),
		T(test_scan_prealloc_one_page),
		T(test_scan_prealloc_never_written),
		T(test_scan_prealloc_adjacent),
		T(test_scan_prealloc_data_at_eof),
		T(test_scan_prealloc_partial_page),
		T(test_scan_methods_agree),
		cmocka_unit_test_setup_teardown(test_scan_prealloc_tmpfs,
						unit_tmpfs_setup,
						unit_tmpfs_teardown),
		cmocka_unit_test(test_diff_refusal),
		cmocka_unit_test(test_scan_bad_fd),
		cmocka_unit_test(test_is_dense),
		T(test_probe_tempdir),
		cmocka_unit_test_setup_teardown(test_probe_huge_tmpfs,
						unit_huge_setup,
						unit_tmpfs_teardown),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
