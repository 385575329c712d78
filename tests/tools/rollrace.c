/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * rollrace: rollbacks racing with compaction. A publisher adds diffs to a
 * layered file in STORE and rolls them back, while the snapfs daemon that
 * has STORE mounted compacts the chain behind it (mount it with a low
 * compact_threshold and keep_diffs and a compact_rate that keeps
 * compactions in flight). It checks that a rollback that returned success
 * is never undone: no byte of a rolled-back diff may appear again, neither
 * in its own merge of the chain in STORE (read from the layer files) nor
 * in a fresh open of the view through the mount.
 *
 * Every page a layer writes holds one 64-bit word repeated, which names
 * the layer's generation (a number never reused, unlike a <seq>) and the
 * page, so a page read anywhere tells which diff it came from. The
 * publisher keeps the model: the stack of diffs it published and did not
 * roll back, hence the exact expected content, whatever the compactor
 * merged meanwhile.
 *
 * Rollbacks take turns among the ways given with -m: "tool" runs
 * snapfs-rollback on the diff, "flock" runs `flock STORE_DIR rm DIFF`,
 * "mount" unlinks the diff through the mount, "plain" is an rm in STORE
 * without the lock (the only way before the rollback lock existed). A
 * rollback that fails (the diff was merged meanwhile) is counted as
 * refused and changes nothing in the model.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rng.h"

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define MAGIC 0x5a17ULL		/* top 16 bits of every word written */
#define MAX_GEN (1u << 22)	/* generations, at most */
#define MAX_STACK 64		/* diffs above the base, at most */
#define MAX_LAYERS 256		/* layer files of NAME in STORE at once */
#define MAX_REPORTS 10

extern char **environ;

enum way { WAY_TOOL, WAY_FLOCK, WAY_MOUNT, WAY_PLAIN, NWAYS };
static const char *const way_names[NWAYS] = { "tool", "flock", "mount", "plain" };

/* A diff the publisher made and has not rolled back. */
struct pub {
	uint64_t seq;
	uint32_t gen;
	uint32_t npages;
	uint32_t *pages;
};

static struct {
	const char *store, *mnt, *name, *tool;
	double seconds, grace;
	uint64_t seed;
	uint32_t npages;
	unsigned max_depth, readers;
	unsigned period_us;
	bool verbose;
	enum way ways[NWAYS];
	unsigned nways;

	/* the model (publisher thread only) */
	struct pub stack[MAX_STACK];
	unsigned depth;
	uint32_t next_gen;
	uint32_t *merged;	/* per page: diffs compaction merged for good */
	uint32_t *expect;	/* expected generation per page */

	/* shared with the readers */
	_Atomic int64_t *rolled_ns;	/* per gen: when its rollback returned */
	atomic_uchar *lost_seen;	/* per gen: seen after its rollback */
	atomic_uchar *final_seen;	/* per gen: seen in the last look */
	atomic_bool final;		/* the last look, after the settling */
	atomic_ullong lost_final;
	atomic_int stop;
	atomic_ullong lost, wrong, mount_checks, store_checks, reports;
	unsigned long long publishes, rollbacks[NWAYS], refused[NWAYS];
	unsigned long long bases_seen, retries;
	uint64_t last_base;
	double t0;
} g = {
	.seconds = 60, .grace = 1.0, .seed = 1, .npages = 256, .max_depth = 6,
	.readers = 1, .period_us = 1000,
};

static const char *const usage_text =
	"usage: rollrace [-t SECONDS] [-s SEED] [-S PAGES] [-d MAX_DEPTH] [-p PERIOD_US]\n"
	"                [-r READERS] [-g GRACE_MS] [-m WAY[,WAY...]] [-R SNAPFS_ROLLBACK]\n"
	"                [-v] STORE_DIR MNT_DIR NAME\n"
	"  WAY: tool (snapfs-rollback, needs -R), flock (flock STORE_DIR rm),\n"
	"  mount (unlink through MNT_DIR), plain (rm in STORE without the lock).\n"
	"  STORE_DIR must not hold layers of NAME yet; MNT_DIR is the same\n"
	"  directory seen through a snapfs mount. Exit 0 if no rollback was lost.\n";

