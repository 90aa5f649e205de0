#include "store/cn_chunkindex.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNKINDEX_VERSION 1
/* Virtual map size: about 600 million chunks; only used pages cost disk. */
#define CHUNKINDEX_MAP_SIZE ((size_t)64 << 30)
#define VALUE_SIZE 12

struct cn_chunkindex {
	MDB_env *env;
	MDB_dbi chunks;
	MDB_dbi meta;
	char path[4096];
};

static int lmdb_err(int rc, const char *what, const struct cn_chunkindex *ci)
{
	int code = rc > 0 && rc < 4096 ? -rc : -EIO;
	return cn_error_set(code, "chunk index %s: %s: %s", ci->path, what, mdb_strerror(rc));
}

static void pack_value(uint8_t v[VALUE_SIZE], uint64_t size, uint32_t flags)
{
	cn_put_le64(v, size);
	cn_put_le32(v + 8, flags);
}

static void prefix_key(uint8_t k[3], uint16_t prefix)
{
	k[0] = 'd';
	k[1] = (uint8_t)(prefix >> 8);
	k[2] = (uint8_t)prefix;
}

static void pack_mtime(uint8_t v[16], const struct timespec *t)
{
	cn_put_le64(v, (uint64_t)t->tv_sec);
	cn_put_le64(v + 8, (uint64_t)t->tv_nsec);
}

/* Opens the env and both databases and checks the version; any failure
 * here is reported as is (the caller decides whether to rebuild). */
static int try_open(struct cn_chunkindex *ci)
{
	int rc = mdb_env_create(&ci->env);
	if (rc)
		return lmdb_err(rc, "create environment", ci);
	mdb_env_set_maxdbs(ci->env, 4);
	mdb_env_set_mapsize(ci->env, CHUNKINDEX_MAP_SIZE);
	rc = mdb_env_open(ci->env, ci->path, MDB_NOSUBDIR | MDB_NOSYNC | MDB_NOTLS, 0644);
	if (rc)
		return lmdb_err(rc, "open", ci);
	MDB_txn *txn;
	rc = mdb_txn_begin(ci->env, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc, "begin", ci);
	if ((rc = mdb_dbi_open(txn, "chunks", MDB_CREATE, &ci->chunks)) ||
	    (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &ci->meta))) {
		mdb_txn_abort(txn);
		return lmdb_err(rc, "open databases", ci);
	}
	MDB_val k = {7, (void *)"version"}, v;
	rc = mdb_get(txn, ci->meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		uint8_t ver[4];
		cn_put_le32(ver, CHUNKINDEX_VERSION);
		v.mv_size = 4;
		v.mv_data = ver;
		rc = mdb_put(txn, ci->meta, &k, &v, 0);
	} else if (rc == 0 && (v.mv_size != 4 || cn_le32(v.mv_data) != CHUNKINDEX_VERSION)) {
		mdb_txn_abort(txn);
		return cn_error_set(-CN_E_FORMAT, "chunk index %s: unknown version", ci->path);
	}
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc, "read version", ci);
	}
	rc = mdb_txn_commit(txn);
	if (rc)
		return lmdb_err(rc, "commit", ci);
	return 0;
}

static void remove_files(const char *path)
{
	char lock[4200];
	unlink(path);
	snprintf(lock, sizeof(lock), "%s-lock", path);
	unlink(lock);
}

int cn_chunkindex_open(const char *path, struct cn_chunkindex **out)
{
	struct cn_chunkindex *ci = calloc(1, sizeof(*ci));
	if (!ci)
		return cn_error_set(-ENOMEM, "out of memory");
	if (strlen(path) >= sizeof(ci->path)) {
		free(ci);
		return cn_error_set(-ENAMETOOLONG, "chunk index path too long");
	}
	strcpy(ci->path, path);
	int r = try_open(ci);
	if (r < 0 && r != -ENOMEM && r != -EACCES && r != -ENOSPC) {
		/* Corrupt, foreign or from another version: it is only a cache. */
		cn_log_warning("chunk index %s unusable (%s); rebuilding it from .chunks/",
			       ci->path, cn_error_message());
		if (ci->env)
			mdb_env_close(ci->env);
		ci->env = NULL;
		remove_files(path);
		r = try_open(ci);
	}
	if (r < 0) {
		if (ci->env)
			mdb_env_close(ci->env);
		free(ci);
		return r;
	}
	*out = ci;
	return 0;
}

void cn_chunkindex_close(struct cn_chunkindex *ci)
{
	if (!ci)
		return;
	mdb_env_close(ci->env);
	free(ci);
}

int cn_chunkindex_has(struct cn_chunkindex *ci, const uint8_t digest[32], uint64_t *size)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ci->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return lmdb_err(rc, "begin read", ci);
	MDB_val k = {32, (void *)digest}, v;
	rc = mdb_get(txn, ci->chunks, &k, &v);
	int r;
	if (rc == MDB_NOTFOUND) {
		r = 0;
	} else if (rc) {
		r = lmdb_err(rc, "get", ci);
	} else if (v.mv_size != VALUE_SIZE) {
		r = cn_error_set(-CN_E_FORMAT, "chunk index %s: bad value size", ci->path);
	} else {
		if (size)
			*size = cn_le64(v.mv_data);
		r = 1;
	}
	mdb_txn_abort(txn);
	return r;
}

