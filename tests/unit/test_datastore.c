/* Local datastore: layout, chunk insert/read, LMDB index recovery, snapshot
 * writer, crash and ENOSPC behaviour, GC grace, verify, and backup + GC +
 * prune running concurrently in separate processes. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_snapshot.h"
#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_crc32.h"
#include "store/cn_crypt.h"
#include "store/cn_datastore.h"
#include "store/cn_gc.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"
#include "store/cn_prune.h"
#include "store/cn_verify.h"
#include "cn_test.h"

/* ---- helpers ---- */

/* A fresh directory, on its own tmpfs when we may mount (root): creating
 * the 65536 chunk directories is then ~1 s instead of many on a busy disk.
 * The behaviour under test does not depend on the filesystem. */
static void make_tmpdir(char *dir, size_t size)
{
	snprintf(dir, size, "/tmp/cn_ds_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	mount("tmpfs", dir, "tmpfs", 0, "size=256m");
}

static void rm_rf(const char *dir)
{
	char cmd[512];
	umount2(dir, MNT_DETACH);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static struct cn_datastore *open_store(const char *root, int create, enum cn_sync_level lvl)
{
	struct cn_datastore *ds;
	struct cn_datastore_opts o;
	cn_datastore_opts_init(&o);
	o.sync_level = lvl;
	int r = cn_datastore_open(root, create, &o, &ds);
	ck_assert_msg(r == 0, "open %s: %s", root, cn_error_message());
	return ds;
}

/* A real encoded chunk with pseudo-random (incompressible) content. */
static struct cn_chunk *make_chunk(uint32_t seed, size_t len)
{
	uint8_t *data = malloc(len);
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		data[i] = (uint8_t)x;
	}
	struct cn_chunk *c;
	ck_assert_int_eq(cn_blob_encode_chunk(data, len, NULL, CN_BLOB_COMPRESS_NONE, &c), 0);
	free(data);
	return c;
}

static int insert(struct cn_datastore *ds, const struct cn_chunk *c, int *was_new)
{
	return cn_datastore_insert_chunk(ds, c->digest, c->data, c->len, was_new);
}

/* Writes a snapshot holding one .didx over the chunks plus the manifest
 * (chunks must already be in the store). Returns the publish result. */
static int write_snapshot_w(struct cn_ds_snapshot *w, const struct cn_snapshot_id *id,
			    struct cn_chunk **chunks, size_t n)
{
	int r;
	struct cn_index_writer *iw;
	ck_assert_int_eq(cn_index_writer_new(CN_INDEX_DYNAMIC, NULL, id->time, 0, 0, &iw), 0);
	uint64_t off = 0;
	for (size_t i = 0; i < n; i++) {
		struct cn_index_entry e;
		off += chunks[i]->plain_size;
		e.end_offset = off;
		memcpy(e.digest, chunks[i]->digest, 32);
		ck_assert_int_eq(cn_index_writer_append(iw, &e, 1), 0);
	}
	struct cn_buf idx = {0}, man = {0};
	uint8_t csum[32];
	ck_assert_int_eq(cn_index_writer_finish(iw, &idx, csum), 0);
	cn_index_writer_free(iw);
	struct cn_manifest *m;
	ck_assert_int_eq(cn_manifest_new(id, &m), 0);
	ck_assert_int_eq(cn_manifest_add_file(m, "root.pxar.didx", off, csum, CN_CRYPT_MODE_NONE), 0);
	ck_assert_int_eq(cn_manifest_encode(m, NULL, &man), 0);
	cn_manifest_free(m);
	r = cn_datastore_snapshot_write_file(w, "root.pxar.didx", idx.data, idx.len);
	if (r == 0)
		r = cn_datastore_snapshot_write_file(w, CN_MANIFEST_BLOB_NAME, man.data, man.len);
	cn_buf_free(&idx);
	cn_buf_free(&man);
	if (r < 0) {
		cn_datastore_snapshot_abort(w);
		return r;
	}
	return cn_datastore_snapshot_publish(w);
}

static int write_snapshot(struct cn_datastore *ds, const struct cn_snapshot_id *id,
			  struct cn_chunk **chunks, size_t n)
{
	struct cn_ds_snapshot *w;
	int r = cn_datastore_snapshot_begin(ds, id, &w);
	return r < 0 ? r : write_snapshot_w(w, id, chunks, n);
}

static void chunk_file(struct cn_datastore *ds, const uint8_t *digest, char *out, size_t size)
{
	cn_datastore_chunk_path(ds, digest, out, size);
}

/* Writes chunk c into the store at root behind cairn's back (what PBS's own
 * backups or a copy would do). */
static void plant_chunk(const char *root, const struct cn_chunk *c)
{
	char hex[65], p[4096];
	cn_hex_encode(c->digest, 32, hex);
	snprintf(p, sizeof(p), "%s/.chunks/%.4s/%s", root, hex, hex);
	ck_assert_int_eq(cn_write_file_atomic(p, c->data, c->len, 0644, 0), 0);
}

static int file_exists(const char *p)
{
	return access(p, F_OK) == 0;
}

static void set_atime(struct cn_datastore *ds, const uint8_t *digest, int64_t t)
{
	char p[4096];
	chunk_file(ds, digest, p, sizeof(p));
	struct timespec ts[2] = {{.tv_sec = t}, {.tv_nsec = UTIME_OMIT}};
	ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static int64_t get_atime(struct cn_datastore *ds, const uint8_t *digest)
{
	char p[4096];
	struct stat st;
	chunk_file(ds, digest, p, sizeof(p));
	ck_assert_int_eq(stat(p, &st), 0);
	return st.st_atime;
}

/* Names in a chunk prefix directory that are not exactly a digest. */
static int count_strays(struct cn_datastore *ds, const uint8_t *digest)
{
	char p[4096];
	chunk_file(ds, digest, p, sizeof(p));
	*strrchr(p, '/') = '\0';
	DIR *d = opendir(p);
	ck_assert_ptr_nonnull(d);
	struct dirent *e;
	int n = 0;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && strlen(e->d_name) != 64)
			n++;
	closedir(d);
	return n;
}

/* A new store at <fresh tmpdir>/store, all its directories made (the
 * tests look at them, and fork); dir and root receive the paths. */
static struct cn_datastore *new_store(char dir[64], char root[128], enum cn_sync_level lvl)
{
	make_tmpdir(dir, 64);
	snprintf(root, 128, "%s/store", dir);
	struct cn_datastore *ds = open_store(root, 1, lvl);
	ck_assert_int_eq(cn_datastore_layout_wait(ds), 0);
	return ds;
}

/* Opens the store in a forked child (no Check assertions there). */
static struct cn_datastore *open_child_store(const char *root, int skip_index_check)
{
	struct cn_datastore_opts o;
	cn_datastore_opts_init(&o);
	o.sync_level = CN_SYNC_NONE;
	o.skip_index_check = skip_index_check;
	struct cn_datastore *ds;
	return cn_datastore_open(root, 0, &o, &ds) < 0 ? NULL : ds;
}

/* ---- tests ---- */

START_TEST(test_layout_and_chunks)
{
	char dir[64], root[128], p[4096];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_FILE);
	snprintf(p, sizeof(p), "%s/.chunks/0000", root);
	ck_assert(file_exists(p));
	snprintf(p, sizeof(p), "%s/.chunks/ffff", root);
	ck_assert(file_exists(p));
	snprintf(p, sizeof(p), "%s/.lock", root);
	ck_assert(file_exists(p));
	snprintf(p, sizeof(p), "%s/.cairn/chunkindex.mdb", root);
	ck_assert(file_exists(p));

	struct cn_chunk *c = make_chunk(1, 10000);
	int was_new = -1;
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c->digest), 0);
	ck_assert_int_eq(insert(ds, c, &was_new), 0);
	ck_assert_int_eq(was_new, 1);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c->digest), 1);
	char hex[65];
	cn_hex_encode(c->digest, 32, hex);
	snprintf(p, sizeof(p), "%s/.chunks/%.4s/%s", root, hex, hex);
	ck_assert(file_exists(p));
	/* re-insert: no-op that refreshes the atime */
	set_atime(ds, c->digest, 1000000);
	ck_assert_int_eq(insert(ds, c, &was_new), 0);
	ck_assert_int_eq(was_new, 0);
	ck_assert_int_ge(get_atime(ds, c->digest), time(NULL) - 60);
	struct cn_buf b = {0};
	ck_assert_int_eq(cn_datastore_read_chunk(ds, c->digest, &b), 0);
	ck_assert_uint_eq(b.len, c->len);
	ck_assert_mem_eq(b.data, c->data, c->len);
	cn_buf_free(&b);
	struct cn_chunk *missing = make_chunk(2, 100);
	ck_assert_int_eq(cn_datastore_read_chunk(ds, missing->digest, &b), -ENOENT);
	ck_assert_int_eq(cn_datastore_touch_chunk(ds, missing->digest), -ENOENT);
	cn_datastore_close(ds);

	/* creating over an existing store fails as upstream; a non-store fails to open */
	struct cn_datastore *ds2;
	ck_assert_int_eq(cn_datastore_open(root, 1, NULL, &ds2), -EEXIST);
	ck_assert_int_lt(cn_datastore_open(dir, 0, NULL, &ds2), 0);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "not a datastore"));
	cn_chunk_unref(c);
	cn_chunk_unref(missing);
	rm_rf(dir);
}
END_TEST

