/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapfs-rollback: rolls a layered file in STORE back by one layer under the
 * directory's rollback lock, so that a compaction (of the daemon or of
 * snapfs-compact) can never merge the removed diff into a new base. Exits 0
 * only once the removal is durable.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rollback.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: snapfs-rollback [options] STORE_DIR/NAME\n"
		"       snapfs-rollback [options] STORE_DIR/NAME.<seq>.diff\n\n"
		"Removes the newest diff of the layered file NAME (the second form:\n"
		"exactly that diff, which must be the newest) under the directory's\n"
		"rollback lock, and syncs the directory. Exits 0 only when the\n"
		"rollback is done and durable, 1 when nothing was rolled back.\n\n"
		"  -n, --dry-run       say what would be removed, remove nothing\n"
		"  -q, --quiet         print nothing on success\n"
		"  -w, --wait SECONDS  wait at most this long for the lock (default 60;\n"
		"                      0: one try)\n"
		"  -h, --help          this help\n"
		"  -V, --version       print the version\n");
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "dry-run", no_argument, NULL, 'n' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "wait", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct rollback_result res;
	bool dry_run = false, quiet = false;
	unsigned long wait_s = 60;
	char *path, *slash, *end;
	const char *dir, *target;
	int c, fd, ret;

	while ((c = getopt_long(argc, argv, "nqw:hV", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			dry_run = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'w':
			errno = 0;
			wait_s = strtoul(optarg, &end, 10);
			if (errno || *end || !*optarg || optarg[0] == '-' ||
			    wait_s > INT_MAX / 1000) {
				fprintf(stderr, "snapfs-rollback: -w %s: not a number of "
					"seconds in range\n", optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("snapfs-rollback %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	path = strdup(argv[optind]);
	if (!path) {
		fprintf(stderr, "snapfs-rollback: out of memory\n");
		return 1;
	}
	while (strlen(path) > 1 && path[strlen(path) - 1] == '/')
		path[strlen(path) - 1] = '\0';
	slash = strrchr(path, '/');
	if (slash) {
		*slash = '\0';
		dir = slash == path ? "/" : path;
		target = slash + 1;
	} else {
		dir = ".";
		target = path;
	}
	if (!*target || !strcmp(target, ".") || !strcmp(target, "..")) {
		fprintf(stderr, "snapfs-rollback: %s: not STORE_DIR/NAME\n", argv[optind]);
		free(path);
		return 2;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "snapfs-rollback: %s: %s\n", dir, strerror(errno));
		free(path);
		return 1;
	}
	ret = rollback_run(fd, target, dry_run, (int)wait_s * 1000, &res);
	close(fd);
	if (ret) {
		fprintf(stderr, "snapfs-rollback: %s/%s: %s\n", dir, res.name,
			res.why[0] ? res.why : strerror(-ret));
	} else if (!quiet || dry_run) {
		printf("%s %s/%s; %s/%s is now %s (%zu diff%s above the base)\n",
		       dry_run ? "would remove" : "removed", dir, res.removed, dir,
		       res.name, res.top_after, res.depth_after,
		       res.depth_after == 1 ? "" : "s");
	}
	free(path);
	return ret ? 1 : 0;
}
