/* The datastore layout as object keys; snapshot listing by LIST. */
#include "net/cn_s3_layout.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"

void cn_s3_chunk_key(const uint8_t digest[32], char *out)
{
	char hex[65];
	cn_hex_encode(digest, 32, hex);
	snprintf(out, 82, ".chunks/%.4s/%s", hex, hex);
}

int cn_s3_snapshot_key(const struct cn_snapshot_id *id, const char *name, char *out, size_t n)
{
	char p[600];
	if (cn_snapshot_path(id, p, sizeof(p)) < 0)
		return cn_error_set(-ENAMETOOLONG, "snapshot path too long");
	int w = snprintf(out, n, "%s/%s", p, name ? name : "");
	return (w < 0 || (size_t)w >= n) ? cn_error_set(-ENAMETOOLONG, "S3 key too long") : 0;
}

int cn_s3_writer_key(const struct cn_snapshot_id *id, char *out, size_t n)
{
	char p[600];
	if (cn_snapshot_path(id, p, sizeof(p)) < 0)
		return cn_error_set(-ENAMETOOLONG, "snapshot path too long");
	int w = snprintf(out, n, "%s%s", CN_S3_WRITERS, p);
	return (w < 0 || (size_t)w >= n) ? cn_error_set(-ENAMETOOLONG, "S3 key too long") : 0;
}

/* "ns/a/ns/b/" for namespace "a/b" ("" for the root) */
static int ns_prefix(const char *ns, char *out, size_t n)
{
	size_t o = 0;
	out[0] = '\0';
	while (*ns) {
		size_t l = strcspn(ns, "/");
		int w = snprintf(out + o, n - o, "ns/%.*s/", (int)l, ns);
		if (w < 0 || (size_t)w >= n - o)
			return -ENAMETOOLONG;
		o += (size_t)w;
		ns += l;
		while (*ns == '/')
			ns++;
	}
	return 0;
}

struct list_ctx {
	struct cn_snapshot_id base;   /* ns and type of the listing */
	int one_group;                /* keys are "TIME/file" of base.id */
	struct cn_snapshot_info *v;
	size_t n, cap;
	int *has_manifest;
	int cur;                      /* index of the snapshot being filled, -1 none */
	size_t skip;                  /* length of the listing's prefix */
	int err;
};

static int on_key(void *ud, const char *key, uint64_t size, int is_prefix)
{
	struct list_ctx *c = ud;
	(void)size;
	if (is_prefix || strlen(key) < c->skip)
		return 0;
	key += c->skip;
	char id[sizeof(c->base.id)];
	const char *rest = key;
	if (!c->one_group) {
		size_t l = strcspn(key, "/");
		if (!key[l] || l >= sizeof(id))
			return 0; /* not "ID/..." */
		memcpy(id, key, l);
		id[l] = '\0';
		rest = key + l + 1;
	} else {
		snprintf(id, sizeof(id), "%s", c->base.id);
	}
	const char *slash = strchr(rest, '/');
	if (!slash || slash - rest >= 32)
		return 0; /* the group's owner, or something that is no snapshot */
	char ts[32];
	memcpy(ts, rest, (size_t)(slash - rest));
	ts[slash - rest] = '\0';
	const char *file = slash + 1;
	if (strchr(file, '/'))
		return 0;
	int64_t t;
	if (cn_snapshot_check_id(id) < 0 || cn_snapshot_parse_time(ts, &t) < 0) {
		cn_error_clear();
		return 0;
	}
	/* keys sharing a snapshot prefix come together in a listing */
	if (c->cur < 0 || strcmp(c->v[c->cur].id.id, id) != 0 || c->v[c->cur].id.time != t) {
		if (c->n == c->cap) {
			size_t nc = c->cap ? c->cap * 2 : 64;
			struct cn_snapshot_info *nv = realloc(c->v, nc * sizeof(*nv));
			int *nh = realloc(c->has_manifest, nc * sizeof(*nh));
			if (nv)
				c->v = nv;
			if (nh)
				c->has_manifest = nh;
			if (!nv || !nh)
				return c->err = cn_error_set(-ENOMEM, "out of memory listing snapshots");
			c->cap = nc;
		}
		struct cn_snapshot_info *si = &c->v[c->n];
		memset(si, 0, sizeof(*si));
		si->id = c->base;
		snprintf(si->id.id, sizeof(si->id.id), "%s", id);
		si->id.time = t;
		si->encrypted = -1;
		c->has_manifest[c->n] = 0;
		c->cur = (int)c->n++;
	}
	if (strcmp(file, CN_S3_MANIFEST) == 0)
		c->has_manifest[c->cur] = 1;
	else if (strcmp(file, ".protected") == 0)
		c->v[c->cur].protected_ = 1;
	return 0;
}

