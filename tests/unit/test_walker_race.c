/* cn_walker against a tree that changes between the directory listing and
 * the open of an entry (a file replaced by a directory, symlink or FIFO and
 * back, as sync tools do; a .pxarexclude replaced likewise). Deterministic:
 * the walker's payload_boundary callback (split archives), called for the
 * first regular file "a" after its directory was listed and before any
 * later entry is opened, swaps the next entry.
 *
 * Each case must finish (the case timeout catches a walker blocked in
 * open() on a FIFO), return 0, count the changed entry as skipped, leave it
 * out, and store the entries around it intact. An entry replaced by one of
 * the same type (rename over it) is stored as it was opened: size and
 * content of the new file, not the listed size.
 *
 * A file under a write lease (Samba, NFS delegations) refuses the walker's
 * O_NONBLOCK open: it must still be read, once the holder lets go. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "engine/cn_pxar_extract.h"
#include "engine/cn_walker.h"
#include "pxar/cn_pxar_decoder.h"
#include "cn_test.h"

enum kind { K_REG, K_DIR, K_LNK, K_FIFO, K_LOOP, K_RENAMED };

/* t: listed as `from`, replaced by `to` before it is opened. With
 * in_sub, the entry is sub/.pxarexclude, which the walker reads when it
 * enters sub (it excludes "*.skip"). */
static const struct race_case {
	const char *what;
	enum kind from, to;
	int in_sub;
} cases[] = {
	{ "file -> directory", K_REG, K_DIR, 0 },
	{ "file -> fifo", K_REG, K_FIFO, 0 },
	{ "file -> symlink", K_REG, K_LNK, 0 },
	{ "directory -> file", K_DIR, K_REG, 0 },
	{ "directory -> symlink", K_DIR, K_LNK, 0 },
	{ "directory -> fifo", K_DIR, K_FIFO, 0 },
	{ "symlink -> file", K_LNK, K_REG, 0 },
	{ "fifo -> file", K_FIFO, K_REG, 0 },
	{ "file -> other file (rename)", K_REG, K_RENAMED, 0 },
	{ ".pxarexclude -> fifo", K_REG, K_FIFO, 1 },
	{ ".pxarexclude -> directory", K_REG, K_DIR, 1 },
	{ ".pxarexclude -> symlink loop", K_REG, K_LOOP, 1 },
};

static char src[PATH_MAX];

static void put(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	close(fd);
}

static void make(const char *path, enum kind k, const char *content)
{
	switch (k) {
	case K_REG:
		put(path, content);
		break;
	case K_DIR:
		ck_assert_int_eq(mkdir(path, 0755), 0);
		break;
	case K_LNK:
		ck_assert_int_eq(symlink("a", path), 0);
		break;
	case K_LOOP:
		ck_assert_int_eq(symlink(strrchr(path, '/') + 1, path), 0);
		break;
	case K_FIFO:
		ck_assert_int_eq(mkfifo(path, 0644), 0);
		break;
	case K_RENAMED: {
		char tmp[PATH_MAX + 8];
		snprintf(tmp, sizeof(tmp), "%s.new", path);
		put(tmp, "newer content");
		ck_assert_int_eq(rename(tmp, path), 0);
		break;
	}
	}
}

