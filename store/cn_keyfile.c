/* Key files as upstream pbs-key-config/src/lib.rs (KeyConfig). */
#include "store/cn_keyfile.h"

#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_error.h"

/* upstream: openssl::pkcs5::scrypt(..., maxmem = 1025 MiB, ...) */
#define SCRYPT_MAXMEM (1025ull * 1024 * 1024)
#define SCRYPT_N 65536
#define SCRYPT_R 8
#define SCRYPT_P 1
#define PBKDF2_ITER 65535
#define SALT_LEN 32

struct cn_keyfile {
	enum cn_kdf kdf;
	uint64_t n, r, p, iter;
	uint8_t salt[256];
	size_t salt_len;
	int64_t created, modified;
	uint8_t data[256];
	size_t data_len;
	int has_fp;
	uint8_t fp[32];
	char *hint;
};

/* ---- base64 (standard alphabet, padded), via OpenSSL ------------------- */

static char *b64_encode(const uint8_t *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	if (out)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/* Decodes canonical padded base64 into out (max bytes). Returns the length
 * or -1 when malformed or too long. */
static long b64_decode(const char *in, uint8_t *out, size_t max)
{
	size_t len = strlen(in), pad = 0;
	if (len % 4 || len / 4 * 3 > max + 2)
		return -1;
	if (len && in[len - 1] == '=')
		pad++;
	if (len > 1 && in[len - 2] == '=')
		pad++;
	for (size_t i = 0; i < len - pad; i++) {
		char c = in[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/'))
			return -1;
	}
	uint8_t *tmp = malloc(len / 4 * 3 + 1);
	if (!tmp)
		return -1;
	int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
	if (n < 0 || (size_t)n < pad || (size_t)n - pad > max) {
		free(tmp);
		return -1;
	}
	memcpy(out, tmp, (size_t)n - pad);
	free(tmp);
	return (long)((size_t)n - pad);
}

/* ---- RFC 3339 ------------------------------------------------------------ */

/* Formats t in the local time zone with a numeric offset, second precision
 * (upstream proxmox_time::epoch_to_rfc3339: "+00:00", never "Z"). */
static int format_rfc3339_local(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!localtime_r(&tt, &tm))
		return -EINVAL;
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!n)
		return -EINVAL;
	snprintf(out + n, 32 - n, "%c%02ld:%02ld", sign, off / 60, off % 60);
	return 0;
}

static int digits(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		*v = *v * 10 + (s[i] - '0');
	}
	return 0;
}

/* Parses RFC 3339 "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)". */
static int parse_rfc3339(const char *s, int64_t *t)
{
	int Y, M, D, h, m, sec, oh = 0, om = 0;
	if (strlen(s) < 20 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) ||
	    s[7] != '-' || digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &m) || s[16] != ':' ||
	    digits(s + 17, 2, &sec))
		return -EINVAL;
	const char *p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	int sign = 0;
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
		sign = 0;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && !digits(p + 1, 2, &oh) &&
		   p[3] == ':' && !digits(p + 4, 2, &om)) {
		sign = *p == '-' ? -1 : 1;
	} else {
		return -EINVAL;
	}
	if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || oh > 23 || om > 59)
		return -EINVAL;
	struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D,
			.tm_hour = h, .tm_min = m, .tm_sec = sec};
	time_t base = timegm(&tm);
	*t = (int64_t)base - sign * (int64_t)(oh * 3600 + om * 60);
	return 0;
}

/* ---- KDF ------------------------------------------------------------------ */

static int derive(const struct cn_keyfile *kf, const char *pw, size_t pw_len, uint8_t dk[32])
{
	int ok;
	if (kf->kdf == CN_KDF_SCRYPT)
		ok = EVP_PBE_scrypt(pw, pw_len, kf->salt, kf->salt_len, kf->n, kf->r, kf->p,
				    SCRYPT_MAXMEM, dk, 32);
	else
		ok = kf->iter <= INT_MAX && pw_len <= INT_MAX &&
		     PKCS5_PBKDF2_HMAC(pw, (int)pw_len, kf->salt, (int)kf->salt_len, (int)kf->iter,
				       EVP_sha256(), 32, dk);
	if (ok != 1)
		return cn_error_set(-CN_E_CRYPT, "key derivation (%s) failed",
				    kf->kdf == CN_KDF_SCRYPT ? "scrypt" : "PBKDF2");
	return 0;
}

