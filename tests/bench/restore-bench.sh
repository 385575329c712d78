#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# restore-bench.sh: the job a VMM does to restore a VM (`make bench-restore`):
# a new top diff is published, then the newest memory.bin is mapped
# MAP_PRIVATE and every page the chain's diffs hold, plus 10% of the other
# pages, is touched in random order. Timed from the publish to the last
# touch, then a second restore of the same version (a clone), for:
#   snapfs-off    snapfs, mounted before the publish, -o prefetch=off
#   snapfs-diffs  the same with -o prefetch=diffs (the default)
#   snapfs-all    the same with -o prefetch=all,prefetch_mb=4096 (the whole
#                 view fits the budget)
#   snapfs-mmap   -o prefetch=diffs,read_reply=mmap (cold runs only)
#   snapfs-splice -o prefetch=diffs,read_reply=splice: no gathered reads
#   snapfs-ra128  -o prefetch=diffs,readahead_kb=0: the kernel's 128 KiB
#                 read-around per fault instead of snapfs's 1 MiB
#                 (these two are not in the default lists)
#   eager         copy the base, apply the diffs, fsync (eager_merge), then
#                 the same touches on the merged file
#   qsd           qemu-storage-daemon's FUSE export of a qcow2 chain holding
#                 the same layers (one overlay per diff), started after the
#                 publish, then the same touches on the export
# with the layers warm (read into the page cache before the publish) and
# cold (drop_caches before the publish), at each depth. Where snapfs makes
# flat files (libfuse >= 3.17, RB_DIR on XFS or btrfs), a third restore
# once the version's flat file is ready is noted too. One run each: the
# machine is shared, compare ratios within a run.
#
# Run from the top build directory, as root.  Settings (environment):
#   BUILDDIR=.               where snapfs and tests/bench/* were built
#   RB_DIR=/var/tmp          work directory parent; needs ~2.5x RB_SIZE_MB
#   RB_SIZE_MB=2048          memory.bin size
#   RB_DEPTHS="4 16"         chain depths (diffs)
#   RB_DIRTY_PCT=2           dirty pages per diff, percent
#   RB_OTHER_PCT=10          other pages touched, percent
#   RB_TEMPS="warm cold"
#   RB_WARM="snapfs-off snapfs-diffs snapfs-all eager qsd"
#   RB_COLD="snapfs-off snapfs-diffs snapfs-mmap eager qsd"
#   RB_OUT=$BUILDDIR/restore-results.md   the report
#   RB_KEEP=0                1 keeps the work directory
# Needs qemu-img and qemu-storage-daemon (Debian: qemu-utils,
# qemu-system-common) for the qsd rows; without them they are left out.

set -u

BUILDDIR=${BUILDDIR:-.}
RB_DIR=${RB_DIR:-/var/tmp}
RB_SIZE_MB=${RB_SIZE_MB:-2048}
RB_DEPTHS=${RB_DEPTHS:-4 16}
RB_DIRTY_PCT=${RB_DIRTY_PCT:-2}
RB_OTHER_PCT=${RB_OTHER_PCT:-10}
RB_TEMPS=${RB_TEMPS:-warm cold}
RB_WARM=${RB_WARM:-snapfs-off snapfs-diffs snapfs-all eager qsd}
RB_COLD=${RB_COLD:-snapfs-off snapfs-diffs snapfs-mmap eager qsd}
RB_OUT=${RB_OUT:-$BUILDDIR/restore-results.md}
RB_KEEP=${RB_KEEP:-0}
RB_SEED=${RB_SEED:-1}

SNAPFS=${SNAPFS:-$BUILDDIR/snapfs}
READBENCH=${READBENCH:-$BUILDDIR/tests/bench/readbench}
EAGER_MERGE=${EAGER_MERGE:-$BUILDDIR/tests/bench/eager_merge}
TOUCH=${TOUCH:-$BUILDDIR/tests/bench/restore_touch}
FUSERMOUNT=${FUSERMOUNT:-fusermount3}
NAME=memory.bin
SIZE=$((RB_SIZE_MB << 20))

