/* cn_datastore — a local datastore in the exact PBS on-disk layout
 * (upstream pbs-datastore/src/{chunk_store,datastore,backup_info}.rs):
 *
 *   <root>/.lock                   empty; PBS's ProcessLocker file: a snapshot
 *                                  writer holds a shared fcntl lock on it, as
 *                                  upstream's writers do, so a PBS GC (which
 *                                  needs it exclusively) never runs meanwhile
 *   <root>/.chunks/0000..ffff/     65536 dirs, made when the store is created
 *                                  (by a helper thread while the first backup
 *                                  runs, all of them before its snapshot is
 *                                  published: cn_datastore_layout_wait)
 *          XXXX/<64 hex digest>    one DataBlob per chunk
 *          XXXX/<digest>.<n>.bad   quarantined by verify (as upstream)
 *   <root>/[ns/<a>/[ns/<b>/]]<type>/<id>/owner          "root@pam\n"
 *   <root>/.../<type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>/       index.json.blob, *.didx, *.fidx, *.blob
 *   <root>/.../<type>/<id>/<time>/.protected            prune keeps it
 *
 * cairn's own state lives in <root>/.cairn/ (PBS only looks at backup
 * types, "ns" and ".chunks" at the top level, and at RFC 3339 names inside
 * a group, so dot entries are invisible to it):
 *   .cairn/chunkindex.mdb   LMDB digest index (cn_chunkindex.h; a cache)
 *   .cairn/chunks.lock      one byte-range lock per prefix directory
 *   .cairn/writers/         one flock-held file per running snapshot writer
 *                           (host, pid, temp directory): the next snapshot
 *                           writer removes what a dead one (lock free, pid
 *                           gone on this host) left, at once
 *   .cairn/gc.lock          held by a running GC
 *   .cairn/layout-complete  every prefix directory and .lock exist; until it
 *                           does, open makes what is missing (a creation
 *                           interrupted by a full disk resumes)
 * Snapshots are built in <group>/.tmp-<time>-XXXXXX/ and renamed into place.
 *
 * Concurrency (threads and processes):
 *  - Every change to a chunk prefix directory (insert, touch, GC sweep,
 *    quarantine, index rescan) holds that prefix's lock: an OFD byte-range
 *    lock on .cairn/chunks.lock (between processes and handles) plus a
 *    striped mutex (between threads of one handle). Locks are taken in the
 *    order prefix lock -> LMDB write lock.
 *  - A snapshot writer holds the group directory's flock (as upstream), a
 *    shared lock on <root>/.lock (begin fails with -CN_E_LOCKED while
 *    another process holds it exclusively), and registers its start time in
 *    .cairn/writers/ for GC.
 *  - GC never removes a chunk whose atime is newer than
 *    min(gc start - 24h, oldest writer start) - 5 min (upstream's rule).
 *    Writers refresh the atime of every chunk they insert again or reuse
 *    (cn_datastore_reuse_chunk, at the moment they decide not to store it)
 *    and, when an index file is written into a snapshot, of every chunk it
 *    references
 *    (failing cleanly if one has vanished), so a published snapshot never
 *    references a swept chunk.
 * A struct cn_datastore may be shared by threads for chunk calls; a
 * snapshot writer is used by one thread at a time.
 */
#ifndef CN_DATASTORE_H
#define CN_DATASTORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/cn_snapshot.h"
#include "common/cn_util.h"

struct cn_datastore;
struct cn_ds_snapshot;

/* Durability of chunk and snapshot writes (upstream DatastoreFSyncLevel). */
enum cn_sync_level {
	CN_SYNC_NONE,       /* no syncs at all */
	CN_SYNC_FILE,       /* fsync every chunk/file and its directory */
	CN_SYNC_FILESYSTEM, /* default: one syncfs before a snapshot is published */
};

/* The write function used for chunk and snapshot files: like write(2)
 * (returns bytes written or -1 with errno). Part of the real write path;
 * tests substitute it to inject ENOSPC or to stop in the middle. */
typedef ssize_t (*cn_ds_write_fn)(int fd, const void *buf, size_t len, void *ctx);

struct cn_datastore_opts {
	enum cn_sync_level sync_level; /* start from cn_datastore_opts_init() */
	const char *owner;             /* owner written for new groups; NULL = "root@pam" */
	cn_ds_write_fn write_fn;       /* NULL = write(2) */
	void *write_ctx;
	int skip_index_check;          /* 1: trust the LMDB index without comparing it with .chunks/ */
	int no_direct_io;              /* 1: chunk data always through the page cache */
};

/* Fills opts with the defaults (filesystem sync, owner root@pam). */
void cn_datastore_opts_init(struct cn_datastore_opts *opts);

