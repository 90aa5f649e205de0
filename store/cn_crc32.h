/* cn_crc32 — CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the
 * checksum of DataBlobs. Same values as zlib's crc32() and Rust's crc32fast,
 * which upstream uses. A portable slice-by-8 over constant tables and
 * carry-less-multiplication kernels (PCLMULQDQ; VPCLMULQDQ with AVX-512),
 * the fastest the CPU supports picked once at run time. No init call; safe
 * from any thread. */
#ifndef CN_CRC32_H
#define CN_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC-32 over len more bytes. Start with crc = 0; the result of
 * one call can be passed as crc to the next to checksum data in pieces.
 * cn_crc32(0, "123456789", 9) == 0xCBF43926. */
uint32_t cn_crc32(uint32_t crc, const void *data, size_t len);

/* The implementations, for tests and benchmarks: 0 is the portable
 * slice-by-8, the others are faster and give the same results. */
int cn_crc32_impl_count(void);
/* Name of implementation i ("slice8", "pclmul", ...), NULL when out of range. */
const char *cn_crc32_impl_name(int i);
/* 1 when this CPU can run implementation i, else 0. */
int cn_crc32_impl_supported(int i);
/* The implementation cn_crc32() uses: the fastest supported. */
int cn_crc32_impl_best(void);
/* cn_crc32() through implementation i (the portable one when this CPU
 * cannot run i). */
uint32_t cn_crc32_impl(int i, uint32_t crc, const void *data, size_t len);

#endif
