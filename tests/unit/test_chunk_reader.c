/* Unit tests of the restore read path: cn_chunk_reader over an in-memory
 * source that counts fetches — every chunk verified, sequential reads fetch
 * each chunk once (with read-ahead), a jump fetches only what it touches,
 * corrupt and missing chunks fail with the chunk named, views lend a
 * pinned chunk, held views do not make read-ahead fetch twice, a reader
 * told its caller reads front to back starts read-ahead with the first
 * read, freeing the reader ends read-ahead that waits on a stalled
 * source, and large compressed chunks decode into the slots' own buffers. */
#include "cn_test.h"
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/cn_error.h"
#include "engine/cn_chunk_reader.h"
#include "store/cn_blob.h"

#define NCHUNKS 40
#define CHUNK (64u << 10)

struct mem_source {
	struct cn_source base;
	struct cn_chunk *chunks[NCHUNKS];
	atomic_int fetches[NCHUNKS];
	int missing; /* index of a chunk to report missing, or -1 */
};

static int ms_get_chunk(struct cn_source *s, const uint8_t digest[32], struct cn_buf *out)
{
	struct mem_source *m = (struct mem_source *)s;
	for (int i = 0; i < NCHUNKS; i++) {
		if (memcmp(m->chunks[i]->digest, digest, 32))
			continue;
		atomic_fetch_add(&m->fetches[i], 1);
		if (i == m->missing)
			return cn_error_set(-ENOENT, "chunk file missing");
		return cn_buf_append(out, m->chunks[i]->data, m->chunks[i]->len);
	}
	return cn_error_set(-ENOENT, "no such chunk");
}

static const struct cn_source_ops ms_ops = {.get_chunk = ms_get_chunk};

static uint8_t *data;
static struct mem_source src;
static struct cn_index *idx;

static void setup(void)
{
	data = malloc((size_t)NCHUNKS * CHUNK);
	uint32_t x = 7;
	for (size_t i = 0; i < (size_t)NCHUNKS * CHUNK; i++) {
		x = x * 1664525u + 1013904223u;
		data[i] = (uint8_t)(x >> 24);
	}
	memset(&src, 0, sizeof(src));
	src.base.ops = &ms_ops;
	snprintf(src.base.name, sizeof(src.base.name), "mem");
	src.missing = -1;
	struct cn_index_writer *w;
	ck_assert_int_eq(cn_index_writer_new(CN_INDEX_DYNAMIC, NULL, 0, 0, 0, &w), 0);
	for (int i = 0; i < NCHUNKS; i++) {
		ck_assert_int_eq(cn_blob_encode_chunk(data + (size_t)i * CHUNK, CHUNK, NULL,
						      CN_BLOB_COMPRESS, &src.chunks[i]), 0);
		struct cn_index_entry e = {.end_offset = (uint64_t)(i + 1) * CHUNK};
		memcpy(e.digest, src.chunks[i]->digest, 32);
		ck_assert_int_eq(cn_index_writer_append(w, &e, 1), 0);
	}
	struct cn_buf file = {0};
	ck_assert_int_eq(cn_index_writer_finish(w, &file, NULL), 0);
	cn_index_writer_free(w);
	ck_assert_int_eq(cn_index_parse(file.data, file.len, &idx), 0);
	cn_buf_free(&file);
}

static void teardown(void)
{
	for (int i = 0; i < NCHUNKS; i++)
		cn_chunk_unref(src.chunks[i]);
	cn_index_free(idx);
	free(data);
}

START_TEST(test_sequential_fetches_each_chunk_once)
{
	struct cn_chunk_reader *r;
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 3, &r), 0);
	uint8_t *out = malloc((size_t)NCHUNKS * CHUNK);
	size_t piece = 10007;
	for (size_t off = 0; off < (size_t)NCHUNKS * CHUNK; off += piece) {
		size_t n = (size_t)NCHUNKS * CHUNK - off < piece ? (size_t)NCHUNKS * CHUNK - off : piece;
		ck_assert_int_eq(cn_chunk_reader_read_at(r, off, out + off, n), 0);
	}
	ck_assert(memcmp(out, data, (size_t)NCHUNKS * CHUNK) == 0);
	struct cn_chunk_reader_stats st;
	cn_chunk_reader_stats(r, &st);
	cn_chunk_reader_free(r);
	for (int i = 0; i < NCHUNKS; i++)
		ck_assert_int_eq(atomic_load(&src.fetches[i]), 1);
	ck_assert_uint_eq(st.chunks_fetched, NCHUNKS);
	ck_assert_uint_eq(st.bytes_decoded, (uint64_t)NCHUNKS * CHUNK);
	free(out);
}
END_TEST

