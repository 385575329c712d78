/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Level filter and syslog switch on top of fuse_log(). A line is formatted
 * once, its control characters escaped, and handed to the current sink:
 * stderr with the program's prefix ("snapfs: "), or syslog, which adds its
 * own ident. libfuse's own messages take the same way.
 *
 * One event is one line: file names come from STORE, where anyone who may
 * create a file may put a newline in its name, so every byte below 0x20,
 * DEL and the backslash itself are written as C escapes (\n, \t, \\,
 * \xHH). A forged "snapfs: vm9: removed ..." line is then visibly part of
 * the line that named the file.
 *
 * Rate limiting (log.h) keeps one struct per call site; rl_lock protects
 * all of them and the list of those that have been used. Lines are handed
 * to fuse_log() outside the lock.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

enum fuse_log_level snapfs_log_level = FUSE_LOG_INFO;

static const char *log_ident = "snapfs";

void snapfs_log_set_ident(const char *ident)
{
	log_ident = ident;
}

/*
 * One write(2) per line, not stdio: stderr's stdio lock can be left taken
 * for good. libfuse 3.14 cancels its workers when the session ends, and a
 * worker that was in perror() (a read of the device failing with
 * ECONNABORTED, as every worker's does when the connection is aborted) dies
 * holding that lock, which glibc's perror() takes with no cancellation
 * cleanup. The daemon's next line, "the kernel ended the FUSE connection",
 * then waited forever and the daemon never exited (seen in t-unmount).
 */
static void log_stderr(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char line[4096], out[4096 + 64];
	size_t n, done = 0;
	int len;

	(void)level;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (n && line[n - 1] == '\n')
		line[n - 1] = '\0';
	len = snprintf(out, sizeof(out), "%s: %s\n", log_ident, line);
	if (len < 0)
		return;
	n = (size_t)len < sizeof(out) ? (size_t)len : sizeof(out) - 1;
	while (done < n) {
		ssize_t w = write(STDERR_FILENO, out + done, n - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;		/* nowhere to say it */
		done += (size_t)w;
	}
}

size_t snapfs_log_escape(char *dst, size_t size, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	if (!size)
		return 0;
	for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
		char esc[4];
		size_t len = 0;

		if (*p == '\\') {
			esc[len++] = '\\';
			esc[len++] = '\\';
		} else if (*p == '\n' || *p == '\t' || *p == '\r') {
			esc[len++] = '\\';
			esc[len++] = *p == '\n' ? 'n' : *p == '\t' ? 't' : 'r';
		} else if (*p < 0x20 || *p == 0x7f) {
			esc[len++] = '\\';
			esc[len++] = 'x';
			esc[len++] = hex[*p >> 4];
			esc[len++] = hex[*p & 15];
		} else {
			esc[len++] = (char)*p;
		}
		if (n + len >= size)
			break;
		memcpy(dst + n, esc, len);
		n += len;
	}
	dst[n] = '\0';
	return n;
}

static void log_syslog(enum fuse_log_level level, const char *fmt, va_list ap)
{
	vsyslog((int)level, fmt, ap);
}

void snapfs_log(enum fuse_log_level level, const char *fmt, ...)
{
	char line[1024], safe[4096];
	va_list ap;

	if (level > snapfs_log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	snapfs_log_escape(safe, sizeof(safe), line);
	fuse_log(level, "%s", safe);
}

static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapfs_ratelimit *rl_list;	/* protected by rl_lock */
static unsigned rl_burst = SNAPFS_LOG_BURST;	/* protected by rl_lock */
static unsigned rl_interval_ms = SNAPFS_LOG_INTERVAL_MS;	/* protected by rl_lock */
static int64_t (*rl_clock)(void);		/* protected by rl_lock */

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void snapfs_log_set_ratelimit(unsigned burst, unsigned interval_ms)
{
	pthread_mutex_lock(&rl_lock);
	rl_burst = burst;
	rl_interval_ms = interval_ms;
	pthread_mutex_unlock(&rl_lock);
}

void snapfs_log_set_clock(int64_t (*now_ms)(void))
{
	pthread_mutex_lock(&rl_lock);
	rl_clock = now_ms;
	pthread_mutex_unlock(&rl_lock);
}

/* The summary line of rl's current interval into out (empty if nothing
 * was left out), and a new interval from now. Under rl_lock. */
static void rl_close_locked(struct snapfs_ratelimit *rl, int64_t now,
			    char *out, size_t size, enum fuse_log_level *level)
{
	out[0] = '\0';
	if (rl->dropped) {
		int64_t secs = (now - rl->start_ms + 999) / 1000;

		snprintf(out, size, "%s [repeated %u time%s in the last %lld s]",
			 rl->last, rl->dropped, rl->dropped == 1 ? "" : "s",
			 (long long)(secs > 0 ? secs : 1));
		*level = rl->level;
	}
	rl->start_ms = now;
	rl->passed = 0;
	rl->dropped = 0;
}

void snapfs_log_rl(struct snapfs_ratelimit *rl, enum fuse_log_level level,
		   const char *fmt, ...)
{
	char line[1024], summary[sizeof(rl->last) + 64];
	enum fuse_log_level slevel = level;
	bool pass;
	int64_t now;
	va_list ap;

	if (level > snapfs_log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	summary[0] = '\0';
	pthread_mutex_lock(&rl_lock);
	now = rl_clock ? rl_clock() : monotonic_ms();
	if (!rl->registered) {
		rl->registered = true;
		rl->start_ms = now;
		rl->next = rl_list;
		rl_list = rl;
	} else if (now - rl->start_ms >= (int64_t)rl_interval_ms) {
		rl_close_locked(rl, now, summary, sizeof(summary), &slevel);
	}
	pass = rl->passed < rl_burst;
	if (pass) {
		rl->passed++;
	} else {
		rl->dropped++;
		rl->level = level;
		snapfs_log_escape(rl->last, sizeof(rl->last), line);
	}
	pthread_mutex_unlock(&rl_lock);
	if (summary[0])
		fuse_log(slevel, "%s", summary);	/* already escaped */
	if (pass)
		snapfs_log(level, "%s", line);
}

void snapfs_log_flush(void)
{
	for (;;) {
		char summary[sizeof(((struct snapfs_ratelimit *)0)->last) + 64];
		enum fuse_log_level level = FUSE_LOG_INFO;
		struct snapfs_ratelimit *rl;

		/* one at a time, each printed outside the lock */
		pthread_mutex_lock(&rl_lock);
		for (rl = rl_list; rl && !rl->dropped; rl = rl->next)
			;
		if (rl)
			rl_close_locked(rl, rl_clock ? rl_clock() : monotonic_ms(),
					summary, sizeof(summary), &level);
		pthread_mutex_unlock(&rl_lock);
		if (!rl)
			return;
		fuse_log(level, "%s", summary);
	}
}

void snapfs_log_to_syslog(void)
{
	openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	fuse_set_log_func(log_syslog);
}

/* Installed before main() so that even option errors carry the prefix. */
__attribute__((constructor)) static void log_init(void)
{
	fuse_set_log_func(log_stderr);
}
