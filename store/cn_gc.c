#include "store/cn_gc.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "store/cn_datastore_internal.h"
#include "store/cn_index.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define GC_MIN_AGE (24 * 3600) /* upstream: at least 24h (relatime) */
#define GC_SAFETY_GAP 300      /* upstream: 5 minutes */

struct mark_ctx {
	struct cn_gc_stats *st;
	int64_t stamp; /* atime to set; -1 = now */
};

static int cleanup_group(struct cn_datastore *ds, const struct cn_snapshot_id *group, void *ctx)
{
	struct cn_gc_stats *st = ctx;
	int r = cn_ds_cleanup_group(ds, group);
	if (r > 0)
		st->removed_tmp_dirs += (uint64_t)r;
	return r < 0 ? r : 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n > m && !strcmp(s + n - m, suffix);
}

static int mark_index(struct cn_datastore *ds, const char *path, const char *name,
		      struct mark_ctx *mc)
{
	struct cn_buf raw = {0};
	/* size checked against the header before the index is read */
	int r = cn_ds_read_snapshot_file(path, name, &raw);
	if (r == -ENOENT) { /* removed by a concurrent prune */
		cn_buf_free(&raw);
		cn_error_clear();
		return 0;
	}
	if (r < 0) {
		cn_buf_free(&raw);
		return r;
	}
	struct cn_index *idx;
	r = cn_index_parse(raw.data, raw.len, &idx);
	cn_buf_free(&raw);
	if (r < 0)
		return cn_error_prefix(r, "garbage collection: index %s", path);
	mc->st->index_files++;
	size_t n = cn_index_count(idx);
	for (size_t i = 0; i < n; i++) {
		const uint8_t *d = cn_index_digest(idx, i);
		r = cn_ds_touch(ds, d, mc->stamp);
		if (r == -ENOENT) {
			char hex[65];
			cn_hex_encode(d, 32, hex);
			cn_log_warning("garbage collection: chunk %s referenced by %s is missing", hex, path);
			mc->st->missing_chunks++;
			continue;
		}
		if (r < 0) {
			cn_index_free(idx);
			return r;
		}
		mc->st->marked_chunks++;
	}
	cn_index_free(idx);
	return 0;
}

static int mark_snapshot(struct cn_datastore *ds, const struct cn_snapshot_id *id, void *ctx)
{
	char dir[PATH_MAX];
	int r = cn_ds_snapshot_dir(ds, id, NULL, dir, sizeof(dir));
	if (r < 0)
		return r;
	DIR *d = opendir(dir);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return cn_error_sys(-errno, "open %s", dir);
	}
	struct dirent *e;
	while (r == 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.' || !(ends_with(e->d_name, ".didx") || ends_with(e->d_name, ".fidx")))
			continue;
		char path[PATH_MAX + 256];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		r = mark_index(ds, path, e->d_name, ctx);
	}
	closedir(d);
	return r;
}

static int is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* Sweeps one prefix directory; the caller holds its lock. */
static int sweep_prefix(struct cn_datastore *ds, uint16_t prefix, int64_t cutoff,
			int64_t oldest_writer, struct cn_gc_stats *st)
{
	char name[8];
	snprintf(name, sizeof(name), "%04x", prefix);
	int in_step = cn_ds_prefix_in_step(ds, prefix);
	int fd = openat(ds->chunks_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : cn_error_sys(-errno, "open .chunks/%s", name);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return cn_error_sys(-errno, "opendir .chunks/%s", name);
	}
	uint8_t (*gone)[32] = NULL;
	size_t ngone = 0, cap = 0;
	int unlinked = 0, r = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		const char *fn = e->d_name;
		size_t len = strlen(fn);
		if (len < 64 || !is_hex(fn, 64))
			continue;
		int bad = len > 64 && ends_with(fn, ".bad");
		int tmp = len > 64 && !strncmp(fn + 64, ".tmp_", 5);
		if (len > 64 && !bad && !tmp)
			continue;
		struct stat s;
		if (fstatat(dirfd(d), fn, &s, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(s.st_mode))
			continue;
		if (tmp) {
			/* Inserts hold this lock from temp file to rename: a temp
			 * file seen now belongs to a dead process. */
			if (s.st_mtime < cutoff && unlinkat(dirfd(d), fn, 0) == 0) {
				st->removed_tmp++;
				unlinked = 1;
			}
			continue;
		}
		if (s.st_atime < cutoff) {
			if (unlinkat(dirfd(d), fn, 0) < 0) {
				r = cn_error_sys(-errno, "remove chunk .chunks/%s/%s", name, fn);
				if (bad)
					st->still_bad++;
				break;
			}
			unlinked = 1;
			if (bad) {
				st->removed_bad++;
			} else {
				st->removed_chunks++;
				if (ngone == cap) {
					cap = cap ? cap * 2 : 16;
					void *p = realloc(gone, cap * sizeof(*gone));
					if (!p) {
						r = cn_error_set(-ENOMEM, "out of memory");
						break;
					}
					gone = p;
				}
				char hex[65];
				memcpy(hex, fn, 64);
				hex[64] = '\0';
				cn_hex_decode(hex, gone[ngone++], 32);
			}
			st->removed_bytes += (uint64_t)s.st_size;
		} else if (s.st_atime < oldest_writer) {
			if (bad)
				st->still_bad++;
			else
				st->pending_chunks++;
			st->pending_bytes += (uint64_t)s.st_size;
		} else {
			if (bad)
				st->still_bad++;
			else
				st->disk_chunks++;
			st->disk_bytes += (uint64_t)s.st_size;
		}
	}
	if (unlinked) {
		/* Record the directory's new mtime with the removals if the
		 * index was in step before; otherwise forget the record so the
		 * next check rescans the directory. */
		struct stat dst;
		int have = in_step && fstat(dirfd(d), &dst) == 0;
		int rr = cn_chunkindex_remove(ds->index, prefix, (const uint8_t (*)[32])gone, ngone,
					      have ? &dst.st_mtim : NULL);
		if (rr < 0 && r == 0)
			r = rr;
	}
	closedir(d);
	free(gone);
	return r;
}

