#include "engine/cn_pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunker/cn_chunker.h"
#include "common/cn_bufpool.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "engine/cn_fanout.h"
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

/* A target making no progress for this long is dropped (default). */

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
 * stops every queue so all threads unwind. Returns code. */
static int fail(struct cn_pipeline *p, int code)
{
	pthread_mutex_lock(&p->err_lock);
	if (!p->err) {
		p->err = code;
		snprintf(p->errmsg, sizeof(p->errmsg), "%s",
			 *cn_error_message() ? cn_error_message() : cn_strerror(code));
	}
	pthread_mutex_unlock(&p->err_lock);
	if (p->free_q) {
		cn_workqueue_cancel(p->free_q);
		cn_workqueue_cancel(p->work_q);
		cn_workqueue_cancel(p->done_q);
	}
	return code;
}

/* The recorded failure, re-raised in the calling thread; 0 if none. */
static int error_of(struct cn_pipeline *p)
{
	pthread_mutex_lock(&p->err_lock);
	int code = p->err;
	char msg[sizeof(p->errmsg)];
	memcpy(msg, p->errmsg, sizeof(msg));
	pthread_mutex_unlock(&p->err_lock);
	return code ? cn_error_set(code, "%s", msg) : 0;
}

int cn_pipeline_new(struct cn_target *const *targets, size_t n,
		    const struct cn_pipeline_opts *opts, struct cn_pipeline **out)
{
	if (n == 0)
		return cn_error_set(-EINVAL, "a backup needs at least one target");
	struct cn_pipeline *p = calloc(1, sizeof(*p));
	if (!p || !(p->targets = calloc(n, sizeof(*p->targets)))) {
		free(p);
		return cn_error_set(-ENOMEM, "out of memory for the backup pipeline");
	}
	for (size_t i = 0; i < n; i++) {
		p->targets[i].t = targets[i];
		atomic_init(&p->targets[i].live, 1);
		p->targets[i].prev_time = -1;
	}
	p->ntargets = n;
	atomic_init(&p->nlive, n);
	p->crypt = opts ? opts->crypt : NULL;
	p->compress = opts ? opts->compress : CN_BLOB_COMPRESS;
	p->threads = opts && opts->threads ? opts->threads : cn_cpu_count();
	p->stall_ms = opts && opts->stall_timeout_ms ? opts->stall_timeout_ms : CN_PIPELINE_STALL_TIMEOUT_MS;
	pthread_mutex_init(&p->err_lock, NULL);
	*out = p;
	return 0;
}

size_t cn_pipeline_target_count(const struct cn_pipeline *p)
{
	return p->ntargets;
}

const char *cn_pipeline_target_error(const struct cn_pipeline *p, size_t i)
{
	return i < p->ntargets && !atomic_load(&p->targets[i].live) ? p->targets[i].why : "";
}

struct cn_target *cn_pipeline_target(const struct cn_pipeline *p, size_t i)
{
	return i < p->ntargets && atomic_load(&p->targets[i].live) ? p->targets[i].t : NULL;
}

const struct cn_buf *cn_pipeline_prev_manifest(const struct cn_pipeline *p, size_t i,
					       int64_t *prev_time)
{
	if (prev_time)
		*prev_time = p->targets[i].prev_time;
	return &p->targets[i].prev;
}

/* Keeps msg (cut to fit) as why t was dropped. */
static void keep_why(struct tgt *t, const char *msg)
{
	size_t l = strnlen(msg, sizeof(t->why) - 1);
	memcpy(t->why, msg, l);
	t->why[l] = '\0';
}

int cn_pipeline_drop(struct cn_pipeline *p, size_t i, int code)
{
	struct tgt *t = &p->targets[i];
	char msg[1024];
	snprintf(msg, sizeof(msg), "%s", *cn_error_message() ? cn_error_message() : cn_strerror(code));
	if (atomic_exchange(&t->live, 0)) {
		keep_why(t, msg);
		t->t->ops->abort(t->t);
		if (atomic_fetch_sub(&p->nlive, 1) > 1)
			cn_log_warning("target %s failed: %s; going on without it", t->t->name, msg);
	}
	if (atomic_load(&p->nlive) > 0)
		return 0;
	if (p->ntargets == 1)
		return cn_error_set(code, "%s", msg);
	return cn_error_set(code, "no target left; the last, %s, failed: %s", t->t->name, msg);
}

int cn_pipeline_begin(struct cn_pipeline *p, const struct cn_snapshot_id *id)
{
	if (p->state != ST_NEW)
		return cn_error_set(-EINVAL, "pipeline already begun");
	p->state = ST_BEGUN;
	int r = 0;
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		int rc = t->t->ops->begin(t->t, id, &t->prev, &t->prev_time);
		if (rc < 0)
			r = cn_pipeline_drop(p, i, rc);
	}
	return r;
}

