/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * How a read of a view is answered (doc/design.md §5): its pieces spliced
 * from the layers' fds, gathered with one io_uring submission (gather.h),
 * or written from the layers' maps; and the prefetch push, which sends the
 * same pieces as a notification. Part of the FUSE side: only fuse_ops.c
 * calls it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "fuse_ops.h"
#include "fuse_read.h"
#include "gather.h"
#include "log.h"
#include "passthrough.h"
#include "prefetch.h"
#include "stats.h"

/* Pieces of a read answered from the layers' maps longer than this, and
 * every piece of a read of several, are read ahead first
 * (reply_from_maps()). */
#define MAP_READAHEAD_MIN 4096

/* Pieces of a read described on the stack before falling back to malloc. */
#define STACK_PIECES 16
/* iovecs in a reply at most: IOV_MAX less libfuse's header */
#define GATHER_IOV 1000

/* Buffers a piece takes in a reply: one for data, one per zero_len slice
 * of the shared zero buffer for a hole. */
static size_t piece_bufs(const struct snapfs *fs, const struct view_piece *p)
{
	return p->fd >= 0 ? 1 : (size_t)((p->len + fs->zero_len - 1) / fs->zero_len);
}

enum read_path { READ_SPLICED, READ_MAPPED, READ_GATHERED };

/* What a read's pieces add up to: taken once, for the choice of path
 * and the counters. */
struct read_sums {
	uint64_t bytes, zero;	/* in all; of them, holes */
	size_t data, bufs;	/* pieces of data; buffers (piece_bufs()) */
};

static void sum_pieces(const struct snapfs *fs, const struct view_piece *p,
		       size_t n, struct read_sums *sum)
{
	*sum = (struct read_sums){ 0 };
	for (size_t i = 0; i < n; i++) {
		sum->bytes += p[i].len;
		sum->bufs += piece_bufs(fs, &p[i]);
		if (p[i].fd >= 0)
			sum->data++;
		else
			sum->zero += p[i].len;
	}
}

/*
 * Replies with one writev of iovecs that point into the layers' mappings
 * and the zero buffer: one system call and one copy however many segments
 * the request spans. Returns false (nothing sent) if a piece has no
 * mapping or there are too many pieces; the caller then splices.
 */
static bool reply_from_maps(fuse_req_t req, struct snapfs *fs,
			    const struct view_piece *p, size_t n,
			    const struct read_sums *sum)
{
	struct iovec stack_iov[STACK_PIECES * 2], *iov = stack_iov;
	size_t niov = sum->bufs;

	for (size_t i = 0; i < n; i++)
		if (p[i].fd >= 0 && !p[i].map)
			return false;
	if (niov > GATHER_IOV)
		return false;
	if (niov > STACK_PIECES * 2) {
		iov = malloc(niov * sizeof(*iov));
		if (!iov)
			return false;
	}
	niov = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i].fd >= 0) {
			/* The maps are MADV_RANDOM (view.c): a cold run of pages
			 * would be read one synchronous page per fault inside
			 * the writev. One readahead of exactly the piece (data,
			 * never a diff's holes) makes it one I/O, as a splice
			 * from the fd gets; a cached range costs a page-cache
			 * walk. With two data pieces or more, every piece is
			 * read ahead, pages too: faulted in one after another
			 * inside the writev, the diff pages of a deep chain
			 * were as many serial reads from disk (a cold depth-16
			 * restore 10 s, against 4 s gathered). A lone page
			 * faults as cheaply as it reads. */
			if (p[i].len > MAP_READAHEAD_MIN || sum->data > 1)
				readahead(p[i].fd, (off64_t)p[i].off, (size_t)p[i].len);
			iov[niov].iov_base = (void *)(p[i].map + p[i].off);
			iov[niov++].iov_len = (size_t)p[i].len;
			continue;
		}
		for (uint64_t left = p[i].len; left;) {
			size_t chunk = left < fs->zero_len ? (size_t)left : fs->zero_len;

			iov[niov].iov_base = (void *)fs->zero;
			iov[niov++].iov_len = chunk;
			left -= chunk;
		}
	}
	fuse_reply_iov(req, iov, (int)niov);
	if (iov != stack_iov)
		free(iov);
	return true;
}


