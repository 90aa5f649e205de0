/* LMDB file cache: round trip, validation against the previous snapshot,
 * damaged files detected and removed, crash-safe replacement, and the
 * writer that keeps the previous cache's records. */
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

static char dir[PATH_MAX], path[PATH_MAX + 80], other[PATH_MAX + 80];

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/cn_fcache_XXXXXX", base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(cn_filecache_path(dir, "pbs://host:8007/store", "root.pxar", path, sizeof(path)), 0);
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
		.flags = (i & 1) ? CN_FILECACHE_VERIFIED : 0, .ino = 1000 + i, .size = i * 3,
		.mtime_sec = 1700000000 + (int64_t)i, .mtime_nsec = (uint32_t)i, .ctime_sec = -5,
		.ctime_nsec = 999999999, .payload_offset = 16 + i * 100,
	};
	memset(e.meta_hash, (int)(0xa0 + (i & 15)), 32);
	return e;
}

static void name_of(uint64_t i, char *buf, size_t len)
{
	snprintf(buf, len, "dir%llu/file-%llu", (unsigned long long)(i % 7), (unsigned long long)i);
}

static struct cn_filecache_ref ref(const char *snap, int c)
{
	struct cn_filecache_ref r = { .snapshot = snap };
	memset(r.payload_csum, c, 32);
	return r;
}

static void write_cache(const char *snap, int c, uint64_t n)
{
	struct cn_filecache_writer *w;
	struct cn_filecache_ref r = ref(snap, c);
	char name[64];
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	for (uint64_t i = 0; i < n; i++) {
		struct cn_filecache_entry e = mk(i);
		name_of(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_writer_put(w, name, strlen(name), &e), 0);
	}
	ck_assert_int_eq(cn_filecache_writer_commit(w, &r), 0);
}

START_TEST(test_roundtrip)
{
	struct cn_filecache *fc;
	ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
	ck_assert_ptr_null(fc); /* none yet */
	ck_assert_int_eq(cn_filecache_matches(NULL, NULL), 0);

	write_cache("host/a/2026-01-01T00:00:00Z", 7, 120000); /* spans several write txns */
	ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
	ck_assert_ptr_nonnull(fc);
	ck_assert_uint_eq(cn_filecache_count(fc), 120000);
	struct cn_filecache_ref same = ref("host/a/2026-01-01T00:00:00Z", 7);
	struct cn_filecache_ref other_snap = ref("host/a/2025-12-31T00:00:00Z", 7);
	struct cn_filecache_ref other_csum = ref("host/a/2026-01-01T00:00:00Z", 8);
	ck_assert_int_eq(cn_filecache_matches(fc, &same), 1);
	ck_assert_int_eq(cn_filecache_matches(fc, &other_snap), 0);
	ck_assert_int_eq(cn_filecache_matches(fc, &other_csum), 0);
	for (uint64_t i = 0; i < 120000; i += 997) {
		char name[64];
		struct cn_filecache_entry e, want = mk(i);
		name_of(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_lookup(fc, name, strlen(name), &e), 1);
		ck_assert_mem_eq(&e, &want, sizeof(e));
	}
	struct cn_filecache_entry e;
	ck_assert_int_eq(cn_filecache_lookup(fc, "dir1/file-120001", 16, &e), 0);
	ck_assert_int_eq(cn_filecache_lookup(fc, "dir1/file-1", 10, &e), 0); /* prefix of a name */
	cn_filecache_close(fc);

	/* paths longer than LMDB's key limit */
	struct cn_filecache_writer *w;
	char longp[6000];
	memset(longp, 'x', sizeof(longp));
	struct cn_filecache_entry le = mk(3);
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	ck_assert_int_eq(cn_filecache_writer_put(w, longp, sizeof(longp), &le), 0);
	ck_assert_int_eq(cn_filecache_writer_commit(w, &same), 0);
	ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
	ck_assert_uint_eq(cn_filecache_count(fc), 1);
	ck_assert_int_eq(cn_filecache_lookup(fc, longp, sizeof(longp), &e), 1);
	ck_assert_uint_eq(e.ino, le.ino);
	ck_assert_int_eq(cn_filecache_lookup(fc, longp, sizeof(longp) - 1, &e), 0);
	cn_filecache_close(fc);
}
END_TEST

static int accept_size(void *ctx, const struct cn_filecache_entry *e)
{
	return e->size == *(const uint64_t *)ctx;
}

/* VERIFIED entries are found by inode too (content hash kept); a record
 * replaced with another inode does not answer for the old one. */
