/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests for reading a flat file in as far as its layers are cached
 * (warm.h), against real files whose page cache the test sets up itself
 * (written, then dropped with POSIX_FADV_DONTNEED, then parts read back)
 * and checks with its own mincore(): which chunks the plan marks (a chunk
 * of one layer, pages of two layers, a hole, under half cached, the last
 * partial chunk, a layer cut short), and that the read-in caches exactly
 * the marked chunks, stops when asked and counts what it read. Skipped
 * where the filesystem of the test directory keeps dropped pages (tmpfs).
 */
#include "unit.h"

#include <sys/mman.h>

#include "warm.h"

#define CH (1u << WARM_SHIFT)
#define NCH 8
#define SIZE ((uint64_t)NCH * CH + 3 * UNIT_PAGE)	/* a partial last chunk */
#define LAYERS 3

struct fixture {
	struct unit_dir *dir;
	int fd[LAYERS];
	int flat;
};

/* Drops fd's pages from the page cache. */
static void drop(int fd)
{
	assert_int_equal(fdatasync(fd), 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
}

/* Reads [off, off + len) of fd into the page cache. */
static void touch(int fd, uint64_t off, uint64_t len)
{
	char buf[UNIT_PAGE];

	/* page by page: read-around would cache more than asked */
	for (uint64_t o = off; o < off + len; o += UNIT_PAGE)
		assert_true(pread(fd, buf, UNIT_PAGE, (off_t)o) > 0);
}

/* Pages of [off, off + len) of fd in the page cache, by the test's own
 * mincore(). */
static uint64_t cached(int fd, uint64_t off, uint64_t len)
{
	struct stat st;
	unsigned char *vec;
	uint64_t n = 0;
	void *map;

	assert_int_equal(fstat(fd, &st), 0);
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	vec = calloc((size_t)st.st_size / UNIT_PAGE + 1, 1);
	assert_int_equal(mincore(map, (size_t)st.st_size, vec), 0);
	for (uint64_t p = off / UNIT_PAGE; p < (off + len) / UNIT_PAGE; p++)
		n += vec[p] & 1;
	free(vec);
	munmap(map, (size_t)st.st_size);
	return n;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct unit_range r = { 0, SIZE };

	f->dir = unit_dir_new();
	assert_non_null(f->dir);
	for (int l = 0; l < LAYERS; l++) {
		char name[16];

		snprintf(name, sizeof(name), "layer%d", l);
		f->fd[l] = unit_sparse_file(f->dir->fd, name, SIZE, &r, 1, 10 + (uint64_t)l, NULL);
		drop(f->fd[l]);
		/* touch() caches exactly what it reads: no read-ahead */
		assert_int_equal(posix_fadvise(f->fd[l], 0, 0, POSIX_FADV_RANDOM), 0);
	}
	f->flat = unit_sparse_file(f->dir->fd, "flat", SIZE, &r, 1, 99, NULL);
	drop(f->flat);
	if (cached(f->fd[0], 0, SIZE) || cached(f->flat, 0, SIZE)) {
		fprintf(stderr, "warm: %s keeps dropped pages cached, skipped\n", f->dir->path);
		for (int l = 0; l < LAYERS; l++)
			close(f->fd[l]);
		close(f->flat);
		unit_dir_free(f->dir);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (int l = 0; l < LAYERS; l++)
		close(f->fd[l]);
	close(f->flat);
	unit_dir_free(f->dir);
	free(f);
	return 0;
}

/*
 * The view: chunk 0 and chunks 4..7 layer 0; chunk 1 layer 1; chunk 2
 * pages alternating between layers 0 and 2; chunk 3 a hole; the partial
 * last chunk layer 2.
 */
static struct view_seg *make_view(size_t *nseg)
{
	const uint64_t pages = CH / UNIT_PAGE;
	struct view_seg *s = calloc(16 + pages, sizeof(*s));
	size_t n = 0;

	s[n++] = (struct view_seg){ 0, 0 };
	s[n++] = (struct view_seg){ CH, 1 };
	for (uint64_t p = 0; p < pages; p++)
		s[n++] = (struct view_seg){ 2ULL * CH + p * UNIT_PAGE, p % 2 ? 2 : 0 };
	s[n++] = (struct view_seg){ 3ULL * CH, VIEW_ZERO };
	s[n++] = (struct view_seg){ 4ULL * CH, 0 };
	s[n++] = (struct view_seg){ (uint64_t)NCH * CH, 2 };
	s[n] = (struct view_seg){ SIZE, VIEW_ZERO };
	*nseg = n;
	return s;
}

static int64_t plan(struct fixture *f, uint8_t *warm)
{
	size_t nseg;
	struct view_seg *s = make_view(&nseg);
	int64_t r = warm_plan(s, nseg, f->fd, LAYERS, SIZE, warm);

	free(s);
	return r;
}

static void test_cold(void **state)
{
	struct fixture *f = *state;
	uint8_t warm[NCH + 1];

	assert_int_equal(warm_chunks(SIZE), NCH + 1);
	memset(warm, 7, sizeof(warm));
	assert_int_equal(plan(f, warm), 0);
	for (int c = 0; c <= NCH; c++)
		assert_int_equal(warm[c], 0);
}

/* A chunk counts where its serving layer is cached, not another one. */
static void test_serving_layer(void **state)
{
	struct fixture *f = *state;
	uint8_t warm[NCH + 1];

	touch(f->fd[0], CH, CH);	/* layer 0 under chunk 1: not its server */
	touch(f->fd[1], 5ULL * CH, CH);	/* layer 1 under chunk 5: neither */
	assert_int_equal(plan(f, warm), 0);
	touch(f->fd[1], CH, CH);
	touch(f->fd[0], 6ULL * CH, CH);
	assert_int_equal(plan(f, warm), 2 * CH);
	for (int c = 0; c <= NCH; c++)
		assert_int_equal(warm[c], c == 1 || c == 6);
}

/* Pages of two layers: at least half cached marks the chunk. */
static void test_half(void **state)
{
	struct fixture *f = *state;
	uint8_t warm[NCH + 1];

	/* a quarter: layer 0's pages of the first half of chunk 2 */
	touch(f->fd[0], 2ULL * CH, CH / 2);
	assert_int_equal(plan(f, warm), 0);
	/* half: all of layer 0's pages (layer 2's still cold) */
	touch(f->fd[0], 2ULL * CH, CH);
	assert_int_equal(plan(f, warm), CH);
	assert_true(warm[2]);
	assert_false(warm[3]);	/* the hole never */
}

/* The last chunk is partial: its bytes, not a chunk's. */
static void test_last_partial(void **state)
{
	struct fixture *f = *state;
	uint8_t warm[NCH + 1];

	touch(f->fd[2], (uint64_t)NCH * CH, SIZE - (uint64_t)NCH * CH);
	assert_int_equal(plan(f, warm), SIZE - (uint64_t)NCH * CH);
	assert_true(warm[NCH]);
}

/* A layer shorter than the view: its missing pages count as cold. */
static void test_short_layer(void **state)
{
	struct fixture *f = *state;
	uint8_t warm[NCH + 1];

	touch(f->fd[0], 0, 8ULL * CH);
	assert_int_equal(ftruncate(f->fd[0], (off_t)(4ULL * CH + CH / 4)), 0);
	/* chunk 0, and chunk 2 (layer 0's half); chunk 4 is a quarter
	 * there, chunks 5..7 past the end */
	assert_int_equal(plan(f, warm), 2 * CH);
	assert_true(warm[0] && warm[2]);
	for (int c = 4; c < NCH; c++)
		assert_false(warm[c]);
}

static bool go_count(void *ctx)
{
	int *n = ctx;

	return (*n)-- > 0;
}

/* The read-in caches the marked chunks and nothing before them (the
 * read-ahead it leaves on may read past a marked chunk, by as much as the
 * device's read-ahead window: 8 MiB on some). */
static void test_read(void **state)
{
	struct fixture *f = *state;
	uint8_t warm[NCH + 1] = { 0 };
	uint64_t done = 7;
	int n = 100;

	warm[5] = warm[6] = warm[NCH] = 1;
	assert_int_equal(warm_read(f->flat, warm, SIZE, go_count, &n, &done), 0);
	assert_int_equal(done, 2 * CH + (SIZE - (uint64_t)NCH * CH));
	assert_int_equal(cached(f->flat, 0, 5ULL * CH), 0);
	assert_int_equal(cached(f->flat, 5ULL * CH, 2ULL * CH), 2 * CH / UNIT_PAGE);
	assert_int_equal(cached(f->flat, (uint64_t)NCH * CH, SIZE - (uint64_t)NCH * CH), 3);
}

/* Asked to stop: -ECANCELED, and only what was read is counted. */
static void test_stop(void **state)
{
	struct fixture *f = *state;
	uint8_t warm[NCH + 1] = { 0 };
	uint64_t done = 7;
	int n = 1;

	warm[2] = warm[4] = warm[6] = 1;
	assert_int_equal(warm_read(f->flat, warm, SIZE, go_count, &n, &done), -ECANCELED);
	assert_int_equal(done, CH);
	assert_int_equal(cached(f->flat, 0, 2ULL * CH), 0);
	assert_int_equal(cached(f->flat, 2ULL * CH, CH), CH / UNIT_PAGE);
	assert_int_equal(warm_read(-1, warm, SIZE, NULL, NULL, &done), -EBADF);
	assert_int_equal(done, 0);
}

static void test_mem_available(void **state)
{
	(void)state;
	assert_true(warm_mem_available() > (1u << 20));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serving_layer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half, setup, teardown),
		cmocka_unit_test_setup_teardown(test_last_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_layer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
		cmocka_unit_test(test_mem_available),
	};

	return cmocka_run_group_tests_name("warm", tests, NULL, NULL);
}
