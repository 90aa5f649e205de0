/* DataBlob encode/decode as upstream pbs-datastore/src/data_blob.rs. */
#include "store/cn_blob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/cn_error.h"
#include "store/cn_crc32.h"

static const uint8_t magics[4][8] = {
	[CN_BLOB_PLAIN] = {66, 171, 56, 7, 190, 131, 112, 161},
	[CN_BLOB_ZSTD] = {49, 185, 88, 66, 111, 182, 163, 127},
	[CN_BLOB_ENCRYPTED] = {123, 103, 133, 190, 34, 45, 76, 240},
	[CN_BLOB_ENCRYPTED_ZSTD] = {230, 89, 27, 191, 11, 191, 216, 11},
};

struct cn_blob_ctx {
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	struct cn_buf scratch; /* compressed bytes before encryption, decrypted bytes */
	struct cn_buf plain;   /* decoded content for cn_blob_verify_chunk */
};

const uint8_t *cn_blob_magic(enum cn_blob_type type)
{
	return magics[type];
}

static int is_encrypted(int type)
{
	return type == CN_BLOB_ENCRYPTED || type == CN_BLOB_ENCRYPTED_ZSTD;
}

static size_t header_size(int type)
{
	return is_encrypted(type) ? CN_BLOB_ENC_HEADER_SIZE : CN_BLOB_HEADER_SIZE;
}

int cn_blob_ctx_new(struct cn_blob_ctx **out)
{
	struct cn_blob_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return cn_error_set(-ENOMEM, "out of memory");
	ctx->cctx = ZSTD_createCCtx();
	ctx->dctx = ZSTD_createDCtx();
	if (!ctx->cctx || !ctx->dctx) {
		cn_blob_ctx_free(ctx);
		return cn_error_set(-ENOMEM, "out of memory (zstd context)");
	}
	*out = ctx;
	return 0;
}

void cn_blob_ctx_free(struct cn_blob_ctx *ctx)
{
	if (!ctx)
		return;
	ZSTD_freeCCtx(ctx->cctx);
	ZSTD_freeDCtx(ctx->dctx);
	cn_buf_free(&ctx->scratch);
	cn_buf_free(&ctx->plain);
	free(ctx);
}

/* ---- incompressibility probe ------------------------------------------ */

#define PROBE_MIN_LEN (8u << 10)
#define PROBE_SAMPLES 8
#define PROBE_SAMPLE_LEN 4096u

/* The probe compresses PROBE_SAMPLES evenly spread samples of
 * PROBE_SAMPLE_LEN bytes (about 0.8% of a 4 MiB chunk) with zstd level 1
 * and calls the data incompressible when they shrink by less than 3% in
 * total. Data that compresses only through matches longer than a sample
 * distance escapes it; the cost of a wrong guess is a less compressed but
 * valid blob, never a wrong one. */
static int probe(ZSTD_CCtx *cctx, const uint8_t *data, size_t len)
{
	uint8_t dst[ZSTD_COMPRESSBOUND(PROBE_SAMPLE_LEN)];
	size_t in_total = 0, out_total = 0;

	if (len < PROBE_MIN_LEN)
		return 0;
	size_t n = len >= PROBE_SAMPLES * PROBE_SAMPLE_LEN ? PROBE_SAMPLES : len / PROBE_SAMPLE_LEN;
	for (size_t i = 0; i < n; i++) {
		size_t off = n > 1 ? i * ((len - PROBE_SAMPLE_LEN) / (n - 1)) : 0;
		size_t r = ZSTD_compressCCtx(cctx, dst, sizeof(dst), data + off, PROBE_SAMPLE_LEN, 1);
		if (ZSTD_isError(r))
			return 0; /* no verdict: let the real pass decide */
		in_total += PROBE_SAMPLE_LEN;
		out_total += r;
	}
	return out_total * 100 >= in_total * 97;
}

int cn_blob_probe_incompressible(const uint8_t *data, size_t len)
{
	if (len < PROBE_MIN_LEN)
		return 0;
	ZSTD_CCtx *cctx = ZSTD_createCCtx();
	if (!cctx)
		return 0;
	int r = probe(cctx, data, len);
	ZSTD_freeCCtx(cctx);
	return r;
}

/* ---- encoding ----------------------------------------------------------- */

