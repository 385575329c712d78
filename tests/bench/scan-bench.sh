#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# scan-bench.sh: what taking a layer's extent map costs, FIEMAP against
# SEEK_DATA/SEEK_HOLE (doc/design.md §6, doc/performance.md). On a loop-mounted
# XFS and ext4 and on a tmpfs it writes one diff of SB_SIZE_MB with
# SB_DIRTY_PCT% of its 4 KiB pages written at random (readbench gen), syncs
# it, reads its data into the page cache, and times both scans of it with
# scanbench (SB_REPS runs each, interleaved; median, min, max), which also
# checks that both give the same map. tmpfs has no FIEMAP: SEEK_DATA only.
#
# Run as root from the top build directory of an optimised build (no
# sanitizers):  make bench-scan   or   bash /path/to/tests/bench/scan-bench.sh
# Settings (environment):
#   BUILDDIR=.          where tests/bench/scanbench and readbench were built
#   BENCH_DIR=/var/tmp  where the sparse loop images go (a few hundred MiB used)
#   SB_SIZE_MB=2048  SB_DIRTY_PCT=2  SB_REPS=7  SB_SEED=7
#   SB_FS="xfs ext4 tmpfs"
set -u
export LC_ALL=C

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
SB_SIZE_MB=${SB_SIZE_MB:-2048}
SB_DIRTY_PCT=${SB_DIRTY_PCT:-2}
SB_REPS=${SB_REPS:-7}
SB_SEED=${SB_SEED:-7}
SB_FS=${SB_FS:-xfs ext4 tmpfs}
SCANBENCH=$BUILDDIR/tests/bench/scanbench
READBENCH=$BUILDDIR/tests/bench/readbench

die() {
	echo "scan-bench: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (loop devices, mounts)"
for b in "$SCANBENCH" "$READBENCH"; do
	[ -x "$b" ] || die "$b not found: make tests/bench/scanbench tests/bench/readbench"
done
if grep -q '^SAN_CFLAGS = .*-fsanitize' "$BUILDDIR/Makefile" 2>/dev/null; then
	echo "scan-bench: warning: $BUILDDIR is a sanitizer build; times will be inflated" >&2
fi

W=$(mktemp -d "$BENCH_DIR/scan-bench.XXXXXX") || die "cannot make a work directory in $BENCH_DIR"
LOOPDEV=""
MNT=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$MNT" ] && mountpoint -q "$MNT"; then
		umount "$MNT" || umount -l "$MNT"
	fi
	[ -n "$LOOPDEV" ] && losetup -d "$LOOPDEV"
	rm -rf "$W"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# mount_fs FS: FS mounted on $MNT (a fresh sparse image for XFS and ext4).
mount_fs() {
	local fs=$1 img=$W/$1.img
	MNT=$W/mnt
	mkdir -p "$MNT"
	case $fs in
	tmpfs)
		mount -t tmpfs -o "size=$((SB_SIZE_MB / 4 + 64))m,huge=never" scan-bench "$MNT" ||
			die "cannot mount a tmpfs"
		return
		;;
	xfs) truncate -s $((SB_SIZE_MB + 1024))M "$img" && mkfs.xfs -q "$img" ;;
	ext4) truncate -s $((SB_SIZE_MB + 1024))M "$img" && mkfs.ext4 -q -m 0 "$img" ;;
	*) die "unknown filesystem $fs" ;;
	esac || die "mkfs.$fs failed"
	LOOPDEV=$(losetup -f --show "$img") || die "losetup failed"
	mount "$LOOPDEV" "$MNT" || die "mounting $fs failed"
}

umount_fs() {
	umount "$MNT" || die "cannot unmount $MNT"
	MNT=""
	if [ -n "$LOOPDEV" ]; then
		losetup -d "$LOOPDEV"
		LOOPDEV=""
	fi
	rm -f "$W"/*.img
}

echo "| fs | extents | data MiB | FIEMAP ms: median (min–max) | SEEK_DATA ms: median (min–max) | SEEK / FIEMAP |"
echo "|---|---:|---:|---:|---:|---:|"
for fs in $SB_FS; do
	mount_fs "$fs"
	f=$MNT/mem.1.diff
	"$READBENCH" gen "$f" -m "$SB_SIZE_MB" -s "$SB_SEED" -p "$SB_DIRTY_PCT" >/dev/null ||
		die "$fs: readbench gen failed"
	sync -f "$MNT"
	"$READBENCH" warm "$f" >/dev/null || die "$fs: readbench warm failed"
	out=$("$SCANBENCH" -r "$SB_REPS" "$f") || die "$fs: scanbench failed: $out"
	echo "$out" | awk -v fs="$fs" '
		$1 == "fiemap" && $2 == "unsupported" { fm = "–"; next }
		$1 == "fiemap" { fm = sprintf("%.1f (%.1f–%.1f)", $3, $5, $7); fmed = $3 }
		$1 == "seek" { sk = sprintf("%.1f (%.1f–%.1f)", $3, $5, $7); smed = $3; n = $9; mib = $11 }
		END {
			ratio = "–"
			if (fmed > 0)
				ratio = sprintf("%.1fx", smed / fmed)
			printf "| %s | %d | %.1f | %s | %s | %s |\n", fs, n, mib, fm, sk, ratio
		}'
	umount_fs
done
