/* Manifest: upstream's signature test vector (manifest.rs), the exact
 * serde_json pretty text, blob round trips, and every verification
 * failure. */
#include <check.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_crypt.h"
#include "store/cn_manifest.h"

static const char *expected_pretty =
	"{\n"
	"  \"backup-id\": \"elsa\",\n"
	"  \"backup-time\": 1593179765,\n"
	"  \"backup-type\": \"host\",\n"
	"  \"files\": [\n"
	"    {\n"
	"      \"crypt-mode\": \"encrypt\",\n"
	"      \"csum\": \"0101010101010101010101010101010101010101010101010101010101010101\",\n"
	"      \"filename\": \"test1.img.fidx\",\n"
	"      \"size\": 200\n"
	"    },\n"
	"    {\n"
	"      \"crypt-mode\": \"none\",\n"
	"      \"csum\": \"0202020202020202020202020202020202020202020202020202020202020202\",\n"
	"      \"filename\": \"abc.blob\",\n"
	"      \"size\": 200\n"
	"    }\n"
	"  ],\n"
	"  \"signature\": \"d7b446fb7db081662081d4b40fedd858a1d6307a5aff4ecff7d5bf4fd35679e9\",\n"
	"  \"unprotected\": {\n"
	"    \"key-fingerprint\": \"12:b9:b7:74:bb:3d:89:95:2b:97:cb:c2:82:f0:0c:14:2b:83:ba:7f:96:62:6a:a1:5a:44:9a:63:e8:91:fe:25\",\n"
	"    \"note\": \"This is not protected by the signature.\"\n"
	"  }\n"
	"}";

static const char *expected_canonical =
	"{\"backup-id\":\"elsa\",\"backup-time\":1593179765,\"backup-type\":\"host\",\"files\":["
	"{\"crypt-mode\":\"encrypt\",\"csum\":\"0101010101010101010101010101010101010101010101010101010101010101\","
	"\"filename\":\"test1.img.fidx\",\"size\":200},"
	"{\"crypt-mode\":\"none\",\"csum\":\"0202020202020202020202020202020202020202020202020202020202020202\","
	"\"filename\":\"abc.blob\",\"size\":200}]}";

/* the upstream test key: scrypt("test", empty salt, 65536, 8, 1) */
static struct cn_crypt_config *test_key(void)
{
	uint8_t key[32];
	struct cn_crypt_config *c;
	ck_assert_int_eq(EVP_PBE_scrypt("test", 4, (const unsigned char *)"", 0, 65536, 8, 1,
					1025ull << 20, key, 32), 1);
	ck_assert_int_eq(cn_crypt_config_new(key, &c), 0);
	return c;
}

static struct cn_manifest *elsa(void)
{
	struct cn_snapshot_id id = {.type = "host", .id = "elsa", .time = 1593179765};
	struct cn_manifest *m;
	uint8_t c1[32], c2[32];
	memset(c1, 1, 32);
	memset(c2, 2, 32);
	ck_assert_int_eq(cn_manifest_new(&id, &m), 0);
	ck_assert_int_eq(cn_manifest_add_file(m, "test1.img.fidx", 200, c1, CN_CRYPT_MODE_ENCRYPT), 0);
	ck_assert_int_eq(cn_manifest_add_file(m, "abc.blob", 200, c2, CN_CRYPT_MODE_NONE), 0);
	json_object_set_new(cn_manifest_unprotected(m), "note",
			    json_string("This is not protected by the signature."));
	return m;
}

static char *text_of(struct cn_buf *b)
{
	cn_buf_append(b, "", 1);
	b->len--;
	return (char *)b->data;
}

