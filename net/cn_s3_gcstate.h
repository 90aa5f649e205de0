/* cn_s3_gcstate — the garbage-collection state object of a bucket
 * (".cairn/gc-state" below the prefix, JSON), shared by `cairn gc` (which
 * writes it) and the S3 target and chunk-listing cache (which read it).
 *
 * A GC writes a new generation with running = true before it lists writer
 * markers and manifests, and the same generation with running = false when
 * it is done. So:
 *  - a cached view of the bucket's chunks built under generation G is
 *    still free of chunks removed by GC while the generation is G and no
 *    GC runs;
 *  - a backup that reads the state after writing its writer marker and
 *    again after publishing its manifest knows whether a GC may have
 *    removed a chunk it reused without uploading it: only if the
 *    generation changed or a GC was running (any GC that starts later sees
 *    the manifest and marks its chunks).
 * A running GC rewrites the state (its "updated" time) at least every
 * CN_S3_GC_BEAT seconds; a "running" state not updated for CN_S3_GC_STALE
 * is a GC that died (killed, or its machine gone). */
#ifndef CN_S3_GCSTATE_H
#define CN_S3_GCSTATE_H

#include <stdint.h>

#include "net/cn_s3.h"

#define CN_S3_GC_STATE ".cairn/gc-state"
#define CN_S3_GC_BEAT 60
#define CN_S3_GC_STALE 600

struct cn_s3_gc_state {
	char generation[40]; /* "" = no GC ever ran */
	int running;
	int64_t started, updated, finished;
};

/* Reads the state (a bucket without one: generation "", not running).
 * 0 or a negative code; a damaged object reads as a fresh generation
 * "damaged" that is not running. */
int cn_s3_gc_state_get(struct cn_s3 *s3, struct cn_s3_gc_state *st);

/* Writes the state. 0 or a negative code. */
int cn_s3_gc_state_put(struct cn_s3 *s3, const struct cn_s3_gc_state *st);

/* 1 if st is a GC running now (updated, or started, less than
 * CN_S3_GC_STALE before now). */
int cn_s3_gc_state_active(const struct cn_s3_gc_state *st, int64_t now);

#endif
