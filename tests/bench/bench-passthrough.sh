#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# bench-passthrough.sh: views at page-cache speed (doc/design.md §19), in one
# run, ratios against baselines measured in the same run.
#
# On a loop-mounted XFS (reflink) it builds a chain of a dense base and
# PT_DIFFS sparse diffs (PT_DIRTY_PCT% random pages each) and its plain
# merge (eager_merge), then, page cache warm, measures seq 1 MiB reads,
# random 4 KiB preads and random mmap faults (MAP_PRIVATE) of:
#   direct       the merged file, read directly (the baseline)
#   tmpfs        a copy of the merged file on a tmpfs, read directly: a
#                page cache of single pages with no FUSE in it, as a FUSE
#                inode's is on the kernels this runs on (the floor for
#                pushed, whose pages live in the FUSE inode's page cache)
#   passthrough  a one-layer view (a store whose base is a reflink of the
#                merged file): kernel passthrough to the base
#   flattened    the layered view once user.snapfs.flat is ready: passthrough
#                to its flat file
#   pushed       the layered view with -o passthrough=off,prefetch=all once
#                its push is done (user.snapfs.prefetch): the FUSE path with
#                the view's pages pushed into its page cache
#                (notify_store), never read through it before
#   fuse         the layered view with -o passthrough=off,prefetch=off, its
#                own page cache dropped (readbench evict) before each
#                measurement: every read and fault a FUSE request (the
#                layers stay warm)
# (medians of PT_REPS rounds, the modes alternated within each round).
# Targets: passthrough and flattened >= 0.9x direct on every pattern;
# pushed >= 0.9x direct on seq and pread, <= 4x direct's us per fault.
#
# Clones: 8 processes each map the merged file, then the flattened view,
# then the FUSE view (its page cache dropped first) MAP_PRIVATE and touch
# every page in random order, as 8 VMs restored from one snapshot; total wall time, and the page cache the view holds after
# (fincore of the files it is served from; free's buff/cache delta too, noisy
# on a shared machine). Targets: >= 10x faster than FUSE, page cache <= 1.1x
# one copy of the view.
#
# Publish to ready: on XFS and btrfs, the time from the rename of a new
# diff into place (the chain then has PT_DIFFS diffs) to
# user.snapfs.flat=ready, against an eager merge of the same chain; then
# random faults and a seq read of the new flat view, as a restore started
# then makes them (a flat file is read in as far as its layers are cached
# before it is ready: these read the page cache, not the disk).
#
# Needs root, a snapfs built against libfuse >= 3.17 (kernel passthrough),
# and an optimised build (no sanitizers). Run from the top build directory:
#   make bench-passthrough    or    bash tests/bench/bench-passthrough.sh
# Settings (environment):
#   BUILDDIR=.  BENCH_DIR=/var/tmp (sparse loop images, about 3x the size)
#   PT_SIZE_MB=2048  PT_DIFFS=4  PT_DIRTY_PCT=2  PT_REPS=3  PT_CLONES=8
#   PT_RAND=20000 (preads and faults per measurement)
#   PT_OUT=$BUILDDIR/bench-passthrough.md   the report
set -u
export LC_ALL=C

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
PT_SIZE_MB=${PT_SIZE_MB:-2048}
PT_DIFFS=${PT_DIFFS:-4}
PT_DIRTY_PCT=${PT_DIRTY_PCT:-2}
PT_REPS=${PT_REPS:-3}
PT_CLONES=${PT_CLONES:-8}
PT_RAND=${PT_RAND:-20000}
PT_OUT=${PT_OUT:-$BUILDDIR/bench-passthrough.md}
NAME=memory.bin

SNAPFS=$BUILDDIR/snapfs
READBENCH=$BUILDDIR/tests/bench/readbench
EAGER_MERGE=$BUILDDIR/tests/bench/eager_merge

die() {
	echo "bench-passthrough: $*" >&2
	exit 1
}
note() {
	echo "bench-passthrough: $*" >&2
}

[ "$(id -u)" -eq 0 ] || die "needs root (loop devices, FUSE)"
grep -q '^#define HAVE_FUSE_PASSTHROUGH 1' "$BUILDDIR/config.h" ||
	die "$BUILDDIR/snapfs was built without kernel passthrough (configure against libfuse >= 3.17)"
grep -q -- '-fsanitize' "$BUILDDIR/Makefile" && note "warning: a sanitizer build; figures will be low"
for t in "$SNAPFS" "$READBENCH" "$EAGER_MERGE"; do
	[ -x "$t" ] || die "$t not built (make bench-passthrough builds it)"
