/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The narrowest permissions of a set of files, for a compaction's new base
 * (see perms.h).
 *
 * Why the entry-by-entry AND of ACLs of one structure is never wider than
 * any of them: POSIX ACL checks pick the entries that match the requester
 * (the owner entry, else a named user entry, else every matching group
 * entry, else other) by tag and id alone, and the mask by structure; with
 * the same structure, the same entries match in every file, and an ANDed
 * entry (and mask) grants a permission only if it does in every file.
 * A mode is the special case of an ACL with three entries.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "perms.h"

#define ACL_XATTR_VERSION 2
#define ACL_HEADER 4
#define ACL_ENTRY 8
#define ACL_PERM_OFF 2		/* in an entry: u16 tag, u16 perm, u32 id */

void perms_free(struct perms *p)
{
	free(p->acl);
	p->acl = NULL;
	p->acl_len = 0;
}

/* Reads fd's access ACL into a malloc'd buffer; *buf NULL if it has none. */
static int read_acl(int fd, unsigned char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	for (;;) {
		ssize_t n = fgetxattr(fd, PERMS_ACL_XATTR, NULL, 0), got;
		unsigned char *b;

		if (n < 0)
			return errno == ENODATA || errno == EOPNOTSUPP ? 0 : -errno;
		b = malloc(n ? (size_t)n : 1);
		if (!b)
			return -ENOMEM;
		got = fgetxattr(fd, PERMS_ACL_XATTR, b, (size_t)n);
		if (got < 0) {
			free(b);
			if (errno == ERANGE)
				continue;	/* grew meanwhile */
			return errno == ENODATA ? 0 : -errno;
		}
		if ((size_t)got < ACL_HEADER || ((size_t)got - ACL_HEADER) % ACL_ENTRY ||
		    b[0] != ACL_XATTR_VERSION || b[1] || b[2] || b[3]) {
			free(b);
			return -EIO;
		}
		*buf = b;
		*len = (size_t)got;
		return 0;
	}
}

int perms_merge(const int *fds, size_t n, struct perms *out, size_t *culprit,
		const char **what)
{
	struct perms p = { 0 };
	int ret;

	*culprit = 0;
	*what = NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char *acl;
		size_t len;
		struct stat st;

		if (fstat(fds[i], &st) < 0) {
			ret = -errno;
			goto fail;
		}
		ret = read_acl(fds[i], &acl, &len);
		if (ret)
			goto fail;
		if (i == 0) {
			p.uid = st.st_uid;
			p.gid = st.st_gid;
			p.mode = st.st_mode & 07777;
			p.acl = acl;
			p.acl_len = len;
			continue;
		}
		ret = -EPERM;
		*culprit = i;
		if (st.st_uid != p.uid || st.st_gid != p.gid)
			*what = "owner or group";
		else if (!acl != !p.acl)
			*what = "having a POSIX ACL";
		else if (acl && len != p.acl_len)
			*what = "POSIX ACL entries";
		for (size_t e = 0; acl && !*what && e < (len - ACL_HEADER) / ACL_ENTRY; e++) {
			unsigned char *a = p.acl + ACL_HEADER + e * ACL_ENTRY;
			const unsigned char *b = acl + ACL_HEADER + e * ACL_ENTRY;

			/* tag and id must match; perm is ANDed */
			if (memcmp(a, b, 2) || memcmp(a + 4, b + 4, 4)) {
				*what = "POSIX ACL entries";
				break;
			}
			a[ACL_PERM_OFF] &= b[ACL_PERM_OFF];
			a[ACL_PERM_OFF + 1] &= b[ACL_PERM_OFF + 1];
		}
		free(acl);
		if (*what)
			goto fail;
		p.mode &= st.st_mode & 07777;
	}
	*out = p;
	return 0;
fail:
	perms_free(&p);
	return ret;
}

int perms_apply(int fd, const struct perms *p)
{
	if (fchown(fd, p->uid, p->gid) < 0) {
		struct stat st;

		if (errno != EPERM)
			return -errno;
		if (fstat(fd, &st) < 0)
			return -errno;
		if (st.st_uid != p->uid || st.st_gid != p->gid)
			return -EPERM;
	}
	if (p->acl) {
		if (fsetxattr(fd, PERMS_ACL_XATTR, p->acl, p->acl_len, 0) < 0)
			return -errno;
	} else if (fremovexattr(fd, PERMS_ACL_XATTR) < 0 && errno != ENODATA &&
		   errno != EOPNOTSUPP) {
		return -errno;
	}
	/* After the ACL: the mode's group bits become the ACL's mask. */
	if (fchmod(fd, p->mode) < 0)
		return -errno;
	return 0;
}
