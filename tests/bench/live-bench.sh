#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# live-bench.sh: how live the live store is. On a fresh snapfs mount it runs
# `churn -b`, which measures (1) the time from a diff's rename() into STORE,
# or a rollback's unlink(), to a new open of the view showing the new chain
# (polled every 1 ms, over PUBLISHES publishes), and (2) the read throughput
# of the view quiet and while a publisher links and unlinks diffs every
# PERIOD_MS (O_DIRECT reads, so the daemon's read path is timed, not the
# page cache; each reader reopens the view after reading as many bytes as it
# holds; median of 9 runs each). Prints a markdown table with the
# targets of the issue: p99 <= 100 ms, churn/quiet >= 0.9.
#
# Run from the top build directory (a build without sanitizers gives the
# figures worth publishing). Settings (environment):
#   BUILDDIR=.              where snapfs and tests/tools/churn were built
#   BENCH_DIR=/var/tmp      work directory parent
#   LIVE_SIZE_MB=64         size of the view
#   LIVE_PUBLISHES=100      publishes timed
#   LIVE_SECS=2             seconds per throughput run
#   LIVE_READERS=2          reader threads
#   LIVE_PERIOD_MS=20       pause between the churning publisher's operations
#   LIVE_OUT=$BUILDDIR/live-bench.md   the report
#   BENCH_SNAPFS_OPTS=      extra options for snapfs, e.g. "-o nowatch"

set -u

BUILDDIR=${BUILDDIR:-.}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
LIVE_SIZE_MB=${LIVE_SIZE_MB:-64}
LIVE_PUBLISHES=${LIVE_PUBLISHES:-100}
LIVE_SECS=${LIVE_SECS:-2}
LIVE_READERS=${LIVE_READERS:-2}
LIVE_PERIOD_MS=${LIVE_PERIOD_MS:-20}
LIVE_OUT=${LIVE_OUT:-$BUILDDIR/live-bench.md}
BENCH_SNAPFS_OPTS=${BENCH_SNAPFS_OPTS:-}
SNAPFS=${SNAPFS:-$BUILDDIR/snapfs}
CHURN=${CHURN:-$BUILDDIR/tests/tools/churn}
FUSERMOUNT=${FUSERMOUNT:-fusermount3}

die() {
	echo "live-bench.sh: $*" >&2
	exit 1
}

case ${1:-} in
-h|--help) sed -n '3,23s/^# \{0,1\}//p' "$0"; exit 0 ;;
"") ;;
*) die "no arguments expected (settings are environment variables; see --help)" ;;
esac

for b in "$SNAPFS" "$CHURN"; do
	[ -x "$b" ] || die "$b not found: build it first (make snapfs tests/tools/churn), or set BUILDDIR"
done
[ -c /dev/fuse ] || die "/dev/fuse is missing"
command -v "$FUSERMOUNT" >/dev/null || die "$FUSERMOUNT not found (Debian: fuse3)"

W=$(mktemp -d "$BENCH_DIR/snapfs-live-bench.XXXXXX") || die "cannot create a work directory in $BENCH_DIR"
MPID=""
cleanup() {
	rc=$?
	trap - EXIT INT TERM
	if grep -qs " $W/mnt fuse" /proc/self/mounts; then
		"$FUSERMOUNT" -u -z "$W/mnt" 2>/dev/null
	fi
	[ -n "$MPID" ] && kill "$MPID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$W"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$W/store/vm1" "$W/mnt"
mkfifo "$W/ready"
# The compactor is off: the latency runs build chains 10 diffs deep, and a
# compaction in the middle would be timed as well.
# shellcheck disable=SC2086
"$SNAPFS" -f -o ready_fd=3 -o compact=off $BENCH_SNAPFS_OPTS "$W/store" "$W/mnt" \
	3>"$W/ready" 2>"$W/snapfs.log" &
MPID=$!
got=$(timeout 60 head -c1 "$W/ready" | wc -c)
[ "$got" = 1 ] || { cat "$W/snapfs.log" >&2; die "snapfs did not become ready"; }

echo "live-bench.sh: ${LIVE_SIZE_MB} MiB view, $LIVE_PUBLISHES publishes, ${LIVE_SECS} s x 9 runs per throughput figure" >&2
"$CHURN" -b -S "$LIVE_SIZE_MB" -n "$LIVE_PUBLISHES" -T "$LIVE_SECS" -r "$LIVE_READERS" \
	-p "$LIVE_PERIOD_MS" "$W/store/vm1" "$W/mnt/vm1" memory.bin >"$W/churn.out" ||
	{ cat "$W/churn.out" >&2; die "churn -b failed"; }
cat "$W/churn.out" >&2

"$FUSERMOUNT" -u "$W/mnt" || die "unmount failed"
wait "$MPID"
st=$?
MPID=""
[ "$st" = 0 ] || echo "live-bench.sh: warning: snapfs exited $st after unmount" >&2

# field LINE-KEY NAME: the value of NAME=... on the churn output line KEY.
field() {
	awk -v k="$1" -v n="$2" '$1 == k { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == n) print a[2] } }' \
		"$W/churn.out"
}
check() {
	awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
		if (v !~ /^[0-9.]+$/) { print "FAIL"; exit }
		ok = (op == "ge") ? (v + 0 >= l + 0) : (v + 0 <= l + 0)
		print ok ? "PASS" : "FAIL" }'
}

