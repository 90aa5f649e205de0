/* cn_ds_snapshot — how a snapshot is written: begin (group lock, store
 * lock, a temp directory, a registration in .cairn/writers/), files,
 * publish by rename, abort; and the removal of what killed writers left
 * (their temp directories and chunk temp files).
 * Invariants: a writer holds its group's flock from begin to publish or
 * abort, and its registration's flock for as long as it lives, so only a
 * registration whose lock is free and whose pid is gone on this host is
 * cleaned up; a snapshot becomes visible only by the rename of a complete
 * directory whose manifest lists only files that were written, after the
 * sync the sync level asks for; every chunk an index references is
 * refreshed (and found non-empty) before the index is written. */
#include "store/cn_datastore.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "store/cn_datastore_internal.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

#include <dirent.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- writer registry ---- */

struct writer_reg {
	int fd;
	char path[PATH_MAX];
};

/* Registers a running writer: a file named "<start>-<pid>-XXXXXX", created
 * under a dot name and flocked before it gets its visible name, so GC never
 * mistakes a new registration for a stale one. It holds three lines: host
 * name, pid and the snapshot's temp directory, for the cleanup after a
 * crash (cleanup_dead_writers). */
static int writer_register(struct cn_datastore *ds, struct writer_reg *reg, const char *tmp_dir)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s/.cairn/writers/.new-%lld-%d-XXXXXX", ds->root,
		 (long long)time(NULL), (int)getpid());
	reg->fd = mkostemp(tmp, O_CLOEXEC);
	if (reg->fd < 0)
		return cn_error_sys(-errno, "register writer in %s/.cairn/writers", ds->root);
	if (flock(reg->fd, LOCK_EX) < 0) {
		int r = cn_error_sys(-errno, "lock %s", tmp);
		close(reg->fd);
		unlink(tmp);
		return r;
	}
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	char info[PATH_MAX + 300];
	int n = snprintf(info, sizeof(info), "%s\n%d\n%s\n", host, (int)getpid(), tmp_dir);
	int wr = cn_write_full(reg->fd, info, (size_t)n);
	if (wr < 0) {
		int r = cn_error_sys(wr, "write %s", tmp);
		close(reg->fd);
		unlink(tmp);
		return r;
	}
	const char *base = strrchr(tmp, '/') + 1;
	snprintf(reg->path, sizeof(reg->path), "%s/.cairn/writers/%s", ds->root, base + 5);
	if (rename(tmp, reg->path) < 0) {
		int r = cn_error_sys(-errno, "rename %s", tmp);
		close(reg->fd);
		unlink(tmp);
		return r;
	}
	return 0;
}

static void writer_unregister(struct writer_reg *reg)
{
	if (reg->fd < 0)
		return;
	unlink(reg->path);
	close(reg->fd);
	reg->fd = -1;
}

int64_t cn_ds_oldest_writer(struct cn_datastore *ds)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/.cairn/writers", ds->root);
	DIR *d = opendir(dir);
	int64_t oldest = INT64_MAX;
	if (!d)
		return oldest;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
			/* Nobody holds it: its process died. */
			unlinkat(dirfd(d), e->d_name, 0);
		} else {
			long long start = strtoll(e->d_name, NULL, 10);
			if (start < oldest)
				oldest = start;
		}
		close(fd);
	}
	closedir(d);
	return oldest;
}

/* ---- snapshot writer ---- */

struct cn_ds_snapshot {
	struct cn_datastore *ds;
	struct cn_snapshot_id id;
	char group[PATH_MAX];
	char tmp_name[64];
	int group_fd; /* flocked */
	int store_lock_fd; /* <root>/.lock, shared (PBS's ProcessLocker) */
	int tmp_fd;
	int have_manifest;
	struct writer_reg reg;
};

static void snapshot_free(struct cn_ds_snapshot *w)
{
	writer_unregister(&w->reg);
	if (w->store_lock_fd >= 0)
		close(w->store_lock_fd);
	if (w->tmp_fd >= 0)
		close(w->tmp_fd);
	if (w->group_fd >= 0)
		close(w->group_fd);
	free(w);
}

/* A dead writer's registration, read while we hold its flock. */
struct dead_writer {
	int pid;
	char tmp_dir[PATH_MAX];
};

/* Whether the registration open as fd (flocked by us) is provably of a
 * dead process: written on this host by a pid that no longer exists. */