static json_t *kdf_json(const struct cn_keyfile *kf)
{
	char *salt = b64_encode(kf->salt, kf->salt_len);
	json_t *inner = NULL, *o = NULL;
	if (!salt)
		return NULL;
	if (kf->kdf == CN_KDF_SCRYPT)
		inner = json_pack("{s:I,s:I,s:I,s:s}", "n", (json_int_t)kf->n, "r",
				  (json_int_t)kf->r, "p", (json_int_t)kf->p, "salt", salt);
	else
		inner = json_pack("{s:I,s:s}", "iter", (json_int_t)kf->iter, "salt", salt);
	free(salt);
	if (inner)
		o = json_pack("{s:o}", kf->kdf == CN_KDF_SCRYPT ? "Scrypt" : "PBKDF2", inner);
	return o;
}

/* Appends the key file JSON (compact; key order as upstream's serde
 * struct: kdf created modified data fingerprint hint). kdfj is stolen. */
static int emit_json(json_t *kdfj, const char *created, const char *modified,
		     const uint8_t *data, size_t data_len, const uint8_t fp[32], const char *hint,
		     struct cn_buf *out)
{
	char fptext[CN_FINGERPRINT_TEXT_SIZE], *b64 = b64_encode(data, data_len), *text = NULL;
	json_t *root = NULL;
	int r = -ENOMEM;

	cn_fingerprint_format(fp, 0, fptext);
	if (kdfj && b64)
		root = json_pack("{s:O,s:s,s:s,s:s,s:s}", "kdf", kdfj, "created", created, "modified",
				 modified, "data", b64, "fingerprint", fptext);
	if (root && (!hint || json_object_set_new(root, "hint", json_string(hint)) == 0))
		text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (text && cn_buf_append(out, text, strlen(text)) == 0)
		r = 0;
	if (text)
		OPENSSL_cleanse(text, strlen(text));
	if (b64)
		OPENSSL_cleanse(b64, strlen(b64));
	free(text);
	free(b64);
	json_decref(root);
	json_decref(kdfj);
	return r < 0 ? cn_error_set(r, "cannot build key file JSON") : 0;
}

/* The fingerprint of raw key k. */
static int key_fingerprint(const uint8_t k[32], uint8_t fp[32])
{
	struct cn_crypt_config *cc;
	int r = cn_crypt_config_new(k, &cc);
	if (r < 0)
		return r;
	cn_crypt_fingerprint(cc, fp);
	cn_crypt_config_free(cc);
	return 0;
}

int cn_keyfile_create(const uint8_t *key, enum cn_kdf kdf, const char *password,
		      size_t password_len, const char *hint, int64_t now,
		      struct cn_buf *json_out, uint8_t key_out[32])
{
	struct cn_keyfile kf = {.kdf = kdf};
	uint8_t k[32], dk[32] = {0}, fp[32];
	char created[32];
	json_t *kdfj;
	int r;

	if (kdf != CN_KDF_NONE && kdf != CN_KDF_SCRYPT && kdf != CN_KDF_PBKDF2)
		return cn_error_set(-EINVAL, "unknown key derivation function %d", (int)kdf);
	if (kdf != CN_KDF_NONE && password_len < CN_KEYFILE_MIN_PASSWORD)
		return cn_error_set(-EINVAL, "password is too short (at least %d bytes)",
				    CN_KEYFILE_MIN_PASSWORD);
	if (format_rfc3339_local(now, created) < 0)
		return cn_error_set(-EINVAL, "cannot format time %lld", (long long)now);
	if (key)
		memcpy(k, key, 32);
	else if ((r = cn_random_bytes(k, 32)) < 0)
		return r;
	if ((r = key_fingerprint(k, fp)) < 0)
		goto out;
	if (kdf == CN_KDF_NONE) {
		memcpy(kf.data, k, 32);
		kf.data_len = 32;
		kdfj = json_null();
	} else {
		kf.salt_len = SALT_LEN;
		kf.n = SCRYPT_N, kf.r = SCRYPT_R, kf.p = SCRYPT_P, kf.iter = PBKDF2_ITER;
		if ((r = cn_random_bytes(kf.salt, SALT_LEN)) < 0 ||
		    (r = cn_random_bytes(kf.data, 16)) < 0 ||
		    (r = derive(&kf, password, password_len, dk)) < 0 ||
		    (r = cn_aes_gcm_seal(dk, kf.data, k, 32, kf.data + 32, kf.data + 16)) < 0)
			goto out;
		kf.data_len = 64;
		kdfj = kdf_json(&kf);
	}
	r = emit_json(kdfj, created, created, kf.data, kf.data_len, fp, hint, json_out);
	if (r == 0 && key_out)
		memcpy(key_out, k, 32);
out:
	OPENSSL_cleanse(k, sizeof(k));
	OPENSSL_cleanse(dk, sizeof(dk));
	OPENSSL_cleanse(&kf, sizeof(kf));
	return r;
}

