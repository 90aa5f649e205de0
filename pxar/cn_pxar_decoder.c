/* cn_pxar_decoder — validating pxar decoder and goodbye-table accessor.
 * See cn_pxar_decoder.h for what is checked; upstream: proxmox/pxar
 * src/decoder/mod.rs (state machine), src/accessor/mod.rs (random access),
 * src/binary_tree_array.rs (search_by).
 *
 * Invariants of the sequential decoder:
 *  - d->pos is the offset of the next item header to read; every item read
 *    lies inside [range_start, range_end) (checked before reading);
 *  - stack[0..depth) are the open directories, innermost last; children[]
 *    holds, for each open directory from stack[i].child_start on, one
 *    record per finished child (hash, FILENAME offset, end) — exactly what
 *    its goodbye table must contain;
 *  - the path buffer holds the path of the last returned entry; it is cut
 *    back to the innermost open directory at the start of the next call.
 */
#include "pxar/cn_pxar_decoder.h"
#include "pxar/cn_pxar_format.h"
#include "common/cn_error.h"
#include "common/cn_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NO_OFFSET UINT64_MAX
#define MAX_HASH_DUPS 64 /* SipHash collisions among one directory's names */

/* ---- inputs -------------------------------------------------------------- */

static int mem_read_at(void *ctx, uint64_t off, void *buf, size_t len)
{
	/* The decoder checks bounds against size before calling. */
	memcpy(buf, (const uint8_t *)ctx + off, len);
	return 0;
}

void cn_pxar_input_mem(struct cn_pxar_input *in, const void *data, size_t len)
{
	*in = (struct cn_pxar_input){.read_at = mem_read_at, .size = len, .ctx = (void *)data};
}

static int fd_read_at(void *ctx, uint64_t off, void *buf, size_t len)
{
	int fd = (int)(intptr_t)ctx;
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return cn_error_sys(-errno, "reading archive at offset %llu",
					    (unsigned long long)off);
		}
		if (n == 0)
			return cn_error_set(-CN_E_TRUNCATED, "archive file shrank while reading (offset %llu)",
					    (unsigned long long)off);
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int cn_pxar_input_fd(struct cn_pxar_input *in, int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return cn_error_sys(-errno, "fstat archive");
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return cn_error_set(-EINVAL, "archive is not a regular file");
	*in = (struct cn_pxar_input){.read_at = fd_read_at, .size = (uint64_t)st.st_size,
				     .ctx = (void *)(intptr_t)fd};
	return 0;
}

/* ---- names ---------------------------------------------------------------- */

int cn_pxar_check_relpath(const char *path, size_t len)
{
	if (len == 0 || path[0] == '/')
		return cn_error_set(-CN_E_PATH, "hardlink target is not a relative path");
	if (len > CN_PXAR_MAX_PATH_LEN)
		return cn_error_set(-CN_E_PATH, "hardlink target too long");
	size_t i = 0;
	while (i < len) {
		const char *s = path + i;
		const char *e = memchr(s, '/', len - i);
		size_t n = e ? (size_t)(e - s) : len - i;
		int rc = cn_pxar_check_filename(s, n);
		if (rc < 0)
			return cn_error_prefix(rc, "hardlink target '%.*s'", (int)len, path);
		i += n + 1;
		if (e && i == len)
			return cn_error_set(-CN_E_PATH, "hardlink target ends with '/'");
	}
	return 0;
}

/* ---- decoder state ---------------------------------------------------------- */

struct frame {
	uint64_t entry_off;     /* the directory's ENTRY (or range start) */
	uint64_t filename_off;  /* its FILENAME header, NO_OFFSET for the range root */
	uint64_t hash;          /* goodbye hash of its name (not for the root) */
	size_t path_len;        /* length of its path in the path buffer */
	size_t child_start;     /* first record of its children in children[] */
};

struct child_rec {
	uint64_t hash, offset, size; /* relative values as in the goodbye table */
	uint64_t filename_off, end;  /* absolute, while the directory is open */
	uint64_t extra;              /* v2 split file: its size, which upstream's
				      * encoder may add to the item's size */
};

struct xa_off {
	size_t off, name_len, value_len;
};

struct acl_list {
	struct cn_pxar_acl_entry *v;
	size_t n, cap;
};

enum state { ST_BEGIN, ST_IN_DIR, ST_DONE, ST_FAILED };

struct cn_pxar_decoder {
	struct cn_pxar_input in;
	struct cn_pxar_input payload;
	int has_payload;
	int metadata_only;  /* v2 without payload input: PAYLOAD_REF not followed */
	uint64_t payload_next;  /* a PAYLOAD_REF points at or after this: every
				 * payload is referenced once and in stream order
				 * (upstream's payload_consumed), so what a decode
				 * yields is bounded by the payload stream's size */
	int version;
	uint64_t range_start, range_end;
	uint64_t root_filename_off;
	int exact_end;          /* the range root must end exactly at range_end */
	enum state state;
	uint64_t pos;

	struct frame *stack;
	size_t depth, stack_cap;
	struct child_rec *children;
	size_t nchildren, children_cap;

	char *path;
	size_t path_len, path_cap, base_len;

	/* per-entry storage */
	struct cn_pxar_entry e;
	struct cn_buf meta;     /* xattr/fcaps/link bytes of the current entry */
	struct xa_off *xa;
	struct cn_pxar_xattr *xattrs;
	size_t nxa, xa_cap, xattrs_cap;
	size_t fcaps_off, link_off;
	struct acl_list acl[4]; /* users, groups, default users, default groups */
	uint8_t *gb_buf;        /* goodbye table being verified */
	size_t gb_cap;
};

static const char *htype_name(uint64_t t)
{
	switch (t) {
	case CN_PXAR_FORMAT_VERSION: return "FORMAT_VERSION";
	case CN_PXAR_PRELUDE: return "PRELUDE";
	case CN_PXAR_ENTRY: return "ENTRY";
	case CN_PXAR_ENTRY_V1: return "ENTRY_V1";
	case CN_PXAR_FILENAME: return "FILENAME";
	case CN_PXAR_SYMLINK: return "SYMLINK";
	case CN_PXAR_DEVICE: return "DEVICE";
	case CN_PXAR_XATTR: return "XATTR";
	case CN_PXAR_ACL_USER: return "ACL_USER";
	case CN_PXAR_ACL_GROUP: return "ACL_GROUP";
	case CN_PXAR_ACL_GROUP_OBJ: return "ACL_GROUP_OBJ";
	case CN_PXAR_ACL_DEFAULT: return "ACL_DEFAULT";
	case CN_PXAR_ACL_DEFAULT_USER: return "ACL_DEFAULT_USER";
	case CN_PXAR_ACL_DEFAULT_GROUP: return "ACL_DEFAULT_GROUP";
	case CN_PXAR_FCAPS: return "FCAPS";
	case CN_PXAR_QUOTA_PROJID: return "QUOTA_PROJID";
	case CN_PXAR_HARDLINK: return "HARDLINK";
	case CN_PXAR_PAYLOAD: return "PAYLOAD";
	case CN_PXAR_PAYLOAD_REF: return "PAYLOAD_REF";
	case CN_PXAR_GOODBYE: return "GOODBYE";
	case CN_PXAR_PAYLOAD_START_MARKER: return "PAYLOAD_START_MARKER";
	case CN_PXAR_PAYLOAD_TAIL_MARKER: return "PAYLOAD_TAIL_MARKER";
	default: return "unknown";
	}
}

/* Largest content the format allows for an item type (upstream
 * Header::max_content_size). */
