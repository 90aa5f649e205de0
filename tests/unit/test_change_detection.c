/* Metadata change detection end to end, without a datastore: a small
 * chunk store (files named by digest), the payload stream chunked with
 * the real chunker and forced cuts where previous chunks are injected, a
 * dynamic index per snapshot, restore by reassembling the payload stream
 * from the index and extracting. Checks what the issue asks: unchanged
 * files are not read and their chunks are reused; in-place edits with the
 * mtime put back and replacements with the same size and mtime are read
 * again; a cache of a pruned snapshot is not trusted; a damaged or
 * deleted cache makes every file read; every restore is byte-identical. */
#include "cn_test.h"
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunker/cn_chunker.h"
#include "common/cn_util.h"
#include "engine/cn_pxar_extract.h"
#include "engine/cn_reuse.h"
#include "engine/cn_walker.h"
#include "store/cn_crypt.h"
#include "store/cn_index.h"

static char tmp[PATH_MAX], src[PATH_MAX + 16], store[PATH_MAX + 16], cache[PATH_MAX + 128];

/* ---- chunk store and payload sink ---- */

struct sink {
	struct cn_chunker *ch;
	struct cn_buf pending;
	struct cn_index_entry *ents;
	size_t n, cap;
	uint64_t pos;
	uint64_t new_bytes, injected;
};

static void chunk_path(const uint8_t d[32], char *out, size_t len)
{
	char hex[65];
	cn_hex_encode(d, 32, hex);
	snprintf(out, len, "%s/%s", store, hex);
}

static void add_ent(struct sink *s, uint64_t end, const uint8_t d[32])
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->ents = realloc(s->ents, s->cap * sizeof(*s->ents));
		ck_assert_ptr_nonnull(s->ents);
	}
	s->ents[s->n].end_offset = end;
	memcpy(s->ents[s->n].digest, d, 32);
	s->n++;
}

static void emit_chunk(struct sink *s, const uint8_t *data, size_t len)
{
	uint8_t d[32];
	char p[PATH_MAX + 200];
	ck_assert_int_eq(cn_chunk_digest(NULL, data, len, d), 0);
	chunk_path(d, p, sizeof(p));
	if (access(p, F_OK) != 0) {
		ck_assert_int_eq(cn_write_file_atomic(p, data, len, 0644, 0), 0);
		s->new_bytes += len;
	}
	s->pos += len;
	add_ent(s, s->pos, d);
}

static int sink_write(void *ctx, const uint8_t *data, size_t len)
{
	struct sink *s = ctx;
	while (len) {
		size_t p = cn_chunker_scan(s->ch, data, len);
		if (p == 0) {
			cn_buf_append(&s->pending, data, len);
			return 0;
		}
		cn_buf_append(&s->pending, data, p);
		emit_chunk(s, s->pending.data, s->pending.len);
		s->pending.len = 0;
		data += p;
		len -= p;
	}
	return 0;
}

static void sink_cut(struct sink *s)
{
	if (s->pending.len)
		emit_chunk(s, s->pending.data, s->pending.len);
	s->pending.len = 0;
	cn_chunker_reset(s->ch);
}

static int sink_boundary(void *ctx, uint64_t offset)
{
	struct sink *s = ctx;
	ck_assert_uint_eq(offset, s->pos + s->pending.len);
	if (s->pending.len >= cn_chunker_min_size(s->ch))
		sink_cut(s);
	return 0;
}

static int sink_inject(void *ctx, const struct cn_pxar_reused_chunk *c, size_t n)
{
	struct sink *s = ctx;
	sink_cut(s);
	for (size_t i = 0; i < n; i++) {
		char p[PATH_MAX + 200];
		chunk_path(c[i].digest, p, sizeof(p));
		ck_assert_int_eq(access(p, F_OK), 0); /* reused chunks exist */
		s->pos += c[i].size;
		s->injected += c[i].size;
		add_ent(s, s->pos, c[i].digest);
	}
	return 0;
}

