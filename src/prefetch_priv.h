/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What prefetch.c (the jobs and their thread) and prefetch_plan.c (what
 * to push, in which order) share, and nothing else includes.
 */
#ifndef SNAPFS_PREFETCH_PRIV_H
#define SNAPFS_PREFETCH_PRIV_H

#include <stdbool.h>
#include <stdint.h>

#include "prefetch.h"
#include "view.h"

/* The push goes by windows of this many bytes, aligned: a window that
 * holds a diff's data is pushed whole, in the first phase. A fault's
 * read-around (snapfs asks the kernel for 1 MiB) fetches the window's
 * other pages anyway; pushed with the diffs' pages, they come in large
 * pushes instead of the many small reads that cached pages cut a
 * read-around into. */
#define WINDOW (1u << 20)

/* Where a job's push stands: phase 0 the windows with diff data, phase 1
 * the rest; off the next byte of the phase. */
struct pcursor {
	int phase;
	uint64_t off;
};

/*
 * The next range to push after cursor c, at most PREFETCH_CHUNK bytes:
 * the windows of the phase that follow each other. Phase 0 is the windows
 * that hold a diff's data, phase 1 (PREFETCH_ALL) the others, so no byte
 * is pushed twice. Returns false when the plan is done.
 */
bool prefetch_next_chunk(const struct view *v, enum prefetch_mode mode,
			 struct pcursor *c, uint64_t *off, uint64_t *len);

/* The bytes the plan of v still holds after cursor c (prefetch_plan()'s
 * total from there). */
uint64_t prefetch_plan_left(const struct view *v, enum prefetch_mode mode,
			    struct pcursor c);

#endif
