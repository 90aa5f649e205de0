/* cn_extract_file — the regular files of an extraction (cn_pxar_extract):
 * where their content goes (in place, or beside a file it replaces, and
 * removed when it cannot be restored whole) and how it is written (inline,
 * or on writer threads and finished in order). Shares the extractor's
 * state through cn_pxar_extract_impl.h. */
#include "engine/cn_pxar_extract_impl.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- file content ---------------------------------------------------------------- */

/* The next piece of the current FILE entry's content, at off: lent by
 * the input (returns 1; released through the input when done) or read
 * into buf of cap bytes (returns 0). *data, *n: the piece. Or a negative
 * code. */
int cn_xt_content_piece(struct cn_pxar_decoder *d, const struct cn_pxar_entry *e, uint64_t off,
			uint8_t *buf, size_t cap, const uint8_t **data, size_t *n, void **token)
{
	uint64_t left = e->file_size - off;
	int rc = cn_pxar_decoder_view(d, off, left < SIZE_MAX ? (size_t)left : SIZE_MAX, data, n,
				      token);
	if (rc != 0)
		return rc;
	*n = left < cap ? (size_t)left : cap;
	*data = buf;
	rc = cn_pxar_decoder_read(d, off, buf, *n);
	return rc < 0 ? rc : 0;
}

/* ---- where a file's content goes -------------------------------------------------
 *
 * A file whose content cannot be restored (a damaged or missing chunk, a
 * failed write) is left out: what was written of it is removed, so that
 * no file of the archive's name holds partial content. A file that
 * replaces an existing one (overwrite) is written under a temporary name
 * beside it and renamed over it once complete, so that a failure leaves
 * the existing file as it was. */
struct placing {
	int dirfd;                /* the parent directory (dup'd when kept) */
	char *name;               /* the archive's name in it */
	char *tmp;                /* the name written, when replacing; else NULL */
};

static void place_free(struct placing *pl)
{
	if (pl->dirfd >= 0)
		close(pl->dirfd);
	free(pl->name);
	free(pl->tmp);
	pl->dirfd = -1;
	pl->name = pl->tmp = NULL;
}

/* Creates the file name in parent for writing: fd, or a negative code.
 * When name exists and overwriting is allowed, the file is created under
 * a temporary name (*tmp, malloc'd) that settle_file renames over it. */
