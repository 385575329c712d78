/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Level filter and syslog switch on top of fuse_log(). A line is formatted
 * once and handed to the current sink: stderr with a "snapfs: " prefix, or
 * syslog, which adds its own ident. libfuse's own messages take the same way.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include "log.h"

enum fuse_log_level snapfs_log_level = FUSE_LOG_INFO;

static void log_stderr(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char line[1024];
	size_t n;

	(void)level;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	if (n && line[n - 1] == '\n')
		line[n - 1] = '\0';
	fprintf(stderr, "snapfs: %s\n", line);
}

static void log_syslog(enum fuse_log_level level, const char *fmt, va_list ap)
{
	vsyslog((int)level, fmt, ap);
}

void snapfs_log(enum fuse_log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level > snapfs_log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fuse_log(level, "%s", line);
}

void snapfs_log_to_syslog(void)
{
	openlog("snapfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	fuse_set_log_func(log_syslog);
}

/* Installed before main() so that even option errors carry the prefix. */
__attribute__((constructor)) static void log_init(void)
{
	fuse_set_log_func(log_stderr);
}
