#include "engine/cn_target_local.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_error.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

/* ---- target ------------------------------------------------------------- */

struct local_index {
	char name[128];
	struct cn_index_writer *w;
};

struct local_target {
	struct cn_target base;
	struct cn_datastore *ds;
	struct cn_ds_snapshot *snap;
	struct cn_snapshot_id prev;
	int has_prev;
	struct local_index *idx;
	size_t nidx;
	/* What a PBS server records of a backup's uploads and adds to its
	 * manifest at finish (src/api2/backup/environment.rs, UploadStatistic):
	 * chunks put (count, plain and encoded bytes, those already stored)
	 * and, into size, each blob's length. */
	uint64_t up_count, up_size, up_compressed, up_duplicates;
	struct cn_buf manifest;    /* index.json.blob as put, written at finish */
	int have_manifest;
};

static int lt_begin(struct cn_target *t, const struct cn_snapshot_id *id,
		    struct cn_buf *prev_manifest, int64_t *prev_time)
{
	struct local_target *l = (struct local_target *)t;
	*prev_time = -1;
	int r = cn_datastore_previous_snapshot(l->ds, id, id->time, &l->prev);
	if (r < 0)
		return r;
	l->has_prev = r == 1;
	if (l->has_prev) {
		r = cn_datastore_read_file(l->ds, &l->prev, CN_MANIFEST_BLOB_NAME, prev_manifest);
		if (r < 0)
			return r;
		*prev_time = l->prev.time;
	}
	l->up_count = l->up_size = l->up_compressed = l->up_duplicates = 0;
	l->manifest.len = 0;
	l->have_manifest = 0;
	return cn_datastore_snapshot_begin(l->ds, id, &l->snap);
}

static int lt_load_previous_index(struct cn_target *t, const char *name, struct cn_buf *out)
{
	struct local_target *l = (struct local_target *)t;
	if (!l->has_prev)
		return -ENOENT;
	return cn_datastore_read_file(l->ds, &l->prev, name, out);
}

static int lt_add_known(struct cn_target *t, const uint8_t (*digests)[32], size_t n)
{
	(void)t;
	(void)digests;
	(void)n;
	return 0; /* has_chunk asks the datastore's own index */
}

static int lt_has_chunk(struct cn_target *t, const uint8_t digest[32])
{
	/* a yes means the chunk is referenced without being stored: protect
	 * it from a GC from now on, not only when the index is written */
	return cn_datastore_reuse_chunk(((struct local_target *)t)->ds, digest);
}

static int lt_count_missing(struct cn_target *t, const uint8_t (*digests)[32], size_t n,
			    size_t *missing)
{
	struct cn_datastore *ds = ((struct local_target *)t)->ds;
	*missing = 0;
	for (size_t i = 0; i < n; i++) {
		int r = cn_datastore_has_chunk(ds, digests[i]);
		if (r < 0)
			return r;
		*missing += r == 0;
	}
	return 0;
}

static int lt_put_chunk(struct cn_target *t, struct cn_chunk *c)
{
	struct local_target *l = (struct local_target *)t;
	int was_new = 0;
	int r = cn_datastore_insert_chunk(l->ds, c->digest, c->data, c->len, &was_new);
	if (r == 0) {
		l->up_count++;
		l->up_size += c->plain_size;
		l->up_compressed += c->len;
		l->up_duplicates += !was_new;
	}
	return r;
}

static int lt_index_open(struct cn_target *t, const char *name, enum cn_index_kind kind,
			 uint64_t size, uint32_t chunk_size)
{
	struct local_target *l = (struct local_target *)t;
	if (!l->snap)
		return cn_error_set(-EINVAL, "index %s opened outside a snapshot", name);
	if (strlen(name) >= sizeof(l->idx[0].name))
		return cn_error_set(-ENAMETOOLONG, "index name too long: %s", name);
	struct local_index *ni = realloc(l->idx, (l->nidx + 1) * sizeof(*ni));
	if (!ni)
		return cn_error_set(-ENOMEM, "out of memory for index %s", name);
	l->idx = ni;
	struct local_index *x = &ni[l->nidx];
	snprintf(x->name, sizeof(x->name), "%s", name);
	int r = cn_index_writer_new(kind, NULL, (int64_t)time(NULL), size, chunk_size, &x->w);
	if (r < 0)
		return r;
	return (int)l->nidx++;
}

static struct local_index *lt_index(struct local_target *l, int h)
{
	if (h < 0 || (size_t)h >= l->nidx || !l->idx[h].w) {
		cn_error_set(-EINVAL, "bad index handle %d", h);
		return NULL;
	}
	return &l->idx[h];
}

