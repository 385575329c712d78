#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Seeded random stores (dozens of chains, depth 0-16, sizes from 1 byte to
# 64 MiB, dense and sparse bases) mounted for real: every view must equal the
# plain merge mkstore computed from its own model, byte for byte, and its
# size and xattrs must match the manifest.
. ./tests/mount/lib.sh
setup

SEED=${SNAPFS_SEED:-$RANDOM}
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
"$MKSTORE" -s "$SEED" -n 36 -D 16 -S $((64 << 20)) "$T/store" "$T/ref" >"$T/mkstore.log" \
	|| fail "mkstore failed"
# No background compaction: the chains must stay as the manifest lists them.
mount_snapfs "$T/store" "$T/mnt" -o compact=off

n=0
while read -r path size depth data chain; do
	v="$T/mnt/$path"
	[ "$(stat -c %s "$v")" = "$size" ] || fail "$path: size $(stat -c %s "$v"), want $size"
	got=$(getfattr --only-values -n user.snapfs.chain "$v") || fail "$path: no chain xattr"
	[ "$got" = "$chain" ] || fail "$path: chain '$got', want '$chain'"
	got=$(getfattr --only-values -n user.snapfs.depth "$v")
	[ "$got" = "$depth" ] || fail "$path: depth $got, want $depth"
	got=$(getfattr --only-values -n user.snapfs.data_bytes "$v")
	[ "$got" = "$data" ] || fail "$path: data_bytes $got, want $data"
	"$VIEWCHECK" -s "$SEED" -m seq,pread "$v" "$T/ref/$path" || fail "$path: content differs"
	n=$((n + 1))
done <"$T/ref/MANIFEST"
[ "$n" -ge 30 ] || fail "only $n layered files checked"

# Ordinary entries that mkstore left beside the layers, as listed in PLAIN.
np=0
while read -r kind path arg; do
	case "$kind" in
	f) cmp "$T/ref/$path" "$T/mnt/$path" || fail "plain file $path differs" ;;
	l) [ "$(readlink "$T/mnt/$path")" = "$arg" ] || fail "symlink $path: wrong target" ;;
	d) [ -d "$T/mnt/$path" ] || fail "directory $path missing" ;;
	esac
	np=$((np + 1))
done <"$T/ref/PLAIN"
[ "$np" -gt 0 ] || fail "no plain entries checked"

umount_snapfs "$T/mnt"
log "ok: $n views checked"
