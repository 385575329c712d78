/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * viewcheck: compares a view file read through the snapfs mount with its
 * reference flat file, byte for byte, in the access patterns real users have:
 * sequential read(), random pread(), private and shared mmap, and the
 * SEEK_DATA/SEEK_HOLE map. Prints one "ok" line, or stops at the first
 * difference with its offset and the bytes on both sides.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "rng.h"

#define KIB 1024ULL
#define MIB (1024ULL * KIB)

#define BUF_MAX (4 * MIB)	/* longest single read compared */
#define PREAD_MAX (3 * MIB)	/* longest random pread */
#define N_PREADS 2000		/* random preads per run */
#define N_PROBES 256		/* random lseek probes per run */
#define N_PRIVATE 8		/* pages written in the private mapping */

enum {
	M_SEQ = 1 << 0,
	M_PREAD = 1 << 1,
	M_MMAP = 1 << 2,
	M_MMAPSHARED = 1 << 3,
	M_SEEK = 1 << 4,
	M_ALL = (1 << 5) - 1,
};

static const struct {
	const char *name;
	unsigned int bit;
} mode_table[] = {
	{ "seq", M_SEQ },
	{ "pread", M_PREAD },
	{ "mmap", M_MMAP },
	{ "mmapshared", M_MMAPSHARED },
	{ "seek", M_SEEK },
	{ "all", M_ALL },
};

static const char *const usage_text =
	"usage: viewcheck [-s SEED] [-m MODES] VIEW REF [HOLES]\n"
	"  MODES: comma list of seq, pread, mmap, mmapshared, seek, all (default all)\n"
	"  HOLES: \"start end\" lines; the holes reported by SEEK_HOLE must equal them\n";

struct range {
	uint64_t start, end;	/* [start, end) */
};

static struct {
	const char *view, *ref, *holes_path;
	uint64_t seed;
	unsigned int modes;
	int vfd, rfd;
	uint64_t size;
	size_t pagesz;
	const char *mode;	/* mode running, for messages */
	unsigned long long checked;
	unsigned char *vbuf, *rbuf;	/* BUF_MAX bytes each */
	struct range *holes;	/* from HOLES, merged; NULL if not given */
	size_t nholes;
	struct rng rng;
} g = { .seed = 1, .modes = M_ALL };

/* Prints how to rerun just this mode, then exits 1. */
__attribute__((noreturn))
static void fail_exit(void)
{
	fflush(stdout);
	fprintf(stderr, "viewcheck: reproduce with: viewcheck -s %llu -m %s %s %s%s%s\n",
		(unsigned long long)g.seed, g.mode && strcmp(g.mode, "stat") ? g.mode : "all",
		g.view, g.ref, g.holes_path ? " " : "", g.holes_path ? g.holes_path : "");
	exit(1);
}

/* An error that is not a content difference: "viewcheck: VIEW: mode M: ...". */
__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "viewcheck: %s: mode %s: ", g.view, g.mode ? g.mode : "setup");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fail_exit();
}

/* "viewcheck: VIEW: mismatch at offset X (len Y) mode M: view=V ref=R". */
__attribute__((noreturn))
static void mismatch(uint64_t off, uint64_t len, const char *view, const char *ref)
{
	fflush(stdout);
	fprintf(stderr, "viewcheck: %s: mismatch at offset %llu (len %llu) mode %s: view=%s ref=%s\n",
		g.view, (unsigned long long)off, (unsigned long long)len,
		g.mode ? g.mode : "setup", view, ref);
	fail_exit();
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		fprintf(stderr, "viewcheck: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	return p;
}

static void hex(char *out, size_t outlen, const unsigned char *p, size_t n)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && used + 3 < outlen; i++)
		used += (size_t)snprintf(out + used, outlen - used, "%02x", p[i]);
}

/* Reads [off, off + len) of REF, which must be entirely inside REF. */
static void ref_read(unsigned char *buf, uint64_t off, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(g.rfd, buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "viewcheck: %s: pread at %llu: %s\n", g.ref,
				(unsigned long long)(off + done), strerror(errno));
			exit(1);
		}
		if (n == 0) {
			fprintf(stderr, "viewcheck: %s: unexpected end of file at %llu\n",
				g.ref, (unsigned long long)(off + done));
			exit(1);
		}
		done += (size_t)n;
	}
}

