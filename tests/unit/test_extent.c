/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of extent maps (SPEC §4, §5): extent_scan on real sparse files
 * in a mkdtemp directory, with the degenerate shapes that matter (empty,
 * all-hole, dense, one byte, data touching EOF, a partial last page), and the
 * hole-granularity probe on the temp directory and on a huge=always tmpfs.
 */
#include "unit.h"

#include <dirent.h>
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
	struct unit_huge *h = *state;
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
		T(test_scan_adjacent_merged),
		T(test_scan_zero_page_is_data),
		T(test_scan_many_random),
		T(test_scan_clipped_to_size),
		cmocka_unit_test(test_scan_bad_fd),
		cmocka_unit_test(test_is_dense),
		T(test_probe_tempdir),
		cmocka_unit_test_setup_teardown(test_probe_huge_tmpfs,
						unit_huge_setup,
						unit_huge_teardown),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
