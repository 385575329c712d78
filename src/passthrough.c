/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Kernel FUSE passthrough (passthrough.h): the per-inode mode and backing
 * id, and the reasons to stay on the FUSE path.
 *
 * Each inode with open files has one entry here: its mode (passthrough to
 * one backing id, or the FUSE path) and how many opens it has. The daemon
 * counts an open when it replies to it and uncounts it at its release; the
 * kernel ends an open's I/O mode before it sends the release, so when the
 * daemon's count of an inode is zero the kernel's is too, and the next
 * open may choose again. Passthrough is never wider than the FUSE path:
 * the caller has checked the requester's access before asking, and the
 * backing file is one the daemon opened read-only.
 *
 * Lock order: pt->lock is a leaf. It is held across the one ioctl that
 * registers a backing file (a few microseconds, no I/O to a disk), so that
 * two first opens of one inode cannot both choose.
 */
#include "config.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "log.h"
#include "passthrough.h"

#define PT_BUCKETS 256

struct pt_inode {
	fuse_ino_t ino;
	unsigned opens;
	int backing_id;		/* > 0: passthrough; 0: the FUSE path */
	bool keeps_cache;	/* on the FUSE path although a backing file
				   was offered (passthrough refused it), or
				   joined by an open that is never passthrough
				   (PASSTHROUGH_NEVER): its next opens will
				   read its page cache again */
	struct pt_inode *next;
};

struct passthrough {
	pthread_mutex_t lock;
	bool enabled;		/* atomic: wanted, offered, and not ruled
				   out for the whole mount */
	int logged_fs;		/* atomic: a backing file on FUSE or
				   overlayfs was logged */
	int logged_err;		/* atomic: another refusal was logged */
	struct pt_inode *buckets[PT_BUCKETS];	/* protected by lock */
};

struct passthrough *passthrough_new(bool want)
{
	struct passthrough *pt = calloc(1, sizeof(*pt));

	if (!pt)
		return NULL;
	pthread_mutex_init(&pt->lock, NULL);
	pt->enabled = want;
	return pt;
}

void passthrough_free(struct passthrough *pt)
{
	if (!pt)
		return;
	for (size_t i = 0; i < PT_BUCKETS; i++) {
		while (pt->buckets[i]) {
			struct pt_inode *e = pt->buckets[i];

			pt->buckets[i] = e->next;
			free(e);
		}
	}
	pthread_mutex_destroy(&pt->lock);
	free(pt);
}

bool passthrough_enabled(const struct passthrough *pt)
{
	return __atomic_load_n(&pt->enabled, __ATOMIC_RELAXED);
}

static void disable(struct passthrough *pt)
{
	__atomic_store_n(&pt->enabled, false, __ATOMIC_RELAXED);
}

#ifdef HAVE_FUSE_PASSTHROUGH
/* Whether the daemon has CAP_SYS_ADMIN, which the kernel demands for
 * registering a backing file (FUSE_DEV_IOC_BACKING_OPEN). */
static bool has_sys_admin(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &h, d) < 0)
		return true;	/* unknown: let the ioctl decide */
	return d[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN);
}

void passthrough_init(struct passthrough *pt, struct fuse_conn_info *conn)
{
	if (!passthrough_enabled(pt))
		return;
	if (!(conn->capable & FUSE_CAP_PASSTHROUGH)) {
		log_info("passthrough: off: the kernel does not offer FUSE "
			 "passthrough (Linux 6.9 or later, CONFIG_FUSE_PASSTHROUGH); "
			 "reads go through the daemon");
		disable(pt);
		return;
	}
	if (!has_sys_admin()) {
		log_info("passthrough: off: the daemon lacks CAP_SYS_ADMIN, which "
			 "the kernel requires for backing files; reads go through "
			 "the daemon");
		disable(pt);
		return;
	}
	conn->want |= FUSE_CAP_PASSTHROUGH;
	/* Backing files on a stacked filesystem are refused per file
	 * (stacked_fs()); this mount itself may be stacked upon. */
	conn->max_backing_stack_depth = FUSE_BACKING_STACKED_UNDER;
	log_debug("passthrough: on");
}
#else
void passthrough_init(struct passthrough *pt, struct fuse_conn_info *conn)
{
	(void)conn;
	if (!passthrough_enabled(pt))
		return;
	log_info("passthrough: off: this snapfs was built with libfuse %s, "
		 "which lacks it (3.17 or later has it); reads go through the daemon",
		 fuse_pkgversion());
	disable(pt);
}
#endif

static struct pt_inode **bucket(struct passthrough *pt, fuse_ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL;

	return &pt->buckets[(h >> 32) % PT_BUCKETS];
}

static struct pt_inode *find_locked(struct passthrough *pt, fuse_ino_t ino)
{
	for (struct pt_inode *e = *bucket(pt, ino); e; e = e->next)
		if (e->ino == ino)
			return e;
	return NULL;
}

