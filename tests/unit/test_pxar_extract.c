/* Tests of the extractor on hand-built archives: contents and metadata,
 * sparse files, no overwrite unless asked, single-path and pattern
 * selection, and hostile archives that try to write outside the target
 * (symlink then write-through, symlinked parent directories, hardlinks
 * through symlinks). Each hostile case checks that the outside file is
 * untouched. */
#include "cn_test.h"
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "pxar/cn_pxar_decoder.h"
#include "engine/cn_pxar_extract.h"
#include "lending_input.h"
#include "pxar_testbuild.h"


/* Points o at a selection of the one argument m, freeing the one set
 * before (kept reachable in between). */
static struct cn_pxar_select *cur_sel;
static void set_match(struct cn_pxar_extract_opts *o, const char *m)
{
	cn_pxar_select_free(cur_sel);
	cur_sel = NULL;
	ck_assert_msg(cn_pxar_select_from_path(m, &cur_sel) == 0, "%s", cn_error_message());
	o->select = cur_sel;
}

static char base[256];

static void setup(void)
{
	snprintf(base, sizeof(base), "/tmp/cn_pxar_extract_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(base));
	cn_log_setup(CN_LOG_ERROR, 0);
}

static void teardown(void)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "chattr -R -i %s 2>/dev/null; rm -rf %s", base, base);
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

static void write_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(s, f);
	fclose(f);
}

static char *read_file(const char *path)
{
	static char buf[4096];
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static int extract(struct tb *t, const char *target, const struct cn_pxar_extract_opts *o,
		   struct cn_pxar_extract_stats *st)
{
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, t->b.data, t->b.len);
	return cn_pxar_extract(&in, target, o, st);
}

START_TEST(test_basic_tree)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0751);
	tb_file(&t, "empty", 0600, "", 0);
	tb_file(&t, "one", 0644, "1", 1);
	uint64_t fo = tb_pos(&t);
	tb_file(&t, "suid", 04755, "#!", 2);
	tb_hardlink(&t, "suid.link", fo, "suid");
	tb_symlink(&t, "sl", "/etc/passwd");
	tb_subdir(&t, "ro", 0555);
	tb_file(&t, "inside", 0444, "x", 1);
	tb_dir_end(&t);
	tb_name(&t, "fifo");
	tb_entry(&t, CN_PXAR_IFIFO | 0640, 0, 0, 1600000000, 5);
	tb_child_done(&t);
	tb_dir_end(&t);

	struct cn_pxar_extract_stats st;
	ck_assert_int_eq(extract(&t, P("out"), NULL, &st), 0);
	ck_assert_uint_eq(st.files, 4);
	ck_assert_uint_eq(st.hardlinks, 1);
	ck_assert_uint_eq(st.symlinks, 1);
	ck_assert_uint_eq(st.fifos, 1);
	ck_assert_uint_eq(st.dirs, 1);
	ck_assert_uint_eq(st.errors, 0);
	struct stat s, s2;
	ck_assert_int_eq(stat(P("out"), &s), 0);
	ck_assert_uint_eq(s.st_mode & 07777, 0751);
	ck_assert_int_eq(s.st_mtime, 1700000000);
	ck_assert_int_eq(stat(P("out/suid"), &s), 0);
	ck_assert_uint_eq(s.st_mode & 07777, 04755);
	ck_assert_uint_eq(s.st_nlink, 2);
	ck_assert_int_eq(stat(P("out/suid.link"), &s2), 0);
	ck_assert_uint_eq(s.st_ino, s2.st_ino);
	ck_assert_int_eq(lstat(P("out/sl"), &s), 0);
	ck_assert(S_ISLNK(s.st_mode));
	ck_assert_int_eq(s.st_mtime, 1700000000);
	ck_assert_int_eq(stat(P("out/ro"), &s), 0);
	ck_assert_uint_eq(s.st_mode & 07777, 0555);
	ck_assert_str_eq(read_file(P("out/ro/inside")), "x");
	ck_assert_int_eq(lstat(P("out/fifo"), &s), 0);
	ck_assert(S_ISFIFO(s.st_mode));
	ck_assert_int_eq(s.st_mtim.tv_sec, 1600000000);
	ck_assert_int_eq(s.st_mtim.tv_nsec, 5);
	ck_assert_int_eq(stat(P("out/empty"), &s), 0);
	ck_assert_int_eq(s.st_size, 0);

	/* again into the same target: nothing overwritten, errors reported */
	write_file(P("out/one"), "mine");
	ck_assert_int_eq(chmod(P("out/ro"), 0755), 0);
	struct cn_pxar_extract_opts o = { .allow_existing_dirs = 1 };
	ck_assert_int_eq(extract(&t, P("out"), &o, &st), -EIO);
	ck_assert_uint_gt(st.errors, 0);
	ck_assert_str_eq(read_file(P("out/one")), "mine");
	/* strict: stops at the first */
	o.strict = 1;
	ck_assert_int_eq(extract(&t, P("out"), &o, &st), -EEXIST);
	/* overwrite */
	o.strict = 0;
	o.overwrite = 1;
	ck_assert_int_eq(extract(&t, P("out"), &o, &st), 0);
	ck_assert_str_eq(read_file(P("out/one")), "1");
	/* existing directories refused unless allowed */
	o.allow_existing_dirs = 0;
	ck_assert_int_eq(extract(&t, P("out"), &o, &st), -EIO);
	tb_free(&t);
}
END_TEST

