/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Layer names, directory indexes and chain resolution (doc/format.md §2).
 *
 * A directory is indexed in one pass: every entry whose name has the layer
 * shape is put in the group of its NAME, groups are sorted by NAME, and each
 * group's layers by seq, and the NAMEs are hashed. A lookup is then one
 * probe of the hash, so a directory of thousands of snapshots costs one
 * scan, and only when it is first used; a listing, which asks whether each
 * of its entries is a NAME, costs a hash probe per entry.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "store.h"

bool store_parse_name(const char *fname, struct store_name *out)
{
	size_t len = strlen(fname);
	const char *kind, *seq, *p;
	uint64_t v = 0;
	bool overflow = false;

	if (len < 7)	/* "N.0.base" is the shortest: 8 */
		return false;
	kind = fname + len - 5;
	if (kind[0] != '.')
		return false;
	if (strcmp(kind + 1, "base") == 0)
		out->kind = STORE_BASE;
	else if (strcmp(kind + 1, "diff") == 0)
		out->kind = STORE_DIFF;
	else
		return false;

	/* Walk back over the digits of <seq>. */
	p = kind;
	while (p > fname && p[-1] >= '0' && p[-1] <= '9')
		p--;
	seq = p;
	if (seq == kind)		/* no digits */
		return false;
	if (seq - fname < 2 || seq[-1] != '.')	/* need ".<seq>" and NAME */
		return false;
	/* NAME "." or ".." ("..1.base", "...1.diff") would shadow the
	 * directory's own entries: those are plain files. */
	if (fname[0] == '.' && (seq - fname == 2 ||
	    (seq - fname == 3 && fname[1] == '.')))
		return false;

	for (p = seq; p < kind; p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			v = v * 10 + d;
	}
	out->name_len = (size_t)(seq - 1 - fname);
	out->seq = overflow ? UINT64_MAX : v;
	out->overflow = overflow;
	return true;
}

/*
 * An index being built (store_dir_scan(), store_dir_from_names()): the
 * entries as they come, and each layer file put in its NAME's group at
 * once, by a hash of the NAMEs, so that building it costs a pass over
 * the entries while a big directory is still being read (below), and no
 * sort of the whole directory: a sort of the parsed names was most of a
 * 100,000-name directory's first listing. Groups come in the order of
 * their NAME's first layer in the directory.
 *
 * Names are packed in one block (one allocation for a directory of any
 * size). It moves as it grows, so until the index is final an entry's
 * .name and a group's .name are offsets into it (a group's: its first
 * layer's name, of which NAME is the first .name_len bytes). The groups
 * array becomes the index's: its pages were touched while the directory
 * was being read.
 */
#define OFFSET_OF(p) ((uintptr_t)(p))
#define AS_OFFSET(off) ((char *)(uintptr_t)(off))

struct builder {
	char *names;
	size_t used, room;
	struct store_entry *ents;
	size_t n, cap;
	struct store_group *groups;
	size_t ngroups, gcap;
	struct store_slot *slots;	/* at most half full */
	size_t mask;
	size_t nlayers, nbytes;	/* layers, and NAMEs' bytes with their NULs */
};

/* A slot table of at least 2 * n slots (at most half full), or NULL. */
static struct store_slot *slots_alloc(size_t n, size_t *mask)
{
	size_t cap = 16;

	while (cap < 2 * n)
		cap *= 2;
	*mask = cap - 1;
	return calloc(cap, sizeof(struct store_slot));
}

