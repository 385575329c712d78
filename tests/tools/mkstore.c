/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mkstore: generates a seeded random snapfs STORE for the mount tests, and
 * beside it an independent reference: the flat content, hole list and chain
 * of every layered file, computed from the generator's own page model and
 * never by reading the layers back. Layers are published the way a producer
 * does it (temporary name, then rename), one file at a time.
 *
 * The model is one owner per page (the highest chain layer that wrote it, or
 * none) plus a zero flag; a page's bytes are a pure function of the seed, the
 * layer and the page, so the reference is regenerated rather than stored.
 * Each layer's SEEK_DATA map is checked against what was written, so a
 * filesystem with coarse holes or zero detection fails here, not in the test.
 *
 * REF_DIR receives:
 *   PATH          the flat view, sparse exactly where the view has holes,
 *                 mode of the base minus write bits
 *   PATH.holes    one "start end" line (bytes, end exclusive, ascending) per
 *                 hole of the view: page-aligned, the last one ends at the
 *                 size; an empty file when the view has no hole
 *   MANIFEST      one "PATH SIZE DEPTH DATA_BYTES BASE,DIFF,..." line per
 *                 layered file: DEPTH diffs, DATA_BYTES = SIZE minus holes,
 *                 the chain's layer names base first (superseded ones left out)
 *   PLAIN         the ordinary entries, copied into REF_DIR as they are:
 *                 "f PATH SIZE", "l PATH TARGET" (symlink), "d PATH"
 * Paths are relative to STORE_DIR and contain no white space.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "rng.h"

#define KIB 1024ULL
#define MIB (1024ULL * KIB)

/* What a layer holds at one page. */
enum {
	PG_HOLE = 0,	/* not written: a hole */
	PG_DATA = 1,	/* written with random bytes */
	PG_ZERO = 2,	/* written with zeros: still data, hides the layers below */
};

#define OWNER_NONE UINT16_MAX
#define MAXDEPTH_LIMIT 4096U
#define IOBUF_SIZE MIB

static const char *const usage_text =
	"usage: mkstore [-s SEED] [-n CHAINS] [-D MAXDEPTH] [-S MAXSIZE] [-p PAGE] STORE_DIR REF_DIR\n"
	"  -s SEED      seed of the generator (default 1)\n"
	"  -n CHAINS    number of layered files (default 20)\n"
	"  -D MAXDEPTH  maximum number of diffs in a chain (default 16)\n"
	"  -S MAXSIZE   maximum size of a layered file, suffix K/M/G allowed (default 64M)\n"
	"  -p PAGE      page size of the diffs (default 4096)\n";

static struct {
	uint64_t seed;
	unsigned int chains;
	unsigned int maxdepth;
	uint64_t maxsize;
	uint64_t page;
	const char *store;
	const char *ref;
} opt = {
	.seed = 1,
	.chains = 20,
	.maxdepth = 16,
	.maxsize = 64 * MIB,
	.page = 4096,
};

static unsigned long long total_layers;	/* layer files published */
static unsigned long long total_bytes;	/* bytes written into STORE */
static uint64_t budget;			/* big files shrink to keep total_bytes under it */
static unsigned char *iobuf;		/* IOBUF_SIZE bytes, for one run */