int cn_pipeline_add_stream(struct cn_pipeline *p, const char *index_name, size_t avg)
{
	if (p->state != ST_BEGUN)
		return cn_error_set(-EINVAL, "streams are added after begin and before start");
	struct stream *ns = realloc(p->streams, (p->nstreams + 1) * sizeof(*ns));
	if (!ns)
		return cn_error_set(-ENOMEM, "out of memory for a stream");
	p->streams = ns;
	int sidx = (int)p->nstreams;
	struct stream *s = &ns[sidx];
	memset(s, 0, sizeof(*s));
	if (strlen(index_name) >= sizeof(s->name))
		return cn_error_set(-ENAMETOOLONG, "index name too long: %s", index_name);
	snprintf(s->name, sizeof(s->name), "%s", index_name);
	s->avg = avg;
	int r = cn_chunker_new(avg, &s->chunker);
	if (r < 0)
		return r;
	r = cn_index_csum_new(CN_INDEX_DYNAMIC, &s->csum);
	if (r < 0) {
		cn_chunker_free(s->chunker);
		return r;
	}
	p->nstreams++;
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		int *h = realloc(t->handles, p->nstreams * sizeof(int));
		if (!h)
			return cn_error_set(-ENOMEM, "out of memory for index handles");
		t->handles = h;
		h[sidx] = -1;
		if (!t->live)
			continue;
		int rc = t->t->ops->index_open(t->t, index_name, CN_INDEX_DYNAMIC, 0, 0);
		if (rc < 0) {
			rc = cn_error_prefix(rc, "opening index %s", index_name);
			if ((r = cn_pipeline_drop(p, i, rc)) < 0)
				return r;
			continue;
		}
		h[sidx] = rc;
	}
	return sidx;
}

/* ---- workers ------------------------------------------------------------ */

static void give_back(void *pool, uint8_t *base, size_t used)
{
	cn_bufpool_put(pool, base, used);
}

/* Encodes job j into j->chunk: in place in the job's buffer (which then
 * passes to the chunk) or, when zstd makes it smaller, into a second
 * buffer from the pool. */
static int encode_job(struct cn_pipeline *p, struct cn_blob_ctx *bctx, struct job *j)
{
	uint8_t *alt = NULL, *blob, digest[32];
	size_t blob_len, plain = j->len;
	if (cn_blob_worth_compressing(bctx, j->data, plain, p->compress) &&
	    !(alt = cn_bufpool_get(p->pool)))
		return -ENOMEM;
	int r = cn_blob_encode_chunk_inplace(bctx, j->data, plain, p->crypt, alt, digest, &blob,
					     &blob_len);
	if (r < 0) {
		cn_bufpool_put(p->pool, alt, p->hdr + plain);
		return r;
	}
	uint8_t *base;
	if (blob == alt) {
		base = alt; /* the job keeps its buffer */
	} else {
		cn_bufpool_put(p->pool, alt, alt ? p->hdr + plain : 0);
		base = j->buf; /* the buffer passes to the chunk */
		j->buf = j->data = NULL;
	}
	j->len = 0;
	j->chunk = cn_chunk_new_borrowed(blob, blob_len, base, give_back, p->pool);
	if (!j->chunk)
		return cn_error_set(-ENOMEM, "out of memory");
	memcpy(j->chunk->digest, digest, 32);
	j->chunk->plain_size = plain;
	return 0;
}

static void *worker_main(void *ctx, size_t i)
{
	struct cn_pipeline *p = ctx;
	struct cn_blob_ctx *bctx = NULL;
	(void)i;
	int r = cn_blob_ctx_new(&bctx);
	if (r < 0) {
		fail(p, r);
		return NULL;
	}
	void *item;
	while (cn_workqueue_pop(p->work_q, &item)) {
		struct job *j = item;
		r = j->known ? 0 : encode_job(p, bctx, j);
		if (r < 0) {
			fail(p, cn_error_prefix(r, "encoding chunk ending at %s offset %llu",
						p->streams[j->stream].name,
						(unsigned long long)j->end_offset));
			break;
		}
		if (cn_workqueue_push(p->done_q, j) < 0)
			break;
	}
	cn_blob_ctx_free(bctx);
	return NULL;
}

/* ---- senders: one per target (cn_fanout), calls in stream order -------- */

/* Sends target t's pending entries of stream sidx (sender thread). */
static int flush_entries(struct cn_pipeline *p, struct tgt *t, int sidx)
{
	size_t *n = &t->npending[sidx];
	if (!*n)
		return 0;
	int r = t->t->ops->index_append(t->t, t->handles[sidx], t->pending + (size_t)sidx * APPEND_BATCH, *n);
	*n = 0;
	return r < 0 ? cn_error_prefix(r, "appending to index %s", p->streams[sidx].name) : 0;
}

