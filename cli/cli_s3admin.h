/* cli_s3admin — prune and garbage collection of an S3 bucket in the
 * datastore layout (net/cn_s3_layout.h). They live here, above both the
 * net and the store layer, because they join the S3 client with the
 * store's pure parts: the prune selection (cn_prune_select) and the index
 * parser. Nothing here prints; results and counts go to the caller.
 *
 * prune: selects like a local datastore (cn_prune_select on the finished
 * snapshots; protected ones always kept) and removes a snapshot by deleting
 * its manifest first (from then on it is not a snapshot any more), then
 * every other object under its prefix. A snapshot whose .protected object
 * appears before the removal is kept.
 *
 * gc (phases as upstream's, on object times instead of atimes):
 *  0. writes a new generation with running = true (net/cn_s3_gcstate.h),
 *     and its "updated" time every minute while it runs; refuses to run
 *     while another GC's state says running (-CN_E_LOCKED);
 *  1. reads the writer markers (.cairn/writers/…): a marker younger than
 *     CLI_S3_WRITER_STALE is a running backup;
 *  2. one LIST of the bucket: chunks with their LastModified, snapshot
 *     prefixes with or without a manifest;
 *  3. mark: every index (.didx/.fidx) of every snapshot prefix that is
 *     kept (a manifest, a running writer, or younger than the cutoff) is
 *     read and its chunks marked; an index that cannot be parsed stops GC
 *     before anything is deleted;
 *  4. sweep: an unmarked chunk is deleted when LastModified < cutoff,
 *        cutoff = min(start, oldest running writer's start) - grace,
 *     grace = 24 h 5 min as upstream unless opts->grace says otherwise;
 *     snapshot prefixes without a manifest, without a running writer and
 *     with every object older than the cutoff are deleted, as are writer
 *     markers older than CLI_S3_WRITER_STALE;
 *  5. writes the generation with running = false.
 * A chunk a running backup reuses without uploading it (found in its cache
 * or by HEAD) may be older than the cutoff: the S3 target checks the state
 * object after publishing and withdraws its snapshot if such a chunk went
 * (net/cn_s3_target.h), so no published snapshot references a missing
 * chunk. */
#ifndef CAIRN_CLI_S3ADMIN_H
#define CAIRN_CLI_S3ADMIN_H

#include <stddef.h>

#include "net/cn_s3.h"
#include "store/cn_gc.h"
#include "store/cn_prune.h"

/* A writer marker older than this is a backup that died (3 days). */
#define CLI_S3_WRITER_STALE (72 * 3600)

/* Prunes one group of the bucket as cn_datastore_prune_group does a local
 * one (same keep rules, same *out: every finished snapshot, oldest first,
 * with its mark; freed by the caller). Returns the number removed (or that
 * would be, with dry_run) or a negative code. */
int cli_s3_prune_group(struct cn_s3 *s3, const struct cn_snapshot_id *group,
		       const struct cn_prune_keep *keep, int dry_run,
		       struct cn_prune_entry **out, size_t *n);

/* Runs a garbage collection of the bucket as described above (opts may be
 * NULL: now, upstream's grace). Fills *stats (may be NULL; disk_* count the
 * chunks kept). Returns 0 or a negative code. */
int cli_s3_gc(struct cn_s3 *s3, const struct cn_gc_opts *opts, struct cn_gc_stats *stats);

#endif
