#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Flatten on publish (doc/design.md §19), on XFS (reflink):
#  1. mixed modes: an fd and a mapping held from before the flat file was
#     ready (the build held back with SNAPFS_FLATTEN_GATE, fault-injection
#     builds) keep the FUSE path, an open made meanwhile reads right, and
#     once they close, new opens are served by passthrough to the flat file;
#     as the last of them closes, their version's push ends;
#  2. a flat view equals the reference (read, pread, mmap private and
#     shared, SEEK_DATA/SEEK_HOLE) without a READ request to the daemon;
#  3. the flat file is dropped when its version is superseded (publish) and
#     on rollback, and nothing of it is ever named in STORE nor left after
#     a restart;
#  4. a filesystem without the room: failed: not enough free space, one
#     line, and the FUSE path serves; with room again, an offer after the
#     wait that follows a failure (SNAPFS_FLATTEN_RETRY_MS, fault-injection
#     builds) builds it;
#  5. while the flattener is held on one build (fault-injection builds),
#     40 versions published and opened one after another leave no pile of
#     offered views: each offer lets go of the superseded versions'
#     directory fds and layers, and the newest still gets its flat file;
#  6. eight versions opened once each while the flattener is held (eight
#     VMs restored at once) all wait for it, none is deferred (the fd
#     budget has room), and all eight get their flat files;
#  7. a flat file is read into the page cache before it is ready as far
#     as its layers are cached: built over cold layers it stays cold (the
#     disk is not read for it), built over warm ones it is ready warm;
#  8. a name whose layers are deleted, and a directory deleted whole, let
#     go of their versions and flat files (which hold the layers' blocks)
#     without any lookup or listing after the deletion.
. ./tests/mount/lib.sh
require_passthrough
setup_loops
have_mkfs xfs || fail "mkfs.xfs is missing"

PAGE=4096
mkfs_loop xfs 400 "$T/x"
S=$T/x/store R=$T/ref M=$T/mnt
mkdir -p "$S" "$R"

flat_vm "$S" "$R"	# vm: a 16 MiB base with a hole, and one diff
state0=$(store_state "$S")

reads() {
	log_count "opcode: READ "
}
pt_opens() {
	log_count "passthrough open of inode"
}

gate=$T/gate
[ "$FAULTS" = 1 ] && : >"$gate"
SNAPFS_FLATTEN_GATE=$gate mount_snapfs "$S" "$M" -d

# 1. Mixed modes.
if [ "$FAULTS" = 1 ]; then
	holder_start
	hold_cmd open early "$M/vm"
	flat_is pending || fail "flat: $(xattr "$M/vm" user.snapfs.flat), want pending"
	rm "$gate"
	wait_for 10000 flat_is ready || fail "the flat file is not ready: $(xattr "$M/vm" user.snapfs.flat)"
	"$VIEWCHECK" -m seq,pread,mmap "$M/vm" "$R/v1" "$R/holes" >/dev/null ||
		fail "an open made while an early fd is held reads wrong"
	[ "$(pt_opens)" -eq 0 ] || fail "passthrough mixed with a FUSE-path open of one inode"
	hold_cmd check early "$R/v1"
	[ "$(xattr "$M/vm" user.snapfs.prefetch)" != none ] || fail "the early open was not pushed"
	hold_cmd close early
	holder_stop
	# No open will read what was pushed into the FUSE inode's cache:
	# the push ends, its pages dropped (case 9 looks at the cache).
	push_ended() { [ "$(xattr "$M/vm" user.snapfs.prefetch)" = none ]; }
	wait_for 5000 push_ended ||
		fail "the push goes on after the last FUSE-path close: $(xattr "$M/vm" user.snapfs.prefetch)"
	[ "$(stat_of flat_cache_drops)" -ge 1 ] || fail "flat_cache_drops $(stat_of flat_cache_drops)"
else
	log "not a fault-injection build: the mixed-mode case is skipped"
	wait_for 10000 flat_is ready || fail "the flat file is not ready"
fi

# 2. Served by passthrough to the flat file (the early opens are released
# asynchronously: wait until a new open is passthrough).
pt_open_now() {
	local n
	n=$(pt_opens)
	cmp -n 4096 "$M/vm" "$R/v1" && [ "$(pt_opens)" -gt "$n" ]
}
wait_for 5000 pt_open_now || fail "no passthrough open of the flat view"
before=$(reads)
"$VIEWCHECK" -m all "$M/vm" "$R/v1" "$R/holes" >/dev/null || fail "the flat view differs"
[ "$(reads)" -eq "$before" ] || fail "the flat view was read through the daemon"
flat_fds_are 1 || fail "$(flat_fds) flat files open, want 1"

