/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of views (doc/format.md §2 content rule, §4, §5): view_flatten, the read
 * mapping and SEEK_DATA/SEEK_HOLE are checked against a naive model ("the
 * highest layer with data, else zero", unit by unit) on thousands of seeded
 * random chains; view_open is checked end to end on real layer files against
 * a plain merge of what was written, and on the bad inputs it must refuse.
 */
#include "unit.h"

#include <pthread.h>

#include "cache.h"
#include "stats.h"
#include "store.h"
#include "view.h"

#define P ((uint64_t)UNIT_PAGE)

/* ---- the model ---- */

/*
 * A random chain: nmaps extent maps over a file of size bytes, whose
 * extents start and end on multiples of unit (or at size). The model keeps,
 * per unit, the layer that serves it (-1: zero) and where runs end.
 */
struct model {
	uint64_t seed;
	uint64_t size, unit, nunits;
	unsigned nmaps;
	struct extent_map **maps;
	int32_t *owner;		/* per unit: highest layer with data, or -1 */
	uint64_t *run_end;	/* per unit: first later unit of another owner */
	uint64_t *next_data;	/* per unit: first unit >= it with data */
	uint64_t *next_hole;	/* per unit: first unit >= it without */
};

static uint64_t unit_end(const struct model *m, uint64_t u)
{
	uint64_t e = (u + 1) * m->unit;

	return e < m->size ? e : m->size;
}

/* One layer's map: alternating runs of holes and data, in units. */
static struct extent_map *gen_map(struct model *m, uint64_t *s)
{
	static const uint64_t runs[] = { 1, 2, 3, 8, 32, 256, 4096 };
	uint64_t maxd = runs[unit_below(s, 7)], maxh = runs[unit_below(s, 7)];
	unsigned mode = (unsigned)unit_below(s, 12);
	struct extent_map *em;
	uint64_t u = 0;
	bool data = unit_below(s, 2);

	em = malloc(sizeof(*em) + (m->nunits / 2 + 2) * sizeof(em->ext[0]));
	assert_non_null(em);
	*em = (struct extent_map){ .size = m->size };
	if (mode == 0)		/* no data at all */
		return em;
	if (mode == 1) {	/* dense */
		em->ext[em->n++] = (struct extent){ 0, m->size };
		em->data_bytes = m->size;
		return em;
	}
	while (u < m->nunits) {
		uint64_t run = 1 + unit_below(s, data ? maxd : maxh);

		if (run > m->nunits - u)
			run = m->nunits - u;
		if (data) {
			uint64_t off = u * m->unit, end = unit_end(m, u + run - 1);

			em->ext[em->n++] = (struct extent){ off, end - off };
			em->data_bytes += end - off;
		}
		u += run;
		data = !data;
	}
	return em;
}

static void model_new(struct model *m, uint64_t seed, unsigned max_maps)
{
	uint64_t s = seed;

	memset(m, 0, sizeof(*m));
	m->seed = seed;
	m->nmaps = 1 + (unsigned)unit_below(&s, max_maps);
	switch (unit_below(&s, 8)) {
	case 0:
	case 1:		/* byte granularity */
		m->unit = 1;
		m->size = 1 + unit_below(&s, unit_below(&s, 4) ? 12000 : 16);
		break;
	case 2:		/* some odd granularity */
		m->unit = 1 + unit_below(&s, 600);
		m->size = (1 + unit_below(&s, 200)) * m->unit - unit_below(&s, m->unit);
		break;
	default:	/* pages, up to 4 MiB, sometimes a partial last page */
		m->unit = P;
		m->size = (1 + unit_below(&s, unit_below(&s, 4) ? 64 : 1024)) * P;
		if (unit_below(&s, 2))
			m->size -= unit_below(&s, P);
		break;
	}
	m->nunits = (m->size + m->unit - 1) / m->unit;
	m->maps = calloc(m->nmaps, sizeof(*m->maps));
	m->owner = malloc(m->nunits * sizeof(*m->owner));
	m->run_end = malloc(m->nunits * sizeof(*m->run_end));
	m->next_data = malloc(m->nunits * sizeof(*m->next_data));
	m->next_hole = malloc(m->nunits * sizeof(*m->next_hole));
	assert_non_null(m->maps);
	assert_non_null(m->owner);
	assert_non_null(m->run_end);
	assert_non_null(m->next_data);
	assert_non_null(m->next_hole);

	for (uint64_t u = 0; u < m->nunits; u++)
		m->owner[u] = VIEW_ZERO;
	for (unsigned l = 0; l < m->nmaps; l++) {
		m->maps[l] = gen_map(m, &s);
		for (size_t i = 0; i < m->maps[l]->n; i++) {
			const struct extent *e = &m->maps[l]->ext[i];

			for (uint64_t b = e->off; b < e->off + e->len; b += m->unit)
				m->owner[b / m->unit] = (int32_t)l;
		}
	}
	for (uint64_t u = m->nunits; u-- > 0;) {
		bool last = u + 1 == m->nunits;

		m->run_end[u] = last || m->owner[u + 1] != m->owner[u] ?
				u + 1 : m->run_end[u + 1];
		m->next_data[u] = m->owner[u] != VIEW_ZERO ? u :
				  last ? m->nunits : m->next_data[u + 1];
		m->next_hole[u] = m->owner[u] == VIEW_ZERO ? u :
				  last ? m->nunits : m->next_hole[u + 1];
	}
}

static void model_free(struct model *m)
{
	for (unsigned l = 0; l < m->nmaps; l++)
		free(m->maps[l]);
	free(m->maps);
	free(m->owner);
	free(m->run_end);
	free(m->next_data);
	free(m->next_hole);
}

#define CHECK(m, cond, ...) do {					\
	if (!(cond)) {							\
		print_message("case seed %llu (size %llu, unit %llu, "	\
			      "%u maps): ",				\
			      (unsigned long long)(m)->seed,		\
			      (unsigned long long)(m)->size,		\
			      (unsigned long long)(m)->unit, (m)->nmaps);\
		fail_msg(__VA_ARGS__);					\
	}								\
} while (0)

/* Flattens the model's maps and checks the segments against it. */
static void check_flatten(const struct model *m, struct view_seg **segp,
			  size_t *nsegp)
{
	struct view_seg *seg = NULL;
	size_t nseg = 0, k = 0;

	assert_int_equal(view_flatten(m->size,
				      (const struct extent_map *const *)m->maps,
				      m->nmaps, &seg, &nseg), 0);
	assert_non_null(seg);
	CHECK(m, nseg >= 1, "no segment");
	CHECK(m, seg[0].off == 0, "first segment at %llu",
	      (unsigned long long)seg[0].off);
	CHECK(m, seg[nseg].off == m->size, "sentinel at %llu",
	      (unsigned long long)seg[nseg].off);
	for (size_t i = 0; i < nseg; i++) {
		CHECK(m, seg[i].off < seg[i + 1].off, "segment %zu empty or "
		      "unsorted", i);
		CHECK(m, seg[i].layer >= VIEW_ZERO &&
		      seg[i].layer < (int32_t)m->nmaps, "segment %zu layer %d",
		      i, seg[i].layer);
		if (i)
			CHECK(m, seg[i].layer != seg[i - 1].layer,
			      "segments %zu and %zu both layer %d", i - 1, i,
			      seg[i].layer);
	}
	/* exactly the runs of the model */
	for (uint64_t u = 0; u < m->nunits; u = m->run_end[u], k++) {
		CHECK(m, k < nseg, "too few segments (%zu)", nseg);
		CHECK(m, seg[k].off == u * m->unit, "segment %zu at %llu, "
		      "want %llu", k, (unsigned long long)seg[k].off,
		      (unsigned long long)(u * m->unit));
		CHECK(m, seg[k].layer == m->owner[u], "segment %zu at %llu: "
		      "layer %d, want %d", k, (unsigned long long)seg[k].off,
		      seg[k].layer, m->owner[u]);
	}
	CHECK(m, k == nseg, "%zu segments, want %zu", nseg, k);
	if (segp) {
		*segp = seg;
		*nsegp = nseg;
	} else {
		free(seg);
	}
}

static void test_flatten_random(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 2500; seed++) {
		struct model m;

		model_new(&m, seed, 17);	/* depth 0..16 */
		check_flatten(&m, NULL, NULL);
		model_free(&m);
	}
	/* chains deeper than one 64-bit word of layers */
	for (uint64_t seed = 90001; seed <= 90040; seed++) {
		struct model m;

		model_new(&m, seed, 150);
		check_flatten(&m, NULL, NULL);
		model_free(&m);
	}
}

