/* Tests of the pxar decoder and accessor on hand-built archives: the
 * spec's worked example byte for byte, random access, and hostile input
 * (illegal names, wrong sizes, truncation at every length, goodbye table
 * lies, huge lengths, hostile hardlinks, deep nesting, byte mutations). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "pxar/cn_pxar_decoder.h"
#include "pxar/cn_pxar_format.h"
#include "cn_test.h"
#include "pxar_testbuild.h"

/* Decodes a whole archive; returns the final code (0 = fully decoded) and
 * the number of entries. Reads every file's content. */
static int decode_all(const uint8_t *data, size_t len, size_t *count)
{
	struct cn_pxar_input in;
	struct cn_pxar_decoder *d;
	const struct cn_pxar_entry *e;
	size_t n = 0;
	cn_pxar_input_mem(&in, data, len);
	int rc = cn_pxar_decoder_new(&in, NULL, &d);
	if (rc < 0)
		return rc;
	while ((rc = cn_pxar_decoder_next(d, &e)) > 0) {
		n++;
		if (e->kind == CN_PXAR_KIND_FILE && e->file_size) {
			uint8_t *b = malloc(e->file_size);
			ck_assert_ptr_nonnull(b);
			ck_assert_int_eq(cn_pxar_decoder_read(d, 0, b, e->file_size), 0);
			free(b);
		}
	}
	cn_pxar_decoder_free(d);
	if (count)
		*count = n;
	return rc;
}

/* The spec's §7 example: root with one file "a" containing "hi". */
static void build_example(struct tb *t)
{
	tb_init(t);
	tb_root_begin(t, 0755);
	tb_file(t, "a", 0644, "hi", 2);
	tb_dir_end(t);
	ck_assert(!t->fail);
}

START_TEST(test_worked_example_layout)
{
	struct tb t;
	build_example(&t);
	const uint8_t *b = t.b.data;
	/* pxar.md §7: positions, sizes and goodbye values */
	ck_assert_uint_eq(t.b.len, 212);
	ck_assert_uint_eq(cn_le64(b + 56), CN_PXAR_FILENAME);
	ck_assert_uint_eq(cn_le64(b + 64), 18);
	ck_assert_uint_eq(cn_le64(b + 130), CN_PXAR_PAYLOAD);
	ck_assert_uint_eq(cn_le64(b + 148), CN_PXAR_GOODBYE);
	ck_assert_uint_eq(cn_le64(b + 156), 64);
	ck_assert_uint_eq(cn_le64(b + 164), 0x0c26e9067c2c7bcfULL);
	ck_assert_uint_eq(cn_le64(b + 172), 92);
	ck_assert_uint_eq(cn_le64(b + 180), 92);
	ck_assert_uint_eq(cn_le64(b + 188), CN_PXAR_GOODBYE_TAIL_MARKER);
	ck_assert_uint_eq(cn_le64(b + 196), 148);
	ck_assert_uint_eq(cn_le64(b + 204), 64);

	struct cn_pxar_input in;
	struct cn_pxar_decoder *d;
	const struct cn_pxar_entry *e;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	ck_assert_int_eq(cn_pxar_decoder_new(&in, NULL, &d), 0);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_DIR);
	ck_assert_str_eq(e->path, "");
	ck_assert_uint_eq(e->mode, 040755);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_FILE);
	ck_assert_str_eq(e->path, "a");
	ck_assert_str_eq(e->name, "a");
	ck_assert_uint_eq(e->file_size, 2);
	ck_assert_uint_eq(e->content_offset, 146);
	ck_assert_uint_eq(e->filename_offset, 56);
	ck_assert_uint_eq(e->entry_offset, 74);
	ck_assert_uint_eq(e->end_offset, 148);
	ck_assert_int_eq(e->mtime_sec, 1700000000);
	char buf[2];
	ck_assert_int_eq(cn_pxar_decoder_read(d, 0, buf, 2), 0);
	ck_assert_mem_eq(buf, "hi", 2);
	ck_assert_int_eq(cn_pxar_decoder_read(d, 1, buf, 2), -EINVAL);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_DIR_END);
	ck_assert_uint_eq(e->end_offset, 212);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 0);
	cn_pxar_decoder_free(d);
	tb_free(&t);
}
END_TEST

