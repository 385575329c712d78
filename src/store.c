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

/* The entries of a directory as read: names packed in one block (one
 * allocation for a directory of any size, where a strdup() per name made
 * a big directory's first listing mostly malloc), each name's offset. */
struct entry_list {
	char *names;
	size_t used, room;
	struct store_entry *ents;	/* .name unset until the block is final */
	size_t *offs;
	size_t n, cap;
};

static int entry_list_add(struct entry_list *l, const char *name,
			  unsigned char type, uint64_t ino)
{
	size_t len = strlen(name) + 1;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct store_entry *ne = realloc(l->ents, cap * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		l->ents = ne;
		size_t *no = realloc(l->offs, cap * sizeof(*no));

		if (!no)
			return -ENOMEM;
		l->offs = no;
		l->cap = cap;
	}
	if (l->room - l->used < len) {
		size_t room = l->room ? l->room : 4096;
		char *nn;

		while (room - l->used < len)
			room *= 2;
		nn = realloc(l->names, room);
		if (!nn)
			return -ENOMEM;
		l->names = nn;
		l->room = room;
	}
	memcpy(l->names + l->used, name, len);
	l->offs[l->n] = l->used;
	l->ents[l->n++] = (struct store_entry){ .ino = ino, .d_type = type };
	l->used += len;
	return 0;
}

static void entry_list_free(struct entry_list *l)
{
	free(l->names);
	free(l->ents);
	free(l->offs);
}

static int build_dir(struct entry_list *l, struct store_dir **out);

int store_dir_scan(int dirfd, struct store_dir **out)
{
	struct entry_list l = { 0 };
	struct dirent *de;
	DIR *d;
	int fd, ret = 0;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		ret = -errno;
		close(fd);
		return ret;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			ret = -errno;
			break;
		}
		ret = entry_list_add(&l, de->d_name, de->d_type, de->d_ino);
		if (ret)
			break;
	}
	closedir(d);
	if (ret == 0)
		return build_dir(&l, out);
	entry_list_free(&l);
	return ret;
}

int store_dir_from_names(const char *const *names, const unsigned char *d_types,
			 size_t n, struct store_dir **out)
{
	struct entry_list l = { 0 };

	for (size_t i = 0; i < n; i++) {
		int ret = entry_list_add(&l, names[i], d_types ? d_types[i] : DT_UNKNOWN, 0);

		if (ret) {
			entry_list_free(&l);
			return ret;
		}
	}
	return build_dir(&l, out);
}

/* Sort key while grouping: NAME, then seq, then kind. */
struct parsed {
	const char *fname;
	struct store_name sn;
	unsigned char d_type;
};

