#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Flat files under churn (doc/design.md §19), on XFS (reflink), with
# libfuse >= 3.17: while one thread publishes diffs and new bases and rolls
# diffs back (in STORE and through the mount), readers open, read, map and
# close the view and check every byte against the model of the version
# they opened (tests/tools/churn). Versions get flat files as they are
# opened, and the opens after that are passthrough to them: zero wrong
# bytes, no read error, flat files built, no open answered ESTALE, and once
# churn has closed everything the daemon holds no flat file beyond the
# flattener's own (one, of the current version) and no layer file.
. ./tests/mount/lib.sh
require_passthrough
setup_loops
have_mkfs xfs || fail "mkfs.xfs is missing"

SEED=${SNAPFS_SEED:-$RANDOM}
SECS=${SNAPFS_STRESS_SECS:-20}
SECS=$(((SECS + 1) / 2))
log "seed $SEED, $SECS s (rerun with SNAPFS_SEED=$SEED)"

mkfs_loop xfs 1024 "$T/x"
S=$T/x/store M=$T/mnt
mkdir -p "$S/vm1"
# compact=off: the compactor rewrites chains behind the publisher's back,
# which churn's model does not follow. A flat file is built once its
# version has gone unread for a second, which churn's readers never
# leave it: fault-injection builds build at once (SNAPFS_FLATTEN_QUIET_MS),
# so that builds race the reads.
SNAPFS_FLATTEN_QUIET_MS=0 mount_snapfs "$S" "$M" -o compact=off
counter() {	# counter NAME: its value in M/.snapfs-stats
	awk -v n="$1" '$1 == n { print $2 }' "$M/.snapfs-stats"
}

# The most flat files open at once while churn runs.
flat_sampler() {
	local max=0 n
	while [ ! -e "$T/stop-sampler" ]; do
		n=$(flat_fds "$S/vm1")
		[ "$n" -gt "$max" ] && max=$n && echo "$max" >"$T/flat-max"
		sleep 0.05
	done
}
flat_sampler &
PIDS+=("$!")
sampler=$!
# A change every 40 ms on average (5 in t-live-stress): most versions
# live long enough for their flat file to be built and opened.
"$CHURN" -t "$SECS" -r 3 -s "$SEED" -u -p 40 "$S/vm1" "$M/vm1" memory.bin >"$T/churn.log" 2>&1
rc=$?
touch "$T/stop-sampler"
wait "$sampler"
cat "$T/churn.log"
[ "$rc" -eq 0 ] || fail "churn exited $rc (rerun with SNAPFS_SEED=$SEED)"
grep -q ' 0 wrong bytes, 0 stale opens,.* 0 errors .* 0 opens answered ESTALE' "$T/churn.log" ||
	fail "churn saw wrong bytes, stale opens, errors or ESTALE (rerun with SNAPFS_SEED=$SEED)"
flat_max=$(cat "$T/flat-max" 2>/dev/null || echo 0)
log "at most $flat_max flat files open at once; $(counter read_errors) read errors"
[ "$FAULTS" = 0 ] || [ "$flat_max" -gt 0 ] || fail "no version got a flat file"
[ "$(counter read_errors)" = 0 ] || fail "$(counter read_errors) read errors"

# Releases reach the daemon asynchronously: give them a moment. Then only
# the flattener's own flat files (at most one, of the current version)
# are open, and no layer.
settled() {
	[ "$(counter layers_open)" = 0 ] && [ "$(flat_fds "$S/vm1")" -le 1 ]
}
wait_for 10000 settled ||
	fail "with nothing open: $(counter layers_open) layer files, $(flat_fds "$S/vm1") flat files open"
umount_snapfs "$M"
log "ok: flat files under churn, no wrong byte"
