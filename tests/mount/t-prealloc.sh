#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Preallocated layers (doc/design.md §6.1): a chain whose diffs were made with
# `fallocate -l` and a few page writes reads the same whatever the page cache
# holds. On ext4, XFS and btrfs (loop images) a base of 0x11 pages (its tail
# preallocated, never written) with a one-page diff and a few-page diff,
# every layer read in full before mounting, reads exactly like the test's own
# merge (cmp, and viewcheck in seq, pread, mmap and seek modes), its
# SEEK_DATA/SEEK_HOLE map through the mount (xfs_io seek) is the merge's,
# and user.snapfs.data_bytes too; again on a fresh mount after
# drop_caches, and again after the layers were read backwards and faulted in
# through a mapping. snapfs-compact (threshold 0, keep 0) then makes a new
# base equal to the merge, which reads the same through a mount. On tmpfs,
# which has no FIEMAP and turns a preallocated page into data once it is
# mapped, such a chain is refused (EIO, one log line naming the diff and the
# cause) in every one of those states, compaction refuses it too and leaves
# its layers alone, and the same chain written without fallocate reads like
# the merge.
. ./tests/mount/lib.sh
setup_loops
for c in xfs_io fallocate; do
	command -v "$c" >/dev/null || {
		[ -n "${CI:-}" ] && fail "CI must have $c"
		skip "needs $c"
	}
done

NP=1024			# pages in a layer (4 MiB)
NB=768			# pages of 0x11 at the start of the base; the rest is
			# preallocated (prealloc) or a hole (sparse)
SZ=$((NP * PAGE))
D1="128:34"		# diff 1: one page (0x22) at 512 KiB
D2="0:51 129:51 300:0 500:51 900:51 1023:51"	# diff 2: a few pages, one of
			# zeros (data), two in the base's unwritten tail, the last
			# page of the file

# ---- the test's own merge: bytes, data blocks, holes ----
REF=$T/ref
mk_sparse "$REF" "$SZ"
head -c $((NB * PAGE)) /dev/zero | tr '\0' '\021' |
	dd of="$REF" conv=notrunc status=none || fail "cannot write $REF"
for pb in $D1 $D2; do
	write_page "$REF" "${pb%:*}" "${pb#*:}"
done
# data blocks of the view: the base's 0x11 pages and every page a diff wrote
WANT_BLOCKS=$({ seq 0 $((NB - 1)); for pb in $D1 $D2; do echo "${pb%:*}"; done; } | sort -n -u)
WANT_DATA=$(($(wc -l <<<"$WANT_BLOCKS") * PAGE))
HOLES=$T/ref.holes
awk -v np="$NP" -v p="$PAGE" '{ d[$1] = 1 } END {
	for (b = 0; b < np; b++) {
		if (!(b in d) && s == "") s = b
		if ((b in d) && s != "") { printf "%d %d\n", s * p, b * p; s = "" }
	}
	if (s != "") printf "%d %d\n", s * p, np * p
}' <<<"$WANT_BLOCKS" >"$HOLES"
[ -s "$HOLES" ] || fail "setup: the merge has no holes"

# ranges: block numbers on stdin as "a-b c d-e" (for messages and compares)
ranges() {
	awk 'NR == 1 { s = e = $1; next }
		$1 == e + 1 { e = $1; next }
		{ printf "%s ", (s == e ? s : s "-" e); s = e = $1 }
		END { if (NR) print (s == e ? s : s "-" e) }'
}
WANT_RANGES=$(ranges <<<"$WANT_BLOCKS")

# make_layers DIR NAME HOW: NAME.0.base, NAME.1.diff and NAME.2.diff in DIR,
# each written under a temporary name and renamed into place. HOW=prealloc:
# the diffs are made with `fallocate -l` before their pages are written, and
# the base's tail is preallocated; HOW=sparse: truncate and holes.
make_layers() {
	local dir=$1 name=$2 how=$3 i f pb pages
	f=$dir/.$name.0.tmp
	mk_sparse "$f" "$SZ"
	head -c $((NB * PAGE)) /dev/zero | tr '\0' '\021' |
		dd of="$f" conv=notrunc status=none || fail "cannot write $f"
	if [ "$how" = prealloc ]; then
		fallocate -o $((NB * PAGE)) -l $(((NP - NB) * PAGE)) "$f" ||
			fail "fallocate on $f"
	fi
	mv "$f" "$dir/$name.0.base" || fail "cannot publish $name.0.base"
	for i in 1 2; do
		f=$dir/.$name.$i.tmp
		if [ "$how" = prealloc ]; then
			rm -f "$f"
			fallocate -l "$SZ" "$f" || fail "fallocate -l $SZ $f"
		else
			mk_sparse "$f" "$SZ"
		fi
		[ "$i" = 1 ] && pages=$D1 || pages=$D2
		for pb in $pages; do
			write_page "$f" "${pb%:*}" "${pb#*:}"
		done
		mv "$f" "$dir/$name.$i.diff" || fail "cannot publish $name.$i.diff"
	done
	sync -f "$dir"
}

