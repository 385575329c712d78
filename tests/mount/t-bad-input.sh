#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Bad input (doc/format.md §5): one store holds layered files each broken in one way
# next to good ones. Every broken file answers EIO, logs exactly one line
# naming it and its cause, and says why in user.snapfs.error, while the good
# files of the same directory read exactly like a reference merge.
. ./tests/mount/lib.sh
setup

S=$T/store M=$T/mnt R=$T/ref
SZ=$((64 * PAGE))
mkdir -p "$S/vm1" "$R"

# A dense random base of SZ bytes with its reference copy.
mk_base() {
	head -c "$SZ" /dev/urandom >"$1" || fail "cannot write $1"
	[ -z "${2:-}" ] || cp "$1" "$2"
}

# ---- good files: expected to keep working beside the broken ones ----

# good: base + two diffs; the top diff writes an all-zero page over data,
# which must hide the base there (a zero page is data, not a hole).
mk_base "$S/vm1/good.0.base" "$R/good"
mk_sparse "$S/vm1/good.1.diff" "$SZ"
mk_sparse "$S/vm1/good.2.diff" "$SZ"
for p in 2:17 5:34 9:51; do
	write_page "$S/vm1/good.1.diff" "${p%:*}" "${p#*:}"
	write_page "$R/good" "${p%:*}" "${p#*:}"
done
for p in 5:0 9:0 40:0 63:200; do
	write_page "$S/vm1/good.2.diff" "${p%:*}" "${p#*:}"
	write_page "$R/good" "${p%:*}" "${p#*:}"
done
cmp -s "$S/vm1/good.0.base" "$R/good" && fail "reference equals the base: setup is wrong"

# old: a broken chain (sizes differ, a symlink, a duplicate <seq>, a
# directory) superseded by a newer base; only the new chain counts.
head -c $((SZ / 2)) /dev/urandom >"$S/vm1/old.0.base"
mk_sparse "$S/vm1/old.1.diff" "$SZ"
ln -s old.1.diff "$S/vm1/old.2.diff"
mk_sparse "$S/vm1/old.3.diff" "$SZ"
mk_sparse "$S/vm1/old.03.diff" "$SZ"
mkdir "$S/vm1/old.4.diff"
mk_base "$S/vm1/old.5.base" "$R/old"
mk_sparse "$S/vm1/old.6.diff" "$SZ"
write_page "$S/vm1/old.6.diff" 7 99
write_page "$R/old" 7 99

# solo: a base alone; plain: an ordinary file.
mk_base "$S/vm1/solo.0.base" "$R/solo"
head -c 10000 /dev/urandom >"$S/vm1/plain.bin"
cp "$S/vm1/plain.bin" "$R/plain.bin"

# ---- broken files: NAME and a keyword of the cause ----
BROKEN=()

# Layers of different sizes.
mk_base "$S/vm1/sizes.0.base"
mk_sparse "$S/vm1/sizes.1.diff" $((SZ / 2))
write_page "$S/vm1/sizes.1.diff" 1 1
BROKEN+=("vm1/sizes:different sizes")

# A diff with no holes (written in full), larger than a page.
mk_base "$S/vm1/dense.0.base"
head -c "$SZ" /dev/urandom >"$S/vm1/dense.1.diff"
BROKEN+=("vm1/dense:no holes")

# Diffs without a base.
mk_sparse "$S/vm1/nobase.1.diff" "$SZ"
mk_sparse "$S/vm1/nobase.2.diff" "$SZ"
write_page "$S/vm1/nobase.2.diff" 3 3
BROKEN+=("vm1/nobase:no base")

# A layer that is a symlink, even to a well-formed diff inside STORE.
mk_base "$S/vm1/symlnk.0.base"
mk_sparse "$S/vm1/symlnk-target" "$SZ"
write_page "$S/vm1/symlnk-target" 4 4
ln -s symlnk-target "$S/vm1/symlnk.1.diff"
BROKEN+=("vm1/symlnk:symbolic link")

# A layer that is a directory.
mk_base "$S/vm1/dirlayer.0.base"
mkdir "$S/vm1/dirlayer.1.diff"
BROKEN+=("vm1/dirlayer:not a regular file")

# A <seq> that overflows 64 bits.
mk_base "$S/vm1/memory.bin.0.base"
mk_sparse "$S/vm1/memory.bin.99999999999999999999999.diff" "$SZ"
BROKEN+=("vm1/memory.bin:64 bits")

# The same <seq> twice through zero padding, for diffs and for bases.
mk_base "$S/vm1/dup.0.base"
mk_sparse "$S/vm1/dup.3.diff" "$SZ"
mk_sparse "$S/vm1/dup.03.diff" "$SZ"
BROKEN+=("vm1/dup:same <seq>")
mk_base "$S/vm1/dupbase.1.base"
mk_base "$S/vm1/dupbase.01.base"
BROKEN+=("vm1/dupbase:same <seq>")

# One broken file at the root too.
mk_sparse "$S/top.1.diff" "$SZ"
BROKEN+=("top:no base")