/* Queues the chunk's index entry for target t, sending a full batch. */
static int append_entry(struct cn_pipeline *p, struct tgt *t, const struct msg *m)
{
	struct cn_index_entry *e = &t->pending[(size_t)m->stream * APPEND_BATCH + t->npending[m->stream]++];
	e->end_offset = m->end;
	memcpy(e->digest, m->digest, 32);
	return t->npending[m->stream] == APPEND_BATCH ? flush_entries(p, t, m->stream) : 0;
}

/* The injected chunk of m from its stream's chunk source, checked
 * (digest, size) before it is copied to a target. Sources may be read
 * from several threads at once. */
static int fetch_known(struct cn_pipeline *p, const struct msg *m, struct cn_chunk **out)
{
	struct stream *s = &p->streams[m->stream];
	struct cn_buf blob = {0};
	int r = s->chunk_src->ops->get_chunk(s->chunk_src, m->digest, &blob);
	/* the container, digest and plain size; an encrypted chunk in a run
	 * without a key cannot be checked, so it is refused */
	if (r == 0 && (r = cn_blob_verify_chunk(NULL, blob.data, blob.len, p->crypt, m->digest,
						m->n)) >= 0) {
		r = !p->crypt && r >= CN_BLOB_ENCRYPTED
			? cn_error_set(-CN_E_FORMAT, "reused chunk is encrypted, this run is not") : 0;
	}
	struct cn_chunk *c = r == 0 ? cn_chunk_new(blob.len) : NULL;
	if (r == 0 && !c)
		r = cn_error_set(-ENOMEM, "out of memory");
	if (r == 0) {
		memcpy(c->data, blob.data, blob.len);
		c->len = blob.len;
		c->plain_size = m->n;
		memcpy(c->digest, m->digest, 32);
		*out = c;
	}
	cn_buf_free(&blob);
	return r < 0 ? cn_error_prefix(r, "copying a reused chunk from %s", s->chunk_src->name) : 0;
}

/* A chunk to target t: stored unless it has it already. An injected one
 * (M_KNOWN, of a previous snapshot) was registered with add_known; a
 * target whose previous snapshot differs gets it copied from the
 * stream's chunk source, if there is one. */
static int send_chunk(struct cn_pipeline *p, struct tgt *t, const struct msg *m)
{
	int r = t->t->ops->has_chunk(t->t, m->digest);
	if (r == 0 && m->kind == M_CHUNK) {
		if ((r = t->t->ops->put_chunk(t->t, m->chunk)) == 0) {
			atomic_fetch_add(&t->chunks_new, 1);
			atomic_fetch_add(&t->bytes_new, m->chunk->plain_size);
			atomic_fetch_add(&t->bytes_new_encoded, m->chunk->len);
		}
	} else if (r == 0 && p->streams[m->stream].chunk_src) {
		struct cn_chunk *copy = NULL;
		if ((r = fetch_known(p, m, &copy)) == 0 && (r = t->t->ops->put_chunk(t->t, copy)) == 0) {
			atomic_fetch_add(&t->copied, 1);
			atomic_fetch_add(&t->bytes_new, copy->plain_size);
			atomic_fetch_add(&t->bytes_new_encoded, copy->len);
		}
		cn_chunk_unref(copy);
	} else if (r == 0) {
		/* the previous snapshot references it: removed or lost since */
		r = cn_error_set(-CN_E_MISSING,
				 "reused from the previous snapshot, but missing from %s (a "
				 "damaged store: verify finds the snapshots that need it; a "
				 "backup with --change-detection-mode data stores it again)",
				 t->t->name);
	}
	if (r < 0) {
		char hex[65];
		cn_hex_encode(m->digest, 32, hex);
		return cn_error_prefix(r, "chunk %s", hex);
	}
	return append_entry(p, t, m);
}

