#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Builds snapfs the way CI does and runs every test: the cmocka unit tests and
# the mount tests (real FUSE mounts, which need root and /dev/fuse). The exit
# code is the result. Steps:
#
#   contrib/install-deps.sh                     (as root; quick if nothing is missing)
#   autoreconf -fi                              in the source tree
#   configure --enable-werror --enable-sanitizers --enable-fault-injection   in BUILD_DIR (default build-ci/)
#   make -j$(nproc) && make -j2 check           on failure: prints test-suite.log
#   the same build and make -j2 check against libfuse 3.17.2 (kernel passthrough
#   on), in BUILD_DIR-fuse317, without sanitizers    only with RUN_LIBFUSE317=1;
#   the library is built first by contrib/build-libfuse.sh (Debian's trixie
#   source package, into LIBFUSE_PREFIX, default build-libfuse/3.17.2)
#   make distcheck                              only with RUN_DISTCHECK=1
#   contrib/tsan-churn.sh BUILD_DIR-tsan 60     only with RUN_TSAN=1: a ThreadSanitizer
#                                               build under a minute of churn (about 2 min)
#
# Environment: BUILD_DIR (a fresh out-of-tree build directory, removed first),
# RUN_LIBFUSE317=1 (and LIBFUSE_PREFIX), RUN_DISTCHECK=1, RUN_TSAN=1 (and TSAN_SECONDS, default 60), CHECK_TIMEOUT (seconds for each of check and distcheck,
# default 900), CONFIGURE_FLAGS (added to configure's arguments).
set -euo pipefail
export LC_ALL=C

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
builddir=${BUILD_DIR:-$srcdir/build-ci}
check_timeout=${CHECK_TIMEOUT:-900}
jobs=$(nproc 2>/dev/null || echo 2)
start=$SECONDS

step() {
	printf '\n==> [%4ds] %s\n' $((SECONDS - start)) "$*"
}

die() {
	echo "run-tests.sh: $*" >&2
	exit 1
}

# unmount_leftovers [DIR]: mounts left behind when a timeout killed a test
# (its daemon is gone, so they answer ENOTCONN): only snapfs mounts below
# the build directory DIR (default: the main one).
unmount_leftovers() {
	local target dir=${1:-$builddir}
	command -v findmnt >/dev/null 2>&1 || return 0
	{ findmnt -rn -t fuse.snapfs -o TARGET 2>/dev/null || true; } | while read -r target; do
		case $target in
		"$dir"/*)
			echo "run-tests.sh: unmounting leftover $target" >&2
			fusermount3 -u -z "$target" 2>/dev/null || umount -l "$target" || true
			;;
		esac
	done
}

# summary DIR: the counts of DIR/test-suite.log as one closing line.
summary() {
	local log=$1/test-suite.log total pass fail error xpass skip
	[ -f "$log" ] || return 1
	count() { sed -n "s/^# $1: *//p" "$log" | head -n1; }
	total=$(count TOTAL); pass=$(count PASS); skip=$(count SKIP)
	fail=$(count FAIL); error=$(count ERROR); xpass=$(count XPASS)
	echo "tests: ${pass:-0} passed, $((${fail:-0} + ${error:-0} + ${xpass:-0})) failed, ${skip:-0} skipped"
	[ "${total:-0}" -gt 0 ]
}

# show_failures DIR: the harness's log, which holds the log of every test
# that failed, and the names of the tests that failed or skipped.
show_failures() {
	local dir=$1 trs
	if [ -f "$dir/test-suite.log" ]; then
		echo "---------------- $dir/test-suite.log ----------------"
		cat "$dir/test-suite.log"
		echo "-----------------------------------------------------"
	fi
	while IFS= read -r trs; do
		if grep -Eq '^:test-result: (FAIL|ERROR|XPASS)' "$trs"; then
			echo "failed: ${trs%.trs} (log: ${trs%.trs}.log)"
		fi
	done < <(find "$dir/tests" -name '*.trs' 2>/dev/null | sort)
}

step "snapfs tests: source $srcdir, build $builddir, $jobs cores, kernel $(uname -r)"

step "dependencies (contrib/install-deps.sh)"
if [ "$(id -u)" -eq 0 ]; then
	"$srcdir/contrib/install-deps.sh"
	if [ ! -e /dev/fuse ]; then
		modprobe fuse 2>/dev/null || echo "run-tests.sh: /dev/fuse is missing and modprobe fuse failed" >&2
	fi
else
	echo "not root: skipping install-deps.sh; mount tests will skip (they need root and /dev/fuse)"
fi

step "autoreconf -fi"
(cd "$srcdir" && autoreconf -fi)

step "configure --enable-werror --enable-sanitizers --enable-fault-injection ${CONFIGURE_FLAGS:-}"
# Start from scratch, but only ever remove a directory configure made.
if [ -e "$builddir" ]; then
	if [ "$builddir" = "$srcdir" ] ||
		{ [ ! -f "$builddir/config.status" ] && [ -n "$(ls -A "$builddir")" ]; }; then
		die "$builddir exists and is not a build directory: not removing it"
	fi
	rm -rf "$builddir"
fi
mkdir -p "$builddir"
cd "$builddir"
# shellcheck disable=SC2086 # CONFIGURE_FLAGS is a list of words
"$srcdir/configure" --enable-werror --enable-sanitizers --enable-fault-injection ${CONFIGURE_FLAGS:-} ||
	die "configure failed: see $builddir/config.log"

step "make -j$jobs"
make -j"$jobs" || die "the build failed"

# Sanitizer findings fail the test that hit them; keep the user's settings.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