static int read_dead_writer(int fd, const char *host, struct dead_writer *dw)
{
	char buf[PATH_MAX + 300];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *pid_line = strchr(buf, '\n');
	char *dir_line = pid_line ? strchr(pid_line + 1, '\n') : NULL;
	char *end = dir_line ? strchr(dir_line + 1, '\n') : NULL;
	if (!end)
		return 0;
	*pid_line++ = *dir_line++ = *end = '\0';
	dw->pid = atoi(pid_line);
	if (strcmp(buf, host) || dw->pid <= 0 || !(kill(dw->pid, 0) < 0 && errno == ESRCH))
		return 0;
	snprintf(dw->tmp_dir, sizeof(dw->tmp_dir), "%s", dir_line);
	return 1;
}

/* Removes a dead writer's temp snapshot directory, if no backup holds its
 * group (that one's own begin removes it then). */
static void remove_dead_tmp_dir(struct cn_datastore *ds, const struct dead_writer *dw)
{
	char group[PATH_MAX];
	snprintf(group, sizeof(group), "%s", dw->tmp_dir);
	char *slash = strrchr(group, '/');
	size_t rl = strlen(ds->root);
	if (!slash || strncmp(slash + 1, ".tmp-", 5) || strncmp(group, ds->root, rl) ||
	    group[rl] != '/')
		return; /* not one of ours */
	*slash = '\0';
	int gfd;
	if (cn_ds_lock_dir(group, LOCK_EX, &gfd, "backup group") < 0) {
		cn_error_clear();
		return;
	}
	if (cn_ds_remove_flat_dir(gfd, slash + 1) < 0 && faccessat(gfd, slash + 1, F_OK, 0) == 0)
		cn_log_warning("%s", cn_error_message());
	close(gfd);
}

/* Removes the chunk temp files ("<digest>.tmp_<pid>_XXXXXX") of the dead
 * pids, in every prefix directory, under its lock. */
static void remove_dead_tmp_chunks(struct cn_datastore *ds, const int *pids, size_t npids)
{
	for (unsigned p = 0; p < 0x10000; p++) {
		char name[8];
		snprintf(name, sizeof(name), "%04x", p);
		if (cn_ds_lock_prefix(ds, (uint16_t)p) < 0)
			break;
		int fd = openat(ds->chunks_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		if (!d && fd >= 0)
			close(fd);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			const char *t = strlen(e->d_name) > 64 + 5 ? e->d_name + 64 : "";
			if (strncmp(t, ".tmp_", 5))
				continue;
			int pid = atoi(t + 5);
			for (size_t i = 0; i < npids; i++)
				if (pid == pids[i] && unlinkat(dirfd(d), e->d_name, 0) == 0)
					break;
		}
		if (d)
			closedir(d);
		cn_ds_unlock_prefix(ds, (uint16_t)p);
	}
}

/* What killed backups left behind: for each registration in
 * .cairn/writers/ whose lock is free and whose process is provably dead
 * (same host, pid gone), its temp snapshot directory, its chunk temp files
 * and the registration itself. A live writer's lock is held, so it is
 * never touched; a registration of another host is left to GC. */
static void cleanup_dead_writers(struct cn_datastore *ds)
{
	char dir[PATH_MAX], host[256] = "";
	gethostname(host, sizeof(host) - 1);
	snprintf(dir, sizeof(dir), "%s/.cairn/writers", ds->root);
	DIR *d = opendir(dir);
	if (!d)
		return;
	int locked[64], pids[64];
	char names[64][256];
	size_t n = 0;
	struct dirent *e;
	while (n < 64 && (e = readdir(d))) {
		struct dead_writer dw;
		if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof(names[0]))
			continue;
		int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0 || !read_dead_writer(fd, host, &dw)) {
			close(fd);
			continue;
		}
		cn_log_info("datastore %s: removing what the killed backup (pid %d) left", ds->root,
			    dw.pid);
		remove_dead_tmp_dir(ds, &dw);
		locked[n] = fd; /* held until its chunk temp files are gone */
		pids[n] = dw.pid;
		snprintf(names[n++], sizeof(names[0]), "%s", e->d_name);
	}
	if (n)
		remove_dead_tmp_chunks(ds, pids, n);
	for (size_t i = 0; i < n; i++) {
		unlinkat(dirfd(d), names[i], 0);
		close(locked[i]);
	}
	closedir(d);
}

/* Removes the temp directories of killed backups of w's group: w holds
 * the group lock, so no other backup of the group runs. */
