/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the extent-map cache (doc/format.md §4): a layer is scanned once per
 * identity, a changed identity is rescanned while maps still in use stay
 * valid, and the memory budget evicts unreferenced maps coldest first and
 * never a referenced one: a map or a charge that does not fit beside the
 * maps in use is refused (-EFBIG), a map that grows past the room while it
 * is scanned too. Maps come from real sparse files in a mkdtemp dir.
 */
#include "unit.h"

#include <pthread.h>

#include "cache.h"

#define P ((uint64_t)UNIT_PAGE)

/* A file of 8 pages with data at the given pages; returns the fd. */
static int layer_file(struct unit_dir *ud, const char *name,
		      const unsigned *pages, size_t n, struct layer_id *id)
{
	struct unit_range r[8];
	struct stat st;
	int fd;

	for (size_t i = 0; i < n; i++)
		r[i] = (struct unit_range){ pages[i] * P, P };
	fd = unit_sparse_file(ud->fd, name, 8 * P, r, n, 11, NULL);
	assert_int_equal(fstat(fd, &st), 0);
	layer_id_from_stat(id, &st);
	return fd;
}

static struct cache_stats stats(struct cache *c)
{
	struct cache_stats st;

	memset(&st, 0xff, sizeof(st));
	cache_get_stats(c, &st);
	return st;
}

static void test_layer_id(void **state)
{
	struct unit_dir *ud = *state;
	static const unsigned pg[] = { 1 };
	struct layer_id id, b;
	struct stat st;
	int fd = layer_file(ud, "a", pg, 1, &id);

	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(id.dev, st.st_dev);
	assert_int_equal(id.ino, st.st_ino);
	assert_int_equal(id.size, 8 * P);
	assert_int_equal(id.mtime_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 +
			 st.st_mtim.tv_nsec);
	b = id;
	assert_true(layer_id_equal(&id, &b));
	b.dev++;
	assert_false(layer_id_equal(&id, &b));
	b = id;
	b.ino++;
	assert_false(layer_id_equal(&id, &b));
	b = id;
	b.size--;
	assert_false(layer_id_equal(&id, &b));
	b = id;
	b.mtime_ns++;
	assert_false(layer_id_equal(&id, &b));
	b = id;
	b.btime_ns = 12345;	/* not known from fstat: never compared */
	assert_true(layer_id_equal(&id, &b));
	close(fd);
}

/* The same identity twice: one scan, one map, counted as a hit. */
static void test_hit(void **state)
{
	struct unit_dir *ud = *state;
	static const unsigned pg[] = { 1, 5 };
	struct cache *c = cache_new(1 << 20);
	struct cache_entry *e1 = NULL, *e2 = NULL, *e3 = NULL;
	const struct extent_map *m;
	struct cache_stats st;
	struct layer_id id;
	int fd = layer_file(ud, "a", pg, 2, &id);

	assert_non_null(c);
	st = stats(c);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(st.hits + st.misses + st.evictions + st.changed, 0);

	assert_int_equal(cache_get(c, fd, &id, "a", &e1), 0);
	m = cache_entry_map(e1);
	assert_int_equal(m->n, 2);
	assert_int_equal(m->ext[0].off, P);
	assert_int_equal(m->ext[1].off, 5 * P);
	assert_int_equal(m->data_bytes, 2 * P);

	/* Fill the hole at page 3 behind the cache's back without telling it
	 * (same identity passed in): a second get must not scan again. */
	unit_pwrite_all(fd, "x", 1, 3 * P);
	assert_int_equal(cache_get(c, fd, &id, "a", &e2), 0);
	assert_ptr_equal(e2, e1);
	assert_ptr_equal(cache_entry_map(e2), m);
	assert_int_equal(cache_entry_map(e2)->n, 2);
	st = stats(c);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, extent_map_footprint(m));
	assert_int_equal(st.changed, 0);

	cache_put(c, e1);
	cache_put(c, e2);
	/* unreferenced and within budget: still cached */
	assert_int_equal(cache_get(c, fd, &id, "a", &e3), 0);
	assert_ptr_equal(e3, e1);
	st = stats(c);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.evictions, 0);
	cache_put(c, e3);
	cache_put(c, NULL);	/* harmless */
	cache_free(c);
	close(fd);
}

