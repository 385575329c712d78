#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The compactor's crash safety (doc/format.md §6): a crash, ENOSPC or EIO at any step
# leaves every chain reading as before, and the next start removes what was
# left. Sections:
#  1. With a fault-injection build, snapfs-compact is killed (as a crash: no
#     cleanup) or failed with EIO right after each of its 7 steps, on XFS
#     (reflinked base) and ext4 (sparse copy). Every view must then equal
#     the reference; before the rename the store must be untouched; snapfs's
#     first look at the directory removes the staging file; a second run
#     ("restart") finishes the compaction and leaves no superseded layer.
#  2. EIO from the data fsync and from the directory fsync (strace fault
#     injection, any build): exit 1, one error line, chains intact.
#  3. ENOSPC on a nearly full ext4 (the base copy cannot be written) and XFS
#     (the diffs cannot be written over the reflinked base).
#  4. A power cut on XFS right after each step: `xfs_io -x -c shutdown`
#     drops what the log has not committed; after log recovery the restart
#     removes the staging file and every view equals the reference.
. ./tests/mount/lib.sh
setup_loops
command -v xfs_io >/dev/null || {
	[ -n "${CI:-}" ] && fail "CI must have xfs_io (xfsprogs)"
	skip "needs xfs_io (xfsprogs)"
}

SEED=${SNAPFS_SEED:-$RANDOM}
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
TH=4
KEEP=2
# SNAPFS_CRASH_CASES="..." (or CASES) runs only what it names: "xfs",
# "ext4 5:kill" (section 1: a filesystem and maybe steps), "eio",
# "enospc", "powercut". CI's second run, against libfuse 3.17, runs
# "xfs eio enospc" (contrib/run-tests.sh).
CASES=${SNAPFS_CRASH_CASES:-${CASES:-}}

want_case() {
	local w
	[ -z "$CASES" ] && return 0
	for w in "$@"; do
		case " $CASES " in *" $w "*) ;; *) return 1 ;; esac
	done
}

# make_store STORE [crafted]: (re)makes the test store in STORE, the same
# every time: mkstore's seeded store plus the crafted chain, or the crafted
# chain alone. Sets REF to its reference. Syncs: the store is on disk.
make_store() {
	local kind=${2:-full}
	rm -rf "$1" "$T/ref.scratch"
	mkdir -p "$1" "$T/ref.scratch"
	if [ "$kind" = full ]; then
		"$MKSTORE" -s "$SEED" -n 6 -D 12 -S 1M "$1" "$T/ref.scratch" >/dev/null ||
			fail "mkstore failed"
	else
		: >"$T/ref.scratch/MANIFEST"
	fi
	craft_chain "$1" "$T/ref.scratch"
	REF=$T/ref.$kind
	if [ -d "$REF" ]; then
		rm -rf "$T/ref.scratch"
	else
		mv "$T/ref.scratch" "$REF"
	fi
	sync -f "$1"
}

# state STORE: store_state without the staging files.
state() {
	store_state "$1" | grep -v '\.snapfs-compact\.'
}

