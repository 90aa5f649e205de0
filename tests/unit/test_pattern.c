/* cn_pattern: pathpatterns semantics (cases taken from the behaviour
 * documented by pathpatterns' own tests and create.rs usage). */
#include "cn_test.h"
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "pxar/cn_pattern.h"

static int gm(const char *pat, const char *text)
{
	struct cn_pattern *p;
	ck_assert_int_eq(cn_pattern_parse(pat, strlen(pat), CN_MATCH_EXCLUDE, &p), 0);
	int r = cn_pattern_glob_matches(p, text, strlen(text));
	cn_pattern_free(p);
	return r;
}

START_TEST(test_glob)
{
	ck_assert(gm("/hey/*/you", "/hey/asdf/you"));
	ck_assert(!gm("/hey/*/you", "/hey/asdf/more/you"));
	ck_assert(!gm("/hey/*/you", "/heyasdf/you"));
	ck_assert(!gm("/hey/*/you", "/hey/you"));
	ck_assert(gm("/hey/*/you", "/hey//you"));
	ck_assert(gm("/hey/**/you", "/hey/asdf/more/you"));
	ck_assert(gm("/hey/**/you", "/hey/you"));
	ck_assert(!gm("/hey/**/you", "/hey/asdfyou"));
	ck_assert(gm("/he[yx]/**/you", "/hex/asdf/you"));
	ck_assert(!gm("/he[yx]/**/you", "/hez/you"));
	ck_assert(gm("/he[^yx]/**/you", "/hez/you"));
	ck_assert(!gm("/he[^yx]/**/you", "/hey/you"));
	ck_assert(gm("/tes[a-t]", "/test"));
	ck_assert(!gm("/tes[a-t]", "/tesu"));
	ck_assert(!gm("/tes[a-t]", "/tes"));
	ck_assert(gm("/tes[a-t]/a?a", "/test/aba"));
	ck_assert(!gm("/tes[a-t]/a?a", "/test/a/a"));
	ck_assert(gm("a*b*c", "axxbxxbxxcxxc"));
	ck_assert(!gm("a*b*c", "axxbxxbxxcxx"));
	ck_assert(gm("a*b*c*", "axxbxxbxxcxxcxx"));
	ck_assert(gm("a/b**/c", "a/bxx/c"));
	ck_assert(!gm("a/b**/c", "a/bxx/yy/c"));
	ck_assert(gm("**/lost+found", "/foo/lost+found"));
	ck_assert(gm("**/lost+found", "lost+found"));
	ck_assert(gm("**/lost+found", "///lost+found"));
	ck_assert(!gm("**/lost+found", "lost+found2"));
	ck_assert(!gm("**/lost+found", "xlost+found"));
	ck_assert(gm("[[:digit:]]x", "7x"));
	ck_assert(!gm("[[:digit:]]x", "ax"));
	ck_assert(gm("a\\*", "a*"));
	ck_assert(!gm("a\\*", "ab"));
}
END_TEST

START_TEST(test_parse_errors)
{
	struct cn_pattern *p;
	ck_assert_int_eq(cn_pattern_parse("", 0, CN_MATCH_EXCLUDE, &p), -EINVAL);
	ck_assert_int_eq(cn_pattern_parse("!", 1, CN_MATCH_EXCLUDE, &p), -EINVAL);
	ck_assert_int_eq(cn_pattern_parse("a\\", 2, CN_MATCH_EXCLUDE, &p), -EINVAL);
	ck_assert_int_eq(cn_pattern_parse("[abc", 4, CN_MATCH_EXCLUDE, &p), -EINVAL);
	ck_assert_int_eq(cn_pattern_parse("[[:nope:]]", 10, CN_MATCH_EXCLUDE, &p), -EINVAL);
	ck_assert_int_eq(cn_pattern_parse("a\0b", 3, CN_MATCH_EXCLUDE, &p), -EINVAL);
}
END_TEST