/* Where the bytes of the pages of one file come from. */
struct pagesrc {
	const uint8_t *state;	/* PG_* of each page */
	const uint16_t *owner;	/* NULL: every page from key; else keys[owner] */
	const uint64_t *keys;
	uint64_t key;
};

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("mkstore: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Dies with "mkstore: PATH: WHAT: strerror(errno)". */
__attribute__((noreturn))
static void die_errno(const char *path, const char *what)
{
	die("%s: %s: %s", path, what, strerror(errno));
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

/* Writes ROOT/REL (or ROOT when REL is empty) into buf (PATH_MAX bytes). */
static void join(char *buf, const char *root, const char *rel)
{
	int n = *rel ? snprintf(buf, PATH_MAX, "%s/%s", root, rel)
		     : snprintf(buf, PATH_MAX, "%s", root);

	if (n < 0 || n >= PATH_MAX)
		die("%s/%s: path too long", root, rel);
}

/* Creates path and each of its parents from the first '/' at or after from. */
static void mkdirs(char *path, char *from)
{
	for (char *p = from;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;

		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			die_errno(path, "mkdir");
		*p = c;
		if (!c)
			break;
	}
}

/* Creates every directory of REL (a relative directory path) under ROOT. */
static void mkdir_rel(const char *root, const char *rel)
{
	char path[PATH_MAX];

	if (!*rel)
		return;
	join(path, root, rel);
	mkdirs(path, path + strlen(root) + 1);
}

/* Creates DIR and its parents if missing; dies unless DIR is then empty. */
static void prepare_root(const char *dir)
{
	char path[PATH_MAX];
	DIR *d;
	struct dirent *de;

	join(path, dir, "");
	mkdirs(path, path + 1);
	d = opendir(dir);
	if (!d)
		die_errno(dir, "opendir");
	errno = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			die("%s: directory is not empty (found %s)", dir, de->d_name);
	}
	if (errno)
		die_errno(dir, "readdir");
	closedir(d);
}

static void pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
		       const char *path)
{
	const unsigned char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die_errno(path, "pwrite");
		}
		if (n == 0) {
			errno = EIO;
			die_errno(path, "pwrite wrote nothing");
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
}

/* Bytes of page p in a file of the given size (the last page may be short). */
static size_t page_len(uint64_t size, uint64_t p)
{
	uint64_t start = p * opt.page;
	uint64_t left = size - start;

	return left < opt.page ? (size_t)left : (size_t)opt.page;
}

static uint64_t npages_of(uint64_t size)
{
	return (size + opt.page - 1) / opt.page;
}

/* The content of page p of the layer with content key `key`. */
static void fill_page(unsigned char *buf, size_t len, uint64_t key, uint64_t p,
		      int state)
{
	struct rng r;

	if (state == PG_ZERO) {
		memset(buf, 0, len);
		return;
	}
	rng_seed(&r, rng_mix(key, p));
	rng_fill(&r, buf, len);
}

/*
 * Writes every non-hole page of src into fd, a run of adjacent pages at a
 * time (one pwrite per IOBUF_SIZE). Returns the number of bytes written.
 */
static uint64_t write_pages(int fd, const char *path, uint64_t size,
			    const struct pagesrc *src)
{
	uint64_t np = npages_of(size);
	uint64_t per_buf = IOBUF_SIZE / opt.page;
	uint64_t written = 0;
	uint64_t p = 0;

	while (p < np) {
		if (src->state[p] == PG_HOLE) {
			p++;
			continue;
		}
		uint64_t start = p;
		size_t len = 0;

		while (p < np && src->state[p] != PG_HOLE && p - start < per_buf) {
			uint64_t key = src->owner ? src->keys[src->owner[p]] : src->key;
			size_t plen = page_len(size, p);

			fill_page(iobuf + len, plen, key, p, src->state[p]);
			len += plen;
			p++;
		}
		pwrite_all(fd, iobuf, len, start * opt.page, path);
		written += len;
	}
	return written;
}

/* Dies unless pages [lo, hi) of the file agree with `is_data`. */
static void check_range(const char *path, uint64_t size, const uint8_t *state,
			uint64_t lo, uint64_t hi, int is_data)
{
	if (lo == hi)
		return;
	if ((lo % opt.page && lo != size) || (hi % opt.page && hi != size))
		die("%s: filesystem reports %s [%llu, %llu), not aligned to the page size %llu; "
		    "STORE must be on a filesystem with page-granular holes",
		    path, is_data ? "data" : "a hole", (unsigned long long)lo,
		    (unsigned long long)hi, (unsigned long long)opt.page);
	for (uint64_t p = lo / opt.page; p < npages_of(hi); p++) {
		if ((state[p] != PG_HOLE) == is_data)
			continue;
		die("%s: filesystem reports %s [%llu, %llu) but page %llu was %s; STORE must be "
		    "on a filesystem with holes of at most %llu bytes that keeps zero pages as data",
		    path, is_data ? "data" : "a hole", (unsigned long long)lo,
		    (unsigned long long)hi, (unsigned long long)p,
		    state[p] == PG_ZERO ? "written with zeros" :
		    state[p] == PG_DATA ? "written" : "not written",
		    (unsigned long long)opt.page);
	}
}

