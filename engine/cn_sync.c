#include "engine/cn_sync.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_error.h"
#include "store/cn_blob.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

#define APPEND_BATCH 128

const char *cn_sync_action_name(enum cn_sync_action a)
{
	switch (a) {
	case CN_SYNC_COPIED: return "copied";
	case CN_SYNC_PRESENT: return "present";
	case CN_SYNC_SKIPPED_OLDER: return "skipped-older";
	case CN_SYNC_REMOVED: return "removed";
	case CN_SYNC_KEPT_PROTECTED: return "kept-protected";
	case CN_SYNC_FAILED: return "failed";
	}
	return "?";
}

static int name_ends(const char *name, const char *ext)
{
	size_t n = strlen(name), e = strlen(ext);
	return n > e && !strcmp(name + n - e, ext);
}

/* Registers the chunks of the destination's previous index `name` with
 * the target (PBS: the server session may then reference them). */
static int lend_previous(struct cn_target *dst, const char *name, int have_prev)
{
	if (!have_prev)
		return 0;
	struct cn_buf raw = {0};
	struct cn_index *prev = NULL;
	int r = dst->ops->load_previous_index(dst, name, &raw);
	if (r == -ENOENT) {
		cn_error_clear();
		r = 0;
		goto out;
	}
	if (r == 0)
		r = cn_index_parse(raw.data, raw.len, &prev);
	if (r < 0) {
		r = cn_error_prefix(r, "previous index %s at %s", name, dst->name);
		goto out;
	}
	size_t n = cn_index_count(prev);
	for (size_t i = 0; i < n && r == 0; i += 1024) {
		uint8_t batch[1024][32];
		size_t k = n - i < 1024 ? n - i : 1024;
		for (size_t j = 0; j < k; j++)
			memcpy(batch[j], cn_index_digest(prev, i + j), 32);
		r = dst->ops->add_known(dst, (const uint8_t (*)[32])batch, k);
	}
out:
	cn_index_free(prev);
	cn_buf_free(&raw);
	return r;
}

/* Reads and verifies one chunk of the source (see the header for what is
 * checked) and hands it to the target. */
static int copy_chunk(struct cn_source *src, struct cn_target *dst, struct cn_blob_ctx *bctx,
		      const uint8_t digest[32], uint64_t plain, enum cn_crypt_mode mode,
		      struct cn_buf *buf, struct cn_sync_stats *st)
{
	buf->len = 0;
	int r = src->ops->get_chunk(src, digest, buf);
	if (r < 0)
		return r;
	int type = cn_blob_verify_chunk(bctx, buf->data, buf->len, NULL, digest, plain);
	if (type < 0)
		return type;
	int enc = type == CN_BLOB_ENCRYPTED || type == CN_BLOB_ENCRYPTED_ZSTD;
	if (enc != (mode == CN_CRYPT_MODE_ENCRYPT))
		return cn_error_set(-CN_E_MISMATCH, "chunk is %s, but its file is crypt-mode %s",
				    enc ? "encrypted" : "not encrypted", cn_crypt_mode_name(mode));
	struct cn_chunk *c = cn_chunk_new(buf->len);
	if (!c)
		return cn_error_set(-ENOMEM, "out of memory for a chunk");
	memcpy(c->data, buf->data, buf->len);
	c->len = buf->len;
	c->plain_size = plain;
	memcpy(c->digest, digest, 32);
	r = dst->ops->put_chunk(dst, c);
	cn_chunk_unref(c);
	if (r == 0) {
		st->chunks_sent++;
		st->bytes_sent += buf->len;
	}
	return r;
}

