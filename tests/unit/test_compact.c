/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the compactor on plain directories: compact_plan(), the
 * prune rule (compact_superseded(), compact_prune() and its two halves),
 * staging-name matching and compact_cleanup(), compact_check_chain(), the
 * copier's methods on tmpfs (copy.h), and compact_chain() end to end: the
 * new base equals a merge computed here, byte for byte and hole for hole
 * (SEEK_DATA), with every copy method forced; superseded layers gone, no
 * staging file left, a dry run changes nothing, the permissions rule.
 * Fault injection is the mount tests' (t-compact-crash.sh).
 */
#include "unit.h"

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

#include "cache.h"
#include "compact.h"
#include "dirlock.h"
#include "copy.h"
#include "extent.h"
#include "store.h"

#define PAGES 64
#define SIZE ((uint64_t)PAGES * UNIT_PAGE)

static bool exists(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* A subdirectory of dirfd, made and opened. */
static int subdir(int dirfd, const char *name)
{
	int fd;

	assert_int_equal(mkdirat(dirfd, name, 0700), 0);
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* How many entries of dirfd start with COMPACT_TMP_PREFIX. */
static int count_staging(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), n = 0;
	DIR *d = fdopendir(fd);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strncmp(de->d_name, COMPACT_TMP_PREFIX, strlen(COMPACT_TMP_PREFIX)) == 0)
			n++;
	closedir(d);
	return n;
}

/* ---- planning ---- */

static void test_plan(void **state)
{
	static const struct {
		size_t nlayers;
		unsigned threshold, keep;
		size_t want;
	} cases[] = {
		{ 0, 0, 0, 0 },		/* no chain */
		{ 1, 0, 0, 0 },		/* a base alone */
		{ 2, 0, 0, 2 },		/* one diff over threshold 0: all */
		{ 9, 8, 2, 0 },		/* 8 diffs: not more than 8 */
		{ 10, 8, 2, 8 },	/* 9 diffs: base + 7, 2 kept */
		{ 10, 8, 8, 2 },	/* keep = threshold: base + 1 */
		{ 6, 2, 2, 4 },
		{ 4, 1, 3, 0 },		/* 3 diffs, keep 3: nothing to merge */
		{ 5, 1, 3, 2 },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct store_chain chain = { .nlayers = cases[i].nlayers };
		struct compact_opts o = { .threshold = cases[i].threshold,
					  .keep = cases[i].keep };

		assert_int_equal(compact_plan(&chain, &o), cases[i].want);
	}
}

/* ---- pruning ---- */

static void test_superseded(void **state)
{
	static const struct {
		uint64_t seq;
		enum store_kind kind;
		bool overflow;
		bool want;		/* superseded by the base of seq 5 */
	} cases[] = {
		{ 0, STORE_BASE, false, true },
		{ 3, STORE_DIFF, false, true },
		{ 4, STORE_BASE, false, true },
		{ 5, STORE_DIFF, false, true },		/* same seq as the base */
		{ 5, STORE_BASE, false, false },	/* the base itself */
		{ 6, STORE_DIFF, false, false },
		{ 7, STORE_BASE, false, false },
		{ 0, STORE_DIFF, true, false },		/* overflowed: never */
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct store_layer l = { .fname = (char *)"x", .seq = cases[i].seq,
					 .kind = cases[i].kind,
					 .overflow = cases[i].overflow };

		assert_int_equal(compact_superseded(&l, 5), cases[i].want);
	}
}

/* The layers of one group as files, for the prune tests; the group is
 * scanned back from the directory. */
static const char *const prune_names[] = {
	"f.0.base", "f.1.diff", "f.2.base", "f.3.diff", "f.4.diff", "f.4.base",
	"f.5.diff", "f.6.base", "f.99999999999999999999999.diff",
	"g.0.base",	/* another group: never f's to prune */
};
#define NPRUNE (sizeof(prune_names) / sizeof(prune_names[0]))

/* Which of prune_names the chain on f.4.base supersedes. */
static bool prune_want(size_t i)
{
	return i <= 4;	/* f.0 .. f.4.diff */
}

static struct store_dir *make_prune_dir(int dirfd)
{
	struct store_dir *d = NULL;