/*
 * Walks the file's SEEK_DATA/SEEK_HOLE map and dies unless it is exactly the
 * pages written (zero pages included): the reference is only valid if the
 * filesystem kept what the generator wrote.
 */
static void verify_extents(int fd, const char *path, uint64_t size,
			   const uint8_t *state)
{
	uint64_t off = 0;

	while (off < size) {
		off_t d = lseek(fd, (off_t)off, SEEK_DATA);
		uint64_t data;

		if (d < 0) {
			if (errno != ENXIO)
				die_errno(path, "lseek SEEK_DATA");
			data = size;
		} else {
			data = (uint64_t)d < size ? (uint64_t)d : size;
		}
		check_range(path, size, state, off, data, 0);
		if (data >= size)
			break;
		off_t h = lseek(fd, (off_t)data, SEEK_HOLE);

		if (h < 0)
			die_errno(path, "lseek SEEK_HOLE");
		if ((uint64_t)h <= data || (uint64_t)h > size)
			die("%s: lseek SEEK_HOLE from %llu returned %lld", path,
			    (unsigned long long)data, (long long)h);
		check_range(path, size, state, data, (uint64_t)h, 1);
		off = (uint64_t)h;
	}
}

/*
 * Publishes one layer: writes it as DIR/.LNAME.tmp (sized with ftruncate,
 * data pages with pwrite), checks its extent map, renames it to DIR/LNAME.
 */
static void publish_layer(const char *dir, const char *lname, uint64_t size,
			  const uint8_t *state, uint64_t key, mode_t mode)
{
	char rel[PATH_MAX], tmp[PATH_MAX], final[PATH_MAX];
	struct pagesrc src = { .state = state, .key = key };
	int fd;
	int n;

	n = snprintf(rel, sizeof(rel), "%s%s.%s.tmp", dir, *dir ? "/" : "", lname);
	if (n < 0 || n >= (int)sizeof(rel))
		die("%s/%s: path too long", dir, lname);
	join(tmp, opt.store, rel);
	n = snprintf(rel, sizeof(rel), "%s%s%s", dir, *dir ? "/" : "", lname);
	if (n < 0 || n >= (int)sizeof(rel))
		die("%s/%s: path too long", dir, lname);
	join(final, opt.store, rel);

	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		die_errno(tmp, "create");
	if (ftruncate(fd, (off_t)size) < 0)
		die_errno(tmp, "ftruncate");
	total_bytes += write_pages(fd, tmp, size, &src);
	verify_extents(fd, tmp, size, state);
	if (close(fd) < 0)
		die_errno(tmp, "close");
	if (rename(tmp, final) < 0)
		die_errno(final, "rename into place");
	total_layers++;
}

/* A dense base: every page written, a few of them with zeros sometimes. */
static void gen_dense(struct rng *r, uint8_t *state, uint64_t np)
{
	unsigned int zpct = rng_percent(r, 30) ? 3 : 0;

	for (uint64_t p = 0; p < np; p++)
		state[p] = rng_percent(r, zpct) ? PG_ZERO : PG_DATA;
}

/*
 * Marks runs of pages until about `target` pages are set: mostly single
 * pages, some short runs, a few long ones. zpct percent of them are zeros,
 * and now and then a whole run is.
 */
static uint64_t mark_runs(struct rng *r, uint8_t *state, uint64_t np,
			  uint64_t target, unsigned int zpct)
{
	uint64_t marked = 0;

	for (uint64_t tries = 0; marked < target && tries < 4 * np + 64; tries++) {
		uint64_t len;
		unsigned int kind = (unsigned int)rng_below(r, 100);

		if (kind < 65)
			len = 1;
		else if (kind < 90)
			len = rng_between(r, 2, 16);
		else
			len = rng_between(r, 17, 256);
		uint64_t start = rng_below(r, np);
		int zero_run = rng_percent(r, 3);

		for (uint64_t p = start; p < np && p < start + len; p++) {
			if (state[p] != PG_HOLE)
				continue;
			state[p] = zero_run || rng_percent(r, zpct) ? PG_ZERO : PG_DATA;
			marked++;
		}
	}
	return marked;
}

