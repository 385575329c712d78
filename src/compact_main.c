/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapfs-compact: compacts the chains of an unmounted STORE with the same
 * code the daemon's background compactor uses, printing one line per
 * chain; --dry-run only says what it would do. On a terminal (stderr) and
 * without -q it also keeps one progress line up to date: chains done of
 * the total, MiB written, rate.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "compact.h"
#include "log.h"
#include "store.h"

/* The progress line (stderr, a terminal only). */
struct progress {
	bool on;
	unsigned done, total;	/* chains compacted or tried; to compact */
	uint64_t bytes;		/* written by the chains done */
	double start, last;	/* seconds (CLOCK_MONOTONIC) */
};

struct run {
	struct compact_opts opts;
	struct cache *cache;
	int quiet;
	unsigned chains, compacted, skipped, failed;
	struct progress prog;
};

/* How often the progress line is redrawn at most, in seconds. */
#define PROGRESS_INTERVAL 0.2

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Redraws the progress line with bytes written by the current chain;
 * force draws even within PROGRESS_INTERVAL of the last time. */
static void progress_draw(struct progress *p, uint64_t bytes, bool force)
{
	double t = now_s(), mib = (double)(p->bytes + bytes) / (1 << 20);

	if (!force && t - p->last < PROGRESS_INTERVAL)
		return;
	p->last = t;
	fprintf(stderr, "\r\033[Ksnapfs-compact: chains %u/%u, %.1f MiB written, %.1f MiB/s",
		p->done, p->total, mib, t > p->start ? mib / (t - p->start) : 0.0);
	fflush(stderr);
}

/* compact_opts.progress: called by the copier after every piece. */
static void on_progress(void *ctx, uint64_t bytes)
{
	progress_draw(ctx, bytes, false);
}

/* Erases the progress line, before a line of output takes its place. */
static void progress_clear(const struct progress *p)
{
	if (p->on)
		fprintf(stderr, "\r\033[K");
}

/* Chains that need a compaction in directory dirfd and below (the total
 * the progress line counts towards); errors are left to the real pass. */
static unsigned count_work(const struct run *r, int dirfd)
{
	struct store_dir *idx;
	struct dirent *de;
	unsigned n = 0;
	DIR *d;
	int fd;

	if (store_dir_scan(dirfd, &idx) != 0)
		return 0;
	for (size_t i = 0; i < idx->ngroups; i++) {
		struct store_chain chain;
		const char *why;

		if (store_chain_resolve(&idx->groups[i], &chain, &why) != 0)
			continue;
		n += compact_plan(&chain, &r->opts) > 0;
		store_chain_free(&chain);
	}
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	while (d && (de = readdir(d))) {
		int sfd;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    store_dir_find(idx, de->d_name))
			continue;
		sfd = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd >= 0) {
			n += count_work(r, sfd);
			close(sfd);
		}
	}
	if (d)
		closedir(d);
	else if (fd >= 0)
		close(fd);
	store_dir_free(idx);
	return n;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: snapfs-compact [options] STORE\n\n"
		"Merges the base and oldest diffs of every chain in STORE deeper than\n"
		"the threshold into a new base, keeping the newest diffs. STORE must\n"
		"not be mounted by snapfs (the daemon compacts by itself).\n\n"
		"  -t, --threshold N   compact chains with more than N diffs (default 8)\n"
		"  -k, --keep K        diffs that stay above the new base (default 2)\n"
		"  -r, --rate MB       write at most MB MiB/s (default: unlimited)\n"
		"  -p, --page-size N   page size holes must resolve to, as the daemon's\n"
		"                      -o page_size (default 4096)\n"
		"  -n, --dry-run       print what would be done, change nothing (the\n"
		"                      layers are read and checked as a real run does)\n"
		"  -q, --quiet         print only errors and the summary\n"
		"  -h, --help          this text\n"
		"  -V, --version       version\n");
}

static void do_dir(struct run *r, int dirfd, const char *path);

static int parse_number(const char *s, unsigned long long *out)
{
	char *end;

	errno = 0;
	if (*s < '0' || *s > '9')
		return -1;
	*out = strtoull(s, &end, 10);
	return errno || *end ? -1 : 0;
}

