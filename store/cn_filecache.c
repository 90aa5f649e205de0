/* cn_filecache — LMDB file cache for metadata change detection (see
 * cn_filecache.h).
 *
 * Layout: one LMDB environment per file (MDB_NOSUBDIR, MDB_NOLOCK: one
 * user at a time), three named databases:
 *  - "files": key SHA-256(path) (paths can exceed LMDB's key limit), value
 *    the 104-byte record below;
 *  - "inodes": key the inode number (8 bytes LE), duplicate values the
 *    32-byte "files" keys of the VERIFIED entries with that inode (a
 *    record replaced later may leave a stale pair: lookups check the
 *    record's own inode);
 *  - "meta": key "header": magic, version, payload index checksum, entry
 *    count, SHA-256 over all (key, value) pairs of "files" in key order,
 *    (version 3) the offset shift, then the snapshot name. The shift
 *    (modulo 2^64) is added to every record's payload offset: a run that
 *    changed nothing can keep the records of the cache before it although
 *    its payload stream holds them all one start marker further on (its
 *    own start marker comes before the previous stream's first chunk).
 * A cache file is written once (by a writer, into PATH.new) and never
 * modified afterwards, so the digest in the header stays valid; a writer
 * that keeps every record of the previous cache copies its file into
 * PATH.new and writes only a new header there.
 */
#include "store/cn_filecache.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "common/cn_log.h"
#include "common/cn_util.h"

#define MAP_SIZE (1ull << 36)          /* address space only */
#define REC_SIZE 104
#define HDR_MAGIC "CNFCACHE"
#define HDR_VERSION 3u
#define HDR_FIXED_V2 (8 + 4 + 32 + 8 + 32)
#define HDR_FIXED (HDR_FIXED_V2 + 8)
/* Puts are collected, sorted by key and written PUTS_PER_TXN at a time,
 * each batch in one transaction: keys are SHA-256 of paths, so in walk
 * order every put would land on a random page, dirtying (in memory) and
 * half-filling most of the tree; in key order LMDB appends (MDB_APPEND)
 * to full pages, or at least walks the tree in order. Measured on
 * 100,000 files (no-change metadata-mode runs): see the commits. A
 * batch is PUTS_PER_TXN * sizeof(struct pending) = 17 MB at most (pages
 * touched as it fills), so a tree of up to 131,072 files is appended in
 * one: a second batch's keys fall between the first's, and inserting
 * them copies and splits the first's pages (a cache of 100,000 files
 * took 40 MB in two batches of 50,000, 20 MB in one). */
#define PUTS_PER_TXN 131072

/* SHA-256 of short inputs: the digest fetched once and one context
 * reused (EVP_Digest with EVP_sha256() fetches and allocates per call). */
struct hasher {
	EVP_MD *md;
	EVP_MD_CTX *ctx;
};

static int hasher_init(struct hasher *h)
{
	h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
	h->ctx = EVP_MD_CTX_new();
	return h->md && h->ctx ? 0 : -ENOMEM;
}

static void hasher_free(struct hasher *h)
{
	EVP_MD_CTX_free(h->ctx);
	EVP_MD_free(h->md);
	h->ctx = NULL;
	h->md = NULL;
}

static int hasher_digest(struct hasher *h, const void *a, size_t al, uint8_t out[32])
{
	unsigned int n = 32;
	return EVP_DigestInit_ex2(h->ctx, h->md, NULL) == 1 && EVP_DigestUpdate(h->ctx, a, al) == 1 &&
			       EVP_DigestFinal_ex(h->ctx, out, &n) == 1
		       ? 0
		       : -ENOMEM;
}

/* A put waiting for its batch (struct cn_filecache_writer), in the
 * order of the puts: of the puts of one path, the last wins. */
struct pending {
	uint8_t key[32];
	uint8_t rec[REC_SIZE];
};

struct cn_filecache {
	struct hasher h;
	int fd;          /* the file, for copying it (a writer's keep) */
	uint64_t lmdb_size; /* its bytes before the trailer */
	uint8_t digest[32]; /* the header's digest of all records */
	uint64_t shift;     /* the header's offset shift */
	/* An open-addressing table of the "files" keys (pointers into the
	 * map, each followed by its record, valid while txn is open), built
	 * by the scan at load: lookups by path probe it instead of searching
	 * LMDB's tree, whose random-key descents missed the CPU caches at
	 * every level (an eighth of a no-change run's CPU). NULL: use LMDB. */
	const uint8_t **tab;
	size_t tab_mask;
	uint64_t key_sum[4]; /* lane sums of all keys (struct key_sum) */
	MDB_env *env;
	MDB_txn *txn;    /* long read transaction */
	MDB_dbi files, inodes;
	char *snapshot;
	uint8_t payload_csum[32];
	uint64_t count;
};

