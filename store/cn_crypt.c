/* AES-256-GCM, keyed digests, HMAC and fingerprints as upstream's
 * crypt_config.rs; every primitive is OpenSSL's. */
#include "store/cn_crypt.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

struct cn_crypt_config {
	uint8_t enc_key[32];
	uint8_t id_key[32];
};

/* SHA-256("Proxmox Backup Encryption Key Fingerprint") */
static const uint8_t fingerprint_input[32] = {
	110, 208, 239, 119, 71, 31, 255, 77, 85, 199, 168, 254, 74, 157, 182, 33,
	97, 64, 127, 19, 76, 114, 93, 223, 48, 153, 45, 37, 236, 69, 237, 38,
};

int cn_crypt_config_new(const uint8_t key[CN_CRYPT_KEY_SIZE], struct cn_crypt_config **out)
{
	struct cn_crypt_config *c = calloc(1, sizeof(*c));
	if (!c)
		return cn_error_set(-ENOMEM, "out of memory");
	memcpy(c->enc_key, key, 32);
	if (PKCS5_PBKDF2_HMAC((const char *)key, 32, (const unsigned char *)"_id_key", 7, 10,
			      EVP_sha256(), 32, c->id_key) != 1) {
		cn_crypt_config_free(c);
		return cn_error_set(-CN_E_CRYPT, "PBKDF2 (id_key) failed");
	}
	*out = c;
	return 0;
}

void cn_crypt_config_free(struct cn_crypt_config *c)
{
	if (!c)
		return;
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

const uint8_t *cn_crypt_id_key(const struct cn_crypt_config *c)
{
	return c->id_key;
}

/* SHA-256 over a || b (b may be NULL). */
static int sha256_2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
		    uint8_t digest[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(md, a, alen) == 1 &&
		 (!b || EVP_DigestUpdate(md, b, blen) == 1) &&
		 EVP_DigestFinal_ex(md, digest, NULL) == 1;
	EVP_MD_CTX_free(md);
	return ok ? 0 : cn_error_set(-CN_E_CRYPT, "SHA-256 failed");
}

int cn_chunk_digest(const struct cn_crypt_config *crypt, const uint8_t *data, size_t len,
		    uint8_t digest[32])
{
	/* id_key after the data, as upstream (against length extension) */
	if (crypt)
		return sha256_2(data, len, crypt->id_key, 32, digest);
	return sha256_2(data, len, NULL, 0, digest);
}

int cn_crypt_auth_tag(const struct cn_crypt_config *c, const uint8_t *data, size_t len,
		      uint8_t tag[32])
{
	unsigned int tag_len = 32;
	if (!HMAC(EVP_sha256(), c->id_key, 32, data, len, tag, &tag_len) || tag_len != 32)
		return cn_error_set(-CN_E_CRYPT, "HMAC-SHA256 failed");
	return 0;
}

void cn_crypt_fingerprint(const struct cn_crypt_config *c, uint8_t fp[32])
{
	/* cannot fail short of a broken OpenSSL; keep the signature simple */
	if (sha256_2(fingerprint_input, 32, c->id_key, 32, fp) < 0)
		memset(fp, 0, 32);
}

void cn_fingerprint_format(const uint8_t fp[32], int short_form, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t n = short_form ? 8 : 32, o = 0;
	for (size_t i = 0; i < n; i++) {
		if (i)
			out[o++] = ':';
		out[o++] = digits[fp[i] >> 4];
		out[o++] = digits[fp[i] & 15];
	}
	out[o] = '\0';
}

int cn_fingerprint_parse(const char *text, uint8_t fp[32])
{
	if (strlen(text) != 32 * 3 - 1)
		return -EINVAL;
	for (size_t i = 0; i < 32; i++) {
		char pair[3] = {text[3 * i], text[3 * i + 1], '\0'};
		if (i < 31 && text[3 * i + 2] != ':')
			return -EINVAL;
		if (cn_hex_decode(pair, &fp[i], 1) < 0)
			return -EINVAL;
	}
	return 0;
}

/* One AES-256-GCM pass with a 16-byte IV and empty AAD. Upstream feeds the
 * data in 32 KiB pieces; GCM output does not depend on that. len may be 0. */
static int gcm(int enc, const uint8_t key[32], const uint8_t iv[16], const uint8_t *in,
	       size_t len, uint8_t *out, uint8_t tag[16])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int ok = 0, n;
	if (!ctx)
		return cn_error_set(-ENOMEM, "out of memory");
	if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 16, NULL) != 1 ||
	    EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, enc) != 1)
		goto out;
	/* EVP takes int lengths: feed large inputs in pieces */
	while (len) {
		int piece = len > (1u << 30) ? (1 << 30) : (int)len;
		if (EVP_CipherUpdate(ctx, out, &n, in, piece) != 1 || n != piece)
			goto out;
		in += piece;
		out += piece;
		len -= (size_t)piece;
	}
	if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1)
		goto out;
	if (EVP_CipherFinal_ex(ctx, out, &n) != 1) {
		ok = enc ? 0 : -1;
		goto out;
	}
	if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
		goto out;
	ok = 1;
