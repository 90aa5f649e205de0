/* pxar encoder, walker and catalog writer: byte layout pinned against the
 * spec (shared/spec/pxar.md §6-7, catalog.md) and against an independent
 * parser written here from the spec text (not sharing encoder code). */
#include <acl/libacl.h>
#include "cn_test.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <sys/acl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "pxar/cn_catalog_writer.h"
#include "pxar/cn_pxar_encoder.h"
#include "pxar/cn_pxar_format.h"
#include "engine/cn_walker.h"

/* ---------- helpers ---------- */

static int sink(void *ctx, const uint8_t *d, size_t l)
{
	return cn_buf_append(ctx, d, l);
}

static char tmpdir[PATH_MAX];

static void mk_tmp(void)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/cn_pxarenc_XXXXXX", base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

static char *P(const char *rel)
{
	static char p[8][PATH_MAX * 2];
	static int k;
	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", tmpdir, rel);
	return p[k];
}

static void put_file(const char *rel, const char *content, mode_t mode)
{
	int fd = open(P(rel), O_WRONLY | O_CREAT | O_TRUNC, mode);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(cn_write_full(fd, content, strlen(content)), 0);
	close(fd);
	ck_assert_int_eq(chmod(P(rel), mode), 0);
}

static void set_mtime(const char *path, int64_t s, long ns)
{
	struct timespec ts[2] = { { s, ns }, { s, ns } };
	ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static void archive(const char *root, const struct cn_pxar_create_opts *o, struct cn_buf *out,
		    struct cn_buf *cat_out, struct cn_pxar_create_stats *st)
{
	struct cn_catalog_writer *cw = NULL;
	if (cat_out)
		ck_assert_int_eq(cn_catalog_writer_new(sink, cat_out, &cw), 0);
	int rc = cn_pxar_create(root, o, sink, out, cw, st);
	ck_assert_msg(rc == 0, "cn_pxar_create: %d %s", rc, cn_error_message());
	if (cw) {
		ck_assert_int_eq(cn_catalog_writer_finish(cw), 0);
		cn_catalog_writer_free(cw);
	}
}

static size_t put64(uint8_t *p, uint64_t v) { cn_put_le64(p, v); return 8; }
static size_t put32(uint8_t *p, uint32_t v) { cn_put_le32(p, v); return 4; }

/* ---------- independent archive parser (from pxar.md) ---------- */

struct pitem { uint64_t type; size_t pos, size; };
struct pentry {
	char path[8192];
	size_t fn_pos, entry_pos, end;   /* fn_pos = SIZE_MAX for the root */
	uint64_t mode;                   /* 0 for hardlinks */
	struct pitem items[64];          /* items after FILENAME up to the type part */
	size_t n_items;
	int hardlink;
};
struct parsed {
	struct pentry *e;
	size_t n, cap;
	const uint8_t *a;
	size_t len;
	size_t goodbyes_checked;
};

static void hdr(const struct parsed *p, size_t pos, uint64_t *t, uint64_t *sz)
{
	ck_assert_msg(pos + 16 <= p->len, "header beyond end at %zu", pos);
	*t = cn_le64(p->a + pos);
	*sz = cn_le64(p->a + pos + 8);
	ck_assert_msg(*sz >= 16 && pos + *sz <= p->len, "bad size %llu at %zu", (unsigned long long)*sz, pos);
}

static struct pentry *new_entry(struct parsed *p)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 64;
		p->e = realloc(p->e, p->cap * sizeof(*p->e));
		ck_assert_ptr_nonnull(p->e);
	}
	struct pentry *e = &p->e[p->n++];
	memset(e, 0, sizeof(*e));
	return e;
}

/* in-order traversal of the implicit tree must visit ascending hashes */
static void inorder(const uint8_t *gb, size_t n, size_t i, uint64_t *last, int *first)
{
	if (i >= n)
		return;
	inorder(gb, n, 2 * i + 1, last, first);
	uint64_t h = cn_le64(gb + 24 * i);
	ck_assert_msg(*first || h >= *last, "goodbye not a BST at slot %zu", i);
	*last = h;
	*first = 0;
	inorder(gb, n, 2 * i + 2, last, first);
}

struct child { size_t fn_pos, end; const char *name; size_t name_len; };

static size_t parse_entry(struct parsed *p, size_t idx);

static size_t parse_dir_children(struct parsed *p, size_t idx, size_t pos)
{
	struct child *ch = NULL;
	size_t nch = 0, cap = 0;
	uint64_t t, sz;
	char base[8192];
	snprintf(base, sizeof(base), "%s", p->e[idx].path);
	size_t entry_pos = p->e[idx].entry_pos;

	for (;;) {
		hdr(p, pos, &t, &sz);
		if (t == CN_PXAR_GOODBYE)
			break;
		ck_assert_msg(t == CN_PXAR_FILENAME, "expected FILENAME at %zu", pos);
		const char *name = (const char *)p->a + pos + 16;
		size_t nl = sz - 17;
		ck_assert_int_eq(p->a[pos + sz - 1], 0);
		ck_assert_uint_eq(strlen(name), nl);
		if (nch == cap) {
			cap = cap ? cap * 2 : 16;
			ch = realloc(ch, cap * sizeof(*ch));
		}
		struct pentry *e = new_entry(p);
		size_t ci = p->n - 1;
		size_t bl = strlen(base);
		ck_assert_uint_lt(bl + 1 + nl, sizeof(e->path));
		memcpy(e->path, base, bl);
		if (bl)
			e->path[bl++] = '/';
		memcpy(e->path + bl, name, nl + 1);
		e->fn_pos = pos;
		size_t next = pos + sz;
		uint64_t t2, sz2;
		hdr(p, next, &t2, &sz2);
		if (t2 == CN_PXAR_HARDLINK) {
			e->hardlink = 1;
			e->items[0] = (struct pitem){ t2, next, sz2 };
			e->n_items = 1;
			e->end = next + sz2;
		} else {
			ck_assert_msg(t2 == CN_PXAR_ENTRY, "expected ENTRY at %zu", next);
			e->entry_pos = next;
			size_t end = parse_entry(p, ci);  /* may move p->e */
			p->e[ci].end = end;
		}
		ch[nch++] = (struct child){ pos, p->e[ci].end, name, nl };
		pos = p->e[ci].end;
	}
	/* goodbye table, from the spec */
	size_t gb = pos;
	ck_assert_uint_eq(sz, 16 + 24 * (nch + 1));
	const uint8_t *items = p->a + gb + 16;
	const uint8_t *tail = items + 24 * nch;
	ck_assert_uint_eq(cn_le64(tail), 0xef5eed5b753e1555ULL);
	ck_assert_uint_eq(cn_le64(tail + 8), gb - (p->e[idx].fn_pos == SIZE_MAX ? 0 : entry_pos));
	ck_assert_uint_eq(cn_le64(tail + 16), sz);
	uint64_t last = 0;
	int first = 1;
	inorder(items, nch, 0, &last, &first);
	for (size_t c = 0; c < nch; c++) {
		size_t found = 0;
		for (size_t s = 0; s < nch; s++) {
			if (cn_le64(items + 24 * s + 8) != gb - ch[c].fn_pos)
				continue;
			found++;
			ck_assert_uint_eq(cn_le64(items + 24 * s), cn_pxar_hash_filename(ch[c].name, ch[c].name_len));
			ck_assert_uint_eq(cn_le64(items + 24 * s + 16), ch[c].end - ch[c].fn_pos);
		}
		ck_assert_uint_eq(found, 1);
	}
	p->goodbyes_checked++;
	free(ch);
	return gb + sz;
}

