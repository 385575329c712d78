#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Flat files on the FUSE path (doc/design.md §19), on XFS (reflink), with
# -o passthrough=off, so against both libraries: once a layered version's
# flat file is ready, every read of it through the daemon is one splice
# from that file (reads_flat), whichever open it comes through:
#  1. fds and a mapping held from before the flat file was ready (the
#     build held back with SNAPFS_FLATTEN_GATE, fault-injection builds)
#     read the layers while it is pending, and the flat file once it is
#     ready (the flattener hands it to the view they share), byte for byte
#     the reference;
#  2. a new open reads only the flat file: read, pread, mmap (private and
#     shared), SEEK_DATA/SEEK_HOLE equal the reference, and no read is
#     answered from the layers;
#  3. after a publish and after a rollback, new opens read the new
#     version's bytes, and an fd held from before keeps its version's;
#  4. the flat file goes with the last open of its version (a version
#     nobody reads holds no flat file), and STORE is as it was;
#  5. a push into the page cache (prefetch=all) of a version whose flat
#     file is ready reads that file, and the pushed view equals the
#     reference.
. ./tests/mount/lib.sh
setup_loops
have_mkfs xfs || fail "mkfs.xfs is missing"

PAGE=4096
mkfs_loop xfs 400 "$T/x"
S=$T/x/store R=$T/ref M=$T/mnt
mkdir -p "$S" "$R"

flat_vm "$S" "$R"	# vm: a 16 MiB base with a hole, and one diff
layer_pages "$S/vm.2.diff" "$R/v1" 6:1 1000:201 1500:0 2999:7
layer_pages "$S/vm.3.diff" "$R/v1" 7:2 8:3 2000:99
state0=$(store_state "$S")

counter() {	# counter NAME: its value in M/.snapfs-stats
	awk -v n="$1" '$1 == n { print $2 }' "$M/.snapfs-stats"
}
layer_reads() {	# view reads answered from the layers, any reply path
	echo $(($(counter reads_splice) + $(counter reads_mmap) + $(counter reads_gather)))
}
# The view's pages stay cached between opens (keep_cache): dropped before
# each count, so that the reads counted are the ones checked.
drop_cache() {
	echo 1 >/proc/sys/vm/drop_caches
}

FAULTS=0
grep -q '^#define SNAPFS_FAULT_INJECTION 1' "$abs_top_builddir/config.h" && FAULTS=1
gate=$T/gate
[ "$FAULTS" = 1 ] && : >"$gate"
SNAPFS_FLATTEN_GATE=$gate mount_snapfs "$S" "$M" -o passthrough=off,prefetch=off

# 1. Held from before the flat file was ready: holdview's fd and mapping
# (whose pages, once faulted, stay cached: they check the bytes), and the
# shell's fd 7, unmapped, which reads the first half while the flat file
# is pending and the second half once it is ready (the path).
holder_start
hold_cmd open early "$M/vm"
exec 7<"$M/vm"
HALF=$((8 << 20))
if [ "$FAULTS" = 1 ]; then
	flat_is pending || fail "flat: $(xattr "$M/vm" user.snapfs.flat), want pending"
	dd bs=1M count=8 status=none <&7 | cmp - <(head -c "$HALF" "$R/v1") ||
		fail "the first half read while pending differs"
	[ "$(counter reads_flat)" = 0 ] || fail "read from a flat file that is not ready"
	[ "$(layer_reads)" -gt 0 ] || fail "the pending version was not read from its layers"
	rm "$gate"
else
	log "not a fault-injection build: the reads while pending are not checked"
	dd bs=1M count=8 status=none <&7 | cmp - <(head -c "$HALF" "$R/v1") ||
		fail "the first half differs"
fi
wait_for 10000 flat_is ready || fail "the flat file is not ready: $(xattr "$M/vm" user.snapfs.flat)"
drop_cache	# what the first half's read-ahead brought of the second
before=$(layer_reads)
flat0=$(counter reads_flat)
dd bs=1M status=none <&7 | cmp - <(tail -c +$((HALF + 1)) "$R/v1") ||
	fail "the second half, read once the flat file is ready, differs"
