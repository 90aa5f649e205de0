/* Portable pieces of the chunker: upstream's table and the scalar find
 * kernel (the fast path every CPU runs; the SIMD kernels fall back to it
 * for their tails). */
#include "chunker/cn_chunker_impl.h"
#include "chunker/cn_chunker_table.h"

#define CN_TABLE_ENTRY(v) v,
const uint32_t cn_buzhash_table[256] = {CN_BUZHASH_VALUES(CN_TABLE_ENTRY)};
#undef CN_TABLE_ENTRY

/* Rolls the hash one byte at a time, but two bytes per step on the
 * critical path: with u_k = T[out_k] ^ T[in_k] (independent of h),
 *   H_{k+1} = rotl(H_k, 1) ^ u_k
 *   H_{k+2} = rotl(H_k, 2) ^ (rotl(u_k, 1) ^ u_{k+1})
 * so the loop-carried chain is one rotate and one xor per two bytes; the
 * odd hash is computed off that chain. */
size_t cn_chunker_find_scalar(const uint8_t *base, size_t count,
			      uint32_t mask, uint32_t thr)
{
	const uint32_t *T = cn_buzhash_table;
	size_t k = 0;

	if (count == 0)
		return 0;
	uint32_t h = cn_buzhash_window(base);
	if ((h & mask) >= thr)
		return 0;
	/* Invariant: h = H_k, already tested. */
	while (k + 2 < count) {
		uint32_t u0 = T[base[k]] ^ T[base[k + 64]];
		uint32_t u1 = T[base[k + 1]] ^ T[base[k + 65]];
		uint32_t h1 = cn_rotl32(h, 1) ^ u0;
		uint32_t h2 = cn_rotl32(h, 2) ^ (cn_rotl32(u0, 1) ^ u1);
		if ((h1 & mask) >= thr)
			return k + 1;
		if ((h2 & mask) >= thr)
			return k + 2;
		h = h2;
		k += 2;
	}
	while (++k < count) {
		h = cn_rotl32(h, 1) ^ T[base[k - 1]] ^ T[base[k + 63]];
		if ((h & mask) >= thr)
			return k;
	}
	return count;
}