static size_t parse_entry(struct parsed *p, size_t idx)
{
	size_t pos = p->e[idx].entry_pos;
	uint64_t t, sz;
	hdr(p, pos, &t, &sz);
	ck_assert_uint_eq(t, CN_PXAR_ENTRY);
	ck_assert_uint_eq(sz, 56);
	uint64_t mode = cn_le64(p->a + pos + 16);
	ck_assert_uint_eq(cn_le32(p->a + pos + 16 + 36), 0);
	p->e[idx].mode = mode;
	pos += sz;
	/* metadata items in the order of spec §4 */
	static const uint64_t order[] = { CN_PXAR_XATTR, CN_PXAR_ACL_USER, CN_PXAR_ACL_GROUP,
		CN_PXAR_ACL_GROUP_OBJ, CN_PXAR_ACL_DEFAULT, CN_PXAR_ACL_DEFAULT_USER,
		CN_PXAR_ACL_DEFAULT_GROUP, CN_PXAR_FCAPS, CN_PXAR_QUOTA_PROJID };
	size_t stage = 0;
	for (;;) {
		hdr(p, pos, &t, &sz);
		size_t k;
		for (k = 0; k < CN_ARRAY_SIZE(order) && order[k] != t; k++)
			;
		if (k == CN_ARRAY_SIZE(order))
			break;
		ck_assert_msg(k >= stage, "metadata item out of order at %zu", pos);
		stage = k;
		ck_assert_uint_lt(p->e[idx].n_items, 64);
		p->e[idx].items[p->e[idx].n_items++] = (struct pitem){ t, pos, sz };
		pos += sz;
	}
	switch (mode & 0170000) {
	case 0100000:
		ck_assert_uint_eq(t, CN_PXAR_PAYLOAD);
		break;
	case 0120000:
		ck_assert_uint_eq(t, CN_PXAR_SYMLINK);
		break;
	case 0060000:
	case 0020000:
		ck_assert_uint_eq(t, CN_PXAR_DEVICE);
		ck_assert_uint_eq(sz, 32);
		break;
	case 0010000:
	case 0140000:
		return pos;
	case 0040000:
		return parse_dir_children(p, idx, pos);
	default:
		ck_abort_msg("bad mode %llo", (unsigned long long)mode);
	}
	p->e[idx].items[p->e[idx].n_items++] = (struct pitem){ t, pos, sz };
	return pos + sz;
}

static void parse_archive(struct parsed *p, const struct cn_buf *b)
{
	memset(p, 0, sizeof(*p));
	p->a = b->data;
	p->len = b->len;
	struct pentry *r = new_entry(p);
	r->fn_pos = SIZE_MAX;
	r->entry_pos = 0;
	size_t end = parse_entry(p, 0);
	ck_assert_uint_eq(end, b->len);
	p->e[0].end = end;
}

static struct pentry *find(struct parsed *p, const char *path)
{
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->e[i].path, path))
			return &p->e[i];
	ck_abort_msg("entry %s not in archive", path);
	return NULL;
}

static int has(struct parsed *p, const char *path)
{
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->e[i].path, path))
			return 1;
	return 0;
}

static const struct pitem *item_of(const struct pentry *e, uint64_t type, size_t nth)
{
	for (size_t i = 0; i < e->n_items; i++)
		if (e->items[i].type == type && nth-- == 0)
			return &e->items[i];
	return NULL;
}

/* ---------- format primitives ---------- */

START_TEST(test_siphash_vectors)
{
	/* SipHash paper, appendix A: key 00..0f, message 00..0e */
	uint8_t msg[64];
	for (int i = 0; i < 64; i++)
		msg[i] = (uint8_t)i;
	const uint64_t k0 = 0x0706050403020100ULL, k1 = 0x0f0e0d0c0b0a0908ULL;
	ck_assert_uint_eq(cn_siphash24(k0, k1, msg, 15), 0xa129ca6149be45e5ULL);
	ck_assert_uint_eq(cn_siphash24(k0, k1, msg, 0), 0x726fdb47dd0e0e31ULL);
	/* pxar.md §6 */
	ck_assert_uint_eq(cn_pxar_hash_filename("", 0), 0x76614015f8d1bb6cULL);
	ck_assert_uint_eq(cn_pxar_hash_filename("a", 1), 0x0c26e9067c2c7bcfULL);
	ck_assert_uint_eq(cn_pxar_hash_filename("foo", 3), 0x026851e9bf213422ULL);
	ck_assert_uint_eq(cn_pxar_hash_filename("etc", 3), 0xd0c229edbd411e9aULL);
}
END_TEST

