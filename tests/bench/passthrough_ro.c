// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * passthrough_ro: the "FUSE ceiling" of the snapfs benchmark.  It exposes the
 * regular files of one directory, read-only, through the libfuse3 low-level
 * API, answering every read zero-copy from the backing file (fd-backed
 * fuse_bufvec + splice) with keep_cache on, exactly as snapfs does; whatever
 * this daemon reaches is the most a FUSE daemon can reach on the machine.
 *
 * Usage: passthrough_ro [-f] [-s] [-d] [-o ready_fd=N] SRCDIR MOUNTPOINT
 * (-o nomove / -o nosplice turn off page moving / splicing, for experiments).
 *
 * The tests use it too, as a stand-in for a network filesystem: it caches
 * names and attributes for an hour, as an NFS client caches them for a
 * while (t-revalidate-remote.sh), and with -o hideholes it has no lseek
 * method, so the kernel reports every file as data to SEEK_DATA, as sshfs
 * does (t-no-holes.sh).
 */
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312	/* as the project's AM_CPPFLAGS; libfuse >= 3.12 */
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <fuse_lowlevel.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* The source tree is static during a benchmark: cache names and attributes. */
#define PT_TIMEOUT 3600.0
/* Worker threads of the multi-threaded loop: snapfs's default. */
#define PT_MAX_THREADS 16

/*
 * One looked-up file.  Inode numbers handed to the kernel are the index in
 * pt.nodes plus 2 (1 is the root); nodes are never freed, which is fine for
 * a flat directory that lives as long as one benchmark run.
 */
struct pt_node {
	char *name;
	ino_t src_ino;		/* st_ino in SRCDIR, to find the node again */
	uint64_t nlookup;	/* protected by pt.lock */
};

static struct {
	int srcfd;			/* O_PATH|O_DIRECTORY on SRCDIR */
	int nosplice, nomove;		/* set before the session starts */
	pthread_mutex_t lock;		/* protects nodes, nnodes, cap */
	struct pt_node *nodes;
	size_t nnodes, cap;
} pt = { .srcfd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };

struct pt_opts {
	char *srcdir;
	int ready_fd;
	int nosplice;
	int nomove;
	int hideholes;
};

/* Returns the name of inode @ino (not freed while the daemon runs) or NULL. */
static const char *pt_name(fuse_ino_t ino)
{
	const char *name = NULL;

	pthread_mutex_lock(&pt.lock);
	if (ino >= 2 && ino - 2 < pt.nnodes)
		name = pt.nodes[ino - 2].name;
	pthread_mutex_unlock(&pt.lock);
	return name;
}

/* Stats @name in SRCDIR into @st; 0 or -errno.  Only regular files exist. */
static int pt_stat_name(const char *name, struct stat *st)
{
	if (fstatat(pt.srcfd, name, st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(st->st_mode))
		return -ENOENT;
	st->st_mode &= ~(mode_t)(S_IWUSR | S_IWGRP | S_IWOTH);
	return 0;
}

/* Finds or adds the node for @name, takes one lookup reference; ino or 0. */
static fuse_ino_t pt_ref(const char *name, ino_t src_ino)
{
	fuse_ino_t ino = 0;
	size_t i;

	pthread_mutex_lock(&pt.lock);
	for (i = 0; i < pt.nnodes; i++)
		if (pt.nodes[i].src_ino == src_ino && !strcmp(pt.nodes[i].name, name))
			break;
	if (i == pt.nnodes) {
		if (pt.nnodes == pt.cap) {
			size_t cap = pt.cap ? 2 * pt.cap : 16;
			struct pt_node *n = realloc(pt.nodes, cap * sizeof(*n));

			if (!n)
				goto out;
			pt.nodes = n;
			pt.cap = cap;
		}
		pt.nodes[i].name = strdup(name);
		if (!pt.nodes[i].name)
			goto out;
		pt.nodes[i].src_ino = src_ino;
		pt.nodes[i].nlookup = 0;
		pt.nnodes++;
	}
	pt.nodes[i].nlookup++;
	ino = i + 2;
out:
	pthread_mutex_unlock(&pt.lock);
	return ino;
}

static void pt_unref(fuse_ino_t ino, uint64_t n)
{
	pthread_mutex_lock(&pt.lock);
	if (ino >= 2 && ino - 2 < pt.nnodes) {
		struct pt_node *node = &pt.nodes[ino - 2];

		node->nlookup = node->nlookup > n ? node->nlookup - n : 0;
	}
	pthread_mutex_unlock(&pt.lock);
}

static void pt_op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if ((conn->capable & FUSE_CAP_SPLICE_WRITE) && !pt.nosplice)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if ((conn->capable & FUSE_CAP_SPLICE_MOVE) && !pt.nosplice && !pt.nomove)
		conn->want |= FUSE_CAP_SPLICE_MOVE;
}

