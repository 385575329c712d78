/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * snapfs-diff: turns a full memory image into the next diff of a layered
 * file, for producers whose VMM only writes full dumps. It reads the
 * current chain of NAME straight from its layers (store.h, view.h: the same
 * chain and bytes the daemon serves), compares the image with it page by
 * page, and publishes NAME.<next>.diff holding exactly the pages that
 * differ (zero pages included, as data) the way doc/format.md §2 asks of a
 * producer: written under a dot-name, fsynced, renamed into place without
 * replacing anything, the directory fsynced.
 *
 * Comparison: the view is read 1 MiB at a time and compared with memcmp,
 * which stops at the first difference; only a chunk that differs is
 * compared page by page. Ranges the view serves as zero (holes in every
 * layer) are not read at all. See doc/snapfs-diff.1 for why no digest.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache.h"
#include "dirlock.h"
#include "extent.h"
#include "log.h"
#include "store.h"
#include "view.h"

#define CHUNK (1u << 20)

struct diff_run {
	const char *image, *dir, *name;
	unsigned page;
	bool dry_run, quiet;
	int img, dirfd, out;	/* out: the staging file, or -1 */
	char tmp[320];		/* its name in dir */
	char final[300];
	struct view *v;
	char *chain_sig;	/* the chain's layer names and inodes, to see
				   at publish time that it did not change */
	uint64_t changed, zero_pages;
	char *a, *b;		/* CHUNK-sized buffers: image, view */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: snapfs-diff [options] FULL_IMAGE STORE/DIR/NAME\n\n"
		"Compares FULL_IMAGE with the current content of the layered file\n"
		"NAME and publishes NAME.<next>.diff holding the pages that differ.\n\n"
		"  -n, --dry-run       print how many pages would change, write nothing\n"
		"  -p, --page-size N   page size of the diff (default 4096)\n"
		"  -q, --quiet         print nothing but errors\n"
		"  -h, --help          this text\n"
		"  -V, --version       version\n");
}

/* Reads [off, off + len) of the view into buf (holes as zeros). */
static int view_read(struct view *v, uint64_t off, size_t len, char *buf,
		     bool *all_zero)
{
	struct view_piece p[64];
	size_t n = view_map_read(v, off, len, p, 64);

	*all_zero = true;
	if (n > 64) {
		/* More pieces than fit: read the first half, then the rest. */
		bool z1, z2;
		size_t half = len / 2;
		int ret = view_read(v, off, half, buf, &z1);

		if (ret == 0)
			ret = view_read(v, off + half, len - half, buf + half, &z2);
		*all_zero = z1 && z2;
		return ret;
	}
	for (size_t i = 0; i < n; i++) {
		if (p[i].fd < 0) {
			memset(buf, 0, p[i].len);
		} else {
			*all_zero = false;
			for (size_t done = 0; done < p[i].len;) {
				ssize_t r = pread(p[i].fd, buf + done, p[i].len - done,
						  (off_t)(p[i].off + done));

				if (r <= 0)
					return r < 0 ? -errno : -EIO;
				done += (size_t)r;
			}
		}
		buf += p[i].len;
	}
	return 0;
}

static int read_full(int fd, char *buf, size_t len, uint64_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t r = pread(fd, buf + done, len - done, (off_t)(off + done));

		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		done += (size_t)r;
	}
	return 0;
}

