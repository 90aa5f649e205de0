#include "engine/cn_fanout.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

/* One lane. Everything but the ring's message bytes being handled and
 * the thread's own copy is guarded by mu. */
struct lane {
	struct cn_fanout *f;
	size_t i;
	struct cn_target *t;
	pthread_mutex_t mu;
	pthread_cond_t work;   /* the lane's thread waits here for messages */
	pthread_cond_t room;   /* pushers and sync wait here: room, idle, drop */
	uint8_t *ring;         /* depth messages */
	size_t depth;          /* messages queued at most (see cn_fanout_new) */
	size_t heavy_max;      /* heavy messages held at most, 0 for no such limit */
	size_t heavy;          /* heavy messages queued or being carried out */
	int cur_heavy;         /* the one being carried out is heavy */
	uint8_t *cur;          /* the thread's copy of the message it handles */
	size_t head, len;
	int busy;              /* a call on the target is running */
	int dropped;           /* no more messages; the thread aborts the target */
	int stopping;          /* carry out what is queued, then leave */
	int retired;           /* dropped by the caller: the target is not ours */
	int64_t last_ms;       /* last progress (while there is work) */
	uint64_t seen;         /* the target's progress counter when last looked at */
	pthread_t thread;
	int started;
};

struct cn_fanout {
	struct lane *lanes;
	size_t n;
	struct cn_fanout_opts o;
	const struct cn_fanout_ops *ops;
	void *ctx;
	int stopped;
};

static int64_t now_ms(void)
{
	return cn_monotonic_ns() / 1000000;
}

static uint8_t *slot(struct lane *l, size_t k)
{
	return l->ring + ((l->head + k) % l->depth) * l->f->o.msg_size;
}

/* Whether msg counts against the lane's heavy_max. */
static int is_heavy(const struct lane *l, const void *msg)
{
	return l->heavy_max && l->f->ops->heavy && l->f->ops->heavy(l->f->ctx, msg);
}

/* Discards every queued message (mu held). */
static void discard_queue(struct lane *l)
{
	while (l->len > 0) {
		if (is_heavy(l, slot(l, 0)))
			l->heavy--;
		l->f->ops->discard(l->f->ctx, l->i, slot(l, 0));
		l->head = (l->head + 1) % l->depth;
		l->len--;
	}
}

/* Marks the lane dropped (mu held): queue discarded, everyone woken. */
static void mark_dropped(struct lane *l)
{
	l->dropped = 1;
	discard_queue(l);
	pthread_cond_broadcast(&l->work);
	pthread_cond_broadcast(&l->room);
}

static void *lane_main(void *arg)
{
	struct lane *l = arg;
	struct cn_fanout *f = l->f;
	int r = 0, report = 0;
	char msg[1024] = "";
	pthread_mutex_lock(&l->mu);
	for (;;) {
		while (!l->dropped && l->len == 0 && !l->stopping)
			pthread_cond_wait(&l->work, &l->mu);
		if (l->dropped || l->len == 0)
			break;
		memcpy(l->cur, slot(l, 0), f->o.msg_size);
		l->head = (l->head + 1) % l->depth;
		l->len--;
		l->cur_heavy = is_heavy(l, l->cur); /* (handle may change it) */
		l->busy = 1;
		l->last_ms = now_ms();
		pthread_cond_broadcast(&l->room);
		pthread_mutex_unlock(&l->mu);
		r = f->ops->handle(f->ctx, l->i, l->cur);
		if (r < 0)
			snprintf(msg, sizeof(msg), "%s",
				 *cn_error_message() ? cn_error_message() : cn_strerror(r));
		pthread_mutex_lock(&l->mu);
		l->busy = 0;
		if (l->cur_heavy)
			l->heavy--;
		l->cur_heavy = 0;
		l->last_ms = now_ms();
		pthread_cond_broadcast(&l->room);
		if (r < 0 && !l->dropped) {
			mark_dropped(l);
			report = 1;
		}
	}
	int dropped = l->dropped && !l->retired;
	pthread_mutex_unlock(&l->mu);
	if (report)
		f->ops->dropped(f->ctx, l->i, r, msg);
	/* only this thread drives the target, so it aborts it, after the
	 * call that may have been cancelled returned */
	if (dropped)
		l->t->ops->abort(l->t);
	return NULL;
}

int cn_fanout_new(struct cn_target *const *targets, size_t n, const struct cn_fanout_opts *o,
		  const struct cn_fanout_ops *ops, void *ctx, struct cn_fanout **out)
{
	if (n == 0 || o->depth == 0 || o->msg_size == 0)
		return cn_error_set(-EINVAL, "fan-out without lanes, depth or message size");
	struct cn_fanout *f = calloc(1, sizeof(*f));
	if (!f || !(f->lanes = calloc(n, sizeof(*f->lanes)))) {
		free(f);
		return cn_error_set(-ENOMEM, "out of memory for the target queues");
	}
	f->n = n;
	f->o = *o;
	f->ops = ops;
	f->ctx = ctx;
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		struct lane *l = &f->lanes[i];
		l->f = f;
		l->i = i;
		l->t = targets[i];
		/* chunks the target keeps after a call (its uploads in flight)
		 * count against what the lane may hold of them, one message at
		 * least: its heavy ones when those are limited, else all */
		unsigned held = targets[i]->held;
		if (o->heavy_max) {
			l->depth = o->depth;
			l->heavy_max = o->heavy_max > held ? o->heavy_max - held : 1;
		} else {
			l->depth = o->depth > held ? o->depth - held : 1;
		}
		pthread_mutex_init(&l->mu, NULL);
		pthread_cond_init(&l->work, NULL);
		pthread_cond_init(&l->room, NULL);
		l->ring = malloc(o->depth * o->msg_size);
		l->cur = malloc(o->msg_size);
		if (r == 0 && (!l->ring || !l->cur))
			r = cn_error_set(-ENOMEM, "out of memory for the target queues");
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		struct lane *l = &f->lanes[i];
		int e = pthread_create(&l->thread, NULL, lane_main, l);
		if (e)
			r = cn_error_sys(-e, "starting the sender thread of %s", l->t->name);
		l->started = e == 0;
	}
	if (r < 0) {
		/* nothing was queued: the lanes leave without touching targets */
		cn_fanout_stop(f, 0);
		cn_fanout_free(f);
		return r;
	}
	*out = f;
	return 0;
}