static void blob_unref(struct shared_blob *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

/* cn_fanout_ops.discard: releases what a message holds. */
static void discard_msg(void *ctx, size_t lane, void *msgp)
{
	struct msg *m = msgp;
	(void)ctx;
	(void)lane;
	cn_chunk_unref(m->chunk);
	blob_unref(m->blob);
	m->chunk = NULL;
	m->blob = NULL;
}

/* cn_fanout_ops.handle: carries out one message on target `lane`. */
static int send_msg(void *ctx, size_t lane, void *msgp)
{
	struct cn_pipeline *p = ctx;
	struct tgt *t = &p->targets[lane];
	struct msg *m = msgp;
	int r = 0;
	switch (m->kind) {
	case M_CHUNK:
	case M_KNOWN:
		r = send_chunk(p, t, m);
		break;
	case M_CLOSE:
		if ((r = flush_entries(p, t, m->stream)) == 0 &&
		    (r = t->t->ops->index_close(t->t, t->handles[m->stream], m->n, m->end, m->digest)) < 0)
			r = cn_error_prefix(r, "closing index %s", p->streams[m->stream].name);
		break;
	case M_BLOB:
		if ((r = t->t->ops->put_blob(t->t, m->blob->name, m->blob->data, m->blob->len)) < 0)
			r = cn_error_prefix(r, "storing %s", m->blob->name);
		break;
	case M_FINISH:
		if ((r = t->t->ops->finish(t->t)) < 0)
			r = cn_error_prefix(r, "finishing the snapshot");
		else
			atomic_store(&t->finished, 1);
		break;
	}
	discard_msg(p, lane, m);
	return r;
}

/* cn_fanout_ops.dropped: target `lane` failed or stalled (its sender
 * aborts it). A warning names it while others are live; dropping the last
 * one fails the pipeline with its message. Any thread. */
static void target_dropped(void *ctx, size_t lane, int code, const char *msg)
{
	struct cn_pipeline *p = ctx;
	struct tgt *t = &p->targets[lane];
	if (!atomic_exchange(&t->live, 0))
		return;
	keep_why(t, msg);
	if (atomic_fetch_sub(&p->nlive, 1) > 1) {
		cn_log_warning("target %s failed: %s; going on without it", t->t->name, msg);
		return;
	}
	if (p->ntargets == 1)
		cn_error_set(code, "%s", msg);
	else
		cn_error_set(code, "no target left; the last, %s, failed: %s", t->t->name, msg);
	fail(p, code);
}

/* cn_fanout_ops.heavy: a message with a chunk to store. */
static int msg_heavy(void *ctx, const void *msgp)
{
	(void)ctx;
	return ((const struct msg *)msgp)->kind == M_CHUNK;
}

static const struct cn_fanout_ops sender_ops = {
	.handle = send_msg,
	.discard = discard_msg,
	.dropped = target_dropped,
	.heavy = msg_heavy,
};

/* Queues m for every live target (a chunk or blob reference each). 0, or
 * the pipeline's error once no target is left. */
static int queue_all(struct cn_pipeline *p, struct msg *m)
{
	for (size_t i = 0; i < p->ntargets; i++) {
		if (!atomic_load(&p->targets[i].live))
			continue;
		struct msg copy = *m;
		if (copy.chunk)
			cn_chunk_ref(copy.chunk);
		if (copy.blob)
			atomic_fetch_add(&copy.blob->refs, 1);
		if (cn_fanout_push(p->fan, i, &copy) != 0)
			discard_msg(p, i, &copy);
	}
	return atomic_load(&p->nlive) ? 0 : error_of(p);
}

/* ---- sink: reorder, index checksums, hand-off to the senders ----------- */

static int deliver(struct cn_pipeline *p, struct job *j)
{
	struct stream *s = &p->streams[j->stream];
	struct msg m = {
		.kind = j->known ? M_KNOWN : M_CHUNK,
		.stream = j->stream,
		.end = j->end_offset,
		.n = j->end_offset - s->size,
		.chunk = j->known ? NULL : j->chunk,
	};
	memcpy(m.digest, j->known ? j->known_digest : j->chunk->digest, 32);
	if (j->known)
		atomic_fetch_add(&p->chunks_known, 1);
	atomic_fetch_add(&p->chunks, 1);
	cn_index_csum_update(s->csum, j->end_offset, m.digest);
	s->count++;
	s->size = j->end_offset;
	return queue_all(p, &m);
}

static void *sink_main(void *ctx)
{
	struct cn_pipeline *p = ctx;
	struct job **ring = calloc(p->njobs, sizeof(*ring));
	if (!ring) {
		fail(p, cn_error_set(-ENOMEM, "out of memory for the reorder buffer"));
		return NULL;
	}
	void *item;
	while (cn_workqueue_pop(p->done_q, &item)) {
		struct job *j = item;
		ring[j->seq % p->njobs] = j;
		struct job *next;
		while ((next = ring[p->delivered % p->njobs]) && next->seq == p->delivered) {
			ring[p->delivered % p->njobs] = NULL;
			int r = deliver(p, next);
			cn_chunk_unref(next->chunk);
			next->chunk = NULL;
			if (r < 0) {
				fail(p, r);
				break;
			}
			p->delivered++;
			if (cn_workqueue_push(p->free_q, next) < 0)
				break;
		}
	}
	free(ring);
	return NULL;
}

int cn_pipeline_start(struct cn_pipeline *p)
{
	if (p->state != ST_BEGUN)
		return cn_error_set(-EINVAL, "pipeline not begun or already started");
	if (atomic_load(&p->nlive) == 0)
		return cn_error_set(-EINVAL, "no live target");
	/* Jobs: one per stream, which the producer fills, and one per worker,
	 * which it encodes meanwhile; that keeps every core busy. No more: a
	 * job a worker has finished waits in the sink while the targets'
	 * queues are full, and spare jobs would only let the producer read
	 * further ahead of a target that sets the pace anyway (no faster with
	 * two more, and 8 MiB more memory each; cn_pipeline.h). A target
	 * that keeps chunks after its calls (cn_target.held: uploads in
	 * flight) takes them from the workers' jobs, one worker's at least
	 * left: such a target is paced by its uploads, not by the workers, and
	 * the run holds as many chunks as with other targets. */
	size_t held = 0;
	for (size_t i = 0; i < p->ntargets; i++)
		if (atomic_load(&p->targets[i].live) && p->targets[i].t->held > held)
			held = p->targets[i].t->held;
	if (held > p->threads - 1)
		held = p->threads - 1;
	p->njobs = p->threads - held + p->nstreams;
	p->jobs = calloc(p->njobs, sizeof(*p->jobs));
	if (!p->jobs)
		return cn_error_set(-ENOMEM, "out of memory for pipeline jobs");
	/* Buffers hold the largest chunk of any stream; of a buffer given
	 * back, 1.5 times the largest average stays resident: an occasional
	 * maximum-size chunk must not pin 4x the memory in every buffer for
	 * the rest of the run, and pages given back for every chunk above
	 * the average must be faulted in again (cn_pipeline.h has the
	 * measured trade). Every job may hold one, and one more is in the
	 * encoded chunk being stored. */
	size_t max_chunk = 0, max_avg = 0;
	for (size_t i = 0; i < p->nstreams; i++) {
		if (cn_chunker_max_size(p->streams[i].chunker) > max_chunk)
			max_chunk = cn_chunker_max_size(p->streams[i].chunker);
		if (p->streams[i].avg > max_avg)
			max_avg = p->streams[i].avg;
	}
	p->hdr = p->crypt ? CN_BLOB_ENC_HEADER_SIZE : CN_BLOB_HEADER_SIZE;
	/* Buffers out at once, all kept for reuse: one per job, one per
	 * worker for a compressed copy, the encoded chunk the senders hold
	 * beside the one in the sink (see the header) and one a target may
	 * keep after its call (cn_target.held). */
	int r = cn_bufpool_new(p->hdr + max_chunk, p->hdr + max_avg + max_avg / 2,
			       p->njobs + p->threads + TARGET_CHUNKS + 1, &p->pool);
	if (r < 0)
		return r;
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		t->pending = calloc(p->nstreams ? p->nstreams * APPEND_BATCH : 1, sizeof(*t->pending));
		t->npending = calloc(p->nstreams ? p->nstreams : 1, sizeof(*t->npending));
		if (!t->pending || !t->npending)
			return cn_error_set(-ENOMEM, "out of memory for index entries");
	}
	struct cn_target *targets[p->ntargets];
	for (size_t i = 0; i < p->ntargets; i++)
		targets[i] = p->targets[i].t;
	struct cn_fanout_opts fo = {.msg_size = sizeof(struct msg), .depth = TARGET_QUEUE_DEPTH,
				    .heavy_max = TARGET_CHUNKS,
				    .stall_ms = p->stall_ms};
	if ((r = cn_fanout_new(targets, p->ntargets, &fo, &sender_ops, p, &p->fan)) < 0)
		return r;
	for (size_t i = 0; i < p->ntargets; i++)
		if (!atomic_load(&p->targets[i].live))
			cn_fanout_retire(p->fan, i); /* dropped (and aborted) before start */
	if ((r = cn_workqueue_new(p->njobs, &p->free_q)) < 0 ||
	    (r = cn_workqueue_new(p->njobs, &p->work_q)) < 0 ||
	    (r = cn_workqueue_new(p->njobs, &p->done_q)) < 0)
		return r;
	for (size_t i = 0; i < p->njobs; i++)
		cn_workqueue_push(p->free_q, &p->jobs[i]);
	p->state = ST_RUNNING;
	r = pthread_create(&p->sink, NULL, sink_main, p);
	if (r) {
		fail(p, cn_error_sys(-r, "starting the pipeline's sink thread"));
		return error_of(p);
	}
	p->sink_started = 1;
	r = cn_workers_start(p->threads, worker_main, p, &p->workers);
	if (r < 0)
		return fail(p, r);
	return 0;
}