struct cn_filecache_writer {
	struct hasher h;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi files, meta, inodes;
	struct pending *pend;  /* the current batch, n_pend of PUTS_PER_TXN */
	size_t n_pend;
	uint64_t n_put;        /* puts so far (not counting keeps) */
	struct cn_filecache *base; /* borrowed: what keeps refer to */
	uint8_t (*kept)[32];   /* keys of base's records kept, n_kept */
	size_t n_kept, cap_kept;
	uint64_t key_sum[4];   /* lane sums of the kept keys */
	int have_shift;        /* shift holds the first keep's offset shift */
	uint64_t shift;        /* new payload offset - base's, of every keep */
	char *path, *tmp;
};

static int mdb_err(int rc, const char *what)
{
	return cn_error_set(rc == ENOMEM ? -ENOMEM : (rc == MDB_CORRUPTED || rc == MDB_INVALID || rc == MDB_PAGE_NOTFOUND || rc == MDB_VERSION_MISMATCH) ? -CN_E_FORMAT : -EIO, "file cache: %s: %s", what,
			    mdb_strerror(rc));
}

static int sha256(const void *a, size_t al, uint8_t out[32])
{
	unsigned int n = 32;
	return EVP_Digest(a, al, out, &n, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
}

int cn_filecache_path(const char *dir, const char *target_id, const char *archive, char *out,
		      size_t len)
{
	size_t tl = strlen(target_id), al = strlen(archive);
	uint8_t *buf = malloc(tl + 1 + al), h[32];
	char hex[65];
	if (!buf)
		return -ENOMEM;
	memcpy(buf, target_id, tl);
	buf[tl] = 0;
	memcpy(buf + tl + 1, archive, al);
	int rc = sha256(buf, tl + 1 + al, h);
	free(buf);
	if (rc < 0)
		return rc;
	cn_hex_encode(h, 32, hex);
	if ((size_t)snprintf(out, len, "%s/%s.lmdb", dir, hex) >= len)
		return cn_error_set(-ENAMETOOLONG, "file cache path too long");
	return 0;
}

static void rec_encode(const struct cn_filecache_entry *e, uint8_t r[REC_SIZE])
{
	cn_put_le32(r, e->flags);
	cn_put_le32(r + 4, e->mtime_nsec);
	cn_put_le64(r + 8, e->ino);
	cn_put_le64(r + 16, e->size);
	cn_put_le64(r + 24, (uint64_t)e->mtime_sec);
	cn_put_le64(r + 32, (uint64_t)e->ctime_sec);
	cn_put_le32(r + 40, e->ctime_nsec);
	cn_put_le32(r + 44, 0);
	memcpy(r + 48, e->meta_hash, 32);
	cn_put_le64(r + 80, e->payload_offset);
	memcpy(r + 88, e->content_hash, 16);
}

static void rec_decode(const uint8_t r[REC_SIZE], struct cn_filecache_entry *e)
{
	e->flags = cn_le32(r);
	e->mtime_nsec = cn_le32(r + 4);
	e->ino = cn_le64(r + 8);
	e->size = cn_le64(r + 16);
	e->mtime_sec = (int64_t)cn_le64(r + 24);
	e->ctime_sec = (int64_t)cn_le64(r + 32);
	e->ctime_nsec = cn_le32(r + 40);
	memcpy(e->meta_hash, r + 48, 32);
	e->payload_offset = cn_le64(r + 80);
	memcpy(e->content_hash, r + 88, 16);
}

static int env_open(const char *path, unsigned flags, MDB_env **out)
{
	MDB_env *env;
	int rc = mdb_env_create(&env);
	if (rc)
		return mdb_err(rc, "create environment");
	if ((rc = mdb_env_set_maxdbs(env, 3)) || (rc = mdb_env_set_mapsize(env, MAP_SIZE)) ||
	    (rc = mdb_env_open(env, path, flags | MDB_NOSUBDIR | MDB_NOLOCK | MDB_NOTLS, 0600))) {
		mdb_env_close(env);
		return mdb_err(rc, path);
	}
	*out = env;
	return 0;
}

/* Adds a 32-byte key to sums, as four 64-bit lanes modulo 2^64. Equal
 * counts and lane sums show that a list of keys, all taken from a cache,
 * names each of its keys once: keys are SHA-256 of paths, and a key
 * listed twice makes up for one missing only if both are equal. */
static void key_sum_add(uint64_t sum[4], const uint8_t key[32])
{
	for (int i = 0; i < 4; i++)
		sum[i] += cn_le64(key + 8 * i);
}

/* Adds key (followed by its record in the map) to fc's table; drops the
 * table when the record does not follow the key (LMDB keeps a value
 * after its key in a leaf node unless it is too big for one) or the
 * table is half full (more records than the header said). */
static void tab_insert(struct cn_filecache *fc, const uint8_t *key, const uint8_t *rec, uint64_t n)
{
	if (rec != key + 32 || n > fc->tab_mask / 2) {
		free(fc->tab);
		fc->tab = NULL;
		return;
	}
	size_t i = (size_t)cn_le64(key) & fc->tab_mask;
	while (fc->tab[i])
		i = (i + 1) & fc->tab_mask;
	fc->tab[i] = key;
}

/* Digest over all records in key order, their number, and (key_sum not
 * NULL, zeroed) the lane sums of their keys; with ix, its table of keys
 * is filled (when it has one). */
static int digest_files(MDB_txn *txn, MDB_dbi dbi, uint8_t out[32], uint64_t *count,
			uint64_t key_sum[4], struct cn_filecache *ix)
{
	MDB_cursor *c;
	MDB_val k, v;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int rc = mdb_cursor_open(txn, dbi, &c), ret = 0;
	if (!md || rc) {
		EVP_MD_CTX_free(md);
		return md ? mdb_err(rc, "cursor") : -ENOMEM;
	}
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	*count = 0;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size != 32 || v.mv_size != REC_SIZE) {
			ret = cn_error_set(-CN_E_FORMAT, "file cache: record of wrong size");
			break;
		}
		EVP_DigestUpdate(md, k.mv_data, 32);
		EVP_DigestUpdate(md, v.mv_data, REC_SIZE);
		if (key_sum)
			key_sum_add(key_sum, k.mv_data);
		if (ix && ix->tab)
			tab_insert(ix, k.mv_data, v.mv_data, *count);
		(*count)++;
	}
	if (ret == 0 && rc != MDB_NOTFOUND)
		ret = mdb_err(rc, "scan");
	unsigned int n = 32;
	EVP_DigestFinal_ex(md, out, &n);
	EVP_MD_CTX_free(md);
	mdb_cursor_close(c);
	return ret;
}