int cn_keyfile_save(const char *path, const uint8_t *json, size_t len, int replace)
{
	if (replace)
		return cn_write_file_atomic(path, json, len, 0600, 1);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return cn_error_sys(-errno, "creating key file %s", path);
	int r = cn_write_full(fd, json, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0) {
		unlink(path);
		return cn_error_sys(r, "writing key file %s", path);
	}
	return 0;
}

/* ---- reading ----------------------------------------------------------- */

void cn_keyfile_free(struct cn_keyfile *kf)
{
	if (!kf)
		return;
	free(kf->hint);
	OPENSSL_cleanse(kf, sizeof(*kf));
	free(kf);
}

static int get_u64(json_t *o, const char *key, uint64_t *v)
{
	json_t *j = json_object_get(o, key);
	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return cn_error_set(-CN_E_FORMAT, "key file: \"%s\" is not a non-negative integer", key);
	*v = (uint64_t)json_integer_value(j);
	return 0;
}

static int get_b64(json_t *o, const char *key, uint8_t *out, size_t max, size_t *len)
{
	json_t *j = json_object_get(o, key);
	long n = json_is_string(j) ? b64_decode(json_string_value(j), out, max) : -1;
	if (n < 0)
		return cn_error_set(-CN_E_FORMAT, "key file: \"%s\" is not valid base64 (max %zu bytes)",
				    key, max);
	*len = (size_t)n;
	return 0;
}

static int get_time(json_t *o, const char *key, int64_t *t)
{
	json_t *j = json_object_get(o, key);
	if (!json_is_string(j) || parse_rfc3339(json_string_value(j), t) < 0)
		return cn_error_set(-CN_E_FORMAT, "key file: \"%s\" is not an RFC 3339 time", key);
	return 0;
}

static int parse_kdf(json_t *k, struct cn_keyfile *kf)
{
	json_t *inner;
	int r;
	if (!k || json_is_null(k)) {
		kf->kdf = CN_KDF_NONE;
		return 0;
	}
	if (!json_is_object(k) || json_object_size(k) != 1)
		return cn_error_set(-CN_E_FORMAT, "key file: \"kdf\" must be null or one variant");
	if ((inner = json_object_get(k, "Scrypt"))) {
		kf->kdf = CN_KDF_SCRYPT;
		if ((r = get_u64(inner, "n", &kf->n)) < 0 || (r = get_u64(inner, "r", &kf->r)) < 0 ||
		    (r = get_u64(inner, "p", &kf->p)) < 0)
			return r;
	} else if ((inner = json_object_get(k, "PBKDF2"))) {
		kf->kdf = CN_KDF_PBKDF2;
		if ((r = get_u64(inner, "iter", &kf->iter)) < 0)
			return r;
		if (kf->iter == 0 || kf->iter > INT_MAX)
			return cn_error_set(-CN_E_FORMAT, "key file: PBKDF2 iterations out of range");
	} else {
		return cn_error_set(-CN_E_FORMAT, "key file: unknown key derivation function");
	}
	if (!json_is_object(inner))
		return cn_error_set(-CN_E_FORMAT, "key file: malformed \"kdf\"");
	return get_b64(inner, "salt", kf->salt, sizeof(kf->salt), &kf->salt_len);
}

