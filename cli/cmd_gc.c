/* cairn gc — garbage collection of a local datastore or an S3 bucket:
 * removes chunks no snapshot references any more (after prune), as PBS
 * does:
 *   cairn gc [--store DIR | --store s3://BUCKET[/PREFIX]] [--grace SECONDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "cli/cli_s3admin.h"
#include "common/cn_error.h"
#include "store/cn_gc.h"

static void help(FILE *f)
{
	fprintf(f, "Usage: cairn gc [OPTIONS]\n\n"
		   "Removes the chunks of a local datastore or an S3 bucket that no snapshot\n"
		   "references, by PBS's rule: phase 1 marks (touches) every chunk of every\n"
		   "index, phase 2 removes chunks not touched for 24h 5min and not needed by\n"
		   "a running backup. So chunks freed by a prune go away one day later.\n"
		   "Backups may run meanwhile. In an S3 bucket the chunks' LastModified times\n"
		   "stand for the atimes, and snapshot prefixes without a manifest (left by\n"
		   "killed backups) older than the grace are removed too. For a PBS\n"
		   "repository, garbage collection is the server's job.\n\n"
		   "Options:\n"
		   "  --grace SECONDS        minimum age of an unreferenced chunk before it is\n"
		   "                         removed (default 86700 = 24h 5min, as PBS; 0 = none;\n"
		   "                         a backup into a bucket running meanwhile may then\n"
		   "                         have to withdraw its snapshot and run again)\n"
		   CLI_COMMON_HELP);
}

enum { OPT_GRACE = OPT_FIRST_COMMAND_OPTION };

static int cmd_gc(int argc, char **argv)
{
	struct cli_common c = {.cmd = "gc"};
	static const struct option opts[] = {
		CLI_COMMON_LONG_OPTIONS,
		{"grace", required_argument, NULL, OPT_GRACE},
		{0},
	};
	struct cn_gc_opts go = {0};
	int o, rc;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if ((rc = cli_common_option(&c, o, optarg)) < 0)
			return -rc;
		if (rc)
			continue;
		if (o == 'h') {
			help(stdout);
			return CLI_EXIT_OK;
		} else if (o == OPT_GRACE) {
			char *end;
			long long v = strtoll(optarg, &end, 10);
			if (*end || !*optarg || v < 0 || v > 10LL * 365 * 86400)
				return cli_usage_error(c.cmd, "--grace takes seconds, not '%s'", optarg);
			go.grace = v == 0 ? CN_GC_NO_GRACE : v;
		} else {
			return cli_usage_error(c.cmd, "unknown option");
		}
	}
	if (optind != argc)
		return cli_usage_error(c.cmd, "no arguments expected");
	struct cli_endpoints eps;
	int exit_code = cli_open_endpoints(&c, CLI_OPEN_NO_INDEX | CLI_OPEN_S3, 1, &eps);
	if (exit_code)
		return exit_code;
	if (!eps.e[0].ds && !eps.e[0].s3) {
		fprintf(stderr, "cairn gc: %s is a PBS repository: start garbage collection on the "
				"server\n", eps.e[0].name);
		cli_close_endpoints(&eps);
		return CLI_EXIT_USAGE;
	}
	struct cn_gc_stats st;
	memset(&st, 0, sizeof(st));
	int r = eps.e[0].ds ? cn_datastore_gc(eps.e[0].ds, &go, &st)
			    : cli_s3_gc(eps.e[0].s3, &go, &st);
	if (r < 0) {
		exit_code = cli_fail(&c, r, eps.e[0].name);
	} else if (c.json) {
		cli_json_print(json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "index-files",
					 (json_int_t)st.index_files, "marked-chunks",
					 (json_int_t)st.marked_chunks, "missing-chunks",
					 (json_int_t)st.missing_chunks, "removed-chunks",
					 (json_int_t)st.removed_chunks, "removed-bytes",
					 (json_int_t)st.removed_bytes, "pending-chunks",
					 (json_int_t)st.pending_chunks, "disk-chunks",
					 (json_int_t)st.disk_chunks, "disk-bytes",
					 (json_int_t)st.disk_bytes));
	} else {
		char rb[32], db[32], pb[32];
		cli_human_bytes(st.removed_bytes, rb, sizeof(rb));
		cli_human_bytes(st.disk_bytes, db, sizeof(db));
		cli_human_bytes(st.pending_bytes, pb, sizeof(pb));
		printf("index files %llu, chunks referenced %llu (missing %llu)\n",
		       (unsigned long long)st.index_files, (unsigned long long)st.marked_chunks,
		       (unsigned long long)st.missing_chunks);
		printf("removed %llu chunks (%s); pending (younger than the cutoff) %llu (%s); "
		       "kept %llu (%s)\n",
		       (unsigned long long)st.removed_chunks, rb, (unsigned long long)st.pending_chunks,
		       pb, (unsigned long long)st.disk_chunks, db);
		if (st.missing_chunks) {
			fprintf(stderr, "cairn gc: %llu referenced chunks are missing: run 'cairn verify'\n",
				(unsigned long long)st.missing_chunks);
			exit_code = CLI_EXIT_CORRUPT;
		}
	}
	cli_close_endpoints(&eps);
	return exit_code;
}

const struct cli_command cli_cmd_gc = {
	.name = "gc",
	.summary = "remove chunks no snapshot references (local datastore, S3 bucket)",
	.run = cmd_gc,
};
