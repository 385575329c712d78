#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# first-bench.sh: the first 4 KiB of a layered file on a fresh mount (open +
# read, `readbench first`), at chain depths 4 and 64 (`make bench-first`):
# what bench.sh reports as "first 4 KiB on a fresh mount", alone, so that it
# can be run in a minute. Every sample is a fresh mount (no map cached) with
# the layers warm; the median of BENCH_REPS is reported. With BASELINE set
# to another snapfs binary (an earlier build), it is measured in the same
# run, interleaved, and the ratio reported.
#
# Run from the top build directory.  Settings (environment):
#   BUILDDIR=.           where snapfs and tests/bench/readbench were built
#   BENCH_DIR=/var/tmp   work directory parent; needs ~1.4x BENCH_SIZE_MB
#   BENCH_SIZE_MB=2048   layer size
#   BENCH_DEPTHS="4 64"  chain depths
#   BENCH_DIRTY_PCT=2    dirty pages per diff, percent
#   BENCH_REPS=7         samples per depth and binary
#   BASELINE=            a snapfs binary to compare with (optional)

set -u

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
BENCH_SIZE_MB=${BENCH_SIZE_MB:-2048}
BENCH_DEPTHS=${BENCH_DEPTHS:-4 64}
BENCH_DIRTY_PCT=${BENCH_DIRTY_PCT:-2}
BENCH_REPS=${BENCH_REPS:-7}
BASELINE=${BASELINE:-}
SNAPFS=${SNAPFS:-$BUILDDIR/snapfs}
READBENCH=${READBENCH:-$BUILDDIR/tests/bench/readbench}
FUSERMOUNT=${FUSERMOUNT:-fusermount3}
NAME=memory.bin

die() {
	echo "first-bench.sh: $*" >&2
	exit 1
}
note() {
	echo "first-bench.sh: $*" >&2
}

for b in "$SNAPFS" "$READBENCH" ${BASELINE:+"$BASELINE"}; do
	[ -x "$b" ] || die "$b not found: build first, or set BUILDDIR"
done

maxdepth=0
for d in $BENCH_DEPTHS; do
	[ "$d" -ge 1 ] 2>/dev/null || die "bad depth '$d'"
	[ "$d" -gt "$maxdepth" ] && maxdepth=$d
done

W=$(mktemp -d "$BENCH_DIR/snapfs-first.XXXXXX") || die "cannot create a work directory in $BENCH_DIR"
MNT=$W/mnt
MPID=""
cleanup() {
	rc=$?
	trap - EXIT INT TERM
	if grep -qs " $MNT fuse" /proc/self/mounts; then
		"$FUSERMOUNT" -u -z "$MNT" 2>/dev/null
	fi
	[ -n "$MPID" ] && kill "$MPID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$W"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

median() {
	printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "ERR"; exit }
			if (NR % 2) print v[(NR + 1) / 2]
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}

# first BINARY STORE: one fresh mount, the first 4 KiB of NAME in us.
first() {
	fifo=$W/ready.fifo
	rm -f "$fifo"
	mkfifo "$fifo" || die "mkfifo failed"
	mkdir -p "$MNT"
	"$1" -f -o ready_fd=3 -o compact=off "$2" "$MNT" 3>"$fifo" 2>>"$W/daemon.log" &
	MPID=$!
	[ "$(timeout 60 head -c1 "$fifo" | wc -c)" = 1 ] || die "$1 did not become ready"
	rm -f "$fifo"
	out=$("$READBENCH" first "$MNT/$NAME") || out="first ERR"
	"$FUSERMOUNT" -u "$MNT" || { sleep 1; "$FUSERMOUNT" -u -z "$MNT"; }
	wait "$MPID" || note "warning: $1 exited $? after unmount"
	MPID=""
	echo "$out" | awk '{ print $2 }'
}

L=$W/layers
mkdir -p "$L"
"$READBENCH" gen "$L/$NAME.0.base" -m "$BENCH_SIZE_MB" -s 1 >/dev/null ||
	die "generating the base failed"
i=1
while [ "$i" -le "$maxdepth" ]; do
	"$READBENCH" gen "$L/$NAME.$i.diff" -m "$BENCH_SIZE_MB" -s $((1000 + i)) \
		-p "$BENCH_DIRTY_PCT" >/dev/null || die "generating diff $i failed"
	i=$((i + 1))
done
sync	# the layers are written back: a map's FIEMAP_FLAG_SYNC finds nothing to do
note "$(stat -f -c %T "$W"): base + $maxdepth diffs of $BENCH_SIZE_MB MiB, $BENCH_DIRTY_PCT% dirty"

for d in $BENCH_DEPTHS; do
	mkdir -p "$W/store$d"
	ln "$L/$NAME.0.base" "$W/store$d/" || die "hard links failed in $W"
	i=1
	while [ "$i" -le "$d" ]; do
		ln "$L/$NAME.$i.diff" "$W/store$d/"
		i=$((i + 1))
	done
done

echo "| depth | snapfs first 4 KiB (ms) |${BASELINE:+ baseline (ms) | baseline / snapfs |}"
echo "| --- | --- |${BASELINE:+ --- | --- |}"
for d in $BENCH_DEPTHS; do
	# shellcheck disable=SC2046
	"$READBENCH" warm "$W/store$d"/* >/dev/null
	first "$SNAPFS" "$W/store$d" >/dev/null	# warm-up, not counted
	[ -n "$BASELINE" ] && first "$BASELINE" "$W/store$d" >/dev/null
	s="" b=""
	r=1
	while [ "$r" -le "$BENCH_REPS" ]; do
		s="$s $(first "$SNAPFS" "$W/store$d")"
		[ -n "$BASELINE" ] && b="$b $(first "$BASELINE" "$W/store$d")"
		r=$((r + 1))
	done
	note "depth $d: snapfs$s us${BASELINE:+ | baseline$b us}"
	# shellcheck disable=SC2086
	ms=$(median $s | awk '{ printf "%.1f", $1 / 1000 }')
	if [ -n "$BASELINE" ]; then
		# shellcheck disable=SC2086
		bms=$(median $b | awk '{ printf "%.1f", $1 / 1000 }')
		echo "| $d | $ms | $bms | $(awk -v a="$bms" -v b="$ms" 'BEGIN { printf "%.1fx", a / b }') |"
	else
		echo "| $d | $ms |"
	fi
done
