/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Permissions of a merged file: the owner, group, mode and POSIX ACL that a
 * compaction's new base gets, so that it never grants anyone more than
 * every one of the layers merged into it did. The intersection of several
 * files' permissions is one file's permissions only when they share owner,
 * group and ACL structure (the same entries for the same users and
 * groups); then it is that structure with every entry's permissions ANDed,
 * the mode included. Otherwise no single file can express it and the
 * merge is refused.
 *
 * ACLs are handled as the raw system.posix_acl_access xattr (version 2,
 * little-endian entries of tag, perm and id in the kernel's order), so no
 * libacl is needed. Speaks no FUSE: returns 0 or -errno.
 */
#ifndef SNAPFS_PERMS_H
#define SNAPFS_PERMS_H

#include <stddef.h>
#include <sys/types.h>

#define PERMS_ACL_XATTR "system.posix_acl_access"

struct perms {
	uid_t uid;
	gid_t gid;
	mode_t mode;		/* permission bits and setuid/setgid/sticky */
	unsigned char *acl;	/* the access ACL xattr, malloc'd; NULL if
				   the files have none */
	size_t acl_len;
};

/*
 * The narrowest permissions of the n open files fds (n >= 1, regular
 * files; fds[0] the base): their common owner and group, the AND of their
 * modes, and the AND of their ACLs entry by entry. Returns 0 with *out
 * filled (perms_free() it); -EPERM if the files differ in owner or group,
 * in having an ACL, or in their ACLs' entries (which users and groups
 * they name), with *culprit the index of the first file that differs from
 * fds[0] and *what naming the difference (static text); -EIO for an ACL
 * xattr that cannot be parsed; -ENOMEM or another -errno from fstat or
 * fgetxattr. A filesystem without ACL support counts as no ACL.
 */
int perms_merge(const int *fds, size_t n, struct perms *out, size_t *culprit,
		const char **what);

/*
 * Gives the open file fd the permissions p: owner and group (fchown), the
 * ACL (set, or removed if p has none: a default ACL of the directory may
 * have been inherited), then the mode (fchmod, which also narrows the ACL's
 * mask). Returns 0; -EPERM if the owner cannot be set and fd's is not
 * already p's (a compactor that is not root: the file would belong to it,
 * which could then widen access at will); another -errno.
 */
int perms_apply(int fd, const struct perms *p);

void perms_free(struct perms *p);

#endif
