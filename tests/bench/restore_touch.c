// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * restore_touch: the memory side of a VM restore, for restore-bench.sh.
 *
 *   restore_touch plan LIST SIZE SEED PCT DIFF...
 *       writes to LIST the pages a restored VM touches, in random order
 *       (seeded): every page any DIFF holds data in (SEEK_DATA), plus PCT%
 *       of the other pages of a SIZE-byte file. Prints "pages N diff D".
 *   restore_touch touch FILE LIST [DEPTH]
 *       maps FILE MAP_PRIVATE read/write, as a VMM maps guest memory, and
 *       reads one byte of each page of LIST, in LIST's order (each read a
 *       fault). With DEPTH, FILE is a snapfs view: it is opened again until
 *       its user.snapfs.depth is DEPTH (the publish has shown). Prints
 *       "touched N s SECONDS sum X" (X: a checksum of the bytes read, so
 *       contenders can be compared).
 *   restore_touch apply TARGET DIFF
 *       writes DIFF's data ranges into TARGET at the same offsets (for
 *       building qcow2 overlays through a writable export), then fsyncs.
 *   restore_touch warm FILE...
 *       reads the data ranges of each FILE (SEEK_DATA), never its holes:
 *       reading a sparse diff whole would fill the page cache with a
 *       zero page per hole, 2 GiB for each diff of a 2 GiB VM, and a deep
 *       chain's warming would then evict its own base.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ULL