/* Copies index file `name` (size and csum as the manifest lists them). */
static int copy_index(struct cn_source *src, struct cn_target *dst, const char *name,
		      uint64_t size, const uint8_t csum[32], enum cn_crypt_mode mode,
		      int have_prev, const struct cn_sync_opts *opts, struct cn_sync_stats *st)
{
	struct cn_buf raw = {0}, buf = {0};
	struct cn_index *idx = NULL;
	struct cn_blob_ctx *bctx = NULL;
	int r = src->ops->get_file(src, name, &raw);
	if (r == 0)
		r = cn_index_parse(raw.data, raw.len, &idx);
	if (r == 0)
		r = cn_index_verify(idx, size, csum);
	if (r == 0)
		r = cn_blob_ctx_new(&bctx);
	if (r == 0)
		r = lend_previous(dst, name, have_prev);
	int h = -1;
	if (r == 0) {
		enum cn_index_kind kind = cn_index_kind(idx);
		h = dst->ops->index_open(dst, name, kind, kind == CN_INDEX_FIXED ? size : 0,
					 kind == CN_INDEX_FIXED ? (uint32_t)cn_index_chunk_size(idx) : 0);
		if (h < 0)
			r = h;
	}
	size_t n = idx ? cn_index_count(idx) : 0;
	struct cn_index_entry batch[APPEND_BATCH];
	size_t nb = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		uint64_t start, end;
		struct cn_index_entry *e = &batch[nb++];
		cn_index_entry(idx, i, &start, &end, e->digest);
		e->end_offset = end;
		int has = dst->ops->has_chunk(dst, e->digest);
		if (has < 0)
			r = has;
		else if (has)
			st->chunks_reused++;
		else
			r = copy_chunk(src, dst, bctx, e->digest, end - start, mode, &buf, st);
		if (r < 0) {
			char hex[65];
			cn_hex_encode(e->digest, 32, hex);
			r = cn_error_prefix(r, "chunk %s", hex);
			break;
		}
		if (nb == APPEND_BATCH || i + 1 == n) {
			r = dst->ops->index_append(dst, h, batch, nb);
			nb = 0;
			if (opts->on_progress)
				opts->on_progress(opts->ctx, st);
		}
	}
	if (r == 0) {
		uint8_t mine[32];
		cn_index_csum(idx, mine);
		r = dst->ops->index_close(dst, h, n, size, mine);
	}
	if (r < 0)
		r = cn_error_prefix(r, "%s", name);
	cn_blob_ctx_free(bctx);
	cn_index_free(idx);
	cn_buf_free(&raw);
	cn_buf_free(&buf);
	return r;
}

/* Copies blob file `name`, checked against the manifest's size and SHA-256. */
static int copy_blob(struct cn_source *src, struct cn_target *dst, const char *name,
		     uint64_t size, const uint8_t csum[32], struct cn_sync_stats *st)
{
	struct cn_buf raw = {0};
	uint8_t mine[32];
	int r = src->ops->get_file(src, name, &raw);
	if (r == 0 && (raw.len != size ||
		       EVP_Digest(raw.data, raw.len, mine, NULL, EVP_sha256(), NULL) != 1 ||
		       memcmp(mine, csum, 32)))
		r = cn_error_set(-CN_E_CHECKSUM, "blob %s differs from its manifest entry", name);
	if (r == 0 && (r = cn_blob_check(raw.data, raw.len)) >= 0)
		r = dst->ops->put_blob(dst, name, raw.data, raw.len);
	if (r == 0)
		st->blob_bytes += raw.len;
	cn_buf_free(&raw);
	return r < 0 ? cn_error_prefix(r, "%s", name) : 0;
}

/* One change at the destination outside a snapshot writer: marking id
 * protected, or (forget) removing it. */
static int admin_call(const struct cn_sync_admin *a, const struct cn_snapshot_id *id, int forget)
{
	return forget ? a->forget(a->ctx, id) : a->set_protected(a->ctx, id, 1);
}

/* admin_call, retried for a few seconds. A PBS keeps a backup session's
 * locks until it has seen the session's connection end, which can come a
 * moment after finish was answered and the client closed: the snapshot's
 * own lock (which marking it protected needs) and a shared lock on the
 * group's previous snapshot (so removing that one, as remove_vanished
 * does right after copying a newer one, is refused meanwhile). A snapshot
 * that is not there is not retried. */
