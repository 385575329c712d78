/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests for gathered reads (gather.h), against real files: random
 * reads of pieces from several layers and holes, compared with the bytes
 * computed here; reads of more pieces than a ring holds; pieces run
 * together in the iovecs where they are adjacent; too few iovecs; a layer
 * cut below a piece; a bad fd; and threads gathering at once. Skipped
 * where gathering is not available (built without liburing, io_uring
 * refused).
 */
#include "unit.h"

#include <pthread.h>

#include "gather.h"

#define LAYERS 4
#define LSIZE (256 * UNIT_PAGE)
#define ZLEN 8192

static const char zero[ZLEN];

struct fixture {
	struct unit_dir *dir;
	int fd[LAYERS];
};

static int setup(void **state)
{
	struct fixture *f;

	if (!gather_supported()) {
		fprintf(stderr, "gather: no io_uring here (%s), skipped\n",
			GATHER_BUILT ? "refused by the kernel" : "built without liburing");
		return -1;
	}
	f = calloc(1, sizeof(*f));
	f->dir = unit_dir_new();
	assert_non_null(f->dir);
	for (int l = 0; l < LAYERS; l++) {
		struct unit_range r = { 0, LSIZE };
		char name[32];

		snprintf(name, sizeof(name), "layer%d", l);
		f->fd[l] = unit_sparse_file(f->dir->fd, name, LSIZE, &r, 1, 100 + (uint64_t)l, NULL);
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (int l = 0; l < LAYERS; l++)
		close(f->fd[l]);
	unit_dir_free(f->dir);
	free(f);
	return 0;
}

/* The bytes the iovecs describe, in order, into out; their total length. */
static size_t flatten_iov(const struct iovec *iov, int n, unsigned char *out)
{
	size_t len = 0;

	for (int i = 0; i < n; i++) {
		memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	return len;
}

/* n random pieces, each from a random layer at a random offset, or a hole
 * (fd -1); expect gets their bytes, computed from the fill seeds. */
static size_t random_pieces(const struct fixture *f, uint64_t *seed, struct view_piece *p,
			    size_t n, unsigned char *expect)
{
	size_t total = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t len = 1 + unit_below(seed, 3 * UNIT_PAGE);
		uint64_t off = unit_below(seed, LSIZE - len);
		int l = (int)unit_below(seed, LAYERS + 1);

		if (l == LAYERS) {
			p[i] = (struct view_piece){ .fd = -1, .off = 0, .len = len, .layer = VIEW_ZERO };
			memset(expect + total, 0, len);
		} else {
			p[i] = (struct view_piece){ .fd = f->fd[l], .off = off, .len = len, .layer = l };
			unit_fill(expect + total, 100 + (uint64_t)l, off, len);
		}
		total += len;
	}
	return total;
}

static void check_random(struct fixture *f, uint64_t seed, size_t maxpieces, int rounds)
{
	struct view_piece *p = calloc(maxpieces, sizeof(*p));
	unsigned char *expect = malloc(maxpieces * 3 * UNIT_PAGE);
	unsigned char *got = malloc(maxpieces * 3 * UNIT_PAGE);
	struct iovec iov[1000];

	for (int r = 0; r < rounds; r++) {
		size_t n = 1 + unit_below(&seed, maxpieces), bad = SIZE_MAX, total;
		int ret;

		total = random_pieces(f, &seed, p, n, expect);
		ret = gather_read(p, n, zero, ZLEN, iov, 1000, &bad);
		assert_true(ret > 0);
		assert_int_equal(bad, SIZE_MAX);
		assert_int_equal(flatten_iov(iov, ret, got), total);
		assert_memory_equal(got, expect, total);
	}
	free(p);
	free(expect);
	free(got);
}

static void test_random_reads(void **state)
{
	check_random(*state, 1, 40, 300);
}

/* More data pieces than one ring submission takes (256): up to 600
 * pieces, about two thirds of them data. */
static void test_many_pieces(void **state)
{
	check_random(*state, 2, 600, 20);
}

/* Adjacent data pieces, even of different layers, are one iovec; a hole
 * starts a new one, and so does a hole longer than the zero buffer. */
static void test_iovecs(void **state)
{
	struct fixture *f = *state;
	struct view_piece p[] = {
		{ .fd = f->fd[0], .off = 0, .len = UNIT_PAGE, .layer = 0 },
		{ .fd = f->fd[1], .off = UNIT_PAGE, .len = UNIT_PAGE, .layer = 1 },
		{ .fd = -1, .len = ZLEN + 100, .layer = VIEW_ZERO },
		{ .fd = f->fd[2], .off = 5, .len = 10, .layer = 2 },
	};
	unsigned char got[4 * UNIT_PAGE + ZLEN], expect[sizeof(got)] = { 0 };
	struct iovec iov[8];
	size_t bad = SIZE_MAX;
	int ret;

	ret = gather_read(p, 4, zero, ZLEN, iov, 8, &bad);
	assert_int_equal(ret, 4);	/* data, zero buffer, 100 zeros, data */
	assert_int_equal(iov[0].iov_len, 2 * UNIT_PAGE);
	assert_ptr_equal(iov[1].iov_base, zero);
	assert_int_equal(iov[1].iov_len, ZLEN);
	assert_int_equal(iov[2].iov_len, 100);
	assert_int_equal(iov[3].iov_len, 10);
	unit_fill(expect, 100, 0, UNIT_PAGE);
	unit_fill(expect + UNIT_PAGE, 101, UNIT_PAGE, UNIT_PAGE);
	unit_fill(expect + 2 * UNIT_PAGE + ZLEN + 100, 102, 5, 10);
	assert_int_equal(flatten_iov(iov, ret, got), 2 * UNIT_PAGE + ZLEN + 110);
	assert_memory_equal(got, expect, 2 * UNIT_PAGE + ZLEN + 110);

	/* Three iovecs are too few: nothing read, -E2BIG. */
	assert_int_equal(gather_read(p, 4, zero, ZLEN, iov, 3, &bad), -E2BIG);
}

/* A layer cut below a piece: -ENODATA naming that piece; the others of the
 * read do not matter. A bad fd: its -errno. */
static void test_short_and_bad(void **state)
{
	struct fixture *f = *state;
	int cut = unit_sparse_file(f->dir->fd, "cut", 4 * UNIT_PAGE, NULL, 0, 0, NULL);
	struct view_piece p[] = {
		{ .fd = f->fd[0], .off = 0, .len = 100, .layer = 0 },
		{ .fd = cut, .off = 3 * UNIT_PAGE, .len = 2 * UNIT_PAGE, .layer = 1 },
		{ .fd = f->fd[1], .off = 0, .len = 100, .layer = 2 },
	};
	struct iovec iov[8];
	size_t bad = SIZE_MAX;

	/* The file ends one page into the second piece: a short read. */
	assert_int_equal(gather_read(p, 3, zero, ZLEN, iov, 8, &bad), -ENODATA);
	assert_int_equal(bad, 1);
	/* Wholly past the end. */
	p[1].off = 8 * UNIT_PAGE;
	bad = SIZE_MAX;
	assert_int_equal(gather_read(p, 3, zero, ZLEN, iov, 8, &bad), -ENODATA);
	assert_int_equal(bad, 1);
	close(cut);

	p[1] = (struct view_piece){ .fd = 999999, .off = 0, .len = 10, .layer = 1 };
	bad = SIZE_MAX;
	assert_int_equal(gather_read(p, 3, zero, ZLEN, iov, 8, &bad), -EBADF);
	assert_int_equal(bad, 1);
	/* The ring is still good for the next read. */
	check_random(f, 3, 20, 10);
}

static void *gather_thread(void *arg)
{
	check_random(arg, (uint64_t)pthread_self(), 50, 200);
	return NULL;
}

/* Each thread has its own ring and buffer. */
static void test_threads(void **state)
{
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, gather_thread, *state), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_reads),
		cmocka_unit_test(test_many_pieces),
		cmocka_unit_test(test_iovecs),
		cmocka_unit_test(test_short_and_bad),
		cmocka_unit_test(test_threads),
	};

	if (!gather_supported()) {
		printf("1..0 # SKIP gathered reads: no io_uring here (%s)\n",
		       GATHER_BUILT ? "refused by the kernel" : "built without liburing");
		return 77;
	}
	return cmocka_run_group_tests(tests, setup, teardown);
}