/*
 * Compares len bytes the view gave for offset off (from a read buffer or a
 * mapping) with REF; on a difference reports its first byte, with up to 16
 * bytes of each side, and the length of the whole access.
 */
static void compare(const unsigned char *view, uint64_t off, uint64_t len)
{
	for (uint64_t done = 0; done < len;) {
		size_t n = len - done < BUF_MAX ? (size_t)(len - done) : BUF_MAX;

		ref_read(g.rbuf, off + done, n);
		if (memcmp(view + done, g.rbuf, n)) {
			size_t i = 0;
			char vh[40], rh[40];

			while (view[done + i] == g.rbuf[i])
				i++;
			size_t show = n - i < 16 ? n - i : 16;

			hex(vh, sizeof(vh), view + done + i, show);
			hex(rh, sizeof(rh), g.rbuf + i, show);
			mismatch(off + done + i, len, vh, rh);
		}
		done += n;
	}
	g.checked += len;
}

/* ---- seq: read() from start to end in fixed and odd sizes ---- */

static void run_seq(void)
{
	static const size_t sizes[] = { MIB, 12345, 0 /* random 1..200000 */ };

	for (size_t pass = 0; pass < sizeof(sizes) / sizeof(sizes[0]); pass++) {
		uint64_t off = 0;

		if (lseek(g.vfd, 0, SEEK_SET) != 0)
			fail("lseek to 0: %s", strerror(errno));
		for (;;) {
			size_t want = sizes[pass] ? sizes[pass]
				      : (size_t)rng_between(&g.rng, 1, 200000);
			ssize_t n = read(g.vfd, g.vbuf, want);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				fail("read of %zu bytes at %llu: %s", want,
				     (unsigned long long)off, strerror(errno));
			if (n == 0)
				break;
			if (off + (uint64_t)n > g.size) {
				char v[64];

				snprintf(v, sizeof(v), "%zd bytes read", n);
				mismatch(off, want, v, "end of file");
			}
			compare(g.vbuf, off, (uint64_t)n);
			off += (uint64_t)n;
		}
		if (off != g.size) {
			char v[64], r[64];

			snprintf(v, sizeof(v), "end of file at %llu", (unsigned long long)off);
			snprintf(r, sizeof(r), "size %llu", (unsigned long long)g.size);
			mismatch(off, 0, v, r);
		}
	}
}

/* ---- pread: random unaligned reads, page and EOF edges ---- */

static void one_pread(uint64_t off, uint64_t len)
{
	uint64_t expect;
	ssize_t n;

	if (len > BUF_MAX)
		len = BUF_MAX;
	expect = off >= g.size ? 0 : g.size - off < len ? g.size - off : len;
	do
		n = pread(g.vfd, g.vbuf, (size_t)len, (off_t)off);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		fail("pread of %llu bytes at %llu: %s", (unsigned long long)len,
		     (unsigned long long)off, strerror(errno));
	if ((uint64_t)n != expect) {
		char v[64], r[64];

		snprintf(v, sizeof(v), "%zd bytes read", n);
		snprintf(r, sizeof(r), "%llu bytes", (unsigned long long)expect);
		mismatch(off, len, v, r);
	}
	compare(g.vbuf, off, (uint64_t)n);
}

/* An offset near a page boundary: k * 4096 plus or minus up to 64 bytes. */
static uint64_t near_page(uint64_t size)
{
	uint64_t k = rng_below(&g.rng, size / 4096 + 2);
	uint64_t off = k * 4096;
	uint64_t d = rng_below(&g.rng, 129);

	off = d < 64 ? (off > 64 - d ? off - (64 - d) : 0) : off + (d - 64);
	return off < size ? off : size ? size - 1 : 0;
}

