/* bench/blob — CPU cost of DataBlob encoding with and without the
 * incompressibility probe, on three data sets measured in one run:
 *
 *   media:  already-compressed files found on this machine (.jpg .png .gz
 *           .xz .zst .mp4 .zip .bz2 ...) — what a photo vault holds
 *   random: pseudo-random bytes (the worst case for zstd)
 *   text:   source/text files (compressible; shows what the probe costs)
 *
 * Every set is cut into 4 MiB chunks (the default average chunk size) and
 * encoded single-threaded as upstream does (zstd level 1 always tried:
 * CN_BLOB_COMPRESS_ALWAYS) and with the probe (CN_BLOB_COMPRESS); plain and
 * encrypted. Reported: process CPU time (best of R rounds), throughput,
 * stored/plain ratio, and the CPU saved by the probe. First, the CRC-32 of
 * every blob alone: each implementation the CPU runs (the portable
 * slice-by-8 and the carry-less-multiplication kernels) over the same
 * 4 MiB chunks.
 *
 * usage: bench_blob [--mb N] [--rounds R] [--media DIR] [--text DIR] */
#include <dirent.h>
#include <strings.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_crc32.h"
#include "store/cn_crypt.h"

#define CHUNK (4u << 20)

static int has_suffix(const char *p, const char *const *sfx)
{
	size_t n = strlen(p);
	for (; *sfx; sfx++) {
		size_t k = strlen(*sfx);
		if (n > k && strcasecmp(p + n - k, *sfx) == 0)
			return 1;
	}
	return 0;
}

/* Appends regular files under dir whose names end in one of sfx (sorted
 * order within a directory, so a run is repeatable) until out holds
 * limit bytes. With seen != NULL, a file whose content was already taken
 * (same SHA-256) is skipped: seen collects the digests. */
static void collect(const char *dir, const char *const *sfx, size_t limit, struct cn_buf *out,
		    struct cn_buf *seen)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort);
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (names[i]->d_name[0] != '.' && out->len < limit && lstat(path, &st) == 0) {
			if (S_ISDIR(st.st_mode)) {
				collect(path, sfx, limit, out, seen);
			} else if (S_ISREG(st.st_mode) && st.st_size >= 4096 && has_suffix(path, sfx)) {
				uint8_t *data;
				size_t len;
				if (cn_read_file(path, 256u << 20, &data, &len) == 0) {
					size_t room = limit - out->len;
					uint8_t d[32];
					int dup = 0;
					if (seen) {
						cn_chunk_digest(NULL, data, len, d);
						for (size_t k = 0; k < seen->len && !dup; k += 32)
							dup = memcmp(seen->data + k, d, 32) == 0;
						if (!dup)
							cn_buf_append(seen, d, 32);
					}
					if (!dup)
						cn_buf_append(out, data, len < room ? len : room);
					free(data);
				}
			}
		}
		free(names[i]);
	}
	if (n >= 0)
		free(names);
}

static double cpu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct result {
	double cpu;   /* seconds, best round */
	size_t stored;
	size_t zstd_chunks, chunks;
};

/* Encodes every 4 MiB chunk of data; with_digest: the whole chunk path
 * (cn_blob_encode_chunk_ctx: SHA-256 digest + blob) instead of the blob. */
static struct result run(struct cn_blob_ctx *ctx, const struct cn_buf *data,
			 const struct cn_crypt_config *crypt, int mode, int rounds, int with_digest)
{
	struct result res = {1e9, 0, 0, 0};
	struct cn_buf out = {0};
	for (int r = 0; r < rounds; r++) {
		size_t stored = 0, z = 0, n = 0;
		double t0 = cpu_now();
		for (size_t off = 0; off < data->len; off += CHUNK) {
			size_t len = data->len - off < CHUNK ? data->len - off : CHUNK;
			int type, rc;
			if (with_digest) {
				struct cn_chunk *c = NULL;
				rc = cn_blob_encode_chunk_ctx(ctx, data->data + off, len, crypt, mode, &c);
				type = rc < 0 ? rc : cn_blob_type(c->data, c->len);
				stored += rc < 0 ? 0 : c->len;
				cn_chunk_unref(c);
			} else {
				enum cn_blob_type t;
				out.len = 0;
				rc = cn_blob_encode_ctx(ctx, data->data + off, len, crypt, mode, &out, &t);
				type = (int)t;
				stored += out.len;
			}
			if (rc < 0) {
				fprintf(stderr, "encode failed\n");
				exit(1);
			}
			z += type == CN_BLOB_ZSTD || type == CN_BLOB_ENCRYPTED_ZSTD;
			n++;
		}
		double t = cpu_now() - t0;
		if (t < res.cpu)
			res.cpu = t;
		res.stored = stored, res.zstd_chunks = z, res.chunks = n;
	}
	cn_buf_free(&out);
	return res;
}

