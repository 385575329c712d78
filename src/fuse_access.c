/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Whether a request's sender may open what it asks for. The daemon opens
 * STORE's files itself, so every open and opendir is checked first with
 * the requester's uid, gid and groups, by the kernel (access.h,
 * doc/design.md §14). Part of the FUSE side (fuse_priv.h).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "fuse_priv.h"
#include "log.h"

/* A requester's groups, and a view's layer fds, held on the stack up to
 * this many before falling back to malloc. */
#define STACK_IDS 64

/*
 * Whether the requester of req may access each of the n fds for mask,
 * decided by the kernel with the requester's uid, gid and supplementary
 * groups (access_check()). The groups come from /proc; if they cannot be
 * read (the process is gone, /proc is not mounted, another pid namespace),
 * access is denied: a check with fewer groups could grant what a group
 * entry denies (mode 0604, an ACL's group:NAME:---). Returns 0, -EACCES,
 * -ENOMEM, or another -errno.
 */
static int requester_may(fuse_req_t req, const int *fds, size_t n, int mask)
{
	static int groups_logged;	/* atomic */
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t stack[STACK_IDS], *groups = stack;
	int ng, cap = STACK_IDS, ret;

	if (access_is_daemon(ctx->uid))
		return 0;
	ng = access_proc_groups(ctx->pid, groups, cap);
	while (ng > cap) {	/* more groups than the buffer holds */
		gid_t *g = realloc(groups == stack ? NULL : groups,
				   (size_t)ng * sizeof(*g));

		if (!g) {
			ret = -ENOMEM;
			goto out;
		}
		groups = g;
		cap = ng;
		ng = access_proc_groups(ctx->pid, groups, cap);
	}
	if (ng < 0) {
		if (ng != -ENOENT && ng != -ESRCH &&
		    !__atomic_exchange_n(&groups_logged, 1, __ATOMIC_RELAXED))
			log_warn("cannot read the groups of process %d (uid %u): %s; "
				 "opens whose requester's groups are unknown are denied",
				 (int)ctx->pid, (unsigned)ctx->uid, strerror(-ng));
		ret = -EACCES;
		goto out;
	}
	{
		struct access_cred c = { ctx->uid, ctx->gid, groups, (size_t)ng };

		ret = access_check(&c, fds, n, mask);
	}
out:
	if (groups != stack)
		free(groups);
	if (ret)
		log_debug("access denied to uid %u (pid %d): %s", (unsigned)ctx->uid,
			  (int)ctx->pid, strerror(-ret));
	return ret;
}

/* requester_may() on STORE entry n's own fd. */
int requester_may_node(fuse_req_t req, struct node *n, int mask)
{
	struct node_table *t = fs_of(req)->nodes;
	int fd = node_fd_get(t, n), ret;

	if (fd < 0)
		return fd;
	ret = requester_may(req, &fd, 1, mask);
	node_fd_put(t, n);
	return ret;
}

/* requester_may() on every layer of v, for reading. */
int requester_may_read_view(fuse_req_t req, const struct view *v)
{
	int stack[STACK_IDS] = { 0 }, *fds = stack, ret;

	if (v->nlayers > STACK_IDS) {
		fds = malloc(v->nlayers * sizeof(*fds));
		if (!fds)
			return -ENOMEM;
	}
	for (unsigned i = 0; i < v->nlayers; i++)
		fds[i] = v->layers[i].fd;
	ret = requester_may(req, fds, v->nlayers, R_OK);
	if (fds != stack)
		free(fds);
	return ret;
}