static void rm_tree(const char *dir)
{
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Makes src a new temporary directory holding file name (path in p). */
static void put_in_new_src(const char *name, const char *content, char *p, size_t len)
{
	const char *base = getenv("TMPDIR");
	snprintf(src, sizeof(src), "%s/cn_wrace_XXXXXX", base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(src));
	snprintf(p, len, "%s/%s", src, name);
	put(p, content);
}

/* payload_ctx of the walker: the payload stream, and the swap to do once */
struct hook {
	struct cn_buf payload;
	const struct race_case *c;
	char target[PATH_MAX + 32];
	int fired;
};

static int payload_sink(void *ctx, const uint8_t *d, size_t l)
{
	struct hook *h = ctx;
	return cn_buf_append(&h->payload, d, l);
}

static int sink(void *ctx, const uint8_t *d, size_t l)
{
	return cn_buf_append(ctx, d, l);
}

static int swap_once(void *ctx, uint64_t offset)
{
	(void)offset;
	struct hook *h = ctx;
	if (h->fired++)
		return 0;
	if (h->c->to == K_RENAMED) {
		make(h->target, K_RENAMED, NULL);
		return 0;
	}
	/* made beside the source tree, then exchanged with the target in one
	 * step: the walker's helpers may list the target's directory at any
	 * moment, and must see the old entry or the new one, never none */
	char tmp[PATH_MAX + 16];
	snprintf(tmp, sizeof(tmp), "%s.swap", src);
	if (h->c->to == K_LOOP) /* a link to its own name once exchanged */
		ck_assert_int_eq(symlink(strrchr(h->target, '/') + 1, tmp), 0);
	else
		make(tmp, h->c->to, "replaced");
	ck_assert_int_eq(renameat2(AT_FDCWD, tmp, AT_FDCWD, h->target, RENAME_EXCHANGE), 0);
	rm_tree(tmp);
	return 0;
}

/* "path kind size" per entry, one a line */
static int collect(void *ctx, const struct cn_pxar_entry *e)
{
	char line[PATH_MAX + 64];
	int n = snprintf(line, sizeof(line), "%.*s %d %llu\n", (int)e->path_len, e->path, (int)e->kind,
			 (unsigned long long)(e->kind == CN_PXAR_KIND_FILE ? e->file_size : 0));
	return cn_buf_append(ctx, line, (size_t)n) < 0 ? -ENOMEM : 0;
}

static int has_line_prefix(const char *text, const char *prefix)
{
	size_t l = strlen(prefix);
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, prefix, l))
			return 1;
	return 0;
}

START_TEST(test_entry_changes_between_listing_and_open)
{
	const struct race_case *c = &cases[_i];
	char p[PATH_MAX + 64];
	put_in_new_src("a", "first", p, sizeof(p));
	snprintf(p, sizeof(p), "%s/z", src);
	put(p, "last file");
	struct hook h = { .c = c };
	if (c->in_sub) {
		snprintf(p, sizeof(p), "%s/sub", src);
		make(p, K_DIR, NULL);
		snprintf(p, sizeof(p), "%s/sub/keep", src);
		put(p, "kept");
		snprintf(p, sizeof(p), "%s/sub/x.skip", src);
		put(p, "excluded while the .pxarexclude is readable");
		snprintf(h.target, sizeof(h.target), "%s/sub/.pxarexclude", src);
		make(h.target, K_REG, "*.skip\n");
	} else {
		snprintf(h.target, sizeof(h.target), "%s/t", src);
		make(h.target, c->from, "old");
	}

	struct cn_pxar_create_opts o = { .payload_out = payload_sink, .payload_ctx = &h,
					 .payload_boundary = swap_once };
	struct cn_pxar_create_stats st;
	struct cn_buf meta = { 0 }, list = { 0 };
	int rc = cn_pxar_create(src, &o, sink, &meta, NULL, &st);
	ck_assert_msg(rc == 0, "%s: cn_pxar_create %d: %s", c->what, rc, cn_error_message());
	ck_assert_int_eq(h.fired > 0, 1);

	struct cn_pxar_input in, pin;
	cn_pxar_input_mem(&in, meta.data, meta.len);
	cn_pxar_input_mem(&pin, h.payload.data, h.payload.len);
	ck_assert_int_eq(cn_pxar_list(&in, &pin, NULL, collect, &list), 0);
	ck_assert_int_eq(cn_buf_append(&list, "", 1), 0);
	const char *l = (const char *)list.data;

	char want[64];
	snprintf(want, sizeof(want), "a %d 5\n", CN_PXAR_KIND_FILE);
	ck_assert_msg(has_line_prefix(l, want), "%s: a missing in\n%s", c->what, l);
	snprintf(want, sizeof(want), "z %d 9\n", CN_PXAR_KIND_FILE);
	ck_assert_msg(has_line_prefix(l, want), "%s: z missing in\n%s", c->what, l);
	if (c->to == K_RENAMED) {
		/* the new file, whole: its size, not the listed one */
		ck_assert_uint_eq(st.skipped, 0);
		ck_assert_uint_eq(st.changed, 0);
		snprintf(want, sizeof(want), "t %d 13\n", CN_PXAR_KIND_FILE);
		ck_assert_msg(has_line_prefix(l, want), "%s: t of 13 bytes missing in\n%s", c->what, l);
		ck_assert_ptr_nonnull(memmem(h.payload.data, h.payload.len, "newer content", 13));
	} else if (c->in_sub) {
		/* the exclude file is ignored with a warning; the walk goes on.
		 * sub may have been listed ahead (cn_walker_list.c), before the
		 * swap: its .pxarexclude, listed as a file, is then found
		 * changed when opened and skipped as well; listed after the
		 * swap, it is archived as what it became. */
		int archived = has_line_prefix(l, "sub/.pxarexclude ");
		ck_assert_msg(st.skipped == (archived ? 1u : 2u), "%s: skipped %llu, archived %d",
			      c->what, (unsigned long long)st.skipped, archived);
		ck_assert_msg(has_line_prefix(l, "sub/keep "), "%s:\n%s", c->what, l);
	} else {
		ck_assert_msg(st.skipped == 1, "%s: skipped %llu", c->what, (unsigned long long)st.skipped);
		ck_assert_msg(!has_line_prefix(l, "t "), "%s: t archived:\n%s", c->what, l);
		ck_assert_msg(!has_line_prefix(l, "t/"), "%s: t archived:\n%s", c->what, l);
	}
	cn_buf_free(&list);
	cn_buf_free(&meta);
	cn_buf_free(&h.payload);
	rm_tree(src);
}
END_TEST

