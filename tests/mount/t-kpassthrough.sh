#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Kernel FUSE passthrough (doc/design.md §19): a view of one layer and a
# plain file are served by the kernel from their backing file (no READ
# request reaches the daemon) and read byte for byte like the reference
# (read, pread, mmap private and shared, SEEK_DATA/SEEK_HOLE); a publish
# turns the view layered (new opens take the FUSE path: -o flatten=off
# here), a rollback turns it back (new opens are passthrough again), and an
# fd and a mapping held across both keep their bytes. A version compacted
# to one layer under a FUSE-path open lets go of its own page cache when
# that open closes (its later opens are passthrough). A daemon without
# CAP_SYS_ADMIN serves everything on the FUSE path, with one log line.
. ./tests/mount/lib.sh
require_passthrough
setup

PAGE=4096
S=$T/store R=$T/ref M=$T/mnt
mkdir -p "$S" "$R"

# one: 8 MiB, random but for its last 2 MiB (a hole); plain.bin: random.
head -c $((6 << 20)) /dev/urandom >"$S/one.0.base"
truncate -s 8M "$S/one.0.base"
cp "$S/one.0.base" "$R/one.v1"
printf '%s %s\n' $((6 << 20)) $((8 << 20)) >"$R/one.holes"
head -c $((3 << 20)) /dev/urandom >"$S/plain.bin"

reads() {	# READ requests the daemon has logged so far
	log_count "opcode: READ "
}

depth_is() {	# depth_is N: user.snapfs.depth of one is N
	[ "$(xattr "$M/one" user.snapfs.depth 2>/dev/null)" = "$1" ]
}

mount_snapfs "$S" "$M" -d -o flatten=off
"$VIEWCHECK" -m all "$M/one" "$R/one.v1" "$R/one.holes" >/dev/null ||
	fail "the one-layer view differs from its base"
cmp "$M/plain.bin" "$S/plain.bin" || fail "the plain file differs"
[ "$(reads)" -eq 0 ] || fail "$(reads) READ request(s) reached the daemon under passthrough"
[ "$(log_count "passthrough open of inode")" -ge 2 ] || fail "no passthrough open was logged"
[ "$(xattr "$M/one" user.snapfs.flat)" = none ] || fail "a one-layer view has a flat file"

# Held across the publish and the rollback: an fd and its private mapping.
holder_start
hold_cmd open v1 "$M/one"

# Publish a diff: the view is layered now, new opens take the FUSE path.
cp "$R/one.v1" "$R/one.v2"
layer_pages "$S/.one.1.diff.tmp" "$R/one.v2" 3:90 700:0 1500:195
mv "$S/.one.1.diff.tmp" "$S/one.1.diff"
shows "publish" depth_is 1
"$VIEWCHECK" -m all "$M/one" "$R/one.v2" "$R/one.holes" >/dev/null ||
	fail "the published view differs from its reference"
[ "$(reads)" -gt 0 ] || fail "the layered view was not read through the daemon"
hold_cmd check v1 "$R/one.v1"

# Roll back through the mount: one layer again, passthrough again.
rm "$M/one.1.diff" || fail "rollback through the mount failed"
before=$(reads)
"$VIEWCHECK" -m all "$M/one" "$R/one.v1" "$R/one.holes" >/dev/null ||
	fail "the rolled-back view differs from its base"
[ "$(reads)" -eq "$before" ] || fail "the rolled-back view was read through the daemon"
hold_cmd check v1 "$R/one.v1"
hold_cmd close v1
holder_stop
umount_snapfs "$M"

