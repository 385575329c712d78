#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# t-multihost.sh over a loopback NFSv4.2 export: the store is exported by
# the kernel's NFS server and mounted twice by its client with nosharecache
# (two clients that share no cache, as two hosts), one mount per daemon; the
# producer writes on the server's side. Skipped (77) where the kernel has no
# NFS server or client, or nfs-kernel-server's tools are missing.
. ./tests/mount/lib.sh

nfs_skip() {
	log "SKIP: $*"
	exit 77
}
[ "$(id -u)" = 0 ] || nfs_skip "needs root"
modprobe nfsd 2>/dev/null
modprobe nfs 2>/dev/null
grep -qw nfsd /proc/filesystems || nfs_skip "the kernel has no NFS server (nfsd)"
grep -qw nfs4 /proc/filesystems || grep -qw nfs /proc/filesystems ||
	nfs_skip "the kernel has no NFS client"
for tool in exportfs rpc.nfsd rpc.mountd; do
	command -v "$tool" >/dev/null || nfs_skip "$tool is missing (nfs-kernel-server)"
done

NFS_T=$(mktemp -d "${TMPDIR:-/var/tmp}/snapfs-nfs.XXXXXX") || exit 1
NFS_EXPORT=$NFS_T/export
NFS_A=$NFS_T/a
NFS_B=$NFS_T/b
NFS_STARTED=0
mkdir -p "$NFS_EXPORT" "$NFS_A" "$NFS_B"

# Runs after the test's own cleanup (t-multihost.sh installs it on EXIT):
# the client mounts, the export, the server if this test started it.
nfs_cleanup() {
	set +e
	for m in "$NFS_A" "$NFS_B"; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done
	exportfs -u "127.0.0.1:$NFS_EXPORT" 2>/dev/null
	if [ "$NFS_STARTED" = 1 ]; then
		rpc.nfsd 0 2>/dev/null
		[ -n "${MOUNTD_PID:-}" ] && kill "$MOUNTD_PID" 2>/dev/null
	fi
	rm -rf "$NFS_T"
}

if ! grep -q nfsd /proc/mounts; then
	mount -t nfsd nfsd /proc/fs/nfsd || { nfs_cleanup; nfs_skip "cannot mount the nfsd filesystem"; }
fi
if [ "$(cat /proc/fs/nfsd/threads 2>/dev/null || echo 0)" = 0 ]; then
	rpc.mountd -F -N 2 -N 3 >/dev/null 2>&1 &
	MOUNTD_PID=$!
	rpc.nfsd -N 3 4 || { nfs_cleanup; nfs_skip "rpc.nfsd cannot start a server"; }
	NFS_STARTED=1
fi
exportfs -o rw,sync,no_root_squash,no_subtree_check,insecure,fsid=$((RANDOM + 1000)) \
	"127.0.0.1:$NFS_EXPORT" || { nfs_cleanup; nfs_skip "exportfs failed"; }
for m in "$NFS_A" "$NFS_B"; do
	mount -t nfs -o vers=4.2,nosharecache "127.0.0.1:$NFS_EXPORT" "$m" ||
		{ nfs_cleanup; nfs_skip "cannot mount the loopback export (NFSv4.2)"; }
done

MH_PROD=$NFS_EXPORT MH_STORE_A=$NFS_A MH_STORE_B=$NFS_B
# The test's cleanup first (unmounts snapfs, stops the daemons), then ours.
MH_EXTRA_CLEANUP=nfs_cleanup
. "$abs_top_srcdir/tests/mount/t-multihost.sh"
