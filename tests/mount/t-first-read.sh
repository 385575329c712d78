#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Reads before the map (doc/design.md §5.1): an open of a version whose map
# is not built yet returns at once and its reads are served from the
# layers' extents at the bytes read. With the build held back
# (SNAPFS_BUILD_GATE, fault-injection builds):
#  1. reads (sequential, pread, mmap) equal the plain merge of the layers,
#     the test's own reference, and are counted as reads_probed;
#  2. SEEK_DATA/SEEK_HOLE waits for the map, then answers right;
#  3. once the map is there, every mode reads right, nothing more is
#     probed, and no error was logged.
# A dense diff is still refused at the open (EIO, one line naming it).
# STORE's root is indexed as the daemon starts, before any lookup: the
# staging file of an interrupted compaction left in it is removed with
# nothing asked of the mount (the first look at a directory removes them).
. ./tests/mount/lib.sh
setup

S=$T/store R=$T/ref M=$T/mnt
mkdir -p "$S" "$R"
craft_chain "$S" "$R"
V=crafted/disk.img

counter() {	# counter NAME: its value in MNT/.snapfs-stats
	awk -v n="$1" '$1 == n { print $2 }' "$M/.snapfs-stats"
}

gate=$T/gate
[ "$FAULTS" = 1 ] && : >"$gate"
SNAPFS_BUILD_GATE=$gate mount_snapfs "$S" "$M"

if [ "$FAULTS" = 1 ]; then
	# 1. Served while the map is held back.
	"$VIEWCHECK" -m seq,pread,mmap "$M/$V" "$R/$V" "$R/$V.holes" >/dev/null ||
		fail "reads before the map differ from the reference"
	probed=$(counter reads_probed)
	[ "${probed:-0}" -gt 0 ] || fail "no read was served before the map (reads_probed=$probed)"
	log "$probed reads served before the map"

	# 2. lseek waits for the map.
	"$VIEWCHECK" -m seek "$M/$V" "$R/$V" "$R/$V.holes" >/dev/null &
	seeker=$!
	sleep 0.3
	kill -0 "$seeker" 2>/dev/null || fail "SEEK_DATA/SEEK_HOLE answered before the map"
	rm "$gate"
	wait "$seeker" || fail "SEEK_DATA/SEEK_HOLE differ from the reference"
else
	log "not a fault-injection build: reads before the map are not held"
fi

# 3. With the map.
check_views "$M" "$R"
after=$(counter reads_probed)
"$VIEWCHECK" -m seq,pread,mmap,seek "$M/$V" "$R/$V" "$R/$V.holes" >/dev/null ||
	fail "reads with the map differ from the reference"
[ "$(counter reads_probed)" = "$after" ] || fail "reads probed once the map was built"
[ "$(counter read_errors)" = 0 ] || fail "read errors: $(counter read_errors)"
umount_snapfs "$M"
grep -E 'unusable|cannot map' "$T/snapfs.log" && fail "errors logged"

# A dense diff is refused at the open, as ever: EIO, one line.
mk_sparse "$S/bad.0.base" $((64 * PAGE))
head -c $((64 * PAGE)) /dev/urandom >"$S/bad.1.diff"
mk_sparse "$S/bad.2.diff" $((64 * PAGE))
write_page "$S/bad.2.diff" 3 7
mount_snapfs "$S" "$M"
expect_err "Input/output error" cat "$M/bad"
expect_err "Input/output error" cat "$M/bad"
"$VIEWCHECK" -m seq,pread "$M/$V" "$R/$V" "$R/$V.holes" >/dev/null ||
	fail "a good chain next to a bad one reads wrong"
umount_snapfs "$M"
[ "$(grep -c 'bad.1.diff has no holes' "$T/snapfs.log")" = 1 ] ||
	fail "want one line naming bad.1.diff: $(cat "$T/snapfs.log")"

staging=$S/.snapfs-compact.0123456789abcdef.4242
: >"$staging"
mount_snapfs "$S" "$M"
wait_for 5000 eval '[ ! -e "$staging" ]' ||
	fail "the root was not indexed at the start: $staging is still there"
umount_snapfs "$M"
log "the root indexed at the start: its staging file went in $WAITED_MS ms, no lookup asked"
log "ok"