/* A layer whose identity changed is rescanned; the old map stays valid
 * for whoever still holds it, and is freed with its last reference. */
static void test_changed(void **state)
{
	struct unit_dir *ud = *state;
	static const unsigned pg[] = { 0, 2 };
	struct cache *c = cache_new(1 << 20);
	struct cache_entry *e1 = NULL, *e2 = NULL, *e3 = NULL;
	const struct extent_map *m1, *m2;
	struct timespec ts[2] = { { 1000000, 5 }, { 1000000, 5 } };
	struct layer_id id1, id2, id3;
	struct cache_stats st;
	struct stat sb;
	int fd = layer_file(ud, "a", pg, 2, &id1);

	assert_non_null(c);
	assert_int_equal(cache_get(c, fd, &id1, "a", &e1), 0);
	m1 = cache_entry_map(e1);
	assert_int_equal(m1->n, 2);

	/* the producer rewrites the layer in place (a bug it makes) */
	unit_pwrite_all(fd, "y", 1, 6 * P);
	assert_int_equal(futimens(fd, ts), 0);
	assert_int_equal(fstat(fd, &sb), 0);
	layer_id_from_stat(&id2, &sb);
	assert_int_equal(id2.mtime_ns, 1000000LL * 1000000000 + 5);
	assert_false(layer_id_equal(&id1, &id2));

	assert_int_equal(cache_get(c, fd, &id2, "a", &e2), 0);
	assert_ptr_not_equal(e2, e1);
	m2 = cache_entry_map(e2);
	assert_int_equal(m2->n, 3);
	assert_int_equal(m2->ext[2].off, 6 * P);
	assert_int_equal(m2->data_bytes, 3 * P);
	st = stats(c);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.changed, 1);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, extent_map_footprint(m2));

	/* the old map is still intact while referenced */
	assert_int_equal(m1->n, 2);
	assert_int_equal(m1->ext[0].off, 0);
	assert_int_equal(m1->ext[1].off, 2 * P);
	assert_int_equal(m1->data_bytes, 2 * P);
	cache_put(c, e1);	/* frees it: ASan would see a later use */

	/* the new identity is now the cached one */
	assert_int_equal(cache_get(c, fd, &id2, "a", &e3), 0);
	assert_ptr_equal(e3, e2);
	cache_put(c, e3);
	cache_put(c, e2);
	st = stats(c);
	assert_int_equal(st.hits, 1);
	assert_int_equal(st.entries, 1);

	/* an unreferenced old map is replaced at once; only mtime differs */
	id3 = id2;
	id3.mtime_ns += 1;
	assert_int_equal(cache_get(c, fd, &id3, "a", &e1), 0);
	st = stats(c);
	assert_int_equal(st.changed, 2);
	assert_int_equal(st.misses, 3);
	assert_int_equal(st.entries, 1);
	assert_int_equal(st.bytes, extent_map_footprint(cache_entry_map(e1)));
	cache_put(c, e1);
	cache_free(c);
	close(fd);
}

/* Equal-footprint maps: one extent each. */
static void open_four(struct unit_dir *ud, int fd[4], struct layer_id id[4])
{
	static const char *const names[4] = { "a", "b", "c", "d" };

	for (unsigned i = 0; i < 4; i++) {
		unsigned pg = i;

		fd[i] = layer_file(ud, names[i], &pg, 1, &id[i]);
	}
}