/* Counts a view read by the path that answered it (spliced from the
 * layers' fds, written from their maps, or gathered), and the bytes sent
 * as zeros. */
static void count_read(const struct read_sums *sum, enum read_path path)
{
	static const enum stat_id reads[] = {
		[READ_SPLICED] = STAT_READS_SPLICE,
		[READ_MAPPED] = STAT_READS_MMAP,
		[READ_GATHERED] = STAT_READS_GATHER,
	};

	/* Each path's byte counter follows its read counter. */
	stats_add(reads[path], 1);
	stats_add((enum stat_id)(reads[path] + 1), sum->bytes);
	if (sum->zero)
		stats_add(STAT_BYTES_ZERO, sum->zero);
}

/*
 * The pieces p[0..n) as a malloc'd bufvec: an fd-backed buffer (spliced
 * where the kernel allows) per piece of data, slices of the zero buffer
 * for holes. NULL without memory.
 */
static struct fuse_bufvec *bufvec_of_pieces(const struct snapfs *fs,
					    const struct view_piece *p, size_t n,
					    const struct read_sums *sum)
{
	/* Zero pieces longer than the zero buffer take several buffers. */
	size_t nbuf = sum->bufs;
	struct fuse_bufvec *bv = malloc(sizeof(*bv) + (nbuf ? nbuf - 1 : 0) *
					sizeof(bv->buf[0]));

	if (!bv)
		return NULL;
	bv->count = nbuf;
	bv->idx = 0;
	bv->off = 0;
	nbuf = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i].fd >= 0) {
			bv->buf[nbuf++] = (struct fuse_buf){
				.size = p[i].len,
				.flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK,
				.fd = p[i].fd,
				.pos = (off_t)p[i].off,
			};
			continue;
		}
		for (uint64_t left = p[i].len; left;) {
			size_t chunk = left < fs->zero_len ? (size_t)left : fs->zero_len;

			bv->buf[nbuf++] = (struct fuse_buf){
				.size = chunk,
				.mem = (void *)fs->zero,
			};
			left -= chunk;
		}
	}
	return bv;
}

/*
 * Whether a read is better gathered (gather.h) than spliced: when it has
 * two or more pieces of data (a splice and, for the truncation check, an
 * fstat each), is under two pages (libfuse copies those anyway), or is
 * more than a pipe holds (libfuse would then read it into a buffer it
 * allocates for the one reply). One piece of data splices without a copy.
 */
static bool gather_worth(const struct snapfs *fs, const struct read_sums *sum)
{
	if (sum->data == 0)
		return false;
	/* libfuse's pipe: a page per buffer and the header's, and the data */
	return sum->data >= 2 || sum->bytes < 2 * 4096 ||
	       sum->bytes + 4096 * (sum->bufs + 2) > fs->pipe_max;
}

/*
 * Reads the pieces into this thread's gather buffer (gather.h) and
 * describes them in iov. Returns the number of iovecs; 0, nothing read,
 * where this thread cannot gather them or a layer read short but is still
 * whole (the caller then goes another way, with its own checks); or
 * -errno, logged: -EIO for a view known broken or a layer truncated after
 * it was published.
 */
