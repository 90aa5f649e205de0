/* Prune and garbage collection of a datastore in an object store (see
 * cn_objstore_admin.h). */
#include "engine/cn_objstore_admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_digest_set.h"
#include "common/cn_error.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

#define GC_MIN_AGE (24 * 3600) /* upstream: 24 h ... */
#define GC_SAFETY_GAP 300      /* ... and 5 minutes */

/* ---- key lists ----------------------------------------------------------- */

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

static void key_list_clear(struct key_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	l->n = 0;
}

static void key_list_free(struct key_list *l)
{
	key_list_clear(l);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* Deletes the keys of l, CN_OBJSTORE_DELETE_MAX at a time. */
static int delete_all(struct cn_objstore *o, const struct key_list *l)
{
	int r = 0;
	for (size_t i = 0; r == 0 && i < l->n; i += CN_OBJSTORE_DELETE_MAX) {
		size_t k = l->n - i < CN_OBJSTORE_DELETE_MAX ? l->n - i : CN_OBJSTORE_DELETE_MAX;
		r = o->ops->delete_keys(o, (const char *const *)l->v + i, k, NULL);
	}
	return r;
}

/* ---- prune --------------------------------------------------------------- */

static int on_prefix_key(void *ctx, const char *key, uint64_t size, int64_t mtime)
{
	(void)size, (void)mtime;
	return key_list_add(ctx, key);
}

/* Deletes every object below dir ("…/TIME/"), the manifest first. */
static int remove_snapshot_objects(struct cn_objstore *o, const char *dir)
{
	char key[1200];
	snprintf(key, sizeof(key), "%s%s", dir, CN_MANIFEST_BLOB_NAME);
	const char *manifest = key;
	int r = o->ops->delete_keys(o, &manifest, 1, NULL);
	if (r < 0)
		return r;
	struct key_list l = {0};
	r = o->ops->list(o, dir, on_prefix_key, &l);
	if (r == 0)
		r = delete_all(o, &l);
	key_list_free(&l);
	return r;
}

struct prune_ctx {
	struct cn_objstore *o;
	const struct cn_snapshot_info *list;
};

static int remove_snapshot(void *ctx, size_t i, enum cn_prune_mark *mark)
{
	struct prune_ctx *p = ctx;
	char dir[1024], pk[1100];
	int r = cn_snapshot_path(&p->list[i].id, dir, sizeof(dir) - 1);
	if (r < 0)
		return cn_error_set(r, "snapshot path too long");
	strcat(dir, "/");
	/* protected since the listing: kept */
	snprintf(pk, sizeof(pk), "%s.protected", dir);
	if ((r = p->o->ops->exists(p->o, pk)) == 1) {
		*mark = CN_PRUNE_PROTECTED;
		return 1;
	}
	if (r < 0)
		return r;
	return remove_snapshot_objects(p->o, dir);
}

static void prune_item(void *ctx, size_t i, struct cn_prune_item *it, struct cn_snapshot_id *id)
{
	const struct cn_snapshot_info *s = &((struct prune_ctx *)ctx)->list[i];
	/* the listing holds finished snapshots only: prefixes without a
	 * manifest are no snapshots in an object store (gc removes them) */
	*it = (struct cn_prune_item){s->id.time, 1, s->protected_};
	*id = s->id;
}

int cn_objstore_admin_prune_group(struct cn_objstore *o, const struct cn_snapshot_id *group,
				  const struct cn_prune_keep *keep, int dry_run,
				  struct cn_prune_entry **out, size_t *n)
{
	struct cn_snapshot_info *list = NULL;
	size_t cnt = 0;
	int r = o->ops->list_snapshots(o, group, &list, &cnt);
	if (r < 0)
		return r;
	struct prune_ctx ctx = {o, list};
	r = cn_prune_apply(cnt, prune_item, remove_snapshot, &ctx, keep, dry_run, out, n);
	free(list);
	return r;
}

/* ---- gc ------------------------------------------------------------------ */

/* A chunk of a finished snapshot must be in the store; one of an
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
	int64_t newest;   /* newest modification time of its objects */
	size_t first_index, nindex; /* its index keys in gc.indexes */
};

struct writer {
	char *key;        /* the marker's key */
	char *path;       /* snapshot path of the marker */
	int64_t started;
	int live;
};

struct gc {
	struct cn_objstore *o;
	struct chunk_obj *chunks;
	size_t nchunks, capchunks;
	struct snap_obj *snaps;
	size_t nsnaps, capsnaps;
	struct key_list indexes;
	struct writer *writers;
	size_t nwriters, capwriters;
	int64_t now;
};

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

/* ".chunks/XXXX/<64 hex>" into out (at least 78 bytes). */
static void chunk_key(const uint8_t digest[32], char *out)
{
	char hex[65];
	cn_hex_encode(digest, 32, hex);
	snprintf(out, 78, ".chunks/%.4s/%s", hex, hex);
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
	if (!strcmp(file, CN_MANIFEST_BLOB_NAME))
		s->has_manifest = 1;
	else if (ends_with(file, ".didx") || ends_with(file, ".fidx")) {
		int r = key_list_add(&g->indexes, key);
		if (r < 0)
			return r;
		s->nindex++;
	}
	return 0;
}