static uint64_t max_content(uint64_t t)
{
	switch (t) {
	case CN_PXAR_FILENAME: return CN_PXAR_MAX_FILENAME_LEN + 1;
	case CN_PXAR_SYMLINK: return CN_PXAR_MAX_PATH_LEN + 1;
	case CN_PXAR_HARDLINK: return CN_PXAR_MAX_PATH_LEN + 1 + 8;
	case CN_PXAR_DEVICE: return CN_PXAR_DEVICE_SIZE;
	case CN_PXAR_XATTR:
	case CN_PXAR_FCAPS: return CN_PXAR_MAX_XATTR_CONTENT;
	case CN_PXAR_ACL_USER:
	case CN_PXAR_ACL_DEFAULT_USER: return CN_PXAR_ACL_USER_SIZE;
	case CN_PXAR_ACL_GROUP:
	case CN_PXAR_ACL_DEFAULT_GROUP: return CN_PXAR_ACL_GROUP_SIZE;
	case CN_PXAR_ACL_DEFAULT: return CN_PXAR_ACL_DEFAULT_SIZE;
	case CN_PXAR_ACL_GROUP_OBJ: return CN_PXAR_ACL_GROUP_OBJ_SIZE;
	case CN_PXAR_QUOTA_PROJID: return CN_PXAR_QUOTA_PROJID_SIZE;
	case CN_PXAR_ENTRY: return CN_PXAR_STAT_SIZE;
	case CN_PXAR_PAYLOAD_REF: return 16;
	case CN_PXAR_PAYLOAD_TAIL_MARKER: return CN_PXAR_HEADER_SIZE;
	default: return UINT64_MAX - CN_PXAR_HEADER_SIZE;
	}
}

/* -CN_E_TRUNCATED unless [off, off + len) lies within limit and the input. */
static int in_range(const struct cn_pxar_input *in, uint64_t limit, uint64_t off, size_t len)
{
	if (limit > in->size)
		limit = in->size;
	if (off > limit || len > limit - off)
		return cn_error_set(-CN_E_TRUNCATED,
				    "archive truncated: need %zu bytes at offset %llu, data ends at %llu",
				    len, (unsigned long long)off, (unsigned long long)limit);
	return 0;
}

/* Reads len bytes at off of in, which must lie below limit. */
static int rd(const struct cn_pxar_input *in, uint64_t limit, uint64_t off, void *buf, size_t len)
{
	int rc = in_range(in, limit, off, len);
	if (rc < 0 || len == 0)
		return rc;
	return in->read_at(in->ctx, off, buf, len);
}

/* Reads and checks the item header at pos; the whole item must end by
 * limit. */
static int read_header(const struct cn_pxar_input *in, uint64_t limit, uint64_t pos,
		       uint64_t *htype, uint64_t *full)
{
	uint8_t h[CN_PXAR_HEADER_SIZE];
	int rc = rd(in, limit, pos, h, sizeof(h));
	if (rc < 0)
		return rc;
	*htype = cn_le64(h);
	*full = cn_le64(h + 8);
	if (*full < CN_PXAR_HEADER_SIZE)
		return cn_error_set(-CN_E_FORMAT, "invalid %s header at offset %llu: size %llu < 16",
				    htype_name(*htype), (unsigned long long)pos,
				    (unsigned long long)*full);
	if (*full - CN_PXAR_HEADER_SIZE > max_content(*htype))
		return cn_error_set(-CN_E_FORMAT,
				    "invalid content size %llu of %s item at offset %llu (max %llu)",
				    (unsigned long long)(*full - CN_PXAR_HEADER_SIZE),
				    htype_name(*htype), (unsigned long long)pos,
				    (unsigned long long)max_content(*htype));
	if (limit > in->size)
		limit = in->size;
	if (*full > limit - pos)
		return cn_error_set(-CN_E_TRUNCATED,
				    "%s item at offset %llu (size %llu) runs past the end of its data (%llu)",
				    htype_name(*htype), (unsigned long long)pos,
				    (unsigned long long)*full, (unsigned long long)limit);
	return 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 16;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * elem);
	if (!q)
		return cn_error_set(-ENOMEM, "out of memory");
	*p = q;
	*cap = n;
	return 0;
}

static void reset_entry(struct cn_pxar_decoder *d)
{
	memset(&d->e, 0, sizeof(d->e));
	d->meta.len = 0;
	d->nxa = 0;
	d->fcaps_off = SIZE_MAX;
	d->link_off = SIZE_MAX;
	for (int i = 0; i < 4; i++)
		d->acl[i].n = 0;
	d->e.filename_offset = NO_OFFSET;
}

/* Appends the item content [pos+16, pos+full) to d->meta; *off is where it
 * starts there. */
static int read_meta(struct cn_pxar_decoder *d, uint64_t pos, uint64_t full, size_t *off)
{
	uint64_t len = full - CN_PXAR_HEADER_SIZE;
	if (len > CN_PXAR_MAX_META || d->meta.len + len > CN_PXAR_MAX_META)
		return cn_error_set(-E2BIG, "entry metadata at offset %llu exceeds %u bytes",
				    (unsigned long long)pos, CN_PXAR_MAX_META);
	if (cn_buf_reserve(&d->meta, (size_t)len + 1) < 0)
		return cn_error_set(-ENOMEM, "out of memory");
	int rc = rd(&d->in, d->range_end, pos + CN_PXAR_HEADER_SIZE, d->meta.data + d->meta.len,
		    (size_t)len);
	if (rc < 0)
		return rc;
	*off = d->meta.len;
	d->meta.len += (size_t)len;
	return 0;
}

static int read_u64s(struct cn_pxar_decoder *d, uint64_t pos, uint64_t full, size_t want,
		     uint64_t *v, const char *what)
{
	uint8_t b[32];
	if (full - CN_PXAR_HEADER_SIZE != want * 8)
		return cn_error_set(-CN_E_FORMAT, "bad %s size %llu at offset %llu (expected %zu)",
				    what, (unsigned long long)(full - CN_PXAR_HEADER_SIZE),
				    (unsigned long long)pos, want * 8);
	int rc = rd(&d->in, d->range_end, pos + CN_PXAR_HEADER_SIZE, b, want * 8);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < want; i++)
		v[i] = cn_le64(b + 8 * i);
	return 0;
}

static int add_acl(struct cn_pxar_decoder *d, int which, uint64_t pos, uint64_t full,
		   const char *what)
{
	uint64_t v[2];
	int rc = read_u64s(d, pos, full, 2, v, what);
	if (rc < 0)
		return rc;
	struct acl_list *l = &d->acl[which];
	if (l->n >= CN_PXAR_MAX_ACL)
		return cn_error_set(-E2BIG, "too many ACL entries at offset %llu",
				    (unsigned long long)pos);
	rc = grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v));
	if (rc < 0)
		return rc;
	l->v[l->n].id = v[0];
	l->v[l->n].permissions = v[1];
	l->n++;
	return 0;
}

/* Reads a NUL-terminated string item (SYMLINK, hardlink path) into meta. */
static int read_cstr(struct cn_pxar_decoder *d, uint64_t pos, uint64_t full, size_t skip,
		     size_t *off, size_t *len, const char *what)
{
	size_t o = 0;
	int rc = read_meta(d, pos, full, &o);
	if (rc < 0)
		return rc;
	size_t n = (size_t)(full - CN_PXAR_HEADER_SIZE) - skip;
	const char *s = (const char *)d->meta.data + o + skip;
	if (n < 2 || s[n - 1] != 0)
		return cn_error_set(-CN_E_FORMAT, "%s at offset %llu is empty or not NUL-terminated",
				    what, (unsigned long long)pos);
	if (memchr(s, 0, n - 1))
		return cn_error_set(-CN_E_FORMAT, "%s at offset %llu contains a NUL byte", what,
				    (unsigned long long)pos);
	*off = o + skip;
	*len = n - 1;
	return 0;
}

/* Checks that the hardlink at filename_off points back to a FILENAME
 * followed by a regular file's ENTRY. */
static int check_hardlink_target(const struct cn_pxar_input *in, uint64_t filename_off,
				 uint64_t offset, uint64_t *target_out)
{
	if (offset == 0 || offset > filename_off)
		return cn_error_set(-CN_E_FORMAT, "invalid offset %llu in hardlink at offset %llu",
				    (unsigned long long)offset, (unsigned long long)filename_off);
	uint64_t t = filename_off - offset, ht, full, et, efull;
	int rc = read_header(in, filename_off, t, &ht, &full);
	if (rc < 0)
		return cn_error_prefix(-CN_E_FORMAT, "hardlink at offset %llu",
				       (unsigned long long)filename_off);
	if (ht != CN_PXAR_FILENAME)
		return cn_error_set(-CN_E_FORMAT, "hardlink at offset %llu points to a %s item, not a file name",
				    (unsigned long long)filename_off, htype_name(ht));
	rc = read_header(in, filename_off, t + full, &et, &efull);
	if (rc < 0)
		return cn_error_prefix(-CN_E_FORMAT, "hardlink at offset %llu",
				       (unsigned long long)filename_off);
	uint8_t m[8];
	if (et != CN_PXAR_ENTRY && et != CN_PXAR_ENTRY_V1)
		return cn_error_set(-CN_E_FORMAT, "hardlink at offset %llu points to a %s item",
				    (unsigned long long)filename_off, htype_name(et));
	rc = rd(in, filename_off, t + full + CN_PXAR_HEADER_SIZE, m, 8);
	if (rc < 0)
		return rc;
	if ((cn_le64(m) & CN_PXAR_IFMT) != CN_PXAR_IFREG)
		return cn_error_set(-CN_E_FORMAT, "hardlink at offset %llu does not point to a regular file",
				    (unsigned long long)filename_off);
	if (target_out)
		*target_out = t;
	return 0;
}