static int parsed_cmp(const void *a, const void *b)
{
	const struct parsed *x = a, *y = b;
	size_t n = x->sn.name_len < y->sn.name_len ? x->sn.name_len : y->sn.name_len;
	int c = memcmp(x->fname, y->fname, n);

	if (c)
		return c;
	if (x->sn.name_len != y->sn.name_len)
		return x->sn.name_len < y->sn.name_len ? -1 : 1;
	if (x->sn.seq != y->sn.seq)
		return x->sn.seq < y->sn.seq ? -1 : 1;
	if (x->sn.kind != y->sn.kind)
		return x->sn.kind == STORE_BASE ? -1 : 1;
	return strcmp(x->fname, y->fname);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

uint64_t store_name_hash(const char *name)
{
	return XXH64(name, strlen(name), 0);
}

/* Hashes the groups' names (linear probing, at most half full). Returns 0
 * or -ENOMEM. */
static int hash_names(struct store_dir *dir)
{
	size_t cap = 16;

	if (dir->ngroups > UINT32_MAX / 2)
		return -ENOMEM;
	while (cap < 2 * dir->ngroups)
		cap *= 2;
	dir->slots = calloc(cap, sizeof(*dir->slots));
	if (!dir->slots)
		return -ENOMEM;
	dir->mask = cap - 1;
	for (size_t i = 0; i < dir->ngroups; i++) {
		uint64_t h = store_name_hash(dir->groups[i].name);
		size_t s = (size_t)h & dir->mask;

		while (dir->slots[s].group)
			s = (s + 1) & dir->mask;
		dir->slots[s].group = (uint32_t)i + 1;
		dir->slots[s].tag = (uint32_t)(h >> 32);
	}
	return 0;
}

/*
 * The index of the entries in l, which it takes (freed either way): the
 * groups' NAMEs in one more block, their layers in one array, the layers'
 * and the entries' names pointing into l's block.
 */
static int build_dir(struct entry_list *l, struct store_dir **out)
{
	struct store_dir *dir;
	struct parsed *p = NULL;
	const char **plain = NULL;
	size_t np = 0, nplain = 0, nbytes = 0, i, j, g;
	int ret = -ENOMEM;

	dir = calloc(1, sizeof(*dir));
	if (!dir) {
		entry_list_free(l);
		return -ENOMEM;
	}
	dir->names = l->names;
	dir->entries = l->ents;
	dir->nentries = l->n;
	for (i = 0; i < l->n; i++)
		dir->entries[i].name = dir->names + l->offs[i];
	free(l->offs);
	*l = (struct entry_list){ 0 };

	p = calloc(dir->nentries ? dir->nentries : 1, sizeof(*p));
	plain = calloc(dir->nentries ? dir->nentries : 1, sizeof(*plain));
	if (!p || !plain)
		goto fail;
	for (i = 0; i < dir->nentries; i++) {
		const struct store_entry *e = &dir->entries[i];
		struct parsed *q = &p[np];

		if (store_parse_name(e->name, &q->sn)) {
			q->fname = e->name;
			q->d_type = e->d_type;
			np++;
		} else {
			plain[nplain++] = e->name;
		}
	}
	qsort(p, np, sizeof(*p), parsed_cmp);
	qsort(plain, nplain, sizeof(*plain), str_cmp);

	/* Count groups and their NAMEs' bytes, then fill them. */
	for (i = 0; i < np; i = j) {
		for (j = i + 1; j < np && p[j].sn.name_len == p[i].sn.name_len &&
		     memcmp(p[j].fname, p[i].fname, p[i].sn.name_len) == 0; j++)
			;
		dir->ngroups++;
		nbytes += p[i].sn.name_len + 1;
	}
	dir->groups = calloc(dir->ngroups ? dir->ngroups : 1, sizeof(*dir->groups));
	dir->layers = calloc(np ? np : 1, sizeof(*dir->layers));
	dir->group_names = malloc(nbytes ? nbytes : 1);
	if (!dir->groups || !dir->layers || !dir->group_names)
		goto fail;

	nbytes = 0;
	for (i = 0, g = 0; i < np; i = j, g++) {
		struct store_group *grp = &dir->groups[g];
		size_t len = p[i].sn.name_len;

		for (j = i + 1; j < np && p[j].sn.name_len == len &&
		     memcmp(p[j].fname, p[i].fname, len) == 0; j++)
			;
		grp->name = dir->group_names + nbytes;
		memcpy(grp->name, p[i].fname, len);
		grp->name[len] = '\0';
		nbytes += len + 1;
		grp->layers = dir->layers + i;
		grp->nlayers = j - i;
		for (size_t k = i; k < j; k++) {
			struct store_layer *ly = &dir->layers[k];

			ly->fname = (char *)p[k].fname;
			ly->seq = p[k].sn.seq;
			ly->kind = p[k].sn.kind;
			ly->overflow = p[k].sn.overflow;
			ly->d_type = p[k].d_type;
		}
		grp->shadows_plain = bsearch(&grp->name, plain, nplain,
					     sizeof(*plain), str_cmp) != NULL;
	}
	/* parsed_cmp orders NAMEs as strcmp() would (memcmp of the common
	 * prefix, then the shorter first), so groups are already sorted. */
	ret = hash_names(dir);
	if (ret)
		goto fail;
	*out = dir;
	dir = NULL;
fail:
	free(plain);
	free(p);
	store_dir_free(dir);
	return ret;
}

void store_dir_free(struct store_dir *dir)
{
	if (!dir)
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
