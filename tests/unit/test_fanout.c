/* Unit tests of the per-target senders (engine/cn_fanout.h) through the
 * pipeline: a target that hangs in put_chunk is dropped after the stall
 * timeout while the others get everything in order and finish; a slow
 * target, or one in a long call that shows progress, is not dropped. */
#include "cn_test.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/cn_fanout.h"
#include "engine/cn_pipeline.h"
#include "mem_target.h"
#include "store/cn_blob.h"

#define STALL_MS 1000

/* A memory target with one of three behaviours in put_chunk. */
enum mode { NORMAL, HANG, SLOW, LONG_CALL };

struct test_target {
	struct mem_target m;  /* first: the ops of mem_target.h apply */
	enum mode mode;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int cancelled;
	atomic_uint_fast64_t progress;
};

static struct cn_target_ops test_ops;

static int test_put(struct cn_target *t, struct cn_chunk *c)
{
	struct test_target *tt = (struct test_target *)t;
	int nth = tt->m.puts + 1;
	if (tt->mode == HANG && nth == 3) {
		/* hangs (bounded, so that a broken pipeline fails the test
		 * instead of blocking it) until cancelled */
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 40;
		pthread_mutex_lock(&tt->mu);
		while (!tt->cancelled &&
		       pthread_cond_timedwait(&tt->cond, &tt->mu, &until) == 0)
			;
		int cancelled = tt->cancelled;
		pthread_mutex_unlock(&tt->mu);
		if (cancelled)
			return cn_error_set(-ECANCELED, "%s: cancelled", t->name);
	} else if (tt->mode == SLOW) {
		usleep(20000);
	} else if (tt->mode == LONG_CALL && nth == 2) {
		/* a call 2.5 times the stall timeout, but with bytes moving */
		for (int i = 0; i < 50; i++) {
			usleep(STALL_MS * 1000 / 20);
			atomic_fetch_add(&tt->progress, 1);
		}
	}
	return mem_put(t, c);
}

static void test_cancel(struct cn_target *t)
{
	struct test_target *tt = (struct test_target *)t;
	pthread_mutex_lock(&tt->mu);
	tt->cancelled = 1;
	pthread_cond_broadcast(&tt->cond);
	pthread_mutex_unlock(&tt->mu);
}

static uint64_t test_progress(struct cn_target *t)
{
	return atomic_load(&((struct test_target *)t)->progress);
}

static struct test_target *test_target_new(const char *name, enum mode mode)
{
	struct test_target *tt = calloc(1, sizeof(*tt));
	test_ops = mem_ops;
	test_ops.put_chunk = test_put;
	test_ops.cancel = test_cancel;
	test_ops.progress = test_progress;
	tt->m.base.ops = &test_ops;
	snprintf(tt->m.base.name, sizeof(tt->m.base.name), "%s", name);
	tt->mode = mode;
	pthread_mutex_init(&tt->mu, NULL);
	pthread_cond_init(&tt->cond, NULL);
	return tt;
}

static void test_target_free(struct test_target *tt)
{
	pthread_mutex_destroy(&tt->mu);
	pthread_cond_destroy(&tt->cond);
	mem_destroy(&tt->m.base); /* frees tt: m is its first member */
}

static uint8_t *make_data(size_t len, uint32_t seed)
{
	uint8_t *d = malloc(len);
	uint32_t x = seed;
	for (size_t i = 0; i < len; i++) {
		x = x * 1664525u + 1013904223u;
		d[i] = (uint8_t)(x >> 24);
	}
	return d;
}