static void do_chain(struct run *r, int dirfd, const char *path,
		     const struct store_group *g)
{
	struct store_chain chain;
	struct compact_result res;
	const char *why = NULL;
	char head[1024], unusable_why[512] = "";
	bool line, unusable;
	uint64_t old_base;
	size_t nmerge;
	int ret;

	r->chains++;
	ret = store_chain_resolve(g, &chain, &why);
	if (ret) {
		printf("%s%s%s: skipped: %s\n", path, *path ? "/" : "", g->name,
		       why ? why : strerror(-ret));
		return;
	}
	nmerge = compact_plan(&chain, &r->opts);
	if (!nmerge) {
		/* Layers below the base are superseded: the compactor's to
		 * remove (also those a crash left after a compaction) — but
		 * only below a chain that opens cleanly: below a broken one
		 * they are the file's last good data. */
		char cause[512];

		if (g->nlayers > chain.nlayers &&
		    (ret = compact_check_chain(dirfd, &chain, r->cache, r->opts.page_size,
					       cause, sizeof(cause))) != 0) {
			fprintf(stderr, "snapfs-compact: %s%s%s: not removing superseded "
				"layers: the current chain is unusable: %s\n", path,
				*path ? "/" : "", g->name, cause[0] ? cause : strerror(-ret));
			r->failed++;
		} else if (!r->opts.dry_run) {
			int n = compact_prune(dirfd, g, chain.layers[0]->seq);

			if (n > 0 && !r->quiet)
				printf("%s%s%s: removed %d superseded layer(s)\n", path,
				       *path ? "/" : "", g->name, n);
		}
		store_chain_free(&chain);
		return;
	}
	old_base = chain.layers[nmerge - 1]->seq;	/* the new base's seq */
	snprintf(head, sizeof(head),
		 "%s%s%s: %s %zu layers (%s .. %s) into %s.%llu.base, keeping %zu diffs",
		 path, *path ? "/" : "", g->name,
		 r->opts.dry_run ? "would merge" : "merging", nmerge,
		 chain.layers[0]->fname, chain.layers[nmerge - 1]->fname, g->name,
		 (unsigned long long)chain.layers[nmerge - 1]->seq,
		 chain.nlayers - nmerge);
	/* With the progress line, the chain's line is printed whole at its
	 * end, where it takes the progress line's place (which -q has not). */
	line = !r->quiet || r->opts.dry_run;
	if (line && !r->prog.on)
		fputs(head, stdout);
	fflush(stdout);
	if (r->prog.on)
		progress_draw(&r->prog, 0, true);
	/* Only a chain that opens cleanly is compacted, as in the daemon
	 * (doc/design.md §10.5): one the daemon refuses stays refused, also
	 * for a layer above the merge point (compact_chain() checks the
	 * layers it merges). */
	ret = compact_check_chain(dirfd, &chain, r->cache, r->opts.page_size,
				  unusable_why, sizeof(unusable_why));
	unusable = ret != 0;
	if (unusable)
		memset(&res, 0, sizeof(res));
	else
		ret = compact_chain(dirfd, g->name, &chain, nmerge, r->cache, &r->opts, &res);
	if (r->prog.on) {
		r->prog.done++;
		if (ret == 0)
			r->prog.bytes += res.bytes_copied;
		progress_clear(&r->prog);
		fputs(head, stdout);
	}
	if (unusable) {
		if (line)
			printf(": FAILED\n");
		fprintf(stderr, "snapfs-compact: %s%s%s: the chain is unusable: %s; "
			"the store is unchanged\n", path, *path ? "/" : "", g->name,
			unusable_why[0] ? unusable_why : strerror(-ret));
		r->failed++;
	} else if (ret == -EALREADY) {
		/* Another compactor (a daemon, here or on another host) has
		 * this chain: its work, not a failure. */
		if (!r->quiet)
			printf(": skipped: held by another compactor\n");
		r->skipped++;
	} else if (ret == -EAGAIN || ret == -EBUSY) {
		/* A rollback came first, or holds the lock: not a failure. */
		if (!r->quiet && res.withdrawn)
			printf(": withdrawn: the newest merged diff was deleted without "
			       "the rollback lock; the store reads as rolled back\n");
		else if (!r->quiet)
			printf(": %s; the store is unchanged\n", ret == -EAGAIN ?
			       "abandoned: a merged layer changed meanwhile (a rollback)" :
			       "postponed: the directory's rollback lock stayed held");
		r->skipped++;
	} else if (ret == -EXDEV) {
		if (!r->quiet)
			printf(": abandoned\n");
		fprintf(stderr, "snapfs-compact: %s%s%s: the directory was moved out of "
			"STORE during the compaction; nothing was published there\n",
			path, *path ? "/" : "", g->name);
		r->failed++;
	} else if (ret == -EPERM && res.refused[0]) {
		if (!r->quiet)
			printf(": REFUSED\n");
		fprintf(stderr, "snapfs-compact: %s%s%s: compaction refused: %s; "
			"the store is unchanged\n", path, *path ? "/" : "", g->name,
			res.refused);
		r->failed++;
	} else if (ret) {
		if (!r->quiet)
			printf(": FAILED\n");
		fprintf(stderr, "snapfs-compact: %s%s%s: %s%s\n", path, *path ? "/" : "",
			g->name, strerror(-ret), res.published ?
			" (after the new base was in place: content unchanged, "
			"superseded layers remain)" : "; the store is unchanged");
		r->failed++;
	} else if (r->opts.dry_run) {
		printf("\n");
		r->compacted++;
	} else {
		compact_prune(dirfd, g, old_base);
		r->compacted++;
		if (!r->quiet)
			printf(": done, %.1f MiB written in %u ranges, %.2f s (%s, %s)\n",
			       (double)res.bytes_copied / (1 << 20), (unsigned)res.ranges,
			       res.seconds, res.reflinked ? "base reflinked" : "base copied",
			       compact_method_name(res.method));
	}
	store_chain_free(&chain);
}

