/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The extended attributes of a version (doc/format.md §3): its chain, its
 * depth, the bytes it serves as data, where its compaction, its prefetch
 * push and its flat file (flatten.h) stand and, for an unusable chain,
 * why. Read with getfattr; nothing is ever set.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compactd.h"
#include "flatten.h"
#include "node_priv.h"
#include "prefetch.h"
#include "store.h"
#include "version.h"
#include "xattr.h"

#define XA_CHAIN "user.snapfs.chain"
#define XA_DEPTH "user.snapfs.depth"
#define XA_DATA "user.snapfs.data_bytes"
#define XA_ERROR "user.snapfs.error"
#define XA_COMPACT "user.snapfs.compaction"
#define XA_PREFETCH "user.snapfs.prefetch"
#define XA_FLAT "user.snapfs.flat"

static ssize_t xattr_reply(const char *val, size_t len, char *buf, size_t size)
{
	if (size == 0)
		return (ssize_t)len;
	if (len > size)
		return -ERANGE;
	memcpy(buf, val, len);
	return (ssize_t)len;
}

ssize_t xattr_get(struct node_table *t, struct node *n,
		  const char *name, char *buf, size_t size)
{
	char num[32];
	ssize_t ret;

	if (strcmp(name, XA_CHAIN) == 0) {
		size_t len = 0;
		char *s, *p;

		/* A compaction may replace the layer list: hold the lock. */
		pthread_mutex_lock(&n->lock);
		for (size_t i = 0; i < n->nlayers; i++)
			len += strlen(n->layer_names[i]) + 1;
		s = p = malloc(len + 1);
		for (size_t i = 0; s && i < n->nlayers; i++)
			p += sprintf(p, "%s%s", i ? "," : "", n->layer_names[i]);
		pthread_mutex_unlock(&n->lock);
		if (!s)
			return -ENOMEM;
		ret = xattr_reply(s, (size_t)(p - s), buf, size);
		free(s);
		return ret;
	}
	if (strcmp(name, XA_FLAT) == 0) {
		struct flatten *f;
		struct view *v;
		char *s;

		pthread_mutex_lock(&t->lock);
		f = t->flatten;		/* NULL: no flattener, "none" */
		pthread_mutex_unlock(&t->lock);
		/* Asking is a use: it starts the build like a first open. */
		if (f && node_view(t, n, &v) == 0) {
			flatten_offer(f, n, v);
			view_put(v);
		}
		s = flatten_describe(f, n);
		if (!s)
			return -ENOMEM;
		ret = xattr_reply(s, strlen(s), buf, size);
		free(s);
		return ret;
	}
	if (strcmp(name, XA_DEPTH) == 0) {
		size_t diffs = 0;

		pthread_mutex_lock(&n->lock);
		for (size_t i = 0; i < n->nlayers; i++) {
			struct store_name sn;

			if (store_parse_name(n->layer_names[i], &sn) &&
			    sn.kind == STORE_DIFF)
				diffs++;
		}
		pthread_mutex_unlock(&n->lock);
		snprintf(num, sizeof(num), "%zu", diffs);
		return xattr_reply(num, strlen(num), buf, size);
	}
	if (strcmp(name, XA_DATA) == 0) {
		struct view *v;

		ret = node_view(t, n, &v);
		if (ret)
			return ret == -EIO ? -ENODATA : ret;
		snprintf(num, sizeof(num), "%llu", (unsigned long long)v->data_bytes);
		node_view_done(t, n, v);
		return xattr_reply(num, strlen(num), buf, size);
	}
	if (strcmp(name, XA_COMPACT) == 0) {
		char *state = compactd_describe(t, n);

		if (!state)
			return -ENOMEM;
		ret = xattr_reply(state, strlen(state), buf, size);
		free(state);
		return ret;
	}
	if (strcmp(name, XA_PREFETCH) == 0) {
		char *state = prefetch_describe(t, n);

		if (!state)
			return -ENOMEM;
		ret = xattr_reply(state, strlen(state), buf, size);
		free(state);
		return ret;
	}
	if (strcmp(name, XA_ERROR) == 0) {
		char *err = NULL;
		struct view *v;

		/* Some causes are only found when the layers are opened. */
		if (node_view(t, n, &v) == 0)
			node_view_done(t, n, v);
		pthread_mutex_lock(&n->lock);
		if (n->error || n->build_error)
			err = strdup(n->error ? n->error : n->build_error);
		pthread_mutex_unlock(&n->lock);
		if (!err)
			return -ENODATA;
		ret = xattr_reply(err, strlen(err), buf, size);
		free(err);
		return ret;
	}
	return -ENODATA;
}

ssize_t xattr_list(struct node_table *t, struct node *n, char *buf,
		   size_t size)
{
	static const char names[] = XA_CHAIN "\0" XA_DEPTH "\0" XA_DATA "\0"
				    XA_COMPACT "\0" XA_FLAT "\0" XA_PREFETCH "\0";
	static const char names_err[] = XA_CHAIN "\0" XA_DEPTH "\0" XA_ERROR "\0";
	struct view *v;
	bool err;

	if (node_view(t, n, &v) == 0)
		node_view_done(t, n, v);

	pthread_mutex_lock(&n->lock);
	err = n->error || n->build_error;
	pthread_mutex_unlock(&n->lock);
	return err ? xattr_reply(names_err, sizeof(names_err) - 1, buf, size)
		   : xattr_reply(names, sizeof(names) - 1, buf, size);
}
