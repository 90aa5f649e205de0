/* cn_reuse — metadata change detection backed by the file cache: the
 * struct cn_pxar_reuse callbacks the walker calls (cn_walker.h), deciding
 * from store/cn_filecache.h whether a file is unchanged, and recording
 * every stored file into the cache of the new snapshot.
 *
 * A file is reused (not read) when the cache of the previous snapshot has
 * its path with the same size, mtime (s + ns), and pxar metadata (the
 * encoded ENTRY/XATTR/ACL/FCAPS/QUOTA items, as upstream's Metadata
 * equality), and — stricter than upstream — the file provably did not
 * change since: the same inode and ctime, which the cache's entries
 * recorded when the previous run read or checked the file. So a file
 * edited in place with its mtime put back, or replaced by another file of
 * the same size and mtime, is read again. A cache that does not describe
 * the previous snapshot (deleted, damaged, or written for another
 * snapshot: the newest one was pruned, or the previous snapshot came from
 * another machine or tree) is not used at all: every file is read once,
 * which costs speed, never a wrong backup. (The previous snapshot's
 * metadata archive alone cannot tell: it has no inode or ctime, and a
 * file of another tree may match it in path, size, mtime and metadata.)
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

enum cn_reuse_cache_state {
	CN_REUSE_CACHE_NONE,    /* no previous snapshot: nothing to reuse */
	CN_REUSE_CACHE_VALID,   /* the cache described the previous snapshot */
	CN_REUSE_CACHE_STALE,   /* it did not (absent, damaged, pruned or foreign
				 * previous): nothing reused, every file read */
};

/* Prepares change detection for one archive on one target.
 * cache_path: the target+group+archive cache (cn_filecache_path). prev:
 * the target's previous snapshot of this archive (NULL: none) and
 * prev_payload_index its payload index (borrowed; NULL: nothing reused).
 * The cache is used when it matches prev, else nothing is reused. A
 * writer for the new snapshot's cache is started. inject_fn(inject_ctx,
 * ...): the payload consumer's injection (cn_pxar_reuse.inject). *ops
 * (for cn_pxar_create_opts.reuse) lives as long as *out_r. 0 or negative. */
int cn_reuse_begin(const char *cache_path, const struct cn_filecache_ref *prev,
		   const struct cn_index *prev_payload_index,
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
 * itself is fine then; the next run reads every file). Call once. */
int cn_reuse_commit(struct cn_reuse *r, const struct cn_filecache_ref *snap, const int *keep);

/* How many of the caches cn_reuse_commit wrote were copies of the
 * previous cache with a new header: every file's entry was the previous
 * one unchanged (a run that changed nothing). */
size_t cn_reuse_copied(const struct cn_reuse *r);
/* Frees r; an uncommitted new cache is dropped. NULL is fine. */
void cn_reuse_free(struct cn_reuse *r);

#endif
