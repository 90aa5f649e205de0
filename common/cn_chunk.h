/* cn_chunk — an encoded chunk (DataBlob bytes) with its digest, shared by
 * reference count between the pipeline and every target it is sent to, so
 * that N targets never mean N copies. Thread-safe reference counting.
 *
 * The bytes are either the chunk's own (cn_chunk_new) or borrowed from a
 * buffer that the chunk gives back through a release function when the
 * last reference goes (cn_chunk_new_borrowed): the pipeline encodes into
 * pooled buffers, in place where it can. */
#ifndef CN_CHUNK_H
#define CN_CHUNK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Gives back a borrowed buffer: base as passed to cn_chunk_new_borrowed,
 * used = the bytes from base to the end of the chunk's data. */
typedef void (*cn_chunk_release_fn)(void *ctx, uint8_t *base, size_t used);

struct cn_chunk {
	atomic_int refs;
	uint8_t digest[32];   /* chunk digest (keyed SHA-256 when encrypted) */
	uint64_t plain_size;  /* size of the chunk's plain content */
	size_t len;           /* bytes of encoded DataBlob in data */
	size_t cap;           /* bytes available at data */
	uint8_t *data;        /* the encoded bytes (own or borrowed) */
	cn_chunk_release_fn release; /* NULL: data is the chunk's own */
	void *release_ctx;
	uint8_t *release_base;
	uint8_t own[];
};

/* Allocates a chunk with room for cap encoded bytes, refs = 1, len = 0.
 * Returns NULL on out of memory. */
struct cn_chunk *cn_chunk_new(size_t cap);

/* A chunk (refs = 1) whose len bytes at data are borrowed: they lie in a
 * buffer starting at base, handed back with release(ctx, base, used) when
 * the last reference is dropped (also when this call fails: NULL on out of
 * memory, the buffer then given back at once). */
struct cn_chunk *cn_chunk_new_borrowed(uint8_t *data, size_t len, uint8_t *base,
				       cn_chunk_release_fn release, void *ctx);

/* Takes one more reference; returns c. */
struct cn_chunk *cn_chunk_ref(struct cn_chunk *c);

/* Drops one reference; frees the chunk (giving a borrowed buffer back)
 * when it was the last. NULL is ok. */
void cn_chunk_unref(struct cn_chunk *c);

#endif