# 3. Superseded by a publish, then by a rollback.
holder_start
hold_cmd open v1 "$M/vm"
cp "$R/v1" "$R/v2"
layer_pages "$S/.vm.2.diff.tmp" "$R/v2" 1:99 2048:0 4095:250
printf '%s %s\n' $((12 << 20)) $((4095 * PAGE)) >"$R/holes2"	# the last page is data now
mv "$S/.vm.2.diff.tmp" "$S/vm.2.diff"
wait_for 10000 flat_is ready || fail "the published version has no flat file"
wait_for 3000 flat_fds_are 1 || fail "$(flat_fds) flat files after the publish, want 1"
"$VIEWCHECK" -m all "$M/vm" "$R/v2" "$R/holes2" >/dev/null || fail "the published flat view differs"
hold_cmd check v1 "$R/v1"
rm "$M/vm.2.diff" || fail "rollback through the mount failed"
wait_for 10000 flat_is ready || fail "the rolled-back version has no flat file"
wait_for 3000 flat_fds_are 1 || fail "$(flat_fds) flat files after the rollback, want 1"
"$VIEWCHECK" -m all "$M/vm" "$R/v1" "$R/holes" >/dev/null || fail "the rolled-back flat view differs"
hold_cmd check v1 "$R/v1"
hold_cmd close v1
holder_stop
umount_snapfs "$M"
[ "$(store_state "$S")" = "$state0" ] || fail "STORE changed: $(diff <(echo "$state0") <(store_state "$S"))"

# A restart finds nothing to remove and flattens anew.
mount_snapfs "$S" "$M"
wait_for 10000 flat_is ready || fail "no flat file after a restart"
"$VIEWCHECK" -m seq,mmap "$M/vm" "$R/v1" "$R/holes" >/dev/null || fail "the view differs after a restart"
umount_snapfs "$M"

# 4. No room: the free-space check fails it, the FUSE path serves.
mkfs_loop xfs 300 "$T/small"
S=$T/small/store
mkdir -p "$S"
# (not cp of the diff: cp turns its page of zeros into a hole)
cp "$T/x/store/vm.0.base" "$S/"
cp "$S/vm.0.base" "$R/v1s"
layer_pages "$S/vm.1.diff" "$R/v1s" 0:17 5:0 1000:200 3071:33
avail=$(($(stat -f -c '%a * %S' "$S")))
fallocate -l $((avail - (32 << 20))) "$T/small/filler" || fail "cannot fill the small filesystem"
: >"$T/snapfs.log"
SNAPFS_FLATTEN_RETRY_MS=500 mount_snapfs "$S" "$M" -d
no_room() {
	[[ "$(xattr "$M/vm" user.snapfs.flat 2>/dev/null)" == "failed: not enough free space"* ]]
}
wait_for 10000 no_room ||
	fail "flat: $(xattr "$M/vm" user.snapfs.flat), want failed: not enough free space"
"$VIEWCHECK" -m all "$M/vm" "$R/v1s" "$R/holes" >/dev/null || fail "the view without room differs"
[ "$(reads)" -gt 0 ] || fail "the view without a flat file was not read through the daemon"
[ "$(log_count "no flat file")" -eq 1 ] || fail "want one line for the failure"
# Room again: the build is tried again at an offer once the wait after a
# failure is over (a minute, 0.5 s here), and the flat file serves.
if [ "$FAULTS" = 1 ]; then
	rm "$T/small/filler"
	offered_ready() {
		xattr "$M/vm" user.snapfs.flat >/dev/null 2>&1	# an offer
		flat_is ready
	}
	wait_for 20000 offered_ready ||
		fail "no flat file once there was room again: $(xattr "$M/vm" user.snapfs.flat)"
	"$VIEWCHECK" -m seq,mmap "$M/vm" "$R/v1s" "$R/holes" >/dev/null ||
		fail "the view differs once flattened after a failure"
	log "ok: flattened at an offer after the failure, once there was room (${WAITED_MS} ms)"
fi
umount_snapfs "$M"