/* A sparse base: random runs of data covering 5..90% (sometimes none). */
static void gen_sparse(struct rng *r, uint8_t *state, uint64_t np,
		       unsigned int maxpct)
{
	memset(state, PG_HOLE, np);
	if (rng_percent(r, 5))
		return;		/* an all-hole base: a fresh, untouched image */
	uint64_t target = np * rng_between(r, 5, maxpct) / 100;

	mark_runs(r, state, np, target ? target : 1, 2);
}

/*
 * A diff: random dirty pages, up to maxpct percent of the file, some of them
 * all zeros, the last partial page sometimes. Always at least one hole when
 * the file has more than one page: a diff without holes is bad input.
 */
static void gen_diff(struct rng *r, uint8_t *state, uint64_t np, uint64_t size,
		     unsigned int maxpct)
{
	uint64_t marked = 0;

	memset(state, PG_HOLE, np);
	if (!rng_percent(r, 4)) {	/* else an empty diff */
		uint64_t cap = np * maxpct / 100;
		unsigned int zpct = rng_percent(r, 50) ? (unsigned int)rng_between(r, 1, 20) : 0;

		marked = mark_runs(r, state, np, rng_between(r, 1, cap ? cap : 1), zpct);
		if (size % opt.page && rng_percent(r, 30) && state[np - 1] == PG_HOLE) {
			state[np - 1] = rng_percent(r, 10) ? PG_ZERO : PG_DATA;
			marked++;
		}
	}
	if (np >= 2 && marked == np)
		state[rng_below(r, np)] = PG_HOLE;
}

/* Size classes; the first chains take one each so that all appear. */
static uint64_t pick_size(struct rng *r, unsigned int idx)
{
	static const unsigned int weights[] = { 4, 0, 10, 4, 20, 22, 32, 8 };
	uint64_t page = opt.page, max = opt.maxsize, size;
	unsigned int cls = idx;

	if (idx >= 8) {
		unsigned int w = (unsigned int)rng_below(r, 100);

		for (cls = 0; w >= weights[cls]; cls++)
			w -= weights[cls];
	}
	switch (cls) {
	case 0:			/* one byte */
		size = 1;
		break;
	case 1:			/* the largest allowed */
		size = max;
		break;
	case 2:			/* less than a page */
		size = rng_between(r, 2, page - 1);
		break;
	case 3:			/* exactly one page */
		size = page;
		break;
	case 4:			/* a small page multiple */
		size = page * rng_between(r, 2, 64);
		break;
	case 5:			/* small, not a page multiple */
		size = rng_between(r, page + 1, MIB > 2 * page ? MIB : 2 * page);
		if (size % page == 0)
			size--;
		break;
	case 6:			/* medium, page multiple or not */
		size = rng_between(r, MIB, 8 * MIB);
		if (rng_percent(r, 50))
			size -= size % page;
		break;
	default:		/* large */
		size = rng_between(r, max / 2, max);
		if (rng_percent(r, 50))
			size -= size % page;
		break;
	}
	if (size > max)
		size = max;
	return size ? size : 1;
}

/* Per-diff cap on dirty pages, in percent of the file. */
static unsigned int diff_maxpct(uint64_t size)
{
	return size <= MIB ? 50 : size <= 8 * MIB ? 20 : 5;
}

/* Seq numbering of one layered file: start, gaps and zero padding. */
struct seqgen {
	uint64_t next;
	int padmode;		/* 0 unpadded, 1 fixed width, 2 mixed per layer */
	int width;
};