done
for t in fincore getfattr losetup mkfs.xfs; do
	command -v "$t" >/dev/null || die "$t not found"
done

W=$(mktemp -d "$BENCH_DIR/snapfs-ptbench.XXXXXX") || die "mktemp failed"
LOOPS=() FSMNTS=() FUSEMNTS=() PIDS=()
cleanup() {
	local i
	for m in "${FUSEMNTS[@]}"; do
		mountpoint -q "$m" && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
	done
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	for ((i = ${#FSMNTS[@]} - 1; i >= 0; i--)); do
		mountpoint -q "${FSMNTS[i]}" || continue
		umount "${FSMNTS[i]}" 2>/dev/null || umount -l "${FSMNTS[i]}"
	done
	for d in "${LOOPS[@]}"; do
		losetup -d "$d" 2>/dev/null
	done
	rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# mkfs_mount FS MNT: a sparse image of 6x the base with FS, and room for
# the diffs of two chains and their flat files, mounted on MNT.
mkfs_mount() {
	local fs=$1 mnt=$2 img=$W/$1.img dev
	truncate -s $((PT_SIZE_MB * (6 + PT_DIFFS * PT_DIRTY_PCT / 25) + 512))M "$img"
	case $fs in
	xfs) mkfs.xfs -q -m reflink=1 "$img" ;;
	btrfs) mkfs.btrfs -q "$img" >/dev/null ;;
	esac || die "mkfs.$fs failed"
	dev=$(losetup -f --show "$img") || die "losetup failed"
	LOOPS+=("$dev")
	mkdir -p "$mnt"
	mount "$dev" "$mnt" || die "mounting $fs failed"
	FSMNTS+=("$mnt")
}

# make_chain DIR N: base + diffs 1..N of NAME in DIR.
make_chain() {
	local i
	"$READBENCH" gen "$1/$NAME.0.base" -m "$PT_SIZE_MB" -s 1 >/dev/null || die "gen base"
	for ((i = 1; i <= $2; i++)); do
		"$READBENCH" gen "$1/$NAME.$i.diff" -m "$PT_SIZE_MB" -s $((100 + i)) -p "$PT_DIRTY_PCT" \
			>/dev/null || die "gen diff $i"
	done
}

# mount_fuse STORE MNT [OPTIONS...]: snapfs in the foreground, ready fd;
# compact=off, as the chains must keep their depth (PT_DIFFS may be past
# the compaction threshold, and four daemons share one store).
mount_fuse() {
	local store=$1 mnt=$2 fifo=$W/ready.$RANDOM
	shift 2
	mkdir -p "$mnt"
	mkfifo "$fifo"
	"$SNAPFS" -f -o compact=off "$@" -o ready_fd=3 "$store" "$mnt" 3>"$fifo" >>"$W/snapfs.log" 2>&1 &
	PIDS+=($!)
	FUSEMNTS+=("$mnt")
	read -r -n 1 -t 20 _ <"$fifo" || die "snapfs did not start (see $W/snapfs.log)"
	rm -f "$fifo"
}

flat_state() {
	getfattr --absolute-names --only-values -n user.snapfs.flat "$1" 2>/dev/null
}

# wait_ready FILE: polls user.snapfs.flat every ms; prints the ms it took.
wait_ready() {
	local t0 s
	t0=$(date +%s%N)
	while :; do
		s=$(flat_state "$1")
		case $s in
		ready) break ;;
		failed*) die "$1: flat file $s" ;;
		esac
		[ $(($(date +%s%N) - t0)) -lt 120000000000 ] || die "$1: flat file not ready after 120 s"
		sleep 0.001
	done
	echo $((($(date +%s%N) - t0) / 1000000))
}

