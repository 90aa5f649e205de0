/* cairn restore — restores an archive of a snapshot (all of it, a subtree
 * or one file) into a directory, or checks it with --verify-only:
 *   cairn restore SNAPSHOT ARCHIVE TARGET [--path P]... [--exclude PAT]...
 *                 [--store DIR | --repository R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "common/cn_error.h"
#include "engine/cn_restore.h"

static void help(FILE *f)
{
	fprintf(f,
		"Usage: cairn restore [OPTIONS] SNAPSHOT ARCHIVE [TARGET]\n\n"
		"Restores ARCHIVE (e.g. media.pxar) of SNAPSHOT (TYPE/ID/TIME, or TYPE/ID for\n"
		"the newest) into the directory TARGET (created if missing). Every chunk is\n"
		"checked against its digest; chunks are read ahead on worker threads.\n\n"
		"Options:\n"
		"  --path PATH            restore only PATH of the archive: a file or a subtree\n"
		"                         (paths are found without reading the rest), or a\n"
		"                         pattern (* ? [..]; \\ escapes; a leading / anchors it at\n"
		"                         the root, else it matches at any depth). Repeatable.\n"
		"  --exclude PATTERN      leave out what PATTERN matches, even inside a --path\n"
		"                         (a bare name like notes.txt at any depth, a path with a\n"
		"                         / from the root); repeatable. The last --path or\n"
		"                         --exclude matching an entry decides; entries nothing\n"
		"                         matches follow their directory (e.g. --path photos\n"
		"                         --exclude '*.mov')\n"
		"  --verify-only          read and check everything, write nothing (no TARGET);\n"
		"                         with --path/--exclude, what that restore would read\n"
		"  --overwrite            replace existing files in TARGET\n"
		"  --no-owner             do not restore owners and groups (files belong to the\n"
		"                         user restoring; without root each one fails otherwise)\n"
		"  --threads N            read-ahead threads (default: twice the number of CPUs)\n"
		CLI_COMMON_HELP
		"\nExit codes: 0 ok, 1 failure, 3 some entries could not be restored,\n"
		"4 corrupt data in the store (chunk digest/CRC, index checksum).\n");
}

static void on_progress(void *ctx, uint64_t done, uint64_t total, double elapsed)
{
	(void)ctx;
	char d[32], tt[32];
	cli_human_bytes(done, d, sizeof(d));
	cli_human_bytes(total, tt, sizeof(tt));
	double rate = elapsed > 0 ? done / elapsed : 0;
	double eta = rate > 0 ? (double)(total - done) / rate : 0;
	cli_progress_line("%s of %s (%.0f%%), %.1f MiB/s, ETA %.0fs", d, tt,
			  total ? 100.0 * (double)done / (double)total : 100.0, rate / (1 << 20), eta);
}

enum { OPT_PATH = OPT_FIRST_COMMAND_OPTION, OPT_EXCLUDE, OPT_VERIFY, OPT_OVERWRITE, OPT_THREADS,
       OPT_NO_OWNER };

/* cmd_restore with sel, the selection the options build (owned by the caller). */
static int restore_selected(int argc, char **argv, struct cn_pxar_select *sel)
{
	struct cli_common c = {.cmd = "restore"};
	static const struct option opts[] = {
		CLI_COMMON_LONG_OPTIONS,
		{"path", required_argument, NULL, OPT_PATH},
		{"exclude", required_argument, NULL, OPT_EXCLUDE},
		{"verify-only", no_argument, NULL, OPT_VERIFY},
		{"overwrite", no_argument, NULL, OPT_OVERWRITE},
		{"no-owner", no_argument, NULL, OPT_NO_OWNER},
		{"threads", required_argument, NULL, OPT_THREADS},
		{0},
	};
	struct cn_restore_opts ro = {.select = sel};
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
		case OPT_PATH:
		case OPT_EXCLUDE:
			if (cn_pxar_select_add(sel, optarg, o == OPT_EXCLUDE) < 0)
				return cli_usage_error(c.cmd, "%s", cn_error_message());
			break;
		case OPT_VERIFY:
			ro.verify_only = 1;
			break;
		case OPT_OVERWRITE:
			ro.overwrite = 1;
			break;
		case OPT_NO_OWNER:
			ro.no_owner = 1;
			break;
		case OPT_THREADS:
			ro.threads = (size_t)strtoul(optarg, NULL, 10);
			if (ro.threads == 0 || ro.threads > 256)
				return cli_usage_error(c.cmd, "--threads takes 1..256");
			break;
		default:
			return cli_usage_error(c.cmd, "unknown option");
		}
	}
	int nargs = argc - optind;
	if (nargs < 2 || nargs > 3 || (nargs == 2 && !ro.verify_only))
		return cli_usage_error(c.cmd, "give SNAPSHOT ARCHIVE TARGET (TARGET not with "
					      "--verify-only)");
	if (nargs == 3 && ro.verify_only)
		return cli_usage_error(c.cmd, "--verify-only writes nothing: leave out TARGET");
	const char *archive = argv[optind + 1];
	const char *target = nargs == 3 ? argv[optind + 2] : NULL;
	struct cn_snapshot_id id;
	int exit_code = cli_parse_snapshot(&c, argv[optind], 1, &id);
	if (exit_code)
		return exit_code;
	struct cn_crypt_config *crypt = NULL;
	if ((exit_code = cli_load_key(&c, &crypt)))
		return exit_code;
	ro.crypt = crypt;
	if (cli_progress_enabled() && !c.json)
		ro.progress = on_progress;
	struct cli_endpoints eps;
	if ((exit_code = cli_open_endpoints(&c, CLI_OPEN_NO_INDEX | CLI_OPEN_S3, 1, &eps))) {
		cn_crypt_config_free(crypt);
		return exit_code;
	}
	struct cn_source *src = NULL;
	int r = cli_endpoint_source(&eps.e[0], &src);
	if (r < 0) {
		exit_code = cli_fail(&c, r, eps.e[0].name);
		goto out;
	}
	if ((exit_code = cli_latest_snapshot(&c, src, &id)))
		goto out;
	char snap[512];
	cli_snapshot_text(&id, snap, sizeof(snap));
	struct cn_restore_stats st;
	r = cn_restore_archive(src, &id, archive, target, &ro, &st);
	cli_progress_done();
	if (r < 0 && !(r == -EIO && st.errors)) {
		char ctx[600];
		snprintf(ctx, sizeof(ctx), "%s %s", snap, archive);
		exit_code = cli_fail(&c, r, ctx);
		goto out;
	}
	char by[32];
	cli_human_bytes(st.bytes, by, sizeof(by));
	double rate = st.duration > 0 ? st.chunk_bytes / st.duration / (1 << 20) : 0;
	if (c.json) {
		cli_json_print(json_pack("{s:s, s:s, s:s?, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
					 "snapshot", snap, "archive", archive, "target", target,
					 "verify-only", ro.verify_only, "files", (json_int_t)st.files,
					 "dirs", (json_int_t)st.dirs, "bytes", (json_int_t)st.bytes,
					 "chunks", (json_int_t)st.chunks, "chunk-bytes",
					 (json_int_t)st.chunk_bytes, "errors", (json_int_t)st.errors,
					 "duration", st.duration));
	} else {
		printf("%s %s %s: %llu files, %llu dirs, %s; %llu chunks verified, %.1f MiB/s, %.2fs\n",
		       ro.verify_only ? "verified" : "restored", snap, archive,
		       (unsigned long long)st.files, (unsigned long long)st.dirs, by,
		       (unsigned long long)st.chunks, rate, st.duration);
	}
	if (st.errors) {
		fprintf(stderr, "cairn restore: %llu entries could not be restored (see above)\n",
			(unsigned long long)st.errors);
		exit_code = CLI_EXIT_PARTIAL;
	}
out:
	if (src)
		src->ops->destroy(src);
	cli_close_endpoints(&eps);
	cn_crypt_config_free(crypt);
	return exit_code;
}

static int cmd_restore(int argc, char **argv)
{
	struct cn_pxar_select *sel;
	if (cn_pxar_select_new(&sel) < 0)
		return cli_error("restore");
	int exit_code = restore_selected(argc, argv, sel);
	cn_pxar_select_free(sel);
	return exit_code;
}

const struct cli_command cli_cmd_restore = {
	.name = "restore",
	.summary = "restore an archive of a snapshot (or the paths selected in it)",
	.run = cmd_restore,
};