	for (size_t i = 0; i < NPRUNE; i++)
		unit_sparse_file_c(dirfd, prune_names[i], UNIT_PAGE, NULL, 0, 0, NULL);
	assert_int_equal(store_dir_scan(dirfd, &d), 0);
	assert_non_null(store_dir_find(d, "f"));
	return d;
}

static void check_pruned(int dirfd)
{
	for (size_t i = 0; i < NPRUNE; i++)
		assert_int_equal(exists(dirfd, prune_names[i]), !prune_want(i));
}

static void test_prune(void **state)
{
	struct unit_dir *ud = *state;
	struct store_dir *d = make_prune_dir(ud->fd);

	assert_int_equal(compact_prune(ud->fd, store_dir_find(d, "f"), 4), 5);
	check_pruned(ud->fd);
	/* Again: nothing left to remove, and ENOENT is no failure. */
	assert_int_equal(compact_prune(ud->fd, store_dir_find(d, "f"), 4), 0);
	store_dir_free(d);
}

/* The two halves remove exactly what compact_prune() does. */
static void test_prune_list(void **state)
{
	struct unit_dir *ud = *state;
	struct store_dir *d = make_prune_dir(ud->fd);
	const struct store_group *g = store_dir_find(d, "f");
	char **names = NULL;

	assert_int_equal(compact_prune_list(g, 4, &names), 5);
	assert_non_null(names);
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(names[i], prune_names[i]);
	assert_null(names[5]);
	/* The list outlives the group it was taken from. */
	store_dir_free(d);
	assert_int_equal(compact_prune_names(ud->fd, "f", names), 5);
	check_pruned(ud->fd);

	/* Nothing superseded: no list; NULL is a valid empty one. */
	assert_int_equal(store_dir_scan(ud->fd, &d), 0);
	assert_int_equal(compact_prune_list(store_dir_find(d, "g"), 0, &names), 0);
	assert_null(names);
	assert_int_equal(compact_prune_names(ud->fd, "g", NULL), 0);
	store_dir_free(d);
}

/* ---- staging names ---- */

static void test_is_tmp(void **state)
{
	static const char *const yes[] = {
		COMPACT_TMP_PREFIX "0123456789abcdef.1",
		COMPACT_TMP_PREFIX "ffffffffffffffff.4294967295",
		COMPACT_TMP_PREFIX "0000000000000000.0123456789",
	};
	static const char *const no[] = {
		COMPACT_TMP_PREFIX,
		COMPACT_TMP_PREFIX "0123456789abcdef",
		COMPACT_TMP_PREFIX "0123456789abcdef.",
		COMPACT_TMP_PREFIX "0123456789ABCDEF.1",	/* upper case */
		COMPACT_TMP_PREFIX "0123456789abcde.1",		/* 15 digits */
		COMPACT_TMP_PREFIX "0123456789abcdef0.1",	/* 17 digits */
		COMPACT_TMP_PREFIX "0123456789abcdef.12345678901",	/* 11 */
		COMPACT_TMP_PREFIX "0123456789abcdef.12a",
		COMPACT_TMP_PREFIX "0123456789abcdef.1.merged",
		COMPACT_TMP_PREFIX "f.3.base.1",	/* an older form */
		".snapfs-compact0123456789abcdef.1",
		"x" COMPACT_TMP_PREFIX "0123456789abcdef.1",
		"f.3.base",
		"",
	};
	(void)state;

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
		assert_true(compact_is_tmp(yes[i]));
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		assert_false(compact_is_tmp(no[i]));
}

/* compact_cleanup() removes staging files and nothing that merely looks
 * like one. */
static void test_cleanup(void **state)
{
	static const char *const staging[] = {
		COMPACT_TMP_PREFIX "0123456789abcdef.1",
		COMPACT_TMP_PREFIX "fedcba9876543210.77",
	};
	static const char *const kept[] = {
		COMPACT_TMP_PREFIX "0123456789abcdef",
		COMPACT_TMP_PREFIX "0123456789ABCDEF.1",
		COMPACT_TMP_PREFIX "0123456789abcdef.1.x",
		"f.0.base",
	};
	struct unit_dir *ud = *state;

	for (size_t i = 0; i < 2; i++)
		unit_sparse_file_c(ud->fd, staging[i], 0, NULL, 0, 0, NULL);
	for (size_t i = 0; i < 4; i++)
		unit_sparse_file_c(ud->fd, kept[i], 0, NULL, 0, 0, NULL);
	assert_int_equal(compact_cleanup(ud->fd), 2);
	for (size_t i = 0; i < 2; i++)
		assert_false(exists(ud->fd, staging[i]));
	for (size_t i = 0; i < 4; i++)
		assert_true(exists(ud->fd, kept[i]));
	assert_int_equal(compact_cleanup(ud->fd), 0);
}

