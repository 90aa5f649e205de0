#include "net/cn_pbs_target.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_digest_set.h"
#include "common/cn_error.h"
#include "common/cn_log.h"

#define BACKUP_PROTOCOL "proxmox-backup-protocol-v1"
#define APPEND_BATCH 128
#define MAX_INDEXES 64

/* States of digests in the known set. */
enum { KNOWN_PENDING = 1, KNOWN_CONFIRMED = 2 };

struct upload {
	struct cn_h2_req *req;
	struct cn_chunk *chunk;
};

struct index_writer {
	int open;
	int wid;
	enum cn_index_kind kind;
	char name[128];
	uint64_t end;              /* end offset of the last queued entry */
	struct cn_index_entry *pending;  /* queued, not yet sent */
	uint64_t *starts;          /* start offset of each queued entry */
	size_t npending, cap;
};

struct pbs_target {
	struct cn_target base;
	struct cn_pbs *conn;
	struct cn_pbs_target_opts opts;
	struct cn_h2 *h2;          /* set and cleared under h2_mu */
	pthread_mutex_t h2_mu;     /* for cancel and progress from other threads */
	struct cn_digest_set *known;
	struct upload *ring;       /* FIFO of uploads in flight */
	size_t head, count;
	size_t inflight_bytes;
	struct index_writer idx[MAX_INDEXES];
	int last_opened;           /* handle for chunk uploads, -1 if none */
	int err;                   /* sticky first error */
	char errmsg[512];
	int finished, aborted;
	struct cn_pbs_target_stats stats;
};

static struct pbs_target *T(struct cn_target *t)
{
	return (struct pbs_target *)t;
}

/* Records the calling thread's current error as the target's sticky one. */
static int fail(struct pbs_target *t, int code)
{
	if (t->err == 0) {
		t->err = code;
		snprintf(t->errmsg, sizeof(t->errmsg), "%s", cn_error_message());
	}
	return cn_error_set(t->err, "%s", t->errmsg);
}

static int check(struct pbs_target *t)
{
	if (t->err)
		return cn_error_set(t->err, "%s", t->errmsg);
	if (!t->h2)
		return cn_error_set(-EINVAL, "%s: no backup session (begin not called, or ended)", t->base.name);
	return 0;
}

/* Handles a finished upload at the ring's head. */
static int reap_one(struct pbs_target *t)
{
	struct upload *u = &t->ring[t->head];
	int r = cn_h2_wait(t->h2, u->req);
	if (r == 0) {
		struct cn_buf *body = cn_h2_req_body(u->req);
		r = cn_pbs_reply_data(cn_h2_req_status(u->req), body->data, body->len, NULL);
	}
	if (r == 0) {
		cn_digest_set_update(t->known, u->chunk->digest, KNOWN_CONFIRMED);
	} else {
		char hex[65];
		cn_hex_encode(u->chunk->digest, 32, hex);
		cn_error_prefix(r, "%s: upload of chunk %s", t->base.name, hex);
	}
	t->inflight_bytes -= u->chunk->len;
	cn_h2_req_free(t->h2, u->req);
	cn_chunk_unref(u->chunk);
	u->req = NULL;
	u->chunk = NULL;
	t->head = (t->head + 1) % (size_t)t->opts.max_inflight;
	t->count--;
	return r < 0 ? fail(t, r) : 0;
}

/* Reaps every upload that is already answered (without blocking), or,
 * with all set, waits for every upload. */
static int reap(struct pbs_target *t, int all)
{
	while (t->count > 0) {
		if (!all && !cn_h2_req_done(t->h2, t->ring[t->head].req))
			break;
		int r = reap_one(t);
		if (r < 0)
			return r;
	}
	return 0;
}

/* After PBS refused a backup session because the snapshot directory
 * exists: when that snapshot is unfinished (listed without a manifest: a
 * backup the server did not complete, e.g. killed during the upload), it
 * is not a backup and blocks this one (a sync or catch-up filling it in),
 * so it is removed. 1 when removed; else 0 with the refusal (and why it
 * stays) as the error. */