/* Counts the bytes read through an input, to show random access reads
 * little. */
struct counting {
	const uint8_t *data;
	uint64_t bytes, calls;
};

static int count_read(void *ctx, uint64_t off, void *buf, size_t len)
{
	struct counting *c = ctx;
	memcpy(buf, c->data + off, len);
	c->bytes += len;
	c->calls++;
	return 0;
}

/* root: f000..f199 (files of 1 KiB), dir "sub" with "deep/x", symlink, and
 * a hardlink to f007. */
static void build_big(struct tb *t, uint64_t *f007_fo)
{
	char name[32], data[1024];
	memset(data, 'z', sizeof(data));
	tb_init(t);
	tb_root_begin(t, 0755);
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "f%03d", i);
		if (i == 7)
			*f007_fo = tb_pos(t);
		tb_file(t, name, 0644, data, sizeof(data));
	}
	tb_hardlink(t, "link", *f007_fo, "f007");
	tb_subdir(t, "sub", 0750);
	tb_subdir(t, "deep", 0700);
	tb_file(t, "x", 0600, "xx", 2);
	tb_dir_end(t);
	tb_symlink(t, "sl", "../../outside");
	tb_dir_end(t);
	tb_dir_end(t);
	ck_assert(!t->fail);
}

START_TEST(test_lookup_random_access)
{
	struct tb t;
	uint64_t f007;
	build_big(&t, &f007);
	size_t n;
	ck_assert_int_eq(decode_all(t.b.data, t.b.len, &n), 0);
	ck_assert_uint_eq(n, 1 + 200 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1); /* + DIR_ENDs */

	struct counting c = { t.b.data, 0, 0 };
	struct cn_pxar_input in = {.read_at = count_read, .size = t.b.len, .ctx = &c};
	struct cn_pxar_accessor *a;
	struct cn_pxar_range r;
	const struct cn_pxar_entry *e;
	ck_assert_int_eq(cn_pxar_accessor_open(&in, NULL, &a), 0);
	c.bytes = 0;
	ck_assert_int_eq(cn_pxar_lookup(a, "/sub/deep/x", &r), 1);
	/* the archive is > 200 KiB; a lookup reads tables and names only */
	ck_assert_uint_gt(t.b.len, 200000);
	ck_assert_uint_lt(c.bytes, 2000);
	ck_assert_int_eq(cn_pxar_accessor_entry(a, &r, "sub/deep/x", &e), 0);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_FILE);
	ck_assert_uint_eq(e->file_size, 2);
	ck_assert_str_eq(e->name, "x");

	ck_assert_int_eq(cn_pxar_lookup(a, "f150", &r), 1);
	ck_assert_int_eq(cn_pxar_accessor_entry(a, &r, "f150", &e), 0);
	ck_assert_uint_eq(e->file_size, 1024);
	ck_assert_int_eq(cn_pxar_lookup(a, "nope", &r), 0);
	ck_assert_int_eq(cn_pxar_lookup(a, "sub/nope/x", &r), 0);
	ck_assert_int_eq(cn_pxar_lookup(a, "f150/x", &r), -ENOTDIR);
	ck_assert_int_eq(cn_pxar_lookup(a, "sub/../f150", &r), -CN_E_PATH);
	ck_assert_int_eq(cn_pxar_lookup(a, "", &r), 1);
	ck_assert_uint_eq(r.end_offset, t.b.len);

	/* hardlink: found as such, followed to f007 */
	ck_assert_int_eq(cn_pxar_lookup(a, "./link", &r), 1);
	ck_assert_int_eq(cn_pxar_accessor_entry(a, &r, "link", &e), 0);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_HARDLINK);
	ck_assert_str_eq(e->link, "f007");
	struct cn_pxar_range tr;
	ck_assert_int_eq(cn_pxar_follow_hardlink(a, e, &tr), 0);
	ck_assert_uint_eq(tr.filename_offset, f007);

	/* a decoder over a subtree yields prefixed paths */
	struct cn_pxar_decoder *d;
	ck_assert_int_eq(cn_pxar_lookup(a, "sub", &r), 1);
	ck_assert_int_eq(cn_pxar_accessor_decoder(a, &r, "sub", &d), 0);
	const char *want[] = { "sub", "sub/deep", "sub/deep/x", "sub/deep", "sub/sl", "sub" };
	for (size_t i = 0; i < 6; i++) {
		ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
		ck_assert_str_eq(e->path, want[i]);
	}
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 0);
	cn_pxar_decoder_free(d);
	cn_pxar_accessor_free(a);
	tb_free(&t);
}
END_TEST

