/* CRC-32 (IEEE, reflected 0xEDB88320) by carry-less multiplication: the
 * folding method of Intel's white paper "Fast CRC Computation for Generic
 * Polynomials Using PCLMULQDQ Instruction" (Gopal et al., 2009), in its
 * bit-reflected form, as zlib-ng and Chromium's zlib use it.
 *
 * A 128-bit lane A holding the state of the bytes up to some point is
 * "folded" D bits forward, onto the lane that many bits later, with two
 * carry-less multiplications: A.lo * K1 ^ A.hi * K2, where K1 = x^(D+32)
 * mod P and K2 = x^(D-32) mod P (bit-reflected, 33 bits). Folding keeps
 * the CRC's value, so any number of lanes can run side by side and be
 * folded into one at the end; 128 bits are then reduced to 32 by one more
 * fold and Barrett's reduction. The constants below are those values (the
 * unit test checks every kernel against the slice-by-8 tables, so a wrong
 * constant cannot pass).
 *
 * Both kernels work on whole 16-byte blocks at any alignment (unaligned
 * loads) and leave the last len % 16 bytes to the tables. Compiled with
 * per-function target attributes and used only when the dispatcher in
 * cn_crc32.c has seen the CPU support them. */
#include "store/cn_crc32_impl.h"

#ifdef CN_CRC32_X86

#include <immintrin.h>

#define PCLMUL_TARGET __attribute__((target("pclmul,sse4.1")))
#define VPCLMUL_TARGET __attribute__((target("pclmul,sse4.1,avx512f,avx512vl,vpclmulqdq")))

/* K1 (low qword) and K2 (high qword) for folding D bits forward. */
#define K_FOLD_128_LO 0x1751997d0ull /* D = 128: the next 16-byte block */
#define K_FOLD_128_HI 0x0ccaa009eull
#define K_FOLD_512_LO 0x154442bd4ull /* D = 512: 64 bytes */
#define K_FOLD_512_HI 0x1c6e41596ull
#define K_FOLD_2048_LO 0x11542778aull /* D = 2048: 256 bytes */
#define K_FOLD_2048_HI 0x1322d1430ull
#define K_64 0x163cd6124ull  /* x^64 mod P: 96 bits to 64 */
#define K_POLY 0x1db710641ull /* P, reflected */
#define K_MU 0x1f7011641ull   /* floor(x^64 / P), reflected: Barrett's constant */

/* a folded onto next: a.lo * k.lo ^ a.hi * k.hi ^ next. */
static inline PCLMUL_TARGET __m128i fold128(__m128i a, __m128i k, __m128i next)
{
	__m128i lo = _mm_clmulepi64_si128(a, k, 0x00);
	__m128i hi = _mm_clmulepi64_si128(a, k, 0x11);
	return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

/* The 32-bit CRC state of a 128-bit lane (not yet post-inverted). */
static inline PCLMUL_TARGET uint32_t reduce128(__m128i a)
{
	const __m128i mask32 = _mm_setr_epi32(~0, 0, ~0, 0);
	const __m128i k96 = _mm_set_epi64x((long long)K_FOLD_128_HI, 0);
	const __m128i k64 = _mm_set_epi64x(0, (long long)K_64);
	const __m128i poly = _mm_set_epi64x((long long)K_MU, (long long)K_POLY);
	/* 128 -> 96 bits: the low qword times x^96 onto the high one */
	__m128i t = _mm_clmulepi64_si128(a, k96, 0x10);
	a = _mm_xor_si128(_mm_srli_si128(a, 8), t);
	/* 96 -> 64 bits */
	t = _mm_srli_si128(a, 4);
	a = _mm_clmulepi64_si128(_mm_and_si128(a, mask32), k64, 0x00);
	a = _mm_xor_si128(a, t);
	/* Barrett: q = (a mod x^32) * mu mod x^32, crc = a ^ q * P */
	t = _mm_clmulepi64_si128(_mm_and_si128(a, mask32), poly, 0x10);
	t = _mm_clmulepi64_si128(_mm_and_si128(t, mask32), poly, 0x00);
	return (uint32_t)_mm_extract_epi32(_mm_xor_si128(a, t), 1);
}

/* Folds the 16-byte blocks of p[0..len) (len >= 64, a multiple of 16) into
 * the state, starting from x0 = the first block with the state mixed in;
 * returns the lane holding all of it. */
static inline PCLMUL_TARGET __m128i fold_blocks(uint32_t state, const uint8_t *p, size_t len)
{
	const __m128i k512 = _mm_set_epi64x((long long)K_FOLD_512_HI, (long long)K_FOLD_512_LO);
	const __m128i k128 = _mm_set_epi64x((long long)K_FOLD_128_HI, (long long)K_FOLD_128_LO);
	__m128i x0 = _mm_loadu_si128((const __m128i *)p);
	__m128i x1 = _mm_loadu_si128((const __m128i *)(p + 16));
	__m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32));
	__m128i x3 = _mm_loadu_si128((const __m128i *)(p + 48));
	x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)state));
	p += 64;
	len -= 64;
	while (len >= 64) {
		x0 = fold128(x0, k512, _mm_loadu_si128((const __m128i *)p));
		x1 = fold128(x1, k512, _mm_loadu_si128((const __m128i *)(p + 16)));
		x2 = fold128(x2, k512, _mm_loadu_si128((const __m128i *)(p + 32)));
		x3 = fold128(x3, k512, _mm_loadu_si128((const __m128i *)(p + 48)));
		p += 64;
		len -= 64;
	}
	x0 = fold128(x0, k128, x1);
	x0 = fold128(x0, k128, x2);
	x0 = fold128(x0, k128, x3);
	for (; len >= 16; p += 16, len -= 16)
		x0 = fold128(x0, k128, _mm_loadu_si128((const __m128i *)p));
	return x0;
}

