/* cn_chunker — the content-defined chunker of proxmox-backup-client
 * (buzhash over a 64-byte window, upstream pbs-datastore/src/chunker.rs),
 * and fixed-size chunking for block images.
 *
 * For any input and any supported average size the dynamic chunker cuts
 * exactly where upstream cuts, whatever way the input is split into
 * cn_chunker_scan() calls.  Several implementations exist (a portable
 * byte-by-byte reference that mirrors upstream line by line, and fast paths:
 * a scalar one and SIMD ones); cn_chunker_new() picks the fastest one the CPU
 * supports, once per chunker (the CPU features come from libgcc's
 * __builtin_cpu_supports, which probes cpuid once per process; the chunker
 * keeps no global state of its own).  All of them give identical boundaries.
 *
 * Measured on the development machine (AMD EPYC Zen 5, random data, 4 MiB
 * average; bench/chunker): portable 1.4 GB/s, scalar 2.9, avx2 4.6,
 * avx512 10.2, against OpenSSL SHA-256 (SHA-NI) at 2.1 GB/s.
 *
 * The chunker does no I/O and never allocates while scanning.
 */
#ifndef CN_CHUNKER_H
#define CN_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

/* Average sizes: powers of two from 64 KiB to 4 MiB, the set upstream's
 * verify_chunk_size() accepts (client option --chunk-size).  The chunk size
 * lies in [avg/4, avg*4], except for the last chunk of a stream. */
#define CN_CHUNKER_MIN_AVG (64u << 10)
#define CN_CHUNKER_MAX_AVG (4u << 20)
#define CN_CHUNKER_DEFAULT_AVG (4u << 20)  /* pxar archives */
#define CN_CHUNKER_CATALOG_AVG (512u << 10) /* the catalog */

/* Largest len one cn_chunker_scan() call accepts (no real buffer is larger;
 * a bigger len is a caller bug, e.g. a negative size cast to size_t). */
#define CN_CHUNKER_SCAN_MAX ((size_t)PTRDIFF_MAX)

/* What cn_chunker_scan() returns for invalid arguments. */
#define CN_CHUNKER_ERROR ((size_t)-1)

struct cn_chunker; /* opaque: buzhash state of the current chunk */

/* Creates a chunker with the given average chunk size, using the fastest
 * implementation this CPU supports.  Returns 0 and sets *out (free with
 * cn_chunker_free()), or -EINVAL (avg_size not a power of two in
 * [CN_CHUNKER_MIN_AVG, CN_CHUNKER_MAX_AVG], or out NULL) or -ENOMEM, with a
 * message. */
int cn_chunker_new(size_t avg_size, struct cn_chunker **out);

/* Frees a chunker (NULL is fine). */
void cn_chunker_free(struct cn_chunker *c);

/* Forgets the current chunk: the next byte scanned starts a new chunk. */
void cn_chunker_reset(struct cn_chunker *c);

/* Upstream scan() semantics.  Consumes data[0..len) looking for the end of
 * the current chunk.  Returns
 *   0        no boundary in data; all of it was consumed (call again with
 *            the following bytes);
 *   p > 0    the current chunk ends after data[p-1]; the state is reset for
 *            the next chunk and data[p..len) was NOT consumed (pass it again);
 *   CN_CHUNKER_ERROR  c NULL, data NULL with len > 0, or len larger than
 *            CN_CHUNKER_SCAN_MAX: nothing consumed, state unchanged, and
 *            cn_error_code() is -EINVAL (NULL) or -EOVERFLOW (len), with a
 *            message.
 * len == 0 is valid and returns 0.  data is borrowed for the call only. */
size_t cn_chunker_scan(struct cn_chunker *c, const uint8_t *data, size_t len);

/* Bytes consumed so far in the current (unfinished) chunk. */
uint64_t cn_chunker_pending(const struct cn_chunker *c);

/* The average, minimum and maximum chunk size of this chunker. */
size_t cn_chunker_avg_size(const struct cn_chunker *c);
size_t cn_chunker_min_size(const struct cn_chunker *c);
size_t cn_chunker_max_size(const struct cn_chunker *c);

/* --- implementations (for tests and the benchmark) ---------------------- */

/* Number of implementations compiled in; index 0 is the portable reference
 * (always supported). */
int cn_chunker_impl_count(void);
/* Short name of implementation i ("portable", "scalar", "avx2", "avx512"),
 * or NULL when i is out of range. */
const char *cn_chunker_impl_name(int i);
/* 1 when this CPU can run implementation i, else 0. */
int cn_chunker_impl_supported(int i);
/* The implementation cn_chunker_new() picks on this CPU. */
int cn_chunker_impl_best(void);
/* Like cn_chunker_new() with a given implementation.  Returns -EINVAL for
 * an unknown index and -ENOTSUP when the CPU cannot run it. */
int cn_chunker_new_impl(size_t avg_size, int impl, struct cn_chunker **out);
/* The implementation index a chunker uses. */
int cn_chunker_impl(const struct cn_chunker *c);

/* --- fixed-size chunking (images, .fidx) --------------------------------- */

/* Upstream's image chunk size (FixedChunkStream default; the server's fixed
 * index requires it). */
#define CN_FIXED_CHUNK_SIZE (4u << 20)

/* Number of chunks of an image of image_size bytes cut into chunk_size
 * pieces (the last one holds the remainder).  chunk_size must be one of the
 * sizes upstream accepts (power of two, 64 KiB..4 MiB); an empty image is
 * refused as upstream's client does.  Returns 0 and sets *count, or -EINVAL
 * with a message. */
int cn_fixed_chunk_count(uint64_t image_size, size_t chunk_size, uint64_t *count);

/* Offset and length of chunk i of such an image.  Returns 0, or -EINVAL
 * (bad sizes as above) or -ERANGE (i >= count) with a message. */
int cn_fixed_chunk_at(uint64_t image_size, size_t chunk_size, uint64_t i,
		      uint64_t *offset, size_t *len);

#endif