/* Reads and checks the header and the records; 0, or -CN_E_FORMAT when
 * the cache is not valid, or another negative code. */
static int load(struct cn_filecache *fc)
{
	MDB_dbi meta;
	MDB_val k = { 6, "header" }, v;
	uint8_t digest[32];
	uint64_t count;
	int rc = mdb_txn_begin(fc->env, NULL, MDB_RDONLY, &fc->txn);
	if (rc)
		return mdb_err(rc, "begin read");
	if ((rc = mdb_dbi_open(fc->txn, "meta", 0, &meta)) || (rc = mdb_dbi_open(fc->txn, "files", 0, &fc->files)))
		return rc == MDB_NOTFOUND ? cn_error_set(-CN_E_FORMAT, "file cache: no header")
					  : mdb_err(rc, "open databases");
	if ((rc = mdb_get(fc->txn, meta, &k, &v)))
		return rc == MDB_NOTFOUND ? cn_error_set(-CN_E_FORMAT, "file cache: no header")
					  : mdb_err(rc, "read header");
	const uint8_t *h = v.mv_data;
	if (v.mv_size < HDR_FIXED_V2 || memcmp(h, HDR_MAGIC, 8))
		return cn_error_set(-CN_E_FORMAT, "file cache: bad header");
	/* version 2 (no shift) is read as well, so an upgrade keeps its cache */
	uint32_t ver = cn_le32(h + 8);
	size_t fixed = ver == 2 ? HDR_FIXED_V2 : HDR_FIXED;
	if ((ver != 2 && ver != HDR_VERSION) || v.mv_size < fixed)
		return ver != 2 && ver != HDR_VERSION
			       ? cn_error_set(-CN_E_FORMAT, "file cache: format version %u, this cairn writes %u",
					      ver, HDR_VERSION)
			       : cn_error_set(-CN_E_FORMAT, "file cache: bad header");
	fc->shift = ver == 2 ? 0 : cn_le64(h + HDR_FIXED_V2);
	if ((rc = mdb_dbi_open(fc->txn, "inodes", MDB_DUPSORT | MDB_DUPFIXED, &fc->inodes)))
		return rc == MDB_NOTFOUND ? cn_error_set(-CN_E_FORMAT, "file cache: no inode map")
					  : mdb_err(rc, "open databases");
	memcpy(fc->payload_csum, h + 12, 32);
	fc->count = cn_le64(h + 44);
	size_t sl = v.mv_size - fixed;
	if (memchr(h + fixed, 0, sl) || !(fc->snapshot = malloc(sl + 1)))
		return memchr(h + fixed, 0, sl) ? cn_error_set(-CN_E_FORMAT, "file cache: bad header") : -ENOMEM;
	memcpy(fc->snapshot, h + fixed, sl);
	fc->snapshot[sl] = 0;
	/* the table: twice the header's count of slots, a power of two */
	size_t slots = 16;
	while (slots < 2 * fc->count && slots < ((size_t)1 << 40))
		slots <<= 1;
	if (slots >= 2 * fc->count && (fc->tab = calloc(slots, sizeof(*fc->tab))))
		fc->tab_mask = slots - 1;
	if ((rc = digest_files(fc->txn, fc->files, digest, &count, fc->key_sum, fc)) < 0)
		return rc;
	if (count != fc->count || memcmp(digest, h + 52, 32))
		return cn_error_set(-CN_E_FORMAT, "file cache: records do not match the header digest");
	memcpy(fc->digest, digest, 32);
	return 0;
}