static bool is_zero(const char *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Counts a changed page of the image and writes it into the staging file
 * at off (not in a dry run). */
static int emit_page(struct diff_run *r, const char *page, uint64_t off)
{
	r->changed++;
	if (is_zero(page, r->page))
		r->zero_pages++;
	if (r->dry_run)
		return 0;
	for (size_t done = 0; done < r->page;) {
		ssize_t w = pwrite(r->out, page + done, r->page - done, (off_t)(off + done));

		if (w < 0)
			return -errno;
		done += (size_t)w;
	}
	return 0;
}

/* Compares one chunk of the image with the view; emits its changed pages. */
static int diff_chunk(struct diff_run *r, uint64_t off, size_t len)
{
	bool hole;
	int ret;

	ret = read_full(r->img, r->a, len, off);
	if (ret) {
		fprintf(stderr, "snapfs-diff: %s: read at %llu: %s\n", r->image,
			(unsigned long long)off, strerror(-ret));
		return ret;
	}
	ret = view_read(r->v, off, len, r->b, &hole);
	if (ret) {
		fprintf(stderr, "snapfs-diff: %s/%s: read at %llu: %s\n", r->dir, r->name,
			(unsigned long long)off, strerror(-ret));
		return ret;
	}
	if (hole ? is_zero(r->a, len) : memcmp(r->a, r->b, len) == 0)
		return 0;
	for (size_t i = 0; i < len; i += r->page) {
		size_t n = len - i < r->page ? len - i : r->page;

		if (memcmp(r->a + i, r->b + i, n) == 0)
			continue;
		ret = emit_page(r, r->a + i, off + i);
		if (ret) {
			fprintf(stderr, "snapfs-diff: %s/%s: %s\n", r->dir, r->tmp,
				strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/*
 * The written diff must hold exactly the pages written: a filesystem that
 * allocates more than a page around each write would make the diff hide
 * the base under zeros (doc/format.md §5), one that drops pages of zeros
 * (compression) would let the base show where the image has zeros, and a
 * diff with no hole at all is refused by snapfs.
 */
static int check_written(struct diff_run *r, uint64_t size)
{
	struct extent_map *m;
	const char *why;
	int ret = extent_scan(r->out, size, &m);

	if (ret) {
		fprintf(stderr, "snapfs-diff: %s/%s: cannot map: %s\n", r->dir, r->tmp,
			strerror(-ret));
		return ret;
	}
	why = extent_diff_refusal(m, r->page);
	if (m->data_bytes != r->changed * r->page) {
		fprintf(stderr, "snapfs-diff: %s: the filesystem holds %llu bytes of data "
			"for %llu pages of %u written (%s); nothing published\n", r->dir,
			(unsigned long long)m->data_bytes, (unsigned long long)r->changed,
			r->page, m->data_bytes > r->changed * r->page ?
			"its blocks are larger than a page: the diff would hide the base "
			"under zeros" : "it drops written zeros: the base would show "
			"through");
		ret = -EIO;
	} else if (why) {
		fprintf(stderr, "snapfs-diff: %s: every page differs, and a diff %s; "
			"publish the image as %s's next base instead; nothing published\n",
			r->name, why, r->name);
		ret = -EIO;
	}
	free(m);
	return ret;
}

/* Makes the staging file: NAME.<next>.diff's content goes there first. */
static int open_staging(struct diff_run *r, uint64_t size, const struct stat *base)
{
	snprintf(r->tmp, sizeof(r->tmp), ".%s.snapfs-diff.%d", r->final, (int)getpid());
	r->out = openat(r->dirfd, r->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
			base->st_mode & 0666);
	if (r->out < 0 || ftruncate(r->out, (off_t)size) < 0) {
		fprintf(stderr, "snapfs-diff: %s/%s: %s\n", r->dir, r->tmp, strerror(errno));
		return -errno;
	}
	/* The base's owner, group and mode, where we may: a view opens only
	 * for who may read every layer. */
	if (fchown(r->out, base->st_uid, base->st_gid) < 0 && errno != EPERM)
		return -errno;
	if (fchmod(r->out, base->st_mode & 07777) < 0)
		return -errno;
	return 0;
}

/*
 * A signature of the chain of NAME in the directory as it is now: each
 * layer's name and inode number, base first. Returns a malloc'd string, or
 * NULL with *err set (-errno, or -ESTALE when NAME has no usable chain).
 */
static char *chain_signature(struct diff_run *r, int *err)
{
	struct store_dir *idx;
	const struct store_group *g;
	struct store_chain chain;
	const char *why;
	char *sig = NULL;
	size_t len = 0;
	FILE *f;

	*err = store_dir_scan(r->dirfd, &idx);
	if (*err)
		return NULL;
	g = store_dir_find(idx, r->name);
	if (!g || store_chain_resolve(g, &chain, &why) != 0) {
		store_dir_free(idx);
		*err = -ESTALE;
		return NULL;
	}
	f = open_memstream(&sig, &len);
	for (size_t i = 0; f && i < chain.nlayers; i++) {
		struct stat st;

		if (fstatat(r->dirfd, chain.layers[i]->fname, &st, AT_SYMLINK_NOFOLLOW) < 0)
			st.st_ino = 0;
		fprintf(f, "%s %llu\n", chain.layers[i]->fname,
			(unsigned long long)st.st_ino);
	}
	if (!f || fclose(f) != 0) {
		free(sig);
		sig = NULL;
		*err = -ENOMEM;
	}
	store_chain_free(&chain);
	store_dir_free(idx);
	return sig;
}

/*
 * Under the directory's rollback lock (dirlock.h): the chain must still be
 * the one compared with (a rollback, another publish or a compaction
 * meanwhile makes the diff wrong or its seq taken), then the rename.
 */
static int publish_locked(struct diff_run *r)
{
	int err = 0;
	char *now = chain_signature(r, &err);

	if (!now || strcmp(now, r->chain_sig) != 0) {
		fprintf(stderr, "snapfs-diff: %s/%s: the chain changed while the image "
			"was compared (a publish, rollback or compaction); nothing "
			"published: run again\n", r->dir, r->name);
		free(now);
		return err ? err : -ESTALE;
	}
	free(now);
	/* Never over a layer someone else published meanwhile. */
	if (renameat2(r->dirfd, r->tmp, r->dirfd, r->final, RENAME_NOREPLACE) < 0) {
		fprintf(stderr, "snapfs-diff: %s/%s: %s\n", r->dir, r->final, strerror(errno));
		return -errno;
	}
	r->tmp[0] = '\0';
	return 0;
}

static int publish(struct diff_run *r)
{
	struct dirlock lk;
	int ret;

	if (fsync(r->out) < 0) {
		fprintf(stderr, "snapfs-diff: %s/%s: fsync: %s\n", r->dir, r->tmp,
			strerror(errno));
		return -errno;
	}
	ret = dirlock_acquire(r->dirfd, DIRLOCK_WAIT_FOREVER, NULL, &lk);
	if (ret) {
		fprintf(stderr, "snapfs-diff: %s: rollback lock: %s\n", r->dir, strerror(-ret));
		return ret;
	}
	ret = publish_locked(r);
	dirlock_release(&lk);
	if (ret)
		return ret;
	if (fsync(r->dirfd) < 0) {
		fprintf(stderr, "snapfs-diff: %s: fsync: %s (%s is in place)\n", r->dir,
			strerror(errno), r->final);
		return -errno;
	}
	return 0;
}

/* Opens NAME's current chain as a view; names the next diff. */
static int open_view(struct diff_run *r, struct view_env *env, struct stat *base)
{
	struct store_dir *idx;
	const struct store_group *g;
	struct store_chain chain;
	const char *why = NULL;
	char cause[512] = "";
	uint64_t top = 0;
	int ret = store_dir_scan(r->dirfd, &idx);

	if (ret) {
		fprintf(stderr, "snapfs-diff: %s: %s\n", r->dir, strerror(-ret));
		return ret;
	}
	g = store_dir_find(idx, r->name);
	if (!g) {
		fprintf(stderr, "snapfs-diff: %s: no layered file %s (no %s.<seq>.base)\n",
			r->dir, r->name, r->name);
		store_dir_free(idx);
		return -ENOENT;
	}
	ret = store_chain_resolve(g, &chain, &why);
	if (ret) {
		fprintf(stderr, "snapfs-diff: %s/%s: %s\n", r->dir, r->name,
			why ? why : strerror(-ret));
		store_dir_free(idx);
		return ret;
	}
	for (size_t i = 0; i < g->nlayers; i++)	/* above every layer, also superseded */
		if (g->layers[i].seq > top)
			top = g->layers[i].seq;
	snprintf(r->final, sizeof(r->final), "%s.%llu.diff", r->name,
		 (unsigned long long)top + 1);
	r->chain_sig = chain_signature(r, &ret);
	if (!r->chain_sig) {
		fprintf(stderr, "snapfs-diff: %s/%s: %s\n", r->dir, r->name, strerror(-ret));
		store_chain_free(&chain);
		store_dir_free(idx);
		return ret;
	}
	ret = view_open(env, r->dirfd, &chain, &r->v, cause, sizeof(cause));
	if (ret == 0 && fstatat(r->dirfd, chain.layers[0]->fname, base,
				AT_SYMLINK_NOFOLLOW) < 0)
		ret = -errno;
	if (ret)
		fprintf(stderr, "snapfs-diff: %s/%s: %s\n", r->dir, r->name,
			cause[0] ? cause : strerror(-ret));
	store_chain_free(&chain);
	store_dir_free(idx);
	return ret;
}

static int run(struct diff_run *r, struct view_env *env)
{
	struct stat ist, base;
	int ret;

	if (fstat(r->img, &ist) < 0)
		return -errno;
	ret = open_view(r, env, &base);
	if (ret)
		return ret;
	if ((uint64_t)ist.st_size != r->v->size) {
		fprintf(stderr, "snapfs-diff: %s: size %llu differs from %s/%s's %llu; "
			"nothing published\n", r->image, (unsigned long long)ist.st_size,
			r->dir, r->name, (unsigned long long)r->v->size);
		return -EINVAL;
	}
	if (!r->dry_run && (ret = open_staging(r, r->v->size, &base)) != 0)
		return ret;
	for (uint64_t off = 0; off < r->v->size; off += CHUNK) {
		size_t len = r->v->size - off < CHUNK ? (size_t)(r->v->size - off) : CHUNK;

		ret = diff_chunk(r, off, len);
		if (ret)
			return ret;
	}
	if (r->dry_run) {
		printf("%s/%s: %llu pages would change (%llu of them to zeros) in %s\n",
		       r->dir, r->name, (unsigned long long)r->changed,
		       (unsigned long long)r->zero_pages, r->final);
		return 0;
	}
	if (r->changed == 0) {
		if (!r->quiet)
			printf("%s/%s: no page differs; nothing published\n", r->dir, r->name);
		return 0;
	}
	ret = check_written(r, r->v->size);
	if (ret == 0)
		ret = publish(r);
	if (ret == 0 && !r->quiet)
		printf("%s/%s: published with %llu changed pages (%llu of them zeros)\n",
		       r->dir, r->final, (unsigned long long)r->changed,
		       (unsigned long long)r->zero_pages);
	return ret;
}

int main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "dry-run", no_argument, NULL, 'n' },
		{ "page-size", required_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct diff_run r = { .page = 4096, .img = -1, .dirfd = -1, .out = -1 };
	struct cache *cache = NULL;
	struct view_env *env = NULL;
	char *path1 = NULL, *path2 = NULL;
	int c, ret = -ENOMEM;

	snapfs_log_set_ident("snapfs-diff");
	while ((c = getopt_long(argc, argv, "np:qhV", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			r.dry_run = true;
			break;
		case 'p':
			r.page = (unsigned)strtoul(optarg, NULL, 10);
			if (r.page < 512 || r.page > CHUNK || (r.page & (r.page - 1))) {
				fprintf(stderr, "snapfs-diff: --page-size %s: a power of "
					"two from 512 to 1 MiB\n", optarg);
				return 2;
			}
			break;
		case 'q':
			r.quiet = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("snapfs-diff %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 2) {
		usage(stderr);
		return 2;
	}
	r.image = argv[optind];
	path1 = strdup(argv[optind + 1]);
	path2 = strdup(argv[optind + 1]);
	r.a = malloc(CHUNK);
	r.b = malloc(CHUNK);
	cache = cache_new((size_t)cache_default_mb() << 20);
	env = cache ? view_env_new(cache, r.page) : NULL;
	if (!path1 || !path2 || !r.a || !r.b || !env) {
		fprintf(stderr, "snapfs-diff: out of memory\n");
		goto out;
	}
	r.dir = dirname(path1);
	r.name = basename(path2);
	r.img = open(r.image, O_RDONLY | O_CLOEXEC);
	if (r.img < 0) {
		fprintf(stderr, "snapfs-diff: %s: %s\n", r.image, strerror(errno));
		goto out;
	}
	r.dirfd = open(r.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r.dirfd < 0) {
		fprintf(stderr, "snapfs-diff: %s: %s\n", r.dir, strerror(errno));
		goto out;
	}
	ret = run(&r, env);
out:
	if (r.out >= 0)
		close(r.out);
	if (r.tmp[0] && r.dirfd >= 0 && !r.dry_run)
		unlinkat(r.dirfd, r.tmp, 0);	/* not published: leave nothing */
	view_put(r.v);
	if (r.dirfd >= 0)
		close(r.dirfd);
	if (r.img >= 0)
		close(r.img);
	view_env_free(env);
	cache_free(cache);
	free(r.a);
	free(r.b);
	free(r.chain_sig);
	free(path1);
	free(path2);
	return ret ? 1 : 0;
}