/* Archive with one child named name (raw bytes, len with the NUL). */
static int decode_with_name(const char *name, size_t len)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	struct tb_dir *d = &t.dirs[0];
	d->cur_fo = tb_pos(&t);
	d->cur_hash = cn_pxar_hash_filename(name, len ? len - 1 : 0);
	tb_item(&t, CN_PXAR_FILENAME, name, len);
	tb_entry(&t, CN_PXAR_IFREG | 0644, 0, 0, 0, 0);
	tb_item(&t, CN_PXAR_PAYLOAD, "", 0);
	tb_child_done(&t);
	tb_dir_end(&t);
	int rc = decode_all(t.b.data, t.b.len, NULL);
	tb_free(&t);
	return rc;
}

START_TEST(test_illegal_names)
{
	ck_assert_int_eq(decode_with_name("ok", 3), 0);
	ck_assert_int_eq(decode_with_name("..", 3), -CN_E_PATH);
	ck_assert_int_eq(decode_with_name(".", 2), -CN_E_PATH);
	ck_assert_int_eq(decode_with_name("a/b", 4), -CN_E_PATH);
	ck_assert_int_eq(decode_with_name("/etc", 5), -CN_E_PATH);
	ck_assert_int_eq(decode_with_name("a\0b", 4), -CN_E_PATH);
	ck_assert_int_eq(decode_with_name("", 1), -CN_E_PATH);
	ck_assert_int_eq(decode_with_name("abc", 3), -CN_E_PATH); /* no NUL */
	char longname[4098];
	memset(longname, 'n', 4096);
	longname[4096] = 0;
	ck_assert_int_eq(decode_with_name(longname, 4097), 0);
	longname[4096] = 'n';
	longname[4097] = 0;
	ck_assert_int_eq(decode_with_name(longname, 4098), -CN_E_FORMAT); /* > max content */
	ck_assert_str_ne(cn_error_message(), "");
}
END_TEST

START_TEST(test_truncated_every_length)
{
	struct tb t;
	uint64_t f;
	build_big(&t, &f);
	/* Every proper prefix must fail cleanly (and never decode fully).
	 * Under ASan every third length near the ends (3 is prime to the
	 * 8-byte fields, so every alignment is still cut). */
	const size_t edge_step = CN_TEST_SANITIZED ? 3 : 1;
	for (size_t len = 0; len < t.b.len;
	     len += (len < 2048 || len > t.b.len - 2048 ? edge_step : 397)) {
		int rc = decode_all(t.b.data, len, NULL);
		ck_assert_msg(rc < 0, "prefix of %zu bytes decoded", len);
		ck_assert_msg(rc == -CN_E_TRUNCATED || rc == -CN_E_FORMAT, "len %zu rc %d", len, rc);
	}
	/* and one byte more is trailing garbage */
	uint8_t *more = malloc(t.b.len + 1);
	memcpy(more, t.b.data, t.b.len);
	more[t.b.len] = 0;
	ck_assert_int_eq(decode_all(more, t.b.len + 1, NULL), -CN_E_FORMAT);
	free(more);
	tb_free(&t);
}
END_TEST

/* Builds the example and applies a corruption at a byte offset. */
static int example_with_u64(size_t off, uint64_t v)
{
	struct tb t;
	build_example(&t);
	cn_put_le64(t.b.data + off, v);
	int rc = decode_all(t.b.data, t.b.len, NULL);
	struct cn_pxar_input in;
	struct cn_pxar_accessor *a;
	struct cn_pxar_range r;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	/* the accessor must not crash either, whatever it answers */
	if (cn_pxar_accessor_open(&in, NULL, &a) == 0) {
		(void)cn_pxar_lookup(a, "a", &r);
		cn_pxar_accessor_free(a);
	}
	tb_free(&t);
	return rc;
}

