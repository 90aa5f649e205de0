/* cn_pxar_extract — see cn_pxar_extract.h. Upstream: proxmox-backup
 * pbs-client/src/pxar/extract.rs (Extractor, extract_file with sparse_copy,
 * extract_hardlink via linkat from the root fd), metadata.rs (apply order,
 * apply_acls, is_valid_xattr_name), pxar-bin list.
 *
 * Invariant: every descriptor in the directory stack was obtained from the
 * target directory's descriptor by openat(name, O_DIRECTORY|O_NOFOLLOW)
 * with decoder-checked single-component names, so it is inside the target;
 * every object is created relative to one of them.
 *
 * Regular files (placing and writing their content) are in
 * cn_extract_file.c, applying metadata in cn_extract_meta.c, listing and
 * verifying in cn_pxar_list.c; what they share with this file is in
 * cn_pxar_extract_impl.h.
 */
#include "engine/cn_pxar_extract_impl.h"
#include "common/cn_util.h"
#include "pxar/cn_pxar_dir.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define NO_OFFSET UINT64_MAX

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

/* Whether the directory fd has a default ACL (new entries in it inherit
 * ACL entries). */
static int has_default_acl(int fd)
{
	return fgetxattr(fd, "system.posix_acl_default", NULL, 0) > 0;
}

/* Creates (or, if allowed, opens) the directory stack[i] inside its
 * parent. */
static int make_dir(struct extractor *x, size_t i, const char *path)
{
	struct xdir *d = &x->stack[i];
	int parent = x->stack[i - 1].fd;
	int existed = 0;
	if (mkdirat(parent, d->name, 0700) < 0) {
		if (errno != EEXIST)
			return cn_error_sys(-errno, "failed to create directory '%s' (for '%s')", d->name, path);
		if (!x->o->allow_existing_dirs)
			return cn_error_set(-EEXIST, "directory '%s' (for '%s') already exists (allow existing directories to extract into it)",
					    d->name, path);
		existed = 1;
	}
	d->fd = openat(parent, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d->fd < 0)
		return cn_error_sys(-errno, "failed to open directory '%s' (for '%s'; not a directory or a symlink?)",
				    d->name, path);
	d->acl_inherits = x->stack[i - 1].acl_inherits || (existed && has_default_acl(d->fd));
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
			rc = target_full(rc) ? rc : soft_error(x, rc);
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
		x->strip_acl = x->depth > 1 && x->stack[x->depth - 2].acl_inherits;
		if (rc == 0)
			rc = cn_xt_apply_meta(x, e, *path ? path : ".", d->fd, -1, NULL);
		x->strip_acl = 0;
	}
	if (x->depth > 1 && d->fd >= 0)
		close(d->fd);
	free(d->name);
	x->depth--;
	return rc;
}

/* ---- entries --------------------------------------------------------------------- */

/* Removes an existing non-directory at name when overwriting. Returns 1
 * when something was removed (retry), 0 when not allowed. */
static int make_room(struct extractor *x, int parent, const char *name)
{
	if (!x->o->overwrite)
		return 0;
	return unlinkat(parent, name, 0) == 0;
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
		rc = cn_xt_extract_file(x, d, te, parent, name, path);
	cn_pxar_decoder_free(d);
	if (rc == 0)
		rc = add_copy(x, i, r.filename_offset, path);
	return rc;
}

static int extract_hardlink(struct extractor *x, const struct cn_pxar_entry *e, int parent,
			    const char *name, const char *path)
{
	/* its target may still be written on the writer threads under a
	 * temporary name while it replaces a file, or be removed when its
	 * content failed: those are finished first (a file being written in
	 * place links as it is) */
	int rc = x->unsettled ? cn_xt_reap_files(x, 0) : 0;
	if (rc == 0)
		rc = link_to(x, e->link, parent, name, path);
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
	return cn_xt_apply_meta(x, e, path, -1, parent, name);
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
	int rc = cn_xt_apply_meta(x, e, path, fd, parent, name);
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
	x->strip_acl = x->stack[x->depth - 1].acl_inherits;
	switch (e->kind) {
	case CN_PXAR_KIND_FILE:
		rc = cn_xt_extract_file(x, d, e, parent, e->name, e->path);
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
	x->strip_acl = 0;
	/* an entry that cannot be restored is skipped, unless what failed
	 * would fail every entry after it: the archive itself, memory, a
	 * full target, or the source of its content (a stalled or
	 * unreachable server would make each file wait for the same
	 * timeout) */
	if (rc < 0 && rc != -CN_E_FORMAT && rc != -CN_E_TRUNCATED && rc != -ENOMEM &&
	    !target_full(rc) && !cn_error_is_unavailable(rc))
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
int cn_xt_find_path(struct cn_pxar_accessor *acc, const char *p, struct cn_pxar_range *r)
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
		rc = cn_xt_find_path(x->acc, buf, &r);
		if (rc < 0)
			break;
		const char *nm = strrchr(buf, '/');
		rc = push_dir(x, nm ? nm + 1 : buf, cn_pxar_select_initial(x->sel), &r);
		*s = '/';
		if (rc < 0)
			break;
	}
	if (rc >= 0)
		rc = cn_xt_find_path(x->acc, buf, out);
	free(buf);
	return rc;
}