static void test_method_name(void **state)
{
	(void)state;
	assert_string_equal(compact_method_name(COMPACT_PREAD), "pread/pwrite");
	assert_string_equal(compact_method_name(COMPACT_CFR), "copy_file_range");
	assert_string_equal(compact_method_name(COMPACT_CLONE_RANGE), "FICLONERANGE");
}

/* ---- chains, and the merge computed independently ---- */

/* What the merged layers read as: bytes, and which pages hold data. */
struct merge {
	unsigned char img[SIZE];
	bool data[PAGES];
};

/*
 * Writes f.0.base (every third page of the first half, and a run of 8
 * pages, so it has holes too) and diffs 1..ndiffs (one to four runs of one
 * to three pages each, placed by seed), all of SIZE bytes, into dirfd;
 * m receives the merge of the first nmerge of them.
 */
static void make_chain(int dirfd, unsigned ndiffs, uint64_t seed, size_t nmerge,
		       struct merge *m)
{
	struct unit_range r[PAGES];
	size_t n = 0;
	uint64_t s = seed;

	memset(m, 0, sizeof(*m));
	for (unsigned p = 0; p < PAGES / 2; p += 3)
		r[n++] = (struct unit_range){ p * UNIT_PAGE, UNIT_PAGE };
	r[n++] = (struct unit_range){ 40 * UNIT_PAGE, 8 * UNIT_PAGE };
	for (unsigned layer = 0; layer <= ndiffs; layer++) {
		unsigned char *img = layer < nmerge ? m->img : NULL;
		char name[32];

		if (layer > 0) {
			n = 1 + unit_below(&s, 4);
			for (size_t i = 0; i < n; i++) {
				uint64_t len = 1 + unit_below(&s, 3);

				r[i].off = unit_below(&s, PAGES - len) * UNIT_PAGE;
				r[i].len = len * UNIT_PAGE;
			}
		}
		snprintf(name, sizeof(name), layer ? "f.%u.diff" : "f.%u.base", layer);
		unit_sparse_file_c(dirfd, name, SIZE, r, n, seed + 1 + layer, img);
		for (size_t i = 0; img && i < n; i++)
			for (uint64_t p = r[i].off / UNIT_PAGE;
			     p < (r[i].off + r[i].len) / UNIT_PAGE; p++)
				m->data[p] = true;
	}
}

/* fname in dirfd reads as m, and has data exactly where m does. */
static void check_merge(int dirfd, const char *fname, const struct merge *m)
{
	int fd = openat(dirfd, fname, O_RDONLY | O_CLOEXEC);
	unsigned char *buf = malloc(SIZE);
	struct stat st;

	assert_true(fd >= 0);
	assert_non_null(buf);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, SIZE);
	assert_int_equal(pread(fd, buf, SIZE, 0), (ssize_t)SIZE);
	assert_memory_equal(buf, m->img, SIZE);
	for (unsigned p = 0; p < PAGES; p++) {
		off_t d = lseek(fd, (off_t)p * UNIT_PAGE, SEEK_DATA);

		if (m->data[p] != (d == (off_t)p * UNIT_PAGE))
			fail_msg("%s: page %u is %s, the merge has %s there", fname, p,
				 m->data[p] ? "a hole" : "data",
				 m->data[p] ? "data" : "a hole");
	}
	free(buf);
	close(fd);
}

/* The chain of f in dirfd: *dir keeps it alive. */
static void resolve_f(int dirfd, struct store_dir **dir, struct store_chain *chain)
{
	const char *why = NULL;

	assert_int_equal(store_dir_scan(dirfd, dir), 0);
	assert_int_equal(store_chain_resolve(store_dir_find(*dir, "f"), chain, &why), 0);
}