static struct extent_map *mkmap(uint64_t size, size_t n, const struct extent *e)
{
	struct extent_map *m = malloc(sizeof(*m) + (n ? n : 1) * sizeof(m->ext[0]));

	assert_non_null(m);
	*m = (struct extent_map){ .size = size, .n = n };
	for (size_t i = 0; i < n; i++) {
		m->ext[i] = e[i];
		m->data_bytes += e[i].len;
	}
	return m;
}

/* Hand-made edge cases with the exact segments expected. */
static void check_fixed(uint64_t size, unsigned nmaps,
			const size_t *n, const struct extent *const *e,
			const struct view_seg *want, size_t nwant)
{
	struct extent_map *maps[8];
	struct view_seg *seg = NULL;
	size_t nseg = 99;

	for (unsigned l = 0; l < nmaps; l++)
		maps[l] = mkmap(size, n[l], e[l]);
	assert_int_equal(view_flatten(size, (const struct extent_map *const *)maps,
				      nmaps, &seg, &nseg), 0);
	assert_int_equal(nseg, nwant);
	for (size_t i = 0; i < nwant; i++) {
		assert_int_equal(seg[i].off, want[i].off);
		assert_int_equal(seg[i].layer, want[i].layer);
	}
	assert_int_equal(seg[nseg].off, size);
	free(seg);
	for (unsigned l = 0; l < nmaps; l++)
		free(maps[l]);
}

static void test_flatten_fixed(void **state)
{
	static const struct extent dense[] = { { 0, 100 } };
	static const struct extent a[] = { { 10, 20 }, { 50, 10 } };
	static const struct extent b[] = { { 30, 20 } };	/* fills a's gap */
	static const struct extent c[] = { { 0, 10 }, { 90, 10 } };
	static const struct extent same[] = { { 10, 20 }, { 50, 10 } };
	const struct extent *e1[] = { dense };
	const size_t n1[] = { 1 };
	const struct view_seg w1[] = { { 0, 0 } };
	const struct extent *e2[] = { dense, NULL };
	const size_t n2[] = { 0, 0 };
	const struct view_seg w2[] = { { 0, VIEW_ZERO } };
	const struct extent *e3[] = { a, b, c };
	const size_t n3[] = { 2, 1, 2 };
	const struct view_seg w3[] = {
		{ 0, 2 }, { 10, 0 }, { 30, 1 }, { 50, 0 }, { 60, VIEW_ZERO },
		{ 90, 2 },
	};
	/* the same extents in two layers: the higher one serves them */
	const struct extent *e4[] = { same, a };
	const size_t n4[] = { 2, 2 };
	const struct view_seg w4[] = {
		{ 0, VIEW_ZERO }, { 10, 1 }, { 30, VIEW_ZERO }, { 50, 1 },
		{ 60, VIEW_ZERO },
	};
	/* a diff over a dense base, and an empty diff on top */
	const struct extent *e5[] = { dense, b, NULL };
	const size_t n5[] = { 1, 1, 0 };
	const struct view_seg w5[] = { { 0, 0 }, { 30, 1 }, { 50, 0 } };

	(void)state;
	check_fixed(100, 1, n1, e1, w1, 1);
	check_fixed(100, 2, n2, e2, w2, 1);
	check_fixed(100, 3, n3, e3, w3, 6);
	check_fixed(100, 2, n4, e4, w4, 5);
	check_fixed(100, 3, n5, e5, w5, 3);
	/* an empty file: no segment, just the sentinel at 0 */
	check_fixed(0, 2, n2, e2, NULL, 0);
	/* one byte */
	{
		static const struct extent one[] = { { 0, 1 } };
		const struct extent *e6[] = { one, NULL };
		const size_t n6[] = { 1, 0 };
		const struct view_seg w6[] = { { 0, 0 } };

		check_fixed(1, 2, n6, e6, w6, 1);
	}
}

/* ---- view_map_read and view_seek on a hand-built view ---- */

#define FD0 100		/* fake fds: layer l reads as FD0 + l */

struct fake {
	struct view v;
	struct view_layer lay[160];
};

static void fake_view(struct fake *f, const struct model *m,
		      struct view_seg *seg, size_t nseg)
{
	memset(f, 0, sizeof(*f));
	assert_true(m->nmaps <= 160);
	for (unsigned l = 0; l < m->nmaps; l++)
		f->lay[l].fd = FD0 + (int)l;
	f->v.size = m->size;
	f->v.nlayers = m->nmaps;
	f->v.layers = f->lay;
	f->v.seg = seg;
	f->v.nseg = nseg;
	f->v.refs = 1;
}

/* The pieces the model says a read needs; returns their number. */
static size_t model_read(const struct model *m, uint64_t off, uint64_t len,
			 struct view_piece *p, size_t max)
{
	uint64_t end;
	size_t k = 0;

	if (off >= m->size || len == 0)
		return 0;
	end = len > m->size - off ? m->size : off + len;
	while (off < end) {
		uint64_t u = off / m->unit;
		uint64_t re = m->run_end[u] * m->unit;
		uint64_t n = (re < end ? re : end) - off;

		if (k < max)
			p[k] = (struct view_piece){
				.fd = m->owner[u] == VIEW_ZERO ? -1 : FD0 + m->owner[u],
				.off = off, .len = n };
		k++;
		off += n;
	}
	return k;
}

static void check_read(const struct model *m, const struct view *v,
		       uint64_t off, uint64_t len)
{
	enum { MAXP = 64 };
	struct view_piece got[MAXP + 1], want[MAXP];
	size_t nw = model_read(m, off, len, want, MAXP);
	size_t ng, lim = nw < MAXP ? nw : MAXP;

	memset(got, 0x5a, (lim + 1) * sizeof(got[0]));
	ng = view_map_read(v, off, len, got, MAXP);
	CHECK(m, ng == nw, "read %llu+%llu: %zu pieces, want %zu",
	      (unsigned long long)off, (unsigned long long)len, ng, nw);
	for (size_t i = 0; i < lim; i++)
		CHECK(m, got[i].fd == want[i].fd && got[i].off == want[i].off &&
		      got[i].len == want[i].len, "read %llu+%llu piece %zu: "
		      "fd %d %llu+%llu, want fd %d %llu+%llu",
		      (unsigned long long)off, (unsigned long long)len, i,
		      got[i].fd, (unsigned long long)got[i].off,
		      (unsigned long long)got[i].len, want[i].fd,
		      (unsigned long long)want[i].off,
		      (unsigned long long)want[i].len);
	/* nothing written past the count or past max */
	CHECK(m, got[lim].fd == 0x5a5a5a5a, "piece written past %zu", lim);

	/* with too small an array: the same count, only max pieces written */
	if (nw >= 2 && nw <= MAXP) {
		size_t max = nw - 1;

		memset(got, 0x5a, (max + 1) * sizeof(got[0]));
		CHECK(m, view_map_read(v, off, len, got, max) == nw,
		      "count with max %zu", max);
		for (size_t i = 0; i < max; i++)
			CHECK(m, got[i].fd == want[i].fd &&
			      got[i].off == want[i].off &&
			      got[i].len == want[i].len,
			      "piece %zu with max %zu", i, max);
		CHECK(m, got[max].fd == 0x5a5a5a5a, "piece %zu written", max);
		CHECK(m, view_map_read(v, off, len, NULL, 0) == nw,
		      "count with no array");
	}
}

static void check_seek(const struct model *m, struct view *v,
		       uint64_t off)
{
	uint64_t u = off / m->unit;
	off_t wd, wh, gd, gh;

	if (m->owner[u] != VIEW_ZERO)
		wd = (off_t)off;
	else
		wd = m->next_data[u] == m->nunits ? -ENXIO :
		     (off_t)(m->next_data[u] * m->unit);
	if (m->owner[u] == VIEW_ZERO)
		wh = (off_t)off;
	else
		wh = m->next_hole[u] == m->nunits ? (off_t)m->size :
		     (off_t)(m->next_hole[u] * m->unit);
	gd = view_seek(v, (off_t)off, SEEK_DATA);
	gh = view_seek(v, (off_t)off, SEEK_HOLE);
	CHECK(m, gd == wd, "SEEK_DATA %llu: %lld, want %lld",
	      (unsigned long long)off, (long long)gd, (long long)wd);
	CHECK(m, gh == wh, "SEEK_HOLE %llu: %lld, want %lld",
	      (unsigned long long)off, (long long)gh, (long long)wh);
}