/* ---- going on after damaged data -------------------------------------------------
 *
 * Damaged data (a chunk that failed its check, or is missing) in a file's
 * content costs that file only. Where it holds entries (headers, names),
 * the decoder cannot go on; the entries after the damage are found
 * through the goodbye tables of the directories still open, whose
 * children carry their offsets, and extracted one subtree at a time. What
 * the damaged data holds is left out and reported. */

/* Whether rc says the input's data is damaged or missing, not the
 * archive malformed or the source unavailable. */
static int is_damage(int rc)
{
	return cn_error_is_corruption(rc) && rc != -CN_E_FORMAT && rc != -CN_E_TRUNCATED;
}

static int extract_entries(struct extractor *x, struct cn_pxar_decoder *d, size_t base);

/* Extracts the entry at r (a child found through a goodbye table, with
 * its subtree) as path. */
static int extract_range(struct extractor *x, const struct cn_pxar_range *r, const char *path)
{
	struct cn_pxar_decoder *d;
	int rc = cn_pxar_accessor_decoder(x->acc, r, path, &d);
	if (rc < 0)
		return is_damage(rc) ? soft_error(x, cn_error_prefix(rc, "'%s' left out", path)) : rc;
	rc = extract_entries(x, d, x->depth);
	cn_pxar_decoder_free(d);
	return rc;
}

static int cmp_child_offset(const void *a, const void *b)
{
	const struct cn_pxar_child *const *x = a, *const *y = b;
	uint64_t p = (*x)->range.filename_offset, q = (*y)->range.filename_offset;
	return p < q ? -1 : p > q;
}

/* The children of the innermost open directory (path dpath) that start
 * after last_fo, extracted in archive order. */
