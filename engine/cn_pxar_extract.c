/* cn_pxar_extract — see cn_pxar_extract.h. Upstream: proxmox-backup
 * pbs-client/src/pxar/extract.rs (Extractor, extract_file with sparse_copy,
 * extract_hardlink via linkat from the root fd), metadata.rs (apply order,
 * apply_acls, is_valid_xattr_name), pxar-bin list.
 *
 * Invariant: every descriptor in the directory stack was obtained from the
 * target directory's descriptor by openat(name, O_DIRECTORY|O_NOFOLLOW)
 * with decoder-checked single-component names, so it is inside the target;
 * every object is created relative to one of them.
 */
#include "engine/cn_pxar_extract.h"
#include "pxar/cn_pxar_format.h"
#include "engine/cn_write_pool.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"

#include <acl/libacl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define NO_OFFSET UINT64_MAX
#define COPY_BUF (1u << 20)

struct xdir {
	char *name;               /* component (NULL for the target itself) */
	int fd;                   /* -1 until created */
	int taken;                /* selected: what entries below inherit */
	int failed;               /* creation failed: skip its subtree */
	struct cn_pxar_range r;   /* where its metadata is (for the end) */
	int have_range;
};

struct extractor {
	const struct cn_pxar_input *in;
	const struct cn_pxar_extract_opts *o;
	struct cn_pxar_extract_opts defaults;
	struct cn_pxar_extract_stats *st;
	struct cn_pxar_accessor *acc;
	struct xdir *stack;
	size_t depth, cap;
	int root_fd;
	int apply_root_meta;
	const struct cn_pxar_select *sel;
	int looked_up;            /* decoding the selection's lookup paths alone */
	uint8_t *buf;
	struct cn_write_pool *w;  /* NULL: file content is written inline */
	/* Hardlink targets restored as copies (their own entry was not
	 * extracted), sorted by the target's FILENAME offset: each is copied
	 * once and later links to it point to that copy, so what extraction
	 * writes stays bounded by the archive's content. */
	struct link_copy {
		uint64_t target_fo;
		char *path;       /* the copy, relative to the target root */
	} *copies;
	size_t ncopies, copies_cap;
};

/* Records a non-fatal error: logged and counted, fatal when strict. rc is
 * the code with its message already set. */
static int soft_error(struct extractor *x, int rc)
{
	if (x->o->strict)
		return rc;
	cn_log_error("%s", cn_error_message());
	x->st->errors++;
	return 0;
}

/* ---- metadata ------------------------------------------------------------------ */

static int valid_xattr_name(const uint8_t *n, size_t len)
{
	if (len == 0 || len > 255)
		return 0;
	if ((len > 5 && memcmp(n, "user.", 5) == 0) || (len > 8 && memcmp(n, "trusted.", 8) == 0))
		return 1;
	return (len == 14 && memcmp(n, "security.NTACL", 14) == 0) ||
	       (len == 19 && memcmp(n, "security.capability", 19) == 0);
}

/* Whether xa holds file capabilities: governed by no_fcaps (as well as
 * no_xattrs) however the archive stores them. */
static int is_fcaps_xattr(const struct cn_pxar_xattr *xa)
{
	return xa->name_len == 19 && memcmp(xa->name, "security.capability", 19) == 0;
}

static int acl_add(acl_t *acl, acl_tag_t tag, const uint64_t *qual, uint64_t perms)
{
	acl_entry_t ent;
	acl_permset_t ps;
	if (acl_create_entry(acl, &ent) < 0 || acl_set_tag_type(ent, tag) < 0)
		return -errno;
	if (qual) {
		if (*qual > UINT32_MAX)
			return -EINVAL;
		id_t id = (id_t)*qual;
		if (acl_set_qualifier(ent, &id) < 0)
			return -errno;
	}
	if (acl_get_permset(ent, &ps) < 0 || acl_clear_perms(ps) < 0)
		return -errno;
	if ((perms & CN_PXAR_ACL_READ) && acl_add_perm(ps, ACL_READ) < 0)
		return -errno;
	if ((perms & CN_PXAR_ACL_WRITE) && acl_add_perm(ps, ACL_WRITE) < 0)
		return -errno;
	if ((perms & CN_PXAR_ACL_EXECUTE) && acl_add_perm(ps, ACL_EXECUTE) < 0)
		return -errno;
	return acl_set_permset(ent, ps) < 0 ? -errno : 0;
}

static int acl_empty(const struct cn_pxar_entry *e)
{
	return !e->acl_user_count && !e->acl_group_count && !e->has_acl_group_obj &&
	       !e->has_acl_default && !e->acl_default_user_count && !e->acl_default_group_count;
}

/* apply_acls of metadata.rs: the access ACL from mode + entries, then the
 * default ACL. */
