/* cn_datastore — what a datastore is on disk and how a handle to it comes
 * and goes: the layout and its creation (resumed when a creation was
 * interrupted), open/close, the paths of groups, snapshots and chunks, the
 * prefix locks, and keeping the LMDB chunk index in step with the prefix
 * directories. The other concerns of the handle live beside it, sharing
 * struct cn_datastore through cn_datastore_internal.h:
 *   cn_ds_chunks.c    chunk I/O (insert, read, touch, O_DIRECT)
 *   cn_ds_snapshot.c  the snapshot writer, its registry, crash debris
 *   cn_ds_list.c      directory and store locks, listing, reading,
 *                     protecting and removing snapshots, walks
 * Invariants kept here: every prefix directory exists once
 * .cairn/layout-complete does; the index is only a cache, so a failure to
 * update it is logged and costs a rescan, never a backup; prefix locks are
 * taken in ascending order when more than one is held (rescan_batch). */
#include "store/cn_datastore.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "store/cn_datastore_internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_OWNER "root@pam"

void cn_datastore_opts_init(struct cn_datastore_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->sync_level = CN_SYNC_FILESYSTEM;
}

const char *cn_datastore_path(const struct cn_datastore *ds)
{
	return ds->root;
}

enum cn_sync_level cn_datastore_sync_level(const struct cn_datastore *ds)
{
	return ds->opts.sync_level;
}

/* ---- small helpers ---- */

int cn_ds_write_all(struct cn_datastore *ds, int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = ds->opts.write_fn ? ds->opts.write_fn(fd, p, len, ds->opts.write_ctx)
					      : write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
static int is_hex64(const char *s, size_t len)
{
	if (len < 64)
		return 0;
	for (size_t i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* A snapshot file name: plain, no path, PBS's BACKUP_FILE_REGEX suffixes. */
int cn_ds_check_file_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 200 || name[0] == '.' || strchr(name, '/'))
		return cn_error_set(-CN_E_PATH, "invalid snapshot file name '%s'", name);
	if (!(n > 5 && (!strcmp(name + n - 5, ".didx") || !strcmp(name + n - 5, ".fidx") ||
			!strcmp(name + n - 5, ".blob"))))
		return cn_error_set(-CN_E_PATH, "snapshot file '%s' must end in .didx, .fidx or .blob",
				    name);
	return 0;
}

/* Removes a directory holding only files (snapshot and temp dirs). */
int cn_ds_remove_flat_dir(int parent_fd, const char *name)
{
	int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 0 : cn_error_sys(-errno, "open %s", name);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return cn_error_sys(-errno, "opendir %s", name);
	}
	struct dirent *e;
	int r = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) < 0 && errno != ENOENT && r == 0)
			r = cn_error_sys(-errno, "remove %s/%s", name, e->d_name);
	}
	closedir(d);
	if (r == 0 && unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		r = cn_error_sys(-errno, "remove directory %s", name);
	return r;
}

/* ---- paths ---- */

int cn_ds_group_dir(const struct cn_datastore *ds, const struct cn_snapshot_id *id, char *out,
		    size_t out_size)
{
	char rel[PATH_MAX];
	if (cn_snapshot_group_path(id, rel, sizeof(rel)) < 0)
		return cn_error_set(-ENAMETOOLONG, "group path too long");
	int w = snprintf(out, out_size, "%s/%s", ds->root, rel);
	return (w < 0 || (size_t)w >= out_size) ? cn_error_set(-ENAMETOOLONG, "path too long") : 0;
}

int cn_ds_snapshot_dir(const struct cn_datastore *ds, const struct cn_snapshot_id *id,
		       const char *name, char *out, size_t out_size)
{
	char rel[PATH_MAX];
	if (cn_snapshot_path(id, rel, sizeof(rel)) < 0)
		return cn_error_set(-ENAMETOOLONG, "snapshot path too long");
	int w = name ? snprintf(out, out_size, "%s/%s/%s", ds->root, rel, name)
		     : snprintf(out, out_size, "%s/%s", ds->root, rel);
	return (w < 0 || (size_t)w >= out_size) ? cn_error_set(-ENAMETOOLONG, "path too long") : 0;
}

