/* cn_pipeline — the data path of a backup, independent of where the bytes
 * come from: byte streams -> chunker -> worker pool -> reorder -> fan-out
 * to N targets (engine/cn_target.h), each through its own sender.
 *
 *   producer thread          workers (threads)       sink thread          sender per target
 *   cn_pipeline_write(...)   cn_blob_encode_chunk    stream order         (engine/cn_fanout.h)
 *   chunker per stream,      (digest, probe + zstd,  restored, index      has_chunk / put_chunk /
 *   copies into reusable     encryption, CRC)        csum; queues each    index_append, later
 *   job buffers                                      chunk per target     index_close, put_blob,
 *                                                                         finish, in order
 *
 * Memory is bounded by a fixed set of jobs, one per stream (the producer
 * fills it) and one per worker (it encodes one): threads + streams. Each
 * holds one plain chunk buffer from a pool (common/cn_bufpool.h: reused,
 * pages touched as written, in huge pages beyond the first 2 MiB; of a
 * buffer given back the average chunk stays resident), which passes to
 * the encoded chunk when the blob is stored as it is; a compressed chunk
 * takes a second buffer.
 *
 * Each target has its own sender thread and queue (engine/cn_fanout.h),
 * so a slow target slows only itself until its queue is full; then it
 * sets the pace. Index entries of chunks a target has, closes and blobs
 * queue up to TARGET_QUEUE_DEPTH (4) messages; of the messages with a
 * chunk to store, a target holds TARGET_CHUNKS (1), queued or being
 * stored, and the next waits in the sink, in its job's buffer. Queued
 * chunks are shared references (cn_chunk) and all queues are fed the same
 * sequence, so the targets hold one encoded chunk beyond the jobs' (the
 * one before the sink's), whatever their number, plus one per dropped
 * target whose call has not returned yet. (A
 * target's own buffering, e.g. PBS uploads in flight, comes on top: that
 * is where a PBS target absorbs a slow link.) That keeps the cores busy
 * (the producer fills a chunk while the workers encode theirs) and the
 * disk (the sender stores one while the next waits). A target that keeps
 * chunks after its calls (cn_target.held: an S3 target's second upload)
 * takes them from the workers' jobs, one worker's at least left: it is
 * paced by its uploads, and the run holds no more chunks than with a
 * local store (an S3 backup of 512 MiB took 2.95-3.28 s at 65-67 MiB,
 * against 2.96-3.08 s at 85-87 MiB with all jobs, two chunks per target
 * and twice the average kept).
 *
 * With 2 threads, one archive and the catalog (whose buffer holds only
 * the catalog's bytes), that is 4 large buffers: a backup of 1.5 GiB to
 * a local store peaks at 58-60 MiB for the whole process. Measured
 * against the alternatives, 1.5 GiB, alternating runs: 1.5 times the
 * average kept resident: 64-67 MiB, no faster (with huge pages a tail
 * faulted in again costs one fault per 2 MiB); the same in small pages
 * (as before huge pages): 60-63 MiB, 55,000 page faults instead of
 * 4,600, 25-30 % more CPU time; two chunks per target and twice the
 * average kept resident, small pages: 73-77 MiB; two spare jobs, queues
 * of two chunks and every new buffer's 8 MiB mapped at once: 109-112 MiB.
 *
 * A target that makes no progress (no call returning, no movement of its
 * progress counter) for the stall timeout while it has work is dropped:
 * its queue discarded, its call cancelled (cancel op) and the target
 * aborted by its sender; the others go on at full speed.
 *
 * Streams (one per index: each archive, the catalog) are declared before
 * cn_pipeline_start() and may be written interleaved; each has its own
 * chunker and average chunk size. A chunk is delivered to the targets in
 * the order it was completed by the producer, so each index receives its
 * entries in stream order.
 *
 * Targets: a call that fails on one target aborts and drops that target
 * (a warning names it and the error); the others go on. When no target is
 * left, the pipeline fails. Targets are borrowed: the caller destroys them
 * after cn_pipeline_free(). A stalled target whose call cannot be
 * cancelled (no cancel op) is dropped all the same, but cn_pipeline_finish
 * and cn_pipeline_free wait for that call to return.
 *
 * Threading: every cn_pipeline_* call is made from one thread (the
 * producer); the pipeline's own threads exist between cn_pipeline_start()
 * and cn_pipeline_end().
 */
#ifndef CN_PIPELINE_H
#define CN_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/cn_target.h"
#include "store/cn_crypt.h"

struct cn_pipeline;

/* How long a target may make no progress before it is dropped, unless
 * the options say otherwise. */
