/* Tests of cn_pxar_dir (directory listings from goodbye tables, for cairn
 * mount): children, names and ranges as the accessor finds them, reading
 * nothing but the table and the file names, and hostile tables (bad tail,
 * items pointing outside, duplicate names, every byte of the metadata
 * flipped) refused without reading out of bounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cn_test.h"
#include "common/cn_error.h"
#include "common/cn_util.h"
#include "pxar/cn_pxar_dir.h"
#include "pxar_testbuild.h"

/* A root with 200 files, a hardlink and sub/{deep/x, sl}. */
static void build_tree(struct tb *t)
{
	char name[32], data[1024];
	uint64_t f7 = 0;
	memset(data, 'z', sizeof(data));
	tb_init(t);
	tb_root_begin(t, 0755);
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "f%03d", i);
		if (i == 7)
			f7 = tb_pos(t);
		tb_file(t, name, 0644, data, sizeof(data));
	}
	tb_hardlink(t, "link", f7, "f007");
	tb_subdir(t, "sub", 0750);
	tb_subdir(t, "deep", 0700);
	tb_file(t, "x", 0600, "xx", 2);
	tb_dir_end(t);
	tb_symlink(t, "sl", "../../outside");
	tb_dir_end(t);
	tb_dir_end(t);
	ck_assert(!t->fail);
}

/* Counts the bytes read, to show a listing reads little. */
struct counting {
	const uint8_t *data;
	uint64_t bytes;
};

static int counting_read(void *ctx, uint64_t off, void *buf, size_t len)
{
	struct counting *c = ctx;
	memcpy(buf, c->data + off, len);
	c->bytes += len;
	return 0;
}

START_TEST(test_lists_children_like_lookup)
{
	struct tb t;
	build_tree(&t);
	struct counting cnt = {t.b.data, 0};
	struct cn_pxar_input in = {.read_at = counting_read, .size = t.b.len, .ctx = &cnt};
	struct cn_pxar_accessor *a;
	ck_assert_int_eq(cn_pxar_accessor_open(&in, NULL, &a), 0);
	struct cn_pxar_range root = cn_pxar_root_range(t.b.len);
	struct cn_pxar_dirlist *l;
	cnt.bytes = 0;
	ck_assert_int_eq(cn_pxar_dir_read(&in, 0, &root, &l), 0);
	/* the table (203 items), 202 FILENAME items: far less than the files */
	ck_assert_uint_lt(cnt.bytes, 24 * 204 + 202 * 40);
	ck_assert_uint_eq(cn_pxar_dirlist_count(l), 202);
	for (size_t i = 0; i < 202; i++) {
		const struct cn_pxar_child *c = cn_pxar_dirlist_get(l, i);
		if (i)
			ck_assert_int_lt(strcmp(cn_pxar_dirlist_get(l, i - 1)->name, c->name), 0);
		ck_assert_uint_eq(strlen(c->name), c->name_len);
		struct cn_pxar_range r;
		ck_assert_int_eq(cn_pxar_lookup(a, c->name, &r), 1);
		ck_assert_uint_eq(r.filename_offset, c->range.filename_offset);
		ck_assert_uint_eq(r.entry_offset, c->range.entry_offset);
		ck_assert_uint_eq(r.end_offset, c->range.end_offset);
		ck_assert_ptr_eq(cn_pxar_dirlist_find(l, c->name, c->name_len), c);
	}
	ck_assert_ptr_null(cn_pxar_dirlist_find(l, "f200", 4));
	ck_assert_ptr_null(cn_pxar_dirlist_find(l, "f00", 3));
	ck_assert_ptr_null(cn_pxar_dirlist_find(l, "", 0));
	const struct cn_pxar_child *sub = cn_pxar_dirlist_find(l, "sub", 3);
	ck_assert_ptr_nonnull(sub);
	struct cn_pxar_dirlist *ls;
	ck_assert_int_eq(cn_pxar_dir_read(&in, 0, &sub->range, &ls), 0);
	ck_assert_uint_eq(cn_pxar_dirlist_count(ls), 2);
	ck_assert_str_eq(cn_pxar_dirlist_get(ls, 0)->name, "deep");
	ck_assert_str_eq(cn_pxar_dirlist_get(ls, 1)->name, "sl");
	const struct cn_pxar_entry *e;
	ck_assert_int_eq(cn_pxar_accessor_entry(a, &cn_pxar_dirlist_get(ls, 1)->range, "sub/sl", &e),
			 0);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_SYMLINK);
	ck_assert_str_eq(e->link, "../../outside");
	cn_pxar_dirlist_free(ls);
	cn_pxar_dirlist_free(l);
	cn_pxar_accessor_free(a);
	tb_free(&t);
}
END_TEST