/* Compacts f in dirfd with opts (threshold 2, keep 2 if NULL). */
static int compact_f(int dirfd, const struct compact_opts *opts,
		     struct compact_result *res)
{
	struct compact_opts o = { .threshold = 2, .keep = 2 };
	struct store_dir *d;
	struct store_chain chain;
	struct cache *c = cache_new(8 << 20);
	size_t nmerge;
	int ret;

	assert_non_null(c);
	if (opts)
		o = *opts;
	resolve_f(dirfd, &d, &chain);
	nmerge = compact_plan(&chain, &o);
	ret = nmerge ? compact_chain(dirfd, "f", &chain, nmerge, c, &o, res) : -ENODATA;
	store_chain_free(&chain);
	store_dir_free(d);
	cache_free(c);
	return ret;
}

/* Five diffs, threshold 2, keep 2: f.0.base and f.1..3.diff merge into
 * f.3.base; f.4.diff and f.5.diff stay. */
static void compact_and_check(int dirfd, uint64_t seed, struct compact_result *res)
{
	static struct merge m;
	struct stat k4, k5, st;

	make_chain(dirfd, 5, seed, 4, &m);
	assert_int_equal(fstatat(dirfd, "f.4.diff", &k4, 0), 0);
	assert_int_equal(fstatat(dirfd, "f.5.diff", &k5, 0), 0);
	assert_int_equal(compact_f(dirfd, NULL, res), 0);
	assert_string_equal(res->new_base, "f.3.base");
	assert_int_equal(res->merged, 4);
	assert_true(res->published);
	assert_false(res->withdrawn);
	assert_string_equal(res->refused, "");
	assert_true(res->ranges > 0);
	assert_true(res->bytes_copied > 0);
	if (!res->reflinked)
		assert_int_not_equal(res->method, COMPACT_CLONE_RANGE);
	check_merge(dirfd, "f.3.base", &m);
	/* The merged layers are gone, the kept diffs untouched. */
	assert_false(exists(dirfd, "f.0.base"));
	assert_false(exists(dirfd, "f.1.diff"));
	assert_false(exists(dirfd, "f.2.diff"));
	assert_false(exists(dirfd, "f.3.diff"));
	assert_int_equal(fstatat(dirfd, "f.4.diff", &st, 0), 0);
	assert_int_equal(st.st_ino, k4.st_ino);
	assert_int_equal(fstatat(dirfd, "f.5.diff", &st, 0), 0);
	assert_int_equal(st.st_ino, k5.st_ino);
	assert_int_equal(count_staging(dirfd), 0);
}

static void test_chain(void **state)
{
	struct unit_dir *ud = *state;
	struct compact_result res;
	char why[256];
	struct store_dir *d;
	struct store_chain chain;
	struct cache *c = cache_new(8 << 20);

	UNIT_REQUIRE_PAGE_HOLES(ud);
	compact_and_check(ud->fd, 11, &res);
	/* The new chain opens cleanly, and nothing is left to prune. */
	resolve_f(ud->fd, &d, &chain);
	assert_int_equal(chain.nlayers, 3);
	assert_int_equal(compact_check_chain(ud->fd, &chain, c, 0, why, sizeof(why)), 0);
	assert_int_equal(compact_prune(ud->fd, store_dir_find(d, "f"), 3), 0);
	store_chain_free(&chain);
	store_dir_free(d);
	cache_free(c);
}

/* One compactor per chain: while another holds the chain's compaction
 * lock (another daemon, here or on another host), compact_chain() does
 * nothing and says -EALREADY; once it is released, it compacts. */
static void test_chain_held(void **state)
{
	struct unit_dir *ud = *state;
	static struct merge m;
	struct compact_result res;
	struct chainlock other;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	make_chain(ud->fd, 5, 31, 4, &m);
	assert_int_equal(chainlock_try(ud->fd, "f", &other), 0);
	assert_int_equal(compact_f(ud->fd, NULL, &res), -EALREADY);
	assert_false(res.published);
	assert_true(exists(ud->fd, "f.0.base"));
	assert_true(exists(ud->fd, "f.3.diff"));
	assert_false(exists(ud->fd, "f.3.base"));
	assert_int_equal(count_staging(ud->fd), 0);
	/* Another chain's lock is not this one's. */
	chainlock_release(&other);
	assert_int_equal(chainlock_try(ud->fd, "g", &other), 0);
	assert_int_equal(compact_f(ud->fd, NULL, &res), 0);
	chainlock_release(&other);
	check_merge(ud->fd, "f.3.base", &m);
}

