/* cn_s3_cache — a local LMDB copy of the set of chunks a bucket holds, so
 * that a backup need not ask the service (HEAD) for every chunk its
 * previous snapshot does not already account for.
 *
 * Where: DIR/<first 32 hex digits of SHA-256 of "s3://bucket/prefix
 * (endpoint)">/chunks.mdb, DIR being $XDG_CACHE_HOME/cairn/s3 (or
 * ~/.cache/cairn/s3). Deleting it costs one LIST of the bucket's chunks.
 *
 * What it promises: a digest in the cache was in the bucket when the
 * cache was last built or added to, and nothing but a garbage collection
 * removes chunks. So it is rebuilt from a LIST of .chunks/ when it is
 * missing or unreadable, when the bucket's GC generation
 * (net/cn_s3_gcstate.h) differs from the one it was built under (a GC ran
 * since, or the bucket was emptied: no state object), and when it is
 * older than CN_S3_CACHE_MAX_AGE (to learn the chunks other machines
 * stored). It is not used at all while a GC runs. Chunks deleted by hand,
 * outside `cairn gc`, are not seen until one of these happens: delete the
 * cache directory after doing that. A backup that ran while a GC started
 * checks its reused chunks after publishing (net/cn_s3_target.h).
 *
 * Several processes may use one cache at once (LMDB's locking). */
#ifndef CN_S3_CACHE_H
#define CN_S3_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "net/cn_s3.h"
#include "net/cn_s3_gcstate.h"

#define CN_S3_CACHE_MAX_AGE (7 * 86400)

struct cn_s3_cache;

/* Opens the cache of s3's bucket and prefix below dir (NULL: the default
 * above), creating or rebuilding it as described against gs (the state
 * the caller read). *rebuilt (may be NULL) tells whether it was listed
 * anew. 0 and *out (cn_s3_cache_close), or a negative code. */
int cn_s3_cache_open(struct cn_s3 *s3, const char *dir, const struct cn_s3_gc_state *gs,
		     struct cn_s3_cache **out, int *rebuilt);

/* 1 if the digest is in the cache, 0 if not. Any thread. */
int cn_s3_cache_has(struct cn_s3_cache *c, const uint8_t digest[32]);

/* Records chunks now stored in the bucket (one transaction). 0 or <0. */
int cn_s3_cache_add(struct cn_s3_cache *c, const uint8_t (*digests)[32], size_t n);

/* Marks the cache stale: the next open rebuilds it. */
void cn_s3_cache_invalidate(struct cn_s3_cache *c);

/* The cache's directory (for messages). Borrowed. */
const char *cn_s3_cache_path(const struct cn_s3_cache *c);

void cn_s3_cache_close(struct cn_s3_cache *c);

#endif