/* ---- helpers ---- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("rollrace: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

__attribute__((format(printf, 1, 2)))
static void report(const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&g.reports, 1) >= MAX_REPORTS)
		return;
	fprintf(stderr, "rollrace: %.3f s: ", now() - g.t0);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (!p)
		die("out of memory");
	return p;
}

static uint64_t word_of(uint32_t gen, uint32_t page)
{
	return (MAGIC << 48) | ((uint64_t)gen << 20) | page;
}

/*
 * The generation a page holds: 0.. for a written page, -1 for zeros (a
 * hole), -2 for anything else (corrupt: counted as wrong).
 */
static int64_t page_gen(const uint64_t *w, uint32_t page)
{
	if (w[0] == 0) {
		for (unsigned i = 1; i < WORDS; i++)
			if (w[i])
				return -2;
		return -1;
	}
	if ((w[0] >> 48) != MAGIC || (w[0] & 0xfffff) != page)
		return -2;
	for (unsigned i = 1; i < WORDS; i++)
		if (w[i] != w[0])
			return -2;
	return (int64_t)((w[0] >> 20) & 0xfffffff);
}

static void fill_page(uint64_t *w, uint32_t gen, uint32_t page)
{
	uint64_t v = word_of(gen, page);

	for (unsigned i = 0; i < WORDS; i++)
		w[i] = v;
}

static void pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0)
			die("pwrite: %s", strerror(errno));
		p += n;
		off += n;
		len -= (size_t)n;
	}
}

/* Reads len bytes at off; returns false on a short read or an error. */
static bool pread_all(int fd, void *buf, size_t len, off_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		off += n;
		len -= (size_t)n;
	}
	return true;
}

/* ---- STORE: the chain as the naming rules make it ---- */

struct layer {
	char fname[256];
	uint64_t seq;
	bool base;
};

/* Parses NAME.<seq>.base|diff of our NAME. */
static bool parse_layer(const char *fname, struct layer *l)
{
	size_t n = strlen(g.name), len = strlen(fname);
	const char *p;
	char *end;

	if (len <= n + 1 || strncmp(fname, g.name, n) != 0 || fname[n] != '.')
		return false;
	p = fname + n + 1;
	if (*p < '0' || *p > '9')
		return false;
	errno = 0;
	l->seq = strtoull(p, &end, 10);
	if (errno)
		return false;
	if (strcmp(end, ".base") == 0)
		l->base = true;
	else if (strcmp(end, ".diff") == 0)
		l->base = false;
	else
		return false;
	snprintf(l->fname, sizeof(l->fname), "%s", fname);
	return true;
}

static int cmp_layer(const void *a, const void *b)
{
	const struct layer *x = a, *y = b;

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return (int)y->base - (int)x->base;	/* bases first */
}

/*
 * The chain of NAME in STORE: the highest base, then every diff with a
 * greater seq. Returns the number of layers (0 if there is no base).
 */
static size_t scan_chain(struct layer *out, size_t max)
{
	static struct layer all[MAX_LAYERS];
	size_t n = 0, nb = SIZE_MAX, k = 0;
	DIR *d = opendir(g.store);
	struct dirent *de;

	if (!d)
		die("%s: %s", g.store, strerror(errno));
	while ((de = readdir(d)))
		if (n < MAX_LAYERS && parse_layer(de->d_name, &all[n]))
			n++;
	closedir(d);
	qsort(all, n, sizeof(*all), cmp_layer);
	for (size_t i = 0; i < n; i++)
		if (all[i].base)
			nb = i;
	if (nb == SIZE_MAX)
		return 0;
	out[k++] = all[nb];
	for (size_t i = nb + 1; i < n && k < max; i++)
		if (!all[i].base && all[i].seq > all[nb].seq)
			out[k++] = all[i];
	return k;
}

/* The highest seq of any layer of NAME (0 if none). */
static uint64_t max_seq(void)
{
	struct layer l;
	uint64_t m = 0;
	DIR *d = opendir(g.store);
	struct dirent *de;

	if (!d)
		die("%s: %s", g.store, strerror(errno));
	while ((de = readdir(d)))
		if (parse_layer(de->d_name, &l) && l.seq > m)
			m = l.seq;
	closedir(d);
	return m;
}

/* ---- checks ---- */

/*
 * One page read (from STORE's merge or through the mount) holding
 * generation gen where the model expects want. A rolled-back generation
 * is a lost rollback if the rollback returned before the read began (by
 * more than the grace period, through the mount); anything else wrong is
 * counted as wrong only by the publisher, which knows the model.
 */