static int remove_unfinished(struct pbs_target *t, const struct cn_snapshot_id *id)
{
	char msg[1024], snap[300];
	snprintf(msg, sizeof(msg), "%s", cn_error_message());
	cn_snapshot_path(id, snap, sizeof(snap));
	struct cn_snapshot_info *list = NULL;
	size_t n = 0;
	int found = 0, r = cn_pbs_list_snapshots(t->conn, id, &list, &n);
	for (size_t i = 0; r == 0 && i < n; i++)
		found |= list[i].id.time == id->time;
	free(list);
	if (r == 0 && !found)
		r = cn_pbs_forget(t->conn, id);
	if (r < 0 || found) {
		cn_error_set(-CN_E_REMOTE, "%s%s%s", msg,
			     found ? "" : "; removing the unfinished snapshot there failed: ",
			     found ? "" : cn_error_message());
		return 0;
	}
	cn_log_warning("%s: removed the unfinished snapshot %s (a backup the server did not "
		       "complete: no manifest)", t->base.name, snap);
	return 1;
}

static int t_begin(struct cn_target *tt, const struct cn_snapshot_id *id, struct cn_buf *prev_manifest,
		   int64_t *prev_time)
{
	struct pbs_target *t = T(tt);
	char query[2048];
	json_t *data = NULL;
	int r;

	*prev_time = -1;
	prev_manifest->len = 0;
	if (t->h2 || t->err)
		return cn_error_set(-EINVAL, "%s: begin called twice", tt->name);
	if (cn_pbs_snapshot_query(t->conn, id, query, sizeof(query)) < 0 ||
	    strlen(query) + 16 >= sizeof(query))
		return cn_error_set(-ENAMETOOLONG, "%s: snapshot name too long", tt->name);
	strcat(query, "&debug=false");
	struct cn_h2 *h2 = NULL;
	r = cn_pbs_open_session(t->conn, BACKUP_PROTOCOL, "backup", query, &h2);
	if (r < 0 && strstr(cn_error_message(), "backup directory already exists") &&
	    remove_unfinished(t, id) == 1)
		r = cn_pbs_open_session(t->conn, BACKUP_PROTOCOL, "backup", query, &h2);
	pthread_mutex_lock(&t->h2_mu);
	t->h2 = h2;
	pthread_mutex_unlock(&t->h2_mu);
	if (r < 0)
		return fail(t, cn_error_prefix(r, "%s", tt->name));
	r = cn_h2_call(t->h2, "GET", "previous_backup_time", NULL, NULL, 0, &data);
	if (r < 0)
		return fail(t, cn_error_prefix(r, "%s", tt->name));
	if (json_is_integer(data)) {
		int64_t pt = json_integer_value(data);
		r = cn_h2_download(t->h2, "previous?archive-name=index.json.blob", prev_manifest);
		if (r == 0) {
			*prev_time = pt;
		} else if (r == -ENOENT || r == -CN_E_REMOTE) {
			/* Unusable previous snapshot: back up everything. */
			cn_log_warning("%s: no previous manifest (%s)", tt->name, cn_error_message());
			prev_manifest->len = 0;
		} else {
			json_decref(data);
			return fail(t, cn_error_prefix(r, "%s", tt->name));
		}
	} else if (!json_is_null(data)) {
		json_decref(data);
		cn_error_set(-CN_E_PROTOCOL, "%s: previous_backup_time answered neither a time nor null",
			     tt->name);
		return fail(t, -CN_E_PROTOCOL);
	}
	json_decref(data);
	return 0;
}