# read_layers DIR NAME HOW: reads NAME's layers in full, so that their pages
# (those of preallocated extents too) are cached. HOW=forward: base first,
# with read(2); backward: the newest diff first, each from its end; mmap:
# faults every page in through a mapping; mmap-half: only the first half.
read_layers() {
	local dir=$1 name=$2 how=$3 f
	case $how in
	forward)
		cat "$dir/$name.0.base" "$dir/$name.1.diff" "$dir/$name.2.diff" >/dev/null ||
			fail "cannot read the layers of $name"
		;;
	backward)
		for f in "$dir/$name.2.diff" "$dir/$name.1.diff" "$dir/$name.0.base"; do
			xfs_io -r -c "pread -q -B -b $PAGE 0 $SZ" "$f" || fail "cannot read $f backwards"
		done
		;;
	mmap | mmap-half)
		local len=$SZ
		[ "$how" = mmap-half ] && len=$((SZ / 2))
		for f in "$dir/$name.2.diff" "$dir/$name.1.diff" "$dir/$name.0.base"; do
			xfs_io -r -c "mmap -r 0 $len" -c "mread 0 $len" "$f" >/dev/null ||
				fail "cannot read $f through a mapping"
		done
		;;
	esac
}

drop_caches() {
	drop_page_cache
}

# check_view FILE WHAT: FILE (a view through the mount, or a new base)
# reads exactly like the merge; a view also seeks like it.
check_view() {
	local f=$1 what=$2 out got
	out=$(LC_ALL=C cmp "$f" "$REF" 2>&1) ||
		fail "$what: ${f#"$T"/} is not the merge: $out"
	[ "${f#"$T"/mnt}" = "$f" ] && return 0
	got=$(data_blocks "$f" | ranges)
	[ "$got" = "$WANT_RANGES" ] ||
		fail "$what: SEEK_DATA/SEEK_HOLE of ${f#"$T"/}: data in blocks $got, want $WANT_RANGES"
	got=$(xattr "$f" user.snapfs.data_bytes) ||
		fail "$what: ${f#"$T"/}: no user.snapfs.data_bytes"
	[ "$got" = "$WANT_DATA" ] ||
		fail "$what: ${f#"$T"/}: data_bytes $got, want $WANT_DATA"
	out=$("$VIEWCHECK" -m seq,pread,mmap,seek "$f" "$REF" "$HOLES" 2>&1) ||
		fail "$what: ${f#"$T"/}: $out"
}

# unwritten_extents FILE: true if FIEMAP flags an extent of FILE unwritten
# (FIEMAP_EXTENT_UNWRITTEN, 0x800).
unwritten_extents() {
	local fl
	for fl in $(xfs_io -r -c 'fiemap -v' "$1" | awk '$5 ~ /^0x[0-9a-f]+$/ { print $5 }'); do
		((fl & 0x800)) && return 0
	done
	return 1
}

# log_lines: how many lines the daemon log has so far.
log_lines() {
	if [ -f "$T/snapfs.log" ]; then wc -l <"$T/snapfs.log"; else echo 0; fi
}

# refused STORE MNT WHAT KEYWORD: a fresh mount of STORE on MNT refuses
# vm/mem (EIO at every open, one log line naming mem.1.diff and KEYWORD)
# and serves vm/ok like the merge.
refused() {
	local store=$1 mnt=$2 what=$3 kw=$4 mark lines
	mark=$(log_lines)
	mount_snapfs "$store" "$mnt" -o compact=off
	expect_err "Input/output error" cat "$mnt/vm/mem"
	expect_err "Input/output error" cat "$mnt/vm/mem"
	lines=$(tail -n +"$((mark + 1))" "$T/snapfs.log" | grep -F " vm/mem: unusable: ")
	[ "$(grep -c . <<<"$lines")" = 1 ] ||
		fail "$what: want one log line for vm/mem, got: $lines"
	case $lines in
	*"diff mem.1.diff "*"$kw"*) ;;
	*) fail "$what: the log line does not name mem.1.diff and \"$kw\": $lines" ;;
	esac
	check_view "$mnt/vm/ok" "$what, the chain written without fallocate"
	umount_snapfs "$mnt"
}

# ---- ext4, XFS, btrfs: FIEMAP; the chain is served, the same every time ----

