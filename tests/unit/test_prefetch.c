/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The order and extent of the prefetch push (prefetch_plan()): the 1 MiB
 * windows that hold a diff's data first, whole, in file order; with
 * PREFETCH_ALL every other window after, no byte twice; no push longer
 * than PREFETCH_CHUNK or past the view's size; nothing for an empty view
 * or, in diffs mode, a chain with no diff.
 * Views are built by hand from their segments (the push reads nothing but
 * the map).
 */
#include "unit.h"

#include "prefetch.h"
#include "view.h"

#define K 1024ULL
#define BASE 0
#define D1 1
#define D2 2
#define Z VIEW_ZERO

struct pushes {
	uint64_t off[4096], len[4096];
	size_t n;
};

static void record(void *arg, uint64_t off, uint64_t len)
{
	struct pushes *p = arg;

	assert_true(p->n < 4096);
	p->off[p->n] = off;
	p->len[p->n++] = len;
}

/* A view of size with segments (off, layer) pairs, terminated by size. */
static void make_view(struct view *v, struct view_seg *seg, size_t nseg, uint64_t size)
{
	memset(v, 0, sizeof(*v));
	v->size = size;
	v->nseg = nseg;
	v->seg = seg;
	seg[nseg].off = size;
	seg[nseg].layer = Z;
}

static struct view_seg mixed[] = {
	{ 0, BASE }, { 4 * K, D1 }, { 8 * K, BASE }, { 12 * K, D2 },
	{ 16 * K, BASE }, { 100 * K, D1 }, { 104 * K, Z }, { 3072 * K, D2 },
	{ 3076 * K, Z }, { 0, 0 },
};

/* Windows 0 and 3 of the mixed view hold diff data; 1 and 2 do not. */
static void test_diff_windows_first(void **state)
{
	struct pushes *p = calloc(1, sizeof(*p));
	struct view v;
	uint64_t sum;

	(void)state;
	make_view(&v, mixed, 9, 4096 * K);
	sum = prefetch_plan(&v, PREFETCH_DIFFS, record, p);
	/* window 0 whole (its diff pages, the base and the hole around
	 * them), in two pushes of at most PREFETCH_CHUNK; then window 3 */
	assert_int_equal(p->n, 4);
	assert_int_equal(p->off[0], 0);
	assert_int_equal(p->len[0], PREFETCH_CHUNK);
	assert_int_equal(p->off[1], PREFETCH_CHUNK);
	assert_int_equal(p->len[1], 1024 * K - PREFETCH_CHUNK);
	assert_int_equal(p->off[2], 3072 * K);
	assert_int_equal(p->len[2], PREFETCH_CHUNK);
	assert_int_equal(p->off[3], 3072 * K + PREFETCH_CHUNK);
	assert_int_equal(p->len[3], 1024 * K - PREFETCH_CHUNK);
	assert_int_equal(sum, 2048 * K);
	free(p);
}

/* A diff page at the end of a window, and one in a last window the
 * view's size cuts short. */
static void test_window_edges(void **state)
{
	struct view_seg seg[] = {
		{ 0, BASE }, { 1020 * K, D1 }, { 1024 * K, BASE }, { 2556 * K, D2 }, { 0, 0 },
	};
	struct pushes *p = calloc(1, sizeof(*p));
	struct view v;

	(void)state;
	make_view(&v, seg, 4, 2560 * K);
	assert_int_equal(prefetch_plan(&v, PREFETCH_DIFFS, record, p), 1536 * K);
	assert_int_equal(p->n, 3);
	assert_int_equal(p->off[0], 0);
	assert_int_equal(p->off[1], PREFETCH_CHUNK);
	assert_int_equal(p->off[1] + p->len[1], 1024 * K);
	assert_int_equal(p->off[2], 2048 * K);
	assert_int_equal(p->len[2], 512 * K);	/* to the size, not past it */
	memset(p, 0, sizeof(*p));
	assert_int_equal(prefetch_plan(&v, PREFETCH_ALL, record, p), 2560 * K);
	assert_int_equal(p->n, 5);
	assert_int_equal(p->off[3], 1024 * K);	/* then window 1 */
	assert_int_equal(p->off[4] + p->len[4], 2048 * K);
	free(p);
}