/* Where rename flags are not supported (NFS, CephFS: EINVAL; played by a
 * fault point), the new base is published and the newest merged diff
 * claimed by a link and an unlink, with the same result. */
static void test_no_rename_flags(void **state)
{
#ifdef SNAPFS_FAULT_INJECTION
	struct unit_dir *ud = *state;
	struct compact_result res;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	setenv("SNAPFS_FAULT", "0:no-noreplace", 1);
	compact_and_check(ud->fd, 37, &res);
	unsetenv("SNAPFS_FAULT");
#else
	(void)state;
	skip();
#endif
}

/* Every copy method, forced, gives the same new base (on the scratch
 * directory's filesystem and on tmpfs). */
static void methods_agree(int dirfd)
{
	static const char *const methods[] = { "pread", "cfr", "clone" };
	static const enum compact_method want[] = { COMPACT_PREAD, COMPACT_CFR,
						    COMPACT_CLONE_RANGE };

	for (size_t i = 0; i < 3; i++) {
		struct compact_result res;
		int fd = subdir(dirfd, methods[i]);

		setenv("SNAPFS_COMPACT_METHOD", methods[i], 1);
		compact_and_check(fd, 23, &res);	/* same seed: same merge */
		unsetenv("SNAPFS_COMPACT_METHOD");
		print_message("%s: %s, %s\n", methods[i],
			      res.reflinked ? "reflinked" : "copied",
			      compact_method_name(res.method));
		/* A method is only ever given up for a slower one. */
		assert_true(res.method <= want[i]);
		if (want[i] == COMPACT_PREAD)
			assert_int_equal(res.method, COMPACT_PREAD);
		close(fd);
	}
}

static void test_methods(void **state)
{
	struct unit_dir *ud = *state;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	methods_agree(ud->fd);
}

static void test_methods_tmpfs(void **state)
{
	struct unit_tmpfs *h = *state;

	UNIT_REQUIRE_TMPFS(h);
	UNIT_REQUIRE_PAGE_HOLES(h->ud);
	methods_agree(h->dfd);
}

/* Identity of every entry of dirfd, for "changed nothing". */
static size_t snapshot(int dirfd, char names[][64], struct stat *sts, size_t max)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fdopendir(fd);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		assert_true(n < max);
		assert_true(strlen(de->d_name) < 64);
		memcpy(names[n], de->d_name, strlen(de->d_name) + 1);
		assert_int_equal(fstatat(dirfd, de->d_name, &sts[n], 0), 0);
		n++;
	}
	closedir(d);
	return n;
}

static void test_dry_run(void **state)
{
	struct unit_dir *ud = *state;
	struct compact_opts o = { .threshold = 2, .keep = 2, .dry_run = true };
	struct compact_result res;
	static struct merge m;
	char before[16][64], after[16][64];
	struct stat sb[16], sa[16];
	size_t nb, na;

	make_chain(ud->fd, 5, 31, 4, &m);
	nb = snapshot(ud->fd, before, sb, 16);
	assert_int_equal(nb, 6);
	assert_int_equal(compact_f(ud->fd, &o, &res), 0);
	assert_string_equal(res.new_base, "f.3.base");
	assert_int_equal(res.merged, 4);
	assert_false(res.published);
	assert_int_equal(res.bytes_copied, 0);
	na = snapshot(ud->fd, after, sa, 16);
	assert_int_equal(na, nb);
	for (size_t i = 0; i < nb; i++) {
		size_t j = 0;

		while (j < na && strcmp(after[j], before[i]) != 0)
			j++;
		assert_true(j < na);
		assert_int_equal(sa[j].st_ino, sb[i].st_ino);
		assert_int_equal(sa[j].st_size, sb[i].st_size);
		assert_int_equal(sa[j].st_mtim.tv_sec, sb[i].st_mtim.tv_sec);
		assert_int_equal(sa[j].st_mtim.tv_nsec, sb[i].st_mtim.tv_nsec);
	}
}

