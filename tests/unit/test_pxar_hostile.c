/* Hostile archives against the extractor: output amplification through
 * hardlinks and shared payload references (what is written must stay
 * bounded by the archive's content), and file capabilities smuggled in as
 * a security.capability xattr item past no_fcaps. Archives are built item
 * by item with pxar_testbuild.h. */
#include "cn_test.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "pxar/cn_pxar_decoder.h"
#include "engine/cn_pxar_extract.h"
#include "pxar_testbuild.h"

#define BIG (256u << 10)
#define NLINKS 100

static char base[256];

static void setup(void)
{
	snprintf(base, sizeof(base), "/tmp/cn_pxar_hostile_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(base));
	cn_log_setup(CN_LOG_ERROR, 0);
}

static void teardown(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	ck_assert_int_eq(system(cmd), 0);
}

static char *P(const char *rel)
{
	static char buf[4][1024];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", base, rel);
	return buf[i];
}

static uint8_t *big_data(void)
{
	uint8_t *d = malloc(BIG);
	ck_assert_ptr_nonnull(d);
	for (size_t i = 0; i < BIG; i++)
		d[i] = (uint8_t)(i * 31 + 7);
	return d;
}

static int extract(const struct tb *t, const char *target, const struct cn_pxar_extract_opts *o,
		   struct cn_pxar_extract_stats *st)
{
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, t->b.data, t->b.len);
	memset(st, 0, sizeof(*st));
	return cn_pxar_extract(&in, target, o, st);
}

/* Bytes of regular-file data below dir (hard links counted once). */
static unsigned long long tree_bytes(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "du -sb --apparent-size %s", dir);
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	unsigned long long n = 0;
	ck_assert_int_eq(fscanf(f, "%llu", &n), 1);
	pclose(f);
	return n;
}

/* Starts t with a root directory holding the large file "big" (data)
 * and returns its FILENAME offset. */
static uint64_t begin_with_big(struct tb *t, const uint8_t *data)
{
	tb_init(t);
	tb_root_begin(t, 0755);
	uint64_t fo = tb_pos(t);
	tb_file(t, "big", 0644, data, BIG);
	return fo;
}

/* A v2 archive: metadata m and payload p started (FORMAT_VERSION, root
 * directory, start marker). */
static void begin_split(struct tb *m, struct tb *p)
{
	uint8_t v[8];
	tb_init(m);
	tb_init(p);
	tb_item(p, CN_PXAR_PAYLOAD_START_MARKER, NULL, 0);
	cn_put_le64(v, 2);
	tb_item(m, CN_PXAR_FORMAT_VERSION, v, 8);
	tb_root_begin(m, 0755);
}

/* NLINKS hardlinks whose stored path does not exist, all pointing by
 * offset at one large file: a full extraction must refuse them rather
 * than copy the file once per link. */
START_TEST(test_hardlinks_to_missing_paths)
{
	uint8_t *data = big_data();
	struct tb t;
	uint64_t fo = begin_with_big(&t, data);
	for (int i = 0; i < NLINKS; i++) {
		char name[32], target[32];
		snprintf(name, sizeof(name), "l%03d", i);
		snprintf(target, sizeof(target), "gone/x%03d", i);
		tb_hardlink(&t, name, fo, target);
	}
	tb_dir_end(&t);
	ck_assert(!t.fail);
	struct cn_pxar_extract_stats st;
	int rc = extract(&t, P("out"), NULL, &st);
	ck_assert_msg(rc == -CN_E_FORMAT, "rc %d: %s", rc, cn_error_message());
	ck_assert_msg(strstr(cn_error_message(), "gone/x000"), "%s", cn_error_message());
	ck_assert_uint_le(st.bytes, BIG);
	ck_assert_uint_le(tree_bytes(P("out")), 2 * BIG);
	tb_free(&t);
	free(data);
}
END_TEST

/* Many valid hardlinks to a file outside the selection: its data is
 * restored once and the other links point to that copy. */