# check_broken MNT NAME KEYWORD: EIO on open (twice), one log line naming
# NAME with the keyword, and user.snapfs.error naming the cause.
check_broken() {
	local mnt=$1 name=$2 kw=$3 err n
	expect_err "Input/output error" cat "$mnt/$name"
	expect_err "Input/output error" cat "$mnt/$name"
	n=$(log_count " $name: ")
	[ "$n" = 1 ] || fail "$name: $n log lines name it, want exactly 1"
	n=$(log_count " $name: unusable: " "$kw")
	[ "$n" = 1 ] || fail "$name: the log line does not give the cause \"$kw\": $(grep -F " $name: " "$T/snapfs.log")"
	err=$(xattr "$mnt/$name" user.snapfs.error 2>&1) ||
		fail "$name: user.snapfs.error unreadable: $err"
	case $err in
	*"$kw"*) ;;
	*) fail "$name: user.snapfs.error is \"$err\", want it to say \"$kw\"" ;;
	esac
	# The view is still listed with its base's size where there is one.
	ls "$(dirname "$mnt/$name")" | grep -qx "${name##*/}" || fail "$name is not listed"
}

# check_good MNT NAME: reads equal the reference.
check_good() {
	cmp "$1/$2" "$R/${2##*/}" || fail "$2 differs from the reference"
}

mount_snapfs "$S" "$M"

for b in "${BROKEN[@]}"; do
	check_broken "$M" "${b%%:*}" "${b#*:}"
done
for g in vm1/good vm1/old vm1/solo vm1/plain.bin; do
	check_good "$M" "$g"
done

# The zero-page rule, explicitly: page 5 of good was data in the base and in
# diff 1, and reads as zeros because diff 2 wrote zeros there.
cmp -s <(dd if="$M/vm1/good" bs="$PAGE" skip=5 count=1 status=none) \
	<(head -c "$PAGE" /dev/zero) || fail "an all-zero diff page does not hide the base"
[ "$(xattr "$M/vm1/old" user.snapfs.chain)" = "old.5.base,old.6.diff" ] ||
	fail "old: chain is not the new base and its diff"
expect_err "No such attribute" xattr "$M/vm1/good" user.snapfs.error

# The broken layers themselves are still visible under their own names.
[ "$(stat -c %F "$M/vm1/symlnk.1.diff")" = "symbolic link" ] || fail "symlnk.1.diff not a symlink"
[ "$(stat -c %F "$M/vm1/dirlayer.1.diff")" = "directory" ] || fail "dirlayer.1.diff not a dir"
cmp "$M/vm1/dense.1.diff" "$S/vm1/dense.1.diff" || fail "dense.1.diff unreadable by name"

# ---- a diff on a filesystem with holes coarser than a page ----
H=$T/huge
coarse_case() {
	local gran data
	mkdir -p "$H"
	if ! mount -t tmpfs -o huge=always,size=64m snapfs-test "$H" 2>/dev/null; then
		log "cannot mount tmpfs with huge=always: coarse-hole case skipped"
		return 0
	fi
	MOUNTS+=("$H")
	# Probe it ourselves: one page written in a sparse file must read back
	# as a larger data range, or this kernel does not make coarse holes.
	mk_sparse "$H/probe" $((16 << 20))
	write_page "$H/probe" $(((8 << 20) / PAGE + 1)) 1
	data=$(xfs_io -r -c "seek -d 0" "$H/probe" | awk '$1 == "DATA" { print $2 }')
	gran=$(xfs_io -r -c "seek -h $((8 << 20))" "$H/probe" | awk '$1 == "HOLE" { print $2 }')
	rm -f "$H/probe"
	if [ -z "$data" ] || [ -z "$gran" ] || [ $((gran - data)) -le "$PAGE" ]; then
		log "tmpfs huge=always keeps 4 KiB holes here: coarse-hole case skipped"
		return 0
	fi
	log "tmpfs huge=always reports $((gran - data)) bytes for a one-page write"

	mkdir -p "$H/vm"
	mk_base "$H/vm/mem.0.base"
	mk_sparse "$H/vm/mem.1.diff" "$SZ"
	write_page "$H/vm/mem.1.diff" 1 1
	mk_base "$H/vm/solo.0.base" "$R/hsolo"
	mount_snapfs "$H" "$T/mnt-huge"
	check_broken "$T/mnt-huge" vm/mem "coarser"
	cmp "$T/mnt-huge/vm/solo" "$R/hsolo" || fail "a base alone on tmpfs differs"
	umount_snapfs "$T/mnt-huge"
}
coarse_case

umount_snapfs "$M"

# Logged once per broken file even when the kernel forgets the file between
# two opens (entry_timeout=0 drops the dentry after each use).
: >"$T/snapfs.log"
mount_snapfs "$S" "$M" -o entry_timeout=0
for b in "${BROKEN[@]}"; do
	name=${b%%:*}
	expect_err "Input/output error" cat "$M/$name"
	expect_err "Input/output error" cat "$M/$name"
	n=$(log_count " $name: ")
	[ "$n" = 1 ] || fail "$name: logged $n times after two opens with entry_timeout=0, want 1"
done
umount_snapfs "$M"

# On a fresh mount, user.snapfs.error tells why before anything opened the
# file (getfattr is how an operator finds out).
: >"$T/snapfs.log"
mount_snapfs "$S" "$M"
for b in "${BROKEN[@]}"; do
	name=${b%%:*} kw=${b#*:}
	err=$(xattr "$M/$name" user.snapfs.error 2>&1)
	case $err in
	*"$kw"*) ;;
	*) fail "$name: before any open, user.snapfs.error is \"$err\", want \"$kw\"" ;;
	esac
done
umount_snapfs "$M"
log "ok: ${#BROKEN[@]} broken files refused, good files intact"