static void test_budget_lru(void **state)
{
	struct unit_dir *ud = *state;
	struct cache_entry *e[4] = { 0 }, *x = NULL;
	struct layer_id id[4];
	struct cache_stats st;
	struct cache *c;
	size_t fp;
	int fd[4];

	open_four(ud, fd, id);
	/* learn the footprint of a one-extent map */
	c = cache_new(SIZE_MAX);
	assert_int_equal(cache_get(c, fd[0], &id[0], "a", &x), 0);
	fp = extent_map_footprint(cache_entry_map(x));
	assert_int_equal(cache_entry_map(x)->n, 1);
	cache_put(c, x);
	cache_free(c);

	c = cache_new(2 * fp);	/* room for two maps */
	assert_non_null(c);
	assert_int_equal(cache_get(c, fd[0], &id[0], "a", &e[0]), 0);
	assert_int_equal(cache_get(c, fd[1], &id[1], "b", &e[1]), 0);
	cache_put(c, e[0]);	/* LRU, cold to hot: a b */
	cache_put(c, e[1]);
	st = stats(c);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.bytes, 2 * fp);
	assert_int_equal(st.evictions, 0);

	/* c comes in: a, the coldest, goes */
	assert_int_equal(cache_get(c, fd[2], &id[2], "c", &e[2]), 0);
	st = stats(c);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.bytes, 2 * fp);
	assert_int_equal(cache_get(c, fd[1], &id[1], "b", &e[1]), 0);
	st = stats(c);
	assert_int_equal(st.hits, 1);		/* b survived */
	cache_put(c, e[2]);	/* LRU: c b */
	cache_put(c, e[1]);

	/* touch c: LRU b c, then d comes in and b goes */
	assert_int_equal(cache_get(c, fd[2], &id[2], "c", &e[2]), 0);
	cache_put(c, e[2]);
	assert_int_equal(cache_get(c, fd[3], &id[3], "d", &e[3]), 0);
	cache_put(c, e[3]);
	st = stats(c);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 4);
	assert_int_equal(st.evictions, 2);
	assert_int_equal(st.entries, 2);
	assert_int_equal(cache_get(c, fd[2], &id[2], "c", &e[2]), 0);
	assert_int_equal(stats(c).hits, 3);	/* c kept */
	assert_int_equal(cache_get(c, fd[1], &id[1], "b", &e[1]), 0);
	assert_int_equal(stats(c).misses, 5);	/* b was evicted */
	assert_int_equal(stats(c).evictions, 3);/* d, the only cold one */
	cache_put(c, e[1]);
	cache_put(c, e[2]);
	st = stats(c);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.bytes, 2 * fp);
	cache_free(c);
	for (unsigned i = 0; i < 4; i++)
		close(fd[i]);
}

/* A map in use is never dropped: one that does not fit beside the maps
 * in use is refused (-EFBIG), and fits once one of them is let go. */
static void test_budget_referenced(void **state)
{
	struct unit_dir *ud = *state;
	struct cache_entry *e[4] = { 0 };
	struct layer_id id[4];
	struct cache_stats st;
	struct cache *c;
	size_t fp = sizeof(struct extent_map) + sizeof(struct extent);
	int fd[4];

	open_four(ud, fd, id);
	c = cache_new(2 * fp);	/* room for two one-extent maps */
	assert_non_null(c);
	assert_int_equal(cache_get(c, fd[0], &id[0], "a", &e[0]), 0);
	assert_int_equal(cache_get(c, fd[1], &id[1], "b", &e[1]), 0);
	assert_int_equal(cache_get(c, fd[2], &id[2], "c", &e[2]), -EFBIG);
	assert_null(e[2]);
	st = stats(c);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.evictions, 0);
	assert_int_equal(st.bytes, 2 * fp);
	/* the maps in use are still right */
	for (unsigned i = 0; i < 2; i++) {
		const struct extent_map *m = cache_entry_map(e[i]);

		assert_int_equal(m->n, 1);
		assert_int_equal(m->ext[0].off, i * P);
		assert_int_equal(m->ext[0].len, P);
	}
	cache_put(c, e[0]);
	assert_int_equal(cache_get(c, fd[2], &id[2], "c", &e[2]), 0);
	assert_int_equal(cache_entry_map(e[2])->ext[0].off, 2 * P);
	st = stats(c);
	assert_int_equal(st.evictions, 1);	/* a, let go, made room */
	assert_int_equal(st.entries, 2);
	cache_put(c, e[1]);
	cache_put(c, e[2]);
	/* nothing in use: a get after that scans again */
	assert_int_equal(cache_get(c, fd[0], &id[0], "a", &e[0]), 0);
	assert_int_equal(stats(c).misses, 5);
	cache_put(c, e[0]);
	assert_true(stats(c).bytes <= 2 * fp);
	cache_free(c);
	for (unsigned i = 0; i < 4; i++)
		close(fd[i]);
}