static int push_frame(struct cn_pxar_decoder *d, uint64_t entry_off, uint64_t filename_off,
		      uint64_t hash)
{
	if (d->depth >= CN_PXAR_MAX_DEPTH)
		return cn_error_set(-E2BIG, "directories nested deeper than %d levels (offset %llu)",
				    CN_PXAR_MAX_DEPTH, (unsigned long long)entry_off);
	int rc = grow((void **)&d->stack, &d->stack_cap, d->depth + 1, sizeof(*d->stack));
	if (rc < 0)
		return rc;
	struct frame *f = &d->stack[d->depth++];
	f->entry_off = entry_off;
	f->filename_off = filename_off;
	f->hash = hash;
	f->path_len = d->path_len;
	f->child_start = d->nchildren;
	return 0;
}

/* Parses the entry whose first item is at pos. filename_off is its
 * FILENAME header (NO_OFFSET for the range root). On return d->e is filled
 * (pointers fixed up), d->pos is where the next item starts, and a
 * directory has been pushed. */
static int parse_entry(struct cn_pxar_decoder *d, uint64_t pos, uint64_t filename_off,
		       uint64_t name_hash, int is_root)
{
	struct cn_pxar_entry *e = &d->e;
	uint64_t ht, full;
	int rc = read_header(&d->in, d->range_end, pos, &ht, &full);
	if (rc < 0)
		return rc;
	e->filename_offset = filename_off;
	e->entry_offset = pos;

	if (ht == CN_PXAR_HARDLINK) {
		if (filename_off == NO_OFFSET)
			return cn_error_set(-CN_E_FORMAT, "hardlink at offset %llu without a file name",
					    (unsigned long long)pos);
		if (full - CN_PXAR_HEADER_SIZE <= 8)
			return cn_error_set(-CN_E_FORMAT, "bad hardlink entry (too small) at offset %llu",
					    (unsigned long long)pos);
		size_t off, len;
		rc = read_cstr(d, pos, full, 8, &off, &len, "hardlink target");
		if (rc < 0)
			return rc;
		e->hardlink_offset = cn_le64(d->meta.data + off - 8);
		rc = cn_pxar_check_relpath((const char *)d->meta.data + off, len);
		if (rc < 0)
			return cn_error_prefix(rc, "hardlink at offset %llu", (unsigned long long)pos);
		rc = check_hardlink_target(&d->in, filename_off, e->hardlink_offset, NULL);
		if (rc < 0)
			return rc;
		d->link_off = off;
		e->link_len = len;
		e->kind = CN_PXAR_KIND_HARDLINK;
		e->end_offset = d->pos = pos + full;
		return 0;
	}
	if (ht != CN_PXAR_ENTRY && ht != CN_PXAR_ENTRY_V1)
		return cn_error_set(-CN_E_FORMAT, "expected pxar entry of type 'Entry' at offset %llu, got %s",
				    (unsigned long long)pos, htype_name(ht));

	uint8_t st[CN_PXAR_STAT_SIZE];
	size_t stsize = ht == CN_PXAR_ENTRY ? CN_PXAR_STAT_SIZE : CN_PXAR_STAT_V1_SIZE;
	if (full - CN_PXAR_HEADER_SIZE != stsize)
		return cn_error_set(-CN_E_FORMAT, "bad entry size %llu at offset %llu",
				    (unsigned long long)(full - CN_PXAR_HEADER_SIZE),
				    (unsigned long long)pos);
	rc = rd(&d->in, d->range_end, pos + CN_PXAR_HEADER_SIZE, st, stsize);
	if (rc < 0)
		return rc;
	e->mode = cn_le64(st);
	e->flags = cn_le64(st + 8);
	e->uid = cn_le32(st + 16);
	e->gid = cn_le32(st + 20);
	if (ht == CN_PXAR_ENTRY) {
		e->mtime_sec = (int64_t)cn_le64(st + 24);
		e->mtime_nsec = cn_le32(st + 32);
	} else {
		uint64_t ns = cn_le64(st + 24);
		e->mtime_sec = (int64_t)(ns / 1000000000u);
		e->mtime_nsec = (uint32_t)(ns % 1000000000u);
	}
	if (e->mtime_nsec >= 1000000000u)
		return cn_error_set(-CN_E_FORMAT, "bad mtime nanoseconds %u at offset %llu",
				    e->mtime_nsec, (unsigned long long)pos);
	if (e->mode > 0xffffffffu || (e->mode & ~(uint64_t)(CN_PXAR_IFMT | 07777)) != 0)
		return cn_error_set(-CN_E_FORMAT, "bad mode 0%llo at offset %llu",
				    (unsigned long long)e->mode, (unsigned long long)pos);
	uint64_t type = e->mode & CN_PXAR_IFMT;
	switch (type) {
	case CN_PXAR_IFREG: case CN_PXAR_IFDIR: case CN_PXAR_IFLNK: case CN_PXAR_IFCHR:
	case CN_PXAR_IFBLK: case CN_PXAR_IFIFO: case CN_PXAR_IFSOCK:
		break;
	default:
		return cn_error_set(-CN_E_FORMAT, "unknown file type in mode 0%llo at offset %llu",
				    (unsigned long long)e->mode, (unsigned long long)pos);
	}

	uint64_t p = pos + full;
	for (;;) {
		if (p == d->range_end || p == d->in.size) {
			if (is_root && (type == CN_PXAR_IFIFO || type == CN_PXAR_IFSOCK)) {
				e->kind = type == CN_PXAR_IFIFO ? CN_PXAR_KIND_FIFO : CN_PXAR_KIND_SOCKET;
				e->end_offset = d->pos = p;
				return 0;
			}
			return cn_error_set(-CN_E_TRUNCATED, "unexpected end of archive in entry at offset %llu",
					    (unsigned long long)pos);
		}
		rc = read_header(&d->in, d->range_end, p, &ht, &full);
		if (rc < 0)
			return rc;
		switch (ht) {
		case CN_PXAR_XATTR: {
			size_t off;
			rc = read_meta(d, p, full, &off);
			if (rc < 0)
				return rc;
			size_t n = (size_t)(full - CN_PXAR_HEADER_SIZE);
			const uint8_t *z = memchr(d->meta.data + off, 0, n);
			if (!z)
				return cn_error_set(-CN_E_FORMAT, "missing value separator in xattr at offset %llu",
						    (unsigned long long)p);
			size_t nl = (size_t)(z - (d->meta.data + off));
			if (nl == 0)
				return cn_error_set(-CN_E_FORMAT, "empty xattr name at offset %llu",
						    (unsigned long long)p);
			rc = grow((void **)&d->xa, &d->xa_cap, d->nxa + 1, sizeof(*d->xa));
			if (rc < 0)
				return rc;
			d->xa[d->nxa].off = off;
			d->xa[d->nxa].name_len = nl;
			d->xa[d->nxa].value_len = n - nl - 1;
			d->nxa++;
			break;
		}
		case CN_PXAR_ACL_USER:
			rc = add_acl(d, 0, p, full, "acl user");
			break;
		case CN_PXAR_ACL_GROUP:
			rc = add_acl(d, 1, p, full, "acl group");
			break;
		case CN_PXAR_ACL_DEFAULT_USER:
			rc = add_acl(d, 2, p, full, "acl default user");
			break;
		case CN_PXAR_ACL_DEFAULT_GROUP:
			rc = add_acl(d, 3, p, full, "acl default group");
			break;
		case CN_PXAR_ACL_GROUP_OBJ:
			if (e->has_acl_group_obj)
				return cn_error_set(-CN_E_FORMAT, "multiple acl group object entries detected at offset %llu",
						    (unsigned long long)p);
			e->has_acl_group_obj = 1;
			rc = read_u64s(d, p, full, 1, &e->acl_group_obj, "acl group object");
			break;
		case CN_PXAR_ACL_DEFAULT:
			if (e->has_acl_default)
				return cn_error_set(-CN_E_FORMAT, "multiple acl default entries detected at offset %llu",
						    (unsigned long long)p);
			e->has_acl_default = 1;
			rc = read_u64s(d, p, full, 4, e->acl_default, "acl default");
			break;
		case CN_PXAR_FCAPS:
			if (d->fcaps_off != SIZE_MAX)
				return cn_error_set(-CN_E_FORMAT, "multiple file capability entries detected at offset %llu",
						    (unsigned long long)p);
			rc = read_meta(d, p, full, &d->fcaps_off);
			e->fcaps_len = (size_t)(full - CN_PXAR_HEADER_SIZE);
			break;
		case CN_PXAR_QUOTA_PROJID:
			if (e->has_quota_projid)
				return cn_error_set(-CN_E_FORMAT, "multiple quota project id entries detected at offset %llu",
						    (unsigned long long)p);
			e->has_quota_projid = 1;
			rc = read_u64s(d, p, full, 1, &e->quota_projid, "quota project id");
			break;
		case CN_PXAR_PAYLOAD:
			if (type != CN_PXAR_IFREG)
				return cn_error_set(-CN_E_FORMAT, "payload for a non-regular file (mode 0%llo) at offset %llu",
						    (unsigned long long)e->mode, (unsigned long long)p);
			if (d->has_payload)
				return cn_error_set(-CN_E_FORMAT, "inline payload in a split archive at offset %llu",
						    (unsigned long long)p);
			e->kind = CN_PXAR_KIND_FILE;
			e->file_size = full - CN_PXAR_HEADER_SIZE;
			e->content_offset = p + CN_PXAR_HEADER_SIZE;
			e->end_offset = d->pos = p + full;
			return 0;
		case CN_PXAR_PAYLOAD_REF: {
			uint64_t v[2], pt, pf;
			if (type != CN_PXAR_IFREG)
				return cn_error_set(-CN_E_FORMAT, "payload reference for a non-regular file at offset %llu",
						    (unsigned long long)p);
			if (!d->has_payload && !d->metadata_only)
				return cn_error_set(-CN_E_FORMAT, "payload reference at offset %llu but no payload input (split archive?)",
						    (unsigned long long)p);
			rc = read_u64s(d, p, full, 2, v, "payload reference");
			if (rc < 0)
				return rc;
			if (v[0] > UINT64_MAX - CN_PXAR_HEADER_SIZE - v[1])
				return cn_error_set(-CN_E_FORMAT, "payload reference at offset %llu out of range",
						    (unsigned long long)p);
			if (v[0] < d->payload_next)
				return cn_error_set(-CN_E_FORMAT, "payload reference at offset %llu: payload offset %llu is before the end of the previous payload (%llu); a payload may be referenced once",
						    (unsigned long long)p, (unsigned long long)v[0],
						    (unsigned long long)d->payload_next);
			d->payload_next = v[0] + CN_PXAR_HEADER_SIZE + v[1];
			if (!d->has_payload) {
				/* metadata only: the reference is reported, not followed */
				pt = CN_PXAR_PAYLOAD;
				pf = v[1] + CN_PXAR_HEADER_SIZE;
			} else {
				rc = read_header(&d->payload, d->payload.size, v[0], &pt, &pf);
			}
			if (rc < 0)
				return cn_error_prefix(rc, "payload reference at offset %llu",
						       (unsigned long long)p);
			if (pt != CN_PXAR_PAYLOAD || pf - CN_PXAR_HEADER_SIZE != v[1])
				return cn_error_set(-CN_E_FORMAT, "payload reference at offset %llu: no PAYLOAD of %llu bytes at payload offset %llu",
						    (unsigned long long)p, (unsigned long long)v[1],
						    (unsigned long long)v[0]);
			e->kind = CN_PXAR_KIND_FILE;
			e->file_size = v[1];
			e->content_offset = v[0] + CN_PXAR_HEADER_SIZE;
			e->content_in_payload = 1;
			e->end_offset = d->pos = p + full;
			return 0;
		}
		case CN_PXAR_SYMLINK: {
			if (type != CN_PXAR_IFLNK)
				return cn_error_set(-CN_E_FORMAT, "symlink item for a non-symlink at offset %llu",
						    (unsigned long long)p);
			rc = read_cstr(d, p, full, 0, &d->link_off, &e->link_len, "symlink target");
			if (rc < 0)
				return rc;
			e->kind = CN_PXAR_KIND_SYMLINK;
			e->end_offset = d->pos = p + full;
			return 0;
		}
		case CN_PXAR_DEVICE: {
			uint64_t v[2];
			if (type != CN_PXAR_IFCHR && type != CN_PXAR_IFBLK)
				return cn_error_set(-CN_E_FORMAT, "device item for a non-device at offset %llu",
						    (unsigned long long)p);
			rc = read_u64s(d, p, full, 2, v, "device");
			if (rc < 0)
				return rc;
			e->dev_major = v[0];
			e->dev_minor = v[1];
			e->kind = CN_PXAR_KIND_DEVICE;
			e->end_offset = d->pos = p + full;
			return 0;
		}
		case CN_PXAR_FILENAME:
		case CN_PXAR_GOODBYE:
			if (type == CN_PXAR_IFIFO || type == CN_PXAR_IFSOCK) {
				if (is_root && d->exact_end)
					return cn_error_set(-CN_E_FORMAT, "entry at offset %llu runs past its range",
							    (unsigned long long)pos);
				e->kind = type == CN_PXAR_IFIFO ? CN_PXAR_KIND_FIFO : CN_PXAR_KIND_SOCKET;
				e->end_offset = d->pos = p;
				return 0;
			}
			if (type != CN_PXAR_IFDIR)
				return cn_error_set(-CN_E_FORMAT, "entry at offset %llu (mode 0%llo) lacks its %s item",
						    (unsigned long long)pos, (unsigned long long)e->mode,
						    type == CN_PXAR_IFREG ? "PAYLOAD" :
						    type == CN_PXAR_IFLNK ? "SYMLINK" : "DEVICE");
			e->kind = CN_PXAR_KIND_DIR;
			d->pos = p;
			e->end_offset = 0; /* known at its goodbye table */
			return push_frame(d, pos, filename_off, name_hash);
		case CN_PXAR_HARDLINK:
			return cn_error_set(-CN_E_FORMAT, "encountered unexpected hardlink entry at offset %llu",
					    (unsigned long long)p);
		default:
			return cn_error_set(-CN_E_FORMAT, "unexpected entry type %s (0x%016llx) at offset %llu",
					    htype_name(ht), (unsigned long long)ht, (unsigned long long)p);
		}
		if (rc < 0)
			return rc;
		p += full;
	}
}

