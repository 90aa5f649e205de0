#include "engine/cn_restore.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "engine/cn_chunk_reader.h"
#include "pxar/cn_pxar_decoder.h"
#include "engine/cn_workqueue.h"
#include "engine/cn_pxar_extract.h"
#include "store/cn_blob.h"

/* Largest index file accepted (40 bytes per chunk: ~100 TiB of 4 MiB chunks). */

static double now_sec(void)
{
	return (double)cn_monotonic_ns() / 1e9;
}

static const char *snap_text(const struct cn_snapshot_id *id, char *buf, size_t len)
{
	if (cn_snapshot_path(id, buf, len) < 0)
		snprintf(buf, len, "%s/%s", id->type, id->id);
	return buf;
}

/* Opens id on src and reads its manifest (cn_restore_open); need_key 0:
 * a signed manifest is taken without its key (its signature unchecked). */
static int open_manifest(struct cn_source *src, const struct cn_snapshot_id *id,
			 const struct cn_crypt_config *crypt, int need_key, struct cn_manifest **m)
{
	char sp[512];
	int r = src->ops->open(src, id);
	if (r < 0)
		return r;
	struct cn_buf blob = {0};
	r = src->ops->get_file(src, CN_MANIFEST_BLOB_NAME, &blob);
	if (r < 0) {
		cn_buf_free(&blob);
		return cn_error_prefix(r, "snapshot %s: reading %s", snap_text(id, sp, sizeof(sp)),
				       CN_MANIFEST_BLOB_NAME);
	}
	r = cn_manifest_decode(blob.data, blob.len, crypt, m);
	cn_buf_free(&blob);
	if (r < 0)
		return cn_error_prefix(r, "snapshot %s: manifest", snap_text(id, sp, sizeof(sp)));
	/* a valid manifest of another snapshot (its files copied here) is
	 * checked first: signed or not, with or without the key */
	r = cn_manifest_check_id(*m, id);
	if (r == 0 && need_key)
		r = cn_manifest_check_key(*m, crypt);
	if (r < 0) {
		cn_manifest_free(*m);
		*m = NULL;
		if (r == -CN_E_NOKEY)
			return cn_error_set(r, "snapshot %s is encrypted or signed: give its key with --keyfile",
					    snap_text(id, sp, sizeof(sp)));
		return cn_error_prefix(r, "snapshot %s", snap_text(id, sp, sizeof(sp)));
	}
	return 0;
}

int cn_restore_open(struct cn_source *src, const struct cn_snapshot_id *id,
		    const struct cn_crypt_config *crypt, struct cn_manifest **m)
{
	return open_manifest(src, id, crypt, 1, m);
}

int cn_restore_open_listing(struct cn_source *src, const struct cn_snapshot_id *id,
			    const struct cn_crypt_config *crypt, struct cn_manifest **m)
{
	return open_manifest(src, id, crypt, crypt != NULL, m);
}

int cn_restore_check_downgrade(struct cn_source *src, const struct cn_snapshot_id *id,
			       const struct cn_manifest *m)
{
	if (cn_manifest_signed(m) || cn_manifest_encrypted(m))
		return 0;
	struct cn_snapshot_id group = *id;
	struct cn_snapshot_info *list;
	size_t n;
	group.time = 0;
	int r = src->ops->list_snapshots(src, &group, &list, &n);
	if (r < 0)
		return r;
	int64_t enc_time = 0;
	for (size_t i = 0; i < n; i++)
		if (list[i].encrypted > 0 && list[i].id.time < id->time &&
		    !strcmp(list[i].id.type, id->type) && !strcmp(list[i].id.id, id->id) &&
		    list[i].id.time > enc_time)
			enc_time = list[i].id.time;
	free(list);
	if (!enc_time)
		return 0;
	char sp[512], et[32] = "?";
	cn_snapshot_format_time(enc_time, et, sizeof(et));
	return cn_error_set(-CN_E_MISMATCH,
			    "snapshot %s is neither encrypted nor signed, but the group's earlier "
			    "snapshot %s is encrypted: a downgrade (planted or replaced snapshot?)",
			    snap_text(id, sp, sizeof(sp)), et);
}