int cn_keyfile_parse(const uint8_t *json, size_t len, struct cn_keyfile **out)
{
	json_error_t err;
	json_t *root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &err);
	struct cn_keyfile *kf = NULL;
	int r;

	if (!root)
		return cn_error_set(-CN_E_FORMAT, "key file is not JSON: %s (line %d)", err.text,
				    err.line);
	if (!json_is_object(root)) {
		r = cn_error_set(-CN_E_FORMAT, "key file is not a JSON object");
		goto out;
	}
	kf = calloc(1, sizeof(*kf));
	if (!kf) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	if ((r = parse_kdf(json_object_get(root, "kdf"), kf)) < 0 ||
	    (r = get_time(root, "created", &kf->created)) < 0 ||
	    (r = get_time(root, "modified", &kf->modified)) < 0 ||
	    (r = get_b64(root, "data", kf->data, sizeof(kf->data), &kf->data_len)) < 0)
		goto out;
	if (kf->kdf == CN_KDF_NONE ? kf->data_len != 32 : kf->data_len != 64) {
		r = cn_error_set(-CN_E_FORMAT, "key file: \"data\" has %zu bytes, expected %d",
				 kf->data_len, kf->kdf == CN_KDF_NONE ? 32 : 64);
		goto out;
	}
	json_t *fp = json_object_get(root, "fingerprint");
	if (fp && !json_is_null(fp)) {
		if (!json_is_string(fp) || cn_fingerprint_parse(json_string_value(fp), kf->fp) < 0) {
			r = cn_error_set(-CN_E_FORMAT, "key file: malformed \"fingerprint\"");
			goto out;
		}
		kf->has_fp = 1;
	}
	json_t *hint = json_object_get(root, "hint");
	if (hint && !json_is_null(hint)) {
		if (!json_is_string(hint) || !(kf->hint = strdup(json_string_value(hint)))) {
			r = cn_error_set(-CN_E_FORMAT, "key file: malformed \"hint\"");
			goto out;
		}
	}
	*out = kf;
	kf = NULL;
	r = 0;
out:
	cn_keyfile_free(kf);
	json_decref(root);
	return r;
}

enum cn_kdf cn_keyfile_kdf(const struct cn_keyfile *kf)
{
	return kf->kdf;
}

int64_t cn_keyfile_created(const struct cn_keyfile *kf)
{
	return kf->created;
}

int64_t cn_keyfile_modified(const struct cn_keyfile *kf)
{
	return kf->modified;
}

const char *cn_keyfile_hint(const struct cn_keyfile *kf)
{
	return kf->hint;
}

int cn_keyfile_stored_fingerprint(const struct cn_keyfile *kf, uint8_t fp[32])
{
	if (kf->has_fp)
		memcpy(fp, kf->fp, 32);
	return kf->has_fp;
}

int cn_keyfile_decrypt(const struct cn_keyfile *kf, const char *password, size_t password_len,
		       uint8_t key[32], uint8_t fp[32])
{
	struct cn_crypt_config *cc;
	uint8_t dk[32], k[32], got[32];
	int r;

	if (kf->kdf == CN_KDF_NONE) {
		memcpy(k, kf->data, 32);
	} else {
		if (!password || password_len < CN_KEYFILE_MIN_PASSWORD)
			return cn_error_set(-EINVAL, "password is too short");
		if ((r = derive(kf, password, password_len, dk)) < 0)
			return r;
		r = cn_aes_gcm_open(dk, kf->data, kf->data + 32, 32, k, kf->data + 16);
		OPENSSL_cleanse(dk, sizeof(dk));
		if (r < 0) {
			if (kf->hint)
				return cn_error_set(-CN_E_CRYPT,
						    "unable to decrypt key (password hint: %s)", kf->hint);
			return cn_error_set(-CN_E_CRYPT, "unable to decrypt key (wrong password?)");
		}
	}
	if ((r = cn_crypt_config_new(k, &cc)) < 0)
		goto out;
	cn_crypt_fingerprint(cc, got);
	cn_crypt_config_free(cc);
	if (kf->has_fp && memcmp(got, kf->fp, 32) != 0) {
		char a[CN_FINGERPRINT_TEXT_SIZE], b[CN_FINGERPRINT_TEXT_SIZE];
		cn_fingerprint_format(kf->fp, 0, a);
		cn_fingerprint_format(got, 0, b);
		r = cn_error_set(-CN_E_CHECKSUM,
				 "key file contains wrong fingerprint %s, contained key has fingerprint %s",
				 a, b);
		goto out;
	}
	memcpy(key, k, 32);
	if (fp)
		memcpy(fp, got, 32);
	r = 0;
out:
	OPENSSL_cleanse(k, sizeof(k));
	return r;
}

