/* cn_walker_lookahead — the reuse decision of metadata change detection
 * (create.rs, proxmox-backup 3.3+): which unchanged files re-reference
 * the previous snapshot's payload chunks and which are read again. The
 * look-ahead cache (upstream PxarLookaheadCache) collects unchanged
 * regular files whose previous payload is contiguous, with the entries
 * between them, then encodes them either as references plus injected
 * chunks or, when the padding of the chunks would exceed
 * CN_PXAR_CHUNK_PADDING_THRESHOLD, as re-read files.
 *
 * Invariants: while la.active, [la.start, la.end) is the previous payload
 * range of the cached files, and every entry (directory begins and ends
 * included) is queued in walk order instead of being encoded; cached
 * entries own their fd, path and metadata until encoded or freed
 * (cn_wk_la_free_entries); a chunk kept back (la.has_last) is injected, or
 * shared with the next range that starts in it, before the next entries
 * are encoded. */
#include "engine/cn_walker_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "pxar/cn_pxar_encoder.h"
#include "store/cn_index.h"

/* ---- look-ahead cache (create.rs, metadata change detection) ---- */

int cn_wk_la_push(struct walker *w, int kind, int fd, const struct list_entry *ent,
		  struct cn_pxar_metadata *m, const struct cn_pxar_reuse_match *match, uint64_t rel)
{
	struct lookahead *la = &w->la;
	if (la->n == la->cap) {
		size_t nc = la->cap ? la->cap * 2 : 64;
		struct cache_ent *p = realloc(la->e, nc * sizeof(*p));
		if (!p)
			return -ENOMEM;
		la->e = p;
		la->cap = nc;
	}
	struct cache_ent *c = &la->e[la->n];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	c->fd = -1;
	if (kind != CE_DIR_END) {
		if (!(c->path = malloc(w->path_len + 1)))
			return -ENOMEM;
		memcpy(c->path, w->path, w->path_len + 1);
		c->path_len = w->path_len;
		c->name_off = w->path_len - ent->name_len;
		c->st = ent->st;
		c->m = *m;              /* moved: the caller's copy is cleared */
		memset(m, 0, sizeof(*m));
		c->fd = fd;
		c->reusable = match != NULL;
		if (match)
			c->match = *match;
		c->rel = rel;
	}
	la->n++;
	return 0;
}

void cn_wk_la_free_entries(struct cache_ent *e, size_t from, size_t n)
{
	for (size_t i = from; i < n; i++) {
		if (e[i].fd >= 0)
			close(e[i].fd);
		cn_pxar_metadata_clear(&e[i].m);
		free(e[i].path);
	}
}

static int inject(struct walker *w, const struct cn_pxar_reused_chunk *c, size_t n)
{
	/* upstream sends at most 128 chunks per injection; the sizes are the
	 * same either way */
	uint64_t size = 0;
	int rc;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		size += c[i].size;
	if ((rc = cn_pxar_encoder_flush_payload(w->enc)) < 0 ||
	    (rc = w->reuse->inject(w->reuse->ctx, c, n)) < 0 ||
	    (rc = cn_pxar_encoder_advance(w->enc, size)) < 0)
		return rc;
	w->stats->injected_chunks += n;
	w->stats->injected_bytes += size;
	return 0;
}

/* encode_entries_to_archive: injects a kept-back chunk, then encodes the
 * cached entries, regular files referencing base + rel when reuse. */
