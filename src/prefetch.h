/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The prefetch push (doc/design.md §18): after the first open of a version,
 * one background thread pushes the version's bytes into the kernel's page
 * cache of its inode, so that a VMM's faults find them there instead of
 * asking the daemon. The diffs' pages come first (the pages the VM touched
 * last: its working set), with the rest of their 1 MiB windows, in file
 * order; with PREFETCH_ALL the other windows follow. The bytes come from the version's own view, which never
 * changes, so a pushed page is always what a read of that version returns.
 *
 * This module decides what to push, when, and how much; how bytes reach
 * the kernel is the FUSE layer's (struct prefetch_opts.store).
 */
#ifndef SNAPFS_PREFETCH_H
#define SNAPFS_PREFETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "node.h"
#include "view.h"

/* The largest push: libfuse splices a notification through a pipe of at
 * most 1 MiB with its header; a bigger one silently falls back to copying
 * (measured: about half the speed). */
#define PREFETCH_CHUNK (1000u << 10)

enum prefetch_mode {
	PREFETCH_OFF,
	PREFETCH_DIFFS,		/* the 1 MiB windows that hold pages of
				   the chain's diffs */
	PREFETCH_ALL,		/* those, then every other window */
};

/*
 * Stores [off, off + len) of the version with FUSE node id nodeid into the
 * kernel's page cache of that inode; the bytes are described by pieces
 * p[0..n) of its view v (view_map_read()), fd-backed or zeros. As before a
 * read's reply, a layer truncated after it was published must not make
 * the push short: -EIO then, with one log line. Returns 0 or -errno
 * (-ENOENT: the kernel does not know the inode any more).
 */
typedef int (*prefetch_store_fn)(void *ctx, uint64_t nodeid, struct view *v,
				 uint64_t off, const struct view_piece *p, size_t n);

/* Drops every cached page of the inode with node id nodeid (a version no
 * one holds any more, whose pushed copy only costs memory). */
typedef void (*prefetch_drop_fn)(void *ctx, uint64_t nodeid);

struct prefetch_opts {
	enum prefetch_mode mode;
	uint64_t budget;	/* bytes pushed and still held, all versions */
	uint64_t rate;		/* bytes per second; 0: unlimited */
	prefetch_store_fn store;
	prefetch_drop_fn drop;
	void *ctx;
};

/*
 * Parses "off", "diffs" or "all" into *mode. Returns 0, or -EINVAL.
 */
int prefetch_parse_mode(const char *s, enum prefetch_mode *mode);

/*
 * Starts the push thread for table t (after the daemon has forked). With
 * mode PREFETCH_OFF nothing is started and the other calls do nothing.
 * Returns 0 or -errno (logged; the mount then serves without pushing).
 */
int prefetch_start(struct node_table *t, const struct prefetch_opts *o);

/*
 * Stops the thread within one chunk's push, then drops every job, its view
 * and its node reference. Call after the FUSE session loop ended, before
 * the node table is freed. Safe when prefetch_start() was not called.
 */
void prefetch_stop(struct node_table *t);

/*
 * An open of version n (node id nodeid) was answered with view v: the first
 * open of a version queues its push; every open counts, so that the push of
 * a version no one holds stops. Takes its own references. Never fails the
 * open: without memory the version is simply not pushed.
 */
void prefetch_opened(struct node_table *t, struct node *n, uint64_t nodeid,
		     struct view *v);

/* The release of an open counted by prefetch_opened(); nodeid only serves
 * as a key (the node is not touched). */
void prefetch_released(struct node_table *t, uint64_t nodeid);

/*
 * Version nodeid's next opens are served by passthrough to its flat file
 * (flatten.h), so pushing it is of no more use: its push stops ("stopped:
 * flat file ready"), and the job ends, its charge returned and its pages
 * dropped, once no open counted here holds it. nodeid only serves as a key.
 */
void prefetch_unneeded(struct node_table *t, uint64_t nodeid);

/*
 * Where the push of version n stands, for user.snapfs.prefetch: "off",
 * "none" (not opened yet, or no longer held), "pushing N/M", "waiting:
 * budget N/M", "done N/M", or "stopped: CAUSE N/M" (bytes of the plan
 * done, of the plan), followed by " (K read before the push)" when K of
 * the N bytes were skipped (prefetch_served()). malloc'd, or NULL without
 * memory.
 */
char *prefetch_describe(struct node_table *t, struct node *n);

/*
 * A read reply gave the kernel [off, off + len) of node id nodeid's page
 * cache: the push of that version skips those pages, whole pages only
 * (the last, partial page of the file where the read reached its end).
 * Only what the push would copy again is saved: a page skipped that the
 * kernel did not keep is read through FUSE at its next fault. nodeid only
 * serves as a key.
 */
void prefetch_served(struct node_table *t, uint64_t nodeid, uint64_t off, uint64_t len);

/* Bytes pushed and still charged to the budget, across versions. */
uint64_t prefetch_charged(struct node_table *t);

/*
 * The pushes of view v in mode: calls fn(arg, off, len) for each range, in
 * order (the windows with diff data first, then, for PREFETCH_ALL, the
 * others),
 * each at most PREFETCH_CHUNK bytes, within [0, v->size). Returns the sum of
 * len. Exposed for the unit test.
 */
uint64_t prefetch_plan(const struct view *v, enum prefetch_mode mode,
		       void (*fn)(void *arg, uint64_t off, uint64_t len),
		       void *arg);

#endif
