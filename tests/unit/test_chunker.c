/* Tests of the chunker: upstream's table, the spec's test vectors (which
 * were derived by running upstream's chunker.rs; tests/chunker_ref.py
 * re-derives them from the algorithm as written), every fast path against
 * the portable reference, streaming with random splits, and bad input. */
#include <dirent.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunker/cn_chunker.h"
#include "chunker/cn_chunker_impl.h"
#include "common/cn_error.h"
#include "common/cn_util.h"
#include "cn_test.h"

#define MiB (1024u * 1024u)
#define KiB 1024u

/* --- deterministic inputs --- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint8_t *gen_random(size_t len, uint64_t seed)
{
	uint8_t *d = malloc(len);
	ck_assert_ptr_nonnull(d);
	for (size_t i = 0; i < len; i += 8) {
		uint64_t r = splitmix(&seed);
		for (size_t j = 0; j < 8 && i + j < len; j++)
			d[i + j] = (uint8_t)(r >> (8 * j));
	}
	return d;
}

/* Spec input A: u32 little-endian counter, 1 MiB. */
static uint8_t *gen_a(size_t *len)
{
	*len = MiB;
	uint8_t *d = malloc(*len);
	ck_assert_ptr_nonnull(d);
	for (uint32_t i = 0; i < 256 * 1024; i++)
		cn_put_le32(d + 4 * i, i);
	return d;
}

/* Spec input B: xorshift32 words, little-endian, 32 MiB. */
static uint8_t *gen_b(size_t *len)
{
	*len = 32 * MiB;
	uint8_t *d = malloc(*len);
	ck_assert_ptr_nonnull(d);
	uint32_t x = 1;
	for (size_t i = 0; i < *len; i += 4) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		cn_put_le32(d + i, x);
	}
	return d;
}

/* Random data broken by long runs of one byte (0x00, 0xff, or another),
 * runs from a few bytes to several MiB. */
static uint8_t *gen_runs(size_t len, uint64_t seed)
{
	uint8_t *d = gen_random(len, seed);
	size_t pos = 0;
	while (pos < len) {
		uint64_t r = splitmix(&seed);
		pos += r % (3 * MiB);
		size_t run = (size_t)((r >> 24) % (r & 1 ? 6 * MiB : 4096)) + 1;
		uint8_t b = (r >> 56) & 1 ? 0 : (r >> 57) & 1 ? 0xff : (uint8_t)(r >> 40);
		if (pos >= len)
			break;
		if (run > len - pos)
			run = len - pos;
		memset(d + pos, b, run);
		pos += run;
	}
	return d;
}

/* Real-looking data: text lines from a small vocabulary, with embedded
 * repeated blocks and some binary records, like a tar/pxar of a source
 * tree; then, where present, real files from /usr/bin appended. */
static uint8_t *gen_realish(size_t len, uint64_t seed)
{
	static const char *words[] = {"the", "backup", "chunk", "index", "static", "int",
				      "return", "struct", "{", "}", "(void)", "if", "for",
				      "proxmox", "server", "0x00000000", "\n", "\t", "  ", "#include"};
	uint8_t *d = malloc(len);
	ck_assert_ptr_nonnull(d);
	size_t pos = 0;
	while (pos < len / 2) {
		uint64_t r = splitmix(&seed);
		if (r % 97 == 0 && pos > 4096) {
			/* repeat an earlier block (dedup-friendly content) */
			size_t n = (size_t)(r >> 8) % 4096 + 1, from = (size_t)(r >> 24) % (pos - n);
			if (n > len / 2 - pos)
				n = len / 2 - pos;
			memmove(d + pos, d + from, n);
			pos += n;
		} else if (r % 89 == 0) {
			for (int i = 0; i < 16 && pos < len / 2; i++)
				d[pos++] = (uint8_t)(r >> (i % 8 * 8));
		} else {
			const char *w = words[(r >> 16) % CN_ARRAY_SIZE(words)];
			for (; *w && pos < len / 2; w++)
				d[pos++] = (uint8_t)*w;
			if (pos < len / 2)
				d[pos++] = ' ';
		}
	}
	DIR *dir = opendir("/usr/bin");
	struct dirent *de;
	while (dir && pos < len && (de = readdir(dir))) {
		char path[512];
		snprintf(path, sizeof(path), "/usr/bin/%s", de->d_name);
		uint8_t *f;
		size_t flen;
		if (de->d_name[0] == '.' || cn_read_file(path, 64 * MiB, &f, &flen) < 0)
			continue;
		size_t n = flen < len - pos ? flen : len - pos;
		memcpy(d + pos, f, n);
		pos += n;
		free(f);
	}
	if (dir)
		closedir(dir);
	if (pos < len) { /* no /usr/bin: more text-like bytes */
		uint8_t *fill = gen_runs(len - pos, seed);
		memcpy(d + pos, fill, len - pos);
		free(fill);
	}
	return d;
}

