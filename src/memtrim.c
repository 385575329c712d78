/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Giving freed heap memory back (memtrim.h).
 *
 * glibc keeps what a program frees in its arenas (one per thread that
 * allocates, up to eight per CPU) for the next allocation, and gives back
 * to the system only the top of each heap. A daemon whose FUSE threads
 * made and freed ten thousand versions keeps the memory of their nodes,
 * names and maps scattered through those heaps: snapfs's RSS grew from
 * 22 MB to 32 MB over 20 rounds of creating, listing and deleting 10,000
 * names, with nothing alive at the end, and one malloc_trim() brought it
 * to 6 MB. So the frees that come in thousands (forgets, listings) ask for
 * a look at the heap a second later, when the burst is likely over.
 * mallinfo2() tells how much the heap holds free; it walks every arena's
 * free lists, hence no look more often than once a second. What a trim
 * cannot take: chunks still in use, and those that threads keep in their
 * caches (tcache), which the daemon turns off by running itself again
 * (memtrim_exec_tuned()).
 */
#include "config.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <unistd.h>
#ifdef HAVE_MALLOC_TRIM
#include <malloc.h>
#endif

#include "memtrim.h"
#include "monotime.h"
#include "stats.h"

/* A trim walks a heap of a few MiB in microseconds, at most once a second:
 * any free page worth the look. */
#define TRIM_MIN_FREE (256u << 10)
#define MMAP_THRESHOLD (256u << 10)
#define TRIM_DELAY_NS 1000000000LL

/* When the look asked for is due (monotonic ns), 0 if none; atomic. */
static int64_t due;
/* Readable once a look is asked for (memtrim_wake_fd()), -1 if none. */
static int wake_fd = -1;

#define TCACHE_OFF "glibc.malloc.tcache_count=0"
#define REEXEC_MARK "SNAPFS_REEXEC"

char *memtrim_tunables(const char *old)
{
	char *set;
	size_t n;

	if (!old)
		return strdup(TCACHE_OFF);
	if (strstr(old, "glibc.malloc.tcache_count="))
		return NULL;
	n = strlen(old) + sizeof(":" TCACHE_OFF);
	set = malloc(n);
	if (set)
		snprintf(set, n, "%s%s%s", old, *old ? ":" : "", TCACHE_OFF);
	return set;
}

void memtrim_exec_tuned(char *argv[])
{
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	/* Measured (doc/performance.md, "Memory over rounds of churn"): after
	 * six rounds of creating, listing and deleting 10,000 names, 346 of the
	 * 418 chunks in use in the heap were idle threads' cached ones, alone
	 * on 116 of the 209 pages that held any; RSS over 12 rounds rose by
	 * 12-15% with the caches, and by 6% without them (a worker joining). */
	const char *old;
	char *saved = NULL, *set, self[PATH_MAX];
	ssize_t n;

	/* Set-id programs take no tunables from the environment. The marker
	 * stops a second exec whatever glibc makes of the variable. */
	if (getauxval(AT_SECURE))
		return;
	if (getenv(REEXEC_MARK)) {
		unsetenv(REEXEC_MARK);
		return;
	}
	old = getenv("GLIBC_TUNABLES");
	set = memtrim_tunables(old);	/* NULL: the count is set already */
	if (!set || (old && !(saved = strdup(old)))) {
		free(set);
		return;
	}
	/* By its path, not /proc/self/exe: the process's name (ps, top, the
	 * comm of logs and of perf) is the basename exec'd. */
	n = readlink("/proc/self/exe", self, sizeof(self));
	if (n > 0 && (size_t)n < sizeof(self)) {
		self[n] = '\0';
		if (!strstr(self, " (deleted)") && setenv("GLIBC_TUNABLES", set, 1) == 0 &&
		    setenv(REEXEC_MARK, "1", 1) == 0)
			execv(self, argv);
	}
	/* No exec (no /proc, the binary replaced): this run keeps its caches. */
	unsetenv(REEXEC_MARK);
	if (saved)
		setenv("GLIBC_TUNABLES", saved, 1);
	else
		unsetenv("GLIBC_TUNABLES");
	free(saved);
	free(set);
#else
	(void)argv;
#endif
}

void memtrim_setup(void)
{
	if (wake_fd < 0)
		wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
#ifdef HAVE_MALLOC_TRIM
	/* Measured here: RSS after 12 rounds of creating, listing and
	 * deleting 10,000 names 3.2 -> 3.7 MB with one arena, 3.2 -> 4-12 MB
	 * with eight; sequential reads of a depth-64 view 1.4-1.6 GB/s with
	 * one, 0.75-0.89 with eight (a 7 KiB piece array per 1 MiB request,
	 * past the tcache, made a thread's heap shrink and grow again). */
	mallopt(M_ARENA_MAX, 1);
	/* A fixed threshold also stops glibc's own trims from moving with it
	 * (M_TRIM_THRESHOLD stays at 128 KiB). Nothing on the read path
	 * allocates that much per request. */
	mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
#endif
}

static void wake(void)
{
	uint64_t one = 1;
	ssize_t r;

	/* An eventfd's write fails only when its count is near 2^64: the
	 * watcher has been told already. */
	if (wake_fd >= 0) {
		r = write(wake_fd, &one, sizeof(one));
		(void)r;
	}
}

/* The look due at d (not 0), if now is past it: one caller takes it, the
 * others find it taken. */
static void run_if_due(int64_t d, int64_t now)
{
	if (now < d || !__atomic_compare_exchange_n(&due, &d, 0, false, __ATOMIC_RELAXED,
						    __ATOMIC_RELAXED))
		return;
	stats_add(STAT_HEAP_LOOKS, 1);
#if defined(HAVE_MALLOC_TRIM) && defined(HAVE_MALLINFO2)
	{
		struct mallinfo2 mi = mallinfo2();

		if (mi.fordblks >= TRIM_MIN_FREE && mi.fordblks >= mi.uordblks / 4) {
			malloc_trim(0);
			stats_add(STAT_HEAP_TRIMS, 1);
		}
	}
#endif
}

void memtrim_note(void)
{
	int64_t d = __atomic_load_n(&due, __ATOMIC_RELAXED), now = mono_ns();

	/* The watcher may be asleep with no timeout (none was due when it
	 * went to sleep): the note that asks for a look wakes it, once per
	 * burst. */
	if (d == 0) {
		if (__atomic_compare_exchange_n(&due, &d, now + TRIM_DELAY_NS, false,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED))
			wake();
	} else {
		run_if_due(d, now);
	}
}

int memtrim_wake_fd(void)
{
	return wake_fd;
}

void memtrim_woken(void)
{
	uint64_t n;
	ssize_t r;

	if (wake_fd >= 0) {
		r = read(wake_fd, &n, sizeof(n));	/* EAGAIN: not woken */
		(void)r;
	}
}

int memtrim_wait_ms(void)
{
	int64_t d = __atomic_load_n(&due, __ATOMIC_RELAXED), left;

	if (d == 0)
		return -1;
	left = d - mono_ns();
	return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

void memtrim_run_due(void)
{
	int64_t d = __atomic_load_n(&due, __ATOMIC_RELAXED);

	if (d != 0)
		run_if_due(d, mono_ns());
}
