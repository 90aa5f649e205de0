/* cn_blob_stream — decodes a chunk's DataBlob while it arrives in pieces
 * (the body of an S3 GET, handed over by libcurl from its own buffer), so
 * that its bytes are touched once while they are in the CPU's cache
 * instead of being copied into a buffer and read again by each check.
 *
 * An encrypted, uncompressed blob (the usual chunk of an encrypted backup:
 * photos do not compress) is decrypted piece by piece into the caller's
 * buffer, its CRC taken over the ciphertext and its keyed digest over the
 * plaintext as they pass; finish checks the CRC, then the GCM tag, then
 * the digest, as cn_blob_decode_inplace does, with the same codes and
 * messages. Any other blob (plain, compressed, or encrypted without a key
 * to decrypt it) is collected as it came and decoded by
 * cn_blob_decode_inplace at finish. Nothing is handed out before finish
 * has checked everything.
 *
 * One stream decodes one blob at a time and is reused for the next
 * (begin starts over, also in the middle of a blob: a retried request).
 * One thread at a time.
 */
#ifndef CN_BLOB_STREAM_H
#define CN_BLOB_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_crypt.h"

struct cn_blob_stream;

/* A stream for *out, freed with cn_blob_stream_free. 0 or -ENOMEM. */
int cn_blob_stream_new(struct cn_blob_stream **out);

/* Frees st. NULL is ok. */
void cn_blob_stream_free(struct cn_blob_stream *st);

/* Starts decoding a blob into raw (the caller's, borrowed until finish;
 * emptied here, grown when a blob needs more than its capacity), checked
 * with crypt (borrowed; NULL: no key) against expected_digest (copied;
 * NULL: no digest check). */
void cn_blob_stream_begin(struct cn_blob_stream *st, struct cn_buf *raw,
			  const struct cn_crypt_config *crypt, const uint8_t *expected_digest);

/* Takes the next n bytes of the blob. 0, or a negative code with a
 * message: -EFBIG (larger than any blob), -ENOMEM, -CN_E_CRYPT. After an
 * error only begin or finish (which returns it again) follow. */
int cn_blob_stream_write(struct cn_blob_stream *st, const uint8_t *data, size_t n);

/* The bytes taken since begin (the encoded size). */
size_t cn_blob_stream_size(const struct cn_blob_stream *st);

/* Ends the blob: checks and decodes it as cn_blob_decode_inplace does
 * (ctx and scratch as there; ctx may be NULL) and points *out at its
 * content (inside raw, or scratch) for *out_len bytes. 0 or the code of
 * the first failed check (-CN_E_TRUNCATED, -CN_E_MAGIC, -CN_E_CRC,
 * -CN_E_TAG, -CN_E_DIGEST, ...) with a message. */
int cn_blob_stream_finish(struct cn_blob_stream *st, struct cn_blob_ctx *ctx,
			  struct cn_buf *scratch, const uint8_t **out, size_t *out_len);

#endif
