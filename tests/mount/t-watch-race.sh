#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# No lost watch (issue 9): a directory the kernel forgets and looks up again
# gets a new node, and inotify hands that node the very wd the old node
# had; the old node's destruction must not remove the watch the new node
# relies on (dir_unwatch()). A lost watch is silent: the directory's names
# stay cached for entry_timeout (60 s by default) and publishes there do
# not show.
# Every round drops the kernel's dentries and inodes (vm.drop_caches=2),
# which sends the daemon a forget for each directory, while DIRS lookups
# into those directories race the forgets. After each round every directory
# must be in the daemon's inotify watch list (/proc/PID/fdinfo of its
# inotify fd, by inode number); at the end a diff published in each
# directory must show through the mount (a new inode number for the view)
# within the live limit (lib.sh's LIVE_LIMIT_MS), which with the default
# entry_timeout only a working watch gives.
# The race window of the bug (between the old node leaving the wd table
# and its inotify_rm_watch) is a few instructions wide, so this passes on
# code with the bug too unless the forget thread is preempted right there;
# it guards the behaviour, it cannot force the interleaving.
# SNAPFS_WATCH_SECS (default 20) bounds the rounds; SNAPFS_WATCH_DIRS
# (default 32) directories.
. ./tests/mount/lib.sh
setup
[ -w /proc/sys/vm/drop_caches ] || skip "needs a writable /proc/sys/vm/drop_caches"

SECS=${SNAPFS_WATCH_SECS:-20}
DIRS=${SNAPFS_WATCH_DIRS:-32}
S=$T/store
M=$T/mnt

for ((k = 0; k < DIRS; k++)); do
	mkdir -p "$S/d$k"
	mk_sparse "$S/d$k/f.0.base" $((4 * PAGE))
	write_page "$S/d$k/f.0.base" 0 1
done
mount_snapfs "$S" "$M"	# default entry_timeout: names cached 60 s

ifd=
for fd in "/proc/$SNAPFS_PID/fd/"*; do
	[ "$(readlink "$fd")" = "anon_inode:inotify" ] && ifd=${fd##*/}
done
[ -n "$ifd" ] || fail "the daemon has no inotify fd"
dir_inos=()
for ((k = 0; k < DIRS; k++)); do
	dir_inos+=("$(printf %x "$(stat -c %i "$S/d$k")")")
done

# unwatched: prints the directories the daemon has no inotify watch on.
unwatched() {
	local w k
	w=$(sed -n 's/^inotify wd:[0-9a-f]* ino:\([0-9a-f]*\) .*/\1/p' "/proc/$SNAPFS_PID/fdinfo/$ifd")
	for ((k = 0; k < DIRS; k++)); do
		grep -qx "${dir_inos[k]}" <<<"$w" || printf 'd%s ' "$k"
	done
}

# ino_moved PATH INO: the view at PATH has an inode number other than INO.
ino_moved() {
	local i
	i=$(stat -c %i "$1" 2>/dev/null) && [ "$i" != "$2" ]
}

t_end=$((SECONDS + SECS))
rounds=0
while [ "$SECONDS" -lt "$t_end" ] || [ "$rounds" = 0 ]; do
	rounds=$((rounds + 1))
	# forget everything the kernel may forget, and look up again at once,
	# in parallel, while the daemon is still handling the forgets
	echo 2 >/proc/sys/vm/drop_caches
	pids=()
	for ((k = 0; k < DIRS; k++)); do
		stat "$M/d$k/f" >/dev/null &
		pids+=("$!")
	done
	wait "${pids[@]}"	# not the daemon
	stat "$M"/d*/f >/dev/null || fail "round $rounds: a view cannot be looked up"
	lost=$(unwatched)
	[ -z "$lost" ] || fail "round $rounds: no inotify watch on $lost"
done
log "$rounds rounds x $DIRS directories forgotten and looked up again: every one still watched"

# what a lost watch would hide: a publish in every directory shows
max=0
for ((k = 0; k < DIRS; k++)); do
	ino=$(stat -c %i "$M/d$k/f") || fail "d$k/f cannot be looked up"
	mk_sparse "$S/d$k/.f.1.tmp" $((4 * PAGE))
	write_page "$S/d$k/.f.1.tmp" 1 2
	mv "$S/d$k/.f.1.tmp" "$S/d$k/f.1.diff" || fail "cannot publish in d$k"
	shows "d$k/f.1.diff" ino_moved "$M/d$k/f" "$ino"
	[ "$WAITED_MS" -gt "$max" ] && max=$WAITED_MS
done
log "ok: a publish in each of the $DIRS directories shown, the slowest after $max ms"
umount_snapfs "$M"
