/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The monotonic clock in nanoseconds, for due times and windows that must
 * not move with the wall clock.
 */
#ifndef SNAPFS_MONOTIME_H
#define SNAPFS_MONOTIME_H

#include <stdint.h>
#include <time.h>

static inline int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