static void judge(const char *where, uint32_t page, int64_t gen, int64_t started_ns,
		  double grace, bool by_model, uint32_t want)
{
	if (gen == -2) {
		atomic_fetch_add(&g.wrong, 1);
		report("%s: page %u holds bytes no layer wrote", where, page);
		return;
	}
	if (gen >= 0 && (uint64_t)gen < MAX_GEN) {
		int64_t rb = atomic_load(&g.rolled_ns[gen]);

		if (rb && started_ns - rb > (int64_t)(grace * 1e9)) {
			if (atomic_load(&g.final) &&
			    atomic_exchange(&g.final_seen[gen], 1) == 0)
				atomic_fetch_add(&g.lost_final, 1);
			if (atomic_exchange(&g.lost_seen[gen], 1) == 0) {
				atomic_fetch_add(&g.lost, 1);
				report("%s: page %u holds generation %" PRId64 ", rolled "
				       "back %.3f s before: LOST ROLLBACK", where, page,
				       gen, (double)(started_ns - rb) / 1e9);
			}
			return;
		}
	}
	if (by_model && gen != (int64_t)want && !(gen == -1 && want == 0)) {
		atomic_fetch_add(&g.wrong, 1);
		report("%s: page %u holds generation %" PRId64 ", want %u", where,
		       page, gen, want);
	}
}

/*
 * Merges the chain of NAME in STORE from its layer files, as snapfs
 * would, into gens (one generation per page). The layers are opened, then
 * the directory is scanned again: the merge counts only if the chain did
 * not change in between (else it retries), so it is a state STORE was in.
 * Returns false if STORE kept changing.
 */
static bool store_merge(int64_t *gens, uint64_t *buf)
{
	struct layer a[MAX_STACK + 1], b[MAX_STACK + 1];
	int fds[MAX_STACK + 1];

	for (int tries = 0; tries < 100; tries++) {
		size_t n = scan_chain(a, MAX_STACK + 1), m, opened = 0;
		bool ok = n > 0;

		for (size_t i = 0; ok && i < n; i++) {
			char p[4096];

			if (snprintf(p, sizeof(p), "%s/%s", g.store, a[i].fname) >= (int)sizeof(p))
				fds[i] = -1;
			else
				fds[i] = open(p, O_RDONLY | O_CLOEXEC);
			if (fds[i] < 0)
				ok = false;
			else
				opened++;
		}
		m = ok ? scan_chain(b, MAX_STACK + 1) : 0;
		ok = ok && m == n;
		for (size_t i = 0; ok && i < n; i++) {
			char p[4096];
			struct stat s1, s2;

			ok = snprintf(p, sizeof(p), "%s/%s", g.store, b[i].fname) < (int)sizeof(p) &&
			     strcmp(a[i].fname, b[i].fname) == 0 && fstat(fds[i], &s1) == 0 &&
			     stat(p, &s2) == 0 && s1.st_ino == s2.st_ino && s1.st_dev == s2.st_dev;
		}
		for (uint32_t p = 0; ok && p < g.npages; p++) {
			gens[p] = -1;
			for (size_t i = n; i-- > 0;) {
				int64_t gen;

				if (!pread_all(fds[i], buf, PAGE, (off_t)p * PAGE)) {
					ok = false;
					break;
				}
				gen = page_gen(buf, p);
				if (gen != -1) {
					gens[p] = gen;
					break;
				}
			}
		}
		for (size_t i = 0; i < opened; i++)
			close(fds[i]);
		if (ok) {
			if (a[0].seq != g.last_base) {
				g.last_base = a[0].seq;
				g.bases_seen++;
			}
			return true;
		}
		g.retries++;
	}
	return false;
}

/* Checks STORE's merge against the model; started_ns: before the read. */
static void check_store(void)
{
	static int64_t *gens;
	static uint64_t buf[WORDS];
	int64_t t = now_ns();

	if (!gens)
		gens = xcalloc(g.npages, sizeof(*gens));
	if (!store_merge(gens, buf)) {
		report("STORE kept changing: no consistent merge in 100 tries");
		return;
	}
	atomic_fetch_add(&g.store_checks, 1);
	for (uint32_t p = 0; p < g.npages; p++)
		judge("STORE", p, gens[p], t, 0, true, g.expect[p]);
}