# 5. A fast publisher while the flattener is held on one build.
if [ "$FAULTS" = 1 ]; then
	S=$T/x/store5
	mkdir -p "$S"
	cp "$T/x/store/vm.0.base" "$S/"
	cp "$S/vm.0.base" "$R/v5"
	layer_pages "$S/vm.1.diff" "$R/v5" 0:1
	: >"$gate"
	SNAPFS_FLATTEN_GATE=$gate mount_snapfs "$S" "$M"
	cmp -n 4096 "$M/vm" "$R/v5" || fail "the first version reads wrong"
	flat_is pending || fail "flat: $(xattr "$M/vm" user.snapfs.flat), want pending"
	store_fds() {	# the daemon's fds of STORE's directory itself
		find "/proc/$SNAPFS_PID/fd" -lname "$S" 2>/dev/null | wc -l
	}
	for i in $(seq 2 41); do
		layer_pages "$S/.vm.$i.diff.tmp" "$R/v5" "$i:$i"
		mv "$S/.vm.$i.diff.tmp" "$S/vm.$i.diff"
		wait_for 3000 cmp -s -n $(((i + 1) * PAGE)) "$M/vm" "$R/v5" ||
			fail "version $i is not served"
	done
	n=$(store_fds)
	# the table's own fd, the build held at the gate, the newest version's offer
	[ "$n" -le 3 ] || fail "the daemon holds $n fds of STORE after 40 publishes (want at most 3)"
	rm "$gate"
	wait_for 10000 flat_is ready || fail "the newest version has no flat file: $(xattr "$M/vm" user.snapfs.flat)"
	"$VIEWCHECK" -m seq,mmap "$M/vm" "$R/v5" "$R/holes" >/dev/null || fail "the newest flat view differs"
	umount_snapfs "$M"
	log "40 publishes with the flattener held: at most $n fds of STORE"

	# 6. Eight VMs restored at once.
	S=$T/x/store6
	mkdir -p "$S"
	for i in 0 1 2 3 4 5 6 7; do
		head -c $((4 << 20)) /dev/urandom >"$S/n$i.0.base"
		cp "$S/n$i.0.base" "$R/n$i"
		layer_pages "$S/n$i.1.diff" "$R/n$i" "$i:$((i + 1))" 700:9
	done
	: >"$gate"
	SNAPFS_FLATTEN_GATE=$gate mount_snapfs "$S" "$M"
	for i in 0 1 2 3 4 5 6 7; do
		cmp "$M/n$i" "$R/n$i" || fail "n$i reads wrong before its flat file"
	done
	deferred=$(awk '$1 == "flat_offers_deferred" { print $2 }' "$M/.snapfs-stats")
	[ "$deferred" = 0 ] || fail "$deferred offers deferred with the budget mostly free"
	rm "$gate"
	for i in 0 1 2 3 4 5 6 7; do
		wait_for 10000 eval '[ "$(xattr "$M/n$i" user.snapfs.flat 2>/dev/null)" = ready ]' ||
			fail "n$i has no flat file: $(xattr "$M/n$i" user.snapfs.flat)"
		cmp "$M/n$i" "$R/n$i" || fail "the flat view of n$i differs"
	done
	umount_snapfs "$M"
	log "8 versions opened while the flattener was held: all 8 flattened, none deferred"
fi

