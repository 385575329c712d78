#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The live store under churn (issue "live store"): for a bounded time one
# thread publishes diffs and new bases and rolls diffs back, in STORE and
# through the mount, while readers open, read, map and close the view and
# check every byte against the model of the version they opened (churn);
# first at a steady pace, then as fast as it goes.
# Zero wrong bytes, zero stale new opens, no errors, and no open answered
# ESTALE to an application (the kernel's one retry of a stale open always
# finds a version it may open: node_version_check()); the daemon's open fds
# stay bounded all along (layer fds are shared, old versions let go), once
# churn has closed everything no layer file stays open (layers_open of
# .snapfs-stats falls back to 0, whatever versions the kernel still
# caches) and the fd count is back where it started, and the daemon blames
# the producer for no rewrite that never happened.
. ./tests/mount/lib.sh
setup

SEED=${SNAPFS_SEED:-$RANDOM}
SECS=${SNAPFS_STRESS_SECS:-20}
READERS=${SNAPFS_STRESS_READERS:-4}
# While churning, the daemon holds the layers of the versions that open
# handles, prefetch jobs of current versions and retried lookups hold: a
# few handles times chains a few dozen layers deep at most, plus libfuse's
# splice pipes (35 to 80 fds seen). Versions superseded while nobody has
# them open hold none (a prefetch job ends at the next open or release,
# not when its nice-19 thread gets round to it).
FD_LIMIT=${SNAPFS_STRESS_FD_LIMIT:-256}
log "seed $SEED, $SECS s, $READERS readers (rerun with SNAPFS_SEED=$SEED)"

mkdir -p "$T/store/vm1"
# The compactor rewrites chains behind the publisher's back, which churn's
# model does not follow: it is tested on its own.
mount_snapfs "$T/store" "$T/mnt" -o compact=off
fds_before=$(find "/proc/$SNAPFS_PID/fd" -mindepth 1 | wc -l)
layers_open() {
	awk '$1 == "layers_open" { print $2 }' "$T/mnt/.snapfs-stats"
}

# The daemon's fd count, sampled while churn runs; the largest is kept.
fd_sampler() {
	local max=0 n
	while kill -0 "$SNAPFS_PID" 2>/dev/null && [ ! -e "$T/stop-sampler" ]; do
		n=$(find "/proc/$SNAPFS_PID/fd" -mindepth 1 2>/dev/null | wc -l)
		if [ "$n" -gt "$max" ]; then
			max=$n
			echo "$max" >"$T/fd-max"
			find "/proc/$SNAPFS_PID/fd" -mindepth 1 -printf '%l\n' \
				>"$T/fd-at-max" 2>/dev/null
		fi
		sleep 0.1
	done
}
fd_sampler &
PIDS+=("$!")
sampler=$!

# run_churn LOG SECS ARG...: runs churn on the mount for SECS seconds; its
# output goes to $T/LOG and to the test's output. Should the daemon stop
# answering (a crash can leave requests hanging), a watchdog aborts the
# connection with umount -f so that churn ends and the test fails instead
# of hanging.
run_churn() {
	local out=$T/$1 secs=$2 wd rc
	shift 2
	(
		trap 'kill "$s" 2>/dev/null; exit 0' TERM
		sleep $((secs + 30)) &
		s=$!
		wait "$s"
		log "churn hangs: aborting the FUSE connection"
		umount -f "$T/mnt"
	) &
	wd=$!
	mkdir -p "$T/store/$dir"
	"$CHURN" -t "$secs" "$@" "$T/store/$dir" "$T/mnt/$dir" memory.bin >"$out" 2>&1
	rc=$?
	kill "$wd" 2>/dev/null
	wait "$wd" 2>/dev/null
	cat "$out"
	return "$rc"
}

# 1. steady pace: a 16 MiB view, changes a few ms apart, readers that
# read, map and hold their views.
dir=vm1 run_churn churn.log "$SECS" -r "$READERS" -s "$SEED" -u
rc=$?
# churn never rewrites a published layer: it unlinks and publishes new
# files, which may get a freed inode number back; birth times tell them
# apart, except for two files born in the same timestamp tick, which only
# the fast phase below makes likely.
false_rewrites=$(log_count "changed after it was published")
# 2. as fast as it goes: 1 MiB views, no pause between changes, and quick
# readers that open and close in a tight loop (lookup, forget and open
# racing the watcher).
if [ "$rc" -eq 0 ]; then
	dir=vm2 run_churn churn-fast.log $((SECS / 2)) -r 2 -q 2 -s "$SEED" -u -p 0 -S 1
	rc=$?
fi
touch "$T/stop-sampler"
wait "$sampler"
case $(ps -o stat= -p "$SNAPFS_PID") in
"" | Z*)
	# a dead mount answers ENOTCONN, which mountpoint(1) in cleanup
	# does not take for a mount: detach it here
	"$FUSERMOUNT" -u -z "$T/mnt" 2>/dev/null
	fail "the daemon died (see snapfs.log)"
	;;
esac
[ "$rc" -eq 0 ] || fail "churn exited $rc (rerun with SNAPFS_SEED=$SEED)"
estale=$(cat "$T/churn.log" "$T/churn-fast.log" |
	sed -n 's/.* \([0-9][0-9]*\) opens answered ESTALE.*/\1/p' | awk '{ n += $1 } END { print n + 0 }')
opens=$(cat "$T/churn.log" "$T/churn-fast.log" |
	sed -n 's/^churn: \([0-9][0-9]*\) opens,.*/\1/p' | awk '{ n += $1 } END { print n + 0 }')
log "$opens opens, $estale answered ESTALE"
[ "$opens" -gt 1000 ] || fail "only $opens opens: the stress did not stress"
[ "$estale" = 0 ] || fail "$estale opens answered ESTALE to the application (rerun with SNAPFS_SEED=$SEED)"

# Every handle is closed now, but releases reach the daemon asynchronously
# and prefetch jobs end at their last release: give both a moment.
for _ in $(seq 100); do
	[ "$(layers_open)" = 0 ] && break
	sleep 0.1
done
fds_after=$(find "/proc/$SNAPFS_PID/fd" -mindepth 1 | wc -l)
fdmax=$(cat "$T/fd-max" 2>/dev/null || echo 0)
log "daemon fds: $fds_before before, at most $fdmax while churning, $fds_after after;" \
	"$(layers_open) layer files open after"
[ "$(layers_open)" = 0 ] ||
	fail "$(layers_open) layer files still open with no handle open"
# libfuse's worker threads may have grown to max_threads (16), each with
# a splice pipe (2 fds) and an io_uring for gathered reads (1 fd)
threads=$(find "/proc/$SNAPFS_PID/task" -mindepth 1 -maxdepth 1 | wc -l)
[ "$fds_after" -le $((fds_before + 3 * threads + 8)) ] ||
	fail "the daemon holds $fds_after fds with nothing open, $fds_before before churn ($threads threads)"
if [ "$fdmax" -gt "$FD_LIMIT" ]; then
	# what the fds lead to, most frequent first, names relative to $T
	log "what the fds led to at the peak, most frequent first:"
	sed "s|^$T/||; s|\.[0-9]*\.diff|.N.diff|" "$T/fd-at-max" |
		sort | uniq -c | sort -rn | head -20 >&2
	fail "the daemon held $fdmax fds (limit $FD_LIMIT)"
fi
[ "$(log_count "unusable")" = 0 ] || fail "the daemon called a view unusable during churn"
[ "$false_rewrites" = 0 ] ||
	fail "$false_rewrites false reports of a layer changed after it was published"
umount_snapfs "$T/mnt"
log "ok"