static void run_pread(void)
{
	uint64_t size = g.size;
	uint64_t tail = size % 4096 ? size - size % 4096 : size >= 4096 ? size - 4096 : 0;

	/* The edges, always: first and last bytes, the last page, past EOF. */
	one_pread(0, 1);
	one_pread(0, size + 1);
	one_pread(size ? size - 1 : 0, 1);
	one_pread(size ? size - 1 : 0, 2);
	one_pread(tail, 4096);
	one_pread(tail, 8192);
	one_pread(tail ? tail - 1 : 0, 4096 + 2);
	one_pread(size, 1);
	one_pread(size + 1, 4096);
	one_pread(size + 4096 * 1000, 12345);

	/* The edges of the holes, when known: they are layer boundaries too. */
	for (size_t i = 0; g.holes && i < g.nholes && i < 256; i++) {
		for (int e = 0; e < 2; e++) {
			uint64_t b = e ? g.holes[i].end : g.holes[i].start;

			one_pread(b > 7 ? b - 7 : 0, 16);
			one_pread(b, rng_log_between(&g.rng, 1, 64 * KIB));
		}
	}

	for (int i = 0; i < N_PREADS; i++) {
		unsigned int kind = (unsigned int)rng_below(&g.rng, 100);
		uint64_t len = rng_log_between(&g.rng, 1, PREAD_MAX);
		uint64_t off;

		if (kind < 35 || size == 0) {
			off = size ? rng_below(&g.rng, size) : 0;
		} else if (kind < 60) {
			off = near_page(size);
		} else if (kind < 70) {
			/* in the last two pages, often past the end */
			off = size - rng_between(&g.rng, 1, size < 8192 ? size : 8192);
			len = rng_between(&g.rng, 1, 3 * 4096);
		} else if (kind < 80) {
			/* starts before EOF, ends after it: a short count */
			uint64_t x = rng_between(&g.rng, 1, size < PREAD_MAX ? size : PREAD_MAX);

			off = size - x;
			len = x + rng_between(&g.rng, 1, 65536);
		} else if (kind < 85) {
			off = size + rng_below(&g.rng, MIB);	/* entirely past EOF */
		} else if (g.holes && g.nholes) {
			struct range *h = &g.holes[rng_below(&g.rng, g.nholes)];
			uint64_t b = rng_percent(&g.rng, 50) ? h->start : h->end;
			uint64_t back = rng_below(&g.rng, 4097);

			off = b > back ? b - back : 0;
		} else {
			off = near_page(size);
		}
		one_pread(off, len);
	}
}

/* ---- mmap and mmapshared: every page in random order ---- */

static sigjmp_buf fault_env;
static volatile sig_atomic_t fault_armed;
static volatile uint64_t fault_off;

static void on_fault(int sig)
{
	if (!fault_armed) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	siglongjmp(fault_env, sig);
}

static uint64_t *shuffled_pages(uint64_t npg)
{
	uint64_t *perm = xmalloc(npg * sizeof(*perm));

	for (uint64_t i = 0; i < npg; i++)
		perm[i] = i;
	for (uint64_t i = npg; i > 1; i--) {
		uint64_t j = rng_below(&g.rng, i);
		uint64_t t = perm[i - 1];

		perm[i - 1] = perm[j];
		perm[j] = t;
	}
	return perm;
}

/* Compares every page of a mapping of the whole view, in the given order. */
static void check_mapping(const unsigned char *map, const uint64_t *order, uint64_t npg)
{
	for (uint64_t k = 0; k < npg; k++) {
		uint64_t off = order[k] * g.pagesz;
		uint64_t len = g.size - off < g.pagesz ? g.size - off : g.pagesz;

		fault_off = off;
		compare(map + off, off, len);
		/* The rest of the last page exists in the mapping and is zeros. */
		for (uint64_t i = len; i < g.pagesz; i++) {
			if (map[off + i]) {
				char v[16];

				snprintf(v, sizeof(v), "%02x", map[off + i]);
				mismatch(off + i, g.pagesz - len, v, "00 (past end of file)");
			}
		}
	}
}

/*
 * Writes to a few pages of the private mapping, checks the mapping keeps
 * the writes, then checks that a fresh fd (pread and a new shared mapping)
 * and the old fd still read the original bytes.
 */