void cn_datastore_chunk_path(const struct cn_datastore *ds, const uint8_t digest[32], char *out,
			     size_t out_size)
{
	char hex[65];
	cn_hex_encode(digest, 32, hex);
	snprintf(out, out_size, "%s/.chunks/%.4s/%s", ds->root, hex, hex);
}

/* "XXXX/<hex>" relative to .chunks */
void cn_ds_chunk_rel(const uint8_t digest[32], char out[70])
{
	char hex[65];
	cn_hex_encode(digest, 32, hex);
	snprintf(out, 70, "%.4s/%s", hex, hex);
}

/* ---- prefix locks ---- */

int cn_ds_lock_prefix(struct cn_datastore *ds, uint16_t prefix)
{
	pthread_mutex_lock(&ds->stripes[prefix % CN_DS_LOCK_STRIPES]);
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = prefix, .l_len = 1};
	while (fcntl(ds->lock_fd, F_OFD_SETLKW, &fl) < 0) {
		if (errno == EINTR)
			continue;
		int r = cn_error_sys(-errno, "lock chunk directory %04x", prefix);
		pthread_mutex_unlock(&ds->stripes[prefix % CN_DS_LOCK_STRIPES]);
		return r;
	}
	return 0;
}

void cn_ds_unlock_prefix(struct cn_datastore *ds, uint16_t prefix)
{
	struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = prefix, .l_len = 1};
	fcntl(ds->lock_fd, F_OFD_SETLK, &fl);
	pthread_mutex_unlock(&ds->stripes[prefix % CN_DS_LOCK_STRIPES]);
}

int cn_ds_prefix_mtime(struct cn_datastore *ds, uint16_t prefix, struct timespec *mtime)
{
	char name[8];
	struct stat st;
	snprintf(name, sizeof(name), "%04x", prefix);
	if (fstatat(ds->chunks_fd, name, &st, 0) < 0)
		return cn_error_sys(-errno, "stat %s/.chunks/%s", ds->root, name);
	*mtime = st.st_mtim;
	return 0;
}

int cn_ds_prefix_in_step(struct cn_datastore *ds, uint16_t prefix)
{
	struct timespec mt;
	if (cn_ds_prefix_mtime(ds, prefix, &mt) < 0)
		return 0;
	return cn_chunkindex_prefix_current(ds->index, prefix, &mt) == 1;
}

/* Reads one prefix directory (caller holds its lock) into dir; the
 * entries are malloc'd (free dir->entries). */
static int read_prefix_dir(struct cn_datastore *ds, uint16_t prefix, struct cn_chunkindex_dir *dir)
{
	char name[8];
	snprintf(name, sizeof(name), "%04x", prefix);
	memset(dir, 0, sizeof(*dir));
	dir->prefix = prefix;
	int fd = openat(ds->chunks_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cn_error_sys(-errno, "open %s/.chunks/%s", ds->root, name);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return cn_error_sys(-errno, "opendir .chunks/%s", name);
	}
	struct cn_chunkindex_entry *ents = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	int r = 0;
	/* mtime first: a change during the read makes the record stale,
	 * which only costs another rescan */
	struct stat dst;
	if (fstat(dirfd(d), &dst) < 0)
		r = cn_error_sys(-errno, "stat .chunks/%s", name);
	while (r == 0 && (e = readdir(d))) {
		size_t len = strlen(e->d_name);
		struct stat st;
		if (len != 64 || !is_hex64(e->d_name, len))
			continue; /* temp files, .bad files, strangers */
		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			void *p = realloc(ents, cap * sizeof(*ents));
			if (!p) {
				r = cn_error_set(-ENOMEM, "out of memory");
				break;
			}
			ents = p;
		}
		cn_hex_decode(e->d_name, ents[n].digest, 32);
		ents[n].size = (uint64_t)st.st_size;
		n++;
	}
	closedir(d);
	if (r < 0) {
		free(ents);
		return r;
	}
	dir->entries = ents;
	dir->n = n;
	dir->mtime = dst.st_mtim;
	return 0;
}

