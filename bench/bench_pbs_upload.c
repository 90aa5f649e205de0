/* bench/pbs_upload — upload throughput of the PBS target (net/) against
 * the PBS emulator on loopback: one target, then two targets fed the same
 * encoded chunks in turn (the engine's fan-out), as MB/s of plain data,
 * and, in the same run, the local-datastore target with the same chunks
 * (default sync level: one syncfs before publish) for comparison.
 * Chunks are pre-encoded (4 MiB, incompressible, plain DataBlobs) so only
 * the network path is timed. Also reported: CPU seconds of this process
 * and of the emulator(s) during the run, to tell which side limits.
 *
 * usage: bench_pbs_upload [--mb N] [--inflight N]
 * (run from the source tree, or set CN_TEST_SRCDIR to it) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>

#include "common/cn_error.h"
#include "engine/cn_target_local.h"
#include "net/cn_pbs_target.h"
#include "store/cn_datastore.h"
#include "store/cn_blob.h"
#include "store/cn_crypt.h"
#include "tests/net/pbs_emu.h"

#define CHUNK (4u << 20)

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double self_cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static int fail(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, cn_error_message());
	return 1;
}

/* One snapshot to every target: all chunks into one dynamic index. */
static int run(struct cn_target **t, int nt, struct cn_chunk **chunks, int n, int64_t time, const char *manifest)
{
	struct cn_snapshot_id id = {.type = "host", .id = "bench", .time = time};
	int h[2];
	for (int k = 0; k < nt; k++) {
		struct cn_buf prev = {0};
		int64_t pt;
		if (t[k]->ops->begin(t[k], &id, &prev, &pt) < 0)
			return fail("begin");
		cn_buf_free(&prev);
		if ((h[k] = t[k]->ops->index_open(t[k], "data.pxar.didx", CN_INDEX_DYNAMIC, 0, 0)) < 0)
			return fail("index_open");
	}
	uint64_t end = 0;
	EVP_MD_CTX *csum = EVP_MD_CTX_new();
	EVP_DigestInit_ex(csum, EVP_sha256(), NULL);
	for (int i = 0; i < n; i++) {
		struct cn_index_entry e;
		uint8_t le[8];
		end += chunks[i]->plain_size;
		e.end_offset = end;
		memcpy(e.digest, chunks[i]->digest, 32);
		cn_put_le64(le, end);
		EVP_DigestUpdate(csum, le, 8);
		EVP_DigestUpdate(csum, e.digest, 32);
		for (int k = 0; k < nt; k++)
			if (t[k]->ops->put_chunk(t[k], chunks[i]) < 0 ||
			    t[k]->ops->index_append(t[k], h[k], &e, 1) < 0)
				return fail("upload");
	}
	uint8_t cs[32];
	unsigned int cl = 32;
	EVP_DigestFinal_ex(csum, cs, &cl);
	EVP_MD_CTX_free(csum);
	struct cn_buf blob = {0};
	if (cn_blob_encode((const uint8_t *)manifest, strlen(manifest), NULL, CN_BLOB_COMPRESS, &blob) < 0)
		return fail("manifest");
	for (int k = 0; k < nt; k++)
		if (t[k]->ops->index_close(t[k], h[k], (uint64_t)n, end, cs) < 0 ||
		    t[k]->ops->put_blob(t[k], "index.json.blob", blob.data, blob.len) < 0 ||
		    t[k]->ops->finish(t[k]) < 0)
			return fail("finish");
	cn_buf_free(&blob);
	return 0;
}

