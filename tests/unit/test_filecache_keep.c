/* File cache writer keeping the previous cache's records: a run that
 * changed nothing copies the previous cache with a new header instead of
 * writing every record again (issue #21); anything less than "every
 * record kept once, nothing put" writes the records, and a writer that
 * is aborted (a failed or killed run) leaves the previous cache valid. */
#include "cn_test.h"
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cn_util.h"
#include "store/cn_filecache.h"

#define N 3000

static char dir[PATH_MAX], path[PATH_MAX + 80], other[PATH_MAX + 80];

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/cn_fckeep_XXXXXX", base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(cn_filecache_path(dir, "local:/store", "root.pxar", path, sizeof(path)), 0);
	ck_assert_int_eq(cn_filecache_path(dir, "pbs://b:8007/s", "root.pxar", other, sizeof(other)), 0);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static struct cn_filecache_entry mk(uint64_t i)
{
	struct cn_filecache_entry e = {
		.flags = CN_FILECACHE_VERIFIED | CN_FILECACHE_CONTENT_HASH, .ino = 5000 + i, .size = 100 + i,
		.mtime_sec = 1800000000 + (int64_t)i, .mtime_nsec = (uint32_t)i * 7, .ctime_sec = 1800000100,
		.ctime_nsec = (uint32_t)i, .payload_offset = i * 4096,
	};
	memset(e.meta_hash, (int)(0x30 + (i & 31)), 32);
	memset(e.content_hash, (int)(i & 255), 16);
	return e;
}

static void name_of(uint64_t i, char *buf, size_t len)
{
	snprintf(buf, len, "d%04llu/f%03llu.dat", (unsigned long long)(i / 100), (unsigned long long)(i % 100));
}

static struct cn_filecache_ref ref(const char *snap, int c)
{
	struct cn_filecache_ref r = { .snapshot = snap };
	memset(r.payload_csum, c, 32);
	return r;
}

/* The first cache: N records, describing snapshot "s1". */
static void write_first(void)
{
	struct cn_filecache_writer *w;
	struct cn_filecache_ref r = ref("host/a/s1", 1);
	char name[64];
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	for (uint64_t i = 0; i < N; i++) {
		struct cn_filecache_entry e = mk(i);
		name_of(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_writer_put(w, name, strlen(name), &e), 0);
	}
	ck_assert_int_eq(cn_filecache_writer_commit(w, &r), 0);
}

static struct cn_filecache *open_cache(const char *p)
{
	struct cn_filecache *fc;
	ck_assert_int_eq(cn_filecache_open(p, &fc), 0);
	ck_assert_ptr_nonnull(fc);
	return fc;
}

static void key_of(struct cn_filecache *fc, uint64_t i, uint8_t key[32])
{
	char name[64];
	name_of(i, name, sizeof(name));
	ck_assert_int_eq(cn_filecache_key(fc, name, strlen(name), key), 0);
}

/* Keeps entry i of base in w, its payload now at offset base's + shift. */
static void keep_i(struct cn_filecache_writer *w, struct cn_filecache *base, uint64_t i, uint64_t shift)
{
	uint8_t key[32];
	struct cn_filecache_entry be, e = mk(i);
	key_of(base, i, key);
	ck_assert_int_eq(cn_filecache_get(base, key, &be), 1);
	e.payload_offset = be.payload_offset + shift;
	ck_assert_int_eq(cn_filecache_writer_keep(w, key, &e, be.payload_offset), 0);
}

/* Checks that the cache at p describes r and holds entry i as mk(i) with
 * its payload offset moved by shift, for every i except skip (absent) and
 * changed (moved by one more). */
static void check_cache(const char *p, const struct cn_filecache_ref *r, uint64_t skip, uint64_t changed,
			uint64_t shift)
{
	struct cn_filecache *fc = open_cache(p);
	struct cn_filecache_entry e;
	char name[64];
	ck_assert_int_eq(cn_filecache_matches(fc, r), 1);
	ck_assert_uint_eq(cn_filecache_count(fc), N - (skip < N));
	for (uint64_t i = 0; i < N; i++) {
		struct cn_filecache_entry want = mk(i);
		name_of(i, name, sizeof(name));
		int got = cn_filecache_lookup(fc, name, strlen(name), &e);
		if (i == skip) {
			ck_assert_int_eq(got, 0);
			continue;
		}
		ck_assert_int_eq(got, 1);
		want.payload_offset += shift + (i == changed);
		ck_assert_int_eq(cn_filecache_entry_equal(&e, &want), 1);
	}
	cn_filecache_close(fc);
}

/* The next night's cache at path from the one there, every entry kept
 * with its payload shift further on; the commit's result. */
static int next_night(const struct cn_filecache_ref *r, uint64_t shift)
{
	struct cn_filecache *base = open_cache(path);
	struct cn_filecache_writer *w;
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	cn_filecache_writer_set_base(w, base);
	for (uint64_t i = 0; i < N; i++)
		keep_i(w, base, i, shift);
	int rc = cn_filecache_writer_commit(w, r);
	cn_filecache_close(base);
	return rc;
}

static int accept_any(void *ctx, const struct cn_filecache_entry *e)
{
	(void)ctx;
	(void)e;
	return 1;
}

/* A run that changed nothing: every record kept, for two targets' caches;
 * the previous cache's file is copied (commit returns 1) and each new
 * cache describes the new snapshot with every record, found by path and
 * by inode. */