int cn_restore_load_index(struct cn_source *src, const struct cn_manifest *m, const char *name,
			  struct cn_index **idx)
{
	int fi = cn_manifest_find(m, name);
	if (fi < 0) {
		char list[512] = "";
		size_t used = 0;
		for (size_t i = 0; i < cn_manifest_file_count(m) && used < sizeof(list) - 1; i++) {
			const char *fname;
			cn_manifest_file_at(m, i, &fname, NULL, NULL, NULL);
			int w = snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", fname);
			if (w > 0)
				used += (size_t)w;
		}
		return cn_error_set(-ENOENT, "the snapshot has no %s (it has: %s)", name, list);
	}
	enum cn_crypt_mode mode;
	uint64_t size;
	uint8_t csum[32];
	cn_manifest_file_at(m, (size_t)fi, NULL, &size, csum, &mode);
	struct cn_buf raw = {0};
	int r = src->ops->get_file(src, name, &raw);
	if (r == -ENOENT) /* listed in the manifest, so the snapshot is damaged */
		r = cn_error_set(-CN_E_MISSING, "the manifest lists it, but it is missing");
	if (r == 0 && raw.len > CN_INDEX_MAX_FILE_SIZE)
		r = cn_error_set(-EFBIG, "index file of %zu bytes", raw.len);
	if (r == 0)
		r = cn_index_parse(raw.data, raw.len, idx);
	cn_buf_free(&raw);
	if (r < 0)
		return cn_error_prefix(r, "index %s", name);
	r = cn_index_verify(*idx, size, csum);
	if (r < 0) {
		cn_index_free(*idx);
		*idx = NULL;
		return cn_error_prefix(r, "index %s does not match the manifest", name);
	}
	return 0;
}

int cn_restore_read_stream(struct cn_source *src, const struct cn_index *idx,
			   const struct cn_crypt_config *crypt, struct cn_buf *out)
{
	uint64_t size = cn_index_size(idx);
	if (size > (1ull << 32))
		return cn_error_set(-EFBIG, "stream of %llu bytes too large to hold in memory",
				    (unsigned long long)size);
	int r = cn_buf_reserve(out, (size_t)size);
	if (r < 0)
		return cn_error_set(r, "out of memory for %llu bytes", (unsigned long long)size);
	struct cn_chunk_reader *cr;
	if ((r = cn_chunk_reader_new(src, idx, crypt, 0, &cr)) < 0)
		return r;
	cn_chunk_reader_sequential(cr);
	if (size)
		r = cn_chunk_reader_read_at(cr, 0, out->data + out->len, (size_t)size);
	if (r == 0)
		out->len += (size_t)size;
	cn_chunk_reader_free(cr);
	return r;
}

/* Reads every byte of the stream through the reader (which verifies each
 * chunk), in large sequential pieces so that read-ahead runs. */
int cn_restore_archive_files(const struct cn_manifest *m, const char *archive,
			     struct cn_archive_files *f)
{
	/* NAME.pxar, NAME.mpxar or NAME.ppxar (with or without .didx): a
	 * unified archive NAME.pxar.didx or a split one (format v2,
	 * NAME.mpxar.didx + NAME.ppxar.didx), whichever the snapshot has */
	char base[256];
	size_t alen = strlen(archive);
	if (alen >= sizeof(base))
		return cn_error_set(-EINVAL, "archive name too long");
	memcpy(base, archive, alen + 1);
	if (alen > 5 && !strcmp(base + alen - 5, ".didx"))
		base[alen -= 5] = 0;
	const char *ext = alen > 5 ? base + alen - 5 : "";
	if (!strcmp(ext, ".pxar"))
		base[alen -= 5] = 0;
	else if (alen > 6 && (!strcmp(base + alen - 6, ".mpxar") || !strcmp(base + alen - 6, ".ppxar")))
		base[alen -= 6] = 0;
	else
		return cn_error_set(-EINVAL, "%s is not a pxar archive name (e.g. media.pxar)", archive);
	snprintf(f->name, sizeof(f->name), "%s.pxar.didx", base);
	f->pname[0] = 0;
	f->split = 0;
	if (m && cn_manifest_find(m, f->name) < 0) {
		snprintf(f->pname, sizeof(f->pname), "%s.mpxar.didx", base);
		if (cn_manifest_find(m, f->pname) >= 0) {
			f->split = 1;
			snprintf(f->name, sizeof(f->name), "%s", f->pname);
			snprintf(f->pname, sizeof(f->pname), "%s.ppxar.didx", base);
		} else {
			f->pname[0] = 0;
		}
	}
	return 0;
}

