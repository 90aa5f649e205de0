#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/cn_bufpool.h"
#include "common/cn_chunk.h"
#include "common/cn_error.h"
#include "common/cn_snapshot.h"
#include "common/cn_util.h"
#include "cn_test.h"

START_TEST(test_hex_roundtrip)
{
	uint8_t in[4] = {0x00, 0xab, 0x7f, 0xff}, out[4];
	char hex[9];
	cn_hex_encode(in, 4, hex);
	ck_assert_str_eq(hex, "00ab7fff");
	ck_assert_int_eq(cn_hex_decode("00AB7fff", out, 4), 0);
	ck_assert_mem_eq(in, out, 4);
	ck_assert_int_eq(cn_hex_decode("00ab7ff", out, 4), -EINVAL);
	ck_assert_int_eq(cn_hex_decode("00ab7ffg", out, 4), -EINVAL);
}
END_TEST

START_TEST(test_error_prefix)
{
	cn_error_clear();
	ck_assert_str_eq(cn_error_message(), "");
	int r = cn_error_set(-CN_E_CRC, "chunk %s", "abcd");
	ck_assert_int_eq(r, -CN_E_CRC);
	r = cn_error_prefix(r, "snapshot %d", 7);
	ck_assert_int_eq(r, -CN_E_CRC);
	ck_assert_str_eq(cn_error_message(), "snapshot 7: chunk abcd");
	ck_assert_int_eq(cn_error_code(), -CN_E_CRC);
	ck_assert_str_eq(cn_strerror(-CN_E_CRC), "CRC32 mismatch");
	ck_assert_str_eq(cn_strerror(-ENOENT), "No such file or directory");
	cn_error_clear();
	cn_error_prefix(-EIO, "reading x");
	ck_assert_str_eq(cn_error_message(), "reading x: Input/output error");
}
END_TEST

START_TEST(test_atomic_write)
{
	char dir[] = "/tmp/cn_test_XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/a/b/file", dir);
	char sub[256];
	snprintf(sub, sizeof(sub), "%s/a/b", dir);
	ck_assert_int_eq(cn_mkdir_p(sub, 0755), 0);
	ck_assert_int_eq(cn_write_file_atomic(path, "hello", 5, 0640, 1), 0);
	ck_assert_int_eq(cn_write_file_atomic(path, "bye", 3, 0600, 0), 0);
	uint8_t *data;
	size_t len;
	ck_assert_int_eq(cn_read_file(path, 100, &data, &len), 0);
	ck_assert_uint_eq(len, 3);
	ck_assert_mem_eq(data, "bye", 3);
	free(data);
	ck_assert_int_eq(cn_read_file(path, 2, &data, &len), -EFBIG);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	/* A write into a missing directory fails and leaves nothing behind. */
	snprintf(path, sizeof(path), "%s/missing/file", dir);
	ck_assert_int_lt(cn_write_file_atomic(path, "x", 1, 0600, 1), 0);
	ck_assert_int_eq(access(path, F_OK), -1);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Asks both ways (cachestat, when the kernel has it, and mincore) and
 * checks they agree; returns the answer. */
static int cached_both(int fd, size_t len)
{
	int viamincore = cn_file_cached(fd, len, CN_RESIDENCY_MINCORE);
	int viacachestat = cn_file_cached(fd, len, CN_RESIDENCY_CACHESTAT);
	ck_assert_int_ge(viamincore, 0);
	if (viacachestat != -ENOSYS)
		ck_assert_int_eq(viacachestat, viamincore);
	ck_assert_int_eq(cn_file_cached(fd, len, CN_RESIDENCY_AUTO), viamincore);
	return viamincore;
}

/* cn_file_cached: a file just written is cached; dropped from the cache
 * (clean pages, POSIX_FADV_DONTNEED) it is not, nor when only its first
 * half was read back, and asking reads nothing; read whole, it is again.
 * In the build directory, which is on a disk (tmpfs pages cannot drop). */
START_TEST(test_file_cached)
{
	char path[] = "cn_cached_XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	unlink(path);
	size_t len = (1u << 20) + 5;
	uint8_t *buf = malloc(len);
	memset(buf, 0x5a, len);
	ck_assert_int_eq(cn_write_full(fd, buf, len), 0);
	ck_assert_int_eq(fsync(fd), 0);
	ck_assert_int_eq(cached_both(fd, len), 1);
	ck_assert_int_eq(cached_both(fd, 0), 1);
	struct statfs sf;
	ck_assert_int_eq(fstatfs(fd, &sf), 0);
	if (sf.f_type == 0x01021994 /* tmpfs */ || sf.f_type == 0x858458f6 /* ramfs */) {
		fprintf(stderr, "test_file_cached: the build directory is in memory; "
				"only the cached case checked\n");
	} else {
		ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
		ck_assert_int_eq(cached_both(fd, len), 0);
		ck_assert_int_eq(cached_both(fd, len), 0); /* asking read nothing in */
		/* (no read-ahead, which would bring in the rest) */
		ck_assert_int_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
		ck_assert_int_eq(pread(fd, buf, len / 2, 0), (ssize_t)(len / 2));
		ck_assert_int_eq(cached_both(fd, len), 0);
		ck_assert_int_eq(pread(fd, buf, len, 0), (ssize_t)len);
		ck_assert_int_eq(cached_both(fd, len), 1);
	}
	free(buf);
	close(fd);
}
END_TEST

