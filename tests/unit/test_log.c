/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests for log escaping: a file name from STORE can hold any byte but
 * '/' and NUL, and none of them may break a log line or forge another one.
 * And for rate limiting: a call site prints a burst of lines per interval,
 * then one summary line with the count of those left out (the clock is the
 * test's own, the lines are captured from fuse_log()).
 */
#include "unit.h"

#include <pthread.h>

#include "log.h"

/* ---- captured lines and a fake clock ---- */

#define MAX_LINES 64

static char lines[MAX_LINES][1200];
static enum fuse_log_level levels[MAX_LINES];
static int nlines;
static int64_t fake_now;
static pthread_mutex_t capture_lock = PTHREAD_MUTEX_INITIALIZER;

static void capture(enum fuse_log_level level, const char *fmt, va_list ap)
{
	pthread_mutex_lock(&capture_lock);
	if (nlines < MAX_LINES) {
		vsnprintf(lines[nlines], sizeof(lines[0]), fmt, ap);
		levels[nlines++] = level;
	}
	pthread_mutex_unlock(&capture_lock);
}

static int64_t fake_clock(void)
{
	return fake_now;
}

static int rl_setup(void **state)
{
	(void)state;
	nlines = 0;
	fake_now = 1000000;
	fuse_set_log_func(capture);
	snapfs_log_set_clock(fake_clock);
	snapfs_log_set_ratelimit(3, 10000);
	snapfs_log_level = FUSE_LOG_INFO;
	return 0;
}

static int rl_teardown(void **state)
{
	(void)state;
	snapfs_log_flush();
	snapfs_log_set_clock(NULL);
	snapfs_log_set_ratelimit(SNAPFS_LOG_BURST, SNAPFS_LOG_INTERVAL_MS);
	return 0;
}

/* One call site, so the tests below can share it or use their own. */
static void emfile_line(int i)
{
	log_err_rl("vm%d/memory.bin: cannot open: Too many open files", i);
}

static void expect(const char *in, const char *want)
{
	char out[256];
	size_t n = snapfs_log_escape(out, sizeof(out), in);

	assert_string_equal(out, want);
	assert_int_equal(n, strlen(want));
}

static void test_plain_text_unchanged(void **state)
{
	(void)state;
	expect("", "");
	expect("vm1/memory.bin: compacted 3 layers", "vm1/memory.bin: compacted 3 layers");
	/* UTF-8 and other high bytes are names, not control characters. */
	expect("vm/m\xc3\xa9moire", "vm/m\xc3\xa9moire");
}

static void test_forged_line(void **state)
{
	(void)state;
	/* A name with a newline cannot start a second "snapfs:" line. */
	expect("vm9\nsnapfs: vm9: removed: x", "vm9\\nsnapfs: vm9: removed: x");
	expect("a\tb\rc", "a\\tb\\rc");
	expect("bell\x07 del\x7f esc\x1b", "bell\\x07 del\\x7f esc\\x1b");
	/* The backslash is escaped too, so "\\n" in a name stays readable as
	 * two characters and no escape is ambiguous. */
	expect("a\\nb", "a\\\\nb");
}

static void test_truncation(void **state)
{
	char out[8];

	(void)state;
	/* Cut at a character boundary: never half an escape. */
	assert_int_equal(snapfs_log_escape(out, sizeof(out), "abcde\nfgh"), 7);
	assert_string_equal(out, "abcde\\n");
	assert_int_equal(snapfs_log_escape(out, sizeof(out), "abcdef\n"), 6);
	assert_string_equal(out, "abcdef");
	assert_int_equal(snapfs_log_escape(out, 1, "x"), 0);
	assert_string_equal(out, "");
}

static void test_ratelimit_burst_then_summary(void **state)
{
	(void)state;
	for (int i = 0; i < 10; i++)
		emfile_line(i);
	/* the burst of 3 passes, 7 are counted */
	assert_int_equal(nlines, 3);
	assert_string_equal(lines[0], "vm0/memory.bin: cannot open: Too many open files");
	assert_string_equal(lines[2], "vm2/memory.bin: cannot open: Too many open files");
	assert_int_equal(levels[0], FUSE_LOG_ERR);
	/* still inside the interval: nothing more */
	fake_now += 9999;
	emfile_line(10);
	assert_int_equal(nlines, 3);
	/* the next line after the interval: the summary (the last line left
	 * out, with the count and the seconds), then the line itself */
	fake_now += 1;
	emfile_line(11);
	assert_int_equal(nlines, 5);
	assert_string_equal(lines[3], "vm10/memory.bin: cannot open: Too many open "
			    "files [repeated 8 times in the last 10 s]");
	assert_int_equal(levels[3], FUSE_LOG_ERR);
	assert_string_equal(lines[4], "vm11/memory.bin: cannot open: Too many open files");
	/* a quiet interval has no summary; the burst is whole again */
	fake_now += 60000;
	for (int i = 0; i < 3; i++)
		emfile_line(20 + i);
	assert_int_equal(nlines, 8);
	emfile_line(23);
	assert_int_equal(nlines, 8);
	snapfs_log_flush();
	assert_int_equal(nlines, 9);
	assert_string_equal(lines[8], "vm23/memory.bin: cannot open: Too many open "
			    "files [repeated 1 time in the last 1 s]");
	/* flushed: nothing pending */
	snapfs_log_flush();
	assert_int_equal(nlines, 9);
}

static void test_ratelimit_sites_apart(void **state)
{
	(void)state;
	for (int i = 0; i < 5; i++) {
		log_warn_rl("site A %d", i);
		log_info_rl("site B %d", i);
	}
	/* each site has its own burst */
	assert_int_equal(nlines, 6);
	snapfs_log_flush();
	assert_int_equal(nlines, 8);
	/* each summary at the level of its own lines */
	for (int i = 6; i < 8; i++) {
		if (strncmp(lines[i], "site A 4 [repeated 2 times", 26) == 0)
			assert_int_equal(levels[i], FUSE_LOG_WARNING);
		else if (strncmp(lines[i], "site B 4 [repeated 2 times", 26) == 0)
			assert_int_equal(levels[i], FUSE_LOG_INFO);
		else
			fail_msg("unexpected summary: %s", lines[i]);
	}
}

static void test_ratelimit_below_level(void **state)
{
	(void)state;
	/* debug lines of a daemon without -d: neither printed nor counted */
	for (int i = 0; i < 10; i++)
		log_ratelimited(FUSE_LOG_DEBUG, "debug %d", i);
	snapfs_log_flush();
	assert_int_equal(nlines, 0);
}

static void test_ratelimit_escapes(void **state)
{
	(void)state;
	/* a name with a newline stays one line, in the summary too */
	for (int i = 0; i < 4; i++)
		log_err_rl("vm\nsnapfs: forged %d", i);
	snapfs_log_flush();
	assert_int_equal(nlines, 4);
	assert_string_equal(lines[0], "vm\\nsnapfs: forged 0");
	assert_string_equal(lines[3], "vm\\nsnapfs: forged 3 [repeated 1 time in the last 1 s]");
}

#define RL_THREADS 4
#define RL_CALLS 1000

static void *rl_hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < RL_CALLS; i++)
		log_err_rl("hammered %d", i);
	return NULL;
}

