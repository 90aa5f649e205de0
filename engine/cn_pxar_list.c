/* cn_pxar_list — what an archive holds, writing nothing: cn_pxar_list,
 * cn_pxar_verify (which also reads every listed file's content) and
 * cn_pxar_format_entry, declared in cn_pxar_extract.h. Upstream: pxar-bin
 * list, format_single_line_entry.
 */
#include "engine/cn_pxar_extract_impl.h"
#include "common/cn_util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
		int rc = cn_xt_content_piece(d, e, off, buf, cap, &data, &n, &token);
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
		rc = cn_xt_check_lookups(acc, sel);
	for (size_t i = 0; rc >= 0 && i < lookups; i++) {
		const char *p = cn_pxar_select_lookup(sel, i);
		struct cn_pxar_range r;
		rc = cn_xt_find_path(acc, p, &r);
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
	mode[10] = cn_xt_acl_empty(e) ? ' ' : '+';
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