/* CPU seconds (best of rounds) of implementation impl's CRC-32 over every
 * 4 MiB chunk of data; *sum collects the results (compared across impls). */
static double run_crc(int impl, const struct cn_buf *data, int rounds, uint32_t *sum)
{
	double best = 1e9;
	for (int r = 0; r < rounds; r++) {
		uint32_t acc = 0;
		double t0 = cpu_now();
		for (size_t off = 0; off < data->len; off += CHUNK) {
			size_t len = data->len - off < CHUNK ? data->len - off : CHUNK;
			acc ^= cn_crc32_impl(impl, 0, data->data + off, len) + (uint32_t)off;
		}
		double t = cpu_now() - t0;
		if (t < best)
			best = t;
		*sum = acc;
	}
	return best;
}

/* Every CRC-32 implementation this CPU runs, on the same data. */
static void bench_crc(const struct cn_buf *data, int rounds)
{
	double mib = (double)data->len / (1 << 20), base = 0;
	uint32_t want = 0;
	printf("CRC-32 of %.0f MiB in 4 MiB chunks (cn_crc32 uses %s):\n", mib,
	       cn_crc32_impl_name(cn_crc32_impl_best()));
	for (int i = 0; i < cn_crc32_impl_count(); i++) {
		if (!cn_crc32_impl_supported(i)) {
			printf("  %-11s (not supported by this CPU)\n", cn_crc32_impl_name(i));
			continue;
		}
		uint32_t sum = 0;
		double t = run_crc(i, data, rounds, &sum);
		if (i == 0)
			base = t, want = sum;
		printf("  %-11s %8.2f ms %9.0f MiB/s  x%.1f%s\n", cn_crc32_impl_name(i), t * 1e3,
		       mib / t, base / t, sum == want ? "" : "  WRONG RESULT");
	}
	printf("\n");
}

