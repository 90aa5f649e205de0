/* The chunker's public API: state, the portable reference scan (upstream's
 * scan() line by line), the streaming driver of the fast kernels, the
 * run-time dispatcher, and fixed-size chunking. */
#include "chunker/cn_chunker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chunker/cn_chunker_impl.h"
#include "common/cn_error.h"
#include "common/cn_util.h"

/* State of the current chunk.  window[x & 63] holds byte x of the chunk for
 * the last (up to) 64 bytes consumed; both the reference and the fast
 * paths keep it that way, so reset is the same for all.  h and window_size
 * are upstream's and only the reference path maintains them. */
struct cn_chunker {
	uint64_t chunk_size; /* bytes of the current chunk consumed */
	uint32_t h;
	unsigned window_size;
	uint32_t mask; /* 2*avg - 1 */
	uint32_t thr;  /* mask - 2 */
	size_t avg, min, max;
	int impl;
	cn_chunker_find_fn find; /* NULL: the portable reference */
	uint8_t window[CN_CHUNKER_WINDOW];
};

static int always(void)
{
	return 1;
}

#ifdef CN_CHUNKER_X86
static int has_avx2(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2");
}

static int has_avx512(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi");
}
#endif

/* Ordered slowest to fastest: the dispatcher takes the last supported. */
static const struct impl {
	const char *name;
	cn_chunker_find_fn find;
	int (*supported)(void);
} impls[] = {
	{"portable", NULL, always},
	{"scalar", cn_chunker_find_scalar, always},
#ifdef CN_CHUNKER_X86
	{"avx2", cn_chunker_find_avx2, has_avx2},
	{"avx512", cn_chunker_find_avx512, has_avx512},
#endif
};


int cn_chunker_impl_count(void)
{
	return (int)CN_ARRAY_SIZE(impls);
}

const char *cn_chunker_impl_name(int i)
{
	if (i < 0 || i >= cn_chunker_impl_count())
		return NULL;
	return impls[i].name;
}

int cn_chunker_impl_supported(int i)
{
	if (i < 0 || i >= cn_chunker_impl_count())
		return 0;
	return impls[i].supported();
}

int cn_chunker_impl_best(void)
{
	int best = 0;
	for (int i = 0; i < cn_chunker_impl_count(); i++)
		if (impls[i].supported())
			best = i;
	return best;
}

static int valid_avg(size_t avg)
{
	return avg >= CN_CHUNKER_MIN_AVG && avg <= CN_CHUNKER_MAX_AVG &&
	       (avg & (avg - 1)) == 0;
}

int cn_chunker_new_impl(size_t avg_size, int impl, struct cn_chunker **out)
{
	if (!out)
		return cn_error_set(-EINVAL, "chunker: no output pointer");
	*out = NULL;
	if (!valid_avg(avg_size))
		return cn_error_set(-EINVAL,
				    "chunker: average chunk size %zu is not a power of two in [%u, %u]",
				    avg_size, CN_CHUNKER_MIN_AVG, CN_CHUNKER_MAX_AVG);
	if (impl < 0 || impl >= cn_chunker_impl_count())
		return cn_error_set(-EINVAL, "chunker: no implementation %d", impl);
	if (!impls[impl].supported())
		return cn_error_set(-ENOTSUP, "chunker: this CPU cannot run the %s implementation",
				    impls[impl].name);

	struct cn_chunker *c = calloc(1, sizeof(*c));
	if (!c)
		return cn_error_set(-ENOMEM, "chunker: out of memory");
	c->avg = avg_size;
	c->min = avg_size >> 2;
	c->max = avg_size << 2;
	c->mask = (uint32_t)(avg_size * 2 - 1);
	c->thr = c->mask - 2;
	c->impl = impl;
	c->find = impls[impl].find;
	*out = c;
	return 0;
}

int cn_chunker_new(size_t avg_size, struct cn_chunker **out)
{
	return cn_chunker_new_impl(avg_size, cn_chunker_impl_best(), out);
}

void cn_chunker_free(struct cn_chunker *c)
{
	free(c);
}

void cn_chunker_reset(struct cn_chunker *c)
{
	c->h = 0;
	c->chunk_size = 0;
	c->window_size = 0;
}

uint64_t cn_chunker_pending(const struct cn_chunker *c)
{
	return c->chunk_size;
}

size_t cn_chunker_avg_size(const struct cn_chunker *c)
{
	return c->avg;
}

size_t cn_chunker_min_size(const struct cn_chunker *c)
{
	return c->min;
}

size_t cn_chunker_max_size(const struct cn_chunker *c)
{
	return c->max;
}

int cn_chunker_impl(const struct cn_chunker *c)
{
	return c->impl;
}

/* upstream's shall_break() */
static int shall_break(const struct cn_chunker *c)
{
	if (c->chunk_size >= c->max)
		return 1;
	if (c->chunk_size < c->min)
		return 0;
	return (c->h & c->mask) >= c->thr;
}

/* The reference: upstream's Chunker::scan() transcribed statement by
 * statement (window fill without boundary test, then roll and test). */