# chain_state STORE: state of the files that make up chains (the layers
# REF/MANIFEST lists) and of every file that is not a layer: all but the
# superseded layers, which snapfs-compact may remove.
chain_state() {
	local live=$T/live.files path size depth data chain d l
	: >"$live"
	while read -r path size depth data chain; do
		d=$(dirname "$path")
		for l in ${chain//,/ }; do
			if [ "$d" = . ]; then echo "$l"; else echo "$d/$l"; fi
		done
	done <"$REF/MANIFEST" >"$live"
	state "$1" | awk 'NR == FNR { live[$1] = 1; next }
		$1 != "f" || ($2 in live) || $2 !~ /\.[0-9]+\.(base|diff)$/' "$live" -
}

# compactable: the paths of REF/MANIFEST deeper than the threshold.
compactable() {
	awk -v t="$TH" '$3 > t { print $1 }' "$REF/MANIFEST"
}

# check_store STORE: mounts STORE (background compaction off), checks every
# view against REF, unmounts.
check_store() {
	mount_snapfs "$1" "$T/mnt" -o compact=off
	check_views "$T/mnt" "$REF" seq,seek
	umount_snapfs "$T/mnt"
}

# restart STORE WHAT: snapfs-compact without faults, as the next start does:
# it must succeed and leave no staging file; through snapfs every chain is
# compacted (depth KEEP), equals REF, and no superseded layer is left beside
# it. RESTART_OUT is its output.
restart() {
	local store=$1 what=$2 path d name want got f b
	RESTART_OUT=$("$SNAPFS_COMPACT" -t "$TH" -k "$KEEP" "$store" 2>"$T/restart.err") ||
		fail "$what: restart failed: $(cat "$T/restart.err")"
	[ -z "$(staging_files "$store")" ] ||
		fail "$what: staging files survive the restart: $(staging_files "$store")"
	# every byte and the hole map; the read patterns are t-reads.sh's
	mount_snapfs "$store" "$T/mnt" -o compact=off
	check_views "$T/mnt" "$REF" seq,seek
	for path in $(compactable); do
		[ "$(xattr "$T/mnt/$path" user.snapfs.depth)" = "$KEEP" ] ||
			fail "$what: $path: depth $(xattr "$T/mnt/$path" user.snapfs.depth) after the restart"
		d=$(dirname "$path")
		name=${path##*/}
		want=$(xattr "$T/mnt/$path" user.snapfs.chain | tr , '\n' | LC_ALL=C sort)
		got=$(for f in "$store/$d/$name".*; do
			b=${f##*/}
			[[ ${b#"$name."} =~ ^[0-9]+\.(base|diff)$ ]] && echo "$b"
		done | LC_ALL=C sort)
		[ "$got" = "$want" ] ||
			fail "$what: $path: superseded layers left after the restart:" \
				"$(comm -23 <(echo "$got") <(echo "$want") | tr '\n' ' ')"
	done
	umount_snapfs "$T/mnt"
}

# ---- 1. kill and fail after every step, on XFS and ext4 --------------------

# fault_case FS DIR STEP ACT: one fault-injected run on a fresh store in DIR.
fault_case() {
	local fs=$1 dir=$2 step=$3 act=$4 store=$2/store rc want nst nexp what nlog
	local path old nb d
	what="$fs $step:$act"
	if [ -n "$CASES" ]; then
		want_case "$fs" || return 0
		[[ $CASES != *[0-9]:* ]] || want_case "$step:$act" || return 0
	fi
	make_store "$store"
	nexp=$(compactable | wc -l)
	chain_state "$store" >"$T/before"
	SNAPFS_FAULT="$step:$act" "$SNAPFS_COMPACT" -t "$TH" -k "$KEEP" "$store" \
		>"$T/fault.out" 2>"$T/fault.err"
	rc=$?
	if [ "$act" = kill ]; then want=99; else want=1; fi
	[ "$rc" = "$want" ] || fail "$what: exit $rc, want $want: $(cat "$T/fault.err")"
	grep -q "fault injection: .* after compaction step $step\$" "$T/fault.err" ||
		fail "$what: the fault point did not fire: $(cat "$T/fault.err")"
	nst=$(staging_files "$store" | wc -l)
	if [ "$act" = kill ] && [ "$step" -le 4 ]; then
		[ "$nst" = 1 ] || fail "$what: $nst staging files after the kill, want 1"
	else
		[ "$nst" = 0 ] || fail "$what: staging files left: $(staging_files "$store")"
	fi
	if [ "$act" = fail ]; then
		# every chain to compact failed, with one error line each
		[ "$(grep -c ': Input/output error' "$T/fault.err")" = "$nexp" ] ||
			fail "$what: want $nexp error lines: $(cat "$T/fault.err")"
		[ "$(grep -vc 'fault injection\|: Input/output error' "$T/fault.err")" = 0 ] ||
			fail "$what: unexpected messages: $(cat "$T/fault.err")"
	fi
	if [ "$step" -le 4 ]; then
		# no chain changed (superseded layers may have been pruned)
		chain_state "$store" >"$T/after"
		cmp -s "$T/before" "$T/after" ||
			fail "$what: the store changed: $(diff "$T/before" "$T/after" | head -6)"
	else
		# the first chain: new base in place, old base gone only after 7
		read -r path old nb < <(sed -n 's/^\(.*\): merging [0-9]* layers (\([^ ]*\) \.\. [^)]*) into \([^ ,]*\), keeping.*/\1 \2 \3/p' \
			"$T/fault.out" | head -n 1)
		d=$(dirname "$path")
		[ -n "$nb" ] && [ -f "$store/$d/$nb" ] ||
			fail "$what: no new base after step $step: $(head -n 1 "$T/fault.out")"
		if [ "$act" = kill ] && [ "$step" = 7 ]; then
			[ ! -e "$store/$d/$old" ] || fail "$what: the old base $old is still there"
		elif [ "$act" = kill ] && [ ! -e "$store/$d/$old" ]; then
			fail "$what: the old base $old was removed before step 7"
		fi
	fi
	# Every view as before; snapfs's first look at the directory removes
	# the staging file.
	nlog=$(log_count "removed 1 staging file")
	check_store "$store"
	[ -z "$(staging_files "$store")" ] ||
		fail "$what: snapfs did not remove the staging file: $(staging_files "$store")"
	if [ "$nst" = 1 ] && [ "$(log_count "removed 1 staging file")" != $((nlog + 1)) ]; then
		fail "$what: snapfs did not log the removal of the staging file"
	fi
	restart "$store" "$what"
}

fslist=""
XFS_DEV=""
if have_mkfs xfs; then
	mkfs_loop xfs 512 "$T/xfs" -m reflink=1
	XFS_DEV=$LOOP_DEV
	fslist="$fslist xfs"
fi
if have_mkfs ext4; then
	mkfs_loop ext4 128 "$T/ext4" -m 0
	fslist="$fslist ext4"
fi
[ -n "$fslist" ] || fail "neither XFS nor ext4 can be made"
if [ "$FAULTS" = 1 ]; then
	for fs in $fslist; do
		for step in 1 2 3 4 5 6 7; do
			for act in kill fail; do
				fault_case "$fs" "$T/$fs" "$step" "$act"
			done
		done
		want_case "$fs" && [[ $CASES != *[0-9]:* ]] &&
			log "ok: $fs: killed and failed after each of the 7 steps: views intact, restart clean"
	done
else
	[ -n "${CI:-}" ] && fail "CI builds with --enable-fault-injection"
	log "no fault injection in this build (configure --enable-fault-injection): section 1 skipped"
fi

# ---- 2. EIO from fsync ------------------------------------------------------

# eio_case WHEN WHAT: the WHEN-th fsync of snapfs-compact fails with EIO
# (1: the new base's data, 2: the directory after the rename).
eio_case() {
	local when=$1 what=$2 store=$T/ext4/eio rc
	[ -d "$T/ext4" ] || store=$T/xfs/eio
	make_store "$store" crafted
	state "$store" >"$T/before"
	# (LeakSanitizer cannot run under ptrace)
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
		strace -f -qq -o /dev/null -e trace=fsync -e inject=fsync:error=EIO:when="$when" \
		"$SNAPFS_COMPACT" -t "$TH" -k "$KEEP" "$store" >"$T/eio.out" 2>"$T/eio.err"
	rc=$?
	[ "$rc" = 1 ] || fail "$what: exit $rc, want 1: $(cat "$T/eio.err")"
	[ "$(wc -l <"$T/eio.err")" = 1 ] && grep -q 'crafted/disk.img: Input/output error' "$T/eio.err" ||
		fail "$what: want one error line, got: $(cat "$T/eio.err")"
	[ -z "$(staging_files "$store")" ] || fail "$what: staging file left"
	state "$store" >"$T/after"
	if [ "$when" = 1 ]; then
		cmp -s "$T/before" "$T/after" ||
			fail "$what: the store changed: $(diff "$T/before" "$T/after" | head -6)"
	else
		# renamed, but nothing removed: the rename may not be durable
		[ -z "$(comm -23 "$T/before" "$T/after")" ] ||
			fail "$what: layers changed or removed: $(comm -23 "$T/before" "$T/after" | head -3)"
	fi
	check_store "$store"
	restart "$store" "$what"
}

if ! want_case eio; then
	:
elif command -v strace >/dev/null; then
	eio_case 1 "EIO on the data fsync"
	eio_case 2 "EIO on the directory fsync"
	log "ok: EIO from fsync: exit 1, one line, chains intact"
else
	[ -n "${CI:-}" ] && fail "CI must have strace"
	log "strace not found: EIO section skipped"
fi

# ---- 3. ENOSPC --------------------------------------------------------------

# enospc_case DIR WHAT LEAVE_KIB: fills the filesystem of DIR up to
# LEAVE_KIB KiB, then compacts the crafted chain: it must fail with ENOSPC
# and leave the store as it was; with space again, the restart finishes.
enospc_case() {
	local dir=$1 what=$2 leave=$(($3 * 1024)) store=$1/nospc avail rc
	make_store "$store" crafted
	# XFS gives back speculative preallocations when it runs out of
	# space: give them back first, so that "free" means free
	[ "$(stat -f -c %T "$dir")" = xfs ] && xfs_spaceman -c 'prealloc -s' "$dir"
	sync -f "$dir"
	avail=$(df -B1 --output=avail "$dir" | tail -n 1)
	if [ "$avail" -gt "$leave" ]; then
		fallocate -l $((avail - leave)) "$dir/filler" || fail "$what: cannot fill $dir"
	fi
	sync -f "$dir"
	state "$store" >"$T/before"
	"$SNAPFS_COMPACT" -t "$TH" -k "$KEEP" "$store" >"$T/nospc.out" 2>"$T/nospc.err"
	rc=$?
	[ "$rc" = 1 ] || fail "$what: exit $rc, want 1: $(cat "$T/nospc.err")"
	# One line for the chain; the check of the whole chain before it (as
	# the daemon's open checks it) may add the hole probe's own line, which
	# needs a scratch file the full filesystem has no room for.
	[ "$(grep -c 'crafted/disk.img: No space left on device' "$T/nospc.err")" = 1 ] &&
		[ "$(grep -vc 'cannot probe hole granularity' "$T/nospc.err")" = 1 ] ||
		fail "$what: want one ENOSPC line, got: $(cat "$T/nospc.err")"
	[ -z "$(staging_files "$store")" ] || fail "$what: staging file left"
	state "$store" >"$T/after"
	cmp -s "$T/before" "$T/after" ||
		fail "$what: the store changed: $(diff "$T/before" "$T/after" | head -6)"
	check_store "$store"
	rm -f "$dir/filler"
	restart "$store" "$what"
	rm -rf "$store"
}

if want_case enospc; then
	if have_mkfs ext4; then
		# the base copy needs 6 MiB: leave 2
		mkfs_loop ext4 64 "$T/small" -m 0
		enospc_case "$T/small" "ENOSPC on ext4" 2048
	fi
	if [ -n "$XFS_DEV" ]; then
		# the reflink needs no data space, the diffs' pages need some
		enospc_case "$T/xfs" "ENOSPC on XFS" 16
	fi
	log "ok: ENOSPC: exit 1, one line, store unchanged, restart clean"
fi

# ---- 4. power cut on XFS ----------------------------------------------------

# powercut_case STEP: killed after STEP, then the filesystem shut down
# without flushing its log, unmounted and mounted again (log recovery).
powercut_case() {
	local step=$1 store=$T/xfs/store what="power cut after step $1" rc nst
	make_store "$store"
	SNAPFS_FAULT="$step:kill" "$SNAPFS_COMPACT" -t "$TH" -k "$KEEP" "$store" \
		>"$T/fault.out" 2>"$T/fault.err"
	rc=$?
	[ "$rc" = 99 ] || fail "$what: exit $rc, want 99: $(cat "$T/fault.err")"
	xfs_io -x -c shutdown "$T/xfs" || fail "$what: xfs_io shutdown failed"
	umount "$T/xfs" || fail "$what: cannot unmount the shut down XFS"
	mount "$XFS_DEV" "$T/xfs" || fail "$what: log recovery failed"
	# the one-shot restart removes what the crash left, and says so
	nst=$(staging_files "$store" | wc -l)
	restart "$store" "$what"
	if [ "$nst" -gt 0 ]; then
		grep -q "removed $nst staging file" <<<"$RESTART_OUT" ||
			fail "$what: the restart did not report removing $nst staging file(s)"
	fi
}

if [ "$FAULTS" = 1 ] && [ -n "$XFS_DEV" ] && want_case powercut; then
	for step in 1 2 3 4 5 6 7; do
		powercut_case "$step"
	done
	log "ok: XFS power cut after each step: views intact after log recovery, restart clean"
fi
log "ok"
