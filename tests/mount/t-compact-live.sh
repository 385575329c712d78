#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Background compaction while mounted (doc/format.md §6, §3 "Versions"), with
# -o compact_threshold=4,keep_diffs=2 and a low compact_rate so that a
# compaction lasts seconds. A store is mounted with its crafted chain 4 diffs
# deep; publishing two more diffs into STORE makes it 6 deep, and the
# daemon compacts it (and the seeded chains deeper than 4) in the background
# while readers keep opening the views and reading them with pread and
# through MAP_PRIVATE mappings. Every byte they read equals the reference;
# user.snapfs.compaction goes pending or running, then idle; the depth drops
# to 2; a view keeps its inode number across its compaction; an fd and a
# mapping opened before the compaction, and another pair opened on the
# 4-deep version before the publishes, still read the right bytes (each
# its own version's) after the merged layers are gone from STORE, and the
# daemon closes those layers while the fds are still open (their reads
# moved onto the new base, views_moved; on tmpfs with a push budget of
# 1 MiB, so that the held views' pushes wait for good and must follow the
# move); the holes the views report are still the reference's. Then a
# second compaction (three more diffs) merges a diff those two versions
# lack: their fds keep the first new base and its diffs open, reading the
# same bytes, until they close, and the diff merged closes at once. Runs on tmpfs (sparse base copy) and, where
# mkfs.xfs exists, on XFS (reflinked base). Last, on tmpfs, an operator
# rolls back below the merge point (deletes diffs 6, 5 and 4 from STORE)
# while the compaction that merges diff 4 runs: it must not publish a base
# that brings diff 4 back. And a clean unmount in the middle of a
# compaction leaves the store as it was.
. ./tests/mount/lib.sh
setup_loops
[ -x "$HOLDVIEW" ] || fail "$HOLDVIEW is not built (make check builds it)"

SEED=${SNAPFS_SEED:-$RANDOM}
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
TH=4
KEEP=2
RATE=${SNAPFS_LIVE_RATE:-2}	# MiB/s: the crafted chain takes seconds
HARD_MS=60000

# reader N MODES: checks every view against the reference with viewcheck
# MODES, again and again (each pass opens every view anew), until
# $T/stop exists; counts passes in $T/reader.N.passes, keeps failures in
# $T/reader.N.fail.
reader() {
	local n=$1 modes=$2 passes=0 path rest
	: >"$T/reader.$n.fail"
	while [ ! -e "$T/stop" ]; do
		while read -r path rest; do
			"$VIEWCHECK" -m "$modes" "$M/$path" "$REF/$path" >/dev/null \
				2>>"$T/reader.$n.fail" ||
				echo "reader $n: $path differs" >>"$T/reader.$n.fail"
		done <"$REF/MANIFEST"
		passes=$((passes + 1))
		echo "$passes" >"$T/reader.$n.passes"
	done
}

# state PATH: user.snapfs.compaction of view PATH.
cstate() {
	xattr "$M/$1" user.snapfs.compaction
}
# cstate_is PATH STATE: user.snapfs.compaction of view PATH is STATE.
cstate_is() {
	[ "$(cstate "$1")" = "$2" ]
}
# depth_is PATH N: user.snapfs.depth of view PATH is N.
depth_is() {
	[ "$(xattr "$M/$1" user.snapfs.depth 2>/dev/null)" = "$2" ]
}
# passes N: how many passes reader N has made (0 while its file is
# being rewritten).
passes() {
	local n
	n=$(cat "$T/reader.$1.passes" 2>/dev/null)
	echo "${n:-0}"
}
# passes_over N: reader 1 has made more than N passes.
passes_over() {
	[ "$(passes 1)" -gt "$1" ]
}
# merged_fds DIR [SEQS]: how many of the crafted chain's merged layers
# (deleted from STORE by a compaction), those whose <seq> matches the glob
# class SEQS (default 0-4), the daemon still holds open.
merged_fds() {
	find "/proc/$SNAPFS_PID/fd" -lname "$1/disk.img.[${2:-0-4}].* (deleted)" 2>/dev/null | wc -l
}
no_merged_fds() {
	[ "$(merged_fds "$@")" -eq 0 ]
}
# compacted_to N: the crafted view is compacted, idle, at depth N.
compacted_to() {
	depth_is crafted/disk.img "$1" && cstate_is crafted/disk.img idle
}
# counter NAME: its value in M/.snapfs-stats.
counter() {
	awk -v n="$1" '$1 == n { print $2 }' "$M/.snapfs-stats"
}
# settled: every chain deeper than TH is compacted and idle.
settled() {
	local p
	for p in "${DEEP[@]}"; do
		[ "$(cstate "$p")" = idle ] && [ "$(xattr "$M/$p" user.snapfs.depth)" = "$KEEP" ] ||
			return 1
	done
}

