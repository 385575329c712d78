#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Attributes of views (doc/format.md §2, §3): the xattrs describe the chain (with
# data_bytes computed here independently), the synthetic inode number, mode,
# owner and size, listings with and without readdirplus, a plain file hidden
# by a layered NAME, statfs, and a store of 200 directories.
. ./tests/mount/lib.sh
setup

S=$T/store M=$T/mnt R=$T/ref
NP=256 SZ=$((256 * PAGE))
mkdir -p "$S/vm1" "$R"

# memory.bin: superseded layers (seq 0 and 1), then the chain 2.base,
# 3.diff, 004.diff, 10.diff (numeric order, zero padding allowed). The base
# is sparse too. DATA[p] marks pages where some chain layer has data.
declare -A DATA=()
mk_sparse "$S/vm1/memory.bin.0.base" "$SZ"
write_page "$S/vm1/memory.bin.0.base" 77 1
mk_sparse "$S/vm1/memory.bin.1.diff" "$SZ"
write_page "$S/vm1/memory.bin.1.diff" 78 1
mk_sparse "$S/vm1/memory.bin.2.base" "$SZ"
mk_sparse "$R/memory.bin" "$SZ"
layer_pages() {	# FILE PAGE...: writes each page (byte from the page index)
	local f=$1 p
	shift
	for p; do
		write_page "$f" "$p" $((p % 251 + 1))
		write_page "$R/memory.bin" "$p" $((p % 251 + 1))
		DATA[$p]=1
	done
}
layer_pages "$S/vm1/memory.bin.2.base" 0 1 2 10 100
mk_sparse "$S/vm1/memory.bin.3.diff" "$SZ"
layer_pages "$S/vm1/memory.bin.3.diff" 2 3 50 $((NP - 1))
mk_sparse "$S/vm1/memory.bin.004.diff" "$SZ"
layer_pages "$S/vm1/memory.bin.004.diff" 3 100 200
mk_sparse "$S/vm1/memory.bin.10.diff" "$SZ"
layer_pages "$S/vm1/memory.bin.10.diff" 120 121 122 0
chmod 0664 "$S/vm1/memory.bin.2.base"
chown 1234:2345 "$S/vm1/memory.bin.2.base"
CHAIN=memory.bin.2.base,memory.bin.3.diff,memory.bin.004.diff,memory.bin.10.diff
WANT_DATA=$((${#DATA[@]} * PAGE))

# disk.img: a dense base of an odd size alone; mode 0750 shows as 0550.
head -c 10001 /dev/urandom >"$S/vm1/disk.img.7.base"
chmod 0750 "$S/vm1/disk.img.7.base"
# shadow: a plain file beside a layered file of the same name.
echo "the plain file" >"$S/vm1/shadow"
head -c "$PAGE" /dev/urandom >"$S/vm1/shadow.0.base"
echo "ordinary" >"$S/vm1/notes.txt"

mount_snapfs "$S" "$M"
V=$M/vm1/memory.bin

# ---- xattrs ----
[ "$(xattr "$V" user.snapfs.chain)" = "$CHAIN" ] ||
	fail "chain is '$(xattr "$V" user.snapfs.chain)', want '$CHAIN'"
[ "$(xattr "$V" user.snapfs.depth)" = 3 ] || fail "depth is '$(xattr "$V" user.snapfs.depth)', want 3"
got=$(xattr "$V" user.snapfs.data_bytes)
[ "$got" = "$WANT_DATA" ] || fail "data_bytes is '$got', want $WANT_DATA (${#DATA[@]} pages)"
[ "$(xattr "$M/vm1/disk.img" user.snapfs.chain)" = disk.img.7.base ] || fail "disk.img chain"
[ "$(xattr "$M/vm1/disk.img" user.snapfs.depth)" = 0 ] || fail "disk.img depth"
[ "$(xattr "$M/vm1/disk.img" user.snapfs.data_bytes)" = 10001 ] || fail "disk.img data_bytes"
names=$(getfattr --absolute-names -m - "$V" | grep -v '^#' | grep . | LC_ALL=C sort | tr '\n' ' ')
[ "$names" = "user.snapfs.chain user.snapfs.compaction user.snapfs.data_bytes user.snapfs.depth user.snapfs.flat user.snapfs.prefetch " ] ||
	fail "listxattr gives '$names'"
expect_err "No such attribute" xattr "$V" user.snapfs.error
expect_err "No such attribute" xattr "$V" user.snapfs.nonesuch
cmp "$V" "$R/memory.bin" || fail "memory.bin differs from the reference merge"

# ---- stat ----
read -r ino mode uid gid size nlink <<<"$(stat -c '%i %a %u %g %s %h' "$V")"
is_synthetic_ino "$ino" || fail "view st_ino $ino lacks the high bit"
[ "$mode" = 444 ] || fail "view mode $mode, want 444 (base 664 minus write bits)"
[ "$uid:$gid" = 1234:2345 ] || fail "view owner $uid:$gid, want the base's 1234:2345"
[ "$size" = "$SZ" ] || fail "view size $size, want the base's $SZ"
[ "$nlink" = 1 ] || fail "view nlink $nlink"
[ "$(stat -c %F "$V")" = "regular file" ] || fail "view is a $(stat -c %F "$V")"
for l in "$S"/vm1/memory.bin.*; do
	li=$(stat -c %i "$M/vm1/${l##*/}")
	[ "$li" = "$(stat -c %i "$l")" ] || fail "layer ${l##*/} has st_ino $li, not STORE's"
	[ "$li" != "$ino" ] || fail "view and layer ${l##*/} share st_ino"
done
read -r dino dmode dsize <<<"$(stat -c '%i %a %s' "$M/vm1/disk.img")"
is_synthetic_ino "$dino" || fail "disk.img st_ino $dino lacks the high bit"
[ "$dino" != "$ino" ] || fail "two views share st_ino $ino"
[ "$dmode" = 550 ] || fail "disk.img mode $dmode, want 550"
[ "$dsize" = 10001 ] || fail "disk.img size $dsize"
[ "$(stat -c %i "$V")" = "$ino" ] || fail "st_ino of an unchanged view changed"

# ---- listing ----
want=$( (cd "$S/vm1" && ls -A; echo memory.bin; echo disk.img) | LC_ALL=C sort -u)
got=$(LC_ALL=C ls -A "$M/vm1")
[ "$got" = "$want" ] || fail "ls shows: $(echo $got); want: $(echo $want)"
[ "$(LC_ALL=C ls -A "$M/vm1" | grep -cx shadow)" = 1 ] || fail "shadow listed twice"
cmp "$M/vm1/shadow" "$S/vm1/shadow.0.base" || fail "shadow: the plain file is shown, not the view"
is_synthetic_ino "$(stat -c %i "$M/vm1/shadow")" || fail "shadow: not the view"
n=$(log_count "vm1/shadow" "hidden")
[ "$n" = 1 ] || fail "hidden plain file logged $n times, want once"

# ---- statfs ----
df "$M" >/dev/null || fail "df on the mount failed"
[ "$(stat -f -c '%b %S %c %l' "$M")" = "$(stat -f -c '%b %S %c %l' "$S")" ] ||
	fail "statfs of the mount differs from STORE's"

umount_snapfs "$M"

# ---- 200 directories: quick mount, direct lookup ----
B=$T/big
mkdir -p "$B"
for i in $(seq 1 200); do
	d=$B/d$i
	mkdir "$d"
	printf 'base %s\n' "$i" >"$d/memory.bin.0.base"
	truncate -s "$PAGE" "$d/memory.bin.0.base"
	mk_sparse "$d/memory.bin.1.diff" "$PAGE"
	echo "state $i" >"$d/vmstate.bin"
done
printf 'diff 137\n' | dd of="$B/d137/memory.bin.1.diff" conv=notrunc status=none
# A few layered files at the end of a long listing (after the 200 dirs).
for n in a b c; do head -c "$PAGE" /dev/urandom >"$B/$n.1.base"; done
start=$SECONDS
mount_snapfs "$B" "$M"
[ $((SECONDS - start)) -le 5 ] || fail "mounting 200 directories took $((SECONDS - start)) s"
# Straight to one file, nothing listed first.
{ printf 'diff 137\n'; head -c $((PAGE - 9)) /dev/zero; } >"$R/d137"
cmp "$M/d137/memory.bin" "$R/d137" || fail "d137/memory.bin differs"
[ "$(cat "$M/d42/vmstate.bin")" = "state 42" ] || fail "d42/vmstate.bin differs"
[ "$(xattr "$M/d199/memory.bin" user.snapfs.chain)" = memory.bin.0.base,memory.bin.1.diff ] ||
	fail "d199 chain"
umount_snapfs "$M"

# ---- readdir and readdirplus agree ----
# On a fresh mount `find` reads with plain readdir beyond the first buffer
# and takes d_ino from it; `stat` (as `ls -l` does) goes through lookup.
# Names, types and inode numbers must agree.
ERRS=()
for dir in "$B" "$S/vm1"; do
	mount_snapfs "$dir" "$M"
	find "$M" -mindepth 1 -maxdepth 1 -printf '%f %y %i\n' | LC_ALL=C sort >"$T/find"
	(cd "$M" && LC_ALL=C ls -A | while IFS= read -r f; do
		printf '%s %s %s\n' "$f" "$(stat -c %F "$f" | sed 's/regular file/f/; s/directory/d/')" \
			"$(stat -c %i "$f")"
	done) | LC_ALL=C sort >"$T/stat"
	diff <(cut -d' ' -f1,2 "$T/find") <(cut -d' ' -f1,2 "$T/stat") >/dev/null ||
		fail "${dir##*/}: readdir and ls/stat disagree on names or types"
	d=$(diff "$T/find" "$T/stat" | grep '^[<>]' | head -n 4 | tr '\n' ' ')
	[ -z "$d" ] || ERRS+=("${dir##*/}: d_ino from readdir differs from st_ino: $d")
	# ls -l (readdirplus and stat) shows the same names.
	[ "$(cd "$M" && LC_ALL=C ls -lA | tail -n +2 | wc -l)" = "$(wc -l <"$T/find")" ] ||
		fail "${dir##*/}: ls -l and find list different counts"
	umount_snapfs "$M"
done

# ---- the inode number of an unchanged view is stable ----
# Even when the kernel forgets it (memory pressure drops its dentry).
mount_snapfs "$S" "$M"
ino=$(stat -c %i "$V")
if sync && echo 2 2>/dev/null >/proc/sys/vm/drop_caches; then
	ino2=$(stat -c %i "$V")
	[ "$ino2" = "$ino" ] ||
		ERRS+=("st_ino of an unchanged view went from $ino to $ino2 after the kernel forgot it")
else
	log "cannot drop caches: inode stability under forget not checked"
fi
umount_snapfs "$M"

[ ${#ERRS[@]} = 0 ] || fail "$(printf '%s; ' "${ERRS[@]}")"
log "ok"
