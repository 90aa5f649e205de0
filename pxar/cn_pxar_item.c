/* cn_pxar_item — reading and checking pxar items: bounded reads, item
 * headers against the per-type limits, archive-relative names, and one
 * entry's items (ENTRY, attributes, the item that ends it) into the
 * decoder's per-entry storage. See cn_pxar_decoder.h for what is checked;
 * upstream: proxmox/pxar src/decoder/mod.rs.
 */
#include "pxar/cn_pxar_decoder_impl.h"
#include "pxar/cn_pxar_format.h"
#include "common/cn_error.h"
#include "common/cn_util.h"

#include <stdlib.h>
#include <string.h>

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

/* ---- items ---------------------------------------------------------------- */

const char *cn_pxd_htype_name(uint64_t t)
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
int cn_pxd_in_range(const struct cn_pxar_input *in, uint64_t limit, uint64_t off, size_t len)
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
int cn_pxd_rd(const struct cn_pxar_input *in, uint64_t limit, uint64_t off, void *buf, size_t len)
{
	int rc = cn_pxd_in_range(in, limit, off, len);
	if (rc < 0 || len == 0)
		return rc;
	return in->read_at(in->ctx, off, buf, len);
}

/* Reads and checks the item header at pos; the whole item must end by
 * limit. */
int cn_pxd_read_header(const struct cn_pxar_input *in, uint64_t limit, uint64_t pos,
		       uint64_t *htype, uint64_t *full)
{
	uint8_t h[CN_PXAR_HEADER_SIZE];
	int rc = cn_pxd_rd(in, limit, pos, h, sizeof(h));
	if (rc < 0)
		return rc;
	*htype = cn_le64(h);
	*full = cn_le64(h + 8);
	if (*full < CN_PXAR_HEADER_SIZE)
		return cn_error_set(-CN_E_FORMAT, "invalid %s header at offset %llu: size %llu < 16",
				    cn_pxd_htype_name(*htype), (unsigned long long)pos,
				    (unsigned long long)*full);
	if (*full - CN_PXAR_HEADER_SIZE > max_content(*htype))
		return cn_error_set(-CN_E_FORMAT,
				    "invalid content size %llu of %s item at offset %llu (max %llu)",
				    (unsigned long long)(*full - CN_PXAR_HEADER_SIZE),
				    cn_pxd_htype_name(*htype), (unsigned long long)pos,
				    (unsigned long long)max_content(*htype));
	if (limit > in->size)
		limit = in->size;
	if (*full > limit - pos)
		return cn_error_set(-CN_E_TRUNCATED,
				    "%s item at offset %llu (size %llu) runs past the end of its data (%llu)",
				    cn_pxd_htype_name(*htype), (unsigned long long)pos,
				    (unsigned long long)*full, (unsigned long long)limit);
	return 0;
}

int cn_pxd_grow(void **p, size_t *cap, size_t need, size_t elem)
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
	int rc = cn_pxd_rd(&d->in, d->range_end, pos + CN_PXAR_HEADER_SIZE, d->meta.data + d->meta.len,
			   (size_t)len);
	if (rc < 0)
		return rc;
	*off = d->meta.len;
	d->meta.len += (size_t)len;
	return 0;
}