/*
 * Reads the view through the mount in a fresh open. With a model (the
 * publisher, right after an operation settled for the grace period) the
 * bytes must match it; readers only look for rolled-back generations.
 */
static void check_mount(bool by_model, uint64_t *buf)
{
	char p[4096];
	int64_t t = now_ns();
	int fd;

	snprintf(p, sizeof(p), "%s/%s", g.mnt, g.name);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT && errno != ESTALE)
			report("open %s: %s", p, strerror(errno));
		return;
	}
	for (uint32_t pg = 0; pg < g.npages; pg++) {
		if (!pread_all(fd, buf, PAGE, (off_t)pg * PAGE)) {
			if (errno != ESTALE)
				report("read %s page %u: %s", p, pg, strerror(errno));
			break;
		}
		judge("mount", pg, page_gen(buf, pg), t, g.grace, by_model,
		      by_model ? g.expect[pg] : 0);
	}
	close(fd);
	atomic_fetch_add(&g.mount_checks, 1);
}

static void *reader(void *arg)
{
	uint64_t *buf = xcalloc(WORDS, sizeof(*buf));

	(void)arg;
	while (!atomic_load(&g.stop))
		check_mount(false, buf);
	free(buf);
	return NULL;
}

/* ---- the publisher ---- */

static void model_rebuild(void)
{
	memcpy(g.expect, g.merged, g.npages * sizeof(*g.expect));
	for (unsigned i = 0; i < g.depth; i++)
		for (uint32_t k = 0; k < g.stack[i].npages; k++)
			g.expect[g.stack[i].pages[k]] = g.stack[i].gen;
}

/* Writes a layer under a temporary name and renames it into place. */
static void write_layer(const char *fname, uint32_t gen, const uint32_t *pages,
			uint32_t n, bool full)
{
	static uint64_t buf[WORDS];
	char tmp[4096], dst[4096];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s/.rollrace.tmp", g.store);
	snprintf(dst, sizeof(dst), "%s/%s", g.store, fname);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, (off_t)g.npages * PAGE) < 0)
		die("%s: %s", tmp, strerror(errno));
	for (uint32_t i = 0; i < (full ? g.npages : n); i++) {
		uint32_t p = full ? i : pages[i];

		fill_page(buf, gen, p);
		pwrite_all(fd, buf, PAGE, (off_t)p * PAGE);
	}
	if (close(fd) < 0 || rename(tmp, dst) < 0)
		die("publishing %s: %s", dst, strerror(errno));
}

static void publish(struct rng *r)
{
	struct pub *d = &g.stack[g.depth];
	uint32_t n = 1 + (uint32_t)rng_below(r, 8);
	char fname[512];

	if (g.next_gen >= MAX_GEN)
		die("out of generations");
	d->seq = max_seq() + 1;
	d->gen = g.next_gen++;
	d->npages = n;
	free(d->pages);
	d->pages = xcalloc(n, sizeof(*d->pages));
	for (uint32_t i = 0; i < n; i++)
		d->pages[i] = (uint32_t)rng_below(r, g.npages);
	snprintf(fname, sizeof(fname), "%s.%" PRIu64 ".diff", g.name, d->seq);
	write_layer(fname, d->gen, d->pages, n, false);
	g.depth++;
	g.publishes++;
	model_rebuild();
}

