/* cairn backup — file-level backup of one or more directories into a
 * snapshot, on every selected store/repository at once:
 *   cairn backup NAME.pxar:PATH... [--backup-id ID] [--store DIR | --repository REPO]...
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "common/cn_log.h"
#include "engine/cn_backup.h"
#include "engine/cn_pipeline.h"
#include "net/cn_pbs.h"

static void help(FILE *f)
{
	fprintf(f,
		"Usage: cairn backup [OPTIONS] NAME.pxar:PATH...\n\n"
		"Backs up each directory PATH as pxar archive NAME.pxar into a new snapshot\n"
		"TYPE/ID/TIME (time = now) of every store and repository given (several\n"
		"--store/--repository = one read of the source, several copies). Chunks the\n"
		"previous snapshot of the group or the store already has are not stored again.\n"
		"A snapshot becomes visible only when complete.\n\n"
		"Options:\n"
		"  --backup-id ID         backup id (default: the host name)\n"
		"  --backup-type TYPE     host (default), vm or ct\n"
		"  --exclude PATTERN      leave out matching paths (repeatable; gitignore-like)\n"
		"  --all-file-systems     descend into other mounted file systems\n"
		"  --skip-lost-found      leave out lost+found directories\n"
		"  --threads N            encoding threads (default: number of CPUs)\n"
		"  --stall-timeout SECONDS\n"
		"                         a store or repository that makes no progress this\n"
		"                         long is given up (its snapshot not published), the\n"
		"                         others go on (default 30)\n"
		"  --change-detection-mode MODE\n"
		"                         legacy (default): one NAME.pxar archive; data: split\n"
		"                         archive NAME.mpxar + NAME.ppxar (pxar v2), every file\n"
		"                         read; metadata: split, and files unchanged since the\n"
		"                         previous snapshot (path, size, mtime, ctime, inode,\n"
		"                         metadata) are not read but re-reference its chunks\n"
		"  --file-cache-dir DIR   metadata mode's file caches (default\n"
		"                         $XDG_CACHE_HOME/cairn/filecache or ~/.cache/cairn/filecache);\n"
		"                         deleting them costs one full read, nothing else\n"
		CLI_COMMON_HELP
		"\nProgress goes to stderr when it is a terminal. The summary (files, bytes\n"
		"read, new chunks, new bytes stored, dedup ratio, duration) goes to stdout.\n"
		"Exit codes: 0 ok, 1 failure (nothing published), 3 published but files were\n"
		"skipped (unreadable, vanished or changed type while read) or a target failed\n"
		"or could not be reached (the others got the snapshot), 5 no space, 6 locked.\n");
}

enum { OPT_BACKUP_ID = OPT_FIRST_COMMAND_OPTION, OPT_BACKUP_TYPE, OPT_EXCLUDE, OPT_ALLFS,
       OPT_LOSTFOUND, OPT_THREADS, OPT_CDM, OPT_FCDIR, OPT_STALL };

/* rchar of /proc/self/io: every byte this process got from read()-like
 * calls (source files, cache files, ...), -1 when unavailable. */
