/* Unit test of engine/cn_fanout.h's queue length for a target that keeps
 * chunks after its calls return (cn_target.held): its lane queues that
 * many messages fewer, so that lane and target together hold no more than
 * another lane. */
#include "cn_test.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cn_fanout.h"

struct ctx {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int handling;  /* the lane's thread is in handle */
	int go;        /* handle may return */
	int handled;
};

static int handle(void *c, size_t lane, void *msg)
{
	struct ctx *x = c;
	(void)lane, (void)msg;
	pthread_mutex_lock(&x->mu);
	x->handling = 1;
	pthread_cond_broadcast(&x->cond);
	while (!x->go)
		pthread_cond_wait(&x->cond, &x->mu);
	x->handled++;
	pthread_mutex_unlock(&x->mu);
	return 0;
}

static void discard(void *c, size_t lane, void *msg)
{
	(void)c, (void)lane, (void)msg;
}

static void dropped(void *c, size_t lane, int code, const char *msg)
{
	(void)c, (void)lane, (void)code, (void)msg;
}

static const struct cn_fanout_ops ops = {handle, discard, dropped};

struct pusher {
	struct cn_fanout *f;
	struct ctx *x;
	int done, r;
};

static void *push_main(void *arg)
{
	struct pusher *p = arg;
	int m = 3;
	int r = cn_fanout_push(p->f, 0, &m);
	pthread_mutex_lock(&p->x->mu);
	p->r = r;
	p->done = 1;
	pthread_cond_broadcast(&p->x->cond);
	pthread_mutex_unlock(&p->x->mu);
	return NULL;
}

/* With depth 2 and a target that holds 1, the lane queues 1 message: while
 * the first is being handled and the second queued, a third push waits
 * until the first call returns. */
START_TEST(test_held_shortens_queue)
{
	struct ctx x = {.handling = 0};
	pthread_mutex_init(&x.mu, NULL);
	pthread_cond_init(&x.cond, NULL);
	struct cn_target tgt = {.ops = NULL, .held = 1};
	snprintf(tgt.name, sizeof(tgt.name), "held");
	struct cn_target *ts[1] = {&tgt};
	struct cn_fanout_opts o = {.msg_size = sizeof(int), .depth = 2, .stall_ms = 0};
	struct cn_fanout *f = NULL;
	ck_assert_int_eq(cn_fanout_new(ts, 1, &o, &ops, &x, &f), 0);
	int m = 1;
	ck_assert_int_eq(cn_fanout_push(f, 0, &m), 0);
	pthread_mutex_lock(&x.mu);
	while (!x.handling)
		pthread_cond_wait(&x.cond, &x.mu);
	pthread_mutex_unlock(&x.mu);
	m = 2;
	ck_assert_int_eq(cn_fanout_push(f, 0, &m), 0); /* the one queue slot */

	struct pusher p = {.f = f, .x = &x};
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, push_main, &p), 0);
	/* a queue of 2 would take the third message at once; give the pusher
	 * ample time to show that it does (it must not) */
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	pthread_mutex_lock(&x.mu);
	int e = 0;
	while (!p.done && e != ETIMEDOUT)
		e = pthread_cond_timedwait(&x.cond, &x.mu, &until);
	int early = p.done;
	x.go = 1; /* now every call returns */
	pthread_cond_broadcast(&x.cond);
	pthread_mutex_unlock(&x.mu);
	ck_assert_msg(!early, "a third message was queued beside a call and a queued one");
	pthread_join(th, NULL);
	ck_assert_int_eq(p.r, 0);
	cn_fanout_sync(f);
	ck_assert_int_eq(x.handled, 3);
	cn_fanout_stop(f, 0);
	cn_fanout_free(f);
	pthread_mutex_destroy(&x.mu);
	pthread_cond_destroy(&x.cond);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fanout_held");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_held_shortens_queue);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
