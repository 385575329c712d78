// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * readbench: one read pattern against one file, one machine-readable result
 * line on stdout ("seq 1.234 GB/s"), for the snapfs benchmark (bench.sh).
 * It also generates the benchmark's layer chain (mode gen): dense bases and
 * sparse diffs of pseudo-random pages, deterministic by seed, published with
 * a rename like a real snapshot producer.
 *
 *   readbench seq FILE                     1 MiB read()s of the whole file, GB/s
 *   readbench rand FILE [-n N] [-s SEED]   N distinct random 4 KiB preads, IOPS
 *   readbench fault FILE [-n N] [-s SEED]  mmap, touch N distinct random pages, us/fault
 *   readbench first FILE                   open + read the first 4 KiB, us
 *   readbench opens FILE [-n N]            N open + close of FILE, us per pair
 *   readbench evict FILE                   drop FILE's own page cache (fadvise
 *                                          DONTNEED; through FUSE, the view's copy,
 *                                          not its layers'), resident MiB before
 *   readbench warm FILE...                 read every data range (SEEK_DATA) of
 *                                          each FILE into the page cache, MiB
 *   readbench publish TMP LAYER FILE       rename TMP to LAYER, then open FILE and
 *                                          read its first 4 KiB until it equals
 *                                          LAYER's first page, us (+ stale reads)
 *   readbench gen FILE -m MIB -s SEED [-p PCT]
 *                                          write FILE (via .FILE.tmp + rename):
 *                                          dense, or with -p a sparse diff with
 *                                          PCT% random pages plus page 0
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../tools/rng.h"

#define PAGE	4096u
#define CHUNK	(1u << 20)

static const char *prog = "readbench";

