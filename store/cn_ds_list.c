/* cn_ds_list — what a datastore holds and who may change it: the flocks
 * on group and snapshot directories and the shared lock on <root>/.lock
 * that PBS respects, listing namespaces, groups and snapshots, reading a
 * snapshot's files (size-checked before reading), protecting and removing
 * snapshots, walks over every group or snapshot, and the cleanup of a
 * group's debris.
 * Invariants: listings skip names that are not valid (dot entries, temp
 * and half-removed directories), so a crash's leftovers never show; a
 * snapshot is removed by renaming it to a hidden name first, so it is
 * never seen half-removed; a group's debris is removed only under the
 * group lock, never while a backup of it runs. */
#include "store/cn_datastore.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "store/cn_blob.h"
#include "store/cn_datastore_internal.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- paths ---- */

/* "ns/a/ns/b" for namespace "a/b" ("" for the root), below ds->root. */
static int ns_dir(const struct cn_datastore *ds, const char *ns, char *out, size_t out_size)
{
	struct cn_snapshot_id g = {.type = "host", .id = "x"};
	if (strlen(ns) > CN_NS_MAX)
		return cn_error_set(-EINVAL, "namespace too long");
	strcpy(g.ns, ns);
	char rel[PATH_MAX];
	if (cn_snapshot_group_path(&g, rel, sizeof(rel)) < 0)
		return cn_error_set(-ENAMETOOLONG, "namespace path too long");
	rel[strlen(rel) - strlen("host/x")] = '\0'; /* keep the "ns/.../" prefix */
	int w = snprintf(out, out_size, "%s/%s", ds->root, rel);
	return (w < 0 || (size_t)w >= out_size) ? cn_error_set(-ENAMETOOLONG, "path too long") : 0;
}

/* ---- locks ---- */

int cn_ds_lock_dir(const char *path, int how, int *fd_out, const char *what)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cn_error_sys(-errno, "open %s", path);
	if (flock(fd, how | LOCK_NB) < 0) {
		int e = errno;
		close(fd);
		if (e == EWOULDBLOCK)
			return cn_error_set(-CN_E_LOCKED, "%s %s is locked (%s)", what, path,
					    how == LOCK_EX ? "backup or removal running?" : "in use");
		return cn_error_sys(-e, "lock %s", path);
	}
	*fd_out = fd;
	return 0;
}

/* The shared lock on <root>/.lock: upstream's backup writers take a
 * non-blocking fcntl read lock on the whole file (ProcessLocker::
 * try_shared_lock), its GC a write lock on the whole file. Ours is an OFD
 * read lock on byte 1 only: it conflicts with PBS's GC lock all the same
 * (so PBS never collects while we write; it knows nothing of our
 * writers' age), several of ours in one process stand side by side, and
 * byte 0 stays free of cairn's locks, so any lock found there belongs to
 * another program (cn_ds_store_foreign_lock). */
#define STORE_LOCK_CAIRN_BYTE 1

int cn_ds_lock_store_shared(struct cn_datastore *ds, int *fd_out)
{
	int fd = openat(ds->root_fd, ".lock", O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return cn_error_sys(-errno, "open %s/.lock", ds->root);
	struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET,
			   .l_start = STORE_LOCK_CAIRN_BYTE, .l_len = 1};
	if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		int e = errno;
		close(fd);
		if (e == EAGAIN || e == EACCES)
			return cn_error_set(-CN_E_LOCKED, "datastore %s is locked exclusively "
					    "(garbage collection of another process running?)", ds->root);
		return cn_error_sys(-e, "lock %s/.lock", ds->root);
	}
	*fd_out = fd;
	return 0;
}

int cn_ds_store_foreign_lock(int fd, int *pid)
{
	/* a write lock on byte 0 conflicts with any lock there, and only
	 * other programs' locks reach byte 0 */
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	if (fl.l_type == F_UNLCK)
		return 0;
	*pid = fl.l_pid > 0 ? (int)fl.l_pid : -1;
	return 1;
}

