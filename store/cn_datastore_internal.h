/* cn_datastore_internal — what the datastore's modules (cn_datastore.c,
 * cn_ds_chunks.c, cn_ds_snapshot.c, cn_ds_list.c, cn_gc.c, cn_prune.c,
 * cn_verify.c) share and nobody else uses: the handle, prefix locks, the
 * writer registry, a walk over every snapshot, and the helpers the files
 * of the handle itself share. */
#ifndef CN_DATASTORE_INTERNAL_H
#define CN_DATASTORE_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "store/cn_chunkindex.h"
#include "store/cn_datastore.h"

#define CN_DS_LOCK_STRIPES 256

struct cn_datastore {
	char root[3072];             /* bounded so every derived path fits PATH_MAX */
	int root_fd;                 /* O_DIRECTORY of the root (syncfs, *at calls) */
	int chunks_fd;               /* O_DIRECTORY of .chunks */
	int lock_fd;                 /* .cairn/chunks.lock: OFD byte-range locks */
	struct cn_chunkindex *index; /* LMDB digest index */
	struct cn_datastore_opts opts;
	char owner[256];
	pthread_mutex_t stripes[CN_DS_LOCK_STRIPES];
	/* prefixes whose index records were checked against the directory
	 * (bit per prefix, set atomically: has_chunk checks lazily) */
	uint8_t checked[0x10000 / 8];
	atomic_int direct_io;        /* chunk data with O_DIRECT: 0 once the fs refused it */
	/* A new store's prefix directories are made by a helper thread while
	 * the first backup runs (cn_datastore.c), which then records them in
	 * the index. Under layout_lock: layout_running: the thread is to be
	 * joined (cn_datastore_layout_wait); dirs_done: the thread has made
	 * the directories or failed (layout_cond signals it); marked: they
	 * were made durable and the mark written (cn_ds_layout_wait_dirs), or
	 * that failed. Both are 1 from the start in a store this handle did
	 * not create. layout_err and layout_msg: the outcome, kept for every
	 * later wait. */
	pthread_mutex_t layout_lock;
	pthread_cond_t layout_cond;
	pthread_t layout_thread;
	int layout_running, dirs_done, marked;
	int layout_err;
	char layout_msg[512];
};

/* The prefix directory number of a digest (its first two bytes). */
static inline uint16_t cn_ds_prefix(const uint8_t digest[32])
{
	return (uint16_t)(digest[0] << 8 | digest[1]);
}

/* Takes/releases the lock of one prefix directory (see cn_datastore.h). */
int cn_ds_lock_prefix(struct cn_datastore *ds, uint16_t prefix);
void cn_ds_unlock_prefix(struct cn_datastore *ds, uint16_t prefix);

/* Makes .chunks/XXXX of prefix unless it exists as a directory: 1 made,
 * 0 there already, -errno (-ENOTDIR: something else has its name; no
 * message). A chunk insert calls it for a directory that a new store's
 * helper thread has not made yet. */
int cn_ds_make_prefix_dir(struct cn_datastore *ds, uint16_t prefix);

/* Waits until the prefix directories of a store this handle created all
 * exist, are durable and marked complete: what publishing a snapshot needs.
 * The helper thread may still be recording them in the index. 0 (at once
 * for a store not created by this handle) or the creation's error with its
 * message, for this and every later call. Thread-safe. */
int cn_ds_layout_wait_dirs(struct cn_datastore *ds);

/* 1 while the helper thread of a store this handle created is still
 * making prefix directories, else 0. Thread-safe. */
int cn_ds_layout_pending(struct cn_datastore *ds);

/* mtime of .chunks/XXXX (caller holds the prefix lock). */
int cn_ds_prefix_mtime(struct cn_datastore *ds, uint16_t prefix, struct timespec *mtime);

/* 1 if the LMDB index's record of prefix matches the directory now (call
 * under the lock, before changing the directory), else 0. */
int cn_ds_prefix_in_step(struct cn_datastore *ds, uint16_t prefix);

/* Rescans one prefix directory into the LMDB index (caller holds the lock). */
int cn_ds_rescan_prefix(struct cn_datastore *ds, uint16_t prefix);

/* Start time of the oldest running snapshot writer (any process), or
 * INT64_MAX if none. Removes registrations of dead processes. */
int64_t cn_ds_oldest_writer(struct cn_datastore *ds);

/* Takes a shared lock on <root>/.lock that a Proxmox Backup Server on the
 * same datastore respects (see cn_ds_list.c), for a snapshot writer or
 * a GC: PBS then refuses to start a GC of its own. *fd_out is the
 * caller's to close (which releases it). -CN_E_LOCKED with a message
 * while PBS's GC holds the lock exclusively. */
