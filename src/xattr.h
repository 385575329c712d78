/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The user.snapfs.* extended attributes of a version (xattr.c).
 */
#ifndef SNAPFS_XATTR_H
#define SNAPFS_XATTR_H

#include <stddef.h>
#include <sys/types.h>

#include "node.h"

/* Extended attributes of a version: fills buf (size 0: just the length).
 * Returns the length, -ENODATA, -ERANGE, or -EIO. */
ssize_t xattr_get(struct node_table *t, struct node *n, const char *name,
		  char *buf, size_t size);
ssize_t xattr_list(struct node_table *t, struct node *n, char *buf, size_t size);

#endif
