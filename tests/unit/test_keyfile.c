/* Key files: files made by an independent Python implementation of
 * upstream's KeyConfig (scrypt, PBKDF2, none) are read; created files have
 * upstream's shape and read back; every failure has its code. */
#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_crypt.h"
#include "store/cn_keyfile.h"

static const char *kf_scrypt =
	"{\"kdf\":{\"Scrypt\":{\"n\":65536,\"r\":8,\"p\":1,\"salt\":\"paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU=\"}},"
	"\"created\":\"2026-11-24T14:29:30+01:00\",\"modified\":\"2026-11-24T14:29:30+01:00\","
	"\"data\":\"PDw8PDw8PDw8PDw8PDw8PP0kpf89h22byoK1QPfF5Ga1r1ZVxtKwj0nS7QspYAmEgc1FErXRiGn7eKBWuvuOeg==\","
	"\"fingerprint\":\"3d:a3:80:ad:2d:f6:45:ca:88:de:05:d1:fc:87:5d:3b:86:26:3d:89:b2:84:79:a1:29:81:cc:c6:72:42:0a:13\"}";
static const char *kf_pbkdf2 =
	"{\"kdf\":{\"PBKDF2\":{\"iter\":65535,\"salt\":\"paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU=\"}},"
	"\"created\":\"2026-11-24T14:29:30+01:00\",\"modified\":\"2026-11-25T08:00:00+00:00\","
	"\"data\":\"PDw8PDw8PDw8PDw8PDw8PAWkFx3hzTdPd5LQoapd9L41dbYD5x0uw3XMsMuqwJg3gFEaMSqPfZgVu2SdBozCCg==\","
	"\"fingerprint\":\"3d:a3:80:ad:2d:f6:45:ca:88:de:05:d1:fc:87:5d:3b:86:26:3d:89:b2:84:79:a1:29:81:cc:c6:72:42:0a:13\","
	"\"hint\":\"the usual\"}";
static const char *kf_none =
	"{\"kdf\":null,\"created\":\"2026-11-24T13:29:30+00:00\",\"modified\":\"2026-11-24T13:29:30+00:00\","
	"\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\","
	"\"fingerprint\":\"3d:a3:80:ad:2d:f6:45:ca:88:de:05:d1:fc:87:5d:3b:86:26:3d:89:b2:84:79:a1:29:81:cc:c6:72:42:0a:13\"}";
static const char *fp_hex = "3da380ad2df645ca88de05d1fc875d3b86263d89b28479a12981ccc672420a13";
#define PW "cairn-test"

static struct cn_keyfile *parse(const char *s)
{
	struct cn_keyfile *kf = NULL;
	ck_assert_int_eq(cn_keyfile_parse((const uint8_t *)s, strlen(s), &kf), 0);
	return kf;
}

static int parse_code(const char *s)
{
	struct cn_keyfile *kf = NULL;
	int r = cn_keyfile_parse((const uint8_t *)s, strlen(s), &kf);
	cn_keyfile_free(kf);
	return r;
}