static void check_private_writes(unsigned char *map, uint64_t npg)
{
	uint64_t pages[N_PRIVATE];
	int n = npg < N_PRIVATE ? (int)npg : N_PRIVATE;
	unsigned char *map2;
	int fd2;

	for (int i = 0; i < n; i++) {
		int dup;

		do {	/* distinct pages, the last one always among them */
			pages[i] = i == 0 ? npg - 1 : rng_below(&g.rng, npg);
			dup = 0;
			for (int j = 0; j < i; j++)
				dup |= pages[j] == pages[i];
		} while (dup);
		fault_off = pages[i] * g.pagesz;
		for (uint64_t b = 0; b < g.pagesz; b++)
			map[pages[i] * g.pagesz + b] ^= 0x5a;
	}
	for (int i = 0; i < n; i++) {
		uint64_t off = pages[i] * g.pagesz;
		uint64_t len = g.size - off < g.pagesz ? g.size - off : g.pagesz;

		ref_read(g.rbuf, off, (size_t)len);
		for (uint64_t b = 0; b < len; b++) {
			unsigned char want = (unsigned char)(g.rbuf[b] ^ 0x5a);

			if (map[off + b] != want) {
				char v[8], r[40];

				snprintf(v, sizeof(v), "%02x", map[off + b]);
				snprintf(r, sizeof(r), "%02x (private write lost)", want);
				mismatch(off + b, len, v, r);
			}
		}
	}

	fd2 = open(g.view, O_RDONLY | O_CLOEXEC);
	if (fd2 < 0)
		fail("reopen: %s", strerror(errno));
	map2 = mmap(NULL, (size_t)g.size, PROT_READ, MAP_SHARED, fd2, 0);
	if (map2 == MAP_FAILED)
		fail("mmap MAP_SHARED of a fresh fd: %s", strerror(errno));
	for (int i = 0; i < n; i++) {
		uint64_t off = pages[i] * g.pagesz;
		uint64_t len = g.size - off < g.pagesz ? g.size - off : g.pagesz;
		int fds[2] = { fd2, g.vfd };

		for (int f = 0; f < 2; f++) {
			ssize_t got = pread(fds[f], g.vbuf, (size_t)len, (off_t)off);

			if (got < 0)
				fail("pread after private write: %s", strerror(errno));
			if ((uint64_t)got != len) {
				char v[64], r[64];

				snprintf(v, sizeof(v), "%zd bytes read", got);
				snprintf(r, sizeof(r), "%llu bytes", (unsigned long long)len);
				mismatch(off, len, v, r);
			}
			compare(g.vbuf, off, len);	/* the private write must not show */
		}
		fault_off = off;
		compare(map2 + off, off, len);
	}
	munmap(map2, (size_t)g.size);
	close(fd2);
}

/* The mapping checks, with a fault on access reported as a mismatch. */
static void guarded_checks(unsigned char *map, const uint64_t *order, uint64_t npg,
			   int shared)
{
	if (sigsetjmp(fault_env, 1)) {
		fault_armed = 0;
		mismatch(fault_off, g.pagesz, "SIGBUS/SIGSEGV on access", "readable page");
	}
	fault_armed = 1;
	check_mapping(map, order, npg);
	if (!shared)
		check_private_writes(map, npg);
	fault_armed = 0;
}

static void run_mmap(int shared)
{
	uint64_t npg = (g.size + g.pagesz - 1) / g.pagesz;
	struct sigaction sa = { .sa_handler = on_fault };
	unsigned char *map;
	uint64_t *order;

	if (g.size == 0)
		return;		/* nothing to map: mmap of 0 bytes is EINVAL */
	map = mmap(NULL, (size_t)g.size, shared ? PROT_READ : PROT_READ | PROT_WRITE,
		   shared ? MAP_SHARED : MAP_PRIVATE, g.vfd, 0);
	if (map == MAP_FAILED)
		fail("mmap %s: %s", shared ? "MAP_SHARED" : "MAP_PRIVATE", strerror(errno));
	order = shuffled_pages(npg);

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	guarded_checks(map, order, npg, shared);
	free(order);
	munmap(map, (size_t)g.size);
}