START_TEST(test_wrong_sizes_and_lies)
{
	/* header sizes */
	ck_assert_int_eq(example_with_u64(8, 15), -CN_E_FORMAT);            /* root ENTRY < 16 */
	ck_assert_int_eq(example_with_u64(8, 55), -CN_E_FORMAT);            /* Stat 39 bytes */
	ck_assert_int_eq(example_with_u64(64, UINT64_MAX), -CN_E_FORMAT);   /* FILENAME huge */
	ck_assert_int_eq(example_with_u64(138, UINT64_MAX), -CN_E_TRUNCATED); /* PAYLOAD huge */
	ck_assert_int_eq(example_with_u64(138, 1ULL << 62), -CN_E_TRUNCATED);
	ck_assert_int_lt(example_with_u64(138, 17), 0);                     /* payload 1 byte short */
	ck_assert_int_eq(example_with_u64(156, UINT64_MAX), -CN_E_TRUNCATED); /* GOODBYE huge */
	ck_assert_int_eq(example_with_u64(156, 40), -CN_E_FORMAT);
	/* goodbye lies */
	ck_assert_int_eq(example_with_u64(164, 0x1234), -CN_E_FORMAT);      /* wrong hash */
	ck_assert_int_eq(example_with_u64(172, 91), -CN_E_FORMAT);          /* wrong offset */
	ck_assert_int_eq(example_with_u64(172, 1ULL << 63), -CN_E_FORMAT);
	ck_assert_int_eq(example_with_u64(180, 93), -CN_E_FORMAT);          /* wrong size */
	ck_assert_int_eq(example_with_u64(188, 0), -CN_E_FORMAT);           /* no tail marker */
	ck_assert_int_eq(example_with_u64(196, 147), -CN_E_FORMAT);         /* tail offset */
	ck_assert_int_eq(example_with_u64(204, 88), -CN_E_FORMAT);          /* tail size */
	/* types */
	ck_assert_int_eq(example_with_u64(0, CN_PXAR_FILENAME), -CN_E_FORMAT);
	ck_assert_int_eq(example_with_u64(74, CN_PXAR_HARDLINK), -CN_E_FORMAT);
	ck_assert_int_eq(example_with_u64(130, CN_PXAR_SYMLINK), -CN_E_FORMAT); /* symlink item on a file */
	ck_assert_int_eq(example_with_u64(130, 0x1111), -CN_E_FORMAT);          /* unknown type */
	ck_assert_int_eq(example_with_u64(90, 0120644), -CN_E_FORMAT);          /* mode says symlink */
	ck_assert_int_eq(example_with_u64(90, 0777777), -CN_E_FORMAT);          /* bad type bits */
	ck_assert_int_eq(example_with_u64(122, 2000000000), -CN_E_FORMAT);      /* nanos */
	ck_assert_int_eq(example_with_u64(130, CN_PXAR_PAYLOAD), 0);            /* control */
}
END_TEST

START_TEST(test_goodbye_not_a_search_tree)
{
	/* three children; swap two slots of the table: same set of items,
	 * but a binary search would no longer find them */
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_file(&t, "a", 0644, "1", 1);
	tb_file(&t, "b", 0644, "2", 1);
	tb_file(&t, "c", 0644, "3", 1);
	tb_dir_end(&t);
	ck_assert_int_eq(decode_all(t.b.data, t.b.len, NULL), 0);
	size_t tab = t.b.len - 24 * 4;
	uint8_t tmp[24];
	memcpy(tmp, t.b.data + tab, 24);
	memcpy(t.b.data + tab, t.b.data + tab + 24, 24);
	memcpy(t.b.data + tab + 24, tmp, 24);
	ck_assert_int_eq(decode_all(t.b.data, t.b.len, NULL), -CN_E_FORMAT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "binary search tree"));
	tb_free(&t);
}
END_TEST