/* ---- listing ---- */

static int is_dir_at(int dfd, const struct dirent *e)
{
	if (e->d_type == DT_DIR)
		return 1;
	if (e->d_type != DT_UNKNOWN)
		return 0;
	struct stat st;
	return fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

void cn_datastore_free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int cn_datastore_list_namespaces(struct cn_datastore *ds, const char *ns, char ***out, size_t *n)
{
	char dir[PATH_MAX], sub[PATH_MAX + 4];
	int r = ns_dir(ds, ns, dir, sizeof(dir));
	if (r < 0)
		return r;
	snprintf(sub, sizeof(sub), "%sns", dir);
	*out = NULL;
	*n = 0;
	DIR *d = opendir(sub);
	if (!d)
		return errno == ENOENT ? 0 : cn_error_sys(-errno, "open %s", sub);
	char **names = NULL;
	size_t cnt = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || !is_dir_at(dirfd(d), e))
			continue;
		char full[CN_NS_MAX + 2];
		int w = snprintf(full, sizeof(full), "%s%s%s", ns, *ns ? "/" : "", e->d_name);
		if (w < 0 || (size_t)w >= sizeof(full) || cn_snapshot_check_ns(full) < 0)
			continue;
		char **p = realloc(names, (cnt + 1) * sizeof(*names));
		if (!p || !(p[cnt] = strdup(full))) {
			names = p ? p : names;
			cn_datastore_free_names(names, cnt);
			closedir(d);
			return cn_error_set(-ENOMEM, "out of memory");
		}
		names = p;
		cnt++;
	}
	closedir(d);
	cn_error_clear();
	if (cnt)
		qsort(names, cnt, sizeof(*names), cmp_str);
	*out = names;
	*n = cnt;
	return 0;
}

int cn_datastore_list_groups(struct cn_datastore *ds, const char *ns,
			     struct cn_snapshot_id **out, size_t *n)
{
	static const char *types[] = {"ct", "host", "vm"};
	char dir[PATH_MAX], tdir[PATH_MAX + 8];
	int r = ns_dir(ds, ns, dir, sizeof(dir));
	if (r < 0)
		return r;
	struct cn_snapshot_id *groups = NULL;
	size_t cnt = 0;
	*out = NULL;
	*n = 0;
	for (size_t t = 0; t < CN_ARRAY_SIZE(types); t++) {
		snprintf(tdir, sizeof(tdir), "%s%s", dir, types[t]);
		DIR *d = opendir(tdir);
		if (!d) {
			if (errno == ENOENT)
				continue;
			free(groups);
			return cn_error_sys(-errno, "open %s", tdir);
		}
		size_t first = cnt;
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.' || strlen(e->d_name) > CN_BACKUP_ID_MAX ||
			    !is_dir_at(dirfd(d), e) || cn_snapshot_check_id(e->d_name) < 0)
				continue;
			struct cn_snapshot_id *p = realloc(groups, (cnt + 1) * sizeof(*groups));
			if (!p) {
				free(groups);
				closedir(d);
				return cn_error_set(-ENOMEM, "out of memory");
			}
			groups = p;
			memset(&groups[cnt], 0, sizeof(groups[cnt]));
			strcpy(groups[cnt].ns, ns);
			strcpy(groups[cnt].type, types[t]);
			strcpy(groups[cnt].id, e->d_name);
			cnt++;
		}
		closedir(d);
		/* sort the ids of this type */
		for (size_t i = first + 1; i < cnt; i++)
			for (size_t j = i; j > first && strcmp(groups[j - 1].id, groups[j].id) > 0; j--) {
				struct cn_snapshot_id tmp = groups[j];
				groups[j] = groups[j - 1];
				groups[j - 1] = tmp;
			}
	}
	cn_error_clear();
	*out = groups;
	*n = cnt;
	return 0;
}

