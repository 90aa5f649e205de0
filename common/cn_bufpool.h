/* cn_bufpool — a pool of equally sized large buffers (chunk-sized), reused
 * instead of allocated per chunk.
 *
 * A chunk-sized malloc is an mmap: every page of every chunk faulted in and
 * zeroed, then unmapped again. Reusing a few buffers keeps their pages
 * mapped. Memory stays bounded: the pool holds at most max_free buffers,
 * and of a buffer given back only the first keep bytes stay resident (the
 * pages a rare larger chunk touched beyond keep are returned to the kernel),
 * so an occasional maximum-size chunk does not pin its size in every
 * buffer for the rest of the run. A new buffer's pages come as they are
 * written: a buffer costs what its largest chunk so far touched, up to
 * keep, so one that only ever holds a small stream (a catalog) or a
 * small backup's chunks stays small. (Mapping keep bytes of every new
 * buffer at once saved no measurable time and cost a 100 KB backup
 * 24-32 MiB.)
 *
 * Buffers of 2 MiB or more are made of transparent huge pages beyond
 * their first 2 MiB, where the kernel has them (see cn_bufpool.c): such
 * a buffer is resident in whole 2 MiB pages there, and keep above 2 MiB
 * is rounded down to whole huge pages.
 *
 * Thread-safe. The pool is reference counted: every buffer out of the pool
 * holds a reference, so a buffer may be given back (by whichever thread
 * drops the last user) after the pool's creator has dropped its own. */
#ifndef CN_BUFPOOL_H
#define CN_BUFPOOL_H

#include <stddef.h>
#include <stdint.h>

struct cn_bufpool;

/* A pool of buffers of size bytes each. keep: bytes of a returned buffer
 * kept resident (rounded up to pages; above 2 MiB in a pool of buffers
 * of 2 MiB or more, down to 2 MiB multiples); max_free: buffers kept for reuse.
 * The caller holds one reference (cn_bufpool_unref). 0 or -ENOMEM/-EINVAL
 * with a message. */
int cn_bufpool_new(size_t size, size_t keep, size_t max_free, struct cn_bufpool **out);

/* The size of every buffer of the pool. */
size_t cn_bufpool_size(const struct cn_bufpool *p);

/* A buffer of cn_bufpool_size() bytes (page aligned; contents undefined),
 * reused when one is free. NULL when out of memory (message set). */
uint8_t *cn_bufpool_get(struct cn_bufpool *p);

/* Gives back a buffer from cn_bufpool_get. used: how many bytes from its
 * start were written (at most the size), so that what lies beyond keep can
 * be released. The buffer is kept for reuse or unmapped. */
void cn_bufpool_put(struct cn_bufpool *p, uint8_t *buf, size_t used);

/* Drops the creator's reference; the pool is freed when no buffer is out. */
void cn_bufpool_unref(struct cn_bufpool *p);

#endif
