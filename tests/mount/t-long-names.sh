#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Names up to NAME_MAX compact (issue 9): a NAME of 248 bytes makes every
# layer name (NAME.<seq>.base, NAME.<seq>.diff, one-digit seqs) exactly
# 255 bytes, the longest a name can be; the compactor's staging files must
# still fit. The chain (a base and 3 diffs) is compacted by the daemon
# (compact_threshold=1, keep_diffs=0) and, in a second directory, by
# snapfs-compact; after each, the new base NAME.3.base is the whole chain,
# no diff or staging file is left, and the view reads exactly like the
# reference merge (viewcheck: sequential, pread, mmap, SEEK_DATA/HOLE).
. ./tests/mount/lib.sh
setup_loops

SNAPFS_COMPACT="$abs_top_builddir/snapfs-compact"
[ -x "$SNAPFS_COMPACT" ] || fail "$SNAPFS_COMPACT is not built"

if have_mkfs xfs; then
	mkfs_loop xfs 512 "$T/fs" -m reflink=1
	FS=xfs
else
	mount_tmpfs "$T/fs" 128
	FS=tmpfs
fi
S=$T/fs/store
R=$T/ref
mkdir -p "$S/daemon" "$S/tool" "$R"

NAME=$(printf 'n%.0s' $(seq 244))-max	# 248 bytes
[ ${#NAME} = 248 ] || fail "NAME is ${#NAME} bytes"
for f in "$NAME.0.base" "$NAME.3.base" "$NAME.1.diff"; do
	[ ${#f} = 255 ] || fail "layer name $f is ${#f} bytes, not 255"
done

# chain DIR: NAME.0.base (64 pages, pages 0-31 data) and diffs 1-3 of a
# few pages each in DIR; the reference merge in $R/NAME (and its holes)
# once.
chain() {
	local d=$1 i p
	mk_sparse "$d/$NAME.0.base" $((64 * PAGE))
	for ((p = 0; p < 32; p++)); do
		write_page "$d/$NAME.0.base" "$p" $((p + 1))
	done
	for i in 1 2 3; do
		mk_sparse "$d/.$i.tmp" $((64 * PAGE))
		for p in $((i * 3)) $((40 + i)) 50; do
			write_page "$d/.$i.tmp" "$p" $((100 + i))
		done
		mv "$d/.$i.tmp" "$d/$NAME.$i.diff" || fail "cannot publish diff $i"
	done
	[ -e "$R/$NAME" ] && return
	mk_sparse "$R/$NAME" $((64 * PAGE))
	for ((p = 0; p < 32; p++)); do
		write_page "$R/$NAME" "$p" $((p + 1))
	done
	for i in 1 2 3; do
		for p in $((i * 3)) $((40 + i)) 50; do
			write_page "$R/$NAME" "$p" $((100 + i))
		done
	done
	# holes: pages 32-63 but 41, 42, 43 and 50
	printf '%s\n' "$((32 * PAGE)) $((41 * PAGE))" "$((44 * PAGE)) $((50 * PAGE))" \
		"$((51 * PAGE)) $((64 * PAGE))" >"$R/$NAME.holes"
}

# compacted DIR: only NAME.3.base is left in DIR, no staging file (and the
# directory's lock file, empty, which the compactor made).
compacted() {
	local left
	[ ! -s "$1/.snapfs-lock" ] || fail "$1/.snapfs-lock is not empty"
	left=$(cd "$1" && ls -A | grep -vx '\.snapfs-lock')
	[ "$left" = "$NAME.3.base" ] || fail "$1 holds: $(tr '\n' ' ' <<<"$left")"
	[ -z "$(staging_files "$1")" ] || fail "staging files left in $1"
}

# same_as_ref PATH: the view at PATH reads like the reference.
same_as_ref() {
	"$VIEWCHECK" -m seq,pread,mmap,seek "$1" "$R/$NAME" "$R/$NAME.holes" >/dev/null ||
		fail "${1#"$T"/}: the view differs from the reference"
}

chain "$S/daemon"
chain "$S/tool"

# ---- snapfs-compact ----
out=$("$SNAPFS_COMPACT" -t 0 -k 0 "$S/tool" 2>&1) || fail "snapfs-compact failed: $out"
grep -q "too long" <<<"$out" && fail "snapfs-compact: $out"
compacted "$S/tool"
log "snapfs-compact: 4 layers with 255-byte names compacted"

# ---- the daemon ----
mount_snapfs "$S" "$T/mnt" -o compact_threshold=1,keep_diffs=0
same_as_ref "$T/mnt/daemon/$NAME"	# before: also looks it up (queued)
same_as_ref "$T/mnt/tool/$NAME"
depth0() {
	[ "$(xattr "$T/mnt/daemon/$NAME" user.snapfs.depth 2>/dev/null)" = 0 ]
}
wait_for 20000 depth0 ||
	fail "the daemon did not compact: depth $(xattr "$T/mnt/daemon/$NAME" user.snapfs.depth)," \
		"compaction: $(xattr "$T/mnt/daemon/$NAME" user.snapfs.compaction)"
wait_for 5000 sh -c '[ "$(ls -A "$1" | grep -vcx "\.snapfs-lock")" = 1 ]' sh "$S/daemon" || true
compacted "$S/daemon"
[ "$(log_count "compaction failed")" = 0 ] || fail "a compaction failed"
[ "$(log_count "too long")" = 0 ] || fail "a name was too long somewhere"
[ "$(xattr "$T/mnt/daemon/$NAME" user.snapfs.compaction)" = idle ] ||
	fail "compaction state: $(xattr "$T/mnt/daemon/$NAME" user.snapfs.compaction)"
same_as_ref "$T/mnt/daemon/$NAME"
umount_snapfs "$T/mnt"
# a fresh mount reads the new base alone
mount_snapfs "$S" "$T/mnt" -o compact=off
same_as_ref "$T/mnt/daemon/$NAME"
same_as_ref "$T/mnt/tool/$NAME"
umount_snapfs "$T/mnt"
log "ok: $FS: 255-byte layer names compacted by the daemon and by snapfs-compact"