static int lt_index_append(struct cn_target *t, int h, const struct cn_index_entry *e, size_t n)
{
	struct local_index *x = lt_index((struct local_target *)t, h);
	if (!x)
		return -EINVAL;
	int r = cn_index_writer_append(x->w, e, n);
	return r < 0 ? cn_error_prefix(r, "index %s", x->name) : 0;
}

static int lt_index_close(struct cn_target *t, int h, uint64_t count, uint64_t size,
			  const uint8_t csum[32])
{
	struct local_target *l = (struct local_target *)t;
	struct local_index *x = lt_index(l, h);
	if (!x)
		return -EINVAL;
	if (count != cn_index_writer_count(x->w) || size != cn_index_writer_size(x->w))
		return cn_error_set(-CN_E_CHECKSUM,
				    "index %s: closed with %llu chunks/%llu bytes, got %zu/%llu",
				    x->name, (unsigned long long)count, (unsigned long long)size,
				    cn_index_writer_count(x->w),
				    (unsigned long long)cn_index_writer_size(x->w));
	struct cn_buf file = {0};
	uint8_t mine[32];
	int r = cn_index_writer_finish(x->w, &file, mine);
	cn_index_writer_free(x->w);
	x->w = NULL;
	if (r == 0 && memcmp(mine, csum, 32))
		r = cn_error_set(-CN_E_CHECKSUM, "index %s: checksum differs from the engine's",
				 x->name);
	if (r == 0)
		r = cn_datastore_snapshot_write_file(l->snap, x->name, file.data, file.len);
	cn_buf_free(&file);
	return r;
}

static int lt_put_blob(struct cn_target *t, const char *name, const uint8_t *data, size_t len)
{
	struct local_target *l = (struct local_target *)t;
	if (!l->snap)
		return cn_error_set(-EINVAL, "blob %s stored outside a snapshot", name);
	l->up_size += len;
	if (strcmp(name, CN_MANIFEST_BLOB_NAME) == 0) {
		/* finish adds the statistics, then writes it */
		l->manifest.len = 0;
		if (cn_buf_append(&l->manifest, data, len) < 0)
			return cn_error_set(-ENOMEM, "out of memory for the manifest");
		l->have_manifest = 1;
		return 0;
	}
	return cn_datastore_snapshot_write_file(l->snap, name, data, len);
}

/* Writes the manifest put with put_blob, with unprotected.chunk_upload_stats
 * added as a PBS server's finish does (update_manifest: outside the
 * signature, so a signed manifest keeps verifying; re-serialised pretty and
 * sorted, zstd-compressed). */
static int lt_write_manifest(struct local_target *l)
{
	struct cn_manifest *m;
	int r = cn_manifest_decode(l->manifest.data, l->manifest.len, NULL, &m);
	if (r < 0)
		return cn_error_prefix(r, "manifest of the new snapshot");
	json_t *st = json_pack("{sIsIsIsI}", "count", (json_int_t)l->up_count, "size",
			       (json_int_t)l->up_size, "compressed_size",
			       (json_int_t)l->up_compressed, "duplicates",
			       (json_int_t)l->up_duplicates);
	struct cn_buf blob = {0};
	if (!st || json_object_set_new(cn_manifest_unprotected(m), "chunk_upload_stats", st) < 0)
		r = cn_error_set(-ENOMEM, "out of memory for the manifest");
	else
		r = cn_manifest_encode(m, NULL, &blob);
	if (r == 0)
		r = cn_datastore_snapshot_write_file(l->snap, CN_MANIFEST_BLOB_NAME, blob.data,
						     blob.len);
	cn_buf_free(&blob);
	cn_manifest_free(m);
	return r;
}

static void lt_abort(struct cn_target *t)
{
	struct local_target *l = (struct local_target *)t;
	cn_datastore_snapshot_abort(l->snap);
	l->snap = NULL;
}

static int lt_finish(struct cn_target *t)
{
	struct local_target *l = (struct local_target *)t;
	if (!l->snap)
		return cn_error_set(-EINVAL, "finish without a snapshot");
	int r = l->have_manifest ? lt_write_manifest(l) : 0;
	if (r < 0) {
		lt_abort(t);
		return r;
	}
	r = cn_datastore_snapshot_publish(l->snap);
	l->snap = NULL; /* publish frees it, also on failure */
	return r;
}

static void lt_destroy(struct cn_target *t)
{
	struct local_target *l = (struct local_target *)t;
	if (!l)
		return;
	cn_datastore_snapshot_abort(l->snap);
	for (size_t i = 0; i < l->nidx; i++)
		cn_index_writer_free(l->idx[i].w);
	free(l->idx);
	cn_buf_free(&l->manifest);
	free(l);
}