START_TEST(test_permutation)
{
	static const struct { size_t n; size_t s[16]; } v[] = {
		{ 1, { 0 } }, { 2, { 1, 0 } }, { 3, { 1, 0, 2 } }, { 4, { 2, 1, 3, 0 } },
		{ 5, { 3, 1, 4, 0, 2 } }, { 6, { 3, 1, 5, 0, 2, 4 } }, { 7, { 3, 1, 5, 0, 2, 4, 6 } },
		{ 8, { 4, 2, 6, 1, 3, 5, 7, 0 } }, { 9, { 5, 3, 7, 1, 4, 6, 8, 0, 2 } },
		{ 10, { 6, 3, 8, 1, 5, 7, 9, 0, 2, 4 } },
		{ 16, { 8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0 } },
	};
	size_t slot[2000];
	for (size_t k = 0; k < CN_ARRAY_SIZE(v); k++) {
		cn_pxar_goodbye_permute(v[k].n, slot);
		for (size_t i = 0; i < v[k].n; i++)
			ck_assert_uint_eq(slot[i], v[k].s[i]);
	}
	/* any n: a permutation whose implicit tree is in order */
	for (size_t n = 1; n <= 1500; n += (n < 130 ? 1 : 37)) {
		uint8_t *gb = calloc(n, 24);
		int *seen = calloc(n, sizeof(int));
		cn_pxar_goodbye_permute(n, slot);
		for (size_t i = 0; i < n; i++) {
			ck_assert_uint_lt(slot[i], n);
			ck_assert_int_eq(seen[slot[i]]++, 0);
			cn_put_le64(gb + 24 * i, slot[i]);
		}
		uint64_t last = 0;
		int first = 1;
		inorder(gb, n, 0, &last, &first);
		free(gb);
		free(seen);
	}
}
END_TEST

START_TEST(test_varints_and_flags)
{
	static const struct { int64_t v; int sig; const char *hex; } v[] = {
		{ 0, 0, "00" }, { 127, 0, "7f" }, { 128, 0, "8001" }, { 300, 0, "ac02" },
		{ 4096, 0, "8020" }, { -1, 1, "8100" }, { -128, 1, "808100" },
		{ 1700000000, 1, "80e2cfaa06" },
	};
	for (size_t i = 0; i < CN_ARRAY_SIZE(v); i++) {
		uint8_t b[11];
		char hex[23];
		size_t n = v[i].sig ? cn_catalog_put_i64(b, v[i].v) : cn_catalog_put_u64(b, (uint64_t)v[i].v);
		cn_hex_encode(b, n, hex);
		ck_assert_str_eq(hex, v[i].hex);
	}
	uint8_t b[11];
	ck_assert_uint_eq(cn_catalog_put_i64(b, INT64_MIN), 11);
	ck_assert_uint_eq(cn_catalog_put_u64(b, UINT64_MAX), 10);
	/* flags.rs Flags::DEFAULT, summed by hand from the bit list */
	ck_assert_uint_eq(CN_PXAR_FLAGS_DEFAULT, 0x90000003ffefff00ULL);
	ck_assert_uint_eq(cn_pxar_flags_from_magic(0x01021994),
			  0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x1000 | 0x20000000 | 0x40000000);
}
END_TEST

/* ---------- spec §7 worked example, byte for byte ---------- */

START_TEST(test_worked_example)
{
	mk_tmp();
	put_file("a", "hi", 0644);
	ck_assert_int_eq(chmod(tmpdir, 0755), 0);
	set_mtime(P("a"), 1700000000, 123456789);
	set_mtime(tmpdir, 1700000001, 500000000);

	struct cn_buf out = { 0 }, cat = { 0 };
	struct cn_pxar_create_opts o = { .archive_name = "root.pxar.didx" };
	struct cn_pxar_create_stats st;
	archive(tmpdir, &o, &out, &cat, &st);

	uint8_t exp[212], *q = exp;
	uint32_t uid = getuid(), gid = getgid();
	q += put64(q, 0xd5956474e588acefULL); q += put64(q, 56);
	q += put64(q, 040755); q += put64(q, 0); q += put32(q, uid); q += put32(q, gid);
	q += put64(q, 1700000001); q += put32(q, 500000000); q += put32(q, 0);
	q += put64(q, 0x16701121063917b3ULL); q += put64(q, 18); *q++ = 'a'; *q++ = 0;
	q += put64(q, 0xd5956474e588acefULL); q += put64(q, 56);
	q += put64(q, 0100644); q += put64(q, 0); q += put32(q, uid); q += put32(q, gid);
	q += put64(q, 1700000000); q += put32(q, 123456789); q += put32(q, 0);
	q += put64(q, 0x28147a1b0b7c1a25ULL); q += put64(q, 18); *q++ = 'h'; *q++ = 'i';
	q += put64(q, 0x2fec4fa642d5731dULL); q += put64(q, 64);
	q += put64(q, 0x0c26e9067c2c7bcfULL); q += put64(q, 92); q += put64(q, 92);
	q += put64(q, 0xef5eed5b753e1555ULL); q += put64(q, 148); q += put64(q, 64);
	ck_assert_uint_eq((size_t)(q - exp), 212);
	ck_assert_uint_eq(out.len, 212);
	ck_assert_mem_eq(out.data, exp, 212);
	ck_assert_uint_eq(st.archive_size, 212);
	ck_assert_uint_eq(st.files, 1);
	ck_assert_uint_eq(st.dirs, 1);
	ck_assert_uint_eq(st.bytes_read, 2);

	/* catalog (catalog.md §3): magic, table of root.pxar.didx at 8,
	 * root table at 19, trailer 19 */
	static const uint8_t cexp[] = {
		0x91, 0xfd, 0x60, 0xf9, 0xc4, 0x67, 0x58, 0xd5,
		0x0a, 0x01, 'f', 0x01, 'a', 0x02, 0x80, 0xe2, 0xcf, 0xaa, 0x06,
		0x12, 0x01, 'd', 0x0e, 'r', 'o', 'o', 't', '.', 'p', 'x', 'a', 'r', '.', 'd', 'i', 'd', 'x', 0x0b,
		0x13, 0, 0, 0, 0, 0, 0, 0,
	};
	ck_assert_uint_eq(cat.len, sizeof(cexp));
	ck_assert_mem_eq(cat.data, cexp, sizeof(cexp));
	cn_buf_free(&out);
	cn_buf_free(&cat);
	rm_tmp();
}
END_TEST

/* ---------- goodbye tables for 1..101 children ---------- */