/* Opens the datastore at path (absolute or relative). create: make it
 * first if it does not exist (root, .lock, .chunks/0000..ffff, .cairn/);
 * creating over an existing datastore is -EEXIST as upstream. The 65536
 * prefix directories of a new store are made by a helper thread, so that
 * its first backup need not wait for them (a chunk insert makes its own
 * directory if it comes first); cn_datastore_layout_wait waits for them
 * and for their records in the index, and GC, check_index and close do
 * so first; publishing a snapshot waits for the directories only (a
 * process that forks should wait first too: the child has no such thread,
 * and may find a lock the thread held taken for good). A store
 * whose creation stopped part-way (e.g. -ENOSPC: no inodes left) is
 * completed by the next open, without create. opts may be
 * NULL (defaults). Opening checks the LMDB chunk index against .chunks/
 * (one stat per prefix directory) and rescans stale prefixes. *out is the
 * caller's, closed with cn_datastore_close(). */
int cn_datastore_open(const char *path, int create, const struct cn_datastore_opts *opts,
		      struct cn_datastore **out);
/* Waits until every prefix directory of a store this handle created
 * exists and .cairn/layout-complete is written. 0 (also at once for a
 * store that was not created by this handle), or the creation's error
 * (e.g. -ENOSPC: no inodes left; the next open completes the store) with
 * its message, for this and every later call. Thread-safe. */
int cn_datastore_layout_wait(struct cn_datastore *ds);

/* Closes the datastore and frees ds (NULL is ok). Snapshot writers of ds
 * must be published or aborted first; no chunk call may be running. */
void cn_datastore_close(struct cn_datastore *ds);

/* The datastore root path (borrowed). */
const char *cn_datastore_path(const struct cn_datastore *ds);

/* Sync level in use. */
enum cn_sync_level cn_datastore_sync_level(const struct cn_datastore *ds);

/* Path of a chunk file: <root>/.chunks/XXXX/<hex>. out has PATH_MAX bytes. */
void cn_datastore_chunk_path(const struct cn_datastore *ds, const uint8_t digest[32], char *out,
			     size_t out_size);

/* 1 if the store holds the chunk, 0 if not: answered from the LMDB index
 * without touching the filesystem (falls back to stat(2) if the index
 * fails). Thread-safe, never blocks on writers. */
int cn_datastore_has_chunk(struct cn_datastore *ds, const uint8_t digest[32]);

/* has_chunk for a snapshot writer that will reference the chunk without
 * storing it: 1 if the store holds it, and then its atime has been
 * refreshed under its prefix lock (as upstream's insert_chunk does for a
 * chunk it already has), so a GC running now or later keeps it while the
 * writer runs; 0 if not held (also when a GC sweep took it just now);
 * <0 on error. Thread-safe. */
int cn_datastore_reuse_chunk(struct cn_datastore *ds, const uint8_t digest[32]);

/* Chunk data and the page cache. A chunk is written once and, if ever,
 * read much later: caching it on the way in only pushes out what the
 * machine is using, and copying it through the page cache costs more CPU
 * than anything else in a backup of incompressible data. So, unless
 * opts.no_direct_io, insert writes the 4 KiB-aligned head of a blob that
 * lies at a 4 KiB-aligned address with direct I/O (O_DIRECT, where the
 * file system allows; the first refusal turns it off for the handle), the
 * tail, and blobs elsewhere, through the cache. Read takes a chunk from
 * the cache when all of it is there (asked with cn_file_cached, which
 * reads nothing), else reads it directly when out has an aligned write
 * position and room for the size rounded up to 4 KiB.
 * Durability is unchanged: the file is still fsync'd (CN_SYNC_FILE) or
 * covered by the syncfs before the snapshot is published
 * (CN_SYNC_FILESYSTEM), which also flushes the device cache. */
#define CN_DS_DIRECT_ALIGN 4096u

/* Inserts an encoded chunk (DataBlob bytes, borrowed). New chunks are
 * written to "<digest>.tmp_<pid>_XXXXXX" in the prefix directory and renamed into
 * place (fsync of file and directory at CN_SYNC_FILE), so a crash never
 * leaves a partial file under the digest's name. An existing chunk is kept
 * (upstream rules: same size, or the smaller one wins; an existing empty
 * file is replaced) and its atime refreshed for GC. *was_new (may be NULL)
 * = 1 if written. The blob is not decoded (callers hand in what they
 * encoded). On failure (e.g. -ENOSPC) nothing is left under the digest's
 * name and the temp file is removed. Thread-safe. */
int cn_datastore_insert_chunk(struct cn_datastore *ds, const uint8_t digest[32],
			      const uint8_t *blob, size_t len, int *was_new);

/* Refreshes a chunk's atime (GC mark). -ENOENT (with a message) if the
 * chunk is missing. Thread-safe. */
int cn_datastore_touch_chunk(struct cn_datastore *ds, const uint8_t digest[32]);

/* Reads a chunk's raw DataBlob bytes, appended to out (straight into its
 * storage, directly from the disk when it can: see above). -ENOENT if
 * missing. Thread-safe. */
int cn_datastore_read_chunk(struct cn_datastore *ds, const uint8_t digest[32], struct cn_buf *out);

