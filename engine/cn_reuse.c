/* cn_reuse — file-cache-backed change detection (see cn_reuse.h). */
#include "engine/cn_reuse.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"
#include "pxar/cn_pxar_encoder.h"

/* Metadata hashes, once per file: the digest fetched once, one context
 * and one buffer reused (fetching and allocating per file cost a tenth of
 * a no-change run's CPU). */
struct meta_hasher {
	EVP_MD *sha256;
	EVP_MD_CTX *md;
	struct cn_buf buf;
};

static int meta_hasher_init(struct meta_hasher *h)
{
	if (!(h->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) || !(h->md = EVP_MD_CTX_new()))
		return cn_error_set(-ENOMEM, "out of memory for SHA-256");
	return 0;
}

static void meta_hasher_free(struct meta_hasher *h)
{
	EVP_MD_CTX_free(h->md);
	EVP_MD_free(h->sha256);
	cn_buf_free(&h->buf);
}

/* SHA-256 of the encoded pxar metadata (cn_pxar_metadata_encode). */
static int meta_hash(struct meta_hasher *h, const struct cn_pxar_metadata *m, uint8_t out[32])
{
	unsigned int n = 32;
	h->buf.len = 0;
	int rc = cn_pxar_metadata_encode(m, &h->buf);
	if (rc < 0)
		return rc;
	if (EVP_DigestInit_ex2(h->md, h->sha256, NULL) != 1 || EVP_DigestUpdate(h->md, h->buf.data, h->buf.len) != 1 ||
	    EVP_DigestFinal_ex(h->md, out, &n) != 1)
		return cn_error_set(-CN_E_CRYPT, "SHA-256 failed");
	return 0;
}

struct cn_reuse {
	struct cn_pxar_reuse ops;
	struct cn_filecache *prev;
	struct cn_filecache_writer **out; /* the new caches (one per target) */
	size_t n_out;
	int (*inject)(void *ctx, const struct cn_pxar_reused_chunk *chunks, size_t n);
	void *inject_ctx;
	enum cn_reuse_cache_state state;
	size_t copied;          /* caches committed as copies of prev */
	uint8_t *buf;           /* for content comparison */
	XXH3_state_t *xxh;
	struct meta_hasher mh;
};

#define COMPARE_BUF_SIZE (1u << 20)

static int same_size_mtime(const struct cn_filecache_entry *e, const struct stat *st)
{
	return e->size == (uint64_t)st->st_size && e->mtime_sec == st->st_mtim.tv_sec &&
	       e->mtime_nsec == (uint32_t)st->st_mtim.tv_nsec;
}

static int same_inode_ctime(const struct cn_filecache_entry *e, const struct stat *st)
{
	return (e->flags & CN_FILECACHE_VERIFIED) && e->ino == (uint64_t)st->st_ino &&
	       e->ctime_sec == st->st_ctim.tv_sec && e->ctime_nsec == (uint32_t)st->st_ctim.tv_nsec;
}


struct inode_query {
	const struct stat *st;
	const uint8_t *meta_hash;  /* NULL: content candidates (same size,
				    * mtime, with a content hash) */
};

/* A file moved or renamed since: the same inode, untouched (ctime). */
static int accept_inode(void *ctx, const struct cn_filecache_entry *e)
{
	const struct inode_query *q = ctx;
	if (!same_size_mtime(e, q->st))
		return 0;
	if (!q->meta_hash)
		return (e->flags & CN_FILECACHE_CONTENT_HASH) != 0;
	return same_inode_ctime(e, q->st) && !memcmp(e->meta_hash, q->meta_hash, 32);
}

/* 1 when the file's content (read now from fd) has the entry's content
 * hash, 0 when not (or the file is not the size it was stat'ed with). */
