/* bench_datastore — what the local datastore costs per operation:
 * creating a store (65536 dirs), opening it (index check), inserting new
 * chunks, re-inserting existing ones (the GC touch), has_chunk from LMDB
 * against a stat(2), and a GC pass.
 *
 * usage: bench_datastore DIR [chunks] [chunk_kib] [none|file|filesystem]
 * (DIR must not exist; default 2000 x 64 KiB, sync none) */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cn_error.h"
#include "store/cn_crypt.h"
#include "store/cn_datastore.h"
#include "store/cn_gc.h"

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, cn_error_message());
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [chunks] [chunk_kib]\n", argv[0]);
		return 2;
	}
	size_t n = argc > 2 ? (size_t)atol(argv[2]) : 2000;
	size_t len = (argc > 3 ? (size_t)atol(argv[3]) : 64) << 10;
	uint8_t *blob = malloc(len), (*digests)[32] = malloc(n * 32);
	if (!blob || !digests)
		return 1;
	for (size_t i = 0; i < len; i++)
		blob[i] = (uint8_t)(i * 7919 >> 3);
	struct cn_datastore *ds;
	struct cn_datastore_opts o;
	cn_datastore_opts_init(&o);
	const char *sync = argc > 4 ? argv[4] : "none";
	o.sync_level = !strcmp(sync, "file") ? CN_SYNC_FILE
		       : !strcmp(sync, "filesystem") ? CN_SYNC_FILESYSTEM : CN_SYNC_NONE;
	double t = now();
	if (cn_datastore_open(argv[1], 1, &o, &ds) < 0)
		return die("create");
	printf("create, open returns          %8.2f s\n", now() - t);
	if (cn_datastore_layout_wait(ds) < 0) /* the 65536 dirs, made by a helper thread */
		return die("create");
	printf("create (65536 dirs + index)   %8.2f s\n", now() - t);
	cn_datastore_close(ds);
	t = now();
	if (cn_datastore_open(argv[1], 0, &o, &ds) < 0)
		return die("open");
	printf("open (index check)            %8.3f s\n", now() - t);

	/* The blob bytes are not decoded by insert: vary the first bytes so
	 * every chunk is distinct; the digest is SHA-256 of the bytes. */
	t = now();
	for (size_t i = 0; i < n; i++) {
		memcpy(blob, &i, sizeof(i));
		cn_chunk_digest(NULL, blob, len, digests[i]);
	}
	double hash = now() - t;
	t = now();
	for (size_t i = 0; i < n; i++) {
		memcpy(blob, &i, sizeof(i));
		if (cn_datastore_insert_chunk(ds, digests[i], blob, len, NULL) < 0)
			return die("insert");
	}
	double ins = now() - t;
	printf("insert new (%zu x %zu KiB)    %8.1f us/chunk  %7.1f MiB/s  (sync %s)\n", n,
	       len >> 10, ins / (double)n * 1e6, (double)(n * len) / ins / 1048576.0, sync);
	t = now();
	for (size_t i = 0; i < n; i++)
		if (cn_datastore_insert_chunk(ds, digests[i], blob, len, NULL) < 0)
			return die("reinsert");
	printf("insert existing (touch)       %8.1f us/chunk\n", (now() - t) / (double)n * 1e6);
	int found = 0;
	t = now();
	for (int rep = 0; rep < 10; rep++)
		for (size_t i = 0; i < n; i++)
			found += cn_datastore_has_chunk(ds, digests[i]);
	printf("has_chunk (LMDB)              %8.2f us/lookup  (%d found)\n",
	       (now() - t) / (double)(10 * n) * 1e6, found);
	t = now();
	for (int rep = 0; rep < 10; rep++)
		for (size_t i = 0; i < n; i++) {
			char p[4096];
			struct stat st;
			cn_datastore_chunk_path(ds, digests[i], p, sizeof(p));
			found += stat(p, &st) == 0;
		}
	printf("stat(2) of the chunk file     %8.2f us/lookup  (for comparison)\n",
	       (now() - t) / (double)(10 * n) * 1e6);
	struct cn_gc_stats gs;
	t = now();
	if (cn_datastore_gc(ds, NULL, &gs) < 0)
		return die("gc");
	printf("gc, nothing to remove         %8.2f s  (%llu chunks kept)\n", now() - t,
	       (unsigned long long)(gs.disk_chunks + gs.pending_chunks));
	struct cn_gc_opts later = {.now = time(NULL) + 3 * 86400};
	t = now();
	if (cn_datastore_gc(ds, &later, &gs) < 0)
		return die("gc");
	printf("gc, all unreferenced removed  %8.2f s  (%llu chunks removed)\n", now() - t,
	       (unsigned long long)gs.removed_chunks);
	printf("(sha-256 of the test data: %.1f us/chunk, not included above)\n",
	       hash / (double)n * 1e6);
	cn_datastore_close(ds);
	free(blob);
	free(digests);
	return 0;
}
