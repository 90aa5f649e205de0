/* A GC that runs while a backup writes to the local target must keep the
 * chunks the backup reuses without storing them: an old chunk no snapshot
 * references, found by has_chunk, and a chunk of the previous snapshot
 * that is pruned meanwhile. The test drives the target as the pipeline
 * does and forces the sweep between has_chunk and index_close. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_chunk.h"
#include "common/cn_error.h"
#include "engine/cn_target_local.h"
#include "store/cn_blob.h"
#include "store/cn_datastore.h"
#include "store/cn_gc.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"
#include "cn_test.h"

#define TWO_DAYS (2 * 24 * 3600)

static void make_tmpdir(char *dir, size_t size)
{
	snprintf(dir, size, "/tmp/cn_gcreuse_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	mount("tmpfs", dir, "tmpfs", 0, "size=64m"); /* faster when root; optional */
}

static void rm_rf(const char *dir)
{
	char cmd[512];
	umount2(dir, MNT_DETACH);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* An encoded chunk of len bytes of value fill (not compressed). */
static struct cn_chunk *make_chunk(uint8_t fill, size_t len)
{
	uint8_t *data = malloc(len);
	ck_assert_ptr_nonnull(data);
	memset(data, fill, len);
	struct cn_chunk *c;
	ck_assert_int_eq(cn_blob_encode_chunk(data, len, NULL, CN_BLOB_COMPRESS_NONE, &c), 0);
	free(data);
	return c;
}

/* Sets a chunk's atime back to when, as if nothing had touched it since. */
static void age_chunk(struct cn_datastore *ds, const uint8_t digest[32], int64_t when)
{
	char path[4096];
	cn_datastore_chunk_path(ds, digest, path, sizeof(path));
	struct timespec ts[2] = {{.tv_sec = when}, {.tv_nsec = UTIME_OMIT}};
	ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static int chunk_exists(struct cn_datastore *ds, const uint8_t digest[32])
{
	char path[4096];
	struct stat st;
	cn_datastore_chunk_path(ds, digest, path, sizeof(path));
	return stat(path, &st) == 0;
}

/* Writes index "data.img.fidx" of the one chunk c and the manifest, then
 * publishes, through the target: what the pipeline does after has_chunk
 * said yes. Returns the first failure. */
static int finish_snapshot(struct cn_target *t, const struct cn_snapshot_id *id,
			   const struct cn_chunk *c)
{
	int h = t->ops->index_open(t, "data.img.fidx", CN_INDEX_FIXED, c->plain_size,
				   (uint32_t)c->plain_size);
	if (h < 0)
		return h;
	struct cn_index_entry e = {.end_offset = c->plain_size};
	memcpy(e.digest, c->digest, 32);
	int r = t->ops->index_append(t, h, &e, 1);
	if (r < 0)
		return r;
	struct cn_index_csum_ctx *cc;
	ck_assert_int_eq(cn_index_csum_new(CN_INDEX_FIXED, &cc), 0);
	cn_index_csum_update(cc, e.end_offset, e.digest);
	uint8_t csum[32];
	cn_index_csum_final(cc, csum);
	cn_index_csum_free(cc);
	if ((r = t->ops->index_close(t, h, 1, c->plain_size, csum)) < 0)
		return r;
	struct cn_manifest *m;
	struct cn_buf blob = {0};
	ck_assert_int_eq(cn_manifest_new(id, &m), 0);
	ck_assert_int_eq(cn_manifest_add_file(m, "data.img.fidx", 4096 + 32, csum,
					      CN_CRYPT_MODE_NONE), 0);
	ck_assert_int_eq(cn_manifest_encode(m, NULL, &blob), 0);
	cn_manifest_free(m);
	r = t->ops->put_blob(t, CN_MANIFEST_BLOB_NAME, blob.data, blob.len);
	cn_buf_free(&blob);
	return r < 0 ? r : t->ops->finish(t);
}

/* A new store at <dir>/store in a new temp dir. */
static struct cn_datastore *new_store(char *dir, size_t size)
{
	char root[128];
	struct cn_datastore *ds;
	make_tmpdir(dir, size);
	snprintf(root, sizeof(root), "%s/store", dir);
	ck_assert_int_eq(cn_datastore_open(root, 1, NULL, &ds), 0);
	return ds;
}

static void gc_now(struct cn_datastore *ds, struct cn_gc_stats *st)
{
	struct cn_gc_opts go = {0}; /* upstream's rule: 24 h + 5 min, oldest writer */
	ck_assert_msg(cn_datastore_gc(ds, &go, st) == 0, "gc: %s", cn_error_message());
}

/* An old chunk that no snapshot references: the new backup finds it
 * (has_chunk), GC sweeps, then the backup writes its index. */
START_TEST(test_gc_keeps_unreferenced_chunk_reused_by_running_backup)
{
	char dir[64];
	struct cn_datastore *ds = new_store(dir, sizeof(dir));
	struct cn_chunk *c = make_chunk(7, 4096);
	ck_assert_int_eq(cn_datastore_insert_chunk(ds, c->digest, c->data, c->len, NULL), 0);
	int64_t now = (int64_t)time(NULL);
	age_chunk(ds, c->digest, now - TWO_DAYS);

	struct cn_target *t;
	ck_assert_int_eq(cn_target_local_new(ds, &t), 0);
	struct cn_snapshot_id id = {.type = "vm", .id = "100", .time = now};
	struct cn_buf prev = {0};
	int64_t prev_time;
	ck_assert_int_eq(t->ops->begin(t, &id, &prev, &prev_time), 0);
	ck_assert_int_eq(t->ops->has_chunk(t, c->digest), 1);

	struct cn_gc_stats st;
	gc_now(ds, &st);
	ck_assert_msg(chunk_exists(ds, c->digest),
		      "GC removed a chunk the running backup had found with has_chunk");
	ck_assert_uint_eq(st.removed_chunks, 0);

	int r = finish_snapshot(t, &id, c);
	ck_assert_msg(r == 0, "backup failed: %s", cn_error_message());
	gc_now(ds, &st); /* now referenced by the published snapshot */
	ck_assert(chunk_exists(ds, c->digest));
	t->ops->destroy(t);
	cn_buf_free(&prev);
	cn_chunk_unref(c);
	cn_datastore_close(ds);
	rm_rf(dir);
}
END_TEST

/* The chunk of the previous snapshot (reused through load_previous_index,
 * as metadata change detection does): that snapshot is pruned while the
 * new backup runs, then GC sweeps. */
START_TEST(test_gc_keeps_previous_chunk_when_previous_snapshot_pruned)
{
	char dir[64];
	struct cn_datastore *ds = new_store(dir, sizeof(dir));
	struct cn_chunk *c = make_chunk(11, 8192);
	int64_t now = (int64_t)time(NULL);

	struct cn_target *t;
	struct cn_buf prev = {0};
	int64_t prev_time;
	struct cn_snapshot_id old = {.type = "host", .id = "nas", .time = now - 3 * 24 * 3600};
	ck_assert_int_eq(cn_target_local_new(ds, &t), 0);
	ck_assert_int_eq(t->ops->begin(t, &old, &prev, &prev_time), 0);
	ck_assert_int_eq(t->ops->has_chunk(t, c->digest), 0);
	ck_assert_int_eq(t->ops->put_chunk(t, c), 0);
	ck_assert_int_eq(finish_snapshot(t, &old, c), 0);
	t->ops->destroy(t);
	age_chunk(ds, c->digest, now - TWO_DAYS); /* the last GC marked it then */

	struct cn_snapshot_id id = old;
	id.time = now;
	ck_assert_int_eq(cn_target_local_new(ds, &t), 0);
	ck_assert_int_eq(t->ops->begin(t, &id, &prev, &prev_time), 0);
	ck_assert_int_eq(prev_time, old.time);
	struct cn_buf raw = {0};
	ck_assert_int_eq(t->ops->load_previous_index(t, "data.img.fidx", &raw), 0);
	ck_assert_int_eq(t->ops->add_known(t, (const uint8_t(*)[32])c->digest, 1), 0);
	ck_assert_int_eq(t->ops->has_chunk(t, c->digest), 1);

	ck_assert_int_eq(cn_datastore_remove_snapshot(ds, &old, 0), 0);
	struct cn_gc_stats st;
	gc_now(ds, &st);
	ck_assert_msg(chunk_exists(ds, c->digest),
		      "GC removed a chunk of the pruned previous snapshot the backup reuses");

	int r = finish_snapshot(t, &id, c);
	ck_assert_msg(r == 0, "backup failed: %s", cn_error_message());
	t->ops->destroy(t);
	cn_buf_free(&raw);
	cn_buf_free(&prev);
	cn_chunk_unref(c);
	cn_datastore_close(ds);
	rm_rf(dir);
}
END_TEST

CN_TEST_MAIN("gc_reuse", "gc during backup", 300,
	     test_gc_keeps_unreferenced_chunk_reused_by_running_backup,
	     test_gc_keeps_previous_chunk_when_previous_snapshot_pruned)