static int apply_acls(const struct cn_pxar_entry *e, const char *proc_path)
{
	uint64_t m = e->mode;
	acl_t acl = acl_init(5);
	int rc = 0;
	if (!acl)
		return cn_error_sys(-errno, "acl_init");
	rc = acl_add(&acl, ACL_USER_OBJ, NULL, (m >> 6) & 7);
	if (!rc)
		rc = acl_add(&acl, ACL_OTHER, NULL, m & 7);
	if (!rc && e->has_acl_group_obj) {
		rc = acl_add(&acl, ACL_MASK, NULL, (m >> 3) & 7);
		if (!rc)
			rc = acl_add(&acl, ACL_GROUP_OBJ, NULL, e->acl_group_obj);
	} else if (!rc) {
		rc = acl_add(&acl, ACL_GROUP_OBJ, NULL, (m >> 3) & 7);
		if (!rc && (e->acl_user_count || e->acl_group_count))
			rc = acl_add(&acl, ACL_MASK, NULL, (m >> 3) & 7);
	}
	for (size_t i = 0; !rc && i < e->acl_user_count; i++)
		rc = acl_add(&acl, ACL_USER, &e->acl_users[i].id, e->acl_users[i].permissions);
	for (size_t i = 0; !rc && i < e->acl_group_count; i++)
		rc = acl_add(&acl, ACL_GROUP, &e->acl_groups[i].id, e->acl_groups[i].permissions);
	if (!rc && acl_valid(acl) != 0)
		rc = -EINVAL;
	if (!rc && acl_set_file(proc_path, ACL_TYPE_ACCESS, acl) < 0)
		rc = -errno;
	acl_free(acl);
	if (rc < 0)
		return cn_error_sys(rc, "restoring access ACL");
	if (!e->has_acl_default)
		return 0;

	acl = acl_init(5);
	if (!acl)
		return cn_error_sys(-errno, "acl_init");
	rc = acl_add(&acl, ACL_USER_OBJ, NULL, e->acl_default[0]);
	if (!rc)
		rc = acl_add(&acl, ACL_GROUP_OBJ, NULL, e->acl_default[1]);
	if (!rc)
		rc = acl_add(&acl, ACL_OTHER, NULL, e->acl_default[2]);
	if (!rc && e->acl_default[3] != CN_PXAR_ACL_NO_MASK)
		rc = acl_add(&acl, ACL_MASK, NULL, e->acl_default[3]);
	for (size_t i = 0; !rc && i < e->acl_default_user_count; i++)
		rc = acl_add(&acl, ACL_USER, &e->acl_default_users[i].id,
			     e->acl_default_users[i].permissions);
	for (size_t i = 0; !rc && i < e->acl_default_group_count; i++)
		rc = acl_add(&acl, ACL_GROUP, &e->acl_default_groups[i].id,
			     e->acl_default_groups[i].permissions);
	if (!rc && acl_valid(acl) != 0)
		rc = -EINVAL;
	if (!rc && acl_set_file(proc_path, ACL_TYPE_DEFAULT, acl) < 0)
		rc = -errno;
	acl_free(acl);
	if (rc < 0)
		return cn_error_sys(rc, "restoring default ACL");
	return 0;
}

/* pxar Stat.flags -> chattr bits (flags.rs CHATTR_MAP). */
static const struct { uint64_t pxar; int fs; } chattr_map[] = {
	{ CN_PXAR_FLAG_APPEND, FS_APPEND_FL },       { CN_PXAR_FLAG_NOATIME, FS_NOATIME_FL },
	{ CN_PXAR_FLAG_COMPR, FS_COMPR_FL },         { CN_PXAR_FLAG_NOCOW, FS_NOCOW_FL },
	{ CN_PXAR_FLAG_NODUMP, FS_NODUMP_FL },       { CN_PXAR_FLAG_DIRSYNC, FS_DIRSYNC_FL },
	{ CN_PXAR_FLAG_IMMUTABLE, FS_IMMUTABLE_FL }, { CN_PXAR_FLAG_SYNC, FS_SYNC_FL },
	{ CN_PXAR_FLAG_NOCOMP, FS_NOCOMP_FL },      { CN_PXAR_FLAG_PROJINHERIT, FS_PROJINHERIT_FL },
};
/* flags.rs INITIAL_FS_FLAGS: set on a file before its data is written. */
#define INITIAL_CHATTR (FS_NOATIME_FL | FS_COMPR_FL | FS_NOCOW_FL | FS_NOCOMP_FL | FS_PROJINHERIT_FL)

static int to_chattr(uint64_t flags)
{
	int r = 0;
	for (size_t i = 0; i < sizeof(chattr_map) / sizeof(chattr_map[0]); i++)
		if (flags & chattr_map[i].pxar)
			r |= chattr_map[i].fs;
	return r;
}

static int chattr_unsupported(int err)
{
	return err == ENOTTY || err == ENOSYS || err == EBADF || err == EOPNOTSUPP || err == EINVAL;
}

/* metadata.rs apply_chattr: sets the bits of chattr within mask, keeping
 * the others; unsupported file systems are ignored. mask: the chattr bits
 * the default feature flags restore (all but NODUMP). */
static int apply_chattr(int fd, int chattr, int mask)
{
	int cur = 0;
	if (chattr == 0)
		return 0;
	if (ioctl(fd, FS_IOC_GETFLAGS, &cur) < 0)
		return chattr_unsupported(errno) ? 0 : -errno;
	int attr = (chattr & mask) | (cur & ~mask);
	if (attr == cur)
		return 0;
	if (ioctl(fd, FS_IOC_SETFLAGS, &attr) < 0)
		return chattr_unsupported(errno) ? 0 : -errno;
	return 0;
}

#define CHATTR_MASK (to_chattr(CN_PXAR_FLAGS_DEFAULT))

/* The metadata a write to a file would undo or that would block one:
 * permission bits (a write clears set-uid/gid for the unprivileged),
 * mtime, chattr flags (immutable, append-only). */
struct late_meta {
	uint64_t mode, flags;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
};

static struct late_meta late_of(const struct cn_pxar_entry *e)
{
	struct late_meta m = { e->mode, e->flags, e->mtime_sec, e->mtime_nsec };
	return m;
}

/* The first part of apply_meta: owner, xattrs, file capabilities, ACLs
 * (for a file written on writer threads, before its data: none of them
 * blocks a write or is undone by one, file capabilities aside, and such
 * files have none). proc: /proc/self/fd/<fd>. */