START_TEST(test_sparse)
{
	size_t n = 1 << 20;
	uint8_t *data = calloc(1, n + 4096);
	data[0] = 'a';
	data[n + 4095] = 'z';
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_file(&t, "sparse", 0644, data, n + 4096);
	tb_file(&t, "zeros", 0644, data + 4096, 3 * 4096); /* all zero: ends in a hole */
	tb_dir_end(&t);
	struct cn_pxar_extract_stats st;
	ck_assert_int_eq(extract(&t, P("out"), NULL, &st), 0);
	ck_assert_uint_eq(st.bytes, n + 4096 + 3 * 4096);
	ck_assert_uint_ge(st.sparse_bytes, n - 4096);
	struct stat s;
	ck_assert_int_eq(stat(P("out/sparse"), &s), 0);
	ck_assert_int_eq(s.st_size, n + 4096);
	int fd = open(P("out/sparse"), O_RDONLY);
	uint8_t *back = malloc(n + 4096);
	ck_assert_int_eq(cn_read_full(fd, back, n + 4096), 0);
	close(fd);
	ck_assert_mem_eq(back, data, n + 4096);
	ck_assert_int_eq(stat(P("out/zeros"), &s), 0);
	ck_assert_int_eq(s.st_size, 3 * 4096);
	free(back);
	free(data);
	tb_free(&t);
}
END_TEST

START_TEST(test_select_path_and_pattern)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	uint64_t fo = tb_pos(&t);
	tb_file(&t, "a.txt", 0644, "A", 1);
	tb_subdir(&t, "d", 0700);
	tb_file(&t, "b.txt", 0644, "B", 1);
	tb_file(&t, "c.dat", 0644, "C", 1);
	tb_hardlink(&t, "link", fo, "a.txt");
	tb_dir_end(&t);
	tb_dir_end(&t);
	struct cn_pxar_extract_opts o = { 0 };
	set_match(&o, "d/b.txt");
	struct cn_pxar_extract_stats st;
	ck_assert_int_eq(extract(&t, P("one"), &o, &st), 0);
	ck_assert_str_eq(read_file(P("one/d/b.txt")), "B");
	ck_assert_ptr_null(read_file(P("one/d/c.dat")));
	ck_assert_ptr_null(read_file(P("one/a.txt")));
	struct stat s;
	ck_assert_int_eq(stat(P("one/d"), &s), 0);
	ck_assert_uint_eq(s.st_mode & 07777, 0700); /* parent's metadata restored */

	/* a hardlink whose target is not extracted gets the target's data */
	set_match(&o, "/d/link");
	ck_assert_int_eq(extract(&t, P("hl"), &o, &st), 0);
	ck_assert_str_eq(read_file(P("hl/d/link")), "A");

	set_match(&o, "d");
	ck_assert_int_eq(extract(&t, P("sub"), &o, &st), 0);
	ck_assert_str_eq(read_file(P("sub/d/c.dat")), "C");
	ck_assert_str_eq(read_file(P("sub/d/link")), "A");
	ck_assert_ptr_null(read_file(P("sub/a.txt")));

	set_match(&o, "*.txt");
	ck_assert_int_eq(extract(&t, P("glob"), &o, &st), 0);
	ck_assert_str_eq(read_file(P("glob/a.txt")), "A");
	ck_assert_str_eq(read_file(P("glob/d/b.txt")), "B");
	ck_assert_ptr_null(read_file(P("glob/d/c.dat")));

	set_match(&o, "nope/x");
	ck_assert_int_eq(extract(&t, P("none"), &o, &st), -ENOENT);
	set_match(&o, "../etc");
	ck_assert_int_lt(extract(&t, P("none"), &o, &st), 0);
	tb_free(&t);
}
END_TEST

/* Outside the target: a file and a directory the archives try to reach. */
static void make_outside(void)
{
	ck_assert_int_eq(mkdir(P("outside"), 0755), 0);
	write_file(P("outside/victim"), "original");
}

static void check_outside(void)
{
	ck_assert_str_eq(read_file(P("outside/victim")), "original");
	DIR *d = opendir(P("outside"));
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n++;
	closedir(d);
	ck_assert_int_eq(n, 3); /* ., .., victim */
}

