/* A datastore whose creation stopped part-way (no inodes left, a file in
 * place of a chunk directory, killed) is completed by the next open
 * instead of staying half-made: every retry failed before. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cn_chunk.h"
#include "common/cn_error.h"
#include "store/cn_blob.h"
#include "store/cn_datastore.h"
#include "cn_test.h"

static void rm_rf(const char *dir)
{
	char cmd[512];
	umount2(dir, MNT_DETACH);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Number of .chunks/XXXX directories of the store at root. */
static unsigned count_prefix_dirs(const char *root)
{
	unsigned n = 0;
	for (unsigned i = 0; i < 0x10000; i++) {
		char p[512];
		struct stat st;
		snprintf(p, sizeof(p), "%s/.chunks/%04x", root, i);
		n += stat(p, &st) == 0 && S_ISDIR(st.st_mode);
	}
	return n;
}

/* The store works: a chunk goes into a prefix directory that was missing
 * (ffff) and comes back. */
static void check_usable(const char *root)
{
	struct cn_datastore *ds;
	int r = cn_datastore_open(root, 0, NULL, &ds);
	ck_assert_msg(r == 0, "open: %s", cn_error_message());
	uint8_t data[1000];
	memset(data, 0x5a, sizeof(data));
	struct cn_chunk *c;
	ck_assert_int_eq(cn_blob_encode_chunk(data, sizeof(data), NULL, CN_BLOB_COMPRESS_NONE, &c), 0);
	memset(c->digest, 0xff, 2); /* lands in .chunks/ffff; only the path matters here */
	ck_assert_int_eq(cn_datastore_insert_chunk(ds, c->digest, c->data, c->len, NULL), 0);
	struct cn_buf out = {0};
	ck_assert_int_eq(cn_datastore_read_chunk(ds, c->digest, &out), 0);
	ck_assert_uint_eq(out.len, c->len);
	cn_buf_free(&out);
	cn_chunk_unref(c);
	cn_datastore_close(ds);
	struct stat st;
	char p[512];
	snprintf(p, sizeof(p), "%s/.lock", root);
	ck_assert_int_eq(stat(p, &st), 0);
}

/* A half-made store (as an interrupted creation leaves it: the last
 * directories, .lock and the completion mark missing) with a file in
 * place of one directory: open fails naming it; once it is gone, open
 * completes the store. */
START_TEST(test_half_made_store_is_completed)
{
	char dir[64], root[128], p[256];
	snprintf(dir, sizeof(dir), "/tmp/cn_dscreate_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	mount("tmpfs", dir, "tmpfs", 0, "size=64m"); /* faster when root; optional */
	snprintf(root, sizeof(root), "%s/store", dir);
	struct cn_datastore *ds;
	ck_assert_int_eq(cn_datastore_open(root, 1, NULL, &ds), 0);
	cn_datastore_close(ds);
	ck_assert_uint_eq(count_prefix_dirs(root), 0x10000);

	for (unsigned i = 51188; i < 0x10000; i++) {
		snprintf(p, sizeof(p), "%s/.chunks/%04x", root, i);
		ck_assert_int_eq(rmdir(p), 0);
	}
	snprintf(p, sizeof(p), "%s/.lock", root);
	ck_assert_int_eq(unlink(p), 0);
	snprintf(p, sizeof(p), "%s/.cairn/layout-complete", root);
	unlink(p); /* absent when the creation never finished */
	snprintf(p, sizeof(p), "%s/.chunks/%04x", root, 60000);
	FILE *f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);

	int r = cn_datastore_open(root, 0, NULL, &ds);
	ck_assert_msg(r == -ENOTDIR, "open of a store with a file for a chunk directory: %d (%s)",
		      r, cn_error_message());
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "ea60"));
	ck_assert_int_eq(unlink(p), 0);

	check_usable(root);
	ck_assert_uint_eq(count_prefix_dirs(root), 0x10000);
	rm_rf(dir);
}
END_TEST

/* A real shortage: a tmpfs with too few inodes for 65536 directories.
 * Creation fails with -ENOSPC; after the file system grows, a plain open
 * (what the next backup does) completes the store. Needs root to mount. */
START_TEST(test_creation_out_of_inodes_resumes)
{
	char dir[64], root[128];
	snprintf(dir, sizeof(dir), "/tmp/cn_dscreate_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	if (mount("tmpfs", dir, "tmpfs", 0, "size=64m,nr_inodes=20000") < 0) {
		fprintf(stderr, "test_creation_out_of_inodes_resumes: cannot mount a tmpfs (%s), "
				"skipped\n", strerror(errno));
		rm_rf(dir);
		return;
	}
	snprintf(root, sizeof(root), "%s/store", dir);
	struct cn_datastore *ds;
	int r = cn_datastore_open(root, 1, NULL, &ds);
	ck_assert_msg(r == -ENOSPC, "create with 20000 inodes: %d (%s)", r, cn_error_message());
	unsigned made = count_prefix_dirs(root);
	ck_assert_uint_gt(made, 0);
	ck_assert_uint_lt(made, 0x10000);
	ck_assert_int_lt(cn_datastore_open(root, 0, NULL, &ds), 0); /* still no room */
	ck_assert_int_eq(mount("tmpfs", dir, "tmpfs", MS_REMOUNT, "size=64m,nr_inodes=80000"), 0);
	check_usable(root);
	ck_assert_uint_eq(count_prefix_dirs(root), 0x10000);
	rm_rf(dir);
}
END_TEST

CN_TEST_MAIN("ds_create", "interrupted creation", 300, test_half_made_store_is_completed,
	     test_creation_out_of_inodes_resumes)