static int read_all(struct cn_chunk_reader *cr, const struct cn_index *idx)
{
	size_t piece = 1u << 20;
	uint8_t *buf = malloc(piece);
	if (!buf)
		return cn_error_set(-ENOMEM, "out of memory");
	uint64_t size = cn_index_size(idx);
	int r = 0;
	for (uint64_t off = 0; off < size && r == 0; off += piece) {
		size_t n = size - off < piece ? (size_t)(size - off) : piece;
		r = cn_chunk_reader_read_at(cr, off, buf, n);
	}
	free(buf);
	return r;
}

/* The archive input of a restore: the chunk reader, plus progress. */
struct tracked_input {
	struct cn_chunk_reader *cr;
	const struct cn_restore_opts *o;
	uint64_t pos, total;
	double start, next;
	int read_err;            /* first failed read (a missing/corrupt chunk) */
	char read_msg[512];
};

/* Records a read's outcome: its error (the first one), progress. */
static int tracked(struct tracked_input *ti, int r, uint64_t off, size_t len)
{
	if (r < 0 && !ti->read_err) {
		ti->read_err = r;
		snprintf(ti->read_msg, sizeof(ti->read_msg), "%s", cn_error_message());
	}
	if (off + len > ti->pos)
		ti->pos = off + len;
	if (r == 0 && ti->o->progress) {
		double t = now_sec();
		if (t >= ti->next) {
			ti->next = t + 0.25;
			ti->o->progress(ti->o->progress_ctx, ti->pos, ti->total, t - ti->start);
		}
	}
	return r;
}

static int tracked_read_at(void *ctx, uint64_t off, void *buf, size_t len)
{
	struct tracked_input *ti = ctx;
	return tracked(ti, cn_chunk_reader_read_at(ti->cr, off, buf, len), off, len);
}

static int tracked_view_at(void *ctx, uint64_t off, size_t len, const uint8_t **data,
			   size_t *got, void **token)
{
	struct tracked_input *ti = ctx;
	int r = cn_chunk_reader_view_at(ti->cr, off, len, data, got, token);
	return tracked(ti, r, off, r == 0 ? *got : len);
}

static void tracked_release(void *ctx, void *token)
{
	struct tracked_input *ti = ctx;
	cn_chunk_reader_release(ti->cr, token);
}

/* The archive input of --verify-only: before serving a read it reads
 * (and so verifies) every byte from where the previous read ended, so the
 * listing walks the stream once and each chunk is fetched once. Reading
 * everything first and listing afterwards fetched the chunks holding
 * entry headers a second time (170 more than the 279 of the bench
 * corpus's archive). */
struct verify_input {
	struct tracked_input *ti;
	uint64_t done;     /* every byte before this has been read */
	uint8_t *scratch;
	size_t scratch_len;
};

/* Reads [vi->done, upto) into the scratch buffer, piece by piece. */
static int verify_fill(struct verify_input *vi, uint64_t upto)
{
	while (vi->done < upto) {
		size_t n = upto - vi->done < vi->scratch_len ? (size_t)(upto - vi->done)
							     : vi->scratch_len;
		int r = tracked_read_at(vi->ti, vi->done, vi->scratch, n);
		if (r < 0)
			return r;
		vi->done += n;
	}
	return 0;
}

static int verify_read_at(void *ctx, uint64_t off, void *buf, size_t len)
{
	struct verify_input *vi = ctx;
	int r = verify_fill(vi, off);
	if (r == 0)
		r = tracked_read_at(vi->ti, off, buf, len);
	if (r == 0 && off + len > vi->done)
		vi->done = off + len;
	return r;
}