/* --- cutting a stream --- */

struct cuts {
	uint64_t *end;
	size_t n, cap;
};

static void cuts_add(struct cuts *c, uint64_t end)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->end = realloc(c->end, c->cap * sizeof(*c->end));
		ck_assert_ptr_nonnull(c->end);
	}
	c->end[c->n++] = end;
}

/* Cuts data with implementation impl, feeding it in pieces: piece sizes
 * come from splits (NULL: one piece) and cycle.  Records the end offset of
 * every chunk, the last (partial) one included, as the client does. */
static struct cuts cut(int impl, size_t avg, const uint8_t *data, size_t len,
		       const size_t *splits, size_t nsplits)
{
	struct cn_chunker *ch;
	struct cuts out = {0};
	ck_assert_int_eq(cn_chunker_new_impl(avg, impl, &ch), 0);
	size_t pos = 0, si = 0;
	while (pos < len) {
		size_t piece = splits ? splits[si++ % nsplits] : len;
		if (piece > len - pos)
			piece = len - pos;
		const uint8_t *p = data + pos;
		size_t left = piece;
		while (left > 0) {
			size_t r = cn_chunker_scan(ch, p, left);
			ck_assert_uint_ne(r, CN_CHUNKER_ERROR);
			if (r == 0)
				break;
			ck_assert_uint_le(r, left);
			cuts_add(&out, (uint64_t)(p - data) + r);
			p += r;
			left -= r;
		}
		pos += piece;
	}
	if (out.n == 0 ? len > 0 : out.end[out.n - 1] < len)
		cuts_add(&out, len);
	cn_chunker_free(ch);
	return out;
}

static void assert_same(const struct cuts *a, const struct cuts *b, const char *what)
{
	size_t n = a->n < b->n ? a->n : b->n;
	for (size_t i = 0; i < n; i++)
		if (a->end[i] != b->end[i])
			ck_abort_msg("%s: chunk %zu ends at %llu vs %llu", what, i,
				     (unsigned long long)a->end[i], (unsigned long long)b->end[i]);
	ck_assert_msg(a->n == b->n, "%s: %zu vs %zu chunks", what, a->n, b->n);
}

/* Every chunk but the last is within [min, max]. */
static void assert_sizes(const struct cuts *c, size_t avg)
{
	uint64_t prev = 0;
	for (size_t i = 0; i < c->n; i++) {
		uint64_t sz = c->end[i] - prev;
		ck_assert_uint_le(sz, 4 * avg);
		if (i + 1 < c->n)
			ck_assert_uint_ge(sz, avg / 4);
		prev = c->end[i];
	}
}

static void check_vector(const uint8_t *data, size_t len, size_t avg, const uint64_t *exp,
			 size_t nexp)
{
	for (int impl = 0; impl < cn_chunker_impl_count(); impl++) {
		if (!cn_chunker_impl_supported(impl))
			continue;
		struct cuts c = cut(impl, avg, data, len, NULL, 0);
		struct cuts e = {(uint64_t *)exp, nexp, nexp};
		assert_same(&c, &e, cn_chunker_impl_name(impl));
		free(c.end);
	}
}

