/* A datastore whose creation stopped part-way (no inodes left, a file in
 * place of a chunk directory, killed) is completed by the next open
 * instead of staying half-made: every retry failed before. A new store's
 * prefix directories come from a helper thread while its first backup
 * runs: a chunk may come before its directory, and every directory (and
 * the completion mark) exists once the first snapshot is published. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_chunk.h"
#include "common/cn_error.h"
#include "store/cn_blob.h"
#include "store/cn_datastore.h"
#include "store/cn_manifest.h"
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

static int mark_exists(const char *root)
{
	char p[512];
	struct stat st;
	snprintf(p, sizeof(p), "%s/.cairn/layout-complete", root);
	return stat(p, &st) == 0;
}

/* A chunk whose digest puts it into .chunks/ffff, the directory a new
 * store's helper thread makes last (only the path matters to the store).
 * The caller unrefs it. */
static struct cn_chunk *last_prefix_chunk(void)
{
	uint8_t data[1000];
	memset(data, 0x5a, sizeof(data));
	struct cn_chunk *c;
	ck_assert_int_eq(cn_blob_encode_chunk(data, sizeof(data), NULL, CN_BLOB_COMPRESS_NONE, &c), 0);
	memset(c->digest, 0xff, 2);
	return c;
}

/* The store works: a chunk goes into a prefix directory that was missing
 * (ffff) and comes back. */
static void check_usable(const char *root)
{
	struct cn_datastore *ds;
	int r = cn_datastore_open(root, 0, NULL, &ds);
	ck_assert_msg(r == 0, "open: %s", cn_error_message());
	struct cn_chunk *c = last_prefix_chunk();
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
	ck_assert(mark_exists(root));
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
	ck_assert_msg(r == 0, "create with 20000 inodes: %d (%s)", r, cn_error_message());
	/* the directories come from a helper thread: its failure shows when
	 * they are waited for (before a snapshot is published) */
	r = cn_datastore_layout_wait(ds);
	ck_assert_msg(r == -ENOSPC, "layout with 20000 inodes: %d (%s)", r, cn_error_message());
	cn_datastore_close(ds);
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

/* A fresh directory in dir, on a tmpfs of its own when the test may
 * mount one: removing 65536 directories from a busy ext4 took minutes. */
static void make_test_dir(char dir[64])
{
	snprintf(dir, 64, "/tmp/cn_dscreate_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	mount("tmpfs", dir, "tmpfs", 0, "size=256m"); /* optional */
}

/* The first backup into a new store stores a chunk at once (before the
 * helper thread reached its directory), and when its snapshot is
 * published every prefix directory and the mark exist; the chunk index
 * still knows the chunk afterwards (the thread's records of the new
 * empty directories did not replace the one the insert made). */
START_TEST(test_first_backup_into_new_store)
{
	char dir[64], root[128];
	make_test_dir(dir);
	snprintf(root, sizeof(root), "%s/store", dir);
	struct cn_datastore_opts o;
	cn_datastore_opts_init(&o);
	o.sync_level = CN_SYNC_NONE;
	struct cn_datastore *ds;
	int r = cn_datastore_open(root, 1, &o, &ds);
	ck_assert_msg(r == 0, "create: %s", cn_error_message());
	struct cn_chunk *c = last_prefix_chunk();
	int was_new = 0;
	r = cn_datastore_insert_chunk(ds, c->digest, c->data, c->len, &was_new);
	ck_assert_msg(r == 0, "insert: %s", cn_error_message());
	ck_assert_int_eq(was_new, 1);

	struct cn_snapshot_id id = {.type = "host", .id = "first", .time = time(NULL) - 60};
	struct cn_ds_snapshot *w;
	struct cn_manifest *m;
	struct cn_buf man = {0};
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &id, &w), 0);
	ck_assert_int_eq(cn_manifest_new(&id, &m), 0);
	ck_assert_int_eq(cn_manifest_encode(m, NULL, &man), 0);
	cn_manifest_free(m);
	ck_assert_int_eq(cn_datastore_snapshot_write_file(w, CN_MANIFEST_BLOB_NAME, man.data,
							  man.len), 0);
	cn_buf_free(&man);
	r = cn_datastore_snapshot_publish(w);
	ck_assert_msg(r == 0, "publish: %s", cn_error_message());
	ck_assert_uint_eq(count_prefix_dirs(root), 0x10000);
	ck_assert(mark_exists(root));
	ck_assert_int_eq(cn_datastore_layout_wait(ds), 0);
	cn_datastore_close(ds);

	ck_assert_int_eq(cn_datastore_open(root, 0, &o, &ds), 0);
	ck_assert_int_eq(cn_datastore_has_chunk(ds, c->digest), 1);
	cn_datastore_close(ds);
	cn_chunk_unref(c);
	rm_rf(dir);
}
END_TEST

/* Entries of <root>/.chunks so far (cheaper than count_prefix_dirs). */
static unsigned count_entries(const char *root)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/.chunks", root);
	DIR *d = opendir(p);
	unsigned n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

/* Starts creating a store at root in a child and kills it once the
 * helper thread has made some directories: 1 when it was killed before
 * the layout was complete, 0 when the creation finished first. */
static int kill_during_creation(const char *root)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct cn_datastore *ds;
		if (cn_datastore_open(root, 1, NULL, &ds) < 0)
			_exit(1);
		for (;;)
			pause();
	}
	struct timespec ms = {0, 1000000};
	unsigned n = 0;
	for (int i = 0; i < 30000 && n == 0; i++) { /* up to about 30 s */
		nanosleep(&ms, NULL);
		n = count_entries(root);
	}
	kill(pid, SIGKILL);
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status), "the creating child ended by itself (%d)", status);
	ck_assert_uint_gt(n, 0);
	return !mark_exists(root) && count_entries(root) < 0x10000;
}

/* A creation killed half-way leaves no mark; the next open makes the
 * rest, and the store takes chunks. */
START_TEST(test_killed_creation_is_completed)
{
	char dir[64], root[128];
	make_test_dir(dir);
	int midway = 0;
	for (int attempt = 0; attempt < 3 && !midway; attempt++) {
		snprintf(root, sizeof(root), "%s/store%d", dir, attempt);
		midway = kill_during_creation(root);
	}
	ck_assert_msg(midway, "the creation always finished before the kill");
	check_usable(root);
	ck_assert_uint_eq(count_prefix_dirs(root), 0x10000);
	rm_rf(dir);
}
END_TEST

CN_TEST_MAIN("ds_create", "interrupted creation", 300, test_half_made_store_is_completed,
	     test_creation_out_of_inodes_resumes, test_first_backup_into_new_store,
	     test_killed_creation_is_completed)
