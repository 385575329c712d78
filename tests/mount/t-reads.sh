#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Reads through ordinary tools and under concurrency: sha256sum, dd with odd
# block sizes, the last partial page with xxd, and several readers on one
# view and on different views at once, all against the reference merge.
# Once per way of answering a read (read_reply=auto gathers where io_uring
# works, splice, mmap); the counters must show that way was taken.
. ./tests/mount/lib.sh
setup

SEED=${SNAPFS_SEED:-$RANDOM}
log "seed $SEED (rerun with SNAPFS_SEED=$SEED)"
"$MKSTORE" -s "$SEED" -n 10 -D 16 -S $((24 << 20)) "$T/store" "$T/ref" >"$T/mkstore.log" \
	|| fail "mkstore failed"
# counter NAME: the counter NAME of the mount.
counter() {
	awk -v n="$1" '$1 == n { print $2 }' "$T/mnt/.snapfs-stats"
}

for mode in auto splice mmap; do
	log "read_reply=$mode"
	# No push: every read must reach the reply path under test (a push
	# of whole windows can cache a small view before the first read;
	# pushed views are t-prefetch's).
	mount_snapfs "$T/store" "$T/mnt" -o read_reply=$mode,prefetch=off

	while read -r path size _; do
		v="$T/mnt/$path" r="$T/ref/$path"
		a=$(sha256sum <"$v" | cut -d' ' -f1)
		b=$(sha256sum <"$r" | cut -d' ' -f1)
		[ "$a" = "$b" ] || fail "$path: sha256 differs"
		cmp <(dd if="$v" bs=12289 status=none) "$r" || fail "$path: dd bs=12289 differs"
		if [ "$size" -gt 0 ]; then
			tail=$(( size > 100 ? size - 100 : 0 ))
			cmp <(xxd -s "$tail" "$v") <(xxd -s "$tail" "$r") || fail "$path: tail differs"
		fi
	done <"$T/ref/MANIFEST"

	# Concurrent readers: the same view four times and every view at once.
	first=$(head -n 1 "$T/ref/MANIFEST" | cut -d' ' -f1)
	pids=()
	for i in 1 2 3 4; do
		"$VIEWCHECK" -s "$((SEED + i))" -m pread,mmap "$T/mnt/$first" "$T/ref/$first" \
			>"$T/conc.$i.log" 2>&1 &
		pids+=($!)
	done
	while read -r path _; do
		"$VIEWCHECK" -s "$SEED" -m pread "$T/mnt/$path" "$T/ref/$path" >>"$T/conc.all.log" 2>&1 &
		pids+=($!)
	done <"$T/ref/MANIFEST"
	for p in "${pids[@]}"; do
		wait "$p" || fail "a concurrent reader saw wrong bytes (see conc.*.log)"
	done
	case $mode in
	auto)	want=reads_gather
		# test_gather skips (77) where no io_uring can be had
		"$abs_top_builddir/tests/unit/test_gather" >/dev/null 2>&1 ||
			{ log "no io_uring here: auto splices"; want=reads_splice; } ;;
	splice)	[ "$(counter reads_gather)" = 0 ] || fail "splice: reads were gathered"
		[ "$(counter reads_mmap)" = 0 ] || fail "splice: reads came from maps"
		want=reads_splice ;;
	mmap)	want=reads_mmap ;;
	esac
	[ "$(counter "$want")" -gt 0 ] || fail "$mode: no read answered by $want"
	umount_snapfs "$T/mnt"
done
log "ok"