/* ---- producer ----------------------------------------------------------- */

static int submit(struct cn_pipeline *p, struct stream *s)
{
	struct job *j = s->cur;
	s->cur = NULL;
	j->seq = p->next_seq++;
	j->end_offset = s->offset;
	if (cn_workqueue_push(p->work_q, j) < 0)
		return error_of(p);
	return 0;
}

/* The stream of a write, reserve or commit, once the pipeline and the
 * stream may take data; NULL with the reason otherwise. */
static struct stream *writable(struct cn_pipeline *p, int stream, int *rc)
{
	if (p->state != ST_RUNNING)
		*rc = p->err ? error_of(p) : cn_error_set(-EINVAL, "pipeline not running");
	else if (p->err)
		*rc = error_of(p);
	else if (p->streams[stream].ended)
		*rc = cn_error_set(-EINVAL, "write to ended stream %s", p->streams[stream].name);
	else
		return &p->streams[stream];
	return NULL;
}

/* A free job for stream, with a buffer, not yet the stream's current one:
 * blocks while every job is in flight. */
static int take_job(struct cn_pipeline *p, int stream, struct job **out)
{
	void *item;
	if (!cn_workqueue_pop(p->free_q, &item))
		return error_of(p);
	struct job *j = item;
	j->stream = stream;
	j->len = 0;
	j->known = 0;
	if (!j->buf) {
		if (!(j->buf = cn_bufpool_get(p->pool)))
			return fail(p, -ENOMEM);
		j->data = j->buf + p->hdr;
	}
	*out = j;
	return 0;
}

