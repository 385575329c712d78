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
 * thread (each thread keeps its own cache of small chunks, tcache, so the
 * arena's lock is rarely taken). Per-thread arenas both scatter freed
 * memory where no trim reaches it and shrink and grow their heaps with
 * system calls under the read path's allocations. A no-op without glibc.
 */
void memtrim_setup(void);

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
 * If a look is due: if the heap holds at least 4 MiB free and a quarter of
 * what is in use, gives the free memory back (malloc_trim()). Called by
 * the change watcher when its poll times out, and by memtrim_note(), so
 * that a busy daemon without a watcher trims too. A no-op
 * without glibc's malloc_trim() and mallinfo2().
 */
void memtrim_run_due(void);

#endif
