/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Opens of views for writing (openmode.h). The reasoning is in
 * doc/design.md §15; in short: a view never changes, so nothing may be
 * written to it, but QEMU before 8.2 opens guest memory O_RDWR even for a
 * private mapping. Under open_rw=private such an open is answered with
 * direct_io, and the kernel then refuses MAP_SHARED on that open file
 * (-ENODEV: the daemon does not grant FUSE_DIRECT_IO_ALLOW_MMAP), so no
 * shared writable mapping, whose dirty pages could never be written back,
 * can appear to succeed; MAP_PRIVATE goes through the page cache as for
 * any read-only open. Every write, truncate and fallocate still reaches the
 * daemon and is refused with EROFS.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "openmode.h"

int openmode_parse(const char *s, enum open_rw *out)
{
	if (strcmp(s, "refuse") == 0)
		*out = OPEN_RW_REFUSE;
	else if (strcmp(s, "private") == 0)
		*out = OPEN_RW_PRIVATE;
	else
		return -EINVAL;
	return 0;
}

enum open_verdict openmode_decide(int flags, bool view, enum open_rw policy)
{
	int acc = flags & O_ACCMODE;

	if (acc == O_RDONLY && !(flags & O_TRUNC))
		return OPEN_READ;
	if (acc == O_RDWR && view && policy == OPEN_RW_PRIVATE &&
	    !(flags & (O_TRUNC | O_APPEND)))
		return OPEN_RW_DIRECT;
	return OPEN_REFUSE;
}

void openmode_comm(uint32_t pid, char *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(buf, len, "?");
	snprintf(path, sizeof(path), "/proc/%u/comm", (unsigned)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0) {
		snprintf(buf, len, "?");
		return;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';	/* the kernel ends it with one */
}

void openmode_log_refusal(const char *path, uint32_t pid, int flags,
			  enum open_rw policy)
{
	char comm[64];

	openmode_comm(pid, comm, sizeof(comm));
	if ((flags & O_ACCMODE) == O_RDWR && policy == OPEN_RW_REFUSE)
		log_warn_rl("%s: open for writing refused to %s (pid %u): layered "
			    "files are read-only; open it O_RDONLY (QEMU 8.2 or "
			    "later: memory-backend-file readonly=on,rom=off), or "
			    "mount with -o open_rw=private for a VMM that opens "
			    "O_RDWR but maps private", path, comm, (unsigned)pid);
	else
		log_warn_rl("%s: open for %s refused to %s (pid %u): layered "
			    "files are read-only; open it O_RDONLY, or O_RDWR "
			    "without O_TRUNC/O_APPEND under -o open_rw=private",
			    path, (flags & O_ACCMODE) == O_WRONLY ? "writing only" :
			    (flags & O_TRUNC) ? "truncation" : "appending", comm,
			    (unsigned)pid);
}
