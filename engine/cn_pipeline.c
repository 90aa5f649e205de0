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
#include "engine/cn_workqueue.h"
#include "store/cn_blob.h"
#include "store/cn_index.h"

/* Index entries are sent to the targets in batches of this many. */
#define APPEND_BATCH 64

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
	struct cn_index_entry pending[APPEND_BATCH];
	size_t npending;
	uint8_t final_csum[32];
	struct cn_source *chunk_src; /* injected chunks a target lacks */
};

struct tgt {
	struct cn_target *t;
	int live;
	int *handles;         /* index handle per stream */
	struct cn_buf prev;
	int64_t prev_time;
};

enum state { ST_NEW, ST_BEGUN, ST_RUNNING, ST_ENDED, ST_DONE };

struct cn_pipeline {
	struct tgt *targets;
	size_t ntargets;
	atomic_size_t nlive;
	const struct cn_crypt_config *crypt;
	int compress;
	size_t threads;

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

	atomic_uint_fast64_t stream_bytes, chunks, chunks_new, bytes_new, bytes_new_encoded;
	atomic_uint_fast64_t chunks_reused;
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
		p->targets[i].live = 1;
		p->targets[i].prev_time = -1;
	}
	p->ntargets = n;
	atomic_init(&p->nlive, n);
	p->crypt = opts ? opts->crypt : NULL;
	p->compress = opts ? opts->compress : CN_BLOB_COMPRESS;
	p->threads = opts && opts->threads ? opts->threads : cn_cpu_count();
	pthread_mutex_init(&p->err_lock, NULL);
	*out = p;
	return 0;
}

size_t cn_pipeline_target_count(const struct cn_pipeline *p)
{
	return p->ntargets;
}

struct cn_target *cn_pipeline_target(const struct cn_pipeline *p, size_t i)
{
	return i < p->ntargets && p->targets[i].live ? p->targets[i].t : NULL;
}

const struct cn_buf *cn_pipeline_prev_manifest(const struct cn_pipeline *p, size_t i,
					       int64_t *prev_time)
{
	if (prev_time)
		*prev_time = p->targets[i].prev_time;
	return &p->targets[i].prev;
}

int cn_pipeline_drop(struct cn_pipeline *p, size_t i, int code)
{
	struct tgt *t = &p->targets[i];
	char msg[1024];
	snprintf(msg, sizeof(msg), "%s", *cn_error_message() ? cn_error_message() : cn_strerror(code));
	if (t->live) {
		t->live = 0;
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

/* ---- sink: reorder and fan-out ----------------------------------------- */

/* Sends a stream's pending entries to every live target. */
static int flush_entries(struct cn_pipeline *p, int sidx)
{
	struct stream *s = &p->streams[sidx];
	if (!s->npending)
		return 0;
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		if (!t->live)
			continue;
		int r = t->t->ops->index_append(t->t, t->handles[sidx], s->pending, s->npending);
		if (r < 0) {
			r = cn_error_prefix(r, "appending to index %s", s->name);
			if ((r = cn_pipeline_drop(p, i, r)) < 0)
				return r;
		}
	}
	s->npending = 0;
	return 0;
}

/* Drops target i after a failed call about the chunk with this digest.
 * 0 while other targets are live, else the error. */
static int drop_for_chunk(struct cn_pipeline *p, size_t i, int r, const uint8_t digest[32])
{
	char hex[65];
	cn_hex_encode(digest, 32, hex);
	return cn_pipeline_drop(p, i, cn_error_prefix(r, "chunk %s", hex));
}

/* Records a delivered chunk in its stream's index (checksum, count, size)
 * and appends it to the targets in batches of APPEND_BATCH. */
static int append_entry(struct cn_pipeline *p, struct job *j, const uint8_t digest[32])
{
	atomic_fetch_add(&p->chunks, 1);
	struct stream *s = &p->streams[j->stream];
	cn_index_csum_update(s->csum, j->end_offset, digest);
	s->count++;
	s->size = j->end_offset;
	struct cn_index_entry *e = &s->pending[s->npending++];
	e->end_offset = j->end_offset;
	memcpy(e->digest, digest, 32);
	if (s->npending == APPEND_BATCH)
		return flush_entries(p, j->stream);
	return 0;
}

/* The injected chunk of job j from its stream's chunk source, checked
 * (digest, size) before it is copied to a target. */
static int fetch_known(struct cn_pipeline *p, struct job *j, struct cn_chunk **out)
{
	struct stream *s = &p->streams[j->stream];
	struct cn_buf blob = {0};
	int r = s->chunk_src->ops->get_chunk(s->chunk_src, j->known_digest, &blob);
	/* the container, digest and plain size; an encrypted chunk in a run
	 * without a key cannot be checked, so it is refused */
	if (r == 0 && (r = cn_blob_verify_chunk(NULL, blob.data, blob.len, p->crypt, j->known_digest,
						j->end_offset - s->size)) >= 0) {
		r = !p->crypt && r >= CN_BLOB_ENCRYPTED
			? cn_error_set(-CN_E_FORMAT, "reused chunk is encrypted, this run is not") : 0;
	}
	struct cn_chunk *c = r == 0 ? cn_chunk_new(blob.len) : NULL;
	if (r == 0 && !c)
		r = cn_error_set(-ENOMEM, "out of memory");
	if (r == 0) {
		memcpy(c->data, blob.data, blob.len);
		c->len = blob.len;
		c->plain_size = j->end_offset - s->size;
		memcpy(c->digest, j->known_digest, 32);
		*out = c;
	}
	cn_buf_free(&blob);
	return r < 0 ? cn_error_prefix(r, "copying a reused chunk from %s", s->chunk_src->name) : 0;
}

/* An injected chunk of a previous snapshot: targets registered it with
 * add_known; one whose previous snapshot differs gets it copied from the
 * stream's chunk source, if there is one. */
static int deliver_known(struct cn_pipeline *p, struct job *j)
{
	struct cn_chunk *copy = NULL;
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		if (!t->live)
			continue;
		int r = t->t->ops->has_chunk(t->t, j->known_digest);
		if (r == 0 && p->streams[j->stream].chunk_src) {
			if (copy || (r = fetch_known(p, j, &copy)) == 0)
				r = t->t->ops->put_chunk(t->t, copy);
		} else if (r == 0) {
			r = cn_error_set(-CN_E_FORMAT, "reused chunk is not on the target");
		}
		if (r < 0 && (r = drop_for_chunk(p, i, r, j->known_digest)) < 0) {
			cn_chunk_unref(copy);
			return r;
		}
	}
	if (copy) {
		atomic_fetch_add(&p->chunks_new, 1);
		atomic_fetch_add(&p->bytes_new, copy->plain_size);
		atomic_fetch_add(&p->bytes_new_encoded, copy->len);
		cn_chunk_unref(copy);
	} else {
		atomic_fetch_add(&p->chunks_reused, 1);
	}
	return append_entry(p, j, j->known_digest);
}