static int cmp_info(const void *a, const void *b)
{
	const struct cn_snapshot_info *x = a, *y = b;
	int r = strcmp(x->id.type, y->id.type);
	if (!r)
		r = strcmp(x->id.id, y->id.id);
	if (!r)
		r = (x->id.time > y->id.time) - (x->id.time < y->id.time);
	return r;
}

int cn_s3_list_snapshots(struct cn_s3 *s3, const struct cn_snapshot_id *group,
			 struct cn_snapshot_info **out, size_t *n)
{
	static const char *const types[] = {"ct", "host", "vm"};
	struct list_ctx c = {.base = *group, .cur = -1};
	char nsp[512], prefix[1024];
	int r = 0;
	c.base.time = 0;
	if (ns_prefix(group->ns, nsp, sizeof(nsp)) < 0)
		return cn_error_set(-ENAMETOOLONG, "namespace too long");
	for (size_t i = 0; i < 3 && r == 0; i++) {
		if (group->type[0] && strcmp(group->type, types[i]) != 0)
			continue;
		snprintf(c.base.type, sizeof(c.base.type), "%s", types[i]);
		c.one_group = group->id[0] != '\0';
		snprintf(prefix, sizeof(prefix), "%s%s/%s%s", nsp, types[i], group->id,
			 c.one_group ? "/" : "");
		c.cur = -1;
		c.skip = strlen(prefix);
		r = cn_s3_list(s3, prefix, NULL, on_key, &c);
		if (r == 0 && c.err)
			r = c.err;
	}
	if (r < 0) {
		free(c.v);
		free(c.has_manifest);
		return r;
	}
	size_t k = 0;
	for (size_t i = 0; i < c.n; i++)
		if (c.has_manifest[i])
			c.v[k++] = c.v[i];
	free(c.has_manifest);
	if (k > 1)
		qsort(c.v, k, sizeof(*c.v), cmp_info);
	*out = c.v;
	*n = k;
	return 0;
}

/* The key of file `name` of snapshot id into key (with the manifest
 * checked: -ENOENT with a message when the snapshot is not finished). */
static int finished_key(struct cn_s3 *s3, const struct cn_snapshot_id *id, const char *name,
			char *key, size_t n)
{
	char man[800];
	int r = cn_s3_snapshot_key(id, CN_S3_MANIFEST, man, sizeof(man));
	if (r == 0)
		r = cn_s3_head(s3, man, NULL);
	if (r == -ENOENT) {
		char path[600];
		cn_snapshot_path(id, path, sizeof(path));
		return cn_error_set(-ENOENT, "snapshot %s not found in %s", path, cn_s3_name(s3));
	}
	return r < 0 ? r : cn_s3_snapshot_key(id, name, key, n);
}

int cn_s3_set_protected(struct cn_s3 *s3, const struct cn_snapshot_id *id, int on)
{
	char key[800];
	int r = finished_key(s3, id, ".protected", key, sizeof(key));
	if (r < 0)
		return r;
	return on ? cn_s3_put(s3, key, "", 0) : cn_s3_delete(s3, key);
}

/* Collects the keys of a listing, NUL-terminated one after another. */
static int on_snapshot_key(void *ctx, const char *key, uint64_t size, int is_prefix)
{
	(void)size;
	if (is_prefix)
		return 0;
	return cn_buf_append(ctx, key, strlen(key) + 1) < 0
		       ? cn_error_set(-ENOMEM, "out of memory listing a snapshot")
		       : 0;
}

int cn_s3_forget(struct cn_s3 *s3, const struct cn_snapshot_id *id)
{
	char pkey[800], dir[800], path[600];
	int r = finished_key(s3, id, ".protected", pkey, sizeof(pkey));
	if (r < 0)
		return r;
	cn_snapshot_path(id, path, sizeof(path));
	r = cn_s3_head(s3, pkey, NULL);
	if (r == 0)
		return cn_error_set(-EPERM, "snapshot %s in %s is protected", path, cn_s3_name(s3));
	if (r != -ENOENT)
		return r;
	cn_error_clear();
	/* the manifest first: once it is gone, nothing half-removed looks like
	 * a snapshot (gc takes what a failure below leaves) */
	char man[800];
	if ((r = cn_s3_snapshot_key(id, CN_S3_MANIFEST, man, sizeof(man))) < 0 ||
	    (r = cn_s3_delete(s3, man)) < 0 ||
	    (r = cn_s3_snapshot_key(id, NULL, dir, sizeof(dir))) < 0)
		return r;
	struct cn_buf keys = {0};
	r = cn_s3_list(s3, dir, NULL, on_snapshot_key, &keys);
	for (size_t o = 0; r == 0 && o < keys.len; o += strlen((char *)keys.data + o) + 1)
		r = cn_s3_delete(s3, (char *)keys.data + o);
	cn_buf_free(&keys);
	return r < 0 ? cn_error_prefix(r, "removing snapshot %s from %s", path, cn_s3_name(s3)) : 0;
}
