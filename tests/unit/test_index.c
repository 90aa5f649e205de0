/* .didx/.fidx: known answers (files built independently in Python from
 * the spec), writer/reader round trips, incremental checksum, and every
 * rejection class of the reader. */
#include <check.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_index.h"

static void digest_of(int i, uint8_t d[32])
{
	char s[16];
	int n = snprintf(s, sizeof(s), "%d", i);
	EVP_Digest(s, (size_t)n, d, NULL, EVP_sha256(), NULL);
}

static void sha_hex(const uint8_t *p, size_t n, char out[65])
{
	uint8_t d[32];
	EVP_Digest(p, n, d, NULL, EVP_sha256(), NULL);
	cn_hex_encode(d, 32, out);
}

static const uint8_t uuid[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* writes an index with the given ends (fixed: size/chunk_size) */
static void build(enum cn_index_kind kind, const uint64_t *ends, size_t n, uint64_t size,
		  uint64_t cs, struct cn_buf *out, uint8_t csum[32])
{
	struct cn_index_writer *w;
	ck_assert_int_eq(cn_index_writer_new(kind, uuid, 1700000000, size, cs, &w), 0);
	for (size_t i = 0; i < n; i++) {
		struct cn_index_entry e = {.end_offset = ends[i]};
		digest_of((int)i, e.digest);
		ck_assert_int_eq(cn_index_writer_append(w, &e, 1), 0);
	}
	ck_assert_int_eq(cn_index_writer_finish(w, out, csum), 0);
	cn_index_writer_free(w);
}

START_TEST(test_didx_known_answer)
{
	static const uint64_t ends[] = {100, 250, 4096};
	struct cn_buf f = {0};
	uint8_t csum[32];
	char hex[65];
	build(CN_INDEX_DYNAMIC, ends, 3, 0, 0, &f, csum);
	ck_assert_uint_eq(f.len, 4216);
	cn_hex_encode(csum, 32, hex);
	ck_assert_str_eq(hex, "34a22499dadcfba924f9cd8253dd90fcbdf9c23ce8a7460438fdbf96682706cb");
	sha_hex(f.data, f.len, hex);
	ck_assert_str_eq(hex, "454ae44331a4352a85f312fe0498d7e864df66993bb2558836154554909e5e0b");

	struct cn_index *idx;
	ck_assert_int_eq(cn_index_parse(f.data, f.len, &idx), 0);
	ck_assert_int_eq(cn_index_kind(idx), CN_INDEX_DYNAMIC);
	ck_assert_uint_eq(cn_index_count(idx), 3);
	ck_assert_uint_eq(cn_index_size(idx), 4096);
	ck_assert_int_eq(cn_index_ctime(idx), 1700000000);
	uint8_t u[16], d[32], want[32];
	cn_index_uuid(idx, u);
	ck_assert_mem_eq(u, uuid, 16);
	uint64_t s, e;
	cn_index_entry(idx, 1, &s, &e, d);
	ck_assert_uint_eq(s, 100);
	ck_assert_uint_eq(e, 250);
	digest_of(1, want);
	ck_assert_mem_eq(d, want, 32);
	ck_assert_mem_eq(cn_index_digest(idx, 1), want, 32);
	uint8_t c2[32];
	cn_index_csum(idx, c2);
	ck_assert_mem_eq(c2, csum, 32);
	ck_assert_int_eq(cn_index_verify(idx, 4096, csum), 0);
	ck_assert_int_eq(cn_index_verify(idx, 4095, csum), -CN_E_CHECKSUM);
	c2[0] ^= 1;
	ck_assert_int_eq(cn_index_verify(idx, 4096, c2), -CN_E_CHECKSUM);
	size_t i;
	static const struct { uint64_t off; size_t i; } finds[] = {
		{0, 0}, {99, 0}, {100, 1}, {249, 1}, {250, 2}, {4095, 2}};
	for (size_t k = 0; k < CN_ARRAY_SIZE(finds); k++) {
		ck_assert_int_eq(cn_index_find(idx, finds[k].off, &i), 0);
		ck_assert_uint_eq(i, finds[k].i);
	}
	ck_assert_int_eq(cn_index_find(idx, 4096, &i), -ERANGE);
	cn_index_free(idx);
	cn_buf_free(&f);
}
END_TEST

START_TEST(test_fidx_known_answer)
{
	uint64_t size = 10u * 1024 * 1024 + 3, cs = 4u << 20;
	uint64_t ends[] = {cs, 2 * cs, size};
	struct cn_buf f = {0};
	uint8_t csum[32];
	char hex[65];
	build(CN_INDEX_FIXED, ends, 3, size, cs, &f, csum);
	ck_assert_uint_eq(f.len, 4192);
	cn_hex_encode(csum, 32, hex);
	ck_assert_str_eq(hex, "029127303515f4740d7747ddfd071aba6a0e37b6f46fb6dd268a3d99d22e3732");
	sha_hex(f.data, f.len, hex);
	ck_assert_str_eq(hex, "3ad918fdea4bafaf4394e7f790f1c307ff79fb6899598c9f58dcabbdfca33ff0");
	struct cn_index *idx;
	ck_assert_int_eq(cn_index_parse(f.data, f.len, &idx), 0);
	ck_assert_int_eq(cn_index_kind(idx), CN_INDEX_FIXED);
	ck_assert_uint_eq(cn_index_count(idx), 3);
	ck_assert_uint_eq(cn_index_size(idx), size);
	ck_assert_uint_eq(cn_index_chunk_size(idx), cs);
	uint64_t s, e;
	cn_index_entry(idx, 2, &s, &e, NULL);
	ck_assert_uint_eq(s, 2 * cs);
	ck_assert_uint_eq(e, size);
	size_t i;
	ck_assert_int_eq(cn_index_find(idx, cs, &i), 0);
	ck_assert_uint_eq(i, 1);
	ck_assert_int_eq(cn_index_find(idx, size, &i), -ERANGE);
	cn_index_free(idx);
	cn_buf_free(&f);
}
END_TEST

START_TEST(test_writer_rules)
{
	struct cn_index_writer *w;
	struct cn_index_entry e[2] = {{.end_offset = 10}, {.end_offset = 10}};
	struct cn_buf f = {0};
	/* dynamic: strictly increasing, a bad batch changes nothing */
	ck_assert_int_eq(cn_index_writer_new(CN_INDEX_DYNAMIC, NULL, 1, 0, 0, &w), 0);
	ck_assert_int_eq(cn_index_writer_append(w, e, 2), -EINVAL);
	ck_assert_uint_eq(cn_index_writer_count(w), 0);
	ck_assert_int_eq(cn_index_writer_append(w, e, 1), 0);
	ck_assert_int_eq(cn_index_writer_append(w, e + 1, 1), -EINVAL);
	e[1].end_offset = 11;
	ck_assert_int_eq(cn_index_writer_append(w, e + 1, 1), 0);
	ck_assert_uint_eq(cn_index_writer_size(w), 11);
	ck_assert_int_eq(cn_index_writer_finish(w, &f, NULL), 0);
	ck_assert_int_eq(cn_index_writer_append(w, e, 1), -EINVAL);
	ck_assert_int_eq(cn_index_writer_finish(w, &f, NULL), -EINVAL);
	/* a random uuid is a version-4 UUID */
	ck_assert_uint_eq(f.data[8 + 6] >> 4, 4);
	ck_assert_uint_eq(f.data[8 + 8] >> 6, 2);
	cn_index_writer_free(w);
	/* fixed: power of two, aligned ends, complete */
	ck_assert_int_eq(cn_index_writer_new(CN_INDEX_FIXED, NULL, 1, 100, 48, &w), -EINVAL);
	ck_assert_int_eq(cn_index_writer_new(CN_INDEX_FIXED, NULL, 1, 100, 64, &w), 0);
	e[0].end_offset = 63;
	ck_assert_int_eq(cn_index_writer_append(w, e, 1), -EINVAL);
	e[0].end_offset = 64;
	ck_assert_int_eq(cn_index_writer_append(w, e, 1), 0);
	f.len = 0;
	ck_assert_int_eq(cn_index_writer_finish(w, &f, NULL), -EINVAL);
	e[0].end_offset = 128;
	ck_assert_int_eq(cn_index_writer_append(w, e, 1), -EINVAL);
	e[0].end_offset = 100;
	ck_assert_int_eq(cn_index_writer_append(w, e, 1), 0);
	ck_assert_int_eq(cn_index_writer_append(w, e, 1), -EINVAL);
	ck_assert_int_eq(cn_index_writer_finish(w, &f, NULL), 0);
	cn_index_writer_free(w);
	cn_buf_free(&f);
}
END_TEST

/* the incremental checksum equals what the writer stores, for both kinds,
 * and a large index round-trips */
START_TEST(test_roundtrip_and_csum)
{
	for (int kind = 0; kind < 2; kind++) {
		size_t n = 5000;
		uint64_t cs = 4096, size = (uint64_t)(n - 1) * cs + 17;
		struct cn_index_writer *w;
		struct cn_index_csum_ctx *c;
		ck_assert_int_eq(cn_index_writer_new(kind, NULL, 42, size, cs, &w), 0);
		ck_assert_int_eq(cn_index_csum_new(kind, &c), 0);
		struct cn_index_entry *es = calloc(n, sizeof(*es));
		uint64_t end = 0;
		for (size_t i = 0; i < n; i++) {
			end = kind == CN_INDEX_FIXED ? (i + 1 == n ? size : (i + 1) * cs) : end + 1 + i % 977;
			es[i].end_offset = end;
			digest_of((int)i, es[i].digest);
			cn_index_csum_update(c, es[i].end_offset, es[i].digest);
		}
		ck_assert_int_eq(cn_index_writer_append(w, es, 1000), 0);
		ck_assert_int_eq(cn_index_writer_append(w, es + 1000, n - 1000), 0);
		struct cn_buf f = {0};
		uint8_t csum[32], inc[32];
		ck_assert_int_eq(cn_index_writer_finish(w, &f, csum), 0);
		cn_index_csum_final(c, inc);
		ck_assert_mem_eq(csum, inc, 32);
		struct cn_index *idx;
		ck_assert_int_eq(cn_index_parse(f.data, f.len, &idx), 0);
		ck_assert_uint_eq(cn_index_count(idx), n);
		ck_assert_uint_eq(cn_index_size(idx), kind == CN_INDEX_FIXED ? size : end);
		for (size_t i = 0; i < n; i += 97) {
			uint64_t s, e;
			size_t j;
			cn_index_entry(idx, i, &s, &e, NULL);
			ck_assert_uint_eq(e, es[i].end_offset);
			ck_assert_mem_eq(cn_index_digest(idx, i), es[i].digest, 32);
			ck_assert_int_eq(cn_index_find(idx, s, &j), 0);
			ck_assert_uint_eq(j, i);
			ck_assert_int_eq(cn_index_find(idx, e - 1, &j), 0);
			ck_assert_uint_eq(j, i);
		}
		cn_index_free(idx);
		cn_index_csum_free(c);
		cn_index_writer_free(w);
		cn_buf_free(&f);
		free(es);
	}
}
END_TEST

START_TEST(test_empty_dynamic)
{
	struct cn_buf f = {0};
	uint8_t csum[32];
	build(CN_INDEX_DYNAMIC, NULL, 0, 0, 0, &f, csum);
	struct cn_index *idx;
	ck_assert_int_eq(cn_index_parse(f.data, f.len, &idx), 0);
	ck_assert_uint_eq(cn_index_count(idx), 0);
	ck_assert_uint_eq(cn_index_size(idx), 0);
	size_t i;
	ck_assert_int_eq(cn_index_find(idx, 0, &i), -ERANGE);
	cn_index_free(idx);
	cn_buf_free(&f);
}
END_TEST

static int parse_code(const struct cn_buf *f)
{
	struct cn_index *idx = NULL;
	int r = cn_index_parse(f->data, f->len, &idx);
	cn_index_free(idx);
	return r;
}

START_TEST(test_reader_rejects)
{
	static const uint64_t ends[] = {100, 250, 4096, 5000};
	struct cn_buf f = {0};
	uint8_t csum[32];
	build(CN_INDEX_DYNAMIC, ends, 4, 0, 0, &f, csum);
	size_t full = f.len;
	/* bad magic: any flipped bit of it */
	for (size_t p = 0; p < 8; p++) {
		f.data[p] ^= 0x20;
		ck_assert_int_eq(parse_code(&f), -CN_E_MAGIC);
		f.data[p] ^= 0x20;
	}
	/* header fields other than the csum are not covered (as upstream):
	 * uuid and ctime flips are accepted; a csum flip is a mismatch */
	for (size_t p = 32; p < 64; p++) {
		f.data[p] ^= 1;
		ck_assert_int_eq(parse_code(&f), -CN_E_CHECKSUM);
		f.data[p] ^= 1;
	}
	/* any entry byte flipped: checksum mismatch or (end offsets) ordering */
	for (size_t p = 4096; p < full; p++) {
		f.data[p] ^= 0x80;
		int r = parse_code(&f);
		ck_assert_msg(r == -CN_E_CHECKSUM || r == -CN_E_FORMAT, "pos %zu: %d", p, r);
		f.data[p] ^= 0x80;
	}
	/* truncation at every length */
	for (size_t n = 0; n < full; n++) {
		f.len = n;
		int r = parse_code(&f);
		if (n < 8)
			ck_assert_int_eq(r, -CN_E_TRUNCATED);
		else if (n < 4096 || (n - 4096) % 40)
			ck_assert_int_eq(r, -CN_E_TRUNCATED);
		else
			ck_assert_int_eq(r, -CN_E_CHECKSUM); /* whole entries missing */
	}
	f.len = full;
	ck_assert_int_eq(parse_code(&f), 0);
	/* non-monotonic end offsets with a correct checksum */
	cn_put_le64(f.data + 4096 + 2 * 40, 200);
	EVP_Digest(f.data + 4096, full - 4096, f.data + 32, NULL, EVP_sha256(), NULL);
	ck_assert_int_eq(parse_code(&f), -CN_E_FORMAT);
	/* a zero-length chunk too */
	cn_put_le64(f.data + 4096 + 2 * 40, 250);
	EVP_Digest(f.data + 4096, full - 4096, f.data + 32, NULL, EVP_sha256(), NULL);
	ck_assert_int_eq(parse_code(&f), -CN_E_FORMAT);
	cn_buf_free(&f);

	/* fixed: inconsistent size / chunk size / digest count */
	uint64_t cs = 1024, size = 2500, fends[] = {1024, 2048, 2500};
	build(CN_INDEX_FIXED, fends, 3, size, cs, &f, csum);
	ck_assert_int_eq(parse_code(&f), 0);
	cn_put_le64(f.data + 64, 3073); /* needs 4 digests */
	ck_assert_int_eq(parse_code(&f), -CN_E_TRUNCATED);
	cn_put_le64(f.data + 64, 2048); /* needs 2 */
	ck_assert_int_eq(parse_code(&f), -CN_E_TRUNCATED);
	cn_put_le64(f.data + 64, 2049); /* 3 again: fine */
	ck_assert_int_eq(parse_code(&f), 0);
	cn_put_le64(f.data + 72, 1000); /* not a power of two */
	ck_assert_int_eq(parse_code(&f), -CN_E_FORMAT);
	cn_put_le64(f.data + 72, 0);
	ck_assert_int_eq(parse_code(&f), -CN_E_FORMAT);
	cn_put_le64(f.data + 72, 1024);
	f.len -= 32;
	ck_assert_int_eq(parse_code(&f), -CN_E_TRUNCATED);
	f.len += 32;
	f.data[4096 + 40] ^= 1;
	ck_assert_int_eq(parse_code(&f), -CN_E_CHECKSUM);
	cn_buf_free(&f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("index");
	TCase *tc = tcase_create("index");
	tcase_add_test(tc, test_didx_known_answer);
	tcase_add_test(tc, test_fidx_known_answer);
	tcase_add_test(tc, test_writer_rules);
	tcase_add_test(tc, test_roundtrip_and_csum);
	tcase_add_test(tc, test_empty_dynamic);
	tcase_add_test(tc, test_reader_rejects);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