static void test_bad_nmerge(void **state)
{
	struct unit_dir *ud = *state;
	struct compact_opts o = { 0 };
	struct compact_result res;
	struct store_dir *d;
	struct store_chain chain;
	static struct merge m;

	make_chain(ud->fd, 2, 5, 0, &m);
	resolve_f(ud->fd, &d, &chain);
	assert_int_equal(compact_chain(ud->fd, "f", &chain, 1, NULL, &o, &res), -EINVAL);
	assert_int_equal(compact_chain(ud->fd, "f", &chain, 4, NULL, &o, &res), -EINVAL);
	store_chain_free(&chain);
	store_dir_free(d);
	assert_int_equal(count_staging(ud->fd), 0);
}

/* ---- permissions: never wider than any merged layer ---- */

static void test_perms_and(void **state)
{
	static const mode_t modes[] = { 0664, 0644, 0640, 0660, 0600, 0666 };
	struct unit_dir *ud = *state;
	struct compact_result res;
	static struct merge m;
	struct stat st;
	char name[32];

	UNIT_REQUIRE_PAGE_HOLES(ud);
	make_chain(ud->fd, 5, 41, 4, &m);
	for (unsigned i = 0; i < 6; i++) {
		snprintf(name, sizeof(name), i ? "f.%u.diff" : "f.%u.base", i);
		assert_int_equal(fchmodat(ud->fd, name, modes[i], 0), 0);
	}
	assert_int_equal(compact_f(ud->fd, NULL, &res), 0);
	assert_int_equal(fstatat(ud->fd, "f.3.base", &st, 0), 0);
	/* 0664 & 0644 & 0640 & 0660; the kept diffs (0600, 0666) do not count. */
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_uid, geteuid());
	check_merge(ud->fd, "f.3.base", &m);
}

/* Layers of different owners: no file can hold their bytes without
 * widening access; refused, nothing written. Needs root to chown. */
static void test_perms_mixed_owner(void **state)
{
	struct unit_dir *ud = *state;
	struct compact_result res;
	static struct merge m;

	if (geteuid() != 0) {
		print_message("skip: not root, cannot chown a layer\n");
		skip();
	}
	make_chain(ud->fd, 5, 43, 4, &m);
	assert_int_equal(fchownat(ud->fd, "f.2.diff", 12345, 12345, 0), 0);
	assert_int_equal(compact_f(ud->fd, NULL, &res), -EPERM);
	assert_false(res.published);
	assert_non_null(strstr(res.refused, "f.0.base"));
	assert_non_null(strstr(res.refused, "f.2.diff"));
	assert_false(exists(ud->fd, "f.3.base"));
	assert_true(exists(ud->fd, "f.0.base"));
	assert_true(exists(ud->fd, "f.3.diff"));
	assert_int_equal(count_staging(ud->fd), 0);
}

/* ---- checking a chain as opening it would ---- */

/* check_chain_case: f.0.base and f.1.diff as given; the verdict of
 * compact_check_chain() and of compact_chain(), which must agree. */
static void check_case(struct unit_dir *ud, uint64_t diff_size,
		       const struct unit_range *r, size_t n, int want)
{
	static const struct unit_range base = { 0, 4 * UNIT_PAGE };
	struct compact_opts o = { .threshold = 0, .keep = 0 };
	struct compact_result res;
	struct store_dir *d;
	struct store_chain chain;
	struct cache *c = cache_new(8 << 20);
	char why[256];

	unit_sparse_file_c(ud->fd, "f.0.base", SIZE, &base, 1, 1, NULL);
	unit_sparse_file_c(ud->fd, "f.1.diff", diff_size, r, n, 2, NULL);
	resolve_f(ud->fd, &d, &chain);
	assert_int_equal(compact_check_chain(ud->fd, &chain, c, 0, why, sizeof(why)), want);
	if (want)
		assert_true(why[0] != '\0');
	else
		assert_string_equal(why, "");
	if (want) {
		assert_int_equal(compact_chain(ud->fd, "f", &chain, 2, c, &o, &res), want);
		assert_false(res.published);
		assert_false(exists(ud->fd, "f.1.base"));
		assert_true(exists(ud->fd, "f.0.base"));
		assert_true(exists(ud->fd, "f.1.diff"));
		assert_int_equal(count_staging(ud->fd), 0);
	}
	store_chain_free(&chain);
	store_dir_free(d);
	cache_free(c);
}