START_TEST(test_hardlinks_outside_selection_copied_once)
{
	uint8_t *data = big_data();
	struct tb t;
	uint64_t fo = begin_with_big(&t, data);
	tb_subdir(&t, "d", 0755);
	for (int i = 0; i < NLINKS; i++) {
		char name[32];
		snprintf(name, sizeof(name), "l%03d", i);
		tb_hardlink(&t, name, fo, "big");
	}
	tb_dir_end(&t);
	tb_dir_end(&t);
	ck_assert(!t.fail);
	struct cn_pxar_select *sel = NULL;
	ck_assert_int_eq(cn_pxar_select_from_path("d", &sel), 0);
	struct cn_pxar_extract_opts o = { .select = sel };
	struct cn_pxar_extract_stats st;
	int rc = extract(&t, P("out"), &o, &st);
	ck_assert_msg(rc == 0, "rc %d: %s", rc, cn_error_message());
	ck_assert_uint_eq(st.bytes, BIG);
	ck_assert_uint_eq(st.hardlinks, NLINKS - 1);
	struct stat s0, s1;
	ck_assert_int_eq(stat(P("out/d/l000"), &s0), 0);
	ck_assert_int_eq(stat(P("out/d/l099"), &s1), 0);
	ck_assert_uint_eq(s0.st_size, BIG);
	ck_assert_uint_eq(s0.st_ino, s1.st_ino);
	ck_assert_uint_eq(s0.st_nlink, NLINKS);
	ck_assert_int_ne(stat(P("out/big"), &s0), 0);
	ck_assert_uint_le(tree_bytes(P("out")), BIG + 64 * 1024);
	cn_pxar_select_free(sel);
	tb_free(&t);
	free(data);
}
END_TEST

/* A split archive whose NLINKS files all reference the one payload:
 * refused (a payload is referenced once), whether decoded, listed or
 * extracted, and extraction writes at most that payload. */
START_TEST(test_shared_payload_refs)
{
	uint8_t *data = big_data();
	struct tb m, p;
	uint8_t v[16];
	begin_split(&m, &p);
	uint64_t poff = tb_pos(&p);
	tb_split_file(&m, &p, "f000", data, BIG);
	for (int i = 1; i < NLINKS; i++) {
		/* the same reference again, without a payload of its own */
		char name[32];
		snprintf(name, sizeof(name), "f%03d", i);
		tb_name(&m, name);
		tb_entry(&m, CN_PXAR_IFREG | 0644, 0, 0, 1700000000, 0);
		cn_put_le64(v, poff);
		cn_put_le64(v + 8, BIG);
		tb_item(&m, CN_PXAR_PAYLOAD_REF, v, 16);
		tb_child_done(&m);
	}
	tb_dir_end(&m);
	tb_item(&p, CN_PXAR_PAYLOAD_TAIL_MARKER, NULL, 0);
	ck_assert(!m.fail && !p.fail);

	struct cn_pxar_input in, pin;
	cn_pxar_input_mem(&in, m.b.data, m.b.len);
	cn_pxar_input_mem(&pin, p.b.data, p.b.len);
	struct cn_pxar_decoder *d;
	ck_assert_int_eq(cn_pxar_decoder_new(&in, &pin, &d), 0);
	const struct cn_pxar_entry *e;
	int rc, files = 0;
	while ((rc = cn_pxar_decoder_next(d, &e)) > 0)
		files += e->kind == CN_PXAR_KIND_FILE;
	ck_assert_int_eq(rc, -CN_E_FORMAT);
	ck_assert_int_eq(files, 1);
	ck_assert_msg(strstr(cn_error_message(), "referenced once"), "%s", cn_error_message());
	cn_pxar_decoder_free(d);

	/* the same without the payload input (file cache rebuild) */
	ck_assert_int_eq(cn_pxar_decoder_new(&in, NULL, &d), 0);
	cn_pxar_decoder_metadata_only(d);
	while ((rc = cn_pxar_decoder_next(d, &e)) > 0)
		;
	ck_assert_int_eq(rc, -CN_E_FORMAT);
	cn_pxar_decoder_free(d);

	struct cn_pxar_extract_opts o = { .payload = &pin };
	struct cn_pxar_extract_stats st;
	rc = extract(&m, P("out"), &o, &st);
	ck_assert_msg(rc == -CN_E_FORMAT, "rc %d: %s", rc, cn_error_message());
	ck_assert_uint_le(st.bytes, BIG);
	ck_assert_uint_le(tree_bytes(P("out")), BIG + 64 * 1024);
	tb_free(&m);
	tb_free(&p);
	free(data);
}
END_TEST