static void test_read_seek_random(void **state)
{
	(void)state;
	for (uint64_t seed = 5001; seed <= 6200; seed++) {
		struct model m;
		struct fake f;
		struct view_seg *seg;
		size_t nseg;
		uint64_t s = seed * 31;

		model_new(&m, seed, 17);
		check_flatten(&m, &seg, &nseg);
		fake_view(&f, &m, seg, nseg);

		/* reads: unaligned, across boundaries, at and past EOF */
		for (int i = 0; i < 40; i++) {
			uint64_t off = unit_below(&s, m.size + 2);
			uint64_t len = unit_below(&s, 4) ? unit_below(&s, 3 * m.unit + 2) :
				       unit_below(&s, m.size + 2);

			check_read(&m, &f.v, off, len);
		}
		for (size_t i = 0; i < nseg; i++) {
			uint64_t b = seg[i].off;

			check_read(&m, &f.v, b, seg[i + 1].off - b);
			if (b)
				check_read(&m, &f.v, b - 1, 2);
			check_read(&m, &f.v, b, 0);
		}
		check_read(&m, &f.v, 0, m.size);
		check_read(&m, &f.v, 0, UINT64_MAX);
		check_read(&m, &f.v, m.size - 1, UINT64_MAX);
		check_read(&m, &f.v, m.size - 1, 1);
		check_read(&m, &f.v, m.size, 1);
		check_read(&m, &f.v, m.size + 1000, 1);
		check_read(&m, &f.v, UINT64_MAX, UINT64_MAX);

		/* seeks: every byte of small files, else around boundaries */
		if (m.size <= 700) {
			for (uint64_t b = 0; b < m.size; b++)
				check_seek(&m, &f.v, b);
		} else {
			/* view_seek walks segments, so sample at most
			 * about 150 boundaries of long maps */
			size_t step = nseg / 150 + 1;

			for (size_t i = unit_below(&s, step); i < nseg; i += step) {
				uint64_t b = seg[i].off;

				check_seek(&m, &f.v, b);
				if (b)
					check_seek(&m, &f.v, b - 1);
				if (b + 1 < m.size)
					check_seek(&m, &f.v, b + 1);
			}
			for (int i = 0; i < 20; i++)
				check_seek(&m, &f.v, unit_below(&s, m.size));
			check_seek(&m, &f.v, m.size - 1);
		}
		CHECK(&m, view_seek(&f.v, (off_t)m.size, SEEK_DATA) == -ENXIO, "data at EOF");
		CHECK(&m, view_seek(&f.v, (off_t)m.size, SEEK_HOLE) == -ENXIO, "hole at EOF");
		CHECK(&m, view_seek(&f.v, (off_t)m.size + 5, SEEK_HOLE) == -ENXIO, "past EOF");
		CHECK(&m, view_seek(&f.v, -1, SEEK_DATA) == -ENXIO, "negative");
		CHECK(&m, view_seek(&f.v, 0, SEEK_SET) == -EINVAL, "SEEK_SET");
		CHECK(&m, view_seek(&f.v, 0, SEEK_END) == -EINVAL, "SEEK_END");

		free(seg);
		model_free(&m);
	}
}

/* A fixed layout, asserted number by number. */
static void test_read_seek_fixed(void **state)
{
	/* base: [0,4P) data; diff: [P,2P); zero from 4P; size 6P + 10 */
	static const struct extent base[] = { { 0, 4 * P } };
	static const struct extent diff[] = { { P, P } };
	struct extent_map *maps[2] = { mkmap(6 * P + 10, 1, base),
				       mkmap(6 * P + 10, 1, diff) };
	struct view_piece p[8];
	struct view_seg *seg;
	size_t nseg;
	struct fake f;
	struct model m = { .nmaps = 2, .size = 6 * P + 10 };

	(void)state;
	assert_int_equal(view_flatten(6 * P + 10,
				      (const struct extent_map *const *)maps, 2,
				      &seg, &nseg), 0);
	assert_int_equal(nseg, 4);
	fake_view(&f, &m, seg, nseg);

	assert_int_equal(view_find(&f.v, 0), 0);
	assert_int_equal(view_find(&f.v, P - 1), 0);
	assert_int_equal(view_find(&f.v, P), 1);
	assert_int_equal(view_find(&f.v, 4 * P), 3);
	assert_int_equal(view_find(&f.v, 6 * P + 9), 3);

	/* unaligned, across all four segments, clipped at EOF */
	assert_int_equal(view_map_read(&f.v, 100, 100 * P, p, 8), 4);
	assert_int_equal(p[0].fd, FD0);
	assert_int_equal(p[0].off, 100);
	assert_int_equal(p[0].len, P - 100);
	assert_int_equal(p[1].fd, FD0 + 1);
	assert_int_equal(p[1].off, P);
	assert_int_equal(p[1].len, P);
	assert_int_equal(p[2].fd, FD0);
	assert_int_equal(p[2].off, 2 * P);
	assert_int_equal(p[2].len, 2 * P);
	assert_int_equal(p[3].fd, -1);
	assert_int_equal(p[3].off, 4 * P);
	assert_int_equal(p[3].len, 2 * P + 10);
	/* inside one segment */
	assert_int_equal(view_map_read(&f.v, P + 1, 10, p, 8), 1);
	assert_int_equal(p[0].fd, FD0 + 1);
	assert_int_equal(p[0].off, P + 1);
	assert_int_equal(p[0].len, 10);
	/* ending exactly at a boundary, and at EOF */
	assert_int_equal(view_map_read(&f.v, 0, P, p, 8), 1);
	assert_int_equal(p[0].len, P);
	assert_int_equal(view_map_read(&f.v, 6 * P + 9, 1, p, 8), 1);
	assert_int_equal(p[0].fd, -1);
	assert_int_equal(p[0].off, 6 * P + 9);
	assert_int_equal(p[0].len, 1);
	/* len 0, at EOF, past EOF */
	assert_int_equal(view_map_read(&f.v, 5, 0, p, 8), 0);
	assert_int_equal(view_map_read(&f.v, 6 * P + 10, 1, p, 8), 0);
	assert_int_equal(view_map_read(&f.v, 7 * P, 1, p, 8), 0);
	/* max too small */
	memset(p, 0, sizeof(p));
	assert_int_equal(view_map_read(&f.v, 0, 6 * P + 10, p, 2), 4);
	assert_int_equal(p[1].off, P);
	assert_int_equal(p[2].len, 0);

	/* seeks; the file ends in a hole */
	assert_int_equal(view_seek(&f.v, 0, SEEK_DATA), 0);
	assert_int_equal(view_seek(&f.v, 0, SEEK_HOLE), 4 * P);
	assert_int_equal(view_seek(&f.v, P + 7, SEEK_HOLE), 4 * P);
	assert_int_equal(view_seek(&f.v, P + 7, SEEK_DATA), P + 7);
	assert_int_equal(view_seek(&f.v, 4 * P, SEEK_HOLE), 4 * P);
	assert_int_equal(view_seek(&f.v, 5 * P, SEEK_HOLE), 5 * P);
	assert_int_equal(view_seek(&f.v, 4 * P, SEEK_DATA), -ENXIO);
	assert_int_equal(view_seek(&f.v, 6 * P + 9, SEEK_DATA), -ENXIO);
	assert_int_equal(view_seek(&f.v, 6 * P + 10, SEEK_HOLE), -ENXIO);
	assert_int_equal(view_seek(&f.v, 6 * P + 10, SEEK_DATA), -ENXIO);
	free(seg);

	/* a file that is data to the end: SEEK_HOLE answers its size */
	maps[1]->n = 1;
	maps[1]->ext[0] = (struct extent){ 4 * P, 2 * P + 10 };
	assert_int_equal(view_flatten(6 * P + 10,
				      (const struct extent_map *const *)maps, 2,
				      &seg, &nseg), 0);
	assert_int_equal(nseg, 2);
	fake_view(&f, &m, seg, nseg);
	assert_int_equal(view_seek(&f.v, 3, SEEK_HOLE), 6 * P + 10);
	assert_int_equal(view_seek(&f.v, 6 * P + 9, SEEK_HOLE), 6 * P + 10);
	assert_int_equal(view_seek(&f.v, 6 * P + 9, SEEK_DATA), 6 * P + 9);
	free(seg);
	free(maps[0]);
	free(maps[1]);
}

