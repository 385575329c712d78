/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * churn: the live-store stress test and benchmark. One publisher thread
 * changes a layered file in STORE while it is mounted (new diffs renamed
 * into place, rollbacks in STORE or through the mount, new full bases) and
 * several reader threads open, read, map and close the view, checking every
 * byte against the model of the version they opened and that no new open
 * is served a version older than the grace period allows.
 *
 * The model needs no reference files. A layer's bytes are a pure function of
 * the seed, its kind, its <seq> and its "generation", which is written into
 * its name as extra leading zeros (NAME.5.diff, NAME.05.diff, ...), so the
 * chain in user.snapfs.chain of an open fd says exactly what that fd must
 * read. Generations 0-2 are patterns; a base of generation 3 or more is a
 * merge of the chain current when it was published, whose per-page sources
 * the publisher records in a table before it renames the base into place.
 *
 * With -b it measures instead: publish->readable and rollback->readable
 * latency through new opens, and view read throughput (O_DIRECT, so the
 * daemon's read path and not the page cache is timed) quiet versus while a
 * publisher churns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "rng.h"

#define PAGE 4096ULL
#define MIB (1024ULL * 1024ULL)
#define WORDS_PER_PAGE (PAGE / sizeof(uint64_t))

#define MAX_DEPTH 12		/* diffs in the chain, at most */
#define MAX_PARSE_DIFFS 64	/* diffs accepted from the daemon's xattr */
#define MAX_FILES 32		/* layer files of NAME in STORE at once */
#define FRESH_GENS 3		/* generations 0..2: pattern content */
#define MAX_GEN 200		/* leading zeros in a name, at most */
#define MAX_MERGED 1024		/* merged bases recorded, at most */
#define CHAIN_XATTR "user.snapfs.chain"
#define XATTR_MAX 8192
#define READ_MAX MIB		/* longest random pread checked */
#define MAX_REPORTS 10		/* failures printed in detail */
#define HISTORY_DIAG 40		/* log states tried when diagnosing bad bytes */
#define BENCH_REPS 9		/* throughput runs per mode; the median counts */

enum src_kind { SRC_ZERO = 0, SRC_BASE = 1, SRC_DIFF = 2 };

/* A page's source: kind, generation and seq packed in one word. */
#define SRC(kind, seq, gen) \
	(((uint64_t)(kind) << 56) | ((uint64_t)(gen) << 48) | (uint64_t)(seq))
#define SRC_KIND(s) ((unsigned)((s) >> 56))
#define SRC_GEN(s) ((unsigned)(((s) >> 48) & 0xff))
#define SRC_SEQ(s) ((uint64_t)((s) & ((1ULL << 48) - 1)))

struct layer {
	uint64_t seq;
	unsigned gen;
	bool is_base;
};

/* A chain as the model sees it; base_src is set for merged bases. */
struct chain {
	struct layer base;
	size_t ndiffs;
	struct layer diffs[MAX_PARSE_DIFFS];
	const uint64_t *base_src;
};

struct merged {
	uint64_t seq;
	unsigned gen;
	uint64_t *src;		/* npages resolved sources; immutable */
};

/* One state of the chain, as the publisher made it. */
struct logent {
	double t_start;		/* the syscall that made it began */
	double t_done;		/* ... and returned; INFINITY while pending */
	char *chain;
};

static struct {
	const char *store, *mnt, *name;
	char *view;		/* MNT/NAME */
	double seconds;
	unsigned readers;
	unsigned quick;		/* readers that only open, check a page, close */
	uint64_t seed;
	double grace;		/* seconds */
	bool via_mount, bench, verbose;
	uint64_t size, npages;
	unsigned period_ms;	/* mean pause of the publisher */
	unsigned bench_n;	/* publishes timed by -b */
	double bench_secs;	/* per throughput run */
	atomic_int stop;	/* readers and the churner stop */

	pthread_mutex_t lock;	/* protects everything below */
	struct merged *merged[MAX_MERGED];
	size_t nmerged;
	struct logent *log;
	size_t nlog, caplog;
	unsigned long long opens, checked, wrong, stale, errors, estale;
	unsigned long long publishes, rollbacks, bases, mount_unlinks, refused;
	unsigned reports;
} g = {
	.seconds = 10, .readers = 4, .seed = 1, .grace = 0.2,
	.size = 16 * MIB, .period_ms = 5, .bench_n = 100, .bench_secs = 3,
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static const char *const usage_text =
	"usage: churn [-t SECONDS] [-r READERS] [-q QUICK_READERS] [-s SEED] [-g GRACE_MS]\n"
	"             [-u] [-S SIZE_MB] [-p PERIOD_MS] [-v] STORE_DIR MNT_DIR NAME\n"
	"       churn -b [-n PUBLISHES] [-T SECONDS] [-r READERS] [-u] [-S SIZE_MB]\n"
	"             [-p PERIOD_MS] STORE_DIR MNT_DIR NAME\n"
	"  STORE_DIR must not hold layers of NAME yet; MNT_DIR is the same\n"
	"  directory seen through a snapfs mount. -u: every other rollback unlinks\n"
	"  through the mount. -q: readers that only open, check one page and close,\n"
	"  as fast as they can. -p: mean pause between the publisher's operations\n"
	"  (0: none). -b: measure latency and throughput instead.\n";

/* ---- small helpers ---- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(double ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("churn: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		die("out of memory");
	return p;
}

/*
 * Records a failure: counted by the caller, printed in detail for the first
 * MAX_REPORTS. Takes g.lock.
 */
__attribute__((format(printf, 1, 2)))
static void report(const char *fmt, ...)
{
	va_list ap;
	bool show;

	pthread_mutex_lock(&g.lock);
	show = g.reports++ < MAX_REPORTS;
	pthread_mutex_unlock(&g.lock);
	if (!show)
		return;
	va_start(ap, fmt);
	flockfile(stderr);
	fputs("churn: FAIL: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	va_end(ap);
}

static void count(unsigned long long *counter, unsigned long long n)
{
	pthread_mutex_lock(&g.lock);
	*counter += n;
	pthread_mutex_unlock(&g.lock);
}

/* ---- the content model ---- */

static uint64_t layer_hash(unsigned kind, uint64_t seq, unsigned gen, uint64_t page)
{
	return rng_mix(rng_mix(g.seed ^ ((uint64_t)kind << 60), seq << 8 | gen), page);
}

/* Diffs: one page in 16 dirty, one dirty page in 8 all zeros (data). */
static bool diff_dirty(uint64_t h)
{
	return ((h >> 8) & 15) == 0;
}

static bool diff_zero(uint64_t h)
{
	return ((h >> 16) & 7) == 0;
}

/* Pattern bases: one page in 32 is a hole. */
static bool base_hole(uint64_t h)
{
	return ((h >> 8) & 31) == 0;
}

static void fill_pattern(uint64_t key, unsigned char *page)
{
	for (uint64_t i = 0; i < WORDS_PER_PAGE; i++) {
		uint64_t z = key + (i + 1) * 0x9e3779b97f4a7c15ULL;

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		z ^= z >> 31;
		memcpy(page + i * sizeof(z), &z, sizeof(z));
	}
}

/* Fills page (PAGE bytes) with the content of page p of source src. */
static void fill_src(uint64_t src, uint64_t p, unsigned char *page)
{
	unsigned kind = SRC_KIND(src);
	uint64_t h;

	if (kind == SRC_ZERO) {
		memset(page, 0, PAGE);
		return;
	}
	h = layer_hash(kind, SRC_SEQ(src), SRC_GEN(src), p);
	if ((kind == SRC_DIFF && diff_zero(h)) || (kind == SRC_BASE && base_hole(h)))
		memset(page, 0, PAGE);
	else
		fill_pattern(h, page);
}

/* The source of page p in chain c: the top diff that has it, else the base. */
static uint64_t resolve_page(const struct chain *c, uint64_t p)
{
	for (size_t i = c->ndiffs; i-- > 0;) {
		const struct layer *d = &c->diffs[i];

		if (diff_dirty(layer_hash(SRC_DIFF, d->seq, d->gen, p)))
			return SRC(SRC_DIFF, d->seq, d->gen);
	}
	if (c->base_src)
		return c->base_src[p];
	if (base_hole(layer_hash(SRC_BASE, c->base.seq, c->base.gen, p)))
		return SRC(SRC_ZERO, 0, 0);
	return SRC(SRC_BASE, c->base.seq, c->base.gen);
}

static const uint64_t *merged_find(uint64_t seq, unsigned gen)
{
	const uint64_t *src = NULL;

	pthread_mutex_lock(&g.lock);
	for (size_t i = 0; i < g.nmerged; i++) {
		if (g.merged[i]->seq == seq && g.merged[i]->gen == gen) {
			src = g.merged[i]->src;
			break;
		}
	}
	pthread_mutex_unlock(&g.lock);
	return src;
}

/* ---- names ---- */

static void layer_name(const struct layer *l, char *buf, size_t len)
{
	char digits[32];
	int n = snprintf(digits, sizeof(digits), "%" PRIu64, l->seq);

	snprintf(buf, len, "%s.%0*" PRIu64 ".%s", g.name, n + (int)l->gen, l->seq,
		 l->is_base ? "base" : "diff");
}

/*
 * Parses one layer name of NAME ("NAME.<digits>.base|diff", len bytes at s).
 * Returns 0, or -1 if it is not one.
 */
static int parse_layer(const char *s, size_t len, struct layer *l)
{
	size_t nlen = strlen(g.name), i, ndig, zeros;
	const char *d;

	if (len <= nlen + 1 || memcmp(s, g.name, nlen) || s[nlen] != '.')
		return -1;
	d = s + nlen + 1;
	for (i = 0; d + i < s + len && d[i] >= '0' && d[i] <= '9'; i++)
		;
	ndig = i;
	if (ndig == 0 || ndig > 18 + MAX_GEN || d + ndig >= s + len || d[ndig] != '.')
		return -1;
	if ((size_t)(s + len - (d + ndig + 1)) == 4 && !memcmp(d + ndig + 1, "base", 4))
		l->is_base = true;
	else if ((size_t)(s + len - (d + ndig + 1)) == 4 && !memcmp(d + ndig + 1, "diff", 4))
		l->is_base = false;
	else
		return -1;
	for (zeros = 0; zeros + 1 < ndig && d[zeros] == '0'; zeros++)
		;
	if (ndig - zeros > 15)
		return -1;
	l->gen = (unsigned)zeros;
	l->seq = 0;
	for (i = zeros; i < ndig; i++)
		l->seq = l->seq * 10 + (uint64_t)(d[i] - '0');
	return 0;
}

/*
 * Parses the value of user.snapfs.chain into c (merged bases looked up).
 * Returns 0, or -1 with why in err.
 */
static int parse_chain(const char *s, size_t len, struct chain *c, char *err, size_t errlen)
{
	const char *end = s + len, *p = s;
	bool first = true;

	while (len && (end[-1] == '\0' || end[-1] == '\n'))
		end--, len--;
	memset(c, 0, sizeof(*c));
	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *q = comma ? comma : end;
		struct layer l;

		if (parse_layer(p, (size_t)(q - p), &l)) {
			snprintf(err, errlen, "not a layer of %s: '%.*s'", g.name, (int)(q - p), p);
			return -1;
		}
		if (first != l.is_base) {
			snprintf(err, errlen, "%s out of place: '%.*s'",
				 l.is_base ? "base" : "diff", (int)(q - p), p);
			return -1;
		}
		if (first) {
			c->base = l;
		} else {
			uint64_t prev = c->ndiffs ? c->diffs[c->ndiffs - 1].seq : c->base.seq;

			if (l.seq <= prev || c->ndiffs == MAX_PARSE_DIFFS) {
				snprintf(err, errlen, "diff out of order or too many: '%.*s'",
					 (int)(q - p), p);
				return -1;
			}
			c->diffs[c->ndiffs++] = l;
		}
		first = false;
		p = comma ? comma + 1 : end;
	}
	if (first) {
		snprintf(err, errlen, "empty chain");
		return -1;
	}
	if (c->base.gen >= FRESH_GENS) {
		c->base_src = merged_find(c->base.seq, c->base.gen);
		if (!c->base_src) {
			snprintf(err, errlen, "merged base seq %" PRIu64 " gen %u never published",
				 c->base.seq, c->base.gen);
			return -1;
		}
	}
	return 0;
}

/* The chain as a malloc'd xattr-style string (names, base first). */
static char *chain_string(const struct chain *c)
{
	size_t cap = (c->ndiffs + 1) * (strlen(g.name) + MAX_GEN + 32), used = 0;
	char *s = xmalloc(cap);

	layer_name(&c->base, s, cap);
	used = strlen(s);
	for (size_t i = 0; i < c->ndiffs; i++) {
		s[used++] = ',';
		layer_name(&c->diffs[i], s + used, cap - used);
		used += strlen(s + used);
	}
	return s;
}

/* ---- the publisher's log of states ---- */

/* Appends a pending state; returns its index. */
static size_t log_begin(const char *chain)
{
	size_t k;

	pthread_mutex_lock(&g.lock);
	if (g.nlog == g.caplog) {
		g.caplog = g.caplog ? 2 * g.caplog : 256;
		g.log = realloc(g.log, g.caplog * sizeof(*g.log));
		if (!g.log)
			die("out of memory");
	}
	k = g.nlog++;
	g.log[k] = (struct logent){ .t_start = now(), .t_done = INFINITY,
				    .chain = xstrdup(chain) };
	pthread_mutex_unlock(&g.lock);
	return k;
}

static void log_done(size_t k)
{
	double t = now();

	pthread_mutex_lock(&g.lock);
	g.log[k].t_done = t;
	pthread_mutex_unlock(&g.lock);
}

/* Drops the last, pending state: its syscall failed. */
static void log_cancel(void)
{
	pthread_mutex_lock(&g.lock);
	free(g.log[--g.nlog].chain);
	pthread_mutex_unlock(&g.lock);
}

/*
 * When was chain last current? Returns the end of its latest state
 * (INFINITY if it may still be current), or -INFINITY if it never was.
 */
static double log_last_current(const char *chain)
{
	double end = -INFINITY;

	pthread_mutex_lock(&g.lock);
	for (size_t k = g.nlog; k-- > 0;) {
		if (strcmp(g.log[k].chain, chain) == 0) {
			end = k + 1 < g.nlog ? g.log[k + 1].t_done : INFINITY;
			break;
		}
	}
	pthread_mutex_unlock(&g.lock);
	return end;
}

/* ---- the store as the publisher keeps it ---- */

struct store_state {
	struct layer files[MAX_FILES];
	size_t nfiles;
};

/* The chain of st per doc/format.md §2 (the highest base, the diffs above it). */
static void state_chain(const struct store_state *st, struct chain *c)
{
	bool have = false;

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < st->nfiles; i++) {
		if (st->files[i].is_base && (!have || st->files[i].seq > c->base.seq)) {
			c->base = st->files[i];
			have = true;
		}
	}
	if (!have)
		die("model error: no base left");
	for (size_t i = 0; i < st->nfiles; i++) {
		const struct layer *l = &st->files[i];
		size_t j;

		if (l->is_base || l->seq < c->base.seq)
			continue;
		for (j = c->ndiffs; j > 0 && c->diffs[j - 1].seq > l->seq; j--)
			c->diffs[j] = c->diffs[j - 1];
		c->diffs[j] = *l;
		c->ndiffs++;
	}
	c->base_src = c->base.gen >= FRESH_GENS ? merged_find(c->base.seq, c->base.gen) : NULL;
}

static uint64_t state_max_seq(const struct store_state *st)
{
	uint64_t m = 0;

	for (size_t i = 0; i < st->nfiles; i++)
		if (st->files[i].seq > m)
			m = st->files[i].seq;
	return m;
}

static void state_remove(struct store_state *st, const struct layer *l)
{
	for (size_t i = 0; i < st->nfiles; i++) {
		if (st->files[i].seq == l->seq && st->files[i].is_base == l->is_base) {
			st->files[i] = st->files[--st->nfiles];
			return;
		}
	}
	die("model error: layer %" PRIu64 " not in the store", l->seq);
}

/* Re-reads the layers of NAME from STORE_DIR (after a failed operation). */
static void state_rescan(struct store_state *st)
{
	DIR *d = opendir(g.store);
	struct dirent *de;

	if (!d)
		die("%s: %s", g.store, strerror(errno));
	st->nfiles = 0;
	while ((de = readdir(d))) {
		struct layer l;

		if (parse_layer(de->d_name, strlen(de->d_name), &l))
			continue;
		if (st->nfiles == MAX_FILES)
			die("%s: more than %d layers of %s", g.store, MAX_FILES, g.name);
		st->files[st->nfiles++] = l;
	}
	closedir(d);
}

static char *store_path(const char *dir, const struct layer *l, bool tmp)
{
	char name[512], *path;

	layer_name(l, name, sizeof(name));
	if (asprintf(&path, "%s/%s%s%s", dir, tmp ? "." : "", name, tmp ? ".tmp" : "") < 0)
		die("out of memory");
	return path;
}

static void xpwrite(int fd, const void *buf, size_t len, uint64_t off, const char *path)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("%s: write: %s", path, n < 0 ? strerror(errno) : "no progress");
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
}

