/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests for the counters (stats.h) and the open policy (openmode.h):
 * the counters' text is one "name value" line each, exact under concurrent
 * adds, cut cleanly when the buffer is short; which opens of a view each
 * open_rw setting lets in; when the heap trim (memtrim.h) is due, and the
 * tunables the daemon runs again with.
 */
#include "unit.h"

#include <poll.h>
#include <pthread.h>

#include <unistd.h>

#include "memtrim.h"
#include "openmode.h"
#include "stats.h"

static int reset(void **state)
{
	(void)state;
	stats_reset();
	return 0;
}

/* The value of the line "name value" in text, or -1. */
static long long value_of(const char *text, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = text; *p; p = strchr(p, '\n') + 1) {
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return atoll(p + n + 1);
		if (!strchr(p, '\n'))
			break;
	}
	return -1;
}

static void test_format(void **state)
{
	struct cache_stats cs = { .entries = 3, .bytes = 4096, .hits = 7, .misses = 2,
				 .charged = 512 };
	char buf[4096];
	size_t len;

	(void)state;
	stats_add(STAT_READS_SPLICE, 2);
	stats_add(STAT_BYTES_SPLICE, 1 << 20);
	stats_add(STAT_VIEWS_ALIVE, 3);
	stats_sub(STAT_VIEWS_ALIVE, 1);
	stats_set_compact_cause("vm1/memory.bin", "No space\nleft");
	len = stats_format(buf, sizeof(buf), &cs);
	assert_int_equal(len, strlen(buf));
	assert_int_equal(value_of(buf, "reads_splice"), 2);
	assert_int_equal(value_of(buf, "bytes_splice"), 1 << 20);
	assert_int_equal(value_of(buf, "views_alive"), 2);
	assert_int_equal(value_of(buf, "reads_mmap"), 0);
	assert_int_equal(value_of(buf, "map_cache_hits"), 7);
	assert_int_equal(value_of(buf, "map_cache_misses"), 2);
	assert_int_equal(value_of(buf, "map_cache_bytes"), 4096);
	assert_int_equal(value_of(buf, "map_view_bytes"), 512);
	/* A cause never breaks a line: every line is "name value". */
	assert_non_null(strstr(buf, "compact_last_cause vm1/memory.bin: No space left\n"));
	for (const char *p = buf; *p; p = strchr(p, '\n') + 1) {
		const char *sp = strchr(p, ' '), *nl = strchr(p, '\n');

		assert_non_null(nl);
		assert_true(sp && sp < nl && sp > p);
	}
}

static void test_short_buffer(void **state)
{
	char big[4096], small[40];
	size_t need;

	(void)state;
	need = stats_format(big, sizeof(big), NULL);
	assert_int_equal(stats_format(small, sizeof(small), NULL), need);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_memory_equal(small, big, sizeof(small) - 1);
	assert_int_equal(value_of(big, "map_cache_hits"), -1);	/* no cache given */
}

static void *adder(void *arg)
{
	(void)arg;
	for (int i = 0; i < 100000; i++)
		stats_add(STAT_READS_MMAP, 1);
	return NULL;
}

static void test_concurrent_adds(void **state)
{
	pthread_t t[4];

	(void)state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, adder, NULL), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(stats_get(STAT_READS_MMAP), 400000);
}

static void test_open_policy(void **state)
{
	enum open_rw p;

	(void)state;
	assert_int_equal(openmode_parse("private", &p), 0);
	assert_int_equal(p, OPEN_RW_PRIVATE);
	assert_int_equal(openmode_parse("refuse", &p), 0);
	assert_int_equal(p, OPEN_RW_REFUSE);
	assert_int_equal(openmode_parse("yes", &p), -EINVAL);

	assert_int_equal(openmode_decide(O_RDONLY, true, OPEN_RW_REFUSE), OPEN_READ);
	assert_int_equal(openmode_decide(O_RDWR, true, OPEN_RW_REFUSE), OPEN_REFUSE);
	assert_int_equal(openmode_decide(O_RDWR, true, OPEN_RW_PRIVATE), OPEN_RW_DIRECT);
	/* What no private mapping needs stays refused. */
	assert_int_equal(openmode_decide(O_WRONLY, true, OPEN_RW_PRIVATE), OPEN_REFUSE);
	assert_int_equal(openmode_decide(O_RDWR | O_TRUNC, true, OPEN_RW_PRIVATE), OPEN_REFUSE);
	assert_int_equal(openmode_decide(O_RDWR | O_APPEND, true, OPEN_RW_PRIVATE), OPEN_REFUSE);
	assert_int_equal(openmode_decide(O_RDONLY | O_TRUNC, true, OPEN_RW_PRIVATE), OPEN_REFUSE);
	/* Ordinary files of STORE are no VMM's guest memory. */
	assert_int_equal(openmode_decide(O_RDWR, false, OPEN_RW_PRIVATE), OPEN_REFUSE);
	assert_int_equal(openmode_decide(O_RDONLY, false, OPEN_RW_PRIVATE), OPEN_READ);
}