START_TEST(test_read_upstream_shaped)
{
	const char *files[3] = {kf_scrypt, kf_pbkdf2, kf_none};
	enum cn_kdf kdfs[3] = {CN_KDF_SCRYPT, CN_KDF_PBKDF2, CN_KDF_NONE};
	uint8_t want_key[32], want_fp[32];
	for (int i = 0; i < 32; i++)
		want_key[i] = (uint8_t)(0x40 + i);
	cn_hex_decode(fp_hex, want_fp, 32);
	/* 2026-11-24T13:29:30Z */
	struct tm tm = {.tm_year = 126, .tm_mon = 10, .tm_mday = 24, .tm_hour = 13, .tm_min = 29, .tm_sec = 30};
	int64_t t0 = (int64_t)timegm(&tm);
	for (int f = 0; f < 3; f++) {
		struct cn_keyfile *kf = parse(files[f]);
		uint8_t key[32], fp[32], sfp[32];
		ck_assert_int_eq(cn_keyfile_kdf(kf), kdfs[f]);
		ck_assert_int_eq(cn_keyfile_created(kf), t0);
		ck_assert_int_eq(cn_keyfile_stored_fingerprint(kf, sfp), 1);
		ck_assert_mem_eq(sfp, want_fp, 32);
		ck_assert_int_eq(cn_keyfile_decrypt(kf, PW, strlen(PW), key, fp), 0);
		ck_assert_mem_eq(key, want_key, 32);
		ck_assert_mem_eq(fp, want_fp, 32);
		cn_keyfile_free(kf);
	}
	struct cn_keyfile *kf = parse(kf_pbkdf2);
	ck_assert_int_eq(cn_keyfile_modified(kf), t0 + 18 * 3600 + 30 * 60 + 30);
	ck_assert_str_eq(cn_keyfile_hint(kf), "the usual");
	uint8_t key[32];
	ck_assert_int_eq(cn_keyfile_decrypt(kf, "wrong password", 14, key, NULL), -CN_E_CRYPT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "the usual"));
	ck_assert_int_eq(cn_keyfile_decrypt(kf, "abcd", 4, key, NULL), -EINVAL);
	cn_keyfile_free(kf);
	kf = parse(kf_scrypt);
	ck_assert_ptr_null(cn_keyfile_hint(kf));
	ck_assert_int_eq(cn_keyfile_decrypt(kf, "cairn-tesT", 10, key, NULL), -CN_E_CRYPT);
	cn_keyfile_free(kf);
}
END_TEST

START_TEST(test_spec_fingerprint_vector)
{
	/* keyfile.md §3: key = scrypt("test", "", 65536, 8, 1) */
	uint8_t key[32], fp[32];
	ck_assert_int_eq(EVP_PBE_scrypt("test", 4, (const unsigned char *)"", 0, 65536, 8, 1,
					1025ull << 20, key, 32), 1);
	char hex[65];
	cn_hex_encode(key, 32, hex);
	ck_assert_str_eq(hex, "28cdb1a3bef39396c3860e00d448fe7a0efd8244486ab6feb30457681d31597e");
	struct cn_crypt_config *c;
	ck_assert_int_eq(cn_crypt_config_new(key, &c), 0);
	cn_hex_encode(cn_crypt_id_key(c), 32, hex);
	ck_assert_str_eq(hex, "758495a21c31047f543f46d694700e02d168568bab37bb0ceece947b591f5100");
	cn_crypt_fingerprint(c, fp);
	cn_hex_encode(fp, 32, hex);
	ck_assert_str_eq(hex, "12b9b774bb3d89952b97cbc282f00c142b83ba7f96626aa15a449a63e891fe25");
	char text[CN_FINGERPRINT_TEXT_SIZE];
	cn_fingerprint_format(fp, 1, text);
	ck_assert_str_eq(text, "12:b9:b7:74:bb:3d:89:95");
	cn_crypt_config_free(c);
}
END_TEST

