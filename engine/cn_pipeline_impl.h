/* cn_pipeline_impl — what the pipeline's two files share and nobody else
 * uses: cn_pipeline.c (the producer, the encoding workers, the sink that
 * puts chunks back in stream order, the run's life cycle) and
 * cn_pipeline_send.c (one sender per target, carrying out the calls the
 * target must see in order). Cross-file functions are prefixed cn_pl_ so
 * that no short names become global symbols of libcairn.
 */
#ifndef CN_PIPELINE_IMPL_H
#define CN_PIPELINE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "chunker/cn_chunker.h"
#include "common/cn_bufpool.h"
#include "engine/cn_fanout.h"
#include "engine/cn_pipeline.h"
#include "engine/cn_workqueue.h"
#include "store/cn_blob.h"
#include "store/cn_index.h"

/* Index entries are sent to the targets in batches of this many. */
#define APPEND_BATCH 64

/* Messages queued per target (cn_fanout.h): index entries of chunks the
 * target has, closes and blobs queue up to this many, so that the sink
 * need not wait for each; */
#define TARGET_QUEUE_DEPTH 4
/* but of the messages with a chunk (M_CHUNK) a target holds one at a
 * time, queued or being stored: the next one waits in the sink, in its
 * job's buffer. See cn_pipeline.h for the measured cost. */
#define TARGET_CHUNKS 1

/* One unit of work: a chunk's plain bytes, then its encoded form. A job
 * is in exactly one place at a time: the free queue, a stream's current
 * job (being filled by the producer), the work queue, a worker, the done
 * queue or the sink's reorder ring.
 *
 * The plain bytes sit in a pooled buffer, a blob header's size in, so
 * that a blob stored as it is (the common case for media) is built in
 * place: the worker writes the header in front and the buffer passes to
 * the encoded chunk, which gives it back to the pool when the last target
 * is done. Such a blob then starts at the (page-aligned) buffer, as the
 * local datastore's direct I/O wants it. */
struct job {
	uint64_t seq;          /* delivery order, assigned when submitted */
	int stream;
	uint64_t end_offset;   /* end of the chunk in its stream */
	uint8_t *buf;          /* pooled, NULL when none yet */
	uint8_t *data;         /* buf + the pipeline's hdr */
	size_t len;
	struct cn_chunk *chunk; /* set by a worker, dropped after delivery */
	int known;             /* injected chunk of a previous snapshot: no data */
	uint8_t known_digest[32];
};

struct stream {
	char name[128];
	size_t avg;
	struct cn_chunker *chunker;
	/* producer side */
	struct job *cur;
	uint64_t offset;
	int ended;
	/* sink side (main thread after the sink has stopped) */
	struct cn_index_csum_ctx *csum;
	uint64_t count, size;
	uint8_t final_csum[32];
	struct cn_source *chunk_src; /* injected chunks a target lacks */
};

struct tgt {
	struct cn_target *t;
	atomic_int live;
	int *handles;         /* index handle per stream */
	struct cn_buf prev;
	int64_t prev_time;
	/* the target's sender thread only (cn_fanout lane) */
	struct cn_index_entry *pending; /* APPEND_BATCH entries per stream */
	size_t *npending;               /* per stream */
	/* written by the sender, read by anyone */
	atomic_int finished;
	atomic_uint_fast64_t chunks_new, bytes_new, bytes_new_encoded, copied;
	char why[256];        /* why it was dropped: by the thread that dropped it */
};

/* What the sink and the caller queue for each target's sender, in the
 * order the target must see the calls. */
enum msg_kind { M_CHUNK, M_KNOWN, M_CLOSE, M_BLOB, M_FINISH };

/* A blob stored on every target: shared, freed by the last sender. */
struct shared_blob {
	atomic_int refs;
	char name[256];
	size_t len;
	uint8_t data[];
};

struct msg {
	enum msg_kind kind;
	int stream;
	uint64_t end;          /* CHUNK, KNOWN: chunk end in the stream; CLOSE: stream size */
	uint64_t n;            /* KNOWN: the chunk's plain size; CLOSE: chunk count */
	uint8_t digest[32];    /* CHUNK, KNOWN: the chunk's digest; CLOSE: index checksum */
	struct cn_chunk *chunk;   /* CHUNK: a reference */
	struct shared_blob *blob; /* BLOB: a reference */
};

enum state { ST_NEW, ST_BEGUN, ST_RUNNING, ST_ENDED, ST_DONE };

struct cn_pipeline {
	struct tgt *targets;
	size_t ntargets;
	atomic_size_t nlive;
	const struct cn_crypt_config *crypt;
	int compress;
	size_t threads;
	unsigned stall_ms;
	struct cn_fanout *fan;   /* one sender per target, from start on */

	struct stream *streams;
	size_t nstreams;

	struct job *jobs;
	size_t njobs;
	struct cn_bufpool *pool; /* job and encoded-chunk buffers */
	size_t hdr;              /* blob header size: where the data starts in a job's buffer */
	struct cn_workqueue *free_q, *work_q, *done_q;
	struct cn_workers *workers;
	pthread_t sink;
	int sink_started;
	uint64_t next_seq;     /* producer: next sequence number */
	uint64_t delivered;    /* sink: jobs delivered */
	enum state state;

	pthread_mutex_t err_lock;
	atomic_int err;       /* first failure; written under err_lock */
	char errmsg[1024];

	atomic_uint_fast64_t stream_bytes, chunks;
	atomic_uint_fast64_t chunks_known; /* injected chunks delivered */
};

/* Records the first failure (code and the calling thread's message) and
 * stops every queue so all threads unwind. Returns code. Any thread. */
int cn_pl_fail(struct cn_pipeline *p, int code);

/* The recorded failure, re-raised in the calling thread; 0 if none. */
int cn_pl_error_of(struct cn_pipeline *p);

/* Takes target t out of the run, once: keeps msg (cut to fit) as why,
 * aborts the target when abort_it (a sender's own failure is aborted by
 * cn_fanout), and warns while other targets are still live. Returns 0
 * when t was out already, 1 when others are still live, 2 when t was the
 * last. Any thread. */
int cn_pl_take_out(struct cn_pipeline *p, struct tgt *t, const char *msg, int abort_it);

/* Sets and returns the error of a run whose last target, t, failed with
 * code and msg: msg alone when the run had one target. */
int cn_pl_none_left(const struct cn_pipeline *p, const struct tgt *t, int code, const char *msg);

/* Queues m for every live target (a chunk or blob reference each; m keeps
 * its own). 0, or the pipeline's error once no target is left. */
int cn_pl_queue_all(struct cn_pipeline *p, struct msg *m);

/* Drops a reference to b, freeing it with the last (NULL: nothing). */
void cn_pl_blob_unref(struct shared_blob *b);

/* The senders' callbacks (cn_fanout.h), ctx = the pipeline. */
extern const struct cn_fanout_ops cn_pl_sender_ops;

#endif