static int on_writer(void *ctx, const char *key, const char *path, int64_t started)
{
	struct gc *g = ctx;
	if (g->nwriters == g->capwriters) {
		size_t cap = g->capwriters ? g->capwriters * 2 : 16;
		struct writer *nv = realloc(g->writers, cap * sizeof(*nv));
		if (!nv)
			return cn_error_set(-ENOMEM, "out of memory");
		g->writers = nv;
		g->capwriters = cap;
	}
	struct writer *w = &g->writers[g->nwriters];
	w->key = strdup(key);
	w->path = strdup(path);
	if (!w->key || !w->path) {
		free(w->key);
		free(w->path);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	w->started = started;
	w->live = started > g->now - CN_OBJSTORE_WRITER_STALE;
	g->nwriters++;
	return 0;
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
	int r = g->o->ops->get(g->o, key, b);
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

/* The sweep's pending deletes: keys with the chunk each stands for. */
struct sweep {
	struct key_list keys;
	const struct chunk_obj *chunk[CN_OBJSTORE_DELETE_MAX];
	int status[CN_OBJSTORE_DELETE_MAX];
};

/* Deletes the batch in one call, counting what went. */
static int sweep_flush(struct gc *g, struct sweep *sw, struct cn_gc_stats *st)
{
	if (!sw->keys.n)
		return 0;
	int r = g->o->ops->gc_alive(g->o);
	if (r == 0)
		r = g->o->ops->delete_keys(g->o, (const char *const *)sw->keys.v, sw->keys.n,
					   sw->status);
	for (size_t i = 0; i < sw->keys.n; i++)
		if (r == 0 || sw->status[i] == 0) {
			st->removed_chunks++;
			st->removed_bytes += sw->chunk[i]->size;
		}
	key_list_clear(&sw->keys);
	return r;
}

/* Phase 2: deletes every unmarked chunk older than the cutoff. */
static int sweep_chunks(struct gc *g, const struct cn_digest_set *marked, int64_t cutoff,
			struct cn_gc_stats *st, uint64_t *present)
{
	struct sweep *sw = calloc(1, sizeof(*sw));
	if (!sw)
		return cn_error_set(-ENOMEM, "out of memory");
	int r = 0;
	char key[96];
	for (size_t i = 0; r == 0 && i < g->nchunks; i++) {
		const struct chunk_obj *c = &g->chunks[i];
		uint8_t v;
		if (cn_digest_set_get(marked, c->digest, &v) == 1) {
			*present += v == MARK_FINISHED;
			st->disk_chunks++;
			st->disk_bytes += c->size;
		} else if (c->mtime >= cutoff || c->mtime == 0) {
			st->pending_chunks++;
			st->pending_bytes += c->size;
		} else {
			chunk_key(c->digest, key);
			sw->chunk[sw->keys.n] = c;
			if ((r = key_list_add(&sw->keys, key)) == 0 &&
			    sw->keys.n == CN_OBJSTORE_DELETE_MAX)
				r = sweep_flush(g, sw, st);
		}
	}
	if (r == 0)
		r = sweep_flush(g, sw, st);
	key_list_free(&sw->keys);
	free(sw);
	return r;
}

static int run_gc(struct gc *g, int64_t grace, struct cn_gc_stats *st)
{
	struct cn_objstore *o = g->o;
	int r = o->ops->writers(o, g->now, on_writer, g);
	if (r < 0)
		return r;
	int64_t oldest = g->now;
	for (size_t i = 0; i < g->nwriters; i++)
		if (g->writers[i].live && g->writers[i].started < oldest)
			oldest = g->writers[i].started;
	int64_t cutoff = oldest - grace;
	st->cutoff = cutoff;
	if ((r = o->ops->list(o, "", on_object, g)) < 0)
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
				if ((r = o->ops->gc_alive(o)) == 0)
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
	if (r == 0)
		r = sweep_chunks(g, marked, cutoff, st, &present);
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
		if ((r = remove_snapshot_objects(o, dir)) == 0)
			st->removed_tmp_dirs++;
	}
	struct key_list dead = {0};
	for (size_t i = 0; r == 0 && i < g->nwriters; i++)
		if (!g->writers[i].live)
			r = key_list_add(&dead, g->writers[i].key);
	if (r == 0)
		r = delete_all(o, &dead);
	key_list_free(&dead);
	return r;
}

int cn_objstore_admin_gc(struct cn_objstore *o, const struct cn_gc_opts *opts,
			 struct cn_gc_stats *stats)
{
	struct cn_gc_stats local;
	struct cn_gc_stats *st = stats ? stats : &local;
	memset(st, 0, sizeof(*st));
	struct gc g = {.o = o, .now = opts && opts->now ? opts->now : (int64_t)time(NULL)};
	int64_t grace = GC_MIN_AGE + GC_SAFETY_GAP;
	if (opts && opts->grace == CN_GC_NO_GRACE)
		grace = 0;
	else if (opts && opts->grace > 0)
		grace = opts->grace;
	/* before anything is listed: see net/cn_s3_gcstate.h */
	int r = o->ops->gc_begin(o);
	if (r < 0)
		return r;
	r = run_gc(&g, grace, st);
	/* even after a failure: this GC is not running any more */
	int r2 = o->ops->gc_end(o);
	if (r == 0)
		r = r2;
	for (size_t i = 0; i < g.nsnaps; i++)
		free(g.snaps[i].path);
	free(g.snaps);
	free(g.chunks);
	for (size_t i = 0; i < g.nwriters; i++) {
		free(g.writers[i].key);
		free(g.writers[i].path);
	}
	free(g.writers);
	key_list_free(&g.indexes);
	return r < 0 ? r : 0;
}