/* Plain path, as upstream's zstd::stream::copy_encode: a streaming level-1
 * compression with unknown source size (so the frame carries no content
 * size, like the official client's). Writes into dst[0..cap); returns the
 * frame length, or 0 when the frame does not fit in cap (then it is not
 * strictly shorter than the input and upstream would not keep it either). */
static size_t zstd_stream(ZSTD_CCtx *cctx, const uint8_t *src, size_t len, uint8_t *dst,
			  size_t cap)
{
	ZSTD_inBuffer in = {src, len, 0};
	ZSTD_outBuffer out = {dst, cap, 0};
	size_t r, result = 0;

	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1)))
		return 0;
	while (in.pos < in.size) {
		r = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_continue);
		if (ZSTD_isError(r) || (out.pos == out.size && in.pos < in.size))
			goto out;
	}
	do {
		r = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);
		if (ZSTD_isError(r))
			goto out;
		if (r && out.pos == out.size)
			goto out;
	} while (r);
	result = out.pos;
out:
	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only);
	return result;
}

/* Encrypted path, as upstream's zstd::bulk::compress: one-shot level 1 (the
 * frame carries the content size). 0 when it does not fit in cap. */
static size_t zstd_oneshot(ZSTD_CCtx *cctx, const uint8_t *src, size_t len, uint8_t *dst,
			   size_t cap)
{
	ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	size_t r = ZSTD_compressCCtx(cctx, dst, cap, src, len, 1);
	return ZSTD_isError(r) ? 0 : r;
}

static int want_zstd(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len, int compress)
{
	/* an empty or 1-byte input can never shrink */
	if (compress == CN_BLOB_COMPRESS_NONE || len < 2)
		return 0;
	if (compress == CN_BLOB_COMPRESS && probe(ctx->cctx, data, len))
		return 0;
	return 1;
}

/* Encodes into dst, which has room for CN_BLOB_ENC_HEADER_SIZE + len
 * bytes (the largest possible result). Sets *dst_len and *type. */
static int encode_into(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
		       const struct cn_crypt_config *crypt, int compress, uint8_t *dst,
		       size_t *dst_len, enum cn_blob_type *type)
{
	size_t hdr, payload;
	int r;

	if (len > CN_BLOB_MAX_SIZE)
		return cn_error_set(-EFBIG, "data blob too large (%zu bytes, limit %u)", len,
				    CN_BLOB_MAX_SIZE);
	if (compress < CN_BLOB_COMPRESS_NONE || compress > CN_BLOB_COMPRESS_ALWAYS)
		return cn_error_set(-EINVAL, "invalid compression mode %d", compress);

	if (!crypt) {
		hdr = CN_BLOB_HEADER_SIZE;
		payload = 0;
		/* keep only if 12 + compressed < 12 + len: capacity len - 1 */
		if (want_zstd(ctx, data, len, compress))
			payload = zstd_stream(ctx->cctx, data, len, dst + hdr, len - 1);
		if (payload) {
			*type = CN_BLOB_ZSTD;
		} else {
			*type = CN_BLOB_PLAIN;
			/* data may be NULL when len is 0; in place it is there */
			if (len && dst + hdr != data)
				memcpy(dst + hdr, data, len);
			payload = len;
		}
	} else {
		const uint8_t *src = data;
		hdr = CN_BLOB_ENC_HEADER_SIZE;
		payload = len;
		*type = CN_BLOB_ENCRYPTED;
		if (want_zstd(ctx, data, len, compress)) {
			if (cn_buf_reserve(&ctx->scratch, len) < 0)
				return cn_error_set(-ENOMEM, "out of memory");
			/* upstream keeps it only if compressed_len < len */
			size_t c = zstd_oneshot(ctx->cctx, data, len, ctx->scratch.data, len - 1);
			if (c) {
				src = ctx->scratch.data;
				payload = c;
				*type = CN_BLOB_ENCRYPTED_ZSTD;
			}
		}
		r = cn_crypt_encrypt(crypt, src, payload, dst + hdr, dst + 12, dst + 28);
		if (r < 0)
			return r;
	}
	memcpy(dst, magics[*type], 8);
	cn_put_le32(dst + 8, cn_crc32(0, dst + hdr, payload));
	*dst_len = hdr + payload;
	return 0;
}

