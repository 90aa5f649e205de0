/* bench/chunker — chunker throughput against memcpy, SHA-256 and zstd -1,
 * and a way to see boundaries from outside.
 *
 *   chunker [--size MIB] [--reps N] [--avg-size BYTES]
 *       On an in-memory random buffer and a low-entropy (text-like) one:
 *       GB/s of memcpy, OpenSSL SHA-256, zstd level 1 and each chunker
 *       implementation (median of N runs, timed in thread CPU time), and
 *       the ratios chunker/SHA-256 and chunker/memcpy.
 *   chunker --boundaries FILE [--avg-size BYTES]
 *       Prints the end offset of every chunk of FILE (as the client cuts
 *       it: the last chunk holds the rest), one per line, nothing else.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "chunker/cn_chunker.h"
#include "common/cn_error.h"

#define MiB (1024u * 1024u)
#define PIECE (4u * MiB) /* unit for SHA-256 and zstd, like a chunk */

static int print_boundaries(const char *path, size_t avg)
{
	struct cn_chunker *c;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "chunker: %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (cn_chunker_new(avg, &c) < 0) {
		fprintf(stderr, "chunker: %s\n", cn_error_message());
		close(fd);
		return 2;
	}
	uint8_t *buf = malloc(MiB);
	uint64_t total = 0, last_end = 0;
	int rc = 0;
	for (;;) {
		ssize_t n = buf ? read(fd, buf, MiB) : -1;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "chunker: %s: %s\n", path, strerror(buf ? errno : ENOMEM));
			rc = 1;
			break;
		}
		if (n == 0)
			break;
		/* scan every byte once; after a boundary rescan the rest */
		size_t off = 0;
		while (off < (size_t)n) {
			size_t p = cn_chunker_scan(c, buf + off, (size_t)n - off);
			if (p == 0)
				break;
			off += p;
			last_end = total + off;
			printf("%" PRIu64 "\n", last_end);
		}
		total += (uint64_t)n;
	}
	if (rc == 0 && total > last_end)
		printf("%" PRIu64 "\n", total);
	free(buf);
	cn_chunker_free(c);
	close(fd);
	if (fflush(stdout) != 0)
		rc = 1;
	return rc;
}

/* CPU time of this thread: the machine may be shared, and time spent
 * descheduled says nothing about the code. */
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

enum what { W_MEMCPY, W_SHA256, W_ZSTD, W_CHUNKER };

struct ctx {
	const uint8_t *data;
	size_t len;
	uint8_t *dst;
	size_t dst_cap;
	ZSTD_CCtx *zc;
	size_t avg;
	size_t chunks; /* chunks found by the last chunker run */
};

/* One timed pass over the buffer; returns seconds. */
static double run_once(struct ctx *x, enum what w, int impl)
{
	double t0 = now();
	switch (w) {
	case W_MEMCPY:
		memcpy(x->dst, x->data, x->len);
		break;
	case W_SHA256:
		for (size_t off = 0; off < x->len; off += PIECE) {
			uint8_t md[32];
			size_t n = x->len - off < PIECE ? x->len - off : PIECE;
			EVP_Digest(x->data + off, n, md, NULL, EVP_sha256(), NULL);
			x->dst[0] ^= md[0];
		}
		break;
	case W_ZSTD:
		for (size_t off = 0; off < x->len; off += PIECE) {
			size_t n = x->len - off < PIECE ? x->len - off : PIECE;
			size_t r = ZSTD_compressCCtx(x->zc, x->dst, x->dst_cap, x->data + off, n, 1);
			if (ZSTD_isError(r))
				return -1;
		}
		break;
	case W_CHUNKER: {
		struct cn_chunker *c;
		if (cn_chunker_new_impl(x->avg, impl, &c) < 0)
			return -1;
		size_t off = 0, n = 0, p;
		t0 = now();
		while (off < x->len && (p = cn_chunker_scan(c, x->data + off, x->len - off)) != 0) {
			off += p;
			n++;
		}
		x->chunks = n + (off < x->len);
		cn_chunker_free(c);
		break;
	}
	}
	return now() - t0;
}

static double median_gbps(struct ctx *x, enum what w, int impl, int reps)
{
	double t[64];
	if (reps > 64)
		reps = 64;
	for (int i = 0; i < reps; i++) {
		t[i] = run_once(x, w, impl);
		if (t[i] < 0)
			return 0;
	}
	qsort(t, (size_t)reps, sizeof(double), cmp_double);
	return x->len / t[reps / 2] / 1e9;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_random(uint8_t *d, size_t len)
{
	uint64_t s = 1;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t r = splitmix(&s);
		memcpy(d + i, &r, 8);
	}
	memset(d + (len & ~(size_t)7), 0x5a, len & 7);
}