int cn_pxd_read_u64s(struct cn_pxar_decoder *d, uint64_t pos, uint64_t full, size_t want,
		     uint64_t *v, const char *what)
{
	uint8_t b[32];
	if (full - CN_PXAR_HEADER_SIZE != want * 8)
		return cn_error_set(-CN_E_FORMAT, "bad %s size %llu at offset %llu (expected %zu)",
				    what, (unsigned long long)(full - CN_PXAR_HEADER_SIZE),
				    (unsigned long long)pos, want * 8);
	int rc = cn_pxd_rd(&d->in, d->range_end, pos + CN_PXAR_HEADER_SIZE, b, want * 8);
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
	int rc = cn_pxd_read_u64s(d, pos, full, 2, v, what);
	if (rc < 0)
		return rc;
	struct acl_list *l = &d->acl[which];
	if (l->n >= CN_PXAR_MAX_ACL)
		return cn_error_set(-E2BIG, "too many ACL entries at offset %llu",
				    (unsigned long long)pos);
	rc = cn_pxd_grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v));
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
int cn_pxd_check_hardlink_target(const struct cn_pxar_input *in, uint64_t filename_off,
				 uint64_t offset, uint64_t *target_out)
{
	if (offset == 0 || offset > filename_off)
		return cn_error_set(-CN_E_FORMAT, "invalid offset %llu in hardlink at offset %llu",
				    (unsigned long long)offset, (unsigned long long)filename_off);
	uint64_t t = filename_off - offset, ht, full, et, efull;
	int rc = cn_pxd_read_header(in, filename_off, t, &ht, &full);
	if (rc < 0)
		return cn_error_prefix(-CN_E_FORMAT, "hardlink at offset %llu",
				       (unsigned long long)filename_off);
	if (ht != CN_PXAR_FILENAME)
		return cn_error_set(-CN_E_FORMAT, "hardlink at offset %llu points to a %s item, not a file name",
				    (unsigned long long)filename_off, cn_pxd_htype_name(ht));
	rc = cn_pxd_read_header(in, filename_off, t + full, &et, &efull);
	if (rc < 0)
		return cn_error_prefix(-CN_E_FORMAT, "hardlink at offset %llu",
				       (unsigned long long)filename_off);
	uint8_t m[8];
	if (et != CN_PXAR_ENTRY && et != CN_PXAR_ENTRY_V1)
		return cn_error_set(-CN_E_FORMAT, "hardlink at offset %llu points to a %s item",
				    (unsigned long long)filename_off, cn_pxd_htype_name(et));
	rc = cn_pxd_rd(in, filename_off, t + full + CN_PXAR_HEADER_SIZE, m, 8);
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
	int rc = cn_pxd_grow((void **)&d->stack, &d->stack_cap, d->depth + 1, sizeof(*d->stack));
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
int cn_pxd_parse_entry(struct cn_pxar_decoder *d, uint64_t pos, uint64_t filename_off,
		       uint64_t name_hash, int is_root)
{
	struct cn_pxar_entry *e = &d->e;
	uint64_t ht, full;
	int rc = cn_pxd_read_header(&d->in, d->range_end, pos, &ht, &full);
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
		rc = cn_pxd_check_hardlink_target(&d->in, filename_off, e->hardlink_offset, NULL);
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
				    (unsigned long long)pos, cn_pxd_htype_name(ht));

	uint8_t st[CN_PXAR_STAT_SIZE];
	size_t stsize = ht == CN_PXAR_ENTRY ? CN_PXAR_STAT_SIZE : CN_PXAR_STAT_V1_SIZE;
	if (full - CN_PXAR_HEADER_SIZE != stsize)
		return cn_error_set(-CN_E_FORMAT, "bad entry size %llu at offset %llu",
				    (unsigned long long)(full - CN_PXAR_HEADER_SIZE),
				    (unsigned long long)pos);
	rc = cn_pxd_rd(&d->in, d->range_end, pos + CN_PXAR_HEADER_SIZE, st, stsize);
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
		rc = cn_pxd_read_header(&d->in, d->range_end, p, &ht, &full);
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
			rc = cn_pxd_grow((void **)&d->xa, &d->xa_cap, d->nxa + 1, sizeof(*d->xa));
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
			rc = cn_pxd_read_u64s(d, p, full, 1, &e->acl_group_obj, "acl group object");
			break;
		case CN_PXAR_ACL_DEFAULT:
			if (e->has_acl_default)
				return cn_error_set(-CN_E_FORMAT, "multiple acl default entries detected at offset %llu",
						    (unsigned long long)p);
			e->has_acl_default = 1;
			rc = cn_pxd_read_u64s(d, p, full, 4, e->acl_default, "acl default");
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
			rc = cn_pxd_read_u64s(d, p, full, 1, &e->quota_projid, "quota project id");
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
			rc = cn_pxd_read_u64s(d, p, full, 2, v, "payload reference");
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
				rc = cn_pxd_read_header(&d->payload, d->payload.size, v[0], &pt, &pf);
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
			rc = cn_pxd_read_u64s(d, p, full, 2, v, "device");
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
					    cn_pxd_htype_name(ht), (unsigned long long)ht, (unsigned long long)p);
		}
		if (rc < 0)
			return rc;
		p += full;
	}
}
