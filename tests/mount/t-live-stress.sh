#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The live store under churn (issue "live store"): for a bounded time one
# thread publishes diffs and new bases and rolls diffs back, in STORE and
# through the mount, while readers open, read, map and close the view and
# check every byte against the model of the version they opened (churn).
# Zero wrong bytes, zero stale new opens, no errors; the daemon's open fds
# stay bounded all along (layer fds are shared, old versions let go), and
# it blames the producer for no rewrite that never happened.
. ./tests/mount/lib.sh
setup

SEED=${SNAPFS_SEED:-$RANDOM}
SECS=${SNAPFS_STRESS_SECS:-20}
READERS=${SNAPFS_STRESS_READERS:-4}
FD_LIMIT=${SNAPFS_STRESS_FD_LIMIT:-256}
log "seed $SEED, $SECS s, $READERS readers (rerun with SNAPFS_SEED=$SEED)"

mkdir -p "$T/store/vm1"
# The compactor rewrites chains behind the publisher's back, which churn's
# model does not follow: it is tested on its own.
mount_snapfs "$T/store" "$T/mnt" -o compact=off

# The daemon's fd count, sampled while churn runs; the largest is kept.
fd_sampler() {
	local max=0 n
	while kill -0 "$SNAPFS_PID" 2>/dev/null && [ ! -e "$T/stop-sampler" ]; do
		n=$(find "/proc/$SNAPFS_PID/fd" -mindepth 1 2>/dev/null | wc -l)
		[ "$n" -gt "$max" ] && max=$n && echo "$max" >"$T/fd-max"
		sleep 0.1
	done
}
fd_sampler &
PIDS+=("$!")
sampler=$!

"$CHURN" -t "$SECS" -r "$READERS" -s "$SEED" -u \
	"$T/store/vm1" "$T/mnt/vm1" memory.bin >"$T/churn.log" 2>&1
rc=$?
touch "$T/stop-sampler"
wait "$sampler"
cat "$T/churn.log"
[ "$rc" -eq 0 ] || fail "churn exited $rc (rerun with SNAPFS_SEED=$SEED)"

fdmax=$(cat "$T/fd-max" 2>/dev/null || echo 0)
log "daemon fds: at most $fdmax while churning, $(find "/proc/$SNAPFS_PID/fd" -mindepth 1 | wc -l) after"
[ "$fdmax" -le "$FD_LIMIT" ] || fail "the daemon held $fdmax fds (limit $FD_LIMIT)"
[ "$(log_count "unusable")" = 0 ] || fail "the daemon called a view unusable during churn"
# churn never rewrites a published layer: it unlinks and publishes new files,
# which may get a freed inode number back.
n=$(log_count "changed after it was published")
[ "$n" = 0 ] || fail "$n false reports of a layer changed after it was published"
umount_snapfs "$T/mnt"
log "ok"