pub_med=$(field publish_latency_ms median) pub_p99=$(field publish_latency_ms p99)
pub_max=$(field publish_latency_ms max) pub_n=$(field publish_latency_ms n)
pub_to=$(field publish_latency_ms timeouts)
rb_med=$(field rollback_latency_ms median) rb_p99=$(field rollback_latency_ms p99)
rb_n=$(field rollback_latency_ms n)
rq=$(field read_rand4k_MBps quiet) rc=$(field read_rand4k_MBps churn) rr=$(field read_rand4k_MBps ratio)
sq=$(field read_seq1m_MBps quiet) sc=$(field read_seq1m_MBps churn) sr=$(field read_seq1m_MBps ratio)
ops=$(awk '$1 == "churn_ops_per_s" { print $2 }' "$W/churn.out")
estale=$(field failed_opens estale) eio=$(field failed_opens eio)
if ldd "$SNAPFS" 2>/dev/null | grep -q libasan; then san="yes (ASan+UBSan: slower)"; else san=no; fi

{
	echo "### Live store: publish latency and reads under churn"
	echo
	echo "$("$SNAPFS" --version 2>&1 | grep -m 1 "^snapfs") on Linux $(uname -r), $(nproc) CPUs;"
	echo "STORE on $(stat -f -c %T "$W"); a ${LIVE_SIZE_MB} MiB view; sanitizers: $san."
	echo "Reproduce: \`tests/bench/live-bench.sh\` from the build directory."
	echo
	echo "| Measure | Result | Target | |"
	echo "|---|---|---|---|"
	echo "| rename() into STORE -> new open shows the diff, median | $pub_med ms | | |"
	echo "| ... p99 over $pub_n publishes (max $pub_max ms, $pub_to timeouts) | $pub_p99 ms | <= 100 ms | $(check "$pub_p99" le 100) |"
	echo "| unlink() of the top diff -> new open shows the rollback, median / p99 over $rb_n | $rb_med / $rb_p99 ms | | |"
	echo "| random 4 KiB O_DIRECT reads, $LIVE_READERS threads, quiet | $rq MB/s | | |"
	echo "| ... while a publisher churns ($ops changes/s) | $rc MB/s (${rr}x) | >= 0.9x | $(check "$rr" ge 0.9) |"
	echo "| 1 MiB sequential O_DIRECT reads, $LIVE_READERS threads, quiet | $sq MB/s | | |"
	echo "| ... while a publisher churns | $sc MB/s (${sr}x) | >= 0.9x | $(check "$sr" ge 0.9) |"
	echo "| opens of the view answered EIO while churning | $eio | 0 | $(check "$eio" le 0) |"
	echo
	echo "Latency is polled with a new open() + fgetxattr(user.snapfs.chain) every"
	echo "1 ms, so it includes up to 1 ms of polling. Each reader reopens the view"
	echo "after reading as many bytes as the view holds (random or sequential), so"
	echo "under churn it opens new versions; O_DIRECT keeps the page cache out of"
	echo "both figures. The churning publisher hard-links prepared diffs into place"
	echo "and unlinks them (chain depth 6 to 10) every $LIVE_PERIOD_MS ms. Throughput"
	echo "figures are the median of 9 runs of $LIVE_SECS s, quiet and churning runs"
	echo "interleaved."
	echo "Opens answered ESTALE while churning (the chain moved twice during one"
	echo "open; the reader opened again): $estale."
} >"$LIVE_OUT"
cat "$LIVE_OUT"