/* ---- view_open on real layer files ---- */

struct env {
	struct cache *cache;
	struct view_env *venv;
};

static struct env env_new(size_t budget)
{
	struct env e = { cache_new(budget), NULL };

	assert_non_null(e.cache);
	e.venv = view_env_new(e.cache, UNIT_PAGE);
	assert_non_null(e.venv);
	return e;
}

/* No map of c is referenced any more: charging all the room the budget
 * has left drops every one (a referenced map would stay). */
static void expect_maps_released(struct cache *c)
{
	struct cache_stats st;
	size_t room;

	cache_get_stats(c, &st);
	room = cache_budget(c) - st.charged;
	assert_int_equal(cache_charge(c, room), 0);
	cache_get_stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.bytes, 0);
	cache_uncharge(c, room);
}

static void env_free(struct env *e)
{
	view_env_free(e->venv);
	cache_free(e->cache);
}

/*
 * Resolves NAME in dirfd and opens its view. The index comes from a scan of
 * the directory, or, when names is not NULL, from that list with no d_type
 * (as on a filesystem that reports DT_UNKNOWN), so that view_open itself
 * must notice a layer that is not a regular file. Returns view_open's value.
 */
static int open_named(struct env *e, int dirfd, const char *name,
		      const char *const *names, size_t nnames, bool async,
		      struct view **v, char *why, size_t len)
{
	struct store_dir *d = NULL;
	const struct store_group *g;
	struct store_chain c = { 0 };
	const char *cwhy = NULL;
	int ret;

	if (names)
		assert_int_equal(store_dir_from_names(names, NULL, nnames, &d), 0);
	else
		assert_int_equal(store_dir_scan(dirfd, &d), 0);
	g = store_dir_find(d, name);
	assert_non_null(g);
	ret = store_chain_resolve(g, &c, &cwhy);
	if (ret)
		fail_msg("chain of %s: %s", name, cwhy);
	why[0] = '\0';
	*v = NULL;
	ret = async ? view_open_async(e->venv, dirfd, &c, name, v, why, len) :
		      view_open(e->venv, dirfd, &c, v, why, len);
	store_chain_free(&c);
	store_dir_free(d);	/* the view keeps no pointer into it */
	return ret;
}

static int open_name(struct env *e, int dirfd, const char *name,
		     const char *const *names, size_t nnames,
		     struct view **v, char *why, size_t len)
{
	return open_named(e, dirfd, name, names, nnames, false, v, why, len);
}

/* Reads [off, off+len) of the view the way the FUSE layer does. */
static size_t view_pread(const struct view *v, uint64_t off, uint64_t len,
			 unsigned char *buf)
{
	size_t n = view_map_read(v, off, len, NULL, 0), done = 0;
	struct view_piece *p = calloc(n ? n : 1, sizeof(*p));
	uint64_t at = off;

	assert_non_null(p);
	assert_int_equal(view_map_read(v, off, len, p, n), n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(p[i].off, at);		/* contiguous */
		assert_true(p[i].len > 0);
		if (p[i].fd < 0) {
			memset(buf + done, 0, p[i].len);
		} else {
			ssize_t r = pread(p[i].fd, buf + done, p[i].len,
					  (off_t)p[i].off);

			assert_int_equal(r, (ssize_t)p[i].len);
		}
		done += p[i].len;
		at += p[i].len;
	}
	free(p);
	return done;
}

