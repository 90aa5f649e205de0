/* cn_keyfile — encryption key files compatible with proxmox-backup-client
 * (pbs-key-config/src/lib.rs): compact JSON
 *
 *   {"kdf":<null|{"Scrypt":{"n","r","p","salt"}}|{"PBKDF2":{"iter","salt"}}>,
 *    "created":"<RFC 3339>","modified":"<RFC 3339>","data":"<base64>",
 *    "fingerprint":"aa:bb:...","hint":"..."}
 *
 * With a KDF, data = IV[16] || TAG[16] || AES-256-GCM(DK, key) where DK =
 * scrypt/PBKDF2(password, salt). Without, data is the raw 32-byte key.
 * Parsing uses jansson; KDFs and AES-GCM use OpenSSL.
 */
#ifndef CN_KEYFILE_H
#define CN_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_util.h"
#include "store/cn_crypt.h"

enum cn_kdf {
	CN_KDF_NONE,
	CN_KDF_SCRYPT, /* upstream default for new keys: n=65536 r=8 p=1 */
	CN_KDF_PBKDF2, /* iter=65535, HMAC-SHA256 */
};

/* Upstream refuses passwords shorter than this. */
#define CN_KEYFILE_MIN_PASSWORD 5

/* Creates the JSON text of a new key file protecting key (NULL = a fresh
 * random key) with kdf (password ignored for CN_KDF_NONE; else at least
 * CN_KEYFILE_MIN_PASSWORD bytes, -EINVAL otherwise). hint may be NULL. now
 * is the created/modified time (Unix seconds, written in the local time
 * zone as upstream). Appends the JSON to json_out (no trailing newline);
 * key_out (may be NULL) receives the raw key. 0 or a negative code. */
int cn_keyfile_create(const uint8_t *key, enum cn_kdf kdf, const char *password,
		      size_t password_len, const char *hint, int64_t now,
		      struct cn_buf *json_out, uint8_t key_out[32]);

/* Writes key file JSON to path with mode 0600: refuses to overwrite an
 * existing file (-EEXIST) unless replace is set (then atomically replaces
 * it). 0 or a negative code with a message. */
int cn_keyfile_save(const char *path, const uint8_t *json, size_t len, int replace);

struct cn_keyfile; /* opaque parsed key file */

/* Parses key file JSON (any key order, as upstream reads it). Errors:
 * -CN_E_FORMAT with a message for anything malformed. *out freed with
 * cn_keyfile_free(). */
int cn_keyfile_parse(const uint8_t *json, size_t len, struct cn_keyfile **out);
/* Frees a parsed key file (wiping its data). NULL is ok. */
void cn_keyfile_free(struct cn_keyfile *kf);

/* The key derivation function and the created/modified times (Unix
 * seconds) of a parsed key file. */
enum cn_kdf cn_keyfile_kdf(const struct cn_keyfile *kf);
int64_t cn_keyfile_created(const struct cn_keyfile *kf);
int64_t cn_keyfile_modified(const struct cn_keyfile *kf);
/* The password hint or NULL (borrowed from kf). */
const char *cn_keyfile_hint(const struct cn_keyfile *kf);
/* 1 and fp filled if the file stores a fingerprint, else 0. */
int cn_keyfile_stored_fingerprint(const struct cn_keyfile *kf, uint8_t fp[32]);

/* Recovers the raw key (password ignored without a KDF). Errors: -EINVAL
 * password too short, -CN_E_CRYPT wrong password (the message carries the
 * hint when there is one), -CN_E_CHECKSUM the stored fingerprint does not
 * match the key. fp (may be NULL) receives the key's fingerprint. */
int cn_keyfile_decrypt(const struct cn_keyfile *kf, const char *password, size_t password_len,
		       uint8_t key[32], uint8_t fp[32]);

/* Convenience: reads the file at path, decrypts it and makes a crypt
 * config (*out freed with cn_crypt_config_free()). */
int cn_keyfile_load(const char *path, const char *password, size_t password_len,
		    struct cn_crypt_config **out);

/* Master-key wrapping (upstream rsa_encrypt_key_config): builds the
 * compact key file JSON {"kdf":null,"created","modified","data":<key>,
 * "fingerprint"} (created = the key's creation time, modified = now) and
 * encrypts it with the RSA public key (PEM "PUBLIC KEY") using PKCS#1 v1.5
 * padding. Appends modulus-size bytes to out: the content of
 * rsa-encrypted.key.blob (which upstream stores as an uncompressed,
 * unencrypted blob, listed last in the manifest). -CN_E_FORMAT for a key
 * that is not RSA, -CN_E_CRYPT when encryption fails. */
int cn_keyfile_rsa_wrap(const char *public_pem, size_t pem_len, const uint8_t key[32],
			int64_t created, int64_t now, struct cn_buf *out);

/* The reverse, for recovery: decrypts data with the RSA private key (PEM,
 * optionally passphrase-protected PKCS#8; passphrase may be NULL) and
 * appends the key file JSON to json_out (parse it with cn_keyfile_parse).
 * -CN_E_CRYPT on a wrong key or passphrase. */
int cn_keyfile_rsa_unwrap(const char *private_pem, size_t pem_len, const char *passphrase,
			  const uint8_t *data, size_t len, struct cn_buf *json_out);

#endif