START_TEST(test_goodbye_1_to_101)
{
	for (int n = 1; n <= 101; n++) {
		mk_tmp();
		for (int i = 0; i < n; i++) {
			char name[64];
			snprintf(name, sizeof(name), "e%03d_%c", i * 7919 % 1000, "fdlp"[i % 4]);
			switch (i % 4) {
			case 0: {
				char c[300];
				memset(c, 'x', (size_t)i);
				c[i] = 0;
				put_file(name, c, 0640);
				break;
			}
			case 1:
				ck_assert_int_eq(mkdir(P(name), 0700), 0);
				if (i % 8 == 1)
					put_file(strcat(strcpy((char[128]){ 0 }, name), "/inner"), "z", 0600);
				break;
			case 2:
				ck_assert_int_eq(symlink("target/somewhere", P(name)), 0);
				break;
			case 3:
				ck_assert_int_eq(mkfifo(P(name), 0600), 0);
				break;
			}
		}
		struct cn_buf out = { 0 };
		archive(tmpdir, NULL, &out, NULL, NULL);
		struct parsed p;
		parse_archive(&p, &out);
		/* root + children + inner files */
		ck_assert_uint_ge(p.n, (size_t)n + 1);
		ck_assert_uint_ge(p.goodbyes_checked, 1);
		free(p.e);
		cn_buf_free(&out);
		rm_tmp();
	}
}
END_TEST

/* ---------- every entry type, order, hardlinks, catalog ---------- */

static size_t cat_parse_table(const uint8_t *c, size_t len, size_t start, const char *prefix,
			      char out[][256], size_t *n)
{
	size_t pos = start;
	uint64_t tl = 0, count = 0;
	int sh = 0;
	while (c[pos] & 0x80)
		tl |= (uint64_t)(c[pos++] & 0x7f) << sh, sh += 7;
	tl |= (uint64_t)c[pos++] << sh;
	size_t end = pos + tl;
	ck_assert_uint_le(end, len);
	sh = 0;
	while (c[pos] & 0x80)
		count |= (uint64_t)(c[pos++] & 0x7f) << sh, sh += 7;
	count |= (uint64_t)c[pos++] << sh;
	for (uint64_t i = 0; i < count; i++) {
		uint8_t type = c[pos++];
		size_t nl = c[pos++];
		ck_assert_uint_lt(nl, 128);
		char name[200];
		memcpy(name, c + pos, nl);
		name[nl] = 0;
		pos += nl;
		snprintf(out[(*n)++], 256, "%c %s%s", type, prefix, name);
		if (type == 'd') {
			uint64_t d = 0;
			sh = 0;
			while (c[pos] & 0x80)
				d |= (uint64_t)(c[pos++] & 0x7f) << sh, sh += 7;
			d |= (uint64_t)c[pos++] << sh;
			char pre[256];
			snprintf(pre, sizeof(pre), "%s%s/", prefix, name);
			cat_parse_table(c, len, start - d, pre, out, n);
		} else if (type == 'f') {
			while (c[pos] & 0x80)
				pos++;
			pos++;
			/* mtime: a negative value ends with 0x80-flagged group + 0x00 */
			while (c[pos] & 0x80)
				pos++;
			pos++;
		}
	}
	ck_assert_uint_eq(pos, end);
	return end;
}

START_TEST(test_all_types)
{
	mk_tmp();
	ck_assert_int_eq(mkdir(P("d"), 0750), 0);
	ck_assert_int_eq(mkdir(P("d/sub"), 0755), 0);
	ck_assert_int_eq(mkdir(P("empty"), 0700), 0);
	put_file("d/sub/page", "hello world\n", 0644);
	put_file("zero", "", 0600);
	ck_assert_int_eq(link(P("d/sub/page"), P("d/sub/page.hardlink")), 0);
	ck_assert_int_eq(link(P("d/sub/page"), P("B-link")), 0);  /* sorts before d/ */
	ck_assert_int_eq(symlink("d/sub/page", P("sym")), 0);
	ck_assert_int_eq(mkfifo(P("fifo"), 0644), 0);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", P("sock"));
	ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	int have_dev = mknod(P("chr"), S_IFCHR | 0600, makedev(4, 300000)) == 0;
	if (have_dev)
		ck_assert_int_eq(mknod(P("blk"), S_IFBLK | 0600, makedev(259, 7)), 0);
	else
		fprintf(stderr, "test_all_types: mknod not permitted, device entries not tested\n");

	struct cn_buf out = { 0 }, cat = { 0 };
	struct cn_pxar_create_opts o = { .archive_name = "root.pxar.didx" };
	struct cn_pxar_create_stats st;
	archive(tmpdir, &o, &out, &cat, &st);
	struct parsed p;
	parse_archive(&p, &out);

	/* order: bytewise sorted, depth first */
	const char *order_dev[] = { "", "B-link", "blk", "chr", "d", "d/sub", "d/sub/page",
		"d/sub/page.hardlink", "empty", "fifo", "sock", "sym", "zero" };
	const char *order_nodev[] = { "", "B-link", "d", "d/sub", "d/sub/page", "d/sub/page.hardlink",
		"empty", "fifo", "sock", "sym", "zero" };
	const char **order = have_dev ? order_dev : order_nodev;
	size_t nord = have_dev ? CN_ARRAY_SIZE(order_dev) : CN_ARRAY_SIZE(order_nodev);
	ck_assert_uint_eq(p.n, nord);
	for (size_t i = 0; i < nord; i++)
		ck_assert_str_eq(p.e[i].path, order[i]);

	/* "B-link" comes first, so it holds the data; both later names link to it */
	struct pentry *b = find(&p, "B-link");
	ck_assert(!b->hardlink);
	ck_assert_uint_eq(b->mode, 0100644);
	for (int k = 0; k < 1; k++) {
		struct pentry *h = find(&p, "d/sub/page");
		ck_assert(h->hardlink);
		ck_assert_uint_eq(cn_le64(p.a + h->items[0].pos + 16), h->fn_pos - b->fn_pos);
		ck_assert_str_eq((const char *)p.a + h->items[0].pos + 24, "B-link");
		ck_assert_uint_eq(h->items[0].size, 16 + 8 + 7);
	}
	ck_assert(find(&p, "d/sub/page.hardlink")->hardlink);
	const struct pentry *sy = find(&p, "sym");
	ck_assert_uint_eq(sy->mode, 0120777);
	ck_assert_str_eq((const char *)p.a + item_of(sy, CN_PXAR_SYMLINK, 0)->pos + 16, "d/sub/page");
	ck_assert_uint_eq(find(&p, "fifo")->mode, 010644);
	ck_assert_uint_eq(find(&p, "sock")->mode & 0170000, 0140000);
	ck_assert_uint_eq(find(&p, "zero")->mode, 0100600);
	ck_assert_uint_eq(item_of(find(&p, "zero"), CN_PXAR_PAYLOAD, 0)->size, 16);
	if (have_dev) {
		const struct pitem *d = item_of(find(&p, "chr"), CN_PXAR_DEVICE, 0);
		ck_assert_uint_eq(cn_le64(p.a + d->pos + 16), 4);
		ck_assert_uint_eq(cn_le64(p.a + d->pos + 24), 300000);
		d = item_of(find(&p, "blk"), CN_PXAR_DEVICE, 0);
		ck_assert_uint_eq(cn_le64(p.a + d->pos + 16), 259);
		ck_assert_uint_eq(cn_le64(p.a + d->pos + 24), 7);
		ck_assert_uint_eq(st.devices, 2);
	}
	ck_assert_uint_eq(st.hardlinks, 2);
	ck_assert_uint_eq(st.files, 2);
	ck_assert_uint_eq(st.dirs, 4);
	ck_assert_uint_eq(st.symlinks, 1);
	ck_assert_uint_eq(st.fifos, 1);
	ck_assert_uint_eq(st.sockets, 1);
	ck_assert_uint_eq(st.archive_size, out.len);

	/* catalog: same entries and order, children tables before parents */
	char lines[64][256];
	size_t nl = 0;
	ck_assert_mem_eq(cat.data, "\x91\xfd\x60\xf9\xc4\x67\x58\xd5", 8);
	uint64_t root = cn_le64(cat.data + cat.len - 8);
	ck_assert_uint_eq(cat_parse_table(cat.data, cat.len, root, "", lines, &nl), cat.len - 8);
	const char *cexp_dev[] = { "d root.pxar.didx", "f root.pxar.didx/B-link",
		"b root.pxar.didx/blk", "c root.pxar.didx/chr", "d root.pxar.didx/d",
		"d root.pxar.didx/d/sub", "h root.pxar.didx/d/sub/page",
		"h root.pxar.didx/d/sub/page.hardlink", "d root.pxar.didx/empty",
		"p root.pxar.didx/fifo", "s root.pxar.didx/sock", "l root.pxar.didx/sym",
		"f root.pxar.didx/zero" };
	size_t k = 0;
	for (size_t i = 0; i < CN_ARRAY_SIZE(cexp_dev); i++) {
		if (!have_dev && (cexp_dev[i][0] == 'b' || cexp_dev[i][0] == 'c'))
			continue;
		ck_assert_str_eq(lines[k++], cexp_dev[i]);
	}
	ck_assert_uint_eq(k, nl);
	free(p.e);
	cn_buf_free(&out);
	cn_buf_free(&cat);
	rm_tmp();
}
END_TEST