START_TEST(test_empty_directory)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_dir_end(&t);
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	struct cn_pxar_range root = cn_pxar_root_range(t.b.len);
	struct cn_pxar_dirlist *l;
	ck_assert_int_eq(cn_pxar_dir_read(&in, 0, &root, &l), 0);
	ck_assert_uint_eq(cn_pxar_dirlist_count(l), 0);
	ck_assert_ptr_null(cn_pxar_dirlist_find(l, "a", 1));
	cn_pxar_dirlist_free(l);
	tb_free(&t);
}
END_TEST

/* Children written out of name order (pxar encoders sort them, but an
 * archive need not): listed sorted all the same, found by name, and a
 * name twice refused. */
START_TEST(test_unsorted_archive_order)
{
	static const char *order[] = {"m", "b", "zz", "a", "c", "b0", "z"};
	for (int dup = 0; dup < 2; dup++) {
		struct tb t;
		tb_init(&t);
		tb_root_begin(&t, 0755);
		for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
			tb_file(&t, dup && i == 5 ? "zz" : order[i], 0644, "x", 1);
		tb_dir_end(&t);
		ck_assert(!t.fail);
		struct cn_pxar_input in;
		cn_pxar_input_mem(&in, t.b.data, t.b.len);
		struct cn_pxar_range root = cn_pxar_root_range(t.b.len);
		struct cn_pxar_dirlist *l = NULL;
		int rc = cn_pxar_dir_read(&in, 0, &root, &l);
		if (dup) {
			ck_assert_int_eq(rc, -CN_E_FORMAT);
		} else {
			ck_assert_int_eq(rc, 0);
			static const char *want[] = {"a", "b", "b0", "c", "m", "z", "zz"};
			ck_assert_uint_eq(cn_pxar_dirlist_count(l), 7);
			for (size_t i = 0; i < 7; i++) {
				ck_assert_str_eq(cn_pxar_dirlist_get(l, i)->name, want[i]);
				ck_assert_ptr_eq(cn_pxar_dirlist_find(l, want[i], strlen(want[i])),
						 cn_pxar_dirlist_get(l, i));
			}
		}
		cn_pxar_dirlist_free(l);
		tb_free(&t);
	}
}
END_TEST

/* The root of t.b with one u64 at off replaced by v: cn_pxar_dir_read's code. */
static int read_patched(const struct tb *t, size_t off, uint64_t v)
{
	uint8_t *m = malloc(t->b.len);
	ck_assert_ptr_nonnull(m);
	memcpy(m, t->b.data, t->b.len);
	cn_put_le64(m + off, v);
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, m, t->b.len);
	struct cn_pxar_range root = cn_pxar_root_range(t->b.len);
	struct cn_pxar_dirlist *l = NULL;
	int rc = cn_pxar_dir_read(&in, 0, &root, &l);
	cn_pxar_dirlist_free(l);
	free(m);
	return rc;
}

START_TEST(test_hostile_tables)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_file(&t, "a", 0644, "hi", 2);
	tb_file(&t, "b", 0644, "ho", 2);
	tb_dir_end(&t);
	size_t end = t.b.len, tail = end - 24, items = end - 24 * 3;
	ck_assert_int_eq(read_patched(&t, tail, 1), -CN_E_FORMAT);          /* no tail marker */
	ck_assert_int_eq(read_patched(&t, tail + 16, 1u << 30), -CN_E_FORMAT); /* table size */
	ck_assert_int_eq(read_patched(&t, tail + 16, 16 + 24 * 2 + 1), -CN_E_FORMAT);
	ck_assert_int_eq(read_patched(&t, tail + 8, 5), -CN_E_FORMAT);       /* tail offset */
	ck_assert_int_eq(read_patched(&t, items + 8, end), -CN_E_FORMAT);    /* before the dir */
	ck_assert_int_eq(read_patched(&t, items + 8, UINT64_MAX), -CN_E_FORMAT);
	ck_assert_int_eq(read_patched(&t, items + 8, 1), -CN_E_FORMAT);      /* not a FILENAME */
	ck_assert_int_eq(read_patched(&t, items + 16, 3), -CN_E_FORMAT);     /* size too small */
	ck_assert_int_eq(read_patched(&t, items + 16, UINT64_MAX), -CN_E_FORMAT);
	/* both items on one child */
	uint64_t back0 = cn_le64(t.b.data + items + 8);
	ck_assert_int_eq(read_patched(&t, items + 24 + 8, back0), -CN_E_FORMAT);
	tb_free(&t);

	/* the same name twice */
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_file(&t, "same", 0644, "1", 1);
	tb_file(&t, "same", 0644, "2", 1);
	tb_dir_end(&t);
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	struct cn_pxar_range root = cn_pxar_root_range(t.b.len);
	struct cn_pxar_dirlist *l = NULL;
	ck_assert_int_eq(cn_pxar_dir_read(&in, 0, &root, &l), -CN_E_FORMAT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "twice"));
	ck_assert_ptr_null(l);
	tb_free(&t);
}
END_TEST