static int deliver(struct cn_pipeline *p, struct job *j)
{
	if (j->known)
		return deliver_known(p, j);
	struct cn_chunk *c = j->chunk;
	int is_new = 0;
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		if (!t->live)
			continue;
		int r = t->t->ops->has_chunk(t->t, c->digest);
		if (r == 0) {
			r = t->t->ops->put_chunk(t->t, c);
			is_new = 1;
		}
		if (r < 0 && (r = drop_for_chunk(p, i, r, c->digest)) < 0)
			return r;
	}
	if (is_new) {
		atomic_fetch_add(&p->chunks_new, 1);
		atomic_fetch_add(&p->bytes_new, c->plain_size);
		atomic_fetch_add(&p->bytes_new_encoded, c->len);
	}
	return append_entry(p, j, c->digest);
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
	/* Each stream may hold one job while it fills it; the rest keep the
	 * workers busy and the sink fed. */
	p->njobs = p->threads + 2 + p->nstreams;
	p->jobs = calloc(p->njobs, sizeof(*p->jobs));
	if (!p->jobs)
		return cn_error_set(-ENOMEM, "out of memory for pipeline jobs");
	/* Buffers hold the largest chunk of any stream; of a buffer given
	 * back, the largest average's size class stays resident (as the jobs'
	 * buffers did before they were pooled): an occasional maximum-size
	 * chunk must not pin 4x the memory in every buffer for the rest of
	 * the run. Every job may hold one, and a few are in the encoded
	 * chunks being stored. */
	size_t max_chunk = 0, max_avg = 0;
	for (size_t i = 0; i < p->nstreams; i++) {
		if (cn_chunker_max_size(p->streams[i].chunker) > max_chunk)
			max_chunk = cn_chunker_max_size(p->streams[i].chunker);
		if (p->streams[i].avg > max_avg)
			max_avg = p->streams[i].avg;
	}
	p->hdr = p->crypt ? CN_BLOB_ENC_HEADER_SIZE : CN_BLOB_HEADER_SIZE;
	int r = cn_bufpool_new(p->hdr + max_chunk, p->hdr + 2 * max_avg, p->njobs + 2, &p->pool);
	if (r < 0)
		return r;
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

