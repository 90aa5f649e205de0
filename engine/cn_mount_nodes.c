#include "engine/cn_mount_nodes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POOL_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define POOL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POOL_POISON(p, n) ((void)(p), (void)(n))
#define POOL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define BUCKETS_MIN 1024u
/* Node memory (see struct node_pool): blocks of this size, and nodes up
 * to this size (with their names) from the pool, larger ones from malloc. */
#define POOL_BLOCK ((size_t)2 << 20)
#define POOL_MAX 512u
#define POOL_STEP 16u

/* Where nodes live. A first walk makes one node per entry, in bursts (a
 * listing makes one per child), and in a VM each fresh page of memory
 * costs a page fault of several microseconds, more than the rest of a
 * node's making. So memory comes from the kernel POOL_BLOCK bytes at a
 * time, as a huge page where it has them (MADV_HUGEPAGE), filled in one
 * call (MADV_POPULATE_WRITE): one fault instead of 512. Freed nodes go
 * to a free list per size (POOL_STEP steps) and are reused; blocks are
 * returned when the table is freed. */
struct node_pool {
	void **blocks;
	size_t nblocks, blocks_cap;
	uint8_t *next;                /* unused rest of the newest block */
	size_t left;
	void *free[POOL_MAX / POOL_STEP + 1];
};

struct cn_mnode_table {
	struct cn_mnode **buckets;    /* nbuckets * sizeof(void *) from big_alloc */
	size_t nbuckets, nnodes;
	struct node_pool pool;
};

/* ---- node memory -------------------------------------------------------- */

/* len bytes of zeroed memory straight from the kernel, faulted in at
 * once (as huge pages where the kernel has them); NULL when out of
 * memory. Freed with big_free(p, len). */
static void *big_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	if (len >= POOL_BLOCK)
		(void)madvise(p, len, MADV_HUGEPAGE);
#endif
#ifdef MADV_POPULATE_WRITE
	(void)madvise(p, len, MADV_POPULATE_WRITE); /* (Linux 5.14 on) */
#endif
	return p;
}

