/* cn_chunk_reader — random-access reads of an indexed stream (a pxar
 * archive, a catalog) whose chunks come from a cn_source: every chunk is
 * decoded, decrypted and checked against its digest before a byte of it
 * is handed out.
 *
 * A source with read_chunk (S3) hands a chunk's bytes over as they
 * arrive; they are decrypted and checked on the way (store/
 * cn_blob_stream.h) and the chunk is handed out only once all of it has
 * passed.
 *
 * A small cache of decoded chunks (2 x threads + 1 slots, least recently
 * used replaced; chunks still ahead of the reader are kept over consumed
 * ones) serves repeated reads. Read-ahead: once reads have moved
 * forward chunk by chunk twice in a row, the next `threads` chunks are
 * fetched and decoded on worker threads (one each) while the caller
 * consumes the current one; a caller that will read the stream front to
 * back says so (cn_chunk_reader_sequential) and read-ahead starts with
 * its first read. Reads that jump (a single-file restore following goodbye
 * tables) fetch only the chunks they touch, so a file restore reads only
 * the chunks it needs plus, for files spanning more than two chunks, at
 * most one read-ahead window past their end.
 *
 * read_at and view_at may be called by one thread at a time (the
 * decoder), release by any thread; the worker threads are the reader's
 * own.
 */
#ifndef CN_CHUNK_READER_H
#define CN_CHUNK_READER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/cn_target.h"
#include "store/cn_crypt.h"
#include "store/cn_index.h"

struct cn_chunk_reader;

struct cn_chunk_reader_stats {
	uint64_t chunks_fetched;    /* chunks read from the source and verified */
	uint64_t bytes_fetched;     /* their encoded bytes */
	uint64_t bytes_decoded;     /* their plain bytes */
};

/* Creates a reader over idx (borrowed) fetching from src (borrowed, open
 * on the right snapshot) with crypt (borrowed; NULL for plain data).
 * threads = read-ahead workers (0 = twice the number of CPUs). *out freed with
 * cn_chunk_reader_free(). 0 or a negative code with a message. */
int cn_chunk_reader_new(struct cn_source *src, const struct cn_index *idx,
			const struct cn_crypt_config *crypt, size_t threads,
			struct cn_chunk_reader **out);

/* Tells r that its caller reads the stream from the front (a whole
 * restore, a verify): read-ahead starts with the first read instead of
 * after two forward steps, so the first chunks are not fetched one by
 * one. Later jumps fall back to the usual rule. Call before reading. */
void cn_chunk_reader_sequential(struct cn_chunk_reader *r);

/* Reads exactly len bytes at off (off + len <= stream size) into buf.
 * Returns 0, or a negative code with a message naming the chunk (its
 * digest and index position): -CN_E_MISSING missing chunk, -CN_E_DIGEST /
 * -CN_E_CRC / ... corrupt chunk, -ERANGE beyond the end. The signature fits
 * struct cn_pxar_input.read_at (ctx = the reader). */
int cn_chunk_reader_read_at(void *reader, uint64_t off, void *buf, size_t len);

/* Lends the bytes at off without copying them: *data points to *got
 * bytes (1..len, up to the end of the chunk holding off) of the verified
 * chunk, which stays in the cache, unchanged, until
 * cn_chunk_reader_release(reader, *token). Errors as read_at; len > 0.
 * The signature fits struct cn_pxar_input.view_at. Each view pins one
 * cache slot: a caller holds at most a few at a time. */
int cn_chunk_reader_view_at(void *reader, uint64_t off, size_t len, const uint8_t **data,
			    size_t *got, void **token);

/* Ends a view of cn_chunk_reader_view_at (token NULL: nothing). */
void cn_chunk_reader_release(void *reader, void *token);

/* The number of chunks the cache holds (views pin them). */
size_t cn_chunk_reader_cache_slots(const struct cn_chunk_reader *r);

/* Counters so far. */
void cn_chunk_reader_stats(struct cn_chunk_reader *r, struct cn_chunk_reader_stats *st);

/* Stops the workers and frees the reader. NULL is ok. */
void cn_chunk_reader_free(struct cn_chunk_reader *r);

#endif
