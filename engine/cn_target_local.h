/* cn_target_local — the local datastore (store/cn_datastore.h) behind the
 * engine's target and source interfaces (engine/cn_target.h).
 *
 * Target: begin() opens a snapshot writer (group lock, temp directory) and
 * returns the group's newest finished snapshot's manifest; chunks go
 * straight into .chunks/ (atomic insert; an existing chunk is touched for
 * GC); each index is built in memory (40 bytes per chunk) and written into
 * the temp directory when closed, after its count, size and checksum were
 * checked against the engine's; finish() publishes (sync, rename), abort()
 * removes the temp directory. has_chunk() asks the datastore's digest
 * index, so add_known() has nothing to do; a chunk it answers yes for is
 * touched at once (cn_datastore_reuse_chunk), so a GC running during the
 * backup keeps it even when no snapshot references it.
 *
 * Source: lists, opens and reads snapshots and chunks of the datastore;
 * get_chunk is thread-safe as the datastore's chunk reads are.
 *
 * The datastore is borrowed and must outlive the target/source.
 */
#ifndef CN_TARGET_LOCAL_H
#define CN_TARGET_LOCAL_H

#include "engine/cn_target.h"
#include "store/cn_datastore.h"

/* Creates a target writing to ds. *out destroyed with its ops->destroy.
 * 0 or -ENOMEM. */
int cn_target_local_new(struct cn_datastore *ds, struct cn_target **out);

/* Creates a source reading from ds. *out destroyed with ops->destroy.
 * 0 or -ENOMEM. */
int cn_source_local_new(struct cn_datastore *ds, struct cn_source **out);

#endif
