#include "common/cn_digest_set.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_util.h"

/* Slots hold a digest and a state byte; used[] marks occupied slots so that
 * the all-zero digest is a valid member. cap is a power of two. */
struct cn_digest_set {
	uint8_t (*keys)[32];
	uint8_t *values;
	uint8_t *used;
	size_t cap;
	size_t count;
};

static size_t slot_of(const struct cn_digest_set *s, const uint8_t digest[32])
{
	return (size_t)cn_le64(digest) & (s->cap - 1);
}

/* Index of digest's slot, or of the free slot where it would go. */
static size_t find(const struct cn_digest_set *s, const uint8_t digest[32])
{
	size_t i = slot_of(s, digest);
	while (s->used[i] && memcmp(s->keys[i], digest, 32) != 0)
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int alloc_table(struct cn_digest_set *s, size_t cap)
{
	s->keys = malloc(cap * 32);
	s->values = malloc(cap);
	s->used = calloc(cap, 1);
	if (!s->keys || !s->values || !s->used) {
		free(s->keys);
		free(s->values);
		free(s->used);
		return -ENOMEM;
	}
	s->cap = cap;
	return 0;
}

static int grow(struct cn_digest_set *s)
{
	struct cn_digest_set old = *s;
	if (alloc_table(s, old.cap * 2) < 0) {
		*s = old;
		return -ENOMEM;
	}
	for (size_t i = 0; i < old.cap; i++) {
		if (!old.used[i])
			continue;
		size_t j = find(s, old.keys[i]);
		memcpy(s->keys[j], old.keys[i], 32);
		s->values[j] = old.values[i];
		s->used[j] = 1;
	}
	free(old.keys);
	free(old.values);
	free(old.used);
	return 0;
}

int cn_digest_set_new(size_t expected, struct cn_digest_set **out)
{
	struct cn_digest_set *s = calloc(1, sizeof(*s));
	size_t cap = 64;
	if (!s)
		return -ENOMEM;
	while (cap / 4 * 3 <= expected)
		cap *= 2;
	if (alloc_table(s, cap) < 0) {
		free(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

void cn_digest_set_free(struct cn_digest_set *s)
{
	if (!s)
		return;
	free(s->keys);
	free(s->values);
	free(s->used);
	free(s);
}

int cn_digest_set_add(struct cn_digest_set *s, const uint8_t digest[32], uint8_t value)
{
	size_t i = find(s, digest);
	if (s->used[i])
		return 0;
	if ((s->count + 1) * 4 > s->cap * 3) {
		if (grow(s) < 0)
			return -ENOMEM;
		i = find(s, digest);
	}
	memcpy(s->keys[i], digest, 32);
	s->values[i] = value;
	s->used[i] = 1;
	s->count++;
	return 1;
}

int cn_digest_set_get(const struct cn_digest_set *s, const uint8_t digest[32], uint8_t *value)
{
	size_t i = find(s, digest);
	if (!s->used[i])
		return 0;
	if (value)
		*value = s->values[i];
	return 1;
}

int cn_digest_set_update(struct cn_digest_set *s, const uint8_t digest[32], uint8_t value)
{
	size_t i = find(s, digest);
	if (!s->used[i])
		return 0;
	s->values[i] = value;
	return 1;
}

size_t cn_digest_set_count(const struct cn_digest_set *s)
{
	return s->count;
}