median() {
	sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# How quiet the machine was: load, and page-cache drops by anyone
# (drop_caches) during the run, which turn warm measurements cold.
drops0=$(awk '$1 == "drop_pagecache" { print $2 }' /proc/vmstat)
load0=$(cut -d' ' -f1 /proc/loadavg)

# ---- the XFS store, its merge, the three mounts ----
note "building a ${PT_SIZE_MB} MiB base and $PT_DIFFS diffs of ${PT_DIRTY_PCT}% pages on XFS"
X=$W/xfs
mkfs_mount xfs "$X"
mkdir -p "$X/chain" "$X/one" "$X/ref"
make_chain "$X/chain" "$PT_DIFFS"
diffs=()
for ((i = 1; i <= PT_DIFFS; i++)); do diffs+=("$X/chain/$NAME.$i.diff"); done
"$EAGER_MERGE" "$X/ref/merged" "$X/chain/$NAME.0.base" "${diffs[@]}" >"$W/eager.xfs" ||
	die "eager_merge failed"
cp --reflink=always "$X/ref/merged" "$X/one/$NAME.0.base" || die "reflink copy failed"
# Written back before anything is timed: a map's FIEMAP_FLAG_SYNC would
# otherwise flush gigabytes, and the writeback would share the CPUs with
# the push (at nice 19), which then took 12 s instead of 2 s.
sync
T=$W/tmpfs
mkdir -p "$T"
mount -t tmpfs -o size=$((PT_SIZE_MB + 64))M,huge=never snapfs-ptbench "$T" || die "mounting tmpfs failed"
FSMNTS+=("$T")
cp "$X/ref/merged" "$T/merged" || die "copying the merge to tmpfs failed"

mount_fuse "$X/chain" "$W/m-flat"
mount_fuse "$X/one" "$W/m-one"
mount_fuse "$X/chain" "$W/m-fuse" -o passthrough=off,flatten=off,prefetch=off
# a budget above the view: the whole of it is pushed
mount_fuse "$X/chain" "$W/m-push" -o passthrough=off,flatten=off,prefetch=all \
	-o prefetch_mb=$((PT_SIZE_MB * 2))
FLATPID=${PIDS[0]}
ms=$(wait_ready "$W/m-flat/$NAME")
note "flat file ready $ms ms after the first lookup"
cmp "$W/m-flat/$NAME" "$X/ref/merged" || die "the flattened view differs from the merge"
cmp "$W/m-one/$NAME" "$X/ref/merged" || die "the one-layer view differs from the merge"
cmp "$W/m-fuse/$NAME" "$X/ref/merged" || die "the FUSE view differs from the merge"

# The push starts at the first open and goes on after the close (the
# version stays current and looked up); nothing reads the view meanwhile.
"$READBENCH" first "$W/m-push/$NAME" >/dev/null || die "opening the pushed view"
t0=$(date +%s%N)
while :; do
	s=$(getfattr --absolute-names --only-values -n user.snapfs.prefetch "$W/m-push/$NAME" 2>/dev/null)
	case $s in
	done*) break ;;
	stopped*) die "the push stopped: $s" ;;
	esac
	[ $(($(date +%s%N) - t0)) -lt 300000000000 ] || die "the push is not done after 300 s: $s"
	sleep 0.05
done
push_ms=$((($(date +%s%N) - t0) / 1000000))
note "push done in $push_ms ms ($s)"

declare -A FILE=(
	[direct]=$X/ref/merged [tmpfs]=$T/merged [passthrough]=$W/m-one/$NAME
	[flattened]=$W/m-flat/$NAME [pushed]=$W/m-push/$NAME [fuse]=$W/m-fuse/$NAME
)
MODES="direct tmpfs passthrough flattened pushed fuse"
# Warm: every file but the pushed view read once whole (the cmp above did,
# too), which also warms the layers under the FUSE views.
for m in $MODES; do
	[ "$m" = pushed ] || "$READBENCH" seq "${FILE[$m]}" >/dev/null
done

note "patterns: $PT_REPS rounds"
for ((r = 1; r <= PT_REPS; r++)); do
	for m in $MODES; do
		f=${FILE[$m]}
		evict() { [ "$m" != fuse ] || "$READBENCH" evict "$f" >/dev/null || die "evict $f"; }
		evict
		"$READBENCH" seq "$f" | awk '{ print $2 }' >>"$W/seq.$m"
		evict
		"$READBENCH" rand "$f" -n "$PT_RAND" -s "$r" | awk '{ print $2 }' >>"$W/rand.$m"
		evict
		"$READBENCH" fault "$f" -n "$PT_RAND" -s "$r" | awk '{ print $2 }' >>"$W/fault.$m"
	done
done
cmp "$W/m-push/$NAME" "$X/ref/merged" || die "the pushed view differs from the merge"