/* Runs fn with ctx, or with a temporary context when ctx is NULL. */
#define WITH_CTX(ctx, call)                                                                   \
	do {                                                                                  \
		struct cn_blob_ctx *tmp_ = NULL;                                              \
		if (!(ctx)) {                                                                 \
			int rr_ = cn_blob_ctx_new(&tmp_);                                     \
			if (rr_ < 0)                                                          \
				return rr_;                                                   \
			(ctx) = tmp_;                                                         \
		}                                                                             \
		int r_ = (call);                                                              \
		cn_blob_ctx_free(tmp_);                                                       \
		return r_;                                                                    \
	} while (0)

static int encode_buf(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
		      const struct cn_crypt_config *crypt, int compress, struct cn_buf *out,
		      enum cn_blob_type *info)
{
	enum cn_blob_type type;
	size_t n;
	if (len > CN_BLOB_MAX_SIZE)
		return cn_error_set(-EFBIG, "data blob too large (%zu bytes, limit %u)", len,
				    CN_BLOB_MAX_SIZE);
	if (cn_buf_reserve(out, CN_BLOB_ENC_HEADER_SIZE + len) < 0)
		return cn_error_set(-ENOMEM, "out of memory");
	int r = encode_into(ctx, data, len, crypt, compress, out->data + out->len, &n, &type);
	if (r < 0)
		return r;
	out->len += n;
	if (info)
		*info = type;
	return 0;
}

int cn_blob_encode_ctx(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
		       const struct cn_crypt_config *crypt, int compress, struct cn_buf *out,
		       enum cn_blob_type *info)
{
	WITH_CTX(ctx, encode_buf(ctx, data, len, crypt, compress, out, info));
}

int cn_blob_encode(const uint8_t *data, size_t len, const struct cn_crypt_config *crypt,
		   int compress, struct cn_buf *out)
{
	return cn_blob_encode_ctx(NULL, data, len, crypt, compress, out, NULL);
}

static int encode_chunk(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
			const struct cn_crypt_config *crypt, int compress, struct cn_chunk **out)
{
	enum cn_blob_type type;
	struct cn_chunk *c;
	int r;

	if (len > CN_CHUNK_MAX_SIZE)
		return cn_error_set(-EFBIG, "chunk too large (%zu bytes, limit %u)", len,
				    CN_CHUNK_MAX_SIZE);
	c = cn_chunk_new(CN_BLOB_ENC_HEADER_SIZE + len);
	if (!c)
		return cn_error_set(-ENOMEM, "out of memory");
	r = cn_chunk_digest(crypt, data, len, c->digest);
	if (r >= 0)
		r = encode_into(ctx, data, len, crypt, compress, c->data, &c->len, &type);
	if (r < 0) {
		cn_chunk_unref(c);
		return r;
	}
	c->plain_size = len;
	*out = c;
	return 0;
}

int cn_blob_encode_chunk_ctx(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
			     const struct cn_crypt_config *crypt, int compress,
			     struct cn_chunk **out)
{
	WITH_CTX(ctx, encode_chunk(ctx, data, len, crypt, compress, out));
}

int cn_blob_encode_chunk(const uint8_t *data, size_t len, const struct cn_crypt_config *crypt,
			 int compress, struct cn_chunk **out)
{
	return cn_blob_encode_chunk_ctx(NULL, data, len, crypt, compress, out);
}

int cn_blob_worth_compressing(struct cn_blob_ctx *ctx, const uint8_t *data, size_t len,
			      int compress)
{
	return want_zstd(ctx, data, len, compress);
}

int cn_blob_encode_chunk_inplace(struct cn_blob_ctx *ctx, uint8_t *data, size_t len,
				 const struct cn_crypt_config *crypt, uint8_t *alt,
				 uint8_t digest[32], uint8_t **blob, size_t *blob_len)
{
	enum cn_blob_type type;
	if (len > CN_CHUNK_MAX_SIZE)
		return cn_error_set(-EFBIG, "chunk too large (%zu bytes, limit %u)", len,
				    CN_CHUNK_MAX_SIZE);
	int r = cn_chunk_digest(crypt, data, len, digest);
	if (r < 0)
		return r;
	if (alt) {
		r = encode_into(ctx, data, len, crypt, CN_BLOB_COMPRESS_ALWAYS, alt, blob_len, &type);
		if (r < 0)
			return r;
		if (type == CN_BLOB_ZSTD || type == CN_BLOB_ENCRYPTED_ZSTD) {
			*blob = alt;
			return 0;
		}
		/* it did not shrink: the plain form, in place after all */
	}
	uint8_t *dst = data - (crypt ? CN_BLOB_ENC_HEADER_SIZE : CN_BLOB_HEADER_SIZE);
	r = encode_into(ctx, data, len, crypt, CN_BLOB_COMPRESS_NONE, dst, blob_len, &type);
	if (r < 0)
		return r;
	*blob = dst;
	return 0;
}

