/* S3 backup target: the datastore layout as objects, snapshot published by
 * its manifest. */
#include "net/cn_s3_target.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_digest_set.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "net/cn_s3_cache.h"
#include "net/cn_s3_gcstate.h"
#include "net/cn_s3_layout.h"
#include "store/cn_index.h"

#define MAX_UPLOADERS 16
#define GC_WAIT 3600 /* seconds a published backup waits for a running GC */


/* KNOWN_STORED: of the previous snapshot (add_known), not used yet;
 * KNOWN_REUSED: referenced by this snapshot without an upload by it (in
 * t->reused); KNOWN_UPLOADED: stored by this backup. */
enum { KNOWN_STORED = 1, KNOWN_QUEUED = 2, KNOWN_REUSED = 3, KNOWN_UPLOADED = 4 };

struct digests {
	uint8_t (*v)[32];
	size_t n, cap;
};

struct s3_index {
	char name[128];
	struct cn_index_writer *w; /* NULL once closed */
};

struct s3_target {
	struct cn_target base;
	struct cn_s3 *s3;
	char owner[128];
	struct cn_snapshot_id id, prev;
	int has_prev, begun;
	char marker[700];
	int marker_put;

	pthread_mutex_t mu;      /* guards everything below */
	pthread_cond_t cv_work;  /* queue got a chunk, or stopping */
	pthread_cond_t cv_idle;  /* an upload finished */
	struct cn_chunk **queue; /* hand-over to idle uploaders: qlen <= idle */
	size_t qhead, qlen, qcap;
	size_t busy;             /* background uploads running */
	size_t idle;             /* upload threads waiting for a chunk */
	int stopping;
	pthread_t workers[MAX_UPLOADERS];
	int nworkers, nuploaders;
	struct cn_digest_set *known;
	struct digests reused;   /* chunks this snapshot references, not uploaded by it */
	struct digests uploaded; /* chunks this backup stored (for the cache) */
	struct cn_s3_cache *cache; /* NULL: none (disabled, failed, or a GC runs) */
	int err;                 /* first asynchronous error */
	char errmsg[1024];
	int cancelled;           /* atomic: t_cancel sets it without mu */
	struct cn_s3_target_stats st;

	/* engine thread only */
	struct s3_index *idx;
	size_t nidx;
	char (*written)[128];    /* snapshot objects stored so far (for abort) */
	size_t nwritten;
	struct cn_buf manifest;
	int have_manifest, manifest_sent;
	struct cn_s3_gc_state gc0; /* the bucket's GC state when the backup began */
	int no_cache;
	char cache_dir[1024];      /* "" = the default */
};

static struct s3_target *T(struct cn_target *t)
{
	return (struct s3_target *)t;
}

/* ---- reused chunks -------------------------------------------------------- */

static int digests_add(struct digests *l, const uint8_t d[32])
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		void *nv = realloc(l->v, cap * sizeof(*l->v));
		if (!nv)
			return cn_error_set(-ENOMEM, "out of memory for chunk digests");
		l->v = nv;
		l->cap = cap;
	}
	memcpy(l->v[l->n++], d, 32);
	return 0;
}

/* This snapshot references d, which it did not upload (mu held): recorded
 * once, for the check after publishing. */
static int note_reused(struct s3_target *t, const uint8_t d[32], uint8_t v)
{
	if (v == KNOWN_REUSED || v == KNOWN_UPLOADED || v == KNOWN_QUEUED)
		return 0;
	cn_digest_set_update(t->known, d, KNOWN_REUSED);
	return digests_add(&t->reused, d);
}

/* ---- upload threads ------------------------------------------------------ */

static int upload_chunk(struct s3_target *t, struct cn_chunk *c, int *present)
{
	char key[96];
	cn_s3_chunk_key(c->digest, key);
	int r = cn_s3_head(t->s3, key, NULL);
	*present = r == 0;
	if (r != -ENOENT)
		return r;
	cn_error_clear();
	return cn_s3_put(t->s3, key, c->data, c->len);
}

/* Records how the upload of c ended (mu held): r as upload_chunk returned
 * it, present whether the chunk was there already. The first error is
 * kept for pending_error. */