static void do_dir(struct run *r, int dirfd, const char *path)
{
	struct store_dir *idx;
	DIR *d;
	struct dirent *de;
	int fd, ret;

	if (!r->opts.dry_run) {
		ret = compact_cleanup(dirfd);
		if (ret > 0)
			printf("%s: removed %d staging file(s) left by an interrupted compaction\n",
			       *path ? path : ".", ret);
	}
	ret = store_dir_scan(dirfd, &idx);
	if (ret) {
		/* Reported, counted as a failure: never skipped in silence. */
		fprintf(stderr, "snapfs-compact: %s: %s\n", *path ? path : ".", strerror(-ret));
		r->failed++;
		return;
	}
	for (size_t i = 0; i < idx->ngroups; i++)
		do_chain(r, dirfd, path, &idx->groups[i]);

	/* Subdirectories, never through a symlink. */
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		store_dir_free(idx);
		return;
	}
	while ((de = readdir(d))) {
		char *sub;
		int sfd;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    store_dir_find(idx, de->d_name))
			continue;
		sfd = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0) {
			if (errno != ENOTDIR && errno != ELOOP) {
				fprintf(stderr, "snapfs-compact: %s%s%s: %s\n", path,
					*path ? "/" : "", de->d_name, strerror(errno));
				r->failed++;
			}
			continue;	/* not a directory */
		}
		if (asprintf(&sub, "%s%s%s", path, *path ? "/" : "", de->d_name) >= 0) {
			do_dir(r, sfd, sub);
			free(sub);
		}
		close(sfd);
	}
	closedir(d);
	store_dir_free(idx);
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "threshold", required_argument, NULL, 't' },
		{ "keep", required_argument, NULL, 'k' },
		{ "rate", required_argument, NULL, 'r' },
		{ "page-size", required_argument, NULL, 'p' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct run r = { .opts = { .threshold = 8, .keep = 2 } };
	unsigned long long v;
	int c, fd;

	snapfs_log_set_ident("snapfs-compact");

	while ((c = getopt_long(argc, argv, "t:k:r:p:nqhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (parse_number(optarg, &v) < 0 || v < 512 || v > 1 << 20 ||
			    (v & (v - 1))) {
				fprintf(stderr, "snapfs-compact: -p %s: the page size must be a "
					"power of two from 512 to 1048576\n", optarg);
				return 2;
			}
			r.opts.page_size = (unsigned)v;
			break;
		case 't':
		case 'k':
		case 'r':
			if (parse_number(optarg, &v) < 0 || v > (c == 'r' ? 1ULL << 40 : 1ULL << 20)) {
				fprintf(stderr, "snapfs-compact: -%c %s: not a number in range\n",
					c, optarg);
				return 2;
			}
			if (c == 't')
				r.opts.threshold = (unsigned)v;
			else if (c == 'k')
				r.opts.keep = (unsigned)v;
			else
				r.opts.rate = v << 20;
			break;
		case 'n':
			r.opts.dry_run = true;
			break;
		case 'q':
			r.quiet = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("snapfs-compact %s\n", PACKAGE_VERSION);
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
	if (r.opts.keep > r.opts.threshold) {
		fprintf(stderr, "snapfs-compact: --keep must not exceed --threshold\n");
		return 2;
	}
	fd = open(argv[optind], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "snapfs-compact: %s: %s\n", argv[optind], strerror(errno));
		return 1;
	}
	{
		/* Each directory must still lie beneath STORE when a new base
		 * is published in it (one moved out meanwhile is left alone). */
		struct stat st;

		if (fstat(fd, &st) == 0) {
			r.opts.store_dev = st.st_dev;
			r.opts.store_ino = st.st_ino;
		}
	}
	r.cache = cache_new((size_t)cache_default_mb() << 20);
	if (!r.cache) {
		close(fd);
		return 1;
	}
	r.prog.on = !r.quiet && !r.opts.dry_run && isatty(STDERR_FILENO);
	if (r.prog.on) {
		r.prog.total = count_work(&r, fd);
		r.prog.start = now_s();
		r.opts.progress = on_progress;
		r.opts.progress_ctx = &r.prog;
	}
	do_dir(&r, fd, "");
	printf("snapfs-compact: %u chains, %u %s, %u failed", r.chains, r.compacted,
	       r.opts.dry_run ? "to compact (dry run)" : "compacted", r.failed);
	if (r.skipped)
		printf(", %u skipped for a rollback", r.skipped);
	printf("\n");
	cache_free(r.cache);
	close(fd);
	return r.failed ? 1 : 0;
}
