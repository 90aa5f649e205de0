/* AVX-512 (VBMI) find kernel: 64 window positions per step and no serial
 * per-byte chain.
 *
 * With U_j = rotr(T[b_j], j mod 32) the window hash is
 *   H_k = rotl(W_k, (k+63) mod 32),  W_k = U_k ^ ... ^ U_{k+63},
 * and W_k = S_{k+64} ^ S_k for the prefix xor S_x = U_0 ^ ... ^ U_{x-1}.
 * Each step looks up T for 64 bytes in registers (vpermi2b on the four
 * byte planes of the table: no gathers), then per 16 bytes rotates them
 * into U, forms the prefix xor (log steps inside the register; the carry
 * between registers is one xor on the loop-carried path), and the 16
 * window hashes ending there with the S register of 64 bytes earlier. */
#include "chunker/cn_chunker_impl.h"
#include "chunker/cn_chunker_table.h"

#ifdef CN_CHUNKER_X86
#include <immintrin.h>

#define CN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

/* planes[p][i] = byte p of T[i], for vpermi2b lookups */
#define CN_PLANE0(v) (uint8_t)((v) & 0xff),
#define CN_PLANE1(v) (uint8_t)(((v) >> 8) & 0xff),
#define CN_PLANE2(v) (uint8_t)(((v) >> 16) & 0xff),
#define CN_PLANE3(v) (uint8_t)(((v) >> 24) & 0xff),
static const uint8_t planes[4][256] __attribute__((aligned(64))) = {
	{CN_BUZHASH_VALUES(CN_PLANE0)},
	{CN_BUZHASH_VALUES(CN_PLANE1)},
	{CN_BUZHASH_VALUES(CN_PLANE2)},
	{CN_BUZHASH_VALUES(CN_PLANE3)},
};

/* x' = the 64 bytes with 4-byte groups transposed as a 4x4 matrix, so that
 * the byte-to-dword unpacking below (which works per 128-bit lane) yields
 * dwords in input order: tidx[16L+4q+m] = 16q+4L+m. */
#define CN_T4(L, q) 16 * q + 4 * L, 16 * q + 4 * L + 1, 16 * q + 4 * L + 2, 16 * q + 4 * L + 3
#define CN_T16(L) CN_T4(L, 0), CN_T4(L, 1), CN_T4(L, 2), CN_T4(L, 3)
static const uint8_t tidx_bytes[64] __attribute__((aligned(64))) = {
	CN_T16(0), CN_T16(1), CN_T16(2), CN_T16(3),
};

CN_AVX512 size_t cn_chunker_find_avx512(const uint8_t *base, size_t count,
					uint32_t mask, uint32_t thr)
{
	if (count < CN_CHUNKER_SIMD_MIN)
		return cn_chunker_find_scalar(base, count, mask, thr);
	/* k = 0 here; the vector loop starts at k = 1 */
	if ((cn_buzhash_window(base) & mask) >= thr)
		return 0;

	/* tab[p][q]: byte p of T[64q .. 64q+63] */
	__m512i tab[4][4];
	for (int p = 0; p < 4; p++)
		for (int q = 0; q < 4; q++)
			tab[p][q] = _mm512_load_si512(planes[p] + 64 * q);
	const __m512i tidx = _mm512_load_si512(tidx_bytes);
	const __m512i rot[2] = {
		_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
		_mm512_setr_epi32(16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31),
	};
	const __m512i zero = _mm512_setzero_si512();
	const __m512i last = _mm512_set1_epi32(15);
	/* Filter: the bits of mask except the lowest two must all be set in
	 * H = rotl(W, r), i.e. rotr(mhi, r) in W; the rare candidates are
	 * confirmed with the exact test on a freshly computed hash. */
	const __m512i mhi = _mm512_set1_epi32((int)(mask & ~3u));
	const __m512i mrot[2] = {_mm512_rorv_epi32(mhi, rot[0]), _mm512_rorv_epi32(mhi, rot[1])};
	__m512i carry = zero; /* S at the start of the current register */
	__m512i hist[4] = {zero, zero, zero, zero};
	size_t v = 0; /* 64-byte block index */

	/* Block v reads base[64v .. 64v+64) and tests k in [64v-63, 64v]
	 * (none for v = 0); all of them are < count while 64v+64 <= count+63. */
	for (; 64 * v + 64 <= count + 63; v++) {
		__m512i x = _mm512_permutexvar_epi8(tidx, _mm512_loadu_si512(base + 64 * v));
		__mmask64 hi = _mm512_movepi8_mask(x);
		__m512i b[4];
#pragma GCC unroll 4
		for (int p = 0; p < 4; p++) {
			__m512i lo = _mm512_permutex2var_epi8(tab[p][0], x, tab[p][1]);
			__m512i up = _mm512_permutex2var_epi8(tab[p][2], x, tab[p][3]);
			b[p] = _mm512_mask_blend_epi8(hi, lo, up);
		}
		__m512i w01l = _mm512_unpacklo_epi8(b[0], b[1]);
		__m512i w01h = _mm512_unpackhi_epi8(b[0], b[1]);
		__m512i w23l = _mm512_unpacklo_epi8(b[2], b[3]);
		__m512i w23h = _mm512_unpackhi_epi8(b[2], b[3]);
		__m512i t[4] = {
			_mm512_unpacklo_epi16(w01l, w23l),
			_mm512_unpackhi_epi16(w01l, w23l),
			_mm512_unpacklo_epi16(w01h, w23h),
			_mm512_unpackhi_epi16(w01h, w23h),
		};
#pragma GCC unroll 4
		for (int q = 0; q < 4; q++) {
			/* bytes j = 64v+16q+l; j mod 32 = 16(q&1) + l */
			__m512i u = _mm512_rorv_epi32(t[q], rot[q & 1]);
			__m512i p = u;
			p = _mm512_xor_si512(p, _mm512_alignr_epi32(p, zero, 15));
			p = _mm512_xor_si512(p, _mm512_alignr_epi32(p, zero, 14));
			p = _mm512_xor_si512(p, _mm512_alignr_epi32(p, zero, 12));
			p = _mm512_xor_si512(p, _mm512_alignr_epi32(p, zero, 8));
			/* s lane l = S_{j0+l+1} */
			__m512i s = _mm512_xor_si512(p, carry);
			carry = _mm512_xor_si512(carry, _mm512_permutexvar_epi32(last, p));
			/* lane l: ~W_k for k = j0+l-63 (H_k = rotl(W_k, (k+63) mod 32)) */
			__m512i nw = _mm512_ternarylogic_epi32(s, hist[q], s, 0xc3);
			hist[q] = s;
			if (v == 0)
				continue;
			__mmask16 m = _mm512_testn_epi32_mask(nw, mrot[q & 1]);
			while (m) {
				size_t k = 64 * v + 16 * (size_t)q - 63 + (size_t)__builtin_ctz(m);
				if ((cn_buzhash_window(base + k) & mask) >= thr)
					return k;
				m &= (__mmask16)(m - 1);
			}
		}
	}

	/* k in [1, 64v] are tested (v >= 1 here since count >= 128). */
	size_t k = 64 * v - 63;
	return k + cn_chunker_find_scalar(base + k, count - k, mask, thr);
}
#endif
