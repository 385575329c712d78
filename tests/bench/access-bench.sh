#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The cost of an open through the mount, the daemon's access check included
# (doc/design.md, "Access control"), for `make bench-access`: layered files
# of 1 and 64 diffs are opened and closed OPENS times (default 20000) by
# root and by the unprivileged user `nobody`, with -o allow_other, REPS
# times (default 7) each, alternating. Prints one line per depth and
# requester: the median and the minimum over the repetitions of the mean
# microseconds per open+close pair (the machine's other load is noise). Run
# from the build directory as root; SNAPFS=path picks another daemon
# binary (to compare with an older build).
set -euo pipefail

SNAPFS=${SNAPFS:-$PWD/snapfs}
READBENCH=${READBENCH:-$PWD/tests/bench/readbench}
OPENS=${OPENS:-20000}
REPS=${REPS:-7}
PAGE=4096

[ "$(id -u)" = 0 ] || { echo "access-bench.sh: run as root" >&2; exit 1; }
id nobody >/dev/null 2>&1 || { echo "access-bench.sh: no user nobody" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/var/tmp}/snapfs-access-bench.XXXXXX")
PID=
cleanup() {
	set +e
	mountpoint -q "$T/mnt" && fusermount3 -u -z "$T/mnt"
	[ -n "$PID" ] && wait "$PID"
	rm -rf "$T"
}
trap cleanup EXIT
chmod 0755 "$T"
mkdir -p "$T/store" "$T/mnt"

# dN: a 1 MiB base and N one-page diffs, every layer 0644.
for depth in 1 64; do
	f=$T/store/d$depth
	truncate -s 1M "$f.0.base"
	printf 'base' | dd of="$f.0.base" conv=notrunc status=none
	for ((i = 1; i <= depth; i++)); do
		truncate -s 1M "$f.$i.diff"
		printf 'diff' | dd of="$f.$i.diff" bs=$PAGE seek=$((i % 256)) conv=notrunc status=none
	done
done

"$SNAPFS" -f -o allow_other,compact=off "$T/store" "$T/mnt" >"$T/snapfs.log" 2>&1 &
PID=$!
for ((i = 0; i < 100; i++)); do
	mountpoint -q "$T/mnt" && break
	sleep 0.1
done
mountpoint -q "$T/mnt" || { cat "$T/snapfs.log" >&2; exit 1; }

# stats V...: "median M us, min N us" of the numbers V.
stats() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
		END { printf "median %.1f us, min %.1f us", v[int((NR + 1) / 2)], v[1] }'
}

for depth in 1 64; do
	f=$T/mnt/d$depth
	cat "$f" >/dev/null	# the view is built and its maps cached
	root=() user=()
	for ((r = 0; r < REPS; r++)); do
		x=$("$READBENCH" opens "$f" -n "$OPENS")
		root+=("$(echo "$x" | awk '{ print $2 }')")
		x=$(setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
			"$READBENCH" opens "$f" -n "$OPENS")
		user+=("$(echo "$x" | awk '{ print $2 }')")
	done
	echo "depth $depth, root:   $(stats "${root[@]}") per open+close"
	echo "depth $depth, nobody: $(stats "${user[@]}") per open+close"
done
