/* .didx / .fidx files as upstream pbs-datastore/src/{dynamic,fixed}_index.rs. */
#include "store/cn_index.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/cn_error.h"
#include "store/cn_crypt.h"

static const uint8_t didx_magic[8] = {28, 145, 78, 165, 25, 186, 179, 205};
static const uint8_t fidx_magic[8] = {47, 127, 65, 237, 145, 253, 15, 205};

#define OFF_UUID 8
#define OFF_CTIME 24
#define OFF_CSUM 32
#define OFF_SIZE 64
#define OFF_CHUNK_SIZE 72

struct cn_index {
	enum cn_index_kind kind;
	uint8_t uuid[16];
	int64_t ctime;
	uint8_t csum[32];
	uint64_t size;       /* stream size */
	uint64_t chunk_size; /* fixed only */
	size_t count;
	uint64_t *ends;      /* dynamic only: end offsets */
	uint8_t (*digests)[32];
};

struct cn_index_csum_ctx {
	enum cn_index_kind kind;
	EVP_MD_CTX *md;
};

/* ---- checksum ----------------------------------------------------------- */

int cn_index_csum_new(enum cn_index_kind kind, struct cn_index_csum_ctx **out)
{
	struct cn_index_csum_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return cn_error_set(-ENOMEM, "out of memory");
	c->kind = kind;
	c->md = EVP_MD_CTX_new();
	if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
		cn_index_csum_free(c);
		return cn_error_set(-CN_E_CRYPT, "SHA-256 init failed");
	}
	*out = c;
	return 0;
}

void cn_index_csum_update(struct cn_index_csum_ctx *c, uint64_t end_offset,
			  const uint8_t digest[32])
{
	uint8_t e[40];
	if (c->kind == CN_INDEX_DYNAMIC) {
		cn_put_le64(e, end_offset);
		memcpy(e + 8, digest, 32);
		EVP_DigestUpdate(c->md, e, 40);
	} else {
		EVP_DigestUpdate(c->md, digest, 32);
	}
}

void cn_index_csum_final(struct cn_index_csum_ctx *c, uint8_t csum[32])
{
	if (EVP_DigestFinal_ex(c->md, csum, NULL) != 1)
		memset(csum, 0, 32);
}

void cn_index_csum_free(struct cn_index_csum_ctx *c)
{
	if (!c)
		return;
	EVP_MD_CTX_free(c->md);
	free(c);
}

/* ---- reader ------------------------------------------------------------- */

static int is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

void cn_index_free(struct cn_index *idx)
{
	if (!idx)
		return;
	free(idx->ends);
	free(idx->digests);
	free(idx);
}

int cn_index_check_size(const uint8_t *hdr, size_t hdr_len, uint64_t file_size,
			enum cn_index_kind *kind_out, size_t *count_out)
{
	enum cn_index_kind kind;
	uint64_t count;
	if (file_size < 8 || hdr_len < 8)
		return cn_error_set(-CN_E_TRUNCATED, "index file too small (%llu bytes)",
				    (unsigned long long)file_size);
	if (memcmp(hdr, didx_magic, 8) == 0)
		kind = CN_INDEX_DYNAMIC;
	else if (memcmp(hdr, fidx_magic, 8) == 0)
		kind = CN_INDEX_FIXED;
	else
		return cn_error_set(-CN_E_MAGIC, "not an index file (unknown magic number)");
	if (file_size < CN_INDEX_HEADER_SIZE || hdr_len < CN_INDEX_HEADER_SIZE)
		return cn_error_set(-CN_E_TRUNCATED, "index file too small (%llu bytes)",
				    (unsigned long long)file_size);
	uint64_t body = file_size - CN_INDEX_HEADER_SIZE;
	if (kind == CN_INDEX_DYNAMIC) {
		if (body % CN_DIDX_ENTRY_SIZE)
			return cn_error_set(-CN_E_TRUNCATED,
					    "dynamic index entry area of %llu bytes is not a multiple of 40",
					    (unsigned long long)body);
		count = body / CN_DIDX_ENTRY_SIZE;
	} else {
		uint64_t size = cn_le64(hdr + OFF_SIZE), chunk_size = cn_le64(hdr + OFF_CHUNK_SIZE);
		if (!is_pow2(chunk_size))
			return cn_error_set(-CN_E_FORMAT, "fixed index chunk size %llu is not a power of two",
					    (unsigned long long)chunk_size);
		count = size / chunk_size + (size % chunk_size != 0);
		if (body % CN_FIDX_ENTRY_SIZE || body / CN_FIDX_ENTRY_SIZE != count)
			return cn_error_set(-CN_E_TRUNCATED,
					    "fixed index has %llu bytes of digests, size %llu needs %llu",
					    (unsigned long long)body, (unsigned long long)size,
					    (unsigned long long)count * CN_FIDX_ENTRY_SIZE);
	}
	if (count > SIZE_MAX / 40)
		return cn_error_set(-CN_E_FORMAT, "index of %llu entries", (unsigned long long)count);
	if (kind_out)
		*kind_out = kind;
	if (count_out)
		*count_out = (size_t)count;
	return 0;
}

