/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of rollback under the rollback lock: the lock itself (it is a
 * flock of the directory, so `flock DIR` from a shell and the library
 * exclude each other; waits are bounded and can be stopped), which diff a
 * rollback removes and why it refuses, rollback_run() on real files, and
 * the two orders of a rollback and a compaction racing for the lock: the
 * rollback first abandons the compaction, the compaction first leaves
 * nothing to roll back, and a diff deleted without the lock between the
 * compactor's check and its claim makes it withdraw the new base.
 */
#include "unit.h"

#include <pthread.h>
#include <sys/file.h>
#include <time.h>

#include "cache.h"
#include "compact.h"
#include "dirlock.h"
#include "rollback.h"
#include "store.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the lock ---- */

static void test_lock_excludes(void **state)
{
	struct unit_dir *ud = *state;
	struct dirlock a, b;
	int stop = 0, other;
	double t0;

	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &a), 0);
	assert_true(a.fd >= 0);
	/* A second holder in the same process is kept out too. */
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &b), -EWOULDBLOCK);
	assert_int_equal(b.fd, -1);
	t0 = now_s();
	assert_int_equal(dirlock_acquire(ud->fd, 100, NULL, &b), -EWOULDBLOCK);
	assert_true(now_s() - t0 >= 0.09);
	stop = 1;
	assert_int_equal(dirlock_acquire(ud->fd, DIRLOCK_WAIT_FOREVER, &stop, &b),
			 -ECANCELED);
	/* It is a flock of the directory itself: what flock(1) takes. */
	other = open(ud->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(other >= 0);
	assert_int_equal(flock(other, LOCK_EX | LOCK_NB), -1);
	assert_int_equal(errno, EWOULDBLOCK);
	assert_int_equal(dirlock_sync_dir(&a), 0);
	dirlock_release(&a);
	assert_int_equal(a.fd, -1);
	dirlock_release(&a);	/* harmless */
	assert_int_equal(flock(other, LOCK_EX | LOCK_NB), 0);
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &b), -EWOULDBLOCK);
	close(other);
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &b), 0);
	dirlock_release(&b);
}

/* Closes fd (and so drops its flock) after 150 ms. */
static void *release_later(void *arg)
{
	struct timespec ts = { 0, 150 * 1000000L };

	nanosleep(&ts, NULL);
	close(*(int *)arg);
	return NULL;
}

