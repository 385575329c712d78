#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# snapfs-compact's progress line: shown on a terminal (script(1) gives it
# one) with chains done/total, MiB written and the rate; never when stderr
# is not a terminal, nor with -q. The chains' own lines stay on stdout.
. ./tests/mount/lib.sh
setup

command -v script >/dev/null || fail "script(1) (bsdutils) is missing"

# mkchains DIR: two layered files of 4 diffs each, in two directories.
mkchains() {
	local d i
	for d in a b; do
		mkdir -p "$1/$d"
		head -c $((4 << 20)) /dev/urandom >"$1/$d/m.1.base"
		for i in 2 3 4 5; do
			mk_sparse "$1/$d/m.$i.diff" $((4 << 20))
			write_page "$1/$d/m.$i.diff" $((i * 10)) $((i + 1))
		done
	done
}

mkchains "$T/tty"
script -qec "$SNAPFS_COMPACT -t 2 -k 1 $T/tty" /dev/null >"$T/tty.out" 2>&1 ||
	fail "snapfs-compact on a terminal: $(cat "$T/tty.out")"
grep -q "chains 0/2, 0.0 MiB written" "$T/tty.out" || fail "no progress line: $(cat -v "$T/tty.out")"
grep -q "chains 1/2, [0-9.]* MiB written, [0-9.]* MiB/s" "$T/tty.out" ||
	fail "no progress after the first chain: $(cat -v "$T/tty.out")"
grep -q "a/m: merging 4 layers .*: done" "$T/tty.out" || fail "a/m's line is missing"

mkchains "$T/q"
script -qec "$SNAPFS_COMPACT -q -t 2 -k 1 $T/q" /dev/null >"$T/q.out" 2>&1 ||
	fail "snapfs-compact -q: $(cat "$T/q.out")"
grep -q "MiB written," "$T/q.out" && fail "a progress line with -q: $(cat -v "$T/q.out")"

mkchains "$T/pipe"
"$SNAPFS_COMPACT" -t 2 -k 1 "$T/pipe" >"$T/pipe.out" 2>"$T/pipe.err" ||
	fail "snapfs-compact into a pipe: $(cat "$T/pipe.err")"
grep -q "MiB written," "$T/pipe.err" && fail "a progress line off a terminal"
[ "$(grep -c ': done' "$T/pipe.out")" = 2 ] || fail "the chains' lines: $(cat "$T/pipe.out")"
log "ok: progress on a terminal only"