static int list_nothing(void *ctx, const struct cn_pxar_entry *e)
{
	struct cn_restore_stats *st = ctx;
	switch (e->kind) {
	case CN_PXAR_KIND_DIR: st->dirs++; break;
	case CN_PXAR_KIND_FILE: st->files++; st->bytes += e->file_size; break;
	case CN_PXAR_KIND_SYMLINK: st->symlinks++; break;
	case CN_PXAR_KIND_HARDLINK: st->hardlinks++; break;
	default: st->specials++; break;
	}
	return 0;
}

/* Threads writing restored file content (cn_pxar_extract_opts.writers):
 * one per CPU, at most MAX_WRITERS, and few enough that the cached
 * chunks their views pin leave half of the cache to read-ahead. With
 * 2 CPUs: 4 read-ahead workers (2 x CPUs), 9 slots, 2 writers pinning
 * up to 2 chunks each: restore peak RSS 40-64 MiB, against 100-233 MiB
 * with a read-ahead of 2 x threads + 2 chunks, 8 MiB kept per slot and
 * 2 pieces queued per writer. */
#define MAX_WRITERS 4

static size_t restore_writers(const struct cn_chunk_reader *cr)
{
	size_t n = cn_cpu_count();
	size_t by_cache = cn_chunk_reader_cache_slots(cr) / (2 * CN_PXAR_EXTRACT_VIEWS_PER_WRITER);
	if (n > MAX_WRITERS)
		n = MAX_WRITERS;
	if (n > by_cache)
		n = by_cache;
	return n ? n : 1;
}

