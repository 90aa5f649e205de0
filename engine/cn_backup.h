/* cn_backup — a file-level backup run, as `proxmox-backup-client backup
 * NAME.pxar:PATH ...` makes it: each archive is walked and encoded as pxar
 * (cn_walker.h) into the pipeline (cn_pipeline.h), the catalog of all
 * archives is produced alongside and chunked separately (512 KiB average)
 * as catalog.pcat1.didx, then the manifest index.json.blob is stored and
 * the snapshot published on every target that is still live.
 *
 * Chunks of the previous snapshot of the group are made reusable on each
 * target (load_previous_index + add_known) when the previous manifest's
 * crypt mode for that archive matches this run's, as upstream does.
 *
 * The walker and encoder run in the calling thread; chunk encoding runs on
 * opts->threads workers; a sink thread restores stream order and each
 * target has its own sender thread (cn_pipeline.h).
 */
#ifndef CN_BACKUP_H
#define CN_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_snapshot.h"
#include "engine/cn_target.h"
#include "store/cn_crypt.h"

#define CN_CATALOG_INDEX_NAME "catalog.pcat1.didx"

/* One "NAME.pxar:PATH" argument. */
struct cn_backup_archive {
	const char *name;   /* archive name ending in ".pxar" ("media.pxar") */
	const char *path;   /* directory to back up */
};

/* What a progress callback sees (a snapshot of the counters). */
struct cn_backup_progress {
	const char *archive;      /* archive being written */
	uint64_t files, dirs;     /* entries encoded so far (all archives) */
	uint64_t bytes_read;      /* file content read so far */
	uint64_t stream_bytes;    /* pxar + catalog bytes produced */
	uint64_t chunks, chunks_new, bytes_new;
	double elapsed;           /* seconds since the run started */
};

typedef void (*cn_backup_progress_fn)(void *ctx, const struct cn_backup_progress *p);

/* --change-detection-mode, as proxmox-backup-client 3.3+: */
enum cn_change_detection {
	CN_CDM_LEGACY = 0, /* unified v1 archive NAME.pxar.didx (the default) */
	CN_CDM_DATA,       /* split v2 archive NAME.mpxar.didx + NAME.ppxar.didx,
			    * every file read */
	CN_CDM_METADATA,   /* split; files unchanged since the previous
			    * snapshot re-reference its payload chunks */
};

struct cn_backup_opts {
	struct cn_snapshot_id id;        /* ns, type, id; time 0 = now */
	const struct cn_backup_archive *archives;
	size_t n_archives;
	const struct cn_crypt_config *crypt; /* NULL = not encrypted (crypt mode none) */
	size_t threads;                  /* 0 = number of CPUs */
	unsigned stall_timeout_ms;       /* a target with no progress this long is
					  * dropped, the others go on (0 = 30 s) */
	const char *const *excludes;     /* --exclude patterns */
	size_t n_excludes;
	int all_file_systems;
	int skip_lost_found;
	cn_backup_progress_fn progress;  /* may be NULL; called from the calling thread */
	void *progress_ctx;
	unsigned progress_interval_ms;   /* 0 = 250 */
	enum cn_change_detection change_detection;
	/* Metadata mode: directory of the file caches (store/cn_filecache.h,
	 * one per target and archive); NULL: nothing is reused. The newest
	 * of the targets' previous snapshots that have the archive (the
	 * first target's among equals) is the reference for reuse. */
	const char *filecache_dir;
	/* Metadata mode, may be NULL (or hold NULLs): sources reading the
	 * targets' stores, in the order of the targets (borrowed). With the
	 * reference target's source, a stale file cache is rebuilt from its
	 * previous metadata archive, and targets whose previous snapshot
	 * differs get the reused chunks they lack copied from it; without
	 * it, a stale cache and differing previous snapshots mean every
	 * file is read. */
	struct cn_source *const *sources;
};

#define CN_BACKUP_TARGET_ERROR_MAX 256

struct cn_backup_stats {
	struct cn_snapshot_id id;     /* the snapshot made (time filled in) */
	uint64_t files, dirs, symlinks, hardlinks, specials;
	uint64_t bytes_read;          /* file content read */
	uint64_t skipped;             /* unreadable or vanished entries (warnings) */
	uint64_t changed;             /* files that changed while being read */
	uint64_t excluded;
	uint64_t stream_bytes;        /* pxar + catalog bytes */
	uint64_t chunks, chunks_new;  /* chunks referenced / sent as new */
	uint64_t bytes_new;           /* plain bytes of new chunks */
	uint64_t bytes_new_encoded;   /* their stored (compressed) size */
	uint64_t files_reused;        /* metadata mode: files not stored again */
	uint64_t files_compared;      /* of those, read to compare contents */
	uint64_t files_unopened;      /* of those, found unchanged by their stat
				       * alone: not opened, metadata not read */
	uint64_t reused_bytes;        /* their payload bytes */
	uint64_t chunks_reused;       /* previous payload chunks re-referenced */
	uint64_t reused_padding;      /* bytes in those chunks of no current file */
	uint64_t chunks_missing;      /* metadata mode: chunks of the previous
				       * snapshot a target lacked (a damaged
				       * store), stored again, not reused */
	size_t targets, targets_ok;   /* targets given / that published the snapshot */
	/* The caller's: NULL, or one message buffer per target, filled with
	 * why the target failed ("" for one that published the snapshot). */
	char (*target_errors)[CN_BACKUP_TARGET_ERROR_MAX];
	double duration;              /* seconds */
};

/* Checks an archive name as upstream's --backupspec does: [A-Za-z0-9_]
 * then [A-Za-z0-9._-], ending in ".pxar". 0 or -EINVAL with a message. */
int cn_backup_check_archive_name(const char *name);

/* Runs one backup to n targets (borrowed; the caller destroys them).
 * stats may be NULL. Returns 0 when the snapshot was published on at
 * least one target (targets that failed are named in warnings and
 * stats->targets_ok < stats->targets), or a negative code with a message;
 * then nothing that looks finished was left on any target. */
int cn_backup_run(struct cn_target *const *targets, size_t n, const struct cn_backup_opts *opts,
		  struct cn_backup_stats *stats);

#endif