START_TEST(test_buf_and_le)
{
	struct cn_buf b = {0};
	for (int i = 0; i < 1000; i++)
		ck_assert_int_eq(cn_buf_append(&b, "abc", 3), 0);
	ck_assert_uint_eq(b.len, 3000);
	ck_assert_mem_eq(b.data + 2997, "abc", 3);
	cn_buf_free(&b);
	ck_assert_ptr_null(b.data);
	uint8_t p[8];
	cn_put_le64(p, 0x0102030405060708ull);
	ck_assert_uint_eq(p[0], 8);
	ck_assert_uint_eq(cn_le64(p), 0x0102030405060708ull);
	cn_put_le32(p, 0xdeadbeef);
	ck_assert_uint_eq(cn_le32(p), 0xdeadbeef);
}
END_TEST

START_TEST(test_snapshot_paths)
{
	struct cn_snapshot_id id = {0};
	char buf[512];
	ck_assert_int_eq(cn_snapshot_parse("host/nas-1/2020-06-26T13:56:05Z", &id), 0);
	ck_assert_str_eq(id.type, "host");
	ck_assert_str_eq(id.id, "nas-1");
	ck_assert_int_eq(id.time, 1593179765);
	ck_assert_int_eq(cn_snapshot_path(&id, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "host/nas-1/2020-06-26T13:56:05Z");
	strcpy(id.ns, "a/b");
	ck_assert_int_eq(cn_snapshot_check_ns(id.ns), 0);
	ck_assert_int_eq(cn_snapshot_path(&id, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "ns/a/ns/b/host/nas-1/2020-06-26T13:56:05Z");
	ck_assert_int_eq(cn_snapshot_group_path(&id, buf, 10), -ENAMETOOLONG);
	ck_assert_int_lt(cn_snapshot_parse("host/../2020-06-26T13:56:05Z", &id), 0);
	ck_assert_int_lt(cn_snapshot_parse("disk/x/2020-06-26T13:56:05Z", &id), 0);
	ck_assert_int_lt(cn_snapshot_parse("host/x/2020-06-26 13:56:05", &id), 0);
	ck_assert_int_lt(cn_snapshot_parse("host/x", &id), 0);
	ck_assert_int_lt(cn_snapshot_check_ns("a//b"), 0);
	ck_assert_int_lt(cn_snapshot_check_ns("a/b/"), 0);
	ck_assert_int_lt(cn_snapshot_check_ns("1/2/3/4/5/6/7/8"), 0);
	ck_assert_int_lt(cn_snapshot_check_id(".hidden"), 0);
}
END_TEST

START_TEST(test_chunk_refcount)
{
	struct cn_chunk *c = cn_chunk_new(16);
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_eq(cn_chunk_ref(c), c);
	ck_assert_int_eq(atomic_load(&c->refs), 2);
	cn_chunk_unref(c);
	ck_assert_int_eq(atomic_load(&c->refs), 1);
	cn_chunk_unref(c); /* freed; ASan would report a leak otherwise */
	cn_chunk_unref(NULL);
}
END_TEST

struct released {
	int calls;
	uint8_t *base;
	size_t used;
};

static void record_release(void *ctx, uint8_t *base, size_t used)
{
	struct released *r = ctx;
	r->calls++;
	r->base = base;
	r->used = used;
}

START_TEST(test_chunk_borrowed)
{
	uint8_t buf[100];
	struct released rel = {0};
	struct cn_chunk *c = cn_chunk_new_borrowed(buf + 10, 50, buf, record_release, &rel);
	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_eq(c->data, buf + 10);
	ck_assert_uint_eq(c->len, 50);
	cn_chunk_ref(c);
	cn_chunk_unref(c);
	ck_assert_int_eq(rel.calls, 0);
	cn_chunk_unref(c);
	ck_assert_int_eq(rel.calls, 1);
	ck_assert_ptr_eq(rel.base, buf);
	ck_assert_uint_eq(rel.used, 60);
}
END_TEST

/* Buffers are reused (LIFO), at most max_free are kept, a buffer keeps
 * its content up to keep and outlives the creator's reference. */
START_TEST(test_bufpool)
{
	struct cn_bufpool *p;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	ck_assert_int_eq(cn_bufpool_new(10 * pg + 1, 2 * pg, 2, &p), 0);
	ck_assert_uint_eq(cn_bufpool_size(p), 11 * pg);
	uint8_t *a = cn_bufpool_get(p), *b = cn_bufpool_get(p), *c = cn_bufpool_get(p);
	ck_assert(a && b && c && a != b && b != c && a != c);
	ck_assert_uint_eq((uintptr_t)a % pg, 0);
	memset(a, 0x5a, 11 * pg);
	cn_bufpool_put(p, a, 11 * pg);
	/* the tail beyond keep was released: it reads as zeros again */
	uint8_t *a2 = cn_bufpool_get(p);
	ck_assert_ptr_eq(a2, a);
	ck_assert_uint_eq(a2[2 * pg - 1], 0x5a);
	ck_assert_uint_eq(a2[2 * pg], 0);
	ck_assert_uint_eq(a2[11 * pg - 1], 0);
	cn_bufpool_put(p, a2, 0);
	cn_bufpool_put(p, b, 0);
	cn_bufpool_put(p, c, 0); /* a third free buffer is unmapped */
	uint8_t *x = cn_bufpool_get(p), *y = cn_bufpool_get(p);
	ck_assert(x == b && y == a);
	/* buffers still out keep the pool alive after its creator lets go */
	cn_bufpool_unref(p);
	x[0] = 1;
	cn_bufpool_put(p, x, 1);
	cn_bufpool_put(p, y, 0); /* the last: the pool goes (ASan: no leak) */
}
END_TEST

/* The VmFlags of the mapping that holds addr ("" when not found). */
static void vm_flags_of(const void *addr, char *out, size_t cap)
{
	out[0] = 0;
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return;
	char line[512];
	int in = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(out, cap, "%s", line + 8);
			break;
		}
	}
	fclose(f);
}

