/* cn_blob — the PBS DataBlob container for chunks and .blob files, byte
 * compatible with upstream pbs-datastore/src/data_blob.rs:
 *
 *   plain:      magic[8] crc32[4] payload            (12-byte header)
 *   encrypted:  magic[8] crc32[4] iv[16] tag[16] ct  (44-byte header)
 *
 * The CRC-32 covers everything after the header (for encrypted blobs the
 * ciphertext only). The payload is raw data or one zstd frame (level 1);
 * encrypted+compressed blobs compress first, then encrypt.
 *
 * Compression: upstream keeps the zstd output only if it is strictly
 * shorter than the input. CN_BLOB_COMPRESS additionally runs a cheap
 * incompressibility probe first (cn_blob_probe_incompressible) so that
 * already-compressed content (JPEG, MP4, ...) skips a useless zstd pass; the
 * result is still a valid upstream blob (the uncompressed magic).
 *
 * Decoding verifies, in this order, and returns a distinct code for each:
 * size (-CN_E_TRUNCATED: shorter than its header; -EFBIG: larger than
 * CN_BLOB_MAX_SIZE + 44), magic (-CN_E_MAGIC), CRC (-CN_E_CRC), key presence
 * (-CN_E_NOKEY), GCM tag (-CN_E_TAG), zstd payload (-CN_E_FORMAT, also for
 * output beyond CN_BLOB_MAX_SIZE) and, when asked, the digest (-CN_E_DIGEST).
 *
 * Threading: the functions without a context allocate what they need per
 * call; a struct cn_blob_ctx holds reusable zstd contexts and scratch space
 * for one thread at a time (one per worker) so the hot path does not
 * allocate per chunk.
 */
#ifndef CN_BLOB_H
#define CN_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_chunk.h"
#include "common/cn_util.h"
#include "store/cn_crypt.h"

#define CN_BLOB_HEADER_SIZE 12
#define CN_BLOB_ENC_HEADER_SIZE 44
/* upstream MAX_BLOB_SIZE: largest plaintext DataBlob::encode accepts */
#define CN_BLOB_MAX_SIZE (128u << 20)
/* the largest encoded blob file: the largest plaintext behind the longest
 * header (an incompressible blob is stored uncompressed); a reader refuses
 * a larger file before reading it */
#define CN_BLOB_MAX_ENCODED_SIZE (CN_BLOB_MAX_SIZE + CN_BLOB_ENC_HEADER_SIZE)
/* the backup protocol's limit for one chunk's plaintext */
#define CN_CHUNK_MAX_SIZE (16u << 20)

enum cn_blob_type {
	CN_BLOB_PLAIN,          /* 42ab3807be8370a1 */
	CN_BLOB_ZSTD,           /* 31b958426fb6a37f */
	CN_BLOB_ENCRYPTED,      /* 7b6785be222d4cf0 */
	CN_BLOB_ENCRYPTED_ZSTD, /* e6591bbf0bbfd80b */
};

/* The 8-byte magic of a blob type. */
const uint8_t *cn_blob_magic(enum cn_blob_type type);

/* Compression modes for the encoders' compress argument. */
enum {
	CN_BLOB_COMPRESS_NONE = 0,   /* never compress */
	CN_BLOB_COMPRESS = 1,        /* probe, then zstd level 1 (the default) */
	CN_BLOB_COMPRESS_ALWAYS = 2, /* zstd level 1 without the probe (as upstream) */
};

/* Whether data looks incompressible, judged from 8 evenly spread 4 KiB
 * samples compressed with zstd level 1: incompressible when together they
 * shrink by less than 3%. About 25 µs for a 4 MiB chunk (bench/blob), vs.
 * 0.5-0.8 ms for a useless zstd pass over it. Inputs under 8 KiB are never
 * judged incompressible (compressing them is cheap anyway). Blind spot:
 * redundancy that exists only as long-range repeats (a file stored twice
 * inside one chunk) is not seen; such a chunk is then stored uncompressed,
 * which is still a valid blob. Pure function (allocates a zstd context;
 * the encoders reuse their context's). */
int cn_blob_probe_incompressible(const uint8_t *data, size_t len);

struct cn_blob_ctx; /* opaque: zstd contexts + scratch, one thread at a time */

/* Allocates a context; free with cn_blob_ctx_free() (NULL is ok there).
 * 0 or -ENOMEM. */
int cn_blob_ctx_new(struct cn_blob_ctx **out);
void cn_blob_ctx_free(struct cn_blob_ctx *ctx);

/* Encodes data as a whole DataBlob file (manifest, config, log blobs) and
 * appends the bytes to out. crypt NULL = not encrypted. compress is one of
 * CN_BLOB_COMPRESS_*. Plaintext larger than CN_BLOB_MAX_SIZE: -EFBIG.
 * Returns 0 or a negative code with a message. */
int cn_blob_encode(const uint8_t *data, size_t len, const struct cn_crypt_config *crypt,
		   int compress, struct cn_buf *out);

/* The same with a reusable context (ctx may be NULL). If info is not NULL,
 * *info receives the chosen type. */
int cn_blob_encode_ctx(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
		       const struct cn_crypt_config *crypt, int compress, struct cn_buf *out,
		       enum cn_blob_type *info);

