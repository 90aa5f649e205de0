/* cn_target / cn_source — the two narrow interfaces between the engine and
 * where data lives. One implementation per kind: the local datastore
 * (store/ via engine/target_local.c) and a PBS session (net/). The engine
 * never knows which kind it holds.
 *
 * All bytes crossing these interfaces are in PBS wire/disk form: encoded
 * DataBlobs for chunks and blobs, raw .didx/.fidx file bytes for previous
 * indexes. Parsing is the engine's job (with store/ code), so net/'s PBS
 * side never needs store/ (the S3 target writes the index files it keeps
 * with store/cn_index.h's writer).
 *
 * Every call returns 0 (or a documented non-negative value) or a negative
 * error code with a cn_error message. After any error the engine calls
 * abort(); after abort() or finish() only destroy() follows.
 *
 * Threading: a target is driven by one engine thread at a time (during a
 * backup, its own sender thread: engine/cn_fanout.h); only cancel and
 * progress may be called from other threads. An implementation may run
 * its own threads (e.g. concurrent uploads) behind the calls. Source calls must be safe from several threads at once
 * (restore prefetch workers call get_chunk concurrently).
 */
#ifndef CN_TARGET_H
#define CN_TARGET_H

#include <stddef.h>
#include <stdint.h>

#include "common/cn_chunk.h"
#include "common/cn_index_types.h"
#include "common/cn_snapshot.h"
#include "common/cn_util.h"

struct cn_target;

struct cn_target_ops {
	/* Opens snapshot id for writing (id->time is the new backup time).
	 * Fills prev_manifest with the encoded index.json.blob of the newest
	 * earlier snapshot of the same group (len 0 if none) and
	 * prev_time with its backup time (-1 if none). The buffer is the
	 * caller's (zero-initialised cn_buf). */
	int (*begin)(struct cn_target *t, const struct cn_snapshot_id *id,
		     struct cn_buf *prev_manifest, int64_t *prev_time);

	/* Makes the chunks of the previous snapshot's index `name`
	 * ("media.pxar.didx") reusable in this snapshot and returns the
	 * index file's raw bytes in out (PBS: GET previous, which also
	 * registers them with the server session). -ENOENT if the previous
	 * snapshot has no such file. */
	int (*load_previous_index)(struct cn_target *t, const char *name,
				   struct cn_buf *out);

	/* Tells the target that these digests are known to be stored (from
	 * a previous index the engine has parsed), so has_chunk may answer
	 * yes for them without asking. */
	int (*add_known)(struct cn_target *t, const uint8_t (*digests)[32], size_t n);

	/* Membership test: 1 if the target already stores the chunk (and it
	 * may be referenced without put_chunk), 0 if not, <0 on error. */
	int (*has_chunk)(struct cn_target *t, const uint8_t digest[32]);

	/* Stores one encoded chunk. The target takes its own reference
	 * (cn_chunk_ref) if it keeps the chunk beyond the call; the caller
	 * keeps its own. May complete asynchronously: an upload failure is
	 * reported by a later call (at the latest index_close/finish). */
	int (*put_chunk)(struct cn_target *t, struct cn_chunk *chunk);

	/* Opens an index named `name` ("media.pxar.didx", "disk.img.fidx").
	 * For fixed indexes size is the image size and chunk_size the fixed
	 * chunk size; both are 0 for dynamic ones. Returns a non-negative
	 * handle. */
	int (*index_open)(struct cn_target *t, const char *name, enum cn_index_kind kind,
			  uint64_t size, uint32_t chunk_size);

	/* Appends entries in stream order. Every digest was either put with
	 * put_chunk, answered yes by has_chunk, or added with add_known. */
	int (*index_append)(struct cn_target *t, int handle,
			    const struct cn_index_entry *entries, size_t n);

	/* Closes an index: chunk count, total size and the index checksum as
	 * upstream computes it; the target checks them against what it got. */
	int (*index_close)(struct cn_target *t, int handle, uint64_t count,
			   uint64_t size, const uint8_t csum[32]);

	/* Stores a whole blob file (`name` ends in ".blob", e.g. the manifest
	 * "index.json.blob"), already encoded as a DataBlob. */
	int (*put_blob)(struct cn_target *t, const char *name, const uint8_t *data,
			size_t len);

	/* Publishes the snapshot atomically and durably (manifest must have
	 * been put). Only after this does the snapshot look finished. */
	int (*finish)(struct cn_target *t);

	/* Drops the snapshot under construction; nothing that looks finished
	 * remains. Safe to call after any error. */
	void (*abort)(struct cn_target *t);

