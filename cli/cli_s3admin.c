/* Prune and garbage collection of an S3 bucket (see cli_s3admin.h). */
#include "cli/cli_s3admin.h"

#include "net/cn_s3_objstore.h"

int cli_s3_prune_group(struct cn_s3 *s3, const struct cn_snapshot_id *group,
		       const struct cn_prune_keep *keep, int dry_run,
		       struct cn_prune_entry **out, size_t *n)
{
	struct cn_objstore *o;
	int r = cn_s3_objstore_new(s3, &o);
	if (r < 0)
		return r;
	r = cn_objstore_admin_prune_group(o, group, keep, dry_run, out, n);
	o->ops->destroy(o);
	return r;
}

int cli_s3_gc(struct cn_s3 *s3, const struct cn_gc_opts *opts, struct cn_gc_stats *stats)
{
	struct cn_objstore *o;
	int r = cn_s3_objstore_new(s3, &o);
	if (r < 0)
		return r;
	r = cn_objstore_admin_gc(o, opts, stats);
	o->ops->destroy(o);
	return r;
}