/* ---- decoding ----------------------------------------------------------- */

int cn_blob_type(const uint8_t *blob, size_t len)
{
	if (len < CN_BLOB_HEADER_SIZE)
		return -CN_E_TRUNCATED;
	for (int t = 0; t < 4; t++) {
		if (memcmp(blob, magics[t], 8) == 0) {
			if (len < header_size(t))
				return -CN_E_TRUNCATED;
			return t;
		}
	}
	return -CN_E_MAGIC;
}

int cn_blob_check(const uint8_t *blob, size_t len)
{
	int type = cn_blob_type(blob, len);
	if (type == -CN_E_MAGIC)
		return cn_error_set(type, "not a data blob (unknown magic number)");
	if (type < 0)
		return cn_error_set(type, "data blob too small (%zu bytes)", len);
	if (len > CN_BLOB_MAX_SIZE + CN_BLOB_ENC_HEADER_SIZE)
		return cn_error_set(-EFBIG, "data blob too large (%zu bytes)", len);
	size_t hdr = header_size(type);
	uint32_t stored = cn_le32(blob + 8), crc = cn_crc32(0, blob + hdr, len - hdr);
	if (stored != crc)
		return cn_error_set(-CN_E_CRC, "data blob has wrong CRC checksum (%08x, computed %08x)",
				    stored, crc);
	return type;
}

/* Decompresses zstd frames (one or more, with or without content size,
 * as upstream's decode_all accepts) appending to out, at most
 * CN_BLOB_MAX_SIZE bytes. On failure out keeps its length. */
static int unzstd(ZSTD_DCtx *dctx, const uint8_t *src, size_t len, struct cn_buf *out)
{
	ZSTD_inBuffer in = {src, len, 0};
	size_t start = out->len;
	unsigned long long hint = ZSTD_getFrameContentSize(src, len);
	/* first allocation: the announced size (+1 so that a complete frame
	 * never needs a second round), else a guess; then doubling */
	size_t grow = (hint != ZSTD_CONTENTSIZE_UNKNOWN && hint != ZSTD_CONTENTSIZE_ERROR &&
		       hint <= CN_BLOB_MAX_SIZE)
			      ? (size_t)hint + 1
			      : (len < (64u << 10) ? (256u << 10) : 4 * len);
	int r;

	if (len == 0)
		return 0; /* no frame at all: empty content, as upstream */
	ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
	for (;;) {
		size_t produced = out->len - start;
		if (out->cap == out->len) {
			if (grow > CN_BLOB_MAX_SIZE + 1 - produced)
				grow = CN_BLOB_MAX_SIZE + 1 - produced;
			if (cn_buf_reserve(out, grow) < 0) {
				r = cn_error_set(-ENOMEM, "out of memory");
				goto fail;
			}
			grow = out->cap - start;
		}
		ZSTD_outBuffer ob = {out->data + out->len, out->cap - out->len, 0};
		size_t z = ZSTD_decompressStream(dctx, &ob, &in);
		if (ZSTD_isError(z)) {
			r = cn_error_set(-CN_E_FORMAT, "zstd decompression failed: %s",
					 ZSTD_getErrorName(z));
			goto fail;
		}
		out->len += ob.pos;
		if (out->len - start > CN_BLOB_MAX_SIZE) {
			r = cn_error_set(-CN_E_FORMAT, "decompressed blob exceeds %u bytes",
					 CN_BLOB_MAX_SIZE);
			goto fail;
		}
		if (in.pos == in.size) {
			if (z == 0)
				return 0; /* every frame complete */
			if (ob.pos < ob.size) {
				r = cn_error_set(-CN_E_FORMAT, "zstd frame is truncated");
				goto fail;
			}
		}
	}
fail:
	out->len = start;
	return r;
}

