#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# compact-bench.sh: the compactor benchmark (doc/format.md §6), all in one run. On a
# loop-mounted XFS (reflink=1), btrfs and ext4 it builds a chain of a 2 GiB
# dense base and 10 sparse diffs (2% random dirty pages each), then times
# snapfs-compact with its defaults (-t 8 -k 2: the base and the 8 oldest
# diffs are merged) once per diff-apply method (SNAPFS_COMPACT_METHOD=pread,
# cfr, clone) against an eager merge of the same 9 layers (eager_merge: copy
# the base with pread/pwrite, apply each diff in turn, fsync). For each run
# it reports the wall time and the new data written (the filesystem's used
# space before and after; on XFS and btrfs also the new base's bytes that
# FIEMAP does not flag as shared), checks once per method that the new base
# equals the eager merge byte for byte, picks the fastest method per
# filesystem and checks the targets: the base is never copied on XFS and
# btrfs (new data <= the merged diffs' bytes), >= 5x faster than the eager
# merge on XFS, >= 10x on btrfs, no slower on ext4.
#
# Run as root from the top build directory of an optimised build (no
# sanitizers):  bash /path/to/tests/bench/compact-bench.sh
# Settings (environment):
#   BUILDDIR=.               where snapfs-compact and tests/bench/* were built
#   BENCH_DIR=/var/tmp       where the sparse loop images go (~7 GiB each)
#   CB_SIZE_MB=2048          base size;  CB_DIFFS=10;  CB_DIRTY_PCT=2
#   CB_REPS=3                runs per measurement (median reported)
#   CB_FS="xfs btrfs ext4"   CB_METHODS="pread cfr clone"
#   CB_XFS_COW4K=0           1: on XFS also pread/pwrite with a one-block COW
#                            extent size hint set on the directory (pread_cow4k;
#                            the same as pread since the compactor sets that
#                            hint itself, see doc/compaction.md)
#   CB_CACHE=cold            cold: the layers are dropped from the page cache
#                            before every run (POSIX_FADV_DONTNEED on each
#                            file; loop devices use direct I/O, so nothing is
#                            cached below them); warm: they are read first
#   CB_OUT=$BUILDDIR/compact-bench.md   the report
set -u
export LC_ALL=C

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
CB_SIZE_MB=${CB_SIZE_MB:-2048}
CB_DIFFS=${CB_DIFFS:-10}
CB_DIRTY_PCT=${CB_DIRTY_PCT:-2}
CB_REPS=${CB_REPS:-3}
CB_FS=${CB_FS:-xfs btrfs ext4}
CB_METHODS=${CB_METHODS:-pread cfr clone}
CB_CACHE=${CB_CACHE:-cold}
CB_OUT=${CB_OUT:-$BUILDDIR/compact-bench.md}
TH=8
KEEP=2
NAME=memory.bin

COMPACT=${COMPACT:-$BUILDDIR/snapfs-compact}
EAGER_MERGE=${EAGER_MERGE:-$BUILDDIR/tests/bench/eager_merge}
READBENCH=${READBENCH:-$BUILDDIR/tests/bench/readbench}

die() {
	echo "compact-bench: $*" >&2
	exit 1
}
note() {
	echo "compact-bench: $*" >&2
}

[ "$(id -u)" = 0 ] || die "must run as root (loop devices)"
for b in "$COMPACT" "$EAGER_MERGE" "$READBENCH"; do
	[ -x "$b" ] || die "$b not found: make snapfs-compact tests/bench/eager_merge tests/bench/readbench"
done
for t in xfs_io losetup; do
	command -v "$t" >/dev/null || die "$t not found"
done
if grep -q -- '-fsanitize' "$BUILDDIR/Makefile" 2>/dev/null &&
	grep -q '^SAN_CFLAGS = .*-fsanitize' "$BUILDDIR/Makefile"; then
	note "warning: $BUILDDIR is a sanitizer build; times will be inflated"
fi

