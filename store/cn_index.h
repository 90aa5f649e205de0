/* cn_index — PBS index files, byte compatible with upstream
 * pbs-datastore/src/{dynamic,fixed}_index.rs:
 *
 *   .didx: 4096-byte header (magic, uuid[16], ctime i64, index_csum[32],
 *          zero), then 40-byte entries (end offset u64 LE, digest[32]).
 *   .fidx: 4096-byte header (magic, uuid, ctime, index_csum, size u64,
 *          chunk_size u64, zero), then 32-byte digests, one per chunk_size
 *          slot; count = ceil(size / chunk_size).
 *
 * Index checksum (the manifest csum, the csum of the close call): SHA-256
 * over the entry bytes: (end LE || digest) per entry for dynamic indexes,
 * the digests for fixed ones.
 *
 * Parsing copies what it needs; the caller's bytes may be freed afterwards.
 * A parsed index is immutable and may be read from several threads.
 */
#ifndef CN_INDEX_H
#define CN_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_index_types.h"
#include "common/cn_util.h"

#define CN_INDEX_HEADER_SIZE 4096
#define CN_DIDX_ENTRY_SIZE 40
#define CN_FIDX_ENTRY_SIZE 32
/* Largest index file read (26 million dynamic entries: a 100 TiB stream
 * at the 4 MiB average chunk size). */
#define CN_INDEX_MAX_FILE_SIZE ((uint64_t)1 << 30)

struct cn_index; /* opaque parsed index */

/* Parses a whole .didx or .fidx file (the magic decides) and checks it:
 * header present (-CN_E_TRUNCATED), magic (-CN_E_MAGIC), entry area size
 * (-CN_E_TRUNCATED when not a whole number of entries or, for fixed
 * indexes, not ceil(size/chunk_size) digests), dynamic end offsets strictly
 * increasing (-CN_E_FORMAT), fixed chunk_size a non-zero power of two
 * (-CN_E_FORMAT), and the header's stored csum equal to the checksum of
 * the entries (-CN_E_CHECKSUM; upstream writers always store it).
 * On success *out is the caller's, freed with cn_index_free(). */
int cn_index_parse(const uint8_t *data, size_t len, struct cn_index **out);

/* Checks an index file's size against its header before the rest is
 * read: hdr holds the file's first hdr_len bytes (all of the 4096-byte
 * header unless the file is shorter), file_size its size. The same
 * checks and codes as cn_index_parse for magic and entry area; on
 * success *kind and *count (each may be NULL) tell what the file holds.
 * Lets a reader refuse a huge or inconsistent file without reading it. */
int cn_index_check_size(const uint8_t *hdr, size_t hdr_len, uint64_t file_size,
			enum cn_index_kind *kind, size_t *count);

/* Frees an index. NULL is ok. */
void cn_index_free(struct cn_index *idx);

/* Dynamic (.didx) or fixed (.fidx), from the magic. */
enum cn_index_kind cn_index_kind(const struct cn_index *idx);

/* Number of chunks. */
size_t cn_index_count(const struct cn_index *idx);

/* Total bytes of the indexed stream: dynamic = last end offset (0 when
 * empty), fixed = image size from the header. */
uint64_t cn_index_size(const struct cn_index *idx);

/* Fixed indexes: the chunk size from the header; dynamic: 0. */
uint64_t cn_index_chunk_size(const struct cn_index *idx);

/* Header fields: the 16 raw uuid bytes (copied out) and the creation time
 * (Unix seconds) as stored. */
void cn_index_uuid(const struct cn_index *idx, uint8_t uuid[16]);
int64_t cn_index_ctime(const struct cn_index *idx);

/* Entry i (< count): the byte range [*start, *end) of the stream and the
 * chunk digest. Any output pointer may be NULL. */
void cn_index_entry(const struct cn_index *idx, size_t i, uint64_t *start, uint64_t *end,
		    uint8_t digest[32]);

/* Borrowed pointer to the 32-byte digest of entry i (< count). */
const uint8_t *cn_index_digest(const struct cn_index *idx, size_t i);

/* The entry holding stream byte offset (binary search for dynamic, a
 * division for fixed). 0 and *i set, or -ERANGE when offset >= size. */
int cn_index_find(const struct cn_index *idx, uint64_t offset, size_t *i);

/* The index checksum (computed from the entries; equals the stored one,
 * which parse verified). */
void cn_index_csum(const struct cn_index *idx, uint8_t csum[32]);

/* Compares size and checksum with what a manifest lists for this file.
 * 0, or -CN_E_CHECKSUM with a message naming both values. */
int cn_index_verify(const struct cn_index *idx, uint64_t size, const uint8_t csum[32]);

/* Incremental index checksum, for writers that stream entries (the engine,
 * the PBS target's close call). Feed entries in order. */
struct cn_index_csum_ctx;

/* Starts a checksum for an index of kind; *out freed with
 * cn_index_csum_free(). 0, -ENOMEM or -CN_E_CRYPT (OpenSSL failure). */
int cn_index_csum_new(enum cn_index_kind kind, struct cn_index_csum_ctx **out);
/* Adds one entry (end_offset is ignored for fixed indexes). */
void cn_index_csum_update(struct cn_index_csum_ctx *c, uint64_t end_offset,
			  const uint8_t digest[32]);
/* Writes the checksum of the entries fed so far; the context stays usable
 * only for cn_index_csum_free(). */
void cn_index_csum_final(struct cn_index_csum_ctx *c, uint8_t csum[32]);
/* Frees the context. NULL is ok. */
void cn_index_csum_free(struct cn_index_csum_ctx *c);

/* Index file writer: builds the file bytes in memory (40 bytes per chunk). */
struct cn_index_writer;

/* Starts an index. uuid NULL = a fresh random version-4 UUID. ctime = the
 * creation time written into the header (upstream: now). For fixed indexes
 * size is the image size and chunk_size a power of two (upstream: 4 MiB);
 * both are ignored for dynamic indexes. *out freed with
 * cn_index_writer_free(). 0 or -EINVAL/-ENOMEM/-CN_E_CRYPT. */
int cn_index_writer_new(enum cn_index_kind kind, const uint8_t uuid[16], int64_t ctime,
			uint64_t size, uint64_t chunk_size, struct cn_index_writer **out);

/* Appends entries in stream order. Dynamic: end offsets must increase
 * strictly. Fixed: entry i must end at min((i+1)*chunk_size, size), and no
 * more than ceil(size/chunk_size) entries. Violations: -EINVAL. */
int cn_index_writer_append(struct cn_index_writer *w, const struct cn_index_entry *entries,
			   size_t n);

/* Finishes the file: appends its bytes (header with csum, entries) to out
 * and writes the checksum to csum (may be NULL). Fixed: all slots must have
 * been appended (-EINVAL). The writer is spent: only _free follows. */
int cn_index_writer_finish(struct cn_index_writer *w, struct cn_buf *out, uint8_t csum[32]);

/* Frees the writer (finished or not). NULL is ok. */
void cn_index_writer_free(struct cn_index_writer *w);

/* Entries appended so far and the stream size they cover. */
size_t cn_index_writer_count(const struct cn_index_writer *w);
uint64_t cn_index_writer_size(const struct cn_index_writer *w);

#endif