static int t_load_previous_index(struct cn_target *tt, const char *name, struct cn_buf *out)
{
	struct pbs_target *t = T(tt);
	char enc[300], path[400];
	int r = check(t);
	if (r < 0)
		return r;
	if (cn_h2_urlencode(name, enc, sizeof(enc)) < 0)
		return cn_error_set(-ENAMETOOLONG, "%s: archive name too long", tt->name);
	snprintf(path, sizeof(path), "previous?archive-name=%s", enc);
	r = cn_h2_download(t->h2, path, out);
	if (r < 0) {
		/* The server answers a missing previous file with an error
		 * status (404, or 400 "... not found"); the session goes on. */
		if (cn_pbs_enoent(r) == -ENOENT)
			return cn_error_set(-ENOENT, "%s: previous snapshot has no %s", tt->name, name);
		return fail(t, cn_error_prefix(r, "%s", tt->name));
	}
	return 0;
}

static int t_add_known(struct cn_target *tt, const uint8_t (*digests)[32], size_t n)
{
	struct pbs_target *t = T(tt);
	for (size_t i = 0; i < n; i++) {
		int r = cn_digest_set_add(t->known, digests[i], KNOWN_CONFIRMED);
		if (r < 0)
			return cn_error_set(r, "%s: out of memory", tt->name);
		if (r == 0)
			cn_digest_set_update(t->known, digests[i], KNOWN_CONFIRMED);
	}
	return 0;
}

static int t_has_chunk(struct cn_target *tt, const uint8_t digest[32])
{
	return cn_digest_set_get(T(tt)->known, digest, NULL);
}

static int t_put_chunk(struct cn_target *tt, struct cn_chunk *chunk)
{
	struct pbs_target *t = T(tt);
	char path[256], hex[65];
	int r = check(t);
	if (r < 0)
		return r;
	if ((r = reap(t, 0)) < 0)
		return r;
	if (cn_digest_set_get(t->known, chunk->digest, NULL)) {
		t->stats.chunks_skipped++;
		return 0;
	}
	if (t->last_opened < 0 || !t->idx[t->last_opened].open)
		return cn_error_set(-EINVAL, "%s: put_chunk without an open index", tt->name);
	struct index_writer *w = &t->idx[t->last_opened];
	/* Backpressure: wait for the oldest uploads. */
	while (t->count > 0 && (t->count >= (size_t)t->opts.max_inflight ||
				t->inflight_bytes + chunk->len > t->opts.max_inflight_bytes))
		if ((r = reap_one(t)) < 0)
			return r;
	if ((r = cn_digest_set_add(t->known, chunk->digest, KNOWN_PENDING)) < 0)
		return fail(t, cn_error_set(r, "%s: out of memory", tt->name));
	cn_hex_encode(chunk->digest, 32, hex);
	snprintf(path, sizeof(path), "%s_chunk?wid=%d&digest=%s&size=%llu&encoded-size=%zu",
		 w->kind == CN_INDEX_FIXED ? "fixed" : "dynamic", w->wid, hex,
		 (unsigned long long)chunk->plain_size, chunk->len);
	struct upload *u = &t->ring[(t->head + t->count) % (size_t)t->opts.max_inflight];
	r = cn_h2_submit(t->h2, "POST", path, "application/octet-stream", chunk->data, chunk->len, &u->req);
	if (r < 0)
		return fail(t, cn_error_prefix(r, "%s: upload of chunk %s", tt->name, hex));
	u->chunk = cn_chunk_ref(chunk);
	t->count++;
	t->inflight_bytes += chunk->len;
	t->stats.chunks_uploaded++;
	t->stats.bytes_uploaded += chunk->len;
	return 0;
}

