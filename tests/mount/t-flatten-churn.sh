#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Flat files under churn (doc/design.md §19), on XFS (reflink): while one
# thread publishes diffs and new bases and rolls diffs back (in STORE and
# through the mount), readers open, read, map and close the view and check
# every byte against the model of the version they opened (tests/tools/
# churn). Versions get flat files as they are opened, and the readers'
# reads move to them (the FUSE path; on 3.17 also passthrough opens):
# zero wrong bytes, no read error, flat files actually read, no open
# answered ESTALE, and once churn has closed everything the daemon holds
# no flat file beyond the flattener's own (one per current version) and no
# layer file.
. ./tests/mount/lib.sh
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
# which churn's model does not follow.
mount_snapfs "$S" "$M" -o compact=off
counter() {	# counter NAME: its value in M/.snapfs-stats
	awk -v n="$1" '$1 == n { print $2 }' "$M/.snapfs-stats"
}

# A change every 40 ms on average (5 in t-live-stress): most versions
# live long enough for their flat file to be built and read.
"$CHURN" -t "$SECS" -r 3 -s "$SEED" -u -p 40 "$S/vm1" "$M/vm1" memory.bin >"$T/churn.log" 2>&1
rc=$?
cat "$T/churn.log"
[ "$rc" -eq 0 ] || fail "churn exited $rc (rerun with SNAPFS_SEED=$SEED)"
grep -q ' 0 wrong bytes, 0 stale opens,.* 0 errors .* 0 opens answered ESTALE' "$T/churn.log" ||
	fail "churn saw wrong bytes, stale opens, errors or ESTALE (rerun with SNAPFS_SEED=$SEED)"
flat_reads=$(counter reads_flat)
log "reads: $flat_reads from flat files, $(counter reads_gather) gathered," \
	"$(counter reads_splice) spliced from layers; $(counter read_errors) errors"
[ "$flat_reads" -gt 0 ] || fail "no read came from a flat file"
[ "$(counter read_errors)" = 0 ] || fail "$(counter read_errors) read errors"

# Releases reach the daemon asynchronously: give them a moment. Then only
# the flattener's own flat files (at most one, of the current version)
# are open, and no layer.
flat_open() {
	find "/proc/$SNAPFS_PID/fd" -lname "$S/vm1/#* (deleted)" 2>/dev/null | wc -l
}
settled() {
	[ "$(counter layers_open)" = 0 ] && [ "$(flat_open)" -le 1 ]
}
wait_for 10000 settled ||
	fail "with nothing open: $(counter layers_open) layer files, $(flat_open) flat files open"
umount_snapfs "$M"
log "ok: $flat_reads reads from flat files under churn, no wrong byte"
