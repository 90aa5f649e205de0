/* Round trip: a generated tree with every entry type is walked and encoded
 * (cn_pxar_create), decoded, looked up entry by entry through the goodbye
 * tables, extracted, and compared with the source: type, mode, owner,
 * mtime (ns), size, contents, symlink targets, device numbers, hardlink
 * groups, xattrs and ACLs (when the file system supports them; skipped
 * with a note otherwise), odd names (spaces, UTF-8, 255-byte names, a path
 * deeper than PATH_MAX), empty dirs and files of 0/1/4096/4 MiB bytes.
 * The catalog written alongside is read back and checked against the
 * tree. */
#include "cn_test.h"
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "pxar/cn_catalog_reader.h"
#include "pxar/cn_catalog_writer.h"
#include "pxar/cn_pxar_decoder.h"
#include "engine/cn_pxar_extract.h"
#include "engine/cn_walker.h"
#include "lending_input.h"

static char base[256];
static int have_xattr, have_acl;

static void sh(const char *fmt, const char *arg)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), fmt, arg, arg, arg);
	ck_assert_int_eq(system(cmd), 0);
}

static void setup(void)
{
	snprintf(base, sizeof(base), "/tmp/cn_pxar_rt_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(base));
	cn_log_setup(CN_LOG_ERROR, 0);
}

static void teardown(void)
{
	sh("rm -rf %s", base);
}

static void put(int dir, const char *name, const void *data, size_t len, mode_t mode)
{
	int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL, mode);
	ck_assert_msg(fd >= 0, "create %s", name);
	ck_assert_int_eq(cn_write_full(fd, data, len), 0);
	ck_assert_int_eq(fchmod(fd, mode), 0);
	close(fd);
}