static int gather_pieces(struct snapfs *fs, struct view *v,
			 const struct view_piece *p, size_t n, struct iovec *iov)
{
	char why[512];
	size_t bad = 0;
	bool first;
	int ret = view_is_broken(v) ? -EIO :
		  gather_read(p, n, fs->zero, fs->zero_len, iov, GATHER_IOV, &bad);

	switch (ret) {
	case -EAGAIN:	/* no ring in this thread */
	case -E2BIG:	/* too many iovecs */
	case -ENOMEM:
		return 0;
	case -EIO:	/* broken before */
		return ret;
	case -ENODATA:
		/* The layer ended inside the piece: cut after it was published
		 * (else the splice path reads it again and finds out). */
		if (view_layer_short(v, p[bad].layer, &first, why, sizeof(why)) == 0)
			return 0;
		if (first)
			log_err("%s: %s", view_label(v), why);
		return -EIO;
	default:
		if (ret < 0)
			log_err_rl("%s: reading layer %s: %s", view_label(v),
				   v->layers[p[bad].layer].fname, strerror(-ret));
		return ret;
	}
}

/*
 * Answers the read from one gathered buffer (gather_pieces()) with one
 * writev. Returns 1 when the data was sent, -1 when an error was, and 0,
 * nothing sent, where the caller must answer it another way.
 */
static int reply_gathered(fuse_req_t req, struct snapfs *fs, struct view *v,
			  const struct view_piece *p, size_t n,
			  const struct read_sums *sum)
{
	struct iovec iov[GATHER_IOV];
	int ret = gather_pieces(fs, v, p, n, iov);

	if (ret > 0) {
		count_read(sum, READ_GATHERED);
		return fuse_reply_iov(req, iov, ret) == 0 ? 1 : -1;
	}
	if (ret == 0)
		return 0;
	stats_add(STAT_READ_ERRORS, 1);
	fuse_reply_err(req, -ret);
	return -1;
}

size_t fuse_read_view(fuse_req_t req, struct snapfs *fs, struct view *v,
		      size_t size, off_t off)
{
	struct view_piece stack_p[STACK_PIECES], *pieces = stack_p;
	struct fuse_bufvec *bv;
	struct read_sums sum;
	size_t n, sent = 0;
	char why[512];
	bool first;
	int ret;

	view_note_read(v);	/* the flattener waits for quiet (flatten.h) */
	/* Before the view's map is built (a fresh open of a deep chain),
	 * the pieces come from the layers' extents at off (view.h). */
	ret = view_read_pieces(v, (uint64_t)off, size, stack_p, STACK_PIECES,
			       &pieces, &n, why, sizeof(why));
	if (ret) {
		if (why[0])
			log_err_rl("%s: %s", view_label(v), why);
		if (ret == -EIO)
			stats_add(STAT_READ_ERRORS, 1);
		fuse_reply_err(req, -ret);
		return 0;
	}
	if (n == 0) {
		fuse_reply_buf(req, NULL, 0);
		return 0;
	}
	sum_pieces(fs, pieces, n, &sum);
	/* A gathered read learns from the read itself whether a layer was
	 * cut short under us (reply_gathered()). */
	if (fs->reply == REPLY_GATHER && gather_worth(fs, &sum) &&
	    (ret = reply_gathered(req, fs, v, pieces, n, &sum)) != 0) {
		if (ret > 0)
			sent = sum.bytes;
		goto out;
	}
	/* Otherwise the reply would come out short, which the kernel takes
	 * for EOF (splice), or fault the copy (mappings). */
	if (view_check_read(v, pieces, n, &first, why, sizeof(why)) != 0) {
		if (first)
			log_err("%s: %s", view_label(v), why);
		stats_add(STAT_READ_ERRORS, 1);
		fuse_reply_err(req, EIO);
		goto out;
	}
	if (fs->reply == REPLY_MMAP && reply_from_maps(req, fs, pieces, n, &sum)) {
		count_read(&sum, READ_MAPPED);
		sent = sum.bytes;
		goto out;
	}
	bv = bufvec_of_pieces(fs, pieces, n, &sum);
	if (!bv) {
		fuse_reply_err(req, ENOMEM);
		goto out;
	}
	count_read(&sum, READ_SPLICED);
	if (fuse_reply_data(req, bv, 0) == 0)
		sent = sum.bytes;
	free(bv);
out:
	if (pieces != stack_p)
		free(pieces);
	return sent;
}

/* ---- the prefetch push (prefetch.h) ---- */