static void remove_group_tmp_dirs(struct cn_ds_snapshot *w)
{
	int fd = dup(w->group_fd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, ".tmp-", 5) && cn_ds_remove_flat_dir(w->group_fd, e->d_name) < 0)
			cn_log_warning("%s", cn_error_message());
	closedir(d);
}

/* Seconds between fixing a backup's time and beginning its snapshot
 * within which an equal or newer snapshot of the group means a concurrent
 * backup (waiting for the group lock takes about a second). */
#define CONCURRENT_BACKUP_WINDOW 300

int cn_datastore_snapshot_begin(struct cn_datastore *ds, const struct cn_snapshot_id *id,
				struct cn_ds_snapshot **out)
{
	int r;
	if ((r = cn_snapshot_check_ns(id->ns)) < 0 || (r = cn_snapshot_check_type(id->type)) < 0 ||
	    (r = cn_snapshot_check_id(id->id)) < 0)
		return r;
	char tstr[32];
	if ((r = cn_snapshot_format_time(id->time, tstr, sizeof(tstr))) < 0)
		return r;
	struct cn_ds_snapshot *w = calloc(1, sizeof(*w));
	if (!w)
		return cn_error_set(-ENOMEM, "out of memory");
	w->ds = ds;
	w->id = *id;
	w->group_fd = w->store_lock_fd = w->tmp_fd = w->reg.fd = -1;
	if ((r = cn_ds_group_dir(ds, id, w->group, sizeof(w->group))) < 0 ||
	    (r = cn_mkdir_p(w->group, 0755)) < 0)
		goto fail;
	char p[PATH_MAX + 64];
	snprintf(p, sizeof(p), "%s/owner", w->group);
	if (access(p, F_OK) < 0) {
		char line[300];
		int n = snprintf(line, sizeof(line), "%s\n", ds->owner);
		if ((r = cn_write_file_atomic(p, line, (size_t)n, 0644,
					      ds->opts.sync_level != CN_SYNC_NONE)) < 0)
			goto fail;
	}
	/* GC's cleanup holds a group lock for a moment (it checks for dead
	 * backups' debris): retry briefly before calling the group busy. */
	for (int tries = 0;; tries++) {
		r = cn_ds_lock_dir(w->group, LOCK_EX, &w->group_fd, "backup group");
		if (r != -CN_E_LOCKED || tries >= 100)
			break;
		usleep(10000);
	}
	if (r < 0 || (r = cn_ds_lock_store_shared(ds, &w->store_lock_fd)) < 0)
		goto fail;
	struct cn_snapshot_id prev;
	r = cn_datastore_previous_snapshot(ds, id, INT64_MAX, &prev);
	if (r < 0)
		goto fail;
	if (r == 1 && prev.time >= id->time) {
		char pt[32];
		cn_snapshot_format_time(prev.time, pt, sizeof(pt));
		/* A backup's time is fixed just before it begins. A snapshot
		 * made between then and now was made by a backup of the group
		 * that ran at the same time and released the group lock just
		 * before we took it: the group was busy. Otherwise the clock
		 * went back, or the caller chose an old time. */
		int64_t now = (int64_t)time(NULL);
		if (prev.time == id->time)
			r = cn_error_set(-CN_E_LOCKED, "snapshot %s of %s/%s was made in the same second "
					 "as this backup's (by a backup running at the same time or just "
					 "before); a group holds one snapshot per second, so this one "
					 "does not start", pt, id->type, id->id);
		else if (prev.time <= now && now - id->time <= CONCURRENT_BACKUP_WINDOW)
			r = cn_error_set(-CN_E_LOCKED, "another backup of %s/%s ran at the same time "
					 "and just made snapshot %s (this backup's time is %s); "
					 "not starting a second one", id->type, id->id, pt, tstr);
		else
			r = cn_error_set(-EEXIST, "backup time %s is not newer than the last snapshot "
					 "%s of %s/%s", tstr, pt, id->type,
					 id->id);
		goto fail;
	}
	if (faccessat(w->group_fd, tstr, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		r = cn_error_set(-EEXIST, "snapshot %s/%s/%s already exists (unfinished)", id->type,
				 id->id, tstr);
		goto fail;
	}
	remove_group_tmp_dirs(w);
	snprintf(p, sizeof(p), "%s/.tmp-%s-XXXXXX", w->group, tstr);
	if (!mkdtemp(p)) {
		r = cn_error_sys(-errno, "create temporary snapshot directory in %s", w->group);
		goto fail;
	}
	snprintf(w->tmp_name, sizeof(w->tmp_name), "%s", strrchr(p, '/') + 1);
	w->tmp_fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->tmp_fd < 0) {
		r = cn_error_sys(-errno, "open %s", p);
		goto fail_rm;
	}
	if ((r = writer_register(ds, &w->reg, p)) < 0)
		goto fail_rm;
	cleanup_dead_writers(ds);
	*out = w;
	return 0;
fail_rm:
	cn_ds_remove_flat_dir(w->group_fd, w->tmp_name);
fail:
	snapshot_free(w);
	return r;
}