START_TEST(test_inode_lookup)
{
	struct cn_filecache_writer *w;
	struct cn_filecache *fc;
	struct cn_filecache_entry a = mk(1), b = mk(3), c = mk(2), e;
	struct cn_filecache_ref r = ref("s", 1);
	a.ino = b.ino = c.ino = 77; /* c is not VERIFIED */
	b.size = 4242;
	a.flags |= CN_FILECACHE_CONTENT_HASH;
	for (int i = 0; i < 16; i++)
		a.content_hash[i] = (uint8_t)(0xc0 + i);
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	ck_assert_int_eq(cn_filecache_writer_put(w, "a", 1, &a), 0);
	ck_assert_int_eq(cn_filecache_writer_put(w, "b", 1, &b), 0);
	ck_assert_int_eq(cn_filecache_writer_put(w, "c", 1, &c), 0);
	struct cn_filecache_entry moved = mk(5); /* "d" had inode 1005, then 9 */
	ck_assert_int_eq(cn_filecache_writer_put(w, "d", 1, &moved), 0);
	moved.ino = 9;
	ck_assert_int_eq(cn_filecache_writer_put(w, "d", 1, &moved), 0);
	ck_assert_int_eq(cn_filecache_writer_commit(w, &r), 0);

	ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
	uint64_t want = a.size;
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, 77, accept_size, &want, &e), 1);
	ck_assert_uint_eq(e.flags, a.flags);
	ck_assert_uint_eq(e.payload_offset, a.payload_offset);
	ck_assert_mem_eq(e.content_hash, a.content_hash, 16);
	want = 4242;
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, 77, accept_size, &want, &e), 1);
	ck_assert_uint_eq(e.payload_offset, b.payload_offset);
	want = c.size; /* only the unverified entry has this size */
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, 77, accept_size, &want, &e), 0);
	want = moved.size;
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, 1005, accept_size, &want, &e), 0);
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, 9, accept_size, &want, &e), 1);
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, 12345, accept_size, &want, &e), 0);
	cn_filecache_close(fc);
}
END_TEST

/* an aborted writer leaves the old cache untouched */
START_TEST(test_abort_keeps_old)
{
	struct cn_filecache_writer *w;
	struct cn_filecache *fc;
	struct cn_filecache_entry e = mk(1);
	struct cn_filecache_ref r = ref("s1", 1);
	write_cache("s1", 1, 10);
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	ck_assert_int_eq(cn_filecache_writer_put(w, "new", 3, &e), 0);
	cn_filecache_writer_abort(w);
	ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
	ck_assert_int_eq(cn_filecache_matches(fc, &r), 1);
	ck_assert_uint_eq(cn_filecache_count(fc), 10);
	ck_assert_int_eq(cn_filecache_lookup(fc, "new", 3, &e), 0);
	cn_filecache_close(fc);
	char tmp[PATH_MAX + 100];
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	ck_assert_int_eq(access(tmp, F_OK), -1);
}
END_TEST

/* Damage: a flipped byte inside a record, a truncated file, garbage. Each
 * is detected on open; the file is removed and the cache treated as
 * absent (so the caller rebuilds it). */
static size_t find(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
	for (size_t i = 0; i + m <= n; i++)
		if (!memcmp(hay + i, needle, m))
			return i;
	return (size_t)-1;
}

static void rewrite(void (*damage)(uint8_t *data, size_t *len))
{
	int fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	size_t len = (size_t)st.st_size;
	uint8_t *d = malloc(len);
	ck_assert_int_eq(cn_read_full(fd, d, len), 0);
	damage(d, &len);
	ck_assert_int_eq(ftruncate(fd, 0), 0);
	ck_assert_int_eq(pwrite(fd, d, len, 0), (ssize_t)len);
	close(fd);
	free(d);
}

static void flip_record(uint8_t *d, size_t *len)
{
	struct cn_filecache_entry e = mk(5);
	size_t at = find(d, *len, e.meta_hash, 32);
	ck_assert_uint_ne(at, (size_t)-1);
	d[at + 31] ^= 1; /* another hash; structure intact */
}

static void truncate_half(uint8_t *d, size_t *len)
{
	(void)d;
	*len /= 2;
}

static void garbage(uint8_t *d, size_t *len)
{
	for (size_t i = 0; i < *len; i++)
		d[i] = (uint8_t)(i * 131 + 7);
}

