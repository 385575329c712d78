/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Change notification for STORE's directories: one inotify instance and one
 * thread that reads it and hands each event to a callback. It knows nothing
 * of nodes; the caller maps watch descriptors to what they stand for.
 */
#ifndef SNAPFS_WATCH_H
#define SNAPFS_WATCH_H

#include <stdint.h>

struct watch;

/*
 * Called on the watch thread for every event: wd is the watch descriptor
 * (-1 for a queue overflow, after which the caller must assume anything
 * changed), name the entry inside the directory ("" for events on the
 * directory itself), mask the inotify mask. Must not block for long.
 */
typedef void (*watch_fn)(void *ctx, int wd, const char *name, uint32_t mask);

/*
 * Called on the watch thread after every wake-up (events, a timeout):
 * does what is due and returns the milliseconds until something more is,
 * or -1 for nothing. May take the caller's locks and do I/O: events wait
 * in the kernel meanwhile.
 */
typedef int (*watch_tick_fn)(void *ctx);

/* Starts the watcher; tick may be NULL. Returns 0, or -errno (no inotify,
 * no thread). */
int watch_start(watch_fn fn, watch_tick_fn tick, void *ctx, struct watch **out);

/* Stops the thread and closes the instance. */
void watch_stop(struct watch *w);

/*
 * Watches the directory open as fd (O_PATH is fine) for entries created,
 * deleted, renamed, written or changed in attributes. Returns the watch
 * descriptor, or -errno (-ENOSPC: the user's watch limit is reached).
 */
int watch_add(struct watch *w, int fd);

/* Stops watching wd; harmless if the kernel already dropped it. */
void watch_remove(struct watch *w, int wd);

#endif
