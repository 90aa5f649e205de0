#include "common/cn_chunk.h"

#include <stdlib.h>

struct cn_chunk *cn_chunk_new(size_t cap)
{
	struct cn_chunk *c = malloc(sizeof(*c) + cap);
	if (!c)
		return NULL;
	atomic_init(&c->refs, 1);
	c->plain_size = 0;
	c->len = 0;
	c->cap = cap;
	c->data = c->own;
	c->release = NULL;
	c->release_ctx = NULL;
	c->release_base = NULL;
	return c;
}

struct cn_chunk *cn_chunk_new_borrowed(uint8_t *data, size_t len, uint8_t *base,
				       cn_chunk_release_fn release, void *ctx)
{
	struct cn_chunk *c = cn_chunk_new(0);
	if (!c) {
		release(ctx, base, (size_t)(data + len - base));
		return NULL;
	}
	c->len = c->cap = len;
	c->data = data;
	c->release = release;
	c->release_ctx = ctx;
	c->release_base = base;
	return c;
}

struct cn_chunk *cn_chunk_ref(struct cn_chunk *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

void cn_chunk_unref(struct cn_chunk *c)
{
	if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (c->release)
		c->release(c->release_ctx, c->release_base, (size_t)(c->data + c->len - c->release_base));
	free(c);
}