/* --- tests --- */

START_TEST(test_table_digest)
{
	/* the check value of spec/chunker.md §6 */
	uint8_t bytes[1024], md[32];
	char hex[65];
	unsigned mdlen;
	for (int i = 0; i < 256; i++)
		cn_put_le32(bytes + 4 * i, cn_buzhash_table[i]);
	ck_assert(EVP_Digest(bytes, sizeof(bytes), md, &mdlen, EVP_sha256(), NULL));
	cn_hex_encode(md, 32, hex);
	ck_assert_str_eq(hex, "5b52080d38287da9d2e278466e3e0db7ec98e5e8b226f50612a56fa012b1f660");
}
END_TEST

START_TEST(test_vector_a)
{
	size_t len;
	uint8_t *d = gen_a(&len);
	static const uint64_t exp[] = {143377, 405521, 667665, 929809, 1048576};
	check_vector(d, len, 64 * KiB, exp, CN_ARRAY_SIZE(exp));
	free(d);
}
END_TEST

START_TEST(test_vector_b)
{
	size_t len;
	uint8_t *d = gen_b(&len);
	static const uint64_t exp[] = {3663716,  5395328,  7201970,  13089669, 16378221,
				       19789106, 23921227, 32642859, 33554432};
	check_vector(d, len, 4 * MiB, exp, CN_ARRAY_SIZE(exp));
	free(d);
}
END_TEST

START_TEST(test_vector_c)
{
	size_t len = 20 * MiB;
	uint8_t *d = calloc(1, len);
	ck_assert_ptr_nonnull(d);
	static const uint64_t exp[] = {16777216, 20971520};
	check_vector(d, len, 4 * MiB, exp, CN_ARRAY_SIZE(exp));
	free(d);
}
END_TEST

/* Every fast path gives the portable reference's boundaries. */
static void compare_all(const uint8_t *d, size_t len, size_t avg, const char *what)
{
	struct cuts ref = cut(0, avg, d, len, NULL, 0);
	assert_sizes(&ref, avg);
	for (int impl = 1; impl < cn_chunker_impl_count(); impl++) {
		if (!cn_chunker_impl_supported(impl))
			continue;
		char name[128];
		snprintf(name, sizeof(name), "%s, %s, avg %zu", what, cn_chunker_impl_name(impl), avg);
		struct cuts c = cut(impl, avg, d, len, NULL, 0);
		assert_same(&c, &ref, name);
		free(c.end);
	}
	free(ref.end);
}

static const size_t avgs[] = {64 * KiB, 128 * KiB, 512 * KiB, 4 * MiB};

/* Sanitized runs check memory safety on half the data and a third of the
 * rounds of the agreement tests below; release runs them in full. */
#define SAN_LEN(n) (CN_TEST_SANITIZED ? (n) / 2 : (n))
#define SAN_ROUNDS(n) (CN_TEST_SANITIZED ? ((n) + 2) / 3 : (n))

/* Each fast path equals the reference on one kind of data, for every
 * average size; the 4 MiB average gets a bigger input. */
static void compare_kind(uint8_t *(*gen)(size_t, uint64_t), size_t small, size_t big,
			 uint64_t seed, const char *what)
{
	for (size_t a = 0; a < CN_ARRAY_SIZE(avgs); a++) {
		size_t len = SAN_LEN(avgs[a] >= MiB ? big : small);
		uint8_t *d = gen(len, seed + a);
		compare_all(d, len, avgs[a], what);
		free(d);
	}
}

START_TEST(test_fast_random)
{
	compare_kind(gen_random, 6 * MiB + 12345, 24 * MiB, 1000, "random");
}
END_TEST

START_TEST(test_fast_runs)
{
	compare_kind(gen_runs, 8 * MiB + 777, 40 * MiB, 2000, "runs");
}
END_TEST

START_TEST(test_fast_realish)
{
	compare_kind(gen_realish, 6 * MiB + 1, 24 * MiB, 3000, "real-looking");
}
END_TEST

