/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The one way snapfs names an open file again: /proc/self/fd/N, through
 * which open(), getxattr() and inotify reach the very inode the fd refers
 * to (an O_PATH fd included), never whatever now has its name.
 */
#ifndef SNAPFS_PROCFD_H
#define SNAPFS_PROCFD_H

#include <stdio.h>

/* Room for "/proc/self/fd/" and any int. */
#define PROC_FD_PATH_LEN 32

/* Writes the /proc/self/fd path of fd into buf and returns buf. */
static inline char *proc_fd_path(char buf[PROC_FD_PATH_LEN], int fd)
{
	snprintf(buf, PROC_FD_PATH_LEN, "/proc/self/fd/%d", fd);
	return buf;
}

#endif