/* Makes room for one more element in *arr, of *cap elements of size. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
	size_t c = *cap ? *cap * 2 : 64;
	void *p;

	if (n < *cap)
		return 0;
	p = realloc(*arr, c * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = c;
	return 0;
}

/* The table made again for n groups (n >= b->ngroups). */
static int builder_rehash(struct builder *b, size_t n)
{
	size_t mask;
	struct store_slot *slots = slots_alloc(n, &mask);

	if (!slots)
		return -ENOMEM;
	for (size_t g = 0; g < b->ngroups; g++) {
		uint64_t h = XXH64(b->names + OFFSET_OF(b->groups[g].name),
				   b->groups[g].name_len, 0);
		size_t s = (size_t)h & mask;

		while (slots[s].group)
			s = (s + 1) & mask;
		slots[s] = (struct store_slot){ .group = (uint32_t)g + 1,
						.tag = (uint32_t)(h >> 32) };
	}
	free(b->slots);
	b->slots = slots;
	b->mask = mask;
	return 0;
}

/* The group of a layer file named name with sn parsed from it, added if
 * new. Returns its index + 1, or 0 if memory ran out. */
static uint32_t builder_group(struct builder *b, const char *name,
			      const struct store_name *sn, size_t off)
{
	uint64_t h = XXH64(name, sn->name_len, 0);
	size_t s;

	for (s = (size_t)h & b->mask; b->slots[s].group; s = (s + 1) & b->mask) {
		const struct store_group *g = &b->groups[b->slots[s].group - 1];

		if (b->slots[s].tag == (uint32_t)(h >> 32) && g->name_len == sn->name_len &&
		    memcmp(b->names + OFFSET_OF(g->name), name, sn->name_len) == 0)
			return b->slots[s].group;
	}
	if (sn->name_len > UINT32_MAX || b->ngroups >= UINT32_MAX / 2)
		return 0;
	if (2 * (b->ngroups + 1) > b->mask + 1) {
		if (builder_rehash(b, b->ngroups + 1))
			return 0;
		for (s = (size_t)h & b->mask; b->slots[s].group; s = (s + 1) & b->mask)
			;
	}
	if (grow((void **)&b->groups, &b->gcap, b->ngroups, sizeof(*b->groups)))
		return 0;
	b->groups[b->ngroups++] = (struct store_group){ .name = AS_OFFSET(off),
							.name_len = (uint32_t)sn->name_len };
	b->slots[s] = (struct store_slot){ .group = (uint32_t)b->ngroups,
					   .tag = (uint32_t)(h >> 32) };
	b->nbytes += sn->name_len + 1;
	return (uint32_t)b->ngroups;
}

static int builder_add(struct builder *b, const char *name, unsigned char type,
		       uint64_t ino)
{
	size_t len = strlen(name) + 1, off = b->used;
	struct store_name sn;
	uint32_t g = 0;

	if (grow((void **)&b->ents, &b->cap, b->n, sizeof(*b->ents)))
		return -ENOMEM;
	if (b->room - b->used < len) {
		size_t room = b->room ? b->room : 4096;
		char *nn;

		while (room - b->used < len)
			room *= 2;
		nn = realloc(b->names, room);
		if (!nn)
			return -ENOMEM;
		b->names = nn;
		b->room = room;
	}
	memcpy(b->names + off, name, len);
	b->used += len;
	if (store_parse_name(name, &sn)) {
		g = builder_group(b, name, &sn, off);
		if (!g)
			return -ENOMEM;
		b->groups[g - 1].nlayers++;
		b->nlayers++;
	}
	b->ents[b->n++] = (struct store_entry){ .name = AS_OFFSET(off), .ino = ino,
						.d_type = type, .group = g };
	return 0;
}

static int builder_init(struct builder *b, size_t hint)
{
	*b = (struct builder){ 0 };
	b->slots = slots_alloc(hint, &b->mask);
	return b->slots ? 0 : -ENOMEM;
}

static void builder_free(struct builder *b)
{
	free(b->names);
	free(b->ents);
	free(b->groups);
	free(b->slots);
}

/* The order of a group's layers: seq, then bases first, then the file
 * name (two layers with one seq are an error that names both in order). */
static int layer_cmp(const struct store_layer *x, const struct store_layer *y)
{
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	if (x->kind != y->kind)
		return x->kind == STORE_BASE ? -1 : 1;
	return strcmp(x->fname, y->fname);
}

