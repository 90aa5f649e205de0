/* cn_objstore_admin — prune and garbage collection of a datastore kept as
 * objects in an object store (engine/cn_objstore.h, e.g. an S3 bucket).
 * The prune selection is the store's (cn_prune_apply); the index parser is
 * store/cn_index.h. Nothing here prints; results and counts go to the
 * caller.
 *
 * prune: selects like a local datastore (on the finished snapshots;
 * protected ones always kept) and removes a snapshot by deleting its
 * manifest first (from then on it is not a snapshot any more), then every
 * other object under its prefix. A snapshot whose .protected object
 * appears before the removal is kept.
 *
 * gc (phases as upstream's, on object times instead of atimes):
 *  0. begins a GC on the store (gc_begin: a new generation that runs,
 *     renewed through gc_alive while it runs); refuses to run while
 *     another GC runs (-CN_E_LOCKED);
 *  1. reads the writer markers: a marker younger than
 *     CN_OBJSTORE_WRITER_STALE is a running backup;
 *  2. one listing of the store: chunks with their modification times,
 *     snapshot prefixes with or without a manifest;
 *  3. mark: every index (.didx/.fidx) of every snapshot prefix that is
 *     kept (a manifest, a running writer, or younger than the cutoff) is
 *     read and its chunks marked; an index that cannot be parsed stops GC
 *     before anything is deleted;
 *  4. sweep: an unmarked chunk is deleted when its mtime < cutoff,
 *        cutoff = min(start, oldest running writer's start) - grace,
 *     grace = 24 h 5 min as upstream unless opts->grace says otherwise;
 *     chunks go in batches of CN_OBJSTORE_DELETE_MAX keys; snapshot
 *     prefixes without a manifest, without a running writer and with
 *     every object older than the cutoff are deleted, as are writer
 *     markers older than CN_OBJSTORE_WRITER_STALE;
 *  5. ends the GC (gc_end), also after a failure.
 * A chunk a running backup reuses without uploading it (found in its cache
 * or by HEAD) may be older than the cutoff: the S3 target checks the GC
 * state after publishing and withdraws its snapshot if such a chunk went
 * (net/cn_s3_target.h), so no published snapshot references a missing
 * chunk. */
#ifndef CN_OBJSTORE_ADMIN_H
#define CN_OBJSTORE_ADMIN_H

#include <stddef.h>

#include "engine/cn_objstore.h"
#include "store/cn_gc.h"
#include "store/cn_prune.h"

/* A writer marker older than this is a backup that died (3 days). */
#define CN_OBJSTORE_WRITER_STALE (72 * 3600)

/* Prunes one group of the store as cn_datastore_prune_group does a local
 * one (same keep rules, same *out: every finished snapshot, oldest first,
 * with its mark; freed by the caller). Returns the number removed (or that
 * would be, with dry_run) or a negative code. */
int cn_objstore_admin_prune_group(struct cn_objstore *o, const struct cn_snapshot_id *group,
				  const struct cn_prune_keep *keep, int dry_run,
				  struct cn_prune_entry **out, size_t *n);

/* Runs a garbage collection of the store as described above (opts may be
 * NULL: now, upstream's grace). Fills *stats (may be NULL; disk_* count
 * the chunks kept). Returns 0 or a negative code (-CN_E_LOCKED: another
 * GC runs). */
int cn_objstore_admin_gc(struct cn_objstore *o, const struct cn_gc_opts *opts,
			 struct cn_gc_stats *stats);

#endif
