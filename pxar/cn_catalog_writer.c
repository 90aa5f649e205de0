/* cn_catalog_writer — catalog.pcat1 writer (see cn_catalog_writer.h).
 *
 * Each open directory keeps its entries already encoded except for the
 * 'd' entries, whose value (distance back from this table's start to the
 * child table) is only known when this table is written; they are kept as
 * (absolute child start, name) and encoded at close time in their
 * original position. */
#include "pxar/cn_catalog_writer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

struct cat_entry {
	uint8_t type;
	size_t name_off, name_len;  /* into dir->names */
	uint64_t a;                 /* size, or child table start for 'd' */
	int64_t mtime;
};

struct cat_dir {
	struct cn_buf names;   /* the directory's own name, then entry names */
	size_t own_name_len;
	struct cat_entry *entries;
	size_t n, cap;
};

struct cn_catalog_writer {
	cn_write_fn out;
	void *ctx;
	uint64_t pos;
	struct cat_dir *stack;
	size_t depth, cap;
	int failed;
	int finished;
};

static int write_out(struct cn_catalog_writer *w, const void *data, size_t len)
{
	int rc = w->out(w->ctx, data, len);
	if (rc < 0) {
		w->failed = 1;
		return rc;
	}
	w->pos += len;
	return 0;
}

static int push_dir(struct cn_catalog_writer *w, const void *name, size_t len)
{
	if (w->depth == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 16;
		struct cat_dir *p = realloc(w->stack, nc * sizeof(*p));
		if (!p)
			return -ENOMEM;
		w->stack = p;
		w->cap = nc;
	}
	struct cat_dir *d = &w->stack[w->depth];
	memset(d, 0, sizeof(*d));
	if (cn_buf_append(&d->names, name, len) < 0)
		return -ENOMEM;
	d->own_name_len = len;
	w->depth++;
	return 0;
}

static void free_dir(struct cat_dir *d)
{
	cn_buf_free(&d->names);
	free(d->entries);
}

int cn_catalog_writer_new(cn_write_fn out, void *ctx, struct cn_catalog_writer **w)
{
	static const uint8_t magic[CN_CATALOG_MAGIC_SIZE] = CN_CATALOG_MAGIC;
	*w = NULL;
	struct cn_catalog_writer *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->out = out;
	c->ctx = ctx;
	int rc = push_dir(c, "/", 1);
	if (rc == 0)
		rc = write_out(c, magic, sizeof(magic));
	if (rc < 0) {
		cn_catalog_writer_free(c);
		return rc;
	}
	*w = c;
	return 0;
}

static int check(struct cn_catalog_writer *w, size_t len)
{
	if (w->failed || w->finished || w->depth == 0)
		return cn_error_set(-EINVAL, "catalog writer: not writable (after error or finish)");
	if (len > CN_CATALOG_MAX_NAME)
		return cn_error_set(-ENAMETOOLONG, "catalog: entry name too long (%zu bytes)", len);
	return 0;
}

static int add(struct cn_catalog_writer *w, uint8_t type, const void *name, size_t len,
	       uint64_t a, int64_t mtime)
{
	int rc = check(w, len);
	if (rc < 0)
		return rc;
	struct cat_dir *d = &w->stack[w->depth - 1];
	if (d->n == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 16;
		struct cat_entry *p = realloc(d->entries, nc * sizeof(*p));
		if (!p)
			return -ENOMEM;
		d->entries = p;
		d->cap = nc;
	}
	size_t off = d->names.len;
	if (cn_buf_append(&d->names, name, len) < 0)
		return -ENOMEM;
	d->entries[d->n++] = (struct cat_entry){ type, off, len, a, mtime };
	return 0;
}

int cn_catalog_writer_start_directory(struct cn_catalog_writer *w, const void *name, size_t len)
{
	int rc = check(w, len);
	return rc < 0 ? rc : push_dir(w, name, len);
}

