/* cn_catalog_reader — see cn_catalog_reader.h. Upstream: proxmox-backup
 * pbs-datastore/src/catalog.rs (DirInfo::parse, CatalogReader,
 * catalog_decode_u64/i64). */
#include "pxar/cn_catalog_reader.h"
#include "pxar/cn_pxar_format.h"
#include "common/cn_error.h"
#include "common/cn_util.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 4096

struct cn_catalog_reader {
	const uint8_t *data;
	size_t len;
	uint64_t root;
	uint8_t *visited;   /* one bit per byte offset: tables already listed */
};

int cn_catalog_get_u64(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (unsigned i = 0; i < 10; i++) {
		if (*p >= end)
			return cn_error_set(-CN_E_TRUNCATED, "catalog varint truncated");
		uint8_t t = *(*p)++;
		uint64_t bits = t & 127;
		if (i == 9 && bits > 1)
			return cn_error_set(-CN_E_FORMAT, "catalog varint exceeds 64 bits");
		r |= bits << (7 * i);
		if (t < 128) {
			*v = r;
			return 0;
		}
	}
	return cn_error_set(-CN_E_FORMAT, "catalog varint without end marker");
}

int cn_catalog_get_i64(const uint8_t **p, const uint8_t *end, int64_t *v)
{
	uint64_t r = 0;
	for (unsigned i = 0; i < 11; i++) {
		if (*p >= end)
			return cn_error_set(-CN_E_TRUNCATED, "catalog varint truncated");
		uint8_t t = *(*p)++;
		if (t == 0) {
			/* negative end marker: -(accumulated); i64::MIN is 2^63 */
			if (r > (uint64_t)INT64_MAX + 1)
				return cn_error_set(-CN_E_FORMAT, "catalog i64 varint out of range");
			*v = r == 0 ? 0 : (int64_t)(0 - r);
			return 0;
		}
		uint64_t bits = t & 127;
		if (i >= 10 || (i == 9 && bits > 1))
			return cn_error_set(-CN_E_FORMAT, "catalog varint exceeds 64 bits");
		r |= bits << (7 * i);
		if (t < 128) {
			if (r > INT64_MAX)
				return cn_error_set(-CN_E_FORMAT, "catalog i64 varint out of range");
			*v = (int64_t)r;
			return 0;
		}
	}
	return cn_error_set(-CN_E_FORMAT, "catalog varint without end marker");
}

int cn_catalog_reader_open(const uint8_t *data, size_t len, struct cn_catalog_reader **out)
{
	static const uint8_t magic[] = CN_CATALOG_MAGIC;
	*out = NULL;
	if (len < CN_CATALOG_MAGIC_SIZE + 8)
		return cn_error_set(-CN_E_TRUNCATED, "catalog too short (%zu bytes)", len);
	if (memcmp(data, magic, CN_CATALOG_MAGIC_SIZE) != 0)
		return cn_error_set(-CN_E_MAGIC, "got unexpected magic number for catalog");
	uint64_t root = cn_le64(data + len - 8);
	if (root < CN_CATALOG_MAGIC_SIZE || root >= len - 8)
		return cn_error_set(-CN_E_FORMAT, "catalog root offset %llu out of range",
				    (unsigned long long)root);
	struct cn_catalog_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return cn_error_set(-ENOMEM, "out of memory");
	r->data = data;
	r->len = len;
	r->root = root;
	*out = r;
	return 0;
}

void cn_catalog_reader_free(struct cn_catalog_reader *r)
{
	if (!r)
		return;
	free(r->visited);
	free(r);
}

uint64_t cn_catalog_root(const struct cn_catalog_reader *r)
{
	return r->root;
}

static int check_name(const uint8_t *n, size_t len, uint64_t at)
{
	if (len == 0 || len > CN_CATALOG_MAX_NAME)
		return cn_error_set(-CN_E_PATH, "catalog entry name of bad length %zu at offset %llu",
				    len, (unsigned long long)at);
	if (memchr(n, '/', len) || memchr(n, 0, len) || (len == 1 && n[0] == '.') ||
	    (len == 2 && n[0] == '.' && n[1] == '.'))
		return cn_error_set(-CN_E_PATH, "illegal catalog entry name '%.*s' at offset %llu",
				    (int)len, n, (unsigned long long)at);
	return 0;
}

/* Parses the table at start; calls each(ctx, entry) per entry. */
typedef int (*entry_fn)(void *ctx, const struct cn_catalog_entry *e);