START_TEST(test_create_roundtrip)
{
	static const enum cn_kdf kdfs[3] = {CN_KDF_NONE, CN_KDF_SCRYPT, CN_KDF_PBKDF2};
	setenv("TZ", "CET-1", 1); /* POSIX zone, no tzdata needed: UTC+1 */
	tzset();
	for (int i = 0; i < 3; i++) {
		struct cn_buf js = {0};
		uint8_t key[32], back[32], fp[32];
		const char *hint = i == 2 ? "a hint" : NULL;
		ck_assert_int_eq(cn_keyfile_create(NULL, kdfs[i], PW, strlen(PW), hint, 1795000000, &js, key), 0);
		cn_buf_append(&js, "", 1);
		const char *s = (const char *)js.data;
		/* upstream's shape: compact, key order, local time with offset */
		ck_assert_ptr_null(strstr(s, ": "));
		ck_assert_ptr_null(strstr(s, ", "));
		ck_assert_ptr_null(strchr(s, '\n'));
		const char *order[] = {"\"kdf\":", "\"created\":", "\"modified\":", "\"data\":", "\"fingerprint\":"};
		const char *prev = s;
		for (size_t k = 0; k < CN_ARRAY_SIZE(order); k++) {
			const char *p = strstr(s, order[k]);
			ck_assert_ptr_nonnull(p);
			ck_assert(p >= prev);
			prev = p;
		}
		ck_assert_ptr_nonnull(strstr(s, "\"created\":\"2026-11-18T12:06:40+01:00\""));
		ck_assert_int_eq(hint != NULL, strstr(s, "\"hint\":\"a hint\"") != NULL);
		if (kdfs[i] == CN_KDF_NONE)
			ck_assert_ptr_nonnull(strstr(s, "{\"kdf\":null,"));
		if (kdfs[i] == CN_KDF_SCRYPT)
			ck_assert_ptr_nonnull(strstr(s, "{\"kdf\":{\"Scrypt\":{\"n\":65536,\"r\":8,\"p\":1,\"salt\":\""));
		if (kdfs[i] == CN_KDF_PBKDF2)
			ck_assert_ptr_nonnull(strstr(s, "{\"kdf\":{\"PBKDF2\":{\"iter\":65535,\"salt\":\""));
		struct cn_keyfile *kf = parse(s);
		ck_assert_int_eq(cn_keyfile_created(kf), 1795000000);
		ck_assert_int_eq(cn_keyfile_decrypt(kf, PW, strlen(PW), back, fp), 0);
		ck_assert_mem_eq(back, key, 32);
		struct cn_crypt_config *c;
		uint8_t fp2[32];
		ck_assert_int_eq(cn_crypt_config_new(key, &c), 0);
		cn_crypt_fingerprint(c, fp2);
		ck_assert_mem_eq(fp, fp2, 32);
		char text[CN_FINGERPRINT_TEXT_SIZE];
		cn_fingerprint_format(fp, 0, text);
		ck_assert_ptr_nonnull(strstr(s, text));
		cn_crypt_config_free(c);
		cn_keyfile_free(kf);
		cn_buf_free(&js);
	}
	/* a given key, UTC written as +00:00 */
	setenv("TZ", "UTC0", 1);
	tzset();
	struct cn_buf js = {0};
	uint8_t key[32] = {1, 2, 3};
	ck_assert_int_eq(cn_keyfile_create(key, CN_KDF_NONE, NULL, 0, NULL, 0, &js, NULL), 0);
	cn_buf_append(&js, "", 1);
	ck_assert_ptr_nonnull(strstr((char *)js.data, "\"created\":\"1970-01-01T00:00:00+00:00\""));
	ck_assert_ptr_nonnull(strstr((char *)js.data, "\"data\":\"AQIDAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\""));
	cn_buf_free(&js);
	ck_assert_int_eq(cn_keyfile_create(key, CN_KDF_SCRYPT, "abc", 3, NULL, 0, &js, NULL), -EINVAL);
	ck_assert_uint_eq(js.len, 0);
}
END_TEST