# A compaction leaves a version with one layer while a FUSE-path open holds
# it: at its close the version's own page cache, which no later open
# (passthrough to the new base) reads, is dropped in the background. On
# this filesystem there are no flat files (no reflink), and O_RDWR opens
# (open_rw=private) stay on the FUSE path with that cache, for cachestat.
S3=$T/store3 R3=$T/ref3
mkdir -p "$S3" "$R3"
head -c $((8 << 20)) /dev/urandom >"$S3/vm.0.base"
cp "$S3/vm.0.base" "$R3/v"
layer_pages "$S3/vm.1.diff" "$R3/v" 1:11 1000:12
layer_pages "$S3/vm.2.diff" "$R3/v" 2:13 1500:14
: >"$R3/holes"	# no hole
drops() { stat_of flat_cache_drops; }
vm_depth_is() { [ "$(xattr "$M/vm" user.snapfs.depth 2>/dev/null)" = "$1" ]; }
# compact_rate=1: the copy of the 8 MiB base takes seconds, after the open
mount_snapfs "$S3" "$M" -o compact_threshold=1,keep_diffs=0,compact_rate=1,prefetch=off,open_rw=private
holder_start
hold_cmd open held "$M/vm"
hold_cmd check held "$R3/v"
wait_for 60000 vm_depth_is 0 || fail "the chain was not compacted to one layer"
n=$("$CACHESTAT" "$M/vm") || fail "cachestat failed"	# joins the FUSE path
[ "$n" -ge 1024 ] || fail "only $n pages cached while a FUSE-path open holds the version"
d=$(drops)
hold_cmd check held "$R3/v"
hold_cmd close held
holder_stop
drops_above() { [ "$(drops)" -gt "$1" ]; }
wait_for 5000 drops_above "$d" || fail "no drop at the last FUSE-path close of a version compacted to one layer"
n=$("$CACHESTAT" -w "$M/vm") || fail "cachestat failed"
[ "$n" -eq 0 ] || fail "$n pages of the compacted version still cached after its last FUSE-path close"
before=$(reads)
"$VIEWCHECK" -m all "$M/vm" "$R3/v" "$R3/holes" >/dev/null || fail "the compacted view differs"
[ "$(reads)" -eq "$before" ] || fail "the compacted view was read through the daemon"
umount_snapfs "$M"
log "ok: a version compacted to one layer lets go of its FUSE page cache at its last FUSE-path close"

# Without CAP_SYS_ADMIN: the daemon is handed a /dev/fuse fd mounted for
# it (it could not mount itself), and falls back with one line.
command -v setpriv >/dev/null || fail "setpriv (util-linux) is missing"
: >"$T/snapfs.log"
mkdir -p "$T/mnt2"
exec 9<>/dev/fuse || fail "cannot open /dev/fuse"
mount -i -t fuse.snapfs -o fd=9,rootmode=40000,user_id=0,group_id=0,ro snapfs-nocap "$T/mnt2" ||
	fail "mounting a /dev/fuse fd failed"
MOUNTS+=("$T/mnt2")
setpriv --bounding-set -sys_admin "$SNAPFS" -f -d "$S" /dev/fd/9 >>"$T/snapfs.log" 2>&1 &
nocap=$!
PIDS+=("$nocap")
exec 9>&-
wait_for 5000 grep -q "passthrough: off" "$T/snapfs.log" ||
	fail "the daemon without CAP_SYS_ADMIN logged no fallback"
"$VIEWCHECK" -m all "$T/mnt2/one" "$R/one.v1" "$R/one.holes" >/dev/null ||
	fail "without CAP_SYS_ADMIN the view differs from its base"
cmp "$T/mnt2/plain.bin" "$S/plain.bin" || fail "without CAP_SYS_ADMIN the plain file differs"
[ "$(log_count "passthrough")" -eq 1 ] ||
	fail "want one passthrough line, got: $(grep passthrough "$T/snapfs.log")"
[ "$(log_count "passthrough: off" "CAP_SYS_ADMIN")" -eq 1 ] || fail "the line does not name CAP_SYS_ADMIN"
[ "$(reads)" -gt 0 ] || fail "no READ reached the daemon without passthrough"
umount "$T/mnt2" || fail "umount of the fd mount failed"
wait "$nocap" || fail "the daemon without CAP_SYS_ADMIN exited $?"
log "ok"
