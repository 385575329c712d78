/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Names a filesystem for a log line about the filesystem itself (one that
 * reports no holes, or coarse ones): its type as mounted (fuse.sshfs,
 * nfs4, ceph...) and its mount point, so that the user knows which mount
 * to fix without decoding a device number.
 */
#ifndef SNAPFS_FSNAME_H
#define SNAPFS_FSNAME_H

#include <stddef.h>

/*
 * Writes into buf[len] a description of the filesystem holding open file
 * fd: "TYPE at MOUNTPOINT (device MAJ:MIN)" from /proc/self/mountinfo,
 * else "type 0xMAGIC (device MAJ:MIN)" from fstatfs. Never fails: at worst
 * it says "an unknown filesystem". Reads a file: not for hot paths.
 */
void fsname_describe(int fd, char *buf, size_t len);

#endif