int cn_index_parse(const uint8_t *data, size_t len, struct cn_index **out)
{
	struct cn_index *idx;
	enum cn_index_kind kind;
	size_t count, body;
	uint8_t csum[32];
	int r = cn_index_check_size(data, len, len, &kind, &count);
	if (r < 0)
		return r;
	body = len - CN_INDEX_HEADER_SIZE;

	idx = calloc(1, sizeof(*idx));
	if (!idx)
		return cn_error_set(-ENOMEM, "out of memory");
	idx->kind = kind;
	memcpy(idx->uuid, data + OFF_UUID, 16);
	idx->ctime = (int64_t)cn_le64(data + OFF_CTIME);
	memcpy(idx->csum, data + OFF_CSUM, 32);
	const uint8_t *e = data + CN_INDEX_HEADER_SIZE;
	if (kind == CN_INDEX_FIXED) {
		idx->size = cn_le64(data + OFF_SIZE);
		idx->chunk_size = cn_le64(data + OFF_CHUNK_SIZE);
	}
	idx->count = count;
	idx->digests = malloc(count ? count * 32 : 1);
	idx->ends = kind == CN_INDEX_DYNAMIC ? malloc(count ? count * 8 : 1) : NULL;
	if (!idx->digests || (kind == CN_INDEX_DYNAMIC && !idx->ends)) {
		r = cn_error_set(-ENOMEM, "out of memory");
		goto fail;
	}
	if (kind == CN_INDEX_DYNAMIC) {
		uint64_t prev = 0;
		for (size_t i = 0; i < count; i++, e += CN_DIDX_ENTRY_SIZE) {
			uint64_t end = cn_le64(e);
			if (end <= prev) {
				r = cn_error_set(-CN_E_FORMAT,
						 "dynamic index entry %zu ends at %llu, not after %llu", i,
						 (unsigned long long)end, (unsigned long long)prev);
				goto fail;
			}
			idx->ends[i] = prev = end;
			memcpy(idx->digests[i], e + 8, 32);
		}
		idx->size = prev;
	} else {
		memcpy(idx->digests, e, count * 32);
	}
	/* the checksum is exactly SHA-256 of the entry area */
	if (EVP_Digest(data + CN_INDEX_HEADER_SIZE, body, csum, NULL, EVP_sha256(), NULL) != 1) {
		r = cn_error_set(-CN_E_CRYPT, "SHA-256 failed");
		goto fail;
	}
	if (memcmp(csum, idx->csum, 32) != 0) {
		r = cn_error_set(-CN_E_CHECKSUM, "index checksum mismatch (stored csum does not match entries)");
		goto fail;
	}
	*out = idx;
	return 0;
fail:
	cn_index_free(idx);
	return r;
}

enum cn_index_kind cn_index_kind(const struct cn_index *idx)
{
	return idx->kind;
}

size_t cn_index_count(const struct cn_index *idx)
{
	return idx->count;
}

uint64_t cn_index_size(const struct cn_index *idx)
{
	return idx->size;
}

uint64_t cn_index_chunk_size(const struct cn_index *idx)
{
	return idx->chunk_size;
}

