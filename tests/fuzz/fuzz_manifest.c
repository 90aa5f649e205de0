/* libFuzzer target: manifest parsing (cn_manifest.h), as JSON text and as
 * index.json.blob, with and without a key. Whatever parses must write out
 * and parse back to the same text. */
#include <stdlib.h>
#include <string.h>

#include "common/cn_util.h"
#include "store/cn_crypt.h"
#include "store/cn_manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_roundtrip(struct cn_manifest *m)
{
	struct cn_buf a = {0}, b = {0};
	struct cn_manifest *m2 = NULL;
	if (cn_manifest_to_json(m, NULL, &a) < 0)
		abort();
	if (cn_manifest_parse_json(a.data, a.len, NULL, &m2) < 0)
		abort();
	if (cn_manifest_to_json(m2, NULL, &b) < 0 || a.len != b.len || memcmp(a.data, b.data, a.len))
		abort();
	for (size_t i = 0; i < cn_manifest_file_count(m2); i++) {
		const char *name;
		cn_manifest_file_at(m2, i, &name, NULL, NULL, NULL);
		if (cn_manifest_find(m2, name) < 0)
			abort();
	}
	cn_manifest_free(m2);
	cn_buf_free(&a);
	cn_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[32] = {42};
	struct cn_crypt_config *crypt = NULL;
	struct cn_manifest *m = NULL;

	if (cn_crypt_config_new(key, &crypt) < 0)
		abort();
	for (int k = 0; k < 2; k++) {
		if (cn_manifest_parse_json(data, size, k ? crypt : NULL, &m) == 0) {
			check_roundtrip(m);
			cn_manifest_free(m);
			m = NULL;
		}
		if (cn_manifest_decode(data, size, k ? crypt : NULL, &m) == 0) {
			check_roundtrip(m);
			cn_manifest_free(m);
			m = NULL;
		}
	}
	cn_crypt_config_free(crypt);
	return 0;
}