static void pt_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int ret;

	if (parent != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	memset(&e, 0, sizeof(e));
	ret = pt_stat_name(name, &e.attr);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	e.ino = pt_ref(name, e.attr.st_ino);
	if (!e.ino) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	e.attr.st_ino = e.ino;
	e.attr_timeout = PT_TIMEOUT;
	e.entry_timeout = PT_TIMEOUT;
	if (fuse_reply_entry(req, &e) == -ENOENT)
		pt_unref(e.ino, 1);	/* the lookup was interrupted */
}

static void pt_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	pt_unref(ino, nlookup);
	fuse_reply_none(req);
}

static void pt_op_forget_multi(fuse_req_t req, size_t count,
			       struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		pt_unref(forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void pt_op_getattr(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct stat st;
	int ret;

	(void)fi;
	if (ino == FUSE_ROOT_ID) {
		if (fstat(pt.srcfd, &st) < 0) {
			fuse_reply_err(req, errno);
			return;
		}
		st.st_mode &= ~(mode_t)(S_IWUSR | S_IWGRP | S_IWOTH);
	} else {
		const char *name = pt_name(ino);

		if (!name) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		ret = pt_stat_name(name, &st);
		if (ret < 0) {
			fuse_reply_err(req, -ret);
			return;
		}
	}
	st.st_ino = ino;
	fuse_reply_attr(req, &st, PT_TIMEOUT);
}

static void pt_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	const char *name = pt_name(ino);
	int fd;

	if (!name) {
		fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	fd = openat(pt.srcfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	fi->keep_cache = 1;
	fi->noflush = 1;
	if (fuse_reply_open(req, fi) == -ENOENT)
		close(fd);	/* the open was interrupted */
}

static void pt_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	(void)ino;
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = (int)fi->fh;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, pt.nosplice ? FUSE_BUF_NO_SPLICE :
				   pt.nomove ? 0 : FUSE_BUF_SPLICE_MOVE);
}

/* SEEK_DATA/SEEK_HOLE answered from the backing file (reads never use its
 * offset: they splice or pread at explicit positions). */
static void pt_op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
			struct fuse_file_info *fi)
{
	off_t res;

	(void)ino;
	res = lseek((int)fi->fh, off, whence);
	if (res < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, res);
}

static void pt_op_release(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	(void)ino;
	close((int)fi->fh);
	fuse_reply_err(req, 0);
}

static void pt_op_opendir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	DIR *dir;
	int fd;

	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fd = openat(pt.srcfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	dir = fdopendir(fd);
	if (!dir) {
		fuse_reply_err(req, errno);
		close(fd);
		return;
	}
	fi->fh = (uintptr_t)dir;
	if (fuse_reply_open(req, fi) == -ENOENT)
		closedir(dir);
}

/*
 * Lists "." and ".." and the regular files of SRCDIR.  The directory stream's
 * telldir() cookie is the entry offset, as in libfuse's passthrough_ll; a
 * stream is used by one request at a time (the kernel serialises readdir on
 * an open directory).
 */