static int content_equal(struct cn_reuse *r, int fd, const struct stat *st,
			 const struct cn_filecache_entry *e, uint64_t *bytes_read)
{
	uint64_t off = 0, size = (uint64_t)st->st_size;
	uint8_t got[16];
	XXH3_128bits_reset(r->xxh);
	for (;;) {
		ssize_t n = pread(fd, r->buf, COMPARE_BUF_SIZE, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return 0; /* the normal read reports it */
		if (n == 0)
			break;
		*bytes_read += (uint64_t)n;
		off += (uint64_t)n;
		if (off > size)
			return 0;
		XXH3_128bits_update(r->xxh, r->buf, (size_t)n);
	}
	if (off != size)
		return 0;
	XXH128_canonicalFromHash((XXH128_canonical_t *)got, XXH3_128bits_digest(r->xxh));
	return !memcmp(got, e->content_hash, 16);
}

/* Fills *mt from entry e; meta_hash: that of the file's metadata now;
 * key: the cache key of the file's path; by_path: e is the entry of that
 * key (not one found by inode). */
static void fill_match(struct cn_pxar_reuse_match *mt, const struct cn_filecache_entry *e,
		       const uint8_t meta_hash[32], const uint8_t key[32], int by_path)
{
	mt->has_cache_key = 1;
	memcpy(mt->cache_key, key, 32);
	mt->has_cache_entry = by_path;
	if (by_path)
		mt->cache_entry = *e;
	mt->payload_offset = e->payload_offset;
	mt->has_content_hash = (e->flags & CN_FILECACHE_CONTENT_HASH) != 0;
	memcpy(mt->content_hash, e->content_hash, 16);
	mt->has_meta_hash = 1;
	memcpy(mt->meta_hash, meta_hash, 32);
}

/* The file at path, not opened, unchanged since the previous snapshot by
 * its stat alone (cn_pxar_reuse.lookup_unopened): the entry of its path
 * must be VERIFIED with the same inode, ctime, size and mtime, and its
 * metadata hash that of m (stat only), i.e. the file had no xattrs, ACLs,
 * file capabilities, flags or project id when a cairn run read it;
 * setting any sets the ctime. */
static int lookup_unopened(void *ctx, const char *path, size_t path_len, const struct stat *st,
			   const struct cn_pxar_metadata *m, struct cn_pxar_reuse_match *match)
{
	struct cn_reuse *r = ctx;
	struct cn_filecache_entry e;
	uint8_t h[32], key[32];
	int rc;
	if (!r->prev)
		return 0;
	if ((rc = cn_filecache_key(r->prev, path, path_len, key)) < 0 ||
	    (rc = cn_filecache_get(r->prev, key, &e)) != 1)
		return rc;
	if (!same_size_mtime(&e, st) || !same_inode_ctime(&e, st))
		return 0;
	if ((rc = meta_hash(&r->mh, m, h)) < 0)
		return rc;
	if (memcmp(h, e.meta_hash, 32))
		return 0;
	fill_match(match, &e, h, key, 1);
	return 1;
}

/* The previous entry for this file: by its path (unchanged since), else
 * by its inode (moved, untouched since), else one of the same size and
 * mtime whose content hash matches what the file holds now (metadata or
 * name changed, data not: the file is read once to compare). */
static int lookup(void *ctx, const char *path, size_t path_len, int fd, const struct stat *st,
		  const struct cn_pxar_metadata *m, struct cn_pxar_reuse_match *match,
		  uint64_t *bytes_read)
{
	struct cn_reuse *r = ctx;
	struct cn_filecache_entry e, cand;
	int have_cand = 0;
	uint8_t h[32], key[32];
	if (!r->prev)
		return 0;
	int rc = cn_filecache_key(r->prev, path, path_len, key);
	int found = rc < 0 ? rc : cn_filecache_get(r->prev, key, &e);
	if (found < 0)
		return found;
	if ((rc = meta_hash(&r->mh, m, h)) < 0)
		return rc;
	if (found == 1 && same_size_mtime(&e, st)) {
		int meta_same = !memcmp(h, e.meta_hash, 32);
		if (meta_same && same_inode_ctime(&e, st)) {
			fill_match(match, &e, h, key, 1);
			return 1;
		}
		if (e.flags & CN_FILECACHE_CONTENT_HASH) {
			cand = e;
			have_cand = 1;
		}
	}
	struct inode_query q = { st, h };
	if ((rc = cn_filecache_lookup_inode(r->prev, (uint64_t)st->st_ino, accept_inode, &q, &e)) != 0) {
		if (rc == 1)
			fill_match(match, &e, h, key, 0);
		return rc;
	}
	if (!have_cand) {
		q.meta_hash = NULL;
		if ((rc = cn_filecache_lookup_inode(r->prev, (uint64_t)st->st_ino, accept_inode, &q, &cand)) < 0)
			return rc;
		have_cand = rc == 1;
	}
	if (have_cand && content_equal(r, fd, st, &cand, bytes_read)) {
		fill_match(match, &cand, h, key, 0);
		return 1;
	}
	return 0;
}

static int record(void *ctx, const char *path, size_t path_len, const struct stat *st,
		  const struct cn_pxar_metadata *m, uint64_t payload_offset,
		  const struct cn_pxar_reuse_match *reused, const uint8_t *content_hash, int changed)
{
	struct cn_reuse *r = ctx;
	struct cn_filecache_entry e = {
		.size = (uint64_t)st->st_size, .mtime_sec = st->st_mtim.tv_sec,
		.mtime_nsec = (uint32_t)st->st_mtim.tv_nsec, .payload_offset = payload_offset,
	};
	if (r->n_out == 0)
		return 0;
	/* a match is proven unchanged (inode + ctime, or content); a file read
	 * now, when it did not change while it was read */
	int verified = reused || !changed;
	if (reused && reused->has_content_hash)
		content_hash = reused->content_hash;
	if (content_hash && verified) {
		e.flags |= CN_FILECACHE_CONTENT_HASH;
		memcpy(e.content_hash, content_hash, 16);
	}
	if (verified) {
		e.flags |= CN_FILECACHE_VERIFIED;
		e.ino = (uint64_t)st->st_ino;
		e.ctime_sec = st->st_ctim.tv_sec;
		e.ctime_nsec = (uint32_t)st->st_ctim.tv_nsec;
	}
	int rc = 0;
	if (reused && reused->has_meta_hash)
		memcpy(e.meta_hash, reused->meta_hash, 32);
	else
		rc = meta_hash(&r->mh, m, e.meta_hash);
	if (rc == 0 && reused && reused->has_cache_key) {
		/* the previous cache's entry of this path, unchanged but for
		 * where the payload now is: the new caches keep its record (a
		 * run that changed nothing then copies the previous cache
		 * rather than writing every record); the path is not hashed
		 * again either way */
		const struct cn_filecache_entry *pe = &reused->cache_entry;
		int same = reused->has_cache_entry && cn_filecache_entry_same_file(&e, pe);
		for (size_t k = 0; rc == 0 && k < r->n_out; k++)
			rc = same ? cn_filecache_writer_keep(r->out[k], reused->cache_key, &e, pe->payload_offset)
				  : cn_filecache_writer_put_key(r->out[k], reused->cache_key, &e);
		return rc;
	}
	for (size_t k = 0; rc == 0 && k < r->n_out; k++)
		rc = cn_filecache_writer_put(r->out[k], path, path_len, &e);
	return rc;
}

static int inject(void *ctx, const struct cn_pxar_reused_chunk *c, size_t n)
{
	struct cn_reuse *r = ctx;
	return r->inject(r->inject_ctx, c, n);
}

int cn_reuse_begin(const char *cache_path, const struct cn_filecache_ref *prev,
		   const struct cn_index *prev_payload_index,
		   int (*inject_fn)(void *ctx, const struct cn_pxar_reused_chunk *chunks, size_t n),
		   void *inject_ctx, struct cn_reuse **out_r, const struct cn_pxar_reuse **ops)
{
	struct cn_reuse *r = calloc(1, sizeof(*r));
	int rc = 0;
	*out_r = NULL;
	if (!r || !(r->buf = malloc(COMPARE_BUF_SIZE)) || !(r->xxh = XXH3_createState()) ||
	    meta_hasher_init(&r->mh) < 0) {
		cn_reuse_free(r);
		return -ENOMEM;
	}
	r->inject = inject_fn;
	r->inject_ctx = inject_ctx;
	r->state = CN_REUSE_CACHE_NONE;
	if (prev && prev_payload_index) {
		rc = cn_filecache_open(cache_path, &r->prev);
		if (rc == 0 && r->prev && cn_filecache_matches(r->prev, prev)) {
			r->state = CN_REUSE_CACHE_VALID;
		} else if (rc == 0) {
			/* absent, damaged, or of another snapshot (pruned since,
			 * another target's, or made from another tree): nothing
			 * it says can be trusted, so every file is read once */
			if (r->prev)
				cn_log_info("file cache %s does not describe the previous snapshot %s: "
					    "every file is read", cache_path, prev->snapshot);
			cn_filecache_close(r->prev);
			r->prev = NULL;
			r->state = CN_REUSE_CACHE_STALE;
		}
	}
	if (rc == 0)
		rc = cn_reuse_add_output(r, cache_path);
	if (rc < 0) {
		cn_reuse_free(r);
		return rc;
	}
	r->ops = (struct cn_pxar_reuse){ .lookup = lookup, .lookup_unopened = lookup_unopened, .inject = inject, .record = record, .ctx = r,
					 .prev_payload_index = r->prev ? prev_payload_index : NULL };
	*out_r = r;
	*ops = &r->ops;
	return 0;
}

enum cn_reuse_cache_state cn_reuse_cache_state(const struct cn_reuse *r)
{
	return r->state;
}

int cn_reuse_add_output(struct cn_reuse *r, const char *cache_path)
{
	struct cn_filecache_writer **o = realloc(r->out, (r->n_out + 1) * sizeof(*o));
	if (!o)
		return -ENOMEM;
	r->out = o;
	int rc = cn_filecache_writer_begin(cache_path, &o[r->n_out]);
	if (rc < 0)
		return rc;
	cn_filecache_writer_set_base(o[r->n_out], r->prev);
	return (int)r->n_out++;
}

int cn_reuse_commit(struct cn_reuse *r, const struct cn_filecache_ref *snap, const int *keep)
{
	int rc = 0;
	for (size_t k = 0; k < r->n_out; k++) {
		struct cn_filecache_writer *w = r->out[k];
		r->out[k] = NULL;
		int rk = keep && !keep[k] ? (cn_filecache_writer_abort(w), 0) : cn_filecache_writer_commit(w, snap);
		if (rc == 0 && rk < 0)
			rc = rk;
		r->copied += rk == 1;
	}
	return rc;
}

size_t cn_reuse_copied(const struct cn_reuse *r)
{
	return r->copied;
}

void cn_reuse_free(struct cn_reuse *r)
{
	if (!r)
		return;
	for (size_t k = 0; k < r->n_out; k++)
		cn_filecache_writer_abort(r->out[k]);
	free(r->out);
	cn_filecache_close(r->prev);
	XXH3_freeState(r->xxh);
	meta_hasher_free(&r->mh);
	free(r->buf);
	free(r);
}
