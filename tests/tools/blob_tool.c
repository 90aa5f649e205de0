/* blob_tool — encodes stdin as one DataBlob chunk on stdout and prints the
 * chunk digest (hex) on stderr, for interoperability tests that check the
 * bytes with an independent decoder (tests/blob_interop.py).
 *
 * usage: blob_tool [-k KEYHEX] [-c COMPRESS] < data > blob */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_crypt.h"

int main(int argc, char **argv)
{
	struct cn_crypt_config *crypt = NULL;
	int compress = CN_BLOB_COMPRESS, opt;
	uint8_t key[32];
	while ((opt = getopt(argc, argv, "k:c:")) != -1) {
		if (opt == 'k' && cn_hex_decode(optarg, key, 32) == 0 &&
		    cn_crypt_config_new(key, &crypt) == 0)
			continue;
		if (opt == 'c') {
			compress = atoi(optarg);
			continue;
		}
		fprintf(stderr, "usage: %s [-k KEYHEX] [-c COMPRESS] < data > blob\n", argv[0]);
		return 2;
	}
	struct cn_buf in = {0};
	uint8_t buf[65536];
	ssize_t n;
	while ((n = read(0, buf, sizeof(buf))) > 0)
		cn_buf_append(&in, buf, (size_t)n);
	struct cn_chunk *c;
	if (cn_blob_encode_chunk(in.data ? in.data : buf, in.len, crypt, compress, &c) < 0) {
		fprintf(stderr, "%s\n", cn_error_message());
		return 1;
	}
	char hex[65];
	cn_hex_encode(c->digest, 32, hex);
	fprintf(stderr, "%s\n", hex);
	int r = cn_write_full(1, c->data, c->len);
	cn_chunk_unref(c);
	cn_buf_free(&in);
	cn_crypt_config_free(crypt);
	return r < 0;
}