static void pt_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	DIR *dir = (DIR *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	size_t used = 0;

	(void)ino;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	seekdir(dir, off);
	for (;;) {
		struct stat st = { 0 };
		struct dirent *de;
		size_t len;

		errno = 0;
		de = readdir(dir);
		if (!de)
			break;
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		st.st_ino = de->d_ino;
		st.st_mode = (mode_t)de->d_type << 12;
		len = fuse_add_direntry(req, buf + used, size - used, de->d_name,
					&st, telldir(dir));
		if (len > size - used)
			break;
		used += len;
	}
	if (errno && !used)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void pt_op_releasedir(fuse_req_t req, fuse_ino_t ino,
			     struct fuse_file_info *fi)
{
	(void)ino;
	closedir((DIR *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void pt_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	(void)ino;
	if (fstatvfs(pt.srcfd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops pt_ops = {
	.init		= pt_op_init,
	.lookup		= pt_op_lookup,
	.forget		= pt_op_forget,
	.forget_multi	= pt_op_forget_multi,
	.getattr	= pt_op_getattr,
	.open		= pt_op_open,
	.read		= pt_op_read,
	.release	= pt_op_release,
	.opendir	= pt_op_opendir,
	.readdir	= pt_op_readdir,
	.releasedir	= pt_op_releasedir,
	.statfs		= pt_op_statfs,
	.lseek		= pt_op_lseek,
};

static const struct fuse_opt pt_opt_spec[] = {
	{ "ready_fd=%d", offsetof(struct pt_opts, ready_fd), 0 },
	{ "nosplice", offsetof(struct pt_opts, nosplice), 1 },
	{ "nomove", offsetof(struct pt_opts, nomove), 1 },
	{ "hideholes", offsetof(struct pt_opts, hideholes), 1 },
	FUSE_OPT_END
};

/* Keeps the first non-option argument as SRCDIR, everything else for FUSE. */
static int pt_opt_proc(void *data, const char *arg, int key,
		       struct fuse_args *outargs)
{
	struct pt_opts *o = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT && !o->srcdir) {
		o->srcdir = strdup(arg);
		return 0;
	}
	return 1;
}

static void pt_usage(const char *prog)
{
	printf("usage: %s [options] SRCDIR MOUNTPOINT\n\n"
	       "Read-only passthrough of SRCDIR's regular files (benchmark ceiling).\n"
	       "    -o ready_fd=N    write one byte to fd N once mounted, then close it\n"
	       "    -o nomove        splice reads, but do not ask to move pages\n"
	       "    -o nosplice      copy reads instead of splicing them\n"
	       "    -o hideholes     no lseek method: every file is data to SEEK_DATA\n\n",
	       prog);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

/* Signals readiness on @fd (if >= 0): one byte, then close. */
static void pt_ready(int fd)
{
	if (fd < 0)
		return;
	while (write(fd, "R", 1) < 0 && errno == EINTR)
		;
	close(fd);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct pt_opts o = { .srcdir = NULL, .ready_fd = -1 };
	struct fuse_cmdline_opts opts;
	struct fuse_loop_config *loop = NULL;
	struct fuse_session *se;
	int ret = 1;

	if (fuse_opt_parse(&args, &o, pt_opt_spec, pt_opt_proc) != 0)
		goto out_args;
	if (fuse_parse_cmdline(&args, &opts) != 0)
		goto out_args;
	if (opts.show_help) {
		pt_usage(argv[0]);
		ret = 0;
		goto out_opts;
	}
	if (opts.show_version) {
		printf("FUSE library version %s\n", fuse_pkgversion());
		fuse_lowlevel_version();
		ret = 0;
		goto out_opts;
	}
	if (!o.srcdir || !opts.mountpoint) {
		fprintf(stderr, "usage: %s [-f] [-s] [-o ready_fd=N] SRCDIR MOUNTPOINT\n",
			argv[0]);
		goto out_opts;
	}
	pt.nosplice = o.nosplice;
	pt.nomove = o.nomove;
	pt.srcfd = open(o.srcdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (pt.srcfd < 0) {
		fprintf(stderr, "passthrough_ro: %s: %s\n", o.srcdir, strerror(errno));
		goto out_opts;
	}

	{
		/* Without the lseek method the kernel answers SEEK_DATA with
		 * the offset and SEEK_HOLE with the size, for every file. */
		static struct fuse_lowlevel_ops ops;

		ops = pt_ops;
		if (o.hideholes)
			ops.lseek = NULL;
		se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	}
	if (!se)
		goto out_src;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto out_signals;
	fuse_daemonize(opts.foreground);
	pt_ready(o.ready_fd);
	o.ready_fd = -1;

	if (opts.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		loop = fuse_loop_cfg_create();
		if (!loop)
			goto out_unmount;
		fuse_loop_cfg_set_clone_fd(loop, (unsigned int)opts.clone_fd);
		fuse_loop_cfg_set_max_threads(loop, PT_MAX_THREADS);
		if (opts.max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(loop, opts.max_idle_threads);
		ret = fuse_session_loop_mt(se, loop);
	}
	/* 0 after an unmount; a signal number after SIGTERM/SIGINT */
	ret = ret ? 1 : 0;

out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_src:
	close(pt.srcfd);
out_opts:
	free(opts.mountpoint);
out_args:
	if (loop)
		fuse_loop_cfg_destroy(loop);
	if (o.ready_fd >= 0)
		close(o.ready_fd);	/* EOF tells the waiting script we failed */
	free(o.srcdir);
	fuse_opt_free_args(&args);
	for (size_t i = 0; i < pt.nnodes; i++)
		free(pt.nodes[i].name);
	free(pt.nodes);
	return ret;
}