static void test_all_covers_every_byte(void **state)
{
	struct pushes *p = calloc(1, sizeof(*p));
	uint64_t size = 4096 * K, sum;
	uint8_t *seen = calloc(size / (4 * K), 1);
	struct view v;

	(void)state;
	make_view(&v, mixed, 9, size);
	sum = prefetch_plan(&v, PREFETCH_ALL, record, p);
	/* the diffs' windows come first, as in diffs mode */
	assert_true(p->n > 4);
	assert_int_equal(p->off[0], 0);
	assert_int_equal(p->off[2], 3072 * K);
	assert_int_equal(p->off[4], 1024 * K);
	for (size_t i = 0; i < p->n; i++) {
		assert_true(p->len[i] > 0 && p->len[i] <= PREFETCH_CHUNK);
		assert_true(p->off[i] + p->len[i] <= size);
		if (i > 4)	/* in file order within a phase */
			assert_true(p->off[i] >= p->off[i - 1] + p->len[i - 1]);
		for (uint64_t o = p->off[i]; o < p->off[i] + p->len[i]; o += 4 * K)
			seen[o / (4 * K)] = 1;
	}
	for (uint64_t pg = 0; pg < size / (4 * K); pg++)
		assert_int_equal(seen[pg], 1);
	/* no byte twice */
	assert_int_equal(sum, size);
	free(seen);
	free(p);
}

static void test_long_diff_split(void **state)
{
	struct view_seg seg[] = { { 0, D1 }, { 0, 0 } };
	struct pushes *p = calloc(1, sizeof(*p));
	uint64_t size = 3 * PREFETCH_CHUNK + 8 * K;
	struct view v;

	(void)state;
	make_view(&v, seg, 1, size);
	assert_int_equal(prefetch_plan(&v, PREFETCH_DIFFS, record, p), size);
	assert_int_equal(p->n, 4);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(p->off[i], i * PREFETCH_CHUNK);
		assert_int_equal(p->len[i], PREFETCH_CHUNK);
	}
	assert_int_equal(p->len[3], 8 * K);
	free(p);
}

static void test_nothing_to_push(void **state)
{
	struct view_seg base_only[] = { { 0, BASE }, { 64 * K, Z }, { 0, 0 } };
	struct view_seg empty[] = { { 0, 0 } };
	struct view v;

	(void)state;
	make_view(&v, base_only, 2, 128 * K);
	assert_int_equal(prefetch_plan(&v, PREFETCH_DIFFS, NULL, NULL), 0);
	assert_int_equal(prefetch_plan(&v, PREFETCH_OFF, NULL, NULL), 0);
	assert_int_equal(prefetch_plan(&v, PREFETCH_ALL, NULL, NULL), 128 * K);
	make_view(&v, empty, 0, 0);
	assert_int_equal(prefetch_plan(&v, PREFETCH_ALL, NULL, NULL), 0);
}

static void test_parse_mode(void **state)
{
	enum prefetch_mode m;

	(void)state;
	assert_int_equal(prefetch_parse_mode("off", &m), 0);
	assert_int_equal(m, PREFETCH_OFF);
	assert_int_equal(prefetch_parse_mode("diffs", &m), 0);
	assert_int_equal(m, PREFETCH_DIFFS);
	assert_int_equal(prefetch_parse_mode("all", &m), 0);
	assert_int_equal(m, PREFETCH_ALL);
	assert_int_equal(prefetch_parse_mode("some", &m), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_diff_windows_first),
		cmocka_unit_test(test_window_edges),
		cmocka_unit_test(test_all_covers_every_byte),
		cmocka_unit_test(test_long_diff_split),
		cmocka_unit_test(test_nothing_to_push),
		cmocka_unit_test(test_parse_mode),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
