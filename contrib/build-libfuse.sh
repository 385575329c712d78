#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Builds libfuse 3.17.2 (kernel FUSE passthrough: FUSE_CAP_PASSTHROUGH,
# fuse_passthrough_open) into a private prefix, from Debian's own source
# package of suite trixie, so snapfs can be built and tested against it on a
# Debian 12 system that ships libfuse 3.14:
#
#   contrib/build-libfuse.sh [PREFIX]          default PREFIX: build-libfuse/3.17.2 in the source tree
#   PKG_CONFIG_PATH=$(contrib/build-libfuse.sh --pkgconfig-dir PREFIX) ./configure ...
#
# How it stays out of the system's way:
# - apt runs with a private configuration (its own sources list, state, lists
#   and cache directories below PREFIX/.apt): the system's apt sources and
#   package lists are never changed. The one deb-src line is trixie on the same
#   Debian mirror the system already uses for its own suite (DEBIAN_MIRROR
#   overrides it).
# - apt checks the trixie Release file's signature against the keyring of the
#   installed debian-archive-keyring package (Debian 12's carries the trixie
#   keys), and the signed Sources index gives the SHA-256 of the .dsc and of
#   each tarball, which apt checks before dpkg-source unpacks them. Nothing
#   unverified is built. (The .dsc's own maintainer signature is not what
#   is relied on: the Debian developer keyring is not installed here.)
# - meson installs only the library, its headers and its pkg-config file into
#   PREFIX (utils=false: no fusermount3, no udev rule, no mount.fuse3); the
#   system's libfuse3.so.3 and fusermount3 stay as they are, and a snapfs
#   linked against the private libfuse3.so.4 mounts with the system's
#   fusermount3 (or directly, as root).
# - A second run finds PREFIX/.stamp and does nothing (a second or less).
#
# Needs root only to install the build tools (meson, ninja-build, dpkg-dev)
# when they are missing.
set -euo pipefail
export LC_ALL=C

VERSION=3.17.2
SUITE=trixie
srcdir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
	echo "build-libfuse.sh: $*" >&2
	exit 1
}

# pkgconfig_dir PREFIX: the directory holding fuse3.pc below PREFIX.
pkgconfig_dir() {
	local pc
	pc=$(find "$1" -name fuse3.pc -path '*/pkgconfig/*' 2>/dev/null | head -n1)
	[ -n "$pc" ] || return 1
	dirname "$pc"
}

if [ "${1:-}" = --pkgconfig-dir ]; then
	pkgconfig_dir "${2:-$srcdir/build-libfuse/$VERSION}" ||
		die "no fuse3.pc below ${2:-$srcdir/build-libfuse/$VERSION}: run build-libfuse.sh first"
	exit 0
fi

prefix=${1:-$srcdir/build-libfuse/$VERSION}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
stamp=$prefix/.stamp

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$VERSION" ] && pkgconfig_dir "$prefix" >/dev/null; then
	echo "build-libfuse.sh: libfuse $VERSION already built in $prefix"
	exit 0
fi

need=()
command -v meson >/dev/null 2>&1 || need+=(meson)
command -v ninja >/dev/null 2>&1 || need+=(ninja-build)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
command -v gpgv >/dev/null 2>&1 || need+=(gpgv)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || die "missing ${need[*]}: install them as root"
	echo "build-libfuse.sh: installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" ||
		die "apt-get install ${need[*]} failed"
fi

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# The system's Debian mirror: the repository its own Debian suites come from.
mirror=${DEBIAN_MIRROR:-$(apt-get indextargets --format '$(LABEL) $(REPO_URI)' 2>/dev/null |
	awk '$1 == "Debian" { print $2; exit }')}
[ -n "$mirror" ] || die "no Debian mirror in the system's apt sources: set DEBIAN_MIRROR"

aptdir=$prefix/.apt
rm -rf "$aptdir"
mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/src"
echo "deb-src [signed-by=$keyring] $mirror $SUITE main" >"$aptdir/sources.list"
cat >"$aptdir/apt.conf" <<EOF
Dir::Etc::SourceList "$aptdir/sources.list";
Dir::Etc::SourceParts "$aptdir/no-parts";
Dir::Etc::Preferences "$aptdir/no-preferences";
Dir::Etc::PreferencesParts "$aptdir/no-parts";
Dir::State::Lists "$aptdir/lists";
Dir::Cache "$aptdir/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "root";
Acquire::Languages "none";
EOF
mkdir -p "$aptdir/no-parts"
export APT_CONFIG=$aptdir/apt.conf

echo "build-libfuse.sh: fetching fuse3 $VERSION source from $SUITE (private apt configuration in $aptdir)"
apt-get -q update || die "apt-get update of $SUITE sources failed (signature or network)"
ver=$(apt-cache showsrc fuse3 | sed -n 's/^Version: //p' | sort -V | tail -n1)
case $ver in
"$VERSION"-*) ;;
*) die "trixie's fuse3 is '$ver', not $VERSION-*: update VERSION after checking what changed" ;;
esac
(cd "$aptdir/src" && apt-get -q source "fuse3=$ver") || die "apt-get source fuse3=$ver failed"
unset APT_CONFIG

src=$(find "$aptdir/src" -maxdepth 1 -type d -name "fuse3-$VERSION" | head -n1)
[ -n "$src" ] || die "apt-get source did not unpack fuse3-$VERSION"

echo "build-libfuse.sh: meson/ninja build of $src into $prefix"
rm -rf "$prefix/.build"
meson setup "$prefix/.build" "$src" --prefix="$prefix" --libdir=lib \
	--buildtype=debugoptimized -Dutils=false -Dexamples=false -Dtests=false \
	-Ddisable-mtab=true >"$prefix/.build.log" 2>&1 ||
	{ tail -n 30 "$prefix/.build.log" >&2; die "meson setup failed (log: $prefix/.build.log)"; }
ninja -C "$prefix/.build" -j"${JOBS:-2}" install >>"$prefix/.build.log" 2>&1 ||
	{ tail -n 30 "$prefix/.build.log" >&2; die "ninja failed (log: $prefix/.build.log)"; }
rm -rf "$prefix/.build" "$aptdir"
pkgconfig_dir "$prefix" >/dev/null || die "no fuse3.pc installed below $prefix"
echo "$VERSION" >"$stamp"
echo "build-libfuse.sh: libfuse $VERSION in $prefix"
echo "  configure with: PKG_CONFIG_PATH=$(pkgconfig_dir "$prefix") LDFLAGS=-Wl,-rpath,$prefix/lib"