static void check_content(const struct view *v, const unsigned char *want,
			  uint64_t size, uint64_t seed)
{
	unsigned char *buf = malloc(size + 1);
	uint64_t s = seed;

	assert_non_null(buf);
	assert_int_equal(view_pread(v, 0, size + 100, buf), size);
	for (uint64_t i = 0; i < size; i++)
		if (buf[i] != want[i])
			fail_msg("byte %llu: %#x, want %#x", (unsigned long long)i,
				 buf[i], want[i]);
	for (int i = 0; i < 300; i++) {
		uint64_t off = unit_below(&s, size);
		uint64_t len = 1 + unit_below(&s, i % 3 ? 3 * P : size);
		uint64_t want_n = len < size - off ? len : size - off;

		memset(buf, 0xcc, size);
		assert_int_equal(view_pread(v, off, len, buf), want_n);
		if (memcmp(buf, want + off, want_n))
			fail_msg("read %llu+%llu differs",
				 (unsigned long long)off, (unsigned long long)len);
	}
	free(buf);
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void test_open_end_to_end(void **state)
{
	struct unit_dir *ud = *state;
	const uint64_t size = 16 * P + 123;
	const struct unit_range rbase[] = { { 0, 10 * P }, { 12 * P, 4 * P + 123 } };
	const struct unit_range rold[] = { { 0, 4 * P } };
	const struct unit_range rd1[] = { { 2 * P, 2 * P }, { 7 * P, P },
					  { 16 * P, 123 } };
	const struct unit_range rd2[] = { { 3 * P, P }, { 10 * P, P } };
	const struct unit_range rd2z = { 5 * P, P };	/* a written zero page */
	const struct unit_range rd3[] = { { 15 * P, 2 } };
	unsigned char *want, *basecopy;
	struct view *v = NULL, *v2 = NULL, *v3 = NULL;
	struct cache_stats st;
	struct env e;
	char why[256];
	int fd;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	want = calloc(1, size);
	basecopy = calloc(1, size);
	e = env_new(1 << 20);
	assert_non_null(want);
	assert_non_null(basecopy);
	/* The layers, merged into want in chain order as they are written. */
	unit_sparse_file_c(ud->fd, "mem.0.base", size, rbase, 2, 0xba5e, want);
	memcpy(basecopy, want, size);
	unit_sparse_file_c(ud->fd, "mem.0.diff", size, rold, 1, 0x01d, NULL);
	unit_sparse_file_c(ud->fd, "mem.1.diff", size, rd1, 3, 0xd1, want);
	fd = unit_sparse_file(ud->fd, "mem.2.diff", size, rd2, 2, 0xd2, want);
	{
		unsigned char zero[UNIT_PAGE] = { 0 };

		unit_pwrite_all(fd, zero, P, rd2z.off);
		memset(want + rd2z.off, 0, P);
	}
	close(fd);
	unit_sparse_file_c(ud->fd, "mem", 10, NULL, 0, 0, NULL);	/* shadowed */
	unit_sparse_file_c(ud->fd, "vmstate.bin", P, rold, 0, 0, NULL);
	/* the zero page hides base data */
	assert_false(all_zero(basecopy + 5 * P, P));
	assert_true(all_zero(want + 5 * P, P));
	/* page 11 is a hole in every layer */
	assert_true(all_zero(want + 11 * P, P));

	assert_int_equal(open_name(&e, ud->fd, "mem", NULL, 0, &v, why,
				   sizeof(why)), 0);
	assert_non_null(v);
	assert_int_equal(v->size, size);
	assert_int_equal(v->nlayers, 3);
	assert_string_equal(v->layers[0].fname, "mem.0.base");
	assert_string_equal(v->layers[1].fname, "mem.1.diff");
	assert_string_equal(v->layers[2].fname, "mem.2.diff");
	assert_int_equal(v->seg[v->nseg].off, size);
	assert_int_equal(v->data_bytes, size - P);
	assert_int_equal(v->seg[view_find(v, 5 * P)].layer, 2);
	assert_int_equal(v->seg[view_find(v, 3 * P)].layer, 2);
	assert_int_equal(v->seg[view_find(v, 2 * P)].layer, 1);
	assert_int_equal(v->seg[view_find(v, 16 * P + 5)].layer, 1);
	assert_int_equal(v->seg[view_find(v, 10 * P)].layer, 2);
	assert_int_equal(v->seg[view_find(v, 11 * P)].layer, VIEW_ZERO);
	assert_int_equal(v->seg[view_find(v, 0)].layer, 0);
	assert_int_equal(view_seek(v, 0, SEEK_HOLE), 11 * P);
	assert_int_equal(view_seek(v, 11 * P, SEEK_DATA), 12 * P);
	assert_int_equal(view_seek(v, 12 * P, SEEK_HOLE), size);
	check_content(v, want, size, 1);
	st = (struct cache_stats){ 0 };
	cache_get_stats(e.cache, &st);
	assert_int_equal(st.misses, 3);
	assert_int_equal(st.entries, 3);

	/* a second open of the same chain scans nothing */
	assert_int_equal(open_name(&e, ud->fd, "mem", NULL, 0, &v2, why,
				   sizeof(why)), 0);
	cache_get_stats(e.cache, &st);
	assert_int_equal(st.misses, 3);
	assert_int_equal(st.hits, 3);
	assert_int_equal(v2->nseg, v->nseg);
	/* field by field: struct view_seg has padding memcmp would see */
	for (size_t i = 0; i <= v->nseg; i++) {
		assert_int_equal(v2->seg[i].off, v->seg[i].off);
		assert_int_equal(v2->seg[i].layer, v->seg[i].layer);
	}
	view_put(v2);

	/* a new diff is a new version; only it is scanned */
	{
		unsigned char *want3 = malloc(size);

		assert_non_null(want3);
		memcpy(want3, want, size);
		unit_sparse_file_c(ud->fd, "mem.3.diff", size, rd3, 1, 0xd3, want3);
		memset(want3 + 15 * P + 2, 0, P - 2);	/* rest of its page */
		assert_int_equal(open_name(&e, ud->fd, "mem", NULL, 0, &v3, why,
					   sizeof(why)), 0);
		assert_int_equal(v3->nlayers, 4);
		cache_get_stats(e.cache, &st);
		assert_int_equal(st.misses, 4);
		assert_int_equal(st.hits, 6);
		check_content(v3, want3, size, 3);
		free(want3);
	}

	/* the old version still reads the same, even with its layers gone */
	view_get(v);
	assert_int_equal(v->refs, 2);
	view_put(v);
	for (const char *const *n = (const char *const[]){ "mem.0.base",
	     "mem.1.diff", "mem.2.diff", "mem.3.diff", NULL }; *n; n++)
		assert_int_equal(unlinkat(ud->fd, *n, 0), 0);
	check_content(v, want, size, 2);
	view_put(v);
	view_put(v3);
	env_free(&e);
	free(want);
	free(basecopy);
}

/* Reads [off, off+len) with view_read_pieces(), map or no map. */
static size_t view_pread_any(struct view *v, uint64_t off, uint64_t len,
			     unsigned char *buf)
{
	struct view_piece stack[4], *p;
	size_t n, done = 0;
	char why[256];

	assert_int_equal(view_read_pieces(v, off, len, stack, 4, &p, &n, why,
					  sizeof(why)), 0);
	for (size_t i = 0; i < n; i++) {
		if (p[i].fd < 0)
			memset(buf + done, 0, p[i].len);
		else
			assert_int_equal(pread(p[i].fd, buf + done, p[i].len,
					       (off_t)p[i].off), (ssize_t)p[i].len);
		done += p[i].len;
	}
	if (p != stack)
		free(p);
	return done;
}

/* Random reads of v with view_read_pieces() against want. */
static void check_any(struct view *v, const unsigned char *want, uint64_t size,
		      uint64_t seed)
{
	unsigned char *buf = malloc(size + 1);
	uint64_t s = seed;

	assert_non_null(buf);
	assert_int_equal(view_pread_any(v, 0, size + 100, buf), size);
	assert_memory_equal(buf, want, size);
	for (int i = 0; i < 200; i++) {
		uint64_t off = unit_below(&s, size);
		uint64_t len = 1 + unit_below(&s, i % 3 ? 3 * P : size);
		uint64_t want_n = len < size - off ? len : size - off;

		assert_int_equal(view_pread_any(v, off, len, buf), want_n);
		if (memcmp(buf, want + off, want_n))
			fail_msg("read %llu+%llu differs", (unsigned long long)off,
				 (unsigned long long)len);
	}
	free(buf);
}

/*
 * view_open_async(): reads before the map (held back with
 * SNAPFS_BUILD_GATE in fault-injection builds) and after it equal a plain
 * merge of what was written; a dense diff is refused at the open.
 */
static void test_open_async(void **state)
{
	struct unit_dir *ud = *state;
	const uint64_t size = 40 * P + 123;
	unsigned char *want = calloc(1, size);
	struct unit_range r[6];
	struct view *v = NULL;
	uint64_t s = 11;
	char why[256], name[32];
	struct env e;
	bool gated = false;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	assert_non_null(want);
	e = env_new(1 << 20);
	r[0] = (struct unit_range){ 0, 30 * P };
	r[1] = (struct unit_range){ 32 * P, 8 * P + 123 };
	unit_sparse_file_c(ud->fd, "a.0.base", size, r, 2, 0xba5e, want);
	for (unsigned d = 1; d <= 12; d++) {
		unsigned nr = 0;
		uint64_t at = unit_below(&s, 4) * P;

		/* up to 6 runs of whole pages, in order, apart */
		while (nr < 6 && at + 3 * P <= size) {
			r[nr].off = at;
			r[nr].len = (1 + unit_below(&s, 3)) * P;
			at += r[nr++].len + (1 + unit_below(&s, 8)) * P;
		}
		snprintf(name, sizeof(name), "a.%u.diff", d);
		unit_sparse_file_c(ud->fd, name, size, r, nr, 0xd0 + d, want);
	}
#ifdef SNAPFS_FAULT_INJECTION
	{
		char gate[64];
		int fd;

		snprintf(gate, sizeof(gate), "/proc/self/fd/%d/gate", ud->fd);
		fd = openat(ud->fd, "gate", O_CREAT | O_WRONLY, 0600);
		assert_true(fd >= 0);
		close(fd);
		assert_int_equal(setenv("SNAPFS_BUILD_GATE", gate, 1), 0);
		gated = true;
	}
#endif
	assert_int_equal(open_named(&e, ud->fd, "a", NULL, 0, true, &v, why,
				    sizeof(why)), 0);
	if (gated) {
		assert_int_equal(__atomic_load_n(&v->state, __ATOMIC_ACQUIRE),
				 VIEW_BUILDING);
		check_any(v, want, size, 21);
		assert_int_equal(__atomic_load_n(&v->state, __ATOMIC_ACQUIRE), VIEW_BUILDING);
		assert_int_equal(unlinkat(ud->fd, "gate", 0), 0);
		unsetenv("SNAPFS_BUILD_GATE");
	} else {
		check_any(v, want, size, 21);	/* before or after: right */
	}
	assert_int_equal(view_wait(v), 0);
	assert_int_equal(view_build_error(v, why, sizeof(why)), 0);
	check_any(v, want, size, 22);
	check_content(v, want, size, 23);
	view_put(v);

	/* a dense diff is refused at the open, not later */
	r[0] = (struct unit_range){ 0, size };
	unit_sparse_file_c(ud->fd, "a.13.diff", size, r, 1, 0xdd, NULL);
	v = NULL;
	assert_int_equal(open_named(&e, ud->fd, "a", NULL, 0, true, &v, why,
				    sizeof(why)), -EIO);
	assert_null(v);
	if (!strstr(why, "a.13.diff") || !strstr(why, "no holes"))
		fail_msg("why \"%s\"", why);
	env_free(&e);
	free(want);
}

/* A dense diff of a one-page file is fine: it cannot hide anything. */
static void test_open_one_page(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range all = { 0, P };
	unsigned char want[UNIT_PAGE];
	struct env e = env_new(1 << 20);
	struct cache_stats st;
	struct view *v = NULL;
	char why[256];

	unit_sparse_file_c(ud->fd, "p.0.base", P, &all, 1, 5, want);
	unit_sparse_file_c(ud->fd, "p.1.diff", P, &all, 1, 6, want);
	assert_int_equal(open_name(&e, ud->fd, "p", NULL, 0, &v, why,
				   sizeof(why)), 0);
	/* the view needs no map once flattened: it gave them all back, and
	 * its own segments are counted against the budget */
	cache_get_stats(e.cache, &st);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.charged, v->charged);
	assert_int_equal(v->charged, (v->nseg + 1) * sizeof(*v->seg));
	expect_maps_released(e.cache);
	assert_int_equal(v->nseg, 1);
	assert_int_equal(v->seg[0].layer, 1);
	check_content(v, want, P, 4);
	view_put(v);

	/* and an empty base alone makes an empty view */
	unit_sparse_file_c(ud->fd, "z.0.base", 0, NULL, 0, 0, NULL);
	assert_int_equal(open_name(&e, ud->fd, "z", NULL, 0, &v, why,
				   sizeof(why)), 0);
	assert_int_equal(v->size, 0);
	assert_int_equal(v->nseg, 0);
	assert_int_equal(v->data_bytes, 0);
	assert_int_equal(view_map_read(v, 0, 10, NULL, 0), 0);
	assert_int_equal(view_seek(v, 0, SEEK_DATA), -ENXIO);
	view_put(v);
	env_free(&e);
}

