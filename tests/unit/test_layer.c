/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests for layer.c: identity (what a rewrite changes, and only that)
 * and layer_open(), which must open nothing but a regular file: a FIFO in a
 * layer's place would block the opener for good, a device would run its
 * driver, a symlink could lead out of STORE.
 */
#include "unit.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>

#include "layer.h"

/* A watchdog: a layer_open() that blocks fails the test instead of hanging
 * the suite. */
static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "layer_open blocked\n";

	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	_exit(1);
}

static void test_regular_file(void **state)
{
	struct unit_dir *ud = *state;
	struct stat st, st2;
	char buf[5] = { 0 };
	int fd;

	fd = openat(ud->fd, "l.1.diff", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "data", 4, 8192), 4);
	close(fd);

	fd = layer_open(ud->fd, "l.1.diff", true, &st);
	assert_true(fd >= 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 8196);
	assert_int_equal(pread(fd, buf, 4, 8192), 4);
	assert_string_equal(buf, "data");
	/* Read-only, whatever the file's mode allows. */
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	assert_int_equal(fstatat(ud->fd, "l.1.diff", &st2, 0), 0);
	assert_int_equal(st.st_ino, st2.st_ino);
	close(fd);
	/* st may be NULL. */
	fd = layer_open(ud->fd, "l.1.diff", false, NULL);
	assert_true(fd >= 0);
	close(fd);
}

static void test_not_regular(void **state)
{
	struct unit_dir *ud = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int s;

	signal(SIGALRM, on_alarm);
	alarm(10);
	/* A FIFO with no writer: an ordinary open would wait forever. */
	assert_int_equal(mkfifoat(ud->fd, "f.2.diff", 0600), 0);
	assert_int_equal(layer_open(ud->fd, "f.2.diff", true, NULL), -EFTYPE_LAYER);
	/* A directory, a symlink (never followed, even to a good file), a
	 * socket, a missing name. */
	assert_int_equal(mkdirat(ud->fd, "d.3.diff", 0700), 0);
	assert_int_equal(layer_open(ud->fd, "d.3.diff", true, NULL), -EFTYPE_LAYER);
	close(openat(ud->fd, "target", O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
	assert_int_equal(symlinkat("target", ud->fd, "s.4.diff"), 0);
	assert_int_equal(layer_open(ud->fd, "s.4.diff", true, NULL), -ELOOP);
	s = -1;
	if (strlen(ud->path) + sizeof("/k.5.diff") <= sizeof(sa.sun_path)) {
		memcpy(sa.sun_path, ud->path, strlen(ud->path));
		memcpy(sa.sun_path + strlen(ud->path), "/k.5.diff", sizeof("/k.5.diff"));
		s = socket(AF_UNIX, SOCK_STREAM, 0);
	}
	if (s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		assert_int_equal(layer_open(ud->fd, "k.5.diff", true, NULL), -EFTYPE_LAYER);
	if (s >= 0)
		close(s);
	assert_int_equal(layer_open(ud->fd, "missing.6.diff", true, NULL), -ENOENT);
	/* A character device (root only): opened, a driver would run. */
	if (mknodat(ud->fd, "c.7.diff", S_IFCHR | 0600, makedev(1, 3)) == 0)
		assert_int_equal(layer_open(ud->fd, "c.7.diff", true, NULL), -EFTYPE_LAYER);
	alarm(0);
}

static void test_identity(void **state)
{
	struct unit_dir *ud = *state;
	struct layer_id a, b;
	struct stat st;
	struct timespec later[2] = { { 0, UTIME_OMIT }, { 12345, 0 } };
	int fd;

	fd = openat(ud->fd, "m.0.base", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "x", 1, 4095), 1);
	assert_int_equal(fstat(fd, &st), 0);
	layer_id_from_stat(&a, &st);
	assert_true(layer_unchanged(ud->fd, "m.0.base", &a));

	/* chmod, a hard link: ctime moves, the bytes do not: same layer. */
	assert_int_equal(fchmod(fd, 0600), 0);
	assert_int_equal(linkat(ud->fd, "m.0.base", ud->fd, "backup", 0), 0);
	assert_true(layer_unchanged(ud->fd, "m.0.base", &a));

	/* A write moves the mtime; a truncate the size. */
	assert_int_equal(futimens(fd, later), 0);
	assert_false(layer_unchanged(ud->fd, "m.0.base", &a));
	assert_int_equal(fstat(fd, &st), 0);
	layer_id_from_stat(&b, &st);
	assert_true(layer_unchanged(ud->fd, "m.0.base", &b));
	assert_int_equal(ftruncate(fd, 8192), 0);
	assert_int_equal(futimens(fd, later), 0);	/* same mtime again */
	assert_false(layer_unchanged(ud->fd, "m.0.base", &b));
	close(fd);
	assert_false(layer_unchanged(ud->fd, "gone", &b));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_regular_file, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_not_regular, unit_dir_setup, unit_dir_teardown),
		cmocka_unit_test_setup_teardown(test_identity, unit_dir_setup, unit_dir_teardown),
	};

	return cmocka_run_group_tests_name("layer", tests, NULL, NULL);
}