int cn_ds_rescan_prefix(struct cn_datastore *ds, uint16_t prefix)
{
	struct cn_chunkindex_dir dir;
	int r = read_prefix_dir(ds, prefix, &dir);
	if (r < 0)
		return r;
	r = cn_chunkindex_sync_dirs(ds->index, &dir, 1);
	free((void *)dir.entries);
	return r;
}

#define RESCAN_BATCH 256
_Static_assert(RESCAN_BATCH <= CN_DS_LOCK_STRIPES, "a batch must not hold two prefixes of one stripe");

/* Rescans the prefixes in batch[0..n) (ascending, all within one block of
 * CN_DS_LOCK_STRIPES consecutive prefixes, so no two share a stripe mutex)
 * in one transaction, holding all their locks meanwhile (always taken in
 * ascending order, and nobody else holds two, so this cannot deadlock). */
static int rescan_batch(struct cn_datastore *ds, const uint16_t *batch, size_t n)
{
	struct cn_chunkindex_dir dirs[RESCAN_BATCH] = {0};
	size_t locked = 0, read = 0;
	int r = 0;
	for (; locked < n; locked++)
		if ((r = cn_ds_lock_prefix(ds, batch[locked])) < 0)
			break;
	for (; r == 0 && read < n; read++)
		r = read_prefix_dir(ds, batch[read], &dirs[read]);
	if (r == 0)
		r = cn_chunkindex_sync_dirs(ds->index, dirs, n);
	for (size_t i = 0; i < read; i++)
		free((void *)dirs[i].entries);
	while (locked-- > 0)
		cn_ds_unlock_prefix(ds, batch[locked]);
	return r;
}

int cn_datastore_check_index(struct cn_datastore *ds)
{
	uint16_t batch[RESCAN_BATCH];
	size_t nb = 0;
	int rescanned = 0, r = cn_datastore_layout_wait(ds);
	for (unsigned p = 0; p < 0x10000 && r == 0; p++) {
		struct timespec mt;
		if ((r = cn_ds_prefix_mtime(ds, (uint16_t)p, &mt)) < 0)
			break;
		r = cn_chunkindex_prefix_current(ds->index, (uint16_t)p, &mt);
		if (r < 0)
			break;
		if (r == 1) {
			r = 0;
			continue;
		}
		if (nb && p / CN_DS_LOCK_STRIPES != batch[0] / CN_DS_LOCK_STRIPES) {
			r = rescan_batch(ds, batch, nb);
			rescanned += (int)nb;
			nb = 0;
			if (r < 0)
				break;
		}
		batch[nb++] = (uint16_t)p;
		if (nb == RESCAN_BATCH) {
			r = rescan_batch(ds, batch, nb);
			rescanned += (int)nb;
			nb = 0;
		}
	}
	if (r == 0 && nb) {
		r = rescan_batch(ds, batch, nb);
		rescanned += (int)nb;
	}
	return r < 0 ? r : rescanned;
}

int64_t cn_datastore_index_count(struct cn_datastore *ds)
{
	return cn_chunkindex_count(ds->index);
}

/* ---- open / create ---- */

/* Starts a new store: the root and .chunks; complete_store() makes the
 * rest. */
static int create_store(const char *root)
{
	char p[PATH_MAX];
	int r = cn_mkdir_p(root, 0755);
	if (r < 0)
		return r;
	snprintf(p, sizeof(p), "%s/.chunks", root);
	if (mkdir(p, 0750) < 0) {
		if (errno == EEXIST)
			return cn_error_set(-EEXIST, "%s is already a datastore", root);
		return cn_error_sys(-errno, "mkdir %s", p);
	}
	return 0;
}

/* Written into .cairn/ once every prefix directory and .lock exist. */
#define COMPLETE_MARK ".cairn/layout-complete"

