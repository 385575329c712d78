#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Revalidation that trusts no cached directory attributes (doc/distributed.md
# §3.1). The store is seen through a FUSE filesystem that caches names and
# attributes for an hour (tests/bench/passthrough_ro), as an NFS client
# caches a directory's times for 30-60 s: fstat(2) of the store's directory
# there keeps answering the times of an hour ago. snapfs does not watch a
# FUSE store (changes may come from elsewhere), so it revalidates names
# every -o revalidate seconds; each revalidation must fetch the directory's
# times from the server (statx AT_STATX_FORCE_SYNC), or a publish made
# underneath, as another host would, is not seen for the hour. Publishes
# and rollbacks made in the directory under the FUSE filesystem must be
# served, byte for byte, within revalidate + MH_SLACK_MS. (The FUSE mount is
# read-only: on a writable one the kernel drops a directory's cached times
# after each listing, to update its atime, which would hide the problem.
# With fstat(2) instead of the forced statx this test fails: checked.)
. ./tests/mount/lib.sh
setup
PT="$abs_top_builddir/tests/bench/passthrough_ro"
ROLLBACK="$abs_top_builddir/snapfs-rollback"
[ -x "$PT" ] || fail "$PT is not built (make check builds it)"

SRC=$T/src P=$T/pt M=$T/mnt R=$T/ref
REVAL=0.2 REVAL_MS=200
SLACK_MS=${MH_SLACK_MS:-1000}
SZ=$((64 * PAGE))
mkdir -p "$SRC" "$P" "$R"

# publish SEQ PAGE BYTE: diff SEQ of mem with one page, published by rename
# in SRC; the reference after it is kept as R/mem.SEQ.
publish() {
	local tmp=$SRC/.mem.$1.tmp
	mk_sparse "$tmp" "$SZ"
	write_page "$tmp" "$2" "$3"
	write_page "$R/mem" "$2" "$3"
	mv "$tmp" "$SRC/mem.$1.diff" || fail "publish $1"
	cp --sparse=always "$R/mem" "$R/mem.$1" || fail "ref copy"
}

# serves SEQ: the view's newest layer is diff SEQ and it reads as R/mem.SEQ.
serves() {
	local chain
	chain=$(xattr "$M/mem" user.snapfs.chain 2>/dev/null) || return 1
	case ",$chain" in *",mem.$1.diff") ;; *) return 1 ;; esac
	cmp -s "$M/mem" "$R/mem.$1"
}

shown() {
	local limit=$((REVAL_MS + SLACK_MS))
	wait_for $((limit + 5000)) serves "$2" || fail "$1: not served after $WAITED_MS ms"
	[ "$WAITED_MS" -le "$limit" ] || fail "$1: served after $WAITED_MS ms, more than $limit"
	DELAYS+=("$1=${WAITED_MS}ms")
}

mk_sparse "$SRC/mem.0.base" "$SZ"
mk_sparse "$R/mem" "$SZ"
write_page "$SRC/mem.0.base" 0 7
write_page "$R/mem" 0 7
publish 1 3 1
publish 2 5 2

fifo=$T/pt.ready
mkfifo "$fifo"
"$PT" -f -o ready_fd=3,ro "$SRC" "$P" 3>"$fifo" >"$T/pt.log" 2>&1 &
PIDS+=("$!")
MOUNTS+=("$P")
read -r -n 1 -t 20 _ <"$fifo" || fail "passthrough_ro did not become ready"
rm -f "$fifo"

# The premise: the FUSE client serves the directory's times from its cache.
before=$(stat -c %y "$P")
sleep 0.05
: >"$SRC/probe" && rm -f "$SRC/probe"
[ "$(stat -c %y "$P")" = "$before" ] ||
	fail "the FUSE stand-in does not cache the directory's times: the test proves nothing"

mount_snapfs "$P" "$M" -o revalidate=$REVAL,compact=off
DELAYS=()
shown start 2
publish 3 9 3
shown "publish 3" 3
publish 4 11 4
shown "publish 4" 4
"$ROLLBACK" -q "$SRC/mem" || fail "snapfs-rollback failed"
shown "rollback to 3" 3
log "delays (bound ${REVAL_MS} ms + ${SLACK_MS} ms slack): ${DELAYS[*]}"
umount_snapfs "$M"