static void upload_done(struct s3_target *t, struct cn_chunk *c, int r, int present)
{
	if (r < 0 && !t->err) {
		t->err = r;
		snprintf(t->errmsg, sizeof(t->errmsg), "%s", cn_error_message());
		return;
	}
	if (r < 0)
		return;
	if (present) {
		t->st.chunks_present++;
		cn_digest_set_update(t->known, c->digest, KNOWN_STORED);
		r = note_reused(t, c->digest, KNOWN_STORED);
	} else {
		t->st.chunks_uploaded++;
		t->st.bytes_uploaded += c->len;
		cn_digest_set_update(t->known, c->digest, KNOWN_UPLOADED);
		r = t->cache ? digests_add(&t->uploaded, c->digest) : 0;
	}
	if (r < 0 && !t->err) {
		t->err = r;
		snprintf(t->errmsg, sizeof(t->errmsg), "%s", cn_error_message());
	}
}

/* Whether t_cancel was called (from any thread, with or without mu). */
static int is_cancelled(const struct s3_target *t)
{
	return __atomic_load_n(&t->cancelled, __ATOMIC_SEQ_CST);
}

/* A background upload thread: takes a chunk that put_chunk handed to it
 * (only ever one per idle thread, see t_put_chunk), uploads it from the
 * chunk's own buffer and drops its reference when the PUT is done. */