static int put_mtime(MDB_txn *txn, struct cn_chunkindex *ci, uint16_t prefix,
		     const struct timespec *mtime)
{
	uint8_t kb[3], vb[16];
	prefix_key(kb, prefix);
	MDB_val k = {3, kb};
	if (!mtime) {
		int rc = mdb_del(txn, ci->meta, &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	pack_mtime(vb, mtime);
	MDB_val v = {16, vb};
	return mdb_put(txn, ci->meta, &k, &v, 0);
}

int cn_chunkindex_put(struct cn_chunkindex *ci, const uint8_t digest[32], uint64_t size,
		      const struct timespec *dir_mtime)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ci->env, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc, "begin write", ci);
	uint8_t vb[VALUE_SIZE];
	pack_value(vb, size, 0);
	MDB_val k = {32, (void *)digest}, v = {VALUE_SIZE, vb};
	rc = mdb_put(txn, ci->chunks, &k, &v, 0);
	if (!rc && dir_mtime)
		rc = put_mtime(txn, ci, (uint16_t)(digest[0] << 8 | digest[1]), dir_mtime);
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc, "put", ci);
	}
	rc = mdb_txn_commit(txn);
	return rc ? lmdb_err(rc, "commit", ci) : 0;
}

int cn_chunkindex_remove(struct cn_chunkindex *ci, uint16_t prefix, const uint8_t (*digests)[32],
			 size_t n, const struct timespec *dir_mtime)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ci->env, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc, "begin write", ci);
	for (size_t i = 0; i < n && !rc; i++) {
		MDB_val k = {32, (void *)digests[i]};
		rc = mdb_del(txn, ci->chunks, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	if (!rc)
		rc = put_mtime(txn, ci, prefix, dir_mtime);
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc, "remove", ci);
	}
	rc = mdb_txn_commit(txn);
	return rc ? lmdb_err(rc, "commit", ci) : 0;
}

int cn_chunkindex_prefix_current(struct cn_chunkindex *ci, uint16_t prefix,
				 const struct timespec *mtime)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ci->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return lmdb_err(rc, "begin read", ci);
	uint8_t kb[3], want[16];
	prefix_key(kb, prefix);
	pack_mtime(want, mtime);
	MDB_val k = {3, kb}, v;
	rc = mdb_get(txn, ci->meta, &k, &v);
	int r;
	if (rc == MDB_NOTFOUND)
		r = 0;
	else if (rc)
		r = lmdb_err(rc, "get", ci);
	else
		r = v.mv_size == 16 && memcmp(v.mv_data, want, 16) == 0;
	mdb_txn_abort(txn);
	return r;
}

/* Deletes the prefix's key range and adds entries, inside txn. */
static int sync_dir(MDB_txn *txn, struct cn_chunkindex *ci, const struct cn_chunkindex_dir *dir)
{
	MDB_cursor *cur;
	int rc = mdb_cursor_open(txn, ci->chunks, &cur);
	if (rc)
		return rc;
	uint8_t start[32] = {(uint8_t)(dir->prefix >> 8), (uint8_t)dir->prefix};
	MDB_val k = {32, start}, v;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (rc == 0) {
		const uint8_t *kd = k.mv_data;
		if (k.mv_size < 2 || kd[0] != start[0] || kd[1] != start[1])
			break;
		rc = mdb_cursor_del(cur, 0);
		if (!rc) {
			k.mv_size = 32;
			k.mv_data = start;
			rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		}
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	for (size_t i = 0; i < dir->n && !rc; i++) {
		uint8_t vb[VALUE_SIZE];
		pack_value(vb, dir->entries[i].size, 0);
		MDB_val ek = {32, (void *)dir->entries[i].digest}, ev = {VALUE_SIZE, vb};
		rc = mdb_put(txn, ci->chunks, &ek, &ev, 0);
	}
	if (!rc)
		rc = put_mtime(txn, ci, dir->prefix, &dir->mtime);
	return rc;
}

int cn_chunkindex_sync_dirs(struct cn_chunkindex *ci, const struct cn_chunkindex_dir *dirs,
			    size_t n)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ci->env, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc, "begin write", ci);
	for (size_t i = 0; i < n && !rc; i++)
		rc = sync_dir(txn, ci, &dirs[i]);
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc, "sync directories", ci);
	}
	rc = mdb_txn_commit(txn);
	return rc ? lmdb_err(rc, "commit", ci) : 0;
}

int cn_chunkindex_add_dirs(struct cn_chunkindex *ci, const struct cn_chunkindex_dir *dirs,
			   size_t n)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(ci->env, NULL, 0, &txn);
	if (rc)
		return lmdb_err(rc, "begin write", ci);
	for (size_t i = 0; i < n && !rc; i++) {
		uint8_t kb[3];
		prefix_key(kb, dirs[i].prefix);
		MDB_val k = {3, kb}, v;
		rc = mdb_get(txn, ci->meta, &k, &v);
		if (rc == MDB_NOTFOUND)
			rc = sync_dir(txn, ci, &dirs[i]);
	}
	if (rc) {
		mdb_txn_abort(txn);
		return lmdb_err(rc, "add directories", ci);
	}
	rc = mdb_txn_commit(txn);
	return rc ? lmdb_err(rc, "commit", ci) : 0;
}

int64_t cn_chunkindex_count(struct cn_chunkindex *ci)
{
	MDB_txn *txn;
	MDB_stat st;
	int rc = mdb_txn_begin(ci->env, NULL, MDB_RDONLY, &txn);
	if (rc)
		return lmdb_err(rc, "begin read", ci);
	rc = mdb_stat(txn, ci->chunks, &st);
	mdb_txn_abort(txn);
	return rc ? lmdb_err(rc, "stat", ci) : (int64_t)st.ms_entries;
}
