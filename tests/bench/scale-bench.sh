#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# scale-bench.sh: stores at scale (`make bench-scale`, issue 11 item 4).
# Reports, each against a baseline measured in the same run:
#   1. the first listing (`ls -f`, then `ls -l`) of a directory of
#      SCALE_NAMES (100,000) one-layer names through snapfs, against
#      `ls -f` / `ls -l` of STORE itself (targets: ls -f <= 2x STORE's, and
#      <= 1 s), and the FUSE floor: STORE's directory listed through
#      passthrough_ro, which does nothing but readdir;
#   2. a store of SCALE_DIRS (10,000) snapshot directories: time from start
#      to mounted, and the first open + read of a file in it (targets
#      <= 50 ms and <= 20 ms);
#   3. the daemon's RSS after each of SCALE_ROUNDS (20) rounds of "create
#      SCALE_CHURN (10,000) names, list them, open a few, delete them,
#      list again" (target: the last round within 10% of round 1).
# Run from the top build directory (a build without sanitizers gives the
# figures; with ASan, RSS includes its quarantine).
# Settings: BUILDDIR (.), BENCH_DIR (/var/tmp), SCALE_NAMES, SCALE_DIRS,
# SCALE_ROUNDS, SCALE_CHURN, BENCH_OUT ($BUILDDIR/bench-scale.md).
set -euo pipefail

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
NAMES=${SCALE_NAMES:-100000}
DIRS=${SCALE_DIRS:-10000}
ROUNDS=${SCALE_ROUNDS:-20}
CHURN=${SCALE_CHURN:-10000}
OUT=${BENCH_OUT:-$BUILDDIR/bench-scale.md}
SNAPFS=$(cd "$BUILDDIR" && pwd)/snapfs
PASSTHROUGH=$(cd "$BUILDDIR" && pwd)/tests/bench/passthrough_ro
FUSERMOUNT=${FUSERMOUNT:-fusermount3}