#ifdef HAVE_FUSE_PASSTHROUGH
/* The name of a stacked filesystem fd lies on, or NULL: the kernel serves
 * no backing file from those (and one on FUSE would send its reads back
 * through a daemon anyway). */
static const char *stacked_fs(int fd)
{
	struct statfs sf;

	if (fstatfs(fd, &sf) < 0)
		return NULL;
	if (sf.f_type == FUSE_SUPER_MAGIC)
		return "FUSE";
	if (sf.f_type == OVERLAYFS_SUPER_MAGIC)
		return "overlayfs";
	return NULL;
}

/* Registers fd as a backing file: its id, or 0 (the cause logged once, and
 * passthrough turned off for the mount where no file could do better). */
static int open_backing(struct passthrough *pt, fuse_req_t req, int fd)
{
	const char *fs = stacked_fs(fd);
	int id, err;

	if (fs) {
		if (!__atomic_exchange_n(&pt->logged_fs, 1, __ATOMIC_RELAXED))
			log_info("passthrough: files on %s are read through the "
				 "daemon (the kernel cannot stack passthrough on it)", fs);
		return 0;
	}
	id = fuse_passthrough_open(req, fd);
	err = errno;
	if (id > 0)
		return id;
	if (err == EPERM || err == ENOTTY || err == EOPNOTSUPP || err == EINVAL) {
		log_info("passthrough: off: the kernel refused a backing file (%s)%s; "
			 "reads go through the daemon", strerror(err),
			 err == EPERM ? ": the daemon lacks CAP_SYS_ADMIN" : "");
		disable(pt);
	} else if (!__atomic_exchange_n(&pt->logged_err, 1, __ATOMIC_RELAXED)) {
		log_warn("passthrough: cannot register a backing file: %s; that "
			 "file is read through the daemon", strerror(err));
	}
	return 0;
}
#else
static int open_backing(struct passthrough *pt, fuse_req_t req, int fd)
{
	(void)pt; (void)req; (void)fd;
	return 0;
}
#endif

int passthrough_open(struct passthrough *pt, fuse_req_t req, fuse_ino_t ino,
		      int fd, struct fuse_file_info *fi)
{
	struct pt_inode *e;
	int id;

	pthread_mutex_lock(&pt->lock);
	e = find_locked(pt, ino);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e) {
			pthread_mutex_unlock(&pt->lock);
			return -ENOMEM;
		}
		e->ino = ino;
		if (fd >= 0 && passthrough_enabled(pt)) {
			e->backing_id = open_backing(pt, req, fd);
			e->keeps_cache = e->backing_id <= 0;
		}
		e->next = *bucket(pt, ino);
		*bucket(pt, ino) = e;
	}
	if (fd == PASSTHROUGH_NEVER)
		e->keeps_cache = true;
	e->opens++;
	id = e->backing_id;
	pthread_mutex_unlock(&pt->lock);
#ifdef HAVE_FUSE_PASSTHROUGH
	if (id > 0) {
		fi->backing_id = id;
		fi->keep_cache = 0;
		log_debug("passthrough open of inode %llu (backing id %d)",
			  (unsigned long long)ino, id);
	}
#else
	(void)fi;
#endif
	return id > 0 ? 1 : 0;
}

enum pt_released passthrough_release(struct passthrough *pt, fuse_req_t req,
				     fuse_ino_t ino)
{
	struct pt_inode **pp, *e = NULL;
	int id = 0;
	enum pt_released left = PT_OPENS_LEFT;

	pthread_mutex_lock(&pt->lock);
	for (pp = bucket(pt, ino); *pp; pp = &(*pp)->next) {
		if ((*pp)->ino != ino)
			continue;
		e = *pp;
		if (--e->opens == 0) {
			*pp = e->next;
			id = e->backing_id;
			if (id <= 0)
				left = e->keeps_cache || !passthrough_enabled(pt) ?
				       PT_CACHE_WANTED : PT_CACHE_UNUSED;
		} else {
			e = NULL;
		}
		break;
	}
	pthread_mutex_unlock(&pt->lock);
	free(e);
#ifdef HAVE_FUSE_PASSTHROUGH
	if (id > 0 && fuse_passthrough_close(req, id) < 0)
		log_debug("passthrough: closing backing id %d: %s", id, strerror(errno));
#else
	(void)req;
	(void)id;
#endif
	return left;
}

unsigned passthrough_opens(struct passthrough *pt, fuse_ino_t ino)
{
	struct pt_inode *e;
	unsigned n;

	pthread_mutex_lock(&pt->lock);
	e = find_locked(pt, ino);
	n = e ? e->opens : 0;
	pthread_mutex_unlock(&pt->lock);
	return n;
}