static void seq_init(struct rng *r, struct seqgen *sg)
{
	unsigned int k = (unsigned int)rng_below(r, 100);

	if (k < 45)
		sg->next = 0;
	else if (k < 70)
		sg->next = rng_between(r, 1, 20);
	else if (k < 90)
		sg->next = rng_between(r, 5, 9);	/* will cross 9 -> 10 */
	else
		sg->next = rng_between(r, 1000000, 1000000000000ULL);
	k = (unsigned int)rng_below(r, 100);
	sg->padmode = k < 50 ? 0 : k < 80 ? 1 : 2;
	sg->width = (int)rng_between(r, 2, 8);
}

/* Formats the next layer name NAME.<seq>.KIND into buf (NAME_MAX + 1 bytes). */
static void seq_name(struct rng *r, struct seqgen *sg, const char *name,
		     const char *kind, char *buf)
{
	int width = sg->padmode == 0 ? 0 : sg->padmode == 1 ? sg->width
		    : (int)rng_between(r, 0, 6);
	unsigned int k = (unsigned int)rng_below(r, 100);
	uint64_t seq = sg->next;
	int n;

	sg->next += k < 70 ? 1 : k < 90 ? rng_between(r, 2, 5) : rng_between(r, 6, 1000);
	n = snprintf(buf, NAME_MAX + 1, "%s.%0*llu.%s", name, width,
		     (unsigned long long)seq, kind);
	if (n < 0 || n > NAME_MAX)
		die("%s: layer name too long", name);
}

static const char *const top_names[] = {
	"vm.state.bin", "a", "snap.2024.01.raw", "ckpt.7", ".hidden.mem",
	"disk", "guest-mem_0.bin", "UPPER.BIN", "disk.img", "x.y",
};

/* The directory and NAME of layered file idx, unique per idx. */
static void family_path(unsigned int idx, char *dir, char *name)
{
	unsigned int k = idx / 4;
	size_t ntop = sizeof(top_names) / sizeof(top_names[0]);

	switch (idx % 4) {
	case 0:
		snprintf(dir, PATH_MAX, "vm%u", k);
		snprintf(name, NAME_MAX + 1, "memory.bin");
		break;
	case 1:
		dir[0] = '\0';
		if (k < ntop)
			snprintf(name, NAME_MAX + 1, "%s", top_names[k]);
		else
			snprintf(name, NAME_MAX + 1, "file%u.bin", idx);
		break;
	case 2:
		snprintf(dir, PATH_MAX, "vm%u", k);
		snprintf(name, NAME_MAX + 1, "vm.state.bin");
		break;
	default:
		snprintf(dir, PATH_MAX, "group%u/vm%u", k, idx);
		snprintf(name, NAME_MAX + 1, "mem");
		break;
	}
}

/*
 * Writes REF/REL (the model's flat view, sparse where the view has holes,
 * read-only) and REF/REL.holes. Returns the view's data bytes.
 */
static uint64_t write_reference(const char *rel, uint64_t size, mode_t mode,
				const uint16_t *owner, const uint8_t *zero,
				const uint64_t *keys, uint8_t *state)
{
	char path[PATH_MAX], hpath[PATH_MAX];
	uint64_t np = npages_of(size), data_bytes = 0;
	struct pagesrc src = { .state = state, .owner = owner, .keys = keys };
	FILE *hf;
	int fd;

	for (uint64_t p = 0; p < np; p++) {
		state[p] = owner[p] == OWNER_NONE ? PG_HOLE : zero[p] ? PG_ZERO : PG_DATA;
		if (owner[p] != OWNER_NONE)
			data_bytes += page_len(size, p);
	}

	join(path, opt.ref, rel);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		die_errno(path, "create");
	if (ftruncate(fd, (off_t)size) < 0)
		die_errno(path, "ftruncate");
	write_pages(fd, path, size, &src);
	verify_extents(fd, path, size, state);
	if (fchmod(fd, mode & ~0222U) < 0)
		die_errno(path, "fchmod");
	if (close(fd) < 0)
		die_errno(path, "close");

	if (snprintf(hpath, sizeof(hpath), "%s.holes", path) >= (int)sizeof(hpath))
		die("%s.holes: path too long", path);
	hf = fopen(hpath, "wx");
	if (!hf)
		die_errno(hpath, "create");
	for (uint64_t p = 0; p < np;) {
		if (state[p] != PG_HOLE) {
			p++;
			continue;
		}
		uint64_t start = p;

		while (p < np && state[p] == PG_HOLE)
			p++;
		uint64_t end = p * opt.page < size ? p * opt.page : size;

		fprintf(hf, "%llu %llu\n", (unsigned long long)(start * opt.page),
			(unsigned long long)end);
	}
	if (ferror(hf) | fclose(hf))
		die_errno(hpath, "write");
	return data_bytes;
}

