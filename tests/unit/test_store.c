/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the store's naming rules (doc/format.md §2): which names are layers,
 * how a directory's layers group by NAME, and which layers form a chain,
 * including the inputs that must make a file unavailable (missing base,
 * overflowing or duplicate <seq>, a symlink in the chain).
 */
#include "unit.h"

#include <dirent.h>

#include "store.h"

/* ---- store_parse_name ---- */

static void expect_layer(const char *fname, size_t name_len, uint64_t seq,
			 enum store_kind kind, bool overflow)
{
	struct store_name sn;

	memset(&sn, 0xee, sizeof(sn));
	if (!store_parse_name(fname, &sn))
		fail_msg("%s: not parsed as a layer", fname);
	assert_int_equal(sn.name_len, name_len);
	assert_true(sn.kind == kind);
	assert_int_equal(sn.overflow, overflow);
	if (!overflow)
		assert_int_equal(sn.seq, seq);
}

static void expect_not_layer(const char *fname)
{
	struct store_name sn;

	if (store_parse_name(fname, &sn))
		fail_msg("%s: parsed as a layer", fname);
}

static void test_parse_valid(void **state)
{
	(void)state;
	expect_layer("memory.bin.0007.diff", 10, 7, STORE_DIFF, false);
	expect_layer("x.0.base", 1, 0, STORE_BASE, false);
	expect_layer("x.000.base", 1, 0, STORE_BASE, false);
	expect_layer("vm.memory.bin.3.diff", 13, 3, STORE_DIFF, false);
	expect_layer("a..1.diff", 2, 1, STORE_DIFF, false);	/* NAME "a." */
	expect_layer(".hidden.2.base", 7, 2, STORE_BASE, false);
	expect_layer("....3.diff", 3, 3, STORE_DIFF, false);	/* NAME "..." */
	expect_layer(".a.0.base", 2, 0, STORE_BASE, false);
	expect_layer("x.123456789.base", 1, 123456789, STORE_BASE, false);
	/* Exactly UINT64_MAX fits, also behind zero padding. */
	expect_layer("x.18446744073709551615.diff", 1, UINT64_MAX, STORE_DIFF, false);
	expect_layer("x.000018446744073709551615.diff", 1, UINT64_MAX,
		     STORE_DIFF, false);
	/* Long zero padding is not an overflow. */
	expect_layer("x.00000000000000000000000000000000000042.base", 1, 42,
		     STORE_BASE, false);
}

static void test_parse_overflow(void **state)
{
	struct store_name sn;

	(void)state;
	expect_layer("x.99999999999999999999999.diff", 1, 0, STORE_DIFF, true);
	expect_layer("x.18446744073709551616.diff", 1, 0, STORE_DIFF, true);
	expect_layer("x.18446744073709551620.base", 1, 0, STORE_BASE, true);
	expect_layer("x.100000000000000000000.base", 1, 0, STORE_BASE, true);
	/* One below the limit in its last digit still fits. */
	expect_layer("x.18446744073709551614.diff", 1, UINT64_MAX - 1,
		     STORE_DIFF, false);
	/* An overflowing seq sorts above everything. */
	assert_true(store_parse_name("x.99999999999999999999999.diff", &sn));
	assert_true(sn.seq == UINT64_MAX);
}