/* Drops the lane when it has work and made no progress for stall_ms (mu
 * held). Returns 1 when it did. */
static int check_stall(struct lane *l)
{
	struct cn_fanout *f = l->f;
	if (l->dropped || !f->o.stall_ms || (!l->busy && l->len == 0))
		return 0;
	int64_t now = now_ms();
	if (l->t->ops->progress) {
		uint64_t v = l->t->ops->progress(l->t);
		if (v != l->seen) {
			l->seen = v;
			l->last_ms = now;
		}
	}
	if (now - l->last_ms < (int64_t)f->o.stall_ms)
		return 0;
	mark_dropped(l);
	return 1;
}

/* After check_stall dropped lane l (mu released): unblocks its call and
 * reports the drop. */
static void stalled(struct lane *l)
{
	struct cn_fanout *f = l->f;
	char msg[160];
	if (l->t->ops->cancel)
		l->t->ops->cancel(l->t);
	snprintf(msg, sizeof(msg), "no progress for %u s (stalled)",
		 (f->o.stall_ms + 999) / 1000);
	f->ops->dropped(f->ctx, l->i, -ETIMEDOUT, msg);
}

/* Waits on l->room (mu held) for at most a quarter of the stall time, so
 * that stalls are noticed in time. */
static void wait_room(struct lane *l)
{
	unsigned tick = l->f->o.stall_ms / 4;
	if (!l->f->o.stall_ms) {
		pthread_cond_wait(&l->room, &l->mu);
		return;
	}
	tick = tick < 10 ? 10 : tick > 1000 ? 1000 : tick;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)(tick % 1000) * 1000000L;
	ts.tv_sec += tick / 1000 + ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_cond_timedwait(&l->room, &l->mu, &ts);
}

int cn_fanout_push(struct cn_fanout *f, size_t i, const void *msg)
{
	struct lane *l = &f->lanes[i];
	int stall = 0;
	pthread_mutex_lock(&l->mu);
	int heavy = is_heavy(l, msg);
	while (!l->dropped && (l->len == l->depth || (heavy && l->heavy >= l->heavy_max)) &&
	       !(stall = check_stall(l)))
		wait_room(l);
	if (l->dropped) {
		pthread_mutex_unlock(&l->mu);
		if (stall)
			stalled(l);
		return 1;
	}
	if (l->len == 0 && !l->busy)
		l->last_ms = now_ms(); /* idle until now: the stall clock starts here */
	memcpy(slot(l, l->len), msg, f->o.msg_size);
	l->len++;
	l->heavy += (size_t)heavy;
	pthread_cond_signal(&l->work);
	pthread_mutex_unlock(&l->mu);
	return 0;
}

void cn_fanout_sync(struct cn_fanout *f)
{
	for (size_t i = 0; i < f->n; i++) {
		struct lane *l = &f->lanes[i];
		int stall = 0;
		pthread_mutex_lock(&l->mu);
		while (!l->dropped && (l->busy || l->len > 0) && !(stall = check_stall(l)))
			wait_room(l);
		pthread_mutex_unlock(&l->mu);
		if (stall)
			stalled(l);
	}
}

void cn_fanout_retire(struct cn_fanout *f, size_t i)
{
	struct lane *l = &f->lanes[i];
	pthread_mutex_lock(&l->mu);
	if (!l->dropped) {
		l->retired = 1;
		mark_dropped(l);
	}
	pthread_mutex_unlock(&l->mu);
}

int cn_fanout_live(struct cn_fanout *f, size_t i)
{
	struct lane *l = &f->lanes[i];
	pthread_mutex_lock(&l->mu);
	int live = !l->dropped;
	pthread_mutex_unlock(&l->mu);
	return live;
}

void cn_fanout_stop(struct cn_fanout *f, int cancel)
{
	if (!f || f->stopped)
		return;
	f->stopped = 1;
	for (size_t i = 0; i < f->n; i++) {
		struct lane *l = &f->lanes[i];
		pthread_mutex_lock(&l->mu);
		int busy = l->busy && !l->dropped;
		if (cancel && !l->dropped)
			mark_dropped(l);
		l->stopping = 1;
		pthread_cond_broadcast(&l->work);
		pthread_mutex_unlock(&l->mu);
		if (cancel && busy && l->t->ops->cancel)
			l->t->ops->cancel(l->t);
	}
	for (size_t i = 0; i < f->n; i++)
		if (f->lanes[i].started)
			pthread_join(f->lanes[i].thread, NULL);
}

void cn_fanout_free(struct cn_fanout *f)
{
	if (!f)
		return;
	cn_fanout_stop(f, 1);
	for (size_t i = 0; i < f->n; i++) {
		struct lane *l = &f->lanes[i];
		if (l->ring)
			discard_queue(l);
		free(l->ring);
		free(l->cur);
		pthread_mutex_destroy(&l->mu);
		pthread_cond_destroy(&l->work);
		pthread_cond_destroy(&l->room);
	}
	free(f->lanes);
	free(f);
}
