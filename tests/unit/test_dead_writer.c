/* The next backup removes what a killed backup left (its temp snapshot
 * directory, its chunk temp file, its writer registration) at once, and
 * nothing of a backup that is still running in another process. */
#include <dirent.h>
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
#include "cn_test.h"

static int ready_fd = -1;

/* write_fn of the writer to be killed: tells the test it is in the middle
 * of writing a chunk's temp file, then waits for SIGKILL. */
static ssize_t stall_write(int fd, const void *buf, size_t len, void *ctx)
{
	(void)fd, (void)buf, (void)len, (void)ctx;
	if (write(ready_fd, "k", 1) != 1)
		_exit(3);
	for (;;)
		pause();
}

/* Entries of dir whose name starts with prefix (or contains it, if
 * anywhere). */
static int count_entries(const char *dir, const char *prefix, int anywhere)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += anywhere ? strstr(e->d_name, prefix) != NULL
			      : !strncmp(e->d_name, prefix, strlen(prefix));
	closedir(d);
	return n;
}

/* Forks a writer of group host/<id>: it begins a snapshot, inserts a
 * chunk (stalling inside it if stall) and reports on the pipe, then waits
 * to be killed. Returns its pid once it reported. */
static pid_t start_writer(const char *root, const char *id, int stall, uint8_t fill)
{
	int pfd[2];
	ck_assert_int_eq(pipe(pfd), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(pfd[0]);
		ready_fd = pfd[1];
		struct cn_datastore_opts o;
		cn_datastore_opts_init(&o);
		if (stall)
			o.write_fn = stall_write;
		struct cn_datastore *ds;
		struct cn_ds_snapshot *w;
		struct cn_snapshot_id sid = {.type = "host", .time = (int64_t)time(NULL)};
		snprintf(sid.id, sizeof(sid.id), "%s", id);
		if (cn_datastore_open(root, 0, &o, &ds) < 0 || cn_datastore_snapshot_begin(ds, &sid, &w) < 0)
			_exit(2);
		uint8_t data[3000];
		memset(data, fill, sizeof(data));
		struct cn_chunk *c;
		if (cn_blob_encode_chunk(data, sizeof(data), NULL, CN_BLOB_COMPRESS_NONE, &c) < 0 ||
		    cn_datastore_insert_chunk(ds, c->digest, c->data, c->len, NULL) < 0)
			_exit(2);
		if (write(ready_fd, "r", 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(pfd[1]);
	char b;
	ck_assert_int_eq(read(pfd[0], &b, 1), 1);
	close(pfd[0]);
	return pid;
}

START_TEST(test_next_backup_removes_only_dead_writers_debris)
{
	char dir[64], root[128], p[512];
	snprintf(dir, sizeof(dir), "/tmp/cn_deadw_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	mount("tmpfs", dir, "tmpfs", 0, "size=64m"); /* faster when root; optional */
	snprintf(root, sizeof(root), "%s/store", dir);
	struct cn_datastore *ds;
	ck_assert_int_eq(cn_datastore_open(root, 1, NULL, &ds), 0);
	/* no fork while the store's helper thread runs: a lock it holds
	 * (ASan's allocator's) would stay locked in the child */
	ck_assert_int_eq(cn_datastore_layout_wait(ds), 0);

	/* the live one first: a backup that begins cleans up already */
	pid_t live = start_writer(root, "live", 0, 0x22);
	pid_t dead = start_writer(root, "dead", 1, 0x11);
	ck_assert_int_eq(kill(dead, SIGKILL), 0);
	ck_assert_int_eq(waitpid(dead, NULL, 0), dead);
	/* a temp file under the live writer's pid (it would hold the prefix
	 * lock while one exists; the pid alone must protect it) */
	char live_tmp[600];
	snprintf(live_tmp, sizeof(live_tmp), "%s/.chunks/0000/%064d.tmp_%d_abcdef", root, 0,
		 (int)live);
	FILE *f = fopen(live_tmp, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);

	char dead_tag[32];
	snprintf(dead_tag, sizeof(dead_tag), ".tmp_%d_", (int)dead);
	snprintf(p, sizeof(p), "%s/host/dead", root);
	ck_assert_int_eq(count_entries(p, ".tmp-", 0), 1);
	snprintf(p, sizeof(p), "%s/.cairn/writers", root);
	ck_assert_int_eq(count_entries(p, "", 0) - 2, 2); /* minus . and .. */
	int dead_chunks = 0;
	for (unsigned i = 0; i < 0x10000; i++) {
		snprintf(p, sizeof(p), "%s/.chunks/%04x", root, i);
		dead_chunks += count_entries(p, dead_tag, 1);
	}
	ck_assert_int_eq(dead_chunks, 1);

	/* the next backup, of another group */
	struct cn_snapshot_id sid = {.type = "host", .id = "next", .time = (int64_t)time(NULL)};
	struct cn_ds_snapshot *w;
	ck_assert_int_eq(cn_datastore_snapshot_begin(ds, &sid, &w), 0);

	snprintf(p, sizeof(p), "%s/host/dead", root);
	ck_assert_msg(count_entries(p, ".tmp-", 0) == 0, "the killed backup's temp dir is left");
	dead_chunks = 0;
	for (unsigned i = 0; i < 0x10000; i++) {
		snprintf(p, sizeof(p), "%s/.chunks/%04x", root, i);
		dead_chunks += count_entries(p, dead_tag, 1);
	}
	ck_assert_msg(dead_chunks == 0, "the killed backup's chunk temp file is left");
	snprintf(p, sizeof(p), "%s/.cairn/writers", root);
	ck_assert_int_eq(count_entries(p, "", 0) - 2, 2); /* the live one and ours */
	snprintf(p, sizeof(p), "%s/host/live", root);
	ck_assert_msg(count_entries(p, ".tmp-", 0) == 1, "the live backup's temp dir was removed");
	ck_assert_msg(access(live_tmp, F_OK) == 0, "the live writer's temp file was removed");

	cn_datastore_snapshot_abort(w);
	kill(live, SIGKILL);
	waitpid(live, NULL, 0);
	cn_datastore_close(ds);
	umount2(dir, MNT_DETACH);
	snprintf(p, sizeof(p), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(p), 0);
}
END_TEST

CN_TEST_MAIN("dead_writer", "crash debris", 300, test_next_backup_removes_only_dead_writers_debris)