static void test_parse_garbage(void **state)
{
	static const char *const bad[] = {
		"", "x", "base", ".base", "0.base", "x.base", "x.diff",
		".1.base",		/* empty NAME */
		"x.1.bas", "x.1.basee", "x.1.Base", "x.1.DIFF", "x.1.dif",
		"x.1a.diff", "x.a1.diff", "x..diff", "x.-1.diff", "x.+1.diff",
		"x. 1.diff", "x.1 .diff", "x1.diff", "x.1diff", "x.1.diff.tmp",
		".memory.bin.3.diff.tmp", "x.1.diff~", "x.0x1.diff", "1.diff",
		"..1.base", "...2.diff",	/* NAME "." or ".." */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_not_layer(bad[i]);
}

/* ---- store_dir_from_names ---- */

static struct store_dir *dir_of(const char *const *names,
				const unsigned char *types, size_t n)
{
	struct store_dir *d = NULL;

	assert_int_equal(store_dir_from_names(names, types, n, &d), 0);
	assert_non_null(d);
	return d;
}

/*
 * A directory of many NAMEs, their layers and plain entries shuffled:
 * every group holds exactly its layers, in order, is found by its hash,
 * and knows whether a plain entry of its NAME is hidden. Deep chains (few
 * groups for many entries) make the index shrink its hash table.
 */
static void check_many(size_t ngroups, size_t max_diffs)
{
	size_t cap = ngroups * (max_diffs + 3), n = 0, total = 0;
	const char **names = calloc(cap, sizeof(*names));
	char *block = calloc(cap, 32);
	struct store_dir *d;
	uint64_t rng = 42;

	assert_non_null(names);
	assert_non_null(block);
	for (size_t i = 0; i < ngroups; i++) {
		size_t diffs = i % (max_diffs + 1);

		for (size_t s = 0; s <= diffs; s++) {
			snprintf(block + 32 * n, 32, "g%zu.%zu.%s", i, s, s ? "diff" : "base");
			names[n] = block + 32 * n;
			n++;
		}
		total += diffs + 1;
		if (i % 11 == 0) {		/* hidden by NAME g<i> */
			snprintf(block + 32 * n, 32, "g%zu", i);
			names[n] = block + 32 * n;
			n++;
		}
		snprintf(block + 32 * n, 32, "p%zu", i);	/* no NAME */
		names[n] = block + 32 * n;
		n++;
	}
	for (size_t i = n; i > 1; i--) {	/* Fisher-Yates */
		size_t j = (size_t)unit_below(&rng, i);
		const char *t = names[i - 1];

		names[i - 1] = names[j];
		names[j] = t;
	}
	d = dir_of(names, NULL, n);
	assert_int_equal(d->ngroups, ngroups);
	assert_int_equal(d->nentries, n);
	for (size_t i = 0; i < ngroups; i++) {
		char nm[32];
		const struct store_group *g;

		snprintf(nm, sizeof(nm), "g%zu", i);
		g = store_dir_find(d, nm);
		assert_non_null(g);
		assert_string_equal(g->name, nm);
		assert_int_equal(g->nlayers, i % (max_diffs + 1) + 1);
		assert_int_equal(g->shadows_plain, i % 11 == 0);
		for (size_t s = 0; s < g->nlayers; s++) {
			assert_int_equal(g->layers[s].seq, s);
			assert_int_equal(g->layers[s].kind, s ? STORE_DIFF : STORE_BASE);
		}
		total -= g->nlayers;
		snprintf(nm, sizeof(nm), "p%zu", i);
		assert_null(store_dir_find(d, nm));
	}
	assert_int_equal(total, 0);
	assert_null(store_dir_find(d, "g"));
	/* the plain entries called like a NAME, and only they, are hidden */
	for (size_t i = 0; i < d->nentries; i++) {
		const char *nm = d->entries[i].name;
		bool hidden = nm[0] == 'g' && !strchr(nm, '.') &&
			      strtoul(nm + 1, NULL, 10) % 11 == 0;

		assert_int_equal(d->entries[i].named, hidden);
		/* a layer file names its group, a plain entry none */
		if (strchr(nm, '.')) {
			const struct store_group *g;

			assert_true(d->entries[i].group > 0);
			g = &d->groups[d->entries[i].group - 1];
			assert_int_equal(strncmp(g->name, nm, g->name_len), 0);
			assert_int_equal(nm[g->name_len], '.');
		} else {
			assert_int_equal(d->entries[i].group, 0);
		}
	}
	/* the table is never more than half full, nor far too big */
	assert_true(d->mask + 1 >= 2 * d->ngroups);
	assert_true(d->mask + 1 <= 16 || d->mask + 1 <= 8 * d->ngroups);
	store_dir_free(d);
	free(block);
	free(names);
}

/* A layer file is hidden where a NAME is called like it (the NAME of
 * "m.1.base.2.diff" is "m.1.base"); no other entry is. */
static void test_dir_layer_like_name(void **state)
{
	static const char *const names[] = {
		"m.0.base", "m.1.base", "m.1.base.0.base", "m.1.base.2.diff",
		"n.0.base", "m.1.base.2",
	};
	static const bool named[] = { false, true, false, false, false, false };
	struct store_dir *d;

	(void)state;
	d = dir_of(names, NULL, sizeof(names) / sizeof(names[0]));
	assert_int_equal(d->ngroups, 3);
	for (size_t i = 0; i < d->nentries; i++)
		assert_int_equal(d->entries[i].named, named[i]);
	assert_false(store_dir_find(d, "m")->shadows_plain);
	assert_int_equal(store_dir_find(d, "m.1.base")->nlayers, 2);
	store_dir_free(d);
}

static void test_dir_many(void **state)
{
	(void)state;
	check_many(300, 6);
	check_many(20000, 3);
	check_many(40, 300);	/* deep: the hash table is made again smaller */
	check_many(1, 0);
}

static void test_dir_grouping(void **state)
{
	static const char *const names[] = {
		"vm.memory.bin.3.diff", "x.10.diff", "notes.txt", "x.2.diff",
		"x", "vm.1.base", "x.2.base", "vm.memory.bin.2.base", "x.9.diff",
		"a-b.0.base", "a.0.base", "a.b.0.base", "\xc3\xa9t\xc3\xa9.0.base",
		"x.1.bas", "vm.memory.bin",
	};
	/* in the order of each NAME's first layer in the directory */
	static const char *const want_groups[] = {
		"vm.memory.bin", "x", "vm", "a-b", "a", "a.b",
		"\xc3\xa9t\xc3\xa9",
	};
	struct store_dir *d;
	const struct store_group *g;

	(void)state;
	d = dir_of(names, NULL, sizeof(names) / sizeof(names[0]));
	assert_int_equal(d->ngroups, sizeof(want_groups) / sizeof(want_groups[0]));
	for (size_t i = 0; i < d->ngroups; i++) {
		assert_string_equal(d->groups[i].name, want_groups[i]);
		/* every group is found by its hash */
		assert_ptr_equal(store_dir_find(d, want_groups[i]), &d->groups[i]);
	}
	assert_null(store_dir_find(d, "notes.txt"));
	assert_null(store_dir_find(d, "memory.bin"));
	assert_null(store_dir_find(d, ""));
	assert_null(store_dir_find(d, "zzz"));

	/* x: sorted numerically, base before diff at equal seq */
	g = store_dir_find(d, "x");
	assert_non_null(g);
	assert_int_equal(g->nlayers, 4);
	assert_string_equal(g->layers[0].fname, "x.2.base");
	assert_string_equal(g->layers[1].fname, "x.2.diff");
	assert_string_equal(g->layers[2].fname, "x.9.diff");
	assert_string_equal(g->layers[3].fname, "x.10.diff");
	assert_int_equal(g->layers[3].seq, 10);
	assert_true(g->layers[0].kind == STORE_BASE);
	assert_true(g->layers[1].kind == STORE_DIFF);
	assert_int_equal(g->layers[0].d_type, DT_UNKNOWN);
	assert_true(g->shadows_plain);

	g = store_dir_find(d, "vm.memory.bin");
	assert_non_null(g);
	assert_int_equal(g->nlayers, 2);
	assert_string_equal(g->layers[0].fname, "vm.memory.bin.2.base");
	assert_string_equal(g->layers[1].fname, "vm.memory.bin.3.diff");
	assert_true(g->shadows_plain);

	g = store_dir_find(d, "vm");
	assert_non_null(g);
	assert_int_equal(g->nlayers, 1);
	assert_string_equal(g->layers[0].fname, "vm.1.base");
	assert_false(g->shadows_plain);
	assert_false(store_dir_find(d, "a")->shadows_plain);
	store_dir_free(d);
}

static void test_dir_types_and_empty(void **state)
{
	static const char *const names[] = { "m.1.diff", "m.0.base", "m" };
	static const unsigned char types[] = { DT_LNK, DT_REG, DT_DIR };
	static const char *const plain[] = { "a", "b.txt", "c.1.bas" };
	struct store_dir *d;

	(void)state;
	d = dir_of(names, types, 3);
	assert_int_equal(d->ngroups, 1);
	assert_string_equal(d->groups[0].layers[0].fname, "m.0.base");
	assert_int_equal(d->groups[0].layers[0].d_type, DT_REG);
	assert_int_equal(d->groups[0].layers[1].d_type, DT_LNK);
	/* a plain entry of any type called NAME is shadowed */
	assert_true(d->groups[0].shadows_plain);
	store_dir_free(d);

	d = dir_of(NULL, NULL, 0);
	assert_int_equal(d->ngroups, 0);
	assert_null(store_dir_find(d, "m"));
	store_dir_free(d);

	d = dir_of(plain, NULL, 3);
	assert_int_equal(d->ngroups, 0);
	store_dir_free(d);

	store_dir_free(NULL);
	assert_null(store_dir_find(NULL, "m"));
}

/* ---- store_chain_resolve ---- */

/*
 * Resolves the group "x" of names (types may be NULL) and checks the chain
 * is exactly want[] (file names, base first), or that it fails with -EIO
 * and a why containing why_has when want is NULL.
 */
static void check_chain(const char *const *names, const unsigned char *types,
			size_t n, const char *const *want, size_t nwant,
			const char *why_has)
{
	struct store_dir *d = dir_of(names, types, n);
	const struct store_group *g = store_dir_find(d, "x");
	struct store_chain c = { 0 };
	const char *why = NULL;
	int ret;

	assert_non_null(g);
	ret = store_chain_resolve(g, &c, &why);
	if (want) {
		if (ret)
			fail_msg("chain failed: %d %s", ret, why ? why : "(null)");
		assert_int_equal(c.nlayers, nwant);
		for (size_t i = 0; i < nwant; i++) {
			assert_string_equal(c.layers[i]->fname, want[i]);
			/* layers point into the group */
			assert_true(c.layers[i] >= g->layers &&
				    c.layers[i] < g->layers + g->nlayers);
		}
		assert_true(c.layers[0]->kind == STORE_BASE);
		for (size_t i = 1; i < nwant; i++) {
			assert_true(c.layers[i]->kind == STORE_DIFF);
			assert_true(c.layers[i]->seq > c.layers[i - 1]->seq);
		}
		store_chain_free(&c);
		assert_null(c.layers);
		assert_int_equal(c.nlayers, 0);
	} else {
		assert_int_equal(ret, -EIO);
		assert_non_null(why);
		if (!strstr(why, why_has))
			fail_msg("why \"%s\" lacks \"%s\"", why, why_has);
		assert_int_equal(c.nlayers, 0);
		assert_null(c.layers);
	}
	store_dir_free(d);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define CHAIN_OK(names, types, want) \
	check_chain(names, types, N(names), want, N(want), NULL)
#define CHAIN_EIO(names, types, why) \
	check_chain(names, types, N(names), NULL, 0, why)

static void test_chain_simple(void **state)
{
	static const char *const n1[] = { "x.2.diff", "x.0.base", "x.1.diff" };
	static const char *const w1[] = { "x.0.base", "x.1.diff", "x.2.diff" };
	static const char *const n2[] = { "x.5.base" };
	static const char *const w2[] = { "x.5.base" };
	/* gaps in <seq> are allowed, padding compares as a number */
	static const char *const n3[] = { "x.0010.diff", "x.3.base", "x.7.diff",
					  "x.9.diff" };
	static const char *const w3[] = { "x.3.base", "x.7.diff", "x.9.diff",
					  "x.0010.diff" };
	static const char *const n4[] = { "x.18446744073709551615.diff",
					  "x.18446744073709551614.base" };
	static const char *const w4[] = { "x.18446744073709551614.base",
					  "x.18446744073709551615.diff" };

	(void)state;
	CHAIN_OK(n1, NULL, w1);
	CHAIN_OK(n2, NULL, w2);
	CHAIN_OK(n3, NULL, w3);
	CHAIN_OK(n4, NULL, w4);
}

static void test_chain_superseded(void **state)
{
	/* the highest base starts the chain; a diff at its seq is superseded */
	static const char *const n1[] = { "x.0.base", "x.1.diff", "x.2.base",
					  "x.2.diff", "x.3.diff", "x.5.diff" };
	static const char *const w1[] = { "x.2.base", "x.3.diff", "x.5.diff" };
	/* a new full snapshot is a chain by itself */
	static const char *const n2[] = { "x.0.base", "x.1.diff", "x.2.diff",
					  "x.3.base" };
	static const char *const w2[] = { "x.3.base" };
	/* old diffs without any base below them are superseded, not fatal */
	static const char *const n3[] = { "x.1.diff", "x.2.diff", "x.4.base",
					  "x.6.diff" };
	static const char *const w3[] = { "x.4.base", "x.6.diff" };
	/* duplicates among superseded layers are ignored with them */
	static const char *const n4[] = { "x.1.diff", "x.01.diff", "x.0.base",
					  "x.00.base", "x.2.base", "x.02.diff" };
	static const char *const w4[] = { "x.2.base" };

	(void)state;
	CHAIN_OK(n1, NULL, w1);
	CHAIN_OK(n2, NULL, w2);
	CHAIN_OK(n3, NULL, w3);
	CHAIN_OK(n4, NULL, w4);
}

static void test_chain_missing_base(void **state)
{
	static const char *const n1[] = { "x.1.diff", "x.2.diff" };
	static const char *const n2[] = { "x.0.diff" };

	(void)state;
	CHAIN_EIO(n1, NULL, "no base");
	CHAIN_EIO(n2, NULL, "no base");
}

static void test_chain_overflow(void **state)
{
	static const char *const n1[] = { "x.0.base", "x.1.diff",
					  "x.99999999999999999999999.diff" };
	static const char *const n2[] = { "x.18446744073709551616.base" };
	/* even beside a newer-looking base, the file is unavailable */
	static const char *const n3[] = { "x.99999999999999999999999.diff",
					  "x.99999999999999999999999.base" };

	(void)state;
	CHAIN_EIO(n1, NULL, "64 bits");
	CHAIN_EIO(n2, NULL, "64 bits");
	CHAIN_EIO(n3, NULL, "64 bits");
}

static void test_chain_duplicates(void **state)
{
	static const char *const n1[] = { "x.0.base", "x.3.diff", "x.03.diff" };
	static const char *const n2[] = { "x.0.base", "x.1.diff", "x.01.diff",
					  "x.2.diff" };
	static const char *const n3[] = { "x.1.base", "x.01.base", "x.2.diff" };
	static const char *const n4[] = { "x.0.base", "x.1.diff", "x.2.diff",
					  "x.002.diff" };

	(void)state;
	CHAIN_EIO(n1, NULL, "same <seq>");
	CHAIN_EIO(n2, NULL, "same <seq>");
	CHAIN_EIO(n3, NULL, "same <seq>");
	CHAIN_EIO(n4, NULL, "same <seq>");
}

static void test_chain_types(void **state)
{
	static const char *const n1[] = { "x.0.base", "x.1.diff", "x.2.diff" };
	static const unsigned char t1[] = { DT_REG, DT_LNK, DT_REG };
	static const unsigned char t2[] = { DT_LNK, DT_REG, DT_REG };
	static const unsigned char t3[] = { DT_REG, DT_REG, DT_DIR };
	static const unsigned char t4[] = { DT_REG, DT_UNKNOWN, DT_UNKNOWN };
	static const char *const w1[] = { "x.0.base", "x.1.diff", "x.2.diff" };
	/* a superseded symlink (or directory) is harmless */
	static const char *const n5[] = { "x.0.base", "x.1.diff", "x.2.base",
					  "x.3.diff" };
	static const unsigned char t5[] = { DT_LNK, DT_DIR, DT_REG, DT_REG };
	static const char *const w5[] = { "x.2.base", "x.3.diff" };

	(void)state;
	CHAIN_EIO(n1, t1, "symbolic link");
	CHAIN_EIO(n1, t2, "symbolic link");
	CHAIN_EIO(n1, t3, "not a regular file");
	CHAIN_OK(n1, t4, w1);	/* DT_UNKNOWN is checked again at open */
	CHAIN_OK(n5, t5, w5);
}

/* ---- store_dir_scan on a real directory ---- */

static void touch(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	close(fd);
}

/*
 * A directory big enough to be read by a reader thread (store.c: from 128
 * KiB of directory) indexes as the same names given as a list do: every
 * NAME with its layers in order, plain entries named like a NAME hidden.
 */
static void test_dir_scan_big(void **state)
{
	struct unit_dir *ud = *state;
	enum { N = 9000 };
	const char **names = calloc(2 * N, sizeof(*names));
	char *block = calloc(2 * N, 24);
	struct store_dir *d, *ref;
	struct stat st;
	size_t n = 0;

	assert_non_null(names);
	assert_non_null(block);
	for (size_t i = 0; i < N; i++) {
		char *nm = block + 24 * n;

		if (i % 3 == 2)		/* the diff of NAME i - 1 */
			snprintf(nm, 24, "b%zu.%zu.diff", i - 1, i % 7 + 1);
		else if (i % 97 == 0)	/* a plain entry hidden by NAME i - 3 */
			snprintf(nm, 24, "b%zu", i - 3);
		else
			snprintf(nm, 24, "b%zu.0.base", i);
		touch(ud->fd, nm);
		names[n++] = nm;
	}
	assert_int_equal(fstat(ud->fd, &st), 0);
	if (st.st_size < (128 << 10))
		print_message("directory of %lld bytes: read without the thread\n",
			      (long long)st.st_size);
	assert_int_equal(store_dir_scan(ud->fd, &d), 0);
	ref = dir_of(names, NULL, n);
	assert_int_equal(d->nentries, n + 2);	/* . and .. */
	assert_int_equal(d->ngroups, ref->ngroups);
	for (size_t g = 0; g < ref->ngroups; g++) {
		const struct store_group *want = &ref->groups[g];
		const struct store_group *got = store_dir_find(d, want->name);

		assert_non_null(got);
		assert_int_equal(got->nlayers, want->nlayers);
		assert_int_equal(got->shadows_plain, want->shadows_plain);
		for (size_t l = 0; l < want->nlayers; l++)
			assert_string_equal(got->layers[l].fname, want->layers[l].fname);
	}
	for (size_t i = 0; i < d->nentries; i++) {
		const char *nm = d->entries[i].name;

		assert_int_equal(d->entries[i].named, store_dir_find(d, nm) != NULL);
	}
	store_dir_free(ref);
	store_dir_free(d);
	free(block);
	free(names);
}

static void test_dir_scan(void **state)
{
	struct unit_dir *ud = *state;
	struct store_dir *d = NULL, *d2 = NULL;
	const struct store_group *g;
	struct store_chain c = { 0 };
	const char *why = NULL;
	bool have_dtype;
	int fd;

	touch(ud->fd, "mem.0.base");
	touch(ud->fd, "mem.1.diff");
	touch(ud->fd, "mem.03.diff");
	touch(ud->fd, "mem");			/* plain file shadowed */
	touch(ud->fd, ".mem.4.diff.tmp");	/* unpublished */
	touch(ud->fd, "vmstate.bin");
	assert_int_equal(symlinkat("mem.1.diff", ud->fd, "mem.2.diff"), 0);
	assert_int_equal(symlinkat("/etc/passwd", ud->fd, "link.0.base"), 0);
	assert_int_equal(mkdirat(ud->fd, "sub.0.base", 0755), 0);
	touch(ud->fd, "old.0.base");
	assert_int_equal(symlinkat("old.0.base", ud->fd, "old.0.diff"), 0);
	touch(ud->fd, "old.1.base");
	touch(ud->fd, "..1.base");		/* never a layer of NAME "." */
	touch(ud->fd, "...1.diff");

	/* move the fd's position: the scan must not depend on it */
	{
		int dup_fd = dup(ud->fd);
		DIR *dd = fdopendir(dup_fd);

		assert_non_null(dd);
		while (readdir(dd))
			;
		closedir(dd);
	}
	assert_int_equal(store_dir_scan(ud->fd, &d), 0);
	assert_int_equal(d->ngroups, 4);
	{	/* in the directory's order, which the filesystem picks */
		static const char *const want[] = { "link", "mem", "old", "sub" };

		for (size_t i = 0; i < 4; i++) {
			const struct store_group *w = store_dir_find(d, want[i]);

			assert_non_null(w);
			assert_string_equal(w->name, want[i]);
		}
	}
	assert_null(store_dir_find(d, "."));
	assert_null(store_dir_find(d, ".."));

	g = store_dir_find(d, "mem");
	assert_non_null(g);
	assert_int_equal(g->nlayers, 4);
	assert_true(g->shadows_plain);
	assert_string_equal(g->layers[0].fname, "mem.0.base");
	assert_string_equal(g->layers[1].fname, "mem.1.diff");
	assert_string_equal(g->layers[2].fname, "mem.2.diff");
	assert_string_equal(g->layers[3].fname, "mem.03.diff");
	assert_int_equal(g->layers[3].seq, 3);
	assert_false(store_dir_find(d, "old")->shadows_plain);

	have_dtype = g->layers[0].d_type != DT_UNKNOWN;
	if (have_dtype) {
		assert_int_equal(g->layers[0].d_type, DT_REG);
		assert_int_equal(g->layers[2].d_type, DT_LNK);
		assert_int_equal(store_dir_find(d, "sub")->layers[0].d_type, DT_DIR);
		assert_int_equal(store_dir_find(d, "link")->layers[0].d_type, DT_LNK);

		/* the symlink in mem's chain makes it unavailable */
		assert_int_equal(store_chain_resolve(g, &c, &why), -EIO);
		assert_non_null(strstr(why, "symbolic link"));
		why = NULL;
		assert_int_equal(store_chain_resolve(store_dir_find(d, "sub"),
						     &c, &why), -EIO);
		assert_non_null(strstr(why, "not a regular file"));
	} else {
		print_message("filesystem gives no d_type; type checks skipped\n");
	}
	/* old: the symlink is superseded by old.1.base */
	assert_int_equal(store_chain_resolve(store_dir_find(d, "old"), &c, &why), 0);
	assert_int_equal(c.nlayers, 1);
	assert_string_equal(c.layers[0]->fname, "old.1.base");
	store_chain_free(&c);

	/* a second scan of the same fd gives the same index */
	assert_int_equal(store_dir_scan(ud->fd, &d2), 0);
	assert_int_equal(d2->ngroups, d->ngroups);
	for (size_t i = 0; i < d->ngroups; i++) {
		assert_string_equal(d2->groups[i].name, d->groups[i].name);
		assert_int_equal(d2->groups[i].nlayers, d->groups[i].nlayers);
	}
	store_dir_free(d2);
	store_dir_free(d);

	/* an empty directory, and a file that is not one */
	assert_int_equal(mkdirat(ud->fd, "empty", 0755), 0);
	fd = openat(ud->fd, "empty", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(store_dir_scan(fd, &d), 0);
	assert_int_equal(d->ngroups, 0);
	store_dir_free(d);
	close(fd);
	fd = openat(ud->fd, "vmstate.bin", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	d = NULL;
	assert_int_equal(store_dir_scan(fd, &d), -ENOTDIR);
	assert_null(d);
	close(fd);
	assert_int_equal(store_dir_scan(-1, &d), -EBADF);
}

/* A chain rebuilt from the names a version remembers owns its layers,
 * parsed like a directory scan would parse them. */
static void test_chain_from_names(void **state)
{
	const char *names[] = { "mem.0007.base", "mem.8.diff", "mem.10.diff" };
	const char *bad[] = { "mem.1.base", "notalayer" };
	struct store_chain c;

	(void)state;
	assert_int_equal(store_chain_from_names(names, 3, &c), 0);
	assert_int_equal(c.nlayers, 3);
	assert_string_equal(c.layers[0]->fname, "mem.0007.base");
	assert_ptr_not_equal(c.layers[0]->fname, names[0]);	/* a copy */
	assert_int_equal(c.layers[0]->seq, 7);
	assert_int_equal(c.layers[0]->kind, STORE_BASE);
	assert_int_equal(c.layers[2]->seq, 10);
	assert_int_equal(c.layers[2]->kind, STORE_DIFF);
	store_chain_free(&c);
	assert_null(c.layers);
	assert_int_equal(store_chain_from_names(bad, 2, &c), -EINVAL);
	assert_null(c.layers);
	assert_int_equal(store_chain_from_names(names, 0, &c), 0);
	store_chain_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_overflow),
		cmocka_unit_test(test_parse_garbage),
		cmocka_unit_test(test_dir_grouping),
		cmocka_unit_test(test_dir_layer_like_name),
		cmocka_unit_test(test_dir_types_and_empty),
		cmocka_unit_test(test_dir_many),
		cmocka_unit_test(test_chain_simple),
		cmocka_unit_test(test_chain_superseded),
		cmocka_unit_test(test_chain_missing_base),
		cmocka_unit_test(test_chain_overflow),
		cmocka_unit_test(test_chain_duplicates),
		cmocka_unit_test(test_chain_types),
		cmocka_unit_test(test_chain_from_names),
		cmocka_unit_test_setup_teardown(test_dir_scan_big, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_dir_scan, unit_dir_setup,
						unit_dir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