static void test_check_clean(void **state)
{
	static const struct unit_range r = { 8 * UNIT_PAGE, UNIT_PAGE };

	UNIT_REQUIRE_PAGE_HOLES((struct unit_dir *)*state);
	check_case(*state, SIZE, &r, 1, 0);
}

static void test_check_sizes(void **state)
{
	static const struct unit_range r = { 8 * UNIT_PAGE, UNIT_PAGE };

	UNIT_REQUIRE_PAGE_HOLES((struct unit_dir *)*state);
	check_case(*state, SIZE + UNIT_PAGE, &r, 1, -EIO);
}

static void test_check_dense(void **state)
{
	static const struct unit_range r = { 0, SIZE };

	UNIT_REQUIRE_PAGE_HOLES((struct unit_dir *)*state);
	check_case(*state, SIZE, &r, 1, -EIO);
}

/* ---- the copier on tmpfs ---- */

#define CSIZE (SIZE + 123)	/* not a whole number of pages */

/* Unaligned ranges, an aligned one, and one up to the file's end. */
static const struct unit_range copy_ranges[] = {
	{ 100, 5000 },
	{ 8 * UNIT_PAGE, UNIT_PAGE },
	{ 12 * UNIT_PAGE + 7, 9 * UNIT_PAGE },
	{ 30 * UNIT_PAGE, 3 },
	{ 40 * UNIT_PAGE - 1, UNIT_PAGE + 2 },
	{ 60 * UNIT_PAGE + 5, CSIZE - 60 * UNIT_PAGE - 5 },
};
#define NCOPY (sizeof(copy_ranges) / sizeof(copy_ranges[0]))

static void test_copier_ranges(void **state)
{
	static const struct unit_range all = { 0, CSIZE };
	struct unit_tmpfs *h = *state;
	unsigned char *src = malloc(CSIZE), *want = calloc(1, CSIZE), *got = malloc(CSIZE);

	UNIT_REQUIRE_TMPFS(h);
	assert_non_null(src);
	assert_non_null(want);
	assert_non_null(got);
	unit_sparse_file_c(h->dfd, "src", CSIZE, &all, 1, 7, src);
	for (size_t r = 0; r < NCOPY; r++)
		memcpy(want + copy_ranges[r].off, src + copy_ranges[r].off, copy_ranges[r].len);
	for (int m = COMPACT_PREAD; m <= COMPACT_CLONE_RANGE; m++) {
		struct copier c;
		int in = openat(h->dfd, "src", O_RDONLY | O_CLOEXEC);
		int out = unit_sparse_file(h->dfd, "dst", CSIZE, NULL, 0, 0, NULL);
		uint64_t bytes = 0;

		assert_true(in >= 0);
		assert_int_equal(copier_init(&c, 0, NULL), 0);
		copier_prepare(&c, out, UNIT_PAGE);
		c.method = (enum compact_method)m;
		for (size_t r = 0; r < NCOPY; r++) {
			assert_int_equal(copier_range(&c, in, out, copy_ranges[r].off,
						      copy_ranges[r].len, CSIZE), 0);
			bytes += copy_ranges[r].len;
		}
		assert_int_equal(c.ranges, NCOPY);
		assert_int_equal(c.bytes, bytes);
		assert_true((int)c.method <= m);	/* only ever falls back */
		assert_int_equal(pread(out, got, CSIZE, 0), (ssize_t)CSIZE);
		assert_memory_equal(got, want, CSIZE);
		copier_release(&c);
		copier_release(&c);	/* harmless */
		close(in);
		close(out);
	}
	free(src);
	free(want);
	free(got);
}