/* Encodes a chunk: computes its digest (cn_chunk_digest with crypt) and its
 * DataBlob, and returns a new chunk (refs = 1, owned by the caller: drop it
 * with cn_chunk_unref) holding the digest, plain_size = len and the encoded
 * bytes. Plaintext larger than CN_CHUNK_MAX_SIZE: -EFBIG. */
int cn_blob_encode_chunk(const uint8_t *data, size_t len, const struct cn_crypt_config *crypt,
			 int compress, struct cn_chunk **out);
/* The same with a reusable context (ctx may be NULL; one thread at a time). */
int cn_blob_encode_chunk_ctx(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
			     const struct cn_crypt_config *crypt, int compress,
			     struct cn_chunk **out);

/* Whether encoding data with this compress mode tries zstd: always for
 * CN_BLOB_COMPRESS_ALWAYS, never for NONE, and for CN_BLOB_COMPRESS when
 * the incompressibility probe does not rule it out (the probe's cost: a
 * few KiB compressed). ctx must not be NULL. 1 or 0. */
int cn_blob_worth_compressing(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
			      int compress);

/* Encodes a chunk without copying its bytes when they are stored as they
 * are: data[0..len) must be preceded by a header's size of the caller's
 * bytes that may be overwritten (CN_BLOB_HEADER_SIZE, CN_BLOB_ENC_HEADER_SIZE
 * when crypt is set). With alt == NULL, or when zstd
 * does not make it smaller, the blob is built in place (the header written
 * before data; encrypted in place) and *blob points before data. With alt
 * (room for CN_BLOB_ENC_HEADER_SIZE + len bytes), zstd is tried and a
 * smaller result is written to alt (*blob = alt; data is left as it was).
 * Sets digest (keyed when encrypting), *blob and *blob_len; the bytes are
 * those cn_blob_encode_chunk gives with CN_BLOB_COMPRESS_ALWAYS (alt set)
 * or _NONE. ctx must not be NULL. 0 or a negative code. */
int cn_blob_encode_chunk_inplace(struct cn_blob_ctx *ctx, uint8_t *data, size_t len,
				 const struct cn_crypt_config *crypt, uint8_t *alt,
				 uint8_t digest[32], uint8_t **blob, size_t *blob_len);

/* Decodes and verifies a DataBlob (see the top of this file for the checks
 * and their codes) and appends the plain content to out. crypt is needed
 * for encrypted blobs (-CN_E_NOKEY without). expected_digest != NULL: also
 * checks that the content hashes to it (keyed when the blob is encrypted).
 * On failure out keeps its previous length. */
int cn_blob_decode(const uint8_t *blob, size_t len, const struct cn_crypt_config *crypt,
		   const uint8_t *expected_digest, struct cn_buf *out);
/* The same with a reusable context (ctx may be NULL; one thread at a time). */
int cn_blob_decode_ctx(struct cn_blob_ctx *ctx, const uint8_t *blob, size_t len,
		       const struct cn_crypt_config *crypt, const uint8_t *expected_digest,
		       struct cn_buf *out);

/* Decodes and verifies like cn_blob_decode_ctx, without copying what needs
 * no decoding: for a plain blob (neither compressed nor encrypted) *out
 * points into blob itself, past the header; any other type is decoded into
 * scratch (emptied first) and *out points there. *out stays valid while
 * blob and scratch are unchanged. ctx may be NULL. A plain blob whose
 * content matches expected_digest is not CRC-checked (the digest covers
 * the same bytes); one that does not match fails with -CN_E_CRC when its
 * CRC is wrong too, else -CN_E_DIGEST, as cn_blob_decode_ctx. */
int cn_blob_decode_view(struct cn_blob_ctx *ctx, const uint8_t *blob, size_t len,
			const struct cn_crypt_config *crypt, const uint8_t *expected_digest,
			struct cn_buf *scratch, const uint8_t **out, size_t *out_len);

/* As cn_blob_decode_view, but blob may be overwritten: an encrypted,
 * uncompressed blob is decrypted within it (*out then points into blob),
 * so that it needs no second buffer. On failure blob's content is
 * undefined. */
int cn_blob_decode_inplace(struct cn_blob_ctx *ctx, uint8_t *blob, size_t len,
			   const struct cn_crypt_config *crypt, const uint8_t *expected_digest,
			   struct cn_buf *scratch, const uint8_t **out, size_t *out_len);

/* Verifies a stored chunk as upstream's verify job does: the container
 * (size, magic, CRC), then, unless it is encrypted and no key is given
 * (upstream cannot look inside either), decodes it and checks the digest
 * and, if expected_size != 0, the plain length (-CN_E_FORMAT when it
 * differs). ctx may be NULL. Returns the blob type (>= 0) or a code. */
int cn_blob_verify_chunk(struct cn_blob_ctx *ctx, const uint8_t *blob, size_t len,
			 const struct cn_crypt_config *crypt, const uint8_t digest[32],
			 uint64_t expected_size);

/* Checks the container only, without decoding: size, magic and CRC (what
 * the server checks on blob upload and on load). Returns the blob type
 * (>= 0) or -CN_E_TRUNCATED, -CN_E_MAGIC, -CN_E_CRC, -EFBIG. */
int cn_blob_check(const uint8_t *blob, size_t len);

/* The type of a blob from its magic, without any other check: the type, or
 * -CN_E_TRUNCATED (too short for its header) or -CN_E_MAGIC. No message. */
int cn_blob_type(const uint8_t *blob, size_t len);

#endif