START_TEST(test_symlink_write_through)
{
	make_outside();
	/* symlink "x" -> outside/victim, then a file "x": not written through,
	 * even with overwrite (the link is replaced instead) */
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_symlink(&t, "x", P("outside/victim"));
	tb_file(&t, "x", 0644, "evil", 4);
	tb_dir_end(&t);
	/* duplicate names are refused by the decoder before anything */
	struct cn_pxar_extract_stats st;
	ck_assert_int_lt(extract(&t, P("t1"), NULL, &st), 0);
	check_outside();
	tb_free(&t);

	/* the same through two archives extracted one after the other */
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_symlink(&t, "x", P("outside/victim"));
	tb_symlink(&t, "y", P("outside"));
	tb_dir_end(&t);
	ck_assert_int_eq(extract(&t, P("t2"), NULL, &st), 0);
	tb_free(&t);
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_file(&t, "x", 0644, "evil", 4);
	tb_subdir(&t, "y", 0755);
	tb_file(&t, "planted", 0644, "evil", 4);
	tb_dir_end(&t);
	tb_dir_end(&t);
	struct cn_pxar_extract_opts o = { .allow_existing_dirs = 1 };
	ck_assert_int_eq(extract(&t, P("t2"), &o, &st), -EIO); /* x exists; y is a symlink */
	check_outside();
	o.overwrite = 1;
	ck_assert_int_eq(extract(&t, P("t2"), &o, &st), -EIO); /* y still refused */
	check_outside();
	ck_assert_str_eq(read_file(P("t2/x")), "evil"); /* the link was replaced */
	struct stat s;
	ck_assert_int_eq(lstat(P("t2/y"), &s), 0);
	ck_assert(S_ISLNK(s.st_mode));
	tb_free(&t);
}
END_TEST

START_TEST(test_hardlink_through_symlink)
{
	make_outside();
	/* first archive plants a symlink to the outside directory */
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_symlink(&t, "s", P("outside"));
	tb_dir_end(&t);
	struct cn_pxar_extract_stats st;
	ck_assert_int_eq(extract(&t, P("t"), NULL, &st), 0);
	tb_free(&t);
	/* second archive: a valid hardlink structure whose stored path walks
	 * through that symlink; extraction must not link the outside file */
	tb_init(&t);
	tb_root_begin(&t, 0755);
	uint64_t fo = tb_pos(&t);
	tb_file(&t, "f", 0644, "mine", 4);
	tb_hardlink(&t, "h", fo, "s/victim");
	tb_dir_end(&t);
	struct cn_pxar_extract_opts o = { .overwrite = 1 };
	ck_assert_int_eq(extract(&t, P("t"), &o, &st), -EIO);
	struct stat s;
	ck_assert_int_ne(lstat(P("t/h"), &s), 0);
	struct stat v;
	ck_assert_int_eq(stat(P("outside/victim"), &v), 0);
	ck_assert_uint_eq(v.st_nlink, 1);
	check_outside();
	tb_free(&t);
}
END_TEST

START_TEST(test_hostile_archive_writes_nothing_outside)
{
	make_outside();
	/* names the decoder refuses: nothing may appear anywhere, and the
	 * archive is reported malformed (exit code 4, corrupt data) */
	const char *names[] = { "..", "../outside", "/tmp", "." };
	for (size_t i = 0; i < 4; i++) {
		struct tb t;
		tb_init(&t);
		tb_root_begin(&t, 0755);
		tb_file(&t, names[i], 0644, "evil", 4);
		tb_dir_end(&t);
		ck_assert_int_eq(extract(&t, P("t"), NULL, NULL), -CN_E_FORMAT);
		check_outside();
		tb_free(&t);
	}
}
END_TEST

START_TEST(test_list_and_format)
{
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_file(&t, "f", 04754, "abc", 3);
	tb_symlink(&t, "l", "f");
	tb_dir_end(&t);
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	struct cn_pxar_accessor *a;
	struct cn_pxar_range r;
	const struct cn_pxar_entry *e;
	char line[512];
	ck_assert_int_eq(cn_pxar_accessor_open(&in, NULL, &a), 0);
	ck_assert_int_eq(cn_pxar_lookup(a, "f", &r), 1);
	ck_assert_int_eq(cn_pxar_accessor_entry(a, &r, "f", &e), 0);
	cn_pxar_format_entry(e, line, sizeof(line));
	ck_assert_msg(strncmp(line, "-rwsr-xr--   0/0           ", 27) == 0, "%s", line);
	ck_assert_ptr_nonnull(strstr(line, "        3 \"/f\""));
	ck_assert_int_eq(cn_pxar_lookup(a, "l", &r), 1);
	ck_assert_int_eq(cn_pxar_accessor_entry(a, &r, "l", &e), 0);
	cn_pxar_format_entry(e, line, sizeof(line));
	ck_assert_ptr_nonnull(strstr(line, "\"/l\" -> \"f\""));
	ck_assert_int_eq(line[0], 'l');
	cn_pxar_accessor_free(a);
	tb_free(&t);
}
END_TEST

START_TEST(test_chattr_flags)
{
	/* probe: can this file system keep FS_NOATIME_FL? */
	int pfd = open(P("probe"), O_WRONLY | O_CREAT, 0600), fl = FS_NOATIME_FL;
	int supported = pfd >= 0 && ioctl(pfd, FS_IOC_SETFLAGS, &fl) == 0;
	close(pfd);
	if (!supported) {
		fprintf(stderr, "note: no chattr support under %s: flags test skipped\n", base);
		return;
	}
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_name(&t, "f");
	uint8_t st[40] = { 0 };
	cn_put_le64(st, CN_PXAR_IFREG | 0644);
	cn_put_le64(st + 8, CN_PXAR_FLAG_NOATIME | CN_PXAR_FLAG_NODUMP);
	tb_item(&t, CN_PXAR_ENTRY, st, sizeof(st));
	tb_item(&t, CN_PXAR_PAYLOAD, "data", 4);
	tb_child_done(&t);
	tb_dir_end(&t);
	ck_assert_int_eq(extract(&t, P("out"), NULL, NULL), 0);
	int fd = open(P("out/f"), O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ioctl(fd, FS_IOC_GETFLAGS, &fl), 0);
	close(fd);
	ck_assert(fl & FS_NOATIME_FL);
	ck_assert(!(fl & FS_NODUMP_FL)); /* not restored by default, as upstream */
	tb_free(&t);
}
END_TEST