int cn_restore_archive(struct cn_source *src, const struct cn_snapshot_id *id,
		       const char *archive, const char *target_dir,
		       const struct cn_restore_opts *o, struct cn_restore_stats *stats)
{
	struct cn_restore_stats local;
	struct cn_restore_opts dflt = {0};
	if (!stats)
		stats = &local;
	if (!o)
		o = &dflt;
	memset(stats, 0, sizeof(*stats));
	double t0 = now_sec();
	struct cn_archive_files af;
	int r = cn_restore_archive_files(NULL, archive, &af);
	if (r < 0)
		return r;

	struct cn_manifest *m = NULL;
	struct cn_index *idx = NULL, *pidx = NULL;
	struct cn_chunk_reader *cr = NULL, *pcr = NULL;
	int split = 0;
	r = cn_restore_open(src, id, o->crypt, &m);
	if (r == 0 && (r = cn_restore_check_downgrade(src, id, m)) == -CN_E_MISMATCH) {
		/* the data may be what the user wants: restore it, but loudly */
		cn_log_warning("WARNING: %s", cn_error_message());
		r = 0;
	}
	if (r == 0 && (r = cn_restore_archive_files(m, archive, &af)) == 0) {
		split = af.split;
		r = cn_restore_load_index(src, m, af.name, &idx);
	}
	if (r == 0 && split)
		r = cn_restore_load_index(src, m, af.pname, &pidx);
	if (r == 0)
		r = cn_chunk_reader_new(src, idx, o->crypt, o->threads, &cr);
	if (r == 0 && split)
		r = cn_chunk_reader_new(src, pidx, o->crypt, o->threads, &pcr);
	if (r < 0)
		goto out;
	if (cn_pxar_select_everything(o->select)) {
		/* read front to back (a selection looks its paths up instead) */
		cn_chunk_reader_sequential(cr);
		if (pcr)
			cn_chunk_reader_sequential(pcr);
	}
	struct cn_pxar_input pin = {.read_at = cn_chunk_reader_read_at,
				    .size = split ? cn_index_size(pidx) : 0, .ctx = pcr,
				    .view_at = cn_chunk_reader_view_at,
				    .release = cn_chunk_reader_release};
	stats->stream_size = cn_index_size(idx);
	struct tracked_input ti = {.cr = cr, .o = o, .total = cn_index_size(idx), .start = t0,
				   .next = t0 + 0.25};
	struct cn_pxar_input in = {.read_at = tracked_read_at, .size = cn_index_size(idx),
				   .ctx = &ti, .view_at = tracked_view_at,
				   .release = tracked_release};
	if (o->verify_only && !cn_pxar_select_everything(o->select)) {
		/* what restoring the selection would read, and no more */
		r = cn_pxar_verify(&in, split ? &pin : NULL, o->select, list_nothing, stats);
	} else if (o->verify_only) {
		/* the structure and every chunk in one pass; a split archive's
		 * payload stream is read whole first (the listing reads none of it) */
		struct verify_input vi = {.ti = &ti, .scratch_len = 1u << 20};
		struct cn_pxar_input vin = {.read_at = verify_read_at, .size = cn_index_size(idx),
					    .ctx = &vi};
		if (!(vi.scratch = malloc(vi.scratch_len)))
			r = cn_error_set(-ENOMEM, "out of memory");
		if (r == 0 && split)
			r = read_all(pcr, pidx);
		if (r == 0)
			r = cn_pxar_list(&vin, split ? &pin : NULL, NULL, list_nothing, stats);
		if (r == 0)
			r = verify_fill(&vi, cn_index_size(idx));
		free(vi.scratch);
	} else {
		struct cn_pxar_extract_opts eo = {
			.select = o->select,
			.overwrite = o->overwrite,
			.no_owner = o->no_owner,
			.allow_existing_dirs = 1,
			.payload = split ? &pin : NULL,
			.writers = restore_writers(split ? pcr : cr), /* (holding the content) */
		};
		struct cn_pxar_extract_stats es;
		memset(&es, 0, sizeof(es));
		r = cn_pxar_extract(&in, target_dir, &eo, &es);
		stats->files = es.files;
		stats->dirs = es.dirs;
		stats->symlinks = es.symlinks;
		stats->hardlinks = es.hardlinks;
		stats->specials = es.devices + es.fifos + es.sockets;
		stats->bytes = es.bytes;
		stats->errors = es.errors;
	}
	/* The extractor may skip a file whose data could not be read and go
	 * on; the result is still a damaged snapshot, reported as such. */
	if (ti.read_err && (r == 0 || r == -EIO))
		r = cn_error_set(ti.read_err, "%s", ti.read_msg);
	if (r == -ENOENT && cn_pxar_select_lookups(o->select) == 1)
		r = cn_error_prefix(r, "path %s", cn_pxar_select_lookup(o->select, 0));
out:
	if (cr) {
		struct cn_chunk_reader_stats cs;
		cn_chunk_reader_stats(cr, &cs);
		stats->chunks = cs.chunks_fetched;
		stats->chunk_bytes = cs.bytes_decoded;
	}
	if (pcr) {
		struct cn_chunk_reader_stats cs;
		cn_chunk_reader_stats(pcr, &cs);
		stats->chunks += cs.chunks_fetched;
		stats->chunk_bytes += cs.bytes_decoded;
	}
	cn_chunk_reader_free(cr);
	cn_chunk_reader_free(pcr);
	cn_index_free(idx);
	cn_index_free(pidx);
	cn_manifest_free(m);
	stats->duration = now_sec() - t0;
	return r;
}

/* Checks one blob file of the snapshot against the manifest. */
static int verify_blob(struct cn_source *src, const char *name, uint64_t size,
		       const uint8_t csum[32], const struct cn_crypt_config *crypt)
{
	struct cn_buf raw = {0}, plain = {0};
	uint8_t mine[32];
	int r = src->ops->get_file(src, name, &raw);
	if (r == -ENOENT)
		r = cn_error_set(-CN_E_MISSING, "the manifest lists it, but it is missing");
	if (r == 0 && raw.len != size)
		r = cn_error_set(-CN_E_CHECKSUM, "size %zu, the manifest says %llu", raw.len,
				 (unsigned long long)size);
	if (r == 0 && (r = cn_chunk_digest(NULL, raw.data, raw.len, mine)) == 0 &&
	    memcmp(mine, csum, 32))
		r = cn_error_set(-CN_E_CHECKSUM, "checksum differs from the manifest's");
	if (r == 0)
		r = cn_blob_decode(raw.data, raw.len, crypt, NULL, &plain);
	cn_buf_free(&raw);
	cn_buf_free(&plain);
	return r;
}

