/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The rollback lock of a STORE directory (see dirlock.h): flock(2) LOCK_EX
 * on a fresh O_RDONLY descriptor of the directory. flock locks belong to
 * the open file description, so every acquisition opens its own; they are
 * independent of fcntl(2) record locks, and are dropped by the kernel when
 * the holder dies, so a crashed holder never leaves the store locked.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "dirlock.h"

/* Polling steps: short at first (the compactor holds the lock for a few
 * system calls), then at most this long. */
#define POLL_MIN_US 200L
#define POLL_MAX_US 20000L

static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int dirlock_acquire(int dirfd, int wait_ms, const int *stop, struct dirlock *lk)
{
	long long deadline = wait_ms >= 0 ? now_us() + (long long)wait_ms * 1000 : 0;
	long step = POLL_MIN_US;
	int fd, ret;

	lk->fd = -1;
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			lk->fd = fd;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK) {
			ret = -errno;
			break;
		}
		if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)) {
			ret = -ECANCELED;
			break;
		}
		if (wait_ms >= 0 && now_us() >= deadline) {
			ret = -EWOULDBLOCK;
			break;
		}
		{
			struct timespec ts = { 0, step * 1000 };

			nanosleep(&ts, NULL);
		}
		if (step < POLL_MAX_US)
			step = step * 2 < POLL_MAX_US ? step * 2 : POLL_MAX_US;
	}
	close(fd);
	return ret;
}

int dirlock_sync_dir(const struct dirlock *lk)
{
	if (lk->fd < 0)
		return -EBADF;
	return fsync(lk->fd) < 0 ? -errno : 0;
}

void dirlock_release(struct dirlock *lk)
{
	if (lk->fd < 0)
		return;
	close(lk->fd);		/* drops the flock */
	lk->fd = -1;
}