static int parse_table(const struct cn_catalog_reader *r, uint64_t start, entry_fn each, void *ctx)
{
	const uint8_t *end = r->data + r->len - 8, *p;
	uint64_t tlen, count;
	if (start < CN_CATALOG_MAGIC_SIZE || start >= r->len - 8)
		return cn_error_set(-CN_E_FORMAT, "catalog table offset %llu out of range",
				    (unsigned long long)start);
	p = r->data + start;
	int rc = cn_catalog_get_u64(&p, end, &tlen);
	if (rc < 0)
		return cn_error_prefix(rc, "catalog table at %llu", (unsigned long long)start);
	if (tlen < 1 || tlen > (uint64_t)(end - p))
		return cn_error_set(-CN_E_FORMAT, "catalog table at %llu has bad size %llu",
				    (unsigned long long)start, (unsigned long long)tlen);
	const uint8_t *tend = p + tlen;
	rc = cn_catalog_get_u64(&p, tend, &count);
	if (rc < 0)
		return cn_error_prefix(rc, "catalog table at %llu", (unsigned long long)start);
	if (count > tlen)
		return cn_error_set(-CN_E_FORMAT, "catalog table at %llu claims %llu entries in %llu bytes",
				    (unsigned long long)start, (unsigned long long)count,
				    (unsigned long long)tlen);
	for (uint64_t i = 0; i < count; i++) {
		struct cn_catalog_entry e = { 0 };
		uint64_t at = (uint64_t)(p - r->data), nl;
		if (p >= tend)
			return cn_error_set(-CN_E_TRUNCATED, "catalog table at %llu ends inside entry %llu",
					    (unsigned long long)start, (unsigned long long)i);
		e.type = (char)*p++;
		rc = cn_catalog_get_u64(&p, tend, &nl);
		if (rc < 0)
			return cn_error_prefix(rc, "catalog entry at %llu", (unsigned long long)at);
		if (nl > (uint64_t)(tend - p))
			return cn_error_set(-CN_E_TRUNCATED, "catalog entry name at %llu runs past its table",
					    (unsigned long long)at);
		e.name = p;
		e.name_len = (size_t)nl;
		p += nl;
		rc = check_name(e.name, e.name_len, at);
		if (rc < 0)
			return rc;
		switch (e.type) {
		case CN_CATALOG_DIR: {
			uint64_t off;
			rc = cn_catalog_get_u64(&p, tend, &off);
			if (rc < 0)
				return cn_error_prefix(rc, "catalog entry at %llu", (unsigned long long)at);
			if (off == 0 || off > start || start - off < CN_CATALOG_MAGIC_SIZE)
				return cn_error_set(-CN_E_FORMAT, "got wrong directory offset (%llu > %llu) at %llu",
						    (unsigned long long)off, (unsigned long long)start,
						    (unsigned long long)at);
			e.dir_start = start - off;
			break;
		}
		case CN_CATALOG_FILE:
			rc = cn_catalog_get_u64(&p, tend, &e.size);
			if (rc == 0)
				rc = cn_catalog_get_i64(&p, tend, &e.mtime);
			if (rc < 0)
				return cn_error_prefix(rc, "catalog entry at %llu", (unsigned long long)at);
			break;
		case CN_CATALOG_SYMLINK: case CN_CATALOG_HARDLINK: case CN_CATALOG_BLOCKDEV:
		case CN_CATALOG_CHARDEV: case CN_CATALOG_FIFO: case CN_CATALOG_SOCKET:
			break;
		default:
			return cn_error_set(-CN_E_FORMAT, "invalid catalog entry type 0x%02x at offset %llu",
					    (unsigned char)e.type, (unsigned long long)at);
		}
		if (each) {
			rc = each(ctx, &e);
			if (rc != 0)
				return rc;
		}
	}
	if (p != tend)
		return cn_error_set(-CN_E_FORMAT, "unable to parse whole catalog data block at %llu",
				    (unsigned long long)start);
	return 0;
}

struct dir_ctx {
	struct cn_catalog_reader *r;
	const char *prefix;
	cn_catalog_fn fn;
	void *ctx;
	char *path;
	size_t cap;
	int recursive;
	unsigned depth;
};

static int set_path(struct dir_ctx *c, const struct cn_catalog_entry *e)
{
	size_t pl = strlen(c->prefix);
	size_t need = pl + 1 + e->name_len + 1;
	if (need > c->cap) {
		char *np = realloc(c->path, need);
		if (!np)
			return cn_error_set(-ENOMEM, "out of memory");
		c->path = np;
		c->cap = need;
	}
	memcpy(c->path, c->prefix, pl);
	size_t o = pl;
	if (pl)
		c->path[o++] = '/';
	memcpy(c->path + o, e->name, e->name_len);
	c->path[o + e->name_len] = 0;
	return 0;
}