int cn_pipeline_write(struct cn_pipeline *p, int stream, const uint8_t *data, size_t len)
{
	if (p->state != ST_RUNNING)
		return p->err ? error_of(p) : cn_error_set(-EINVAL, "pipeline not running");
	if (p->err)
		return error_of(p);
	struct stream *s = &p->streams[stream];
	if (s->ended)
		return cn_error_set(-EINVAL, "write to ended stream %s", s->name);
	atomic_fetch_add(&p->stream_bytes, len);
	while (len > 0) {
		if (!s->cur) {
			void *item;
			if (!cn_workqueue_pop(p->free_q, &item))
				return error_of(p);
			s->cur = item;
			s->cur->stream = stream;
			s->cur->len = 0;
			s->cur->known = 0;
		}
		struct job *j = s->cur;
		size_t cut = cn_chunker_scan(s->chunker, data, len);
		if (cut == CN_CHUNKER_ERROR)
			return fail(p, cn_error_code() ? cn_error_code() : -EINVAL);
		size_t n = cut ? cut : len;
		if (!j->buf) {
			if (!(j->buf = cn_bufpool_get(p->pool)))
				return fail(p, -ENOMEM);
			j->data = j->buf + p->hdr;
		}
		/* the chunker cuts at its maximum size, which the buffers hold */
		if (j->len + n > cn_bufpool_size(p->pool) - p->hdr)
			return fail(p, cn_error_set(-EFBIG, "chunk of stream %s longer than %zu bytes",
						    s->name, cn_bufpool_size(p->pool) - p->hdr));
		memcpy(j->data + j->len, data, n);
		j->len += n;
		s->offset += n;
		data += n;
		len -= n;
		if (cut) {
			int r = submit(p, s);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int cn_pipeline_writer_fn(void *ctx, const uint8_t *data, size_t len)
{
	struct cn_pipeline_writer *w = ctx;
	return cn_pipeline_write(w->p, w->stream, data, len);
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
		int r = flush_entries(p, (int)sidx);
		if (r < 0)
			return fail(p, r);
		cn_index_csum_final(s->csum, s->final_csum);
		for (size_t i = 0; i < p->ntargets; i++) {
			struct tgt *t = &p->targets[i];
			if (!t->live)
				continue;
			r = t->t->ops->index_close(t->t, t->handles[sidx], s->count, s->size,
						   s->final_csum);
			if (r < 0) {
				r = cn_error_prefix(r, "closing index %s", s->name);
				if ((r = cn_pipeline_drop(p, i, r)) < 0)
					return fail(p, r);
			}
		}
	}
	return 0;
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
	int r = 0;
	for (size_t i = 0; i < p->ntargets && r == 0; i++) {
		struct tgt *t = &p->targets[i];
		if (!t->live)
			continue;
		int rc = t->t->ops->put_blob(t->t, name, data, len);
		if (rc < 0)
			r = cn_pipeline_drop(p, i, cn_error_prefix(rc, "storing %s", name));
	}
	return r;
}

int cn_pipeline_finish(struct cn_pipeline *p)
{
	int done = 0, r = -EIO;
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		if (!t->live)
			continue;
		int rc = t->t->ops->finish(t->t);
		if (rc < 0) {
			r = cn_error_prefix(rc, "finishing the snapshot");
			cn_pipeline_drop(p, i, r);
		} else {
			done++;
		}
	}
	p->state = ST_DONE;
	if (done)
		return done;
	return cn_error_code() ? cn_error_code() : cn_error_set(r, "no target finished");
}

void cn_pipeline_abort(struct cn_pipeline *p)
{
	if (p->state == ST_RUNNING) {
		fail(p, -ECANCELED);
		stop_threads(p);
	}
	for (size_t i = 0; i < p->ntargets; i++) {
		struct tgt *t = &p->targets[i];
		if (t->live && p->state != ST_NEW)
			t->t->ops->abort(t->t);
		t->live = 0;
	}
	atomic_store(&p->nlive, 0);
	p->state = ST_DONE;
}

void cn_pipeline_stats(struct cn_pipeline *p, struct cn_pipeline_stats *st)
{
	st->stream_bytes = atomic_load(&p->stream_bytes);
	st->chunks = atomic_load(&p->chunks);
	st->chunks_new = atomic_load(&p->chunks_new);
	st->bytes_new = atomic_load(&p->bytes_new);
	st->bytes_new_encoded = atomic_load(&p->bytes_new_encoded);
	st->chunks_reused = atomic_load(&p->chunks_reused);
	st->targets = p->ntargets;
	st->targets_live = atomic_load(&p->nlive);
}

void cn_pipeline_free(struct cn_pipeline *p)
{
	if (!p)
		return;
	if (p->state != ST_DONE && p->state != ST_NEW)
		cn_pipeline_abort(p);
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
		cn_buf_free(&p->targets[i].prev);
	}
	free(p->targets);
	pthread_mutex_destroy(&p->err_lock);
	free(p);
}