/* Refreshes a chunk an index references and checks that it holds data.
 * The LMDB index can list a chunk whose content a crash lost (renamed into
 * place, not yet synced: an empty file under a directory mtime the index
 * still matches), and has_chunk() trusts it, so a backup would skip the
 * chunk and publish a snapshot that cannot be restored. Such a chunk is
 * dropped from the index (its prefix is rescanned at the next open; the
 * next insert replaces the empty file) and the snapshot refused. */
static int touch_referenced(struct cn_datastore *ds, const uint8_t digest[32], const char *name)
{
	char rel[70], hex[65];
	struct stat st;
	uint16_t prefix = cn_ds_prefix(digest);
	cn_ds_chunk_rel(digest, rel);
	int r = cn_ds_lock_prefix(ds, prefix);
	if (r < 0)
		return r;
	r = cn_ds_touch_locked(ds, rel, -1);
	if (r == 0 && fstatat(ds->chunks_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = errno == ENOENT ? -ENOENT : cn_error_sys(-errno, "stat chunk %s", rel);
	int empty = r == 0 && st.st_size == 0;
	if (empty && cn_chunkindex_remove(ds->index, prefix, (const uint8_t (*)[32])digest, 1,
					  NULL) < 0)
		cn_log_warning("chunk index not updated: %s", cn_error_message());
	cn_ds_unlock_prefix(ds, prefix);
	cn_hex_encode(digest, 32, hex);
	if (r == -ENOENT)
		return cn_error_set(-ENOENT, "chunk %s referenced by %s is not in the datastore "
				    "(removed by garbage collection meanwhile?)", hex, name);
	if (empty)
		return cn_error_set(-CN_E_TRUNCATED, "chunk %s referenced by %s is an empty file "
				    "(content lost in a crash?); dropped from the chunk index, the "
				    "next backup writes it again", hex, name);
	return r;
}

/* Refreshes every chunk an index references; -ENOENT names a missing one,
 * -CN_E_TRUNCATED an empty one. */
static int touch_index_chunks(struct cn_datastore *ds, const char *name, const uint8_t *data,
			      size_t len)
{
	struct cn_index *idx;
	int r = cn_index_parse(data, len, &idx);
	if (r < 0)
		return cn_error_prefix(r, "index %s", name);
	size_t n = cn_index_count(idx);
	for (size_t i = 0; i < n && r == 0; i++)
		r = touch_referenced(ds, cn_index_digest(idx, i), name);
	cn_index_free(idx);
	return r;
}

int cn_datastore_snapshot_write_file(struct cn_ds_snapshot *w, const char *name,
				     const uint8_t *data, size_t len)
{
	int r = cn_ds_check_file_name(name);
	if (r < 0)
		return r;
	size_t n = strlen(name);
	if (!strcmp(name + n - 5, ".didx") || !strcmp(name + n - 5, ".fidx")) {
		if ((r = touch_index_chunks(w->ds, name, data, len)) < 0)
			return r;
	}
	int fd = openat(w->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return cn_error_sys(-errno, "create %s/%s/%s", w->group, w->tmp_name, name);
	r = cn_ds_write_all(w->ds, fd, data, len);
	if (r < 0)
		cn_error_sys(r, "write %s (%zu bytes)", name, len);
	else if (w->ds->opts.sync_level == CN_SYNC_FILE && fsync(fd) < 0)
		r = cn_error_sys(-errno, "fsync %s", name);
	if (close(fd) < 0 && r == 0)
		r = cn_error_sys(-errno, "close %s", name);
	if (r < 0) {
		unlinkat(w->tmp_fd, name, 0);
		return r;
	}
	if (!strcmp(name, CN_MANIFEST_BLOB_NAME))
		w->have_manifest = 1;
	return 0;
}

/* The manifest must be readable and every file it lists present. */
static int check_manifest_files(struct cn_ds_snapshot *w)
{
	int fd = openat(w->tmp_fd, CN_MANIFEST_BLOB_NAME, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cn_error_sys(-errno, "open %s", CN_MANIFEST_BLOB_NAME);
	struct stat st;
	struct cn_buf b = {0};
	int r = fstat(fd, &st) < 0 ? -errno : 0;
	if (r == 0 && (r = cn_buf_reserve(&b, (size_t)st.st_size)) == 0 &&
	    (r = cn_read_full(fd, b.data, (size_t)st.st_size)) == 0)
		b.len = (size_t)st.st_size;
	close(fd);
	struct cn_manifest *m = NULL;
	if (r < 0)
		r = cn_error_sys(r, "read %s", CN_MANIFEST_BLOB_NAME);
	else
		r = cn_manifest_decode(b.data, b.len, NULL, &m);
	cn_buf_free(&b);
	for (size_t i = 0; r == 0 && i < cn_manifest_file_count(m); i++) {
		const char *name;
		cn_manifest_file_at(m, i, &name, NULL, NULL, NULL);
		if (faccessat(w->tmp_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
			r = cn_error_set(-ENOENT, "the manifest lists %s, which was not written", name);
	}
	cn_manifest_free(m);
	return r < 0 ? cn_error_prefix(r, "snapshot %s/%s", w->id.type, w->id.id) : 0;
}

int cn_datastore_snapshot_publish(struct cn_ds_snapshot *w)
{
	struct cn_datastore *ds = w->ds;
	char tstr[32];
	int r;
	if (!w->have_manifest) {
		r = cn_error_set(-EINVAL, "snapshot %s/%s: no %s written, refusing to publish",
				 w->id.type, w->id.id, CN_MANIFEST_BLOB_NAME);
		goto fail;
	}
	if ((r = check_manifest_files(w)) < 0)
		goto fail;
	/* PBS needs every prefix directory of the store before it serves or
	 * collects it: a new store's are all there before its first snapshot
	 * is (and covered by the syncfs below). While its helper thread is
	 * still making them, what is written so far (chunks, indexes, the
	 * directories made) is written back meanwhile, so that the syncfs
	 * below has only the rest to do: the syncfs of 65536 new directories
	 * took 0.3-0.4 s on ext4. A syncfs that returns at once (nothing to
	 * write, e.g. tmpfs) ends the loop instead of spinning. */
	while (ds->opts.sync_level == CN_SYNC_FILESYSTEM && cn_ds_layout_pending(ds)) {
		int64_t t0 = cn_monotonic_ns();
		if (syncfs(ds->root_fd) < 0 || cn_monotonic_ns() - t0 < 1000000)
			break; /* (a failing syncfs: the one below says why) */
	}
	if ((r = cn_ds_layout_wait_dirs(ds)) < 0)
		goto fail;
	cn_snapshot_format_time(w->id.time, tstr, sizeof(tstr));
	if (ds->opts.sync_level == CN_SYNC_FILE && fsync(w->tmp_fd) < 0) {
		r = cn_error_sys(-errno, "fsync snapshot directory");
		goto fail;
	}
	/* One syncfs covers every chunk and file written before it. */
	if (ds->opts.sync_level == CN_SYNC_FILESYSTEM && syncfs(ds->root_fd) < 0) {
		r = cn_error_sys(-errno, "syncfs %s", ds->root);
		goto fail;
	}
	if (renameat2(w->group_fd, w->tmp_name, w->group_fd, tstr, RENAME_NOREPLACE) < 0) {
		r = cn_error_sys(-errno, "publish snapshot %s/%s", w->group, tstr);
		goto fail;
	}
	if (ds->opts.sync_level != CN_SYNC_NONE && fsync(w->group_fd) < 0)
		cn_log_warning("fsync %s: %s", w->group, strerror(errno));
	snapshot_free(w);
	return 0;
fail:
	cn_datastore_snapshot_abort(w);
	return r;
}

void cn_datastore_snapshot_abort(struct cn_ds_snapshot *w)
{
	if (!w)
		return;
	if (w->tmp_fd >= 0) {
		close(w->tmp_fd);
		w->tmp_fd = -1;
		cn_ds_remove_flat_dir(w->group_fd, w->tmp_name);
	}
	snapshot_free(w);
}