int cn_ds_make_prefix_dir(struct cn_datastore *ds, uint16_t prefix)
{
	char name[8];
	struct stat st;
	snprintf(name, sizeof(name), "%04x", prefix);
	if (mkdirat(ds->chunks_fd, name, 0750) == 0)
		return 1;
	int e = errno;
	if (e == EEXIST && fstatat(ds->chunks_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISDIR(st.st_mode))
		return 0;
	return e == EEXIST ? -ENOTDIR : -e;
}

/* Makes every missing prefix directory; *made counts those made now. */
static int make_prefix_dirs(struct cn_datastore *ds, unsigned *made)
{
	*made = 0;
	for (unsigned i = 0; i < 0x10000; i++) {
		int r = cn_ds_make_prefix_dir(ds, (uint16_t)i);
		if (r >= 0) {
			*made += (unsigned)r;
			continue;
		}
		return cn_error_sys(r, "datastore %s is incomplete: cannot make chunk directory "
				    ".chunks/%04x (%u of 65536 made now); free space or inodes and "
				    "run again to complete it", ds->root, i, *made);
	}
	return 0;
}

/* Makes <root>/.lock unless it exists. */
static int make_lock_file(struct cn_datastore *ds)
{
	if (faccessat(ds->root_fd, ".lock", F_OK, 0) == 0)
		return 0;
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/.lock", ds->root);
	return cn_write_file_atomic(p, "", 0, 0644, 0);
}

static int write_complete_mark(struct cn_datastore *ds)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/" COMPLETE_MARK, ds->root);
	return cn_write_file_atomic(p, "", 0, 0644, ds->opts.sync_level != CN_SYNC_NONE);
}

/* Makes whatever of the layout is missing (prefix directories, .lock) and
 * then the mark, unless the mark is there. So a creation that stopped
 * half-way (no inodes or space left, killed) is completed by the next
 * open instead of leaving a store whose missing directories fail every
 * backup; an existing store (made by PBS or an older cairn) is checked
 * once. */
static int complete_store(struct cn_datastore *ds)
{
	if (faccessat(ds->root_fd, COMPLETE_MARK, F_OK, 0) == 0)
		return 0;
	unsigned made;
	int r = make_prefix_dirs(ds, &made);
	if (r == 0)
		r = make_lock_file(ds);
	if (r == 0)
		r = write_complete_mark(ds);
	if (r == 0 && made > 0 && made < 0x10000)
		cn_log_info("datastore %s: completed an interrupted creation (%u chunk directories "
			    "made)", ds->root, made);
	return r;
}

/* Records every prefix directory of a store just created as empty and in
 * step, in one transaction: they are, and reading 65536 empty directories
 * (under their locks) cost as much as creating them on tmpfs (1.2 s
 * against 0.6 s) and 0.8 s of 5.5 s on ext4. Only directories the index
 * has no record of are recorded: one a chunk went into meanwhile has its
 * record from that insert (see cn_chunkindex_add_dirs). A chunk another
 * process adds meanwhile changes its directory's mtime, and an index that
 * misses a chunk only costs writing it again. */
static int record_new_prefixes(struct cn_datastore *ds)
{
	struct cn_chunkindex_dir *dirs = calloc(0x10000, sizeof(*dirs));
	if (!dirs)
		return cn_error_set(-ENOMEM, "out of memory");
	int r = 0;
	for (unsigned p = 0; p < 0x10000 && r == 0; p++) {
		dirs[p].prefix = (uint16_t)p;
		r = cn_ds_prefix_mtime(ds, (uint16_t)p, &dirs[p].mtime);
	}
	if (r == 0)
		r = cn_chunkindex_add_dirs(ds->index, dirs, 0x10000);
	free(dirs);
	return r;
}

/* The helper thread of a new store: makes the 65536 prefix directories
 * (2-3 s on ext4, mostly in the kernel) while the backup already hashes,
 * compresses and stores chunks; an insert that comes first makes its own
 * directory (cn_ds_make_prefix_dir). Once they are made a snapshot may be
 * published (cn_ds_layout_wait_dirs); recording them in the index (0.12 s
 * for a new store on ext4) comes after, beside the publish's syncfs. */
