#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# multihost-bench.sh: the per-operation costs doc/distributed.md multiplies
# out for a fleet (1,000 hosts x 10,000 chains), measured with opbench:
#   - a lookup through snapfs with -o nowatch,revalidate=0 (every stat is a
#     FUSE lookup and a revalidation of the directory: forced attributes,
#     the index kept), against the same lookup in a watched directory with
#     entry_timeout=0 (no forced attributes): the ratio is what revalidating
#     without trusting caches costs; for directories of 10, 1,000 and
#     10,000 names;
#   - the forced attribute check alone (statx AT_STATX_FORCE_SYNC) on the
#     local filesystem and through a FUSE filesystem (passthrough_ro: a
#     round trip to a server process, the floor of a network round trip);
#   - the re-list after a change (store_dir_scan) of 10 .. 10,000 names;
#   - a compaction lock and a rollback lock round trip (open the lock file,
#     lock, unlock, close).
# Each figure is the median of MB_REPS runs. Network round trips are not
# measured here (this machine has no NFS); doc/distributed.md adds them as
# a stated assumption.
#
# Run as root from the top build directory of an optimised build (no
# sanitizers):  make bench-multihost   or   bash /path/to/tests/bench/multihost-bench.sh
# Settings (environment):
#   BUILDDIR=.   BENCH_DIR=/var/tmp   MB_REPS=5   MB_COUNT=20000
set -u
export LC_ALL=C

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
MB_REPS=${MB_REPS:-5}
MB_COUNT=${MB_COUNT:-20000}
OPBENCH=$BUILDDIR/tests/bench/opbench
SNAPFS=$BUILDDIR/snapfs
PT=$BUILDDIR/tests/bench/passthrough_ro

die() {
	echo "multihost-bench: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (FUSE mounts)"
for b in "$OPBENCH" "$SNAPFS" "$PT"; do
	[ -x "$b" ] || die "$b not found: make tests/bench/opbench tests/bench/passthrough_ro snapfs"
done
if grep -q '^SAN_CFLAGS = .*-fsanitize' "$BUILDDIR/Makefile" 2>/dev/null; then
	echo "multihost-bench: warning: $BUILDDIR is a sanitizer build; times will be inflated" >&2
fi

W=$(mktemp -d "$BENCH_DIR/multihost-bench.XXXXXX") || die "cannot make a work directory"
MNTS=()
DPIDS=()
cleanup() {
	local rc=$? m p
	trap - EXIT INT TERM
	for m in "${MNTS[@]}"; do
		mountpoint -q "$m" && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
	done
	for p in "${DPIDS[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	rm -rf "$W"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# mkdir_names DIR N: DIR with N chains (NAME.0.base + NAME.1.diff, empty
# files: a directory's size is what matters) plus memory.bin, a real
# 1 MiB chain (the name looked up).
mkdir_names() {
	local d=$1 n=$2 i
	mkdir -p "$d"
	for ((i = 0; i < n - 1; i++)); do
		: >"$d/vm$i.0.base"
		: >"$d/vm$i.1.diff"
	done
	truncate -s 1M "$d/memory.bin.0.base" "$d/memory.bin.1.diff"
	printf 'base' | dd of="$d/memory.bin.0.base" conv=notrunc status=none
	printf 'diff' | dd of="$d/memory.bin.1.diff" bs=4096 seek=1 conv=notrunc status=none
}

# median OP PATH COUNT N: the median line of MB_REPS runs (by usec/op).
median() {
	local i
	for ((i = 0; i < MB_REPS; i++)); do
		"$OPBENCH" "$@" || die "opbench $* failed"
	done | sort -k4,4n | sed -n "$(((MB_REPS + 1) / 2))p"
}

# mount_fuse NAME CMD...: starts a FUSE daemon with -o ready_fd=3, waits.
mount_fuse() {
	local fifo=$W/ready.$1 mnt=${*: -1}
	shift
	mkfifo "$fifo"
	"$@" -f -o ready_fd=3 3>"$fifo" >>"$W/daemons.log" 2>&1 &
	DPIDS+=("$!")
	MNTS+=("$mnt")
	read -r -n 1 -t 30 _ <"$fifo" || die "$1 did not become ready: $(tail -3 "$W/daemons.log")"
	rm -f "$fifo"
}

S=$W/store
for n in 10 1000 10000; do
	mkdir_names "$S/d$n" "$n"
done
sync

echo "# multihost-bench: $(uname -r), $(nproc) CPUs, STORE on $(stat -f -c %T "$S"); median of $MB_REPS runs"
echo "# op           names   count   usec/op        ops/s"

# Lookups: unwatched (forced attributes) against watched.
mkdir -p "$W/m-nowatch" "$W/m-watch" "$W/m-pt"
mount_fuse snapfs1 "$SNAPFS" -o nowatch,revalidate=0,compact=off "$S" "$W/m-nowatch"
mount_fuse snapfs2 "$SNAPFS" -o entry_timeout=0,compact=off "$S" "$W/m-watch"
for n in 10 1000 10000; do
	echo "nowatch: $(median lookup "$W/m-nowatch/d$n/memory.bin" "$MB_COUNT" "$n")"
	echo "watched: $(median lookup "$W/m-watch/d$n/memory.bin" "$MB_COUNT" "$n")"
done

# The forced attribute check, locally and through a FUSE server.
mount_fuse pt "$PT" "$S/d10" "$W/m-pt"
echo "local:   $(median attrs "$S/d10" "$MB_COUNT" 10)"
echo "fuse:    $(median attrs "$W/m-pt" "$MB_COUNT" 10)"

# The re-list after a change.
for n in 10 1000 10000; do
	echo "local:   $(median scan "$S/d$n" $((MB_COUNT * 10 / n + 20)) "$n")"
done

# Lock round trips (local filesystem).
echo "local:   $(median chainlock "$S/d10" "$MB_COUNT" 10)"
echo "local:   $(median rollbacklock "$S/d10" "$MB_COUNT" 10)"