/* Makes the public pointers of d->e point into the decoder's storage. */
static int finish_entry(struct cn_pxar_decoder *d)
{
	struct cn_pxar_entry *e = &d->e;
	int rc = grow((void **)&d->xattrs, &d->xattrs_cap, d->nxa, sizeof(*d->xattrs));
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < d->nxa; i++) {
		d->xattrs[i].name = d->meta.data + d->xa[i].off;
		d->xattrs[i].name_len = d->xa[i].name_len;
		d->xattrs[i].value = d->meta.data + d->xa[i].off + d->xa[i].name_len + 1;
		d->xattrs[i].value_len = d->xa[i].value_len;
	}
	e->xattr_count = d->nxa;
	e->xattrs = d->xattrs;
	e->acl_users = d->acl[0].v;
	e->acl_user_count = d->acl[0].n;
	e->acl_groups = d->acl[1].v;
	e->acl_group_count = d->acl[1].n;
	e->acl_default_users = d->acl[2].v;
	e->acl_default_user_count = d->acl[2].n;
	e->acl_default_groups = d->acl[3].v;
	e->acl_default_group_count = d->acl[3].n;
	e->fcaps = d->fcaps_off != SIZE_MAX ? d->meta.data + d->fcaps_off : NULL;
	e->link = d->link_off != SIZE_MAX ? (const char *)d->meta.data + d->link_off : NULL;
	if (e->link)
		d->meta.data[d->link_off + e->link_len] = 0; /* stored NUL, kept */
	e->path = d->path;
	e->path_len = d->path_len;
	const char *slash = memrchr(d->path, '/', d->path_len);
	e->name = slash ? slash + 1 : d->path;
	return 0;
}