static int layer_qcmp(const void *a, const void *b)
{
	return layer_cmp(a, b);
}

/* Sorts a group's layers: most groups have a handful, already in order. */
static void sort_layers(struct store_layer *l, size_t n)
{
	if (n > 32) {
		qsort(l, n, sizeof(*l), layer_qcmp);
		return;
	}
	for (size_t i = 1; i < n; i++) {
		struct store_layer x = l[i];
		size_t j = i;

		for (; j > 0 && layer_cmp(&l[j - 1], &x) > 0; j--)
			l[j] = l[j - 1];
		l[j] = x;
	}
}

uint64_t store_name_hash(const char *name)
{
	return XXH64(name, strlen(name), 0);
}

/*
 * The index b built, which it takes (freed either way): the groups'
 * NAMEs copied into one more block, their layers laid out group by group
 * in one array and sorted within each group, the entries named like a
 * NAME marked.
 */
static int builder_finish(struct builder *b, struct store_dir **out)
{
	struct store_dir *dir;
	bool layer_like = false;	/* a NAME looks like a layer file */
	size_t nlayers = 0, nbytes = 0, i;
	int ret = -ENOMEM;

	/* The table was sized by a guess at the entries; where deep chains
	 * share few NAMEs, it is made again at its right size. */
	if (b->mask + 1 > 16 && b->mask + 1 > 8 * b->ngroups && builder_rehash(b, b->ngroups)) {
		builder_free(b);
		return -ENOMEM;
	}
	dir = calloc(1, sizeof(*dir));
	if (!dir) {
		builder_free(b);
		return -ENOMEM;
	}
	dir->refs = 1;
	dir->names = b->names;
	dir->entries = b->ents;
	dir->nentries = b->n;
	dir->slots = b->slots;
	dir->mask = b->mask;
	b->names = NULL;
	b->ents = NULL;
	b->slots = NULL;
	for (i = 0; i < dir->nentries; i++)
		dir->entries[i].name = dir->names + OFFSET_OF(dir->entries[i].name);

	dir->group_names = malloc(b->nbytes ? b->nbytes : 1);
	dir->layers = malloc((b->nlayers ? b->nlayers : 1) * sizeof(*dir->layers));
	if (!dir->group_names || !dir->layers)
		goto fail;
	for (size_t g = 0; g < b->ngroups; g++) {
		struct store_group *grp = &b->groups[g];
		uint32_t len = grp->name_len;

		memcpy(dir->group_names + nbytes, dir->names + OFFSET_OF(grp->name), len);
		dir->group_names[nbytes + len] = '\0';
		grp->name = dir->group_names + nbytes;
		nbytes += len + 1;
		grp->layers = dir->layers + nlayers;
		nlayers += grp->nlayers;
		grp->nlayers = 0;	/* counts again as they are laid out */
		layer_like = layer_like || (len >= 5 &&
			(memcmp(grp->name + len - 5, ".base", 5) == 0 ||
			 memcmp(grp->name + len - 5, ".diff", 5) == 0));
	}
	/* The builder's groups become the index's (never NULL, even empty). */
	dir->groups = b->groups ? b->groups : calloc(1, sizeof(*dir->groups));
	dir->ngroups = b->ngroups;
	b->groups = NULL;
	if (!dir->groups)
		goto fail;
	for (i = 0; i < dir->nentries; i++) {
		const struct store_entry *e = &dir->entries[i];
		struct store_group *grp;
		struct store_name sn;

		if (!e->group)
			continue;
		grp = &dir->groups[e->group - 1];
		store_parse_name(e->name, &sn);
		grp->layers[grp->nlayers++] = (struct store_layer){
			.fname = (char *)e->name, .seq = sn.seq, .kind = sn.kind,
			.overflow = sn.overflow, .d_type = e->d_type,
		};
	}
	for (size_t g = 0; g < dir->ngroups; g++)
		sort_layers(dir->groups[g].layers, dir->groups[g].nlayers);

	/* An entry called like a NAME is hidden by it. A layer file can be
	 * only where a NAME looks like a layer file ("m.1.base" of
	 * "m.1.base.2.diff"): without such NAMEs, layer files are not looked
	 * up. */
	for (i = 0; i < dir->nentries; i++) {
		struct store_entry *e = &dir->entries[i];
		const struct store_group *g;

		if (e->group && !layer_like)
			continue;
		g = store_dir_find(dir, e->name);
		if (!g)
			continue;
		e->named = true;
		if (!e->group)
			dir->groups[g - dir->groups].shadows_plain = true;
	}
	ret = 0;
	*out = dir;
	dir = NULL;
fail:
	builder_free(b);
	store_dir_free(dir);
	return ret;
}