/* ---- seek: the SEEK_DATA/SEEK_HOLE map ---- */

static void add_range(struct range **v, size_t *n, size_t *cap, uint64_t a, uint64_t b)
{
	if (*n && (*v)[*n - 1].end >= a) {	/* merge touching ranges */
		if (b > (*v)[*n - 1].end)
			(*v)[*n - 1].end = b;
		return;
	}
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*v = realloc(*v, *cap * sizeof(**v));
		if (!*v) {
			fprintf(stderr, "viewcheck: out of memory\n");
			exit(1);
		}
	}
	(*v)[(*n)++] = (struct range){ a, b };
}

/* Reads HOLES ("start end" per line, '#' comments) into g.holes, merged. */
static void load_holes(void)
{
	FILE *f = fopen(g.holes_path, "r");
	char line[256];
	size_t cap = 0;
	unsigned int lineno = 0;
	uint64_t last = 0;

	if (!f) {
		fprintf(stderr, "viewcheck: %s: %s\n", g.holes_path, strerror(errno));
		exit(2);
	}
	g.holes = xmalloc(sizeof(*g.holes));
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, b;
		char extra;

		lineno++;
		if (line[strspn(line, " \t\r\n")] == '\0' || line[0] == '#')
			continue;
		if (sscanf(line, "%llu %llu %c", &a, &b, &extra) != 2 || a >= b ||
		    b > g.size || a < last) {
			fprintf(stderr, "viewcheck: %s:%u: bad hole line (want \"start end\", "
				"sorted, start < end <= %llu): %s", g.holes_path, lineno,
				(unsigned long long)g.size, line);
			exit(2);
		}
		last = b;
		add_range(&g.holes, &g.nholes, &cap, a, b);
	}
	fclose(f);
}

/* Reports, in seek mode, that lseek(o, whence) gave got instead of want. */
__attribute__((noreturn))
static void seek_mismatch(uint64_t o, const char *whence, long long got, int err, long long want)
{
	char v[96], r[96];

	if (got < 0)
		snprintf(v, sizeof(v), "%s->%s", whence, strerror(err));
	else
		snprintf(v, sizeof(v), "%s->%lld", whence, got);
	if (want < 0)
		snprintf(r, sizeof(r), "%s->ENXIO", whence);
	else
		snprintf(r, sizeof(r), "%s->%lld", whence, want);
	mismatch(o, 0, v, r);
}

/* Reports an lseek result outside (o, size] during the walk. */
__attribute__((noreturn))
static void bad_seek(uint64_t o, const char *whence, long long got)
{
	char v[64], r[64];

	snprintf(v, sizeof(v), "%s->%lld", whence, got);
	snprintf(r, sizeof(r), "%s->offset in [%llu,%llu]", whence,
		 (unsigned long long)o, (unsigned long long)g.size);
	mismatch(o, 0, v, r);
}

/* Checks one lseek against the walked map (want < 0: ENXIO expected). */
static void probe(uint64_t o, int whence, long long want)
{
	off_t got = lseek(g.vfd, (off_t)o, whence);
	int err = errno;
	const char *name = whence == SEEK_DATA ? "SEEK_DATA" : "SEEK_HOLE";

	if (got < 0 && err != ENXIO)
		fail("lseek %s at %llu: %s", name, (unsigned long long)o, strerror(err));
	if ((want < 0) != (got < 0) || (want >= 0 && got != want))
		seek_mismatch(o, name, got, err, want);
}

/* Expected SEEK_DATA/SEEK_HOLE results at o < size from the hole list. */
static void probe_at(const struct range *h, size_t n, uint64_t o)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {	/* first hole ending after o */
		size_t mid = (lo + hi) / 2;

		if (h[mid].end <= o)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < n && h[lo].start <= o) {
		probe(o, SEEK_DATA, h[lo].end == g.size ? -1 : (long long)h[lo].end);
		probe(o, SEEK_HOLE, (long long)o);
	} else {
		probe(o, SEEK_DATA, (long long)o);
		probe(o, SEEK_HOLE, (long long)(lo < n ? h[lo].start : g.size));
	}
}