static long long proc_io_rchar(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	long long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "rchar: %lld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

/* Sum of regular file sizes below the archives' paths, for the ETA of
 * the progress line (a metadata-only walk, done only for a terminal). */
static uint64_t estimate_total;

static int add_size(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (type == FTW_F && S_ISREG(st->st_mode))
		estimate_total += (uint64_t)st->st_size;
	return 0;
}

static void on_progress(void *ctx, const struct cn_backup_progress *p)
{
	(void)ctx;
	char rd[32], nw[32], eta[32] = "";
	cli_human_bytes(p->bytes_read, rd, sizeof(rd));
	cli_human_bytes(p->bytes_new, nw, sizeof(nw));
	double rate = p->elapsed > 0 ? p->bytes_read / p->elapsed : 0;
	if (estimate_total > p->bytes_read && rate > 0)
		snprintf(eta, sizeof(eta), ", ETA %.0fs",
			 (double)(estimate_total - p->bytes_read) / rate);
	cli_progress_line("%s: %llu files, %s read (%.1f MiB/s), %s new, %.0fs%s",
			  p->archive ? p->archive : "", (unsigned long long)p->files, rd,
			  rate / (1 << 20), nw, p->elapsed, eta);
}

static int cmd_backup(int argc, char **argv)
{
	struct cli_common c = {.cmd = "backup"};
	static const struct option opts[] = {
		CLI_COMMON_LONG_OPTIONS,
		{"backup-id", required_argument, NULL, OPT_BACKUP_ID},
		{"backup-type", required_argument, NULL, OPT_BACKUP_TYPE},
		{"exclude", required_argument, NULL, OPT_EXCLUDE},
		{"all-file-systems", no_argument, NULL, OPT_ALLFS},
		{"skip-lost-found", no_argument, NULL, OPT_LOSTFOUND},
		{"threads", required_argument, NULL, OPT_THREADS},
		{"stall-timeout", required_argument, NULL, OPT_STALL},
		{"change-detection-mode", required_argument, NULL, OPT_CDM},
		{"file-cache-dir", required_argument, NULL, OPT_FCDIR},
		{0},
	};
	struct cn_backup_opts bo = {0};
	const char *excludes[256];
	size_t nexcl = 0;
	char host[CN_BACKUP_ID_MAX + 1] = "";
	const char *backup_id = NULL, *backup_type = "host", *fcdir = NULL;
	char fcbuf[4096];
	int o, rc;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if ((rc = cli_common_option(&c, o, optarg)) < 0)
			return -rc;
		if (rc)
			continue;
		switch (o) {
		case 'h':
			help(stdout);
			return CLI_EXIT_OK;
		case OPT_BACKUP_ID:
			backup_id = optarg;
			break;
		case OPT_BACKUP_TYPE:
			backup_type = optarg;
			break;
		case OPT_EXCLUDE:
			if (nexcl == CN_ARRAY_SIZE(excludes))
				return cli_usage_error(c.cmd, "too many --exclude options");
			excludes[nexcl++] = optarg;
			break;
		case OPT_ALLFS:
			bo.all_file_systems = 1;
			break;
		case OPT_LOSTFOUND:
			bo.skip_lost_found = 1;
			break;
		case OPT_THREADS:
			bo.threads = (size_t)strtoul(optarg, NULL, 10);
			if (bo.threads == 0 || bo.threads > 256)
				return cli_usage_error(c.cmd, "--threads takes 1..256");
			break;
		case OPT_STALL: {
			char *end;
			unsigned long v = strtoul(optarg, &end, 10);
			if (end == optarg || *end || v == 0 || v > 86400)
				return cli_usage_error(c.cmd, "--stall-timeout takes 1..86400 seconds");
			bo.stall_timeout_ms = (unsigned)v * 1000;
			break;
		}
		case OPT_CDM:
			if (!strcmp(optarg, "legacy"))
				bo.change_detection = CN_CDM_LEGACY;
			else if (!strcmp(optarg, "data"))
				bo.change_detection = CN_CDM_DATA;
			else if (!strcmp(optarg, "metadata"))
				bo.change_detection = CN_CDM_METADATA;
			else
				return cli_usage_error(c.cmd, "--change-detection-mode takes legacy, data or metadata");
			break;
		case OPT_FCDIR:
			fcdir = optarg;
			break;
		default:
			return cli_usage_error(c.cmd, "unknown option");
		}
	}
	size_t n = (size_t)(argc - optind);
	if (n == 0)
		return cli_usage_error(c.cmd, "give at least one NAME.pxar:PATH");
	struct cn_backup_archive *arch = calloc(n, sizeof(*arch));
	char **specs = calloc(n, sizeof(char *));
	if (!arch || !specs) {
		free(arch);
		free(specs);
		return cli_fail(&c, cn_error_set(-ENOMEM, "out of memory"), NULL);
	}
	int exit_code = CLI_EXIT_OK;
	for (size_t i = 0; i < n; i++) {
		specs[i] = strdup(argv[optind + (int)i]);
		char *colon = specs[i] ? strchr(specs[i], ':') : NULL;
		if (!colon || colon == specs[i] || !colon[1]) {
			exit_code = cli_usage_error(c.cmd, "'%s' is not NAME.pxar:PATH", argv[optind + (int)i]);
			goto out;
		}
		*colon = 0;
		arch[i].name = specs[i];
		arch[i].path = colon + 1;
		if (cn_backup_check_archive_name(arch[i].name) < 0) {
			exit_code = cli_usage_error(c.cmd, "%s", cn_error_message());
			goto out;
		}
	}
	if (!backup_id) {
		gethostname(host, sizeof(host) - 1);
		char *dot = strchr(host, '.');
		if (dot)
			*dot = 0;
		backup_id = host;
	}
	if (cn_snapshot_check_id(backup_id) < 0 || cn_snapshot_check_type(backup_type) < 0) {
		exit_code = cli_usage_error(c.cmd, "%s", cn_error_message());
		goto out;
	}
	snprintf(bo.id.type, sizeof(bo.id.type), "%s", backup_type);
	snprintf(bo.id.id, sizeof(bo.id.id), "%s", backup_id);
	if (c.ns)
		snprintf(bo.id.ns, sizeof(bo.id.ns), "%s", c.ns);
	if (bo.change_detection == CN_CDM_METADATA) {
		const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
		if (fcdir)
			snprintf(fcbuf, sizeof(fcbuf), "%s", fcdir);
		else if (xdg && *xdg)
			snprintf(fcbuf, sizeof(fcbuf), "%s/cairn/filecache", xdg);
		else
			snprintf(fcbuf, sizeof(fcbuf), "%s/.cache/cairn/filecache", home ? home : ".");
		if (cn_mkdir_p(fcbuf, 0700) < 0)
			cn_log_warning("file cache directory %s not usable; every file will be read", fcbuf);
		else
			bo.filecache_dir = fcbuf;
	}
	bo.archives = arch;
	bo.n_archives = n;
	bo.excludes = excludes;
	bo.n_excludes = nexcl;
	if (cli_progress_enabled() && !c.json) {
		bo.progress = on_progress;
		for (size_t i = 0; i < n; i++)
			nftw(arch[i].path, add_size, 64,
			     FTW_PHYS | (bo.all_file_systems ? 0 : FTW_MOUNT));
	}

	struct cn_crypt_config *crypt = NULL;
	if ((exit_code = cli_load_key(&c, &crypt)))
		goto out;
	bo.crypt = crypt;
	struct cli_endpoints eps;
	if ((exit_code = cli_open_endpoints(&c, CLI_OPEN_CREATE | CLI_OPEN_PARTIAL | CLI_OPEN_S3,
					    2 * CLI_MAX_ENDPOINTS, &eps))) {
		cn_crypt_config_free(crypt);
		goto out;
	}
	/* a server that stops answering while a session is set up fails
	 * its target as soon as one that stops during the upload */
	for (size_t i = 0; i < eps.n; i++)
		if (eps.e[i].pbs)
			cn_pbs_set_io_timeout(eps.e[i].pbs, bo.stall_timeout_ms
						? (int)bo.stall_timeout_ms : CN_PIPELINE_STALL_TIMEOUT_MS);
	for (size_t i = 0; i < eps.n && !crypt; i++)
		if (eps.e[i].s3)
			fprintf(stderr, "cairn backup: warning: %s gets this backup unencrypted; "
					"an offsite copy should be encrypted (--keyfile)\n",
				eps.e[i].name);
	struct cn_target *targets[2 * CLI_MAX_ENDPOINTS];
	struct cn_source *sources[2 * CLI_MAX_ENDPOINTS] = {0};
	size_t nt = 0;
	int r = 0;
	for (size_t i = 0; i < eps.n && r == 0; i++) {
		r = cli_endpoint_target(&eps.e[i], &targets[nt]);
		/* metadata mode reads previous snapshots: file cache rebuilds,
		 * chunks for a target whose previous snapshot differs */
		if (r == 0 && bo.filecache_dir && cli_endpoint_source(&eps.e[i], &sources[nt]) < 0)
			sources[nt] = NULL;
		if (r == 0)
			nt++;
	}
	bo.sources = sources;
	struct cn_backup_stats st;
	memset(&st, 0, sizeof(st));
	if (r == 0)
		r = cn_backup_run(targets, nt, &bo, &st);
	cli_progress_done();
	char snap[512];
	cli_snapshot_text(&st.id, snap, sizeof(snap));
	if (r < 0) {
		exit_code = cli_fail(&c, r, NULL);
	} else {
		double dedup = st.bytes_new ? (double)st.stream_bytes / (double)st.bytes_new : 0;
		if (c.json) {
			json_t *tl = json_array();
			json_t *fl = json_array();
			for (size_t i = 0; i < eps.n; i++)
				json_array_append_new(tl, json_string(eps.e[i].name));
			for (size_t i = 0; i < eps.nfailed; i++)
				json_array_append_new(fl, json_string(eps.failed[i]));
			cli_json_print(json_pack(
				"{s:s, s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
				"snapshot", snap, "targets", tl, "targets-unreachable", fl, "files", (json_int_t)st.files,
				"dirs", (json_int_t)st.dirs, "bytes-read", (json_int_t)st.bytes_read,
				"archive-bytes", (json_int_t)st.stream_bytes,
				"chunks", (json_int_t)st.chunks, "new-chunks", (json_int_t)st.chunks_new,
				"new-bytes", (json_int_t)st.bytes_new,
				"new-bytes-stored", (json_int_t)st.bytes_new_encoded,
				"skipped", (json_int_t)st.skipped, "changed", (json_int_t)st.changed,
				"dedup-ratio", dedup, "duration", st.duration,
				"targets-ok", (json_int_t)st.targets_ok, "targets-total",
				(json_int_t)(st.targets + eps.nfailed), "files-reused", (json_int_t)st.files_reused,
				"files-compared", (json_int_t)st.files_compared,
				"files-unopened", (json_int_t)st.files_unopened,
				"reused-bytes", (json_int_t)st.reused_bytes,
				"chunks-reused", (json_int_t)st.chunks_reused,
				"chunks-missing", (json_int_t)st.chunks_missing,
				"proc-io-rchar", (json_int_t)proc_io_rchar()));
		} else {
			char rd[32], ab[32], nw[32], ns[32];
			cli_human_bytes(st.bytes_read, rd, sizeof(rd));
			cli_human_bytes(st.stream_bytes, ab, sizeof(ab));
			cli_human_bytes(st.bytes_new, nw, sizeof(nw));
			cli_human_bytes(st.bytes_new_encoded, ns, sizeof(ns));
			printf("snapshot %s\n", snap);
			printf("  files %llu, dirs %llu, symlinks %llu, hardlinks %llu\n",
			       (unsigned long long)st.files, (unsigned long long)st.dirs,
			       (unsigned long long)st.symlinks, (unsigned long long)st.hardlinks);
			printf("  read %s (archives %s), %.1f MiB/s\n", rd, ab,
			       st.duration > 0 ? st.bytes_read / st.duration / (1 << 20) : 0.0);
			printf("  chunks %llu, new %llu: %s new data, %s stored\n",
			       (unsigned long long)st.chunks, (unsigned long long)st.chunks_new, nw, ns);
			if (bo.change_detection == CN_CDM_METADATA) {
				char rb[32], pb[32];
				cli_human_bytes(st.reused_bytes, rb, sizeof(rb));
				cli_human_bytes(st.reused_padding, pb, sizeof(pb));
				printf("  unchanged %llu files (%s) not stored again: %llu previous chunks "
				       "reused, %s padding; %llu of them read to compare contents, "
				       "%llu not opened (metadata as in the previous snapshot)\n",
				       (unsigned long long)st.files_reused, rb,
				       (unsigned long long)st.chunks_reused, pb,
				       (unsigned long long)st.files_compared,
				       (unsigned long long)st.files_unopened);
			}
			if (dedup > 0)
				printf("  dedup ratio %.2f\n", dedup);
			else
				printf("  dedup ratio: everything was already stored\n");
			printf("  duration %.2fs, on %zu of %zu target(s)\n", st.duration, st.targets_ok,
			       st.targets + eps.nfailed);
		}
		if (st.skipped)
			fprintf(stderr, "cairn backup: warning: %llu entries could not be read and were "
					"skipped (see the warnings above)\n",
				(unsigned long long)st.skipped);
		if (st.chunks_missing)
			fprintf(stderr, "cairn backup: warning: a store lacked %llu chunks of the previous "
					"snapshot (see the warnings above); they are stored again, but "
					"'cairn verify' should check the older snapshots\n",
				(unsigned long long)st.chunks_missing);
		if (st.skipped || st.chunks_missing || st.targets_ok < st.targets || eps.nfailed)
			exit_code = CLI_EXIT_PARTIAL;
	}
	for (size_t i = 0; i < nt; i++) {
		targets[i]->ops->destroy(targets[i]);
		if (sources[i])
			sources[i]->ops->destroy(sources[i]);
	}
	cli_close_endpoints(&eps);
	cn_crypt_config_free(crypt);
out:
	for (size_t i = 0; i < n; i++)
		free(specs[i]);
	free(specs);
	free(arch);
	return exit_code;
}

const struct cli_command cli_cmd_backup = {
	.name = "backup",
	.summary = "back up directories into a snapshot (NAME.pxar:PATH...)",
	.run = cmd_backup,
};