static void expect_refused(struct env *e, struct unit_dir *ud,
			   const char *const *names, size_t nnames,
			   const char *has1, const char *has2)
{
	struct view *v = NULL;
	char why[256];

	assert_int_equal(open_name(e, ud->fd, "mem", names, nnames, &v, why,
				   sizeof(why)), -EIO);
	assert_null(v);
	print_message("refused as expected: %s\n", why);
	if (!strstr(why, has1) || !strstr(why, has2))
		fail_msg("why \"%s\" lacks \"%s\" or \"%s\"", why, has1, has2);
}

static void test_open_sizes_differ(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range r = { P, P };
	struct env e = env_new(1 << 20);

	unit_sparse_file_c(ud->fd, "mem.0.base", 8 * P, &r, 1, 1, NULL);
	unit_sparse_file_c(ud->fd, "mem.1.diff", 8 * P, &r, 1, 2, NULL);
	unit_sparse_file_c(ud->fd, "mem.2.diff", 9 * P, &r, 1, 3, NULL);
	expect_refused(&e, ud, NULL, 0, "mem.2.diff", "different sizes");
	env_free(&e);
}

static void test_open_dense_diff(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range r = { P, P }, all = { 0, 8 * P };
	struct cache_stats st;
	struct env e;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	e = env_new(1 << 20);
	unit_sparse_file_c(ud->fd, "mem.0.base", 8 * P, &all, 1, 1, NULL);
	unit_sparse_file_c(ud->fd, "mem.1.diff", 8 * P, &r, 1, 2, NULL);
	unit_sparse_file_c(ud->fd, "mem.2.diff", 8 * P, &all, 1, 3, NULL);
	expect_refused(&e, ud, NULL, 0, "mem.2.diff", "no holes");
	/* every map reference was given back, and nothing stays charged */
	cache_get_stats(e.cache, &st);
	assert_int_equal(st.misses, 3);
	assert_int_equal(st.charged, 0);
	expect_maps_released(e.cache);
	env_free(&e);
}

/* With only room bytes of e's budget left, the open of name is refused
 * (-ENOMEM), the cause naming has and the budget's option; the budget
 * holds, and the room is given back after. */
static void expect_refused_for_room(struct env *e, int dirfd, const char *name,
				    size_t room, const char *has)
{
	size_t taken = cache_budget(e->cache) - room;
	struct cache_stats st;
	struct view *v = NULL;
	char why[256];

	assert_int_equal(cache_charge(e->cache, taken), 0);
	assert_int_equal(open_name(e, dirfd, name, NULL, 0, &v, why, sizeof(why)), -ENOMEM);
	assert_null(v);
	print_message("refused as expected: %s\n", why);
	assert_non_null(strstr(why, has));
	assert_non_null(strstr(why, "cache_mb"));
	cache_get_stats(e->cache, &st);
	assert_int_equal(st.charged, taken);
	assert_true(st.bytes + st.charged <= cache_budget(e->cache));
	cache_uncharge(e->cache, taken);
}

/*
 * The extent-map budget bounds views' segments too: a chain whose layer map
 * does not fit the room left is refused while it is scanned, one whose
 * segments do not fit is refused once flattened, both with -ENOMEM and a
 * cause that names the budget; the same chain opens once there is room,
 * and a view gives its charge back when freed.
 */
static void test_open_budget(void **state)
{
	struct unit_dir *ud = *state;
	enum { PAGES = 128, DIRTY = 64 };
	const struct unit_range all = { 0, PAGES * P };
	struct unit_range rd[DIRTY];
	unsigned char *want = malloc(PAGES * P);
	size_t hdr = sizeof(struct extent_map), ext = sizeof(struct extent);
	size_t maps = 2 * hdr + (1 + DIRTY) * ext;	/* base's and diff's */
	size_t segs;
	struct env e = env_new(1 << 20);
	struct cache_stats st;
	struct view *v = NULL;
	char why[256];

	UNIT_REQUIRE_PAGE_HOLES(ud);
	assert_non_null(want);
	for (unsigned i = 0; i < DIRTY; i++)
		rd[i] = (struct unit_range){ (2 * i + 1) * P, P };
	unit_sparse_file_c(ud->fd, "b.0.base", PAGES * P, &all, 1, 21, want);
	unit_sparse_file_c(ud->fd, "b.1.diff", PAGES * P, rd, DIRTY, 22, want);

	/* learn what the view's segments take */
	assert_int_equal(open_name(&e, ud->fd, "b", NULL, 0, &v, why, sizeof(why)), 0);
	segs = v->charged;
	assert_int_equal(segs, (v->nseg + 1) * sizeof(*v->seg));
	assert_true(segs > maps);
	view_put(v);
	cache_get_stats(e.cache, &st);
	assert_int_equal(st.charged, 0);

	/* room for the maps, not for the segments */
	expect_refused_for_room(&e, ud->fd, "b", (maps + segs) / 2, "segments");
	/* room for the base's map, not for the diff's */
	expect_maps_released(e.cache);
	expect_refused_for_room(&e, ud->fd, "b", hdr + ext + hdr + DIRTY * ext / 2,
				"b.1.diff");

	/* with the room back, the same chain opens and reads right */
	assert_int_equal(open_name(&e, ud->fd, "b", NULL, 0, &v, why, sizeof(why)), 0);
	check_content(v, want, PAGES * P, 7);
	view_put(v);
	cache_get_stats(e.cache, &st);
	assert_int_equal(st.charged, 0);
	env_free(&e);
	free(want);
}

/*
 * A map big enough for a first-level index (view.c: 256 segments or more):
 * three diffs write random pages of a 12 MiB base, so the map has a few
 * thousand segments. view_find() must give what a linear scan of the map
 * gives at every stretch boundary, around it and at random offsets, and
 * reads must equal the merge computed here.
 */
static void test_open_indexed(void **state)
{
	struct unit_dir *ud = *state;
	const uint64_t size = 3072 * P + 77, npages = 3073;
	const struct unit_range all = { 0, size };
	unsigned char *want = malloc(size);
	struct unit_range r[600];
	uint64_t s = 42;
	struct view *v;
	char why[256];
	struct env e;

	UNIT_REQUIRE_PAGE_HOLES(ud);
	assert_non_null(want);
	e = env_new(64 << 20);
	unit_sparse_file_c(ud->fd, "mem.0.base", size, &all, 1, 1, want);
	for (int d = 1; d <= 3; d++) {
		char name[32];

		for (int i = 0; i < 600; i++) {
			uint64_t pg = unit_below(&s, npages);

			r[i] = (struct unit_range){ pg * P, pg == npages - 1 ? 77 : P };
		}
		snprintf(name, sizeof(name), "mem.%d.diff", d);
		unit_sparse_file_c(ud->fd, name, size, r, 600, 10 + (uint64_t)d, want);
	}
	assert_int_equal(open_name(&e, ud->fd, "mem", NULL, 0, &v, why, sizeof(why)), 0);
	assert_int_equal(view_wait(v), 0);
	assert_true(v->nseg >= 256);
	assert_non_null(v->seg_index);
	/* 16 bytes a segment, and the index at most a quarter byte more;
	 * all of it charged to the budget */
	assert_true(v->index_len <= v->nseg / 16 + 1);
	assert_int_equal(v->charged, (v->nseg + 1) * sizeof(*v->seg) +
				     v->index_len * sizeof(*v->seg_index));
	assert_true(v->charged * 4 <= (v->nseg + 1) * 65);
	for (int i = 0; i < 20000; i++) {
		uint64_t off, k = unit_below(&s, v->index_len);
		size_t lin = 0;

		switch (i % 3) {
		case 0: off = k << v->index_shift; break;
		case 1: off = (k << v->index_shift) + unit_below(&s, 2 * P) - P; break;
		default: off = unit_below(&s, size); break;
		}
		if (off >= size)
			off = size - 1;
		while (lin + 1 < v->nseg && v->seg[lin + 1].off <= off)
			lin++;
		if (view_find(v, off) != lin)
			fail_msg("offset %llu: segment %zu, a scan says %zu",
				 (unsigned long long)off, view_find(v, off), lin);
	}
	check_content(v, want, size, 7);
	view_put(v);
	env_free(&e);
	free(want);
}

