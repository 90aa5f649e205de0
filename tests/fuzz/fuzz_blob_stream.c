/* libFuzzer target: DataBlob decoding while it arrives (cn_blob_stream.h).
 * The input is that of fuzz_blob (the first byte chooses a key; the rest
 * is the blob); the first byte also chooses the piece size. Fed in pieces,
 * the blob must decode exactly as cn_blob_decode_inplace decodes it whole:
 * the same code, the same content, with and without an expected digest. */
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_blob_stream.h"
#include "store/cn_crypt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes data both ways with expected (NULL: none); aborts when they
 * differ. Returns the code; *plain gets the content when it is 0. */
static int both_ways(struct cn_blob_stream *st, const uint8_t *data, size_t size,
		     const struct cn_crypt_config *crypt, const uint8_t *expected, size_t piece,
		     struct cn_buf *plain)
{
	struct cn_buf whole = {0}, wscratch = {0}, raw = {0}, scratch = {0};
	const uint8_t *wout = NULL, *sout = NULL;
	size_t wlen = 0, slen = 0;
	if (cn_buf_append(&whole, data, size) < 0)
		abort();
	int rw = cn_blob_decode_inplace(NULL, whole.data, whole.len, crypt, expected, &wscratch,
					&wout, &wlen);
	cn_blob_stream_begin(st, &raw, crypt, expected);
	int rs = 0;
	for (size_t off = 0; off < size && rs == 0; off += piece)
		rs = cn_blob_stream_write(st, data + off, size - off < piece ? size - off : piece);
	if (rs == 0)
		rs = cn_blob_stream_finish(st, NULL, &scratch, &sout, &slen);
	if (rs != rw || (rw == 0 && (slen != wlen || (wlen && memcmp(sout, wout, wlen)))))
		abort();
	if (rw == 0 && cn_buf_append(plain, wout, wlen) < 0)
		abort();
	cn_buf_free(&whole);
	cn_buf_free(&wscratch);
	cn_buf_free(&raw);
	cn_buf_free(&scratch);
	cn_error_clear();
	return rw;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[32] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
					16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
	static const size_t pieces[] = {1, 3, 16, 44, 45, 1000, 16384, 1u << 30};
	struct cn_crypt_config *crypt = NULL;
	struct cn_blob_stream *st = NULL;
	struct cn_buf plain = {0}, ignored = {0};
	uint8_t digest[32];

	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	data++, size--;
	if (((mode & 1) && cn_crypt_config_new(key, &crypt) < 0) || cn_blob_stream_new(&st) < 0)
		abort();
	size_t piece = pieces[(mode >> 1) % (sizeof(pieces) / sizeof(pieces[0]))];
	int type = cn_blob_type(data, size);
	if (both_ways(st, data, size, crypt, NULL, piece, &plain) == 0 && type >= 0) {
		const struct cn_crypt_config *dc =
			type == CN_BLOB_ENCRYPTED || type == CN_BLOB_ENCRYPTED_ZSTD ? crypt : NULL;
		if (cn_chunk_digest(dc, plain.data, plain.len, digest) < 0)
			abort();
		both_ways(st, data, size, crypt, digest, piece, &ignored);
		digest[0] ^= 1;
		both_ways(st, data, size, crypt, digest, piece, &ignored);
	}
	cn_buf_free(&plain);
	cn_buf_free(&ignored);
	cn_blob_stream_free(st);
	cn_crypt_config_free(crypt);
	return 0;
}