out:
	EVP_CIPHER_CTX_free(ctx);
	if (ok == 1)
		return 0;
	if (ok < 0)
		return cn_error_set(-CN_E_TAG,
				    "AES-GCM authentication failed (wrong key or corrupted data)");
	return cn_error_set(-CN_E_CRYPT, "AES-256-GCM %s failed", enc ? "encryption" : "decryption");
}

int cn_aes_gcm_seal(const uint8_t key[32], const uint8_t iv[CN_CRYPT_IV_SIZE],
		    const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[CN_CRYPT_TAG_SIZE])
{
	return gcm(1, key, iv, in, len, out, tag);
}

int cn_aes_gcm_open(const uint8_t key[32], const uint8_t iv[CN_CRYPT_IV_SIZE],
		    const uint8_t *in, size_t len, uint8_t *out,
		    const uint8_t tag[CN_CRYPT_TAG_SIZE])
{
	uint8_t t[16];
	memcpy(t, tag, 16);
	return gcm(0, key, iv, in, len, out, t);
}

int cn_random_bytes(uint8_t *buf, size_t len)
{
	while (len) {
		int piece = len > (1u << 20) ? (1 << 20) : (int)len;
		if (RAND_bytes(buf, piece) != 1)
			return cn_error_set(-CN_E_CRYPT, "no random bytes from OpenSSL");
		buf += piece;
		len -= (size_t)piece;
	}
	return 0;
}

int cn_crypt_encrypt(const struct cn_crypt_config *c, const uint8_t *in, size_t len,
		     uint8_t *out, uint8_t iv[CN_CRYPT_IV_SIZE], uint8_t tag[CN_CRYPT_TAG_SIZE])
{
	int r = cn_random_bytes(iv, CN_CRYPT_IV_SIZE);
	if (r < 0)
		return r;
	return gcm(1, c->enc_key, iv, in, len, out, tag);
}

int cn_crypt_decrypt(const struct cn_crypt_config *c, const uint8_t *in, size_t len,
		     uint8_t *out, const uint8_t iv[CN_CRYPT_IV_SIZE],
		     const uint8_t tag[CN_CRYPT_TAG_SIZE])
{
	return cn_aes_gcm_open(c->enc_key, iv, in, len, out, tag);
}

struct cn_crypt_decrypter {
	EVP_CIPHER_CTX *ctx;
};

int cn_crypt_decrypter_new(struct cn_crypt_decrypter **out)
{
	struct cn_crypt_decrypter *d = calloc(1, sizeof(*d));
	if (!d || !(d->ctx = EVP_CIPHER_CTX_new())) {
		free(d);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	*out = d;
	return 0;
}

void cn_crypt_decrypter_free(struct cn_crypt_decrypter *d)
{
	if (!d)
		return;
	EVP_CIPHER_CTX_free(d->ctx); /* (cleanses the key schedule) */
	free(d);
}

int cn_crypt_decrypter_begin(struct cn_crypt_decrypter *d, const struct cn_crypt_config *c,
			     const uint8_t iv[CN_CRYPT_IV_SIZE])
{
	if (EVP_CIPHER_CTX_reset(d->ctx) != 1 ||
	    EVP_DecryptInit_ex(d->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_GCM_SET_IVLEN, CN_CRYPT_IV_SIZE, NULL) != 1 ||
	    EVP_DecryptInit_ex(d->ctx, NULL, NULL, c->enc_key, iv) != 1)
		return cn_error_set(-CN_E_CRYPT, "AES-256-GCM decryption failed");
	return 0;
}

int cn_crypt_decrypter_update(struct cn_crypt_decrypter *d, const uint8_t *in, size_t len,
			      uint8_t *out)
{
	int n;
	while (len) { /* EVP takes int lengths */
		int piece = len > (1u << 30) ? (1 << 30) : (int)len;
		if (EVP_DecryptUpdate(d->ctx, out, &n, in, piece) != 1 || n != piece)
			return cn_error_set(-CN_E_CRYPT, "AES-256-GCM decryption failed");
		in += piece;
		out += piece;
		len -= (size_t)piece;
	}
	return 0;
}

int cn_crypt_decrypter_final(struct cn_crypt_decrypter *d, const uint8_t tag[CN_CRYPT_TAG_SIZE])
{
	uint8_t t[CN_CRYPT_TAG_SIZE], end[16];
	int n;
	memcpy(t, tag, sizeof(t));
	if (EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_GCM_SET_TAG, CN_CRYPT_TAG_SIZE, t) != 1)
		return cn_error_set(-CN_E_CRYPT, "AES-256-GCM decryption failed");
	if (EVP_DecryptFinal_ex(d->ctx, end, &n) != 1)
		return cn_error_set(-CN_E_TAG,
				    "AES-GCM authentication failed (wrong key or corrupted data)");
	return 0;
}