W=$(mktemp -d "$BENCH_DIR/compact-bench.XXXXXX") || die "cannot make a work directory in $BENCH_DIR"
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

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() {
	printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "ERR"; exit }
			if (NR % 2) print v[(NR + 1) / 2]
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# used FS: bytes in use on the filesystem mounted at $MNT, after a sync.
used() {
	sync -f "$MNT"
	if [ "$1" = btrfs ]; then
		btrfs filesystem sync "$MNT" >/dev/null
		btrfs filesystem df -b "$MNT" | awk -F'used=' '/^Data/ { printf "%.0f\n", $2 }'
	else
		stat -f -c '%b %f %S' "$MNT" | awk '{ printf "%.0f\n", ($1 - $2) * $3 }'
	fi
}

# unshared FILE: bytes of FILE's extents that FIEMAP does not flag shared.
unshared() {
	xfs_io -r -c 'fiemap -v' "$1" | awk '
		function hex(s,   v, i) {
			v = 0
			for (i = 3; i <= length(s); i++)
				v = v * 16 + index("0123456789abcdef", tolower(substr(s, i, 1))) - 1
			return v
		}
		$3 ~ /^[0-9]+\.\.[0-9]+$/ {
			if (int(hex($5) / 8192) % 2 == 0) n += $4 * 512
		}
		END { printf "%.0f\n", n }'
}

# layers: the chain's files in $M, base first.
layers() {
	local i
	echo "$M/$NAME.0.base"
	for ((i = 1; i <= CB_DIFFS; i++)); do
		echo "$M/$NAME.$i.diff"
	done
}

# settle: the page cache state every run starts from.
settle() {
	local f
	sync -f "$MNT"
	# XFS keeps COW-fork preallocations of earlier runs for a while, then
	# frees them in the background: free them now so that they do not
	# count against the next run
	[ "$FS" = xfs ] && xfs_spaceman -c 'prealloc -s' "$MNT"
	if [ "$CB_CACHE" = warm ]; then
		# shellcheck disable=SC2046
		"$READBENCH" warm $(layers) >/dev/null
	else
		for f in $(layers); do
			xfs_io -r -c "fadvise -d 0 $(stat -c %s "$f")" "$f" ||
				die "cannot drop $f from the page cache"
		done
	fi
}

# mkfs_mount FS: a fresh sparse image with FS on a direct-I/O loop device.
mkfs_mount() {
	local fs=$1 img=$W/$1.img
	truncate -s $((CB_SIZE_MB * 7 / 2 + 1024))M "$img"
	case $fs in
	xfs) mkfs.xfs -q -m reflink=1 "$img" ;;
	btrfs) mkfs.btrfs -q "$img" >/dev/null ;;
	ext4) mkfs.ext4 -q -m 0 "$img" ;;
	*) die "unknown filesystem $fs" ;;
	esac || die "mkfs.$fs failed"
	LOOPDEV=$(losetup --direct-io=on -f --show "$img") || die "losetup failed"
	MNT=$W/mnt
	mkdir -p "$MNT"
	mount "$LOOPDEV" "$MNT" || die "mounting $fs failed"
}