/* Checks that the content of a blob of this type hashes to expected. */
static int check_digest(int type, const struct cn_crypt_config *crypt, const uint8_t *content,
			size_t len, const uint8_t *expected)
{
	uint8_t digest[32];
	int r = cn_chunk_digest(is_encrypted(type) ? crypt : NULL, content, len, digest);
	if (r >= 0 && memcmp(digest, expected, 32) != 0) {
		char want[65], got[65];
		cn_hex_encode(expected, 32, want);
		cn_hex_encode(digest, 32, got);
		r = cn_error_set(-CN_E_DIGEST, "chunk has wrong digest %s (expected %s)", got,
				 want);
	}
	return r < 0 ? r : 0;
}

/* Decrypts the payload of an encrypted blob (of either encrypted type)
 * into dst, which may be the payload itself; the IV and tag are in the
 * header. 0, -CN_E_NOKEY without a key, or -CN_E_TAG. */
static int open_payload(const struct cn_crypt_config *crypt, const uint8_t *blob, size_t len,
			uint8_t *dst)
{
	if (!crypt)
		return cn_error_set(-CN_E_NOKEY, "unable to decrypt blob: no key given");
	return cn_crypt_decrypt(crypt, blob + CN_BLOB_ENC_HEADER_SIZE,
				len - CN_BLOB_ENC_HEADER_SIZE, dst, blob + 12, blob + 28);
}

static int decode(struct cn_blob_ctx *ctx, const uint8_t *blob, size_t len,
		  const struct cn_crypt_config *crypt, const uint8_t *expected_digest,
		  struct cn_buf *out)
{
	size_t start = out->len;
	int type = cn_blob_check(blob, len), r = 0;
	if (type < 0)
		return type;
	size_t hdr = header_size(type);
	const uint8_t *payload = blob + hdr;
	size_t plen = len - hdr;

	switch (type) {
	case CN_BLOB_PLAIN:
		if (cn_buf_append(out, payload, plen) < 0)
			return cn_error_set(-ENOMEM, "out of memory");
		break;
	case CN_BLOB_ZSTD:
		r = unzstd(ctx->dctx, payload, plen, out);
		break;
	case CN_BLOB_ENCRYPTED:
	case CN_BLOB_ENCRYPTED_ZSTD:
		/* reserve one byte more so that the buffers exist even for an
		 * empty ciphertext (whose tag must still be checked) */
		if (type == CN_BLOB_ENCRYPTED) {
			if (cn_buf_reserve(out, plen + 1) < 0)
				return cn_error_set(-ENOMEM, "out of memory");
			r = open_payload(crypt, blob, len, out->data + out->len);
			if (r >= 0)
				out->len += plen;
		} else {
			ctx->scratch.len = 0;
			if (cn_buf_reserve(&ctx->scratch, plen + 1) < 0)
				return cn_error_set(-ENOMEM, "out of memory");
			/* the tag is verified before a single byte is decompressed */
			r = open_payload(crypt, blob, len, ctx->scratch.data);
			if (r >= 0)
				r = unzstd(ctx->dctx, ctx->scratch.data, plen, out);
		}
		break;
	}
	if (r == 0 && expected_digest)
		r = check_digest(type, crypt, out->data ? out->data + start : (const uint8_t *)"",
				 out->len - start, expected_digest);
	if (r < 0)
		out->len = start;
	return r;
}

int cn_blob_decode_ctx(struct cn_blob_ctx *ctx, const uint8_t *blob, size_t len,
		       const struct cn_crypt_config *crypt, const uint8_t *expected_digest,
		       struct cn_buf *out)
{
	WITH_CTX(ctx, decode(ctx, blob, len, crypt, expected_digest, out));
}

int cn_blob_decode(const uint8_t *blob, size_t len, const struct cn_crypt_config *crypt,
		   const uint8_t *expected_digest, struct cn_buf *out)
{
	return cn_blob_decode_ctx(NULL, blob, len, crypt, expected_digest, out);
}

/* Decrypts an encrypted, uncompressed blob within itself: *out points at
 * the content, past the header. Container (CRC) first, so that damage is
 * named apart from a wrong key; then the tag, then the keyed digest. */
