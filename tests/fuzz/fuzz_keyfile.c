/* libFuzzer target: key file parsing (cn_keyfile.h). Keys without a KDF
 * are also decrypted (fingerprint check); KDF keys are not, because a
 * hostile scrypt cost would only measure the KDF. */
#include <stdlib.h>
#include <string.h>

#include "store/cn_keyfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cn_keyfile *kf = NULL;
	uint8_t key[32], fp[32], sfp[32];

	if (cn_keyfile_parse(data, size, &kf) < 0)
		return 0;
	(void)cn_keyfile_created(kf);
	(void)cn_keyfile_modified(kf);
	const char *hint = cn_keyfile_hint(kf);
	if (hint && strlen(hint) > size)
		abort();
	int has_fp = cn_keyfile_stored_fingerprint(kf, sfp);
	if (cn_keyfile_kdf(kf) == CN_KDF_NONE) {
		int r = cn_keyfile_decrypt(kf, NULL, 0, key, fp);
		if (r == 0 && has_fp && memcmp(fp, sfp, 32) != 0)
			abort();
		if (r < 0 && !has_fp)
			abort(); /* without a stored fingerprint nothing can fail */
	}
	cn_keyfile_free(kf);
	return 0;
}