struct thread_arg {
	struct cn_datastore *ds;
	struct cn_chunk **chunks;
	int n;
	int errors;
	int news;
};

static void *insert_thread(void *p)
{
	struct thread_arg *a = p;
	struct cn_buf b = {0};
	for (int i = 0; i < a->n; i++) {
		int was_new;
		if (insert(a->ds, a->chunks[i], &was_new) < 0)
			a->errors++;
		a->news += was_new;
		b.len = 0;
		if (cn_datastore_read_chunk(a->ds, a->chunks[i]->digest, &b) < 0 ||
		    b.len != a->chunks[i]->len || memcmp(b.data, a->chunks[i]->data, b.len))
			a->errors++;
	}
	cn_buf_free(&b);
	return NULL;
}

/* Four threads insert the same chunks at once: each chunk is new exactly once. */
START_TEST(test_threads)
{
	char dir[64], root[128];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	enum { N = 64, T = 4 };
	struct cn_chunk *chunks[N];
	for (int i = 0; i < N; i++)
		chunks[i] = make_chunk(100 + (uint32_t)i, 4096 + (size_t)i * 100);
	pthread_t th[T];
	struct thread_arg args[T];
	for (int t = 0; t < T; t++) {
		args[t] = (struct thread_arg){.ds = ds, .chunks = chunks, .n = N};
		ck_assert_int_eq(pthread_create(&th[t], NULL, insert_thread, &args[t]), 0);
	}
	int news = 0;
	for (int t = 0; t < T; t++) {
		pthread_join(th[t], NULL);
		ck_assert_int_eq(args[t].errors, 0);
		news += args[t].news;
	}
	ck_assert_int_eq(news, N);
	ck_assert_int_eq(cn_datastore_index_count(ds), N);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(count_strays(ds, chunks[i]->digest), 0);
		cn_chunk_unref(chunks[i]);
	}
	cn_datastore_close(ds);
	rm_rf(dir);
}
END_TEST

/* The LMDB index is a cache: deleted, corrupted or out of step with
 * .chunks/ (changes behind cairn's back), it is repaired (each prefix
 * directory when has_chunk first asks about it). */
START_TEST(test_index_recovery)
{
	char dir[64], root[128], mdb[256], p[4096];
	make_tmpdir(dir, sizeof(dir));
	snprintf(root, sizeof(root), "%s/store", dir);
	snprintf(mdb, sizeof(mdb), "%s/.cairn/chunkindex.mdb", root);
	struct cn_datastore *ds = open_store(root, 1, CN_SYNC_NONE);
	enum { N = 20 };
	struct cn_chunk *c[N];
	for (int i = 0; i < N; i++) {
		c[i] = make_chunk(200 + (uint32_t)i, 3000);
		ck_assert_int_eq(insert(ds, c[i], NULL), 0);
	}
	cn_datastore_close(ds);

	/* deleted */
	ck_assert_int_eq(unlink(mdb), 0);
	ds = open_store(root, 0, CN_SYNC_NONE);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(cn_datastore_has_chunk(ds, c[i]->digest), 1);
	ck_assert_int_eq(cn_datastore_index_count(ds), N);
	cn_datastore_close(ds);

	/* corrupted: garbage over the meta pages */
	int fd = open(mdb, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	uint8_t junk[16384];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	ck_assert_int_eq(cn_write_full(fd, junk, sizeof(junk)), 0);
	close(fd);
	ds = open_store(root, 0, CN_SYNC_NONE);
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(cn_datastore_has_chunk(ds, c[i]->digest), 1);
	ck_assert_int_eq(cn_datastore_index_count(ds), N);
	cn_datastore_close(ds);

	/* out of step: a chunk removed and another added behind our back
	 * (what PBS's own GC or a copy would do) */
	ds = open_store(root, 0, CN_SYNC_NONE);
	chunk_file(ds, c[0]->digest, p, sizeof(p));
	cn_datastore_close(ds);
	ck_assert_int_eq(unlink(p), 0);
	struct cn_chunk *extra = make_chunk(299, 2000);
	plant_chunk(root, extra);
	ds = open_store(root, 0, CN_SYNC_NONE);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c[0]->digest), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, extra->digest), 1);
	ck_assert_int_eq(cn_datastore_index_count(ds), N);
	/* nothing stale any more: a second check rescans nothing */
	ck_assert_int_eq(cn_datastore_check_index(ds), 0);
	cn_datastore_close(ds);
	for (int i = 0; i < N; i++)
		cn_chunk_unref(c[i]);
	cn_chunk_unref(extra);
	rm_rf(dir);
}
END_TEST

/* A new store records its empty prefix directories as in step when it is
 * created (no rescan needed), and those records still notice a chunk added
 * behind cairn's back afterwards. */
START_TEST(test_new_store_index)
{
	char dir[64], root[128];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	ck_assert_int_eq(cn_datastore_check_index(ds), 0);
	ck_assert_int_eq(cn_datastore_index_count(ds), 0);
	cn_datastore_close(ds);
	struct cn_chunk *extra = make_chunk(301, 2500);
	plant_chunk(root, extra);
	ds = open_store(root, 0, CN_SYNC_NONE);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, extra->digest), 1);
	ck_assert_int_eq(cn_datastore_index_count(ds), 1);
	ck_assert_int_eq(cn_datastore_check_index(ds), 0);
	cn_datastore_close(ds);
	cn_chunk_unref(extra);
	rm_rf(dir);
}
END_TEST

/* The first snapshot of a store just created, published without waiting
 * for its helper thread (as a first backup does): once published, every
 * prefix directory and the mark exist, and after close the index records
 * every directory as in step (recorded after the publish, before close),
 * the inserted chunks among them. */
START_TEST(test_publish_into_new_store)
{
	char dir[64], root[128], p[4096];
	make_tmpdir(dir, sizeof(dir));
	snprintf(root, sizeof(root), "%s/store", dir);
	struct cn_datastore *ds = open_store(root, 1, CN_SYNC_FILESYSTEM);
	struct cn_chunk *c[3];
	for (int i = 0; i < 3; i++) {
		c[i] = make_chunk(700 + (uint32_t)i, 3000);
		ck_assert_int_eq(insert(ds, c[i], NULL), 0);
	}
	struct cn_snapshot_id id = {.type = "host", .id = "first", .time = 1714528800};
	ck_assert_msg(write_snapshot(ds, &id, c, 3) == 0, "%s", cn_error_message());
	snprintf(p, sizeof(p), "%s/host/first/2024-05-01T02:00:00Z/index.json.blob", root);
	ck_assert(file_exists(p));
	for (unsigned x = 0; x < 0x10000; x += 0x1111) {
		snprintf(p, sizeof(p), "%s/.chunks/%04x", root, x);
		ck_assert_msg(file_exists(p), "%s missing after the first publish", p);
	}
	snprintf(p, sizeof(p), "%s/.cairn/layout-complete", root);
	ck_assert(file_exists(p));
	cn_datastore_close(ds);
	ds = open_store(root, 0, CN_SYNC_NONE);
	ck_assert_int_eq(cn_datastore_check_index(ds), 0);
	ck_assert_int_eq(cn_datastore_index_count(ds), 3);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(cn_datastore_has_chunk(ds, c[i]->digest), 1);
		cn_chunk_unref(c[i]);
	}
	cn_datastore_close(ds);
	rm_rf(dir);
}
END_TEST

