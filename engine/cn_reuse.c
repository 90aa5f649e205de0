/* cn_reuse — file-cache-backed change detection (see cn_reuse.h). */
#include "engine/cn_reuse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cn_error.h"
#include "common/cn_util.h"
#include "engine/cn_pxar_encoder.h"
#include "store/cn_crypt.h"

struct cn_reuse {
	struct cn_pxar_reuse ops;
	struct cn_filecache *prev;
	struct cn_filecache_writer *out;
	int trust_unverified;
	int (*inject)(void *ctx, const struct cn_pxar_reused_chunk *chunks, size_t n);
	void *inject_ctx;
	enum cn_reuse_cache_state state;
};

int cn_reuse_meta_hash(const struct cn_pxar_metadata *m, uint8_t out[32])
{
	struct cn_buf b = { 0 };
	int rc = cn_pxar_metadata_encode(m, &b);
	if (rc == 0)
		rc = cn_chunk_digest(NULL, b.data, b.len, out);
	cn_buf_free(&b);
	return rc;
}

static int lookup(void *ctx, const char *path, size_t path_len, const struct stat *st,
		  const struct cn_pxar_metadata *m, uint64_t *payload_offset)
{
	struct cn_reuse *r = ctx;
	struct cn_filecache_entry e;
	uint8_t h[32];
	if (!r->prev)
		return 0;
	int rc = cn_filecache_lookup(r->prev, path, path_len, &e);
	if (rc <= 0)
		return rc;
	if (e.size != (uint64_t)st->st_size || e.mtime_sec != st->st_mtim.tv_sec ||
	    e.mtime_nsec != (uint32_t)st->st_mtim.tv_nsec)
		return 0;
	if (e.flags & CN_FILECACHE_VERIFIED) {
		if (e.ino != (uint64_t)st->st_ino || e.ctime_sec != st->st_ctim.tv_sec ||
		    e.ctime_nsec != (uint32_t)st->st_ctim.tv_nsec)
			return 0;
	} else if (!r->trust_unverified) {
		return 0;
	}
	if ((rc = cn_reuse_meta_hash(m, h)) < 0)
		return rc;
	if (memcmp(h, e.meta_hash, 32))
		return 0;
	*payload_offset = e.payload_offset;
	return 1;
}

static int record(void *ctx, const char *path, size_t path_len, const struct stat *st,
		  const struct cn_pxar_metadata *m, uint64_t payload_offset, int reused, int changed)
{
	struct cn_reuse *r = ctx;
	struct cn_filecache_entry e = {
		.size = (uint64_t)st->st_size, .mtime_sec = st->st_mtim.tv_sec,
		.mtime_nsec = (uint32_t)st->st_mtim.tv_nsec, .payload_offset = payload_offset,
	};
	if (!r->out)
		return 0;
	int verified = !changed;
	if (reused) {
		/* reused data is as verified as the entry it came from */
		struct cn_filecache_entry p;
		verified = r->prev && cn_filecache_lookup(r->prev, path, path_len, &p) == 1 &&
			   (p.flags & CN_FILECACHE_VERIFIED);
	}
	if (verified) {
		e.flags = CN_FILECACHE_VERIFIED;
		e.ino = (uint64_t)st->st_ino;
		e.ctime_sec = st->st_ctim.tv_sec;
		e.ctime_nsec = (uint32_t)st->st_ctim.tv_nsec;
	}
	int rc = cn_reuse_meta_hash(m, e.meta_hash);
	return rc < 0 ? rc : cn_filecache_writer_put(r->out, path, path_len, &e);
}

static int inject(void *ctx, const struct cn_pxar_reused_chunk *c, size_t n)
{
	struct cn_reuse *r = ctx;
	return r->inject(r->inject_ctx, c, n);
}

