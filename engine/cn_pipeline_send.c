/* cn_pipeline_send — the pipeline's senders: one thread per target
 * (cn_fanout lanes) carries out, in stream order, what the sink and the
 * caller queue for it: chunks (stored unless the target has them, copied
 * from a chunk source when an injected one is missing), index entries in
 * batches, closes, blobs and the finish. A target that fails or stalls is
 * dropped here; the run goes on while another is live. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "engine/cn_pipeline_impl.h"

int cn_pl_take_out(struct cn_pipeline *p, struct tgt *t, const char *msg, int abort_it)
{
	if (!atomic_exchange(&t->live, 0))
		return 0;
	size_t l = strnlen(msg, sizeof(t->why) - 1);
	memcpy(t->why, msg, l);
	t->why[l] = '\0';
	if (abort_it)
		t->t->ops->abort(t->t);
	if (atomic_fetch_sub(&p->nlive, 1) > 1) {
		cn_log_warning("target %s failed: %s; going on without it", t->t->name, msg);
		return 1;
	}
	return 2;
}

int cn_pl_none_left(const struct cn_pipeline *p, const struct tgt *t, int code, const char *msg)
{
	if (p->ntargets == 1)
		return cn_error_set(code, "%s", msg);
	return cn_error_set(code, "no target left; the last, %s, failed: %s", t->t->name, msg);
}

/* Sends target t's pending entries of stream sidx (sender thread). */
static int flush_entries(struct cn_pipeline *p, struct tgt *t, int sidx)
{
	size_t *n = &t->npending[sidx];
	if (!*n)
		return 0;
	int r = t->t->ops->index_append(t->t, t->handles[sidx], t->pending + (size_t)sidx * APPEND_BATCH, *n);
	*n = 0;
	return r < 0 ? cn_error_prefix(r, "appending to index %s", p->streams[sidx].name) : 0;
}

/* Queues the chunk's index entry for target t, sending a full batch. */
static int append_entry(struct cn_pipeline *p, struct tgt *t, const struct msg *m)
{
	struct cn_index_entry *e = &t->pending[(size_t)m->stream * APPEND_BATCH + t->npending[m->stream]++];
	e->end_offset = m->end;
	memcpy(e->digest, m->digest, 32);
	return t->npending[m->stream] == APPEND_BATCH ? flush_entries(p, t, m->stream) : 0;
}

/* The injected chunk of m from its stream's chunk source, checked
 * (digest, size) before it is copied to a target. Sources may be read
 * from several threads at once. */
static int fetch_known(struct cn_pipeline *p, const struct msg *m, struct cn_chunk **out)
{
	struct stream *s = &p->streams[m->stream];
	struct cn_buf blob = {0};
	int r = s->chunk_src->ops->get_chunk(s->chunk_src, m->digest, &blob);
	/* the container, digest and plain size; an encrypted chunk in a run
	 * without a key cannot be checked, so it is refused */
	if (r == 0 && (r = cn_blob_verify_chunk(NULL, blob.data, blob.len, p->crypt, m->digest,
						m->n)) >= 0) {
		r = !p->crypt && r >= CN_BLOB_ENCRYPTED
			? cn_error_set(-CN_E_FORMAT, "reused chunk is encrypted, this run is not") : 0;
	}
	struct cn_chunk *c = r == 0 ? cn_chunk_new(blob.len) : NULL;
	if (r == 0 && !c)
		r = cn_error_set(-ENOMEM, "out of memory");
	if (r == 0) {
		memcpy(c->data, blob.data, blob.len);
		c->len = blob.len;
		c->plain_size = m->n;
		memcpy(c->digest, m->digest, 32);
		*out = c;
	}
	cn_buf_free(&blob);
	return r < 0 ? cn_error_prefix(r, "copying a reused chunk from %s", s->chunk_src->name) : 0;
}

/* A chunk to target t: stored unless it has it already. An injected one
 * (M_KNOWN, of a previous snapshot) was registered with add_known; a
 * target whose previous snapshot differs gets it copied from the
 * stream's chunk source, if there is one. */