static int create_file(struct extractor *x, int parent, const char *name, const char *path,
		       char **tmp)
{
	int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	*tmp = NULL;
	int fd = openat(parent, name, flags, 0600);
	if (fd >= 0 || errno != EEXIST || !x->o->overwrite)
		return fd >= 0 ? fd : cn_error_sys(-errno, "failed to create file '%s'", path);
	char t[64];
	for (int tries = 0; tries < 100; tries++) {
		snprintf(t, sizeof(t), ".cairn-restore-%ld-%u", (long)getpid(), x->tmp_serial++);
		fd = openat(parent, t, flags, 0600);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0)
		return cn_error_sys(-errno, "failed to create a file to replace '%s'", path);
	if (!(*tmp = strdup(t))) {
		unlinkat(parent, t, 0);
		close(fd);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	return fd;
}

/* After a file was written (ok: its content is complete): a replacement
 * is renamed over the existing file, or removed when not ok; a file that
 * is not ok is removed. The parent's times are kept (its metadata may
 * have been applied already). rc: the file's result so far, returned
 * unless placing it fails. */
static int settle_file(struct extractor *x, const struct placing *pl, int ok, const char *path,
		       int rc)
{
	if (ok && !pl->tmp)
		return rc; /* in place already: the common case costs nothing */
	struct stat dst;
	int have = fstat(pl->dirfd, &dst) == 0;
	if (ok && pl->tmp && renameat(pl->dirfd, pl->tmp, pl->dirfd, pl->name) < 0) {
		int r = cn_error_sys(-errno, "failed to replace '%s'", path);
		rc = rc < 0 ? rc : soft_error(x, r);
		ok = 0;
	}
	if (!ok)
		unlinkat(pl->dirfd, pl->tmp ? pl->tmp : pl->name, 0);
	if (have) {
		struct timespec ts[2] = { dst.st_atim, dst.st_mtim };
		(void)futimens(pl->dirfd, ts);
	}
	return rc;
}

/* ---- file content on writer threads ---------------------------------------------
 *
 * Writing into the page cache is most of a restore's system time (on the
 * virtual test machines every new page also costs the host a fault), and
 * the extractor thread doing it set a restore's speed limit: restoring
 * the 2 GiB bench corpus it used 1.5-2.1 s of CPU, against 0.4-0.6 s
 * with the writes on writer threads (on the 2-core test machine the
 * restore as a whole was CPU-bound and took as long either way; machines
 * with more cores gain). So where the input lends its bytes (a restore's
 * chunk reader), the extractor thread creates each large file, applies
 * the metadata a write does not disturb, and queues the file's pieces to
 * a cn_write_pool, whose threads write them and release the lent chunks.
 * Files whose writes are done are finished (permissions, mtime, chattr
 * flags, close) by the extractor thread, in the order they were started,
 * so that every message and counter stays on one thread; at most
 * CN_XT_MAX_OPEN_FILES wait for that. */
#define ASYNC_MIN (64u << 10)

/* What finishing a file on the writer threads takes (its pool ctx). */
struct xfile {
	char *path;
	uint64_t size;
	struct late_meta meta;    /* applied when its writes are done */
	int failed;               /* queuing stopped at an error already reported */
	struct placing place;     /* where it goes when done */
	int unsettled;            /* counted in x->unsettled: not at its name yet,
				   * or to be removed */
};

void cn_xt_free_xfile(void *ctx)
{
	struct xfile *f = ctx;
	place_free(&f->place);
	free(f->path);
	free(f);
}

/* Finishes f, whose writes (res) are done: its size, late metadata,
 * close. Failures are soft errors (as an inline write's). */
static int finish_file(struct extractor *x, struct xfile *f, int fd,
		       const struct cn_write_result *res)
{
	int rc = 0, ok = 0;
	if (f->failed) {
		/* reported when queuing stopped */
	} else if (res->err) {
		rc = cn_error_sys(res->err, "failed to write '%s'", f->path);
		if (!target_full(rc))
			rc = soft_error(x, rc);
	} else if (res->tail_hole && ftruncate(fd, (off_t)f->size) < 0) {
		rc = soft_error(x, cn_error_sys(-errno, "error setting size of '%s'", f->path));
	} else {
		ok = 1;
		char proc[64];
		cn_xt_proc_path(proc, sizeof(proc), fd);
		rc = cn_xt_apply_meta_late(x, &f->meta, f->path, fd, proc, -1, NULL);
		x->st->bytes += f->size;
		x->st->sparse_bytes += res->holes;
		if (rc == 0)
			x->st->files++;
	}
	close(fd);
	rc = settle_file(x, &f->place, ok, f->path, rc);
	x->unsettled -= f->unsettled;
	cn_xt_free_xfile(f);
	return rc;
}

/* Finishes the started files, oldest first, whose writes are done,
 * waiting for them while more than keep files are open. */
int cn_xt_reap_files(struct extractor *x, size_t keep)
{
	void *ctx;
	int fd, rc = 0;
	struct cn_write_result res;
	while (x->w && rc >= 0 && cn_write_pool_take(x->w, keep, &ctx, &fd, &res))
		rc = finish_file(x, ctx, fd, &res);
	return rc;
}

/* The input holding e's content (the one its lent pieces go back to): the
 * decoder's copies of it for any decoder the accessor opens. */
static const struct cn_pxar_input *content_input(const struct extractor *x,
						 const struct cn_pxar_entry *e)
{
	return e->content_in_payload ? x->o->payload : x->in;
}

/* Whether e's content goes to the writer threads: a large file from an
 * input that lends its bytes, without file capabilities (which a write
 * would remove again). */
static int goes_to_writers(const struct extractor *x, const struct cn_pxar_entry *e)
{
	const struct cn_pxar_input *src = content_input(x, e);
	if (!x->w || e->file_size < ASYNC_MIN || !src || !src->view_at || e->fcaps)
		return 0;
	for (size_t i = 0; i < e->xattr_count; i++)
		if (cn_xt_is_fcaps_xattr(&e->xattrs[i]))
			return 0;
	return 1;
}


/* Writes the content of the current FILE entry to fd: inline, or (wf set)
 * queued to the writer threads where the input lends the bytes. Lent
 * bytes are written straight from the cached chunk: copying each piece
 * into a buffer first cost the extractor thread 6 % of a restore's CPU
 * time. */
static int copy_content(struct extractor *x, struct cn_pxar_decoder *d,
			const struct cn_pxar_entry *e, int fd, const char *path,
			struct cn_write_file *wf)
{
	const struct cn_pxar_input *src = content_input(x, e);
	uint64_t off = 0, holes = 0;
	int tail_hole = 0;
	while (off < e->file_size) {
		const uint8_t *data;
		size_t n;
		void *token;
		int viewed = cn_xt_content_piece(d, e, off, x->buf, COPY_BUF, &data, &n, &token);
		if (viewed < 0)
			return viewed;
		int rc;
		if (wf && !viewed) {
			/* goes_to_writers saw the input lend: it lends every piece */
			return cn_error_set(-EINVAL, "'%s': the input stopped lending its content",
					    path);
		} else if (wf) {
			rc = cn_write_pool_queue(x->w, wf, data, n, off, src->release, src->ctx, token);
		} else {
			rc = cn_write_sparse(fd, data, n, off, &holes, &tail_hole);
			if (viewed)
				cn_pxar_decoder_release(d, token);
			if (rc < 0)
				rc = cn_error_sys(rc, "failed to write '%s'", path);
		}
		if (rc < 0)
			return rc;
		off += n;
		if (wf && cn_write_pool_error(wf))
			return 0; /* reported when the file is finished */
	}
	if (wf)
		return 0;
	if (tail_hole && ftruncate(fd, (off_t)e->file_size) < 0)
		return cn_error_sys(-errno, "error setting size of '%s'", path);
	x->st->bytes += e->file_size;
	x->st->sparse_bytes += holes;
	return 0;
}


/* extract_file for a file whose content goes to the writer threads: takes
 * fd, applies the early metadata and queues the content; the file is
 * finished by reap_files. */
static int start_file(struct extractor *x, struct cn_pxar_decoder *d,
		      const struct cn_pxar_entry *e, int fd, struct placing *pl, const char *path)
{
	char proc[64];
	cn_xt_proc_path(proc, sizeof(proc), fd);
	int rc = cn_xt_apply_meta_early(x, e, path, fd, proc, -1, NULL);
	struct xfile *f = rc < 0 ? NULL : calloc(1, sizeof(*f));
	char *p = f ? strdup(path) : NULL;
	char *nm = p ? strdup(pl->name) : NULL;
	int dirfd = nm ? fcntl(pl->dirfd, F_DUPFD_CLOEXEC, 0) : -1;
	if (dirfd < 0) {
		if (rc == 0)
			rc = nm ? cn_error_sys(-errno, "dup") : cn_error_set(-ENOMEM, "out of memory");
		free(nm);
		free(p);
		free(f);
		close(fd);
		return settle_file(x, pl, 0, path, rc);
	}
	f->path = p;
	f->size = e->file_size;
	f->meta = late_of(e);
	f->place = (struct placing){ dirfd, nm, pl->tmp };
	pl->tmp = NULL; /* the xfile's now */
	if (f->place.tmp) {
		f->unsettled = 1;
		x->unsettled++;
	}
	struct cn_write_file *wf;
	rc = cn_write_pool_start(x->w, fd, e->file_size, f, &wf);
	if (rc < 0) {
		close(fd);
		rc = settle_file(x, &f->place, 0, path, rc);
		cn_xt_free_xfile(f);
		return rc;
	}
	rc = copy_content(x, d, e, fd, path, wf);
	if (rc < 0) {
		f->failed = 1; /* removed when its queued writes are done */
		if (!f->unsettled) {
			f->unsettled = 1;
			x->unsettled++;
		}
	}
	return rc;
}

int cn_xt_extract_file(struct extractor *x, struct cn_pxar_decoder *d,
			const struct cn_pxar_entry *e, int parent, const char *name,
			const char *path)
{
	char *tmp;
	int fd = create_file(x, parent, name, path, &tmp);
	if (fd < 0)
		return fd;
	/* (name is borrowed here: the xfile copies what it keeps) */
	struct placing pl = { parent, (char *)name, tmp };
	int rc = cn_xt_apply_chattr(fd, cn_xt_to_chattr(e->flags) & INITIAL_CHATTR, CHATTR_MASK);
	if (rc < 0)
		rc = soft_error(x, cn_error_sys(rc, "failed to apply initial flags to '%s'", path));
	if (rc == 0 && goes_to_writers(x, e)) {
		rc = start_file(x, d, e, fd, &pl, path);
		free(pl.tmp);
		return rc;
	}
	int ok = 0;
	if (rc == 0 && (rc = copy_content(x, d, e, fd, path, NULL)) == 0) {
		ok = 1;
		rc = cn_xt_apply_meta(x, e, path, fd, parent, tmp ? tmp : name);
	}
	close(fd);
	rc = settle_file(x, &pl, ok, path, rc);
	free(tmp);
	if (rc == 0)
		x->st->files++;
	return rc;
}
