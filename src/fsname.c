/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which filesystem an fd lives on, in words (fsname.h): the mountinfo line
 * whose device is the fd's st_dev. With several mounts of one device (bind
 * mounts) the first is named; its type is what matters.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include "fsname.h"

/*
 * Fills type and mnt from the first line of /proc/self/mountinfo for device
 * maj:min. Fields: id parent maj:min root mountpoint options... - type
 * source superoptions. Returns 0, or -1 if there is none.
 */
static int mountinfo_find(unsigned maj, unsigned min, char *type, size_t tlen,
			  char *mnt, size_t mlen)
{
	char line[4096], want[32];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int ret = -1;

	if (!f)
		return -1;
	snprintf(want, sizeof(want), "%u:%u", maj, min);
	while (ret && fgets(line, sizeof(line), f)) {
		char dev[32], mp[2048], *dash;

		if (sscanf(line, "%*s %*s %31s %*s %2047s", dev, mp) != 2 ||
		    strcmp(dev, want) != 0 || !(dash = strstr(line, " - ")))
			continue;
		if (sscanf(dash + 3, "%63s", type) != 1)
			continue;
		type[tlen - 1] = '\0';
		snprintf(mnt, mlen, "%s", mp);	/* octal escapes kept */
		ret = 0;
	}
	fclose(f);
	return ret;
}

void fsname_describe(int fd, char *buf, size_t len)
{
	char type[64], mnt[2048];
	struct statfs sf;
	struct stat st;

	if (fstat(fd, &st) < 0) {
		snprintf(buf, len, "an unknown filesystem");
		return;
	}
	if (mountinfo_find(major(st.st_dev), minor(st.st_dev), type, sizeof(type),
			   mnt, sizeof(mnt)) == 0)
		snprintf(buf, len, "%s at %s (device %u:%u)", type, mnt,
			 major(st.st_dev), minor(st.st_dev));
	else if (fstatfs(fd, &sf) == 0)
		snprintf(buf, len, "type 0x%lx (device %u:%u)", (unsigned long)sf.f_type,
			 major(st.st_dev), minor(st.st_dev));
	else
		snprintf(buf, len, "device %u:%u", major(st.st_dev), minor(st.st_dev));
}
