/* cairn benchmark — measures on this machine the pieces a backup's speed
 * is made of, like `proxmox-backup-client benchmark`: chunking, SHA-256,
 * zstd compression and decompression, AES-256-GCM, and the whole per-chunk
 * encoding a backup worker does, single-threaded, on 4 MiB buffers.
 *   cairn benchmark [--seconds S] [--output-format json]
 * The end-to-end harness (backup, no-change re-run, restore, compared with
 * restic/borg) is bench/backup. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunker/cn_chunker.h"
#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "common/cn_util.h"
#include "store/cn_blob.h"
#include "store/cn_crypt.h"

#define BUF (4u << 20)

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn benchmark [--seconds S] [--output-format json]\n\n"
		   "Measures single-threaded throughput of chunking (buzhash), SHA-256, zstd\n"
		   "level 1 compression and decompression, AES-256-GCM and the complete chunk\n"
		   "encoding (digest, probe, zstd, CRC) on 4 MiB buffers, S seconds each\n"
		   "(default 1). A backup runs one encoder per CPU.\n");
}

static double cpu_now(void)
{
	return (double)cn_monotonic_ns() / 1e9;
}

struct bench {
	const char *name;
	double mbs;
};

enum { T_CHUNK, T_SHA, T_ZSTD, T_UNZSTD, T_AES, T_ENCODE };

/* Runs test kind on data for about secs seconds; returns MiB/s, or < 0. */
static double run(int kind, const uint8_t *data, double secs, struct cn_crypt_config *crypt)
{
	struct cn_chunker *ch = NULL;
	struct cn_blob_ctx *ctx = NULL;
	struct cn_buf out = {0}, comp = {0};
	uint8_t digest[32];
	int r = 0;
	if (kind == T_CHUNK)
		r = cn_chunker_new(CN_CHUNKER_DEFAULT_AVG, &ch);
	if (r == 0)
		r = cn_blob_ctx_new(&ctx);
	if (r == 0 && kind == T_UNZSTD)
		r = cn_blob_encode_ctx(ctx, data, BUF, NULL, CN_BLOB_COMPRESS_ALWAYS, &comp, NULL);
	double t0 = cpu_now(), t = t0;
	uint64_t bytes = 0;
	while (r == 0 && t - t0 < secs) {
		out.len = 0;
		switch (kind) {
		case T_CHUNK: {
			size_t off = 0;
			while (off < BUF) {
				size_t p = cn_chunker_scan(ch, data + off, BUF - off);
				off += p ? p : BUF - off;
			}
			break;
		}
		case T_SHA:
			r = cn_chunk_digest(NULL, data, BUF, digest);
			break;
		case T_ZSTD:
			r = cn_blob_encode_ctx(ctx, data, BUF, NULL, CN_BLOB_COMPRESS_ALWAYS, &out, NULL);
			break;
		case T_UNZSTD:
			r = cn_blob_decode_ctx(ctx, comp.data, comp.len, NULL, NULL, &out);
			break;
		case T_AES:
			r = cn_blob_encode_ctx(ctx, data, BUF, crypt, CN_BLOB_COMPRESS_NONE, &out, NULL);
			break;
		case T_ENCODE: {
			struct cn_chunk *c;
			r = cn_blob_encode_chunk_ctx(ctx, data, BUF, NULL, CN_BLOB_COMPRESS, &c);
			if (r == 0)
				cn_chunk_unref(c);
			break;
		}
		}
		bytes += BUF;
		t = cpu_now();
	}
	cn_chunker_free(ch);
	cn_blob_ctx_free(ctx);
	cn_buf_free(&out);
	cn_buf_free(&comp);
	return r < 0 ? r : bytes / (t - t0) / (1 << 20);
}

static int cmd_benchmark(int argc, char **argv)
{
	struct cli_common c = {.cmd = "benchmark"};
	enum { OPT_SECONDS = OPT_FIRST_COMMAND_OPTION };
	static const struct option opts[] = {
		{"seconds", required_argument, NULL, OPT_SECONDS},
		{"output-format", required_argument, NULL, OPT_OUTPUT_FORMAT},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	double secs = 1;
	int o, rc;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if ((rc = cli_common_option(&c, o, optarg)) < 0)
			return -rc;
		if (rc)
			continue;
		if (o == 'h') {
			help(stdout);
			return CLI_EXIT_OK;
		} else if (o == OPT_SECONDS) {
			secs = atof(optarg);
			if (secs <= 0 || secs > 60)
				return cli_usage_error(c.cmd, "--seconds takes 0..60");
		} else {
			return cli_usage_error(c.cmd, "unknown option");
		}
	}
	/* text-like data: compressible, and random enough for the chunker */
	uint8_t *data = malloc(BUF);
	if (!data)
		return cli_fail(&c, cn_error_set(-ENOMEM, "out of memory"), NULL);
	static const char *words[] = {"backup ", "chunk ", "index ", "snapshot ", "restore ",
				      "digest ", "proxmox ", "cairn ", "\n", "datastore "};
	uint32_t x = 12345;
	for (size_t i = 0; i < BUF;) {
		x = x * 1103515245u + 12345u;
		const char *w = words[(x >> 16) % 10];
		for (; *w && i < BUF; w++)
			data[i++] = (uint8_t)*w;
	}
	uint8_t key[32];
	memset(key, 7, sizeof(key));
	struct cn_crypt_config *crypt;
	int r = cn_crypt_config_new(key, &crypt);
	if (r < 0) {
		free(data);
		return cli_fail(&c, r, "crypt");
	}
	struct bench b[] = {
		{"chunker (buzhash)", 0}, {"SHA-256", 0}, {"zstd level 1 compress", 0},
		{"zstd decompress", 0}, {"AES-256-GCM encrypt", 0}, {"chunk encode (worker)", 0},
	};
	json_t *obj = c.json ? json_object() : NULL;
	int exit_code = CLI_EXIT_OK;
	for (size_t i = 0; i < CN_ARRAY_SIZE(b); i++) {
		b[i].mbs = run((int)i, data, secs, crypt);
		if (b[i].mbs < 0) {
			exit_code = cli_fail(&c, (int)b[i].mbs, b[i].name);
			break;
		}
		if (obj)
			json_object_set_new(obj, b[i].name, json_real(b[i].mbs));
		else
			printf("%-24s %10.1f MiB/s\n", b[i].name, b[i].mbs);
	}
	if (obj && exit_code == CLI_EXIT_OK)
		cli_json_print(obj);
	else
		json_decref(obj);
	cn_crypt_config_free(crypt);
	free(data);
	return exit_code;
}

const struct cli_command cli_cmd_benchmark = {
	.name = "benchmark",
	.summary = "measure chunking, hashing, compression and encryption speed",
	.run = cmd_benchmark,
};
