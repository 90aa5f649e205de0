/* cn_pxar_decoder — the validating sequential decoder: its state machine
 * (entries depth-first, directories closed by their goodbye tables, each
 * table checked against the children decoded), and reads and views of the
 * current file's content. See cn_pxar_decoder.h for what is checked and
 * cn_pxar_decoder_impl.h for the decoder's invariants; upstream:
 * proxmox/pxar src/decoder/mod.rs (state machine).
 */
#include "pxar/cn_pxar_decoder_impl.h"
#include "pxar/cn_pxar_format.h"
#include "common/cn_error.h"
#include "common/cn_util.h"

#include <stdlib.h>
#include <string.h>

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

/* Makes the public pointers of d->e point into the decoder's storage. */
static int finish_entry(struct cn_pxar_decoder *d)
{
	struct cn_pxar_entry *e = &d->e;
	int rc = cn_pxd_grow((void **)&d->xattrs, &d->xattrs_cap, d->nxa, sizeof(*d->xattrs));
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
	int rc = cn_pxd_grow((void **)&d->path, &d->path_cap, need, 1);
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
	int rc = cn_pxd_grow((void **)&d->children, &d->children_cap, d->nchildren + 1, sizeof(*d->children));
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
	int rc = cn_pxd_rd(in, in->size, a, ha, sizeof(ha));
	if (rc == 0)
		rc = cn_pxd_rd(in, in->size, b, hb, sizeof(hb));
	if (rc < 0)
		return rc;
	*same = 0;
	uint64_t n = cn_le64(ha + 8);
	if (n != cn_le64(hb + 8) || n > CN_PXAR_HEADER_SIZE + CN_PXAR_MAX_FILENAME_LEN + 1)
		return 0;
	uint8_t na[CN_PXAR_MAX_FILENAME_LEN + 1], nb[CN_PXAR_MAX_FILENAME_LEN + 1];
	n -= CN_PXAR_HEADER_SIZE;
	rc = cn_pxd_rd(in, in->size, a + CN_PXAR_HEADER_SIZE, na, (size_t)n);
	if (rc == 0)
		rc = cn_pxd_rd(in, in->size, b + CN_PXAR_HEADER_SIZE, nb, (size_t)n);
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
	int rc = cn_pxd_grow((void **)&d->gb_buf, &d->gb_cap, (size_t)content, 1);
	if (rc < 0)
		return rc;
	rc = cn_pxd_rd(&d->in, d->range_end, gpos + CN_PXAR_HEADER_SIZE, d->gb_buf, (size_t)content);
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
		int rc = cn_pxd_read_header(payload, payload->size, 0, &t, &f);
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

/* Points d (fresh or used) at the range: the state of a new decoder,
 * its buffers kept. */
static int range_init(struct cn_pxar_decoder *d, uint64_t filename_off, uint64_t entry_off,
		      uint64_t end, const char *base, int exact)
{
	d->version = 1;
	d->metadata_only = 0;
	d->payload_next = 0;
	d->state = ST_BEGIN;
	d->pos = 0;
	d->depth = 0;
	d->nchildren = 0;
	d->range_start = entry_off;
	d->range_end = end;
	d->root_filename_off = filename_off;
	d->exact_end = exact;
	while (*base == '/')
		base++;
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	int rc = cn_pxd_grow((void **)&d->path, &d->path_cap, bl + 1, 1);
	if (rc < 0)
		return rc;
	memcpy(d->path, base, bl);
	path_set_len(d, bl);
	d->base_len = bl;
	return 0;
}

static int range_check(const struct cn_pxar_input *in, uint64_t entry_off, uint64_t end)
{
	if (entry_off > end || end > in->size)
		return cn_error_set(-CN_E_FORMAT, "entry range %llu..%llu outside the archive",
				    (unsigned long long)entry_off, (unsigned long long)end);
	return 0;
}

int cn_pxd_new_range(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
		     uint64_t filename_off, uint64_t entry_off, uint64_t end, const char *base,
		     int exact, struct cn_pxar_decoder **out)
{
	*out = NULL;
	int rc = range_check(in, entry_off, end);
	if (rc < 0)
		return rc;
	rc = decoder_alloc(in, payload, out);
	if (rc < 0)
		return rc;
	rc = range_init(*out, filename_off, entry_off, end, base, exact);
	if (rc < 0) {
		cn_pxar_decoder_free(*out);
		*out = NULL;
	}
	return rc;
}

int cn_pxd_reuse_range(struct cn_pxar_decoder *d, uint64_t filename_off, uint64_t entry_off,
		       uint64_t end, const char *base, int exact)
{
	int rc = range_check(&d->in, entry_off, end);
	if (rc < 0)
		return rc;
	return range_init(d, filename_off, entry_off, end, base, exact);
}

int cn_pxar_decoder_new_range(const struct cn_pxar_input *in, const struct cn_pxar_input *payload,
			      uint64_t filename_offset, uint64_t entry_offset, uint64_t end_offset,
			      const char *base_path, struct cn_pxar_decoder **out)
{
	return cn_pxd_new_range(in, payload, filename_offset, entry_offset, end_offset, base_path, 1, out);
}

/* Reads FORMAT_VERSION and PRELUDE at the archive start, if present. */
static int read_preamble(struct cn_pxar_decoder *d)
{
	uint64_t t, f;
	int rc = cn_pxd_read_header(&d->in, d->range_end, d->pos, &t, &f);
	if (rc < 0)
		return rc;
	if (t != CN_PXAR_FORMAT_VERSION)
		return 0;
	uint64_t v;
	rc = cn_pxd_read_u64s(d, d->pos, f, 1, &v, "format version");
	if (rc < 0)
		return rc;
	if (v != 1 && v != 2)
		return cn_error_set(-CN_E_FORMAT, "unknown format version %llu", (unsigned long long)v);
	d->version = (int)v;
	d->pos += f;
	rc = cn_pxd_read_header(&d->in, d->range_end, d->pos, &t, &f);
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
		rc = cn_pxd_parse_entry(d, d->pos, d->root_filename_off, 0, 1);
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
	rc = cn_pxd_read_header(&d->in, d->range_end, pos, &t, &full);
	if (rc < 0)
		return rc;
	if (t == CN_PXAR_FILENAME) {
		uint8_t name[CN_PXAR_MAX_FILENAME_LEN + 1];
		size_t n = (size_t)(full - CN_PXAR_HEADER_SIZE);
		rc = cn_pxd_rd(&d->in, d->range_end, pos + CN_PXAR_HEADER_SIZE, name, n);
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
		rc = cn_pxd_parse_entry(d, pos + full, pos, hash, 0);
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
			    (unsigned long long)pos, cn_pxd_htype_name(t));
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
	return cn_pxd_rd(in, in->size, d->e.content_offset + off, buf, len);
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
	int rc = cn_pxd_in_range(in, in->size, at, len);
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