START_TEST(test_mutations_stay_in_bounds)
{
	struct tb t;
	build_tree(&t);
	uint8_t *m = malloc(t.b.len);
	ck_assert_ptr_nonnull(m);
	size_t ok = 0, bad = 0;
	/* the root's goodbye table and the file names before it; under ASan
	 * every third byte (3 is prime to the 8-byte fields: every position
	 * in a field is still hit) */
	for (size_t i = t.b.len > 6000 ? t.b.len - 6000 : 0; i < t.b.len;
	     i += CN_TEST_SANITIZED ? 3 : 1) {
		memcpy(m, t.b.data, t.b.len);
		m[i] ^= 0x41;
		struct cn_pxar_input in;
		cn_pxar_input_mem(&in, m, t.b.len);
		struct cn_pxar_range root = cn_pxar_root_range(t.b.len);
		struct cn_pxar_dirlist *l = NULL;
		if (cn_pxar_dir_read(&in, 0, &root, &l) < 0) {
			bad++;
			continue;
		}
		ok++;
		for (size_t k = 0; k < cn_pxar_dirlist_count(l); k++) {
			const struct cn_pxar_child *c = cn_pxar_dirlist_get(l, k);
			ck_assert_uint_gt(c->range.filename_offset, 0);
			ck_assert_uint_lt(c->range.entry_offset, c->range.end_offset);
			ck_assert_uint_le(c->range.end_offset, t.b.len);
			ck_assert_int_eq(cn_pxar_check_filename(c->name, c->name_len), 0);
		}
		cn_pxar_dirlist_free(l);
	}
	ck_assert_uint_gt(bad, 0);
	ck_assert_uint_gt(ok, 0);
	free(m);
	tb_free(&t);
}
END_TEST

/* One accessor decodes entry after entry (as a mount does, one per child
 * listed, its decoder reused): each entry as a fresh accessor decodes it,
 * nothing left over from the entry before (a symlink's target, a
 * directory's kind), and a failed entry spoils nothing after it. */
START_TEST(test_entries_in_turn)
{
	struct tb t;
	build_tree(&t);
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	struct cn_pxar_accessor *a;
	ck_assert_int_eq(cn_pxar_accessor_open(&in, NULL, &a), 0);
	struct cn_pxar_range root = cn_pxar_root_range(t.b.len);
	struct cn_pxar_dirlist *l, *ls;
	ck_assert_int_eq(cn_pxar_dir_read(&in, 0, &root, &l), 0);
	/* f009's range with its entry at its FILENAME item */
	struct cn_pxar_range bad = cn_pxar_dirlist_find(l, "f009", 4)->range;
	bad.entry_offset = bad.filename_offset;
	const struct cn_pxar_child *sub = cn_pxar_dirlist_find(l, "sub", 3);
	ck_assert_int_eq(cn_pxar_dir_read(&in, 0, &sub->range, &ls), 0);
	/* sl (symlink), sub (dir), link (hardlink), f009 (file), a range that
	 * is no entry, then f009 again */
	const struct cn_pxar_range *order[] = {
		&cn_pxar_dirlist_find(ls, "sl", 2)->range, &sub->range,
		&cn_pxar_dirlist_find(l, "link", 4)->range,
		&cn_pxar_dirlist_find(l, "f009", 4)->range, &bad,
		&cn_pxar_dirlist_find(l, "f009", 4)->range};
	const char *names[] = {"sub/sl", "sub", "link", "f009", "bad", "f009"};
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		const struct cn_pxar_entry *e, *f;
		struct cn_pxar_accessor *fresh;
		ck_assert_int_eq(cn_pxar_accessor_open(&in, NULL, &fresh), 0);
		int rc = cn_pxar_accessor_entry(a, order[i], names[i], &e);
		ck_assert_int_eq(cn_pxar_accessor_entry(fresh, order[i], names[i], &f), rc);
		if (order[i] == &bad) {
			ck_assert_int_lt(rc, 0);
		} else {
			ck_assert_int_eq(rc, 0);
			ck_assert_int_eq(e->kind, f->kind);
			ck_assert_uint_eq(e->mode, f->mode);
			ck_assert_uint_eq(e->file_size, f->file_size);
			ck_assert_uint_eq(e->content_offset, f->content_offset);
			ck_assert_uint_eq(e->end_offset, f->end_offset);
			ck_assert_str_eq(e->path, names[i]);
			ck_assert_int_eq(!e->link, !f->link);
			if (e->link)
				ck_assert_str_eq(e->link, f->link);
		}
		cn_pxar_accessor_free(fresh);
	}
	cn_pxar_dirlist_free(ls);
	cn_pxar_dirlist_free(l);
	cn_pxar_accessor_free(a);
	tb_free(&t);
}
END_TEST

CN_TEST_MAIN("pxar_dir", "core", 120, test_lists_children_like_lookup, test_empty_directory,
	     test_hostile_tables, test_mutations_stay_in_bounds, test_entries_in_turn,
	     test_unsorted_archive_order)