void cn_index_uuid(const struct cn_index *idx, uint8_t uuid[16])
{
	memcpy(uuid, idx->uuid, 16);
}

int64_t cn_index_ctime(const struct cn_index *idx)
{
	return idx->ctime;
}

void cn_index_entry(const struct cn_index *idx, size_t i, uint64_t *start, uint64_t *end,
		    uint8_t digest[32])
{
	uint64_t s, e;
	if (idx->kind == CN_INDEX_DYNAMIC) {
		s = i ? idx->ends[i - 1] : 0;
		e = idx->ends[i];
	} else {
		s = (uint64_t)i * idx->chunk_size;
		e = s + idx->chunk_size;
		if (e > idx->size)
			e = idx->size;
	}
	if (start)
		*start = s;
	if (end)
		*end = e;
	if (digest)
		memcpy(digest, idx->digests[i], 32);
}

const uint8_t *cn_index_digest(const struct cn_index *idx, size_t i)
{
	return idx->digests[i];
}

int cn_index_find(const struct cn_index *idx, uint64_t offset, size_t *i)
{
	if (offset >= idx->size)
		return -ERANGE;
	if (idx->kind == CN_INDEX_FIXED) {
		*i = (size_t)(offset / idx->chunk_size);
		return 0;
	}
	/* first entry whose end is > offset */
	size_t lo = 0, hi = idx->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (idx->ends[mid] <= offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	*i = lo;
	return 0;
}

void cn_index_csum(const struct cn_index *idx, uint8_t csum[32])
{
	memcpy(csum, idx->csum, 32);
}

int cn_index_verify(const struct cn_index *idx, uint64_t size, const uint8_t csum[32])
{
	char a[65], b[65];
	if (size != idx->size)
		return cn_error_set(-CN_E_CHECKSUM, "index size %llu, expected %llu",
				    (unsigned long long)idx->size, (unsigned long long)size);
	if (memcmp(csum, idx->csum, 32) != 0) {
		cn_hex_encode(idx->csum, 32, a);
		cn_hex_encode(csum, 32, b);
		return cn_error_set(-CN_E_CHECKSUM, "index checksum %s, expected %s", a, b);
	}
	return 0;
}

/* ---- writer ------------------------------------------------------------- */

struct cn_index_writer {
	enum cn_index_kind kind;
	uint64_t size;       /* fixed: image size; dynamic: last end */
	uint64_t chunk_size;
	size_t count, slots; /* slots: fixed only */
	struct cn_buf file;  /* header + entries */
	struct cn_index_csum_ctx *csum;
	int spent;
};

int cn_index_writer_new(enum cn_index_kind kind, const uint8_t uuid[16], int64_t ctime,
			uint64_t size, uint64_t chunk_size, struct cn_index_writer **out)
{
	struct cn_index_writer *w;
	int r;

	if (kind != CN_INDEX_DYNAMIC && kind != CN_INDEX_FIXED)
		return cn_error_set(-EINVAL, "unknown index kind %d", (int)kind);
	if (kind == CN_INDEX_FIXED && !is_pow2(chunk_size))
		return cn_error_set(-EINVAL, "fixed index chunk size %llu is not a power of two",
				    (unsigned long long)chunk_size);
	w = calloc(1, sizeof(*w));
	if (!w)
		return cn_error_set(-ENOMEM, "out of memory");
	w->kind = kind;
	if (kind == CN_INDEX_FIXED) {
		w->size = size;
		w->chunk_size = chunk_size;
		w->slots = (size_t)(size / chunk_size + (size % chunk_size != 0));
	}
	r = cn_index_csum_new(kind, &w->csum);
	if (r < 0 || cn_buf_reserve(&w->file, CN_INDEX_HEADER_SIZE) < 0) {
		cn_index_writer_free(w);
		return r < 0 ? r : cn_error_set(-ENOMEM, "out of memory");
	}
	uint8_t *h = w->file.data;
	memset(h, 0, CN_INDEX_HEADER_SIZE);
	memcpy(h, kind == CN_INDEX_DYNAMIC ? didx_magic : fidx_magic, 8);
	if (uuid) {
		memcpy(h + OFF_UUID, uuid, 16);
	} else {
		r = cn_random_bytes(h + OFF_UUID, 16);
		if (r < 0) {
			cn_index_writer_free(w);
			return r;
		}
		h[OFF_UUID + 6] = (uint8_t)((h[OFF_UUID + 6] & 0x0f) | 0x40); /* version 4 */
		h[OFF_UUID + 8] = (uint8_t)((h[OFF_UUID + 8] & 0x3f) | 0x80); /* RFC 4122 variant */
	}
	cn_put_le64(h + OFF_CTIME, (uint64_t)ctime);
	if (kind == CN_INDEX_FIXED) {
		cn_put_le64(h + OFF_SIZE, size);
		cn_put_le64(h + OFF_CHUNK_SIZE, chunk_size);
	}
	w->file.len = CN_INDEX_HEADER_SIZE;
	*out = w;
	return 0;
}

int cn_index_writer_append(struct cn_index_writer *w, const struct cn_index_entry *entries,
			   size_t n)
{
	if (w->spent)
		return cn_error_set(-EINVAL, "index writer already finished");
	size_t esize = w->kind == CN_INDEX_DYNAMIC ? CN_DIDX_ENTRY_SIZE : CN_FIDX_ENTRY_SIZE;
	/* validate all first so that a bad batch changes nothing */
	uint64_t prev = w->kind == CN_INDEX_DYNAMIC ? w->size : 0;
	for (size_t k = 0; k < n; k++) {
		uint64_t end = entries[k].end_offset;
		if (w->kind == CN_INDEX_DYNAMIC) {
			if (end <= prev)
				return cn_error_set(-EINVAL,
						    "index entry ends at %llu, not after %llu",
						    (unsigned long long)end, (unsigned long long)prev);
			prev = end;
		} else {
			size_t slot = w->count + k;
			if (slot >= w->slots)
				return cn_error_set(-EINVAL, "fixed index has only %zu chunks", w->slots);
			uint64_t want = ((uint64_t)slot + 1) * w->chunk_size;
			if (want > w->size)
				want = w->size;
			if (end != want)
				return cn_error_set(-EINVAL,
						    "fixed index chunk %zu ends at %llu, expected %llu",
						    slot, (unsigned long long)end,
						    (unsigned long long)want);
		}
	}
	if (cn_buf_reserve(&w->file, n * esize) < 0)
		return cn_error_set(-ENOMEM, "out of memory");
	for (size_t k = 0; k < n; k++) {
		uint8_t *p = w->file.data + w->file.len;
		if (w->kind == CN_INDEX_DYNAMIC) {
			cn_put_le64(p, entries[k].end_offset);
			memcpy(p + 8, entries[k].digest, 32);
			w->size = entries[k].end_offset;
		} else {
			memcpy(p, entries[k].digest, 32);
		}
		cn_index_csum_update(w->csum, entries[k].end_offset, entries[k].digest);
		w->file.len += esize;
	}
	w->count += n;
	return 0;
}

int cn_index_writer_finish(struct cn_index_writer *w, struct cn_buf *out, uint8_t csum[32])
{
	if (w->spent)
		return cn_error_set(-EINVAL, "index writer already finished");
	if (w->kind == CN_INDEX_FIXED && w->count != w->slots)
		return cn_error_set(-EINVAL, "fixed index incomplete: %zu of %zu chunks", w->count,
				    w->slots);
	if (cn_buf_reserve(out, w->file.len) < 0)
		return cn_error_set(-ENOMEM, "out of memory");
	cn_index_csum_final(w->csum, w->file.data + OFF_CSUM);
	w->spent = 1;
	if (csum)
		memcpy(csum, w->file.data + OFF_CSUM, 32);
	return cn_buf_append(out, w->file.data, w->file.len);
}

void cn_index_writer_free(struct cn_index_writer *w)
{
	if (!w)
		return;
	cn_index_csum_free(w->csum);
	cn_buf_free(&w->file);
	free(w);
}

size_t cn_index_writer_count(const struct cn_index_writer *w)
{
	return w->count;
}

uint64_t cn_index_writer_size(const struct cn_index_writer *w)
{
	return w->size;
}
