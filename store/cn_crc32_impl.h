/* Internals of the CRC-32 shared by its implementation files (not part of
 * the public API). Every kernel has cn_crc32()'s contract: it continues a
 * CRC-32 (pre- and post-inverted, as zlib's crc32()) over len bytes at any
 * alignment, and gives bit for bit the portable slice-by-8's result. */
#ifndef CN_CRC32_IMPL_H
#define CN_CRC32_IMPL_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t (*cn_crc32_fn)(uint32_t crc, const void *data, size_t len);

/* Slice-by-8 over constant tables: the portable reference, and the tail of
 * the folding kernels. */
uint32_t cn_crc32_portable(uint32_t crc, const void *data, size_t len);

/* Below this length cn_crc32() skips the dispatcher: the tables are as fast
 * there and need no set-up. */
#define CN_CRC32_SIMD_MIN 64

#if defined(__x86_64__) && defined(__GNUC__)
#define CN_CRC32_X86 1
/* Carry-less multiplication folding (Intel, "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ Instruction", 2009): four 128-bit
 * lanes folded 64 bytes at a time, then Barrett reduction. PCLMULQDQ and
 * SSE4.1. */
uint32_t cn_crc32_pclmul(uint32_t crc, const void *data, size_t len);
/* The same folding on 512-bit vectors (VPCLMULQDQ with AVX-512): four
 * zmm accumulators, 256 bytes a step. */
uint32_t cn_crc32_vpclmul(uint32_t crc, const void *data, size_t len);
#endif

#endif
