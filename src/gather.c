/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Gathered reads (gather.h). Per thread: one io_uring of RING_ENTRIES and
 * one page-aligned buffer that grows to the largest read the thread has
 * answered. A read's data pieces are submitted RING_ENTRIES at a time with
 * io_uring_submit_and_wait(); reads of cached pages complete inside that
 * call, cold ones when the layer's I/O does.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gather.h"

#ifdef HAVE_LIBURING
#include <liburing.h>
#ifdef __SANITIZE_THREAD__
#include <sanitizer/tsan_interface.h>
#endif

/* A 1 MiB request of a depth-64 chain is about 220 pieces of data: one
 * submission holds them all (16 KiB of SQEs and 8 KiB of CQEs a thread). */
#define RING_ENTRIES 256
#define STACK_POS 64	/* pieces' offsets kept on the stack */

struct gather {
	struct io_uring ring;
	char *buf;
	size_t cap;
};

static pthread_key_t gather_key;
static pthread_once_t gather_once = PTHREAD_ONCE_INIT;
static bool gather_ok;
static unsigned rings_max = UINT_MAX;	/* gather_set_max_rings() */
static unsigned rings_live;		/* atomic */

/*
 * liburing maps and unmaps rings with raw system calls, which
 * ThreadSanitizer does not see. A thread's ring is unmapped when the thread
 * ends (gather_free), and the kernel may map the next thread's ring at the
 * same address; the new ring's plain reads of its head were then checked
 * against the old thread's last writes there (a race reported between two
 * rings that never shared a byte). What orders them is the kernel: every
 * unmap comes before the map that reuses its addresses: ring_exit() and
 * ring_init() tell ThreadSanitizer so, through one address that every
 * teardown releases and every new ring acquires.
 */
#ifdef __SANITIZE_THREAD__
static char ring_order;	/* what ring_exit() releases and ring_init() acquires */
#endif

static void ring_exit(struct io_uring *ring)
{
#ifdef __SANITIZE_THREAD__
	__tsan_release(&ring_order);
#endif
	io_uring_queue_exit(ring);
}

void gather_set_max_rings(unsigned n)
{
	rings_max = n;
}

/*
 * A thread's buffer is mapped on its own, not taken from the heap: it is
 * 128 KiB to a few MiB, resident as far as it was used, and threads come
 * and go. Taken from the heap (128 KiB is below the size past which glibc
 * maps a block on its own, memtrim.h), its pages stayed resident after its
 * thread ended, wherever another block kept them.
 */
static void buf_free(struct gather *g)
{
	if (g->buf)
		munmap(g->buf, g->cap);
	g->buf = NULL;
	g->cap = 0;
}

static void gather_free(void *arg)
{
	struct gather *g = arg;

	ring_exit(&g->ring);
	buf_free(g);
	free(g);
	__atomic_sub_fetch(&rings_live, 1, __ATOMIC_RELAXED);
}

static int ring_init(struct io_uring *ring)
{
	unsigned flags = 0;
	int ret;

	/* Only this thread submits, and it waits for every completion:
	 * no need for the kernel to interrupt it to run completions. */
#ifdef IORING_SETUP_SINGLE_ISSUER
	flags |= IORING_SETUP_SINGLE_ISSUER;
#endif
#ifdef IORING_SETUP_COOP_TASKRUN
	flags |= IORING_SETUP_COOP_TASKRUN;
#endif
#ifdef IORING_SETUP_SUBMIT_ALL	/* a bad SQE fails alone */
	flags |= IORING_SETUP_SUBMIT_ALL;
#endif
	ret = io_uring_queue_init(RING_ENTRIES, ring, flags);
	if (ret == -EINVAL && flags)	/* a kernel older than the flags */
		ret = io_uring_queue_init(RING_ENTRIES, ring, 0);
#ifdef __SANITIZE_THREAD__
	if (ret == 0)
		__tsan_acquire(&ring_order);
#endif
	return ret;
}

static void gather_probe(void)
{
	struct io_uring ring;
	struct io_uring_probe *probe;

	if (pthread_key_create(&gather_key, gather_free) != 0)
		return;
	if (ring_init(&ring) < 0)
		return;
	probe = io_uring_get_probe_ring(&ring);
	gather_ok = probe && io_uring_opcode_supported(probe, IORING_OP_READ);
	if (probe)
		io_uring_free_probe(probe);
	ring_exit(&ring);
}

bool gather_supported(void)
{
	pthread_once(&gather_once, gather_probe);
	return gather_ok;
}

/* The calling thread's ring and a buffer of at least size bytes; NULL if
 * no ring can be made (*err -EAGAIN) or no memory (*err -ENOMEM). */
static struct gather *gather_self(size_t size, int *err)
{
	struct gather *g;

	*err = -EAGAIN;
	if (!gather_supported())
		return NULL;
	g = pthread_getspecific(gather_key);
	if (!g) {
		g = calloc(1, sizeof(*g));
		if (!g) {
			*err = -ENOMEM;
			return NULL;
		}
		/* Past the rings the fd budget leaves room for, EMFILE or a
		 * memory limit: this thread answers another way and tries
		 * again on its next read. */
		if (__atomic_add_fetch(&rings_live, 1, __ATOMIC_RELAXED) > rings_max ||
		    ring_init(&g->ring) < 0) {
			__atomic_sub_fetch(&rings_live, 1, __ATOMIC_RELAXED);
			free(g);
			return NULL;
		}
		if (pthread_setspecific(gather_key, g) != 0) {
			gather_free(g);
			return NULL;
		}
	}
	if (g->cap < size) {
		size_t cap = g->cap ? g->cap : 128 << 10;
		void *buf;

		while (cap < size)
			cap *= 2;
		buf = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (buf == MAP_FAILED) {
			*err = -ENOMEM;
			return NULL;
		}
		buf_free(g);
		g->buf = buf;
		g->cap = cap;
	}
	return g;
}

