/* cn_walker_list — directory listings of the walk, and the helper threads
 * that list the next directories while the walker encodes the current one.
 *
 * A no-change run in metadata mode opens no unchanged file: of its walker's
 * time, a third went to the stat of each listed entry, on one core while
 * the other waited. The walker now asks, as it enters a directory, for the
 * listings of the next CN_WK_PREFETCH_AHEAD directories beside it
 * (cn_wk_prefetch_submit); CN_WK_PREFETCH_THREADS helper threads make them,
 * and the walker takes each when it gets there (cn_wk_prefetch_take) or
 * lists the directory itself when no helper has started on it. The deepest request is served first,
 * then of those the first in the walk's order: the walk descends before it
 * moves on, so the first subdirectory of the directory just entered is
 * needed before the siblings asked for earlier.
 *
 * A listing is what one lstat per name said when it was made, whoever made
 * it; the walker opens each entry later and archives what it opened (the
 * listing only decides what is looked at). The helper opens the directory
 * by its name in the parent (its own duplicate of the walker's descriptor:
 * one component, no symlink followed) and keeps the listing only when it
 * is the directory the walker listed, by device and inode; a listing made
 * more than PF_MAX_AGE_NS before it is taken is made again. */
#include "engine/cn_walker_impl.h"
#include "common/cn_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- listing ---- */

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct list_entry *)a)->name, ((const struct list_entry *)b)->name);
}

void cn_wk_listing_free(struct cn_wk_listing *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->e[i].name);
	free(l->e);
	l->e = NULL;
	l->n = 0;
}

int cn_wk_list_dir(int dirfd, size_t max, struct cn_wk_listing *out, enum cn_wk_list_fail *what,
		   size_t *at)
{
	out->e = NULL;
	out->n = 0;
	*what = CN_WK_LIST_OPEN;
	int dfd = dup(dirfd);
	if (dfd < 0)
		return -errno;
	DIR *d = fdopendir(dfd);
	if (!d) {
		int e = errno;
		close(dfd);
		return -e;
	}
	/* the duplicate shares dirfd's position */
	rewinddir(d);
	struct list_entry *l = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno) {
				*what = CN_WK_LIST_READ;
				rc = -errno;
			}
			break;
		}
		const char *name = de->d_name;
		if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
			continue;
		if (max && n == max) {
			*what = CN_WK_LIST_LARGE;
			rc = -E2BIG;
			break;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 32;
			struct list_entry *p = realloc(l, nc * sizeof(*p));
			if (!p) {
				*what = CN_WK_LIST_MEM;
				rc = -ENOMEM;
				break;
			}
			l = p;
			cap = nc;
		}
		size_t nl = strlen(name);
		if (!(l[n].name = malloc(nl + 1))) {
			*what = CN_WK_LIST_MEM;
			rc = -ENOMEM;
			break;
		}
		memcpy(l[n].name, name, nl + 1);
		l[n].name_len = nl;
		if (fstatat(dirfd, name, &l[n].st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) {
				*what = CN_WK_LIST_STAT;
				*at = n;
				rc = -errno;
				n++;
				break;
			}
			/* vanished since readdir */
			memset(&l[n].st, 0, sizeof(l[n].st));
		}
		n++;
	}
	closedir(d);
	out->e = l;
	out->n = n;
	if (rc < 0) {
		if (*what != CN_WK_LIST_STAT) {
			cn_wk_listing_free(out);
		}
		return rc;
	}
	cn_wk_sort_n(l, n, sizeof(*l), cmp_entry);
	return 0;
}

/* ---- the helper ---- */

/* Requests waiting, being listed or done at once: CN_WK_PREFETCH_AHEAD
 * per level of the walk at most (the directories after the one entered,
 * or the first ones of a directory just listed); a walk deeper than
 * PF_SLOTS / CN_WK_PREFETCH_AHEAD lists its deepest levels itself. */
#define PF_SLOTS 32
/* A listing older than this when taken is made again (s). */
#define PF_MAX_AGE_NS 1000000000ll
/* A helper gives up on a directory with more entries than this, which the
 * walk then lists itself: what is listed ahead stays within a few MB
 * (about 180 bytes an entry) however large the directories beside the
 * walk's. */
#define PF_MAX_ENTRIES 8192

enum pf_state { PF_FREE, PF_QUEUED, PF_RUNNING, PF_DONE, PF_FAILED };

struct pf_req {
	enum pf_state state;
	int abandoned;           /* RUNNING and no longer wanted */
	size_t depth, idx;       /* served deepest first, then lowest idx */
	dev_t dev;
	ino_t ino;
	int parent;              /* the helper's duplicate, closed when listed */
	char name[256];
	struct cn_wk_listing listing;
	int64_t made_ns;         /* CLOCK_MONOTONIC when listed */
};

struct cn_wk_prefetch {
	pthread_mutex_t lock;
	pthread_cond_t work;     /* a request was queued, or stop */
	pthread_cond_t done;     /* a request finished */
	pthread_t thread[CN_WK_PREFETCH_THREADS];
	size_t n_threads;
	int stop;
	struct pf_req req[PF_SLOTS];
};

/* Lists r (without the lock): 0, or -1 when the helper could not, or the
 * directory is not the one asked for. */
static int pf_list(struct pf_req *r)
{
	int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	int fd = openat(r->parent, r->name, flags | O_NOATIME);
	if (fd < 0 && errno == EPERM)
		fd = openat(r->parent, r->name, flags);
	close(r->parent);
	r->parent = -1;
	if (fd < 0)
		return -1;
	struct stat st;
	enum cn_wk_list_fail what;
	size_t at;
	int rc = -1;
	if (fstat(fd, &st) == 0 && st.st_dev == r->dev && st.st_ino == r->ino &&
	    cn_wk_list_dir(fd, PF_MAX_ENTRIES, &r->listing, &what, &at) == 0)
		rc = 0;
	else
		cn_wk_listing_free(&r->listing);
	close(fd);
	r->made_ns = cn_monotonic_ns();
	return rc;
}