static void test_ratelimit_threads(void **state)
{
	pthread_t th[RL_THREADS];
	unsigned long total = 0;

	(void)state;
	for (int i = 0; i < RL_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, rl_hammer, NULL), 0);
	for (int i = 0; i < RL_THREADS; i++)
		pthread_join(th[i], NULL);
	snapfs_log_flush();
	/* 3 lines and one summary that counts the rest, exactly */
	assert_int_equal(nlines, 4);
	assert_non_null(strstr(lines[3], " [repeated "));
	total = strtoul(strstr(lines[3], " [repeated ") + 11, NULL, 10);
	assert_int_equal(total, RL_THREADS * RL_CALLS - 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_text_unchanged),
		cmocka_unit_test(test_forged_line),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test_setup_teardown(test_ratelimit_burst_then_summary, rl_setup, rl_teardown),
		cmocka_unit_test_setup_teardown(test_ratelimit_sites_apart, rl_setup, rl_teardown),
		cmocka_unit_test_setup_teardown(test_ratelimit_below_level, rl_setup, rl_teardown),
		cmocka_unit_test_setup_teardown(test_ratelimit_escapes, rl_setup, rl_teardown),
		cmocka_unit_test_setup_teardown(test_ratelimit_threads, rl_setup, rl_teardown),
	};

	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
