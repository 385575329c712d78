/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Access checks as the requester (see access.h): the one place where a
 * thread's credentials change.
 *
 * Linux keeps credentials per thread; the system calls change only the
 * caller's, while glibc's setgroups() and friends signal every thread to
 * keep POSIX's per-process semantics. So the raw system calls are used,
 * and the switch is undone before access_check() returns, whatever
 * happened. Order matters: groups and fs gid first, while the thread still
 * has its capabilities, then the fs uid. Moving the fs uid from 0 to
 * another value drops the capabilities that override file permissions
 * (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, ...) from the thread's effective
 * set, and moving it back to 0 restores them: the check is made without
 * them, as for the requester (unless the securebit SECBIT_NO_SETUID_FIXUP
 * is set, checked once: then no switch is attempted). That each step took
 * is verified (setfsuid(-1) and setfsgid(-1) return the current value),
 * and where it did not, the check fails closed.
 *
 * Cost: about 12 system calls for the switches plus one per fd.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "access.h"
#include "log.h"
#include "procfd.h"

#ifndef SYS_faccessat2
#define SYS_faccessat2 439
#endif

/* The daemon's own filesystem credentials, read once. */
static struct {
	uid_t fsuid;
	gid_t fsgid;
	gid_t *groups;
	size_t ngroups;
	int error;		/* nonzero: could not be read, never switch */
	bool no_fixup;		/* capabilities survive a change of fs uid */
} self;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

static int use_fallback;	/* atomic: no faccessat2 on this kernel */
static int noswitch_logged;	/* atomic */

static void self_read(void)
{
	int n;

	int bits = prctl(PR_GET_SECUREBITS);

	self.no_fixup = bits < 0 || (bits & SECBIT_NO_SETUID_FIXUP);
	self.fsuid = (uid_t)syscall(SYS_setfsuid, -1);
	self.fsgid = (gid_t)syscall(SYS_setfsgid, -1);
	n = getgroups(0, NULL);
	if (n < 0) {
		self.error = errno;
		return;
	}
	self.groups = calloc((size_t)n + 1, sizeof(*self.groups));
	if (!self.groups) {
		self.error = ENOMEM;
		return;
	}
	n = getgroups(n, self.groups);
	if (n < 0) {
		self.error = errno;
		return;
	}
	self.ngroups = (size_t)n;
}

bool access_is_daemon(uid_t uid)
{
	pthread_once(&self_once, self_read);
	return !self.error && uid == self.fsuid;
}

void access_force_fallback(bool on)
{
	__atomic_store_n(&use_fallback, on ? 1 : 0, __ATOMIC_RELAXED);
}

/* Puts the daemon's credentials back on this thread; never returns if it
 * cannot. */
static void switch_back(void)
{
	const char *why = NULL;

	syscall(SYS_setfsuid, self.fsuid);
	syscall(SYS_setfsgid, self.fsgid);
	if (syscall(SYS_setgroups, self.ngroups, self.groups) < 0)
		why = strerror(errno);
	else if ((uid_t)syscall(SYS_setfsuid, -1) != self.fsuid ||
		 (gid_t)syscall(SYS_setfsgid, -1) != self.fsgid)
		why = "setfsuid/setfsgid did not take";
	if (why) {
		log_err("cannot switch a thread back to the daemon's credentials "
			"(uid %u, gid %u): %s; stopping", (unsigned)self.fsuid,
			(unsigned)self.fsgid, why);
		abort();
	}
}

/*
 * Makes c the calling thread's filesystem credentials. Returns 0, or
 * -EPERM with the daemon's credentials back (and the cause in why) if that
 * could not be done exactly.
 */
static int switch_to(const struct access_cred *c, const char **why)
{
	if (syscall(SYS_setgroups, c->ngroups, c->groups) < 0) {
		/* Nothing changed yet. */
		*why = errno == EPERM ? "no CAP_SETGID" : strerror(errno);
		return -EPERM;
	}
	syscall(SYS_setfsgid, c->gid);
	syscall(SYS_setfsuid, c->uid);
	if ((gid_t)syscall(SYS_setfsgid, -1) != c->gid ||
	    (uid_t)syscall(SYS_setfsuid, -1) != c->uid) {
		*why = "setfsuid/setfsgid did not take";
		switch_back();
		return -EPERM;
	}
	return 0;
}

/* One fd, with the thread already switched to the requester. */
static int check_fd(int fd, int mask)
{
	if (!__atomic_load_n(&use_fallback, __ATOMIC_RELAXED)) {
		if (syscall(SYS_faccessat2, fd, "", mask, AT_EACCESS | AT_EMPTY_PATH) == 0)
			return 0;
		if (errno != ENOSYS)
			return -errno;
		__atomic_store_n(&use_fallback, 1, __ATOMIC_RELAXED);
	}
	/* No faccessat2: the old faccessat checks the *real* ids, which stay
	 * the daemon's. Opening the file anew for reading checks the fs ids,
	 * groups and capabilities, ACLs and LSMs included. Search or
	 * execute permission cannot be asked that way: refused. */
	if (mask & ~R_OK)
		return -EACCES;
	{
		char path[PROC_FD_PATH_LEN];
		int rfd;

		proc_fd_path(path, fd);
		rfd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		if (rfd < 0)
			return -errno;
		close(rfd);
	}
	return 0;
}

int access_check(const struct access_cred *c, const int *fds, size_t n, int mask)
{
	const char *why = NULL;
	int ret = 0;

	pthread_once(&self_once, self_read);
	if (self.error)
		why = strerror(self.error);
	else if (self.fsuid != 0)
		why = "the daemon does not run as root";
	else if (self.no_fixup)
		why = "SECBIT_NO_SETUID_FIXUP keeps the daemon's capabilities "
		      "under any uid";
	else if (c->uid == (uid_t)-1 || c->gid == (gid_t)-1)
		return -EACCES;	/* an id this namespace cannot name */
	else if (switch_to(c, &why) == 0) {
		for (size_t i = 0; i < n && !ret; i++)
			ret = check_fd(fds[i], mask);
		switch_back();
		return ret;
	}
	if (c->uid == self.fsuid)
		return 0;	/* the daemon opened the files itself */
	if (!__atomic_exchange_n(&noswitch_logged, 1, __ATOMIC_RELAXED))
		log_warn("cannot check access with a requester's credentials (%s): "
			 "only uid %u may open files through the mount",
			 why, (unsigned)self.fsuid);
	return -EACCES;
}

int access_proc_groups(pid_t pid, gid_t *groups, int cap)
{
	char path[64], *buf = NULL, *line, *p, *end;
	size_t size = 0, len = 0;
	int fd, n = 0;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		ssize_t r;

		if (len + 1 >= size) {
			char *nb = realloc(buf, size ? size * 2 : 4096);

			if (!nb) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nb;
			size = size ? size * 2 : 4096;
		}
		r = read(fd, buf + len, size - len - 1);
		if (r < 0) {
			int e = errno;

			free(buf);
			close(fd);
			return e == EINTR ? -EIO : -e;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	line = strstr(buf, "\nGroups:");
	if (!line) {
		free(buf);
		return -EIO;
	}
	p = line + strlen("\nGroups:");
	end = strchr(p, '\n');
	if (end)
		*end = '\0';
	for (;;) {
		unsigned long g;
		char *q;

		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		errno = 0;
		g = strtoul(p, &q, 10);
		if (q == p || errno || g > (gid_t)-1) {
			free(buf);
			return -EIO;
		}
		if (n < cap)
			groups[n] = (gid_t)g;
		n++;
		p = q;
	}
	free(buf);
	return n;
}
