/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests for log escaping: a file name from STORE can hold any byte but
 * '/' and NUL, and none of them may break a log line or forge another one.
 */
#include "unit.h"

#include "log.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_text_unchanged),
		cmocka_unit_test(test_forged_line),
		cmocka_unit_test(test_truncation),
	};

	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
