/* cn_ds_chunks — how chunk blobs get into and out of .chunks/: insert
 * (temp file, then rename, upstream's rules for keeping an existing
 * chunk), read, atime refresh, the existence check through the LMDB index,
 * and direct I/O where the file system allows it.
 * Invariants: every change to a prefix directory happens under its prefix
 * lock (cn_ds_lock_prefix); a chunk file appears only whole, by rename;
 * an index record is written as in step only when the index was in step
 * with the directory before the change; a file system that refuses
 * O_DIRECT once (EINVAL) gets the page cache from then on (ds->direct_io). */
#include "store/cn_datastore.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "store/cn_blob.h"
#include "store/cn_datastore_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- direct I/O ---- */

/* Turns O_DIRECT on or off for fd. 0 or -errno. */
static int set_direct(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT) < 0)
		return -errno;
	return 0;
}

/* Whether direct I/O of len bytes at p (into a room of room bytes) is
 * possible and still allowed on ds. */
static int direct_ok(struct cn_datastore *ds, const void *p, size_t len, size_t room)
{
	return len && room >= len && (uintptr_t)p % CN_DS_DIRECT_ALIGN == 0 &&
	       atomic_load_explicit(&ds->direct_io, memory_order_relaxed);
}

/* Writes a new chunk file's data (see the top of cn_datastore.h): the
 * aligned head with direct I/O when it can, the rest through the cache. A
 * file system that refuses direct I/O (EINVAL) gets all of it through the
 * cache, then and from now on. */
static int write_chunk_data(struct cn_datastore *ds, int fd, const uint8_t *blob, size_t len)
{
	size_t head = len & ~(size_t)(CN_DS_DIRECT_ALIGN - 1);
	if (direct_ok(ds, blob, head, head)) {
		int r = set_direct(fd, 1);
		if (r == 0) {
			r = cn_ds_write_all(ds, fd, blob, head);
			int off = set_direct(fd, 0);
			if (r == 0 && off == 0)
				return cn_ds_write_all(ds, fd, blob + head, len - head);
			if (r == 0)
				return off;
			if (r != -EINVAL)
				return r;
			if (off < 0 || lseek(fd, 0, SEEK_SET) < 0 || ftruncate(fd, 0) < 0)
				return -errno;
		}
		if (r == -EINVAL) {
			atomic_store(&ds->direct_io, 0);
			cn_log_debug("datastore %s: no direct I/O (%s); using the page cache", ds->root,
				     cn_strerror(r));
		} else if (r < 0) {
			return r;
		}
	}
	return cn_ds_write_all(ds, fd, blob, len);
}

/* ---- chunks ---- */

/* Brings prefix's index records in step with its directory, once per
 * open store (a failure leaves the index behind, and the caller asks the
 * filesystem; a full disk must not stop backups or restores). */
static int check_prefix_once(struct cn_datastore *ds, uint16_t prefix)
{
	uint8_t bit = (uint8_t)(1u << (prefix & 7));
	if (ds->opts.skip_index_check || (__atomic_load_n(&ds->checked[prefix >> 3], __ATOMIC_ACQUIRE) & bit))
		return 0;
	int r = 0;
	if (!cn_ds_prefix_in_step(ds, prefix) && (r = cn_ds_lock_prefix(ds, prefix)) == 0) {
		r = cn_ds_rescan_prefix(ds, prefix);
		cn_ds_unlock_prefix(ds, prefix);
		if (r == 0)
			cn_log_debug("datastore %s: chunk index: directory %04x rescanned", ds->root, prefix);
	}
	if (r == 0)
		__atomic_fetch_or(&ds->checked[prefix >> 3], bit, __ATOMIC_RELEASE);
	return r;
}

