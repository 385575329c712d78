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
 * a big directory's first listing mostly malloc). Until the block is
 * final, an entry's .name holds its name's offset in it. */
struct entry_list {
	char *names;
	size_t used, room;
	struct store_entry *ents;
	size_t n, cap;
};

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

static int entry_list_add(struct entry_list *l, const char *name,
			  unsigned char type, uint64_t ino)
{
	size_t len = strlen(name) + 1;

	if (grow((void **)&l->ents, &l->cap, l->n, sizeof(*l->ents)))
		return -ENOMEM;
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
	l->ents[l->n++] = (struct store_entry){ .name = (const char *)(uintptr_t)l->used,
						.ino = ino, .d_type = type };
	l->used += len;
	return 0;
}

static void entry_list_free(struct entry_list *l)
{
	free(l->names);
	free(l->ents);
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

/* A slot table of at least 2 * n slots (at most half full), or NULL. */
static struct store_slot *slots_alloc(size_t n, size_t *mask)
{
	size_t cap = 16;

	while (cap < 2 * n)
		cap *= 2;
	*mask = cap - 1;
	return calloc(cap, sizeof(struct store_slot));
}

/* The slot of the group called name[0..len) with hash h in dir's table:
 * either that group's or the empty one where it would go. len is the
 * group NAME's length: name may go on (a layer file's name). */
static struct store_slot *slot_of(const struct store_dir *dir, const char *name,
				  size_t len, uint64_t h)
{
	size_t s = (size_t)h & dir->mask;

	for (; dir->slots[s].group; s = (s + 1) & dir->mask) {
		const struct store_group *g = &dir->groups[dir->slots[s].group - 1];

		if (dir->slots[s].tag == (uint32_t)(h >> 32) &&
		    strncmp(g->name, name, len) == 0 && g->name[len] == '\0')
			return &dir->slots[s];
	}
	return &dir->slots[s];
}

/*
 * The index of the entries in l, which it takes (freed either way): the
 * groups' NAMEs in one more block, their layers in one array, the layers'
 * and the entries' names pointing into l's block.
 *
 * One pass over the entries parses each name and finds or adds its NAME's
 * group in the hash, a second lays the layers out group by group, and
 * each group's few layers are then sorted: no sort of the whole
 * directory, which made a directory of 100,000 names spend most of its
 * first listing comparing names. Groups come in the order of their first
 * layer in the directory.
 */
static int build_dir(struct entry_list *l, struct store_dir **out)
{
	struct store_dir *dir;
	uint32_t *gof = NULL;		/* entry i's group + 1, 0 if plain */
	uint32_t *len = NULL;		/* group g's NAME length, while building */
	size_t nlayers = 0, nbytes = 0, i;
	bool layer_like = false;	/* a NAME looks like a layer file */
	int ret = -ENOMEM;

	dir = calloc(1, sizeof(*dir));
	if (!dir) {
		entry_list_free(l);
		return -ENOMEM;
	}
	dir->refs = 1;
	dir->names = l->names;
	dir->entries = l->ents;
	dir->nentries = l->n;
	for (i = 0; i < l->n; i++)
		dir->entries[i].name = dir->names + (uintptr_t)dir->entries[i].name;
	*l = (struct entry_list){ 0 };
	if (dir->nentries > UINT32_MAX / 2)
		goto fail;

	/* Room for every entry being a group of its own: the arrays' untouched
	 * tails cost address space only. Group NAMEs point into the entries
	 * until they are copied out, with their lengths in len[]. */
	gof = malloc((dir->nentries ? dir->nentries : 1) * sizeof(*gof));
	len = malloc((dir->nentries ? dir->nentries : 1) * sizeof(*len));
	dir->groups = malloc((dir->nentries ? dir->nentries : 1) * sizeof(*dir->groups));
	dir->slots = slots_alloc(dir->nentries, &dir->mask);
	if (!gof || !len || !dir->groups || !dir->slots)
		goto fail;
	for (i = 0; i < dir->nentries; i++) {
		const char *name = dir->entries[i].name;
		struct store_name sn;
		struct store_slot *s;
		uint64_t h;
		size_t sl;

		gof[i] = 0;
		if (!store_parse_name(name, &sn))
			continue;
		h = XXH64(name, sn.name_len, 0);
		/* slot_of() compares with NUL-terminated group NAMEs: until the
		 * copy, compare the prefixes by hand. */
		sl = (size_t)h & dir->mask;
		for (s = NULL; dir->slots[sl].group; sl = (sl + 1) & dir->mask) {
			uint32_t g = dir->slots[sl].group - 1;

			if (dir->slots[sl].tag == (uint32_t)(h >> 32) &&
			    len[g] == sn.name_len &&
			    memcmp(dir->groups[g].name, name, sn.name_len) == 0) {
				s = &dir->slots[sl];
				break;
			}
		}
		if (!s) {
			size_t g;

			if (sn.name_len > UINT32_MAX)
				goto fail;
			g = dir->ngroups++;
			s = &dir->slots[sl];
			s->group = (uint32_t)g + 1;
			s->tag = (uint32_t)(h >> 32);
			dir->groups[g] = (struct store_group){ .name = (char *)name };
			len[g] = sn.name_len;
			nbytes += sn.name_len + 1;
		}
		dir->groups[s->group - 1].nlayers++;
		gof[i] = s->group;
		nlayers++;
	}

	/* The NAMEs copied out, each group's stretch of the layer array. */
	dir->group_names = malloc(nbytes ? nbytes : 1);
	dir->layers = malloc((nlayers ? nlayers : 1) * sizeof(*dir->layers));
	if (!dir->group_names || !dir->layers)
		goto fail;
	nbytes = nlayers = 0;
	for (size_t g = 0; g < dir->ngroups; g++) {
		struct store_group *grp = &dir->groups[g];

		memcpy(dir->group_names + nbytes, grp->name, len[g]);
		dir->group_names[nbytes + len[g]] = '\0';
		grp->name = dir->group_names + nbytes;
		nbytes += len[g] + 1;
		grp->layers = dir->layers + nlayers;
		nlayers += grp->nlayers;
		grp->nlayers = 0;	/* counts again as they are laid out */
	}
	for (i = 0; i < dir->nentries; i++) {
		const struct store_entry *e = &dir->entries[i];
		struct store_group *grp;
		struct store_name sn;

		if (!gof[i])
			continue;
		grp = &dir->groups[gof[i] - 1];
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
	for (size_t g = 0; g < dir->ngroups && !layer_like; g++) {
		const char *end = dir->groups[g].name + len[g];

		layer_like = len[g] >= 5 && (memcmp(end - 5, ".base", 5) == 0 ||
					     memcmp(end - 5, ".diff", 5) == 0);
	}
	for (i = 0; i < dir->nentries; i++) {
		struct store_entry *e = &dir->entries[i];
		struct store_slot *s;
		size_t n;

		if ((gof[i] && !layer_like) || !dir->ngroups)
			continue;
		n = strlen(e->name);
		s = slot_of(dir, e->name, n, XXH64(e->name, n, 0));
		if (!s->group)
			continue;
		e->named = true;
		if (!gof[i])
			dir->groups[s->group - 1].shadows_plain = true;
	}

	/* The table was sized for every entry being a group: where layers
	 * share groups (deep chains), it is made again at its right size. */
	if (dir->mask + 1 > 8 * dir->ngroups && dir->mask + 1 > 16) {
		struct store_slot *big = dir->slots;
		size_t big_mask = dir->mask;

		dir->slots = slots_alloc(dir->ngroups, &dir->mask);
		if (!dir->slots) {
			dir->slots = big;
			dir->mask = big_mask;
			goto fail;
		}
		free(big);
		for (size_t g = 0; g < dir->ngroups; g++) {
			const char *name = dir->groups[g].name;
			uint64_t h = XXH64(name, len[g], 0);
			struct store_slot *s = slot_of(dir, name, len[g], h);

			s->group = (uint32_t)g + 1;
			s->tag = (uint32_t)(h >> 32);
		}
	}
	if (dir->ngroups < dir->nentries) {	/* give the tail back */
		struct store_group *gs = realloc(dir->groups, (dir->ngroups ? dir->ngroups : 1) *
						 sizeof(*gs));

		if (gs)
			dir->groups = gs;
	}
	ret = 0;
	*out = dir;
	dir = NULL;
fail:
	free(len);
	free(gof);
	store_dir_free(dir);
	return ret;
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