/* The hash is tested right at min and at max and around the 64-byte head
 * of every scan call: many short inputs with boundaries near the edges. */
START_TEST(test_fast_edges)
{
	uint64_t seed = 4242;
	for (int round = 0; round < SAN_ROUNDS(200); round++) {
		size_t avg = avgs[round % 2];
		size_t len = avg / 4 + (size_t)(splitmix(&seed) % (avg * 5));
		uint8_t *d = gen_random(len, seed);
		compare_all(d, len, avg, "edges");
		free(d);
	}
}
END_TEST

/* Random splits (tiny, around 64 bytes, large) give the one-shot cuts, for
 * every implementation. */
START_TEST(test_stream_splits)
{
	uint64_t seed = 77;
	size_t len = 9 * MiB + 3;
	uint8_t *d = gen_runs(len, 5);
	for (int impl = 0; impl < cn_chunker_impl_count(); impl++) {
		if (!cn_chunker_impl_supported(impl))
			continue;
		for (size_t a = 0; a < 2; a++) {
			struct cuts ref = cut(impl, avgs[a], d, len, NULL, 0);
			for (int round = 0; round < SAN_ROUNDS(6); round++) {
				size_t splits[64];
				for (size_t i = 0; i < CN_ARRAY_SIZE(splits); i++) {
					uint64_t r = splitmix(&seed);
					switch (r % 4) {
					case 0: splits[i] = 1 + (r >> 8) % 4; break;
					case 1: splits[i] = 1 + (r >> 8) % 130; break;
					case 2: splits[i] = 1 + (r >> 8) % 70000; break;
					default: splits[i] = 1 + (r >> 8) % (3 * MiB); break;
					}
				}
				struct cuts c = cut(impl, avgs[a], d, len, splits, CN_ARRAY_SIZE(splits));
				assert_same(&c, &ref, cn_chunker_impl_name(impl));
				free(c.end);
			}
			free(ref.end);
		}
	}
	free(d);
}
END_TEST

/* Upstream's own test: byte by byte equals the whole buffer (input A). */
START_TEST(test_stream_bytewise)
{
	size_t len;
	uint8_t *d = gen_a(&len);
	static const size_t one = 1;
	len = SAN_LEN(len); /* 512 KiB: still eight 64 KiB chunks on average */
	for (int impl = 0; impl < cn_chunker_impl_count(); impl++) {
		if (!cn_chunker_impl_supported(impl))
			continue;
		struct cuts a = cut(impl, 64 * KiB, d, len, NULL, 0);
		struct cuts b = cut(impl, 64 * KiB, d, len, &one, 1);
		assert_same(&a, &b, cn_chunker_impl_name(impl));
		free(a.end);
		free(b.end);
	}
	free(d);
}
END_TEST

START_TEST(test_reset)
{
	uint8_t *d = gen_random(2 * MiB, 9);
	for (int impl = 0; impl < cn_chunker_impl_count(); impl++) {
		if (!cn_chunker_impl_supported(impl))
			continue;
		struct cn_chunker *a, *b;
		ck_assert_int_eq(cn_chunker_new_impl(64 * KiB, impl, &a), 0);
		ck_assert_int_eq(cn_chunker_new_impl(64 * KiB, impl, &b), 0);
		ck_assert_uint_eq(cn_chunker_scan(a, d + MiB, 10000), 0);
		ck_assert_uint_eq(cn_chunker_pending(a), 10000);
		cn_chunker_reset(a);
		ck_assert_uint_eq(cn_chunker_pending(a), 0);
		size_t ra = cn_chunker_scan(a, d, 2 * MiB), rb = cn_chunker_scan(b, d, 2 * MiB);
		ck_assert_uint_eq(ra, rb);
		ck_assert_uint_ge(ra, 16 * KiB);
		cn_chunker_free(a);
		cn_chunker_free(b);
	}
	free(d);
}
END_TEST

