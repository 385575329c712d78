#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The long run of tests/mount/t-rollback-race.sh: rollbacks (snapfs-rollback,
# `flock DIR rm`, unlink through the mount) racing with the daemon's
# compaction for MINUTES minutes (default 10) instead of the 90 s that
# `make check` gives it, on a built tree; it must end with 0 lost rollbacks.
# Runs as root (FUSE and a loop XFS); niced, since it keeps two CPUs busy.
#
#   contrib/soak-rollback.sh [-b BUILD_DIR] [MINUTES]
#
# BUILD_DIR (default: the current directory) is a configured and built tree
# (`make && make check TESTS=` builds the test tools). Set SNAPFS_SEED to
# replay a run, KEEP_LOGS=1 to see the daemon's log.
set -euo pipefail

builddir=.
if [ "${1:-}" = -b ]; then
	builddir=$2
	shift 2
fi
minutes=${1:-10}
case $minutes in
'' | *[!0-9]*) echo "usage: $0 [-b BUILD_DIR] [MINUTES]" >&2; exit 2 ;;
esac
cd "$builddir"
[ -f tests/mount/lib.sh ] && [ -x tests/tools/rollrace ] && [ -x snapfs-rollback ] || {
	echo "$0: $(pwd) is not a built tree with the test tools (make check TESTS= builds them)" >&2
	exit 2
}
srcdir=$(sed -n "s/^abs_top_srcdir='\(.*\)'$/\1/p" tests/mount/lib.sh)
export SNAPFS_RACE_SECONDS=$((minutes * 60))
exec nice -n 10 bash "$srcdir/tests/mount/t-rollback-race.sh"