int main(int argc, char **argv)
{
	static const char *const media_sfx[] = {".jpg", ".jpeg", ".png", ".heic", ".mp4", ".mov",
						".gz", ".xz", ".zst", ".bz2", ".zip", ".webp", NULL};
	static const char *const text_sfx[] = {".h", ".c", ".txt", ".py", ".pl", ".md", ".html", NULL};
	size_t mb = 64;
	int rounds = 3;
	const char *media_dir = "/usr/share", *text_dir = "/usr/include";
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--mb"))
			mb = (size_t)atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--rounds"))
			rounds = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--media"))
			media_dir = argv[i + 1];
		else if (!strcmp(argv[i], "--text"))
			text_dir = argv[i + 1];
		else {
			fprintf(stderr, "usage: %s [--mb N] [--rounds R] [--media DIR] [--text DIR]\n", argv[0]);
			return 2;
		}
	}
	size_t limit = mb << 20;
	enum { MEDIA_UNIQ, MEDIA_ALL, RANDOM, TEXT, NSETS };
	struct cn_buf sets[NSETS] = {{0}}, seen = {0};
	const char *names[NSETS] = {"media-uniq", "media-all", "random", "text"};
	collect(media_dir, media_sfx, limit, &sets[MEDIA_UNIQ], &seen);
	collect(media_dir, media_sfx, limit, &sets[MEDIA_ALL], NULL);
	cn_buf_reserve(&sets[RANDOM], limit);
	uint64_t x = 0x2545f4914f6cdd1dull;
	for (size_t i = 0; i < limit; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		sets[RANDOM].data[i] = (uint8_t)(x >> 24);
	}
	sets[RANDOM].len = limit;
	collect(text_dir, text_sfx, limit, &sets[TEXT], NULL);

	struct cn_blob_ctx *ctx;
	struct cn_crypt_config *crypt;
	uint8_t key[32] = {1, 2, 3};
	if (cn_blob_ctx_new(&ctx) < 0 || cn_crypt_config_new(key, &crypt) < 0)
		return 1;

	printf("bench_blob: 4 MiB chunks, single thread, CPU time, best of %d rounds\n", rounds);
	bench_crc(&sets[RANDOM], rounds);
	printf("media-uniq: compressed files under %s, each distinct file once (a photo vault);\n"
	       "media-all: the same files with their duplicates (Debian ships many identical .gz)\n\n",
	       media_dir);
	printf("%-10s %-7s %6s  %-20s %8s %7s %7s %6s\n", "set", "crypt", "MiB", "mode", "cpu ms",
	       "MiB/s", "stored", "zstd");
	for (int s = 0; s < NSETS; s++) {
		if (sets[s].len == 0) {
			printf("%-10s (no files found)\n", names[s]);
			continue;
		}
		double mib = (double)sets[s].len / (1 << 20);
		for (int e = 0; e < 2; e++) {
			const struct cn_crypt_config *c = e ? crypt : NULL;
			struct result rs[3] = {
				run(ctx, &sets[s], c, CN_BLOB_COMPRESS_ALWAYS, rounds, 0),
				run(ctx, &sets[s], c, CN_BLOB_COMPRESS, rounds, 0),
				run(ctx, &sets[s], c, CN_BLOB_COMPRESS_NONE, rounds, 0),
			};
			const char *modes[3] = {"zstd always (upstr.)", "probe, then zstd", "no compression"};
			for (int m = 0; m < 3; m++)
				printf("%-10s %-7s %6.1f  %-20s %8.1f %7.0f %6.1f%% %2zu/%zu\n", names[s],
				       e ? "aes-gcm" : "plain", mib, modes[m], rs[m].cpu * 1e3,
				       mib / rs[m].cpu, 100.0 * (double)rs[m].stored / (double)sets[s].len,
				       rs[m].zstd_chunks, rs[m].chunks);
			/* the whole chunk path, SHA-256 digest included */
			struct result fa = run(ctx, &sets[s], c, CN_BLOB_COMPRESS_ALWAYS, rounds, 1);
			struct result fp = run(ctx, &sets[s], c, CN_BLOB_COMPRESS, rounds, 1);
			printf("%-10s %-7s   => probe saves %.1f%% of blob CPU (%.2f ms/chunk), %.1f%% of "
			       "chunk CPU with digest; stored %+.2f%%\n",
			       names[s], e ? "aes-gcm" : "plain", 100.0 * (rs[0].cpu - rs[1].cpu) / rs[0].cpu,
			       (rs[0].cpu - rs[1].cpu) * 1e3 / (double)rs[0].chunks,
			       100.0 * (fa.cpu - fp.cpu) / fa.cpu,
			       100.0 * ((double)rs[1].stored - (double)rs[0].stored) / (double)rs[0].stored);
		}
	}
	/* the probe alone */
	double t0 = cpu_now();
	int verdicts = 0;
	size_t probes = 0;
	for (int k = 0; k < 20; k++)
		for (size_t off = 0; off + CHUNK <= sets[RANDOM].len; off += CHUNK, probes++)
			verdicts += cn_blob_probe_incompressible(sets[RANDOM].data + off, CHUNK);
	double per = (cpu_now() - t0) / (double)(probes ? probes : 1);
	printf("probe alone: %.1f us per 4 MiB chunk (with its own zstd context), %d/%zu judged "
	       "incompressible\n", per * 1e6, verdicts, probes);
	for (int s = 0; s < NSETS; s++)
		cn_buf_free(&sets[s]);
	cn_buf_free(&seen);
	cn_blob_ctx_free(ctx);
	cn_crypt_config_free(crypt);
	return 0;
}