# ---- clones ----
pages=$((PT_SIZE_MB * 256))
buffcache() {
	free -b | awk '/^Mem:/ { print $6 }'
}
fincore_bytes() {	# total resident bytes of the files given
	fincore -b -n -o RES "$@" 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'
}
# clones FILE: PT_CLONES processes fault every page of FILE in random order.
clones() {
	local t0 i pids=()
	t0=$(date +%s%N)
	for ((i = 0; i < PT_CLONES; i++)); do
		"$READBENCH" fault "$1" -n "$pages" -s $((50 + i)) >/dev/null 2>&1 &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p" || die "a clone failed"; done
	echo "scale=2; ($(date +%s%N) - $t0) / 1000000000" | bc
}
# flat_fd PID DIR: a /proc path of daemon PID's flat file in DIR.
flat_fd() {
	find "/proc/$1/fd" -lname "$2/#* (deleted)" 2>/dev/null | head -n 1
}
flatfd=$(flat_fd "$FLATPID" "$X/chain")
[ -n "$flatfd" ] || die "no flat file open in the flattening daemon"
layers=("$X/chain/$NAME".*)
note "clones: $PT_CLONES x $pages pages, direct"
clone_direct=$(clones "$X/ref/merged")
note "clones: $PT_CLONES x $pages pages, flattened"
bc0=$(buffcache)
clone_flat=$(clones "$W/m-flat/$NAME")
bc_flat=$(($(buffcache) - bc0))
cache_flat=$(fincore_bytes "$flatfd")
note "clones: $PT_CLONES x $pages pages, FUSE"
"$READBENCH" evict "$W/m-fuse/$NAME" >/dev/null || die "evict"
bc0=$(buffcache)
clone_fuse=$(clones "$W/m-fuse/$NAME")
bc_fuse=$(($(buffcache) - bc0))
# The FUSE view's own copy, plus the layers it was read from.
cache_fuse=$(($(fincore_bytes "$W/m-fuse/$NAME") + $(fincore_bytes "${layers[@]}")))
view_bytes=$((PT_SIZE_MB << 20))

# The page cache the patterns and clones filled (the views' own copies,
# the tmpfs copy) goes before the publishes, so that the new chains and
# their flat files are measured without that memory pressure.
for m in "${FUSEMNTS[@]}"; do
	fusermount3 -u "$m" || die "unmounting $m failed"
done
for p in "${PIDS[@]}"; do wait "$p"; done
PIDS=()
umount "$T" || die "unmounting the tmpfs failed"

# ---- publish to ready, XFS and btrfs ----
# pub FS DIR: a chain of PT_DIFFS - 1 diffs mounted, the last diff renamed
# into place; sets PUB_MS (rename to ready) and EAGER_S (eager merge of the
# same chain).
pub() {
	local fs=$1 d=$2 mnt=$W/m-pub-$1 t0 eager ready i
	mkdir -p "$d/s"
	make_chain "$d/s" "$PT_DIFFS"
	mv "$d/s/$NAME.$PT_DIFFS.diff" "$d/.last"
	sync	# the chain was written long before its last diff, as in life
	mount_fuse "$d/s" "$mnt"
	wait_ready "$mnt/$NAME" >/dev/null
	t0=$(date +%s%N)
	mv "$d/.last" "$d/s/$NAME.$PT_DIFFS.diff"
	while [ "$(getfattr --absolute-names --only-values -n user.snapfs.depth "$mnt/$NAME" 2>/dev/null)" != "$PT_DIFFS" ]; do
		sleep 0.001
	done
	wait_ready "$mnt/$NAME" >/dev/null
	ready=$((($(date +%s%N) - t0) / 1000000))
	local ff
	ff=$(flat_fd "${PIDS[-1]}" "$d/s")
	[ -n "$ff" ] || die "$fs: no flat file open in the daemon"
	warm_mib=$(($(fincore_bytes "$ff") >> 20))
	# the first reads of the new version once ready, as a restore started
	# then makes them: passthrough to a flat file only just built
	first_fault=$("$READBENCH" fault "$mnt/$NAME" -n "$PT_RAND" -s 7 | awk '{ print $2 }')
	first_seq=$("$READBENCH" seq "$mnt/$NAME" | awk '{ print $2 }')
	local ds=()
	for ((i = 1; i <= PT_DIFFS; i++)); do ds+=("$d/s/$NAME.$i.diff"); done
	eager=$("$EAGER_MERGE" "$d/merged" "$d/s/$NAME.0.base" "${ds[@]}" | awk '{ print $2 }')
	cmp "$mnt/$NAME" "$d/merged" || die "$fs: the flat view differs from the merge"
	rm -f "$d/merged"
	PUB_MS=$ready EAGER_S=$eager PUB_FAULT=$first_fault PUB_SEQ=$first_seq PUB_WARM=$warm_mib
}
note "publish to ready: XFS"
pub xfs "$X/pub"
pub_xfs=$PUB_MS eager_xfs=$EAGER_S fault_xfs=$PUB_FAULT seq_xfs=$PUB_SEQ warm_xfs=$PUB_WARM
pub_btrfs=- eager_btrfs=- fault_btrfs=- seq_btrfs=- warm_btrfs=-
if command -v mkfs.btrfs >/dev/null; then
	note "publish to ready: btrfs"
	mkfs_mount btrfs "$W/btrfs"
	pub btrfs "$W/btrfs"
	pub_btrfs=$PUB_MS eager_btrfs=$EAGER_S fault_btrfs=$PUB_FAULT seq_btrfs=$PUB_SEQ warm_btrfs=$PUB_WARM
