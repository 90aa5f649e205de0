/* cn_gc — garbage collection of a local datastore, as upstream
 * (pbs-datastore/src/datastore.rs garbage_collection, chunk_store.rs
 * sweep_unused_chunks):
 *
 *  phase 1 (mark): every .didx/.fidx of every snapshot in every namespace
 *    is read and each referenced chunk's atime set to now;
 *  phase 2 (sweep): in every .chunks/XXXX directory, under that prefix's
 *    lock, a chunk whose atime is older than
 *        cutoff = min(gc start - 24h, oldest running writer's start) - 5 min
 *    is removed (and dropped from the LMDB index); ".bad" files likewise;
 *    leftover "<digest>.tmp_*" files of dead inserts older than the cutoff too.
 *  before both, the ".tmp-*" snapshot directories of dead backups (group
 *  lock free) and ".del-*" ones of interrupted removals are deleted.
 *
 * Why no referenced chunk is lost: a chunk referenced by a finished
 * snapshot was touched in phase 1 (after gc start, so newer than the
 * cutoff). A running backup inserted or touched its chunks (also those it
 * reuses without storing them: touched when it finds them) after it started
 * (registered in .cairn/writers/), which is after the cutoff. A backup that
 * starts during GC touches everything its index files reference when it
 * writes them, under the prefix locks the sweep holds; if the sweep took a
 * chunk first, that write fails cleanly instead of publishing a snapshot
 * with a hole. The 24 h margin covers filesystems mounted relatime, as
 * upstream.
 *
 * Only one GC runs per datastore at a time (.cairn/gc.lock). Backups,
 * prune and verify may run concurrently. With a Proxmox Backup Server on
 * the same datastore: GC holds the shared <root>/.lock, so PBS's own GC
 * cannot start meanwhile, and it does not start while PBS holds any lock
 * there (a PBS backup: its writers are not in .cairn/writers/). */
#ifndef CN_GC_H
#define CN_GC_H

#include <stdint.h>

struct cn_datastore;

struct cn_gc_opts {
	/* GC start time; 0 = now. Tests set a later time to age chunks
	 * without waiting a day; phase 1 then stamps atimes with it. */
	int64_t now;
	/* Minimum age beyond the writer rule: 0 = upstream's 24 h + 5 min;
	 * CN_GC_NO_GRACE = none (cutoff = min(start, oldest writer)), for
	 * stress tests that want every unreferenced chunk gone at once. */
	int64_t grace;
};
#define CN_GC_NO_GRACE (-1)

struct cn_gc_stats {
	uint64_t index_files;    /* index files read in phase 1 */
	uint64_t marked_chunks;  /* chunk references touched */
	uint64_t missing_chunks; /* referenced but not on disk */
	uint64_t removed_chunks, removed_bytes;
	uint64_t removed_bad, still_bad;
	uint64_t removed_tmp;    /* leftover temp files of killed inserts */
	uint64_t removed_tmp_dirs; /* snapshot dirs left by dead backups/removals */
	uint64_t pending_chunks, pending_bytes; /* kept only for a running writer */
	uint64_t disk_chunks, disk_bytes;       /* kept */
	int64_t cutoff;          /* the atime cutoff used */
};

/* Runs a garbage collection (opts may be NULL). -CN_E_LOCKED when another
 * GC runs. An index file that exists but cannot be parsed stops GC before
 * the sweep (as upstream: it cannot know what the index references).
 * Fills *stats (may be NULL). Returns 0 or a negative code. */
int cn_datastore_gc(struct cn_datastore *ds, const struct cn_gc_opts *opts,
		    struct cn_gc_stats *stats);

#endif