int cn_verify_snapshot(struct cn_source *src, const struct cn_snapshot_id *id,
		       const struct cn_crypt_config *crypt, size_t threads,
		       struct cn_verify_stats *stats)
{
	struct cn_verify_stats local;
	if (!stats)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	struct cn_manifest *m;
	int r = cn_restore_open(src, id, crypt, &m);
	if (r == 0 && (r = cn_restore_check_downgrade(src, id, m)) < 0)
		cn_manifest_free(m);
	if (r < 0)
		return r;
	char sp[512];
	snap_text(id, sp, sizeof(sp));
	int first_err = 0, corrupt = 0;
	char why[512] = "";
	for (size_t i = 0; i < cn_manifest_file_count(m); i++) {
		const char *name;
		uint64_t size;
		uint8_t csum[32];
		cn_manifest_file_at(m, i, &name, &size, csum, NULL);
		stats->files++;
		size_t nl = strlen(name);
		if (nl > 5 && !strcmp(name + nl - 5, ".blob")) {
			r = verify_blob(src, name, size, csum, crypt);
		} else {
			struct cn_index *idx = NULL;
			struct cn_chunk_reader *cr = NULL;
			r = cn_restore_load_index(src, m, name, &idx);
			if (r == 0)
				r = cn_chunk_reader_new(src, idx, crypt, threads, &cr);
			if (r == 0)
				r = read_all(cr, idx);
			if (cr) {
				struct cn_chunk_reader_stats cs;
				cn_chunk_reader_stats(cr, &cs);
				stats->chunks += cs.chunks_fetched;
				stats->bytes += cs.bytes_decoded;
			}
			cn_chunk_reader_free(cr);
			cn_index_free(idx);
		}
		if (r < 0) {
			stats->failed++;
			cn_log_error("verify %s: %s: %s", sp, name, cn_error_message());
			if (!first_err)
				first_err = r;
			corrupt |= cn_error_is_corruption(r);
			if (cn_error_is_unavailable(r)) {
				/* the next file would wait for the same timeout */
				first_err = r;
				snprintf(why, sizeof(why), "%s", cn_error_message());
				break;
			}
		}
	}
	cn_manifest_free(m);
	/* damage found anywhere makes the result "corrupt"; only a check
	 * that failed for other reasons alone (network, key) keeps its code,
	 * as does one cut short by a source that stopped answering */
	if (stats->failed && cn_error_is_unavailable(first_err))
		return cn_error_set(first_err, "snapshot %s: not fully checked: %s", sp, why);
	if (stats->failed)
		return cn_error_set(corrupt ? -CN_E_CHECKSUM : first_err,
				    "snapshot %s: %llu of %llu files failed verification", sp,
				    (unsigned long long)stats->failed,
				    (unsigned long long)stats->files);
	return 0;
}

int cn_restore_list_sizes(struct cn_source *src, struct cn_snapshot_info *list, size_t n)
{
	struct cn_buf b = {0};
	for (size_t i = 0; i < n; i++) {
		struct cn_snapshot_info *s = &list[i];
		struct cn_manifest *m;
		if (s->size != 0 || s->encrypted != -1)
			continue;
		b.len = 0;
		if (src->ops->open(src, &s->id) < 0 ||
		    src->ops->get_file(src, CN_MANIFEST_BLOB_NAME, &b) < 0 ||
		    cn_manifest_decode(b.data, b.len, NULL, &m) < 0) {
			s->damaged = 1;
			cn_error_clear();
			continue;
		}
		s->encrypted = cn_manifest_encrypted(m) || cn_manifest_signed(m);
		for (size_t k = 0; k < cn_manifest_file_count(m); k++) {
			uint64_t size;
			cn_manifest_file_at(m, k, NULL, &size, NULL, NULL);
			s->size += size;
		}
		cn_manifest_free(m);
	}
	cn_buf_free(&b);
	return 0;
}