START_TEST(test_damaged)
{
	void (*damages[])(uint8_t *, size_t *) = { flip_record, truncate_half, garbage };
	for (size_t k = 0; k < 3; k++) {
		struct cn_filecache *fc;
		write_cache("s", 2, 50);
		rewrite(damages[k]);
		ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
		ck_assert_ptr_null(fc);
		ck_assert_int_eq(access(path, F_OK), -1); /* removed */
		/* and a new one can be written in its place */
		write_cache("s", 2, 5);
		ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
		ck_assert_ptr_nonnull(fc);
		cn_filecache_close(fc);
	}
}
END_TEST

/* Entry i of the two-batch cache; gen 1: its second put. */
static struct cn_filecache_entry batch_entry(uint64_t i, uint64_t gen)
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

/* Its path: 100 files to a folder, as in a photo library. */
static void batch_name(uint64_t i, char *buf, size_t len)
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

/* The writer sorts puts and writes them in batches (of up to 131,072): a
 * cache spanning two batches, with paths put again in the second (the
 * later put wins) and VERIFIED entries of both found by inode, reads back
 * whole. */
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
		struct cn_filecache_entry e = batch_entry(i, 0);
		batch_name(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_writer_put(w, name, strlen(name), &e), 0);
	}
	/* put again in the second batch: paths of the first and the second */
	for (uint64_t i = 0; i < n; i += 1001) {
		struct cn_filecache_entry e = batch_entry(i, 1);
		batch_name(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_writer_put(w, name, strlen(name), &e), 0);
	}
	ck_assert_int_eq(cn_filecache_writer_commit(w, &r), 0);

	ck_assert_int_eq(cn_filecache_open(path, &fc), 0);
	ck_assert_ptr_nonnull(fc);
	ck_assert_int_eq(cn_filecache_matches(fc, &r), 1);
	ck_assert_uint_eq(cn_filecache_count(fc), n);
	for (uint64_t i = 0; i < n; i++) {
		struct cn_filecache_entry e, want = batch_entry(i, i % 1001 == 0);
		batch_name(i, name, sizeof(name));
		ck_assert_int_eq(cn_filecache_lookup(fc, name, strlen(name), &e), 1);
		assert_same(&e, &want);
		if (i % 97 == 0) {
			ck_assert_int_eq(cn_filecache_lookup_inode(fc, want.ino, accept_any, NULL, &e), 1);
			assert_same(&e, &want);
		}
	}
	/* the first put's inode of a path put again answers no more */
	struct cn_filecache_entry e, old = batch_entry(1001, 0);
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, old.ino, accept_any, NULL, &e), 0);
	ck_assert_int_eq(cn_filecache_lookup(fc, "d9999/f999.dat", 14, &e), 0);
	cn_filecache_close(fc);
}
END_TEST

/* The writer keeping the previous cache's records: a run that changed
 * nothing copies the previous cache with a new header instead of writing
 * every record again (issue #21); anything less than "every record kept
 * once, nothing put" writes the records, and a writer that is aborted (a
 * failed or killed run) leaves the previous cache valid. Its caches hold
 * KEEP_N records of keep_entry(), at paths of keep_name(). */
#define KEEP_N 3000

static struct cn_filecache_entry keep_entry(uint64_t i)
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

static void keep_name(uint64_t i, char *buf, size_t len)
{
	snprintf(buf, len, "d%04llu/f%03llu.dat", (unsigned long long)(i / 100), (unsigned long long)(i % 100));
}