#define CN_PIPELINE_STALL_TIMEOUT_MS 30000

struct cn_pipeline_opts {
	const struct cn_crypt_config *crypt; /* NULL = not encrypted; borrowed */
	int compress;                        /* CN_BLOB_COMPRESS_* (store/cn_blob.h) */
	size_t threads;                      /* encoding workers; 0 = number of CPUs */
	unsigned stall_timeout_ms;           /* drop a target stalled this long;
	                                      * 0 = CN_PIPELINE_STALL_TIMEOUT_MS */
};

/* Counters (totals over all streams). "new" counts what was stored with
 * put_chunk because the target did not have it, for the target that
 * stored the most (each target takes what it lacks at its own pace;
 * with targets of the same history that is every chunk put anywhere). */
struct cn_pipeline_stats {
	uint64_t stream_bytes;   /* bytes written into all streams */
	uint64_t chunks;         /* chunks delivered */
	uint64_t chunks_new;     /* of which put to some target */
	uint64_t bytes_new;      /* their plain bytes */
	uint64_t bytes_new_encoded; /* their encoded (compressed/encrypted) bytes */
	uint64_t chunks_reused;  /* injected from a previous snapshot (in chunks) */
	size_t targets;          /* targets given */
	size_t targets_live;     /* of which still live */
};

/* Creates a pipeline over n targets (borrowed; n >= 1). opts may be NULL
 * (plain, compressed, one worker per CPU). *out freed with
 * cn_pipeline_free(). 0 or a negative code with a message. */
int cn_pipeline_new(struct cn_target *const *targets, size_t n,
		    const struct cn_pipeline_opts *opts, struct cn_pipeline **out);

/* Calls begin(id) on every target and keeps each one's previous manifest.
 * Targets that fail are dropped. 0, or the last error when none is left. */
int cn_pipeline_begin(struct cn_pipeline *p, const struct cn_snapshot_id *id);

/* The number of targets given, and target i if it is still live (NULL
 * once dropped). The caller may drive a live target directly (e.g.
 * load_previous_index) only before cn_pipeline_start (from then on each
 * target belongs to its sender thread), and reports a failure with
 * cn_pipeline_drop(). */
size_t cn_pipeline_target_count(const struct cn_pipeline *p);
struct cn_target *cn_pipeline_target(const struct cn_pipeline *p, size_t i);

/* Target i's previous manifest from begin (encoded index.json.blob,
 * len 0 when there is none; borrowed) and its backup time (-1 if none). */
const struct cn_buf *cn_pipeline_prev_manifest(const struct cn_pipeline *p, size_t i,
					       int64_t *prev_time);

/* Why target i was dropped (its error message), "" while it is live.
 * Read once the pipeline's threads are done (after cn_pipeline_finish,
 * cn_pipeline_abort or a failure). Borrowed from p. */
const char *cn_pipeline_target_error(const struct cn_pipeline *p, size_t i);

/* Before cn_pipeline_start: aborts and drops target i after the error
 * code (its cn_error message is the calling thread's current one), with a
 * warning. Returns 0 while some target is live, else code. */
int cn_pipeline_drop(struct cn_pipeline *p, size_t i, int code);

/* Declares a stream whose chunks form the dynamic index index_name
 * ("media.pxar.didx") on every target (index_open), chunked with average
 * chunk size avg (e.g. CN_CHUNKER_DEFAULT_AVG). Only before start.
 * Returns the stream number (>= 0) or a negative code. */
int cn_pipeline_add_stream(struct cn_pipeline *p, const char *index_name, size_t avg);

/* Starts the worker and sink threads. 0 or a negative code. */
int cn_pipeline_start(struct cn_pipeline *p);

/* Appends bytes to a stream (data borrowed for the call). Blocks while
 * every job is in flight. 0, or the pipeline's error (a failed worker, no
 * target left, ...), with its message, once it has failed. Usable as a
 * cn_write_fn through cn_pipeline_writer(). */
int cn_pipeline_write(struct cn_pipeline *p, int stream, const uint8_t *data, size_t len);

/* cn_pipeline_write without the copy: *buf gets the free space at the end
 * of the stream's chunk being filled (in the pipeline's buffer; *avail
 * bytes, at least one), for the caller to fill, e.g. with read(2); the
 * bytes count once cn_pipeline_commit says how many were filled, and any
 * other call on the stream drops them. Blocks while every job is in
 * flight. 0 or the pipeline's error. */
int cn_pipeline_reserve(struct cn_pipeline *p, int stream, uint8_t **buf, size_t *avail);