START_TEST(test_split_archive)
{
	/* v2: metadata stream with PAYLOAD_REFs, payload stream separate */
	struct tb m, p;
	uint8_t v[16];
	tb_init(&m);
	tb_init(&p);
	tb_item(&p, CN_PXAR_PAYLOAD_START_MARKER, NULL, 0);
	cn_put_le64(v, 2);
	tb_item(&m, CN_PXAR_FORMAT_VERSION, v, 8);
	tb_dir_begin(&m);
	tb_entry(&m, CN_PXAR_IFDIR | 0755, 0, 0, 1700000000, 0);
	const char *names[] = { "a", "b" }, *data[] = { "first", "second file" };
	for (int i = 0; i < 2; i++) {
		tb_name(&m, names[i]);
		tb_entry(&m, CN_PXAR_IFREG | 0644, 0, 0, 1700000000, 0);
		cn_put_le64(v, tb_pos(&p));
		cn_put_le64(v + 8, strlen(data[i]));
		tb_item(&p, CN_PXAR_PAYLOAD, data[i], strlen(data[i]));
		tb_item(&m, CN_PXAR_PAYLOAD_REF, v, 16);
		tb_child_done(&m);
	}
	tb_dir_end(&m);
	tb_item(&p, CN_PXAR_PAYLOAD_TAIL_MARKER, NULL, 0);
	struct cn_pxar_input pin;
	cn_pxar_input_mem(&pin, p.b.data, p.b.len);
	struct cn_pxar_extract_opts o = { .payload = &pin };
	ck_assert_int_eq(extract(&m, P("out"), &o, NULL), 0);
	ck_assert_str_eq(read_file(P("out/a")), "first");
	ck_assert_str_eq(read_file(P("out/b")), "second file");
	set_match(&o, "b");
	ck_assert_int_eq(extract(&m, P("one"), &o, NULL), 0);
	ck_assert_str_eq(read_file(P("one/b")), "second file");
	/* without the payload stream: refused before anything is written */
	ck_assert_int_eq(extract(&m, P("none"), NULL, NULL), -CN_E_FORMAT);
	ck_assert_ptr_null(read_file(P("none/a")));
	tb_free(&m);
	tb_free(&p);
}
END_TEST

/* File content written from lent pieces: the same bytes and the same
 * holes as from copies, each view released before the next. */
START_TEST(test_content_from_views)
{
	size_t n = 256u << 10;
	uint8_t *data = calloc(1, n);
	for (size_t i = 0; i < 40000; i++)
		data[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 200000; i < n; i++) /* a zero gap of ~160 KiB, then data */
		data[i] = (uint8_t)(i * 13 + 5);
	struct tb t;
	tb_init(&t);
	tb_root_begin(&t, 0755);
	tb_file(&t, "mixed", 0644, data, n);
	tb_file(&t, "tail-hole", 0644, data + 40000, 100000); /* zeros to the end */
	tb_dir_end(&t);
	struct lending l;
	struct cn_pxar_input in;
	lending_input(&l, &in, t.b.data, t.b.len);
	struct cn_pxar_extract_stats st;
	ck_assert_int_eq(cn_pxar_extract(&in, P("out"), NULL, &st), 0);
	ck_assert_int_gt(l.views, 100);
	ck_assert_int_eq(atomic_load(&l.out), 0);
	ck_assert_int_eq(l.max_out, 1);
	ck_assert_uint_eq(st.bytes, n + 100000);
	ck_assert_uint_ge(st.sparse_bytes, 150000);
	uint8_t *back = malloc(n);
	int fd = open(P("out/mixed"), O_RDONLY);
	struct stat s;
	ck_assert_int_eq(fstat(fd, &s), 0);
	ck_assert_int_eq(s.st_size, n);
	ck_assert_int_eq(cn_read_full(fd, back, n), 0);
	close(fd);
	ck_assert_mem_eq(back, data, n);
	fd = open(P("out/tail-hole"), O_RDONLY);
	ck_assert_int_eq(fstat(fd, &s), 0);
	ck_assert_int_eq(s.st_size, 100000);
	ck_assert_int_eq(cn_read_full(fd, back, 100000), 0);
	close(fd);
	ck_assert_mem_eq(back, data + 40000, 100000);
	free(back);
	free(data);
	tb_free(&t);
}
END_TEST

/* The archive of test_content_on_writers: large files (to the writer
 * threads) with holes, a hole at the end, a set-uid bit and an mtime
 * that the writes must not undo; a hardlink to one of them
 * and small files (written inline) between them. */
