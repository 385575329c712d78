#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Rollback (doc/format.md §2 "Rollback", §3 "Versions"): deleting the highest diff,
# through the mount or in STORE, rolls the view back to the previous
# content under a new inode, while fds and mappings opened before keep their
# bytes. Through the mount only the highest diff may go: any other layer
# answers EBUSY with one log line naming it; the view itself and ordinary
# files answer EROFS; a refused unlink leaves STORE exactly as it was.
. ./tests/mount/lib.sh
setup

S=$T/store M=$T/mnt D=$T/store/vm1
SZ=$((48 * PAGE))
V=$M/vm1/memory.bin
EBUSY="Device or resource busy"
EROFS="Read-only file system"

view_is() { cmp -s "$V" "$1"; }
gone() { [ ! -e "$1" ]; }
there() { [ -e "$1" ]; }

# The state of STORE: names, sizes, times, modes and contents.
snapshot() {
	(
		cd "$S" || exit 1
		find . -printf '%p %y %s %T@ %C@ %m\n' | LC_ALL=C sort
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
	) >"$1" || fail "cannot list STORE"
}

# lines_naming FILE: daemon log lines that name vm1/FILE.
lines_naming() { log_count "vm1/$1"; }

mkdir -p "$D"
head -c "$SZ" /dev/urandom >"$D/memory.bin.0.base"
cp "$D/memory.bin.0.base" "$T/ref0"
cp "$T/ref0" "$T/ref1"
layer_pages "$D/memory.bin.1.diff" "$T/ref1" 1:11 2:0 47:12
cp "$T/ref1" "$T/ref2"
layer_pages "$D/memory.bin.2.diff" "$T/ref2" 2:22 30:23
cp "$T/ref2" "$T/ref3"
layer_pages "$D/memory.bin.3.diff" "$T/ref3" 1:0 30:33 31:34
head -c 5000 /dev/urandom >"$D/vmstate.bin"

mount_snapfs "$S" "$M"
cmp "$V" "$T/ref3" || fail "the initial view differs from its reference"
ino3=$(stat -c %i "$V")
holder_start
hold_cmd open v3 "$V"
exec 5<"$V"

# ---- 1. rollback through the mount ----
rm "$M/vm1/memory.bin.3.diff" || fail "unlinking the top diff through the mount failed"
[ -e "$D/memory.bin.3.diff" ] && fail "the top diff is still in STORE"
[ -e "$M/vm1/memory.bin.3.diff" ] && fail "the top diff still shows at the mount"
shows "rollback through the mount" view_is "$T/ref2"
ino2=$(stat -c %i "$V")
[ "$ino2" != "$ino3" ] || fail "rollback kept inode $ino3"
[ "$(xattr "$V" user.snapfs.chain)" = memory.bin.0.base,memory.bin.1.diff,memory.bin.2.diff ] ||
	fail "chain after rollback: $(xattr "$V" user.snapfs.chain)"
hold_cmd check v3 "$T/ref3"
cmp - "$T/ref3" <&5 || fail "an fd opened before the rollback, read after, is not the old view"
exec 5<&-

# ---- 2. rollback in STORE ----
hold_cmd open v2 "$V"
rm "$D/memory.bin.2.diff"
shows "rollback in STORE" view_is "$T/ref1"
ino1=$(stat -c %i "$V")
if [ "$ino1" = "$ino2" ] || [ "$ino1" = "$ino3" ]; then
	fail "rollback in STORE reused inode $ino1"
fi
shows "deleted diff gone" gone "$M/vm1/memory.bin.2.diff"
hold_cmd check v2 "$T/ref2"
hold_cmd check v3 "$T/ref3"

# ---- 3. refused: a middle diff, the base, the view, an ordinary file ----
cp "$T/ref1" "$T/ref2b"
layer_pages "$D/.memory.bin.2.diff.tmp" "$T/ref2b" 9:90
mv "$D/.memory.bin.2.diff.tmp" "$D/memory.bin.2.diff"
shows "republished diff" view_is "$T/ref2b"
ino2b=$(stat -c %i "$V")
snapshot "$T/before"
for f in memory.bin.1.diff memory.bin.0.base; do
	n0=$(lines_naming "$f")
	expect_err "$EBUSY" rm -f "$M/vm1/$f"
	n1=$(lines_naming "$f")
	[ "$n1" = $((n0 + 1)) ] ||
		fail "refused unlink of $f: $((n1 - n0)) log lines name it, want 1"
done
expect_err "$EROFS" rm -f "$V"
expect_err "$EROFS" rm -f "$M/vm1/vmstate.bin"
snapshot "$T/after"
diff -u "$T/before" "$T/after" || fail "a refused unlink changed STORE"
cmp "$V" "$T/ref2b" || fail "a refused unlink changed the view"
[ "$(stat -c %i "$V")" = "$ino2b" ] || fail "a refused unlink changed the inode"

# ---- 4. back to the base through the mount; the base stays ----
rm "$M/vm1/memory.bin.2.diff" || fail "unlinking the new top diff failed"
shows "second rollback" view_is "$T/ref1"
rm "$M/vm1/memory.bin.1.diff" || fail "unlinking the last diff failed"
shows "rollback to the base" view_is "$T/ref0"
[ "$(xattr "$V" user.snapfs.depth)" = 0 ] || fail "depth is not 0 after the last rollback"
expect_err "$EBUSY" rm -f "$M/vm1/memory.bin.0.base"
[ -e "$D/memory.bin.0.base" ] || fail "the base was removed"

# ---- 5. a diff published in STORE can be rolled back through the mount ----
cp "$T/ref0" "$T/ref1c"
layer_pages "$D/.memory.bin.1.diff.tmp" "$T/ref1c" 4:44
mv "$D/.memory.bin.1.diff.tmp" "$D/memory.bin.1.diff"
shows "diff published after a rollback through the mount" there "$M/vm1/memory.bin.1.diff"
shows "its content" view_is "$T/ref1c"
rm "$M/vm1/memory.bin.1.diff" || fail "unlinking a freshly published diff failed"
shows "its rollback" view_is "$T/ref0"

hold_cmd check v2 "$T/ref2"
hold_cmd check v3 "$T/ref3"
holder_stop
umount_snapfs "$M"
log "ok: ${LIVE_DELAYS[*]}"