static void die(const char *what, const char *file)
{
	fprintf(stderr, "%s: %s%s%s: %s\n", prog, what, file ? " " : "",
		file ? file : "", strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: %s seq|rand|fault|first|prime|opens|evict FILE [-n COUNT] [-s SEED]\n"
		"       %s warm FILE...\n"
		"       %s publish TMP LAYER FILE\n"
		"       %s gen FILE -m MIB -s SEED [-p PERCENT]\n",
		prog, prog, prog, prog);
	exit(2);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Fills @len bytes (a multiple of 8) with random, never all-zero, data. */
static void fill_nonzero(struct rng *r, void *buf, size_t len)
{
	uint64_t *p = buf;

	for (size_t i = 0; i < len / 8; i++)
		p[i] = rng_next(r) | 1;
}

static void *xmalloc_aligned(size_t len)
{
	void *p;

	if (posix_memalign(&p, PAGE, len) != 0) {
		errno = ENOMEM;
		die("allocating", NULL);
	}
	return p;
}

static int open_ro(const char *file, off_t *size)
{
	struct stat st;
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		die("opening", file);
	*size = st.st_size;
	return fd;
}

/*
 * Returns @count distinct page indexes below @npages in random order (a
 * partial Fisher-Yates shuffle); @count is clamped to @npages.
 */
static uint32_t *random_pages(uint64_t npages, uint64_t *count, uint64_t seed)
{
	uint32_t *idx;
	struct rng r;

	if (npages > UINT32_MAX) {
		errno = EFBIG;
		die("file too large for", NULL);
	}
	if (*count > npages)
		*count = npages;
	idx = malloc(npages * sizeof(*idx));
	if (!idx)
		die("allocating", NULL);
	for (uint64_t i = 0; i < npages; i++)
		idx[i] = (uint32_t)i;
	rng_seed(&r, seed);
	for (uint64_t i = 0; i < *count; i++) {
		uint64_t j = i + rng_below(&r, npages - i);
		uint32_t t = idx[i];

		idx[i] = idx[j];
		idx[j] = t;
	}
	return idx;
}

static int mode_seq(const char *file)
{
	char *buf = xmalloc_aligned(CHUNK);
	uint64_t total = 0;
	double t0, t1;
	off_t size;
	ssize_t n;
	int fd = open_ro(file, &size);

	t0 = now();
	while ((n = read(fd, buf, CHUNK)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("reading", file);
		}
		total += (uint64_t)n;
	}
	t1 = now();
	if (total != (uint64_t)size) {
		fprintf(stderr, "%s: %s: read %" PRIu64 " of %jd bytes\n", prog,
			file, total, (intmax_t)size);
		return 1;
	}
	printf("seq %.3f GB/s\n", (double)total / (t1 - t0) / 1e9);
	close(fd);
	free(buf);
	return 0;
}

static int mode_rand(const char *file, uint64_t count, uint64_t seed)
{
	char *buf = xmalloc_aligned(PAGE);
	double t0, t1;
	uint32_t *idx;
	off_t size;
	int fd = open_ro(file, &size);

	idx = random_pages((uint64_t)size / PAGE, &count, seed);
	if (!count) {
		fprintf(stderr, "%s: %s: smaller than a page\n", prog, file);
		return 1;
	}
	t0 = now();
	for (uint64_t i = 0; i < count; i++)
		if (pread(fd, buf, PAGE, (off_t)idx[i] * PAGE) != PAGE)
			die("reading", file);
	t1 = now();
	printf("rand %.0f IOPS\n", (double)count / (t1 - t0));
	free(idx);
	free(buf);
	close(fd);
	return 0;
}

static int mode_fault(const char *file, uint64_t count, uint64_t seed)
{
	volatile const unsigned char *map;
	unsigned int sum = 0;
	double t0, t1;
	uint32_t *idx;
	off_t size;
	int fd = open_ro(file, &size);

	idx = random_pages((uint64_t)size / PAGE, &count, seed);
	if (!count) {
		fprintf(stderr, "%s: %s: smaller than a page\n", prog, file);
		return 1;
	}
	map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		die("mapping", file);
	t0 = now();
	for (uint64_t i = 0; i < count; i++)
		sum += map[(size_t)idx[i] * PAGE];
	t1 = now();
	printf("fault %.3f us\n", (t1 - t0) * 1e6 / (double)count);
	fprintf(stderr, "%s: fault checksum %u\n", prog, sum);
	munmap((void *)map, (size_t)size);
	free(idx);
	close(fd);
	return 0;
}

static int mode_first(const char *file)
{
	char *buf = xmalloc_aligned(PAGE);
	double t0, t1;
	int fd;

	t0 = now();
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("opening", file);
	if (pread(fd, buf, PAGE, 0) < 0)
		die("reading", file);
	t1 = now();
	printf("first %.1f us\n", (t1 - t0) * 1e6);
	close(fd);
	free(buf);
	return 0;
}

/*
 * Opens the file and asks where its first hole is: snapfs answers
 * SEEK_HOLE from the view's map, so this returns once the map is built
 * (what a timed run after it then does not pay: the first-read figures
 * measure that). Prints the time taken.
 */
static int mode_prime(const char *file)
{
	double t0 = now();
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("opening", file);
	if (lseek(fd, 0, SEEK_HOLE) < 0)
		die("SEEK_HOLE on", file);
	printf("prime %.1f us\n", (now() - t0) * 1e6);
	close(fd);
	return 0;
}

/* The cost of an open (and its release), the open's permission checks
 * included: the mean over count pairs after 100 warm-up ones. */
static int mode_opens(const char *file, uint64_t count)
{
	double t0 = 0;

	for (uint64_t i = 0; i < count + 100; i++) {
		int fd;

		if (i == 100)
			t0 = now();
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			die("opening", file);
		close(fd);
	}
	printf("opens %.1f us\n", (now() - t0) * 1e6 / (double)count);
	return 0;
}

/*
 * Publishes layer @tmp as @layer (one rename, as a snapshot producer does)
 * and times until a fresh open of @file, the view, serves @layer's first
 * page.  A view still showing the old version is retried every millisecond
 * (counted as "stale"), up to 60 s, so a stale view costs time instead of
 * looking fast.
 */
static int mode_publish(const char *tmp, const char *layer, const char *file)
{
	char *want = xmalloc_aligned(PAGE), *got = xmalloc_aligned(PAGE);
	const struct timespec poll = { 0, 1000000 };
	unsigned long stale = 0;
	double t0, t1;
	ssize_t n;
	int fd = open(tmp, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("opening", tmp);
	if (lseek(fd, 0, SEEK_DATA) != 0) {
		fprintf(stderr, "%s: %s has no data at offset 0\n", prog, tmp);
		return 1;
	}
	if (pread(fd, want, PAGE, 0) != PAGE)
		die("reading", tmp);
	close(fd);

	t0 = now();
	if (rename(tmp, layer) < 0)
		die("renaming", tmp);
	for (;;) {
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			die("opening", file);
		n = pread(fd, got, PAGE, 0);
		t1 = now();
		if (n < 0)
			die("reading", file);
		close(fd);
		if (n == PAGE && !memcmp(want, got, PAGE))
			break;
		stale++;
		if (t1 - t0 > 60) {
			fprintf(stderr, "%s: %s: first page still not %s's after 60 s\n",
				prog, file, layer);
			return 1;
		}
		nanosleep(&poll, NULL);
	}
	printf("publish %.1f us stale %lu\n", (t1 - t0) * 1e6, stale);
	free(want);
	free(got);
	return 0;
}

/*
 * Reads the data ranges of each file (never its holes: 64 sparse 2 GiB diffs
 * read whole would be 128 GiB of zeros), so the page cache holds exactly what
 * a reader of the layers needs.  This machine reclaims page cache that has
 * been idle for about a minute, so bench.sh warms before every measurement.
 */
static int mode_warm(int nfiles, char **files)
{
	char *buf = xmalloc_aligned(CHUNK);
	uint64_t total = 0;

	for (int i = 0; i < nfiles; i++) {
		off_t size, data = 0, hole;
		int fd = open_ro(files[i], &size);

		while (data < size) {
			data = lseek(fd, data, SEEK_DATA);
			if (data < 0) {
				if (errno == ENXIO)
					break;
				die("seeking data in", files[i]);
			}
			hole = lseek(fd, data, SEEK_HOLE);
			if (hole < 0)
				die("seeking a hole in", files[i]);
			while (data < hole) {
				size_t len = hole - data < CHUNK ? (size_t)(hole - data) : CHUNK;
				ssize_t n = pread(fd, buf, len, data);

				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0)
					die("reading", files[i]);
				data += n;
				total += (uint64_t)n;
			}
		}
		close(fd);
	}
	printf("warm %.0f MiB\n", (double)total / (1 << 20));
	free(buf);
	return 0;
}

static void write_all(int fd, const void *buf, size_t len, off_t off,
		      const char *file)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("writing", file);
		p += n;
		off += n;
		len -= (size_t)n;
	}
}