int cn_catalog_writer_add_file(struct cn_catalog_writer *w, const void *name, size_t len,
			       uint64_t size, int64_t mtime)
{
	return add(w, CN_CATALOG_FILE, name, len, size, mtime);
}

int cn_catalog_writer_add_entry(struct cn_catalog_writer *w, uint8_t type, const void *name,
				size_t len)
{
	switch (type) {
	case CN_CATALOG_SYMLINK: case CN_CATALOG_HARDLINK: case CN_CATALOG_BLOCKDEV:
	case CN_CATALOG_CHARDEV: case CN_CATALOG_FIFO: case CN_CATALOG_SOCKET:
		return add(w, type, name, len, 0, 0);
	default:
		return cn_error_set(-EINVAL, "catalog: bad entry type 0x%02x", type);
	}
}

/* Encodes and writes the top directory's table at the current position. */
static int write_table(struct cn_catalog_writer *w, struct cat_dir *d, uint64_t start)
{
	struct cn_buf table = { 0 }, data = { 0 };
	uint8_t v[11];
	int rc = cn_buf_append(&table, v, cn_catalog_put_u64(v, d->n));
	for (size_t i = 0; rc == 0 && i < d->n; i++) {
		const struct cat_entry *e = &d->entries[i];
		rc = cn_buf_append(&table, &e->type, 1);
		if (rc == 0)
			rc = cn_buf_append(&table, v, cn_catalog_put_u64(v, e->name_len));
		if (rc == 0)
			rc = cn_buf_append(&table, d->names.data + e->name_off, e->name_len);
		if (rc == 0 && e->type == CN_CATALOG_DIR)
			rc = cn_buf_append(&table, v, cn_catalog_put_u64(v, start - e->a));
		if (rc == 0 && e->type == CN_CATALOG_FILE) {
			rc = cn_buf_append(&table, v, cn_catalog_put_u64(v, e->a));
			if (rc == 0)
				rc = cn_buf_append(&table, v, cn_catalog_put_i64(v, e->mtime));
		}
	}
	if (rc == 0)
		rc = cn_buf_append(&data, v, cn_catalog_put_u64(v, table.len));
	if (rc == 0)
		rc = cn_buf_append(&data, table.data, table.len);
	if (rc == 0)
		rc = write_out(w, data.data, data.len);
	cn_buf_free(&table);
	cn_buf_free(&data);
	return rc;
}

int cn_catalog_writer_end_directory(struct cn_catalog_writer *w)
{
	int rc = check(w, 0);
	if (rc < 0)
		return rc;
	if (w->depth < 2)
		return cn_error_set(-EINVAL, "catalog: got unexpected end_directory level 0");
	struct cat_dir *d = &w->stack[w->depth - 1];
	uint64_t start = w->pos;
	rc = write_table(w, d, start);
	if (rc == 0) {
		w->depth--;
		rc = add(w, CN_CATALOG_DIR, d->names.data, d->own_name_len, start, 0);
		free_dir(d);
	}
	return rc;
}

int cn_catalog_writer_finish(struct cn_catalog_writer *w)
{
	int rc = check(w, 0);
	if (rc < 0)
		return rc;
	if (w->depth != 1)
		return cn_error_set(-EINVAL, "catalog: unable to finish catalog at level %zu", w->depth);
	uint64_t start = w->pos;
	uint8_t t[8];
	cn_put_le64(t, start);
	if ((rc = write_table(w, &w->stack[0], start)) < 0 || (rc = write_out(w, t, sizeof(t))) < 0)
		return rc;
	w->finished = 1;
	return 0;
}

uint64_t cn_catalog_writer_position(const struct cn_catalog_writer *w) { return w->pos; }

void cn_catalog_writer_free(struct cn_catalog_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->depth; i++)
		free_dir(&w->stack[i]);
	free(w->stack);
	free(w);
}