static void *uploader(void *arg)
{
	struct s3_target *t = arg;
	pthread_mutex_lock(&t->mu);
	for (;;) {
		t->idle++;
		while (t->qlen == 0 && !t->stopping)
			pthread_cond_wait(&t->cv_work, &t->mu);
		t->idle--;
		if (t->qlen == 0)
			break;
		struct cn_chunk *c = t->queue[t->qhead];
		t->qhead = (t->qhead + 1) % t->qcap;
		t->qlen--;
		t->busy++;
		int skip = t->err != 0 || is_cancelled(t);
		pthread_mutex_unlock(&t->mu);
		int present = 0, r = skip ? 0 : upload_chunk(t, c, &present);
		pthread_mutex_lock(&t->mu);
		t->busy--;
		if (!skip)
			upload_done(t, c, r, present);
		pthread_cond_broadcast(&t->cv_idle);
		pthread_mutex_unlock(&t->mu);
		cn_chunk_unref(c);
		pthread_mutex_lock(&t->mu);
	}
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

/* Reports the first upload error in this thread (mu held). */
static int pending_error(struct s3_target *t)
{
	if (t->err)
		return cn_error_set(t->err, "%s", t->errmsg);
	if (is_cancelled(t))
		return cn_error_set(-ECANCELED, "%s: cancelled", t->base.name);
	return 0;
}

static int start_uploaders(struct s3_target *t)
{
	t->stopping = 0;
	while (t->nworkers < t->nuploaders - 1) { /* the sender uploads too */
		int e = pthread_create(&t->workers[t->nworkers], NULL, uploader, t);
		if (e)
			return cn_error_set(-e, "%s: cannot start an upload thread", t->base.name);
		t->nworkers++;
	}
	return 0;
}

/* Ends the upload threads after the queue is done (drained or skipped). */
static void stop_uploaders(struct s3_target *t)
{
	pthread_mutex_lock(&t->mu);
	t->stopping = 1;
	pthread_cond_broadcast(&t->cv_work);
	pthread_mutex_unlock(&t->mu);
	for (int i = 0; i < t->nworkers; i++)
		pthread_join(t->workers[i], NULL);
	t->nworkers = 0;
}

/* Waits until every queued chunk is stored; the first error otherwise. */
static int drain(struct s3_target *t)
{
	pthread_mutex_lock(&t->mu);
	while ((t->qlen > 0 || t->busy > 0) && !is_cancelled(t))
		pthread_cond_wait(&t->cv_idle, &t->mu);
	int r = pending_error(t);
	pthread_mutex_unlock(&t->mu);
	return r;
}

/* ---- snapshot objects ---------------------------------------------------- */

static int put_snapshot_object(struct s3_target *t, const char *name, const void *data,
			       size_t len)
{
	char key[800];
	int r = cn_s3_snapshot_key(&t->id, name, key, sizeof(key));
	if (r < 0)
		return r;
	if (strlen(name) >= sizeof(t->written[0]))
		return cn_error_set(-ENAMETOOLONG, "file name too long: %s", name);
	char(*nw)[128] = realloc(t->written, (t->nwritten + 1) * sizeof(*nw));
	if (!nw)
		return cn_error_set(-ENOMEM, "out of memory");
	t->written = nw;
	/* recorded before the PUT: a PUT that fails may still have landed */
	snprintf(nw[t->nwritten++], sizeof(nw[0]), "%s", name);
	return cn_s3_put(t->s3, key, data, len);
}

static int find_previous(struct s3_target *t, struct cn_buf *prev_manifest, int64_t *prev_time)
{
	struct cn_snapshot_info *v = NULL;
	size_t n = 0;
	int r = cn_s3_list_snapshots(t->s3, &t->id, &v, &n);
	if (r < 0)
		return r;
	for (size_t i = n; i-- > 0;) {
		if (v[i].id.time >= t->id.time) {
			char ts[32];
			cn_snapshot_format_time(v[i].id.time, ts, sizeof(ts));
			r = cn_error_set(-EEXIST, "%s: backup time is not newer than the last "
					 "snapshot %s of %s/%s", t->base.name, ts, t->id.type,
					 t->id.id);
			break;
		}
		char key[800];
		if ((r = cn_s3_snapshot_key(&v[i].id, CN_S3_MANIFEST, key, sizeof(key))) < 0)
			break;
		prev_manifest->len = 0;
		r = cn_s3_get(t->s3, key, prev_manifest);
		if (r == -ENOENT) { /* pruned meanwhile: take an older one */
			cn_error_clear();
			r = 0;
			continue;
		}
		if (r == 0) {
			t->prev = v[i].id;
			t->has_prev = 1;
			*prev_time = v[i].id.time;
		}
		break;
	}
	free(v);
	return r;
}

/* The chunk-listing cache, unless disabled or a GC runs (its deletions
 * are not over yet). A cache that cannot be opened costs only speed. */
static void open_cache(struct s3_target *t)
{
	if (t->no_cache || cn_s3_gc_state_active(&t->gc0, (int64_t)time(NULL)))
		return;
	int rebuilt = 0;
	if (cn_s3_cache_open(t->s3, t->cache_dir[0] ? t->cache_dir : NULL, &t->gc0, &t->cache,
			     &rebuilt) < 0) {
		cn_log(CN_LOG_WARNING, "%s: no chunk cache: %s", t->base.name, cn_error_message());
		cn_error_clear();
		t->cache = NULL;
		return;
	}
	if (rebuilt)
		cn_log(CN_LOG_INFO, "%s: chunk cache %s rebuilt from a listing", t->base.name,
		       cn_s3_cache_path(t->cache));
}

/* One target may write several snapshots in turn (cairn sync copies the
 * snapshots of a selection through one target): what the last one left
 * (its error after an abort, its indexes and manifest, the chunks it
 * reused or uploaded, the cache it opened) is dropped, so that each
 * snapshot starts as the first did (also after a begin that failed). The
 * upload threads are idle: finish drained them, abort stopped them. */
static int reset_snapshot(struct s3_target *t)
{
	for (size_t i = 0; i < t->nidx; i++)
		cn_index_writer_free(t->idx[i].w);
	t->nidx = 0;
	t->nwritten = 0;
	t->manifest.len = 0;
	t->have_manifest = t->manifest_sent = 0;
	t->reused.n = t->uploaded.n = 0;
	cn_s3_cache_close(t->cache);
	t->cache = NULL;
	t->begun = 0;
	struct cn_digest_set *fresh = NULL;
	if (cn_digest_set_new(4096, &fresh) < 0)
		return cn_error_set(-ENOMEM, "out of memory");
	pthread_mutex_lock(&t->mu);
	cn_digest_set_free(t->known);
	t->known = fresh;
	t->err = 0;
	t->errmsg[0] = '\0';
	pthread_mutex_unlock(&t->mu);
	return 0;
}

static int t_begin(struct cn_target *tt, const struct cn_snapshot_id *id,
		   struct cn_buf *prev_manifest, int64_t *prev_time)
{
	struct s3_target *t = T(tt);
	*prev_time = -1;
	if (reset_snapshot(t) < 0)
		return -ENOMEM;
	t->id = *id;
	t->has_prev = 0;
	int r = cn_s3_check_bucket(t->s3);
	if (r == 0)
		r = find_previous(t, prev_manifest, prev_time);
	if (r < 0)
		return cn_error_prefix(r, "%s", tt->name);
	char key[800], group[700];
	if (cn_snapshot_group_path(id, group, sizeof(group)) < 0)
		return cn_error_set(-ENAMETOOLONG, "group path too long");
	snprintf(key, sizeof(key), "%s/owner", group);
	r = cn_s3_head(t->s3, key, NULL);
	if (r == -ENOENT) {
		char line[160];
		int l = snprintf(line, sizeof(line), "%s\n", t->owner);
		r = cn_s3_put(t->s3, key, line, (size_t)l);
	}
	if (r == 0 && (r = cn_s3_writer_key(id, t->marker, sizeof(t->marker))) == 0) {
		char host[256] = "", json[512];
		gethostname(host, sizeof(host) - 1);
		int l = snprintf(json, sizeof(json),
				 "{\"started\":%lld,\"backup-time\":%lld,\"host\":\"%s\",\"pid\":%d}\n",
				 (long long)time(NULL), (long long)id->time, host, (int)getpid());
		t->marker_put = 1;
		r = cn_s3_put(t->s3, t->marker, json, (size_t)l);
	}
	/* after the marker: a GC that starts later sees the marker (see
	 * net/cn_s3_gcstate.h) */
	if (r == 0)
		r = cn_s3_gc_state_get(t->s3, &t->gc0);
	if (r < 0)
		return cn_error_prefix(r, "%s", tt->name);
	open_cache(t);
	t->begun = 1;
	pthread_mutex_lock(&t->mu);
	r = start_uploaders(t);
	pthread_mutex_unlock(&t->mu);
	return r;
}

static int t_load_previous_index(struct cn_target *tt, const char *name, struct cn_buf *out)
{
	struct s3_target *t = T(tt);
	if (!t->has_prev)
		return -ENOENT;
	char key[800];
	int r = cn_s3_snapshot_key(&t->prev, name, key, sizeof(key));
	if (r == 0)
		r = cn_s3_get(t->s3, key, out);
	return r;
}

static int t_add_known(struct cn_target *tt, const uint8_t (*d)[32], size_t n)
{
	struct s3_target *t = T(tt);
	int r = 0;
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < n && r >= 0; i++) {
		uint8_t v;
		if (cn_digest_set_get(t->known, d[i], &v) == 1)
			continue;
		r = cn_digest_set_add(t->known, d[i], KNOWN_STORED);
	}
	pthread_mutex_unlock(&t->mu);
	return r < 0 ? cn_error_set(-ENOMEM, "out of memory for known chunks") : 0;
}

