/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The locks of a STORE directory (see dirlock.h for what each protects).
 *
 * Why two kinds. flock(2) on the directory is what a producer's shell takes
 * (flock(1)) and what earlier snapfs took; it needs no file in STORE. But
 * it is local: the Linux NFS client sends flock to the server only for
 * regular files (emulated as a whole-file POSIX lock), and a directory has
 * no flock method there, so a flock of an NFS directory excludes processes
 * of one host only. POSIX record locks on a regular file are what NFSv4
 * (LOCK) and CephFS carry to the server; a directory cannot hold one for
 * writing (F_WRLCK needs a descriptor open for writing, which a directory
 * never is: EBADF), hence the lock file. OFD locks (F_OFD_SETLK) rather
 * than classic ones: they belong to the open file description, so the
 * compactor thread and an unlink through the mount in one daemon exclude
 * each other, and closing some other descriptor of the file in the process
 * does not silently drop them.
 *
 * Order: a compaction lock, then the rollback lock (record lock, then
 * flock). Nobody holds a rollback lock while trying a compaction lock.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "dirlock.h"

/* Polling steps: short at first (the compactor holds the lock for a few
 * system calls), then at most this long. */
#define POLL_MIN_US 200L
#define POLL_MAX_US 20000L

/* Chains' bytes lie in [1, 1 + 2^40): offsets every NFS server takes. */
#define CHAIN_OFFSETS (1LL << 40)

static long long now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

long long dirlock_chain_offset(const char *name)
{
	return 1 + (long long)(XXH64(name, strlen(name), 0) % (unsigned long long)CHAIN_OFFSETS);
}

bool dirlock_is_lockfile(const char *fname)
{
	return strcmp(fname, DIRLOCK_FILE) == 0;
}

/*
 * Opens dirfd's lock file for writing (record write locks need it); if
 * create, makes it where it is missing, with the read and write bits of
 * the directory itself: whoever may remove a diff there may take its lock.
 * Never follows a symbolic link, never blocks on a FIFO. Returns the fd or
 * -errno (-ENOENT: missing, and not create).
 */
static int lockfile_open(int dirfd, bool create)
{
	struct stat st, dst;
	int fd;

	if (create) {
		fd = openat(dirfd, DIRLOCK_FILE, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW |
			    O_NONBLOCK | O_CLOEXEC, 0600);
		if (fd >= 0) {
			/* Not the umask's choice: the directory's bits. */
			if (fstat(dirfd, &dst) == 0)
				fchmod(fd, (dst.st_mode & 0666) | 0600);
			return fd;
		}
		if (errno != EEXIST)
			return -errno;
	}
	fd = openat(dirfd, DIRLOCK_FILE, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	return fd;
}

/* One try of a write lock on byte off of fd (or, with len 0, from off
 * to the end). Returns 0, -EWOULDBLOCK if held elsewhere, or -errno. */
static int record_trylock(int fd, long long off)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = off,
		.l_len = 1,
	};

	while (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EACCES ? -EWOULDBLOCK : -errno;
	}
	return 0;
}

/* One try of the flock of the directory. 0, -EWOULDBLOCK or -errno. */
static int dir_tryflock(int fd)
{
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EINTR)
			continue;
		return errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;
	}
	return 0;
}

/* One try of what lk does not hold yet: the record lock (if lk->lockfd
 * is open), then the flock. Returns 0 once both are held. */
static int try_both(struct dirlock *lk, bool *have_rec, bool *have_flock)
{
	int ret;

	if (!*have_rec) {
		ret = lk->lockfd < 0 ? 0 : record_trylock(lk->lockfd, 0);
		if (ret)
			return ret;
		*have_rec = true;
	}
	if (!*have_flock) {
		ret = dir_tryflock(lk->fd);
		if (ret)
			return ret;
		*have_flock = true;
	}
	return 0;
}

int dirlock_acquire(int dirfd, int wait_ms, const int *stop, struct dirlock *lk)
{
	long long deadline = wait_ms >= 0 ? now_us() + (long long)wait_ms * 1000 : 0;
	bool have_rec = false, have_flock = false;
	long step = POLL_MIN_US;
	int ret;

	lk->fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lk->fd < 0) {
		ret = -errno;
		lk->lockfd = -1;
		return ret;
	}
	/* Not made here: a rollback, or one refused, changes nothing else in
	 * STORE. Every compactor makes it before it reads a layer (its
	 * compaction lock), so where it is missing no compactor of any host
	 * has started in this directory, and the flock alone keeps this
	 * host's rollbacks in order (doc/design.md §10.6). */
	lk->lockfd = lockfile_open(lk->fd, false);
	if (lk->lockfd < 0)
		lk->lockfd = -1;
	for (;;) {
		ret = try_both(lk, &have_rec, &have_flock);
		if (ret != -EWOULDBLOCK)
			break;
		if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)) {
			ret = -ECANCELED;
			break;
		}
		if (wait_ms >= 0 && now_us() >= deadline)
			break;
		{
			struct timespec ts = { 0, step * 1000 };

			nanosleep(&ts, NULL);
		}
		if (step < POLL_MAX_US)
			step = step * 2 < POLL_MAX_US ? step * 2 : POLL_MAX_US;
	}
	if (ret)
		dirlock_release(lk);
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
	/* The flock first: the reverse of the order taken. */
	if (lk->fd >= 0)
		close(lk->fd);		/* drops the flock */
	if (lk->lockfd >= 0)
		close(lk->lockfd);	/* drops the record lock */
	lk->fd = -1;
	lk->lockfd = -1;
}

int chainlock_try(int dirfd, const char *name, struct chainlock *cl)
{
	int fd, ret;

	cl->fd = -1;
	fd = lockfile_open(dirfd, true);
	if (fd < 0)
		return fd;
	ret = record_trylock(fd, dirlock_chain_offset(name));
	if (ret) {
		close(fd);
		return ret == -EWOULDBLOCK ? -EALREADY : ret;
	}
	cl->fd = fd;
	return 0;
}

void chainlock_release(struct chainlock *cl)
{
	if (cl->fd >= 0)
		close(cl->fd);
	cl->fd = -1;
}

int dirlock_mark_in_use(int fd)
{
	int ret = record_trylock(fd, 0);

	return ret == -EWOULDBLOCK ? -EBUSY : ret;
}

bool dirlock_in_use(int dirfd, const char *fname)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = 0,
		.l_len = 1,
	};
	int fd, ret;

	fd = openat(dirfd, fname, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return false;
	ret = fcntl(fd, F_OFD_GETLK, &fl);
	close(fd);
	return ret == 0 && fl.l_type != F_UNLCK;
}