static int apply_meta_early(struct extractor *x, const struct cn_pxar_entry *e, const char *path,
			    int fd, const char *proc, int parent, const char *name)
{
	int rc;
	int is_link = (e->mode & CN_PXAR_IFMT) == CN_PXAR_IFLNK;
	if (!x->o->no_owner) {
		int r = is_link ? fchownat(parent, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW)
				: fchownat(fd, "", e->uid, e->gid, AT_EMPTY_PATH);
		if (r < 0 && errno != EOPNOTSUPP) {
			/* as upstream: an unprivileged restore of files owned by
			 * others reports each failed chown (use no_owner) */
			rc = soft_error(x, cn_error_sys(-errno, "failed to set ownership of '%s'", path));
			if (rc < 0)
				return rc;
		}
	}
	if (!is_link && !x->o->no_xattrs) {
		for (size_t i = 0; i < e->xattr_count; i++) {
			const struct cn_pxar_xattr *xa = &e->xattrs[i];
			if (x->o->no_fcaps && is_fcaps_xattr(xa))
				continue;
			if (!valid_xattr_name(xa->name, xa->name_len)) {
				cn_log_info("skipping invalid xattr named '%.*s' on '%s'",
					    (int)xa->name_len, xa->name, path);
				continue;
			}
			char nm[256];
			memcpy(nm, xa->name, xa->name_len);
			nm[xa->name_len] = 0;
			if (setxattr(proc, nm, xa->value, xa->value_len, 0) < 0) {
				if (errno == EOPNOTSUPP)
					break;
				rc = soft_error(x, cn_error_sys(-errno, "failed to apply extended attribute %s to '%s'",
								nm, path));
				if (rc < 0)
					return rc;
			}
		}
	}
	if (!is_link && !x->o->no_fcaps && e->fcaps) {
		if (setxattr(proc, "security.capability", e->fcaps, e->fcaps_len, 0) < 0 &&
		    errno != EOPNOTSUPP) {
			rc = soft_error(x, cn_error_sys(-errno, "failed to apply file capabilities to '%s'", path));
			if (rc < 0)
				return rc;
		}
	}
	if (!is_link && !x->o->no_acls && !acl_empty(e)) {
		rc = apply_acls(e, proc);
		if (rc < 0 && rc != -EOPNOTSUPP) {
			cn_error_prefix(rc, "'%s'", path);
			rc = soft_error(x, rc);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* The rest of apply_meta: permission bits, mtime, chattr flags. */
static int apply_meta_late(struct extractor *x, const struct late_meta *m, const char *path,
			   int fd, const char *proc, int parent, const char *name)
{
	int rc;
	int is_link = (m->mode & CN_PXAR_IFMT) == CN_PXAR_IFLNK;
	if (!is_link) {
		if (chmod(proc, (mode_t)(m->mode & 07777)) < 0 && errno != EOPNOTSUPP) {
			rc = soft_error(x, cn_error_sys(-errno, "failed to change file mode of '%s'", path));
			if (rc < 0)
				return rc;
		}
	}
	struct timespec ts[2] = { { 0, UTIME_OMIT }, { m->mtime_sec, (long)m->mtime_nsec } };
	int r = is_link ? utimensat(parent, name, ts, AT_SYMLINK_NOFOLLOW)
			: utimensat(AT_FDCWD, proc, ts, 0);
	if (r < 0 && errno != EOPNOTSUPP) {
		rc = soft_error(x, cn_error_sys(-errno, "failed to restore mtime of '%s'", path));
		if (rc < 0)
			return rc;
	}
	/* chattr flags last (immutable/append would block the steps above);
	 * only through a real descriptor (files and directories) */
	if (!is_link && m->flags) {
		r = apply_chattr(fd, to_chattr(m->flags), CHATTR_MASK);
		if (r < 0) {
			rc = soft_error(x, cn_error_sys(r, "failed to set file attributes of '%s'", path));
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

static void proc_path(char *buf, size_t len, int fd)
{
	if (fd >= 0)
		snprintf(buf, len, "/proc/self/fd/%d", fd);
	else
		buf[0] = 0;
}

/* Applies e's metadata to the object: fd is a descriptor of it (O_PATH is
 * enough), or -1 for a symlink, which is addressed as (parent, name)
 * without following. Order as upstream metadata::apply. Returns 0 or the
 * first failure (already counted as soft error unless strict). */
static int apply_meta(struct extractor *x, const struct cn_pxar_entry *e, const char *path,
		      int fd, int parent, const char *name)
{
	char proc[64];
	proc_path(proc, sizeof(proc), fd);
	int rc = apply_meta_early(x, e, path, fd, proc, parent, name);
	if (rc < 0)
		return rc;
	struct late_meta m = late_of(e);
	return apply_meta_late(x, &m, path, fd, proc, parent, name);
}

/* ---- directories ------------------------------------------------------------------ */

static int push_dir(struct extractor *x, const char *name, int taken, const struct cn_pxar_range *r)
{
	if (x->depth == x->cap) {
		size_t n = x->cap ? 2 * x->cap : 16;
		struct xdir *s = realloc(x->stack, n * sizeof(*s));
		if (!s)
			return cn_error_set(-ENOMEM, "out of memory");
		x->stack = s;
		x->cap = n;
	}
	struct xdir *d = &x->stack[x->depth];
	memset(d, 0, sizeof(*d));
	d->fd = -1;
	d->name = name ? strdup(name) : NULL;
	if (name && !d->name)
		return cn_error_set(-ENOMEM, "out of memory");
	d->taken = taken;
	if (r) {
		d->r = *r;
		d->have_range = 1;
	}
	x->depth++;
	return 0;
}

/* Creates (or, if allowed, opens) the directory stack[i] inside its
 * parent. */
static int make_dir(struct extractor *x, size_t i, const char *path)
{
	struct xdir *d = &x->stack[i];
	int parent = x->stack[i - 1].fd;
	if (mkdirat(parent, d->name, 0700) < 0) {
		if (errno != EEXIST)
			return cn_error_sys(-errno, "failed to create directory '%s' (for '%s')", d->name, path);
		if (!x->o->allow_existing_dirs)
			return cn_error_set(-EEXIST, "directory '%s' (for '%s') already exists (allow existing directories to extract into it)",
					    d->name, path);
	}
	d->fd = openat(parent, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d->fd < 0)
		return cn_error_sys(-errno, "failed to open directory '%s' (for '%s'; not a directory or a symlink?)",
				    d->name, path);
	return 0;
}

/* Makes sure every directory on the stack exists. Returns 0, 1 when a
 * directory could not be created (its subtree is skipped), or a fatal
 * code. */
static int ensure_dirs(struct extractor *x, const char *path)
{
	for (size_t i = 1; i < x->depth; i++) {
		if (x->stack[i].failed)
			return 1;
		if (x->stack[i].fd >= 0)
			continue;
		int rc = make_dir(x, i, path);
		if (rc < 0) {
			x->stack[i].failed = 1;
			rc = soft_error(x, rc);
			return rc < 0 ? rc : 1;
		}
		x->st->dirs++;
	}
	return 0;
}

/* Applies the metadata of the innermost directory (re-read through the
 * accessor) and pops it. */
static int pop_dir(struct extractor *x, const char *path)
{
	struct xdir *d = &x->stack[x->depth - 1];
	int rc = 0;
	if (d->fd >= 0 && d->have_range && (x->depth > 1 || x->apply_root_meta)) {
		const struct cn_pxar_entry *e;
		rc = cn_pxar_accessor_entry(x->acc, &d->r, path, &e);
		if (rc == 0)
			rc = apply_meta(x, e, *path ? path : ".", d->fd, -1, NULL);
	}
	if (x->depth > 1 && d->fd >= 0)
		close(d->fd);
	free(d->name);
	x->depth--;
	return rc;
}

/* ---- file content ---------------------------------------------------------------- */

/* The next piece of the current FILE entry's content, at off: lent by
 * the input (returns 1; released through the input when done) or read
 * into buf of cap bytes (returns 0). *data, *n: the piece. Or a negative
 * code. */
static int content_piece(struct cn_pxar_decoder *d, const struct cn_pxar_entry *e, uint64_t off,
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
 * MAX_OPEN_FILES wait for that. */
#define ASYNC_MIN (64u << 10)
#define MAX_OPEN_FILES 64

/* What finishing a file on the writer threads takes (its pool ctx). */
struct xfile {
	char *path;
	uint64_t size;
	struct late_meta meta;    /* applied when its writes are done */
	int failed;               /* queuing stopped at an error already reported */
};

static void free_xfile(void *ctx)
{
	struct xfile *f = ctx;
	free(f->path);
	free(f);
}

/* Finishes f, whose writes (res) are done: its size, late metadata,
 * close. Failures are soft errors (as an inline write's). */
static int finish_file(struct extractor *x, struct xfile *f, int fd,
		       const struct cn_write_result *res)
{
	int rc = 0;
	if (f->failed) {
		/* reported when queuing stopped */
	} else if (res->err) {
		rc = soft_error(x, cn_error_sys(res->err, "failed to write '%s'", f->path));
	} else if (res->tail_hole && ftruncate(fd, (off_t)f->size) < 0) {
		rc = soft_error(x, cn_error_sys(-errno, "error setting size of '%s'", f->path));
	} else {
		char proc[64];
		proc_path(proc, sizeof(proc), fd);
		rc = apply_meta_late(x, &f->meta, f->path, fd, proc, -1, NULL);
		x->st->bytes += f->size;
		x->st->sparse_bytes += res->holes;
		if (rc == 0)
			x->st->files++;
	}
	close(fd);
	free_xfile(f);
	return rc;
}

/* Finishes the started files, oldest first, whose writes are done,
 * waiting for them while more than keep files are open. */
static int reap_files(struct extractor *x, size_t keep)
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
		if (is_fcaps_xattr(&e->xattrs[i]))
			return 0;
	return 1;
}

/* ---- entries --------------------------------------------------------------------- */

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
		int viewed = content_piece(d, e, off, x->buf, COPY_BUF, &data, &n, &token);
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

/* Removes an existing non-directory at name when overwriting. Returns 1
 * when something was removed (retry), 0 when not allowed. */
static int make_room(struct extractor *x, int parent, const char *name)
{
	if (!x->o->overwrite)
		return 0;
	return unlinkat(parent, name, 0) == 0;
}

/* extract_file for a file whose content goes to the writer threads: takes
 * fd, applies the early metadata and queues the content; the file is
 * finished by reap_files. */
static int start_file(struct extractor *x, struct cn_pxar_decoder *d,
		      const struct cn_pxar_entry *e, int fd, const char *path)
{
	char proc[64];
	proc_path(proc, sizeof(proc), fd);
	int rc = apply_meta_early(x, e, path, fd, proc, -1, NULL);
	struct xfile *f = rc < 0 ? NULL : calloc(1, sizeof(*f));
	char *p = f ? strdup(path) : NULL;
	if (!p) {
		free(f);
		close(fd);
		return rc < 0 ? rc : cn_error_set(-ENOMEM, "out of memory");
	}
	f->path = p;
	f->size = e->file_size;
	f->meta = late_of(e);
	struct cn_write_file *wf;
	rc = cn_write_pool_start(x->w, fd, e->file_size, f, &wf);
	if (rc < 0) {
		free_xfile(f);
		close(fd);
		return rc;
	}
	rc = copy_content(x, d, e, fd, path, wf);
	if (rc < 0)
		f->failed = 1;
	return rc;
}

static int extract_file(struct extractor *x, struct cn_pxar_decoder *d,
			const struct cn_pxar_entry *e, int parent, const char *name,
			const char *path)
{
	int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	int fd = openat(parent, name, flags, 0600);
	if (fd < 0 && errno == EEXIST && make_room(x, parent, name))
		fd = openat(parent, name, flags, 0600);
	if (fd < 0)
		return cn_error_sys(-errno, "failed to create file '%s'", path);
	int rc = apply_chattr(fd, to_chattr(e->flags) & INITIAL_CHATTR, CHATTR_MASK);
	if (rc < 0)
		rc = soft_error(x, cn_error_sys(rc, "failed to apply initial flags to '%s'", path));
	if (rc == 0 && goes_to_writers(x, e))
		return start_file(x, d, e, fd, path);
	if (rc == 0)
		rc = copy_content(x, d, e, fd, path, NULL);
	if (rc == 0)
		rc = apply_meta(x, e, path, fd, parent, name);
	close(fd);
	if (rc == 0)
		x->st->files++;
	return rc;
}

/* Opens, without following symlinks, the directory holding the last
 * component of the archive-relative path rel (checked by the decoder),
 * starting at the target root. *last points to that component. */
static int walk_parent(struct extractor *x, const char *rel, const char **last)
{
	int fd = dup(x->root_fd);
	if (fd < 0)
		return cn_error_sys(-errno, "dup");
	const char *p = rel;
	for (;;) {
		const char *s = strchr(p, '/');
		if (!s)
			break;
		char comp[CN_PXAR_MAX_FILENAME_LEN + 1];
		size_t n = (size_t)(s - p);
		if (n == 0 || n > CN_PXAR_MAX_FILENAME_LEN) {
			close(fd);
			return cn_error_set(-CN_E_PATH, "bad hardlink target '%s'", rel);
		}
		memcpy(comp, p, n);
		comp[n] = 0;
		int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int err = errno;
		close(fd);
		if (nfd < 0)
			return cn_error_sys(-err, "hardlink target '%s'", rel);
		fd = nfd;
		p = s + 1;
	}
	*last = p;
	return fd;
}

/* Links parent/name to the regular file at rel (relative to the target
 * root, reached without following symlinks). */
static int link_to(struct extractor *x, const char *rel, int parent, const char *name,
		   const char *path)
{
	const char *last;
	int tfd = walk_parent(x, rel, &last);
	int rc = tfd;
	if (tfd >= 0) {
		struct stat st;
		if (fstatat(tfd, last, &st, AT_SYMLINK_NOFOLLOW) < 0)
			rc = cn_error_sys(-errno, "hardlink target '%s'", rel);
		else if (!S_ISREG(st.st_mode))
			rc = cn_error_set(-CN_E_PATH, "hardlink target '%s' is not a regular file", rel);
		else {
			rc = linkat(tfd, last, parent, name, 0);
			if (rc < 0 && errno == EEXIST && make_room(x, parent, name))
				rc = linkat(tfd, last, parent, name, 0);
			rc = rc < 0 ? cn_error_sys(-errno, "failed to link '%s' to '%s'", path, rel) : 0;
		}
		close(tfd);
	}
	return rc;
}

/* Index in x->copies of target_fo, or where it would go (*found = 0). */
static size_t find_copy(const struct extractor *x, uint64_t target_fo, int *found)
{
	size_t lo = 0, hi = x->ncopies;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (x->copies[mid].target_fo < target_fo)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < x->ncopies && x->copies[lo].target_fo == target_fo;
	return lo;
}

/* Remembers path as the copy of the file at target_fo, at index i. */
static int add_copy(struct extractor *x, size_t i, uint64_t target_fo, const char *path)
{
	if (x->ncopies == x->copies_cap) {
		size_t cap = x->copies_cap ? 2 * x->copies_cap : 16;
		void *n = realloc(x->copies, cap * sizeof(*x->copies));
		if (!n)
			return cn_error_set(-ENOMEM, "out of memory");
		x->copies = n;
		x->copies_cap = cap;
	}
	char *p = strdup(path);
	if (!p)
		return cn_error_set(-ENOMEM, "out of memory");
	memmove(&x->copies[i + 1], &x->copies[i], (x->ncopies - i) * sizeof(*x->copies));
	x->copies[i].target_fo = target_fo;
	x->copies[i].path = p;
	x->ncopies++;
	return 0;
}

/* A hardlink whose target path does not exist in the target directory:
 * its target was not extracted (outside the selection). The stored path
 * must name the earlier entry the stored offset points to (anything else
 * is a hostile or corrupt archive); that file's data is restored once, as
 * a single-file restore of a hardlink does upstream, and every further
 * link to it becomes a link to that copy. */
static int extract_hardlink_copy(struct extractor *x, const struct cn_pxar_entry *e, int parent,
				 const char *name, const char *path)
{
	struct cn_pxar_range r, named;
	struct cn_pxar_decoder *d;
	const struct cn_pxar_entry *te;
	int rc = cn_pxar_follow_hardlink(x->acc, e, &r);
	if (rc < 0)
		return rc;
	rc = cn_pxar_lookup(x->acc, e->link, &named);
	if (rc < 0)
		return rc;
	if (rc == 0 || named.filename_offset != r.filename_offset)
		return cn_error_set(-CN_E_FORMAT, "hardlink '%s' at offset %llu: its target '%s' is not the earlier entry it points to",
				    path, (unsigned long long)e->filename_offset, e->link);
	int found;
	size_t i = find_copy(x, r.filename_offset, &found);
	if (found) {
		rc = link_to(x, x->copies[i].path, parent, name, path);
		if (rc == 0)
			x->st->hardlinks++;
		return rc;
	}
	rc = cn_pxar_accessor_decoder(x->acc, &r, e->link, &d);
	if (rc < 0)
		return rc;
	rc = cn_pxar_decoder_next(d, &te);
	if (rc > 0)
		rc = extract_file(x, d, te, parent, name, path);
	cn_pxar_decoder_free(d);
	if (rc == 0)
		rc = add_copy(x, i, r.filename_offset, path);
	return rc;
}

static int extract_hardlink(struct extractor *x, const struct cn_pxar_entry *e, int parent,
			    const char *name, const char *path)
{
	int rc = link_to(x, e->link, parent, name, path);
	if (rc == -ENOENT)
		return extract_hardlink_copy(x, e, parent, name, path);
	if (rc == 0)
		x->st->hardlinks++;
	return rc;
}

static int extract_symlink(struct extractor *x, const struct cn_pxar_entry *e, int parent,
			   const char *name, const char *path)
{
	int r = symlinkat(e->link, parent, name);
	if (r < 0 && errno == EEXIST && make_room(x, parent, name))
		r = symlinkat(e->link, parent, name);
	if (r < 0)
		return cn_error_sys(-errno, "failed to create symlink '%s'", path);
	x->st->symlinks++;
	return apply_meta(x, e, path, -1, parent, name);
}

static int extract_special(struct extractor *x, const struct cn_pxar_entry *e, int parent,
			   const char *name, const char *path)
{
	dev_t dev = 0;
	if (e->kind == CN_PXAR_KIND_DEVICE) {
		if (e->dev_major > UINT32_MAX || e->dev_minor > UINT32_MAX)
			return cn_error_set(-CN_E_FORMAT, "device number of '%s' out of range", path);
		dev = makedev((unsigned)e->dev_major, (unsigned)e->dev_minor);
	}
	int r = mknodat(parent, name, (mode_t)e->mode, dev);
	if (r < 0 && errno == EEXIST && make_room(x, parent, name))
		r = mknodat(parent, name, (mode_t)e->mode, dev);
	if (r < 0)
		return cn_error_sys(-errno, "failed to create %s '%s'",
				    e->kind == CN_PXAR_KIND_DEVICE ? "device node" :
				    e->kind == CN_PXAR_KIND_FIFO ? "fifo" : "socket", path);
	int fd = openat(parent, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return cn_error_sys(-errno, "failed to open '%s'", path);
	int rc = apply_meta(x, e, path, fd, parent, name);
	close(fd);
	if (e->kind == CN_PXAR_KIND_DEVICE)
		x->st->devices++;
	else if (e->kind == CN_PXAR_KIND_FIFO)
		x->st->fifos++;
	else
		x->st->sockets++;
	return rc;
}

/* Extracts one decoded entry. */
static int handle_entry(struct extractor *x, struct cn_pxar_decoder *d,
			const struct cn_pxar_entry *e, int is_first)
{
	int rc;
	if (e->kind == CN_PXAR_KIND_DIR_END)
		return pop_dir(x, e->path);

	int top_failed = x->stack[x->depth - 1].failed;
	int taken = cn_pxar_select_entry(x->sel, x->stack[x->depth - 1].taken, e);

	if (e->kind == CN_PXAR_KIND_DIR) {
		struct cn_pxar_range r = { e->filename_offset, e->entry_offset, 0 };
		if (is_first && x->depth == 1 && e->path_len == 0) {
			/* the archive root is the target directory itself */
			x->stack[0].r.filename_offset = NO_OFFSET;
			x->stack[0].r.entry_offset = 0;
			x->stack[0].r.end_offset = x->in->size;
			x->stack[0].have_range = 1;
			return 0;
		}
		/* end_offset is only known at DIR_END: metadata is re-read from
		 * an open range (the decoder reads the ENTRY part only). */
		r.end_offset = x->in->size;
		rc = push_dir(x, e->name, taken, &r);
		if (rc < 0)
			return rc;
		if (taken && !top_failed) {
			rc = ensure_dirs(x, e->path);
			if (rc < 0)
				return rc;
		} else if (top_failed) {
			x->stack[x->depth - 1].failed = 1;
		}
		return 0;
	}
	if (!taken)
		return 0;
	switch (e->kind) {
	case CN_PXAR_KIND_DEVICE:
		if (x->o->no_devices)
			return 0;
		break;
	case CN_PXAR_KIND_FIFO:
		if (x->o->no_fifos)
			return 0;
		break;
	case CN_PXAR_KIND_SOCKET:
		if (x->o->no_sockets)
			return 0;
		break;
	default:
		break;
	}
	rc = ensure_dirs(x, e->path);
	if (rc != 0)
		return rc < 0 ? rc : 0;
	int parent = x->stack[x->depth - 1].fd;
	switch (e->kind) {
	case CN_PXAR_KIND_FILE:
		rc = extract_file(x, d, e, parent, e->name, e->path);
		break;
	case CN_PXAR_KIND_SYMLINK:
		rc = extract_symlink(x, e, parent, e->name, e->path);
		break;
	case CN_PXAR_KIND_HARDLINK:
		rc = extract_hardlink(x, e, parent, e->name, e->path);
		break;
	default:
		rc = extract_special(x, e, parent, e->name, e->path);
		break;
	}
	if (rc < 0 && rc != -CN_E_FORMAT && rc != -CN_E_TRUNCATED && rc != -ENOMEM)
		rc = soft_error(x, rc);
	return rc;
}

/* The archive path of the innermost directory on the stack (malloc'd). */
static char *join_stack(const struct extractor *x)
{
	size_t n = 1;
	for (size_t i = 1; i < x->depth; i++)
		n += strlen(x->stack[i].name) + 1;
	char *p = malloc(n), *o = p;
	if (!p)
		return NULL;
	for (size_t i = 1; i < x->depth; i++) {
		if (o != p)
			*o++ = '/';
		size_t l = strlen(x->stack[i].name);
		memcpy(o, x->stack[i].name, l);
		o += l;
	}
	*o = 0;
	return p;
}

/* Finds the literal path p through the goodbye tables: 0 with *r, or
 * -ENOENT naming it, or the accessor's error. */
static int find_path(struct cn_pxar_accessor *acc, const char *p, struct cn_pxar_range *r)
{
	int rc = cn_pxar_lookup(acc, p, r);
	if (rc == 0)
		return cn_error_set(-ENOENT, "'%s' not found in archive", p);
	return rc < 0 ? rc : 0;
}

/* Pops the directories on the stack above the target that do not lead
 * to the literal path p (applying their metadata). */
static int pop_to_parents_of(struct extractor *x, const char *p)
{
	size_t keep = 1;
	for (const char *c = p; keep < x->depth; keep++) {
		const char *s = strchr(c, '/');
		size_t n = strlen(x->stack[keep].name);
		if (!s || (size_t)(s - c) != n || memcmp(c, x->stack[keep].name, n) != 0)
			break;
		c = s + 1;
	}
	while (x->depth > keep) {
		char *jp = join_stack(x);
		if (!jp)
			return cn_error_set(-ENOMEM, "out of memory");
		int rc = pop_dir(x, jp);
		free(jp);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Pushes the directories leading to the literal path p that are not on
 * the stack yet (each looked up through the goodbye tables) and returns
 * the range of p itself. */
static int push_parents(struct extractor *x, const char *p, struct cn_pxar_range *out)
{
	char *buf = strdup(p);
	if (!buf)
		return cn_error_set(-ENOMEM, "out of memory");
	int rc = 0;
	size_t have = x->depth - 1;
	for (char *s = strchr(buf, '/'); s; s = strchr(s + 1, '/')) {
		if (have) {
			have--;
			continue;
		}
		*s = 0;
		struct cn_pxar_range r;
		rc = find_path(x->acc, buf, &r);
		if (rc < 0)
			break;
		const char *nm = strrchr(buf, '/');
		rc = push_dir(x, nm ? nm + 1 : buf, cn_pxar_select_initial(x->sel), &r);
		*s = '/';
		if (rc < 0)
			break;
	}
	if (rc >= 0)
		rc = find_path(x->acc, buf, out);
	free(buf);
	return rc;
}

/* Extracts what d decodes; its first entry is the archive root unless
 * a path was looked up. */
static int extract_entries(struct extractor *x, struct cn_pxar_decoder *d)
{
	const struct cn_pxar_entry *e;
	int rc, first = 1;
	while ((rc = cn_pxar_decoder_next(d, &e)) > 0) {
		rc = handle_entry(x, d, e, first && !x->looked_up);
		first = 0;
		if (rc >= 0)
			rc = reap_files(x, MAX_OPEN_FILES);
		if (rc < 0)
			break;
	}
	return rc;
}

/* Fails with -ENOENT, naming the path, unless every path sel looks up is
 * in the archive: checked before anything is written. */
static int check_lookups(struct cn_pxar_accessor *acc, const struct cn_pxar_select *sel)
{
	for (size_t i = 0; i < cn_pxar_select_lookups(sel); i++) {
		struct cn_pxar_range r;
		int rc = find_path(acc, cn_pxar_select_lookup(sel, i), &r);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Extracts the looked-up entry p and what is selected below it, keeping
 * the directories it shares with the path before. */
static int extract_lookup(struct extractor *x, const char *p)
{
	struct cn_pxar_range r;
	struct cn_pxar_decoder *d;
	int rc = pop_to_parents_of(x, p);
	if (rc == 0)
		rc = push_parents(x, p, &r);
	if (rc == 0)
		rc = cn_pxar_accessor_decoder(x->acc, &r, p, &d);
	if (rc < 0)
		return rc;
	rc = extract_entries(x, d);
	cn_pxar_decoder_free(d);
	return rc;
}

int cn_pxar_extract(const struct cn_pxar_input *in, const char *target_dir,
		    const struct cn_pxar_extract_opts *opts,
		    struct cn_pxar_extract_stats *stats)
{
	struct extractor x = { 0 };
	struct cn_pxar_extract_stats local;
	struct cn_pxar_decoder *d = NULL;
	int rc;

	x.in = in;
	x.o = opts ? opts : &x.defaults;
	x.st = stats ? stats : &local;
	memset(x.st, 0, sizeof(*x.st));
	x.root_fd = -1;

	rc = cn_pxar_accessor_open(in, x.o->payload, &x.acc);
	if (rc < 0)
		return rc;
	x.buf = malloc(COPY_BUF);
	if (!x.buf) {
		rc = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	if (x.o->writers && (rc = cn_write_pool_new(x.o->writers, &x.w)) < 0)
		goto out;
	if (mkdir(target_dir, 0700) < 0 && errno != EEXIST) {
		rc = cn_error_sys(-errno, "failed to create target directory '%s'", target_dir);
		goto out;
	}
	x.root_fd = open(target_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (x.root_fd < 0) {
		rc = cn_error_sys(-errno, "failed to open target directory '%s'", target_dir);
		goto out;
	}
	x.sel = x.o->select;
	int top = cn_pxar_select_initial(x.sel);
	rc = push_dir(&x, NULL, top, NULL);
	if (rc < 0)
		goto out;
	x.stack[0].fd = x.root_fd;

	size_t lookups = cn_pxar_select_lookups(x.sel);
	if (lookups) {
		x.looked_up = 1;
		rc = check_lookups(x.acc, x.sel);
		for (size_t i = 0; rc >= 0 && i < lookups; i++)
			rc = extract_lookup(&x, cn_pxar_select_lookup(x.sel, i));
	} else {
		x.apply_root_meta = top;
		rc = cn_pxar_decoder_new(in, x.o->payload, &d);
		if (rc == 0)
			rc = extract_entries(&x, d);
	}
	if (rc >= 0)
		rc = reap_files(&x, 0);
	/* Directories still open: the parents of the looked-up paths, and the
	 * target itself. */
	while (rc >= 0 && x.depth > 0) {
		char *p = join_stack(&x);
		if (!p) {
			rc = cn_error_set(-ENOMEM, "out of memory");
			break;
		}
		rc = pop_dir(&x, p);
		free(p);
	}
	if (rc >= 0 && x.st->errors) {
		rc = cn_error_set(-EIO, "there were %llu errors while extracting",
				  (unsigned long long)x.st->errors);
	}
out:
	cn_write_pool_free(x.w, free_xfile);
	cn_pxar_decoder_free(d);
	while (x.depth > 0) {
		struct xdir *s = &x.stack[--x.depth];
		if (x.depth > 0 && s->fd >= 0)
			close(s->fd);
		free(s->name);
	}
	free(x.stack);
	for (size_t i = 0; i < x.ncopies; i++)
		free(x.copies[i].path);
	free(x.copies);
	if (x.root_fd >= 0)
		close(x.root_fd);
	free(x.buf);
	cn_pxar_accessor_free(x.acc);
	return rc < 0 ? rc : 0;
}

/* ---- listing ----------------------------------------------------------------------- */

/* Reads all of the current FILE entry's content, checking nothing itself
 * (the input checks what it serves): lent where the input lends it, else
 * into buf (cap bytes). */
static int read_content(struct cn_pxar_decoder *d, const struct cn_pxar_entry *e, uint8_t *buf,
			size_t cap)
{
	for (uint64_t off = 0; off < e->file_size;) {
		const uint8_t *data;
		size_t n;
		void *token;
		int rc = content_piece(d, e, off, buf, cap, &data, &n, &token);
		if (rc < 0)
			return rc;
		if (rc)
			cn_pxar_decoder_release(d, token);
		off += n;
	}
	return 0;
}

/* Lists (and with buf reads) what d decodes that sel takes. */
static int walk_decoder(struct cn_pxar_decoder *d, const struct cn_pxar_select *sel,
			cn_pxar_list_fn fn, void *ctx, uint8_t *buf, size_t cap)
{
	/* each open directory's decision, inherited by what no argument matches */
	struct cn_buf taken = {0};
	uint8_t top = (uint8_t)cn_pxar_select_initial(sel);
	const struct cn_pxar_entry *e;
	int rc;
	while ((rc = cn_pxar_decoder_next(d, &e)) > 0) {
		if (e->kind == CN_PXAR_KIND_DIR_END) {
			if (taken.len > 0)
				taken.len--;
			continue;
		}
		uint8_t inherited = taken.len ? taken.data[taken.len - 1] : top;
		uint8_t listed = e->path_len == 0 ? top
				 : (uint8_t)cn_pxar_select_entry(sel, inherited, e);
		if (e->kind == CN_PXAR_KIND_DIR && cn_buf_append(&taken, &listed, 1) < 0) {
			rc = cn_error_set(-ENOMEM, "out of memory");
			break;
		}
		if (!listed)
			continue;
		rc = fn(ctx, e);
		if (rc == 0 && buf && e->kind == CN_PXAR_KIND_FILE)
			rc = read_content(d, e, buf, cap);
		if (rc < 0)
			break;
	}
	cn_buf_free(&taken);
	return rc;
}

/* cn_pxar_list, and with buf (cap bytes) cn_pxar_verify. */
static int walk_entries(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
			const struct cn_pxar_select *sel, cn_pxar_list_fn fn, void *ctx,
			uint8_t *buf, size_t cap)
{
	struct cn_pxar_decoder *d = NULL;
	size_t lookups = cn_pxar_select_lookups(sel);
	int rc;
	if (!lookups) {
		rc = cn_pxar_decoder_new(in, payload, &d);
		if (rc == 0)
			rc = walk_decoder(d, sel, fn, ctx, buf, cap);
		cn_pxar_decoder_free(d);
		return rc < 0 ? rc : 0;
	}
	struct cn_pxar_accessor *acc = NULL;
	rc = cn_pxar_accessor_open(in, payload, &acc);
	if (rc == 0)
		rc = check_lookups(acc, sel);
	for (size_t i = 0; rc >= 0 && i < lookups; i++) {
		const char *p = cn_pxar_select_lookup(sel, i);
		struct cn_pxar_range r;
		rc = find_path(acc, p, &r);
		if (rc == 0)
			rc = cn_pxar_accessor_decoder(acc, &r, p, &d);
		if (rc == 0) {
			rc = walk_decoder(d, sel, fn, ctx, buf, cap);
			cn_pxar_decoder_free(d);
		}
	}
	cn_pxar_accessor_free(acc);
	return rc < 0 ? rc : 0;
}

int cn_pxar_list(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
		 const struct cn_pxar_select *sel, cn_pxar_list_fn fn, void *ctx)
{
	return walk_entries(in, payload, sel, fn, ctx, NULL, 0);
}

int cn_pxar_verify(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
		   const struct cn_pxar_select *sel, cn_pxar_list_fn fn, void *ctx)
{
	uint8_t *buf = malloc(COPY_BUF);
	if (!buf)
		return cn_error_set(-ENOMEM, "out of memory");
	int rc = walk_entries(in, payload, sel, fn, ctx, buf, COPY_BUF);
	free(buf);
	return rc;
}

static void symbolic(char *o, uint64_t bits, int special, char set, char unset)
{
	o[0] = bits & 4 ? 'r' : '-';
	o[1] = bits & 2 ? 'w' : '-';
	o[2] = special ? (bits & 1 ? set : unset) : (bits & 1 ? 'x' : '-');
}

int cn_pxar_format_entry(const struct cn_pxar_entry *e, char *buf, size_t len)
{
	char mode[13], size[48], mt[64], owner[32];
	uint64_t m = e->mode;
	char t;
	if (e->kind == CN_PXAR_KIND_HARDLINK) {
		t = 'L';
	} else {
		switch (m & CN_PXAR_IFMT) {
		case CN_PXAR_IFREG: t = '-'; break;
		case CN_PXAR_IFBLK: t = 'b'; break;
		case CN_PXAR_IFCHR: t = 'c'; break;
		case CN_PXAR_IFDIR: t = 'd'; break;
		case CN_PXAR_IFLNK: t = 'l'; break;
		case CN_PXAR_IFIFO: t = 'p'; break;
		case CN_PXAR_IFSOCK: t = 's'; break;
		default: t = '?'; break;
		}
	}
	mode[0] = t;
	symbolic(mode + 1, (m >> 6) & 7, !!(m & CN_PXAR_ISUID), 's', 'S');
	symbolic(mode + 4, (m >> 3) & 7, !!(m & CN_PXAR_ISGID), 's', 'S');
	symbolic(mode + 7, m & 7, !!(m & CN_PXAR_ISVTX), 't', 'T');
	mode[10] = acl_empty(e) ? ' ' : '+';
	mode[11] = e->xattr_count ? '+' : ' ';
	mode[12] = 0;
	if (e->kind == CN_PXAR_KIND_FILE)
		snprintf(size, sizeof(size), "%" PRIu64, e->file_size);
	else if (e->kind == CN_PXAR_KIND_DEVICE)
		snprintf(size, sizeof(size), "%" PRIu64 ",%" PRIu64, e->dev_major, e->dev_minor);
	else
		snprintf(size, sizeof(size), "0");
	snprintf(owner, sizeof(owner), "%u/%u", e->uid, e->gid);
	time_t secs = (time_t)e->mtime_sec;
	struct tm tm;
	if (localtime_r(&secs, &tm))
		strftime(mt, sizeof(mt), "%Y-%m-%d %H:%M:%S", &tm);
	else
		snprintf(mt, sizeof(mt), "%" PRId64 ".%u", e->mtime_sec, e->mtime_nsec);
	int link = e->kind == CN_PXAR_KIND_SYMLINK || e->kind == CN_PXAR_KIND_HARDLINK;
	/* names are escaped as by cn_escape: an archive cannot send terminal
	 * escapes through a listing */
	size_t n = (size_t)snprintf(buf, len, "%s %-13s %s %8s \"/", mode, owner, mt, size);
	n += cn_escape(e->path, e->path_len, 1, buf + (n < len ? n : len), n < len ? len - n : 0);
	if (link) {
		n += (size_t)snprintf(buf + (n < len ? n : len), n < len ? len - n : 0, "\" -> \"");
		n += cn_escape(e->link, e->link_len, 1, buf + (n < len ? n : len), n < len ? len - n : 0);
	}
	n += (size_t)snprintf(buf + (n < len ? n : len), n < len ? len - n : 0, "\"");
	return (int)n;
}