int cn_keyfile_load(const char *path, const char *password, size_t password_len,
		    struct cn_crypt_config **out)
{
	uint8_t *data, key[32];
	size_t len;
	struct cn_keyfile *kf;
	int r = cn_read_file(path, 1u << 20, &data, &len);
	if (r < 0)
		return r;
	r = cn_keyfile_parse(data, len, &kf);
	free(data);
	if (r < 0)
		return cn_error_prefix(r, "key file %s", path);
	r = cn_keyfile_decrypt(kf, password, password_len, key, NULL);
	cn_keyfile_free(kf);
	if (r < 0)
		return cn_error_prefix(r, "key file %s", path);
	r = cn_crypt_config_new(key, out);
	OPENSSL_cleanse(key, sizeof(key));
	return r;
}

/* ---- master key (RSA) wrapping -------------------------------------------- */

int cn_keyfile_rsa_wrap(const char *public_pem, size_t pem_len, const uint8_t key[32],
			int64_t created, int64_t now, struct cn_buf *out)
{
	struct cn_buf js = {0};
	char c_text[32], m_text[32];
	uint8_t fp[32];
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	BIO *bio = NULL;
	size_t n = 0;
	int r;

	if (format_rfc3339_local(created, c_text) < 0 || format_rfc3339_local(now, m_text) < 0)
		return cn_error_set(-EINVAL, "cannot format key times");
	if ((r = key_fingerprint(key, fp)) < 0 ||
	    (r = emit_json(json_null(), c_text, m_text, key, 32, fp, NULL, &js)) < 0)
		goto out;
	r = -CN_E_CRYPT;
	bio = BIO_new_mem_buf(public_pem, (int)pem_len);
	pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	if (!pk || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
		r = cn_error_set(-CN_E_FORMAT, "master key is not an RSA public key in PEM form");
		goto out;
	}
	ctx = EVP_PKEY_CTX_new(pk, NULL);
	if (!ctx || EVP_PKEY_encrypt_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1 ||
	    EVP_PKEY_encrypt(ctx, NULL, &n, js.data, js.len) != 1 || cn_buf_reserve(out, n) < 0 ||
	    EVP_PKEY_encrypt(ctx, out->data + out->len, &n, js.data, js.len) != 1) {
		r = cn_error_set(-CN_E_CRYPT,
				 "RSA encryption of the key failed (%zu bytes of JSON need a modulus of "
				 "at least %zu bytes)", js.len, js.len + 11);
		goto out;
	}
	out->len += n;
	r = 0;
out:
	if (js.data)
		OPENSSL_cleanse(js.data, js.len);
	cn_buf_free(&js);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	BIO_free(bio);
	return r;
}

int cn_keyfile_rsa_unwrap(const char *private_pem, size_t pem_len, const char *passphrase,
			  const uint8_t *data, size_t len, struct cn_buf *json_out)
{
	EVP_PKEY *pk = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	BIO *bio = BIO_new_mem_buf(private_pem, (int)pem_len);
	size_t n = 0;
	int r = 0;

	pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)passphrase) : NULL;
	if (!pk || EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
		r = cn_error_set(-CN_E_CRYPT, "cannot read the RSA private key (wrong passphrase?)");
		goto out;
	}
	ctx = EVP_PKEY_CTX_new(pk, NULL);
	if (!ctx || EVP_PKEY_decrypt_init(ctx) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1 ||
	    EVP_PKEY_decrypt(ctx, NULL, &n, data, len) != 1 || cn_buf_reserve(json_out, n) < 0 ||
	    EVP_PKEY_decrypt(ctx, json_out->data + json_out->len, &n, data, len) != 1) {
		r = cn_error_set(-CN_E_CRYPT, "failed to decrypt the key with the RSA master key");
		goto out;
	}
	json_out->len += n;
out:
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	BIO_free(bio);
	return r;
}
