/* cn_pxar_encoder — pxar v1 stream writer (see cn_pxar_encoder.h).
 *
 * Invariants:
 *  - pos counts every byte handed to the output (buffered or not), so it
 *    is the archive offset of the next byte, as pxar's write_position.
 *  - frames[0] is the root; each frame collects one goodbye item per
 *    finished child, with offset = absolute FILENAME position (made
 *    relative to the goodbye header when the table is written).
 *  - a child's item size runs from its FILENAME header to its last byte;
 *    for a directory that includes its own goodbye table.
 */
#include "pxar/cn_pxar_encoder.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "common/cn_util.h"

#define OUT_BUF_SIZE (64u * 1024u)

struct gb_item {
	uint64_t hash, offset, size;
};

struct frame {
	uint64_t entry_offset;  /* position of this directory's ENTRY header */
	uint64_t file_offset;   /* position of its FILENAME header (not root) */
	uint64_t hash;          /* hash of its name (not root) */
	struct gb_item *items;
	size_t n, cap;
};

/* One buffered output stream: the archive (v1) / metadata stream (v2), or
 * the v2 payload stream. pos counts every byte handed to it, buffered or
 * not, plus what cn_pxar_encoder_advance() skipped. */
struct stream {
	cn_write_fn out;
	void *ctx;
	uint64_t pos;
	uint8_t *buf;
	size_t buf_len, cap;
};

struct cn_pxar_encoder {
	struct stream meta;
	struct stream payload;  /* split archives only (out != NULL) */
	int split;
	struct frame *frames;
	size_t depth, frames_cap;
	/* current regular file */
	int in_file;
	uint64_t file_remaining;
	struct gb_item file_item;
	int failed;
	int finished;
};

/* ---- metadata helpers ---- */

static int grow(void **arr, size_t n, size_t elem)
{
	/* grow to the next power of two when n is one */
	if (n & (n - 1))
		return 0;
	size_t nc = n ? n * 2 : 4;
	void *p = realloc(*arr, nc * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	return 0;
}

int cn_pxar_metadata_add_xattr(struct cn_pxar_metadata *m, const void *name, size_t name_len,
			       const void *value, size_t value_len)
{
	if (grow((void **)&m->xattrs, m->n_xattrs, sizeof(*m->xattrs)) < 0)
		return -ENOMEM;
	struct cn_pxar_xattr *x = &m->xattrs[m->n_xattrs];
	x->name = malloc(name_len ? name_len : 1);
	x->value = malloc(value_len ? value_len : 1);
	if (!x->name || !x->value) {
		free(x->name);
		free(x->value);
		return -ENOMEM;
	}
	memcpy(x->name, name, name_len);
	if (value_len)
		memcpy(x->value, value, value_len);
	x->name_len = name_len;
	x->value_len = value_len;
	m->n_xattrs++;
	return 0;
}

int cn_pxar_metadata_add_acl(struct cn_pxar_metadata *m, int which, uint64_t id, uint64_t perms)
{
	struct cn_pxar_acl_entry **arr;
	size_t *n;
	switch (which) {
	case 0: arr = &m->acl_users; n = &m->n_acl_users; break;
	case 1: arr = &m->acl_groups; n = &m->n_acl_groups; break;
	case 2: arr = &m->acl_default_users; n = &m->n_acl_default_users; break;
	case 3: arr = &m->acl_default_groups; n = &m->n_acl_default_groups; break;
	default: return -EINVAL;
	}
	if (grow((void **)arr, *n, sizeof(**arr)) < 0)
		return -ENOMEM;
	(*arr)[*n].id = id;
	(*arr)[*n].permissions = perms;
	(*n)++;
	return 0;
}

int cn_pxar_metadata_set_fcaps(struct cn_pxar_metadata *m, const void *data, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);
	if (!p)
		return -ENOMEM;
	if (len)
		memcpy(p, data, len);
	free(m->fcaps);
	m->fcaps = p;
	m->fcaps_len = len;
	m->has_fcaps = 1;
	return 0;
}

void cn_pxar_metadata_clear(struct cn_pxar_metadata *m)
{
	for (size_t i = 0; i < m->n_xattrs; i++) {
		free(m->xattrs[i].name);
		free(m->xattrs[i].value);
	}
	free(m->xattrs);
	free(m->acl_users);
	free(m->acl_groups);
	free(m->acl_default_users);
	free(m->acl_default_groups);
	free(m->fcaps);
	memset(m, 0, sizeof(*m));
}