die() { echo "restore-bench.sh: $*" >&2; exit 1; }
note() { echo "restore-bench.sh: $*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

[ "$(id -u)" = 0 ] || die "needs root (FUSE mounts, drop_caches)"
for b in "$SNAPFS" "$READBENCH" "$EAGER_MERGE" "$TOUCH"; do
	[ -x "$b" ] || die "$b not built (make bench-restore builds it)"
done
HAVE_QSD=1
asked=
case " $RB_TEMPS " in *" warm "*) asked+=" $RB_WARM" ;; esac
case " $RB_TEMPS " in *" cold "*) asked+=" $RB_COLD" ;; esac
case " $asked " in
*" qsd "*)
	if ! command -v qemu-storage-daemon >/dev/null || ! command -v qemu-img >/dev/null; then
		note "qemu-storage-daemon or qemu-img not found: the qsd rows are left out"
		HAVE_QSD=0
	fi ;;
*) HAVE_QSD=0 ;;	# no qsd row asked for: no qcow2 chain to build
esac

W=$(mktemp -d "$RB_DIR/restore-bench.XXXXXX") || die "no work directory"
SNAP_PID= QSD_PID=
cleanup() {
	set +e
	[ -n "$SNAP_PID" ] && { "$FUSERMOUNT" -uz "$W/mnt" 2>/dev/null; wait "$SNAP_PID"; }
	[ -n "$QSD_PID" ] && { kill "$QSD_PID"; "$FUSERMOUNT" -uz "$W/qexp" 2>/dev/null; }
	if [ "$RB_KEEP" = 1 ]; then note "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

maxdepth=0
for d in $RB_DEPTHS; do [ "$d" -gt "$maxdepth" ] && maxdepth=$d; done
L=$W/layers S=$W/store Q=$W/qcow
mkdir -p "$L" "$S" "$Q" "$W/mnt"

# ---- the layers: a dense base, diffs of RB_DIRTY_PCT% random pages ----
t0=$(now)
"$READBENCH" gen "$L/$NAME.0.base" -m "$RB_SIZE_MB" -s "$RB_SEED" || die "base"
for ((i = 1; i <= maxdepth; i++)); do
	"$READBENCH" gen "$L/$NAME.$i.diff" -m "$RB_SIZE_MB" -s $((RB_SEED * 1000 + i)) \
		-p "$RB_DIRTY_PCT" || die "diff $i"
done
note "layers generated in $(secs "$t0" "$(now)") s"
# Written back now: the first contender must not share the disk with the
# writeback of 2.5 GiB of fresh layers (it ran 2-5x slower than in later
# runs of the same contender).
sync

# The same layers as a qcow2 chain: overlay i over overlay i-1 (the base is
# raw), written through a writable export; 64 KiB clusters with subclusters
# (extended_l2), so a 4 KiB page is written without copying its cluster.
if [ "$HAVE_QSD" = 1 ]; then
	t0=$(now)
	prev=../layers/$NAME.0.base pfmt=raw
	for ((i = 1; i <= maxdepth; i++)); do
		(cd "$Q" && qemu-img create -q -f qcow2 -o cluster_size=64k,extended_l2=on \
			-b "$prev" -F "$pfmt" "o$i.qcow2" "$SIZE") || die "qemu-img create o$i"
		: >"$W/qexp"
		qemu-storage-daemon --daemonize --pidfile "$W/qsd.pid" \
			--blockdev driver=file,node-name=f,filename="$Q/o$i.qcow2" \
			--blockdev driver=qcow2,node-name=q,file=f \
			--export type=fuse,id=e,node-name=q,mountpoint="$W/qexp",writable=on ||
			die "qemu-storage-daemon (building o$i)"
		QSD_PID=$(cat "$W/qsd.pid")
		"$TOUCH" apply "$W/qexp" "$L/$NAME.$i.diff" || die "writing o$i"
		kill "$QSD_PID"
		while kill -0 "$QSD_PID" 2>/dev/null; do sleep 0.02; done
		"$FUSERMOUNT" -uz "$W/qexp" 2>/dev/null
		QSD_PID=
		prev=o$i.qcow2 pfmt=qcow2
	done
	note "qcow2 chain built in $(secs "$t0" "$(now)") s"
	sync
fi

# ---- one restore ----

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# warm_layers D KIND: the page cache dropped, then the layers KIND (store,
# qcow) of depth D read into it: their data only (restore_touch warm), as
# a host that ran the VM has them. Every contender starts from the same
# page cache: nothing left by the one before (an eager merge's 2 GiB
# file), and no zero pages of the diffs' holes, which `cat` would add,
# 2 GiB per diff, until the warming of a deep chain evicted its own base.
warm_layers() {
	local files=("$L/$NAME.0.base") i
	for ((i = 1; i <= $1; i++)); do
		if [ "$2" = qcow ]; then files+=("$Q/o$i.qcow2"); else files+=("$L/$NAME.$i.diff"); fi
	done
	drop_caches
	"$TOUCH" warm "${files[@]}" || die "warming the layers"
}

# store_at D: the store holds the base and diffs 1..D-1 (diff D unpublished).
store_at() {
	local i
	rm -f "$S"/* "$S"/.??*
	ln "$L/$NAME.0.base" "$S/" || die "link base"
	for ((i = 1; i < $1; i++)); do ln "$L/$NAME.$i.diff" "$S/" || die "link diff $i"; done
	ln "$L/$NAME.$1.diff" "$S/.$NAME.$1.tmp" || die "link diff $1"
}
publish() { mv "$S/.$NAME.$1.tmp" "$S/$NAME.$1.diff"; }

# flat_ready FILE: waits (at most 120 s) until FILE's flat file is ready;
# false at once where none is made (user.snapfs.flat none: libfuse < 3.17,
# a filesystem that cannot reflink), or if it failed.
flat_ready() {
	local s i
	for ((i = 0; i < 12000; i++)); do
		s=$(getfattr --absolute-names --only-values -n user.snapfs.flat "$1" 2>/dev/null)
		case $s in
		ready) return 0 ;;
		pending) sleep 0.01 ;;
		*) return 1 ;;
		esac
	done
	return 1
}

touch_file() {	# FILE LIST [DEPTH]: prints the checksum, or fails
	local out
	out=$("$TOUCH" touch "$@") || die "touching $1 failed"
	SUM=${out##* }
}

# run CONTENDER D TEMP: one restore and one clone; sets RESTORE, CLONE, SUM,
# EXTRA.
run() {
	local who=$1 d=$2 temp=$3 list=$W/list$2 opts t0 t1 t2 t3 t4
	EXTRA=""
	store_at "$d"
	case $who in
	snapfs-*)
		case $who in
		snapfs-off) opts=prefetch=off ;;
		snapfs-diffs) opts=prefetch=diffs ;;
		snapfs-all) opts=prefetch=all,prefetch_mb=4096 ;;
		snapfs-mmap) opts=prefetch=diffs,read_reply=mmap ;;
		snapfs-splice) opts=prefetch=diffs,read_reply=splice ;;
		snapfs-ra128) opts=prefetch=diffs,readahead_kb=0 ;;
		esac
		"$SNAPFS" -f -o compact=off,"$opts" "$S" "$W/mnt" 2>>"$W/snapfs.log" &
		SNAP_PID=$!
		for ((i = 0; i < 500; i++)); do mountpoint -q "$W/mnt" && break; sleep 0.01; done
		stat "$W/mnt/$NAME" >/dev/null || die "the mount shows no $NAME"
		[ "$temp" = cold ] && drop_caches || warm_layers "$d" store
		t0=$(now)
		publish "$d"
		touch_file "$W/mnt/$NAME" "$list" "$d"
		t1=$(now)
		EXTRA=$(getfattr --only-values -n user.snapfs.prefetch "$W/mnt/$NAME" 2>/dev/null)
		touch_file "$W/mnt/$NAME" "$list" "$d"
		t2=$(now)
		# A later clone, once the version's flat file is ready (libfuse
		# >= 3.17, RB_DIR on XFS or btrfs): passthrough to it. Then one
		# more right after it, as the clone columns are taken right after
		# a restore: the CPU's caches then still hold the page tables
		# and lines the same touches need (doc/performance.md).
		if flat_ready "$W/mnt/$NAME"; then
			t3=$(now)
			touch_file "$W/mnt/$NAME" "$list" "$d"
			t4=$(now)
			touch_file "$W/mnt/$NAME" "$list" "$d"
			EXTRA+="; a clone once flat: $(secs "$t3" "$t4") s, right after it: $(secs "$t4" "$(now)") s"
		fi
		"$FUSERMOUNT" -u "$W/mnt" || "$FUSERMOUNT" -uz "$W/mnt"
		wait "$SNAP_PID"
		SNAP_PID=
		;;
	eager)
		local diffs=() line
		for ((i = 1; i <= d; i++)); do diffs+=("$S/$NAME.$i.diff"); done
		rm -f "$W/merged"
		[ "$temp" = cold ] && drop_caches || warm_layers "$d" store
		t0=$(now)
		publish "$d"
		line=$("$EAGER_MERGE" "$W/merged" "$S/$NAME.0.base" "${diffs[@]}") ||
			die "eager_merge failed"
		touch_file "$W/merged" "$list"
		t1=$(now)
		touch_file "$W/merged" "$list"
		t2=$(now)
		EXTRA=$(echo "$line" | awk '{ print "merge " $2 " s" }')
		rm -f "$W/merged"
		;;
	qsd)
		: >"$W/qexp"
		[ "$temp" = cold ] && drop_caches || warm_layers "$d" qcow
		mv "$Q/o$d.qcow2" "$Q/.o$d.tmp"
		t0=$(now)
		mv "$Q/.o$d.tmp" "$Q/o$d.qcow2"
		qemu-storage-daemon --daemonize --pidfile "$W/qsd.pid" \
			--blockdev driver=file,node-name=f,filename="$Q/o$d.qcow2",read-only=on \
			--blockdev driver=qcow2,node-name=q,file=f,read-only=on \
			--export type=fuse,id=e,node-name=q,mountpoint="$W/qexp",writable=off ||
			die "qemu-storage-daemon failed"
		QSD_PID=$(cat "$W/qsd.pid")
		touch_file "$W/qexp" "$list"
		t1=$(now)
		touch_file "$W/qexp" "$list"
		t2=$(now)
		kill "$QSD_PID"
		while kill -0 "$QSD_PID" 2>/dev/null; do sleep 0.02; done
		"$FUSERMOUNT" -uz "$W/qexp" 2>/dev/null
		QSD_PID=
		;;
	esac
	RESTORE=$(secs "$t0" "$t1") CLONE=$(secs "$t1" "$t2")
}

# ---- the runs ----
{
	echo "# Restore benchmark"
	echo
	echo "- $(date -u +%Y-%m-%d), $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) at start"
	echo "- ${RB_SIZE_MB} MiB memory.bin, diffs of ${RB_DIRTY_PCT}% random pages, on $(stat -f -c %T "$W")"
	echo "- touched: every page the diffs hold + ${RB_OTHER_PCT}% of the others, random order, MAP_PRIVATE"
	echo "- restore: publish -> last touch; clone: a second restore of the same version"
	echo
	echo "| depth | layers | contender | pages | restore s | clone s | notes |"
	echo "|---:|---|---|---:|---:|---:|---|"
} >"$RB_OUT"

for d in $RB_DEPTHS; do
	diffs=()
	for ((i = 1; i <= d; i++)); do diffs+=("$L/$NAME.$i.diff"); done
	plan=$("$TOUCH" plan "$W/list$d" "$SIZE" "$((RB_SEED + d))" "$RB_OTHER_PCT" "${diffs[@]}") ||
		die "plan failed"
	pages=$(echo "$plan" | awk '{ print $2 }')
	note "depth $d: $plan"
	for temp in $RB_TEMPS; do
		ref_sum=
		who_list=$RB_WARM
		[ "$temp" = cold ] && who_list=$RB_COLD
		for who in $who_list; do
			[ "$who" = qsd ] && [ "$HAVE_QSD" = 0 ] && continue
			run "$who" "$d" "$temp"
			if [ -z "$ref_sum" ]; then
				ref_sum=$SUM
			elif [ "$SUM" != "$ref_sum" ]; then
				die "$who depth $d: checksum $SUM, others $ref_sum: it read other bytes"
			fi
			note "depth $d $temp $who: restore $RESTORE s, clone $CLONE s $EXTRA"
			echo "| $d | $temp | $who | $pages | $RESTORE | $CLONE | $EXTRA |" >>"$RB_OUT"
		done
	done
done
echo >>"$RB_OUT"
echo "Reproduce: make bench-restore (RB_SIZE_MB=$RB_SIZE_MB RB_DEPTHS=\"$RB_DEPTHS\")" >>"$RB_OUT"
cat "$RB_OUT"