START_TEST(test_duplicate_names)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_file(&t, "same", 0644, "1", 1);
	tb_file(&t, "same", 0644, "2", 1);
	tb_dir_end(&t);
	ck_assert_int_eq(decode_all(t.b.data, t.b.len, NULL), -CN_E_FORMAT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "duplicate"));
	tb_free(&t);
}
END_TEST

static int decode_hardlink(uint64_t back, const char *path, int target_is_dir)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	uint64_t fo = tb_pos(&t);
	if (target_is_dir) {
		tb_subdir(&t, "d", 0755);
		tb_dir_end(&t);
	} else {
		tb_file(&t, "d", 0644, "x", 1);
	}
	tb_name(&t, "h");
	uint8_t buf[512];
	/* back == 1: the right offset; otherwise the given (wrong) one */
	cn_put_le64(buf, back == 1 ? t.dirs[0].cur_fo - fo : back);
	strcpy((char *)buf + 8, path);
	tb_item(&t, CN_PXAR_HARDLINK, buf, 8 + strlen(path) + 1);
	tb_child_done(&t);
	tb_dir_end(&t);
	int rc = decode_all(t.b.data, t.b.len, NULL);
	tb_free(&t);
	return rc;
}

START_TEST(test_hostile_hardlinks)
{
	ck_assert_int_eq(decode_hardlink(1, "d", 0), 0);                 /* control */
	ck_assert_int_eq(decode_hardlink(1, "../etc/passwd", 0), -CN_E_PATH);
	ck_assert_int_eq(decode_hardlink(1, "/etc/passwd", 0), -CN_E_PATH);
	ck_assert_int_eq(decode_hardlink(1, "a//b", 0), -CN_E_PATH);
	ck_assert_int_eq(decode_hardlink(1, "d/", 0), -CN_E_PATH);
	ck_assert_int_eq(decode_hardlink(1, "d", 1), -CN_E_FORMAT);       /* target is a dir */
	ck_assert_int_eq(decode_hardlink(0, "d", 0), -CN_E_FORMAT);       /* offset 0 */
	ck_assert_int_eq(decode_hardlink(1ULL << 40, "d", 0), -CN_E_FORMAT);
	ck_assert_int_eq(decode_hardlink(3, "d", 0), -CN_E_FORMAT);       /* not a FILENAME */
}
END_TEST

START_TEST(test_depth_limit)
{
	struct tb t;
	tb_init(&t);
	/* the test builder nests TB_MAX_DEPTH levels; the decoder's own
	 * limit is checked by setting up frames: build 60 levels and check
	 * it decodes, then a stream that opens directories without end */
	tb_root_begin(&t, 0755);
	for (int i = 0; i < 60; i++)
		tb_subdir(&t, "d", 0755);
	for (int i = 0; i < 61; i++)
		tb_dir_end(&t);
	ck_assert_int_eq(decode_all(t.b.data, t.b.len, NULL), 0);
	tb_free(&t);

	/* 5000 nested directory openings: depth limit, not stack overflow */
	struct cn_buf b = { 0 };
	uint8_t item[16 + 40];
	for (int i = 0; i <= 5000; i++) {
		if (i) {
			cn_put_le64(item, CN_PXAR_FILENAME);
			cn_put_le64(item + 8, 18);
			memcpy(item + 16, "d", 2);
			cn_buf_append(&b, item, 18);
		}
		memset(item, 0, sizeof(item));
		cn_put_le64(item, CN_PXAR_ENTRY);
		cn_put_le64(item + 8, 56);
		cn_put_le64(item + 16, 040755);
		cn_buf_append(&b, item, 56);
	}
	ck_assert_int_eq(decode_all(b.data, b.len, NULL), -E2BIG);
	cn_buf_free(&b);
}
END_TEST

START_TEST(test_mutations_never_crash)
{
	struct tb t;
	uint64_t f;
	build_big(&t, &f);
	/* Only the metadata parts: the first 600 bytes and the tail. */
	uint8_t *m = malloc(t.b.len);
	size_t ok = 0, bad = 0;
	for (size_t i = 0; i < t.b.len; i++) {
		if (i >= 600 && i < t.b.len - 1500)
			continue;
		/* bits 0 and 7 of every byte; under ASan one of them, in turn */
		for (int bit = CN_TEST_SANITIZED ? 7 * (int)(i % 2) : 0; bit < 8;
		     bit += CN_TEST_SANITIZED ? 8 : 7) {
			memcpy(m, t.b.data, t.b.len);
			m[i] ^= (uint8_t)(1u << bit);
			int rc = decode_all(m, t.b.len, NULL);
			if (rc == 0)
				ok++;
			else
				bad++;
		}
	}
	/* flips in names, mtimes, payload bytes decode; most others not */
	ck_assert_uint_gt(bad, 0);
	ck_assert_uint_gt(ok, 0);
	free(m);
	tb_free(&t);
}
END_TEST