START_TEST(test_dispatch)
{
	int best = cn_chunker_impl_best();
	ck_assert(cn_chunker_impl_supported(best));
	ck_assert_str_eq(cn_chunker_impl_name(0), "portable");
	ck_assert_ptr_null(cn_chunker_impl_name(cn_chunker_impl_count()));
	ck_assert_ptr_null(cn_chunker_impl_name(-1));
	struct cn_chunker *c;
	ck_assert_int_eq(cn_chunker_new(CN_CHUNKER_DEFAULT_AVG, &c), 0);
	ck_assert_int_eq(cn_chunker_impl(c), best);
	ck_assert_uint_eq(cn_chunker_avg_size(c), 4 * MiB);
	ck_assert_uint_eq(cn_chunker_min_size(c), MiB);
	ck_assert_uint_eq(cn_chunker_max_size(c), 16 * MiB);
	cn_chunker_free(c);
	cn_chunker_free(NULL);
#ifdef __x86_64__
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		ck_assert_int_ge(best, 2);
#endif
}
END_TEST

START_TEST(test_bad_avg)
{
	static const size_t bad[] = {0, 1, 3, 32 * KiB, 64 * KiB + 1, 3 * MiB, 8 * MiB,
				     (size_t)1 << 40, SIZE_MAX};
	struct cn_chunker *c = (struct cn_chunker *)1;
	for (size_t i = 0; i < CN_ARRAY_SIZE(bad); i++) {
		ck_assert_int_eq(cn_chunker_new(bad[i], &c), -EINVAL);
		ck_assert_ptr_null(c);
		ck_assert_ptr_nonnull(strstr(cn_error_message(), "average chunk size"));
	}
	for (size_t a = CN_CHUNKER_MIN_AVG; a <= CN_CHUNKER_MAX_AVG; a *= 2) {
		ck_assert_int_eq(cn_chunker_new(a, &c), 0);
		cn_chunker_free(c);
	}
	ck_assert_int_eq(cn_chunker_new(64 * KiB, NULL), -EINVAL);
	ck_assert_int_eq(cn_chunker_new_impl(64 * KiB, -1, &c), -EINVAL);
	ck_assert_int_eq(cn_chunker_new_impl(64 * KiB, cn_chunker_impl_count(), &c), -EINVAL);
}
END_TEST

START_TEST(test_bad_buffers)
{
	uint8_t buf[16] = {0};
	for (int impl = 0; impl < cn_chunker_impl_count(); impl++) {
		if (!cn_chunker_impl_supported(impl))
			continue;
		struct cn_chunker *c;
		ck_assert_int_eq(cn_chunker_new_impl(64 * KiB, impl, &c), 0);
		ck_assert_uint_eq(cn_chunker_scan(c, buf, 5), 0);
		/* NULL buffer with a length: error, nothing consumed */
		cn_error_clear();
		ck_assert_uint_eq(cn_chunker_scan(c, NULL, 10), CN_CHUNKER_ERROR);
		ck_assert_int_eq(cn_error_code(), -EINVAL);
		ck_assert_uint_eq(cn_chunker_pending(c), 5);
		/* zero-length input (also with NULL): nothing, no error */
		cn_error_clear();
		ck_assert_uint_eq(cn_chunker_scan(c, NULL, 0), 0);
		ck_assert_uint_eq(cn_chunker_scan(c, buf, 0), 0);
		ck_assert_int_eq(cn_error_code(), 0);
		/* a length no object can have: error before touching memory */
		ck_assert_uint_eq(cn_chunker_scan(c, buf, SIZE_MAX), CN_CHUNKER_ERROR);
		ck_assert_int_eq(cn_error_code(), -EOVERFLOW);
		ck_assert_uint_eq(cn_chunker_scan(c, buf, CN_CHUNKER_SCAN_MAX + 1), CN_CHUNKER_ERROR);
		ck_assert_int_eq(cn_error_code(), -EOVERFLOW);
		ck_assert_uint_eq(cn_chunker_pending(c), 5);
		cn_chunker_free(c);
	}
	cn_error_clear();
	ck_assert_uint_eq(cn_chunker_scan(NULL, buf, 1), CN_CHUNKER_ERROR);
	ck_assert_int_eq(cn_error_code(), -EINVAL);
}
END_TEST