static int t_index_open(struct cn_target *tt, const char *name, enum cn_index_kind kind, uint64_t size,
			uint32_t chunk_size)
{
	struct pbs_target *t = T(tt);
	char enc[300], path[400];
	json_t *data = NULL;
	int h, r = check(t);
	(void)chunk_size;  /* the server fixes fixed-index chunks at 4 MiB */
	if (r < 0)
		return r;
	for (h = 0; h < MAX_INDEXES && (t->idx[h].open || t->idx[h].wid); h++)
		;
	if (h == MAX_INDEXES)
		return cn_error_set(-EMFILE, "%s: too many indexes in one snapshot", tt->name);
	if (strlen(name) >= sizeof(t->idx[h].name) || cn_h2_urlencode(name, enc, sizeof(enc)) < 0)
		return cn_error_set(-ENAMETOOLONG, "%s: archive name too long", tt->name);
	if (kind == CN_INDEX_FIXED)
		snprintf(path, sizeof(path), "fixed_index?archive-name=%s&size=%llu", enc,
			 (unsigned long long)size);
	else
		snprintf(path, sizeof(path), "dynamic_index?archive-name=%s", enc);
	r = cn_h2_call(t->h2, "POST", path, NULL, NULL, 0, &data);
	if (r < 0)
		return fail(t, cn_error_prefix(r, "%s: creating %s", tt->name, name));
	if (!json_is_integer(data) || json_integer_value(data) < 1 || json_integer_value(data) > 1 << 20) {
		json_decref(data);
		cn_error_set(-CN_E_PROTOCOL, "%s: creating %s: server sent no writer id", tt->name, name);
		return fail(t, -CN_E_PROTOCOL);
	}
	struct index_writer *w = &t->idx[h];
	memset(w, 0, sizeof(*w));
	w->open = 1;
	w->wid = (int)json_integer_value(data);
	w->kind = kind;
	strcpy(w->name, name);
	json_decref(data);
	t->last_opened = h;
	return h;
}

/* Sends queued entries whose chunks the server has confirmed, in batches;
 * with force, waits for all uploads first and sends everything. */
static int flush(struct pbs_target *t, struct index_writer *w, int force)
{
	int r = reap(t, force);
	if (r < 0)
		return r;
	size_t ready = 0;
	while (ready < w->npending) {
		uint8_t st = 0;
		/* Absent digests are sent as they are: the server decides. */
		if (cn_digest_set_get(t->known, w->pending[ready].digest, &st) && st == KNOWN_PENDING)
			break;
		ready++;
	}
	if (!force && ready < APPEND_BATCH)
		return 0;
	size_t done = 0;
	/* 64 hex + 4 per digest, up to 21 per offset */
	char body[APPEND_BATCH * 96 + 128];
	while (done < ready) {
		size_t n = ready - done;
		if (n > APPEND_BATCH)
			n = APPEND_BATCH;
		if (!force && n < APPEND_BATCH)
			break;
		size_t len = 0;
		len += (size_t)snprintf(body, sizeof(body), "{\"wid\":%d,\"digest-list\":[", w->wid);
		for (size_t i = 0; i < n; i++) {
			if (i)
				body[len++] = ',';
			body[len++] = '"';
			cn_hex_encode(w->pending[done + i].digest, 32, body + len);
			len += 64;
			body[len++] = '"';
		}
		len += (size_t)snprintf(body + len, sizeof(body) - len, "],\"offset-list\":[");
		for (size_t i = 0; i < n; i++)
			len += (size_t)snprintf(body + len, sizeof(body) - len, "%s%llu", i ? "," : "",
						(unsigned long long)w->starts[done + i]);
		len += (size_t)snprintf(body + len, sizeof(body) - len, "]}");
		r = cn_h2_call(t->h2, "PUT", w->kind == CN_INDEX_FIXED ? "fixed_index" : "dynamic_index",
			       "application/json", (const uint8_t *)body, len, NULL);
		if (r < 0)
			return fail(t, cn_error_prefix(r, "%s: appending to %s", t->base.name, w->name));
		t->stats.appends++;
		done += n;
	}
	memmove(w->pending, w->pending + done, (w->npending - done) * sizeof(*w->pending));
	memmove(w->starts, w->starts + done, (w->npending - done) * sizeof(*w->starts));
	w->npending -= done;
	return 0;
}

static struct index_writer *writer(struct pbs_target *t, int handle)
{
	if (handle < 0 || handle >= MAX_INDEXES || !t->idx[handle].open) {
		cn_error_set(-EINVAL, "%s: bad index handle %d", t->base.name, handle);
		return NULL;
	}
	return &t->idx[handle];
}