int cn_ds_lock_store_shared(struct cn_datastore *ds, int *fd_out);

/* Whether another program (not cairn) holds a lock on <root>/.lock, i.e.
 * a Proxmox Backup Server runs a backup or GC on this datastore: 1 (and
 * *pid, or -1 when unknown), 0, or -errno. fd: from cn_ds_lock_store_shared. */
int cn_ds_store_foreign_lock(int fd, int *pid);

/* Sets a chunk's atime to when (UTIME_NOW when when < 0), keeping mtime,
 * under the prefix lock. 0, -ENOENT (no message) or -errno with message. */
int cn_ds_touch(struct cn_datastore *ds, const uint8_t digest[32], int64_t when);

/* Calls fn for every snapshot directory of every group in every namespace
 * (finished or not). fn returns 0 to go on, negative to stop with that code. */
typedef int (*cn_ds_snapshot_fn)(struct cn_datastore *ds, const struct cn_snapshot_id *id,
				 void *ctx);
int cn_ds_for_each_snapshot(struct cn_datastore *ds, cn_ds_snapshot_fn fn, void *ctx);

/* The same for every group (id->time = 0). */
typedef int (*cn_ds_group_fn)(struct cn_datastore *ds, const struct cn_snapshot_id *group,
			      void *ctx);
int cn_ds_for_each_group(struct cn_datastore *ds, cn_ds_group_fn fn, void *ctx);

/* Removes what dead backups (".tmp-*") and interrupted removals (".del-*")
 * left in a group, if no backup holds the group lock. Returns the number
 * of directories removed. */
int cn_ds_cleanup_group(struct cn_datastore *ds, const struct cn_snapshot_id *group);

/* Full path of a snapshot directory (or of a file in it when name != NULL). */
int cn_ds_snapshot_dir(const struct cn_datastore *ds, const struct cn_snapshot_id *id,
		       const char *name, char *out, size_t out_size);

/* ---- shared by the files of the handle (cn_datastore.c, cn_ds_*.c) ---- */

/* Writes all len bytes at p to fd, through opts.write_fn when one is set;
 * retries on EINTR. 0, or -errno (-EIO for a write of nothing) without a
 * message. (cn_datastore.c) */
int cn_ds_write_all(struct cn_datastore *ds, int fd, const uint8_t *p, size_t len);

/* Checks a snapshot file name: plain, no path, PBS's BACKUP_FILE_REGEX
 * suffixes. 0 or -CN_E_PATH with a message. (cn_datastore.c) */
int cn_ds_check_file_name(const char *name);

/* Removes the directory name below parent_fd, which holds only files
 * (snapshot and temp dirs); one already gone is no error. 0 or -errno with
 * a message. (cn_datastore.c) */
int cn_ds_remove_flat_dir(int parent_fd, const char *name);

/* Full path of a snapshot's group directory into out. 0 or -ENAMETOOLONG
 * with a message. (cn_datastore.c) */
int cn_ds_group_dir(const struct cn_datastore *ds, const struct cn_snapshot_id *id, char *out,
		    size_t out_size);

/* "XXXX/<hex>" of a chunk, relative to .chunks. (cn_datastore.c) */
void cn_ds_chunk_rel(const uint8_t digest[32], char out[70]);

/* Sets the atime of chunk rel (relative to .chunks) to when (UTIME_NOW
 * when when < 0), keeping mtime; the caller holds the prefix lock. 0,
 * -ENOENT (no message) or -errno with a message. (cn_ds_chunks.c) */
int cn_ds_touch_locked(struct cn_datastore *ds, const char *rel, int64_t when);

/* Opens directory path and flocks it (how: LOCK_EX or LOCK_SH) without
 * waiting; *fd_out is the caller's to close (which releases it).
 * -CN_E_LOCKED with a message naming what when another holds it, or
 * -errno with a message. (cn_ds_list.c) */
int cn_ds_lock_dir(const char *path, int how, int *fd_out, const char *what);

/* Reads the snapshot file at path (its base name is name: .blob or an
 * index) whole into out (appended), refusing without blocking or reading
 * it what is not a regular file, and before reading more than its header
 * a file larger than its kind allows or an index whose size disagrees
 * with its header (-CN_E_FORMAT, -CN_E_TRUNCATED, ...). 0 or a negative
 * code with a message naming path. */
int cn_ds_read_snapshot_file(const char *path, const char *name, struct cn_buf *out);

#endif
