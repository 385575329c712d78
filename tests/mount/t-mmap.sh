#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# mmap of views as a VMM does it: MAP_PRIVATE read/write mappings faulted in
# random order, private writes that must never reach the file, and shared
# read-only mappings; every page is compared with the reference merge.
. ./tests/mount/lib.sh
setup

SEED=${SNAPFS_SEED:-$RANDOM}
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
"$MKSTORE" -s "$SEED" -n 12 -D 16 -S $((32 << 20)) "$T/store" "$T/ref" >"$T/mkstore.log" \
	|| fail "mkstore failed"
mount_snapfs "$T/store" "$T/mnt"

n=0
while read -r path _; do
	"$VIEWCHECK" -s "$SEED" -m mmap,mmapshared "$T/mnt/$path" "$T/ref/$path" \
		|| fail "$path: mapped content differs"
	n=$((n + 1))
done <"$T/ref/MANIFEST"

# A second mount must show the original bytes: private writes stayed private.
umount_snapfs "$T/mnt"
mount_snapfs "$T/store" "$T/mnt"
while read -r path _; do
	cmp "$T/mnt/$path" "$T/ref/$path" || fail "$path changed after private writes"
done <"$T/ref/MANIFEST"
umount_snapfs "$T/mnt"
log "ok: $n views mapped"
