/* cli_snapadmin — snapshot management on an open endpoint, for `cairn
 * snapshot forget|protected|notes` and `cairn sync`: a local datastore in
 * the PBS on-disk form (the .protected file; notes in the manifest's
 * "unprotected" section, as upstream keeps them) or a PBS server through
 * its REST endpoints (admin/datastore/{store}/snapshots, protected, notes).
 * An S3 bucket (net/cn_s3_layout.h: the .protected object, forget with the
 * manifest first) has set_protected and forget, for `cairn sync`. */
#ifndef CAIRN_CLI_SNAPADMIN_H
#define CAIRN_CLI_SNAPADMIN_H

#include "cli/cli_common.h"
#include "engine/cn_sync.h"

/* Fills *out with the endpoint's set_protected and forget (ctx = e, which
 * must outlive its use). */
void cli_endpoint_admin(struct cli_endpoint *e, struct cn_sync_admin *out);

/* The protected flag of snapshot id: 1 or 0, or a negative code
 * (-ENOENT: no such snapshot). */
int cli_endpoint_get_protected(struct cli_endpoint *e, const struct cn_snapshot_id *id);

/* The notes of snapshot id into *out (malloc'd, "" when none; the caller
 * frees), or sets them to text. 0 or a negative code with a message. */
int cli_endpoint_get_notes(struct cli_endpoint *e, const struct cn_snapshot_id *id, char **out);
int cli_endpoint_set_notes(struct cli_endpoint *e, const struct cn_snapshot_id *id,
			   const char *text);

/* cn_sync_run from endpoint `from` to endpoint `to` (sources and target
 * made and freed here; opts->admin set to to's). With opts->dry_run no
 * target is made, and `to` may be NULL: a local store that does not exist
 * yet, so everything would be copied. */
int cli_endpoint_sync(struct cli_endpoint *from, struct cli_endpoint *to, const char *ns,
		      const struct cn_snapshot_id *sel, size_t nsel, struct cn_sync_opts *opts,
		      struct cn_sync_stats *st);

#endif