/* Low entropy: words of a small vocabulary and long zero runs, the kind
 * of bytes logs, sources and sparse images are made of. */
static void fill_low_entropy(uint8_t *d, size_t len)
{
	static const char *words[] = {"the ", "backup ", "chunk ", "index ", "static ", "int ",
				      "return ", "\n", "proxmox ", "server ", "\t", "0 "};
	uint64_t s = 2;
	size_t pos = 0;
	while (pos < len) {
		uint64_t r = splitmix(&s);
		if (r % 1000 == 0) {
			size_t n = (size_t)(r >> 16) % (256 * 1024);
			n = n < len - pos ? n : len - pos;
			memset(d + pos, 0, n);
			pos += n;
			continue;
		}
		const char *w = words[(r >> 8) % (sizeof(words) / sizeof(words[0]))];
		for (; *w && pos < len; w++)
			d[pos++] = (uint8_t)*w;
	}
}

static void bench_buffer(const char *name, struct ctx *x, int reps)
{
	double mc = median_gbps(x, W_MEMCPY, 0, reps);
	double sha = median_gbps(x, W_SHA256, 0, reps);
	double zs = median_gbps(x, W_ZSTD, 0, reps);
	printf("== %s buffer, %zu MiB, avg chunk %zu KiB, median of %d (thread CPU time) ==\n", name, x->len / MiB,
	       x->avg / 1024, reps);
	printf("%-22s %8.2f GB/s\n", "memcpy", mc);
	printf("%-22s %8.2f GB/s\n", "sha256 (openssl)", sha);
	printf("%-22s %8.2f GB/s\n", "zstd -1", zs);
	int best = cn_chunker_impl_best();
	for (int i = 0; i <= cn_chunker_impl_count(); i++) {
		int impl = i < cn_chunker_impl_count() ? i : best;
		if (!cn_chunker_impl_supported(impl))
			continue;
		double g = median_gbps(x, W_CHUNKER, impl, reps);
		char label[64];
		snprintf(label, sizeof(label), "chunker %s%s", i < cn_chunker_impl_count() ? "" : "dispatched=",
			 cn_chunker_impl_name(impl));
		printf("%-22s %8.2f GB/s  x%.2f sha256  x%.2f memcpy  (%zu chunks)\n", label, g,
		       g / sha, g / mc, x->chunks);
	}
}

static int usage(void)
{
	fprintf(stderr, "usage: chunker [--size MIB] [--reps N] [--avg-size BYTES]\n"
			"       chunker --boundaries FILE [--avg-size BYTES]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *bfile = NULL;
	size_t avg = CN_CHUNKER_DEFAULT_AVG, size_mib = 128;
	int reps = 5;
	for (int i = 1; i < argc; i++) {
		char *end;
		if (!strcmp(argv[i], "--boundaries") && i + 1 < argc) {
			bfile = argv[++i];
		} else if (!strcmp(argv[i], "--avg-size") && i + 1 < argc) {
			avg = strtoull(argv[++i], &end, 10);
			if (*end)
				return usage();
		} else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			size_mib = strtoull(argv[++i], &end, 10);
			if (*end || size_mib == 0)
				return usage();
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = atoi(argv[++i]);
			if (reps < 1)
				return usage();
		} else {
			return usage();
		}
	}
	if (bfile)
		return print_boundaries(bfile, avg);

	struct cn_chunker *probe;
	if (cn_chunker_new(avg, &probe) < 0) {
		fprintf(stderr, "chunker: %s\n", cn_error_message());
		return 2;
	}
	cn_chunker_free(probe);
	struct ctx x = {.len = size_mib * MiB, .avg = avg};
	uint8_t *data = malloc(x.len);
	x.dst_cap = x.len > ZSTD_compressBound(PIECE) ? x.len : ZSTD_compressBound(PIECE);
	x.dst = malloc(x.dst_cap);
	x.zc = ZSTD_createCCtx();
	if (!data || !x.dst || !x.zc) {
		fprintf(stderr, "chunker: out of memory\n");
		return 1;
	}
	x.data = data;
	printf("dispatched implementation: %s\n", cn_chunker_impl_name(cn_chunker_impl_best()));
	fill_random(data, x.len);
	memset(x.dst, 1, x.dst_cap); /* fault the pages in before timing */
	bench_buffer("random", &x, reps);
	fill_low_entropy(data, x.len);
	bench_buffer("low-entropy", &x, reps);
	ZSTD_freeCCtx(x.zc);
	free(x.dst);
	free(data);
	return 0;
}