START_TEST(test_snapshot_writer)
{
	char dir[64], root[128], p[4096];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_FILESYSTEM);
	struct cn_chunk *c[3];
	for (int i = 0; i < 3; i++) {
		c[i] = make_chunk(300 + (uint32_t)i, 5000);
		ck_assert_int_eq(insert(ds, c[i], NULL), 0);
	}
	struct cn_snapshot_id id = {.ns = "team/a", .type = "host", .id = "nas", .time = 1714528800};
	ck_assert_msg(write_snapshot(ds, &id, c, 3) == 0, "%s", cn_error_message());
	snprintf(p, sizeof(p), "%s/ns/team/ns/a/host/nas/2024-05-01T02:00:00Z/index.json.blob", root);
	ck_assert(file_exists(p));
	snprintf(p, sizeof(p), "%s/ns/team/ns/a/host/nas/2024-05-01T02:00:00Z/root.pxar.didx", root);
	ck_assert(file_exists(p));
	uint8_t *owner;
	size_t olen;
	snprintf(p, sizeof(p), "%s/ns/team/ns/a/host/nas/owner", root);
	ck_assert_int_eq(cn_read_file(p, 100, &owner, &olen), 0);
	ck_assert_uint_eq(olen, 9);
	ck_assert_mem_eq(owner, "root@pam\n", 9);
	free(owner);

	/* listing */
	char **nss;
	size_t n;
	ck_assert_int_eq(cn_datastore_list_namespaces(ds, "", &nss, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(nss[0], "team");
	cn_datastore_free_names(nss, n);
	ck_assert_int_eq(cn_datastore_list_namespaces(ds, "team", &nss, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(nss[0], "team/a");
	cn_datastore_free_names(nss, n);
	struct cn_snapshot_id *groups;
	ck_assert_int_eq(cn_datastore_list_groups(ds, "team/a", &groups, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(groups[0].id, "nas");
	free(groups);
	ck_assert_int_eq(cn_datastore_list_groups(ds, "", &groups, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(groups);

	/* a second snapshot; an older time is refused; a concurrent writer
	 * of the same group is locked out */
	struct cn_snapshot_id id2 = id;
	id2.time += 3600;
	struct cn_ds_snapshot *w, *w2;
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id2, &w), 0);
	struct cn_snapshot_id id3 = id2;
	id3.time += 10;
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id3, &w2), -CN_E_LOCKED);
	/* publish without a manifest fails and leaves nothing */
	ck_assert_int_eq(cn_datastore_snapshot_publish(w), -EINVAL);
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id2, &w), 0);
	ck_assert_int_eq(cn_datastore_snapshot_write_file(w, "../x.blob", (const uint8_t *)"x", 1),
			 -CN_E_PATH);
	/* an index referencing a chunk that is not stored is refused */
	struct cn_chunk *absent = make_chunk(399, 100);
	struct cn_index_writer *iw;
	struct cn_buf idx = {0};
	struct cn_index_entry e = {.end_offset = 100};
	memcpy(e.digest, absent->digest, 32);
	ck_assert_int_eq(cn_index_writer_new(CN_INDEX_DYNAMIC, NULL, 0, 0, 0, &iw), 0);
	ck_assert_int_eq(cn_index_writer_append(iw, &e, 1), 0);
	ck_assert_int_eq(cn_index_writer_finish(iw, &idx, NULL), 0);
	cn_index_writer_free(iw);
	ck_assert_int_eq(cn_datastore_snapshot_write_file(w, "a.didx", idx.data, idx.len), -ENOENT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "is not in the datastore"));
	cn_buf_free(&idx);
	/* a manifest listing a file that was not written is refused */
	{
		struct cn_manifest *m;
		struct cn_buf man = {0};
		uint8_t csum[32] = {0};
		ck_assert_int_eq(cn_manifest_new(&id2, &m), 0);
		ck_assert_int_eq(cn_manifest_add_file(m, "gone.blob", 1, csum, CN_CRYPT_MODE_NONE), 0);
		ck_assert_int_eq(cn_manifest_encode(m, NULL, &man), 0);
		cn_manifest_free(m);
		ck_assert_int_eq(cn_datastore_snapshot_write_file(w, CN_MANIFEST_BLOB_NAME, man.data,
								  man.len), 0);
		cn_buf_free(&man);
		ck_assert_int_eq(cn_datastore_snapshot_publish(w), -ENOENT);
		ck_assert_ptr_nonnull(strstr(cn_error_message(), "gone.blob"));
	}
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id2, &w), 0);
	cn_datastore_snapshot_abort(w);
	/* abort left nothing but the owner file in the group */
	snprintf(p, sizeof(p), "%s/ns/team/ns/a/host/nas", root);
	DIR *d = opendir(p);
	struct dirent *de;
	int entries = 0;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			entries++;
	closedir(d);
	ck_assert_int_eq(entries, 2); /* owner + the first snapshot */

	struct cn_snapshot_id older = id;
	older.time -= 1;
	ck_assert_int_eq(write_snapshot(ds, &older, c, 3), -EEXIST);
	ck_assert_int_eq(write_snapshot(ds, &id2, c, 2), 0);

	struct cn_ds_snapshot_info *list;
	ck_assert_int_eq(cn_datastore_list_snapshots(ds, &id, 1, &list, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(list[0].id.time, id.time);
	ck_assert_int_eq(list[0].size, 15000);
	ck_assert_int_eq(list[1].size, 10000);
	ck_assert(list[1].finished);
	free(list);
	struct cn_snapshot_id prev;
	ck_assert_int_eq(cn_datastore_previous_snapshot(ds, &id, INT64_MAX, &prev), 1);
	ck_assert_int_eq(prev.time, id2.time);
	ck_assert_int_eq(cn_datastore_previous_snapshot(ds, &id, id2.time, &prev), 1);
	ck_assert_int_eq(prev.time, id.time);
	ck_assert_int_eq(cn_datastore_previous_snapshot(ds, &id, id.time, &prev), 0);

	struct cn_buf b = {0};
	ck_assert_int_eq(cn_datastore_read_file(ds, &id2, CN_MANIFEST_BLOB_NAME, &b), 0);
	struct cn_manifest *m;
	ck_assert_int_eq(cn_manifest_decode(b.data, b.len, NULL, &m), 0);
	ck_assert_str_eq(cn_manifest_backup_id(m), "nas");
	cn_manifest_free(m);
	cn_buf_free(&b);
	ck_assert_int_eq(cn_datastore_read_file(ds, &id2, "nope.blob", &b), -ENOENT);

	/* removing a protected snapshot needs force */
	ck_assert_int_eq(cn_datastore_set_protected(ds, &id, 1), 0);
	ck_assert_int_eq(cn_datastore_remove_snapshot(ds, &id, 0), -EPERM);
	ck_assert_int_eq(cn_datastore_remove_snapshot(ds, &id, 1), 0);
	ck_assert_int_eq(cn_datastore_list_snapshots(ds, &id, 0, &list, &n), 0);
	ck_assert_uint_eq(n, 1);
	free(list);
	cn_datastore_close(ds);
	for (int i = 0; i < 3; i++)
		cn_chunk_unref(c[i]);
	cn_chunk_unref(absent);
	rm_rf(dir);
}
END_TEST

/* Stops the process (SIGSTOP) once half of a chunk has been written. */
static ssize_t stop_halfway(int fd, const void *buf, size_t len, void *ctx)
{
	(void)ctx;
	size_t half = len / 2;
	ssize_t n = write(fd, buf, half);
	if (n > 0)
		raise(SIGSTOP);
	return n;
}

START_TEST(test_kill_during_insert)
{
	char dir[64], root[128], p[4096];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	cn_datastore_close(ds);
	struct cn_chunk *c = make_chunk(400, 1 << 20);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct cn_datastore_opts o;
		cn_datastore_opts_init(&o);
		o.write_fn = stop_halfway;
		o.skip_index_check = 1;
		struct cn_datastore *cds;
		if (cn_datastore_open(root, 0, &o, &cds) < 0)
			_exit(2);
		insert(cds, c, NULL);
		_exit(3); /* never reached: killed while stopped */
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, WUNTRACED), pid);
	ck_assert(WIFSTOPPED(status));
	/* (skip the index check: the stopped child holds the prefix lock) */
	{
		struct cn_datastore_opts o;
		cn_datastore_opts_init(&o);
		o.skip_index_check = 1;
		ck_assert_int_eq(cn_datastore_open(root, 0, &o, &ds), 0);
	}
	/* mid-insert: a temp file exists, the digest's name does not */
	ck_assert_int_eq(count_strays(ds, c->digest), 1);
	chunk_file(ds, c->digest, p, sizeof(p));
	ck_assert(!file_exists(p));
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	cn_datastore_close(ds);

	ds = open_store(root, 0, CN_SYNC_NONE);
	ck_assert(!file_exists(p));
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c->digest), 0);
	/* the lock the dead process held is free: insert works */
	int was_new;
	ck_assert_int_eq(insert(ds, c, &was_new), 0);
	ck_assert_int_eq(was_new, 1);
	struct cn_buf b = {0};
	ck_assert_int_eq(cn_datastore_read_chunk(ds, c->digest, &b), 0);
	struct cn_buf plain = {0};
	ck_assert_int_eq(cn_blob_decode(b.data, b.len, NULL, c->digest, &plain), 0);
	ck_assert_uint_eq(plain.len, 1 << 20);
	cn_buf_free(&plain);
	cn_buf_free(&b);
	/* GC (a day later) clears the dead insert's temp file, keeps nothing else */
	struct cn_gc_opts go = {.now = time(NULL) + 2 * 86400};
	struct cn_gc_stats gs;
	ck_assert_int_eq(cn_datastore_gc(ds, &go, &gs), 0);
	ck_assert_uint_eq(gs.removed_tmp, 1);
	ck_assert_int_eq(count_strays(ds, c->digest), 0);
	cn_datastore_close(ds);
	cn_chunk_unref(c);
	rm_rf(dir);
}
END_TEST