/* Room left in job j: the chunker cuts at its maximum size, which the
 * buffers hold. */
static size_t job_room(const struct cn_pipeline *p, const struct job *j)
{
	return cn_bufpool_size(p->pool) - p->hdr - j->len;
}

int cn_pipeline_write(struct cn_pipeline *p, int stream, const uint8_t *data, size_t len)
{
	/* copied into the free end of the chunk being filled and committed
	 * there: the chunker scans it once, in place */
	while (len > 0) {
		uint8_t *buf;
		size_t avail;
		int rc = cn_pipeline_reserve(p, stream, &buf, &avail);
		if (rc < 0)
			return rc;
		size_t n = len < avail ? len : avail;
		memcpy(buf, data, n);
		if ((rc = cn_pipeline_commit(p, stream, n)) < 0)
			return rc;
		data += n;
		len -= n;
	}
	return 0;
}

int cn_pipeline_reserve(struct cn_pipeline *p, int stream, uint8_t **buf, size_t *avail)
{
	int rc;
	struct stream *s = writable(p, stream, &rc);
	if (!s)
		return rc;
	if (!s->cur && (rc = take_job(p, stream, &s->cur)) < 0)
		return rc;
	*buf = s->cur->data + s->cur->len;
	*avail = job_room(p, s->cur);
	if (*avail == 0)
		return fail(p, cn_error_set(-EFBIG, "chunk of stream %s longer than %zu bytes", s->name,
					    cn_bufpool_size(p->pool) - p->hdr));
	return 0;
}

int cn_pipeline_commit(struct cn_pipeline *p, int stream, size_t len)
{
	int rc;
	struct stream *s = writable(p, stream, &rc);
	if (!s)
		return rc;
	struct job *j = s->cur;
	if (len == 0)
		return 0;
	if (!j || len > job_room(p, j))
		return cn_error_set(-EINVAL, "commit of %zu bytes to stream %s beyond its reserve", len,
				    s->name);
	atomic_fetch_add(&p->stream_bytes, len);
	const uint8_t *data = j->data + j->len;
	while (len > 0) {
		size_t cut = cn_chunker_scan(s->chunker, data, len);
		if (cut == CN_CHUNKER_ERROR)
			return fail(p, cn_error_code() ? cn_error_code() : -EINVAL);
		size_t n = cut ? cut : len;
		j->len += n;
		s->offset += n;
		data += n;
		len -= n;
		if (!cut)
			break;
		/* the bytes after the cut start the next chunk: copied into its
		 * buffer before this one goes to the workers, who encode it in
		 * place */
		struct job *next = NULL;
		if (len > 0) {
			if ((rc = take_job(p, stream, &next)) < 0)
				return rc;
			memcpy(next->data, data, len);
			data = next->data;
		}
		if ((rc = submit(p, s)) < 0)
			return rc;
		s->cur = j = next;
	}
	return 0;
}

int cn_pipeline_writer_fn(void *ctx, const uint8_t *data, size_t len)
{
	struct cn_pipeline_writer *w = ctx;
	return cn_pipeline_write(w->p, w->stream, data, len);
}

int cn_pipeline_reserve_fn(void *ctx, uint8_t **buf, size_t *avail)
{
	struct cn_pipeline_writer *w = ctx;
	return cn_pipeline_reserve(w->p, w->stream, buf, avail);
}

int cn_pipeline_commit_fn(void *ctx, size_t len)
{
	struct cn_pipeline_writer *w = ctx;
	return cn_pipeline_commit(w->p, w->stream, len);
}

int cn_pipeline_suggest_boundary(struct cn_pipeline *p, int stream)
{
	if (p->err)
		return error_of(p);
	struct stream *s = &p->streams[stream];
	if (!s->cur || s->cur->len < cn_chunker_min_size(s->chunker))
		return 0;
	cn_chunker_reset(s->chunker);
	return submit(p, s);
}

