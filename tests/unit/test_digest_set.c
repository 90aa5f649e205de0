#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_digest_set.h"

static void make_digest(uint32_t i, uint8_t d[32])
{
	/* Mix so that the low bytes (the hash) collide often for small i. */
	memset(d, 0, 32);
	d[0] = (uint8_t)(i & 3);
	d[31] = (uint8_t)i;
	d[30] = (uint8_t)(i >> 8);
	d[29] = (uint8_t)(i >> 16);
}

START_TEST(test_add_get_grow)
{
	struct cn_digest_set *s;
	uint8_t d[32], v;
	ck_assert_int_eq(cn_digest_set_new(0, &s), 0);
	for (uint32_t i = 0; i < 20000; i++) {
		make_digest(i, d);
		ck_assert_int_eq(cn_digest_set_add(s, d, (uint8_t)(i % 7)), 1);
	}
	ck_assert_uint_eq(cn_digest_set_count(s), 20000);
	for (uint32_t i = 0; i < 20000; i++) {
		make_digest(i, d);
		ck_assert_int_eq(cn_digest_set_get(s, d, &v), 1);
		ck_assert_uint_eq(v, i % 7);
		ck_assert_int_eq(cn_digest_set_add(s, d, 99), 0);
	}
	make_digest(20000, d);
	ck_assert_int_eq(cn_digest_set_get(s, d, &v), 0);
	ck_assert_int_eq(cn_digest_set_update(s, d, 1), 0);
	make_digest(5, d);
	ck_assert_int_eq(cn_digest_set_update(s, d, 42), 1);
	ck_assert_int_eq(cn_digest_set_get(s, d, &v), 1);
	ck_assert_uint_eq(v, 42);
	ck_assert_uint_eq(cn_digest_set_count(s), 20000);
	cn_digest_set_free(s);
}
END_TEST

START_TEST(test_zero_digest)
{
	struct cn_digest_set *s;
	uint8_t zero[32] = {0};
	ck_assert_int_eq(cn_digest_set_new(100000, &s), 0);
	ck_assert_int_eq(cn_digest_set_get(s, zero, NULL), 0);
	ck_assert_int_eq(cn_digest_set_add(s, zero, 0), 1);
	ck_assert_int_eq(cn_digest_set_get(s, zero, NULL), 1);
	cn_digest_set_free(s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("digest_set");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_add_get_grow);
	tcase_add_test(tc, test_zero_digest);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
