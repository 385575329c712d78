// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * abortread.so: an LD_PRELOAD interposer for tests/mount/t-unmount.sh.
 *
 * When the mount goes away, the kernel ends the FUSE connection and the
 * daemon's next read of /dev/fuse fails with ENODEV, or on some kernels
 * with ECONNABORTED. This machine's kernel gives ENODEV; the interposer
 * turns an ENODEV from a read or splice of /dev/fuse (character device
 * 10:229) into ECONNABORTED, so the test can show what the daemon does
 * with the other answer. Nothing else changes: every other call, fd and
 * errno passes through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

static int is_fuse_dev(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) &&
	       major(st.st_rdev) == 10 && minor(st.st_rdev) == 229;
}

/* ENODEV from /dev/fuse becomes ECONNABORTED; errno is kept otherwise. */
static void as_abort(int fd)
{
	int err = errno;

	if (err == ENODEV && is_fuse_dev(fd))
		err = ECONNABORTED;
	errno = err;
}

ssize_t read(int fd, void *buf, size_t count)
{
	static ssize_t (*real)(int, void *, size_t);
	ssize_t n;

	if (!real)
		real = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
	n = real(fd, buf, count);
	if (n < 0)
		as_abort(fd);
	return n;
}

ssize_t splice(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out,
	       size_t len, unsigned int flags)
{
	static ssize_t (*real)(int, loff_t *, int, loff_t *, size_t, unsigned int);
	ssize_t n;

	if (!real)
		real = (ssize_t (*)(int, loff_t *, int, loff_t *, size_t,
				    unsigned int))dlsym(RTLD_NEXT, "splice");
	n = real(fd_in, off_in, fd_out, off_out, len, flags);
	if (n < 0)
		as_abort(fd_in);
	return n;
}
