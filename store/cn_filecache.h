/* cn_filecache — per target and per archive, what the previous snapshot
 * holds for each regular file, so that metadata change detection can
 * decide "unchanged, re-reference the previous payload" without
 * downloading and decoding the previous metadata archive.
 *
 * One LMDB file per (target, group, archive) (cn_filecache_path). It maps a file's
 * path (relative to the archive root) to: inode, size, mtime, ctime as
 * seen when the data was stored, a hash of its encoded pxar metadata, a
 * hash of its content (XXH3-128 of the bytes stored), and the offset of
 * its PAYLOAD header in that snapshot's payload stream. A second map from
 * inode number to path finds a file that was moved or renamed.
 * A header record names the snapshot the cache describes (a string the
 * caller chooses, e.g. "ns/host/name/2026-11-25T09:00:00Z") and the
 * checksum of that snapshot's payload index; the cache is used only when
 * both match the target's current previous snapshot (a pruned, foreign
 * or re-made previous snapshot invalidates it). The file ends with a
 * SHA-256 of its bytes, checked before LMDB maps it (damaged LMDB pages
 * can crash a reader), and the header holds a digest of all records, so a
 * damaged file is detected (then deleted and treated as absent). Opening
 * reads the whole file once.
 *
 * The cache is an accelerator only: it is rebuilt (from the previous
 * metadata archive) when absent or stale, and entries rebuilt that way
 * carry no inode/ctime (flag CN_FILECACHE_VERIFIED clear), so callers can
 * be strict about them. A cache for a new snapshot is written to
 * PATH.new and renamed over PATH on commit, so a crash leaves the old one.
 *
 * Not thread-safe: one thread uses a cache or a writer at a time.
 */
#ifndef CN_FILECACHE_H
#define CN_FILECACHE_H

#include <stddef.h>
#include <stdint.h>

/* The entry's inode and ctime were seen when its data was stored. */
#define CN_FILECACHE_VERIFIED 1u
/* content_hash holds the XXH3-128 of the file's stored bytes. */
#define CN_FILECACHE_CONTENT_HASH 2u

struct cn_filecache_entry {
	uint32_t flags;          /* CN_FILECACHE_VERIFIED, _CONTENT_HASH */
	uint64_t ino;            /* 0 unless VERIFIED */
	uint64_t size;           /* content bytes */
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	int64_t ctime_sec;       /* 0 unless VERIFIED */
	uint32_t ctime_nsec;
	uint8_t meta_hash[32];   /* SHA-256 of the encoded pxar metadata items */
	uint64_t payload_offset; /* PAYLOAD header offset in the payload stream */
	uint8_t content_hash[16];/* XXH3-128, big-endian (CN_FILECACHE_CONTENT_HASH) */
};

/* Which snapshot a cache describes. */
struct cn_filecache_ref {
	const char *snapshot;        /* caller's name of the snapshot */
	uint8_t payload_csum[32];    /* checksum of its payload index */
};

struct cn_filecache;        /* opaque: an open cache (read side) */
struct cn_filecache_writer; /* opaque: a cache being written */

/* Builds the cache file path for a target and archive (the archive's
 * name, with its backup group where groups share the directory):
 * DIR/<hex SHA-256 of target_id NUL archive>.lmdb, into out (size len).
 * Returns 0 or -ENAMETOOLONG. */
int cn_filecache_path(const char *dir, const char *target_id, const char *archive, char *out,
		      size_t len);

/* Opens the cache at path read-only. A missing file gives *out == NULL and
 * 0. A file that is not a valid cache (not LMDB, damaged, header missing,
 * records not matching the header's digest) is deleted, logged as a
 * warning, and also gives *out == NULL and 0. Other errors: negative code
 * with a message. Close with cn_filecache_close. */
int cn_filecache_open(const char *path, struct cn_filecache **out);

void cn_filecache_close(struct cn_filecache *fc);

/* 1 when the cache describes exactly prev (same snapshot name and payload
 * index checksum), else 0. fc NULL gives 0. */
int cn_filecache_matches(const struct cn_filecache *fc, const struct cn_filecache_ref *prev);

