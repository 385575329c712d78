/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The locks snapfs takes in STORE (doc/design.md §10.6, doc/distributed.md).
 *
 * The rollback lock of a directory: what the compactor holds while it
 * publishes a new base, and what every rollback (snapfs-rollback, an unlink
 * through the mount, a producer's `flock DIR rm DIR/NAME.<seq>.diff`) holds
 * while it removes a diff. It is two locks taken together: flock(2) LOCK_EX
 * on the directory itself (what flock(1) takes from a shell; seen by this
 * host only) and a POSIX record lock (an OFD lock) on byte 0 of the
 * directory's lock file DIRLOCK_FILE (seen by every host whose filesystem
 * passes record locks to its server: NFSv4, CephFS).
 *
 * The compaction lock of a chain: a record lock on NAME's own byte of the
 * same lock file, held by the one compactor of that chain, on any host, for
 * its whole compaction. It is only ever tried, never waited for. Taking it
 * creates the lock file where it is missing; nothing else does.
 *
 * Every lock here belongs to an open file description: two holders in one
 * process exclude each other like two processes do, and the kernel (or the
 * NFS server, when a client's lease ends) drops the locks of a holder that
 * dies, so a crashed holder never leaves the store locked.
 */
#ifndef SNAPFS_DIRLOCK_H
#define SNAPFS_DIRLOCK_H

#include <stdbool.h>

/* The lock file of a directory: empty, never written, never removed, never
 * shown through the mount (doc/format.md §2, names snapfs owns). */
#define DIRLOCK_FILE ".snapfs-lock"

/* A held rollback lock. */
struct dirlock {
	int fd;			/* the directory, O_RDONLY, flock held; -1
				   when not held */
	int lockfd;		/* DIRLOCK_FILE, byte 0 locked; -1 when not
				   held or where the file cannot be opened */
};

/* How long dirlock_acquire() waits: forever. */
#define DIRLOCK_WAIT_FOREVER (-1)

/*
 * Takes the rollback lock of the directory dirfd refers to (any fd of it,
 * O_PATH included): the record lock on byte 0 of its DIRLOCK_FILE, then the
 * flock of the directory. The lock file is not created here (a compactor
 * makes it, chainlock_try(), before it reads any layer): where it is
 * missing, or cannot be opened for writing (a read-only store, no write
 * permission: nothing can be removed there either), the flock alone is
 * taken. Polls, so
 * that it can give up: wait_ms is how long to keep trying (0: one try;
 * DIRLOCK_WAIT_FOREVER: until granted); stop, if set and nonzero (read
 * atomically), ends the wait with -ECANCELED. Returns 0 with *lk held, or
 * -EWOULDBLOCK (still held elsewhere when wait_ms ran out), -ECANCELED, or
 * another -errno (the directory cannot be opened or locked). On failure
 * nothing is held and both fds are -1.
 */
int dirlock_acquire(int dirfd, int wait_ms, const int *stop, struct dirlock *lk);

/* fsyncs the locked directory. Returns 0 or -errno. */
int dirlock_sync_dir(const struct dirlock *lk);

/* Releases the lock (a no-op if it is not held). */
void dirlock_release(struct dirlock *lk);

/* A held compaction lock. */
struct chainlock {
	int fd;			/* DIRLOCK_FILE, NAME's byte locked; -1 when
				   not held */
};

/*
 * Tries once to take the compaction lock of chain name in directory dirfd:
 * a record lock on byte dirlock_chain_offset(name) of DIRLOCK_FILE (created
 * if missing). Returns 0 with *cl held, -EALREADY if another process (a
 * compactor on this host or another) holds it, or another -errno (the lock
 * file cannot be made or opened for writing, the filesystem has no record
 * locks: -ENOLCK, -EOPNOTSUPP...). On failure cl->fd is -1.
 */
int chainlock_try(int dirfd, const char *name, struct chainlock *cl);

/* Releases the compaction lock (a no-op if it is not held). */
void chainlock_release(struct chainlock *cl);

/* The byte of DIRLOCK_FILE that is chain name's compaction lock:
 * 1 + (XXH64(name) mod 2^40). Two names sharing one only serialize their
 * compactions. */
long long dirlock_chain_offset(const char *name);

/* True if fname is the name of a directory's lock file. */
bool dirlock_is_lockfile(const char *fname);

/*
 * Marks open file fd (a compactor's staging file, opened for writing) as in
 * use by a live compactor: a record lock on its byte 0, dropped when fd is
 * closed or the process dies. Returns 0 or -errno (no record locks there:
 * the mark is then simply absent).
 */
int dirlock_mark_in_use(int fd);

/* True if file fname of directory dirfd carries a live compactor's mark
 * (dirlock_mark_in_use()), on this host or another; false if not, or if
 * that cannot be told. */
bool dirlock_in_use(int dirfd, const char *fname);

#endif
