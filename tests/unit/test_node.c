/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the node family (node.h, names.h, version.h) without FUSE:
 * a table over a real STORE in a temp directory, driven as fuse_ops would.
 * Version choice (same chain, same node; a new diff, a new inode; the old
 * version keeps its own bytes), the stale-open check and its retry rule,
 * retirement of names that left the store, the rollback rules of unlink,
 * what a listing shows and hides and the inode numbers it gives, and a
 * directory moved out of STORE.
 * ASan's leak check at exit covers forget and table teardown.
 */
#include "unit.h"

#include <dirent.h>

#include "cache.h"
#include "names.h"
#include "node.h"
#include "version.h"
#include "view.h"

#define P UNIT_PAGE
#define SIZE (16 * P)

struct fix {
	struct unit_dir *ud;
	struct cache *cache;
	struct view_env *env;
	struct node_table *t;
	char store[PATH_MAX + 16];
	int sfd;
};

/* A layer of SIZE bytes in the store: a base full of byte fill, or a diff
 * with pages[] (n of them) written with byte fill. */
static void layer(struct fix *f, const char *name, int fill, const unsigned *pages,
		  size_t n)
{
	unsigned char buf[P];
	int fd = openat(f->sfd, name, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SIZE), 0);
	memset(buf, fill, sizeof(buf));
	if (!pages) {
		for (unsigned p = 0; p < SIZE / P; p++)
			unit_pwrite_all(fd, buf, P, (uint64_t)p * P);
	}
	for (size_t i = 0; pages && i < n; i++)
		unit_pwrite_all(fd, buf, P, (uint64_t)pages[i] * P);
	close(fd);
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));

	if (!f || !(f->ud = unit_dir_new()))
		return -1;
	snprintf(f->store, sizeof(f->store), "%s/store", f->ud->path);
	if (mkdir(f->store, 0755) < 0)
		return -1;
	f->sfd = open(f->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	f->cache = cache_new(1 << 20);
	f->env = f->cache ? view_env_new(f->cache, P) : NULL;
	if (f->sfd < 0 || !f->env)
		return -1;
	if (node_table_new(f->store, f->env, NULL, NULL, &f->t) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;

	node_table_free(f->t);
	view_env_free(f->env);
	cache_free(f->cache);
	close(f->sfd);
	unit_dir_free(f->ud);
	free(f);
	return 0;
}

/* The byte a view of n reads at off (through its pieces, with pread). */
static int view_byte(struct fix *f, struct node *n, uint64_t off)
{
	struct view *v;
	struct view_piece p;
	unsigned char c = 0;

	assert_int_equal(node_view(f->t, n, &v), 0);
	assert_int_equal(view_map_read(v, off, 1, &p, 1), 1);
	if (p.fd >= 0)
		assert_int_equal(pread(p.fd, &c, 1, (off_t)p.off), 1);
	view_put(v);
	return c;
}

static struct node *lookup(struct fix *f, const char *name, uint32_t pid, struct stat *st)
{
	struct node *n = NULL;
	struct stat sb;

	assert_int_equal(node_lookup(f->t, node_root(f->t), name, pid, &n, st ? st : &sb), 0);
	return n;
}

static void test_versions(void **state)
{
	struct fix *f = *state;
	static const unsigned d1[] = { 1, 3 }, d2[] = { 3 };
	struct node *a, *b, *c, *plain;
	struct stat sa, sb, sc, sp;

	layer(f, "mem.0.base", 0x11, NULL, 0);
	layer(f, "mem.1.diff", 0x22, d1, 2);
	assert_int_equal(chmod(f->store, 0755), 0);
	layer(f, "plain.bin", 0x33, NULL, 0);

	a = lookup(f, "mem", 0, &sa);
	assert_int_equal(a->kind, NODE_VIEW);
	assert_true((uint64_t)sa.st_ino >= 1ULL << 63);
	assert_int_equal(sa.st_size, SIZE);
	assert_int_equal(sa.st_mode & 0777, 0444);	/* no write bits */
	plain = lookup(f, "plain.bin", 0, &sp);
	assert_int_equal(plain->kind, NODE_FILE);
	assert_true((uint64_t)sp.st_ino < 1ULL << 63);

	/* The same chain is the same node. */
	b = lookup(f, "mem", 0, &sb);
	assert_ptr_equal(a, b);
	assert_int_equal(sa.st_ino, sb.st_ino);
	assert_int_equal(view_byte(f, a, 0), 0x11);
	assert_int_equal(view_byte(f, a, 3 * P + 5), 0x22);

	/* A chmod is not a new chain (identity is what a rewrite changes). */
	assert_int_equal(fchmodat(f->sfd, "mem.1.diff", 0600, 0), 0);
	b = lookup(f, "mem", 0, &sb);
	assert_ptr_equal(a, b);

	/* A new diff: a new version with a new inode; the old one still
	 * serves its own bytes, and its opens are stale. */
	layer(f, "mem.2.diff", 0x44, d2, 1);
	c = lookup(f, "mem", 0, &sc);
	assert_ptr_not_equal(a, c);
	assert_int_not_equal(sa.st_ino, sc.st_ino);
	assert_int_equal(view_byte(f, c, 3 * P), 0x44);
	assert_int_equal(view_byte(f, a, 3 * P), 0x22);
	assert_int_equal(view_byte(f, c, P), 0x22);
	assert_int_equal(node_version_check(f->t, a, 0), -ESTALE);
	assert_int_equal(node_version_check(f->t, c, 0), 0);

	/* Rollback of the new diff: a lookup makes the old chain a version
	 * again (a new inode: versions are never reused). */
	assert_int_equal(unlinkat(f->sfd, "mem.2.diff", 0), 0);
	b = lookup(f, "mem", 0, &sb);
	assert_ptr_not_equal(b, c);
	assert_int_equal(view_byte(f, b, 3 * P), 0x22);
	assert_int_equal(node_version_check(f->t, c, 0), -ESTALE);

	node_forget(f->t, a, 3);
	node_forget(f->t, b, 1);
	node_forget(f->t, c, 1);
	node_forget(f->t, plain, 1);
}

/* The kernel's retry of a stale open: the thread that got ESTALE looks the
 * name up again, and may open what that lookup found even if the chain
 * moved on once more; another thread may not. */
static void test_retry_rule(void **state)
{
	struct fix *f = *state;
	static const unsigned d[] = { 2 };
	struct node *old, *mid, *cur;

	layer(f, "vm.0.base", 0x10, NULL, 0);
	old = lookup(f, "vm", 0, NULL);
	layer(f, "vm.1.diff", 0x20, d, 1);
	assert_int_equal(node_version_check(f->t, old, 42), -ESTALE);
	mid = lookup(f, "vm", 42, NULL);	/* the retry's lookup */
	assert_ptr_not_equal(mid, old);
	layer(f, "vm.2.diff", 0x30, d, 1);	/* the chain moves on again */
	assert_int_equal(node_version_check(f->t, mid, 43), -ESTALE);
	assert_int_equal(node_version_check(f->t, mid, 42), 0);
	/* One open per retry. */
	assert_int_equal(node_version_check(f->t, mid, 42), -ESTALE);
	cur = lookup(f, "vm", 0, NULL);
	assert_int_equal(node_version_check(f->t, cur, 7), 0);
	node_forget(f->t, old, 1);
	node_forget(f->t, mid, 1);
	node_forget(f->t, cur, 1);
}

static void test_unlink_rules(void **state)
{
	struct fix *f = *state;
	static const unsigned d[] = { 0 };
	struct node *root = node_root(f->t), *n;
	struct stat st;

	layer(f, "m.0.base", 1, NULL, 0);
	layer(f, "m.1.diff", 2, d, 1);
	layer(f, "m.2.diff", 3, d, 1);
	layer(f, "plain", 4, NULL, 0);
	assert_int_equal(node_unlink(f->t, root, "m.1.diff"), -EBUSY);
	assert_int_equal(node_unlink(f->t, root, "m.0.base"), -EBUSY);
	assert_int_equal(node_unlink(f->t, root, "plain"), -EROFS);
	assert_int_equal(node_unlink(f->t, root, "m"), -EROFS);
	assert_int_equal(node_unlink(f->t, root, "m.9.diff"), -ENOENT);
	assert_int_equal(node_unlink(f->t, root, "m.2.diff"), 0);
	assert_int_equal(fstatat(f->sfd, "m.2.diff", &st, 0), -1);
	assert_int_equal(node_unlink(f->t, root, "m.1.diff"), 0);
	/* Only a base left: nothing more to roll back. */
	assert_int_equal(node_unlink(f->t, root, "m.0.base"), -EBUSY);
	n = lookup(f, "m", 0, &st);
	assert_int_equal(view_byte(f, n, 0), 1);
	node_forget(f->t, n, 1);
}

/* How many times l shows name; its entry in *de. */
static size_t listed_as(const struct node_listing *l, const char *name,
			struct node_dirent *de)
{
	struct node_dirent e;
	size_t seen = 0;

	for (size_t i = 0; i < l->count; i++) {
		if (node_listing_get(l, i, &e) && strcmp(e.name, name) == 0) {
			seen++;
			if (de)
				*de = e;
		}
	}
	return seen;
}

static bool listed(const struct node_listing *l, const char *name)
{
	return listed_as(l, name, NULL) > 0;
}

static void test_listing(void **state)
{
	struct fix *f = *state;
	struct node_listing l;
	struct node_dirent de;
	struct node *n;
	struct stat st;
	int fd;

	layer(f, "disk.0.base", 1, NULL, 0);
	layer(f, "disk", 9, NULL, 0);		/* hidden by the layered NAME */
	fd = openat(f->sfd, ".snapfs-compact.0123456789abcdef.77", O_CREAT | O_WRONLY, 0600);
	close(fd);
	fd = openat(f->sfd, ".snapfs-compact.notes", O_CREAT | O_WRONLY, 0600);
	close(fd);
	assert_int_equal(node_list_dir(f->t, node_root(f->t), &l), 0);
	assert_true(listed(&l, "disk"));
	assert_true(listed(&l, "disk.0.base"));
	assert_true(listed(&l, ".snapfs-compact.notes"));
	assert_false(listed(&l, ".snapfs-compact.0123456789abcdef.77"));
	/* . and .. as STORE lists them; plain entries with STORE's inode
	 * numbers and types */
	assert_true(listed(&l, "."));
	assert_true(listed(&l, ".."));
	assert_int_equal(fstatat(f->sfd, "disk.0.base", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(listed_as(&l, "disk", &de), 1);	/* once, as the view */
	assert_int_equal(de.d_type, DT_REG);
	assert_int_equal(listed_as(&l, "disk.0.base", &de), 1);
	assert_int_equal(de.ino, st.st_ino);
	assert_true(de.d_type == DT_REG || de.d_type == DT_UNKNOWN);
	{
		/* A listing stays as taken while the directory's index moves
		 * on: it keeps the index it lists (ASan checks the names). */
		struct node_listing l2;

		layer(f, "late.0.base", 2, NULL, 0);
		assert_int_equal(node_list_dir(f->t, node_root(f->t), &l2), 0);
		assert_ptr_not_equal(l2.idx, l.idx);
		assert_true(listed(&l2, "late"));
		assert_false(listed(&l, "late"));
		assert_false(listed(&l, "late.0.base"));
		node_listing_free(&l2);
		assert_int_equal(listed_as(&l, "disk", NULL), 1);
		assert_true(listed(&l, "disk.0.base"));
	}
	node_listing_free(&l);
	/* The leftover staging file went at the first look; the user's
	 * file stayed. */
	assert_int_equal(fstatat(f->sfd, ".snapfs-compact.0123456789abcdef.77", &st, 0), -1);
	assert_int_equal(fstatat(f->sfd, ".snapfs-compact.notes", &st, 0), 0);
	assert_int_equal(node_lookup(f->t, node_root(f->t), ".snapfs-compact.0123456789abcdef.77",
				     0, &n, &st), -ENOENT);
	n = lookup(f, "disk", 0, &st);
	assert_int_equal(n->kind, NODE_VIEW);
	node_forget(f->t, n, 1);
}

/* The inode number dir's listing shows for name. */
static uint64_t listed_ino(struct fix *f, struct node *dir, const char *name)
{
	struct node_listing l;
	struct node_dirent de = { 0 };

	assert_int_equal(node_list_dir(f->t, dir, &l), 0);
	assert_int_equal(listed_as(&l, name, &de), 1);
	node_listing_free(&l);
	assert_true(de.ino != 0);
	return de.ino;
}

/* A listing gives layered names the inode numbers their versions have,
 * or the ones the next lookup will give them, without making versions; a
 * promise survives a rescan for another name's sake and is dropped when
 * the chain changes. */
static void test_listed_ino(void **state)
{
	struct fix *f = *state;
	static const unsigned d1[] = { 2 };
	struct node *root = node_root(f->t), *a, *b, *b2, *c, *gone;
	uint64_t ia, ib, ib2;
	struct stat st;

	layer(f, "a.0.base", 1, NULL, 0);
	layer(f, "b.0.base", 2, NULL, 0);
	layer(f, "b.1.diff", 3, d1, 1);
	ia = listed_ino(f, root, "a");
	ib = listed_ino(f, root, "b");
	assert_true(ia != ib);
	assert_int_equal(listed_ino(f, root, "a"), ia);	/* promised once */
	a = lookup(f, "a", 0, &st);
	assert_int_equal(st.st_ino, ia);
	assert_int_equal(listed_ino(f, root, "a"), ia);	/* now a's version */

	/* A new name rescans the directory: b keeps its promise. */
	layer(f, "c.0.base", 4, NULL, 0);
	assert_int_equal(listed_ino(f, root, "b"), ib);
	b = lookup(f, "b", 0, &st);
	assert_int_equal(st.st_ino, ib);
	assert_int_equal(view_byte(f, b, 2 * P), 3);

	/* A new diff is a new chain: a new number, listed as looked up. */
	layer(f, "b.2.diff", 5, d1, 1);
	ib2 = listed_ino(f, root, "b");
	assert_true(ib2 != ib && ib2 != ia);
	b2 = lookup(f, "b", 0, &st);
	assert_int_equal(st.st_ino, ib2);
	assert_int_equal(view_byte(f, b2, 2 * P), 5);

	/* A name never listed takes a number no listing gave out. */
	c = lookup(f, "c", 0, &st);
	assert_true(st.st_ino != ia && st.st_ino != ib && st.st_ino != ib2);

	/* A promise nobody took goes with its name. */
	layer(f, "d.0.base", 6, NULL, 0);
	(void)listed_ino(f, root, "d");
	assert_int_equal(unlinkat(f->sfd, "d.0.base", 0), 0);
	assert_int_equal(node_lookup(f->t, root, "d", 0, &gone, &st), -ENOENT);
	c = lookup(f, "c", 0, &st);
	node_forget(f->t, c, 2);
	node_forget(f->t, b2, 1);
	node_forget(f->t, b, 1);
	node_forget(f->t, a, 1);
}

/* A name whose layers all left the store is gone, and its version with it
 * once the kernel forgets it (ASan would report the node otherwise). */
static void test_retire(void **state)
{
	struct fix *f = *state;
	struct node *n;
	struct stat st;

	layer(f, "gone.0.base", 5, NULL, 0);
	n = lookup(f, "gone", 0, &st);
	assert_int_equal(unlinkat(f->sfd, "gone.0.base", 0), 0);
	assert_int_equal(node_lookup(f->t, node_root(f->t), "gone", 0, &n, &st), -ENOENT);
	node_forget(f->t, n, 1);
}

/* A directory moved out of STORE answers ESTALE, and nothing there is
 * listed, looked up or rolled back. */
static void test_moved_out(void **state)
{
	struct fix *f = *state;
	static const unsigned d[] = { 1 };
	char sub[PATH_MAX + 32], out[PATH_MAX + 32];
	struct node *dir, *n;
	struct node_listing l;
	struct stat st;
	int dfd;

	snprintf(sub, sizeof(sub), "%s/vm1", f->store);
	snprintf(out, sizeof(out), "%s/elsewhere", f->ud->path);
	assert_int_equal(mkdir(sub, 0755), 0);
	dfd = open(sub, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	{
		int keep = f->sfd;

		f->sfd = dfd;
		layer(f, "m.0.base", 1, NULL, 0);
		layer(f, "m.1.diff", 2, d, 1);
		f->sfd = keep;
	}
	dir = lookup(f, "vm1", 0, &st);
	n = NULL;
	assert_int_equal(node_lookup(f->t, dir, "m", 0, &n, &st), 0);
	node_forget(f->t, n, 1);
	assert_int_equal(rename(sub, out), 0);
	assert_int_equal(node_lookup(f->t, dir, "m", 0, &n, &st), -ESTALE);
	assert_int_equal(node_list_dir(f->t, dir, &l), -ESTALE);
	assert_int_equal(node_unlink(f->t, dir, "m.1.diff"), -ESTALE);
	assert_int_equal(fstatat(dfd, "m.1.diff", &st, 0), 0);	/* still there */
	close(dfd);
	node_forget(f->t, dir, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_versions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_rule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unlink_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listed_ino, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retire, setup, teardown),
		cmocka_unit_test_setup_teardown(test_moved_out, setup, teardown),
	};

	return cmocka_run_group_tests_name("node", tests, NULL, NULL);
}
