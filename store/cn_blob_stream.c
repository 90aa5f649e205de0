/* Decoding a DataBlob as it arrives (see cn_blob_stream.h). */
#include "store/cn_blob_stream.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "store/cn_crc32.h"

/* Ciphertext decrypted at a time (see take_ciphertext). */
#define DECRYPT_BATCH (256u << 10)

enum mode {
	M_HEADER, /* fewer bytes than the encrypted header: type not known yet */
	M_FUSED,  /* encrypted, uncompressed, with a key: decrypted as it comes */
	M_COLLECT /* anything else: collected, decoded at finish */
};

struct cn_blob_stream {
	struct cn_buf *raw;
	const struct cn_crypt_config *crypt;
	uint8_t digest[32];
	int check_digest;
	enum mode mode;
	size_t size;        /* bytes taken */
	int err;            /* first failed write, returned by finish */
	uint32_t crc;       /* M_FUSED: over the ciphertext so far */
	size_t plain;       /* M_FUSED: raw[0..plain) decrypted (and digested) */
	struct cn_crypt_decrypter *dec;
	EVP_MD_CTX *md;     /* M_FUSED with a digest: over the plaintext so far */
};

int cn_blob_stream_new(struct cn_blob_stream **out)
{
	struct cn_blob_stream *st = calloc(1, sizeof(*st));
	if (!st)
		return cn_error_set(-ENOMEM, "out of memory");
	int r = cn_crypt_decrypter_new(&st->dec);
	if (r == 0 && !(st->md = EVP_MD_CTX_new()))
		r = cn_error_set(-ENOMEM, "out of memory");
	if (r < 0) {
		cn_blob_stream_free(st);
		return r;
	}
	*out = st;
	return 0;
}

void cn_blob_stream_free(struct cn_blob_stream *st)
{
	if (!st)
		return;
	cn_crypt_decrypter_free(st->dec);
	EVP_MD_CTX_free(st->md);
	free(st);
}

void cn_blob_stream_begin(struct cn_blob_stream *st, struct cn_buf *raw,
			  const struct cn_crypt_config *crypt, const uint8_t *expected_digest)
{
	st->raw = raw;
	raw->len = 0;
	st->crypt = crypt;
	st->check_digest = expected_digest != NULL;
	if (expected_digest)
		memcpy(st->digest, expected_digest, 32);
	st->mode = M_HEADER;
	st->size = 0;
	st->err = 0;
}

size_t cn_blob_stream_size(const struct cn_blob_stream *st)
{
	return st->size;
}

/* The header is complete: decides how the rest is taken. */
static int start_payload(struct cn_blob_stream *st)
{
	st->mode = M_COLLECT;
	if (cn_blob_type(st->raw->data, st->raw->len) != CN_BLOB_ENCRYPTED || !st->crypt)
		return 0;
	const uint8_t *h = st->raw->data;
	int r = cn_crypt_decrypter_begin(st->dec, st->crypt, h + 12);
	if (r == 0 && st->check_digest && EVP_DigestInit_ex(st->md, EVP_sha256(), NULL) != 1)
		r = cn_error_set(-CN_E_CRYPT, "SHA-256 failed");
	if (r < 0)
		return r;
	st->crc = 0;
	st->plain = CN_BLOB_ENC_HEADER_SIZE;
	st->mode = M_FUSED;
	return 0;
}

/* Appends n bytes to raw as they are, growing it. */
static int collect(struct cn_blob_stream *st, const uint8_t *data, size_t n)
{
	return cn_buf_append(st->raw, data, n) < 0 ? cn_error_set(-ENOMEM, "out of memory") : 0;
}

/* Decrypts raw[plain..len) in place and adds it to the digest. */
static int decrypt_pending(struct cn_blob_stream *st)
{
	struct cn_buf *raw = st->raw;
	uint8_t *p = raw->data + st->plain;
	size_t n = raw->len - st->plain;
	int r = cn_crypt_decrypter_update(st->dec, p, n, p);
	if (r == 0 && st->check_digest && EVP_DigestUpdate(st->md, p, n) != 1)
		r = cn_error_set(-CN_E_CRYPT, "SHA-256 failed");
	if (r == 0)
		st->plain = raw->len;
	return r;
}