START_TEST(test_bufpool_huge)
{
	const size_t huge = 2u << 20;
	struct cn_bufpool *p;
	/* keep above one huge page: rounded down to whole ones */
	ck_assert_int_eq(cn_bufpool_new(8 * huge + 100, 2 * huge + 4096, 1, &p), 0);
	ck_assert_uint_eq(cn_bufpool_size(p), 8 * huge + 4096);
	uint8_t *a = cn_bufpool_get(p);
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq((uintptr_t)a % huge, 0);
	char flags[256];
	if (cn_test_thp_available()) {
		/* huge pages after the first 2 MiB, small ones before */
		vm_flags_of(a + huge, flags, sizeof(flags));
		ck_assert_msg(strstr(flags, " hg") != NULL, "VmFlags%s", flags);
		vm_flags_of(a, flags, sizeof(flags));
		ck_assert_msg(strstr(flags, " hg") == NULL, "VmFlags%s", flags);
	}
	memset(a, 0x5a, 8 * huge + 4096);
	cn_bufpool_put(p, a, 5 * huge + 1);
	uint8_t *a2 = cn_bufpool_get(p);
	ck_assert_ptr_eq(a2, a);
	ck_assert_uint_eq(a2[2 * huge - 1], 0x5a);
	ck_assert_uint_eq(a2[2 * huge], 0);      /* from keep, in whole huge pages */
	ck_assert_uint_eq(a2[6 * huge - 1], 0);  /* to the end of the one used ended in */
	ck_assert_uint_eq(a2[6 * huge], 0x5a);   /* beyond what the caller said it used */
	cn_bufpool_put(p, a2, 0);
	cn_bufpool_unref(p);

	/* keep below one huge page: by the page, in the small-page part */
	ck_assert_int_eq(cn_bufpool_new(2 * huge, 8192, 1, &p), 0);
	uint8_t *b = cn_bufpool_get(p);
	memset(b, 0x33, 2 * huge);
	cn_bufpool_put(p, b, huge);
	uint8_t *b2 = cn_bufpool_get(p);
	ck_assert_ptr_eq(b2, b);
	ck_assert_uint_eq(b2[8191], 0x33);
	ck_assert_uint_eq(b2[8192], 0);
	ck_assert_uint_eq(b2[huge - 1], 0);
	ck_assert_uint_eq(b2[huge], 0x33);
	cn_bufpool_put(p, b2, 0);
	cn_bufpool_unref(p);
}
END_TEST

CN_TEST_MAIN("common", "core", 0,
	     test_hex_roundtrip,
	     test_error_prefix,
	     test_atomic_write,
	     test_file_cached,
	     test_buf_and_le,
	     test_snapshot_paths,
	     test_chunk_refcount,
	     test_chunk_borrowed,
	     test_bufpool,
	     test_bufpool_huge)
