/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Layer identity and the safe open of a layer file (see layer.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "layer.h"
#include "procfd.h"

void layer_id_from_stat(struct layer_id *id, const struct stat *st)
{
	memset(id, 0, sizeof(*id));
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

bool layer_id_equal(const struct layer_id *a, const struct layer_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns;
}

bool layer_unchanged(int dirfd, const char *fname, const struct layer_id *id)
{
	struct layer_id now;
	struct stat st;

	if (fstatat(dirfd, fname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	layer_id_from_stat(&now, &st);
	return layer_id_equal(&now, id);
}

int layer_open(int dirfd, const char *fname, bool noatime, struct stat *st)
{
	struct stat sb;
	char path[PROC_FD_PATH_LEN];
	int pfd, fd, e;

	pfd = openat(dirfd, fname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return -errno;
	if (fstat(pfd, &sb) < 0) {
		e = errno;
		close(pfd);
		return -e;
	}
	if (S_ISLNK(sb.st_mode) || !S_ISREG(sb.st_mode)) {
		close(pfd);
		return S_ISLNK(sb.st_mode) ? -ELOOP : -EFTYPE_LAYER;
	}
	proc_fd_path(path, pfd);
	fd = -1;
	if (noatime)
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOATIME);
	if (fd < 0 && (!noatime || errno == EPERM))	/* O_NOATIME: owner only */
		fd = open(path, O_RDONLY | O_CLOEXEC);
	e = errno;
	close(pfd);
	if (fd < 0)
		return -e;
	if (st && fstat(fd, st) < 0) {
		e = errno;
		close(fd);
		return -e;
	}
	return fd;
}
