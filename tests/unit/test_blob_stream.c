/* cn_blob_stream: a blob fed in pieces of every size decodes to what
 * cn_blob_decode_inplace gives for the whole blob, for every blob type;
 * damage (a flipped byte in the header, the ciphertext or the tag, a
 * truncated or extended blob, another key, another digest) gives the same
 * code as the whole-blob decoder; a restart in the middle forgets what
 * came before; a blob beyond the largest size is refused while it comes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_blob_stream.h"
#include "store/cn_crypt.h"
#include "cn_test.h"

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed | 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 32);
	}
}

static struct cn_crypt_config *key_config(uint8_t first)
{
	uint8_t k[32];
	for (int i = 0; i < 32; i++)
		k[i] = (uint8_t)(i * 7 + 3);
	k[0] = first;
	struct cn_crypt_config *c;
	ck_assert_int_eq(cn_crypt_config_new(k, &c), 0);
	return c;
}

/* A blob of data[0..n) of the given kind, and the chunk's digest. */
static void make_blob(const uint8_t *data, size_t n, const struct cn_crypt_config *crypt,
		      int compress, struct cn_buf *blob, uint8_t digest[32])
{
	blob->len = 0;
	ck_assert_int_eq(cn_blob_encode(data, n, crypt, compress, blob), 0);
	ck_assert_int_eq(cn_chunk_digest(crypt, data, n, digest), 0);
}

/* Feeds blob to st in pieces of `piece` bytes (0: growing odd sizes),
 * then finishes. Returns finish's (or the first write's) code; on 0 the
 * content is in *out. */
static int stream_decode(struct cn_blob_stream *st, struct cn_buf *raw, struct cn_buf *scratch,
			 const uint8_t *blob, size_t len, size_t piece,
			 const struct cn_crypt_config *crypt, const uint8_t *digest,
			 const uint8_t **out, size_t *out_len)
{
	cn_blob_stream_begin(st, raw, crypt, digest);
	size_t off = 0, k = 1;
	while (off < len) {
		size_t n = piece ? piece : k;
		k = k * 3 + 1;
		if (n > len - off)
			n = len - off;
		int r = cn_blob_stream_write(st, blob + off, n);
		if (r < 0)
			return r;
		off += n;
	}
	ck_assert_uint_eq(cn_blob_stream_size(st), len);
	return cn_blob_stream_finish(st, NULL, scratch, out, out_len);
}

/* The whole-blob decoder's code for the same bytes. */
static int inplace_code(const uint8_t *blob, size_t len, const struct cn_crypt_config *crypt,
			const uint8_t *digest)
{
	struct cn_buf copy = {0}, scratch = {0};
	ck_assert_int_eq(cn_buf_append(&copy, blob, len), 0);
	const uint8_t *out;
	size_t out_len;
	int r = cn_blob_decode_inplace(NULL, copy.data, copy.len, crypt, digest, &scratch, &out,
				       &out_len);
	cn_buf_free(&copy);
	cn_buf_free(&scratch);
	cn_error_clear();
	return r;
}

START_TEST(test_every_type_every_piece_size)
{
	struct cn_crypt_config *crypt = key_config(1);
	struct cn_blob_stream *st;
	ck_assert_int_eq(cn_blob_stream_new(&st), 0);
	size_t sizes[] = {0, 1, 31, 4096, 300000};
	size_t pieces[] = {1, 7, 12, 44, 45, 16384, 0};
	struct cn_buf blob = {0}, raw = {0}, scratch = {0};
	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t n = sizes[si];
		uint8_t *data = malloc(n + 1);
		ck_assert_ptr_nonnull(data);
		fill_random(data, n, n + 5);
		if (n > 4096)
			memset(data + 4096, 'a', n / 2); /* compressible */
		for (int kind = 0; kind < 4; kind++) {
			const struct cn_crypt_config *c = kind & 1 ? crypt : NULL;
			int compress = kind & 2 ? CN_BLOB_COMPRESS_ALWAYS : CN_BLOB_COMPRESS_NONE;
			uint8_t digest[32];
			make_blob(data, n, c, compress, &blob, digest);
			for (size_t pi = 0; pi < sizeof(pieces) / sizeof(pieces[0]); pi++) {
				const uint8_t *out;
				size_t out_len;
				int r = stream_decode(st, &raw, &scratch, blob.data, blob.len,
						      pieces[pi], c, digest, &out, &out_len);
				ck_assert_msg(r == 0, "size %zu kind %d piece %zu: %d %s", n,
					      kind, pieces[pi], r, cn_error_message());
				ck_assert_uint_eq(out_len, n);
				ck_assert(n == 0 || memcmp(out, data, n) == 0);
			}
		}
		free(data);
	}
	cn_buf_free(&blob);
	cn_buf_free(&raw);
	cn_buf_free(&scratch);
	cn_blob_stream_free(st);
	cn_crypt_config_free(crypt);
}
END_TEST

