/* Tests of the catalog reader: the spec's varint table, a catalog written
 * by the catalog writer read back (listing with a path filter, lookup),
 * and hostile catalogs (bad magic, root offsets, table lengths that lie,
 * trailing bytes, names with '/', shared and forward directory tables,
 * over-long varints, truncation at every length). */
#include "cn_test.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "pxar/cn_catalog_reader.h"
#include "pxar/cn_catalog_writer.h"
#include "pxar/cn_pxar_format.h"

START_TEST(test_varints)
{
	static const struct {
		int64_t v;
		const char *bytes;
		size_t n;
		int is_signed;
	} cases[] = {
		{ 0, "\x00", 1, 0 },
		{ 127, "\x7f", 1, 0 },
		{ 128, "\x80\x01", 2, 0 },
		{ 300, "\xac\x02", 2, 0 },
		{ 4096, "\x80\x20", 2, 0 },
		{ -1, "\x81\x00", 2, 1 },
		{ -128, "\x80\x81\x00", 3, 1 },
		{ 1700000000, "\x80\xe2\xcf\xaa\x06", 5, 1 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const uint8_t *p = (const uint8_t *)cases[i].bytes, *end = p + cases[i].n;
		if (cases[i].is_signed) {
			int64_t v;
			ck_assert_int_eq(cn_catalog_get_i64(&p, end, &v), 0);
			ck_assert_int_eq(v, cases[i].v);
		} else {
			uint64_t v;
			ck_assert_int_eq(cn_catalog_get_u64(&p, end, &v), 0);
			ck_assert_uint_eq(v, (uint64_t)cases[i].v);
		}
		ck_assert_ptr_eq(p, end);
	}
	/* the writer's encoders agree for extreme values */
	int64_t vals[] = { INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX };
	for (size_t i = 0; i < 6; i++) {
		uint8_t b[11];
		size_t n = cn_catalog_put_i64(b, vals[i]);
		const uint8_t *p = b;
		int64_t v;
		ck_assert_int_eq(cn_catalog_get_i64(&p, b + n, &v), 0);
		ck_assert_int_eq(v, vals[i]);
		ck_assert_ptr_eq(p, b + n);
	}
	uint8_t b[12];
	size_t n = cn_catalog_put_u64(b, UINT64_MAX);
	const uint8_t *p = b;
	uint64_t u;
	ck_assert_int_eq(cn_catalog_get_u64(&p, b + n, &u), 0);
	ck_assert_uint_eq(u, UINT64_MAX);
	/* too long, overflowing, truncated */
	memset(b, 0x80, sizeof(b));
	p = b;
	ck_assert_int_eq(cn_catalog_get_u64(&p, b + 12, &u), -CN_E_FORMAT);
	b[9] = 0x02; /* a 65th bit */
	p = b;
	ck_assert_int_eq(cn_catalog_get_u64(&p, b + 12, &u), -CN_E_FORMAT);
	p = b;
	ck_assert_int_eq(cn_catalog_get_u64(&p, b + 3, &u), -CN_E_TRUNCATED);
}
END_TEST

static int to_buf(void *ctx, const uint8_t *data, size_t len)
{
	return cn_buf_append(ctx, data, len);
}

/* root.pxar.didx/{a, d/{x, y, sub/}, l, h}; neg mtime on x. */
static void build(struct cn_buf *b)
{
	struct cn_catalog_writer *w;
	memset(b, 0, sizeof(*b));
	ck_assert_int_eq(cn_catalog_writer_new(to_buf, b, &w), 0);
	ck_assert_int_eq(cn_catalog_writer_start_directory(w, "root.pxar.didx", 14), 0);
	ck_assert_int_eq(cn_catalog_writer_add_file(w, "a", 1, 300, 1700000000), 0);
	ck_assert_int_eq(cn_catalog_writer_start_directory(w, "d", 1), 0);
	ck_assert_int_eq(cn_catalog_writer_add_file(w, "x", 1, 0, -5), 0);
	ck_assert_int_eq(cn_catalog_writer_add_entry(w, CN_CATALOG_FIFO, "y", 1), 0);
	ck_assert_int_eq(cn_catalog_writer_start_directory(w, "sub", 3), 0);
	ck_assert_int_eq(cn_catalog_writer_end_directory(w), 0);
	ck_assert_int_eq(cn_catalog_writer_end_directory(w), 0);
	ck_assert_int_eq(cn_catalog_writer_add_entry(w, CN_CATALOG_SYMLINK, "l", 1), 0);
	ck_assert_int_eq(cn_catalog_writer_add_entry(w, CN_CATALOG_HARDLINK, "h", 1), 0);
	ck_assert_int_eq(cn_catalog_writer_end_directory(w), 0);
	ck_assert_int_eq(cn_catalog_writer_finish(w), 0);
	cn_catalog_writer_free(w);
}

struct rec {
	char out[1024];
};

static int record(void *ctx, const char *path, const struct cn_catalog_entry *e)
{
	struct rec *r = ctx;
	char line[256];
	snprintf(line, sizeof(line), "%c %s %llu %lld\n", e->type, path, (unsigned long long)e->size,
		 (long long)e->mtime);
	strcat(r->out, line);
	return 0;
}

START_TEST(test_read_back)
{
	struct cn_buf b;
	build(&b);
	struct cn_catalog_reader *r;
	ck_assert_int_eq(cn_catalog_reader_open(b.data, b.len, &r), 0);
	struct rec rec = { "" };
	ck_assert_int_eq(cn_catalog_list(r, NULL, record, &rec), 0);
	ck_assert_str_eq(rec.out,
			 "d root.pxar.didx 0 0\n"
			 "f root.pxar.didx/a 300 1700000000\n"
			 "d root.pxar.didx/d 0 0\n"
			 "f root.pxar.didx/d/x 0 -5\n"
			 "p root.pxar.didx/d/y 0 0\n"
			 "d root.pxar.didx/d/sub 0 0\n"
			 "l root.pxar.didx/l 0 0\n"
			 "h root.pxar.didx/h 0 0\n");
	rec.out[0] = 0;
	ck_assert_int_eq(cn_catalog_list(r, "/root.pxar.didx/d/", record, &rec), 0);
	ck_assert_str_eq(rec.out,
			 "d root.pxar.didx/d 0 0\n"
			 "f root.pxar.didx/d/x 0 -5\n"
			 "p root.pxar.didx/d/y 0 0\n"
			 "d root.pxar.didx/d/sub 0 0\n");
	/* listing twice works (visited marks are reset) */
	rec.out[0] = 0;
	ck_assert_int_eq(cn_catalog_list(r, "root.pxar.didx/d", record, &rec), 0);
	rec.out[0] = 0;
	ck_assert_int_eq(cn_catalog_list(r, "root.pxar.didx/a", record, &rec), 0);
	ck_assert_str_eq(rec.out, "f root.pxar.didx/a 300 1700000000\n");
	ck_assert_int_eq(cn_catalog_list(r, "root.pxar.didx/q", record, &rec), -ENOENT);
	struct cn_catalog_entry e;
	ck_assert_int_eq(cn_catalog_lookup(r, "root.pxar.didx/d/x", &e), 1);
	ck_assert_int_eq(e.mtime, -5);
	ck_assert_int_eq(cn_catalog_lookup(r, "root.pxar.didx/a/x", &e), 0);
	ck_assert_int_eq(cn_catalog_lookup(r, "", &e), 1);
	ck_assert_int_eq(e.type, 'd');
	cn_catalog_reader_free(r);
	cn_buf_free(&b);
}
END_TEST

static int open_list(const uint8_t *d, size_t n)
{
	struct cn_catalog_reader *r;
	struct rec rec;
	int rc = cn_catalog_reader_open(d, n, &r);
	if (rc < 0)
		return rc;
	rec.out[0] = 0;
	struct cn_catalog_entry e;
	rc = cn_catalog_lookup(r, "root.pxar.didx/d/x", &e);
	if (rc >= 0)
		rc = cn_catalog_list(r, NULL, record, &rec);
	cn_catalog_reader_free(r);
	return rc;
}

/* A catalog from raw tables: magic, tables..., root offset. */
static size_t raw(uint8_t *out, const uint8_t *tables, size_t tlen, uint64_t root)
{
	static const uint8_t magic[] = CN_CATALOG_MAGIC;
	memcpy(out, magic, 8);
	memcpy(out + 8, tables, tlen);
	cn_put_le64(out + 8 + tlen, root);
	return 16 + tlen;
}

START_TEST(test_hostile)
{
	struct cn_buf b;
	build(&b);
	ck_assert_int_eq(open_list(b.data, b.len), 0);
	/* every truncation fails cleanly */
	for (size_t n = 0; n < b.len; n++)
		ck_assert_int_lt(open_list(b.data, n), 0);
	/* every single-byte change: no crash, and the result is either an
	 * error or a full listing */
	uint8_t *m = malloc(b.len);
	for (size_t i = 0; i < b.len; i++) {
		for (int v = 0; v < 256; v += 51) {
			memcpy(m, b.data, b.len);
			m[i] = (uint8_t)v;
			(void)open_list(m, b.len);
		}
	}
	free(m);
	m = b.data;
	m[0] ^= 1;
	ck_assert_int_eq(open_list(m, b.len), -CN_E_MAGIC);
	m[0] ^= 1;
	cn_put_le64(m + b.len - 8, b.len);
	ck_assert_int_eq(open_list(m, b.len), -CN_E_FORMAT);
	cn_put_le64(m + b.len - 8, 3);
	ck_assert_int_eq(open_list(m, b.len), -CN_E_FORMAT);
	cn_buf_free(&b);

	uint8_t buf[256];
	size_t n;
	/* name with '/' */
	n = raw(buf, (const uint8_t *)"\x08\x01" "f\x03" "a/b\x00\x00", 9, 8);
	ck_assert_int_eq(open_list(buf, n), -CN_E_PATH);
	/* "..": */
	n = raw(buf, (const uint8_t *)"\x07\x01" "f\x02" "..\x00\x00", 8, 8);
	ck_assert_int_eq(open_list(buf, n), -CN_E_PATH);
	/* table length claims more than there is */
	n = raw(buf, (const uint8_t *)"\x7f\x01" "f\x01" "a\x00\x00", 7, 8);
	ck_assert_int_eq(open_list(buf, n), -CN_E_FORMAT);
	/* trailing bytes inside the table */
	n = raw(buf, (const uint8_t *)"\x07\x01" "f\x01" "a\x00\x00\x00\x00", 9, 8);
	ck_assert_int_eq(open_list(buf, n), -CN_E_FORMAT);
	/* count larger than the entries */
	n = raw(buf, (const uint8_t *)"\x05\x02" "f\x01" "a\x00\x00", 7, 8);
	ck_assert_int_lt(open_list(buf, n), 0);
	/* unknown type */
	n = raw(buf, (const uint8_t *)"\x03\x01" "z\x00", 4, 8);
	ck_assert_int_lt(open_list(buf, n), 0);
	/* a directory pointing at itself (offset 0) and forward */
	n = raw(buf, (const uint8_t *)"\x05\x01" "d\x01" "a\x00", 6, 8);
	ck_assert_int_eq(open_list(buf, n), -CN_E_FORMAT);
	/* two directories sharing one child table: listing refuses the
	 * second visit (no exponential blow-up on a DAG) */
	static const uint8_t shared[] = {
		0x01, 0x00,                                  /* table at 8: empty */
		0x09, 0x02, 'd', 0x01, 'a', 0x02, 'd', 0x01, 'b', 0x02, /* at 10: a,b -> 8 */
	};
	n = raw(buf, shared, sizeof(shared), 10);
	struct cn_catalog_reader *r;
	struct rec rec = { "" };
	ck_assert_int_eq(cn_catalog_reader_open(buf, n, &r), 0);
	ck_assert_int_eq(cn_catalog_list(r, NULL, record, &rec), -CN_E_FORMAT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "referenced twice"));
	cn_catalog_reader_free(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("catalog_reader");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_varints);
	tcase_add_test(tc, test_read_back);
	tcase_add_test(tc, test_hostile);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
