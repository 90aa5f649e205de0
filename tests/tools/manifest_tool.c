/* manifest_tool — writes a manifest's JSON text on stdout, for
 * interoperability tests (tests/manifest_interop.py).
 *
 * usage: manifest_tool KEYHEX|- TYPE ID TIME [NAME SIZE MODE]...
 * Each file gets csum = SHA-256(NAME). unprotected.notes = $NOTES if set. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_manifest.h"

int main(int argc, char **argv)
{
	struct cn_crypt_config *crypt = NULL;
	struct cn_snapshot_id id = {0};
	struct cn_manifest *m;
	uint8_t key[32];

	if (argc < 5 || (argc - 5) % 3) {
		fprintf(stderr, "usage: %s KEYHEX|- TYPE ID TIME [NAME SIZE MODE]...\n", argv[0]);
		return 2;
	}
	if (strcmp(argv[1], "-") && (cn_hex_decode(argv[1], key, 32) < 0 ||
				     cn_crypt_config_new(key, &crypt) < 0))
		return 2;
	snprintf(id.type, sizeof(id.type), "%s", argv[2]);
	snprintf(id.id, sizeof(id.id), "%s", argv[3]);
	id.time = atoll(argv[4]);
	if (cn_manifest_new(&id, &m) < 0)
		goto fail;
	for (int i = 5; i < argc; i += 3) {
		uint8_t csum[32];
		enum cn_crypt_mode mode;
		if (cn_chunk_digest(NULL, (const uint8_t *)argv[i], strlen(argv[i]), csum) < 0 ||
		    cn_crypt_mode_parse(argv[i + 2], &mode) < 0 ||
		    cn_manifest_add_file(m, argv[i], strtoull(argv[i + 1], NULL, 10), csum, mode) < 0)
			goto fail;
	}
	if (getenv("NOTES"))
		json_object_set_new(cn_manifest_unprotected(m), "notes", json_string(getenv("NOTES")));
	struct cn_buf out = {0};
	if (cn_manifest_to_json(m, crypt, &out) < 0)
		goto fail;
	fwrite(out.data, 1, out.len, stdout);
	cn_buf_free(&out);
	cn_manifest_free(m);
	cn_crypt_config_free(crypt);
	return 0;
fail:
	fprintf(stderr, "%s\n", cn_error_message());
	return 1;
}