static void test_lock_waits(void **state)
{
	struct unit_dir *ud = *state;
	struct dirlock lk;
	pthread_t th;
	int fd;
	double t0;

	fd = open(ud->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	t0 = now_s();
	assert_int_equal(pthread_create(&th, NULL, release_later, &fd), 0);
	assert_int_equal(dirlock_acquire(ud->fd, 5000, NULL, &lk), 0);
	assert_true(now_s() - t0 >= 0.1);
	assert_true(now_s() - t0 < 4.0);
	dirlock_release(&lk);
	pthread_join(th, NULL);
}

/* ---- which diff ---- */

static struct store_dir *index_of(const char *const *names, size_t n)
{
	struct store_dir *d = NULL;

	assert_int_equal(store_dir_from_names(names, NULL, n, &d), 0);
	return d;
}

static int resolve(const struct store_dir *d, const char *want,
		   struct rollback_result *res)
{
	memset(res, 0xee, sizeof(*res));
	return rollback_resolve(store_dir_find(d, "f"), "f", want, res);
}

static void test_resolve(void **state)
{
	static const char *const names[] = { "f.0.base", "f.1.diff", "f.02.diff" };
	struct store_dir *d = index_of(names, 3);
	struct rollback_result res;

	(void)state;
	assert_int_equal(resolve(d, NULL, &res), 0);
	assert_string_equal(res.removed, "f.02.diff");
	assert_string_equal(res.top_after, "f.1.diff");
	assert_int_equal(res.depth_after, 1);
	assert_int_equal(resolve(d, "f.02.diff", &res), 0);
	assert_string_equal(res.removed, "f.02.diff");
	assert_int_equal(resolve(d, "f.1.diff", &res), -EBUSY);
	assert_non_null(strstr(res.why, "not the newest diff"));
	assert_int_equal(resolve(d, "f.0.base", &res), -EBUSY);
	assert_non_null(strstr(res.why, "base"));
	assert_int_equal(resolve(d, "f.3.diff", &res), -ENOENT);
	assert_non_null(strstr(res.why, "not in the chain"));
	assert_int_equal(rollback_resolve(NULL, "g", NULL, &res), -ENOENT);
	assert_non_null(strstr(res.why, "no layered file g"));
	store_dir_free(d);
}

static void test_resolve_merged(void **state)
{
	/* Compaction merged 0..7 into f.7.base; f.3.diff is a leftover. */
	static const char *const names[] = { "f.3.diff", "f.7.base", "f.7.diff" };
	static const char *const one[] = { "f.1.diff", "f.2.diff" };
	struct store_dir *d = index_of(names, 3);
	struct rollback_result res;

	(void)state;
	assert_int_equal(resolve(d, NULL, &res), -ENOENT);
	assert_non_null(strstr(res.why, "its base f.7.base alone"));
	assert_int_equal(resolve(d, "f.7.diff", &res), -ENOENT);
	assert_non_null(strstr(res.why, "f.7.diff is superseded; compaction "
				"merged it into f.7.base"));
	assert_int_equal(resolve(d, "f.5.diff", &res), -ENOENT);
	assert_non_null(strstr(res.why, "f.5.diff is gone; compaction merged "
				"it into f.7.base"));
	store_dir_free(d);
	/* No base: the chain is unusable, nothing is removed blindly. */
	d = index_of(one, 2);
	assert_int_equal(resolve(d, NULL, &res), -EIO);
	assert_non_null(strstr(res.why, "unusable"));
	store_dir_free(d);
}

/* ---- rollback_run on files ---- */

static void touch(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	close(fd);
}

static bool exists(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void test_run(void **state)
{
	struct unit_dir *ud = *state;
	struct rollback_result res;
	struct dirlock lk;

	touch(ud->fd, "f.0.base");
	touch(ud->fd, "f.1.diff");
	touch(ud->fd, "f.2.diff");
	touch(ud->fd, "f.3.diff");
	/* dry run: nothing removed */
	assert_int_equal(rollback_run(ud->fd, "f", true, 0, &res), 0);
	assert_string_equal(res.removed, "f.3.diff");
	assert_false(res.unlinked);
	assert_true(exists(ud->fd, "f.3.diff"));
	/* the lock held elsewhere: refused, nothing removed */
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &lk), 0);
	assert_int_equal(rollback_run(ud->fd, "f", false, 50, &res), -EWOULDBLOCK);
	assert_non_null(strstr(res.why, "held by another process"));
	assert_true(exists(ud->fd, "f.3.diff"));
	dirlock_release(&lk);
	/* by NAME, then by the layer's name */
	assert_int_equal(rollback_run(ud->fd, "f", false, 0, &res), 0);
	assert_true(res.unlinked);
	assert_string_equal(res.removed, "f.3.diff");
	assert_string_equal(res.top_after, "f.2.diff");
	assert_int_equal(res.depth_after, 2);
	assert_false(exists(ud->fd, "f.3.diff"));
	assert_int_equal(rollback_run(ud->fd, "f.1.diff", false, 0, &res), -EBUSY);
	assert_true(exists(ud->fd, "f.1.diff"));
	assert_int_equal(rollback_run(ud->fd, "f.2.diff", false, 0, &res), 0);
	assert_false(exists(ud->fd, "f.2.diff"));
	assert_int_equal(rollback_run(ud->fd, "f", false, 0, &res), 0);
	assert_int_equal(res.depth_after, 0);
	assert_int_equal(rollback_run(ud->fd, "f", false, 0, &res), -ENOENT);
	assert_non_null(strstr(res.why, "alone"));
	assert_true(exists(ud->fd, "f.0.base"));
	assert_int_equal(rollback_run(ud->fd, "nosuch", false, 0, &res), -ENOENT);
}

/* ---- a rollback and a compaction racing for the lock ---- */

#define CSIZE (64 * UNIT_PAGE)

/* f.0.base (all data) and diffs 1..ndiffs, each with a few pages. */
static void make_chain(int dirfd, unsigned ndiffs)
{
	static const struct unit_range all = { 0, CSIZE };

	unit_sparse_file_c(dirfd, "f.0.base", CSIZE, &all, 1, 100, NULL);
	for (unsigned i = 1; i <= ndiffs; i++) {
		struct unit_range r[2] = { { i * UNIT_PAGE, UNIT_PAGE },
					   { (32 + i) * UNIT_PAGE, 2 * UNIT_PAGE } };
		char name[32];

		snprintf(name, sizeof(name), "f.%u.diff", i);
		unit_sparse_file_c(dirfd, name, CSIZE, r, 2, 100 + i, NULL);
	}
}

struct cjob {
	int dirfd;
	size_t nmerge;
	const char *fault;
	struct compact_result res;
	int ret;
};