START_TEST(test_upstream_signature_vector)
{
	struct cn_crypt_config *c = test_key();
	struct cn_manifest *m = elsa();
	struct cn_buf canon = {0}, js = {0};
	ck_assert_int_eq(cn_manifest_canonical(m, &canon), 0);
	ck_assert_str_eq(text_of(&canon), expected_canonical);
	ck_assert_int_eq(cn_manifest_signed(m), 0);
	ck_assert_int_eq(cn_manifest_to_json(m, c, &js), 0);
	ck_assert_str_eq(text_of(&js), expected_pretty);
	ck_assert_int_eq(cn_manifest_signed(m), 1);
	uint8_t fp[32], mine[32];
	ck_assert_int_eq(cn_manifest_key_fingerprint(m, fp), 1);
	cn_crypt_fingerprint(c, mine);
	ck_assert_mem_eq(fp, mine, 32);

	/* read back: signature verifies, accessors */
	struct cn_manifest *r;
	ck_assert_int_eq(cn_manifest_parse_json(js.data, js.len, c, &r), 0);
	ck_assert_str_eq(cn_manifest_backup_type(r), "host");
	ck_assert_str_eq(cn_manifest_backup_id(r), "elsa");
	ck_assert_int_eq(cn_manifest_backup_time(r), 1593179765);
	ck_assert_uint_eq(cn_manifest_file_count(r), 2);
	const char *name;
	uint64_t size;
	uint8_t csum[32], want[32];
	enum cn_crypt_mode mode;
	cn_manifest_file_at(r, 0, &name, &size, csum, &mode);
	memset(want, 1, 32);
	ck_assert_str_eq(name, "test1.img.fidx");
	ck_assert_uint_eq(size, 200);
	ck_assert_mem_eq(csum, want, 32);
	ck_assert_int_eq(mode, CN_CRYPT_MODE_ENCRYPT);
	ck_assert_int_eq(cn_manifest_find(r, "abc.blob"), 1);
	ck_assert_int_eq(cn_manifest_find(r, "nope.blob"), -ENOENT);
	memset(want, 2, 32);
	ck_assert_int_eq(cn_manifest_verify_file(r, "abc.blob", 200, want), 0);
	ck_assert_int_eq(cn_manifest_verify_file(r, "abc.blob", 201, want), -CN_E_CHECKSUM);
	want[0] = 0;
	ck_assert_int_eq(cn_manifest_verify_file(r, "abc.blob", 200, want), -CN_E_CHECKSUM);
	ck_assert_int_eq(cn_manifest_verify_file(r, "x.blob", 200, want), -ENOENT);
	ck_assert_int_eq(cn_manifest_check_key(r, c), 0);
	ck_assert_int_eq(cn_manifest_check_key(r, NULL), -CN_E_NOKEY);
	/* without a key the signature is not checked (as upstream) */
	cn_manifest_free(r);
	ck_assert_int_eq(cn_manifest_parse_json(js.data, js.len, NULL, &r), 0);
	/* rewriting without a key keeps the text (e.g. a server adding notes) */
	struct cn_buf js2 = {0};
	ck_assert_int_eq(cn_manifest_to_json(r, NULL, &js2), 0);
	ck_assert_str_eq(text_of(&js2), expected_pretty);
	cn_manifest_free(r);
	cn_buf_free(&js2);
	cn_buf_free(&canon);
	cn_buf_free(&js);
	cn_manifest_free(m);
	cn_crypt_config_free(c);
}
END_TEST

static int parse_code(const char *s, const struct cn_crypt_config *c)
{
	struct cn_manifest *m = NULL;
	int r = cn_manifest_parse_json((const uint8_t *)s, strlen(s), c, &m);
	cn_manifest_free(m);
	return r;
}

static char *replace(const char *s, const char *from, const char *to)
{
	const char *p = strstr(s, from);
	ck_assert_ptr_nonnull(p);
	char *out = malloc(strlen(s) + strlen(to) + 1);
	size_t n = (size_t)(p - s);
	memcpy(out, s, n);
	strcpy(out + n, to);
	strcat(out, p + strlen(from));
	return out;
}

START_TEST(test_signature_failures)
{
	struct cn_crypt_config *c = test_key(), *other;
	uint8_t k2[32] = {9};
	ck_assert_int_eq(cn_crypt_config_new(k2, &other), 0);
	ck_assert_int_eq(parse_code(expected_pretty, c), 0);
	/* a signed field changed */
	char *s = replace(expected_pretty, "\"size\": 200\n    },", "\"size\": 201\n    },");
	ck_assert_int_eq(parse_code(s, c), -CN_E_CHECKSUM);
	ck_assert_int_eq(parse_code(s, NULL), 0);
	free(s);
	/* an added unknown top-level key is signed too (as upstream) */
	s = replace(expected_pretty, "\"backup-id\"", "\"extra\": 1, \"backup-id\"");
	ck_assert_int_eq(parse_code(s, c), -CN_E_CHECKSUM);
	free(s);
	/* unprotected changes do not matter */
	s = replace(expected_pretty, "This is not", "This is surely not");
	ck_assert_int_eq(parse_code(s, c), 0);
	free(s);
	/* a different key: fingerprint mismatch is reported first */
	ck_assert_int_eq(parse_code(expected_pretty, other), -CN_E_CRYPT);
	/* without the fingerprint, the signature itself fails */
	s = replace(expected_pretty,
		    "\"key-fingerprint\": \"12:b9:b7:74:bb:3d:89:95:2b:97:cb:c2:82:f0:0c:14:2b:83:ba:7f:96:62:6a:a1:5a:44:9a:63:e8:91:fe:25\",", "");
	ck_assert_int_eq(parse_code(s, other), -CN_E_CHECKSUM);
	ck_assert_int_eq(parse_code(s, c), 0);
	free(s);
	/* signature text altered */
	s = replace(expected_pretty, "d7b446fb", "d7b446fc");
	ck_assert_int_eq(parse_code(s, c), -CN_E_CHECKSUM);
	free(s);
	/* a null in the signed part is an error upstream */
	s = replace(expected_pretty, "\"backup-id\"", "\"extra\": null, \"backup-id\"");
	ck_assert_int_eq(parse_code(s, c), -CN_E_FORMAT);
	free(s);
	cn_crypt_config_free(other);
	cn_crypt_config_free(c);
}
END_TEST