/* Takes n bytes of ciphertext: the CRC over them as they come, then they
 * are decrypted in place a batch at a time, while the batch is still in
 * the CPU's cache. Batches, not the pieces the network delivers (16 KiB):
 * AES-GCM on pieces that small, between the receive calls, ran at a
 * third of its speed. */
static int take_ciphertext(struct cn_blob_stream *st, const uint8_t *data, size_t n)
{
	st->crc = cn_crc32(st->crc, data, n);
	int r = collect(st, data, n);
	if (r == 0 && st->raw->len - st->plain >= DECRYPT_BATCH)
		r = decrypt_pending(st);
	return r;
}

int cn_blob_stream_write(struct cn_blob_stream *st, const uint8_t *data, size_t n)
{
	if (st->err)
		return st->err;
	int r = 0;
	if (n > CN_BLOB_MAX_ENCODED_SIZE - st->size) {
		r = cn_error_set(-EFBIG, "data blob too large (more than %zu bytes)",
				 (size_t)CN_BLOB_MAX_ENCODED_SIZE);
		n = 0;
	}
	if (r == 0 && st->mode == M_HEADER) {
		/* the first bytes, up to the longer (encrypted) header */
		size_t want = CN_BLOB_ENC_HEADER_SIZE - st->raw->len;
		size_t take = n < want ? n : want;
		r = collect(st, data, take);
		st->size += take;
		data += take;
		n -= take;
		if (r == 0 && st->raw->len == CN_BLOB_ENC_HEADER_SIZE)
			r = start_payload(st);
	}
	if (r == 0 && n) {
		r = st->mode == M_FUSED ? take_ciphertext(st, data, n) : collect(st, data, n);
		st->size += n;
	}
	if (r < 0)
		st->err = r;
	return r;
}

int cn_blob_stream_finish(struct cn_blob_stream *st, struct cn_blob_ctx *ctx,
			  struct cn_buf *scratch, const uint8_t **out, size_t *out_len)
{
	if (st->err)
		return st->err;
	struct cn_buf *raw = st->raw;
	if (st->mode != M_FUSED)
		return cn_blob_decode_inplace(ctx, raw->data, raw->len, st->crypt,
					      st->check_digest ? st->digest : NULL, scratch, out,
					      out_len);
	/* in cn_blob_decode_inplace's order: the container (CRC, of the
	 * ciphertext as it came), the tag, the keyed digest */
	const uint8_t *h = raw->data;
	uint32_t stored = cn_le32(h + 8);
	if (stored != st->crc)
		return cn_error_set(-CN_E_CRC, "data blob has wrong CRC checksum (%08x, computed %08x)",
				    stored, st->crc);
	int r = decrypt_pending(st);
	if (r == 0)
		r = cn_crypt_decrypter_final(st->dec, h + 28);
	if (r < 0)
		return r;
	const uint8_t *content = raw->data + CN_BLOB_ENC_HEADER_SIZE;
	size_t clen = raw->len - CN_BLOB_ENC_HEADER_SIZE;
	if (st->check_digest) {
		uint8_t d[32];
		const uint8_t *id_key = cn_crypt_id_key(st->crypt);
		if (EVP_DigestUpdate(st->md, id_key, 32) != 1 ||
		    EVP_DigestFinal_ex(st->md, d, NULL) != 1)
			return cn_error_set(-CN_E_CRYPT, "SHA-256 failed");
		if (memcmp(d, st->digest, 32) != 0) {
			char want[65], got[65];
			cn_hex_encode(st->digest, 32, want);
			cn_hex_encode(d, 32, got);
			return cn_error_set(-CN_E_DIGEST, "chunk has wrong digest %s (expected %s)",
					    got, want);
		}
	}
	*out = content;
	*out_len = clen;
	return 0;
}