static void *compact_job(void *arg)
{
	struct cjob *j = arg;
	struct store_dir *d = NULL;
	struct store_chain chain;
	struct compact_opts o = { .threshold = 0, .keep = 0 };
	struct cache *c = cache_new(8 << 20);
	const char *why;

	assert_non_null(c);
	assert_int_equal(store_dir_scan(j->dirfd, &d), 0);
	assert_int_equal(store_chain_resolve(store_dir_find(d, "f"), &chain, &why), 0);
	j->ret = compact_chain(j->dirfd, "f", &chain, j->nmerge, c, &o, &j->res);
	store_chain_free(&chain);
	store_dir_free(d);
	cache_free(c);
	return NULL;
}

static bool holes_exact(struct unit_dir *ud)
{
	uint64_t g = unit_hole_granularity(ud->fd);

	unlinkat(ud->fd, ".holeprobe", 0);
	return g == UNIT_PAGE;
}

/* The rollback takes the lock first: the compaction is abandoned. */
static void test_rollback_first(void **state)
{
	struct unit_dir *ud = *state;
	struct cjob j = { .dirfd = ud->fd, .nmerge = 4 };
	struct timespec ts = { 0, 1000000L };
	struct dirlock lk;
	pthread_t th;

#ifndef SNAPFS_FAULT_INJECTION
	skip();
#endif
	if (!holes_exact(ud))
		skip();
	make_chain(ud->fd, 3);
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &lk), 0);
	/* The rollback, holding the lock, removes the diff once the copy is
	 * done (the fault point after step 4, data fsynced: no sleep to
	 * guess it); the compactor then waits for the lock. */
	setenv("SNAPFS_FAULT", "4:rm-top", 1);
	assert_int_equal(pthread_create(&th, NULL, compact_job, &j), 0);
	while (exists(ud->fd, "f.3.diff"))
		nanosleep(&ts, NULL);
	dirlock_release(&lk);
	pthread_join(th, NULL);
	unsetenv("SNAPFS_FAULT");
	assert_int_equal(j.ret, -EAGAIN);
	assert_false(j.res.published);
	assert_false(j.res.withdrawn);
	assert_false(exists(ud->fd, "f.3.base"));
	assert_true(exists(ud->fd, "f.0.base"));
	assert_true(exists(ud->fd, "f.2.diff"));
	assert_int_equal(compact_cleanup(ud->fd), 0);	/* no staging file */
}

/* The compaction takes it first: the diff is merged, not rolled back. */
static void test_compaction_first(void **state)
{
	struct unit_dir *ud = *state;
	struct cjob j = { .dirfd = ud->fd, .nmerge = 4 };
	struct rollback_result res;

	if (!holes_exact(ud))
		skip();
	make_chain(ud->fd, 3);
	compact_job(&j);
	assert_int_equal(j.ret, 0);
	assert_true(j.res.published);
	assert_true(exists(ud->fd, "f.3.base"));
	assert_false(exists(ud->fd, "f.3.diff"));
	assert_int_equal(rollback_run(ud->fd, "f.3.diff", false, 0, &res), -ENOENT);
	assert_non_null(strstr(res.why, "merged it into f.3.base"));
	assert_int_equal(compact_cleanup(ud->fd), 0);
}

/* A merged diff deleted without the lock after the compactor's check: the
 * claim of the newest merged diff finds it gone, the new base goes again. */
static void test_plain_rm_withdraws(void **state)
{
	struct unit_dir *ud = *state;
	struct cjob j = { .dirfd = ud->fd, .nmerge = 4 };

#ifndef SNAPFS_FAULT_INJECTION
	skip();
#endif
	if (!holes_exact(ud))
		skip();
	make_chain(ud->fd, 3);
	setenv("SNAPFS_FAULT", "6:rm-top", 1);
	compact_job(&j);
	unsetenv("SNAPFS_FAULT");
	assert_int_equal(j.ret, -EAGAIN);
	assert_true(j.res.withdrawn);
	assert_false(j.res.published);
	assert_false(exists(ud->fd, "f.3.base"));
	assert_false(exists(ud->fd, "f.3.diff"));
	assert_true(exists(ud->fd, "f.0.base"));
	assert_true(exists(ud->fd, "f.1.diff"));
	assert_true(exists(ud->fd, "f.2.diff"));
	assert_int_equal(compact_cleanup(ud->fd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lock_excludes, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_lock_waits, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_resolve_merged),
		cmocka_unit_test_setup_teardown(test_run, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_rollback_first, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_compaction_first, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_plain_rm_withdraws, unit_dir_setup,
						unit_dir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
