/* cn_write_pool — see cn_write_pool.h. */
#include "engine/cn_write_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "engine/cn_workqueue.h"

#define SPARSE_BLOCK 4096u

/* Runs of data blocks are written together, up to RUN_MAX: one write per
 * block cost 0.9-1.0 s of system time restoring the 1 GiB bench corpus,
 * 64 KiB runs 0.45-0.58 s (wall 1.03 -> 0.70 s, old and new binary
 * alternating); 1 MiB writes were slower still than 4 KiB ones (2.3 s:
 * the page cache then allocates large folios, slow to fill on the virtual
 * test machine). */
#define RUN_MAX (64u << 10)

static int all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

int cn_write_sparse(int fd, const uint8_t *data, size_t n, uint64_t at, uint64_t *holes,
		    int *tail_hole)
{
	size_t run = 0; /* data blocks waiting to be written, up to RUN_MAX */
	for (size_t b = 0;;) {
		size_t bl = SPARSE_BLOCK - (size_t)((at + b) % SPARSE_BLOCK);
		if (bl > n - b)
			bl = n - b;
		int zero = bl && all_zero(data + b, bl);
		if (run && (bl == 0 || zero || run + bl > RUN_MAX)) {
			/* the run ends where block b starts */
			int rc = cn_pwrite_full(fd, data + b - run, run, at + b - run);
			if (rc < 0)
				return rc;
			run = 0;
		}
		if (bl == 0)
			return 0;
		if (zero) {
			*holes += bl;
			*tail_hole = 1;
		} else {
			run += bl;
			*tail_hole = 0;
		}
		b += bl;
	}
}

struct cn_write_file {
	struct cn_write_file *next; /* started after this one */
	struct cn_workqueue *q;     /* of the writer writing it */
	int fd;
	uint64_t size;
	void *ctx;
	atomic_int err;             /* first failed write (-errno), 0 if none */
	/* under the pool's lock: */
	size_t pending;             /* pieces queued or being written */
	uint64_t holes;
	int tail_hole;
};

struct write_job {
	struct cn_write_file *f;
	const uint8_t *data;
	size_t n;
	uint64_t at;
	void (*release)(void *, void *);
	void *rctx, *token;
};

struct cn_write_pool {
	size_t n;
	struct cn_workqueue **q;    /* one per writer */
	size_t turn;                /* the writer of the next file */
	struct cn_workers *threads;
	pthread_mutex_t lock;
	pthread_cond_t done;        /* some file's last pending piece was written */
	struct cn_write_file *head, *tail; /* started, not taken back (caller's thread only) */
	size_t out;
};

/* Records a written (or failed: rc < 0) piece of f; last: the piece ends
 * the file. */
static void piece_done(struct cn_write_pool *p, struct cn_write_file *f, int rc, uint64_t holes,
		       int tail_hole, int last)
{
	pthread_mutex_lock(&p->lock);
	int none = 0;
	if (rc < 0)
		atomic_compare_exchange_strong(&f->err, &none, rc);
	f->holes += holes;
	if (last)
		f->tail_hole = tail_hole;
	if (--f->pending == 0)
		pthread_cond_broadcast(&p->done);
	pthread_mutex_unlock(&p->lock);
}

static void *writer_main(void *ctx, size_t i)
{
	struct cn_write_pool *p = ctx;
	void *item;
	while (cn_workqueue_pop(p->q[i], &item)) {
		struct write_job *j = item;
		struct cn_write_file *f = j->f;
		uint64_t holes = 0;
		int tail = 0, rc = 0;
		if (!atomic_load(&f->err)) /* the rest of a failed file is not tried */
			rc = cn_write_sparse(f->fd, j->data, j->n, j->at, &holes, &tail);
		j->release(j->rctx, j->token);
		piece_done(p, f, rc, holes, tail, j->at + j->n == f->size);
		free(j);
	}
	return NULL;
}

int cn_write_pool_new(size_t writers, struct cn_write_pool **out)
{
	struct cn_write_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return cn_error_set(-ENOMEM, "out of memory");
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->done, NULL);
	int rc = 0;
	p->q = calloc(writers, sizeof(*p->q));
	if (!p->q)
		rc = cn_error_set(-ENOMEM, "out of memory");
	for (; rc == 0 && p->n < writers; p->n++)
		if ((rc = cn_workqueue_new(CN_WRITE_POOL_QUEUE, &p->q[p->n])) < 0)
			break;
	if (rc == 0)
		rc = cn_workers_start(writers, writer_main, p, &p->threads);
	if (rc < 0) {
		cn_write_pool_free(p, NULL);
		return rc;
	}
	*out = p;
	return 0;
}

int cn_write_pool_start(struct cn_write_pool *p, int fd, uint64_t size, void *ctx,
			struct cn_write_file **out)
{
	struct cn_write_file *f = calloc(1, sizeof(*f));
	if (!f)
		return cn_error_set(-ENOMEM, "out of memory");
	f->q = p->q[p->turn++ % p->n];
	f->fd = fd;
	f->size = size;
	f->ctx = ctx;
	if (p->tail)
		p->tail->next = f;
	else
		p->head = f;
	p->tail = f;
	p->out++;
	*out = f;
	return 0;
}

int cn_write_pool_queue(struct cn_write_pool *p, struct cn_write_file *f, const uint8_t *data,
			size_t n, uint64_t at, void (*release)(void *, void *), void *rctx,
			void *token)
{
	struct write_job *j = malloc(sizeof(*j));
	if (!j) {
		release(rctx, token);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	*j = (struct write_job){ f, data, n, at, release, rctx, token };
	pthread_mutex_lock(&p->lock);
	f->pending++;
	pthread_mutex_unlock(&p->lock);
	if (cn_workqueue_push(f->q, j) < 0) { /* only once stopping */
		release(rctx, token);
		free(j);
		piece_done(p, f, -EPIPE, 0, 0, 0);
		return cn_error_set(-EPIPE, "writer threads stopped");
	}
	return 0;
}

int cn_write_pool_error(const struct cn_write_file *f)
{
	return atomic_load(&f->err);
}

int cn_write_pool_take(struct cn_write_pool *p, size_t keep, void **ctx, int *fd,
		       struct cn_write_result *res)
{
	struct cn_write_file *f = p->head;
	if (!f)
		return 0;
	pthread_mutex_lock(&p->lock);
	while (f->pending && p->out > keep)
		pthread_cond_wait(&p->done, &p->lock);
	size_t pending = f->pending;
	pthread_mutex_unlock(&p->lock);
	if (pending)
		return 0;
	p->head = f->next;
	if (!p->head)
		p->tail = NULL;
	p->out--;
	*ctx = f->ctx;
	*fd = f->fd;
	res->err = atomic_load(&f->err);
	res->holes = f->holes;
	res->tail_hole = f->tail_hole;
	free(f);
	return 1;
}

void cn_write_pool_free(struct cn_write_pool *p, void (*drop)(void *ctx))
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n; i++)
		cn_workqueue_close(p->q[i]);
	cn_workers_join(p->threads);
	for (size_t i = 0; i < p->n; i++)
		cn_workqueue_free(p->q[i]);
	free(p->q);
	while (p->head) {
		struct cn_write_file *f = p->head;
		p->head = f->next;
		close(f->fd);
		if (drop)
			drop(f->ctx);
		free(f);
	}
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->done);
	free(p);
}
