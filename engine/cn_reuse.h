/* cn_reuse — metadata change detection backed by the file cache: the
 * struct cn_pxar_reuse callbacks the walker calls (cn_walker.h), deciding
 * from store/cn_filecache.h whether a file is unchanged, and recording
 * every stored file into the cache of the new snapshot.
 *
 * A file is reused when the cache of the previous snapshot has its path
 * with the same size, mtime (s + ns), and pxar metadata (the encoded
 * ENTRY/XATTR/ACL/FCAPS/QUOTA items, as upstream's Metadata equality), and
 * — stricter than upstream — the same inode and ctime, which only entries
 * written by a previous cairn run know (CN_FILECACHE_VERIFIED). Entries
 * rebuilt from the previous metadata archive lack them and are not reused
 * unless trust_unverified is set (upstream behaviour): so a file edited in
 * place with its mtime put back, or replaced by another file of the same
 * size and mtime, is read again, and deleting the cache costs one full
 * read, never a wrong backup.
 */
#ifndef CN_REUSE_H
#define CN_REUSE_H

#include <stdint.h>

#include "common/cn_util.h"
#include "engine/cn_pxar_decoder.h"
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
	CN_REUSE_CACHE_STALE,   /* it did not and no fetch was given: nothing
				 * reused (with strict rules a rebuilt cache
				 * reuses nothing either) */
};

/* Prepares change detection for one archive on one target.
 * cache_path: the target+archive cache (cn_filecache_path). prev: the
 * target's previous snapshot of this archive (NULL: none) and
 * prev_payload_index its payload index (borrowed; NULL: nothing reused).
 * The cache is used when it matches prev; otherwise fetch(fetch_ctx) is
 * asked for the previous .mpxar and the cache rebuilt from it (fetch
 * NULL: not rebuilt, nothing reused). A writer
 * for the new snapshot's cache is started. inject_fn(inject_ctx, ...):
 * the payload consumer's injection (cn_pxar_reuse.inject). *ops (for
 * cn_pxar_create_opts.reuse) lives as long as *out_r. 0 or negative. */
int cn_reuse_begin(const char *cache_path, const struct cn_filecache_ref *prev,
		   const struct cn_index *prev_payload_index, cn_reuse_fetch_fn fetch, void *fetch_ctx,
		   int trust_unverified,
		   int (*inject_fn)(void *ctx, const struct cn_pxar_reused_chunk *chunks, size_t n),
		   void *inject_ctx, struct cn_reuse **out_r, const struct cn_pxar_reuse **ops);

/* What cn_reuse_begin found. */
enum cn_reuse_cache_state cn_reuse_cache_state(const struct cn_reuse *r);

/* After the snapshot was stored: commits the new cache as describing
 * snap (its name and payload index checksum). 0 or negative (the backup
 * itself is fine then; the next run rebuilds). */
int cn_reuse_commit(struct cn_reuse *r, const struct cn_filecache_ref *snap);

/* Frees r; an uncommitted new cache is dropped. NULL is fine. */
void cn_reuse_free(struct cn_reuse *r);

/* Writes the cache for a snapshot from its metadata archive alone
 * (.mpxar, decoded without the payload stream): every regular file with
 * size, mtime, metadata hash and payload offset, not VERIFIED. Replaces
 * the cache at path. Returns the number of files or a negative code. */
int64_t cn_reuse_rebuild_cache(const char *path, const struct cn_pxar_input *mpxar,
			       const struct cn_filecache_ref *ref);

/* SHA-256 of the encoded pxar metadata (cn_pxar_metadata_encode). */
int cn_reuse_meta_hash(const struct cn_pxar_metadata *m, uint8_t out[32]);

#endif