static void *layout_main(void *arg)
{
	struct cn_datastore *ds = arg;
	unsigned made;
	int r = make_prefix_dirs(ds, &made);
	pthread_mutex_lock(&ds->layout_lock);
	if (r < 0)
		snprintf(ds->layout_msg, sizeof(ds->layout_msg), "%s", cn_error_message());
	ds->layout_err = r;
	ds->dirs_done = 1;
	pthread_cond_broadcast(&ds->layout_cond);
	pthread_mutex_unlock(&ds->layout_lock);
	if (r == 0 && record_new_prefixes(ds) < 0)
		cn_log_warning("datastore %s: chunk index: %s", ds->root, cn_error_message());
	return NULL;
}

/* cn_ds_layout_wait_dirs with layout_lock held: once, the directories'
 * fsync and the mark that vouches for them. */
static int finish_dirs_locked(struct cn_datastore *ds)
{
	if (ds->marked)
		return ds->layout_err;
	while (!ds->dirs_done)
		pthread_cond_wait(&ds->layout_cond, &ds->layout_lock);
	int r = ds->layout_err;
	if (r == 0 && ds->opts.sync_level != CN_SYNC_NONE && fsync(ds->chunks_fd) < 0)
		r = cn_error_sys(-errno, "fsync %s/.chunks", ds->root);
	if (r == 0)
		r = write_complete_mark(ds);
	if (r < 0 && ds->layout_err == 0)
		snprintf(ds->layout_msg, sizeof(ds->layout_msg), "%s", cn_error_message());
	ds->layout_err = r;
	ds->marked = 1;
	return r;
}

int cn_ds_layout_wait_dirs(struct cn_datastore *ds)
{
	pthread_mutex_lock(&ds->layout_lock);
	int r = finish_dirs_locked(ds);
	if (r < 0)
		cn_error_set(r, "%s", ds->layout_msg);
	pthread_mutex_unlock(&ds->layout_lock);
	return r;
}

int cn_ds_layout_pending(struct cn_datastore *ds)
{
	pthread_mutex_lock(&ds->layout_lock);
	int pending = !ds->dirs_done;
	pthread_mutex_unlock(&ds->layout_lock);
	return pending;
}

int cn_datastore_layout_wait(struct cn_datastore *ds)
{
	pthread_mutex_lock(&ds->layout_lock);
	int r = finish_dirs_locked(ds);
	/* (the thread takes no lock once its directories are made) */
	if (ds->layout_running) {
		pthread_join(ds->layout_thread, NULL);
		ds->layout_running = 0;
	}
	if (r < 0)
		cn_error_set(r, "%s", ds->layout_msg);
	pthread_mutex_unlock(&ds->layout_lock);
	return r;
}

/* Sets up what a store just created needs before its first use: no
 * index a former store left (it would claim chunks this one lacks), .lock
 * (a snapshot writer locks it). The prefix directories come later, see
 * start_layout. */
static int prepare_new_store(struct cn_datastore *ds)
{
	static const char *const stale[] = {".cairn/chunkindex.mdb", ".cairn/chunkindex.mdb-lock"};
	for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++)
		if (unlinkat(ds->root_fd, stale[i], 0) < 0 && errno != ENOENT)
			return cn_error_sys(-errno, "remove %s/%s", ds->root, stale[i]);
	return make_lock_file(ds);
}

/* Starts making the prefix directories of a store just created (whose
 * index is empty, like its directories: every prefix counts as checked).
 * Without a thread the directories are made now. */
static int start_layout(struct cn_datastore *ds)
{
	memset(ds->checked, 0xff, sizeof(ds->checked));
	ds->dirs_done = ds->marked = 0;
	if (pthread_create(&ds->layout_thread, NULL, layout_main, ds) == 0) {
		ds->layout_running = 1;
		return 0;
	}
	layout_main(ds);
	return cn_ds_layout_wait_dirs(ds);
}