static uint8_t *writers_archive(struct tb *t, size_t n)
{
	uint8_t *data = calloc(1, n);
	for (size_t i = 0; i < 40000; i++)
		data[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 200000; i < n; i++)
		data[i] = (uint8_t)(i * 13 + 5);
	tb_init(t);
	tb_root_begin(t, 0755);
	tb_name(t, "a-mixed");
	tb_entry(t, CN_PXAR_IFREG | 04755, 0, 0, 1500000000, 7);
	tb_item(t, CN_PXAR_PAYLOAD, data, n);
	tb_child_done(t);
	tb_file(t, "b-small", 0600, "small", 5);
	uint64_t fo = tb_pos(t);
	tb_file(t, "c-tail-hole", 0640, data + 40000, 100000);
	tb_hardlink(t, "d-link", fo, "c-tail-hole");
	tb_subdir(t, "e-dir", 0750);
	for (int i = 0; i < 5; i++) {
		char nm[16];
		snprintf(nm, sizeof(nm), "f%d", i);
		tb_file(t, nm, 0644, data + 1000 * i, n - 1000 * i);
	}
	tb_dir_end(t);
	tb_dir_end(t);
	return data;
}

/* Content on writer threads: the same files as written inline, every
 * view released, metadata applied after the writes. */
START_TEST(test_content_on_writers)
{
	size_t n = 256u << 10;
	struct tb t;
	uint8_t *data = writers_archive(&t, n);
	struct lending l;
	struct cn_pxar_input in;
	lending_input(&l, &in, t.b.data, t.b.len);
	struct cn_pxar_extract_opts o = { .writers = 3 };
	struct cn_pxar_extract_stats st;
	ck_assert_msg(cn_pxar_extract(&in, P("out"), &o, &st) == 0, "%s", cn_error_message());
	ck_assert_int_eq(atomic_load(&l.out), 0);
	/* pieces were held by writers, and boundedly: two queued per writer,
	 * one each being written, one the extractor holds */
	ck_assert_int_gt(l.max_out, 1);
	ck_assert_int_le(l.max_out, 3 * (2 + 1) + 1);
	ck_assert_uint_eq(st.files, 8);
	ck_assert_uint_eq(st.hardlinks, 1);
	ck_assert_uint_eq(st.errors, 0);

	/* the same pieces written inline: the reference */
	struct cn_pxar_extract_stats ref;
	ck_assert_int_eq(cn_pxar_extract(&in, P("ref"), NULL, &ref), 0);
	ck_assert_uint_eq(st.bytes, ref.bytes);
	ck_assert_uint_eq(st.sparse_bytes, ref.sparse_bytes);
	ck_assert_uint_ge(st.sparse_bytes, 150000);

	const char *names[] = { "a-mixed", "b-small", "c-tail-hole", "d-link", "e-dir",
				"e-dir/f0", "e-dir/f4" };
	uint8_t *a = malloc(n), *b = malloc(n);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char pa[300], pb[300];
		snprintf(pa, sizeof(pa), "out/%s", names[i]);
		snprintf(pb, sizeof(pb), "ref/%s", names[i]);
		struct stat sa, sb;
		ck_assert_int_eq(stat(P(pa), &sa), 0);
		ck_assert_int_eq(stat(P(pb), &sb), 0);
		ck_assert_msg(sa.st_mode == sb.st_mode, "%s: mode %o, inline %o", names[i],
			      sa.st_mode, sb.st_mode);
		ck_assert_int_eq(sa.st_size, sb.st_size);
		ck_assert_int_eq(sa.st_blocks, sb.st_blocks); /* the same holes */
		ck_assert_int_eq(sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
		ck_assert_int_eq(sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec);
		ck_assert_uint_eq(sa.st_nlink, sb.st_nlink);
		if (S_ISDIR(sa.st_mode))
			continue;
		int fa = open(P(pa), O_RDONLY), fb = open(P(pb), O_RDONLY);
		ck_assert_int_eq(cn_read_full(fa, a, (size_t)sa.st_size), 0);
		ck_assert_int_eq(cn_read_full(fb, b, (size_t)sb.st_size), 0);
		close(fa);
		close(fb);
		ck_assert_msg(memcmp(a, b, (size_t)sa.st_size) == 0, "%s differs", names[i]);
	}
	struct stat s;
	ck_assert_int_eq(stat(P("out/a-mixed"), &s), 0);
	ck_assert_uint_eq(s.st_mode & 07777, 04755);
	ck_assert_int_eq(s.st_mtim.tv_sec, 1500000000);
	ck_assert_int_eq(s.st_mtim.tv_nsec, 7);
	ck_assert_int_eq(stat(P("out/c-tail-hole"), &s), 0);
	ck_assert_int_eq(s.st_size, 100000);
	free(a);
	free(b);
	free(data);
	tb_free(&t);
}
END_TEST

/* A write failing on a writer thread (files may not grow past 150000
 * bytes here) is reported as inline: an error per file that did not fit,
 * the others restored, every view released. */