static int t_has_chunk(struct cn_target *tt, const uint8_t digest[32])
{
	struct s3_target *t = T(tt);
	uint8_t v = 0;
	pthread_mutex_lock(&t->mu);
	int r = pending_error(t);
	if (r == 0 && cn_digest_set_get(t->known, digest, &v) == 1) {
		/* a queued chunk counts: finish waits for it */
		r = note_reused(t, digest, v);
		r = r < 0 ? r : 1;
	} else if (r == 0 && t->cache && cn_s3_cache_has(t->cache, digest)) {
		t->st.chunks_cached++;
		if (cn_digest_set_add(t->known, digest, KNOWN_STORED) < 0)
			r = cn_error_set(-ENOMEM, "out of memory for known chunks");
		else if ((r = note_reused(t, digest, KNOWN_STORED)) == 0)
			r = 1;
	}
	pthread_mutex_unlock(&t->mu);
	return r;
}

/* Uploads c: handed to an idle upload thread when there is one, else in
 * the calling thread (the target's sender), which holds the chunk anyway
 * until the call returns. So the target never holds a chunk of its own
 * beyond those being uploaded, and never more than nuploaders - 1 besides
 * the caller's (see cn_s3_target_new). */
static int t_put_chunk(struct cn_target *tt, struct cn_chunk *c)
{
	struct s3_target *t = T(tt);
	uint8_t v;
	pthread_mutex_lock(&t->mu);
	int r = pending_error(t);
	if (r == 0 && cn_digest_set_get(t->known, c->digest, &v) == 1) {
		r = note_reused(t, c->digest, v);
		pthread_mutex_unlock(&t->mu);
		return r; /* stored or on its way */
	}
	if (r == 0 && cn_digest_set_add(t->known, c->digest, KNOWN_QUEUED) < 0)
		r = cn_error_set(-ENOMEM, "out of memory for known chunks");
	if (r == 0 && t->qlen < t->idle) {
		t->queue[(t->qhead + t->qlen) % t->qcap] = cn_chunk_ref(c);
		t->qlen++;
		pthread_cond_signal(&t->cv_work);
		pthread_mutex_unlock(&t->mu);
		return 0;
	}
	pthread_mutex_unlock(&t->mu);
	if (r < 0)
		return r;
	int present = 0;
	r = upload_chunk(t, c, &present);
	pthread_mutex_lock(&t->mu);
	upload_done(t, c, r, present);
	r = pending_error(t);
	pthread_mutex_unlock(&t->mu);
	return r;
}