int cn_datastore_has_chunk(struct cn_datastore *ds, const uint8_t digest[32])
{
	uint64_t size;
	int r = check_prefix_once(ds, cn_ds_prefix(digest));
	if (r == 0)
		r = cn_chunkindex_has(ds->index, digest, &size);
	if (r >= 0)
		return r == 1 && size > 0; /* an empty file is to be replaced */
	cn_log_warning("%s; asking the filesystem", cn_error_message());
	char rel[70];
	struct stat st;
	cn_ds_chunk_rel(digest, rel);
	if (fstatat(ds->chunks_fd, rel, &st, 0) == 0)
		return S_ISREG(st.st_mode) && st.st_size > 0;
	return errno == ENOENT ? 0 : cn_error_sys(-errno, "stat chunk %s", rel);
}

int cn_datastore_reuse_chunk(struct cn_datastore *ds, const uint8_t digest[32])
{
	int r = cn_datastore_has_chunk(ds, digest);
	if (r != 1)
		return r;
	/* Under the prefix lock a GC sweep either removed the chunk already
	 * (then it is gone from the index too, and the caller stores it
	 * again) or sees the new atime, which is newer than its cutoff. */
	r = cn_ds_touch(ds, digest, -1);
	if (r == -ENOENT)
		return 0;
	return r < 0 ? r : 1;
}

