/* cn_pbs_target — a backup target (engine/cn_target.h) that writes one
 * snapshot through a PBS backup session (proxmox-backup-protocol-v1, spec
 * §5), following upstream's client (pbs-client/src/backup_writer.rs):
 *
 *  - begin: opens the session, asks previous_backup_time and downloads the
 *    previous manifest (GET previous?archive-name=index.json.blob);
 *  - load_previous_index: GET previous (this also registers the previous
 *    index's chunks with the server session);
 *  - has_chunk / add_known: a per-target digest set, no round trip;
 *  - put_chunk: POST {dynamic,fixed}_chunk asynchronously, many streams in
 *    flight (bounded by count and bytes: put_chunk blocks when full, which
 *    is the backpressure on the engine). Chunks go to the most recently
 *    opened index that is still open (the server ties uploads to a writer
 *    id; for fixed writers the chunk size rules apply to that writer);
 *  - index_append: entries are queued and sent in PUT batches of up to 128
 *    once every chunk they mention is confirmed by the server (upstream
 *    sends an append only after its chunk's upload answer);
 *  - index_close / put_blob / finish: synchronous;
 *  - abort: drops the connection without finish, so the server deletes the
 *    snapshot.
 * Errors of asynchronous uploads are reported by the next call. */
#ifndef CN_PBS_TARGET_H
#define CN_PBS_TARGET_H

#include <stddef.h>

#include "engine/cn_target.h"
#include "net/cn_pbs.h"

struct cn_pbs_target_opts {
	int max_inflight;           /* chunk uploads in flight (0 = 64) */
	size_t max_inflight_bytes;  /* encoded bytes in flight (0 = 256 MiB) */
};

/* Creates a PBS target on conn (borrowed: must outlive the target; one
 * connection may serve several targets and sources, each with its own
 * sessions). Returns 0 and *out (released through its destroy op), or
 * -ENOMEM. */
int cn_pbs_target_new(struct cn_pbs *conn, const struct cn_pbs_target_opts *opts,
		      struct cn_target **out);

/* Upload counters of a PBS target (for summaries and tests). */
struct cn_pbs_target_stats {
	uint64_t chunks_uploaded, bytes_uploaded;  /* encoded bytes sent */
	uint64_t chunks_skipped;                   /* put_chunk of a digest already present */
	uint64_t appends;                          /* PUT index requests */
};

/* Fills *st for a target made by cn_pbs_target_new. */
void cn_pbs_target_stats(const struct cn_target *t, struct cn_pbs_target_stats *st);

#endif