/* ---- indexes ------------------------------------------------------------- */

static int t_index_open(struct cn_target *tt, const char *name, enum cn_index_kind kind,
			uint64_t size, uint32_t chunk_size)
{
	struct s3_target *t = T(tt);
	if (!t->begun)
		return cn_error_set(-EINVAL, "index %s opened outside a snapshot", name);
	if (strlen(name) >= sizeof(t->idx[0].name))
		return cn_error_set(-ENAMETOOLONG, "index name too long: %s", name);
	struct s3_index *ni = realloc(t->idx, (t->nidx + 1) * sizeof(*ni));
	if (!ni)
		return cn_error_set(-ENOMEM, "out of memory for index %s", name);
	t->idx = ni;
	struct s3_index *x = &ni[t->nidx];
	memset(x, 0, sizeof(*x));
	snprintf(x->name, sizeof(x->name), "%s", name);
	int r = cn_index_writer_new(kind, NULL, (int64_t)time(NULL), size, chunk_size, &x->w);
	if (r < 0)
		return r;
	return (int)t->nidx++;
}

static struct s3_index *get_index(struct s3_target *t, int h)
{
	if (h < 0 || (size_t)h >= t->nidx || !t->idx[h].w) {
		cn_error_set(-EINVAL, "bad index handle %d", h);
		return NULL;
	}
	return &t->idx[h];
}

static int t_index_append(struct cn_target *tt, int h, const struct cn_index_entry *e, size_t n)
{
	struct s3_index *x = get_index(T(tt), h);
	if (!x)
		return -EINVAL;
	return cn_index_writer_append(x->w, e, n);
}

static int t_index_close(struct cn_target *tt, int h, uint64_t count, uint64_t size,
			 const uint8_t csum[32])
{
	struct s3_target *t = T(tt);
	struct s3_index *x = get_index(t, h);
	if (!x)
		return -EINVAL;
	struct cn_index_writer *w = x->w;
	x->w = NULL;
	int r = 0;
	if (count != cn_index_writer_count(w) || size != cn_index_writer_size(w))
		r = cn_error_set(-CN_E_CHECKSUM,
				 "index %s: closed with %llu chunks/%llu bytes, got %zu/%llu", x->name,
				 (unsigned long long)count, (unsigned long long)size,
				 cn_index_writer_count(w), (unsigned long long)cn_index_writer_size(w));
	struct cn_buf file = {0};
	uint8_t mine[32];
	if (r == 0)
		r = cn_index_writer_finish(w, &file, mine);
	cn_index_writer_free(w);
	if (r == 0 && memcmp(mine, csum, 32) != 0)
		r = cn_error_set(-CN_E_CHECKSUM, "index %s: checksum differs from the engine's",
				 x->name);
	if (r == 0)
		r = put_snapshot_object(t, x->name, file.data, file.len);
	cn_buf_free(&file);
	return r;
}