static int admin_retrying(const struct cn_sync_admin *a, const struct cn_snapshot_id *id,
			  int forget)
{
	unsigned delay_ms = 50;
	int r = admin_call(a, id, forget);
	for (int i = 0; r < 0 && r != -ENOENT && i < 7; i++) {
		struct timespec ts = {.tv_sec = delay_ms / 1000,
				      .tv_nsec = (long)(delay_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		delay_ms = delay_ms * 2 > 1000 ? 1000 : delay_ms * 2;
		cn_error_clear();
		r = admin_call(a, id, forget);
	}
	return r;
}

int cn_sync_snapshot(struct cn_source *src, struct cn_target *dst,
		     const struct cn_snapshot_id *id, int protected_,
		     const struct cn_sync_opts *opts, struct cn_sync_stats *st)
{
	struct cn_buf mraw = {0}, prev = {0};
	struct cn_manifest *m = NULL;
	int64_t prev_time = -1;
	int begun = 0;
	int r = src->ops->open(src, id);
	if (r == 0)
		r = src->ops->get_file(src, CN_MANIFEST_BLOB_NAME, &mraw);
	if (r == 0)
		r = cn_manifest_decode(mraw.data, mraw.len, NULL, &m);
	if (r == 0)
		r = cn_manifest_check_id(m, id);
	if (r == 0) {
		r = dst->ops->begin(dst, id, &prev, &prev_time);
		begun = 1;
	}
	size_t nf = m ? cn_manifest_file_count(m) : 0;
	for (size_t i = 0; i < nf && r == 0; i++) {
		const char *name;
		uint64_t size;
		uint8_t csum[32];
		enum cn_crypt_mode mode;
		cn_manifest_file_at(m, i, &name, &size, csum, &mode);
		if (name_ends(name, ".didx") || name_ends(name, ".fidx"))
			r = copy_index(src, dst, name, size, csum, mode, prev_time >= 0, opts, st);
		else if (name_ends(name, ".blob"))
			r = copy_blob(src, dst, name, size, csum, st);
		else
			r = cn_error_set(-CN_E_FORMAT, "manifest lists %s, which is neither an index "
						       "nor a blob", name);
	}
	/* the manifest as read, last: only now can the snapshot be finished */
	if (r == 0)
		r = dst->ops->put_blob(dst, CN_MANIFEST_BLOB_NAME, mraw.data, mraw.len);
	if (r == 0) {
		st->blob_bytes += mraw.len;
		r = dst->ops->finish(dst);
		begun = 0;
	}
	if (r < 0 && begun) {
		/* abort may clear or replace the message (the S3 target's
		 * cleanup does): the reason the copy failed is what the caller
		 * reports */
		char why[1024];
		snprintf(why, sizeof(why), "%s", cn_error_message());
		dst->ops->abort(dst);
		cn_error_set(r, "%s", why);
	}
	if (r == 0 && protected_) {
		const struct cn_sync_admin *a = &opts->admin;
		if (!a->set_protected)
			r = cn_error_set(-ENOTSUP, "%s cannot mark snapshots protected", dst->name);
		else
			r = admin_retrying(a, id, 0);
		if (r < 0)
			r = cn_error_prefix(r, "copied, but not marked protected");
	}
	cn_manifest_free(m);
	cn_buf_free(&mraw);
	cn_buf_free(&prev);
	return r;
}

static int same_group(const struct cn_snapshot_id *a, const struct cn_snapshot_id *b)
{
	return !strcmp(a->ns, b->ns) && !strcmp(a->type, b->type) && !strcmp(a->id, b->id);
}

/* Lists what sel selects on s (everything in ns when nsel is 0) into a
 * malloc'd array sorted by group then time. */
static int list_selected(struct cn_source *s, const char *ns, const struct cn_snapshot_id *sel,
			 size_t nsel, struct cn_snapshot_info **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	if (nsel == 0) {
		struct cn_snapshot_id all = {0};
		snprintf(all.ns, sizeof(all.ns), "%s", ns ? ns : "");
		return s->ops->list_snapshots(s, &all, out, n);
	}
	int r = 0;
	for (size_t i = 0; i < nsel && r == 0; i++) {
		struct cn_snapshot_info *g;
		size_t m;
		r = s->ops->list_snapshots(s, &sel[i], &g, &m);
		if (r < 0)
			break;
		struct cn_snapshot_info *grown = realloc(*out, (*n + m + 1) * sizeof(**out));
		if (!grown) {
			free(g);
			r = cn_error_set(-ENOMEM, "out of memory listing snapshots");
			break;
		}
		*out = grown;
		for (size_t j = 0; j < m; j++) {
			if (sel[i].time && g[j].id.time != sel[i].time)
				continue;
			int dup = 0; /* the same group or snapshot named twice */
			for (size_t k = 0; k < *n && !dup; k++)
				dup = same_group(&grown[k].id, &g[j].id) && grown[k].id.time == g[j].id.time;
			if (!dup)
				grown[(*n)++] = g[j];
		}
		free(g);
	}
	if (r < 0) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return r;
}

static void report(const struct cn_sync_opts *o, const struct cn_snapshot_id *id,
		   enum cn_sync_action a, int err)
{
	if (o->on_snapshot)
		o->on_snapshot(o->ctx, id, a, err);
}

/* remove_vanished: destination snapshots of the selected groups that the
 * source does not have. Only whole groups are mirrored (a single snapshot
 * named in sel removes nothing). */
static int remove_vanished(struct cn_target *dst, const struct cn_snapshot_info *s, size_t ns,
			   const struct cn_snapshot_info *d, size_t nd,
			   const struct cn_snapshot_id *sel, size_t nsel,
			   const struct cn_sync_opts *opts, struct cn_sync_stats *st)
{
	int first = 0;
	for (size_t i = 0; i < nd; i++) {
		int selected = nsel == 0, found = 0;
		for (size_t k = 0; k < nsel && !selected; k++)
			selected = sel[k].time == 0 && same_group(&sel[k], &d[i].id);
		for (size_t k = 0; k < ns && !found; k++)
			found = same_group(&s[k].id, &d[i].id) && s[k].id.time == d[i].id.time;
		if (!selected || found)
			continue;
		if (d[i].protected_) {
			st->kept_protected++;
			report(opts, &d[i].id, CN_SYNC_KEPT_PROTECTED, 0);
			continue;
		}
		int r = 0;
		if (!opts->dry_run)
			r = opts->admin.forget ? admin_retrying(&opts->admin, &d[i].id, 1)
					       : cn_error_set(-ENOTSUP, "%s cannot remove snapshots",
							      dst->name);
		if (r < 0) {
			st->failed++;
			first = first ? first : r;
			report(opts, &d[i].id, CN_SYNC_FAILED, r);
		} else {
			st->removed++;
			report(opts, &d[i].id, CN_SYNC_REMOVED, 0);
		}
	}
	return first;
}

int cn_sync_run(struct cn_source *src, struct cn_source *dst_list, struct cn_target *dst,
		const char *ns, const struct cn_snapshot_id *sel, size_t nsel,
		const struct cn_sync_opts *opts, struct cn_sync_stats *st)
{
	struct cn_snapshot_info *s = NULL, *d = NULL;
	size_t ns_ = 0, nd = 0;
	/* the destination's view of the same groups (a single snapshot in
	 * sel: its whole group, to know the group's newest there) */
	struct cn_snapshot_id *dsel = nsel ? calloc(nsel, sizeof(*dsel)) : NULL;
	if (nsel && !dsel)
		return cn_error_set(-ENOMEM, "out of memory");
	for (size_t i = 0; i < nsel; i++) {
		dsel[i] = sel[i];
		dsel[i].time = 0;
	}
	int r = list_selected(src, ns, sel, nsel, &s, &ns_);
	if (r < 0)
		r = cn_error_prefix(r, "listing %s", src->name);
	if (r == 0 && dst_list && (r = list_selected(dst_list, ns, dsel, nsel, &d, &nd)) < 0)
		r = cn_error_prefix(r, "listing %s", dst_list->name);
	int first = 0, unavailable = 0;
	const struct cn_snapshot_id *failed_group = NULL;
	for (size_t i = 0; i < ns_ && r == 0; i++) {
		const struct cn_snapshot_id *id = &s[i].id;
		/* after a store stopped answering, each would wait for the
		 * same timeout or refusal; after a failed snapshot, a later
		 * one of its group copied now would keep it out for good
		 * (older than the group's newest) */
		const char *not_tried = unavailable ? "a store stopped answering"
					: failed_group && same_group(failed_group, id)
					? "an older snapshot of its group failed"
					: NULL;
		if (not_tried) {
			st->failed++;
			report(opts, id, CN_SYNC_FAILED,
			       cn_error_set(-ECANCELED, "not tried: %s", not_tried));
			continue;
		}
		int present = 0, newer = 0;
		for (size_t k = 0; k < nd; k++) {
			if (!same_group(&d[k].id, id))
				continue;
			present |= d[k].id.time == id->time;
			newer |= d[k].id.time > id->time;
		}
		if (present) {
			st->present++;
			report(opts, id, CN_SYNC_PRESENT, 0);
			continue;
		}
		if (newer) {
			st->skipped_older++;
			report(opts, id, CN_SYNC_SKIPPED_OLDER, 0);
			continue;
		}
		int e = opts->dry_run ? 0 : cn_sync_snapshot(src, dst, id, s[i].protected_, opts, st);
		if (e < 0) {
			st->failed++;
			first = first ? first : e;
			failed_group = id;
			unavailable = cn_error_is_unavailable(e);
			report(opts, id, CN_SYNC_FAILED, e);
		} else {
			st->copied++;
			report(opts, id, CN_SYNC_COPIED, 0);
		}
	}
	if (r == 0 && opts->remove_vanished) {
		int e = remove_vanished(dst, s, ns_, d, nd, sel, nsel, opts, st);
		first = first ? first : e;
	}
	free(s);
	free(d);
	free(dsel);
	return r < 0 ? r : first;
}