/*
 * Generates layered file idx: maybe a superseded older chain, then the
 * chain's base and diffs, then its reference and MANIFEST line.
 */
static void make_family(unsigned int idx, FILE *manifest)
{
	static const mode_t modes[] = { 0644, 0640, 0600 };
	char dir[PATH_MAX], name[NAME_MAX + 1], rel[PATH_MAX];
	uint64_t famkey = rng_mix(opt.seed ^ 0x736e6170667321ULL, idx);
	unsigned int famlayer = 0;
	struct seqgen sg;
	struct rng r;

	rng_seed(&r, rng_mix(opt.seed, idx));
	family_path(idx, dir, name);
	if (snprintf(rel, sizeof(rel), "%s%s%s", dir, *dir ? "/" : "", name) >= (int)sizeof(rel))
		die("%s/%s: path too long", dir, name);
	mkdir_rel(opt.store, dir);
	mkdir_rel(opt.ref, dir);

	uint64_t size = pick_size(&r, idx);
	unsigned int depth = idx == 3 ? 0 : idx == 5 ? opt.maxdepth
			     : (unsigned int)rng_between(&r, 0, opt.maxdepth);
	int has_old = idx == 3 || idx == 4 || rng_percent(&r, 25);
	int dense = rng_percent(&r, 50);
	mode_t mode = modes[rng_below(&r, 3)];

	/* Stay within the byte budget: halve big files that would not fit. */
	for (;;) {
		uint64_t est = size + (uint64_t)depth * (size / 200) * diff_maxpct(size) +
			       (has_old ? size / 4 : 0);

		if (total_bytes + est <= budget || size <= 256 * KIB)
			break;
		size /= 2;
	}

	uint64_t np = npages_of(size);
	unsigned int maxpct = diff_maxpct(size);
	uint8_t *state = xmalloc(np);
	uint8_t *zero = xmalloc(np);
	uint16_t *owner = xmalloc(np * sizeof(*owner));
	uint64_t *keys = xmalloc((depth + 1) * sizeof(*keys));
	char *chain = xmalloc((size_t)(depth + 1) * (NAME_MAX + 2));
	char lname[NAME_MAX + 1];

	seq_init(&r, &sg);
	for (uint64_t p = 0; p < np; p++)
		owner[p] = OWNER_NONE;
	memset(zero, 0, np);
	chain[0] = '\0';

	if (has_old) {
		/* An older chain the newest base supersedes: content nobody may see. */
		uint64_t osize = rng_percent(&r, 70) ? size
				 : rng_log_between(&r, 1, size > 64 * KIB ? size : 64 * KIB);
		uint64_t onp = npages_of(osize);
		uint8_t *ostate = xmalloc(onp);
		unsigned int nold = (unsigned int)rng_below(&r, 4);

		if (osize <= 8 * MIB)
			gen_dense(&r, ostate, onp);
		else
			gen_sparse(&r, ostate, onp, 10);
		seq_name(&r, &sg, name, "base", lname);
		publish_layer(dir, lname, osize, ostate, rng_mix(famkey, famlayer++), mode);
		for (unsigned int i = 0; i < nold; i++) {
			gen_diff(&r, ostate, onp, osize, diff_maxpct(osize));
			seq_name(&r, &sg, name, "diff", lname);
			publish_layer(dir, lname, osize, ostate, rng_mix(famkey, famlayer++), mode);
		}
		free(ostate);
	}

	for (unsigned int j = 0; j <= depth; j++) {
		if (j == 0) {
			if (dense)
				gen_dense(&r, state, np);
			else
				gen_sparse(&r, state, np, 90);
		} else {
			gen_diff(&r, state, np, size, maxpct);
		}
		seq_name(&r, &sg, name, j ? "diff" : "base", lname);
		keys[j] = rng_mix(famkey, famlayer++);
		publish_layer(dir, lname, size, state, keys[j], mode);
		for (uint64_t p = 0; p < np; p++) {
			if (state[p] == PG_HOLE)
				continue;
			owner[p] = (uint16_t)j;
			zero[p] = state[p] == PG_ZERO;
		}
		if (j)
			strcat(chain, ",");
		strcat(chain, lname);
	}

	uint64_t data_bytes = write_reference(rel, size, mode, owner, zero, keys, state);

	fprintf(manifest, "%s %llu %u %llu %s\n", rel, (unsigned long long)size,
		depth, (unsigned long long)data_bytes, chain);
	free(chain);
	free(keys);
	free(owner);
	free(zero);
	free(state);
}

