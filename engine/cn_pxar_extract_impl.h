/* cn_pxar_extract_impl.h — private to the extractor's files
 * (cn_pxar_extract.c, cn_extract_file.c, cn_extract_meta.c, cn_pxar_list.c):
 * the state one extraction shares between them and the functions one of
 * them lends the others (prefix cn_xt_). Nothing else includes it; the
 * public interface is cn_pxar_extract.h.
 */
#ifndef CN_PXAR_EXTRACT_IMPL_H
#define CN_PXAR_EXTRACT_IMPL_H

#include "engine/cn_pxar_extract.h"
#include "pxar/cn_pxar_format.h"
#include "engine/cn_write_pool.h"
#include "common/cn_error.h"
#include "common/cn_log.h"

#include <errno.h>
#include <linux/fs.h>
#include <stdint.h>

#define COPY_BUF (1u << 20)

struct xdir {
	char *name;               /* component (NULL for the target itself) */
	int fd;                   /* -1 until created */
	int taken;                /* selected: what entries below inherit */
	int failed;               /* creation failed: skip its subtree */
	struct cn_pxar_range r;   /* where its metadata is (for the end) */
	int have_range;
	int acl_inherits;         /* entries made in it inherit a default ACL that
				   * was there before (an existing directory's, or
				   * an ancestor's): the archive's ACLs replace it */
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
	unsigned tmp_serial;      /* names of replacements being written */
	size_t unsettled;         /* files on the writer threads not at their
				   * name yet (replacements) or to be removed */
	int strip_acl;            /* the entry being finished was made where a
				   * default ACL it does not have in the archive
				   * was inherited (set around apply_meta) */
};

/* Whether rc says the target file system is full (no space or inodes
 * left, or over quota): every entry after it would fail the same way. */
static inline int target_full(int rc)
{
	return rc == -ENOSPC || rc == -EDQUOT;
}

/* Records a non-fatal error: logged and counted, fatal when strict. rc is
 * the code with its message already set. */
static inline int soft_error(struct extractor *x, int rc)
{
	if (x->o->strict)
		return rc;
	cn_log_error("%s", cn_error_message());
	x->st->errors++;
	return 0;
}

/* ---- metadata (cn_extract_meta.c) ---------------------------------------------- */

/* flags.rs INITIAL_FS_FLAGS: set on a file before its data is written. */
#define INITIAL_CHATTR (FS_NOATIME_FL | FS_COMPR_FL | FS_NOCOW_FL | FS_NOCOMP_FL | FS_PROJINHERIT_FL)

/* The chattr bits (FS_*_FL) of pxar Stat.flags. */
int cn_xt_to_chattr(uint64_t flags);

#define CHATTR_MASK (cn_xt_to_chattr(CN_PXAR_FLAGS_DEFAULT))

/* The metadata a write to a file would undo or that would block one:
 * permission bits (a write clears set-uid/gid for the unprivileged),
 * mtime, chattr flags (immutable, append-only). */
struct late_meta {
	uint64_t mode, flags;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
};

static inline struct late_meta late_of(const struct cn_pxar_entry *e)
{
	struct late_meta m = { e->mode, e->flags, e->mtime_sec, e->mtime_nsec };
	return m;
}

/* Whether xa holds file capabilities (security.capability). */
int cn_xt_is_fcaps_xattr(const struct cn_pxar_xattr *xa);

/* Whether e has no ACL entries beyond its permission bits. */
int cn_xt_acl_empty(const struct cn_pxar_entry *e);

/* Sets the chattr bits within mask on fd; unsupported file systems are
 * ignored. Returns 0 or a negative errno (no message set). */
int cn_xt_apply_chattr(int fd, int chattr, int mask);

/* Writes "/proc/self/fd/<fd>" to buf (len bytes), or "" when fd < 0. */
void cn_xt_proc_path(char *buf, size_t len, int fd);

/* Applies owner, xattrs, file capabilities and ACLs of e (proc: the
 * cn_xt_proc_path of fd). Failures are soft errors; returns 0 or a fatal
 * code. */
int cn_xt_apply_meta_early(struct extractor *x, const struct cn_pxar_entry *e, const char *path,
			   int fd, const char *proc, int parent, const char *name);

/* Applies permission bits, mtime and chattr flags of m. Same returns. */
int cn_xt_apply_meta_late(struct extractor *x, const struct late_meta *m, const char *path,
			  int fd, const char *proc, int parent, const char *name);

/* Applies all of e's metadata to fd, or to (parent, name) for a symlink
 * (fd -1). Same returns. */
int cn_xt_apply_meta(struct extractor *x, const struct cn_pxar_entry *e, const char *path,
		     int fd, int parent, const char *name);

/* ---- regular files (cn_extract_file.c) ------------------------------------------- */

/* Creates the regular file e (name in parent, path for messages) and
 * writes its content from d, inline or queued to the writer threads (then
 * finished by cn_xt_reap_files); a file it replaces (overwrite) stays until
 * the new one is complete, and a file whose content fails is removed.
 * Returns 0 or a negative code (soft errors counted, as handle_entry). */
int cn_xt_extract_file(struct extractor *x, struct cn_pxar_decoder *d,
		       const struct cn_pxar_entry *e, int parent, const char *name,
		       const char *path);

/* Files on the writer threads that may wait to be finished. */
#define CN_XT_MAX_OPEN_FILES 64

/* Finishes the files on the writer threads whose writes are done, oldest
 * first, waiting for them while more than keep are open. */
int cn_xt_reap_files(struct extractor *x, size_t keep);

/* Frees a file's writer-thread context (cn_write_pool_free's drop). */
void cn_xt_free_xfile(void *ctx);

/* ---- shared by extraction and listing (cn_extract_file.c) ------------------------- */

/* The next piece of the current FILE entry's content at off: lent
 * (returns 1) or read into buf (returns 0), or a negative code. */
int cn_xt_content_piece(struct cn_pxar_decoder *d, const struct cn_pxar_entry *e, uint64_t off,
			uint8_t *buf, size_t cap, const uint8_t **data, size_t *n, void **token);

/* Finds the literal path p: 0 with *r, -ENOENT naming it, or an error. */
int cn_xt_find_path(struct cn_pxar_accessor *acc, const char *p, struct cn_pxar_range *r);

/* -ENOENT naming the first path sel looks up that is not in the archive,
 * else 0 (or the accessor's error). */
int cn_xt_check_lookups(struct cn_pxar_accessor *acc, const struct cn_pxar_select *sel);

#endif