/* Every damage of an encrypted, uncompressed blob (the fused path) and of
 * a plain one is refused with the whole-blob decoder's code. */
START_TEST(test_damage_same_code_as_whole_blob)
{
	struct cn_crypt_config *crypt = key_config(1), *other = key_config(2);
	struct cn_blob_stream *st;
	ck_assert_int_eq(cn_blob_stream_new(&st), 0);
	size_t n = 100000;
	uint8_t *data = malloc(n);
	ck_assert_ptr_nonnull(data);
	fill_random(data, n, 99);
	struct cn_buf blob = {0}, raw = {0}, scratch = {0}, bad = {0};
	for (int enc = 0; enc < 2; enc++) {
		const struct cn_crypt_config *c = enc ? crypt : NULL;
		uint8_t digest[32], wrong[32];
		make_blob(data, n, c, CN_BLOB_COMPRESS_NONE, &blob, digest);
		ck_assert_int_eq(cn_blob_type(blob.data, blob.len),
				 enc ? CN_BLOB_ENCRYPTED : CN_BLOB_PLAIN);
		memcpy(wrong, digest, 32);
		wrong[5] ^= 1;
		/* offsets: magic, CRC, IV, tag, payload start, middle, last byte */
		size_t flips[] = {0, 9, 13, 30, 44, blob.len / 2, blob.len - 1};
		for (size_t fi = 0; fi < sizeof(flips) / sizeof(flips[0]); fi++) {
			bad.len = 0;
			ck_assert_int_eq(cn_buf_append(&bad, blob.data, blob.len), 0);
			bad.data[flips[fi]] ^= 0x40;
			int want = inplace_code(bad.data, bad.len, c, digest);
			/* (a plain blob whose content matches its digest is not
			 * CRC-checked: the flipped CRC byte passes both ways) */
			if (enc || flips[fi] != 9)
				ck_assert_int_lt(want, 0);
			const uint8_t *out;
			size_t out_len;
			int got = stream_decode(st, &raw, &scratch, bad.data, bad.len, 1000, c,
						digest, &out, &out_len);
			ck_assert_msg(got == want, "enc %d flip at %zu: %d, whole blob %d", enc,
				      flips[fi], got, want);
		}
		/* truncated (also to a header only, and within it) and extended */
		size_t lens[] = {blob.len - 1, blob.len - 4096, 44, 43, 11, 0};
		for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
			int want = inplace_code(blob.data, lens[li], c, digest);
			ck_assert_int_lt(want, 0);
			const uint8_t *out;
			size_t out_len;
			int got = stream_decode(st, &raw, &scratch, blob.data, lens[li], 333, c,
						digest, &out, &out_len);
			ck_assert_msg(got == want, "enc %d cut to %zu: %d, whole blob %d", enc,
				      lens[li], got, want);
		}
		bad.len = 0;
		ck_assert_int_eq(cn_buf_append(&bad, blob.data, blob.len), 0);
		ck_assert_int_eq(cn_buf_append(&bad, "x", 1), 0);
		const uint8_t *out;
		size_t out_len;
		int want = inplace_code(bad.data, bad.len, c, digest);
		ck_assert_int_lt(want, 0);
		ck_assert_int_eq(stream_decode(st, &raw, &scratch, bad.data, bad.len, 4096, c,
					       digest, &out, &out_len), want);
		/* a digest that is not the chunk's */
		ck_assert_int_eq(stream_decode(st, &raw, &scratch, blob.data, blob.len, 4096, c,
					       wrong, &out, &out_len), -CN_E_DIGEST);
		if (enc) {
			/* another key: the tag does not fit; no key: refused */
			ck_assert_int_eq(stream_decode(st, &raw, &scratch, blob.data, blob.len,
						       4096, other, digest, &out, &out_len),
					 -CN_E_TAG);
			ck_assert_int_eq(stream_decode(st, &raw, &scratch, blob.data, blob.len,
						       4096, NULL, digest, &out, &out_len),
					 -CN_E_NOKEY);
		}
		/* the stream still decodes the good blob afterwards */
		ck_assert_int_eq(stream_decode(st, &raw, &scratch, blob.data, blob.len, 4096, c,
					       digest, &out, &out_len), 0);
		ck_assert_uint_eq(out_len, n);
		ck_assert_mem_eq(out, data, n);
	}
	free(data);
	cn_buf_free(&blob);
	cn_buf_free(&bad);
	cn_buf_free(&raw);
	cn_buf_free(&scratch);
	cn_blob_stream_free(st);
	cn_crypt_config_free(crypt);
	cn_crypt_config_free(other);
}
END_TEST

