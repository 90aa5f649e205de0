/* Prune and garbage collection of an S3 bucket (see cli_s3admin.h). */
#include "cli/cli_s3admin.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_digest_set.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "net/cn_s3_gcstate.h"
#include "net/cn_s3_layout.h"
#include "store/cn_index.h"

#define GC_MIN_AGE (24 * 3600) /* upstream: 24 h ... */
#define GC_SAFETY_GAP 300      /* ... and 5 minutes */

/* ---- prune --------------------------------------------------------------- */

struct key_list {
	char **v;
	size_t n, cap;
};

static int key_list_add(struct key_list *l, const char *key)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		char **nv = realloc(l->v, cap * sizeof(*nv));
		if (!nv)
			return cn_error_set(-ENOMEM, "out of memory");
		l->v = nv;
		l->cap = cap;
	}
	if (!(l->v[l->n] = strdup(key)))
		return cn_error_set(-ENOMEM, "out of memory");
	l->n++;
	return 0;
}

static void key_list_free(struct key_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static int on_prefix_key(void *ctx, const char *key, uint64_t size, int is_prefix)
{
	(void)size;
	return is_prefix ? 0 : key_list_add(ctx, key);
}

/* Deletes every object below dir ("…/TIME/"), the manifest first. */
static int remove_snapshot_objects(struct cn_s3 *s3, const char *dir)
{
	char key[1200];
	snprintf(key, sizeof(key), "%s%s", dir, CN_S3_MANIFEST);
	int r = cn_s3_delete(s3, key);
	if (r < 0)
		return r;
	struct key_list l = {0};
	r = cn_s3_list(s3, dir, NULL, on_prefix_key, &l);
	for (size_t i = 0; r == 0 && i < l.n; i++)
		r = cn_s3_delete(s3, l.v[i]);
	key_list_free(&l);
	return r;
}

struct prune_ctx {
	struct cn_s3 *s3;
	const struct cn_snapshot_info *list;
};

static int remove_s3(void *ctx, size_t i, enum cn_prune_mark *mark)
{
	struct prune_ctx *p = ctx;
	char dir[1024], pk[1100];
	int r = cn_s3_snapshot_key(&p->list[i].id, NULL, dir, sizeof(dir));
	if (r < 0)
		return r;
	/* protected since the listing: kept */
	snprintf(pk, sizeof(pk), "%s.protected", dir);
	if ((r = cn_s3_head(p->s3, pk, NULL)) == 0) {
		*mark = CN_PRUNE_PROTECTED;
		return 1;
	}
	if (r != -ENOENT)
		return r;
	cn_error_clear();
	return remove_snapshot_objects(p->s3, dir);
}

static void item_s3(void *ctx, size_t i, struct cn_prune_item *it, struct cn_snapshot_id *id)
{
	const struct cn_snapshot_info *s = &((struct prune_ctx *)ctx)->list[i];
	/* the listing holds finished snapshots only: prefixes without a
	 * manifest are no snapshots on S3 (gc removes them) */
	*it = (struct cn_prune_item){s->id.time, 1, s->protected_};
	*id = s->id;
}

int cli_s3_prune_group(struct cn_s3 *s3, const struct cn_snapshot_id *group,
		       const struct cn_prune_keep *keep, int dry_run,
		       struct cn_prune_entry **out, size_t *n)
{
	struct cn_snapshot_info *list = NULL;
	size_t cnt = 0;
	int r = cn_s3_list_snapshots(s3, group, &list, &cnt);
	if (r < 0)
		return r;
	struct prune_ctx ctx = {s3, list};
	r = cn_prune_apply(cnt, item_s3, remove_s3, &ctx, keep, dry_run, out, n);
	free(list);
	return r;
}

/* ---- gc ------------------------------------------------------------------ */

/* A chunk of a finished snapshot must be in the bucket; one of an
 * unfinished snapshot (a running backup's index) may still be on its way. */
enum { MARK_FINISHED = 1, MARK_UNFINISHED = 2 };

struct chunk_obj {
	uint8_t digest[32];
	uint64_t size;
	int64_t mtime;
};

struct snap_obj {
	char *path;       /* "[ns/…/]type/id/TIME" */
	int has_manifest;
	int64_t newest;   /* newest LastModified of its objects */
	size_t first_index, nindex; /* its index keys in gc.indexes */
};

struct writer {
	char *path;       /* snapshot path of the marker */
	int64_t started;
	int live;
};

struct gc {
	struct cn_s3 *s3;
	struct chunk_obj *chunks;
	size_t nchunks, capchunks;
	struct snap_obj *snaps;
	size_t nsnaps, capsnaps;
	struct key_list indexes;
	struct key_list writer_keys;
	struct writer *writers;
	size_t nwriters;
	int64_t now;
	struct cn_s3_gc_state *gs; /* ours, rewritten as a sign of life */
};

/* Rewrites the state's "updated" time every CN_S3_GC_BEAT seconds, so that
 * backups and other GCs see that this one still runs. */
static int heartbeat(struct gc *g)
{
	int64_t now = (int64_t)time(NULL);
	if (now - g->gs->updated < CN_S3_GC_BEAT)
		return 0;
	g->gs->updated = now;
	return cn_s3_gc_state_put(g->s3, g->gs);
}

/* The snapshot path ("[ns/A/…]type/id/TIME") and file name of a
 * snapshot object key: 1, or 0 if key is no snapshot object of this
 * datastore (e.g. one of another datastore under a longer prefix). */
static int snapshot_of_key(const char *key, char *path, size_t n, const char **file)
{
	const char *p = key;
	/* namespaces: "ns/NAME/" pairs */
	while (!strncmp(p, "ns/", 3) && p[3] && p[3] != '/' && strchr(p + 3, '/'))
		p = strchr(p + 3, '/') + 1;
	size_t tl = strcspn(p, "/");
	if (!((tl == 2 && !strncmp(p, "ct", 2)) || (tl == 4 && !strncmp(p, "host", 4)) ||
	      (tl == 2 && !strncmp(p, "vm", 2))) || !p[tl])
		return 0;
	const char *id = p + tl + 1, *ts = id + strcspn(id, "/");
	if (ts == id || !*ts)
		return 0;
	ts++;
	const char *f = ts + strcspn(ts, "/");
	if (f == ts || !*f || f - ts >= 32 || strchr(f + 1, '/') || !f[1])
		return 0;
	char tbuf[32];
	memcpy(tbuf, ts, (size_t)(f - ts));
	tbuf[f - ts] = '\0';
	int64_t tm;
	if (cn_snapshot_parse_time(tbuf, &tm) < 0) {
		cn_error_clear();
		return 0;
	}
	if ((size_t)(f - key) >= n)
		return 0;
	memcpy(path, key, (size_t)(f - key));
	path[f - key] = '\0';
	*file = f + 1;
	return 1;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

static int on_object(void *ctx, const char *key, uint64_t size, int64_t mtime)
{
	struct gc *g = ctx;
	if (!strncmp(key, ".chunks/", 8)) {
		uint8_t d[32];
		/* ".chunks/XXXX/<64 hex>"; anything else there is not ours */
		if (strlen(key) != 77 || key[12] != '/' || strncmp(key + 8, key + 13, 4) ||
		    cn_hex_decode(key + 13, d, 32) < 0)
			return 0;
		if (g->nchunks == g->capchunks) {
			size_t cap = g->capchunks ? g->capchunks * 2 : 1024;
			struct chunk_obj *nv = realloc(g->chunks, cap * sizeof(*nv));
			if (!nv)
				return cn_error_set(-ENOMEM, "out of memory listing chunks");
			g->chunks = nv;
			g->capchunks = cap;
		}
		struct chunk_obj *c = &g->chunks[g->nchunks++];
		memcpy(c->digest, d, 32);
		c->size = size;
		c->mtime = mtime;
		return 0;
	}
	if (key[0] == '.')
		return 0; /* .cairn/ and other dot objects */
	char path[1024];
	const char *file;
	if (!snapshot_of_key(key, path, sizeof(path), &file))
		return 0;
	/* a snapshot's objects come together in a listing */
	struct snap_obj *s = g->nsnaps ? &g->snaps[g->nsnaps - 1] : NULL;
	if (!s || strcmp(s->path, path) != 0) {
		if (g->nsnaps == g->capsnaps) {
			size_t cap = g->capsnaps ? g->capsnaps * 2 : 64;
			struct snap_obj *nv = realloc(g->snaps, cap * sizeof(*nv));
			if (!nv)
				return cn_error_set(-ENOMEM, "out of memory listing snapshots");
			g->snaps = nv;
			g->capsnaps = cap;
		}
		s = &g->snaps[g->nsnaps];
		memset(s, 0, sizeof(*s));
		if (!(s->path = strdup(path)))
			return cn_error_set(-ENOMEM, "out of memory");
		s->first_index = g->indexes.n;
		g->nsnaps++;
	}
	if (mtime > s->newest)
		s->newest = mtime;
	if (!strcmp(file, CN_S3_MANIFEST))
		s->has_manifest = 1;
	else if (ends_with(file, ".didx") || ends_with(file, ".fidx")) {
		int r = key_list_add(&g->indexes, key);
		if (r < 0)
			return r;
		s->nindex++;
	}
	return 0;
}

/* Reads every writer marker: its snapshot path and start time. */
static int read_writers(struct gc *g)
{
	int r = cn_s3_list(g->s3, CN_S3_WRITERS, NULL, on_prefix_key, &g->writer_keys);
	if (r < 0)
		return r;
	g->writers = calloc(g->writer_keys.n ? g->writer_keys.n : 1, sizeof(*g->writers));
	if (!g->writers)
		return cn_error_set(-ENOMEM, "out of memory");
	struct cn_buf b = {0};
	for (size_t i = 0; i < g->writer_keys.n; i++) {
		struct writer *w = &g->writers[g->nwriters];
		const char *key = g->writer_keys.v[i];
		b.len = 0;
		r = cn_s3_get(g->s3, key, &b);
		if (r == -ENOENT) { /* finished meanwhile */
			cn_error_clear();
			continue;
		}
		if (r < 0)
			break;
		json_t *j = json_loadb((const char *)b.data, b.len, 0, NULL);
		json_t *st = j ? json_object_get(j, "started") : NULL;
		/* unreadable: taken as running now, the safe side */
		w->started = json_is_integer(st) ? json_integer_value(st) : g->now;
		json_decref(j);
		w->path = (char *)key + strlen(CN_S3_WRITERS);
		w->live = w->started > g->now - CLI_S3_WRITER_STALE;
		g->nwriters++;
	}
	cn_buf_free(&b);
	return r;
}

static const struct writer *writer_of(const struct gc *g, const char *path)
{
	for (size_t i = 0; i < g->nwriters; i++)
		if (!strcmp(g->writers[i].path, path))
			return &g->writers[i];
	return NULL;
}

/* Marks the chunks of one index object with value (MARK_*). -ENOENT
 * (removed meanwhile by a prune) is no error. *finished counts the chunks
 * marked MARK_FINISHED. */
static int mark_index(struct gc *g, const char *key, uint8_t value, struct cn_digest_set *marked,
		      struct cn_buf *b, struct cn_gc_stats *st, uint64_t *finished)
{
	b->len = 0;
	int r = cn_s3_get(g->s3, key, b);
	if (r == -ENOENT) {
		cn_error_clear();
		return 0;
	}
	struct cn_index *idx = NULL;
	if (r == 0 && (r = cn_index_parse(b->data, b->len, &idx)) < 0)
		return cn_error_prefix(r, "index %s", key);
	if (r < 0)
		return r;
	st->index_files++;
	for (size_t k = 0; r == 0 && k < cn_index_count(idx); k++) {
		uint64_t s, e;
		uint8_t d[32];
		cn_index_entry(idx, k, &s, &e, d);
		uint8_t v;
		if (cn_digest_set_get(marked, d, &v) == 1)
			continue;
		st->marked_chunks++;
		*finished += value == MARK_FINISHED;
		if (cn_digest_set_add(marked, d, value) < 0)
			r = cn_error_set(-ENOMEM, "out of memory marking chunks");
	}
	cn_index_free(idx);
	return r;
}

static int cmp_chunk(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

static int run_gc(struct gc *g, int64_t grace, struct cn_gc_stats *st)
{
	int r = read_writers(g);
	if (r < 0)
		return r;
	int64_t oldest = g->now;
	for (size_t i = 0; i < g->nwriters; i++)
		if (g->writers[i].live && g->writers[i].started < oldest)
			oldest = g->writers[i].started;
	int64_t cutoff = oldest - grace;
	st->cutoff = cutoff;
	if ((r = cn_s3_list_objects(g->s3, "", on_object, g)) < 0)
		return r;
	struct cn_digest_set *marked = NULL;
	if (cn_digest_set_new(g->nchunks + 1024, &marked) < 0)
		return cn_error_set(-ENOMEM, "out of memory");
	/* phase 1: mark from every snapshot that stays, finished ones first */
	struct cn_buf b = {0};
	uint64_t finished = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; r == 0 && i < g->nsnaps; i++) {
			struct snap_obj *s = &g->snaps[i];
			const struct writer *w = writer_of(g, s->path);
			if (s->has_manifest != (pass == 0))
				continue;
			if (!s->has_manifest && !(w && w->live) && s->newest < cutoff)
				continue; /* a leftover: removed below */
			for (size_t k = 0; r == 0 && k < s->nindex; k++)
				if ((r = heartbeat(g)) == 0)
					r = mark_index(g, g->indexes.v[s->first_index + k],
						       pass == 0 ? MARK_FINISHED : MARK_UNFINISHED,
						       marked, &b, st, &finished);
		}
	}
	cn_buf_free(&b);
	/* phase 2: sweep */
	if (r == 0 && g->nchunks > 1)
		qsort(g->chunks, g->nchunks, sizeof(*g->chunks), cmp_chunk);
	uint64_t present = 0;
	char key[96];
	for (size_t i = 0; r == 0 && i < g->nchunks; i++) {
		struct chunk_obj *c = &g->chunks[i];
		uint8_t v;
		if (cn_digest_set_get(marked, c->digest, &v) == 1) {
			present += v == MARK_FINISHED;
			st->disk_chunks++;
			st->disk_bytes += c->size;
		} else if (c->mtime >= cutoff || c->mtime == 0) {
			st->pending_chunks++;
			st->pending_bytes += c->size;
		} else if ((r = heartbeat(g)) == 0) {
			cn_s3_chunk_key(c->digest, key);
			if ((r = cn_s3_delete(g->s3, key)) == 0) {
				st->removed_chunks++;
				st->removed_bytes += c->size;
			}
		}
	}
	st->missing_chunks = finished - present;
	cn_digest_set_free(marked);
	/* leftovers of backups that died, and their markers */
	for (size_t i = 0; r == 0 && i < g->nsnaps; i++) {
		struct snap_obj *s = &g->snaps[i];
		const struct writer *w = writer_of(g, s->path);
		if (s->has_manifest || (w && w->live) || s->newest >= cutoff)
			continue;
		char dir[1100];
		snprintf(dir, sizeof(dir), "%s/", s->path);
		if ((r = remove_snapshot_objects(g->s3, dir)) == 0)
			st->removed_tmp_dirs++;
	}
	for (size_t i = 0; r == 0 && i < g->nwriters; i++)
		if (!g->writers[i].live) {
			char wk[1200];
			snprintf(wk, sizeof(wk), "%s%s", CN_S3_WRITERS, g->writers[i].path);
			r = cn_s3_delete(g->s3, wk);
		}
	return r;
}

int cli_s3_gc(struct cn_s3 *s3, const struct cn_gc_opts *opts, struct cn_gc_stats *stats)
{
	struct cn_gc_stats local;
	struct cn_gc_stats *st = stats ? stats : &local;
	memset(st, 0, sizeof(*st));
	struct cn_s3_gc_state gs;
	struct gc g = {.s3 = s3, .now = opts && opts->now ? opts->now : (int64_t)time(NULL),
		       .gs = &gs};
	int64_t grace = GC_MIN_AGE + GC_SAFETY_GAP;
	if (opts && opts->grace == CN_GC_NO_GRACE)
		grace = 0;
	else if (opts && opts->grace > 0)
		grace = opts->grace;
	int r = cn_s3_gc_state_get(s3, &gs);
	if (r < 0)
		return r;
	if (cn_s3_gc_state_active(&gs, (int64_t)time(NULL)))
		return cn_error_set(-CN_E_LOCKED, "%s: another garbage collection runs (started %lld, "
				    "%s); a dead one's state expires %d min after its last update",
				    cn_s3_name(s3), (long long)gs.started, CN_S3_GC_STATE,
				    CN_S3_GC_STALE / 60);
	uint8_t rnd[16];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return cn_error_set(-EIO, "no random bytes for the gc generation");
	cn_hex_encode(rnd, sizeof(rnd), gs.generation);
	gs.running = 1;
	gs.started = gs.updated = (int64_t)time(NULL);
	gs.finished = 0;
	/* before anything is listed: see cn_s3_gcstate.h */
	if ((r = cn_s3_gc_state_put(s3, &gs)) < 0)
		return r;
	r = run_gc(&g, grace, st);
	gs.running = 0;
	gs.updated = gs.finished = (int64_t)time(NULL);
	/* even after a failure: this GC is not running any more */
	int r2 = cn_s3_gc_state_put(s3, &gs);
	if (r == 0)
		r = r2;
	for (size_t i = 0; i < g.nsnaps; i++)
		free(g.snaps[i].path);
	free(g.snaps);
	free(g.chunks);
	free(g.writers);
	key_list_free(&g.indexes);
	key_list_free(&g.writer_keys);
	return r < 0 ? r : 0;
}
