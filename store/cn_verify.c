#include "store/cn_verify.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "store/cn_blob.h"
#include "store/cn_datastore_internal.h"
#include "store/cn_index.h"
#include "store/cn_manifest.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

struct chunk_ref {
	uint8_t digest[32];
	uint64_t size; /* expected plain size */
};

struct refs {
	struct chunk_ref *v;
	size_t n, cap;
};

static int refs_add(struct refs *r, const uint8_t *digest, uint64_t size)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 256;
		void *p = realloc(r->v, cap * sizeof(*r->v));
		if (!p)
			return cn_error_set(-ENOMEM, "out of memory");
		r->v = p;
		r->cap = cap;
	}
	memcpy(r->v[r->n].digest, digest, 32);
	r->v[r->n++].size = size;
	return 0;
}

static int cmp_ref(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

/* Renames a corrupt chunk "<digest>.<n>.bad" as upstream
 * rename_corrupted_chunk does, and drops it from the LMDB index. */
static void quarantine(struct cn_datastore *ds, const uint8_t digest[32])
{
	char path[PATH_MAX], bad[PATH_MAX + 8];
	uint16_t prefix = cn_ds_prefix(digest);
	cn_datastore_chunk_path(ds, digest, path, sizeof(path));
	if (cn_ds_lock_prefix(ds, prefix) < 0)
		return;
	int in_step = cn_ds_prefix_in_step(ds, prefix);
	int counter = 0;
	for (;;) {
		snprintf(bad, sizeof(bad), "%s.%d.bad", path, counter);
		if (access(bad, F_OK) == 0 && counter < 9)
			counter++;
		else
			break;
	}
	if (rename(path, bad) == 0) {
		cn_log_warning("corrupted chunk renamed to %s", bad);
		struct timespec mt;
		int have = in_step && cn_ds_prefix_mtime(ds, prefix, &mt) == 0;
		const uint8_t (*one)[32] = (const uint8_t (*)[32])digest;
		cn_chunkindex_remove(ds->index, prefix, one, 1, have ? &mt : NULL);
	} else if (errno != ENOENT) {
		cn_log_warning("could not rename corrupted chunk %s: %s", path, strerror(errno));
	}
	cn_ds_unlock_prefix(ds, prefix);
}

static int check_chunk(struct cn_datastore *ds, const struct chunk_ref *ref,
		       const struct cn_crypt_config *crypt, struct cn_blob_ctx *bctx,
		       struct cn_buf *raw, struct cn_verify_result *res)
{
	char hex[65];
	cn_hex_encode(ref->digest, 32, hex);
	raw->len = 0;
	int r = cn_datastore_read_chunk(ds, ref->digest, raw);
	if (r == -ENOENT) {
		cn_log_warning("verify: chunk %s is missing", hex);
		res->missing_chunks++;
		return 1;
	}
	if (r < 0)
		return r;
	/* upstream semantics: CRC always; content, digest and length unless
	 * encrypted without a key */
	int type = cn_blob_verify_chunk(bctx, raw->data, raw->len, crypt, ref->digest, ref->size);
	if (type < 0) {
		cn_log_warning("verify: chunk %s is corrupt: %s", hex, cn_error_message());
		res->bad_chunks++;
		quarantine(ds, ref->digest);
		return 1;
	}
	if (crypt || (type != CN_BLOB_ENCRYPTED && type != CN_BLOB_ENCRYPTED_ZSTD))
		res->bytes += ref->size;
	return 0;
}

/* Checks one manifest file; collects the chunks of indexes. 1 = problem. */
static int check_file(struct cn_datastore *ds, const struct cn_snapshot_id *id,
		      const struct cn_manifest *m, size_t i, struct refs *refs)
{
	const char *name;
	uint64_t size;
	uint8_t csum[32], got[32];
	cn_manifest_file_at(m, i, &name, &size, csum, NULL);
	struct cn_buf b = {0};
	int r = cn_datastore_read_file(ds, id, name, &b);
	if (r < 0) {
		cn_log_warning("verify: %s", cn_error_message());
		return r == -ENOENT || r == -CN_E_PATH ? 1 : r;
	}
	size_t n = strlen(name);
	if (!strcmp(name + n - 5, ".blob")) {
		r = cn_chunk_digest(NULL, b.data, b.len, got);
		if (r == 0 && (b.len != size || memcmp(got, csum, 32)))
			r = cn_error_set(-CN_E_CHECKSUM, "blob %s does not match the manifest", name);
		if (r == 0 && (r = cn_blob_check(b.data, b.len)) > 0)
			r = 0;
	} else {
		struct cn_index *idx;
		r = cn_index_parse(b.data, b.len, &idx);
		if (r == 0) {
			r = cn_index_verify(idx, size, csum);
			for (size_t k = 0; r == 0 && k < cn_index_count(idx); k++) {
				uint64_t s, e;
				uint8_t d[32];
				cn_index_entry(idx, k, &s, &e, d);
				r = refs_add(refs, d, e - s);
			}
			cn_index_free(idx);
		}
		if (r == -ENOMEM) {
			cn_buf_free(&b);
			return r;
		}
	}
	cn_buf_free(&b);
	if (r < 0) {
		cn_log_warning("verify: %s: %s", name, cn_error_message());
		return 1;
	}
	return 0;
}

/* A syntactically valid UPID (upstream pbs-api-types UPID) for
 * verify_state, so PBS can parse what cairn wrote. */
static void make_upid(char *out, size_t size)
{
	char host[64] = "cairn", node[64];
	gethostname(host, sizeof(host) - 1);
	size_t k = 0;
	for (size_t i = 0; host[i] && k < sizeof(node) - 1; i++) {
		char c = host[i];
		if (c == '.')
			break;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')
			node[k++] = c;
	}
	node[k] = '\0';
	if (!k || node[0] == '-' || node[k - 1] == '-')
		strcpy(node, "cairn");
	snprintf(out, size, "UPID:%s:%08X:00000000:00000000:%08llX:verify_snapshot::root@pam:", node,
		 (unsigned)getpid(), (unsigned long long)time(NULL));
}

static int write_verify_state(struct cn_datastore *ds, const struct cn_snapshot_id *id, int ok)
{
	struct cn_buf b = {0}, enc = {0};
	struct cn_manifest *m = NULL;
	char path[PATH_MAX], upid[160];
	int r = cn_datastore_read_file(ds, id, CN_MANIFEST_BLOB_NAME, &b);
	if (r == 0)
		r = cn_manifest_decode(b.data, b.len, NULL, &m);
	if (r == 0) {
		make_upid(upid, sizeof(upid));
		json_t *state = json_pack("{s:s, s:s}", "state", ok ? "ok" : "failed", "upid", upid);
		if (!state || json_object_set_new(cn_manifest_unprotected(m), "verify_state", state) < 0)
			r = cn_error_set(-ENOMEM, "out of memory");
	}
	if (r == 0)
		r = cn_manifest_encode(m, NULL, &enc);
	if (r == 0)
		r = cn_ds_snapshot_dir(ds, id, CN_MANIFEST_BLOB_NAME, path, sizeof(path));
	if (r == 0)
		r = cn_write_file_atomic(path, enc.data, enc.len, 0644,
					 cn_datastore_sync_level(ds) != CN_SYNC_NONE);
	cn_manifest_free(m);
	cn_buf_free(&b);
	cn_buf_free(&enc);
	return r < 0 ? cn_error_prefix(r, "update verify state") : 0;
}

int cn_datastore_verify_snapshot(struct cn_datastore *ds, const struct cn_snapshot_id *id,
				 const struct cn_crypt_config *crypt, int update_manifest,
				 struct cn_verify_result *res)
{
	struct cn_verify_result local;
	struct cn_verify_result *vr = res ? res : &local;
	memset(vr, 0, sizeof(*vr));
	char dir[PATH_MAX];
	int r = cn_ds_snapshot_dir(ds, id, NULL, dir, sizeof(dir));
	if (r < 0)
		return r;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return cn_error_sys(-errno, "open snapshot %s", dir);
	if (flock(dfd, LOCK_SH | LOCK_NB) < 0) {
		close(dfd);
		return cn_error_set(-CN_E_LOCKED, "snapshot %s is locked (being removed?)", dir);
	}
	struct cn_buf b = {0}, raw = {0};
	struct cn_blob_ctx *bctx = NULL;
	struct cn_manifest *m = NULL;
	struct refs refs = {0};
	int problems = 0;
	r = cn_datastore_read_file(ds, id, CN_MANIFEST_BLOB_NAME, &b);
	if (r == 0)
		r = cn_manifest_decode(b.data, b.len, crypt, &m);
	if (r < 0 && r != -ENOMEM) {
		cn_log_warning("verify: %s: manifest: %s", dir, cn_error_message());
		if (r != -ENOENT)
			vr->bad_files++; /* damaged, not missing: corrupt data */
		problems = 1;
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	/* A wrong key would make every good encrypted chunk look corrupt and
	 * get it quarantined: refuse to run with a key the manifest rejects. */
	if (crypt && (r = cn_manifest_check_key(m, crypt)) < 0)
		goto out;
	vr->files = cn_manifest_file_count(m);
	for (size_t i = 0; i < vr->files; i++) {
		r = check_file(ds, id, m, i, &refs);
		if (r < 0)
			goto out;
		vr->bad_files += (uint64_t)r;
	}
	if (refs.n)
		qsort(refs.v, refs.n, sizeof(*refs.v), cmp_ref);
	if ((r = cn_blob_ctx_new(&bctx)) < 0) {
		r = cn_error_set(r, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < refs.n; i++) {
		if (i > 0 && !memcmp(refs.v[i].digest, refs.v[i - 1].digest, 32))
			continue;
		vr->chunks++;
		r = check_chunk(ds, &refs.v[i], crypt, bctx, &raw, vr);
		if (r < 0)
			goto out;
	}
	r = 0;
	problems = (int)(vr->bad_files + vr->bad_chunks + vr->missing_chunks);
out:
	if (r == 0 && update_manifest && m)
		r = write_verify_state(ds, id, problems == 0);
	cn_manifest_free(m);
	cn_buf_free(&b);
	cn_buf_free(&raw);
	cn_blob_ctx_free(bctx);
	free(refs.v);
	close(dfd);
	return r < 0 ? r : problems;
}
