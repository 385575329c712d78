#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# ThreadSanitizer run of the live store: builds snapfs with --enable-tsan in
# BUILD_DIR (configured there if it is not yet), mounts a scratch store with
# a TSan daemon and drives it the way tests/mount/t-live-stress.sh does:
#
#   1. churn, compact=off, steady pace      (readers that read, map, hold)
#   2. churn, compact=off, as fast as it goes (quick readers: lookup,
#      open, forget racing the watcher)
#   (the store on a loop-mounted XFS where mkfs.xfs is installed: layers
#   that reflink, as on the hosts snapfs is made for; with a TSan build
#   against libfuse >= 3.17, versions also get flat files)
#   3. rollrace, compact_threshold=2, keep_diffs=1, compact_rate=1:
#      the compactor publishing small chains while producers roll back
#
# and fails if TSan reported anything (or a tool failed). Needs root and
# /dev/fuse, like the mount tests.
#
#   contrib/tsan-churn.sh BUILD_DIR [SECONDS]
#
# SECONDS (default 60) is split 2:1:2 over the three phases. The reports
# are kept in BUILD_DIR/tsan-churn/ (tsan.PID files, one per process, and
# the daemon's log); the last line is "tsan-churn: N reports ...".
# Environment: SNAPFS_SEED (churn's and rollrace's seed), TSAN_CONFIGURE_FLAGS
# (added to configure's arguments), JOBS (make -j, default 2).
set -uo pipefail
export LC_ALL=C

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [SECONDS]" >&2; exit 2; }
builddir=$1
secs=${2:-60}
seed=${SNAPFS_SEED:-$RANDOM}
start=$SECONDS

say() { printf 'tsan-churn: [%4ds] %s\n' $((SECONDS - start)) "$*"; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] && [ -c /dev/fuse ] || die "needs root and /dev/fuse"

# ---- build ----
mkdir -p "$builddir" || die "cannot make $builddir"
builddir=$(cd "$builddir" && pwd)
if [ ! -f "$builddir/config.status" ]; then
	[ -z "$(ls -A "$builddir")" ] || die "$builddir is neither empty nor a build directory"
	[ -x "$srcdir/configure" ] || (cd "$srcdir" && autoreconf -fi) || die "autoreconf failed"
	say "configure --enable-werror --enable-tsan ${TSAN_CONFIGURE_FLAGS:-} in $builddir"
	# shellcheck disable=SC2086 # TSAN_CONFIGURE_FLAGS is a list of words
	(cd "$builddir" && "$srcdir/configure" --enable-werror --enable-tsan ${TSAN_CONFIGURE_FLAGS:-} \
		>configure.out 2>&1) || die "configure failed: see $builddir/config.log"
fi
grep -q '^#define SNAPFS_TSAN 1' "$builddir/config.h" ||
	die "$builddir is not configured with --enable-tsan"
say "make in $builddir"
make -C "$builddir" -j"${JOBS:-2}" snapfs snapfs-rollback tests/tools/churn tests/tools/rollrace \
	>"$builddir/tsan-churn-make.out" 2>&1 || { tail -n 30 "$builddir/tsan-churn-make.out"; die "the build failed"; }

