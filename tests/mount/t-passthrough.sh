#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Everything in STORE that is not a layered file passes through read-only
# and unchanged (doc/format.md §3): contents, modes, owners, times, symlinks (never
# resolved by snapfs, even when they point outside STORE), hard links,
# special files, and names that only look like layers.
. ./tests/mount/lib.sh
setup

S=$T/store/root M=$T/mnt
mkdir -p "$S/a/b/c" "$S/empty" "$S/vm1" "$T/outside"

head -c $((5 << 20)) /dev/urandom >"$S/a/big.bin"
head -c 1 /dev/urandom >"$S/a/one"
: >"$S/a/zero-length"
printf 'nested\n' >"$S/a/b/c/deep.txt"
truncate -s 3M "$S/a/sparse.img"
printf 'x' | dd of="$S/a/sparse.img" bs=1 seek=2000000 conv=notrunc status=none
printf 'spaces\n' >"$S/a/name with spaces"
chmod 0640 "$S/a/big.bin"
chmod 4755 "$S/a/one"
chmod 0700 "$S/a/b"
chown 4321:8765 "$S/a/b/c/deep.txt" "$S/a/b"
touch -d '2001-02-03 04:05:06.123456789' "$S/a/big.bin" "$S/a/b/c"

# Names with the layer shape but no NAME, and temp files of producers.
printf 'dot-one\n' >"$S/vm1/.1.diff"
printf 'tmp\n' >"$S/vm1/.memory.bin.3.diff.tmp"
printf 'noseq\n' >"$S/vm1/memory.bin.x.diff"
printf 'kind\n' >"$S/vm1/memory.bin.1.diffs"

# Symlinks: inside STORE, to a directory, dangling, and out of STORE both
# absolute and relative (from the mount, the relative one leads nowhere).
printf 'secret\n' >"$T/store/secret"
printf 'secret\n' >"$T/outside/secret"
ln -s big.bin "$S/a/link-in"
ln -s b/c "$S/a/link-dir"
ln -s nowhere "$S/a/link-dangling"
ln -s "$T/outside/secret" "$S/a/link-abs-out"
ln -s ../../secret "$S/a/link-rel-out"

# A layer that is a symlink to a file outside STORE is never followed.
head -c $((4 * PAGE)) /dev/urandom >"$S/vm1/memory.bin.0.base"
mk_sparse "$T/outside/evil.diff" $((4 * PAGE))
write_page "$T/outside/evil.diff" 1 66
ln -s "$T/outside/evil.diff" "$S/vm1/memory.bin.1.diff"

# Hard links, a fifo and a device node.
printf 'linked\n' >"$S/a/hl1"
ln "$S/a/hl1" "$S/a/hl2"
mkfifo -m 0620 "$S/a/fifo"
mknod -m 0666 "$S/a/null" c 1 3

mount_snapfs "$S" "$M"

# Contents and attributes of every file and directory.
(cd "$S" && find . \( -type f -o -type d \) -printf '%p\n') | LC_ALL=C sort >"$T/entries"
[ "$(wc -l <"$T/entries")" -ge 12 ] || fail "setup made too few entries"
while IFS= read -r p; do
	s=$S/$p m=$M/$p
	fmt='%F %a %u %g %s %h %Y.%y'
	[ "$(stat -c "$fmt" "$m")" = "$(stat -c "$fmt" "$s")" ] ||
		fail "$p: stat '$(stat -c "$fmt" "$m")' want '$(stat -c "$fmt" "$s")'"
	[ "$(stat -c %i "$m")" = "$(stat -c %i "$s")" ] || fail "$p: st_ino differs"
	if [ -f "$s" ]; then
		cmp "$m" "$s" || fail "$p: content differs"
	fi