/*
 * Writes @file (@mib MiB) under a temporary dot-name in the same directory,
 * then renames it into place.  @pct < 0: dense random data (a base).
 * Otherwise a sparse diff: round(pages * pct / 100) distinct random pages
 * plus page 0 (so publishing a diff visibly changes the first page).
 */
static int mode_gen(const char *file, uint64_t mib, uint64_t seed, double pct)
{
	uint64_t size = mib << 20, npages = size / PAGE;
	char *dup1 = strdup(file), *dup2 = strdup(file);
	char tmp[PATH_MAX];
	struct rng r;
	char *buf;
	int fd;

	if (!dup1 || !dup2)
		die("allocating", NULL);
	if (!mib) {
		fprintf(stderr, "%s: gen needs -m MIB > 0\n", prog);
		return 2;
	}
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dirname(dup1), basename(dup2));
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("creating", tmp);
	if (ftruncate(fd, (off_t)size) < 0)
		die("sizing", tmp);
	rng_seed(&r, seed);
	buf = xmalloc_aligned(CHUNK);

	if (pct < 0) {
		for (uint64_t off = 0; off < size; off += CHUNK) {
			size_t len = size - off < CHUNK ? (size_t)(size - off) : CHUNK;

			fill_nonzero(&r, buf, len);
			write_all(fd, buf, len, (off_t)off, tmp);
		}
	} else {
		uint64_t want = (uint64_t)((double)npages * pct / 100.0 + 0.5);
		uint8_t *dirty = calloc((npages + 7) / 8, 1);
		uint64_t have = 0;

		if (!dirty)
			die("allocating", NULL);
		if (want > npages)
			want = npages;
		dirty[0] |= 1;
		have = 1;
		while (have < want + 1 && have < npages) {
			uint64_t p = rng_below(&r, npages);

			if (!(dirty[p / 8] & (1u << (p % 8)))) {
				dirty[p / 8] |= (uint8_t)(1u << (p % 8));
				have++;
			}
		}
		for (uint64_t p = 0; p < npages; p++) {
			if (!(dirty[p / 8] & (1u << (p % 8))))
				continue;
			fill_nonzero(&r, buf, PAGE);
			write_all(fd, buf, PAGE, (off_t)(p * PAGE), tmp);
		}
		free(dirty);
	}
	if (close(fd) < 0)
		die("closing", tmp);
	if (rename(tmp, file) < 0)
		die("renaming", tmp);
	free(buf);
	free(dup1);
	free(dup2);
	return 0;
}