# 9. The FUSE inode's own page cache is dropped as soon as no open is left
# on the FUSE path and the flat file is ready, whichever comes last; not
# by the next open (which would hold up a restore while the kernel frees
# it). Without the push (prefetch=off), and with open_rw=private: an
# O_RDWR open stays on the FUSE path and keeps that cache, so cachestat
# can count it. The cache that O_RDWR opens leave is kept: their
# successors (a VMM started again) take the FUSE path too.
if [ "$FAULTS" = 1 ]; then
	S=$T/x/store9 R9=$T/ref9
	mkdir -p "$S" "$R9"
	flat_vm "$S" "$R9"
	cached() { "$CACHESTAT" -w "$M/vm" || fail "cachestat of $M/vm failed"; }
	drops_above() { [ "$(stat_of flat_cache_drops)" -gt "$1" ]; }
	: >"$gate"
	SNAPFS_FLATTEN_GATE=$gate mount_snapfs "$S" "$M" -o prefetch=off,open_rw=private
	# a. Ready after the last close.
	cmp "$M/vm" "$R9/v1" || fail "the view reads wrong before its flat file"
	# (O_RDONLY: before the flat file is ready it takes the FUSE path and
	# keeps the cache; an O_RDWR open here would have it kept for good)
	n=$("$CACHESTAT" "$M/vm") || fail "cachestat of $M/vm failed"
	[ "$n" -ge 2048 ] || fail "only $n pages cached after a whole read"
	rm "$gate"
	wait_for 10000 flat_is ready || fail "no flat file: $(xattr "$M/vm" user.snapfs.flat)"
	wait_for 5000 drops_above 0 || fail "a flat file ready with no open left dropped no cache"
	n=$(cached)
	[ "$n" -eq 0 ] || fail "$n pages of the FUSE inode still cached once its flat file was ready"
	log "ok: the cache of a version closed before its flat file was ready is dropped at ready"
	# b. The last close after ready.
	: >"$gate"
	cp "$R9/v1" "$R9/v2"
	layer_pages "$S/.vm.2.diff.tmp" "$R9/v2" 5:77 3000:78
	mv "$S/.vm.2.diff.tmp" "$S/vm.2.diff"
	wait_for 10000 eval '[ "$(xattr "$M/vm" user.snapfs.depth 2>/dev/null)" = 2 ]' ||
		fail "the publish is not seen"
	holder_start
	hold_cmd open held "$M/vm"
	hold_cmd check held "$R9/v2"
	rm "$gate"
	wait_for 10000 flat_is ready || fail "no flat file: $(xattr "$M/vm" user.snapfs.flat)"
	d=$(stat_of flat_cache_drops)
	# (an O_RDONLY open joins the held ones on the FUSE path, keep_cache)
	n=$("$CACHESTAT" "$M/vm") || fail "cachestat of $M/vm failed"
	[ "$n" -ge 2048 ] || fail "only $n pages cached while a FUSE-path open holds the version"
	hold_cmd close held
	holder_stop
	wait_for 5000 drops_above "$d" || fail "the last FUSE-path close dropped no cache"
	n=$(cached)
	[ "$n" -eq 0 ] || fail "$n pages of the FUSE inode still cached after its last FUSE-path close"
	"$VIEWCHECK" -m seq,pread,mmap "$M/vm" "$R9/v2" "$R9/holes" >/dev/null ||
		fail "the view reads wrong once its cache was dropped"
	log "ok: the cache of a version held until after its flat file was ready is dropped at the last close"
	# c. O_RDWR opens (a VMM's private mapping) never go passthrough: a
	# restarted VMM reads the cache they leave, which stays.
	d=$(stat_of flat_cache_drops)
	"$RWPROBE" "$M/vm" "$R9/v2" >"$T/rwprobe.out" ||
		fail "rwprobe: $(grep -v '^ok' "$T/rwprobe.out" | head -n 3)"
	sleep 1	# a drop would be done by now
	[ "$(stat_of flat_cache_drops)" -eq "$d" ] || fail "the cache of an O_RDWR open was dropped"
	n=$(cached)
	[ "$n" -ge 2048 ] || fail "only $n pages cached after an O_RDWR open mapped the version"
	# d. The same for an O_RDWR open closed before the flat file is ready.
	: >"$gate"
	cp "$R9/v2" "$R9/v3"
	layer_pages "$S/.vm.3.diff.tmp" "$R9/v3" 9:79
	mv "$S/.vm.3.diff.tmp" "$S/vm.3.diff"
	wait_for 10000 eval '[ "$(xattr "$M/vm" user.snapfs.depth 2>/dev/null)" = 3 ]' ||
		fail "the publish is not seen"
	"$RWPROBE" "$M/vm" "$R9/v3" >"$T/rwprobe.out" ||
		fail "rwprobe: $(grep -v '^ok' "$T/rwprobe.out" | head -n 3)"
	d=$(stat_of flat_cache_drops)
	rm "$gate"
	wait_for 10000 flat_is ready || fail "no flat file: $(xattr "$M/vm" user.snapfs.flat)"
	sleep 1
	[ "$(stat_of flat_cache_drops)" -eq "$d" ] ||
		fail "the cache an O_RDWR open left was dropped when the flat file was ready"
	n=$(cached)
	[ "$n" -ge 2048 ] || fail "only $n pages cached once ready after an O_RDWR open"
	umount_snapfs "$M"
	log "ok: the cache an O_RDWR open leaves stays, also across the flat file's ready"
fi