/* Appends the first len bytes of the last reserve to the stream, as
 * cn_pipeline_write of them would: bytes after a chunk boundary are
 * copied into the next chunk's buffer. The caller no longer touches the
 * reserved space. 0, -EINVAL beyond the reserve, or the pipeline's
 * error. */
int cn_pipeline_commit(struct cn_pipeline *p, int stream, size_t len);

/* Ends the stream's current chunk here (forced boundary; the chunker
 * starts afresh) and appends n chunks of a previous snapshot to its index
 * as they are (digests[i], sizes[i] plain bytes), without data: every
 * live target must already have them (registered with add_known from the
 * previous index); a target that does not is dropped. The stream offset
 * moves on by their sizes. Metadata change detection (cn_walker.h). 0 or
 * the pipeline's error. */
/* Before cn_pipeline_start: where injected chunks of stream come from for
 * a target that does not have them (one whose previous snapshot differs
 * from the one the chunks were reused from): src (borrowed, its snapshot
 * open; get_chunk is called from the sink thread) gives the encoded
 * chunk, which is checked against its digest and size and stored on that
 * target. Without a source such a target is dropped. 0 or -EINVAL. */
int cn_pipeline_set_chunk_source(struct cn_pipeline *p, int stream, struct cn_source *src);

int cn_pipeline_inject(struct cn_pipeline *p, int stream, const uint8_t (*digests)[32],
		       const uint64_t *sizes, size_t n);

/* A suggested chunk boundary at the stream's current end (a file start
 * in a pxar payload stream, as upstream's payload chunker takes them):
 * when the chunk being filled already has the chunker's minimum size it
 * ends here and the chunker starts afresh; otherwise nothing happens.
 * 0 or the pipeline's error. */
int cn_pipeline_suggest_boundary(struct cn_pipeline *p, int stream);

/* A cn_write_fn-style context for cn_pxar_create_opts.payload_boundary:
 * fn(ctx = struct cn_pipeline_writer *, offset) suggests a boundary on
 * that stream (offset must be its current end). */
int cn_pipeline_boundary_fn(void *ctx, uint64_t offset);

/* Ends a stream: its last, possibly short, chunk is sent. No more writes
 * to it. 0 or the pipeline's error. */
int cn_pipeline_end_stream(struct cn_pipeline *p, int stream);

/* A write callback context for one stream: fn(ctx, data, len) calls
 * cn_pipeline_write(p, stream, ...). The struct is the caller's. */
struct cn_pipeline_writer {
	struct cn_pipeline *p;
	int stream;
};
int cn_pipeline_writer_fn(void *ctx, const uint8_t *data, size_t len);
/* The same for cn_pipeline_reserve and cn_pipeline_commit
 * (cn_pxar_create_opts.data_reserve and data_commit). */
int cn_pipeline_reserve_fn(void *ctx, uint8_t **buf, size_t *avail);
int cn_pipeline_commit_fn(void *ctx, size_t len);

/* Waits until every chunk has been delivered, stops the producing
 * threads, then closes every stream's index on every live target (count,
 * size, checksum) and waits for the targets' senders (dropping stalled
 * targets). Call once, after every stream ended (streams not ended are
 * ended here). On failure (or when called after a failure) the threads
 * are stopped too and the pipeline's error is returned. */
int cn_pipeline_end(struct cn_pipeline *p);

/* After a successful cn_pipeline_end: stream s's index as closed: number
 * of chunks, stream size and index checksum. */
void cn_pipeline_stream_result(const struct cn_pipeline *p, int s, uint64_t *count,
			       uint64_t *size, uint8_t csum[32]);

/* After cn_pipeline_end: put_blob on every live target (dropping those
 * that fail or stall; data is copied). 0, or the error when no target is
 * left. */
int cn_pipeline_put_blob(struct cn_pipeline *p, const char *name, const uint8_t *data,
			 size_t len);

/* finish() on every live target (dropping those that fail or stall), then
 * stops the senders. Returns the number of targets that finished (>= 1),
 * or the error when none did. */
int cn_pipeline_finish(struct cn_pipeline *p);

/* Aborts every live target (after a failure of the caller's own work).
 * Stops the threads first if they run. */
void cn_pipeline_abort(struct cn_pipeline *p);

/* Current counters; safe while running (called from the producer thread,
 * e.g. for progress; values are read without stopping the sink). */
void cn_pipeline_stats(struct cn_pipeline *p, struct cn_pipeline_stats *st);

/* Frees the pipeline (stopping its threads and aborting live targets if
 * neither finish nor abort happened). The targets are not destroyed. */
void cn_pipeline_free(struct cn_pipeline *p);

#endif