/* ---- snapshots ---- */

struct snap {
	char name[32];
	struct cn_buf mpxar;
	struct cn_index *pidx;
	struct cn_filecache_ref ref;
	struct cn_pxar_create_stats st;
	uint64_t new_bytes, injected;
	enum cn_reuse_cache_state cache_state;
};

static int mem_sink(void *ctx, const uint8_t *d, size_t l)
{
	return cn_buf_append(ctx, d, l);
}

/* metadata: 1 = metadata mode with prev (may be NULL), 0 = data mode */
static void backup(struct snap *out, const char *name, const struct snap *prev, int metadata)
{
	struct sink s = { 0 };
	struct cn_reuse *r = NULL;
	const struct cn_pxar_reuse *ops = NULL;
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", name);
	ck_assert_int_eq(cn_chunker_new(64u << 10, &s.ch), 0);
	if (metadata) {
		ck_assert_int_eq(cn_reuse_begin(cache, prev ? &prev->ref : NULL, prev ? prev->pidx : NULL,
						sink_inject, &s, &r, &ops), 0);
		out->cache_state = cn_reuse_cache_state(r);
	}
	struct cn_pxar_create_opts o = { .payload_out = sink_write, .payload_ctx = &s, .reuse = ops,
					 .payload_boundary = sink_boundary };
	ck_assert_int_eq(cn_pxar_create(src, &o, mem_sink, &out->mpxar, NULL, &out->st), 0);
	sink_cut(&s);
	ck_assert_uint_eq(s.pos, out->st.payload_size + s.injected);

	struct cn_index_writer *iw;
	struct cn_buf ib = { 0 };
	ck_assert_int_eq(cn_index_writer_new(CN_INDEX_DYNAMIC, NULL, 0, 0, 0, &iw), 0);
	ck_assert_int_eq(cn_index_writer_append(iw, s.ents, s.n), 0);
	ck_assert_int_eq(cn_index_writer_finish(iw, &ib, out->ref.payload_csum), 0);
	cn_index_writer_free(iw);
	ck_assert_int_eq(cn_index_parse(ib.data, ib.len, &out->pidx), 0);
	cn_buf_free(&ib);
	out->ref.snapshot = out->name;
	if (r) {
		ck_assert_int_eq(cn_reuse_commit(r, &out->ref, NULL), 0);
		cn_reuse_free(r);
	}
	out->new_bytes = s.new_bytes;
	out->injected = s.injected;
	cn_chunker_free(s.ch);
	cn_buf_free(&s.pending);
	free(s.ents);
}

static void snap_free(struct snap *s)
{
	cn_buf_free(&s->mpxar);
	cn_index_free(s->pidx);
	s->pidx = NULL;
}

static void restore_and_compare(const struct snap *s)
{
	struct cn_buf pay = { 0 };
	for (size_t i = 0; i < cn_index_count(s->pidx); i++) {
		uint8_t d[32];
		uint64_t a, b;
		char p[PATH_MAX + 200];
		cn_index_entry(s->pidx, i, &a, &b, d);
		chunk_path(d, p, sizeof(p));
		int fd = open(p, O_RDONLY);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(cn_buf_reserve(&pay, b - a), 0);
		ck_assert_int_eq(cn_read_full(fd, pay.data + pay.len, b - a), 0);
		pay.len += b - a;
		close(fd);
	}
	struct cn_pxar_input in, pin;
	char out[PATH_MAX + 64], cmd[4 * PATH_MAX];
	snprintf(out, sizeof(out), "%s/restore-%s", tmp, s->name);
	cn_pxar_input_mem(&in, s->mpxar.data, s->mpxar.len);
	cn_pxar_input_mem(&pin, pay.data, pay.len);
	struct cn_pxar_extract_opts xo = { .payload = &pin, .strict = 1 };
	ck_assert_int_eq(cn_pxar_extract(&in, out, &xo, NULL), 0);
	snprintf(cmd, sizeof(cmd), "diff -r --no-dereference '%s' '%s'", src, out);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", out);
	ck_assert_int_eq(system(cmd), 0);
	cn_buf_free(&pay);
}