/* ---- output ---- */

static int stream_flush(struct stream *st)
{
	if (st->buf_len == 0)
		return 0;
	int rc = st->out(st->ctx, st->buf, st->buf_len);
	st->buf_len = 0;
	return rc < 0 ? rc : 0;
}

static int stream_emit(struct stream *st, const void *data, size_t len)
{
	const uint8_t *p = data;
	if (len >= st->cap) {
		/* large (file data): pass through without copying */
		int rc = stream_flush(st);
		if (rc < 0)
			return rc;
		rc = st->out(st->ctx, p, len);
		if (rc < 0)
			return rc;
		st->pos += len;
		return 0;
	}
	while (len > 0) {
		size_t n = st->cap - st->buf_len;
		if (n > len)
			n = len;
		memcpy(st->buf + st->buf_len, p, n);
		st->buf_len += n;
		st->pos += n;
		p += n;
		len -= n;
		if (st->buf_len == st->cap) {
			int rc = stream_flush(st);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

static int stream_header(struct stream *st, uint64_t htype, uint64_t content_len)
{
	uint8_t h[CN_PXAR_HEADER_SIZE];
	cn_put_le64(h, htype);
	cn_put_le64(h + 8, content_len + CN_PXAR_HEADER_SIZE);
	return stream_emit(st, h, sizeof(h));
}

static int flush_buf(struct cn_pxar_encoder *e)
{
	int rc = stream_flush(&e->meta);
	if (rc < 0)
		e->failed = 1;
	return rc;
}

static int emit(struct cn_pxar_encoder *e, const void *data, size_t len)
{
	int rc = stream_emit(&e->meta, data, len);
	if (rc < 0)
		e->failed = 1;
	return rc;
}

static int emit_header(struct cn_pxar_encoder *e, uint64_t htype, uint64_t content_len)
{
	int rc = stream_header(&e->meta, htype, content_len);
	if (rc < 0)
		e->failed = 1;
	return rc;
}

static int emit_item(struct cn_pxar_encoder *e, uint64_t htype, const void *data, size_t len)
{
	int rc = emit_header(e, htype, len);
	return rc < 0 ? rc : emit(e, data, len);
}

static int emit_u64s(struct cn_pxar_encoder *e, uint64_t htype, const uint64_t *v, size_t n)
{
	uint8_t b[32];
	for (size_t i = 0; i < n; i++)
		cn_put_le64(b + 8 * i, v[i]);
	return emit_item(e, htype, b, 8 * n);
}

/* name + NUL as one item */
static int emit_zitem(struct cn_pxar_encoder *e, uint64_t htype, const void *data, size_t len)
{
	static const uint8_t zero = 0;
	int rc = emit_header(e, htype, len + 1);
	if (rc == 0)
		rc = emit(e, data, len);
	if (rc == 0)
		rc = emit(e, &zero, 1);
	return rc;
}

static int emit_acl_list(struct cn_pxar_encoder *e, uint64_t htype,
			 const struct cn_pxar_acl_entry *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v[2] = { a[i].id, a[i].permissions };
		int rc = emit_u64s(e, htype, v, 2);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ENTRY, XATTR*, ACLs, FCAPS, QUOTA_PROJID: pxar encode_metadata order. */
static int emit_metadata(struct cn_pxar_encoder *e, const struct cn_pxar_metadata *m)
{
	uint8_t st[CN_PXAR_STAT_SIZE];
	int rc;

	cn_put_le64(st, m->stat.mode);
	cn_put_le64(st + 8, m->stat.flags);
	cn_put_le32(st + 16, m->stat.uid);
	cn_put_le32(st + 20, m->stat.gid);
	cn_put_le64(st + 24, (uint64_t)m->stat.mtime_secs);
	cn_put_le32(st + 32, m->stat.mtime_nanos);
	cn_put_le32(st + 36, 0);
	if ((rc = emit_item(e, CN_PXAR_ENTRY, st, sizeof(st))) < 0)
		return rc;
	for (size_t i = 0; i < m->n_xattrs; i++) {
		const struct cn_pxar_xattr *x = &m->xattrs[i];
		static const uint8_t zero = 0;
		if ((rc = emit_header(e, CN_PXAR_XATTR, x->name_len + 1 + x->value_len)) < 0 ||
		    (rc = emit(e, x->name, x->name_len)) < 0 || (rc = emit(e, &zero, 1)) < 0 ||
		    (rc = emit(e, x->value, x->value_len)) < 0)
			return rc;
	}
	if ((rc = emit_acl_list(e, CN_PXAR_ACL_USER, m->acl_users, m->n_acl_users)) < 0 ||
	    (rc = emit_acl_list(e, CN_PXAR_ACL_GROUP, m->acl_groups, m->n_acl_groups)) < 0)
		return rc;
	if (m->has_acl_group_obj && (rc = emit_u64s(e, CN_PXAR_ACL_GROUP_OBJ, &m->acl_group_obj, 1)) < 0)
		return rc;
	if (m->has_acl_default) {
		uint64_t v[4] = { m->acl_default.user_obj_permissions, m->acl_default.group_obj_permissions,
				  m->acl_default.other_permissions, m->acl_default.mask_permissions };
		if ((rc = emit_u64s(e, CN_PXAR_ACL_DEFAULT, v, 4)) < 0)
			return rc;
	}
	if ((rc = emit_acl_list(e, CN_PXAR_ACL_DEFAULT_USER, m->acl_default_users, m->n_acl_default_users)) < 0 ||
	    (rc = emit_acl_list(e, CN_PXAR_ACL_DEFAULT_GROUP, m->acl_default_groups, m->n_acl_default_groups)) < 0)
		return rc;
	if (m->has_fcaps && (rc = emit_item(e, CN_PXAR_FCAPS, m->fcaps, m->fcaps_len)) < 0)
		return rc;
	if (m->has_quota_projid && (rc = emit_u64s(e, CN_PXAR_QUOTA_PROJID, &m->quota_projid, 1)) < 0)
		return rc;
	return 0;
}

static int buf_sink(void *ctx, const uint8_t *data, size_t len)
{
	return cn_buf_append(ctx, data, len) < 0 ? -ENOMEM : 0;
}

int cn_pxar_metadata_encode(const struct cn_pxar_metadata *m, struct cn_buf *out)
{
	uint8_t buf[4096];
	struct cn_pxar_encoder e = { .meta = { .out = buf_sink, .ctx = out, .buf = buf, .cap = sizeof(buf) } };
	int rc = emit_metadata(&e, m);
	return rc < 0 ? rc : flush_buf(&e);
}

/* ---- structure ---- */

int cn_pxar_check_filename(const void *name, size_t len)
{
	const char *n = name;
	if (len == 0)
		return cn_error_set(-CN_E_PATH, "illegal path found (empty)");
	if (memchr(n, '/', len))
		return cn_error_set(-CN_E_PATH, "illegal path found (contains slashes, this is a security concern)");
	if (memchr(n, 0, len))
		return cn_error_set(-CN_E_PATH, "illegal path found (contains a NUL byte)");
	if ((len == 1 && n[0] == '.') || (len == 2 && n[0] == '.' && n[1] == '.'))
		return cn_error_set(-CN_E_PATH, "illegal path found: '%.*s'", (int)len, n);
	if (len > CN_PXAR_MAX_FILENAME_LEN)
		return cn_error_set(-CN_E_PATH, "filename too long (> %u)", CN_PXAR_MAX_FILENAME_LEN);
	return 0;
}

static int check_state(struct cn_pxar_encoder *e)
{
	if (e->failed)
		return cn_error_set(-EINVAL, "pxar encoder: used after an error");
	if (e->finished)
		return cn_error_set(-EINVAL, "pxar encoder: already finished");
	if (e->in_file)
		return cn_error_set(-EINVAL, "pxar encoder: incomplete file");
	return 0;
}

static int push_item(struct cn_pxar_encoder *e, uint64_t hash, uint64_t offset, uint64_t size)
{
	struct frame *f = &e->frames[e->depth - 1];
	if (f->n == f->cap) {
		size_t nc = f->cap ? f->cap * 2 : 16;
		struct gb_item *p = realloc(f->items, nc * sizeof(*p));
		if (!p) {
			e->failed = 1;
			return -ENOMEM;
		}
		f->items = p;
		f->cap = nc;
	}
	f->items[f->n++] = (struct gb_item){ hash, offset, size };
	return 0;
}

static int fail(struct cn_pxar_encoder *e, int rc)
{
	e->failed = 1;
	return rc;
}

static int begin_entry(struct cn_pxar_encoder *e, const void *name, size_t name_len)
{
	int rc = check_state(e);
	if (rc == 0)
		rc = cn_pxar_check_filename(name, name_len);
	if (rc < 0)
		return rc;
	rc = emit_zitem(e, CN_PXAR_FILENAME, name, name_len);
	return rc < 0 ? fail(e, rc) : 0;
}

static int push_frame(struct cn_pxar_encoder *e, uint64_t file_offset, uint64_t hash)
{
	if (e->depth == e->frames_cap) {
		size_t nc = e->frames_cap ? e->frames_cap * 2 : 16;
		struct frame *p = realloc(e->frames, nc * sizeof(*p));
		if (!p)
			return -ENOMEM;
		e->frames = p;
		e->frames_cap = nc;
	}
	e->frames[e->depth++] = (struct frame){ .entry_offset = e->meta.pos, .file_offset = file_offset,
					      .hash = hash };
	return 0;
}

static int encoder_init(cn_write_fn out, void *ctx, cn_write_fn payload_out, void *payload_ctx,
			const void *prelude, size_t prelude_len,
			const struct cn_pxar_metadata *root, struct cn_pxar_encoder **enc)
{
	*enc = NULL;
	if ((root->stat.mode & CN_PXAR_IFMT) != CN_PXAR_IFDIR)
		return cn_error_set(-EINVAL, "directory metadata must contain the directory mode flag");
	struct cn_pxar_encoder *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->meta.out = out;
	e->meta.ctx = ctx;
	e->meta.buf = malloc(OUT_BUF_SIZE);
	e->meta.cap = e->payload.cap = OUT_BUF_SIZE;
	int rc = e->meta.buf ? 0 : -ENOMEM;
	if (rc == 0 && payload_out) {
		e->split = 1;
		e->payload.out = payload_out;
		e->payload.ctx = payload_ctx;
		e->payload.buf = malloc(OUT_BUF_SIZE);
		rc = e->payload.buf ? 0 : -ENOMEM;
		/* pxar EncoderImpl::new: the payload stream opens with its
		 * start marker, the metadata stream with FORMAT_VERSION(2) and
		 * the optional PRELUDE before the root entry. */
		if (rc == 0)
			rc = stream_header(&e->payload, CN_PXAR_PAYLOAD_START_MARKER, 0);
		if (rc == 0) {
			uint64_t version = 2;
			rc = emit_u64s(e, CN_PXAR_FORMAT_VERSION, &version, 1);
		}
		if (rc == 0 && prelude)
			rc = emit_item(e, CN_PXAR_PRELUDE, prelude, prelude_len);
	}
	/* the root's goodbye tail counts from the archive start (0), also in
	 * v2 where FORMAT_VERSION precedes the root ENTRY (spec §6 step 4) */
	if (rc == 0)
		rc = push_frame(e, 0, 0);
	if (rc == 0) {
		e->frames[0].entry_offset = 0;
		rc = emit_metadata(e, root);
	}
	if (rc < 0) {
		cn_pxar_encoder_free(e);
		return rc;
	}
	*enc = e;
	return 0;
}

int cn_pxar_encoder_new(cn_write_fn out, void *ctx, const struct cn_pxar_metadata *root,
			struct cn_pxar_encoder **enc)
{
	return encoder_init(out, ctx, NULL, NULL, NULL, 0, root, enc);
}

int cn_pxar_encoder_new_split(cn_write_fn meta_out, void *meta_ctx, cn_write_fn payload_out,
			      void *payload_ctx, const void *prelude, size_t prelude_len,
			      const struct cn_pxar_metadata *root, struct cn_pxar_encoder **enc)
{
	if (!payload_out)
		return cn_error_set(-EINVAL, "split pxar encoder needs a payload output");
	return encoder_init(meta_out, meta_ctx, payload_out, payload_ctx, prelude, prelude_len,
			    root, enc);
}

int cn_pxar_encoder_is_split(const struct cn_pxar_encoder *enc) { return enc->split; }

uint64_t cn_pxar_encoder_payload_position(const struct cn_pxar_encoder *enc)
{
	return enc->payload.pos;
}

int cn_pxar_encoder_flush_payload(struct cn_pxar_encoder *e)
{
	if (!e->split)
		return cn_error_set(-EINVAL, "pxar encoder: no payload stream (v1 archive)");
	int rc = stream_flush(&e->payload);
	return rc < 0 ? fail(e, rc) : 0;
}

int cn_pxar_encoder_advance(struct cn_pxar_encoder *e, uint64_t size)
{
	int rc = check_state(e);
	if (rc < 0)
		return rc;
	if ((rc = cn_pxar_encoder_flush_payload(e)) < 0)
		return rc;
	e->payload.pos += size;
	return 0;
}

uint64_t cn_pxar_encoder_position(const struct cn_pxar_encoder *enc) { return enc->meta.pos; }
size_t cn_pxar_encoder_depth(const struct cn_pxar_encoder *enc) { return enc->depth; }

int cn_pxar_encoder_begin_file(struct cn_pxar_encoder *e, const struct cn_pxar_metadata *m,
			       const void *name, size_t name_len, uint64_t size,
			       uint64_t *link_offset)
{
	uint64_t start = e->meta.pos;
	int rc = begin_entry(e, name, name_len);
	if (rc < 0)
		return rc;
	if ((rc = emit_metadata(e, m)) < 0)
		return fail(e, rc);
	if (e->split) {
		/* PAYLOAD_REF points at the PAYLOAD header in the payload stream
		 * (pxar create_file_do) */
		uint64_t ref[2] = { e->payload.pos, size };
		if ((rc = stream_header(&e->payload, CN_PXAR_PAYLOAD, size)) < 0 ||
		    (rc = emit_u64s(e, CN_PXAR_PAYLOAD_REF, ref, 2)) < 0)
			return fail(e, rc);
	} else if ((rc = emit_header(e, CN_PXAR_PAYLOAD, size)) < 0) {
		return fail(e, rc);
	}
	/* item size = metadata bytes + file size, as pxar's create_file_do */
	e->file_item = (struct gb_item){ cn_pxar_hash_filename(name, name_len), start,
					 size + (e->meta.pos - start) };
	e->in_file = 1;
	e->file_remaining = size;
	if (link_offset)
		*link_offset = start;
	return 0;
}

int cn_pxar_encoder_write(struct cn_pxar_encoder *e, const void *data, size_t len)
{
	if (e->failed || !e->in_file)
		return cn_error_set(-EINVAL, "pxar encoder: write outside of a file");
	if (len > e->file_remaining)
		return fail(e, cn_error_set(-EINVAL, "pxar encoder: more file data than announced"));
	int rc = e->split ? stream_emit(&e->payload, data, len) : emit(e, data, len);
	if (rc < 0)
		return fail(e, rc);
	e->file_remaining -= len;
	return 0;
}

int cn_pxar_encoder_direct_begin(struct cn_pxar_encoder *e)
{
	if (e->failed || !e->in_file)
		return cn_error_set(-EINVAL, "pxar encoder: write outside of a file");
	int rc = stream_flush(e->split ? &e->payload : &e->meta);
	return rc < 0 ? fail(e, rc) : 0;
}

int cn_pxar_encoder_direct_done(struct cn_pxar_encoder *e, size_t len)
{
	if (e->failed || !e->in_file)
		return cn_error_set(-EINVAL, "pxar encoder: write outside of a file");
	if (len > e->file_remaining)
		return fail(e, cn_error_set(-EINVAL, "pxar encoder: more file data than announced"));
	(e->split ? &e->payload : &e->meta)->pos += len;
	e->file_remaining -= len;
	return 0;
}

int cn_pxar_encoder_end_file(struct cn_pxar_encoder *e)
{
	if (e->failed || !e->in_file)
		return cn_error_set(-EINVAL, "pxar encoder: no file open");
	if (e->file_remaining != 0)
		return fail(e, cn_error_set(-EINVAL, "pxar encoder: incomplete file (%llu bytes missing)",
					    (unsigned long long)e->file_remaining));
	e->in_file = 0;
	return push_item(e, e->file_item.hash, e->file_item.offset, e->file_item.size);
}

/* FILENAME, optional metadata, optional (htype, data): pxar add_file_entry */
static int add_file_entry(struct cn_pxar_encoder *e, const struct cn_pxar_metadata *m,
			  const void *name, size_t name_len, uint64_t htype,
			  const void *data, size_t len, int zero_terminate)
{
	uint64_t start = e->meta.pos;
	int rc = begin_entry(e, name, name_len);
	if (rc < 0)
		return rc;
	if (m && (rc = emit_metadata(e, m)) < 0)
		return fail(e, rc);
	if (htype) {
		rc = zero_terminate ? emit_zitem(e, htype, data, len) : emit_item(e, htype, data, len);
		if (rc < 0)
			return fail(e, rc);
	}
	return push_item(e, cn_pxar_hash_filename(name, name_len), start, e->meta.pos - start);
}

int cn_pxar_encoder_add_payload_ref(struct cn_pxar_encoder *e, const struct cn_pxar_metadata *m,
				    const void *name, size_t name_len, uint64_t size,
				    uint64_t payload_offset, uint64_t *link_offset)
{
	if (!e->split)
		return cn_error_set(-EINVAL, "payload references not supported in format version 1");
	if ((m->stat.mode & CN_PXAR_IFMT) != CN_PXAR_IFREG)
		return cn_error_set(-EINVAL, "payload reference for a non-regular file");
	if (payload_offset < e->payload.pos)
		return cn_error_set(-EINVAL, "offset smaller than current position: %llu < %llu",
				    (unsigned long long)payload_offset,
				    (unsigned long long)e->payload.pos);
	uint8_t ref[16];
	cn_put_le64(ref, payload_offset);
	cn_put_le64(ref + 8, size);
	uint64_t start = e->meta.pos;
	int rc = add_file_entry(e, m, name, name_len, CN_PXAR_PAYLOAD_REF, ref, sizeof(ref), 0);
	if (rc == 0 && link_offset)
		*link_offset = start;
	return rc;
}

int cn_pxar_encoder_add_symlink(struct cn_pxar_encoder *e, const struct cn_pxar_metadata *m,
				const void *name, size_t name_len,
				const void *target, size_t target_len)
{
	return add_file_entry(e, m, name, name_len, CN_PXAR_SYMLINK, target, target_len, 1);
}

int cn_pxar_encoder_add_device(struct cn_pxar_encoder *e, const struct cn_pxar_metadata *m,
			       const void *name, size_t name_len, uint64_t major, uint64_t minor)
{
	uint32_t t = (uint32_t)(m->stat.mode & CN_PXAR_IFMT);
	if (t != CN_PXAR_IFCHR && t != CN_PXAR_IFBLK)
		return cn_error_set(-EINVAL, "entry added via add_device must have a device mode in its metadata");
	uint8_t d[CN_PXAR_DEVICE_SIZE];
	cn_put_le64(d, major);
	cn_put_le64(d + 8, minor);
	return add_file_entry(e, m, name, name_len, CN_PXAR_DEVICE, d, sizeof(d), 0);
}

int cn_pxar_encoder_add_special(struct cn_pxar_encoder *e, const struct cn_pxar_metadata *m,
				const void *name, size_t name_len)
{
	uint32_t t = (uint32_t)(m->stat.mode & CN_PXAR_IFMT);
	if (t != CN_PXAR_IFIFO && t != CN_PXAR_IFSOCK)
		return cn_error_set(-EINVAL, "special entry must be a fifo or socket");
	return add_file_entry(e, m, name, name_len, 0, NULL, 0, 0);
}

int cn_pxar_encoder_add_hardlink(struct cn_pxar_encoder *e, const void *name, size_t name_len,
				 const void *target, size_t target_len, uint64_t link_offset)
{
	if (e->meta.pos <= link_offset)
		return cn_error_set(-EINVAL, "invalid hardlink offset, can only point to prior files");
	if (target_len > CN_PXAR_MAX_PATH_LEN * 64)
		return cn_error_set(-EINVAL, "hardlink target path too long");
	uint8_t *buf = malloc(8 + target_len);
	if (!buf)
		return -ENOMEM;
	cn_put_le64(buf, e->meta.pos - link_offset);
	memcpy(buf + 8, target, target_len);
	int rc = add_file_entry(e, NULL, name, name_len, CN_PXAR_HARDLINK, buf, 8 + target_len, 1);
	free(buf);
	return rc;
}

int cn_pxar_encoder_begin_dir(struct cn_pxar_encoder *e, const struct cn_pxar_metadata *m,
			      const void *name, size_t name_len)
{
	if ((m->stat.mode & CN_PXAR_IFMT) != CN_PXAR_IFDIR)
		return cn_error_set(-EINVAL, "directory metadata must contain the directory mode flag");
	uint64_t start = e->meta.pos;
	int rc = begin_entry(e, name, name_len);
	if (rc < 0)
		return rc;
	if ((rc = push_frame(e, start, cn_pxar_hash_filename(name, name_len))) < 0 ||
	    (rc = emit_metadata(e, m)) < 0)
		return fail(e, rc);
	return 0;
}

static int cmp_hash(const void *a, const void *b)
{
	uint64_t x = ((const struct gb_item *)a)->hash, y = ((const struct gb_item *)b)->hash;
	return x < y ? -1 : x > y;
}

/* Writes the innermost frame's goodbye table and pops it; returns the
 * frame's data through *closed (items freed). */
static int close_frame(struct cn_pxar_encoder *e, struct frame *closed)
{
	struct frame *f = &e->frames[e->depth - 1];
	uint64_t gb_pos = e->meta.pos;
	uint64_t n = f->n;
	uint64_t content = (n + 1) * CN_PXAR_GOODBYE_ITEM_SIZE;
	size_t *slot = NULL;
	int rc;

	if (f->n > 1)
		qsort(f->items, f->n, sizeof(*f->items), cmp_hash);
	if (f->n && !(slot = malloc(f->n * sizeof(*slot))))
		return fail(e, -ENOMEM);
	cn_pxar_goodbye_permute(f->n, slot);
	rc = emit_header(e, CN_PXAR_GOODBYE, content);
	for (size_t i = 0; rc == 0 && i < f->n; i++) {
		const struct gb_item *it = &f->items[slot[i]];
		uint8_t b[CN_PXAR_GOODBYE_ITEM_SIZE];
		cn_put_le64(b, it->hash);
		cn_put_le64(b + 8, gb_pos - it->offset);
		cn_put_le64(b + 16, it->size);
		rc = emit(e, b, sizeof(b));
	}
	free(slot);
	if (rc == 0) {
		uint8_t b[CN_PXAR_GOODBYE_ITEM_SIZE];
		cn_put_le64(b, CN_PXAR_GOODBYE_TAIL_MARKER);
		cn_put_le64(b + 8, gb_pos - f->entry_offset);
		cn_put_le64(b + 16, content + CN_PXAR_HEADER_SIZE);
		rc = emit(e, b, sizeof(b));
	}
	free(f->items);
	*closed = *f;
	closed->items = NULL;
	e->depth--;
	return rc < 0 ? fail(e, rc) : 0;
}

int cn_pxar_encoder_end_dir(struct cn_pxar_encoder *e)
{
	int rc = check_state(e);
	if (rc < 0)
		return rc;
	if (e->depth < 2)
		return cn_error_set(-EINVAL, "pxar encoder: no subdirectory open");
	struct frame f;
	if ((rc = close_frame(e, &f)) < 0)
		return rc;
	return push_item(e, f.hash, f.file_offset, e->meta.pos - f.file_offset);
}

int cn_pxar_encoder_finish(struct cn_pxar_encoder *e)
{
	int rc = check_state(e);
	if (rc < 0)
		return rc;
	if (e->depth != 1)
		return cn_error_set(-EINVAL, "pxar encoder: %zu directories not finalized", e->depth - 1);
	struct frame f;
	if ((rc = close_frame(e, &f)) < 0 || (rc = flush_buf(e)) < 0)
		return rc;
	if (e->split) {
		/* pxar close(): the payload stream ends with its tail marker */
		if ((rc = stream_header(&e->payload, CN_PXAR_PAYLOAD_TAIL_MARKER, 0)) < 0 ||
		    (rc = stream_flush(&e->payload)) < 0)
			return fail(e, rc);
	}
	e->finished = 1;
	return 0;
}

void cn_pxar_encoder_free(struct cn_pxar_encoder *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->depth; i++)
		free(e->frames[i].items);
	free(e->frames);
	free(e->meta.buf);
	free(e->payload.buf);
	free(e);
}