/* Runs argv; returns its exit status (-1 if it died or did not start). */
static int run(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int st;

	/* A refusal (the diff was merged meanwhile) is expected: its message
	 * is shown only with -v. */
	posix_spawn_file_actions_init(&fa);
	if (!g.verbose)
		posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
		die("cannot run %s", argv[0]);
	posix_spawn_file_actions_destroy(&fa);
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid: %s", strerror(errno));
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/*
 * Rolls back the newest diff the chain in STORE has above its base, the
 * way given. Returns true if it reported success.
 */
static bool rollback(enum way w, const struct layer *top)
{
	char path[4096], err[64];
	int ret;

	snprintf(path, sizeof(path), "%s/%s", w == WAY_MOUNT ? g.mnt : g.store,
		 top->fname);
	switch (w) {
	case WAY_TOOL: {
		char *argv[] = { (char *)g.tool, "-q", "-w", "60", path, NULL };

		ret = run(argv);
		break;
	}
	case WAY_FLOCK: {
		char *argv[] = { "/usr/bin/flock", (char *)g.store, "/bin/rm", path, NULL };

		if (access(argv[0], X_OK) != 0)
			argv[0] = "/bin/flock";
		ret = run(argv);
		break;
	}
	default:
		ret = unlink(path) < 0 ? errno : 0;
		if (ret && ret != ENOENT && ret != EBUSY) {
			snprintf(err, sizeof(err), "%s", strerror(ret));
			report("unlink %s: %s", path, err);
		}
		break;
	}
	return ret == 0;
}

/*
 * Folds the model's oldest diffs that STORE's base has merged (seq at or
 * below the base's) into g.merged, once the stack is half full: they can
 * never be rolled back again.
 */
static void fold(uint64_t base_seq)
{
	unsigned k = 0;

	if (g.depth < MAX_STACK / 2)
		return;
	while (k < g.depth && g.stack[k].seq <= base_seq) {
		for (uint32_t i = 0; i < g.stack[k].npages; i++)
			g.merged[g.stack[k].pages[i]] = g.stack[k].gen;
		free(g.stack[k].pages);
		k++;
	}
	memmove(g.stack, g.stack + k, (g.depth - k) * sizeof(*g.stack));
	memset(g.stack + g.depth - k, 0, k * sizeof(*g.stack));
	g.depth -= k;
}

static void step(struct rng *r, unsigned *turn, uint64_t *buf)
{
	struct layer chain[MAX_STACK + 1];
	size_t n = scan_chain(chain, MAX_STACK + 1);
	unsigned above = n ? (unsigned)n - 1 : 0;
	bool roll;

	if (!n)
		die("%s has no base of %s", g.store, g.name);
	fold(chain[0].seq);
	/* Diffs above the base in STORE are the newest of the model's. */
	if (above > g.depth)
		die("STORE has %u diffs above its base, the model %u", above, g.depth);
	if (g.depth >= MAX_STACK - 1)
		die("the model has %u diffs STORE did not merge", g.depth);
	if (above == 0)
		roll = false;
	else if (above >= g.max_depth)
		roll = true;
	else
		roll = rng_below(r, 2);
	if (!roll) {
		publish(r);
	} else {
		const struct layer *top = &chain[n - 1];
		struct pub *d = &g.stack[g.depth - 1];
		enum way w = g.ways[(*turn)++ % g.nways];

		if (d->seq != top->seq)
			die("STORE's newest diff is %s, the model's has seq %" PRIu64,
			    top->fname, d->seq);
		if (rollback(w, top)) {
			atomic_store(&g.rolled_ns[d->gen], now_ns());
			g.depth--;
			g.rollbacks[w]++;
			model_rebuild();
			if (g.verbose)
				printf("rolled back %s (generation %u) by %s\n",
				       top->fname, d->gen, way_names[w]);
		} else {
			g.refused[w]++;	/* merged meanwhile: still in the chain */
		}
	}
	check_store();
	if (rng_below(r, 8) == 0)
		check_mount(false, buf);
}

/* ---- main ---- */

static void parse_ways(char *s)
{
	g.nways = 0;
	for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
		unsigned i;

		for (i = 0; i < NWAYS; i++)
			if (strcmp(tok, way_names[i]) == 0)
				break;
		if (i == NWAYS || g.nways == NWAYS)
			die("-m: unknown or repeated way %s", tok);
		g.ways[g.nways++] = (enum way)i;
	}
	if (!g.nways)
		die("-m: no way given");
}

