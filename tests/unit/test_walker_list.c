/* cn_walker_list: directory listings and the helper threads that make
 * them ahead of the walk. A listing taken from the helpers must be the one
 * the walker would have made itself; one of another directory (replaced
 * since the walker listed its parent, or a symlink put in its place) or
 * one asked for and dropped must never be handed out. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/cn_walker_impl.h"
#include "cn_test.h"

static char root[PATH_MAX];
static int root_fd = -1;

static void put(const char *rel)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, rel, strlen(rel)), (ssize_t)strlen(rel));
	close(fd);
}

static void dir(const char *rel)
{
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	ck_assert_int_eq(mkdir(p, 0755), 0);
}

static void lst(const char *rel, struct stat *st)
{
	ck_assert_int_eq(fstatat(root_fd, rel, st, AT_SYMLINK_NOFOLLOW), 0);
}

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(root, sizeof(root), "%s/cn_wlist_XXXXXX", base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(root));
	root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(root_fd, 0);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 32];
	close(root_fd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	ck_assert_int_eq(system(cmd), 0);
}

/* The listing of rel, made on this thread. */
static void list_here(const char *rel, struct cn_wk_listing *l)
{
	int fd = openat(root_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	enum cn_wk_list_fail what;
	size_t at;
	ck_assert_int_eq(cn_wk_list_dir(fd, 0, l, &what, &at), 0);
	close(fd);
}

static void assert_same(const struct cn_wk_listing *a, const struct cn_wk_listing *b)
{
	ck_assert_uint_eq(a->n, b->n);
	for (size_t i = 0; i < a->n; i++) {
		ck_assert_str_eq(a->e[i].name, b->e[i].name);
		ck_assert_uint_eq(a->e[i].name_len, strlen(a->e[i].name));
		ck_assert_uint_eq(a->e[i].st.st_ino, b->e[i].st.st_ino);
		ck_assert_uint_eq(a->e[i].st.st_mode, b->e[i].st.st_mode);
		ck_assert_int_eq(a->e[i].st.st_size, b->e[i].st.st_size);
	}
}

START_TEST(test_listing_sorted_without_dots)
{
	put("b");
	put("a");
	put(".hidden");
	put("B");
	dir("c");
	ck_assert_int_eq(symlinkat("c", root_fd, "link"), 0);
	struct cn_wk_listing l;
	enum cn_wk_list_fail what;
	size_t at;
	/* the fd's position is not where the listing starts */
	char buf[4096];
	ck_assert_int_ge(syscall(SYS_getdents64, root_fd, buf, sizeof(buf)), 0);
	ck_assert_int_eq(cn_wk_list_dir(root_fd, 0, &l, &what, &at), 0);
	static const char *const want[] = {".hidden", "B", "a", "b", "c", "link"};
	ck_assert_uint_eq(l.n, 6);
	for (size_t i = 0; i < l.n; i++) {
		struct stat st;
		ck_assert_str_eq(l.e[i].name, want[i]);
		lst(want[i], &st);
		ck_assert_uint_eq(l.e[i].st.st_ino, st.st_ino);
		ck_assert_uint_eq(l.e[i].st.st_mode, st.st_mode);
	}
	ck_assert(S_ISLNK(l.e[5].st.st_mode)); /* not followed */
	cn_wk_listing_free(&l);
	ck_assert_uint_eq(l.n, 0);
	/* past max entries: given up, nothing handed out */
	ck_assert_int_eq(cn_wk_list_dir(root_fd, 5, &l, &what, &at), -E2BIG);
	ck_assert_int_eq(what, CN_WK_LIST_LARGE);
	ck_assert_ptr_null(l.e);
	ck_assert_uint_eq(l.n, 0);
	ck_assert_int_eq(cn_wk_list_dir(root_fd, 6, &l, &what, &at), 0);
	ck_assert_uint_eq(l.n, 6);
	cn_wk_listing_free(&l);
}
END_TEST

START_TEST(test_taken_listing_is_the_walkers_own)
{
	static const char *const dirs[] = {"d1", "d2", "d3", "d4", "d5"};
	char rel[64];
	for (size_t i = 0; i < 5; i++) {
		dir(dirs[i]);
		for (int k = 0; k < 40 + 10 * (int)i; k++) {
			snprintf(rel, sizeof(rel), "%s/f%03d", dirs[i], k);
			put(rel);
		}
		snprintf(rel, sizeof(rel), "%s/sub", dirs[i]);
		dir(rel);
	}
	struct cn_wk_prefetch *p;
	ck_assert_int_eq(cn_wk_prefetch_new(&p), 0);
	struct stat st[5];
	for (size_t i = 0; i < 5; i++) {
		lst(dirs[i], &st[i]);
		cn_wk_prefetch_submit(p, root_fd, dirs[i], &st[i], 1, i);
	}
	/* asked for twice: still one request, taken once */
	cn_wk_prefetch_submit(p, root_fd, dirs[0], &st[0], 1, 0);
	cn_wk_prefetch_wait_idle(p);
	for (size_t i = 0; i < 5; i++) {
		struct cn_wk_listing got, own;
		ck_assert_int_eq(cn_wk_prefetch_take(p, &st[i], &got), 1);
		list_here(dirs[i], &own);
		assert_same(&got, &own);
		ck_assert_uint_eq(got.n, 41 + 10 * i);
		cn_wk_listing_free(&got);
		cn_wk_listing_free(&own);
		ck_assert_int_eq(cn_wk_prefetch_take(p, &st[i], &got), 0);
	}
	/* never asked for */
	struct stat rst;
	struct cn_wk_listing none;
	ck_assert_int_eq(fstat(root_fd, &rst), 0);
	ck_assert_int_eq(cn_wk_prefetch_take(p, &rst, &none), 0);
	cn_wk_prefetch_free(p);
}
END_TEST

START_TEST(test_replaced_directory_is_not_handed_out)
{
	dir("d");
	put("d/old");
	struct stat old, now;
	lst("d", &old);
	ck_assert_int_eq(renameat(root_fd, "d", root_fd, "d.moved"), 0);
	dir("d");
	put("d/new");
	lst("d", &now);
	struct cn_wk_prefetch *p;
	struct cn_wk_listing l;
	ck_assert_int_eq(cn_wk_prefetch_new(&p), 0);
	cn_wk_prefetch_submit(p, root_fd, "d", &old, 1, 0);
	cn_wk_prefetch_wait_idle(p);
	ck_assert_int_eq(cn_wk_prefetch_take(p, &old, &l), 0);
	ck_assert_int_eq(cn_wk_prefetch_take(p, &now, &l), 0);
	/* the directory there now, asked for as it is, is listed */
	cn_wk_prefetch_submit(p, root_fd, "d", &now, 1, 0);
	cn_wk_prefetch_wait_idle(p);
	ck_assert_int_eq(cn_wk_prefetch_take(p, &now, &l), 1);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_str_eq(l.e[0].name, "new");
	cn_wk_listing_free(&l);

	/* a symlink to the listed directory put in its place */
	ck_assert_int_eq(renameat(root_fd, "d", root_fd, "d.new"), 0);
	ck_assert_int_eq(symlinkat("d.moved", root_fd, "d"), 0);
	cn_wk_prefetch_submit(p, root_fd, "d", &old, 1, 0);
	cn_wk_prefetch_wait_idle(p);
	ck_assert_int_eq(cn_wk_prefetch_take(p, &old, &l), 0);
	cn_wk_prefetch_free(p);
}
END_TEST

START_TEST(test_dropped_and_stale_requests)
{
	dir("a");
	dir("b");
	dir("c");
	struct stat a, b, c;
	lst("a", &a);
	lst("b", &b);
	lst("c", &c);
	struct cn_wk_prefetch *p;
	struct cn_wk_listing l;
	ck_assert_int_eq(cn_wk_prefetch_new(&p), 0);
	cn_wk_prefetch_submit(p, root_fd, "a", &a, 1, 0);
	cn_wk_prefetch_drop(p, &a);
	ck_assert_int_eq(cn_wk_prefetch_take(p, &a, &l), 0);
	/* made, then left longer than a listing is trusted */
	cn_wk_prefetch_submit(p, root_fd, "b", &b, 1, 1);
	cn_wk_prefetch_wait_idle(p);
	usleep(1200 * 1000);
	ck_assert_int_eq(cn_wk_prefetch_take(p, &b, &l), 0);
	/* requests left behind are freed with the helpers */
	cn_wk_prefetch_submit(p, root_fd, "c", &c, 1, 2);
	cn_wk_prefetch_free(p);
	cn_wk_prefetch_free(NULL);
	/* without helpers nothing is made ahead */
	cn_wk_prefetch_submit(NULL, root_fd, "c", &c, 1, 2);
	ck_assert_int_eq(cn_wk_prefetch_take(NULL, &c, &l), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("walker_list");
	TCase *tc = tcase_create("listings");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_listing_sorted_without_dots);
	tcase_add_test(tc, test_taken_listing_is_the_walkers_own);
	tcase_add_test(tc, test_replaced_directory_is_not_handed_out);
	tcase_add_test(tc, test_dropped_and_stale_requests);
	suite_add_tcase(s, tc);
	return cn_test_run_suite(s);
}
