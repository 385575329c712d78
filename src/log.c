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
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "log.h"

enum fuse_log_level snapfs_log_level = FUSE_LOG_INFO;

static const char *log_ident = "snapfs";

void snapfs_log_set_ident(const char *ident)
{
	log_ident = ident;
}

static void log_stderr(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char line[4096];
	size_t n;

	(void)level;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (n && line[n - 1] == '\n')
		line[n - 1] = '\0';
	fprintf(stderr, "%s: %s\n", log_ident, line);
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