static void test_open_symlink(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range r = { P, P };
	static const char *const names[] = { "mem.0.base", "mem.1.diff", "real" };
	static const char *const names2[] = { "mem.0.base", "mem.1.diff" };
	struct env e = env_new(1 << 20);

	unit_sparse_file_c(ud->fd, "mem.0.base", 8 * P, &r, 1, 1, NULL);
	unit_sparse_file_c(ud->fd, "real", 8 * P, &r, 1, 2, NULL);
	assert_int_equal(symlinkat("real", ud->fd, "mem.1.diff"), 0);
	expect_refused(&e, ud, names, 3, "mem.1.diff", "symbolic link");
	/* a symlinked base too */
	assert_int_equal(unlinkat(ud->fd, "mem.1.diff", 0), 0);
	assert_int_equal(renameat(ud->fd, "mem.0.base", ud->fd, "real0"), 0);
	assert_int_equal(symlinkat("real0", ud->fd, "mem.0.base"), 0);
	expect_refused(&e, ud, names2, 1, "mem.0.base", "symbolic link");
	env_free(&e);
}

static void test_open_directory(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range r = { P, P };
	static const char *const names[] = { "mem.0.base", "mem.1.diff" };
	struct env e = env_new(1 << 20);

	unit_sparse_file_c(ud->fd, "mem.0.base", 8 * P, &r, 1, 1, NULL);
	assert_int_equal(mkdirat(ud->fd, "mem.1.diff", 0755), 0);
	expect_refused(&e, ud, names, 2, "mem.1.diff", "not a regular file");
	env_free(&e);
}

/* A layer that went away between the listing and the open. */
static void test_open_missing_layer(void **state)
{
	struct unit_dir *ud = *state;
	const struct unit_range r = { P, P };
	static const char *const names[] = { "mem.0.base", "mem.1.diff",
					     "mem.2.diff" };
	struct env e = env_new(1 << 20);

	unit_sparse_file_c(ud->fd, "mem.0.base", 8 * P, &r, 1, 1, NULL);
	unit_sparse_file_c(ud->fd, "mem.2.diff", 8 * P, &r, 1, 1, NULL);
	expect_refused(&e, ud, names, 3, "mem.1.diff", "No such file");
	env_free(&e);
}

/* Diffs on a filesystem whose holes are coarser than a page (doc/format.md §5). */
static void test_open_coarse_holes(void **state)
{
	struct unit_tmpfs *h = *state;
	const struct unit_range r = { 4 * P, P };
	struct view *v = NULL;
	struct env e;
	char why[256];

	UNIT_REQUIRE_HUGE(h);
	e = env_new(1 << 20);
	unit_sparse_file_c(h->dfd, "mem.0.base", 4 << 20, &r, 1, 1, NULL);
	/* a base alone is fine there: no diff to misread */
	assert_int_equal(open_name(&e, h->dfd, "mem", NULL, 0, &v, why,
				   sizeof(why)), 0);
	assert_int_equal(v->nlayers, 1);
	view_put(v);
	unit_sparse_file_c(h->dfd, "mem.1.diff", 4 << 20, &r, 1, 2, NULL);
	assert_int_equal(open_name(&e, h->dfd, "mem", NULL, 0, &v, why,
				   sizeof(why)), -EIO);
	assert_null(v);
	print_message("refused as expected: %s\n", why);
	assert_non_null(strstr(why, "mem.1.diff"));
	assert_non_null(strstr(why, "coarser"));
	env_free(&e);
}

/* Other threads' gets and puts of an owned view while the owner hands it
 * out (view_get_attached(), else view_attach()) as version.c does. */
struct own_race {
	struct view *v;
	int dirfd;
	pthread_mutex_t owner;	/* the node's lock in version.c */
	const unsigned char *want;
	uint64_t size;
	unsigned rounds;
};

static void *own_race_thread(void *arg)
{
	struct own_race *r = arg;
	unsigned char buf[3 * UNIT_PAGE];
	char why[256];

	for (unsigned i = 0; i < r->rounds; i++) {
		uint64_t off = (i * 7919u) % (r->size - sizeof(buf));

		pthread_mutex_lock(&r->owner);
		if (!view_get_attached(r->v)) {
			assert_int_equal(view_attach(r->v, r->dirfd, why, sizeof(why)), 0);
			view_get(r->v);
		}
		pthread_mutex_unlock(&r->owner);
		/* the layers stay open while this reference is held */
		assert_int_equal(view_pread(r->v, off, sizeof(buf), buf), sizeof(buf));
		if (memcmp(buf, r->want + off, sizeof(buf)))
			fail_msg("round %u: read at %llu differs", i,
				 (unsigned long long)off);
		view_put(r->v);
	}
	return NULL;
}

/*
 * An owned view closes its layers when the put that leaves the owner's
 * reference alone comes, whoever makes it, and keeps its map; they open
 * again on demand and it reads the same bytes.
 */
static void test_owned_detach(void **state)
{
	struct unit_dir *ud = *state;
	const uint64_t size = 32 * P;
	const struct unit_range rbase = { 0, 32 * P };
	const struct unit_range rd1[] = { { 3 * P, 2 * P }, { 20 * P, P } };
	unsigned char *want = malloc(size);
	struct env e = env_new(1 << 20);
	struct own_race r = { .dirfd = ud->fd, .size = size, .rounds = 2000 };
	uint64_t open0 = stats_get(STAT_LAYERS_OPEN);
	pthread_t th[4];
	struct view *v = NULL;
	char why[256];

	assert_non_null(want);
	unit_sparse_file_c(ud->fd, "o.0.base", size, &rbase, 1, 11, want);
	unit_sparse_file_c(ud->fd, "o.1.diff", size, rd1, 2, 12, want);
	assert_int_equal(open_name(&e, ud->fd, "o", NULL, 0, &v, why, sizeof(why)), 0);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0 + 2);

	/* not owned: the last but one put closes nothing */
	view_get(v);
	view_put(v);
	assert_false(v->detached);
	/* owned: it does, and the view keeps its map */
	view_own(v);
	view_get(v);
	assert_true(view_get_attached(v));
	view_put(v);
	assert_false(v->detached);
	view_put(v);
	assert_true(v->detached);
	assert_int_equal(v->layers[0].fd, -1);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0);
	assert_false(view_get_attached(v));
	assert_int_equal(view_attach(v, ud->fd, why, sizeof(why)), 0);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0 + 2);
	view_get(v);
	check_content(v, want, size, 9);
	view_put(v);
	assert_true(v->detached);

	/* four threads taking and dropping references as opens, reads and
	 * closes do: every read finds its layers open */
	r.v = v;
	r.want = want;
	pthread_mutex_init(&r.owner, NULL);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, own_race_thread, &r), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&r.owner);
	assert_true(v->detached);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0);

	/* a layer replaced while detached: the view cannot come back */
	assert_int_equal(unlinkat(ud->fd, "o.1.diff", 0), 0);
	unit_sparse_file_c(ud->fd, "o.1.diff", size, rd1, 1, 13, NULL);
	assert_int_equal(view_attach(v, ud->fd, why, sizeof(why)), -ESTALE);
	print_message("refused as expected: %s\n", why);
	assert_true(v->detached);
	view_put_owned(v);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0);

	/* The owner lets go (a compaction published a new base) while two
	 * handles are open: the layers stay open until the last handle
	 * goes, not the last but one. */
	assert_int_equal(open_name(&e, ud->fd, "o", NULL, 0, &v, why, sizeof(why)), 0);
	view_own(v);
	view_get(v);
	view_get(v);
	view_put_owned(v);
	view_put(v);
	assert_false(v->detached);
	assert_int_equal(v->layers[1].fd >= 0, 1);
	{
		unsigned char buf[2 * UNIT_PAGE];
		off_t got = pread(v->layers[1].fd, buf, sizeof(buf), (off_t)(3 * P));

		assert_int_equal(got, (off_t)sizeof(buf));
	}
	view_put(v);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0);
	env_free(&e);
	free(want);
}

/* ---- moving open files onto a compacted chain (view_move()) ---- */

struct move_race {
	struct view *v;		/* the open files' view */
	const unsigned char *want;
	uint64_t size;
	unsigned rounds;
	unsigned moved_seen;	/* atomic: reads served by the new view */
};