/* Rescans every prefix directory whose mtime differs from the index's
 * record (all of them after the index was lost). Returns the number of
 * prefixes rescanned. has_chunk does the same for one prefix the first
 * time it asks about it (unless opts.skip_index_check); this does all at
 * once (e.g. after PBS's GC ran on the store). */
int cn_datastore_check_index(struct cn_datastore *ds);

/* Number of digests in the LMDB index (tests, stats). */
int64_t cn_datastore_index_count(struct cn_datastore *ds);

/* ---- snapshot writer ---- */

/* Starts a snapshot: validates id, creates the group (namespace dirs,
 * "owner"), takes the group lock (flock on the group dir; -CN_E_LOCKED
 * when another backup still holds it after about a second), takes the
 * shared lock on <root>/.lock (-CN_E_LOCKED while a PBS GC holds it),
 * checks that id->time is newer
 * than the group's last finished snapshot (otherwise -CN_E_LOCKED when
 * that snapshot was made after id->time, which is at most a few minutes
 * old: a backup of the group that ran at the same time made it; -EEXIST
 * else) and creates the temporary directory. It also removes the debris
 * of killed backups: temp directories in its group, and everything a
 * provably dead writer registered in .cairn/writers/ left (see above).  *out is the caller's: finish with _publish or
 * _abort (both free it). */
int cn_datastore_snapshot_begin(struct cn_datastore *ds, const struct cn_snapshot_id *id,
				struct cn_ds_snapshot **out);

/* Writes one file of the snapshot (name: *.didx, *.fidx, *.blob, not yet
 * written). An index file is parsed and every chunk it references must be
 * present (their atime is refreshed): -ENOENT names the missing chunk,
 * -CN_E_TRUNCATED an empty chunk file (a crash lost its content; it is
 * dropped from the chunk index so that the next backup writes it again). */
int cn_datastore_snapshot_write_file(struct cn_ds_snapshot *w, const char *name,
				     const uint8_t *data, size_t len);

/* Publishes the snapshot: index.json.blob must have been written
 * (-EINVAL), be a readable manifest and every file it lists must have been
 * written (-ENOENT); syncs per sync level (syncfs for filesystem), renames the temp
 * directory to <group>/<time> (never replacing anything) and releases the
 * lock. Frees w, also on failure (after which nothing is published). */
int cn_datastore_snapshot_publish(struct cn_ds_snapshot *w);

/* Removes the temp directory and releases the lock; nothing of the
 * snapshot remains. Frees w. NULL is ok. */
void cn_datastore_snapshot_abort(struct cn_ds_snapshot *w);

/* ---- listing and reading ---- */

struct cn_ds_snapshot_info {
	struct cn_snapshot_id id;
	int finished;   /* has index.json.blob */
	int protected_; /* has .protected */
	int64_t size;   /* sum of file sizes listed in the manifest; -1 unknown */
	int encrypted;  /* 1: the manifest lists an encrypted or signed file,
			 * 0: it does not, -1: unknown (not read) */
};

/* Namespaces directly below ns ("" = root), as full names ("a", "a/b").
 * *out is an array of *n strings; free with cn_datastore_free_names(). */
int cn_datastore_list_namespaces(struct cn_datastore *ds, const char *ns, char ***out, size_t *n);
void cn_datastore_free_names(char **names, size_t n);

/* Groups in namespace ns (not below), sorted by type then id. *out is a
 * malloc'd array (time = 0) the caller frees. */
int cn_datastore_list_groups(struct cn_datastore *ds, const char *ns,
			     struct cn_snapshot_id **out, size_t *n);

/* Snapshots of the group given by group (ns, type, id), oldest first;
 * with_sizes: read each manifest for the size and encryption. *out is malloc'd, freed by
 * the caller. A missing group gives 0 snapshots. */
int cn_datastore_list_snapshots(struct cn_datastore *ds, const struct cn_snapshot_id *group,
				int with_sizes, struct cn_ds_snapshot_info **out, size_t *n);

/* The newest finished snapshot of group with time < before (INT64_MAX =
 * any): 1 and *out set, 0 if none, negative on error. */
int cn_datastore_previous_snapshot(struct cn_datastore *ds, const struct cn_snapshot_id *group,
				   int64_t before, struct cn_snapshot_id *out);

/* Reads file name of a snapshot (e.g. "index.json.blob") into out
 * (appended). -ENOENT if missing, -CN_E_PATH for a bad name. */
int cn_datastore_read_file(struct cn_datastore *ds, const struct cn_snapshot_id *id,
			   const char *name, struct cn_buf *out);

/* Marks or unmarks a snapshot protected (the .protected file). */
int cn_datastore_set_protected(struct cn_datastore *ds, const struct cn_snapshot_id *id, int on);

/* Removes a snapshot: takes its directory's flock (non-blocking,
 * -CN_E_LOCKED when in use), renames it to a hidden name in the group, then
 * deletes it, so it vanishes at once. Protected snapshots: -EPERM unless
 * force. */
int cn_datastore_remove_snapshot(struct cn_datastore *ds, const struct cn_snapshot_id *id,
				 int force);

#endif