static int path_set_len(struct cn_pxar_decoder *d, size_t len)
{
	d->path_len = len;
	d->path[len] = 0;
	return 0;
}

static int path_push(struct cn_pxar_decoder *d, const char *name, size_t len)
{
	size_t need = d->path_len + 1 + len + 1;
	int rc = grow((void **)&d->path, &d->path_cap, need, 1);
	if (rc < 0)
		return rc;
	if (d->path_len)
		d->path[d->path_len++] = '/';
	memcpy(d->path + d->path_len, name, len);
	return path_set_len(d, d->path_len + len);
}

static int add_child(struct cn_pxar_decoder *d, uint64_t hash, uint64_t filename_off, uint64_t end,
		     uint64_t extra)
{
	if (d->nchildren >= CN_PXAR_MAX_OPEN_CHILDREN)
		return cn_error_set(-E2BIG, "more than %u entries in open directories (offset %llu)",
				    CN_PXAR_MAX_OPEN_CHILDREN, (unsigned long long)filename_off);
	int rc = grow((void **)&d->children, &d->children_cap, d->nchildren + 1, sizeof(*d->children));
	if (rc < 0)
		return rc;
	struct child_rec *c = &d->children[d->nchildren++];
	c->hash = hash;
	c->filename_off = filename_off;
	c->end = end;
	c->extra = extra;
	return 0;
}

/* Orders by (hash, offset); offsets are distinct among real children. */
static int cmp_child(const void *a, const void *b)
{
	const struct child_rec *x = a, *y = b;
	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return 0;
}

/* Whether table item it describes child c. */
static int item_matches(const struct child_rec *it, const struct child_rec *c)
{
	return it->hash == c->hash && it->offset == c->offset &&
	       (it->size == c->size || (c->extra && it->size - c->size == c->extra &&
					it->size > c->size));
}

/* Whether the implicit tree under slot i keeps lo <= hash <= hi, so that
 * search_by finds every item (equal hashes may sit in either subtree). */
static int bst_ok(const uint8_t *tab, size_t n, size_t i, uint64_t lo, uint64_t hi)
{
	while (i < n) {
		uint64_t h = cn_le64(tab + i * CN_PXAR_GOODBYE_ITEM_SIZE);
		if (h < lo || h > hi)
			return 0;
		if (!bst_ok(tab, n, 2 * i + 1, lo, h))
			return 0;
		i = 2 * i + 2;
		lo = h;
	}
	return 1;
}

/* Whether the FILENAME items at a and b (already validated) hold the same
 * name. */
static int same_filename(const struct cn_pxar_input *in, uint64_t a, uint64_t b, int *same)
{
	uint8_t ha[CN_PXAR_HEADER_SIZE], hb[CN_PXAR_HEADER_SIZE];
	int rc = rd(in, in->size, a, ha, sizeof(ha));
	if (rc == 0)
		rc = rd(in, in->size, b, hb, sizeof(hb));
	if (rc < 0)
		return rc;
	*same = 0;
	uint64_t n = cn_le64(ha + 8);
	if (n != cn_le64(hb + 8) || n > CN_PXAR_HEADER_SIZE + CN_PXAR_MAX_FILENAME_LEN + 1)
		return 0;
	uint8_t na[CN_PXAR_MAX_FILENAME_LEN + 1], nb[CN_PXAR_MAX_FILENAME_LEN + 1];
	n -= CN_PXAR_HEADER_SIZE;
	rc = rd(in, in->size, a + CN_PXAR_HEADER_SIZE, na, (size_t)n);
	if (rc == 0)
		rc = rd(in, in->size, b + CN_PXAR_HEADER_SIZE, nb, (size_t)n);
	if (rc < 0)
		return rc;
	*same = memcmp(na, nb, (size_t)n) == 0;
	return 0;
}

/* Checks the goodbye table at gpos (size full) of the innermost directory
 * against its recorded children. */
static int verify_goodbye(struct cn_pxar_decoder *d, uint64_t gpos, uint64_t full)
{
	struct frame *f = &d->stack[d->depth - 1];
	uint64_t content = full - CN_PXAR_HEADER_SIZE;
	size_t nch = d->nchildren - f->child_start;
	if (content % CN_PXAR_GOODBYE_ITEM_SIZE || content < CN_PXAR_GOODBYE_ITEM_SIZE)
		return cn_error_set(-CN_E_FORMAT, "invalid goodbye table size %llu at offset %llu",
				    (unsigned long long)content, (unsigned long long)gpos);
	uint64_t n = content / CN_PXAR_GOODBYE_ITEM_SIZE - 1;
	if (n != nch)
		return cn_error_set(-CN_E_FORMAT, "goodbye table at offset %llu lists %llu entries, directory has %zu",
				    (unsigned long long)gpos, (unsigned long long)n, nch);
	int rc = grow((void **)&d->gb_buf, &d->gb_cap, (size_t)content, 1);
	if (rc < 0)
		return rc;
	rc = rd(&d->in, d->range_end, gpos + CN_PXAR_HEADER_SIZE, d->gb_buf, (size_t)content);
	if (rc < 0)
		return rc;
	const uint8_t *tail = d->gb_buf + nch * CN_PXAR_GOODBYE_ITEM_SIZE;
	uint64_t base = (f->filename_off == NO_OFFSET && d->depth == 1) ? d->range_start : f->entry_off;
	if (cn_le64(tail) != CN_PXAR_GOODBYE_TAIL_MARKER)
		return cn_error_set(-CN_E_FORMAT, "no goodbye tail marker in table at offset %llu",
				    (unsigned long long)gpos);
	if (cn_le64(tail + 8) != gpos - base || cn_le64(tail + 16) != full)
		return cn_error_set(-CN_E_FORMAT, "goodbye tail at offset %llu does not match its directory",
				    (unsigned long long)gpos);
	struct child_rec *ch = d->children + f->child_start;
	for (size_t i = 0; i < nch; i++) {
		ch[i].offset = gpos - ch[i].filename_off;
		ch[i].size = ch[i].end - ch[i].filename_off;
	}
	/* Compare as sorted multisets: the table items, then the children. */
	struct child_rec *items = malloc(nch ? nch * sizeof(*items) : 1);
	if (!items)
		return cn_error_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < nch; i++) {
		const uint8_t *it = d->gb_buf + i * CN_PXAR_GOODBYE_ITEM_SIZE;
		items[i].hash = cn_le64(it);
		items[i].offset = cn_le64(it + 8);
		items[i].size = cn_le64(it + 16);
	}
	if (nch) {
		qsort(items, nch, sizeof(*items), cmp_child);
		qsort(ch, nch, sizeof(*ch), cmp_child);
	}
	for (size_t i = 0; i < nch; i++) {
		if (!item_matches(&items[i], &ch[i])) {
			free(items);
			return cn_error_set(-CN_E_FORMAT, "goodbye table at offset %llu does not match the directory's entries",
					    (unsigned long long)gpos);
		}
	}
	free(items);
	/* Equal hashes: make sure the names differ, so that a lookup by name
	 * is unambiguous (and extraction never meets a name twice). */
	for (size_t i = 1; i < nch; i++) {
		if (ch[i].hash != ch[i - 1].hash)
			continue;
		int same = 0;
		rc = same_filename(&d->in, ch[i - 1].filename_off, ch[i].filename_off, &same);
		if (rc < 0)
			return rc;
		if (same)
			return cn_error_set(-CN_E_FORMAT, "duplicate entry name in directory at offset %llu",
					    (unsigned long long)f->entry_off);
	}
	if (!bst_ok(d->gb_buf, nch, 0, 0, UINT64_MAX))
		return cn_error_set(-CN_E_FORMAT, "goodbye table at offset %llu is not a binary search tree",
				    (unsigned long long)gpos);
	return 0;
}

