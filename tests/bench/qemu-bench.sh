#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# qemu-bench.sh: how fast a real QEMU gets its guest RAM from a view. A store
# of a dense base and QB_DIFFS sparse diffs (QB_DIRTY_PCT% of the pages
# each) is mounted once per reply mode (read_reply=splice, read_reply=mmap,
# with -o open_rw=private); a paused QEMU 7.2 (-S, TCG, no guest) maps the
# view as guest RAM (memory-backend-file share=off) and pmemsave of all of
# it to /dev/null is timed: the first one faults every page in through
# snapfs, the second one is served from the page cache. The baseline is
# the same QEMU on the merged file (a plain copy of the view) on the same
# filesystem. Before each first read the layers and the merged file are
# dropped from the page cache (POSIX_FADV_DONTNEED on each file; nothing
# else on the machine is dropped), and each mount is fresh, so the view's
# own cache is empty. Reports the median of QB_REPS runs per row and the
# ratio to the merged file's first read.
#
# Run as root from the top build directory of an optimised build (no
# sanitizers): bash /path/to/tests/bench/qemu-bench.sh (or make bench-qemu)
# Settings (environment): BUILDDIR=.  BENCH_DIR=/var/tmp  QB_SIZE_MB=512
#   QB_DIFFS=3  QB_DIRTY_PCT=2  QB_REPS=3  QB_OUT=$BUILDDIR/qemu-bench.md
set -u
export LC_ALL=C

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
QB_SIZE_MB=${QB_SIZE_MB:-512}
QB_DIFFS=${QB_DIFFS:-3}
QB_DIRTY_PCT=${QB_DIRTY_PCT:-2}
QB_REPS=${QB_REPS:-3}
QB_OUT=${QB_OUT:-$BUILDDIR/qemu-bench.md}
SNAPFS=$BUILDDIR/snapfs
QMPCTL=$BUILDDIR/tests/tools/qmpctl
QEMU=$(command -v qemu-system-x86_64 || true)
SIZE=$((QB_SIZE_MB << 20))

die() {
	echo "qemu-bench: $*" >&2
	exit 1
}
[ -n "$QEMU" ] || die "qemu-system-x86_64 not found (Debian: qemu-system-x86)"
[ -x "$SNAPFS" ] && [ -x "$QMPCTL" ] || die "build snapfs and tests/tools/qmpctl first"
command -v xfs_io >/dev/null || die "xfs_io not found (xfsprogs)"

W=$(mktemp -d "$BENCH_DIR/qemu-bench.XXXXXX") || die "mktemp"
QPID=
DPID=
cleanup() {
	[ -n "$QPID" ] && kill "$QPID" 2>/dev/null
	mountpoint -q "$W/mnt" && fusermount3 -u -z "$W/mnt"
	[ -n "$DPID" ] && wait "$DPID" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }
export QMPCTL_TIMEOUT=600	# a loaded machine can take long

# drop FILE...: the files' pages out of the page cache.
drop() {
	local f
	for f in "$@"; do
		xfs_io -r -c "fadvise -d 0 $(stat -c %s "$f")" "$f" || die "fadvise $f"
	done
}

# ---- the store ----
mkdir -p "$W/store/vm1" "$W/mnt"
head -c "$SIZE" /dev/urandom >"$W/store/vm1/memory.bin.1.base" || die "base"
npages=$((SIZE / 4096))
for ((d = 2; d <= QB_DIFFS + 1; d++)); do
	f=$W/store/vm1/memory.bin.$d.diff
	awk -v n="$npages" -v pct="$QB_DIRTY_PCT" -v seed="$d" -v sz="$SIZE" 'BEGIN {
		srand(seed); print "truncate " sz
		for (i = 0; i < n * pct / 100; i++)
			printf "pwrite -q -S 0x%02x %d 4096\n", 1 + d % 254, int(rand() * n) * 4096
	}' | xfs_io -f "$f" >/dev/null || die "diff $d"
