/* cn_s3_target — a backup target (engine/cn_target.h) that writes one
 * snapshot into an S3 bucket in the datastore layout (net/cn_s3_layout.h):
 *
 *  - begin: checks the bucket, finds the group's newest finished snapshot
 *    and reads its manifest, writes the group's owner object if absent and
 *    the writer marker (.cairn/writers/…, JSON with the start time) that a
 *    garbage collection must respect;
 *  - load_previous_index: GET of the previous snapshot's index;
 *  - add_known / has_chunk: a digest set of chunks known to be stored (from
 *    the previous indexes and this backup's uploads), then the local
 *    chunk-listing cache of the bucket (net/cn_s3_cache.h; not while a GC
 *    runs), no round trip;
 *  - put_chunk: HEADs the chunk object and PUTs it only if absent, from
 *    the chunk's shared buffer (no copy), on an idle upload thread (the
 *    chunk's reference is dropped when its PUT is answered) or, when
 *    none is idle, in the calling thread; a background upload's error is
 *    reported by the next call;
 *  - index_close: the .didx/.fidx file is built in memory (40 or 32 bytes
 *    per chunk), checked against the engine's count, size and checksum, and
 *    PUT; put_blob: PUT (the manifest is kept for finish);
 *  - finish: waits for every upload, then PUTs index.json.blob — the
 *    snapshot becomes visible only now — and deletes the writer marker.
 *    If the bucket's GC state (net/cn_s3_gcstate.h) shows that a GC ran or
 *    started since begin, it first waits (at most an hour) for no GC to
 *    run and HEADs every chunk the snapshot reuses without having uploaded
 *    it (previous snapshot, cache, HEAD): one gone, the manifest is deleted
 *    again and finish fails, so no snapshot references a chunk a GC took.
 *    Then it records its uploads in the cache;
 *  - abort: stops the uploads, deletes the manifest (if finish had sent
 *    it), the snapshot's other objects and the marker; chunks stay (another
 *    snapshot may reference them). After a cancel nothing is deleted (the
 *    endpoint does not answer): the leftovers have no manifest and are
 *    invisible until a garbage collection removes them.
 *  - cancel / progress: cancel the client's transfers; bytes moved.
 */
#ifndef CN_S3_TARGET_H
#define CN_S3_TARGET_H

#include "engine/cn_target.h"
#include "net/cn_s3.h"

struct cn_s3_target_opts {
	int uploaders;         /* uploads in flight at most, the caller's
				* put_chunk included (0 = 2) */
	const char *owner;     /* group owner written when absent (NULL = "root@pam") */
	int no_cache;          /* 1: no chunk-listing cache (net/cn_s3_cache.h) */
	const char *cache_dir; /* its base directory (NULL = $XDG_CACHE_HOME/cairn/s3) */
};

/* Creates a target writing to s3 (borrowed: must outlive the target; use
 * one client per target, as cancel stops all of the client's calls).
 * 0 and *out (freed with its destroy op), or -ENOMEM. */
int cn_s3_target_new(struct cn_s3 *s3, const struct cn_s3_target_opts *opts,
		     struct cn_target **out);

/* Upload counters (for summaries and tests). */
struct cn_s3_target_stats {
	uint64_t chunks_uploaded, bytes_uploaded; /* PUT chunks, encoded bytes */
	uint64_t chunks_present;                  /* put_chunk found by HEAD */
	uint64_t chunks_cached;                   /* has_chunk found in the cache */
};

/* Fills *st for a target made by cn_s3_target_new. */
void cn_s3_target_stats(const struct cn_target *t, struct cn_s3_target_stats *st);

#endif