/* Bytes charged (views' segments) count against the budget: they drop
 * unreferenced maps, are refused when the maps in use leave no room, and
 * leave room for maps again when given back; a map with more extents than
 * the room is refused while it is scanned. */
static void test_budget_charged(void **state)
{
	struct unit_dir *ud = *state;
	static const unsigned many[] = { 0, 2, 4, 6, 8, 10, 12, 14 };
	struct cache_entry *e[4] = { 0 }, *x = NULL;
	struct layer_id id[4], mid;
	struct cache_stats st;
	struct cache *c;
	size_t fp = sizeof(struct extent_map) + sizeof(struct extent);
	int fd[4], mfd;

	open_four(ud, fd, id);
	c = cache_new(4 * fp);
	assert_non_null(c);
	assert_int_equal(cache_budget(c), 4 * fp);
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(cache_get(c, fd[i], &id[i], "x", &e[i]), 0);
	cache_put(c, e[0]);
	cache_put(c, e[1]);
	/* the room counts the two maps not in use as free */
	assert_int_equal(cache_room(c), 3 * fp);
	/* held: three maps, one in use; a charge of two maps' bytes drops
	 * the two not in use */
	assert_int_equal(cache_charge(c, 2 * fp), 0);
	st = stats(c);
	assert_int_equal(st.charged, 2 * fp);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.evictions, 1);
	/* one map's room left: two more are refused, nothing changes */
	assert_int_equal(cache_room(c), fp);
	assert_int_equal(cache_charge(c, 2 * fp), -EFBIG);
	assert_int_equal(stats(c).charged, 2 * fp);
	assert_int_equal(cache_get(c, fd[3], &id[3], "d", &e[3]), 0);
	assert_int_equal(cache_get(c, fd[0], &id[0], "a", &x), -EFBIG);
	assert_true(stats(c).bytes + stats(c).charged <= 4 * fp);
	cache_put(c, e[3]);
	cache_put(c, e[2]);
	cache_uncharge(c, 2 * fp);
	assert_int_equal(stats(c).charged, 0);

	/* a layer of 8 extents: refused while scanned where 7 fit, taken
	 * where 8 do */
	{
		struct unit_range r[8];
		struct stat sb;

		for (size_t i = 0; i < 8; i++)
			r[i] = (struct unit_range){ many[i] * P, P };
		mfd = unit_sparse_file(ud->fd, "m", 16 * P, r, 8, 11, NULL);
		assert_int_equal(fstat(mfd, &sb), 0);
		layer_id_from_stat(&mid, &sb);
	}
	cache_free(c);
	c = cache_new(sizeof(struct extent_map) + 7 * sizeof(struct extent));
	assert_int_equal(cache_get(c, mfd, &mid, "m", &x), -EFBIG);
	assert_null(x);
	st = stats(c);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	cache_free(c);
	c = cache_new(sizeof(struct extent_map) + 8 * sizeof(struct extent));
	assert_int_equal(cache_get(c, mfd, &mid, "m", &x), 0);
	assert_int_equal(cache_entry_map(x)->n, 8);
	cache_put(c, x);
	cache_free(c);
	close(mfd);
	for (unsigned i = 0; i < 4; i++)
		close(fd[i]);
}

/* cache_free with maps held but none referenced frees them all (ASan's
 * leak check at exit tells). */
static void test_cache_free_all(void **state)
{
	struct unit_dir *ud = *state;
	struct cache_entry *e[4] = { 0 };
	struct layer_id id[4];
	struct cache *c = cache_new(1 << 20);
	int fd[4];

	assert_non_null(c);
	open_four(ud, fd, id);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(cache_get(c, fd[i], &id[i], "x", &e[i]), 0);
	for (unsigned i = 0; i < 4; i++)
		cache_put(c, e[i]);
	assert_int_equal(stats(c).entries, 4);
	cache_free(c);
	cache_free(NULL);
	c = cache_new(0);
	assert_non_null(c);
	cache_free(c);
	for (unsigned i = 0; i < 4; i++)
		close(fd[i]);
}