int cn_ds_touch_locked(struct cn_datastore *ds, const char *rel, int64_t when)
{
	struct timespec ts[2] = {{.tv_sec = when, .tv_nsec = 0}, {.tv_nsec = UTIME_OMIT}};
	if (when < 0)
		ts[0].tv_nsec = UTIME_NOW;
	if (utimensat(ds->chunks_fd, rel, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? -ENOENT : cn_error_sys(-errno, "update atime of chunk %s", rel);
	return 0;
}

int cn_ds_touch(struct cn_datastore *ds, const uint8_t digest[32], int64_t when)
{
	char rel[70];
	cn_ds_chunk_rel(digest, rel);
	int r = cn_ds_lock_prefix(ds, cn_ds_prefix(digest));
	if (r < 0)
		return r;
	r = cn_ds_touch_locked(ds, rel, when);
	cn_ds_unlock_prefix(ds, cn_ds_prefix(digest));
	return r;
}

int cn_datastore_touch_chunk(struct cn_datastore *ds, const uint8_t digest[32])
{
	int r = cn_ds_touch(ds, digest, -1);
	if (r == -ENOENT) {
		char hex[65];
		cn_hex_encode(digest, 32, hex);
		return cn_error_set(-ENOENT, "chunk %s is not in datastore %s", hex, ds->root);
	}
	return r;
}

/* Whether an existing chunk of old_size should be kept instead of the new
 * blob (upstream ChunkStore::insert_chunk). 1 keep, 0 replace, <0 refuse. */
static int keep_existing(struct cn_datastore *ds, const char *rel, uint64_t old_size,
			 const uint8_t *blob, size_t len)
{
	if (old_size == len)
		return 1;
	if (old_size == 0) {
		cn_log_warning("found empty chunk %s in %s, overwriting", rel, ds->root);
		return 0;
	}
	int type = cn_blob_type(blob, len);
	if (type == CN_BLOB_ENCRYPTED || type == CN_BLOB_ENCRYPTED_ZSTD) {
		uint8_t magic[8];
		int fd = openat(ds->chunks_fd, rel, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return cn_error_sys(-errno, "open chunk %s", rel);
		int r = cn_read_full(fd, magic, 8);
		close(fd);
		if (r < 0)
			return cn_error_sys(r, "read chunk %s", rel);
		int old_type = cn_blob_type(magic, 8);
		if (old_type == CN_BLOB_PLAIN || old_type == CN_BLOB_ZSTD)
			return cn_error_set(-CN_E_CRYPT, "refusing to overwrite unencrypted chunk %s "
					    "with an encrypted chunk of the same digest", rel);
		if (old_type == CN_BLOB_ENCRYPTED && type == CN_BLOB_ENCRYPTED)
			return cn_error_set(-CN_E_CRYPT, "refusing to overwrite encrypted chunk %s "
					    "with a different one of the same digest", rel);
		return 1;
	}
	return old_size < len;
}

int cn_datastore_insert_chunk(struct cn_datastore *ds, const uint8_t digest[32],
			      const uint8_t *blob, size_t len, int *was_new)
{
	char rel[70], tmp[PATH_MAX + 16], path[PATH_MAX];
	uint16_t prefix = cn_ds_prefix(digest);
	struct stat st;
	int r, fd = -1;
	if (was_new)
		*was_new = 0;
	cn_ds_chunk_rel(digest, rel);
	cn_datastore_chunk_path(ds, digest, path, sizeof(path));
	if ((r = cn_ds_lock_prefix(ds, prefix)) < 0)
		return r;
	if (fstatat(ds->chunks_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (!S_ISREG(st.st_mode)) {
			r = cn_error_set(-EEXIST, "chunk %s: unexpected file type", path);
			goto out;
		}
		r = keep_existing(ds, rel, (uint64_t)st.st_size, blob, len);
		if (r < 0)
			goto out;
		if (r == 1) {
			r = cn_ds_touch_locked(ds, rel, -1);
			/* (the directory did not change: leave its record alone) */
			if (r == 0 && cn_chunkindex_has(ds->index, digest, NULL) == 0 &&
			    cn_chunkindex_put(ds->index, digest, (uint64_t)st.st_size, NULL) < 0)
				cn_log_warning("chunk index not updated: %s", cn_error_message());
			goto out;
		}
	} else if (errno != ENOENT) {
		r = cn_error_sys(-errno, "stat chunk %s", path);
		goto out;
	}
	/* Whether the index was in step with the directory before we change
	 * it: only then may our change's mtime be recorded as in step. */
	int in_step = cn_ds_prefix_in_step(ds, prefix);
	/* the pid tells the next backup whose leftover it is after a crash */
	snprintf(tmp, sizeof(tmp), "%s.tmp_%d_XXXXXX", path, (int)getpid());
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* a new store whose helper thread has not made this directory
		 * yet (its fsync before the first publish covers this one too) */
		if ((r = cn_ds_make_prefix_dir(ds, prefix)) < 0) {
			cn_error_sys(r, "make chunk directory %s/.chunks/%04x", ds->root, prefix);
			goto out;
		}
		snprintf(tmp, sizeof(tmp), "%s.tmp_%d_XXXXXX", path, (int)getpid());
		fd = mkostemp(tmp, O_CLOEXEC);
	}
	if (fd < 0) {
		r = cn_error_sys(-errno, "create temporary chunk file %s", tmp);
		goto out;
	}
	r = write_chunk_data(ds, fd, blob, len);
	if (r < 0) {
		cn_error_sys(r, "write chunk %s (%zu bytes)", path, len);
		goto fail_tmp;
	}
	if (fchmod(fd, 0644) < 0) {
		r = cn_error_sys(-errno, "chmod %s", tmp);
		goto fail_tmp;
	}
	if (ds->opts.sync_level == CN_SYNC_FILE && fsync(fd) < 0) {
		r = cn_error_sys(-errno, "fsync chunk %s", tmp);
		goto fail_tmp;
	}
	/* At the filesystem level the one syncfs before publish is what makes
	 * the chunk durable. Starting its writeback now (without waiting)
	 * lets the disk work while the backup goes on, instead of leaving
	 * gigabytes of dirty pages for that syncfs. Only a hint: a filesystem
	 * that does not support it changes nothing, so errors are ignored. */
	if (ds->opts.sync_level == CN_SYNC_FILESYSTEM)
		(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	if (close(fd) < 0) {
		fd = -1;
		r = cn_error_sys(-errno, "close chunk %s", tmp);
		goto fail_tmp;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = cn_error_sys(-errno, "rename %s to %s", tmp, path);
		goto fail_tmp;
	}
	if (ds->opts.sync_level == CN_SYNC_FILE && (r = cn_fsync_dir_of(path, 0)) < 0)
		goto out;
	if (was_new)
		*was_new = 1;
	/* The chunk is stored; the index is only a cache: if it cannot be
	 * updated (e.g. the disk is full), the prefix's recorded mtime stays
	 * stale and the next check rescans it. */
	struct timespec mt;
	if (!in_step ? cn_ds_rescan_prefix(ds, prefix) < 0
		     : (cn_ds_prefix_mtime(ds, prefix, &mt) < 0 ||
			cn_chunkindex_put(ds->index, digest, len, &mt) < 0))
		cn_log_warning("chunk index not updated: %s", cn_error_message());
	r = 0;
	goto out;
fail_tmp:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out:
	cn_ds_unlock_prefix(ds, prefix);
	return r;
}

/* Reads len bytes at offset 0 of fd into dst: through the page cache when
 * all of it is there, else directly when dst (with room bytes) allows,
 * else through the cache. Why not always one way, measured restoring the
 * bench corpus right after its backup (none of it cached), alternating:
 *  - 1 GiB: buffered 0.80-0.88 s (sys 0.67-0.71 s), direct 0.77-0.81 s
 *    (sys 0.40-0.49 s);
 *  - 2 GiB: buffered 5.2-6.6 s (sys 7.5-9.8 s), direct 2.4-4.4 s:
 *    filling new page-cache pages is slow on the virtual test machine
 *    (perf: the kernel's copies into and out of them, 61 % of samples);
 *  - chunks already cached: buffered 0.66-0.68 s, direct 0.79-0.84 s.
 * The cache is asked with cn_file_cached, not with a preadv2(RWF_NOWAIT)
 * probe: that probe's miss starts read-ahead into the cache, and the
 * direct read after it fetched every chunk from the disk a second time
 * (2063 MiB read for 1086 MiB of chunks). 0 or -errno / -CN_E_TRUNCATED. */
static int read_chunk_data(struct cn_datastore *ds, int fd, uint8_t *dst, size_t len, size_t room)
{
	size_t rounded = (len + CN_DS_DIRECT_ALIGN - 1) & ~(size_t)(CN_DS_DIRECT_ALIGN - 1);
	if (direct_ok(ds, dst, rounded, room) && cn_file_cached(fd, len, CN_RESIDENCY_AUTO) != 1) {
		int r = set_direct(fd, 1), err = 0;
		if (r == 0) {
			/* a read past the end stops there: one call for the file */
			ssize_t n;
			do
				n = pread(fd, dst, rounded, 0);
			while (n < 0 && errno == EINTR);
			err = n < 0 ? errno : 0;
			if (n == (ssize_t)len)
				return 0;
			if ((r = set_direct(fd, 0)) < 0)
				return r;
			if (err && err != EINVAL)
				return -err;
			/* EINVAL, or a short read: through the cache below */
		}
		if (r == -EINVAL || err == EINVAL) {
			atomic_store(&ds->direct_io, 0);
			cn_log_debug("datastore %s: no direct reads; using the page cache", ds->root);
		}
	}
	/* (the direct read was a pread: the file offset is still 0) */
	return cn_read_full(fd, dst, len);
}

int cn_datastore_read_chunk(struct cn_datastore *ds, const uint8_t digest[32], struct cn_buf *out)
{
	char rel[70];
	struct stat st;
	cn_ds_chunk_rel(digest, rel);
	int fd = openat(ds->chunks_fd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cn_error_sys(-errno, "open chunk %s/.chunks/%s", ds->root, rel);
	int r = fstat(fd, &st) < 0 ? -errno : 0;
	if (r == 0 && (uint64_t)st.st_size > CN_BLOB_MAX_SIZE + CN_BLOB_ENC_HEADER_SIZE)
		r = cn_error_set(-EFBIG, "chunk %s/.chunks/%s too large (%lld bytes)", ds->root, rel,
				 (long long)st.st_size);
	else if (r < 0)
		r = cn_error_sys(r, "stat chunk %s/.chunks/%s", ds->root, rel);
	size_t len = r == 0 ? (size_t)st.st_size : 0;
	if (r == 0 && cn_buf_reserve(out, len) < 0)
		r = cn_error_set(-ENOMEM, "out of memory reading chunk");
	if (r == 0 && (r = read_chunk_data(ds, fd, out->data + out->len, len,
					   out->cap - out->len)) < 0)
		cn_error_sys(r, "read chunk %s/.chunks/%s", ds->root, rel);
	close(fd);
	if (r == 0)
		out->len += len;
	return r;
}