/*
 * Reading a big directory: getdents64 waits on the disk block by block
 * when the directory is cold, and the index's own work (copying names,
 * parsing them, the hash, first touches of its arrays) waited for it
 * before. From SCAN_THREAD_MIN bytes of directory, a reader thread calls
 * getdents64 and hands over each buffer, and the caller adds the entries
 * of one while the next is read. Smaller directories are read by the
 * caller, in the same buffers.
 */
#define SCAN_BUF (64u << 10)
#define SCAN_THREAD_MIN (128 << 10)

struct scan_buf {
	struct scan_buf *next;
	size_t len;
	char data[SCAN_BUF];
};

struct scan_reader {
	int fd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct scan_buf *head, **tail;	/* read, not yet taken */
	bool done, stop;
	int err;			/* the read's -errno */
};

/* Reads the next buffer of fd: its length (0 at the end), or -errno. */
static ssize_t scan_read(int fd, struct scan_buf *sb)
{
	ssize_t n = getdents64(fd, sb->data, sizeof(sb->data));

	return n < 0 ? -errno : n;
}

static int scan_add(struct builder *b, const struct scan_buf *sb)
{
	for (size_t off = 0; off < sb->len;) {
		const struct dirent64 *de = (const struct dirent64 *)(sb->data + off);
		int ret = builder_add(b, de->d_name, de->d_type, de->d_ino);

		if (ret)
			return ret;
		off += de->d_reclen;
	}
	return 0;
}

