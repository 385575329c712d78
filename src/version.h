/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Versions of layered files (version.c): the view that serves a version,
 * and whether an open may be served by it. See node.h for the model.
 */
#ifndef SNAPFS_VERSION_H
#define SNAPFS_VERSION_H

#include <stdint.h>

#include "node.h"
#include "view.h"

/*
 * The view of version n, built on first use (opens and scans the layers).
 * Returns 0 with a referenced view, or -EIO when the chain is unusable
 * (logged once per version, with the cause), -ESTALE when its layers are
 * gone or replaced (a newer chain), or -ENOMEM, -EMFILE, -ENFILE.
 * node_view() returns a view whose map is built (it waits for it);
 * node_view_open() may return one whose map is still being built
 * (view_open_async(), doc/design.md §5.1): its reads are served all the
 * same, and a build that fails makes the next use of n answer -EIO.
 *
 * Layer fds are held only while someone uses the version (doc/design.md
 * §9.6): node_view_open() is for an open handle and node_view_close() ends
 * it; a short look at a version (an xattr, the compactor's check) ends
 * with node_view_done() or view_put(). When the version's own reference is
 * the only one left, whoever let go of the last other one closes the
 * layers and the map stays (view_own()); the next use opens the same
 * layers again, or finds them gone (-ESTALE).
 *
 * node_view_pin() opens the layers for the open that is to follow from
 * thread pid (whose lookup is the kernel's retry of its stale open) and
 * keeps them open until that thread's node_view_open() of n, or until n
 * is forgotten; a few threads at once, each their own.
 */
int node_view(struct node_table *t, struct node *n, struct view **out);
void node_view_done(struct node_table *t, struct node *n, struct view *v);
int node_view_pin(struct node_table *t, struct node *n, uint32_t pid);
int node_view_open(struct node_table *t, struct node *n, uint32_t pid, struct view **out);
void node_view_close(struct node_table *t, struct node *n, struct view *v);

/*
 * For an open of version n by thread pid (the FUSE request's): 0 if n is
 * still what a lookup of its name would return now, or if n was current
 * when this same thread's retry lookup found it less than STALE_RETRY_MS
 * ago (see below); -ESTALE if its chain has changed (the kernel then looks
 * the name up again and opens the new version), or another -errno.
 *
 * The retry rule: the kernel answers an ESTALE open by looking the name up
 * again and opening what it finds, once, inside the same open(2). Under a
 * chain that changes every millisecond, that second open can find its
 * version superseded too, and the application would see ESTALE. But the
 * version was current at the retry lookup, which happened during the
 * open(2), so serving it is still a correct answer (the open is ordered at
 * that lookup). An ESTALE answer is remembered per directory (thread, name);
 * a lookup by that thread within the window marks the version it returns,
 * and that thread's open of it succeeds.
 */
int node_version_check(struct node_table *t, struct node *n, uint32_t pid);

/* How long an ESTALE open's retry may take: the window of the rule above. */
#define STALE_RETRY_MS 1000

#endif
