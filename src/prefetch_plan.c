/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What the prefetch push sends, in which order (doc/design.md §18): a
 * view's windows that hold diff data, then, with PREFETCH_ALL, the
 * others. Pure functions of the view; the jobs and the thread that push
 * are prefetch.c's.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "prefetch.h"
#include "prefetch_priv.h"

int prefetch_parse_mode(const char *s, enum prefetch_mode *mode)
{
	if (strcmp(s, "off") == 0)
		*mode = PREFETCH_OFF;
	else if (strcmp(s, "diffs") == 0)
		*mode = PREFETCH_DIFFS;
	else if (strcmp(s, "all") == 0)
		*mode = PREFETCH_ALL;
	else
		return -EINVAL;
	return 0;
}

static bool seg_is_diff(const struct view *v, size_t i)
{
	return v->seg[i].layer > 0;	/* 0 is the base, VIEW_ZERO a hole */
}

/* Whether window w of v holds data of a diff: it is pushed in phase 0. */
static bool window_first(const struct view *v, uint64_t w)
{
	uint64_t start = w * WINDOW, end = start + WINDOW;

	for (size_t i = view_find(v, start); i < v->nseg && v->seg[i].off < end; i++)
		if (seg_is_diff(v, i))
			return true;
	return false;
}

bool prefetch_next_chunk(const struct view *v, enum prefetch_mode mode,
			 struct pcursor *c, uint64_t *off, uint64_t *len)
{
	for (;;) {
		uint64_t w, end;

		if (c->off >= v->size) {
			if (c->phase == 1 || mode != PREFETCH_ALL)
				return false;
			*c = (struct pcursor){ .phase = 1 };
			continue;
		}
		w = c->off / WINDOW;
		if (window_first(v, w) != (c->phase == 0)) {
			c->off = (w + 1) * WINDOW;
			continue;
		}
		end = (w + 1) * WINDOW;
		while (end - c->off < PREFETCH_CHUNK && end < v->size &&
		       window_first(v, end / WINDOW) == (c->phase == 0))
			end += WINDOW;
		if (end > v->size)
			end = v->size;
		if (end - c->off > PREFETCH_CHUNK)
			end = c->off + PREFETCH_CHUNK;
		*off = c->off;
		*len = end - c->off;
		c->off = end;
		return true;
	}
}

static uint64_t plan_from(const struct view *v, enum prefetch_mode mode,
			  struct pcursor c,
			  void (*fn)(void *arg, uint64_t off, uint64_t len), void *arg)
{
	uint64_t off, len, sum = 0;

	if (mode == PREFETCH_OFF)
		return 0;
	while (prefetch_next_chunk(v, mode, &c, &off, &len)) {
		if (fn)
			fn(arg, off, len);
		sum += len;
	}
	return sum;
}

uint64_t prefetch_plan(const struct view *v, enum prefetch_mode mode,
		       void (*fn)(void *arg, uint64_t off, uint64_t len),
		       void *arg)
{
	return plan_from(v, mode, (struct pcursor){ 0 }, fn, arg);
}

uint64_t prefetch_plan_left(const struct view *v, enum prefetch_mode mode,
			    struct pcursor c)
{
	return plan_from(v, mode, c, NULL, NULL);
}