/* Payload references in stream order, as the encoder writes them, still
 * decode (the first at the start marker's end, the next right after). */
START_TEST(test_ordered_payload_refs_accepted)
{
	struct tb m, p;
	begin_split(&m, &p);
	tb_split_file(&m, &p, "a", "", 0);
	tb_split_file(&m, &p, "b", "one", 3);
	tb_split_file(&m, &p, "c", "", 0);
	tb_dir_end(&m);
	tb_item(&p, CN_PXAR_PAYLOAD_TAIL_MARKER, NULL, 0);
	struct cn_pxar_input pin;
	cn_pxar_input_mem(&pin, p.b.data, p.b.len);
	struct cn_pxar_extract_opts o = { .payload = &pin };
	struct cn_pxar_extract_stats st;
	int rc = extract(&m, P("out"), &o, &st);
	ck_assert_msg(rc == 0, "rc %d: %s", rc, cn_error_message());
	ck_assert_uint_eq(st.files, 3);
	tb_free(&m);
	tb_free(&p);
}
END_TEST

/* vfs_cap_data revision 2 granting CAP_NET_BIND_SERVICE (permitted). */
static void cap_value(uint8_t v[20])
{
	memset(v, 0, 20);
	cn_put_le32(v, 0x02000000u);
	cn_put_le32(v + 4, 1u << 10);
}

static ssize_t get_cap(const char *path)
{
	uint8_t buf[64];
	return getxattr(path, "security.capability", buf, sizeof(buf));
}

/* Capabilities stored as an xattr item are file capabilities too:
 * no_fcaps (and no_xattrs) keep them off the restored file. */
START_TEST(test_no_fcaps_covers_xattr_item)
{
	uint8_t cap[20];
	cap_value(cap);
	uint8_t item[20 + 20];
	memcpy(item, "security.capability", 20);
	memcpy(item + 20, cap, 20);
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_name(&t, "as-xattr");
	tb_entry(&t, CN_PXAR_IFREG | 0755, 0, 0, 1700000000, 0);
	tb_item(&t, CN_PXAR_XATTR, item, sizeof(item));
	tb_item(&t, CN_PXAR_PAYLOAD, "#!", 2);
	tb_child_done(&t);
	tb_name(&t, "as-fcaps");
	tb_entry(&t, CN_PXAR_IFREG | 0755, 0, 0, 1700000000, 0);
	tb_item(&t, CN_PXAR_FCAPS, cap, sizeof(cap));
	tb_item(&t, CN_PXAR_PAYLOAD, "#!", 2);
	tb_child_done(&t);
	tb_dir_end(&t);
	ck_assert(!t.fail);
	struct cn_pxar_extract_stats st;

	/* by default both are restored (as root, where the test runs) */
	if (geteuid() == 0) {
		ck_assert_int_eq(extract(&t, P("all"), NULL, &st), 0);
		ck_assert_int_eq(get_cap(P("all/as-xattr")), 20);
		ck_assert_int_eq(get_cap(P("all/as-fcaps")), 20);
	}

	struct cn_pxar_extract_opts o = { .no_fcaps = 1 };
	ck_assert_int_eq(extract(&t, P("nofcaps"), &o, &st), 0);
	ck_assert_int_lt(get_cap(P("nofcaps/as-xattr")), 0);
	ck_assert_int_eq(errno, ENODATA);
	ck_assert_int_lt(get_cap(P("nofcaps/as-fcaps")), 0);
	ck_assert_int_eq(errno, ENODATA);

	struct cn_pxar_extract_opts ox = { .no_xattrs = 1 };
	ck_assert_int_eq(extract(&t, P("noxattrs"), &ox, &st), 0);
	ck_assert_int_lt(get_cap(P("noxattrs/as-xattr")), 0);
	ck_assert_int_eq(errno, ENODATA);
	tb_free(&t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pxar_hostile");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_hardlinks_to_missing_paths);
	tcase_add_test(tc, test_hardlinks_outside_selection_copied_once);
	tcase_add_test(tc, test_shared_payload_refs);
	tcase_add_test(tc, test_ordered_payload_refs_accepted);
	tcase_add_test(tc, test_no_fcaps_covers_xattr_item);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