struct fail_ctx {
	int fail;
	size_t budget; /* bytes that may still be written before ENOSPC */
};

static ssize_t failing_write(int fd, const void *buf, size_t len, void *ctx)
{
	struct fail_ctx *f = ctx;
	if (f->fail) {
		if (f->budget == 0) {
			errno = ENOSPC;
			return -1;
		}
		if (len > f->budget)
			len = f->budget;
		f->budget -= len;
	}
	return write(fd, buf, len);
}

START_TEST(test_enospc_injected)
{
	char dir[64], root[128], p[4096];
	make_tmpdir(dir, sizeof(dir));
	snprintf(root, sizeof(root), "%s/store", dir);
	struct fail_ctx f = {0};
	struct cn_datastore_opts o;
	cn_datastore_opts_init(&o);
	o.sync_level = CN_SYNC_NONE;
	o.write_fn = failing_write;
	o.write_ctx = &f;
	struct cn_datastore *ds;
	ck_assert_int_eq(cn_datastore_open(root, 1, &o, &ds), 0);
	struct cn_chunk *ok = make_chunk(500, 8000), *c = make_chunk(501, 8000);
	ck_assert_int_eq(insert(ds, ok, NULL), 0);
	f.fail = 1;
	f.budget = 3000;
	ck_assert_int_eq(insert(ds, c, NULL), -ENOSPC);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "No space left on device"));
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "write chunk"));
	chunk_file(ds, c->digest, p, sizeof(p));
	ck_assert(!file_exists(p));
	ck_assert_int_eq(count_strays(ds, c->digest), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c->digest), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, ok->digest), 1);
	/* a snapshot file hitting ENOSPC: the writer fails, abort leaves nothing */
	struct cn_snapshot_id id = {.type = "host", .id = "full", .time = 1700000000};
	struct cn_ds_snapshot *w;
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id, &w), 0);
	f.budget = 0;
	ck_assert_int_eq(cn_datastore_snapshot_write_file(w, "x.blob", c->data, c->len), -ENOSPC);
	cn_datastore_snapshot_abort(w);
	struct cn_ds_snapshot_info *list;
	size_t n;
	ck_assert_int_eq(cn_datastore_list_snapshots(ds, &id, 0, &list, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(list);
	/* space is back: the same insert succeeds */
	f.fail = 0;
	ck_assert_int_eq(insert(ds, c, NULL), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c->digest), 1);
	cn_datastore_close(ds);
	cn_chunk_unref(ok);
	cn_chunk_unref(c);
	rm_rf(dir);
}
END_TEST

/* A real full filesystem: a 16 MiB tmpfs (needs root; skipped otherwise).
 * The LMDB index takes ~4 MiB of it (a record per chunk directory). */
START_TEST(test_enospc_tmpfs)
{
	char dir[64], root[128];
	snprintf(dir, sizeof(dir), "/tmp/cn_ds_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	if (mount("tmpfs", dir, "tmpfs", 0, "size=16m") < 0) {
		fprintf(stderr, "test_enospc_tmpfs: mount not permitted (%s), skipped\n", strerror(errno));
		rm_rf(dir);
		return;
	}
	snprintf(root, sizeof(root), "%s/store", dir);
	struct cn_datastore *ds = open_store(root, 1, CN_SYNC_FILE);
	enum { MAXC = 40 };
	struct cn_chunk *c[MAXC];
	int stored = 0, r = 0;
	for (int i = 0; i < MAXC; i++) {
		c[i] = make_chunk(600 + (uint32_t)i, 512 << 10);
		if (r == 0) {
			r = insert(ds, c[i], NULL);
			if (r == 0)
				stored++;
		}
	}
	ck_assert_int_eq(r, -ENOSPC);
	ck_assert_int_gt(stored, 0);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "No space left on device"));
	const struct cn_chunk *failed = c[stored];
	char p[4096];
	chunk_file(ds, failed->digest, p, sizeof(p));
	ck_assert(!file_exists(p));
	ck_assert_int_eq(count_strays(ds, failed->digest), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, failed->digest), 0);
	cn_datastore_close(ds);
	/* consistent after reopening: every stored chunk decodes */
	ds = open_store(root, 0, CN_SYNC_FILE);
	for (int i = 0; i < stored; i++) {
		struct cn_buf b = {0}, plain = {0};
		ck_assert_int_eq(cn_datastore_has_chunk(ds, c[i]->digest), 1);
		ck_assert_int_eq(cn_datastore_read_chunk(ds, c[i]->digest, &b), 0);
		ck_assert_int_eq(cn_blob_decode(b.data, b.len, NULL, c[i]->digest, &plain), 0);
		cn_buf_free(&b);
		cn_buf_free(&plain);
	}
	ck_assert_int_eq(cn_datastore_has_chunk(ds, failed->digest), 0);
	cn_datastore_close(ds);
	for (int i = 0; i < MAXC; i++)
		cn_chunk_unref(c[i]);
	rm_rf(dir);
}
END_TEST

