#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# SEEK_DATA/SEEK_HOLE on views report exactly the ranges where no layer has
# data; every reported hole reads as zero; `cp --sparse=always` of a view
# stays sparse and equal to the reference.
. ./tests/mount/lib.sh
setup

SEED=${SNAPFS_SEED:-$RANDOM}
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
"$MKSTORE" -s "$SEED" -n 16 -D 8 -S $((16 << 20)) "$T/store" "$T/ref" >"$T/mkstore.log" \
	|| fail "mkstore failed"
mount_snapfs "$T/store" "$T/mnt"

mkdir -p "$T/copy"
n=0
while read -r path size _ data _; do
	v="$T/mnt/$path"
	"$VIEWCHECK" -s "$SEED" -m seek "$v" "$T/ref/$path" "$T/ref/$path.holes" \
		|| fail "$path: holes differ"
	c="$T/copy/$n"
	cp --sparse=always "$v" "$c" || fail "$path: cp failed"
	cmp "$c" "$T/ref/$path" || fail "$path: sparse copy differs"
	# The copy allocates no more than the view's data, rounded to blocks.
	alloc=$(( $(stat -c %b "$c") * $(stat -c %B "$c") ))
	limit=$(( data + (size > 0 ? 1 : 0) * 65536 + data / 8 ))
	[ "$alloc" -le "$limit" ] || fail "$path: copy allocates $alloc bytes for $data bytes of data"
	rm -f "$c"
	n=$((n + 1))
done <"$T/ref/MANIFEST"
umount_snapfs "$T/mnt"
log "ok: $n views walked"
