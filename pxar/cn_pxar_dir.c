#include "pxar/cn_pxar_dir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

struct cn_pxar_dirlist {
	struct cn_pxar_child *v;
	size_t n;
	char *names;   /* every name with its NUL, in one block */
	size_t unreadable;
	char why[256]; /* the first unreadable child's error */
};

/* Whether rc, from the input, says its data is damaged or missing (a
 * chunk's check failed), rather than the archive malformed or the
 * source unavailable: then only the children stored there are lost. */
static int damaged(int rc)
{
	return cn_error_is_corruption(rc) && rc != -CN_E_FORMAT;
}

struct cn_pxar_range cn_pxar_root_range(uint64_t size)
{
	struct cn_pxar_range r = {UINT64_MAX, 0, size};
	return r;
}

static int cmp_name(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	if (c)
		return c;
	return al < bl ? -1 : al > bl;
}

static int cmp_child(const void *a, const void *b)
{
	const struct cn_pxar_child *x = a, *y = b;
	return cmp_name(x->name, x->name_len, y->name, y->name_len);
}

static int cmp_offset(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;
	return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorts n elements of size bytes (at most 64) at base by cmp, in place:
 * a heapsort, as qsort takes a buffer from malloc for arrays of more than
 * 1 KiB, and a listing sorts two per directory. Inlined, so that each
 * caller's element moves are of a known size. */
_Static_assert(sizeof(struct cn_pxar_child) <= 64, "sort_in_place's element buffer");

static inline __attribute__((always_inline)) void
sort_in_place(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
	uint8_t *a = base, t[64];
	for (size_t end = n, i = n / 2;;) {
		if (i > 0) {
			i--;                  /* heapify: sift a[i] down */
		} else if (end > 1) {
			end--;                /* move the largest behind the heap */
			memcpy(t, a, size);
			memcpy(a, a + end * size, size);
			memcpy(a + end * size, t, size);
		} else {
			return;
		}
		for (size_t r = i, c; (c = 2 * r + 1) < end; r = c) {
			if (c + 1 < end && cmp(a + c * size, a + (c + 1) * size) < 0)
				c++;
			if (cmp(a + r * size, a + c * size) >= 0)
				break;
			memcpy(t, a + r * size, size);
			memcpy(a + r * size, a + c * size, size);
			memcpy(a + c * size, t, size);
		}
	}
}

/* Where the goodbye table of the directory [entry, end) starts, and how
 * many items (without the tail) it has. */
static int goodbye_at(const struct cn_pxar_input *in, uint64_t entry, uint64_t end,
		      uint64_t *gpos, uint64_t *n)
{
	uint8_t tail[CN_PXAR_GOODBYE_ITEM_SIZE], hdr[CN_PXAR_HEADER_SIZE];
	if (end > in->size || end < entry + CN_PXAR_HEADER_SIZE + CN_PXAR_GOODBYE_ITEM_SIZE)
		return cn_error_set(-CN_E_FORMAT, "directory at %llu: no room for a goodbye table",
				    (unsigned long long)entry);
	int rc = in->read_at(in->ctx, end - sizeof(tail), tail, sizeof(tail));
	if (rc < 0)
		return rc;
	uint64_t size = cn_le64(tail + 16), back = cn_le64(tail + 8);
	if (cn_le64(tail) != CN_PXAR_GOODBYE_TAIL_MARKER || size > end - entry ||
	    size < CN_PXAR_HEADER_SIZE + CN_PXAR_GOODBYE_ITEM_SIZE ||
	    (size - CN_PXAR_HEADER_SIZE) % CN_PXAR_GOODBYE_ITEM_SIZE || back != end - size - entry)
		return cn_error_set(-CN_E_FORMAT, "directory at %llu: bad goodbye tail at %llu",
				    (unsigned long long)entry, (unsigned long long)(end - sizeof(tail)));
	*gpos = end - size;
	rc = in->read_at(in->ctx, *gpos, hdr, sizeof(hdr));
	if (rc < 0)
		return rc;
	if (cn_le64(hdr) != CN_PXAR_GOODBYE || cn_le64(hdr + 8) != size)
		return cn_error_set(-CN_E_FORMAT, "directory at %llu: no goodbye table at %llu",
				    (unsigned long long)entry, (unsigned long long)*gpos);
	*n = (size - CN_PXAR_HEADER_SIZE) / CN_PXAR_GOODBYE_ITEM_SIZE - 1;
	if (*n > CN_PXAR_MAX_OPEN_CHILDREN)
		return cn_error_set(-E2BIG, "directory at %llu: %llu children, more than %u",
				    (unsigned long long)entry, (unsigned long long)*n,
				    CN_PXAR_MAX_OPEN_CHILDREN);
	return 0;
}

/* Reads child i's FILENAME at fo (before gpos) into l, with size sz from
 * the table; names packed at l->names + *used. 0, 1 when the name is in
 * damaged data (the child is left out), or a negative code. */
static int read_child(const struct cn_pxar_input *in, int split, uint64_t entry, uint64_t gpos,
		      uint64_t fo, uint64_t sz, struct cn_pxar_dirlist *l, size_t *cap,
		      size_t *used)
{
	uint8_t hdr[CN_PXAR_HEADER_SIZE];
	if (fo <= entry || fo >= gpos || gpos - fo < CN_PXAR_HEADER_SIZE)
		return cn_error_set(-CN_E_FORMAT, "goodbye table at %llu: child offset out of range",
				    (unsigned long long)gpos);
	int rc = in->read_at(in->ctx, fo, hdr, sizeof(hdr));
	if (rc < 0)
		return damaged(rc) ? 1 : rc;
	uint64_t full = cn_le64(hdr + 8);
	if (cn_le64(hdr) != CN_PXAR_FILENAME || full < CN_PXAR_HEADER_SIZE + 2 ||
	    full > CN_PXAR_HEADER_SIZE + CN_PXAR_MAX_FILENAME_LEN + 1 || full > gpos - fo)
		return cn_error_set(-CN_E_FORMAT, "goodbye table at %llu: no file name at %llu",
				    (unsigned long long)gpos, (unsigned long long)fo);
	/* v2: a split file's size may count its payload too */
	if (split && sz > gpos - fo)
		sz = gpos - fo;
	if (sz <= full || sz > gpos - fo)
		return cn_error_set(-CN_E_FORMAT, "goodbye table at %llu: bad size of the child at %llu",
				    (unsigned long long)gpos, (unsigned long long)fo);
	size_t len = (size_t)(full - CN_PXAR_HEADER_SIZE);
	if (*used + len > *cap) {
		size_t nc = (*cap + len) * 2;
		char *p = realloc(l->names, nc);
		if (!p)
			return cn_error_set(-ENOMEM, "out of memory");
		l->names = p;
		*cap = nc;
	}
	char *name = l->names + *used;
	rc = in->read_at(in->ctx, fo + CN_PXAR_HEADER_SIZE, name, len);
	if (rc < 0)
		return damaged(rc) ? 1 : rc;
	if (name[len - 1] != 0 || (rc = cn_pxar_check_filename(name, len - 1)) < 0)
		return cn_error_set(-CN_E_FORMAT, "bad file name at %llu", (unsigned long long)fo);
	struct cn_pxar_child *c = &l->v[l->n++];
	c->name = (const char *)(uintptr_t)*used; /* made a pointer once names stop moving */
	c->name_len = len - 1;
	c->range.filename_offset = fo;
	c->range.entry_offset = fo + full;
	c->range.end_offset = fo + sz;
	*used += len;
	return 0;
}

int cn_pxar_dir_read(const struct cn_pxar_input *in, int split, const struct cn_pxar_range *dir,
		     struct cn_pxar_dirlist **out)
{
	*out = NULL;
	uint64_t gpos = 0, n = 0;
	int rc = goodbye_at(in, dir->entry_offset, dir->end_offset, &gpos, &n);
	if (rc < 0)
		return rc;
	struct cn_pxar_dirlist *l = calloc(1, sizeof(*l));
	/* the table, then (offset, size) of each item: one buffer */
	uint8_t *tab = malloc(n * (CN_PXAR_GOODBYE_ITEM_SIZE + 2 * sizeof(uint64_t)) + 1);
	uint64_t *items = (uint64_t *)(tab + n * CN_PXAR_GOODBYE_ITEM_SIZE);
	if (!l || !tab || !(l->v = malloc(n * sizeof(*l->v) + 1))) {
		rc = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	if (n && (rc = in->read_at(in->ctx, gpos + CN_PXAR_HEADER_SIZE, tab,
				   n * CN_PXAR_GOODBYE_ITEM_SIZE)) < 0)
		goto out;
	/* archive order: (FILENAME offset, size) sorted by offset */
	for (uint64_t i = 0; i < n; i++) {
		const uint8_t *it = tab + i * CN_PXAR_GOODBYE_ITEM_SIZE;
		uint64_t back = cn_le64(it + 8);
		items[2 * i] = back > gpos ? 0 : gpos - back;
		items[2 * i + 1] = cn_le64(it + 16);
	}
	sort_in_place(items, n, 2 * sizeof(uint64_t), cmp_offset);
	size_t cap = 16 * n, used = 0;
	if (n && !(l->names = malloc(cap))) {
		rc = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < n && rc == 0; i++) {
		if (i && items[2 * i] < items[2 * i - 2] + 1)
			rc = cn_error_set(-CN_E_FORMAT, "goodbye table at %llu: two items for one child",
					  (unsigned long long)gpos);
		else
			rc = read_child(in, split, dir->entry_offset, gpos, items[2 * i],
					items[2 * i + 1], l, &cap, &used);
		if (rc == 1) {
			if (!l->unreadable++)
				snprintf(l->why, sizeof(l->why), "%s", cn_error_message());
			rc = 0;
		}
	}
	if (rc < 0)
		goto out;
	for (size_t i = 0; i < l->n; i++)
		l->v[i].name = l->names + (uintptr_t)l->v[i].name;
	/* archive order is name order as pxar encoders write directories:
	 * sorted already, as a rule */
	int sorted = 1;
	for (size_t i = 1; i < l->n && sorted; i++)
		sorted = cmp_child(&l->v[i - 1], &l->v[i]) < 0;
	if (!sorted) {
		sort_in_place(l->v, l->n, sizeof(*l->v), cmp_child);
		for (size_t i = 1; i < l->n; i++)
			if (cmp_child(&l->v[i - 1], &l->v[i]) == 0) {
				rc = cn_error_set(-CN_E_FORMAT, "directory at %llu: name '%s' twice",
						  (unsigned long long)dir->entry_offset, l->v[i].name);
				goto out;
			}
	}
out:
	free(tab);
	if (rc < 0) {
		cn_pxar_dirlist_free(l);
		return rc;
	}
	*out = l;
	return 0;
}

size_t cn_pxar_dirlist_count(const struct cn_pxar_dirlist *l)
{
	return l->n;
}

size_t cn_pxar_dirlist_unreadable(const struct cn_pxar_dirlist *l, const char **why)
{
	if (why)
		*why = l->why;
	return l->unreadable;
}

const struct cn_pxar_child *cn_pxar_dirlist_get(const struct cn_pxar_dirlist *l, size_t i)
{
	return &l->v[i];
}

const struct cn_pxar_child *cn_pxar_dirlist_find(const struct cn_pxar_dirlist *l,
						 const char *name, size_t len)
{
	size_t lo = 0, hi = l->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = cmp_name(name, len, l->v[mid].name, l->v[mid].name_len);
		if (c == 0)
			return &l->v[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

void cn_pxar_dirlist_free(struct cn_pxar_dirlist *l)
{
	if (!l)
		return;
	free(l->v);
	free(l->names);
	free(l);
}