static size_t scan_portable(struct cn_chunker *c, const uint8_t *data, size_t len)
{
	const uint32_t *T = cn_buzhash_table;
	size_t pos = 0;

	if (c->window_size < CN_CHUNKER_WINDOW) {
		size_t need = CN_CHUNKER_WINDOW - c->window_size;
		size_t copy_len = need < len ? need : len;

		for (size_t i = 0; i < copy_len; i++) {
			uint8_t byte = data[pos];
			c->window[c->window_size] = byte;
			c->h = cn_rotl32(c->h, 1) ^ T[byte];
			pos++;
			c->window_size++;
		}
		c->chunk_size += copy_len;
		if (c->window_size < CN_CHUNKER_WINDOW)
			return 0;
	}

	size_t idx = c->chunk_size & 0x3f;
	while (pos < len) {
		uint8_t enter = data[pos];
		uint8_t leave = c->window[idx];
		c->h = cn_rotl32(c->h, 1) ^ T[leave] ^ T[enter];
		c->chunk_size++;
		pos++;
		c->window[idx] = enter;
		if (shall_break(c)) {
			cn_chunker_reset(c);
			return pos;
		}
		idx = c->chunk_size & 0x3f;
	}
	return 0;
}

/* The fast driver.  Chunk positions are counted as upstream's chunk_size
 * after consuming a byte: a boundary "at e" ends the chunk after its e-th
 * byte, and the hash tested there covers chunk bytes [e-64, e).  Positions
 * before min are never hashed (the skip); a position whose window starts
 * before data is tested on a 128-byte copy made of the ring (the chunk's
 * last 64 bytes) and the head of data; all others on data in place. */
static size_t scan_fast(struct cn_chunker *c, const uint8_t *data, size_t len)
{
	const uint64_t cs = c->chunk_size;
	uint64_t lo = cs + 1 > c->min ? cs + 1 : c->min;      /* first e to test */
	const uint64_t hi = cs + len < c->max ? cs + len : c->max; /* last e */

	if (lo <= hi) {
		/* lo >= min >= 16 KiB, so cs >= 64 whenever part 1 runs. */
		uint64_t e1 = hi < cs + 63 ? hi : cs + 63;
		if (lo <= e1) {
			uint8_t tmp[2 * CN_CHUNKER_WINDOW] = {0};
			size_t n = len < CN_CHUNKER_WINDOW ? len : CN_CHUNKER_WINDOW;
			for (unsigned x = 0; x < CN_CHUNKER_WINDOW; x++)
				tmp[x] = c->window[(cs - CN_CHUNKER_WINDOW + x) & 63];
			memcpy(tmp + CN_CHUNKER_WINDOW, data, n);
			/* the window of e is tmp[e-cs .. e-cs+64) */
			size_t cnt = (size_t)(e1 - lo + 1);
			size_t r = c->find(tmp + (lo - cs), cnt, c->mask, c->thr);
			if (r < cnt) {
				cn_chunker_reset(c);
				return (size_t)(lo + r - cs);
			}
			lo = e1 + 1;
		}
		if (lo <= hi) {
			/* the window of e is data[e-cs-64 .. e-cs) */
			size_t cnt = (size_t)(hi - lo + 1);
			size_t r = c->find(data + (lo - cs - CN_CHUNKER_WINDOW), cnt,
					   c->mask, c->thr);
			if (r < cnt) {
				cn_chunker_reset(c);
				return (size_t)(lo + r - cs);
			}
		}
		if (hi == c->max) {
			cn_chunker_reset(c);
			return (size_t)(c->max - cs);
		}
	}

	/* No boundary: everything is consumed; keep the chunk's last bytes. */
	size_t n = len < CN_CHUNKER_WINDOW ? len : CN_CHUNKER_WINDOW;
	for (size_t x = len - n; x < len; x++)
		c->window[(cs + x) & 63] = data[x];
	c->chunk_size = cs + len;
	return 0;
}

size_t cn_chunker_scan(struct cn_chunker *c, const uint8_t *data, size_t len)
{
	if (!c) {
		cn_error_set(-EINVAL, "chunker: NULL chunker");
		return CN_CHUNKER_ERROR;
	}
	if (len == 0)
		return 0;
	if (!data) {
		cn_error_set(-EINVAL, "chunker: NULL buffer of %zu bytes", len);
		return CN_CHUNKER_ERROR;
	}
	if (len > CN_CHUNKER_SCAN_MAX || (uintptr_t)data + len < (uintptr_t)data) {
		cn_error_set(-EOVERFLOW, "chunker: buffer of %zu bytes is larger than any object", len);
		return CN_CHUNKER_ERROR;
	}
	if (!c->find)
		return scan_portable(c, data, len);
	return scan_fast(c, data, len);
}

/* --- fixed-size chunking --- */

static int check_fixed(uint64_t image_size, size_t chunk_size)
{
	if (!valid_avg(chunk_size))
		return cn_error_set(-EINVAL,
				    "fixed chunking: chunk size %zu is not a power of two in [%u, %u]",
				    chunk_size, CN_CHUNKER_MIN_AVG, CN_CHUNKER_MAX_AVG);
	if (image_size == 0)
		return cn_error_set(-EINVAL, "fixed chunking: the image is empty");
	return 0;
}

int cn_fixed_chunk_count(uint64_t image_size, size_t chunk_size, uint64_t *count)
{
	int r = check_fixed(image_size, chunk_size);
	if (r < 0)
		return r;
	*count = image_size / chunk_size + (image_size % chunk_size != 0);
	return 0;
}

int cn_fixed_chunk_at(uint64_t image_size, size_t chunk_size, uint64_t i,
		      uint64_t *offset, size_t *len)
{
	uint64_t count;
	int r = cn_fixed_chunk_count(image_size, chunk_size, &count);
	if (r < 0)
		return r;
	if (i >= count)
		return cn_error_set(-ERANGE, "fixed chunking: chunk %llu of %llu",
				    (unsigned long long)i, (unsigned long long)count);
	*offset = i * chunk_size;
	uint64_t rest = image_size - *offset;
	*len = rest < chunk_size ? (size_t)rest : chunk_size;
	return 0;
}