/* ---- blobs, finish, abort ------------------------------------------------ */

static int t_put_blob(struct cn_target *tt, const char *name, const uint8_t *data, size_t len)
{
	struct s3_target *t = T(tt);
	if (!t->begun)
		return cn_error_set(-EINVAL, "blob %s stored outside a snapshot", name);
	if (strcmp(name, CN_S3_MANIFEST) == 0) {
		t->manifest.len = 0;
		if (cn_buf_append(&t->manifest, data, len) < 0)
			return cn_error_set(-ENOMEM, "out of memory for the manifest");
		t->have_manifest = 1;
		return 0;
	}
	return put_snapshot_object(t, name, data, len);
}

struct head_job {
	struct s3_target *t;
	size_t next, missing_at;
	int err;
	pthread_mutex_t mu;
};

static void *head_worker(void *arg)
{
	struct head_job *j = arg;
	char key[96];
	for (;;) {
		pthread_mutex_lock(&j->mu);
		size_t i = j->next++;
		int stop = j->err || i >= j->t->reused.n;
		pthread_mutex_unlock(&j->mu);
		if (stop)
			break;
		cn_s3_chunk_key(j->t->reused.v[i], key);
		int r = cn_s3_head(j->t->s3, key, NULL);
		if (r < 0) {
			pthread_mutex_lock(&j->mu);
			if (!j->err) {
				j->err = r;
				j->missing_at = i;
				snprintf(j->t->errmsg, sizeof(j->t->errmsg), "%s", cn_error_message());
			}
			pthread_mutex_unlock(&j->mu);
		}
	}
	return NULL;
}

/* After the manifest is written: if a GC may have run since the backup
 * began (another generation, or one running then or now), waits until no
 * GC runs and checks with HEAD that every chunk the snapshot reuses
 * without having uploaded it is still there. A GC that starts after the
 * manifest was written marks its chunks. 0, or <0 with the reason in
 * t->errmsg (the snapshot must then be withdrawn). */
static int check_reused(struct s3_target *t)
{
	struct cn_s3_gc_state g;
	int r = cn_s3_gc_state_get(t->s3, &g);
	int64_t now = (int64_t)time(NULL), until = now + GC_WAIT;
	if (r == 0 && !strcmp(g.generation, t->gc0.generation) &&
	    !cn_s3_gc_state_active(&t->gc0, now) && !cn_s3_gc_state_active(&g, now))
		return 0;
	while (r == 0 && cn_s3_gc_state_active(&g, now = (int64_t)time(NULL))) {
		if (now >= until) {
			snprintf(t->errmsg, sizeof(t->errmsg), "a garbage collection of the bucket "
				 "still runs after %d s; the snapshot is withdrawn", GC_WAIT);
			return -EBUSY;
		}
		sleep(1);
		r = cn_s3_gc_state_get(t->s3, &g);
	}
	if (r < 0) {
		snprintf(t->errmsg, sizeof(t->errmsg), "%s", cn_error_message());
		return r;
	}
	cn_log(CN_LOG_INFO, "%s: a garbage collection ran during the backup: checking %zu "
	       "reused chunks", t->base.name, t->reused.n);
	struct head_job j = {.t = t};
	pthread_mutex_init(&j.mu, NULL);
	pthread_t th[8];
	int nth = 0;
	while (nth < 8 && pthread_create(&th[nth], NULL, head_worker, &j) == 0)
		nth++;
	if (nth == 0)
		head_worker(&j);
	for (int i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&j.mu);
	if (j.err == -ENOENT) {
		char hex[65];
		cn_hex_encode(t->reused.v[j.missing_at], 32, hex);
		snprintf(t->errmsg, sizeof(t->errmsg), "chunk %s, which this backup reuses, was "
			 "removed by a garbage collection that ran meanwhile: the snapshot is "
			 "withdrawn; the next backup stores the chunk again", hex);
		return -EAGAIN; /* nothing stored is damaged: not CN_E_MISSING */
	}
	return j.err;
}