/* The file ends with a trailer: SHA-256 of everything before it, then
 * TRAILER_MAGIC. LMDB ignores bytes after its last page. Checking it
 * before LMDB maps the file keeps damaged pages (which could point
 * anywhere, and fault) away from LMDB. */
#define TRAILER_MAGIC "CNFCSUM1"
#define TRAILER_SIZE (32 + 8)

static int file_digest(int fd, uint64_t len, uint8_t out[32])
{
	static const size_t bs = 1u << 16;
	uint8_t *b = malloc(bs);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int rc = (b && md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) ? 0 : -ENOMEM;
	for (uint64_t off = 0; rc == 0 && off < len;) {
		size_t n = len - off < bs ? (size_t)(len - off) : bs;
		if ((rc = cn_read_full(fd, b, n)) == 0)
			EVP_DigestUpdate(md, b, n);
		off += n;
	}
	unsigned int dl = 32;
	if (rc == 0)
		EVP_DigestFinal_ex(md, out, &dl);
	EVP_MD_CTX_free(md);
	free(b);
	return rc;
}

/* Checks the trailer of the file open as fd (size bytes). */
static int check_trailer(int fd, uint64_t size)
{
	uint8_t want[TRAILER_SIZE], got[32];
	if (size < TRAILER_SIZE)
		return cn_error_set(-CN_E_FORMAT, "file cache: too short");
	int rc = file_digest(fd, size - TRAILER_SIZE, got);
	if (rc == 0)
		rc = cn_read_full(fd, want, TRAILER_SIZE);
	if (rc == -CN_E_TRUNCATED || (rc == 0 && (memcmp(want + 32, TRAILER_MAGIC, 8) || memcmp(want, got, 32))))
		return cn_error_set(-CN_E_FORMAT, "file cache: checksum mismatch");
	return rc;
}

static int append_trailer(const char *path)
{
	struct stat st;
	uint8_t t[TRAILER_SIZE];
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return cn_error_sys(-errno, "open %s", path);
	int rc = fstat(fd, &st) < 0 ? cn_error_sys(-errno, "stat %s", path) : 0;
	if (rc == 0)
		rc = file_digest(fd, (uint64_t)st.st_size, t);
	if (rc == 0) {
		memcpy(t + 32, TRAILER_MAGIC, 8);
		if (pwrite(fd, t, sizeof(t), st.st_size) != (ssize_t)sizeof(t) || fsync(fd) < 0)
			rc = cn_error_sys(-errno, "write %s", path);
	}
	close(fd);
	return rc;
}

int cn_filecache_open(const char *path, struct cn_filecache **out)
{
	struct stat st;
	*out = NULL;
	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return cn_error_sys(-errno, "file cache %s", path);
	}
	struct cn_filecache *fc = calloc(1, sizeof(*fc));
	if (!fc)
		return -ENOMEM;
	fc->fd = -1;
	if (hasher_init(&fc->h) < 0) {
		cn_filecache_close(fc);
		return -ENOMEM;
	}
	/* the size and checksum are those of the file open as fd, which a
	 * writer's keep copies (a rename over path does not change it) */
	int rc = (fc->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 ? cn_error_sys(-errno, "open %s", path)
			 : fstat(fc->fd, &st) < 0 ? cn_error_sys(-errno, "stat %s", path) : 0;
	if (rc == 0)
		rc = check_trailer(fc->fd, (uint64_t)st.st_size);
	fc->lmdb_size = (uint64_t)st.st_size - TRAILER_SIZE;
	if (rc == 0)
		rc = env_open(path, MDB_RDONLY, &fc->env);
	if (rc == 0) {
		/* the map is read through mmap: pages beyond the end of a
		 * truncated file would fault (SIGBUS), so check first */
		MDB_envinfo info;
		MDB_stat ms;
		if (mdb_env_info(fc->env, &info) || mdb_env_stat(fc->env, &ms) ||
		    ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize > (uint64_t)st.st_size)
			rc = cn_error_set(-CN_E_FORMAT, "file cache: file shorter than its pages");
	}
	if (rc == 0)
		rc = load(fc);
	if (rc == 0) {
		*out = fc;
		return 0;
	}
	cn_filecache_close(fc);
	if (rc == -ENOMEM)
		return rc;
	/* not usable: it is only an accelerator, so drop it */
	cn_log_warning("file cache %s is not valid (%s), removing it", path, cn_error_message());
	if (unlink(path) < 0 && errno != ENOENT)
		return cn_error_sys(-errno, "remove damaged file cache %s", path);
	return 0;
}

