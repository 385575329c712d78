/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which opens of a view are let in (doc/design.md §15): read-only ones
 * always; O_RDWR ones only with -o open_rw=private, and then answered so
 * that the kernel itself refuses every shared mapping of that open file,
 * while writes, truncation and fallocate are refused by the daemon. Pure
 * logic plus the one log line of a refusal.
 */
#ifndef SNAPFS_OPENMODE_H
#define SNAPFS_OPENMODE_H

#include <stdbool.h>
#include <stdint.h>

enum open_rw {
	OPEN_RW_REFUSE,		/* default: EROFS for any open for writing */
	OPEN_RW_PRIVATE,	/* O_RDWR lets in a VMM that maps private */
};

enum open_verdict {
	OPEN_READ,		/* an ordinary read-only open */
	OPEN_RW_DIRECT,		/* O_RDWR under open_rw=private: reply with
				   direct_io so that MAP_SHARED fails */
	OPEN_REFUSE,		/* EROFS */
};

/*
 * Parses "refuse" or "private" into *out. Returns 0, or -EINVAL for
 * anything else.
 */
int openmode_parse(const char *s, enum open_rw *out);

/*
 * The verdict for an open with flags (open(2)'s) of a view (view true) or
 * of an ordinary file of STORE under policy. O_WRONLY, O_TRUNC and O_APPEND
 * are always refused (no private mapping needs them); so is O_RDWR on an
 * ordinary file, which is no VMM's guest memory.
 */
enum open_verdict openmode_decide(int flags, bool view, enum open_rw policy);

/*
 * Logs (rate-limited, warning) that an open of the view at path for
 * writing was refused, naming the process (its comm from /proc, and pid)
 * and what to use instead under policy.
 */
void openmode_log_refusal(const char *path, uint32_t pid, int flags,
			  enum open_rw policy);

/* Reads /proc/PID/comm into buf[len] (escaped for a log line); "?" if
 * the process is gone or its name cannot be read. */
void openmode_comm(uint32_t pid, char *buf, size_t len);

#endif