step "make -j2 check (timeout ${check_timeout}s)"
rc=0
timeout --kill-after=30 "$check_timeout" make -j2 check || rc=$?
if [ $rc -ne 0 ]; then
	[ $rc -eq 124 ] && echo "run-tests.sh: make check did not finish in ${check_timeout}s" >&2
	unmount_leftovers
	show_failures "$builddir"
	summary "$builddir" || true
	step "FAILED: make check (exit $rc)"
	exit 1
fi
summary "$builddir" >/dev/null || die "make check ran no test"

# The whole suite again against libfuse 3.17.2, where views of one file,
# plain files and flat files are served by kernel passthrough and the tests
# that need it run (they skip against 3.14). No sanitizers: the daemon's
# code is the same but for passthrough.c, which the sanitizer build above
# compiles too; this keeps CI within its time.
if [ "${RUN_LIBFUSE317:-0}" = 1 ]; then
	fusedir=${LIBFUSE_PREFIX:-$srcdir/build-libfuse/3.17.2}
	b317=$builddir-fuse317
	step "libfuse 3.17.2 (contrib/build-libfuse.sh $fusedir)"
	"$srcdir/contrib/build-libfuse.sh" "$fusedir" || die "building libfuse 3.17.2 failed"
	pcdir=$("$srcdir/contrib/build-libfuse.sh" --pkgconfig-dir "$fusedir")
	step "configure --enable-werror --enable-fault-injection against libfuse 3.17.2 in $b317"
	if [ -e "$b317" ]; then
		{ [ -f "$b317/config.status" ] || [ -z "$(ls -A "$b317")" ]; } ||
			die "$b317 exists and is not a build directory: not removing it"
		rm -rf "$b317"
	fi
	mkdir -p "$b317"
	(cd "$b317" && PKG_CONFIG_PATH=$pcdir "$srcdir/configure" --enable-werror \
		--enable-fault-injection LDFLAGS="-Wl,-rpath,$fusedir/lib") ||
		die "configure against libfuse 3.17.2 failed: see $b317/config.log"
	grep -q '^#define HAVE_FUSE_PASSTHROUGH 1' "$b317/config.h" ||
		die "configure did not find passthrough in libfuse 3.17.2"
	make -C "$b317" -j"$jobs" || die "the build against libfuse 3.17.2 failed"
	step "make -j2 check against libfuse 3.17.2 (timeout ${check_timeout}s)"
	rc=0
	# The same tests; the two soaks, which test the daemon's logic more
	# than the library's and just ran at full length, run shorter here so
	# that CI stays within its time, and so do the compactor's crash
	# cases (snapfs-compact's steps do not go through FUSE): on XFS, with
	# EIO and ENOSPC, not again on ext4 nor with power cuts.
	SNAPFS_CRASH_CASES=${SNAPFS317_CRASH_CASES-xfs eio enospc} \
	SNAPFS_RACE_SECONDS=${SNAPFS317_RACE_SECONDS:-6} \
		SNAPFS_FD_ENTRIES=${SNAPFS317_FD_ENTRIES:-5000} \
		SNAPFS_STRESS_SECS=${SNAPFS317_STRESS_SECS:-6} \
		SNAPFS_WATCH_SECS=${SNAPFS317_WATCH_SECS:-8} \
		timeout --kill-after=30 "$check_timeout" make -C "$b317" -j2 check \
		TESTS='$(MOUNT_TESTS)' || rc=$?
	if [ $rc -ne 0 ]; then
		unmount_leftovers "$b317"
		show_failures "$b317"
		summary "$b317" || true
		step "FAILED: make check against libfuse 3.17.2 (exit $rc)"
		exit 1
	fi
	echo "libfuse 3.17.2: $(summary "$b317")"
fi

if [ "${RUN_TSAN:-0}" = 1 ]; then
	tsandir=$builddir-tsan
	step "ThreadSanitizer under churn (contrib/tsan-churn.sh $tsandir ${TSAN_SECONDS:-60})"
	if [ -e "$tsandir" ]; then
		{ [ -f "$tsandir/config.status" ] || [ -z "$(ls -A "$tsandir")" ]; } ||
			die "$tsandir exists and is not a build directory: not removing it"
		rm -rf "$tsandir"
	fi
	rc=0
	timeout --kill-after=30 "$check_timeout" "$srcdir/contrib/tsan-churn.sh" "$tsandir" \
		"${TSAN_SECONDS:-60}" || rc=$?
	if [ $rc -ne 0 ]; then
		unmount_leftovers
		for f in "$tsandir"/tsan-churn/tsan.*; do
			[ -f "$f" ] && { echo "---------------- $f"; head -n 60 "$f"; }
		done
		summary "$builddir" || true
		step "FAILED: ThreadSanitizer churn (exit $rc; reports in $tsandir/tsan-churn)"
		exit 1
	fi
fi

if [ "${RUN_DISTCHECK:-0}" = 1 ]; then
	step "make -j2 distcheck (timeout ${check_timeout}s)"
	rc=0
	# The whole suite just ran against this build; distcheck proves the
	# tarball configures, builds, installs and passes the unit tests, and
	# does not run the mount tests a second time (CI's time is bounded).
	timeout --kill-after=30 "$check_timeout" make -j2 distcheck \
		TESTS='$(UNIT_TESTS)' \
		|| rc=$?
	if [ $rc -ne 0 ]; then
		unmount_leftovers
		# A failed distcheck keeps its tree: show its test log if it got that far.
		for d in "$builddir"/snapfs-*/_build/sub; do
			[ -d "$d" ] && show_failures "$d"
		done
		step "FAILED: make distcheck (exit $rc)"
		exit 1
	fi
fi

step "all tests passed in $((SECONDS - start))s"
summary "$builddir"