/*
 * Finishes a piece the ring read short: the rest with pread(). A regular
 * file reads short only at its end, so 0 bytes there means the layer was
 * cut below the piece.
 */
static int finish_short(const struct view_piece *p, char *dst, size_t done)
{
	while (done < p->len) {
		ssize_t r = pread(p->fd, dst + done, (size_t)p->len - done,
				  (off_t)(p->off + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ENODATA;
		done += (size_t)r;
	}
	return 0;
}

/* Throws away whatever the ring still holds (only this thread uses it);
 * if no new ring can be made, the thread has none until its next read. */
static void ring_reset(struct gather *g)
{
	ring_exit(&g->ring);
	if (ring_init(&g->ring) < 0) {
		pthread_setspecific(gather_key, NULL);
		buf_free(g);
		free(g);
		__atomic_sub_fetch(&rings_live, 1, __ATOMIC_RELAXED);
	}
}

/*
 * Submits the inflight reads queued since the last call, waits for them
 * and checks each result. A submission the kernel cut short (it stops at
 * an SQE it cannot take) gives -EAGAIN once the reads it did take are
 * done, and a new ring: nothing queued may run later into a reused buffer.
 */
static int reap(struct gather *g, const struct view_piece *p,
		const size_t *pos, unsigned inflight, size_t *bad)
{
	int submitted = io_uring_submit_and_wait(&g->ring, inflight), err = 0;

	if (submitted < 0) {
		ring_reset(g);
		return -EAGAIN;
	}
	for (int k = 0; k < submitted; k++) {
		struct io_uring_cqe *cqe;
		size_t i;
		int ret;

		ret = io_uring_wait_cqe(&g->ring, &cqe);
		if (ret == -EINTR) {
			k--;
			continue;
		}
		if (ret < 0) {	/* cannot happen with completions due */
			ring_reset(g);
			return -EAGAIN;
		}
		i = (size_t)io_uring_cqe_get_data64(cqe);
		ret = cqe->res;
		io_uring_cqe_seen(&g->ring, cqe);
		if (err)
			continue;
		if (ret >= 0 && (uint64_t)ret < p[i].len)
			ret = finish_short(&p[i], g->buf + pos[i], (size_t)ret);
		if (ret < 0) {
			err = ret;
			*bad = i;
		}
	}
	if ((unsigned)submitted != inflight) {
		ring_reset(g);
		return -EAGAIN;
	}
	return err;
}

int gather_read(const struct view_piece *p, size_t n, const char *zero,
		size_t zero_len, struct iovec *iov, size_t max, size_t *bad)
{
	size_t total = 0, niov = 0, stack_pos[STACK_POS], *pos = stack_pos;
	struct gather *g;
	unsigned queued = 0;
	int ret;

	for (size_t i = 0; i < n; i++)
		total += (size_t)p[i].len;
	g = gather_self(total, &ret);
	if (!g)
		return ret;
	if (n > STACK_POS) {
		pos = malloc(n * sizeof(*pos));
		if (!pos)
			return -ENOMEM;
	}
	/* The iovecs first: nothing is read if they do not fit. */
	total = 0;
	for (size_t i = 0; i < n; i++) {
		pos[i] = total;
		if (p[i].fd >= 0) {
			if (niov && iov[niov - 1].iov_base != zero &&
			    (char *)iov[niov - 1].iov_base + iov[niov - 1].iov_len ==
			    g->buf + total) {
				iov[niov - 1].iov_len += (size_t)p[i].len;
			} else if (niov < max) {
				iov[niov++] = (struct iovec){ g->buf + total, (size_t)p[i].len };
			} else {
				ret = -E2BIG;
				goto out;
			}
		} else {
			for (uint64_t left = p[i].len; left;) {
				size_t chunk = left < zero_len ? (size_t)left : zero_len;

				if (niov == max) {
					ret = -E2BIG;
					goto out;
				}
				iov[niov++] = (struct iovec){ (void *)zero, chunk };
				left -= chunk;
			}
		}
		total += (size_t)p[i].len;
	}
	ret = 0;
	for (size_t i = 0; i < n && !ret; i++) {
		struct io_uring_sqe *sqe;

		if (p[i].fd < 0)
			continue;
		sqe = io_uring_get_sqe(&g->ring);
		io_uring_prep_read(sqe, p[i].fd, g->buf + pos[i], (unsigned)p[i].len, p[i].off);
		io_uring_sqe_set_data64(sqe, i);
		if (++queued == RING_ENTRIES) {
			ret = reap(g, p, pos, queued, bad);
			queued = 0;
		}
	}
	if (!ret && queued)
		ret = reap(g, p, pos, queued, bad);
	if (!ret)
		ret = (int)niov;
out:
	if (pos != stack_pos)
		free(pos);
	return ret;
}

#else /* !HAVE_LIBURING */

void gather_set_max_rings(unsigned n)
{
	(void)n;
}

bool gather_supported(void)
{
	return false;
}

int gather_read(const struct view_piece *p, size_t n, const char *zero,
		size_t zero_len, struct iovec *iov, size_t max, size_t *bad)
{
	(void)p; (void)n; (void)zero; (void)zero_len; (void)iov; (void)max; (void)bad;
	return -EAGAIN;
}

#endif