int cn_datastore_gc(struct cn_datastore *ds, const struct cn_gc_opts *opts,
		    struct cn_gc_stats *stats)
{
	struct cn_gc_stats local;
	struct cn_gc_stats *st = stats ? stats : &local;
	memset(st, 0, sizeof(*st));
	int lr = cn_datastore_layout_wait(ds); /* the sweep reads every prefix directory */
	if (lr < 0)
		return lr;
	char lock[PATH_MAX];
	snprintf(lock, sizeof(lock), "%s/.cairn/gc.lock", ds->root);
	int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lfd < 0)
		return cn_error_sys(-errno, "open %s", lock);
	if (flock(lfd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		close(lfd);
		if (e == EWOULDBLOCK)
			return cn_error_set(-CN_E_LOCKED, "garbage collection already running on %s",
					    ds->root);
		return cn_error_sys(-e, "lock %s", lock);
	}
	/* A Proxmox Backup Server on the same datastore: while we collect,
	 * its GC cannot start (our shared lock), and while one of its backups
	 * runs we do not start, since only its process knows which chunks that
	 * backup relies on and since when. */
	int sfd = -1, pid = -1;
	int r = cn_ds_lock_store_shared(ds, &sfd);
	int foreign = r == 0 ? cn_ds_store_foreign_lock(sfd, &pid) : 0;
	if (foreign == 1) {
		char who[32] = "another process";
		if (pid > 0)
			snprintf(who, sizeof(who), "process %d", pid);
		r = cn_error_set(-CN_E_LOCKED, "datastore %s is in use by %s, which holds "
				 "%s/.lock (a Proxmox Backup Server running a backup?): run "
				 "garbage collection when it is done, or from that server",
				 ds->root, who, ds->root);
	} else if (foreign < 0) {
		r = cn_error_sys(foreign, "check the locks of %s/.lock", ds->root);
	}
	if (r < 0) {
		if (sfd >= 0)
			close(sfd);
		close(lfd);
		return r;
	}
	int64_t start = opts && opts->now ? opts->now : (int64_t)time(NULL);
	int64_t oldest_writer = cn_ds_oldest_writer(ds);
	if (oldest_writer > start)
		oldest_writer = start;

	/* Leftovers of dead backups first: their chunks then become garbage
	 * like any other unreferenced chunk. */
	r = cn_ds_for_each_group(ds, cleanup_group, st);
	if (r < 0) {
		cn_error_prefix(r, "garbage collection: cleanup");
		goto out;
	}
	struct mark_ctx mc = {.st = st, .stamp = opts && opts->now ? opts->now : -1};
	r = cn_ds_for_each_snapshot(ds, mark_snapshot, &mc);
	if (r < 0) {
		cn_error_prefix(r, "garbage collection phase 1 (mark)");
		goto out;
	}

	int64_t grace = opts ? opts->grace : 0;
	int64_t cutoff;
	if (grace == CN_GC_NO_GRACE) {
		cutoff = start < oldest_writer ? start : oldest_writer;
	} else {
		cutoff = start - (grace > 0 ? grace : GC_MIN_AGE);
		if (oldest_writer < cutoff)
			cutoff = oldest_writer;
		cutoff -= grace > 0 ? 0 : GC_SAFETY_GAP;
	}
	st->cutoff = cutoff;
	for (unsigned p = 0; p < 0x10000 && r == 0; p++) {
		if ((r = cn_ds_lock_prefix(ds, (uint16_t)p)) < 0)
			break;
		r = sweep_prefix(ds, (uint16_t)p, cutoff, oldest_writer, st);
		cn_ds_unlock_prefix(ds, (uint16_t)p);
	}
	if (r < 0)
		cn_error_prefix(r, "garbage collection phase 2 (sweep)");
	cn_log_info("garbage collection on %s: %llu chunks removed (%llu bytes), %llu pending, "
		    "%llu kept, %llu missing",
		    ds->root, (unsigned long long)st->removed_chunks,
		    (unsigned long long)st->removed_bytes, (unsigned long long)st->pending_chunks,
		    (unsigned long long)st->disk_chunks, (unsigned long long)st->missing_chunks);
out:
	close(sfd);
	close(lfd);
	return r;
}