START_TEST(test_gc_grace)
{
	char dir[64], root[128], p[4096];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	int64_t now = time(NULL);
	struct cn_chunk *ref[2] = {make_chunk(700, 3000), make_chunk(701, 3000)};
	struct cn_chunk *old = make_chunk(702, 3000), *young = make_chunk(703, 3000);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(insert(ds, ref[i], NULL), 0);
	ck_assert_int_eq(insert(ds, old, NULL), 0);
	ck_assert_int_eq(insert(ds, young, NULL), 0);
	struct cn_snapshot_id id = {.type = "vm", .id = "100", .time = 1700000000};
	ck_assert_int_eq(write_snapshot(ds, &id, ref, 2), 0);
	/* referenced chunks look ancient: marking must save them */
	set_atime(ds, ref[0]->digest, now - 10 * 86400);
	set_atime(ds, ref[1]->digest, now - 10 * 86400);
	set_atime(ds, old->digest, now - 86400 - 301 - 5);   /* beyond 24h5m */
	set_atime(ds, young->digest, now - 86400 - 200);     /* within the 5 min gap */
	/* an old quarantined chunk goes too */
	chunk_file(ds, old->digest, p, sizeof(p));
	char bad[4200];
	snprintf(bad, sizeof(bad), "%s.0.bad", p);
	ck_assert_int_eq(cn_write_file_atomic(bad, "junk", 4, 0644, 0), 0);
	struct timespec ts[2] = {{.tv_sec = now - 3 * 86400}, {.tv_sec = now - 3 * 86400}};
	ck_assert_int_eq(utimensat(AT_FDCWD, bad, ts, 0), 0);

	/* GC's clock pinned to the test's: a second ticking over between the
	 * two time() calls made the cutoff check below fail now and then */
	struct cn_gc_stats st;
	struct cn_gc_opts at_now = {.now = now};
	ck_assert_int_eq(cn_datastore_gc(ds, &at_now, &st), 0);
	ck_assert_uint_eq(st.index_files, 1);
	ck_assert_uint_eq(st.marked_chunks, 2);
	ck_assert_uint_eq(st.removed_chunks, 1);
	ck_assert_uint_eq(st.removed_bad, 1);
	ck_assert_uint_eq(st.disk_chunks, 2);    /* the marked ones */
	ck_assert_uint_eq(st.pending_chunks, 1); /* young: kept by the grace period */
	ck_assert_int_eq(st.cutoff, now - 86400 - 300);
	ck_assert(!file_exists(p));
	ck_assert(!file_exists(bad));
	ck_assert_int_eq(cn_datastore_has_chunk(ds, old->digest), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, young->digest), 1);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, ref[0]->digest), 1);
	ck_assert_int_ge(get_atime(ds, ref[0]->digest), now);

	/* The oldest running writer moves the cutoff: a chunk inserted by a
	 * backup that is still running survives a GC two days later... */
	struct cn_snapshot_id id2 = id;
	id2.time += 60;
	struct cn_ds_snapshot *w;
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id2, &w), 0);
	struct cn_chunk *fresh = make_chunk(704, 3000);
	ck_assert_int_eq(insert(ds, fresh, NULL), 0);
	struct cn_gc_opts later = {.now = time(NULL) + 2 * 86400};
	ck_assert_int_eq(cn_datastore_gc(ds, &later, &st), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, fresh->digest), 1);
	ck_assert_int_le(st.cutoff, time(NULL) - 300);
	/* ...but once the writer is gone it is garbage. */
	cn_datastore_snapshot_abort(w);
	later.now += 60;
	ck_assert_int_eq(cn_datastore_gc(ds, &later, &st), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, fresh->digest), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, young->digest), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, ref[1]->digest), 1);
	cn_datastore_close(ds);
	cn_chunk_unref(ref[0]);
	cn_chunk_unref(ref[1]);
	cn_chunk_unref(old);
	cn_chunk_unref(young);
	cn_chunk_unref(fresh);
	rm_rf(dir);
}
END_TEST

/* Encrypted chunks: without the key only the CRC can be checked (as the
 * server does), with it the content and the keyed digest too. */
START_TEST(test_verify_encrypted)
{
	char dir[64], root[128], p[4096];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	uint8_t key[32], data[5000];
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)(i * 3 + 1);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * i >> 3);
	struct cn_crypt_config *crypt;
	ck_assert_int_eq(cn_crypt_config_new(key, &crypt), 0);
	struct cn_chunk *c;
	ck_assert_int_eq(cn_blob_encode_chunk(data, sizeof(data), crypt, CN_BLOB_COMPRESS, &c), 0);
	ck_assert_int_eq(insert(ds, c, NULL), 0);
	struct cn_snapshot_id id = {.type = "host", .id = "secret", .time = 1700000000};
	ck_assert_int_eq(write_snapshot(ds, &id, &c, 1), 0);
	struct cn_verify_result vr;
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, NULL, 0, &vr), 0);
	ck_assert_uint_eq(vr.bytes, 0); /* not decrypted */
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, crypt, 0, &vr), 0);
	ck_assert_uint_eq(vr.bytes, sizeof(data));
	/* tamper with the ciphertext and fix up the CRC: only the key sees it */
	chunk_file(ds, c->digest, p, sizeof(p));
	uint8_t *blob;
	size_t len;
	ck_assert_int_eq(cn_read_file(p, 1 << 20, &blob, &len), 0);
	blob[len - 1] ^= 1;
	uint32_t crc = cn_crc32(0, blob + CN_BLOB_ENC_HEADER_SIZE, len - CN_BLOB_ENC_HEADER_SIZE);
	cn_put_le32(blob + 8, crc);
	ck_assert_int_eq(cn_write_file_atomic(p, blob, len, 0644, 0), 0);
	free(blob);
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, NULL, 0, &vr), 0);
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, crypt, 0, &vr), 1);
	ck_assert_uint_eq(vr.bad_chunks, 1);
	cn_crypt_config_free(crypt);
	cn_chunk_unref(c);
	cn_datastore_close(ds);
	rm_rf(dir);
}
END_TEST

/* A backup process that dies leaves only hidden debris, which GC removes
 * once the group lock is free; a running backup's temp dir is left alone. */
START_TEST(test_crashed_backup)
{
	char dir[64], root[128], gpath[256];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	struct cn_chunk *c = make_chunk(900, 4000);
	struct cn_snapshot_id id = {.type = "host", .id = "crash", .time = 1700000000};
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct cn_datastore *cds = open_child_store(root, 1);
		struct cn_ds_snapshot *w;
		if (!cds || cn_datastore_snapshot_begin(cds, &id, &w) < 0 || insert(cds, c, NULL) < 0 ||
		    cn_datastore_snapshot_write_file(w, "x.blob", c->data, c->len) < 0)
			_exit(1);
		_exit(0); /* dies mid-backup: no publish, no abort */
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	struct cn_ds_snapshot_info *list;
	size_t n;
	ck_assert_int_eq(cn_datastore_list_snapshots(ds, &id, 0, &list, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(list);
	snprintf(gpath, sizeof(gpath), "%s/host/crash", root);
	int entries = 0;
	DIR *d = opendir(gpath);
	for (struct dirent *e; (e = readdir(d));)
		entries += e->d_name[0] == '.' && e->d_name[1] == 't';
	closedir(d);
	ck_assert_int_eq(entries, 1); /* the dead backup's .tmp-* */

	/* a live backup in another group keeps its temp dir through GC; its
	 * begin already removed the dead backup's */
	struct cn_snapshot_id live = {.type = "host", .id = "live", .time = 1700000000};
	struct cn_ds_snapshot *w;
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &live, &w), 0);
	struct cn_gc_stats st;
	ck_assert_int_eq(cn_datastore_gc(ds, NULL, &st), 0);
	ck_assert_uint_eq(st.removed_tmp_dirs, 0);
	ck_assert_int_eq(write_snapshot_w(w, &live, &c, 1), 0);
	ck_assert_int_eq(cn_datastore_list_snapshots(ds, &live, 0, &list, &n), 0);
	ck_assert_uint_eq(n, 1);
	free(list);
	d = opendir(gpath);
	entries = 0;
	for (struct dirent *e; (e = readdir(d));)
		entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	ck_assert_int_eq(entries, 1); /* only "owner" */
	cn_datastore_close(ds);
	cn_chunk_unref(c);
	rm_rf(dir);
}
END_TEST

static const char *verify_state(struct cn_datastore *ds, const struct cn_snapshot_id *id,
				char *out, size_t size)
{
	struct cn_buf b = {0};
	struct cn_manifest *m;
	ck_assert_int_eq(cn_datastore_read_file(ds, id, CN_MANIFEST_BLOB_NAME, &b), 0);
	ck_assert_int_eq(cn_manifest_decode(b.data, b.len, NULL, &m), 0);
	json_t *vs = json_object_get(cn_manifest_unprotected(m), "verify_state");
	snprintf(out, size, "%s", vs ? json_string_value(json_object_get(vs, "state")) : "none");
	const char *upid = vs ? json_string_value(json_object_get(vs, "upid")) : NULL;
	ck_assert(!vs || (upid && !strncmp(upid, "UPID:", 5)));
	cn_manifest_free(m);
	cn_buf_free(&b);
	return out;
}