static int la_encode(struct walker *w, int reuse, uint64_t base)
{
	struct lookahead *la = &w->la;
	int rc = 0;
	if (la->has_last) {
		la->has_last = 0;
		if (la->last_padding)
			w->stats->partial_chunks++;
		if ((rc = inject(w, &la->last, 1)) < 0)
			return rc;
	}
	struct cache_ent *e = la->e;
	size_t n = la->n;
	la->e = NULL;
	la->n = la->cap = 0;
	la->active = 0;
	la->start = la->end = 0;
	if (n == 0) {
		free(e);
		return 0;
	}
	/* the walk's own path is restored afterwards */
	char *saved = w->path ? strndup(w->path, w->path_len) : strdup("");
	size_t saved_len = w->path_len, i;
	if (!saved)
		rc = -ENOMEM;
	for (i = 0; i < n && rc == 0; i++) {
		struct cache_ent *c = &e[i];
		if (c->kind == CE_DIR_END) {
			w->stats->dirs++;
			if ((rc = cn_pxar_encoder_end_dir(w->enc)) == 0 && w->cat)
				rc = cn_catalog_writer_end_directory(w->cat);
			continue;
		}
		if ((rc = cn_wk_path_set(w, 0, c->path, c->path_len)) < 0)
			break;
		struct list_entry le = { .name = c->path + c->name_off, .name_len = c->path_len - c->name_off,
					 .st = c->st };
		if (c->kind == CE_DIR) {
			if (w->cat)
				rc = cn_catalog_writer_start_directory(w->cat, le.name, le.name_len);
			if (rc == 0)
				rc = cn_pxar_encoder_begin_dir(w->enc, &c->m, le.name, le.name_len);
		} else {
			rc = cn_wk_encode_entry(w, c->fd, &le, &c->m, reuse && c->reusable ? &c->match : NULL,
					  base + c->rel);
		}
		if (rc < 0)
			cn_error_prefix(rc, "error at \"%s\"", cn_wk_cur_path(w));
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		cn_pxar_metadata_clear(&c->m);
		free(c->path);
		c->path = NULL;
	}
	cn_wk_la_free_entries(e, i, n);
	free(e);
	if (saved) {
		int r2 = cn_wk_path_set(w, 0, saved, saved_len);
		free(saved);
		if (rc == 0)
			rc = r2;
	}
	return rc;
}

/* lookup_dynamic_entries: the chunks of the previous payload index that
 * hold [start, end), with the padding before start and after end. */
static int prev_chunks(struct walker *w, uint64_t start, uint64_t end, struct cn_pxar_reused_chunk **out,
		       size_t *n, uint64_t *pad_start, uint64_t *pad_end)
{
	const struct cn_index *idx = w->reuse->prev_payload_index;
	size_t i, cnt = idx ? cn_index_count(idx) : 0, cap = 16, k = 0;
	uint64_t cs, ce;
	if (!idx || cn_index_find(idx, start, &i) < 0)
		return cn_error_set(-CN_E_FORMAT, "previous payload index does not cover offset %llu",
				    (unsigned long long)start);
	struct cn_pxar_reused_chunk *c = malloc(cap * sizeof(*c));
	if (!c)
		return -ENOMEM;
	cn_index_entry(idx, i, &cs, NULL, NULL);
	uint64_t prev_end = cs;
	*pad_start = start - cs;
	*pad_end = 0;
	for (; i < cnt; i++) {
		cn_index_entry(idx, i, NULL, &ce, NULL);
		if (k == cap) {
			struct cn_pxar_reused_chunk *p = realloc(c, 2 * cap * sizeof(*c));
			if (!p) {
				free(c);
				return -ENOMEM;
			}
			c = p;
			cap *= 2;
		}
		c[k].size = ce - prev_end;
		memcpy(c[k].digest, cn_index_digest(idx, i), 32);
		k++;
		/* as upstream: a range ending exactly at a chunk end takes the
		 * next chunk too (as padding) */
		if (end < ce) {
			*pad_end = ce - end;
			break;
		}
		prev_end = ce;
	}
	if (i == cnt) {
		free(c);
		return cn_error_set(-CN_E_FORMAT, "previous payload index ends before offset %llu",
				    (unsigned long long)end);
	}
	*out = c;
	*n = k;
	return 0;
}