START_TEST(test_malformed)
{
	ck_assert_int_eq(parse_code("not json"), -CN_E_FORMAT);
	ck_assert_int_eq(parse_code("[]"), -CN_E_FORMAT);
	ck_assert_int_eq(parse_code("{}"), -CN_E_FORMAT);
	/* missing data */
	ck_assert_int_eq(parse_code("{\"kdf\":null,\"created\":\"2026-11-24T13:29:30Z\",\"modified\":\"2026-11-24T13:29:30Z\"}"), -CN_E_FORMAT);
	/* Z accepted, data of the wrong size refused */
	ck_assert_int_eq(parse_code("{\"kdf\":null,\"created\":\"2026-11-24T13:29:30Z\",\"modified\":\"2026-11-24T13:29:30.25Z\",\"data\":\"AAAA\"}"), -CN_E_FORMAT);
	ck_assert_int_eq(parse_code("{\"kdf\":null,\"created\":\"2026-11-24T13:29:30Z\",\"modified\":\"2026-11-24T13:29:30Z\",\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\"}"), 0);
	/* bad base64, bad time, bad fingerprint, unknown kdf, duplicate keys */
	ck_assert_int_eq(parse_code("{\"kdf\":null,\"created\":\"2026-11-24T13:29:30Z\",\"modified\":\"2026-11-24T13:29:30Z\",\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8\"}"), -CN_E_FORMAT);
	ck_assert_int_eq(parse_code("{\"kdf\":null,\"created\":\"2026-11-24 13:29\",\"modified\":\"2026-11-24T13:29:30Z\",\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\"}"), -CN_E_FORMAT);
	ck_assert_int_eq(parse_code("{\"kdf\":null,\"created\":\"2026-11-24T13:29:30Z\",\"modified\":\"2026-11-24T13:29:30Z\",\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\",\"fingerprint\":\"12:34\"}"), -CN_E_FORMAT);
	ck_assert_int_eq(parse_code("{\"kdf\":{\"Argon2\":{}},\"created\":\"2026-11-24T13:29:30Z\",\"modified\":\"2026-11-24T13:29:30Z\",\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\"}"), -CN_E_FORMAT);
	ck_assert_int_eq(parse_code("{\"kdf\":{\"scrypt\":{}},\"created\":\"2026-11-24T13:29:30Z\",\"modified\":\"2026-11-24T13:29:30Z\",\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\"}"), -CN_E_FORMAT);
	ck_assert_int_eq(parse_code("{\"kdf\":null,\"kdf\":null,\"created\":\"2026-11-24T13:29:30Z\",\"modified\":\"2026-11-24T13:29:30Z\",\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\"}"), -CN_E_FORMAT);

	/* a stored fingerprint that does not match the key */
	char *bad = strdup(kf_none);
	char *p = strstr(bad, "3d:a3");
	p[0] = '4';
	struct cn_keyfile *kf = parse(bad);
	uint8_t key[32];
	ck_assert_int_eq(cn_keyfile_decrypt(kf, NULL, 0, key, NULL), -CN_E_CHECKSUM);
	cn_keyfile_free(kf);
	free(bad);
	/* tampered encrypted data: wrong password error */
	bad = strdup(kf_pbkdf2);
	p = strstr(bad, "PDw8PDw8PDw8PDw8PDw8PAWk");
	p[22] = 'X';
	kf = parse(bad);
	ck_assert_int_eq(cn_keyfile_decrypt(kf, PW, strlen(PW), key, NULL), -CN_E_CRYPT);
	cn_keyfile_free(kf);
	free(bad);
}
END_TEST

START_TEST(test_save_and_load)
{
	char dir[] = "/tmp/cn_keyfile_XXXXXX", path[128];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key.json", dir);
	ck_assert_int_eq(cn_keyfile_save(path, (const uint8_t *)kf_pbkdf2, strlen(kf_pbkdf2), 0), 0);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(cn_keyfile_save(path, (const uint8_t *)kf_none, strlen(kf_none), 0), -EEXIST);
	struct cn_crypt_config *c = NULL;
	ck_assert_int_eq(cn_keyfile_load(path, PW, strlen(PW), &c), 0);
	uint8_t fp[32], want[32];
	cn_crypt_fingerprint(c, fp);
	cn_hex_decode(fp_hex, want, 32);
	ck_assert_mem_eq(fp, want, 32);
	cn_crypt_config_free(c);
	ck_assert_int_eq(cn_keyfile_load(path, "nope nope", 9, &c), -CN_E_CRYPT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "key.json"));
	ck_assert_int_eq(cn_keyfile_save(path, (const uint8_t *)kf_none, strlen(kf_none), 1), 0);
	ck_assert_int_eq(cn_keyfile_load(path, NULL, 0, &c), 0);
	cn_crypt_config_free(c);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	unlink(path);
	ck_assert_int_lt(cn_keyfile_load(path, NULL, 0, &c), 0);
	rmdir(dir);
}
END_TEST

static char *pem_of(EVP_PKEY *pk, int private, const char *pass, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	int ok = private ? PEM_write_bio_PKCS8PrivateKey(b, pk, pass ? EVP_aes_256_cbc() : NULL, NULL,
							 0, NULL, (void *)pass)
			 : PEM_write_bio_PUBKEY(b, pk);
	ck_assert_int_eq(ok, 1);
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *out = malloc((size_t)n + 1);
	memcpy(out, p, (size_t)n);
	out[n] = 0;
	*len = (size_t)n;
	BIO_free(b);
	return out;
}