int cn_reuse_begin(const char *cache_path, const struct cn_filecache_ref *prev,
		   const struct cn_index *prev_payload_index, cn_reuse_fetch_fn fetch, void *fetch_ctx,
		   int trust_unverified,
		   int (*inject_fn)(void *ctx, const struct cn_pxar_reused_chunk *chunks, size_t n),
		   void *inject_ctx, struct cn_reuse **out_r, const struct cn_pxar_reuse **ops)
{
	struct cn_reuse *r = calloc(1, sizeof(*r));
	int rc = 0;
	*out_r = NULL;
	if (!r)
		return -ENOMEM;
	r->trust_unverified = trust_unverified;
	r->inject = inject_fn;
	r->inject_ctx = inject_ctx;
	r->state = CN_REUSE_CACHE_NONE;
	if (prev && prev_payload_index) {
		rc = cn_filecache_open(cache_path, &r->prev);
		if (rc == 0 && r->prev && cn_filecache_matches(r->prev, prev)) {
			r->state = CN_REUSE_CACHE_VALID;
		} else if (rc == 0 && !fetch) {
			/* stale, and no way to rebuild: nothing is reused */
			cn_filecache_close(r->prev);
			r->prev = NULL;
			r->state = CN_REUSE_CACHE_STALE;
		} else if (rc == 0) {
			/* absent, damaged, or of another snapshot: rebuild from
			 * the previous metadata archive */
			struct cn_buf m = { 0 };
			struct cn_pxar_input in;
			cn_filecache_close(r->prev);
			r->prev = NULL;
			rc = fetch(fetch_ctx, &m);
			if (rc == 0) {
				cn_pxar_input_mem(&in, m.data, m.len);
				int64_t n = cn_reuse_rebuild_cache(cache_path, &in, prev);
				rc = n < 0 ? (int)n : cn_filecache_open(cache_path, &r->prev);
			}
			cn_buf_free(&m);
			if (rc == 0 && !r->prev)
				rc = cn_error_set(-CN_E_FORMAT, "rebuilt file cache %s not readable", cache_path);
			r->state = CN_REUSE_CACHE_REBUILT;
		}
	}
	if (rc == 0)
		rc = cn_filecache_writer_begin(cache_path, &r->out);
	if (rc < 0) {
		cn_reuse_free(r);
		return rc;
	}
	r->ops = (struct cn_pxar_reuse){ .lookup = lookup, .inject = inject, .record = record, .ctx = r,
					 .prev_payload_index = r->prev ? prev_payload_index : NULL };
	*out_r = r;
	*ops = &r->ops;
	return 0;
}

enum cn_reuse_cache_state cn_reuse_cache_state(const struct cn_reuse *r)
{
	return r->state;
}

int cn_reuse_commit(struct cn_reuse *r, const struct cn_filecache_ref *snap)
{
	int rc = cn_filecache_writer_commit(r->out, snap);
	r->out = NULL;
	return rc;
}

void cn_reuse_free(struct cn_reuse *r)
{
	if (!r)
		return;
	cn_filecache_writer_abort(r->out);
	cn_filecache_close(r->prev);
	free(r);
}

int64_t cn_reuse_rebuild_cache(const char *path, const struct cn_pxar_input *mpxar,
			       const struct cn_filecache_ref *ref)
{
	struct cn_pxar_decoder *d;
	struct cn_filecache_writer *w;
	const struct cn_pxar_entry *e;
	int64_t files = 0;
	int rc = cn_pxar_decoder_new(mpxar, NULL, &d);
	if (rc < 0)
		return rc;
	cn_pxar_decoder_metadata_only(d);
	if ((rc = cn_filecache_writer_begin(path, &w)) < 0) {
		cn_pxar_decoder_free(d);
		return rc;
	}
	while ((rc = cn_pxar_decoder_next(d, &e)) == 1) {
		if (e->kind != CN_PXAR_KIND_FILE)
			continue;
		if (!e->content_in_payload) {
			rc = cn_error_set(-CN_E_FORMAT, "not a split metadata archive (inline payload at \"%s\")",
					  e->path);
			break;
		}
		/* the entry's arrays are borrowed, never freed here */
		struct cn_pxar_metadata m = {
			.stat = { .mode = e->mode, .flags = e->flags, .uid = e->uid, .gid = e->gid,
				  .mtime_secs = e->mtime_sec, .mtime_nanos = e->mtime_nsec },
			.xattrs = (struct cn_pxar_xattr *)e->xattrs, .n_xattrs = e->xattr_count,
			.acl_users = (struct cn_pxar_acl_entry *)e->acl_users, .n_acl_users = e->acl_user_count,
			.acl_groups = (struct cn_pxar_acl_entry *)e->acl_groups, .n_acl_groups = e->acl_group_count,
			.has_acl_group_obj = e->has_acl_group_obj, .acl_group_obj = e->acl_group_obj,
			.has_acl_default = e->has_acl_default,
			.acl_default = { e->acl_default[0], e->acl_default[1], e->acl_default[2], e->acl_default[3] },
			.acl_default_users = (struct cn_pxar_acl_entry *)e->acl_default_users,
			.n_acl_default_users = e->acl_default_user_count,
			.acl_default_groups = (struct cn_pxar_acl_entry *)e->acl_default_groups,
			.n_acl_default_groups = e->acl_default_group_count,
			.has_fcaps = e->fcaps != NULL, .fcaps = (uint8_t *)e->fcaps, .fcaps_len = e->fcaps_len,
			.has_quota_projid = e->has_quota_projid, .quota_projid = e->quota_projid,
		};
		struct cn_filecache_entry ce = {
			.size = e->file_size, .mtime_sec = e->mtime_sec, .mtime_nsec = e->mtime_nsec,
			.payload_offset = e->content_offset - CN_PXAR_HEADER_SIZE,
		};
		if ((rc = cn_reuse_meta_hash(&m, ce.meta_hash)) < 0 ||
		    (rc = cn_filecache_writer_put(w, e->path, e->path_len, &ce)) < 0)
			break;
		files++;
	}
	cn_pxar_decoder_free(d);
	if (rc < 0) {
		cn_filecache_writer_abort(w);
		return rc;
	}
	rc = cn_filecache_writer_commit(w, ref);
	return rc < 0 ? rc : files;
}
