#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Installs what building and testing snapfs needs on Debian or Ubuntu:
# the toolchain, libfuse3, xxhash and cmocka, and the tools the mount tests
# and benchmarks use (mkfs for XFS/btrfs/ext4, getfattr, setfacl and
# getfacl, xxd, fio, strace, and QEMU for tests/mount/t-qemu.sh).
# Run as root. When every package is already installed it does nothing, so
# running it again (as contrib/run-tests.sh and contrib/quickstart.sh do) is
# fast and needs no network.
#
#   contrib/install-deps.sh --libfuse-3.17 [PREFIX]
#
# also builds libfuse 3.17.2 (kernel FUSE passthrough) from Debian's trixie
# source package into a private PREFIX with contrib/build-libfuse.sh; the
# system's libfuse3-dev stays what snapfs builds against by default.
set -euo pipefail

libfuse317=
if [ "${1:-}" = --libfuse-3.17 ]; then
	libfuse317=${2:-default}
fi

PACKAGES=(
	build-essential autoconf automake libtool pkg-config
	libfuse3-dev fuse3 libxxhash-dev libcmocka-dev liburing-dev
	xfsprogs btrfs-progs e2fsprogs attr acl xxd fio strace
	util-linux kmod ca-certificates
	qemu-system-x86
)

die() {
	echo "install-deps.sh: $*" >&2
	exit 1
}

if [ "$(id -u)" -ne 0 ]; then
	die "must run as root (try: sudo $0)"
fi
command -v apt-get >/dev/null 2>&1 ||
	die "apt-get not found: install these packages by hand: ${PACKAGES[*]}"

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	if [ "$status" != installed ]; then
		missing+=("$p")
	fi
done

# build_libfuse: the opt-in private libfuse 3.17.2, after the packages.
build_libfuse() {
	[ -n "$libfuse317" ] || return 0
	if [ "$libfuse317" = default ]; then
		"$(dirname "${BASH_SOURCE[0]}")/build-libfuse.sh"
	else
		"$(dirname "${BASH_SOURCE[0]}")/build-libfuse.sh" "$libfuse317"
	fi
}

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps.sh: all ${#PACKAGES[@]} packages already installed"
	build_libfuse
	exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update ||
	die "apt-get update failed (no network or no package sources?)"
apt-get install -y --no-install-recommends "${missing[@]}" ||
	die "apt-get install failed for: ${missing[*]}"
build_libfuse
echo "install-deps.sh: done"
