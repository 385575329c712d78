/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Logging for snapfs: one line per event, through fuse_log() so that the
 * daemon's lines go to stderr in the foreground and to syslog once it has
 * daemonized. Every line that reports a problem names the file and the cause.
 * Lines an event can repeat at a high rate go through log_*_rl(), which
 * prints a few per interval and then one line with the count.
 */
#ifndef SNAPFS_LOG_H
#define SNAPFS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/*
 * Rate limiting, for lines an event can repeat many times a second (EMFILE
 * on every open, a producer's mistake seen by every lookup): a call site
 * passes at most burst lines per interval; the lines past that are
 * counted, not printed, and the site's next line after the interval is
 * preceded by one summary line, the last line left out followed by
 * "[repeated K times in the last S s]". snapfs_log_flush() prints the
 * summaries still pending (at exit). Lines below the log level are neither
 * printed nor counted. Thread-safe.
 *
 * One struct per call site, zero-initialized (log_ratelimited() declares
 * it static); all its fields belong to log.c and are protected by its
 * rate-limit lock.
 */
struct snapfs_ratelimit {
	int64_t start_ms;	/* start of the current interval */
	unsigned passed;	/* lines printed in it */
	unsigned dropped;	/* lines left out in it */
	enum fuse_log_level level;	/* of the last line left out */
	char last[1024];	/* the last line left out, escaped */
	bool registered;	/* on the list snapfs_log_flush() walks */
	struct snapfs_ratelimit *next;
};

void snapfs_log_rl(struct snapfs_ratelimit *rl, enum fuse_log_level level,
		   const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prints a summary line for every call site with lines left out, and
 * starts their intervals anew. */
void snapfs_log_flush(void);

/* Lines per interval and its length (defaults: 5 per 60 s); and the clock
 * in milliseconds (default CLOCK_MONOTONIC; NULL restores it). For tests. */
#define SNAPFS_LOG_BURST 5
#define SNAPFS_LOG_INTERVAL_MS 60000
void snapfs_log_set_ratelimit(unsigned burst, unsigned interval_ms);
void snapfs_log_set_clock(int64_t (*now_ms)(void));

#define log_ratelimited(level, ...) do {				\
		static struct snapfs_ratelimit snapfs_rl_;		\
		snapfs_log_rl(&snapfs_rl_, (level), __VA_ARGS__);	\
	} while (0)

#define log_err(...)   snapfs_log(FUSE_LOG_ERR, __VA_ARGS__)
#define log_warn(...)  snapfs_log(FUSE_LOG_WARNING, __VA_ARGS__)
#define log_info(...)  snapfs_log(FUSE_LOG_INFO, __VA_ARGS__)
#define log_debug(...) snapfs_log(FUSE_LOG_DEBUG, __VA_ARGS__)
#define log_err_rl(...)  log_ratelimited(FUSE_LOG_ERR, __VA_ARGS__)
#define log_warn_rl(...) log_ratelimited(FUSE_LOG_WARNING, __VA_ARGS__)
#define log_info_rl(...) log_ratelimited(FUSE_LOG_INFO, __VA_ARGS__)

#endif
