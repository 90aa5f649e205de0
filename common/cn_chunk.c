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
	return c;
}

struct cn_chunk *cn_chunk_ref(struct cn_chunk *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

void cn_chunk_unref(struct cn_chunk *c)
{
	if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
		free(c);
}
