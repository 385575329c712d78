#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The mount is read-only (doc/format.md §3): every way to write, through every kind of
# entry (view, layer file, ordinary file, directory), answers EROFS and leaves
# STORE byte for byte and timestamp for timestamp as it was; a private
# writable mapping of a view still works, copy-on-write.
. ./tests/mount/lib.sh
setup

S=$T/store M=$T/mnt
SZ=$((32 * PAGE))
mkdir -p "$S/vm1/sub"
head -c "$SZ" /dev/urandom >"$S/vm1/memory.bin.0.base"
mk_sparse "$S/vm1/memory.bin.1.diff" "$SZ"
write_page "$S/vm1/memory.bin.1.diff" 3 7
mk_sparse "$S/vm1/memory.bin.2.diff" "$SZ"
write_page "$S/vm1/memory.bin.2.diff" 9 8
head -c 5000 /dev/urandom >"$S/vm1/vmstate.bin"
echo "config" >"$S/vm1/sub/config.json"
ln -s vmstate.bin "$S/vm1/link"
chmod 0644 "$S/vm1/memory.bin.0.base"

# A listing of everything that could change: names, sizes, mtimes, modes,
# link targets, contents and user xattrs.
snapshot() {
	(
		cd "$S" || exit 1
		find . -printf '%p %y %s %T@ %C@ %m %l\n' | LC_ALL=C sort
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
		getfattr --absolute-names -R -d -m - . 2>/dev/null
	) >"$1" || fail "cannot list STORE"
}
snapshot "$T/before"

mount_snapfs "$S" "$M"
V=$M/vm1/memory.bin
cmp -s "$V" "$S/vm1/memory.bin.0.base" && fail "view equals its base: setup is wrong"
cp "$V" "$T/view.ref"

EROFS="Read-only file system"
for f in "$V" "$M/vm1/memory.bin.2.diff" "$M/vm1/vmstate.bin"; do
	expect_err "$EROFS" sh -c 'echo x >>"$1"' sh "$f"	# O_APPEND
	expect_err "$EROFS" sh -c ': >"$1"' sh "$f"		# O_TRUNC
	expect_err "$EROFS" sh -c 'exec 3<>"$1"' sh "$f"	# O_RDWR
	expect_err "$EROFS" touch "$f"				# utimensat
	expect_err "$EROFS" touch -d @1000000000 "$f"
	expect_err "$EROFS" truncate -s 0 "$f"
	expect_err "$EROFS" chmod 0600 "$f"
	expect_err "$EROFS" chown 1:1 "$f"
	expect_err "$EROFS" setfattr -n user.test -v 1 "$f"
	expect_err "$EROFS" setfattr -x user.snapfs.chain "$f"
	# The top diff may be unlinked (rollback, t-live-rollback.sh).
	[ "$f" = "$M/vm1/memory.bin.2.diff" ] || expect_err "$EROFS" rm -f "$f"
	expect_err "$EROFS" mv "$f" "$M/vm1/moved"
	expect_err "$EROFS" mv "$f" "$f.renamed"
	expect_err "$EROFS" ln "$f" "$M/vm1/hardlink"
	expect_err "$EROFS" dd if=/dev/zero of="$f" bs=1 count=1 conv=notrunc status=none
done
# The access(2) answer agrees.
[ -w "$V" ] && fail "view reports itself writable"
[ -w "$M/vm1/vmstate.bin" ] && fail "ordinary file reports itself writable"

# The other layers of the chain are busy: only the top diff may go.
EBUSY="Device or resource busy"
expect_err "$EBUSY" rm -f "$M/vm1/memory.bin.0.base"
expect_err "$EBUSY" rm -f "$M/vm1/memory.bin.1.diff"

# Directories and the namespace.
expect_err "$EROFS" mkdir "$M/vm1/newdir"
expect_err "$EROFS" rmdir "$M/vm1/sub"
expect_err "$EROFS" rm -rf "$M/vm1/sub"
expect_err "$EROFS" mv "$M/vm1/sub" "$M/vm1/sub2"
expect_err "$EROFS" touch "$M/vm1/newfile"			# create
expect_err "$EROFS" sh -c 'echo x >"$1"' sh "$M/vm1/new2"
expect_err "$EROFS" ln -s vmstate.bin "$M/vm1/newlink"
expect_err "$EROFS" mkfifo "$M/vm1/fifo"
expect_err "$EROFS" mknod "$M/vm1/null" c 1 3
expect_err "$EROFS" rm -f "$M/vm1/link"
expect_err "$EROFS" touch -h "$M/vm1/link"
expect_err "$EROFS" touch "$M/vm1"
expect_err "$EROFS" chmod 0700 "$M/vm1"
expect_err "$EROFS" setfattr -n user.test -v 1 "$M/vm1"

# Mappings: a shared writable one is refused (the file is open read-only),
# a private writable one works and its writes stay private.
if command -v python3 >/dev/null 2>&1; then
	python3 - "$V" "$SZ" <<'EOF' || fail "mmap checks failed"
import mmap, os, sys
path, size = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
try:
    mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sys.exit("MAP_SHARED|PROT_WRITE of a read-only view succeeded")
except PermissionError:
    pass
m = mmap.mmap(fd, size, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE)
orig = m[:]
for off in range(0, size, 4096 * 3):
    m[off:off + 5] = b"HELLO"
for off in range(0, size, 4096 * 3):
    if m[off:off + 5] != b"HELLO":
        sys.exit("private write not visible in the mapping at %d" % off)
if os.pread(fd, size, 0) != orig:
    sys.exit("a private write reached the file")
m.close()
m = mmap.mmap(fd, size, mmap.MAP_PRIVATE, mmap.PROT_READ)
if m[:] != orig:
    sys.exit("a new mapping sees an earlier private write")
EOF
else
	log "python3 not found: mmap sub-checks skipped"
fi

cmp "$V" "$T/view.ref" || fail "view content changed"
umount_snapfs "$M"

snapshot "$T/after"
diff -u "$T/before" "$T/after" || fail "STORE changed"
log "ok"