/* An empty stream has no chunks; a 1-byte stream has one 1-byte chunk. */
START_TEST(test_tiny_inputs)
{
	uint8_t one = 0x42;
	for (int impl = 0; impl < cn_chunker_impl_count(); impl++) {
		if (!cn_chunker_impl_supported(impl))
			continue;
		struct cuts c = cut(impl, 64 * KiB, &one, 0, NULL, 0);
		ck_assert_uint_eq(c.n, 0);
		free(c.end);
		c = cut(impl, 64 * KiB, &one, 1, NULL, 0);
		ck_assert_uint_eq(c.n, 1);
		ck_assert_uint_eq(c.end[0], 1);
		free(c.end);
	}
}
END_TEST

START_TEST(test_fixed)
{
	uint64_t n, off;
	size_t len;
	ck_assert_int_eq(cn_fixed_chunk_count(1, CN_FIXED_CHUNK_SIZE, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(cn_fixed_chunk_count(8 * MiB, CN_FIXED_CHUNK_SIZE, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(cn_fixed_chunk_count(8 * MiB + 1, CN_FIXED_CHUNK_SIZE, &n), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_int_eq(cn_fixed_chunk_at(8 * MiB + 1, CN_FIXED_CHUNK_SIZE, 1, &off, &len), 0);
	ck_assert_uint_eq(off, 4 * MiB);
	ck_assert_uint_eq(len, 4 * MiB);
	ck_assert_int_eq(cn_fixed_chunk_at(8 * MiB + 1, CN_FIXED_CHUNK_SIZE, 2, &off, &len), 0);
	ck_assert_uint_eq(off, 8 * MiB);
	ck_assert_uint_eq(len, 1);
	ck_assert_int_eq(cn_fixed_chunk_at(8 * MiB + 1, CN_FIXED_CHUNK_SIZE, 3, &off, &len), -ERANGE);
	/* 1 TiB image: offsets beyond 32 bits */
	ck_assert_int_eq(cn_fixed_chunk_at((uint64_t)1 << 40, CN_FIXED_CHUNK_SIZE, 262143, &off, &len), 0);
	ck_assert_uint_eq(off, ((uint64_t)1 << 40) - 4 * MiB);
	/* bad input */
	ck_assert_int_eq(cn_fixed_chunk_count(0, CN_FIXED_CHUNK_SIZE, &n), -EINVAL);
	ck_assert_int_eq(cn_fixed_chunk_count(100, 0, &n), -EINVAL);
	ck_assert_int_eq(cn_fixed_chunk_count(100, 4 * MiB + 1, &n), -EINVAL);
	ck_assert_int_eq(cn_fixed_chunk_count(100, 8 * MiB, &n), -EINVAL);
	ck_assert_int_eq(cn_fixed_chunk_at(0, CN_FIXED_CHUNK_SIZE, 0, &off, &len), -EINVAL);
}
END_TEST

static Suite *chunker_suite(void)
{
	Suite *s = suite_create("chunker");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_table_digest);
	tcase_add_test(tc, test_vector_a);
	tcase_add_test(tc, test_vector_b);
	tcase_add_test(tc, test_vector_c);
	tcase_add_test(tc, test_fast_random);
	tcase_add_test(tc, test_fast_runs);
	tcase_add_test(tc, test_fast_realish);
	tcase_add_test(tc, test_fast_edges);
	tcase_add_test(tc, test_stream_splits);
	tcase_add_test(tc, test_stream_bytewise);
	tcase_add_test(tc, test_reset);
	tcase_add_test(tc, test_dispatch);
	tcase_add_test(tc, test_bad_avg);
	tcase_add_test(tc, test_bad_buffers);
	tcase_add_test(tc, test_tiny_inputs);
	tcase_add_test(tc, test_fixed);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return cn_test_run_suite(chunker_suite());
}