	/* Frees the target (after finish or abort). */
	void (*destroy)(struct cn_target *t);

	/* Optional (NULL: the target's calls cannot hang). Makes a call that
	 * another thread is blocked in, and every later call, fail promptly
	 * (e.g. kills the network session). Thread-safe: may be called from
	 * any thread between begin and destroy, also while another thread is
	 * in a call; that thread then calls abort(). */
	void (*cancel)(struct cn_target *t);

	/* Optional (NULL: only calls returning count as progress). A counter
	 * that moves while the target gets on with work it accepted (e.g.
	 * bytes sent or received), so that a long call on a slow link is not
	 * taken for a stall. Thread-safe as cancel. */
	uint64_t (*progress)(struct cn_target *t);
	/* Optional (NULL: the target cannot tell without a request per
	 * chunk, as a PBS server or a bucket that vouches for its own
	 * snapshots). Counts into *missing how many of these chunks, which
	 * its previous snapshot references, the target does not hold: a
	 * damaged store, whose chunks a metadata-mode run then stores again
	 * instead of reusing them. Changes nothing; engine thread only,
	 * before the pipeline runs. */
	int (*count_missing)(struct cn_target *t, const uint8_t (*digests)[32], size_t n,
			     size_t *missing);
};

/* A target is an implementation's struct that begins with this header. */
struct cn_target {
	const struct cn_target_ops *ops;
	char name[128];  /* for messages: "local:/srv/store", "pbs:host:store" */
	/* Chunks the target may still hold after put_chunk has returned
	 * (uploads running on its own threads); 0 (the default) for one done
	 * with a chunk when the call returns. Its sender takes that many
	 * chunks fewer for it, one at least (engine/cn_fanout.h), and the
	 * pipeline runs that many jobs fewer, one worker's at least
	 * (engine/cn_pipeline.h), so that such a target costs no more
	 * memory than the others. */
	unsigned held;
};

struct cn_source;

/* Where cn_source_ops.read_chunk delivers a chunk's bytes. */
struct cn_chunk_sink {
	void (*restart)(void *ctx);  /* forget what was written so far */
	int (*write)(void *ctx, const uint8_t *data, size_t n); /* 0 or <0 */
	/* Optional: nonzero once the chunk is no longer wanted (the reader
	 * is stopping). The source asks while it waits, also while no byte
	 * arrives, and ends the read within about a second with -ECANCELED
	 * rather than wait for a stalled server's timeout. */
	int (*cancelled)(void *ctx);
	void *ctx;
};

/* One snapshot as listed by a source. */
struct cn_snapshot_info {
	struct cn_snapshot_id id;
	uint64_t size;        /* sum of the manifest's file sizes, 0 if unknown */
	int protected_;       /* upstream's "protected" flag */
	int encrypted;        /* 1: some file is encrypted or signed; 0: none; -1: unknown */
	int damaged;          /* its manifest could not be read or decoded
			       * (set by cn_restore_list_sizes) */
};

struct cn_source_ops {
	/* Lists the snapshots of group (type/id in `group`; time ignored), or
	 * of every group when group->id is "". *out is malloc'd, sorted by
	 * group then time; the caller frees it. */
	int (*list_snapshots)(struct cn_source *s, const struct cn_snapshot_id *group,
			      struct cn_snapshot_info **out, size_t *n);

	/* Opens a snapshot for reading (PBS: starts a reader session). */
	int (*open)(struct cn_source *s, const struct cn_snapshot_id *id);

	/* Reads a whole file of the open snapshot (index.json.blob, an index
	 * file, a blob) into out. -ENOENT if absent. */
	int (*get_file)(struct cn_source *s, const char *name, struct cn_buf *out);

	/* Reads one encoded chunk into out (not yet decoded or verified: the
	 * engine does that). Safe to call from several threads at once, each
	 * with its own buffer. -ENOENT if the chunk is missing. */
	int (*get_chunk)(struct cn_source *s, const uint8_t digest[32], struct cn_buf *out);

	/* Optional (NULL: get_chunk only). Reads one encoded chunk as
	 * get_chunk does, handing its bytes to sink->write as they arrive
	 * (borrowed for the call) rather than collecting them in a buffer:
	 * sink->restart comes first and again whenever the source starts
	 * over (a retried request). A negative return of write ends the read
	 * with that code. Thread-safe as get_chunk, one sink per call. */
	int (*read_chunk)(struct cn_source *s, const uint8_t digest[32],
			  const struct cn_chunk_sink *sink);

	/* Frees the source. */
	void (*destroy)(struct cn_source *s);
};

struct cn_source {
	const struct cn_source_ops *ops;
	char name[128];
};

#endif