static void run_seek(void)
{
	struct range *h = NULL;
	size_t n = 0, cap = 0;
	uint64_t off = 0;

	/* Walk the whole file: data extents and the holes between them. */
	while (off < g.size) {
		off_t d = lseek(g.vfd, (off_t)off, SEEK_DATA);
		uint64_t data;

		if (d < 0 && errno != ENXIO)
			fail("lseek SEEK_DATA at %llu: %s", (unsigned long long)off,
			     strerror(errno));
		data = d < 0 ? g.size : (uint64_t)d;
		if (data < off || data > g.size)
			bad_seek(off, "SEEK_DATA", (long long)d);
		if (data > off)
			add_range(&h, &n, &cap, off, data);
		if (data == g.size)
			break;
		off_t e = lseek(g.vfd, (off_t)data, SEEK_HOLE);

		if (e < 0)
			fail("lseek SEEK_HOLE at %llu: %s", (unsigned long long)data,
			     strerror(errno));
		if ((uint64_t)e <= data || (uint64_t)e > g.size)
			bad_seek(data, "SEEK_HOLE", (long long)e);
		off = (uint64_t)e;
	}

	/* Every hole the view reports must be zeros in the reference. */
	for (size_t i = 0; i < n; i++) {
		for (uint64_t o = h[i].start; o < h[i].end;) {
			size_t len = h[i].end - o < BUF_MAX ? (size_t)(h[i].end - o) : BUF_MAX;

			ref_read(g.rbuf, o, len);
			for (size_t b = 0; b < len; b++) {
				if (g.rbuf[b]) {
					char v[64], r[16];

					snprintf(v, sizeof(v), "hole [%llu,%llu)",
						 (unsigned long long)h[i].start,
						 (unsigned long long)h[i].end);
					snprintf(r, sizeof(r), "%02x", g.rbuf[b]);
					mismatch(o + b, h[i].end - h[i].start, v, r);
				}
			}
			o += len;
			g.checked += len;
		}
	}

	/* The holes must be exactly those the reference lists. */
	if (g.holes) {
		for (size_t i = 0; i < n || i < g.nholes; i++) {
			char v[64] = "no hole", r[64] = "no hole";

			if (i < n && i < g.nholes && h[i].start == g.holes[i].start &&
			    h[i].end == g.holes[i].end)
				continue;
			if (i < n)
				snprintf(v, sizeof(v), "hole [%llu,%llu)",
					 (unsigned long long)h[i].start,
					 (unsigned long long)h[i].end);
			if (i < g.nholes)
				snprintf(r, sizeof(r), "hole [%llu,%llu)",
					 (unsigned long long)g.holes[i].start,
					 (unsigned long long)g.holes[i].end);
			uint64_t at = i >= n ? g.holes[i].start : i >= g.nholes ? h[i].start
				      : h[i].start < g.holes[i].start ? h[i].start : g.holes[i].start;

			mismatch(at, 0, v, r);
		}
	}

	/* Point probes: the edges of every hole, the ends, random offsets. */
	if (g.size) {
		probe_at(h, n, 0);
		probe_at(h, n, g.size - 1);
		for (size_t i = 0; i < n && i < 4096; i++) {
			uint64_t pts[4] = { h[i].start, h[i].end - 1, h[i].end,
					    h[i].start ? h[i].start - 1 : 0 };

			for (int k = 0; k < 4; k++)
				if (pts[k] < g.size)
					probe_at(h, n, pts[k]);
		}
		for (int i = 0; i < N_PROBES; i++)
			probe_at(h, n, rng_below(&g.rng, g.size));
	}
	/* At and after EOF there is neither data nor hole. */
	uint64_t eofs[4] = { g.size, g.size + 1, g.size + 4096, g.size + MIB };

	for (int k = 0; k < 4; k++) {
		probe(eofs[k], SEEK_DATA, -1);
		probe(eofs[k], SEEK_HOLE, -1);
	}
	free(h);
}