int cn_datastore_open(const char *path, int create, const struct cn_datastore_opts *opts,
		      struct cn_datastore **out)
{
	struct cn_datastore *ds = calloc(1, sizeof(*ds));
	if (!ds)
		return cn_error_set(-ENOMEM, "out of memory");
	ds->root_fd = ds->chunks_fd = ds->lock_fd = -1;
	ds->dirs_done = ds->marked = 1; /* until start_layout: nothing to make */
	atomic_init(&ds->direct_io, 1);
	for (int i = 0; i < CN_DS_LOCK_STRIPES; i++)
		pthread_mutex_init(&ds->stripes[i], NULL);
	pthread_mutex_init(&ds->layout_lock, NULL);
	pthread_cond_init(&ds->layout_cond, NULL);
	if (opts)
		ds->opts = *opts;
	else
		cn_datastore_opts_init(&ds->opts);
	if (ds->opts.no_direct_io || ds->opts.write_fn)
		atomic_store(&ds->direct_io, 0);
	snprintf(ds->owner, sizeof(ds->owner), "%s", ds->opts.owner ? ds->opts.owner : DEFAULT_OWNER);
	ds->opts.owner = ds->owner;
	int r;
	size_t plen = strlen(path);
	while (plen > 1 && path[plen - 1] == '/')
		plen--;
	if (plen >= sizeof(ds->root) - 128) {
		r = cn_error_set(-ENAMETOOLONG, "datastore path too long");
		goto fail;
	}
	memcpy(ds->root, path, plen);
	ds->root[plen] = '\0';
	char p[PATH_MAX];
	if (create && (r = create_store(ds->root)) < 0)
		goto fail;
	ds->root_fd = open(ds->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ds->root_fd < 0) {
		r = cn_error_sys(-errno, "open datastore %s", ds->root);
		goto fail;
	}
	ds->chunks_fd = openat(ds->root_fd, ".chunks", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ds->chunks_fd < 0) {
		r = cn_error_sys(-errno, "%s is not a datastore: open .chunks", ds->root);
		goto fail;
	}
	snprintf(p, sizeof(p), "%s/.cairn/writers", ds->root);
	if ((r = cn_mkdir_p(p, 0750)) < 0)
		goto fail;
	if ((r = create ? prepare_new_store(ds) : complete_store(ds)) < 0)
		goto fail;
	snprintf(p, sizeof(p), "%s/.cairn/chunks.lock", ds->root);
	ds->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (ds->lock_fd < 0) {
		r = cn_error_sys(-errno, "open %s", p);
		goto fail;
	}
	snprintf(p, sizeof(p), "%s/.cairn/chunkindex.mdb", ds->root);
	if ((r = cn_chunkindex_open(p, &ds->index)) < 0)
		goto fail;
	/* The index is checked against each prefix directory the first time
	 * has_chunk asks about it, not here: 65536 stats made every open
	 * cost 0.1 s (and seconds on a cold disk), also for a no-change run
	 * or a restore that never asks. A new store's directories are made
	 * and recorded by start_layout's thread; an empty index of an
	 * existing store (the index was lost) is filled now, in batches,
	 * rather than one directory at a time. */
	if (create) {
		if ((r = start_layout(ds)) < 0)
			goto fail;
	} else if (!ds->opts.skip_index_check && cn_chunkindex_count(ds->index) == 0) {
		r = cn_datastore_check_index(ds);
		if (r < 0)
			cn_log_warning("datastore %s: chunk index check failed: %s", ds->root,
				       cn_error_message());
		else if (r > 0)
			cn_log_info("datastore %s: chunk index rebuilt (%d directories)", ds->root, r);
	}
	*out = ds;
	return 0;
fail:
	cn_datastore_close(ds);
	return r;
}

void cn_datastore_close(struct cn_datastore *ds)
{
	if (!ds)
		return;
	if (ds->layout_running && cn_datastore_layout_wait(ds) < 0)
		cn_log_warning("%s", cn_error_message());
	cn_chunkindex_close(ds->index);
	if (ds->lock_fd >= 0)
		close(ds->lock_fd);
	if (ds->chunks_fd >= 0)
		close(ds->chunks_fd);
	if (ds->root_fd >= 0)
		close(ds->root_fd);
	for (int i = 0; i < CN_DS_LOCK_STRIPES; i++)
		pthread_mutex_destroy(&ds->stripes[i]);
	pthread_mutex_destroy(&ds->layout_lock);
	pthread_cond_destroy(&ds->layout_cond);
	free(ds);
}
