/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Gathered reads: every data piece of a view read, whatever layer it comes
 * from, read into one buffer with a single io_uring submission.
 *
 * A read that spans many segments (a deep chain leaves nearly every page
 * its own segment) costs one splice() per piece on the zero-copy path, and
 * on this kind of machine a system call costs more than copying a page.
 * Gathering trades those calls for one io_uring_enter() and a copy into a
 * buffer of the thread's own; the reply is then one writev() of that
 * buffer and slices of the zero buffer for holes. Each piece's result also
 * tells whether its layer still holds it, so a truncated layer is noticed
 * without an fstat() per layer. doc/design.md §20.
 *
 * Each thread has its own ring and buffer, made on first use and freed
 * when the thread ends. Without liburing (configure), or where the kernel
 * refuses a ring, gather_supported() is false and callers answer reads
 * another way.
 */
#ifndef SNAPFS_GATHER_H
#define SNAPFS_GATHER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include "view.h"

#ifdef HAVE_LIBURING
#define GATHER_BUILT true	/* configure found liburing */
#else
#define GATHER_BUILT false
#endif

/* Whether rings can be set up here and read files (probed once: liburing
 * built in, a kernel with IORING_OP_READ, io_uring not disabled).
 * Thread-safe. */
bool gather_supported(void);

/* At most n threads have a ring at once (each is one fd; main sets it
 * from the fd budget's reserve); the others answer another way. Call
 * before the first read. */
void gather_set_max_rings(unsigned n);

/*
 * Reads the data pieces of p[0..n) (fd >= 0), each to its place in the
 * calling thread's buffer, and describes the whole read in iov (at most
 * max entries): runs of data in that buffer, holes as slices of
 * zero[0..zero_len). The buffer stays valid until the thread's next call.
 *
 * Returns the number of iovecs; -EAGAIN if this thread has no ring (none
 * could be made: nothing was read, answer another way); -E2BIG if the read
 * needs more than max iovecs; -ENOMEM; -ENODATA if a layer ended before a
 * piece (truncated) and -errno if reading it failed, with *bad set to that
 * piece's index.
 */
int gather_read(const struct view_piece *p, size_t n, const char *zero,
		size_t zero_len, struct iovec *iov, size_t max, size_t *bad);

#endif