umount_fs() {
	umount "$MNT" || die "cannot unmount $MNT"
	losetup -d "$LOOPDEV"
	LOOPDEV=""
	rm -f "$W"/*.img
}

# one_run FS WHAT REP: one timed run; WHAT is eager or a method. Appends
# "fs what rep seconds new_bytes unshared_bytes" to $W/results.
one_run() {
	local fs=$1 what=$2 rep=$3 s="$MNT/run" u0 u1 t0 t1 out nb="" i uns=-
	rm -rf "$s"
	mkdir -p "$s"
	for f in $(layers); do
		ln "$f" "$s/" || die "hard link failed"
	done
	settle
	u0=$(used "$fs")
	if [ "$what" = eager ]; then
		local merged=("$s/$NAME.0.base")
		for ((i = 1; i <= CB_DIFFS - KEEP; i++)); do
			merged+=("$s/$NAME.$i.diff")
		done
		t0=$(now)
		out=$("$EAGER_MERGE" "$MNT/eager.out" "${merged[@]}") || die "eager_merge failed"
		t1=$(now)
		nb=$MNT/eager.out
	else
		local method=$what
		if [ "$what" = pread_cow4k ]; then
			# pread/pwrite with an XFS COW extent size hint of one block,
			# inherited by the staging file from the directory
			method=pread
			xfs_io -c 'cowextsize 4096' "$s" || die "cannot set cowextsize on $s"
		fi
		t0=$(now)
		out=$(SNAPFS_COMPACT_METHOD=$method "$COMPACT" -t "$TH" -k "$KEEP" "$s" 2>"$W/compact.err") ||
			die "snapfs-compact ($what) failed: $(cat "$W/compact.err") $out"
		t1=$(now)
		nb=$s/$NAME.$((CB_DIFFS - KEEP)).base
		[ -f "$nb" ] || die "no new base after snapfs-compact ($what): $out"
		out=$(grep ': done' <<<"$out")
	fi
	u1=$(used "$fs")
	[ "$fs" != ext4 ] && uns=$(unshared "$nb")
	echo "$fs $what $rep $(sub "$t0" "$t1") $((u1 - u0)) $uns" >>"$W/results"
	note "$fs $what #$rep: $(sub "$t0" "$t1") s, new space $(mib $((u1 - u0))) MiB," \
		"not shared $([ "$uns" = - ] && echo - || mib "$uns") MiB | $out"
	# the first run of each kind: the new base must equal the eager merge
	if [ "$rep" = 1 ]; then
		if [ "$what" = eager ]; then
			mv "$nb" "$MNT/flat"
		elif ! cmp -s "$nb" "$MNT/flat"; then
			echo "$fs $what DIFFERENT" >>"$W/content"
			note "$fs $what: the new base differs from the eager merge!"
		else
			echo "$fs $what identical" >>"$W/content"
		fi
	fi
	rm -rf "$s" "$MNT/eager.out"
}

: >"$W/results"
: >"$W/content"
: >"$W/info"
# methods FS: the variants measured on FS.
methods() {
	echo "$CB_METHODS"
	[ "$1" = xfs ] && [ "${CB_XFS_COW4K:-0}" = 1 ] && echo pread_cow4k
}

for fs in $CB_FS; do
	FS=$fs
	command -v "mkfs.$fs" >/dev/null || { note "mkfs.$fs not found: $fs skipped"; continue; }
	mkfs_mount "$fs"
	M=$MNT/master
	mkdir -p "$M"
	t0=$(now)
	"$READBENCH" gen "$M/$NAME.0.base" -m "$CB_SIZE_MB" -s 1 || die "generating the base failed"
	for ((i = 1; i <= CB_DIFFS; i++)); do
		"$READBENCH" gen "$M/$NAME.$i.diff" -m "$CB_SIZE_MB" -s $((1000 + i)) -p "$CB_DIRTY_PCT" ||
			die "generating diff $i failed"
	done
	sync -f "$MNT"
	dbytes=0
	for ((i = 1; i <= CB_DIFFS - KEEP; i++)); do
		dbytes=$((dbytes + $(stat -c '%b * %B' "$M/$NAME.$i.diff")))
	done
	echo "$fs diffs_bytes $dbytes" >>"$W/info"
	note "$fs: chain generated in $(sub "$t0" "$(now)") s; the $((CB_DIFFS - KEEP)) merged diffs hold $(mib "$dbytes") MiB"
	for ((rep = 1; rep <= CB_REPS; rep++)); do
		for what in eager $(methods "$fs"); do
			one_run "$fs" "$what" "$rep"
		done
	done
	rm -rf "$M" "$MNT/flat"
	umount_fs
done

# ---- report ----------------------------------------------------------------
default_method() {
	case $1 in btrfs) echo clone ;; xfs) echo pread ;; *) echo cfr ;; esac
}
target() {
	case $1 in xfs) echo 5 ;; btrfs) echo 10 ;; *) echo 1 ;; esac
}
{
	echo "# snapfs-compact benchmark"
	echo
	echo "$(date -u +%Y-%m-%d), $(uname -r), $(nproc) CPUs, page cache: $CB_CACHE;" \
		"chain: ${CB_SIZE_MB} MiB dense base + $CB_DIFFS diffs of $CB_DIRTY_PCT% random pages;" \
		"snapfs-compact -t $TH -k $KEEP merges the base and $((CB_DIFFS - KEEP)) diffs;" \
		"eager = eager_merge of the same layers; median of $CB_REPS runs."
	echo
	echo "| fs | method | time s (runs) | new data MiB | not shared MiB | eager/this | content |"
	echo "|---|---|---|---|---|---|---|"
	for fs in $CB_FS; do
		grep -q "^$fs " "$W/results" || continue
		et=$(median $(awk -v f="$fs" '$1 == f && $2 == "eager" { print $4 }' "$W/results"))
		for what in eager $(methods "$fs"); do
			ts=$(awk -v f="$fs" -v w="$what" '$1 == f && $2 == w { print $4 }' "$W/results")
			t=$(median $ts)
			nd=$(median $(awk -v f="$fs" -v w="$what" '$1 == f && $2 == w { print $5 }' "$W/results"))
			us=$(median $(awk -v f="$fs" -v w="$what" '$1 == f && $2 == w { print $6 }' "$W/results"))
			[ "$us" = ERR ] && us=- || us=$(mib "$us")
			c=$(awk -v f="$fs" -v w="$what" '$1 == f && $2 == w { print $3 }' "$W/content")
			r=$(awk -v a="$et" -v b="$t" 'BEGIN { printf "%.1fx", a / b }')
			echo "| $fs | $what$([ "$what" = "$(default_method "$fs")" ] && echo " (default)") |" \
				"$t ($(echo $ts | tr ' ' '/')) | $(mib "$nd") | $us | $r | ${c:-reference} |"
		done
	done
	echo
	echo "| fs | fastest method | default (method_for) | merged diffs MiB | targets |"
	echo "|---|---|---|---|---|"
	for fs in $CB_FS; do
		grep -q "^$fs " "$W/results" || continue
		et=$(median $(awk -v f="$fs" '$1 == f && $2 == "eager" { print $4 }' "$W/results"))
		best="" bt=""
		for what in $CB_METHODS; do
			t=$(median $(awk -v f="$fs" -v w="$what" '$1 == f && $2 == w { print $4 }' "$W/results"))
			if [ -z "$bt" ] || awk -v a="$t" -v b="$bt" 'BEGIN { exit !(a < b) }'; then
				best=$what bt=$t
			fi
		done
		def=$(default_method "$fs")
		dt=$(median $(awk -v f="$fs" -v w="$def" '$1 == f && $2 == w { print $4 }' "$W/results"))
		dn=$(median $(awk -v f="$fs" -v w="$def" '$1 == f && $2 == w { print $5 }' "$W/results"))
		db=$(awk -v f="$fs" '$1 == f { print $3 }' "$W/info")
		sp=$(awk -v a="$et" -v b="$dt" 'BEGIN { printf "%.1f", a / b }')
		tg=$(target "$fs")
		v=$(awk -v s="$sp" -v t="$tg" 'BEGIN { print (s >= t) ? "PASS" : "FAIL" }')
		res="speed ${sp}x >= ${tg}x: $v"
		if [ "$fs" != ext4 ]; then
			v=$(awk -v n="$dn" -v d="$db" 'BEGIN { print (n <= d) ? "PASS" : "FAIL" }')
			res="$res; new data $(mib "$dn") <= $(mib "$db") MiB: $v"
		fi
		echo "| $fs | $best ($bt s) | $def ($dt s)$([ "$best" = "$def" ] && echo ", right") | $(mib "$db") | $res |"
	done
	echo
	echo "Raw results (fs method run seconds new_bytes unshared_bytes):"
	echo
	sed 's/^/    /' "$W/results"
} >"$CB_OUT"
cat "$CB_OUT"