exec 7<&-
hold_cmd check early "$R/v1"
if [ "$FAULTS" = 1 ]; then
	[ "$(counter reads_flat)" -gt "$flat0" ] || fail "the early fd does not read the flat file"
	[ "$(layer_reads)" -eq "$before" ] ||
		fail "the early fd still reads the layers: $(layer_reads) > $before"
fi
hold_cmd close early	# its mapping pins the pages it checked

# 2. A new open: the flat file only.
drop_cache
before=$(layer_reads)
flat0=$(counter reads_flat)
"$VIEWCHECK" -m all "$M/vm" "$R/v1" "$R/holes" >/dev/null || fail "the flat view differs"
[ "$(counter reads_flat)" -gt "$flat0" ] || fail "a new open did not read the flat file"
[ "$(layer_reads)" -eq "$before" ] || fail "a new open read the layers: $(layer_reads) > $before"
exec 8<"$M/vm"
flat_fds_are 2 || fail "$(flat_fds) flat files open with the view open, want 2 (the flattener's and the view's)"
exec 8<&-
wait_for 3000 flat_fds_are 1 || fail "$(flat_fds) flat files open once the view is closed, want 1"

# 3. A publish, then a rollback.
hold_cmd open v1 "$M/vm"
cp "$R/v1" "$R/v2"
layer_pages "$S/.vm.4.diff.tmp" "$R/v2" 1:99 2048:0 4095:250
printf '%s %s\n' $((12 << 20)) $((4095 * PAGE)) >"$R/holes2"	# the last page is data now
mv "$S/.vm.4.diff.tmp" "$S/vm.4.diff"
"$VIEWCHECK" -m seq "$M/vm" "$R/v2" "$R/holes2" >/dev/null || fail "the published version differs"
wait_for 10000 flat_is ready || fail "the published version has no flat file"
drop_cache
flat0=$(counter reads_flat)
"$VIEWCHECK" -m all "$M/vm" "$R/v2" "$R/holes2" >/dev/null || fail "the published flat view differs"
[ "$(counter reads_flat)" -gt "$flat0" ] || fail "the published version was not read from its flat file"
hold_cmd check v1 "$R/v1"
rm "$M/vm.4.diff" || fail "rollback through the mount failed"
"$VIEWCHECK" -m seq "$M/vm" "$R/v1" "$R/holes" >/dev/null || fail "the rolled-back version differs"
wait_for 10000 flat_is ready || fail "the rolled-back version has no flat file"
"$VIEWCHECK" -m all "$M/vm" "$R/v1" "$R/holes" >/dev/null || fail "the rolled-back flat view differs"
hold_cmd check v1 "$R/v1"

# 4. The last open of each version gone: only the flattener's file of the
# current version is left.
hold_cmd close v1
holder_stop
wait_for 5000 flat_fds_are 1 || fail "$(flat_fds) flat files open with nothing open, want 1"
[ "$(counter read_errors)" = 0 ] || fail "$(counter read_errors) read errors"
umount_snapfs "$M"
[ "$(store_state "$S")" = "$state0" ] || fail "STORE changed: $(diff <(echo "$state0") <(store_state "$S"))"
# 5. A push into the page cache (prefetch=all) of a version whose flat
# file is ready takes its bytes from that file: they equal the reference.
mount_snapfs "$S" "$M" -o passthrough=off,prefetch=all
wait_for 10000 flat_is ready || fail "no flat file after a restart"
exec 7<"$M/vm"
pushed() {
	[[ "$(xattr "$M/vm" user.snapfs.prefetch 2>/dev/null)" == done* ]]
}
wait_for 10000 pushed || fail "the push did not finish: $(xattr "$M/vm" user.snapfs.prefetch)"
"$VIEWCHECK" -m seq,pread,mmap "$M/vm" "$R/v1" "$R/holes" >/dev/null ||
	fail "the pushed view differs"
exec 7<&-
umount_snapfs "$M"
[ "$(store_state "$S")" = "$state0" ] || fail "STORE changed: $(diff <(echo "$state0") <(store_state "$S"))"
log "ok: flat files serve the FUSE path"