static void die(const char *what, const char *file)
{
	fprintf(stderr, "restore_touch: %s %s: %s\n", what, file, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state;

static uint64_t rng(void)	/* splitmix64 */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Marks in bits every page of file that holds data. */
static void mark_data(const char *file, uint8_t *bits, uint64_t pages)
{
	int fd = open(file, O_RDONLY);
	off_t off = 0, d, h;

	if (fd < 0)
		die("opening", file);
	while ((d = lseek(fd, off, SEEK_DATA)) >= 0) {
		h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			die("seeking", file);
		for (uint64_t p = (uint64_t)d / PAGE; p < ((uint64_t)h + PAGE - 1) / PAGE && p < pages; p++)
			bits[p] = 1;
		off = h;
	}
	close(fd);
}

static int mode_plan(int argc, char **argv)
{
	uint64_t size, pages, n = 0, ndiff = 0;
	uint32_t *list;
	uint8_t *bits;
	double pct;
	FILE *f;

	if (argc < 6)
		return 2;
	size = strtoull(argv[3], NULL, 0);
	rng_state = strtoull(argv[4], NULL, 0);
	pct = atof(argv[5]);
	pages = size / PAGE;
	bits = calloc(pages, 1);
	list = malloc(pages * sizeof(*list));
	if (!bits || !list)
		die("allocating", "the list");
	for (int i = 6; i < argc; i++)
		mark_data(argv[i], bits, pages);
	for (uint64_t p = 0; p < pages; p++) {
		if (bits[p]) {
			list[n++] = (uint32_t)p;
			ndiff++;
		} else if ((double)(rng() % 1000000) < pct * 10000.0) {
			list[n++] = (uint32_t)p;
		}
	}
	for (uint64_t i = n; i > 1; i--) {	/* Fisher-Yates */
		uint64_t j = rng() % i;
		uint32_t t = list[i - 1];

		list[i - 1] = list[j];
		list[j] = t;
	}
	f = fopen(argv[2], "w");
	if (!f || fwrite(list, sizeof(*list), n, f) != n || fclose(f))
		die("writing", argv[2]);
	printf("pages %llu diff %llu\n", (unsigned long long)n, (unsigned long long)ndiff);
	return 0;
}

/* Opens view until its depth xattr says depth (the mount shows the publish). */
static int open_view_at(const char *file, const char *depth)
{
	for (int tries = 0; tries < 10000; tries++) {
		char val[32];
		int fd = open(file, O_RDONLY);
		ssize_t n;

		if (fd < 0)
			die("opening", file);
		if (!depth)
			return fd;
		n = fgetxattr(fd, "user.snapfs.depth", val, sizeof(val) - 1);
		if (n > 0) {
			val[n] = '\0';
			if (strcmp(val, depth) == 0)
				return fd;
		}
		close(fd);
		usleep(1000);
	}
	errno = ETIMEDOUT;
	die("waiting for the publish to show in", file);
	return -1;
}

static int mode_touch(int argc, char **argv)
{
	struct stat st;
	uint32_t *list;
	size_t n;
	uint64_t sum = 0;
	volatile const char *m;
	double t0;
	FILE *f;
	int fd;

	if (argc < 4)
		return 2;
	f = fopen(argv[3], "r");
	if (!f || fstat(fileno(f), &st) < 0)
		die("opening", argv[3]);
	n = (size_t)st.st_size / sizeof(*list);
	list = malloc(n * sizeof(*list) + 1);
	if (!list || fread(list, sizeof(*list), n, f) != n)
		die("reading", argv[3]);
	fclose(f);
	t0 = now();
	fd = open_view_at(argv[2], argc > 4 ? argv[4] : NULL);
	if (fstat(fd, &st) < 0)
		die("stat of", argv[2]);
	m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		die("mapping", argv[2]);
	for (size_t i = 0; i < n; i++)
		sum += (unsigned char)m[(uint64_t)list[i] * PAGE + (list[i] % 61) * 64];
	printf("touched %zu s %.3f sum %llu\n", n, now() - t0, (unsigned long long)sum);
	munmap((void *)m, (size_t)st.st_size);
	close(fd);
	free(list);
	return 0;
}

/* Reads the data ranges of fd d (file name) through buf (1 MiB), never
 * its holes, and writes each to the same offset of fd t unless t < 0. */
static void copy_data(int d, const char *name, char *buf, int t, const char *tname)
{
	off_t off = 0, s, e;

	while ((s = lseek(d, off, SEEK_DATA)) >= 0) {
		e = lseek(d, s, SEEK_HOLE);
		if (e < 0)
			die("seeking", name);
		for (off = s; off < e;) {
			size_t len = e - off < (1 << 20) ? (size_t)(e - off) : (1 << 20);
			ssize_t r = pread(d, buf, len, off);

			if (r <= 0)
				die("reading", name);
			if (t >= 0 && pwrite(t, buf, (size_t)r, off) != r)
				die("writing", tname);
			off += r;
		}
	}
}

static int mode_apply(int argc, char **argv)
{
	char *buf = malloc(1 << 20);
	int t, d;

	if (argc < 4 || !buf)
		return 2;
	t = open(argv[2], O_WRONLY);
	d = open(argv[3], O_RDONLY);
	if (t < 0 || d < 0)
		die("opening", t < 0 ? argv[2] : argv[3]);
	copy_data(d, argv[3], buf, t, argv[2]);
	if (fsync(t) < 0)
		die("syncing", argv[2]);
	close(t);
	close(d);
	free(buf);
	return 0;
}

static int mode_warm(int argc, char **argv)
{
	char *buf = malloc(1 << 20);

	if (argc < 3 || !buf)
		return 2;
	for (int i = 2; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY);

		if (fd < 0)
			die("opening", argv[i]);
		copy_data(fd, argv[i], buf, -1, NULL);
		close(fd);
	}
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int ret = 2;

	if (argc > 1 && !strcmp(argv[1], "plan"))
		ret = mode_plan(argc, argv);
	else if (argc > 1 && !strcmp(argv[1], "touch"))
		ret = mode_touch(argc, argv);
	else if (argc > 1 && !strcmp(argv[1], "apply"))
		ret = mode_apply(argc, argv);
	else if (argc > 1 && !strcmp(argv[1], "warm"))
		ret = mode_warm(argc, argv);
	if (ret == 2)
		fprintf(stderr, "usage: restore_touch plan LIST SIZE SEED PCT DIFF... | "
			"touch FILE LIST [DEPTH] | apply TARGET DIFF | warm FILE...\n");
	return ret;
}
