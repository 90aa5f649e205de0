/* cn_workqueue — the pipelines' concurrency building blocks: a bounded
 * blocking FIFO of pointers (many producers, many consumers) and a small
 * group of joinable worker threads.
 *
 * A queue carries borrowed pointers: it never owns or frees its items.
 * Closing a queue lets consumers drain what is left and then see the end;
 * cancelling it wakes everyone at once, makes every later push fail and
 * every pop report the end immediately (items still queued are left for
 * cn_workqueue_drain so that their owner can release them). Together they
 * give the two ways a pipeline stops: normally (close, drain, join) and on
 * error (cancel everything, join, release leftovers).
 */
#ifndef CN_WORKQUEUE_H
#define CN_WORKQUEUE_H

#include <stddef.h>

struct cn_workqueue;

/* Allocates a queue holding at most capacity (>= 1) items. *out freed
 * with cn_workqueue_free(). 0, -EINVAL or -ENOMEM. */
int cn_workqueue_new(size_t capacity, struct cn_workqueue **out);

/* Frees the queue (not its items). No thread may still be using it. */
void cn_workqueue_free(struct cn_workqueue *q);

/* Appends item (any pointer, NULL included), blocking while the queue is
 * full. 0, or -EPIPE when the queue is closed or cancelled (the item was
 * not queued and stays the caller's). */
int cn_workqueue_push(struct cn_workqueue *q, void *item);

/* Removes the oldest item into *item, blocking while the queue is empty
 * and open. 1 = got an item, 0 = end (closed and empty, or cancelled). */
int cn_workqueue_pop(struct cn_workqueue *q, void **item);

/* No more pushes; consumers get the remaining items, then the end. */
void cn_workqueue_close(struct cn_workqueue *q);

/* Stops at once: pushes fail, pops return the end, blocked threads wake. */
void cn_workqueue_cancel(struct cn_workqueue *q);

/* Removes one leftover item without blocking (after cancel or close):
 * 1 = *item set, 0 = empty. */
int cn_workqueue_drain(struct cn_workqueue *q, void **item);

/* Number of items queued right now (a snapshot, for statistics). */
size_t cn_workqueue_length(struct cn_workqueue *q);

/* Worker threads: n threads each running fn(ctx, i) for i in [0, n). */
struct cn_workers;

/* Starts n (>= 1) threads. Returns 0, or a negative code with a message
 * when a thread could not be created; in both cases *out holds the threads
 * that did start, which the caller stops (e.g. by cancelling the queues
 * they wait on) and joins with cn_workers_join(). */
int cn_workers_start(size_t n, void *(*fn)(void *ctx, size_t i), void *ctx,
		     struct cn_workers **out);

/* Joins every started thread and frees the group. NULL is ok. */
void cn_workers_join(struct cn_workers *w);

/* The number of online CPUs (at least 1), the default pool size. */
size_t cn_cpu_count(void);

#endif