static int64_t manifest_size(struct cn_datastore *ds, const struct cn_snapshot_id *id,
			     int *encrypted)
{
	struct cn_buf b = {0};
	struct cn_manifest *m;
	int64_t size = -1;
	if (cn_datastore_read_file(ds, id, CN_MANIFEST_BLOB_NAME, &b) == 0 &&
	    cn_manifest_decode(b.data, b.len, NULL, &m) == 0) {
		size = 0;
		*encrypted = cn_manifest_encrypted(m) || cn_manifest_signed(m);
		for (size_t i = 0; i < cn_manifest_file_count(m); i++) {
			uint64_t s;
			cn_manifest_file_at(m, i, NULL, &s, NULL, NULL);
			size += (int64_t)s;
		}
		cn_manifest_free(m);
	}
	cn_buf_free(&b);
	cn_error_clear();
	return size;
}

static int cmp_info(const void *a, const void *b)
{
	const struct cn_ds_snapshot_info *x = a, *y = b;
	return x->id.time < y->id.time ? -1 : x->id.time > y->id.time;
}

int cn_datastore_list_snapshots(struct cn_datastore *ds, const struct cn_snapshot_id *group,
				int with_sizes, struct cn_ds_snapshot_info **out, size_t *n)
{
	char dir[PATH_MAX];
	int r = cn_ds_group_dir(ds, group, dir, sizeof(dir));
	if (r < 0)
		return r;
	*out = NULL;
	*n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : cn_error_sys(-errno, "open %s", dir);
	struct cn_ds_snapshot_info *list = NULL;
	size_t cnt = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		int64_t t;
		char canon[32], sub[512];
		if (e->d_name[0] == '.' || strlen(e->d_name) > 25 ||
		    cn_snapshot_parse_time(e->d_name, &t) < 0 ||
		    cn_snapshot_format_time(t, canon, sizeof(canon)) < 0 ||
		    strcmp(canon, e->d_name) || !is_dir_at(dirfd(d), e))
			continue;
		struct cn_ds_snapshot_info *p = realloc(list, (cnt + 1) * sizeof(*list));
		if (!p) {
			free(list);
			closedir(d);
			return cn_error_set(-ENOMEM, "out of memory");
		}
		list = p;
		struct cn_ds_snapshot_info *info = &list[cnt++];
		memset(info, 0, sizeof(*info));
		info->id = *group;
		info->id.time = t;
		snprintf(sub, sizeof(sub), "%s/%s", e->d_name, CN_MANIFEST_BLOB_NAME);
		info->finished = faccessat(dirfd(d), sub, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
		snprintf(sub, sizeof(sub), "%s/.protected", e->d_name);
		info->protected_ = faccessat(dirfd(d), sub, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
		info->size = -1;
		info->encrypted = -1;
	}
	closedir(d);
	cn_error_clear();
	if (cnt)
		qsort(list, cnt, sizeof(*list), cmp_info);
	for (size_t i = 0; with_sizes && i < cnt; i++)
		if (list[i].finished)
			list[i].size = manifest_size(ds, &list[i].id, &list[i].encrypted);
	*out = list;
	*n = cnt;
	return 0;
}

int cn_datastore_previous_snapshot(struct cn_datastore *ds, const struct cn_snapshot_id *group,
				   int64_t before, struct cn_snapshot_id *out)
{
	struct cn_ds_snapshot_info *list;
	size_t n;
	int r = cn_datastore_list_snapshots(ds, group, 0, &list, &n);
	if (r < 0)
		return r;
	r = 0;
	for (size_t i = n; i-- > 0;) {
		if (list[i].finished && list[i].id.time < before) {
			*out = list[i].id;
			r = 1;
			break;
		}
	}
	free(list);
	return r;
}

/* Refuses, before reading it, a snapshot file larger than its kind
 * allows: a blob beyond the largest DataBlob, an index beyond
 * CN_INDEX_MAX_FILE_SIZE or whose size disagrees with its header. A
 * damaged or hostile file (a sparse gigabyte) then costs no memory. */
static int check_file_size(int fd, const char *name, const char *path, uint64_t size)
{
	size_t n = strlen(name);
	if (!strcmp(name + n - 5, ".blob")) {
		if (size > CN_BLOB_MAX_ENCODED_SIZE)
			return cn_error_set(-CN_E_FORMAT, "%s: %llu bytes, larger than any blob (%u)",
					    path, (unsigned long long)size, CN_BLOB_MAX_ENCODED_SIZE);
		return 0;
	}
	if (size > CN_INDEX_MAX_FILE_SIZE)
		return cn_error_set(-CN_E_FORMAT, "%s: index file of %llu bytes (limit %llu)", path,
				    (unsigned long long)size,
				    (unsigned long long)CN_INDEX_MAX_FILE_SIZE);
	uint8_t hdr[CN_INDEX_HEADER_SIZE];
	size_t hl = size < sizeof(hdr) ? (size_t)size : sizeof(hdr);
	int r = cn_read_full(fd, hdr, hl);
	if (r < 0)
		return cn_error_sys(r, "read %s", path);
	r = cn_index_check_size(hdr, hl, size, NULL, NULL);
	return r < 0 ? cn_error_prefix(r, "%s", path) : 0;
}

int cn_ds_read_snapshot_file(const char *path, const char *name, struct cn_buf *out)
{
	struct stat st;
	/* not a FIFO planted in the snapshot dir: no open may block */
	int fd = cn_open_regular(path, 0, &st), r = 0;
	if (fd < 0)
		return fd;
	r = check_file_size(fd, name, path, (uint64_t)st.st_size);
	/* read straight into out: one copy of the file in memory */
	if (r == 0 && cn_buf_reserve(out, (size_t)st.st_size) < 0)
		r = cn_error_set(-ENOMEM, "out of memory reading %s", path);
	if (r == 0 && lseek(fd, 0, SEEK_SET) < 0)
		r = cn_error_sys(-errno, "seek %s", path);
	if (r == 0 && (r = cn_read_full(fd, out->data + out->len, (size_t)st.st_size)) < 0)
		r = cn_error_sys(r, "read %s", path);
	if (r == 0)
		out->len += (size_t)st.st_size;
	close(fd);
	return r;
}

int cn_datastore_read_file(struct cn_datastore *ds, const struct cn_snapshot_id *id,
			   const char *name, struct cn_buf *out)
{
	char path[PATH_MAX];
	int r = cn_ds_check_file_name(name);
	if (r < 0)
		return r;
	if ((r = cn_ds_snapshot_dir(ds, id, name, path, sizeof(path))) < 0)
		return r;
	return cn_ds_read_snapshot_file(path, name, out);
}

int cn_datastore_set_protected(struct cn_datastore *ds, const struct cn_snapshot_id *id, int on)
{
	char path[PATH_MAX];
	int r = cn_ds_snapshot_dir(ds, id, ".protected", path, sizeof(path));
	if (r < 0)
		return r;
	if (on) {
		int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			return cn_error_sys(-errno, "create %s", path);
		close(fd);
		return 0;
	}
	if (unlink(path) < 0 && errno != ENOENT)
		return cn_error_sys(-errno, "remove %s", path);
	return 0;
}

int cn_datastore_remove_snapshot(struct cn_datastore *ds, const struct cn_snapshot_id *id,
				 int force)
{
	char dir[PATH_MAX], gdir[PATH_MAX], tstr[32], hidden[96];
	int r, fd, gfd;
	if ((r = cn_ds_snapshot_dir(ds, id, NULL, dir, sizeof(dir))) < 0 ||
	    (r = cn_ds_group_dir(ds, id, gdir, sizeof(gdir))) < 0 ||
	    (r = cn_snapshot_format_time(id->time, tstr, sizeof(tstr))) < 0)
		return r;
	if ((r = cn_ds_lock_dir(dir, LOCK_EX, &fd, "snapshot")) < 0)
		return r;
	char prot[PATH_MAX + 16];
	snprintf(prot, sizeof(prot), "%s/.protected", dir);
	if (!force && access(prot, F_OK) == 0) {
		close(fd);
		return cn_error_set(-EPERM, "snapshot %s is protected", dir);
	}
	gfd = open(gdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (gfd < 0) {
		r = cn_error_sys(-errno, "open %s", gdir);
		close(fd);
		return r;
	}
	snprintf(hidden, sizeof(hidden), ".del-%s-%d-%lx", tstr, (int)getpid(), (long)random());
	if (renameat(gfd, tstr, gfd, hidden) < 0) {
		r = cn_error_sys(-errno, "remove snapshot %s", dir);
	} else {
		r = cn_ds_remove_flat_dir(gfd, hidden);
		if (ds->opts.sync_level != CN_SYNC_NONE)
			fsync(gfd);
	}
	close(gfd);
	close(fd);
	return r;
}

/* ---- walking ---- */

static int walk_ns(struct cn_datastore *ds, const char *ns, cn_ds_group_fn fn, void *ctx)
{
	struct cn_snapshot_id *groups;
	size_t ng;
	int r = cn_datastore_list_groups(ds, ns, &groups, &ng);
	if (r < 0)
		return r;
	for (size_t g = 0; g < ng && r == 0; g++)
		r = fn(ds, &groups[g], ctx);
	free(groups);
	if (r < 0)
		return r;
	char **subs;
	size_t nsub;
	if ((r = cn_datastore_list_namespaces(ds, ns, &subs, &nsub)) < 0)
		return r;
	for (size_t i = 0; i < nsub && r == 0; i++)
		r = walk_ns(ds, subs[i], fn, ctx);
	cn_datastore_free_names(subs, nsub);
	return r;
}

int cn_ds_for_each_group(struct cn_datastore *ds, cn_ds_group_fn fn, void *ctx)
{
	return walk_ns(ds, "", fn, ctx);
}

struct snapshot_walk {
	cn_ds_snapshot_fn fn;
	void *ctx;
};

static int walk_group_snapshots(struct cn_datastore *ds, const struct cn_snapshot_id *group,
				void *ctx)
{
	struct snapshot_walk *sw = ctx;
	struct cn_ds_snapshot_info *snaps = NULL;
	size_t n = 0;
	int r = cn_datastore_list_snapshots(ds, group, 0, &snaps, &n);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = sw->fn(ds, &snaps[i].id, sw->ctx);
	free(snaps);
	return r;
}

int cn_ds_for_each_snapshot(struct cn_datastore *ds, cn_ds_snapshot_fn fn, void *ctx)
{
	struct snapshot_walk sw = {fn, ctx};
	return walk_ns(ds, "", walk_group_snapshots, &sw);
}

int cn_ds_cleanup_group(struct cn_datastore *ds, const struct cn_snapshot_id *group)
{
	char gdir[PATH_MAX];
	int r = cn_ds_group_dir(ds, group, gdir, sizeof(gdir)), gfd;
	if (r < 0)
		return r;
	/* A running backup holds the group lock: leave its temp dir alone. */
	r = cn_ds_lock_dir(gdir, LOCK_EX, &gfd, "backup group");
	if (r == -CN_E_LOCKED || r == -ENOENT) {
		cn_error_clear();
		return 0;
	}
	if (r < 0)
		return r;
	DIR *d = opendir(gdir);
	int removed = 0;
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (strncmp(e->d_name, ".tmp-", 5) && strncmp(e->d_name, ".del-", 5))
				continue;
			if (cn_ds_remove_flat_dir(gfd, e->d_name) == 0)
				removed++;
			else
				cn_log_warning("%s", cn_error_message());
		}
		closedir(d);
	}
	close(gfd);
	return removed;
}