static void big_free(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

/* Size class of a node of len bytes (with its name). */
static size_t pool_class(size_t len)
{
	return (len + POOL_STEP - 1) / POOL_STEP;
}

/* A zeroed node of len bytes with pooled set, or NULL. */
static struct cn_mnode *pool_get(struct node_pool *p, size_t len)
{
	struct cn_mnode *n;
	if (len > POOL_MAX)
		return calloc(1, len);
	size_t k = pool_class(len), sz = k * POOL_STEP;
	if (p->free[k]) {
		n = p->free[k];
		POOL_UNPOISON(n, sz);
		p->free[k] = *(void **)n;
	} else {
		if (p->left < sz) {
			if (p->nblocks == p->blocks_cap) {
				size_t nc = p->blocks_cap ? 2 * p->blocks_cap : 16;
				void **b = realloc(p->blocks, nc * sizeof(*b));
				if (!b)
					return NULL;
				p->blocks = b;
				p->blocks_cap = nc;
			}
			uint8_t *blk = big_alloc(POOL_BLOCK);
			if (!blk)
				return NULL;
			p->blocks[p->nblocks++] = blk;
			p->next = blk;
			p->left = POOL_BLOCK;
			POOL_POISON(blk, POOL_BLOCK);
		}
		n = (struct cn_mnode *)p->next;
		POOL_UNPOISON(n, sz);
		p->next += sz;
		p->left -= sz;
	}
	memset(n, 0, sz);
	n->pooled = 1;
	return n;
}

static void pool_put(struct node_pool *p, struct cn_mnode *n)
{
	if (!n->pooled) {
		free(n);
		return;
	}
	size_t k = pool_class(sizeof(*n) + strlen(n->name) + 1);
	*(void **)n = p->free[k];
	p->free[k] = n;
	/* (a use after FORGET is caught by ASan as with malloc) */
	POOL_POISON((uint8_t *)n + sizeof(void *), k * POOL_STEP - sizeof(void *));
}

static void pool_free(struct node_pool *p)
{
	for (size_t i = 0; i < p->nblocks; i++) {
		POOL_UNPOISON(p->blocks[i], POOL_BLOCK);
		big_free(p->blocks[i], POOL_BLOCK);
	}
	free(p->blocks);
	memset(p, 0, sizeof(*p));
}

/* ---- inode table ------------------------------------------------------- */

/* Inode numbers are archive offsets, and a listing makes the nodes of
 * neighbouring entries one after the other: within a window of nbuckets
 * 64-byte steps they get neighbouring buckets (a listing stays in a few
 * cache lines of the table instead of one line per entry), and the
 * windows are scattered (multiplicative hash of the window's number) so
 * that no stride through the archive piles entries into one chain. */
static size_t bucket_of(const struct cn_mnode_table *t, uint64_t ino)
{
	uint64_t k = ino >> 6;
	size_t bits = (size_t)__builtin_ctzll(t->nbuckets);
	return (size_t)(k + (k >> bits) * 0x9e3779b97f4a7c15ULL) & (t->nbuckets - 1);
}

int cn_mnode_table_new(struct cn_mnode_table **out)
{
	struct cn_mnode_table *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->nbuckets = BUCKETS_MIN;
	if (!(t->buckets = big_alloc(t->nbuckets * sizeof(*t->buckets)))) {
		free(t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

struct cn_mnode *cn_mnode_get(const struct cn_mnode_table *t, uint64_t ino)
{
	for (struct cn_mnode *n = t->buckets[bucket_of(t, ino)]; n; n = n->next)
		if (n->ino == ino)
			return n;
	return NULL;
}

struct cn_mnode *cn_mnode_new(struct cn_mnode_table *t, const char *name)
{
	size_t nl = strlen(name);
	struct cn_mnode *n = pool_get(&t->pool, sizeof(*n) + nl + 1);
	if (n)
		memcpy(n->name, name, nl + 1);
	return n;
}

void cn_mnode_discard(struct cn_mnode_table *t, struct cn_mnode *n)
{
	cn_pxar_dirlist_free(n->children);
	pool_put(&t->pool, n);
}

int cn_mnode_insert(struct cn_mnode_table *t, struct cn_mnode *n)
{
	if (t->nnodes + 1 > t->nbuckets) {
		size_t nb = t->nbuckets * 2;
		struct cn_mnode **b = big_alloc(nb * sizeof(*b));
		if (!b)
			return -ENOMEM;
		struct cn_mnode **old = t->buckets;
		size_t on = t->nbuckets;
		t->buckets = b;
		t->nbuckets = nb;
		for (size_t i = 0; i < on; i++)
			for (struct cn_mnode *x = old[i], *nx; x; x = nx) {
				nx = x->next;
				size_t k = bucket_of(t, x->ino);
				x->next = b[k];
				b[k] = x;
			}
		big_free(old, on * sizeof(*old));
	}
	size_t k = bucket_of(t, n->ino);
	n->next = t->buckets[k];
	t->buckets[k] = n;
	t->nnodes++;
	return 0;
}

void cn_mnode_remove(struct cn_mnode_table *t, struct cn_mnode *n)
{
	for (struct cn_mnode **p = &t->buckets[bucket_of(t, n->ino)]; *p; p = &(*p)->next)
		if (*p == n) {
			*p = n->next;
			t->nnodes--;
			cn_mnode_discard(t, n);
			return;
		}
}

void cn_mnode_table_free(struct cn_mnode_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nbuckets; i++)
		for (struct cn_mnode *n = t->buckets[i], *nx; n; n = nx) {
			nx = n->next;
			cn_mnode_discard(t, n);
		}
	big_free(t->buckets, t->nbuckets * sizeof(*t->buckets));
	pool_free(&t->pool);
	free(t);
}