/* ---------- xattrs, ACLs, fcaps ---------- */

START_TEST(test_xattrs_acls)
{
	mk_tmp();
	put_file("f", "x", 0644);
	ck_assert_int_eq(mkdir(P("dir"), 0755), 0);
	if (setxattr(P("f"), "user.zz", "1", 1, 0) < 0) {
		fprintf(stderr, "test_xattrs_acls: user xattrs unsupported here (%s), skipped\n", strerror(errno));
		rm_tmp();
		return;
	}
	ck_assert_int_eq(setxattr(P("f"), "user.aa", "value-a", 7, 0), 0);
	ck_assert_int_eq(setxattr(P("f"), "user.empty", "", 0, 0), 0);
	int have_trusted = setxattr(P("f"), "trusted.t", "T", 1, 0) == 0;
	/* the order upstream stores is listxattr's */
	char names[1024];
	ssize_t nn = listxattr(P("f"), names, sizeof(names));
	ck_assert_int_gt(nn, 0);

	acl_t a = acl_from_text("u::rw-,u:1234:r--,u:99:rwx,g::r--,g:55:r-x,m::rwx,o::---");
	ck_assert_ptr_nonnull(a);
	int have_acl = acl_set_file(P("f"), ACL_TYPE_ACCESS, a) == 0;
	acl_free(a);
	if (have_acl) {
		a = acl_from_text("u::rwx,u:7:rw-,g::r-x,o::r-x,m::rwx");
		ck_assert_int_eq(acl_set_file(P("dir"), ACL_TYPE_DEFAULT, a), 0);
		acl_free(a);
	} else {
		fprintf(stderr, "test_xattrs_acls: POSIX ACLs unsupported here, ACL part skipped\n");
	}
	/* VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_BIND_SERVICE */
	uint8_t caps[20] = { 0 };
	cn_put_le32(caps, 0x02000001);
	cn_put_le32(caps + 4, 1u << 10);
	int have_fcaps = setxattr(P("f"), "security.capability", caps, sizeof(caps), 0) == 0;
	if (!have_fcaps)
		fprintf(stderr, "test_xattrs_acls: cannot set security.capability, FCAPS part skipped\n");

	struct cn_buf out = { 0 };
	archive(tmpdir, NULL, &out, NULL, NULL);
	struct parsed p;
	parse_archive(&p, &out);
	struct pentry *f = find(&p, "f");

	size_t xi = 0;
	for (ssize_t off = 0; off < nn; off += (ssize_t)strlen(names + off) + 1) {
		const char *n = names + off;
		if (strncmp(n, "user.", 5) && strncmp(n, "trusted.", 8))
			continue;
		const struct pitem *it = item_of(f, CN_PXAR_XATTR, xi++);
		ck_assert_ptr_nonnull(it);
		ck_assert_str_eq((const char *)p.a + it->pos + 16, n);
		char v[64];
		ssize_t vl = getxattr(P("f"), n, v, sizeof(v));
		ck_assert_uint_eq(it->size, 16 + strlen(n) + 1 + (size_t)vl);
		ck_assert_mem_eq(p.a + it->pos + 16 + strlen(n) + 1, v, (size_t)vl);
	}
	ck_assert_uint_eq(xi, 3u + (unsigned)have_trusted);
	ck_assert_ptr_null(item_of(f, CN_PXAR_XATTR, xi));

	if (have_acl) {
		const struct pitem *u0 = item_of(f, CN_PXAR_ACL_USER, 0), *u1 = item_of(f, CN_PXAR_ACL_USER, 1);
		ck_assert_ptr_nonnull(u1);
		ck_assert_ptr_null(item_of(f, CN_PXAR_ACL_USER, 2));
		ck_assert_uint_eq(cn_le64(p.a + u0->pos + 16), 99);
		ck_assert_uint_eq(cn_le64(p.a + u0->pos + 24), 7);
		ck_assert_uint_eq(cn_le64(p.a + u1->pos + 16), 1234);
		ck_assert_uint_eq(cn_le64(p.a + u1->pos + 24), 4);
		const struct pitem *g = item_of(f, CN_PXAR_ACL_GROUP, 0);
		ck_assert_uint_eq(cn_le64(p.a + g->pos + 16), 55);
		ck_assert_uint_eq(cn_le64(p.a + g->pos + 24), 5);
		const struct pitem *go = item_of(f, CN_PXAR_ACL_GROUP_OBJ, 0);
		ck_assert_ptr_nonnull(go);
		ck_assert_uint_eq(go->size, 24);
		ck_assert_uint_eq(cn_le64(p.a + go->pos + 16), 4);
		/* the mask shows as the group bits of the mode */
		ck_assert_uint_eq(f->mode, 0100670);
		struct pentry *d = find(&p, "dir");
		const struct pitem *def = item_of(d, CN_PXAR_ACL_DEFAULT, 0);
		ck_assert_ptr_nonnull(def);
		ck_assert_uint_eq(def->size, 48);
		ck_assert_uint_eq(cn_le64(p.a + def->pos + 16), 7);
		ck_assert_uint_eq(cn_le64(p.a + def->pos + 24), 5);
		ck_assert_uint_eq(cn_le64(p.a + def->pos + 32), 5);
		ck_assert_uint_eq(cn_le64(p.a + def->pos + 40), 7);
		const struct pitem *du = item_of(d, CN_PXAR_ACL_DEFAULT_USER, 0);
		ck_assert_uint_eq(cn_le64(p.a + du->pos + 16), 7);
		ck_assert_uint_eq(cn_le64(p.a + du->pos + 24), 6);
		ck_assert_ptr_null(item_of(d, CN_PXAR_ACL_USER, 0));
		ck_assert_ptr_null(item_of(d, CN_PXAR_ACL_GROUP_OBJ, 0));
	}
	if (have_fcaps) {
		const struct pitem *fc = item_of(f, CN_PXAR_FCAPS, 0);
		ck_assert_ptr_nonnull(fc);
		uint8_t v[64];
		ssize_t vl = getxattr(P("f"), "security.capability", v, sizeof(v));
		ck_assert_uint_eq(fc->size, 16 + (size_t)vl);
		ck_assert_mem_eq(p.a + fc->pos + 16, v, (size_t)vl);
	}
	free(p.e);
	cn_buf_free(&out);
	rm_tmp();
}
END_TEST

