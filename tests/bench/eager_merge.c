// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * eager_merge: the baseline snapfs is measured against -- what existing tools
 * do before a merged snapshot can be read: copy the base with read/write,
 * apply each sparse diff's data ranges (SEEK_DATA/SEEK_HOLE + pread/pwrite),
 * fsync.  It prints the time of each phase; its output is also the flat
 * reference file the benchmark reads directly and through passthrough_ro.
 *
 *   eager_merge OUT BASE [DIFF...]
 *   -> "eager 2.345 s copy 1.500 apply 0.300 fsync 0.545 applied_mib 164"
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK	(1u << 20)

static void die(const char *what, const char *file)
{
	fprintf(stderr, "eager_merge: %s %s: %s\n", what, file, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * Copies [off, end) of @in to the same offsets of @out through @buf, in
 * CHUNK pieces; dies on error or a short file.
 */
static void copy_range(int in, const char *inname, int out, const char *outname,
		       char *buf, off_t off, off_t end)
{
	while (off < end) {
		size_t want = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
		ssize_t n = pread(in, buf, want, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("reading", inname);
		if (n == 0) {
			errno = EIO;
			die("short file", inname);
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(out, buf + done, (size_t)(n - done),
					   off + done);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				die("writing", outname);
			done += w;
		}
		off += n;
	}
}

/*
 * Copies every data range of @in (as SEEK_DATA/SEEK_HOLE report them) onto
 * @out; returns the bytes copied.  A dense file is one range.
 */
static uint64_t copy_data(int in, const char *inname, int out,
			  const char *outname, char *buf, off_t size)
{
	uint64_t bytes = 0;
	off_t data = 0, hole;

	for (;;) {
		data = lseek(in, data, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)
				break;
			die("seeking data in", inname);
		}
		hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0)
			die("seeking a hole in", inname);
		if (hole > size)
			hole = size;
		copy_range(in, inname, out, outname, buf, data, hole);
		bytes += (uint64_t)(hole - data);
		data = hole;
		if (data >= size)
			break;
	}
	return bytes;
}

static int open_layer(const char *name, off_t *size)
{
	struct stat st;
	int fd = open(name, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		die("opening", name);
	*size = st.st_size;
	return fd;
}

int main(int argc, char *argv[])
{
	const char *outname, *basename;
	double t0, t1, t2, t3;
	uint64_t applied = 0;
	off_t size, dsize;
	struct stat st;
	int out, base;
	char *buf;

	if (argc < 3) {
		fprintf(stderr, "usage: eager_merge OUT BASE [DIFF...]\n");
		return 2;
	}
	outname = argv[1];
	basename = argv[2];
	if (posix_memalign((void **)&buf, 4096, CHUNK) != 0) {
		fprintf(stderr, "eager_merge: out of memory\n");
		return 1;
	}

	t0 = now();
	base = open_layer(basename, &size);
	if (fstat(base, &st) < 0)
		die("stat", basename);
	out = open(outname, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		   st.st_mode & 0777);
	if (out < 0)
		die("creating", outname);
	if (ftruncate(out, size) < 0)
		die("sizing", outname);
	copy_data(base, basename, out, outname, buf, size);
	close(base);
	t1 = now();

	for (int i = 3; i < argc; i++) {
		int diff = open_layer(argv[i], &dsize);

		if (dsize != size) {
			fprintf(stderr, "eager_merge: %s: size %jd, base has %jd\n",
				argv[i], (intmax_t)dsize, (intmax_t)size);
			return 1;
		}
		applied += copy_data(diff, argv[i], out, outname, buf, size);
		close(diff);
	}
	t2 = now();

	if (fsync(out) < 0)
		die("syncing", outname);
	if (close(out) < 0)
		die("closing", outname);
	t3 = now();

	printf("eager %.3f s copy %.3f apply %.3f fsync %.3f applied_mib %.0f\n",
	       t3 - t0, t1 - t0, t2 - t1, t3 - t2, (double)applied / (1 << 20));
	free(buf);
	return 0;
}
