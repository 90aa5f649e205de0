/* keyfile_tool — creates a key file on stdout (raw key as hex on stderr)
 * for interoperability tests (tests/keyfile_interop.py).
 *
 * usage: keyfile_tool none|scrypt|pbkdf2 [PASSWORD] */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_keyfile.h"

int main(int argc, char **argv)
{
	enum cn_kdf kdf;
	if (argc >= 2 && !strcmp(argv[1], "none"))
		kdf = CN_KDF_NONE;
	else if (argc >= 3 && !strcmp(argv[1], "scrypt"))
		kdf = CN_KDF_SCRYPT;
	else if (argc >= 3 && !strcmp(argv[1], "pbkdf2"))
		kdf = CN_KDF_PBKDF2;
	else {
		fprintf(stderr, "usage: %s none|scrypt|pbkdf2 [PASSWORD]\n", argv[0]);
		return 2;
	}
	const char *pw = argc >= 3 ? argv[2] : "";
	struct cn_buf js = {0};
	uint8_t key[32];
	if (cn_keyfile_create(NULL, kdf, pw, strlen(pw), NULL, (int64_t)time(NULL), &js, key) < 0) {
		fprintf(stderr, "%s\n", cn_error_message());
		return 1;
	}
	char hex[65];
	cn_hex_encode(key, 32, hex);
	fprintf(stderr, "%s\n", hex);
	int r = cn_write_full(1, js.data, js.len);
	cn_buf_free(&js);
	return r < 0;
}