done <"$T/entries"
# Whole trees by checksum, as a person would compare them.
(cd "$S/a" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >"$T/sum.s"
(cd "$M/a" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >"$T/sum.m"
diff "$T/sum.s" "$T/sum.m" || fail "sha256sum of the tree differs"
[ "$(LC_ALL=C ls -A "$M/a")" = "$(LC_ALL=C ls -A "$S/a")" ] || fail "ls of a/ differs"
[ "$(LC_ALL=C ls -A "$M/empty")" = "" ] || fail "empty dir is not empty"

# The sparse file keeps its holes through the mount.
[ "$(xfs_io -r -c 'seek -d 0' "$M/a/sparse.img" | awk '$1 == "DATA" { print $2 }')" = \
	"$(xfs_io -r -c 'seek -d 0' "$S/a/sparse.img" | awk '$1 == "DATA" { print $2 }')" ] ||
	fail "sparse.img: SEEK_DATA differs"

# Symlinks are symlinks with their own text.
for l in link-in link-dir link-dangling link-abs-out link-rel-out; do
	[ "$(stat -c %F "$M/a/$l")" = "symbolic link" ] || fail "$l is a $(stat -c %F "$M/a/$l")"
	[ "$(readlink "$M/a/$l")" = "$(readlink "$S/a/$l")" ] ||
		fail "$l reads as '$(readlink "$M/a/$l")'"
done
cmp "$M/a/link-in" "$S/a/big.bin" || fail "link-in does not lead to big.bin"
[ "$(cat "$M/a/link-dir/deep.txt")" = nested ] || fail "link-dir does not lead to b/c"
expect_err "No such file or directory" cat "$M/a/link-dangling"
# ../../secret from the mount's a/ is $T/secret, which does not exist: snapfs
# handed back the text and did not resolve it inside STORE's filesystem.
expect_err "No such file or directory" cat "$M/a/link-rel-out"

# Names that only look like layers are ordinary files.
for f in .1.diff .memory.bin.3.diff.tmp memory.bin.x.diff memory.bin.1.diffs; do
	cmp "$M/vm1/$f" "$S/vm1/$f" || fail "vm1/$f differs"
	is_synthetic_ino "$(stat -c %i "$M/vm1/$f")" && fail "vm1/$f is shown as a view"
done

# The layer symlinked out of STORE makes its view unusable, and is itself
# only a symlink at the mount.
expect_err "Input/output error" cat "$M/vm1/memory.bin"
[ "$(log_count " vm1/memory.bin: unusable:" "symbolic link")" = 1 ] ||
	fail "no log line for the out-of-STORE layer"
[ "$(stat -c %F "$M/vm1/memory.bin.1.diff")" = "symbolic link" ] || fail "layer symlink not a symlink"
[ "$(readlink "$M/vm1/memory.bin.1.diff")" = "$T/outside/evil.diff" ] || fail "layer symlink text"

# Hard links share an inode; special files keep their type.
[ "$(stat -c %i "$M/a/hl1")" = "$(stat -c %i "$M/a/hl2")" ] || fail "hard links differ in st_ino"
[ "$(stat -c %h "$M/a/hl1")" = 2 ] || fail "hard link count is not 2"
[ "$(stat -c '%F %a' "$M/a/fifo")" = "fifo 620" ] || fail "fifo shows as $(stat -c '%F %a' "$M/a/fifo")"
[ "$(stat -c '%F %t:%T' "$M/a/null")" = "character special file 1:3" ] ||
	fail "device shows as $(stat -c '%F %t:%T' "$M/a/null")"
# The mount is nodev: a device node in STORE gives no device access.
expect_err "Permission denied" sh -c 'echo x >"$1"' sh "$M/a/null"

# No name, however shaped, disturbs "." and "..": their entries stay
# directories (a file ..1.base would make NAME ".").
printf 'dots\n' >"$S/vm1/..1.base"
printf 'dots\n' >"$S/vm1/...1.base"
umount_snapfs "$M"
mount_snapfs "$S" "$M"
for f in ..1.base ...1.base; do
	cmp "$M/vm1/$f" "$S/vm1/$f" || fail "vm1/$f differs"
done
[ "$(cd "$M/vm1" && stat -c %F . .. | tr '\n' ' ')" = "directory directory " ] ||
	fail "vm1: . or .. is not a directory"
if command -v python3 >/dev/null 2>&1; then
	python3 - "$M/vm1" >"$T/getdents.out" 2>&1 <<'EOF' || fail "vm1: getdents: $(cat "$T/getdents.out")"
import ctypes, os, platform, struct, sys
nr = {"x86_64": 217, "aarch64": 61}.get(platform.machine())
if nr is None:
    sys.exit(0)  # getdents64 number unknown here: not checked
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(1 << 16)
seen = {}
while True:
    n = libc.syscall(nr, fd, buf, len(buf))  # getdents64
    if n <= 0:
        break
    raw, off = buf.raw[:n], 0
    while off < n:
        ino, _, reclen, typ = struct.unpack_from("QqHB", raw, off)
        name = raw[off + 19:off + reclen].split(b"\0")[0].decode()
        seen.setdefault(name, []).append(typ)
        off += reclen
for d in (".", ".."):
    if seen.get(d) != [4]:  # DT_DIR, once
        sys.exit("%s listed as d_type %s" % (d, seen.get(d)))
EOF
fi
umount_snapfs "$M"
log "ok"