# live_fs FS DIR [OPTS]: the compaction under readers, on the store in DIR,
# snapfs mounted with OPTS too.
live_fs() {
	local fs=$1 dir=$2 opts=${3:+,$3} path size depth data chain p f ino seen st cd r1 r2
	local S=$dir/store
	M=$T/mnt.$fs
	REF=$T/ref.$fs
	"$MKSTORE" -s "$SEED" -n 6 -D 12 -S 1M "$S" "$REF" >/dev/null || fail "$fs: mkstore failed"
	craft_chain "$S" "$REF" steps
	cd=$S/crafted
	# the crafted chain starts 4 diffs deep: diffs 5 and 6 wait to be published
	mv "$cd/disk.img.5.diff" "$cd/.disk.img.5.diff.tmp"
	mv "$cd/disk.img.6.diff" "$cd/.disk.img.6.diff.tmp"
	# the other chains deeper than TH are compacted from their first lookup
	DEEP=()
	while read -r path size depth data chain; do
		[ "$depth" -gt "$TH" ] && DEEP+=("$path")
	done <"$REF/MANIFEST"

	mount_snapfs "$S" "$M" -o "compact_threshold=$TH,keep_diffs=$KEEP,compact_rate=$RATE$opts"
	p=crafted/disk.img
	[ "$(xattr "$M/$p" user.snapfs.depth)" = 4 ] || fail "$fs: $p: depth $(xattr "$M/$p" user.snapfs.depth), want 4"
	[ "$(cstate "$p")" = idle ] || fail "$fs: $p: compaction '$(cstate "$p")' at depth 4, want idle"
	# A VM restored from the 4-deep version holds it open and mapped
	# through the publishes and the compaction of the 6-deep one.
	holder_start
	hold_cmd open before "$M/$p"

	# Publish, then look the view up: a new version, 6 deep, queued.
	mv "$cd/.disk.img.5.diff.tmp" "$cd/disk.img.5.diff"
	mv "$cd/.disk.img.6.diff.tmp" "$cd/disk.img.6.diff"
	wait_for 3000 depth_is "$p" 6 ||
		fail "$fs: $p: the published diffs do not show (depth $(xattr "$M/$p" user.snapfs.depth))"
	declare -A INO
	for f in "${DEEP[@]}"; do
		INO[$f]=$(stat -c %i "$M/$f")
	done
	st=$(cstate "$p")
	case $st in
	pending | running) ;;
	idle) depth_is "$p" "$KEEP" ||
		fail "$fs: $p: compaction idle right after the publish, at depth 6" ;;
	*) fail "$fs: $p: compaction '$st' right after the publish, want pending or running" ;;
	esac
	seen=" $st"

	# An fd and a MAP_PRIVATE mapping held across the compaction.
	hold_cmd open held "$M/$p"
	[ "$HOLD_REPLY" = "${INO[$p]}" ] || fail "$fs: $p: held fd has inode $HOLD_REPLY, want ${INO[$p]}"

	# Readers, all through the compaction.
	rm -f "$T/stop"
	reader 1 pread &
	r1=$!
	reader 2 mmap &
	r2=$!
	PIDS+=("$r1" "$r2")

	# pending/running -> idle, depth 2, for every deep chain
	local t0=$SECONDS
	while ! settled; do
		st=$(cstate "$p")
		[ "$st" = idle ] || [[ $seen == *" $st"* ]] || seen="$seen $st"
		[ $((SECONDS - t0)) -lt $((HARD_MS / 1000)) ] ||
			fail "$fs: compaction not settled after $((HARD_MS / 1000)) s ($p: $st)"
		sleep 0.05
	done
	if [ "$seen" = " idle" ]; then
		log "$fs: $p was compacted before its state was first read"
	else
		log "$fs: $p went$seen -> idle in about $((SECONDS - t0)) s"
	fi
	# the readers make at least one full pass after the compaction too
	wait_for 60000 passes_over $(($(passes 1) + 1)) ||
		fail "$fs: the pread reader is stuck"
	touch "$T/stop"
	wait "$r1" "$r2"
	unset 'PIDS[-1]' 'PIDS[-1]'
	for f in 1 2; do
		[ -s "$T/reader.$f.fail" ] && fail "$fs: reader $f read wrong bytes: $(head -5 "$T/reader.$f.fail")"
		[ "$(passes "$f")" -ge 2 ] ||
			fail "$fs: reader $f made fewer than 2 passes"
	done

	# The fds and mappings opened before the compaction, of the version
	# compacted and of the 4-deep one before it, read from the new base
	# now: the daemon lets go of the merged layers (deleted from STORE,
	# their blocks still taken while open) with those fds still open, once
	# the pushes and flat-file builds that used them are done.
	wait_for 20000 no_merged_fds "$cd" ||
		fail "$fs: $p: the daemon still holds $(merged_fds "$cd") merged layer(s) open" \
			"$((WAITED_MS / 1000)) s after the compaction, for an fd opened before it"
	log "$fs: $p: merged layers closed ${WAITED_MS} ms after the readers stopped," \
		"the fds from before still open; views_moved $(counter views_moved)"
	[ "$(counter views_moved)" -ge 2 ] || fail "$fs: views_moved is $(counter views_moved)"

	# The chains on disk and through the mount.
	[ "$(xattr "$M/$p" user.snapfs.chain)" = disk.img.4.base,disk.img.5.diff,disk.img.6.diff ] ||
		fail "$fs: $p: chain $(xattr "$M/$p" user.snapfs.chain)"
	for f in disk.img.0.base disk.img.1.diff disk.img.2.diff disk.img.3.diff disk.img.4.diff; do
		[ ! -e "$cd/$f" ] || fail "$fs: $p: merged layer $f is still in STORE"
	done
	[ -z "$(staging_files "$S")" ] || fail "$fs: staging files left: $(staging_files "$S")"
	for f in "${DEEP[@]}"; do
		ino=$(stat -c %i "$M/$f")
		[ "$ino" = "${INO[$f]}" ] || fail "$fs: $f: inode ${INO[$f]} became $ino across its compaction"
	done

	# A second compaction, of the chain the first one made (diffs 7, 8 and
	# 9 published: depth 5, base 4 and diffs 5-7 merged). The held fds'
	# versions lack diff 7, which the new base holds: their bytes cannot
	# be read from it, so they keep their layers (base 4, diffs 5 and 6,
	# deleted from STORE) until they close; diff 7 closes at once.
	cp "$REF/$p" "$REF/$p.after6" || fail "$fs: cannot copy the reference"
	for f in 7 8 9; do
		mk_sparse "$cd/.disk.img.$f.tmp" $((2048 * PAGE))
		write_page "$cd/.disk.img.$f.tmp" $((900 + f)) "$f"
		write_page "$REF/$p" $((900 + f)) "$f"
		mv "$cd/.disk.img.$f.tmp" "$cd/disk.img.$f.diff"
	done
	wait_for 3000 depth_is "$p" 5 ||
		fail "$fs: $p: diffs 7-9 do not show (depth $(xattr "$M/$p" user.snapfs.depth))"
	wait_for "$HARD_MS" compacted_to "$KEEP" ||
		fail "$fs: $p: the second compaction did not settle ($(cstate "$p"), depth" \
			"$(xattr "$M/$p" user.snapfs.depth))"
	[ "$(xattr "$M/$p" user.snapfs.chain)" = disk.img.7.base,disk.img.8.diff,disk.img.9.diff ] ||
		fail "$fs: $p: chain $(xattr "$M/$p" user.snapfs.chain) after the second compaction"
	wait_for 20000 no_merged_fds "$cd" 7 ||
		fail "$fs: $p: the daemon still holds diff 7 open after the second compaction"
	[ "$(merged_fds "$cd" 4-6)" -eq 3 ] ||
		fail "$fs: $p: $(merged_fds "$cd" 4-6) of the 3 layers the held fds read are open"

	# The fds and mappings opened before still read the right bytes, each
	# its own version's (their page cache dropped first), the layers they
	# were opened on and those of the first new base gone: the 6-deep
	# version's, and the 4-deep one's (the new bases hold its chain whole).
	hold_cmd check held "$REF/$p.after6"
	hold_cmd close held
	hold_cmd check before "$REF/$p.after4"
	hold_cmd close before
	holder_stop
	wait_for 20000 no_merged_fds "$cd" 4-6 ||
		fail "$fs: $p: $(merged_fds "$cd" 4-6) layer(s) stay open after the last fd closed"

	# Fresh opens: bytes and holes (seek) of every view.
	check_views "$M" "$REF" seq,seek
	umount_snapfs "$M"
	[ "$(log_count "compaction failed")" = 0 ] || fail "$fs: the daemon logged a failed compaction"
	log "ok: $fs: ${#DEEP[@]} chains compacted under 2 readers ($(passes 1) and" \
		"$(passes 2) passes), $NVIEWS views equal, inodes kept"
}