# ---- scratch store and mount ----
out=$builddir/tsan-churn
rm -rf "$out"
mkdir -p "$out" || die "cannot make $out"
T=$(mktemp -d "${TMPDIR:-/var/tmp}/snapfs-tsan.XXXXXX") || die "mktemp failed"
MNT=$T/mnt
DAEMON=
XFSDEV=
cleanup() {
	set +e
	if [ -n "$DAEMON" ]; then
		fusermount3 -u -z "$MNT" 2>/dev/null
		kill "$DAEMON" 2>/dev/null
		wait "$DAEMON" 2>/dev/null
	fi
	if [ -n "$XFSDEV" ]; then
		umount "$T/store" 2>/dev/null || umount -l "$T/store"
		losetup -d "$XFSDEV"
	fi
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every process built here writes its reports to $out/tsan.PID; the daemon
# goes on after a report (halt_on_error=0) so that a run counts them all.
export TSAN_OPTIONS="log_path=$out/tsan halt_on_error=0 exitcode=0 second_deadlock_stack=1 history_size=4 ${TSAN_OPTIONS:-}"

# mount OPTIONS: starts the TSan daemon on $T/store (foreground, in the
# background) and waits until it answers.
mount_tsan() {
	mkdir -p "$T/store" "$MNT"
	"$builddir/snapfs" -f -o "$1" "$T/store" "$MNT" >>"$out/snapfs.log" 2>&1 &
	DAEMON=$!
	for _ in $(seq 200); do
		mountpoint -q "$MNT" && return 0
		kill -0 "$DAEMON" 2>/dev/null || die "the daemon exited (see $out/snapfs.log)"
		sleep 0.1
	done
	die "the daemon did not mount in 20 s"
}

umount_tsan() {
	local rc i
	for i in $(seq 50); do
		fusermount3 -u "$MNT" 2>/dev/null && break
		sleep 0.1
	done
	wait "$DAEMON"
	rc=$?
	DAEMON=
	[ "$rc" = 0 ] || die "the daemon exited $rc after the unmount (see $out/snapfs.log)"
}

reports() {
	cat "$out"/tsan.* 2>/dev/null | grep -c '^WARNING: ThreadSanitizer' || true
}

fails=0
s1=$((secs * 2 / 5)) s2=$((secs / 5)) s3=$((secs - secs * 3 / 5))
[ "$s2" -ge 1 ] || s2=1

# The store on XFS (see the top).
mkdir -p "$T/store"
where=$(df -P "$T" | awk 'NR == 2 { print $6 }')
if command -v mkfs.xfs >/dev/null && truncate -s 1G "$T/xfs.img" &&
	mkfs.xfs -q -m reflink=1 "$T/xfs.img" && XFSDEV=$(losetup -f --show "$T/xfs.img") &&
	mount "$XFSDEV" "$T/store"; then
	where="a loop XFS"
fi
say "seed $seed; churn ${s1}s + ${s2}s (compact=off, store on $where), rollrace ${s3}s (compaction on)"
mount_tsan compact=off
mkdir -p "$T/store/vm1" "$T/store/vm2"
"$builddir/tests/tools/churn" -t "$s1" -r 4 -s "$seed" -u "$T/store/vm1" "$MNT/vm1" memory.bin \
	>"$out/churn.log" 2>&1 || { say "churn (steady) failed: $(tail -n 3 "$out/churn.log")"; fails=$((fails + 1)); }
say "churn steady: $(grep '^churn: [0-9]' "$out/churn.log"); TSan reports so far: $(reports)"
"$builddir/tests/tools/churn" -t "$s2" -r 2 -q 2 -s "$seed" -u -p 0 -S 1 "$T/store/vm2" "$MNT/vm2" memory.bin \
	>"$out/churn-fast.log" 2>&1 || { say "churn (fast) failed: $(tail -n 3 "$out/churn-fast.log")"; fails=$((fails + 1)); }
say "churn fast: $(grep '^churn: [0-9]' "$out/churn-fast.log"); TSan reports so far: $(reports)"
umount_tsan

rm -rf "${T:?}/store/"*
mount_tsan compact_threshold=2,keep_diffs=1,compact_rate=1
mkdir -p "$T/store/race"
"$builddir/tests/tools/rollrace" -t "$s3" -s "$seed" -R "$builddir/snapfs-rollback" -m tool,flock,mount \
	"$T/store/race" "$MNT/race" disk.img >"$out/rollrace.log" 2>&1 ||
	{ say "rollrace failed: $(tail -n 3 "$out/rollrace.log")"; fails=$((fails + 1)); }
say "rollrace: $(tail -n 1 "$out/rollrace.log")"
say "daemon: $(grep -c ': compacted ' "$out/snapfs.log") compactions, $(grep -c 'compaction abandoned' "$out/snapfs.log") abandoned"
umount_tsan

n=$(reports)
if [ "$n" != 0 ]; then
	# one line per report: its kind and the first frame of each access
	for f in "$out"/tsan.*; do
		awk '/^WARNING: ThreadSanitizer/ { w = $0; k = 0 }
		     /^    #0 / && w != "" && k < 2 { w = w " | " $2; k++ }
		     /^SUMMARY/ && w != "" { print w; w = "" }' "$f"
	done | sort | uniq -c | sort -rn | head -n 20
fi
say "$n reports in $((SECONDS - start)) s (seed $seed); reports in $out"
[ "$n" = 0 ] || exit 1
[ "$fails" = 0 ] || die "$fails tool run(s) failed (seed $seed)"
exit 0