/*
 * Writes layer l as the temporary file DIR/.NAME.<seq>.<kind>.tmp: a sparse
 * file of the view's size with data at the pages its model says. For a
 * merged base, src gives each page's source. Returns the malloc'd path.
 */
static char *write_layer(const char *dir, const struct layer *l, const uint64_t *src)
{
	char *path = store_path(dir, l, true);
	unsigned char *buf = xmalloc(MIB);
	uint64_t run_start = 0, run_len = 0;	/* pages gathered in buf */
	int fd;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)g.size) < 0)
		die("%s: %s", path, strerror(errno));
	for (uint64_t p = 0; p < g.npages; p++) {
		uint64_t s;

		if (src) {
			s = src[p];
		} else if (l->is_base) {
			s = SRC(SRC_BASE, l->seq, l->gen);
			if (base_hole(layer_hash(SRC_BASE, l->seq, l->gen, p)))
				s = SRC(SRC_ZERO, 0, 0);
		} else {
			s = SRC(SRC_DIFF, l->seq, l->gen);
			if (!diff_dirty(layer_hash(SRC_DIFF, l->seq, l->gen, p)))
				s = SRC(SRC_ZERO, 0, 0);
		}
		/* a diff's dirty zero pages are written (data); bases keep holes */
		if (SRC_KIND(s) == SRC_ZERO || (run_len && (run_start + run_len != p ||
							   run_len * PAGE == MIB))) {
			if (run_len)
				xpwrite(fd, buf, run_len * PAGE, run_start * PAGE, path);
			run_len = 0;
			if (SRC_KIND(s) == SRC_ZERO)
				continue;
		}
		if (!run_len)
			run_start = p;
		fill_src(s, p, buf + run_len * PAGE);
		run_len++;
	}
	if (run_len)
		xpwrite(fd, buf, run_len * PAGE, run_start * PAGE, path);
	if (close(fd) < 0)
		die("%s: close: %s", path, strerror(errno));
	free(buf);
	return path;
}

