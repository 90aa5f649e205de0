/* Encodes a directory tree (default /usr/include) as pxar into a counting
 * sink and reports throughput: the walker + encoder cost without
 * chunking or storage. Usage: bench_pxar_create [DIR [RUNS]] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/cn_error.h"
#include "pxar/cn_catalog_writer.h"
#include "engine/cn_walker.h"

static int count_out(void *ctx, const uint8_t *data, size_t len)
{
	(void)data;
	*(uint64_t *)ctx += len;
	return 0;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/usr/include";
	int runs = argc > 2 ? atoi(argv[2]) : 3;
	double best = 0;
	for (int r = 0; r < runs; r++) {
		uint64_t bytes = 0, cat_bytes = 0;
		struct cn_catalog_writer *cw;
		struct cn_pxar_create_stats st;
		struct cn_pxar_create_opts o = { .archive_name = "root.pxar.didx" };
		struct timespec a, b;
		if (cn_catalog_writer_new(count_out, &cat_bytes, &cw) < 0)
			return 1;
		clock_gettime(CLOCK_MONOTONIC, &a);
		int rc = cn_pxar_create(dir, &o, count_out, &bytes, cw, &st);
		if (rc == 0)
			rc = cn_catalog_writer_finish(cw);
		clock_gettime(CLOCK_MONOTONIC, &b);
		cn_catalog_writer_free(cw);
		if (rc < 0) {
			fprintf(stderr, "error: %s\n", cn_error_message());
			return 1;
		}
		double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
		uint64_t entries = st.files + st.dirs + st.symlinks + st.hardlinks + st.devices + st.fifos + st.sockets;
		printf("run %d: %llu entries, %.1f MiB archive, %.1f KiB catalog in %.3f s: %.0f MiB/s, %.0f entries/s\n",
		       r, (unsigned long long)entries, (double)bytes / 1048576.0, (double)cat_bytes / 1024.0, s,
		       (double)bytes / 1048576.0 / s, (double)entries / s);
		if (best == 0 || s < best)
			best = s;
	}
	return 0;
}
