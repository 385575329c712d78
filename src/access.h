/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Access checks with a requester's credentials. The daemon opens every
 * layer itself, so the kernel's check of the view (default_permissions)
 * sees only the one mode and owner the view shows, which cannot express
 * the intersection of layers with different owners or ACLs. Before a view,
 * file or directory is opened for a requester, the daemon asks the kernel
 * whether that requester may read each file behind it: the calling thread
 * takes the requester's uid, gid and groups as its filesystem credentials,
 * faccessat2() is asked on the very fds that will serve the open, and the
 * thread's own credentials come back. Only the kernel's check gets modes,
 * ACLs, capabilities and LSMs right, so none of that is computed here.
 *
 * This file speaks no FUSE: it returns 0 or -errno.
 */
#ifndef SNAPFS_ACCESS_H
#define SNAPFS_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Who asks: filesystem uid and gid and the supplementary groups, as the
 * kernel sends them with a request (groups: not owned, may be NULL when
 * ngroups is 0). */
struct access_cred {
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	size_t ngroups;
};

/*
 * Whether c may access each of the n open files fds (any kind of fd, O_PATH
 * included) for mask (R_OK and/or X_OK; a read-only mount never asks W_OK).
 * The calling thread, and only it, runs the check with c's credentials:
 * its fs uid, fs gid and groups are switched with raw system calls (the
 * libc wrappers would change every thread) and always switched back before
 * returning. A switch that did not take counts as "cannot switch".
 *
 * Returns 0 if every fd allows mask; -EACCES if one does not, or if the
 * check cannot be made as c: the daemon is not root (or lacks CAP_SETGID,
 * or runs with SECBIT_NO_SETUID_FIXUP), c's uid or gid is not mapped
 * ((uid_t)-1), and c is not the daemon's own uid (fail closed: only the
 * daemon's own uid passes then; logged once per process); another -errno
 * if the kernel gave another error (-EBADF, ...).
 * Where faccessat2 is missing (kernels before 5.8), R_OK is checked by
 * reopening the fd through /proc/self/fd for reading with c's credentials,
 * and X_OK is refused (-EACCES). Thread-safe; takes no lock. If switching
 * back fails, the process logs the cause and aborts: a thread must never
 * go on serving with a requester's credentials.
 */
int access_check(const struct access_cred *c, const int *fds, size_t n, int mask);

/*
 * True if uid is the daemon's own fs uid: access_check() would then decide
 * with the daemon's own credentials (root's capabilities, or a daemon not
 * running as root passing its own uid), which opened the files already,
 * so the caller may skip it and the cost of reading groups.
 */
bool access_is_daemon(uid_t uid);

/*
 * The supplementary groups of process (or thread) pid, from the "Groups:"
 * line of /proc/PID/status, into groups[0..cap). Returns how many it has
 * (more than cap: call again with a larger array), or -errno (-ENOENT,
 * -ESRCH: the process is gone; -EIO: no such line). This replaces
 * libfuse's fuse_req_getgroups(), which in 3.14 reads past its buffer when
 * the status file does not fit it.
 */
int access_proc_groups(pid_t pid, gid_t *groups, int cap);

/*
 * For tests: act as if faccessat2 were missing (on = true) or not. Call
 * before any check runs on another thread.
 */
void access_force_fallback(bool on);

#endif