PCLMUL_TARGET uint32_t cn_crc32_pclmul(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;
	if (len < 64)
		return cn_crc32_portable(crc, data, len);
	size_t n = len & ~(size_t)15;
	uint32_t state = reduce128(fold_blocks(~crc, p, n));
	return cn_crc32_portable(~state, p + n, len - n);
}

/* a folded onto next, in each of the four 128-bit lanes. */
static inline VPCLMUL_TARGET __m512i fold512(__m512i a, __m512i k, __m512i next)
{
	__m512i lo = _mm512_clmulepi64_epi128(a, k, 0x00);
	__m512i hi = _mm512_clmulepi64_epi128(a, k, 0x11);
	return _mm512_ternarylogic_epi64(lo, hi, next, 0x96); /* lo ^ hi ^ next */
}

VPCLMUL_TARGET uint32_t cn_crc32_vpclmul(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;
	if (len < 256)
		return cn_crc32_pclmul(crc, data, len);
	const __m512i k2048 = _mm512_broadcast_i32x4(
		_mm_set_epi64x((long long)K_FOLD_2048_HI, (long long)K_FOLD_2048_LO));
	const __m512i k512 = _mm512_broadcast_i32x4(
		_mm_set_epi64x((long long)K_FOLD_512_HI, (long long)K_FOLD_512_LO));
	const __m128i k128 = _mm_set_epi64x((long long)K_FOLD_128_HI, (long long)K_FOLD_128_LO);
	__m512i x0 = _mm512_loadu_si512(p);
	__m512i x1 = _mm512_loadu_si512(p + 64);
	__m512i x2 = _mm512_loadu_si512(p + 128);
	__m512i x3 = _mm512_loadu_si512(p + 192);
	x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)~crc)));
	p += 256;
	len -= 256;
	while (len >= 256) {
		x0 = fold512(x0, k2048, _mm512_loadu_si512(p));
		x1 = fold512(x1, k2048, _mm512_loadu_si512(p + 64));
		x2 = fold512(x2, k2048, _mm512_loadu_si512(p + 128));
		x3 = fold512(x3, k2048, _mm512_loadu_si512(p + 192));
		p += 256;
		len -= 256;
	}
	/* four accumulators into one, then what is left in 64-byte steps */
	x0 = fold512(x0, k512, x1);
	x0 = fold512(x0, k512, x2);
	x0 = fold512(x0, k512, x3);
	for (; len >= 64; p += 64, len -= 64)
		x0 = fold512(x0, k512, _mm512_loadu_si512(p));
	/* its four lanes into one, then the 16-byte blocks left */
	__m128i a = _mm512_extracti32x4_epi32(x0, 0);
	a = fold128(a, k128, _mm512_extracti32x4_epi32(x0, 1));
	a = fold128(a, k128, _mm512_extracti32x4_epi32(x0, 2));
	a = fold128(a, k128, _mm512_extracti32x4_epi32(x0, 3));
	for (; len >= 16; p += 16, len -= 16)
		a = fold128(a, k128, _mm_loadu_si128((const __m128i *)p));
	return cn_crc32_portable(~reduce128(a), p, len);
}

#endif