done
LAYERS=("$W"/store/vm1/memory.bin.*)

# run_qemu PATH: starts a paused QEMU on PATH, times two pmemsaves; prints
# "FIRST SECOND" in seconds.
run_qemu() {
	local t0 t1 t2 cmd
	"$QEMU" -S -machine pc,accel=kvm:tcg -display none -nodefaults -m "${QB_SIZE_MB}M" \
		-object "memory-backend-file,id=ram,size=${QB_SIZE_MB}M,mem-path=$1,share=off" \
		-machine memory-backend=ram -qmp "unix:$W/qmp,server=on,wait=off" \
		-daemonize -pidfile "$W/qemu.pid" >"$W/qemu.out" 2>&1 ||
		die "QEMU did not start: $(cat "$W/qemu.out")"
	QPID=$(cat "$W/qemu.pid")
	cmd="{\"execute\":\"pmemsave\",\"arguments\":{\"val\":0,\"size\":$SIZE,\"filename\":\"/dev/null\"}}"
	t0=$(now)
	"$QMPCTL" qmp "$W/qmp" "$cmd" >/dev/null || die "pmemsave"
	t1=$(now)
	"$QMPCTL" qmp "$W/qmp" "$cmd" >/dev/null || die "pmemsave"
	t2=$(now)
	"$QMPCTL" qmp "$W/qmp" '{"execute":"quit"}' >/dev/null 2>&1
	while kill -0 "$QPID" 2>/dev/null; do sleep 0.05; done
	QPID=
	awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%.3f %.3f\n", b - a, c - b }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ---- the merged file, the baseline ----
"$SNAPFS" -f -o open_rw=private "$W/store" "$W/mnt" 2>>"$W/snapfs.log" &
DPID=$!
for _ in $(seq 100); do mountpoint -q "$W/mnt" && break; sleep 0.05; done
cp "$W/mnt/vm1/memory.bin" "$W/merged" || die "merging"
fusermount3 -u "$W/mnt"; wait "$DPID"; DPID=
: >"$W/rows"
for ((r = 0; r < QB_REPS; r++)); do
	drop "$W/merged"
	run_qemu "$W/merged" >>"$W/merged.times"
done
m1=$(cut -d' ' -f1 "$W/merged.times" | median)
m2=$(cut -d' ' -f2 "$W/merged.times" | median)

# ---- the view, per reply mode ----
for mode in splice mmap; do
	: >"$W/$mode.times"
	for ((r = 0; r < QB_REPS; r++)); do
		drop "${LAYERS[@]}"
		"$SNAPFS" -f -o open_rw=private,read_reply=$mode "$W/store" "$W/mnt" \
			2>>"$W/snapfs.log" &
		DPID=$!
		for _ in $(seq 100); do mountpoint -q "$W/mnt" && break; sleep 0.05; done
		run_qemu "$W/mnt/vm1/memory.bin" >>"$W/$mode.times"
		fusermount3 -u "$W/mnt"; wait "$DPID"; DPID=
	done
	v1=$(cut -d' ' -f1 "$W/$mode.times" | median)
	v2=$(cut -d' ' -f2 "$W/$mode.times" | median)
	echo "$mode $v1 $v2" >>"$W/rows"
done

{
	echo "QEMU $("$QEMU" --version | head -1 | awk '{print $4}'), guest RAM ${QB_SIZE_MB} MiB" \
		"from a base + $QB_DIFFS diffs (${QB_DIRTY_PCT}% pages each), median of $QB_REPS"
	echo
	echo "| guest RAM from | first pmemsave (s) | vs merged | cached pmemsave (s) |"
	echo "| --- | --- | --- | --- |"
	echo "| merged file | $m1 | 1.00x | $m2 |"
	while read -r mode v1 v2; do
		echo "| view, read_reply=$mode | $v1 | $(awk -v a="$v1" -v b="$m1" 'BEGIN { printf "%.2fx", a / b }') | $v2 |"
	done <"$W/rows"
} | tee "$QB_OUT"