START_TEST(test_attributes)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_name(&t, "f");
	tb_entry(&t, CN_PXAR_IFREG | 04755, 1000, 1001, -1, 999000000);
	tb_item(&t, CN_PXAR_XATTR, "user.zz\0v1", 10);
	tb_item(&t, CN_PXAR_XATTR, "user.aa\0", 8);
	uint8_t acl[32];
	cn_put_le64(acl, 1234);
	cn_put_le64(acl + 8, 6);
	tb_item(&t, CN_PXAR_ACL_USER, acl, 16);
	cn_put_le64(acl, 5);
	tb_item(&t, CN_PXAR_ACL_GROUP_OBJ, acl, 8);
	tb_item(&t, CN_PXAR_FCAPS, "\x01\x02", 2);
	tb_item(&t, CN_PXAR_PAYLOAD, "abc", 3);
	tb_child_done(&t);
	tb_name(&t, "dev");
	tb_entry(&t, CN_PXAR_IFCHR | 0600, 0, 0, 0, 0);
	cn_put_le64(acl, 1);
	cn_put_le64(acl + 8, 3);
	tb_item(&t, CN_PXAR_DEVICE, acl, 16);
	tb_child_done(&t);
	tb_name(&t, "fifo");
	tb_entry(&t, CN_PXAR_IFIFO | 0600, 0, 0, 0, 0);
	tb_child_done(&t);
	tb_dir_end(&t);

	struct cn_pxar_input in;
	struct cn_pxar_decoder *d;
	const struct cn_pxar_entry *e;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	ck_assert_int_eq(cn_pxar_decoder_new(&in, NULL, &d), 0);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_FILE);
	ck_assert_uint_eq(e->uid, 1000);
	ck_assert_uint_eq(e->gid, 1001);
	ck_assert_int_eq(e->mtime_sec, -1);
	ck_assert_uint_eq(e->mtime_nsec, 999000000);
	ck_assert_uint_eq(e->xattr_count, 2);
	ck_assert_mem_eq(e->xattrs[0].name, "user.zz", 7);
	ck_assert_uint_eq(e->xattrs[0].name_len, 7);
	ck_assert_mem_eq(e->xattrs[0].value, "v1", 2);
	ck_assert_uint_eq(e->xattrs[1].value_len, 0);
	ck_assert_uint_eq(e->acl_user_count, 1);
	ck_assert_uint_eq(e->acl_users[0].id, 1234);
	ck_assert_uint_eq(e->acl_users[0].permissions, 6);
	ck_assert(e->has_acl_group_obj);
	ck_assert_uint_eq(e->acl_group_obj, 5);
	ck_assert_uint_eq(e->fcaps_len, 2);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_DEVICE);
	ck_assert_uint_eq(e->dev_major, 1);
	ck_assert_uint_eq(e->dev_minor, 3);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_FIFO);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_DIR_END);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 0);
	cn_pxar_decoder_free(d);

	/* a FIFO looked up by random access ends at its range end */
	struct cn_pxar_accessor *a;
	struct cn_pxar_range r;
	ck_assert_int_eq(cn_pxar_accessor_open(&in, NULL, &a), 0);
	ck_assert_int_eq(cn_pxar_lookup(a, "fifo", &r), 1);
	ck_assert_int_eq(cn_pxar_accessor_entry(a, &r, "fifo", &e), 0);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_FIFO);
	cn_pxar_accessor_free(a);
	tb_free(&t);
}
END_TEST

