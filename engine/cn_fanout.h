/* cn_fanout — one lane per backup target: a bounded FIFO of messages and a
 * sender thread that carries them out on that target, so that a slow
 * target slows only itself (until its queue is full) and a stalled one is
 * dropped while the others go on.
 *
 * Messages are fixed-size records (the caller's struct, copied into the
 * queue); what they mean is the caller's business (ops->handle). Every
 * lane sees its messages in the order they were pushed to it, one call at
 * a time, so a target sees its calls in the original order.
 *
 * A lane is dropped when:
 *  - a handled message fails (handle returns < 0): the lane's thread
 *    reports it;
 *  - it stalls: it has work (a call running or messages queued) and made
 *    no progress for stall_ms. Progress is a call finishing or, for a
 *    target with a progress op (cn_target.h), that counter moving (bytes
 *    on the wire while a long call runs). Stalls are noticed by whoever
 *    waits on the lane (cn_fanout_push on a full queue, cn_fanout_sync);
 *    that thread reports the drop, discards the queued messages and calls
 *    the target's cancel op (when it has one) so that the blocked call
 *    returns.
 * The lane's own thread then aborts the target (after its current call
 * returned), so that only one thread ever drives a target. ops->dropped is
 * called exactly once per dropped lane, from the thread that found the
 * failure, with that thread's message.
 *
 * Memory: a lane holds at most depth queued messages plus the one being
 * carried out; a dropped lane's queue is discarded at once. Messages that
 * hold something large (ops->heavy: chunks) can be limited apart
 * (heavy_max): then a lane holds at most that many of them, queued or
 * being carried out, while small ones (index entries, a close) still
 * queue up to depth. A target that keeps chunks after its calls return
 * (cn_target.held, e.g. uploads in flight) may hold that many fewer (one
 * at least): of its heavy messages when they are limited, else of all,
 * so that lane and target together hold no more than another lane (but
 * for that one). When all lanes are fed the same sequence, what they hold
 * at any time lies within the last depth + 1 messages pushed (per live
 * lane), or with heavy_max 1, of heavy messages the last two, whatever
 * the number of lanes.
 *
 * Threading: push and sync are called from one thread at a time (the
 * pipeline's sink, later its producer). ops callbacks run in lane threads
 * (and dropped/discard in the waiting thread) and must be thread-safe.
 * A lane stuck in a call of a target without a cancel op is dropped all
 * the same, but cn_fanout_stop waits for that call to return.
 */
#ifndef CN_FANOUT_H
#define CN_FANOUT_H

#include <stddef.h>

#include "engine/cn_target.h"

struct cn_fanout;

struct cn_fanout_ops {
	/* Carries out msg on target `lane` (in the lane's thread). Takes
	 * over what msg holds. 0, or a negative code with a message: the
	 * lane is dropped. */
	int (*handle)(void *ctx, size_t lane, void *msg);
	/* Releases what a message holds that will not be handled. */
	void (*discard)(void *ctx, size_t lane, void *msg);
	/* Lane `lane` was dropped after code with message msg. */
	void (*dropped)(void *ctx, size_t lane, int code, const char *msg);
	/* Optional: whether msg holds something large (a chunk), which
	 * counts against cn_fanout_opts.heavy_max. Any thread; must give the
	 * same answer for a message and its copies. */
	int (*heavy)(void *ctx, const void *msg);
};

struct cn_fanout_opts {
	size_t msg_size;     /* bytes of one message */
	size_t depth;        /* messages queued per lane (>= 1) */
	/* Heavy messages (ops->heavy) a lane holds at most, queued or being
	 * carried out; 0: only depth limits them. */
	size_t heavy_max;
	unsigned stall_ms;   /* no progress for this long drops a lane (0 = never) */
};

/* Creates n lanes over targets (borrowed) and starts their threads. ops
 * and ctx are borrowed for the fan-out's life. *out freed with
 * cn_fanout_free (which stops it). 0 or a negative code with a message;
 * on failure nothing is left running. */
int cn_fanout_new(struct cn_target *const *targets, size_t n, const struct cn_fanout_opts *o,
		  const struct cn_fanout_ops *ops, void *ctx, struct cn_fanout **out);

/* Queues a copy of msg on lane i, blocking while its queue is full, or
 * for a heavy message while the lane holds heavy_max of them (and
 * dropping it when it stalls meanwhile). 0 when queued; 1 when the lane
 * is dropped (msg was not taken: the caller releases it). */
int cn_fanout_push(struct cn_fanout *f, size_t i, const void *msg);

/* Waits until every lane has carried out everything queued or is
 * dropped (stalled lanes are dropped after stall_ms). */
void cn_fanout_sync(struct cn_fanout *f);

/* Takes lane i out of use without a report or an abort, for a target the
 * caller dropped (and aborted) itself; nothing may be queued on it. */
void cn_fanout_retire(struct cn_fanout *f, size_t i);

/* Whether lane i is still live. */
int cn_fanout_live(struct cn_fanout *f, size_t i);

/* Stops every lane and joins the threads. Lanes finish what is queued
 * first; with cancel set, live lanes are instead dropped without a report
 * (their queues discarded, their targets' calls cancelled and the targets
 * aborted by their threads). Idempotent. */
void cn_fanout_stop(struct cn_fanout *f, int cancel);

/* Stops (as cn_fanout_stop(f, 1) if still running) and frees. NULL ok. */
void cn_fanout_free(struct cn_fanout *f);

#endif
