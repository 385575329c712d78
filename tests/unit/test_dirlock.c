/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of the locks of a STORE directory beyond the flock that
 * test_rollback covers (dirlock.h): the record lock on byte 0 of the lock
 * file that joins the rollback lock (another host's holder is a record lock
 * there, played here by another open file description), the compaction lock
 * of a chain (one holder; other chains and rollbacks unaffected; it dies
 * with a holder killed by SIGKILL), the lock file itself (made once, empty,
 * the directory's write bits), and the mark of a live staging file that
 * keeps compact_cleanup() off it.
 */
#include "unit.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "compact.h"
#include "dirlock.h"

/* A record write lock on byte off of the directory's lock file, held by a
 * new open file description (as an NFS server holds another host's).
 * Returns its fd (closing it releases the lock), or -1 if refused. */
static int foreign_lock(int dirfd, long long off)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off,
			    .l_len = 1 };
	int fd = openat(dirfd, DIRLOCK_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void test_rollback_lock_is_record_lock_too(void **state)
{
	struct unit_dir *ud = *state;
	struct chainlock cl;
	struct dirlock a;
	int other;

	/* No lock file yet: a rollback creates nothing, the flock alone. */
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &a), 0);
	assert_int_equal(a.lockfd, -1);
	dirlock_release(&a);
	assert_int_equal(faccessat(ud->fd, DIRLOCK_FILE, F_OK, AT_SYMLINK_NOFOLLOW), -1);
	/* A compactor's first try makes it. */
	assert_int_equal(chainlock_try(ud->fd, "memory.bin", &cl), 0);
	chainlock_release(&cl);
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &a), 0);
	assert_true(a.lockfd >= 0);
	/* Byte 0 is taken: another host could not take it either. */
	assert_int_equal(foreign_lock(ud->fd, 0), -1);
	dirlock_release(&a);
	assert_int_equal(a.lockfd, -1);
	other = foreign_lock(ud->fd, 0);
	assert_true(other >= 0);
	/* Held elsewhere (no flock here at all): the rollback lock waits. */
	assert_int_equal(dirlock_acquire(ud->fd, 50, NULL, &a), -EWOULDBLOCK);
	assert_int_equal(a.fd, -1);
	assert_int_equal(a.lockfd, -1);
	close(other);
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &a), 0);
	dirlock_release(&a);
}

static void test_lock_file(void **state)
{
	struct unit_dir *ud = *state;
	struct chainlock cl;
	struct dirlock a;
	struct stat st;

	assert_int_equal(fchmod(ud->fd, 0775), 0);
	assert_int_equal(chainlock_try(ud->fd, "memory.bin", &cl), 0);
	chainlock_release(&cl);
	assert_int_equal(fstatat(ud->fd, DIRLOCK_FILE, &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 0);
	/* Whoever may remove a diff in the directory may lock it. */
	assert_int_equal(st.st_mode & 0777, 0664);
	assert_true(dirlock_is_lockfile(DIRLOCK_FILE));
	assert_false(dirlock_is_lockfile(DIRLOCK_FILE "x"));
	assert_false(dirlock_is_lockfile("mem.1.diff"));
	/* A symlink in its place is never followed: the flock alone, and
	 * no compaction lock. */
	assert_int_equal(unlinkat(ud->fd, DIRLOCK_FILE, 0), 0);
	assert_int_equal(symlinkat("/nonexistent", ud->fd, DIRLOCK_FILE), 0);
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &a), 0);
	assert_int_equal(a.lockfd, -1);
	dirlock_release(&a);
	assert_int_equal(chainlock_try(ud->fd, "memory.bin", &cl), -ELOOP);
	assert_int_equal(fstatat(ud->fd, DIRLOCK_FILE, &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(S_ISLNK(st.st_mode));
}

static void test_chain_lock(void **state)
{
	struct unit_dir *ud = *state;
	struct chainlock a, b, c;
	struct dirlock r;
	long long off = dirlock_chain_offset("memory.bin");

	assert_true(off >= 1 && off <= 1LL << 40);
	assert_int_equal(chainlock_try(ud->fd, "memory.bin", &a), 0);
	/* One compactor per chain, also within one process. */
	assert_int_equal(chainlock_try(ud->fd, "memory.bin", &b), -EALREADY);
	assert_int_equal(b.fd, -1);
	assert_int_equal(foreign_lock(ud->fd, off), -1);
	/* Other chains, and rollbacks, are not held up. */
	assert_int_equal(chainlock_try(ud->fd, "disk.img", &c), 0);
	assert_int_equal(dirlock_acquire(ud->fd, 0, NULL, &r), 0);
	dirlock_release(&r);
	chainlock_release(&c);
	chainlock_release(&a);
	chainlock_release(&a);	/* harmless */
	assert_int_equal(chainlock_try(ud->fd, "memory.bin", &b), 0);
	chainlock_release(&b);
}

/* Forks a child that takes chain name's compaction lock (and marks file
 * mark, if set, in use), says so on a pipe and waits to be killed. */
static pid_t holder(int dirfd, const char *name, const char *mark)
{
	int p[2];
	char c;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct chainlock cl;
		int fd = -1;

		if (chainlock_try(dirfd, name, &cl) != 0)
			_exit(1);
		if (mark) {
			fd = openat(dirfd, mark, O_RDWR | O_CLOEXEC);
			if (fd < 0 || dirlock_mark_in_use(fd) != 0)
				_exit(1);
		}
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	assert_int_equal(read(p[0], &c, 1), 1);
	close(p[0]);
	return pid;
}

static void kill_holder(pid_t pid)
{
	int status;

	assert_int_equal(kill(pid, SIGKILL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
}

static void test_dies_with_holder(void **state)
{
	struct unit_dir *ud = *state;
	struct chainlock cl;
	pid_t pid = holder(ud->fd, "memory.bin", NULL);

	assert_int_equal(chainlock_try(ud->fd, "memory.bin", &cl), -EALREADY);
	kill_holder(pid);
	assert_int_equal(chainlock_try(ud->fd, "memory.bin", &cl), 0);
	chainlock_release(&cl);
}

/* Makes an empty file fname in dirfd. */
static void touch(int dirfd, const char *fname)
{
	int fd = openat(dirfd, fname, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	close(fd);
}

static void test_cleanup_spares_live_staging(void **state)
{
	struct unit_dir *ud = *state;
	const char *live = COMPACT_TMP_PREFIX "0123456789abcdef.4242";
	const char *dead = COMPACT_TMP_PREFIX "fedcba9876543210.4243";
	pid_t pid;

	touch(ud->fd, live);
	touch(ud->fd, dead);
	pid = holder(ud->fd, "memory.bin", live);
	assert_true(dirlock_in_use(ud->fd, live));
	assert_false(dirlock_in_use(ud->fd, dead));
	assert_false(dirlock_in_use(ud->fd, "missing"));
	/* Another host's compactor is writing `live`: only `dead` goes. */
	assert_int_equal(compact_cleanup(ud->fd), 1);
	assert_int_equal(faccessat(ud->fd, live, F_OK, 0), 0);
	assert_int_equal(faccessat(ud->fd, dead, F_OK, 0), -1);
	kill_holder(pid);
	assert_false(dirlock_in_use(ud->fd, live));
	assert_int_equal(compact_cleanup(ud->fd), 1);
	assert_int_equal(faccessat(ud->fd, live, F_OK, 0), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rollback_lock_is_record_lock_too,
						unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_lock_file, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_chain_lock, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_dies_with_holder, unit_dir_setup,
						unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_cleanup_spares_live_staging,
						unit_dir_setup, unit_dir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
