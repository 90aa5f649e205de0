/* cn_sync — copies snapshots from a source (engine/cn_target.h cn_source)
 * to a target, chunk for chunk, with no pxar decoding in between: the
 * engine side of `cairn sync` and of catch-up in `cairn run`.
 *
 * One snapshot is copied as a backup writes one (begin, indexes, blobs,
 * manifest, finish), so an interrupted copy leaves nothing that looks
 * finished at the destination:
 *  - the backup time is the source's, the manifest blob is handed to the
 *    target exactly as read (signature intact; a PBS server or the local
 *    target adds only unprotected.chunk_upload_stats, as for a backup),
 *    and it goes last;
 *  - each index is rebuilt from the source's entries; its size and
 *    checksum must equal what the manifest lists, and the target checks
 *    them again at index_close;
 *  - only chunks the target lacks travel: the destination's previous
 *    snapshot of the group lends its index (load_previous_index +
 *    add_known), then has_chunk decides;
 *  - every chunk read from the source is verified before it is sent:
 *    container (magic, size, CRC) always; for unencrypted chunks also
 *    decoded, SHA-256 == the index digest and plain size == the index
 *    entry's size; encrypted chunks (no key: the digest is keyed) must be
 *    encrypted blobs when the manifest says "encrypt", and their CRC must
 *    hold. Blobs (*.blob) must match the manifest's size and SHA-256.
 *  - the source's protected flag is set on the copy after it is published
 *    (notes live in the manifest's unprotected part and travel with it).
 *
 * Snapshots the destination already has are left alone; a snapshot older
 * than the destination's newest of its group cannot be added there (PBS
 * refuses a backup older than the group's last, and so does the local
 * datastore) and is counted as skipped, as upstream's sync jobs do.
 */
#ifndef CN_SYNC_H
#define CN_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "engine/cn_target.h"

/* What happened to one snapshot (for progress and the report). */
enum cn_sync_action {
	CN_SYNC_COPIED,        /* copied (or, with dry_run, would be) */
	CN_SYNC_PRESENT,       /* the destination has it already */
	CN_SYNC_SKIPPED_OLDER, /* missing there, but older than its newest of the group */
	CN_SYNC_REMOVED,       /* remove_vanished: gone from the source, removed */
	CN_SYNC_KEPT_PROTECTED,/* remove_vanished: gone from the source, but protected */
	CN_SYNC_FAILED,        /* copying failed (the error is in err) */
};

/* "copied", "present", ... */
const char *cn_sync_action_name(enum cn_sync_action a);

struct cn_sync_stats {
	size_t copied, present, skipped_older, removed, kept_protected, failed;
	uint64_t chunks_sent, bytes_sent;    /* encoded chunk bytes handed to the target */
	uint64_t chunks_reused;              /* chunks the target already had */
	uint64_t blob_bytes;                 /* blobs incl. manifests */
};

/* Snapshot management of the destination store, outside any snapshot
 * writer (the target interface only writes new snapshots). Either may be
 * NULL: not supported there. Both return 0 or a negative code with a
 * message (-ENOENT: no such snapshot; forget: -EPERM if protected). */
struct cn_sync_admin {
	int (*set_protected)(void *ctx, const struct cn_snapshot_id *id, int on);
	int (*forget)(void *ctx, const struct cn_snapshot_id *id);
	void *ctx;
};

struct cn_sync_opts {
	struct cn_sync_admin admin; /* of the destination */
	int dry_run;          /* only decide and report */
	int remove_vanished;  /* remove destination snapshots of the selected groups
			       * that the source no longer has (not protected ones) */
	/* Called after each snapshot is decided or done (may be NULL); err is
	 * the negative code for CN_SYNC_FAILED (message in cn_error). */
	void (*on_snapshot)(void *ctx, const struct cn_snapshot_id *id, enum cn_sync_action a,
			    int err);
	/* Called now and then during a copy with the running stats (may be NULL). */
	void (*on_progress)(void *ctx, const struct cn_sync_stats *st);
	void *ctx;
};

/* Copies snapshot id from src to dst (dst's calls from begin to finish;
 * aborted on any error). protected_: set the protected flag on the copy.
 * Adds to *st. 0 or a negative code with a message. */
int cn_sync_snapshot(struct cn_source *src, struct cn_target *dst,
		     const struct cn_snapshot_id *id, int protected_,
		     const struct cn_sync_opts *opts, struct cn_sync_stats *st);

/* Syncs a selection: sel[i] is a group (time 0: every snapshot of it) or
 * one snapshot; nsel 0 = every group of namespace ns on the source.
 * dst_list lists what the destination holds (a source on the same store
 * as dst); NULL: the destination holds nothing yet. With opts->dry_run
 * dst is not used and may be NULL. Snapshots are copied oldest first per
 * group. A snapshot that
 * fails to copy is reported and the others go on, except after a failure
 * that says a store stopped answering (cn_error_is_unavailable): the rest
 * are reported as not tried. Returns 0 when nothing failed, the first
 * failure's code otherwise (also for a listing that failed, which stops
 * everything). */
int cn_sync_run(struct cn_source *src, struct cn_source *dst_list, struct cn_target *dst,
		const char *ns, const struct cn_snapshot_id *sel, size_t nsel,
		const struct cn_sync_opts *opts, struct cn_sync_stats *st);

#endif