/* Renames a written temporary layer into place, logging the new state. */
static void publish(struct store_state *st, const struct layer *l, char *tmp)
{
	char *path = store_path(g.store, l, false);
	struct chain c;
	char *s;
	size_t k;

	if (st->nfiles == MAX_FILES)
		die("model error: too many layers");
	st->files[st->nfiles++] = *l;
	state_chain(st, &c);
	s = chain_string(&c);
	k = log_begin(s);
	if (rename(tmp, path) < 0)
		die("rename %s -> %s: %s", tmp, path, strerror(errno));
	log_done(k);
	if (g.verbose)
		fprintf(stderr, "churn: publish %s\n", s);
	free(s);
	free(path);
	free(tmp);
}

/*
 * Removes layer l: through the mount if via_mount, else in STORE. A change
 * of chain is logged. Returns 0, or -errno if the mount refused (the store
 * is then re-read).
 */
static int remove_layer(struct store_state *st, const struct layer *l, bool via_mount)
{
	char *path = store_path(via_mount ? g.mnt : g.store, l, false);
	struct chain before, after;
	char *sb, *sa;
	size_t k = 0;
	bool changes;
	int ret = 0;

	state_chain(st, &before);
	state_remove(st, l);
	state_chain(st, &after);
	sb = chain_string(&before);
	sa = chain_string(&after);
	changes = strcmp(sa, sb) != 0;
	if (changes)
		k = log_begin(sa);
	if (unlink(path) < 0) {
		ret = -errno;
		if (!via_mount)
			die("unlink %s: %s", path, strerror(errno));
		if (changes)
			log_cancel();
		count(&g.errors, 1);
		report("unlink %s through the mount: %s (chain %s)", path, strerror(-ret), sb);
		state_rescan(st);
		state_chain(st, &after);
		free(sa);
		sa = chain_string(&after);
		if (strcmp(sa, sb)) {
			report("the refused unlink changed the chain to %s", sa);
			log_done(log_begin(sa));
		}
	} else if (changes) {
		log_done(k);
	}
	if (g.verbose)
		fprintf(stderr, "churn: remove %s%s\n", path, ret ? " (failed)" : "");
	free(sa);
	free(sb);
	free(path);
	return ret;
}

