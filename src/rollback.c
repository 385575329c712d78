/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Rollback in STORE under the rollback lock: resolve the chain, check that
 * the diff to remove is its newest, unlink it, fsync the directory. The
 * compactor checks its merged layers and publishes its new base under the
 * same lock, so a rollback done here either comes first (and the
 * compaction is abandoned) or comes after (and sees the new chain).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dirlock.h"
#include "rollback.h"

static void copy_name(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src);
}

/* The layer of g called fname, or NULL. */
static const struct store_layer *find_layer(const struct store_group *g,
					    const char *fname)
{
	for (size_t i = 0; i < g->nlayers; i++)
		if (strcmp(g->layers[i].fname, fname) == 0)
			return &g->layers[i];
	return NULL;
}

int rollback_resolve(const struct store_group *g, const char *name,
		     const char *want, struct rollback_result *res)
{
	struct store_chain chain = { 0 };
	const struct store_layer *base, *top, *w = NULL;
	const char *why = NULL;
	struct store_name wn;
	int ret;

	copy_name(res->name, sizeof(res->name), name);
	res->removed[0] = res->top_after[0] = res->why[0] = '\0';
	res->depth_after = 0;
	if (!g) {
		snprintf(res->why, sizeof(res->why), "nothing to roll back: no "
			 "layered file %s here", name);
		return -ENOENT;
	}
	ret = store_chain_resolve(g, &chain, &why);
	if (ret == -ENOMEM)
		return ret;
	if (ret) {
		snprintf(res->why, sizeof(res->why), "not rolling back: the chain "
			 "of %s is unusable: %s%s%s", name,
			 chain.culprit ? "layer " : "",
			 chain.culprit ? chain.culprit->fname : "",
			 chain.culprit ? ": " : "");
		strncat(res->why, why, sizeof(res->why) - strlen(res->why) - 1);
		store_chain_free(&chain);
		return -EIO;
	}
	base = chain.layers[0];
	top = chain.layers[chain.nlayers - 1];
	if (want) {
		for (size_t i = 0; i < chain.nlayers; i++)
			if (strcmp(chain.layers[i]->fname, want) == 0)
				w = chain.layers[i];
		if (!w && store_parse_name(want, &wn) && !wn.overflow &&
		    wn.seq <= base->seq) {
			/* Below the base, or at its seq: superseded. */
			snprintf(res->why, sizeof(res->why), "nothing to roll back: "
				 "%s %s; compaction merged it into %s", want,
				 find_layer(g, want) ? "is superseded" :
				 "is gone", base->fname);
			ret = -ENOENT;
		} else if (!w) {
			snprintf(res->why, sizeof(res->why), "nothing to roll back: "
				 "%s is not in the chain of %s (its newest layer "
				 "is %s)", want, name, top->fname);
			ret = -ENOENT;
		} else if (w == base) {
			snprintf(res->why, sizeof(res->why), "not rolling back: %s "
				 "is the base of the chain, not a diff", want);
			ret = -EBUSY;
		} else if (w != top) {
			snprintf(res->why, sizeof(res->why), "not rolling back: %s "
				 "is not the newest diff of %s (%s is): only the "
				 "newest can be removed", want, name, top->fname);
			ret = -EBUSY;
		}
	} else if (top == base) {
		snprintf(res->why, sizeof(res->why), "nothing to roll back: the "
			 "chain of %s is its base %s alone", name, base->fname);
		ret = -ENOENT;
	}
	if (!ret) {
		copy_name(res->removed, sizeof(res->removed), top->fname);
		copy_name(res->top_after, sizeof(res->top_after),
			  chain.layers[chain.nlayers - 2]->fname);
		res->depth_after = chain.nlayers - 2;
	}
	store_chain_free(&chain);
	return ret;
}

/*
 * Splits target into NAME and the layer meant: a layer file name of a
 * layered file present in idx is that layer; anything else is a NAME.
 */
static int split_target(const struct store_dir *idx, const char *target,
			char *name, size_t size, const char **want)
{
	struct store_name sn;

	*want = NULL;
	if (store_parse_name(target, &sn) && sn.kind == STORE_DIFF &&
	    sn.name_len < size) {
		memcpy(name, target, sn.name_len);
		name[sn.name_len] = '\0';
		if (store_dir_find(idx, name) || !store_dir_find(idx, target)) {
			*want = target;
			return 0;
		}
	}
	if (strlen(target) >= size)
		return -ENAMETOOLONG;
	copy_name(name, size, target);
	return 0;
}

int rollback_run(int dirfd, const char *target, bool dry_run, int wait_ms,
		 struct rollback_result *res)
{
	struct dirlock lk;
	struct store_dir *idx = NULL;
	const char *want;
	char name[256];
	int ret;

	memset(res, 0, sizeof(*res));
	copy_name(res->name, sizeof(res->name), target);
	ret = dirlock_acquire(dirfd, wait_ms, NULL, &lk);
	if (ret) {
		if (ret == -EWOULDBLOCK)
			snprintf(res->why, sizeof(res->why), "the rollback lock of "
				 "the directory stayed held by another process");
		else
			snprintf(res->why, sizeof(res->why), "cannot take the "
				 "rollback lock of the directory: %s", strerror(-ret));
		return ret;
	}
	ret = store_dir_scan(dirfd, &idx);
	if (ret) {
		snprintf(res->why, sizeof(res->why), "cannot read the directory: %s",
			 strerror(-ret));
		goto out;
	}
	ret = split_target(idx, target, name, sizeof(name), &want);
	if (ret) {
		snprintf(res->why, sizeof(res->why), "%s", strerror(-ret));
		goto out;
	}
	ret = rollback_resolve(store_dir_find(idx, name), name, want, res);
	if (ret || dry_run)
		goto out;
	if (unlinkat(dirfd, res->removed, 0) < 0) {
		ret = -errno;
		snprintf(res->why, sizeof(res->why), "cannot remove %s: %s",
			 res->removed, strerror(-ret));
		goto out;
	}
	res->unlinked = true;
	ret = dirlock_sync_dir(&lk);
	if (ret)
		snprintf(res->why, sizeof(res->why), "%s removed, but the directory "
			 "cannot be synced: %s (the removal may not survive a "
			 "crash)", res->removed, strerror(-ret));
out:
	store_dir_free(idx);
	dirlock_release(&lk);
	return ret;
}