static int send_chunk(struct cn_pipeline *p, struct tgt *t, const struct msg *m)
{
	int r = t->t->ops->has_chunk(t->t, m->digest);
	if (r == 0 && m->kind == M_CHUNK) {
		if ((r = t->t->ops->put_chunk(t->t, m->chunk)) == 0) {
			atomic_fetch_add(&t->chunks_new, 1);
			atomic_fetch_add(&t->bytes_new, m->chunk->plain_size);
			atomic_fetch_add(&t->bytes_new_encoded, m->chunk->len);
		}
	} else if (r == 0 && p->streams[m->stream].chunk_src) {
		struct cn_chunk *copy = NULL;
		if ((r = fetch_known(p, m, &copy)) == 0 && (r = t->t->ops->put_chunk(t->t, copy)) == 0) {
			atomic_fetch_add(&t->copied, 1);
			atomic_fetch_add(&t->bytes_new, copy->plain_size);
			atomic_fetch_add(&t->bytes_new_encoded, copy->len);
		}
		cn_chunk_unref(copy);
	} else if (r == 0) {
		/* the previous snapshot references it: removed or lost since */
		r = cn_error_set(-CN_E_MISSING,
				 "reused from the previous snapshot, but missing from %s (a "
				 "damaged store: verify finds the snapshots that need it; a "
				 "backup with --change-detection-mode data stores it again)",
				 t->t->name);
	}
	if (r < 0) {
		char hex[65];
		cn_hex_encode(m->digest, 32, hex);
		return cn_error_prefix(r, "chunk %s", hex);
	}
	return append_entry(p, t, m);
}

void cn_pl_blob_unref(struct shared_blob *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

/* cn_fanout_ops.discard: releases what a message holds. */
static void discard_msg(void *ctx, size_t lane, void *msgp)
{
	struct msg *m = msgp;
	(void)ctx;
	(void)lane;
	cn_chunk_unref(m->chunk);
	cn_pl_blob_unref(m->blob);
	m->chunk = NULL;
	m->blob = NULL;
}

/* cn_fanout_ops.handle: carries out one message on target `lane`. */
static int send_msg(void *ctx, size_t lane, void *msgp)
{
	struct cn_pipeline *p = ctx;
	struct tgt *t = &p->targets[lane];
	struct msg *m = msgp;
	int r = 0;
	switch (m->kind) {
	case M_CHUNK:
	case M_KNOWN:
		r = send_chunk(p, t, m);
		break;
	case M_CLOSE:
		if ((r = flush_entries(p, t, m->stream)) == 0 &&
		    (r = t->t->ops->index_close(t->t, t->handles[m->stream], m->n, m->end, m->digest)) < 0)
			r = cn_error_prefix(r, "closing index %s", p->streams[m->stream].name);
		break;
	case M_BLOB:
		if ((r = t->t->ops->put_blob(t->t, m->blob->name, m->blob->data, m->blob->len)) < 0)
			r = cn_error_prefix(r, "storing %s", m->blob->name);
		break;
	case M_FINISH:
		if ((r = t->t->ops->finish(t->t)) < 0)
			r = cn_error_prefix(r, "finishing the snapshot");
		else
			atomic_store(&t->finished, 1);
		break;
	}
	discard_msg(p, lane, m);
	return r;
}

/* cn_fanout_ops.dropped: target `lane` failed or stalled (its sender
 * aborts it). A warning names it while others are live; dropping the last
 * one fails the pipeline with its message. Any thread. */
static void target_dropped(void *ctx, size_t lane, int code, const char *msg)
{
	struct cn_pipeline *p = ctx;
	struct tgt *t = &p->targets[lane];
	if (cn_pl_take_out(p, t, msg, 0) == 2)
		cn_pl_fail(p, cn_pl_none_left(p, t, code, msg));
}

/* cn_fanout_ops.heavy: a message with a chunk to store. */
static int msg_heavy(void *ctx, const void *msgp)
{
	(void)ctx;
	return ((const struct msg *)msgp)->kind == M_CHUNK;
}

const struct cn_fanout_ops cn_pl_sender_ops = {
	.handle = send_msg,
	.discard = discard_msg,
	.dropped = target_dropped,
	.heavy = msg_heavy,
};

/* Queues m for every live target (a chunk or blob reference each). 0, or
 * the pipeline's error once no target is left. */
int cn_pl_queue_all(struct cn_pipeline *p, struct msg *m)
{
	for (size_t i = 0; i < p->ntargets; i++) {
		if (!atomic_load(&p->targets[i].live))
			continue;
		struct msg copy = *m;
		if (copy.chunk)
			cn_chunk_ref(copy.chunk);
		if (copy.blob)
			atomic_fetch_add(&copy.blob->refs, 1);
		if (cn_fanout_push(p->fan, i, &copy) != 0)
			discard_msg(p, i, &copy);
	}
	return atomic_load(&p->nlive) ? 0 : cn_pl_error_of(p);
}
