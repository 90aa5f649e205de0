/* A cn_pxar_input over memory that lends its bytes (view_at) in short
 * pieces of varying, unaligned lengths, as a restore's chunk reader lends
 * cached chunks, and counts the views it has out: they may be released
 * on the extractor's writer threads. Header-only, for the unit tests. */
#ifndef CN_TEST_LENDING_INPUT_H
#define CN_TEST_LENDING_INPUT_H

#include "cn_test.h"
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "pxar/cn_pxar_decoder.h"

struct lending {
	const uint8_t *data;
	size_t len;
	atomic_int out;
	int max_out, views;       /* (view_at runs on the extractor thread) */
};

static inline int lend_read(void *ctx, uint64_t off, void *buf, size_t len)
{
	struct lending *l = ctx;
	memcpy(buf, l->data + off, len);
	return 0;
}

static inline int lend_view(void *ctx, uint64_t off, size_t len, const uint8_t **data,
			    size_t *got, void **token)
{
	struct lending *l = ctx;
	size_t piece = 1000 + (size_t)(off % 3001); /* never on the 4 KiB grid for long */
	*data = l->data + off;
	*got = len < piece ? len : piece;
	*token = (void *)(uintptr_t)(off + 1);
	l->views++;
	int out = atomic_fetch_add(&l->out, 1) + 1;
	if (out > l->max_out)
		l->max_out = out;
	return 0;
}

static inline void lend_release(void *ctx, void *token)
{
	struct lending *l = ctx;
	ck_assert_ptr_nonnull(token);
	atomic_fetch_sub(&l->out, 1);
}

/* Sets up l and in over data[0..len). */
static inline void lending_input(struct lending *l, struct cn_pxar_input *in, const void *data,
				 size_t len)
{
	memset(l, 0, sizeof(*l));
	l->data = data;
	l->len = len;
	memset(in, 0, sizeof(*in));
	in->read_at = lend_read;
	in->size = len;
	in->ctx = l;
	in->view_at = lend_view;
	in->release = lend_release;
}

#endif
