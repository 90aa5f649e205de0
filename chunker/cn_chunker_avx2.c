/* AVX2 find kernel: 8 window positions per step, no serial per-byte chain.
 * Same algebra as the AVX-512 kernel (see cn_chunker_avx512.c): with
 * U_j = rotr(T[b_j], j mod 32) and the prefix xor S, the window hash is
 * H_k = rotl(S_{k+64} ^ S_k, (k+63) mod 32).  AVX2 has no 256-entry byte
 * permute, and vpgatherdd measured slower than the scalar kernel on the
 * development machine (AMD Zen 5), so T is looked up with scalar loads from
 * one 8-byte load per 8 bytes into a 64-entry block, then processed in
 * registers. */
#include "chunker/cn_chunker_impl.h"

#ifdef CN_CHUNKER_X86
#include <immintrin.h>

#define CN_AVX2 __attribute__((target("avx2")))

CN_AVX2 static inline __m256i rotl_v(__m256i x, __m256i r, __m256i r32)
{
	return _mm256_or_si256(_mm256_sllv_epi32(x, r), _mm256_srlv_epi32(x, r32));
}

CN_AVX2 size_t cn_chunker_find_avx2(const uint8_t *base, size_t count,
				    uint32_t mask, uint32_t thr)
{
	if (count < CN_CHUNKER_SIMD_MIN)
		return cn_chunker_find_scalar(base, count, mask, thr);
	/* k = 0 here; the vector loop starts at k = 1 */
	if ((cn_buzhash_window(base) & mask) >= thr)
		return 0;

	/* rotation amounts j mod 32 for the four 8-byte groups of 32 bytes,
	 * and 32 minus them (a shift by 32 gives 0 in AVX2, as wanted for
	 * rotations by 0) */
	__m256i rot[4], rot32[4];
	for (int g = 0; g < 4; g++) {
		rot[g] = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
					  _mm256_set1_epi32(8 * g));
		rot32[g] = _mm256_sub_epi32(_mm256_set1_epi32(32), rot[g]);
	}
	const __m256i zero = _mm256_setzero_si256();
	const __m256i last = _mm256_set1_epi32(7);
	/* Filter as in the AVX-512 kernel: rotr(mask & ~3, r) must be set in
	 * W; candidates are confirmed with the exact test. */
	__m256i mrot[4];
	for (int g = 0; g < 4; g++)
		mrot[g] = rotl_v(_mm256_set1_epi32((int)(mask & ~3u)), rot32[g], rot[g]);
	__m256i carry = zero;
	__m256i hist[8];
	for (int i = 0; i < 8; i++)
		hist[i] = zero;
	size_t v = 0; /* 64-byte block index, as in the AVX-512 kernel */

	for (; 64 * v + 64 <= count + 63; v++) {
		uint32_t tv[64] __attribute__((aligned(32)));
		const uint8_t *blk = base + 64 * v;
		for (int j = 0; j < 64; j += 8) {
			uint64_t w;
			__builtin_memcpy(&w, blk + j, 8);
#pragma GCC unroll 8
			for (int i = 0; i < 8; i++)
				tv[j + i] = cn_buzhash_table[(w >> (8 * i)) & 0xff];
		}
#pragma GCC unroll 8
		for (int q = 0; q < 8; q++) {
			__m256i t = _mm256_load_si256((const __m256i *)(tv + 8 * q));
			/* u = rotr(t, j mod 32) = rotl(t, 32 - j mod 32) */
			__m256i u = rotl_v(t, rot32[q & 3], rot[q & 3]);
			/* inclusive prefix xor over the 8 lanes */
			__m256i p = u;
			p = _mm256_xor_si256(p, _mm256_slli_si256(p, 4));
			p = _mm256_xor_si256(p, _mm256_slli_si256(p, 8));
			__m256i lowtop = _mm256_permute2x128_si256(p, p, 0x08); /* [0 | low half] */
			p = _mm256_xor_si256(p, _mm256_shuffle_epi32(lowtop, 0xff));
			__m256i s = _mm256_xor_si256(p, carry);
			carry = _mm256_xor_si256(carry, _mm256_permutevar8x32_epi32(p, last));
			__m256i w = _mm256_xor_si256(s, hist[q]);
			hist[q] = s;
			if (v == 0)
				continue;
			__m256i hit = _mm256_cmpeq_epi32(_mm256_and_si256(w, mrot[q & 3]), mrot[q & 3]);
			unsigned m = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(hit));
			while (m) {
				size_t k = 64 * v + 8 * (size_t)q - 63 + (size_t)__builtin_ctz(m);
				if ((cn_buzhash_window(base + k) & mask) >= thr)
					return k;
				m &= m - 1;
			}
		}
	}
	size_t k = 64 * v - 63;
	return k + cn_chunker_find_scalar(base + k, count - k, mask, thr);
}
#endif
