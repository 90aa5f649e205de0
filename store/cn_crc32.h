/* cn_crc32 — CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the
 * checksum of DataBlobs. Same values as zlib's crc32() and Rust's crc32fast,
 * which upstream uses. Slice-by-8 over constant tables: no init call, no
 * mutable state, safe from any thread. */
#ifndef CN_CRC32_H
#define CN_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC-32 over len more bytes. Start with crc = 0; the result of
 * one call can be passed as crc to the next to checksum data in pieces.
 * cn_crc32(0, "123456789", 9) == 0xCBF43926. */
uint32_t cn_crc32(uint32_t crc, const void *data, size_t len);

#endif
