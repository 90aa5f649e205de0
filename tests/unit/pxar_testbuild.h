/* pxar_testbuild — a tiny item-level pxar writer for tests: builds valid
 * archives item by item (goodbye tables with the real hash and BST
 * permutation) so that tests can then corrupt exactly one field, and
 * builds archives the encoder would never write (duplicate names,
 * hostile hardlinks). Test code only; header-only on purpose. */
#ifndef PXAR_TESTBUILD_H
#define PXAR_TESTBUILD_H

#include "common/cn_util.h"
#include "pxar/cn_pxar_format.h"

#include <stdlib.h>
#include <string.h>

#define TB_MAX_DEPTH 64
#define TB_MAX_CHILDREN 512

struct tb_child {
	uint64_t hash, fo, end;
};

struct tb_dir {
	uint64_t entry_off;
	size_t n;
	struct tb_child ch[TB_MAX_CHILDREN];
	uint64_t cur_fo, cur_hash; /* the child being written */
};

struct tb {
	struct cn_buf b;
	struct tb_dir *dirs;
	int depth;
	int fail;
};

static inline void tb_init(struct tb *t)
{
	memset(t, 0, sizeof(*t));
	t->dirs = calloc(TB_MAX_DEPTH, sizeof(*t->dirs));
}

static inline void tb_free(struct tb *t)
{
	cn_buf_free(&t->b);
	free(t->dirs);
}

static inline uint64_t tb_pos(const struct tb *t)
{
	return t->b.len;
}

static inline void tb_u64(struct tb *t, uint64_t v)
{
	uint8_t x[8];
	cn_put_le64(x, v);
	if (cn_buf_append(&t->b, x, 8) < 0)
		t->fail = 1;
}

static inline void tb_item(struct tb *t, uint64_t htype, const void *data, size_t len)
{
	tb_u64(t, htype);
	tb_u64(t, CN_PXAR_HEADER_SIZE + len);
	if (len && cn_buf_append(&t->b, data, len) < 0)
		t->fail = 1;
}

/* ENTRY with a 40-byte Stat. */
static inline void tb_entry(struct tb *t, uint64_t mode, uint32_t uid, uint32_t gid, int64_t secs,
			    uint32_t nanos)
{
	uint8_t st[40] = { 0 };
	cn_put_le64(st, mode);
	cn_put_le32(st + 16, uid);
	cn_put_le32(st + 20, gid);
	cn_put_le64(st + 24, (uint64_t)secs);
	cn_put_le32(st + 32, nanos);
	tb_item(t, CN_PXAR_ENTRY, st, sizeof(st));
}

/* Starts a directory whose ENTRY is written next (call before tb_entry). */
static inline void tb_dir_begin(struct tb *t)
{
	struct tb_dir *d = &t->dirs[t->depth++];
	d->entry_off = tb_pos(t);
	d->n = 0;
}

/* FILENAME of the next child of the current directory. */
static inline void tb_name(struct tb *t, const char *name)
{
	struct tb_dir *d = &t->dirs[t->depth - 1];
	d->cur_fo = tb_pos(t);
	d->cur_hash = cn_pxar_hash_filename(name, strlen(name));
	tb_item(t, CN_PXAR_FILENAME, name, strlen(name) + 1);
}

/* Marks the end of the current child (after its last item). */
static inline void tb_child_done(struct tb *t)
{
	struct tb_dir *d = &t->dirs[t->depth - 1];
	d->ch[d->n].hash = d->cur_hash;
	d->ch[d->n].fo = d->cur_fo;
	d->ch[d->n].end = tb_pos(t);
	d->n++;
}

static inline int tb_cmp_hash(const void *a, const void *b)
{
	const struct tb_child *x = a, *y = b;
	return x->hash < y->hash ? -1 : x->hash > y->hash;
}

/* Writes the goodbye table of the current directory and closes it; for a
 * subdirectory, also finishes it as a child of its parent. root_base is
 * the offset the root's tail refers to (0). */
static inline void tb_dir_end(struct tb *t)
{
	struct tb_dir *d = &t->dirs[t->depth - 1];
	uint64_t g = tb_pos(t);
	struct tb_child sorted[TB_MAX_CHILDREN];
	size_t slot[TB_MAX_CHILDREN];
	memcpy(sorted, d->ch, d->n * sizeof(*sorted));
	qsort(sorted, d->n, sizeof(*sorted), tb_cmp_hash);
	cn_pxar_goodbye_permute(d->n, slot);
	tb_u64(t, CN_PXAR_GOODBYE);
	tb_u64(t, CN_PXAR_HEADER_SIZE + 24 * (d->n + 1));
	for (size_t i = 0; i < d->n; i++) {
		const struct tb_child *c = &sorted[slot[i]];
		tb_u64(t, c->hash);
		tb_u64(t, g - c->fo);
		tb_u64(t, c->end - c->fo);
	}
	tb_u64(t, CN_PXAR_GOODBYE_TAIL_MARKER);
	tb_u64(t, t->depth == 1 ? g : g - d->entry_off);
	tb_u64(t, CN_PXAR_HEADER_SIZE + 24 * (d->n + 1));
	t->depth--;
	if (t->depth > 0)
		tb_child_done(t);
}

/* Convenience: whole children. */
static inline void tb_file(struct tb *t, const char *name, uint64_t mode, const void *data,
			   size_t len)
{
	tb_name(t, name);
	tb_entry(t, CN_PXAR_IFREG | mode, 0, 0, 1700000000, 0);
	tb_item(t, CN_PXAR_PAYLOAD, data, len);
	tb_child_done(t);
}

static inline void tb_symlink(struct tb *t, const char *name, const char *target)
{
	tb_name(t, name);
	tb_entry(t, CN_PXAR_IFLNK | 0777, 0, 0, 1700000000, 0);
	tb_item(t, CN_PXAR_SYMLINK, target, strlen(target) + 1);
	tb_child_done(t);
}

static inline void tb_subdir(struct tb *t, const char *name, uint64_t mode)
{
	tb_name(t, name);
	tb_dir_begin(t);
	tb_entry(t, CN_PXAR_IFDIR | mode, 0, 0, 1700000000, 0);
}

/* Hardlink child: offset from this FILENAME back to target_fo. */
static inline void tb_hardlink(struct tb *t, const char *name, uint64_t target_fo,
			       const char *target_path)
{
	tb_name(t, name);
	uint8_t buf[8 + 4097];
	size_t l = strlen(target_path);
	cn_put_le64(buf, t->dirs[t->depth - 1].cur_fo - target_fo);
	memcpy(buf + 8, target_path, l + 1);
	tb_item(t, CN_PXAR_HARDLINK, buf, 8 + l + 1);
	tb_child_done(t);
}

/* v2 split archive: a regular file whose metadata goes to m with a
 * PAYLOAD_REF to the PAYLOAD appended to the payload stream p. */
static inline void tb_split_file(struct tb *m, struct tb *p, const char *name, const void *data,
				 size_t len)
{
	uint8_t v[16];
	tb_name(m, name);
	tb_entry(m, CN_PXAR_IFREG | 0644, 0, 0, 1700000000, 0);
	cn_put_le64(v, tb_pos(p));
	cn_put_le64(v + 8, len);
	tb_item(p, CN_PXAR_PAYLOAD, data, len);
	tb_item(m, CN_PXAR_PAYLOAD_REF, v, 16);
	tb_child_done(m);
}

static inline void tb_root_begin(struct tb *t, uint64_t mode)
{
	tb_dir_begin(t);
	tb_entry(t, CN_PXAR_IFDIR | mode, 0, 0, 1700000000, 0);
}

#endif