/*
 * Through the mount, unlinks a layer of the chain that is not its highest
 * diff: it must answer EBUSY and change nothing. Anything else is an error;
 * the store is re-read and a changed chain logged.
 */
static void refused_unlink(struct store_state *st, const struct layer *l)
{
	char *path = store_path(g.mnt, l, false);
	struct chain c;
	char *before, *after;
	int err;

	state_chain(st, &c);
	before = chain_string(&c);
	err = unlink(path) == 0 ? 0 : errno;
	if (err != EBUSY) {
		count(&g.errors, 1);
		report("unlink %s through the mount (not the top diff of %s): %s, want EBUSY",
		       path, before, err ? strerror(err) : "removed");
		state_rescan(st);
		state_chain(st, &c);
		after = chain_string(&c);
		if (strcmp(after, before))
			log_done(log_begin(after));
		free(after);
	}
	count(&g.refused, 1);
	free(before);
	free(path);
}

/* The sources of every page of chain c (a merged base's content). */
static uint64_t *chain_sources(const struct chain *c)
{
	uint64_t *src = xmalloc(g.npages * sizeof(*src));

	for (uint64_t p = 0; p < g.npages; p++)
		src[p] = resolve_page(c, p);
	return src;
}

/* Publishes the next base: a fresh pattern, or the current merge. */
static void publish_base(struct store_state *st, struct rng *r)
{
	struct layer l = { .seq = state_max_seq(st) + 1, .is_base = true };
	uint64_t *src = NULL;
	struct chain c;

	state_chain(st, &c);
	l.gen = (unsigned)rng_below(r, FRESH_GENS);
	if (rng_percent(r, 50)) {
		unsigned gen = FRESH_GENS;

		pthread_mutex_lock(&g.lock);
		for (size_t i = 0; i < g.nmerged; i++)
			if (g.merged[i]->seq == l.seq && g.merged[i]->gen >= gen)
				gen = g.merged[i]->gen + 1;
		pthread_mutex_unlock(&g.lock);
		if (g.nmerged < MAX_MERGED && gen <= MAX_GEN) {
			struct merged *m = xmalloc(sizeof(*m));

			l.gen = gen;
			src = chain_sources(&c);
			*m = (struct merged){ .seq = l.seq, .gen = gen, .src = src };
			pthread_mutex_lock(&g.lock);
			g.merged[g.nmerged++] = m;
			pthread_mutex_unlock(&g.lock);
		}
	}
	publish(st, &l, write_layer(g.store, &l, src));
	count(&g.bases, 1);
}

static void publish_diff(struct store_state *st, struct rng *r)
{
	struct layer l = { .seq = state_max_seq(st) + 1, .is_base = false };

	l.gen = (unsigned)rng_below(r, FRESH_GENS);
	publish(st, &l, write_layer(g.store, &l, NULL));
	count(&g.publishes, 1);
}

/* ---- the stress test ---- */

struct reader {
	pthread_t thread;
	unsigned id;
	bool quick;		/* open, check one page, close, again */
	struct rng rng;
	unsigned char *buf;	/* READ_MAX */
	unsigned char page[PAGE];
};

static __thread sigjmp_buf *fault_jmp;

