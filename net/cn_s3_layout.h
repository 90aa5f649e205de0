/* cn_s3_layout — the PBS datastore layout as S3 object keys, shared by the
 * S3 target and source (and what prunes or collects garbage in a bucket).
 *
 * Below the client's prefix a bucket holds exactly the files of a local
 * datastore, one object per file:
 *   .chunks/XXXX/<hex digest>                        chunks (XXXX: first 2 bytes)
 *   [ns/A/[ns/B/]]<type>/<id>/owner                  group owner ("root@pam\n")
 *   [ns/...]<type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>/<file> index.json.blob, *.didx,
 *                                                     *.fidx, *.blob, .protected
 *   .cairn/writers/[ns/...]<type>/<id>/<time>        marker of a running backup
 *                                                     (JSON with its start time)
 * A snapshot exists only when its index.json.blob does: it is written last,
 * after every index and chunk it references; prefixes without it are the
 * leftovers of an unfinished backup. A datastore copied into a bucket with
 * any S3 tool, or a bucket copied to disk, is a valid datastore.
 */
#ifndef CN_S3_LAYOUT_H
#define CN_S3_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/cn_target.h"
#include "net/cn_s3.h"

#define CN_S3_MANIFEST "index.json.blob"
#define CN_S3_WRITERS ".cairn/writers/"

/* ".chunks/abcd/<64 hex>" into out (at least 82 bytes). */
void cn_s3_chunk_key(const uint8_t digest[32], char *out);

/* "[ns/..]type/id/TIME/" of snapshot id, or with a name appended
 * ("…/TIME/name") when name is not NULL. 0 or -ENAMETOOLONG. */
int cn_s3_snapshot_key(const struct cn_snapshot_id *id, const char *name, char *out,
		       size_t n);

/* The writer marker key of a backup of snapshot id. 0 or -ENAMETOOLONG. */
int cn_s3_writer_key(const struct cn_snapshot_id *id, char *out, size_t n);

/* Lists the finished snapshots (those with a manifest) of group (type and
 * id of `group`, in its namespace), or of every group of the namespace when
 * group->id is "" (group->type "" too: every type). *out is malloc'd,
 * sorted by type, id, time; the caller frees it. size is 0 and encrypted
 * -1 (unknown without reading the manifest); protected_ from the
 * .protected object. */
int cn_s3_list_snapshots(struct cn_s3 *s3, const struct cn_snapshot_id *group,
			 struct cn_snapshot_info **out, size_t *n);

/* Snapshot management outside a backup, as cn_pbs_set_protected and
 * cn_pbs_forget do it on a PBS (what `cairn sync` needs of a destination).
 * Both return -ENOENT with a message when id is not a finished snapshot
 * (no manifest), else 0 or a negative code. */

/* Marks snapshot id protected (on: an empty ".protected" object in its
 * prefix, as a datastore has the file) or not (the object deleted). */
int cn_s3_set_protected(struct cn_s3 *s3, const struct cn_snapshot_id *id, int on);

/* Removes snapshot id as prune does: its manifest first (from then on it
 * is no snapshot), then every other object under its prefix. Its chunks
 * stay until a gc. -EPERM (nothing deleted) if it is protected. */
int cn_s3_forget(struct cn_s3 *s3, const struct cn_snapshot_id *id);

#endif