static int t_finish(struct cn_target *tt)
{
	struct s3_target *t = T(tt);
	if (!t->have_manifest)
		return cn_error_set(-EINVAL, "%s: finish without a manifest", tt->name);
	for (size_t i = 0; i < t->nidx; i++)
		if (t->idx[i].w)
			return cn_error_set(-EINVAL, "%s: index %s not closed", tt->name,
					    t->idx[i].name);
	/* every chunk any index references is stored before the manifest */
	int r = drain(t);
	if (r < 0)
		return r;
	char key[800];
	if ((r = cn_s3_snapshot_key(&t->id, CN_S3_MANIFEST, key, sizeof(key))) < 0)
		return r;
	t->manifest_sent = 1;
	r = cn_s3_put(t->s3, key, t->manifest.data, t->manifest.len);
	if (r < 0)
		return cn_error_prefix(r, "%s", tt->name);
	if ((r = check_reused(t)) < 0) {
		/* withdrawn at once (abort deletes the rest) */
		if (t->manifest_sent && cn_s3_delete(t->s3, key) == 0)
			t->manifest_sent = 0;
		if (t->cache)
			cn_s3_cache_invalidate(t->cache);
		return cn_error_set(r, "%s: %s", tt->name, t->errmsg);
	}
	t->manifest_sent = 0; /* published: abort must not take it back */
	if (t->cache && t->uploaded.n &&
	    cn_s3_cache_add(t->cache, (const uint8_t(*)[32])t->uploaded.v, t->uploaded.n) < 0) {
		cn_log(CN_LOG_WARNING, "%s: %s", tt->name, cn_error_message());
		cn_error_clear();
	}
	t->nwritten = 0;
	if (t->marker_put && cn_s3_delete(t->s3, t->marker) < 0) {
		cn_log(CN_LOG_WARNING, "%s: writer marker %s stays: %s", tt->name, t->marker,
		       cn_error_message());
		cn_error_clear();
	}
	t->marker_put = 0;
	return 0;
}

static void t_abort(struct cn_target *tt)
{
	struct s3_target *t = T(tt);
	pthread_mutex_lock(&t->mu);
	if (!t->err)
		t->err = -ECANCELED, snprintf(t->errmsg, sizeof(t->errmsg), "%s: aborted", tt->name);
	pthread_mutex_unlock(&t->mu);
	stop_uploaders(t);
	if (!t->begun || is_cancelled(t))
		return; /* leftovers have no manifest: invisible, for gc */
	char key[800];
	/* the manifest first: once it is gone nothing looks finished */
	if (t->manifest_sent && cn_s3_snapshot_key(&t->id, CN_S3_MANIFEST, key, sizeof(key)) == 0 &&
	    cn_s3_delete(t->s3, key) < 0)
		cn_log(CN_LOG_WARNING, "%s: %s", tt->name, cn_error_message());
	for (size_t i = 0; i < t->nwritten; i++)
		if (cn_s3_snapshot_key(&t->id, t->written[i], key, sizeof(key)) == 0 &&
		    cn_s3_delete(t->s3, key) < 0)
			cn_log(CN_LOG_DEBUG, "%s: %s", tt->name, cn_error_message());
	t->nwritten = 0;
	if (t->marker_put && cn_s3_delete(t->s3, t->marker) == 0)
		t->marker_put = 0;
	cn_error_clear();
}

