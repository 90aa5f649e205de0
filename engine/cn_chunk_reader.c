#include "engine/cn_chunk_reader.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "chunker/cn_chunker.h"
#include "common/cn_error.h"
#include "engine/cn_workqueue.h"
#include "store/cn_blob.h"
#include "store/cn_blob_stream.h"

/* Each slot reads its blobs into one buffer that holds the largest chunk,
 * and decompresses into a second one as large (used by compressed chunks
 * only), both kept for the reader's life. They start at a huge-page
 * boundary (which is page-aligned, so that the local datastore can read
 * into raw directly, cn_datastore.h), and each is marked MADV_HUGEPAGE
 * beyond its first huge page: the kernel then maps the pages of a large
 * chunk 2 MiB at a time instead of 4 KiB, as common/cn_bufpool.c does for
 * a backup (a local restore of 1.5 GiB took 98,000 page faults before,
 * most of them decompressing into a buffer allocated per chunk). */
#define RAW_ALIGN 4096u
#define RAW_CAP (((size_t)CN_CHUNK_MAX_SIZE + CN_BLOB_ENC_HEADER_SIZE + RAW_ALIGN - 1) & \
		 ~(size_t)(RAW_ALIGN - 1))
#define DATA_CAP (((size_t)CN_CHUNK_MAX_SIZE + 1 + RAW_ALIGN - 1) & ~(size_t)(RAW_ALIGN - 1))
/* Of either buffer, what a chunk used beyond this is given back when the
 * slot is reused (raw: and mapped again in one call before a larger blob
 * is read into it): the average pxar chunk stays resident, the tail of
 * the rare chunk up to four times as large does not. Whole huge pages:
 * giving back part of one would split it into small pages for good. */
#define SLOT_KEEP_CAP ((size_t)CN_CHUNKER_DEFAULT_AVG & ~(CN_HUGE_PAGE - 1))

enum slot_state { SLOT_EMPTY, SLOT_LOADING, SLOT_READY, SLOT_ERROR };

/* A cached chunk. Only the thread that set LOADING writes raw, data and
 * bytes until the state changes; a pinned slot (pins > 0) is never
 * replaced. The chunk's content is bytes[0..len): inside raw (the blob as
 * read) for a plain blob and an encrypted uncompressed one (decrypted in
 * place), which then cost no copy, else inside data. */
struct slot {
	size_t chunk;
	enum slot_state state;
	uint64_t stamp;
	int pins;
	struct cn_buf raw, data;
	size_t mapped;        /* raw[0..mapped) may be resident (huge-page multiple) */
	size_t data_mapped;   /* data[0..data_mapped) likewise */
	int raw_own, data_own; /* raw, data: the buffers of slot_buf_init (else grown
				* by cn_buf: nothing given back) */
	const uint8_t *bytes;
	size_t len;
	int err;
	char msg[512];
};

struct cn_chunk_reader {
	struct cn_source *src;
	const struct cn_index *idx;
	const struct cn_crypt_config *crypt;
	struct slot *slots;
	size_t nslots, window;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t clock;
	size_t last;
	int have_last, streak;
	int sequential;            /* the first read starts a streak */
	struct cn_workqueue *q;
	struct cn_workers *workers;
	struct decoder *dec;       /* for demand loads in the caller's thread */
	atomic_uint_fast64_t fetched, bytes_fetched, bytes_decoded;
	atomic_int stopping;       /* set by cn_chunk_reader_free: reads in flight end */
};

/* What a thread decodes chunks with (either pointer may be NULL when out
 * of memory: the decoder then allocates per call, and a source that can
 * stream a chunk is read whole instead). */
struct decoder {
	struct cn_blob_ctx *ctx;
	struct cn_blob_stream *stream;
};

static struct decoder *decoder_new(void)
{
	struct decoder *d = calloc(1, sizeof(*d));
	if (d && (cn_blob_ctx_new(&d->ctx) < 0 || cn_blob_stream_new(&d->stream) < 0))
		cn_error_clear();
	return d;
}

static void decoder_free(struct decoder *d)
{
	if (!d)
		return;
	cn_blob_ctx_free(d->ctx);
	cn_blob_stream_free(d->stream);
	free(d);
}

