/* Unit tests of the backup data path on its own: the work queue and the
 * pipeline (chunker -> workers -> reorder -> fan-out) against in-memory
 * targets, one of which can be made to fail. */
#include "cn_test.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "chunker/cn_chunker.h"
#include "engine/cn_pipeline.h"
#include "engine/cn_workqueue.h"
#include "mem_target.h"
#include "store/cn_blob.h"

/* ---- work queue -------------------------------------------------------- */

struct qctx {
	struct cn_workqueue *q;
	uint64_t sum;
	pthread_mutex_t lock;
};

static void *consumer(void *ctx, size_t i)
{
	struct qctx *c = ctx;
	void *item;
	uint64_t local = 0;
	(void)i;
	while (cn_workqueue_pop(c->q, &item))
		local += (uintptr_t)item;
	pthread_mutex_lock(&c->lock);
	c->sum += local;
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

START_TEST(test_queue_many_consumers)
{
	struct qctx c = {.sum = 0};
	pthread_mutex_init(&c.lock, NULL);
	ck_assert_int_eq(cn_workqueue_new(3, &c.q), 0);
	struct cn_workers *w;
	ck_assert_int_eq(cn_workers_start(4, consumer, &c, &w), 0);
	uint64_t expect = 0;
	for (uintptr_t i = 1; i <= 10000; i++) {
		ck_assert_int_eq(cn_workqueue_push(c.q, (void *)i), 0);
		expect += i;
	}
	cn_workqueue_close(c.q);
	ck_assert_int_eq(cn_workqueue_push(c.q, (void *)1), -EPIPE);
	cn_workers_join(w);
	ck_assert_uint_eq(c.sum, expect);
	cn_workqueue_free(c.q);
	pthread_mutex_destroy(&c.lock);
}
END_TEST

static void *blocked_pusher(void *ctx, size_t i)
{
	struct qctx *c = ctx;
	(void)i;
	/* the queue is full: this blocks until cancel */
	c->sum = (uint64_t)cn_workqueue_push(c->q, (void *)7);
	return NULL;
}

START_TEST(test_queue_cancel_wakes)
{
	struct qctx c = {.sum = 1};
	ck_assert_int_eq(cn_workqueue_new(1, &c.q), 0);
	ck_assert_int_eq(cn_workqueue_push(c.q, (void *)5), 0);
	struct cn_workers *w;
	ck_assert_int_eq(cn_workers_start(1, blocked_pusher, &c, &w), 0);
	cn_workqueue_cancel(c.q);
	cn_workers_join(w);
	ck_assert_int_eq((int)(int64_t)c.sum, -EPIPE);
	void *item;
	ck_assert_int_eq(cn_workqueue_pop(c.q, &item), 0);   /* cancelled: end at once */
	ck_assert_int_eq(cn_workqueue_drain(c.q, &item), 1); /* leftover still there */
	ck_assert_ptr_eq(item, (void *)5);
	ck_assert_int_eq(cn_workqueue_drain(c.q, &item), 0);
	cn_workqueue_free(c.q);
}
END_TEST

/* ---- pipeline ---------------------------------------------------------- */

/* Deterministic test data: pseudo-random blocks with repeats (so that
 * chunks dedup) and a compressible run. */
static uint8_t *make_data(size_t len, uint32_t seed)
{
	uint8_t *d = malloc(len);
	uint32_t x = seed;
	for (size_t i = 0; i < len; i++) {
		x = x * 1664525u + 1013904223u;
		d[i] = (uint8_t)(x >> 24);
	}
	/* the second quarter repeats the first; a zero run in the third */
	memcpy(d + len / 4, d, len / 4);
	memset(d + len / 2, 0, len / 8);
	return d;
}

/* Appends len bytes to stream s through cn_pipeline_reserve and
 * cn_pipeline_commit, in pieces no larger than each reserve; every
 * third reserve is dropped by the next one (nothing committed). */
static int write_direct(struct cn_pipeline *p, int s, const uint8_t *data, size_t len, size_t *calls)
{
	while (len > 0) {
		uint8_t *buf;
		size_t avail;
		int r = cn_pipeline_reserve(p, s, &buf, &avail);
		if (r < 0)
			return r;
		ck_assert_uint_gt(avail, 0);
		if (++*calls % 3 == 0)
			continue;
		size_t n = len < avail ? len : avail;
		memcpy(buf, data, n);
		if ((r = cn_pipeline_commit(p, s, n)) < 0)
			return r;
		data += n;
		len -= n;
	}
	return 0;
}

/* Runs stream a (written in uneven pieces, through cn_pipeline_write or,
 * with direct, reserve and commit) and b (always written) into the
 * targets. */
static void run_pipeline_mode(struct mem_target **mt, size_t n, const uint8_t *a, size_t alen,
			      const uint8_t *b, size_t blen, size_t threads, int expect_ok, int direct,
			      struct cn_pipeline_stats *st)
{
	struct cn_target *ts[4];
	for (size_t i = 0; i < n; i++)
		ts[i] = &mt[i]->base;
	struct cn_pipeline *p;
	struct cn_pipeline_opts o = {.compress = CN_BLOB_COMPRESS, .threads = threads};
	ck_assert_int_eq(cn_pipeline_new(ts, n, &o, &p), 0);
	struct cn_snapshot_id id = {.type = "host", .id = "t", .time = 1700000000};
	ck_assert_int_eq(cn_pipeline_begin(p, &id), 0);
	int sa = cn_pipeline_add_stream(p, "a.pxar.didx", 64u << 10);
	int sb = cn_pipeline_add_stream(p, "catalog.pcat1.didx", 64u << 10);
	ck_assert_int_ge(sa, 0);
	ck_assert_int_ge(sb, 0);
	ck_assert_int_eq(cn_pipeline_start(p), 0);
	/* interleave uneven pieces of both streams */
	size_t ia = 0, ib = 0, step = 1, calls = 0;
	int r = 0;
	while ((ia < alen || ib < blen) && r == 0) {
		size_t na = alen - ia < step ? alen - ia : step;
		r = direct ? write_direct(p, sa, a + ia, na, &calls) : cn_pipeline_write(p, sa, a + ia, na);
		ia += na;
		size_t nb = blen - ib < step / 7 + 1 ? blen - ib : step / 7 + 1;
		if (r == 0)
			r = cn_pipeline_write(p, sb, b + ib, nb);
		ib += nb;
		step = step * 3 % 300007 + 1;
	}
	if (r == 0)
		r = cn_pipeline_end(p);
	if (expect_ok) {
		ck_assert_msg(r == 0, "pipeline failed: %s", cn_error_message());
		uint8_t csum[32];
		uint64_t size;
		cn_pipeline_stream_result(p, sa, NULL, &size, csum);
		ck_assert_uint_eq(size, alen);
		ck_assert_int_eq(cn_pipeline_put_blob(p, "index.json.blob", (const uint8_t *)"x", 1), 0);
		ck_assert_int_ge(cn_pipeline_finish(p), 1);
	} else {
		ck_assert_int_lt(r, 0);
	}
	cn_pipeline_stats(p, st);
	cn_pipeline_free(p);
}

static void run_pipeline(struct mem_target **mt, size_t n, const uint8_t *a, size_t alen,
			 const uint8_t *b, size_t blen, size_t threads, int expect_ok,
			 struct cn_pipeline_stats *st)
{
	run_pipeline_mode(mt, n, a, alen, b, blen, threads, expect_ok, 0, st);
}

START_TEST(test_pipeline_roundtrip_and_dedup)
{
	size_t alen = 6u << 20, blen = 300000;
	uint8_t *a = make_data(alen, 1), *b = make_data(blen, 2);
	struct mem_target *m = mem_target_new("mem:0");
	struct cn_pipeline_stats st;
	run_pipeline(&m, 1, a, alen, b, blen, 3, 1, &st);
	ck_assert_int_eq(m->finished, 1);
	ck_assert_int_eq(m->aborted, 0);
	mem_check_stream(m, "a.pxar.didx", a, alen);
	mem_check_stream(m, "catalog.pcat1.didx", b, blen);
	ck_assert_uint_eq(st.stream_bytes, alen + blen);
	ck_assert_uint_gt(st.chunks, 20);
	/* the repeated quarter deduplicates within the run */
	ck_assert_uint_lt(st.chunks_new, st.chunks);
	ck_assert_uint_eq(st.chunks_new, m->nchunks);
	/* the same data again into the same target: nothing new */
	struct mem_target *m2 = mem_target_new("mem:again");
	m2->chunks = m->chunks;
	m2->nchunks = m->nchunks;
	m2->capchunks = m->capchunks;
	m->chunks = NULL;
	m->nchunks = m->capchunks = 0;
	run_pipeline(&m2, 1, a, alen, b, blen, 1, 1, &st);
	ck_assert_uint_eq(st.chunks_new, 0);
	ck_assert_uint_eq(st.bytes_new, 0);
	mem_check_stream(m2, "a.pxar.didx", a, alen);
	mem_destroy(&m->base);
	mem_destroy(&m2->base);
	free(a);
	free(b);
}
END_TEST

/* The chunk ends in index file f (a .didx: entries of 40 bytes after a
 * 4096-byte header, each starting with its end offset) are those a
 * chunker of average avg finds in data[0..len) in one scan. */
static void check_boundaries(const struct cn_buf *f, const uint8_t *data, size_t len, size_t avg)
{
	struct cn_chunker *c;
	ck_assert_int_eq(cn_chunker_new(avg, &c), 0);
	size_t n = 0, at = 0;
	while (at < len) {
		size_t cut = cn_chunker_scan(c, data + at, len - at);
		ck_assert_uint_ne(cut, CN_CHUNKER_ERROR);
		at = cut ? at + cut : len;
		ck_assert_uint_ge(f->len, 4096 + 40 * (n + 1));
		uint64_t end = 0;
		for (int k = 7; k >= 0; k--)
			end = end << 8 | f->data[4096 + 40 * n + (size_t)k];
		ck_assert_uint_eq(end, at);
		n++;
	}
	ck_assert_uint_eq(f->len, 4096 + 40 * n);
	cn_chunker_free(c);
}

/* Reserve and commit cut the same chunks as write: the same index
 * entries (offsets and digests) and stream bytes, chunk boundaries inside
 * a commit included, and both where the chunker alone puts them. */
START_TEST(test_pipeline_reserve_commit_as_write)
{
	size_t alen = 6u << 20, blen = 300000;
	uint8_t *a = make_data(alen, 5), *b = make_data(blen, 6);
	struct mem_target *mw = mem_target_new("mem:write"), *md = mem_target_new("mem:direct");
	struct cn_pipeline_stats sw, sd;
	run_pipeline_mode(&mw, 1, a, alen, b, blen, 2, 1, 0, &sw);
	run_pipeline_mode(&md, 1, a, alen, b, blen, 2, 1, 1, &sd);
	mem_check_stream(md, "a.pxar.didx", a, alen);
	mem_check_stream(md, "catalog.pcat1.didx", b, blen);
	struct cn_buf *fw = mem_file(mw, "a.pxar.didx"), *fd = mem_file(md, "a.pxar.didx");
	ck_assert_ptr_nonnull(fw);
	ck_assert_ptr_nonnull(fd);
	/* past the header (uuid, time, checksum of the entries: equal
	 * entries, equal checksum) */
	ck_assert_uint_eq(fw->len, fd->len);
	ck_assert_uint_gt(fw->len, 4096 + 40 * 20);
	ck_assert_mem_eq(fw->data + 4096, fd->data + 4096, fw->len - 4096);
	check_boundaries(fw, a, alen, 64u << 10);
	ck_assert_uint_eq(sd.stream_bytes, sw.stream_bytes);
	ck_assert_uint_eq(sd.chunks, sw.chunks);
	mem_destroy(&mw->base);
	mem_destroy(&md->base);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_pipeline_failed_target_dropped)
{
	size_t alen = 3u << 20, blen = 100000;
	uint8_t *a = make_data(alen, 3), *b = make_data(blen, 4);
	struct mem_target *m[2] = {mem_target_new("mem:bad"), mem_target_new("mem:good")};
	m[0]->fail_put_at = 5;
	struct cn_pipeline_stats st;
	run_pipeline(m, 2, a, alen, b, blen, 2, 1, &st);
	ck_assert_int_eq(m[0]->aborted, 1);
	ck_assert_int_eq(m[0]->finished, 0);
	ck_assert_int_eq(m[1]->finished, 1);
	ck_assert_uint_eq(st.targets_live, 1);
	mem_check_stream(m[1], "a.pxar.didx", a, alen);
	mem_check_stream(m[1], "catalog.pcat1.didx", b, blen);
	mem_destroy(&m[0]->base);
	mem_destroy(&m[1]->base);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_pipeline_all_targets_fail)
{
	size_t alen = 3u << 20, blen = 1000;
	uint8_t *a = make_data(alen, 5), *b = make_data(blen, 6);
	struct mem_target *m = mem_target_new("mem:only");
	m->fail_put_at = 2;
	struct cn_pipeline_stats st;
	run_pipeline(&m, 1, a, alen, b, blen, 2, 0, &st);
	ck_assert_int_eq(cn_error_code(), -ENOSPC);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "injected"));
	ck_assert_int_eq(m->aborted, 1);
	ck_assert_int_eq(m->finished, 0);
	mem_destroy(&m->base);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_pipeline_empty_stream)
{
	struct mem_target *m = mem_target_new("mem:empty");
	struct cn_pipeline_stats st;
	run_pipeline(&m, 1, NULL, 0, NULL, 0, 1, 1, &st);
	struct cn_index *idx;
	struct cn_buf *f = mem_file(m, "a.pxar.didx");
	ck_assert_int_eq(cn_index_parse(f->data, f->len, &idx), 0);
	ck_assert_uint_eq(cn_index_count(idx), 0);
	cn_index_free(idx);
	mem_destroy(&m->base);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pipeline");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_queue_many_consumers);
	tcase_add_test(tc, test_queue_cancel_wakes);
	tcase_add_test(tc, test_pipeline_roundtrip_and_dedup);
	tcase_add_test(tc, test_pipeline_reserve_commit_as_write);
	tcase_add_test(tc, test_pipeline_failed_target_dropped);
	tcase_add_test(tc, test_pipeline_all_targets_fail);
	tcase_add_test(tc, test_pipeline_empty_stream);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