static void on_fault(int sig)
{
	if (fault_jmp)
		siglongjmp(*fault_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Which recent state's content does this page match, for a failure report? */
static void diagnose(const unsigned char *got, uint64_t p, size_t pofs, size_t len,
		     char *out, size_t outlen)
{
	unsigned char page[PAGE];
	size_t nlog;
	char **chains;
	size_t n = 0;

	snprintf(out, outlen, "no recent state has these bytes");
	pthread_mutex_lock(&g.lock);
	nlog = g.nlog;
	chains = xmalloc(HISTORY_DIAG * sizeof(*chains));
	for (size_t k = nlog; k-- > 0 && n < HISTORY_DIAG;)
		chains[n++] = xstrdup(g.log[k].chain);
	pthread_mutex_unlock(&g.lock);
	memset(page, 0, sizeof(page));
	if (!memcmp(got, page + pofs, len))
		snprintf(out, outlen, "the bytes are all zeros");
	for (size_t i = 0; i < n; i++) {
		struct chain c;
		char err[16];

		if (parse_chain(chains[i], strlen(chains[i]), &c, err, sizeof(err)))
			continue;
		fill_src(resolve_page(&c, p), p, page);
		if (!memcmp(got, page + pofs, len)) {
			snprintf(out, outlen, "the bytes are those of state %zu back: %s", i, chains[i]);
			break;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(chains[i]);
	free(chains);
}

/*
 * Compares len bytes got from the view at offset off with chain c's model;
 * counts and reports wrong bytes. how names the access for the report.
 */
static void check_bytes(struct reader *rd, const struct chain *c, const char *chain_s,
			const unsigned char *got, uint64_t off, size_t len, const char *how)
{
	unsigned long long wrong = 0;
	bool reported = false;

	for (size_t done = 0; done < len;) {
		uint64_t p = (off + done) / PAGE;
		size_t pofs = (size_t)((off + done) % PAGE);
		size_t n = PAGE - pofs < len - done ? PAGE - pofs : len - done;
		uint64_t src = resolve_page(c, p);

		fill_src(src, p, rd->page);
		if (memcmp(got + done, rd->page + pofs, n)) {
			size_t first = 0, bad = 0;

			for (size_t i = 0; i < n; i++) {
				if (got[done + i] != rd->page[pofs + i]) {
					if (!bad)
						first = i;
					bad++;
				}
			}
			wrong += bad;
			if (!reported) {
				char why[512];

				diagnose(got + done, p, pofs, n, why, sizeof(why));
				report("reader %u: %s at %" PRIu64 ": %zu wrong bytes in page %" PRIu64
				       " (first at +%zu: got %02x, want %02x; page source %s seq %" PRIu64
				       " gen %u) of chain %s; %s",
				       rd->id, how, off + done + first, bad, p, pofs + first,
				       got[done + first], rd->page[pofs + first],
				       SRC_KIND(src) == SRC_DIFF ? "diff" :
				       SRC_KIND(src) == SRC_BASE ? "base" : "zero",
				       SRC_SEQ(src), SRC_GEN(src), chain_s, why);
				reported = true;
			}
		}
		done += n;
	}
	pthread_mutex_lock(&g.lock);
	g.checked += len;
	g.wrong += wrong;
	pthread_mutex_unlock(&g.lock);
}

static void check_preads(struct reader *rd, int fd, const struct chain *c, const char *cs)
{
	uint64_t len = rng_log_between(&rd->rng, 1, READ_MAX);
	uint64_t off;
	size_t done = 0;

	if (rng_percent(&rd->rng, 50))
		len = (len + PAGE - 1) / PAGE * PAGE;
	if (len > g.size)
		len = g.size;
	off = rng_below(&rd->rng, g.size - len + 1);
	if (rng_percent(&rd->rng, 50))
		off = off / PAGE * PAGE;
	while (done < len) {
		ssize_t n = pread(fd, rd->buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			count(&g.errors, 1);
			report("reader %u: pread %" PRIu64 "+%" PRIu64 " of chain %s: %s",
			       rd->id, off + done, len - done, cs,
			       n < 0 ? strerror(errno) : "unexpected end of file");
			break;
		}
		done += (size_t)n;
	}
	check_bytes(rd, c, cs, rd->buf, off, done, "pread");
}

static void check_mmap(struct reader *rd, int fd, const struct chain *c, const char *cs,
		       bool hold)
{
	unsigned char *map;
	unsigned npages = (unsigned)rng_between(&rd->rng, 1, 32);
	sigjmp_buf env;
	volatile uint64_t p = 0;

	map = mmap(NULL, g.size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		count(&g.errors, 1);
		report("reader %u: mmap of chain %s: %s", rd->id, cs, strerror(errno));
		return;
	}
	if (sigsetjmp(env, 1)) {
		fault_jmp = NULL;
		count(&g.errors, 1);
		report("reader %u: SIGBUS on page %" PRIu64 " of a MAP_PRIVATE mapping of chain %s",
		       rd->id, p, cs);
		munmap(map, g.size);
		return;
	}
	fault_jmp = &env;
	for (unsigned i = 0; i < npages; i++) {
		p = rng_below(&rd->rng, g.npages);
		/* touch it before comparing, so a fault is caught here */
		(void)*(volatile unsigned char *)(map + p * PAGE);
		check_bytes(rd, c, cs, map + p * PAGE, p * PAGE, PAGE, "mmap");
		if (hold && i == npages / 2)
			sleep_ms((double)rng_between(&rd->rng, 1, 50));
	}
	fault_jmp = NULL;
	munmap(map, g.size);
}

/* One open of the view: stale check, reads, maybe a mapping, maybe holds. */
static void reader_round(struct reader *rd)
{
	char xbuf[XATTR_MAX], err[512];
	double t_open = now(), last;
	struct chain c;
	struct stat st;
	bool hold = rng_percent(&rd->rng, 25);
	ssize_t xlen;
	int fd;

	fd = open(g.view, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ESTALE) {
		/* the chain moved twice during the open (the kernel retries
		 * once): visible to applications, counted, not a wrong byte */
		count(&g.estale, 1);
		return;
	}
	if (fd < 0) {
		count(&g.errors, 1);
		report("reader %u: open %s: %s", rd->id, g.view, strerror(errno));
		sleep_ms(1);
		return;
	}
	count(&g.opens, 1);
	xlen = fgetxattr(fd, CHAIN_XATTR, xbuf, sizeof(xbuf) - 1);
	if (xlen < 0) {
		count(&g.errors, 1);
		report("reader %u: fgetxattr %s on an open view: %s", rd->id, CHAIN_XATTR,
		       strerror(errno));
		close(fd);
		return;
	}
	xbuf[xlen] = '\0';
	if (parse_chain(xbuf, (size_t)xlen, &c, err, sizeof(err))) {
		count(&g.errors, 1);
		report("reader %u: bad chain '%s': %s", rd->id, xbuf, err);
		close(fd);
		return;
	}
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_size != g.size) {
		count(&g.errors, 1);
		report("reader %u: view of chain %s has size %lld, want %" PRIu64,
		       rd->id, xbuf, (long long)st.st_size, g.size);
	}
	last = log_last_current(xbuf);
	if (last < t_open - g.grace) {
		count(&g.stale, 1);
		if (last == -INFINITY)
			report("reader %u: new open got chain %s, which was never current",
			       rd->id, xbuf);
		else
			report("reader %u: new open got chain %s, last current %.1f ms before the open began",
			       rd->id, xbuf, (t_open - last) * 1e3);
	}
	if (rd->quick) {
		uint64_t p = rng_below(&rd->rng, g.npages);

		if (pread(fd, rd->buf, PAGE, (off_t)(p * PAGE)) != (ssize_t)PAGE) {
			count(&g.errors, 1);
			report("reader %u: pread of page %" PRIu64 " of chain %s failed",
			       rd->id, p, xbuf);
		} else {
			check_bytes(rd, &c, xbuf, rd->buf, p * PAGE, PAGE, "pread");
		}
		close(fd);
		return;
	}
	for (unsigned i = (unsigned)rng_between(&rd->rng, 1, 4); i > 0; i--) {
		check_preads(rd, fd, &c, xbuf);
		if (hold)
			sleep_ms((double)rng_between(&rd->rng, 1, 60));
	}
	if (rng_percent(&rd->rng, 50))
		check_mmap(rd, fd, &c, xbuf, hold);
	if (hold)
		check_preads(rd, fd, &c, xbuf);	/* after the store moved on */
	close(fd);
}

static void *reader_main(void *arg)
{
	struct reader *rd = arg;

	while (!g.stop)
		reader_round(rd);
	return NULL;
}

/* Waits until a new open of the view shows chain want; returns when, or -1. */
static double wait_visible(const char *want, double timeout, double poll_ms)
{
	char xbuf[XATTR_MAX];
	double deadline = now() + timeout;

	for (;;) {
		int fd = open(g.view, O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			ssize_t n = fgetxattr(fd, CHAIN_XATTR, xbuf, sizeof(xbuf) - 1);

			close(fd);
			if (n >= 0) {
				while (n > 0 && (xbuf[n - 1] == '\0' || xbuf[n - 1] == '\n'))
					n--;
				xbuf[n] = '\0';
				if (strcmp(xbuf, want) == 0)
					return now();
			}
		}
		if (now() > deadline)
			return -1;
		sleep_ms(poll_ms);
	}
}

/* Creates NAME.0.base and waits for the mount to show it. */
static void start_store(struct store_state *st)
{
	struct layer l = { .seq = 0, .gen = 0, .is_base = true };
	char *s;

	state_rescan(st);
	if (st->nfiles)
		die("%s already holds layers of %s", g.store, g.name);
	publish(st, &l, write_layer(g.store, &l, NULL));
	s = xstrdup(g.log[0].chain);
	if (wait_visible(s, 10, 10) < 0)
		die("%s does not show %s within 10 s", g.view, s);
	free(s);
}

static void publisher_step(struct store_state *st, struct rng *r, unsigned *nrollback)
{
	struct chain c;
	unsigned roll = 0, base = 0, drop = 0;
	unsigned dice = (unsigned)rng_below(r, 100);
	size_t superseded;

	state_chain(st, &c);
	superseded = st->nfiles - 1 - c.ndiffs;
	/* superseded layers pile up under new bases: clear them out sometimes */
	if (superseded > 8 || (superseded && rng_percent(r, 5))) {
		for (size_t i = st->nfiles; i-- > 0;) {
			struct layer l = st->files[i];

			if (l.seq < c.base.seq && (superseded > 8 || rng_percent(r, 50)))
				remove_layer(st, &l, false);
		}
		return;
	}
	if (c.ndiffs == 0) {
		base = 8;
		drop = superseded ? 6 : 0;
	} else if (c.ndiffs >= MAX_DEPTH) {
		roll = 70;
		base = 30;
	} else {
		roll = 40;
		base = 6;
	}
	if (g.via_mount && rng_percent(r, 4)) {
		/* the base, or a diff below the top */
		size_t i = (size_t)rng_below(r, c.ndiffs + (c.ndiffs == 0));

		refused_unlink(st, i == 0 ? &c.base : &c.diffs[i - 1]);
		return;
	}
	if (dice < roll) {
		bool via = g.via_mount && ((*nrollback)++ % 2 == 1);

		remove_layer(st, &c.diffs[c.ndiffs - 1], via);
		count(&g.rollbacks, 1);
		if (via)
			count(&g.mount_unlinks, 1);
	} else if (dice < roll + base) {
		publish_base(st, r);
	} else if (dice < roll + base + drop) {
		/* roll back a base in STORE: the chain below comes back */
		struct store_state next = *st;
		struct chain below;

		state_remove(&next, &c.base);
		for (size_t i = 0; i < next.nfiles; i++) {
			if (next.files[i].is_base) {
				state_chain(&next, &below);
				if (below.ndiffs <= MAX_DEPTH) {
					remove_layer(st, &c.base, false);
					count(&g.rollbacks, 1);
				}
				return;
			}
		}
	} else {
		publish_diff(st, r);
	}
}

static void *publisher_main(void *arg)
{
	struct store_state *st = arg;
	struct rng r;
	unsigned nrollback = 0;
	double end = now() + g.seconds;

	rng_seed(&r, rng_mix(g.seed, 0x9b));
	while (now() < end) {
		publisher_step(st, &r, &nrollback);
		sleep_ms((double)rng_below(&r, 2 * g.period_ms + 1));
	}
	g.stop = 1;
	return NULL;
}

static int run_stress(void)
{
	struct store_state st;
	struct reader *rds = xmalloc((g.readers + g.quick) * sizeof(*rds));
	pthread_t pub;
	struct sigaction sa = { .sa_handler = on_fault };
	double t0;
	int ret = 0;

	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGBUS, &sa, NULL);
	start_store(&st);
	fprintf(stderr, "churn: seed %" PRIu64 ", %u+%u readers, %.0f s, %" PRIu64
		" MiB view, grace %.0f ms%s\n", g.seed, g.readers, g.quick, g.seconds,
		(uint64_t)(g.size / MIB), g.grace * 1e3, g.via_mount ? ", rollbacks through the mount too" : "");
	t0 = now();
	for (unsigned i = 0; i < g.readers + g.quick; i++) {
		rds[i].id = i;
		rds[i].quick = i >= g.readers;
		rng_seed(&rds[i].rng, rng_mix(g.seed, 1000 + i));
		rds[i].buf = xmalloc(READ_MAX);
		if (pthread_create(&rds[i].thread, NULL, reader_main, &rds[i]))
			die("pthread_create failed");
	}
	if (pthread_create(&pub, NULL, publisher_main, &st))
		die("pthread_create failed");
	pthread_join(pub, NULL);
	for (unsigned i = 0; i < g.readers + g.quick; i++) {
		pthread_join(rds[i].thread, NULL);
		free(rds[i].buf);
	}
	free(rds);
	printf("churn: %llu opens, %llu bytes checked, %llu wrong bytes, %llu stale opens, "
	       "%llu publishes, %llu rollbacks, %llu errors (%llu new bases, %llu unlinks through "
	       "the mount, %llu refused, %llu opens answered ESTALE, %.1f s)\n",
	       g.opens, g.checked, g.wrong, g.stale, g.publishes, g.rollbacks, g.errors,
	       g.bases, g.mount_unlinks, g.refused, g.estale, now() - t0);
	if (g.wrong || g.stale || g.errors || !g.opens || !g.publishes) {
		if (!g.opens || !g.publishes)
			fprintf(stderr, "churn: FAIL: nothing was %s\n",
				g.opens ? "published" : "opened");
		fprintf(stderr, "churn: reproduce the schedule with -s %" PRIu64 "\n", g.seed);
		ret = 1;
	}
	return ret;
}

/* ---- the benchmark ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Percentile q (0..1) of n sorted values: nearest rank. */
static double percentile(const double *v, size_t n, double q)
{
	size_t k;

	if (!n)
		return NAN;
	k = (size_t)(q * (double)n);
	if ((double)k < q * (double)n)
		k++;		/* the rank rounds up */
	return v[k ? k - 1 : 0];
}

static void print_latency(const char *what, double *ms, size_t n, unsigned timeouts)
{
	qsort(ms, n, sizeof(*ms), cmp_double);
	printf("%s median=%.2f p99=%.2f max=%.2f n=%zu timeouts=%u\n", what,
	       percentile(ms, n, 0.5), percentile(ms, n, 0.99), n ? ms[n - 1] : NAN,
	       n, timeouts);
}

/* Rolls back the top diff and times it until a new open shows the rest. */
static double timed_rollback(struct store_state *st, unsigned *nroll, unsigned *timeouts)
{
	struct chain c;
	char *want;
	double t1, t2;
	bool via = g.via_mount && ((*nroll)++ % 2 == 1);

	state_chain(st, &c);
	if (remove_layer(st, &c.diffs[c.ndiffs - 1], via))
		die("rollback refused");
	t1 = now();
	state_chain(st, &c);
	want = chain_string(&c);
	t2 = wait_visible(want, 5, 1);
	free(want);
	if (t2 < 0) {
		(*timeouts)++;
		return 5000;
	}
	return (t2 - t1) * 1e3;
}

static void bench_latency(struct store_state *st, struct rng *r)
{
	double *pub = xmalloc(g.bench_n * sizeof(double));
	double *roll = xmalloc(g.bench_n * sizeof(double));
	size_t npub = 0, nroll = 0;
	unsigned pub_to = 0, roll_to = 0, nr = 0;

	while (npub < g.bench_n) {
		struct chain c;
		struct layer l = { .seq = state_max_seq(st) + 1, .is_base = false };
		char *tmp, *want, *path;
		double t1, t2;

		state_chain(st, &c);
		if (c.ndiffs >= 10) {
			while (c.ndiffs > 0 && nroll < g.bench_n) {
				roll[nroll++] = timed_rollback(st, &nr, &roll_to);
				state_chain(st, &c);
			}
			continue;
		}
		l.gen = (unsigned)rng_below(r, FRESH_GENS);
		tmp = write_layer(g.store, &l, NULL);
		path = store_path(g.store, &l, false);
		st->files[st->nfiles++] = l;
		state_chain(st, &c);
		want = chain_string(&c);
		if (rename(tmp, path) < 0)
			die("rename %s: %s", path, strerror(errno));
		t1 = now();
		t2 = wait_visible(want, 5, 1);
		if (t2 < 0) {
			pub_to++;
			pub[npub++] = 5000;
		} else {
			pub[npub++] = (t2 - t1) * 1e3;
		}
		free(want);
		free(path);
		free(tmp);
	}
	print_latency("publish_latency_ms", pub, npub, pub_to);
	print_latency("rollback_latency_ms", roll, nroll, roll_to);
	free(pub);
	free(roll);
}

struct bench_reader {
	pthread_t thread;
	unsigned id;
	bool seq;		/* 1 MiB sequential, else random 4 KiB */
	double deadline;
	unsigned long long bytes;
	unsigned long long estale;	/* opens answered ESTALE */
	unsigned long long eio;		/* opens answered EIO */
	int err;
};

static void *bench_reader_main(void *arg)
{
	struct bench_reader *br = arg;
	size_t bs = br->seq ? MIB : PAGE;
	unsigned char *buf;
	struct rng r;

	rng_seed(&r, rng_mix(g.seed, 5000 + br->id));
	if (posix_memalign((void **)&buf, PAGE, bs))
		die("out of memory");
	while (now() < br->deadline) {
		int fd = open(g.view, O_RDONLY | O_CLOEXEC | O_DIRECT);
		/* one view-size worth of reads per open, in both modes */
		unsigned n = br->seq ? (unsigned)(g.size / MIB) : (unsigned)g.npages;

		if (fd < 0 && errno == ESTALE) {
			br->estale++;	/* the chain moved twice during the open */
			continue;
		}
		if (fd < 0 && errno == EIO) {
			br->eio++;	/* a daemon error, reported; keep timing */
			continue;
		}
		if (fd < 0) {
			br->err = errno;
			break;
		}
		for (unsigned i = 0; i < n && now() < br->deadline; i++) {
			uint64_t off = br->seq ? (uint64_t)i * MIB : rng_below(&r, g.npages) * PAGE;
			ssize_t got = pread(fd, buf, bs, (off_t)off);

			if (got != (ssize_t)bs) {
				br->err = got < 0 ? errno : EIO;
				break;
			}
			br->bytes += bs;
		}
		close(fd);
		if (br->err)
			break;
	}
	free(buf);
	return NULL;
}

/* Reads the view for g.bench_secs with g.readers threads; returns MB/s. */
static double bench_throughput(bool seq)
{
	struct bench_reader *brs = calloc(g.readers, sizeof(*brs));
	double t0 = now(), mbs;
	unsigned long long bytes = 0;

	if (!brs)
		die("out of memory");
	for (unsigned i = 0; i < g.readers; i++) {
		brs[i] = (struct bench_reader){ .id = i, .seq = seq,
						.deadline = t0 + g.bench_secs };
		if (pthread_create(&brs[i].thread, NULL, bench_reader_main, &brs[i]))
			die("pthread_create failed");
	}
	for (unsigned i = 0; i < g.readers; i++) {
		pthread_join(brs[i].thread, NULL);
		if (brs[i].err)
			die("reading %s (O_DIRECT): %s", g.view, strerror(brs[i].err));
		bytes += brs[i].bytes;
		g.estale += brs[i].estale;
		g.errors += brs[i].eio;
	}
	mbs = (double)bytes / 1e6 / (now() - t0);
	free(brs);
	return mbs;
}

/*
 * The churning publisher of the throughput runs: hard-links prepared diffs
 * (kept under temporary names that are no layers) into place and unlinks
 * them again, one operation every period_ms, so the daemon sees a publish or
 * a rollback at that rate while the publisher itself costs almost nothing.
 * Runs until g.stop, then leaves the chain as it found it.
 */
struct churner {
	char *staged[4];	/* the prepared diffs */
	char *placed[4];	/* their names in STORE_DIR */
	unsigned long long ops;
};

static void *churner_main(void *arg)
{
	struct churner *ch = arg;
	unsigned k = 0;
	bool up = true;

	while (!g.stop) {
		if (up ? link(ch->staged[k], ch->placed[k]) : unlink(ch->placed[k]))
			die("%s %s: %s", up ? "link" : "unlink", ch->placed[k], strerror(errno));
		ch->ops++;
		if (up && k == 3)
			up = false;
		else if (!up && k == 0)
			up = true;
		else
			k = up ? k + 1 : k - 1;
		sleep_ms(g.period_ms);
	}
	for (unsigned i = 4; i-- > 0;)
		if (unlink(ch->placed[i]) < 0 && errno != ENOENT)
			die("unlink %s: %s", ch->placed[i], strerror(errno));
	return NULL;
}

static void bench_reads(struct store_state *st, struct rng *r)
{
	struct churner ch = { .ops = 0 };
	uint64_t top = state_max_seq(st);
	double quiet[2][BENCH_REPS], busy[2][BENCH_REPS];
	unsigned long long ops = 0;
	double busy_secs = 0;

	for (unsigned i = 0; i < 4; i++) {
		struct layer l = { .seq = top + 1 + i, .gen = (unsigned)rng_below(r, FRESH_GENS) };

		ch.staged[i] = write_layer(g.store, &l, NULL);
		ch.placed[i] = store_path(g.store, &l, false);
	}
	bench_throughput(false);	/* warm up: maps scanned, threads started */
	for (int rep = 0; rep < BENCH_REPS; rep++) {
		for (int seq = 0; seq < 2; seq++) {
			for (int half = 0; half < 2; half++) {
				pthread_t t;
				double t0;

				/* quiet first in even runs, churning first in odd ones */
				if ((half == 0) == (rep % 2 == 0)) {
					quiet[seq][rep] = bench_throughput(seq);
					continue;
				}
				g.stop = 0;
				ch.ops = 0;
				t0 = now();
				if (pthread_create(&t, NULL, churner_main, &ch))
					die("pthread_create failed");
				busy[seq][rep] = bench_throughput(seq);
				g.stop = 1;
				pthread_join(t, NULL);
				busy_secs += now() - t0;
				ops += ch.ops;
			}
		}
	}
	for (int seq = 0; seq < 2; seq++) {
		double q, b;

		qsort(quiet[seq], BENCH_REPS, sizeof(double), cmp_double);
		qsort(busy[seq], BENCH_REPS, sizeof(double), cmp_double);
		q = quiet[seq][BENCH_REPS / 2];
		b = busy[seq][BENCH_REPS / 2];
		printf("%s quiet=%.1f churn=%.1f ratio=%.2f readers=%u\n",
		       seq ? "read_seq1m_MBps" : "read_rand4k_MBps", q, b, b / q, g.readers);
		printf("%s_runs quiet=", seq ? "read_seq1m_MBps" : "read_rand4k_MBps");
		for (int i = 0; i < BENCH_REPS; i++)
			printf("%s%.1f", i ? "," : "", quiet[seq][i]);
		printf(" churn=");
		for (int i = 0; i < BENCH_REPS; i++)
			printf("%s%.1f", i ? "," : "", busy[seq][i]);
		printf("\n");
	}
	printf("churn_ops_per_s %.1f\n", (double)ops / busy_secs);
	printf("failed_opens estale=%llu eio=%llu\n", g.estale, g.errors);
	for (unsigned i = 0; i < 4; i++) {
		unlink(ch.staged[i]);
		free(ch.staged[i]);
		free(ch.placed[i]);
	}
}

static int run_bench(void)
{
	struct store_state st;
	struct rng r;

	rng_seed(&r, rng_mix(g.seed, 0xbe));
	start_store(&st);
	printf("view_MiB %" PRIu64 "\n", (uint64_t)(g.size / MIB));
	bench_latency(&st, &r);
	/* a chain of 6 diffs for the read runs, published and settled */
	while (1) {
		struct chain c;
		char *s;

		state_chain(&st, &c);
		if (c.ndiffs == 6) {
			s = chain_string(&c);
			if (wait_visible(s, 10, 10) < 0)
				die("the view does not settle on %s", s);
			free(s);
			break;
		}
		if (c.ndiffs > 6)
			remove_layer(&st, &c.diffs[c.ndiffs - 1], false);
		else
			publish_diff(&st, &r);
	}
	bench_reads(&st, &r);
	return 0;
}

static unsigned long parse_num(const char *s, const char *what, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max)
		die("bad %s '%s'", what, s);
	return v;
}

int main(int argc, char **argv)
{
	int opt;

	while ((opt = getopt(argc, argv, "t:r:q:s:g:ubS:p:n:T:vh")) != -1) {
		switch (opt) {
		case 't': g.seconds = (double)parse_num(optarg, "seconds", 86400); break;
		case 'r': g.readers = (unsigned)parse_num(optarg, "readers", 256); break;
		case 'q': g.quick = (unsigned)parse_num(optarg, "quick readers", 256); break;
		case 's': g.seed = strtoull(optarg, NULL, 0); break;
		case 'g': g.grace = (double)parse_num(optarg, "grace", 600000) / 1e3; break;
		case 'u': g.via_mount = true; break;
		case 'b': g.bench = true; break;
		case 'S': g.size = parse_num(optarg, "size", 1 << 16) * MIB; break;
		case 'p': g.period_ms = (unsigned)parse_num(optarg, "period", 60000); break;
		case 'n': g.bench_n = (unsigned)parse_num(optarg, "publishes", 100000); break;
		case 'T': g.bench_secs = (double)parse_num(optarg, "seconds", 3600); break;
		case 'v': g.verbose = true; break;
		case 'h': fputs(usage_text, stdout); return 0;
		default: fputs(usage_text, stderr); return 2;
		}
	}
	if (argc - optind != 3) {
		fputs(usage_text, stderr);
		return 2;
	}
	g.store = argv[optind];
	g.mnt = argv[optind + 1];
	g.name = argv[optind + 2];
	if (!*g.name || strchr(g.name, '/') || strchr(g.name, ','))
		die("bad NAME '%s'", g.name);
	if (g.size == 0 || g.readers == 0 || g.bench_n == 0)
		die("size, readers and publishes must be positive");
	g.npages = g.size / PAGE;
	if (asprintf(&g.view, "%s/%s", g.mnt, g.name) < 0)
		die("out of memory");
	setvbuf(stdout, NULL, _IOLBF, 0);
	return g.bench ? run_bench() : run_stress();
}
