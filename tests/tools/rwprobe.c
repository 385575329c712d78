/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * rwprobe VIEW REFERENCE: opens VIEW O_RDWR, as QEMU before 8.2 opens guest
 * memory for a private mapping, and checks what -o open_rw=private
 * promises (doc/design.md §15): a private writable mapping works and reads
 * the reference, its writes stay private; a shared mapping (writable or
 * not) fails; write, pwrite, ftruncate, fallocate and copy_file_range into
 * it fail; VIEW's bytes are unchanged at the end. Prints one line per
 * check; exits 0 if all hold, 1 if one does not, 2 on a usage or setup
 * error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int failed;

static void check(int ok, const char *what, int err)
{
	printf("%s: %s%s%s\n", ok ? "ok" : "FAIL", what, err ? ": " : "",
	       err ? strerror(err) : "");
	if (!ok)
		failed = 1;
}

/* Whether the whole of fd equals ref (both size bytes). */
static int same_file(int fd, int ref, size_t size)
{
	static char a[1 << 16], b[1 << 16];

	for (size_t off = 0; off < size;) {
		size_t n = size - off < sizeof(a) ? size - off : sizeof(a);

		if (pread(fd, a, n, (off_t)off) != (ssize_t)n ||
		    pread(ref, b, n, (off_t)off) != (ssize_t)n || memcmp(a, b, n))
			return 0;
		off += n;
	}
	return 1;
}

static void probe_maps(int fd, int ref, size_t size)
{
	char *p, *r;
	int e;

	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	e = errno;
	check(p == MAP_FAILED, "MAP_SHARED PROT_WRITE refused", p == MAP_FAILED ? e : 0);
	if (p != MAP_FAILED)
		munmap(p, size);
	p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	e = errno;
	check(p == MAP_FAILED, "MAP_SHARED PROT_READ refused (would be mprotect-able)",
	      p == MAP_FAILED ? e : 0);
	if (p != MAP_FAILED)
		munmap(p, size);

	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	e = errno;
	check(p != MAP_FAILED, "MAP_PRIVATE PROT_WRITE maps", p == MAP_FAILED ? e : 0);
	if (p == MAP_FAILED)
		return;
	r = mmap(NULL, size, PROT_READ, MAP_PRIVATE, ref, 0);
	if (r == MAP_FAILED) {
		perror("rwprobe: mmap of the reference");
		exit(2);
	}
	check(memcmp(p, r, size) == 0, "private mapping reads the reference", 0);
	for (size_t off = 0; off < size; off += 4096)
		p[off] ^= 0x5a;		/* copy-on-write, never written back */
	check(p[0] == (char)(r[0] ^ 0x5a), "private writes read back", 0);
	e = msync(p, size, MS_SYNC) == 0 ? 0 : errno;
	check(e == 0, "msync of the private mapping", e);
	munmap(r, size);
	munmap(p, size);
}

static void probe_writes(int fd)
{
	char buf[4096] = { 1 };
	int src, e;

	errno = 0;
	check(write(fd, buf, sizeof(buf)) < 0 && errno == EROFS, "write refused (EROFS)",
	      errno);
	errno = 0;
	check(pwrite(fd, buf, sizeof(buf), 4096) < 0 && errno == EROFS,
	      "pwrite refused (EROFS)", errno);
	errno = 0;
	check(ftruncate(fd, 0) < 0 && errno == EROFS, "ftruncate refused (EROFS)", errno);
	errno = 0;
	e = fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 4096) < 0 ? errno : 0;
	check(e != 0, "fallocate(PUNCH_HOLE) refused", e);
	src = open("/proc/self/exe", O_RDONLY);
	if (src >= 0) {
		loff_t in = 0, out = 0;

		errno = 0;
		e = copy_file_range(src, &in, fd, &out, 4096, 0) < 0 ? errno : 0;
		check(e != 0, "copy_file_range into it refused", e);
		close(src);
	}
}

int main(int argc, char **argv)
{
	struct stat st;
	int fd, ref;

	if (argc != 3) {
		fprintf(stderr, "usage: rwprobe VIEW REFERENCE\n");
		return 2;
	}
	ref = open(argv[2], O_RDONLY);
	if (ref < 0 || fstat(ref, &st) < 0 || st.st_size < 8192) {
		fprintf(stderr, "rwprobe: %s: need a readable file of 8 KiB or more\n",
			argv[2]);
		return 2;
	}
	fd = open(argv[1], O_RDWR);
	check(fd >= 0, "open O_RDWR", fd < 0 ? errno : 0);
	if (fd < 0)
		return 1;
	probe_maps(fd, ref, (size_t)st.st_size);
	probe_writes(fd);
	check(same_file(fd, ref, (size_t)st.st_size), "content unchanged", 0);
	close(fd);
	return failed;
}
