/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The store's naming rules (doc/format.md §2): which directory entries are layers of
 * which layered file, and which layers make up a file's chain. Pure logic on
 * names plus one directory scan; nothing here opens a layer.
 */
#ifndef SNAPFS_STORE_H
#define SNAPFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum store_kind {
	STORE_BASE,
	STORE_DIFF,
};

/* What a layer file name says: NAME.<seq>.base or NAME.<seq>.diff. */
struct store_name {
	size_t name_len;	/* length of NAME, the prefix of the file name */
	uint64_t seq;		/* <seq> as a number (valid unless overflow) */
	enum store_kind kind;
	bool overflow;		/* <seq> has more value than 64 bits hold */
};

/*
 * Parses a directory entry name. Returns true if it has the layer shape
 * (non-empty NAME, all-digit <seq>, "base" or "diff"), filling *out; a <seq>
 * too large for uint64_t still returns true, with out->overflow set, so the
 * caller can make NAME unavailable rather than ignore the layer.
 */
bool store_parse_name(const char *fname, struct store_name *out);

/* One layer file found in a directory. */
struct store_layer {
	char *fname;		/* the directory entry: in its index's block,
				   or owned by a chain (store_chain_from_names()) */
	uint64_t seq;
	enum store_kind kind;
	bool overflow;
	unsigned char d_type;	/* DT_REG, DT_LNK, ... (DT_UNKNOWN if unsure) */
};

/* All layers of one NAME, sorted by seq (bases before diffs at equal seq). */
struct store_group {
	char *name;		/* NAME, in its index's block */
	size_t nlayers;
	struct store_layer *layers;
	bool shadows_plain;	/* a plain entry called NAME is hidden by it */
	uint32_t name_len;	/* strlen(name) */
};

/* A directory's layered files, sorted by name, and a hash of the names
 * (open addressing: a slot holds a group's index + 1, 0 if empty, and the
 * high bits of its name's hash, so that most misses read no name). */
struct store_slot {
	uint32_t group;
	uint32_t tag;
};

/* One entry of the directory as the scan read it. */
struct store_entry {
	const char *name;
	uint64_t ino;		/* d_ino (0 from store_dir_from_names()) */
	unsigned char d_type;
	bool named;		/* a NAME of the index is called this: it is hidden */
	uint32_t group;		/* a layer file: its NAME's group + 1; else 0 */
};

struct store_dir {
	size_t ngroups;
	struct store_group *groups;
	struct store_slot *slots;	/* mask + 1 of them, at most half full */
	size_t mask;
	/* Every entry (. and .. too, from a scan), in the directory's order:
	 * what a listing shows of the directory while the index is current. */
	size_t nentries;
	struct store_entry *entries;
	/* The blocks the pointers above point into: the entries' names
	 * (layers' fnames are entries' names), the groups' NAMEs, and every
	 * group's layers. */
	char *names, *group_names;
	struct store_layer *layers;
	unsigned refs;		/* store_dir_get(), store_dir_free() */
};

/*
 * Reads every entry of the open directory dirfd (the fd's position is not
 * used: the scan works on a dup) and groups the layer files by NAME.
 * Returns 0 and a new *out that the caller frees with store_dir_free(), or
 * -errno (the directory could not be read, or memory ran out).
 */
int store_dir_scan(int dirfd, struct store_dir **out);

/* Builds the same index from a list of names, for tests and callers that
 * already hold a listing. d_types may be NULL (all DT_UNKNOWN). */
int store_dir_from_names(const char *const *names, const unsigned char *d_types,
			 size_t n, struct store_dir **out);

/* Another reference to dir (a listing keeps the index it was taken from,
 * while the directory's own moves on); store_dir_free() drops one and
 * frees the index with the last. Atomic. */
struct store_dir *store_dir_get(struct store_dir *dir);
void store_dir_free(struct store_dir *dir);

/* The hash of a name (XXH64) for the indexes by name: a directory's
 * groups, its current versions, its stale opens. */
uint64_t store_name_hash(const char *name);

/* The group called name, or NULL. O(1): a listing asks it of every entry. */
const struct store_group *store_dir_find(const struct store_dir *dir,
					 const char *name);

/* The chain of a group: its base and the diffs above it. */
struct store_chain {
	size_t nlayers;				/* base + diffs */
	const struct store_layer **layers;	/* base first; owned array,
						   layers point into the group
						   (or into own) */
	const struct store_layer *culprit;	/* on -EIO: the layer at fault,
						   if one is */
	struct store_layer *own;		/* the layers themselves, with
						   their names, when the chain
						   was built from names; else
						   NULL */
};

/*
 * Resolves the chain of group g (doc/format.md §2): the base with the highest seq and
 * every diff with a greater seq, in increasing order. Returns 0 and fills
 * *chain (free with store_chain_free()), or a negative errno with *why set
 * to a static sentence for the log and for user.snapfs.error, about
 * chain->culprit when that is set:
 *   -EIO    no base at or below the diffs, a <seq> that overflows, two
 *           layers with the same seq and kind, a layer that is not a regular
 *           file (a symlink is never followed);
 *   -ENOMEM.
 */
int store_chain_resolve(const struct store_group *g, struct store_chain *chain,
			const char **why);

/*
 * Builds a chain from the names of its layers, base first, as a version
 * remembers them (the one way to do so): each name is parsed for its seq
 * and kind and copied, so the chain owns everything and outlives names.
 * Returns 0, -EINVAL if a name is not a layer name, or -ENOMEM. Free with
 * store_chain_free().
 */
int store_chain_from_names(const char *const *names, size_t n, struct store_chain *chain);

/* Frees what the chain owns (the pointer array; the layers and their
 * names too if it was built from names). */
void store_chain_free(struct store_chain *chain);

/*
 * True if the directory open as dirfd (O_PATH is fine) is STORE's root,
 * device root_dev and inode root_ino, or lies beneath it: walking up
 * through ".." reaches it before the filesystem's root. A directory moved
 * out of STORE while snapfs holds it open is not, and nothing may be
 * written, removed or read there any more (doc/format.md §3).
 */
bool store_dir_inside(int dirfd, uint64_t root_dev, uint64_t root_ino);

#endif