/* Many identities: the table grows, and every map is found again. */
static void test_many_identities(void **state)
{
	struct unit_dir *ud = *state;
	enum { N = 3000 };
	static const unsigned pg[] = { 4 };
	struct cache *c = cache_new(SIZE_MAX);
	struct cache_entry *e;
	struct layer_id id, k;
	struct cache_stats st;
	int fd = layer_file(ud, "a", pg, 1, &id);

	assert_non_null(c);
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t i = 0; i < N; i++) {
			k = id;
			k.ino = 1000 + i;
			k.dev = i % 3;
			assert_int_equal(cache_get(c, fd, &k, "a", &e), 0);
			assert_int_equal(cache_entry_map(e)->ext[0].off, 4 * P);
			cache_put(c, e);
		}
	}
	st = stats(c);
	assert_int_equal(st.entries, N);
	assert_int_equal(st.misses, N);
	assert_int_equal(st.hits, N);
	assert_int_equal(st.changed, 0);
	assert_int_equal(st.evictions, 0);
	cache_free(c);
	close(fd);
}

static void test_scan_error(void **state)
{
	struct cache *c = cache_new(1 << 20);
	struct layer_id id = { .dev = 1, .ino = 2, .size = P };
	struct cache_entry *e = NULL;

	(void)state;
	assert_non_null(c);
	assert_int_equal(cache_get(c, -1, &id, "bad", &e), -EBADF);
	assert_null(e);
	assert_int_equal(stats(c).entries, 0);
	assert_int_equal(stats(c).bytes, 0);
	cache_free(c);
}

/* Several threads sharing a small cache: counts add up, maps stay right. */
struct thr_arg {
	struct cache *c;
	int *fd;
	struct layer_id *id;
	uint64_t seed;
	int bad;
	int refused;	/* -EFBIG: the others' maps in use filled it */
};

enum { THR = 4, ITER = 3000 };

static void *thr_main(void *p)
{
	struct thr_arg *a = p;

	for (int i = 0; i < ITER; i++) {
		unsigned k = (unsigned)unit_below(&a->seed, 4);
		struct cache_entry *e;

		int ret = cache_get(a->c, a->fd[k], &a->id[k], "t", &e);

		if (ret) {
			if (ret == -EFBIG)
				a->refused++;
			else
				a->bad++;
			continue;
		}
		if (cache_entry_map(e)->ext[0].off != k * P)
			a->bad++;
		cache_put(a->c, e);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct unit_dir *ud = *state;
	struct thr_arg a[THR];
	pthread_t t[THR];
	struct layer_id id[4];
	struct cache_stats st;
	struct cache *c;
	size_t fp = sizeof(struct extent_map) + sizeof(struct extent);
	int fd[4];

	open_four(ud, fd, id);
	c = cache_new(2 * fp);
	assert_non_null(c);
	for (int i = 0; i < THR; i++) {
		a[i] = (struct thr_arg){ c, fd, id, (uint64_t)i * 77 + 1, 0, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, thr_main, &a[i]), 0);
	}
	for (int i = 0; i < THR; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(a[i].bad, 0);
	}
	st = stats(c);
	assert_int_equal(st.hits + st.misses, THR * ITER);
	assert_true(st.entries <= 2);
	assert_int_equal(st.bytes, st.entries * fp);
	assert_int_equal(st.changed, 0);
	cache_free(c);
	for (unsigned i = 0; i < 4; i++)
		close(fd[i]);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, unit_dir_setup, unit_dir_teardown)
	const struct CMUnitTest tests[] = {
		T(test_layer_id),
		T(test_hit),
		T(test_changed),
		T(test_budget_lru),
		T(test_budget_referenced),
		T(test_budget_charged),
		T(test_cache_free_all),
		T(test_many_identities),
		cmocka_unit_test(test_scan_error),
		T(test_threads),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
