/* Internals of the chunker shared by its implementation files (not part of
 * the public API).
 *
 * Every fast path is a "find" kernel over a contiguous buffer; the streaming
 * driver in cn_chunker.c feeds it.  The kernels rest on one fact of
 * upstream's buzhash: once a chunk is 64 bytes long, h depends only on the
 * last 64 bytes, h = XOR_{k=0..63} rotl(T[w_k], 63-k) for the window
 * w_0..w_63 (the outgoing byte needs no rotation because 64 = 0 mod 32).
 * Boundaries are tested only from the minimum size on (>= 16 KiB), so the
 * hash can be started from scratch 64 bytes before the minimum. */
#ifndef CN_CHUNKER_IMPL_H
#define CN_CHUNKER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define CN_CHUNKER_WINDOW 64

/* Upstream's BUZHASH_TABLE (pbs-datastore/src/chunker.rs), index = byte. */
extern const uint32_t cn_buzhash_table[256];

static inline uint32_t cn_rotl32(uint32_t x, unsigned r)
{
	r &= 31;
	return (x << r) | (x >> ((32 - r) & 31));
}

/* The buzhash of the 64-byte window p[0..64). */
static inline uint32_t cn_buzhash_window(const uint8_t *p)
{
	uint32_t h = 0;
	for (int i = 0; i < CN_CHUNKER_WINDOW; i++)
		h = cn_rotl32(h, 1) ^ cn_buzhash_table[p[i]];
	return h;
}

/* A find kernel: for k = 0, 1, ..., count-1 takes the hash H_k of the
 * window base[k .. k+64) and returns the first k with
 * (H_k & mask) >= thr, or count when there is none.  Reads exactly
 * base[0 .. count+63) (nothing when count is 0). */
typedef size_t (*cn_chunker_find_fn)(const uint8_t *base, size_t count,
				      uint32_t mask, uint32_t thr);

/* The scalar kernel (portable C); the SIMD kernels use it for tails. */
size_t cn_chunker_find_scalar(const uint8_t *base, size_t count,
			      uint32_t mask, uint32_t thr);

/* Below this count the SIMD kernels leave the work to the scalar one. */
#define CN_CHUNKER_SIMD_MIN 128

#if defined(__x86_64__) && defined(__GNUC__)
#define CN_CHUNKER_X86 1
size_t cn_chunker_find_avx2(const uint8_t *base, size_t count,
			    uint32_t mask, uint32_t thr);
size_t cn_chunker_find_avx512(const uint8_t *base, size_t count,
			      uint32_t mask, uint32_t thr);
#endif

#endif