START_TEST(test_jump_fetches_only_touched_chunks)
{
	struct cn_chunk_reader *r;
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 2, &r), 0);
	uint8_t buf[100];
	/* like a decoder following goodbye tables: the end, then one file */
	uint64_t end = (uint64_t)NCHUNKS * CHUNK;
	ck_assert_int_eq(cn_chunk_reader_read_at(r, end - 40, buf, 40), 0);
	ck_assert(memcmp(buf, data + end - 40, 40) == 0);
	uint64_t mid = 17 * (uint64_t)CHUNK - 50; /* straddles chunks 16 and 17 */
	ck_assert_int_eq(cn_chunk_reader_read_at(r, mid, buf, 100), 0);
	ck_assert(memcmp(buf, data + mid, 100) == 0);
	ck_assert_int_eq(cn_chunk_reader_read_at(r, mid + 10, buf, 20), 0); /* cached */
	cn_chunk_reader_free(r);
	int total = 0;
	for (int i = 0; i < NCHUNKS; i++)
		total += atomic_load(&src.fetches[i]);
	ck_assert_int_eq(total, 3);
	ck_assert_int_eq(atomic_load(&src.fetches[NCHUNKS - 1]), 1);
	ck_assert_int_eq(atomic_load(&src.fetches[16]), 1);
	ck_assert_int_eq(atomic_load(&src.fetches[17]), 1);
}
END_TEST

START_TEST(test_corrupt_chunk_named)
{
	src.chunks[5]->data[src.chunks[5]->len / 2] ^= 0x55;
	struct cn_chunk_reader *r;
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 2, &r), 0);
	uint8_t *out = malloc((size_t)NCHUNKS * CHUNK);
	int rc = cn_chunk_reader_read_at(r, 0, out, (size_t)NCHUNKS * CHUNK);
	ck_assert(rc == -CN_E_CRC || rc == -CN_E_DIGEST);
	char hex[65];
	cn_hex_encode(src.chunks[5]->digest, 32, hex);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), hex));
	/* the chunks before it were fine: reading them still works */
	ck_assert_int_eq(cn_chunk_reader_read_at(r, 0, out, 5 * CHUNK), 0);
	ck_assert(memcmp(out, data, 5 * CHUNK) == 0);
	cn_chunk_reader_free(r);
	free(out);
}
END_TEST

START_TEST(test_missing_chunk)
{
	src.missing = 30;
	struct cn_chunk_reader *r;
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 1, &r), 0);
	uint8_t buf[16];
	ck_assert_int_eq(cn_chunk_reader_read_at(r, 30 * (uint64_t)CHUNK + 5, buf, 16), -CN_E_MISSING);
	ck_assert_ptr_nonnull(strstr(cn_error_message(), "missing"));
	ck_assert_int_eq(cn_chunk_reader_read_at(r, (uint64_t)NCHUNKS * CHUNK, buf, 1), -ERANGE);
	cn_chunk_reader_free(r);
}
END_TEST

/* Views lend the cached chunk itself: the bytes at the offset up to the
 * chunk's end, which stay put while the view is held, even when every
 * other chunk passes through the cache meanwhile (the slot is pinned). */