W=$(mktemp -d "$BENCH_DIR/snapfs-scale.XXXXXX")
MNT=$W/mnt
PID=
cleanup() {
	set +e
	mountpoint -q "$MNT" 2>/dev/null && "$FUSERMOUNT" -u -z "$MNT"
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$MNT"

ms() { echo $(($(date +%s%N) / 1000000)); }
say() { printf '%s\n' "$*" | tee -a "$OUT"; }

# mount STORE [opts]: starts snapfs and waits on its ready pipe; sets
# MOUNT_MS to the milliseconds from start to mounted.
mount_it() {
	local store=$1 t0 fifo=$W/ready
	shift
	rm -f "$fifo"
	mkfifo "$fifo"
	t0=$(ms)
	"$SNAPFS" -f "$@" -o compact=off -o ready_fd=3 "$store" "$MNT" 3>"$fifo" \
		>>"$W/snapfs.log" 2>&1 &
	PID=$!
	read -r -n 1 -t 60 _ <"$fifo" || { echo "snapfs did not start" >&2; exit 1; }
	MOUNT_MS=$(($(ms) - t0))
}
umount_it() {
	"$FUSERMOUNT" -u "$MNT"
	wait "$PID"
	PID=
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$PID/status"; }
threads() { awk '/^Threads/ { print $2 }' "/proc/$PID/status"; }
# heap_kb: the resident part of the daemon's brk heap (malloc's main arena)
heap_kb() { awk '/\[heap\]$/ { h = 1; next } h && /^Rss:/ { print $2; exit }' "/proc/$PID/smaps"; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

: >"$OUT"
say "# snapfs at scale ($(date -u +%F), $(nproc) CPUs, kernel $(uname -r))"
say ""

# 1. A directory of NAMES one-layer names.
mkdir -p "$W/s1/big"
mkfifo "$W/ready.pt"
python3 - "$W/s1/big" "$NAMES" <<'EOF'
import sys
d, n = sys.argv[1], int(sys.argv[2])
page = b"\x5a" * 4096
for i in range(n):
    with open(f"{d}/m{i}.0.base", "wb") as f:
        f.write(page)
EOF
drop
t0=$(ms); ls -f "$W/s1/big" >/dev/null; store_f=$(($(ms) - t0))
t0=$(ms); ls -l "$W/s1/big" >/dev/null; store_l=$(($(ms) - t0))
# The FUSE floor: the same directory through passthrough_ro, a FUSE daemon
# that answers a listing with a readdir of its source and nothing else.
"$PASSTHROUGH" -f -o ready_fd=3 "$W/s1/big" "$MNT" 3>"$W/ready.pt" >/dev/null 2>&1 &
PID=$!
read -r -n 1 -t 60 _ <"$W/ready.pt" || { echo "passthrough_ro did not start" >&2; exit 1; }
drop
t0=$(ms); nfloor=$(ls -f "$MNT" | wc -l); floor_f=$(($(ms) - t0))
umount_it
mount_it "$W/s1"
drop
t0=$(ms); n=$(ls -f "$MNT/big" | wc -l); snap_f=$(($(ms) - t0))
t0=$(ms); ls -l "$MNT/big" >/dev/null; snap_l=$(($(ms) - t0))
t0=$(ms); ls -f "$MNT/big" >/dev/null; snap_f2=$(($(ms) - t0))
rss1=$(rss_kb)
umount_it
say "## 1. Listing $NAMES one-layer names (page cache dropped first)"
say ""
say "| listing | STORE itself | snapfs | ratio | target |"
say "|---|---:|---:|---:|---|"
say "| first \`ls -f\` ($n names) | $store_f ms | $snap_f ms | $(ratio "$snap_f" "$store_f") | <= 2x and <= 1000 ms |"
say "| \`ls -l\` after it | $store_l ms | $snap_l ms | $(ratio "$snap_l" "$store_l") | |"
say "| second \`ls -f\` | | $snap_f2 ms | | |"
say "| FUSE floor: first \`ls -f\` through passthrough_ro ($nfloor entries: no NAMEs) | $store_f ms | $floor_f ms | $(ratio "$floor_f" "$store_f") | |"
say ""
say "Daemon RSS after the listings: $rss1 KiB."
say ""

# 2. A store of DIRS snapshot directories.
python3 - "$W/s2" "$DIRS" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
page = b"\x33" * 4096
for i in range(n):
    d = f"{root}/vm{i}"
    os.makedirs(d)
    with open(f"{d}/memory.bin.0.base", "wb") as f:
        f.write(page * 4)
    with open(f"{d}/vmstate.bin", "wb") as f:
        f.write(b"state")
EOF
drop
mount_it "$W/s2"
mount_ms=$MOUNT_MS
t0=$(ms); head -c 4096 "$MNT/vm$((DIRS / 2))/memory.bin" >/dev/null; open_ms=$(($(ms) - t0))
umount_it
# the baseline: the same first read from STORE itself, cold as well
drop
t0=$(ms); head -c 4096 "$W/s2/vm$((DIRS / 2))/memory.bin.0.base" >/dev/null
store_open_ms=$(($(ms) - t0))
say "## 2. A store of $DIRS snapshot directories (page cache dropped first)"
say ""
say "| step | STORE itself | snapfs | target |"
say "|---|---:|---:|---|"
say "| start to mounted | | $mount_ms ms | <= 50 ms |"
say "| first open + 4 KiB read of a file in it | $store_open_ms ms | $open_ms ms | <= 20 ms |"
say ""

# 3. RSS over rounds of churn.
mkdir -p "$W/s3/d"
mount_it "$W/s3"
say "## 3. Daemon RSS over $ROUNDS rounds of: create $CHURN names, list, read 100, delete, list"
say ""
say "| round | RSS (KiB) | of it, heap (KiB) | threads |"
say "|---:|---:|---:|---:|"
first=
for r in $(seq 1 "$ROUNDS"); do
	python3 - "$W/s3/d" "$CHURN" "$r" <<'EOF'
import sys
d, n, r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(f"{d}/r{r}n{i}.0.base", "wb") as f:
        f.write(b"\x01" * 4096)
EOF
	ls -l "$MNT/d" >/dev/null
	for i in $(seq 0 99); do head -c 1 "$MNT/d/r${r}n$i" >/dev/null; done
	find "$W/s3/d" -name "r${r}n*" -delete
	ls -l "$MNT/d" >/dev/null
	# The daemon gives the heap's free memory back a second after a
	# burst of frees (src/memtrim.h): RSS is read once it has settled.
	sleep 1.5
	rss=$(rss_kb)
	[ -z "$first" ] && first=$rss
	say "| $r | $rss | $(heap_kb) | $(threads) |"
done
umount_it
say ""
say "Last round / round 1: $(ratio "$rss" "$first") (target <= 1.10)."
echo "report: $OUT"
