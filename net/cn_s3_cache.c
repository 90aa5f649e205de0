/* The bucket's chunk listing in LMDB (see cn_s3_cache.h). */
#include "net/cn_s3_cache.h"

#include <errno.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/cn_error.h"
#include "common/cn_log.h"

#define META_KEY "\001meta" /* not 32 bytes long: no digest */

struct cn_s3_cache {
	MDB_env *env;
	MDB_dbi dbi;
	char path[1024];
};

struct meta {
	char generation[40];
	int64_t built;
};

static int mkdirs(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		int r = mkdir(path, 0700);
		*p = '/';
		if (r < 0 && errno != EEXIST)
			return -errno;
	}
	return mkdir(path, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

static int lmdb_error(int rc, const char *what, const struct cn_s3_cache *c)
{
	return cn_error_set(rc == ENOMEM || rc == MDB_MAP_FULL ? -ENOMEM : -EIO,
			    "chunk cache %s: %s: %s", c->path, what, mdb_strerror(rc));
}

static int read_meta(struct cn_s3_cache *c, struct meta *m)
{
	MDB_txn *txn;
	MDB_val k = {sizeof(META_KEY) - 1, (void *)META_KEY}, v;
	int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return lmdb_error(rc, "read", c);
	rc = mdb_get(txn, c->dbi, &k, &v);
	int found = rc == 0 && v.mv_size == sizeof(*m);
	if (found)
		memcpy(m, v.mv_data, sizeof(*m));
	mdb_txn_abort(txn);
	return found;
}

struct rebuild {
	MDB_txn *txn;
	MDB_dbi dbi;
	int rc;
};

static int on_chunk(void *ctx, const char *key, uint64_t size, int is_prefix)
{
	struct rebuild *rb = ctx;
	uint8_t d[32];
	(void)size;
	/* ".chunks/XXXX/<64 hex>" */
	if (is_prefix || strlen(key) != 77 || key[12] != '/' || cn_hex_decode(key + 13, d, 32) < 0)
		return 0;
	MDB_val k = {32, d}, v = {0, (void *)""};
	if ((rb->rc = mdb_put(rb->txn, rb->dbi, &k, &v, 0)) != 0)
		return -EIO;
	return 0;
}

/* Empties the cache and fills it from a LIST of the bucket's chunks. */
static int rebuild(struct cn_s3_cache *c, struct cn_s3 *s3, const struct cn_s3_gc_state *gs)
{
	struct rebuild rb = {.dbi = c->dbi};
	int rc = mdb_txn_begin(c->env, NULL, 0, &rb.txn);
	if (rc)
		return lmdb_error(rc, "write", c);
	if ((rc = mdb_drop(rb.txn, c->dbi, 0))) {
		mdb_txn_abort(rb.txn);
		return lmdb_error(rc, "clear", c);
	}
	struct meta m;
	memset(&m, 0, sizeof(m));
	snprintf(m.generation, sizeof(m.generation), "%s", gs->generation);
	/* the listing starts after this moment: what it misses came later */
	m.built = (int64_t)time(NULL);
	int r = cn_s3_list(s3, ".chunks/", NULL, on_chunk, &rb);
	if (r < 0 || rb.rc) {
		mdb_txn_abort(rb.txn);
		return rb.rc ? lmdb_error(rb.rc, "fill", c) : r;
	}
	MDB_val k = {sizeof(META_KEY) - 1, (void *)META_KEY}, v = {sizeof(m), &m};
	if ((rc = mdb_put(rb.txn, c->dbi, &k, &v, 0))) {
		mdb_txn_abort(rb.txn);
		return lmdb_error(rc, "fill", c);
	}
	return (rc = mdb_txn_commit(rb.txn)) ? lmdb_error(rc, "commit", c) : 0;
}

static int open_env(struct cn_s3_cache *c)
{
	int rc = mdb_env_create(&c->env);
	if (!rc)
		rc = mdb_env_set_mapsize(c->env, (size_t)16 << 30);
	if (!rc)
		rc = mdb_env_open(c->env, c->path, MDB_NOSYNC | MDB_NOTLS, 0600);
	MDB_txn *txn = NULL;
	if (!rc)
		rc = mdb_txn_begin(c->env, NULL, 0, &txn);
	if (!rc)
		rc = mdb_dbi_open(txn, NULL, 0, &c->dbi);
	if (!rc)
		rc = mdb_txn_commit(txn);
	else if (txn)
		mdb_txn_abort(txn);
	if (rc) {
		mdb_env_close(c->env);
		c->env = NULL;
	}
	return rc;
}

int cn_s3_cache_open(struct cn_s3 *s3, const char *dir, const struct cn_s3_gc_state *gs,
		     struct cn_s3_cache **out, int *rebuilt)
{
	char base[900];
	if (dir) {
		snprintf(base, sizeof(base), "%s", dir);
	} else {
		const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
		if (xdg && xdg[0] == '/')
			snprintf(base, sizeof(base), "%s/cairn/s3", xdg);
		else if (home && home[0] == '/')
			snprintf(base, sizeof(base), "%s/.cache/cairn/s3", home);
		else
			return cn_error_set(-ENOENT, "no cache directory ($XDG_CACHE_HOME, $HOME)");
	}
	uint8_t h[32];
	char hex[65];
	const char *name = cn_s3_name(s3);
	if (EVP_Digest(name, strlen(name), h, NULL, EVP_sha256(), NULL) != 1)
		return cn_error_set(-EIO, "SHA-256 failed");
	cn_hex_encode(h, 16, hex);
	struct cn_s3_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return cn_error_set(-ENOMEM, "out of memory");
	snprintf(c->path, sizeof(c->path), "%s/%s", base, hex);
	int r = mkdirs(c->path);
	if (r < 0) {
		free(c);
		return cn_error_sys(r, "chunk cache %s", base);
	}
	int rc = open_env(c);
	if (rc) { /* unreadable: start again */
		char f[1100];
		snprintf(f, sizeof(f), "%s/data.mdb", c->path);
		remove(f);
		snprintf(f, sizeof(f), "%s/lock.mdb", c->path);
		remove(f);
		rc = open_env(c);
	}
	if (rc) {
		r = cn_error_set(-EIO, "chunk cache %s: %s", c->path, mdb_strerror(rc));
		free(c);
		return r;
	}
	struct meta m;
	int have = read_meta(c, &m);
	int stale = have <= 0 || strcmp(m.generation, gs->generation) != 0 ||
		    m.built < (int64_t)time(NULL) - CN_S3_CACHE_MAX_AGE;
	if (rebuilt)
		*rebuilt = stale;
	if (have < 0 || (stale && (r = rebuild(c, s3, gs)) < 0)) {
		cn_s3_cache_close(c);
		return have < 0 ? have : r;
	}
	*out = c;
	return 0;
}

int cn_s3_cache_has(struct cn_s3_cache *c, const uint8_t digest[32])
{
	MDB_txn *txn;
	if (mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn))
		return 0; /* unknown: the caller asks the bucket */
	MDB_val k = {32, (void *)digest}, v;
	int found = mdb_get(txn, c->dbi, &k, &v) == 0;
	mdb_txn_abort(txn);
	return found;
}

int cn_s3_cache_add(struct cn_s3_cache *c, const uint8_t (*digests)[32], size_t n)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
	for (size_t i = 0; !rc && i < n; i++) {
		MDB_val k = {32, (void *)digests[i]}, v = {0, (void *)""};
		rc = mdb_put(txn, c->dbi, &k, &v, 0);
	}
	if (!rc)
		return (rc = mdb_txn_commit(txn)) ? lmdb_error(rc, "commit", c) : 0;
	mdb_txn_abort(txn);
	return lmdb_error(rc, "add", c);
}

void cn_s3_cache_invalidate(struct cn_s3_cache *c)
{
	MDB_txn *txn;
	MDB_val k = {sizeof(META_KEY) - 1, (void *)META_KEY};
	if (mdb_txn_begin(c->env, NULL, 0, &txn))
		return;
	if (mdb_del(txn, c->dbi, &k, NULL) == 0)
		mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
}

const char *cn_s3_cache_path(const struct cn_s3_cache *c)
{
	return c->path;
}

void cn_s3_cache_close(struct cn_s3_cache *c)
{
	if (!c)
		return;
	if (c->env)
		mdb_env_close(c->env);
	free(c);
}