/* flush_cached_reusing_if_below_threshold */
int cn_wk_la_flush(struct walker *w, int keep_last)
{
	struct lookahead *la = &w->la;
	if (!la->active)
		return la_encode(w, 0, 0);
	struct cn_pxar_reused_chunk *c = NULL, prev = la->last;
	uint64_t prev_padding = la->last_padding;
	int had_prev = la->has_last;
	size_t n = 0;
	uint64_t ps = 0, pe = 0;
	int rc = prev_chunks(w, la->start, la->end, &c, &n, &ps, &pe);
	if (rc < 0)
		return rc;
	la->has_last = 0;
	int64_t padding = (int64_t)(ps + pe);
	uint64_t total = (la->end - la->start) + ps + pe;
	uint64_t first_padding = ps + (n == 1 ? pe : 0);
	int same_first = had_prev && !memcmp(prev.digest, c[0].digest, 32);
	if (same_first)
		padding -= (int64_t)(prev.size - prev_padding); /* its used part is no padding */
	if (padding < 0)
		padding = 0;
	if ((double)padding / (double)total > CN_PXAR_CHUNK_PADDING_THRESHOLD) {
		la->has_last = had_prev;
		rc = la_encode(w, 0, 0);
	} else {
		if (had_prev && !same_first) {
			if (prev_padding)
				w->stats->partial_chunks++;
			rc = inject(w, &prev, 1);
		} else if (same_first) {
			first_padding = first_padding > prev.size - prev_padding ?
				first_padding - (prev.size - prev_padding) : 0;
		}
		uint64_t base = cn_pxar_encoder_payload_position(w->enc) + ps;
		if (rc == 0)
			rc = la_encode(w, 1, base);
		if (rc == 0 && keep_last) {
			la->last = c[n - 1];
			la->last_padding = n == 1 ? first_padding : pe;
			la->has_last = 1;
			n--;
		}
		for (size_t i = 0; rc == 0 && i < n; i++)
			if (i == 0 ? first_padding : (i == n - 1 && !keep_last && pe))
				w->stats->partial_chunks++;
		if (rc == 0)
			rc = inject(w, c, n);
	}
	free(c);
	return rc;
}

/* A later link of a file already encoded or waiting in the look-ahead
 * cache: it becomes a hardlink entry (no payload of its own). */
static int is_later_link(struct walker *w, const struct stat *st)
{
	if (st->st_nlink <= 1)
		return 0;
	if (cn_wk_hl_find(w, st->st_dev, st->st_ino))
		return 1;
	for (size_t i = 0; i < w->la.n; i++) {
		const struct cache_ent *c = &w->la.e[i];
		if (c->kind == CE_ENTRY && S_ISREG(c->st.st_mode) && c->st.st_dev == st->st_dev &&
		    c->st.st_ino == st->st_ino)
			return 1;
	}
	return 0;
}

/* create.rs add_entry in metadata mode: takes fd and *m. */
int cn_wk_add_entry_reuse(struct walker *w, int fd, const struct list_entry *ent,
			  struct cn_pxar_metadata *m)
{
	struct lookahead *la = &w->la;
	uint32_t t = ent->st.st_mode & S_IFMT;
	int rc = 0;
	if (la->n >= la->max && (rc = cn_wk_la_flush(w, 1)) < 0)
		goto out;
	if (t == S_IFREG && !is_later_link(w, &ent->st)) {
		struct cn_pxar_reuse_match match;
		uint64_t compared = 0;
		memset(&match, 0, sizeof(match));
		int r = w->reuse->lookup(w->reuse->ctx, w->path, w->path_len, fd, &ent->st, m, &match,
					 &compared);
		w->stats->bytes_read += compared;
		w->stats->files_compared += r == 1 && compared > 0;
		if (r < 0) {
			rc = r;
			goto out;
		}
		if (r == 1) {
			uint64_t rs = match.payload_offset;
			uint64_t re = rs + (uint64_t)ent->st.st_size + CN_PXAR_HEADER_SIZE;
			if (!la->active) {
				la->active = 1;
				la->start = la->end = rs;
			}
			if (la->end == rs) {
				la->end = re;
			} else {
				/* hole in the previous range: decide on what we have */
				if ((rc = cn_wk_la_flush(w, 1)) < 0)
					goto out;
				la->active = 1;
				la->start = rs;
				la->end = re;
			}
			rc = cn_wk_la_push(w, CE_ENTRY, fd, ent, m, &match, rs - la->start);
			if (rc == 0)
				fd = -1;
			goto out;
		}
		if ((rc = cn_wk_la_flush(w, 0)) < 0)
			goto out;
	} else if (la->active) {
		if (t == S_IFDIR) {
			rc = cn_wk_add_directory(w, fd, ent, m);
		} else if ((rc = cn_wk_la_push(w, CE_ENTRY, fd, ent, m, NULL, 0)) == 0) {
			fd = -1;
		}
		goto out;
	}
	if ((rc = la_encode(w, 0, 0)) == 0)
		rc = cn_wk_encode_entry(w, fd, ent, m, NULL, 0);
out:
	cn_pxar_metadata_clear(m);
	if (fd >= 0)
		close(fd);
	return rc;
}
