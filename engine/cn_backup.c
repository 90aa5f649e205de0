#include "engine/cn_backup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunker/cn_chunker.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "engine/cn_catalog_writer.h"
#include "engine/cn_pipeline.h"
#include "engine/cn_walker.h"
#include "store/cn_blob.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

static double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int cn_backup_check_archive_name(const char *name)
{
	size_t len = strlen(name);
	int ok = len > 5 && !strcmp(name + len - 5, ".pxar");
	for (size_t i = 0; ok && i < len; i++) {
		char c = name[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		ok = alnum || c == '_' || (i > 0 && (c == '.' || c == '-'));
	}
	if (!ok || len > 100)
		return cn_error_set(-EINVAL,
				    "invalid archive name '%s': use letters, digits, '_', '.', '-' "
				    "and the extension .pxar (e.g. media.pxar)", name);
	return 0;
}

/* The producer's view while an archive is written: the pipeline stream
 * plus what the progress callback needs. */
struct run {
	const struct cn_backup_opts *o;
	struct cn_pipeline *p;
	int stream;
	const char *archive;
	struct cn_pxar_create_stats *cur;   /* stats of the archive being written */
	struct cn_pxar_create_stats done;   /* sums of the archives finished */
	double start, next_progress, interval;
};

static void report(struct run *r)
{
	struct cn_pipeline_stats ps;
	cn_pipeline_stats(r->p, &ps);
	struct cn_backup_progress pr = {
		.archive = r->archive,
		.files = r->done.files + (r->cur ? r->cur->files : 0),
		.dirs = r->done.dirs + (r->cur ? r->cur->dirs : 0),
		.bytes_read = r->done.bytes_read + (r->cur ? r->cur->bytes_read : 0),
		.stream_bytes = ps.stream_bytes,
		.chunks = ps.chunks,
		.chunks_new = ps.chunks_new,
		.bytes_new = ps.bytes_new,
		.elapsed = now_sec() - r->start,
	};
	r->o->progress(r->o->progress_ctx, &pr);
}

static int archive_write(void *ctx, const uint8_t *data, size_t len)
{
	struct run *r = ctx;
	int rc = cn_pipeline_write(r->p, r->stream, data, len);
	if (rc == 0 && r->o->progress) {
		double t = now_sec();
		if (t >= r->next_progress) {
			r->next_progress = t + r->interval;
			report(r);
		}
	}
	return rc;
}

static void add_stats(struct cn_pxar_create_stats *sum, const struct cn_pxar_create_stats *s)
{
	sum->files += s->files;
	sum->dirs += s->dirs;
	sum->symlinks += s->symlinks;
	sum->hardlinks += s->hardlinks;
	sum->devices += s->devices;
	sum->fifos += s->fifos;
	sum->sockets += s->sockets;
	sum->bytes_read += s->bytes_read;
	sum->excluded += s->excluded;
	sum->skipped += s->skipped;
	sum->changed += s->changed;
}

/* Makes the chunks of the previous snapshot's archives known to target i,
 * for archives whose crypt mode is unchanged. Problems with the previous
 * snapshot only cost deduplication; a failing target is dropped. */
static int reuse_previous(struct cn_pipeline *p, size_t i, const struct cn_backup_opts *o,
			  enum cn_crypt_mode mode)
{
	int64_t prev_time;
	const struct cn_buf *mb = cn_pipeline_prev_manifest(p, i, &prev_time);
	struct cn_target *t = cn_pipeline_target(p, i);
	if (!t || mb->len == 0)
		return 0;
	struct cn_manifest *m;
	if (cn_manifest_decode(mb->data, mb->len, o->crypt, &m) < 0) {
		cn_log_warning("%s: previous snapshot's manifest unusable (%s); not reusing its chunks",
			       t->name, cn_error_message());
		return 0;
	}
	int r = 0;
	for (size_t a = 0; a < o->n_archives && r == 0; a++) {
		char name[160];
		snprintf(name, sizeof(name), "%s.didx", o->archives[a].name);
		int fi = cn_manifest_find(m, name);
		enum cn_crypt_mode pmode;
		if (fi < 0)
			continue;
		cn_manifest_file_at(m, (size_t)fi, NULL, NULL, NULL, &pmode);
		if (pmode != mode)
			continue;
		struct cn_buf raw = {0};
		int rc = t->ops->load_previous_index(t, name, &raw);
		if (rc == -ENOENT) {
			cn_buf_free(&raw);
			continue;
		}
		if (rc < 0) {
			r = cn_pipeline_drop(p, i, cn_error_prefix(rc, "loading previous %s", name));
			cn_buf_free(&raw);
			break;
		}
		struct cn_index *idx;
		rc = cn_index_parse(raw.data, raw.len, &idx);
		cn_buf_free(&raw);
		if (rc < 0) {
			cn_log_warning("%s: previous %s unusable (%s); not reusing its chunks", t->name,
				       name, cn_error_message());
			continue;
		}
		size_t cnt = cn_index_count(idx);
		uint8_t(*digests)[32] = malloc((cnt ? cnt : 1) * 32);
		if (!digests) {
			cn_index_free(idx);
			r = cn_error_set(-ENOMEM, "out of memory for %zu previous digests", cnt);
			break;
		}
		for (size_t k = 0; k < cnt; k++)
			memcpy(digests[k], cn_index_digest(idx, k), 32);
		cn_index_free(idx);
		rc = t->ops->add_known(t, (const uint8_t(*)[32])digests, cnt);
		free(digests);
		if (rc < 0)
			r = cn_pipeline_drop(p, i, cn_error_prefix(rc, "registering previous %s", name));
	}
	cn_manifest_free(m);
	return r;
}

/* Walks every archive into its stream and the shared catalog. */
static int produce(struct run *run, const int *streams, int cat_stream,
		   struct cn_pxar_create_stats *sum)
{
	const struct cn_backup_opts *o = run->o;
	struct cn_pipeline_writer cw = {run->p, cat_stream};
	struct cn_catalog_writer *cat = NULL;
	int r = cn_catalog_writer_new(cn_pipeline_writer_fn, &cw, &cat);
	for (size_t a = 0; a < o->n_archives && r == 0; a++) {
		char idx_name[160];
		snprintf(idx_name, sizeof(idx_name), "%s.didx", o->archives[a].name);
		struct cn_pxar_create_opts co = {
			.excludes = o->excludes,
			.n_excludes = o->n_excludes,
			.all_file_systems = o->all_file_systems,
			.skip_lost_found = o->skip_lost_found,
			.archive_name = idx_name,
		};
		struct cn_pxar_create_stats st;
		memset(&st, 0, sizeof(st));
		run->stream = streams[a];
		run->archive = o->archives[a].name;
		run->cur = &st;
		r = cn_pxar_create(o->archives[a].path, &co, archive_write, run, cat, &st);
		run->cur = NULL;
		add_stats(&run->done, &st);
		add_stats(sum, &st);
		if (r < 0) {
			r = cn_error_prefix(r, "archive %s (%s)", o->archives[a].name,
					    o->archives[a].path);
			break;
		}
		r = cn_pipeline_end_stream(run->p, streams[a]);
	}
	if (r == 0)
		r = cn_catalog_writer_finish(cat);
	cn_catalog_writer_free(cat);
	if (r == 0)
		r = cn_pipeline_end_stream(run->p, cat_stream);
	return r;
}

/* Builds index.json.blob from the closed streams and stores it. */
static int put_manifest(struct cn_pipeline *p, const struct cn_backup_opts *o,
			const struct cn_snapshot_id *id, const int *streams, int cat_stream,
			enum cn_crypt_mode mode)
{
	struct cn_manifest *m;
	int r = cn_manifest_new(id, &m);
	if (r < 0)
		return r;
	for (size_t a = 0; a <= o->n_archives && r == 0; a++) {
		char name[160];
		int s = a < o->n_archives ? streams[a] : cat_stream;
		if (a < o->n_archives)
			snprintf(name, sizeof(name), "%s.didx", o->archives[a].name);
		else
			snprintf(name, sizeof(name), "%s", CN_CATALOG_INDEX_NAME);
		uint64_t size;
		uint8_t csum[32];
		cn_pipeline_stream_result(p, s, NULL, &size, csum);
		r = cn_manifest_add_file(m, name, size, csum, mode);
	}
	struct cn_buf blob = {0};
	if (r == 0)
		r = cn_manifest_encode(m, o->crypt, &blob);
	if (r == 0)
		r = cn_pipeline_put_blob(p, CN_MANIFEST_BLOB_NAME, blob.data, blob.len);
	cn_buf_free(&blob);
	cn_manifest_free(m);
	return r;
}

int cn_backup_run(struct cn_target *const *targets, size_t n, const struct cn_backup_opts *o,
		  struct cn_backup_stats *stats)
{
	struct cn_backup_stats local;
	if (!stats)
		stats = &local;
	memset(stats, 0, sizeof(*stats));
	if (o->n_archives == 0)
		return cn_error_set(-EINVAL, "nothing to back up: give at least one NAME.pxar:PATH");
	for (size_t a = 0; a < o->n_archives; a++) {
		int r = cn_backup_check_archive_name(o->archives[a].name);
		if (r < 0)
			return r;
		for (size_t b = 0; b < a; b++)
			if (!strcmp(o->archives[a].name, o->archives[b].name))
				return cn_error_set(-EINVAL, "archive name %s given twice",
						    o->archives[a].name);
	}
	struct run run = {.o = o, .start = now_sec()};
	run.interval = (o->progress_interval_ms ? o->progress_interval_ms : 250) / 1000.0;
	run.next_progress = run.start + run.interval;
	struct cn_snapshot_id id = o->id;
	if (id.time == 0)
		id.time = (int64_t)time(NULL);
	stats->id = id;
	stats->targets = n;
	enum cn_crypt_mode mode = o->crypt ? CN_CRYPT_MODE_ENCRYPT : CN_CRYPT_MODE_NONE;

	struct cn_pipeline_opts po = {.crypt = o->crypt, .compress = CN_BLOB_COMPRESS,
				      .threads = o->threads};
	int r = cn_pipeline_new(targets, n, &po, &run.p);
	if (r < 0)
		return r;
	int *streams = calloc(o->n_archives, sizeof(int));
	int cat_stream = -1;
	if (!streams) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	if ((r = cn_pipeline_begin(run.p, &id)) < 0)
		goto out;
	for (size_t i = 0; i < n && r == 0; i++)
		r = reuse_previous(run.p, i, o, mode);
	for (size_t a = 0; a < o->n_archives && r == 0; a++) {
		char name[160];
		snprintf(name, sizeof(name), "%s.didx", o->archives[a].name);
		r = streams[a] = cn_pipeline_add_stream(run.p, name, CN_CHUNKER_DEFAULT_AVG);
	}
	if (r >= 0)
		r = cat_stream = cn_pipeline_add_stream(run.p, CN_CATALOG_INDEX_NAME,
							CN_CHUNKER_CATALOG_AVG);
	if (r >= 0)
		r = cn_pipeline_start(run.p);
	struct cn_pxar_create_stats sum;
	memset(&sum, 0, sizeof(sum));
	if (r >= 0)
		r = produce(&run, streams, cat_stream, &sum);
	if (r >= 0)
		r = cn_pipeline_end(run.p);
	if (r >= 0)
		r = put_manifest(run.p, o, &id, streams, cat_stream, mode);
	if (r >= 0 && o->progress)
		report(&run);
	if (r >= 0) {
		r = cn_pipeline_finish(run.p);
		if (r > 0) {
			stats->targets_ok = (size_t)r;
			r = 0;
		}
	}
	stats->files = sum.files;
	stats->dirs = sum.dirs;
	stats->symlinks = sum.symlinks;
	stats->hardlinks = sum.hardlinks;
	stats->specials = sum.devices + sum.fifos + sum.sockets;
	stats->bytes_read = sum.bytes_read;
	stats->skipped = sum.skipped;
	stats->changed = sum.changed;
	stats->excluded = sum.excluded;
out:;
	struct cn_pipeline_stats ps;
	cn_pipeline_stats(run.p, &ps);
	stats->stream_bytes = ps.stream_bytes;
	stats->chunks = ps.chunks;
	stats->chunks_new = ps.chunks_new;
	stats->bytes_new = ps.bytes_new;
	stats->bytes_new_encoded = ps.bytes_new_encoded;
	stats->duration = now_sec() - run.start;
	if (r < 0) {
		/* keep the message: aborting targets may log but must not replace it */
		int code = r;
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cn_error_message());
		cn_pipeline_abort(run.p);
		cn_error_set(code, "%s", msg);
	}
	cn_pipeline_free(run.p);
	free(streams);
	return r < 0 ? r : 0;
}