START_TEST(test_duplicate_singletons)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_name(&t, "f");
	tb_entry(&t, CN_PXAR_IFREG | 0644, 0, 0, 0, 0);
	tb_item(&t, CN_PXAR_FCAPS, "a", 1);
	tb_item(&t, CN_PXAR_FCAPS, "b", 1);
	tb_item(&t, CN_PXAR_PAYLOAD, "", 0);
	tb_child_done(&t);
	tb_dir_end(&t);
	ck_assert_int_eq(decode_all(t.b.data, t.b.len, NULL), -CN_E_FORMAT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "multiple file capability"));
	tb_free(&t);
}
END_TEST

START_TEST(test_split_v2)
{
	/* pxar.md §8: FORMAT_VERSION(2), root, file "a" via PAYLOAD_REF */
	struct tb t;
	tb_init(&t);
	uint8_t v[16];
	cn_put_le64(v, 2);
	tb_item(&t, CN_PXAR_FORMAT_VERSION, v, 8);
	tb_dir_begin(&t);
	t.dirs[0].entry_off = 0; /* the root tail refers to the archive start */
	tb_entry(&t, CN_PXAR_IFDIR | 0755, 0, 0, 0, 0);
	tb_name(&t, "a");
	tb_entry(&t, CN_PXAR_IFREG | 0644, 0, 0, 0, 0);
	cn_put_le64(v, 16);
	cn_put_le64(v + 8, 2);
	tb_item(&t, CN_PXAR_PAYLOAD_REF, v, 16);
	tb_child_done(&t);
	tb_dir_end(&t);
	struct tb p;
	tb_init(&p);
	tb_item(&p, CN_PXAR_PAYLOAD_START_MARKER, NULL, 0);
	tb_item(&p, CN_PXAR_PAYLOAD, "hi", 2);
	tb_item(&p, CN_PXAR_PAYLOAD_TAIL_MARKER, NULL, 0);

	struct cn_pxar_input in, pin;
	struct cn_pxar_decoder *d;
	const struct cn_pxar_entry *e;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	cn_pxar_input_mem(&pin, p.b.data, p.b.len);
	ck_assert_int_eq(cn_pxar_decoder_new(&in, &pin, &d), 0);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(cn_pxar_decoder_version(d), 2);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(e->kind, CN_PXAR_KIND_FILE);
	ck_assert(e->content_in_payload);
	char buf[2];
	ck_assert_int_eq(cn_pxar_decoder_read(d, 0, buf, 2), 0);
	ck_assert_mem_eq(buf, "hi", 2);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 0);
	cn_pxar_decoder_free(d);

	/* random access on the split archive */
	struct cn_pxar_accessor *a;
	struct cn_pxar_range r;
	ck_assert_int_eq(cn_pxar_accessor_open(&in, &pin, &a), 0);
	ck_assert_int_eq(cn_pxar_lookup(a, "a", &r), 1);
	cn_pxar_accessor_free(a);

	/* without the payload stream: a clear error */
	ck_assert_int_eq(cn_pxar_decoder_new(&in, NULL, &d), 0);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), -CN_E_FORMAT);
	cn_pxar_decoder_free(d);
	/* a reference that lies about the size */
	cn_put_le64(p.b.data + 16 + 8, 16 + 3);
	ck_assert_int_eq(cn_pxar_decoder_new(&in, &pin, &d), 0);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &e), 1);
	ck_assert_int_lt(cn_pxar_decoder_next(d, &e), 0);
	cn_pxar_decoder_free(d);
	tb_free(&p);
	tb_free(&t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pxar_decoder");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_worked_example_layout);
	tcase_add_test(tc, test_lookup_random_access);
	tcase_add_test(tc, test_illegal_names);
	tcase_add_test(tc, test_truncated_every_length);
	tcase_add_test(tc, test_wrong_sizes_and_lies);
	tcase_add_test(tc, test_goodbye_not_a_search_tree);
	tcase_add_test(tc, test_duplicate_names);
	tcase_add_test(tc, test_hostile_hardlinks);
	tcase_add_test(tc, test_depth_limit);
	tcase_add_test(tc, test_mutations_never_crash);
	tcase_add_test(tc, test_attributes);
	tcase_add_test(tc, test_duplicate_singletons);
	tcase_add_test(tc, test_split_v2);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