void cn_filecache_close(struct cn_filecache *fc)
{
	if (!fc)
		return;
	if (fc->txn)
		mdb_txn_abort(fc->txn);
	if (fc->env)
		mdb_env_close(fc->env);
	if (fc->fd >= 0)
		close(fc->fd);
	free(fc->tab);
	hasher_free(&fc->h);
	free(fc->snapshot);
	free(fc);
}

int cn_filecache_matches(const struct cn_filecache *fc, const struct cn_filecache_ref *prev)
{
	return fc && prev && prev->snapshot && !strcmp(fc->snapshot, prev->snapshot) &&
	       !memcmp(fc->payload_csum, prev->payload_csum, 32);
}

uint64_t cn_filecache_count(const struct cn_filecache *fc)
{
	return fc ? fc->count : 0;
}

/* The record under a 32-byte key: 1, 0 when absent, or negative. */
static int get_record(struct cn_filecache *fc, const uint8_t key[32], struct cn_filecache_entry *e)
{
	if (fc->tab) {
		for (size_t i = (size_t)cn_le64(key) & fc->tab_mask; fc->tab[i]; i = (i + 1) & fc->tab_mask) {
			if (!memcmp(fc->tab[i], key, 32)) {
				rec_decode(fc->tab[i] + 32, e);
				e->payload_offset += fc->shift;
				return 1;
			}
		}
		return 0;
	}
	MDB_val k = { 32, (void *)key }, v;
	int rc = mdb_get(fc->txn, fc->files, &k, &v);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return mdb_err(rc, "lookup");
	if (v.mv_size != REC_SIZE)
		return cn_error_set(-CN_E_FORMAT, "file cache: record of wrong size");
	rec_decode(v.mv_data, e);
	e->payload_offset += fc->shift;
	return 1;
}

int cn_filecache_lookup(struct cn_filecache *fc, const char *path, size_t len,
			struct cn_filecache_entry *e)
{
	uint8_t key[32];
	int rc = hasher_digest(&fc->h, path, len, key);
	return rc < 0 ? rc : get_record(fc, key, e);
}

int cn_filecache_key(struct cn_filecache *fc, const char *path, size_t len, uint8_t key[32])
{
	return hasher_digest(&fc->h, path, len, key);
}

int cn_filecache_get(struct cn_filecache *fc, const uint8_t key[32], struct cn_filecache_entry *e)
{
	return get_record(fc, key, e);
}

int cn_filecache_entry_equal(const struct cn_filecache_entry *a, const struct cn_filecache_entry *b)
{
	return cn_filecache_entry_same_file(a, b) && a->payload_offset == b->payload_offset;
}

int cn_filecache_entry_same_file(const struct cn_filecache_entry *a, const struct cn_filecache_entry *b)
{
	struct cn_filecache_entry a0 = *a;
	uint8_t ra[REC_SIZE], rb[REC_SIZE];
	a0.payload_offset = b->payload_offset;
	rec_encode(&a0, ra);
	rec_encode(b, rb);
	return !memcmp(ra, rb, REC_SIZE);
}

int cn_filecache_lookup_inode(struct cn_filecache *fc, uint64_t ino,
			      int (*accept)(void *ctx, const struct cn_filecache_entry *e), void *ctx,
			      struct cn_filecache_entry *e)
{
	uint8_t ik[8];
	MDB_cursor *c;
	MDB_val k = { 8, ik }, v;
	cn_put_le64(ik, ino);
	int rc = mdb_cursor_open(fc->txn, fc->inodes, &c), found = 0;
	if (rc)
		return mdb_err(rc, "cursor");
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY); rc == 0 && !found;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_DUP)) {
		if (v.mv_size != 32) {
			found = cn_error_set(-CN_E_FORMAT, "file cache: inode record of wrong size");
			break;
		}
		int r = get_record(fc, v.mv_data, e);
		if (r < 0) {
			found = r;
			break;
		}
		found = r == 1 && (e->flags & CN_FILECACHE_VERIFIED) && e->ino == ino && accept(ctx, e);
	}
	if (found == 0 && rc != 0 && rc != MDB_NOTFOUND)
		found = mdb_err(rc, "inode lookup");
	mdb_cursor_close(c);
	return found;
}