int cn_pipeline_boundary_fn(void *ctx, uint64_t offset)
{
	struct cn_pipeline_writer *w = ctx;
	if (offset != w->p->streams[w->stream].offset)
		return cn_error_set(-EINVAL, "suggested boundary %llu is not the end of stream %s",
				    (unsigned long long)offset, w->p->streams[w->stream].name);
	return cn_pipeline_suggest_boundary(w->p, w->stream);
}

int cn_pipeline_set_chunk_source(struct cn_pipeline *p, int stream, struct cn_source *src)
{
	if (p->state == ST_RUNNING || stream < 0 || (size_t)stream >= p->nstreams)
		return cn_error_set(-EINVAL, "chunk source for stream %d set too late or unknown", stream);
	p->streams[stream].chunk_src = src;
	return 0;
}

int cn_pipeline_inject(struct cn_pipeline *p, int stream, const uint8_t (*digests)[32],
		       const uint64_t *sizes, size_t n)
{
	if (p->state != ST_RUNNING)
		return p->err ? error_of(p) : cn_error_set(-EINVAL, "pipeline not running");
	if (p->err)
		return error_of(p);
	struct stream *s = &p->streams[stream];
	if (s->ended)
		return cn_error_set(-EINVAL, "inject into ended stream %s", s->name);
	/* forced boundary: the chunk being filled ends here */
	if (s->cur && s->cur->len > 0) {
		int r = submit(p, s);
		if (r < 0)
			return r;
	}
	cn_chunker_reset(s->chunker);
	for (size_t i = 0; i < n; i++) {
		if (sizes[i] == 0)
			return cn_error_set(-EINVAL, "injected chunk of size 0");
		if (!s->cur) {
			void *item;
			if (!cn_workqueue_pop(p->free_q, &item))
				return error_of(p);
			s->cur = item;
			s->cur->stream = stream;
		}
		struct job *j = s->cur;
		j->len = 0;
		j->known = 1;
		memcpy(j->known_digest, digests[i], 32);
		s->offset += sizes[i];
		int r = submit(p, s);
		if (r < 0)
			return r;
	}
	return 0;
}

int cn_pipeline_end_stream(struct cn_pipeline *p, int stream)
{
	struct stream *s = &p->streams[stream];
	if (s->ended)
		return 0;
	s->ended = 1;
	if (p->err)
		return error_of(p);
	if (!s->cur)
		return 0;
	if (s->cur->len > 0)
		return submit(p, s);
	struct job *j = s->cur;
	s->cur = NULL;
	if (cn_workqueue_push(p->free_q, j) < 0)
		return error_of(p);
	return 0;
}

/* Stops the threads: normally (close the queues in order so everything
 * submitted gets delivered) or, after a failure, at once. */
static void stop_threads(struct cn_pipeline *p)
{
	if (p->state != ST_RUNNING)
		return;
	cn_workqueue_close(p->work_q);
	cn_workers_join(p->workers);
	p->workers = NULL;
	cn_workqueue_close(p->done_q);
	if (p->sink_started)
		pthread_join(p->sink, NULL);
	p->sink_started = 0;
	p->state = ST_ENDED;
}

int cn_pipeline_end(struct cn_pipeline *p)
{
	if (p->state == ST_RUNNING) {
		for (size_t s = 0; s < p->nstreams && !p->err; s++)
			cn_pipeline_end_stream(p, (int)s);
		stop_threads(p);
		if (!p->err && p->delivered != p->next_seq)
			fail(p, cn_error_set(-EIO, "pipeline lost chunks: %llu of %llu delivered",
					     (unsigned long long)p->delivered,
					     (unsigned long long)p->next_seq));
	} else if (p->state != ST_ENDED && !p->err) {
		return cn_error_set(-EINVAL, "pipeline not running");
	}
	if (p->err)
		return error_of(p);
	for (size_t sidx = 0; sidx < p->nstreams; sidx++) {
		struct stream *s = &p->streams[sidx];
		cn_index_csum_final(s->csum, s->final_csum);
		struct msg m = {.kind = M_CLOSE, .stream = (int)sidx, .end = s->size, .n = s->count};
		memcpy(m.digest, s->final_csum, 32);
		int r = queue_all(p, &m);
		if (r < 0)
			return r;
	}
	/* every target has closed its indexes, failed, or stalled */
	cn_fanout_sync(p->fan);
	return p->err ? error_of(p) : 0;
}

void cn_pipeline_stream_result(const struct cn_pipeline *p, int s, uint64_t *count,
			       uint64_t *size, uint8_t csum[32])
{
	const struct stream *st = &p->streams[s];
	if (count)
		*count = st->count;
	if (size)
		*size = st->size;
	if (csum)
		memcpy(csum, st->final_csum, 32);
}