int main(int argc, char **argv)
{
	pthread_t *th;
	struct rng r;
	uint64_t *buf;
	unsigned turn = 0;
	char ways[] = "tool,flock,mount";
	char *w = ways;
	double end, settle;
	int c;

	while ((c = getopt(argc, argv, "t:s:S:d:p:r:g:m:R:vh")) != -1) {
		switch (c) {
		case 't': g.seconds = atof(optarg); break;
		case 's': g.seed = strtoull(optarg, NULL, 0); break;
		case 'S': g.npages = (uint32_t)strtoul(optarg, NULL, 0); break;
		case 'd': g.max_depth = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'p': g.period_us = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'r': g.readers = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'g': g.grace = atof(optarg) / 1000; break;
		case 'm': w = optarg; break;
		case 'R': g.tool = optarg; break;
		case 'v': g.verbose = true; break;
		default:
			fputs(usage_text, c == 'h' ? stdout : stderr);
			return c == 'h' ? 0 : 2;
		}
	}
	if (argc - optind != 3 || g.npages < 16 || g.npages >= (1u << 20) ||
	    g.max_depth < 1 || g.max_depth >= MAX_STACK) {
		fputs(usage_text, stderr);
		return 2;
	}
	g.store = argv[optind];
	g.mnt = argv[optind + 1];
	g.name = argv[optind + 2];
	parse_ways(w);
	for (unsigned i = 0; i < g.nways; i++)
		if (g.ways[i] == WAY_TOOL && !g.tool)
			die("-m tool needs -R SNAPFS_ROLLBACK");
	if (max_seq() || scan_chain((struct layer[1]){ 0 }, 1))
		die("%s already holds layers of %s", g.store, g.name);

	g.rolled_ns = xcalloc(MAX_GEN, sizeof(*g.rolled_ns));
	g.lost_seen = xcalloc(MAX_GEN, sizeof(*g.lost_seen));
	g.final_seen = xcalloc(MAX_GEN, sizeof(*g.final_seen));
	g.expect = xcalloc(g.npages, sizeof(*g.expect));
	g.merged = xcalloc(g.npages, sizeof(*g.merged));
	buf = xcalloc(WORDS, sizeof(*buf));
	rng_seed(&r, g.seed);
	{
		char base[512];

		snprintf(base, sizeof(base), "%s.0.base", g.name);
		write_layer(base, 0, NULL, 0, true);
	}
	g.next_gen = 1;
	g.t0 = now();
	th = xcalloc(g.readers ? g.readers : 1, sizeof(*th));
	for (unsigned i = 0; i < g.readers; i++)
		if (pthread_create(&th[i], NULL, reader, NULL) != 0)
			die("cannot start a reader");

	end = g.t0 + g.seconds;
	while (now() < end) {
		step(&r, &turn, buf);
		if (g.period_us) {
			struct timespec ts = { 0, (long)rng_below(&r, 2 * g.period_us + 1) * 1000 };

			nanosleep(&ts, NULL);
		}
	}
	/* Let the compactor finish what it started, then look once more:
	 * a lost rollback shows when a compactor's base lands later. */
	settle = now() + 2 * g.grace + 3;
	while (now() < settle) {
		struct timespec ts = { 0, 100 * 1000000L };

		nanosleep(&ts, NULL);
		check_store();
	}
	atomic_store(&g.stop, 1);
	for (unsigned i = 0; i < g.readers; i++)
		pthread_join(th[i], NULL);
	/* The last look: what stays (a plain rm's loss can be transient,
	 * until the compactor withdraws its base). */
	atomic_store(&g.final, true);
	check_store();
	check_mount(true, buf);

	unsigned long long rb = 0, rf = 0;

	for (unsigned i = 0; i < NWAYS; i++) {
		rb += g.rollbacks[i];
		rf += g.refused[i];
	}
	printf("rollrace: %.0f s, %llu publishes, %llu rollbacks (", now() - g.t0,
	       g.publishes, rb);
	for (unsigned i = 0; i < g.nways; i++)
		printf("%s%s %llu", i ? ", " : "", way_names[g.ways[i]],
		       g.rollbacks[g.ways[i]]);
	printf("), %llu refused (merged first), %llu new bases seen, "
	       "%llu store checks, %llu mount checks, lost rollbacks %llu "
	       "(%llu still in the chain at the end), wrong pages %llu\n", rf,
	       g.bases_seen, (unsigned long long)atomic_load(&g.store_checks),
	       (unsigned long long)atomic_load(&g.mount_checks),
	       (unsigned long long)atomic_load(&g.lost),
	       (unsigned long long)atomic_load(&g.lost_final),
	       (unsigned long long)atomic_load(&g.wrong));
	fflush(stdout);
	free(th);
	free(buf);
	free(g.final_seen);
	free(g.lost_seen);
	free((void *)g.rolled_ns);
	free(g.expect);
	free(g.merged);
	return atomic_load(&g.lost) || atomic_load(&g.wrong) ? 1 : 0;
}
