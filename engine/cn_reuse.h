/* cn_reuse — metadata change detection backed by the file cache: the
 * struct cn_pxar_reuse callbacks the walker calls (cn_walker.h), deciding
 * from store/cn_filecache.h whether a file is unchanged, and recording
 * every stored file into the cache of the new snapshot.
 *
 * A file is reused (not read) when the cache of the previous snapshot has
 * its path with the same size, mtime (s + ns), and pxar metadata (the
 * encoded ENTRY/XATTR/ACL/FCAPS/QUOTA items, as upstream's Metadata
 * equality), and — stricter than upstream — the file provably did not
 * change since: the same inode and ctime, which only entries written by a
 * previous cairn run know (CN_FILECACHE_VERIFIED), or, for entries
 * rebuilt from the previous metadata archive, a ctime older than the
 * previous backup's start. So a file edited in place with its mtime put
 * back, or replaced by another file of the same size and mtime, is read
 * again, and deleting the cache costs speed, never a wrong backup.
 * trust_unverified reuses rebuilt entries on size + mtime + metadata
 * alone (upstream's rule).
 *
 * A file whose VERIFIED entry has its listing's inode, ctime, size and
 * mtime and the metadata hash of its stat alone (it had no xattrs, ACLs,
 * fcaps, flags or project id) is found unchanged before it is opened
 * (lookup_unopened): setting any of those sets the ctime, so the walker
 * need not open it to read them.
 *
 * Beyond upstream, two cases that upstream reads and stores again cost
 * no new payload here:
 *  - moved or renamed (a renamed folder): found by inode number, with
 *    the same size, mtime, ctime and metadata — a rename of the file
 *    itself sets its ctime, a rename of a parent does not;
 *  - metadata or name changed but content not (chmod, chown, xattrs, a
 *    hardlink added): an entry of the same size and mtime (by path, else
 *    by inode) whose content hash (XXH3-128 of the bytes stored, which
 *    the walker computes as it reads) matches the file's content now; the
 *    file is read once to compare, and re-read to store when it differs.
 * XXH3-128 is not a cryptographic hash: a file crafted to collide with
 * the previous content of the same path, size and mtime would keep its
 * old content in the backup, which loses nothing an attacker with write
 * access could not delete anyway; accidental collisions are 2^-128.
 */
#ifndef CN_REUSE_H
#define CN_REUSE_H

#include <stdint.h>

#include "common/cn_util.h"
#include "pxar/cn_pxar_decoder.h"
#include "engine/cn_walker.h"
#include "store/cn_filecache.h"

struct cn_reuse;  /* opaque */

/* Gets the previous snapshot's metadata archive (.mpxar bytes appended to
 * out), for rebuilding a cache; 0 or a negative code. */
typedef int (*cn_reuse_fetch_fn)(void *ctx, struct cn_buf *out);

enum cn_reuse_cache_state {
	CN_REUSE_CACHE_NONE,    /* no previous snapshot: nothing to reuse */
	CN_REUSE_CACHE_VALID,   /* the cache described the previous snapshot */
	CN_REUSE_CACHE_REBUILT, /* it did not (absent, damaged, pruned or foreign
				 * previous): rebuilt from the previous .mpxar */
	CN_REUSE_CACHE_STALE,   /* it did not, and no fetch was given or the
				 * rebuild failed (a warning): nothing reused */
};

/* Prepares change detection for one archive on one target.
 * cache_path: the target+archive cache (cn_filecache_path). prev: the
 * target's previous snapshot of this archive (NULL: none), prev_time its
 * backup time (0: unknown, then rebuilt entries are never trusted), and
 * prev_payload_index its payload index (borrowed; NULL: nothing reused).
 * The cache is used when it matches prev; otherwise fetch(fetch_ctx) is
 * asked for the previous .mpxar and the cache rebuilt from it (fetch
 * NULL: not rebuilt, nothing reused). A writer
 * for the new snapshot's cache is started. inject_fn(inject_ctx, ...):
 * the payload consumer's injection (cn_pxar_reuse.inject). *ops (for
 * cn_pxar_create_opts.reuse) lives as long as *out_r. 0 or negative. */
int cn_reuse_begin(const char *cache_path, const struct cn_filecache_ref *prev, int64_t prev_time,
		   const struct cn_index *prev_payload_index, cn_reuse_fetch_fn fetch, void *fetch_ctx,
		   int trust_unverified,
		   int (*inject_fn)(void *ctx, const struct cn_pxar_reused_chunk *chunks, size_t n),
		   void *inject_ctx, struct cn_reuse **out_r, const struct cn_pxar_reuse **ops);

/* What cn_reuse_begin found. */
enum cn_reuse_cache_state cn_reuse_cache_state(const struct cn_reuse *r);

/* Adds another new cache to write, at cache_path (another target's: all
 * get the same entries). Returns its number (cn_reuse_begin's cache is
 * 0) or a negative code with a message. */
int cn_reuse_add_output(struct cn_reuse *r, const char *cache_path);

/* After the snapshot was stored: commits the new caches numbered k with
 * keep[k] != 0 (keep NULL: all) as describing snap (its name and payload
 * index checksum) and drops the others. 0 or the first error (the backup
 * itself is fine then; the next run rebuilds). Call once. */
int cn_reuse_commit(struct cn_reuse *r, const struct cn_filecache_ref *snap, const int *keep);

/* How many of the caches cn_reuse_commit wrote were copies of the
 * previous cache with a new header: every file's entry was the previous
 * one unchanged (a run that changed nothing). */
size_t cn_reuse_copied(const struct cn_reuse *r);
/* Frees r; an uncommitted new cache is dropped. NULL is fine. */
void cn_reuse_free(struct cn_reuse *r);

/* Writes the cache for a snapshot from its metadata archive alone
 * (.mpxar, decoded without the payload stream): every regular file with
 * size, mtime, metadata hash and payload offset, not VERIFIED. Replaces
 * the cache at path. Returns the number of files or a negative code. */
int64_t cn_reuse_rebuild_cache(const char *path, const struct cn_pxar_input *mpxar,
			       const struct cn_filecache_ref *ref);

#endif
