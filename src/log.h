/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Logging for snapfs: one line per event, through fuse_log() so that the
 * daemon's lines go to stderr in the foreground and to syslog once it has
 * daemonized. Every line that reports a problem names the file and the cause.
 */
#ifndef SNAPFS_LOG_H
#define SNAPFS_LOG_H

#include <fuse_log.h>

/* Minimum level printed; LOG_DEBUG lines appear only with -d. */
extern enum fuse_log_level snapfs_log_level;

void snapfs_log(enum fuse_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Sends every later line to syslog(3) under the program's ident instead of
 * stderr. Called once, right before the daemon detaches from its terminal.
 */
void snapfs_log_to_syslog(void);

/* Names the program in every line ("snapfs" unless set; snapfs-compact and
 * snapfs-rollback set their own). Call first thing in main(); ident must
 * live as long as the program. */
void snapfs_log_set_ident(const char *ident);

/*
 * Copies src to dst (size bytes, always terminated) with every control
 * character, DEL and backslash written as a C escape, so a file name can
 * never break a log line in two. Returns the length written; a line that
 * does not fit is cut at a character boundary.
 */
size_t snapfs_log_escape(char *dst, size_t size, const char *src);

#define log_err(...)   snapfs_log(FUSE_LOG_ERR, __VA_ARGS__)
#define log_warn(...)  snapfs_log(FUSE_LOG_WARNING, __VA_ARGS__)
#define log_info(...)  snapfs_log(FUSE_LOG_INFO, __VA_ARGS__)
#define log_debug(...) snapfs_log(FUSE_LOG_DEBUG, __VA_ARGS__)

#endif