int cn_filecache_writer_begin(const char *path, struct cn_filecache_writer **out)
{
	struct cn_filecache_writer *w = calloc(1, sizeof(*w));
	size_t pl = strlen(path);
	*out = NULL;
	if (!w || hasher_init(&w->h) < 0 || !(w->path = strdup(path)) || !(w->tmp = malloc(pl + 5))) {
		cn_filecache_writer_abort(w);
		return -ENOMEM;
	}
	memcpy(w->tmp, path, pl);
	memcpy(w->tmp + pl, ".new", 5);
	if (unlink(w->tmp) < 0 && errno != ENOENT) {
		int rc = cn_error_sys(-errno, "remove %s", w->tmp);
		cn_filecache_writer_abort(w);
		return rc;
	}
	int rc = env_open(w->tmp, MDB_NOSYNC, &w->env);
	if (rc == 0 && (rc = mdb_txn_begin(w->env, NULL, 0, &w->txn)) == 0 &&
	    (rc = mdb_dbi_open(w->txn, "files", MDB_CREATE, &w->files)) == 0 &&
	    (rc = mdb_dbi_open(w->txn, "inodes", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED, &w->inodes)) == 0)
		rc = mdb_dbi_open(w->txn, "meta", MDB_CREATE, &w->meta);
	if (rc > 0)
		rc = mdb_err(rc, "begin write");
	if (rc < 0) {
		cn_filecache_writer_abort(w);
		return rc;
	}
	*out = w;
	return 0;
}

/* Orders the batch's indexes by key, then by put order (qsort_r; the
 * indexes are sorted, not the 136-byte entries, which glibc's merge
 * sort would copy at every level). */
static int cmp_pending(const void *a, const void *b, void *ctx)
{
	const struct pending *p = ctx;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	int c = memcmp(p[x].key, p[y].key, 32);
	return c ? c : (x > y) - (x < y);
}

/* An inode pair of the batch: the inode number's key bytes, the path key. */
struct ino_pair {
	uint8_t ino[8];
	uint8_t key[32];
};

static int cmp_ino_pair(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct ino_pair));
}

/* Puts k/v with flags (MDB_APPEND or MDB_APPENDDUP), falling back to an
 * ordinary put (with plain_flags) where the key does not sort after the
 * database's last: a later batch, or a path put again. */
static int put_ordered(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags,
		       unsigned plain_flags)
{
	int rc = mdb_put(txn, dbi, k, v, flags);
	if (rc == MDB_KEYEXIST)
		rc = mdb_put(txn, dbi, k, v, plain_flags);
	return rc;
}

/* mdb_err for a write of w's new file: LMDB reports a short write as EIO,
 * which on a disk with no block or inode left says too little. */
static int write_err(const struct cn_filecache_writer *w, int rc, const char *what)
{
	struct statvfs vfs;
	if (rc == EIO && statvfs(w->tmp, &vfs) == 0 && (vfs.f_bavail == 0 || vfs.f_favail == 0)) {
		const char *slash = strrchr(w->tmp, '/');
		int dir = slash ? (int)(slash - w->tmp) : 1;
		return cn_error_set(-ENOSPC, "file cache: %s: no space left on the disk of %.*s",
				    what, dir, slash ? w->tmp : ".");
	}
	return mdb_err(rc, what);
}

/* Writes the batch in key order, in the current transaction, and commits
 * it; the next transaction is begun unless last. */
static int flush_batch(struct cn_filecache_writer *w, int last)
{
	const struct pending *p = w->pend;
	size_t n = w->n_pend, ni = 0;
	struct ino_pair *ip = NULL;
	uint32_t *ord = NULL;
	int rc = 0;
	if (n) {
		if (!(ip = malloc(n * sizeof(*ip))) || !(ord = malloc(n * sizeof(*ord)))) {
			free(ip);
			return -ENOMEM;
		}
		for (size_t i = 0; i < n; i++)
			ord[i] = (uint32_t)i;
		qsort_r(ord, n, sizeof(*ord), cmp_pending, w->pend);
	}
	for (size_t j = 0; j < n && rc == 0; j++) {
		const struct pending *e = &p[ord[j]];
		/* of the puts of one path, the last wins (as replacing puts
		 * did); the inode pairs of the earlier ones stay, as they did */
		if (cn_le32(e->rec) & CN_FILECACHE_VERIFIED) {
			memcpy(ip[ni].ino, e->rec + 8, 8);
			memcpy(ip[ni].key, e->key, 32);
			ni++;
		}
		if (j + 1 < n && !memcmp(e->key, p[ord[j + 1]].key, 32))
			continue;
		MDB_val k = { 32, (void *)e->key }, v = { REC_SIZE, (void *)e->rec };
		if ((rc = put_ordered(w->txn, w->files, &k, &v, MDB_APPEND, 0)))
			rc = mdb_err(rc, "put");
	}
	if (ni > 1)
		qsort(ip, ni, sizeof(*ip), cmp_ino_pair);
	for (size_t i = 0; i < ni && rc == 0; i++) {
		if (i > 0 && !memcmp(&ip[i], &ip[i - 1], sizeof(*ip)))
			continue;
		MDB_val k = { 8, ip[i].ino }, v = { 32, ip[i].key };
		rc = put_ordered(w->txn, w->inodes, &k, &v, MDB_APPENDDUP, MDB_NODUPDATA);
		if (rc == MDB_KEYEXIST)
			rc = 0;
		else if (rc)
			rc = mdb_err(rc, "put inode");
	}
	free(ip);
	free(ord);
	w->n_pend = 0;
	if (rc || last)
		return rc;
	/* bound the transaction's dirty pages; the cache is not valid
	 * before its header is written anyway */
	rc = mdb_txn_commit(w->txn);
	w->txn = NULL;
	if (rc || (rc = mdb_txn_begin(w->env, NULL, 0, &w->txn)))
		return write_err(w, rc, "commit");
	return 0;
}

