/* The object-store administration interface on S3 (cn_s3_objstore.h). */
#include "net/cn_s3_objstore.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_error.h"
#include "net/cn_s3_gcstate.h"
#include "net/cn_s3_layout.h"

struct s3_objstore {
	struct cn_objstore base;
	struct cn_s3 *s3;
	struct cn_s3_gc_state gs; /* the GC begun, rewritten as a sign of life */
	int gc_running;
};

static struct s3_objstore *S(struct cn_objstore *o)
{
	return (struct s3_objstore *)o;
}

static int o_list(struct cn_objstore *o, const char *prefix, cn_objstore_list_fn fn, void *ctx)
{
	return cn_s3_list_objects(S(o)->s3, prefix, fn, ctx);
}

static int o_get(struct cn_objstore *o, const char *key, struct cn_buf *out)
{
	out->len = 0;
	return cn_s3_get(S(o)->s3, key, out);
}

static int o_exists(struct cn_objstore *o, const char *key)
{
	int r = cn_s3_head(S(o)->s3, key, NULL);
	if (r == -ENOENT) {
		cn_error_clear();
		return 0;
	}
	return r < 0 ? r : 1;
}

static int o_delete_keys(struct cn_objstore *o, const char *const *keys, size_t n, int *status)
{
	return cn_s3_delete_keys(S(o)->s3, keys, n, status);
}

static int o_list_snapshots(struct cn_objstore *o, const struct cn_snapshot_id *group,
			    struct cn_snapshot_info **out, size_t *n)
{
	return cn_s3_list_snapshots(S(o)->s3, group, out, n);
}

struct writers_ctx {
	struct cn_s3 *s3;
	int64_t now;
	cn_objstore_writer_fn fn;
	void *ctx;
	struct cn_buf b;
};

/* Reads one writer marker (JSON, "started": the backup's start time) as
 * the listing names it (a GET per marker: there are few). */
static int on_marker(void *ctx, const char *key, uint64_t size, int is_prefix)
{
	(void)size;
	struct writers_ctx *w = ctx;
	if (is_prefix)
		return 0;
	w->b.len = 0;
	int r = cn_s3_get(w->s3, key, &w->b);
	if (r == -ENOENT) { /* finished meanwhile */
		cn_error_clear();
		return 0;
	}
	if (r < 0)
		return r;
	json_t *j = json_loadb((const char *)w->b.data, w->b.len, 0, NULL);
	json_t *st = j ? json_object_get(j, "started") : NULL;
	/* unreadable: taken as running now, the safe side */
	int64_t started = json_is_integer(st) ? json_integer_value(st) : w->now;
	json_decref(j);
	return w->fn(w->ctx, key, key + strlen(CN_S3_WRITERS), started);
}

static int o_writers(struct cn_objstore *o, int64_t now, cn_objstore_writer_fn fn, void *ctx)
{
	struct writers_ctx w = {S(o)->s3, now, fn, ctx, {0}};
	int r = cn_s3_list(w.s3, CN_S3_WRITERS, NULL, on_marker, &w);
	cn_buf_free(&w.b);
	return r;
}

static int o_gc_begin(struct cn_objstore *o)
{
	struct s3_objstore *so = S(o);
	struct cn_s3_gc_state *gs = &so->gs;
	int r = cn_s3_gc_state_get(so->s3, gs);
	if (r < 0)
		return r;
	if (cn_s3_gc_state_active(gs, (int64_t)time(NULL)))
		return cn_error_set(-CN_E_LOCKED, "%s: another garbage collection runs (started %lld, "
				    "%s); a dead one's state expires %d min after its last update",
				    cn_s3_name(so->s3), (long long)gs->started, CN_S3_GC_STATE,
				    CN_S3_GC_STALE / 60);
	uint8_t rnd[16];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return cn_error_set(-EIO, "no random bytes for the gc generation");
	cn_hex_encode(rnd, sizeof(rnd), gs->generation);
	gs->running = 1;
	gs->started = gs->updated = (int64_t)time(NULL);
	gs->finished = 0;
	if ((r = cn_s3_gc_state_put(so->s3, gs)) == 0)
		so->gc_running = 1;
	return r;
}

/* Rewrites the state's "updated" time every CN_S3_GC_BEAT seconds, so that
 * backups and other GCs see that this one still runs. */
static int o_gc_alive(struct cn_objstore *o)
{
	struct s3_objstore *so = S(o);
	int64_t now = (int64_t)time(NULL);
	if (!so->gc_running || now - so->gs.updated < CN_S3_GC_BEAT)
		return 0;
	so->gs.updated = now;
	return cn_s3_gc_state_put(so->s3, &so->gs);
}

static int o_gc_end(struct cn_objstore *o)
{
	struct s3_objstore *so = S(o);
	if (!so->gc_running)
		return 0;
	so->gc_running = 0;
	so->gs.running = 0;
	so->gs.updated = so->gs.finished = (int64_t)time(NULL);
	return cn_s3_gc_state_put(so->s3, &so->gs);
}

static void o_destroy(struct cn_objstore *o)
{
	free(o);
}

static const struct cn_objstore_ops s3_objstore_ops = {
	.list = o_list,
	.get = o_get,
	.exists = o_exists,
	.delete_keys = o_delete_keys,
	.list_snapshots = o_list_snapshots,
	.writers = o_writers,
	.gc_begin = o_gc_begin,
	.gc_alive = o_gc_alive,
	.gc_end = o_gc_end,
	.destroy = o_destroy,
};

int cn_s3_objstore_new(struct cn_s3 *s3, struct cn_objstore **out)
{
	struct s3_objstore *so = calloc(1, sizeof(*so));
	if (!so)
		return cn_error_set(-ENOMEM, "out of memory");
	so->base.ops = &s3_objstore_ops;
	snprintf(so->base.name, sizeof(so->base.name), "%s", cn_s3_name(s3));
	so->s3 = s3;
	*out = &so->base;
	return 0;
}