static int decoder_alloc(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
			 struct cn_pxar_decoder **out)
{
	struct cn_pxar_decoder *d = calloc(1, sizeof(*d));
	if (!d)
		return cn_error_set(-ENOMEM, "out of memory");
	d->in = *in;
	if (payload) {
		d->payload = *payload;
		d->has_payload = 1;
	}
	d->version = 1;
	d->path_cap = 256;
	d->path = malloc(d->path_cap);
	if (!d->path) {
		free(d);
		return cn_error_set(-ENOMEM, "out of memory");
	}
	d->path[0] = 0;
	d->state = ST_BEGIN;
	*out = d;
	return 0;
}

int cn_pxar_decoder_new(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
			struct cn_pxar_decoder **out)
{
	*out = NULL;
	if (payload) {
		uint64_t t, f;
		int rc = read_header(payload, payload->size, 0, &t, &f);
		if (rc < 0)
			return cn_error_prefix(rc, "payload stream");
		if (t != CN_PXAR_PAYLOAD_START_MARKER || f != CN_PXAR_HEADER_SIZE)
			return cn_error_set(-CN_E_FORMAT, "payload stream does not start with a start marker");
	}
	int rc = decoder_alloc(in, payload, out);
	if (rc < 0)
		return rc;
	(*out)->range_end = in->size;
	(*out)->payload_next = CN_PXAR_HEADER_SIZE; /* after the start marker */
	(*out)->root_filename_off = NO_OFFSET;
	(*out)->exact_end = 1;
	return 0;
}

static int new_range(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
		     uint64_t filename_off, uint64_t entry_off, uint64_t end, const char *base,
		     int exact, struct cn_pxar_decoder **out)
{
	*out = NULL;
	if (entry_off > end || end > in->size)
		return cn_error_set(-CN_E_FORMAT, "entry range %llu..%llu outside the archive",
				    (unsigned long long)entry_off, (unsigned long long)end);
	int rc = decoder_alloc(in, payload, out);
	if (rc < 0)
		return rc;
	struct cn_pxar_decoder *d = *out;
	d->range_start = entry_off;
	d->range_end = end;
	d->root_filename_off = filename_off;
	d->exact_end = exact;
	while (*base == '/')
		base++;
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	if (bl) {
		rc = grow((void **)&d->path, &d->path_cap, bl + 1, 1);
		if (rc < 0) {
			cn_pxar_decoder_free(d);
			*out = NULL;
			return rc;
		}
		memcpy(d->path, base, bl);
		path_set_len(d, bl);
	}
	d->base_len = bl;
	return 0;
}

int cn_pxar_decoder_new_range(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
			      uint64_t filename_offset, uint64_t entry_offset, uint64_t end_offset,
			      const char *base_path, struct cn_pxar_decoder **out)
{
	return new_range(in, payload, filename_offset, entry_offset, end_offset, base_path, 1, out);
}

/* Reads FORMAT_VERSION and PRELUDE at the archive start, if present. */
static int read_preamble(struct cn_pxar_decoder *d)
{
	uint64_t t, f;
	int rc = read_header(&d->in, d->range_end, d->pos, &t, &f);
	if (rc < 0)
		return rc;
	if (t != CN_PXAR_FORMAT_VERSION)
		return 0;
	uint64_t v;
	rc = read_u64s(d, d->pos, f, 1, &v, "format version");
	if (rc < 0)
		return rc;
	if (v != 1 && v != 2)
		return cn_error_set(-CN_E_FORMAT, "unknown format version %llu", (unsigned long long)v);
	d->version = (int)v;
	d->pos += f;
	rc = read_header(&d->in, d->range_end, d->pos, &t, &f);
	if (rc < 0)
		return rc;
	if (t == CN_PXAR_PRELUDE)
		d->pos += f;
	return 0;
}

static int decoder_step(struct cn_pxar_decoder *d)
{
	int rc;
	reset_entry(d);
	if (d->state == ST_BEGIN) {
		d->pos = d->range_start;
		if (d->range_start == 0 && d->root_filename_off == NO_OFFSET) {
			rc = read_preamble(d);
			if (rc < 0)
				return rc;
		}
		rc = parse_entry(d, d->pos, d->root_filename_off, 0, 1);
		if (rc < 0)
			return rc;
		if (d->e.kind != CN_PXAR_KIND_DIR) {
			/* (a v2 file's goodbye size may include its payload) */
			if (d->exact_end && d->e.end_offset != d->range_end &&
			    !(d->e.content_in_payload && d->e.end_offset < d->range_end))
				return cn_error_set(-CN_E_FORMAT, "entry at offset %llu ends at %llu, its range at %llu",
						    (unsigned long long)d->range_start,
						    (unsigned long long)d->e.end_offset,
						    (unsigned long long)d->range_end);
			d->state = ST_DONE;
		} else {
			d->state = ST_IN_DIR;
		}
		return 1;
	}
	if (d->state != ST_IN_DIR)
		return 0;

	/* Back to the innermost open directory's path. */
	path_set_len(d, d->stack[d->depth - 1].path_len);
	uint64_t t, full, pos = d->pos;
	rc = read_header(&d->in, d->range_end, pos, &t, &full);
	if (rc < 0)
		return rc;
	if (t == CN_PXAR_FILENAME) {
		uint8_t name[CN_PXAR_MAX_FILENAME_LEN + 1];
		size_t n = (size_t)(full - CN_PXAR_HEADER_SIZE);
		rc = rd(&d->in, d->range_end, pos + CN_PXAR_HEADER_SIZE, name, n);
		if (rc < 0)
			return rc;
		if (n == 0 || name[n - 1] != 0)
			return cn_error_set(-CN_E_PATH, "illegal path found (missing terminating zero) at offset %llu",
					    (unsigned long long)pos);
		rc = cn_pxar_check_filename(name, n - 1);
		if (rc < 0)
			return cn_error_prefix(rc, "file name at offset %llu", (unsigned long long)pos);
		uint64_t hash = cn_pxar_hash_filename(name, n - 1);
		rc = path_push(d, (const char *)name, n - 1);
		if (rc < 0)
			return rc;
		rc = parse_entry(d, pos + full, pos, hash, 0);
		if (rc < 0)
			return rc;
		if (d->e.kind != CN_PXAR_KIND_DIR) {
			rc = add_child(d, hash, pos, d->e.end_offset,
				       d->e.content_in_payload ? d->e.file_size : 0);
			if (rc < 0)
				return rc;
		}
		return 1;
	}
	if (t == CN_PXAR_GOODBYE) {
		rc = verify_goodbye(d, pos, full);
		if (rc < 0)
			return rc;
		struct frame f = d->stack[--d->depth];
		uint64_t end = pos + full;
		d->nchildren = f.child_start;
		d->e.kind = CN_PXAR_KIND_DIR_END;
		d->e.filename_offset = f.filename_off;
		d->e.entry_offset = f.entry_off;
		d->e.end_offset = end;
		d->pos = end;
		if (d->depth == 0) {
			if (end != d->range_end)
				return cn_error_set(-CN_E_FORMAT, "%llu bytes of trailing data after the root goodbye table",
						    (unsigned long long)(d->range_end - end));
			d->state = ST_DONE;
		} else {
			rc = add_child(d, f.hash, f.filename_off, end, 0);
			if (rc < 0)
				return rc;
		}
		return 1;
	}
	return cn_error_set(-CN_E_FORMAT, "expected filename or directory-goodbye pxar entry at offset %llu, got %s",
			    (unsigned long long)pos, htype_name(t));
}

int cn_pxar_decoder_next(struct cn_pxar_decoder *d, const struct cn_pxar_entry **out)
{
	*out = NULL;
	if (d->state == ST_FAILED)
		return cn_error_set(-EINVAL, "pxar decoder used after an error");
	int rc = decoder_step(d);
	if (rc < 0) {
		d->state = ST_FAILED;
		return rc;
	}
	if (rc == 0)
		return 0;
	rc = finish_entry(d);
	if (rc < 0) {
		d->state = ST_FAILED;
		return rc;
	}
	*out = &d->e;
	return 1;
}

