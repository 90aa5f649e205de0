/* cli_s3admin — prune and garbage collection of an S3 bucket for the
 * commands (prune, gc, run): each call wraps the client in the engine's
 * object-store interface (net/cn_s3_objstore.h) and runs the engine's
 * prune or gc on it (engine/cn_objstore_admin.h, where the rules are
 * described). Nothing here prints. */
#ifndef CAIRN_CLI_S3ADMIN_H
#define CAIRN_CLI_S3ADMIN_H

#include <stddef.h>

#include "engine/cn_objstore_admin.h"
#include "net/cn_s3.h"

/* cn_objstore_admin_prune_group on the bucket of s3 (borrowed). */
int cli_s3_prune_group(struct cn_s3 *s3, const struct cn_snapshot_id *group,
		       const struct cn_prune_keep *keep, int dry_run,
		       struct cn_prune_entry **out, size_t *n);

/* cn_objstore_admin_gc on the bucket of s3 (borrowed). */
int cli_s3_gc(struct cn_s3 *s3, const struct cn_gc_opts *opts, struct cn_gc_stats *stats);

#endif