static void set_mtime(int dir, const char *name, long sec, long nsec)
{
	struct timespec ts[2] = { { sec, nsec }, { sec, nsec } };
	ck_assert_int_eq(utimensat(dir, name, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* Builds the source tree under base/src. */
static void make_tree(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/src", base);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	int root = open(path, O_RDONLY | O_DIRECTORY);
	ck_assert_int_ge(root, 0);

	/* files of the interesting sizes */
	size_t big = 4u << 20;
	uint8_t *data = malloc(big + 1);
	for (size_t i = 0; i < big + 1; i++)
		data[i] = (uint8_t)(i * 7 + (i >> 13));
	put(root, "empty", "", 0, 0644);
	put(root, "one", "x", 1, 0600);
	put(root, "page", data, 4096, 0640);
	put(root, "chunk", data, big, 0644);
	put(root, "chunk+1", data, big + 1, 0755);
	put(root, "suid-big", data + 1, 200000, 04755); /* (large: on writer threads) */
	memset(data, 0, 65536);
	data[65535] = 1;
	put(root, "holes", data, 65536, 0644);
	free(data);
	put(root, "suid", "#!/bin/sh\n", 10, 04755);
	put(root, "sgid", "", 0, 02750);

	/* odd names */
	put(root, "with space", "s", 1, 0644);
	put(root, "ünïcødé-名前", "u", 1, 0644);
	put(root, "tab\there", "t", 1, 0644);
	char n255[256];
	memset(n255, 'L', 255);
	n255[255] = 0;
	put(root, n255, "long", 4, 0644);

	/* every other type */
	ck_assert_int_eq(mkdirat(root, "emptydir", 0700), 0);
	ck_assert_int_eq(mkdirat(root, "sticky", 01777), 0);
	ck_assert_int_eq(symlinkat("one", root, "link-rel"), 0);
	ck_assert_int_eq(symlinkat("/nonexistent/abs", root, "link-abs"), 0);
	ck_assert_int_eq(symlinkat("../../../../etc/passwd", root, "link-up"), 0);
	ck_assert_int_eq(mkfifoat(root, "fifo", 0640), 0);
	ck_assert_int_eq(mknodat(root, "sock", S_IFSOCK | 0600, 0), 0);
	if (geteuid() == 0) {
		ck_assert_int_eq(mknodat(root, "null", S_IFCHR | 0666, makedev(1, 3)), 0);
		ck_assert_int_eq(mknodat(root, "blk", S_IFBLK | 0600, makedev(7, 200)), 0);
		ck_assert_int_eq(fchownat(root, "one", 1234, 5678, 0), 0);
		ck_assert_int_eq(fchownat(root, "link-rel", 4321, 8765, AT_SYMLINK_NOFOLLOW), 0);
	}

	/* hardlink groups: three names in two directories, and a pair */
	ck_assert_int_eq(mkdirat(root, "h", 0755), 0);
	put(root, "h/orig", "linked", 6, 0644);
	ck_assert_int_eq(linkat(root, "h/orig", root, "h/second", 0), 0);
	ck_assert_int_eq(linkat(root, "h/orig", root, "third", 0), 0);
	put(root, "h/pair-a", "pair", 4, 0600);
	ck_assert_int_eq(linkat(root, "h/pair-a", root, "h/pair-b", 0), 0);

	/* a path deeper than PATH_MAX: 20 levels of 250-byte names */
	int fd = dup(root);
	char lvl[251];
	memset(lvl, 'D', 250);
	lvl[250] = 0;
	for (int i = 0; i < 20; i++) {
		ck_assert_int_eq(mkdirat(fd, lvl, 0755), 0);
		int nfd = openat(fd, lvl, O_RDONLY | O_DIRECTORY);
		close(fd);
		fd = nfd;
	}
	put(fd, "bottom", "deep", 4, 0644);
	close(fd);

	/* xattrs and ACLs where supported */
	have_xattr = fsetxattr(root, "user.probe", "1", 1, 0) == 0;
	if (have_xattr) {
		fremovexattr(root, "user.probe");
		int f = openat(root, "one", O_RDONLY);
		ck_assert_int_eq(fsetxattr(f, "user.zz", "last", 4, 0), 0);
		ck_assert_int_eq(fsetxattr(f, "user.aa", "", 0, 0), 0);
		ck_assert_int_eq(fsetxattr(f, "user.bin", "\0\1\2", 3, 0), 0);
		close(f);
		f = openat(root, "chunk", O_RDONLY);
		ck_assert_int_eq(fsetxattr(f, "user.big", "b", 1, 0), 0);
		close(f);
	} else {
		fprintf(stderr, "note: %s has no user xattrs: xattr round trip skipped\n", base);
	}
	char p2[600];
	snprintf(p2, sizeof(p2), "%s/src/h", base);
	acl_t acl = acl_from_text("u::rwx,u:1234:rw-,g::r-x,g:99:r--,m::rwx,o::r-x");
	have_acl = acl && acl_set_file(p2, ACL_TYPE_ACCESS, acl) == 0;
	if (acl)
		acl_free(acl);
	if (have_acl) {
		acl = acl_from_text("u::rwx,u:77:r-x,g::r--,m::r-x,o::---");
		ck_assert_int_eq(acl_set_file(p2, ACL_TYPE_DEFAULT, acl), 0);
		acl_free(acl);
		const char *with_acl[] = { "page", "chunk+1" };
		for (int i = 0; i < 2; i++) {
			snprintf(p2, sizeof(p2), "%s/src/%s", base, with_acl[i]);
			acl = acl_from_text("u::rw-,g::r--,g:1000:rw-,m::rw-,o::---");
			ck_assert_int_eq(acl_set_file(p2, ACL_TYPE_ACCESS, acl), 0);
			acl_free(acl);
		}
	} else {
		fprintf(stderr, "note: %s has no POSIX ACLs: ACL round trip skipped\n", base);
	}

	/* mtimes last (directories change when children are added) */
	set_mtime(root, "one", 1234567890, 123456789);
	set_mtime(root, "suid-big", 1234567891, 987654321);
	set_mtime(root, "link-rel", 1000000000, 5);
	set_mtime(root, "fifo", -100, 999999999);
	set_mtime(root, "emptydir", 1600000000, 1);
	set_mtime(root, "h", 1500000000, 0);
	close(root);
}

struct membuf {
	struct cn_buf b;
};

static int to_buf(void *ctx, const uint8_t *data, size_t len)
{
	return cn_buf_append(&((struct membuf *)ctx)->b, data, len);
}

/* Compares two trees by descriptor, without ever following symlinks and
 * without path length limits. Hardlink groups: inode maps must match. */
struct inomap {
	ino_t a[256], b[256];
	size_t n;
};

static void cmp_xattrs(const char *pa, const char *pb, const char *name)
{
	char la[4096], lb[4096];
	ssize_t na = listxattr(pa, la, sizeof(la)), nb = listxattr(pb, lb, sizeof(lb));
	ck_assert_msg(na >= 0 && nb >= 0, "listxattr %s", name);
	/* user.* names must match in set; values byte for byte */
	for (char *p = la; p < la + na; p += strlen(p) + 1) {
		if (strncmp(p, "user.", 5))
			continue;
		char va[256], vb[256];
		ssize_t a = getxattr(pa, p, va, sizeof(va)), b = getxattr(pb, p, vb, sizeof(vb));
		ck_assert_msg(a >= 0 && a == b && memcmp(va, vb, (size_t)a) == 0, "xattr %s of %s", p, name);
	}
	int ua = 0, ub = 0;
	for (char *p = la; p < la + na; p += strlen(p) + 1)
		ua += !strncmp(p, "user.", 5);
	for (char *p = lb; p < lb + nb; p += strlen(p) + 1)
		ub += !strncmp(p, "user.", 5);
	ck_assert_msg(ua == ub, "xattr count of %s", name);
}

static void cmp_acl(const char *pa, const char *pb, acl_type_t type, const char *name)
{
	acl_t a = acl_get_file(pa, type), b = acl_get_file(pb, type);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	char *ta = acl_to_text(a, NULL), *tb = acl_to_text(b, NULL);
	ck_assert_msg(strcmp(ta, tb) == 0, "ACL of %s: '%s' vs '%s'", name, ta, tb);
	acl_free(ta);
	acl_free(tb);
	acl_free(a);
	acl_free(b);
}

static size_t cmp_tree(int da, int db, const char *rel, struct inomap *m)
{
	size_t count = 0;
	DIR *d = fdopendir(dup(da));
	ck_assert_ptr_nonnull(d);
	for (struct dirent *e; (e = readdir(d));) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		count++;
		struct stat a, b;
		ck_assert_int_eq(fstatat(da, e->d_name, &a, AT_SYMLINK_NOFOLLOW), 0);
		ck_assert_msg(fstatat(db, e->d_name, &b, AT_SYMLINK_NOFOLLOW) == 0, "missing %s/%s", rel,
			      e->d_name);
		ck_assert_msg(a.st_mode == b.st_mode, "mode of %s/%s: 0%o vs 0%o", rel, e->d_name,
			      a.st_mode, b.st_mode);
		ck_assert_msg(a.st_uid == b.st_uid && a.st_gid == b.st_gid, "owner of %s/%s", rel,
			      e->d_name);
		ck_assert_msg(a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
			      a.st_mtim.tv_nsec == b.st_mtim.tv_nsec, "mtime of %s/%s", rel, e->d_name);
		char pa[64], pb[64];
		if (S_ISREG(a.st_mode)) {
			ck_assert_int_eq(a.st_size, b.st_size);
			int fa = openat(da, e->d_name, O_RDONLY), fb = openat(db, e->d_name, O_RDONLY);
			uint8_t *ba = malloc((size_t)a.st_size + 1), *bb = malloc((size_t)a.st_size + 1);
			ck_assert_int_eq(cn_read_full(fa, ba, (size_t)a.st_size), 0);
			ck_assert_int_eq(cn_read_full(fb, bb, (size_t)a.st_size), 0);
			ck_assert_msg(memcmp(ba, bb, (size_t)a.st_size) == 0, "content of %s/%s", rel, e->d_name);
			free(ba);
			free(bb);
			if (a.st_nlink > 1) {
				ck_assert_uint_eq(a.st_nlink, b.st_nlink);
				size_t i;
				for (i = 0; i < m->n && m->a[i] != a.st_ino; i++)
					;
				if (i == m->n) {
					m->a[m->n] = a.st_ino;
					m->b[m->n++] = b.st_ino;
				} else {
					ck_assert_msg(m->b[i] == b.st_ino, "hardlink group of %s/%s", rel, e->d_name);
				}
			}
			snprintf(pa, sizeof(pa), "/proc/self/fd/%d", fa);
			snprintf(pb, sizeof(pb), "/proc/self/fd/%d", fb);
			if (have_xattr)
				cmp_xattrs(pa, pb, e->d_name);
			if (have_acl)
				cmp_acl(pa, pb, ACL_TYPE_ACCESS, e->d_name);
			close(fa);
			close(fb);
		} else if (S_ISLNK(a.st_mode)) {
			char la[4096], lb[4096];
			ssize_t na = readlinkat(da, e->d_name, la, sizeof(la));
			ssize_t nb = readlinkat(db, e->d_name, lb, sizeof(lb));
			ck_assert(na > 0 && na == nb && memcmp(la, lb, (size_t)na) == 0);
		} else if (S_ISCHR(a.st_mode) || S_ISBLK(a.st_mode)) {
			ck_assert_uint_eq(a.st_rdev, b.st_rdev);
		} else if (S_ISDIR(a.st_mode)) {
			int sa = openat(da, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
			int sb = openat(db, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
			ck_assert(sa >= 0 && sb >= 0);
			snprintf(pa, sizeof(pa), "/proc/self/fd/%d", sa);
			snprintf(pb, sizeof(pb), "/proc/self/fd/%d", sb);
			if (have_acl) {
				cmp_acl(pa, pb, ACL_TYPE_ACCESS, e->d_name);
				cmp_acl(pa, pb, ACL_TYPE_DEFAULT, e->d_name);
			}
			char sub[64];
			snprintf(sub, sizeof(sub), "%.20s/%.20s", rel, e->d_name);
			count += cmp_tree(sa, sb, sub, m);
			close(sa);
			close(sb);
		}
	}
	closedir(d);
	return count;
}

struct cat_ctx {
	size_t n, files, dirs, links, hardlinks;
	int saw_deep;
};

static int cat_count(void *ctx, const char *path, const struct cn_catalog_entry *e)
{
	struct cat_ctx *c = ctx;
	c->n++;
	c->files += e->type == 'f';
	c->dirs += e->type == 'd';
	c->links += e->type == 'l';
	c->hardlinks += e->type == 'h';
	if (strstr(path, "/bottom"))
		c->saw_deep = 1;
	return 0;
}

START_TEST(test_roundtrip)
{
	make_tree();
	char src[300], out[300];
	snprintf(src, sizeof(src), "%s/src", base);
	snprintf(out, sizeof(out), "%s/out", base);

	struct membuf ar = { { 0 } }, cat = { { 0 } };
	struct cn_catalog_writer *cw;
	struct cn_pxar_create_opts co = { .archive_name = "root.pxar.didx" };
	struct cn_pxar_create_stats cs;
	ck_assert_int_eq(cn_catalog_writer_new(to_buf, &cat, &cw), 0);
	ck_assert_msg(cn_pxar_create(src, &co, to_buf, &ar, cw, &cs) == 0, "%s", cn_error_message());
	ck_assert_int_eq(cn_catalog_writer_finish(cw), 0);
	cn_catalog_writer_free(cw);
	ck_assert_uint_eq(cs.skipped, 0);

	/* decode everything; every entry must be found by random access at
	 * the same place */
	struct cn_pxar_input in;
	struct cn_pxar_decoder *d;
	struct cn_pxar_accessor *a;
	const struct cn_pxar_entry *e;
	cn_pxar_input_mem(&in, ar.b.data, ar.b.len);
	ck_assert_int_eq(cn_pxar_decoder_new(&in, NULL, &d), 0);
	ck_assert_int_eq(cn_pxar_accessor_open(&in, NULL, &a), 0);
	size_t entries = 0, kinds[16] = { 0 };
	int rc;
	while ((rc = cn_pxar_decoder_next(d, &e)) > 0) {
		if (e->kind == CN_PXAR_KIND_DIR_END)
			continue;
		entries++;
		kinds[e->kind]++;
		if (have_acl && !strcmp(e->path, "h")) {
			ck_assert_uint_eq(e->acl_user_count, 1);
			ck_assert_uint_eq(e->acl_group_count, 1);
			ck_assert(e->has_acl_default);
			ck_assert_uint_eq(e->acl_default_user_count, 1);
		}
		if (have_xattr && !strcmp(e->path, "one"))
			ck_assert_uint_eq(e->xattr_count, 3);
		char *path = strdup(e->path);
		uint64_t fo = e->filename_offset, eo = e->entry_offset;
		struct cn_pxar_range r;
		ck_assert_msg(cn_pxar_lookup(a, path, &r) == 1, "lookup %s: %s", path, cn_error_message());
		ck_assert_uint_eq(r.entry_offset, eo);
		if (*path)
			ck_assert_uint_eq(r.filename_offset, fo);
		free(path);
	}
	ck_assert_msg(rc == 0, "%s", cn_error_message());
	cn_pxar_decoder_free(d);
	cn_pxar_accessor_free(a);
	ck_assert_uint_eq(kinds[CN_PXAR_KIND_HARDLINK], 3);
	ck_assert_uint_eq(kinds[CN_PXAR_KIND_SYMLINK], 3);
	ck_assert_uint_eq(kinds[CN_PXAR_KIND_FIFO], 1);
	ck_assert_uint_eq(kinds[CN_PXAR_KIND_SOCKET], 1);
	ck_assert_uint_eq(kinds[CN_PXAR_KIND_DEVICE], geteuid() == 0 ? 2 : 0);

	/* extract and compare */
	struct cn_pxar_extract_stats xs;
	ck_assert_msg(cn_pxar_extract(&in, out, NULL, &xs) == 0, "%s", cn_error_message());
	ck_assert_uint_eq(xs.errors, 0);
	ck_assert_uint_eq(xs.hardlinks, 3);
	ck_assert_uint_gt(xs.sparse_bytes, 0);
	int sa = open(src, O_RDONLY | O_DIRECTORY), sb = open(out, O_RDONLY | O_DIRECTORY);
	struct inomap m = { .n = 0 };
	size_t n = cmp_tree(sa, sb, "", &m);
	ck_assert_uint_eq(n + 1, entries); /* + the root */
	ck_assert_uint_eq(m.n, 2);         /* two hardlink groups */
	struct stat s1, s2;
	ck_assert_int_eq(fstat(sa, &s1), 0);
	ck_assert_int_eq(fstat(sb, &s2), 0);
	ck_assert_uint_eq(s1.st_mode, s2.st_mode);
	close(sb);

	/* again with the large files' content on writer threads, from an
	 * input that lends its bytes as a restore's chunk reader does */
	struct lending l;
	struct cn_pxar_input lin;
	lending_input(&l, &lin, ar.b.data, ar.b.len);
	struct cn_pxar_extract_opts wo = { .writers = 2 };
	char outw[300];
	snprintf(outw, sizeof(outw), "%s/out-writers", base);
	ck_assert_msg(cn_pxar_extract(&lin, outw, &wo, &xs) == 0, "%s", cn_error_message());
	ck_assert_uint_eq(xs.errors, 0);
	ck_assert_int_gt(l.max_out, 1);
	ck_assert_int_eq(atomic_load(&l.out), 0);
	close(sa);
	sa = open(src, O_RDONLY | O_DIRECTORY);
	sb = open(outw, O_RDONLY | O_DIRECTORY);
	struct inomap mw = { .n = 0 };
	ck_assert_uint_eq(cmp_tree(sa, sb, "", &mw), n);
	ck_assert_uint_eq(mw.n, 2);
	close(sa);
	close(sb);

	/* the catalog lists the same tree */
	struct cn_catalog_reader *cr;
	struct cat_ctx cc = { 0 };
	ck_assert_int_eq(cn_catalog_reader_open(cat.b.data, cat.b.len, &cr), 0);
	ck_assert_int_eq(cn_catalog_list(cr, NULL, cat_count, &cc), 0);
	ck_assert_uint_eq(cc.n, entries); /* the archive dir stands for the root */
	ck_assert_uint_eq(cc.hardlinks, 3);
	ck_assert_uint_eq(cc.links, 3);
	ck_assert(cc.saw_deep);
	struct cn_catalog_entry ce;
	ck_assert_int_eq(cn_catalog_lookup(cr, "root.pxar.didx/chunk+1", &ce), 1);
	ck_assert_int_eq(ce.type, 'f');
	ck_assert_uint_eq(ce.size, (4u << 20) + 1);
	ck_assert_int_eq(cn_catalog_lookup(cr, "root.pxar.didx/one", &ce), 1);
	ck_assert_int_eq(ce.mtime, 1234567890);
	ck_assert_int_eq(cn_catalog_lookup(cr, "root.pxar.didx/h/nope", &ce), 0);
	memset(&cc, 0, sizeof(cc));
	ck_assert_int_eq(cn_catalog_list(cr, "root.pxar.didx/h", cat_count, &cc), 0);
	ck_assert_uint_eq(cc.n, 5); /* h + 4 */
	ck_assert_int_eq(cn_catalog_list(cr, "root.pxar.didx/zzz", cat_count, &cc), -ENOENT);
	cn_catalog_reader_free(cr);

	/* single-file restore of the deep file and of a hardlink */
	char deep[6000] = "";
	char lvl[251];
	memset(lvl, 'D', 250);
	lvl[250] = 0;
	for (int i = 0; i < 20; i++) {
		strcat(deep, lvl);
		strcat(deep, "/");
	}
	strcat(deep, "bottom");
	struct cn_pxar_select *sel;
	ck_assert_int_eq(cn_pxar_select_from_path(deep, &sel), 0);
	struct cn_pxar_extract_opts o = { .select = sel };
	char out2[300];
	snprintf(out2, sizeof(out2), "%s/one", base);
	ck_assert_msg(cn_pxar_extract(&in, out2, &o, &xs) == 0, "%s", cn_error_message());
	ck_assert_uint_eq(xs.files, 1);
	ck_assert_uint_eq(xs.dirs, 20);
	cn_pxar_select_free(sel);
	ck_assert_int_eq(cn_pxar_select_from_path("h/second", &sel), 0);
	o.select = sel;
	ck_assert_msg(cn_pxar_extract(&in, out2, &o, &xs) == 0, "%s", cn_error_message());
	ck_assert_uint_eq(xs.files, 1); /* target not extracted: data restored */
	cn_pxar_select_free(sel);

	cn_buf_free(&ar.b);
	cn_buf_free(&cat.b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pxar_roundtrip");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_roundtrip);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