fi

# ---- report ----
{
	echo "## Kernel passthrough and flat views ($(date -u +%Y-%m-%d), kernel $(uname -r), $(nproc) cores)"
	echo
	echo "Base ${PT_SIZE_MB} MiB, $PT_DIFFS diffs of ${PT_DIRTY_PCT}% pages, page cache warm;"
	echo "medians of $PT_REPS rounds; $PT_RAND random preads / faults each."
	echo "Load average $load0 at the start, $(cut -d' ' -f1 /proc/loadavg) at the end;"
	echo "page cache dropped $(($(awk '$1 == "drop_pagecache" { print $2 }' /proc/vmstat) - drops0)) time(s) by others (drop_caches) during the run."
	echo
	echo "| pattern | direct | tmpfs | passthrough (one layer) | flattened | pushed | plain FUSE | passthrough / direct | flattened / direct | pushed / direct | FUSE / direct | tmpfs / direct | pushed / tmpfs |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	declare -A v
	for p in seq rand fault; do
		for m in $MODES; do v[$m]=$(median <"$W/$p.$m"); done
		if [ "$p" = fault ]; then
			# lower is better: speed ratio is direct / mode
			r() { echo "scale=2; ${v[direct]} / ${v[$1]}" | bc; }
			unit="µs/fault"
		else
			r() { echo "scale=2; ${v[$1]} / ${v[direct]}" | bc; }
			[ "$p" = seq ] && unit="GB/s" || unit="IOPS"
		fi
		if [ "$p" = fault ]; then
			pt=$(echo "scale=2; ${v[tmpfs]} / ${v[pushed]}" | bc)
		else
			pt=$(echo "scale=2; ${v[pushed]} / ${v[tmpfs]}" | bc)
		fi
		echo "| $p ($unit) | ${v[direct]} | ${v[tmpfs]} | ${v[passthrough]} | ${v[flattened]} | ${v[pushed]} | ${v[fuse]} | $(r passthrough) | $(r flattened) | $(r pushed) | $(r fuse) | $(r tmpfs) | $pt |"
	done
	echo
	echo "(Ratios are speed relative to direct, > 1 faster. Targets: ≥ 0.90 for passthrough and"
	echo "flattened on every pattern; for pushed ≥ 0.90 on seq and rand and ≥ 0.25 on fault, i.e."
	echo "at most 4× direct's µs. The push of the whole view took $push_ms ms. tmpfs is the"
	echo "merged file on a tmpfs: single-page folios and no FUSE, the kernel's floor for a page"
	echo "cache like the FUSE inode's, which pushed pages live in.)"
	echo
	echo "| $PT_CLONES clones, every page, MAP_PRIVATE | total s | page cache of the view (fincore) | × one copy | buff/cache delta (free) |"
	echo "|---|---:|---:|---:|---:|"
	echo "| direct (the merged file) | $clone_direct | | | |"
	echo "| flattened (passthrough) | $clone_flat | $((cache_flat >> 20)) MiB | $(echo "scale=2; $cache_flat / $view_bytes" | bc) | $((bc_flat >> 20)) MiB |"
	echo "| plain FUSE | $clone_fuse | $((cache_fuse >> 20)) MiB | $(echo "scale=2; $cache_fuse / $view_bytes" | bc) | $((bc_fuse >> 20)) MiB |"
	echo "| FUSE / flattened | $(echo "scale=1; $clone_fuse / $clone_flat" | bc)× | | | |"
	echo "| flattened / direct | $(echo "scale=2; $clone_flat / $clone_direct" | bc)× | | | |"
	echo
	echo "| publish → user.snapfs.flat=ready | XFS | btrfs |"
	echo "|---|---:|---:|"
	echo "| flatten (ms) | $pub_xfs | $pub_btrfs |"
	echo "| eager merge of the same chain (s) | $eager_xfs | $eager_btrfs |"
	echo "| the flat file's page cache when ready (MiB) | $warm_xfs | $warm_btrfs |"
	echo "| then $PT_RAND random faults of the new flat view (µs/fault) | $fault_xfs | $fault_btrfs |"
	echo "| then a seq read of it (GB/s) | $seq_xfs | $seq_btrfs |"
} | tee "$PT_OUT"