/* The next pending put, or NULL (out of memory). */
static struct pending *next_pending(struct cn_filecache_writer *w)
{
	if (!w->pend && !(w->pend = malloc(PUTS_PER_TXN * sizeof(*w->pend))))
		return NULL;
	return &w->pend[w->n_pend];
}

/* Counts the put just filled in; a full batch is written. */
static int pending_done(struct cn_filecache_writer *w)
{
	if (++w->n_pend == PUTS_PER_TXN)
		return flush_batch(w, 0);
	return 0;
}

int cn_filecache_writer_put(struct cn_filecache_writer *w, const char *path, size_t len,
			    const struct cn_filecache_entry *e)
{
	uint8_t key[32];
	int rc = hasher_digest(&w->h, path, len, key);
	return rc < 0 ? rc : cn_filecache_writer_put_key(w, key, e);
}

int cn_filecache_writer_put_key(struct cn_filecache_writer *w, const uint8_t key[32],
				const struct cn_filecache_entry *e)
{
	struct pending *p = next_pending(w);
	if (!p)
		return -ENOMEM;
	memcpy(p->key, key, 32);
	rec_encode(e, p->rec);
	w->n_put++;
	return pending_done(w);
}

void cn_filecache_writer_set_base(struct cn_filecache_writer *w, struct cn_filecache *base)
{
	w->base = base;
}

int cn_filecache_writer_keep(struct cn_filecache_writer *w, const uint8_t key[32],
			     const struct cn_filecache_entry *e, uint64_t base_offset)
{
	uint64_t shift = e->payload_offset - base_offset;
	if (!w->have_shift) {
		w->shift = shift;
		w->have_shift = 1;
	}
	if (shift != w->shift)
		return cn_filecache_writer_put_key(w, key, e);
	if (w->n_kept == w->cap_kept) {
		size_t cap = w->cap_kept ? 2 * w->cap_kept : 4096;
		uint8_t(*k)[32] = realloc(w->kept, cap * sizeof(*k));
		if (!k)
			return -ENOMEM;
		w->kept = k;
		w->cap_kept = cap;
	}
	memcpy(w->kept[w->n_kept++], key, 32);
	key_sum_add(w->key_sum, key);
	return 0;
}

/* Whether the kept keys are exactly the base's and nothing was put: the
 * new cache's records are then the base's (key_sum_add says why equal
 * counts and sums are enough). */
static int keeps_whole_base(const struct cn_filecache_writer *w)
{
	return w->base && w->n_put == 0 && w->n_kept == w->base->count &&
	       !memcmp(w->key_sum, w->base->key_sum, sizeof(w->key_sum));
}

/* Adds the base's records of the kept keys to the puts, their payload
 * offsets moved as the keeps' were (the new cache's shift is 0). */
static int put_kept(struct cn_filecache_writer *w)
{
	uint64_t shift = w->n_kept ? w->base->shift + w->shift : 0;
	int rc = 0;
	for (size_t i = 0; i < w->n_kept && rc == 0; i++) {
		MDB_val k = { 32, w->kept[i] }, v;
		struct pending *p = next_pending(w);
		if (!p)
			return -ENOMEM;
		if ((rc = mdb_get(w->base->txn, w->base->files, &k, &v)))
			return rc == MDB_NOTFOUND ? cn_error_set(-EINVAL, "file cache: kept record absent")
						  : mdb_err(rc, "lookup");
		if (v.mv_size != REC_SIZE)
			return cn_error_set(-CN_E_FORMAT, "file cache: record of wrong size");
		memcpy(p->key, w->kept[i], 32);
		memcpy(p->rec, v.mv_data, REC_SIZE);
		cn_put_le64(p->rec + 80, cn_le64(p->rec + 80) + shift);
		rc = pending_done(w);
	}
	return rc;
}