# compaction_logged N: the daemon logged the end of more than N
# compactions of crafted/disk.img (done, failed or stopped).
compaction_logged() {
	[ "$(log_count "crafted/disk.img: compact")" -gt "$1" ]
}

# rollback_race DIR: diffs 6, 5 and 4 deleted from STORE (a rollback by the
# operator) while the compaction that merges diff 4 is under way. The new
# base would bring diff 4 back: the compactor must give up, and the view
# shows the chain up to diff 3, in new opens, while an fd opened before the
# rollback keeps the 6-diff content.
rollback_race() {
	local S=$1/race p=crafted/disk.img cd nlog
	M=$T/mnt.race
	REF=$T/ref.race
	mkdir -p "$REF"
	: >"$REF/MANIFEST"
	craft_chain "$S" "$REF" steps
	cd=$S/crafted
	nlog=$(log_count "crafted/disk.img: compact")
	mount_snapfs "$S" "$M" -o "compact_threshold=$TH,keep_diffs=$KEEP,compact_rate=1"
	depth_is "$p" 6 || fail "race: $p: depth $(xattr "$M/$p" user.snapfs.depth), want 6"
	holder_start
	hold_cmd open before "$M/$p"
	wait_for 20000 cstate_is "$p" running || fail "race: $p: the compaction never ran"
	rm "$cd/disk.img.6.diff" "$cd/disk.img.5.diff" "$cd/disk.img.4.diff"
	wait_for 3000 depth_is "$p" 3 || fail "race: $p: the rollback does not show"
	wait_for "$HARD_MS" compaction_logged "$nlog" || fail "race: the compaction never ended"
	[ "$(xattr "$M/$p" user.snapfs.chain)" = disk.img.0.base,disk.img.1.diff,disk.img.2.diff,disk.img.3.diff ] ||
		fail "race: $p: chain $(xattr "$M/$p" user.snapfs.chain) after the rollback"
	cmp "$M/$p" "$REF/$p.after3" || fail "race: $p: the view is not the chain up to diff 3"
	[ ! -e "$cd/disk.img.4.base" ] || fail "race: the compactor published disk.img.4.base"
	[ -z "$(staging_files "$S")" ] || fail "race: staging files left: $(staging_files "$S")"
	hold_cmd check before "$REF/$p"
	hold_cmd close before
	holder_stop
	umount_snapfs "$M"
	log "ok: rollback during a compaction: $(grep -F "crafted/disk.img: compact" "$T/snapfs.log" | tail -n 1)"
}

