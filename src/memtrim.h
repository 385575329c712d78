/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Giving the heap's free memory back to the system a second after much
 * was freed, so that a daemon that made and freed many versions does not
 * keep their memory.
 */
#ifndef SNAPFS_MEMTRIM_H
#define SNAPFS_MEMTRIM_H

/*
 * The heap's setup, before any thread starts: one malloc arena for every
 * thread, and a fixed threshold of 256 KiB above which blocks are mapped
 * on their own. Per-thread arenas both scatter freed memory where no trim
 * reaches it and shrink and grow their heaps with system calls under the
 * read path's allocations. glibc raises its threshold past the size of any
 * mapped block freed, after which libfuse's 1 MiB receive buffer of every
 * worker that ever ran was taken from the heap and stayed resident there.
 * A no-op without glibc.
 */
void memtrim_setup(void);

/*
 * Runs the program again, execv() of the path /proc/self/exe names, with
 * glibc's per-thread caches of freed chunks (tcache) turned off:
 * GLIBC_TUNABLES gains glibc.malloc.tcache_count=0, which glibc reads only
 * as a process starts. Each thread's cache keeps up to seven freed chunks
 * of every size it freed, wherever they lie in the heap, and no trim takes
 * them; in a daemon whose workers free names by the thousand, they held
 * most of the heap's resident pages. Does nothing when GLIBC_TUNABLES sets
 * that count already (the user's choice), in the second run (told by the
 * marker SNAPFS_REEXEC, which it removes), in a set-id process, without
 * glibc, or under a sanitizer's allocator; returns if it did not run
 * again. Call it first in main(), before any thread or fd.
 */
void memtrim_exec_tuned(char *argv[]);

/* The value of GLIBC_TUNABLES that memtrim_exec_tuned() runs with, given
 * the current one (NULL if unset), malloc'd; NULL if that already sets
 * glibc.malloc.tcache_count (or no memory). */
char *memtrim_tunables(const char *old);

/* Much may just have been freed (forgets, a listing let go): a look at the
 * heap is due in a second, unless one is asked for already (the note that
 * asks makes memtrim_wake_fd() readable); one that is due runs now
 * (memtrim_run_due()). Thread-safe, cheap. */
void memtrim_note(void);

/* An eventfd that becomes readable when memtrim_note() asks for a look,
 * so that a thread asleep in poll() with no timeout (none was due) takes
 * the new one; -1 before memtrim_setup() or if none could be made. The
 * thread reads it with memtrim_woken() before it polls again. */
int memtrim_wake_fd(void);
void memtrim_woken(void);

/* Milliseconds until the look that memtrim_note() asked for is due (0 if
 * it is), or -1 if none was asked for: a poll() timeout. */
int memtrim_wait_ms(void);

/*
 * If a look is due: if the heap holds at least 256 KiB free and a quarter
 * of what is in use, gives the free memory back (malloc_trim()). Called by
 * the change watcher when its poll times out, and by memtrim_note(), so
 * that a busy daemon without a watcher trims too. A no-op
 * without glibc's malloc_trim() and mallinfo2().
 */
void memtrim_run_due(void);

#endif