int main(int argc, char **argv)
{
	int mb = 256, inflight = 64;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--mb"))
			mb = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--inflight"))
			inflight = atoi(argv[i + 1]);
	}
	int n = mb / 4 > 0 ? mb / 4 : 1;
	struct cn_chunk **chunks = calloc((size_t)n, sizeof(*chunks));
	uint8_t *buf = malloc(CHUNK);
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < n; i++) {
		for (size_t k = 0; k < CHUNK; k += 8) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			memcpy(buf + k, &x, 8);
		}
		if (cn_blob_encode_chunk(buf, CHUNK, NULL, CN_BLOB_COMPRESS_NONE, &chunks[i]) < 0)
			return fail("encode");
	}
	free(buf);

	struct pbs_emu emu[2] = {0};
	struct cn_pbs *conn[2];
	for (int k = 0; k < 2; k++)
		if (pbs_emu_start(&emu[k], NULL) < 0 ||
		    pbs_emu_connect(&emu[k], PBS_EMU_TOKEN_ID, PBS_EMU_TOKEN_SECRET, emu[k].fp, &conn[k]) < 0)
			return fail("emulator");

	printf("%d MiB in %d chunks of 4 MiB, %d uploads in flight per target\n", n * 4, n, inflight);
	for (int nt = 1; nt <= 2; nt++) {
		struct cn_target *t[2];
		struct cn_pbs_target_opts o = {.max_inflight = inflight};
		for (int k = 0; k < nt; k++)
			if (cn_pbs_target_new(conn[k], &o, &t[k]) < 0)
				return fail("target");
		char manifest[256];
		int64_t time = 1700000000 + nt;
		snprintf(manifest, sizeof(manifest),
			 "{\"backup-type\":\"host\",\"backup-id\":\"bench\",\"backup-time\":%lld,\"files\":[],"
			 "\"signature\":null,\"unprotected\":{}}", (long long)time);
		double c0 = self_cpu(), e0 = pbs_emu_cpu_seconds(&emu[0]) + pbs_emu_cpu_seconds(&emu[1]);
		double t0 = now();
		int r = run(t, nt, chunks, n, time, manifest);
		double dt = now() - t0;
		double c1 = self_cpu(), e1 = pbs_emu_cpu_seconds(&emu[0]) + pbs_emu_cpu_seconds(&emu[1]);
		for (int k = 0; k < nt; k++)
			t[k]->ops->destroy(t[k]);
		if (r)
			return r;
		printf("%d target%s: %.1f s, %.1f MB/s of data (%.1f MB/s sent in total); "
		       "CPU: client %.1f s, emulator%s %.1f s\n",
		       nt, nt > 1 ? "s" : " ", dt, n * 4.194304 / dt, nt * n * 4.194304 / dt, c1 - c0,
		       nt > 1 ? "s" : "", e1 - e0);
	}

	/* The local datastore target, same chunks, same snapshot shape. The
	 * store (65536 chunk directories) is created before timing. */
	char dir[] = "/var/tmp/cairn-bench-upload-XXXXXX";
	struct cn_datastore *ds;
	struct cn_target *lt;
	if (!mkdtemp(dir))
		return fail("mkdtemp");
	char path[64];
	snprintf(path, sizeof(path), "%s/store", dir);
	/* (the store's directories first: the figures are the upload's) */
	if (cn_datastore_open(path, 1, NULL, &ds) < 0 || cn_datastore_layout_wait(ds) < 0 ||
	    cn_target_local_new(ds, &lt) < 0)
		return fail("local store");
	{
		char manifest[256];
		int64_t time = 1700000010;
		snprintf(manifest, sizeof(manifest),
			 "{\"backup-type\":\"host\",\"backup-id\":\"bench\",\"backup-time\":%lld,\"files\":[],"
			 "\"signature\":null,\"unprotected\":{}}", (long long)time);
		double c0 = self_cpu(), t0 = now();
		int r = run(&lt, 1, chunks, n, time, manifest);
		double dt = now() - t0, c1 = self_cpu();
		lt->ops->destroy(lt);
		cn_datastore_close(ds);
		if (r)
			return r;
		printf("local datastore: %.1f s, %.1f MB/s of data; CPU %.1f s\n", dt,
		       n * 4.194304 / dt, c1 - c0);
	}
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);

	for (int k = 0; k < 2; k++) {
		cn_pbs_free(conn[k]);
		pbs_emu_cleanup(&emu[k]);
	}
	for (int i = 0; i < n; i++)
		cn_chunk_unref(chunks[i]);
	free(chunks);
	return 0;
}