/* ---- main ---- */

static unsigned int parse_modes(const char *s)
{
	unsigned int modes = 0;
	char *copy = strdup(s), *save = NULL;

	if (!copy)
		exit(1);
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t i;

		for (i = 0; i < sizeof(mode_table) / sizeof(mode_table[0]); i++)
			if (!strcmp(t, mode_table[i].name))
				break;
		if (i == sizeof(mode_table) / sizeof(mode_table[0])) {
			fprintf(stderr, "viewcheck: unknown mode %s\n%s", t, usage_text);
			exit(2);
		}
		modes |= mode_table[i].bit;
	}
	free(copy);
	if (!modes) {
		fprintf(stderr, "viewcheck: no mode given\n%s", usage_text);
		exit(2);
	}
	return modes;
}

int main(int argc, char **argv)
{
	static const struct {
		unsigned int bit;
		const char *name;
		void (*run)(void);
	} runs[] = {
		{ M_SEQ, "seq", run_seq },
		{ M_PREAD, "pread", run_pread },
		{ M_MMAP, "mmap", NULL },
		{ M_MMAPSHARED, "mmapshared", NULL },
		{ M_SEEK, "seek", run_seek },
	};
	char done[64] = "";
	struct stat vst, rst;
	char *end;
	int c;

	while ((c = getopt(argc, argv, "s:m:h")) != -1) {
		switch (c) {
		case 's':
			errno = 0;
			g.seed = strtoull(optarg, &end, 0);
			if (errno || end == optarg || *end) {
				fprintf(stderr, "viewcheck: invalid seed %s\n%s", optarg, usage_text);
				return 2;
			}
			break;
		case 'm':
			g.modes = parse_modes(optarg);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			fputs(usage_text, stderr);
			return 2;
		}
	}
	if (argc - optind < 2 || argc - optind > 3) {
		fputs(usage_text, stderr);
		return 2;
	}
	g.view = argv[optind];
	g.ref = argv[optind + 1];
	g.holes_path = argc - optind == 3 ? argv[optind + 2] : NULL;
	g.pagesz = (size_t)sysconf(_SC_PAGESIZE);
	rng_seed(&g.rng, g.seed);

	g.vfd = open(g.view, O_RDONLY | O_CLOEXEC);
	if (g.vfd < 0)
		fail("open: %s", strerror(errno));
	g.rfd = open(g.ref, O_RDONLY | O_CLOEXEC);
	if (g.rfd < 0) {
		fprintf(stderr, "viewcheck: %s: open: %s\n", g.ref, strerror(errno));
		return 1;
	}
	if (fstat(g.vfd, &vst) < 0)
		fail("fstat: %s", strerror(errno));
	if (fstat(g.rfd, &rst) < 0) {
		fprintf(stderr, "viewcheck: %s: fstat: %s\n", g.ref, strerror(errno));
		return 1;
	}
	g.mode = "stat";
	if (!S_ISREG(vst.st_mode))
		fail("not a regular file (mode %o)", (unsigned int)vst.st_mode);
	if (vst.st_size != rst.st_size) {
		char v[40], r[40];

		snprintf(v, sizeof(v), "size %lld", (long long)vst.st_size);
		snprintf(r, sizeof(r), "size %lld", (long long)rst.st_size);
		mismatch(0, 0, v, r);
	}
	g.size = (uint64_t)vst.st_size;
	g.vbuf = xmalloc(BUF_MAX);
	g.rbuf = xmalloc(BUF_MAX);
	if (g.holes_path)
		load_holes();

	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		if (!(g.modes & runs[i].bit))
			continue;
		g.mode = runs[i].name;
		if (runs[i].run)
			runs[i].run();
		else
			run_mmap(runs[i].bit == M_MMAPSHARED);
		if (done[0])
			strcat(done, ",");
		strcat(done, runs[i].name);
	}

	printf("viewcheck: %s: ok (%s, %llu bytes checked)\n", g.view, done, g.checked);
	free(g.holes);
	free(g.rbuf);
	free(g.vbuf);
	close(g.rfd);
	close(g.vfd);
	return 0;
}