static int t_index_append(struct cn_target *tt, int handle, const struct cn_index_entry *entries, size_t n)
{
	struct pbs_target *t = T(tt);
	int r = check(t);
	if (r < 0)
		return r;
	struct index_writer *w = writer(t, handle);
	if (!w)
		return -EINVAL;
	if (w->npending + n > w->cap) {
		size_t cap = (w->npending + n) * 2;
		struct cn_index_entry *e = realloc(w->pending, cap * sizeof(*e));
		if (e)
			w->pending = e;
		uint64_t *s = realloc(w->starts, cap * sizeof(*s));
		if (s)
			w->starts = s;
		if (!e || !s)
			return fail(t, cn_error_set(-ENOMEM, "out of memory"));
		w->cap = cap;
	}
	for (size_t i = 0; i < n; i++) {
		if (entries[i].end_offset <= w->end)
			return fail(t, cn_error_set(-EINVAL, "%s: %s: entry end offset %llu not increasing",
						    tt->name, w->name,
						    (unsigned long long)entries[i].end_offset));
		w->pending[w->npending] = entries[i];
		w->starts[w->npending] = w->end;
		w->end = entries[i].end_offset;
		w->npending++;
	}
	return flush(t, w, 0);
}

static int t_index_close(struct cn_target *tt, int handle, uint64_t count, uint64_t size,
			 const uint8_t csum[32])
{
	struct pbs_target *t = T(tt);
	char path[256], hex[65];
	int r = check(t);
	if (r < 0)
		return r;
	struct index_writer *w = writer(t, handle);
	if (!w)
		return -EINVAL;
	if ((r = flush(t, w, 1)) < 0)
		return r;
	cn_hex_encode(csum, 32, hex);
	snprintf(path, sizeof(path), "%s_close?wid=%d&chunk-count=%llu&size=%llu&csum=%s",
		 w->kind == CN_INDEX_FIXED ? "fixed" : "dynamic", w->wid, (unsigned long long)count,
		 (unsigned long long)size, hex);
	r = cn_h2_call(t->h2, "POST", path, NULL, NULL, 0, NULL);
	if (r < 0)
		return fail(t, cn_error_prefix(r, "%s: closing %s", tt->name, w->name));
	w->open = 0;
	free(w->pending);
	free(w->starts);
	w->pending = NULL;
	w->starts = NULL;
	w->npending = w->cap = 0;
	return 0;
}

static int t_put_blob(struct cn_target *tt, const char *name, const uint8_t *data, size_t len)
{
	struct pbs_target *t = T(tt);
	char enc[300], path[400];
	int r = check(t);
	if (r < 0)
		return r;
	if (cn_h2_urlencode(name, enc, sizeof(enc)) < 0)
		return cn_error_set(-ENAMETOOLONG, "%s: blob name too long", tt->name);
	snprintf(path, sizeof(path), "blob?file-name=%s&encoded-size=%zu", enc, len);
	r = cn_h2_call(t->h2, "POST", path, "application/octet-stream", data, len, NULL);
	if (r < 0)
		return fail(t, cn_error_prefix(r, "%s: uploading %s", tt->name, name));
	return 0;
}

/* Takes the session away from cancel and progress, then frees it. */
static void free_session(struct pbs_target *t)
{
	pthread_mutex_lock(&t->h2_mu);
	struct cn_h2 *h2 = t->h2;
	t->h2 = NULL;
	pthread_mutex_unlock(&t->h2_mu);
	cn_h2_free(h2);
}

static int t_finish(struct cn_target *tt)
{
	struct pbs_target *t = T(tt);
	int r = check(t);
	if (r < 0)
		return r;
	if ((r = reap(t, 1)) < 0)
		return r;
	r = cn_h2_call(t->h2, "POST", "finish", NULL, NULL, 0, NULL);
	if (r < 0)
		return fail(t, cn_error_prefix(r, "%s: finishing the snapshot", tt->name));
	/* The snapshot is final once finish was answered; a failing
	 * goodbye is only worth a warning. */
	if (cn_h2_close(t->h2) < 0)
		cn_log_warning("%s: closing the session: %s", tt->name, cn_error_message());
	free_session(t);
	t->finished = 1;
	return 0;
}