static int walk(struct dir_ctx *c, uint64_t start);

static int dir_entry(void *ctx, const struct cn_catalog_entry *e)
{
	struct dir_ctx *c = ctx;
	int rc = set_path(c, e);
	if (rc < 0)
		return rc;
	rc = c->fn(c->ctx, c->path, e);
	if (rc < 0 || !c->recursive || e->type != CN_CATALOG_DIR)
		return rc;
	/* recurse with this entry's path as prefix */
	struct dir_ctx sub = *c;
	sub.prefix = c->path;
	sub.path = NULL;
	sub.cap = 0;
	sub.depth = c->depth + 1;
	rc = walk(&sub, e->dir_start);
	free(sub.path);
	return rc;
}

static int walk(struct dir_ctx *c, uint64_t start)
{
	struct cn_catalog_reader *r = c->r;
	if (c->depth > MAX_DEPTH)
		return cn_error_set(-CN_E_FORMAT, "catalog directories nested deeper than %d", MAX_DEPTH);
	if (c->recursive) {
		if (!r->visited) {
			r->visited = calloc(r->len / 8 + 1, 1);
			if (!r->visited)
				return cn_error_set(-ENOMEM, "out of memory");
		}
		if (r->visited[start / 8] & (1u << (start % 8)))
			return cn_error_set(-CN_E_FORMAT, "catalog table at %llu is referenced twice",
					    (unsigned long long)start);
		r->visited[start / 8] |= (uint8_t)(1u << (start % 8));
	}
	return parse_table(r, start, dir_entry, c);
}

int cn_catalog_read_dir(struct cn_catalog_reader *r, uint64_t start, const char *prefix,
			cn_catalog_fn fn, void *ctx)
{
	struct dir_ctx c = { r, prefix ? prefix : "", fn, ctx, NULL, 0, 0, 0 };
	int rc = parse_table(r, start, dir_entry, &c);
	free(c.path);
	return rc;
}

struct find_ctx {
	const char *name;
	size_t len;
	struct cn_catalog_entry found;
	int ok;
};

static int find_entry(void *ctx, const struct cn_catalog_entry *e)
{
	struct find_ctx *f = ctx;
	if (e->name_len == f->len && memcmp(e->name, f->name, f->len) == 0) {
		f->found = *e;
		f->ok = 1;
		return 1; /* stop: found */
	}
	return 0;
}

int cn_catalog_lookup(struct cn_catalog_reader *r, const char *path, struct cn_catalog_entry *out)
{
	struct cn_catalog_entry cur = { .type = CN_CATALOG_DIR, .name = (const uint8_t *)"",
					.dir_start = r->root };
	const char *p = path ? path : "";
	for (;;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *s = strchr(p, '/');
		size_t n = s ? (size_t)(s - p) : strlen(p);
		if (cur.type != CN_CATALOG_DIR)
			return 0;
		struct find_ctx f = { p, n, { 0 }, 0 };
		int rc = parse_table(r, cur.dir_start, find_entry, &f);
		if (rc < 0)
			return rc;
		if (!f.ok)
			return 0;
		cur = f.found;
		p += n;
	}
	*out = cur;
	return 1;
}

int cn_catalog_list(struct cn_catalog_reader *r, const char *path, cn_catalog_fn fn, void *ctx)
{
	struct cn_catalog_entry e;
	int rc = cn_catalog_lookup(r, path, &e);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return cn_error_set(-ENOENT, "'%s' not found in catalog", path);
	/* normalised prefix: path without leading/trailing '/' */
	const char *p = path ? path : "";
	while (*p == '/')
		p++;
	size_t n = strlen(p);
	while (n && p[n - 1] == '/')
		n--;
	char *prefix = strndup(p, n);
	if (!prefix)
		return cn_error_set(-ENOMEM, "out of memory");
	if (r->visited)
		memset(r->visited, 0, r->len / 8 + 1);
	if (e.type != CN_CATALOG_DIR || n > 0) {
		rc = fn(ctx, prefix, &e);
		if (rc < 0 || e.type != CN_CATALOG_DIR) {
			free(prefix);
			return rc < 0 ? rc : 0;
		}
	}
	struct dir_ctx c = { r, prefix, fn, ctx, NULL, 0, 1, 0 };
	rc = walk(&c, e.dir_start);
	free(c.path);
	free(prefix);
	return rc < 0 ? rc : 0;
}
