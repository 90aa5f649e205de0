/* cn_pxar_format — the pure functions of the pxar/catalog formats:
 * SipHash-2-4 (goodbye hashes), the goodbye BST permutation, catalog
 * varints. Written from the SipHash paper (Aumasson, Bernstein 2012) and
 * pxar's binary_tree_array.rs; no I/O, no allocation. */
#include "pxar/cn_pxar_format.h"

#include <string.h>

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                              \
	do {                                                  \
		v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0;      \
		v0 = ROTL64(v0, 32);                          \
		v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2;      \
		v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0;      \
		v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2;      \
		v2 = ROTL64(v2, 32);                          \
	} while (0)

uint64_t cn_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
	uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
	uint64_t v3 = k1 ^ 0x7465646279746573ULL;
	size_t full = len & ~(size_t)7;

	for (size_t i = 0; i < full; i += 8) {
		uint64_t m = 0;
		for (int j = 0; j < 8; j++)
			m |= (uint64_t)p[i + j] << (8 * j);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	/* last block: remaining bytes, length in the top byte */
	uint64_t b = (uint64_t)len << 56;
	for (size_t j = 0; j < (len & 7); j++)
		b |= (uint64_t)p[full + j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t cn_pxar_hash_filename(const void *name, size_t len)
{
	return cn_siphash24(CN_PXAR_HASH_KEY_0, CN_PXAR_HASH_KEY_1, name, len);
}

/* casync/pxar permutation: the element at sorted index o+m becomes the
 * root of the subtree at slot i; left part recursively at 2i+1, right part
 * at 2i+2. The recursion depth is log2(n). */
static void permute_inner(size_t *slot, size_t n, size_t o, unsigned e, size_t i)
{
	size_t p = (size_t)1 << e;
	size_t t = p + (p >> 1) - 1;
	size_t m = n > t ? p - 1 : p - 1 - (t - n);

	slot[i] = o + m;
	if (m > 0)
		permute_inner(slot, m, o, e - 1, 2 * i + 1);
	if (m + 1 < n)
		permute_inner(slot, n - m - 1, o + m + 1, e - 1, 2 * i + 2);
}

void cn_pxar_goodbye_permute(size_t n, size_t *slot)
{
	if (n == 0)
		return;
	unsigned e = 0;
	while (((size_t)2 << e) <= n)
		e++;  /* e = floor(log2(n)) */
	permute_inner(slot, n, 0, e, 0);
}

size_t cn_catalog_put_u64(uint8_t out[10], uint64_t v)
{
	size_t n = 0;
	while (v >= 128) {
		out[n++] = (uint8_t)((v & 0x7f) | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

size_t cn_catalog_put_i64(uint8_t out[11], int64_t v)
{
	if (v >= 0)
		return cn_catalog_put_u64(out, (uint64_t)v);
	/* magnitude as u64; -(v+1)+1 avoids overflow for INT64_MIN */
	uint64_t d = (uint64_t)(-(v + 1)) + 1;
	size_t n = 0;
	while (d >= 128) {
		out[n++] = (uint8_t)((d & 0x7f) | 0x80);
		d >>= 7;
	}
	out[n++] = (uint8_t)(d | 0x80);
	out[n++] = 0;
	return n;
}
