/* cn_s3_source — a restore source (engine/cn_target.h) reading a bucket in
 * the datastore layout (net/cn_s3_layout.h): list_snapshots by LIST (only
 * snapshot prefixes holding a manifest count), open checks the manifest
 * exists, get_file and get_chunk are whole-object GETs. get_file and
 * get_chunk replace the contents of their out buffer and may be called
 * from many threads at once: each call takes its own pooled connection. */
#ifndef CN_S3_SOURCE_H
#define CN_S3_SOURCE_H

#include "engine/cn_target.h"
#include "net/cn_s3.h"

/* Creates a source on s3 (borrowed: must outlive the source). Returns 0
 * and *out (released through its destroy op), or -ENOMEM. */
int cn_s3_source_new(struct cn_s3 *s3, struct cn_source **out);

#endif
