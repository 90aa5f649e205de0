/* Shared scaffolding of the check-based test programs: the suite runner
 * and a main() for the common shape (one suite, one case). */
#ifndef CN_TEST_H
#define CN_TEST_H

#include <check.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* check's ck_assert_msg (and every ck_assert_* built on it) calls
 * _mark_point() when the assertion holds, which writes the file and line
 * to the runner's pipe: two write() calls per passing assertion. Tests
 * that assert inside loops made millions of them (2.5 million in
 * test_pxar_decoder alone), most of the unit tests' system time. Here a
 * passing assertion costs nothing; a failing one reports as before. What
 * is lost is the "last checkpoint" line check prints when a test dies of
 * a signal; call mark_point() where that matters. */
#undef ck_assert_msg
#define ck_assert_msg(expr, ...)                                                   \
	((expr) ? (void)0                                                           \
		: _ck_assert_failed(__FILE__, __LINE__, "Assertion '" #expr "' failed", \
				    ##__VA_ARGS__))

/* 1 in a build with AddressSanitizer or ThreadSanitizer (-Db_sanitize=
 * address,... or thread), else 0. They make the library several times
 * slower, so a test may then use fewer rounds or smaller inputs where
 * their number or size is not what it checks; the release build runs the
 * full ones (scripts/test.sh). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CN_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CN_TEST_SANITIZED 1
#endif
#endif
#ifndef CN_TEST_SANITIZED
#define CN_TEST_SANITIZED 0
#endif

/* 1 when this kernel gives memory marked MADV_HUGEPAGE transparent huge
 * pages (built in, and not set to "never"), else 0. */
static inline int cn_test_thp_available(void)
{
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char mode[128] = "";
	if (f) {
		if (!fgets(mode, sizeof(mode), f))
			mode[0] = 0;
		fclose(f);
	}
	return mode[0] && strstr(mode, "[never]") == NULL;
}

/* Runs every case of suite s (the runner takes it over and frees it) and
 * returns the exit status for main(): EXIT_SUCCESS when no test failed. */
static inline int cn_test_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* A new suite named suite with one case named tcase holding tests[0..n)
 * (in order), each with timeout_s seconds (0: check's default). The caller
 * owns the suite until it hands it to cn_test_run_suite(). */
static inline Suite *cn_test_suite(const char *suite, const char *tcase, int timeout_s,
				   const TTest *const *tests, size_t n)
{
	Suite *s = suite_create(suite);
	TCase *tc = tcase_create(tcase);
	if (timeout_s > 0)
		tcase_set_timeout(tc, timeout_s);
	for (size_t i = 0; i < n; i++)
		tcase_add_test(tc, tests[i]);
	suite_add_tcase(s, tc);
	return s;
}

/* Defines main(): runs the START_TEST functions given after timeout_s as
 * one case tcase of suite suite (see cn_test_suite). */
#define CN_TEST_MAIN(suite, tcase, timeout_s, ...)                                               \
	int main(void)                                                                           \
	{                                                                                        \
		const TTest *const cn_tests_[] = {__VA_ARGS__};                                  \
		return cn_test_run_suite(cn_test_suite(suite, tcase, timeout_s, cn_tests_,       \
						       sizeof(cn_tests_) / sizeof(cn_tests_[0]))); \
	}

#endif