static void t_destroy(struct cn_target *tt)
{
	struct s3_target *t = T(tt);
	stop_uploaders(t);
	for (size_t i = 0; i < t->qlen; i++)
		cn_chunk_unref(t->queue[(t->qhead + i) % t->qcap]);
	for (size_t i = 0; i < t->nidx; i++)
		cn_index_writer_free(t->idx[i].w);
	free(t->idx);
	free(t->written);
	free(t->queue);
	cn_buf_free(&t->manifest);
	cn_digest_set_free(t->known);
	free(t->reused.v);
	free(t->uploaded.v);
	cn_s3_cache_close(t->cache);
	pthread_cond_destroy(&t->cv_work);
	pthread_cond_destroy(&t->cv_idle);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

static void t_cancel(struct cn_target *tt)
{
	struct s3_target *t = T(tt);
	__atomic_store_n(&t->cancelled, 1, __ATOMIC_SEQ_CST);
	cn_s3_cancel(t->s3);
	pthread_mutex_lock(&t->mu);
	pthread_cond_broadcast(&t->cv_idle);
	pthread_mutex_unlock(&t->mu);
}

static uint64_t t_progress(struct cn_target *tt)
{
	return cn_s3_progress(T(tt)->s3);
}

static const struct cn_target_ops ops = {
	.begin = t_begin,
	.load_previous_index = t_load_previous_index,
	.add_known = t_add_known,
	.has_chunk = t_has_chunk,
	.put_chunk = t_put_chunk,
	.index_open = t_index_open,
	.index_append = t_index_append,
	.index_close = t_index_close,
	.put_blob = t_put_blob,
	.finish = t_finish,
	.abort = t_abort,
	.destroy = t_destroy,
	.cancel = t_cancel,
	.progress = t_progress,
};

int cn_s3_target_new(struct cn_s3 *s3, const struct cn_s3_target_opts *opts,
		     struct cn_target **out)
{
	struct s3_target *t = calloc(1, sizeof(*t));
	if (!t)
		return cn_error_set(-ENOMEM, "out of memory");
	t->base.ops = &ops;
	snprintf(t->base.name, sizeof(t->base.name), "%s", cn_s3_name(s3));
	t->s3 = s3;
	snprintf(t->owner, sizeof(t->owner), "%s",
		 opts && opts->owner ? opts->owner : "root@pam");
	t->no_cache = opts && opts->no_cache;
	snprintf(t->cache_dir, sizeof(t->cache_dir), "%s",
		 opts && opts->cache_dir ? opts->cache_dir : "");
	/* Uploads in flight, U: the link stays busy when, while one request
	 * is in its dead time (the HEAD's round trip, the request's headers,
	 * the server storing the object after its last byte: t_dead), the
	 * others have bytes to send, i.e. U >= 1 + ceil(t_dead / t_send) with
	 * t_send = chunk size / bandwidth. Against radosgw on loopback (4 MiB
	 * chunks, t_dead about t_send) and on a WAN link (t_send of a 4 MiB
	 * chunk at 100 Mbit/s is 0.34 s, t_dead two round trips) that is
	 * U = 2; more do not help a server that is already the bottleneck
	 * (4 uploads were no faster than 2 in bench/s3.py).
	 * Memory: every upload reads from the chunk's shared buffer (no
	 * copy) and holds it until its PUT is answered. One of the U runs in
	 * the sender's own call, on the chunk its fan-out lane holds anyway
	 * (engine/cn_fanout.h); the other U - 1 hold chunks after put_chunk
	 * returned, which the lane leaves room for (base.held) as far as it
	 * can: a lane always takes one chunk, so behind the pipeline's one
	 * chunk per target (engine/cn_pipeline.h) an S3 target holds one
	 * chunk more than a local store's, which is done with a chunk when
	 * its call returns. */
	int up = opts && opts->uploaders > 0 ? opts->uploaders : 2;
	t->nuploaders = up > MAX_UPLOADERS ? MAX_UPLOADERS : up;
	t->base.held = (unsigned)t->nuploaders - 1;
	t->qcap = (size_t)t->nuploaders; /* qlen <= idle threads < U */
	t->queue = calloc(t->qcap, sizeof(*t->queue));
	if (!t->queue || cn_digest_set_new(4096, &t->known) < 0) {
		free(t->queue);
		free(t);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv_work, NULL);
	pthread_cond_init(&t->cv_idle, NULL);
	*out = &t->base;
	return 0;
}

void cn_s3_target_stats(const struct cn_target *tt, struct cn_s3_target_stats *st)
{
	struct s3_target *t = (struct s3_target *)tt;
	pthread_mutex_lock(&t->mu);
	*st = t->st;
	pthread_mutex_unlock(&t->mu);
}