static void *pf_main(void *arg)
{
	struct cn_wk_prefetch *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct pf_req *r = NULL;
		for (size_t i = 0; i < PF_SLOTS; i++) {
			struct pf_req *q = &p->req[i];
			if (q->state == PF_QUEUED &&
			    (!r || q->depth > r->depth || (q->depth == r->depth && q->idx < r->idx)))
				r = q;
		}
		if (p->stop)
			break;
		if (!r) {
			pthread_cond_wait(&p->work, &p->lock);
			continue;
		}
		r->state = PF_RUNNING;
		pthread_mutex_unlock(&p->lock);
		int rc = pf_list(r);
		pthread_mutex_lock(&p->lock);
		if (r->abandoned) {
			cn_wk_listing_free(&r->listing);
			r->abandoned = 0;
			r->state = PF_FREE;
		} else {
			r->state = rc == 0 ? PF_DONE : PF_FAILED;
		}
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int cn_wk_prefetch_new(struct cn_wk_prefetch **out)
{
	struct cn_wk_prefetch *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	for (size_t i = 0; i < PF_SLOTS; i++)
		p->req[i].parent = -1;
	int e = 0;
	while (p->n_threads < CN_WK_PREFETCH_THREADS &&
	       !(e = pthread_create(&p->thread[p->n_threads], NULL, pf_main, p)))
		p->n_threads++;
	if (!p->n_threads) {
		pthread_cond_destroy(&p->done);
		pthread_cond_destroy(&p->work);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return -e;
	}
	*out = p;
	return 0;
}

/* Frees what r holds and makes it FREE, or marks it abandoned while the
 * helper lists it (the helper frees it then). Lock held. */
static void pf_release(struct pf_req *r)
{
	if (r->state == PF_RUNNING) {
		r->abandoned = 1;
		return;
	}
	if (r->parent >= 0)
		close(r->parent);
	r->parent = -1;
	cn_wk_listing_free(&r->listing);
	r->state = PF_FREE;
}

void cn_wk_prefetch_free(struct cn_wk_prefetch *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < p->n_threads; i++)
		pthread_join(p->thread[i], NULL);
	for (size_t i = 0; i < PF_SLOTS; i++) {
		p->req[i].abandoned = 0;
		if (p->req[i].state == PF_RUNNING)
			p->req[i].state = PF_FAILED;
		pf_release(&p->req[i]);
	}
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

/* The live (not abandoned) request for (dev, ino), or NULL. Lock held. */
static struct pf_req *pf_find(struct cn_wk_prefetch *p, dev_t dev, ino_t ino)
{
	for (size_t i = 0; i < PF_SLOTS; i++) {
		struct pf_req *r = &p->req[i];
		if (r->state != PF_FREE && !r->abandoned && r->dev == dev && r->ino == ino)
			return r;
	}
	return NULL;
}

void cn_wk_prefetch_submit(struct cn_wk_prefetch *p, int parent, const char *name,
			   const struct stat *st, size_t depth, size_t idx)
{
	size_t nl = strlen(name);
	if (!p || nl >= sizeof(p->req[0].name))
		return;
	pthread_mutex_lock(&p->lock);
	struct pf_req *r = pf_find(p, st->st_dev, st->st_ino);
	if (!r) {
		for (size_t i = 0; i < PF_SLOTS && !r; i++)
			if (p->req[i].state == PF_FREE)
				r = &p->req[i];
		if (r && (r->parent = fcntl(parent, F_DUPFD_CLOEXEC, 0)) >= 0) {
			memcpy(r->name, name, nl + 1);
			r->dev = st->st_dev;
			r->ino = st->st_ino;
			r->depth = depth;
			r->idx = idx;
			r->state = PF_QUEUED;
			pthread_cond_signal(&p->work);
		}
	}
	pthread_mutex_unlock(&p->lock);
}

int cn_wk_prefetch_take(struct cn_wk_prefetch *p, const struct stat *st,
			struct cn_wk_listing *out)
{
	if (!p)
		return 0;
	pthread_mutex_lock(&p->lock);
	struct pf_req *r = pf_find(p, st->st_dev, st->st_ino);
	while (r && r->state == PF_RUNNING)
		pthread_cond_wait(&p->done, &p->lock);
	int got = r && r->state == PF_DONE && cn_monotonic_ns() - r->made_ns <= PF_MAX_AGE_NS;
	if (got) {
		*out = r->listing;
		r->listing.e = NULL;
		r->listing.n = 0;
	}
	if (r)
		pf_release(r);
	pthread_mutex_unlock(&p->lock);
	return got;
}

void cn_wk_prefetch_wait_idle(struct cn_wk_prefetch *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		int busy = 0;
		for (size_t i = 0; i < PF_SLOTS && !busy; i++)
			busy = p->req[i].state == PF_QUEUED || p->req[i].state == PF_RUNNING;
		if (!busy)
			break;
		pthread_cond_wait(&p->done, &p->lock);
	}
	pthread_mutex_unlock(&p->lock);
}

void cn_wk_prefetch_drop(struct cn_wk_prefetch *p, const struct stat *st)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	struct pf_req *r = pf_find(p, st->st_dev, st->st_ino);
	if (r)
		pf_release(r);
	pthread_mutex_unlock(&p->lock);
}