/* Number of entries. */
uint64_t cn_filecache_count(const struct cn_filecache *fc);

/* Looks path (len bytes) up. Returns 1 and fills *e, 0 when absent, or a
 * negative code (LMDB error) with a message. */
int cn_filecache_lookup(struct cn_filecache *fc, const char *path, size_t len,
			struct cn_filecache_entry *e);

/* The key under which path (len bytes) is stored: a SHA-256 of the path
 * (opaque to callers; for cn_filecache_get and the writer's _key calls,
 * which then need not hash the path again). 0 or -ENOMEM. */
int cn_filecache_key(struct cn_filecache *fc, const char *path, size_t len, uint8_t key[32]);

/* cn_filecache_lookup by a key from cn_filecache_key: 1 and *e filled,
 * 0 when absent, or a negative code with a message. */
int cn_filecache_get(struct cn_filecache *fc, const uint8_t key[32], struct cn_filecache_entry *e);

/* 1 when a and b are equal in every field, else 0. */
int cn_filecache_entry_equal(const struct cn_filecache_entry *a, const struct cn_filecache_entry *b);

/* 1 when a and b are equal in every field but payload_offset, else 0. */
int cn_filecache_entry_same_file(const struct cn_filecache_entry *a, const struct cn_filecache_entry *b);

/* Finds a VERIFIED entry with inode number ino for which accept(ctx, e)
 * returns nonzero (several paths may have had the same inode on
 * different file systems, or as hardlinks). Returns 1 and fills *e, 0
 * when there is none, or a negative code with a message. */
int cn_filecache_lookup_inode(struct cn_filecache *fc, uint64_t ino,
			      int (*accept)(void *ctx, const struct cn_filecache_entry *e), void *ctx,
			      struct cn_filecache_entry *e);

/* Starts writing a new cache for path (into path.new, replacing any left
 * over from a crash). Returns 0 or a negative code with a message. */
int cn_filecache_writer_begin(const char *path, struct cn_filecache_writer **out);

/* Adds or replaces the entry for path (len bytes); a VERIFIED entry is
 * also found by its inode afterwards. 0 or negative. */
int cn_filecache_writer_put(struct cn_filecache_writer *w, const char *path, size_t len,
			    const struct cn_filecache_entry *e);

/* cn_filecache_writer_put with the path's key (cn_filecache_key). */
int cn_filecache_writer_put_key(struct cn_filecache_writer *w, const uint8_t key[32],
				const struct cn_filecache_entry *e);

/* Makes base (borrowed: it stays open until w is committed or aborted)
 * the cache that cn_filecache_writer_keep refers to. */
void cn_filecache_writer_set_base(struct cn_filecache_writer *w, struct cn_filecache *base);

/* The new cache's entry under key (cn_filecache_key of a path) is e,
 * which equals base's entry of key in everything but perhaps its payload
 * offset, base_offset in base (as cn_filecache_get gives it). When e's
 * offset is base_offset moved by the same amount as at the writer's
 * first keep, only the key is kept, and base's record copied at commit
 * (its offset moved likewise); otherwise e is put. Each key once, and
 * not also put. When every record of base is kept and nothing is put (a
 * run that changed nothing), commit copies base's file and replaces only
 * its header (which says by how much its offsets moved) instead of
 * writing every record again. 0 or a negative code. */
int cn_filecache_writer_keep(struct cn_filecache_writer *w, const uint8_t key[32],
			     const struct cn_filecache_entry *e, uint64_t base_offset);

/* Writes the header for ref, syncs, and renames the new cache over the
 * old one; frees w in every case. 0 when the records were written, 1
 * when the base's file was copied (every record kept, nothing put), or a
 * negative code (then the old cache is left as it was and the new one
 * removed). Call it only once the snapshot ref names is stored: a cache
 * must never describe a snapshot that does not exist. */
int cn_filecache_writer_commit(struct cn_filecache_writer *w, const struct cn_filecache_ref *ref);

/* Drops the new cache (NULL is fine). */
void cn_filecache_writer_abort(struct cn_filecache_writer *w);

#endif