/*
 * Pushes the pieces gathered (gather.h): one io_uring submission reads
 * them, and each run of the buffer goes out in one write, where a splice
 * per piece would cost a system call each. Returns 1 when done, 0 when
 * the caller must splice instead (nothing pushed), or -errno.
 */
static int push_gathered(struct snapfs *fs, uint64_t nodeid, struct view *v,
			 uint64_t off, const struct view_piece *p, size_t n)
{
	struct iovec iov[GATHER_IOV];
	int ret = gather_pieces(fs, v, p, n, iov);

	if (ret <= 0)
		return ret;
	for (int i = 0; i < ret; i++) {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(iov[i].iov_len);
		int r;

		/* One memory buffer: libfuse writes it with the header in
		 * one writev, no copy of its own. */
		bv.buf[0].mem = iov[i].iov_base;
		r = fuse_lowlevel_notify_store(fs->se, (fuse_ino_t)nodeid, (off_t)off, &bv,
					       FUSE_BUF_NO_SPLICE);
		if (r)
			return r;
		off += iov[i].iov_len;
	}
	return 1;
}

int snapfs_push(void *ctx, uint64_t nodeid, struct view *v, uint64_t off,
		const struct view_piece *p, size_t n)
{
	struct snapfs *fs = ctx;
	struct fuse_bufvec *bv;
	struct read_sums sum;
	char why[512];
	bool first;
	int ret;

	sum_pieces(fs, p, n, &sum);
	/* Gathered unless read_reply=splice rules io_uring out: with
	 * read_reply=mmap too, where writing from the maps would fault the
	 * daemon's mappings of cold layers in one page after another. */
	if (fs->reply != REPLY_SPLICE && sum.data >= 2) {
		ret = push_gathered(fs, nodeid, v, off, p, n);
		if (ret)
			return ret < 0 ? ret : 0;
	}
	/* A layer truncated after it was published must not make the push
	 * short (view_check_read()). */
	if (view_check_read(v, p, n, &first, why, sizeof(why))) {
		if (first)
			log_err("%s: %s", view_label(v), why);
		return -EIO;
	}
	bv = bufvec_of_pieces(fs, p, n, &sum);
	if (!bv)
		return -ENOMEM;
	/* No SPLICE_MOVE: it moves nothing for a notification, and the
	 * layers' pages must stay theirs (see snapfs_op_init()). */
	ret = fuse_lowlevel_notify_store(fs->se, (fuse_ino_t)nodeid, (off_t)off, bv, 0);
	free(bv);
	return ret;
}

void snapfs_push_drop(void *ctx, uint64_t nodeid)
{
	struct snapfs *fs = ctx;
	int ret = fuse_lowlevel_notify_inval_inode(fs->se, (fuse_ino_t)nodeid, 0, 0);

	/* -ENOENT: the kernel has forgotten the inode and its pages. */
	if (ret && ret != -ENOENT)
		log_debug("dropping the pushed pages of inode %llu: %s",
			  (unsigned long long)nodeid, strerror(-ret));
}

void snapfs_flat_drop(void *ctx, uint64_t nodeid)
{
	struct snapfs *fs = ctx;

	/* Opened again meanwhile: by passthrough, whose open dropped the
	 * cache itself, or on the FUSE path (passthrough refused), which
	 * uses it. A race with an open that comes just after this check
	 * costs at most a re-read: a dropped page is read again through
	 * FUSE, never wrong. */
	if (!passthrough_enabled(fs->pt) || passthrough_opens(fs->pt, (fuse_ino_t)nodeid))
		return;	/* off since it was queued: the FUSE path keeps serving */
	prefetch_unneeded(fs->nodes, nodeid);
	snapfs_push_drop(ctx, nodeid);
	stats_add(STAT_FLAT_CACHE_DROPS, 1);
	log_debug("inode %llu: its page cache dropped: new opens are served by passthrough",
		  (unsigned long long)nodeid);
}