START_TEST(test_view_pins_chunk)
{
	struct cn_chunk_reader *r;
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 2, &r), 0);
	const uint8_t *v, *w;
	size_t got, got2;
	void *tok, *tok2;
	ck_assert_int_eq(cn_chunk_reader_view_at(r, 100, SIZE_MAX, &v, &got, &tok), 0);
	ck_assert_uint_eq(got, CHUNK - 100);
	ck_assert(memcmp(v, data + 100, got) == 0);
	/* a second view inside the same chunk, shorter than its rest */
	ck_assert_int_eq(cn_chunk_reader_view_at(r, 5000, 10, &w, &got2, &tok2), 0);
	ck_assert_uint_eq(got2, 10);
	ck_assert_ptr_eq(w, v + 4900);
	cn_chunk_reader_release(r, tok2);
	/* everything else, through a cache of 2 x 2 + 5 slots */
	uint8_t *out = malloc((size_t)NCHUNKS * CHUNK);
	ck_assert_int_eq(cn_chunk_reader_read_at(r, CHUNK, out, (size_t)(NCHUNKS - 1) * CHUNK), 0);
	ck_assert(memcmp(out, data + CHUNK, (size_t)(NCHUNKS - 1) * CHUNK) == 0);
	ck_assert(memcmp(v, data + 100, got) == 0);
	cn_chunk_reader_release(r, tok);
	ck_assert_int_eq(atomic_load(&src.fetches[0]), 1);
	/* views end at chunk boundaries; errors as read_at */
	ck_assert_int_eq(cn_chunk_reader_view_at(r, 3 * (uint64_t)CHUNK - 1, 2, &v, &got, &tok), 0);
	ck_assert_uint_eq(got, 1);
	ck_assert_uint_eq(v[0], data[3 * CHUNK - 1]);
	cn_chunk_reader_release(r, tok);
	ck_assert_int_eq(cn_chunk_reader_view_at(r, (uint64_t)NCHUNKS * CHUNK, 1, &v, &got, &tok),
			 -ERANGE);
	ck_assert_int_eq(cn_chunk_reader_view_at(r, 0, 0, &v, &got, &tok), -EINVAL);
	cn_chunk_reader_release(r, NULL);
	cn_chunk_reader_free(r);
	src.missing = 7;
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 1, &r), 0);
	ck_assert_int_eq(cn_chunk_reader_view_at(r, 7 * (uint64_t)CHUNK, 1, &v, &got, &tok),
			 -CN_E_MISSING);
	cn_chunk_reader_free(r);
	free(out);
}
END_TEST

/* A reader that keeps views of its last few chunks (as writes still in
 * flight would) leaves fewer slots for read-ahead; the read-ahead must
 * then stop short rather than evict chunks it fetched and the reader has
 * not reached yet, which would be fetched (and checked) again. */
START_TEST(test_held_views_fetch_each_chunk_once)
{
	enum { HELD = 4 };
	struct cn_chunk_reader *r;
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 2, &r), 0);
	void *held[HELD] = {0};
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < NCHUNKS; i++) {
			const uint8_t *v;
			size_t got;
			cn_chunk_reader_release(r, held[i % HELD]);
			ck_assert_int_eq(cn_chunk_reader_view_at(r, (uint64_t)i * CHUNK, CHUNK, &v,
								 &got, &held[i % HELD]), 0);
			ck_assert_uint_eq(got, CHUNK);
			ck_assert(memcmp(v, data + (size_t)i * CHUNK, CHUNK) == 0);
		}
		for (int k = 0; k < HELD; k++) {
			cn_chunk_reader_release(r, held[k]);
			held[k] = NULL;
		}
		for (int i = 0; i < NCHUNKS; i++) {
			int fetched = atomic_load(&src.fetches[i]);
			ck_assert_msg(fetched == round + 1, "chunk %d fetched %d times in %d rounds",
				      i, fetched, round + 1);
		}
		/* the next round starts over at chunk 0, long evicted */
	}
	cn_chunk_reader_free(r);
}
END_TEST

