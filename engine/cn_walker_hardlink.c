/* cn_walker_hardlink — which regular file with more than one link was
 * already archived, and where: a hash table of (dev, ino) → path relative
 * to the root and the offset of its entry, so later links become hardlink
 * entries pointing at the first.
 *
 * Invariants: open addressing with linear probing; the capacity is zero or
 * a power of two and at least twice the number of used slots, so a probe
 * always meets an empty slot; each used slot owns its path (freed by
 * cn_pxar_create at the end of the walk). */
#include "engine/cn_walker_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- hardlink table: open addressing on (dev, ino) ---- */

static size_t hl_hash(uint64_t dev, uint64_t ino, size_t cap)
{
	uint64_t h = (ino * 0x9E3779B97F4A7C15ULL) ^ (dev * 0xC2B2AE3D27D4EB4FULL);
	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

struct hl_slot *cn_wk_hl_find(struct walker *w, uint64_t dev, uint64_t ino)
{
	if (!w->hl_cap)
		return NULL;
	for (size_t i = hl_hash(dev, ino, w->hl_cap);; i = (i + 1) & (w->hl_cap - 1)) {
		struct hl_slot *s = &w->hl[i];
		if (!s->used)
			return NULL;
		if (s->dev == dev && s->ino == ino)
			return s;
	}
}

int cn_wk_hl_insert(struct walker *w, uint64_t dev, uint64_t ino, const char *path, uint64_t off)
{
	if ((w->hl_used + 1) * 2 > w->hl_cap) {
		size_t nc = w->hl_cap ? w->hl_cap * 2 : 64;
		struct hl_slot *n = calloc(nc, sizeof(*n));
		if (!n)
			return -ENOMEM;
		for (size_t i = 0; i < w->hl_cap; i++) {
			if (!w->hl[i].used)
				continue;
			size_t j = hl_hash(w->hl[i].dev, w->hl[i].ino, nc);
			while (n[j].used)
				j = (j + 1) & (nc - 1);
			n[j] = w->hl[i];
		}
		free(w->hl);
		w->hl = n;
		w->hl_cap = nc;
	}
	size_t i = hl_hash(dev, ino, w->hl_cap);
	while (w->hl[i].used)
		i = (i + 1) & (w->hl_cap - 1);
	char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	w->hl[i] = (struct hl_slot){ dev, ino, p, off, 1 };
	w->hl_used++;
	return 0;
}