# 7. Read in as far as the layers are cached.
S=$T/x/store7 R7=$T/ref7
mkdir -p "$S" "$R7"
flat_vm "$S" "$R7"
sync "$S"/vm.*
for f in "$S"/vm.*; do
	dd if="$f" iflag=nocache count=0 status=none || fail "cannot drop $f from the page cache"
done
flat_res() {	# bytes of the daemon's flat file in STORE in the page cache
	local fd
	fd=$(flat_fd_list | head -n 1)
	[ -n "$fd" ] && fincore -b -n -o RES "$fd"
}
warmed() {
	awk '$1 == "flat_warmed_bytes" { print $2 }' "$M/.snapfs-stats"
}
mount_snapfs "$S" "$M"
wait_for 10000 flat_is ready || fail "no flat file over cold layers: $(xattr "$M/vm" user.snapfs.flat)"
res=$(flat_res) || fail "no flat file open in the daemon"
[ "$res" -lt $((1 << 20)) ] || fail "a flat file over cold layers was read in: $res bytes cached"
[ "$(warmed)" = 0 ] || fail "flat_warmed_bytes $(warmed) over cold layers, want 0"
cp "$R7/v1" "$R7/v2"
layer_pages "$S/.vm.2.diff.tmp" "$R7/v2" 7:3 2000:9
page_cache_hold		# from warm layers to the read-in checked
cat "$S/vm.0.base" "$S/vm.1.diff" >/dev/null
mv "$S/.vm.2.diff.tmp" "$S/vm.2.diff"
wait_for 10000 eval '[ "$(xattr "$M/vm" user.snapfs.depth 2>/dev/null)" = 2 ]' ||
	fail "the publish is not seen"
wait_for 10000 flat_is ready || fail "no flat file over warm layers: $(xattr "$M/vm" user.snapfs.flat)"
wait_for 3000 flat_fds_are 1 || fail "$(flat_fds) flat files after the publish, want 1"
res=$(flat_res) || fail "no flat file open in the daemon"
# the base's 12 MiB of data and the diffs' pages; its 4 MiB hole is not read
[ "$res" -ge $((12 << 20)) ] ||
	fail "a flat file over warm layers is ready with only $res bytes cached" \
		"(flat_warmed_bytes $(warmed); flat files: $(flat_fd_list | tr '\n' ' ');" \
		"layers cached: $(fincore -b -n -o RES "$S"/vm.* | tr '\n' ' '))"
[ "$(warmed)" -ge $((12 << 20)) ] || fail "flat_warmed_bytes $(warmed), want at least 12 MiB"
page_cache_release
"$VIEWCHECK" -m all "$M/vm" "$R7/v2" "$R7/holes" >/dev/null || fail "the flat view read in differs"
umount_snapfs "$M"
log "a flat file over warm layers is ready with $((res >> 20)) MiB cached, over cold ones with none"

# 8. Deleted names and directories let go of their flat files.
S=$T/x/store8
mkdir -p "$S/vmA" "$S/vmB" "$R/8A" "$R/8B"
flat_vm "$S/vmA" "$R/8A"
flat_vm "$S/vmB" "$R/8B"
mount_snapfs "$S" "$M"
for d in vmA vmB; do
	wait_for 10000 eval '[ "$(xattr "$M/$d/vm" user.snapfs.flat 2>/dev/null)" = ready ]' ||
		fail "$d has no flat file: $(xattr "$M/$d/vm" user.snapfs.flat)"
done
[ "$(flat_fds "$S/vmA")" -eq 1 ] && [ "$(flat_fds "$S/vmB")" -eq 1 ] ||
	fail "want one flat file in each directory: $(flat_fds "$S/vmA") and $(flat_fds "$S/vmB")"
alive() {
	awk '$1 == "versions_alive" { print $2 }' "$M/.snapfs-stats"
}
rm "$S/vmA"/vm.*
wait_for 5000 eval '[ "$(flat_fds "$S/vmA")" -eq 0 ]' ||
	fail "the flat file of a name whose layers were deleted is still open"
rm -rf "$S/vmB"
wait_for 5000 eval '[ "$(flat_fds "$S/vmB")" -eq 0 ]' ||
	fail "the flat file of a deleted directory is still open"
wait_for 5000 eval '[ "$(alive)" -eq 0 ]' || fail "versions_alive $(alive) after the deletions, want 0"
umount_snapfs "$M"
log "deleted names and directories let go of their flat files with no lookup"
log "ok"
