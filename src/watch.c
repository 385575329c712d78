/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The inotify reader. Stopping uses an eventfd polled beside the inotify fd,
 * so the thread never has to be cancelled in the middle of a callback.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "log.h"
#include "memtrim.h"
#include "procfd.h"
#include "watch.h"

#define WATCH_MASK (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | \
		    IN_CLOSE_WRITE | IN_ATTRIB | IN_MODIFY | IN_DELETE_SELF | \
		    IN_MOVE_SELF | IN_ONLYDIR)

struct watch {
	int ifd;
	int stopfd;
	pthread_t thread;
	watch_fn fn;
	watch_tick_fn tick;
	void *ctx;
};

/* The sooner of two poll timeouts (-1: none). */
static int sooner(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

static void *watch_thread(void *arg)
{
	struct watch *w = arg;
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	int tick_ms = -1;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = w->ifd, .events = POLLIN },
			{ .fd = w->stopfd, .events = POLLIN },
			{ .fd = memtrim_wake_fd(), .events = POLLIN },
		};
		ssize_t len;
		int n;

		/* The timeout is the trim's, as it stood (a trim asked for
		 * while this thread sleeps wakes it through the third fd), or
		 * the tick's if sooner. */
		n = poll(p, 3, sooner(memtrim_wait_ms(), tick_ms));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_err("change watcher: poll: %s", strerror(errno));
			break;
		}
		/* This thread is the one that wakes when the daemon is quiet:
		 * a second after a burst of frees, the heap gives back what
		 * it holds free (memtrim.h). */
		if (p[2].revents)
			memtrim_woken();
		memtrim_run_due();
		if (p[1].revents)
			break;
		if (!p[0].revents) {
			if (w->tick)
				tick_ms = w->tick(w->ctx);
			continue;
		}
		len = read(w->ifd, buf, sizeof(buf));
		if (len < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			log_err("change watcher: read: %s", strerror(errno));
			break;
		}
		for (char *q = buf; q < buf + len;) {
			const struct inotify_event *ev = (const struct inotify_event *)q;

			if (ev->mask & IN_Q_OVERFLOW)
				w->fn(w->ctx, -1, "", ev->mask);
			else
				w->fn(w->ctx, ev->wd, ev->len ? ev->name : "", ev->mask);
			q += sizeof(*ev) + ev->len;
		}
		if (w->tick)
			tick_ms = w->tick(w->ctx);
	}
	return NULL;
}

int watch_start(watch_fn fn, watch_tick_fn tick, void *ctx, struct watch **out)
{
	struct watch *w = calloc(1, sizeof(*w));
	int ret;

	if (!w)
		return -ENOMEM;
	w->fn = fn;
	w->tick = tick;
	w->ctx = ctx;
	w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->ifd < 0) {
		ret = -errno;
		goto fail_free;
	}
	w->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->stopfd < 0) {
		ret = -errno;
		goto fail_ifd;
	}
	ret = -pthread_create(&w->thread, NULL, watch_thread, w);
	if (ret)
		goto fail_stopfd;
	*out = w;
	return 0;

fail_stopfd:
	close(w->stopfd);
fail_ifd:
	close(w->ifd);
fail_free:
	free(w);
	return ret;
}

void watch_stop(struct watch *w)
{
	uint64_t one = 1;

	if (!w)
		return;
	if (write(w->stopfd, &one, sizeof(one)) != sizeof(one))
		log_err("change watcher: cannot signal stop: %s", strerror(errno));
	pthread_join(w->thread, NULL);
	close(w->stopfd);
	close(w->ifd);
	free(w);
}

int watch_add(struct watch *w, int fd)
{
	char path[PROC_FD_PATH_LEN];
	int wd;

	proc_fd_path(path, fd);
	wd = inotify_add_watch(w->ifd, path, WATCH_MASK);
	return wd < 0 ? -errno : wd;
}

void watch_remove(struct watch *w, int wd)
{
	inotify_rm_watch(w->ifd, wd);
}