/* Writes the same plain file into STORE and REF and lists it in PLAIN. */
static void plain_file(FILE *plain, const char *rel, const void *buf, size_t len,
		       uint64_t off, uint64_t size, mode_t mode)
{
	const char *roots[2] = { opt.store, opt.ref };

	for (int i = 0; i < 2; i++) {
		char path[PATH_MAX];
		int fd;

		join(path, roots[i], rel);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
		if (fd < 0)
			die_errno(path, "create");
		if (ftruncate(fd, (off_t)size) < 0)
			die_errno(path, "ftruncate");
		pwrite_all(fd, buf, len, off, path);
		if (close(fd) < 0)
			die_errno(path, "close");
	}
	total_bytes += len;
	fprintf(plain, "f %s %llu\n", rel, (unsigned long long)size);
}

static void plain_symlink(FILE *plain, const char *rel, const char *target)
{
	const char *roots[2] = { opt.store, opt.ref };

	for (int i = 0; i < 2; i++) {
		char path[PATH_MAX];

		join(path, roots[i], rel);
		if (symlink(target, path) < 0)
			die_errno(path, "symlink");
	}
	fprintf(plain, "l %s %s\n", rel, target);
}

/*
 * The ordinary entries the passthrough must show unchanged: text files, an
 * empty and a sparse file, names that only look like layers, symlinks (one
 * to a layered file, dangling in STORE but not at the mount), an empty
 * directory. Listed in REF/PLAIN.
 */
static void make_plain(FILE *plain, const char *first_rel)
{
	static const char readme[] = "snapfs test store generated by mkstore\n";
	static const char config[] = "{ \"vcpus\": 2, \"mem_mib\": 64 }\n";
	static const char notlayer[] = "a plain file whose name only looks like a layer\n";
	unsigned char blk[4096];
	struct rng r;

	rng_seed(&r, rng_mix(opt.seed, UINT64_MAX));
	mkdir_rel(opt.store, "vm0");
	mkdir_rel(opt.ref, "vm0");
	plain_file(plain, "README.txt", readme, sizeof(readme) - 1, 0, sizeof(readme) - 1, 0644);
	plain_file(plain, "vm0/config.json", config, sizeof(config) - 1, 0, sizeof(config) - 1,
		   0640);
	plain_file(plain, "empty.file", "", 0, 0, 0, 0644);
	plain_file(plain, ".5.base", notlayer, sizeof(notlayer) - 1, 0, sizeof(notlayer) - 1, 0644);
	plain_file(plain, "notes.abc.diff", notlayer, sizeof(notlayer) - 1, 0,
		   sizeof(notlayer) - 1, 0644);
	plain_file(plain, "vm0/memory.bin.bak", notlayer, sizeof(notlayer) - 1, 0,
		   sizeof(notlayer) - 1, 0600);
	rng_fill(&r, blk, sizeof(blk));
	plain_file(plain, "plain-sparse.img", blk, sizeof(blk), 512 * KIB, MIB, 0644);
	plain_symlink(plain, "readme.link", "README.txt");
	plain_symlink(plain, "latest.mem", first_rel);

	const char *roots[2] = { opt.store, opt.ref };

	for (int i = 0; i < 2; i++) {
		char path[PATH_MAX];

		join(path, roots[i], "emptydir");
		if (mkdir(path, 0755) < 0)
			die_errno(path, "mkdir");
	}
	fprintf(plain, "d emptydir\n");
}