/* ---------- excludes ---------- */

START_TEST(test_excludes)
{
	mk_tmp();
	put_file("a.tmp", "1", 0644);
	put_file("keep.tmp", "1", 0644);
	put_file("b", "1", 0644);
	ck_assert_int_eq(mkdir(P("cache"), 0755), 0);
	put_file("cache/x", "1", 0644);
	put_file("cachefile", "1", 0644);
	ck_assert_int_eq(mkdir(P("lost+found"), 0755), 0);
	ck_assert_int_eq(mkdir(P("sub"), 0755), 0);
	put_file("sub/.pxarexclude", "# comment\n  *.log  \n/only-here\n!important.log\n", 0644);
	put_file("sub/x.log", "1", 0644);
	put_file("sub/important.log", "1", 0644);
	put_file("sub/only-here", "1", 0644);
	ck_assert_int_eq(mkdir(P("sub/deeper"), 0755), 0);
	put_file("sub/deeper/y.log", "1", 0644);
	put_file(".pxarexclude", "/b\n", 0644);
	put_file(".pxarexclude-cli", "stale", 0644);  /* never archived from disk */

	const char *ex[] = { "*.tmp", "cache/", "!keep.tmp" };
	struct cn_pxar_create_opts o = { .excludes = ex, .n_excludes = 3, .skip_lost_found = 1,
					 .archive_name = "root.pxar.didx" };
	struct cn_buf out = { 0 }, cat = { 0 };
	struct cn_pxar_create_stats st;
	archive(tmpdir, &o, &out, &cat, &st);
	struct parsed p;
	parse_archive(&p, &out);
	ck_assert(!has(&p, "a.tmp"));
	ck_assert(has(&p, "keep.tmp"));
	ck_assert(!has(&p, "b"));          /* root .pxarexclude "/b" */
	ck_assert(!has(&p, "cache"));
	ck_assert(has(&p, "cachefile"));   /* "cache/" is for directories only */
	ck_assert(!has(&p, "lost+found"));
	ck_assert(has(&p, ".pxarexclude"));
	ck_assert(!has(&p, "sub/x.log"));
	ck_assert(has(&p, "sub/important.log"));
	ck_assert(!has(&p, "sub/deeper/y.log"));
	/* upstream builds "sub" + "/only-here" anchored, which never matches
	 * the "/sub/only-here" match path: kept, as the official client does */
	ck_assert(has(&p, "sub/only-here"));

	/* .pxarexclude-cli: last root child, mode 0100600, zero stat */
	struct pentry *cli = &p.e[p.n - 1];
	ck_assert_str_eq(cli->path, ".pxarexclude-cli");
	ck_assert_uint_eq(cli->mode, 0100600);
	const uint8_t *st0 = p.a + cli->entry_pos + 16;
	static const uint8_t zero32[32];
	ck_assert_mem_eq(st0 + 8, zero32, 32);
	const struct pitem *pl = item_of(cli, CN_PXAR_PAYLOAD, 0);
	const char *content = "*.tmp\ncache/\n!keep.tmp\nlost+found\n";
	ck_assert_uint_eq(pl->size, 16 + strlen(content));
	ck_assert_mem_eq(p.a + pl->pos + 16, content, strlen(content));
	ck_assert_uint_eq(st.excluded, 6);  /* a.tmp b cache lost+found x.log y.log */

	/* catalog: ".pxarexclude-cli" last with size and mtime 0 */
	const char *tail = "\x66\x10.pxarexclude-cli\x22\x00";
	uint64_t root = cn_le64(cat.data + cat.len - 8);
	/* the archive's table ends right before the root table */
	ck_assert_mem_eq(cat.data + root - 20, tail, 20);
	free(p.e);
	cn_buf_free(&out);
	cn_buf_free(&cat);
	rm_tmp();
}
END_TEST