/* The first cache: KEEP_N records, describing snapshot "s1". */
static void write_first(void)
{
	struct cn_filecache_writer *w;
	struct cn_filecache_ref r = ref("host/a/s1", 1);
	char name[64];
	ck_assert_int_eq(cn_filecache_writer_begin(path, &w), 0);
	for (uint64_t i = 0; i < KEEP_N; i++) {
		struct cn_filecache_entry e = keep_entry(i);
		keep_name(i, name, sizeof(name));
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
	keep_name(i, name, sizeof(name));
	ck_assert_int_eq(cn_filecache_key(fc, name, strlen(name), key), 0);
}

/* Keeps entry i of base in w, its payload now at offset base's + shift. */
static void keep_i(struct cn_filecache_writer *w, struct cn_filecache *base, uint64_t i, uint64_t shift)
{
	uint8_t key[32];
	struct cn_filecache_entry be, e = keep_entry(i);
	key_of(base, i, key);
	ck_assert_int_eq(cn_filecache_get(base, key, &be), 1);
	e.payload_offset = be.payload_offset + shift;
	ck_assert_int_eq(cn_filecache_writer_keep(w, key, &e, be.payload_offset), 0);
}

/* Checks that the cache at p describes r and holds entry i as keep_entry(i) with
 * its payload offset moved by shift, for every i except skip (absent) and
 * changed (moved by one more). */
static void check_cache(const char *p, const struct cn_filecache_ref *r, uint64_t skip, uint64_t changed,
			uint64_t shift)
{
	struct cn_filecache *fc = open_cache(p);
	struct cn_filecache_entry e;
	char name[64];
	ck_assert_int_eq(cn_filecache_matches(fc, r), 1);
	ck_assert_uint_eq(cn_filecache_count(fc), KEEP_N - (skip < KEEP_N));
	for (uint64_t i = 0; i < KEEP_N; i++) {
		struct cn_filecache_entry want = keep_entry(i);
		keep_name(i, name, sizeof(name));
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
	for (uint64_t i = 0; i < KEEP_N; i++)
		keep_i(w, base, i, shift);
	int rc = cn_filecache_writer_commit(w, r);
	cn_filecache_close(base);
	return rc;
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
	for (uint64_t i = 0; i < KEEP_N; i++)
		for (int k = 0; k < 2; k++)
			keep_i(w[k], base, i, 0);
	ck_assert_int_eq(cn_filecache_writer_commit(w[0], &r2), 1);
	ck_assert_int_eq(cn_filecache_writer_commit(w[1], &r2), 1);
	cn_filecache_close(base);
	check_cache(path, &r2, KEEP_N, KEEP_N, 0);
	check_cache(other, &r2, KEEP_N, KEEP_N, 0);
	struct cn_filecache *fc = open_cache(path);
	struct cn_filecache_entry e, want = keep_entry(123);
	ck_assert_int_eq(cn_filecache_matches(fc, &r1), 0);
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, want.ino, accept_any, NULL, &e), 1);
	ck_assert_int_eq(cn_filecache_entry_equal(&e, &want), 1);
	cn_filecache_close(fc);

	/* the next night: every payload one start marker further on (the
	 * first no-change run after a backup that stored everything) */
	struct cn_filecache_ref r3 = ref("host/a/s3", 3);
	ck_assert_int_eq(next_night(&r3, 16), 1);
	check_cache(path, &r3, KEEP_N, KEEP_N, 16);
	fc = open_cache(path);
	ck_assert_int_eq(cn_filecache_lookup_inode(fc, want.ino, accept_any, NULL, &e), 1);
	ck_assert_uint_eq(e.payload_offset, want.payload_offset + 16);
	cn_filecache_close(fc);

	/* and again, unmoved, from the shifted copy */
	struct cn_filecache_ref r4 = ref("host/a/s4", 4);
	ck_assert_int_eq(next_night(&r4, 0), 1);
	check_cache(path, &r4, KEEP_N, KEEP_N, 16);
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
	for (uint64_t i = 0; i < KEEP_N; i++)
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
	for (uint64_t i = 0; i < KEEP_N; i++)
		keep_i(w, base, i == 5 ? 4 : i, 0);
	ck_assert_int_eq(cn_filecache_writer_commit(w, &r2), 0);
	cn_filecache_close(base);
	check_cache(path, &r2, 5, KEEP_N, 0);
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
	for (uint64_t i = 0; i < KEEP_N; i++)
		keep_i(w, base, i, 16);
	cn_filecache_writer_abort(w);
	cn_filecache_close(base);
	check_cache(path, &r1, KEEP_N, KEEP_N, 0);

	/* killed: a half-written PATH.new stays; the cache is still s1's,
	 * and the next writer replaces the leftover */
	char tmp[PATH_MAX + 90];
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "half a cache", 12), 12);
	close(fd);
	check_cache(path, &r1, KEEP_N, KEEP_N, 0);
	struct cn_filecache_ref r2 = ref("host/a/s2", 2);
	ck_assert_int_eq(next_night(&r2, 16), 1);
	check_cache(path, &r2, KEEP_N, KEEP_N, 16);
	ck_assert_int_ne(access(tmp, F_OK), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("filecache");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_abort_keeps_old);
	tcase_add_test(tc, test_inode_lookup);
	tcase_add_test(tc, test_damaged);
	tcase_add_test(tc, test_two_batches);
	suite_add_tcase(s, tc);
	TCase *keep = tcase_create("keep");
	tcase_add_checked_fixture(keep, setup, teardown);
	tcase_set_timeout(keep, 120);
	tcase_add_test(keep, test_keep_all_copies);
	tcase_add_test(keep, test_keep_some_writes);
	tcase_add_test(keep, test_keep_duplicate_not_copied);
	tcase_add_test(keep, test_failed_run_keeps_previous);
	suite_add_tcase(s, keep);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
