#include "common/cn_bufpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

/* Transparent huge pages: a buffer of at least one is mapped at a
 * huge-page boundary, released in whole huge pages, and marked for them
 * beyond its first (cn_mark_huge_tail), so that the kernel fills it 2 MiB
 * per fault instead of 4 KiB, also the tail beyond keep that every large
 * chunk faults in again. */

struct cn_bufpool {
	pthread_mutex_t lock;
	size_t size, keep, max_free;
	size_t map_size; /* size, whole huge pages when huge */
	int huge;        /* buffers of at least one huge page */
	size_t refs;     /* the creator's (while held) + one per buffer out */
	size_t nfree;
	uint8_t **free;  /* max_free slots, LIFO: the most recently used first */
};

static size_t page_round_up(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	return (n + pg - 1) / pg * pg;
}

int cn_bufpool_new(size_t size, size_t keep, size_t max_free, struct cn_bufpool **out)
{
	if (size == 0)
		return cn_error_set(-EINVAL, "buffer pool of empty buffers");
	struct cn_bufpool *p = calloc(1, sizeof(*p));
	if (!p || !(p->free = calloc(max_free ? max_free : 1, sizeof(*p->free)))) {
		free(p);
		return cn_error_set(-ENOMEM, "out of memory for a buffer pool");
	}
	pthread_mutex_init(&p->lock, NULL);
	p->size = page_round_up(size);
	p->keep = page_round_up(keep);
	p->map_size = p->size;
	p->huge = p->size >= CN_HUGE_PAGE;
	if (p->huge) {
		/* released whole: of a huge page kept in part, the rest would
		 * split it into small pages again (the first is in small
		 * pages: kept by the page) */
		p->map_size = cn_huge_round_up(p->size);
		if (p->keep > CN_HUGE_PAGE)
			p->keep &= ~(CN_HUGE_PAGE - 1);
	}
	p->max_free = max_free;
	p->refs = 1;
	*out = p;
	return 0;
}

size_t cn_bufpool_size(const struct cn_bufpool *p)
{
	return p->size;
}

static void pool_free(struct cn_bufpool *p)
{
	for (size_t i = 0; i < p->nfree; i++)
		munmap(p->free[i], p->map_size);
	pthread_mutex_destroy(&p->lock);
	free(p->free);
	free(p);
}

uint8_t *cn_bufpool_get(struct cn_bufpool *p)
{
	uint8_t *b = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->nfree)
		b = p->free[--p->nfree];
	p->refs++;
	pthread_mutex_unlock(&p->lock);
	if (b)
		return b;
	/* mmap directly: page aligned, and the tail can be released with
	 * madvise whatever malloc would have done; a huge one at a huge-page
	 * boundary (mapped one huge page larger, the excess unmapped) */
	size_t extra = p->huge ? CN_HUGE_PAGE : 0;
	uint8_t *m = mmap(NULL, p->map_size + extra, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED) {
		if (!extra)
			return m;
		uint8_t *a = (uint8_t *)(((uintptr_t)m + CN_HUGE_PAGE - 1) & ~(uintptr_t)(CN_HUGE_PAGE - 1));
		if (a > m)
			munmap(m, (size_t)(a - m));
		if (m + extra > a)
			munmap(a + p->map_size, (size_t)(m + extra - a));
		cn_mark_huge_tail(a, p->map_size);
		return a;
	}
	cn_error_set(-ENOMEM, "out of memory for a %zu-byte buffer", p->map_size);
	cn_bufpool_unref(p); /* the reference taken for it */
	return NULL;
}

void cn_bufpool_put(struct cn_bufpool *p, uint8_t *buf, size_t used)
{
	if (!buf)
		return;
	int keep_it;
	pthread_mutex_lock(&p->lock);
	keep_it = p->nfree < p->max_free && p->refs > 1;
	pthread_mutex_unlock(&p->lock);
	if (!keep_it) {
		munmap(buf, p->map_size);
	} else {
		used = page_round_up(used < p->size ? used : p->size);
		if (p->huge && used > CN_HUGE_PAGE) /* the huge page the data ended in, whole */
			used = cn_huge_round_up(used);
		if (used > p->keep)
			madvise(buf + p->keep, used - p->keep, MADV_DONTNEED);
		pthread_mutex_lock(&p->lock);
		if (p->nfree < p->max_free)
			p->free[p->nfree++] = buf, buf = NULL;
		pthread_mutex_unlock(&p->lock);
		if (buf)
			munmap(buf, p->map_size);
	}
	cn_bufpool_unref(p);
}

void cn_bufpool_unref(struct cn_bufpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	size_t left = --p->refs;
	pthread_mutex_unlock(&p->lock);
	if (left == 0)
		pool_free(p);
}
