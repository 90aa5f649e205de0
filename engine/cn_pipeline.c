/* cn_pipeline — the backup data path up to the targets: the producer
 * (the caller's writes, cut into chunks), the encoding workers, the sink
 * that puts chunks back in stream order and checksums the indexes, and
 * the run's life cycle. The senders, one thread per target, are in
 * cn_pipeline_send.c; cn_pipeline_impl.h holds what the two share.
 * cn_pipeline.h has the design and its measured costs. */
#include "engine/cn_pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "engine/cn_pipeline_impl.h"

int cn_pl_fail(struct cn_pipeline *p, int code)
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

int cn_pl_error_of(struct cn_pipeline *p)
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

int cn_pipeline_drop(struct cn_pipeline *p, size_t i, int code)
{
	struct tgt *t = &p->targets[i];
	char msg[1024];
	snprintf(msg, sizeof(msg), "%s", *cn_error_message() ? cn_error_message() : cn_strerror(code));
	cn_pl_take_out(p, t, msg, 1);
	if (atomic_load(&p->nlive) > 0)
		return 0;
	return cn_pl_none_left(p, t, code, msg);
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
		cn_pl_fail(p, r);
		return NULL;
	}
	void *item;
	while (cn_workqueue_pop(p->work_q, &item)) {
		struct job *j = item;
		r = j->known ? 0 : encode_job(p, bctx, j);
		if (r < 0) {
			cn_pl_fail(p, cn_error_prefix(r, "encoding chunk ending at %s offset %llu",
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
	return cn_pl_queue_all(p, &m);
}

static void *sink_main(void *ctx)
{
	struct cn_pipeline *p = ctx;
	struct job **ring = calloc(p->njobs, sizeof(*ring));
	if (!ring) {
		cn_pl_fail(p, cn_error_set(-ENOMEM, "out of memory for the reorder buffer"));
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
				cn_pl_fail(p, r);
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
	 * back, the largest average stays resident: an occasional
	 * maximum-size chunk must not pin 4x the memory in every buffer for
	 * the rest of the run, and pages given back for every chunk above
	 * the average must be faulted in again, 2 MiB at a time in huge
	 * pages (cn_pipeline.h has the measured trade). Every job may hold
	 * one, and one more is in the encoded chunk being stored. */
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
	int r = cn_bufpool_new(p->hdr + max_chunk, p->hdr + max_avg,
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
	if ((r = cn_fanout_new(targets, p->ntargets, &fo, &cn_pl_sender_ops, p, &p->fan)) < 0)
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
		cn_pl_fail(p, cn_error_sys(-r, "starting the pipeline's sink thread"));
		return cn_pl_error_of(p);
	}
	p->sink_started = 1;
	r = cn_workers_start(p->threads, worker_main, p, &p->workers);
	if (r < 0)
		return cn_pl_fail(p, r);
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
		return cn_pl_error_of(p);
	return 0;
}

/* The stream of a write, reserve or commit, once the pipeline and the
 * stream may take data; NULL with the reason otherwise. */
static struct stream *writable(struct cn_pipeline *p, int stream, int *rc)
{
	if (p->state != ST_RUNNING)
		*rc = p->err ? cn_pl_error_of(p) : cn_error_set(-EINVAL, "pipeline not running");
	else if (p->err)
		*rc = cn_pl_error_of(p);
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
		return cn_pl_error_of(p);
	struct job *j = item;
	j->stream = stream;
	j->len = 0;
	j->known = 0;
	if (!j->buf) {
		if (!(j->buf = cn_bufpool_get(p->pool)))
			return cn_pl_fail(p, -ENOMEM);
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
		return cn_pl_fail(p, cn_error_set(-EFBIG, "chunk of stream %s longer than %zu bytes", s->name,
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
			return cn_pl_fail(p, cn_error_code() ? cn_error_code() : -EINVAL);
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
		return cn_pl_error_of(p);
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
		return p->err ? cn_pl_error_of(p) : cn_error_set(-EINVAL, "pipeline not running");
	if (p->err)
		return cn_pl_error_of(p);
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
				return cn_pl_error_of(p);
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
		return cn_pl_error_of(p);
	if (!s->cur)
		return 0;
	if (s->cur->len > 0)
		return submit(p, s);
	struct job *j = s->cur;
	s->cur = NULL;
	if (cn_workqueue_push(p->free_q, j) < 0)
		return cn_pl_error_of(p);
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
			cn_pl_fail(p, cn_error_set(-EIO, "pipeline lost chunks: %llu of %llu delivered",
					     (unsigned long long)p->delivered,
					     (unsigned long long)p->next_seq));
	} else if (p->state != ST_ENDED && !p->err) {
		return cn_error_set(-EINVAL, "pipeline not running");
	}
	if (p->err)
		return cn_pl_error_of(p);
	for (size_t sidx = 0; sidx < p->nstreams; sidx++) {
		struct stream *s = &p->streams[sidx];
		cn_index_csum_final(s->csum, s->final_csum);
		struct msg m = {.kind = M_CLOSE, .stream = (int)sidx, .end = s->size, .n = s->count};
		memcpy(m.digest, s->final_csum, 32);
		int r = cn_pl_queue_all(p, &m);
		if (r < 0)
			return r;
	}
	/* every target has closed its indexes, failed, or stalled */
	cn_fanout_sync(p->fan);
	return p->err ? cn_pl_error_of(p) : 0;
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
		return p->err ? cn_pl_error_of(p) : cn_error_set(-EINVAL, "put_blob before the pipeline ended");
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
	int r = cn_pl_queue_all(p, &m);
	cn_pl_blob_unref(b);
	if (r < 0)
		return r;
	cn_fanout_sync(p->fan);
	return p->err ? cn_pl_error_of(p) : 0;
}

int cn_pipeline_finish(struct cn_pipeline *p)
{
	if (p->state != ST_ENDED || p->err)
		return p->err ? cn_pl_error_of(p) : cn_error_set(-EINVAL, "finish before the pipeline ended");
	struct msg m = {.kind = M_FINISH};
	int r = cn_pl_queue_all(p, &m);
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
	return p->err ? cn_pl_error_of(p) : cn_error_set(-EIO, "no target finished");
}

void cn_pipeline_abort(struct cn_pipeline *p)
{
	if (p->state == ST_RUNNING)
		cn_pl_fail(p, -ECANCELED);
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