/* Waits up to 5 s until chunk i has been fetched want times. */
static int fetched_within(int i, int want)
{
	for (int ms = 0; ms < 5000; ms++) {
		if (atomic_load(&src.fetches[i]) >= want)
			return 1;
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
	return 0;
}

START_TEST(test_sequential_hint_reads_ahead_from_the_start)
{
	uint8_t buf[16];
	struct cn_chunk_reader *r;
	/* without the hint one read fetches one chunk */
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 3, &r), 0);
	ck_assert_int_eq(cn_chunk_reader_read_at(r, 0, buf, 16), 0);
	cn_chunk_reader_free(r); /* (joins the workers: nothing left in flight) */
	ck_assert_int_eq(atomic_load(&src.fetches[0]), 1);
	for (int i = 1; i < NCHUNKS; i++)
		ck_assert_int_eq(atomic_load(&src.fetches[i]), 0);

	/* with it the first read asks for the next `threads` chunks */
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 3, &r), 0);
	cn_chunk_reader_sequential(r);
	ck_assert_int_eq(cn_chunk_reader_read_at(r, 0, buf, 16), 0);
	ck_assert(memcmp(buf, data, 16) == 0);
	for (int i = 1; i <= 3; i++)
		ck_assert_msg(fetched_within(i, 1), "chunk %d not read ahead", i);
	/* a jump afterwards follows the usual rule: only what it touches */
	uint64_t far = 30 * (uint64_t)CHUNK;
	ck_assert_int_eq(cn_chunk_reader_read_at(r, far, buf, 16), 0);
	ck_assert(memcmp(buf, data + far, 16) == 0);
	cn_chunk_reader_free(r);
	ck_assert_int_eq(atomic_load(&src.fetches[0]), 2);
	for (int i = 1; i <= 3; i++)
		ck_assert_int_eq(atomic_load(&src.fetches[i]), 1);
	ck_assert_int_eq(atomic_load(&src.fetches[4]), 0);
	ck_assert_int_eq(atomic_load(&src.fetches[30]), 1);
	for (int i = 31; i < NCHUNKS; i++)
		ck_assert_int_eq(atomic_load(&src.fetches[i]), 0);
}
END_TEST

/* A source whose reads from chunk 3 on never get an answer, as from a
 * stopped server: each waits until its caller no longer wants the chunk
 * (counted as cancelled) or 10 s pass (counted as timed out). */
static atomic_int stalled_started, stalled_cancelled, stalled_timed_out;

static int stalling_read_chunk(struct cn_source *s, const uint8_t digest[32],
			       const struct cn_chunk_sink *sink)
{
	struct mem_source *m = (struct mem_source *)s;
	for (int i = 0; i < NCHUNKS; i++) {
		if (memcmp(m->chunks[i]->digest, digest, 32))
			continue;
		atomic_fetch_add(&m->fetches[i], 1);
		if (i < 3) {
			sink->restart(sink->ctx);
			return sink->write(sink->ctx, m->chunks[i]->data, m->chunks[i]->len);
		}
		atomic_fetch_add(&stalled_started, 1);
		for (int ms = 0; ms < 10000; ms++) {
			if (sink->cancelled && sink->cancelled(sink->ctx)) {
				atomic_fetch_add(&stalled_cancelled, 1);
				return cn_error_set(-ECANCELED, "cancelled");
			}
			nanosleep(&(struct timespec){0, 1000000}, NULL);
		}
		atomic_fetch_add(&stalled_timed_out, 1);
		return cn_error_set(-ETIMEDOUT, "no answer");
	}
	return cn_error_set(-ENOENT, "no such chunk");
}

static const struct cn_source_ops stalling_ops = {.get_chunk = ms_get_chunk,
						  .read_chunk = stalling_read_chunk};

START_TEST(test_free_cancels_stalled_read_ahead)
{
	src.base.ops = &stalling_ops;
	atomic_store(&stalled_started, 0);
	atomic_store(&stalled_cancelled, 0);
	atomic_store(&stalled_timed_out, 0);
	struct cn_chunk_reader *r;
	ck_assert_int_eq(cn_chunk_reader_new(&src.base, idx, NULL, 3, &r), 0);
	uint8_t buf[16];
	/* three chunks in a row: read-ahead asks for chunks 3 to 5 */
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(cn_chunk_reader_read_at(r, (uint64_t)i * CHUNK, buf, 16), 0);
		ck_assert(memcmp(buf, data + (size_t)i * CHUNK, 16) == 0);
	}
	for (int ms = 0; ms < 5000 && atomic_load(&stalled_started) < 3; ms++)
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	ck_assert_int_eq(atomic_load(&stalled_started), 3);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	cn_chunk_reader_free(r);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_int_eq(atomic_load(&stalled_timed_out), 0);
	ck_assert_int_eq(atomic_load(&stalled_cancelled), 3);
	/* (a generous bound: the reads end at their next poll) */
	ck_assert(t1.tv_sec - t0.tv_sec < 5);
	src.base.ops = &ms_ops;
}
END_TEST

