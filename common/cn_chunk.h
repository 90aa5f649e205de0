/* cn_chunk — an encoded chunk (DataBlob bytes) with its digest, shared by
 * reference count between the pipeline and every target it is sent to, so
 * that N targets never mean N copies. Thread-safe reference counting. */
#ifndef CN_CHUNK_H
#define CN_CHUNK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct cn_chunk {
	atomic_int refs;
	uint8_t digest[32];   /* chunk digest (keyed SHA-256 when encrypted) */
	uint64_t plain_size;  /* size of the chunk's plain content */
	size_t len;           /* bytes of encoded DataBlob in data */
	size_t cap;           /* allocated bytes in data */
	uint8_t data[];
};

/* Allocates a chunk with room for cap encoded bytes, refs = 1, len = 0.
 * Returns NULL on out of memory. */
struct cn_chunk *cn_chunk_new(size_t cap);

/* Takes one more reference; returns c. */
struct cn_chunk *cn_chunk_ref(struct cn_chunk *c);

/* Drops one reference; frees the chunk when it was the last. NULL is ok. */
void cn_chunk_unref(struct cn_chunk *c);

#endif