START_TEST(test_keep_all_copies)
{
	write_first();
	struct cn_filecache *base = open_cache(path);
	struct cn_filecache_writer *w[2];
	struct cn_filecache_ref r2 = ref("host/a/s2", 2), r1 = ref("host/a/s1", 1);
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w[0]), 0);
	ck_assert_int_eq(cn_filecache_writer_begin(other, &w[1]), 0);
	for (int k = 0; k < 2; k++)
		cn_filecache_writer_set_base(w[k], base);
	for (uint64_t i = 0; i < N; i++)
		for (int k = 0; k < 2; k++)
			keep_i(w[k], base, i, 0);
	ck_assert_int_eq(cn_filecache_writer_commit(w[0], &r2), 1);
	ck_assert_int_eq(cn_filecache_writer_commit(w[1], &r2), 1);
	cn_filecache_close(base);
	check_cache(path, &r2, N, N, 0);
	check_cache(other, &r2, N, N, 0);
	struct cn_filecache *fc = open_cache(path);
	struct cn_filecache_entry e, want = mk(123);
	ck_assert_int_eq(cn_filecache_matches(fc, &r1), 0);
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, want.ino, accept_any, NULL, &e), 1);
	ck_assert_int_eq(cn_filecache_entry_equal(&e, &want), 1);
	cn_filecache_close(fc);

	/* the next night: every payload one start marker further on (the
	 * first no-change run after a backup that stored everything) */
	struct cn_filecache_ref r3 = ref("host/a/s3", 3);
	ck_assert_int_eq(next_night(&r3, 16), 1);
	check_cache(path, &r3, N, N, 16);
	fc = open_cache(path);
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, want.ino, accept_any, NULL, &e), 1);
	ck_assert_uint_eq(e.payload_offset, want.payload_offset + 16);
	cn_filecache_close(fc);

	/* and again, unmoved, from the shifted copy */
	struct cn_filecache_ref r4 = ref("host/a/s4", 4);
	ck_assert_int_eq(next_night(&r4, 0), 1);
	check_cache(path, &r4, N, N, 16);
}
END_TEST

/* One record changed (put), one file gone (not kept): the records are
 * written, the kept ones taken from the base. */
START_TEST(test_keep_some_writes)
{
	write_first();
	/* a base whose header moves every offset by 16 */
	struct cn_filecache_ref r2 = ref("host/a/s2", 2), r3 = ref("host/a/s3", 3);
	ck_assert_int_eq(next_night(&r2, 16), 1);

	/* i = 17 gone, i = 40 moved by one more than the others (put, as
	 * its shift differs from the first keep's), the rest moved by 16 */
	struct cn_filecache *base = open_cache(path);
	struct cn_filecache_writer *w;
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	cn_filecache_writer_set_base(w, base);
	for (uint64_t i = 0; i < N; i++)
		if (i != 17)
			keep_i(w, base, i, 16 + (i == 40));
	ck_assert_int_eq(cn_filecache_writer_commit(w, &r3), 0);
	cn_filecache_close(base);
	check_cache(path, &r3, 17, 40, 32);
}
END_TEST

/* As many keeps as records, but one key twice and another never: not
 * the whole base, so not copied (a copy would keep the missing file's
 * record, which a later lookup by inode could find). */
START_TEST(test_keep_duplicate_not_copied)
{
	write_first();
	struct cn_filecache *base = open_cache(path);
	struct cn_filecache_writer *w;
	struct cn_filecache_ref r2 = ref("host/a/s2", 2);
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	cn_filecache_writer_set_base(w, base);
	for (uint64_t i = 0; i < N; i++)
		keep_i(w, base, i == 5 ? 4 : i, 0);
	ck_assert_int_eq(cn_filecache_writer_commit(w, &r2), 0);
	cn_filecache_close(base);
	check_cache(path, &r2, 5, N, 0);
}
END_TEST

/* A run that fails or is killed after its writer kept every record: the
 * previous cache stays as it was (describing the previous snapshot),
 * whether the writer was aborted or its PATH.new left behind. */
START_TEST(test_failed_run_keeps_previous)
{
	write_first();
	struct cn_filecache_ref r1 = ref("host/a/s1", 1);
	struct cn_filecache *base = open_cache(path);
	struct cn_filecache_writer *w;
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	cn_filecache_writer_set_base(w, base);
	for (uint64_t i = 0; i < N; i++)
		keep_i(w, base, i, 16);
	cn_filecache_writer_abort(w);
	cn_filecache_close(base);
	check_cache(path, &r1, N, N, 0);

	/* killed: a half-written PATH.new stays; the cache is still s1's,
	 * and the next writer replaces the leftover */
	char tmp[PATH_MAX + 90];
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "half a cache", 12), 12);
	close(fd);
	check_cache(path, &r1, N, N, 0);
	struct cn_filecache_ref r2 = ref("host/a/s2", 2);
	ck_assert_int_eq(next_night(&r2, 16), 1);
	check_cache(path, &r2, N, N, 16);
	ck_assert_int_ne(access(tmp, F_OK), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("filecache_keep");
	TCase *tc = tcase_create("keep");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_keep_all_copies);
	tcase_add_test(tc, test_keep_some_writes);
	tcase_add_test(tc, test_keep_duplicate_not_copied);
	tcase_add_test(tc, test_failed_run_keeps_previous);
	suite_add_tcase(s, tc);
	return cn_test_run_suite(s);
}
