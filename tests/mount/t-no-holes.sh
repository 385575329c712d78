#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A store on a filesystem that reports no holes (doc/distributed.md; sshfs
# and some FUSE and SMB setups): SEEK_DATA finds every file all data, so
# every diff looks dense. The store here is served through
# tests/bench/passthrough_ro -o hideholes, a FUSE filesystem without an
# lseek method: the kernel then answers SEEK_DATA with the offset and
# SEEK_HOLE with the size, for every file, while st_blocks still tells how
# sparse the files are.
# snapfs must say so in ONE log line naming the filesystem (its type and
# mount point), not one line per chain; every chain with diffs answers EIO
# with the cause in user.snapfs.error; a chain that is a base alone is
# served byte for byte.
. ./tests/mount/lib.sh
setup
PT="$abs_top_builddir/tests/bench/passthrough_ro"
[ -x "$PT" ] || fail "$PT is not built (make check builds it)"

SRC=$T/src P=$T/pt M=$T/mnt
SZ=$((256 * PAGE))
mkdir -p "$SRC" "$P"

# Five chains with diffs, one base alone; passthrough_ro shows a flat
# directory of regular files.
for n in 1 2 3 4 5; do
	mk_sparse "$SRC/vm$n.0.base" "$SZ"
	write_page "$SRC/vm$n.0.base" 0 "$n"
	mk_sparse "$SRC/vm$n.1.diff" "$SZ"
	write_page "$SRC/vm$n.1.diff" 3 $((n + 10))
done
mk_sparse "$SRC/solo.0.base" "$SZ"
write_page "$SRC/solo.0.base" 7 99
cp --sparse=always "$SRC/solo.0.base" "$T/solo.ref"

# The passthrough daemon, recorded for cleanup like snapfs's.
fifo=$T/pt.ready
mkfifo "$fifo"
"$PT" -f -o ready_fd=3,hideholes "$SRC" "$P" 3>"$fifo" >"$T/pt.log" 2>&1 &
PT_PID=$!
PIDS+=("$PT_PID")
MOUNTS+=("$P")
read -r -n 1 -t 20 _ <"$fifo" || fail "passthrough_ro did not become ready"
rm -f "$fifo"
# The premise: holes are hidden there, yet the blocks say sparse.
data=$(xfs_io -r -c "seek -h 0" "$P/vm1.1.diff" 2>/dev/null | awk '$1 == "HOLE" { print $2 }')
[ "$data" = "$SZ" ] || fail "passthrough_ro reports a hole at ${data:-?}, not none: the premise fails"
[ $(($(stat -c %b "$P/vm1.1.diff") * 512)) -lt "$SZ" ] || fail "the diff is not sparse underneath"

# Mounted on top (outside the store: STORE's own root must be the
# passthrough mount).
mount_snapfs "$P" "$M" -o compact=off
for n in 1 2 3 4 5; do
	expect_err "Input/output error" cat "$M/vm$n"
	err=$(xattr "$M/vm$n" user.snapfs.error 2>&1) || fail "vm$n: no user.snapfs.error: $err"
	case $err in
	*"vm$n.1.diff is on a filesystem that reports no holes"*) ;;
	*) fail "vm$n: user.snapfs.error is \"$err\"" ;;
	esac
done
cmp "$M/solo" "$T/solo.ref" || fail "a base alone differs on that filesystem"

n=$(log_count "reports no holes")
[ "$n" = 1 ] || fail "$n log lines about the missing holes, want exactly 1: $(grep -F 'no holes' "$T/snapfs.log")"
[ "$(log_count "reports no holes" "fuse.passthrough_ro at $P ")" = 1 ] ||
	fail "the line does not name the filesystem and its mount: $(grep -F 'no holes' "$T/snapfs.log")"
[ "$(log_count "unusable")" = 0 ] || fail "per-chain lines: $(grep -F unusable "$T/snapfs.log")"
log "$(grep -F 'reports no holes' "$T/snapfs.log")"
umount_snapfs "$M"