static int extract_rest_of_dir(struct extractor *x, const char *dpath, uint64_t last_fo)
{
	struct cn_pxar_range dr = cn_pxar_root_range(x->in->size);
	struct cn_pxar_dirlist *l = NULL;
	int rc = x->depth == 1 ? 0 : cn_xt_find_path(x->acc, dpath, &dr);
	if (rc == 0)
		rc = cn_pxar_dir_read(x->in, x->o->payload != NULL, &dr, &l);
	if (rc < 0)
		return is_damage(rc) ? soft_error(x, cn_error_prefix(rc, "the rest of '%s' left out",
								     *dpath ? dpath : ".")) : rc;
	const char *why;
	size_t lost = cn_pxar_dirlist_unreadable(l, &why), n = cn_pxar_dirlist_count(l), k = 0;
	if (lost)
		rc = soft_error(x, cn_error_set(-CN_E_CHECKSUM, "%zu entr%s of '%s' left out: %s", lost,
						lost == 1 ? "y" : "ies", *dpath ? dpath : ".", why));
	const struct cn_pxar_child **after = rc < 0 ? NULL : malloc((n + 1) * sizeof(*after));
	if (!after) {
		cn_pxar_dirlist_free(l);
		return rc < 0 ? rc : cn_error_set(-ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		const struct cn_pxar_child *c = cn_pxar_dirlist_get(l, i);
		if (c->range.filename_offset > last_fo)
			after[k++] = c;
	}
	qsort(after, k, sizeof(*after), cmp_child_offset);
	for (size_t i = 0; i < k && rc >= 0; i++) {
		char *p = malloc(strlen(dpath) + after[i]->name_len + 2);
		if (!p) {
			rc = cn_error_set(-ENOMEM, "out of memory");
			break;
		}
		sprintf(p, "%s%s%s", dpath, *dpath ? "/" : "", after[i]->name);
		rc = extract_range(x, &after[i]->range, p);
		free(p);
	}
	free(after);
	cn_pxar_dirlist_free(l);
	return rc;
}

/* After a decoder stopped at damaged data, with the directories above
 * depth base still open and last_fo the offset of the last entry it gave:
 * extracts what follows in each of them, innermost first, and closes
 * them. */
static int resume_after_damage(struct extractor *x, size_t base, uint64_t last_fo)
{
	int rc = 0;
	while (rc >= 0 && x->depth > base) {
		char *dpath = join_stack(x);
		if (!dpath)
			return cn_error_set(-ENOMEM, "out of memory");
		uint64_t fo = x->stack[x->depth - 1].r.filename_offset;
		rc = extract_rest_of_dir(x, dpath, last_fo);
		if (rc >= 0 && (rc = cn_xt_reap_files(x, CN_XT_MAX_OPEN_FILES)) >= 0) {
			rc = pop_dir(x, dpath);
			if (rc < 0 && is_damage(rc))
				rc = soft_error(x, cn_error_prefix(rc, "metadata of '%s' not applied",
								   *dpath ? dpath : "."));
		}
		free(dpath);
		last_fo = fo;
	}
	return rc;
}

/* Extracts what d decodes, with the directories down to depth base open
 * when it started; its first entry is the archive root unless a path was
 * looked up or d decodes one subtree. */
static int extract_entries(struct extractor *x, struct cn_pxar_decoder *d, size_t base)
{
	const struct cn_pxar_entry *e;
	int rc, first = 1;
	uint64_t last_fo = 0;
	while ((rc = cn_pxar_decoder_next(d, &e)) > 0) {
		if (e->kind != CN_PXAR_KIND_DIR_END && e->filename_offset != NO_OFFSET)
			last_fo = e->filename_offset;
		rc = handle_entry(x, d, e, first && !x->looked_up && base == 0);
		first = 0;
		if (rc >= 0)
			rc = cn_xt_reap_files(x, CN_XT_MAX_OPEN_FILES);
		if (rc < 0)
			break;
	}
	if (rc < 0 && is_damage(rc) && !x->o->strict) {
		cn_log_error("%s", cn_error_message());
		x->st->errors++;
		rc = resume_after_damage(x, base, last_fo);
	}
	return rc;
}

/* Fails with -ENOENT, naming the path, unless every path sel looks up is
 * in the archive: checked before anything is written. */
int cn_xt_check_lookups(struct cn_pxar_accessor *acc, const struct cn_pxar_select *sel)
{
	for (size_t i = 0; i < cn_pxar_select_lookups(sel); i++) {
		struct cn_pxar_range r;
		int rc = cn_xt_find_path(acc, cn_pxar_select_lookup(sel, i), &r);
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
	rc = extract_entries(x, d, x->depth);
	cn_pxar_decoder_free(d);
	return rc;
}

/* rc of extracting the archive's entries: an unsafe path there (a name
 * with '/' or "..", a hardlink out of the tree) is a malformed archive,
 * reported as such (the paths the caller gave were checked before). */
static int archive_error(int rc)
{
	if (rc != -CN_E_PATH)
		return rc;
	char msg[1024];
	snprintf(msg, sizeof(msg), "%s", cn_error_message());
	return cn_error_set(-CN_E_FORMAT, "%s", msg);
}

/* Creates the target directory dir with mode, and its missing parents
 * (as mkdir -p); an existing one is fine. */
static int make_target(const char *dir, mode_t mode)
{
	if (mkdir(dir, mode) == 0 || errno == EEXIST)
		return 0;
	if (errno == ENOENT) {
		char *parent = strdup(dir), *slash = parent ? strrchr(parent, '/') : NULL;
		int rc = parent ? 0 : cn_error_set(-ENOMEM, "out of memory");
		if (slash && slash != parent) {
			*slash = '\0';
			rc = cn_mkdir_p(parent, 0777);
		}
		free(parent);
		if (rc < 0)
			return rc;
		if (mkdir(dir, mode) == 0 || errno == EEXIST)
			return 0;
	}
	return cn_error_sys(-errno, "failed to create target directory '%s'", dir);
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
	/* a new target gets the archive root's metadata at the end; one that
	 * receives selected paths only keeps a new directory's usual mode */
	int root_meta = !cn_pxar_select_lookups(x.o->select) && cn_pxar_select_initial(x.o->select);
	if ((rc = make_target(target_dir, root_meta ? 0700 : 0777)) < 0)
		goto out;
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
	x.stack[0].acl_inherits = has_default_acl(x.root_fd);

	size_t lookups = cn_pxar_select_lookups(x.sel);
	if (lookups) {
		x.looked_up = 1;
		rc = cn_xt_check_lookups(x.acc, x.sel);
		for (size_t i = 0; rc >= 0 && i < lookups; i++)
			rc = archive_error(extract_lookup(&x, cn_pxar_select_lookup(x.sel, i)));
	} else {
		x.apply_root_meta = top;
		rc = cn_pxar_decoder_new(in, x.o->payload, &d);
		if (rc == 0)
			rc = archive_error(extract_entries(&x, d, 0));
	}
	if (rc >= 0)
		rc = cn_xt_reap_files(&x, 0);
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
	cn_write_pool_free(x.w, cn_xt_free_xfile);
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