static double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Backs up len bytes of data to the targets; returns what finish said. */
static int run(struct test_target **tt, size_t n, const uint8_t *data, size_t len,
	       struct cn_pipeline_stats *st)
{
	struct cn_target *ts[4];
	for (size_t i = 0; i < n; i++)
		ts[i] = &tt[i]->m.base;
	struct cn_pipeline *p;
	struct cn_pipeline_opts o = {.compress = CN_BLOB_COMPRESS, .threads = 2,
				     .stall_timeout_ms = STALL_MS};
	ck_assert_int_eq(cn_pipeline_new(ts, n, &o, &p), 0);
	struct cn_snapshot_id id = {.type = "host", .id = "t", .time = 1700000000};
	ck_assert_int_eq(cn_pipeline_begin(p, &id), 0);
	int s = cn_pipeline_add_stream(p, "a.pxar.didx", 64u << 10);
	ck_assert_int_ge(s, 0);
	ck_assert_int_eq(cn_pipeline_start(p), 0);
	for (size_t off = 0; off < len; off += 100000) {
		size_t k = len - off < 100000 ? len - off : 100000;
		ck_assert_int_eq(cn_pipeline_write(p, s, data + off, k), 0);
	}
	ck_assert_msg(cn_pipeline_end(p) == 0, "end: %s", cn_error_message());
	ck_assert_int_eq(cn_pipeline_put_blob(p, "index.json.blob", (const uint8_t *)"{}", 2), 0);
	int r = cn_pipeline_finish(p);
	cn_pipeline_stats(p, st);
	cn_pipeline_free(p);
	return r;
}

START_TEST(test_hung_target_dropped_others_finish)
{
	size_t len = 4u << 20;
	uint8_t *data = make_data(len, 7);
	struct test_target *tt[3] = {
		test_target_new("mem:hung", HANG),
		test_target_new("mem:good", NORMAL),
		test_target_new("mem:slow", SLOW),
	};
	struct cn_pipeline_stats st;
	double t0 = now_sec();
	int r = run(tt, 3, data, len, &st);
	double took = now_sec() - t0;
	ck_assert_int_eq(r, 2);
	ck_assert_uint_eq(st.targets_live, 2);
	/* dropped and aborted by its sender after its call was cancelled */
	ck_assert_int_eq(tt[0]->cancelled, 1);
	ck_assert_int_eq(tt[0]->m.aborted, 1);
	ck_assert_int_eq(tt[0]->m.finished, 0);
	for (int i = 1; i < 3; i++) {
		ck_assert_int_eq(tt[i]->m.finished, 1);
		ck_assert_int_eq(tt[i]->m.aborted, 0);
		mem_check_stream(&tt[i]->m, "a.pxar.didx", data, len);
		ck_assert_ptr_nonnull(mem_file(&tt[i]->m, "index.json.blob"));
	}
	ck_assert_uint_gt(st.chunks, 30);
	/* the hang lasts 40 s unless cancelled; the stall timeout is 1 s */
	ck_assert_msg(took < 30, "took %.1f s", took);
	for (int i = 0; i < 3; i++)
		test_target_free(tt[i]);
	free(data);
}
END_TEST

START_TEST(test_long_call_with_progress_kept)
{
	size_t len = 2u << 20;
	uint8_t *data = make_data(len, 8);
	struct test_target *tt[2] = {
		test_target_new("mem:long", LONG_CALL),
		test_target_new("mem:good", NORMAL),
	};
	struct cn_pipeline_stats st;
	ck_assert_int_eq(run(tt, 2, data, len, &st), 2);
	ck_assert_uint_eq(st.targets_live, 2);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(tt[i]->m.finished, 1);
		ck_assert_int_eq(tt[i]->m.aborted, 0);
		mem_check_stream(&tt[i]->m, "a.pxar.didx", data, len);
		ck_assert_ptr_nonnull(mem_file(&tt[i]->m, "index.json.blob"));
		test_target_free(tt[i]);
	}
	ck_assert_uint_eq(st.chunks_new, st.chunks);
	free(data);
}
END_TEST

int main(void)
{
	(void)mem_target_new; /* mem_target.h's, not needed here */
	Suite *s = suite_create("fanout");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_hung_target_dropped_others_finish);
	tcase_add_test(tc, test_long_call_with_progress_kept);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