fiemap_case() {
	local fs=$1 store=$2/store mnt=$T/mnt.$1 out
	mkdir -p "$store/vm"
	make_layers "$store/vm" mem prealloc
	unwritten_extents "$store/vm/mem.1.diff" >/dev/null ||
		fail "$fs: setup: mem.1.diff has no unwritten extent"

	# 1. every layer read in full before the first mount
	read_layers "$store/vm" mem forward
	mount_snapfs "$store" "$mnt" -o compact=off
	check_view "$mnt/vm/mem" "$fs, layers read before mounting"
	read_layers "$store/vm" mem forward
	check_view "$mnt/vm/mem" "$fs, layers read again while mounted"
	umount_snapfs "$mnt"

	# 2. a fresh daemon with nothing cached
	drop_caches
	mount_snapfs "$store" "$mnt" -o compact=off
	check_view "$mnt/vm/mem" "$fs, after drop_caches"
	umount_snapfs "$mnt"

	# 3. read the other way round, and through mappings; a fresh daemon
	read_layers "$store/vm" mem backward
	read_layers "$store/vm" mem mmap
	mount_snapfs "$store" "$mnt" -o compact=off
	check_view "$mnt/vm/mem" "$fs, layers read backwards and mapped"
	umount_snapfs "$mnt"
	[ "$(grep -c "unusable" "$T/snapfs.log")" = 0 ] ||
		fail "$fs: the daemon refused a layer: $(grep unusable "$T/snapfs.log" | head -3)"

	# 4. compaction: one new base, the merge
	read_layers "$store/vm" mem forward
	out=$("$SNAPFS_COMPACT" -t 0 -k 0 "$store" 2>&1) ||
		fail "$fs: snapfs-compact failed: $out"
	[ "$(cd "$store/vm" && echo *)" = "mem.2.base" ] ||
		fail "$fs: after compaction the store holds $(cd "$store/vm" && echo *)"
	check_view "$store/vm/mem.2.base" "$fs, the compacted base"
	mount_snapfs "$store" "$mnt" -o compact=off
	check_view "$mnt/vm/mem" "$fs, compacted, base read before mounting"
	umount_snapfs "$mnt"
	log "ok: $fs: the preallocated chain reads like the merge in every cache state, and compacts to it"
}

# ---- tmpfs: no FIEMAP; the preallocated chain is refused in every state ----

tmpfs_case() {
	local store=$1/store mnt=$T/mnt.tmpfs out before after
	mkdir -p "$store/vm"
	make_layers "$store/vm" mem prealloc
	make_layers "$store/vm" ok sparse

	read_layers "$store/vm" mem forward
	refused "$store" "$mnt" "tmpfs, layers read before mounting" "preallocated"
	drop_caches
	read_layers "$store/vm" mem backward
	read_layers "$store/vm" mem mmap-half
	refused "$store" "$mnt" "tmpfs, half of each layer mapped" "preallocated"

	# compaction refuses mem and leaves its layers; ok is compacted
	before=$(store_state "$store" | grep ' vm/mem\.')
	out=$("$SNAPFS_COMPACT" -t 0 -k 0 "$store" 2>&1) &&
		fail "tmpfs: snapfs-compact succeeded on a refused chain: $out"
	grep -q "vm/mem: the chain is unusable: diff mem.1.diff .*preallocated" <<<"$out" ||
		fail "tmpfs: snapfs-compact did not say why: $out"
	after=$(store_state "$store" | grep ' vm/mem\.')
	[ "$before" = "$after" ] || fail "tmpfs: compaction changed mem's layers"
	[ "$(cd "$store/vm" && echo ok.*)" = "ok.2.base" ] ||
		fail "tmpfs: ok was not compacted: $(cd "$store/vm" && echo ok.*)"
	cmp "$store/vm/ok.2.base" "$REF" || fail "tmpfs: the compacted base of ok is not the merge"

	# every preallocated page faulted in: now dense, still refused
	read_layers "$store/vm" mem mmap
	refused "$store" "$mnt" "tmpfs, every page mapped" "no holes"
	log "ok: tmpfs: the preallocated chain is refused in every cache state (one log line each mount), the sparse one reads like the merge"
}

ran=0
if have_mkfs ext4; then
	mkfs_loop ext4 64 "$T/ext4"
	fiemap_case ext4 "$T/ext4"
	ran=$((ran + 1))
fi
if have_mkfs xfs; then
	mkfs_loop xfs 320 "$T/xfs"
	fiemap_case xfs "$T/xfs"
	ran=$((ran + 1))
fi
if have_mkfs btrfs; then
	mkfs_loop btrfs 320 "$T/btrfs"
	fiemap_case btrfs "$T/btrfs"
	ran=$((ran + 1))
fi
mount_tmpfs "$T/tmpfs" 64
tmpfs_case "$T/tmpfs"
ran=$((ran + 1))
log "ok: $ran filesystems"