# stop_during DIR: a clean unmount while a compaction runs. The compactor
# gives up before its rename: the daemon exits 0 (no leak under ASan), no
# staging file or new base is left, no layer changed, and the view, mounted
# again, still equals the reference.
stop_during() {
	local S=$1/stop p=crafted/disk.img
	M=$T/mnt.stop
	REF=$T/ref.stop
	mkdir -p "$REF"
	: >"$REF/MANIFEST"
	craft_chain "$S" "$REF"
	store_state "$S" | grep -v '^d ' >"$T/stop.before"
	mount_snapfs "$S" "$M" -o "compact_threshold=$TH,keep_diffs=$KEEP,compact_rate=1"
	depth_is "$p" 6 || fail "stop: $p: depth $(xattr "$M/$p" user.snapfs.depth), want 6"
	wait_for 20000 cstate_is "$p" running || fail "stop: $p: the compaction never ran"
	umount_snapfs "$M"
	[ -z "$(staging_files "$S")" ] || fail "stop: staging files left: $(staging_files "$S")"
	store_state "$S" | grep -v '^d ' >"$T/stop.after"
	cmp -s "$T/stop.before" "$T/stop.after" ||
		fail "stop: the store changed: $(diff "$T/stop.before" "$T/stop.after" | head -5)"
	mount_snapfs "$S" "$M" -o compact=off
	check_views "$M" "$REF" seq,seek
	umount_snapfs "$M"
	log "ok: unmounted during a compaction: daemon exited 0, store unchanged"
}

mount_tmpfs "$T/tmpfs" 256
# A push budget of 1 MiB: the held views' pushes wait for room that never
# comes (the fds stay open), holding their views; they must let go of the
# merged layers all the same once their views moved (where passthrough
# serves the opens there is no push: the check holds either way).
live_fs tmpfs "$T/tmpfs" prefetch=all,prefetch_mb=1
rollback_race "$T/tmpfs"
stop_during "$T/tmpfs"
if have_mkfs xfs; then
	mkfs_loop xfs 512 "$T/xfs" -m reflink=1
	live_fs xfs "$T/xfs"
fi
log "ok"