START_TEST(test_shape_checks)
{
	static const char *bad[] = {
		"", "[]", "{}", "{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1}",
		"{\"backup-type\":\"usb\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[]}",
		"{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":\"1\",\"files\":[]}",
		"{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[1]}",
		"{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[{\"filename\":\"a.txt\",\"size\":1,\"csum\":\"" "0000000000000000000000000000000000000000000000000000000000000000\"}]}",
		"{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[{\"filename\":\"a.blob\",\"size\":-1,\"csum\":\"" "0000000000000000000000000000000000000000000000000000000000000000\"}]}",
		"{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[{\"filename\":\"a.blob\",\"size\":1,\"csum\":\"00\"}]}",
		"{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[{\"filename\":\"a.blob\",\"size\":1,\"crypt-mode\":\"rot13\",\"csum\":\"" "0000000000000000000000000000000000000000000000000000000000000000\"}]}",
		"{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[],\"unprotected\":3}",
		"{\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[],\"signature\":3}",
		"{\"backup-type\":\"host\",\"backup-type\":\"host\",\"backup-id\":\"a\",\"backup-time\":1,\"files\":[]}",
	};
	for (size_t i = 0; i < CN_ARRAY_SIZE(bad); i++)
		ck_assert_msg(parse_code(bad[i], NULL) == -CN_E_FORMAT, "case %zu", i);
	/* < 0.8 manifests: no crypt-mode, no unprotected, no signature */
	const char *old = "{\"backup-type\":\"vm\",\"backup-id\":\"100\",\"backup-time\":5,\"files\":[{\"filename\":\"a.blob\",\"size\":1,\"csum\":\"" "0000000000000000000000000000000000000000000000000000000000000000\"}]}";
	struct cn_manifest *m;
	ck_assert_int_eq(cn_manifest_parse_json((const uint8_t *)old, strlen(old), NULL, &m), 0);
	enum cn_crypt_mode mode = CN_CRYPT_MODE_ENCRYPT;
	cn_manifest_file_at(m, 0, NULL, NULL, NULL, &mode);
	ck_assert_int_eq(mode, CN_CRYPT_MODE_NONE);
	ck_assert_int_eq(cn_manifest_signed(m), 0);
	ck_assert_ptr_nonnull(cn_manifest_unprotected(m));
	ck_assert_int_eq(cn_manifest_check_key(m, NULL), 0);
	cn_manifest_free(m);

	/* add_file rules */
	struct cn_snapshot_id id = {.type = "host", .id = "x", .time = 1};
	uint8_t csum[32] = {0};
	ck_assert_int_eq(cn_manifest_new(&id, &m), 0);
	ck_assert_int_eq(cn_manifest_add_file(m, "a.pxar", 1, csum, CN_CRYPT_MODE_NONE), -EINVAL);
	ck_assert_int_eq(cn_manifest_add_file(m, "a.pxar.didx", 1, csum, CN_CRYPT_MODE_NONE), 0);
	ck_assert_int_eq(cn_manifest_add_file(m, "a.pxar.didx", 1, csum, CN_CRYPT_MODE_NONE), -EINVAL);
	ck_assert_int_eq(cn_manifest_add_file(m, "../x.blob", 1, csum, CN_CRYPT_MODE_NONE), -EINVAL);
	cn_manifest_free(m);
	struct cn_snapshot_id bad_id = {.type = "usb", .id = "x", .time = 1};
	ck_assert_int_eq(cn_manifest_new(&bad_id, &m), -EINVAL);
}
END_TEST