START_TEST(test_verify)
{
	char dir[64], root[128], p[4096], state[16];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	struct cn_chunk *c[3];
	for (int i = 0; i < 3; i++) {
		c[i] = make_chunk(800 + (uint32_t)i, 6000);
		ck_assert_int_eq(insert(ds, c[i], NULL), 0);
	}
	struct cn_snapshot_id id = {.type = "ct", .id = "200", .time = 1700000000};
	ck_assert_int_eq(write_snapshot(ds, &id, c, 3), 0);
	struct cn_verify_result vr;
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, NULL, 1, &vr), 0);
	ck_assert_uint_eq(vr.chunks, 3);
	ck_assert_uint_eq(vr.bytes, 18000);
	ck_assert_str_eq(verify_state(ds, &id, state, sizeof(state)), "ok");

	/* flip one payload bit of chunk 1 */
	chunk_file(ds, c[1]->digest, p, sizeof(p));
	int fd = open(p, O_RDWR);
	uint8_t byte;
	ck_assert_int_eq(pread(fd, &byte, 1, 100), 1);
	byte ^= 0x10;
	ck_assert_int_eq(pwrite(fd, &byte, 1, 100), 1);
	close(fd);
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, NULL, 1, &vr), 1);
	ck_assert_uint_eq(vr.bad_chunks, 1);
	char bad[4200];
	snprintf(bad, sizeof(bad), "%s.0.bad", p);
	ck_assert(file_exists(bad));
	ck_assert(!file_exists(p));
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c[1]->digest), 0);
	ck_assert_str_eq(verify_state(ds, &id, state, sizeof(state)), "failed");
	/* now missing: still a failure */
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, NULL, 0, &vr), 1);
	ck_assert_uint_eq(vr.missing_chunks, 1);
	/* the next backup uploads it again (has_chunk said no); verify is ok */
	ck_assert_int_eq(insert(ds, c[1], NULL), 0);
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, NULL, 1, &vr), 0);
	ck_assert_str_eq(verify_state(ds, &id, state, sizeof(state)), "ok");
	/* a second corruption gets the next number, as upstream */
	fd = open(p, O_RDWR);
	ck_assert_int_eq(pwrite(fd, "XXXX", 4, 0), 4);
	close(fd);
	ck_assert_int_eq(cn_datastore_verify_snapshot(ds, &id, NULL, 0, &vr), 1);
	snprintf(bad, sizeof(bad), "%s.1.bad", p);
	ck_assert(file_exists(bad));
	cn_datastore_close(ds);
	for (int i = 0; i < 3; i++)
		cn_chunk_unref(c[i]);
	rm_rf(dir);
}
END_TEST

/* ---- concurrency: backup, GC and prune in three processes ---- */

/* Each backup waits for two whole GC runs, each a walk of the 65536 chunk
 * directories: under ASan three backups (keep-last=2 still prunes). */
enum { CONC_BACKUPS = CN_TEST_SANITIZED ? 3 : 5, CONC_FRESH = 3, CONC_SHARED = 3 };

/* Number of GC runs completed so far (written by gc_process). */
static int gc_runs(const char *done)
{
	char path[256];
	uint8_t *data;
	size_t len;
	snprintf(path, sizeof(path), "%s.gcruns", done);
	if (cn_read_file(path, 31, &data, &len) < 0)
		return 0;
	char text[32];
	memcpy(text, data, len);
	text[len] = '\0';
	free(data);
	return atoi(text);
}

static int backup_process(const char *root, const char *done)
{
	struct cn_datastore *ds = open_child_store(root, 0);
	if (!ds)
		return 10;
	int unexpected = 0;
	for (int i = 0; i < CONC_BACKUPS; i++) {
		struct cn_snapshot_id id = {.type = "host", .id = "busy", .time = 1700000000 + i};
		struct cn_chunk *c[CONC_FRESH + CONC_SHARED];
		struct cn_ds_snapshot *w;
		/* begin first: the registered writer protects what it inserts */
		if (cn_datastore_snapshot_begin(ds, &id, &w) < 0) {
			fprintf(stderr, "backup %d: %s\n", i, cn_error_message());
			unexpected++;
			continue;
		}
		for (int k = 0; k < CONC_FRESH; k++)
			c[k] = make_chunk(10000 + (uint32_t)(i * 10 + k), 20000);
		/* shared: this backup's and the previous backup's fresh chunks */
		for (int k = 0; k < CONC_SHARED; k++)
			c[CONC_FRESH + k] = make_chunk(10000 + (uint32_t)((i ? i - 1 : 0) * 10 + k), 20000);
		int r = 0;
		for (int k = 0; k < CONC_FRESH + CONC_SHARED && r == 0; k++) {
			int have = cn_datastore_has_chunk(ds, c[k]->digest);
			if (have < 0)
				r = have;
			else if (!have)
				r = insert(ds, c[k], NULL);
		}
		/* A backup takes a while between its chunks and its index: wait
		 * until two whole GC runs have passed meanwhile, so at least one
		 * started after these chunks were written (and would collect
		 * them, were they not protected). */
		int r0 = gc_runs(done);
		for (int waited = 0; gc_runs(done) < r0 + 2 && waited < 6000; waited++)
			usleep(10000);
		if (r == 0)
			r = write_snapshot_w(w, &id, c, CONC_FRESH + CONC_SHARED);
		else
			cn_datastore_snapshot_abort(w);
		/* Every backup must succeed: its own chunks are protected by its
		 * writer registration, the deduplicated ones by the previous
		 * snapshot (kept by keep-last=2) or its writer. (Without those
		 * rules the snapshot writer refuses cleanly with -ENOENT; it
		 * never publishes a hole. That is checked below.) */
		if (r < 0) {
			fprintf(stderr, "backup %d: %s\n", i, cn_error_message());
			unexpected++;
		}
		for (int k = 0; k < CONC_FRESH + CONC_SHARED; k++)
			cn_chunk_unref(c[k]);
	}
	cn_datastore_close(ds);
	int fd = open(done, O_CREAT | O_WRONLY, 0644);
	close(fd);
	return unexpected;
}

static int gc_process(const char *root, const char *done)
{
	struct cn_datastore *ds = open_child_store(root, 1);
	if (!ds)
		return 10;
	int runs = 0, errors = 0;
	/* No grace: every chunk not referenced or protected by a running
	 * writer goes at once, the hardest case for the backup. */
	struct cn_gc_opts go = {.grace = CN_GC_NO_GRACE};
	while (runs < 2 || access(done, F_OK) < 0) {
		struct cn_gc_stats st;
		if (cn_datastore_gc(ds, &go, &st) < 0) {
			fprintf(stderr, "gc: %s\n", cn_error_message());
			errors++;
		}
		runs++;
		char runs_path[256], text[32];
		snprintf(runs_path, sizeof(runs_path), "%s.gcruns", done);
		int len = snprintf(text, sizeof(text), "%d", runs);
		cn_write_file_atomic(runs_path, text, (size_t)len, 0644, 0);
		if (runs > 500)
			break;
	}
	cn_datastore_close(ds);
	return errors;
}

static int prune_process(const char *root, const char *done)
{
	struct cn_datastore *ds = open_child_store(root, 1);
	if (!ds)
		return 10;
	struct cn_snapshot_id g = {.type = "host", .id = "busy"};
	struct cn_prune_keep keep = {.last = 2};
	int errors = 0;
	while (access(done, F_OK) < 0) {
		struct cn_prune_entry *res = NULL;
		size_t n;
		if (cn_datastore_prune_group(ds, &g, &keep, 0, &res, &n) < 0)
			errors++;
		free(res);
		usleep(5000);
	}
	cn_datastore_close(ds);
	return errors;
}