static void drop_uploads(struct pbs_target *t)
{
	while (t->count > 0) {
		struct upload *u = &t->ring[t->head];
		cn_h2_req_free(t->h2, u->req);  /* detaches pending requests */
		u->req = NULL;
		t->head = (t->head + 1) % (size_t)t->opts.max_inflight;
		t->count--;
	}
	/* The session (and with it any detached request) goes first: the
	 * chunks are the request bodies. */
	free_session(t);
	for (int i = 0; i < t->opts.max_inflight; i++) {
		cn_chunk_unref(t->ring[i].chunk);
		t->ring[i].chunk = NULL;
	}
	t->inflight_bytes = 0;
}

static void t_abort(struct cn_target *tt)
{
	struct pbs_target *t = T(tt);
	if (t->finished || t->aborted)
		return;
	/* Dropping the connection without finish makes the server remove
	 * the unfinished snapshot. */
	drop_uploads(t);
	t->aborted = 1;
}

/* Kills the session, so that a call blocked on the server (another
 * thread's) returns at once; abort follows from that thread. */
static void t_cancel(struct cn_target *tt)
{
	struct pbs_target *t = T(tt);
	char why[200];
	snprintf(why, sizeof(why), "%s: session cancelled (server not responding)", tt->name);
	pthread_mutex_lock(&t->h2_mu);
	if (t->h2)
		cn_h2_cancel(t->h2, why);
	pthread_mutex_unlock(&t->h2_mu);
}

/* Bytes moved on the session: uploads progressing on a slow link. */
static uint64_t t_progress(struct cn_target *tt)
{
	struct pbs_target *t = T(tt);
	pthread_mutex_lock(&t->h2_mu);
	uint64_t v = t->h2 ? cn_h2_progress(t->h2) : 0;
	pthread_mutex_unlock(&t->h2_mu);
	return v;
}

static void t_destroy(struct cn_target *tt)
{
	struct pbs_target *t = T(tt);
	if (!t)
		return;
	t_abort(tt);
	for (int i = 0; i < MAX_INDEXES; i++) {
		free(t->idx[i].pending);
		free(t->idx[i].starts);
	}
	cn_digest_set_free(t->known);
	free(t->ring);
	pthread_mutex_destroy(&t->h2_mu);
	free(t);
}

static const struct cn_target_ops pbs_target_ops = {
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

int cn_pbs_target_new(struct cn_pbs *conn, const struct cn_pbs_target_opts *opts, struct cn_target **out)
{
	struct pbs_target *t = calloc(1, sizeof(*t));
	if (!t)
		return cn_error_set(-ENOMEM, "out of memory");
	if (opts)
		t->opts = *opts;
	if (t->opts.max_inflight <= 0)
		t->opts.max_inflight = 64;
	if (t->opts.max_inflight_bytes == 0)
		t->opts.max_inflight_bytes = 256u << 20;
	t->conn = conn;
	t->last_opened = -1;
	pthread_mutex_init(&t->h2_mu, NULL);
	t->base.ops = &pbs_target_ops;
	cn_pbs_name(conn, t->base.name, sizeof(t->base.name));
	t->ring = calloc((size_t)t->opts.max_inflight, sizeof(*t->ring));
	if (!t->ring || cn_digest_set_new(0, &t->known) < 0) {
		free(t->ring);
		pthread_mutex_destroy(&t->h2_mu);
		free(t);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	*out = &t->base;
	return 0;
}

void cn_pbs_target_stats(const struct cn_target *t, struct cn_pbs_target_stats *st)
{
	*st = ((const struct pbs_target *)t)->stats;
}