static void test_comm(void **state)
{
	char buf[64], want[64];
	FILE *f = fopen("/proc/self/comm", "r");

	(void)state;
	assert_non_null(f);
	assert_non_null(fgets(want, sizeof(want), f));
	fclose(f);
	want[strcspn(want, "\n")] = '\0';
	openmode_comm((uint32_t)getpid(), buf, sizeof(buf));
	assert_string_equal(buf, want);
	openmode_comm(0x7ffffff0u, buf, sizeof(buf));	/* no such process */
	assert_string_equal(buf, "?");
}

static bool readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* A trim is due a second after the first note of a burst, not before, and
 * once: the note of a later free does not put it off. The note that asks
 * for it wakes the watcher. */
static void test_memtrim_due(void **state)
{
	uint64_t looks;
	int w, w2;

	(void)state;
	memtrim_setup();
	assert_true(memtrim_wake_fd() >= 0);
	memtrim_run_due();	/* whatever an earlier test left */
	if (memtrim_wait_ms() >= 0) {
		usleep((useconds_t)memtrim_wait_ms() * 1000 + 20000);
		memtrim_run_due();
	}
	assert_int_equal(memtrim_wait_ms(), -1);
	memtrim_woken();
	assert_false(readable(memtrim_wake_fd()));
	memtrim_note();
	/* a watcher asleep with no timeout is woken to take the new one */
	assert_true(readable(memtrim_wake_fd()));
	memtrim_woken();
	assert_false(readable(memtrim_wake_fd()));
	w = memtrim_wait_ms();
	assert_true(w > 500 && w <= 1000);
	memtrim_run_due();	/* not due yet: still asked for */
	usleep(100000);
	memtrim_note();		/* does not put it off, nor wake again */
	assert_false(readable(memtrim_wake_fd()));
	w2 = memtrim_wait_ms();
	assert_true(w2 >= 0 && w2 < w);
	usleep((useconds_t)w2 * 1000 + 20000);
	assert_int_equal(memtrim_wait_ms(), 0);
	looks = stats_get(STAT_HEAP_LOOKS);
	memtrim_run_due();
	assert_int_equal(memtrim_wait_ms(), -1);
	assert_int_equal(stats_get(STAT_HEAP_LOOKS), looks + 1);
}

/* The tcache is turned off after whatever tunables were set, and a count
 * that is set already is left alone (no second run). */
static void test_memtrim_tunables(void **state)
{
	static const struct {
		const char *old, *want;
	} cases[] = {
		{ NULL, "glibc.malloc.tcache_count=0" },
		{ "", "glibc.malloc.tcache_count=0" },
		{ "glibc.malloc.arena_test=1", "glibc.malloc.arena_test=1:glibc.malloc.tcache_count=0" },
		{ "glibc.malloc.tcache_count=7", NULL },
		{ "glibc.malloc.check=0:glibc.malloc.tcache_count=0", NULL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = memtrim_tunables(cases[i].old);

		if (cases[i].want)
			assert_string_equal(got, cases[i].want);
		else
			assert_null(got);
		free(got);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_format, reset),
		cmocka_unit_test_setup(test_short_buffer, reset),
		cmocka_unit_test_setup(test_concurrent_adds, reset),
		cmocka_unit_test(test_open_policy),
		cmocka_unit_test(test_comm),
		cmocka_unit_test(test_memtrim_due),
		cmocka_unit_test(test_memtrim_tunables),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
