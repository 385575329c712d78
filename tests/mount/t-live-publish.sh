#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A live store (doc/format.md §2 "Publishing", §3 "Versions"), with default options:
# the daemon must notice changes in STORE by itself. A diff renamed into
# place, a new base, deleted layers, a layer rewritten in place and a new
# snapshot directory each show through the mount within LIVE_LIMIT_MS; every
# change of content is a new inode number, and an fd and a MAP_PRIVATE
# mapping opened before keep reading the old bytes, byte-exact, even after
# the layer files they were made of are deleted from STORE. Without inotify
# (-o nowatch) short revalidation timeouts keep the mount as prompt.
. ./tests/mount/lib.sh
setup

S=$T/store M=$T/mnt D=$T/store/vm1
SZ=$((64 * PAGE))
V=$M/vm1/memory.bin

view_is() { cmp -s "$V" "$1"; }
gone() { [ ! -e "$1" ]; }
there() { [ -e "$1" ]; }
# listed DIR NAME: readdir of DIR has NAME.
listed() {
	local e
	for e in "$1"/*; do
		[ "${e##*/}" = "$2" ] && return 0
	done
	return 1
}

mkdir -p "$D"
head -c "$SZ" /dev/urandom >"$D/memory.bin.0.base"
cp "$D/memory.bin.0.base" "$T/ref1"
layer_pages "$D/memory.bin.1.diff" "$T/ref1" 3:17 10:0 63:200

mount_snapfs "$S" "$M"
cmp "$V" "$T/ref1" || fail "the initial view differs from its reference"
ino1=$(stat -c %i "$V")
is_synthetic_ino "$ino1" || fail "view inode $ino1 is not synthetic"

# Version 1 held: an fd and a mapping (holdview), and a shell fd not read yet.
holder_start
hold_cmd open v1 "$V"
[ "$HOLD_REPLY" = "$ino1" ] || fail "held view has inode $HOLD_REPLY, stat says $ino1"
exec 5<"$V"

# ---- 1. a diff renamed into place in STORE ----
cp "$T/ref1" "$T/ref2"
layer_pages "$D/.memory.bin.2.diff.tmp" "$T/ref2" 0:1 3:0 40:99
mv "$D/.memory.bin.2.diff.tmp" "$D/memory.bin.2.diff"
shows "published diff" view_is "$T/ref2"
ino2=$(stat -c %i "$V")
[ "$ino2" != "$ino1" ] || fail "publishing a diff kept inode $ino1"
is_synthetic_ino "$ino2" || fail "view inode $ino2 is not synthetic"
chain=$(xattr "$V" user.snapfs.chain)
[ "$chain" = memory.bin.0.base,memory.bin.1.diff,memory.bin.2.diff ] ||
	fail "chain after publishing: $chain"
hold_cmd chain v1
[ "$HOLD_REPLY" = memory.bin.0.base,memory.bin.1.diff ] ||
	fail "the fd opened before shows chain $HOLD_REPLY"
hold_cmd check v1 "$T/ref1"
cmp - "$T/ref1" <&5 || fail "an fd opened before the publish, read after, is not the old view"
exec 5<&-
hold_cmd open v2 "$V"
[ "$HOLD_REPLY" = "$ino2" ] || fail "a new open has inode $HOLD_REPLY, stat says $ino2"
exec 5<"$V"

# ---- 2. a new base supersedes everything below it ----
head -c "$SZ" /dev/urandom >"$D/.memory.bin.5.base.tmp"
cp "$D/.memory.bin.5.base.tmp" "$T/ref5"
mv "$D/.memory.bin.5.base.tmp" "$D/memory.bin.5.base"
shows "new base" view_is "$T/ref5"
ino5=$(stat -c %i "$V")
if [ "$ino5" = "$ino2" ] || [ "$ino5" = "$ino1" ]; then
	fail "a new base kept an old inode ($ino5)"
fi
[ "$(xattr "$V" user.snapfs.chain)" = memory.bin.5.base ] ||
	fail "chain after a new base: $(xattr "$V" user.snapfs.chain)"
[ "$(xattr "$V" user.snapfs.depth)" = 0 ] || fail "depth after a new base is not 0"
for f in memory.bin.0.base memory.bin.1.diff memory.bin.2.diff; do
	cmp "$M/vm1/$f" "$D/$f" || fail "superseded layer $f is not visible as it is"
