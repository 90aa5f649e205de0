/* cn_write_pool — file content written on writer threads. A caller that
 * creates files (the extractor) hands each file's pieces, bytes it
 * borrows from elsewhere (a chunk reader's cache), to a few writer
 * threads, and takes the files back, oldest first, once every piece is
 * written, to finish them (metadata, close) on its own thread.
 *
 * Each file goes to one writer, the files in turn: two threads writing
 * one file wait for each other on its inode lock. Pieces are written
 * sparse (cn_write_sparse). Bounded: a writer queues at most
 * CN_WRITE_POOL_QUEUE pieces (a caller queuing more waits), so it holds
 * at most CN_WRITE_POOL_QUEUE + 1 borrowed pieces.
 *
 * Files are started, queued to and taken back by one thread (the
 * caller's); the release callbacks run on the writer threads.
 */
#ifndef CN_WRITE_POOL_H
#define CN_WRITE_POOL_H

#include <stddef.h>
#include <stdint.h>

/* One queued piece keeps a writer busy (the next is there when a write
 * returns); each piece pins a cached chunk of the reader that lent it,
 * so more only hold memory. */
#define CN_WRITE_POOL_QUEUE 1

/* Writes the n bytes of content that belong at file offset at, in runs
 * of data blocks, leaving zero 4 KiB blocks (of the file's grid) as holes,
 * as upstream's sparse_copy: a piece that starts or ends off the grid has
 * a partial block there, left out too when zero (it reads back as zeros).
 * Adds the bytes left out to *holes; sets *tail_hole when the piece's
 * last block was left out (the file's size must then be set). 0 or
 * -errno, no message. Any thread. */
int cn_write_sparse(int fd, const uint8_t *data, size_t n, uint64_t at, uint64_t *holes,
		    int *tail_hole);

struct cn_write_pool;
struct cn_write_file;

/* What became of a file's pieces. */
struct cn_write_result {
	int err;                  /* first failed write (-errno), 0 if none */
	uint64_t holes;           /* bytes left as holes */
	int tail_hole;            /* the file's last block is a hole */
};

/* Starts writers (>= 1) threads. *out freed with cn_write_pool_free.
 * 0 or a negative code with a message. */
int cn_write_pool_new(size_t writers, struct cn_write_pool **out);

/* Starts a file of size bytes written through fd (the pool's from now:
 * closed by it unless taken back); ctx is the caller's, handed back with
 * the file. *out is valid until the file is taken back. 0 or -ENOMEM. */
int cn_write_pool_start(struct cn_write_pool *p, int fd, uint64_t size, void *ctx,
			struct cn_write_file **out);

/* Queues data[0..n), which belongs at offset at of f, waiting while f's
 * writer has CN_WRITE_POOL_QUEUE pieces queued; release(rctx, token) is
 * called once it is written, or now on failure. 0 or a negative code
 * with a message. */
int cn_write_pool_queue(struct cn_write_pool *p, struct cn_write_file *f, const uint8_t *data,
			size_t n, uint64_t at, void (*release)(void *, void *), void *rctx,
			void *token);

/* f's first failed write so far (-errno), or 0: queuing more is no use. */
int cn_write_pool_error(const struct cn_write_file *f);

/* Takes back the oldest started file once all its pieces are written,
 * waiting for that while more than keep files are out. Returns 1 with
 * its ctx, fd (now the caller's) and result, or 0 when there is none to
 * take back yet. */
int cn_write_pool_take(struct cn_write_pool *p, size_t keep, void **ctx, int *fd,
		       struct cn_write_result *res);

/* Lets the writers write what is queued and stops them; files not taken
 * back are closed and their ctx given to drop (may be NULL). NULL is ok. */
void cn_write_pool_free(struct cn_write_pool *p, void (*drop)(void *ctx));

#endif