/* tmpfs has no FICLONE: the base is copied, its holes kept. */
static void test_copier_base_sparse(void **state)
{
	static const struct unit_range r[] = {
		{ 0, UNIT_PAGE }, { 5 * UNIT_PAGE, 3 * UNIT_PAGE }, { 63 * UNIT_PAGE, UNIT_PAGE },
	};
	struct unit_tmpfs *h = *state;
	struct extent_map *map = NULL;
	static struct merge m;

	UNIT_REQUIRE_TMPFS(h);
	for (int forced = COMPACT_PREAD; forced <= COMPACT_CLONE_RANGE; forced++) {
		struct copier c;
		int in = unit_sparse_file(h->dfd, "base", SIZE, r, 3, 9, m.img);
		int out = openat(h->dfd, "new", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		assert_true(out >= 0);
		assert_int_equal(extent_scan(in, SIZE, &map), 0);
		assert_int_equal(copier_init(&c, 0, NULL), 0);
		copier_prepare(&c, out, UNIT_PAGE);
		c.method = (enum compact_method)forced;
		assert_int_equal(copier_base(&c, in, out, map, SIZE), 0);
		assert_false(c.reflinked);
		assert_int_not_equal(c.method, COMPACT_CLONE_RANGE);
		assert_int_equal(c.bytes, 5 * UNIT_PAGE);
		memset(m.data, 0, sizeof(m.data));
		m.data[0] = m.data[5] = m.data[6] = m.data[7] = m.data[63] = true;
		check_merge(h->dfd, "new", &m);
		copier_release(&c);
		free(map);
		close(in);
		close(out);
	}
}

/* A stop is noticed before the next chunk; the rate limit is kept. */
static void test_copier_stop_rate(void **state)
{
	static const struct unit_range all = { 0, 1u << 20 };
	struct unit_tmpfs *h = *state;
	int stop = 1, in, out;
	struct copier c;

	UNIT_REQUIRE_TMPFS(h);
	unit_sparse_file_c(h->dfd, "src", 1u << 20, &all, 1, 3, NULL);
	in = openat(h->dfd, "src", O_RDONLY | O_CLOEXEC);
	out = unit_sparse_file(h->dfd, "dst", 1u << 20, NULL, 0, 0, NULL);
	assert_true(in >= 0);
	for (int m = COMPACT_PREAD; m <= COMPACT_CLONE_RANGE; m++) {
		assert_int_equal(copier_init(&c, 0, &stop), 0);
		copier_prepare(&c, out, UNIT_PAGE);
		c.method = (enum compact_method)m;
		assert_true(copier_stopped(&c));
		assert_int_equal(copier_range(&c, in, out, 0, 1u << 20, 1u << 20),
				 -ECANCELED);
		assert_int_equal(c.bytes, 0);
		copier_release(&c);
	}
	/* 1 MiB at 4 MiB/s: a quarter of a second at least. */
	assert_int_equal(copier_init(&c, 4u << 20, NULL), 0);
	copier_prepare(&c, out, UNIT_PAGE);
	c.method = COMPACT_PREAD;
	assert_int_equal(copier_range(&c, in, out, 0, 1u << 20, 1u << 20), 0);
	assert_true(copier_elapsed(&c) >= 0.24);
	copier_release(&c);
	close(in);
	close(out);
}

int main(void)
{
#define DIR_TEST(t) cmocka_unit_test_setup_teardown(t, unit_dir_setup, unit_dir_teardown)
#define TMPFS_TEST(t) cmocka_unit_test_setup_teardown(t, unit_tmpfs_setup, unit_tmpfs_teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan),
		cmocka_unit_test(test_superseded),
		DIR_TEST(test_prune),
		DIR_TEST(test_prune_list),
		cmocka_unit_test(test_is_tmp),
		DIR_TEST(test_cleanup),
		cmocka_unit_test(test_method_name),
		DIR_TEST(test_chain),
		DIR_TEST(test_chain_held),
		DIR_TEST(test_no_rename_flags),
		DIR_TEST(test_methods),
		TMPFS_TEST(test_methods_tmpfs),
		DIR_TEST(test_dry_run),
		DIR_TEST(test_bad_nmerge),
		DIR_TEST(test_perms_and),
		DIR_TEST(test_perms_mixed_owner),
		DIR_TEST(test_check_clean),
		DIR_TEST(test_check_sizes),
		DIR_TEST(test_check_dense),
		TMPFS_TEST(test_copier_ranges),
		TMPFS_TEST(test_copier_base_sparse),
		TMPFS_TEST(test_copier_stop_rate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
