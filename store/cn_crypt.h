/* cn_crypt — the key material and primitives of PBS encryption, as upstream's
 * pbs-tools/src/crypt_config.rs: AES-256-GCM with a 16-byte IV and empty AAD,
 * the id_key (PBKDF2-HMAC-SHA256(key, "_id_key", 10 iterations)), keyed chunk
 * digests SHA-256(data || id_key), HMAC-SHA256 auth tags and the key
 * fingerprint. OpenSSL (EVP) does every cryptographic operation.
 *
 * A struct cn_crypt_config is immutable after creation and may be shared by
 * any number of threads. */
#ifndef CN_CRYPT_H
#define CN_CRYPT_H

#include <stddef.h>
#include <stdint.h>

#define CN_CRYPT_KEY_SIZE 32
#define CN_CRYPT_IV_SIZE 16
#define CN_CRYPT_TAG_SIZE 16
/* "aa:bb:...:ff" for 32 bytes, plus NUL */
#define CN_FINGERPRINT_TEXT_SIZE (32 * 3)

struct cn_crypt_config; /* opaque: enc_key[32], id_key[32] */

/* Creates a crypt config from the raw 32-byte encryption key (as stored in a
 * key file after decryption, see cn_keyfile.h); derives id_key as upstream.
 * The caller frees *out with cn_crypt_config_free(). The key is copied.
 * Returns 0, -ENOMEM or -CN_E_CRYPT (OpenSSL failure). */
int cn_crypt_config_new(const uint8_t key[CN_CRYPT_KEY_SIZE], struct cn_crypt_config **out);

/* Frees a config (wiping the key material). NULL is ok. */
void cn_crypt_config_free(struct cn_crypt_config *c);

/* The derived id_key (32 bytes, borrowed from c). For tests and for code that
 * must reproduce upstream derivations; never log it. */
const uint8_t *cn_crypt_id_key(const struct cn_crypt_config *c);

/* Chunk digest: SHA-256(data) when crypt is NULL (plain and sign-only
 * backups), SHA-256(data || id_key) when crypt is given (encrypted backups).
 * Returns 0 or -CN_E_CRYPT on an OpenSSL failure. */
int cn_chunk_digest(const struct cn_crypt_config *crypt, const uint8_t *data, size_t len,
		    uint8_t digest[32]);

/* HMAC-SHA256 with id_key over data (upstream compute_auth_tag, used for the
 * manifest signature). Returns 0 or -CN_E_CRYPT. */
int cn_crypt_auth_tag(const struct cn_crypt_config *c, const uint8_t *data, size_t len,
		      uint8_t tag[32]);

/* Key fingerprint: SHA-256(SHA-256("Proxmox Backup Encryption Key
 * Fingerprint") || id_key). */
void cn_crypt_fingerprint(const struct cn_crypt_config *c, uint8_t fp[32]);

/* Formats a fingerprint as upstream prints it: lowercase hex pairs joined by
 * ':' ("aa:bb:..."), all 32 bytes (or only the first 8 when short is set,
 * the form the backup log shows). out has CN_FINGERPRINT_TEXT_SIZE bytes. */
void cn_fingerprint_format(const uint8_t fp[32], int short_form, char *out);

/* Parses the full 32-byte "aa:bb:..." form (either case). 0 or -EINVAL. */
int cn_fingerprint_parse(const char *text, uint8_t fp[32]);

/* AES-256-GCM encryption with the config's enc_key, a fresh random 16-byte
 * IV and empty AAD (upstream DataBlob::encrypt_to). in and out may be the
 * same buffer; out receives len bytes. Returns 0 or -CN_E_CRYPT. */
int cn_crypt_encrypt(const struct cn_crypt_config *c, const uint8_t *in, size_t len,
		     uint8_t *out, uint8_t iv[CN_CRYPT_IV_SIZE], uint8_t tag[CN_CRYPT_TAG_SIZE]);

/* AES-256-GCM decryption and tag verification with the config's enc_key.
 * out receives len bytes (undefined on failure). Returns 0, -CN_E_TAG
 * (the tag does not fit: tampered data, or another key) or -CN_E_CRYPT
 * (OpenSSL failure). */
int cn_crypt_decrypt(const struct cn_crypt_config *c, const uint8_t *in, size_t len,
		     uint8_t *out, const uint8_t iv[CN_CRYPT_IV_SIZE],
		     const uint8_t tag[CN_CRYPT_TAG_SIZE]);

/* The same two operations with an explicit 32-byte key and a caller-chosen
 * IV (used by key files, whose key is derived from a password). */
int cn_aes_gcm_seal(const uint8_t key[32], const uint8_t iv[CN_CRYPT_IV_SIZE],
		    const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[CN_CRYPT_TAG_SIZE]);
int cn_aes_gcm_open(const uint8_t key[32], const uint8_t iv[CN_CRYPT_IV_SIZE],
		    const uint8_t *in, size_t len, uint8_t *out,
		    const uint8_t tag[CN_CRYPT_TAG_SIZE]);

/* Streaming AES-256-GCM decryption with a config's enc_key, for data that
 * arrives in pieces (a chunk read from the network): begin, update per
 * piece, then final checks the tag. The plaintext that update writes is
 * unauthenticated until final returns 0. One decrypter serves one stream
 * at a time and is reused for the next (begin starts over). */
struct cn_crypt_decrypter;

/* A decrypter for *out (freed with cn_crypt_decrypter_free). 0 or -ENOMEM. */
int cn_crypt_decrypter_new(struct cn_crypt_decrypter **out);

/* Frees d. NULL is ok. */
void cn_crypt_decrypter_free(struct cn_crypt_decrypter *d);

/* Starts decrypting with c's enc_key (c borrowed until final) and iv.
 * 0 or -CN_E_CRYPT. */
int cn_crypt_decrypter_begin(struct cn_crypt_decrypter *d, const struct cn_crypt_config *c,
			     const uint8_t iv[CN_CRYPT_IV_SIZE]);

/* Decrypts the next len bytes of ciphertext into out (len bytes; in and
 * out may be the same or separate buffers, not partly overlapping).
 * 0 or -CN_E_CRYPT. */
int cn_crypt_decrypter_update(struct cn_crypt_decrypter *d, const uint8_t *in, size_t len,
			      uint8_t *out);

/* Checks the tag over everything given to update: 0, -CN_E_TAG (tampered
 * data, or another key) or -CN_E_CRYPT. */
int cn_crypt_decrypter_final(struct cn_crypt_decrypter *d, const uint8_t tag[CN_CRYPT_TAG_SIZE]);

/* Fills buf with cryptographically secure random bytes (OpenSSL RAND).
 * Returns 0 or -CN_E_CRYPT. */
int cn_random_bytes(uint8_t *buf, size_t len);

#endif