START_TEST(test_rsa_master_key)
{
	EVP_PKEY *rsa = EVP_RSA_gen(3072); /* 2048 bits cannot hold the JSON */
	ck_assert_ptr_nonnull(rsa);
	size_t publen, privlen;
	char *pub = pem_of(rsa, 0, NULL, &publen), *priv = pem_of(rsa, 1, "master-pass", &privlen);
	ck_assert_ptr_nonnull(strstr(pub, "-----BEGIN PUBLIC KEY-----"));
	ck_assert_ptr_nonnull(strstr(priv, "-----BEGIN ENCRYPTED PRIVATE KEY-----"));
	uint8_t key[32], back[32];
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(0x40 + i);
	setenv("TZ", "UTC0", 1);
	tzset();
	struct cn_buf wrapped = {0}, js = {0};
	ck_assert_int_eq(cn_keyfile_rsa_wrap(pub, publen, key, 1000, 2000, &wrapped), 0);
	ck_assert_uint_eq(wrapped.len, 384); /* modulus size */
	ck_assert_int_eq(cn_keyfile_rsa_unwrap(priv, privlen, "wrong-pass", wrapped.data, wrapped.len, &js), -CN_E_CRYPT);
	ck_assert_int_eq(cn_keyfile_rsa_unwrap(priv, privlen, "master-pass", wrapped.data, wrapped.len, &js), 0);
	cn_buf_append(&js, "", 1);
	ck_assert_str_eq((char *)js.data,
			 "{\"kdf\":null,\"created\":\"1970-01-01T00:16:40+00:00\","
			 "\"modified\":\"1970-01-01T00:33:20+00:00\","
			 "\"data\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=\","
			 "\"fingerprint\":\"3d:a3:80:ad:2d:f6:45:ca:88:de:05:d1:fc:87:5d:3b:86:26:3d:89:b2:84:79:a1:29:81:cc:c6:72:42:0a:13\"}");
	struct cn_keyfile *kf = parse((char *)js.data);
	ck_assert_int_eq(cn_keyfile_decrypt(kf, NULL, 0, back, NULL), 0);
	ck_assert_mem_eq(back, key, 32);
	ck_assert_int_eq(cn_keyfile_created(kf), 1000);
	cn_keyfile_free(kf);
	/* a tampered ciphertext does not decrypt to a key file */
	wrapped.data[100] ^= 1;
	js.len = 0;
	int r = cn_keyfile_rsa_unwrap(priv, privlen, "master-pass", wrapped.data, wrapped.len, &js);
	if (r == 0) /* implicit rejection returns random bytes: they must not parse */
		ck_assert_int_eq(cn_keyfile_parse(js.data, js.len, &kf), -CN_E_FORMAT);
	else
		ck_assert_int_eq(r, -CN_E_CRYPT);
	/* not an RSA key */
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	size_t eclen;
	char *ecpub = pem_of(ec, 0, NULL, &eclen);
	wrapped.len = 0;
	ck_assert_int_eq(cn_keyfile_rsa_wrap(ecpub, eclen, key, 1, 2, &wrapped), -CN_E_FORMAT);
	ck_assert_int_eq(cn_keyfile_rsa_wrap("garbage", 7, key, 1, 2, &wrapped), -CN_E_FORMAT);
	free(ecpub);
	EVP_PKEY_free(ec);
	free(pub);
	free(priv);
	EVP_PKEY_free(rsa);
	cn_buf_free(&wrapped);
	cn_buf_free(&js);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("keyfile");
	TCase *tc = tcase_create("keyfile");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_read_upstream_shaped);
	tcase_add_test(tc, test_spec_fingerprint_vector);
	tcase_add_test(tc, test_create_roundtrip);
	tcase_add_test(tc, test_malformed);
	tcase_add_test(tc, test_save_and_load);
	tcase_add_test(tc, test_rsa_master_key);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