START_TEST(test_entries_max)
{
	mk_tmp();
	for (int i = 0; i < 10; i++) {
		char n[16];
		snprintf(n, sizeof(n), "f%d", i);
		put_file(n, "", 0644);
	}
	struct cn_buf out = { 0 };
	struct cn_pxar_create_opts o = { .entries_max = 9 };
	ck_assert_int_eq(cn_pxar_create(tmpdir, &o, sink, &out, NULL, NULL), -EOVERFLOW);
	cn_buf_free(&out);
	o.entries_max = 10;
	archive(tmpdir, &o, &out, NULL, NULL);
	cn_buf_free(&out);
	rm_tmp();
}
END_TEST

/* ---------- hostile-ish names and depth ---------- */

START_TEST(test_odd_names_and_depth)
{
	mk_tmp();
	char longname[256];
	memset(longname, 'L', 255);
	longname[255] = 0;
	put_file(longname, "long", 0644);
	put_file("new\nline", "nl", 0644);
	put_file(" space ", "", 0644);
	put_file("\xc3\xbcn\xc3\xaf", "", 0644);
	/* a path deeper than PATH_MAX */
	char rel[PATH_MAX * 2] = "";
	size_t depth = 0;
	int dfd = open(tmpdir, O_RDONLY | O_DIRECTORY);
	while (strlen(rel) < PATH_MAX + 200) {
		char comp[64];
		memset(comp, 'd', 60);
		snprintf(comp + 60, 4, "%03zu", depth++);
		ck_assert_int_eq(mkdirat(dfd, comp, 0755), 0);
		int nfd = openat(dfd, comp, O_RDONLY | O_DIRECTORY);
		close(dfd);
		dfd = nfd;
		strcat(rel, rel[0] ? "/" : "");
		strcat(rel, comp);
	}
	int ffd = openat(dfd, "bottom", O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(ffd, 0);
	close(ffd);
	close(dfd);

	struct cn_buf out = { 0 };
	archive(tmpdir, NULL, &out, NULL, NULL);
	struct parsed p;
	parse_archive(&p, &out);
	ck_assert(has(&p, longname));
	ck_assert(has(&p, "new\nline"));
	ck_assert(has(&p, " space "));
	char bottom[PATH_MAX * 2 + 16];
	snprintf(bottom, sizeof(bottom), "%s/bottom", rel);
	ck_assert(has(&p, bottom));
	ck_assert_uint_eq(p.goodbyes_checked, depth + 1);
	free(p.e);
	cn_buf_free(&out);
	rm_tmp();
}
END_TEST

/* ---------- encoder API misuse ---------- */

START_TEST(test_encoder_errors)
{
	struct cn_buf out = { 0 };
	struct cn_pxar_metadata m = { 0 };
	struct cn_pxar_encoder *e;
	m.stat.mode = 0100644;
	ck_assert_int_eq(cn_pxar_encoder_new(sink, &out, &m, &e), -EINVAL);
	m.stat.mode = 040755;
	ck_assert_int_eq(cn_pxar_encoder_new(sink, &out, &m, &e), 0);
	struct cn_pxar_metadata f = { .stat.mode = 0100644 };
	ck_assert_int_eq(cn_pxar_encoder_begin_file(e, &f, "..", 2, 1, NULL), -CN_E_PATH);
	cn_pxar_encoder_free(e);
	ck_assert_int_eq(cn_pxar_encoder_new(sink, &out, &m, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_begin_file(e, &f, "a/b", 3, 1, NULL), -CN_E_PATH);
	cn_pxar_encoder_free(e);
	ck_assert_int_eq(cn_pxar_encoder_new(sink, &out, &m, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_begin_file(e, &f, "a", 1, 2, NULL), 0);
	ck_assert_int_eq(cn_pxar_encoder_write(e, "abc", 3), -EINVAL);
	cn_pxar_encoder_free(e);
	ck_assert_int_eq(cn_pxar_encoder_new(sink, &out, &m, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_begin_file(e, &f, "a", 1, 2, NULL), 0);
	ck_assert_int_eq(cn_pxar_encoder_write(e, "a", 1), 0);
	ck_assert_int_eq(cn_pxar_encoder_end_file(e), -EINVAL);
	cn_pxar_encoder_free(e);
	ck_assert_int_eq(cn_pxar_encoder_new(sink, &out, &m, &e), 0);
	ck_assert_int_eq(cn_pxar_encoder_begin_dir(e, &m, "d", 1), 0);
	ck_assert_int_eq(cn_pxar_encoder_finish(e), -EINVAL);
	cn_pxar_encoder_free(e);
	cn_buf_free(&out);
}
END_TEST

/* ---------- mount points ---------- */

START_TEST(test_one_file_system)
{
	mk_tmp();
	ck_assert_int_eq(mkdir(P("mnt"), 0755), 0);
	ck_assert_int_eq(mkdir(P("proc"), 0755), 0);
	put_file("top", "t", 0644);
	if (mount("none", P("mnt"), "tmpfs", 0, "mode=0755") < 0) {
		fprintf(stderr, "test_one_file_system: cannot mount tmpfs (%s), skipped\n", strerror(errno));
		rm_tmp();
		return;
	}
	put_file("mnt/inner", "i", 0644);
	int have_proc = mount("proc", P("proc"), "proc", 0, NULL) == 0;

	struct cn_buf out = { 0 };
	struct cn_pxar_create_stats st;
	archive(tmpdir, NULL, &out, NULL, &st);
	struct parsed p;
	parse_archive(&p, &out);
	ck_assert(has(&p, "mnt"));          /* the mount point itself is stored */
	ck_assert(!has(&p, "mnt/inner"));   /* but not descended into */
	ck_assert(has(&p, "top"));
	ck_assert_uint_eq(st.mountpoints, 1u + (unsigned)have_proc);
	free(p.e);
	cn_buf_free(&out);

	struct cn_pxar_create_opts o = { .all_file_systems = 1 };
	archive(tmpdir, &o, &out, NULL, &st);
	parse_archive(&p, &out);
	ck_assert(has(&p, "mnt/inner"));
	if (have_proc) {
		ck_assert(has(&p, "proc"));     /* virtual file systems: never descended */
		ck_assert(!has(&p, "proc/self"));
	}
	ck_assert_uint_eq(st.mountpoints, (unsigned)have_proc);
	free(p.e);
	cn_buf_free(&out);
	if (have_proc)
		ck_assert_int_eq(umount2(P("proc"), MNT_DETACH), 0);
	ck_assert_int_eq(umount2(P("mnt"), MNT_DETACH), 0);
	rm_tmp();
}
END_TEST

/* ---------- source untouched: atime, and changes while reading ---------- */

START_TEST(test_atime_untouched)
{
	mk_tmp();
	put_file("f", "content", 0644);
	/* atime older than mtime: relatime would update it on a plain read */
	struct timespec ts[2] = { { 1000000000, 0 }, { 1500000000, 0 } };
	ck_assert_int_eq(utimensat(AT_FDCWD, P("f"), ts, 0), 0);
	struct cn_buf out = { 0 };
	archive(tmpdir, NULL, &out, NULL, NULL);
	struct stat st;
	ck_assert_int_eq(stat(P("f"), &st), 0);
	if (geteuid() == 0)  /* O_NOATIME is permitted for the owner or root */
		ck_assert_int_eq(st.st_atim.tv_sec, 1000000000);
	ck_assert_int_eq(st.st_mtim.tv_sec, 1500000000);
	cn_buf_free(&out);
	rm_tmp();
}
END_TEST

struct appender {
	const char *path;
	atomic_int stop; /* set by the test thread, read by the appender */
};

static void *append_loop(void *arg)
{
	struct appender *a = arg;
	int fd = open(a->path, O_WRONLY | O_APPEND);
	while (fd >= 0 && !atomic_load(&a->stop)) {
		if (write(fd, "+", 1) != 1)
			break;
		sched_yield();
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

START_TEST(test_changed_while_reading)
{
	mk_tmp();
	int fd = open(P("growing"), O_WRONLY | O_CREAT, 0644);
	ck_assert_int_eq(ftruncate(fd, 64 << 20), 0);
	close(fd);
	struct appender a = { .path = P("growing") };
	atomic_init(&a.stop, 0);
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, append_loop, &a), 0);
	usleep(2000);
	struct cn_buf out = { 0 };
	struct cn_pxar_create_stats st;
	archive(tmpdir, NULL, &out, NULL, &st);
	atomic_store(&a.stop, 1);
	pthread_join(t, NULL);
	ck_assert_uint_eq(st.changed, 1);
	ck_assert_uint_eq(st.files, 1);
	/* still a consistent archive with the size seen when listing */
	struct parsed p;
	parse_archive(&p, &out);
	ck_assert_uint_ge(item_of(find(&p, "growing"), CN_PXAR_PAYLOAD, 0)->size, 16u + (64u << 20));
	free(p.e);
	cn_buf_free(&out);
	rm_tmp();
}
END_TEST

/* runs cn_pxar_create as an unprivileged user when we are root, so that
 * permission errors happen; returns the child's verdict */
static void check_unreadable(void)
{
	struct cn_buf out = { 0 };
	struct cn_pxar_create_stats st;
	archive(tmpdir, NULL, &out, NULL, &st);
	struct parsed p;
	parse_archive(&p, &out);
	ck_assert(has(&p, "ok"));
	ck_assert(!has(&p, "secret"));
	ck_assert(!has(&p, "closed"));  /* cannot be opened: skipped whole, as upstream */
	ck_assert_uint_eq(st.skipped, 2);
	free(p.e);
	cn_buf_free(&out);
}

START_TEST(test_unreadable_skipped)
{
	mk_tmp();
	ck_assert_int_eq(chmod(tmpdir, 0755), 0);
	put_file("ok", "1", 0644);
	put_file("secret", "2", 0000);
	ck_assert_int_eq(mkdir(P("closed"), 0755), 0);
	put_file("closed/x", "3", 0644);
	ck_assert_int_eq(chmod(P("closed"), 0311), 0);  /* not listable */
	if (geteuid() != 0) {
		check_unreadable();
	} else {
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			if (setgid(65534) < 0 || setuid(65534) < 0)
				_exit(3);
			check_unreadable();
			_exit(0);
		}
		int status;
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "unprivileged run failed: %d", status);
	}
	rm_tmp();
}
END_TEST

/* ---------- chattr flags in Stat.flags ---------- */

static int set_chattr(const char *path, int flags)
{
	int fd = open(path, O_RDONLY);
	int cur = 0, rc = -1;
	if (fd >= 0 && ioctl(fd, FS_IOC_GETFLAGS, &cur) == 0) {
		cur |= flags;
		rc = ioctl(fd, FS_IOC_SETFLAGS, &cur);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

START_TEST(test_chattr_flags)
{
	mk_tmp();
	put_file("f", "x", 0644);
	ck_assert_int_eq(mkdir(P("d"), 0755), 0);
	ck_assert_int_eq(symlink("f", P("l")), 0);
	if (set_chattr(P("f"), FS_NOATIME_FL | FS_NODUMP_FL) < 0 || set_chattr(P("d"), FS_DIRSYNC_FL) < 0) {
		fprintf(stderr, "test_chattr_flags: FS_IOC_SETFLAGS unsupported here (%s), skipped\n",
			strerror(errno));
		rm_tmp();
		return;
	}
	struct cn_buf out = { 0 };
	archive(tmpdir, NULL, &out, NULL, NULL);
	struct parsed p;
	parse_archive(&p, &out);
	/* NODUMP files are archived (EXCLUDE_NODUMP is not acted upon by 3.2.4) */
	ck_assert_uint_eq(cn_le64(p.a + find(&p, "f")->entry_pos + 24), 0x20000 | 0x100000);
	ck_assert_uint_eq(cn_le64(p.a + find(&p, "d")->entry_pos + 24), 0x200000);
	ck_assert_uint_eq(cn_le64(p.a + find(&p, "l")->entry_pos + 24), 0);
	free(p.e);
	cn_buf_free(&out);
	rm_tmp();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pxar_encoder");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_siphash_vectors);
	tcase_add_test(tc, test_permutation);
	tcase_add_test(tc, test_varints_and_flags);
	tcase_add_test(tc, test_worked_example);
	tcase_add_test(tc, test_goodbye_1_to_101);
	tcase_add_test(tc, test_all_types);
	tcase_add_test(tc, test_xattrs_acls);
	tcase_add_test(tc, test_excludes);
	tcase_add_test(tc, test_entries_max);
	tcase_add_test(tc, test_odd_names_and_depth);
	tcase_add_test(tc, test_encoder_errors);
	tcase_add_test(tc, test_one_file_system);
	tcase_add_test(tc, test_atime_untouched);
	tcase_add_test(tc, test_changed_while_reading);
	tcase_add_test(tc, test_unreadable_skipped);
	tcase_add_test(tc, test_chattr_flags);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
