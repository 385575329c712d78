/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of access_check(): the kernel's verdict for another user's
 * credentials on open fds, by modes, owners, groups and ACLs, with
 * faccessat2 and with the reopen fallback, and the calling thread's own
 * credentials unchanged afterwards. They need root (to switch credentials
 * and chown files) and skip otherwise. ACLs are set as the raw
 * system.posix_acl_access xattr, so no libacl is needed.
 */
#include "unit.h"

#include <sys/syscall.h>
#include <sys/wait.h>

#include <grp.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/xattr.h>

#include "access.h"

#define USER_A 1234	/* the requester */
#define OWNER 4321	/* another user who owns files */
#define GROUP_G 2345
#define GROUP_H 3456

#define REQUIRE_ROOT() do {						\
	if (geteuid() != 0) {						\
		print_message("skip: access checks need root\n");	\
		skip();							\
	}								\
} while (0)

/* Creates name in ud with mode, owner uid:gid; returns an O_PATH fd. */
static int mkfile(struct unit_dir *ud, const char *name, mode_t mode, uid_t uid,
		  gid_t gid)
{
	int fd = openat(ud->fd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "secret\n", 7), 7);
	assert_int_equal(fchown(fd, uid, gid), 0);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
	fd = openat(ud->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static int check1(uid_t uid, gid_t gid, const gid_t *groups, size_t ng, int fd,
		  int mask)
{
	struct access_cred c = { uid, gid, groups, ng };

	return access_check(&c, &fd, 1, mask);
}

/* The thread's fs ids and groups are the process's own again. */
static void assert_own_creds(void)
{
	gid_t g[64];
	int n = getgroups(64, g);

	assert_int_equal((uid_t)syscall(SYS_setfsuid, -1), geteuid());
	assert_int_equal((gid_t)syscall(SYS_setfsgid, -1), getegid());
	assert_true(n >= 0);
	for (int i = 0; i < n; i++)
		assert_true(g[i] != GROUP_G && g[i] != GROUP_H);
}

static void test_owner_mode(void **state)
{
	struct unit_dir *ud = *state;
	int fd;

	REQUIRE_ROOT();
	fd = mkfile(ud, "private", 0600, OWNER, OWNER);
	assert_int_equal(check1(USER_A, USER_A, NULL, 0, fd, R_OK), -EACCES);
	assert_own_creds();
	assert_int_equal(check1(0, 0, NULL, 0, fd, R_OK), 0);
	assert_int_equal(check1(OWNER, OWNER, NULL, 0, fd, R_OK), 0);
	assert_own_creds();
	close(fd);

	fd = mkfile(ud, "public", 0644, OWNER, OWNER);
	assert_int_equal(check1(USER_A, USER_A, NULL, 0, fd, R_OK), 0);
	/* every fd must pass: one private file among public ones denies */
	{
		int fds[3] = { fd, mkfile(ud, "private2", 0640, OWNER, GROUP_G), fd };
		gid_t g = GROUP_G;
		struct access_cred a = { USER_A, USER_A, NULL, 0 };
		struct access_cred b = { USER_A, USER_A, &g, 1 };

		assert_int_equal(access_check(&a, fds, 3, R_OK), -EACCES);
		assert_int_equal(access_check(&b, fds, 3, R_OK), 0);
		assert_int_equal(access_check(&a, fds, 0, R_OK), 0);
		close(fds[1]);
	}
	assert_own_creds();
	close(fd);
}

/* Mode 0604: the owning group is denied what others get. Dropping a group
 * from the requester would widen access, so groups must be exact. */
static void test_negative_group(void **state)
{
	struct unit_dir *ud = *state;
	gid_t g = GROUP_G;
	int fd;

	REQUIRE_ROOT();
	fd = mkfile(ud, "notgroup", 0604, OWNER, GROUP_G);
	assert_int_equal(check1(USER_A, USER_A, NULL, 0, fd, R_OK), 0);
	assert_int_equal(check1(USER_A, USER_A, &g, 1, fd, R_OK), -EACCES);
	assert_int_equal(check1(USER_A, GROUP_G, NULL, 0, fd, R_OK), -EACCES);
	assert_own_creds();
	close(fd);
}

/* Sets an access ACL on path's file from (tag, perm, id) triples. */
static int set_acl(struct unit_dir *ud, const char *name, const uint32_t *e, size_t n)
{
	unsigned char buf[4 + 8 * 16];
	char path[PATH_MAX + 64];
	uint32_t v = 2;		/* POSIX_ACL_XATTR_VERSION, little endian */

	assert_true(n <= 16);
	memcpy(buf, &v, 4);
	for (size_t i = 0; i < n; i++) {
		uint16_t tag = (uint16_t)e[3 * i], perm = (uint16_t)e[3 * i + 1];
		uint32_t id = e[3 * i + 2];

		memcpy(buf + 4 + 8 * i, &tag, 2);
		memcpy(buf + 6 + 8 * i, &perm, 2);
		memcpy(buf + 8 + 8 * i, &id, 4);
	}
	snprintf(path, sizeof(path), "%s/%s", ud->path, name);
	return setxattr(path, "system.posix_acl_access", buf, 4 + 8 * n, 0);
}

#define ACL_USER_OBJ 0x01
#define ACL_USER 0x02
#define ACL_GROUP_OBJ 0x04
#define ACL_GROUP 0x08
#define ACL_MASK 0x10
#define ACL_OTHER 0x20
#define NOID 0xffffffffu

static void test_acl(void **state)
{
	struct unit_dir *ud = *state;
	/* owner rw, owning group none, group H none, user A r, mask r,
	 * others r */
	const uint32_t acl[] = {
		ACL_USER_OBJ, 6, NOID,
		ACL_USER, 4, USER_A,
		ACL_GROUP_OBJ, 0, NOID,
		ACL_GROUP, 0, GROUP_H,
		ACL_MASK, 4, NOID,
		ACL_OTHER, 4, NOID,
	};
	gid_t h = GROUP_H, g = GROUP_G;
	int fd;

	REQUIRE_ROOT();
	fd = mkfile(ud, "acl", 0644, OWNER, GROUP_G);
	if (set_acl(ud, "acl", acl, 6) < 0) {
		print_message("skip: no POSIX ACLs in %s: %s\n", ud->path,
			      strerror(errno));
		close(fd);
		skip();
	}
	/* user A has a named entry: allowed whatever the groups */
	assert_int_equal(check1(USER_A, USER_A, &h, 1, fd, R_OK), 0);
	/* another user: others r, unless in the owning group or in H */
	assert_int_equal(check1(USER_A + 1, USER_A + 1, NULL, 0, fd, R_OK), 0);
	assert_int_equal(check1(USER_A + 1, USER_A + 1, &h, 1, fd, R_OK), -EACCES);
	assert_int_equal(check1(USER_A + 1, USER_A + 1, &g, 1, fd, R_OK), -EACCES);
	assert_int_equal(check1(USER_A + 1, GROUP_G, NULL, 0, fd, R_OK), -EACCES);
	assert_int_equal(check1(0, 0, NULL, 0, fd, R_OK), 0);
	assert_own_creds();
	close(fd);
}

static void test_dir_search(void **state)
{
	struct unit_dir *ud = *state;
	int fd;

	REQUIRE_ROOT();
	assert_int_equal(mkdirat(ud->fd, "d", 0700), 0);
	assert_int_equal(fchownat(ud->fd, "d", OWNER, OWNER, 0), 0);
	fd = openat(ud->fd, "d", O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(check1(USER_A, USER_A, NULL, 0, fd, X_OK), -EACCES);
	assert_int_equal(check1(OWNER, OWNER, NULL, 0, fd, R_OK | X_OK), 0);
	assert_int_equal(fchmodat(ud->fd, "d", 0711, 0), 0);
	assert_int_equal(check1(USER_A, USER_A, NULL, 0, fd, X_OK), 0);
	assert_int_equal(check1(USER_A, USER_A, NULL, 0, fd, R_OK), -EACCES);
	assert_own_creds();
	close(fd);
}

/* Without faccessat2: reading is checked by reopening, search is refused. */
static void test_fallback(void **state)
{
	struct unit_dir *ud = *state;
	gid_t g = GROUP_G;
	int priv, neg;

	REQUIRE_ROOT();
	priv = mkfile(ud, "private", 0600, OWNER, OWNER);
	neg = mkfile(ud, "notgroup", 0604, OWNER, GROUP_G);
	access_force_fallback(true);
	assert_int_equal(check1(USER_A, USER_A, NULL, 0, priv, R_OK), -EACCES);
	assert_int_equal(check1(0, 0, NULL, 0, priv, R_OK), 0);
	assert_int_equal(check1(USER_A, USER_A, NULL, 0, neg, R_OK), 0);
	assert_int_equal(check1(USER_A, USER_A, &g, 1, neg, R_OK), -EACCES);
	assert_int_equal(check1(0, 0, NULL, 0, neg, X_OK), -EACCES);
	access_force_fallback(false);
	assert_own_creds();
	close(priv);
	close(neg);
}

/* An id the kernel could not map is never checked as anyone. */
static void test_unmapped(void **state)
{
	struct unit_dir *ud = *state;
	int fd;

	REQUIRE_ROOT();
	fd = mkfile(ud, "public", 0644, OWNER, OWNER);
	assert_int_equal(check1((uid_t)-1, USER_A, NULL, 0, fd, R_OK), -EACCES);
	assert_int_equal(check1(USER_A, (gid_t)-1, NULL, 0, fd, R_OK), -EACCES);
	assert_own_creds();
	close(fd);
}

/* While one thread checks as another user, the others keep root's
 * credentials: a thread that opens a 0600 file of another owner in a loop
 * never fails. */
struct opener {
	int dirfd;
	int stop;
	int failures;
	int opens;
};

static void *open_loop(void *arg)
{
	struct opener *o = arg;

	while (!__atomic_load_n(&o->stop, __ATOMIC_RELAXED)) {
		int fd = openat(o->dirfd, "private", O_RDONLY | O_CLOEXEC);

		if (fd < 0)
			o->failures++;
		else
			close(fd);
		o->opens++;
	}
	return NULL;
}

static void test_other_threads(void **state)
{
	struct unit_dir *ud = *state;
	struct opener o = { 0 };
	pthread_t th;
	int fd;

	REQUIRE_ROOT();
	fd = mkfile(ud, "private", 0600, OWNER, OWNER);
	o.dirfd = ud->fd;
	assert_int_equal(pthread_create(&th, NULL, open_loop, &o), 0);
	for (int i = 0; i < 20000; i++)
		assert_int_equal(check1(USER_A, USER_A, NULL, 0, fd, R_OK), -EACCES);
	__atomic_store_n(&o.stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	assert_int_equal(o.failures, 0);
	assert_true(o.opens > 0);
	assert_own_creds();
	close(fd);
}

/*
 * The requester's groups come from /proc/PID/status: the same list
 * getgroups() gives, for this process and for one of its threads (FUSE
 * reports thread ids); "more than cap" asks for a larger array; a process
 * that is gone is -ENOENT or -ESRCH. Many groups make the status file
 * longer than a page, where libfuse 3.14's reader overran its buffer.
 */
static void test_proc_groups(void **state)
{
	gid_t want[256], got[256], many[300];
	int nwant, n;
	pid_t gone;

	(void)state;
	nwant = getgroups(256, want);
	assert_true(nwant >= 0);
	n = access_proc_groups(getpid(), got, 256);
	assert_int_equal(n, nwant);
	for (int i = 0; i < n; i++)
		assert_int_equal(got[i], want[i]);
	n = access_proc_groups((pid_t)syscall(SYS_gettid), got, 256);
	assert_int_equal(n, nwant);
	if (nwant > 0)
		assert_int_equal(access_proc_groups(getpid(), got, 0), nwant);

	/* A child with 300 groups (root only): a status file over 4 KiB. */
	if (geteuid() != 0)
		return;
	for (int i = 0; i < 300; i++)
		many[i] = (gid_t)(50000 + i);
	gone = fork();
	if (gone == 0) {
		if (syscall(SYS_setgroups, 300, many) != 0)
			_exit(1);
		n = access_proc_groups(getpid(), got, 256);
		if (n != 300)
			_exit(2);
		{
			gid_t *all = calloc(300, sizeof(*all));

			if (!all || access_proc_groups(getpid(), all, 300) != 300 ||
			    all[0] != 50000 || all[299] != 50299)
				_exit(3);
			free(all);
		}
		_exit(0);
	}
	assert_true(gone > 0);
	{
		int st;

		assert_int_equal(waitpid(gone, &st, 0), gone);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	/* The child is reaped: its pid is gone. */
	n = access_proc_groups(gone, got, 256);
	assert_true(n == -ENOENT || n == -ESRCH);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_owner_mode, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_negative_group, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_acl, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_dir_search, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_fallback, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_unmapped, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_other_threads, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test(test_proc_groups),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