START_TEST(test_concurrent_backup_gc_prune)
{
	char dir[64], root[128], done[160];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	snprintf(done, sizeof(done), "%s/done", dir);
	cn_datastore_close(ds);
	int (*procs[3])(const char *, const char *) = {backup_process, gc_process, prune_process};
	pid_t pids[3];
	for (int i = 0; i < 3; i++) {
		pids[i] = fork();
		ck_assert_int_ge(pids[i], 0);
		if (pids[i] == 0)
			_exit(procs[i](root, done));
	}
	for (int i = 0; i < 3; i++) {
		int status;
		ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "process %d failed (status %d)", i, status);
	}
	/* Every snapshot left is complete and intact, also after one more GC. */
	ds = open_store(root, 0, CN_SYNC_NONE);
	struct cn_snapshot_id g = {.type = "host", .id = "busy"};
	for (int round = 0; round < 2; round++) {
		struct cn_ds_snapshot_info *list;
		size_t n;
		ck_assert_int_eq(cn_datastore_list_snapshots(ds, &g, 0, &list, &n), 0);
		ck_assert_uint_ge(n, 1);
		ck_assert_uint_le(n, 3);
		for (size_t i = 0; i < n; i++) {
			struct cn_verify_result vr;
			ck_assert(list[i].finished);
			int r = cn_datastore_verify_snapshot(ds, &list[i].id, NULL, 0, &vr);
			ck_assert_msg(r == 0, "snapshot %lld: %d problems (%llu missing)",
				      (long long)list[i].id.time, r,
				      (unsigned long long)vr.missing_chunks);
			ck_assert_uint_eq(vr.chunks, CONC_FRESH + CONC_SHARED - (list[i].id.time == 1700000000 ? 3 : 0));
		}
		/* After a GC without grace exactly the referenced chunks remain:
		 * GC did remove the chunks of pruned snapshots, and only those. */
		if (round == 1) {
			uint8_t (*all)[32] = NULL;
			size_t na = 0;
			for (size_t i = 0; i < n; i++) {
				struct cn_buf b = {0};
				struct cn_index *idx;
				ck_assert_int_eq(cn_datastore_read_file(ds, &list[i].id, "root.pxar.didx", &b), 0);
				ck_assert_int_eq(cn_index_parse(b.data, b.len, &idx), 0);
				for (size_t k = 0; k < cn_index_count(idx); k++) {
					size_t j = 0;
					while (j < na && memcmp(all[j], cn_index_digest(idx, k), 32))
						j++;
					if (j == na) {
						all = realloc(all, (na + 1) * 32);
						memcpy(all[na++], cn_index_digest(idx, k), 32);
					}
				}
				cn_index_free(idx);
				cn_buf_free(&b);
			}
			ck_assert_int_eq(cn_datastore_check_index(ds), 0);
			ck_assert_int_eq(cn_datastore_index_count(ds), (int64_t)na);
			free(all);
		}
		free(list);
		/* Started "later": the last GC child may have stamped the chunks
		 * of a snapshot pruned after it in this very second, and a GC
		 * keeps what was touched at or after its start (seconds). */
		struct cn_gc_opts go = {.grace = CN_GC_NO_GRACE, .now = (int64_t)time(NULL) + 2};
		struct cn_gc_stats gs;
		ck_assert_int_eq(cn_datastore_gc(ds, &go, &gs), 0);
		ck_assert_uint_eq(gs.missing_chunks, 0);
	}
	cn_datastore_close(ds);
	rm_rf(dir);
}
END_TEST

/* A POSIX record lock on <root>/.lock as upstream's ProcessLocker takes it
 * (whole file, F_SETLK): 0 or -errno. */
static int pbs_lock(int fd, short type)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
	return fcntl(fd, F_SETLK, &fl) < 0 ? -errno : 0;
}

START_TEST(test_store_lock_as_upstream)
{
	char dir[64], root[128], p[256];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_NONE);
	struct cn_chunk *c = make_chunk(950, 3000);
	ck_assert_int_eq(insert(ds, c, NULL), 0);
	snprintf(p, sizeof(p), "%s/.lock", root);
	int fd = open(p, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	struct cn_snapshot_id id = {.type = "host", .id = "locks", .time = 1700000000};
	struct cn_ds_snapshot *w, *w2;

	/* PBS's GC holds the exclusive lock: no backup may start */
	ck_assert_int_eq(pbs_lock(fd, F_WRLCK), 0);
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id, &w), -CN_E_LOCKED);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "locked exclusively"));
	ck_assert_int_eq(pbs_lock(fd, F_UNLCK), 0);

	/* a running writer holds the shared lock: PBS's GC cannot start, a
	 * PBS backup writer (shared) can, and so can a second writer of ours */
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id, &w), 0);
	int r = pbs_lock(fd, F_WRLCK);
	ck_assert(r == -EAGAIN || r == -EACCES);
	ck_assert_int_eq(pbs_lock(fd, F_RDLCK), 0);
	ck_assert_int_eq(pbs_lock(fd, F_UNLCK), 0);
	struct cn_snapshot_id other = {.type = "host", .id = "other", .time = 1700000000};
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &other, &w2), 0);
	cn_datastore_snapshot_abort(w2);
	r = pbs_lock(fd, F_WRLCK);
	ck_assert(r == -EAGAIN || r == -EACCES);

	/* our GC runs beside our own writer */
	struct cn_gc_stats gs;
	ck_assert_int_eq(cn_datastore_gc(ds, NULL, &gs), 0);

	/* published (or aborted): the lock is gone */
	ck_assert_int_eq(write_snapshot_w(w, &id, &c, 1), 0);
	ck_assert_int_eq(pbs_lock(fd, F_WRLCK), 0);

	/* our GC does not run while PBS's GC holds the lock exclusively, nor
	 * while a PBS backup holds it shared (its chunks are unknown to us);
	 * neither leaves a lock behind */
	ck_assert_int_eq(cn_datastore_gc(ds, NULL, &gs), -CN_E_LOCKED);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "locked exclusively"));
	ck_assert_int_eq(pbs_lock(fd, F_RDLCK), 0);
	ck_assert_int_eq(cn_datastore_gc(ds, NULL, &gs), -CN_E_LOCKED);
	char pid[32];
	snprintf(pid, sizeof(pid), "in use by process %d", (int)getpid());
	ck_assert_msg(strstr(cn_error_message(), pid), "%s", cn_error_message());
	ck_assert_int_eq(pbs_lock(fd, F_WRLCK), 0);
	ck_assert_int_eq(pbs_lock(fd, F_UNLCK), 0);
	ck_assert_int_eq(cn_datastore_gc(ds, NULL, &gs), 0);
	ck_assert_uint_eq(gs.disk_chunks, 1);
	ck_assert_int_eq(pbs_lock(fd, F_WRLCK), 0);
	ck_assert_int_eq(pbs_lock(fd, F_UNLCK), 0);
	close(fd);
	cn_datastore_close(ds);
	cn_chunk_unref(c);
	rm_rf(dir);
}
END_TEST

/* A crash can leave a chunk renamed into place but empty while the LMDB
 * index still lists it (the directory mtime it recorded did not change):
 * has_chunk() then says yes and a backup skips the chunk. The snapshot
 * referencing it must be refused and the chunk written again next time. */
START_TEST(test_empty_chunk_after_crash)
{
	char dir[64], root[128], p[4096];
	struct cn_datastore *ds = new_store(dir, root, CN_SYNC_FILESYSTEM);
	struct cn_chunk *c = make_chunk(960, 7000);
	ck_assert_int_eq(insert(ds, c, NULL), 0);
	chunk_file(ds, c->digest, p, sizeof(p));
	ck_assert_int_eq(truncate(p, 0), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c->digest), 1); /* the premise */

	struct cn_snapshot_id id = {.type = "host", .id = "crashy", .time = 1700000000};
	struct cn_ds_snapshot *w;
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id, &w), 0);
	ck_assert_int_eq(write_snapshot_w(w, &id, &c, 1), -CN_E_TRUNCATED);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "empty"));
	struct cn_ds_snapshot_info *list;
	size_t n;
	ck_assert_int_eq(cn_datastore_list_snapshots(ds, &id, 0, &list, &n), 0);
	ck_assert_uint_eq(n, 0);
	free(list);

	/* the next backup asks, writes the chunk again and publishes */
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c->digest), 0);
	int was_new = 0;
	ck_assert_int_eq(insert(ds, c, &was_new), 0);
	ck_assert_int_eq(was_new, 1);
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id, &w), 0);
	ck_assert_int_eq(write_snapshot_w(w, &id, &c, 1), 0);
	struct cn_buf b = {0};
	ck_assert_int_eq(cn_datastore_read_chunk(ds, c->digest, &b), 0);
	ck_assert_uint_eq(b.len, c->len);
	ck_assert_mem_eq(b.data, c->data, c->len);
	cn_buf_free(&b);
	cn_datastore_close(ds);
	cn_chunk_unref(c);
	rm_rf(dir);
}
END_TEST