START_TEST(test_parse_flags)
{
	struct cn_pattern *p;
	ck_assert_int_eq(cn_pattern_parse("!foo//", 6, CN_MATCH_EXCLUDE, &p), 0);
	ck_assert_int_eq(cn_pattern_type(p), CN_MATCH_INCLUDE);
	ck_assert_uint_eq(cn_pattern_flags(p), CN_PATTERN_MATCH_DIRECTORIES);
	ck_assert_str_eq(cn_pattern_text(p), "foo");
	cn_pattern_free(p);
	ck_assert_int_eq(cn_pattern_parse("///", 3, CN_MATCH_EXCLUDE, &p), 0);
	ck_assert_str_eq(cn_pattern_text(p), "/");
	ck_assert_uint_eq(cn_pattern_flags(p), CN_PATTERN_MATCH_DIRECTORIES);
	cn_pattern_free(p);
}
END_TEST

START_TEST(test_list_and_suffix)
{
	struct cn_pattern *l[3];
	ck_assert_int_eq(cn_pattern_parse("a_dir/", 6, CN_MATCH_INCLUDE, &l[0]), 0);
	ck_assert_int_eq(cn_pattern_parse("!a_file", 7, CN_MATCH_INCLUDE, &l[1]), 0);
	ck_assert_int_eq(cn_pattern_parse("!another_dir//", 14, CN_MATCH_INCLUDE, &l[2]), 0);
	ck_assert_int_eq(cn_pattern_list_match(l, 3, "/a_dir", 6, S_IFDIR), CN_MATCH_INCLUDE);
	ck_assert_int_eq(cn_pattern_list_match(l, 3, "a_dir", 5, S_IFDIR), CN_MATCH_INCLUDE);
	ck_assert_int_eq(cn_pattern_list_match(l, 3, "/a_dir", 6, S_IFREG), CN_MATCH_NONE);
	ck_assert_int_eq(cn_pattern_list_match(l, 3, "/x/a_file", 9, S_IFREG), CN_MATCH_EXCLUDE);
	ck_assert_int_eq(cn_pattern_list_match(l, 3, "/another_dir", 12, S_IFDIR), CN_MATCH_EXCLUDE);
	ck_assert_int_eq(cn_pattern_list_match(l, 3, "/another_dir", 12, S_IFREG), CN_MATCH_NONE);
	ck_assert(cn_pattern_list_needs_mode(l, 3));
	for (int i = 0; i < 3; i++)
		cn_pattern_free(l[i]);

	/* unanchored patterns match any suffix after '/', anchored only all */
	struct cn_pattern *p;
	ck_assert_int_eq(cn_pattern_parse("some/path", 9, CN_MATCH_EXCLUDE, &p), 0);
	ck_assert(cn_pattern_matches(p, "/x/some/path", 12, S_IFREG));
	ck_assert(!cn_pattern_matches(p, "/x/some/pathx", 13, S_IFREG));
	cn_pattern_add_flags(p, CN_PATTERN_ANCHORED);
	ck_assert(!cn_pattern_matches(p, "/x/some/path", 12, S_IFREG));
	ck_assert(cn_pattern_matches(p, "some/path", 9, S_IFREG));
	cn_pattern_free(p);
	/* leading '/' makes a root-anchored pattern in effect */
	ck_assert_int_eq(cn_pattern_parse("/top", 4, CN_MATCH_EXCLUDE, &p), 0);
	ck_assert(cn_pattern_matches(p, "/top", 4, S_IFREG));
	ck_assert(!cn_pattern_matches(p, "/a/top", 6, S_IFREG));
	cn_pattern_free(p);
	/* later entries win */
	ck_assert_int_eq(cn_pattern_parse("*.tmp", 5, CN_MATCH_EXCLUDE, &l[0]), 0);
	ck_assert_int_eq(cn_pattern_parse("!keep.tmp", 9, CN_MATCH_EXCLUDE, &l[1]), 0);
	ck_assert_int_eq(cn_pattern_list_match(l, 2, "/d/x.tmp", 8, S_IFREG), CN_MATCH_EXCLUDE);
	ck_assert_int_eq(cn_pattern_list_match(l, 2, "/d/keep.tmp", 11, S_IFREG), CN_MATCH_INCLUDE);
	cn_pattern_free(l[0]);
	cn_pattern_free(l[1]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pattern");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_glob);
	tcase_add_test(tc, test_parse_errors);
	tcase_add_test(tc, test_parse_flags);
	tcase_add_test(tc, test_list_and_suffix);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