/* The input holding the current FILE entry's content, after checking
 * that [off, off + len) lies inside it; NULL with a message if not. */
static const struct cn_pxar_input *content_input(struct cn_pxar_decoder *d, uint64_t off,
						 size_t len)
{
	const struct cn_pxar_entry *e = &d->e;
	if (e->kind != CN_PXAR_KIND_FILE || off > e->file_size || len > e->file_size - off) {
		cn_error_set(-EINVAL, "read outside the current file's content");
		return NULL;
	}
	if (e->content_in_payload && !d->has_payload) {
		cn_error_set(-EINVAL, "file content not available (metadata-only decoder)");
		return NULL;
	}
	return e->content_in_payload ? &d->payload : &d->in;
}

int cn_pxar_decoder_read(struct cn_pxar_decoder *d, uint64_t off, void *buf, size_t len)
{
	const struct cn_pxar_input *in = content_input(d, off, len);
	if (!in)
		return -EINVAL;
	return rd(in, in->size, d->e.content_offset + off, buf, len);
}

int cn_pxar_decoder_view(struct cn_pxar_decoder *d, uint64_t off, size_t len,
			 const uint8_t **data, size_t *got, void **token)
{
	const struct cn_pxar_input *in = content_input(d, off, len);
	if (!in)
		return -EINVAL;
	if (!in->view_at)
		return 0;
	if (len == 0)
		return cn_error_set(-EINVAL, "empty view");
	uint64_t at = d->e.content_offset + off;
	/* (the entry may claim more than the input holds) */
	int rc = in_range(in, in->size, at, len);
	if (rc == 0)
		rc = in->view_at(in->ctx, at, len, data, got, token);
	return rc < 0 ? rc : 1;
}

void cn_pxar_decoder_release(struct cn_pxar_decoder *d, void *token)
{
	const struct cn_pxar_input *in = d->e.content_in_payload ? &d->payload : &d->in;
	if (in->release)
		in->release(in->ctx, token);
}

void cn_pxar_decoder_metadata_only(struct cn_pxar_decoder *d)
{
	d->metadata_only = 1;
}

int cn_pxar_decoder_version(const struct cn_pxar_decoder *d)
{
	return d->version;
}

void cn_pxar_decoder_free(struct cn_pxar_decoder *d)
{
	if (!d)
		return;
	free(d->stack);
	free(d->children);
	free(d->path);
	cn_buf_free(&d->meta);
	free(d->xa);
	free(d->xattrs);
	for (int i = 0; i < 4; i++)
		free(d->acl[i].v);
	free(d->gb_buf);
	free(d);
}

/* ---- random access ------------------------------------------------------------ */

struct cn_pxar_accessor {
	struct cn_pxar_input in;
	struct cn_pxar_input payload;
	int has_payload;
	struct cn_pxar_decoder *dec; /* decoder of the last accessor_entry */
};

int cn_pxar_accessor_open(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
			  struct cn_pxar_accessor **out)
{
	*out = NULL;
	if (in->size < CN_PXAR_GOODBYE_ITEM_SIZE)
		return cn_error_set(-CN_E_FORMAT, "too small to contain a pxar archive (%llu bytes)",
				    (unsigned long long)in->size);
	uint64_t t, f;
	int rc = read_header(in, in->size, 0, &t, &f);
	if (rc < 0)
		return rc;
	if (t == CN_PXAR_FORMAT_VERSION) {
		uint8_t b[8];
		if (f != CN_PXAR_HEADER_SIZE + 8)
			return cn_error_set(-CN_E_FORMAT, "bad format version size");
		rc = rd(in, in->size, CN_PXAR_HEADER_SIZE, b, 8);
		if (rc < 0)
			return rc;
		if (cn_le64(b) != 1 && cn_le64(b) != 2)
			return cn_error_set(-CN_E_FORMAT, "unknown format version %llu",
					    (unsigned long long)cn_le64(b));
	} else if (t != CN_PXAR_ENTRY && t != CN_PXAR_ENTRY_V1) {
		return cn_error_set(-CN_E_FORMAT, "not a pxar archive (first item is %s)", htype_name(t));
	}
	if (payload) {
		rc = read_header(payload, payload->size, 0, &t, &f);
		if (rc < 0)
			return cn_error_prefix(rc, "payload stream");
		if (t != CN_PXAR_PAYLOAD_START_MARKER)
			return cn_error_set(-CN_E_FORMAT, "payload stream does not start with a start marker");
	}
	struct cn_pxar_accessor *a = calloc(1, sizeof(*a));
	if (!a)
		return cn_error_set(-ENOMEM, "out of memory");
	a->in = *in;
	if (payload) {
		a->payload = *payload;
		a->has_payload = 1;
	}
	*out = a;
	return 0;
}

void cn_pxar_accessor_free(struct cn_pxar_accessor *a)
{
	if (!a)
		return;
	cn_pxar_decoder_free(a->dec);
	free(a);
}

/* A directory opened at its end: where its goodbye table is. */
struct gb_dir {
	uint64_t entry_off, goodbye_off, end;
	uint64_t n;
};

static int open_dir_at_end(const struct cn_pxar_input *in, uint64_t entry_off, uint64_t end,
			   struct gb_dir *g)
{
	uint8_t tail[CN_PXAR_GOODBYE_ITEM_SIZE];
	if (end < entry_off + CN_PXAR_GOODBYE_ITEM_SIZE)
		return cn_error_set(-CN_E_FORMAT, "goodbye tail does not fit (end %llu)",
				    (unsigned long long)end);
	int rc = rd(in, end, end - CN_PXAR_GOODBYE_ITEM_SIZE, tail, sizeof(tail));
	if (rc < 0)
		return rc;
	uint64_t size = cn_le64(tail + 16), offset = cn_le64(tail + 8);
	if (cn_le64(tail) != CN_PXAR_GOODBYE_TAIL_MARKER)
		return cn_error_set(-CN_E_FORMAT, "no goodbye tail marker found before offset %llu",
				    (unsigned long long)end);
	if (size > end - entry_off || size < CN_PXAR_HEADER_SIZE + CN_PXAR_GOODBYE_ITEM_SIZE)
		return cn_error_set(-CN_E_FORMAT, "goodbye tail size out of range (offset %llu)",
				    (unsigned long long)end);
	g->goodbye_off = end - size;
	if (offset > g->goodbye_off || g->goodbye_off - offset != entry_off)
		return cn_error_set(-CN_E_FORMAT, "goodbye offset out of range (offset %llu)",
				    (unsigned long long)end);
	if ((size - CN_PXAR_HEADER_SIZE) % CN_PXAR_GOODBYE_ITEM_SIZE)
		return cn_error_set(-CN_E_FORMAT, "invalid goodbye table size %llu",
				    (unsigned long long)size);
	uint64_t t, f;
	rc = read_header(in, end, g->goodbye_off, &t, &f);
	if (rc < 0)
		return rc;
	if (t != CN_PXAR_GOODBYE || f != size)
		return cn_error_set(-CN_E_FORMAT, "goodbye tail at %llu does not match a goodbye table",
				    (unsigned long long)end);
	g->entry_off = entry_off;
	g->end = end;
	g->n = (size - CN_PXAR_HEADER_SIZE) / CN_PXAR_GOODBYE_ITEM_SIZE - 1;
	return 0;
}

static int gb_item(const struct cn_pxar_input *in, const struct gb_dir *g, uint64_t i,
		   uint64_t item[3])
{
	uint8_t b[CN_PXAR_GOODBYE_ITEM_SIZE];
	int rc = rd(in, g->end, g->goodbye_off + CN_PXAR_HEADER_SIZE + i * CN_PXAR_GOODBYE_ITEM_SIZE,
		    b, sizeof(b));
	if (rc < 0)
		return rc;
	item[0] = cn_le64(b);
	item[1] = cn_le64(b + 8);
	item[2] = cn_le64(b + 16);
	return 0;
}

/* binary_tree_array::search_by: index of the skip-th item with hash, from
 * start; *found = 0 when none. Reads the items from the archive. */