/* Whether a chunk file lies on a file system known to take direct I/O. */
static int takes_direct_io(const char *path)
{
	struct statfs sf;
	ck_assert_int_eq(statfs(path, &sf), 0);
	return sf.f_type == 0xEF53 /* ext2/3/4 */ || sf.f_type == 0x58465342 /* xfs */ ||
	       sf.f_type == 0x9123683E /* btrfs */;
}

/* Whether all of a chunk file is in the page cache. */
static int chunk_cached(struct cn_datastore *ds, const uint8_t *digest, size_t len)
{
	char p[4096];
	chunk_file(ds, digest, p, sizeof(p));
	int fd = open(p, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	int r = cn_file_cached(fd, len, CN_RESIDENCY_AUTO);
	close(fd);
	ck_assert_int_ge(r, 0);
	return r;
}

/* Chunk data with and without direct I/O (cn_datastore.h): blobs at
 * aligned and unaligned addresses, of sizes around the 4 KiB alignment,
 * read back into aligned roomy buffers (direct unless cached) and plain
 * ones, at aligned and unaligned positions, by a handle that uses direct
 * I/O and one that does not, before and after the chunk is in the page
 * cache: always the same bytes. The store is on disk (the build
 * directory), not tmpfs, whose files are always cached. Where the file
 * system takes direct I/O: an aligned blob's head is written past the
 * cache, and a direct read leaves the chunk uncached. */
START_TEST(test_direct_io)
{
	static const size_t sizes[] = {1, 4096 - 12, 4096, 4096 + 1, 65536 + 7, (1u << 20) + 3};
	char dir[64] = "cn_ds_direct_XXXXXX", root[128], p[256];
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(root, sizeof(root), "%s/store", dir);
	enum { N = 2 * CN_ARRAY_SIZE(sizes) };
	struct cn_chunk *c[N];
	for (size_t i = 0; i < N; i++)
		c[i] = make_chunk(900 + (uint32_t)i, sizes[i / 2]);
	/* The store on disk has only its chunks' prefix directories: making
	 * and removing all 65536 on a busy disk took minutes (137 s of this
	 * test's 140), and the layout is not what it checks; the other tests
	 * make full stores on tmpfs. Hence no index check of the others, and
	 * the mark of a complete layout, without which opening the store
	 * makes the missing directories (180 s of a loaded run again). */
	snprintf(p, sizeof(p), "%s/.chunks", root);
	ck_assert_int_eq(cn_mkdir_p(p, 0750), 0);
	snprintf(p, sizeof(p), "%s/.cairn", root);
	ck_assert_int_eq(mkdir(p, 0750), 0);
	snprintf(p, sizeof(p), "%s/.cairn/layout-complete", root);
	int mark = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ck_assert_int_ge(mark, 0);
	close(mark);
	for (size_t i = 0; i < N; i++) {
		snprintf(p, sizeof(p), "%s/.chunks/%02x%02x", root, c[i]->digest[0], c[i]->digest[1]);
		ck_assert(mkdir(p, 0750) == 0 || errno == EEXIST);
	}
	struct cn_datastore_opts o;
	cn_datastore_opts_init(&o);
	o.sync_level = CN_SYNC_FILESYSTEM;
	o.skip_index_check = 1;
	struct cn_datastore *ds;
	ck_assert_int_eq(cn_datastore_open(root, 0, &o, &ds), 0);
	int direct = takes_direct_io(root);
	uint8_t *aligned;
	ck_assert_int_eq(posix_memalign((void **)&aligned, 4096, (2u << 20) + 8192), 0);
	for (size_t i = 0; i < N; i++) {
		/* even: the blob at an aligned address, odd: one byte off */
		uint8_t *at = aligned + (i % 2);
		memcpy(at, c[i]->data, c[i]->len);
		ck_assert_int_eq(cn_datastore_insert_chunk(ds, c[i]->digest, at, c[i]->len, NULL), 0);
		if (direct && i % 2 == 0 && c[i]->len >= 4096)
			ck_assert(!chunk_cached(ds, c[i]->digest, c[i]->len));
	}
	o.no_direct_io = 1;
	struct cn_datastore *cached;
	ck_assert_int_eq(cn_datastore_open(root, 0, &o, &cached), 0);
	for (size_t i = 0; i < N; i++) {
		/* h = 0: direct handle, chunk not (all) cached; 1: page-cache
		 * handle, which caches it; 2: direct handle, chunk cached */
		for (int h = 0; h < 3; h++) {
			struct cn_datastore *d = h == 1 ? cached : ds;
			struct cn_buf roomy = {aligned, 0, (2u << 20) + 8192}, plain = {0};
			ck_assert_int_eq(cn_datastore_read_chunk(d, c[i]->digest, &roomy), 0);
			ck_assert_uint_eq(roomy.len, c[i]->len);
			ck_assert_mem_eq(roomy.data, c[i]->data, c[i]->len);
			if (h == 0 && direct && i % 2 == 0 && c[i]->len >= 4096)
				ck_assert(!chunk_cached(ds, c[i]->digest, c[i]->len));
			/* appended after what the buffer holds: unaligned position */
			ck_assert_int_eq(cn_datastore_read_chunk(d, c[i]->digest, &roomy), 0);
			ck_assert_uint_eq(roomy.len, 2 * c[i]->len);
			ck_assert_mem_eq(roomy.data + c[i]->len, c[i]->data, c[i]->len);
			ck_assert_int_eq(cn_datastore_read_chunk(d, c[i]->digest, &plain), 0);
			ck_assert_uint_eq(plain.len, c[i]->len);
			ck_assert_mem_eq(plain.data, c[i]->data, c[i]->len);
			cn_buf_free(&plain);
			if (h >= 1)
				ck_assert(chunk_cached(ds, c[i]->digest, c[i]->len));
		}
	}
	cn_datastore_close(cached);
	cn_datastore_close(ds);
	for (size_t i = 0; i < N; i++)
		cn_chunk_unref(c[i]);
	free(aligned);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Three cases of about equal time, which tests/meson.build runs as three
 * tests side by side (CK_RUN_CASE); run without it, all three. */
int main(void)
{
	const TTest *const core[] = {
		test_layout_and_chunks,	 test_threads,		 test_index_recovery,
		test_new_store_index,	 test_snapshot_writer,	 test_publish_into_new_store,
		test_kill_during_insert, test_enospc_injected,	 test_enospc_tmpfs,	 test_verify,
		test_crashed_backup,	 test_verify_encrypted, test_empty_chunk_after_crash,
	};
	const TTest *const direct_io[] = {test_direct_io};
	const TTest *const gc_and_locks[] = {test_gc_grace, test_concurrent_backup_gc_prune,
					     test_store_lock_as_upstream};
	const struct {
		const char *name;
		const TTest *const *tests;
		size_t n;
	} cases[] = {
		{"core", core, CN_ARRAY_SIZE(core)},
		{"direct_io", direct_io, CN_ARRAY_SIZE(direct_io)},
		{"gc_and_locks", gc_and_locks, CN_ARRAY_SIZE(gc_and_locks)},
	};
	Suite *s = suite_create("datastore");
	for (size_t c = 0; c < CN_ARRAY_SIZE(cases); c++) {
		TCase *tc = tcase_create(cases[c].name);
		tcase_set_timeout(tc, 600);
		for (size_t i = 0; i < cases[c].n; i++)
			tcase_add_test(tc, cases[c].tests[i]);
		suite_add_tcase(s, tc);
	}
	return cn_test_run_suite(s);
}