static uint64_t parse_num(const char *s, const char *what, int suffixes)
{
	char *end;
	uint64_t v, mult = 1;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (suffixes && *end && !end[1]) {
		switch (*end) {
		case 'k': case 'K': mult = KIB; end++; break;
		case 'm': case 'M': mult = MIB; end++; break;
		case 'g': case 'G': mult = 1024 * MIB; end++; break;
		default: break;
		}
	}
	if (errno || end == s || *end || *s == '-' || v > UINT64_MAX / mult) {
		fprintf(stderr, "mkstore: invalid %s: %s\n%s", what, s, usage_text);
		exit(2);
	}
	return v * mult;
}

int main(int argc, char **argv)
{
	char path[PATH_MAX], first_rel[PATH_MAX] = "README.txt";
	FILE *manifest, *plain;
	int c;

	while ((c = getopt(argc, argv, "s:n:D:S:p:h")) != -1) {
		switch (c) {
		case 's':
			opt.seed = parse_num(optarg, "seed", 0);
			break;
		case 'n':
			opt.chains = (unsigned int)parse_num(optarg, "number of chains", 0);
			break;
		case 'D':
			opt.maxdepth = (unsigned int)parse_num(optarg, "maximum depth", 0);
			break;
		case 'S':
			opt.maxsize = parse_num(optarg, "maximum size", 1);
			break;
		case 'p':
			opt.page = parse_num(optarg, "page size", 1);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		default:
			fputs(usage_text, stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		fputs(usage_text, stderr);
		return 2;
	}
	opt.store = argv[optind];
	opt.ref = argv[optind + 1];
	if (opt.page < 512 || opt.page > IOBUF_SIZE || (opt.page & (opt.page - 1))) {
		fprintf(stderr, "mkstore: page size must be a power of two from 512 to %llu\n",
			(unsigned long long)IOBUF_SIZE);
		return 2;
	}
	if (opt.maxsize < 1 || opt.maxsize > (1ULL << 40)) {
		fprintf(stderr, "mkstore: maximum size must be from 1 byte to 1T\n");
		return 2;
	}
	if (opt.maxdepth > MAXDEPTH_LIMIT || opt.chains > 100000) {
		fprintf(stderr, "mkstore: at most %u diffs per chain and 100000 chains\n",
			MAXDEPTH_LIMIT);
		return 2;
	}
	budget = 3 * opt.maxsize + 4 * MIB * opt.chains;

	prepare_root(opt.store);
	prepare_root(opt.ref);
	iobuf = xmalloc(IOBUF_SIZE);

	join(path, opt.ref, "MANIFEST");
	manifest = fopen(path, "wx");
	if (!manifest)
		die_errno(path, "create");
	for (unsigned int i = 0; i < opt.chains; i++)
		make_family(i, manifest);
	if (ferror(manifest) | fclose(manifest))
		die_errno(path, "write");

	if (opt.chains) {
		char dir[PATH_MAX], name[NAME_MAX + 1];

		family_path(0, dir, name);
		if (snprintf(first_rel, sizeof(first_rel), "%s/%s", dir, name) >=
		    (int)sizeof(first_rel))
			die("%s/%s: path too long", dir, name);
	}
	join(path, opt.ref, "PLAIN");
	plain = fopen(path, "wx");
	if (!plain)
		die_errno(path, "create");
	make_plain(plain, first_rel);
	if (ferror(plain) | fclose(plain))
		die_errno(path, "write");

	free(iobuf);
	printf("mkstore: %u chains, %llu layers, %llu bytes written\n", opt.chains,
	       total_layers, total_bytes);
	return 0;
}
