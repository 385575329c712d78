/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Deterministic pseudo-random numbers for the test tools: xoshiro256**
 * seeded through splitmix64. The same seed gives the same store or the same
 * read pattern on every machine, so a failure is reproduced with its -s SEED.
 * Not for anything that needs unpredictability.
 */
#ifndef SNAPFS_TESTS_RNG_H
#define SNAPFS_TESTS_RNG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct rng {
	uint64_t s[4];
};

/* Advances *state and returns the next splitmix64 output. */
static inline uint64_t rng_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/*
 * Hashes two words into one, for deriving independent seeds from a master
 * seed and an index (a chain, a layer, a page). Not commutative.
 */
static inline uint64_t rng_mix(uint64_t a, uint64_t b)
{
	uint64_t x = a;
	uint64_t h = rng_splitmix64(&x);

	x = h ^ (b * 0xd6e8feb86659fd93ULL);
	return rng_splitmix64(&x);
}

/* Seeds r from one word; every seed (0 included) gives a valid state. */
static inline void rng_seed(struct rng *r, uint64_t seed)
{
	uint64_t x = seed;

	for (int i = 0; i < 4; i++)
		r->s[i] = rng_splitmix64(&x);
}

static inline uint64_t rng_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* Returns the next 64 uniformly distributed bits (xoshiro256**). */
static inline uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rng_rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rng_rotl(s[3], 45);
	return result;
}

/* Returns a uniform value in [0, n) without modulo bias; n must be > 0. */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	uint64_t threshold = -n % n;	/* 2^64 mod n */
	uint64_t x;

	do
		x = rng_next(r);
	while (x < threshold);
	return x % n;
}

/* Returns a uniform value in [lo, hi] (inclusive); lo must be <= hi. */
static inline uint64_t rng_between(struct rng *r, uint64_t lo, uint64_t hi)
{
	if (lo == 0 && hi == UINT64_MAX)
		return rng_next(r);
	return lo + rng_below(r, hi - lo + 1);
}

/* Returns 1 with probability pct/100 (pct >= 100: always), else 0. */
static inline int rng_percent(struct rng *r, unsigned int pct)
{
	return rng_below(r, 100) < pct;
}

/*
 * Returns a value in [lo, hi] (lo >= 1) whose bit length is uniform, so
 * small values are as likely as large ones: good for read lengths and sizes.
 */
static inline uint64_t rng_log_between(struct rng *r, uint64_t lo, uint64_t hi)
{
	int lo_bits = 64 - __builtin_clzll(lo | 1);
	int hi_bits = 64 - __builtin_clzll(hi | 1);
	int bits = (int)rng_between(r, (uint64_t)lo_bits, (uint64_t)hi_bits);
	uint64_t min = bits == 1 ? 0 : 1ULL << (bits - 1);
	uint64_t max = bits == 64 ? UINT64_MAX : (1ULL << bits) - 1;

	if (min < lo)
		min = lo;
	if (max > hi)
		max = hi;
	return rng_between(r, min, max);
}

/* Fills len bytes at buf with random bytes. */
static inline void rng_fill(struct rng *r, void *buf, size_t len)
{
	unsigned char *p = buf;
	uint64_t x;

	while (len >= sizeof(x)) {
		x = rng_next(r);
		memcpy(p, &x, sizeof(x));
		p += sizeof(x);
		len -= sizeof(x);
	}
	if (len) {
		x = rng_next(r);
		memcpy(p, &x, len);
	}
}

#endif /* SNAPFS_TESTS_RNG_H */
