#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A guided first run of snapfs: installs the dependencies, builds the daemon,
# makes the example store of contrib/example-store.sh in a temporary
# directory, mounts it, looks at the view with ordinary tools, and unmounts.
# Nothing outside the temporary directory and the build directory (BUILD_DIR,
# default build/) is touched; the temporary directory is removed at the end.
# Run as root (FUSE mounts and the package install need it).
set -euo pipefail
export LC_ALL=C

srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
builddir=${BUILD_DIR:-$srcdir/build}
jobs=$(nproc 2>/dev/null || echo 2)
PAGE=4096

n=0
step() {
	n=$((n + 1))
	printf '\n== %d. %s\n' "$n" "$*"
}

die() {
	echo "quickstart.sh: $*" >&2
	exit 1
}

work='' mnt='' daemon=''

# mounted DIR: DIR is a mount point, even one whose daemon died (no stat).
mounted() {
	grep -qs " $1 " /proc/self/mounts
}

cleanup() {
	local rc=$?
	set +e
	if [ -n "$mnt" ] && mounted "$mnt"; then
		fusermount3 -u -z "$mnt"
	fi
	if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
		kill "$daemon"
		wait "$daemon" 2>/dev/null
	fi
	if [ $rc -ne 0 ] && [ -s "$work/snapfs.log" ]; then
		echo "---- daemon log ----" >&2
		cat "$work/snapfs.log" >&2
	fi
	[ -n "$work" ] && rm -rf "$work"
	exit $rc
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || die "run as root (FUSE mounts and apt-get need it): sudo $0"

step "dependencies (contrib/install-deps.sh)"
"$srcdir/contrib/install-deps.sh"
[ -e /dev/fuse ] || modprobe fuse || die "/dev/fuse is missing and modprobe fuse failed"

step "build in $builddir (autoreconf, configure, make; log in $builddir/build.log)"
mkdir -p "$builddir"
if ! { (cd "$srcdir" && autoreconf -fi) &&
	(cd "$builddir" && "$srcdir/configure" && make -j"$jobs"); } >"$builddir/build.log" 2>&1; then
	tail -n 40 "$builddir/build.log" >&2
	die "the build failed; the whole log is $builddir/build.log"
fi
snapfs=$builddir/snapfs
"$snapfs" --version

work=$(mktemp -d)
store=$work/store
merged=$work/store.merged/memory.bin
mnt=$work/mnt
mkdir "$mnt"

step "example store (contrib/example-store.sh $store)"
"$srcdir/contrib/example-store.sh" "$store"
echo
ls -ls "$store/vm1"

step "mount: snapfs -f -o ready_fd=3 $store $mnt"
# The daemon writes one byte to fd 3 once the mount is up: wait on that byte
# through a fifo instead of polling. EOF without a byte means it failed.
mkfifo "$work/ready"
"$snapfs" -f -o ready_fd=3 "$store" "$mnt" 3>"$work/ready" 2>"$work/snapfs.log" &
daemon=$!
if [ "$(timeout 30 head -c1 "$work/ready" | wc -c)" -ne 1 ]; then
	die "snapfs did not become ready"
fi
findmnt -n -o TARGET,FSTYPE,OPTIONS "$mnt"

step "ls -l $mnt/vm1: memory.bin is one read-only file; the layers stay visible"
ls -l "$mnt/vm1"

step "cmp the view with the plain merge the example script wrote"
cmp "$mnt/vm1/memory.bin" "$merged" && echo "identical"

step "getfattr: the chain behind the view"
getfattr --absolute-names -d -m '^user\.snapfs\.' "$mnt/vm1/memory.bin"

off=$((2049 * PAGE))
step "xxd at offset $off (page 2049): the view shows diff 3's page, the base its own"
printf 'view: '; xxd -s $off -l 64 "$mnt/vm1/memory.bin" | head -n1
printf 'base: '; xxd -s $off -l 64 "$store/vm1/memory.bin.0.base" | head -n1

off=$((100 * PAGE))
step "xxd at offset $off (page 100): diff 3 wrote zeros there, and zeros hide the layers below"
printf 'view:   '; xxd -s $off -l 16 "$mnt/vm1/memory.bin"
printf 'diff 1: '; xxd -s $off -l 16 "$store/vm1/memory.bin.1.diff"
printf 'base:   '; xxd -s $off -l 16 "$store/vm1/memory.bin.0.base"

step "the view's data ranges (SEEK_DATA/SEEK_HOLE): the base's hole shows, less the pages diffs wrote in it"
xfs_io -r -c 'seek -a -r 0' "$mnt/vm1/memory.bin"

step "sha256sum of the view and of the merge"
(cd "$work" && sha256sum mnt/vm1/memory.bin store.merged/memory.bin)

step "writing is refused: the view is read-only"
if (echo oops >>"$mnt/vm1/memory.bin") 2>"$work/err"; then
	die "a write to the view succeeded"
fi
sed 's/^[^:]*: line [0-9]*: //' "$work/err"

step "unmount: fusermount3 -u $mnt"
fusermount3 -u "$mnt"
rc=0
wait "$daemon" || rc=$?
daemon=
[ $rc -eq 0 ] || die "snapfs exited with status $rc"
echo "snapfs exited 0"
if [ -s "$work/snapfs.log" ]; then
	echo "its log:"
	sed 's/^/  /' "$work/snapfs.log"
fi

printf '\nDone. Next: contrib/run-tests.sh runs every test; man -l doc/snapfs.8 has all options.\n'