/* Copies the bytes of fd_in's first len bytes into fd_out. */
static int copy_fd(int fd_in, int fd_out, uint64_t len)
{
	loff_t off_in = 0, off_out = 0;
	while ((uint64_t)off_in < len) {
		ssize_t n = copy_file_range(fd_in, &off_in, fd_out, &off_out, (size_t)(len - (uint64_t)off_in), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0)
			continue;
		if (n == 0)
			return -CN_E_TRUNCATED;
		if (errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP && errno != EINVAL)
			return -errno;
		/* not between these file systems: read and write */
		static const size_t bs = 1u << 16;
		uint8_t *b = malloc(bs);
		int rc = b ? 0 : -ENOMEM;
		while (rc == 0 && (uint64_t)off_in < len) {
			size_t want = len - (uint64_t)off_in < bs ? (size_t)(len - (uint64_t)off_in) : bs;
			ssize_t r = pread(fd_in, b, want, off_in);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				rc = r < 0 ? -errno : -CN_E_TRUNCATED;
				break;
			}
			rc = cn_pwrite_full(fd_out, b, (size_t)r, (uint64_t)off_in);
			off_in += r;
		}
		free(b);
		return rc;
	}
	return 0;
}

/* Replaces the writer's new (empty) file by a copy of the base's LMDB
 * pages, opened for writing the header. */
static int start_from_base(struct cn_filecache_writer *w)
{
	mdb_txn_abort(w->txn);
	w->txn = NULL;
	mdb_env_close(w->env);
	w->env = NULL;
	int fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), rc;
	if (fd < 0)
		return cn_error_sys(-errno, "create %s", w->tmp);
	rc = copy_fd(w->base->fd, fd, w->base->lmdb_size);
	close(fd);
	if (rc < 0)
		return cn_error_set(rc, "file cache: copy into %s: %s", w->tmp, strerror(-rc));
	rc = env_open(w->tmp, MDB_NOSYNC, &w->env);
	if (rc == 0 && (rc = mdb_txn_begin(w->env, NULL, 0, &w->txn)) == 0)
		rc = mdb_dbi_open(w->txn, "meta", 0, &w->meta);
	return rc > 0 ? mdb_err(rc, "begin write") : rc;
}

int cn_filecache_writer_commit(struct cn_filecache_writer *w, const struct cn_filecache_ref *ref)
{
	uint8_t digest[32];
	uint64_t count;
	size_t sl = strlen(ref->snapshot);
	uint8_t *h = malloc(HDR_FIXED + sl);
	int rc = h ? 0 : -ENOMEM;
	int copied = rc == 0 && keeps_whole_base(w);
	uint64_t shift = 0;
	if (copied) {
		/* a run that changed nothing: the base's records, a new header */
		rc = start_from_base(w);
		memcpy(digest, w->base->digest, 32);
		count = w->base->count;
		shift = w->base->shift + w->shift;
	} else if (rc == 0 && (rc = put_kept(w)) == 0 && (rc = flush_batch(w, 1)) == 0) {
		rc = digest_files(w->txn, w->files, digest, &count, NULL, NULL);
	}
	if (rc == 0) {
		memcpy(h, HDR_MAGIC, 8);
		cn_put_le32(h + 8, HDR_VERSION);
		memcpy(h + 12, ref->payload_csum, 32);
		cn_put_le64(h + 44, count);
		memcpy(h + 52, digest, 32);
		cn_put_le64(h + HDR_FIXED_V2, shift);
		memcpy(h + HDR_FIXED, ref->snapshot, sl);
		MDB_val k = { 6, "header" }, v = { HDR_FIXED + sl, h };
		if ((rc = mdb_put(w->txn, w->meta, &k, &v, 0)) == 0)
			rc = mdb_txn_commit(w->txn);
		else
			mdb_txn_abort(w->txn);
		w->txn = NULL;
		if (rc == 0)
			rc = mdb_env_sync(w->env, 1);
		if (rc)
			rc = write_err(w, rc, "commit");
	}
	free(h);
	if (rc == 0) {
		mdb_env_close(w->env);
		w->env = NULL;
		rc = append_trailer(w->tmp);
	}
	if (rc == 0) {
		if (rename(w->tmp, w->path) < 0)
			rc = cn_error_sys(-errno, "rename %s", w->tmp);
	}
	if (rc < 0) {
		cn_filecache_writer_abort(w);
		return rc;
	}
	hasher_free(&w->h);
	free(w->pend);
	free(w->kept);
	free(w->path);
	free(w->tmp);
	free(w);
	return copied;
}

void cn_filecache_writer_abort(struct cn_filecache_writer *w)
{
	if (!w)
		return;
	if (w->txn)
		mdb_txn_abort(w->txn);
	if (w->env)
		mdb_env_close(w->env);
	if (w->tmp)
		unlink(w->tmp);
	hasher_free(&w->h);
	free(w->pend);
	free(w->kept);
	free(w->path);
	free(w->tmp);
	free(w);
}
