/* An in-memory cn_target for unit tests: keeps chunks (by reference),
 * builds real index files with cn_index_writer, stores blobs, and can be
 * told to fail its Nth put_chunk. Header-only, test code (Check). */
#ifndef MEM_TARGET_H
#define MEM_TARGET_H

#include "cn_test.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "engine/cn_target.h"
#include "store/cn_blob.h"
#include "store/cn_index.h"

#define MEM_MAX_FILES 8

struct mem_target {
	struct cn_target base;
	int fail_put_at;          /* fail the put with this number (1-based); 0 = never */
	int puts, has_calls, began, finished, aborted;
	struct cn_chunk **chunks;
	size_t nchunks, capchunks;
	struct cn_index_writer *writers[MEM_MAX_FILES];
	char names[MEM_MAX_FILES][64];
	struct cn_buf files[MEM_MAX_FILES]; /* finished index files and blobs */
	size_t nfiles;
};

static struct cn_chunk *mem_find(struct mem_target *m, const uint8_t d[32])
{
	for (size_t i = 0; i < m->nchunks; i++)
		if (!memcmp(m->chunks[i]->digest, d, 32))
			return m->chunks[i];
	return NULL;
}

static int mem_begin(struct cn_target *t, const struct cn_snapshot_id *id, struct cn_buf *prev,
		     int64_t *prev_time)
{
	struct mem_target *m = (struct mem_target *)t;
	(void)id;
	(void)prev;
	m->began++;
	*prev_time = -1;
	return 0;
}

static int mem_load_prev(struct cn_target *t, const char *name, struct cn_buf *out)
{
	(void)t;
	(void)name;
	(void)out;
	return -ENOENT;
}

static int mem_add_known(struct cn_target *t, const uint8_t (*d)[32], size_t n)
{
	(void)t;
	(void)d;
	(void)n;
	return 0;
}

static int mem_has(struct cn_target *t, const uint8_t d[32])
{
	struct mem_target *m = (struct mem_target *)t;
	m->has_calls++;
	return mem_find(m, d) != NULL;
}

static int mem_put(struct cn_target *t, struct cn_chunk *c)
{
	struct mem_target *m = (struct mem_target *)t;
	if (++m->puts == m->fail_put_at)
		return cn_error_set(-ENOSPC, "injected failure at put %d", m->puts);
	if (m->nchunks == m->capchunks) {
		m->capchunks = m->capchunks ? 2 * m->capchunks : 64;
		m->chunks = realloc(m->chunks, m->capchunks * sizeof(*m->chunks));
	}
	m->chunks[m->nchunks++] = cn_chunk_ref(c);
	return 0;
}

static int mem_index_open(struct cn_target *t, const char *name, enum cn_index_kind kind,
			  uint64_t size, uint32_t chunk_size)
{
	struct mem_target *m = (struct mem_target *)t;
	size_t h = m->nfiles++;
	snprintf(m->names[h], sizeof(m->names[h]), "%s", name);
	return cn_index_writer_new(kind, NULL, 0, size, chunk_size, &m->writers[h]) < 0 ? -EIO
										     : (int)h;
}

static int mem_index_append(struct cn_target *t, int h, const struct cn_index_entry *e, size_t n)
{
	struct mem_target *m = (struct mem_target *)t;
	for (size_t i = 0; i < n; i++)
		if (!mem_find(m, e[i].digest))
			return cn_error_set(-EINVAL, "index entry for a chunk never put");
	return cn_index_writer_append(m->writers[h], e, n);
}

static int mem_index_close(struct cn_target *t, int h, uint64_t count, uint64_t size,
			   const uint8_t csum[32])
{
	struct mem_target *m = (struct mem_target *)t;
	uint8_t mine[32];
	if (count != cn_index_writer_count(m->writers[h]) ||
	    size != cn_index_writer_size(m->writers[h]))
		return cn_error_set(-CN_E_CHECKSUM, "count/size mismatch");
	int r = cn_index_writer_finish(m->writers[h], &m->files[h], mine);
	cn_index_writer_free(m->writers[h]);
	m->writers[h] = NULL;
	if (r < 0)
		return r;
	return memcmp(mine, csum, 32) ? cn_error_set(-CN_E_CHECKSUM, "csum mismatch") : 0;
}

static int mem_put_blob(struct cn_target *t, const char *name, const uint8_t *d, size_t len)
{
	struct mem_target *m = (struct mem_target *)t;
	size_t h = m->nfiles++;
	snprintf(m->names[h], sizeof(m->names[h]), "%s", name);
	return cn_buf_append(&m->files[h], d, len);
}

static int mem_finish(struct cn_target *t)
{
	((struct mem_target *)t)->finished++;
	return 0;
}

static void mem_abort(struct cn_target *t)
{
	((struct mem_target *)t)->aborted++;
}

static void mem_destroy(struct cn_target *t)
{
	struct mem_target *m = (struct mem_target *)t;
	for (size_t i = 0; i < m->nchunks; i++)
		cn_chunk_unref(m->chunks[i]);
	free(m->chunks);
	for (size_t i = 0; i < m->nfiles; i++) {
		cn_index_writer_free(m->writers[i]);
		cn_buf_free(&m->files[i]);
	}
	free(m);
}

static const struct cn_target_ops mem_ops = {
	mem_begin, mem_load_prev, mem_add_known, mem_has, mem_put, mem_index_open,
	mem_index_append, mem_index_close, mem_put_blob, mem_finish, mem_abort, mem_destroy, NULL, NULL,
	NULL,
};

static struct mem_target *mem_target_new(const char *name)
{
	struct mem_target *m = calloc(1, sizeof(*m));
	m->base.ops = &mem_ops;
	snprintf(m->base.name, sizeof(m->base.name), "%s", name);
	return m;
}

/* The file called name, or NULL. */
static struct cn_buf *mem_file(struct mem_target *m, const char *name)
{
	for (size_t i = 0; i < m->nfiles; i++)
		if (!strcmp(m->names[i], name))
			return &m->files[i];
	return NULL;
}

/* Reassembles the stream of index `name` from m's chunks and checks it
 * against expect: every entry there, in order, with the right sizes. */
static void mem_check_stream(struct mem_target *m, const char *name, const uint8_t *expect,
			     size_t len)
{
	struct cn_buf *f = mem_file(m, name);
	ck_assert_ptr_nonnull(f);
	struct cn_index *idx;
	ck_assert_int_eq(cn_index_parse(f->data, f->len, &idx), 0);
	ck_assert_uint_eq(cn_index_size(idx), len);
	struct cn_buf out = {0};
	for (size_t i = 0; i < cn_index_count(idx); i++) {
		uint8_t d[32];
		uint64_t start, end;
		cn_index_entry(idx, i, &start, &end, d);
		struct cn_chunk *c = mem_find(m, d);
		ck_assert_ptr_nonnull(c);
		ck_assert_int_eq(cn_blob_decode(c->data, c->len, NULL, d, &out), 0);
		ck_assert_uint_eq(out.len, end);
	}
	ck_assert_uint_eq(out.len, len);
	ck_assert(memcmp(out.data, expect, len) == 0);
	cn_buf_free(&out);
	cn_index_free(idx);
}

#endif