static void *reader_main(void *arg)
{
	struct scan_reader *r = arg;
	int err = 0;

	for (;;) {
		struct scan_buf *sb;
		bool stop;
		ssize_t n;

		pthread_mutex_lock(&r->lock);
		stop = r->stop;
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
		sb = malloc(sizeof(*sb));
		if (!sb) {
			err = -ENOMEM;
			break;
		}
		n = scan_read(r->fd, sb);
		if (n <= 0) {
			err = (int)n;
			free(sb);
			break;
		}
		sb->len = (size_t)n;
		sb->next = NULL;
		pthread_mutex_lock(&r->lock);
		*r->tail = sb;
		r->tail = &sb->next;
		pthread_cond_signal(&r->cond);
		pthread_mutex_unlock(&r->lock);
	}
	pthread_mutex_lock(&r->lock);
	r->done = true;
	r->err = err;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* The scan with a reader thread; -EAGAIN if none could be started. */
static int scan_threaded(int fd, struct builder *b)
{
	struct scan_reader r = { .fd = fd };
	pthread_t th;
	int ret = 0;

	r.tail = &r.head;
	pthread_mutex_init(&r.lock, NULL);
	pthread_cond_init(&r.cond, NULL);
	if (pthread_create(&th, NULL, reader_main, &r) != 0) {
		pthread_cond_destroy(&r.cond);
		pthread_mutex_destroy(&r.lock);
		return -EAGAIN;
	}
	for (;;) {
		struct scan_buf *sb;

		pthread_mutex_lock(&r.lock);
		while (!r.head && !r.done)
			pthread_cond_wait(&r.cond, &r.lock);
		sb = r.head;
		if (sb) {
			r.head = sb->next;
			if (!r.head)
				r.tail = &r.head;
		}
		if (ret)
			r.stop = true;	/* the rest is read only to be freed */
		pthread_mutex_unlock(&r.lock);
		if (!sb)
			break;
		if (!ret)
			ret = scan_add(b, sb);
		free(sb);
	}
	pthread_join(th, NULL);
	pthread_cond_destroy(&r.cond);
	pthread_mutex_destroy(&r.lock);
	return ret ? ret : r.err;
}

int store_dir_scan(int dirfd, struct store_dir **out)
{
	struct builder b;
	struct stat st;
	int fd, ret;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	/* About 32 bytes of directory per entry on ext4 and XFS: a hint for
	 * the hash, which grows past it. */
	ret = builder_init(&b, st.st_size > 0 ? (size_t)st.st_size / 32 : 0);
	if (ret) {
		close(fd);
		return ret;
	}
	ret = -EAGAIN;
	if (st.st_size >= SCAN_THREAD_MIN)
		ret = scan_threaded(fd, &b);
	if (ret == -EAGAIN) {
		struct scan_buf *sb = malloc(sizeof(*sb));
		ssize_t n;

		ret = sb ? 0 : -ENOMEM;
		while (sb && (n = scan_read(fd, sb)) != 0) {
			if (n < 0) {
				ret = (int)n;
				break;
			}
			sb->len = (size_t)n;
			ret = scan_add(&b, sb);
			if (ret)
				break;
		}
		free(sb);
	}
	close(fd);
	if (ret) {
		builder_free(&b);
		return ret;
	}
	return builder_finish(&b, out);
}

int store_dir_from_names(const char *const *names, const unsigned char *d_types,
			 size_t n, struct store_dir **out)
{
	struct builder b;
	int ret = builder_init(&b, n);

	for (size_t i = 0; !ret && i < n; i++)
		ret = builder_add(&b, names[i], d_types ? d_types[i] : DT_UNKNOWN, 0);
	if (ret) {
		builder_free(&b);
		return ret;
	}
	return builder_finish(&b, out);
}

struct store_dir *store_dir_get(struct store_dir *dir)
{
	__atomic_add_fetch(&dir->refs, 1, __ATOMIC_RELAXED);
	return dir;
}

void store_dir_free(struct store_dir *dir)
{
	if (!dir || __atomic_sub_fetch(&dir->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	free(dir->entries);
	free(dir->names);
	free(dir->group_names);
	free(dir->layers);
	free(dir->groups);
	free(dir->slots);
	free(dir);
}

const struct store_group *store_dir_find(const struct store_dir *dir,
					 const char *name)
{
	if (!dir || dir->ngroups == 0)
		return NULL;
	uint64_t h = store_name_hash(name);

	for (size_t s = (size_t)h & dir->mask; dir->slots[s].group;
	     s = (s + 1) & dir->mask) {
		const struct store_group *g = &dir->groups[dir->slots[s].group - 1];

		if (dir->slots[s].tag == (uint32_t)(h >> 32) && strcmp(g->name, name) == 0)
			return g;
	}
	return NULL;
}

static bool layer_type_ok(const struct store_layer *l, const char **why)
{
	switch (l->d_type) {
	case DT_REG:
	case DT_UNKNOWN:	/* checked again when the layer is opened */
		return true;
	case DT_LNK:
		*why = "it is a symbolic link (layers are never followed)";
		return false;
	default:
		*why = "it is not a regular file";
		return false;
	}
}

int store_chain_resolve(const struct store_group *g, struct store_chain *chain,
			const char **why)
{
	const struct store_layer *base = NULL;
	size_t i, first, n;

	memset(chain, 0, sizeof(*chain));

	for (i = 0; i < g->nlayers; i++) {
		if (g->layers[i].overflow) {
			chain->culprit = &g->layers[i];
			*why = "its <seq> does not fit in 64 bits";
			return -EIO;
		}
	}
	/* Layers are sorted by seq, bases first at equal seq: the highest
	 * base is the last STORE_BASE entry. */
	for (i = g->nlayers; i-- > 0;) {
		if (g->layers[i].kind == STORE_BASE) {
			base = &g->layers[i];
			break;
		}
	}
	if (!base) {
		*why = "no base layer (NAME.<seq>.base) at or below its diffs";
		return -EIO;
	}
	if (i > 0 && g->layers[i - 1].kind == STORE_BASE &&
	    g->layers[i - 1].seq == base->seq) {
		chain->culprit = base;
		*why = "two base layers have the same <seq>";
		return -EIO;
	}
	first = i;
	n = 1;
	for (i = first + 1; i < g->nlayers; i++) {
		const struct store_layer *l = &g->layers[i];

		if (l->seq == base->seq)	/* a diff at the base's seq is superseded */
			continue;
		if (i > first + 1 && g->layers[i - 1].seq == l->seq &&
		    g->layers[i - 1].kind == STORE_DIFF) {
			chain->culprit = l;
			*why = "two diff layers have the same <seq>";
			return -EIO;
		}
		n++;
	}
	chain->layers = calloc(n, sizeof(*chain->layers));
	if (!chain->layers)
		return -ENOMEM;
	chain->layers[chain->nlayers++] = base;
	for (i = first + 1; i < g->nlayers; i++)
		if (g->layers[i].seq != base->seq)
			chain->layers[chain->nlayers++] = &g->layers[i];
	for (i = 0; i < chain->nlayers; i++) {
		if (!layer_type_ok(chain->layers[i], why)) {
			const struct store_layer *bad = chain->layers[i];

			store_chain_free(chain);
			chain->culprit = bad;
			return -EIO;
		}
	}
	return 0;
}

int store_chain_from_names(const char *const *names, size_t n, struct store_chain *chain)
{
	memset(chain, 0, sizeof(*chain));
	chain->own = calloc(n ? n : 1, sizeof(*chain->own));
	chain->layers = calloc(n ? n : 1, sizeof(*chain->layers));
	if (!chain->own || !chain->layers) {
		store_chain_free(chain);
		return -ENOMEM;
	}
	chain->nlayers = n;
	for (size_t i = 0; i < n; i++) {
		struct store_layer *l = &chain->own[i];
		struct store_name sn;

		if (!store_parse_name(names[i], &sn)) {
			store_chain_free(chain);
			return -EINVAL;
		}
		l->fname = strdup(names[i]);
		if (!l->fname) {
			store_chain_free(chain);
			return -ENOMEM;
		}
		l->seq = sn.seq;
		l->kind = sn.kind;
		l->overflow = sn.overflow;
		l->d_type = DT_UNKNOWN;
		chain->layers[i] = l;
	}
	return 0;
}

void store_chain_free(struct store_chain *chain)
{
	for (size_t i = 0; chain->own && i < chain->nlayers; i++)
		free(chain->own[i].fname);
	free(chain->own);
	chain->own = NULL;
	free(chain->layers);
	chain->layers = NULL;
	chain->nlayers = 0;
}

bool store_dir_inside(int dirfd, uint64_t root_dev, uint64_t root_ino)
{
	struct stat st, prev;
	bool inside = false;
	int fd = dirfd, up;

	if (fstat(dirfd, &prev) < 0)
		return false;
	if ((uint64_t)prev.st_dev == root_dev && (uint64_t)prev.st_ino == root_ino)
		return true;
	for (int depth = 0; depth < 4096; depth++) {
		up = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fd != dirfd)
			close(fd);
		fd = up;
		if (fd < 0 || fstat(fd, &st) < 0)
			break;
		if ((uint64_t)st.st_dev == root_dev && (uint64_t)st.st_ino == root_ino) {
			inside = true;
			break;
		}
		if (st.st_dev == prev.st_dev && st.st_ino == prev.st_ino)
			break;		/* "/": its ".." is itself */
		prev = st;
	}
	if (fd >= 0 && fd != dirfd)
		close(fd);
	return inside;
}