/* Large compressed chunks (decoded beyond what a slot keeps resident) are
 * decompressed into the slots' own buffers, not into memory allocated and
 * faulted in afresh for each chunk: the page faults a chunk costs stay
 * well below one per 4 KiB of it. */
#define BIG_N 16
#define BIG_CHUNK ((size_t)6 << 20)

START_TEST(test_large_chunks_reuse_decode_buffers)
{
	struct mem_source *big = calloc(1, sizeof(*big));
	ck_assert_ptr_nonnull(big);
	big->base.ops = &ms_ops;
	snprintf(big->base.name, sizeof(big->base.name), "big");
	big->missing = -1;
	uint8_t *plain = malloc(BIG_CHUNK);
	uint32_t x = 11;
	struct cn_index_writer *w;
	ck_assert_int_eq(cn_index_writer_new(CN_INDEX_DYNAMIC, NULL, 0, 0, 0, &w), 0);
	for (int i = 0; i < BIG_N; i++) {
		for (size_t k = 0; k < BIG_CHUNK; k++) { /* compresses about 3:1 */
			x = x * 1664525u + 1013904223u;
			plain[k] = (uint8_t)('a' + (x >> 29));
		}
		ck_assert_int_eq(cn_blob_encode_chunk(plain, BIG_CHUNK, NULL, CN_BLOB_COMPRESS,
						      &big->chunks[i]), 0);
		ck_assert_uint_lt(big->chunks[i]->len, BIG_CHUNK / 2);
		struct cn_index_entry e = {.end_offset = (uint64_t)(i + 1) * BIG_CHUNK};
		memcpy(e.digest, big->chunks[i]->digest, 32);
		ck_assert_int_eq(cn_index_writer_append(w, &e, 1), 0);
	}
	struct cn_buf file = {0};
	struct cn_index *bidx;
	ck_assert_int_eq(cn_index_writer_finish(w, &file, NULL), 0);
	cn_index_writer_free(w);
	ck_assert_int_eq(cn_index_parse(file.data, file.len, &bidx), 0);
	cn_buf_free(&file);

	struct cn_chunk_reader *r;
	ck_assert_int_eq(cn_chunk_reader_new(&big->base, bidx, NULL, 2, &r), 0);
	cn_chunk_reader_sequential(r);
	/* the slots' first use maps their buffers: counted from the second
	 * pass over the chunks on */
	struct rusage ru0, ru1;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1)
			getrusage(RUSAGE_SELF, &ru0);
		for (int i = 0; i < BIG_N; i++)
			ck_assert_int_eq(cn_chunk_reader_read_at(r, (uint64_t)i * BIG_CHUNK, plain,
								 BIG_CHUNK), 0);
	}
	getrusage(RUSAGE_SELF, &ru1);
	long per_chunk = (ru1.ru_minflt - ru0.ru_minflt) / BIG_N;
	/* 1,536 pages a chunk, of which the 512 beyond the 4 MiB a slot
	 * keeps are faulted in again: one fault per 2 MiB with huge pages
	 * (a buffer allocated per chunk: 750-1,536 faults) */
	long most = cn_test_thp_available() ? 64 : 600;
	ck_assert_msg(per_chunk < most, "%ld page faults per chunk (at most %ld)", per_chunk, most);
	cn_chunk_reader_free(r);
	cn_index_free(bidx);
	for (int i = 0; i < BIG_N; i++)
		cn_chunk_unref(big->chunks[i]);
	free(plain);
	free(big);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("chunk_reader");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_sequential_fetches_each_chunk_once);
	tcase_add_test(tc, test_jump_fetches_only_touched_chunks);
	tcase_add_test(tc, test_corrupt_chunk_named);
	tcase_add_test(tc, test_missing_chunk);
	tcase_add_test(tc, test_view_pins_chunk);
	tcase_add_test(tc, test_held_views_fetch_each_chunk_once);
	tcase_add_test(tc, test_sequential_hint_reads_ahead_from_the_start);
	tcase_add_test(tc, test_free_cancels_stalled_read_ahead);
	tcase_add_test(tc, test_large_chunks_reuse_decode_buffers);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