START_TEST(test_blob_roundtrip_and_escaping)
{
	struct cn_snapshot_id id = {.type = "ct", .id = "101", .time = 1700000000};
	struct cn_manifest *m, *r;
	uint8_t csum[32];
	for (int i = 0; i < 32; i++)
		csum[i] = (uint8_t)(i * 7);
	ck_assert_int_eq(cn_manifest_new(&id, &m), 0);
	ck_assert_int_eq(cn_manifest_add_file(m, "root.pxar.didx", 123456789012ull, csum, CN_CRYPT_MODE_SIGN_ONLY), 0);
	ck_assert_int_eq(cn_manifest_add_file(m, "catalog.pcat1.didx", 77, csum, CN_CRYPT_MODE_SIGN_ONLY), 0);
	json_t *u = cn_manifest_unprotected(m);
	json_object_set_new(u, "notes", json_string("tab\there \"quoted\" \\ / \x01 \xc3\xa9"));
	json_object_set_new(u, "ratio", json_real(1.0));
	json_object_set_new(u, "empty", json_array());
	struct cn_buf blob = {0}, js = {0};
	ck_assert_int_eq(cn_manifest_encode(m, NULL, &blob), 0);
	ck_assert_int_eq(cn_blob_type(blob.data, blob.len), CN_BLOB_ZSTD);
	ck_assert_int_eq(cn_manifest_to_json(m, NULL, &js), 0);
	const char *t = text_of(&js);
	ck_assert_ptr_nonnull(strstr(t, "\"notes\": \"tab\\there \\\"quoted\\\" \\\\ / \\u0001 \xc3\xa9\""));
	ck_assert_ptr_nonnull(strstr(t, "\"ratio\": 1.0"));
	ck_assert_ptr_nonnull(strstr(t, "\"empty\": []"));
	ck_assert_ptr_nonnull(strstr(t, "\"signature\": null,\n"));
	ck_assert_ptr_nonnull(strstr(t, "\"size\": 123456789012\n"));
	ck_assert(t[js.len - 1] == '}');
	ck_assert_int_eq(cn_manifest_decode(blob.data, blob.len, NULL, &r), 0);
	struct cn_buf js2 = {0};
	ck_assert_int_eq(cn_manifest_to_json(r, NULL, &js2), 0);
	ck_assert_str_eq(text_of(&js2), t);
	uint64_t size;
	uint8_t c2[32];
	cn_manifest_file_at(r, 0, NULL, &size, c2, NULL);
	ck_assert_uint_eq(size, 123456789012ull);
	ck_assert_mem_eq(c2, csum, 32);
	cn_manifest_free(r);
	/* a corrupted blob and an encrypted one are refused */
	blob.data[blob.len - 1] ^= 1;
	ck_assert_int_eq(cn_manifest_decode(blob.data, blob.len, NULL, &r), -CN_E_CRC);
	struct cn_buf enc = {0};
	uint8_t key[32] = {3};
	struct cn_crypt_config *c;
	ck_assert_int_eq(cn_crypt_config_new(key, &c), 0);
	ck_assert_int_eq(cn_blob_encode(js.data, js.len, c, 1, &enc), 0);
	ck_assert_int_eq(cn_manifest_decode(enc.data, enc.len, c, &r), -CN_E_FORMAT);
	/* signed round trip through the blob */
	blob.len = 0;
	ck_assert_int_eq(cn_manifest_encode(m, c, &blob), 0);
	ck_assert_int_eq(cn_manifest_decode(blob.data, blob.len, c, &r), 0);
	ck_assert_int_eq(cn_manifest_signed(r), 1);
	cn_manifest_free(r);
	/* adding a file drops the now stale signature */
	ck_assert_int_eq(cn_manifest_add_file(m, "x.blob", 1, csum, CN_CRYPT_MODE_SIGN_ONLY), 0);
	ck_assert_int_eq(cn_manifest_signed(m), 0);
	cn_crypt_config_free(c);
	cn_buf_free(&enc);
	cn_buf_free(&js2);
	cn_buf_free(&js);
	cn_buf_free(&blob);
	cn_manifest_free(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("manifest");
	TCase *tc = tcase_create("manifest");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_upstream_signature_vector);
	tcase_add_test(tc, test_signature_failures);
	tcase_add_test(tc, test_shape_checks);
	tcase_add_test(tc, test_blob_roundtrip_and_escaping);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