/* A retried request starts over: begin in the middle of a blob (after a
 * damaged first attempt) forgets every byte and check state before it. */
START_TEST(test_restart_midway)
{
	struct cn_crypt_config *crypt = key_config(1);
	struct cn_blob_stream *st;
	ck_assert_int_eq(cn_blob_stream_new(&st), 0);
	size_t n = 50000;
	uint8_t *data = malloc(n);
	ck_assert_ptr_nonnull(data);
	fill_random(data, n, 7);
	struct cn_buf blob = {0}, raw = {0}, scratch = {0}, bad = {0};
	uint8_t digest[32];
	make_blob(data, n, crypt, CN_BLOB_COMPRESS_NONE, &blob, digest);
	ck_assert_int_eq(cn_buf_append(&bad, blob.data, blob.len), 0);
	bad.data[100] ^= 1;
	cn_blob_stream_begin(st, &raw, crypt, digest);
	ck_assert_int_eq(cn_blob_stream_write(st, bad.data, 20000), 0);
	const uint8_t *out;
	size_t out_len;
	ck_assert_int_eq(stream_decode(st, &raw, &scratch, blob.data, blob.len, 777, crypt,
				       digest, &out, &out_len), 0);
	ck_assert_uint_eq(out_len, n);
	ck_assert_mem_eq(out, data, n);
	free(data);
	cn_buf_free(&blob);
	cn_buf_free(&bad);
	cn_buf_free(&raw);
	cn_buf_free(&scratch);
	cn_blob_stream_free(st);
	cn_crypt_config_free(crypt);
}
END_TEST

/* More bytes than the largest blob are refused as they come (a server
 * sending without end does not grow the buffer without bound). */
START_TEST(test_oversized_refused_while_arriving)
{
	struct cn_crypt_config *crypt = key_config(1);
	struct cn_blob_stream *st;
	ck_assert_int_eq(cn_blob_stream_new(&st), 0);
	uint8_t digest[32] = {0};
	struct cn_buf blob = {0}, raw = {0}, scratch = {0};
	uint8_t d[1] = {0};
	ck_assert_int_eq(cn_blob_encode(d, 1, crypt, CN_BLOB_COMPRESS_NONE, &blob), 0);
	size_t piece = 1u << 20;
	uint8_t *zeros = calloc(1, piece);
	ck_assert_ptr_nonnull(zeros);
	cn_blob_stream_begin(st, &raw, crypt, digest);
	ck_assert_int_eq(cn_blob_stream_write(st, blob.data, CN_BLOB_ENC_HEADER_SIZE), 0);
	int r = 0;
	size_t sent = CN_BLOB_ENC_HEADER_SIZE;
	while (r == 0 && sent < 2 * (size_t)CN_BLOB_MAX_ENCODED_SIZE) {
		r = cn_blob_stream_write(st, zeros, piece);
		sent += piece;
	}
	ck_assert_int_eq(r, -EFBIG);
	ck_assert_uint_le(raw.len, CN_BLOB_MAX_ENCODED_SIZE);
	const uint8_t *out;
	size_t out_len;
	ck_assert_int_eq(cn_blob_stream_finish(st, NULL, &scratch, &out, &out_len), -EFBIG);
	free(zeros);
	cn_buf_free(&blob);
	cn_buf_free(&raw);
	cn_buf_free(&scratch);
	cn_blob_stream_free(st);
	cn_crypt_config_free(crypt);
}
END_TEST

CN_TEST_MAIN("blob_stream", "core", 120, test_every_type_every_piece_size,
	     test_damage_same_code_as_whole_blob, test_restart_midway,
	     test_oversized_refused_while_arriving)
