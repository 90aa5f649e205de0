/* cn_write_pool: sparse writes (holes, a hole at the end, off-grid
 * pieces), files handed back in the order they were started with what
 * became of their pieces, every borrowed piece released once, a failed
 * write reported, and files never taken back closed and dropped when the
 * pool is freed. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cn_util.h"
#include "engine/cn_write_pool.h"
#include "cn_test.h"

static char dir[] = "/tmp/cn-write-pool-XXXXXX";

static int open_new(const char *name, int flags)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, flags | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	return fd;
}

/* Removes the test directory and what the test made in it. */
static void cleanup(const char *const *names)
{
	char p[256];
	for (; *names; names++) {
		snprintf(p, sizeof(p), "%s/%s", dir, *names);
		unlink(p);
	}
	rmdir(dir);
}

static atomic_int released;

static void release(void *ctx, void *token)
{
	ck_assert_ptr_eq(ctx, &released);
	ck_assert_ptr_nonnull(token);
	atomic_fetch_add(&released, 1);
}

/* Queues d[0..n) to f in pieces of piece bytes, each released to
 * released; returns the number of pieces. */
static int queue_all(struct cn_write_pool *p, struct cn_write_file *f, const uint8_t *d, size_t n,
		     size_t piece)
{
	int pieces = 0;
	for (size_t at = 0; at < n; at += piece, pieces++) {
		size_t len = n - at < piece ? n - at : piece;
		ck_assert_int_eq(cn_write_pool_queue(p, f, d + at, len, at, release, &released,
						     (void *)(d + at)), 0);
	}
	return pieces;
}

/* 64 KiB of data, 64 KiB of zeros, 10000 bytes of data, 8192 zeros. */
static uint8_t *pattern(size_t *n)
{
	*n = (64u << 10) * 2 + 10000 + 8192;
	uint8_t *d = calloc(1, *n);
	for (size_t i = 0; i < (64u << 10); i++)
		d[i] = (uint8_t)(i * 31 + 7);
	for (size_t i = 0; i < 10000; i++)
		d[(128u << 10) + i] = (uint8_t)(i * 17 + 1);
	return d;
}

static void check_content(int fd, const uint8_t *want, size_t n)
{
	uint8_t *got = malloc(n);
	struct stat st;
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(st.st_size, (off_t)n);
	ck_assert_int_eq(pread(fd, got, n, 0), (ssize_t)n);
	ck_assert_mem_eq(got, want, n);
	free(got);
}

START_TEST(test_sparse)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	size_t n;
	uint8_t *d = pattern(&n);
	int fd = open_new("s", O_RDWR);
	uint64_t holes = 0;
	int tail = 0;
	ck_assert_int_eq(cn_write_sparse(fd, d, n, 0, &holes, &tail), 0);
	/* the zero 64 KiB, then after the data's last (partly zero) block one
	 * whole zero block and the partial one at the end */
	ck_assert_uint_eq(holes, (64u << 10) + 4096 + (n % 4096));
	ck_assert(tail);
	ck_assert_int_eq(ftruncate(fd, (off_t)n), 0);
	check_content(fd, d, n);
	/* off the grid: a piece at 1000 whose first partial block is data */
	holes = 0;
	ck_assert_int_eq(cn_write_sparse(fd, d, 5000, 1000, &holes, &tail), 0);
	ck_assert_uint_eq(holes, 0);
	ck_assert(!tail);
	close(fd);
	free(d);
	cleanup((const char *const[]){ "s", NULL });
}
END_TEST

START_TEST(test_order_and_results)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	size_t n;
	uint8_t *d = pattern(&n);
	struct cn_write_pool *p;
	ck_assert_int_eq(cn_write_pool_new(2, &p), 0);
	atomic_store(&released, 0);
	int fds[3];
	int tags[3] = { 0, 1, 2 };
	int pieces = 0;
	for (int i = 0; i < 3; i++) {
		char name[16];
		snprintf(name, sizeof(name), "f%d", i);
		fds[i] = open_new(name, O_RDWR);
		struct cn_write_file *f;
		ck_assert_int_eq(cn_write_pool_start(p, fds[i], n, &tags[i], &f), 0);
		pieces += queue_all(p, f, d, n, 7000); /* out of any alignment */
	}
	for (int i = 0; i < 3; i++) {
		void *ctx;
		int fd;
		struct cn_write_result res;
		ck_assert_int_eq(cn_write_pool_take(p, 0, &ctx, &fd, &res), 1);
		ck_assert_ptr_eq(ctx, &tags[i]); /* oldest first */
		ck_assert_int_eq(fd, fds[i]);
		ck_assert_int_eq(res.err, 0);
		ck_assert(res.tail_hole);
		ck_assert_uint_ge(res.holes, 64u << 10);
		ck_assert_int_eq(ftruncate(fd, (off_t)n), 0);
		check_content(fd, d, n);
		close(fd);
	}
	void *ctx;
	int fd;
	struct cn_write_result res;
	ck_assert_int_eq(cn_write_pool_take(p, 0, &ctx, &fd, &res), 0);
	ck_assert_int_eq(atomic_load(&released), pieces);
	cn_write_pool_free(p, NULL);
	free(d);
	cleanup((const char *const[]){ "f0", "f1", "f2", NULL });
}
END_TEST

static int dropped;

static void drop(void *ctx)
{
	ck_assert_ptr_nonnull(ctx);
	dropped++;
}

START_TEST(test_failure_and_drop)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	size_t n;
	uint8_t *d = pattern(&n);
	struct cn_write_pool *p;
	ck_assert_int_eq(cn_write_pool_new(1, &p), 0);
	atomic_store(&released, 0);
	/* a descriptor that cannot write: the file's error is the first
	 * failure, and every piece is still released */
	int ro = open_new("ro", O_RDONLY);
	struct cn_write_file *f;
	int tag = 7;
	ck_assert_int_eq(cn_write_pool_start(p, ro, n, &tag, &f), 0);
	int pieces = queue_all(p, f, d, n, 50000);
	void *ctx;
	int fd;
	struct cn_write_result res;
	ck_assert_int_eq(cn_write_pool_take(p, 0, &ctx, &fd, &res), 1);
	ck_assert_int_eq(res.err, -EBADF);
	ck_assert_int_eq(atomic_load(&released), pieces);
	close(fd);
	/* started and never taken back: closed and dropped by free */
	int w = open_new("w", O_RDWR);
	ck_assert_int_eq(cn_write_pool_start(p, w, n, &tag, &f), 0);
	ck_assert_int_eq(cn_write_pool_queue(p, f, d, n, 0, release, &released, d), 0);
	cn_write_pool_free(p, drop);
	ck_assert_int_eq(dropped, 1);
	ck_assert_int_eq(atomic_load(&released), pieces + 1);
	ck_assert_int_eq(fcntl(w, F_GETFD), -1); /* closed */
	free(d);
	cleanup((const char *const[]){ "ro", "w", NULL });
}
END_TEST

CN_TEST_MAIN("write_pool", "core", 0,
	     test_sparse,
	     test_order_and_results,
	     test_failure_and_drop)
