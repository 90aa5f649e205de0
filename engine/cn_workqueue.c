#include "engine/cn_workqueue.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/cn_error.h"

/* A ring of capacity slots; head is the oldest item, count the number
 * queued. Invariant: 0 <= count <= capacity. */
struct cn_workqueue {
	pthread_mutex_t lock;
	pthread_cond_t not_empty;
	pthread_cond_t not_full;
	void **items;
	size_t capacity, head, count;
	int closed, cancelled;
};

int cn_workqueue_new(size_t capacity, struct cn_workqueue **out)
{
	if (capacity == 0)
		return cn_error_set(-EINVAL, "work queue capacity must be at least 1");
	struct cn_workqueue *q = calloc(1, sizeof(*q));
	if (!q || !(q->items = calloc(capacity, sizeof(void *)))) {
		free(q);
		return cn_error_set(-ENOMEM, "out of memory for a work queue");
	}
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->not_empty, NULL);
	pthread_cond_init(&q->not_full, NULL);
	q->capacity = capacity;
	*out = q;
	return 0;
}

void cn_workqueue_free(struct cn_workqueue *q)
{
	if (!q)
		return;
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->not_empty);
	pthread_cond_destroy(&q->not_full);
	free(q->items);
	free(q);
}

int cn_workqueue_push(struct cn_workqueue *q, void *item)
{
	pthread_mutex_lock(&q->lock);
	while (q->count == q->capacity && !q->closed && !q->cancelled)
		pthread_cond_wait(&q->not_full, &q->lock);
	if (q->closed || q->cancelled) {
		pthread_mutex_unlock(&q->lock);
		return -EPIPE;
	}
	q->items[(q->head + q->count) % q->capacity] = item;
	q->count++;
	pthread_cond_signal(&q->not_empty);
	pthread_mutex_unlock(&q->lock);
	return 0;
}

static void take(struct cn_workqueue *q, void **item)
{
	*item = q->items[q->head];
	q->head = (q->head + 1) % q->capacity;
	q->count--;
	pthread_cond_signal(&q->not_full);
}

int cn_workqueue_pop(struct cn_workqueue *q, void **item)
{
	pthread_mutex_lock(&q->lock);
	while (q->count == 0 && !q->closed && !q->cancelled)
		pthread_cond_wait(&q->not_empty, &q->lock);
	int got = 0;
	if (!q->cancelled && q->count > 0) {
		take(q, item);
		got = 1;
	}
	pthread_mutex_unlock(&q->lock);
	return got;
}

int cn_workqueue_drain(struct cn_workqueue *q, void **item)
{
	pthread_mutex_lock(&q->lock);
	int got = 0;
	if (q->count > 0) {
		take(q, item);
		got = 1;
	}
	pthread_mutex_unlock(&q->lock);
	return got;
}

static void set_flag(struct cn_workqueue *q, int *flag)
{
	pthread_mutex_lock(&q->lock);
	*flag = 1;
	pthread_cond_broadcast(&q->not_empty);
	pthread_cond_broadcast(&q->not_full);
	pthread_mutex_unlock(&q->lock);
}

void cn_workqueue_close(struct cn_workqueue *q)
{
	set_flag(q, &q->closed);
}

void cn_workqueue_cancel(struct cn_workqueue *q)
{
	set_flag(q, &q->cancelled);
}

size_t cn_workqueue_length(struct cn_workqueue *q)
{
	pthread_mutex_lock(&q->lock);
	size_t n = q->count;
	pthread_mutex_unlock(&q->lock);
	return n;
}

struct worker_arg {
	void *(*fn)(void *ctx, size_t i);
	void *ctx;
	size_t i;
};

struct cn_workers {
	size_t n;
	pthread_t *threads;
	struct worker_arg *args;
};

static void *trampoline(void *p)
{
	struct worker_arg *a = p;
	return a->fn(a->ctx, a->i);
}

int cn_workers_start(size_t n, void *(*fn)(void *ctx, size_t i), void *ctx,
		     struct cn_workers **out)
{
	struct cn_workers *w = calloc(1, sizeof(*w));
	if (w) {
		w->threads = calloc(n ? n : 1, sizeof(pthread_t));
		w->args = calloc(n ? n : 1, sizeof(struct worker_arg));
	}
	if (!w || !w->threads || !w->args) {
		if (w) {
			free(w->threads);
			free(w->args);
		}
		free(w);
		*out = NULL;
		return cn_error_set(-ENOMEM, "out of memory for worker threads");
	}
	*out = w;
	for (size_t i = 0; i < n; i++) {
		w->args[i] = (struct worker_arg){fn, ctx, i};
		int r = pthread_create(&w->threads[i], NULL, trampoline, &w->args[i]);
		if (r)
			return cn_error_sys(-r, "starting worker thread %zu of %zu", i + 1, n);
		w->n++;
	}
	return 0;
}

void cn_workers_join(struct cn_workers *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++)
		pthread_join(w->threads[i], NULL);
	free(w->threads);
	free(w->args);
	free(w);
}

size_t cn_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (size_t)n : 1;
}
