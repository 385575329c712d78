#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# example-store.sh DIR: writes a small example STORE for snapfs into DIR, with
# plain shell tools only (awk, dd, truncate), and the same content merged
# into a plain file DIR.merged/memory.bin, so that the view can be compared
# with cmp. Everything is deterministic: two runs give the same bytes.
#
#   DIR/README.txt               what is in the store
#   DIR/vm1/memory.bin.0.base    16 MiB: 12 MiB of pattern data, then a hole
#   DIR/vm1/memory.bin.1.diff    sparse diffs of the same size, each holding
#   DIR/vm1/memory.bin.2.diff    only the pages it changed (listed below);
#   DIR/vm1/memory.bin.3.diff    one page of .3.diff is all zeros
#   DIR/vm1/vmstate.bin          a plain file, shown as it is
#   DIR.merged/memory.bin        base + diffs merged, written independently
#
# Each 4 KiB page is 64 lines of 64 bytes that say which file and page they
# came from ("vm1 diff2 page 002049 line 00"), so `xxd` shows at a glance
# which layer a byte of the view comes from.
set -euo pipefail
export LC_ALL=C

PAGE=4096
SIZE=$((16 << 20))		# logical size of memory.bin and every layer
BASE_DATA_PAGES=3072		# the base has data in [0, 12 MiB), then a hole

# The pages each diff writes, in order. "zero" writes a page of zeros, which
# is data (it allocates) and must hide the layers below it.
DIFF1="0 1 100 2049 3500"		# 3500 lies in the base's hole
DIFF2="1 2048 2049 2050 4095"		# 2048-2050 straddle 8 MiB; 4095 is the last page
DIFF3="100:zero 1000 2049"		# 100 hides diff 1's page and the base's

usage() {
	echo "usage: $0 DIR" >&2
	echo "  writes an example snapfs store into DIR (new or empty) and" >&2
	echo "  the plain merge of its layered file into DIR.merged" >&2
	exit 2
}

die() {
	echo "example-store.sh: $*" >&2
	exit 1
}

[ $# -eq 1 ] || usage
case $1 in -h | --help) usage ;; esac
dir=${1%/}
[ -n "$dir" ] || usage
merged=$dir.merged

for d in "$dir" "$merged"; do
	if [ -e "$d" ] && [ -n "$(ls -A "$d")" ]; then
		die "$d exists and is not empty"
	fi
done
mkdir -p "$dir/vm1" "$merged"

# pattern_pages TAG FIRST COUNT: COUNT pages of text naming TAG and each page
# number from FIRST on, to stdout.
pattern_pages() {
	awk -v tag="$1" -v first="$2" -v count="$3" 'BEGIN {
		for (p = first; p < first + count; p++)
			for (l = 0; l < 64; l++)
				printf "%-63s\n", sprintf("vm1 %-5s page %06d line %02d", tag, p, l)
	}'
}

# write_page FILE PAGE TAG: overwrites one page of FILE in place (never
# truncates, so a sparse file stays sparse around it). TAG "zero" writes zeros.
write_page() {
	if [ "$3" = zero ]; then
		dd if=/dev/zero of="$1" bs=$PAGE seek="$2" count=1 conv=notrunc status=none
	else
		pattern_pages "$3" "$2" 1 |
			dd of="$1" bs=$PAGE seek="$2" count=1 conv=notrunc iflag=fullblock status=none
	fi
}

# allocated FILE: bytes the filesystem allocated to FILE.
allocated() {
	echo $(($(stat -c '%b * %B' "$1")))
}

# ---- the base: written under a temporary name, then published by rename ----
tmp=$dir/vm1/.memory.bin.0.base.tmp
pattern_pages base 0 $BASE_DATA_PAGES >"$tmp"
truncate -s $SIZE "$tmp"		# the last 4 MiB: a hole, reads as zeros
mv "$tmp" "$dir/vm1/memory.bin.0.base"

# The reference merge starts as a copy of the base.
cp --sparse=always "$dir/vm1/memory.bin.0.base" "$merged/memory.bin"

# ---- the diffs: sparse files of the base's size, a few pages written ----
n=0
for writes in "$DIFF1" "$DIFF2" "$DIFF3"; do
	n=$((n + 1))
	tmp=$dir/vm1/.memory.bin.$n.diff.tmp
	truncate -s $SIZE "$tmp"
	for w in $writes; do
		page=${w%%:*}
		tag=diff$n
		[ "$w" = "$page:zero" ] && tag=zero
		write_page "$tmp" "$page" "$tag"
		write_page "$merged/memory.bin" "$page" "$tag"
	done
	npages=$(echo "$writes" | wc -w)
	alloc=$(allocated "$tmp")
	if [ "$alloc" -gt $((npages * PAGE * 4)) ]; then
		echo "example-store.sh: warning: $tmp has $alloc bytes allocated" \
			"for $npages pages: this filesystem's holes look coarser" \
			"than $PAGE bytes, and snapfs will refuse these diffs" >&2
	fi
	mv "$tmp" "$dir/vm1/memory.bin.$n.diff"
done

# ---- a plain file beside the layers ----
awk 'BEGIN { for (i = 0; i < 1024; i++) printf "vmstate record %04d %-43s\n", i, "(an ordinary file: passed through as is)" }' \
	>"$dir/vm1/vmstate.bin"

cat >"$dir/README.txt" <<NOTE
An example snapfs store, made by contrib/example-store.sh.

vm1/memory.bin.0.base   the full image: 16 MiB, pattern data in the first
                        12 MiB (page P reads "vm1 base  page P ..."), then a
                        hole that reads as zeros
vm1/memory.bin.1.diff   pages $DIFF1
vm1/memory.bin.2.diff   pages $DIFF2
vm1/memory.bin.3.diff   pages $DIFF3
                        (pages of 4096 bytes; page P of a diff N reads
                        "vm1 diffN page P ..."; "zero" is a page of zeros,
                        which hides the layers below it)
vm1/vmstate.bin         a plain file

Mounted with "snapfs STORE MNT", MNT/vm1/memory.bin is the base with the
three diffs on top: byte for byte the file $(basename "$merged")/memory.bin
next to this store, which the script wrote by replaying the same page writes
onto a copy of the base.

The diffs are sparse: "du" shows a few KiB each. In a diff, a hole means
"unchanged" and data means "this page", even a page of zeros, so the holes
must be kept exactly: a copy whose holes were filled in would hide the whole
base (snapfs refuses such a diff), and a copy that turns zero pages into holes
("cp", "cp --sparse=always", "rsync --sparse") would let page 100 of diff 1
show through again. Copy layers with a reflink ("cp --reflink=always" on XFS
or btrfs), or not at all.
NOTE

echo "example store in $dir, plain merge in $merged/memory.bin"
for f in "$dir"/vm1/memory.bin.*; do
	printf '  %-22s %9d bytes, %8d allocated\n' "$(basename "$f")" \
		"$(stat -c %s "$f")" "$(allocated "$f")"
done
