/* cn_s3_objstore — the object-store administration interface
 * (engine/cn_objstore.h) on an S3 bucket in the datastore layout
 * (net/cn_s3_layout.h): listings with LastModified, whole-object GETs,
 * multi-object deletes (cn_s3_delete_keys), the writer markers under
 * .cairn/writers/, and the GC state object (net/cn_s3_gcstate.h) that
 * gc_begin, gc_alive and gc_end keep. */
#ifndef CN_S3_OBJSTORE_H
#define CN_S3_OBJSTORE_H

#include "engine/cn_objstore.h"
#include "net/cn_s3.h"

/* Creates the handle on s3 (borrowed: must outlive it). Returns 0 and
 * *out (released through its destroy op), or -ENOMEM. */
int cn_s3_objstore_new(struct cn_s3 *s3, struct cn_objstore **out);

#endif