/* A chunk read through cn_source_ops.read_chunk goes straight into the
 * slot's raw buffer through the decoder's stream. */
struct slot_sink {
	struct cn_blob_stream *stream;
	struct cn_buf *raw;
	const struct cn_crypt_config *crypt;
	const uint8_t *digest;
	atomic_int *stopping;
};

static void sink_restart(void *ctx)
{
	struct slot_sink *k = ctx;
	cn_blob_stream_begin(k->stream, k->raw, k->crypt, k->digest);
}

static int sink_write(void *ctx, const uint8_t *data, size_t n)
{
	return cn_blob_stream_write(((struct slot_sink *)ctx)->stream, data, n);
}

/* A reader that stops wants no read-ahead still waiting on the network: a
 * stalled server would hold cn_chunk_reader_free until its timeout. */
static int sink_cancelled(void *ctx)
{
	return atomic_load(((struct slot_sink *)ctx)->stopping);
}

/* Reads the chunk with digest into s and decodes it (s->bytes, s->len). */
static int fetch(struct cn_chunk_reader *r, struct slot *s, struct decoder *d,
		 const uint8_t digest[32])
{
	int rc;
	if (r->src->ops->read_chunk && d && d->stream) {
		/* decrypted and checked as it arrives, without a copy */
		struct slot_sink k = {d->stream, &s->raw, r->crypt, digest, &r->stopping};
		struct cn_chunk_sink sink = {.restart = sink_restart, .write = sink_write,
					     .cancelled = sink_cancelled, .ctx = &k};
		sink_restart(&k);
		rc = r->src->ops->read_chunk(r->src, digest, &sink);
		if (rc == 0) {
			atomic_fetch_add(&r->bytes_fetched, cn_blob_stream_size(d->stream));
			rc = cn_blob_stream_finish(d->stream, d->ctx, &s->data, &s->bytes, &s->len);
		}
		return rc;
	}
	rc = r->src->ops->get_chunk(r->src, digest, &s->raw);
	if (rc == 0) {
		atomic_fetch_add(&r->bytes_fetched, s->raw.len);
		/* (raw is the slot's: an encrypted blob is decrypted within it) */
		rc = cn_blob_decode_inplace(d ? d->ctx : NULL, s->raw.data, s->raw.len, r->crypt,
					    digest, &s->data, &s->bytes, &s->len);
	}
	return rc;
}

/* The pages of b (a buffer of slot_buf_init) that n bytes from its start
 * lie in, in whole huge pages, at most all of b. */
static size_t pages_of(const struct cn_buf *b, size_t n)
{
	size_t pages = cn_huge_round_up(n);
	return pages < b->cap ? pages : b->cap;
}

/* The bytes of raw that chunk i's blob will use (about its plain size:
 * compressed ones are smaller), in whole huge pages, at most raw's
 * capacity. */
static size_t blob_pages(const struct cn_chunk_reader *r, const struct slot *s, size_t i)
{
	uint64_t start, end;
	cn_index_entry(r->idx, i, &start, &end, NULL);
	uint64_t want = end - start + CN_BLOB_ENC_HEADER_SIZE;
	return pages_of(&s->raw, want < s->raw.cap ? (size_t)want : s->raw.cap);
}

/* Fetches and verifies chunk s->chunk into s, then publishes the result.
 * Called without the lock by whoever set s LOADING. */
