/* Unit test of engine/cn_fanout.h's bounds on what a lane holds: a
 * target that keeps chunks after its calls return (cn_target.held) gets a
 * queue that many messages shorter, so that lane and target together hold
 * no more than another lane; with heavy_max, a lane holds at most that
 * many heavy messages while light ones still queue beside them. */
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

/* messages >= 100 are heavy */
static int heavy(void *c, const void *msg)
{
	(void)c;
	return *(const int *)msg >= 100;
}

static const struct cn_fanout_ops ops = {handle, discard, dropped, NULL};
static const struct cn_fanout_ops heavy_ops = {handle, discard, dropped, heavy};

struct pusher {
	struct cn_fanout *f;
	struct ctx *x;
	int msg;
	int done, r;
};

static void *push_main(void *arg)
{
	struct pusher *p = arg;
	int m = p->msg;
	int r = cn_fanout_push(p->f, 0, &m);
	pthread_mutex_lock(&p->x->mu);
	p->r = r;
	p->done = 1;
	pthread_cond_broadcast(&p->x->cond);
	pthread_mutex_unlock(&p->x->mu);
	return NULL;
}

/* Pushes msg from another thread while the lane's call is held in
 * handle: 1 when the push waited (did not return within 1 s, ample for a
 * push that does not wait); then lets every call return and joins. */
static int push_waits(struct cn_fanout *f, struct ctx *x, int msg)
{
	struct pusher p = {.f = f, .x = x, .msg = msg};
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, push_main, &p), 0);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;
	pthread_mutex_lock(&x->mu);
	int e = 0;
	while (!p.done && e != ETIMEDOUT)
		e = pthread_cond_timedwait(&x->cond, &x->mu, &until);
	int early = p.done;
	x->go = 1; /* now every call returns */
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->mu);
	pthread_join(th, NULL);
	ck_assert_int_eq(p.r, 0);
	return !early;
}

/* One lane over a target holding `held`, its first message (first) in
 * handle, held there until x.go. */
struct fixture {
	struct ctx x;
	struct cn_target tgt;
	struct cn_fanout *f;
};

static void fixture_start(struct fixture *fx, unsigned held, const struct cn_fanout_opts *o,
			  const struct cn_fanout_ops *fops, int first)
{
	memset(fx, 0, sizeof(*fx));
	pthread_mutex_init(&fx->x.mu, NULL);
	pthread_cond_init(&fx->x.cond, NULL);
	fx->tgt.held = held;
	snprintf(fx->tgt.name, sizeof(fx->tgt.name), "held %u", held);
	struct cn_target *ts[1] = {&fx->tgt};
	ck_assert_int_eq(cn_fanout_new(ts, 1, o, fops, &fx->x, &fx->f), 0);
	ck_assert_int_eq(cn_fanout_push(fx->f, 0, &first), 0);
	pthread_mutex_lock(&fx->x.mu);
	while (!fx->x.handling)
		pthread_cond_wait(&fx->x.cond, &fx->x.mu);
	pthread_mutex_unlock(&fx->x.mu);
}

/* Pushes msg, which must be taken at once (the call is still held). */
static void push_now(struct fixture *fx, int msg)
{
	ck_assert_int_eq(cn_fanout_push(fx->f, 0, &msg), 0);
}

/* Lets every call return, waits for all and checks how many were made. */
static void fixture_finish(struct fixture *fx, int handled)
{
	pthread_mutex_lock(&fx->x.mu);
	fx->x.go = 1;
	pthread_cond_broadcast(&fx->x.cond);
	pthread_mutex_unlock(&fx->x.mu);
	cn_fanout_sync(fx->f);
	ck_assert_int_eq(fx->x.handled, handled);
	cn_fanout_stop(fx->f, 0);
	cn_fanout_free(fx->f);
	pthread_mutex_destroy(&fx->x.mu);
	pthread_cond_destroy(&fx->x.cond);
}

/* With depth 2 and a target that holds 1, the lane queues 1 message: while
 * the first is being handled and the second queued, a third push waits
 * until the first call returns. */
START_TEST(test_held_shortens_queue)
{
	struct fixture fx;
	struct cn_fanout_opts o = {.msg_size = sizeof(int), .depth = 2};
	fixture_start(&fx, 1, &o, &ops, 1);
	push_now(&fx, 2); /* the one queue slot */
	/* a queue of 2 would take the third message at once (it must not) */
	ck_assert_msg(push_waits(fx.f, &fx.x, 3),
		      "a third message was queued beside a call and a queued one");
	fixture_finish(&fx, 3);
}
END_TEST

/* With heavy_max 1: while a heavy message is being handled, light ones
 * queue beside it, a second heavy one waits until the call returns. */
START_TEST(test_heavy_one_at_a_time)
{
	struct fixture fx;
	struct cn_fanout_opts o = {.msg_size = sizeof(int), .depth = 4, .heavy_max = 1};
	fixture_start(&fx, 0, &o, &heavy_ops, 100);
	for (int m = 1; m <= 3; m++) /* light: queued at once */
		push_now(&fx, m);
	ck_assert_msg(push_waits(fx.f, &fx.x, 101), "a second heavy message was queued beside one");
	fixture_finish(&fx, 5);
}
END_TEST

/* The same lane without heavy_max queues the second heavy one. */
START_TEST(test_heavy_unlimited_without_max)
{
	struct fixture fx;
	struct cn_fanout_opts o = {.msg_size = sizeof(int), .depth = 4};
	fixture_start(&fx, 0, &o, &heavy_ops, 100);
	push_now(&fx, 101);
	fixture_finish(&fx, 2);
}
END_TEST

/* A target that holds one after its calls gets heavy_max less that, one
 * at least: with heavy_max 2 and held 1, a second heavy message waits. */
START_TEST(test_held_counts_against_heavy)
{
	struct fixture fx;
	struct cn_fanout_opts o = {.msg_size = sizeof(int), .depth = 4, .heavy_max = 2};
	fixture_start(&fx, 1, &o, &heavy_ops, 100);
	push_now(&fx, 1);
	ck_assert_msg(push_waits(fx.f, &fx.x, 101), "a held target's lane took a second heavy message");
	fixture_finish(&fx, 3);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fanout_held");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_held_shortens_queue);
	tcase_add_test(tc, test_heavy_one_at_a_time);
	tcase_add_test(tc, test_heavy_unlimited_without_max);
	tcase_add_test(tc, test_held_counts_against_heavy);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