/* The lease holder: lets go once a break is under way (bounded wait). */
struct lease_holder {
	int fd;
	int broke;
};

static void *hold_lease(void *arg)
{
	struct lease_holder *h = arg;
	for (int i = 0; i < 60000 && !h->broke; i++) {
		if (fcntl(h->fd, F_GETLEASE) != F_WRLCK)
			h->broke = 1;
		else
			usleep(1000);
	}
	fcntl(h->fd, F_SETLEASE, F_UNLCK);
	return NULL;
}

START_TEST(test_leased_file_is_read_after_the_break)
{
	char p[PATH_MAX + 64];
	put_in_new_src("leased", "leased content", p, sizeof(p));
	/* the break notifies the holder (this process) with SIGIO */
	signal(SIGIO, SIG_IGN);
	struct lease_holder h = { .fd = open(p, O_RDONLY) };
	ck_assert_int_ge(h.fd, 0);
	if (fcntl(h.fd, F_SETLEASE, F_WRLCK) < 0) {
		fprintf(stderr, "no write lease on %s (%s): lease case not run\n", src, strerror(errno));
		close(h.fd);
		rm_tree(src);
		return;
	}
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, hold_lease, &h), 0);
	struct cn_pxar_create_stats st;
	struct cn_buf out = { 0 };
	int rc = cn_pxar_create(src, NULL, sink, &out, NULL, &st);
	pthread_join(th, NULL);
	close(h.fd);
	ck_assert_msg(rc == 0, "cn_pxar_create %d: %s", rc, cn_error_message());
	ck_assert_int_eq(h.broke, 1);
	ck_assert_uint_eq(st.skipped, 0);
	ck_assert_uint_eq(st.files, 1);
	ck_assert_ptr_nonnull(memmem(out.data, out.len, "leased content", 14));
	cn_buf_free(&out);
	rm_tree(src);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("walker_race");
	TCase *tc = tcase_create("changed entries");
	/* generous on a loaded machine; only a walker blocked on a FIFO
	 * gets near it */
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_entry_changes_between_listing_and_open, 0, (int)CN_ARRAY_SIZE(cases));
	tcase_add_test(tc, test_leased_file_is_read_after_the_break);
	suite_add_tcase(s, tc);
	return cn_test_run_suite(s);
}