START_TEST(test_write_error_on_writers)
{
	size_t n = 256u << 10;
	struct tb t;
	uint8_t *data = writers_archive(&t, n);
	signal(SIGXFSZ, SIG_IGN);
	struct rlimit lim, was;
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &was), 0);
	lim = was;
	lim.rlim_cur = 150000;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	struct lending l;
	struct cn_pxar_input in;
	lending_input(&l, &in, t.b.data, t.b.len);
	struct cn_pxar_extract_opts o = { .writers = 2 };
	struct cn_pxar_extract_stats st, ref;
	ck_assert_int_eq(cn_pxar_extract(&in, P("out"), &o, &st), -EIO);
	ck_assert_int_eq(atomic_load(&l.out), 0);
	struct cn_pxar_input mem;
	cn_pxar_input_mem(&mem, t.b.data, t.b.len);
	ck_assert_int_eq(cn_pxar_extract(&mem, P("ref"), NULL, &ref), -EIO);
	ck_assert_uint_eq(st.errors, 6); /* a-mixed and the five in e-dir */
	ck_assert_uint_eq(st.errors, ref.errors);
	ck_assert_uint_eq(st.files, 2);
	ck_assert_uint_eq(st.files, ref.files);
	ck_assert_str_eq(read_file(P("out/b-small")), "small");
	struct stat s;
	ck_assert_int_eq(stat(P("out/d-link"), &s), 0);
	ck_assert_int_eq(s.st_size, 100000);
	/* strict: the first failure stops it */
	o.strict = 1;
	ck_assert_int_eq(cn_pxar_extract(&in, P("strict"), &o, &st), -EFBIG);
	ck_assert_int_eq(atomic_load(&l.out), 0);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &was), 0);
	free(data);
	tb_free(&t);
}
END_TEST

/* An input whose file contents cannot be read, as a restore's when a
 * chunk is damaged or its source fails: every view fails with code. */
struct failing {
	struct lending l; /* first: lend_read takes ctx as a struct lending */
	int code, views;
};

static int failing_view(void *ctx, uint64_t off, size_t len, const uint8_t **data, size_t *got,
			void **token)
{
	struct failing *f = ctx;
	(void)off, (void)len, (void)data, (void)got, (void)token;
	f->views++;
	return cn_error_set(f->code, "content unreadable");
}

/* A file whose content is damaged is skipped and the others tried; a
 * source that stopped answering stops the extraction at the first file
 * instead of making each one wait for it again. */
START_TEST(test_unavailable_source_stops)
{
	struct tb t;
	uint8_t *data = writers_archive(&t, 256u << 10);
	struct failing f;
	struct cn_pxar_input in;
	lending_input(&f.l, &in, t.b.data, t.b.len);
	in.ctx = &f;
	in.view_at = failing_view;
	struct cn_pxar_extract_opts o = { .writers = 2 };
	struct cn_pxar_extract_stats st;
	f.code = -CN_E_DIGEST;
	f.views = 0;
	ck_assert_int_eq(cn_pxar_extract(&in, P("damaged"), &o, &st), -EIO);
	/* every file was tried, each failure counted, the tree made */
	ck_assert_int_ge(f.views, 7);
	ck_assert_uint_eq(st.errors, (unsigned)f.views);
	struct stat sb;
	ck_assert_int_eq(stat(P("damaged/e-dir"), &sb), 0);
	int unavailable[] = {-ETIMEDOUT, -ECONNRESET, -EPIPE, -ECANCELED};
	for (size_t i = 0; i < sizeof(unavailable) / sizeof(unavailable[0]); i++) {
		char dir[32];
		snprintf(dir, sizeof(dir), "down%zu", i);
		f.code = unavailable[i];
		f.views = 0;
		ck_assert_int_eq(cn_pxar_extract(&in, P(dir), &o, &st), unavailable[i]);
		ck_assert_int_eq(f.views, 1);
		ck_assert_ptr_nonnull(strstr(cn_error_message(), "content unreadable"));
	}
	free(data);
	tb_free(&t);
}
END_TEST

/* Appends each listed path to a string (ctx), separated by spaces. */
static int collect(void *ctx, const struct cn_pxar_entry *e)
{
	char *out = ctx;
	size_t n = strlen(out);
	snprintf(out + n, 1024 - n, "%s%s", n ? " " : "", e->path_len ? e->path : "/");
	return 0;
}

/* The selection of the one argument m (freed by the next set_match). */
static const struct cn_pxar_select *sel_of(const char *m)
{
	struct cn_pxar_extract_opts o = { 0 };
	set_match(&o, m);
	return o.select;
}

/* The tree the selection tests pick from: a.jpg, docs/{a.jpg,notes.txt},
 * pics/x.txt (pics mode 0700) and, with_videos, pics/w[1].mov and
 * pics/w1.mov. */
static void selection_tree(struct tb *t, int with_videos)
{
	tb_init(t);
	tb_root_begin(t, 0755);
	tb_file(t, "a.jpg", 0644, "A", 1);
	tb_subdir(t, "docs", 0755);
	tb_file(t, "a.jpg", 0644, "B", 1);
	tb_file(t, "notes.txt", 0644, "notes", 5);
	tb_dir_end(t);
	tb_subdir(t, "pics", 0700);
	tb_file(t, "x.txt", 0644, "xx", 2);
	if (with_videos) {
		tb_file(t, "w[1].mov", 0644, "w", 1);
		tb_file(t, "w1.mov", 0644, "v", 1);
	}
	tb_dir_end(t);
	tb_dir_end(t);
}

/* Listing by glob selects what extraction selects: a glob matches the
 * whole path or any part after a '/', a leading '/' anchors it, everything
 * below a matched directory, the root only when everything is; cn_pxar_verify
 * lists the same and reads every listed file's content. */
