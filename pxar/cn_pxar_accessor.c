/* cn_pxar_accessor — random access into a pxar archive: finding a path
 * through the goodbye tables, decoding one entry or subtree found that way,
 * and following hardlinks (see cn_pxar_decoder.h). Upstream: proxmox/pxar
 * src/accessor/mod.rs (random access), src/binary_tree_array.rs
 * (search_by).
 */
#include "pxar/cn_pxar_decoder_impl.h"
#include "pxar/cn_pxar_format.h"
#include "common/cn_error.h"
#include "common/cn_util.h"

#include <stdlib.h>
#include <string.h>

#define MAX_HASH_DUPS 64 /* SipHash collisions among one directory's names */

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
	int rc = cn_pxd_read_header(in, in->size, 0, &t, &f);
	if (rc < 0)
		return rc;
	if (t == CN_PXAR_FORMAT_VERSION) {
		uint8_t b[8];
		if (f != CN_PXAR_HEADER_SIZE + 8)
			return cn_error_set(-CN_E_FORMAT, "bad format version size");
		rc = cn_pxd_rd(in, in->size, CN_PXAR_HEADER_SIZE, b, 8);
		if (rc < 0)
			return rc;
		if (cn_le64(b) != 1 && cn_le64(b) != 2)
			return cn_error_set(-CN_E_FORMAT, "unknown format version %llu",
					    (unsigned long long)cn_le64(b));
	} else if (t != CN_PXAR_ENTRY && t != CN_PXAR_ENTRY_V1) {
		return cn_error_set(-CN_E_FORMAT, "not a pxar archive (first item is %s)", cn_pxd_htype_name(t));
	}
	if (payload) {
		rc = cn_pxd_read_header(payload, payload->size, 0, &t, &f);
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
	int rc = cn_pxd_rd(in, end, end - CN_PXAR_GOODBYE_ITEM_SIZE, tail, sizeof(tail));
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
	rc = cn_pxd_read_header(in, end, g->goodbye_off, &t, &f);
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
	int rc = cn_pxd_rd(in, g->end, g->goodbye_off + CN_PXAR_HEADER_SIZE + i * CN_PXAR_GOODBYE_ITEM_SIZE,
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
		rc = cn_pxd_read_header(in, end, p, &t, &f);
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
				    (unsigned long long)p, cn_pxd_htype_name(t));
	uint8_t m[8];
	rc = cn_pxd_rd(in, end, p + CN_PXAR_HEADER_SIZE, m, 8);
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
		rc = cn_pxd_read_header(&a->in, g.goodbye_off, fo, &t, &f);
		if (rc < 0)
			return rc;
		if (t != CN_PXAR_FILENAME)
			return cn_error_set(-CN_E_FORMAT, "goodbye item at %llu points to a %s item, not a file name",
					    (unsigned long long)g.goodbye_off, cn_pxd_htype_name(t));
		char nb[CN_PXAR_MAX_FILENAME_LEN + 1];
		size_t n = (size_t)(f - CN_PXAR_HEADER_SIZE);
		rc = cn_pxd_rd(&a->in, g.goodbye_off, fo + CN_PXAR_HEADER_SIZE, nb, n);
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
	return cn_pxd_new_range(&a->in, a->has_payload ? &a->payload : NULL, r->filename_offset,
				r->entry_offset, r->end_offset, path, 1, out);
}

int cn_pxar_accessor_entry(struct cn_pxar_accessor *a, const struct cn_pxar_range *r,
			   const char *path, const struct cn_pxar_entry **out)
{
	/* one decoder, pointed at each entry in turn: an entry costs no
	 * allocation (a mount decodes one per entry listed) */
	int rc;
	if (a->dec && (rc = cn_pxd_reuse_range(a->dec, r->filename_offset, r->entry_offset,
					       r->end_offset, path, 1)) < 0) {
		a->dec->state = ST_FAILED;
		return rc;
	}
	if (!a->dec && (rc = cn_pxar_accessor_decoder(a, r, path, &a->dec)) < 0)
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
	int rc = cn_pxd_check_hardlink_target(&a->in, link->filename_offset, link->hardlink_offset, &t);
	if (rc < 0)
		return rc;
	uint64_t ht, full;
	rc = cn_pxd_read_header(&a->in, a->in.size, t, &ht, &full);
	if (rc < 0)
		return rc;
	f = t + full;
	struct cn_pxar_decoder *d;
	rc = cn_pxd_new_range(&a->in, a->has_payload ? &a->payload : NULL, t, f, a->in.size,
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