static int search_by(const struct cn_pxar_input *in, const struct gb_dir *g, uint64_t start,
		     unsigned skip, uint64_t hash, uint64_t *found, int *ok)
{
	uint64_t i = start, it[3];
	*ok = 0;
	while (i < g->n) {
		int rc = gb_item(in, g, i, it);
		if (rc < 0)
			return rc;
		if (hash < it[0]) {
			i = 2 * i + 1;
		} else if (hash > it[0]) {
			i = 2 * i + 2;
		} else if (skip == 0) {
			*found = i;
			*ok = 1;
			return 0;
		} else {
			i = 2 * i + 1;
			rc = search_by(in, g, i, skip - 1, hash, found, ok);
			if (rc < 0 || *ok)
				return rc;
			return search_by(in, g, i + 1, skip - 1, hash, found, ok);
		}
	}
	return 0;
}

/* Mode of the entry at entry_off (skipping FORMAT_VERSION/PRELUDE at the
 * archive start); *is_link when it is a hardlink. */
static int entry_mode(const struct cn_pxar_input *in, uint64_t entry_off, uint64_t end,
		      uint64_t *mode, int *is_link)
{
	uint64_t t, f, p = entry_off;
	int rc;
	*is_link = 0;
	for (int i = 0; i < 3; i++) {
		rc = read_header(in, end, p, &t, &f);
		if (rc < 0)
			return rc;
		if (p == 0 && t == CN_PXAR_FORMAT_VERSION) {
			p += f;
			continue;
		}
		if (i > 0 && t == CN_PXAR_PRELUDE) {
			p += f;
			continue;
		}
		break;
	}
	if (t == CN_PXAR_HARDLINK) {
		*is_link = 1;
		*mode = CN_PXAR_IFREG;
		return 0;
	}
	if (t != CN_PXAR_ENTRY && t != CN_PXAR_ENTRY_V1)
		return cn_error_set(-CN_E_FORMAT, "expected an entry at offset %llu, got %s",
				    (unsigned long long)p, htype_name(t));
	uint8_t m[8];
	rc = rd(in, end, p + CN_PXAR_HEADER_SIZE, m, 8);
	if (rc < 0)
		return rc;
	*mode = cn_le64(m);
	return 0;
}

/* Finds name among the children of the directory r. */
static int lookup_component(struct cn_pxar_accessor *a, const struct cn_pxar_range *r,
			    const char *name, size_t len, struct cn_pxar_range *out)
{
	struct gb_dir g;
	int rc = open_dir_at_end(&a->in, r->entry_offset, r->end_offset, &g);
	if (rc < 0)
		return rc;
	uint64_t hash = cn_pxar_hash_filename(name, len), first = 0, idx, it[3];
	int ok;
	rc = search_by(&a->in, &g, 0, 0, hash, &first, &ok);
	if (rc < 0 || !ok)
		return rc;
	for (unsigned dup = 0; dup < MAX_HASH_DUPS; dup++) {
		rc = search_by(&a->in, &g, first, dup, hash, &idx, &ok);
		if (rc < 0 || !ok)
			return rc;
		rc = gb_item(&a->in, &g, idx, it);
		if (rc < 0)
			return rc;
		if (it[1] > g.goodbye_off || g.goodbye_off - it[1] < g.entry_off)
			return cn_error_set(-CN_E_FORMAT, "invalid file offset in goodbye table at %llu",
					    (unsigned long long)g.goodbye_off);
		uint64_t fo = g.goodbye_off - it[1], t, f;
		rc = read_header(&a->in, g.goodbye_off, fo, &t, &f);
		if (rc < 0)
			return rc;
		if (t != CN_PXAR_FILENAME)
			return cn_error_set(-CN_E_FORMAT, "goodbye item at %llu points to a %s item, not a file name",
					    (unsigned long long)g.goodbye_off, htype_name(t));
		char nb[CN_PXAR_MAX_FILENAME_LEN + 1];
		size_t n = (size_t)(f - CN_PXAR_HEADER_SIZE);
		rc = rd(&a->in, g.goodbye_off, fo + CN_PXAR_HEADER_SIZE, nb, n);
		if (rc < 0)
			return rc;
		if (n == len + 1 && nb[len] == 0 && memcmp(nb, name, len) == 0) {
			/* v2: a split file's size may count its payload too */
			if (a->has_payload && it[2] > g.goodbye_off - fo)
				it[2] = g.goodbye_off - fo;
			if (it[2] > g.goodbye_off - fo || it[2] <= f)
				return cn_error_set(-CN_E_FORMAT, "bad entry range for '%s' in goodbye table at %llu",
						    name, (unsigned long long)g.goodbye_off);
			out->filename_offset = fo;
			out->entry_offset = fo + f;
			out->end_offset = fo + it[2];
			return 1;
		}
	}
	return cn_error_set(-CN_E_FORMAT, "too many goodbye hash collisions looking up '%.*s'",
			    (int)len, name);
}

int cn_pxar_lookup(struct cn_pxar_accessor *a, const char *path, struct cn_pxar_range *out)
{
	struct cn_pxar_range cur = { NO_OFFSET, 0, a->in.size };
	const char *p = path;
	for (;;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (n == 1 && p[0] == '.') {
			p += n;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return cn_error_set(-CN_E_PATH, "cannot enter parent directory in archive ('%s')", path);
		if (n > CN_PXAR_MAX_FILENAME_LEN)
			return 0;
		uint64_t mode = 0;
		int is_link = 0;
		int rc = entry_mode(&a->in, cur.entry_offset, cur.end_offset, &mode, &is_link);
		if (rc < 0)
			return rc;
		if (is_link || (mode & CN_PXAR_IFMT) != CN_PXAR_IFDIR)
			return cn_error_set(-ENOTDIR, "'%.*s' in '%s' is not a directory",
					    (int)(p - path), path, path);
		struct cn_pxar_range next;
		rc = lookup_component(a, &cur, p, n, &next);
		if (rc <= 0)
			return rc;
		cur = next;
		p += n;
	}
	*out = cur;
	return 1;
}

int cn_pxar_accessor_decoder(struct cn_pxar_accessor *a, const struct cn_pxar_range *r,
			     const char *path, struct cn_pxar_decoder **out)
{
	return new_range(&a->in, a->has_payload ? &a->payload : NULL, r->filename_offset,
			 r->entry_offset, r->end_offset, path, 1, out);
}

int cn_pxar_accessor_entry(struct cn_pxar_accessor *a, const struct cn_pxar_range *r,
			   const char *path, const struct cn_pxar_entry **out)
{
	cn_pxar_decoder_free(a->dec);
	a->dec = NULL;
	int rc = cn_pxar_accessor_decoder(a, r, path, &a->dec);
	if (rc < 0)
		return rc;
	rc = cn_pxar_decoder_next(a->dec, out);
	if (rc == 0)
		return cn_error_set(-CN_E_FORMAT, "no entry at offset %llu",
				    (unsigned long long)r->entry_offset);
	return rc < 0 ? rc : 0;
}

int cn_pxar_follow_hardlink(struct cn_pxar_accessor *a, const struct cn_pxar_entry *link,
			    struct cn_pxar_range *out)
{
	if (link->kind != CN_PXAR_KIND_HARDLINK || link->filename_offset == NO_OFFSET)
		return cn_error_set(-EINVAL, "cannot follow a non-hardlink");
	uint64_t t = 0, f;
	int rc = check_hardlink_target(&a->in, link->filename_offset, link->hardlink_offset, &t);
	if (rc < 0)
		return rc;
	uint64_t ht, full;
	rc = read_header(&a->in, a->in.size, t, &ht, &full);
	if (rc < 0)
		return rc;
	f = t + full;
	struct cn_pxar_decoder *d;
	rc = new_range(&a->in, a->has_payload ? &a->payload : NULL, t, f, a->in.size,
		       link->link ? link->link : "", 0, &d);
	if (rc < 0)
		return rc;
	const struct cn_pxar_entry *e;
	rc = cn_pxar_decoder_next(d, &e);
	if (rc > 0 && e->kind != CN_PXAR_KIND_FILE)
		rc = cn_error_set(-CN_E_FORMAT, "hardlink does not point to a regular file");
	else if (rc == 0)
		rc = cn_error_set(-CN_E_FORMAT, "hardlink target missing");
	if (rc > 0) {
		out->filename_offset = t;
		out->entry_offset = f;
		out->end_offset = e->end_offset;
		rc = 0;
	}
	cn_pxar_decoder_free(d);
	return rc;
}
