#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# What a listing says about an entry is what a lookup says (issue 11, item
# 4; doc/design.md §2, "The node family"). On a fresh mount `ls -l` takes
# the attributes of the entries of its first buffer from READDIRPLUS, and
# `stat` right after it serves them from the kernel's cache; once the
# kernel has forgotten every entry (drop_caches), `stat` asks with fresh
# lookups. Inode number, type and mode, size, owner, link count, blocks
# and times must agree, for layered names (one layer, a chain, an unusable
# chain), a plain file, a plain file hidden by a layered NAME, a directory
# and a symlink. Then a directory of NAMES (2,000) layered names, listed
# by `find` (plain readdir past the first buffer) before any of them was
# looked up: every d_ino equals the st_ino a lookup then gives, and every
# view reads as its merge computed here; and by `ls -l`, whose first
# buffer of a listing this long comes without attributes.
. ./tests/mount/lib.sh
setup
command -v python3 >/dev/null || fail "python3 is needed"

NAMES=${SNAPFS_LIST_NAMES:-2000}
S=$T/store M=$T/mnt
mkdir -p "$S/vm1/sub" "$S/big"

mk_sparse "$S/vm1/memory.bin.0.base" $((8 * PAGE))
write_page "$S/vm1/memory.bin.0.base" 0 11
mk_sparse "$S/vm1/memory.bin.1.diff" $((8 * PAGE))
write_page "$S/vm1/memory.bin.1.diff" 5 12
chmod 0640 "$S/vm1/memory.bin.0.base"
chown 1234:2345 "$S/vm1/memory.bin.0.base" "$S/vm1/memory.bin.1.diff"
head -c 10001 /dev/urandom >"$S/vm1/disk.img.3.base"
mk_sparse "$S/vm1/broken.4.diff" "$PAGE"	# no base: unusable
echo "plain" >"$S/vm1/shadow"
head -c "$PAGE" /dev/urandom >"$S/vm1/shadow.0.base"
echo "notes" >"$S/vm1/notes.txt"
ln -s notes.txt "$S/vm1/link"
touch -d '2001-02-03 04:05:06' "$S/vm1/notes.txt"

# The daemon's own file-system view: entries and attributes, one a line.
attrs() { (cd "$1" && LC_ALL=C stat -c '%n %i %f %s %u %g %h %b %X %Y %Z' -- "${@:2}"); }
forget_all() {
	sync
	echo 2 2>/dev/null >/proc/sys/vm/drop_caches
}
forget_all || skip "cannot drop caches: the kernel's entries cannot be made to go"

# ---- a small directory: READDIRPLUS against lookups ----
mount_snapfs "$S" "$M"
mapfile -t ents < <(cd "$M/vm1" && LC_ALL=C ls -A)
[ "${#ents[@]}" = 12 ] || fail "vm1 lists ${#ents[@]} entries (${ents[*]}), want 12"
LC_ALL=C ls -lA "$M/vm1" >/dev/null
attrs "$M/vm1" "${ents[@]}" >"$T/plus"
forget_all
attrs "$M/vm1" "${ents[@]}" >"$T/lookup"
d=$(diff "$T/plus" "$T/lookup" | grep '^[<>]' | head -n 4 | tr '\n' ' ')
[ -z "$d" ] || fail "readdirplus and lookup disagree: $d"
# Views: synthetic inode numbers, owner of the base, modes at most r-x.
read -r _ ino mode _ uid gid _ < <(grep '^memory.bin ' "$T/lookup")
is_synthetic_ino "$ino" || fail "memory.bin has inode $ino"
[ "$mode" = 8120 ] && [ "$uid:$gid" = 1234:2345 ] ||
	fail "memory.bin: mode $mode owner $uid:$gid, want 8120 1234:2345"
grep -q "^shadow $(stat -c %i "$M/vm1/shadow.0.base") " "$T/lookup" &&
	fail "shadow shows its layer's inode"
umount_snapfs "$M"

# ---- a big directory listed before any lookup ----
python3 - "$S/big" "$NAMES" <<'PY' || fail "cannot make $NAMES names"
import sys
d, n = sys.argv[1], int(sys.argv[2])
P = 4096
for i in range(n):
    with open(f"{d}/m{i}.0.base", "wb") as f:
        f.write(bytes([i % 251 + 1]) * P * 2)
    if i % 3 == 0:
        with open(f"{d}/m{i}.1.diff", "wb") as f:
            f.truncate(2 * P)
            f.seek(P)
            f.write(bytes([(i + 7) % 251 + 1]) * P)
PY
mount_snapfs "$S" "$M"
find "$M/big" -mindepth 1 -maxdepth 1 -printf '%f %i\n' | LC_ALL=C sort >"$T/find"
[ "$(grep -c -v '\.' "$T/find")" = "$NAMES" ] ||
	fail "find lists $(grep -c -v '\.' "$T/find") layered names, want $NAMES"
(cd "$M/big" && LC_ALL=C stat -c '%n %i' -- *) | LC_ALL=C sort >"$T/stat"
d=$(diff "$T/find" "$T/stat" | grep '^[<>]' | head -n 4 | tr '\n' ' ')
[ -z "$d" ] || fail "d_ino from readdir differs from st_ino: $d"
[ "$(cut -d' ' -f2 "$T/find" | sort | uniq -d | head -n 1)" = "" ] ||
	fail "two entries share an inode number"
python3 - "$M/big" "$NAMES" <<'PY' || fail "a view differs from its merge"
import sys
d, n = sys.argv[1], int(sys.argv[2])
P = 4096
for i in range(n):
    want = bytes([i % 251 + 1]) * P
    want += bytes([(i + 7) % 251 + 1]) * P if i % 3 == 0 else want
    with open(f"{d}/m{i}", "rb") as f:
        if f.read() != want:
            sys.exit(f"m{i} differs")
PY
umount_snapfs "$M"

# ---- the big directory by `ls -l`: its first readdirplus carries no
# attributes (a listing this long: doc/design.md §2), so `ls -l` gets
# those entries by lookups and the rest by readdirplus; both must agree
# with fresh lookups ----
mount_snapfs "$S" "$M"
mapfile -t bents < <(cd "$M/big" && LC_ALL=C ls -A)
[ "${#bents[@]}" -gt 2048 ] || fail "big lists ${#bents[@]} entries"
LC_ALL=C ls -lA "$M/big" >"$T/ls-l"
[ "$(grep -c '^-' "$T/ls-l")" = "${#bents[@]}" ] ||
	fail "ls -l shows $(grep -c '^-' "$T/ls-l") files of ${#bents[@]}"
attrs "$M/big" "${bents[@]}" >"$T/bplus"
forget_all
attrs "$M/big" "${bents[@]}" >"$T/blookup"
d=$(diff "$T/bplus" "$T/blookup" | grep '^[<>]' | head -n 4 | tr '\n' ' ')
[ -z "$d" ] || fail "ls -l of a big directory and lookups disagree: $d"
umount_snapfs "$M"
log "ok"