/* ---- corpus ---- */

static uint64_t corpus_bytes, corpus_files;

static void put(const char *rel, size_t size, unsigned seed)
{
	char p[2 * PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", src, rel);
	uint8_t *b = malloc(size ? size : 1);
	/* splitmix64: files of different seeds share no runs of bytes (an
	 * LCG's high byte would repeat every 2^24 bytes, so files would
	 * deduplicate against each other) */
	uint64_t x = (uint64_t)seed << 32;
	for (size_t i = 0; i < size; i++) {
		uint64_t z = (x += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		b[i] = (uint8_t)((z ^ (z >> 31)) >> 56);
	}
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, b, size), (ssize_t)size);
	close(fd);
	free(b);
}

static void mkd(const char *rel)
{
	char p[2 * PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", src, rel);
	ck_assert_int_eq(mkdir(p, 0755), 0);
}

static void setup(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmp, sizeof(tmp), "%s/cn_cdet_XXXXXX", base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(src, sizeof(src), "%s/src", tmp);
	snprintf(store, sizeof(store), "%s/chunks", tmp);
	ck_assert_int_eq(mkdir(src, 0755), 0);
	ck_assert_int_eq(mkdir(store, 0755), 0);
	ck_assert_int_eq(cn_filecache_path(tmp, "local:/store", "root.pxar", cache, sizeof(cache)), 0);
	corpus_bytes = corpus_files = 0;
	static const char *dirs[] = { "photos", "photos/2024", "photos/2025", "docs", "empty" };
	for (size_t i = 0; i < 5; i++)
		mkd(dirs[i]);
	for (unsigned i = 0; i < 60; i++) {
		char rel[64];
		size_t size = (i % 7 == 0) ? 0 : (size_t)((i * 7919u) % 300000u) + (i % 3) * 100000u;
		snprintf(rel, sizeof(rel), "%s/f%03u.bin", dirs[i % 4], i);
		put(rel, size, i);
		corpus_bytes += size;
		corpus_files++;
	}
	char a[2 * PATH_MAX];
	snprintf(a, sizeof(a), "%s/docs/link", src);
	ck_assert_int_eq(symlink("../photos/f000.bin", a), 0);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- tests ---- */

START_TEST(test_no_change)
{
	struct snap s1, s2;
	backup(&s1, "s1", NULL, 1);
	ck_assert_int_eq(s1.cache_state, CN_REUSE_CACHE_NONE);
	ck_assert_uint_eq(s1.st.bytes_read, corpus_bytes);
	ck_assert_uint_eq(s1.st.files_reused, 0);
	restore_and_compare(&s1);

	backup(&s2, "s2", &s1, 1);
	ck_assert_int_eq(s2.cache_state, CN_REUSE_CACHE_VALID);
	ck_assert_uint_eq(s2.st.bytes_read, 0);
	ck_assert_uint_eq(s2.st.files_reused, corpus_files);
	ck_assert_uint_eq(s2.st.files_reencoded, 0);
	/* every data chunk reused; new are only the two 16-byte chunks cut
	 * off at the first injection (start marker) and the end (tail marker) */
	ck_assert_uint_eq(s2.new_bytes, 32);
	ck_assert_uint_ge(s2.injected, corpus_bytes);
	/* the metadata archive is the same as a fresh one's */
	ck_assert_uint_eq(s2.mpxar.len, s1.mpxar.len);
	restore_and_compare(&s2);

	/* a third run from the second: still nothing read */
	struct snap s3;
	backup(&s3, "s3", &s2, 1);
	ck_assert_uint_eq(s3.st.bytes_read, 0);
	ck_assert_uint_eq(s3.new_bytes, 0);
	restore_and_compare(&s3);
	snap_free(&s1);
	snap_free(&s2);
	snap_free(&s3);
}
END_TEST

static void stat_of(const char *rel, struct stat *st)
{
	char p[2 * PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", src, rel);
	ck_assert_int_eq(lstat(p, st), 0);
}

static void set_mtime(const char *rel, const struct stat *like)
{
	char p[2 * PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", src, rel);
	struct timespec ts[2] = { like->st_atim, like->st_mtim };
	ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* in place, same size, mtime put back: only ctime tells */
START_TEST(test_inplace_mtime_restored)
{
	struct snap s1, s2;
	struct stat before, after;
	const char *victim = "photos/2024/f005.bin";
	backup(&s1, "s1", NULL, 1);
	stat_of(victim, &before);
	ck_assert_int_gt(before.st_size, 0);
	usleep(20000); /* a ctime that differs even on coarse clocks */
	put(victim, (size_t)before.st_size, 777);
	set_mtime(victim, &before);
	stat_of(victim, &after);
	ck_assert_int_eq(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
	ck_assert_int_eq(after.st_ino, before.st_ino);

	backup(&s2, "s2", &s1, 1);
	ck_assert_int_eq(s2.cache_state, CN_REUSE_CACHE_VALID);
	ck_assert_uint_eq(s2.st.files_reencoded, 1);
	/* read once to compare with the previous content, once to store */
	ck_assert_uint_eq(s2.st.files_compared, 0);
	ck_assert_uint_eq(s2.st.bytes_read, 2 * (uint64_t)before.st_size);
	ck_assert_uint_eq(s2.st.files_reused, corpus_files - 1);
	restore_and_compare(&s2);
	snap_free(&s1);
	snap_free(&s2);
}
END_TEST

/* replaced by another file of the same size and mtime: new inode */
START_TEST(test_replaced_same_size_mtime)
{
	struct snap s1, s2;
	struct stat before, after;
	const char *victim = "docs/f003.bin", *tmpname = "docs/.new";
	backup(&s1, "s1", NULL, 1);
	stat_of(victim, &before);
	put(tmpname, (size_t)before.st_size, 4242);
	set_mtime(tmpname, &before);
	char a[2 * PATH_MAX], b[2 * PATH_MAX];
	snprintf(a, sizeof(a), "%s/%s", src, tmpname);
	snprintf(b, sizeof(b), "%s/%s", src, victim);
	ck_assert_int_eq(rename(a, b), 0);
	stat_of(victim, &after);
	ck_assert_int_ne(after.st_ino, before.st_ino);
	ck_assert_int_eq(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
	ck_assert_int_eq(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);

	backup(&s2, "s2", &s1, 1);
	ck_assert_uint_eq(s2.st.files_reencoded, 1);
	ck_assert_uint_eq(s2.st.files_compared, 0);
	ck_assert_uint_eq(s2.st.bytes_read, 2 * (uint64_t)before.st_size);
	restore_and_compare(&s2);
	snap_free(&s1);
	snap_free(&s2);
}
END_TEST

/* The cache was written for s2; s2 is pruned, so the target's previous
 * snapshot is s1 again: the cache must not be trusted (it holds s2's
 * payload offsets), and every file is read. */
START_TEST(test_pruned_previous)
{
	struct snap s1, s2, s3, s4;
	backup(&s1, "s1", NULL, 1);
	put("photos/new.bin", 123456, 99); /* s2 differs from s1 */
	corpus_bytes += 123456;
	corpus_files++;
	backup(&s2, "s2", &s1, 1);
	ck_assert_int_eq(s2.cache_state, CN_REUSE_CACHE_VALID);
	/* prune s2: s1 is the previous snapshot now */
	backup(&s3, "s3", &s1, 1);
	ck_assert_int_eq(s3.cache_state, CN_REUSE_CACHE_STALE);
	ck_assert_uint_eq(s3.st.files_reused, 0);
	ck_assert_uint_eq(s3.st.bytes_read, corpus_bytes);
	restore_and_compare(&s3);
	/* and the run after that trusts the cache s3 wrote */
	backup(&s4, "s4", &s3, 1);
	ck_assert_int_eq(s4.cache_state, CN_REUSE_CACHE_VALID);
	ck_assert_uint_eq(s4.st.bytes_read, 0);
	restore_and_compare(&s4);
	snap_free(&s1);
	snap_free(&s2);
	snap_free(&s3);
	snap_free(&s4);
}
END_TEST

/* A backup whose cache did not describe the previous snapshot, reading
 * expect_read bytes, restored and compared. */
static void backup_stale(struct snap *s, const char *name, const struct snap *prev, uint64_t expect_read)
{
	backup(s, name, prev, 1);
	ck_assert_int_eq(s->cache_state, CN_REUSE_CACHE_STALE);
	ck_assert_uint_eq(s->st.bytes_read, expect_read);
	restore_and_compare(s);
}

/* a damaged cache file, then a deleted one: every file read, backup correct */
START_TEST(test_damaged_and_deleted_cache)
{
	struct snap s1, s2, s3;
	backup(&s1, "s1", NULL, 1);
	int fd = open(cache, O_RDWR);
	ck_assert_int_ge(fd, 0);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	uint8_t junk[4096];
	memset(junk, 0x5a, sizeof(junk));
	ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), st.st_size / 2), (ssize_t)sizeof(junk));
	close(fd);
	backup_stale(&s2, "s2", &s1, corpus_bytes);
	ck_assert_int_eq(unlink(cache), 0);
	backup_stale(&s3, "s3", &s2, corpus_bytes);
	snap_free(&s1);
	snap_free(&s2);
	snap_free(&s3);
}
END_TEST

/* A hardlinked file is reused at its first link; the other link stays a
 * hardlink entry; editing the file makes both read (once) again. */
START_TEST(test_hardlinks_reused)
{
	struct snap s1, s2, s3;
	char a[2 * PATH_MAX], b[2 * PATH_MAX];
	snprintf(a, sizeof(a), "%s/photos/2025/f002.bin", src);
	snprintf(b, sizeof(b), "%s/docs/zz-link.bin", src);
	ck_assert_int_eq(link(a, b), 0);
	backup(&s1, "s1", NULL, 1);
	ck_assert_uint_eq(s1.st.bytes_read, corpus_bytes);
	ck_assert_uint_eq(s1.st.hardlinks, 1);
	backup(&s2, "s2", &s1, 1);
	ck_assert_uint_eq(s2.st.bytes_read, 0);
	ck_assert_uint_eq(s2.st.files_reused, corpus_files);
	ck_assert_uint_eq(s2.st.hardlinks, 1);
	ck_assert_uint_le(s2.new_bytes, 64);
	restore_and_compare(&s2);
	struct stat st;
	ck_assert_int_eq(stat(a, &st), 0);
	int fd = open(b, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "edited", 6, 0), 6);
	close(fd);
	backup(&s3, "s3", &s2, 1);
	ck_assert_uint_eq(s3.st.bytes_read, (uint64_t)st.st_size);
	ck_assert_uint_eq(s3.st.hardlinks, 1);
	restore_and_compare(&s3);
	snap_free(&s1);
	snap_free(&s2);
	snap_free(&s3);
}
END_TEST

/* Renamed folders (one now sorted first): their files are found by
 * inode, not read, and their previous chunks reused. */
START_TEST(test_renamed_not_read)
{
	struct snap s1, s2;
	backup(&s1, "s1", NULL, 1);
	char a[2 * PATH_MAX], b[2 * PATH_MAX];
	snprintf(a, sizeof(a), "%s/photos/2025", src);
	snprintf(b, sizeof(b), "%s/photos/2025-moved", src);
	ck_assert_int_eq(rename(a, b), 0);
	snprintf(a, sizeof(a), "%s/docs", src);
	snprintf(b, sizeof(b), "%s/archive-docs", src);
	ck_assert_int_eq(rename(a, b), 0);
	backup(&s2, "s2", &s1, 1);
	ck_assert_uint_eq(s2.st.bytes_read, 0);
	ck_assert_uint_eq(s2.st.files_reused, corpus_files);
	ck_assert_uint_le(s2.new_bytes, 64);
	restore_and_compare(&s2);
	snap_free(&s1);
	snap_free(&s2);
}
END_TEST

/* A day of change: new files, a renamed folder, metadata-only changes, an
 * append. New stored payload stays near the bytes actually changed. */
START_TEST(test_day_of_change)
{
	struct snap s1, s2;
	backup(&s1, "s1", NULL, 1);
	uint64_t changed = 0;
	put("photos/2025/new1.bin", 200000, 1001);
	put("photos/2025/new2.bin", 150000, 1002);
	changed += 350000;
	char a[2 * PATH_MAX], b[2 * PATH_MAX];
	snprintf(a, sizeof(a), "%s/photos/2024", src);
	snprintf(b, sizeof(b), "%s/photos/2024-renamed", src);
	ck_assert_int_eq(rename(a, b), 0);
	snprintf(a, sizeof(a), "%s/docs/f019.bin", src);
	ck_assert_int_eq(chmod(a, 0600), 0); /* metadata only */
	snprintf(a, sizeof(a), "%s/docs/f011.bin", src);
	int fd = open(a, O_WRONLY | O_APPEND);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "appended", 8), 8);
	close(fd);
	struct stat ap;
	ck_assert_int_eq(stat(a, &ap), 0);
	changed += (uint64_t)ap.st_size;
	backup(&s2, "s2", &s1, 1);
	restore_and_compare(&s2);
	/* the renamed folder's files are found by inode and not read; the
	 * chmod'ed file is read once to compare, and its data reused: new
	 * payload is the new and appended files (each in chunks of its own,
	 * cut at injections), not the renamed or chmod'ed ones */
	snprintf(a, sizeof(a), "%s/docs/f019.bin", src);
	ck_assert_int_eq(stat(a, &ap), 0);
	ck_assert_uint_eq(s2.st.files_compared, 1);
	/* the new and the appended files, and neighbours of the appended one
	 * whose reuse would need too much padding (upstream's threshold) */
	ck_assert_uint_ge(s2.st.files_reencoded, 3);
	ck_assert_uint_le(s2.st.files_reencoded, 6);
	ck_assert_uint_eq(s2.st.bytes_read, s2.st.reencoded_bytes - CN_PXAR_HEADER_SIZE * s2.st.files_reencoded +
						    (uint64_t)ap.st_size);
	ck_assert_uint_le(s2.new_bytes, changed + changed / 10);
	ck_assert_uint_ge(s2.new_bytes, 350000);
	snap_free(&s1);
	snap_free(&s2);
}
END_TEST

/* data mode reads everything and needs no cache */
START_TEST(test_data_mode)
{
	struct snap s1, s2;
	backup(&s1, "s1", NULL, 0);
	backup(&s2, "s2", &s1, 0);
	ck_assert_uint_eq(s2.st.bytes_read, corpus_bytes);
	ck_assert_uint_eq(s2.new_bytes, 0); /* same data, same chunks */
	ck_assert_int_eq(access(cache, F_OK), -1);
	restore_and_compare(&s2);
	snap_free(&s1);
	snap_free(&s2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("change_detection");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_no_change);
	tcase_add_test(tc, test_inplace_mtime_restored);
	tcase_add_test(tc, test_replaced_same_size_mtime);
	tcase_add_test(tc, test_pruned_previous);
	tcase_add_test(tc, test_damaged_and_deleted_cache);
	tcase_add_test(tc, test_renamed_not_read);
	tcase_add_test(tc, test_hardlinks_reused);
	tcase_add_test(tc, test_day_of_change);
	tcase_add_test(tc, test_data_mode);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
