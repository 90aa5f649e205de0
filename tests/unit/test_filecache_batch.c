/* LMDB file cache writer: puts are sorted and written in batches (of up
 * to 131,072); a cache spanning two batches, with a path put again in the
 * second (its later put wins) and VERIFIED entries of both found by
 * inode, reads back whole. */
#include "cn_test.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/cn_filecache.h"

static char dir[PATH_MAX], path[PATH_MAX + 80];

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/cn_fcbatch_XXXXXX", base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(cn_filecache_path(dir, "local:/srv/store", "photos.pxar", path, sizeof(path)), 0);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static struct cn_filecache_entry mk(uint64_t i, uint64_t gen)
{
	struct cn_filecache_entry e = {
		.flags = CN_FILECACHE_VERIFIED | (i % 3 ? 0 : CN_FILECACHE_CONTENT_HASH),
		.ino = 5000000 + i * 2 + gen, .size = i + 1, .mtime_sec = 1800000000 + (int64_t)i,
		.mtime_nsec = (uint32_t)(i % 1000000000), .ctime_sec = 1800000001 + (int64_t)i,
		.ctime_nsec = 7, .payload_offset = 8 + i * 64 + gen,
	};
	memset(e.meta_hash, (int)(i & 0xff), 32);
	memset(e.content_hash, (int)((i >> 8) & 0xff), 16);
	return e;
}

static void name_of(uint64_t i, char *buf, size_t len)
{
	snprintf(buf, len, "d%04llu/f%03llu.dat", (unsigned long long)(i / 100), (unsigned long long)(i % 100));
}

static void assert_same(const struct cn_filecache_entry *a, const struct cn_filecache_entry *b)
{
	ck_assert_uint_eq(a->flags, b->flags);
	ck_assert_uint_eq(a->ino, b->ino);
	ck_assert_uint_eq(a->size, b->size);
	ck_assert_int_eq(a->mtime_sec, b->mtime_sec);
	ck_assert_uint_eq(a->mtime_nsec, b->mtime_nsec);
	ck_assert_int_eq(a->ctime_sec, b->ctime_sec);
	ck_assert_uint_eq(a->ctime_nsec, b->ctime_nsec);
	ck_assert_mem_eq(a->meta_hash, b->meta_hash, 32);
	ck_assert_uint_eq(a->payload_offset, b->payload_offset);
	ck_assert_mem_eq(a->content_hash, b->content_hash, 16);
}

static int accept_any(void *ctx, const struct cn_filecache_entry *e)
{
	(void)ctx;
	(void)e;
	return 1;
}

START_TEST(test_two_batches)
{
	const uint64_t n = 131072 + 20000;
	struct cn_filecache_writer *w;
	struct cn_filecache *fc;
	struct cn_filecache_ref r = { .snapshot = "host/nas/2026-12-07T02:00:00Z" };
	char name[64];
	memset(r.payload_csum, 0x5a, 32);
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	for (uint64_t i = 0; i < n; i++) {
		struct cn_filecache_entry e = mk(i, 0);
		name_of(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_writer_put(w, name, strlen(name), &e), 0);
	}
	/* put again in the second batch: paths of the first and the second */
	for (uint64_t i = 0; i < n; i += 1001) {
		struct cn_filecache_entry e = mk(i, 1);
		name_of(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_writer_put(w, name, strlen(name), &e), 0);
	}
	ck_assert_int_eq(cn_filecache_writer_commit(w, &r), 0);

	ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
	ck_assert_ptr_nonnull(fc);
	ck_assert_int_eq(cn_filecache_matches(fc, &r), 1);
	ck_assert_uint_eq(cn_filecache_count(fc), n);
	for (uint64_t i = 0; i < n; i++) {
		struct cn_filecache_entry e, want = mk(i, i % 1001 == 0);
		name_of(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_lookup(fc, name, strlen(name), &e), 1);
		assert_same(&e, &want);
		if (i % 97 == 0) {
			ck_assert_int_eq(cn_filecache_lookup_inode(fc, want.ino, accept_any, NULL, &e), 1);
			assert_same(&e, &want);
		}
	}
	/* the first put's inode of a path put again answers no more */
	struct cn_filecache_entry e, old = mk(1001, 0);
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, old.ino, accept_any, NULL, &e), 0);
	ck_assert_int_eq(cn_filecache_lookup(fc, "d9999/f999.dat", 14, &e), 0);
	cn_filecache_close(fc);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("filecache_batch");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_two_batches);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
