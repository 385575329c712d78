#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# space-bench.sh: the disk space a running VM's open view holds across a
# compaction (`make bench-space`; doc/performance.md "Disk space across a
# compaction"). On a loop filesystem of each type in SPACE_FS, a layered
# file (a dense base and two sparse diffs) is mounted with
# -o compact_threshold=2,keep_diffs=1; a process opens the view and maps it
# MAP_PRIVATE (a VM restored from it), a third diff is published, and the
# daemon compacts the new version's chain. Reported, from df: the space
# used before the publish, after the compaction with the view still open,
# and after it is closed; and how many deleted files the daemon still held
# open meanwhile. Where snapfs moves open readers onto the new base
# (doc/design.md decision 19), the second figure equals the third. With
# BASELINE set to another snapfs binary, it runs in the same run, first.
#
# Run from the top build directory, as root.  Settings (environment):
#   BUILDDIR=.            where snapfs and tests/bench/readbench were built
#   BENCH_DIR=/var/tmp    where the loop images go (SPACE_IMG_MB each)
#   SPACE_FS="ext4 xfs"   filesystems (xfs: mkfs.xfs -m reflink=1)
#   SPACE_SIZE_MB=512     the layered file's size
#   SPACE_DIRTY_PCT=5     dirty pages per diff, percent
#   SPACE_IMG_MB=2048     each loop image
#   BASELINE=             a snapfs binary to compare with (optional)

set -u

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
SPACE_FS=${SPACE_FS:-ext4 xfs}
SPACE_SIZE_MB=${SPACE_SIZE_MB:-512}
SPACE_DIRTY_PCT=${SPACE_DIRTY_PCT:-5}
SPACE_IMG_MB=${SPACE_IMG_MB:-2048}
BASELINE=${BASELINE:-}
SNAPFS=${SNAPFS:-$BUILDDIR/snapfs}
READBENCH=${READBENCH:-$BUILDDIR/tests/bench/readbench}
FUSERMOUNT=${FUSERMOUNT:-fusermount3}

die() {
	echo "space-bench.sh: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (loop devices)"
for b in "$SNAPFS" "$READBENCH" ${BASELINE:+"$BASELINE"}; do
	[ -x "$b" ] || die "$b not found: build first, or set BUILDDIR"
done

W=$(mktemp -d "$BENCH_DIR/snapfs-space.XXXXXX") || die "cannot create a work directory in $BENCH_DIR"
HOLDER=""
cleanup() {
	trap - EXIT INT TERM
	[ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null
	if grep -qs " $W/mnt fuse" /proc/self/mounts; then
		"$FUSERMOUNT" -u -z "$W/mnt" 2>/dev/null
	fi
	if grep -qs " $W/fs " /proc/self/mounts; then
		umount "$W/fs" 2>/dev/null || umount -l "$W/fs"
	fi
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

# used: MB used on the loop filesystem, after a sync.
used() {
	sync
	df -BM --output=used "$W/fs" | tail -1 | tr -d ' M'
}

# attr NAME: user.snapfs.NAME of the view.
attr() {
	getfattr --only-values -n "user.snapfs.$1" "$W/mnt/vm/memory.bin" 2>/dev/null
}

# one FS BIN: the measurement on a new filesystem of type FS with snapfs BIN;
# prints one table row.
one() {
	local fs=$1 bin=$2 s u0 u1 u2 held pid i
	truncate -s "${SPACE_IMG_MB}M" "$W/img"
	case $fs in
	xfs) mkfs.xfs -q -f -m reflink=1 "$W/img" || die "mkfs.xfs failed" ;;
	*) "mkfs.$fs" -q -F "$W/img" >/dev/null 2>&1 || die "mkfs.$fs failed" ;;
	esac
	mkdir -p "$W/fs" "$W/mnt"
	mount -o loop "$W/img" "$W/fs" || die "cannot mount the $fs image"
	s=$W/fs/store
	mkdir -p "$s/vm"
	"$READBENCH" gen "$s/vm/memory.bin.0.base" -m "$SPACE_SIZE_MB" -s 1 >/dev/null || die "gen failed"
	for i in 1 2; do
		"$READBENCH" gen "$s/vm/memory.bin.$i.diff" -m "$SPACE_SIZE_MB" -s $((i + 1)) \
			-p "$SPACE_DIRTY_PCT" >/dev/null || die "gen failed"
	done
	"$READBENCH" gen "$W/fs/next" -m "$SPACE_SIZE_MB" -s 9 -p "$SPACE_DIRTY_PCT" >/dev/null ||
		die "gen failed"
	"$bin" -o compact_threshold=2,keep_diffs=1 "$s" "$W/mnt" 2>>"$W/snapfs.log" ||
		die "$bin did not mount (see its log)"
	pid=$(pgrep -n -f -- "$bin -o compact_threshold=2,keep_diffs=1 $s")
	rm -f "$W/ready" "$W/stop"
	python3 - "$W/mnt/vm/memory.bin" "$W" <<'EOF' &
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ)
sum(m[i] for i in range(0, len(m), 1 << 20))	# fault a page a MiB
open(sys.argv[2] + "/ready", "w").close()
while not os.path.exists(sys.argv[2] + "/stop"):
    time.sleep(0.05)
EOF
	HOLDER=$!
	for ((i = 0; i < 600; i++)); do
		[ -e "$W/ready" ] && break
		sleep 0.05
	done
	[ -e "$W/ready" ] || die "the holder did not open the view"
	u0=$(used)
	mv "$W/fs/next" "$s/vm/memory.bin.3.diff"
	for ((i = 0; i < 1200; i++)); do
		[ "$(attr depth)" = 1 ] && [ "$(attr compaction)" = idle ] && break
		sleep 0.05
	done
	[ "$(attr depth)" = 1 ] || die "$fs: the chain was not compacted (depth $(attr depth))"
	sleep 2		# what is let go, is let go by now
	u1=$(used)
	held=$(find "/proc/$pid/fd" -lname '* (deleted)' 2>/dev/null | wc -l)
	touch "$W/stop"
	wait "$HOLDER"
	HOLDER=""
	sleep 0.5
	u2=$(used)
	printf '| %s | %s | %s MB | %s MB (%s deleted files open) | %s MB |\n' \
		"$fs" "$3" "$u0" "$u1" "$held" "$u2"
	"$FUSERMOUNT" -u "$W/mnt" || die "cannot unmount"
	# The daemon lets go of the store as it exits, after the unmount.
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	umount "$W/fs" || die "cannot unmount the $fs image"
	rm -f "$W/img"
}

echo "space-bench: a ${SPACE_SIZE_MB} MiB view (a dense base, two ${SPACE_DIRTY_PCT}% diffs) held open and mapped across the compaction of its chain after a third diff"
echo
echo "| filesystem | snapfs | used before the publish | compacted, the view still open | the view closed |"
echo "|---|---|---:|---:|---:|"
for fs in $SPACE_FS; do
	command -v "mkfs.$fs" >/dev/null || { echo "space-bench.sh: no mkfs.$fs: $fs skipped" >&2; continue; }
	[ -n "$BASELINE" ] && one "$fs" "$BASELINE" baseline
	one "$fs" "$SNAPFS" this
done
