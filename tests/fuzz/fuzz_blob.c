/* libFuzzer target: DataBlob decoding (cn_blob.h). The first input byte
 * chooses whether a key and an expected digest are given; the rest is the
 * blob. Whatever decodes must re-encode and decode to the same content. */
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_crypt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[32] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
					16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
	struct cn_crypt_config *crypt = NULL;
	struct cn_buf out = {0}, again = {0}, back = {0};
	uint8_t digest[32];

	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	data++, size--;
	if ((mode & 1) && cn_crypt_config_new(key, &crypt) < 0)
		abort();
	int type = cn_blob_type(data, size);
	int r = cn_blob_decode(data, size, crypt, NULL, &out);
	if (r == 0) {
		if (type < 0)
			abort(); /* decoded something that is not a blob */
		const struct cn_crypt_config *dc =
			type == CN_BLOB_ENCRYPTED || type == CN_BLOB_ENCRYPTED_ZSTD ? crypt : NULL;
		if (cn_chunk_digest(dc, out.data, out.len, digest) < 0)
			abort();
		/* the digest check agrees with the content */
		if (cn_blob_decode(data, size, crypt, digest, &again) < 0 || again.len != out.len)
			abort();
		digest[0] ^= 1;
		if (cn_blob_decode(data, size, crypt, digest, &again) != -CN_E_DIGEST)
			abort();
		/* round trip */
		again.len = 0;
		if (cn_blob_encode(out.data, out.len, dc, (mode >> 1) % 3, &again) < 0 ||
		    cn_blob_decode(again.data, again.len, dc, NULL, &back) < 0 ||
		    back.len != out.len || (out.len && memcmp(back.data, out.data, out.len)))
			abort();
	} else if (out.len != 0) {
		abort(); /* a failed decode must not leave output */
	}
	cn_buf_free(&out);
	cn_buf_free(&again);
	cn_buf_free(&back);
	cn_crypt_config_free(crypt);
	return 0;
}