done
# A late diff below the base is superseded too; one above it counts.
cp "$T/ref2" "$T/ref4"
layer_pages "$D/.memory.bin.4.diff.tmp" "$T/ref4" 5:5
mv "$D/.memory.bin.4.diff.tmp" "$D/memory.bin.4.diff"
cp "$T/ref5" "$T/ref6"
layer_pages "$D/.memory.bin.6.diff.tmp" "$T/ref6" 7:70 8:0
mv "$D/.memory.bin.6.diff.tmp" "$D/memory.bin.6.diff"
shows "diff on the new base" view_is "$T/ref6"
[ "$(xattr "$V" user.snapfs.chain)" = memory.bin.5.base,memory.bin.6.diff ] ||
	fail "chain on the new base: $(xattr "$V" user.snapfs.chain)"
ino6=$(stat -c %i "$V")
[ "$ino6" != "$ino5" ] || fail "a diff on the new base kept inode $ino5"
hold_cmd check v1 "$T/ref1"
hold_cmd check v2 "$T/ref2"

# ---- 3. every layer of the old versions deleted from STORE ----
rm "$D/memory.bin.0.base" "$D/memory.bin.1.diff" "$D/memory.bin.2.diff" "$D/memory.bin.4.diff"
shows "deleted layers" gone "$M/vm1/memory.bin.0.base"
for f in memory.bin.1.diff memory.bin.2.diff memory.bin.4.diff; do
	[ -e "$M/vm1/$f" ] && fail "deleted layer $f still shows"
done
cmp "$V" "$T/ref6" || fail "deleting superseded layers changed the view"
[ "$(stat -c %i "$V")" = "$ino6" ] || fail "deleting superseded layers changed the inode"
hold_cmd check v1 "$T/ref1"
hold_cmd check v2 "$T/ref2"
cmp - "$T/ref2" <&5 || fail "a held fd does not read its version after its layers were deleted"
exec 5<&-
hold_cmd close v1
hold_cmd close v2

# ---- 4. a published layer rewritten in place: a producer error ----
hold_cmd open v6 "$V"
cp "$T/ref6" "$T/ref6b"
layer_pages "$D/memory.bin.6.diff" "$T/ref6b" 20:99
shows "layer rewritten in place" view_is "$T/ref6b"
[ "$(stat -c %i "$V")" != "$ino6" ] || fail "a layer rewritten in place kept inode $ino6"
[ "$(log_count memory.bin.6.diff "changed after it was published")" -ge 1 ] ||
	fail "no log line names the layer rewritten in place"
hold_cmd close v6

# ---- 5. a new snapshot directory ----
[ -e "$M/vmNew" ] && fail "vmNew exists before it is made"	# a negative entry
ls "$M" >/dev/null
mkdir "$S/vmNew"
shows "new directory" there "$M/vmNew"
listed "$M" vmNew || fail "the listing of the mount lacks vmNew"
[ -e "$M/vmNew/memory.bin" ] && fail "vmNew/memory.bin exists before its base"
head -c "$SZ" /dev/urandom >"$T/refN"
cp "$T/refN" "$S/vmNew/.memory.bin.0.base.tmp"
mv "$S/vmNew/.memory.bin.0.base.tmp" "$S/vmNew/memory.bin.0.base"
shows "base in a new directory" cmp -s "$M/vmNew/memory.bin" "$T/refN"
listed "$M/vmNew" memory.bin || fail "the listing of vmNew lacks memory.bin"

holder_stop
umount_snapfs "$M"

# ---- 6. without inotify (-o nowatch): short revalidation timeouts ----
mount_snapfs "$S" "$M" -o nowatch,revalidate=0.03
cmp "$V" "$T/ref6b" || fail "nowatch: the view differs"
ls -l "$M/vm1" >/dev/null	# entries cached
cp "$T/ref6b" "$T/ref7"
layer_pages "$D/.memory.bin.7.diff.tmp" "$T/ref7" 50:5
mv "$D/.memory.bin.7.diff.tmp" "$D/memory.bin.7.diff"
shows "nowatch: published diff" view_is "$T/ref7"
shows "nowatch: its layer file" there "$M/vm1/memory.bin.7.diff"
rm "$D/memory.bin.7.diff"
shows "nowatch: rollback" view_is "$T/ref6b"
shows "nowatch: deleted layer" gone "$M/vm1/memory.bin.7.diff"
umount_snapfs "$M"
log "ok: ${LIVE_DELAYS[*]}"