static const struct cn_target_ops local_target_ops = {
	.begin = lt_begin,
	.load_previous_index = lt_load_previous_index,
	.add_known = lt_add_known,
	.has_chunk = lt_has_chunk,
	.put_chunk = lt_put_chunk,
	.index_open = lt_index_open,
	.index_append = lt_index_append,
	.index_close = lt_index_close,
	.put_blob = lt_put_blob,
	.finish = lt_finish,
	.abort = lt_abort,
	.destroy = lt_destroy,
	.count_missing = lt_count_missing,
};

int cn_target_local_new(struct cn_datastore *ds, struct cn_target **out)
{
	struct local_target *l = calloc(1, sizeof(*l));
	if (!l)
		return cn_error_set(-ENOMEM, "out of memory for a local target");
	l->base.ops = &local_target_ops;
	snprintf(l->base.name, sizeof(l->base.name), "local:%s", cn_datastore_path(ds));
	l->ds = ds;
	*out = &l->base;
	return 0;
}

/* ---- source ------------------------------------------------------------- */

struct local_source {
	struct cn_source base;
	struct cn_datastore *ds;
	struct cn_snapshot_id id;
	int open;
};

/* Appends the snapshots of one group to *out. */
static int ls_append_group(struct local_source *l, const struct cn_snapshot_id *group,
			   struct cn_snapshot_info **out, size_t *n)
{
	struct cn_ds_snapshot_info *si;
	size_t m;
	int r = cn_datastore_list_snapshots(l->ds, group, 1, &si, &m);
	if (r < 0)
		return r;
	struct cn_snapshot_info *grown = realloc(*out, (*n + m + 1) * sizeof(**out));
	if (!grown) {
		free(si);
		return cn_error_set(-ENOMEM, "out of memory listing snapshots");
	}
	*out = grown;
	for (size_t i = 0; i < m; i++) {
		if (!si[i].finished)
			continue;
		struct cn_snapshot_info *x = &grown[(*n)++];
		x->id = si[i].id;
		x->size = si[i].size > 0 ? (uint64_t)si[i].size : 0;
		x->protected_ = si[i].protected_;
		x->encrypted = si[i].encrypted;
	}
	free(si);
	return 0;
}

static int ls_list(struct cn_source *s, const struct cn_snapshot_id *group,
		   struct cn_snapshot_info **out, size_t *n)
{
	struct local_source *l = (struct local_source *)s;
	*out = NULL;
	*n = 0;
	if (group->id[0])
		return ls_append_group(l, group, out, n);
	struct cn_snapshot_id *groups;
	size_t ng;
	int r = cn_datastore_list_groups(l->ds, group->ns, &groups, &ng);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ng && r == 0; i++)
		r = ls_append_group(l, &groups[i], out, n);
	free(groups);
	if (r < 0) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return r;
}

static int ls_open(struct cn_source *s, const struct cn_snapshot_id *id)
{
	struct local_source *l = (struct local_source *)s;
	struct cn_buf probe = {0};
	int r = cn_datastore_read_file(l->ds, id, CN_MANIFEST_BLOB_NAME, &probe);
	cn_buf_free(&probe);
	if (r < 0) {
		char path[512];
		cn_snapshot_path(id, path, sizeof(path));
		if (r == -ENOENT)
			return cn_error_set(-ENOENT, "snapshot %s not found in %s (see 'cairn snapshot list')",
					    path, cn_datastore_path(l->ds));
		return cn_error_prefix(r, "snapshot %s", path);
	}
	l->id = *id;
	l->open = 1;
	return 0;
}

static int ls_get_file(struct cn_source *s, const char *name, struct cn_buf *out)
{
	struct local_source *l = (struct local_source *)s;
	if (!l->open)
		return cn_error_set(-EINVAL, "no snapshot open");
	return cn_datastore_read_file(l->ds, &l->id, name, out);
}

static int ls_get_chunk(struct cn_source *s, const uint8_t digest[32], struct cn_buf *out)
{
	return cn_datastore_read_chunk(((struct local_source *)s)->ds, digest, out);
}

static void ls_destroy(struct cn_source *s)
{
	free(s);
}

static const struct cn_source_ops local_source_ops = {
	.list_snapshots = ls_list,
	.open = ls_open,
	.get_file = ls_get_file,
	.get_chunk = ls_get_chunk,
	.destroy = ls_destroy,
};

int cn_source_local_new(struct cn_datastore *ds, struct cn_source **out)
{
	struct local_source *l = calloc(1, sizeof(*l));
	if (!l)
		return cn_error_set(-ENOMEM, "out of memory for a local source");
	l->base.ops = &local_source_ops;
	snprintf(l->base.name, sizeof(l->base.name), "local:%s", cn_datastore_path(ds));
	l->ds = ds;
	*out = &l->base;
	return 0;
}