START_TEST(test_list_glob)
{
	struct tb t;
	selection_tree(&t, 0);
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	static const struct { const char *match, *want; } cases[] = {
		{"*.jpg", "a.jpg docs/a.jpg"},
		{"p*", "pics pics/x.txt"},
		{"docs/*.txt", "docs/notes.txt"},
		{"*/*.txt", "docs/notes.txt pics/x.txt"},
		{"/*.jpg", "a.jpg"},
		{"/docs/*", "docs/a.jpg docs/notes.txt"},
		{"*", "a.jpg docs docs/a.jpg docs/notes.txt pics pics/x.txt"},
		{"*.png", ""},
		{"docs", "docs docs/a.jpg docs/notes.txt"}, /* literal */
		{"./docs/", "docs docs/a.jpg docs/notes.txt"},
		{"a.jpg/", ""}, /* a file, not the directory asked for */
		{"/", "/ a.jpg docs docs/a.jpg docs/notes.txt pics pics/x.txt"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char got[1024] = "";
		ck_assert_int_eq(cn_pxar_list(&in, NULL, sel_of(cases[i].match), collect, got), 0);
		ck_assert_msg(strcmp(got, cases[i].want) == 0, "%s: %s", cases[i].match, got);
		got[0] = 0;
		ck_assert_int_eq(cn_pxar_verify(&in, NULL, sel_of(cases[i].match), collect, got), 0);
		ck_assert_msg(strcmp(got, cases[i].want) == 0, "verify %s: %s", cases[i].match, got);
	}
	/* verify reads the listed files' content (lent pieces counted), list none */
	struct lending l;
	struct cn_pxar_input lin;
	lending_input(&l, &lin, t.b.data, t.b.len);
	char got[1024] = "";
	ck_assert_int_eq(cn_pxar_verify(&lin, NULL, sel_of("*.txt"), collect, got), 0);
	ck_assert_int_eq(l.views, 2);
	ck_assert_int_eq(atomic_load(&l.out), 0);
	l.views = 0;
	ck_assert_int_eq(cn_pxar_list(&lin, NULL, sel_of("*.txt"), collect, got), 0);
	ck_assert_int_eq(l.views, 0);
	tb_free(&t);
}
END_TEST

/* Several arguments: the last one matching decides, unmatched entries
 * follow their directory, only excludes mean everything else, and a
 * path from a catalog is matched as it is. */
START_TEST(test_select_include_exclude)
{
	struct tb t;
	selection_tree(&t, 1);
	struct cn_pxar_input in;
	cn_pxar_input_mem(&in, t.b.data, t.b.len);
	static const struct { const char *args[4]; const char *want, *lookup; } cases[] = {
		{{"docs", "!*.txt"}, "docs docs/a.jpg", "docs"},
		{{"!*.mov"}, "/ a.jpg docs docs/a.jpg docs/notes.txt pics pics/x.txt", NULL},
		{{"docs", "pics/x.txt"}, "docs docs/a.jpg docs/notes.txt pics/x.txt",
		 "docs pics/x.txt"},
		{{"pics", "docs"}, "docs docs/a.jpg docs/notes.txt pics pics/x.txt pics/w[1].mov pics/w1.mov",
		 "docs pics"},
		{{"docs/a.jpg", "docs"}, "docs docs/a.jpg docs/notes.txt", "docs"},
		{{"pics/x.txt", "*.jpg"}, "a.jpg docs/a.jpg pics/x.txt", NULL},
		{{"pics/x.txt", "pics/w1.mov", "!pics/x.txt"}, "pics/w1.mov", "pics/w1.mov pics/x.txt"},
		{{"!docs", "docs/notes.txt"}, "docs/notes.txt", "docs/notes.txt"},
		{{"pics", "!*.mov", "pics/w1.mov"}, "pics pics/x.txt pics/w1.mov", "pics"},
		{{"*.jpg", "!/a.jpg"}, "docs/a.jpg", NULL},
		{{"pics/w[1].mov"}, "pics/w1.mov", NULL},
		{{"pics/w\\[1].mov"}, "pics/w[1].mov", NULL},
		{{"docs", "!docs"}, "", "docs"},
		/* an excluded bare name: at any depth, as a backup's --exclude */
		{{"!a.jpg"}, "/ docs docs/notes.txt pics pics/x.txt pics/w[1].mov pics/w1.mov", NULL},
		{{"docs", "!notes.txt"}, "docs docs/a.jpg", "docs"},
		/* with a '/' inside it is a path from the root */
		{{"!docs/a.jpg", "!pics/a.jpg"}, "/ a.jpg docs docs/notes.txt pics pics/x.txt pics/w[1].mov pics/w1.mov", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cn_pxar_select *sel;
		ck_assert_int_eq(cn_pxar_select_new(&sel), 0);
		for (size_t j = 0; j < 4 && cases[i].args[j]; j++)
			ck_assert_int_eq(cn_pxar_select_add(sel, cases[i].args[j], 0), 0);
		char lk[256] = "";
		for (size_t j = 0; j < cn_pxar_select_lookups(sel); j++)
			snprintf(lk + strlen(lk), sizeof(lk) - strlen(lk), "%s%s", j ? " " : "",
				 cn_pxar_select_lookup(sel, j));
		ck_assert_msg(strcmp(lk, cases[i].lookup ? cases[i].lookup : "") == 0,
			      "case %zu: lookups '%s'", i, lk);
		char got[1024] = "";
		ck_assert_int_eq(cn_pxar_list(&in, NULL, sel, collect, got), 0);
		ck_assert_msg(strcmp(got, cases[i].want) == 0, "case %zu: %s", i, got);
		cn_pxar_select_free(sel);
	}
	/* an exclude argument is a '!' one; a catalog path is no glob */
	struct cn_pxar_select *sel;
	ck_assert_int_eq(cn_pxar_select_new(&sel), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "pics", 0), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "*.mov", 1), 0);
	ck_assert_int_eq(cn_pxar_select_add_path(sel, "pics/w[1].mov"), 0);
	char got[1024] = "";
	ck_assert_int_eq(cn_pxar_list(&in, NULL, sel, collect, got), 0);
	ck_assert_str_eq(got, "pics pics/x.txt pics/w[1].mov");
	cn_pxar_select_free(sel);
	/* bad arguments name themselves */
	ck_assert_int_eq(cn_pxar_select_new(&sel), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "!", 0), -EINVAL);
	ck_assert_int_eq(cn_pxar_select_add(sel, "a[", 0), -EINVAL);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "'a['"));
	cn_pxar_select_free(sel);

	/* extraction takes the same: photos but not the videos, and the
	 * directories leading there keep their metadata */
	struct cn_pxar_extract_opts o = { 0 };
	ck_assert_int_eq(cn_pxar_select_new(&sel), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "pics", 0), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "*.mov", 1), 0);
	o.select = sel;
	struct cn_pxar_extract_stats st;
	ck_assert_int_eq(extract(&t, P("px"), &o, &st), 0);
	ck_assert_str_eq(read_file(P("px/pics/x.txt")), "xx");
	ck_assert_ptr_null(read_file(P("px/pics/w1.mov")));
	ck_assert_ptr_null(read_file(P("px/a.jpg")));
	ck_assert_uint_eq(st.files, 1);
	struct stat sb;
	ck_assert_int_eq(stat(P("px/pics"), &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 0700);
	cn_pxar_select_free(sel);
	/* two paths in one directory: it is made once, with its metadata */
	ck_assert_int_eq(cn_pxar_select_new(&sel), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "pics/x.txt", 0), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "/pics/w1.mov", 0), 0);
	ck_assert_uint_eq(cn_pxar_select_lookups(sel), 2);
	o.select = sel;
	ck_assert_int_eq(extract(&t, P("two"), &o, &st), 0);
	ck_assert_str_eq(read_file(P("two/pics/x.txt")), "xx");
	ck_assert_str_eq(read_file(P("two/pics/w1.mov")), "v");
	ck_assert_ptr_null(read_file(P("two/pics/w[1].mov")));
	ck_assert_uint_eq(st.files, 2);
	ck_assert_uint_eq(st.dirs, 1);
	ck_assert_int_eq(stat(P("two/pics"), &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 0700);
	ck_assert_int_eq(sb.st_mtime, 1700000000);
	cn_pxar_select_free(sel);
	/* a path that is not there: nothing written at all */
	ck_assert_int_eq(cn_pxar_select_new(&sel), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "docs", 0), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "pics/nope", 0), 0);
	o.select = sel;
	ck_assert_int_eq(extract(&t, P("miss"), &o, &st), -ENOENT);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "'pics/nope' not found"));
	ck_assert_int_lt(stat(P("miss/docs"), &sb), 0);
	char got2[256] = "";
	ck_assert_int_eq(cn_pxar_list(&in, NULL, sel, collect, got2), -ENOENT);
	ck_assert_str_eq(got2, "");
	cn_pxar_select_free(sel);
	/* only excludes: everything else, from one pass over the archive */
	ck_assert_int_eq(cn_pxar_select_new(&sel), 0);
	ck_assert_int_eq(cn_pxar_select_add(sel, "docs", 1), 0);
	o.select = sel;
	ck_assert_int_eq(extract(&t, P("ex"), &o, &st), 0);
	ck_assert_str_eq(read_file(P("ex/a.jpg")), "A");
	ck_assert_str_eq(read_file(P("ex/pics/w[1].mov")), "w");
	ck_assert_int_lt(stat(P("ex/docs"), &sb), 0);
	ck_assert_uint_eq(st.files, 4);
	cn_pxar_select_free(sel);
	tb_free(&t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pxar_extract");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_basic_tree);
	tcase_add_test(tc, test_sparse);
	tcase_add_test(tc, test_content_from_views);
	tcase_add_test(tc, test_content_on_writers);
	tcase_add_test(tc, test_write_error_on_writers);
	tcase_add_test(tc, test_unavailable_source_stops);
	tcase_add_test(tc, test_list_glob);
	tcase_add_test(tc, test_select_include_exclude);
	tcase_add_test(tc, test_select_path_and_pattern);
	tcase_add_test(tc, test_symlink_write_through);
	tcase_add_test(tc, test_hardlink_through_symlink);
	tcase_add_test(tc, test_hostile_archive_writes_nothing_outside);
	tcase_add_test(tc, test_list_and_format);
	tcase_add_test(tc, test_chattr_flags);
	tcase_add_test(tc, test_split_archive);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