int cn_pipeline_put_blob(struct cn_pipeline *p, const char *name, const uint8_t *data,
			 size_t len)
{
	if (p->state != ST_ENDED || p->err)
		return p->err ? error_of(p) : cn_error_set(-EINVAL, "put_blob before the pipeline ended");
	/* a copy: a stalled sender may still be in put_blob after we return */
	struct shared_blob *b = malloc(sizeof(*b) + (len ? len : 1));
	if (!b)
		return cn_error_set(-ENOMEM, "out of memory for %s", name);
	if (strlen(name) >= sizeof(b->name)) {
		free(b);
		return cn_error_set(-ENAMETOOLONG, "blob name too long: %s", name);
	}
	atomic_init(&b->refs, 1);
	snprintf(b->name, sizeof(b->name), "%s", name);
	memcpy(b->data, data, len);
	b->len = len;
	struct msg m = {.kind = M_BLOB, .blob = b};
	int r = queue_all(p, &m);
	blob_unref(b);
	if (r < 0)
		return r;
	cn_fanout_sync(p->fan);
	return p->err ? error_of(p) : 0;
}

int cn_pipeline_finish(struct cn_pipeline *p)
{
	if (p->state != ST_ENDED || p->err)
		return p->err ? error_of(p) : cn_error_set(-EINVAL, "finish before the pipeline ended");
	struct msg m = {.kind = M_FINISH};
	int r = queue_all(p, &m);
	if (r == 0)
		cn_fanout_sync(p->fan);
	/* Senders of targets that finished leave without touching them again;
	 * those of dropped ones abort theirs (a stalled one once its
	 * cancelled call returned). */
	cn_fanout_stop(p->fan, 0);
	p->state = ST_DONE;
	int done = 0;
	for (size_t i = 0; i < p->ntargets; i++)
		done += atomic_load(&p->targets[i].live) && atomic_load(&p->targets[i].finished);
	if (done)
		return done;
	return p->err ? error_of(p) : cn_error_set(-EIO, "no target finished");
}

void cn_pipeline_abort(struct cn_pipeline *p)
{
	if (p->state == ST_RUNNING)
		fail(p, -ECANCELED);
	/* the senders first: the sink may wait for room in a target's queue;
	 * they abort every target not dropped yet */
	if (p->fan)
		cn_fanout_stop(p->fan, 1);
	stop_threads(p);
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		if (atomic_exchange(&t->live, 0) && !p->fan && p->state != ST_NEW)
			t->t->ops->abort(t->t);
	}
	atomic_store(&p->nlive, 0);
	p->state = ST_DONE;
}

void cn_pipeline_stats(struct cn_pipeline *p, struct cn_pipeline_stats *st)
{
	st->stream_bytes = atomic_load(&p->stream_bytes);
	st->chunks = atomic_load(&p->chunks);
	/* each target takes what it lacks at its own pace: "new" is what the
	 * target that took the most has taken */
	uint64_t copied = 0;
	st->chunks_new = st->bytes_new = st->bytes_new_encoded = 0;
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		uint64_t c = atomic_load(&t->copied), n = atomic_load(&t->chunks_new) + c;
		uint64_t b = atomic_load(&t->bytes_new), e = atomic_load(&t->bytes_new_encoded);
		copied = c > copied ? c : copied;
		st->chunks_new = n > st->chunks_new ? n : st->chunks_new;
		st->bytes_new = b > st->bytes_new ? b : st->bytes_new;
		st->bytes_new_encoded = e > st->bytes_new_encoded ? e : st->bytes_new_encoded;
	}
	uint64_t known = atomic_load(&p->chunks_known);
	st->chunks_reused = known > copied ? known - copied : 0;
	st->targets = p->ntargets;
	st->targets_live = atomic_load(&p->nlive);
}

void cn_pipeline_free(struct cn_pipeline *p)
{
	if (!p)
		return;
	if (p->state != ST_DONE && p->state != ST_NEW)
		cn_pipeline_abort(p);
	cn_fanout_free(p->fan); /* stopped: every sender has let go of its chunks */
	for (size_t i = 0; i < p->njobs; i++) {
		cn_chunk_unref(p->jobs[i].chunk);
		cn_bufpool_put(p->pool, p->jobs[i].buf, 0);
	}
	free(p->jobs);
	cn_bufpool_unref(p->pool); /* freed when the targets drop their chunks */
	cn_workqueue_free(p->free_q);
	cn_workqueue_free(p->work_q);
	cn_workqueue_free(p->done_q);
	for (size_t s = 0; s < p->nstreams; s++) {
		cn_chunker_free(p->streams[s].chunker);
		cn_index_csum_free(p->streams[s].csum);
	}
	free(p->streams);
	for (size_t i = 0; i < p->ntargets; i++) {
		free(p->targets[i].handles);
		free(p->targets[i].pending);
		free(p->targets[i].npending);
		cn_buf_free(&p->targets[i].prev);
	}
	free(p->targets);
	pthread_mutex_destroy(&p->err_lock);
	free(p);
}
