/* pxar v2 split archives: encoder bytes pinned against spec pxar.md §8
 * (confirmed there against the pxar 1.0.0 encoder), read back through the
 * decoder with the payload input, payload references into bytes placed by
 * the caller (reused chunks), and the encoder's refusals. */
#include "cn_test.h"
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "pxar/cn_pxar_decoder.h"
#include "pxar/cn_pxar_encoder.h"
#include "engine/cn_pxar_extract.h"
#include "pxar/cn_pxar_format.h"
#include "engine/cn_walker.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int sink(void *ctx, const uint8_t *d, size_t l)
{
	return cn_buf_append(ctx, d, l);
}

static uint64_t le64(const struct cn_buf *b, size_t off)
{
	ck_assert_uint_le(off + 8, b->len);
	return cn_le64(b->data + off);
}

static void meta(struct cn_pxar_metadata *m, uint32_t mode)
{
	memset(m, 0, sizeof(*m));
	m->stat.mode = mode;
}

/* spec §8: root with one file "a" = "hi" */
START_TEST(test_spec_example)
{
	struct cn_buf mb = { 0 }, pb = { 0 };
	struct cn_pxar_metadata root, f;
	struct cn_pxar_encoder *e;
	meta(&root, CN_PXAR_IFDIR | 0755);
	meta(&f, CN_PXAR_IFREG | 0644);
	ck_assert_int_eq(cn_pxar_encoder_new_split(sink, &mb, sink, &pb, NULL, 0, &root, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_is_split(e), 1);
	ck_assert_int_eq(cn_pxar_encoder_begin_file(e, &f, "a", 1, 2, NULL), 0);
	ck_assert_int_eq(cn_pxar_encoder_write(e, "hi", 2), 0);
	ck_assert_int_eq(cn_pxar_encoder_end_file(e), 0);
	ck_assert_int_eq(cn_pxar_encoder_finish(e), 0);
	cn_pxar_encoder_free(e);

	/* metadata stream */
	ck_assert_uint_eq(mb.len, 250);
	ck_assert_uint_eq(le64(&mb, 0), CN_PXAR_FORMAT_VERSION);
	ck_assert_uint_eq(le64(&mb, 8), 24);
	ck_assert_uint_eq(le64(&mb, 16), 2);
	ck_assert_uint_eq(le64(&mb, 24), CN_PXAR_ENTRY);
	ck_assert_uint_eq(le64(&mb, 80), CN_PXAR_FILENAME);
	ck_assert_uint_eq(le64(&mb, 154), CN_PXAR_PAYLOAD_REF);
	ck_assert_uint_eq(le64(&mb, 162), 32);
	ck_assert_uint_eq(le64(&mb, 170), 16); /* offset of the PAYLOAD header */
	ck_assert_uint_eq(le64(&mb, 178), 2);
	ck_assert_uint_eq(le64(&mb, 186), CN_PXAR_GOODBYE);
	ck_assert_uint_eq(le64(&mb, 194), 64);
	ck_assert_uint_eq(le64(&mb, 202), cn_pxar_hash_filename("a", 1));
	ck_assert_uint_eq(le64(&mb, 210), 106);
	ck_assert_uint_eq(le64(&mb, 218), 108); /* metadata + data size */
	ck_assert_uint_eq(le64(&mb, 226), CN_PXAR_GOODBYE_TAIL_MARKER);
	ck_assert_uint_eq(le64(&mb, 234), 186); /* from the archive start */
	ck_assert_uint_eq(le64(&mb, 242), 64);
	/* payload stream */
	ck_assert_uint_eq(pb.len, 50);
	ck_assert_uint_eq(le64(&pb, 0), CN_PXAR_PAYLOAD_START_MARKER);
	ck_assert_uint_eq(le64(&pb, 8), 16);
	ck_assert_uint_eq(le64(&pb, 16), CN_PXAR_PAYLOAD);
	ck_assert_uint_eq(le64(&pb, 24), 18);
	ck_assert_mem_eq(pb.data + 32, "hi", 2);
	ck_assert_uint_eq(le64(&pb, 34), CN_PXAR_PAYLOAD_TAIL_MARKER);
	ck_assert_uint_eq(le64(&pb, 42), 16);

	/* the v1 encoding of the same tree is the spec §7 archive */
	struct cn_buf v1 = { 0 };
	ck_assert_int_eq(cn_pxar_encoder_new(sink, &v1, &root, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_begin_file(e, &f, "a", 1, 2, NULL), 0);
	ck_assert_int_eq(cn_pxar_encoder_write(e, "hi", 2), 0);
	ck_assert_int_eq(cn_pxar_encoder_end_file(e), 0);
	ck_assert_int_eq(cn_pxar_encoder_finish(e), 0);
	cn_pxar_encoder_free(e);
	ck_assert_uint_eq(v1.len, 212);
	/* everything after FORMAT_VERSION up to the file's ENTRY is the same */
	ck_assert_mem_eq(v1.data, mb.data + 24, 130 - 56 + 56);
	cn_buf_free(&v1);
	cn_buf_free(&mb);
	cn_buf_free(&pb);
}
END_TEST

START_TEST(test_prelude)
{
	struct cn_buf mb = { 0 }, pb = { 0 };
	struct cn_pxar_metadata root;
	struct cn_pxar_encoder *e;
	static const char pre[] = "{\"exclude-patterns\":\"*.tmp\\n\"}";
	meta(&root, CN_PXAR_IFDIR | 0700);
	ck_assert_int_eq(cn_pxar_encoder_new_split(sink, &mb, sink, &pb, pre, sizeof(pre) - 1, &root, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_finish(e), 0);
	cn_pxar_encoder_free(e);
	ck_assert_uint_eq(le64(&mb, 24), CN_PXAR_PRELUDE);
	ck_assert_uint_eq(le64(&mb, 32), 16 + sizeof(pre) - 1);
	ck_assert_mem_eq(mb.data + 40, pre, sizeof(pre) - 1);
	size_t root_at = 40 + sizeof(pre) - 1;
	ck_assert_uint_eq(le64(&mb, root_at), CN_PXAR_ENTRY);
	/* empty root: goodbye with only the tail, offset from archive start */
	size_t gb = root_at + 56;
	ck_assert_uint_eq(le64(&mb, gb), CN_PXAR_GOODBYE);
	ck_assert_uint_eq(le64(&mb, gb + 24), gb);
	ck_assert_uint_eq(pb.len, 32);

	struct cn_pxar_input in, pin;
	struct cn_pxar_decoder *d;
	const struct cn_pxar_entry *ent;
	cn_pxar_input_mem(&in, mb.data, mb.len);
	cn_pxar_input_mem(&pin, pb.data, pb.len);
	ck_assert_int_eq(cn_pxar_decoder_new(&in, &pin, &d), 0);
	ck_assert_int_eq(cn_pxar_decoder_next(d, &ent), 1);
	ck_assert_int_eq(ent->kind, CN_PXAR_KIND_DIR);
	ck_assert_int_eq(cn_pxar_decoder_version(d), 2);
	cn_pxar_decoder_free(d);
	cn_buf_free(&mb);
	cn_buf_free(&pb);
}
END_TEST

/* Files written, then bytes the caller places itself (as reused chunks of
 * a previous payload stream, with padding before them), referenced with
 * add_payload_ref; the decoder and accessor find every file's content. A
 * refused reference (before the payload position) writes nothing. */
START_TEST(test_payload_ref_ok)
{
	struct cn_buf mb = { 0 }, pb = { 0 };
	struct cn_pxar_metadata root, f, d;
	struct cn_pxar_encoder *e;
	uint64_t link;
	meta(&root, CN_PXAR_IFDIR | 0755);
	meta(&f, CN_PXAR_IFREG | 0600);
	meta(&d, CN_PXAR_IFDIR | 0750);
	ck_assert_int_eq(cn_pxar_encoder_new_split(sink, &mb, sink, &pb, NULL, 0, &root, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_begin_file(e, &f, "first", 5, 5, NULL), 0);
	ck_assert_int_eq(cn_pxar_encoder_write(e, "11111", 5), 0);
	ck_assert_int_eq(cn_pxar_encoder_end_file(e), 0);
	ck_assert_int_eq(cn_pxar_encoder_begin_dir(e, &d, "sub", 3), 0);
	ck_assert_int_eq(cn_pxar_encoder_flush_payload(e), 0);
	uint64_t at = cn_pxar_encoder_payload_position(e);
	ck_assert_uint_eq(at, pb.len);
	ck_assert_int_lt(cn_pxar_encoder_add_payload_ref(e, &f, "x", 1, 3, at - 1, NULL), 0);

	uint8_t inj[7 + 19 + 20 + 5];
	memset(inj, 0xee, sizeof(inj));
	cn_put_le64(inj + 7, CN_PXAR_PAYLOAD);
	cn_put_le64(inj + 15, 16 + 3);
	memcpy(inj + 23, "abc", 3);
	cn_put_le64(inj + 26, CN_PXAR_PAYLOAD);
	cn_put_le64(inj + 34, 16 + 4);
	memcpy(inj + 42, "wxyz", 4);
	/* references first (as upstream: refs, then the chunks are injected) */
	ck_assert_int_eq(cn_pxar_encoder_add_payload_ref(e, &f, "r1", 2, 3, at + 7, &link), 0);
	ck_assert_int_eq(cn_pxar_encoder_add_payload_ref(e, &f, "r2", 2, 4, at + 26, NULL), 0);
	ck_assert_int_eq(cn_pxar_encoder_advance(e, sizeof(inj)), 0);
	ck_assert_int_eq(cn_buf_append(&pb, inj, sizeof(inj)), 0);
	ck_assert_int_eq(cn_pxar_encoder_add_hardlink(e, "r1link", 6, "sub/r1", 6, link), 0);
	ck_assert_int_eq(cn_pxar_encoder_end_dir(e), 0);
	ck_assert_int_eq(cn_pxar_encoder_begin_file(e, &f, "last", 4, 2, NULL), 0);
	ck_assert_int_eq(cn_pxar_encoder_write(e, "zz", 2), 0);
	ck_assert_int_eq(cn_pxar_encoder_end_file(e), 0);
	ck_assert_int_eq(cn_pxar_encoder_finish(e), 0);
	cn_pxar_encoder_free(e);

	struct cn_pxar_input in, pin;
	struct cn_pxar_decoder *dec;
	const struct cn_pxar_entry *ent;
	static const struct { const char *path; const char *data; } want[] = {
		{ "first", "11111" }, { "sub/r1", "abc" }, { "sub/r2", "wxyz" }, { "last", "zz" },
	};
	size_t seen = 0, links = 0;
	cn_pxar_input_mem(&in, mb.data, mb.len);
	cn_pxar_input_mem(&pin, pb.data, pb.len);
	ck_assert_int_eq(cn_pxar_decoder_new(&in, &pin, &dec), 0);
	int rc;
	while ((rc = cn_pxar_decoder_next(dec, &ent)) == 1) {
		if (ent->kind == CN_PXAR_KIND_HARDLINK) {
			ck_assert_str_eq(ent->link, "sub/r1");
			links++;
		}
		if (ent->kind != CN_PXAR_KIND_FILE)
			continue;
		ck_assert_uint_lt(seen, 4);
		ck_assert_str_eq(ent->path, want[seen].path);
		ck_assert_uint_eq(ent->file_size, strlen(want[seen].data));
		ck_assert_int_eq(ent->content_in_payload, 1);
		char buf[8];
		ck_assert_int_eq(cn_pxar_decoder_read(dec, 0, buf, ent->file_size), 0);
		ck_assert_mem_eq(buf, want[seen].data, ent->file_size);
		seen++;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(seen, 4);
	ck_assert_uint_eq(links, 1);
	cn_pxar_decoder_free(dec);

	/* random access through the goodbye tables */
	struct cn_pxar_accessor *acc;
	struct cn_pxar_range r;
	ck_assert_int_eq(cn_pxar_accessor_open(&in, &pin, &acc), 0);
	ck_assert_int_eq(cn_pxar_lookup(acc, "sub/r2", &r), 1);
	ck_assert_int_eq(cn_pxar_accessor_entry(acc, &r, "sub/r2", &ent), 0);
	ck_assert_uint_eq(ent->file_size, 4);
	ck_assert_int_eq(cn_pxar_lookup(acc, "last", &r), 1);
	cn_pxar_accessor_free(acc);

	/* a payload stream that lost the injected bytes is refused */
	struct cn_pxar_input bad;
	cn_pxar_input_mem(&bad, pb.data, at + 10);
	ck_assert_int_eq(cn_pxar_decoder_new(&in, &bad, &dec), 0);
	while ((rc = cn_pxar_decoder_next(dec, &ent)) == 1)
		;
	ck_assert_int_lt(rc, 0);
	cn_pxar_decoder_free(dec);
	cn_buf_free(&mb);
	cn_buf_free(&pb);
}
END_TEST

START_TEST(test_refusals)
{
	struct cn_buf mb = { 0 };
	struct cn_pxar_metadata root, f;
	struct cn_pxar_encoder *e;
	meta(&root, CN_PXAR_IFDIR | 0755);
	meta(&f, CN_PXAR_IFREG | 0600);
	ck_assert_int_eq(cn_pxar_encoder_new_split(sink, &mb, NULL, NULL, NULL, 0, &root, &e), -EINVAL);
	ck_assert_int_eq(cn_pxar_encoder_new(sink, &mb, &root, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_is_split(e), 0);
	ck_assert_int_eq(cn_pxar_encoder_add_payload_ref(e, &f, "a", 1, 1, 16, NULL), -EINVAL);
	ck_assert_int_eq(cn_pxar_encoder_advance(e, 10), -EINVAL);
	ck_assert_int_eq(cn_pxar_encoder_finish(e), 0);
	cn_pxar_encoder_free(e);
	cn_buf_free(&mb);
}
END_TEST

/* ---- walker in split mode ---- */

static char tmpdir[PATH_MAX];

static void put_file(const char *rel, const void *data, size_t len)
{
	char p[PATH_MAX * 2];
	snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void mk_dir(const char *rel)
{
	char p[PATH_MAX * 2];
	snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
	ck_assert_int_eq(mkdir(p, 0755), 0);
}

static void rm_tree(const char *dir)
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static int collect(void *ctx, const struct cn_pxar_entry *e)
{
	char line[8192];
	cn_pxar_format_entry(e, line, sizeof(line));
	return cn_buf_append(ctx, line, strlen(line)) < 0 || cn_buf_append(ctx, "\n", 1) < 0 ? -ENOMEM : 0;
}

START_TEST(test_walker_split)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/cn_split_XXXXXX", base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	mk_dir("src");
	mk_dir("src/d");
	mk_dir("src/d/e");
	put_file("src/a", "hello", 5);
	static uint8_t big[300000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + i / 251);
	put_file("src/d/big", big, sizeof(big));
	put_file("src/d/e/x.tmp", "x", 1);
	put_file("src/d/empty", "", 0);
	char src[PATH_MAX + 16], a[PATH_MAX * 6], b[PATH_MAX * 2];
	snprintf(src, sizeof(src), "%s/src", tmpdir);
	snprintf(a, sizeof(a), "%s/a", src);
	snprintf(b, sizeof(b), "%s/d/hl", src);
	ck_assert_int_eq(link(a, b), 0);

	const char *ex[] = { "*.tmp", "we\"ird" };
	struct cn_pxar_create_opts o = { .excludes = ex, .n_excludes = 2 };
	struct cn_buf v1 = { 0 }, mb = { 0 }, pb = { 0 };
	struct cn_pxar_create_stats st1, st2;
	ck_assert_int_eq(cn_pxar_create(src, &o, sink, &v1, NULL, &st1), 0);
	o.payload_out = sink;
	o.payload_ctx = &pb;
	ck_assert_int_eq(cn_pxar_create(src, &o, sink, &mb, NULL, &st2), 0);
	ck_assert_uint_eq(st2.archive_size, mb.len);
	ck_assert_uint_eq(st2.payload_size, pb.len);
	ck_assert_uint_eq(st2.bytes_read, 5 + sizeof(big));
	/* the payload stream holds the data plus one header per file and the markers */
	ck_assert_uint_eq(pb.len, 16 + (16 + 5) + (16 + sizeof(big)) + 16 + 16);

	/* prelude with the patterns as JSON */
	static const char pre[] = "{\"exclude-patterns\":\"*.tmp\\nwe\\\"ird\\n\"}";
	ck_assert_uint_eq(le64(&mb, 24), CN_PXAR_PRELUDE);
	ck_assert_uint_eq(le64(&mb, 32), 16 + sizeof(pre) - 1);
	ck_assert_mem_eq(mb.data + 40, pre, sizeof(pre) - 1);

	/* same entries as the v1 archive, minus .pxarexclude-cli */
	struct cn_pxar_input in1, in2, pin;
	struct cn_buf l1 = { 0 }, l2 = { 0 };
	cn_pxar_input_mem(&in1, v1.data, v1.len);
	cn_pxar_input_mem(&in2, mb.data, mb.len);
	cn_pxar_input_mem(&pin, pb.data, pb.len);
	ck_assert_int_eq(cn_pxar_list(&in1, NULL, NULL, collect, &l1), 0);
	ck_assert_int_eq(cn_pxar_list(&in2, &pin, NULL, collect, &l2), 0);
	ck_assert_int_eq(cn_buf_append(&l1, "", 1), 0);
	ck_assert_int_eq(cn_buf_append(&l2, "", 1), 0);
	char *cli = strstr((char *)l1.data, "\"/.pxarexclude-cli\"");
	ck_assert_ptr_nonnull(cli);
	ck_assert_ptr_null(strstr((char *)l2.data, ".pxarexclude-cli"));
	char *ls = cli;
	while (ls > (char *)l1.data && ls[-1] != '\n')
		ls--;
	*ls = 0; /* it is the last entry */
	ck_assert_str_eq((char *)l1.data, (char *)l2.data);

	/* extract and compare contents */
	char out[PATH_MAX + 16];
	snprintf(out, sizeof(out), "%s/out", tmpdir);
	struct cn_pxar_extract_opts xo = { .payload = &pin };
	ck_assert_int_eq(cn_pxar_extract(&in2, out, &xo, NULL), 0);
	snprintf(a, sizeof(a), "cmp -s '%s/d/big' '%s/d/big' && cmp -s '%s/a' '%s/d/hl'", src, out, src, out);
	ck_assert_int_eq(system(a), 0);

	cn_buf_free(&l1);
	cn_buf_free(&l2);
	cn_buf_free(&v1);
	cn_buf_free(&mb);
	cn_buf_free(&pb);
	rm_tree(tmpdir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pxar_split");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_spec_example);
	tcase_add_test(tc, test_prelude);
	tcase_add_test(tc, test_payload_ref_ok);
	tcase_add_test(tc, test_refusals);
	tcase_add_test(tc, test_walker_split);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
