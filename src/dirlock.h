/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The rollback lock of a STORE directory: what the compactor holds while it
 * publishes a new base, and what every rollback (snapfs-rollback, an unlink
 * through the mount, a producer's `flock DIR rm DIR/NAME.<seq>.diff`) holds
 * while it removes a diff. Today it is flock(2) LOCK_EX on the directory
 * itself, so no file is ever created in STORE; this is the one place that
 * knows, so moving to another kind of lock changes only dirlock.c.
 */
#ifndef SNAPFS_DIRLOCK_H
#define SNAPFS_DIRLOCK_H

/* A held lock. Each one has its own open file description: two holders in
 * one process exclude each other like two processes do. */
struct dirlock {
	int fd;			/* the directory, O_RDONLY; -1 when not held */
};

/* How long dirlock_acquire() waits: forever. */
#define DIRLOCK_WAIT_FOREVER (-1)

/*
 * Takes the rollback lock of the directory dirfd refers to (any fd of it,
 * O_PATH included). Polls, so that it can give up: wait_ms is how long to
 * keep trying (0: one try; DIRLOCK_WAIT_FOREVER: until granted); stop, if
 * set and nonzero (read atomically), ends the wait with -ECANCELED.
 * Returns 0 with *lk held, or -EWOULDBLOCK (still held elsewhere when
 * wait_ms ran out), -ECANCELED, or another -errno (the directory cannot be
 * opened or locked). On failure lk->fd is -1.
 */
int dirlock_acquire(int dirfd, int wait_ms, const int *stop, struct dirlock *lk);

/* fsyncs the locked directory. Returns 0 or -errno. */
int dirlock_sync_dir(const struct dirlock *lk);

/* Releases the lock (a no-op if it is not held). */
void dirlock_release(struct dirlock *lk);

#endif
