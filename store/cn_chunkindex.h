/* cn_chunkindex — the LMDB index of the chunk digests of one datastore
 * (".cairn/chunkindex.mdb" inside the datastore directory; PBS ignores
 * top-level entries that are not a backup type, "ns" or ".chunks").
 *
 * It answers "have I got this chunk?" without touching the filesystem. It is
 * an accelerator, never the truth: the files in .chunks/ are. Invariants:
 *
 *  - "chunks" maps digest[32] -> { stored size u64 LE, flags u32 LE }.
 *  - "meta" holds "version" and, for every prefix directory .chunks/XXXX
 *    that was last seen in step with the index, "d"+prefix(2 bytes BE) ->
 *    the directory's mtime (sec i64 LE, nsec i64 LE) at that moment.
 *  - Every change to a prefix directory by cairn happens under that
 *    prefix's lock (cn_datastore), followed by the matching index update
 *    and the new directory mtime in one transaction. So a recorded mtime
 *    that differs from the directory's current one means someone else
 *    (PBS's GC, a crash before the transaction, an admin) changed it: the
 *    prefix is rescanned. A missing record (fresh or deleted index, crash
 *    during a rebuild) means the same. A corrupt or foreign file is
 *    removed and rebuilt.
 *
 * The environment is opened MDB_NOSYNC|MDB_NOTLS: a crash may lose the last
 * transactions, which the mtime check repairs. LMDB allows one writer at a
 * time (its own cross-process mutex) and readers never block.
 * Thread-safe: one struct cn_chunkindex may be used by any number of threads.
 */
#ifndef CN_CHUNKINDEX_H
#define CN_CHUNKINDEX_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct cn_chunkindex;

/* One directory entry for cn_chunkindex_sync_prefix. */
struct cn_chunkindex_entry {
	uint8_t digest[32];
	uint64_t size;
};

/* Opens (creating if needed) the index file at path. A file that LMDB
 * rejects (bad magic, corrupt meta pages, wrong version) is deleted and
 * created anew (empty: every prefix then needs a rescan). *out is the
 * caller's, freed with cn_chunkindex_close(). 0 or a negative code. */
int cn_chunkindex_open(const char *path, struct cn_chunkindex **out);
/* Closes the index and frees ci (no transaction may be open). NULL is ok. */
void cn_chunkindex_close(struct cn_chunkindex *ci);

/* 1 if the digest is listed (and *size set when size != NULL), 0 if not,
 * negative on an LMDB failure. Never blocks on writers. */
int cn_chunkindex_has(struct cn_chunkindex *ci, const uint8_t digest[32], uint64_t *size);

/* Records one inserted chunk and the new mtime of its prefix directory
 * (dir_mtime NULL: the directory's record is left as it is). */
int cn_chunkindex_put(struct cn_chunkindex *ci, const uint8_t digest[32], uint64_t size,
		      const struct timespec *dir_mtime);

/* Removes digests (all in prefix directory prefix, e.g. after GC or
 * quarantine) and records the directory's new mtime (NULL = forget it, so
 * the next check rescans). */
int cn_chunkindex_remove(struct cn_chunkindex *ci, uint16_t prefix, const uint8_t (*digests)[32],
			 size_t n, const struct timespec *dir_mtime);

/* Whether prefix's recorded mtime equals mtime: 1 in step, 0 not (or not
 * recorded), negative on failure. */
int cn_chunkindex_prefix_current(struct cn_chunkindex *ci, uint16_t prefix,
				 const struct timespec *mtime);

/* One prefix directory as just read: its chunks and its mtime. */
struct cn_chunkindex_dir {
	uint16_t prefix;
	const struct cn_chunkindex_entry *entries;
	size_t n;
	struct timespec mtime;
};

/* Replaces everything listed under each dir's prefix with its entries and
 * records its mtime, all in one transaction (a rebuild commits once per
 * batch, not once per directory). */
int cn_chunkindex_sync_dirs(struct cn_chunkindex *ci, const struct cn_chunkindex_dir *dirs,
			    size_t n);

/* sync_dirs for the directories the index has no record of yet, in one
 * transaction; a directory already recorded (a chunk was inserted into it
 * meanwhile) is left as it is. */
int cn_chunkindex_add_dirs(struct cn_chunkindex *ci, const struct cn_chunkindex_dir *dirs,
			   size_t n);

/* Number of digests listed (for tests and stats). */
int64_t cn_chunkindex_count(struct cn_chunkindex *ci);

#endif