/* Drops FILE's clean pages from its own page cache (the kernel's mapping
 * of that inode only: a view's layers keep theirs). */
static int mode_evict(const char *file)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t pages, res = 0;
	unsigned char *vec;
	void *map;

	if (fd < 0)
		die("opening", file);
	if (fstat(fd, &st) < 0)
		die("stat of", file);
	pages = ((size_t)st.st_size + PAGE - 1) / PAGE;
	if (pages) {
		map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		vec = malloc(pages);
		if (map == MAP_FAILED || !vec)
			die("mapping", file);
		if (mincore(map, (size_t)st.st_size, vec) == 0)
			for (size_t i = 0; i < pages; i++)
				res += vec[i] & 1;
		munmap(map, (size_t)st.st_size);
		free(vec);
	}
	errno = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	if (errno)
		die("fadvise DONTNEED of", file);
	close(fd);
	printf("evict %.1f MiB\n", (double)res * PAGE / (1 << 20));
	return 0;
}

int main(int argc, char *argv[])
{
	uint64_t count = 0, seed = 1, mib = 0;
	const char *mode;
	double pct = -1;
	int c;

	if (argc < 3)
		usage();
	mode = argv[1];
	/* Options may come before or after the positional arguments. */
	while ((c = getopt(argc - 1, argv + 1, "n:s:m:p:")) != -1) {
		switch (c) {
		case 'n':
			count = strtoull(optarg, NULL, 0);
			break;
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		case 'm':
			mib = strtoull(optarg, NULL, 0);
			break;
		case 'p':
			pct = strtod(optarg, NULL);
			if (pct < 0 || pct > 100)
				usage();
			break;
		default:
			usage();
		}
	}
	argv += 1 + optind;
	argc -= 1 + optind;

	if (!strcmp(mode, "warm")) {
		if (argc < 1)
			usage();
		return mode_warm(argc, argv);
	}
	if (!strcmp(mode, "publish")) {
		if (argc != 3)
			usage();
		return mode_publish(argv[0], argv[1], argv[2]);
	}
	if (argc != 1)
		usage();
	if (!strcmp(mode, "seq"))
		return mode_seq(argv[0]);
	if (!strcmp(mode, "rand"))
		return mode_rand(argv[0], count ? count : 100000, seed);
	if (!strcmp(mode, "fault"))
		return mode_fault(argv[0], count ? count : 50000, seed);
	if (!strcmp(mode, "first"))
		return mode_first(argv[0]);
	if (!strcmp(mode, "prime"))
		return mode_prime(argv[0]);
	if (!strcmp(mode, "evict"))
		return mode_evict(argv[0]);
	if (!strcmp(mode, "opens"))
		return mode_opens(argv[0], count ? count : 20000);
	if (!strcmp(mode, "gen"))
		return mode_gen(argv[0], mib, seed, pct);
	usage();
	return 2;
}