static void load(struct cn_chunk_reader *r, struct slot *s, struct decoder *d)
{
	uint8_t digest[32];
	uint64_t start, end;
	cn_index_entry(r->idx, s->chunk, &start, &end, digest);
	s->raw.len = 0;
	s->data.len = 0;
	s->len = 0;
	size_t want = blob_pages(r, s, s->chunk);
#ifdef MADV_POPULATE_WRITE
	/* a blob is about as large as its plain chunk (compressed ones are
	 * smaller): the pages beyond what the slot keeps resident are mapped
	 * in one call rather than one fault each (only a hint) */
	if (s->raw_own && want > SLOT_KEEP_CAP)
		(void)madvise(s->raw.data + SLOT_KEEP_CAP, want - SLOT_KEEP_CAP,
			      MADV_POPULATE_WRITE);
#endif
	int rc = fetch(r, s, d, digest);
	size_t used = pages_of(&s->raw, s->raw.len);
	s->mapped = used > want ? used : want;
	used = pages_of(&s->data, s->data.len);
	if (used > s->data_mapped)
		s->data_mapped = used;
	if (rc == -ENOENT) /* the index needs it: the snapshot is damaged */
		rc = cn_error_set(-CN_E_MISSING, "missing from the store");
	if (rc == 0 && s->len != end - start)
		rc = cn_error_set(-CN_E_FORMAT, "decoded to %zu bytes, the index says %llu",
				  s->len, (unsigned long long)(end - start));
	char msg[sizeof(s->msg)];
	if (rc < 0) {
		char hex[65];
		cn_hex_encode(digest, 32, hex);
		snprintf(msg, sizeof(msg), "chunk %zu (%s) of %s: %s", s->chunk, hex,
			 r->src->name, *cn_error_message() ? cn_error_message() : cn_strerror(rc));
	} else {
		atomic_fetch_add(&r->fetched, 1);
		atomic_fetch_add(&r->bytes_decoded, s->len);
	}
	pthread_mutex_lock(&r->lock);
	s->state = rc < 0 ? SLOT_ERROR : SLOT_READY;
	s->err = rc;
	if (rc < 0)
		memcpy(s->msg, msg, sizeof(msg));
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void *worker_main(void *ctx, size_t i)
{
	struct cn_chunk_reader *r = ctx;
	struct decoder *d = decoder_new();
	(void)i;
	void *item;
	while (cn_workqueue_pop(r->q, &item))
		load(r, item, d);
	decoder_free(d);
	return NULL;
}

/* Gives b an empty buffer of cap bytes at a huge-page boundary, marked
 * for huge pages after its first; 1, or 0 when out of memory (b is left
 * empty: the slot's user then grows it as it needs). */
static int slot_buf_init(struct cn_buf *b, size_t cap)
{
	void *m;
	if (posix_memalign(&m, CN_HUGE_PAGE, cap) != 0)
		return 0;
	b->data = m;
	b->len = 0;
	b->cap = cap;
	cn_mark_huge_tail(m, cap);
	return 1;
}

static void slot_raw_init(struct slot *s)
{
	s->raw_own = slot_buf_init(&s->raw, RAW_CAP);
	s->mapped = 0;
}

static void slot_data_init(struct slot *s)
{
	s->data_own = slot_buf_init(&s->data, DATA_CAP);
	s->data_mapped = 0;
}

int cn_chunk_reader_new(struct cn_source *src, const struct cn_index *idx,
			const struct cn_crypt_config *crypt, size_t threads,
			struct cn_chunk_reader **out)
{
	/* The workers wait on the disk (direct reads) or the network as much
	 * as they compute: twice the CPUs keep both busy. */
	if (!threads)
		threads = 2 * cn_cpu_count();
	struct cn_chunk_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return cn_error_set(-ENOMEM, "out of memory for a chunk reader");
	r->src = src;
	r->idx = idx;
	r->crypt = crypt;
	/* Read-ahead keeps every worker fetching one chunk (window =
	 * threads); as many slots again hold the chunk the caller reads and
	 * what its consumers still pin (restore_writers() in cn_restore.c
	 * gives them that half), plus one. Each slot holds about one average
	 * chunk (SLOT_KEEP_CAP): 2 x threads + 1 of them in all. */
	r->window = threads;
	r->nslots = 2 * r->window + 1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	int rc = -ENOMEM;
	r->slots = calloc(r->nslots, sizeof(*r->slots));
	if (!r->slots) {
		cn_error_set(rc, "out of memory for a chunk cache");
		goto fail;
	}
	for (size_t i = 0; i < r->nslots; i++) {
		slot_raw_init(&r->slots[i]);
		slot_data_init(&r->slots[i]);
	}
	if (!(r->dec = decoder_new())) {
		cn_error_set(rc, "out of memory for a chunk decoder");
		goto fail;
	}
	if ((rc = cn_workqueue_new(r->nslots, &r->q)) < 0)
		goto fail;
	rc = cn_workers_start(threads, worker_main, r, &r->workers);
	if (rc < 0)
		goto fail;
	*out = r;
	return 0;
fail:
	cn_chunk_reader_free(r);
	return rc;
}

static struct slot *find_slot(struct cn_chunk_reader *r, size_t chunk)
{
	for (size_t i = 0; i < r->nslots; i++)
		if (r->slots[i].state != SLOT_EMPTY && r->slots[i].chunk == chunk)
			return &r->slots[i];
	return NULL;
}

/* The least recently used slot that may be replaced, claimed as LOADING
 * for chunk; NULL when every slot is loading, pinned or holds a chunk in
 * [keep_from, keep_to] (read-ahead the reader has not reached: taking it
 * would fetch it twice; an empty range keeps nothing). Under the lock. */
static struct slot *claim_slot(struct cn_chunk_reader *r, size_t chunk, size_t keep_from,
			       size_t keep_to)
{
	struct slot *best = NULL;
	for (size_t i = 0; i < r->nslots; i++) {
		struct slot *s = &r->slots[i];
		if (s->state == SLOT_LOADING || s->pins ||
		    (s->state == SLOT_READY && s->chunk >= keep_from && s->chunk <= keep_to))
			continue;
		if (!best || s->state == SLOT_EMPTY ||
		    (best->state != SLOT_EMPTY && s->stamp < best->stamp))
			best = s;
		if (s->state == SLOT_EMPTY)
			break;
	}
	if (best) {
		/* an oversized blob (grown past the standard buffer) or an
		 * occasional large decoded chunk must not keep the slot large */
		if (!best->raw_own || best->raw.cap > RAW_CAP) {
			cn_buf_free(&best->raw);
			slot_raw_init(best);
		} else {
			/* what the previous blob used beyond SLOT_KEEP_CAP goes
			 * back, except the pages the new chunk will use again:
			 * giving them back and mapping them again at once cost
			 * a zeroed page each (and on a VM that returns free
			 * memory to its host, a host fault each) */
			size_t keep = blob_pages(r, best, chunk);
			if (keep < SLOT_KEEP_CAP)
				keep = SLOT_KEEP_CAP;
			if (best->mapped > keep) {
				madvise(best->raw.data + keep, best->mapped - keep, MADV_DONTNEED);
				best->mapped = keep;
			}
		}
		if (!best->data_own || best->data.cap > DATA_CAP) {
			cn_buf_free(&best->data);
			slot_data_init(best);
		} else if (best->data_mapped > SLOT_KEEP_CAP) {
			madvise(best->data.data + SLOT_KEEP_CAP, best->data_mapped - SLOT_KEEP_CAP,
				MADV_DONTNEED);
			best->data_mapped = SLOT_KEEP_CAP;
		}
		best->chunk = chunk;
		best->state = SLOT_LOADING;
		best->stamp = ++r->clock;
	}
	return best;
}

/* Schedules read-ahead after chunk on the workers. Under the lock. */
static void prefetch(struct cn_chunk_reader *r, size_t chunk)
{
	size_t count = cn_index_count(r->idx);
	for (size_t k = chunk + 1; k < count && k <= chunk + r->window; k++) {
		struct slot *s = find_slot(r, k);
		if (s) {
			/* still ahead of the reader: newer than anything consumed */
			s->stamp = ++r->clock;
			continue;
		}
		s = claim_slot(r, k, chunk + 1, k);
		if (!s)
			return;
		if (cn_workqueue_push(r->q, s) < 0) { /* only when stopping */
			s->state = SLOT_EMPTY;
			return;
		}
	}
}

/* Finds chunk i in the cache or loads it (in this thread when no worker
 * has it), pinned: on success *slot is READY and the caller unpins it
 * with unpin(). Also drives read-ahead. 0 or the chunk's error. */
static int acquire(struct cn_chunk_reader *r, size_t i, struct slot **slot)
{
	pthread_mutex_lock(&r->lock);
	int demand = 0;
	struct slot *s = find_slot(r, i);
	while (!s) {
		s = claim_slot(r, i, 1, 0);
		if (s)
			demand = 1;
		else
			pthread_cond_wait(&r->cond, &r->lock);
	}
	s->pins++;
	s->stamp = ++r->clock;
	if (r->have_last && i == r->last + 1)
		r->streak++;
	else if (!r->have_last)
		r->streak = r->sequential ? 2 : 0;
	else if (i != r->last)
		r->streak = 0;
	r->last = i;
	r->have_last = 1;
	if (r->streak >= 2)
		prefetch(r, i);
	pthread_mutex_unlock(&r->lock);

	if (demand)
		load(r, s, r->dec);

	pthread_mutex_lock(&r->lock);
	while (s->state == SLOT_LOADING)
		pthread_cond_wait(&r->cond, &r->lock);
	if (s->state == SLOT_ERROR) {
		int err = s->err;
		char msg[sizeof(s->msg)];
		memcpy(msg, s->msg, sizeof(msg));
		s->pins--;
		s->state = SLOT_EMPTY; /* a later read tries again */
		pthread_mutex_unlock(&r->lock);
		return cn_error_set(err, "%s", msg);
	}
	pthread_mutex_unlock(&r->lock);
	*slot = s;
	return 0;
}

static void unpin(struct cn_chunk_reader *r, struct slot *s)
{
	pthread_mutex_lock(&r->lock);
	/* a view released on another thread may free the slot acquire waits for */
	if (--s->pins == 0)
		pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* The chunk holding stream offset off: its index and bounds. */
static int locate(struct cn_chunk_reader *r, uint64_t off, size_t *i, uint64_t *start,
		  uint64_t *end)
{
	if (cn_index_find(r->idx, off, i) < 0)
		return cn_error_set(-ERANGE, "read at %llu beyond the end of the stream (%llu)",
				    (unsigned long long)off,
				    (unsigned long long)cn_index_size(r->idx));
	cn_index_entry(r->idx, *i, start, end, NULL);
	return 0;
}

int cn_chunk_reader_read_at(void *reader, uint64_t off, void *buf, size_t len)
{
	struct cn_chunk_reader *r = reader;
	uint8_t *out = buf;
	while (len > 0) {
		size_t i;
		uint64_t start, end;
		struct slot *s;
		int rc = locate(r, off, &i, &start, &end);
		if (rc < 0 || (rc = acquire(r, i, &s)) < 0)
			return rc;
		size_t n = end - off < len ? (size_t)(end - off) : len;
		memcpy(out, s->bytes + (off - start), n);
		unpin(r, s);
		out += n;
		off += n;
		len -= n;
	}
	return 0;
}

int cn_chunk_reader_view_at(void *reader, uint64_t off, size_t len, const uint8_t **data,
			    size_t *got, void **token)
{
	struct cn_chunk_reader *r = reader;
	size_t i;
	uint64_t start, end;
	struct slot *s;
	if (len == 0)
		return cn_error_set(-EINVAL, "empty view");
	int rc = locate(r, off, &i, &start, &end);
	if (rc < 0 || (rc = acquire(r, i, &s)) < 0)
		return rc;
	*data = s->bytes + (off - start);
	*got = end - off < len ? (size_t)(end - off) : len;
	*token = s;
	return 0;
}

void cn_chunk_reader_release(void *reader, void *token)
{
	if (token)
		unpin(reader, token);
}

void cn_chunk_reader_sequential(struct cn_chunk_reader *r)
{
	pthread_mutex_lock(&r->lock);
	r->sequential = 1;
	pthread_mutex_unlock(&r->lock);
}

size_t cn_chunk_reader_cache_slots(const struct cn_chunk_reader *r)
{
	return r->nslots;
}

void cn_chunk_reader_stats(struct cn_chunk_reader *r, struct cn_chunk_reader_stats *st)
{
	st->chunks_fetched = atomic_load(&r->fetched);
	st->bytes_fetched = atomic_load(&r->bytes_fetched);
	st->bytes_decoded = atomic_load(&r->bytes_decoded);
}

void cn_chunk_reader_free(struct cn_chunk_reader *r)
{
	if (!r)
		return;
	if (r->q) {
		/* end the reads in flight, drop queued read-ahead, then stop */
		atomic_store(&r->stopping, 1);
		cn_workqueue_cancel(r->q);
		cn_workers_join(r->workers);
		cn_workqueue_free(r->q);
	}
	for (size_t i = 0; r->slots && i < r->nslots; i++) {
		cn_buf_free(&r->slots[i].raw);
		cn_buf_free(&r->slots[i].data);
	}
	free(r->slots);
	decoder_free(r->dec);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
}
