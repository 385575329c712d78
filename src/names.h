/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What a directory of the mount shows (names.c): lookups, listings,
 * attributes and opens of STORE's entries and layered files, and rollback
 * by unlink, the one write the mount allows.
 */
#ifndef SNAPFS_NAMES_H
#define SNAPFS_NAMES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "node.h"

/*
 * Looks name up in directory parent for thread pid (0 if unknown; see
 * node_version_check()). On success the returned node has one more lookup
 * count (the kernel's) and *st holds its attributes. Returns 0, -ENOENT,
 * -ENOTDIR, or another -errno.
 */
int node_lookup(struct node_table *t, struct node *parent, const char *name,
		uint32_t pid, struct node **out, struct stat *st);

/* Attributes of n now: fstat for STORE entries, the fixed ones for views. */
int node_getattr(struct node_table *t, struct node *n, struct stat *st);

/* One directory entry as listed: name, type, and inode number to show. */
struct node_dirent {
	const char *name;
	unsigned char d_type;
	uint64_t ino;
};

/*
 * A directory's listing as it was when taken: positions 0..count-1, first
 * the entries of the directory's index (those shown), then its layered
 * NAMEs. It keeps a reference to that index, whose names it lists, and
 * adds an inode number per NAME: a listing of a directory of 100,000
 * names copies no name. Which entries are hidden is read off the index.
 */
struct node_listing {
	struct store_dir *idx;
	uint64_t *ino;		/* idx->ngroups inode numbers */
	size_t count;		/* idx->nentries + idx->ngroups */
};

/*
 * Lists directory n as shown at the mount: STORE's entries, plus one entry
 * per layered NAME, minus plain entries a layered NAME hides, from the
 * directory's index (refreshed first if the directory changed). Returns 0
 * and *out (free with node_listing_free()), or -errno.
 */
int node_list_dir(struct node_table *t, struct node *n, struct node_listing *out);

/* Position pos of l into *de (its name points into l): false if the
 * entry there is not shown (skip it). pos < l->count. */
bool node_listing_get(const struct node_listing *l, size_t pos, struct node_dirent *de);

void node_listing_free(struct node_listing *l);

/*
 * Builds (or refreshes) the index of directory n, as its first lookup or
 * listing would: the daemon primes STORE's root with it at the start, so
 * that the first open after a mount does not read the whole root. Returns
 * 0 or -errno.
 */
int node_dir_index(struct node_table *t, struct node *n);

/*
 * Reads directory n again and retires the versions of its names that have
 * no layer left; all of its versions where the directory itself was
 * deleted or moved out of STORE. What a lookup or listing in n would do,
 * for a directory nobody looks in any more: without it a deleted name's
 * version, and a flat file that shares its layers' blocks, stayed until
 * the unmount (doc/design.md §19.6). The change watcher's sweep hook
 * (dirwatch_start()). No lock held.
 */
void node_dir_sweep(struct node_table *t, struct node *n);

/*
 * Opens the STORE file behind n for reading (never through a symlink).
 * Returns an fd or -errno.
 */
int node_open_file(struct node_table *t, struct node *n, int flags);

/*
 * Rollback through the mount (doc/format.md §2): removes name from STORE if it is
 * the highest diff of its chain. Returns 0; -EBUSY (logged) for any other
 * layer; -EROFS for entries that are not layers; -ENOENT.
 */
int node_unlink(struct node_table *t, struct node *dir, const char *name);

#endif