static void *move_race_thread(void *arg)
{
	struct move_race *r = arg;
	unsigned char buf[3 * UNIT_PAGE];

	for (unsigned i = 0; i < r->rounds; i++) {
		uint64_t off = (i * 7919u) % (r->size - sizeof(buf));
		struct view *cur = view_get_current(r->v);

		/* whichever view it is, its layers are open until the put */
		assert_int_equal(view_pread(cur, off, sizeof(buf), buf), sizeof(buf));
		if (memcmp(buf, r->want + off, sizeof(buf)))
			fail_msg("round %u: read at %llu differs", i,
				 (unsigned long long)off);
		if (cur != r->v)
			__atomic_add_fetch(&r->moved_seen, 1, __ATOMIC_RELAXED);
		view_put(cur);
	}
	return NULL;
}

/* Writes want[0..size) densely as name in dirfd: a compaction's new base. */
static void write_dense(int dirfd, const char *name, const unsigned char *want,
			uint64_t size)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, want, size, 0), (ssize_t)size);
	assert_int_equal(close(fd), 0);
}

/*
 * A compaction moves a version's open files onto a view of the new chain:
 * reads go there from then on, and the old view's layers close as soon as
 * only open files hold it, not when the last of them closes; a read
 * under way when the move comes keeps them open until it is done.
 */
static void test_move(void **state)
{
	struct unit_dir *ud = *state;
	const uint64_t size = 32 * P + 77;
	const struct unit_range rbase = { 0, 32 * P + 77 };
	const struct unit_range rd1[] = { { 3 * P, 2 * P }, { 20 * P, P } };
	const struct unit_range rd2[] = { { 4 * P, 3 * P }, { 32 * P, 77 } };
	unsigned char *want = malloc(size);
	struct env e = env_new(1 << 20);
	uint64_t open0 = stats_get(STAT_LAYERS_OPEN);
	struct view *v = NULL, *nv = NULL, *other = NULL, *cur, *reading;
	struct move_race r = { .size = size, .rounds = 3000 };
	pthread_t th[3];
	char why[256];

	assert_non_null(want);
	unit_sparse_file_c(ud->fd, "m.0.base", size, &rbase, 1, 21, want);
	unit_sparse_file_c(ud->fd, "m.1.diff", size, rd1, 2, 22, want);
	unit_sparse_file_c(ud->fd, "m.2.diff", size, rd2, 2, 23, want);
	write_dense(ud->fd, "c.2.base", want, size);
	write_dense(ud->fd, "short.0.base", want, size - 1);

	/* two open files of the 3-layer view; a read under way */
	assert_int_equal(open_name(&e, ud->fd, "m", NULL, 0, &v, why, sizeof(why)), 0);
	view_handle_hold(v);
	view_get(v);
	view_handle_hold(v);
	reading = view_get_current(v);
	assert_ptr_equal(reading, v);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0 + 3);

	/* a view of another size is never a move's target */
	assert_int_equal(open_name(&e, ud->fd, "short", NULL, 0, &other, why,
				   sizeof(why)), 0);
	assert_false(view_move(v, other));
	view_put(other);

	/* the views a compaction of m's first 2 layers can move: held ones
	 * whose chains begin with those, at least 2 layers long */
	{
		const char *const two[] = { "m.0.base", "m.1.diff" };
		struct layer_id ids[3];
		struct view *older, *unheld, **held;
		size_t k;

		for (int i = 0; i < 3; i++)
			ids[i] = v->layers[i].id;
		assert_int_equal(open_name(&e, ud->fd, "m", two, 2, &older, why,
					   sizeof(why)), 0);
		assert_int_equal(older->nlayers, 2);
		assert_int_equal(open_name(&e, ud->fd, "m", NULL, 0, &unheld, why,
					   sizeof(why)), 0);
		k = view_env_held_prefixes(e.venv, ids, 3, 2, &held);
		assert_int_equal(k, 1);		/* older is not held yet */
		assert_ptr_equal(held[0], v);
		view_put(held[0]);
		free(held);
		view_handle_hold(older);
		k = view_env_held_prefixes(e.venv, ids, 3, 2, &held);
		assert_int_equal(k, 2);
		assert_true((held[0] == v && held[1] == older) ||
			    (held[0] == older && held[1] == v));
		view_put(held[0]);
		view_put(held[1]);
		free(held);
		/* a chain that does not begin with those layers */
		ids[1].ino++;
		assert_int_equal(view_env_held_prefixes(e.venv, ids, 3, 2, &held), 0);
		ids[1].ino--;
		/* nor shorter than what was merged */
		assert_int_equal(view_env_held_prefixes(e.venv, ids, 3, 3, &held), 1);
		view_put(held[0]);
		free(held);
		view_handle_put(older);
		view_put(unheld);
	}

	/* the compacted chain, one layer with the same bytes */
	assert_int_equal(open_name(&e, ud->fd, "c", NULL, 0, &nv, why, sizeof(why)), 0);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0 + 4);
	assert_true(view_move(v, nv));
	{
		struct layer_id ids[3];
		struct view **held;

		for (int i = 0; i < 3; i++)
			ids[i] = v->layers[i].id;
		/* moved: never again */
		assert_int_equal(view_env_held_prefixes(e.venv, ids, 3, 2, &held), 0);
	}
	assert_false(view_move(v, nv));		/* once */
	view_put(nv);				/* v keeps it */

	/* the read under way still has the old layers */
	assert_false(v->detached);
	check_content(reading, want, size, 31);
	/* new reads of the open files go to the new view */
	cur = view_get_current(v);
	assert_ptr_equal(cur, nv);
	check_content(cur, want, size, 32);
	assert_int_equal(view_seek(cur, 0, SEEK_HOLE), (off_t)size);
	view_put(cur);
	assert_false(v->detached);
	/* the read ends: only open files hold v, its layers close */
	view_put(reading);
	assert_true(v->detached);
	assert_int_equal(v->layers[0].fd, -1);
	assert_null(v->seg);		/* and its map, never read again */
	assert_int_equal(v->charged, 0);

	/* a second compaction: nv, which only v's open files read, is found
	 * held and moves on, and its layers close too */
	{
		struct layer_id id = nv->layers[0].id;
		struct view *nv2 = NULL, **held;

		write_dense(ud->fd, "c.3.base", want, size);
		assert_int_equal(unlinkat(ud->fd, "c.2.base", 0), 0);
		assert_int_equal(open_name(&e, ud->fd, "c", NULL, 0, &nv2, why,
					   sizeof(why)), 0);
		assert_int_equal(view_env_held_prefixes(e.venv, &id, 1, 1, &held), 1);
		assert_ptr_equal(held[0], nv);
		assert_true(view_move(nv, nv2));
		view_put(nv2);
		view_put(held[0]);
		free(held);
		assert_true(nv->detached);
		assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0 + 1);
		cur = view_get_current(v);	/* two hops */
		assert_ptr_equal(cur, nv2);
		check_content(cur, want, size, 33);
		view_put(cur);
	}
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0 + 1);
	view_handle_put(v);
	view_handle_put(v);	/* v freed, and with it its reference on nv */
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0);

	/* readers on three threads while the move comes: every read finds
	 * open layers and the right bytes, before and after it */
	assert_int_equal(open_name(&e, ud->fd, "m", NULL, 0, &v, why, sizeof(why)), 0);
	view_handle_hold(v);
	assert_int_equal(open_name(&e, ud->fd, "c", NULL, 0, &nv, why, sizeof(why)), 0);
	r.v = v;
	r.want = want;
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&th[i], NULL, move_race_thread, &r), 0);
	usleep(2000);
	assert_true(view_move(v, nv));
	view_put(nv);
	for (int i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	print_message("%u of %u reads after the move\n", r.moved_seen, 3 * r.rounds);
	assert_true(v->detached);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0 + 1);
	view_handle_put(v);
	assert_int_equal(stats_get(STAT_LAYERS_OPEN), open0);
	env_free(&e);
	free(want);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, unit_dir_setup, unit_dir_teardown)
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_flatten_fixed),
		cmocka_unit_test(test_flatten_random),
		cmocka_unit_test(test_read_seek_fixed),
		cmocka_unit_test(test_read_seek_random),
		T(test_open_async),
		T(test_open_end_to_end),
		T(test_open_one_page),
		T(test_open_sizes_differ),
		T(test_open_dense_diff),
		T(test_open_budget),
		T(test_open_indexed),
		T(test_open_symlink),
		T(test_open_directory),
		T(test_open_missing_layer),
		T(test_owned_detach),
		T(test_move),
		cmocka_unit_test_setup_teardown(test_open_coarse_holes,
						unit_huge_setup,
						unit_tmpfs_teardown),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
