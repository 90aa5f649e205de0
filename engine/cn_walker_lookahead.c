/* cn_walker_lookahead — the reuse decision of metadata change detection
 * (create.rs, proxmox-backup 3.3+): which unchanged files re-reference
 * the previous snapshot's payload chunks and which are read again. The
 * look-ahead cache (upstream PxarLookaheadCache) collects unchanged
 * regular files whose previous payload is contiguous, with the entries
 * between them, then encodes them either as references plus injected
 * chunks or, when the padding of the chunks would exceed
 * CN_PXAR_CHUNK_PADDING_THRESHOLD (counted over the archive, see
 * cn_wk_la_flush), as re-read files.
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
		c->fs_magic = w->fs_magic;
		c->fs_flags = w->fs_flags;
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
 * first count cached entries (all: la->n), regular files referencing
 * base + rel when reuse. Entries left stay cached, the cache active. */
static int la_encode_n(struct walker *w, size_t count, int reuse, uint64_t base)
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
	size_t n = count, cap = la->cap;
	int full = count >= la->n;
	if (!full) {
		if (!(e = malloc(count * sizeof(*e) + 1)))
			return -ENOMEM;
		memcpy(e, la->e, count * sizeof(*e));
		memmove(la->e, la->e + count, (la->n - count) * sizeof(*e));
		la->n -= count;
	} else {
		la->e = NULL;
		la->n = la->cap = 0;
		la->active = 0;
		la->start = la->end = 0;
	}
	if (n == 0) {
		if (full) {
			la->e = e;
			la->cap = cap;
		} else {
			free(e);
		}
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
			int use = reuse && c->reusable, skip = 0;
			/* a file found unchanged without opening it, read after all */
			if (!use && c->fd < 0 && S_ISREG(c->st.st_mode) &&
			    (rc = cn_wk_open_unopened(w, c, &skip)) == 0 && !skip)
				le.st = c->st;
			w->stats->files_unopened += use && c->fd < 0;
			if (rc == 0 && !skip)
				rc = cn_wk_encode_entry(w, c->fd, &le, &c->m, use ? &c->match : NULL,
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
	/* the whole cache was encoded: its array serves the next entries
	 * (512 of them are ~300 KB; freed and allocated again at every
	 * flush, glibc trimmed and regrew the heap each time) */
	if (full && !la->e) {
		la->e = e;
		la->cap = cap;
	} else {
		free(e);
	}
	if (saved) {
		int r2 = cn_wk_path_set(w, 0, saved, saved_len);
		free(saved);
		if (rc == 0)
			rc = r2;
	}
	return rc;
}

static int la_encode(struct walker *w, int reuse, uint64_t base)
{
	return la_encode_n(w, w->la.n, reuse, base);
}

/* lookup_dynamic_entries: the chunks of the previous payload index that
 * hold [start, end), with the padding before start and after end, and
 * where the last of them starts in the previous payload stream. Unlike
 * upstream, a range ending exactly at a chunk end does not take the next
 * chunk too: that chunk would be all padding. */
static int prev_chunks(struct walker *w, uint64_t start, uint64_t end, struct cn_pxar_reused_chunk **out,
		       size_t *n, uint64_t *pad_start, uint64_t *pad_end, uint64_t *first_start,
		       uint64_t *last_start)
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
	*first_start = cs;
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
		if (end <= ce) {
			*pad_end = ce - end;
			*last_start = prev_end;
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

/* flush_cached_reusing_if_below_threshold, with cairn's padding rule.
 *
 * Upstream counts the bytes of a range's first and last chunk outside the
 * range as padding and re-reads the whole range when that is over
 * CN_PXAR_CHUNK_PADDING_THRESHOLD of it. Flushed every 512 entries, a
 * tree of small files (hundreds per chunk) never passes: each flush
 * starts and ends mid-chunk, and the files of a range re-read leave the
 * next range mid-chunk too. Padding that costs storage is what no file
 * of this run uses in the distinct chunks it places; so here:
 *  - the threshold holds for the archive so far, not per range:
 *    (placed - used) <= threshold * placed, placed counting each distinct
 *    chunk once, used the bytes of the files referencing them; a range
 *    whose own new chunks keep within it is taken all the same: padding
 *    placed before stays whatever is read after it;
 *  - a chunk placed a moment ago (one of the last CN_WK_RECENT_CHUNKS)
 *    costs nothing to place again: the files after a changed one
 *    re-reference the chunk the files before it used (its new data must
 *    come between them). The payload index then lists that chunk twice,
 *    the store keeps it once; at most CN_WK_MAX_CHUNK_COPIES times;
 *  - the unused end of the range's last chunk is not counted when it is
 *    kept back for the next range (keep_last), which mostly continues in
 *    it, nor for the range after that (a changed file's new data may
 *    come between); if neither does, the archive's sum counts it;
 *  - over the threshold, only the files in the range's first chunk are
 *    read again, and the rest (starting at a chunk start) decided anew,
 *    so one costly chunk does not make every later range start mid-chunk.
 * So a no-change run reads nothing, and a file changed among small files
 * costs its own bytes, not a re-read of its neighbours. */
#define CN_WK_MAX_CHUNK_COPIES 4

static struct recent_chunk *recent_find(struct lookahead *la, const uint8_t *digest)
{
	for (size_t i = 0; i < la->n_recent; i++)
		if (!memcmp(la->recent[i].digest, digest, 32))
			return &la->recent[i];
	return NULL;
}

static void recent_add(struct lookahead *la, const uint8_t *digest)
{
	struct recent_chunk *r = recent_find(la, digest);
	if (r) {
		r->copies++;
		return;
	}
	r = &la->recent[la->recent_next];
	la->recent_next = (la->recent_next + 1) % CN_WK_RECENT_CHUNKS;
	if (la->n_recent < CN_WK_RECENT_CHUNKS)
		la->n_recent++;
	memcpy(r->digest, digest, 32);
	r->copies = 1;
}

int cn_wk_la_flush(struct walker *w, int keep_last)
{
	struct lookahead *la = &w->la;
	if (!la->active)
		return la_encode(w, 0, 0);
again:;
	struct cn_pxar_reused_chunk *c = NULL, prev = la->last;
	int had_prev = la->has_last;
	size_t n = 0;
	uint64_t ps = 0, pe = 0, first_start = 0, last_start = 0;
	uint64_t start = la->start, end = la->end;
	int rc = prev_chunks(w, start, end, &c, &n, &ps, &pe, &first_start, &last_start);
	if (rc < 0)
		return rc;
	la->has_last = 0;
	/* the kept-back chunk is this range's first: placed once for both */
	int shared = had_prev && la->tail_start == first_start && !memcmp(prev.digest, c[0].digest, 32);
	uint64_t new_placed = 0;
	for (size_t i = shared ? 1 : 0; i < n; i++) {
		const struct recent_chunk *r = recent_find(la, c[i].digest);
		if (!r || r->copies >= CN_WK_MAX_CHUNK_COPIES)
			new_placed += c[i].size;
	}
	uint64_t placed = la->placed_bytes + new_placed, used = la->used_bytes + (end - start);
	uint64_t unused = placed > used ? placed - used : 0;
	if (keep_last)
		unused = unused > pe ? unused - pe : 0;
	/* nor, for one more range, that of the previous range's last chunk:
	 * after a changed file's new data, the range after it (the files
	 * behind it in the previous snapshot) may use it yet */
	if (la->has_pending && memcmp(la->pending_digest, c[0].digest, 32))
		unused = unused > la->pending ? unused - la->pending : 0;
	/* the padding this range's own chunks carry (their bytes it does not
	 * use; the kept-back tail not yet): a range within the threshold by
	 * itself is taken even when padding placed before (which reading
	 * this range again would not remove) keeps the archive over it;
	 * else one such range made every range after it read again, night
	 * after night */
	uint64_t own = new_placed > end - start ? new_placed - (end - start) : 0;
	if (keep_last)
		own = own > pe ? own - pe : 0;
	if ((double)unused > CN_PXAR_CHUNK_PADDING_THRESHOLD * (double)placed &&
	    (double)own > CN_PXAR_CHUNK_PADDING_THRESHOLD * (double)new_placed) {
		/* too much unused: the files in the range's first chunk are
		 * read again, and the rest, starting at (or just after) a chunk
		 * start, decided anew; a range within one chunk is read whole */
		uint64_t boundary = first_start + c[0].size - start;
		size_t k = 0;
		free(c);
		la->has_last = had_prev;
		for (size_t i = 1; n > 1 && i < la->n && !k; i++)
			if (la->e[i].reusable && la->e[i].rel >= boundary)
				k = i;
		if (!k)
			return la_encode(w, 0, 0);
		uint64_t shift = la->e[k].rel;
		if ((rc = la_encode_n(w, k, 0, 0)) < 0)
			return rc;
		for (size_t i = 0; i < la->n; i++)
			if (la->e[i].reusable)
				la->e[i].rel -= shift;
		la->start += shift;
		goto again;
	}
	la->placed_bytes = placed;
	la->used_bytes = used;
	la->has_pending = 1;
	la->pending = pe;
	memcpy(la->pending_digest, c[n - 1].digest, 32);
	if (had_prev && !shared) {
		if (la->last_padding)
			w->stats->partial_chunks++;
		rc = inject(w, &prev, 1);
	}
	uint64_t base = cn_pxar_encoder_payload_position(w->enc) + ps;
	if (rc == 0)
		rc = la_encode(w, 1, base);
	for (size_t i = shared ? 1 : 0; rc == 0 && i < n; i++)
		recent_add(la, c[i].digest);
	if (rc == 0 && ps && !shared)
		w->stats->partial_chunks++;
	la->tail_start = last_start;
	if (rc == 0 && keep_last) {
		la->last = c[n - 1];
		la->last_padding = pe;
		la->has_last = 1;
		n--;
	} else if (rc == 0 && pe) {
		w->stats->partial_chunks++;
	}
	if (rc == 0)
		rc = inject(w, c, n);
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

/* create.rs add_entry in metadata mode: takes fd and *m. found: what
 * lookup_unopened found for this regular file (fd is then -1), or NULL. */
int cn_wk_add_entry_reuse(struct walker *w, int fd, const struct list_entry *ent,
			  struct cn_pxar_metadata *m, const struct cn_pxar_reuse_match *found)
{
	struct lookahead *la = &w->la;
	uint32_t t = ent->st.st_mode & S_IFMT;
	int rc = 0;
	if (la->n >= la->max && (rc = cn_wk_la_flush(w, 1)) < 0)
		goto out;
	if (t == S_IFREG && (found || !is_later_link(w, &ent->st))) {
		struct cn_pxar_reuse_match match;
		int r = 1;
		if (found) {
			match = *found;
		} else {
			uint64_t compared = 0;
			memset(&match, 0, sizeof(match));
			r = w->reuse->lookup(w->reuse->ctx, w->path, w->path_len, fd, &ent->st, m, &match,
					     &compared);
			w->stats->bytes_read += compared;
			w->stats->files_compared += r == 1 && compared > 0;
		}
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
		/* the last chunk is kept back (and injected before this file's
		 * data): the range after this file may start in it again */
		if ((rc = cn_wk_la_flush(w, 1)) < 0)
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
