#include "engine/cn_backup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunker/cn_chunker.h"
#include "common/cn_error.h"
#include "common/cn_util.h"
#include "common/cn_log.h"
#include "pxar/cn_catalog_writer.h"
#include "engine/cn_pipeline.h"
#include "engine/cn_restore.h"
#include "engine/cn_reuse.h"
#include "engine/cn_walker.h"
#include "store/cn_filecache.h"
#include "store/cn_blob.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

static double now_sec(void)
{
	return (double)cn_monotonic_ns() / 1e9;
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

/* Index names of archive a: NAME.pxar.didx, or NAME.mpxar.didx and
 * NAME.ppxar.didx for split archives. Returns how many (1 or 2). */
static size_t index_names(const struct cn_backup_opts *o, size_t a, char names[2][160])
{
	const char *n = o->archives[a].name;
	int len = (int)strlen(n) - 5; /* without ".pxar" */
	if (o->change_detection == CN_CDM_LEGACY) {
		snprintf(names[0], 160, "%s.didx", n);
		return 1;
	}
	snprintf(names[0], 160, "%.*s.mpxar.didx", len, n);
	snprintf(names[1], 160, "%.*s.ppxar.didx", len, n);
	return 2;
}

/* Metadata change detection of one archive: the reference previous
 * payload index (of the first live target that has one) and how many
 * targets have the same one. */
struct cd_archive {
	struct cn_index *prev_pidx;
	uint8_t prev_csum[32];
	char prev_name[256];
	int64_t prev_time;
	int usable;            /* -1 unknown yet, 0 no, 1 yes */
	uint64_t missing;      /* chunks of previous payload indexes targets lacked */
	size_t ref;            /* the target it comes from */
	uint8_t (*tcsum)[32];  /* per target: its previous payload index's checksum */
	unsigned char *thas;   /* per target: it has one */
	struct cn_reuse *reuse;
	const struct cn_pxar_reuse *ops;
	size_t *out_target;    /* target of each new file cache */
	size_t n_out;
	int pstream;
	struct cn_pipeline *p;
	struct run *run;
};

/* The producer's view while an archive is written: the pipeline stream
 * plus what the progress callback needs. */
struct run {
	struct cd_archive *cd;             /* per archive (split modes) */
	struct cn_manifest **prev_m;       /* per target: its source's open
					    * previous snapshot (metadata mode) */
	const struct cn_backup_opts *o;
	size_t n_targets;
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

/* Reports progress when its interval has passed. */
static void maybe_report(struct run *r)
{
	if (r->o->progress) {
		double t = now_sec();
		if (t >= r->next_progress) {
			r->next_progress = t + r->interval;
			report(r);
		}
	}
}

static int archive_write(void *ctx, const uint8_t *data, size_t len)
{
	struct run *r = ctx;
	int rc = cn_pipeline_write(r->p, r->stream, data, len);
	if (rc == 0)
		maybe_report(r);
	return rc;
}

/* archive_write's twins for file data read straight into the pipeline's
 * buffers (cn_pxar_create_opts.data_reserve, data_commit). */
static int archive_reserve(void *ctx, uint8_t **buf, size_t *avail)
{
	struct run *r = ctx;
	return cn_pipeline_reserve(r->p, r->stream, buf, avail);
}

static int archive_commit(void *ctx, size_t len)
{
	struct run *r = ctx;
	int rc = cn_pipeline_commit(r->p, r->stream, len);
	if (rc == 0)
		maybe_report(r);
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
	sum->files_reused += s->files_reused;
	sum->files_compared += s->files_compared;
	sum->files_unopened += s->files_unopened;
	sum->reused_bytes += s->reused_bytes;
	sum->injected_bytes += s->injected_bytes;
	sum->excluded += s->excluded;
	sum->skipped += s->skipped;
	sum->changed += s->changed;
}

/* Makes the chunks of the previous snapshot's archives known to target i,
 * for archives whose crypt mode is unchanged. Problems with the previous
 * snapshot only cost deduplication; a failing target is dropped. */
static int reuse_previous(struct cn_pipeline *p, size_t i, const struct cn_backup_opts *o,
			  enum cn_crypt_mode mode, struct cd_archive *cd)
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
	char names[2][160];
	for (size_t an = 0; an < 2 * o->n_archives && r == 0; an++) {
		size_t a = an / 2;
		if (an % 2 >= index_names(o, a, names))
			continue;
		const char *name = names[an % 2];
		int is_payload = an % 2 == 1;
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
		/* a candidate for the reference of metadata mode's reuse */
		int ref_candidate = is_payload && cd && o->change_detection == CN_CDM_METADATA;
		size_t lost = 0;
		if (ref_candidate && t->ops->count_missing &&
		    (rc = t->ops->count_missing(t, (const uint8_t(*)[32])digests, cnt, &lost)) < 0) {
			cn_log_warning("%s: checking the chunks of the previous %s: %s; not reusing them",
				       t->name, name, cn_error_message());
			lost = cnt;
		} else if (lost) {
			cn_log_warning("%s: %zu of the %zu chunks of the previous %s are missing (a "
				       "damaged store: 'cairn verify' lists the snapshots that need "
				       "them); this run stores them again", t->name, lost, cnt, name);
			cd[a].missing += lost;
		}
		if (ref_candidate && !lost) {
			/* the newest previous payload is the reference (the
			 * first target's among equals): it is closest to what
			 * the files hold now; a target that lost some of its
			 * chunks is none (cd_begin: what it lacks is copied
			 * from the reference, or every file is read) */
			cn_index_csum(idx, cd[a].tcsum[i]);
			cd[a].thas[i] = 1;
			if (cd[a].usable < 0 || prev_time > cd[a].prev_time) {
				struct cn_snapshot_id pid = o->id;
				cd[a].ref = i;
				pid.time = prev_time;
				cd[a].usable = cn_snapshot_path(&pid, cd[a].prev_name, sizeof(cd[a].prev_name)) >= 0;
				cd[a].prev_time = prev_time;
				memcpy(cd[a].prev_csum, cd[a].tcsum[i], 32);
				cn_index_free(cd[a].prev_pidx);
				cd[a].prev_pidx = idx;
				idx = NULL;
			}
		}
		cn_index_free(idx);
		rc = t->ops->add_known(t, (const uint8_t(*)[32])digests, cnt);
		free(digests);
		if (rc < 0)
			r = cn_pipeline_drop(p, i, cn_error_prefix(rc, "registering previous %s", name));
	}
	cn_manifest_free(m);
	return r;
}

static int inject_chunks(void *ctx, const struct cn_pxar_reused_chunk *c, size_t n)
{
	struct cd_archive *cd = ctx;
	uint8_t(*d)[32] = malloc(n * 32);
	uint64_t *sz = malloc(n * sizeof(*sz));
	int r = d && sz ? 0 : cn_error_set(-ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < n; i++) {
		memcpy(d[i], c[i].digest, 32);
		sz[i] = c[i].size;
	}
	if (r == 0)
		r = cn_pipeline_inject(cd->p, cd->pstream, (const uint8_t(*)[32])d, sz, n);
	free(d);
	free(sz);
	return r;
}

/* Target i's source, open on its previous snapshot (opened once per
 * run): its manifest, or NULL when there is no source or no previous
 * snapshot, or it failed (a warning: it only costs speed). */
static struct cn_manifest *prev_source(struct run *run, size_t i)
{
	const struct cn_backup_opts *o = run->o;
	struct cn_source *src = o->sources ? o->sources[i] : NULL;
	int64_t prev_time;
	if (!src || !run->prev_m)
		return NULL;
	if (run->prev_m[i])
		return run->prev_m[i];
	cn_pipeline_prev_manifest(run->p, i, &prev_time);
	struct cn_snapshot_id pid = o->id;
	pid.time = prev_time;
	if (prev_time <= 0 || cn_restore_open(src, &pid, o->crypt, &run->prev_m[i]) < 0) {
		if (prev_time > 0)
			cn_log_warning("%s: previous snapshot not readable: %s", src->name, cn_error_message());
		run->prev_m[i] = NULL;
	}
	return run->prev_m[i];
}

/* The payload index (.ppxar.didx) of archive a in the reference target's
 * previous snapshot, read through its source (which a PBS reader then
 * lets read that index's chunks). 0 or a negative code. */
static int prev_payload_index(struct cd_archive *cd, struct cn_source **src, struct cn_index **idx)
{
	struct run *run = cd->run;
	struct cn_manifest *m = prev_source(run, cd->ref);
	char names[2][160];
	if (!m)
		return cn_error_set(-ENOENT, "no source for the previous snapshot");
	index_names(run->o, (size_t)(cd - run->cd), names);
	*src = run->o->sources[cd->ref];
	int r = cn_restore_load_index(*src, m, names[1], idx);
	return r < 0 ? cn_error_prefix(r, "reading previous %s from %s", names[1], (*src)->name) : 0;
}

/* When targets' previous snapshots differ: reused chunks that a target
 * lacks are copied from the reference target (its source reads them;
 * a PBS reader serves chunks of the indexes it sent). 1 when set up. */
static int chunk_source(struct run *run, size_t a)
{
	struct cd_archive *cd = &run->cd[a];
	struct cn_source *src = NULL;
	struct cn_index *idx;
	if (!prev_source(run, cd->ref))
		return 0; /* no source (or it warned already) */
	if (prev_payload_index(cd, &src, &idx) < 0) {
		cn_log_warning("%s", cn_error_message());
		return 0;
	}
	cn_index_free(idx);
	return cn_pipeline_set_chunk_source(run->p, cd->pstream, src) == 0;
}

/* Metadata mode: opens the file cache of archive a of the reference
 * target and checks it against its previous snapshot (rebuilding it from
 * that snapshot's metadata archive when stale), and starts a new cache
 * for every live target. Without a previous snapshot nothing is reused;
 * targets whose previous snapshot differs get the reused chunks they
 * lack copied, or, without a source to copy from, every file is read. */
static int cd_begin(struct run *run, size_t a, size_t live)
{
	const struct cn_backup_opts *o = run->o;
	struct cd_archive *cd = &run->cd[a];
	char path[4096];
	if (o->change_detection != CN_CDM_METADATA || !o->filecache_dir || live == 0)
		return 0;
	if (cd->usable > 0 && !cn_pipeline_target(run->p, cd->ref))
		cd->usable = 0; /* the reference target was dropped since */
	size_t seen = 0;
	for (size_t i = 0; i < run->n_targets; i++)
		seen += cn_pipeline_target(run->p, i) && cd->thas[i] && !memcmp(cd->tcsum[i], cd->prev_csum, 32);
	if (cd->usable > 0 && seen != live) {
		if (chunk_source(run, a)) {
			cn_log_info("not every target has the previous snapshot of %s; reused chunks "
				    "they lack are copied from %s", o->archives[a].name,
				    cn_pipeline_target(run->p, cd->ref)->name);
		} else {
			cn_log_info("not every target has the previous snapshot; reading every file of %s",
				    o->archives[a].name);
			cd->usable = 0;
		}
	}
	if (cd->usable <= 0)
		for (cd->ref = 0; !cn_pipeline_target(run->p, cd->ref); cd->ref++)
			;
	if (!(cd->out_target = calloc(run->n_targets, sizeof(size_t))))
		return cn_error_set(-ENOMEM, "out of memory");
	struct cn_filecache_ref prev = {.snapshot = cd->prev_name};
	memcpy(prev.payload_csum, cd->prev_csum, 32);
	/* one cache per target, group and archive: groups backed up in turn
	 * into one store each keep theirs */
	char key[CN_NS_MAX + CN_BACKUP_ID_MAX + 200];
	snprintf(key, sizeof(key), "%s/%s/%s/%s", o->id.ns, o->id.type, o->id.id, o->archives[a].name);
	int r = cn_filecache_path(o->filecache_dir, cn_pipeline_target(run->p, cd->ref)->name, key,
				  path, sizeof(path));
	if (r == 0)
		r = cn_reuse_begin(path, cd->usable > 0 ? &prev : NULL,
				   cd->usable > 0 ? cd->prev_pidx : NULL, inject_chunks, cd, &cd->reuse,
				   &cd->ops);
	if (r < 0)
		return r;
	cd->out_target[cd->n_out++] = cd->ref;
	for (size_t i = 0; i < run->n_targets && r >= 0; i++) {
		struct cn_target *t = cn_pipeline_target(run->p, i);
		if (!t || i == cd->ref)
			continue;
		r = cn_filecache_path(o->filecache_dir, t->name, key, path, sizeof(path));
		if (r == 0 && (r = cn_reuse_add_output(cd->reuse, path)) >= 0)
			cd->out_target[cd->n_out++] = i;
	}
	return r < 0 ? r : 0;
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
		char names[2][160];
		int split = index_names(o, a, names) == 2;
		struct cn_pipeline_writer pw = {run->p, split ? run->cd[a].pstream : -1};
		struct cn_pxar_create_opts co = {
			.excludes = o->excludes,
			.n_excludes = o->n_excludes,
			.all_file_systems = o->all_file_systems,
			.skip_lost_found = o->skip_lost_found,
			.archive_name = names[0],
			.payload_out = split ? cn_pipeline_writer_fn : NULL,
			.payload_ctx = &pw,
			.payload_boundary = split ? cn_pipeline_boundary_fn : NULL,
			.reuse = split ? run->cd[a].ops : NULL,
			/* file contents go into the payload stream when split */
			.data_reserve = split ? cn_pipeline_reserve_fn : archive_reserve,
			.data_commit = split ? cn_pipeline_commit_fn : archive_commit,
			.data_ctx = split ? (void *)&pw : (void *)run,
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
		if (r == 0 && split)
			r = cn_pipeline_end_stream(run->p, run->cd[a].pstream);
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
			enum cn_crypt_mode mode, const struct cd_archive *cd)
{
	struct cn_manifest *m;
	int r = cn_manifest_new(id, &m);
	if (r < 0)
		return r;
	for (size_t an = 0; an < 2 * o->n_archives + 1 && r == 0; an++) {
		char names[2][160];
		size_t a = an / 2;
		int s;
		const char *name;
		if (a < o->n_archives) {
			if (an % 2 >= index_names(o, a, names))
				continue;
			name = names[an % 2];
			s = an % 2 ? cd[a].pstream : streams[a];
		} else {
			name = CN_CATALOG_INDEX_NAME;
			s = cat_stream;
		}
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
	char (*terr)[CN_BACKUP_TARGET_ERROR_MAX] = stats == &local ? NULL : stats->target_errors;
	memset(stats, 0, sizeof(*stats));
	stats->target_errors = terr;
	for (size_t i = 0; terr && i < n; i++)
		terr[i][0] = '\0';
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
	struct run run = {.o = o, .n_targets = n, .start = now_sec()};
	run.interval = (o->progress_interval_ms ? o->progress_interval_ms : 250) / 1000.0;
	run.next_progress = run.start + run.interval;
	struct cn_snapshot_id id = o->id;
	if (id.time == 0)
		id.time = (int64_t)time(NULL);
	stats->id = id;
	stats->targets = n;
	enum cn_crypt_mode mode = o->crypt ? CN_CRYPT_MODE_ENCRYPT : CN_CRYPT_MODE_NONE;

	struct cn_pipeline_opts po = {.crypt = o->crypt, .compress = CN_BLOB_COMPRESS,
				      .threads = o->threads, .stall_timeout_ms = o->stall_timeout_ms};
	int r = cn_pipeline_new(targets, n, &po, &run.p);
	if (r < 0)
		return r;
	int *streams = calloc(o->n_archives, sizeof(int));
	int cat_stream = -1;
	run.cd = calloc(o->n_archives, sizeof(*run.cd));
	run.prev_m = calloc(n ? n : 1, sizeof(*run.prev_m));
	for (size_t a = 0; run.cd && a < o->n_archives; a++) {
		run.cd[a].usable = -1;
		run.cd[a].p = run.p;
		run.cd[a].run = &run;
		run.cd[a].tcsum = calloc(n ? n : 1, 32);
		run.cd[a].thas = calloc(n ? n : 1, 1);
		if (!run.cd[a].tcsum || !run.cd[a].thas)
			r = -ENOMEM;
	}
	if (!streams || !run.cd || !run.prev_m || r < 0) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto out;
	}
	if ((r = cn_pipeline_begin(run.p, &id)) < 0)
		goto out;
	for (size_t i = 0; i < n && r == 0; i++)
		r = reuse_previous(run.p, i, o, mode, run.cd);
	size_t live = 0;
	for (size_t i = 0; i < n; i++)
		live += cn_pipeline_target(run.p, i) != NULL;
	for (size_t a = 0; a < o->n_archives && r >= 0; a++) {
		char names[2][160];
		size_t k = index_names(o, a, names);
		r = streams[a] = cn_pipeline_add_stream(run.p, names[0], CN_CHUNKER_DEFAULT_AVG);
		if (r >= 0 && k == 2)
			r = run.cd[a].pstream = cn_pipeline_add_stream(run.p, names[1], CN_CHUNKER_DEFAULT_AVG);
		if (r >= 0 && k == 2)
			r = cd_begin(&run, a, live);
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
		r = put_manifest(run.p, o, &id, streams, cat_stream, mode, run.cd);
	if (r >= 0 && o->progress)
		report(&run);
	if (r >= 0) {
		r = cn_pipeline_finish(run.p);
		if (r > 0) {
			stats->targets_ok = (size_t)r;
			r = 0;
		}
	}
	/* the new snapshot's file caches (a failure only costs the next run
	 * its speed) */
	for (size_t a = 0; r == 0 && a < o->n_archives; a++) {
		if (!run.cd[a].reuse)
			continue;
		char name[256];
		struct cn_filecache_ref ref = {.snapshot = name};
		int keep[run.cd[a].n_out];
		for (size_t k = 0; k < run.cd[a].n_out; k++)
			keep[k] = cn_pipeline_target(run.p, run.cd[a].out_target[k]) != NULL;
		cn_pipeline_stream_result(run.p, run.cd[a].pstream, NULL, NULL, ref.payload_csum);
		if (cn_snapshot_path(&id, name, sizeof(name)) < 0 || cn_reuse_commit(run.cd[a].reuse, &ref, keep) < 0)
			cn_log_warning("file cache for %s not written: %s", o->archives[a].name,
				       cn_error_message());
		else if (cn_reuse_copied(run.cd[a].reuse))
			cn_log_info("file cache for %s: no file changed, previous cache kept with the new "
				    "snapshot's name", o->archives[a].name);
	}
	for (size_t a = 0; run.cd && a < o->n_archives; a++)
		stats->chunks_missing += run.cd[a].missing;
	stats->files_reused = sum.files_reused;
	stats->files_compared = sum.files_compared;
	stats->files_unopened = sum.files_unopened;
	stats->reused_bytes = sum.reused_bytes;
	stats->reused_padding = sum.injected_bytes > sum.reused_bytes ? sum.injected_bytes - sum.reused_bytes : 0;
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
	stats->chunks_reused = ps.chunks_reused;
	stats->duration = now_sec() - run.start;
	if (r < 0) {
		/* keep the message: aborting targets may log but must not replace it */
		int code = r;
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", cn_error_message());
		cn_pipeline_abort(run.p);
		cn_error_set(code, "%s", msg);
	}
	for (size_t i = 0; terr && i < n; i++) {
		const char *why = run.p ? cn_pipeline_target_error(run.p, i) : "";
		snprintf(terr[i], CN_BACKUP_TARGET_ERROR_MAX, "%s",
			 *why ? why : r < 0 ? cn_error_message() : "");
	}
	cn_pipeline_free(run.p);
	for (size_t a = 0; run.cd && a < o->n_archives; a++) {
		cn_reuse_free(run.cd[a].reuse);
		cn_index_free(run.cd[a].prev_pidx);
		free(run.cd[a].out_target);
		free(run.cd[a].tcsum);
		free(run.cd[a].thas);
	}
	for (size_t i = 0; run.prev_m && i < n; i++)
		cn_manifest_free(run.prev_m[i]);
	free(run.prev_m);
	free(run.cd);
	free(streams);
	return r < 0 ? r : 0;
}