static int decrypt_inplace(uint8_t *blob, size_t len, const struct cn_crypt_config *crypt,
			   const uint8_t *expected_digest, const uint8_t **out, size_t *out_len)
{
	int r = cn_blob_check(blob, len);
	if (r < 0)
		return r;
	uint8_t *content = blob + CN_BLOB_ENC_HEADER_SIZE;
	size_t clen = len - CN_BLOB_ENC_HEADER_SIZE;
	if ((r = open_payload(crypt, blob, len, content)) < 0)
		return r;
	if (expected_digest && (r = check_digest(CN_BLOB_ENCRYPTED, crypt, content, clen,
						 expected_digest)) < 0)
		return r;
	*out = content;
	*out_len = clen;
	return 0;
}

/* blob_rw: the same blob, writable, or NULL (then nothing is decoded in
 * place). */
static int decode_view(struct cn_blob_ctx *ctx, const uint8_t *blob, uint8_t *blob_rw,
		       size_t len, const struct cn_crypt_config *crypt,
		       const uint8_t *expected_digest, struct cn_buf *scratch,
		       const uint8_t **out, size_t *out_len)
{
	int type = cn_blob_type(blob, len);
	if (type == CN_BLOB_ENCRYPTED && blob_rw)
		return decrypt_inplace(blob_rw, len, crypt, expected_digest, out, out_len);
	if (type != CN_BLOB_PLAIN) {
		scratch->len = 0;
		int r = decode(ctx, blob, len, crypt, expected_digest, scratch);
		if (r < 0)
			return r;
		*out = scratch->data ? scratch->data : (const uint8_t *)"";
		*out_len = scratch->len;
		return 0;
	}
	/* The payload is the content: checked in place. With a digest to
	 * check, the CRC (over the same bytes) adds nothing when the digest
	 * matches, so it is computed only when the digest does not, to name
	 * the damage as cn_blob_check does. Restoring the 2 GiB bench corpus
	 * (plain chunks), that pass was 7.7 % of the process's CPU time. */
	int r;
	if (!expected_digest || len > CN_BLOB_MAX_SIZE + CN_BLOB_ENC_HEADER_SIZE) {
		if ((r = cn_blob_check(blob, len)) < 0)
			return r;
	} else if ((r = check_digest(type, crypt, blob + CN_BLOB_HEADER_SIZE,
				     len - CN_BLOB_HEADER_SIZE, expected_digest)) < 0) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", cn_error_message());
		int c = cn_blob_check(blob, len);
		return c < 0 ? c : cn_error_set(r, "%s", msg);
	}
	*out = blob + CN_BLOB_HEADER_SIZE;
	*out_len = len - CN_BLOB_HEADER_SIZE;
	return 0;
}

int cn_blob_decode_view(struct cn_blob_ctx *ctx, const uint8_t *blob, size_t len,
			const struct cn_crypt_config *crypt, const uint8_t *expected_digest,
			struct cn_buf *scratch, const uint8_t **out, size_t *out_len)
{
	WITH_CTX(ctx, decode_view(ctx, blob, NULL, len, crypt, expected_digest, scratch, out,
				  out_len));
}

int cn_blob_decode_inplace(struct cn_blob_ctx *ctx, uint8_t *blob, size_t len,
			   const struct cn_crypt_config *crypt, const uint8_t *expected_digest,
			   struct cn_buf *scratch, const uint8_t **out, size_t *out_len)
{
	WITH_CTX(ctx, decode_view(ctx, blob, blob, len, crypt, expected_digest, scratch, out,
				  out_len));
}

static int verify_chunk(struct cn_blob_ctx *ctx, const uint8_t *blob, size_t len,
			const struct cn_crypt_config *crypt, const uint8_t digest[32],
			uint64_t expected_size)
{
	int type = cn_blob_check(blob, len);
	if (type < 0 || (is_encrypted(type) && !crypt))
		return type;
	ctx->plain.len = 0;
	int r = decode(ctx, blob, len, crypt, digest, &ctx->plain);
	if (r < 0)
		return r;
	if (expected_size && ctx->plain.len != expected_size)
		return cn_error_set(-CN_E_FORMAT, "chunk has wrong length (%zu != %llu)",
				    ctx->plain.len, (unsigned long long)expected_size);
	return type;
}

int cn_blob_verify_chunk(struct cn_blob_ctx *ctx, const uint8_t *blob, size_t len,
			 const struct cn_crypt_config *crypt, const uint8_t digest[32],
			 uint64_t expected_size)
{
	WITH_CTX(ctx, verify_chunk(ctx, blob, len, crypt, digest, expected_size));
}
