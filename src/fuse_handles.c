/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The record of open view and directory handles. After a lazy unmount the
 * kernel ends the connection without the releases of files still open, so
 * at the end of the session snapfs_close_handles() lets go of what they
 * hold (doc/design.md §2, fuse_ops). Part of the FUSE side (fuse_priv.h).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "fuse_priv.h"
#include "log.h"
#include "names.h"

void dir_handle_free(struct dir_handle *d)
{
	node_listing_free(&d->l);
	free(d);
}

struct open_handle {
	void *p;		/* struct view * or struct dir_handle * */
	bool dir;
};

static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct open_handle *handles;	/* protected by handles_lock */
static size_t handles_n, handles_cap;	/* protected by handles_lock */

int fuse_handle_add(void *p, bool dir)
{
	int ret = 0;

	pthread_mutex_lock(&handles_lock);
	if (handles_n == handles_cap) {
		size_t cap = handles_cap ? handles_cap * 2 : 64;
		struct open_handle *h = realloc(handles, cap * sizeof(*h));

		if (!h) {
			ret = -ENOMEM;
			goto out;
		}
		handles = h;
		handles_cap = cap;
	}
	handles[handles_n++] = (struct open_handle){ p, dir };
out:
	pthread_mutex_unlock(&handles_lock);
	return ret;
}

/* Forgets one record of p (a linear scan: handles open at once are few,
 * one per running VM and reader). */
void fuse_handle_del(void *p)
{
	pthread_mutex_lock(&handles_lock);
	for (size_t i = handles_n; i-- > 0;) {
		if (handles[i].p == p) {
			handles[i] = handles[--handles_n];
			break;
		}
	}
	pthread_mutex_unlock(&handles_lock);
}

void snapfs_close_handles(void)
{
	size_t n;

	pthread_mutex_lock(&handles_lock);
	n = handles_n;
	for (size_t i = 0; i < handles_n; i++) {
		if (handles[i].dir)
			dir_handle_free(handles[i].p);
		else
			view_handle_put(handles[i].p);
	}
	free(handles);
	handles = NULL;
	handles_n = handles_cap = 0;
	pthread_mutex_unlock(&handles_lock);
	if (n)
		log_debug("%zu file handle(s) still open at the end of the session "
			  "(no release came after a lazy unmount): closed", n);
}
